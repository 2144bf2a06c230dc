//! [`PostgresSink`]: the [`Sink`] implementation.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use tokio_postgres::Client;
use tracing::{debug, info};

use super::apply::{apply_changes, truncate, ApplyStats};
use super::config::PostgresSinkConfig;
use super::copy_encoder::ColumnEncoder;
use super::copy_in::{CopyColumn, CopyIn};
use super::migrate::ensure_table;
use super::schema::{cast, column_list, is_text_carried, stage_type};
use super::{state, target_error};
use crate::postgres::client::connect_query_client;
use crate::sinks::Sink;
use crate::types::change::{CdcBatch, CdcEvent, ResumptionState};
use crate::types::table::quote_identifier;
use crate::types::values::column_kind;
use crate::types::{Lsn, TableId, TableSchema};
use crate::{Error, ErrorKind, Result};

/// The temporary table a backfill of text-carried columns goes through.
const COPY_STAGE: &str = "_pgr_copy";

/// Replicates into another Postgres database, exactly once.
///
/// - [`write_table_schemas`](Sink::write_table_schemas) creates the tables
///   (or converts existing ones to the source's columns and key);
/// - a table's copy runs in one transaction, from
///   [`begin_table_copy`](Sink::begin_table_copy) (which empties the table)
///   to [`end_table_copy`](Sink::end_table_copy) (which records the table
///   as copied with its snapshot LSN and commits);
/// - every [`write_cdc_batch`](Sink::write_cdc_batch) is one transaction
///   applying all its events in order and recording its end LSN; the
///   returned LSN is committed.
///
/// See the module documentation and `docs/postgres_sink.md`.
pub struct PostgresSink {
    config: PostgresSinkConfig,
    client: Client,
    /// The schema each target table has now, by table.
    tables: HashMap<TableId, Arc<TableSchema>>,
    /// The copy whose transaction is open.
    copying: Option<OpenCopy>,
    /// While a change transaction spanning several batches is open (see
    /// [`CdcBatch::continues`]): the table schemas from before it, restored
    /// when it is rolled back.
    continuing: Option<HashMap<TableId, Arc<TableSchema>>>,
    /// The last LSN committed.
    last_lsn: Option<Lsn>,
    /// Totals of the CDC applies of this sink.
    totals: ApplyStats,
}

/// A table's copy in progress.
struct OpenCopy {
    table: Arc<TableSchema>,
    copy: Option<CopyIn>,
    /// The rows go through [`COPY_STAGE`] (the table has text-carried
    /// columns).
    staged: bool,
}

impl PostgresSink {
    /// Connects to the target database, takes its writer lock and checks
    /// that it belongs to this configuration.
    ///
    /// Fails with a clear error, changing nothing, when the database cannot
    /// be reached or refuses the login, another sink writes to it
    /// ([`ErrorKind::Sink`]), or it holds the state of another identity or
    /// format version ([`ErrorKind::Config`]).
    pub async fn connect(config: PostgresSinkConfig) -> Result<Self> {
        let client = connect_query_client(&config.connection).await?;
        state::init(&client, &config).await?;
        let last_lsn = state::read(&client).await?.last_lsn;
        info!(database = %config.connection.dbname, host = %config.connection.host, last_lsn = ?last_lsn, "connected Postgres sink");
        Ok(Self {
            config,
            client,
            tables: HashMap::new(),
            copying: None,
            continuing: None,
            last_lsn,
            totals: ApplyStats::default(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &PostgresSinkConfig {
        &self.config
    }

    /// The last LSN committed to the target.
    pub fn last_lsn(&self) -> Option<Lsn> {
        self.last_lsn
    }

    /// Totals of the CDC batches applied by this sink.
    pub fn apply_totals(&self) -> ApplyStats {
        self.totals
    }

    /// Reconnects when the connection was lost (the pipeline's recovery
    /// calls [`Sink::resumption_state`] first), and rolls back what was
    /// left open.
    async fn ready(&mut self) -> Result<()> {
        if self.client.is_closed() {
            info!("the connection to the target database was lost; reconnecting");
            self.copying = None;
            // The open transaction died with the connection.
            if let Some(before) = self.continuing.take() {
                self.tables = before;
            }
            let client = connect_query_client(&self.config.connection).await?;
            state::init(&client, &self.config).await?;
            self.client = client;
        }
        self.abandon_open().await;
        Ok(())
    }

    /// Rolls back a copy left open (cancelled or failed backfill) or a
    /// change transaction whose last batch never came.
    async fn abandon_open(&mut self) {
        let copy = self.copying.take();
        let continuing = self.continuing.take();
        if copy.is_none() && continuing.is_none() {
            return;
        }
        if let Some(copy) = copy {
            debug!(table = %copy.table.name, "rolling back an unfinished copy");
        }
        if let Some(before) = continuing {
            debug!("rolling back an unfinished change transaction");
            self.tables = before;
        }
        rollback(&self.client).await;
    }

    fn known(&self, table: &TableSchema) -> Result<&Arc<TableSchema>> {
        self.tables.get(&table.id).ok_or_else(|| {
            Error::new(
                ErrorKind::Sink,
                format!(
                    "the Postgres sink received data of {} before its schema (write_table_schemas); this is a \
                     bug in the caller",
                    table.name
                ),
            )
        })
    }

    async fn begin(&self, what: &str) -> Result<()> {
        self.client
            .batch_execute("BEGIN")
            .await
            .map_err(|e| target_error(format!("begin the transaction to {what}"), e))
    }

    async fn start_copy(&self, table: &TableSchema, staged: bool) -> Result<CopyIn> {
        let sql = if staged {
            format!("COPY {COPY_STAGE} FROM STDIN (FORMAT binary)")
        } else {
            format!(
                "COPY {} ({}) FROM STDIN (FORMAT binary)",
                table.name.quoted(),
                column_list(table, 0..table.columns.len())
            )
        };
        CopyIn::start(&self.client, &sql, &table.name).await
    }

    /// Moves the staged rows of a copy into its table.
    async fn move_staged(&self, table: &TableSchema) -> Result<()> {
        let values: Vec<String> = table
            .columns
            .iter()
            .enumerate()
            .map(|(i, c)| cast(&format!("c{i}"), c))
            .collect();
        let sql = format!(
            "INSERT INTO {} ({}) SELECT {} FROM {COPY_STAGE}; TRUNCATE {COPY_STAGE}",
            table.name.quoted(),
            column_list(table, 0..table.columns.len()),
            values.join(", ")
        );
        self.client
            .batch_execute(&sql)
            .await
            .map_err(|e| target_error(format!("move the copied rows of {} into it", table.name), e))
    }

    async fn begin_copy(&mut self, table: &Arc<TableSchema>) -> Result<()> {
        let known = self.known(table)?.clone();
        self.begin(&format!("copy {}", table.name)).await?;
        let staged = table.columns.iter().any(is_text_carried);
        self.copying = Some(OpenCopy {
            table: known.clone(),
            copy: None,
            staged,
        });
        let mut sql = format!(
            "{} TRUNCATE {};",
            state::unmark_copied_sql(table.id),
            known.name.quoted()
        );
        if staged {
            let columns: Vec<String> = known
                .columns
                .iter()
                .enumerate()
                .map(|(i, c)| format!("c{i} {}", stage_type(c)))
                .collect();
            sql.push_str(&format!(
                " CREATE TEMP TABLE {COPY_STAGE} ({}) ON COMMIT DROP;",
                columns.join(", ")
            ));
        }
        self.client
            .batch_execute(&sql)
            .await
            .map_err(|e| target_error(format!("empty {} for its copy", table.name), e))?;
        let copy = self.start_copy(&known, staged).await?;
        if let Some(open) = self.copying.as_mut() {
            open.copy = Some(copy);
        }
        Ok(())
    }

    async fn write_rows(&mut self, table: &Arc<TableSchema>, rows: &RecordBatch) -> Result<()> {
        let Some(open) = self.copying.as_mut().filter(|c| c.table.id == table.id) else {
            return Err(Error::new(
                ErrorKind::Sink,
                format!(
                    "rows of {} arrived outside its copy (begin_table_copy was not called); this is a bug in \
                     the caller",
                    table.name
                ),
            ));
        };
        if rows.num_columns() != open.table.columns.len() {
            return Err(Error::new(
                ErrorKind::Sink,
                format!(
                    "a copied batch of {} has {} columns, the table {}",
                    table.name,
                    rows.num_columns(),
                    open.table.columns.len()
                ),
            ));
        }
        let mut columns = Vec::with_capacity(rows.num_columns());
        for (i, column) in open.table.columns.iter().enumerate() {
            let encoder = ColumnEncoder::new(rows.column(i).as_ref(), column_kind(column))
                .map_err(|why| {
                    Error::new(
                        ErrorKind::Sink,
                        format!(
                            "the copied rows of {} carry column {} in a form the Postgres sink cannot read: {why}",
                            table.name, column.name
                        ),
                    )
                })?;
            columns.push(CopyColumn {
                name: quote_identifier(&column.name),
                encoder,
            });
        }
        let Some(copy) = open.copy.as_mut() else {
            return Err(Error::new(
                ErrorKind::Sink,
                format!("the copy of {} is not open", table.name),
            ));
        };
        copy.send_rows(&columns, 0..rows.num_rows()).await?;
        if open.staged && copy.bytes() >= self.config.stage_flush_bytes {
            let table = open.table.clone();
            if let Some(copy) = open.copy.take() {
                copy.finish().await?;
            }
            self.move_staged(&table).await?;
            let copy = self.start_copy(&table, true).await?;
            if let Some(open) = self.copying.as_mut() {
                open.copy = Some(copy);
            }
        }
        Ok(())
    }

    async fn end_copy(&mut self, table: &Arc<TableSchema>, snapshot_lsn: Lsn) -> Result<()> {
        let Some(open) = self.copying.as_mut().filter(|c| c.table.id == table.id) else {
            return Err(Error::new(
                ErrorKind::Sink,
                format!(
                    "the copy of {} ended without beginning; this is a bug in the caller",
                    table.name
                ),
            ));
        };
        let staged = open.staged;
        let known = open.table.clone();
        if let Some(copy) = open.copy.take() {
            copy.finish().await?;
        }
        if staged {
            self.move_staged(&known).await?;
        }
        let sql = format!("{} COMMIT;", state::mark_copied_sql(&known, snapshot_lsn));
        self.client
            .batch_execute(&sql)
            .await
            .map_err(|e| target_error(format!("store the copy of {}", table.name), e))?;
        self.copying = None;
        info!(table = %table.name, %snapshot_lsn, "copy committed to the target database");
        Ok(())
    }

    async fn apply_batch(&mut self, batch: &CdcBatch) -> Result<()> {
        for event in &batch.events {
            match event {
                CdcEvent::Changes(changes) => {
                    let known = self.tables.get(&changes.table.id);
                    if known.is_none_or(|k| k.columns != changes.table.columns) {
                        // The schema moved on without a SchemaChange event
                        // (first batch after a restart): convert the table.
                        ensure_table(&self.client, &changes.table).await?;
                        self.tables.insert(changes.table.id, changes.table.clone());
                    }
                    let stats = apply_changes(&self.client, changes).await?;
                    self.totals.changes += stats.changes;
                    self.totals.skipped += stats.skipped;
                    self.totals.rounds += stats.rounds;
                }
                CdcEvent::Truncate { tables, .. } => {
                    for table in tables {
                        let known = self
                            .tables
                            .get(&table.id)
                            .cloned()
                            .unwrap_or_else(|| table.clone());
                        truncate(&self.client, &known).await?;
                    }
                }
                CdcEvent::SchemaChange { new, .. } => {
                    info!(table = %new.name, "applying a schema change");
                    ensure_table(&self.client, new).await?;
                    self.tables.insert(new.id, new.clone());
                }
                CdcEvent::Message { prefix, lsn, .. } => {
                    debug!(%prefix, %lsn, "logical decoding message (not stored)");
                }
            }
        }
        Ok(())
    }
}

/// Rolls back the open transaction, if any (an error when none is open,
/// or the connection is gone, is only logged).
async fn rollback(client: &Client) {
    if let Err(error) = client.batch_execute("ROLLBACK").await {
        debug!(%error, "rollback on the target database failed");
    }
}

#[async_trait]
impl Sink for PostgresSink {
    async fn resumption_state(&mut self) -> Result<ResumptionState> {
        self.ready().await?;
        let state = state::read(&self.client).await?;
        self.last_lsn = state.last_lsn;
        Ok(state)
    }

    async fn write_table_schemas(&mut self, tables: &[Arc<TableSchema>]) -> Result<()> {
        self.ready().await?;
        if let Some(table) = tables
            .iter()
            .find(|t| t.name.schema == super::schema::STATE_SCHEMA)
        {
            return Err(Error::new(
                ErrorKind::Config,
                format!(
                    "table {} is in schema {}, which the Postgres sink keeps for its state; leave it out of \
                     the publication",
                    table.name,
                    super::schema::STATE_SCHEMA
                ),
            ));
        }
        self.begin("create the tables").await?;
        for table in tables {
            if let Err(error) = ensure_table(&self.client, table).await {
                rollback(&self.client).await;
                return Err(error);
            }
        }
        self.client
            .batch_execute("COMMIT")
            .await
            .map_err(|e| target_error("commit the created tables", e))?;
        for table in tables {
            self.tables.insert(table.id, table.clone());
        }
        Ok(())
    }

    async fn begin_table_copy(&mut self, table: &Arc<TableSchema>) -> Result<()> {
        self.abandon_open().await;
        let begun = self.begin_copy(table).await;
        if begun.is_err() {
            self.abandon_open().await;
        }
        begun
    }

    async fn write_table_rows(
        &mut self,
        table: &Arc<TableSchema>,
        rows: RecordBatch,
    ) -> Result<()> {
        let written = self.write_rows(table, &rows).await;
        if written.is_err() {
            self.abandon_open().await;
        }
        written
    }

    async fn end_table_copy(&mut self, table: &Arc<TableSchema>, snapshot_lsn: Lsn) -> Result<()> {
        let ended = self.end_copy(table, snapshot_lsn).await;
        if ended.is_err() {
            self.abandon_open().await;
        }
        ended
    }

    async fn write_cdc_batch(&mut self, batch: CdcBatch) -> Result<Lsn> {
        if let Some(open) = &self.copying {
            debug!(table = %open.table.name, "rolling back an unfinished copy");
            self.abandon_open().await;
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
                self.begin("apply a change batch").await?;
                self.tables.clone()
            }
        };
        let mut applied = self.apply_batch(&batch).await;
        if applied.is_ok() && !batch.continues {
            let sql = format!("{} COMMIT;", state::set_last_lsn_sql(batch.end_lsn));
            applied = self
                .client
                .batch_execute(&sql)
                .await
                .map_err(|e| target_error("store a change batch", e));
        }
        if let Err(error) = applied {
            rollback(&self.client).await;
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
        debug!(end_lsn = %batch.end_lsn, transactions = batch.transactions, events = batch.events.len(), elapsed_ms = started.elapsed().as_millis() as u64, "change batch committed to the target database");
        Ok(batch.end_lsn)
    }
}
