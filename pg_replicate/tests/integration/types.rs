//! Every mapped type through backfill (COPY binary) and CDC (pgoutput text):
//! both paths must give the same values, and the values must be exact.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use pg_replicate::pipeline::PipelineAction;
use serde_json::{json, Value};

use crate::common::*;
use crate::memory_sink::Store;
use crate::support::fresh_database;

/// The type matrix: column name and Postgres type (shared with `duckdb_types`).
pub(crate) const COLUMNS: &[(&str, &str)] = &[
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
    ("c_jsonb_arr", "jsonb[]"),
];

/// Row 1: typical values of every column of [`COLUMNS`].
pub(crate) const TYPICAL: &str = "(1, true, 12, 1234, 123456789012, 42, 1.5, 2.25, 3.14159265358979323846264338327950288, 1234.56, 1.5,
  'hello', 'vc', 'ab', 'nm', 'x', '\\x0001ff', '2024-02-29', '13:45:10.5', '13:45:10+02', '2024-02-29 13:45:10.123456',
  '2024-02-29 13:45:10.123456+01', '1 year 2 mons 3 days 04:05:06.5', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11',
  '{\"a\": [1, 2]}', '{\"b\": {\"c\": null}}', '192.168.0.1/24', '10.0.0.0/8', '08:00:2b:01:02:03', 12.34, B'1010', B'101',
  '<a>x</a>', '[1,10)', '[2024-01-01 00:00:00+00,2024-02-01 00:00:00+00)', '{1,NULL,3}', '{\"a,b\",\"NULL\",NULL,\"q\\\"uote\"}',
  '{1.50,NULL}', '{\"2024-01-01 00:00:00+00\"}', 'happy', '{sad,happy}', 7, ROW(1, 'x y'),
  ARRAY['{\"k\": [1, 2.50, \"é\"]}'::jsonb, NULL, '\"s\"'])";

/// Row 3: extreme values of every column of [`COLUMNS`].
pub(crate) const EXTREMES: &str = "(3, false, -32768, 2147483647, -9223372036854775808, 4294967295, 'NaN', '-Infinity', 'NaN',
  -9999999999.99, 1234567890123456789012345678901234567890.0123456789, E'line\\nbreak \"quoted\" \\\\ é 😀', '', '     ',
  '', E'\\\\', '\\x', 'infinity', '24:00:00', '00:00:00-15:59', '-infinity', '4713-01-01 00:00:00+00 BC',
  '-1 year -2 days +03:04:05.678', '00000000-0000-0000-0000-000000000000', '[]', '{}', '::1', '::/0', 'ff:ff:ff:ff:ff:ff',
  -92233720368547758.08, B'0000', B'', '<x/>', 'empty', '(,)', '{}', '{}', '{}', '{infinity}', 'sad', '{}', 2147483647, ROW(NULL, NULL), '{}')";

const HISTORIC: &str = "(4, NULL, 0, 0, 0, 0, '-0', 1e308, '-Infinity', 0.01, -0.0000000001, 'x', 'x', 'x', 'x', 'x', NULL,
  '0044-03-15 BC', '00:00:00', NULL, '1999-12-31 23:59:59.999999', '1970-01-01 00:00:00+00', '-178000000 years', NULL,
  'null', '[1, \"two\", 3.0]', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, '{{1,2},{3,4}}', NULL, NULL, NULL, NULL, NULL, NULL, NULL)";

fn column_list() -> String {
    COLUMNS
        .iter()
        .map(|(name, _)| *name)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The user-defined types of the matrix (`mood`, `posint`, `pair`).
pub(crate) const MATRIX_TYPES: &str = "CREATE TYPE mood AS ENUM ('sad', 'happy');
     CREATE DOMAIN posint AS int CHECK (VALUE > 0);
     CREATE TYPE pair AS (a int, b text);";

/// More columns, filled by `EXTRA_VALUES` for rows 1 and 3.
pub(crate) const EXTRA_COLUMNS: &[(&str, &str)] = &[
    ("c_uuid_arr", "uuid[]"),
    ("c_date_arr", "date[]"),
    ("c_float8_arr", "float8[]"),
    ("c_bytea_arr", "bytea[]"),
    ("c_interval_arr", "interval[]"),
    ("c_numeric_text_arr", "numeric[]"),
];

pub(crate) const EXTRA_VALUES: &str = "c_uuid_arr = '{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11,NULL}',
    c_date_arr = '{2024-02-29,infinity,-infinity,0044-03-15 BC,NULL}',
    c_float8_arr = '{1.5,-0,NaN,-Infinity,5e-324,NULL}',
    c_bytea_arr = ARRAY['\\x00ff'::bytea, ''::bytea, NULL],
    c_interval_arr = '{\"1 mon -2 days 00:00:00.000001\",NULL}',
    c_numeric_text_arr = '{NaN,1e-30,-Infinity,NULL}'";

pub(crate) fn all_columns() -> Vec<(&'static str, &'static str)> {
    let mut columns = vec![("id", "int4")];
    columns.extend(COLUMNS.iter().chain(EXTRA_COLUMNS).copied());
    columns
}

/// The wide matrix of the sink tests: tables `all_types` (keyed) and
/// `all_types_full` (`REPLICA IDENTITY FULL`, no key, rows 1 and 3 twice)
/// with the columns of [`all_columns`], rows 1 ([`TYPICAL`]), 2 (NULLs),
/// 3 ([`EXTREMES`]), 5 and 6 (float, numeric and time corner cases), and
/// publication `publication` of both.
pub(crate) async fn create_matrix_tables(db: &crate::support::TestDb, publication: &str) {
    let definitions: Vec<String> = COLUMNS
        .iter()
        .chain(EXTRA_COLUMNS)
        .map(|(n, t)| format!("{n} {t}"))
        .collect();
    let list: Vec<&str> = COLUMNS.iter().map(|(n, _)| *n).collect();
    let list = list.join(", ");
    db.execute(&format!(
        "{MATRIX_TYPES}
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
}

pub(crate) async fn set_up(db: &crate::support::TestDb, publication: &str) {
    let columns: Vec<String> = COLUMNS.iter().map(|(n, t)| format!("{n} {t}")).collect();
    db.execute(&format!(
        "{MATRIX_TYPES}
         CREATE TABLE all_types (id int PRIMARY KEY, {});
         CREATE PUBLICATION {publication} FOR TABLE all_types;",
        columns.join(", ")
    ))
    .await;
}

#[tokio::test]
async fn every_type_is_exact_and_identical_in_copy_and_stream() {
    let db = fresh_database("all_types").await;
    let publication = db.unique_name("pub");
    let slot = db.unique_name("slot");
    set_up(&db, &publication).await;
    let list = column_list();
    db.execute(&format!(
        "INSERT INTO all_types (id, {list}) VALUES {TYPICAL}, {EXTREMES};
         INSERT INTO all_types (id) VALUES (2);"
    ))
    .await;

    let store = Arc::new(Mutex::new(Store::default()));
    let running = start_copied(&db, &publication, &slot, &store, 1).await;
    // The same values again, now through the change stream.
    db.execute(&format!(
        "INSERT INTO all_types (id, {list}) SELECT id + 100, {list} FROM all_types;"
    ))
    .await;
    wait_until("the streamed rows", Duration::from_secs(30), || {
        lines_with_op(&store, "insert").len() == 3
    })
    .await;
    running.stop().await.unwrap();

    let by_id = |op: &str, id: u64| -> Value {
        let mut row = lines_with_op(&store, op)
            .into_iter()
            .find(|l| l["row"]["id"] == id)
            .unwrap_or_else(|| panic!("{op} of row {id}"))["row"]
            .clone();
        row.as_object_mut().unwrap().remove("id");
        row
    };
    for id in [1, 2, 3] {
        let copied = by_id("copy", id);
        let streamed = by_id("insert", id + 100);
        for (name, _) in COLUMNS {
            assert_eq!(
                copied[name], streamed[name],
                "column {name} of row {id}: copy vs stream"
            );
        }
    }

    let typical = by_id("copy", 1);
    let expected = json!({
        "c_bool": true, "c_int2": 12, "c_int4": 1234, "c_int8": 123456789012i64, "c_oid": 42,
        "c_float4": 1.5, "c_float8": 2.25,
        "c_numeric": "3.14159265358979323846264338327950288",
        "c_numeric_12_2": 1234.56, "c_numeric_big": 1.5,
        "c_text": "hello", "c_varchar": "vc", "c_bpchar": "ab   ", "c_name": "nm", "c_char": "x",
        "c_bytea": "\\x0001ff", "c_date": "2024-02-29", "c_time": "13:45:10.5", "c_timetz": "13:45:10+02",
        "c_ts": "2024-02-29T13:45:10.123456", "c_tstz": "2024-02-29T12:45:10.123456Z",
        "c_interval": "P1Y2M3DT4H5M6.5S", "c_uuid": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
        "c_json": {"a": [1, 2]}, "c_jsonb": {"b": {"c": null}},
        "c_inet": "192.168.0.1/24", "c_cidr": "10.0.0.0/8", "c_macaddr": "08:00:2b:01:02:03",
        "c_money": "$12.34", "c_bit": "1010", "c_varbit": "101", "c_xml": "<a>x</a>",
        "c_int4range": "[1,10)", "c_tstzrange": "[\"2024-01-01 00:00:00+00\",\"2024-02-01 00:00:00+00\")",
        "c_int_arr": [1, null, 3], "c_text_arr": ["a,b", "NULL", null, "q\"uote"],
        "c_numeric_arr": [1.5, null], "c_tstz_arr": ["2024-01-01T00:00:00Z"],
        "c_mood": "happy", "c_mood_arr": ["sad", "happy"], "c_domain": "7", "c_pair": "(1,\"x y\")",
        "c_jsonb_arr": ["{\"k\": [1, 2.50, \"é\"]}", null, "\"s\""]
    });
    for (name, _) in COLUMNS {
        assert_eq!(typical[name], expected[name], "typical value of {name}");
    }

    let nulls = by_id("copy", 2);
    for (name, _) in COLUMNS {
        assert_eq!(nulls[name], Value::Null, "NULL of {name}");
    }

    let extremes = by_id("copy", 3);
    let expected = json!({
        "c_int2": -32768, "c_int4": 2147483647, "c_int8": i64::MIN, "c_oid": 4294967295u32,
        "c_float4": "NaN", "c_float8": "-Infinity", "c_numeric": "NaN",
        "c_numeric_12_2": -9999999999.99,
        "c_numeric_big": "1234567890123456789012345678901234567890.0123456789",
        "c_text": "line\nbreak \"quoted\" \\ é 😀", "c_varchar": "", "c_bpchar": "     ", "c_char": "\\",
        "c_bytea": "\\x", "c_date": "infinity", "c_time": "24:00:00", "c_ts": "-infinity",
        "c_tstz": "-4712-01-01T00:00:00Z", "c_interval": "P-1Y-2DT3H4M5.678S",
        "c_json": [], "c_jsonb": {}, "c_int_arr": [], "c_text_arr": [], "c_numeric_arr": [],
        "c_tstz_arr": ["infinity"], "c_mood_arr": [], "c_domain": "2147483647", "c_pair": "(,)",
        "c_money": "-$92,233,720,368,547,758.08", "c_bit": "0000", "c_varbit": "", "c_int4range": "empty",
        "c_jsonb_arr": []
    });
    for (name, value) in expected.as_object().unwrap() {
        assert_eq!(&extremes[name], value, "extreme value of {name}");
    }
}

#[tokio::test]
async fn multidimensional_arrays_are_refused_with_a_clear_error() {
    let db = fresh_database("multidim_array").await;
    let publication = db.unique_name("pub");
    let slot = db.unique_name("slot");
    set_up(&db, &publication).await;
    db.execute(&format!(
        "INSERT INTO all_types (id, {}) VALUES {HISTORIC};",
        column_list()
    ))
    .await;
    let store = Arc::new(Mutex::new(Store::default()));
    let running = start(&db, &publication, &slot, &store, PipelineAction::Both);
    let error = tokio::time::timeout(Duration::from_secs(30), running.handle)
        .await
        .unwrap()
        .unwrap()
        .expect_err("a 2-D array cannot become a List");
    let text = error.to_string();
    for needed in [
        "all_types",
        "c_text_arr",
        "2-dimensional",
        "ArrayForm::Exact",
    ] {
        assert!(text.contains(needed), "{needed:?} missing from: {text}");
    }
    assert!(
        store.lock().unwrap().state.copied_tables.is_empty(),
        "the table is not marked copied"
    );
}
