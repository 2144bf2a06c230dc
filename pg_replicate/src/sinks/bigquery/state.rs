//! The sink's state in the dataset: how far it has applied the stream, and
//! which tables it has copied. The SQL here is pure text; the sink runs it.
//!
//! `_pg_replicate_state` has one row per identity:
//!
//! - `last_lsn`: end LSN of the last batch applied completely — what the
//!   pipeline may confirm to Postgres;
//! - `position_*`: how much of the transaction in progress is applied, when
//!   the sink had to commit part of one (a transaction larger than a batch,
//!   or a schema change inside a batch): all changes of earlier
//!   transactions, the row changes of transaction `position_commit_lsn`
//!   up to sequence `position_seq`, and its first `position_events` other
//!   events (truncates, schema changes). A restarted sink skips exactly
//!   these when Postgres sends the transaction again.
//!
//! Every change batch is applied by one transaction script that first
//! asserts the row still holds what this sink last wrote (so a second
//! writer, or a script that already committed, is noticed) and ends by
//! writing the new progress.
//!
//! `_pg_replicate_copied` has one row per identity and copied table, with
//! the LSN of the snapshot it was copied in.

use super::schema::{
    copy_fence_sql, copy_table_name, literal, qualified, quote, target_name, COPIED_TABLE,
    COPYING_TABLE, STATE_TABLE,
};
pub use crate::sinks::progress::{Position, Progress};
use crate::types::{Lsn, TableSchema};

/// Version of the state layout; a dataset with another is refused.
pub const FORMAT_VERSION: i64 = 1;

fn number(value: Option<i64>) -> String {
    value.map_or_else(|| "NULL".to_owned(), |v| v.to_string())
}

/// LSNs are stored as INT64 (every real LSN is below 2^63).
fn lsn_value(lsn: Lsn) -> i64 {
    lsn.0 as i64
}

/// The state row's progress columns, in [`PROGRESS_COLUMNS`] order.
fn progress_columns(progress: &Progress) -> [Option<i64>; 4] {
    [
        progress.last_lsn.map(lsn_value),
        progress.position.map(|p| lsn_value(p.commit_lsn)),
        progress.position.and_then(|p| p.seq).map(i64::from),
        progress.position.map(|p| i64::from(p.events)),
    ]
}

const PROGRESS_COLUMNS: [&str; 4] = [
    "last_lsn",
    "position_commit_lsn",
    "position_seq",
    "position_events",
];

/// `SELECT` of an identity's state row: format version, then the progress
/// columns.
pub fn select_progress_sql(dataset: &str, identity: &str) -> String {
    format!(
        "SELECT format_version, {} FROM {} WHERE identity = {}",
        PROGRESS_COLUMNS.join(", "),
        qualified(dataset, STATE_TABLE),
        literal(identity)
    )
}

/// Parses the row of [`select_progress_sql`].
pub fn parse_progress(values: &[Option<i64>]) -> Progress {
    let get = |i: usize| values.get(i).copied().flatten();
    Progress {
        last_lsn: get(1).map(|v| Lsn(v as u64)),
        position: get(2).map(|commit| Position {
            commit_lsn: Lsn(commit as u64),
            seq: get(3).map(|s| s as u32),
            events: get(4).unwrap_or(0) as u32,
        }),
    }
}

/// `INSERT` of a new identity's state row.
pub fn insert_progress_sql(dataset: &str, identity: &str) -> String {
    format!(
        "INSERT INTO {} (identity, format_version, updated_at) VALUES ({}, {FORMAT_VERSION}, CURRENT_TIMESTAMP())",
        qualified(dataset, STATE_TABLE),
        literal(identity)
    )
}

/// `ASSERT` that the state row of `identity` holds `expected`.
pub fn assert_progress_sql(dataset: &str, identity: &str, expected: &Progress) -> String {
    let conditions: Vec<String> = PROGRESS_COLUMNS
        .iter()
        .zip(progress_columns(expected))
        .map(|(column, value)| format!("IFNULL({column}, -1) = {}", value.unwrap_or(-1)))
        .collect();
    format!(
        "ASSERT (SELECT COUNT(*) FROM {} WHERE identity = {} AND {}) = 1 AS {}",
        qualified(dataset, STATE_TABLE),
        literal(identity),
        conditions.join(" AND "),
        literal(PROGRESS_MOVED)
    )
}

/// The message of the [`assert_progress_sql`] failure.
pub const PROGRESS_MOVED: &str = "pg_replicate: the replication state changed under this sink";

/// `UPDATE` of the state row of `identity` to `next`.
pub fn update_progress_sql(dataset: &str, identity: &str, next: &Progress) -> String {
    let assignments: Vec<String> = PROGRESS_COLUMNS
        .iter()
        .zip(progress_columns(next))
        .map(|(column, value)| format!("{column} = {}", number(value)))
        .collect();
    format!(
        "UPDATE {} SET {}, updated_at = CURRENT_TIMESTAMP() WHERE identity = {}",
        qualified(dataset, STATE_TABLE),
        assignments.join(", "),
        literal(identity)
    )
}

/// `SELECT table_id, snapshot_lsn` of an identity's copied tables.
pub fn select_copied_sql(dataset: &str, identity: &str) -> String {
    format!(
        "SELECT table_id, snapshot_lsn FROM {} WHERE identity = {}",
        qualified(dataset, COPIED_TABLE),
        literal(identity)
    )
}

/// The tokens of a table's copies in progress (of processes that died,
/// when the sink starts a copy).
pub fn select_copy_tokens_sql(dataset: &str, identity: &str, table: &TableSchema) -> String {
    format!(
        "SELECT copy_token FROM {} WHERE identity = {} AND table_id = {}",
        qualified(dataset, COPYING_TABLE),
        literal(identity),
        table.id.0
    )
}

/// Starts a copy of `table` with `token`: forgets the table's copied
/// record and any other copy in progress, in one transaction.
pub fn start_copy_sql(dataset: &str, identity: &str, table: &TableSchema, token: &str) -> String {
    let filter = format!(
        "identity = {} AND table_id = {}",
        literal(identity),
        table.id.0
    );
    format!(
        "BEGIN TRANSACTION;\n\
         DELETE FROM {copied} WHERE {filter};\n\
         DELETE FROM {copying} WHERE {filter};\n\
         INSERT INTO {copying} (identity, table_id, copy_token, started_at) VALUES ({}, {}, {}, CURRENT_TIMESTAMP());\n\
         COMMIT TRANSACTION;\n",
        literal(identity),
        table.id.0,
        literal(token),
        copied = qualified(dataset, COPIED_TABLE),
        copying = qualified(dataset, COPYING_TABLE),
    )
}

/// The message of the copy's row check.
pub const COPY_ROWS_WRONG: &str = "pg_replicate: the copy table holds other rows than were copied";

/// Ends the copy of `table` with `token`, in one transaction: asserts that
/// it is still the table's copy in progress (a killed process's copy that
/// finishes late changes nothing) and that its table holds the `rows`
/// copied, replaces the target's rows by them and records the table as
/// copied at `snapshot_lsn`.
pub fn finish_copy_sql(
    dataset: &str,
    identity: &str,
    table: &TableSchema,
    token: &str,
    rows: u64,
    snapshot_lsn: Lsn,
) -> String {
    let filter = format!(
        "identity = {} AND table_id = {}",
        literal(identity),
        table.id.0
    );
    let copying = qualified(dataset, COPYING_TABLE);
    let fence = copy_fence_sql(dataset, identity, table, token);
    let copy = qualified(dataset, &copy_table_name(token));
    let target = qualified(dataset, &target_name(&table.name));
    let columns: Vec<String> = table.columns.iter().map(|c| quote(&c.name)).collect();
    let columns = columns.join(", ");
    format!(
        "BEGIN TRANSACTION;\n\
         {fence}\
         ASSERT (SELECT COUNT(*) FROM {copy}) = {rows} AS {};\n\
         DELETE FROM {target} WHERE TRUE;\n\
         INSERT INTO {target} ({columns}) SELECT {columns} FROM {copy};\n\
         DELETE FROM {copying} WHERE {filter};\n\
         DELETE FROM {copied} WHERE {filter};\n\
         INSERT INTO {copied} (identity, table_id, table_name, snapshot_lsn, copied_at) VALUES ({}, {}, {}, {}, \
         CURRENT_TIMESTAMP());\n\
         COMMIT TRANSACTION;\n",
        literal(COPY_ROWS_WRONG),
        literal(identity),
        table.id.0,
        literal(&table.name.to_string()),
        lsn_value(snapshot_lsn),
        copied = qualified(dataset, COPIED_TABLE),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_round_trips_through_its_columns() {
        let progress = Progress {
            last_lsn: Some(Lsn(0x16B_3748)),
            position: Some(Position {
                commit_lsn: Lsn(0x16B_4000),
                seq: Some(41),
                events: 2,
            }),
        };
        let mut row = vec![Some(FORMAT_VERSION)];
        row.extend(progress_columns(&progress));
        assert_eq!(parse_progress(&row), progress);
        assert_eq!(
            parse_progress(&[Some(1), None, None, None, None]),
            Progress::default()
        );
        let sql = update_progress_sql("ds", "pub/slot", &Progress::default());
        assert!(
            sql.contains("last_lsn = NULL, position_commit_lsn = NULL"),
            "{sql}"
        );
        let sql = assert_progress_sql("ds", "pub/slot", &progress);
        assert!(sql.contains("IFNULL(position_seq, -1) = 41"), "{sql}");
    }

    #[test]
    fn a_copy_ends_fenced_by_its_token_and_its_row_count() {
        let t = crate::sinks::test_fixtures::table(16384, "t", false);
        let start = start_copy_sql("ds", "pub/slot", &t, "ab12");
        assert!(start.starts_with("BEGIN TRANSACTION;"), "{start}");
        assert!(start.contains("DELETE FROM `ds`.`_pg_replicate_copied` WHERE identity = 'pub/slot' AND table_id = 16384"), "{start}");
        assert!(start.contains("'ab12'"), "{start}");
        let finish = finish_copy_sql("ds", "pub/slot", &t, "ab12", 42, Lsn(7));
        let token = finish.find("copy_token = 'ab12'").unwrap();
        let rows = finish.find("FROM `ds`.`_pgr_copy_ab12`) = 42").unwrap();
        let delete = finish
            .find("DELETE FROM `ds`.`public_t` WHERE TRUE")
            .unwrap();
        let insert = finish.find("INSERT INTO `ds`.`public_t` (`id`, `v`, `t`) SELECT `id`, `v`, `t` FROM `ds`.`_pgr_copy_ab12`").unwrap();
        let mark = finish
            .find(", 16384, 'public.t', 7, CURRENT_TIMESTAMP())")
            .unwrap();
        assert!(
            token < rows && rows < delete && delete < insert && insert < mark,
            "{finish}"
        );
        assert!(
            finish.trim_end().ends_with("COMMIT TRANSACTION;"),
            "{finish}"
        );
    }

    #[test]
    fn a_position_covers_earlier_transactions_and_the_applied_prefix() {
        let position = Position {
            commit_lsn: Lsn(100),
            seq: Some(5),
            events: 1,
        };
        assert!(position.covers_row(Lsn(99), 1000));
        assert!(position.covers_row(Lsn(100), 5));
        assert!(!position.covers_row(Lsn(100), 6));
        assert!(!position.covers_row(Lsn(101), 0));
        let none = Position {
            seq: None,
            ..position
        };
        assert!(!none.covers_row(Lsn(100), 0));
    }

    #[test]
    fn progress_covers_transactions_committed_before_its_last_lsn() {
        let done = Progress {
            last_lsn: Some(Lsn(100)),
            position: None,
        };
        assert!(done.covers_row(Lsn(99), 7));
        assert!(done.covers_event(Lsn(99), 1));
        assert!(!done.covers_row(Lsn(100), 0));
        assert!(!done.covers_event(Lsn(150), 1));
        let partial = Progress {
            last_lsn: Some(Lsn(100)),
            position: Some(Position {
                commit_lsn: Lsn(200),
                seq: Some(3),
                events: 1,
            }),
        };
        assert!(partial.covers_row(Lsn(150), 9));
        assert!(partial.covers_row(Lsn(200), 3));
        assert!(!partial.covers_row(Lsn(200), 4));
        assert!(partial.covers_event(Lsn(200), 1));
        assert!(!partial.covers_event(Lsn(200), 2));
        assert!(!Progress::default().covers_row(Lsn(1), 0));
    }

    #[test]
    fn a_complete_batch_before_a_partly_applied_transaction_is_covered() {
        // Stored: nothing complete yet, the transaction committed at 200
        // applied up to its change 3 (several continuing batches).
        let partial = Progress {
            last_lsn: None,
            position: Some(Position {
                commit_lsn: Lsn(200),
                seq: Some(3),
                events: 0,
            }),
        };
        // A restarted stream hands out transactions before it as a batch of
        // their own: applying it would move the state back to 150.
        assert!(partial.covers_batch_ending_at(Lsn(150)));
        assert!(!partial.covers_batch_ending_at(Lsn(250)));
        let done = Progress {
            last_lsn: Some(Lsn(100)),
            position: None,
        };
        assert!(done.covers_batch_ending_at(Lsn(100)));
        assert!(!done.covers_batch_ending_at(Lsn(101)));
        assert!(!Progress::default().covers_batch_ending_at(Lsn(1)));
    }
}
