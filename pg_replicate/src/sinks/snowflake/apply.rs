//! Change batches into Snowflake: landing rows, MERGE, then the state.
//!
//! Per table, the batch's changes become landing rows ([`super::landing`])
//! written as one CSV file to `@_PGR_STAGE/cdc/<table>/`, loaded with
//! `COPY INTO` into the table's load table and moved into its landing
//! table (checked to hold exactly the rows written). Then `TRUNCATE`s and
//! the landing table are applied to the target table ([`super::merge`]),
//! and last the state row moves from what this sink read to the batch's
//! end LSN; only then is that LSN returned to the pipeline, which confirms
//! it to Postgres.
//!
//! Each statement is atomic and can run again with the same result, and
//! none runs in an explicit transaction: a process killed anywhere leaves
//! no open transaction whose locks would block the next run (Snowflake
//! keeps a dead session's transaction for hours). A batch interrupted
//! before its state moved is applied again from the start by the next run
//! and converges; tables of one batch become visible one after the other.
//!
//! A batch that must be committed in parts (a schema change in its
//! middle, or a transaction the next batch continues) records in the
//! state how far into the transaction each part got (see
//! [`crate::sinks::progress`]); the sink skips every change the state
//! covers, so a restart, or a killed process's transaction that commits
//! late, never applies a change twice.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::compute::concat_batches;
use arrow::record_batch::RecordBatch;
use tracing::{debug, info};

use super::copy::{new_token, rows_loaded, Checked};
use super::landing::{landing_columns, write_landing};
use super::merge::{apply_sql, keep_statements};
use super::schema::{
    copy_into_sql, create_load_sql, landing_name, load_column, load_name, quote, target_name, STAGE,
};
use super::sink::SnowflakeSink;
use super::state::update_state_sql;
use crate::sinks::progress::{advance_rows, advance_truncate, uncovered, Progress};
use crate::types::change::{change_arrow_schema, CdcBatch, CdcEvent};
use crate::types::{Lsn, TableId, TableSchema};
use crate::{Error, ErrorKind, Result};

/// How long a batch without events may go without being stored: it only
/// moves the state past WAL that held nothing for the sink, and each
/// store is a Snowflake statement (which keeps a warehouse awake).
const IDLE_STORE_INTERVAL: Duration = Duration::from_secs(30);

/// The message of a state row that moved under the sink.
const STATE_MOVED: &str = "the replication state is not what this sink last read";

/// Changes of one table waiting to be applied, all of one schema.
struct PendingTable {
    table: Arc<TableSchema>,
    batches: Vec<RecordBatch>,
    /// The last truncate: its commit LSN and the sequence of the change of
    /// its transaction before it (-1: none).
    truncate: Option<(Lsn, i64)>,
}

/// What the sink applies next, per table in order of appearance.
#[derive(Default)]
struct Pending {
    tables: Vec<PendingTable>,
}

impl Pending {
    fn entry(&mut self, table: &Arc<TableSchema>) -> &mut PendingTable {
        let at = match self.tables.iter().position(|t| t.table.id == table.id) {
            Some(at) => at,
            None => {
                self.tables.push(PendingTable {
                    table: table.clone(),
                    batches: Vec::new(),
                    truncate: None,
                });
                self.tables.len() - 1
            }
        };
        &mut self.tables[at]
    }

    fn is_empty(&self) -> bool {
        self.tables.is_empty()
    }
}

/// A table's changes, loaded and ready for the transaction.
struct Loaded {
    table: Arc<TableSchema>,
    rows: usize,
    reads: bool,
    truncate: Option<(Lsn, i64)>,
}

impl SnowflakeSink {
    /// `CREATE OR REPLACE` of the landing table of `table`.
    /// In [`MergeMode::Task`](super::MergeMode::Task) and
    /// [`MergeMode::External`](super::MergeMode::External) the landing
    /// table keeps its rows ([`super::accumulate`]); inline, it only holds
    /// a batch, and is refused when it holds changes a mode that keeps them
    /// left unmerged.
    pub(super) async fn create_landing(&mut self, table: &TableSchema) -> Result<()> {
        if self.config.merge.accumulates() {
            return self.prepare_kept_landing(table).await;
        }
        let columns: Vec<String> = landing_columns(table)
            .iter()
            .map(|(name, ty)| format!("{} {ty}", quote(name)))
            .collect();
        let name = landing_name(&table.name);
        if let Some(existing) = self.existing_columns(None, &name).await? {
            // Only a landing table that keeps changes lacks these columns.
            let batch_only = existing
                .iter()
                .any(|c| c.name.starts_with("_PGR_KEEP_") || c.name.starts_with("_PGR_FROM_"));
            if !batch_only && !table.columns.is_empty() {
                let count = self
                    .execute(
                        &format!("SELECT COUNT(*) FROM {}", quote(&name)),
                        &format!("count the rows of landing table {name}"),
                    )
                    .await?;
                let count = count.first().and_then(|r| r.first().cloned().flatten());
                if count.as_deref() != Some("0") {
                    return Err(Error::new(
                        ErrorKind::Config,
                        format!(
                            "landing table {name} holds changes not merged yet (the sink ran with \
                             MergeMode::Task or External); merge them (SnowflakeSink::merge_landing, with the \
                             task suspended) before running with MergeMode::Inline"
                        ),
                    ));
                }
            }
        }
        self.execute(
            &format!(
                "CREATE OR REPLACE TABLE {} ({})",
                quote(&name),
                columns.join(", ")
            ),
            &format!("create landing table {name}"),
        )
        .await?;
        Ok(())
    }

    /// Brings the target and landing tables of `table` to its (new) schema.
    async fn change_schema(&mut self, table: &Arc<TableSchema>) -> Result<()> {
        info!(table = %table.name, "applying a schema change");
        self.ensure_target(table, true).await?;
        self.create_landing(table).await?;
        self.tables.insert(table.id, table.clone());
        Ok(())
    }

    /// Applies `batch`; returns the LSN stored.
    pub(super) async fn apply_batch(&mut self, batch: &CdcBatch) -> Result<Lsn> {
        let stored = self.progress().await?;
        let durable = stored.last_lsn.unwrap_or(Lsn::ZERO);
        if !batch.continues && stored.covers_batch_ending_at(batch.end_lsn) {
            // Writing its end as the new state would move the state back
            // before a transaction applied in part.
            debug!(end_lsn = %batch.end_lsn, stored = %durable, "batch already applied; skipping it");
            return Ok(durable);
        }
        if batch.events.is_empty()
            && !batch.continues
            && self
                .stored_at
                .is_some_and(|at| at.elapsed() < IDLE_STORE_INTERVAL)
        {
            return Ok(durable);
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
                        // (the first batch after a restart).
                        let next = Progress {
                            last_lsn: stored.last_lsn,
                            position: applied,
                        };
                        self.flush(&mut pending, next).await?;
                        self.change_schema(table).await?;
                    }
                    let Some(rows) = uncovered(&changes.batch, &stored)? else {
                        continue;
                    };
                    advance_rows(&mut applied, &rows)?;
                    pending.entry(table).batches.push(rows);
                }
                CdcEvent::Truncate {
                    tables, commit_lsn, ..
                } => {
                    if !advance_truncate(&mut self.truncates, &mut applied, &stored, *commit_lsn) {
                        continue;
                    }
                    let after = applied
                        .filter(|p| p.commit_lsn == *commit_lsn)
                        .and_then(|p| p.seq)
                        .map_or(-1, i64::from);
                    for table in tables {
                        // What the table's earlier changes did, the
                        // truncate undoes.
                        let entry = pending.entry(table);
                        entry.batches.clear();
                        entry.truncate = Some((*commit_lsn, after));
                    }
                }
                CdcEvent::SchemaChange { new, .. } => {
                    let next = Progress {
                        last_lsn: stored.last_lsn,
                        position: applied,
                    };
                    self.flush(&mut pending, next).await?;
                    self.change_schema(new).await?;
                }
                CdcEvent::Message { prefix, lsn, .. } => {
                    debug!(%prefix, %lsn, "logical decoding message (not stored)");
                }
            }
        }
        let (next, reached) = if batch.continues {
            let next = Progress {
                last_lsn: stored.last_lsn,
                position: applied,
            };
            (next, durable)
        } else {
            let next = Progress {
                last_lsn: Some(batch.end_lsn),
                position: None,
            };
            (next, batch.end_lsn)
        };
        self.flush(&mut pending, next).await?;
        Ok(reached)
    }

    /// Loads and applies `pending`, then moves the state from what this
    /// sink last read or wrote to `next`.
    async fn flush(&mut self, pending: &mut Pending, next: Progress) -> Result<()> {
        let expected = self.progress().await?;
        if pending.is_empty() && next == expected {
            return Ok(());
        }
        match self.try_flush(pending, &expected, &next).await {
            Ok(()) => {
                self.stored(next);
                Ok(())
            }
            Err(error) if error.message().contains(STATE_MOVED) => {
                // A late state update of this sink's own (a request sent
                // again after it had run), or another writer.
                self.forget_state();
                let now = self.progress().await?;
                if now == next {
                    return Ok(());
                }
                Err(Error::new(
                    ErrorKind::Sink,
                    format!(
                        "the replication state of identity {:?} moved from {expected:?} to {now:?} while this \
                         sink was writing: another pipeline writes the same schema with the same identity; stop \
                         it, or give each pipeline its own identity",
                        self.identity()
                    ),
                ))
            }
            Err(error) => {
                // The statements may or may not have run.
                self.forget_state();
                Err(error)
            }
        }
    }

    async fn try_flush(
        &mut self,
        pending: &mut Pending,
        expected: &Progress,
        next: &Progress,
    ) -> Result<()> {
        let started = Instant::now();
        let mut loaded = Vec::with_capacity(pending.tables.len());
        for entry in pending.tables.drain(..) {
            loaded.push(self.load(entry).await?);
        }
        let mut statements = Vec::new();
        for table in &loaded {
            if self.config.merge.accumulates() {
                statements.extend(self.kept_landing_statements(
                    &table.table,
                    table.rows,
                    table.reads,
                    table.truncate,
                ));
                continue;
            }
            let landing = quote(&landing_name(&table.table.name));
            let target = quote(&target_name(&table.table.name));
            if table.rows > 0 {
                statements.push(Checked {
                    sql: format!("DELETE FROM {landing}"),
                    rows: None,
                    otherwise: String::new(),
                });
                statements.push(load_rows(&table.table, &landing, table.rows));
                if table.reads {
                    let keep = keep_statements(&table.table, &landing, &target, None);
                    statements.extend(keep.into_iter().map(|sql| Checked {
                        sql,
                        rows: None,
                        otherwise: String::new(),
                    }));
                }
            }
            if table.truncate.is_some() {
                statements.push(Checked {
                    sql: format!("DELETE FROM {target}"),
                    rows: None,
                    otherwise: String::new(),
                });
            }
            if table.rows > 0 {
                statements.push(Checked {
                    sql: apply_sql(&table.table, &target, &landing),
                    rows: None,
                    otherwise: String::new(),
                });
            }
        }
        statements.push(Checked {
            sql: update_state_sql(self.identity(), expected, next),
            rows: Some(1),
            otherwise: STATE_MOVED.to_owned(),
        });
        self.run_checked(&statements, "apply a change batch")
            .await?;
        debug!(
            tables = loaded.len(),
            landed = loaded.iter().map(|t| t.rows).sum::<usize>(),
            ?next,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "change batch committed to Snowflake"
        );
        Ok(())
    }

    /// Writes a table's pending changes as landing rows and loads them into
    /// its load table.
    async fn load(&mut self, entry: PendingTable) -> Result<Loaded> {
        let table = entry.table;
        let mut loaded = Loaded {
            table: table.clone(),
            rows: 0,
            reads: false,
            truncate: entry.truncate,
        };
        if entry.batches.is_empty() {
            return Ok(loaded);
        }
        let batch = concat_batches(&change_arrow_schema(&table), &entry.batches).map_err(|e| {
            Error::with_source(
                ErrorKind::Sink,
                format!("cannot gather the changes of {}", table.name),
                e,
            )
        })?;
        let mut csv = Vec::new();
        let landed = write_landing(&table, &batch, &mut csv)?;
        loaded.rows = landed.rows;
        loaded.reads = landed.reads;
        if landed.rows == 0 {
            return Ok(loaded);
        }
        let folder = format!("cdc/{}", target_name(&table.name));
        let file = format!("{}.csv", new_token()?);
        self.client
            .put_file(&format!("{STAGE}/{folder}"), &file, csv)
            .await?;
        let load = load_name(&table.name);
        self.execute(
            &create_load_sql(&load, landing_columns(&table).len()),
            "create a load table",
        )
        .await?;
        let answer = self
            .execute(
                &copy_into_sql(&load, &format!("{folder}/{file}")),
                &format!("load the changes of {}", table.name),
            )
            .await?;
        let rows = rows_loaded(&answer);
        if rows != Some(landed.rows as u64) {
            return Err(Error::new(
                ErrorKind::Sink,
                format!(
                    "COPY INTO loaded {rows:?} of the {} changes of {} written to the stage",
                    landed.rows, table.name
                ),
            ));
        }
        Ok(loaded)
    }
}

/// The statement moving the `rows` rows of the load table of `table` into
/// `into` (a table of its landing columns), cast to their types.
pub(super) fn load_rows(table: &TableSchema, into: &str, rows: usize) -> Checked {
    let casts: Vec<String> = landing_columns(table)
        .iter()
        .enumerate()
        .map(|(i, (_, ty))| ty.cast(&load_column(i)))
        .collect();
    Checked {
        sql: format!(
            "INSERT INTO {into} SELECT {} FROM {}",
            casts.join(", "),
            quote(&load_name(&table.name))
        ),
        rows: Some(rows as u64),
        otherwise: format!(
            "the load table of {} holds another number of rows than were written",
            table.name
        ),
    }
}

/// The tables a sink knows, by id.
pub(super) type KnownTables = HashMap<TableId, Arc<TableSchema>>;
