//! Change batches into Snowflake: landing rows, MERGE, state, in one
//! transaction.
//!
//! Per table, the batch's changes become landing rows ([`super::landing`])
//! written as one CSV file to `@_PGR_STAGE/cdc/<table>/`, loaded with
//! `COPY INTO` into the table's load table (checked to hold exactly the
//! rows written). Then one transaction moves them into the landing table,
//! applies `TRUNCATE`s, merges the landing table into the target table by
//! key ([`super::merge`]), empties the landing table, and moves the state row
//! from the LSN this sink read to the batch's end LSN; only then is that
//! LSN returned to the pipeline, which confirms it to Postgres.
//!
//! A batch that must be committed in parts (a schema change in its
//! middle, or a transaction the next batch continues) commits the parts
//! before its end without moving the state: after a crash the stream
//! resumes at the stored LSN and applies those changes again, which
//! converges because each key's landing row carries its whole state.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::compute::concat_batches;
use arrow::record_batch::RecordBatch;
use tracing::{debug, info};

use super::copy::{new_token, rows_loaded, Checked};
use super::landing::{landing_columns, write_landing};
use super::merge::apply_statements;
use super::schema::{
    copy_into_sql, create_load_sql, landing_name, load_column, load_name, quote, target_name, STAGE,
};
use super::sink::SnowflakeSink;
use super::state::update_state_sql;
use crate::types::change::{change_arrow_schema, CdcBatch, CdcEvent};
use crate::types::{Lsn, TableId, TableSchema};
use crate::{Error, ErrorKind, Result};

/// How long a batch without events may go without being stored: it only
/// moves the state past WAL that held nothing for the sink, and each
/// store is a Snowflake transaction (which keeps a warehouse awake).
const IDLE_STORE_INTERVAL: Duration = Duration::from_secs(30);

/// The message of a state row that moved under the sink.
const STATE_MOVED: &str = "the replication state is not what this sink last read";

/// Changes of one table waiting to be applied, all of one schema.
struct PendingTable {
    table: Arc<TableSchema>,
    batches: Vec<RecordBatch>,
    truncate: bool,
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
                    truncate: false,
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
    truncate: bool,
}

impl SnowflakeSink {
    /// `CREATE OR REPLACE` of the landing table of `table`.
    pub(super) async fn create_landing(&mut self, table: &TableSchema) -> Result<()> {
        let columns: Vec<String> = landing_columns(table)
            .iter()
            .map(|(name, ty)| format!("{} {ty}", quote(name)))
            .collect();
        let name = landing_name(&table.name);
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
        let stored = self.last_lsn().await?;
        let durable = stored.unwrap_or(Lsn::ZERO);
        if !batch.continues && stored.is_some_and(|s| batch.end_lsn <= s) {
            debug!(end_lsn = %batch.end_lsn, stored = %durable, "batch already applied; skipping it");
            return Ok(durable);
        }
        if batch.events.is_empty()
            && (batch.continues
                || self
                    .stored_at
                    .is_some_and(|at| at.elapsed() < IDLE_STORE_INTERVAL))
        {
            return Ok(durable);
        }
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
                        self.flush(&mut pending, None).await?;
                        self.change_schema(table).await?;
                    }
                    pending.entry(table).batches.push(changes.batch.clone());
                }
                CdcEvent::Truncate { tables, .. } => {
                    for table in tables {
                        // What the table's earlier changes did, the
                        // truncate undoes.
                        let entry = pending.entry(table);
                        entry.batches.clear();
                        entry.truncate = true;
                    }
                }
                CdcEvent::SchemaChange { new, .. } => {
                    self.flush(&mut pending, None).await?;
                    self.change_schema(new).await?;
                }
                CdcEvent::Message { prefix, lsn, .. } => {
                    debug!(%prefix, %lsn, "logical decoding message (not stored)");
                }
            }
        }
        if batch.continues {
            self.flush(&mut pending, None).await?;
            return Ok(durable);
        }
        match self
            .flush(&mut pending, Some((stored, batch.end_lsn)))
            .await
        {
            Ok(()) => Ok(batch.end_lsn),
            Err(error) if error.message().contains(STATE_MOVED) => {
                // A late commit of this sink's own last transaction (a
                // retried request), or another writer.
                self.forget_state();
                let now = self.last_lsn().await?;
                if now.is_some_and(|s| s >= batch.end_lsn) {
                    return Ok(batch.end_lsn);
                }
                Err(Error::new(
                    ErrorKind::Sink,
                    format!(
                        "the replication state of identity {:?} moved from {stored:?} to {now:?} while this sink \
                         was writing: another pipeline writes the same schema with the same identity; stop it, \
                         or give each pipeline its own identity",
                        self.identity()
                    ),
                ))
            }
            Err(error) => {
                // The transaction may or may not have committed.
                self.forget_state();
                Err(error)
            }
        }
    }

    /// Loads and applies `pending` in one transaction, moving the state
    /// from `state.0` to `state.1` when given.
    async fn flush(
        &mut self,
        pending: &mut Pending,
        state: Option<(Option<Lsn>, Lsn)>,
    ) -> Result<()> {
        if pending.is_empty() && state.is_none() {
            return Ok(());
        }
        let started = Instant::now();
        let mut loaded = Vec::with_capacity(pending.tables.len());
        for entry in pending.tables.drain(..) {
            loaded.push(self.load(entry).await?);
        }
        let mut statements = Vec::new();
        for table in &loaded {
            if table.rows == 0 {
                continue;
            }
            let casts: Vec<String> = landing_columns(&table.table)
                .iter()
                .enumerate()
                .map(|(i, (_, ty))| ty.cast(&load_column(i)))
                .collect();
            statements.push(Checked {
                sql: format!(
                    "INSERT INTO {} SELECT {} FROM {}",
                    quote(&landing_name(&table.table.name)),
                    casts.join(", "),
                    quote(&load_name(&table.table.name))
                ),
                rows: Some(table.rows as u64),
                otherwise: format!(
                    "the load table of {} holds another number of rows than were written",
                    table.table.name
                ),
            });
        }
        for table in &loaded {
            if table.truncate {
                statements.push(Checked {
                    sql: format!("DELETE FROM {}", quote(&target_name(&table.table.name))),
                    rows: None,
                    otherwise: String::new(),
                });
            }
            if table.rows > 0 {
                for sql in apply_statements(&table.table, table.reads) {
                    statements.push(Checked {
                        sql,
                        rows: None,
                        otherwise: String::new(),
                    });
                }
                statements.push(Checked {
                    sql: format!("DELETE FROM {}", quote(&landing_name(&table.table.name))),
                    rows: Some(table.rows as u64),
                    otherwise: format!(
                        "the landing table of {} held other rows than this batch's",
                        table.table.name
                    ),
                });
            }
        }
        if let Some((expected, next)) = state {
            statements.push(Checked {
                sql: update_state_sql(self.identity(), expected.map(|l| l.0), next.0),
                rows: Some(1),
                otherwise: STATE_MOVED.to_owned(),
            });
        }
        self.checked_transaction(&statements, "apply a change batch")
            .await?;
        if let Some((_, next)) = state {
            self.stored(next);
        }
        debug!(
            tables = loaded.len(),
            landed = loaded.iter().map(|t| t.rows).sum::<usize>(),
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

/// The tables a sink knows, by id.
pub(super) type KnownTables = HashMap<TableId, Arc<TableSchema>>;
