//! Creating the target tables and keeping their columns in step with the
//! source.
//!
//! Columns are compared by name and type (`format_type`). A column the
//! source added is added (existing rows get NULL), one it dropped is
//! dropped, one whose type changed is converted with `ALTER COLUMN … TYPE
//! … USING col::type`; a changed key replaces the primary key. Everything
//! runs in the caller's transaction.

use tokio_postgres::Client;
use tracing::info;

use super::schema::{column_list, create_schema_sql, create_table_sql, key_columns, target_type};
use super::target_error;
use crate::types::table::quote_identifier;
use crate::types::TableSchema;
use crate::Result;

/// A table as it is in the target database.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TargetTable {
    /// Columns in order: name and type as `format_type` prints it.
    pub columns: Vec<(String, String)>,
    /// Primary key columns, in key order.
    pub key: Vec<String>,
    /// The primary key constraint's name, when there is one.
    pub key_constraint: Option<String>,
}

/// Reads a table's columns and key; `None` when it does not exist.
pub async fn existing(client: &Client, table: &TableSchema) -> Result<Option<TargetTable>> {
    let name = table.name.quoted();
    let what = || format!("read the columns of {}", table.name);
    let exists = client
        .query_one("SELECT to_regclass($1)::oid", &[&name])
        .await
        .map_err(|e| target_error(what(), e))?;
    let Some(oid) = exists.get::<_, Option<u32>>(0) else {
        return Ok(None);
    };
    let columns = client
        .query(
            "SELECT attname::text, format_type(atttypid, atttypmod) FROM pg_attribute \
             WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
            &[&oid],
        )
        .await
        .map_err(|e| target_error(what(), e))?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let key_rows = client
        .query(
            "SELECT c.conname::text, a.attname::text FROM pg_constraint c \
             JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = ANY (c.conkey) \
             WHERE c.conrelid = $1 AND c.contype = 'p' ORDER BY array_position(c.conkey, a.attnum)",
            &[&oid],
        )
        .await
        .map_err(|e| target_error(what(), e))?;
    Ok(Some(TargetTable {
        columns,
        key: key_rows.iter().map(|r| r.get(1)).collect(),
        key_constraint: key_rows.first().map(|r| r.get(0)),
    }))
}

/// The columns and key `table` should have.
fn wanted(table: &TableSchema) -> (Vec<(String, String)>, Vec<String>) {
    (
        table
            .columns
            .iter()
            .map(|c| (c.name.clone(), target_type(c).to_owned()))
            .collect(),
        key_columns(table)
            .into_iter()
            .map(|k| table.columns[k].name.clone())
            .collect(),
    )
}

/// Makes the target table of `table` exist with its columns and key,
/// creating or converting it.
pub async fn ensure_table(client: &Client, table: &TableSchema) -> Result<()> {
    let (columns, key) = wanted(table);
    let Some(current) = existing(client, table).await? else {
        info!(table = %table.name, "creating the target table");
        let sql = format!("{}; {}", create_schema_sql(table), create_table_sql(table));
        return client
            .batch_execute(&sql)
            .await
            .map_err(|e| target_error(format!("create table {}", table.name), e));
    };
    if current.columns == columns && current.key == key {
        return Ok(());
    }
    let mut steps = Vec::new();
    if current.key != key {
        if let Some(constraint) = &current.key_constraint {
            steps.push(format!("DROP CONSTRAINT {}", quote_identifier(constraint)));
        }
    }
    for (name, _) in &current.columns {
        if !columns.iter().any(|(n, _)| n == name) {
            steps.push(format!("DROP COLUMN {}", quote_identifier(name)));
        }
    }
    for (name, pg_type) in &columns {
        match current.columns.iter().find(|(n, _)| n == name) {
            None => steps.push(format!("ADD COLUMN {} {pg_type}", quote_identifier(name))),
            Some((_, now)) if now != pg_type => {
                let quoted = quote_identifier(name);
                steps.push(format!(
                    "ALTER COLUMN {quoted} TYPE {pg_type} USING {quoted}::{pg_type}"
                ));
            }
            Some(_) => {}
        }
    }
    if current.key != key && !key.is_empty() {
        steps.push(format!(
            "ADD PRIMARY KEY ({})",
            column_list(table, key_columns(table))
        ));
    }
    info!(table = %table.name, changes = steps.len(), "converting the target table to the source's columns");
    let sql = format!("ALTER TABLE {} {}", table.name.quoted(), steps.join(", "));
    client.batch_execute(&sql).await.map_err(|e| {
        target_error(
            format!("convert table {} to the source's columns", table.name),
            e,
        )
    })
}
