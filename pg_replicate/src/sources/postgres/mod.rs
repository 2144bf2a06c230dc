//! The Postgres source: backfill inside a replication slot's exported
//! snapshot, then the slot's pgoutput change stream.
//!
//! Handover without gaps or duplicates: a table copied in the snapshot of
//! LSN `S` already contains every transaction committed before `S`; the
//! stream skips that table's changes of such transactions. Tables copied
//! when the slot is created use the slot's own snapshot (`S` = its
//! consistent point); tables copied later (after an interrupted backfill)
//! use the snapshot of a temporary slot created for the purpose.

mod cdc;
mod change_batch;
mod copy;
mod copy_plan;
mod copy_pool;
mod heartbeat;
mod relations;
mod sessions;
mod spool;

pub use cdc::PostgresCdcStream;
pub use copy_pool::PostgresTableCopy;
pub use heartbeat::HEARTBEAT_PREFIX;

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use tokio_postgres::Client;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::pipeline::{BatchConfig, PipelineAction};
use crate::postgres::catalog;
use crate::postgres::client::connect_query_client;
use crate::postgres::replication::ReplicationClient;
use crate::postgres::PgConnectionConfig;
use crate::sources::{Source, SourcePlan};
use crate::types::change::ResumptionState;
use crate::types::table::quote_literal;
use crate::types::{ArrayForm, Lsn, TableName, TableSchema};
use crate::{Error, ErrorKind, Result};
use copy_pool::CopyPool;

/// Which tables the source reads.
#[derive(Clone, Debug)]
enum Tables {
    /// The tables of a publication, streamed through a slot.
    Publication { publication: String, slot: String },
    /// Named tables, copied only.
    Listed(Vec<TableName>),
}

/// A Postgres database as a source of rows and changes.
///
/// Its connections show in `pg_stat_activity` under the configured
/// `application_name` followed by a tag unique to this source; when it
/// starts again after a failure, it ends its own sessions left from the
/// failed attempt, which the server may otherwise keep for a long time.
pub struct PostgresSource {
    connection: PgConnectionConfig,
    tables: Tables,
    query: Option<Client>,
    /// Replication connection of a slot created by `prepare`; its exported
    /// snapshot lives until the connection runs its next command.
    slot_connection: Option<ReplicationClient>,
    /// Connection holding a temporary slot whose snapshot the copies use.
    snapshot_connection: Option<ReplicationClient>,
    slot_confirmed: Option<Lsn>,
    schemas: Vec<Arc<TableSchema>>,
    /// The snapshot the copies read, with the tables to copy in it.
    snapshot: Option<(String, Vec<Arc<TableSchema>>)>,
    /// Publication row filters (Postgres 15+), applied to the copies.
    row_filters: HashMap<TableName, String>,
    copy_connections: usize,
    copy_pool: Option<CopyPool>,
    array_form: ArrayForm,
    heartbeat: Option<std::time::Duration>,
    slot_metrics: Option<std::time::Duration>,
}

impl PostgresSource {
    /// Replicates the tables of `publication` through the logical replication
    /// slot `slot_name` (created when missing).
    pub fn new(
        connection: PgConnectionConfig,
        publication: impl Into<String>,
        slot_name: impl Into<String>,
    ) -> Self {
        Self::with_tables(
            connection,
            Tables::Publication {
                publication: publication.into(),
                slot: slot_name.into(),
            },
        )
    }

    /// Copies the named tables in one consistent snapshot, without a slot;
    /// only [`PipelineAction::TableCopiesOnly`] is possible.
    pub fn for_tables(connection: PgConnectionConfig, tables: Vec<TableName>) -> Self {
        Self::with_tables(connection, Tables::Listed(tables))
    }

    fn with_tables(mut connection: PgConnectionConfig, tables: Tables) -> Self {
        connection.application_name = Some(sessions::tagged_application_name(
            connection.application_name(),
        ));
        Self {
            connection,
            tables,
            query: None,
            slot_connection: None,
            snapshot_connection: None,
            slot_confirmed: None,
            schemas: Vec::new(),
            snapshot: None,
            row_filters: HashMap::new(),
            copy_connections: default_copy_connections(),
            copy_pool: None,
            array_form: ArrayForm::default(),
            heartbeat: None,
            slot_metrics: None,
        }
    }

    /// Sets how many connections copy tables in parallel during the
    /// backfill (default: the number of CPUs, at most 4). Each imports the
    /// same snapshot; large tables are split into ctid block ranges read
    /// concurrently.
    pub fn with_copy_connections(mut self, connections: usize) -> Self {
        self.copy_connections = connections.max(1);
        self
    }

    /// Sets how array columns become Arrow values (default
    /// [`ArrayForm::Lists`]). [`ArrayForm::Exact`] keeps every array value
    /// whole, multi-dimensional ones and lower bounds included; switching an
    /// existing pipeline changes the columns' types, so its sink must start
    /// over (recopy).
    pub fn with_array_form(mut self, form: ArrayForm) -> Self {
        self.array_form = form;
        self
    }

    /// While streaming, writes a heartbeat (a non-transactional logical
    /// decoding message with prefix [`HEARTBEAT_PREFIX`], through a
    /// connection of its own) every `every`, so the slot moves on and keeps
    /// no WAL back even when the database writes nothing the publication
    /// carries. Off by default; the user needs EXECUTE on
    /// `pg_logical_emit_message` (superusers have it).
    pub fn with_heartbeat(mut self, every: std::time::Duration) -> Self {
        self.heartbeat = Some(every.max(std::time::Duration::from_millis(100)));
        self
    }

    /// While streaming, reads how much WAL the slot holds back (through a
    /// connection of its own) every `every` and sets the gauges
    /// `pg_replicate_slot_retained_bytes` (WAL from the slot's
    /// `restart_lsn`) and `pg_replicate_slot_unconfirmed_bytes` (from its
    /// confirmed position), labelled `slot`. Off by default.
    pub fn with_slot_metrics(mut self, every: std::time::Duration) -> Self {
        self.slot_metrics = Some(every.max(std::time::Duration::from_millis(100)));
        self
    }

    fn query(&self) -> Result<&Client> {
        self.query
            .as_ref()
            .ok_or_else(|| Error::new(ErrorKind::Config, "the source must be prepared before use"))
    }

    async fn load_schemas(&mut self, ids: Vec<crate::types::TableId>) -> Result<()> {
        let query = self.query()?;
        let mut schemas = Vec::with_capacity(ids.len());
        for id in ids {
            let mut schema = catalog::table_schema(query, id).await?;
            for column in &mut schema.columns {
                column.array_form = self.array_form;
            }
            schemas.push(Arc::new(schema));
        }
        self.schemas = schemas;
        Ok(())
    }

    /// Narrows the schemas to the publication's column lists and keeps its
    /// row filters for the copies (Postgres 15+); the stream is filtered by
    /// the server.
    async fn apply_publication_filters(&mut self, publication: &str) -> Result<()> {
        let published = catalog::published_tables(self.query()?, publication).await?;
        for schema in &mut self.schemas {
            let Some(table) = published.get(&schema.name) else {
                continue;
            };
            if let Some(columns) = &table.columns {
                let narrowed = Arc::make_mut(schema);
                narrowed.columns.retain(|c| columns.contains(&c.name));
            }
            if let Some(filter) = &table.row_filter {
                self.row_filters.insert(schema.name.clone(), filter.clone());
            }
        }
        Ok(())
    }

    async fn prepare_listed(
        &mut self,
        action: PipelineAction,
        names: Vec<TableName>,
    ) -> Result<SourcePlan> {
        if action != PipelineAction::TableCopiesOnly {
            return Err(Error::new(
                ErrorKind::Config,
                "a source for named tables can only copy them; give a publication and slot to stream changes",
            ));
        }
        let query = self.query()?;
        query
            .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .await
            .map_err(|e| {
                Error::with_source(ErrorKind::Connection, "could not open the copy snapshot", e)
            })?;
        let mut ids = Vec::with_capacity(names.len());
        for name in &names {
            ids.push(catalog::table_id(query, name).await?);
        }
        // Only informational here: no change stream follows a listed copy.
        let lsn: String = query
            .query_one("SELECT pg_current_wal_lsn()::text", &[])
            .await
            .map_err(|e| {
                Error::with_source(ErrorKind::Connection, "could not read the WAL position", e)
            })?
            .get(0);
        let snapshot: String = query
            .query_one("SELECT pg_export_snapshot()", &[])
            .await
            .map_err(|e| {
                Error::with_source(
                    ErrorKind::Connection,
                    "could not export the copy snapshot",
                    e,
                )
            })?
            .get(0);
        self.load_schemas(ids).await?;
        self.snapshot = Some((snapshot, self.schemas.clone()));
        Ok(SourcePlan {
            tables: self.schemas.clone(),
            tables_to_copy: self.schemas.clone(),
            snapshot_lsn: lsn.parse().unwrap_or_default(),
        })
    }

    async fn prepare_publication(
        &mut self,
        action: PipelineAction,
        state: &ResumptionState,
        publication: String,
        slot: String,
    ) -> Result<SourcePlan> {
        validate_slot_name(&slot)?;
        let query = self.query()?;
        catalog::check_wal_level(query).await?;
        let info = catalog::publication(query, &publication).await?;
        let ids = catalog::publication_tables(query, &publication).await?;
        if ids.is_empty() {
            warn!(publication, "the publication has no tables");
        }
        self.load_schemas(ids).await?;
        self.apply_publication_filters(&publication).await?;
        if info.publishes_updates || info.publishes_deletes {
            check_identities(&self.schemas)?;
        }

        let query = self.query()?;
        let existing = catalog::slot(query, &slot).await?;
        if let Some(existing) = &existing {
            check_slot(&slot, existing, &self.connection.dbname)?;
            self.slot_confirmed = existing.confirmed_flush;
        }
        if existing.is_none()
            && action == PipelineAction::CdcOnly
            && (state.last_lsn.is_some() || !state.copied_tables.is_empty())
        {
            // A new slot would start at the current WAL position: the
            // changes between the sink's position and now would be lost.
            return Err(Error::new(
                ErrorKind::SourceSetup,
                format!(
                    "replication slot {slot} does not exist, but the sink holds data replicated through \
                     it (up to {}): the changes since then are no longer available. Replicate into a \
                     fresh sink (or clear this one's state) with a backfill to copy the tables again",
                    state
                        .last_lsn
                        .map_or_else(|| "its copied tables".to_owned(), |lsn| format!("LSN {lsn}"))
                ),
            ));
        }

        let mut tables_to_copy: Vec<Arc<TableSchema>> = match action {
            PipelineAction::CdcOnly => Vec::new(),
            _ if existing.is_none() => {
                if !state.copied_tables.is_empty() {
                    warn!(slot, "the sink holds copied tables but the slot does not exist; copying every table again");
                }
                self.schemas.clone()
            }
            _ => self
                .schemas
                .iter()
                .filter(|t| !state.copied_tables.contains_key(&t.id))
                .cloned()
                .collect(),
        };

        let mut snapshot = None;
        if existing.is_none() && action != PipelineAction::TableCopiesOnly {
            let mut connection = ReplicationClient::connect(&self.connection).await?;
            let created = connection.create_logical_slot(&slot, false).await?;
            info!(slot, consistent_point = %created.consistent_point, "replication slot created");
            self.slot_confirmed = Some(created.consistent_point);
            snapshot = Some((created.snapshot_name, created.consistent_point));
            self.slot_connection = Some(connection);
        } else if !tables_to_copy.is_empty() {
            let mut connection = ReplicationClient::connect(&self.connection).await?;
            let name = format!(
                "pgr_snapshot_{}_{}",
                std::process::id(),
                sessions::random_u64() % 1_000_000
            );
            let created = connection.create_logical_slot(&name, true).await?;
            snapshot = Some((created.snapshot_name, created.consistent_point));
            self.snapshot_connection = Some(connection);
        }

        let mut snapshot_lsn = Lsn::ZERO;
        if let Some((name, lsn)) = snapshot {
            if tables_to_copy.is_empty() {
                // Nothing to copy: let the slot's snapshot go.
            } else {
                self.query()?
                    .batch_execute(&format!(
                        "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SET TRANSACTION SNAPSHOT {}",
                        quote_literal(&name)
                    ))
                    .await
                    .map_err(|e| Error::with_source(ErrorKind::SourceSetup, "could not import the slot's snapshot", e))?;
                snapshot_lsn = lsn;
                self.snapshot = Some((name, tables_to_copy.clone()));
            }
        } else {
            tables_to_copy.clear();
        }

        Ok(SourcePlan {
            tables: self.schemas.clone(),
            tables_to_copy,
            snapshot_lsn,
        })
    }
}

/// One copy connection per CPU, at most 4.
fn default_copy_connections() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get().clamp(1, 4))
}

fn validate_slot_name(slot: &str) -> Result<()> {
    let valid = !slot.is_empty()
        && slot.len() <= 63
        && slot
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if valid {
        Ok(())
    } else {
        Err(Error::new(
            ErrorKind::Config,
            format!("`{slot}` is not a valid replication slot name: use 1 to 63 lower-case letters, digits and underscores"),
        ))
    }
}

fn check_slot(slot: &str, info: &catalog::SlotInfo, dbname: &str) -> Result<()> {
    if info.plugin.as_deref() != Some("pgoutput") {
        return Err(Error::new(
            ErrorKind::SourceSetup,
            format!(
                "replication slot `{slot}` exists but is not a logical pgoutput slot (plugin {:?}); use another slot name",
                info.plugin
            ),
        ));
    }
    if info.database.as_deref() != Some(dbname) {
        return Err(Error::new(
            ErrorKind::SourceSetup,
            format!(
                "replication slot `{slot}` belongs to database {:?}, not `{dbname}`; use another slot name",
                info.database
            ),
        ));
    }
    if info.wal_status.as_deref() == Some("lost") {
        return Err(Error::new(
            ErrorKind::SourceSetup,
            format!(
                "replication slot `{slot}` was invalidated (wal_status lost): it fell further behind \
                 than max_slot_wal_keep_size allows and Postgres removed WAL it still needed, so the \
                 changes after LSN {} are gone. Drop it (SELECT pg_drop_replication_slot('{slot}')) and \
                 replicate into a fresh sink (or clear this sink's state) with a backfill; to prevent \
                 it, raise max_slot_wal_keep_size or watch the slot's retained WAL (slot_health)",
                info.confirmed_flush
                    .map_or_else(|| "its confirmed position".to_owned(), |lsn| lsn.to_string())
            ),
        ));
    }
    if let Some(pid) = info.active_pid {
        return Err(Error::new(
            ErrorKind::SourceSetup,
            format!(
                "replication slot `{slot}` is in use by another connection (PID {pid}); stop that consumer \
                 or use another slot name"
            ),
        ));
    }
    Ok(())
}

fn check_identities(tables: &[Arc<TableSchema>]) -> Result<()> {
    let missing: Vec<String> = tables
        .iter()
        .filter(|t| !t.has_usable_identity())
        .map(|t| t.name.to_string())
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    Err(Error::new(
        ErrorKind::Schema,
        format!(
            "table(s) {} have no replica identity, so their updates and deletes cannot be replicated; \
             add a primary key or run ALTER TABLE ... REPLICA IDENTITY FULL (or publish only inserts)",
            missing.join(", ")
        ),
    ))
}

#[async_trait]
impl Source for PostgresSource {
    type TableCopy = PostgresTableCopy;
    type Cdc = PostgresCdcStream;

    async fn prepare(
        &mut self,
        action: PipelineAction,
        state: &ResumptionState,
    ) -> Result<SourcePlan> {
        // Prepared again after a failure: what the last attempt opened is
        // dropped (its copies are redone in a new snapshot), and its
        // sessions the server still keeps are ended.
        self.copy_pool = None;
        self.snapshot = None;
        self.slot_connection = None;
        self.snapshot_connection = None;
        let query = connect_query_client(&self.connection).await?;
        sessions::end_stale_sessions(&query, self.connection.application_name()).await;
        self.query = Some(query);
        match self.tables.clone() {
            Tables::Listed(names) => self.prepare_listed(action, names).await,
            Tables::Publication { publication, slot } => {
                self.prepare_publication(action, state, publication, slot)
                    .await
            }
        }
    }

    async fn copy_table(
        &mut self,
        table: &Arc<TableSchema>,
        batch: &BatchConfig,
    ) -> Result<PostgresTableCopy> {
        if self.copy_pool.is_none() {
            let Some((snapshot, tables)) = &self.snapshot else {
                return Err(Error::new(
                    ErrorKind::Config,
                    format!(
                        "{} cannot be copied: the source's plan has no tables to copy",
                        table.name
                    ),
                ));
            };
            let pool = CopyPool::start(
                &self.connection,
                self.query()?,
                snapshot,
                tables,
                &self.row_filters,
                self.copy_connections,
                batch,
            )
            .await?;
            self.copy_pool = Some(pool);
        }
        match self.copy_pool.as_mut() {
            Some(pool) => pool.take(table),
            None => Err(Error::new(
                ErrorKind::Config,
                "the copy connections did not start",
            )),
        }
    }

    async fn start_cdc(
        &mut self,
        state: &ResumptionState,
        batch: &BatchConfig,
        cancel: CancellationToken,
    ) -> Result<PostgresCdcStream> {
        let Tables::Publication { publication, slot } = self.tables.clone() else {
            return Err(Error::new(
                ErrorKind::Config,
                "a source for named tables cannot stream changes; give a publication and slot",
            ));
        };
        let query = self.query.take().ok_or_else(|| {
            Error::new(
                ErrorKind::Config,
                "the source must be prepared before streaming",
            )
        })?;
        // The backfill is over: close its connections and snapshot.
        self.copy_pool = None;
        self.snapshot = None;
        // End the copy snapshot (a no-op outside a transaction).
        query.batch_execute("COMMIT").await.map_err(|e| {
            Error::with_source(ErrorKind::Connection, "could not end the copy snapshot", e)
        })?;
        if let Some(snapshot) = self.snapshot_connection.take() {
            snapshot.close().await;
        }
        let mut connection = match self.slot_connection.take() {
            Some(connection) => connection,
            None => ReplicationClient::connect(&self.connection).await?,
        };
        let start = state.last_lsn.unwrap_or(Lsn::ZERO);
        // Protocol 2 streams large transactions before they commit
        // (Postgres 14+), so they need not be held whole anywhere.
        let protocol = if connection.server_version_num().unwrap_or(0) >= 140_000 {
            2
        } else {
            1
        };
        // The server ends a walsender that hears nothing for
        // wal_sender_timeout: matching it to the stall timeout frees the
        // slot soon after a network fault leaves our side gone.
        let timeout = format!(
            "SET wal_sender_timeout = '{}ms'",
            batch.stall_timeout.as_millis()
        );
        if let Err(error) = connection.simple_query(&timeout).await {
            warn!(error = %error, "could not set wal_sender_timeout for the replication connection");
        }
        let stream = connection
            .start_replication(&slot, start, &publication, protocol)
            .await?;
        let position = start.max(self.slot_confirmed.unwrap_or(Lsn::ZERO));
        info!(slot, publication, start = %position, protocol, "streaming changes");
        let heartbeat: Vec<heartbeat::Heartbeat> = self
            .heartbeat
            .map(|every| {
                heartbeat::Heartbeat::start(
                    self.connection.clone(),
                    every,
                    heartbeat::Job::Heartbeat,
                )
            })
            .into_iter()
            .chain(self.slot_metrics.map(|every| {
                heartbeat::Heartbeat::start(
                    self.connection.clone(),
                    every,
                    heartbeat::Job::SlotMetrics(slot.clone()),
                )
            }))
            .collect();
        Ok(PostgresCdcStream::new(
            stream,
            query,
            self.schemas.clone(),
            state.copied_tables.clone(),
            start,
            position,
            batch.clone(),
            cancel,
            self.array_form,
        )
        .with_heartbeat(heartbeat))
    }
}
