//! Every type of the type matrix through backfill and CDC into DuckDB, and
//! compared with Postgres value for value (see `duckdb_common`). The matrix
//! is the one of `types.rs`, plus a few array types and float corner cases.

use std::time::Duration;

use crate::duckdb_common::*;
use crate::support::fresh_database;

// The type matrix of `types.rs` (kept identical).
const COLUMNS: &[(&str, &str)] = &[
    ("c_bool", "bool"),
    ("c_int2", "int2"),
    ("c_int4", "int4"),
    ("c_int8", "int8"),
    ("c_oid", "oid"),
    ("c_float4", "float4"),
    ("c_float8", "float8"),
    ("c_numeric", "numeric"),
    ("c_numeric_12_2", "numeric(12,2)"),
    ("c_numeric_big", "numeric(50,10)"),
    ("c_text", "text"),
    ("c_varchar", "varchar(10)"),
    ("c_bpchar", "char(5)"),
    ("c_name", "name"),
    ("c_char", "\"char\""),
    ("c_bytea", "bytea"),
    ("c_date", "date"),
    ("c_time", "time"),
    ("c_timetz", "timetz"),
    ("c_ts", "timestamp"),
    ("c_tstz", "timestamptz"),
    ("c_interval", "interval"),
    ("c_uuid", "uuid"),
    ("c_json", "json"),
    ("c_jsonb", "jsonb"),
    ("c_inet", "inet"),
    ("c_cidr", "cidr"),
    ("c_macaddr", "macaddr"),
    ("c_money", "money"),
    ("c_bit", "bit(4)"),
    ("c_varbit", "varbit"),
    ("c_xml", "xml"),
    ("c_int4range", "int4range"),
    ("c_tstzrange", "tstzrange"),
    ("c_int_arr", "int[]"),
    ("c_text_arr", "text[]"),
    ("c_numeric_arr", "numeric(10,2)[]"),
    ("c_tstz_arr", "timestamptz[]"),
    ("c_mood", "mood"),
    ("c_mood_arr", "mood[]"),
    ("c_domain", "posint"),
    ("c_pair", "pair"),
];

const TYPICAL: &str = "(1, true, 12, 1234, 123456789012, 42, 1.5, 2.25, 3.14159265358979323846264338327950288, 1234.56, 1.5,
  'hello', 'vc', 'ab', 'nm', 'x', '\\x0001ff', '2024-02-29', '13:45:10.5', '13:45:10+02', '2024-02-29 13:45:10.123456',
  '2024-02-29 13:45:10.123456+01', '1 year 2 mons 3 days 04:05:06.5', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11',
  '{\"a\": [1, 2]}', '{\"b\": {\"c\": null}}', '192.168.0.1/24', '10.0.0.0/8', '08:00:2b:01:02:03', 12.34, B'1010', B'101',
  '<a>x</a>', '[1,10)', '[2024-01-01 00:00:00+00,2024-02-01 00:00:00+00)', '{1,NULL,3}', '{\"a,b\",\"NULL\",NULL,\"q\\\"uote\"}',
  '{1.50,NULL}', '{\"2024-01-01 00:00:00+00\"}', 'happy', '{sad,happy}', 7, ROW(1, 'x y'))";

const EXTREMES: &str = "(3, false, -32768, 2147483647, -9223372036854775808, 4294967295, 'NaN', '-Infinity', 'NaN',
  -9999999999.99, 1234567890123456789012345678901234567890.0123456789, E'line\\nbreak \"quoted\" \\\\ é 😀', '', '     ',
  '', E'\\\\', '\\x', 'infinity', '24:00:00', '00:00:00-15:59', '-infinity', '4713-01-01 00:00:00+00 BC',
  '-1 year -2 days +03:04:05.678', '00000000-0000-0000-0000-000000000000', '[]', '{}', '::1', '::/0', 'ff:ff:ff:ff:ff:ff',
  -92233720368547758.08, B'0000', B'', '<x/>', 'empty', '(,)', '{}', '{}', '{}', '{infinity}', 'sad', '{}', 2147483647, ROW(NULL, NULL))";

/// More columns, filled by `EXTRA_VALUES` for rows 1 and 3.
const EXTRA_COLUMNS: &[(&str, &str)] = &[
    ("c_uuid_arr", "uuid[]"),
    ("c_jsonb_arr", "jsonb[]"),
    ("c_date_arr", "date[]"),
    ("c_float8_arr", "float8[]"),
    ("c_bytea_arr", "bytea[]"),
    ("c_interval_arr", "interval[]"),
    ("c_numeric_text_arr", "numeric[]"),
];

const EXTRA_VALUES: &str = "c_uuid_arr = '{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11,NULL}',
    c_jsonb_arr = ARRAY['{\"k\": [1, 2.50]}'::jsonb, NULL, '\"s\"'],
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
