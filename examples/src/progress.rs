//! [`ProgressSink`]: wraps any sink and prints progress to stderr — rows
//! copied per table with their rate during backfill, and a periodic status
//! line during CDC (last LSN, changes per second, lag behind Postgres).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::AsArray;
use arrow::datatypes::TimestampMicrosecondType;
use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use pg_replicate::sinks::Sink;
use pg_replicate::types::change::{CdcBatch, CdcEvent, ResumptionState, COMMIT_TIME_COLUMN};
use pg_replicate::types::{Lsn, TableSchema};
use pg_replicate::Result;

/// How often progress lines are printed.
const PRINT_EVERY: Duration = Duration::from_secs(2);

/// A sink that forwards everything to `inner` and reports progress on stderr.
pub struct ProgressSink<S> {
    inner: S,
    copy_rows: u64,
    copy_started: Instant,
    cdc_changes: Arc<AtomicU64>,
    cdc_transactions: u64,
    window_changes: u64,
    window_started: Instant,
    last_print: Instant,
    last_lsn: Option<Lsn>,
    last_commit_micros: Option<i64>,
}

impl<S: Sink> ProgressSink<S> {
    /// Wraps `inner`.
    pub fn new(inner: S) -> Self {
        let now = Instant::now();
        Self {
            inner,
            copy_rows: 0,
            copy_started: now,
            cdc_changes: Arc::new(AtomicU64::new(0)),
            cdc_transactions: 0,
            window_changes: 0,
            window_started: now,
            last_print: now,
            last_lsn: None,
            last_commit_micros: None,
        }
    }

    /// The wrapped sink.
    pub fn into_inner(self) -> S {
        self.inner
    }

    /// A counter of the row changes the inner sink has stored, readable
    /// while the pipeline runs.
    pub fn changes_counter(&self) -> Arc<AtomicU64> {
        self.cdc_changes.clone()
    }

    fn print_cdc_status(&mut self) {
        let elapsed = self.window_started.elapsed().as_secs_f64().max(1e-9);
        let rate = self.window_changes as f64 / elapsed;
        let lag = self.last_commit_micros.map(|micros| {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_micros() as i64)
                .unwrap_or(micros);
            (now - micros).max(0) as f64 / 1e6
        });
        eprintln!(
            "cdc: up to {} | {} transactions, {} changes | {:.0} changes/s | lag {}",
            self.last_lsn
                .map_or_else(|| "-".to_owned(), |l| l.to_string()),
            self.cdc_transactions,
            self.cdc_changes.load(Ordering::Relaxed),
            rate,
            lag.map_or_else(|| "-".to_owned(), |l| format!("{l:.2} s")),
        );
        self.window_changes = 0;
        self.window_started = Instant::now();
        self.last_print = Instant::now();
    }
}

/// Rows of a batch and the latest commit time it carries, in µs since 1970.
fn batch_facts(batch: &CdcBatch) -> (u64, Option<i64>) {
    let mut rows = 0;
    let mut latest = None;
    for event in &batch.events {
        if let CdcEvent::Changes(changes) = event {
            rows += changes.batch.num_rows() as u64;
            let times = changes
                .batch
                .column_by_name(COMMIT_TIME_COLUMN)
                .map(|c| c.as_primitive::<TimestampMicrosecondType>().clone());
            if let Some(times) = times {
                if !times.is_empty() {
                    let last = times.value(times.len() - 1);
                    latest = Some(latest.map_or(last, |l: i64| l.max(last)));
                }
            }
        }
    }
    (rows, latest)
}

#[async_trait]
impl<S: Sink> Sink for ProgressSink<S> {
    async fn resumption_state(&mut self) -> Result<ResumptionState> {
        let state = self.inner.resumption_state().await?;
        if let Some(lsn) = state.last_lsn {
            eprintln!(
                "resuming after {lsn} with {} table(s) already copied",
                state.copied_tables.len()
            );
        }
        Ok(state)
    }

    async fn write_table_schemas(&mut self, tables: &[Arc<TableSchema>]) -> Result<()> {
        eprintln!("replicating {} table(s)", tables.len());
        self.inner.write_table_schemas(tables).await
    }

    async fn begin_table_copy(&mut self, table: &Arc<TableSchema>) -> Result<()> {
        self.copy_rows = 0;
        self.copy_started = Instant::now();
        eprintln!("copying {} ...", table.name);
        self.inner.begin_table_copy(table).await
    }

    async fn write_table_rows(
        &mut self,
        table: &Arc<TableSchema>,
        rows: RecordBatch,
    ) -> Result<()> {
        self.copy_rows += rows.num_rows() as u64;
        self.inner.write_table_rows(table, rows).await?;
        if self.last_print.elapsed() >= PRINT_EVERY {
            let rate = self.copy_rows as f64 / self.copy_started.elapsed().as_secs_f64().max(1e-9);
            eprintln!(
                "copying {}: {} rows ({rate:.0} rows/s)",
                table.name, self.copy_rows
            );
            self.last_print = Instant::now();
        }
        Ok(())
    }

    async fn end_table_copy(&mut self, table: &Arc<TableSchema>, snapshot_lsn: Lsn) -> Result<()> {
        self.inner.end_table_copy(table, snapshot_lsn).await?;
        let seconds = self.copy_started.elapsed().as_secs_f64().max(1e-9);
        eprintln!(
            "copied {}: {} rows in {seconds:.2} s ({:.0} rows/s)",
            table.name,
            self.copy_rows,
            self.copy_rows as f64 / seconds
        );
        Ok(())
    }

    async fn write_cdc_batch(&mut self, batch: CdcBatch) -> Result<Lsn> {
        let (rows, latest) = batch_facts(&batch);
        let transactions = batch.transactions;
        let durable = self.inner.write_cdc_batch(batch).await?;
        self.cdc_changes.fetch_add(rows, Ordering::Relaxed);
        self.window_changes += rows;
        self.cdc_transactions += transactions;
        self.last_lsn = Some(durable);
        if latest.is_some() {
            self.last_commit_micros = latest;
        }
        if self.last_print.elapsed() >= PRINT_EVERY {
            self.print_cdc_status();
        }
        Ok(durable)
    }
    async fn store_while_idle(&mut self) -> Result<Option<Lsn>> {
        let durable = self.inner.store_while_idle().await?;
        if durable.is_some() {
            self.last_lsn = durable;
        }
        Ok(durable)
    }
}
