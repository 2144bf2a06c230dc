//! The sink's resumption state, kept in the DuckDB file next to the data
//! and always written in the same transaction as the data it describes.
//!
//! Schema `_pg_replicate`:
//!
//! - `progress` (one row): `format_version`, `identity`, `mode`,
//!   `last_lsn` (end LSN of the last applied transaction, as `UBIGINT`),
//!   `updated_at`;
//! - `copied_tables`: `table_oid`, `schema`, `name`, `snapshot_lsn`,
//!   `copied_at` — one row per table whose copy committed.

use std::collections::BTreeMap;

use duckdb::{params, Connection, OptionalExt};

use super::config::{DuckDbMode, DuckDbSinkConfig};
use super::schema::STATE_SCHEMA;
use super::{duck_error, in_transaction};
use crate::types::change::ResumptionState;
use crate::types::table::quote_literal;
use crate::types::{Lsn, TableId, TableSchema};
use crate::{Error, ErrorKind, Result};

/// Version of the layout of the sink's tables. A file of another version is
/// refused rather than misread.
pub const FORMAT_VERSION: i32 = 1;

/// Creates the state tables when missing, and checks that the file belongs
/// to this configuration: same format version, same mode, same identity.
/// Nothing is changed when a check fails.
pub fn init(conn: &Connection, config: &DuckDbSinkConfig) -> Result<()> {
    let path = config.path.display().to_string();
    in_transaction(conn, "prepare the state tables", |conn| {
        conn.execute_batch(&format!(
            "CREATE SCHEMA IF NOT EXISTS {STATE_SCHEMA};
             CREATE TABLE IF NOT EXISTS {STATE_SCHEMA}.progress (
                 format_version INTEGER NOT NULL, identity VARCHAR, mode VARCHAR NOT NULL,
                 last_lsn UBIGINT, updated_at TIMESTAMP WITH TIME ZONE);
             CREATE TABLE IF NOT EXISTS {STATE_SCHEMA}.copied_tables (
                 table_oid UINTEGER PRIMARY KEY, schema VARCHAR NOT NULL, name VARCHAR NOT NULL,
                 snapshot_lsn UBIGINT NOT NULL, copied_at TIMESTAMP WITH TIME ZONE);"
        ))
        .map_err(|e| duck_error("create the state tables in schema _pg_replicate", e))?;
        let rows: Vec<(i32, Option<String>, String, Option<u64>)> = conn
            .prepare(&format!(
                "SELECT format_version, identity, mode, last_lsn FROM {STATE_SCHEMA}.progress"
            ))
            .and_then(|mut s| {
                s.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
                    .collect::<duckdb::Result<Vec<_>>>()
            })
            .map_err(|e| duck_error("read _pg_replicate.progress", e))?;
        let copied: i64 = conn
            .query_row(
                &format!("SELECT count(*) FROM {STATE_SCHEMA}.copied_tables"),
                [],
                |r| r.get(0),
            )
            .map_err(|e| duck_error("read _pg_replicate.copied_tables", e))?;
        match rows.as_slice() {
            [] => {
                conn.execute(
                    &format!(
                        "INSERT INTO {STATE_SCHEMA}.progress VALUES (?, ?, ?, NULL, now())"
                    ),
                    params![FORMAT_VERSION, config.identity, config.mode.as_str()],
                )
                .map_err(|e| duck_error("write _pg_replicate.progress", e))?;
                Ok(())
            }
            [(version, identity, mode, last_lsn)] => {
                if *version != FORMAT_VERSION {
                    return Err(config_error(format!(
                        "DuckDB file {path} holds pg_replicate state of format version {version}, this \
                         version reads {FORMAT_VERSION}; use a new file or the pg_replicate version that \
                         wrote it"
                    )));
                }
                if DuckDbMode::from_name(mode) != Some(config.mode) {
                    return Err(config_error(format!(
                        "DuckDB file {path} was written in mode {mode}, not {}; open it with the same mode \
                         (tables of the other mode would be incomplete) or use a new file",
                        config.mode
                    )));
                }
                let has_state = last_lsn.is_some() || copied > 0;
                match (identity, &config.identity) {
                    (Some(stored), Some(wanted)) if stored != wanted => Err(config_error(format!(
                        "DuckDB file {path} holds the replica of {stored:?}, not of {wanted:?}; use another \
                         file for this publication/slot (nothing was changed)"
                    ))),
                    (None, Some(wanted)) if has_state => Err(config_error(format!(
                        "DuckDB file {path} holds replicated data written without an identity, so it cannot \
                         be checked to belong to {wanted:?}; use another file, or open it without identity"
                    ))),
                    (None, Some(wanted)) => {
                        conn.execute(
                            &format!("UPDATE {STATE_SCHEMA}.progress SET identity = ?"),
                            params![wanted],
                        )
                        .map_err(|e| duck_error("write _pg_replicate.progress", e))?;
                        Ok(())
                    }
                    _ => Ok(()),
                }
            }
            _ => Err(config_error(format!(
                "DuckDB file {path} has {} rows in _pg_replicate.progress instead of one; the state was \
                 edited by hand: restore it or use a new file",
                rows.len()
            ))),
        }
    })
}

fn config_error(message: String) -> Error {
    Error::new(ErrorKind::Config, message)
}

/// Reads the stored resumption state.
pub fn read(conn: &Connection) -> Result<ResumptionState> {
    let last_lsn: Option<u64> = conn
        .query_row(
            &format!("SELECT last_lsn FROM {STATE_SCHEMA}.progress"),
            [],
            |r| r.get(0),
        )
        .optional()
        .map_err(|e| duck_error("read _pg_replicate.progress", e))?
        .flatten();
    let copied: Vec<(u32, u64)> = conn
        .prepare(&format!(
            "SELECT table_oid, snapshot_lsn FROM {STATE_SCHEMA}.copied_tables"
        ))
        .and_then(|mut s| {
            s.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<duckdb::Result<Vec<_>>>()
        })
        .map_err(|e| duck_error("read _pg_replicate.copied_tables", e))?;
    Ok(ResumptionState {
        copied_tables: copied
            .into_iter()
            .map(|(oid, lsn)| (TableId(oid), Lsn(lsn)))
            .collect::<BTreeMap<_, _>>(),
        last_lsn: last_lsn.map(Lsn),
    })
}

/// Records the end LSN of the last applied transaction (inside the
/// caller's transaction).
pub fn set_last_lsn(conn: &Connection, lsn: Lsn) -> Result<()> {
    conn.execute(
        &format!("UPDATE {STATE_SCHEMA}.progress SET last_lsn = ?, updated_at = now()"),
        params![lsn.0],
    )
    .map_err(|e| duck_error("record the applied LSN in _pg_replicate.progress", e))?;
    Ok(())
}

/// Forgets that a table was copied (its copy starts again).
pub fn unmark_copied(conn: &Connection, table: TableId) -> Result<()> {
    conn.execute_batch(&unmark_copied_sql(table))
        .map_err(|e| duck_error("update _pg_replicate.copied_tables", e))
}

/// Records that a table's copy is complete as of `snapshot_lsn`.
pub fn mark_copied(conn: &Connection, table: &TableSchema, snapshot_lsn: Lsn) -> Result<()> {
    conn.execute_batch(&mark_copied_sql(table, snapshot_lsn))
        .map_err(|e| duck_error("record the copy in _pg_replicate.copied_tables", e))
}

/// The statement of [`unmark_copied`].
pub(crate) fn unmark_copied_sql(table: TableId) -> String {
    format!(
        "DELETE FROM {STATE_SCHEMA}.copied_tables WHERE table_oid = {};",
        table.0
    )
}

/// The statements of [`mark_copied`].
pub(crate) fn mark_copied_sql(table: &TableSchema, snapshot_lsn: Lsn) -> String {
    format!(
        "{} INSERT INTO {STATE_SCHEMA}.copied_tables VALUES ({}, {}, {}, {}, now());",
        unmark_copied_sql(table.id),
        table.id.0,
        quote_literal(&table.name.schema),
        quote_literal(&table.name.name),
        snapshot_lsn.0
    )
}
