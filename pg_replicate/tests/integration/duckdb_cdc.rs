//! Backfill and CDC into DuckDB: mixed workloads converge to Postgres,
//! truncates and schema changes are applied, and a pipeline killed in the
//! middle of CDC and restarted applies every change exactly once.

use std::time::Duration;

use pg_replicate::sinks::duckdb::{DuckDbMode, DuckDbReader, DuckDbSink};
use pg_replicate::ErrorKind;

use crate::common::{confirmed_flush, wait_slot_inactive};
use crate::duckdb_common::*;
use crate::support::{fresh_database, TestDb};

/// A small deterministic random generator for workloads.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

const ACCOUNTS: &[(&str, &str)] = &[
    ("id", "int4"),
    ("owner", "text"),
    ("balance", "numeric(12,2)"),
    ("doc", "text"),
];
const PAIRS: &[(&str, &str)] = &[("a", "int4"), ("b", "text"), ("v", "int4")];
const LOGS: &[(&str, &str)] = &[("host", "text"), ("level", "int4"), ("msg", "text")];
const USERS: &[(&str, &str)] = &[("id", "int4"), ("email", "text"), ("name", "text")];

/// SQL of a large, poorly compressible text (stored out of line: TOAST).
fn large_text(seed: u64) -> String {
    format!("(SELECT string_agg(md5(g::text || '{seed}'), '') FROM generate_series(1, 300) g)")
}

/// One random transaction over the four tables.
fn random_transaction(rng: &mut Rng, next_id: &mut u64) -> String {
    let mut sql = String::from("BEGIN;");
    for _ in 0..1 + rng.below(12) {
        let x = rng.below(*next_id) + 1;
        let statement = match rng.below(16) {
            0 | 1 => {
                *next_id += 1;
                format!("INSERT INTO accounts VALUES ({}, 'o{x}', {x}.25, 'short');", *next_id)
            }
            2 => format!("UPDATE accounts SET balance = balance + 1 WHERE id % 5 = {};", x % 5),
            3 => {
                *next_id += 1;
                format!("UPDATE accounts SET id = {} WHERE id = {x};", *next_id)
            }
            4 => format!("DELETE FROM accounts WHERE id = {x};"),
            5 => format!(
                "DELETE FROM accounts WHERE id = {x}; INSERT INTO accounts VALUES ({x}, 'reborn', 0, 'r') \
                 ON CONFLICT (id) DO UPDATE SET owner = 'upserted';"
            ),
            6 => format!(
                "UPDATE accounts SET doc = {} WHERE id = {x}; UPDATE accounts SET balance = -1 WHERE id = {x};",
                large_text(x * 7 + rng.below(1000))
            ),
            7 => {
                *next_id += 1;
                format!("UPDATE accounts SET id = {}, owner = 'moved' WHERE id = {x};", *next_id)
            }
            8 => format!("INSERT INTO s2.\"Pairs\" VALUES ({}, 'k{}', {x}) ON CONFLICT DO NOTHING;", x % 10, x % 3),
            9 => format!("UPDATE s2.\"Pairs\" SET b = b || 'x', v = v + 1 WHERE a = {} AND b = 'k{}';", x % 10, x % 3),
            10 => format!("DELETE FROM s2.\"Pairs\" WHERE a = {};", x % 10),
            11 => format!("INSERT INTO logs VALUES ('h{}', {}, 'm'), ('h{}', {}, 'm');", x % 3, x % 2, x % 3, x % 2),
            12 => format!(
                "DELETE FROM logs WHERE ctid = (SELECT ctid FROM logs WHERE host = 'h{}' LIMIT 1);",
                x % 3
            ),
            13 => format!(
                "UPDATE logs SET level = level + 1 WHERE ctid = (SELECT ctid FROM logs WHERE host = 'h{}' LIMIT 1);",
                x % 3
            ),
            14 => format!(
                "INSERT INTO users VALUES ({x}, 'u{x}@x', 'n') ON CONFLICT (id) DO UPDATE SET email = 'v' || users.id || '@x';"
            ),
            _ => format!("UPDATE users SET name = 'm{x}' WHERE id % 4 = {}; DELETE FROM users WHERE id = {};", x % 4, x / 2),
        };
        sql.push_str(&statement);
    }
    sql.push_str("COMMIT;");
    sql
}

/// The slot's confirmed position is not ahead of what the DuckDB file holds.
async fn assert_confirmed_not_ahead(db: &TestDb, slot: &str, reader: &DuckDbReader) {
    let stored = stored_lsn(reader).expect("an applied LSN");
    let confirmed = confirmed_flush(db, slot).await.unwrap();
    assert!(
        confirmed <= stored,
        "confirmed {confirmed} is ahead of stored {stored}"
    );
}

async fn create_workload_tables(db: &TestDb, publication: &str) {
    db.execute(&format!(
        "CREATE TABLE accounts (id int PRIMARY KEY, owner text, balance numeric(12,2), doc text);
         CREATE SCHEMA s2;
         CREATE TABLE s2.\"Pairs\" (a int, b text, v int, PRIMARY KEY (a, b));
         CREATE TABLE logs (host text, level int, msg text);
         ALTER TABLE logs REPLICA IDENTITY FULL;
         CREATE TABLE users (id int PRIMARY KEY, email text NOT NULL, name text);
         CREATE UNIQUE INDEX users_email ON users (email);
         ALTER TABLE users REPLICA IDENTITY USING INDEX users_email;
         INSERT INTO accounts SELECT g, 'o' || g, g, CASE WHEN g % 3 = 0 THEN {large} ELSE 'd' END
           FROM generate_series(1, 60) g;
         INSERT INTO logs SELECT 'h' || (g % 3), g % 2, 'm' FROM generate_series(1, 20) g;
         CREATE PUBLICATION {publication} FOR TABLE accounts, s2.\"Pairs\", logs, users;",
        large = large_text(1),
    ))
    .await;
}

fn workload_tables() -> Vec<(&'static str, &'static str, Vec<Col>)> {
    vec![
        ("accounts", "public.accounts", columns(ACCOUNTS)),
        ("s2.\"Pairs\"", "s2.\"Pairs\"", columns(PAIRS)),
        ("logs", "public.logs", columns(LOGS)),
        ("users", "public.users", columns(USERS)),
    ]
}

async fn wait_workload_converged(db: &TestDb, reader: &DuckDbReader) {
    let tables = workload_tables();
    let refs: Vec<(&str, &str, &[Col])> = tables
        .iter()
        .map(|(p, d, c)| (*p, *d, c.as_slice()))
        .collect();
    wait_duck_converged(db, reader, &refs).await;
}

#[tokio::test]
async fn a_mixed_workload_converges_to_postgres() {
    let db = fresh_database("duck_mixed").await;
    let publication = db.unique_name("pub");
    let slot = db.unique_name("slot");
    let dir = DuckDir::new(&db);
    create_workload_tables(&db, &publication).await;
    let (running, reader) = start_into(
        &db,
        &publication,
        &slot,
        config(&dir.file("mixed.duckdb"), &publication, &slot),
    );
    wait_copied(&reader, 4).await;
    wait_workload_converged(&db, &reader).await;

    let mut rng = Rng(0x5eed_0001);
    let mut next_id = 1000;
    for round in 0..4 {
        for _ in 0..40 {
            db.execute(&random_transaction(&mut rng, &mut next_id))
                .await;
        }
        // One big transaction too: many changes of the same keys in one batch.
        let mut big = String::new();
        for _ in 0..10 {
            big.push_str(
                random_transaction(&mut rng, &mut next_id)
                    .trim_start_matches("BEGIN;")
                    .trim_end_matches("COMMIT;"),
            );
        }
        db.execute(&format!("BEGIN;{big}COMMIT;")).await;
        if round % 2 == 1 {
            wait_workload_converged(&db, &reader).await;
        }
    }
    wait_workload_converged(&db, &reader).await;

    running.stop().await.unwrap();
    assert_confirmed_not_ahead(&db, &slot, &reader).await;
}

#[tokio::test]
async fn truncate_empties_tables_and_is_kept_in_history() {
    let db = fresh_database("duck_truncate").await;
    let publication = db.unique_name("pub");
    let slot = db.unique_name("slot");
    let dir = DuckDir::new(&db);
    db.execute(&format!(
        "CREATE TABLE a (id int PRIMARY KEY, v text);
         CREATE TABLE b (id int PRIMARY KEY, v text);
         INSERT INTO a SELECT g, 'a' FROM generate_series(1, 30) g;
         INSERT INTO b SELECT g, 'b' FROM generate_series(1, 30) g;
         CREATE PUBLICATION {publication} FOR TABLE a, b;"
    ))
    .await;
    let cfg = config(&dir.file("t.duckdb"), &publication, &slot).with_mode(DuckDbMode::Both);
    let (running, reader) = start_into(&db, &publication, &slot, cfg);
    wait_copied(&reader, 2).await;
    db.execute(
        "INSERT INTO a VALUES (100, 'x'); TRUNCATE a, b; INSERT INTO a VALUES (1, 'after');
         BEGIN; INSERT INTO b VALUES (5, 'in'); TRUNCATE b; INSERT INTO b VALUES (6, 'kept'); COMMIT;",
    )
    .await;
    let cols = columns(&[("id", "int4"), ("v", "text")]);
    wait_duck_converged(
        &db,
        &reader,
        &[("a", "public.a", &cols), ("b", "public.b", &cols)],
    )
    .await;
    running.stop().await.unwrap();

    let history: Vec<(String, i64)> = reader
        .connection()
        .prepare(
            "SELECT _pgr_op, count(*) FROM (SELECT _pgr_op FROM public.a__history UNION ALL SELECT _pgr_op FROM public.b__history) \
             GROUP BY ALL ORDER BY ALL",
        )
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<duckdb::Result<_>>()
        .unwrap();
    assert_eq!(
        history,
        vec![
            ("copy".into(), 60),
            ("insert".into(), 4),
            ("truncate".into(), 3)
        ]
    );
}

#[tokio::test]
async fn added_dropped_and_retyped_columns_are_applied() {
    let db = fresh_database("duck_schema_change").await;
    let publication = db.unique_name("pub");
    let slot = db.unique_name("slot");
    let dir = DuckDir::new(&db);
    db.execute(&format!(
        "CREATE TABLE items (id int PRIMARY KEY, name text, qty int);
         INSERT INTO items SELECT g, 'n' || g, g FROM generate_series(1, 20) g;
         CREATE PUBLICATION {publication} FOR TABLE items;"
    ))
    .await;
    let (running, reader) = start_into(
        &db,
        &publication,
        &slot,
        config(&dir.file("s.duckdb"), &publication, &slot),
    );
    wait_copied(&reader, 1).await;

    db.execute(
        "ALTER TABLE items ADD COLUMN price numeric(10,2);
         INSERT INTO items VALUES (21, 'new', 1, 9.99);
         UPDATE items SET price = 1.5 WHERE id <= 3;",
    )
    .await;
    let cols = columns(&[
        ("id", "int4"),
        ("name", "text"),
        ("qty", "int4"),
        ("price", "numeric(10,2)"),
    ]);
    wait_duck_converged(&db, &reader, &[("items", "public.items", &cols)]).await;

    db.execute(
        "ALTER TABLE items DROP COLUMN name;
         ALTER TABLE items ALTER COLUMN qty TYPE bigint;
         UPDATE items SET qty = 5000000000 WHERE id = 1;
         INSERT INTO items VALUES (22, 2, 0.5);",
    )
    .await;
    let cols = columns(&[("id", "int4"), ("qty", "int8"), ("price", "numeric(10,2)")]);
    wait_duck_converged(&db, &reader, &[("items", "public.items", &cols)]).await;
    let types: Vec<String> = reader
        .connection()
        .prepare("SELECT data_type FROM duckdb_columns() WHERE table_name = 'items' ORDER BY column_index")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<duckdb::Result<_>>()
        .unwrap();
    assert_eq!(types, ["INTEGER", "BIGINT", "DECIMAL(10,2)"]);

    // A type DuckDB cannot convert to: the pipeline stops with an error
    // naming the table and column, and stores nothing of that batch.
    let before = stored_lsn(&reader);
    db.execute(
        "ALTER TABLE items ALTER COLUMN qty TYPE date USING DATE '2020-01-01' + (qty % 1000)::int;
         UPDATE items SET qty = DATE '2021-01-01' WHERE id = 2;",
    )
    .await;
    let error = tokio::time::timeout(Duration::from_secs(60), running.handle)
        .await
        .expect("the pipeline stops by itself")
        .unwrap()
        .expect_err("DuckDB cannot cast BIGINT to DATE");
    let text = error.to_string();
    assert!(
        text.contains("public.items") && text.contains("\"qty\""),
        "{text}"
    );
    assert_eq!(error.kind(), ErrorKind::Schema);
    assert_eq!(
        stored_lsn(&reader),
        before,
        "nothing of the failed batch is stored"
    );
}

/// Runs a writer of single-change transactions on `kv`; returns the number
/// of changed rows.
async fn write_kv(db: &TestDb, rng: &mut Rng, next_id: &mut i64, transactions: usize) -> u64 {
    let client = db.client().await;
    let mut changed = 0;
    for _ in 0..transactions {
        let x = rng.below(*next_id as u64) as i64 + 1;
        let sql = match rng.below(4) {
            0 | 1 => {
                *next_id += 1;
                format!("INSERT INTO kv VALUES ({}, 0)", *next_id)
            }
            2 => format!("UPDATE kv SET v = v + 1 WHERE id = {x}"),
            _ => format!("DELETE FROM kv WHERE id = {x}"),
        };
        changed += client.execute(&sql, &[]).await.unwrap();
    }
    changed
}

#[tokio::test]
async fn a_pipeline_killed_during_cdc_resumes_exactly_once() {
    let db = fresh_database("duck_exactly_once").await;
    let publication = db.unique_name("pub");
    let slot = db.unique_name("slot");
    let dir = DuckDir::new(&db);
    let path = dir.file("once.duckdb");
    db.execute(&format!(
        "CREATE TABLE kv (id bigint PRIMARY KEY, v int);
         INSERT INTO kv SELECT g, 0 FROM generate_series(1, 200) g;
         CREATE PUBLICATION {publication} FOR TABLE kv;"
    ))
    .await;
    let cfg = config(&path, &publication, &slot).with_mode(DuckDbMode::Both);
    let reader = DuckDbReader::open(&path).unwrap();
    let mut rng = Rng(0xface_b00c);
    let mut next_id = 200;
    let mut changes = 0;

    for run in 0..4u64 {
        let sink = DuckDbSink::open(cfg.clone()).unwrap();
        let running = start_duck(
            &db,
            &publication,
            &slot,
            sink,
            pg_replicate::pipeline::PipelineAction::Both,
        );
        wait_copied(&reader, 1).await;
        // Changes while it streams, then a kill at a point that varies.
        let writer = write_kv(&db, &mut rng, &mut next_id, 60 + 40 * run as usize);
        let (written, ()) = tokio::join!(
            writer,
            tokio::time::sleep(Duration::from_millis(150 + 170 * run))
        );
        changes += written;
        running.handle.abort();
        let _ = running.handle.await;
        wait_slot_inactive(&db, &slot).await;
        if let (Some(confirmed), Some(stored)) =
            (confirmed_flush(&db, &slot).await, stored_lsn(&reader))
        {
            assert!(
                confirmed <= stored,
                "run {run}: confirmed {confirmed} is ahead of stored {stored}"
            );
        }
        // Changes while nothing runs.
        changes += write_kv(&db, &mut rng, &mut next_id, 30).await;
    }

    let sink = DuckDbSink::open(cfg).unwrap();
    let running = start_duck(
        &db,
        &publication,
        &slot,
        sink,
        pg_replicate::pipeline::PipelineAction::Both,
    );
    let cols = columns(&[("id", "int8"), ("v", "int4")]);
    wait_duck_converged(&db, &reader, &[("kv", "public.kv", &cols)]).await;
    // Every change is in the history exactly once, after one copy.
    let counts = |sql: &str| -> i64 {
        reader
            .connection()
            .query_row(sql, [], |r| r.get(0))
            .unwrap()
    };
    let start = std::time::Instant::now();
    while counts("SELECT count(*) FROM public.kv__history WHERE _pgr_op <> 'copy'") < changes as i64
    {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "history incomplete"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    running.stop().await.unwrap();
    assert_eq!(
        counts("SELECT count(*) FROM public.kv__history WHERE _pgr_op = 'copy'"),
        200,
        "copied once"
    );
    assert_eq!(
        counts("SELECT count(*) FROM public.kv__history WHERE _pgr_op <> 'copy'"),
        changes as i64,
        "no change twice"
    );
    assert_eq!(
        counts("SELECT count(*) FROM (SELECT DISTINCT _pgr_commit_lsn, _pgr_seq FROM public.kv__history WHERE _pgr_op <> 'copy')"),
        changes as i64
    );
    assert_confirmed_not_ahead(&db, &slot, &reader).await;
}

#[tokio::test]
async fn large_and_streamed_transactions_are_applied_whole() {
    let db = fresh_database("duck_large_txn").await;
    let publication = db.unique_name("pub");
    let slot = db.unique_name("slot");
    let dir = DuckDir::new(&db);
    // Transactions beyond 64 kB are streamed by the server before commit.
    db.execute(&format!(
        "ALTER DATABASE {} SET logical_decoding_work_mem = '64kB'",
        db.name()
    ))
    .await;
    create_workload_tables(&db, &publication).await;
    let (running, reader) = start_into(
        &db,
        &publication,
        &slot,
        config(&dir.file("large.duckdb"), &publication, &slot),
    );
    wait_copied(&reader, 4).await;
    db.execute(
        "BEGIN;
         INSERT INTO accounts SELECT g, 'bulk', g, repeat('d', 40) FROM generate_series(1000, 8999) g;
         SAVEPOINT s;
         UPDATE accounts SET owner = 'rolled back' WHERE id % 2 = 0;
         ROLLBACK TO SAVEPOINT s;
         UPDATE accounts SET id = id + 100000 WHERE id BETWEEN 1000 AND 1500;
         DELETE FROM accounts WHERE id BETWEEN 2000 AND 2999;
         INSERT INTO logs SELECT 'bulk', g, 'x' FROM generate_series(1, 3000) g;
         DELETE FROM logs WHERE level < 100;
         COMMIT;
         BEGIN;
         INSERT INTO accounts SELECT g, 'aborted', g, 'a' FROM generate_series(20000, 26000) g;
         ROLLBACK;",
    )
    .await;
    wait_workload_converged(&db, &reader).await;
    running.stop().await.unwrap();
    assert_confirmed_not_ahead(&db, &slot, &reader).await;
}
