//! CDC benchmark: decodes 2,000,000 change events (1,000,000 inserts,
//! 500,000 updates, 500,000 deletes in 1,000-row transactions) into Arrow
//! change batches and discards them, next to `pg_recvlogical` reading the
//! same slot range into /dev/null, over TCP and over the Unix socket.
//!
//! ```text
//! cargo bench -p pg_replicate_benches --bench cdc                 # 2,000,000 events
//! BENCH_EVENTS=200000 cargo bench -p pg_replicate_benches --bench cdc
//! ```

use pg_replicate::postgres::throwaway::ThrowawayRole;
use pg_replicate_benches::*;

const TRANSACTION_ROWS: u64 = 1000;

fn main() {
    let events = env_count("BENCH_EVENTS", 2_000_000);
    let inserts = events / 2 / TRANSACTION_ROWS * TRANSACTION_ROWS;
    let updates = inserts / 2;
    let deletes = inserts / 2;
    let total = inserts + updates + deletes;
    eprintln!("starting PostgreSQL ...");
    let cluster = start_cluster();
    let slots = ["ref_tcp", "ours_tcp", "ref_unix", "ours_unix"];
    create_change_table(&cluster, &slots, "");

    eprintln!("generating {total} change events ...");
    let end_lsn = generate_changes(&cluster, inserts, updates, deletes, TRANSACTION_ROWS);

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let socket_dir = cluster.socket_dir().to_string_lossy().into_owned();
    let mut results = Vec::new();
    for (transport, host, config) in [
        (
            "TCP",
            "127.0.0.1".to_owned(),
            cluster.connection_config("bench", ThrowawayRole::Superuser.name()),
        ),
        (
            "Unix socket",
            socket_dir.clone(),
            cluster.socket_connection_config("bench", ThrowawayRole::Superuser.name()),
        ),
    ] {
        let suffix = if transport == "TCP" { "tcp" } else { "unix" };
        let reference = time_command(&mut recvlogical(
            &cluster,
            &host,
            &format!("ref_{suffix}"),
            &end_lsn,
        ));
        results.push(Measurement {
            name: format!("pg_recvlogical → /dev/null ({transport})"),
            count: total,
            bytes: None,
            elapsed: reference.elapsed,
            peak_rss_mib: Some(reference.peak_rss_mib),
        });
        let (elapsed, changes) = runtime.block_on(run_cdc_into_discard(
            config,
            &format!("ours_{suffix}"),
            total,
        ));
        assert!(changes >= total, "received {changes} of {total} changes");
        results.push(Measurement {
            name: format!("pg_replicate → Arrow → discarding sink ({transport})"),
            count: total,
            bytes: None,
            elapsed,
            peak_rss_mib: Some(peak_rss_self_mib()),
        });
    }
    print_table(
        &format!("CDC decode of {total} change events"),
        "events",
        &results[..2],
    );
    print_table(
        &format!("CDC decode of {total} change events"),
        "events",
        &results[2..],
    );
}
