//! The sink's state tables in Snowflake. Pure text.
//!
//! - `_PGR_STATE`: one row per identity, the end LSN of the last change
//!   batch stored.
//! - `_PGR_COPIED`: one row per identity and table: the token of the
//!   table's copy and, once the copy is stored, its snapshot LSN. A copy
//!   records its token when it starts and stores its rows in the
//!   transaction that sets the snapshot LSN of the row still holding its
//!   token; a copy superseded by a later one (a killed process's late
//!   statement) thus changes nothing.

use super::schema::{literal, COPIED_TABLE, STAGE, STATE_TABLE};
use crate::types::TableId;

/// Statements creating the state tables and the stage, when missing.
pub fn create_state_sql() -> [String; 3] {
    [
        format!(
            "CREATE TABLE IF NOT EXISTS {STATE_TABLE} (IDENTITY VARCHAR, LAST_LSN NUMBER(20,0))"
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS {COPIED_TABLE} (IDENTITY VARCHAR, TABLE_ID NUMBER(10,0), \
             TOKEN VARCHAR, SNAPSHOT_LSN NUMBER(20,0))"
        ),
        format!("CREATE STAGE IF NOT EXISTS {STAGE}"),
    ]
}

/// The state row of `identity`.
pub fn select_state_sql(identity: &str) -> String {
    format!(
        "SELECT LAST_LSN FROM {STATE_TABLE} WHERE IDENTITY = {}",
        literal(identity)
    )
}

/// A new, empty state row of `identity`.
pub fn insert_state_sql(identity: &str) -> String {
    format!(
        "INSERT INTO {STATE_TABLE} (IDENTITY, LAST_LSN) VALUES ({}, NULL)",
        literal(identity)
    )
}

/// The copied tables of `identity`, with their snapshot LSNs.
pub fn select_copied_sql(identity: &str) -> String {
    format!(
        "SELECT TABLE_ID, SNAPSHOT_LSN FROM {COPIED_TABLE} WHERE IDENTITY = {} AND SNAPSHOT_LSN IS NOT NULL",
        literal(identity)
    )
}

/// Statements recording that the copy `token` of `table` started: the
/// table counts as not copied from now on.
pub fn start_copy_sql(identity: &str, table: TableId, token: &str) -> [String; 2] {
    [
        format!(
            "DELETE FROM {COPIED_TABLE} WHERE IDENTITY = {} AND TABLE_ID = {}",
            literal(identity),
            table.0
        ),
        format!(
            "INSERT INTO {COPIED_TABLE} (IDENTITY, TABLE_ID, TOKEN, SNAPSHOT_LSN) VALUES ({}, {}, {}, NULL)",
            literal(identity),
            table.0,
            literal(token)
        ),
    ]
}

/// Records the copy `token` of `table` as stored at `snapshot_lsn`; it
/// updates no row when a later copy superseded this one.
pub fn end_copy_sql(identity: &str, table: TableId, token: &str, snapshot_lsn: u64) -> String {
    format!(
        "UPDATE {COPIED_TABLE} SET SNAPSHOT_LSN = {snapshot_lsn} WHERE IDENTITY = {} AND TABLE_ID = {} \
         AND TOKEN = {} AND SNAPSHOT_LSN IS NULL",
        literal(identity),
        table.0,
        literal(token)
    )
}

/// Moves the state row of `identity` from `expected` to `next`; it
/// updates no row when the state is not `expected` (another writer).
pub fn update_state_sql(identity: &str, expected: Option<u64>, next: u64) -> String {
    let current = match expected {
        Some(lsn) => format!("LAST_LSN = {lsn}"),
        None => "LAST_LSN IS NULL".to_owned(),
    };
    format!(
        "UPDATE {STATE_TABLE} SET LAST_LSN = {next} WHERE IDENTITY = {} AND {current}",
        literal(identity)
    )
}
