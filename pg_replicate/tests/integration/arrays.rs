//! Arrays of any shape (dimensions, lower bounds, NULL elements) through
//! backfill and CDC in their exact form, compared value for value with what
//! Postgres holds; and the plain-list form's refusal of what it would lose.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pg_replicate::pipeline::PipelineAction;
use pg_replicate::sources::postgres::PostgresSource;
use pg_replicate::types::ArrayForm;
use serde_json::Value;

use crate::common::*;
use crate::memory_sink::{MemorySink, Store};
use crate::support::{fresh_database, TestDb};

/// Array columns, and how Postgres renders one element `e` as JSON the way
/// the stdout sink does and the way DuckDB does (unconstrained numeric is
/// exact text; jsonb is text on stdout, JSON in DuckDB).
const COLUMNS: &[(&str, &str, &str, &str)] = &[
    ("a", "int[]", "e", "e"),
    ("t", "text[]", "e", "e"),
    ("n", "numeric[]", "e::text", "e::text"),
    ("j", "jsonb[]", "e::text", "e"),
];

/// Which sink's element rendering [`pg_exact_rows`] follows.
#[derive(Clone, Copy)]
enum Rendering {
    Stdout,
    #[cfg(feature = "duckdb")]
    DuckDb,
}

/// 1-, 2- and 3-dimensional values mixed in each column, NULL elements,
/// empty and NULL arrays, lower bounds other than 1.
const ROWS: &str = r#"
    (1, '{1,NULL,3}', '{"a,b",NULL}', '{1.50}', '{"{\"k\": [1, 2]}",NULL}'),
    (2, '{{1,2},{3,4}}', '{{x,y}}', '{{NaN,-0.0},{NULL,1e-20}}', '{{1,"\"s\""},{null,"[]"}}'),
    (3, '{{{1,NULL},{3,4}},{{5,6},{7,8}}}', '{{{"{q}"}}}', '{{{2}}}', '{{{true}}}'),
    (4, '{}', '{}', '{}', '{}'),
    (5, NULL, NULL, NULL, NULL),
    (6, '[0:1]={1,2}', '[-2:-1][5:5]={{a},{b}}', '[2:2]={3}', '[0:0]={2.50}'),
    (7, '[3:4][0:1]={{1,2},{3,4}}', '{"NULL",NULL}', '[1:1][1:1][7:8]={{{4,NULL}}}', '{}')"#;

async fn set_up(db: &TestDb, publication: &str) {
    let definitions: Vec<String> = COLUMNS
        .iter()
        .map(|(n, t, _, _)| format!("{n} {t}"))
        .collect();
    db.execute(&format!(
        "CREATE TABLE shapes (id int PRIMARY KEY, {});
         INSERT INTO shapes VALUES {ROWS};
         CREATE PUBLICATION {publication} FOR TABLE shapes;",
        definitions.join(", ")
    ))
    .await;
}

/// Changes made while streaming: the same values again, and rows whose
/// shape changes.
const STREAMED: &str = "INSERT INTO shapes SELECT id + 100, a, t, n, j FROM shapes;
    UPDATE shapes SET a = '{{9}}', t = '[5:5]={z}', n = NULL WHERE id = 1;
    UPDATE shapes SET a = '{1}', t = '{{{p,q}}}', n = '{{1},{2}}' WHERE id = 5;
    UPDATE shapes SET a = NULL, j = '[2:2][2:3]={{1,2}}' WHERE id = 7;";

/// Each row of `shapes` as `{id, column: exact JSON}`, keyed by id, as
/// Postgres computes it: dimensions and lower bounds from `array_length`
/// and `array_lower`, elements from `unnest` (row-major order).
async fn pg_exact_rows(db: &TestDb, rendering: Rendering) -> Vec<Value> {
    let exprs: Vec<String> = COLUMNS
        .iter()
        .map(|column| {
            let c = column.0;
            let e = match rendering {
                Rendering::Stdout => column.2,
                #[cfg(feature = "duckdb")]
                Rendering::DuckDb => column.3,
            };
            format!(
                "'{c}', CASE WHEN {c} IS NULL THEN NULL ELSE json_build_object(
                   'dims', (SELECT COALESCE(json_agg(array_length({c}, d) ORDER BY d), '[]')
                            FROM generate_series(1, array_ndims({c})) d),
                   'lower_bounds', (SELECT COALESCE(json_agg(array_lower({c}, d) ORDER BY d), '[]')
                            FROM generate_series(1, array_ndims({c})) d),
                   'elements', (SELECT COALESCE(json_agg({e} ORDER BY o), '[]')
                            FROM unnest({c}) WITH ORDINALITY u(e, o))) END"
            )
        })
        .collect();
    let client = db.client().await;
    let rows = client
        .query(
            &format!(
                "SELECT json_build_object('id', id, {})::text FROM shapes ORDER BY id",
                exprs.join(", ")
            ),
            &[],
        )
        .await
        .expect("read the arrays from Postgres");
    rows.iter()
        .map(|r| serde_json::from_str(r.get::<_, &str>(0)).expect("Postgres JSON"))
        .collect()
}

/// Waits until `actual` gives the rows Postgres has; panics with both after
/// 60 s.
async fn wait_equal(
    db: &TestDb,
    rendering: Rendering,
    what: &str,
    mut actual: impl FnMut() -> Vec<Value>,
) {
    let start = Instant::now();
    loop {
        let expected = pg_exact_rows(db, rendering).await;
        let got = actual();
        if got == expected {
            return;
        }
        if start.elapsed() > Duration::from_secs(60) {
            panic!(
                "{what} did not reach Postgres' arrays in 60 s\nPostgres: {expected:#?}\n{what}: {got:#?}"
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn exact_source(db: &TestDb, publication: &str, slot: &str) -> PostgresSource {
    PostgresSource::new(db.config(), publication, slot).with_array_form(ArrayForm::Exact)
}

#[tokio::test]
async fn arrays_of_any_shape_are_exact_through_copy_and_stream() {
    let db = fresh_database("exact_arrays").await;
    let publication = db.unique_name("pub");
    let slot = db.unique_name("slot");
    set_up(&db, &publication).await;

    let store = Arc::new(Mutex::new(Store::default()));
    let running = start_source(
        exact_source(&db, &publication, &slot),
        MemorySink::new(store.clone()),
        PipelineAction::Both,
    );
    let rows = || {
        let mut rows = store.lock().unwrap().rows("public.shapes");
        rows.sort_by_key(|r| r["id"].as_i64());
        rows
    };
    wait_equal(&db, Rendering::Stdout, "the copy", rows).await;
    db.execute(STREAMED).await;
    wait_equal(&db, Rendering::Stdout, "the stream", rows).await;
    running.stop().await.expect("the pipeline stops cleanly");

    // The copy and the stream carried row 2 (COPY binary) and row 102
    // (pgoutput text) identically.
    let line = |op: &str, id: i64| {
        lines_with_op(&store, op)
            .into_iter()
            .find(|l| l["row"]["id"] == id)
            .unwrap_or_else(|| panic!("{op} line of row {id}"))["row"]
            .clone()
    };
    for id in 1..=7 {
        let (copied, streamed) = (line("copy", id), line("insert", id + 100));
        for (column, _, _, _) in COLUMNS {
            assert_eq!(copied[column], streamed[column], "{column} of row {id}");
        }
    }
}

#[cfg(feature = "duckdb")]
#[tokio::test]
async fn arrays_of_any_shape_are_exact_in_duckdb() {
    use crate::duckdb_common::{config, wait_copied, DuckDir};
    use pg_replicate::sinks::duckdb::DuckDbSink;

    let db = fresh_database("duck_exact_arrays").await;
    let publication = db.unique_name("pub");
    let slot = db.unique_name("slot");
    set_up(&db, &publication).await;
    let dir = DuckDir::new(&db);
    let sink = DuckDbSink::open(config(&dir.file("arrays.duckdb"), &publication, &slot))
        .expect("open the DuckDB file");
    let reader = sink.reader().expect("a reader of the DuckDB file");
    let running = start_source(
        exact_source(&db, &publication, &slot),
        sink,
        PipelineAction::Both,
    );
    wait_copied(&reader, 1).await;

    let types: Vec<(String, String)> = reader
        .connection()
        .prepare(
            "SELECT column_name, data_type FROM duckdb_columns() \
             WHERE table_name = 'shapes' AND column_name <> 'id' ORDER BY column_index",
        )
        .and_then(|mut s| {
            s.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<duckdb::Result<_>>()
        })
        .expect("read the DuckDB column types");
    assert_eq!(
        types,
        [
            (
                "a",
                "STRUCT(dims INTEGER[], lower_bounds INTEGER[], elements INTEGER[])"
            ),
            (
                "t",
                "STRUCT(dims INTEGER[], lower_bounds INTEGER[], elements VARCHAR[])"
            ),
            (
                "n",
                "STRUCT(dims INTEGER[], lower_bounds INTEGER[], elements VARCHAR[])"
            ),
            (
                "j",
                "STRUCT(dims INTEGER[], lower_bounds INTEGER[], elements JSON[])"
            ),
        ]
        .map(|(c, t)| (c.to_owned(), t.to_owned()))
    );

    let rows = || {
        let exprs: Vec<String> = COLUMNS
            .iter()
            .map(|(c, _, _, _)| format!("'{c}', {c}"))
            .collect();
        let sql = format!(
            "SELECT json_object('id', id, {})::VARCHAR FROM public.shapes ORDER BY id",
            exprs.join(", ")
        );
        let texts: Vec<String> = reader
            .connection()
            .prepare(&sql)
            .and_then(|mut s| {
                s.query_map([], |r| r.get(0))?
                    .collect::<duckdb::Result<_>>()
            })
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        texts
            .iter()
            .map(|t| serde_json::from_str(t).expect("DuckDB JSON"))
            .collect()
    };
    wait_equal(&db, Rendering::DuckDb, "DuckDB after the copy", rows).await;
    db.execute(STREAMED).await;
    wait_equal(&db, Rendering::DuckDb, "DuckDB after the stream", rows).await;
    running.stop().await.expect("the pipeline stops cleanly");
}

#[tokio::test]
async fn plain_lists_refuse_a_streamed_lower_bound_naming_the_column() {
    let db = fresh_database("list_lower_bound").await;
    let publication = db.unique_name("pub");
    let slot = db.unique_name("slot");
    db.execute(&format!(
        "CREATE TABLE plain (id int PRIMARY KEY, tags text[]);
         INSERT INTO plain VALUES (1, '{{a,b}}');
         CREATE PUBLICATION {publication} FOR TABLE plain;"
    ))
    .await;
    let store = Arc::new(Mutex::new(Store::default()));
    let running = start_copied(&db, &publication, &slot, &store, 1).await;
    db.execute("INSERT INTO plain VALUES (2, '[0:1]={c,d}')")
        .await;
    let error = tokio::time::timeout(Duration::from_secs(30), running.handle)
        .await
        .expect("the pipeline stops on the value within 30 s")
        .expect("the pipeline task does not panic")
        .expect_err("a lower bound of 0 cannot be a plain list");
    let text = error.to_string();
    for needed in ["plain", "tags", "lower bound", "ArrayForm::Exact"] {
        assert!(text.contains(needed), "{needed:?} missing from: {text}");
    }
    // The slot is not confirmed past the refused change.
    let stored = store.lock().unwrap().rows("public.plain");
    assert_eq!(stored.len(), 1, "only the copied row is stored");
}
