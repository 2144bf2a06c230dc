//! Backfill benchmark: copies a mixed-type table into a sink that discards
//! the batches (with one copy connection and with two), next to `psql \copy
//! ... (format binary)` to /dev/null over the same TCP connection kind, and
//! next to two such copies of ctid-range halves run in parallel (what two
//! cores allow), in the same run.
//!
//! ```text
//! cargo bench -p pg_replicate_benches --bench backfill            # 5,000,000 rows
//! BENCH_ROWS=500000 cargo bench -p pg_replicate_benches --bench backfill
//! ```

use std::time::{Duration, Instant};

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
    let half_block = heap_bytes / 8192 / 2;
    let copy_range = |condition: &str| {
        let mut command = client_command(&cluster, "psql", "127.0.0.1");
        command.args([
            "-X",
            "-c",
            &format!(
                "\\copy (SELECT * FROM t WHERE {condition}) to '/dev/null' with (format binary)"
            ),
        ]);
        command
    };
    let mut reference = Vec::new();
    let mut parallel_reference = Vec::new();
    // Peak RSS of one psql, alone and in the parallel pair.
    let (mut psql_peak, mut parallel_peak) = (0f64, 0f64);
    let mut ours = [Vec::new(), Vec::new()];
    // Client CPU (user + system) of each kind of run: psql, 2 psql, ours 1, ours 2.
    let mut client_cpu = [Duration::MAX; 4];
    for run in 0..=RUNS {
        let children_before = cpu_time(false);
        let psql = time_command(client_command(&cluster, "psql", "127.0.0.1").args([
            "-X",
            "-c",
            "\\copy t to '/dev/null' with (format binary)",
        ]));
        let children_between = cpu_time(false);
        let (_, parallel) = run_watched(vec![
            &mut copy_range(&format!("ctid < '({half_block},0)'::tid")),
            &mut copy_range(&format!("ctid >= '({half_block},0)'::tid")),
        ]);
        let children_after = cpu_time(false);
        if run > 0 {
            client_cpu[0] = client_cpu[0].min(children_between - children_before);
            client_cpu[1] = client_cpu[1].min(children_after - children_between);
        }
        for (index, (connections, times)) in [1, 2].into_iter().zip(ours.iter_mut()).enumerate() {
            let cpu_before = cpu_time(true);
            let source =
                PostgresSource::for_tables(config.clone(), vec![TableName::new("public", "t")])
                    .with_copy_connections(connections);
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
                times.push(elapsed);
                client_cpu[2 + index] = client_cpu[2 + index].min(cpu_time(true) - cpu_before);
            }
        }
        if run > 0 {
            reference.push(psql.elapsed);
            parallel_reference.push(parallel.elapsed);
            psql_peak = psql_peak.max(psql.peak_rss_mib);
            parallel_peak = parallel_peak.max(parallel.peak_rss_mib);
        }
    }
    let best = |times: &[Duration]| times.iter().min().copied().unwrap_or_default();
    print_table(
        &format!("Backfill of {rows} mixed-type rows over TCP (best of {RUNS})"),
        "rows",
        &[
            Measurement {
                name: "psql \\copy (format binary) to /dev/null".into(),
                count: rows,
                bytes: Some(heap_bytes),
                elapsed: best(&reference),
                peak_rss_mib: Some(psql_peak),
            },
            Measurement {
                name: "2 × psql \\copy of ctid-range halves, in parallel".into(),
                count: rows,
                bytes: Some(heap_bytes),
                elapsed: best(&parallel_reference),
                peak_rss_mib: Some(parallel_peak),
            },
            Measurement {
                name: "pg_replicate → discarding sink, 1 copy connection".into(),
                count: rows,
                bytes: Some(heap_bytes),
                elapsed: best(&ours[0]),
                peak_rss_mib: None,
            },
            Measurement {
                name: "pg_replicate → discarding sink, 2 copy connections".into(),
                count: rows,
                bytes: Some(heap_bytes),
                elapsed: best(&ours[1]),
                peak_rss_mib: Some(peak_rss_self_mib()),
            },
        ],
    );
    println!(
        "\npg_replicate with 2 copy connections vs the 2 parallel ctid-range copies: {:.2} \
         (their time / ours)",
        best(&parallel_reference).as_secs_f64() / best(&ours[1]).as_secs_f64()
    );
    println!(
        "\nClient CPU (user + system, least of {RUNS} runs): psql {:.2} s, 2 × psql {:.2} s, \
         pg_replicate with 1 connection {:.2} s, with 2 connections {:.2} s (the server's \
         backends are not included).",
        client_cpu[0].as_secs_f64(),
        client_cpu[1].as_secs_f64(),
        client_cpu[2].as_secs_f64(),
        client_cpu[3].as_secs_f64()
    );
    println!(
        "\nMB/s is table heap bytes per second; peak RSS of psql is one psql process's own peak; \
         peak RSS of pg_replicate is of the whole benchmark process (both runs)."
    );
}
