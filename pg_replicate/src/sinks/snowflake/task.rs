//! The statements of the modes that keep changes in the landing tables
//! ([`MergeMode::Task`](super::MergeMode::Task),
//! [`MergeMode::External`](super::MergeMode::External)). Pure text.
//!
//! Such a landing table holds the table's columns, `_PGR_OP`, `_PGR_LSN`
//! and `_PGR_SEQ`, and keeps every change until a merge. A batch's rows
//! get their unchanged TOAST values in the batch table first (from the
//! batch, the landing table's last row of the key, or the target), so each
//! landing row is whole; a TRUNCATE appends a marker row (`_PGR_OP` 4)
//! placed after the changes of its transaction that came before it.
//!
//! A merge takes the landing rows up to a bound (the last row when it
//! starts). With a marker among them the target table is emptied; then
//! the rows after the last marker are applied as the inline mode applies
//! a batch ([`super::merge`]); then the rows up to the bound leave the
//! landing table. The landing table always holds a suffix of the change
//! history and the target the state after some prefix of it, and applying
//! that suffix again gives the same table: a merge interrupted anywhere,
//! or run twice, converges. The task runs the three statements in one
//! transaction.

use super::landing::{landing_columns, LSN, OP, SEQ};
use super::merge::apply_sql;
use super::schema::{column_name, quote, SnowflakeType};
use crate::types::{Lsn, TableSchema};

/// `_PGR_OP` of a truncate marker.
pub const TRUNCATE_OP: u8 = 4;

/// The columns of a landing table that keeps changes: the table's own,
/// `_PGR_OP`, `_PGR_LSN`, `_PGR_SEQ`.
pub fn kept_columns(table: &TableSchema) -> Vec<(String, SnowflakeType)> {
    let mut columns = landing_columns(table);
    columns.truncate(table.columns.len() + 3);
    columns
}

/// The last landing row a merge takes: SQL expressions of its `_PGR_LSN`
/// and `_PGR_SEQ` (numbers, or the task's variables).
#[derive(Clone, Copy, Debug)]
pub struct Bound<'a> {
    /// `_PGR_LSN` of the last row.
    pub lsn: &'a str,
    /// `_PGR_SEQ` of the last row.
    pub seq: &'a str,
}

impl Bound<'_> {
    /// The condition that the row of `alias` (`l.`, or empty) is at or
    /// before the bound.
    fn covers(&self, alias: &str) -> String {
        format!(
            "({alias}{LSN} < {0} OR ({alias}{LSN} = {0} AND {alias}{SEQ} <= {1}))",
            self.lsn, self.seq
        )
    }
}

/// The statements of one merge of `landing` into `target` up to `bound`.
pub fn merge_statements(
    table: &TableSchema,
    target: &str,
    landing: &str,
    bound: Bound<'_>,
) -> [String; 3] {
    let marker = format!("m.{OP} = {TRUNCATE_OP} AND {}", bound.covers("m."));
    let emptied =
        format!("DELETE FROM {target} WHERE EXISTS (SELECT 1 FROM {landing} AS m WHERE {marker})");
    // A row at a marker's position came before it in its transaction.
    let rows = format!(
        "(SELECT * FROM {landing} AS l WHERE l.{OP} <> {TRUNCATE_OP} AND {} AND NOT EXISTS (SELECT 1 FROM \
         {landing} AS m WHERE {marker} AND (m.{LSN} > l.{LSN} OR (m.{LSN} = l.{LSN} AND m.{SEQ} >= l.{SEQ}))))",
        bound.covers("l.")
    );
    [
        emptied,
        apply_sql(table, target, &rows),
        format!("DELETE FROM {landing} WHERE {}", bound.covers("")),
    ]
}

/// The query of the bound of the next merge: the last row of `landing`.
pub fn bound_sql(landing: &str) -> String {
    format!("SELECT {LSN}, {SEQ} FROM {landing} ORDER BY {LSN} DESC, {SEQ} DESC LIMIT 1")
}

/// `INSERT` of the rows of batch table `batch` into `landing`.
pub fn append_sql(table: &TableSchema, landing: &str, batch: &str) -> String {
    let mut names: Vec<String> = table
        .columns
        .iter()
        .map(|c| quote(&column_name(c)))
        .collect();
    names.extend([OP, LSN, SEQ].map(str::to_owned));
    let names = names.join(", ");
    format!("INSERT INTO {landing} ({names}) SELECT {names} FROM {batch}")
}

/// `INSERT` of a truncate marker into `landing`: a truncate of the
/// transaction committed at `commit_lsn`, after its change `after` (-1:
/// before all).
pub fn marker_sql(landing: &str, commit_lsn: Lsn, after: i64) -> String {
    format!(
        "INSERT INTO {landing} ({OP}, {LSN}, {SEQ}) VALUES ({TRUNCATE_OP}, {}, {after})",
        commit_lsn.0
    )
}

/// A task's schedule and where it runs.
#[derive(Clone, Copy, Debug)]
pub struct Schedule<'a> {
    /// Every this many minutes.
    pub every_minutes: u32,
    /// The warehouse (quoted); `None`: serverless.
    pub warehouse: Option<&'a str>,
}

/// `CREATE OR REPLACE TASK` of `task` (quoted, qualified) running the
/// merge of `landing` into `target` (both qualified) on `schedule`. The
/// table's names must not hold `$$` (checked when its landing table is
/// prepared).
pub fn create_task_sql(
    table: &TableSchema,
    task: &str,
    target: &str,
    landing: &str,
    schedule: Schedule<'_>,
) -> String {
    let bound = Bound {
        lsn: ":bound_lsn",
        seq: ":bound_seq",
    };
    let statements = merge_statements(table, target, landing, bound);
    let warehouse = schedule
        .warehouse
        .map(|w| format!(" WAREHOUSE = {w}"))
        .unwrap_or_default();
    format!(
        "CREATE OR REPLACE TASK {task}{warehouse} SCHEDULE = '{} MINUTE' AS EXECUTE IMMEDIATE $$\n\
         DECLARE\n  bound_lsn NUMBER;\n  bound_seq NUMBER;\n\
         BEGIN\n  SELECT MAX({LSN}) INTO :bound_lsn FROM {landing};\n\
         \x20 IF (bound_lsn IS NULL) THEN\n    RETURN 'nothing to merge';\n  END IF;\n\
         \x20 SELECT MAX({SEQ}) INTO :bound_seq FROM {landing} WHERE {LSN} = :bound_lsn;\n\
         \x20 BEGIN TRANSACTION;\n  {};\n  {};\n  {};\n  COMMIT;\n  RETURN 'merged';\nEND;\n$$",
        schedule.every_minutes, statements[0], statements[1], statements[2]
    )
}

/// `ALTER TASK … RESUME`: a task is created suspended.
pub fn resume_task_sql(task: &str) -> String {
    format!("ALTER TASK {task} RESUME")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sinks::test_fixtures::table;

    const BOUND: Bound<'static> = Bound {
        lsn: "80",
        seq: "2",
    };

    #[test]
    fn a_merge_empties_the_target_at_a_marker_and_applies_the_rows_after_it() {
        let items = table(1, "items", false);
        let [emptied, merge, cleared] = merge_statements(&items, "T", "L", BOUND);
        assert_eq!(
            emptied,
            "DELETE FROM T WHERE EXISTS (SELECT 1 FROM L AS m WHERE m._PGR_OP = 4 AND (m._PGR_LSN < 80 OR \
             (m._PGR_LSN = 80 AND m._PGR_SEQ <= 2)))"
        );
        assert!(
            merge.starts_with(
                "MERGE INTO T AS t USING (SELECT \"ID\", \"V\", \"T\", _PGR_OP FROM (SELECT * FROM L AS l WHERE \
                 l._PGR_OP <> 4 AND (l._PGR_LSN < 80 OR (l._PGR_LSN = 80 AND l._PGR_SEQ <= 2)) AND NOT EXISTS"
            ),
            "{merge}"
        );
        assert!(
            merge.contains("(m._PGR_LSN > l._PGR_LSN OR (m._PGR_LSN = l._PGR_LSN AND m._PGR_SEQ >= l._PGR_SEQ))"),
            "{merge}"
        );
        assert_eq!(
            cleared,
            "DELETE FROM L WHERE (_PGR_LSN < 80 OR (_PGR_LSN = 80 AND _PGR_SEQ <= 2))"
        );
    }

    #[test]
    fn the_task_runs_the_same_statements_in_one_transaction() {
        let items = table(1, "items", false);
        let schedule = Schedule {
            every_minutes: 5,
            warehouse: Some("\"WH\""),
        };
        let task = create_task_sql(&items, "\"L\".\"_PGR_MERGE_ITEMS\"", "T", "L", schedule);
        assert!(task.starts_with(
            "CREATE OR REPLACE TASK \"L\".\"_PGR_MERGE_ITEMS\" WAREHOUSE = \"WH\" SCHEDULE = '5 MINUTE' AS \
             EXECUTE IMMEDIATE $$"
        ));
        let bound = Bound {
            lsn: ":bound_lsn",
            seq: ":bound_seq",
        };
        let body: Vec<&str> = task.lines().map(str::trim).collect();
        let begin = body
            .iter()
            .position(|l| *l == "BEGIN TRANSACTION;")
            .unwrap();
        for (i, statement) in merge_statements(&items, "T", "L", bound).iter().enumerate() {
            assert_eq!(body[begin + 1 + i], format!("{statement};"));
        }
        assert_eq!(body[begin + 4], "COMMIT;");
        let serverless = Schedule {
            every_minutes: 1,
            warehouse: None,
        };
        let task = create_task_sql(&items, "K", "T", "L", serverless);
        assert!(task.starts_with("CREATE OR REPLACE TASK K SCHEDULE = '1 MINUTE' AS"));
    }

    #[test]
    fn landing_rows_and_markers_are_appended() {
        let items = table(1, "items", false);
        assert_eq!(kept_columns(&items).len(), 6);
        assert_eq!(
            append_sql(&items, "L", "B"),
            "INSERT INTO L (\"ID\", \"V\", \"T\", _PGR_OP, _PGR_LSN, _PGR_SEQ) SELECT \"ID\", \"V\", \"T\", \
             _PGR_OP, _PGR_LSN, _PGR_SEQ FROM B"
        );
        assert_eq!(
            marker_sql("L", Lsn(90), -1),
            "INSERT INTO L (_PGR_OP, _PGR_LSN, _PGR_SEQ) VALUES (4, 90, -1)"
        );
    }
}
