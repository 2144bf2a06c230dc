//! The Snowflake sink against the real `fakesnow` emulator: the type
//! matrix value for value through the backfill and the stream; inserts,
//! updates (of keys, and leaving TOASTed values unchanged), deletes,
//! truncates and schema changes converging; the slot never confirmed past
//! the stored LSN; values Snowflake cannot hold named clearly.

use std::time::{Duration, Instant};

use pg_replicate::pipeline::PipelineAction;
use pg_replicate::sinks::snowflake::{
    MergeMode, SnowflakeClient, SnowflakeConfig, SnowflakeCredentials, SnowflakeSink,
    SnowflakeSinkConfig,
};
use pg_replicate::types::Lsn;
use pg_replicate::ErrorKind;
use serde_json::Value;

use crate::common::{confirmed_flush, start_with, Running};
use crate::snowflake::emulator;
use crate::support::{fresh_database, TestDb};

/// How a column is compared: both sides become the same text.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Kind {
    /// The same text on both sides.
    Text,
    /// Equal as f64 (NaN equal to NaN).
    Float,
    /// Equal numerals once trailing zeros are dropped.
    Decimal,
    /// `char(n)`: the padded text.
    Bpchar,
    /// Long text, by its MD5.
    Md5,
    /// Hex of the bytes.
    Bytea,
    /// Microseconds since midnight.
    Time,
    /// Microseconds since the epoch.
    Timestamp,
    /// Equal JSON values (json, jsonb; arrays against `to_json`).
    Json,
    /// Arrays, against Postgres's `to_json`.
    Array,
    /// `timestamptz[]` (whole seconds): UTC instants with `Z`, as stored.
    TimestamptzArray,
    /// `json[]`/`jsonb[]`: each element's text as a JSON string, as stored.
    JsonArray,
}

fn matrix_kind(column: &str) -> Kind {
    match column {
        "c_float4" | "c_float8" => Kind::Float,
        "c_numeric_12_2" | "c_numeric_big" => Kind::Decimal,
        "c_bytea" => Kind::Bytea,
        "c_bpchar" => Kind::Bpchar,
        "c_time" => Kind::Time,
        "c_ts" | "c_tstz" => Kind::Timestamp,
        "c_json" | "c_jsonb" => Kind::Json,
        "c_tstz_arr" => Kind::TimestamptzArray,
        "c_jsonb_arr" => Kind::JsonArray,
        c if c.ends_with("_arr") => Kind::Array,
        _ => Kind::Text,
    }
}

fn exprs(kind: Kind, column: &str) -> (String, String) {
    let pg = format!("\"{column}\"");
    let sf = format!("\"{}\"", column.to_uppercase());
    match kind {
        Kind::Text | Kind::Float | Kind::Decimal => {
            (format!("{pg}::text"), format!("{sf}::VARCHAR"))
        }
        // concat keeps the padding of char(n), which a cast to text drops.
        Kind::Bpchar => (
            format!("CASE WHEN {pg} IS NULL THEN NULL ELSE concat({pg}) END"),
            format!("{sf}::VARCHAR"),
        ),
        Kind::Md5 => (format!("md5({pg})"), format!("MD5({sf})")),
        Kind::Bytea => (
            format!("upper(encode({pg}, 'hex'))"),
            format!("HEX_ENCODE({sf})"),
        ),
        Kind::Time => (
            format!("(extract(epoch from {pg}) * 1000000)::bigint::text"),
            format!("{sf}::VARCHAR"),
        ),
        Kind::Timestamp => (
            format!("(extract(epoch from {pg}) * 1000000)::numeric(30,0)::text"),
            format!("DATE_PART(EPOCH_MICROSECOND, {sf})::VARCHAR"),
        ),
        Kind::Json => (format!("{pg}::text"), format!("TO_JSON({sf})")),
        Kind::Array => (format!("to_json({pg})::text"), format!("TO_JSON({sf})")),
        Kind::TimestamptzArray => (
            format!(
                "(SELECT json_agg(to_char(e AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') ORDER BY n)::text \
                 FROM unnest({pg}) WITH ORDINALITY AS u(e, n))"
            ),
            format!("TO_JSON({sf})"),
        ),
        Kind::JsonArray => (
            format!(
                "CASE WHEN {pg} IS NULL THEN NULL ELSE (SELECT coalesce(json_agg(e::text ORDER BY n), '[]')::text \
                 FROM unnest({pg}) WITH ORDINALITY AS u(e, n)) END"
            ),
            format!("TO_JSON({sf})"),
        ),
    }
}

fn normalize(kind: Kind, value: Option<String>) -> Option<String> {
    let value = value?;
    Some(match kind {
        Kind::Float => {
            let v: f64 = value
                .parse()
                .unwrap_or_else(|_| panic!("not a float: {value}"));
            format!("{v:?}")
        }
        Kind::Decimal if value.contains('.') => {
            value.trim_end_matches('0').trim_end_matches('.').to_owned()
        }
        Kind::Time if value.contains(':') => {
            let parts: Vec<&str> = value.split(':').collect();
            let seconds: f64 = parts[2].parse().unwrap();
            let micros = (parts[0].parse::<i64>().unwrap() * 3600
                + parts[1].parse::<i64>().unwrap() * 60)
                * 1_000_000
                + (seconds * 1_000_000.0).round() as i64;
            micros.to_string()
        }
        Kind::Json | Kind::Array | Kind::TimestamptzArray | Kind::JsonArray => {
            serde_json::from_str::<Value>(&value)
                .unwrap_or_else(|_| panic!("not JSON: {value}"))
                .to_string()
        }
        _ => value,
    })
}

/// The connection to a database of its own on the emulator.
pub(crate) fn connection(database: &str) -> SnowflakeConfig {
    SnowflakeConfig::new(
        "testacct",
        "loader",
        SnowflakeCredentials::Password("unused by the emulator".into()),
    )
    .with_base_url(emulator().url())
    .with_database(database)
    .with_schema("REPLICA")
}

pub(crate) async fn client(database: &str) -> SnowflakeClient {
    SnowflakeClient::connect(connection(database))
        .await
        .unwrap_or_else(|e| panic!("log in to fakesnow: {e}"))
}

/// Rows of `sql` as text.
pub(crate) async fn rows(
    client: &mut SnowflakeClient,
    sql: &str,
) -> Result<Vec<Vec<Option<String>>>, String> {
    let result = client.query(sql, &[]).await.map_err(|e| e.to_string())?;
    result.text_rows().map_err(|e| e.to_string())
}

/// How many tables are recorded as copied (as text; `None` before the
/// state tables exist).
pub(crate) async fn copied_tables(client: &mut SnowflakeClient) -> Option<String> {
    rows(
        client,
        "SELECT COUNT(*) FROM _PGR_COPIED WHERE SNAPSHOT_LSN IS NOT NULL",
    )
    .await
    .ok()
    .and_then(|r| r.first().and_then(|row| row[0].clone()))
}

/// Waits (at most 60 s) until `n` tables are recorded as copied.
pub(crate) async fn wait_copied(client: &mut SnowflakeClient, n: usize) {
    let started = Instant::now();
    loop {
        let copied = copied_tables(client).await;
        if copied.as_deref() == Some(&n.to_string()) {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{n} copied tables were not recorded in 60 s (now {copied:?})"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Postgres `pg_table` and Snowflake `sf_table`, columns compared as
/// `spec` says, sorted.
pub(crate) async fn both_sides(
    db: &TestDb,
    client: &mut SnowflakeClient,
    pg_table: &str,
    sf_table: &str,
    spec: &[(&str, Kind)],
) -> Result<(Vec<Vec<Option<String>>>, Vec<Vec<Option<String>>>), String> {
    let (pg, sf): (Vec<String>, Vec<String>) = spec.iter().map(|(c, k)| exprs(*k, c)).unzip();
    let pg_client = db.client().await;
    pg_client
        .batch_execute("SET intervalstyle = iso_8601; SET timezone = 'UTC'")
        .await
        .unwrap();
    let pg_rows = pg_client
        .query(&format!("SELECT {} FROM {pg_table}", pg.join(", ")), &[])
        .await
        .unwrap();
    let mut expected: Vec<Vec<Option<String>>> = pg_rows
        .iter()
        .map(|row| {
            spec.iter()
                .enumerate()
                .map(|(i, (_, k))| normalize(*k, row.get::<_, Option<String>>(i)))
                .collect()
        })
        .collect();
    let mut actual: Vec<Vec<Option<String>>> =
        rows(client, &format!("SELECT {} FROM {sf_table}", sf.join(", ")))
            .await
            .map_err(|e| format!("read {sf_table}: {e}"))?
            .into_iter()
            .map(|row| {
                row.into_iter()
                    .zip(spec)
                    .map(|(v, (_, k))| normalize(*k, v))
                    .collect()
            })
            .collect();
    expected.sort();
    actual.sort();
    Ok((expected, actual))
}

/// Waits (at most 90 s) until Snowflake `sf_table` equals Postgres
/// `pg_table`; panics saying how they differ, or how the pipeline ended
/// when it stopped.
async fn wait_converged(
    db: &TestDb,
    client: &mut SnowflakeClient,
    running: Running,
    pg_table: &str,
    sf_table: &str,
    spec: &[(&str, Kind)],
) -> Running {
    let started = Instant::now();
    loop {
        // A query can fail while the sink changes the table's columns:
        // that is "not yet" too.
        let sides = both_sides(db, client, pg_table, sf_table, spec).await;
        if sides
            .as_ref()
            .is_ok_and(|(expected, actual)| expected == actual)
        {
            return running;
        }
        if started.elapsed() > Duration::from_secs(90) || running.handle.is_finished() {
            let problem = match sides {
                Err(error) => error,
                Ok((expected, actual)) => {
                    let missing: Vec<_> = expected
                        .iter()
                        .filter(|r| !actual.contains(r))
                        .take(3)
                        .collect();
                    let extra: Vec<_> = actual
                        .iter()
                        .filter(|r| !expected.contains(r))
                        .take(3)
                        .collect();
                    format!(
                        "{sf_table} did not converge to {pg_table} ({} rows in Postgres, {} in Snowflake); \
                         missing: {missing:?}; extra: {extra:?}",
                        expected.len(),
                        actual.len()
                    )
                }
            };
            let outcome = running.stop().await;
            panic!(
                "{problem}; the pipeline ended with {outcome:?}; the emulator's log ends with:\n{}",
                log_tail(30)
            );
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// The last `lines` lines of the emulator's log.
pub(crate) fn log_tail(lines: usize) -> String {
    let log = std::fs::read_to_string(emulator().log_file()).unwrap_or_default();
    let all: Vec<&str> = log.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// The stored LSN of `identity`.
pub(crate) async fn stored_lsn(client: &mut SnowflakeClient, identity: &str) -> Option<Lsn> {
    let rows = rows(
        client,
        &format!("SELECT LAST_LSN FROM _PGR_STATE WHERE IDENTITY = '{identity}'"),
    )
    .await
    .unwrap();
    rows.first()
        .and_then(|r| r[0].clone())
        .map(|lsn| Lsn(lsn.parse().unwrap()))
}

pub(crate) async fn assert_confirmed_not_ahead(
    db: &TestDb,
    client: &mut SnowflakeClient,
    slot: &str,
    identity: &str,
) {
    let stored = stored_lsn(client, identity).await;
    if let Some(confirmed) = confirmed_flush(db, slot).await {
        assert!(
            stored.is_some_and(|s| confirmed <= s),
            "confirmed {confirmed} is ahead of stored {stored:?}"
        );
    }
}

pub(crate) const ITEMS: &[(&str, Kind)] = &[
    ("id", Kind::Text),
    ("v", Kind::Text),
    ("n", Kind::Decimal),
    ("t", Kind::Text),
    ("big", Kind::Md5),
    ("j", Kind::Json),
];

pub(crate) fn insert_items(ids: std::ops::RangeInclusive<i64>) -> String {
    let rows: Vec<String> = ids
        .map(|id| {
            format!(
                "({id}, {id} * 10, {id} / 8.0, 'text {id}', repeat(md5('{id}'), 100), '{{\"id\": {id}}}')"
            )
        })
        .collect();
    format!("INSERT INTO items VALUES {}", rows.join(", "))
}

/// Inserts, updates (some leaving the TOASTed column unchanged, some
/// moving keys), deletes, a truncate in the middle of a transaction, and
/// columns added and dropped, all converge; the slot is never confirmed
/// past the stored LSN.
#[tokio::test]
async fn changes_truncates_and_schema_changes_converge() {
    let db = fresh_database("sf_changes").await;
    let (publication, slot) = (db.unique_name("pub"), db.unique_name("slot"));
    // EXTERNAL storage keeps `big` out of line uncompressed, so updates
    // that do not touch it send it as unchanged TOAST.
    db.execute(&format!(
        "CREATE TABLE items (id bigint PRIMARY KEY, v int, n numeric(12,2), t text, big text, j jsonb);
         ALTER TABLE items ALTER COLUMN big SET STORAGE EXTERNAL;
         {}; CREATE PUBLICATION {publication} FOR TABLE items",
        insert_items(1..=40)
    ))
    .await;
    let database = db.name().to_uppercase();
    let identity = "items";
    let sink = SnowflakeSink::connect(
        SnowflakeSinkConfig::new(connection(&database)).with_identity(identity),
    )
    .await
    .unwrap();
    let mut running = start_with(&db, &publication, &slot, sink, PipelineAction::Both);
    let mut client = client(&database).await;
    wait_copied(&mut client, 1).await;
    running = wait_converged(&db, &mut client, running, "items", "ITEMS", ITEMS).await;

    db.execute(&format!(
        "BEGIN; {}; UPDATE items SET t = 'upd' || id, v = -v WHERE id % 3 = 0;
         UPDATE items SET id = id + 1000 WHERE id % 7 = 0; DELETE FROM items WHERE id % 5 = 1; COMMIT;
         UPDATE items SET n = n + 1 WHERE id < 20; DELETE FROM items WHERE id = 2; {};
         UPDATE items SET v = 5 WHERE id = 3; UPDATE items SET id = 3000 WHERE id = 3; UPDATE items SET t = NULL WHERE id = 3000;",
        insert_items(41..=60),
        insert_items(2..=2)
    ))
    .await;
    running = wait_converged(&db, &mut client, running, "items", "ITEMS", ITEMS).await;

    db.execute(&format!(
        "BEGIN; UPDATE items SET v = 0; TRUNCATE items; {}; UPDATE items SET v = 7 WHERE id = 61; COMMIT;",
        insert_items(61..=70)
    ))
    .await;
    running = wait_converged(&db, &mut client, running, "items", "ITEMS", ITEMS).await;

    db.execute(
        "ALTER TABLE items ADD COLUMN extra numeric(8,3); UPDATE items SET extra = id / 4.0 WHERE id < 66;
         ALTER TABLE items DROP COLUMN v; UPDATE items SET extra = -1 WHERE id = 70;",
    )
    .await;
    let mut evolved: Vec<(&str, Kind)> = ITEMS.iter().copied().filter(|(c, _)| *c != "v").collect();
    evolved.push(("extra", Kind::Decimal));
    running = wait_converged(&db, &mut client, running, "items", "ITEMS", &evolved).await;

    running.stop().await.unwrap();
    assert_confirmed_not_ahead(&db, &mut client, &slot, identity).await;
}

/// Every type of the shared matrix ([`crate::types::COLUMNS`]), typical
/// values, edges and NULLs, through the backfill and then the stream,
/// value for value.
#[tokio::test]
async fn every_type_of_the_matrix_is_exact_through_copy_and_stream() {
    let db = fresh_database("sf_matrix").await;
    let (publication, slot) = (db.unique_name("pub"), db.unique_name("slot"));
    crate::types::set_up(&db, &publication).await;
    let typical = |id: u32| crate::types::TYPICAL.replacen("(1,", &format!("({id},"), 1);
    let nulls = |id: u32| format!("({id}{})", ", NULL".repeat(crate::types::COLUMNS.len()));
    // Row 3: the edges Snowflake holds (the matrix's infinities and BC
    // dates it does not: see the next test).
    db.execute(&format!(
        "INSERT INTO all_types VALUES {}, {}, {};
         UPDATE all_types SET c_float4 = 'NaN', c_float8 = '-Infinity', c_numeric = 'NaN', c_int8 = -9223372036854775808,
           c_oid = 4294967295, c_numeric_12_2 = -9999999999.99, c_text = E'line\nbreak \"q\" \\\\ é 😀, ok',
           c_varchar = E'\\\\N', c_name = '', c_bytea = '\\x', c_date = '0001-01-01', c_time = '23:59:59.999999',
           c_ts = '9999-12-31 23:59:59.999999', c_tstz = '0001-01-01 00:00:00+00',
           c_interval = '-1 year -2 days +03:04:05.678', c_json = '[]', c_jsonb = '{{}}', c_text_arr = '{{}}'
         WHERE id = 3",
        typical(1),
        nulls(2),
        typical(3)
    ))
    .await;
    let database = db.name().to_uppercase();
    let sink = SnowflakeSink::connect(SnowflakeSinkConfig::new(connection(&database)))
        .await
        .unwrap();
    let mut running = start_with(&db, &publication, &slot, sink, PipelineAction::Both);
    let mut client = client(&database).await;
    wait_copied(&mut client, 1).await;
    let mut spec: Vec<(&str, Kind)> = vec![("id", Kind::Text)];
    spec.extend(
        crate::types::COLUMNS
            .iter()
            .map(|(c, _)| (*c, matrix_kind(c))),
    );
    let (expected, actual) = both_sides(&db, &mut client, "all_types", "ALL_TYPES", &spec)
        .await
        .unwrap();
    assert_eq!(expected.len(), 3);
    let mut differences = Vec::new();
    for (want, got) in expected.iter().zip(&actual) {
        for ((name, _), (w, g)) in spec.iter().zip(want.iter().zip(got)) {
            if w != g {
                differences.push(format!("{name}: Postgres {w:?}, Snowflake {g:?}"));
            }
        }
    }
    assert!(differences.is_empty(), "{differences:#?}");
    assert_eq!(expected, actual);

    // The same values through the stream: inserted, then a row turned
    // from NULLs into values and back, and a key moved.
    db.execute(&format!(
        "INSERT INTO all_types VALUES {}, {};
         DELETE FROM all_types WHERE id = 2; INSERT INTO all_types VALUES {};
         UPDATE all_types SET id = 7 WHERE id = 1; UPDATE all_types SET id = 8 WHERE id = 3;",
        typical(5),
        nulls(6),
        typical(2)
    ))
    .await;
    running = wait_converged(&db, &mut client, running, "all_types", "ALL_TYPES", &spec).await;
    running.stop().await.unwrap();
}

/// A value Snowflake cannot hold (an infinite date) stops the copy with
/// an error naming the table and the column, not the value.
#[tokio::test]
async fn a_value_snowflake_cannot_hold_names_table_and_column() {
    let db = fresh_database("sf_infinity").await;
    let (publication, slot) = (db.unique_name("pub"), db.unique_name("slot"));
    db.execute(&format!(
        "CREATE TABLE events (id int PRIMARY KEY, day date);
         INSERT INTO events VALUES (1, '2024-01-01'), (2, 'infinity');
         CREATE PUBLICATION {publication} FOR TABLE events;"
    ))
    .await;
    let database = db.name().to_uppercase();
    let sink = SnowflakeSink::connect(SnowflakeSinkConfig::new(connection(&database)))
        .await
        .unwrap();
    let running = start_with(
        &db,
        &publication,
        &slot,
        sink,
        PipelineAction::TableCopiesOnly,
    );
    let error = tokio::time::timeout(Duration::from_secs(60), running.handle)
        .await
        .expect("the copy did not end in 60 s")
        .unwrap()
        .expect_err("an infinite date cannot be stored");
    assert_eq!(error.kind(), ErrorKind::Data, "{error}");
    assert!(
        error.message().contains("column \"day\" of public.events")
            && error.message().contains("infinity"),
        "{error}"
    );
    let mut client = client(&database).await;
    let copied = rows(
        &mut client,
        "SELECT COUNT(*) FROM _PGR_COPIED WHERE SNAPSHOT_LSN IS NOT NULL",
    )
    .await
    .unwrap();
    assert_eq!(
        copied[0][0].as_deref(),
        Some("0"),
        "nothing is recorded as copied"
    );
}

const WORK: &[(&str, Kind)] = &[("id", Kind::Text), ("v", Kind::Text), ("doc", Kind::Md5)];
const LOG: &[(&str, Kind)] = &[("host", Kind::Text), ("n", Kind::Text)];

/// One transaction of a mixed workload on `work` (keyed) and `log` (no
/// key, insert-only): inserts and upserts, updates, deletes, key moves.
fn workload(round: u64) -> String {
    let mut sql = String::from("BEGIN;");
    for i in 0..30 {
        let x = round * 1000 + i;
        sql.push_str(&match (x * 7919) % 6 {
            0 | 1 => format!(
                "INSERT INTO work VALUES ({x}, {i}, 'd{x}') ON CONFLICT (id) DO UPDATE SET v = work.v + 1;"
            ),
            2 => format!("UPDATE work SET v = v * 2 WHERE id % 11 = {};", x % 11),
            3 => format!("DELETE FROM work WHERE id % 13 = {};", x % 13),
            4 => format!("UPDATE work SET id = id + 100000 WHERE id = {};", x / 3),
            _ => format!("INSERT INTO log VALUES ('h{}', {x});", x % 4),
        });
    }
    sql.push_str("COMMIT;");
    sql
}

const CHILD_ENV: &str = "PGR_SNOWFLAKE_KILL_CHILD";

/// Replicates into Snowflake until killed: the process the kill test
/// starts (this test binary again), configured through `CHILD_ENV`.
#[tokio::test]
#[ignore = "started as a child process by killed_at_any_point_converges_exactly_once"]
async fn killed_child_process() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let spec: Value = serde_json::from_str(&spec).unwrap();
    let text = |key: &str| spec[key].as_str().unwrap().to_owned();
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(text("log"))
        .unwrap();
    tracing_subscriber::fmt()
        .with_env_filter("pg_replicate=debug")
        .with_ansi(false)
        .with_writer(std::sync::Mutex::new(log))
        .init();
    // The parent's server and emulator, not ones of this process.
    let config = crate::common::child_pg_config(&spec);
    let connection = SnowflakeConfig::new(
        "testacct",
        "loader",
        SnowflakeCredentials::Password("unused by the emulator".into()),
    )
    .with_base_url(text("url"))
    .with_database(text("database"))
    .with_schema("REPLICA");
    // Small files: a copy is interrupted between uploads too.
    let mut sink_config = SnowflakeSinkConfig::new(connection)
        .with_identity(text("identity"))
        .with_file_bytes(256 << 10);
    if spec["external"].as_bool() == Some(true) {
        sink_config = sink_config.with_merge(MergeMode::External);
    }
    let sink = SnowflakeSink::connect(sink_config).await.unwrap();
    let source = pg_replicate::sources::postgres::PostgresSource::new(
        config,
        text("publication"),
        text("slot"),
    );
    pg_replicate::pipeline::DataPipeline::new(source, sink, PipelineAction::Both)
        .with_batch_config(crate::common::test_batch_config())
        .start()
        .await
        .unwrap();
}

fn spawn_child(
    db: &TestDb,
    database: &str,
    publication: &str,
    slot: &str,
    identity: &str,
    external: bool,
) -> std::process::Child {
    let spec = crate::common::child_spec(
        db,
        publication,
        slot,
        serde_json::json!({
            "identity": identity,
            "external": external,
            "database": database,
            "url": emulator().url(),
            "log": crate::common::child_log("sf", slot),
        }),
    );
    crate::common::spawn_child_test("snowflake_sink::killed_child_process", CHILD_ENV, &spec)
}

/// `kill -9` of the replicating process at points spread over the backfill
/// and the stream while changes keep coming, restarted each time: the slot
/// is never confirmed past the stored LSN, and the tables end equal to
/// Postgres, keyed and insert-only alike: nothing lost, nothing twice.
#[tokio::test]
async fn killed_at_any_point_converges_exactly_once() {
    kill_trials("sf_kill", false).await;
}

/// The same with changes kept in landing tables (`MergeMode::External`)
/// and merged by this process while the killed one lands more, and one
/// merge interrupted before it cleared the landing tables.
#[tokio::test]
async fn killed_while_landing_with_merges_between_converges_exactly_once() {
    kill_trials("sf_kill_kept", true).await;
}

async fn kill_trials(name: &str, external: bool) {
    let db = fresh_database(name).await;
    let (publication, slot) = (db.unique_name("pub"), db.unique_name("slot"));
    let identity = "kill";
    let database = db.name().to_uppercase();
    let _log = crate::common::ChildLog(crate::common::child_log("sf", &slot));
    db.execute(&format!(
        "CREATE TABLE work (id bigint PRIMARY KEY, v bigint, doc text);
         CREATE TABLE log (host text, n bigint);
         ALTER TABLE log REPLICA IDENTITY FULL;
         INSERT INTO work SELECT g, g, repeat('d', 500) || g FROM generate_series(1, 20000) g;
         INSERT INTO log SELECT 'h' || g % 3, g FROM generate_series(1, 500) g;
         CREATE PUBLICATION {publication} FOR TABLE work, log"
    ))
    .await;
    let mut client = client(&database).await;
    let mut round = 0;
    for wait_ms in [300u64, 1200, 2500, 1800, 3000, 2200, 900, 3500] {
        let mut child = spawn_child(&db, &database, &publication, &slot, identity, external);
        let started = Instant::now();
        while started.elapsed() < Duration::from_millis(wait_ms) {
            db.execute(&workload(round)).await;
            if external && round % 4 == 3 {
                // Merged while the other process lands more.
                crate::snowflake_landing::merge_if_ready(&database).await;
            }
            round += 1;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        child.kill().unwrap();
        child.wait().unwrap();
        crate::common::wait_slot_inactive(&db, &slot).await;
        // Before the first batch is stored, the slot stays where it was
        // created.
        if let (Some(confirmed), Some(stored)) = (
            confirmed_flush(&db, &slot).await,
            stored_lsn(&mut client, identity).await,
        ) {
            assert!(
                confirmed <= stored,
                "slot confirmed {confirmed} but Snowflake stored only {stored}"
            );
        }
    }
    if external {
        crate::snowflake_landing::interrupted_merge(&mut client).await;
    }
    // A last run in this process catches up, with one more transaction
    // that only the stream can bring.
    let mut config = SnowflakeSinkConfig::new(connection(&database)).with_identity(identity);
    if external {
        config = config.with_merge(MergeMode::External);
    }
    let sink = SnowflakeSink::connect(config).await.unwrap();
    let mut running = start_with(&db, &publication, &slot, sink, PipelineAction::Both);
    wait_copied(&mut client, 2).await;
    db.execute(&workload(round)).await;
    if external {
        running = crate::snowflake_landing::merge_until_equal(
            &db,
            &mut client,
            running,
            &database,
            &[("work", "WORK", WORK), ("log", "LOG", LOG)],
        )
        .await;
    } else {
        running = wait_converged(&db, &mut client, running, "work", "WORK", WORK).await;
        running = wait_converged(&db, &mut client, running, "log", "LOG", LOG).await;
    }
    running.stop().await.unwrap();
    assert_confirmed_not_ahead(&db, &mut client, &slot, identity).await;
}
