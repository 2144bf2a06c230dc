//! [`SnowflakeSink`]: the [`Sink`] implementation.
//!
//! A backfill writes CSV files into the sink's stage and, when the table's
//! copy ends, loads them into a load table and moves them into the target
//! table while the copy is still the table's copy ([`super::copy`]). A
//! change batch lands in the landing tables and is merged into the target
//! tables before its end LSN is stored ([`super::apply`]).

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use std::time::Instant;

use tracing::{debug, info};

use super::apply::KnownTables;
use super::client::SnowflakeClient;
use super::copy::Copy;
use super::schema::{
    check_names, column_name, create_target_sql, key_columns, literal, quote, snowflake_type,
    target_name, COPIED_TABLE, POSITION_COLUMNS,
};
use super::sink_config::SnowflakeSinkConfig;
use super::state::{
    create_state_sql, insert_state_sql, parse_progress, select_copied_sql, select_state_sql,
};
use crate::sinks::progress::Progress;
use crate::sinks::Sink;
use crate::types::change::{CdcBatch, ResumptionState};
use crate::types::{Lsn, TableId, TableSchema};
use crate::{Error, ErrorKind, Result};

/// A column of a Snowflake table, as its information schema describes it.
#[derive(Clone, Debug)]
pub(super) struct ExistingColumn {
    pub name: String,
    pub type_name: String,
    pub precision: Option<i64>,
    pub scale: Option<i64>,
}

/// Keeps the published tables of a Postgres database as tables of a
/// Snowflake schema (see docs/snowflake.md).
pub struct SnowflakeSink {
    pub(super) config: SnowflakeSinkConfig,
    pub(super) client: SnowflakeClient,
    state_ready: bool,
    /// The landing schema and the table of merge statements exist.
    pub(super) landing_ready: bool,
    /// What the state row holds; `None` until read (and after a failure,
    /// which may have left it either way).
    progress: Option<Progress>,
    /// When this sink last stored the state.
    pub(super) stored_at: Option<Instant>,
    /// The schema each table has in Snowflake (and its landing table).
    pub(super) tables: KnownTables,
    /// Truncates seen of the transaction in progress: its commit LSN and
    /// their count (the state's position counts them).
    pub(super) truncates: (Lsn, u32),
    pub(super) copy: Option<Copy>,
}

impl SnowflakeSink {
    /// Logs in; the state tables are created when the pipeline starts.
    pub async fn connect(config: SnowflakeSinkConfig) -> Result<Self> {
        if config.connection.database.is_none() || config.connection.schema.is_none() {
            return Err(Error::new(
                ErrorKind::Config,
                "the Snowflake sink needs a database and a schema: set both with \
                 SnowflakeConfig::with_database and with_schema",
            ));
        }
        let client = SnowflakeClient::connect(config.connection.clone()).await?;
        Ok(Self {
            config,
            client,
            state_ready: false,
            landing_ready: false,
            progress: None,
            stored_at: None,
            tables: KnownTables::new(),
            truncates: (Lsn::ZERO, 0),
            copy: None,
        })
    }

    /// The sink's configuration.
    pub fn config(&self) -> &SnowflakeSinkConfig {
        &self.config
    }

    /// The client, for queries of the application's own.
    pub fn client(&mut self) -> &mut SnowflakeClient {
        &mut self.client
    }

    pub(super) fn identity(&self) -> &str {
        &self.config.identity
    }

    /// Runs `sql`, naming `what` in its error.
    pub(super) async fn execute(
        &mut self,
        sql: &str,
        what: &str,
    ) -> Result<Vec<Vec<Option<String>>>> {
        let result = self
            .client
            .query(sql, &[])
            .await
            .map_err(|e| e.context(format!("cannot {what}")))?;
        result.text_rows()
    }

    async fn ensure_state_tables(&mut self) -> Result<()> {
        if !self.state_ready {
            for sql in create_state_sql() {
                self.execute(&sql, "create the sink's state tables").await?;
            }
            self.state_ready = true;
        }
        Ok(())
    }

    async fn read_progress(&mut self) -> Result<Progress> {
        self.ensure_state_tables().await?;
        let identity = self.identity().to_owned();
        let rows = self
            .execute(&select_state_sql(&identity), "read the replication state")
            .await?;
        let progress = match rows.as_slice() {
            [] => {
                self.execute(&insert_state_sql(&identity), "record a new replication state")
                    .await?;
                Progress::default()
            }
            [row] => parse_progress(
                &row.iter()
                    .map(|cell| integer(Some(cell), "replication state"))
                    .collect::<Result<Vec<_>>>()?,
            ),
            _ => {
                return Err(Error::new(
                    ErrorKind::Sink,
                    format!(
                        "{} holds {} state rows for identity {identity:?}; delete the extra rows (keep the one \
                         with the highest LAST_LSN)",
                        super::schema::STATE_TABLE,
                        rows.len()
                    ),
                ))
            }
        };
        debug!(?progress, "replication state read");
        self.progress = Some(progress);
        Ok(progress)
    }

    /// What the state row holds.
    pub(super) async fn progress(&mut self) -> Result<Progress> {
        match self.progress {
            Some(progress) => Ok(progress),
            None => self.read_progress().await,
        }
    }

    /// The state must be read again before it is used.
    pub(super) fn forget_state(&mut self) {
        self.progress = None;
    }

    /// The state row now holds `progress`.
    pub(super) fn stored(&mut self, progress: Progress) {
        self.progress = Some(progress);
        self.stored_at = Some(Instant::now());
    }

    async fn read_copied(&mut self) -> Result<BTreeMap<TableId, Lsn>> {
        self.ensure_state_tables().await?;
        let sql = select_copied_sql(self.identity());
        let rows = self.execute(&sql, "read which tables are copied").await?;
        let mut copied = BTreeMap::new();
        for row in rows {
            let id = integer(row.first(), "TABLE_ID")?;
            let lsn = integer(row.get(1), "SNAPSHOT_LSN")?;
            if let (Some(id), Some(lsn)) = (id, lsn) {
                let id = u32::try_from(id).map_err(|_| {
                    Error::new(
                        ErrorKind::Sink,
                        format!("{COPIED_TABLE} holds table id {id}, not a Postgres oid"),
                    )
                })?;
                let at = copied.entry(TableId(id)).or_insert(Lsn(lsn));
                *at = (*at).max(Lsn(lsn));
            }
        }
        Ok(copied)
    }

    /// The columns of table `name` of `schema` (both unquoted; `None`: the
    /// target schema); `None` when it does not exist.
    pub(super) async fn existing_columns(
        &mut self,
        schema: Option<&str>,
        name: &str,
    ) -> Result<Option<Vec<ExistingColumn>>> {
        let schema = match schema {
            Some(schema) => literal(schema),
            None => "CURRENT_SCHEMA()".to_owned(),
        };
        let sql = format!(
            "SELECT COLUMN_NAME, DATA_TYPE, NUMERIC_PRECISION, NUMERIC_SCALE FROM INFORMATION_SCHEMA.COLUMNS \
             WHERE TABLE_SCHEMA = {schema} AND TABLE_NAME = {} ORDER BY ORDINAL_POSITION",
            literal(name)
        );
        let rows = self
            .execute(&sql, &format!("read the columns of Snowflake table {name}"))
            .await?;
        if rows.is_empty() {
            return Ok(None);
        }
        rows.into_iter()
            .map(|row| {
                Ok(ExistingColumn {
                    name: row.first().cloned().flatten().unwrap_or_default(),
                    type_name: row.get(1).cloned().flatten().unwrap_or_default(),
                    precision: integer(row.get(2), "NUMERIC_PRECISION")?.map(|v| v as i64),
                    scale: integer(row.get(3), "NUMERIC_SCALE")?.map(|v| v as i64),
                })
            })
            .collect::<Result<Vec<_>>>()
            .map(Some)
    }

    /// The statements adding and dropping columns of `existing` table
    /// `quoted` so it holds the columns of `table` and then `meta`; an error
    /// when a column's type changed.
    pub(super) fn column_changes(
        table: &TableSchema,
        existing: &[ExistingColumn],
        quoted: &str,
        meta: &[(&str, &str)],
    ) -> Result<Vec<String>> {
        let mut statements = Vec::new();
        for column in &table.columns {
            let name = column_name(column);
            let kind = snowflake_type(column);
            match existing.iter().find(|e| e.name == name) {
                None => statements.push(format!(
                    "ALTER TABLE {quoted} ADD COLUMN {} {kind}",
                    quote(&name)
                )),
                Some(e) if !kind.matches(&e.type_name, e.precision, e.scale) => {
                    return Err(Error::new(
                        ErrorKind::Schema,
                        format!(
                            "column {:?} of {} is {} in Snowflake table {quoted}, but its Postgres type {} maps \
                             to {kind}; drop Snowflake table {} and its row in {COPIED_TABLE}, and the pipeline \
                             copies the table again",
                            column.name,
                            table.name,
                            e.type_name,
                            column.pg_type.name,
                            target_name(&table.name),
                        ),
                    ))
                }
                Some(_) => {}
            }
        }
        for (name, ty) in meta {
            if !existing.iter().any(|e| e.name == *name) {
                statements.push(format!("ALTER TABLE {quoted} ADD COLUMN {name} {ty}"));
            }
        }
        for e in existing {
            let kept = meta.iter().any(|(name, _)| *name == e.name)
                || table.columns.iter().any(|c| column_name(c) == e.name);
            if !kept {
                statements.push(format!(
                    "ALTER TABLE {quoted} DROP COLUMN {}",
                    quote(&e.name)
                ));
            }
        }
        Ok(statements)
    }

    /// Creates the target table of `table`, or brings a copied one to its
    /// columns.
    pub(super) async fn ensure_target(&mut self, table: &TableSchema, copied: bool) -> Result<()> {
        match self
            .existing_columns(None, &target_name(&table.name))
            .await?
        {
            None => {
                let name = target_name(&table.name);
                self.execute(
                    &create_target_sql(table, false),
                    &format!("create Snowflake table {name}"),
                )
                .await?;
            }
            Some(existing) if copied => {
                let target = quote(&target_name(&table.name));
                let meta: &[(&str, &str)] = if key_columns(table).is_empty() {
                    &POSITION_COLUMNS
                } else {
                    &[]
                };
                let statements = Self::column_changes(table, &existing, &target, meta)?;
                for sql in statements {
                    info!(table = %table.name, "changing the columns of a Snowflake table");
                    self.execute(&sql, "change the columns of a Snowflake table")
                        .await?;
                }
            }
            // A table not copied yet is created anew by its copy.
            Some(_) => {}
        }
        Ok(())
    }
}

/// An integer cell of a state table.
fn integer(cell: Option<&Option<String>>, what: &str) -> Result<Option<u64>> {
    cell.and_then(Option::as_deref)
        .map(|text| {
            text.parse::<u64>().map_err(|_| {
                Error::new(
                    ErrorKind::Sink,
                    format!("the sink's state holds {text:?} as {what}, not an integer"),
                )
            })
        })
        .transpose()
}

#[async_trait]
impl Sink for SnowflakeSink {
    async fn resumption_state(&mut self) -> Result<ResumptionState> {
        self.copy = None;
        self.truncates = (Lsn::ZERO, 0);
        let last_lsn = self.read_progress().await?.last_lsn;
        let copied_tables = self.read_copied().await?;
        Ok(ResumptionState {
            copied_tables,
            last_lsn,
        })
    }

    async fn write_table_schemas(&mut self, tables: &[Arc<TableSchema>]) -> Result<()> {
        check_names(tables)?;
        let copied = self.read_copied().await?;
        for table in tables {
            self.ensure_target(table, copied.contains_key(&table.id))
                .await?;
            self.create_landing(table).await?;
            self.tables.insert(table.id, table.clone());
        }
        info!(tables = tables.len(), "Snowflake tables ready");
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
        self.write_copy_rows(table, &rows).await
    }

    async fn end_table_copy(&mut self, table: &Arc<TableSchema>, snapshot_lsn: Lsn) -> Result<()> {
        self.end_copy(table, snapshot_lsn).await
    }

    async fn write_cdc_batch(&mut self, batch: CdcBatch) -> Result<Lsn> {
        if self.copy.take().is_some() {
            debug!("dropping an unfinished copy");
        }
        self.apply_batch(&batch).await
    }
}
