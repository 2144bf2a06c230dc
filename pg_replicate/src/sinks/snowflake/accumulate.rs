//! Landing tables that keep changes until a merge
//! ([`MergeMode::Task`], [`MergeMode::External`]): creating and changing
//! them, the merge statements each table records, the task, and
//! [`SnowflakeSink::merge_landing`]. The statements are in [`super::task`].
//!
//! Each table's merge is recorded in `_PGR_MERGES` (its bound query and
//! its three statements, with `:bound_lsn` and `:bound_seq` where the
//! bound goes), so any process connected to the schema can merge without
//! the Postgres schemas; the task runs the same statements.

use std::sync::Arc;

use tracing::{debug, info};

use super::apply::load_rows;
use super::copy::Checked;
use super::landing::landing_columns;
use super::schema::{
    batch_name, landing_name, literal, object_name, quote, resolved_name, target_name, task_name,
};
use super::sink::SnowflakeSink;
use super::sink_config::MergeMode;
use super::task::{
    append_sql, bound_sql, create_task_sql, kept_columns, marker_sql, merge_statements,
    resume_task_sql, Bound, Schedule,
};
use crate::types::{Lsn, TableName, TableSchema};
use crate::{Error, ErrorKind, Result};

/// The table recording each table's merge statements.
const MERGES_TABLE: &str = "_PGR_MERGES";

/// Where the bound goes in the recorded statements.
const BOUND_LSN: &str = ":bound_lsn";
const BOUND_SEQ: &str = ":bound_seq";

impl SnowflakeSink {
    /// The landing schema (unquoted); `None`: the target schema.
    fn landing_schema(&self) -> Option<String> {
        self.config.landing_schema.as_deref().map(resolved_name)
    }

    /// The landing table of `table` as the sink's statements name it.
    pub(super) fn landing_ref(&self, table: &TableName) -> String {
        let name = quote(&landing_name(table));
        match (self.config.merge.accumulates(), self.landing_schema()) {
            (true, Some(schema)) => format!("{}.{name}", quote(&schema)),
            _ => name,
        }
    }

    /// `database.schema.` of the target schema, quoted, for the task.
    fn target_prefix(&self) -> String {
        let connection = &self.config.connection;
        format!(
            "{}.{}.",
            object_name(connection.database.as_deref().unwrap_or_default()),
            object_name(connection.schema.as_deref().unwrap_or_default())
        )
    }

    /// `database.schema.` of the landing schema, quoted, for the task.
    fn landing_prefix(&self) -> String {
        match self.landing_schema() {
            Some(schema) => format!(
                "{}.{}.",
                object_name(
                    self.config
                        .connection
                        .database
                        .as_deref()
                        .unwrap_or_default()
                ),
                quote(&schema)
            ),
            None => self.target_prefix(),
        }
    }

    /// Creates, or brings to the columns of `table`, its landing table
    /// (keeping the rows it holds), its batch table and its recorded merge;
    /// creates and resumes its task in [`MergeMode::Task`].
    pub(super) async fn prepare_kept_landing(&mut self, table: &TableSchema) -> Result<()> {
        check_mergeable(table)?;
        let schema = self.landing_schema();
        if !self.landing_ready {
            if let Some(schema) = &schema {
                self.execute(
                    &format!("CREATE SCHEMA IF NOT EXISTS {}", quote(schema)),
                    &format!("create landing schema {schema}"),
                )
                .await?;
                // Creating a schema makes it the session's schema.
                let target = self.target_prefix();
                self.execute(
                    &format!("USE SCHEMA {}", target.trim_end_matches('.')),
                    "return to the target schema",
                )
                .await?;
            }
            self.execute(
                &format!(
                    "CREATE TABLE IF NOT EXISTS {MERGES_TABLE} (TARGET VARCHAR, BOUND_SQL VARCHAR, \
                     EMPTY_SQL VARCHAR, MERGE_SQL VARCHAR, CLEAR_SQL VARCHAR)"
                ),
                "create the table of merge statements",
            )
            .await?;
            self.landing_ready = true;
        }
        let landing = self.landing_ref(&table.name);
        let columns = kept_columns(table);
        let existing = self
            .existing_columns(schema.as_deref(), &landing_name(&table.name))
            .await?;
        match existing {
            None => {
                let defined: Vec<String> = columns
                    .iter()
                    .map(|(name, ty)| format!("{} {ty}", quote(name)))
                    .collect();
                self.execute(
                    &format!(
                        "CREATE TABLE IF NOT EXISTS {landing} ({})",
                        defined.join(", ")
                    ),
                    &format!("create landing table {landing}"),
                )
                .await?;
            }
            Some(existing) => {
                let meta: Vec<(String, String)> = columns[table.columns.len()..]
                    .iter()
                    .map(|(name, ty)| (name.clone(), ty.to_string()))
                    .collect();
                let meta: Vec<(&str, &str)> = meta
                    .iter()
                    .map(|(name, ty)| (name.as_str(), ty.as_str()))
                    .collect();
                for sql in Self::column_changes(table, &existing, &landing, &meta)? {
                    info!(table = %table.name, "changing the columns of a landing table");
                    self.execute(&sql, "change the columns of a landing table")
                        .await?;
                }
            }
        }
        let batch: Vec<String> = landing_columns(table)
            .iter()
            .map(|(name, ty)| format!("{} {ty}", quote(name)))
            .collect();
        self.execute(
            &format!(
                "CREATE OR REPLACE TABLE {} ({})",
                quote(&batch_name(&table.name)),
                batch.join(", ")
            ),
            "create a batch table",
        )
        .await?;
        self.record_merge(table).await?;
        if let MergeMode::Task { every_minutes } = self.config.merge {
            let task = format!(
                "{}{}",
                self.landing_prefix(),
                quote(&task_name(&table.name))
            );
            let target = format!(
                "{}{}",
                self.target_prefix(),
                quote(&target_name(&table.name))
            );
            let landing = format!(
                "{}{}",
                self.landing_prefix(),
                quote(&landing_name(&table.name))
            );
            let warehouse = self.config.connection.warehouse.as_deref().map(object_name);
            let schedule = Schedule {
                every_minutes,
                warehouse: warehouse.as_deref(),
            };
            let sql = create_task_sql(table, &task, &target, &landing, schedule);
            self.execute(&sql, &format!("create merge task {task}"))
                .await?;
            self.execute(
                &resume_task_sql(&task),
                &format!("resume merge task {task}"),
            )
            .await?;
            info!(table = %table.name, every_minutes, "merge task created");
        }
        Ok(())
    }

    /// Records the merge statements of `table` in `_PGR_MERGES`.
    async fn record_merge(&mut self, table: &TableSchema) -> Result<()> {
        let target = target_name(&table.name);
        let landing = self.landing_ref(&table.name);
        let bound = Bound {
            lsn: BOUND_LSN,
            seq: BOUND_SEQ,
        };
        let [empty, merge, clear] = merge_statements(table, &quote(&target), &landing, bound);
        self.execute(
            &format!(
                "DELETE FROM {MERGES_TABLE} WHERE TARGET = {}",
                literal(&target)
            ),
            "record the merge statements",
        )
        .await?;
        self.execute(
            &format!(
                "INSERT INTO {MERGES_TABLE} (TARGET, BOUND_SQL, EMPTY_SQL, MERGE_SQL, CLEAR_SQL) VALUES ({}, {}, \
                 {}, {}, {})",
                literal(&target),
                literal(&bound_sql(&landing)),
                literal(&empty),
                literal(&merge),
                literal(&clear)
            ),
            "record the merge statements",
        )
        .await?;
        Ok(())
    }

    /// The statements landing the changes of `table` (`rows` rows in its
    /// load table, `reads`: some keep stored values) after a truncate
    /// marker at `marker`: into the batch table, values kept from the
    /// landing table or the target, then appended to the landing table.
    pub(super) fn kept_landing_statements(
        &self,
        table: &Arc<TableSchema>,
        rows: usize,
        reads: bool,
        marker: Option<(Lsn, i64)>,
    ) -> Vec<Checked> {
        let landing = self.landing_ref(&table.name);
        let batch = quote(&batch_name(&table.name));
        let target = quote(&target_name(&table.name));
        let plain = |sql: String| Checked {
            sql,
            rows: None,
            otherwise: String::new(),
        };
        let mut statements = Vec::new();
        // The marker goes first: rows after it merged before it exists
        // would be emptied away with the rows before it.
        if let Some((commit_lsn, after)) = marker {
            statements.push(plain(marker_sql(&landing, commit_lsn, after)));
        }
        if rows == 0 {
            return statements;
        }
        statements.push(plain(format!("DELETE FROM {batch}")));
        statements.push(load_rows(table, &batch, rows));
        if reads {
            let keep = super::merge::keep_statements(table, &batch, &target, Some(&landing));
            statements.extend(keep.into_iter().map(plain));
        }
        statements.push(Checked {
            sql: append_sql(table, &landing, &batch),
            rows: Some(rows as u64),
            otherwise: format!(
                "the batch table of {} holds another number of rows than were written",
                table.name
            ),
        });
        statements
    }

    /// Empties the landing table of `table` before its copy: what it holds
    /// predates the copy's snapshot.
    pub(super) async fn clear_kept_landing(&mut self, table: &TableSchema) -> Result<()> {
        let landing = self.landing_ref(&table.name);
        self.execute(
            &format!("DELETE FROM {landing}"),
            &format!("empty landing table {landing} before a copy"),
        )
        .await?;
        Ok(())
    }

    /// Merges the landing tables into their target tables with the
    /// statements each records, as the task does; returns how many tables
    /// had changes to merge. For [`MergeMode::External`], or a task
    /// suspended: it must not run while a task or another merge of the same
    /// tables runs. Any sink connected to the schema can run it.
    pub async fn merge_landing(&mut self) -> Result<usize> {
        let recorded = self
            .execute(
                &format!(
                    "SELECT TARGET, BOUND_SQL, EMPTY_SQL, MERGE_SQL, CLEAR_SQL FROM {MERGES_TABLE} ORDER BY TARGET"
                ),
                "read the merge statements",
            )
            .await?;
        let mut merged = 0;
        for row in recorded {
            let cell = |i: usize| row.get(i).cloned().flatten().unwrap_or_default();
            let target = cell(0);
            let bound = self
                .execute(&cell(1), &format!("read the landing bound of {target}"))
                .await?;
            let Some(last) = bound.first() else {
                continue;
            };
            let number = |i: usize| {
                last.get(i)
                    .cloned()
                    .flatten()
                    .filter(|v| v.parse::<i64>().is_ok() || v.parse::<u64>().is_ok())
                    .ok_or_else(|| {
                        Error::new(
                            ErrorKind::Sink,
                            format!("the landing table of {target} holds a row without a change position"),
                        )
                    })
            };
            let (lsn, seq) = (number(0)?, number(1)?);
            for sql in [cell(2), cell(3), cell(4)] {
                let sql = sql.replace(BOUND_LSN, &lsn).replace(BOUND_SEQ, &seq);
                self.execute(&sql, &format!("merge the landing table of {target}"))
                    .await?;
            }
            debug!(%target, %lsn, %seq, "landing table merged");
            merged += 1;
        }
        Ok(merged)
    }
}

/// Refuses names that the task's text or the recorded statements cannot
/// hold.
fn check_mergeable(table: &TableSchema) -> Result<()> {
    let names = std::iter::once(target_name(&table.name))
        .chain(table.columns.iter().map(|c| c.name.clone()));
    for name in names {
        if name.contains("$$") || name.contains(":bound_") {
            return Err(Error::new(
                ErrorKind::Config,
                format!(
                    "{name:?} of {} cannot be merged from a landing table: names holding \"$$\" or \
                     \":bound_\" cannot be written into the merge statements; use MergeMode::Inline",
                    table.name
                ),
            ));
        }
    }
    Ok(())
}
