//! DuckDB CDC benchmarks:
//!
//! 1. apply of 2,000,000 change events (1,000,000 inserts, 500,000 updates,
//!    500,000 deletes in 1,000-row transactions) into a DuckDB file:
//!    changes/s and peak RSS, next to `pg_recvlogical` reading the same slot
//!    range into /dev/null (the cost of just receiving the stream);
//! 2. end-to-end lag (commit in Postgres → committed in DuckDB) under a
//!    steady load of ~1,000 single-row transactions per second from pgbench.
//!
//! ```text
//! cargo bench -p pg_replicate_benches --bench duckdb_cdc
//! BENCH_EVENTS=200000 BENCH_LAG_SECONDS=10 cargo bench -p pg_replicate_benches --bench duckdb_cdc
//! BENCH_DUCKDB_MEMORY_LIMIT=256MB cargo bench -p pg_replicate_benches --bench duckdb_cdc
//! ```

use std::time::Duration;

use pg_replicate::pipeline::{DataPipeline, PipelineAction};
use pg_replicate::postgres::throwaway::ThrowawayRole;
use pg_replicate::sinks::duckdb::{
    DuckDbMode, DuckDbSink, DuckDbSinkConfig, DEFAULT_STORAGE_VERSION,
};
use pg_replicate::sources::postgres::PostgresSource;
use pg_replicate_benches::*;
use tokio_util::sync::CancellationToken;

const TRANSACTION_ROWS: u64 = 1000;

fn main() {
    let events = env_count("BENCH_EVENTS", 2_000_000);
    let lag_seconds = env_count("BENCH_LAG_SECONDS", 30);
    let inserts = events / 2 / TRANSACTION_ROWS * TRANSACTION_ROWS;
    let (updates, deletes) = (inserts / 2, inserts / 2);
    let total = inserts + updates + deletes;
    let cluster = start_cluster();
    create_change_table(
        &cluster,
        &["ref", "ours"],
        "CREATE TABLE lag (id bigserial PRIMARY KEY, at timestamptz DEFAULT now(), note text);
         CREATE PUBLICATION lag_pub FOR TABLE lag;",
    );
    eprintln!("generating {total} change events ...");
    let end_lsn = generate_changes(&cluster, inserts, updates, deletes, TRANSACTION_ROWS);

    let reference = time_command(&mut recvlogical(&cluster, "127.0.0.1", "ref", &end_lsn));

    let work = cluster
        .data_dir()
        .parent()
        .unwrap_or(cluster.data_dir())
        .to_path_buf();
    let config = cluster.connection_config("bench", ThrowawayRole::Superuser.name());
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (apply_time, applied) = runtime.block_on(async {
        let file = work.join("cdc.duckdb");
        let sink = DuckDbSink::open(DuckDbSinkConfig {
            path: file,
            mode: DuckDbMode::CurrentState,
            identity: None,
            memory_limit: std::env::var("BENCH_DUCKDB_MEMORY_LIMIT").ok(),
            storage_version: DEFAULT_STORAGE_VERSION.to_owned(),
        })
        .unwrap_or_else(|e| panic!("cannot open DuckDB: {e}"));
        let cancel = CancellationToken::new();
        let mut sink = CountingSink::new(sink);
        sink.stop_after = Some((total, cancel.clone()));
        let (elapsed, sink) = time_cdc(config.clone(), "ours", sink, cancel).await;
        (elapsed, sink.changes)
    });
    assert!(applied >= total, "applied {applied} of {total}");
    print_table(
        &format!("CDC apply of {total} change events into DuckDB (1,000-row transactions)"),
        "events",
        &[
            Measurement {
                name: "pg_recvlogical → /dev/null (receive only)".into(),
                count: total,
                bytes: None,
                elapsed: reference.elapsed,
                peak_rss_mib: Some(reference.peak_rss_mib),
            },
            Measurement {
                name: "pg_replicate → DuckDB (applied, committed)".into(),
                count: total,
                bytes: None,
                elapsed: apply_time,
                peak_rss_mib: Some(peak_rss_self_mib()),
            },
        ],
    );

    // Lag under a steady load of single-row transactions.
    eprintln!("measuring lag for {lag_seconds} s at ~1,000 transactions/s ...");
    let script = work.join("lag.sql");
    std::fs::write(&script, "INSERT INTO lag (note) VALUES ('x');\n").unwrap();
    let (mut lags, commits) = runtime.block_on(async {
        let file = work.join("lag.duckdb");
        let sink = DuckDbSink::open(DuckDbSinkConfig {
            path: file,
            mode: DuckDbMode::CurrentState,
            identity: None,
            memory_limit: None,
            storage_version: DEFAULT_STORAGE_VERSION.to_owned(),
        })
        .unwrap_or_else(|e| panic!("cannot open DuckDB: {e}"));
        let cancel = CancellationToken::new();
        let source = PostgresSource::new(config.clone(), "lag_pub", "lag_slot");
        let mut pipeline = DataPipeline::new(source, CountingSink::new(sink), PipelineAction::Both)
            .with_cancellation(cancel.clone());
        let task = tokio::spawn(async move {
            pipeline
                .start()
                .await
                .unwrap_or_else(|e| panic!("CDC failed: {e}"));
            pipeline
        });
        tokio::time::sleep(Duration::from_secs(2)).await;
        // pgbench takes the database as its last argument (its -d is --debug).
        let mut pgbench = std::process::Command::new(cluster.bin_dir().join("pgbench"));
        pgbench
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &cluster.port().to_string(),
                "-U",
                ThrowawayRole::Superuser.name(),
            ])
            .env("PGPASSWORD", ThrowawayRole::Superuser.password())
            .args(["-n", "-c", "4", "-j", "2", "-R", "1000", "-T"])
            .arg(lag_seconds.to_string())
            .arg("-f")
            .arg(&script)
            .arg("bench");
        tokio::task::spawn_blocking(move || time_command(&mut pgbench))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_secs(2)).await;
        cancel.cancel();
        let pipeline = task.await.unwrap();
        let sink = pipeline.sink();
        (sink.lags_micros.clone(), sink.changes)
    });
    let p50 = percentile(&mut lags, 50.0) as f64 / 1000.0;
    let p99 = percentile(&mut lags, 99.0) as f64 / 1000.0;
    let max = lags.last().copied().unwrap_or_default() as f64 / 1000.0;
    println!("\n### End-to-end lag, commit in Postgres → committed in DuckDB\n");
    println!("| transactions | rate | p50 ms | p99 ms | max ms |");
    println!("|---:|---:|---:|---:|---:|");
    println!(
        "| {commits} | {:.0}/s | {p50:.1} | {p99:.1} | {max:.1} |",
        commits as f64 / lag_seconds as f64
    );
}
