//! The files sink: Parquet and CSV files whose listed set, replayed in
//! manifest order, equals the source tables after a backfill and every kind
//! of change; and `kill -9` at any moment never lists a change twice or
//! loses one.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use pg_replicate::pipeline::{DataPipeline, PipelineAction};
use pg_replicate::sinks::files::{
    read_manifests, FileFormat, FilesDestination, FilesSink, FilesSinkConfig, ManifestEntry,
    RollPolicy,
};
use pg_replicate::sources::postgres::PostgresSource;
use serde_json::Value;

use crate::common::{start_with, test_batch_config, wait_slot_inactive};
use crate::duckdb_kill::{create_tables, write_changes};
use crate::files_common::{
    assert_same, file_rows, local_file, replay, wait_all_listed, wait_copied,
};
use crate::support::{fresh_database, TestDb};

const CHILD_ENV: &str = "PGR_FILES_KILL_CHILD";

pub fn config(root: &Path, format: FileFormat, max_rows: u64) -> FilesSinkConfig {
    FilesSinkConfig {
        root: root.to_path_buf(),
        destination: FilesDestination::Local,
        format,
        roll: RollPolicy {
            max_rows,
            max_bytes: 64 << 20,
            max_age: Duration::from_millis(300),
        },
    }
}

pub fn keys() -> HashMap<&'static str, Vec<&'static str>> {
    HashMap::from([
        ("public.big", vec!["id"]),
        ("public.small", vec!["id"]),
        ("public.docs", vec!["id"]),
    ])
}

pub fn scratch_dir(db: &TestDb, what: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("pgr_files_{what}_{}", db.name()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

async fn replays_to_source_tables(format: FileFormat) {
    let db = fresh_database("files_replay").await;
    let publication = db.unique_name("pub");
    let slot = db.unique_name("slot");
    create_tables(&db, &publication, 2_000).await;
    // A TOAST column left out of updates, and values of several types.
    db.execute(&format!(
        "CREATE TABLE docs (id int PRIMARY KEY, title text, body text, span interval, tags text[], \
                            at timestamptz, raw bytea);
         INSERT INTO docs SELECT g, 'doc ' || g, (SELECT string_agg(md5(g::text || i::text), '') \
                FROM generate_series(1, 200) i), make_interval(days => g, secs => 1.5), \
                ARRAY['a,b', NULL, 'q\"uote'], '2024-02-29 12:00:00+00'::timestamptz + g * interval '1 hour', \
                '\\x00ff'::bytea
           FROM generate_series(1, 20) g;
         ALTER PUBLICATION {publication} ADD TABLE docs;"
    ))
    .await;
    let root = scratch_dir(&db, format.extension());
    let config = config(&root, format, 700);
    let sink = FilesSink::open(config.clone()).unwrap();
    let running = start_with(&db, &publication, &slot, sink, PipelineAction::Both);
    wait_copied(&config, 4).await;
    for round in 0..6 {
        write_changes(&db, round).await;
    }
    db.execute(
        "UPDATE docs SET title = title || '!' WHERE id <= 5;
         UPDATE docs SET id = id + 100 WHERE id = 6;
         DELETE FROM docs WHERE id = 7;
         UPDATE docs SET body = 'short', span = NULL, tags = '{}' WHERE id = 8;
         BEGIN; TRUNCATE small; INSERT INTO small VALUES (1, 1), (2, 2); COMMIT;
         ALTER TABLE big ADD COLUMN note text;
         UPDATE big SET note = 'added ' || id WHERE id % 50 = 0;
         INSERT INTO big (id, v, n, amount, note) VALUES (-1, '', 0, 0.5, NULL);",
    )
    .await;
    // Nothing comes after: the last files are listed by age while idle.
    wait_all_listed(&db, &slot, Duration::from_secs(60)).await;
    running.stop().await.unwrap();

    let replayed = replay(&config, &keys()).await;
    let context = format!("{format:?}");
    for table in ["big", "small", "keyless"] {
        assert_same(&db, &replayed, &format!("public.{table}"), None, &context).await;
    }
    // The other columns' text differs between Postgres and the readers:
    // their values are checked one by one below.
    let columns = ["id", "title", "body"];
    assert_same(&db, &replayed, "public.docs", Some(&columns), &context).await;
    let big = &replayed["public.big"];
    assert!(
        big.files >= 4,
        "2,000 copied rows and {} changes at 700 rows per file make at least 4 files, not {}",
        big.changes,
        big.files
    );
    let manifests = read_manifests(&config).await.unwrap();
    let small = manifests
        .iter()
        .find(|(_, m)| m.table == "small")
        .map(|(_, m)| m)
        .unwrap();
    assert!(
        small
            .entries
            .iter()
            .any(|e| matches!(e, ManifestEntry::Truncate { .. })),
        "the truncate of small is listed"
    );
    let (folder, docs) = manifests.iter().find(|(_, m)| m.table == "docs").unwrap();
    assert!(docs.copied_at.is_some());

    // The values themselves, as the file holds them.
    let mut rows = Vec::new();
    for file in docs.entries.iter().filter_map(ManifestEntry::file) {
        let path = local_file(&config, folder, file).await.unwrap();
        rows.extend(file_rows(&path));
    }
    let copied = rows
        .iter()
        .find(|r| r["id"].as_deref() == Some("3") && r["_pgr_op"].as_deref() == Some("insert"))
        .unwrap();
    assert_eq!(copied["span"].as_deref(), Some("P3DT1.5S"));
    assert_eq!(copied["_pgr_commit_lsn"].as_deref(), Some("0"));
    let (tags, raw) = (copied["tags"].as_deref(), copied["raw"].as_deref());
    match format {
        FileFormat::Csv => {
            let tags: Value = serde_json::from_str(tags.unwrap()).unwrap();
            assert_eq!(tags, serde_json::json!(["a,b", null, "q\"uote"]));
            assert_eq!(raw, Some("\\x00ff"));
            assert_eq!(copied["at"].as_deref(), Some("2024-02-29T15:00:00Z"));
        }
        FileFormat::Parquet => {
            // Arrow's display of the list and the bytes.
            assert_eq!(tags, Some("[a,b, , q\"uote]"));
            assert_eq!(raw, Some("00ff"));
            assert_eq!(copied["at"].as_deref(), Some("2024-02-29T15:00:00"));
        }
    }
    let title_only = rows
        .iter()
        .find(|r| r["id"].as_deref() == Some("2") && r["_pgr_op"].as_deref() == Some("update"))
        .unwrap();
    assert_eq!(title_only["_pgr_unchanged"].as_deref(), Some("[\"body\"]"));
    assert_eq!(title_only["body"], None);
    let moved = rows
        .iter()
        .find(|r| r["id"].as_deref() == Some("106"))
        .unwrap();
    assert_eq!(moved["_pgr_old_id"].as_deref(), Some("6"));
    let _ = std::fs::remove_dir_all(&root);
}

#[tokio::test]
async fn parquet_files_replay_to_the_source_tables() {
    replays_to_source_tables(FileFormat::Parquet).await;
}

#[tokio::test]
async fn csv_files_replay_to_the_source_tables() {
    replays_to_source_tables(FileFormat::Csv).await;
}

/// Runs the pipeline in a child process until killed.
#[tokio::test]
#[ignore = "started as a child process by killed_at_any_point_lists_every_change_once"]
async fn child_process() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let spec: Value = serde_json::from_str(&spec).unwrap();
    let text = |key: &str| spec[key].as_str().unwrap().to_owned();
    let config_pg = crate::common::child_pg_config(&spec);
    let sink = FilesSink::open(config(Path::new(&text("root")), FileFormat::Parquet, 400)).unwrap();
    let source = PostgresSource::new(config_pg, text("publication"), text("slot"));
    let mut pipeline = DataPipeline::new(source, sink, PipelineAction::Both)
        .with_batch_config(test_batch_config());
    pipeline.start().await.unwrap();
}

fn spawn_child(db: &TestDb, publication: &str, slot: &str, root: &Path) -> Child {
    let spec = crate::common::child_spec(
        db,
        publication,
        slot,
        serde_json::json!({
            "root": root.to_string_lossy(),
        }),
    );
    crate::common::spawn_child_test("files::child_process", CHILD_ENV, &spec)
}

#[tokio::test]
async fn killed_at_any_point_lists_every_change_once() {
    let db = fresh_database("files_kill").await;
    let publication = db.unique_name("pub");
    let slot = db.unique_name("slot");
    create_tables(&db, &publication, 100_000).await;
    let root = scratch_dir(&db, "kill");

    // Kill points: during slot creation and backfill, then while files
    // are written, closed, moved and listed as changes keep coming.
    let mut round = 0;
    for wait_ms in [100u64, 500, 1300, 800, 2200, 350, 1700] {
        let mut child = spawn_child(&db, &publication, &slot, &root);
        let start = Instant::now();
        while start.elapsed() < Duration::from_millis(wait_ms) {
            write_changes(&db, round).await;
            round += 1;
        }
        child.kill().unwrap();
        child.wait().unwrap();
        wait_slot_inactive(&db, &slot).await;
    }

    // A last run catches up; the listed files must add up to Postgres.
    let config = config(&root, FileFormat::Parquet, 400);
    let sink = FilesSink::open(config.clone()).unwrap();
    let running = start_with(&db, &publication, &slot, sink, PipelineAction::Both);
    wait_all_listed(&db, &slot, Duration::from_secs(120)).await;
    running.stop().await.unwrap();
    let replayed = replay(&config, &keys()).await;
    let context = format!("{round} rounds of changes, 7 kills");
    for table in ["big", "small", "keyless"] {
        assert_same(&db, &replayed, &format!("public.{table}"), None, &context).await;
    }
    assert!(
        replayed["public.big"].changes > 0,
        "changes were listed ({context})"
    );
    let _ = std::fs::remove_dir_all(&root);
}
