//! Tests of the DuckDB sink against the real engine, with change batches
//! built by hand (the Postgres end-to-end tests are in
//! `tests/integration/duckdb_*.rs`).

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use arrow::array::{ArrayRef, Int32Array, RecordBatch, StringArray};
use arrow::datatypes::DataType;

mod continuing;
mod storage_version;
mod streamed_copy;
mod unusable_file;

use super::*;
pub(crate) use crate::sinks::test_fixtures::*;
use crate::sinks::Sink;
use crate::types::change::{table_arrow_schema, CdcBatch, CdcEvent, ChangeOp};
use crate::types::{Lsn, TableSchema};

/// A fresh path in the temporary directory; removed when dropped.
pub(crate) struct TempFile(pub PathBuf);

impl TempFile {
    pub(crate) fn new(tag: &str) -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("pgr-duckdb-{}-{tag}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir.join("test.duckdb"))
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if let Some(dir) = self.0.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

fn rows(reader: &DuckDbReader, sql: &str) -> Vec<Row> {
    let mut statement = reader.connection().prepare(sql).unwrap();
    let rows = statement
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .collect::<duckdb::Result<Vec<Row>>>()
        .unwrap();
    rows
}

#[tokio::test]
async fn random_changes_of_a_keyed_table_match_a_model() {
    let file = TempFile::new("keyed");
    let t = table(10, "keyed", false);
    let mut sink = DuckDbSink::open(DuckDbSinkConfig::new(&file.0)).unwrap();
    sink.write_table_schemas(std::slice::from_ref(&t))
        .await
        .unwrap();
    let reader = sink.reader().unwrap();
    let mut model = KeyedModel::new();
    let mut rng = Rng(0x1234_5678_9abc_def1);
    let mut lsn = 100u64;
    for batch in 0..150 {
        let changes = random_keyed_changes(&mut rng, &mut model, batch);
        lsn += 10;
        let end = sink
            .write_cdc_batch(cdc(vec![changes_event(&t, &changes, lsn)], lsn + 1))
            .await
            .unwrap();
        assert_eq!(end, Lsn(lsn + 1));
        let expected = model_rows(&model);
        let actual = rows(&reader, "SELECT id, v, t FROM public.keyed ORDER BY id");
        assert_eq!(actual, expected, "after batch {batch}: {changes:?}");
    }
    let totals = sink.apply_totals();
    assert!(
        totals.skipped > 0,
        "some changes were erased by later ones: {totals:?}"
    );
    assert_eq!(
        sink.resumption_state().await.unwrap().last_lsn,
        Some(Lsn(lsn + 1))
    );
}

#[tokio::test]
async fn random_changes_of_a_table_without_key_keep_duplicates_exact() {
    let file = TempFile::new("full");
    let t = table(11, "full", true);
    let mut sink = DuckDbSink::open(DuckDbSinkConfig::new(&file.0)).unwrap();
    sink.write_table_schemas(std::slice::from_ref(&t))
        .await
        .unwrap();
    let reader = sink.reader().unwrap();
    let mut model: Vec<Row> = Vec::new();
    let mut rng = Rng(0xdead_beef_cafe_f00d);
    for batch in 0..60u64 {
        let mut changes = Vec::new();
        for _ in 0..1 + rng.below(15) {
            let row: Row = (
                Some(rng.below(3) as i32),
                (rng.below(4) > 0).then(|| rng.below(2) as i32),
                (rng.below(3) > 0).then(|| "x".to_owned()),
            );
            match rng.below(3) {
                0 => {
                    model.push(row.clone());
                    changes.push(Change {
                        op: ChangeOp::Insert,
                        new: Some(row),
                        toast: false,
                        old: None,
                    });
                }
                1 if !model.is_empty() => {
                    let old = model.remove(rng.below(model.len()));
                    changes.push(Change {
                        op: ChangeOp::Delete,
                        new: None,
                        toast: false,
                        old: Some(old),
                    });
                }
                _ if !model.is_empty() => {
                    let i = rng.below(model.len());
                    let old = model.remove(i);
                    let toast = rng.below(2) == 0;
                    let new: Row = (
                        row.0,
                        row.1,
                        if toast { old.2.clone() } else { row.2.clone() },
                    );
                    model.push(new);
                    changes.push(Change {
                        op: ChangeOp::Update,
                        new: Some((row.0, row.1, if toast { None } else { row.2 })),
                        toast,
                        old: Some(old),
                    });
                }
                _ => {}
            }
        }
        sink.write_cdc_batch(cdc(
            vec![changes_event(&t, &changes, batch * 10 + 5)],
            batch * 10 + 6,
        ))
        .await
        .unwrap();
        let mut expected = model.clone();
        expected.sort();
        let mut actual = rows(&reader, "SELECT a, b, t FROM public.full");
        actual.sort();
        assert_eq!(actual, expected, "after batch {batch}");
    }
}

#[tokio::test]
async fn a_failed_batch_stores_nothing_and_a_replayed_batch_is_skipped() {
    let file = TempFile::new("atomic");
    let t = table(12, "atomic", false);
    let mut sink = DuckDbSink::open(DuckDbSinkConfig::new(&file.0)).unwrap();
    sink.write_table_schemas(std::slice::from_ref(&t))
        .await
        .unwrap();
    let insert = |k: i32| Change {
        op: ChangeOp::Insert,
        new: Some((Some(k), Some(k), None)),
        toast: false,
        old: None,
    };
    sink.write_cdc_batch(cdc(vec![changes_event(&t, &[insert(1)], 10)], 11))
        .await
        .unwrap();

    // An update keeping an unchanged value of a row DuckDB does not have.
    let bad = Change {
        op: ChangeOp::Update,
        new: Some((Some(7), Some(7), None)),
        toast: true,
        old: None,
    };
    let error = sink
        .write_cdc_batch(cdc(vec![changes_event(&t, &[insert(2), bad], 20)], 21))
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Data);
    assert!(error.message().contains("out of step"), "{error}");
    let reader = sink.reader().unwrap();
    assert_eq!(
        rows(&reader, "SELECT id, v, t FROM public.atomic").len(),
        1,
        "the insert of 2 was rolled back"
    );
    assert_eq!(
        sink.resumption_state().await.unwrap().last_lsn,
        Some(Lsn(11))
    );

    // A batch at or below the stored LSN is not applied again.
    let end = sink
        .write_cdc_batch(cdc(vec![changes_event(&t, &[insert(3)], 5)], 11))
        .await
        .unwrap();
    assert_eq!(end, Lsn(11));
    assert_eq!(rows(&reader, "SELECT id, v, t FROM public.atomic").len(), 1);
}

#[tokio::test]
async fn a_copy_is_one_transaction_with_its_mark() {
    let file = TempFile::new("copy");
    let t = table(13, "copied", false);
    let rows_of = |ids: &[i32]| copy_rows(&t, ids);
    {
        let mut sink = DuckDbSink::open(DuckDbSinkConfig::new(&file.0)).unwrap();
        sink.write_table_schemas(std::slice::from_ref(&t))
            .await
            .unwrap();
        sink.begin_table_copy(&t).await.unwrap();
        sink.write_table_rows(&t, rows_of(&[1, 2, 3]))
            .await
            .unwrap();
        // Dropped mid-copy: nothing of it stays.
    }
    let mut sink = DuckDbSink::open(DuckDbSinkConfig::new(&file.0)).unwrap();
    assert!(sink
        .resumption_state()
        .await
        .unwrap()
        .copied_tables
        .is_empty());
    sink.write_table_schemas(std::slice::from_ref(&t))
        .await
        .unwrap();
    let reader = sink.reader().unwrap();
    assert!(rows(&reader, "SELECT id, v, t FROM public.copied").is_empty());

    sink.begin_table_copy(&t).await.unwrap();
    sink.write_table_rows(&t, rows_of(&[1, 2])).await.unwrap();
    sink.write_table_rows(&t, rows_of(&[3])).await.unwrap();
    assert!(
        rows(&reader, "SELECT id, v, t FROM public.copied").is_empty(),
        "uncommitted"
    );
    sink.end_table_copy(&t, Lsn(42)).await.unwrap();
    assert_eq!(rows(&reader, "SELECT id, v, t FROM public.copied").len(), 3);
    let state = sink.resumption_state().await.unwrap();
    assert_eq!(state.copied_tables.get(&t.id), Some(&Lsn(42)));

    // A second copy replaces the first.
    sink.begin_table_copy(&t).await.unwrap();
    sink.write_table_rows(&t, rows_of(&[9])).await.unwrap();
    sink.end_table_copy(&t, Lsn(50)).await.unwrap();
    assert_eq!(
        rows(&reader, "SELECT id, v, t FROM public.copied"),
        vec![(Some(9), Some(9), Some("x".into()))]
    );
}

#[tokio::test]
async fn files_of_another_identity_or_mode_or_in_use_are_refused() {
    let file = TempFile::new("identity");
    let config = DuckDbSinkConfig::new(&file.0).with_identity("pub_a/slot_a");
    let sink = DuckDbSink::open(config.clone()).unwrap();
    let error = DuckDbSink::open(config.clone())
        .err()
        .expect("second writer in this process");
    assert_eq!(error.kind(), ErrorKind::Sink);
    assert!(error.message().contains("already written"), "{error}");
    drop(sink);

    let error = DuckDbSink::open(DuckDbSinkConfig::new(&file.0).with_identity("pub_b/slot_b"))
        .err()
        .expect("another identity");
    assert_eq!(error.kind(), ErrorKind::Config);
    assert!(
        error.message().contains("pub_a/slot_a") && error.message().contains("pub_b/slot_b"),
        "{error}"
    );

    let error = DuckDbSink::open(config.clone().with_mode(DuckDbMode::History))
        .err()
        .expect("another mode");
    assert!(error.message().contains("mode current_state"), "{error}");

    // The right identity still opens, and so does no identity.
    DuckDbSink::open(config).unwrap();
    DuckDbSink::open(DuckDbSinkConfig::new(&file.0)).unwrap();

    let missing = file.0.parent().unwrap().join("no/such/dir/x.duckdb");
    let error = DuckDbSink::open(DuckDbSinkConfig::new(missing))
        .err()
        .unwrap();
    assert_eq!(error.kind(), ErrorKind::Config);
    let error = DuckDbSink::open(DuckDbSinkConfig::new(file.0.parent().unwrap()))
        .err()
        .unwrap();
    assert_eq!(error.kind(), ErrorKind::Config, "{error}");
}

#[tokio::test]
async fn schema_changes_add_drop_and_retype_columns() {
    let file = TempFile::new("schema");
    let t = table(14, "evolving", false);
    let mut sink =
        DuckDbSink::open(DuckDbSinkConfig::new(&file.0).with_mode(DuckDbMode::Both)).unwrap();
    sink.write_table_schemas(std::slice::from_ref(&t))
        .await
        .unwrap();
    let insert = |k: i32| Change {
        op: ChangeOp::Insert,
        new: Some((Some(k), Some(k), Some(format!("{k}")))),
        toast: false,
        old: None,
    };
    sink.write_cdc_batch(cdc(
        vec![changes_event(&t, &[insert(1), insert(2)], 10)],
        11,
    ))
    .await
    .unwrap();

    // v dropped, w (bigint) added, t retyped to integer (values are digits).
    let mut new = (*t).clone();
    new.columns.remove(1);
    new.columns.push(column("w", 20, "bigint", false));
    new.columns[1] = column("t", 23, "integer", false);
    let new = Arc::new(new);
    sink.write_cdc_batch(cdc(
        vec![CdcEvent::SchemaChange {
            old: t.clone(),
            new: new.clone(),
        }],
        21,
    ))
    .await
    .unwrap();
    let reader = sink.reader().unwrap();
    let columns: Vec<(String, String)> = reader
        .connection()
        .prepare("SELECT column_name, data_type FROM duckdb_columns() WHERE table_name = 'evolving' ORDER BY column_index")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<duckdb::Result<_>>()
        .unwrap();
    let expected: Vec<(String, String)> = [("id", "INTEGER"), ("t", "INTEGER"), ("w", "BIGINT")]
        .iter()
        .map(|(a, b)| ((*a).into(), (*b).into()))
        .collect();
    assert_eq!(columns, expected);
    let sum: i64 = reader
        .connection()
        .query_row("SELECT sum(t) FROM public.evolving", [], |r| r.get(0))
        .unwrap();
    assert_eq!(sum, 3);
    let history: i64 = reader
        .connection()
        .query_row(
            "SELECT count(*) FROM public.evolving__history WHERE w IS NULL AND t IS NOT NULL",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(history, 2);

    // A type DuckDB cannot convert the stored values to: a clear error.
    let mut blob = (*new).clone();
    blob.columns[1] = column("t", 1082, "date", false);
    let error = sink
        .write_cdc_batch(cdc(
            vec![CdcEvent::SchemaChange {
                old: new.clone(),
                new: Arc::new(blob),
            }],
            31,
        ))
        .await
        .unwrap_err();
    assert!(
        error.message().contains("\"t\"") && error.message().contains("public.evolving"),
        "{error}"
    );
    assert_eq!(
        sink.resumption_state().await.unwrap().last_lsn,
        Some(Lsn(21))
    );

    // A new key (id, t), id now bigint: the table is rebuilt, rows kept.
    let mut rekeyed = (*new).clone();
    rekeyed.columns[1].identity = true;
    rekeyed.columns[0] = column("id", 20, "bigint", true);
    sink.write_cdc_batch(cdc(
        vec![CdcEvent::SchemaChange {
            old: new.clone(),
            new: Arc::new(rekeyed),
        }],
        41,
    ))
    .await
    .unwrap();
    let key: Vec<String> = reader
        .connection()
        .prepare(
            "SELECT unnest(constraint_column_names) FROM duckdb_constraints() \
             WHERE table_name = 'evolving' AND constraint_type = 'PRIMARY KEY'",
        )
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<duckdb::Result<_>>()
        .unwrap();
    assert_eq!(key, ["id", "t"]);
    let count: i64 = reader
        .connection()
        .query_row("SELECT count(*) FROM public.evolving", [], |r| r.get(0))
        .unwrap();
    assert_eq!(count, 2);
}

#[tokio::test]
async fn history_records_every_change_with_its_metadata() {
    let file = TempFile::new("history");
    let t = table(15, "audited", false);
    let mut sink =
        DuckDbSink::open(DuckDbSinkConfig::new(&file.0).with_mode(DuckDbMode::History)).unwrap();
    sink.write_table_schemas(std::slice::from_ref(&t))
        .await
        .unwrap();
    let changes = [
        Change {
            op: ChangeOp::Insert,
            new: Some((Some(1), Some(1), Some("a".into()))),
            toast: false,
            old: None,
        },
        Change {
            op: ChangeOp::Update,
            new: Some((Some(2), Some(5), None)),
            toast: true,
            old: Some((Some(1), None, None)),
        },
        Change {
            op: ChangeOp::Delete,
            new: None,
            toast: false,
            old: Some((Some(2), None, None)),
        },
    ];
    sink.write_cdc_batch(cdc(
        vec![
            changes_event(&t, &changes, 77),
            CdcEvent::Truncate {
                tables: vec![t.clone()],
                cascade: false,
                restart_identity: false,
                commit_lsn: Lsn(78),
            },
        ],
        79,
    ))
    .await
    .unwrap();
    let reader = sink.reader().unwrap();
    type HistoryRow = (Option<i32>, String, u64, Option<String>, Option<String>);
    let got: Vec<HistoryRow> = reader
        .connection()
        .prepare(
            "SELECT id, _pgr_op, _pgr_commit_lsn, array_to_string(_pgr_unchanged, ','), _pgr_old::VARCHAR \
             FROM public.audited__history ORDER BY _pgr_commit_lsn, _pgr_seq NULLS LAST",
        )
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)))
        .unwrap()
        .collect::<duckdb::Result<_>>()
        .unwrap();
    assert_eq!(
        got,
        vec![
            (Some(1), "insert".into(), 77, None, None),
            (
                Some(2),
                "update".into(),
                77,
                Some("t".into()),
                Some(r#"{"id":1}"#.into())
            ),
            (Some(2), "delete".into(), 77, None, None),
            (None, "truncate".into(), 78, None, None),
        ]
    );
    let exists: i64 = reader
        .connection()
        .query_row(
            "SELECT count(*) FROM duckdb_tables() WHERE table_name = 'audited'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(exists, 0, "no current-state table in history mode");
}

/// Apply throughput of mixed changes (not a test: prints figures). Run with
/// `cargo test --release -p pg_replicate --features duckdb --lib apply_throughput -- --ignored --nocapture`.
#[tokio::test]
#[ignore = "measurement"]
async fn apply_throughput() {
    let file = TempFile::new("throughput");
    let t = table(16, "bench", false);
    let mut sink = DuckDbSink::open(DuckDbSinkConfig::new(&file.0)).unwrap();
    sink.write_table_schemas(std::slice::from_ref(&t))
        .await
        .unwrap();
    let rows = 1_000_000i32;
    sink.begin_table_copy(&t).await.unwrap();
    let started = std::time::Instant::now();
    for chunk in (0..rows).collect::<Vec<_>>().chunks(100_000) {
        let batch = RecordBatch::try_new(
            table_arrow_schema(&t),
            vec![
                Arc::new(Int32Array::from(chunk.to_vec())) as ArrayRef,
                Arc::new(Int32Array::from(chunk.to_vec())),
                Arc::new(StringArray::from_iter_values(
                    chunk.iter().map(|i| format!("row {i}")),
                )),
            ],
        )
        .unwrap();
        sink.write_table_rows(&t, batch).await.unwrap();
    }
    sink.end_table_copy(&t, Lsn(1)).await.unwrap();
    let copy = started.elapsed();
    println!(
        "copy: {rows} rows in {copy:?} = {:.0} rows/s",
        f64::from(rows) / copy.as_secs_f64()
    );

    let mut rng = Rng(42);
    let mut next = rows;
    let mut total = 0usize;
    let size: usize = std::env::var("PGR_BATCH")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(16_000);
    let started = std::time::Instant::now();
    for batch in 0..(640_000 / size) as u64 {
        let mut changes = Vec::with_capacity(size);
        for _ in 0..size {
            let k = rng.below(rows as usize) as i32;
            changes.push(match rng.below(3) {
                0 => {
                    next += 1;
                    Change {
                        op: ChangeOp::Insert,
                        new: Some((Some(next), Some(1), Some("new".into()))),
                        toast: false,
                        old: None,
                    }
                }
                1 => Change {
                    op: ChangeOp::Update,
                    new: Some((Some(k), Some(2), Some("upd".into()))),
                    toast: false,
                    old: None,
                },
                _ => Change {
                    op: ChangeOp::Delete,
                    new: None,
                    toast: false,
                    old: Some((Some(k), None, None)),
                },
            });
        }
        total += changes.len();
        let lsn = 10 + batch * 10;
        sink.write_cdc_batch(cdc(vec![changes_event(&t, &changes, lsn)], lsn + 1))
            .await
            .unwrap();
    }
    let apply = started.elapsed();
    println!(
        "apply: {total} changes in {apply:?} = {:.0} changes/s ({:?})",
        total as f64 / apply.as_secs_f64(),
        sink.apply_totals()
    );
}

#[tokio::test]
async fn exact_interval_arrays_are_stored_whole() {
    let file = TempFile::new("exact-intervals");
    let mut iv = column("iv", 1187, "interval[]", false);
    iv.pg_type.element_oid = Some(1186);
    iv.array_form = crate::types::ArrayForm::Exact;
    let t = Arc::new(TableSchema {
        id: crate::types::TableId(31),
        name: crate::types::TableName::new("public", "spans"),
        columns: vec![column("id", 23, "integer", true), iv],
        replica_identity: crate::types::ReplicaIdentity::Default,
    });
    let mut builder = crate::types::values::ColumnBuilder::new(&t.columns[1], 2);
    builder
        .append_text(br#"[0:1][1:2]={{P1M2D,NULL},{PT1S,P-1D}}"#)
        .unwrap();
    builder.append_null();
    let batch = RecordBatch::try_new(
        table_arrow_schema(&t),
        vec![
            Arc::new(Int32Array::from(vec![1, 2])) as ArrayRef,
            builder.finish().unwrap(),
        ],
    )
    .unwrap();
    let mut sink = DuckDbSink::open(DuckDbSinkConfig::new(&file.0)).unwrap();
    sink.write_table_schemas(std::slice::from_ref(&t))
        .await
        .unwrap();
    sink.begin_table_copy(&t).await.unwrap();
    sink.write_table_rows(&t, batch).await.unwrap();
    sink.end_table_copy(&t, Lsn(7)).await.unwrap();
    let reader = sink.reader().unwrap();
    let stored: Vec<Option<String>> = reader
        .connection()
        .prepare("SELECT to_json(iv)::VARCHAR FROM public.spans ORDER BY id")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<duckdb::Result<_>>()
        .unwrap();
    assert_eq!(
        stored,
        [
            Some(
                r#"{"dims":[2,2],"lower_bounds":[0,1],"elements":["1 month 2 days",null,"00:00:01","-1 day"]}"#
                    .to_owned()
            ),
            None
        ]
    );
}
