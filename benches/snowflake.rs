//! Snowflake benchmarks against the `fakesnow` emulator (started on
//! 127.0.0.1 by the benchmark, installed by `scripts/emulators/snowflake`):
//!
//! 1. backfill of 1,000,000 mixed-type rows into a Snowflake table, next to
//!    the Python Snowflake connector loading the same rows, exported to a
//!    CSV file, into the same emulator server with PUT + COPY INTO (its bulk
//!    path), in the same run;
//! 2. CDC apply of 500,000 change events (inserts, updates, deletes in
//!    1,000-row transactions) into the current-state table, next to
//!    `pg_recvlogical` receiving the same slot range into /dev/null.
//!
//! ```text
//! cargo bench -p pg_replicate_benches --bench snowflake
//! BENCH_ROWS=200000 BENCH_EVENTS=100000 cargo bench -p pg_replicate_benches --bench snowflake
//! ```

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use pg_replicate::postgres::throwaway::ThrowawayRole;
use pg_replicate::sinks::snowflake::{
    LocalSnowflake, SnowflakeClient, SnowflakeConfig, SnowflakeCredentials, SnowflakeSink,
    SnowflakeSinkConfig,
};
use pg_replicate_benches::*;
use tokio_util::sync::CancellationToken;

const TRANSACTION_ROWS: u64 = 1000;

/// The emulator's environment, installed on first use.
fn venv() -> PathBuf {
    let script = Path::new(&manifest_dir()).join("../scripts/emulators/snowflake");
    let output = Command::new("bash")
        .arg(&script)
        .stderr(Stdio::inherit())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    assert!(output.status.success(), "{} failed", script.display());
    PathBuf::from(String::from_utf8_lossy(&output.stdout).trim())
}

fn connection(emulator: &LocalSnowflake, database: &str) -> SnowflakeConfig {
    SnowflakeConfig::new(
        "bench",
        "bench",
        SnowflakeCredentials::Password("unused by the emulator".into()),
    )
    .with_base_url(emulator.url())
    .with_database(database)
    .with_schema("PUBLIC")
}

async fn count(emulator: &LocalSnowflake, database: &str, from: &str) -> u64 {
    let mut client = SnowflakeClient::connect(connection(emulator, database))
        .await
        .unwrap_or_else(|e| panic!("log in: {e}"));
    let answer = client
        .query(&format!("SELECT COUNT(*) FROM {from}"), &[])
        .await
        .unwrap_or_else(|e| panic!("count {from}: {e}"));
    answer
        .text_rows()
        .ok()
        .and_then(|rows| rows.first().and_then(|r| r[0].clone()))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count of {from}"))
}

fn main() {
    let rows = env_count("BENCH_ROWS", 1_000_000);
    let events = env_count("BENCH_EVENTS", 500_000);
    eprintln!("starting PostgreSQL, the emulator, and generating {rows} rows ...");
    let venv = venv();
    let emulator =
        LocalSnowflake::start(&venv).unwrap_or_else(|e| panic!("cannot start fakesnow: {e}"));
    let cluster = start_cluster();
    create_mixed_table(&cluster, rows);
    let inserts = events / 3 / TRANSACTION_ROWS * TRANSACTION_ROWS;
    let (updates, deletes) = (inserts, inserts);
    let total = inserts + updates + deletes;
    create_change_table(&cluster, &["ref", "ours"], "");
    let work = cluster
        .data_dir()
        .parent()
        .unwrap_or(cluster.data_dir())
        .to_path_buf();
    let config = cluster.connection_config("bench", ThrowawayRole::Superuser.name());
    let runtime = tokio::runtime::Runtime::new().unwrap();

    let elapsed = runtime.block_on(async {
        let started = Instant::now();
        let sink =
            SnowflakeSink::connect(SnowflakeSinkConfig::new(connection(&emulator, "BACKFILL")))
                .await
                .unwrap_or_else(|e| panic!("cannot connect the sink: {e}"));
        copy_table_t(&config, sink, rows).await;
        let elapsed = started.elapsed();
        assert_eq!(count(&emulator, "BACKFILL", "T").await, rows);
        elapsed
    });
    let ours = Measurement {
        name: "pg_replicate → fakesnow (CSV files, PUT, COPY INTO, INSERT … SELECT)".into(),
        count: rows,
        bytes: None,
        elapsed,
        peak_rss_mib: Some(peak_rss_self_mib()),
    };

    // The reference: the same rows from a CSV file, loaded by the Python
    // connector.
    let csv_path = work.join("t.csv");
    let export = time_command(
        client_command(&cluster, "psql", "127.0.0.1")
            .args(["-X", "-q", "-c"])
            .arg(format!(
                "\\copy (SELECT id, i, f, n, s, to_char(ts AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US'), b, j, u \
                 FROM t) TO '{}' CSV",
                csv_path.display()
            )),
    );
    let csv_bytes = std::fs::metadata(&csv_path).map_or(0, |m| m.len());
    let script = Path::new(&manifest_dir()).join("reference/snowflake_load.py");
    let (outputs, reference) = run_watched(vec![Command::new(venv.join("bin/python"))
        .arg(&script)
        .arg(emulator.url())
        .arg("REFERENCE")
        .arg(&csv_path)]);
    let output = &outputs[0];
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    let mut fields = stdout.split_whitespace();
    let seconds: f64 = fields
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            panic!(
                "the reference printed {stdout:?}: {}",
                String::from_utf8_lossy(&output.stderr)
            )
        });
    let loaded: u64 = fields
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or_default();
    assert_eq!(loaded, rows, "the reference loaded {loaded} rows");
    let _ = std::fs::remove_file(&csv_path);
    print_table(
        &format!("Backfill of {rows} mixed-type rows into the fakesnow emulator"),
        "rows",
        &[
            Measurement {
                name: "Python connector: PUT + COPY INTO of the exported file (reference)".into(),
                count: rows,
                bytes: Some(csv_bytes),
                elapsed: Duration::from_secs_f64(seconds),
                peak_rss_mib: Some(reference.peak_rss_mib),
            },
            ours,
            Measurement {
                name: "psql \\copy t TO file CSV (making the reference's file)".into(),
                count: rows,
                bytes: Some(csv_bytes),
                elapsed: export.elapsed,
                peak_rss_mib: Some(export.peak_rss_mib),
            },
        ],
    );

    eprintln!("generating {total} change events ...");
    let end_lsn = generate_changes(&cluster, inserts, updates, deletes, TRANSACTION_ROWS);
    let reference = time_command(&mut recvlogical(&cluster, "127.0.0.1", "ref", &end_lsn));
    let expected: u64 = cluster
        .psql("bench", "SELECT count(*) FROM c WHERE id <> -1")
        .unwrap_or_else(|e| panic!("count c: {e}"))
        .trim()
        .parse()
        .unwrap_or_default();
    let (elapsed, applied, stored) = runtime.block_on(async {
        let sink = SnowflakeSink::connect(
            SnowflakeSinkConfig::new(connection(&emulator, "CDC")).with_identity("bench_pub/ours"),
        )
        .await
        .unwrap_or_else(|e| panic!("cannot connect the sink: {e}"));
        let cancel = CancellationToken::new();
        let mut sink = CountingSink::new(sink);
        sink.stop_after = Some((total, cancel.clone()));
        let (elapsed, sink) = time_cdc(config.clone(), "ours", sink, cancel).await;
        let stored = count(&emulator, "CDC", "C WHERE ID <> -1").await;
        (elapsed, sink.changes, stored)
    });
    assert!(applied >= total, "applied {applied} of {total}");
    assert_eq!(
        stored, expected,
        "the Snowflake table differs from Postgres in rows"
    );
    print_table(
        &format!("CDC apply of {total} change events into the emulator (1,000-row transactions)"),
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
                name: "pg_replicate → fakesnow (landed, merged, state stored)".into(),
                count: total,
                bytes: None,
                elapsed,
                peak_rss_mib: Some(peak_rss_self_mib()),
            },
        ],
    );
}

/// The package's directory: cargo's value at run time (the build directory
/// may be shared by checkouts in other places), else the one built in.
fn manifest_dir() -> String {
    std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_owned())
}
