//! DuckDB backfill benchmark: copies the mixed-type table into a DuckDB file
//! with pg_replicate (rows and primary key), next to DuckDB's own postgres
//! scanner (`ATTACH … (TYPE postgres); CREATE TABLE t AS SELECT * FROM
//! pg.public.t`, alone and followed by `ALTER TABLE t ADD PRIMARY KEY (id)`,
//! the same work as ours; duckdb 1.5.5 from PyPI with its postgres-scanner
//! extension wheel, loaded without downloads) in the same run.
//!
//! The sink runs with its default memory limit
//! ([`DEFAULT_MEMORY_LIMIT`]); `BENCH_DUCKDB_MEMORY_LIMIT` sets another
//! (`none`: DuckDB's own default, 80% of RAM).
//!
//! ```text
//! cargo bench -p pg_replicate_benches --bench duckdb_backfill     # 5,000,000 rows
//! BENCH_ROWS=500000 cargo bench -p pg_replicate_benches --bench duckdb_backfill
//! BENCH_DUCKDB_MEMORY_LIMIT=512MB cargo bench -p pg_replicate_benches --bench duckdb_backfill
//! BENCH_RUNS=5 cargo bench -p pg_replicate_benches --bench duckdb_backfill   # best of 5
//! ```
//!
//! After the table, it prints where the time goes: the CPU seconds of the
//! scanner's process and of ours (all threads; Postgres' backends are not
//! counted in either), the source alone into a sink that discards the
//! batches (reading Postgres and decoding into Arrow), and the phases the
//! DuckDB sink logs when a copy commits (inserting the rows, committing
//! them, adding the key). Every run's figures go to stderr.
//!
//! The Python environment is created on first use in
//! `~/.cache/pg_replicate/bench-venv` (pip needs the package registry once).

use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pg_replicate::sinks::duckdb::{
    DuckDbMode, DuckDbSink, DuckDbSinkConfig, DEFAULT_MEMORY_LIMIT, DEFAULT_STORAGE_VERSION,
};
use pg_replicate_benches::*;

/// Measured runs after the warm-up, unless `BENCH_RUNS` says otherwise.
const RUNS: u64 = 2;

/// The phases of one copy, in milliseconds, as the sink's "copy committed
/// to DuckDB" event reports them: insert, commit, key.
type Phases = [u64; 3];

/// Collects the phases the DuckDB sink reports.
#[derive(Clone, Default)]
struct PhaseLog(Arc<Mutex<Vec<Phases>>>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for PhaseLog {
    fn on_event(
        &self,
        event: &tracing::Event<'_>,
        _ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        struct Fields(Phases, bool);
        impl tracing::field::Visit for Fields {
            fn record_u64(&mut self, field: &tracing::field::Field, value: u64) {
                match field.name() {
                    "insert_ms" => self.0[0] = value,
                    "commit_ms" => self.0[1] = value,
                    "key_ms" => {
                        self.0[2] = value;
                        self.1 = true;
                    }
                    _ => {}
                }
            }
            fn record_debug(&mut self, _: &tracing::field::Field, _: &dyn std::fmt::Debug) {}
        }
        let mut fields = Fields([0; 3], false);
        event.record(&mut fields);
        if fields.1 {
            if let Ok(mut log) = self.0.lock() {
                log.push(fields.0);
            }
        }
    }
}

fn remove_db(path: &Path) {
    let _ = std::fs::remove_file(path);
    let _ = std::fs::remove_file(path.with_extension("duckdb.wal"));
}

fn main() {
    let rows = env_count("BENCH_ROWS", 5_000_000);
    let runs = env_count("BENCH_RUNS", RUNS).max(1);
    let phases = PhaseLog::default();
    {
        use tracing_subscriber::layer::SubscriberExt;
        let subscriber =
            tracing_subscriber::registry().with(tracing_subscriber::Layer::with_filter(
                phases.clone(),
                tracing_subscriber::filter::Targets::new()
                    .with_target("pg_replicate::sinks::duckdb", tracing::Level::INFO),
            ));
        tracing::subscriber::set_global_default(subscriber).expect("the only subscriber");
    }
    let python = bench_python();
    let ScannerBench {
        cluster: _cluster,
        work,
        scanner_home,
        dsn,
        config,
    } = scanner_bench(rows);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let script = Path::new(&bench_manifest_dir()).join("reference/postgres_scanner.py");

    let memory_limit = match std::env::var("BENCH_DUCKDB_MEMORY_LIMIT") {
        Ok(limit) if limit == "none" => None,
        Ok(limit) => Some(limit),
        Err(_) => Some(DEFAULT_MEMORY_LIMIT.to_owned()),
    };
    let mut scanner_times = Vec::new();
    let mut keyed_times = Vec::new();
    let mut our_times = Vec::new();
    let mut source_times = Vec::new();
    let mut our_cpu = Duration::MAX;
    let mut source_cpu = Duration::MAX;
    let (mut scanner_peak, mut keyed_peak) = (0f64, 0f64);
    let (mut scanner_cpu, mut keyed_cpu) = (f64::MAX, f64::MAX);
    // The scanner's run: seconds, peak RSS and CPU seconds, with or without
    // the key.
    let scan = |with_key: bool| {
        let scanner_file = work.join("scanner.duckdb");
        remove_db(&scanner_file);
        let mut command = Command::new(&python);
        command
            .arg(&script)
            .arg(&dsn)
            .arg(&scanner_file)
            .env("HOME", &scanner_home);
        if with_key {
            command.arg("key");
        }
        let (outputs, scanner) = run_watched(vec![&mut command]);
        let stdout = String::from_utf8_lossy(&outputs[0].stdout);
        let mut fields = stdout.split_whitespace();
        let seconds: f64 = fields.next().and_then(|s| s.parse().ok()).expect("seconds");
        let scanned: u64 = fields.next().and_then(|s| s.parse().ok()).expect("rows");
        assert_eq!(scanned, rows);
        let cpu: f64 = fields
            .next()
            .and_then(|s| s.parse().ok())
            .expect("CPU seconds");
        (seconds, scanner.peak_rss_mib, cpu)
    };
    for run in 0..=runs {
        let (seconds, peak, cpu) = scan(false);
        scanner_peak = scanner_peak.max(peak);
        let (keyed_seconds, peak, keyed_cpu_run) = scan(true);
        keyed_peak = keyed_peak.max(peak);

        // The source alone: reading Postgres and decoding into Arrow.
        let cpu_before = cpu_time(true);
        let source_elapsed = runtime.block_on(async {
            let start = Instant::now();
            copy_table_t(&config, DiscardSink::default(), rows).await;
            start.elapsed()
        });
        let source_cpu_run = cpu_time(true).saturating_sub(cpu_before);

        let our_file = work.join("ours.duckdb");
        remove_db(&our_file);
        let cpu_before = cpu_time(true);
        let elapsed = runtime.block_on(async {
            let start = Instant::now();
            let sink = DuckDbSink::open(DuckDbSinkConfig {
                path: our_file.clone(),
                mode: DuckDbMode::CurrentState,
                identity: None,
                memory_limit: memory_limit.clone(),
                storage_version: DEFAULT_STORAGE_VERSION.to_owned(),
            })
            .unwrap_or_else(|e| panic!("cannot open DuckDB: {e}"));
            copy_table_t(&config, sink, rows).await;
            start.elapsed()
        });
        let our_cpu_run = cpu_time(true).saturating_sub(cpu_before);
        // Every run, to show the spread the best-of table hides.
        eprintln!(
            "run {run}: scanner {seconds:.2} s ({cpu:.2} CPU s), scanner + key {keyed_seconds:.2} s \
             ({keyed_cpu_run:.2} CPU s), source alone {:.2} s ({:.2} CPU s), ours {:.2} s ({:.2} CPU s)",
            source_elapsed.as_secs_f64(),
            source_cpu_run.as_secs_f64(),
            elapsed.as_secs_f64(),
            our_cpu_run.as_secs_f64()
        );
        if run > 0 {
            scanner_times.push(Duration::from_secs_f64(seconds));
            keyed_times.push(Duration::from_secs_f64(keyed_seconds));
            our_times.push(elapsed);
            source_times.push(source_elapsed);
            scanner_cpu = scanner_cpu.min(cpu);
            keyed_cpu = keyed_cpu.min(keyed_cpu_run);
            our_cpu = our_cpu.min(our_cpu_run);
            source_cpu = source_cpu.min(source_cpu_run);
        }
    }
    let best = |times: &[Duration]| times.iter().min().copied().unwrap_or_default();
    print_table(
        &format!("Backfill of {rows} mixed-type rows into a DuckDB file (best of {runs})"),
        "rows",
        &[
            Measurement {
                name: "DuckDB postgres scanner (CREATE TABLE AS)".into(),
                count: rows,
                bytes: None,
                elapsed: best(&scanner_times),
                peak_rss_mib: Some(scanner_peak),
            },
            Measurement {
                name: "DuckDB postgres scanner (CREATE TABLE AS, then ADD PRIMARY KEY)".into(),
                count: rows,
                bytes: None,
                elapsed: best(&keyed_times),
                peak_rss_mib: Some(keyed_peak),
            },
            Measurement {
                name: format!(
                    "pg_replicate → DuckDB sink (rows and key, memory_limit {})",
                    memory_limit.as_deref().unwrap_or("DuckDB's default")
                ),
                count: rows,
                bytes: None,
                elapsed: best(&our_times),
                peak_rss_mib: Some(peak_rss_self_mib()),
            },
        ],
    );
    let logged = phases.0.lock().map(|l| l.clone()).unwrap_or_default();
    // The best run's phases: the runs after the warm-up, by total.
    let best_phases = logged
        .iter()
        .skip(1)
        .min_by_key(|p| p.iter().sum::<u64>())
        .copied()
        .unwrap_or_default();
    let seconds = |ms: u64| ms as f64 / 1000.0;
    println!("\n### Where the time goes\n");
    println!("| part | seconds (best run) | CPU seconds of the process (least of the runs) |");
    println!("|---|---:|---:|");
    println!(
        "| DuckDB postgres scanner: CREATE TABLE AS | {:.2} | {:.2} |",
        best(&scanner_times).as_secs_f64(),
        scanner_cpu
    );
    println!(
        "| DuckDB postgres scanner: CREATE TABLE AS, then ADD PRIMARY KEY | {:.2} | {:.2} |",
        best(&keyed_times).as_secs_f64(),
        keyed_cpu
    );
    println!(
        "| the source alone into a discarding sink (read Postgres, decode to Arrow) | {:.2} | {:.2} |",
        best(&source_times).as_secs_f64(),
        source_cpu.as_secs_f64()
    );
    println!(
        "| DuckDB sink: first batch to last row inserted | {:.2} | |",
        seconds(best_phases[0])
    );
    println!(
        "| DuckDB sink: commit of the rows | {:.2} | |",
        seconds(best_phases[1])
    );
    println!(
        "| DuckDB sink: ADD PRIMARY KEY and its commit | {:.2} | |",
        seconds(best_phases[2])
    );
    println!(
        "| whole DuckDB backfill (opening, schema, rows, key, closing) | {:.2} | {:.2} |",
        best(&our_times).as_secs_f64(),
        our_cpu.as_secs_f64()
    );
}
