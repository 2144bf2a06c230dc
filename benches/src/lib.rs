//! Shared pieces of the benchmarks: a sink that discards what it gets,
//! peak-memory readings, timing of reference commands and the result table.

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use pg_replicate::sinks::Sink;
use pg_replicate::types::change::{CdcBatch, CdcEvent, ResumptionState};
use pg_replicate::types::{Lsn, TableSchema};
use pg_replicate::Result;
use tokio_util::sync::CancellationToken;

/// Counts rows and change events and drops them; optionally stops the
/// pipeline once enough changes arrived.
#[derive(Default)]
pub struct DiscardSink {
    /// Rows received from backfill.
    pub rows: u64,
    /// Row changes received from CDC.
    pub changes: u64,
    /// Arrow memory of the batches received, in bytes.
    pub arrow_bytes: u64,
    /// Stop the pipeline once this many row changes arrived.
    pub stop_after_changes: Option<(u64, CancellationToken)>,
}

#[async_trait]
impl Sink for DiscardSink {
    async fn resumption_state(&mut self) -> Result<ResumptionState> {
        Ok(ResumptionState::default())
    }

    async fn write_table_schemas(&mut self, _tables: &[Arc<TableSchema>]) -> Result<()> {
        Ok(())
    }

    async fn begin_table_copy(&mut self, _table: &Arc<TableSchema>) -> Result<()> {
        Ok(())
    }

    async fn write_table_rows(
        &mut self,
        _table: &Arc<TableSchema>,
        rows: RecordBatch,
    ) -> Result<()> {
        self.rows += rows.num_rows() as u64;
        self.arrow_bytes += rows.get_array_memory_size() as u64;
        Ok(())
    }

    async fn end_table_copy(
        &mut self,
        _table: &Arc<TableSchema>,
        _snapshot_lsn: Lsn,
    ) -> Result<()> {
        Ok(())
    }

    async fn write_cdc_batch(&mut self, batch: CdcBatch) -> Result<Lsn> {
        for event in &batch.events {
            if let CdcEvent::Changes(changes) = event {
                self.changes += changes.batch.num_rows() as u64;
                self.arrow_bytes += changes.batch.get_array_memory_size() as u64;
            }
        }
        if let Some((expected, cancel)) = &self.stop_after_changes {
            if self.changes >= *expected {
                cancel.cancel();
            }
        }
        Ok(batch.end_lsn)
    }
}

/// Copies the mixed-type table `public.t` into `sink` (`TableCopiesOnly`,
/// the source's default copy connections), checks that `rows` rows were
/// copied, and drops the pipeline, which closes the sink.
pub async fn copy_table_t<K: Sink>(
    config: &pg_replicate::postgres::PgConnectionConfig,
    sink: K,
    rows: u64,
) {
    let source = pg_replicate::sources::postgres::PostgresSource::for_tables(
        config.clone(),
        vec![pg_replicate::types::TableName::new("public", "t")],
    );
    let mut pipeline = pg_replicate::pipeline::DataPipeline::new(
        source,
        sink,
        pg_replicate::pipeline::PipelineAction::TableCopiesOnly,
    );
    let report = pipeline
        .start()
        .await
        .unwrap_or_else(|e| panic!("backfill failed: {e}"));
    assert_eq!(report.rows_copied, rows, "every row copied");
}

/// Peak resident memory of this process so far, in MiB.
pub fn peak_rss_self_mib() -> f64 {
    max_rss_mib(libc::RUSAGE_SELF)
}

fn max_rss_mib(who: libc::c_int) -> f64 {
    rusage(who).map_or(f64::NAN, |usage| usage.ru_maxrss as f64 / 1024.0)
}

fn rusage(who: libc::c_int) -> Option<libc::rusage> {
    // SAFETY: getrusage only writes into the struct we pass.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::getrusage(who, &mut usage) };
    (rc == 0).then_some(usage)
}

/// CPU time (user + system) used so far by this process (`self_`) or by its
/// waited-for children.
pub fn cpu_time(self_: bool) -> Duration {
    let who = if self_ {
        libc::RUSAGE_SELF
    } else {
        libc::RUSAGE_CHILDREN
    };
    let Some(usage) = rusage(who) else {
        return Duration::ZERO;
    };
    let micros = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
    Duration::from_micros(micros(usage.ru_utime) + micros(usage.ru_stime))
}

/// Wall time and peak memory of reference commands.
#[derive(Clone, Copy, Debug)]
pub struct Timed {
    /// Wall time from the first start to the last exit.
    pub elapsed: Duration,
    /// The largest peak resident memory of one of the commands, in MiB.
    pub peak_rss_mib: f64,
}

/// Runs a reference command, failing loudly when it fails.
pub fn time_command(command: &mut Command) -> Timed {
    run_watched(vec![command]).1
}

/// Runs reference commands at the same time, failing loudly when one
/// fails; returns their outputs (stdout and stderr captured).
///
/// Peak memory is each child's own `VmHWM` (its high-water mark since its
/// `exec`), read from `/proc` every 10 ms until it exits: `getrusage`'s
/// figure for children would also count the memory this process had when
/// it spawned them.
pub fn run_watched(commands: Vec<&mut Command>) -> (Vec<std::process::Output>, Timed) {
    let start = Instant::now();
    let mut running: Vec<Watched> = commands.into_iter().map(Watched::spawn).collect();
    while running.iter().any(|w| !w.exit.is_finished()) {
        for watched in &mut running {
            if let Some(kib) = high_water_kib(watched.pid) {
                watched.peak_kib = watched.peak_kib.max(kib);
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let peak_kib = running.iter().map(|w| w.peak_kib).max().unwrap_or(0);
    let mut last_exit = start;
    let outputs = running
        .into_iter()
        .map(|watched| {
            let (output, exited) = watched.output();
            last_exit = last_exit.max(exited);
            output
        })
        .collect();
    let timed = Timed {
        elapsed: last_exit - start,
        peak_rss_mib: peak_kib as f64 / 1024.0,
    };
    (outputs, timed)
}

/// A running reference command: waited for on a thread of its own (which
/// notes the moment it exits), its output read on two more (a full pipe
/// would stall it).
struct Watched {
    name: String,
    pid: u32,
    exit: std::thread::JoinHandle<(std::process::ExitStatus, Instant)>,
    stdout: std::thread::JoinHandle<Vec<u8>>,
    stderr: std::thread::JoinHandle<Vec<u8>>,
    peak_kib: u64,
}

impl Watched {
    fn spawn(command: &mut Command) -> Self {
        use std::process::Stdio;
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
        let stdout = read_all(child.stdout.take());
        let stderr = read_all(child.stderr.take());
        Self {
            name: format!("{command:?}"),
            pid: child.id(),
            exit: std::thread::spawn(move || {
                let status = child.wait().expect("wait for a reference command");
                (status, Instant::now())
            }),
            stdout,
            stderr,
            peak_kib: 0,
        }
    }

    /// The output and the moment of exit; fails loudly when the command
    /// failed.
    fn output(self) -> (std::process::Output, Instant) {
        let (status, exited) = self.exit.join().expect("waiter thread");
        let output = std::process::Output {
            status,
            stdout: self.stdout.join().expect("stdout reader"),
            stderr: self.stderr.join().expect("stderr reader"),
        };
        assert!(
            output.status.success(),
            "{} failed: {}",
            self.name,
            String::from_utf8_lossy(&output.stderr)
        );
        (output, exited)
    }
}

fn read_all(pipe: Option<impl std::io::Read + Send + 'static>) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut bytes);
        }
        bytes
    })
}

/// `VmHWM` of a running process, in KiB.
fn high_water_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// One line of the result table.
pub struct Measurement {
    /// What was measured.
    pub name: String,
    /// Rows or events processed.
    pub count: u64,
    /// Bytes processed (for MB/s), if meaningful.
    pub bytes: Option<u64>,
    /// Wall time.
    pub elapsed: Duration,
    /// Peak RSS in MiB, if known.
    pub peak_rss_mib: Option<f64>,
}

/// Prints measurements as a Markdown table, each with its ratio to the
/// reference named `reference` (their time / our time: above 1 is faster).
pub fn print_table(title: &str, unit: &str, rows: &[Measurement]) {
    println!("\n### {title}\n");
    println!("| run | {unit} | seconds | {unit}/s | MB/s | peak RSS MiB | speed vs first row |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    let reference = rows
        .first()
        .map(|r| r.elapsed.as_secs_f64())
        .unwrap_or(f64::NAN);
    for row in rows {
        let seconds = row.elapsed.as_secs_f64();
        let mb = row
            .bytes
            .map(|b| format!("{:.1}", b as f64 / seconds / 1e6))
            .unwrap_or_else(|| "-".into());
        let rss = row
            .peak_rss_mib
            .map(|m| format!("{m:.0}"))
            .unwrap_or_else(|| "-".into());
        println!(
            "| {} | {} | {:.2} | {:.0} | {} | {} | {:.2} |",
            row.name,
            row.count,
            seconds,
            row.count as f64 / seconds,
            mb,
            rss,
            reference / seconds
        );
    }
}

/// A count from the environment (`name`), or `default`.
pub fn env_count(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(default)
}

/// Starts the benchmark's throwaway cluster (no TLS) with database `bench`.
pub fn start_cluster() -> pg_replicate::postgres::throwaway::ThrowawayCluster {
    use pg_replicate::postgres::throwaway::{ThrowawayCluster, ThrowawayOptions};
    let cluster = ThrowawayCluster::start(ThrowawayOptions {
        ssl: false,
        ..ThrowawayOptions::default()
    })
    .unwrap_or_else(|e| panic!("cannot start PostgreSQL: {e}"));
    cluster
        .psql("postgres", "CREATE DATABASE bench")
        .unwrap_or_else(|e| panic!("cannot create the database: {e}"));
    cluster
}

/// A `psql` (or other client binary) command for the cluster's `bench`
/// database over TCP, as the superuser.
pub fn client_command(
    cluster: &pg_replicate::postgres::throwaway::ThrowawayCluster,
    binary: &str,
    host: &str,
) -> Command {
    use pg_replicate::postgres::throwaway::ThrowawayRole;
    let mut command = Command::new(cluster.bin_dir().join(binary));
    command
        .arg("-h")
        .arg(host)
        .arg("-p")
        .arg(cluster.port().to_string())
        .arg("-U")
        .arg(ThrowawayRole::Superuser.name())
        .arg("-d")
        .arg("bench")
        .env("PGPASSWORD", ThrowawayRole::Superuser.password());
    command
}

/// The mixed-type table both benchmarks use: bigint, int, float8,
/// numeric(12,2), ~40-character text, timestamptz, bool, ~60-byte jsonb and
/// uuid.
pub const MIXED_TABLE_COLUMNS: &str = "id bigint PRIMARY KEY, i int, f float8, n numeric(12,2), \
    s text, ts timestamptz, b bool, j jsonb, u uuid";

/// Values of [`MIXED_TABLE_COLUMNS`] for row `g` (an SQL expression list).
pub const MIXED_TABLE_VALUES: &str = "g, (g % 100000)::int, g * 0.25, (g % 1000000) / 100.0, \
    md5(g::text) || 'abcdefgh', '2024-01-01 00:00:00+00'::timestamptz + g * interval '1 second', \
    g % 2 = 0, jsonb_build_object('id', g, 'name', 'item ' || g, 'tags', jsonb_build_array('a', 'b')), \
    gen_random_uuid()";

/// SQL that makes `inserts` inserts, then `updates` updates and `deletes`
/// deletes of the mixed-type table `table`, in transactions of `per_tx` rows
/// (one statement each, for `psql -f` in autocommit mode).
pub fn change_script(table: &str, inserts: u64, updates: u64, deletes: u64, per_tx: u64) -> String {
    use std::fmt::Write as _;
    let mut script = String::new();
    for k in 0..inserts / per_tx {
        let (from, to) = (k * per_tx + 1, (k + 1) * per_tx);
        let _ = writeln!(
            script,
            "INSERT INTO {table} SELECT {MIXED_TABLE_VALUES} FROM generate_series({from}, {to}) g;"
        );
    }
    for k in 0..updates / per_tx {
        let (from, to) = (k * per_tx + 1, (k + 1) * per_tx);
        let _ = writeln!(
            script,
            "UPDATE {table} SET i = i + 1, s = s || 'x' WHERE id BETWEEN {from} AND {to};"
        );
    }
    for k in 0..deletes / per_tx {
        let (from, to) = (inserts - (k + 1) * per_tx + 1, inserts - k * per_tx);
        let _ = writeln!(
            script,
            "DELETE FROM {table} WHERE id BETWEEN {from} AND {to};"
        );
    }
    script
}

/// Runs an SQL script file through `psql -f` (autocommit: one transaction
/// per statement).
pub fn run_script(
    cluster: &pg_replicate::postgres::throwaway::ThrowawayCluster,
    name: &str,
    script: &str,
) -> Duration {
    let path = cluster
        .data_dir()
        .parent()
        .unwrap_or(cluster.data_dir())
        .join(name);
    std::fs::write(&path, script)
        .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    time_command(
        client_command(cluster, "psql", "127.0.0.1")
            .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-f"])
            .arg(&path),
    )
    .elapsed
}

/// Forwards to `inner`, counts row changes, records each change's lag
/// (stored − committed) and stops the pipeline after `stop_after` changes.
pub struct CountingSink<S> {
    /// The sink that stores.
    pub inner: S,
    /// Row changes stored.
    pub changes: u64,
    /// Lag of every stored change, in microseconds.
    pub lags_micros: Vec<i64>,
    /// Stop the pipeline once this many changes were stored.
    pub stop_after: Option<(u64, CancellationToken)>,
}

impl<S> CountingSink<S> {
    /// Wraps `inner`.
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            changes: 0,
            lags_micros: Vec::new(),
            stop_after: None,
        }
    }
}

#[async_trait]
impl<S: Sink> Sink for CountingSink<S> {
    async fn resumption_state(&mut self) -> Result<ResumptionState> {
        self.inner.resumption_state().await
    }

    async fn write_table_schemas(&mut self, tables: &[Arc<TableSchema>]) -> Result<()> {
        self.inner.write_table_schemas(tables).await
    }

    async fn begin_table_copy(&mut self, table: &Arc<TableSchema>) -> Result<()> {
        self.inner.begin_table_copy(table).await
    }

    async fn write_table_rows(
        &mut self,
        table: &Arc<TableSchema>,
        rows: RecordBatch,
    ) -> Result<()> {
        self.inner.write_table_rows(table, rows).await
    }

    async fn end_table_copy(&mut self, table: &Arc<TableSchema>, snapshot_lsn: Lsn) -> Result<()> {
        self.inner.end_table_copy(table, snapshot_lsn).await
    }

    async fn write_cdc_batch(&mut self, batch: CdcBatch) -> Result<Lsn> {
        use arrow::array::AsArray;
        use arrow::datatypes::TimestampMicrosecondType;
        let mut commit_times = Vec::new();
        for event in &batch.events {
            if let CdcEvent::Changes(changes) = event {
                self.changes += changes.batch.num_rows() as u64;
                if let Some(times) = changes
                    .batch
                    .column_by_name(pg_replicate::types::change::COMMIT_TIME_COLUMN)
                {
                    commit_times.extend(
                        times
                            .as_primitive::<TimestampMicrosecondType>()
                            .values()
                            .iter()
                            .copied(),
                    );
                }
            }
        }
        let durable = self.inner.write_cdc_batch(batch).await?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_micros() as i64)
            .unwrap_or_default();
        self.lags_micros
            .extend(commit_times.iter().map(|t| now - t));
        if let Some((expected, cancel)) = &self.stop_after {
            if self.changes >= *expected {
                cancel.cancel();
            }
        }
        Ok(durable)
    }
}

/// The `p`-th percentile (0–100) of `values`, sorted in place.
pub fn percentile(values: &mut [i64], p: f64) -> i64 {
    if values.is_empty() {
        return 0;
    }
    values.sort_unstable();
    let index = ((p / 100.0) * (values.len() - 1) as f64).round() as usize;
    values[index.min(values.len() - 1)]
}

/// Creates table `t` of the mixed types with `rows` rows, frozen and
/// checkpointed so every run reads the same pages.
pub fn create_mixed_table(
    cluster: &pg_replicate::postgres::throwaway::ThrowawayCluster,
    rows: u64,
) {
    cluster
        .psql(
            "bench",
            &format!(
                "CREATE TABLE t ({MIXED_TABLE_COLUMNS});
                 INSERT INTO t SELECT {MIXED_TABLE_VALUES} FROM generate_series(1, {rows}) g;
                 VACUUM (FREEZE, ANALYZE) t; CHECKPOINT;"
            ),
        )
        .unwrap_or_else(|e| panic!("cannot generate data: {e}"));
}

/// Creates the mixed-type table `c`, publication `bench_pub` for it, and
/// a pgoutput slot per name in `slots` (before any change, so every reader
/// sees the same range); `extra` is more SQL run with it.
pub fn create_change_table(
    cluster: &pg_replicate::postgres::throwaway::ThrowawayCluster,
    slots: &[&str],
    extra: &str,
) {
    let mut sql = format!(
        "CREATE TABLE c ({MIXED_TABLE_COLUMNS}); CREATE PUBLICATION bench_pub FOR TABLE c;"
    );
    sql.push_str(extra);
    for slot in slots {
        sql.push_str(&format!(
            "SELECT pg_create_logical_replication_slot('{slot}', 'pgoutput');"
        ));
    }
    cluster
        .psql("bench", &sql)
        .unwrap_or_else(|e| panic!("set-up failed: {e}"));
}

/// Makes the changes of [`change_script`] on table `c` and returns the WAL
/// insert position after them; one more row is inserted after that
/// position so `pg_recvlogical --endpos` sees the stream pass it.
pub fn generate_changes(
    cluster: &pg_replicate::postgres::throwaway::ThrowawayCluster,
    inserts: u64,
    updates: u64,
    deletes: u64,
    per_tx: u64,
) -> String {
    run_script(
        cluster,
        "changes.sql",
        &change_script("c", inserts, updates, deletes, per_tx),
    );
    end_position(cluster)
}

/// The WAL insert position now, for `pg_recvlogical --endpos`; one more
/// row is inserted into table `c` after it so the stream passes it.
pub fn end_position(cluster: &pg_replicate::postgres::throwaway::ThrowawayCluster) -> String {
    let end_lsn = cluster
        .psql("bench", "SELECT pg_current_wal_insert_lsn()")
        .unwrap_or_else(|e| panic!("cannot read the WAL position: {e}"))
        .trim()
        .to_owned();
    cluster
        .psql("bench", "INSERT INTO c (id) VALUES (-1)")
        .unwrap_or_else(|e| panic!("cannot insert the end marker: {e}"));
    end_lsn
}

/// `pg_recvlogical` reading slot `slot` of publication `bench_pub` with
/// pgoutput protocol 1 into /dev/null, up to `end_lsn`.
pub fn recvlogical(
    cluster: &pg_replicate::postgres::throwaway::ThrowawayCluster,
    host: &str,
    slot: &str,
    end_lsn: &str,
) -> Command {
    let mut command = client_command(cluster, "pg_recvlogical", host);
    command.args([
        "--slot",
        slot,
        "--start",
        "--no-loop",
        "-o",
        "proto_version=1",
        "-o",
        "publication_names=bench_pub",
        "-E",
        end_lsn,
        "-f",
        "/dev/null",
    ]);
    command
}

/// Streams publication `bench_pub` from `slot` into a [`DiscardSink`] until
/// `expected` row changes arrived; returns the time and the changes seen.
pub async fn run_cdc_into_discard(
    config: pg_replicate::postgres::PgConnectionConfig,
    slot: &str,
    expected: u64,
) -> (Duration, u64) {
    let cancel = CancellationToken::new();
    let sink = DiscardSink {
        stop_after_changes: Some((expected, cancel.clone())),
        ..DiscardSink::default()
    };
    let (elapsed, sink) = time_cdc(config, slot, sink, cancel).await;
    (elapsed, sink.changes)
}

/// Streams publication `bench_pub` from `slot` into `sink` until `cancel`
/// fires (the sink fires it); returns the time and the sink.
pub async fn time_cdc<S: Sink>(
    config: pg_replicate::postgres::PgConnectionConfig,
    slot: &str,
    sink: S,
    cancel: CancellationToken,
) -> (Duration, S) {
    use pg_replicate::pipeline::{DataPipeline, PipelineAction};
    use pg_replicate::sources::postgres::PostgresSource;
    let source = PostgresSource::new(config, "bench_pub", slot);
    let mut pipeline =
        DataPipeline::new(source, sink, PipelineAction::CdcOnly).with_cancellation(cancel);
    let start = Instant::now();
    pipeline
        .start()
        .await
        .unwrap_or_else(|e| panic!("CDC failed: {e}"));
    let elapsed = start.elapsed();
    (elapsed, pipeline.into_parts().1)
}

/// The pins of the benchmarks' Python environment: DuckDB with its
/// postgres scanner, loaded without downloads.
const BENCH_PYTHON_PINS: &[&str] = &[
    "duckdb==1.5.5",
    "duckdb-extension-postgres-scanner==1.5.5",
    "duckdb-extensions==1.5.5",
];

/// The Python interpreter of the benchmarks' virtual environment
/// (`~/.cache/pg_replicate/bench-venv`), created on first use.
pub fn bench_python() -> std::path::PathBuf {
    let home = std::env::var_os("HOME").map_or_else(|| "/tmp".into(), std::path::PathBuf::from);
    let venv = home.join(".cache/pg_replicate/bench-venv");
    let python = venv.join("bin/python");
    if !python.exists() {
        eprintln!("creating {} ...", venv.display());
        let status = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .expect("python3");
        assert!(status.success(), "python3 -m venv failed");
        let status = Command::new(venv.join("bin/pip"))
            .args(["install", "-q"])
            .args(BENCH_PYTHON_PINS)
            .status()
            .expect("pip");
        assert!(status.success(), "pip install {BENCH_PYTHON_PINS:?} failed");
    }
    python
}

/// The benches package's directory: cargo's value at run time (the build
/// directory may be shared by checkouts in other places), else the one
/// built in.
pub fn bench_manifest_dir() -> String {
    std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_owned())
}

/// A throwaway cluster holding the mixed-type table `t`, set up for a
/// reference run of DuckDB's postgres scanner next to pg_replicate.
pub struct ScannerBench {
    /// The cluster (stopped when dropped).
    pub cluster: pg_replicate::postgres::throwaway::ThrowawayCluster,
    /// A scratch folder beside the cluster's data.
    pub work: std::path::PathBuf,
    /// The `HOME` the scanner runs with.
    pub scanner_home: std::path::PathBuf,
    /// The libpq connection string the scanner attaches with.
    pub dsn: String,
    /// pg_replicate's connection to the `bench` database.
    pub config: pg_replicate::postgres::PgConnectionConfig,
}

/// Starts the cluster and generates `rows` rows of the mixed-type table.
pub fn scanner_bench(rows: u64) -> ScannerBench {
    use pg_replicate::postgres::throwaway::ThrowawayRole;
    eprintln!("starting PostgreSQL and generating {rows} rows ...");
    let cluster = start_cluster();
    create_mixed_table(&cluster, rows);
    let work = cluster
        .data_dir()
        .parent()
        .unwrap_or(cluster.data_dir())
        .to_path_buf();
    let scanner_home = work.join("duckdb-home");
    std::fs::create_dir_all(&scanner_home).unwrap();
    let superuser = ThrowawayRole::Superuser;
    let dsn = format!(
        "host=127.0.0.1 port={} dbname=bench user={} password={}",
        cluster.port(),
        superuser.name(),
        superuser.password()
    );
    let config = cluster.connection_config("bench", superuser.name());
    ScannerBench {
        cluster,
        work,
        scanner_home,
        dsn,
        config,
    }
}
