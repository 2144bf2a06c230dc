//! Transforms through DuckDB: a filter, a left-out column, a hashed column,
//! a rename and a computed column, in the backfill and through inserts,
//! updates entering and leaving the filter, unchanged TOAST values, key
//! changes, deletes, truncates and an added column.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{ArrayRef, AsArray, Int64Array};
use arrow::datatypes::Int32Type;
use pg_replicate::pipeline::{DataPipeline, PipelineAction};
use pg_replicate::sinks::duckdb::{DuckDbReader, DuckDbSink};
use pg_replicate::sources::postgres::PostgresSource;
use pg_replicate::transform::{
    ComputedColumn, Mask, Predicate, TableTransform, TransformSink, Transforms,
};
use pg_replicate::types::{PgType, TableName};
use pg_replicate::ErrorKind;

use crate::common::{test_batch_config, Running};
use crate::duckdb_common::{config, DuckDir};
use crate::support::TestDb;

/// Per table: what DuckDB should hold, computed by Postgres from the
/// source table, and what DuckDB holds, with the number of columns.
const TABLES: [(&str, &str, usize); 2] = [
    (
        "SELECT id::text, encode(sha256(convert_to(email, 'UTF8')), 'hex'), status, score::text, \
         note, (score::bigint * 2)::text FROM users WHERE status = 'active'",
        "SELECT id::VARCHAR, email, state, score::VARCHAR, note, score_x2::VARCHAR \
         FROM public.users",
        6,
    ),
    (
        "SELECT id::text, encode(sha256(convert_to(body, 'UTF8')), 'hex'), title, \
         octet_length(body)::text FROM docs",
        "SELECT id::VARCHAR, body, title, body_bytes::VARCHAR FROM public.docs",
        4,
    ),
];

type Rows = Vec<Vec<Option<String>>>;

async fn expected(db: &TestDb, sql: &str, width: usize) -> Rows {
    let mut rows: Rows = db
        .client()
        .await
        .query(sql, &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (0..width).map(|i| r.get::<_, Option<String>>(i)).collect())
        .collect();
    rows.sort();
    rows
}

fn actual(reader: &DuckDbReader, sql: &str, width: usize) -> Result<Rows, String> {
    let mut statement = reader
        .connection()
        .prepare(sql)
        .map_err(|e| e.to_string())?;
    let mut rows: Rows = statement
        .query_map([], |r| {
            (0..width)
                .map(|i| r.get::<_, Option<String>>(i))
                .collect::<Result<Vec<_>, _>>()
        })
        .map_err(|e| e.to_string())?
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    rows.sort();
    Ok(rows)
}

/// Rows with values cut to 20 characters, for failure messages.
fn short(rows: &Rows) -> Vec<Vec<Option<&str>>> {
    rows.iter()
        .map(|r| {
            r.iter()
                .map(|v| v.as_deref().map(|s| &s[..s.len().min(20)]))
                .collect()
        })
        .collect()
}

async fn converged(db: &TestDb, reader: &DuckDbReader, after: &str) {
    for (pg, duck, width) in TABLES {
        let start = Instant::now();
        loop {
            let want = expected(db, pg, width).await;
            let got = actual(reader, duck, width);
            if got.as_ref() == Ok(&want) {
                break;
            }
            if start.elapsed() > Duration::from_secs(60) {
                panic!(
                    "DuckDB did not match the transformed table within 60 s after {after}\n\
                     {duck}\nexpected {:?}\ngot {:?}",
                    short(&want),
                    got.as_ref().map(short)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn score_x2() -> ComputedColumn {
    let bigint = PgType {
        oid: 20,
        modifier: -1,
        name: "bigint".to_owned(),
        element_oid: None,
    };
    ComputedColumn::new("score_x2", bigint, ["score"], |batch| {
        let score = batch
            .column_by_name("score")
            .expect("the score column")
            .as_primitive::<Int32Type>();
        let doubled: Int64Array = score.iter().map(|v| v.map(|v| i64::from(v) * 2)).collect();
        Ok(Arc::new(doubled) as ArrayRef)
    })
}

fn body_bytes() -> ComputedColumn {
    let integer = PgType {
        oid: 23,
        modifier: -1,
        name: "integer".to_owned(),
        element_oid: None,
    };
    ComputedColumn::new("body_bytes", integer, ["body"], |batch| {
        let body = batch.column_by_name("body").expect("the body column");
        arrow::compute::kernels::length::length(body)
            .map_err(|e| pg_replicate::Error::with_source(ErrorKind::Data, "body_bytes", e))
    })
}

fn transforms() -> Transforms {
    Transforms::new()
        // No filter: updates that leave `body` out keep its stored hash and
        // its stored length.
        .table(
            TableName::new("public", "docs"),
            TableTransform::new()
                .mask("body", Mask::Hash)
                .computed(body_bytes()),
        )
        .table(
            TableName::new("public", "users"),
            TableTransform::new()
                .filter(Predicate::eq("status", "active"))
                .select(["id", "email", "status", "score", "note"])
                .mask("email", Mask::Hash)
                .rename("status", "state")
                .computed(score_x2()),
        )
}

fn start(db: &TestDb, publication: &str, slot: &str, sink: TransformSink<DuckDbSink>) -> Running {
    let cancel = tokio_util::sync::CancellationToken::new();
    let mut pipeline = DataPipeline::new(
        PostgresSource::new(db.config(), publication, slot),
        sink,
        PipelineAction::Both,
    )
    .with_batch_config(test_batch_config())
    .with_cancellation(cancel.clone());
    let handle = tokio::spawn(async move { pipeline.start().await });
    Running { handle, cancel }
}

#[tokio::test]
async fn filtered_masked_and_computed_columns_match_in_backfill_and_changes() {
    let db = crate::support::fresh_database("transform").await;
    let publication = db.unique_name("pub");
    let slot = db.unique_name("slot");
    // note: values of about 3 kB that do not compress, so Postgres keeps
    // them out of line and leaves them out of updates that do not touch
    // them (unchanged TOAST).
    db.execute(&format!(
        "CREATE TABLE users (id int PRIMARY KEY, email text, status text, score int, note text,
                             secret text);
         INSERT INTO users
         SELECT g, 'user' || g || '@example.com',
                CASE WHEN g % 3 = 0 THEN 'inactive' ELSE 'active' END, g * 10,
                (SELECT string_agg(md5(g::text || i::text), '') FROM generate_series(1, 100) i),
                'secret ' || g
         FROM generate_series(1, 30) g;
         -- A filter needs the old rows of updates to complete rows entering it.
         ALTER TABLE users REPLICA IDENTITY FULL;
         CREATE TABLE docs (id int PRIMARY KEY, body text, title text);
         INSERT INTO docs
         SELECT g, (SELECT string_agg(md5(g::text || i::text), '') FROM generate_series(1, 100) i),
                'title ' || g
         FROM generate_series(1, 10) g;
         CREATE PUBLICATION {publication} FOR TABLE users, docs;"
    ))
    .await;
    let dir = DuckDir::new(&db);
    let sink = DuckDbSink::open(config(&dir.file("t.duckdb"), &publication, &slot)).unwrap();
    let reader = sink.reader().unwrap();
    let running = start(
        &db,
        &publication,
        &slot,
        TransformSink::new(sink, transforms()),
    );

    converged(&db, &reader, "the backfill").await;
    // The sink got the transformed schema: no `secret`, `status` renamed.
    let columns: Vec<String> = reader
        .connection()
        .prepare(
            "SELECT column_name FROM information_schema.columns \
             WHERE table_schema = 'public' AND table_name = 'users' ORDER BY ordinal_position",
        )
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(
        columns,
        ["id", "email", "state", "score", "note", "score_x2"]
    );

    let steps = [
        ("inserts", "INSERT INTO users VALUES (100, 'new@example.com', 'active', 5, 'n', 's'),
                                          (101, 'off@example.com', 'inactive', 6, 'n', 's')"),
        ("an update entering the filter", "UPDATE users SET status = 'active' WHERE id = 3"),
        ("an update leaving the filter", "UPDATE users SET status = 'inactive' WHERE id IN (1, 100)"),
        ("updates keeping the TOAST value", "UPDATE users SET score = score + 1 WHERE id IN (2, 4, 3);
                                             UPDATE docs SET title = 'retitled' WHERE id <= 5"),
        ("an update of the TOAST value", "UPDATE docs SET body = 'short now' WHERE id = 2"),
        ("a key change", "UPDATE users SET id = 200 WHERE id = 5"),
        ("deletes", "DELETE FROM users WHERE id IN (7, 9)"),
        ("an added column", "ALTER TABLE users ADD COLUMN extra int;
                             INSERT INTO users VALUES (300, 'x@example.com', 'active', 1, 'n', 's', 1)"),
        ("a truncate", "BEGIN; TRUNCATE users;
                        INSERT INTO users VALUES (1, 'a@example.com', 'active', 1, 'n', 's', 0),
                                                 (2, 'b@example.com', 'inactive', 2, 'n', 's', 0);
                        COMMIT"),
    ];
    for (what, sql) in steps {
        db.execute(sql).await;
        converged(&db, &reader, what).await;
    }
    running.stop().await.expect("the pipeline stops cleanly");
}

#[tokio::test]
async fn a_transform_that_does_not_fit_the_table_names_the_column() {
    let db = crate::support::fresh_database("transform_bad").await;
    let publication = db.unique_name("pub");
    let slot = db.unique_name("slot");
    db.execute(&format!(
        "CREATE TABLE users (id int PRIMARY KEY, email text);
         CREATE PUBLICATION {publication} FOR TABLE users;"
    ))
    .await;
    let dir = DuckDir::new(&db);
    for (transform, expected) in [
        (TableTransform::new().mask("phone", Mask::Null), "`phone`"),
        (
            TableTransform::new().mask("id", Mask::Hash),
            "key column `id`",
        ),
        (
            TableTransform::new().filter(Predicate::eq("id", "not a number")),
            "\"not a number\"",
        ),
        (
            TableTransform::new().filter(Predicate::eq("id", "1")),
            "REPLICA IDENTITY FULL",
        ),
    ] {
        let sink = DuckDbSink::open(config(
            &dir.file(&format!("{}.duckdb", expected.len())),
            &publication,
            &slot,
        ))
        .unwrap();
        let transforms = Transforms::new().table(TableName::new("public", "users"), transform);
        let result = tokio::time::timeout(
            Duration::from_secs(60),
            DataPipeline::new(
                PostgresSource::new(db.config(), &publication, &slot),
                TransformSink::new(sink, transforms),
                PipelineAction::Both,
            )
            .start(),
        )
        .await
        .expect("the pipeline ended within 60 s");
        let error = result.expect_err("a transform that does not fit fails");
        assert_eq!(error.kind(), ErrorKind::Config, "{error}");
        assert!(error.to_string().contains(expected), "{error}");
        assert!(error.to_string().contains("public.users"), "{error}");
    }
}
