//! Applying a table's changes to its DuckDB tables, inside the caller's
//! transaction.
//!
//! **Tables with a key** (primary key or replica identity index): the kept
//! changes are appended to a temporary stage table with their rounds (see
//! [`super::plan`]). Per round, set-based:
//!
//! 1. if a change of the round keeps unchanged TOAST values, its new rows
//!    are built first, taking those columns from the stored row at the
//!    change's lookup key (old key, else new key);
//! 2. `DELETE` the stored rows at every old and new key of the round;
//! 3. `INSERT` the round's new rows.
//!
//! An insert thus replaces a row of the same key, an update whose key
//! changed removes the row at the old key, and a delete removes its key.
//!
//! **Tables without key** (`REPLICA IDENTITY FULL` without primary key,
//! rows may repeat): runs of inserts are inserted together; an update or
//! delete removes exactly one row equal (`IS NOT DISTINCT FROM`, column by
//! column) to its old image, found by `rowid`, and an update then inserts
//! its new row (unchanged TOAST values from the old image, which Postgres
//! sends whole under FULL). One statement per change: slow for large
//! tables, like Postgres' own subscriber without index.
//!
//! **History**: one row per change appended to the history table.

use duckdb::{params, Connection};
use tracing::trace;

use super::config::DuckDbMode;
use super::encoder::{
    history_changes, history_truncate, keyed_stage, new_col, old_col, unchanged_col, unkeyed_stage,
    Changes, Stage, INDEX, OP, ROUND,
};
use super::schema::{history_name, key_columns};
use super::{append, duck_error};
use crate::sinks::plan::{unkeyed_steps, UnkeyedStep};
use crate::types::change::{ChangeOp, TableChanges};
use crate::types::table::quote_identifier;
use crate::types::{Lsn, TableName, TableSchema};
use crate::{Error, ErrorKind, Result};

/// The temporary stage table.
const STAGE: &str = "_pgr_stage";
/// The temporary table of a round's new rows that keep stored values.
const NEW_ROWS: &str = "_pgr_new";

/// What applying a change batch did, for logs and benchmarks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ApplyStats {
    /// Changes received.
    pub changes: u64,
    /// Changes skipped because a later change of the batch erases them.
    pub skipped: u64,
    /// Rounds of set-based SQL (keyed tables) or statements (tables
    /// without key).
    pub rounds: u64,
}

/// Applies the changes of one table.
pub fn apply_changes(
    conn: &Connection,
    mode: DuckDbMode,
    changes: &TableChanges,
) -> Result<ApplyStats> {
    let table = changes.table.as_ref();
    let parts = Changes::new(table, &changes.batch)?;
    let mut stats = ApplyStats {
        changes: parts.len() as u64,
        ..ApplyStats::default()
    };
    if parts.is_empty() {
        return Ok(stats);
    }
    if mode.history() {
        let rows = history_changes(&parts)?;
        append(
            conn,
            &history_name(&table.name),
            &history_columns(table),
            rows,
        )?;
    }
    if mode.current_state() {
        if key_columns(table).is_empty() {
            let stage = unkeyed_stage(&parts)?;
            stats.rounds = apply_unkeyed(conn, table, &parts, &stage)?;
        } else {
            let stage = keyed_stage(&parts)?;
            stats.skipped = (parts.len() - stage.plan.applied()) as u64;
            stats.rounds = u64::from(stage.plan.rounds());
            apply_keyed(conn, table, &stage)?;
        }
        drop_temp(conn, STAGE)?;
    }
    trace!(table = %table.name, changes = stats.changes, skipped = stats.skipped, rounds = stats.rounds, "applied changes");
    Ok(stats)
}

/// Empties a table (and records the truncate in its history).
pub fn truncate(
    conn: &Connection,
    mode: DuckDbMode,
    table: &TableSchema,
    commit_lsn: Lsn,
) -> Result<()> {
    if mode.current_state() {
        conn.execute(&format!("DELETE FROM {}", table.name.quoted()), [])
            .map_err(|e| duck_error(format!("truncate DuckDB table {}", table.name), e))?;
    }
    if mode.history() {
        let row = history_truncate(table, commit_lsn)?;
        append(
            conn,
            &history_name(&table.name),
            &history_columns(table),
            row,
        )?;
    }
    Ok(())
}

/// The columns of a history table, in the order of the encoder's batches.
pub fn history_columns(table: &TableSchema) -> Vec<String> {
    table
        .columns
        .iter()
        .map(|c| c.name.clone())
        .chain(
            super::schema::HISTORY_COLUMNS
                .iter()
                .map(|(n, _)| (*n).to_owned()),
        )
        .collect()
}

/// Creates the temporary stage table and appends the staged rows.
fn load_stage(conn: &Connection, table: &TableSchema, stage: &Stage) -> Result<()> {
    conn.execute_batch(&format!(
        "CREATE OR REPLACE TEMP TABLE {STAGE} ({})",
        stage.columns_sql
    ))
    .map_err(|e| duck_error(format!("create the stage table for {}", table.name), e))?;
    let mut appender = conn
        .appender_to_catalog_and_db(STAGE, "temp", "main")
        .map_err(|e| duck_error(format!("stage the changes of {}", table.name), e))?;
    appender
        .append_record_batch(super::encoder::for_appender(stage.batch.clone())?)
        .and_then(|()| appender.flush())
        .map_err(|e| duck_error(format!("stage the changes of {}", table.name), e))
}

fn drop_temp(conn: &Connection, name: &str) -> Result<()> {
    conn.execute_batch(&format!("DROP TABLE IF EXISTS temp.main.{name}"))
        .map_err(|e| duck_error("drop a temporary table", e))
}

fn sql_error(table: &TableName, error: duckdb::Error) -> Error {
    duck_error(format!("apply the changes of {table}"), error)
}

/// Set-based apply of a keyed table's stage, round by round.
fn apply_keyed(conn: &Connection, table: &TableSchema, stage: &Stage) -> Result<()> {
    load_stage(conn, table, stage)?;
    let target = table.name.quoted();
    let keys = key_columns(table);
    let all: Vec<usize> = (0..table.columns.len()).collect();
    let column_names = super::schema::column_list(table, &all);
    let delete = op_code(ChangeOp::Delete);

    // DELETE of the old and new keys of a round.
    let key_match: Vec<String> = keys
        .iter()
        .enumerate()
        .map(|(j, &k)| format!("t.{} = d.x{j}", quote_identifier(&table.columns[k].name)))
        .collect();
    let old_keys: Vec<String> = keys
        .iter()
        .enumerate()
        .map(|(j, &k)| format!("{} AS x{j}", old_col(k)))
        .collect();
    let new_keys: Vec<String> = keys.iter().map(|&k| new_col(k)).collect();
    let first_key = old_col(keys[0]);
    let delete_sql = |round: &str| {
        format!(
            "DELETE FROM {target} AS t USING (\
               SELECT {old} FROM {STAGE} WHERE {first_key} IS NOT NULL{round} \
               UNION SELECT {new} FROM {STAGE} WHERE {OP} <> {delete}{round}) AS d \
             WHERE {matching}",
            old = old_keys.join(", "),
            new = new_keys.join(", "),
            matching = key_match.join(" AND "),
        )
    };
    let new_values: Vec<String> = (0..table.columns.len()).map(new_col).collect();
    let insert_sql = |round: &str| {
        format!(
            "INSERT INTO {target} ({column_names}) SELECT {values} FROM {STAGE} WHERE {OP} <> {delete}{round}",
            values = new_values.join(", "),
        )
    };

    let rounds = stage.plan.rounds();
    for round in 1..=rounds {
        let filter = if rounds == 1 {
            String::new()
        } else {
            format!(" AND {ROUND} = {round}")
        };
        let reads = stage.plan.reads[round as usize - 1];
        if reads {
            build_rows_with_stored_values(conn, table, stage, &filter)?;
        }
        conn.execute(&delete_sql(&filter), [])
            .map_err(|e| sql_error(&table.name, e))?;
        if reads {
            let sql = format!(
                "INSERT INTO {target} ({column_names}) SELECT {} FROM {NEW_ROWS}",
                new_values.join(", ")
            );
            conn.execute(&sql, [])
                .map_err(|e| sql_error(&table.name, e))?;
            drop_temp(conn, NEW_ROWS)?;
        } else {
            conn.execute(&insert_sql(&filter), [])
                .map_err(|e| sql_error(&table.name, e))?;
        }
    }
    Ok(())
}

/// Builds the new rows of a round whose changes keep stored values into
/// the temporary table [`NEW_ROWS`], and checks that every row read exists.
fn build_rows_with_stored_values(
    conn: &Connection,
    table: &TableSchema,
    stage: &Stage,
    filter: &str,
) -> Result<()> {
    let keys = key_columns(table);
    let delete = op_code(ChangeOp::Delete);
    let mut values = Vec::with_capacity(table.columns.len());
    for (i, column) in table.columns.iter().enumerate() {
        let stored = format!("t.{}", quote_identifier(&column.name));
        if stage.unchanged.contains(&i) {
            values.push(format!(
                "CASE WHEN s.{u} THEN {stored} ELSE s.{n} END AS {n}",
                u = unchanged_col(i),
                n = new_col(i)
            ));
        } else {
            values.push(format!("s.{}", new_col(i)));
        }
    }
    let join: Vec<String> = keys
        .iter()
        .map(|&k| {
            format!(
                "t.{} = COALESCE(s.{}, s.{})",
                quote_identifier(&table.columns[k].name),
                old_col(k),
                new_col(k)
            )
        })
        .collect();
    let any_unchanged: Vec<String> = stage
        .unchanged
        .iter()
        .map(|&i| format!("s.{}", unchanged_col(i)))
        .collect();
    let first_key = quote_identifier(&table.columns[keys[0]].name);
    let filter = filter.replace(ROUND, &format!("s.{ROUND}"));
    let sql = format!(
        "CREATE OR REPLACE TEMP TABLE {NEW_ROWS} AS \
         SELECT {values}, (t.{first_key} IS NULL AND ({any})) AS _pgr_missing \
         FROM {STAGE} AS s LEFT JOIN {target} AS t ON {join} \
         WHERE s.{OP} <> {delete}{filter}",
        values = values.join(", "),
        any = any_unchanged.join(" OR "),
        target = table.name.quoted(),
        join = join.join(" AND "),
    );
    conn.execute_batch(&sql)
        .map_err(|e| sql_error(&table.name, e))?;
    let missing: i64 = conn
        .query_row(
            &format!("SELECT count(*) FROM {NEW_ROWS} WHERE _pgr_missing"),
            [],
            |r| r.get(0),
        )
        .map_err(|e| sql_error(&table.name, e))?;
    if missing > 0 {
        return Err(out_of_step(
            &table.name,
            "updates keep unchanged values of rows",
        ));
    }
    Ok(())
}

fn out_of_step(table: &TableName, what: &str) -> Error {
    Error::new(
        ErrorKind::Data,
        format!(
            "{what} that are not in DuckDB table {table}: the DuckDB table is out of step with Postgres \
             (changed by hand, or copied without the changes before); copy it again (delete its row from \
             _pg_replicate.copied_tables and restart)"
        ),
    )
}

fn op_code(op: ChangeOp) -> u8 {
    op as u8
}

/// Change-by-change apply of a table without key. Returns the number of
/// statements run.
fn apply_unkeyed(
    conn: &Connection,
    table: &TableSchema,
    changes: &Changes<'_>,
    stage: &Stage,
) -> Result<u64> {
    load_stage(conn, table, stage)?;
    let target = table.name.quoted();
    let all: Vec<usize> = (0..table.columns.len()).collect();
    let column_names = super::schema::column_list(table, &all);
    let new_values: Vec<String> = (0..table.columns.len())
        .map(|i| format!("s.{}", new_col(i)))
        .collect();
    let matching: Vec<String> = table
        .columns
        .iter()
        .enumerate()
        .map(|(i, c)| {
            format!(
                "t.{} IS NOT DISTINCT FROM s.{}",
                quote_identifier(&c.name),
                old_col(i)
            )
        })
        .collect();
    let updated_values: Vec<String> = (0..table.columns.len())
        .map(|i| {
            if stage.unchanged.contains(&i) {
                format!(
                    "CASE WHEN s.{} THEN s.{} ELSE s.{} END",
                    unchanged_col(i),
                    old_col(i),
                    new_col(i)
                )
            } else {
                format!("s.{}", new_col(i))
            }
        })
        .collect();

    let mut insert_run = conn
        .prepare(&format!(
            "INSERT INTO {target} ({column_names}) SELECT {} FROM {STAGE} AS s WHERE s.{INDEX} BETWEEN ? AND ? ORDER BY s.{INDEX}",
            new_values.join(", ")
        ))
        .map_err(|e| sql_error(&table.name, e))?;
    let mut remove_one = conn
        .prepare(&format!(
            "DELETE FROM {target} WHERE rowid = (SELECT t.rowid FROM {target} AS t, {STAGE} AS s \
             WHERE s.{INDEX} = ? AND {} LIMIT 1)",
            matching.join(" AND ")
        ))
        .map_err(|e| sql_error(&table.name, e))?;
    let mut insert_updated = conn
        .prepare(&format!(
            "INSERT INTO {target} ({column_names}) SELECT {} FROM {STAGE} AS s WHERE s.{INDEX} = ?",
            updated_values.join(", ")
        ))
        .map_err(|e| sql_error(&table.name, e))?;

    let steps = unkeyed_steps(changes, "DuckDB")?;
    for step in &steps {
        match *step {
            UnkeyedStep::Insert { first, last } => {
                insert_run
                    .execute(params![first as u32, last as u32])
                    .map_err(|e| sql_error(&table.name, e))?;
            }
            UnkeyedStep::Remove { row } => {
                let removed = remove_one
                    .execute(params![row as u32])
                    .map_err(|e| sql_error(&table.name, e))?;
                if removed != 1 {
                    return Err(out_of_step(
                        &table.name,
                        &format!("{}s change rows", changes.op(row).as_str()),
                    ));
                }
            }
            UnkeyedStep::InsertUpdated { row } => {
                insert_updated
                    .execute(params![row as u32])
                    .map_err(|e| sql_error(&table.name, e))?;
            }
        }
    }
    let statements = steps.len() as u64;
    Ok(statements)
}
