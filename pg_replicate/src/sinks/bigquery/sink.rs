//! [`BigQuerySink`]: the [`Sink`] implementation.
//!
//! A backfill streams Parquet into one load job per table (or rows into a
//! pending Storage Write stream) into a copy table, whose rows move into
//! the target table when the table is recorded as copied
//! ([`super::backfill`]). A change batch is staged per table and applied by
//! one transaction script ([`super::script`]) that also moves the state
//! row; where a batch must be committed in parts (a schema change, or a
//! transaction continued in the next batch), the state row records the
//! exact position reached ([`super::state::Position`]) and a restarted
//! sink skips what it covers.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Instant;

use arrow::array::RecordBatch;
use arrow::compute::concat_batches;
use async_trait::async_trait;
use prost_types::DescriptorProto;
use tracing::{debug, info};

use super::client::{BigQueryClient, ExistingColumn};
use super::config::{BigQuerySinkConfig, StagingMethod};
use super::copy::{parquet_file, Copy};
use super::pending::{Pending, PendingTable};
use super::proto;
use super::schema::{
    bigquery_type, check_names, create_state_sql, create_target_sql, qualified, quote,
    staging_name, target_name,
};
use super::script::{apply_script, Step, TableWork, STAGED_ROWS_WRONG};
use super::stage::{stage, staging_columns, staging_schema};
use super::state::{
    insert_progress_sql, parse_progress, select_copied_sql, select_progress_sql, Progress,
    FORMAT_VERSION, PROGRESS_MOVED,
};
use super::storage_write::StorageWriter;
use crate::sinks::progress::{advance_rows, advance_truncate, commit_range, uncovered};
use crate::sinks::Sink;
use crate::types::change::{CdcBatch, CdcEvent, ResumptionState};
use crate::types::{Lsn, TableId, TableSchema};
use crate::{Error, ErrorKind, Result};

/// How often a batch is applied again because the stored state moved on
/// under the sink (a killed process's script committing late) before the
/// sink concludes that another pipeline writes with its identity.
const STATE_MOVES: usize = 3;

/// How often a script whose staging check failed is staged and run again.
const STAGING_ATTEMPTS: usize = 3;

/// Keeps the published tables of a Postgres database as current-state
/// tables of a BigQuery dataset, exactly once (see the module
/// documentation of [`crate::sinks::bigquery`]).
pub struct BigQuerySink {
    pub(super) config: BigQuerySinkConfig,
    pub(super) client: BigQueryClient,
    pub(super) writer: Option<StorageWriter>,
    /// The schema each table has in BigQuery (and its staging table).
    tables: HashMap<TableId, Arc<TableSchema>>,
    /// Protocol buffer descriptors of staging rows, per table.
    descriptors: HashMap<TableId, DescriptorProto>,
    /// What the state row holds; `None` until read (and after a failure,
    /// which may have left it either way).
    progress: Option<Progress>,
    state_tables: bool,
    pub(super) copy: Option<Copy>,
    /// Truncates seen of the transaction in progress: its commit LSN and
    /// their count (they are counted by [`Position::events`](super::state::Position::events)).
    truncates: (Lsn, u32),
}

fn integer(cell: &Option<String>, what: &str) -> Result<Option<i64>> {
    cell.as_deref()
        .map(|text| {
            text.parse::<i64>().map_err(|_| {
                Error::new(
                    ErrorKind::Sink,
                    format!("the sink's state table holds {text:?} as {what}, not an integer"),
                )
            })
        })
        .transpose()
}

impl BigQuerySink {
    /// Connects to BigQuery and checks that the dataset exists; the state
    /// and replicated tables are created when the pipeline starts.
    pub async fn connect(config: BigQuerySinkConfig) -> Result<Self> {
        let client = BigQueryClient::connect(&config).await?;
        Ok(Self {
            config,
            client,
            writer: None,
            tables: HashMap::new(),
            descriptors: HashMap::new(),
            progress: None,
            state_tables: false,
            copy: None,
            truncates: (Lsn::ZERO, 0),
        })
    }

    /// The sink's configuration.
    pub fn config(&self) -> &BigQuerySinkConfig {
        &self.config
    }

    /// End LSN of the last change batch stored completely, as last read or
    /// written.
    pub fn last_lsn(&self) -> Option<Lsn> {
        self.progress.and_then(|p| p.last_lsn)
    }

    pub(super) fn dataset(&self) -> &str {
        &self.config.dataset_id
    }

    pub(super) fn identity(&self) -> &str {
        self.config.identity_key()
    }

    pub(super) fn storage_writer(&mut self) -> Result<&StorageWriter> {
        if self.writer.is_none() {
            self.writer = Some(StorageWriter::new(
                &self.config.storage_endpoint,
                self.client.authenticator(),
                self.config.retry.clone(),
                &self.config.project_id,
                &self.config.dataset_id,
                self.config.max_append_bytes,
            )?);
        }
        self.writer
            .as_ref()
            .ok_or_else(|| Error::new(ErrorKind::Sink, "the Storage Write client is missing"))
    }

    async fn ensure_state_tables(&mut self) -> Result<()> {
        if !self.state_tables {
            let sql = create_state_sql(self.dataset()).join(";\n");
            self.client
                .query(&sql, "create the sink's state tables")
                .await?;
            self.state_tables = true;
        }
        Ok(())
    }

    /// Reads (or creates) this identity's state row.
    async fn read_progress(&mut self) -> Result<Progress> {
        self.ensure_state_tables().await?;
        let rows = self
            .client
            .query(
                &select_progress_sql(self.dataset(), self.identity()),
                "read the replication state",
            )
            .await?;
        let progress = match rows.as_slice() {
            [] => {
                self.client
                    .query(
                        &insert_progress_sql(self.dataset(), self.identity()),
                        "record a new replication state",
                    )
                    .await?;
                Progress::default()
            }
            [row] => {
                let values = row
                    .iter()
                    .map(|cell| integer(cell, "replication state"))
                    .collect::<Result<Vec<_>>>()?;
                let version = values.first().copied().flatten();
                if version != Some(FORMAT_VERSION) {
                    return Err(Error::new(
                        ErrorKind::Sink,
                        format!(
                            "the state of identity {:?} in dataset {} has format version {version:?}; this \
                             version of pg_replicate reads version {FORMAT_VERSION}: use a matching \
                             pg_replicate, or a new dataset",
                            self.identity(),
                            self.dataset()
                        ),
                    ));
                }
                parse_progress(&values)
            }
            _ => {
                return Err(Error::new(
                    ErrorKind::Sink,
                    format!(
                        "dataset {} holds {} state rows for identity {:?}; delete the extra rows of {} \
                         (keep the one with the highest last_lsn)",
                        self.dataset(),
                        rows.len(),
                        self.identity(),
                        super::schema::STATE_TABLE
                    ),
                ))
            }
        };
        debug!(?progress, "replication state read");
        self.progress = Some(progress);
        Ok(progress)
    }

    /// The tables recorded as copied, with their snapshot LSNs.
    pub(super) async fn read_copied(&mut self) -> Result<BTreeMap<TableId, Lsn>> {
        self.ensure_state_tables().await?;
        let rows = self
            .client
            .query(
                &select_copied_sql(self.dataset(), self.identity()),
                "read which tables are copied",
            )
            .await?;
        let mut copied = BTreeMap::new();
        for row in rows {
            let id = integer(row.first().unwrap_or(&None), "table id")?;
            let lsn = integer(row.get(1).unwrap_or(&None), "snapshot LSN")?;
            if let (Some(id), Some(lsn)) = (id, lsn) {
                let id = u32::try_from(id).map_err(|_| {
                    Error::new(
                        ErrorKind::Sink,
                        format!("the sink's copied-tables table holds table id {id}, not a Postgres oid"),
                    )
                })?;
                // One row per table (a copy replaces its record in the
                // transaction that stores it); were there more, the latest
                // snapshot is the table's.
                let lsn = Lsn(lsn as u64);
                let at = copied.entry(TableId(id)).or_insert(lsn);
                *at = (*at).max(lsn);
            }
        }
        Ok(copied)
    }

    async fn progress(&mut self) -> Result<Progress> {
        match self.progress {
            Some(progress) => Ok(progress),
            None => self.read_progress().await,
        }
    }

    /// Creates the target table, or brings a copied one to `table`'s
    /// columns.
    async fn ensure_target(&self, table: &TableSchema, copied: bool) -> Result<()> {
        let name = target_name(&table.name);
        match self.client.table_columns(&name).await? {
            None => {
                self.client
                    .query(
                        &create_target_sql(self.dataset(), table, false),
                        &format!("create BigQuery table {name}"),
                    )
                    .await?;
            }
            Some(existing) if copied => self.evolve(table, &existing).await?,
            // A table not copied yet is prepared by its copy.
            Some(_) => {}
        }
        Ok(())
    }

    /// Adds and drops columns of a target table so it matches `table`.
    async fn evolve(&self, table: &TableSchema, existing: &[ExistingColumn]) -> Result<()> {
        let statements = self.column_changes(table, existing)?;
        if !statements.is_empty() {
            info!(table = %table.name, statements = statements.len(), "changing the columns of a BigQuery table");
            self.client
                .query(
                    &statements.join(";\n"),
                    &format!(
                        "change the columns of BigQuery table {}",
                        target_name(&table.name)
                    ),
                )
                .await?;
        }
        Ok(())
    }

    /// The statements adding and dropping columns of a target table so it
    /// matches `table`; an error when a column's type changed.
    pub(super) fn column_changes(
        &self,
        table: &TableSchema,
        existing: &[ExistingColumn],
    ) -> Result<Vec<String>> {
        let target = qualified(self.dataset(), &target_name(&table.name));
        let mut statements = Vec::new();
        for column in &table.columns {
            let kind = bigquery_type(column);
            match existing
                .iter()
                .find(|e| e.name.eq_ignore_ascii_case(&column.name))
            {
                None => statements.push(format!(
                    "ALTER TABLE {target} ADD COLUMN IF NOT EXISTS {} {kind}",
                    quote(&column.name)
                )),
                Some(e) if !kind.matches(&e.type_name, e.precision, e.scale) => {
                    return Err(Error::new(
                        ErrorKind::Schema,
                        format!(
                            "column {:?} of {} is {} in BigQuery, but its Postgres type {} maps to {kind}; \
                             BigQuery cannot convert a column in place: drop BigQuery table {} and its \
                             row in {}, and the pipeline copies the table again",
                            column.name,
                            table.name,
                            e.type_name,
                            column.pg_type.name,
                            target_name(&table.name),
                            super::schema::COPIED_TABLE
                        ),
                    ))
                }
                Some(_) => {}
            }
        }
        for e in existing {
            if !table
                .columns
                .iter()
                .any(|c| c.name.eq_ignore_ascii_case(&e.name))
            {
                statements.push(format!(
                    "ALTER TABLE {target} DROP COLUMN IF EXISTS {}",
                    quote(&e.name)
                ));
            }
        }
        Ok(statements)
    }

    /// Creates (anew, empty) the staging table of `table`.
    async fn create_staging(&mut self, table: &Arc<TableSchema>) -> Result<()> {
        let columns: Vec<String> = staging_columns(table)
            .iter()
            .map(|(name, kind)| format!("{} {kind}", quote(name)))
            .collect();
        let name = staging_name(&table.name);
        self.client
            .query(
                &format!(
                    "CREATE OR REPLACE TABLE {} ({})",
                    qualified(self.dataset(), &name),
                    columns.join(", ")
                ),
                &format!("create staging table {name}"),
            )
            .await?;
        self.descriptors
            .insert(table.id, proto::descriptor(&staging_schema(table))?);
        self.tables.insert(table.id, table.clone());
        Ok(())
    }

    /// Brings the BigQuery tables of `table` to its (new) schema.
    async fn change_schema(&mut self, table: &Arc<TableSchema>) -> Result<()> {
        info!(table = %table.name, "applying a schema change");
        self.ensure_target(table, true).await?;
        self.create_staging(table).await
    }

    /// Appends the staged rows of `pending` to its staging table.
    async fn append_staged(&mut self, pending: &PendingTable) -> Result<()> {
        if pending.rows == 0 {
            return Ok(());
        }
        let rows = concat_batches(&staging_schema(&pending.table), &pending.staged)
            .map_err(|e| Error::with_source(ErrorKind::Sink, "gather staged changes", e))?;
        let name = staging_name(&pending.table.name);
        match self.config.staging {
            StagingMethod::StorageWrite => {
                let descriptor = match self.descriptors.get(&pending.table.id) {
                    Some(d) => d.clone(),
                    None => proto::descriptor(&rows.schema())?,
                };
                let encoded = proto::encode_rows(&rows)?;
                self.storage_writer()?
                    .append_default(&name, &descriptor, encoded)
                    .await
            }
            StagingMethod::LoadJob => {
                let parquet = parquet_file(&rows, self.config.load_row_group_rows)?;
                self.client.load_file(&name, parquet).await
            }
        }
    }

    /// Stages `pending` and runs the script that applies it and moves the
    /// state to `next`. `false` when the state had moved on (the last
    /// script of a killed process committed late): nothing is applied, the
    /// new state is read, and the batch must be applied again against it.
    async fn flush(&mut self, pending: &mut Pending, next: Progress) -> Result<bool> {
        let expected = self.progress().await?;
        if pending.tables.iter().all(|t| t.steps.is_empty()) && next == expected {
            pending.tables.clear();
            return Ok(true);
        }
        let started = Instant::now();
        let mut attempt = 0;
        loop {
            attempt += 1;
            for table in &pending.tables {
                self.append_staged(table).await?;
            }
            let works: Vec<TableWork<'_>> = pending
                .tables
                .iter()
                .filter(|t| !t.steps.is_empty())
                .map(|t| TableWork {
                    table: &t.table,
                    reads: t.reads,
                    steps: t.steps.clone(),
                    staged_rows: t.rows,
                })
                .collect();
            let script = apply_script(self.dataset(), self.identity(), &expected, &next, &works);
            debug!(?expected, ?next, attempt, "running a change script");
            match self.client.query(&script, "apply a change batch").await {
                Ok(_) => break,
                Err(error) if error.message().contains(PROGRESS_MOVED) => {
                    // A retried script whose first run had committed finds
                    // the state already moved to `next`.
                    self.progress = None;
                    let now = self.read_progress().await?;
                    if now == next {
                        break;
                    }
                    debug!(
                        ?expected,
                        ?now,
                        "the replication state moved under this sink; applying the batch again"
                    );
                    self.clear_staging(pending).await?;
                    pending.tables.clear();
                    return Ok(false);
                }
                Err(error)
                    if error.message().contains(STAGED_ROWS_WRONG)
                        && attempt < STAGING_ATTEMPTS =>
                {
                    debug!(
                        attempt,
                        "staging tables held other rows than staged; staging again"
                    );
                    self.clear_staging(pending).await?;
                }
                Err(error) => return Err(error),
            }
        }
        let changes: usize = pending.tables.iter().map(|t| t.rows).sum();
        debug!(
            staged = changes,
            tables = pending.tables.len(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "change script committed to BigQuery"
        );
        self.progress = Some(next);
        pending.tables.clear();
        Ok(true)
    }

    /// Empties the staging tables of `pending`.
    async fn clear_staging(&self, pending: &Pending) -> Result<()> {
        let clear: Vec<String> = pending
            .tables
            .iter()
            .map(|t| {
                format!(
                    "DELETE FROM {} WHERE TRUE",
                    qualified(self.dataset(), &staging_name(&t.table.name))
                )
            })
            .collect();
        if clear.is_empty() {
            return Ok(());
        }
        self.client
            .query(&clear.join(";\n"), "empty the staging tables")
            .await?;
        Ok(())
    }

    /// Applies `batch` against the stored state; `None` when the state
    /// moved on meanwhile (see [`Self::flush`]).
    async fn apply_batch(&mut self, batch: &CdcBatch) -> Result<Option<Lsn>> {
        let stored = self.progress().await?;
        if tracing::enabled!(tracing::Level::DEBUG) {
            debug!(
                end_lsn = %batch.end_lsn,
                continues = batch.continues,
                commits = ?commit_range(batch),
                "change batch received"
            );
        }
        let durable = stored.last_lsn.unwrap_or(Lsn::ZERO);
        if !batch.continues && stored.covers_batch_ending_at(batch.end_lsn) {
            // Writing its end as the new state would move the state back
            // before a transaction applied in part.
            debug!(end_lsn = %batch.end_lsn, last = %durable, "batch already applied; skipping it");
            return Ok(Some(durable));
        }
        let mut applied = stored.position;
        let mut pending = Pending::default();
        for event in &batch.events {
            match event {
                CdcEvent::Changes(changes) => {
                    let table = &changes.table;
                    let known = self.tables.get(&table.id);
                    if known.is_none_or(|k| {
                        k.columns != table.columns || k.replica_identity != table.replica_identity
                    }) {
                        // The schema moved on without a SchemaChange event
                        // (first batch after a restart).
                        let next = Progress {
                            last_lsn: stored.last_lsn,
                            position: applied,
                        };
                        if !self.flush(&mut pending, next).await? {
                            return Ok(None);
                        }
                        self.change_schema(table).await?;
                    }
                    let Some(rows) = uncovered(&changes.batch, &stored)? else {
                        continue;
                    };
                    advance_rows(&mut applied, &rows)?;
                    let entry = pending.entry(table);
                    let staged = stage(table, &rows, entry.last_round)?;
                    debug!(
                        table = %table.name,
                        changes = staged.changes,
                        skipped = staged.skipped,
                        "changes staged"
                    );
                    if staged.last_round > entry.last_round {
                        entry.steps.push(Step::Rounds {
                            first: entry.last_round + 1,
                            last: staged.last_round,
                        });
                        entry.last_round = staged.last_round;
                        entry.rows += staged.rows.num_rows();
                        entry.reads |= staged.reads;
                        entry.staged.push(staged.rows);
                    }
                }
                CdcEvent::Truncate {
                    tables, commit_lsn, ..
                } => {
                    if !advance_truncate(&mut self.truncates, &mut applied, &stored, *commit_lsn) {
                        continue;
                    }
                    for table in tables {
                        pending.entry(table).steps.push(Step::Truncate);
                    }
                }
                CdcEvent::SchemaChange { new, .. } => {
                    let next = Progress {
                        last_lsn: stored.last_lsn,
                        position: applied,
                    };
                    if !self.flush(&mut pending, next).await? {
                        return Ok(None);
                    }
                    self.change_schema(new).await?;
                }
                CdcEvent::Message { prefix, lsn, .. } => {
                    debug!(%prefix, %lsn, "logical decoding message (not stored)");
                }
            }
        }
        if batch.continues {
            let next = Progress {
                last_lsn: stored.last_lsn,
                position: applied,
            };
            let flushed = self.flush(&mut pending, next).await?;
            return Ok(flushed.then_some(durable));
        }
        let next = Progress {
            last_lsn: Some(batch.end_lsn),
            position: None,
        };
        let flushed = self.flush(&mut pending, next).await?;
        Ok(flushed.then_some(batch.end_lsn))
    }
}

#[async_trait]
impl Sink for BigQuerySink {
    async fn resumption_state(&mut self) -> Result<ResumptionState> {
        self.copy = None;
        self.truncates = (Lsn::ZERO, 0);
        let progress = self.read_progress().await?;
        let copied_tables = self.read_copied().await?;
        Ok(ResumptionState {
            copied_tables,
            last_lsn: progress.last_lsn,
        })
    }

    async fn write_table_schemas(&mut self, tables: &[Arc<TableSchema>]) -> Result<()> {
        check_names(tables)?;
        // Only which tables are copied: the state was read for the stream's
        // start, and is read again only when it moved.
        let copied = self.read_copied().await?;
        for table in tables {
            self.ensure_target(table, copied.contains_key(&table.id))
                .await?;
            self.create_staging(table).await?;
        }
        info!(tables = tables.len(), dataset = %self.config.dataset_id, "BigQuery tables ready");
        Ok(())
    }

    async fn begin_table_copy(&mut self, table: &Arc<TableSchema>) -> Result<()> {
        self.begin_copy(table).await
    }

    async fn write_table_rows(
        &mut self,
        table: &Arc<TableSchema>,
        rows: RecordBatch,
    ) -> Result<()> {
        self.write_copy_rows(table, rows).await
    }

    async fn end_table_copy(&mut self, table: &Arc<TableSchema>, snapshot_lsn: Lsn) -> Result<()> {
        self.end_copy(table, snapshot_lsn).await
    }

    async fn write_cdc_batch(&mut self, batch: CdcBatch) -> Result<Lsn> {
        if self.copy.take().is_some() {
            debug!("dropping an unfinished copy");
        }
        for _ in 0..STATE_MOVES {
            match self.apply_batch(&batch).await {
                Ok(Some(lsn)) => return Ok(lsn),
                Ok(None) => continue,
                Err(error) => {
                    // The failed script may or may not have committed: read
                    // the state again before the next batch.
                    self.progress = None;
                    return Err(error);
                }
            }
        }
        self.progress = None;
        Err(Error::new(
            ErrorKind::Sink,
            format!(
                "the replication state of identity {:?} in dataset {} kept changing while this sink was \
                 writing: another pipeline writes the same dataset with the same identity; stop it, or give \
                 each pipeline its own identity",
                self.identity(),
                self.dataset()
            ),
        ))
    }
}
