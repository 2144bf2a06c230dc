//! The Postgres sink: every type of the type matrix, every kind of change,
//! truncates and column changes replicated into a second database of the
//! test server, compared with the source row for row in Postgres' own text
//! form; restarts, `kill -9` included, resume exactly where the target's
//! stored LSN says.

use std::time::{Duration, Instant};

use pg_replicate::pipeline::{DataPipeline, PipelineAction};
use pg_replicate::sinks::postgres::{PostgresSink, PostgresSinkConfig};
use pg_replicate::sources::postgres::PostgresSource;
use pg_replicate::ErrorKind;

use crate::common::{confirmed_flush, start_with, test_batch_config, wait_slot_inactive, Running};
use crate::duckdb_kill::{create_tables, write_changes};
use crate::support::{fresh_database, TestDb};
use crate::types::{all_columns, create_matrix_tables, MATRIX_TYPES};

pub fn sink_config(target: &TestDb, identity: &str) -> PostgresSinkConfig {
    PostgresSinkConfig::new(target.config()).with_identity(identity)
}

/// Every row of `table` in Postgres' text form, sorted (tables without key
/// may hold equal rows: compared as multisets).
async fn table_text(db: &TestDb, table: &str) -> Vec<String> {
    let client = db.client().await;
    let rows = client
        .query(&format!("SELECT t::text FROM {table} t ORDER BY 1"), &[])
        .await
        .unwrap_or_else(|e| panic!("reading {table} in {}: {e}", db.name()));
    rows.iter().map(|r| r.get(0)).collect()
}

/// Waits until every table of `tables` holds the same rows in `source` and
/// `target`; panics with the first difference after `timeout`.
pub async fn wait_same(source: &TestDb, target: &TestDb, tables: &[&str], timeout: Duration) {
    let start = Instant::now();
    loop {
        let mut difference = None;
        for table in tables {
            let want = table_text(source, table).await;
            let client = target.client().await;
            let exists: bool = client
                .query_one("SELECT to_regclass($1) IS NOT NULL", &[table])
                .await
                .unwrap()
                .get(0);
            let got = if exists {
                table_text(target, table).await
            } else {
                Vec::new()
            };
            if want != got {
                let first = want
                    .iter()
                    .zip(&got)
                    .find(|(a, b)| a != b)
                    .map(|(a, b)| format!("source {}\ntarget {}", clip(a), clip(b)))
                    .unwrap_or_else(|| {
                        format!(
                            "{} rows in the source, {} in the target",
                            want.len(),
                            got.len()
                        )
                    });
                difference = Some(format!("{table}: {first}"));
                break;
            }
        }
        let Some(difference) = difference else {
            return;
        };
        assert!(
            start.elapsed() < timeout,
            "the target did not converge with the source within {timeout:?}: {difference}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// At most 400 characters of a row's text.
fn clip(text: &str) -> String {
    match text.char_indices().nth(400) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_owned(),
    }
}

/// The LSN the target's `_pg_replicate.progress` holds.
async fn stored_lsn(target: &TestDb) -> Option<pg_replicate::types::Lsn> {
    let client = target.client().await;
    let row = client
        .query_one("SELECT last_lsn::text FROM _pg_replicate.progress", &[])
        .await
        .unwrap();
    row.get::<_, Option<String>>(0).map(|t| t.parse().unwrap())
}

async fn start_into(source: &TestDb, target: &TestDb, publication: &str, slot: &str) -> Running {
    let sink = PostgresSink::connect(sink_config(target, &format!("{publication}/{slot}")))
        .await
        .unwrap();
    start_with(source, publication, slot, sink, PipelineAction::Both)
}

#[tokio::test]
async fn every_type_replicates_into_postgres_value_for_value() {
    let source = fresh_database("pg_sink_types").await;
    let target = fresh_database("pg_sink_types_target").await;
    let publication = source.unique_name("pub");
    let slot = source.unique_name("slot");
    create_matrix_tables(&source, &publication).await;
    // The target knows the user-defined types under the same names.
    target.execute(MATRIX_TYPES).await;

    let running = start_into(&source, &target, &publication, &slot).await;
    let tables = ["all_types", "all_types_full"];
    // The copy (binary COPY, text-carried columns through the stage table).
    wait_same(&source, &target, &tables, Duration::from_secs(60)).await;

    // The same values through the change stream: inserts, updates (one of
    // them changing the key) and deletes matched by the whole old row.
    let all: Vec<&str> = all_columns().iter().skip(1).map(|(n, _)| *n).collect();
    let all = all.join(", ");
    source
        .execute(&format!(
            "INSERT INTO all_types (id, {all}) SELECT id + 100, {all} FROM all_types;
             UPDATE all_types SET c_int4 = c_int4 WHERE id IN (1, 103);
             UPDATE all_types SET c_text = 'changed' WHERE id IN (3, 5);
             UPDATE all_types SET id = 1000 WHERE id = 6;
             DELETE FROM all_types WHERE id = 102;
             INSERT INTO all_types_full SELECT id + 100, {all} FROM all_types_full;
             UPDATE all_types_full SET c_text = 'changed' WHERE id IN (1, 3, 105);
             DELETE FROM all_types_full WHERE id IN (103, 2);"
        ))
        .await;
    wait_same(&source, &target, &tables, Duration::from_secs(60)).await;
    assert_eq!(table_text(&target, "all_types").await.len(), 9);

    running.stop().await.unwrap();
    let stored = stored_lsn(&target).await.expect("an applied LSN is stored");
    let confirmed = confirmed_flush(&source, &slot).await.unwrap();
    assert!(
        confirmed <= stored,
        "the slot is confirmed at {confirmed}, past what the target stored ({stored})"
    );
}

#[tokio::test]
async fn changes_truncates_and_column_changes_apply_exactly_once() {
    let source = fresh_database("pg_sink_cdc").await;
    let target = fresh_database("pg_sink_cdc_target").await;
    let publication = source.unique_name("pub");
    let slot = source.unique_name("slot");
    create_tables(&source, &publication, 5_000).await;
    // A TOAST column left out of updates.
    source
        .execute(&format!(
            "CREATE TABLE docs (id int PRIMARY KEY, title text, body text);
             INSERT INTO docs SELECT g, 'doc ' || g, (SELECT string_agg(md5(g::text || i::text), '') \
                    FROM generate_series(1, 200) i) FROM generate_series(1, 20) g;
             ALTER PUBLICATION {publication} ADD TABLE docs;"
        ))
        .await;
    let tables = ["big", "small", "keyless", "docs"];

    let running = start_into(&source, &target, &publication, &slot).await;
    wait_same(&source, &target, &tables, Duration::from_secs(60)).await;
    for round in 0..4 {
        write_changes(&source, round).await;
    }
    source
        .execute(
            "UPDATE docs SET title = title || '!' WHERE id <= 5;
             UPDATE docs SET title = 'again' WHERE id <= 2;
             UPDATE docs SET id = id + 100 WHERE id = 6;
             DELETE FROM docs WHERE id = 7;
             BEGIN; TRUNCATE small; INSERT INTO small VALUES (1, 1), (2, 2); COMMIT;
             ALTER TABLE big ADD COLUMN note text;
             UPDATE big SET note = 'added ' || id WHERE id % 50 = 0;
             ALTER TABLE big DROP COLUMN n;
             INSERT INTO big (id, v, amount, note) VALUES (-1, '', 0.5, NULL);",
        )
        .await;
    wait_same(&source, &target, &tables, Duration::from_secs(60)).await;
    running.stop().await.unwrap();

    // A restart resumes from the stored LSN: changes made while stopped
    // arrive once.
    for round in 4..6 {
        write_changes(&source, round).await;
    }
    source
        .execute("ALTER TABLE small ADD COLUMN extra int DEFAULT 7; UPDATE small SET v = v + 1;")
        .await;
    let running = start_into(&source, &target, &publication, &slot).await;
    wait_same(&source, &target, &tables, Duration::from_secs(60)).await;
    running.stop().await.unwrap();
    let stored = stored_lsn(&target).await.unwrap();
    let confirmed = confirmed_flush(&source, &slot).await.unwrap();
    assert!(confirmed <= stored, "slot {confirmed} past stored {stored}");
    let client = target.client().await;
    let copied: i64 = client
        .query_one("SELECT count(*) FROM _pg_replicate.copied_tables", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(copied, 4, "every table copied once");
}

/// The target table's counters of rows read by scans, index scans and rows
/// deleted (the statistics the sink's session has reported so far).
async fn scan_counters(target: &TestDb, table: &str) -> (i64, i64, i64) {
    let client = target.client().await;
    let row = client
        .query_one(
            "SELECT coalesce(seq_tup_read, 0), coalesce(idx_scan, 0), n_tup_del \
             FROM pg_stat_user_tables WHERE relname = $1",
            &[&table],
        )
        .await
        .unwrap_or_else(|e| panic!("reading the statistics of {table}: {e}"));
    (row.get(0), row.get(1), row.get(2))
}

/// A batch of changes reads the target table through its key's index: its
/// cost is the batch's size, not the table's (a scan of the whole table
/// per batch makes a large table's changes ever slower).
#[tokio::test]
async fn changes_read_the_target_through_its_key_not_by_scanning_it() {
    const ROWS: i64 = 50_000;
    const CHANGED: i64 = 2_000;
    let source = fresh_database("pg_sink_index").await;
    let target = fresh_database("pg_sink_index_target").await;
    let publication = source.unique_name("pub");
    let slot = source.unique_name("slot");
    source
        .execute(&format!(
            "CREATE TABLE wide (id bigint PRIMARY KEY, v text);
             INSERT INTO wide SELECT g, 'value ' || g FROM generate_series(1, {ROWS}) g;
             CREATE PUBLICATION {publication} FOR TABLE wide;"
        ))
        .await;
    let running = start_into(&source, &target, &publication, &slot).await;
    let count = |sql: &'static str| {
        let target = &target;
        async move {
            let client = target.client().await;
            match client.query_one(sql, &[]).await {
                Ok(row) => row.get::<_, i64>(0),
                Err(_) => -1, // the table is not created yet
            }
        }
    };
    // Nothing here reads `wide` itself until the counters are taken: the
    // statistics count every session's scans.
    let start = Instant::now();
    while count("SELECT count(*) FROM _pg_replicate.copied_tables").await != 1 {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the target did not record the copy of wide within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let before = scan_counters(&target, "wide").await;

    source
        .execute(&format!(
            "UPDATE wide SET v = v || '!' WHERE id % ({ROWS} / {CHANGED}) = 0"
        ))
        .await;
    // An update is a delete and an insert in the target; the sink's session
    // reports its statistics once idle, within seconds.
    let start = Instant::now();
    let after = loop {
        let now = scan_counters(&target, "wide").await;
        if now.2 - before.2 >= CHANGED {
            break now;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the target's statistics did not show the {CHANGED} applied updates within 60 s \
             (rows deleted: {} before, {} now)",
            before.2,
            now.2
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    running.stop().await.unwrap();
    assert_eq!(
        count("SELECT count(*) FROM wide WHERE v LIKE '%!'").await,
        CHANGED,
        "the updates are applied"
    );
    let (scanned, index_scans) = (after.0 - before.0, after.1 - before.1);
    assert!(
        scanned < ROWS && index_scans > 0,
        "applying {CHANGED} updates read {scanned} rows of the {ROWS}-row table by scans and \
         made {index_scans} index scans: the target is scanned, not read through its key"
    );
}

/// Connects a sink once the previous sink's session (dropped just before)
/// has released the target's writer lock.
async fn connect_when_free(config: PostgresSinkConfig) -> pg_replicate::Result<PostgresSink> {
    let start = Instant::now();
    loop {
        match PostgresSink::connect(config.clone()).await {
            Err(e) if e.to_string().contains("another pg_replicate sink") => {
                assert!(
                    start.elapsed() < Duration::from_secs(10),
                    "the writer lock of a dropped sink was not released within 10 s"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            other => return other,
        }
    }
}

#[tokio::test]
async fn target_problems_are_named() {
    let source = fresh_database("pg_sink_errors").await;
    let target = fresh_database("pg_sink_errors_target").await;
    let publication = source.unique_name("pub");
    let slot = source.unique_name("slot");
    let identity = format!("{publication}/{slot}");
    source
        .execute(&format!(
            "CREATE TYPE mood AS ENUM ('sad', 'happy');
             CREATE TABLE moods (id int PRIMARY KEY, m mood);
             CREATE PUBLICATION {publication} FOR TABLE moods;"
        ))
        .await;

    // A second sink on the same target is refused while the first is connected.
    let first = PostgresSink::connect(sink_config(&target, &identity))
        .await
        .unwrap();
    let error = PostgresSink::connect(sink_config(&target, &identity))
        .await
        .err()
        .expect("a second sink is refused");
    assert_eq!(error.kind(), ErrorKind::Sink, "{error}");
    assert!(
        error.to_string().contains("another pg_replicate sink"),
        "{error}"
    );
    drop(first);

    // A type the target lacks: the pipeline stops with a schema error
    // naming it, and nothing is stored.
    let sink = connect_when_free(sink_config(&target, &identity))
        .await
        .unwrap();
    let running = start_with(&source, &publication, &slot, sink, PipelineAction::Both);
    let error = tokio::time::timeout(Duration::from_secs(60), running.handle)
        .await
        .expect("the pipeline stops on a type the target lacks")
        .unwrap()
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Schema, "{error}");
    assert!(
        error.to_string().contains("type \"mood\" does not exist"),
        "{error}"
    );
    assert_eq!(stored_lsn(&target).await, None);

    // Another identity's replica is refused.
    let client = target.client().await;
    client
        .batch_execute("UPDATE _pg_replicate.progress SET identity = 'other/slot'")
        .await
        .unwrap();
    let error = connect_when_free(sink_config(&target, &identity))
        .await
        .err()
        .expect("another identity is refused");
    assert_eq!(error.kind(), ErrorKind::Config, "{error}");
    assert!(error.to_string().contains("other/slot"), "{error}");
}

const CHILD_ENV: &str = "PGR_POSTGRES_SINK_KILL_CHILD";

/// Runs the pipeline into the target database in a child process until
/// killed.
#[tokio::test]
#[ignore = "started as a child process by killed_at_any_point_resumes_exactly_once"]
async fn child_process() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let spec: serde_json::Value = serde_json::from_str(&spec).unwrap();
    let text = |key: &str| spec[key].as_str().unwrap().to_owned();
    let source_config = crate::common::child_pg_config(&spec);
    let mut target_config = source_config.clone();
    target_config.dbname = text("target");
    let identity = format!("{}/{}", text("publication"), text("slot"));
    let sink = connect_when_free(PostgresSinkConfig::new(target_config).with_identity(identity))
        .await
        .unwrap();
    let source = PostgresSource::new(source_config, text("publication"), text("slot"));
    let mut pipeline = DataPipeline::new(source, sink, PipelineAction::Both)
        .with_batch_config(test_batch_config());
    pipeline.start().await.unwrap();
}

#[tokio::test]
async fn killed_at_any_point_resumes_exactly_once() {
    let source = fresh_database("pg_sink_kill").await;
    let target = fresh_database("pg_sink_kill_target").await;
    let publication = source.unique_name("pub");
    let slot = source.unique_name("slot");
    create_tables(&source, &publication, 100_000).await;
    let spec = crate::common::child_spec(
        &source,
        &publication,
        &slot,
        serde_json::json!({ "target": target.name() }),
    );

    // Kill points: during slot creation and the backfill, then while
    // change batches are applied as changes keep coming.
    let mut round = 0;
    for wait_ms in [100u64, 600, 1500, 900, 2500, 400] {
        let mut child =
            crate::common::spawn_child_test("postgres_sink::child_process", CHILD_ENV, &spec);
        let start = Instant::now();
        while start.elapsed() < Duration::from_millis(wait_ms) {
            write_changes(&source, round).await;
            round += 1;
        }
        child.kill().unwrap();
        child.wait().unwrap();
        wait_slot_inactive(&source, &slot).await;
        let exists: bool = target
            .client()
            .await
            .query_one(
                "SELECT to_regclass('_pg_replicate.progress') IS NOT NULL",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        // Before the first stored batch the slot sits where it was created.
        let stored = if exists {
            stored_lsn(&target).await
        } else {
            None
        };
        if let (Some(confirmed), Some(stored)) = (confirmed_flush(&source, &slot).await, stored) {
            assert!(
                confirmed <= stored,
                "the slot is confirmed at {confirmed} but the target stored only {stored}"
            );
        }
    }

    // A last run catches up: the keyless table would hold extra rows if a
    // change had been applied twice, any table would differ if one were lost.
    let running = start_into(&source, &target, &publication, &slot).await;
    let tables = ["big", "small", "keyless"];
    wait_same(&source, &target, &tables, Duration::from_secs(120)).await;
    running.stop().await.unwrap();
    assert!(
        round > 6,
        "changes were written during the runs ({round} rounds)"
    );
}
