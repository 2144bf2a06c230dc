//! The sink's resumption state, kept in the target database next to the
//! data and always written in the same transaction as the data it
//! describes.
//!
//! Schema `_pg_replicate`:
//!
//! - `progress` (one row): `format_version`, `identity`, `last_lsn` (end
//!   LSN of the last applied transaction, `pg_lsn`), `updated_at`;
//! - `copied_tables`: `table_oid`, `schema`, `name`, `snapshot_lsn`,
//!   `copied_at` — one row per table whose copy committed.
//!
//! One sink writes a database at a time: it holds a session advisory lock
//! ([`WRITER_LOCK`]) for as long as it is connected.

use std::collections::BTreeMap;

use tokio_postgres::Client;

use super::config::PostgresSinkConfig;
use super::schema::STATE_SCHEMA;
use super::target_error;
use crate::types::change::ResumptionState;
use crate::types::table::quote_literal;
use crate::types::{Lsn, TableId, TableSchema};
use crate::{Error, ErrorKind, Result};

/// Version of the layout of the sink's tables. A database of another
/// version is refused rather than misread.
pub const FORMAT_VERSION: i32 = 1;

/// The key of the session advisory lock a sink holds on its target
/// database (`pg_try_advisory_lock`).
pub const WRITER_LOCK: i64 = 0x7067_7265_706c_0001;

/// Takes the writer lock, creates the state tables when missing, and
/// checks that the database belongs to this configuration: same format
/// version, same identity. Nothing is changed when a check fails.
pub async fn init(client: &Client, config: &PostgresSinkConfig) -> Result<()> {
    let target = describe(config);
    let locked: bool = client
        .query_one(&format!("SELECT pg_try_advisory_lock({WRITER_LOCK})"), &[])
        .await
        .and_then(|row| row.try_get(0))
        .map_err(|e| target_error("take the sink's advisory lock", e))?;
    if !locked {
        return Err(Error::new(
            ErrorKind::Sink,
            format!(
                "another pg_replicate sink is writing to {target} (it holds advisory lock {WRITER_LOCK}); \
                 stop it, or give this pipeline another database"
            ),
        ));
    }
    client
        .batch_execute(&format!(
            "BEGIN;
             CREATE SCHEMA IF NOT EXISTS {STATE_SCHEMA};
             CREATE TABLE IF NOT EXISTS {STATE_SCHEMA}.progress (
                 format_version integer NOT NULL, identity text, last_lsn pg_lsn,
                 updated_at timestamptz);
             CREATE TABLE IF NOT EXISTS {STATE_SCHEMA}.copied_tables (
                 table_oid oid PRIMARY KEY, schema text NOT NULL, name text NOT NULL,
                 snapshot_lsn pg_lsn NOT NULL, copied_at timestamptz);"
        ))
        .await
        .map_err(|e| target_error("create the state tables in schema _pg_replicate", e))?;
    let checked = check(client, config, &target).await;
    let end = if checked.is_ok() {
        "COMMIT"
    } else {
        "ROLLBACK"
    };
    client
        .batch_execute(end)
        .await
        .map_err(|e| target_error("commit the state tables", e))?;
    checked
}

fn describe(config: &PostgresSinkConfig) -> String {
    format!(
        "database {} on {}:{}",
        config.connection.dbname, config.connection.host, config.connection.port
    )
}

async fn check(client: &Client, config: &PostgresSinkConfig, target: &str) -> Result<()> {
    let rows = client
        .query(
            &format!(
                "SELECT format_version, identity, last_lsn IS NOT NULL OR EXISTS \
                 (SELECT 1 FROM {STATE_SCHEMA}.copied_tables) FROM {STATE_SCHEMA}.progress"
            ),
            &[],
        )
        .await
        .map_err(|e| target_error("read _pg_replicate.progress", e))?;
    let config_error = |message: String| Error::new(ErrorKind::Config, message);
    match rows.as_slice() {
        [] => {
            client
                .execute(
                    &format!("INSERT INTO {STATE_SCHEMA}.progress VALUES ($1, $2, NULL, now())"),
                    &[&FORMAT_VERSION, &config.identity],
                )
                .await
                .map_err(|e| target_error("write _pg_replicate.progress", e))?;
            Ok(())
        }
        [row] => {
            let version: i32 = row.get(0);
            let identity: Option<String> = row.get(1);
            let has_state: bool = row.get(2);
            if version != FORMAT_VERSION {
                return Err(config_error(format!(
                    "{target} holds pg_replicate state of format version {version}, this version reads \
                     {FORMAT_VERSION}; use another database or the pg_replicate version that wrote it"
                )));
            }
            match (identity, &config.identity) {
                (Some(stored), Some(wanted)) if &stored != wanted => Err(config_error(format!(
                    "{target} holds the replica of {stored:?}, not of {wanted:?}; use another database for \
                     this publication/slot (nothing was changed)"
                ))),
                (None, Some(wanted)) if has_state => Err(config_error(format!(
                    "{target} holds replicated data written without an identity, so it cannot be checked to \
                     belong to {wanted:?}; use another database, or run without identity"
                ))),
                (None, Some(wanted)) => {
                    client
                        .execute(
                            &format!("UPDATE {STATE_SCHEMA}.progress SET identity = $1"),
                            &[wanted],
                        )
                        .await
                        .map_err(|e| target_error("write _pg_replicate.progress", e))?;
                    Ok(())
                }
                _ => Ok(()),
            }
        }
        _ => Err(config_error(format!(
            "{target} has {} rows in _pg_replicate.progress instead of one; the state was edited by hand: \
             restore it or use another database",
            rows.len()
        ))),
    }
}

/// Reads the stored resumption state.
pub async fn read(client: &Client) -> Result<ResumptionState> {
    let lsn = |text: Option<String>, what: &str| -> Result<Option<Lsn>> {
        text.map(|t| {
            t.parse::<Lsn>().map_err(|_| {
                Error::new(
                    ErrorKind::Sink,
                    format!("_pg_replicate.{what} holds {t:?}, which is not an LSN"),
                )
            })
        })
        .transpose()
    };
    let progress = client
        .query_opt(
            &format!("SELECT last_lsn::text FROM {STATE_SCHEMA}.progress"),
            &[],
        )
        .await
        .map_err(|e| target_error("read _pg_replicate.progress", e))?;
    let last_lsn = match progress {
        Some(row) => lsn(row.get(0), "progress")?,
        None => None,
    };
    let rows = client
        .query(
            &format!("SELECT table_oid, snapshot_lsn::text FROM {STATE_SCHEMA}.copied_tables"),
            &[],
        )
        .await
        .map_err(|e| target_error("read _pg_replicate.copied_tables", e))?;
    let mut copied_tables = BTreeMap::new();
    for row in rows {
        let oid: u32 = row.get(0);
        if let Some(snapshot) = lsn(row.get(1), "copied_tables")? {
            copied_tables.insert(TableId(oid), snapshot);
        }
    }
    Ok(ResumptionState {
        copied_tables,
        last_lsn,
    })
}

/// The statement recording the end LSN of the last applied transaction.
pub fn set_last_lsn_sql(lsn: Lsn) -> String {
    format!("UPDATE {STATE_SCHEMA}.progress SET last_lsn = '{lsn}', updated_at = now();")
}

/// The statement forgetting that a table was copied.
pub fn unmark_copied_sql(table: TableId) -> String {
    format!(
        "DELETE FROM {STATE_SCHEMA}.copied_tables WHERE table_oid = {};",
        table.0
    )
}

/// The statements recording that a table's copy is complete as of
/// `snapshot_lsn`.
pub fn mark_copied_sql(table: &TableSchema, snapshot_lsn: Lsn) -> String {
    format!(
        "{} INSERT INTO {STATE_SCHEMA}.copied_tables VALUES ({}, {}, {}, '{snapshot_lsn}', now());",
        unmark_copied_sql(table.id),
        table.id.0,
        quote_literal(&table.name.schema),
        quote_literal(&table.name.name),
    )
}
