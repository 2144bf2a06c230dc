//! The DuckDB sink: a replica of the published tables in a DuckDB file,
//! applied exactly once.
//!
//! [`DuckDbSink`] creates a DuckDB table per Postgres table (DuckDB schema
//! named after the Postgres schema, faithful types, the primary key kept;
//! see [`schema`]), streams the backfill of each table into one
//! `INSERT … SELECT` over an Arrow stream (history tables: DuckDB's Arrow
//! appender), and applies every CDC batch in **one DuckDB transaction** that also
//! records the batch's end LSN. The tables copied and the last applied LSN
//! live in the schema `_pg_replicate` of the same file (`state`), written
//! in the same transactions as the data they describe: a process killed at
//! any moment restarts from exactly what was committed, and the LSN the
//! pipeline confirms to Postgres is never ahead of it.
//!
//! [`DuckDbMode`] chooses between the current state of each table, an
//! append-only change history per table, or both.
//!
//! Rooms: `config` ([`DuckDbSinkConfig`]), `schema` (types, names, DDL),
//! `migrate` (creating and converting tables), `encoder` (Arrow batches
//! for the appender; the rounds of set-based SQL come from `sinks::plan`),
//! `apply` (the SQL of an apply), `state` (resumption state), `file`
//! (opening the file, one writer per file), `raw` (DuckDB's C API where
//! duckdb-rs has no counterpart), `locked_stream` (an Arrow C stream safe
//! from any thread), `streamed_copy` (the backfill as one streamed
//! `INSERT`), `sink` (the [`Sink`](crate::sinks::Sink) implementation). The
//! user guide is `docs/duckdb.md`.
//!
//! DuckDB calls block the calling thread: on a multi-threaded Tokio runtime
//! they run in [`tokio::task::block_in_place`], elsewhere directly (the
//! pipeline waits for the sink either way).

mod apply;
mod config;
mod encoder;
mod file;
mod locked_stream;
mod migrate;
mod raw;
pub mod schema;
mod sink;
mod state;
mod streamed_copy;
#[cfg(test)]
mod tests;

use std::fmt::Display;

use arrow::record_batch::RecordBatch;
use duckdb::Connection;

pub use apply::ApplyStats;
pub use config::{DuckDbMode, DuckDbSinkConfig, DEFAULT_MEMORY_LIMIT, DEFAULT_STORAGE_VERSION};
pub use file::DuckDbReader;
pub use sink::DuckDbSink;
pub use state::FORMAT_VERSION;

use crate::types::TableName;
use crate::{Error, ErrorKind, Result};

/// A DuckDB failure while doing `what`, of kind [`ErrorKind::Sink`]: the
/// transaction is rolled back and nothing of it is stored.
pub(crate) fn duck_error(what: impl Display, error: duckdb::Error) -> Error {
    Error::with_source(
        ErrorKind::Sink,
        format!("DuckDB failed to {what} (the transaction was rolled back; a restart resumes from the last committed batch)"),
        error,
    )
}

/// Runs `f` in a DuckDB transaction: committed when it succeeds, rolled
/// back when it fails.
pub(crate) fn in_transaction<T>(
    conn: &Connection,
    what: &str,
    f: impl FnOnce(&Connection) -> Result<T>,
) -> Result<T> {
    conn.execute_batch("BEGIN TRANSACTION")
        .map_err(|e| duck_error(format!("begin a transaction to {what}"), e))?;
    match f(conn) {
        Ok(value) => {
            commit(conn, what)?;
            Ok(value)
        }
        Err(error) => {
            rollback(conn);
            Err(error)
        }
    }
}

/// Commits the open transaction; rolls back if the commit fails.
pub(crate) fn commit(conn: &Connection, what: &str) -> Result<()> {
    conn.execute_batch("COMMIT").map_err(|e| {
        rollback(conn);
        duck_error(format!("commit the transaction to {what}"), e)
    })
}

/// Rolls back the open transaction, if any. (duckdb-rs cannot tell whether
/// one is open, so the error DuckDB gives when none is, is ignored.)
pub(crate) fn rollback(conn: &Connection) {
    if let Err(error) = conn.execute_batch("ROLLBACK") {
        tracing::debug!(%error, "DuckDB rollback (no transaction open?)");
    }
}

/// Appends `rows` (columns in the order of `columns`) to `table` through
/// DuckDB's Arrow appender, in the open transaction.
pub(crate) fn append(
    conn: &Connection,
    table: &TableName,
    columns: &[String],
    rows: RecordBatch,
) -> Result<()> {
    if rows.num_rows() == 0 {
        return Ok(());
    }
    let rows = encoder::for_appender(rows)?;
    let names: Vec<&str> = columns.iter().map(String::as_str).collect();
    let mut appender = conn
        .appender_with_columns_to_db(&table.name, &table.schema, &names)
        .map_err(|e| duck_error(format!("open an appender on {table}"), e))?;
    appender
        .append_record_batch(rows)
        .and_then(|()| appender.flush())
        .map_err(|e| duck_error(format!("append rows to {table}"), e))
}

/// Runs blocking DuckDB work without stalling other tasks of a
/// multi-threaded runtime.
pub(crate) fn blocking<T>(f: impl FnOnce() -> T) -> T {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}
