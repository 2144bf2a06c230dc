//! The transaction script that applies staged changes. Pure text.
//!
//! One script applies everything staged since the last commit, in one
//! BigQuery multi-statement transaction:
//!
//! 1. `ASSERT` that the state row holds what this sink last wrote;
//! 2. per table: a snapshot of the stored rows that staged changes read
//!    (temporary table), checked complete; then its steps in order — per
//!    round a `DELETE` of the round's old and new keys and an `INSERT` of
//!    its new rows, per truncate a `DELETE` of every row;
//! 3. `DELETE` of the staged rows;
//! 4. `UPDATE` of the state row to the new progress; `COMMIT`.
//!
//! A failing statement ends the script and BigQuery discards the
//! transaction, so either all of it is stored or nothing.

use super::schema::BigQueryType;
use super::schema::{bigquery_type, key_columns, qualified, quote, staging_name, target_name};
use super::stage::{new_col, old_col, read_key_col, unchanged_col, OP, READS, ROUND};
use super::state::{assert_progress_sql, update_progress_sql, Progress};
use crate::types::change::ChangeOp;
use crate::types::TableSchema;

/// One step of a table's apply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// The staged rounds `first..=last`.
    Rounds {
        /// First round.
        first: u32,
        /// Last round.
        last: u32,
    },
    /// `TRUNCATE`: every row goes.
    Truncate,
}

/// What a script does to one table.
#[derive(Clone, Debug)]
pub struct TableWork<'a> {
    /// The table (its schema as staged).
    pub table: &'a TableSchema,
    /// Some staged change reads stored values.
    pub reads: bool,
    /// The steps, in order.
    pub steps: Vec<Step>,
    /// Rows appended to its staging table for this script.
    pub staged_rows: usize,
}

/// The message of the snapshot check.
pub const STORED_ROWS_MISSING: &str =
    "pg_replicate: updates keep unchanged values of rows that are not in the BigQuery table";

/// The message of the staging check: the staging table holds other rows
/// than the sink appended (an append that was retried after it had
/// already landed), so the sink stages the batch again.
pub const STAGED_ROWS_WRONG: &str =
    "pg_replicate: the staging table holds other rows than were staged for this batch";

/// The script applying `tables` and moving the progress from `expected`
/// to `next`.
pub fn apply_script(
    dataset: &str,
    identity: &str,
    expected: &Progress,
    next: &Progress,
    tables: &[TableWork<'_>],
) -> String {
    let mut sql = String::from("BEGIN TRANSACTION;\n");
    sql.push_str(&assert_progress_sql(dataset, identity, expected));
    sql.push_str(";\n");
    for work in tables {
        if work.steps.iter().any(|s| matches!(s, Step::Rounds { .. })) {
            sql.push_str(&format!(
                "ASSERT (SELECT COUNT(*) FROM {}) = {} AS {};\n",
                qualified(dataset, &staging_name(&work.table.name)),
                work.staged_rows,
                super::schema::literal(STAGED_ROWS_WRONG)
            ));
        }
    }
    for (n, work) in tables.iter().enumerate() {
        table_sql(&mut sql, dataset, n, work);
    }
    for work in tables {
        if work.steps.iter().any(|s| matches!(s, Step::Rounds { .. })) {
            sql.push_str(&format!(
                "DELETE FROM {} WHERE TRUE;\n",
                qualified(dataset, &staging_name(&work.table.name))
            ));
        }
    }
    sql.push_str(&update_progress_sql(dataset, identity, next));
    sql.push_str(";\nCOMMIT TRANSACTION;\n");
    sql
}

/// Equality of two key values: BigQuery cannot compare JSON (jsonb keys),
/// so those are compared by their JSON text.
fn key_equal(column: &crate::types::ColumnSchema, left: &str, right: &str) -> String {
    if bigquery_type(column) == BigQueryType::Json {
        format!("TO_JSON_STRING({left}) = TO_JSON_STRING({right})")
    } else {
        format!("{left} = {right}")
    }
}

fn table_sql(sql: &mut String, dataset: &str, n: usize, work: &TableWork<'_>) {
    let table = work.table;
    let target = qualified(dataset, &target_name(&table.name));
    let staging = qualified(dataset, &staging_name(&table.name));
    let keys = key_columns(table);
    let stored = format!("_pgr_stored_{n}");
    let delete = ChangeOp::Delete as u8;

    if work.reads {
        let selected: Vec<String> = table
            .columns
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let name = if keys.contains(&i) {
                    read_key_col(i)
                } else {
                    format!("v{i}")
                };
                format!("t.{} AS {name}", quote(&c.name))
            })
            .collect();
        let read_match = |outer: &str| -> String {
            keys.iter()
                .map(|&k| {
                    key_equal(
                        &table.columns[k],
                        &format!("s.{}", read_key_col(k)),
                        &format!("{outer}.{}", quote_or_positional(outer, table, k)),
                    )
                })
                .collect::<Vec<_>>()
                .join(" AND ")
        };
        sql.push_str(&format!(
            "CREATE TEMP TABLE {stored} AS SELECT {} FROM {target} AS t WHERE EXISTS (SELECT 1 FROM {staging} AS s \
             WHERE s.{READS} AND {});\n",
            selected.join(", "),
            read_match("t")
        ));
        sql.push_str(&format!(
            "ASSERT NOT EXISTS (SELECT 1 FROM {staging} AS s WHERE s.{READS} AND NOT EXISTS (SELECT 1 FROM \
             {stored} AS p WHERE {})) AS {};\n",
            read_match("p"),
            super::schema::literal(STORED_ROWS_MISSING)
        ));
    }

    let columns: Vec<String> = table.columns.iter().map(|c| quote(&c.name)).collect();
    let values: Vec<String> = (0..table.columns.len())
        .map(|i| {
            if work.reads && !keys.contains(&i) {
                format!(
                    "IF(s.{} IS TRUE, p.v{i}, s.{})",
                    unchanged_col(i),
                    new_col(i)
                )
            } else {
                format!("s.{}", new_col(i))
            }
        })
        .collect();
    let join = if work.reads {
        let on: Vec<String> = keys
            .iter()
            .map(|&k| {
                key_equal(
                    &table.columns[k],
                    &format!("p.{}", read_key_col(k)),
                    &format!("s.{}", read_key_col(k)),
                )
            })
            .collect();
        format!(" LEFT JOIN {stored} AS p ON {}", on.join(" AND "))
    } else {
        String::new()
    };

    for step in &work.steps {
        match *step {
            Step::Truncate => sql.push_str(&format!("DELETE FROM {target} WHERE TRUE;\n")),
            Step::Rounds { first, last } => {
                for round in first..=last {
                    if !keys.is_empty() {
                        let old: Vec<String> = keys
                            .iter()
                            .enumerate()
                            .map(|(j, &k)| format!("{} AS x{j}", old_col(k)))
                            .collect();
                        let new: Vec<String> = keys
                            .iter()
                            .enumerate()
                            .map(|(j, &k)| format!("{} AS x{j}", new_col(k)))
                            .collect();
                        let matching: Vec<String> = keys
                            .iter()
                            .enumerate()
                            .map(|(j, &k)| {
                                key_equal(
                                    &table.columns[k],
                                    &format!("d.x{j}"),
                                    &format!("t.{}", quote(&table.columns[k].name)),
                                )
                            })
                            .collect();
                        sql.push_str(&format!(
                            "DELETE FROM {target} AS t WHERE EXISTS (SELECT 1 FROM (\
                             SELECT {old} FROM {staging} WHERE {ROUND} = {round} AND {first_old} IS NOT NULL \
                             UNION ALL SELECT {new} FROM {staging} WHERE {ROUND} = {round} AND {OP} <> {delete}\
                             ) AS d WHERE {matching});\n",
                            old = old.join(", "),
                            new = new.join(", "),
                            first_old = old_col(keys[0]),
                            matching = matching.join(" AND "),
                        ));
                    }
                    sql.push_str(&format!(
                        "INSERT INTO {target} ({}) SELECT {} FROM {staging} AS s{join} WHERE s.{ROUND} = {round} \
                         AND s.{OP} <> {delete};\n",
                        columns.join(", "),
                        values.join(", "),
                    ));
                }
            }
        }
    }
    if work.reads {
        sql.push_str(&format!("DROP TABLE {stored};\n"));
    }
}

/// The key column `k` as `outer` names it: the target's own column name,
/// or the snapshot's positional `r<k>`.
fn quote_or_positional(outer: &str, table: &TableSchema, k: usize) -> String {
    if outer == "t" {
        quote(&table.columns[k].name)
    } else {
        read_key_col(k)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sinks::test_fixtures::table;
    use crate::types::Lsn;

    #[test]
    fn a_script_asserts_the_state_applies_in_order_and_moves_the_state() {
        let t = table(10, "keyed", false);
        let expected = Progress {
            last_lsn: Some(Lsn(100)),
            position: None,
        };
        let next = Progress {
            last_lsn: Some(Lsn(200)),
            position: None,
        };
        let work = TableWork {
            table: &t,
            reads: true,
            steps: vec![
                Step::Rounds { first: 1, last: 2 },
                Step::Truncate,
                Step::Rounds { first: 3, last: 3 },
            ],
            staged_rows: 7,
        };
        let sql = apply_script("ds", "p/s", &expected, &next, &[work]);
        let statements: Vec<&str> = sql.lines().collect();
        assert_eq!(statements[0], "BEGIN TRANSACTION;");
        assert!(
            statements[1].starts_with("ASSERT")
                && statements[1].contains("IFNULL(last_lsn, -1) = 100")
        );
        assert_eq!(
            statements[2],
            "ASSERT (SELECT COUNT(*) FROM `ds`.`_pgr_staging_public_keyed`) = 7 AS 'pg_replicate: the \
             staging table holds other rows than were staged for this batch';"
        );
        assert!(statements[3].starts_with("CREATE TEMP TABLE _pgr_stored_0"));
        assert!(statements[4].starts_with("ASSERT NOT EXISTS"));
        let kinds: Vec<&str> = statements[5..]
            .iter()
            .map(|s| s.split_whitespace().next().unwrap())
            .collect();
        assert_eq!(
            kinds,
            [
                "DELETE", "INSERT", "DELETE", "INSERT", "DELETE", "DELETE", "INSERT", "DROP",
                "DELETE", "UPDATE", "COMMIT"
            ]
        );
        assert!(
            statements[5].contains("_pgr_round = 1") && statements[7].contains("_pgr_round = 2")
        );
        assert_eq!(statements[9], "DELETE FROM `ds`.`public_keyed` WHERE TRUE;");
        assert!(
            statements[6].contains("IF(s.u2 IS TRUE, p.v2, s.n2)"),
            "{}",
            statements[6]
        );
        assert!(statements[14].contains("last_lsn = 200"));
    }

    #[test]
    fn tables_without_key_only_insert() {
        let t = table(11, "nokey", true);
        let work = TableWork {
            table: &t,
            reads: false,
            steps: vec![Step::Rounds { first: 1, last: 1 }],
            staged_rows: 1,
        };
        let sql = apply_script(
            "ds",
            "",
            &Progress::default(),
            &Progress::default(),
            &[work],
        );
        assert!(!sql.contains("DELETE FROM `ds`.`public_nokey` AS t"));
        assert!(
            sql.contains("INSERT INTO `ds`.`public_nokey` (`a`, `b`, `t`) SELECT s.n0, s.n1, s.n2")
        );
    }
}
