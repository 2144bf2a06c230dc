//! [`DataPipeline`]: copies existing rows from a [`Source`] into a [`Sink`],
//! then streams committed changes, confirming to the source only what the
//! sink has durably stored.

mod config;

pub use config::{BatchConfig, PipelineAction};

use std::sync::Arc;

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::sinks::Sink;
use crate::sources::{CdcStream, Source, TableCopyStream};
use crate::types::change::CdcBatch;
use crate::types::{Lsn, TableSchema};
use crate::{Error, ErrorKind, Result};

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

        let cdc = self
            .source
            .start_cdc(&state, &self.batch, self.cancel.clone())
            .await?;
        let durable = cdc.durable_sender();
        // One batch in flight: the stream reads the next batch while the sink
        // writes this one, and waits (reading nothing more) while it is full.
        let (batches, mut received) = mpsc::channel(1);
        let reader = tokio::spawn(read_batches(cdc, batches));
        let outcome = self
            .write_batches(&mut received, &durable, &mut report)
            .await;
        if outcome.is_err() {
            // The stream may be waiting for data that will never be written.
            reader.abort();
            return outcome.map(|_| report);
        }
        drop(received);
        let mut cdc = reader.await.map_err(|e| {
            Error::with_source(
                ErrorKind::Connection,
                "the change stream task failed; restart the pipeline to resume from the last stored \
                 position",
                e,
            )
        })?;
        if let Ok(Some(lsn)) = outcome {
            cdc.confirm_durable(lsn).await?;
        }
        if let Err(close_error) = cdc.close().await {
            warn!(error = %close_error, "closing the change stream failed");
        }
        Ok(report)
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

    /// Writes the batches the stream task sends until it ends; returns the
    /// last durable LSN the sink reported.
    async fn write_batches(
        &mut self,
        received: &mut mpsc::Receiver<Result<CdcBatch>>,
        durable: &watch::Sender<Lsn>,
        report: &mut PipelineReport,
    ) -> Result<Option<Lsn>> {
        let mut last = None;
        while let Some(batch) = received.recv().await {
            let batch = batch?;
            report.cdc_batches += 1;
            report.transactions += batch.transactions;
            let stored = self.sink.write_cdc_batch(batch).await?;
            // The stream confirms it to the source at once, even when idle.
            durable.send_replace(stored);
            last = Some(stored);
        }
        Ok(last)
    }
}

/// The stream task: reads batches into `batches` until the stream ends,
/// fails, or the pipeline stops listening; gives the stream back.
async fn read_batches<C: CdcStream>(mut cdc: C, batches: mpsc::Sender<Result<CdcBatch>>) -> C {
    loop {
        let (item, end) = match cdc.next_batch().await {
            Ok(Some(batch)) => (Ok(batch), false),
            Ok(None) => return cdc,
            Err(error) => (Err(error), true),
        };
        if batches.send(item).await.is_err() || end {
            return cdc;
        }
    }
}
