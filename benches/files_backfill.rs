//! Files backfill benchmark: copies the mixed-type table into Parquet and
//! CSV files with pg_replicate's files sink, next to DuckDB's postgres
//! scanner writing the same table to one file of each format
//! (`COPY (SELECT * FROM pg.public.t) TO …`, duckdb 1.5.5 from PyPI) in the
//! same run.
//!
//! ```text
//! cargo bench -p pg_replicate_benches --bench files_backfill     # 2,000,000 rows
//! BENCH_ROWS=500000 cargo bench -p pg_replicate_benches --bench files_backfill
//! ```
//!
//! The Python environment is the DuckDB benchmark's
//! (`~/.cache/pg_replicate/bench-venv`, created on first use).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use pg_replicate::sinks::files::{FileFormat, FilesSink, FilesSinkConfig};
use pg_replicate_benches::*;

const RUNS: usize = 2;

/// Bytes of the files under `dir`.
fn size_of(dir: &Path) -> u64 {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        total += if path.is_dir() {
            size_of(&path)
        } else {
            entry.metadata().map_or(0, |m| m.len())
        };
    }
    total
}

fn main() {
    let rows = env_count("BENCH_ROWS", 2_000_000);
    let python = bench_python();
    let ScannerBench {
        cluster: _cluster,
        work,
        scanner_home,
        dsn,
        config,
    } = scanner_bench(rows);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let script = Path::new(&bench_manifest_dir()).join("reference/postgres_to_files.py");

    for format in [FileFormat::Parquet, FileFormat::Csv] {
        let extension = format.extension();
        let mut scanner_times = Vec::new();
        let mut our_times = Vec::new();
        let (mut scanner_peak, mut scanner_bytes, mut our_bytes) = (0f64, 0, 0);
        for run in 0..=RUNS {
            let reference = work.join(format!("scanner.{extension}"));
            let _ = std::fs::remove_file(&reference);
            let (outputs, scanner) = run_watched(vec![&mut Command::new(&python)
                .arg(&script)
                .arg(&dsn)
                .arg(&reference)
                .arg(extension)
                .env("HOME", &scanner_home)]);
            scanner_peak = scanner_peak.max(scanner.peak_rss_mib);
            let stdout = String::from_utf8_lossy(&outputs[0].stdout);
            let mut fields = stdout.split_whitespace();
            let seconds: f64 = fields.next().and_then(|s| s.parse().ok()).expect("seconds");
            let written: u64 = fields.next().and_then(|s| s.parse().ok()).expect("rows");
            assert_eq!(written, rows);
            scanner_bytes = std::fs::metadata(&reference).map_or(0, |m| m.len());

            let root = work.join(format!("ours-{extension}"));
            let _ = std::fs::remove_dir_all(&root);
            let elapsed = runtime.block_on(async {
                let start = Instant::now();
                let sink = FilesSink::open(FilesSinkConfig {
                    format,
                    ..FilesSinkConfig::new(&root)
                })
                .unwrap_or_else(|e| panic!("cannot open the files sink: {e}"));
                copy_table_t(&config, sink, rows).await;
                start.elapsed()
            });
            our_bytes = size_of(&root);
            if run > 0 {
                scanner_times.push(Duration::from_secs_f64(seconds));
                our_times.push(elapsed);
            }
        }
        let best = |times: &[Duration]| times.iter().min().copied().unwrap_or_default();
        print_table(
            &format!(
                "Backfill of {rows} mixed-type rows into {extension} files (best of {RUNS}; \
                 sizes: scanner {:.0} MB, pg_replicate {:.0} MB)",
                scanner_bytes as f64 / 1e6,
                our_bytes as f64 / 1e6
            ),
            "rows",
            &[
                Measurement {
                    name: format!("DuckDB postgres scanner (COPY TO {extension})"),
                    count: rows,
                    bytes: None,
                    elapsed: best(&scanner_times),
                    peak_rss_mib: Some(scanner_peak),
                },
                Measurement {
                    name: format!("pg_replicate → files sink ({extension})"),
                    count: rows,
                    bytes: None,
                    elapsed: best(&our_times),
                    peak_rss_mib: Some(peak_rss_self_mib()),
                },
            ],
        );
    }
}
