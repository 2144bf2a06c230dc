//! Lag recovery after Postgres restarts: a pipeline streams into DuckDB
//! (default `RetryConfig`) while a writer commits single-row transactions
//! every few milliseconds; the server is restarted in immediate mode
//! `BENCH_RESTARTS` times (default 20). For each restart: the server's own
//! restart time (stop, crash recovery, accepting connections again: the
//! reference), and the time from then until DuckDB stored everything the
//! server held when it came back. p50 and p99 of both.
//!
//! ```text
//! cargo bench -p pg_replicate_benches --bench restart_recovery
//! BENCH_RESTARTS=5 cargo bench -p pg_replicate_benches --bench restart_recovery
//! ```

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pg_replicate::pipeline::{DataPipeline, PipelineAction};
use pg_replicate::postgres::client::connect_query_client;
use pg_replicate::postgres::throwaway::{ShutdownMode, ThrowawayRole};
use pg_replicate::postgres::PgConnectionConfig;
use pg_replicate::sinks::duckdb::{DuckDbSink, DuckDbSinkConfig};
use pg_replicate::sources::postgres::PostgresSource;
use pg_replicate::types::Lsn;
use pg_replicate_benches::*;
use tokio_util::sync::CancellationToken;

/// Commits one row at a time until `stop`, reconnecting while the server
/// is away.
async fn write(config: PgConnectionConfig, stop: Arc<AtomicBool>) {
    let mut id = 0i64;
    while !stop.load(Ordering::Relaxed) {
        let Ok(client) = connect_query_client(&config).await else {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        while !stop.load(Ordering::Relaxed) {
            id += 1;
            let sql =
                format!("INSERT INTO r VALUES ({id}, 'row {id}') ON CONFLICT (id) DO NOTHING");
            if client.batch_execute(&sql).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// The server's WAL insert position, asked on a new connection.
async fn insert_position(config: &PgConnectionConfig) -> Lsn {
    let started = Instant::now();
    loop {
        if let Ok(client) = connect_query_client(config).await {
            if let Ok(row) = client
                .query_one("SELECT pg_current_wal_insert_lsn()::text", &[])
                .await
            {
                return row.get::<_, String>(0).parse().unwrap();
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the server did not answer within 60 s of its restart"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn main() {
    let restarts = env_count("BENCH_RESTARTS", 20) as usize;
    let cluster = Arc::new(start_cluster());
    let config = cluster.connection_config("bench", ThrowawayRole::Superuser.name());
    cluster
        .psql(
            "bench",
            "CREATE TABLE r (id bigint PRIMARY KEY, v text); CREATE PUBLICATION r_pub FOR TABLE r;",
        )
        .unwrap_or_else(|e| panic!("cannot create the table: {e}"));
    let work = cluster
        .data_dir()
        .parent()
        .unwrap_or(cluster.data_dir())
        .to_path_buf();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (mut restart_ms, mut recovery_ms) = runtime.block_on(async {
        let sink = DuckDbSink::open(DuckDbSinkConfig::new(work.join("restart.duckdb")))
            .unwrap_or_else(|e| panic!("cannot open DuckDB: {e}"));
        let reader = sink.reader().unwrap();
        let stored = move || -> Option<Lsn> {
            reader
                .connection()
                .query_row("SELECT last_lsn FROM _pg_replicate.progress", [], |r| {
                    r.get::<_, Option<u64>>(0)
                })
                .ok()
                .flatten()
                .map(Lsn)
        };
        let cancel = CancellationToken::new();
        let mut pipeline = DataPipeline::new(
            PostgresSource::new(config.clone(), "r_pub", "r_slot"),
            sink,
            PipelineAction::Both,
        )
        .with_cancellation(cancel.clone());
        let running = tokio::spawn(async move { pipeline.start().await });
        let stop = Arc::new(AtomicBool::new(false));
        let writer = tokio::spawn(write(config.clone(), stop.clone()));
        let (mut restart_ms, mut recovery_ms) = (Vec::new(), Vec::new());
        for i in 0..restarts {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let restarting = cluster.clone();
            let started = Instant::now();
            tokio::task::spawn_blocking(move || restarting.restart(ShutdownMode::Immediate))
                .await
                .unwrap()
                .unwrap_or_else(|e| panic!("restart {i}: {e}"));
            restart_ms.push(started.elapsed().as_millis() as i64);
            let back = Instant::now();
            let target = insert_position(&config).await;
            loop {
                if stored().is_some_and(|s| s >= target) {
                    break;
                }
                assert!(
                    !running.is_finished(),
                    "the pipeline stopped at restart {i}"
                );
                assert!(
                    back.elapsed() < Duration::from_secs(300),
                    "the pipeline did not catch up within 300 s of restart {i}"
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            recovery_ms.push(back.elapsed().as_millis() as i64);
            eprintln!(
                "restart {}: server {} ms, caught up {} ms later",
                i + 1,
                restart_ms[i],
                recovery_ms[i]
            );
        }
        stop.store(true, Ordering::Relaxed);
        writer.await.unwrap();
        cancel.cancel();
        running
            .await
            .unwrap()
            .unwrap_or_else(|e| panic!("the pipeline failed: {e}"));
        (restart_ms, recovery_ms)
    });
    println!("\n### Lag recovery after {restarts} immediate-mode Postgres restarts\n");
    println!("| what | p50 ms | p99 ms | max ms |");
    println!("|---|---:|---:|---:|");
    for (name, values) in [
        (
            "server restart: stop, crash recovery, accepting (reference)",
            &mut restart_ms,
        ),
        (
            "pipeline caught up, from the server accepting again",
            &mut recovery_ms,
        ),
    ] {
        let (p50, p99) = (percentile(values, 50.0), percentile(values, 99.0));
        let max = values.last().copied().unwrap_or_default();
        println!("| {name} | {p50} | {p99} | {max} |");
    }
}
