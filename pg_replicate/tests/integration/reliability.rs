//! Riding through faults: a pipeline into DuckDB whose Postgres server is
//! restarted (fast, then immediate mode) while writes go on reconnects,
//! resumes from what DuckDB stored, and ends equal to Postgres, nothing
//! lost or doubled. The server is a cluster of the test's own, so the
//! restarts do not disturb the other tests.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pg_replicate::pipeline::{DataPipeline, PipelineAction, RetryConfig};
use pg_replicate::postgres::throwaway::{
    ShutdownMode, ThrowawayCluster, ThrowawayOptions, ThrowawayRole,
};
use pg_replicate::postgres::PgConnectionConfig;
use pg_replicate::sinks::duckdb::{DuckDbReader, DuckDbSink, DuckDbSinkConfig};
use pg_replicate::sources::postgres::PostgresSource;
use tokio_util::sync::CancellationToken;

use crate::common::test_batch_config;
use crate::support::connect;

/// Rows of `t` as `id|v|n` lines, sorted.
type Rows = Vec<String>;

async fn pg_rows(config: &PgConnectionConfig) -> Rows {
    let client = connect(config).await.expect("connect to read the table");
    client
        .query(
            "SELECT id::text || '|' || v || '|' || n::text FROM t ORDER BY id",
            &[],
        )
        .await
        .expect("read the table")
        .iter()
        .map(|r| r.get(0))
        .collect()
}

fn duck_rows(reader: &DuckDbReader) -> Result<Rows, String> {
    let sql = "SELECT CAST(id AS VARCHAR) || '|' || v || '|' || CAST(n AS VARCHAR) FROM public.t ORDER BY id";
    let mut statement = reader
        .connection()
        .prepare(sql)
        .map_err(|e| e.to_string())?;
    let rows = statement
        .query_map([], |r| r.get::<_, String>(0))
        .map_err(|e| e.to_string())?
        .collect::<duckdb::Result<Vec<_>>>()
        .map_err(|e| e.to_string());
    rows
}

/// Writes rows until `stop`, reconnecting whenever the server is away;
/// counts the transactions that committed.
async fn write_until(config: PgConnectionConfig, stop: Arc<AtomicBool>, committed: Arc<AtomicU64>) {
    let mut next_id = 10_000i64;
    while !stop.load(Ordering::Relaxed) {
        let Ok(client) = connect(&config).await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        while !stop.load(Ordering::Relaxed) {
            let id = next_id;
            let sql = format!(
                "BEGIN; INSERT INTO t VALUES ({id}, 'w{id}', 0); \
                 UPDATE t SET n = n + 1, v = 'u' || n WHERE id = {}; \
                 DELETE FROM t WHERE id = {}; COMMIT;",
                id % 1000,
                id - 50
            );
            // A commit whose answer is lost may or may not have happened:
            // the comparison is with what Postgres holds at the end.
            next_id += 1;
            if client.batch_execute(&sql).await.is_err() {
                break;
            }
            committed.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

async fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_restarted_postgres_is_ridden_through_without_loss() {
    let cluster =
        tokio::task::spawn_blocking(|| ThrowawayCluster::start(ThrowawayOptions::default()))
            .await
            .unwrap()
            .expect("start a cluster of the test's own");
    let config = cluster.connection_config("postgres", ThrowawayRole::Superuser.name());
    let admin = connect(&config).await.unwrap();
    admin
        .batch_execute(
            "CREATE TABLE t (id bigint PRIMARY KEY, v text NOT NULL, n bigint NOT NULL);
             INSERT INTO t SELECT g, 'r' || g, 0 FROM generate_series(0, 999) g;
             CREATE PUBLICATION pub FOR TABLE t;",
        )
        .await
        .unwrap();
    drop(admin);

    let dir = std::env::temp_dir().join(format!("pgr-restart-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let sink = DuckDbSink::open(
        DuckDbSinkConfig::new(dir.join("replica.duckdb")).with_identity("pub/slot"),
    )
    .unwrap();
    let reader = sink.reader().unwrap();
    let cancel = CancellationToken::new();
    let mut pipeline = DataPipeline::new(
        PostgresSource::new(config.clone(), "pub", "slot"),
        sink,
        PipelineAction::Both,
    )
    .with_batch_config(test_batch_config())
    .with_retry_config(RetryConfig {
        initial_backoff: Duration::from_millis(100),
        max_backoff: Duration::from_secs(1),
        give_up_after: Duration::from_secs(60),
    })
    .with_cancellation(cancel.clone());
    let running = tokio::spawn(async move { pipeline.start().await });
    wait_for("the backfill", Duration::from_secs(60), || {
        duck_rows(&reader).is_ok_and(|rows| rows.len() == 1000)
    })
    .await;

    let stop = Arc::new(AtomicBool::new(false));
    let committed = Arc::new(AtomicU64::new(0));
    let writer = tokio::spawn(write_until(config.clone(), stop.clone(), committed.clone()));
    let cluster = Arc::new(cluster);
    for mode in [ShutdownMode::Fast, ShutdownMode::Immediate] {
        let before = committed.load(Ordering::Relaxed);
        wait_for("writes before the restart", Duration::from_secs(30), || {
            committed.load(Ordering::Relaxed) >= before + 50
        })
        .await;
        let restarting = cluster.clone();
        tokio::task::spawn_blocking(move || restarting.restart(mode))
            .await
            .unwrap()
            .unwrap_or_else(|e| panic!("restart ({mode:?}): {e}"));
        let after = committed.load(Ordering::Relaxed);
        wait_for("writes after the restart", Duration::from_secs(30), || {
            committed.load(Ordering::Relaxed) >= after + 50
        })
        .await;
        assert!(
            !running.is_finished(),
            "the pipeline stopped at the {mode:?} restart: {:?}",
            running.await
        );
    }
    stop.store(true, Ordering::Relaxed);
    tokio::time::timeout(Duration::from_secs(30), writer)
        .await
        .expect("the writer stops")
        .unwrap();

    let expected = pg_rows(&config).await;
    let start = Instant::now();
    loop {
        let actual = duck_rows(&reader).unwrap_or_default();
        if actual == expected {
            break;
        }
        if start.elapsed() > Duration::from_secs(60) {
            let missing: Vec<_> = expected
                .iter()
                .filter(|r| !actual.contains(r))
                .take(5)
                .collect();
            let extra: Vec<_> = actual
                .iter()
                .filter(|r| !expected.contains(r))
                .take(5)
                .collect();
            panic!(
                "DuckDB did not converge: {} rows in Postgres, {} in DuckDB; only in Postgres: \
                 {missing:?}; only in DuckDB: {extra:?}",
                expected.len(),
                actual.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    cancel.cancel();
    let report = tokio::time::timeout(Duration::from_secs(60), running)
        .await
        .expect("the pipeline stops within 60 s")
        .unwrap()
        .expect("the pipeline ends without an error");
    assert!(report.transactions > 0);
    drop(reader);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Ends the walsender serving `slot` (as an administrator's
/// `pg_terminate_backend`, SQLSTATE 57P01), once it is streaming.
async fn terminate_walsender(db: &crate::support::TestDb, slot: &str) {
    let client = db.client().await;
    let start = Instant::now();
    loop {
        let ended: bool = client
            .query_one(
                "SELECT COALESCE(bool_or(pg_terminate_backend(active_pid)), false) \
                 FROM pg_replication_slots WHERE slot_name = $1 AND active_pid IS NOT NULL",
                &[&slot],
            )
            .await
            .unwrap()
            .get(0);
        if ended {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no walsender streamed slot {slot} within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_cut_stream_reconnects_and_a_dropped_publication_stops_with_its_name() {
    use std::sync::Mutex;

    use crate::common::{start_copied, wait_converged};
    use crate::memory_sink::Store;

    let db = crate::support::fresh_database("reconnect").await;
    let publication = db.unique_name("pub");
    let slot = db.unique_name("slot");
    db.execute(&format!(
        "CREATE TABLE items (id int PRIMARY KEY, v text);
         INSERT INTO items SELECT g, 'a' FROM generate_series(1, 100) g;
         CREATE PUBLICATION {publication} FOR TABLE items;"
    ))
    .await;
    let store = Arc::new(Mutex::new(Store::default()));
    let running = start_copied(&db, &publication, &slot, &store, 1).await;

    // A cut stream (the server ends the walsender) is reconnected.
    for round in 0..2 {
        db.execute(&format!(
            "UPDATE items SET v = 'round {round}' WHERE id % 3 = {round}"
        ))
        .await;
        wait_converged(&db, &store, &["public.items"]).await;
        terminate_walsender(&db, &slot).await;
        db.execute(&format!(
            "INSERT INTO items VALUES ({}, 'after cut')",
            1000 + round
        ))
        .await;
        wait_converged(&db, &store, &["public.items"]).await;
    }
    assert!(
        !running.handle.is_finished(),
        "the pipeline stopped on a cut stream"
    );

    // A missing publication is permanent: no retrying, an error naming it.
    db.execute(&format!("DROP PUBLICATION {publication}")).await;
    terminate_walsender(&db, &slot).await;
    let error = tokio::time::timeout(Duration::from_secs(30), running.handle)
        .await
        .expect("the pipeline stops within 30 s of losing its publication")
        .unwrap()
        .expect_err("a dropped publication stops the pipeline");
    let text = error.to_string();
    assert!(
        text.contains(&publication) && text.contains("does not exist"),
        "{text}"
    );
}

/// A pipeline into DuckDB whose every connection to `db` goes through a
/// fault proxy; `copy_connections` backfill connections.
struct Proxied {
    proxy: crate::fault_proxy::FaultProxy,
    running: crate::common::Running,
    reader: DuckDbReader,
    _dir: crate::duckdb_common::DuckDir,
}

async fn start_proxied(
    db: &crate::support::TestDb,
    publication: &str,
    slot: &str,
    copy_connections: usize,
) -> Proxied {
    use crate::duckdb_common::{config as duck_config, DuckDir};
    use crate::fault_proxy::FaultProxy;

    let proxy = FaultProxy::start(db.config().port).await;
    let mut config = db.config();
    config.host = "127.0.0.1".into();
    config.port = proxy.port();
    let dir = DuckDir::new(db);
    let sink = DuckDbSink::open(duck_config(&dir.file("proxied.duckdb"), publication, slot))
        .expect("open the DuckDB file");
    let reader = sink.reader().expect("a reader of the DuckDB file");
    let running = crate::common::start_source(
        PostgresSource::new(config, publication, slot).with_copy_connections(copy_connections),
        sink,
        PipelineAction::Both,
    );
    Proxied {
        proxy,
        running,
        reader,
        _dir: dir,
    }
}

#[tokio::test]
async fn a_cut_and_a_stalled_connection_are_replaced_during_cdc() {
    use crate::duckdb_common::{columns, wait_copied, wait_duck_converged};

    let db = crate::support::fresh_database("proxy_cdc").await;
    let publication = db.unique_name("pub");
    let slot = db.unique_name("slot");
    db.execute(&format!(
        "CREATE TABLE items (id int PRIMARY KEY, v text);
         INSERT INTO items SELECT g, 'a' FROM generate_series(1, 100) g;
         CREATE PUBLICATION {publication} FOR TABLE items;"
    ))
    .await;
    let Proxied {
        proxy,
        running,
        reader,
        _dir,
    } = start_proxied(&db, &publication, &slot, 2).await;
    wait_copied(&reader, 1).await;
    let cols = columns(&[("id", "int4"), ("v", "text")]);
    let tables: [(&str, &str, &[_]); 1] = [("items", "public.items", &cols)];

    db.execute("UPDATE items SET v = 'before the cut' WHERE id <= 10")
        .await;
    wait_duck_converged(&db, &reader, &tables).await;
    proxy.cut();
    db.execute(
        "UPDATE items SET v = 'after the cut' WHERE id > 90; DELETE FROM items WHERE id = 50",
    )
    .await;
    wait_duck_converged(&db, &reader, &tables).await;

    // A stalled connection says nothing, and closes nothing: only the
    // pipeline's stall timeout (3 s here) can tell.
    proxy.stall_existing();
    db.execute("INSERT INTO items VALUES (500, 'during the stall')")
        .await;
    wait_duck_converged(&db, &reader, &tables).await;
    assert!(
        !running.handle.is_finished(),
        "the pipeline stopped on a fault"
    );
    running.stop().await.expect("the pipeline stops cleanly");
}

/// A backfill through the proxy is cut while the big table's rows are being
/// copied; the pipeline copies what was not finished again and streams on.
#[tokio::test]
async fn a_backfill_cut_midway_copies_the_unfinished_tables_again() {
    backfill_fault("proxy_backfill", crate::fault_proxy::FaultProxy::cut, true).await;
}

/// A backfill whose connections stall midway (open, silent) is found by
/// the copy's silence limit and copied again in a new snapshot.
///
/// Meanwhile another database of the server is dropped. `DROP DATABASE`
/// waits until every backend absorbs its signal barrier. A backend blocked
/// writing COPY data to a stalled client never does. The new snapshot in
/// turn waits for the drop's transaction. The server keeps the stalled
/// sessions until its TCP keepalive notices, so only the source ending its
/// own stale sessions lets both go on.
#[tokio::test]
async fn a_backfill_stalled_midway_copies_the_unfinished_tables_again() {
    backfill_fault(
        "proxy_backfill_stall",
        crate::fault_proxy::FaultProxy::stall_existing,
        false,
    )
    .await;
}

/// Starts a backfill through the proxy, applies `fault` while the big
/// table's rows are being copied, and checks DuckDB ends equal to Postgres
/// (with a row streamed after the backfill when `stream_after`).
async fn backfill_fault(
    name: &str,
    fault: fn(&crate::fault_proxy::FaultProxy),
    stream_after: bool,
) {
    use crate::duckdb_common::{columns, copied_tables, wait_copied, wait_duck_converged};

    let db = crate::support::fresh_database(name).await;
    let other = crate::support::fresh_database(&format!("{name}_other")).await;
    let publication = db.unique_name("pub");
    let slot = db.unique_name("slot");
    db.execute(&format!(
        "CREATE TABLE small (id int PRIMARY KEY, v text);
         INSERT INTO small SELECT g, 's' FROM generate_series(1, 10) g;
         CREATE TABLE big (id int PRIMARY KEY, v text);
         INSERT INTO big SELECT g, repeat('b', 50) FROM generate_series(1, 300000) g;
         CREATE PUBLICATION {publication} FOR TABLE small, big;"
    ))
    .await;
    let Proxied {
        proxy,
        running,
        reader,
        _dir,
    } = start_proxied(&db, &publication, &slot, 1).await;
    // DuckDB commits a copy whole: watch the COPY on the Postgres side.
    let client = db.client().await;
    let start = Instant::now();
    loop {
        let copied: Option<i64> = client
            .query_one(
                // COPY (SELECT …) reports no relation: the only COPY of
                // this database with that many rows is big's.
                "SELECT max(tuples_processed) FROM pg_stat_progress_copy \
                 WHERE datname = current_database()",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if copied.is_some_and(|n| n >= 1000) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the copy of big did not start within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(
        copied_tables(&reader) < 2,
        "the backfill ended before the fault; make the table bigger"
    );
    fault(&proxy);
    let dropped = drop_database_meanwhile(other.name().to_owned());
    db.execute("UPDATE big SET v = 'changed during the backfill' WHERE id % 1000 = 0")
        .await;
    if stream_after {
        wait_copied(&reader, 2).await;
        db.execute("INSERT INTO small VALUES (11, 'streamed')")
            .await;
    }
    let cols = columns(&[("id", "int4"), ("v", "text")]);
    wait_duck_converged(
        &db,
        &reader,
        &[
            ("small", "public.small", &cols),
            ("big", "public.big", &cols),
        ],
    )
    .await;
    match tokio::time::timeout(Duration::from_secs(60), dropped).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(error))) => panic!("DROP DATABASE during the fault failed: {error}"),
        Ok(Err(error)) => panic!("the DROP DATABASE task failed: {error}"),
        Err(_) => panic!(
            "DROP DATABASE during the fault did not end within 60 s after the tables converged"
        ),
    }
    assert!(
        !running.handle.is_finished(),
        "the pipeline stopped on the fault"
    );
    running.stop().await.expect("the pipeline stops cleanly");
}

/// Drops `database` from another connection, as another application of
/// the server might during a fault.
fn drop_database_meanwhile(
    database: String,
) -> tokio::task::JoinHandle<Result<(), tokio_postgres::Error>> {
    tokio::spawn(async move {
        let pg = crate::support::cluster();
        let admin = crate::support::connect(&pg.config(&pg.maintenance_db()))
            .await
            .expect("connect to the maintenance database");
        // The server gives up too if the test does.
        admin
            .batch_execute("SET statement_timeout = '150s'")
            .await?;
        admin
            .batch_execute(&format!("DROP DATABASE \"{database}\" WITH (FORCE)"))
            .await
    })
}
