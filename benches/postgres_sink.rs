//! Postgres sink benchmarks, each next to a reference measured in the same
//! run on the same throwaway cluster:
//!
//! 1. backfill of the mixed-type table (2,000,000 rows) into another
//!    database, next to `psql \copy … TO STDOUT (FORMAT binary)` piped into
//!    `psql \copy … FROM STDIN (FORMAT binary)` (the same bytes with no
//!    decoding: the floor of a database-to-database copy);
//! 2. apply of 2,000,000 change events (1,000,000 inserts, 500,000 updates,
//!    500,000 deletes in 1,000-row transactions) into another database,
//!    next to Postgres' own logical replication (a subscription applying
//!    the same slot range) and `pg_recvlogical` (receive only).
//!
//! ```text
//! cargo bench -p pg_replicate_benches --bench postgres_sink
//! BENCH_ROWS=500000 BENCH_EVENTS=200000 cargo bench -p pg_replicate_benches --bench postgres_sink
//! ```

use std::process::Command;
use std::time::{Duration, Instant};

use pg_replicate::pipeline::{DataPipeline, PipelineAction};
use pg_replicate::postgres::throwaway::{ThrowawayCluster, ThrowawayRole};
use pg_replicate::sinks::postgres::{PostgresSink, PostgresSinkConfig};
use pg_replicate::sources::postgres::PostgresSource;
use pg_replicate_benches::*;
use tokio_util::sync::CancellationToken;

const RUNS: usize = 2;
const TRANSACTION_ROWS: u64 = 1000;

fn psql(cluster: &ThrowawayCluster, db: &str, sql: &str) -> String {
    cluster
        .psql(db, sql)
        .unwrap_or_else(|e| panic!("{sql} failed in {db}: {e}"))
}

/// `psql` copying table `t` of `bench` into the same table of `replica`,
/// in binary, through a pipe.
fn piped_copy(cluster: &ThrowawayCluster) -> Command {
    let mut command = Command::new("sh");
    command
        .arg("-c")
        .arg(
            r#""$0" -X -h 127.0.0.1 -p "$1" -U "$2" -d bench -c '\copy t TO STDOUT (FORMAT binary)' \
               | "$0" -X -h 127.0.0.1 -p "$1" -U "$2" -d replica -c '\copy t FROM STDIN (FORMAT binary)'"#,
        )
        .arg(cluster.bin_dir().join("psql"))
        .arg(cluster.port().to_string())
        .arg(ThrowawayRole::Superuser.name())
        .env("PGPASSWORD", ThrowawayRole::Superuser.password());
    command
}

fn main() {
    let rows = env_count("BENCH_ROWS", 2_000_000);
    let events = env_count("BENCH_EVENTS", 2_000_000);
    let cluster = start_cluster();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let config = cluster.connection_config("bench", ThrowawayRole::Superuser.name());
    let mut replica = config.clone();
    replica.dbname = "replica".into();

    // 1. Backfill.
    eprintln!("generating {rows} rows ...");
    create_mixed_table(&cluster, rows);
    psql(&cluster, "bench", "CREATE PUBLICATION t_pub FOR TABLE t");
    psql(&cluster, "postgres", "CREATE DATABASE replica");
    let (mut reference_best, mut ours_best) = (Duration::MAX, Duration::MAX);
    for run in 0..=RUNS {
        psql(
            &cluster,
            "replica",
            &format!(
                "DROP SCHEMA IF EXISTS _pg_replicate CASCADE; DROP TABLE IF EXISTS t; \
                 CREATE TABLE t ({MIXED_TABLE_COLUMNS}); CHECKPOINT;"
            ),
        );
        let reference = time_command(&mut piped_copy(&cluster));
        let copied = psql(&cluster, "replica", "SELECT count(*) FROM t");
        assert_eq!(
            copied.trim(),
            rows.to_string(),
            "the reference copied every row"
        );

        psql(
            &cluster,
            "replica",
            "DROP SCHEMA IF EXISTS _pg_replicate CASCADE; DROP TABLE t; CHECKPOINT;",
        );
        let elapsed = runtime.block_on(async {
            let start = Instant::now();
            let sink = PostgresSink::connect(PostgresSinkConfig::new(replica.clone()))
                .await
                .unwrap_or_else(|e| panic!("cannot connect the sink: {e}"));
            let source = PostgresSource::new(config.clone(), "t_pub", format!("copy_{run}"));
            DataPipeline::new(source, sink, PipelineAction::TableCopiesOnly)
                .start()
                .await
                .unwrap_or_else(|e| panic!("backfill failed: {e}"));
            start.elapsed()
        });
        let copied = psql(&cluster, "replica", "SELECT count(*) FROM t");
        assert_eq!(copied.trim(), rows.to_string(), "the sink copied every row");
        // The first run warms the caches; it is not counted.
        if run > 0 {
            reference_best = reference_best.min(reference.elapsed);
            ours_best = ours_best.min(elapsed);
        }
    }
    print_table(
        &format!("Backfill of {rows} mixed rows into another database (best of {RUNS})"),
        "rows",
        &[
            Measurement {
                name: "psql COPY binary piped into psql COPY (no decoding)".into(),
                count: rows,
                bytes: None,
                elapsed: reference_best,
                peak_rss_mib: None,
            },
            Measurement {
                name: "pg_replicate → Postgres sink (committed)".into(),
                count: rows,
                bytes: None,
                elapsed: ours_best,
                peak_rss_mib: Some(peak_rss_self_mib()),
            },
        ],
    );
    psql(
        &cluster,
        "replica",
        "DROP SCHEMA IF EXISTS _pg_replicate CASCADE; DROP TABLE t;",
    );

    // 2. Change apply.
    let inserts = events / 2 / TRANSACTION_ROWS * TRANSACTION_ROWS;
    let (updates, deletes) = (inserts / 2, inserts / 2);
    let total = inserts + updates + deletes;
    create_change_table(&cluster, &["recv", "sub", "ours"], "");
    psql(&cluster, "postgres", "CREATE DATABASE subscriber");
    psql(
        &cluster,
        "subscriber",
        &format!("CREATE TABLE c ({MIXED_TABLE_COLUMNS})"),
    );
    eprintln!("generating {total} change events ...");
    let end_lsn = generate_changes(&cluster, inserts, updates, deletes, TRANSACTION_ROWS);

    let receive = time_command(&mut recvlogical(&cluster, "127.0.0.1", "recv", &end_lsn));

    // Postgres' own apply: a subscription on the prepared slot, done when
    // the end marker (inserted after the changes) has arrived.
    let start = Instant::now();
    psql(
        &cluster,
        "subscriber",
        &format!(
            "CREATE SUBSCRIPTION sub CONNECTION 'host=127.0.0.1 port={} user={} password={} dbname=bench' \
             PUBLICATION bench_pub WITH (create_slot = false, slot_name = 'sub', copy_data = false)",
            cluster.port(),
            ThrowawayRole::Superuser.name(),
            ThrowawayRole::Superuser.password()
        ),
    );
    loop {
        let done = psql(
            &cluster,
            "subscriber",
            "SELECT count(*) FROM c WHERE id = -1",
        );
        if done.trim() == "1" {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(1800),
            "the subscription did not apply the changes within 30 minutes"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let subscription = start.elapsed();
    psql(&cluster, "subscriber", "ALTER SUBSCRIPTION sub DISABLE");

    let (apply_time, applied) = runtime.block_on(async {
        let sink = PostgresSink::connect(PostgresSinkConfig::new(replica.clone()))
            .await
            .unwrap_or_else(|e| panic!("cannot connect the sink: {e}"));
        let cancel = CancellationToken::new();
        let mut sink = CountingSink::new(sink);
        sink.stop_after = Some((total, cancel.clone()));
        let (elapsed, sink) = time_cdc(config.clone(), "ours", sink, cancel).await;
        (elapsed, sink.changes)
    });
    assert!(applied >= total, "applied {applied} of {total}");
    let same = psql(&cluster, "replica", "SELECT count(*) FROM c WHERE id <> -1");
    let expected = psql(
        &cluster,
        "subscriber",
        "SELECT count(*) FROM c WHERE id <> -1",
    );
    assert_eq!(
        same.trim(),
        expected.trim(),
        "the sink and the subscription hold the same rows"
    );
    print_table(
        &format!(
            "CDC apply of {total} change events into another database (1,000-row transactions)"
        ),
        "events",
        &[
            Measurement {
                name: "pg_recvlogical → /dev/null (receive only)".into(),
                count: total,
                bytes: None,
                elapsed: receive.elapsed,
                peak_rss_mib: Some(receive.peak_rss_mib),
            },
            Measurement {
                name: "Postgres subscription (native apply)".into(),
                count: total,
                bytes: None,
                elapsed: subscription,
                peak_rss_mib: None,
            },
            Measurement {
                name: "pg_replicate → Postgres sink (applied, committed)".into(),
                count: total,
                bytes: None,
                elapsed: apply_time,
                peak_rss_mib: Some(peak_rss_self_mib()),
            },
        ],
    );
}
