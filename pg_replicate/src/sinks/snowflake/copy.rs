//! A table's backfill into Snowflake.
//!
//! `begin`: the copy draws a token, records it in `_PGR_COPIED` (the table
//! counts as not copied from then on) and creates the target table anew.
//! `rows`: CSV files (see [`super::csv`]) of up to
//! [`with_file_bytes`](super::SnowflakeSinkConfig::with_file_bytes) go to
//! `@_PGR_STAGE/copy/<table>/<token>/`. `end`: one `COPY INTO` loads them
//! into the copy's own load table; one `INSERT` moves the rows, cast to
//! their types, into the target table if the `_PGR_COPIED` row still holds
//! the copy's token; then the snapshot LSN is set in that row. A copy that
//! a later one superseded (a killed process's late statement) inserts and
//! updates nothing; a crash before the snapshot LSN is set leaves the table
//! not copied, and the next run copies it again from scratch. No statement
//! waits on another: nothing a killed process left open can block the next
//! run.

use std::sync::Arc;

use arrow::datatypes::Field;
use arrow::record_batch::RecordBatch;
use ring::rand::SecureRandom;
use tracing::{debug, info};

use super::csv::{write_rows, CsvColumn};
use super::schema::{
    column_name, copy_into_sql, create_load_sql, create_target_sql, load_column, load_name, quote,
    snowflake_type, target_name, SnowflakeType, STAGE,
};
use super::sink::SnowflakeSink;
use super::state::{copy_current_sql, end_copy_sql, start_copy_sql};
use crate::types::change::table_arrow_schema;
use crate::types::{Lsn, TableId, TableSchema};
use crate::{Error, ErrorKind, Result};

/// The error text of a copy that a later copy of the same table replaced.
pub const COPY_SUPERSEDED: &str = "a later copy of the table replaced this one";

/// A copy in progress.
pub struct Copy {
    table: TableId,
    token: String,
    fields: Vec<Field>,
    types: Vec<SnowflakeType>,
    buffer: Vec<u8>,
    files: usize,
    rows: usize,
}

impl Copy {
    /// The copy's folder in the stage.
    fn folder(&self, table: &TableSchema) -> String {
        format!("copy/{}/{}", target_name(&table.name), self.token)
    }
}

/// The rows a `COPY INTO` answer says it loaded, over all files; `None`
/// when it loaded no file.
pub(super) fn rows_loaded(answer: &[Vec<Option<String>>]) -> Option<u64> {
    // One row per file: file, status, rows_parsed, rows_loaded, ….
    let mut total = None;
    for row in answer {
        let status = row.get(1).cloned().flatten().unwrap_or_default();
        let rows = row
            .get(3)
            .cloned()
            .flatten()
            .and_then(|n| n.parse::<u64>().ok());
        if status.eq_ignore_ascii_case("LOADED") || status.eq_ignore_ascii_case("PARTIALLY_LOADED")
        {
            *total.get_or_insert(0) += rows.unwrap_or(0);
        }
    }
    total
}

/// A random token naming one copy.
pub(super) fn new_token() -> Result<String> {
    let mut bytes = [0u8; 8];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| Error::new(ErrorKind::Sink, "no randomness for a copy token"))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

impl SnowflakeSink {
    pub(super) async fn begin_copy(&mut self, table: &Arc<TableSchema>) -> Result<()> {
        let token = new_token()?;
        let identity = self.identity().to_owned();
        for sql in start_copy_sql(&identity, table.id, &token) {
            self.execute(
                &sql,
                &format!("record the start of the copy of {}", table.name),
            )
            .await?;
        }
        if self.config.merge.accumulates() {
            self.clear_kept_landing(table).await?;
        }
        let name = target_name(&table.name);
        self.execute(
            &create_target_sql(table, true),
            &format!("create Snowflake table {name}"),
        )
        .await?;
        let schema = table_arrow_schema(table);
        self.copy = Some(Copy {
            table: table.id,
            token,
            fields: schema.fields().iter().map(|f| f.as_ref().clone()).collect(),
            types: table.columns.iter().map(snowflake_type).collect(),
            buffer: Vec::new(),
            files: 0,
            rows: 0,
        });
        debug!(table = %table.name, "copy into Snowflake started");
        Ok(())
    }

    fn copy_of(&mut self, table: &TableSchema) -> Result<&mut Copy> {
        match self.copy.as_mut() {
            Some(copy) if copy.table == table.id => Ok(copy),
            _ => Err(Error::new(
                ErrorKind::Sink,
                format!(
                    "rows of {} arrived for a copy that did not begin",
                    table.name
                ),
            )),
        }
    }

    pub(super) async fn write_copy_rows(
        &mut self,
        table: &Arc<TableSchema>,
        rows: &RecordBatch,
    ) -> Result<()> {
        let file_bytes = self.config.file_bytes;
        let copy = self.copy_of(table)?;
        let columns: Vec<CsvColumn<'_>> = table
            .columns
            .iter()
            .zip(&copy.fields)
            .zip(&copy.types)
            .zip(rows.columns())
            .map(|(((column, field), ty), values)| CsvColumn {
                name: &column.name,
                ty: *ty,
                field,
                values: values.as_ref(),
            })
            .collect();
        let mut buffer = std::mem::take(&mut copy.buffer);
        write_rows(&table.name, &columns, rows.num_rows(), &mut buffer)?;
        copy.buffer = buffer;
        copy.rows += rows.num_rows();
        if copy.buffer.len() >= file_bytes {
            self.upload(table).await?;
        }
        Ok(())
    }

    /// Sends the buffered rows as the next file of the copy.
    async fn upload(&mut self, table: &TableSchema) -> Result<()> {
        let copy = self.copy_of(table)?;
        if copy.buffer.is_empty() {
            return Ok(());
        }
        copy.files += 1;
        let name = format!("part-{:06}.csv", copy.files);
        let location = format!("{STAGE}/{}", copy.folder(table));
        let bytes = std::mem::take(&mut copy.buffer);
        self.client.put_file(&location, &name, bytes).await
    }

    pub(super) async fn end_copy(
        &mut self,
        table: &Arc<TableSchema>,
        snapshot_lsn: Lsn,
    ) -> Result<()> {
        self.upload(table).await?;
        let copy = self.copy.take().ok_or_else(|| {
            Error::new(
                ErrorKind::Sink,
                format!("the copy of {} ended without beginning", table.name),
            )
        })?;
        let load = format!("{}_{}", load_name(&table.name), copy.token);
        let target = quote(&target_name(&table.name));
        if copy.files > 0 {
            self.execute(
                &create_load_sql(&load, table.columns.len()),
                "create a load table",
            )
            .await?;
            let loaded = self
                .execute(
                    &copy_into_sql(&load, &format!("{}/", copy.folder(table))),
                    &format!("load the copied rows of {}", table.name),
                )
                .await?;
            let rows = rows_loaded(&loaded);
            if rows != Some(copy.rows as u64) {
                return Err(Error::new(
                    ErrorKind::Sink,
                    format!(
                        "COPY INTO loaded {rows:?} of the {} rows of {} written to the stage in {} files; the \
                         table is copied again on the next run",
                        copy.rows, table.name, copy.files
                    ),
                ));
            }
        }
        let identity = self.identity().to_owned();
        let mut statements = Vec::new();
        if copy.files > 0 {
            let names: Vec<String> = table
                .columns
                .iter()
                .map(|c| quote(&column_name(c)))
                .collect();
            let casts: Vec<String> = copy
                .types
                .iter()
                .enumerate()
                .map(|(i, ty)| ty.cast(&load_column(i)))
                .collect();
            statements.push(Checked {
                sql: format!(
                    "INSERT INTO {target} ({}) SELECT {} FROM {} WHERE EXISTS ({})",
                    names.join(", "),
                    casts.join(", "),
                    quote(&load),
                    copy_current_sql(&identity, table.id, &copy.token)
                ),
                rows: Some(copy.rows as u64),
                otherwise: format!(
                    "{COPY_SUPERSEDED}, or the stage held another number of rows than the copy wrote ({} rows)",
                    copy.rows
                ),
            });
        }
        statements.push(Checked {
            sql: end_copy_sql(&identity, table.id, &copy.token, snapshot_lsn.0),
            rows: Some(1),
            otherwise: COPY_SUPERSEDED.to_owned(),
        });
        self.run_checked(&statements, &format!("store the copy of {}", table.name))
            .await?;
        if copy.files > 0 {
            self.execute(
                &format!("DROP TABLE IF EXISTS {}", quote(&load)),
                "drop a load table",
            )
            .await?;
        }
        info!(table = %table.name, rows = copy.rows, files = copy.files, "table copied into Snowflake");
        Ok(())
    }

    /// Runs `statements` one after the other, each atomic on its own,
    /// stopping at the first that fails or does not change the number of
    /// rows it expects.
    pub(super) async fn run_checked(&mut self, statements: &[Checked], what: &str) -> Result<()> {
        for statement in statements {
            let rows = self.execute(&statement.sql, what).await?;
            let count = rows
                .first()
                .and_then(|r| r.first().cloned().flatten())
                .and_then(|c| c.parse::<u64>().ok());
            if statement.rows.is_some() && count != statement.rows {
                return Err(Error::new(
                    ErrorKind::Sink,
                    format!(
                        "cannot {what}: {} (Snowflake changed {count:?} rows)",
                        statement.otherwise
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// A statement of a [`SnowflakeSink::run_checked`] and the number
/// of rows it must change.
pub(super) struct Checked {
    pub sql: String,
    /// `None`: any number.
    pub rows: Option<u64>,
    /// What it means when the count differs.
    pub otherwise: String,
}
