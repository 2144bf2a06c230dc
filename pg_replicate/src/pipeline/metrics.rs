//! The pipeline's counters and gauges, through the `metrics` facade: the
//! application installs a recorder (a Prometheus exporter, say) and every
//! pipeline reports to it, labelled by the pipeline's name and the table.
//! Nothing is recorded without a recorder.
//!
//! | name | kind | labels |
//! |---|---|---|
//! | `pg_replicate_rows_copied_total` | counter | pipeline, table |
//! | `pg_replicate_tables_copied_total` | counter | pipeline |
//! | `pg_replicate_changes_total` | counter | pipeline, table |
//! | `pg_replicate_cdc_batches_total` | counter | pipeline |
//! | `pg_replicate_transactions_total` | counter | pipeline |
//! | `pg_replicate_bytes_total` | counter | pipeline (Arrow memory of the batches handed to the sink) |
//! | `pg_replicate_stored_lsn` | gauge | pipeline (the LSN the sink last stored, as a number) |
//! | `pg_replicate_lag_seconds` | gauge | pipeline (from the commit of the newest stored change to its storing) |
//! | `pg_replicate_retries_total` | counter | pipeline, side (`source` or `sink`) |
//! | `pg_replicate_errors_total` | counter | pipeline, kind (every failure, retried or not) |
//!
//! The Postgres source adds `pg_replicate_slot_retained_bytes` and
//! `pg_replicate_slot_unconfirmed_bytes` (label `slot`) when asked
//! (`PostgresSource::with_slot_metrics`).

use std::time::{SystemTime, UNIX_EPOCH};

use arrow::array::AsArray;
use arrow::datatypes::TimestampMicrosecondType;
use metrics::{counter, gauge};

use crate::types::change::{CdcBatch, CdcEvent, COMMIT_TIME_COLUMN};
use crate::types::{Lsn, TableName};
use crate::ErrorKind;

/// Reports one pipeline's metrics under its name.
#[derive(Clone, Debug)]
pub(crate) struct PipelineMetrics {
    pipeline: String,
}

/// What a CDC batch carries, counted before the sink takes it.
pub(crate) struct BatchFigures {
    changes: Vec<(TableName, u64)>,
    bytes: u64,
    transactions: u64,
    /// Commit time of the newest change, µs since the Unix epoch.
    newest_commit: Option<i64>,
}

impl PipelineMetrics {
    pub(crate) fn new(pipeline: &str) -> Self {
        Self {
            pipeline: pipeline.to_owned(),
        }
    }

    /// `rows` copied rows of `table` the sink took, `bytes` of Arrow memory.
    pub(crate) fn rows_copied(&self, table: &TableName, rows: u64, bytes: u64) {
        counter!("pg_replicate_rows_copied_total", "pipeline" => self.pipeline.clone(), "table" => table.to_string())
            .increment(rows);
        counter!("pg_replicate_bytes_total", "pipeline" => self.pipeline.clone()).increment(bytes);
    }

    pub(crate) fn table_copied(&self) {
        counter!("pg_replicate_tables_copied_total", "pipeline" => self.pipeline.clone())
            .increment(1);
    }

    /// A batch the sink stored, up to `stored`.
    pub(crate) fn batch_stored(&self, figures: BatchFigures, stored: Lsn) {
        let pipeline = || self.pipeline.clone();
        for (table, changes) in figures.changes {
            counter!("pg_replicate_changes_total", "pipeline" => pipeline(), "table" => table.to_string())
                .increment(changes);
        }
        counter!("pg_replicate_cdc_batches_total", "pipeline" => pipeline()).increment(1);
        counter!("pg_replicate_transactions_total", "pipeline" => pipeline())
            .increment(figures.transactions);
        counter!("pg_replicate_bytes_total", "pipeline" => pipeline()).increment(figures.bytes);
        gauge!("pg_replicate_stored_lsn", "pipeline" => pipeline()).set(stored.0 as f64);
        if let Some(commit) = figures.newest_commit {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_micros() as i64);
            gauge!("pg_replicate_lag_seconds", "pipeline" => pipeline())
                .set((now - commit).max(0) as f64 / 1e6);
        }
    }

    pub(crate) fn retry(&self, side: &'static str) {
        counter!("pg_replicate_retries_total", "pipeline" => self.pipeline.clone(), "side" => side)
            .increment(1);
    }

    pub(crate) fn error(&self, kind: ErrorKind) {
        counter!("pg_replicate_errors_total", "pipeline" => self.pipeline.clone(), "kind" => format!("{kind:?}").to_lowercase())
            .increment(1);
    }
}

impl BatchFigures {
    /// Counts `batch` (a few values per table event; no row is read but
    /// the commit times' maximum).
    pub(crate) fn of(batch: &CdcBatch) -> Self {
        let mut changes: Vec<(TableName, u64)> = Vec::new();
        let mut bytes = 0u64;
        let mut newest_commit = None;
        for event in &batch.events {
            let CdcEvent::Changes(table_changes) = event else {
                continue;
            };
            let rows = table_changes.batch.num_rows() as u64;
            bytes += table_changes.batch.get_array_memory_size() as u64;
            match changes
                .iter_mut()
                .find(|(name, _)| *name == table_changes.table.name)
            {
                Some((_, count)) => *count += rows,
                None => changes.push((table_changes.table.name.clone(), rows)),
            }
            let newest = table_changes
                .batch
                .column_by_name(COMMIT_TIME_COLUMN)
                .and_then(|c| c.as_primitive_opt::<TimestampMicrosecondType>())
                .and_then(|times| arrow::compute::max(times).filter(|_| !times.is_empty()));
            newest_commit = newest_commit.max(newest);
        }
        Self {
            changes,
            bytes,
            transactions: batch.transactions,
            newest_commit,
        }
    }
}
