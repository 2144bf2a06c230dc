//! Every type of the type matrix through backfill and CDC into DuckDB, and
//! compared with Postgres value for value (see `duckdb_common`). The matrix
//! is the one of `types.rs`, plus a few array types and float corner cases.

use std::time::Duration;

use crate::duckdb_common::*;
use crate::support::fresh_database;

// The wide type matrix of `types.rs`.
use crate::types::{all_columns, create_matrix_tables};

#[tokio::test]
async fn every_type_round_trips_into_duckdb_value_for_value() {
    let db = fresh_database("duck_all_types").await;
    let publication = db.unique_name("pub");
    let slot = db.unique_name("slot");
    let dir = DuckDir::new(&db);
    create_matrix_tables(&db, &publication).await;

    let (running, reader) = start_into(
        &db,
        &publication,
        &slot,
        config(&dir.file("types.duckdb"), &publication, &slot),
    );
    wait_copied(&reader, 2).await;
    let columns = columns(&all_columns());
    let tables: [(&str, &str, &[Col]); 2] = [
        ("all_types", "public.all_types", &columns),
        ("all_types_full", "public.all_types_full", &columns),
    ];
    // The copy (COPY binary).
    wait_duck_converged(&db, &reader, &tables).await;

    // The same values through the change stream (pgoutput text), in
    // inserts, updates (all columns sent again) and deletes matched by the
    // whole old row (tables without key).
    let all: Vec<&str> = all_columns().iter().skip(1).map(|(n, _)| *n).collect();
    let all = all.join(", ");
    db.execute(&format!(
        "INSERT INTO all_types (id, {all}) SELECT id + 100, {all} FROM all_types;
         UPDATE all_types SET c_int4 = c_int4 WHERE id IN (1, 103);
         UPDATE all_types SET c_text = 'changed' WHERE id IN (3, 5);
         INSERT INTO all_types_full SELECT id + 100, {all} FROM all_types_full;
         UPDATE all_types_full SET c_text = 'changed' WHERE id IN (1, 3, 105);
         DELETE FROM all_types_full WHERE id IN (103, 2);"
    ))
    .await;
    wait_duck_converged(&db, &reader, &tables).await;
    let rows = duck_table(&reader, "public.all_types", &columns).len();
    assert_eq!(rows, 10, "rows 1, 2, 3, 5, 6 and their copies");

    drop(reader);
    tokio::time::timeout(Duration::from_secs(60), running.stop())
        .await
        .unwrap()
        .unwrap();
}
