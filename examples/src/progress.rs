//! [`ProgressSink`]: wraps any sink and prints progress to stderr — rows
//! copied per table with their rate (and, with row estimates, a bar, the
//! share done and the time left) during backfill, and a periodic status
//! line during CDC (last LSN, changes per second, lag behind Postgres).
//! When stderr is a terminal the backfill line is redrawn in place.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::AsArray;
use arrow::datatypes::TimestampMicrosecondType;
use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use pg_replicate::postgres::PgConnectionConfig;
use pg_replicate::sinks::Sink;
use pg_replicate::types::change::{CdcBatch, CdcEvent, ResumptionState, COMMIT_TIME_COLUMN};
use pg_replicate::types::{Lsn, TableId, TableSchema};
use pg_replicate::Result;

/// How often progress lines are printed.
const PRINT_EVERY: Duration = Duration::from_secs(2);
/// How often the backfill line is redrawn on a terminal.
const DRAW_EVERY: Duration = Duration::from_millis(200);

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
    /// Where to read row estimates from, until they are read.
    estimates_from: Option<PgConnectionConfig>,
    /// Rows per table as `pg_class.reltuples` estimates them.
    estimates: HashMap<TableId, u64>,
    /// The estimate of the table being copied.
    table_estimate: Option<u64>,
    /// stderr is a terminal: redraw the backfill line in place.
    terminal: bool,
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
            estimates_from: None,
            estimates: HashMap::new(),
            table_estimate: None,
            terminal: std::io::stderr().is_terminal(),
        }
    }

    /// The same sink, showing the share of each table copied and the time
    /// left, from the row estimates (`pg_class.reltuples`) of the server
    /// `connection` names.
    pub fn with_estimates_from(mut self, connection: PgConnectionConfig) -> Self {
        self.estimates_from = Some(connection);
        self
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

/// Row estimates of `tables` (a partitioned table: the sum of its
/// partitions'); tables never analyzed have none.
async fn row_estimates(
    connection: &PgConnectionConfig,
    tables: &[Arc<TableSchema>],
) -> Result<HashMap<TableId, u64>> {
    let client = pg_replicate::postgres::client::connect_query_client(connection).await?;
    let oids: Vec<u32> = tables.iter().map(|t| t.id.0).collect();
    let rows = client
        .query(
            "SELECT c.oid, CASE WHEN c.relkind = 'p' THEN \
                 (SELECT sum(p.reltuples) FILTER (WHERE p.reltuples >= 0) FROM pg_inherits i \
                  JOIN pg_class p ON p.oid = i.inhrelid WHERE i.inhparent = c.oid)::float8 \
               WHEN c.reltuples >= 0 THEN c.reltuples::float8 END \
             FROM pg_class c WHERE c.oid = ANY($1)",
            &[&oids],
        )
        .await
        .map_err(|e| {
            pg_replicate::Error::with_source(
                pg_replicate::ErrorKind::Connection,
                "cannot read pg_class.reltuples",
                e,
            )
        })?;
    Ok(rows
        .iter()
        .filter_map(|row| {
            let estimate: Option<f64> = row.get(1);
            Some((TableId(row.get(0)), estimate? as u64))
        })
        .collect())
}

/// `n` with thousands separators.
fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The backfill progress of `table`: rows and rate, and with an estimate
/// a bar, the share done and the time left.
pub fn copy_progress(table: &str, rows: u64, elapsed: Duration, estimate: Option<u64>) -> String {
    let rate = rows as f64 / elapsed.as_secs_f64().max(1e-9);
    let rate = format!("{} rows/s", grouped(rate as u64));
    match estimate {
        Some(estimate) if estimate > 0 => {
            let share = (rows as f64 / estimate as f64).min(1.0);
            let filled = (share * 20.0).round() as usize;
            let bar = format!("{}{}", "#".repeat(filled), "-".repeat(20 - filled));
            let left = if rows >= estimate {
                "past the estimate".to_owned()
            } else {
                let seconds = (estimate - rows) as f64
                    / (rows as f64 / elapsed.as_secs_f64().max(1e-9)).max(1e-9);
                if rows == 0 || !seconds.is_finite() {
                    "ETA -".to_owned()
                } else {
                    format!("ETA {}", short_duration(seconds))
                }
            };
            format!(
                "copying {table} [{bar}] {:.0}% {} of ~{} rows | {rate} | {left}",
                share * 100.0,
                grouped(rows),
                grouped(estimate)
            )
        }
        _ => format!("copying {table}: {} rows | {rate}", grouped(rows)),
    }
}

fn short_duration(seconds: f64) -> String {
    let seconds = seconds.ceil() as u64;
    match seconds {
        0..=59 => format!("{seconds} s"),
        60..=3599 => format!("{} min {} s", seconds / 60, seconds % 60),
        _ => format!("{} h {} min", seconds / 3600, (seconds % 3600) / 60),
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
        if let Some(connection) = self.estimates_from.take() {
            match row_estimates(&connection, tables).await {
                Ok(estimates) => self.estimates = estimates,
                Err(error) => eprintln!("no row estimates for the progress display: {error}"),
            }
        }
        self.inner.write_table_schemas(tables).await
    }

    async fn begin_table_copy(&mut self, table: &Arc<TableSchema>) -> Result<()> {
        self.copy_rows = 0;
        self.copy_started = Instant::now();
        self.table_estimate = self.estimates.get(&table.id).copied();
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
        let every = if self.terminal {
            DRAW_EVERY
        } else {
            PRINT_EVERY
        };
        if self.last_print.elapsed() >= every {
            let line = copy_progress(
                &table.name.to_string(),
                self.copy_rows,
                self.copy_started.elapsed(),
                self.table_estimate,
            );
            if self.terminal {
                // Back to the line's start, then clear what is left of it.
                eprint!("\r{line}\x1b[K");
            } else {
                eprintln!("{line}");
            }
            self.last_print = Instant::now();
        }
        Ok(())
    }

    async fn end_table_copy(&mut self, table: &Arc<TableSchema>, snapshot_lsn: Lsn) -> Result<()> {
        self.inner.end_table_copy(table, snapshot_lsn).await?;
        if self.terminal {
            eprint!("\r\x1b[K");
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_with_an_estimate_shows_share_and_time_left() {
        let line = copy_progress(
            "public.orders",
            250_000,
            Duration::from_secs(2),
            Some(1_000_000),
        );
        assert_eq!(
            line,
            "copying public.orders [#####---------------] 25% 250,000 of ~1,000,000 rows | 125,000 rows/s | ETA 6 s"
        );
        let slow = copy_progress("t", 1_000, Duration::from_secs(10), Some(1_000_000));
        assert!(slow.ends_with("ETA 2 h 46 min"), "{slow}");
        let past = copy_progress("t", 1_200, Duration::from_secs(1), Some(1_000));
        assert!(
            past.contains("[####################] 100%") && past.ends_with("past the estimate"),
            "{past}"
        );
    }

    #[test]
    fn progress_without_an_estimate_shows_rows_and_rate() {
        assert_eq!(
            copy_progress("t", 1_234_567, Duration::from_secs(1), None),
            "copying t: 1,234,567 rows | 1,234,567 rows/s"
        );
        assert_eq!(
            copy_progress("t", 0, Duration::ZERO, Some(0)),
            "copying t: 0 rows | 0 rows/s"
        );
        assert_eq!(grouped(999), "999");
        assert_eq!(grouped(1000), "1,000");
    }
}
