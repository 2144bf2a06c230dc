//! A query's answer: its columns (`rowtype`) and its rows, either a JSON
//! `rowset` (every value as text) or `rowsetBase64` (an Arrow IPC stream,
//! what Snowflake sends for SELECT).

use std::io::Cursor;

use arrow::array::{Array, RecordBatch};
use base64::Engine;
use serde_json::Value;

use crate::{Error, ErrorKind, Result};

/// A result column, as `rowtype` describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResultColumn {
    /// Column name.
    pub name: String,
    /// Snowflake type, lower case (`fixed`, `text`, `timestamp_ntz`, …).
    pub type_name: String,
    /// Precision of `fixed` columns.
    pub precision: Option<i64>,
    /// Scale of `fixed` and time columns.
    pub scale: Option<i64>,
    /// Whether the column may hold NULL.
    pub nullable: bool,
}

/// The rows of a result.
#[derive(Clone, Debug)]
pub enum ResultRows {
    /// JSON rowset: every value as Snowflake's text, NULL as `None`.
    Json(Vec<Vec<Option<String>>>),
    /// Arrow record batches (Snowflake's Arrow result format).
    Arrow(Vec<RecordBatch>),
}

/// The answer to a query.
#[derive(Clone, Debug)]
pub struct QueryResult {
    /// Snowflake's id of the query.
    pub query_id: Option<String>,
    /// The result's columns.
    pub columns: Vec<ResultColumn>,
    /// The result's rows.
    pub rows: ResultRows,
}

impl QueryResult {
    /// Number of rows.
    pub fn row_count(&self) -> usize {
        match &self.rows {
            ResultRows::Json(rows) => rows.len(),
            ResultRows::Arrow(batches) => batches.iter().map(RecordBatch::num_rows).sum(),
        }
    }

    /// Reads the `data` object of a successful query response.
    pub(crate) fn from_data(data: &Value) -> Result<Self> {
        let chunks = data["chunks"].as_array().map_or(0, Vec::len);
        if chunks > 0 {
            return Err(malformed(format!(
                "the result came in {chunks} more chunks, which this client does not read yet; \
                 select fewer rows per query"
            )));
        }
        let columns = data["rowtype"]
            .as_array()
            .map(|columns| {
                columns
                    .iter()
                    .map(|c| ResultColumn {
                        name: c["name"].as_str().unwrap_or_default().to_owned(),
                        type_name: c["type"].as_str().unwrap_or_default().to_lowercase(),
                        precision: c["precision"].as_i64(),
                        scale: c["scale"].as_i64(),
                        nullable: c["nullable"].as_bool().unwrap_or(true),
                    })
                    .collect()
            })
            .unwrap_or_default();
        let rows = match data["rowsetBase64"].as_str() {
            Some(encoded) if !encoded.is_empty() => ResultRows::Arrow(arrow_batches(encoded)?),
            Some(_) => ResultRows::Arrow(Vec::new()),
            None => ResultRows::Json(json_rows(&data["rowset"])?),
        };
        Ok(Self {
            query_id: data["queryId"].as_str().map(str::to_owned),
            columns,
            rows,
        })
    }
}

fn malformed(problem: String) -> Error {
    Error::new(ErrorKind::Protocol, format!("Snowflake result: {problem}"))
}

fn json_rows(rowset: &Value) -> Result<Vec<Vec<Option<String>>>> {
    let Some(rows) = rowset.as_array() else {
        return Ok(Vec::new());
    };
    rows.iter()
        .map(|row| {
            row.as_array()
                .ok_or_else(|| malformed("a rowset row is not an array".into()))?
                .iter()
                .map(|cell| match cell {
                    Value::Null => Ok(None),
                    Value::String(s) => Ok(Some(s.clone())),
                    other => Ok(Some(other.to_string())),
                })
                .collect()
        })
        .collect()
}

fn arrow_batches(encoded: &str) -> Result<Vec<RecordBatch>> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .map_err(|e| malformed(format!("rowsetBase64 is not base64 ({e})")))?;
    let reader = arrow_ipc::reader::StreamReader::try_new(Cursor::new(bytes), None)
        .map_err(|e| malformed(format!("rowsetBase64 is not an Arrow IPC stream ({e})")))?;
    reader
        .map(|batch| batch.map_err(|e| malformed(format!("an Arrow batch does not decode ({e})"))))
        .collect()
}

impl QueryResult {
    /// Every cell as text (Arrow values formatted as Arrow displays them,
    /// JSON values as sent), NULL as `None`.
    pub fn text_rows(&self) -> Result<Vec<Vec<Option<String>>>> {
        let batches = match &self.rows {
            ResultRows::Json(rows) => return Ok(rows.clone()),
            ResultRows::Arrow(batches) => batches,
        };
        let options = arrow::util::display::FormatOptions::default();
        let mut rows = Vec::new();
        for batch in batches {
            let formatters = batch
                .columns()
                .iter()
                .map(|c| arrow::util::display::ArrayFormatter::try_new(c.as_ref(), &options))
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|e| malformed(format!("a result column cannot be shown as text ({e})")))?;
            for row in 0..batch.num_rows() {
                rows.push(
                    batch
                        .columns()
                        .iter()
                        .zip(&formatters)
                        .map(|(column, format)| {
                            (!column.is_null(row)).then(|| format.value(row).to_string())
                        })
                        .collect(),
                );
            }
        }
        Ok(rows)
    }
}
