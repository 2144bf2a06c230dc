//! Applying a table's changes to its target table, inside the caller's
//! transaction.
//!
//! The changes are staged by binary `COPY` into a temporary table (new
//! values, old key or old row, unchanged-TOAST flags, operation, round),
//! then applied with set-based SQL:
//!
//! **Tables with a key**: the changes a later change of the batch erases
//! are left out; per round (see `sinks::plan`):
//!
//! 1. if a change of the round keeps unchanged TOAST values, its new rows
//!    are built first, taking those columns from the stored row at the
//!    change's lookup key (old key, else new key);
//! 2. `DELETE` the stored rows at every old and new key of the round;
//! 3. `INSERT` the round's new rows.
//!
//! **Tables without key** (`REPLICA IDENTITY FULL` without primary key):
//! runs of inserts are inserted together; an update or delete removes
//! exactly one row whose every column equals (in text form, so types
//! without `=` such as `json` compare too) its old image, found by `ctid`,
//! and an update then inserts its new row. One statement per change.

use arrow::array::{Array, BooleanArray, UInt32Array};
use tokio_postgres::Client;
use tracing::trace;

use super::copy_encoder::ColumnEncoder;
use super::copy_in::{CopyColumn, CopyIn};
use super::schema::{cast, key_columns, stage_type};
use super::target_error;
use crate::sinks::changes::Changes;
use crate::sinks::plan::{plan_keyed, unkeyed_steps, UnkeyedStep};
use crate::types::change::{ChangeOp, TableChanges};
use crate::types::table::quote_identifier;
use crate::types::values::column_kind;
use crate::types::{TableName, TableSchema};
use crate::{Error, ErrorKind, Result};

/// The temporary stage table.
const STAGE: &str = "_pgr_stage";
/// Run before a table's changes: the stage has no statistics, and a
/// planner free to choose hashes a batch against a scan of the whole
/// target table, so that every batch costs the table's size (0.35 s per
/// batch of 16,384 changes on a million rows, against 0.06 s through the
/// key's index). Joins by nested loop read the target through its key's
/// index (every keyed target table has one), a batch then costs its own
/// size. Undone by [`cleanup`], or by the transaction's rollback.
const PLANNER_SETTINGS: &str = "SET LOCAL enable_hashjoin = off; SET LOCAL enable_mergejoin = off";

/// The temporary table of a round's new rows that keep stored values.
const NEW_ROWS: &str = "_pgr_new";
/// Stage column: round of the change.
const ROUND: &str = "_pgr_round";
/// Stage column: position of the change in its batch.
const INDEX: &str = "_pgr_i";
/// Stage column: operation code ([`ChangeOp`]).
const OP: &str = "_pgr_op";

/// Run after a table's changes: drops the stage, restores the planner.
fn cleanup() -> String {
    format!("DROP TABLE {STAGE}; RESET enable_hashjoin; RESET enable_mergejoin")
}

fn new_col(i: usize) -> String {
    format!("n{i}")
}
fn old_col(i: usize) -> String {
    format!("o{i}")
}
fn unchanged_col(i: usize) -> String {
    format!("u{i}")
}

/// What applying change batches did, for logs and benchmarks.
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
pub async fn apply_changes(client: &Client, changes: &TableChanges) -> Result<ApplyStats> {
    let table = changes.table.as_ref();
    let parts = Changes::new(table, &changes.batch)?;
    let mut stats = ApplyStats {
        changes: parts.len() as u64,
        ..ApplyStats::default()
    };
    if parts.is_empty() {
        return Ok(stats);
    }
    let keys = key_columns(table);
    let flags = parts.unchanged_flags();
    if keys.is_empty() {
        let all: UInt32Array = (0..parts.len() as u32).collect();
        let mut stage = Stage::new(table);
        stage.push(INDEX, "int8", ColumnEncoder::counters(&all));
        stage.push(OP, "int2", ColumnEncoder::codes(parts.ops));
        stage.push_values(&parts, &flags, 0..table.columns.len())?;
        stage.load(client, 0..parts.len()).await?;
        stats.rounds = apply_unkeyed(client, table, &parts, &stage).await?;
        client
            .batch_execute(&cleanup())
            .await
            .map_err(|e| target_error("drop the stage table", e))?;
    } else {
        let plan = plan_keyed(&parts, &keys, "Postgres")?;
        let rounds: UInt32Array = plan.round.iter().copied().collect();
        let mut stage = Stage::new(table);
        stage.push(ROUND, "int8", ColumnEncoder::counters(&rounds));
        stage.push(OP, "int2", ColumnEncoder::codes(parts.ops));
        stage.push_values(&parts, &flags, keys.iter().copied())?;
        let kept = plan
            .round
            .iter()
            .enumerate()
            .filter(|(_, r)| **r > 0)
            .map(|(i, _)| i);
        stage.load(client, kept).await?;
        stats.skipped = (parts.len() - plan.applied()) as u64;
        stats.rounds = u64::from(plan.rounds());
        if plan.rounds() == 0 {
            client
                .batch_execute(&cleanup())
                .await
                .map_err(|e| target_error("drop the stage table", e))?;
        }
        for round in 1..=plan.rounds() {
            let filter = if plan.rounds() == 1 {
                String::new()
            } else {
                format!(" AND {ROUND} = {round}")
            };
            let last = round == plan.rounds();
            apply_round(
                client,
                table,
                &stage,
                &filter,
                plan.reads[round as usize - 1],
                if last { cleanup() } else { String::new() },
            )
            .await?;
        }
    }
    trace!(table = %table.name, changes = stats.changes, skipped = stats.skipped, rounds = stats.rounds, "applied changes");
    Ok(stats)
}

/// Empties a table.
pub async fn truncate(client: &Client, table: &TableSchema) -> Result<()> {
    client
        .batch_execute(&format!("TRUNCATE {}", table.name.quoted()))
        .await
        .map_err(|e| target_error(format!("truncate {}", table.name), e))
}

/// The stage of a table's changes: its columns and their encoders.
struct Stage<'a> {
    table: &'a TableSchema,
    columns: Vec<CopyColumn<'a>>,
    definitions: Vec<String>,
    /// Table columns some change leaves unchanged (a `u` column each).
    unchanged: Vec<usize>,
}

impl<'a> Stage<'a> {
    fn new(table: &'a TableSchema) -> Self {
        Self {
            table,
            columns: Vec::new(),
            definitions: Vec::new(),
            unchanged: Vec::new(),
        }
    }

    fn push(&mut self, name: &str, sql_type: &str, encoder: ColumnEncoder<'a>) {
        self.definitions.push(format!("{name} {sql_type}"));
        self.columns.push(CopyColumn {
            name: name.to_owned(),
            encoder,
        });
    }

    /// The new values of every column, the old values of `old`, the
    /// unchanged flags.
    fn push_values(
        &mut self,
        parts: &Changes<'a>,
        flags: &'a [Option<BooleanArray>],
        old: impl Iterator<Item = usize>,
    ) -> Result<()> {
        let table = self.table;
        let encoder = |array: &'a dyn Array, i: usize| {
            ColumnEncoder::new(array, column_kind(&table.columns[i])).map_err(|why| {
                Error::new(
                    ErrorKind::Sink,
                    format!(
                        "the changes of {} carry column {} in a form the Postgres sink cannot read: {why}",
                        table.name, table.columns[i].name
                    ),
                )
            })
        };
        for (i, column) in table.columns.iter().enumerate() {
            self.push(
                &new_col(i),
                &stage_type(column),
                encoder(parts.new[i].as_ref(), i)?,
            );
        }
        for i in old {
            let column = &table.columns[i];
            self.push(
                &old_col(i),
                &stage_type(column),
                encoder(parts.old.column(i).as_ref(), i)?,
            );
        }
        for (i, flags) in flags.iter().enumerate() {
            if let Some(flags) = flags {
                self.push(&unchanged_col(i), "boolean", ColumnEncoder::flags(flags));
                self.unchanged.push(i);
            }
        }
        Ok(())
    }

    /// Creates the temporary stage table and copies the rows `rows` in.
    async fn load(&self, client: &Client, rows: impl Iterator<Item = usize>) -> Result<()> {
        client
            .batch_execute(&format!(
                "{PLANNER_SETTINGS}; CREATE TEMP TABLE {STAGE} ({})",
                self.definitions.join(", ")
            ))
            .await
            .map_err(|e| {
                target_error(format!("create the stage table of {}", self.table.name), e)
            })?;
        let target = TableName::new("pg_temp", STAGE);
        let mut copy = CopyIn::start(
            client,
            &format!("COPY {STAGE} FROM STDIN (FORMAT binary)"),
            &target,
        )
        .await?;
        copy.send_rows(&self.columns, rows).await?;
        copy.finish().await?;
        Ok(())
    }
}

fn sql_error(table: &TableName, error: tokio_postgres::Error) -> Error {
    target_error(format!("apply the changes of {table}"), error)
}

/// One round of a keyed table's changes, in one round trip with the
/// statements `then` (if any).
async fn apply_round(
    client: &Client,
    table: &TableSchema,
    stage: &Stage<'_>,
    filter: &str,
    reads: bool,
    then: String,
) -> Result<()> {
    let target = table.name.quoted();
    let keys = key_columns(table);
    let columns = super::schema::column_list(table, 0..table.columns.len());
    let delete = ChangeOp::Delete as u8;
    let column = |i: usize| &table.columns[i];

    if reads {
        build_rows_with_stored_values(client, table, stage, filter).await?;
    }
    let old_keys: Vec<String> = keys
        .iter()
        .enumerate()
        .map(|(j, &k)| format!("{} AS x{j}", cast(&old_col(k), column(k))))
        .collect();
    let new_keys: Vec<String> = keys.iter().map(|&k| cast(&new_col(k), column(k))).collect();
    let matching: Vec<String> = keys
        .iter()
        .enumerate()
        .map(|(j, &k)| format!("t.{} = d.x{j}", quote_identifier(&column(k).name)))
        .collect();
    let delete_sql = format!(
        "DELETE FROM {target} AS t USING (\
           SELECT {old} FROM {STAGE} WHERE {first} IS NOT NULL{filter} \
           UNION SELECT {new} FROM {STAGE} WHERE {OP} <> {delete}{filter}) AS d \
         WHERE {matching}",
        old = old_keys.join(", "),
        first = old_col(keys[0]),
        new = new_keys.join(", "),
        matching = matching.join(" AND "),
    );
    let insert_sql = if reads {
        let values: Vec<String> = (0..table.columns.len()).map(new_col).collect();
        format!(
            "INSERT INTO {target} ({columns}) SELECT {} FROM {NEW_ROWS}; DROP TABLE {NEW_ROWS}",
            values.join(", ")
        )
    } else {
        let values: Vec<String> = (0..table.columns.len())
            .map(|i| cast(&new_col(i), column(i)))
            .collect();
        format!(
            "INSERT INTO {target} ({columns}) SELECT {} FROM {STAGE} WHERE {OP} <> {delete}{filter}",
            values.join(", ")
        )
    };
    let then = if then.is_empty() {
        String::new()
    } else {
        format!("; {then}")
    };
    client
        .batch_execute(&format!("{delete_sql}; {insert_sql}{then}"))
        .await
        .map_err(|e| sql_error(&table.name, e))
}

/// Builds the new rows of a round whose changes keep stored values into
/// the temporary table [`NEW_ROWS`], and checks that every row read exists.
async fn build_rows_with_stored_values(
    client: &Client,
    table: &TableSchema,
    stage: &Stage<'_>,
    filter: &str,
) -> Result<()> {
    let keys = key_columns(table);
    let delete = ChangeOp::Delete as u8;
    let values: Vec<String> = table
        .columns
        .iter()
        .enumerate()
        .map(|(i, column)| {
            let sent = cast(&format!("s.{}", new_col(i)), column);
            if stage.unchanged.contains(&i) {
                format!(
                    "CASE WHEN s.{} THEN t.{} ELSE {sent} END AS {}",
                    unchanged_col(i),
                    quote_identifier(&column.name),
                    new_col(i)
                )
            } else {
                format!("{sent} AS {}", new_col(i))
            }
        })
        .collect();
    let join: Vec<String> = keys
        .iter()
        .map(|&k| {
            let column = &table.columns[k];
            format!(
                "t.{} = COALESCE({}, {})",
                quote_identifier(&column.name),
                cast(&format!("s.{}", old_col(k)), column),
                cast(&format!("s.{}", new_col(k)), column)
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
        "CREATE TEMP TABLE {NEW_ROWS} AS \
         SELECT {values}, (t.{first_key} IS NULL AND ({any})) AS _pgr_missing \
         FROM {STAGE} AS s LEFT JOIN {target} AS t ON {join} \
         WHERE s.{OP} <> {delete}{filter}",
        values = values.join(", "),
        any = any_unchanged.join(" OR "),
        target = table.name.quoted(),
        join = join.join(" AND "),
    );
    client
        .batch_execute(&sql)
        .await
        .map_err(|e| sql_error(&table.name, e))?;
    let missing: i64 = client
        .query_one(
            &format!("SELECT count(*) FROM {NEW_ROWS} WHERE _pgr_missing"),
            &[],
        )
        .await
        .map_err(|e| sql_error(&table.name, e))?
        .get(0);
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
            "{what} that are not in target table {table}: the target table is out of step with the source \
             (changed by hand, or copied without the changes before); copy it again (delete its row from \
             _pg_replicate.copied_tables and restart)"
        ),
    )
}

/// Change-by-change apply of a table without key. Returns the number of
/// statements run.
async fn apply_unkeyed(
    client: &Client,
    table: &TableSchema,
    changes: &Changes<'_>,
    stage: &Stage<'_>,
) -> Result<u64> {
    let target = table.name.quoted();
    let columns = super::schema::column_list(table, 0..table.columns.len());
    let new_values: Vec<String> = table
        .columns
        .iter()
        .enumerate()
        .map(|(i, c)| cast(&format!("s.{}", new_col(i)), c))
        .collect();
    let matching: Vec<String> = table
        .columns
        .iter()
        .enumerate()
        .map(|(i, c)| {
            format!(
                "t.{}::text IS NOT DISTINCT FROM ({})::text",
                quote_identifier(&c.name),
                cast(&format!("s.{}", old_col(i)), c)
            )
        })
        .collect();
    let updated_values: Vec<String> = table
        .columns
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let sent = cast(&format!("s.{}", new_col(i)), c);
            if stage.unchanged.contains(&i) {
                format!(
                    "CASE WHEN s.{} THEN {} ELSE {sent} END",
                    unchanged_col(i),
                    cast(&format!("s.{}", old_col(i)), c)
                )
            } else {
                sent
            }
        })
        .collect();
    let prepare = |sql: String| async move {
        client
            .prepare(&sql)
            .await
            .map_err(|e| sql_error(&table.name, e))
    };
    let insert_run = prepare(format!(
        "INSERT INTO {target} ({columns}) SELECT {} FROM {STAGE} AS s \
         WHERE s.{INDEX} BETWEEN $1 AND $2 ORDER BY s.{INDEX}",
        new_values.join(", ")
    ))
    .await?;
    let remove_one = prepare(format!(
        "DELETE FROM {target} WHERE ctid = (SELECT t.ctid FROM {target} AS t, {STAGE} AS s \
         WHERE s.{INDEX} = $1 AND {} LIMIT 1)",
        matching.join(" AND ")
    ))
    .await?;
    let insert_updated = prepare(format!(
        "INSERT INTO {target} ({columns}) SELECT {} FROM {STAGE} AS s WHERE s.{INDEX} = $1",
        updated_values.join(", ")
    ))
    .await?;

    let steps = unkeyed_steps(changes, "Postgres")?;
    for step in &steps {
        match *step {
            UnkeyedStep::Insert { first, last } => {
                client
                    .execute(&insert_run, &[&(first as i64), &(last as i64)])
                    .await
                    .map_err(|e| sql_error(&table.name, e))?;
            }
            UnkeyedStep::Remove { row } => {
                let removed = client
                    .execute(&remove_one, &[&(row as i64)])
                    .await
                    .map_err(|e| sql_error(&table.name, e))?;
                if removed != 1 {
                    return Err(out_of_step(
                        &table.name,
                        &format!("{}s change rows", changes.op(row).as_str()),
                    ));
                }
            }
            UnkeyedStep::InsertUpdated { row } => {
                client
                    .execute(&insert_updated, &[&(row as i64)])
                    .await
                    .map_err(|e| sql_error(&table.name, e))?;
            }
        }
    }
    let statements = steps.len() as u64;
    Ok(statements)
}
