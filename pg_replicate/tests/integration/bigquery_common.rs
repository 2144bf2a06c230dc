//! Helpers for the BigQuery sink tests: one `local-bigquery` emulator per
//! test process (installed by `scripts/emulators/bigquery`, started on free
//! ports of 127.0.0.1 with a scratch data directory, stopped when the
//! process exits), a fresh dataset per test, and comparisons of BigQuery
//! tables with Postgres value for value.
//!
//! `PG_REPLICATE_BIGQUERY_VENV` names an installed environment (the
//! script's output) to skip the install check.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use pg_replicate::sinks::bigquery::{BigQueryCredentials, BigQuerySinkConfig, LocalBigQuery};
use serde_json::{json, Value};

use crate::support::TestDb;

/// The project every emulator request names.
pub const PROJECT: &str = "test-project";

/// The emulator of this test process, started on first use; a static is
/// never dropped, so its watchdog stops it when the process ends.
pub fn emulator() -> &'static LocalBigQuery {
    static EMULATOR: OnceLock<LocalBigQuery> = OnceLock::new();
    EMULATOR.get_or_init(|| {
        LocalBigQuery::start(
            &crate::common::emulator_venv("PG_REPLICATE_BIGQUERY_VENV", "bigquery"),
            PROJECT,
        )
        .unwrap_or_else(|e| panic!("local-bigquery: {e}"))
    })
}

/// A dataset of its own for one test.
pub struct Dataset {
    pub id: String,
    http: reqwest::Client,
}

impl Dataset {
    /// Creates a dataset named after `db`.
    pub async fn new(db: &TestDb) -> Self {
        let emulator = emulator();
        let id = db.name().replace(['-', '.'], "_");
        let http = reqwest::Client::new();
        let response = http
            .post(format!(
                "{}/bigquery/v2/projects/{PROJECT}/datasets",
                emulator.rest_endpoint()
            ))
            .json(&json!({ "datasetReference": { "projectId": PROJECT, "datasetId": id } }))
            .send()
            .await
            .unwrap();
        assert!(
            response.status().is_success(),
            "create dataset: {}",
            response.text().await.unwrap()
        );
        Self { id, http }
    }

    /// The sink's configuration for this dataset on the emulator.
    pub fn config(&self, identity: &str) -> BigQuerySinkConfig {
        let emulator = emulator();
        BigQuerySinkConfig::new(PROJECT, &self.id, BigQueryCredentials::None)
            .with_endpoints(emulator.rest_endpoint(), emulator.storage_endpoint())
            .with_identity(identity)
    }

    /// Runs `sql` and returns its rows as REST text, or the server's error.
    pub async fn try_query(&self, sql: &str) -> Result<Vec<Vec<Option<String>>>, String> {
        let response: Value = self
            .http
            .post(format!(
                "{}/bigquery/v2/projects/{PROJECT}/queries",
                emulator().rest_endpoint()
            ))
            .json(&json!({ "query": sql, "useLegacySql": false, "maxResults": 1_000_000 }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if let Some(error) = response.get("error") {
            return Err(error["message"].as_str().unwrap_or_default().to_owned());
        }
        Ok(response["rows"]
            .as_array()
            .map(|rows| {
                rows.iter()
                    .map(|row| {
                        row["f"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .map(|cell| match &cell["v"] {
                                Value::Null => None,
                                Value::String(s) => Some(s.clone()),
                                other => Some(other.to_string()),
                            })
                            .collect()
                    })
                    .collect()
            })
            .unwrap_or_default())
    }

    /// `` `dataset`.`table` ``.
    pub fn table(&self, table: &str) -> String {
        format!("`{}`.`{table}`", self.id)
    }

    /// The state row's `last_lsn`.
    pub async fn stored_lsn(&self, identity: &str) -> Result<u64, String> {
        let rows = self
            .try_query(&format!(
                "SELECT last_lsn FROM {} WHERE identity = '{identity}'",
                self.table("_pg_replicate_state")
            ))
            .await?;
        rows.first()
            .and_then(|row| row.first())
            .and_then(|cell| cell.as_deref())
            .and_then(|text| text.parse().ok())
            .ok_or_else(|| format!("no last_lsn for identity {identity:?}: {rows:?}"))
    }

    /// Number of tables recorded as copied.
    pub async fn copied(&self) -> usize {
        match self
            .try_query(&format!(
                "SELECT COUNT(*) FROM {}",
                self.table("_pg_replicate_copied")
            ))
            .await
        {
            Ok(rows) => rows[0][0].as_deref().unwrap_or("0").parse().unwrap(),
            Err(_) => 0,
        }
    }
}

/// How a column's values are compared.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// The same text on both sides (integers, booleans, text, uuids, dates).
    Text,
    /// Floating point: equal as f64.
    Float,
    /// Decimals: equal numerals once trailing zeros are dropped.
    Decimal,
    Bytea,
    Time,
    /// `timestamp` (DATETIME) or `timestamptz` (TIMESTAMP): microseconds.
    Timestamp,
    /// JSON documents and arrays (stored as JSON): equal JSON values.
    Json,
    /// Arrays (stored as JSON): compared with Postgres's `to_json`.
    Array,
    /// Postgres's ISO 8601 interval text.
    Interval,
    /// Long text: compared by MD5.
    Md5,
    /// `char(n)`: the padded text (a cast to text would drop the padding).
    Bpchar,
    /// `timestamptz[]` (whole seconds): UTC instants with `Z`, as stored.
    TimestamptzArray,
    /// `json[]`/`jsonb[]`: each element's text as a JSON string, as stored.
    JsonArray,
}

fn exprs(kind: Kind, column: &str) -> (String, String) {
    let pg = format!("\"{column}\"");
    let bq = format!("`{column}`");
    match kind {
        Kind::Text | Kind::Decimal | Kind::Interval => (format!("{pg}::text"), bq),
        Kind::Float => (format!("{pg}::float8::text"), bq),
        Kind::Bytea => (format!("translate(encode({pg}, 'base64'), E'\\n', '')"), bq),
        Kind::Time => (
            format!("(extract(epoch from {pg}) * 1000000)::bigint::text"),
            bq,
        ),
        Kind::Timestamp => (
            format!("(extract(epoch from {pg}) * 1000000)::numeric(30,0)::text"),
            format!("UNIX_MICROS(TIMESTAMP({bq}))"),
        ),
        // TO_JSON_STRING(NULL) is 'null': keep SQL NULL apart from JSON null.
        Kind::Json => (
            format!("{pg}::text"),
            format!("IF({bq} IS NULL, NULL, TO_JSON_STRING({bq}))"),
        ),
        Kind::Array => (
            format!("to_json({pg})::text"),
            format!("IF({bq} IS NULL, NULL, TO_JSON_STRING({bq}))"),
        ),
        Kind::Md5 => (format!("md5({pg})"), format!("TO_HEX(MD5({bq}))")),
        Kind::Bpchar => (
            format!("CASE WHEN {pg} IS NULL THEN NULL ELSE concat({pg}) END"),
            bq,
        ),
        Kind::TimestamptzArray => (
            format!(
                "(SELECT json_agg(to_char(e AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') ORDER BY n)::text \
                 FROM unnest({pg}) WITH ORDINALITY AS u(e, n))"
            ),
            format!("IF({bq} IS NULL, NULL, TO_JSON_STRING({bq}))"),
        ),
        Kind::JsonArray => (
            format!(
                "CASE WHEN {pg} IS NULL THEN NULL ELSE (SELECT coalesce(json_agg(e::text ORDER BY n), '[]')::text \
                 FROM unnest({pg}) WITH ORDINALITY AS u(e, n)) END"
            ),
            format!("IF({bq} IS NULL, NULL, TO_JSON_STRING({bq}))"),
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

/// Rows of Postgres `pg_table` and BigQuery `bq_table`, columns as `spec`
/// compares them, sorted.
pub async fn both_sides(
    db: &TestDb,
    dataset: &Dataset,
    pg_table: &str,
    bq_table: &str,
    spec: &[(&str, Kind)],
) -> Result<(Vec<Vec<Option<String>>>, Vec<Vec<Option<String>>>), String> {
    let (pg, bq): (Vec<String>, Vec<String>) = spec.iter().map(|(c, k)| exprs(*k, c)).unzip();
    let client = db.client().await;
    client
        .batch_execute("SET intervalstyle = iso_8601; SET timezone = 'UTC'")
        .await
        .unwrap();
    let rows = client
        .query(&format!("SELECT {} FROM {pg_table}", pg.join(", ")), &[])
        .await
        .unwrap();
    let mut expected: Vec<Vec<Option<String>>> = rows
        .iter()
        .map(|row| {
            spec.iter()
                .enumerate()
                .map(|(i, (_, k))| normalize(*k, row.get::<_, Option<String>>(i)))
                .collect()
        })
        .collect();
    let mut actual: Vec<Vec<Option<String>>> = dataset
        .try_query(&format!(
            "SELECT {} FROM {}",
            bq.join(", "),
            dataset.table(bq_table)
        ))
        .await?
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

/// Waits until BigQuery table `bq_table` equals Postgres `pg_table`.
pub async fn wait_converged(
    db: &TestDb,
    dataset: &Dataset,
    pg_table: &str,
    bq_table: &str,
    spec: &[(&str, Kind)],
) {
    if let Err(error) = try_wait_converged(db, dataset, pg_table, bq_table, spec).await {
        panic!("{error}");
    }
}

/// Waits (at most 90 s) until BigQuery table `bq_table` equals Postgres
/// `pg_table`; else says how they differ.
pub async fn try_wait_converged(
    db: &TestDb,
    dataset: &Dataset,
    pg_table: &str,
    bq_table: &str,
    spec: &[(&str, Kind)],
) -> Result<(), String> {
    let started = Instant::now();
    loop {
        // A query can fail while the sink is still changing the table's
        // columns; that is "not yet" too.
        let (expected, actual) = match both_sides(db, dataset, pg_table, bq_table, spec).await {
            Ok(sides) => sides,
            Err(error) => {
                if started.elapsed() > Duration::from_secs(90) {
                    return Err(format!("{bq_table} could not be read for 90 s: {error}"));
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        if expected == actual {
            return Ok(());
        }
        if started.elapsed() > Duration::from_secs(90) {
            return Err(format!(
                "{bq_table} did not converge to {pg_table} ({} rows in Postgres, {} in BigQuery); \
                 rows whose count differs (BigQuery minus Postgres): {:?}",
                expected.len(),
                actual.len(),
                count_differences(&expected, &actual)
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Rows held a different number of times on the two sides, with how many
/// more times the second side holds them (at most 20).
fn count_differences<T: Ord + Clone>(expected: &[T], actual: &[T]) -> Vec<(T, i64)> {
    let mut counts = std::collections::BTreeMap::<T, i64>::new();
    for row in expected {
        *counts.entry(row.clone()).or_default() -= 1;
    }
    for row in actual {
        *counts.entry(row.clone()).or_default() += 1;
    }
    counts
        .into_iter()
        .filter(|(_, n)| *n != 0)
        .take(20)
        .collect()
}

/// Waits until `tables` tables are recorded as copied.
pub async fn wait_copied(dataset: &Dataset, tables: usize) {
    let started = Instant::now();
    while dataset.copied().await < tables {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "timed out waiting for the backfill"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
