//! Reading a files sink's folder back: every listed file through DuckDB,
//! replayed in manifest order into the tables' current state.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use pg_replicate::sinks::files::{
    read_manifests, FilesDestination, FilesSinkConfig, ManifestEntry,
};

use crate::common::confirmed_flush;
use crate::support::TestDb;

/// A row: column name to its text (NULL as `None`).
pub type Row = BTreeMap<String, Option<String>>;

/// The rows of one data file, in commit order, as text: CSV through
/// DuckDB's reader, Parquet through the parquet crate and Arrow's display
/// of each value.
pub fn file_rows(path: &Path) -> Vec<Row> {
    let mut rows = if path.extension().is_some_and(|e| e == "csv") {
        csv_rows(path)
    } else {
        parquet_rows(path)
    };
    let position =
        |row: &Row, column: &str| -> i64 { row[column].as_deref().unwrap().parse().unwrap() };
    rows.sort_by_key(|r| (position(r, "_pgr_commit_lsn"), position(r, "_pgr_seq")));
    rows
}

fn csv_rows(path: &Path) -> Vec<Row> {
    let connection = duckdb::Connection::open_in_memory().unwrap();
    let file = path.to_string_lossy().replace('\'', "''");
    let sql = format!(
        "SELECT * FROM read_csv('{file}', header = true, all_varchar = true, \
         allow_quoted_nulls = false)"
    );
    let mut statement = connection.prepare(&sql).unwrap();
    let mut rows = statement.query([]).unwrap();
    let names: Vec<String> = rows.as_ref().unwrap().column_names();
    let mut out = Vec::new();
    while let Some(row) = rows.next().unwrap() {
        out.push(
            names
                .iter()
                .enumerate()
                .map(|(i, name)| (name.clone(), row.get::<_, Option<String>>(i).unwrap()))
                .collect(),
        );
    }
    out
}

fn parquet_rows(path: &Path) -> Vec<Row> {
    use arrow::array::Array;
    use arrow::util::display::{ArrayFormatter, FormatOptions};
    let file = std::fs::File::open(path).unwrap();
    let reader =
        parquet::arrow::arrow_reader::ParquetRecordBatchReader::try_new(file, 1024).unwrap();
    let mut out = Vec::new();
    for batch in reader {
        let batch = batch.unwrap();
        let schema = batch.schema();
        let options = FormatOptions::default();
        // Arrow's display knows only offset time zones: show UTC times
        // without one.
        let columns: Vec<arrow::array::ArrayRef> = batch
            .columns()
            .iter()
            .map(|c| match c.data_type() {
                arrow::datatypes::DataType::Timestamp(unit, Some(_)) => {
                    arrow::compute::cast(c, &arrow::datatypes::DataType::Timestamp(*unit, None))
                        .unwrap()
                }
                _ => c.clone(),
            })
            .collect();
        let formatters: Vec<_> = columns
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options).unwrap())
            .collect();
        for row in 0..batch.num_rows() {
            out.push(
                schema
                    .fields()
                    .iter()
                    .zip(&columns)
                    .zip(&formatters)
                    .map(|((field, column), format)| {
                        let value = (!column.is_null(row)).then(|| format.value(row).to_string());
                        (field.name().clone(), value)
                    })
                    .collect(),
            );
        }
    }
    out
}

/// What a table's listed files add up to.
pub struct Replayed {
    /// The table's rows.
    pub rows: Vec<Row>,
    /// Data files listed.
    pub files: usize,
    /// Changes read (copied rows not counted).
    pub changes: usize,
}

/// The names of the objects in `folder`.
async fn folder_files(config: &FilesSinkConfig, folder: &str) -> Vec<String> {
    match &config.destination {
        #[cfg(feature = "files-object-store")]
        FilesDestination::ObjectStore(location) => {
            use futures_util::TryStreamExt;
            use object_store::ObjectStore;
            let prefix = object_store::path::Path::from(format!("{}/{folder}", location.prefix));
            let objects: Vec<_> = location
                .store
                .list(Some(&prefix))
                .try_collect()
                .await
                .unwrap();
            objects
                .iter()
                .map(|o| o.location.filename().unwrap().to_owned())
                .collect()
        }
        _ => std::fs::read_dir(config.root.join(folder))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
    }
}

/// A local path of the listed file `file` of `folder` (downloaded from an
/// object store), or `None` when it does not exist.
pub async fn local_file(config: &FilesSinkConfig, folder: &str, file: &str) -> Option<PathBuf> {
    match &config.destination {
        #[cfg(feature = "files-object-store")]
        FilesDestination::ObjectStore(location) => {
            use object_store::ObjectStore;
            let key =
                object_store::path::Path::from(format!("{}/{folder}/{file}", location.prefix));
            let bytes = match location.store.get(&key).await {
                Ok(found) => found.bytes().await.unwrap(),
                Err(object_store::Error::NotFound { .. }) => return None,
                Err(e) => panic!("download {key}: {e}"),
            };
            let dir = config.root.join("_downloaded").join(folder);
            std::fs::create_dir_all(&dir).unwrap();
            let path = dir.join(file);
            std::fs::write(&path, bytes).unwrap();
            Some(path)
        }
        _ => {
            let path = config.root.join(folder).join(file);
            path.exists().then_some(path)
        }
    }
}

/// Replays the listed files of every table a sink with `config` wrote: by
/// key (`key` columns), or, for tables without one, as a multiset matched
/// on whole rows. Panics when a change appears twice, a listed file is
/// missing or a data file is not listed.
pub async fn replay(
    config: &FilesSinkConfig,
    keys: &HashMap<&str, Vec<&str>>,
) -> HashMap<String, Replayed> {
    let mut tables = HashMap::new();
    for (folder, manifest) in read_manifests(config).await.unwrap() {
        let name = format!("{}.{}", manifest.schema, manifest.table);
        let key = keys.get(name.as_str()).cloned().unwrap_or_default();
        let mut by_key: BTreeMap<Vec<Option<String>>, Row> = BTreeMap::new();
        let mut multiset: Vec<Row> = Vec::new();
        let mut seen = HashSet::new();
        let (mut files, mut changes) = (0, 0);
        let listed: HashSet<&str> = manifest.entries.iter().filter_map(|e| e.file()).collect();
        for file in folder_files(config, &folder).await {
            assert!(
                file.starts_with('_') || listed.contains(file.as_str()),
                "{name}: {file} is in the folder but not listed"
            );
        }
        for entry in &manifest.entries {
            let file = match entry {
                ManifestEntry::Truncate { .. } => {
                    by_key.clear();
                    multiset.clear();
                    continue;
                }
                other => other.file().unwrap(),
            };
            let path = local_file(config, &folder, file)
                .await
                .unwrap_or_else(|| panic!("{name}: the listed {file} is missing"));
            files += 1;
            for mut row in file_rows(&path) {
                let op = row.remove("_pgr_op").flatten().unwrap();
                let lsn = row.remove("_pgr_commit_lsn").flatten().unwrap();
                let seq = row.remove("_pgr_seq").flatten().unwrap();
                row.remove("_pgr_commit_time");
                let unchanged: Vec<String> = row
                    .remove("_pgr_unchanged")
                    .flatten()
                    .map(|text| serde_json::from_str(&text).unwrap())
                    .unwrap_or_default();
                let old: Row = row
                    .iter()
                    .filter_map(|(c, v)| {
                        c.strip_prefix("_pgr_old_")
                            .map(|c| (c.to_owned(), v.clone()))
                    })
                    .collect();
                row.retain(|c, _| !c.starts_with("_pgr_old_"));
                if matches!(entry, ManifestEntry::Changes { .. }) {
                    changes += 1;
                    assert!(
                        seen.insert((lsn.clone(), seq.clone())),
                        "{name}: the change at LSN {lsn}, sequence {seq} is listed twice"
                    );
                }
                let key_of = |row: &Row| -> Vec<Option<String>> {
                    key.iter().map(|k| row.get(*k).cloned().flatten()).collect()
                };
                if key.is_empty() {
                    let matches_old = |r: &Row| old.iter().all(|(c, v)| r.get(c) == Some(v));
                    match op.as_str() {
                        "insert" => multiset.push(row),
                        "update" | "delete" => {
                            let at = multiset.iter().position(matches_old).unwrap_or_else(|| {
                                panic!("{name}: a {op} at {lsn} matches no row")
                            });
                            multiset.swap_remove(at);
                            if op == "update" {
                                multiset.push(row);
                            }
                        }
                        other => panic!("unknown op {other}"),
                    }
                    continue;
                }
                match op.as_str() {
                    "insert" => {
                        by_key.insert(key_of(&row), row);
                    }
                    "update" => {
                        let old_key = key_of(&old);
                        let previous = if old_key.iter().any(Option::is_some) {
                            by_key.remove(&old_key)
                        } else {
                            by_key.remove(&key_of(&row))
                        };
                        for column in &unchanged {
                            let value = previous.as_ref().and_then(|p| p.get(column).cloned());
                            row.insert(column.clone(), value.flatten());
                        }
                        by_key.insert(key_of(&row), row);
                    }
                    "delete" => {
                        by_key.remove(&key_of(&row));
                    }
                    other => panic!("unknown op {other}"),
                }
            }
        }
        let rows = if key.is_empty() {
            multiset
        } else {
            by_key.into_values().collect()
        };
        tables.insert(
            name,
            Replayed {
                rows,
                files,
                changes,
            },
        );
    }
    tables
}

/// The rows of a Postgres table as text, sorted.
pub async fn pg_text_rows(db: &TestDb, table: &str) -> Vec<Row> {
    let client = db.client().await;
    let columns: Vec<String> = client
        .query(
            "SELECT attname::text FROM pg_attribute WHERE attrelid = $1::text::regclass AND attnum > 0 \
             AND NOT attisdropped ORDER BY attnum",
            &[&table],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let select: Vec<String> = columns.iter().map(|c| format!("\"{c}\"::text")).collect();
    let rows = client
        .query(&format!("SELECT {} FROM {table}", select.join(", ")), &[])
        .await
        .unwrap();
    let mut rows: Vec<Row> = rows
        .iter()
        .map(|r| {
            columns
                .iter()
                .enumerate()
                .map(|(i, c)| (c.clone(), r.get::<_, Option<String>>(i)))
                .collect()
        })
        .collect();
    rows.sort();
    rows
}

/// Checks that the replayed rows of `table` equal Postgres' (columns the
/// files lack count as NULL).
pub async fn assert_same(
    db: &TestDb,
    replayed: &HashMap<String, Replayed>,
    table: &str,
    columns: Option<&[&str]>,
    context: &str,
) {
    let keep = |mut row: Row| {
        if let Some(columns) = columns {
            row.retain(|c, _| columns.contains(&c.as_str()));
        }
        row
    };
    let mut expected: Vec<Row> = pg_text_rows(db, table)
        .await
        .into_iter()
        .map(keep)
        .collect();
    expected.sort();
    let mut actual: Vec<Row> = replayed
        .get(table)
        .map(|r| r.rows.clone())
        .unwrap_or_default()
        .into_iter()
        .map(keep)
        .map(|mut row| {
            for column in expected
                .first()
                .map(|r| r.keys().cloned().collect::<Vec<_>>())
                .unwrap_or_default()
            {
                row.entry(column).or_insert(None);
            }
            row
        })
        .collect();
    actual.sort();
    assert_eq!(
        expected.len(),
        actual.len(),
        "row count of {table} ({context})"
    );
    if let Some((e, a)) = expected.iter().zip(&actual).find(|(e, a)| e != a) {
        panic!("{table} differs from Postgres ({context}): expected {e:?}, files give {a:?}");
    }
}

/// Waits until `tables` tables a sink with `config` writes are copied.
pub async fn wait_copied(config: &FilesSinkConfig, tables: usize) {
    let start = std::time::Instant::now();
    loop {
        let copied = read_manifests(config)
            .await
            .unwrap()
            .iter()
            .filter(|(_, m)| m.copied_at.is_some())
            .count();
        if copied == tables {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{copied} of {tables} tables were copied within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until the slot is confirmed at or past the current WAL insert
/// position: everything written so far is listed.
pub async fn wait_all_listed(db: &TestDb, slot: &str, timeout: Duration) {
    let target = crate::common::current_wal_lsn(db).await;
    let start = std::time::Instant::now();
    loop {
        if confirmed_flush(db, slot).await.is_some_and(|c| c >= target) {
            return;
        }
        assert!(
            start.elapsed() < timeout,
            "the slot was not confirmed up to {target} within {timeout:?} (confirmed: {:?})",
            confirmed_flush(db, slot).await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
