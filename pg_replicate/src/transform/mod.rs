//! Transforms between source and sink: [`TransformSink`] wraps any sink
//! and hands it each table's rows and changes filtered, with columns left
//! out, renamed, masked or computed ([`TableTransform`]), in the backfill
//! and in the change stream alike.
//!
//! The work is done by Arrow kernels over whole batches. The change
//! metadata (operation, commit LSN and time, sequence) passes through. The
//! unchanged-TOAST bitmap and the old row image are transformed like the
//! rows. The sink sees the transformed schema everywhere: in
//! `write_table_schemas`, in the copies, in the changes, truncates and
//! schema changes.

mod plan;
mod rules;

pub use rules::{Comparison, ComputeFn, ComputedColumn, Mask, Predicate, TableTransform};

use std::collections::HashMap;
use std::sync::Arc;

use arrow::record_batch::RecordBatch;
use async_trait::async_trait;

use crate::sinks::Sink;
use crate::types::change::{CdcBatch, CdcEvent, ResumptionState, TableChanges};
use crate::types::{Lsn, TableId, TableName, TableSchema};
use crate::Result;
use plan::TablePlan;

/// The transforms of a pipeline, per table; tables without one pass as
/// they are.
#[derive(Clone, Debug, Default)]
pub struct Transforms {
    tables: HashMap<TableName, TableTransform>,
}

impl Transforms {
    /// No transforms yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Transforms `table` with `transform`.
    pub fn table(mut self, table: TableName, transform: TableTransform) -> Self {
        self.tables.insert(table, transform);
        self
    }

    /// Whether no table is transformed.
    pub fn is_empty(&self) -> bool {
        self.tables.is_empty()
    }
}

/// A sink that transforms what it receives, then hands it to `K`.
pub struct TransformSink<K> {
    sink: K,
    transforms: Transforms,
    /// Plans per table, for the schema they were made for.
    plans: HashMap<TableId, Arc<TablePlan>>,
}

impl<K: Sink> TransformSink<K> {
    /// Wraps `sink`.
    pub fn new(sink: K, transforms: Transforms) -> Self {
        Self {
            sink,
            transforms,
            plans: HashMap::new(),
        }
    }

    /// The wrapped sink.
    pub fn inner(&self) -> &K {
        &self.sink
    }

    /// The plan for `table`'s current schema; `None` when the table is not
    /// transformed. A transform that does not fit the table (a missing
    /// column, a key column masked) is an [`ErrorKind::Config`](crate::ErrorKind::Config)
    /// error naming both.
    fn plan(&mut self, table: &Arc<TableSchema>) -> Result<Option<Arc<TablePlan>>> {
        let Some(transform) = self.transforms.tables.get(&table.name) else {
            return Ok(None);
        };
        if let Some(plan) = self.plans.get(&table.id) {
            if plan.fits(table) {
                return Ok(Some(plan.clone()));
            }
        }
        let plan = Arc::new(TablePlan::new(table, transform)?);
        self.plans.insert(table.id, plan.clone());
        Ok(Some(plan))
    }

    /// The schema the sink sees for `table`.
    fn output(&mut self, table: &Arc<TableSchema>) -> Result<Arc<TableSchema>> {
        Ok(match self.plan(table)? {
            Some(plan) => plan.output().clone(),
            None => table.clone(),
        })
    }

    fn event(&mut self, event: CdcEvent) -> Result<Option<CdcEvent>> {
        Ok(Some(match event {
            CdcEvent::Changes(changes) => match self.plan(&changes.table)? {
                None => CdcEvent::Changes(changes),
                Some(plan) => {
                    let batch = plan.changes(&changes.batch)?;
                    if batch.num_rows() == 0 {
                        return Ok(None);
                    }
                    CdcEvent::Changes(TableChanges {
                        table: plan.output().clone(),
                        batch,
                    })
                }
            },
            CdcEvent::Truncate {
                tables,
                cascade,
                restart_identity,
                commit_lsn,
            } => CdcEvent::Truncate {
                tables: tables
                    .iter()
                    .map(|t| self.output(t))
                    .collect::<Result<_>>()?,
                cascade,
                restart_identity,
                commit_lsn,
            },
            CdcEvent::SchemaChange { old, new } => CdcEvent::SchemaChange {
                old: self.output(&old)?,
                new: self.output(&new)?,
            },
            message @ CdcEvent::Message { .. } => message,
        }))
    }
}

#[async_trait]
impl<K: Sink> Sink for TransformSink<K> {
    async fn resumption_state(&mut self) -> Result<ResumptionState> {
        self.sink.resumption_state().await
    }

    async fn write_table_schemas(&mut self, tables: &[Arc<TableSchema>]) -> Result<()> {
        let outputs = tables
            .iter()
            .map(|t| self.output(t))
            .collect::<Result<Vec<_>>>()?;
        self.sink.write_table_schemas(&outputs).await
    }

    async fn begin_table_copy(&mut self, table: &Arc<TableSchema>) -> Result<()> {
        let output = self.output(table)?;
        self.sink.begin_table_copy(&output).await
    }

    async fn write_table_rows(
        &mut self,
        table: &Arc<TableSchema>,
        rows: RecordBatch,
    ) -> Result<()> {
        match self.plan(table)? {
            None => self.sink.write_table_rows(table, rows).await,
            Some(plan) => {
                let rows = plan.rows(&rows)?;
                if rows.num_rows() == 0 {
                    return Ok(());
                }
                self.sink.write_table_rows(plan.output(), rows).await
            }
        }
    }

    async fn end_table_copy(&mut self, table: &Arc<TableSchema>, snapshot_lsn: Lsn) -> Result<()> {
        let output = self.output(table)?;
        self.sink.end_table_copy(&output, snapshot_lsn).await
    }

    async fn write_cdc_batch(&mut self, batch: CdcBatch) -> Result<Lsn> {
        let CdcBatch {
            events,
            end_lsn,
            transactions,
            continues,
        } = batch;
        let mut transformed = Vec::with_capacity(events.len());
        for event in events {
            if let Some(event) = self.event(event)? {
                transformed.push(event);
            }
        }
        self.sink
            .write_cdc_batch(CdcBatch {
                events: transformed,
                end_lsn,
                transactions,
                continues,
            })
            .await
    }
    async fn store_while_idle(&mut self) -> Result<Option<Lsn>> {
        self.sink.store_while_idle().await
    }
}
