//! Backfill and CDC at scale: parallel copies split into ctid ranges,
//! partitioned tables, publication row filters and column lists, and
//! transactions larger than a batch, streamed (protocol 2) or not.

use std::sync::{Arc, Mutex};

use pg_replicate::pipeline::{DataPipeline, PipelineAction};
use pg_replicate::sources::postgres::PostgresSource;
use pg_replicate::sources::{Source, TableCopyStream};
use pg_replicate::types::TableName;
use serde_json::json;

use crate::common::*;
use crate::memory_sink::{MemorySink, Store};
use crate::support::{fresh_database, TestDb};

async fn blocks(db: &TestDb, table: &str) -> i64 {
    db.client()
        .await
        .query_one(
            &format!("SELECT pg_relation_size('{table}') / current_setting('block_size')::int8"),
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn parallel_backfill_copies_large_tables_in_ranges_exactly_once() {
    let db = fresh_database("parallel_backfill").await;
    let publication = db.unique_name("pub");
    // A low fill factor makes a table of few rows span many blocks, so it
    // is split into ranges (at 2,048 blocks and more).
    db.execute(&format!(
        "CREATE TABLE big (id int PRIMARY KEY, v text) WITH (fillfactor = 10);
         INSERT INTO big SELECT g, repeat('x', 60) || g FROM generate_series(1, 30000) g;
         DELETE FROM big WHERE id % 7 = 0;
         CREATE TABLE small_a (id int PRIMARY KEY, v int);
         CREATE TABLE small_b (id int PRIMARY KEY, v int);
         INSERT INTO small_a SELECT g, g FROM generate_series(1, 500) g;
         INSERT INTO small_b SELECT g, -g FROM generate_series(1, 300) g;
         CREATE PUBLICATION {publication} FOR TABLE big, small_a, small_b;"
    ))
    .await;
    assert!(
        blocks(&db, "big").await >= 2048,
        "the table must be large enough to split"
    );

    for connections in [1, 3] {
        let store = Arc::new(Mutex::new(Store::default()));
        let slot = db.unique_name("slot");
        let source = PostgresSource::new(db.config(), &publication, &slot)
            .with_copy_connections(connections);
        let mut pipeline = DataPipeline::new(
            source,
            MemorySink::new(store.clone()),
            PipelineAction::TableCopiesOnly,
        )
        .with_batch_config(test_batch_config());
        let report = pipeline.start().await.unwrap();
        assert_eq!(report.tables_copied, 3);
        assert_eq!(report.rows_copied, 30000 - 30000 / 7 + 500 + 300);
        for table in ["public.big", "public.small_a", "public.small_b"] {
            assert_eq!(
                sink_rows(&store, table),
                pg_rows(&db, table).await,
                "{table} with {connections} connections"
            );
        }
    }
}

#[tokio::test]
async fn partitioned_tables_replicate_with_and_without_the_partition_root() {
    let db = fresh_database("partitioned").await;
    db.execute(
        "CREATE TABLE measures (id int, region text, v int, PRIMARY KEY (id, region))
           PARTITION BY LIST (region);
         CREATE TABLE measures_eu PARTITION OF measures FOR VALUES IN ('eu');
         CREATE TABLE measures_us PARTITION OF measures FOR VALUES IN ('us');
         CREATE TABLE measures_other PARTITION OF measures DEFAULT;
         INSERT INTO measures SELECT g, (ARRAY['eu', 'us', 'asia'])[g % 3 + 1], g
           FROM generate_series(1, 90) g;",
    )
    .await;

    for via_root in [true, false] {
        let publication = db.unique_name("pub");
        let slot = db.unique_name("slot");
        db.execute(&format!(
            "CREATE PUBLICATION {publication} FOR TABLE measures WITH (publish_via_partition_root = {via_root})"
        ))
        .await;
        let store = Arc::new(Mutex::new(Store::default()));
        let running = start(&db, &publication, &slot, &store, PipelineAction::Both);
        let tables = if via_root { 1 } else { 3 };
        wait_until("the backfill", std::time::Duration::from_secs(30), || {
            store.lock().unwrap().state.copied_tables.len() == tables
        })
        .await;
        db.execute(
            "INSERT INTO measures VALUES (1000, 'eu', 1), (1001, 'asia', 2);
             UPDATE measures SET v = v + 100 WHERE id < 10;
             DELETE FROM measures WHERE id BETWEEN 20 AND 29;",
        )
        .await;
        if via_root {
            // Everything arrives as the partitioned table.
            wait_converged(&db, &store, &["public.measures"]).await;
        } else {
            for leaf in ["measures_eu", "measures_us", "measures_other"] {
                wait_converged(&db, &store, &[&format!("public.{leaf}")]).await;
            }
            assert!(store.lock().unwrap().rows("public.measures").is_empty());
        }
        running.stop().await.unwrap();
        // Undo this round's changes for the next one.
        db.execute(
            "DELETE FROM measures WHERE id >= 1000;
             UPDATE measures SET v = v - 100 WHERE id < 10;
             INSERT INTO measures SELECT g, (ARRAY['eu', 'us', 'asia'])[g % 3 + 1], g
               FROM generate_series(20, 29) g;",
        )
        .await;
    }
}

#[tokio::test]
async fn row_filters_and_column_lists_apply_to_copy_and_stream() {
    let db = fresh_database("row_filter").await;
    let publication = db.unique_name("pub");
    let slot = db.unique_name("slot");
    db.execute(&format!(
        "CREATE TABLE orders (id int PRIMARY KEY, status text, secret text, amount int);
         INSERT INTO orders SELECT g, CASE WHEN g % 2 = 0 THEN 'paid' ELSE 'open' END, 's' || g, g
           FROM generate_series(1, 40) g;
         CREATE PUBLICATION {publication} FOR TABLE orders (id, status, amount)
           WHERE (id % 2 = 0);"
    ))
    .await;
    let store = Arc::new(Mutex::new(Store::default()));
    let running = start_copied(&db, &publication, &slot, &store, 1).await;
    let expected_copy: Vec<_> = (1..=40)
        .filter(|g| g % 2 == 0)
        .map(|g| json!({"id": g, "status": "paid", "amount": g}))
        .collect();
    let mut copied = sink_rows(&store, "public.orders");
    copied.sort_by_key(|r| r["id"].as_i64());
    assert_eq!(
        copied, expected_copy,
        "only even ids, without the secret column"
    );

    db.execute(
        "INSERT INTO orders VALUES (100, 'paid', 'x', 7), (101, 'open', 'y', 8);
         UPDATE orders SET amount = 0 WHERE id = 2;",
    )
    .await;
    wait_until(
        "the new paid order",
        std::time::Duration::from_secs(30),
        || {
            sink_rows(&store, "public.orders")
                .iter()
                .any(|r| r == &json!({"id": 100, "status": "paid", "amount": 7}))
        },
    )
    .await;
    running.stop().await.unwrap();
    let rows = sink_rows(&store, "public.orders");
    assert!(rows
        .iter()
        .all(|r| r["status"] == "paid" && r.get("secret").is_none()));
    assert!(rows
        .iter()
        .any(|r| r == &json!({"id": 2, "status": "paid", "amount": 0})));
    assert!(!rows.iter().any(|r| r["id"] == 101));
}

/// Runs a large transaction, one with a rolled-back savepoint and one that
/// aborts, and checks the sink ends equal to Postgres having received
/// continuing batches.
async fn large_transactions_arrive_whole(db: &TestDb, streamed: bool) {
    let publication = db.unique_name("pub");
    let slot = db.unique_name("slot");
    if streamed {
        // The server streams transactions beyond 64 kB before they commit.
        db.execute(&format!(
            "ALTER DATABASE {} SET logical_decoding_work_mem = '64kB'",
            db.name()
        ))
        .await;
    }
    db.execute(&format!(
        "CREATE TABLE t (id int PRIMARY KEY, v text);
         CREATE PUBLICATION {publication} FOR TABLE t;"
    ))
    .await;
    let store = Arc::new(Mutex::new(Store::default()));
    let running = start_copied(db, &publication, &slot, &store, 1).await;
    db.execute(
        "BEGIN;
         INSERT INTO t SELECT g, repeat('v', 50) FROM generate_series(1, 6000) g;
         SAVEPOINT s;
         INSERT INTO t SELECT g, 'rolled back' FROM generate_series(6001, 9000) g;
         DELETE FROM t WHERE id <= 100;
         ROLLBACK TO SAVEPOINT s;
         UPDATE t SET v = 'updated' WHERE id % 10 = 0;
         DELETE FROM t WHERE id > 5900;
         COMMIT;
         BEGIN;
         INSERT INTO t SELECT g, 'aborted' FROM generate_series(20001, 26000) g;
         ROLLBACK;
         INSERT INTO t VALUES (-1, 'after');",
    )
    .await;
    wait_converged(db, &store, &["public.t"]).await;
    running.stop().await.unwrap();
    assert_eq!(sink_rows(&store, "public.t").len(), 5901);
    assert!(
        store.lock().unwrap().continued_batches > 0,
        "a transaction larger than a batch arrives in continuing batches"
    );
    assert!(lines_with_op(&store, "insert")
        .iter()
        .all(|l| l["row"]["v"] != "rolled back" && l["row"]["v"] != "aborted"));
    let streamed_txns: i64 = db
        .client()
        .await
        .query_one(
            "SELECT coalesce(sum(stream_txns), 0)::int8 FROM pg_stat_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await
        .unwrap()
        .get(0);
    if streamed {
        assert!(
            streamed_txns > 0,
            "the server streamed the large transactions"
        );
    } else {
        assert_eq!(streamed_txns, 0);
    }
}

#[tokio::test]
async fn large_transactions_arrive_whole_in_several_batches() {
    let db = fresh_database("large_txn").await;
    large_transactions_arrive_whole(&db, false).await;
}

#[tokio::test]
async fn streamed_transactions_are_spooled_and_applied_on_commit() {
    let db = fresh_database("streamed_txn").await;
    large_transactions_arrive_whole(&db, true).await;
}

#[tokio::test]
async fn tables_dropped_or_altered_during_the_backfill_fail_clearly() {
    let db = fresh_database("dropped_during_copy").await;
    db.execute(
        "CREATE TABLE gone (id int PRIMARY KEY); INSERT INTO gone VALUES (1);
         CREATE TABLE altered (id int PRIMARY KEY, v text); INSERT INTO altered VALUES (1, 'a');",
    )
    .await;
    for (table, ddl, expected) in [
        ("gone", "DROP TABLE gone", "dropped during the backfill"),
        (
            "altered",
            "ALTER TABLE altered DROP COLUMN v",
            "could not start copying public.altered",
        ),
    ] {
        // The snapshot is taken (prepare), then the table changes, then the
        // copy connections start.
        let mut source =
            PostgresSource::for_tables(db.config(), vec![TableName::new("public", table)]);
        let plan = source
            .prepare(PipelineAction::TableCopiesOnly, &Default::default())
            .await
            .unwrap();
        db.execute(ddl).await;
        let outcome = async {
            let mut copy = source
                .copy_table(&plan.tables_to_copy[0], &Default::default())
                .await?;
            while copy.next_batch().await?.is_some() {}
            pg_replicate::Result::Ok(())
        }
        .await;
        let error: pg_replicate::Error = outcome.expect_err("the copy must not look complete");
        assert!(error.to_string().contains(expected), "{table}: {error}");
    }
}

#[tokio::test]
async fn a_slot_dropped_under_the_pipeline_stops_it_and_a_restart_copies_again() {
    let db = fresh_database("slot_dropped").await;
    let publication = db.unique_name("pub");
    let slot = db.unique_name("slot");
    db.execute(&format!(
        "CREATE TABLE t (id int PRIMARY KEY, v text);
         INSERT INTO t SELECT g, 'v' FROM generate_series(1, 50) g;
         CREATE PUBLICATION {publication} FOR TABLE t;"
    ))
    .await;
    let store = Arc::new(Mutex::new(Store::default()));
    let running = start_copied(&db, &publication, &slot, &store, 1).await;
    wait_slot_state(&db, &slot, true).await;

    // Someone ends the stream and drops the slot.
    let admin = db.client().await;
    admin
        .execute(
            "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await
        .unwrap();
    wait_slot_inactive(&db, &slot).await;
    admin
        .execute("SELECT pg_drop_replication_slot($1)", &[&slot])
        .await
        .unwrap();
    let error = tokio::time::timeout(std::time::Duration::from_secs(30), running.handle)
        .await
        .expect("the pipeline stops")
        .unwrap()
        .expect_err("the pipeline reports the lost stream");
    // The cut stream is reconnected, which finds the slot gone: a new slot
    // would skip the changes in between, so the pipeline stops, naming it.
    assert_eq!(
        error.kind(),
        pg_replicate::ErrorKind::SourceSetup,
        "{error}"
    );
    let text = error.to_string();
    assert!(
        text.contains(&slot) && text.contains("does not exist") && text.contains("backfill"),
        "{text}"
    );
    assert!(!error.is_retryable(), "{error}");
    let slots: i64 = admin
        .query_one(
            "SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        slots, 0,
        "the stopped pipeline created no slot in its place"
    );

    // Changes made meanwhile are gone from the WAL stream: a restart makes a
    // new slot and copies the table again.
    db.execute("UPDATE t SET v = 'while down' WHERE id <= 5; DELETE FROM t WHERE id > 45;")
        .await;
    let running = start(&db, &publication, &slot, &store, PipelineAction::Both);
    wait_converged(&db, &store, &["public.t"]).await;
    db.execute("INSERT INTO t VALUES (100, 'after')").await;
    wait_converged(&db, &store, &["public.t"]).await;
    running.stop().await.unwrap();
}

#[tokio::test]
async fn a_snapshot_that_expired_before_the_copy_fails_clearly() {
    let db = fresh_database("snapshot_expired").await;
    let publication = db.unique_name("pub");
    let slot = db.unique_name("slot");
    db.execute(&format!(
        "CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1);
         CREATE PUBLICATION {publication} FOR TABLE t;"
    ))
    .await;
    let mut source = PostgresSource::new(db.config(), &publication, &slot);
    let plan = source
        .prepare(PipelineAction::Both, &Default::default())
        .await
        .unwrap();
    // The connection that exported the snapshot goes away (waited for) before
    // the copy connections import it.
    db.execute(&format!(
        "SELECT pg_terminate_backend(pid, 10000) FROM pg_stat_activity
         WHERE backend_type = 'walsender' AND datname = '{}'",
        db.name()
    ))
    .await;
    let error = match source
        .copy_table(&plan.tables_to_copy[0], &Default::default())
        .await
    {
        Ok(_) => panic!("the copy must not start without its snapshot"),
        Err(error) => error,
    };
    assert_eq!(
        error.kind(),
        pg_replicate::ErrorKind::SourceSetup,
        "{error}"
    );
    assert!(
        error
            .to_string()
            .contains("could not import the backfill's snapshot"),
        "{error}"
    );
}
