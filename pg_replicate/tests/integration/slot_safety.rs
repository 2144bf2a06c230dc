//! The slot's side of a long-running pipeline. On a cluster of the test's
//! own (its settings change): the WAL a stopped pipeline's slot holds back
//! is measured, and a slot Postgres invalidated for falling too far behind
//! (`max_slot_wal_keep_size`) stops the pipeline with the way out instead
//! of a retry loop or a silent gap. On the shared cluster: WAL of
//! unpublished tables does not pile up behind a running pipeline's slot,
//! and the heartbeat writes its messages.

use std::time::{Duration, Instant};

use pg_replicate::pipeline::{DataPipeline, PipelineAction};
use pg_replicate::postgres::catalog::slot_health;
use pg_replicate::postgres::throwaway::{ThrowawayCluster, ThrowawayOptions, ThrowawayRole};
use pg_replicate::sinks::duckdb::{DuckDbSink, DuckDbSinkConfig};
use pg_replicate::sources::postgres::{PostgresSource, HEARTBEAT_PREFIX};
use pg_replicate::types::Lsn;
use pg_replicate::ErrorKind;
use tokio_util::sync::CancellationToken;

use crate::common::{confirmed_flush, start_source, test_batch_config};
use crate::duckdb_common::{config, stored_lsn, wait_copied, DuckDir};
use crate::support::{connect, fresh_database};

/// Counts the rows of `public.t` in the DuckDB file at `path`.
fn duck_count(sink: &DuckDbSink) -> Option<i64> {
    let reader = sink.reader().ok()?;
    reader
        .connection()
        .query_row("SELECT COUNT(*) FROM public.t", [], |r| r.get(0))
        .ok()
}

#[tokio::test]
async fn a_lagging_slot_is_measured_and_an_invalidated_one_stops_with_the_way_out() {
    let cluster =
        tokio::task::spawn_blocking(|| ThrowawayCluster::start(ThrowawayOptions::default()))
            .await
            .unwrap()
            .expect("start a cluster of the test's own");
    let config = cluster.connection_config("postgres", ThrowawayRole::Superuser.name());
    let admin = connect(&config).await.unwrap();
    admin
        .batch_execute(
            "CREATE TABLE t (id bigint PRIMARY KEY, v text NOT NULL);
             INSERT INTO t SELECT g, 'r' || g FROM generate_series(1, 100) g;
             CREATE PUBLICATION pub FOR TABLE t;",
        )
        .await
        .unwrap();
    let dir = std::env::temp_dir().join(format!("pgr-slot-safety-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let open = || {
        DuckDbSink::open(
            DuckDbSinkConfig::new(dir.join("replica.duckdb")).with_identity("pub/slot"),
        )
        .unwrap()
    };

    // Copy, then stop: the slot stays, and falls behind.
    let sink = open();
    let probe = sink.reader().unwrap();
    let cancel = CancellationToken::new();
    let mut pipeline = DataPipeline::new(
        PostgresSource::new(config.clone(), "pub", "slot"),
        sink,
        PipelineAction::Both,
    )
    .with_batch_config(test_batch_config())
    .with_cancellation(cancel.clone());
    let running = tokio::spawn(async move { pipeline.start().await });
    let started = Instant::now();
    loop {
        let copied = probe
            .connection()
            .query_row("SELECT COUNT(*) FROM public.t", [], |r| r.get::<_, i64>(0))
            .ok();
        if copied == Some(100) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60) && !running.is_finished(),
            "the backfill of 100 rows did not reach DuckDB within 60 s (now {copied:?})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(probe);
    cancel.cancel();
    tokio::time::timeout(Duration::from_secs(60), running)
        .await
        .expect("the pipeline stops within 60 s")
        .unwrap()
        .expect("the pipeline ends without an error");

    admin
        .batch_execute(
            "INSERT INTO t SELECT g, repeat('w', 100) FROM generate_series(1000, 5000) g",
        )
        .await
        .unwrap();
    let health = slot_health(&admin, "slot")
        .await
        .unwrap()
        .expect("the slot exists");
    assert!(!health.active, "{health:?}");
    let unconfirmed = health.unconfirmed_bytes.expect("unconfirmed bytes");
    assert!(unconfirmed > 400_000, "{health:?}");
    assert!(
        health.retained_bytes.expect("retained bytes") >= unconfirmed,
        "{health:?}"
    );
    assert_eq!(health.wal_status.as_deref(), Some("reserved"));
    assert_eq!(
        health.safe_wal_bytes, None,
        "no max_slot_wal_keep_size is set"
    );
    assert_eq!(slot_health(&admin, "no_such_slot").await.unwrap(), None);

    // A limit the slot is far beyond: the next checkpoints invalidate it.
    for sql in [
        "ALTER SYSTEM SET max_slot_wal_keep_size = '1MB'",
        "SELECT pg_reload_conf()",
    ] {
        admin.batch_execute(sql).await.unwrap();
    }
    let started = Instant::now();
    loop {
        for sql in [
            "INSERT INTO t SELECT g, 'x' FROM generate_series(10000, 12000) g ON CONFLICT (id) DO UPDATE \
             SET v = t.v || 'x'",
            "SELECT pg_switch_wal()",
            "CHECKPOINT",
        ] {
            admin.batch_execute(sql).await.unwrap();
        }
        let health = slot_health(&admin, "slot").await.unwrap().unwrap();
        if health.wal_status.as_deref() == Some("lost") {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the slot was not invalidated within 60 s: {health:?}"
        );
    }

    let sink = open();
    let before = duck_count(&sink);
    let outcome = tokio::time::timeout(
        Duration::from_secs(60),
        DataPipeline::new(
            PostgresSource::new(config.clone(), "pub", "slot"),
            sink,
            PipelineAction::Both,
        )
        .with_batch_config(test_batch_config())
        .start(),
    )
    .await
    .expect("the pipeline neither failed nor stopped within 60 s");
    let error = outcome.expect_err("a pipeline streamed from an invalidated slot");
    assert_eq!(error.kind(), ErrorKind::SourceSetup, "{error}");
    let message = error.to_string();
    assert!(message.contains("invalidated"), "{message}");
    assert!(
        message.contains("pg_drop_replication_slot('slot')") && message.contains("backfill"),
        "{message}"
    );
    assert_eq!(
        duck_count(&open()),
        before,
        "the sink changed on the way to the error"
    );
    drop(admin);
    let _ = std::fs::remove_dir_all(&dir);
}

/// WAL that carries nothing for the publication (an unpublished table's
/// writes) does not pile up behind the slot: the sink stores the position
/// and the slot is confirmed past it. The heartbeat writes its messages
/// into the WAL while the pipeline streams.
#[tokio::test]
async fn unpublished_writes_and_heartbeats_move_the_slot_on() {
    let db = fresh_database("slot_moves_on").await;
    let (publication, slot) = (db.unique_name("pub"), db.unique_name("slot"));
    db.execute(&format!(
        "CREATE TABLE t (id bigint PRIMARY KEY, v text NOT NULL);
         CREATE TABLE other (id bigint PRIMARY KEY, v text NOT NULL);
         INSERT INTO t VALUES (1, 'one');
         CREATE PUBLICATION {publication} FOR TABLE t;
         CREATE EXTENSION IF NOT EXISTS pg_walinspect;"
    ))
    .await;
    let dir = DuckDir::new(&db);
    let sink = DuckDbSink::open(config(&dir.file("r.duckdb"), &publication, &slot)).unwrap();
    let reader = sink.reader().unwrap();
    let source = PostgresSource::new(db.config(), publication.as_str(), slot.as_str())
        .with_heartbeat(Duration::from_millis(200));
    let running = start_source(source, sink, PipelineAction::Both);
    wait_copied(&reader, 1).await;
    let client = db.client().await;
    let lsn = |row: tokio_postgres::Row| row.get::<_, String>(0).parse::<Lsn>().unwrap();
    let start = lsn(client
        .query_one("SELECT pg_current_wal_lsn()::text", &[])
        .await
        .unwrap());

    db.execute("INSERT INTO other SELECT g, repeat('x', 200) FROM generate_series(1, 20000) g")
        .await;
    let written = lsn(client
        .query_one("SELECT pg_current_wal_lsn()::text", &[])
        .await
        .unwrap());
    assert!(
        written.0 - start.0 > 2_000_000,
        "the unpublished writes wrote little WAL"
    );
    let started = Instant::now();
    loop {
        let confirmed = confirmed_flush(&db, &slot).await;
        let stored = stored_lsn(&reader);
        if confirmed.is_some_and(|c| c >= written) {
            assert!(
                stored.is_some_and(|s| s >= confirmed.unwrap()),
                "slot confirmed {confirmed:?} past DuckDB's stored {stored:?}"
            );
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30) && !running.handle.is_finished(),
            "the slot was not confirmed past {written} (unpublished writes) within 30 s: confirmed \
             {confirmed:?}, stored {stored:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let started = Instant::now();
    loop {
        let beats: i64 = client
            .query_one(
                "SELECT count(*) FROM pg_get_wal_records_info($1::text::pg_lsn, pg_current_wal_lsn()) \
                 WHERE resource_manager = 'LogicalMessage' AND description LIKE $2",
                &[&start.to_string(), &format!("%{HEARTBEAT_PREFIX}%")],
            )
            .await
            .unwrap()
            .get(0);
        if beats >= 3 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{beats} heartbeat messages in the WAL after 20 s at one per 200 ms"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    running.stop().await.unwrap();
}
