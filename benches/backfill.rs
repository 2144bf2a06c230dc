//! Backfill benchmark: copies a mixed-type table into a sink that discards
//! the batches, next to `psql \copy ... (format binary)` to /dev/null over
//! the same TCP connection kind, in the same run.
//!
//! ```text
//! cargo bench -p pg_replicate_benches --bench backfill            # 5,000,000 rows
//! BENCH_ROWS=500000 cargo bench -p pg_replicate_benches --bench backfill
//! ```

use std::time::Instant;

use pg_replicate::pipeline::{DataPipeline, PipelineAction};
use pg_replicate::postgres::throwaway::ThrowawayRole;
use pg_replicate::sources::postgres::PostgresSource;
use pg_replicate::types::TableName;
use pg_replicate_benches::*;

const RUNS: usize = 2;

fn main() {
    let rows = env_count("BENCH_ROWS", 5_000_000);
    eprintln!("starting PostgreSQL and generating {rows} rows ...");
    let cluster = start_cluster();
    let started = Instant::now();
    create_mixed_table(&cluster, rows);
    let heap_bytes: u64 = cluster
        .psql("bench", "SELECT pg_relation_size('t')")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    eprintln!("generated in {:.0} s", started.elapsed().as_secs_f64());

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let config = cluster.connection_config("bench", ThrowawayRole::Superuser.name());
    let mut reference = Vec::new();
    let mut ours = Vec::new();
    for run in 0..=RUNS {
        let psql = time_command(client_command(&cluster, "psql", "127.0.0.1").args([
            "-X",
            "-c",
            "\\copy t to '/dev/null' with (format binary)",
        ]));
        let source =
            PostgresSource::for_tables(config.clone(), vec![TableName::new("public", "t")]);
        let (elapsed, copied) = runtime.block_on(async {
            let mut pipeline = DataPipeline::new(
                source,
                DiscardSink::default(),
                PipelineAction::TableCopiesOnly,
            );
            let start = Instant::now();
            pipeline
                .start()
                .await
                .unwrap_or_else(|e| panic!("backfill failed: {e}"));
            (start.elapsed(), pipeline.sink().rows)
        });
        assert_eq!(copied, rows, "every row copied");
        // The first round warms the caches and is not counted.
        if run > 0 {
            reference.push(psql);
            ours.push(elapsed);
        }
    }
    let best = |times: &[std::time::Duration]| times.iter().min().copied().unwrap_or_default();
    print_table(
        &format!("Backfill of {rows} mixed-type rows over TCP (best of {RUNS})"),
        "rows",
        &[
            Measurement {
                name: "psql \\copy (format binary) to /dev/null".into(),
                count: rows,
                bytes: Some(heap_bytes),
                elapsed: best(&reference),
                peak_rss_mib: Some(peak_rss_children_mib()),
            },
            Measurement {
                name: "pg_replicate → discarding sink".into(),
                count: rows,
                bytes: Some(heap_bytes),
                elapsed: best(&ours),
                peak_rss_mib: Some(peak_rss_self_mib()),
            },
        ],
    );
    println!(
        "\nMB/s is table heap bytes per second; peak RSS of psql is the largest client child."
    );
}
