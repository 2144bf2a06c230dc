//! Pipelines configured in Postgres tables: a config database and a source
//! database of the throwaway cluster, pipelines into DuckDB and stdout,
//! bad rows that fail only their own pipeline, status changes that pause
//! and start, rows changed and removed.

use std::time::{Duration, Instant};

use pg_replicate::config_db::{migrate, ConfigDbReplicator};
use pg_replicate::postgres::SslMode;
use tokio_util::sync::CancellationToken;

use crate::common::{confirmed_flush, wait_slot_state};
use crate::duckdb_common::{columns, copied_tables, stored_lsn, wait_duck_converged, DuckDir};
use crate::support::TestDb;

/// The `state` and `error` columns of pipeline `name`.
async fn state(config: &TestDb, name: &str) -> (Option<String>, Option<String>) {
    let row = config
        .client()
        .await
        .query_one(
            "SELECT state, error FROM pipelines WHERE name = $1",
            &[&name],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

/// Waits until pipeline `name`'s row shows `wanted`; returns its error.
async fn wait_state(config: &TestDb, name: &str, wanted: &str) -> Option<String> {
    let start = Instant::now();
    loop {
        let (state, error) = state(config, name).await;
        if state.as_deref() == Some(wanted) {
            return error;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "pipeline {name} was not {wanted} within 60 s: state {state:?}, error {error:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn sslmode(mode: SslMode) -> &'static str {
    match mode {
        SslMode::Disable => "disable",
        SslMode::Prefer => "prefer",
        SslMode::Require => "require",
        SslMode::VerifyFull => "verify-full",
    }
}

#[tokio::test]
async fn pipelines_follow_their_rows_and_bad_rows_fail_alone() {
    let config = crate::support::fresh_database("config_db").await;
    let source = crate::support::fresh_database("config_source").await;
    let dir = DuckDir::new(&source);
    let publication = source.unique_name("pub");
    let slots = [
        source.unique_name("slot_duck"),
        source.unique_name("slot_print"),
        source.unique_name("slot_fixed"),
    ];
    source
        .execute(&format!(
            "CREATE TABLE items (id int PRIMARY KEY, v text);
             INSERT INTO items SELECT g, 'copied' FROM generate_series(1, 20) g;
             -- The filtered pipeline needs whole old rows.
             ALTER TABLE items REPLICA IDENTITY FULL;
             CREATE PUBLICATION {publication} FOR TABLE items;"
        ))
        .await;

    // Migrations create the tables, and running them again changes nothing.
    let client = config.client().await;
    migrate(&client, "public").await.unwrap();
    migrate(&client, "public").await.unwrap();
    let versions: i64 = client
        .query_one("SELECT count(*) FROM schema_migrations", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(versions, 2);

    let src = source.config();
    let duck_file = dir.file("config.duckdb");
    let fixed_file = dir.file("fixed.duckdb");
    client
        .execute(
            "INSERT INTO sources (name, host, port, dbname, username, password, sslmode, publication)
             VALUES ('main', $1, $2, $3, $4, $5, $6, $7),
                    ('unreachable', '127.0.0.1', 1, 'x', 'someone', 'sekrit-pw-123', 'disable', 'p')",
            &[
                &src.host,
                &i32::from(src.port),
                &src.dbname,
                &src.username,
                &src.password,
                &sslmode(src.ssl_mode),
                &publication,
            ],
        )
        .await
        .unwrap();
    client
        .execute(
            "INSERT INTO destinations (name, type, config) VALUES
                 ('duck', 'duckdb', $1),
                 ('print', 'stdout', '{}'),
                 ('legacy', 'oracle', '{}'),
                 ('broken', 'duckdb', '{\"path\": ')",
            &[&format!("{{\"path\": \"{}\"}}", duck_file.display())],
        )
        .await
        .unwrap();
    client
        .batch_execute(&format!(
            "INSERT INTO pipelines (name, source_id, destination_id, slot, status)
             SELECT p.name, s.id, d.id, p.slot, 'START'
             FROM (VALUES ('to_duck', 'main', 'duck', '{duck}'),
                          ('to_stdout', 'main', 'print', '{print}'),
                          ('unknown_type', 'main', 'legacy', '{fixed}'),
                          ('bad_json', 'main', 'broken', 'slot_never_1'),
                          ('no_server', 'unreachable', 'print', 'slot_never_2'))
                  AS p (name, source, destination, slot)
             JOIN sources s ON s.name = p.source
             JOIN destinations d ON d.name = p.destination",
            duck = slots[0],
            print = slots[1],
            fixed = slots[2],
        ))
        .await
        .unwrap();

    let cancel = CancellationToken::new();
    let replicator = ConfigDbReplicator::new(config.config())
        .with_poll_interval(Duration::from_millis(200))
        .with_max_running(8);
    let running = tokio::spawn(replicator.run(cancel.clone()));

    // Each bad row fails its own pipeline with the reason.
    let unknown = wait_state(&config, "unknown_type", "failed").await.unwrap();
    assert!(
        unknown.contains("`oracle`") && unknown.contains("duckdb"),
        "{unknown}"
    );
    let bad_json = wait_state(&config, "bad_json", "failed").await.unwrap();
    assert!(bad_json.contains("not valid JSON"), "{bad_json}");
    let no_server = wait_state(&config, "no_server", "failed").await.unwrap();
    assert!(no_server.contains("127.0.0.1:1"), "{no_server}");
    assert!(
        !no_server.contains("sekrit"),
        "the password is shown: {no_server}"
    );

    // The good ones run.
    wait_state(&config, "to_duck", "running").await;
    wait_state(&config, "to_stdout", "running").await;
    // Streaming means the backfill is stored: the file is ready to read.
    wait_slot_state(&source, &slots[0], true).await;
    let reader = pg_replicate::sinks::duckdb::DuckDbReader::open(&duck_file).unwrap();
    assert_eq!(copied_tables(&reader), 1);
    let cols = columns(&[("id", "int4"), ("v", "text")]);
    let items: [(&str, &str, &[_]); 1] = [("items", "public.items", &cols)];
    source
        .execute("INSERT INTO items VALUES (100, 'streamed')")
        .await;
    wait_duck_converged(&source, &reader, &items).await;
    wait_slot_state(&source, &slots[1], true).await;

    // PAUSE pauses: the slot is released, changes wait for START.
    client
        .execute(
            "UPDATE pipelines SET status = 'PAUSE' WHERE name = 'to_duck'",
            &[],
        )
        .await
        .unwrap();
    wait_state(&config, "to_duck", "paused").await;
    wait_slot_state(&source, &slots[0], false).await;
    let paused_at = stored_lsn(&reader);
    source
        .execute("UPDATE items SET v = 'while paused' WHERE id <= 5")
        .await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(stored_lsn(&reader), paused_at, "a paused pipeline wrote");
    client
        .execute(
            "UPDATE pipelines SET status = 'START' WHERE name = 'to_duck'",
            &[],
        )
        .await
        .unwrap();
    wait_state(&config, "to_duck", "running").await;
    wait_duck_converged(&source, &reader, &items).await;

    // Fixing a bad row builds its pipeline again, and it runs.
    client
        .execute(
            "UPDATE destinations SET type = 'duckdb', config = $1 WHERE name = 'legacy'",
            &[&format!("{{\"path\": \"{}\"}}", fixed_file.display())],
        )
        .await
        .unwrap();
    let error = wait_state(&config, "unknown_type", "running").await;
    assert_eq!(error, None);
    wait_slot_state(&source, &slots[2], true).await;

    // Transforms from JSON: a bad one fails the pipeline, a good one runs.
    let hashed_file = dir.file("hashed.duckdb");
    let hashed_slot = source.unique_name("slot_hashed");
    client
        .execute(
            "INSERT INTO destinations (name, type, config) VALUES ('hashed', 'duckdb', $1)",
            &[&format!("{{\"path\": \"{}\"}}", hashed_file.display())],
        )
        .await
        .unwrap();
    client
        .execute(
            "INSERT INTO pipelines (name, source_id, destination_id, slot, status, transforms)
             SELECT 'hashed', s.id, d.id, $1, 'START',
                    '{\"items\": {\"mask\": {\"v\": \"scramble\"}}}'
             FROM sources s, destinations d WHERE s.name = 'main' AND d.name = 'hashed'",
            &[&hashed_slot],
        )
        .await
        .unwrap();
    let bad = wait_state(&config, "hashed", "failed").await.unwrap();
    assert!(
        bad.contains("transforms") && bad.contains("\"hash\""),
        "{bad}"
    );
    client
        .execute(
            "UPDATE pipelines SET transforms = '{\"items\": {\"mask\": {\"v\": \"hash\"},
                 \"filter\": [{\"column\": \"id\", \"op\": \">\", \"value\": 10}]}}'
             WHERE name = 'hashed'",
            &[],
        )
        .await
        .unwrap();
    wait_state(&config, "hashed", "running").await;
    wait_slot_state(&source, &hashed_slot, true).await;
    let fixed = pg_replicate::sinks::duckdb::DuckDbReader::open(&hashed_file).unwrap();
    let expected: i64 = source
        .client()
        .await
        .query_one("SELECT count(*) FROM items WHERE id > 10", &[])
        .await
        .unwrap()
        .get(0);
    let start = Instant::now();
    loop {
        // Rows past the filter, every value a SHA-256 in hex.
        let counted: Result<(i64, i64), _> = fixed.connection().query_row(
            "SELECT count(*), count(*) FILTER (WHERE regexp_full_match(v, '[0-9a-f]{64}')) \
             FROM public.items",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        );
        if counted.as_ref().ok() == Some(&(expected, expected)) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the transformed copy did not hold {expected} hashed rows within 60 s: {counted:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A removed row stops its pipeline; the others run on.
    client
        .execute("DELETE FROM pipelines WHERE name = 'to_stdout'", &[])
        .await
        .unwrap();
    wait_slot_state(&source, &slots[1], false).await;
    source.execute("DELETE FROM items WHERE id = 100").await;
    wait_duck_converged(&source, &reader, &items).await;

    // Stopping the replicator stops every pipeline gracefully.
    cancel.cancel();
    tokio::time::timeout(Duration::from_secs(60), running)
        .await
        .expect("the replicator stopped within 60 s")
        .expect("the replicator task")
        .expect("the replicator ends without error");
    assert_eq!(
        state(&config, "to_duck").await.0.as_deref(),
        Some("stopped")
    );
    for slot in &slots {
        wait_slot_state(&source, slot, false).await;
    }
    let confirmed = confirmed_flush(&source, &slots[0]).await.unwrap();
    let stored = stored_lsn(&reader).expect("DuckDB stored changes");
    assert!(
        confirmed <= stored,
        "slot at {confirmed}, DuckDB at {stored}"
    );
}
