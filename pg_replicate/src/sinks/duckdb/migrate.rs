//! Creating DuckDB tables and keeping their columns in step with Postgres.
//!
//! Columns are compared by name and DuckDB type. A column that Postgres
//! added is added (existing rows get NULL), one it dropped is dropped, one
//! whose type changed is converted with DuckDB's cast. When the key columns
//! or their types change, the table is rebuilt (new table, rows copied over
//! with casts, old table dropped) in the same transaction.

use duckdb::{params, Connection};
use tracing::info;

use super::duck_error;
use super::schema::{
    create_history_sql, create_table_sql, duckdb_type, history_name, key_names, wanted_columns,
    HISTORY_COLUMNS,
};
use crate::types::table::quote_identifier;
use crate::types::{TableName, TableSchema};
use crate::{Error, ErrorKind, Result};

/// A table as it is in DuckDB.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DuckTable {
    /// Columns in order: name and type as DuckDB prints it.
    pub columns: Vec<(String, String)>,
    /// Primary key columns, in key order.
    pub key: Vec<String>,
}

/// Reads a table's columns and key from the DuckDB catalog; `None` when the
/// table does not exist. Names are matched like DuckDB does
/// (case-insensitively).
pub fn existing(conn: &Connection, name: &TableName) -> Result<Option<DuckTable>> {
    let read = || -> duckdb::Result<Option<DuckTable>> {
        let columns: Vec<(String, String)> = conn
            .prepare(
                "SELECT column_name, data_type FROM duckdb_columns() \
                 WHERE database_name = current_database() \
                   AND lower(schema_name) = lower(?) AND lower(table_name) = lower(?) \
                 ORDER BY column_index",
            )?
            .query_map(params![name.schema, name.name], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })?
            .collect::<duckdb::Result<_>>()?;
        if columns.is_empty() {
            return Ok(None);
        }
        let key: Vec<String> = conn
            .prepare(
                "SELECT unnest(constraint_column_names) FROM duckdb_constraints() \
                 WHERE database_name = current_database() AND constraint_type = 'PRIMARY KEY' \
                   AND lower(schema_name) = lower(?) AND lower(table_name) = lower(?)",
            )?
            .query_map(params![name.schema, name.name], |r| r.get(0))?
            .collect::<duckdb::Result<_>>()?;
        Ok(Some(DuckTable { columns, key }))
    };
    read().map_err(|e| duck_error(format!("read the columns of DuckDB table {name}"), e))
}

/// Whether the table of `name` may be dropped and created again for its
/// copy without losing anything: it holds no rows, and has no index and no
/// comment of its own (a user may have added them).
pub fn replaceable(conn: &Connection, name: &TableName) -> Result<bool> {
    let sql = format!(
        "SELECT NOT EXISTS (SELECT 1 FROM {table}) \
           AND NOT EXISTS (SELECT 1 FROM duckdb_indexes() WHERE {this}) \
           AND NOT EXISTS (SELECT 1 FROM duckdb_tables() WHERE {this} AND comment IS NOT NULL) \
           AND NOT EXISTS (SELECT 1 FROM duckdb_columns() WHERE {this} AND comment IS NOT NULL)",
        table = name.quoted(),
        this = "database_name = current_database() AND lower(schema_name) = lower($1) \
                AND lower(table_name) = lower($2)",
    );
    conn.query_row(&sql, params![name.schema, name.name], |r| r.get(0))
        .map_err(|e| duck_error(format!("inspect DuckDB table {name} before its copy"), e))
}

fn create_schema(conn: &Connection, name: &TableName) -> Result<()> {
    conn.execute_batch(&format!(
        "CREATE SCHEMA IF NOT EXISTS {}",
        quote_identifier(&name.schema)
    ))
    .map_err(|e| duck_error(format!("create DuckDB schema {}", name.schema), e))
}

/// Makes the current-state table of `table` exist with its columns and key.
/// An existing table with other columns is dropped and created again when
/// `copied` is false (its copy is about to start), else converted.
pub fn ensure_current(conn: &Connection, table: &TableSchema, copied: bool) -> Result<()> {
    let wanted = DuckTable {
        columns: wanted_columns(table),
        key: key_names(table),
    };
    match existing(conn, &table.name)? {
        None => {
            create_schema(conn, &table.name)?;
            info!(table = %table.name, "creating DuckDB table");
            execute(conn, &create_table_sql(table), &table.name, "create")
        }
        Some(current) if current == wanted => Ok(()),
        Some(_) if !copied => {
            info!(table = %table.name, "DuckDB table has other columns or key and is copied again: recreating it");
            execute(
                conn,
                &format!("DROP TABLE {}", table.name.quoted()),
                &table.name,
                "drop",
            )?;
            execute(conn, &create_table_sql(table), &table.name, "create")
        }
        Some(current) => evolve(conn, table, &current, &wanted),
    }
}

/// Makes the history table of `table` exist with its columns (history
/// tables are never dropped: their columns are converted).
pub fn ensure_history(conn: &Connection, table: &TableSchema) -> Result<()> {
    let name = history_name(&table.name);
    match existing(conn, &name)? {
        None => {
            create_schema(conn, &name)?;
            info!(table = %name, "creating DuckDB history table");
            execute(conn, &create_history_sql(table), &name, "create")
        }
        Some(current) => {
            let data: Vec<(String, String)> = current
                .columns
                .iter()
                .filter(|(n, _)| !HISTORY_COLUMNS.iter().any(|(h, _)| h == n))
                .cloned()
                .collect();
            let wanted = wanted_columns(table);
            if data == wanted {
                return Ok(());
            }
            alter_columns(conn, &name, &data, &wanted)
        }
    }
}

/// Converts an existing current-state table to `wanted`: `ALTER`s when the
/// key stays as it is, a rebuild when the key columns or their types
/// change (DuckDB cannot alter indexed columns; and a failed statement
/// would abort the transaction, so the choice is made beforehand).
fn evolve(
    conn: &Connection,
    table: &TableSchema,
    current: &DuckTable,
    wanted: &DuckTable,
) -> Result<()> {
    let key_retyped = wanted.key.iter().any(|k| {
        let old = current.columns.iter().find(|(c, _)| c == k);
        let new = wanted.columns.iter().find(|(c, _)| c == k);
        old.map(|(_, t)| t) != new.map(|(_, t)| t)
    });
    if current.key != wanted.key || key_retyped {
        info!(table = %table.name, "key columns changed: rebuilding the DuckDB table");
        return rebuild(conn, table, current);
    }
    alter_columns(conn, &table.name, &current.columns, &wanted.columns)
}

/// Adds, drops and retypes columns of `name` from `current` to `wanted`.
fn alter_columns(
    conn: &Connection,
    name: &TableName,
    current: &[(String, String)],
    wanted: &[(String, String)],
) -> Result<()> {
    let target = name.quoted();
    for (column, _) in current {
        if !wanted.iter().any(|(w, _)| w == column) {
            info!(table = %name, column = %column, "dropping column");
            let sql = format!(
                "ALTER TABLE {target} DROP COLUMN {}",
                quote_identifier(column)
            );
            execute(conn, &sql, name, "drop a column of")?;
        }
    }
    for (column, ty) in wanted {
        match current.iter().find(|(c, _)| c == column) {
            None => {
                info!(table = %name, column = %column, "adding column");
                let sql = format!(
                    "ALTER TABLE {target} ADD COLUMN {} {ty}",
                    quote_identifier(column)
                );
                execute(conn, &sql, name, "add a column to")?;
            }
            Some((_, old)) if old != ty => {
                info!(table = %name, column = %column, from = %old, to = %ty, "changing column type");
                if let Some(error) = cast_failure(conn, name, column, ty)? {
                    return Err(error);
                }
                let sql = format!(
                    "ALTER TABLE {target} ALTER COLUMN {} SET DATA TYPE {ty}",
                    quote_identifier(column)
                );
                execute(conn, &sql, name, "change a column type of")?;
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// Checks that every stored value of `column` casts to `ty`; the error
/// names the table and column when one does not.
fn cast_failure(
    conn: &Connection,
    name: &TableName,
    column: &str,
    ty: &str,
) -> Result<Option<Error>> {
    let quoted = quote_identifier(column);
    let sql = format!(
        "SELECT count(*) FROM {} WHERE {quoted} IS NOT NULL AND TRY_CAST({quoted} AS {ty}) IS NULL",
        name.quoted()
    );
    let failing: duckdb::Result<i64> = conn.query_row(&sql, [], |r| r.get(0));
    let message = match failing {
        Ok(0) => return Ok(None),
        Ok(count) => format!("{count} stored values do not convert"),
        Err(error) => format!("DuckDB has no such cast ({error})"),
    };
    Ok(Some(Error::new(
        ErrorKind::Schema,
        format!(
            "the type of column {column:?} of {name} changed in Postgres, but DuckDB cannot convert the \
             column to {ty}: {message}; copy the table again (delete its row from \
             _pg_replicate.copied_tables, or drop the DuckDB table, and restart)"
        ),
    )))
}

/// Builds the table anew with `table`'s columns and key, copying the rows
/// over (columns by name, converted with casts).
fn rebuild(conn: &Connection, table: &TableSchema, current: &DuckTable) -> Result<()> {
    let scratch = TableName::new(&table.name.schema, format!("_pgr_rebuild_{}", table.id));
    let mut scratch_table = table.clone();
    scratch_table.name = scratch.clone();
    for column in &table.columns {
        let ty = duckdb_type(column);
        let existing = current.columns.iter().find(|(c, _)| *c == column.name);
        if let Some((_, old)) = existing {
            if *old != ty {
                if let Some(error) = cast_failure(conn, &table.name, &column.name, &ty)? {
                    return Err(error);
                }
            }
        }
    }
    let select: Vec<String> = table
        .columns
        .iter()
        .map(|c| {
            let ty = duckdb_type(c);
            if current.columns.iter().any(|(n, _)| *n == c.name) {
                format!("CAST({} AS {ty})", quote_identifier(&c.name))
            } else {
                format!("CAST(NULL AS {ty})")
            }
        })
        .collect();
    let sql = format!(
        "DROP TABLE IF EXISTS {scratch_q};
         {create};
         INSERT INTO {scratch_q} SELECT {select} FROM {target};
         DROP TABLE {target};
         ALTER TABLE {scratch_q} RENAME TO {name};",
        scratch_q = scratch.quoted(),
        create = create_table_sql(&scratch_table),
        select = select.join(", "),
        target = table.name.quoted(),
        name = quote_identifier(&table.name.name),
    );
    execute(conn, &sql, &table.name, "rebuild")
}

fn execute(conn: &Connection, sql: &str, name: &TableName, what: &str) -> Result<()> {
    conn.execute_batch(sql)
        .map_err(|e| duck_error(format!("{what} DuckDB table {name}"), e))
}
