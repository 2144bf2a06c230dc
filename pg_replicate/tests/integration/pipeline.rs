//! Backfill + CDC through the whole pipeline into a stateful sink.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use pg_replicate::pipeline::PipelineAction;
use serde_json::json;

use crate::common::*;
use crate::memory_sink::{MemorySink, Store};
use crate::support::fresh_database;

#[tokio::test]
async fn backfill_then_cdc_over_several_tables_and_schemas() {
    let db = fresh_database("backfill_then_cdc").await;
    let publication = db.unique_name("pub");
    let slot = db.unique_name("slot");
    db.execute(&format!(
        "CREATE SCHEMA s1; CREATE SCHEMA \"S 2\";
         CREATE TABLE s1.accounts (id int PRIMARY KEY, name text NOT NULL, balance numeric(12,2));
         CREATE TABLE \"S 2\".events (id bigint PRIMARY KEY, flag bool, note text);
         CREATE TABLE public.items (id int PRIMARY KEY, label text);
         INSERT INTO s1.accounts SELECT g, 'name ' || g, g * 1.5 FROM generate_series(1, 250) g;
         INSERT INTO \"S 2\".events SELECT g, g % 2 = 0, NULL FROM generate_series(1, 40) g;
         INSERT INTO public.items VALUES (1, 'a'), (2, 'b');
         CREATE PUBLICATION {publication} FOR TABLE s1.accounts, \"S 2\".events, public.items;"
    ))
    .await;

    let store = Arc::new(Mutex::new(Store::default()));
    let running = start_copied(&db, &publication, &slot, &store, 3).await;
    assert_eq!(lines_with_op(&store, "copy").len(), 250 + 40 + 2);

    db.execute(
        "INSERT INTO s1.accounts VALUES (1000, 'new', 1.25);
         UPDATE s1.accounts SET balance = balance + 1 WHERE id <= 10;
         UPDATE s1.accounts SET id = 2000 WHERE id = 20;
         DELETE FROM s1.accounts WHERE id BETWEEN 100 AND 150;
         BEGIN;
           DELETE FROM s1.accounts WHERE id = 30;
           INSERT INTO s1.accounts VALUES (30, 'reborn', 0);
           UPDATE \"S 2\".events SET note = 'touched' WHERE id < 5;
           INSERT INTO public.items VALUES (3, 'c');
         COMMIT;
         TRUNCATE public.items;
         INSERT INTO public.items VALUES (9, 'after truncate');",
    )
    .await;

    wait_converged(
        &db,
        &store,
        &["s1.accounts", "\"S 2\".events", "public.items"],
    )
    .await;
    let truncates = lines_with_op(&store, "truncate");
    assert_eq!(truncates.len(), 1);
    assert_eq!(truncates[0]["table"], "public.items");

    // The primary-key change carries the old key.
    let key_change = lines_with_op(&store, "update")
        .into_iter()
        .find(|l| l["row"]["id"] == 2000)
        .expect("update of the key");
    assert_eq!(key_change["old"], json!({"id": 20}));

    let report = running.stop().await.unwrap();
    assert_eq!(report.tables_copied, 3);
    assert_eq!(report.rows_copied, 292);

    // The slot never moves past what the sink stored.
    let stored = store.lock().unwrap().state.last_lsn.unwrap();
    let confirmed = confirmed_flush(&db, &slot).await.unwrap();
    assert!(
        confirmed <= stored,
        "confirmed {confirmed} is ahead of stored {stored}"
    );
}

#[tokio::test]
async fn transaction_over_many_tables_keeps_commit_order() {
    let db = fresh_database("txn_many_tables").await;
    let publication = db.unique_name("pub");
    let slot = db.unique_name("slot");
    let mut ddl = String::new();
    for t in 0..6 {
        ddl.push_str(&format!("CREATE TABLE t{t} (id int PRIMARY KEY, v int);"));
    }
    ddl.push_str(&format!("CREATE PUBLICATION {publication} FOR ALL TABLES;"));
    db.execute(&ddl).await;

    let store = Arc::new(Mutex::new(Store::default()));
    let running = start_copied(&db, &publication, &slot, &store, 6).await;

    let mut txn = String::from("BEGIN;");
    for i in 0..60 {
        txn.push_str(&format!("INSERT INTO t{} VALUES ({i}, {i});", i % 6));
    }
    txn.push_str("UPDATE t0 SET v = -1; DELETE FROM t5 WHERE id > 30; COMMIT;");
    db.execute(&txn).await;

    let tables: Vec<String> = (0..6).map(|t| format!("public.t{t}")).collect();
    let table_refs: Vec<&str> = tables.iter().map(String::as_str).collect();
    wait_converged(&db, &store, &table_refs).await;

    let changes: Vec<_> = store
        .lock()
        .unwrap()
        .all_lines()
        .filter(|l| l.get("seq").is_some())
        .cloned()
        .collect();
    assert_eq!(changes.len(), 60 + 10 + 5);
    let lsn = &changes[0]["lsn"];
    for (position, change) in changes.iter().enumerate() {
        assert_eq!(&change["lsn"], lsn, "one transaction, one commit LSN");
        assert_eq!(
            change["seq"], position as u64,
            "printed in transaction order"
        );
    }
    // The inserts arrive in the order they were made, across tables.
    for (i, change) in changes.iter().take(60).enumerate() {
        assert_eq!(change["table"], format!("public.t{}", i % 6));
        assert_eq!(change["row"]["id"], i);
    }
    running.stop().await.unwrap();
}

#[tokio::test]
async fn unchanged_toast_is_marked_not_null() {
    let db = fresh_database("toast").await;
    let publication = db.unique_name("pub");
    let slot = db.unique_name("slot");
    db.execute(&format!(
        "CREATE TABLE docs (id int PRIMARY KEY, body text, counter int);
         CREATE PUBLICATION {publication} FOR TABLE docs;"
    ))
    .await;
    let store = Arc::new(Mutex::new(Store::default()));
    let running = start_copied(&db, &publication, &slot, &store, 1).await;
    // ~64 kB of poorly compressible text is stored out of line (TOAST).
    db.execute(
        "INSERT INTO docs SELECT 1, string_agg(md5(g::text || random()::text), ''), 0 FROM generate_series(1, 2000) g;
         UPDATE docs SET counter = counter + 1 WHERE id = 1;",
    )
    .await;
    wait_converged(&db, &store, &["public.docs"]).await;
    let update = lines_with_op(&store, "update").pop().expect("the update");
    assert_eq!(update["unchanged"], json!(["body"]));
    assert!(
        update["row"].get("body").is_none(),
        "unchanged value must not be sent as null"
    );
    assert_eq!(update["row"]["counter"], 1);
    running.stop().await.unwrap();
}

#[tokio::test]
async fn replica_identity_full_sends_whole_old_rows() {
    let db = fresh_database("identity_full").await;
    let publication = db.unique_name("pub");
    let slot = db.unique_name("slot");
    db.execute(&format!(
        "CREATE TABLE logs (host text, level int, message text);
         ALTER TABLE logs REPLICA IDENTITY FULL;
         INSERT INTO logs VALUES ('a', 1, 'one'), ('b', 2, 'two');
         CREATE PUBLICATION {publication} FOR TABLE logs;"
    ))
    .await;
    let store = Arc::new(Mutex::new(Store::default()));
    let running = start_copied(&db, &publication, &slot, &store, 1).await;
    db.execute(
        "UPDATE logs SET level = 5 WHERE host = 'a';
         DELETE FROM logs WHERE host = 'b';",
    )
    .await;
    wait_converged(&db, &store, &["public.logs"]).await;
    let update = lines_with_op(&store, "update").pop().unwrap();
    assert_eq!(
        update["old"],
        json!({"host": "a", "level": 1, "message": "one"})
    );
    let delete = lines_with_op(&store, "delete").pop().unwrap();
    assert_eq!(
        delete["old"],
        json!({"host": "b", "level": 2, "message": "two"})
    );
    assert!(delete.get("row").is_none());
    running.stop().await.unwrap();
}

#[tokio::test]
async fn restart_resumes_without_recopying_or_reapplying() {
    let db = fresh_database("restart_resume").await;
    let publication = db.unique_name("pub");
    let slot = db.unique_name("slot");
    db.execute(&format!(
        "CREATE TABLE kv (id int PRIMARY KEY, v text);
         INSERT INTO kv SELECT g, 'v' || g FROM generate_series(1, 100) g;
         CREATE PUBLICATION {publication} FOR TABLE kv;"
    ))
    .await;
    let store = Arc::new(Mutex::new(Store::default()));

    // Run 1: backfill and some changes, then a graceful stop.
    let running = start_copied(&db, &publication, &slot, &store, 1).await;
    db.execute("INSERT INTO kv SELECT g, 'w' || g FROM generate_series(101, 150) g;")
        .await;
    wait_converged(&db, &store, &["public.kv"]).await;
    running.stop().await.unwrap();

    // Changes while no pipeline runs.
    db.execute("INSERT INTO kv SELECT g, 'x' || g FROM generate_series(151, 200) g; DELETE FROM kv WHERE id <= 10;").await;

    // Run 2: killed without a graceful stop, right after it applied something.
    wait_slot_inactive(&db, &slot).await;
    let running = start(&db, &publication, &slot, &store, PipelineAction::Both);
    wait_converged(&db, &store, &["public.kv"]).await;
    db.execute("UPDATE kv SET v = 'y' WHERE id > 190;").await;
    wait_converged(&db, &store, &["public.kv"]).await;
    running.handle.abort();
    let _ = running.handle.await;

    // Run 3: more changes, then it must end equal to Postgres.
    wait_slot_inactive(&db, &slot).await;
    db.execute("INSERT INTO kv VALUES (500, 'z'); UPDATE kv SET v = 'q' WHERE id = 11;")
        .await;
    let running = start(&db, &publication, &slot, &store, PipelineAction::Both);
    wait_converged(&db, &store, &["public.kv"]).await;
    running.stop().await.unwrap();

    let store = store.lock().unwrap();
    assert_eq!(store.runs.len(), 3);
    let copies: Vec<usize> = store
        .runs
        .iter()
        .map(|run| run.iter().filter(|l| l["op"] == "copy").count())
        .collect();
    assert_eq!(copies, vec![100, 0, 0], "the table is copied once");
    // Every insert is delivered exactly once over the three runs.
    let mut inserted: Vec<u64> = store
        .all_lines()
        .filter(|l| l["op"] == "insert")
        .map(|l| l["row"]["id"].as_u64().unwrap())
        .collect();
    inserted.sort_unstable();
    let expected: Vec<u64> = (101..=200).chain([500]).collect();
    assert_eq!(inserted, expected);
    let updates = store.all_lines().filter(|l| l["op"] == "update").count();
    assert_eq!(updates, 10 + 1, "no update applied twice");
}

#[tokio::test]
async fn interrupted_backfill_copies_only_the_missing_tables() {
    let db = fresh_database("interrupted_backfill").await;
    let publication = db.unique_name("pub");
    let slot = db.unique_name("slot");
    db.execute(&format!(
        "CREATE TABLE a (id int PRIMARY KEY, v int);
         CREATE TABLE b (id int PRIMARY KEY, v int);
         INSERT INTO a SELECT g, g FROM generate_series(1, 30) g;
         INSERT INTO b SELECT g, g FROM generate_series(1, 30) g;
         CREATE PUBLICATION {publication} FOR TABLE a, b;"
    ))
    .await;
    let store = Arc::new(Mutex::new(Store::default()));

    // Run 1 fails when finishing the copy of b (tables copy in name order).
    let mut sink = MemorySink::new(store.clone());
    sink.fail_copy_of = Some("public.b".into());
    let running = start_with(&db, &publication, &slot, sink, PipelineAction::Both);
    let error = tokio::time::timeout(Duration::from_secs(30), running.handle)
        .await
        .expect("run 1 ends by itself")
        .unwrap()
        .expect_err("the simulated crash");
    assert!(error.to_string().contains("simulated crash"), "{error}");
    assert_eq!(store.lock().unwrap().state.copied_tables.len(), 1);

    // Changes to both tables between the runs.
    db.execute("INSERT INTO a VALUES (31, 31); UPDATE b SET v = -v WHERE id <= 5; INSERT INTO b VALUES (31, 31);")
        .await;

    wait_slot_inactive(&db, &slot).await;
    let running = start(&db, &publication, &slot, &store, PipelineAction::Both);
    wait_converged(&db, &store, &["public.a", "public.b"]).await;
    db.execute("INSERT INTO a VALUES (32, 32); INSERT INTO b VALUES (32, 32);")
        .await;
    wait_converged(&db, &store, &["public.a", "public.b"]).await;
    running.stop().await.unwrap();

    let store = store.lock().unwrap();
    let run2 = &store.runs[1];
    let copied: Vec<&str> = run2
        .iter()
        .filter(|l| l["op"] == "copy")
        .map(|l| l["table"].as_str().unwrap())
        .collect();
    assert!(
        copied.iter().all(|t| *t == "public.b"),
        "a is not copied again"
    );
    assert_eq!(copied.len(), 31);
    // b's copy already holds its changes made before the copy; they are not
    // applied a second time from the stream.
    let b_changes = run2
        .iter()
        .filter(|l| l["table"] == "public.b" && l["op"] != "copy")
        .count();
    assert_eq!(b_changes, 1, "only the insert of 32 after the copy");
}

#[tokio::test]
async fn replica_identity_index_sends_the_index_columns_as_old_key() {
    let db = fresh_database("identity_index").await;
    let publication = db.unique_name("pub");
    let slot = db.unique_name("slot");
    db.execute(&format!(
        "CREATE TABLE users (id int PRIMARY KEY, email text NOT NULL, name text);
         CREATE UNIQUE INDEX users_email ON users (email);
         ALTER TABLE users REPLICA IDENTITY USING INDEX users_email;
         INSERT INTO users VALUES (1, 'a@x', 'A'), (2, 'b@x', 'B');
         CREATE PUBLICATION {publication} FOR TABLE users;"
    ))
    .await;
    let store = Arc::new(Mutex::new(Store::default()));
    let running = start_copied(&db, &publication, &slot, &store, 1).await;
    db.execute(
        "UPDATE users SET email = 'a2@x' WHERE id = 1;
         UPDATE users SET name = 'BB' WHERE id = 2;
         DELETE FROM users WHERE id = 2;",
    )
    .await;
    wait_converged(&db, &store, &["public.users"]).await;
    let updates = lines_with_op(&store, "update");
    assert_eq!(
        updates[0]["old"],
        json!({"email": "a@x"}),
        "key change sends the old index key"
    );
    assert!(
        updates[1].get("old").is_none(),
        "an update keeping the key sends no old key"
    );
    let delete = lines_with_op(&store, "delete").pop().unwrap();
    assert_eq!(delete["old"], json!({"email": "b@x"}));
    running.stop().await.unwrap();
}

#[tokio::test]
async fn replica_identity_nothing_is_refused_when_updates_are_published() {
    let db = fresh_database("identity_nothing").await;
    let publication = db.unique_name("pub");
    let insert_only = db.unique_name("pub_ins");
    let slot = db.unique_name("slot");
    db.execute(&format!(
        "CREATE TABLE audit (id int PRIMARY KEY, what text);
         ALTER TABLE audit REPLICA IDENTITY NOTHING;
         INSERT INTO audit VALUES (1, 'x');
         CREATE PUBLICATION {publication} FOR TABLE audit;
         CREATE PUBLICATION {insert_only} FOR TABLE audit WITH (publish = 'insert');"
    ))
    .await;
    let store = Arc::new(Mutex::new(Store::default()));
    let error = start(&db, &publication, &slot, &store, PipelineAction::Both)
        .handle
        .await
        .unwrap()
        .expect_err("no identity for published updates");
    assert!(error.to_string().contains("public.audit"), "{error}");

    // Publishing only inserts, the same table replicates.
    let running = start(&db, &insert_only, &slot, &store, PipelineAction::Both);
    db.execute("INSERT INTO audit VALUES (2, 'y');").await;
    wait_converged(&db, &store, &["public.audit"]).await;
    running.stop().await.unwrap();
}
