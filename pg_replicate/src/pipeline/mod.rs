//! [`DataPipeline`]: copies existing rows from a [`Source`] into a [`Sink`],
//! then streams committed changes, confirming to the source only what the
//! sink has durably stored.

mod config;

pub use config::{BatchConfig, PipelineAction};

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::sinks::Sink;
use crate::sources::{CdcStream, Source, TableCopyStream};
use crate::types::TableSchema;
use crate::Result;

/// Counters of one pipeline run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PipelineReport {
    /// Tables whose backfill completed in this run.
    pub tables_copied: u64,
    /// Rows copied in this run.
    pub rows_copied: u64,
    /// CDC batches the sink stored in this run.
    pub cdc_batches: u64,
    /// Transactions the sink stored in this run.
    pub transactions: u64,
}

/// Wires a source to a sink: backfill, then CDC, until the stream ends or
/// the cancellation token fires.
pub struct DataPipeline<S: Source, K: Sink> {
    source: S,
    sink: K,
    action: PipelineAction,
    batch: BatchConfig,
    cancel: CancellationToken,
}

impl<S: Source, K: Sink> DataPipeline<S, K> {
    /// Creates a pipeline with the default [`BatchConfig`].
    pub fn new(source: S, sink: K, action: PipelineAction) -> Self {
        Self {
            source,
            sink,
            action,
            batch: BatchConfig::default(),
            cancel: CancellationToken::new(),
        }
    }

    /// Sets the batch limits.
    pub fn with_batch_config(mut self, batch: BatchConfig) -> Self {
        self.batch = batch;
        self
    }

    /// Uses `cancel` for graceful shutdown: when it fires, the pipeline hands
    /// the sink what it has completed, confirms it and returns.
    pub fn with_cancellation(mut self, cancel: CancellationToken) -> Self {
        self.cancel = cancel;
        self
    }

    /// A token that stops this pipeline gracefully when cancelled.
    pub fn cancellation_token(&self) -> CancellationToken {
        self.cancel.clone()
    }

    /// The sink, for inspection after a run.
    pub fn sink(&self) -> &K {
        &self.sink
    }

    /// Gives back the source and the sink.
    pub fn into_parts(self) -> (S, K) {
        (self.source, self.sink)
    }

    /// Runs the pipeline: backfill (unless CDC only), then CDC (unless copies
    /// only) until the stream ends or cancellation is requested.
    pub async fn start(&mut self) -> Result<PipelineReport> {
        self.batch.validate()?;
        let mut report = PipelineReport::default();
        let mut state = self.sink.resumption_state().await?;
        let plan = self.source.prepare(self.action, &state).await?;
        self.sink.write_table_schemas(&plan.tables).await?;

        if self.action != PipelineAction::CdcOnly {
            for table in &plan.tables_to_copy {
                if self.cancel.is_cancelled() {
                    info!("cancelled during backfill");
                    return Ok(report);
                }
                let Some(rows) = self.copy_table(table).await? else {
                    info!(table = %table.name, "cancelled during backfill; the table will be copied again");
                    return Ok(report);
                };
                self.sink.end_table_copy(table, plan.snapshot_lsn).await?;
                state.copied_tables.insert(table.id, plan.snapshot_lsn);
                report.tables_copied += 1;
                report.rows_copied += rows;
                info!(table = %table.name, rows, "table copied");
            }
        }

        if self.action == PipelineAction::TableCopiesOnly || self.cancel.is_cancelled() {
            return Ok(report);
        }

        let mut cdc = self
            .source
            .start_cdc(&state, &self.batch, self.cancel.clone())
            .await?;
        let outcome = self.stream_changes(&mut cdc, &mut report).await;
        if let Err(close_error) = cdc.close().await {
            warn!(error = %close_error, "closing the change stream failed");
        }
        outcome.map(|()| report)
    }

    /// Copies one table; `None` when cancelled midway.
    async fn copy_table(&mut self, table: &Arc<TableSchema>) -> Result<Option<u64>> {
        self.sink.begin_table_copy(table).await?;
        let mut copy = self.source.copy_table(table, &self.batch).await?;
        let mut rows = 0u64;
        loop {
            let next = tokio::select! {
                biased;
                _ = self.cancel.cancelled() => return Ok(None),
                next = copy.next_batch() => next?,
            };
            let Some(batch) = next else {
                return Ok(Some(rows));
            };
            rows += batch.num_rows() as u64;
            self.sink.write_table_rows(table, batch).await?;
        }
    }

    async fn stream_changes(
        &mut self,
        cdc: &mut S::Cdc,
        report: &mut PipelineReport,
    ) -> Result<()> {
        while let Some(batch) = cdc.next_batch().await? {
            report.cdc_batches += 1;
            report.transactions += batch.transactions;
            let durable = self.sink.write_cdc_batch(batch).await?;
            cdc.confirm_durable(durable).await?;
        }
        Ok(())
    }
}
