//! A table's changes as rows of its staging table, ready to be applied
//! with set-based SQL (see [`super::script`]). Pure: no I/O.
//!
//! The changes are ordered into rounds by [`crate::sinks::plan`]: changes
//! of one round touch pairwise different keys, so a round is applied as
//! one `DELETE` of its keys and one `INSERT` of its new rows, and changes
//! whose effect a later change erases are left out.
//!
//! Unchanged TOAST values (columns Postgres did not send) are resolved
//! here where the batch holds them: from the latest earlier change of the
//! batch that wrote the row, or from the old image under `REPLICA IDENTITY
//! FULL`. The rest are read from the stored row, at the key the row had
//! before the batch (its *origin* key), in a snapshot the transaction takes
//! before its first round; so no change reads what another change of the
//! batch wrote, and rounds depend on keys alone.
//!
//! Columns of a staging table (positional names, so no table column can
//! collide with them):
//!
//! | column | meaning |
//! |---|---|
//! | `_pgr_round` | the change's round |
//! | `_pgr_op` | [`ChangeOp`] code |
//! | `n<i>` | new value of table column `i` (NULL for deletes) |
//! | `o<k>` | old value of key column `k`, when Postgres sent the old key |
//! | `_pgr_reads` | the change takes some values from the stored row |
//! | `u<i>` | column `i` takes the stored value |
//! | `r<k>` | key column `k` of the stored row it reads |

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{
    new_null_array, Array, ArrayRef, BooleanArray, Int64Array, RecordBatch, UInt32Array,
};
use arrow::compute::{interleave, take};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::row::{Row, RowConverter, SortField};

use super::encoder::encode_column;
use super::schema::{bigquery_type, key_columns, BigQueryType};
use crate::sinks::changes::Changes;
use crate::sinks::plan::{plan, PlannedChange};
use crate::types::change::{is_unchanged, ChangeOp};
use crate::types::{ReplicaIdentity, TableSchema};
use crate::{Error, ErrorKind, Result};

/// Staging column: the change's round.
pub const ROUND: &str = "_pgr_round";
/// Staging column: the operation code.
pub const OP: &str = "_pgr_op";
/// Staging column: whether the change reads stored values.
pub const READS: &str = "_pgr_reads";

/// Staging column of the new value of table column `i`.
pub fn new_col(i: usize) -> String {
    format!("n{i}")
}
/// Staging column of the old value of key column `i`.
pub fn old_col(i: usize) -> String {
    format!("o{i}")
}
/// Staging column flagging table column `i` as read from the stored row.
pub fn unchanged_col(i: usize) -> String {
    format!("u{i}")
}
/// Staging column of key column `i` of the stored row read.
pub fn read_key_col(i: usize) -> String {
    format!("r{i}")
}

/// The columns of a table's staging table, with their BigQuery types.
pub fn staging_columns(table: &TableSchema) -> Vec<(String, BigQueryType)> {
    let keys = key_columns(table);
    let mut columns = vec![
        (ROUND.to_owned(), BigQueryType::Int64),
        (OP.to_owned(), BigQueryType::Int64),
    ];
    for (i, column) in table.columns.iter().enumerate() {
        columns.push((new_col(i), bigquery_type(column)));
    }
    for &k in &keys {
        columns.push((old_col(k), bigquery_type(&table.columns[k])));
    }
    columns.push((READS.to_owned(), BigQueryType::Bool));
    for i in 0..table.columns.len() {
        if !keys.contains(&i) {
            columns.push((unchanged_col(i), BigQueryType::Bool));
        }
    }
    for &k in &keys {
        columns.push((read_key_col(k), bigquery_type(&table.columns[k])));
    }
    columns
}

/// The Arrow schema of a table's staged rows.
pub fn staging_schema(table: &TableSchema) -> SchemaRef {
    Arc::new(Schema::new(
        staging_columns(table)
            .into_iter()
            .map(|(name, kind)| Field::new(name, kind.arrow_type(), true))
            .collect::<Vec<_>>(),
    ))
}

/// A table's changes, staged.
#[derive(Debug)]
pub struct Staged {
    /// The staged rows (the changes kept), laid out as [`staging_schema`].
    pub rows: RecordBatch,
    /// The last round used (`round_offset` when no change is kept).
    pub last_round: u32,
    /// Some staged change reads stored values.
    pub reads: bool,
    /// Changes received.
    pub changes: usize,
    /// Changes left out because a later change erases them.
    pub skipped: usize,
}

/// Where the value of a column that a change left unchanged comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Source {
    /// The new value of change `row` (which sent it).
    Sent(usize),
    /// The old image of change `row` (`REPLICA IDENTITY FULL`).
    Old(usize),
    /// The stored row at the lookup key of change `row`: its old key when
    /// `old`, else its new key.
    Stored { row: usize, old: bool },
}

/// Stages the changes of `table` in `batch` (laid out as
/// [`change_arrow_schema`](crate::types::change::change_arrow_schema)),
/// numbering their rounds from `round_offset + 1`.
pub fn stage(table: &TableSchema, batch: &RecordBatch, round_offset: u32) -> Result<Staged> {
    let changes = Changes::new(table, batch)?;
    let keys = key_columns(table);
    if keys.is_empty() {
        return stage_inserts(&changes, round_offset);
    }
    let converter = RowConverter::new(
        keys.iter()
            .map(|&k| SortField::new(changes.new[k].data_type().clone()))
            .collect(),
    )
    .map_err(|e| arrow_error(table, e))?;
    let new_keys: Vec<ArrayRef> = keys.iter().map(|&k| changes.new[k].clone()).collect();
    let old_keys: Vec<ArrayRef> = keys
        .iter()
        .map(|&k| changes.old.column(k).clone())
        .collect();
    let new_rows = converter
        .convert_columns(&new_keys)
        .map_err(|e| arrow_error(table, e))?;
    let old_rows = converter
        .convert_columns(&old_keys)
        .map_err(|e| arrow_error(table, e))?;

    // Columns some change leaves unchanged; a key column cannot be.
    let flagged: Vec<usize> = changes
        .unchanged_flags()
        .iter()
        .enumerate()
        .filter_map(|(i, flags)| flags.as_ref().map(|_| i))
        .collect();
    if let Some(&k) = flagged.iter().find(|c| keys.contains(c)) {
        return Err(Error::new(
            ErrorKind::Data,
            format!(
                "an update of {} did not send its key column {} (unchanged TOAST value); the BigQuery sink \
                 cannot find the row: use a key without out-of-line values",
                table.name, table.columns[k].name
            ),
        ));
    }
    let full = table.replica_identity == ReplicaIdentity::Full;

    let mut planned = Vec::with_capacity(changes.len());
    // Per flagged column, per change: where its value comes from.
    let mut sources: Vec<Vec<Source>> = vec![Vec::with_capacity(changes.len()); flagged.len()];
    // Per key written so far in the batch: the sources of its flagged columns.
    let mut written: HashMap<Row<'_>, Vec<Source>> = HashMap::new();
    for row in 0..changes.len() {
        let op = changes.op(row);
        let old = changes.old.is_valid(row).then(|| old_rows.row(row));
        let new = (op != ChangeOp::Delete).then(|| new_rows.row(row));
        if op == ChangeOp::Delete && old.is_none() {
            return Err(Error::new(
                ErrorKind::Data,
                format!(
                    "a delete of {} carries no old key, so the BigQuery sink cannot tell which row to \
                     remove; give the table a primary key or replica identity",
                    table.name
                ),
            ));
        }
        if !flagged.is_empty() {
            let bitmap = changes.unchanged_bitmap(row);
            let lookup = old.or(new);
            let known = lookup.and_then(|key| written.get(&key)).cloned();
            let resolved: Vec<Source> = flagged
                .iter()
                .enumerate()
                .map(|(f, &column)| {
                    let unchanged = bitmap.is_some_and(|b| is_unchanged(b, column));
                    match (&known, unchanged) {
                        (_, false) => Source::Sent(row),
                        _ if full && old.is_some() => Source::Old(row),
                        (Some(known), true) => known[f],
                        (None, true) => Source::Stored {
                            row,
                            old: old.is_some(),
                        },
                    }
                })
                .collect();
            if let Some(old) = old.filter(|o| Some(*o) != new) {
                written.remove(&old);
            }
            if let Some(new) = new {
                written.insert(new, resolved.clone());
            }
            for (f, source) in resolved.into_iter().enumerate() {
                sources[f].push(source);
            }
        }
        planned.push(PlannedChange {
            old,
            new,
            reads: false,
        });
    }
    let plan = plan(&planned);

    let kept: Vec<usize> = (0..changes.len()).filter(|&i| plan.round[i] > 0).collect();
    let kept_indices: UInt32Array = kept.iter().map(|&i| i as u32).collect();
    let take_rows = |array: &ArrayRef| -> Result<ArrayRef> {
        take(array.as_ref(), &kept_indices, None).map_err(|e| arrow_error(table, e))
    };
    let stored_of = |i: usize| -> Option<Source> {
        sources
            .iter()
            .map(|per_change| per_change[i])
            .find(|s| matches!(s, Source::Stored { .. }))
    };

    let mut columns: Vec<ArrayRef> = Vec::new();
    let rounds: Int64Array = kept
        .iter()
        .map(|&i| Some(i64::from(plan.round[i] + round_offset)))
        .collect();
    columns.push(Arc::new(rounds));
    columns.push(Arc::new(op_codes(&changes, &kept)));
    for (c, column) in table.columns.iter().enumerate() {
        let values = match flagged.iter().position(|&f| f == c) {
            None => take_rows(&changes.new[c])?,
            Some(f) => {
                let nulls = new_null_array(changes.new[c].data_type(), 1);
                let arrays: [&dyn Array; 3] = [
                    changes.new[c].as_ref(),
                    changes.old.column(c).as_ref(),
                    nulls.as_ref(),
                ];
                let picks: Vec<(usize, usize)> = kept
                    .iter()
                    .map(|&i| match sources[f][i] {
                        Source::Sent(r) => (0, r),
                        Source::Old(r) => (1, r),
                        Source::Stored { .. } => (2, 0),
                    })
                    .collect();
                interleave(&arrays, &picks).map_err(|e| arrow_error(table, e))?
            }
        };
        columns.push(encode_column(table, column, &values)?);
    }
    for &k in &keys {
        let old = take_rows(changes.old.column(k))?;
        columns.push(encode_column(table, &table.columns[k], &old)?);
    }
    let reads: BooleanArray = kept.iter().map(|&i| stored_of(i).map(|_| true)).collect();
    let any_reads = reads.true_count() > 0;
    columns.push(Arc::new(reads));
    for c in 0..table.columns.len() {
        if keys.contains(&c) {
            continue;
        }
        let flags: ArrayRef = match flagged.iter().position(|&f| f == c) {
            Some(f) if any_reads => Arc::new(
                kept.iter()
                    .map(|&i| matches!(sources[f][i], Source::Stored { .. }).then_some(true))
                    .collect::<BooleanArray>(),
            ),
            _ => new_null_array(&DataType::Boolean, kept.len()),
        };
        columns.push(flags);
    }
    for &k in &keys {
        let values = if any_reads {
            let nulls = new_null_array(changes.new[k].data_type(), 1);
            let arrays: [&dyn Array; 3] = [
                changes.new[k].as_ref(),
                changes.old.column(k).as_ref(),
                nulls.as_ref(),
            ];
            let picks: Vec<(usize, usize)> = kept
                .iter()
                .map(|&i| match stored_of(i) {
                    Some(Source::Stored { row, old: false }) => (0, row),
                    Some(Source::Stored { row, old: true }) => (1, row),
                    _ => (2, 0),
                })
                .collect();
            interleave(&arrays, &picks).map_err(|e| arrow_error(table, e))?
        } else {
            new_null_array(changes.new[k].data_type(), kept.len())
        };
        columns.push(encode_column(table, &table.columns[k], &values)?);
    }
    let rows =
        RecordBatch::try_new(staging_schema(table), columns).map_err(|e| arrow_error(table, e))?;
    Ok(Staged {
        rows,
        last_round: round_offset + plan.rounds(),
        reads: any_reads,
        changes: changes.len(),
        skipped: changes.len() - kept.len(),
    })
}

/// Stages the changes of a table without key: inserts only, one round.
fn stage_inserts(changes: &Changes<'_>, round_offset: u32) -> Result<Staged> {
    let table = changes.table;
    if let Some(row) = (0..changes.len()).find(|&r| changes.op(r) != ChangeOp::Insert) {
        return Err(Error::new(
            ErrorKind::Schema,
            format!(
                "a {} of {} cannot be applied in BigQuery: the table has no primary key or replica \
                 identity index, so its rows cannot be told apart (BigQuery cannot delete one of two \
                 equal rows); add a primary key to the Postgres table, or leave it out of the publication",
                changes.op(row).as_str(),
                table.name
            ),
        ));
    }
    let all: Vec<usize> = (0..changes.len()).collect();
    let mut columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from(vec![
            i64::from(round_offset + 1);
            changes.len()
        ])),
        Arc::new(op_codes(changes, &all)),
    ];
    for (c, column) in table.columns.iter().enumerate() {
        columns.push(encode_column(table, column, &changes.new[c])?);
    }
    columns.push(new_null_array(&DataType::Boolean, changes.len()));
    for _ in &table.columns {
        columns.push(new_null_array(&DataType::Boolean, changes.len()));
    }
    let rows =
        RecordBatch::try_new(staging_schema(table), columns).map_err(|e| arrow_error(table, e))?;
    Ok(Staged {
        rows,
        last_round: round_offset + u32::from(!changes.is_empty()),
        reads: false,
        changes: changes.len(),
        skipped: 0,
    })
}

fn op_codes(changes: &Changes<'_>, rows: &[usize]) -> Int64Array {
    rows.iter()
        .map(|&i| Some(i64::from(changes.op(i) as u8)))
        .collect()
}

fn arrow_error(table: &TableSchema, error: arrow::error::ArrowError) -> Error {
    Error::with_source(
        ErrorKind::Sink,
        format!("cannot stage the changes of {} for BigQuery", table.name),
        error,
    )
}

#[cfg(test)]
mod tests;
