//! [`DuckDbSink`]: the [`Sink`] implementation.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use duckdb::Connection;
use tracing::{debug, info};

use super::apply::{apply_changes, history_columns, truncate, ApplyStats};
use super::config::DuckDbSinkConfig;
use super::encoder::history_copy;
use super::file::{open_writer, DuckDbReader, OpenFile};
use super::migrate::{ensure_current, ensure_history, replaceable};
use super::schema::{check_names, history_name, key_columns};
use super::streamed_copy::{CopyTarget, StreamedCopy};
use super::{append, blocking, commit, duck_error, in_transaction, rollback, state};
use crate::sinks::Sink;
use crate::types::change::{CdcBatch, CdcEvent, ResumptionState};
use crate::types::table::quote_literal;
use crate::types::{Lsn, TableId, TableSchema};
use crate::{Error, ErrorKind, Result};

/// Replicates into a DuckDB file, exactly once.
///
/// - [`write_table_schemas`](Sink::write_table_schemas) creates the tables
///   (or keeps existing ones with the same columns and key);
/// - a table's copy runs in one DuckDB transaction, from
///   [`begin_table_copy`](Sink::begin_table_copy) (which empties the table)
///   to [`end_table_copy`](Sink::end_table_copy) (which records the table
///   as copied with its snapshot LSN and commits); a first copy of a keyed
///   table commits its rows first and adds the key with that record;
/// - every [`write_cdc_batch`](Sink::write_cdc_batch) is one DuckDB
///   transaction applying all its events in order and recording its end LSN;
///   the returned LSN is committed.
///
/// See the module documentation and `docs/duckdb.md`.
pub struct DuckDbSink {
    config: DuckDbSinkConfig,
    /// Declared before `file`, so closed before the file's instance.
    conn: Connection,
    file: Arc<OpenFile>,
    /// The schema each DuckDB table has now, by table.
    tables: HashMap<TableId, Arc<TableSchema>>,
    /// The table whose copy transaction is open.
    copying: Option<TableId>,
    /// That copy, when it streams into the current-state table (modes
    /// without history); otherwise the copy runs on `conn`.
    streamed: Option<StreamedCopy>,
    /// While a change transaction spanning several batches is open (see
    /// [`CdcBatch::continues`]): the table schemas from before it, restored
    /// when it is rolled back.
    continuing: Option<HashMap<TableId, Arc<TableSchema>>>,
    /// The last LSN committed.
    last_lsn: Option<Lsn>,
    /// Totals of the CDC applies of this sink.
    totals: ApplyStats,
}

impl DuckDbSink {
    /// Opens (or creates) the DuckDB file and checks that it belongs to this
    /// configuration.
    ///
    /// Fails with a clear error, changing nothing, when the file is locked
    /// by another process or another sink of this process
    /// ([`ErrorKind::Sink`]), cannot be opened for writing, is not a DuckDB
    /// file, or holds the state of another identity or mode
    /// ([`ErrorKind::Config`]).
    pub fn open(config: DuckDbSinkConfig) -> Result<Self> {
        blocking(|| {
            let (file, conn) = open_writer(&config.path, &config.storage_version)?;
            let sink = Self {
                config,
                file,
                conn,
                tables: HashMap::new(),
                copying: None,
                streamed: None,
                continuing: None,
                last_lsn: None,
                totals: ApplyStats::default(),
            };
            if let Some(limit) = &sink.config.memory_limit {
                sink.conn
                    .execute_batch(&format!("SET memory_limit = {}", quote_literal(limit)))
                    .map_err(|e| {
                        Error::with_source(
                            ErrorKind::Config,
                            format!("DuckDB refused memory_limit {limit:?}; give a size such as \"1GB\""),
                            e,
                        )
                    })?;
            }
            state::init(&sink.conn, &sink.config)?;
            let mut sink = sink;
            sink.last_lsn = state::read(&sink.conn)?.last_lsn;
            info!(path = %sink.file.path().display(), mode = %sink.config.mode, last_lsn = ?sink.last_lsn, "opened DuckDB sink");
            Ok(sink)
        })
    }

    /// The configuration.
    pub fn config(&self) -> &DuckDbSinkConfig {
        &self.config
    }

    /// A read connection to the same database, usable from another thread
    /// while the sink writes; it sees committed data only.
    pub fn reader(&self) -> Result<DuckDbReader> {
        DuckDbReader::new(self.file.clone())
    }

    /// The last LSN committed to the file.
    pub fn last_lsn(&self) -> Option<Lsn> {
        self.last_lsn
    }

    /// Totals of the CDC batches applied by this sink: changes, changes
    /// skipped because a later change of their batch erased them, rounds.
    pub fn apply_totals(&self) -> ApplyStats {
        self.totals
    }

    /// The schema the sink knows for `table`, refusing tables it was not
    /// told about.
    fn known(&self, table: &TableSchema) -> Result<&Arc<TableSchema>> {
        self.tables.get(&table.id).ok_or_else(|| {
            Error::new(
                ErrorKind::Sink,
                format!(
                    "the DuckDB sink received data of {} before its schema (write_table_schemas); this is \
                     a bug in the caller",
                    table.name
                ),
            )
        })
    }

    /// Rolls back a copy left open (cancelled or failed backfill) or a
    /// change transaction whose last batch never came.
    fn abandon_open(&mut self) {
        if let Some(table) = self.copying.take() {
            debug!(table = %table, "rolling back an unfinished copy");
            match self.streamed.take() {
                Some(copy) => copy.rollback(),
                None => rollback(&self.conn),
            }
        }
        if let Some(before) = self.continuing.take() {
            debug!("rolling back an unfinished change transaction");
            rollback(&self.conn);
            self.tables = before;
        }
    }

    fn apply_batch(&mut self, batch: &CdcBatch) -> Result<()> {
        let mode = self.config.mode;
        let conn = &self.conn;
        let tables = &mut self.tables;
        let totals = &mut self.totals;
        for event in &batch.events {
            match event {
                CdcEvent::Changes(changes) => {
                    let known = tables.get(&changes.table.id);
                    if known.is_none_or(|k| k.columns != changes.table.columns) {
                        // The schema moved on without a SchemaChange event
                        // (first batch after a restart): convert the table.
                        evolve(conn, mode, &changes.table)?;
                        tables.insert(changes.table.id, changes.table.clone());
                    }
                    let stats = apply_changes(conn, mode, changes)?;
                    totals.changes += stats.changes;
                    totals.skipped += stats.skipped;
                    totals.rounds += stats.rounds;
                }
                CdcEvent::Truncate {
                    tables: truncated,
                    commit_lsn,
                    ..
                } => {
                    for table in truncated {
                        let known = tables
                            .get(&table.id)
                            .cloned()
                            .unwrap_or_else(|| table.clone());
                        truncate(conn, mode, &known, *commit_lsn)?;
                    }
                }
                CdcEvent::SchemaChange { new, .. } => {
                    info!(table = %new.name, "applying a schema change");
                    evolve(conn, mode, new)?;
                    tables.insert(new.id, new.clone());
                }
                CdcEvent::Message { prefix, lsn, .. } => {
                    debug!(%prefix, %lsn, "logical decoding message (not stored)");
                }
            }
        }
        if batch.continues {
            // Recorded with the batch that completes the transaction.
            return Ok(());
        }
        state::set_last_lsn(conn, batch.end_lsn)
    }
}

/// Converts the DuckDB tables of `table` to its (new) schema.
fn evolve(conn: &Connection, mode: super::DuckDbMode, table: &TableSchema) -> Result<()> {
    if mode.current_state() {
        ensure_current(conn, table, true)?;
    }
    if mode.history() {
        ensure_history(conn, table)?;
    }
    Ok(())
}

impl Drop for DuckDbSink {
    fn drop(&mut self) {
        self.abandon_open();
        self.file.release_writer();
    }
}

#[async_trait]
impl Sink for DuckDbSink {
    async fn resumption_state(&mut self) -> Result<ResumptionState> {
        blocking(|| {
            let state = state::read(&self.conn)?;
            self.last_lsn = state.last_lsn;
            Ok(state)
        })
    }

    async fn write_table_schemas(&mut self, tables: &[Arc<TableSchema>]) -> Result<()> {
        check_names(tables, self.config.mode)?;
        blocking(|| {
            self.abandon_open();
            let mode = self.config.mode;
            let copied = state::read(&self.conn)?.copied_tables;
            in_transaction(&self.conn, "create the tables", |conn| {
                for table in tables {
                    if mode.current_state() {
                        ensure_current(conn, table, copied.contains_key(&table.id))?;
                    }
                    if mode.history() {
                        ensure_history(conn, table)?;
                    }
                }
                Ok(())
            })?;
            for table in tables {
                self.tables.insert(table.id, table.clone());
            }
            Ok(())
        })
    }

    async fn begin_table_copy(&mut self, table: &Arc<TableSchema>) -> Result<()> {
        blocking(|| {
            self.abandon_open();
            self.known(table)?;
            if !self.config.mode.history() {
                let database: String = self
                    .conn
                    .query_row("SELECT current_database()", [], |row| row.get(0))
                    .map_err(|e| duck_error("read the name of the DuckDB file's database", e))?;
                let target =
                    if !key_columns(table).is_empty() && replaceable(&self.conn, &table.name)? {
                        CopyTarget::RecreateKeyAfter
                    } else {
                        CopyTarget::Refill
                    };
                self.streamed = Some(StreamedCopy::begin(
                    &self.file,
                    &database,
                    table.clone(),
                    target,
                )?);
                self.copying = Some(table.id);
                return Ok(());
            }
            let known = self.known(table)?.clone();
            self.conn
                .execute_batch("BEGIN TRANSACTION")
                .map_err(|e| duck_error(format!("begin the copy of {}", table.name), e))?;
            self.copying = Some(table.id);
            let emptied = (|| {
                state::unmark_copied(&self.conn, table.id)?;
                if self.config.mode.current_state() {
                    self.conn
                        .execute(&format!("DELETE FROM {}", known.name.quoted()), [])
                        .map_err(|e| {
                            duck_error(format!("empty DuckDB table {} for its copy", table.name), e)
                        })?;
                }
                Ok(())
            })();
            if emptied.is_err() {
                self.abandon_open();
            }
            emptied
        })
    }

    async fn write_table_rows(
        &mut self,
        table: &Arc<TableSchema>,
        rows: RecordBatch,
    ) -> Result<()> {
        if self.copying != Some(table.id) {
            return Err(Error::new(
                ErrorKind::Sink,
                format!(
                    "rows of {} arrived outside its copy (begin_table_copy was not called); this is a bug in \
                     the caller",
                    table.name
                ),
            ));
        }
        blocking(|| {
            let written = (|| {
                if rows.num_columns() != table.columns.len() {
                    return Err(Error::new(
                        ErrorKind::Sink,
                        format!(
                            "a copied batch of {} has {} columns, the table {}",
                            table.name,
                            rows.num_columns(),
                            table.columns.len()
                        ),
                    ));
                }
                if let Some(copy) = self.streamed.as_mut() {
                    return copy.write(rows);
                }
                let columns: Vec<String> = table.columns.iter().map(|c| c.name.clone()).collect();
                if self.config.mode.history() {
                    let history = history_copy(table, &rows)?;
                    append(
                        &self.conn,
                        &history_name(&table.name),
                        &history_columns(table),
                        history,
                    )?;
                }
                if self.config.mode.current_state() {
                    append(&self.conn, &table.name, &columns, rows)?;
                }
                Ok(())
            })();
            if written.is_err() {
                self.abandon_open();
            }
            written
        })
    }

    async fn end_table_copy(&mut self, table: &Arc<TableSchema>, snapshot_lsn: Lsn) -> Result<()> {
        if self.copying != Some(table.id) {
            return Err(Error::new(
                ErrorKind::Sink,
                format!(
                    "the copy of {} ended without beginning; this is a bug in the caller",
                    table.name
                ),
            ));
        }
        blocking(|| {
            if let Some(copy) = self.streamed.take() {
                self.copying = None;
                let timings = copy.commit(snapshot_lsn)?;
                info!(
                    table = %table.name,
                    %snapshot_lsn,
                    insert_ms = timings.insert.as_millis() as u64,
                    commit_ms = timings.commit.as_millis() as u64,
                    key_ms = timings.key.as_millis() as u64,
                    "copy committed to DuckDB"
                );
                return Ok(());
            }
            let finished = (|| {
                state::mark_copied(&self.conn, table, snapshot_lsn)?;
                if self.config.mode.history() {
                    self.conn
                        .execute(
                            &format!(
                                "UPDATE {} SET _pgr_commit_lsn = ? WHERE _pgr_op = 'copy' AND _pgr_commit_lsn IS NULL",
                                history_name(&table.name).quoted()
                            ),
                            duckdb::params![snapshot_lsn.0],
                        )
                        .map_err(|e| duck_error(format!("stamp the copied history rows of {}", table.name), e))?;
                }
                Ok(())
            })();
            if let Err(error) = finished {
                self.abandon_open();
                return Err(error);
            }
            self.copying = None;
            commit(&self.conn, &format!("store the copy of {}", table.name))?;
            info!(table = %table.name, %snapshot_lsn, "copy committed to DuckDB");
            Ok(())
        })
    }

    async fn write_cdc_batch(&mut self, batch: CdcBatch) -> Result<Lsn> {
        blocking(|| {
            if let Some(table) = self.copying {
                debug!(table = %table, "rolling back an unfinished copy");
                self.abandon_open();
            }
            let durable = self.last_lsn.unwrap_or(Lsn::ZERO);
            let continued = self.continuing.take();
            if continued.is_none()
                && !batch.continues
                && self.last_lsn.is_some_and(|last| batch.end_lsn <= last)
            {
                debug!(end_lsn = %batch.end_lsn, last = %durable, "batch already applied; skipping it");
                return Ok(durable);
            }
            let started = Instant::now();
            let before = match continued {
                Some(before) => before,
                None => {
                    self.conn
                        .execute_batch("BEGIN TRANSACTION")
                        .map_err(|e| duck_error("begin the transaction of a change batch", e))?;
                    self.tables.clone()
                }
            };
            let applied = self.apply_batch(&batch);
            let applied = applied.and_then(|()| {
                if batch.continues {
                    Ok(())
                } else {
                    commit(&self.conn, "store a change batch")
                }
            });
            if let Err(error) = applied {
                rollback(&self.conn);
                self.tables = before;
                return Err(error);
            }
            if batch.continues {
                // The transaction goes on in the next batch; nothing new is durable.
                self.continuing = Some(before);
                debug!(
                    events = batch.events.len(),
                    "part of a large transaction applied (not committed yet)"
                );
                return Ok(durable);
            }
            self.last_lsn = Some(batch.end_lsn);
            debug!(end_lsn = %batch.end_lsn, transactions = batch.transactions, events = batch.events.len(), elapsed_ms = started.elapsed().as_millis() as u64, "change batch committed to DuckDB");
            Ok(batch.end_lsn)
        })
    }
}
