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
//! ```
//!
//! The Python environment is created on first use in
//! `~/.cache/pg_replicate/bench-venv` (pip needs the package registry once).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use pg_replicate::pipeline::{DataPipeline, PipelineAction};
use pg_replicate::sinks::duckdb::{
    DuckDbMode, DuckDbSink, DuckDbSinkConfig, DEFAULT_MEMORY_LIMIT, DEFAULT_STORAGE_VERSION,
};
use pg_replicate::sources::postgres::PostgresSource;
use pg_replicate::types::TableName;
use pg_replicate_benches::*;

const RUNS: usize = 2;

fn remove_db(path: &Path) {
    let _ = std::fs::remove_file(path);
    let _ = std::fs::remove_file(path.with_extension("duckdb.wal"));
}

fn main() {
    let rows = env_count("BENCH_ROWS", 5_000_000);
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
    let (mut scanner_peak, mut keyed_peak) = (0f64, 0f64);
    // The scanner's run: seconds and peak RSS, with or without the key.
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
        (seconds, scanner.peak_rss_mib)
    };
    for run in 0..=RUNS {
        let (seconds, peak) = scan(false);
        scanner_peak = scanner_peak.max(peak);
        let (keyed_seconds, peak) = scan(true);
        keyed_peak = keyed_peak.max(peak);

        let our_file = work.join("ours.duckdb");
        remove_db(&our_file);
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
            let source =
                PostgresSource::for_tables(config.clone(), vec![TableName::new("public", "t")]);
            let mut pipeline = DataPipeline::new(source, sink, PipelineAction::TableCopiesOnly);
            let report = pipeline
                .start()
                .await
                .unwrap_or_else(|e| panic!("backfill failed: {e}"));
            assert_eq!(report.rows_copied, rows);
            drop(pipeline);
            start.elapsed()
        });
        if run > 0 {
            scanner_times.push(Duration::from_secs_f64(seconds));
            keyed_times.push(Duration::from_secs_f64(keyed_seconds));
            our_times.push(elapsed);
        }
    }
    let best = |times: &[Duration]| times.iter().min().copied().unwrap_or_default();
    print_table(
        &format!("Backfill of {rows} mixed-type rows into a DuckDB file (best of {RUNS})"),
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
}
