//! The sink's state tables in Snowflake. Pure text.
//!
//! - `_PGR_STATE`: one row per identity: `LAST_LSN`, the end LSN of the
//!   last change batch stored completely, and `POSITION_*`, the part of a
//!   transaction applied beyond it when the sink had to commit part of one
//!   ([`Progress`]).
//! - `_PGR_COPIED`: one row per identity and table: the token of the
//!   table's copy and, once the copy is stored, its snapshot LSN. A copy
//!   records its token when it starts; its rows go in only while the row
//!   still holds its token, and then the snapshot LSN is set in that row
//!   alone. A copy superseded by a later one (a killed process's late
//!   statement) thus changes nothing.

use super::schema::{literal, COPIED_TABLE, STAGE, STATE_TABLE};
use crate::sinks::progress::{Position, Progress};
use crate::types::{Lsn, TableId};

/// Statements creating the state tables and the stage, when missing.
pub fn create_state_sql() -> [String; 3] {
    [
        format!(
            "CREATE TABLE IF NOT EXISTS {STATE_TABLE} (IDENTITY VARCHAR, LAST_LSN NUMBER(20,0), \
             POSITION_COMMIT_LSN NUMBER(20,0), POSITION_SEQ NUMBER(10,0), POSITION_EVENTS NUMBER(10,0))"
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
        "SELECT {} FROM {STATE_TABLE} WHERE IDENTITY = {}",
        PROGRESS_COLUMNS.join(", "),
        literal(identity)
    )
}

/// A new, empty state row of `identity`.
pub fn insert_state_sql(identity: &str) -> String {
    format!(
        "INSERT INTO {STATE_TABLE} (IDENTITY) VALUES ({})",
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

/// A query with a row while the copy `token` of `table` is the table's
/// copy in progress.
pub fn copy_current_sql(identity: &str, table: TableId, token: &str) -> String {
    format!(
        "SELECT 1 FROM {COPIED_TABLE} WHERE IDENTITY = {} AND TABLE_ID = {} AND TOKEN = {} AND SNAPSHOT_LSN IS NULL",
        literal(identity),
        table.0,
        literal(token)
    )
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

/// The state row's progress columns, in order.
const PROGRESS_COLUMNS: [&str; 4] = [
    "LAST_LSN",
    "POSITION_COMMIT_LSN",
    "POSITION_SEQ",
    "POSITION_EVENTS",
];

fn progress_values(progress: &Progress) -> [Option<u64>; 4] {
    [
        progress.last_lsn.map(|l| l.0),
        progress.position.map(|p| p.commit_lsn.0),
        progress.position.and_then(|p| p.seq).map(u64::from),
        progress.position.map(|p| u64::from(p.events)),
    ]
}

/// The progress of a state row's [`select_state_sql`] values.
pub fn parse_progress(values: &[Option<u64>]) -> Progress {
    let get = |i: usize| values.get(i).copied().flatten();
    Progress {
        last_lsn: get(0).map(Lsn),
        position: get(1).map(|commit| Position {
            commit_lsn: Lsn(commit),
            seq: get(2).and_then(|s| u32::try_from(s).ok()),
            events: get(3).and_then(|e| u32::try_from(e).ok()).unwrap_or(0),
        }),
    }
}

/// Moves the state row of `identity` from `expected` to `next`; it
/// updates no row when the state is not `expected` (another writer, or a
/// late commit of this sink's own).
pub fn update_state_sql(identity: &str, expected: &Progress, next: &Progress) -> String {
    let sets: Vec<String> = PROGRESS_COLUMNS
        .iter()
        .zip(progress_values(next))
        .map(|(column, value)| {
            format!(
                "{column} = {}",
                value.map_or_else(|| "NULL".to_owned(), |v| v.to_string())
            )
        })
        .collect();
    let conditions: Vec<String> = PROGRESS_COLUMNS
        .iter()
        .zip(progress_values(expected))
        .map(|(column, value)| match value {
            Some(v) => format!("{column} = {v}"),
            None => format!("{column} IS NULL"),
        })
        .collect();
    format!(
        "UPDATE {STATE_TABLE} SET {} WHERE IDENTITY = {} AND {}",
        sets.join(", "),
        literal(identity),
        conditions.join(" AND ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_round_trips_through_the_state_row() {
        let progress = Progress {
            last_lsn: Some(Lsn(100)),
            position: Some(Position {
                commit_lsn: Lsn(150),
                seq: Some(7),
                events: 2,
            }),
        };
        assert_eq!(parse_progress(&progress_values(&progress)), progress);
        assert_eq!(
            parse_progress(&[None, None, None, None]),
            Progress::default()
        );
        assert_eq!(
            update_state_sql("a'b", &Progress::default(), &progress),
            "UPDATE _PGR_STATE SET LAST_LSN = 100, POSITION_COMMIT_LSN = 150, POSITION_SEQ = 7, \
             POSITION_EVENTS = 2 WHERE IDENTITY = 'a\\'b' AND LAST_LSN IS NULL AND POSITION_COMMIT_LSN IS NULL \
             AND POSITION_SEQ IS NULL AND POSITION_EVENTS IS NULL"
        );
    }
}
