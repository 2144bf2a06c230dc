//! Sources produce a table's existing rows (backfill) and then a stream of
//! committed changes (CDC).

#[cfg(feature = "parquet-source")]
pub mod parquet;
pub mod postgres;

use std::sync::Arc;

use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

use crate::pipeline::{BatchConfig, PipelineAction};
use crate::types::change::{CdcBatch, ResumptionState};
use crate::types::{Lsn, TableSchema};
use crate::Result;

/// What a source will do, decided from the sink's resumption state.
#[derive(Clone, Debug)]
pub struct SourcePlan {
    /// Every replicated table, in the order the sink should learn them.
    pub tables: Vec<Arc<TableSchema>>,
    /// The tables to copy now, with the snapshot LSN the copy reflects.
    pub tables_to_copy: Vec<Arc<TableSchema>>,
    /// LSN of the snapshot the copies are taken in.
    pub snapshot_lsn: Lsn,
}

/// A source of table rows and changes.
#[async_trait]
pub trait Source: Send {
    /// Stream of one table's rows.
    type TableCopy: TableCopyStream;
    /// Stream of committed changes.
    type Cdc: CdcStream;

    /// Checks the source's setup, learns the tables and decides what to copy
    /// given what the sink already has.
    async fn prepare(
        &mut self,
        action: PipelineAction,
        state: &ResumptionState,
    ) -> Result<SourcePlan>;

    /// Starts copying one table of the plan.
    async fn copy_table(
        &mut self,
        table: &Arc<TableSchema>,
        batch: &BatchConfig,
    ) -> Result<Self::TableCopy>;

    /// Starts streaming changes committed after `state`.
    async fn start_cdc(
        &mut self,
        state: &ResumptionState,
        batch: &BatchConfig,
        cancel: CancellationToken,
    ) -> Result<Self::Cdc>;
}

/// Rows of one table, in Arrow batches of the table's schema.
#[async_trait]
pub trait TableCopyStream: Send {
    /// The next batch, or `None` when the copy is complete.
    async fn next_batch(&mut self) -> Result<Option<RecordBatch>>;
}

/// Committed changes in batches of transactions.
///
/// The pipeline reads a stream in a task of its own while the sink writes
/// the previous batch, and reports what the sink stored through
/// [`durable_sender`](Self::durable_sender).
#[async_trait]
pub trait CdcStream: Send + 'static {
    /// The next batch; `None` once the stream ends or cancellation was
    /// requested (after handing out what was already complete).
    async fn next_batch(&mut self) -> Result<Option<CdcBatch>>;

    /// Tells the source that everything up to `lsn` is durably stored, so it
    /// may release it (for Postgres: confirm it to the slot).
    async fn confirm_durable(&mut self, lsn: Lsn) -> Result<()>;

    /// A sender for the durably stored LSN from another task: the stream
    /// confirms each new value as [`confirm_durable`](Self::confirm_durable)
    /// would, also while [`next_batch`](Self::next_batch) waits for data.
    fn durable_sender(&self) -> tokio::sync::watch::Sender<Lsn>;

    /// Ends the stream cleanly, confirming what was durably stored.
    async fn close(self) -> Result<()>;
}
