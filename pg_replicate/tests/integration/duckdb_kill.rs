//! `kill -9` of a process replicating into DuckDB, at points during backfill
//! and during CDC: after every restart each table ends equal to Postgres
//! (nothing lost, nothing applied twice), and the slot's confirmed position
//! is never ahead of the position stored in the DuckDB file.
//!
//! The replicating process is this test binary itself, started again to run
//! only [`child_process`] (configured through environment variables).

use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use pg_replicate::pipeline::{DataPipeline, PipelineAction};
use pg_replicate::sinks::duckdb::{
    DuckDbMode, DuckDbSink, DuckDbSinkConfig, DEFAULT_STORAGE_VERSION,
};
use pg_replicate::sinks::Sink;
use pg_replicate::sources::postgres::PostgresSource;
use pg_replicate::types::Lsn;
use serde_json::Value;

use crate::common::*;
use crate::support::{fresh_database, TestDb};

const CHILD_ENV: &str = "PGR_KILL_TEST_CHILD";
const TABLES: &[&str] = &["public.big", "public.small", "public.keyless"];

fn sink_config(file: &Path, identity: &str) -> DuckDbSinkConfig {
    DuckDbSinkConfig {
        path: file.to_path_buf(),
        mode: DuckDbMode::CurrentState,
        identity: Some(identity.to_owned()),
        memory_limit: None,
        storage_version: DEFAULT_STORAGE_VERSION.to_owned(),
    }
}

/// Runs the pipeline in a child process: replicates until killed, or, with
/// `PGR_KILL_TEST_STOP_AT`, until the DuckDB file holds that position.
#[tokio::test]
#[ignore = "started as a child process by killed_at_any_point_resumes_exactly_once"]
async fn child_process() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let spec: Value = serde_json::from_str(&spec).unwrap();
    let text = |key: &str| spec[key].as_str().unwrap().to_owned();
    // The parent's server, not a cluster of this process.
    let config = crate::common::child_pg_config(&spec);
    let identity = format!("{}/{}", text("publication"), text("slot"));
    let sink = DuckDbSink::open(sink_config(Path::new(&text("file")), &identity)).unwrap();
    let source = PostgresSource::new(config, text("publication"), text("slot"));
    let stop_at: Option<Lsn> = spec["stop_at"].as_str().map(|s| s.parse().unwrap());
    let mut pipeline = DataPipeline::new(source, StopAt::new(sink, stop_at), PipelineAction::Both)
        .with_batch_config(test_batch_config());
    let cancel = pipeline.cancellation_token();
    pipeline.sink().cancel.lock().unwrap().replace(cancel);
    pipeline.start().await.unwrap();
}

/// Cancels the pipeline once the sink stored `stop_at`.
struct StopAt {
    inner: DuckDbSink,
    stop_at: Option<Lsn>,
    cancel: std::sync::Mutex<Option<tokio_util::sync::CancellationToken>>,
}

impl StopAt {
    fn new(inner: DuckDbSink, stop_at: Option<Lsn>) -> Self {
        Self {
            inner,
            stop_at,
            cancel: std::sync::Mutex::new(None),
        }
    }
}

#[async_trait::async_trait]
impl Sink for StopAt {
    async fn resumption_state(
        &mut self,
    ) -> pg_replicate::Result<pg_replicate::types::change::ResumptionState> {
        self.inner.resumption_state().await
    }
    async fn write_table_schemas(
        &mut self,
        t: &[std::sync::Arc<pg_replicate::types::TableSchema>],
    ) -> pg_replicate::Result<()> {
        self.inner.write_table_schemas(t).await
    }
    async fn begin_table_copy(
        &mut self,
        t: &std::sync::Arc<pg_replicate::types::TableSchema>,
    ) -> pg_replicate::Result<()> {
        self.inner.begin_table_copy(t).await
    }
    async fn write_table_rows(
        &mut self,
        t: &std::sync::Arc<pg_replicate::types::TableSchema>,
        rows: arrow::record_batch::RecordBatch,
    ) -> pg_replicate::Result<()> {
        self.inner.write_table_rows(t, rows).await
    }
    async fn end_table_copy(
        &mut self,
        t: &std::sync::Arc<pg_replicate::types::TableSchema>,
        lsn: Lsn,
    ) -> pg_replicate::Result<()> {
        self.inner.end_table_copy(t, lsn).await
    }
    async fn write_cdc_batch(
        &mut self,
        batch: pg_replicate::types::change::CdcBatch,
    ) -> pg_replicate::Result<Lsn> {
        let durable = self.inner.write_cdc_batch(batch).await?;
        if self.stop_at.is_some_and(|stop| durable >= stop) {
            if let Some(cancel) = self.cancel.lock().unwrap().as_ref() {
                cancel.cancel();
            }
        }
        Ok(durable)
    }
}

fn spawn_child(
    db: &TestDb,
    publication: &str,
    slot: &str,
    file: &Path,
    stop_at: Option<Lsn>,
) -> Child {
    let spec = crate::common::child_spec(
        db,
        publication,
        slot,
        serde_json::json!({
            "file": file.to_string_lossy(),
            "stop_at": stop_at.map(|l| l.to_string()),
        }),
    );
    crate::common::spawn_child_test("duckdb_kill::child_process", CHILD_ENV, &spec)
}

/// Random-ish changes of every kind, in small transactions.
pub async fn write_changes(db: &TestDb, round: u64) {
    let base = 1_000_000 + round * 1000;
    db.execute(&format!(
        "BEGIN;
         INSERT INTO big SELECT g, 'new ' || g, g % 97, g / 7.0 FROM generate_series({base}, {base} + 199) g;
         UPDATE big SET v = v || '+', amount = amount + 1 WHERE id % 113 = {r};
         DELETE FROM big WHERE id % 127 = {r};
         UPDATE big SET id = -id WHERE id BETWEEN {base} AND {base} + 9;
         COMMIT;
         BEGIN;
         DELETE FROM small WHERE id = {r} % 50;
         INSERT INTO small VALUES ({r} % 50, {round}) ON CONFLICT (id) DO UPDATE SET v = excluded.v;
         INSERT INTO keyless VALUES ('dup', {round}), ('dup', {round});
         DELETE FROM keyless WHERE ctid = (SELECT min(ctid) FROM keyless WHERE tag = 'dup');
         COMMIT;",
        r = round % 100
    ))
    .await;
}

async fn stored_lsn(file: &Path, identity: &str) -> Option<Lsn> {
    let mut sink = DuckDbSink::open(sink_config(file, identity)).unwrap();
    sink.resumption_state().await.unwrap().last_lsn
}

fn duckdb_rows(file: &Path, table: &str) -> Vec<Value> {
    let connection = duckdb::Connection::open(file).unwrap();
    let mut statement = connection
        .prepare(&format!("SELECT to_json(t)::VARCHAR FROM {table} t"))
        .unwrap();
    let mut rows: Vec<Value> = statement
        .query_map([], |r| r.get::<_, String>(0))
        .unwrap()
        .map(|r| serde_json::from_str(&r.unwrap()).unwrap())
        .collect();
    rows.sort_by_key(|v| v.to_string());
    rows
}

/// Runs the replicating process for `wait_ms` while changes keep coming
/// (from round `round` on), then kills it (`kill -9`) and waits until its
/// slot is free.
async fn run_and_kill(
    db: &TestDb,
    publication: &str,
    slot: &str,
    file: &Path,
    wait_ms: u64,
    round: &mut u64,
) {
    let mut child = spawn_child(db, publication, slot, file, None);
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(wait_ms) {
        write_changes(db, *round).await;
        *round += 1;
    }
    child.kill().unwrap();
    child.wait().unwrap();
    wait_slot_inactive(db, slot).await;
}

/// Runs the pipeline until it stored everything written so far, then
/// checks every table equals Postgres and the slot is not confirmed past
/// the stored position; `context` says where in the test this is.
async fn catch_up_and_compare(
    db: &TestDb,
    publication: &str,
    slot: &str,
    file: &Path,
    context: &str,
) {
    let target = crate::common::current_wal_lsn(db).await;
    let mut child = spawn_child(db, publication, slot, file, Some(target));
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(
                status.success(),
                "the catching-up run failed ({context}): {status}"
            );
            break;
        }
        if start.elapsed() > Duration::from_secs(120) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the catching-up run did not catch up within 120 s ({context})");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for table in TABLES {
        let expected = pg_rows(db, table).await;
        let actual = duckdb_rows(file, table);
        assert_eq!(
            expected.len(),
            actual.len(),
            "row count of {table} ({context})"
        );
        assert!(
            expected == actual,
            "{table} differs from Postgres ({context})"
        );
    }
    let identity = format!("{publication}/{slot}");
    let confirmed = confirmed_flush(db, slot).await.unwrap();
    let stored = stored_lsn(file, &identity).await.unwrap();
    assert!(
        confirmed <= stored,
        "slot confirmed {confirmed}, DuckDB stored {stored} ({context})"
    );
}

/// The tables of the kill tests, `big_rows` rows in `big`.
pub async fn create_tables(db: &TestDb, publication: &str, big_rows: u64) {
    db.execute(&format!(
        "CREATE TABLE big (id bigint PRIMARY KEY, v text, n int, amount numeric(12,2));
         CREATE TABLE small (id int PRIMARY KEY, v bigint);
         CREATE TABLE keyless (tag text, n bigint);
         ALTER TABLE keyless REPLICA IDENTITY FULL;
         INSERT INTO big SELECT g, 'row ' || g, g % 97, g / 7.0 FROM generate_series(1, {big_rows}) g;
         INSERT INTO small SELECT g, g FROM generate_series(0, 49) g;
         INSERT INTO keyless VALUES ('a', 1), ('a', 1), ('b', 2);
         CREATE PUBLICATION {publication} FOR TABLE big, small, keyless;"
    ))
    .await;
}

#[tokio::test]
async fn killed_at_any_point_resumes_exactly_once() {
    let db = fresh_database("duckdb_kill").await;
    let publication = db.unique_name("pub");
    let slot = db.unique_name("slot");
    let identity = format!("{publication}/{slot}");
    create_tables(&db, &publication, 300_000).await;
    let dir = std::env::temp_dir().join(format!("pgr_kill_{}", db.name()));
    std::fs::create_dir_all(&dir).unwrap();
    let file: PathBuf = dir.join("replica.duckdb");

    // Kill points: early (slot creation / backfill), mid-backfill, and
    // several during CDC while changes keep coming.
    let mut round = 0;
    for wait_ms in [150u64, 600, 1500, 900, 2500, 400] {
        run_and_kill(&db, &publication, &slot, &file, wait_ms, &mut round).await;
        if let (Some(confirmed), Some(stored)) = (
            confirmed_flush(&db, &slot).await,
            stored_lsn(&file, &identity).await,
        ) {
            assert!(
                confirmed <= stored,
                "slot confirmed {confirmed} but DuckDB stored only {stored}"
            );
        }
    }

    catch_up_and_compare(
        &db,
        &publication,
        &slot,
        &file,
        &format!("{round} rounds of changes"),
    )
    .await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// xorshift64: the trials' random choices, replayable from the seed.
struct Trials(u64);

impl Trials {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// Seeded random `kill -9` trials: each kills the replicating process at a
/// random moment — in the backfill of a replica started over (a third of
/// them), else while changes stream — then lets a run catch up and checks
/// every table equals Postgres. `PGR_KILL_TRIALS` trials (default 4; the
/// longer run in docs/testing.md uses 100), from `PGR_KILL_SEED` (default
/// the clock; printed, so a failure can be replayed).
#[tokio::test]
async fn seeded_random_kill_trials_end_equal_to_postgres() {
    let trials: u32 = std::env::var("PGR_KILL_TRIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4);
    let seed: u64 = std::env::var("PGR_KILL_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
    eprintln!("kill trials: {trials}, seed {seed} (PGR_KILL_SEED={seed} replays them)");
    let mut random = Trials(seed | 1);
    let db = fresh_database("duckdb_kill_trials").await;
    let publication = db.unique_name("pub");
    let slot = db.unique_name("slot");
    create_tables(&db, &publication, 60_000).await;
    let dir = std::env::temp_dir().join(format!("pgr_kill_{}", db.name()));
    std::fs::create_dir_all(&dir).unwrap();
    let file: PathBuf = dir.join("replica.duckdb");
    let client = db.client().await;
    let mut round = 0;
    let mut passed = 0;
    for trial in 1..=trials {
        let fresh = trial == 1 || random.below(3) == 0;
        if fresh {
            wait_slot_inactive(&db, &slot).await;
            client
                .execute(
                    "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1",
                    &[&slot],
                )
                .await
                .unwrap();
            let _ = std::fs::remove_file(&file);
            let _ = std::fs::remove_file(file.with_extension("duckdb.wal"));
        }
        let wait_ms = 50 + random.below(2500);
        let context = format!(
            "trial {trial} of {trials}, seed {seed}: killed {wait_ms} ms into a {} run",
            if fresh { "fresh" } else { "resumed" }
        );
        run_and_kill(&db, &publication, &slot, &file, wait_ms, &mut round).await;
        catch_up_and_compare(&db, &publication, &slot, &file, &context).await;
        passed += 1;
    }
    eprintln!("kill trials: {passed} of {trials} passed (seed {seed}, {round} rounds of changes)");
    let _ = std::fs::remove_dir_all(&dir);
}
