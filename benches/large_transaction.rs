//! Large-transaction benchmark: one transaction inserting 1,000,000
//! mixed-type rows, streamed into a discarding sink, next to
//! `pg_recvlogical` reading the same slot range into /dev/null, in the same
//! run. The figure that matters is our peak RSS: the transaction is never
//! held whole in memory (the server streams it with protocol 2; our spool
//! keeps at most `BatchConfig::max_spool_memory` in memory and spills the
//! rest to disk).
//!
//! ```text
//! cargo bench -p pg_replicate_benches --bench large_transaction      # 1,000,000 rows
//! BENCH_ROWS=100000 cargo bench -p pg_replicate_benches --bench large_transaction
//! ```

use pg_replicate::postgres::throwaway::ThrowawayRole;
use pg_replicate_benches::*;

fn main() {
    let rows = env_count("BENCH_ROWS", 1_000_000);
    eprintln!("starting PostgreSQL ...");
    let cluster = start_cluster();
    create_change_table(&cluster, &["reference", "ours"], "");
    eprintln!("inserting {rows} rows in one transaction ...");
    cluster
        .psql(
            "bench",
            &format!("INSERT INTO c SELECT {MIXED_TABLE_VALUES} FROM generate_series(1, {rows}) g"),
        )
        .unwrap_or_else(|e| panic!("cannot insert: {e}"));
    let end_lsn = end_position(&cluster);

    let reference = time_command(&mut recvlogical(
        &cluster,
        "127.0.0.1",
        "reference",
        &end_lsn,
    ));
    let config = cluster.connection_config("bench", ThrowawayRole::Superuser.name());
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (elapsed, changes) = runtime.block_on(run_cdc_into_discard(config, "ours", rows));
    assert!(changes >= rows, "received {changes} of {rows} changes");
    print_table(
        &format!("One transaction of {rows} inserted rows, over TCP"),
        "rows",
        &[
            Measurement {
                name: "pg_recvlogical → /dev/null (protocol 1)".into(),
                count: rows,
                bytes: None,
                elapsed: reference.elapsed,
                peak_rss_mib: Some(reference.peak_rss_mib),
            },
            Measurement {
                name: "pg_replicate → Arrow → discarding sink (protocol 2, streamed)".into(),
                count: rows,
                bytes: None,
                elapsed,
                peak_rss_mib: Some(peak_rss_self_mib()),
            },
        ],
    );
}
