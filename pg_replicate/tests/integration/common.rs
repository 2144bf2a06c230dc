//! Helpers for pipeline tests: run a pipeline in the background, wait for a
//! condition, compare the sink's tables with Postgres.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pg_replicate::pipeline::{BatchConfig, DataPipeline, PipelineAction, PipelineReport};
use pg_replicate::sources::postgres::PostgresSource;
use pg_replicate::Result;
use serde_json::Value;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::memory_sink::{MemorySink, Store};
use crate::support::TestDb;

/// A pipeline running in a background task.
pub struct Running {
    pub handle: JoinHandle<Result<PipelineReport>>,
    pub cancel: CancellationToken,
}

impl Running {
    /// Requests a graceful stop and waits for the result.
    pub async fn stop(self) -> Result<PipelineReport> {
        self.cancel.cancel();
        tokio::time::timeout(Duration::from_secs(60), self.handle)
            .await
            .expect("pipeline did not stop within 60 s")
            .expect("pipeline task panicked")
    }
}

/// Small batches and a short fill time keep tests quick.
pub fn test_batch_config() -> BatchConfig {
    BatchConfig {
        max_rows: 1000,
        max_bytes: 1 << 20,
        max_fill: Duration::from_millis(50),
        status_interval: Duration::from_secs(1),
        stall_timeout: Duration::from_secs(3),
        // Streamed transactions beyond 64 KiB go to disk.
        max_spool_memory: 64 * 1024,
        spill_dir: None,
    }
}

/// Starts a pipeline from `db`'s publication into a memory sink on `store`.
pub fn start(
    db: &TestDb,
    publication: &str,
    slot: &str,
    store: &Arc<Mutex<Store>>,
    action: PipelineAction,
) -> Running {
    start_with(
        db,
        publication,
        slot,
        MemorySink::new(store.clone()),
        action,
    )
}

/// Starts a pipeline (backfill and CDC) and waits until it copied `tables`
/// tables.
pub async fn start_copied(
    db: &TestDb,
    publication: &str,
    slot: &str,
    store: &Arc<Mutex<Store>>,
    tables: usize,
) -> Running {
    let running = start(db, publication, slot, store, PipelineAction::Both);
    wait_until("the backfill", Duration::from_secs(30), || {
        store.lock().unwrap().state.copied_tables.len() == tables
    })
    .await;
    running
}

/// Like [`start`] with a prepared sink of any kind.
pub fn start_with<S: pg_replicate::sinks::Sink + 'static>(
    db: &TestDb,
    publication: &str,
    slot: &str,
    sink: S,
    action: PipelineAction,
) -> Running {
    start_source(
        PostgresSource::new(db.config(), publication, slot),
        sink,
        action,
    )
}

/// Like [`start_with`] with a configured source.
pub fn start_source<
    Src: pg_replicate::sources::Source + 'static,
    S: pg_replicate::sinks::Sink + 'static,
>(
    source: Src,
    sink: S,
    action: PipelineAction,
) -> Running {
    let cancel = CancellationToken::new();
    let mut pipeline = DataPipeline::new(source, sink, action)
        .with_batch_config(test_batch_config())
        .with_cancellation(cancel.clone());
    let handle = tokio::spawn(async move { pipeline.start().await });
    Running { handle, cancel }
}

/// Waits until `condition` holds, panicking with `what` after `timeout`.
pub async fn wait_until(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) {
    let start = Instant::now();
    while !condition() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Rows of a Postgres table as JSON objects (`row_to_json`).
pub async fn pg_rows(db: &TestDb, table: &str) -> Vec<Value> {
    let client = db.client().await;
    let rows = client
        .query(&format!("SELECT row_to_json(t)::text FROM {table} t"), &[])
        .await
        .unwrap();
    let mut values: Vec<Value> = rows
        .iter()
        .map(|r| serde_json::from_str(r.get::<_, &str>(0)).unwrap())
        .collect();
    values.sort_by_key(|v| v.to_string());
    values
}

/// The sink's rows of `table`, in the order [`pg_rows`] uses.
pub fn sink_rows(store: &Arc<Mutex<Store>>, table: &str) -> Vec<Value> {
    let mut rows = store.lock().unwrap().rows(table);
    rows.sort_by_key(|v| v.to_string());
    rows
}

/// Waits until the sink's copy of each table equals Postgres.
pub async fn wait_converged(db: &TestDb, store: &Arc<Mutex<Store>>, tables: &[&str]) {
    let start = Instant::now();
    loop {
        let mut diverged = None;
        for table in tables {
            let expected = pg_rows(db, table).await;
            // The sink names tables `schema.name`, unquoted.
            let actual = sink_rows(store, &table.replace('"', ""));
            if expected != actual {
                diverged = Some((table, expected, actual));
                break;
            }
        }
        let Some((table, expected, actual)) = diverged else {
            return;
        };
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{table} did not converge:\npostgres: {expected:?}\nsink:     {actual:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Lines of all runs with the given `op`.
pub fn lines_with_op(store: &Arc<Mutex<Store>>, op: &str) -> Vec<Value> {
    store
        .lock()
        .unwrap()
        .all_lines()
        .filter(|l| l["op"] == op)
        .cloned()
        .collect()
}

/// The slot's `confirmed_flush_lsn`.
pub async fn confirmed_flush(db: &TestDb, slot: &str) -> Option<pg_replicate::types::Lsn> {
    let client = db.client().await;
    let row = client
        .query_opt(
            "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await
        .unwrap()?;
    row.get::<_, Option<String>>(0).map(|s| s.parse().unwrap())
}

/// Waits until no connection streams from `slot` (after a killed pipeline,
/// the server notices the closed connection with a delay).
pub async fn wait_slot_inactive(db: &TestDb, slot: &str) {
    wait_slot_state(db, slot, false).await;
}

/// Waits until `slot` is (`active`) or is not in use.
pub async fn wait_slot_state(db: &TestDb, slot: &str, active: bool) {
    let client = db.client().await;
    let start = Instant::now();
    loop {
        let now: bool = client
            .query_one(
                "SELECT coalesce(bool_or(active), false) FROM pg_replication_slots WHERE slot_name = $1",
                &[&slot],
            )
            .await
            .unwrap()
            .get(0);
        if now == active {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "slot {slot} never became {}",
            if active { "active" } else { "inactive" }
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The virtual environment of a warehouse emulator: the path in `env_var`
/// when set, else what `scripts/emulators/<script>` prints after
/// installing it (once per machine).
#[cfg(any(feature = "bigquery", feature = "snowflake"))]
pub fn emulator_venv(env_var: &str, script: &str) -> std::path::PathBuf {
    use std::process::{Command, Stdio};

    if let Ok(path) = std::env::var(env_var) {
        return path.into();
    }
    // The runtime value first: a test binary run from another checkout.
    let manifest = std::env::var("CARGO_MANIFEST_DIR")
        .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_owned());
    let script = std::path::Path::new(&manifest)
        .join("../scripts/emulators")
        .join(script);
    let output = Command::new("bash")
        .arg(&script)
        .stderr(Stdio::inherit())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    assert!(
        output.status.success(),
        "{} failed: these tests need its emulator",
        script.display()
    );
    String::from_utf8_lossy(&output.stdout).trim().into()
}

/// Where the children of a kill test (`kind`: the sink, with `slot`) log.
pub fn child_log(kind: &str, slot: &str) -> String {
    std::env::temp_dir()
        .join(format!("pgr-{kind}-kill-{slot}.log"))
        .display()
        .to_string()
}

/// Shows the end of a kill test's children's log when the test fails,
/// and removes the log.
pub struct ChildLog(pub String);

impl Drop for ChildLog {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let text = std::fs::read_to_string(&self.0).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            eprintln!(
                "last lines of the killed processes' log {}:\n{}",
                self.0,
                lines[lines.len().saturating_sub(150)..].join("\n")
            );
        } else {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}

/// The spec of a kill test's child process: the parent's server and
/// database, the publication and the slot, plus the fields of `extra`.
pub fn child_spec(db: &TestDb, publication: &str, slot: &str, extra: Value) -> Value {
    let config = db.config();
    let mut spec = serde_json::json!({
        "host": config.host,
        "port": config.port,
        "user": config.username,
        "password": config.password,
        "db": db.name(),
        "publication": publication,
        "slot": slot,
    });
    if let (Some(spec), Value::Object(extra)) = (spec.as_object_mut(), extra) {
        spec.extend(extra);
    }
    spec
}

/// The parent's server, from a [`child_spec`].
pub fn child_pg_config(spec: &Value) -> pg_replicate::postgres::PgConnectionConfig {
    let text = |key: &str| spec[key].as_str().unwrap().to_owned();
    pg_replicate::postgres::PgConnectionConfig {
        host: text("host"),
        port: spec["port"].as_u64().unwrap() as u16,
        dbname: text("db"),
        username: text("user"),
        password: spec["password"].as_str().map(str::to_owned),
        ssl_mode: pg_replicate::postgres::SslMode::Disable,
        ssl_root_cert: None,
        application_name: None,
    }
}

/// Starts this test binary again to run only the ignored test `test`,
/// with `spec` in the environment variable `env`.
pub fn spawn_child_test(test: &str, env: &str, spec: &Value) -> std::process::Child {
    std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            test,
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(env, spec.to_string())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap()
}

/// Postgres' current WAL insert position (not the write position: the
/// test cluster runs with synchronous_commit off).
pub async fn current_wal_lsn(db: &TestDb) -> pg_replicate::types::Lsn {
    let lsn: String = db
        .client()
        .await
        .query_one("SELECT pg_current_wal_insert_lsn()::text", &[])
        .await
        .unwrap()
        .get(0);
    lsn.parse().unwrap()
}

/// An example process (see [`example_binary`]), killed when the test ends,
/// passing or not.
pub struct Example(pub std::process::Child);

impl Drop for Example {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The binary of example `name`, which cargo builds with the tests
/// (`scripts/test`), next to this test binary's folder.
pub fn example_binary(name: &str) -> std::path::PathBuf {
    let exe = std::env::current_exe().unwrap();
    let release = exe.parent().and_then(|deps| deps.parent()).unwrap();
    let binary = release.join("examples").join(name);
    assert!(
        binary.exists(),
        "{} is missing: build the examples first (`scripts/test` does; or `cargo build --release --examples`)",
        binary.display()
    );
    binary
}

/// `GET path` on `addr` (`host:port`): the status code and the body;
/// `None` when nothing answers within 5 s.
pub async fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    let response = reqwest::Client::new()
        .get(format!("http://{addr}{path}"))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .ok()?;
    let status = response.status().as_u16();
    Some((status, response.text().await.ok()?))
}

/// A port of 127.0.0.1 free just now, as `127.0.0.1:<port>`.
pub fn free_local_addr() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().to_string()
}
