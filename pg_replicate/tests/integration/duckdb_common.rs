//! Helpers for the DuckDB sink tests: run a pipeline into a DuckDB file,
//! and compare DuckDB tables with Postgres value for value.
//!
//! Values are compared as canonical text produced by a pair of SQL
//! expressions per type, one for Postgres and one for DuckDB, chosen so
//! that equal values give equal text: integers and decimals as printed,
//! floats by their bits, dates as days since 1970, times, timestamps and
//! intervals as microsecond counts (intervals as months, days and
//! microseconds), bytea as hex, text-form types as the Postgres output
//! function's text, arrays element by element.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use pg_replicate::pipeline::PipelineAction;
use pg_replicate::sinks::duckdb::{DuckDbReader, DuckDbSink, DuckDbSinkConfig};
use pg_replicate::types::Lsn;
use serde_json::Value;

use crate::common::{start_with, Running};
use crate::support::TestDb;

/// A scratch directory for DuckDB files; removed when dropped.
pub struct DuckDir(pub PathBuf);

impl DuckDir {
    pub fn new(db: &TestDb) -> Self {
        let dir = std::env::temp_dir().join(format!("pgr-duck-{}", db.name()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for DuckDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Starts a pipeline from `db`'s publication into `sink`.
pub fn start_duck(
    db: &TestDb,
    publication: &str,
    slot: &str,
    sink: DuckDbSink,
    action: PipelineAction,
) -> Running {
    start_with(db, publication, slot, sink, action)
}

/// Opens a sink on `path` with `publication/slot` as identity and starts a
/// pipeline into it; returns the pipeline and a reader of the file.
pub fn start_into(
    db: &TestDb,
    publication: &str,
    slot: &str,
    config: DuckDbSinkConfig,
) -> (Running, DuckDbReader) {
    let sink = DuckDbSink::open(config).unwrap();
    let reader = sink.reader().unwrap();
    (
        start_duck(db, publication, slot, sink, PipelineAction::Both),
        reader,
    )
}

/// The default configuration of the tests: identity `publication/slot`.
pub fn config(path: &Path, publication: &str, slot: &str) -> DuckDbSinkConfig {
    DuckDbSinkConfig::new(path).with_identity(format!("{publication}/{slot}"))
}

/// Number of tables the file records as copied.
pub fn copied_tables(reader: &DuckDbReader) -> i64 {
    reader
        .connection()
        .query_row(
            "SELECT count(*) FROM _pg_replicate.copied_tables",
            [],
            |r| r.get(0),
        )
        .unwrap()
}

/// The last LSN stored in the file.
pub fn stored_lsn(reader: &DuckDbReader) -> Option<Lsn> {
    reader
        .connection()
        .query_row("SELECT last_lsn FROM _pg_replicate.progress", [], |r| {
            r.get::<_, Option<u64>>(0)
        })
        .unwrap()
        .map(Lsn)
}

/// Waits until `tables` tables are copied.
pub async fn wait_copied(reader: &DuckDbReader, tables: i64) {
    let start = Instant::now();
    while copied_tables(reader) < tables {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "timed out waiting for the backfill"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// How a column's values are made comparable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// `::text` on both sides.
    Plain,
    /// The output function's text (text, text-form types).
    TextForm,
    Float32,
    Float64,
    Bytea,
    Date,
    Time,
    Timestamp,
    Interval,
}

fn kind_of(pg_type: &str) -> Kind {
    match pg_type {
        "bool" | "boolean" | "int2" | "smallint" | "int4" | "int" | "integer" | "int8"
        | "bigint" | "oid" | "uuid" => Kind::Plain,
        t if t.starts_with("numeric(") => Kind::Plain,
        "float4" | "real" => Kind::Float32,
        "float8" | "double precision" => Kind::Float64,
        "bytea" => Kind::Bytea,
        "date" => Kind::Date,
        "time" => Kind::Time,
        "timestamp" | "timestamptz" => Kind::Timestamp,
        "interval" => Kind::Interval,
        _ => Kind::TextForm,
    }
}

/// Postgres and DuckDB expressions of value `v` of `kind`.
fn scalar_exprs(kind: Kind, v: &str) -> (String, String) {
    match kind {
        Kind::Plain | Kind::Float32 | Kind::Float64 => (format!("{v}::text"), format!("{v}::VARCHAR")),
        Kind::TextForm => (
            format!("CASE WHEN num_nulls({v}) = 0 THEN format('%s', {v}) END"),
            format!("{v}::VARCHAR"),
        ),
        Kind::Bytea => (format!("encode({v}, 'hex')"), format!("lower(hex({v}))")),
        Kind::Date => (
            format!("CASE WHEN isfinite({v}) THEN ({v} - DATE '1970-01-01')::text ELSE {v}::text END"),
            format!("CASE WHEN isfinite({v}) THEN ({v} - DATE '1970-01-01')::VARCHAR ELSE {v}::VARCHAR END"),
        ),
        Kind::Time => (
            format!("(extract(epoch from {v}) * 1000000)::bigint::text"),
            format!(
                "(datepart('hour', {v})::BIGINT * 3600000000 + datepart('minute', {v})::BIGINT * 60000000 \
                 + datepart('microsecond', {v}))::VARCHAR"
            ),
        ),
        Kind::Timestamp => (
            format!("CASE WHEN isfinite({v}) THEN (extract(epoch from {v}) * 1000000)::numeric(30,0)::text ELSE {v}::text END"),
            format!("CASE WHEN isfinite({v}) THEN epoch_us({v})::VARCHAR ELSE {v}::VARCHAR END"),
        ),
        Kind::Interval => (
            format!(
                "(extract(year from {v}) * 12 + extract(month from {v}))::bigint::text || ' ' || \
                 extract(day from {v})::bigint::text || ' ' || \
                 (extract(hour from {v}) * 3600000000 + extract(minute from {v}) * 60000000 \
                  + extract(microseconds from {v}))::bigint::text"
            ),
            format!(
                "(datepart('year', {v}) * 12 + datepart('month', {v}))::VARCHAR || ' ' || \
                 datepart('day', {v})::VARCHAR || ' ' || \
                 (datepart('hour', {v})::BIGINT * 3600000000 + datepart('minute', {v})::BIGINT * 60000000 \
                  + datepart('microsecond', {v}))::VARCHAR"
            ),
        ),
    }
}

/// One compared column.
pub struct Col {
    name: String,
    pg: String,
    duck: String,
    kind: Kind,
    list: bool,
}

/// The comparison of columns `(name, Postgres type)`.
pub fn columns(spec: &[(&str, &str)]) -> Vec<Col> {
    spec.iter()
        .map(|(name, ty)| {
            let quoted = format!("\"{}\"", name.replace('"', "\"\""));
            let (element, list) = match ty.strip_suffix("[]") {
                Some(element) => (element, true),
                None => (*ty, false),
            };
            let kind = kind_of(element);
            let (pg, duck) = if list {
                let (pg_x, duck_x) = scalar_exprs(kind, "x");
                (
                    format!(
                        "CASE WHEN {quoted} IS NULL THEN NULL ELSE (SELECT COALESCE(json_agg({pg_x} ORDER BY o), '[]')::text \
                         FROM unnest({quoted}) WITH ORDINALITY AS u(x, o)) END"
                    ),
                    format!("to_json(list_transform({quoted}, lambda x: {duck_x}))::VARCHAR"),
                )
            } else {
                scalar_exprs(kind, &quoted)
            };
            Col { name: (*name).to_owned(), pg, duck, kind, list }
        })
        .collect()
}

/// Makes text of equal values equal: floats by bits, JSON re-serialized.
fn normalize(col: &Col, text: Option<String>) -> Option<String> {
    let text = text?;
    if col.list {
        let value: Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {text}: {e}", col.name));
        let Value::Array(items) = value else {
            panic!("{}: not a JSON array: {text}", col.name);
        };
        let items: Vec<Value> = items
            .into_iter()
            .map(|item| match item {
                Value::String(s) => Value::String(normalize_scalar(col.kind, s)),
                other => other,
            })
            .collect();
        return Some(Value::Array(items).to_string());
    }
    Some(normalize_scalar(col.kind, text))
}

fn normalize_scalar(kind: Kind, text: String) -> String {
    match kind {
        Kind::Float32 => format!(
            "f32:{:08x}",
            canonical_nan32(
                text.parse::<f32>()
                    .unwrap_or_else(|e| panic!("{text}: {e}"))
            )
        ),
        Kind::Float64 => format!(
            "f64:{:016x}",
            canonical_nan64(
                text.parse::<f64>()
                    .unwrap_or_else(|e| panic!("{text}: {e}"))
            )
        ),
        _ => text,
    }
}

fn canonical_nan32(v: f32) -> u32 {
    if v.is_nan() {
        f32::NAN.to_bits()
    } else {
        v.to_bits()
    }
}

fn canonical_nan64(v: f64) -> u64 {
    if v.is_nan() {
        f64::NAN.to_bits()
    } else {
        v.to_bits()
    }
}

pub type Rows = Vec<Vec<Option<String>>>;

/// The rows of a Postgres table, canonical and sorted.
pub async fn pg_table(db: &TestDb, table: &str, cols: &[Col]) -> Rows {
    let select: Vec<&str> = cols.iter().map(|c| c.pg.as_str()).collect();
    let client = db.client().await;
    let rows = client
        .query(&format!("SELECT {} FROM {table}", select.join(", ")), &[])
        .await
        .unwrap_or_else(|e| panic!("reading {table}: {e:?}"));
    let mut out: Rows = rows
        .iter()
        .map(|r| {
            cols.iter()
                .enumerate()
                .map(|(i, c)| normalize(c, r.get::<_, Option<String>>(i)))
                .collect()
        })
        .collect();
    out.sort();
    out
}

/// The rows of a DuckDB table, canonical and sorted.
pub fn duck_table(reader: &DuckDbReader, table: &str, cols: &[Col]) -> Rows {
    try_duck_table(reader, table, cols).unwrap_or_else(|e| panic!("{e}"))
}

/// Like [`duck_table`]; an error when the query fails (for example while
/// a column is not added yet).
pub fn try_duck_table(reader: &DuckDbReader, table: &str, cols: &[Col]) -> Result<Rows, String> {
    let select: Vec<&str> = cols.iter().map(|c| c.duck.as_str()).collect();
    let sql = format!("SELECT {} FROM {table}", select.join(", "));
    let mut statement = reader
        .connection()
        .prepare(&sql)
        .map_err(|e| format!("preparing {sql}: {e}"))?;
    let rows = statement
        .query_map([], |r| {
            (0..cols.len())
                .map(|i| r.get::<_, Option<String>>(i))
                .collect::<duckdb::Result<Vec<_>>>()
        })
        .and_then(|rows| rows.collect::<duckdb::Result<Vec<_>>>())
        .map_err(|e| format!("reading {table}: {e}"))?;
    let mut out: Rows = rows
        .into_iter()
        .map(|row| {
            row.into_iter()
                .zip(cols)
                .map(|(v, c)| normalize(c, v))
                .collect()
        })
        .collect();
    out.sort();
    Ok(out)
}

/// Waits until each `(Postgres table, DuckDB table, columns)` holds the
/// same rows on both sides; panics with the first difference.
pub async fn wait_duck_converged(
    db: &TestDb,
    reader: &DuckDbReader,
    tables: &[(&str, &str, &[Col])],
) {
    let start = Instant::now();
    loop {
        let mut diverged = None;
        for (pg, duck, cols) in tables {
            let expected = pg_table(db, pg, cols).await;
            let actual = match try_duck_table(reader, duck, cols) {
                Ok(rows) => rows,
                Err(error) if start.elapsed() < Duration::from_secs(60) => {
                    eprintln!("{error}");
                    Vec::new()
                }
                Err(error) => panic!("{error}"),
            };
            if expected != actual {
                diverged = Some((pg, expected, actual, *cols));
                break;
            }
        }
        let Some((table, expected, actual, cols)) = diverged else {
            return;
        };
        if start.elapsed() > Duration::from_secs(60) {
            let names: Vec<&str> = cols.iter().map(|c| c.name.as_str()).collect();
            let missing: Vec<_> = expected
                .iter()
                .filter(|r| !actual.contains(r))
                .take(5)
                .collect();
            let extra: Vec<_> = actual
                .iter()
                .filter(|r| !expected.contains(r))
                .take(5)
                .collect();
            panic!(
                "{table} did not converge ({} rows in Postgres, {} in DuckDB)\ncolumns: {names:?}\n\
                 only in Postgres: {missing:?}\nonly in DuckDB: {extra:?}",
                expected.len(),
                actual.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
