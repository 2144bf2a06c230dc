//! Every type of the type matrix through backfill and CDC into DuckDB, and
//! compared with Postgres value for value (see `duckdb_common`). The matrix
//! is the one of `types.rs`, plus a few array types and float corner cases.

use std::time::Duration;

use crate::duckdb_common::*;
use crate::support::fresh_database;

// The type matrix of `types.rs`.
use crate::types::{COLUMNS, EXTREMES, TYPICAL};

/// More columns, filled by `EXTRA_VALUES` for rows 1 and 3.
const EXTRA_COLUMNS: &[(&str, &str)] = &[
    ("c_uuid_arr", "uuid[]"),
    ("c_date_arr", "date[]"),
    ("c_float8_arr", "float8[]"),
    ("c_bytea_arr", "bytea[]"),
    ("c_interval_arr", "interval[]"),
    ("c_numeric_text_arr", "numeric[]"),
];

const EXTRA_VALUES: &str = "c_uuid_arr = '{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11,NULL}',
    c_date_arr = '{2024-02-29,infinity,-infinity,0044-03-15 BC,NULL}',
    c_float8_arr = '{1.5,-0,NaN,-Infinity,5e-324,NULL}',
    c_bytea_arr = ARRAY['\\x00ff'::bytea, ''::bytea, NULL],
    c_interval_arr = '{\"1 mon -2 days 00:00:00.000001\",NULL}',
    c_numeric_text_arr = '{NaN,1e-30,-Infinity,NULL}'";

fn all_columns() -> Vec<(&'static str, &'static str)> {
    let mut columns = vec![("id", "int4")];
    columns.extend(COLUMNS.iter().chain(EXTRA_COLUMNS).copied());
    columns
}

#[tokio::test]
async fn every_type_round_trips_into_duckdb_value_for_value() {
    let db = fresh_database("duck_all_types").await;
    let publication = db.unique_name("pub");
    let slot = db.unique_name("slot");
    let dir = DuckDir::new(&db);
    let definitions: Vec<String> = COLUMNS
        .iter()
        .chain(EXTRA_COLUMNS)
        .map(|(n, t)| format!("{n} {t}"))
        .collect();
    let list: Vec<&str> = COLUMNS.iter().map(|(n, _)| *n).collect();
    let list = list.join(", ");
    db.execute(&format!(
        "CREATE TYPE mood AS ENUM ('sad', 'happy');
         CREATE DOMAIN posint AS int CHECK (VALUE > 0);
         CREATE TYPE pair AS (a int, b text);
         CREATE TABLE all_types (id int PRIMARY KEY, {defs});
         CREATE TABLE all_types_full (id int, {defs});
         ALTER TABLE all_types_full REPLICA IDENTITY FULL;
         INSERT INTO all_types (id, {list}) VALUES {TYPICAL}, {EXTREMES};
         INSERT INTO all_types (id) VALUES (2);
         UPDATE all_types SET {EXTRA_VALUES} WHERE id IN (1, 3);
         INSERT INTO all_types (id, c_float4, c_float8, c_numeric, c_numeric_12_2, c_interval, c_time, c_ts, c_tstz)
           VALUES (5, '-0', '-0', '-0.000', '0.01', '-178000000 years', '00:00:00.000001',
                   '294247-01-10 04:00:54.775806', '4714-11-24 00:00:00+00 BC'),
                  (6, '1e-45', '5e-324', '1e-1000', '-0.00', '1 day -00:00:00.000001', '23:59:59.999999',
                   '1970-01-01 00:00:00', '1999-12-31 23:59:59.999999+00');
         INSERT INTO all_types_full SELECT * FROM all_types;
         INSERT INTO all_types_full SELECT * FROM all_types WHERE id IN (1, 3);
         CREATE PUBLICATION {publication} FOR TABLE all_types, all_types_full;",
        defs = definitions.join(", "),
    ))
    .await;

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
