//! [`DataPipeline`]: copies existing rows from a [`Source`] into a [`Sink`],
//! then streams committed changes, confirming to the source only what the
//! sink has durably stored.

mod config;
pub mod manager;
mod metrics;
mod phase;

pub use config::{BatchConfig, PipelineAction, RetryConfig};
pub use manager::{ManagedPipeline, PipelineManager, PipelineStatus};
pub use phase::PipelinePhase;

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use self::metrics::{BatchFigures, PipelineMetrics};
use crate::sinks::Sink;
use crate::sources::{CdcStream, Source, TableCopyStream};
use crate::types::change::{CdcBatch, ResumptionState};
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
    retry: RetryConfig,
    cancel: CancellationToken,
    metrics: PipelineMetrics,
    phase: watch::Sender<PipelinePhase>,
}

/// Where a failure of the backfill or of the streaming came from: the
/// source's failures may be ridden through by reconnecting, the sink's stop
/// the pipeline.
enum StreamFailure {
    Source(Error),
    Sink(Error),
}

/// The source failures since the last progress: how many pauses so far,
/// and since when.
#[derive(Default)]
struct Outage {
    attempt: u32,
    since: Option<Instant>,
}

impl<S: Source, K: Sink> DataPipeline<S, K> {
    /// Creates a pipeline with the default [`BatchConfig`].
    pub fn new(source: S, sink: K, action: PipelineAction) -> Self {
        Self {
            source,
            sink,
            action,
            batch: BatchConfig::default(),
            retry: RetryConfig::default(),
            cancel: CancellationToken::new(),
            metrics: PipelineMetrics::new("pipeline"),
            phase: watch::channel(PipelinePhase::Starting).0,
        }
    }

    /// What the pipeline is doing now, and every change of it: `Streaming`
    /// once the change stream is open (a readiness check waits for it),
    /// `Stopped` when [`start`](Self::start) returns.
    pub fn phase(&self) -> watch::Receiver<PipelinePhase> {
        self.phase.subscribe()
    }

    /// Names the pipeline in its metrics (label `pipeline`; default
    /// `pipeline`). The counters and gauges go to the recorder the
    /// application installed through the `metrics` crate (docs/metrics.md).
    pub fn with_name(mut self, name: &str) -> Self {
        self.metrics = PipelineMetrics::new(name);
        self
    }

    /// Sets how the pipeline starts again after the source or the sink
    /// fails, during the backfill or while streaming ([`RetryConfig`]).
    pub fn with_retry_config(mut self, retry: RetryConfig) -> Self {
        self.retry = retry;
        self
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
        self.phase.send_replace(PipelinePhase::Starting);
        let result = self.run().await;
        self.phase.send_replace(PipelinePhase::Stopped);
        result
    }

    async fn run(&mut self) -> Result<PipelineReport> {
        self.batch.validate()?;
        let mut report = PipelineReport::default();
        let mut state = self.sink.resumption_state().await?;
        let mut plan = self.source.prepare(self.action, &state).await?;
        self.sink.write_table_schemas(&plan.tables).await?;
        let mut outage = Outage::default();

        // Backfill; a source failure that may pass copies the tables not
        // yet copied again, in a new snapshot.
        if self.action != PipelineAction::CdcOnly {
            let mut next = 0;
            while next < plan.tables_to_copy.len() {
                self.phase.send_replace(PipelinePhase::Copying);
                let table = plan.tables_to_copy[next].clone();
                if self.cancel.is_cancelled() {
                    info!("cancelled during backfill");
                    return Ok(report);
                }
                let copied = match self.copy_table(&table).await {
                    Ok(Some(rows)) => self
                        .sink
                        .end_table_copy(&table, plan.snapshot_lsn)
                        .await
                        .map(|()| rows)
                        .map_err(StreamFailure::Sink),
                    Ok(None) => {
                        info!(table = %table.name, "cancelled during backfill; the table will be copied again");
                        return Ok(report);
                    }
                    Err(failure) => Err(failure),
                };
                let rows = match copied {
                    Ok(rows) => rows,
                    Err(failure) => match self.recover(failure, self.action, &mut outage).await? {
                        Some((recovered_state, recovered_plan)) => {
                            state = recovered_state;
                            plan = recovered_plan;
                            next = 0;
                            continue;
                        }
                        None => return Ok(report),
                    },
                };
                state.copied_tables.insert(table.id, plan.snapshot_lsn);
                self.metrics.table_copied();
                report.tables_copied += 1;
                report.rows_copied += rows;
                outage = Outage::default();
                info!(table = %table.name, rows, "table copied");
                next += 1;
            }
        }

        if self.action == PipelineAction::TableCopiesOnly || self.cancel.is_cancelled() {
            return Ok(report);
        }

        // Stream changes; a source failure that may pass (a restart, a
        // network fault) reconnects and resumes from what the sink stored.
        loop {
            let batches_before = report.cdc_batches;
            let failure = match self.stream_changes(&state, &mut report).await {
                Ok(()) => return Ok(report),
                Err(failure) => failure,
            };
            if report.cdc_batches > batches_before {
                // It delivered since the last failure: a new outage.
                outage = Outage::default();
            }
            match self
                .recover(failure, PipelineAction::CdcOnly, &mut outage)
                .await?
            {
                Some((recovered_state, _)) => state = recovered_state,
                None => return Ok(report),
            }
        }
    }

    /// After a failure of the source or the sink: unless it is permanent
    /// or the outage has lasted `give_up_after`, pauses (with backoff),
    /// reads what the sink stored and prepares the source again for
    /// `action`, until that works. `None` when cancelled meanwhile.
    ///
    /// The stream starts again from what the sink stored, so a batch the
    /// sink failed to store is sent again; a copy the sink failed is copied
    /// again in a new snapshot.
    async fn recover(
        &mut self,
        failure: StreamFailure,
        action: PipelineAction,
        outage: &mut Outage,
    ) -> Result<Option<(ResumptionState, crate::sources::SourcePlan)>> {
        self.phase.send_replace(PipelinePhase::Recovering);
        let since = *outage.since.get_or_insert_with(Instant::now);
        let (mut error, mut side) = match failure {
            StreamFailure::Source(error) => (error, "source"),
            StreamFailure::Sink(error) => (error, "sink"),
        };
        loop {
            self.metrics.error(error.kind());
            if !error.is_retryable() || since.elapsed() >= self.retry.give_up_after {
                return Err(error);
            }
            self.metrics.retry(side);
            let pause = self.retry.backoff(outage.attempt, jitter());
            outage.attempt = outage.attempt.saturating_add(1);
            warn!(error = %error, side, attempt = outage.attempt, pause_ms = pause.as_millis() as u64, "the {side} failed; retrying");
            tokio::select! {
                biased;
                _ = self.cancel.cancelled() => return Ok(None),
                _ = tokio::time::sleep(pause) => {}
            }
            let state = match self.sink.resumption_state().await {
                Ok(state) => state,
                Err(next) => {
                    (error, side) = (next, "sink");
                    continue;
                }
            };
            let plan = match self.source.prepare(action, &state).await {
                Ok(plan) => plan,
                Err(next) => {
                    (error, side) = (next, "source");
                    continue;
                }
            };
            // Columns changed during the outage arrive in no Relation
            // message: bring the sink to the catalog's schemas now.
            if let Err(next) = self.sink.write_table_schemas(&plan.tables).await {
                (error, side) = (next, "sink");
                continue;
            }
            info!(attempt = outage.attempt, "recovered; going on");
            return Ok(Some((state, plan)));
        }
    }

    /// Streams changes into the sink until the stream ends, fails or the
    /// pipeline is cancelled.
    async fn stream_changes(
        &mut self,
        state: &ResumptionState,
        report: &mut PipelineReport,
    ) -> std::result::Result<(), StreamFailure> {
        let cdc = self
            .source
            .start_cdc(state, &self.batch, self.cancel.clone())
            .await
            .map_err(StreamFailure::Source)?;
        self.phase.send_replace(PipelinePhase::Streaming);
        let durable = cdc.durable_sender();
        // One batch in flight: the stream reads the next batch while the sink
        // writes this one, and waits (reading nothing more) while it is full.
        let (batches, mut received) = mpsc::channel(1);
        let reader = tokio::spawn(read_batches(cdc, batches));
        let outcome = self.write_batches(&mut received, &durable, report).await;
        if outcome.is_err() {
            // The stream may be waiting for data that will never be written.
            reader.abort();
            return outcome.map(|_| ());
        }
        drop(received);
        let mut cdc = reader.await.map_err(|e| {
            StreamFailure::Source(Error::with_source(
                ErrorKind::Connection,
                "the change stream task failed; restart the pipeline to resume from the last stored \
                 position",
                e,
            ))
        })?;
        if let Ok(Some(lsn)) = outcome {
            cdc.confirm_durable(lsn)
                .await
                .map_err(StreamFailure::Source)?;
        }
        if let Err(close_error) = cdc.close().await {
            warn!(error = %close_error, "closing the change stream failed");
        }
        Ok(())
    }

    /// Copies one table; `None` when cancelled midway.
    async fn copy_table(
        &mut self,
        table: &Arc<TableSchema>,
    ) -> std::result::Result<Option<u64>, StreamFailure> {
        self.sink
            .begin_table_copy(table)
            .await
            .map_err(StreamFailure::Sink)?;
        let mut copy = self
            .source
            .copy_table(table, &self.batch)
            .await
            .map_err(StreamFailure::Source)?;
        let mut rows = 0u64;
        loop {
            let next = tokio::select! {
                biased;
                _ = self.cancel.cancelled() => return Ok(None),
                next = copy.next_batch() => next.map_err(StreamFailure::Source)?,
            };
            let Some(batch) = next else {
                return Ok(Some(rows));
            };
            let (count, bytes) = (
                batch.num_rows() as u64,
                batch.get_array_memory_size() as u64,
            );
            self.sink
                .write_table_rows(table, batch)
                .await
                .map_err(StreamFailure::Sink)?;
            rows += count;
            self.metrics.rows_copied(&table.name, count, bytes);
        }
    }

    /// Writes the batches the stream task sends until it ends; returns the
    /// last durable LSN the sink reported.
    async fn write_batches(
        &mut self,
        received: &mut mpsc::Receiver<Result<CdcBatch>>,
        durable: &watch::Sender<Lsn>,
        report: &mut PipelineReport,
    ) -> std::result::Result<Option<Lsn>, StreamFailure> {
        let mut last = None;
        loop {
            let batch = tokio::select! {
                batch = received.recv() => match batch {
                    Some(batch) => batch.map_err(StreamFailure::Source)?,
                    None => break,
                },
                _ = tokio::time::sleep(IDLE_TICK) => {
                    let stored = self.sink.store_while_idle().await.map_err(StreamFailure::Sink)?;
                    if let Some(stored) = stored {
                        durable.send_replace(stored);
                        last = Some(stored);
                    }
                    continue;
                }
            };
            let transactions = batch.transactions;
            let figures = BatchFigures::of(&batch);
            let stored = self
                .sink
                .write_cdc_batch(batch)
                .await
                .map_err(StreamFailure::Sink)?;
            // Counted once stored: a batch the sink keeps failing is no
            // progress, so the outage runs on to `give_up_after`.
            report.cdc_batches += 1;
            report.transactions += transactions;
            self.metrics.batch_stored(figures, stored);
            // The stream confirms it to the source at once, even when idle.
            durable.send_replace(stored);
            last = Some(stored);
        }
        Ok(last)
    }
}

/// How long the stream may be quiet before the sink is asked to store
/// what it holds back ([`Sink::store_while_idle`]).
const IDLE_TICK: Duration = Duration::from_secs(1);

/// A number in [0, 1) that differs between processes and calls, for the
/// backoff's jitter (no cryptographic quality needed).
fn jitter() -> f64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let mut x = u64::from(nanos) ^ (u64::from(std::process::id()) << 32) | 1;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    (x % 1_000_000) as f64 / 1_000_000.0
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
