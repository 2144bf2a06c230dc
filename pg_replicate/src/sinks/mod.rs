//! Sinks store what a source produces.
//!
//! The pipeline calls a sink in this order: [`Sink::resumption_state`] once,
//! [`Sink::write_table_schemas`] with every table before any data, then per
//! copied table [`Sink::begin_table_copy`], [`Sink::write_table_rows`]
//! (repeatedly) and [`Sink::end_table_copy`], and then
//! [`Sink::write_cdc_batch`] for every batch of changes, with
//! [`Sink::store_while_idle`] while no batch comes.

#[cfg(feature = "bigquery")]
pub mod bigquery;
#[cfg(any(
    feature = "duckdb",
    feature = "bigquery",
    feature = "snowflake",
    feature = "files",
    feature = "postgres-sink"
))]
pub(crate) mod changes;
#[cfg(feature = "duckdb")]
pub mod duckdb;
#[cfg(feature = "files")]
pub mod files;
#[cfg(any(
    feature = "bigquery",
    feature = "snowflake",
    feature = "files-object-store"
))]
pub(crate) mod local_server;
#[cfg(any(feature = "duckdb", feature = "bigquery", feature = "postgres-sink"))]
pub(crate) mod plan;
#[cfg(feature = "postgres-sink")]
pub mod postgres;
#[cfg(any(feature = "bigquery", feature = "snowflake"))]
pub(crate) mod progress;
#[cfg(feature = "snowflake")]
pub mod snowflake;
pub mod stdout;
#[cfg(test)]
pub(crate) mod test_fixtures;

use std::sync::Arc;

use arrow::record_batch::RecordBatch;
use async_trait::async_trait;

use crate::types::change::{CdcBatch, ResumptionState};
use crate::types::{Lsn, TableSchema};
use crate::Result;

/// A destination for replicated data.
#[async_trait]
pub trait Sink: Send {
    /// What earlier runs stored durably: copied tables and the last applied
    /// LSN. A sink that keeps no state returns the default (nothing).
    async fn resumption_state(&mut self) -> Result<ResumptionState>;

    /// The schemas of all replicated tables, before any of their data.
    async fn write_table_schemas(&mut self, tables: &[Arc<TableSchema>]) -> Result<()>;

    /// A table's backfill starts; rows a previous, interrupted copy of the
    /// same table left behind must be discarded.
    async fn begin_table_copy(&mut self, table: &Arc<TableSchema>) -> Result<()>;

    /// Rows of a table being copied, laid out as
    /// [`table_arrow_schema`](crate::types::change::table_arrow_schema).
    async fn write_table_rows(&mut self, table: &Arc<TableSchema>, rows: RecordBatch)
        -> Result<()>;

    /// A table's backfill is complete; it reflects the snapshot at
    /// `snapshot_lsn`. A stateful sink records this durably.
    async fn end_table_copy(&mut self, table: &Arc<TableSchema>, snapshot_lsn: Lsn) -> Result<()>;

    /// Applies a batch of committed changes and returns the LSN up to which
    /// everything the sink received is durably stored (normally
    /// `batch.end_lsn`). The pipeline confirms exactly this LSN to the source.
    async fn write_cdc_batch(&mut self, batch: CdcBatch) -> Result<Lsn>;

    /// Called while the stream is quiet (no batch for about a second): a
    /// sink that holds data back before making it durable (files waiting
    /// for their roll time) stores what is due and returns its new durable
    /// LSN. `None`, the default, when nothing changed.
    async fn store_while_idle(&mut self) -> Result<Option<Lsn>> {
        Ok(None)
    }
}
