//! A table's changes as rows of its landing table, written as CSV. Pure:
//! no I/O.
//!
//! A landing row is the row a change leaves at one key: an insert or
//! update writes its new row (`_PGR_OP` 1 or 2), a delete removes the row
//! at its old key (`_PGR_OP` 3, only the key columns set). An update that
//! moves a row to a new key lands twice: a delete of the old key, then the
//! new row. So the last landing row of each key, by (`_PGR_LSN`,
//! `_PGR_SEQ`), is the key's state, and the MERGE ([`super::merge`])
//! applies exactly those.
//!
//! Unchanged TOAST values (columns Postgres did not send) are resolved here
//! where the batch holds them: from the latest earlier change of the batch
//! that wrote the row, or from the old image under `REPLICA IDENTITY
//! FULL`. The rest are flagged (`_PGR_KEEP_<i>`) and taken from the row
//! stored before the batch, at the key it had then (`_PGR_FROM_<k>`, when
//! the update moved it).
//!
//! Columns of a landing table:
//!
//! | column | meaning |
//! |---|---|
//! | the table's columns | new values (the key alone for deletes) |
//! | `_PGR_OP` | [`ChangeOp`] code |
//! | `_PGR_LSN` | commit LSN of the change's transaction |
//! | `_PGR_SEQ` | the change's sequence in its transaction |
//! | `_PGR_KEEP_<i>` | non-key column `i` keeps the stored value |
//! | `_PGR_FROM_<k>` | key column `k` of the stored row to keep values from, when it differs |

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{
    new_null_array, Array, ArrayRef, BooleanArray, RecordBatch, UInt32Array, UInt8Array,
};
use arrow::compute::{interleave, take};
use arrow::datatypes::Field;
use arrow::row::{Row, RowConverter, SortField};

use super::csv::{write_rows, CsvColumn};
use super::schema::{column_name, key_columns, snowflake_type, SnowflakeType};
use crate::sinks::changes::{column, Changes};
use crate::types::change::{is_unchanged, ChangeOp, COMMIT_LSN_COLUMN, SEQUENCE_COLUMN};
use crate::types::values::arrow_field;
use crate::types::{ReplicaIdentity, TableSchema};
use crate::{Error, ErrorKind, Result};

/// Landing column: the operation code.
pub const OP: &str = "_PGR_OP";
/// Landing column: the commit LSN.
pub const LSN: &str = "_PGR_LSN";
/// Landing column: the sequence in the transaction.
pub const SEQ: &str = "_PGR_SEQ";

/// Landing column flagging non-key column `i` as kept from the stored row.
pub fn keep_col(i: usize) -> String {
    format!("_PGR_KEEP_{i}")
}

/// Landing column of key column `k` of the stored row to keep values from.
pub fn from_col(k: usize) -> String {
    format!("_PGR_FROM_{k}")
}

const NUMBER: SnowflakeType = SnowflakeType::Number {
    precision: 20,
    scale: 0,
};

/// The columns of a table's landing table: Snowflake names and types.
pub fn landing_columns(table: &TableSchema) -> Vec<(String, SnowflakeType)> {
    let keys = key_columns(table);
    let mut columns: Vec<(String, SnowflakeType)> = table
        .columns
        .iter()
        .map(|c| (column_name(c), snowflake_type(c)))
        .collect();
    columns.push((OP.to_owned(), NUMBER));
    columns.push((LSN.to_owned(), NUMBER));
    columns.push((SEQ.to_owned(), NUMBER));
    for i in 0..table.columns.len() {
        if !keys.contains(&i) {
            columns.push((keep_col(i), SnowflakeType::Boolean));
        }
    }
    for &k in &keys {
        columns.push((from_col(k), snowflake_type(&table.columns[k])));
    }
    columns
}

/// What [`write_landing`] wrote.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Landed {
    /// Landing rows written.
    pub rows: usize,
    /// Some row keeps values of a stored row.
    pub reads: bool,
}

/// Where a value of a landing row comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pick {
    /// The new value of change `row`.
    New(usize),
    /// The old image of change `row`.
    Old(usize),
    /// NULL (or the stored value, when flagged to keep).
    Null,
}

/// What the batch wrote at a key: per flagged column where the value comes
/// from and whether it keeps the stored value, and the change whose old key
/// is where the row was stored before the batch (`None`: at this key).
#[derive(Clone, Debug)]
struct Lineage {
    sources: Vec<(Pick, bool)>,
    origin: Option<usize>,
}

/// One landing row: its operation and the change it comes from.
#[derive(Clone, Copy, Debug)]
struct Out {
    op: ChangeOp,
    change: usize,
}

/// Appends the landing rows of `table`'s changes in `batch` (laid out as
/// [`change_arrow_schema`](crate::types::change::change_arrow_schema)) to
/// `csv`.
pub fn write_landing(
    table: &TableSchema,
    batch: &RecordBatch,
    csv: &mut Vec<u8>,
) -> Result<Landed> {
    let changes = Changes::new(table, batch)?;
    let keys = key_columns(table);
    let width = table.columns.len();
    if keys.is_empty() {
        if let Some(row) = (0..changes.len()).find(|&r| changes.op(r) != ChangeOp::Insert) {
            return Err(Error::new(
                ErrorKind::Schema,
                format!(
                    "a {} of {} cannot be applied in Snowflake: the table has no primary key or replica \
                     identity index, so its rows cannot be told apart; add a primary key to the Postgres \
                     table, or leave it out of the publication",
                    changes.op(row).as_str(),
                    table.name
                ),
            ));
        }
    }
    // Arrow's row format of the key columns, to compare keys.
    let (new_rows, old_rows) = if keys.is_empty() {
        (None, None)
    } else {
        let converter = RowConverter::new(
            keys.iter()
                .map(|&k| SortField::new(changes.new[k].data_type().clone()))
                .collect(),
        )
        .map_err(|e| arrow_error(table, e))?;
        let new: Vec<ArrayRef> = keys.iter().map(|&k| changes.new[k].clone()).collect();
        let old: Vec<ArrayRef> = keys
            .iter()
            .map(|&k| changes.old.column(k).clone())
            .collect();
        (
            Some(
                converter
                    .convert_columns(&new)
                    .map_err(|e| arrow_error(table, e))?,
            ),
            Some(
                converter
                    .convert_columns(&old)
                    .map_err(|e| arrow_error(table, e))?,
            ),
        )
    };

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
                "an update of {} did not send its key column {} (unchanged TOAST value); the Snowflake sink \
                 cannot find the row: use a key without out-of-line values",
                table.name, table.columns[k].name
            ),
        ));
    }
    let full = table.replica_identity == ReplicaIdentity::Full;

    let mut outs: Vec<Out> = Vec::with_capacity(changes.len());
    // Per landing row, per flagged column: where its value comes from, and
    // whether it keeps the stored value.
    let mut resolved: Vec<Vec<(Pick, bool)>> =
        vec![Vec::with_capacity(changes.len()); flagged.len()];
    // Per landing row: the old key to read stored values at.
    let mut read_from: Vec<Option<usize>> = Vec::with_capacity(changes.len());
    // Per key written so far in the batch: its lineage.
    let mut written: HashMap<Row<'_>, Lineage> = HashMap::new();
    for row in 0..changes.len() {
        let op = changes.op(row);
        let old = old_rows
            .as_ref()
            .filter(|_| changes.old.is_valid(row))
            .map(|rows| rows.row(row));
        let new = new_rows
            .as_ref()
            .filter(|_| op != ChangeOp::Delete)
            .map(|rows| rows.row(row));
        if op == ChangeOp::Delete && old.is_none() {
            return Err(Error::new(
                ErrorKind::Data,
                format!(
                    "a delete of {} carries no old key, so the Snowflake sink cannot tell which row to remove; \
                     give the table a primary key or replica identity",
                    table.name
                ),
            ));
        }
        let moved = matches!((old, new), (Some(o), Some(n)) if o != n);
        let lookup = old.or(new);
        // What the batch wrote at the row's key before this change.
        let known = lookup.and_then(|key| written.get(&key)).cloned();
        if op == ChangeOp::Delete || moved {
            outs.push(Out {
                op: ChangeOp::Delete,
                change: row,
            });
            for per_column in &mut resolved {
                per_column.push((Pick::Null, false));
            }
            read_from.push(None);
            if let Some(old) = old {
                written.remove(&old);
            }
        }
        if op == ChangeOp::Delete {
            continue;
        }
        let bitmap = changes.unchanged_bitmap(row);
        let sources: Vec<(Pick, bool)> = flagged
            .iter()
            .enumerate()
            .map(|(f, &c)| {
                let unchanged = bitmap.is_some_and(|b| is_unchanged(b, c));
                match (&known, unchanged) {
                    (_, false) => (Pick::New(row), false),
                    _ if full && old.is_some() => (Pick::Old(row), false),
                    (Some(known), true) => known.sources[f],
                    (None, true) => (Pick::Null, true),
                }
            })
            .collect();
        let reads = sources.iter().any(|(_, keep)| *keep);
        // Where the stored row is: where the batch first found it, else at
        // this change's old key when it moves the row.
        let origin = known
            .as_ref()
            .and_then(|k| k.origin)
            .or(moved.then_some(row));
        outs.push(Out { op, change: row });
        read_from.push(origin.filter(|_| reads));
        if let Some(new) = new {
            written.insert(
                new,
                Lineage {
                    sources: sources.clone(),
                    origin,
                },
            );
        }
        for (f, source) in sources.into_iter().enumerate() {
            resolved[f].push(source);
        }
    }

    // The landing columns, row by row.
    let out_rows: UInt32Array = outs.iter().map(|o| Some(o.change as u32)).collect();
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(width * 2 + 3);
    for c in 0..width {
        let is_key = keys.contains(&c);
        let flag = flagged.iter().position(|&f| f == c);
        let nulls = new_null_array(changes.new[c].data_type(), 1);
        let arrays: [&dyn Array; 3] = [
            changes.new[c].as_ref(),
            changes.old.column(c).as_ref(),
            nulls.as_ref(),
        ];
        let indices: Vec<(usize, usize)> = outs
            .iter()
            .enumerate()
            .map(|(i, o)| match (o.op, is_key, flag) {
                (ChangeOp::Delete, true, _) => (1, o.change),
                (ChangeOp::Delete, false, _) => (2, 0),
                (_, _, Some(f)) => match resolved[f][i].0 {
                    Pick::New(r) => (0, r),
                    Pick::Old(r) => (1, r),
                    Pick::Null => (2, 0),
                },
                _ => (0, o.change),
            })
            .collect();
        columns.push(interleave(&arrays, &indices).map_err(|e| arrow_error(table, e))?);
    }
    columns.push(Arc::new(
        outs.iter()
            .map(|o| Some(o.op as u8))
            .collect::<UInt8Array>(),
    ));
    for name in [COMMIT_LSN_COLUMN, SEQUENCE_COLUMN] {
        let values = column(table, batch, name)?;
        columns.push(take(values.as_ref(), &out_rows, None).map_err(|e| arrow_error(table, e))?);
    }
    let mut reads = false;
    for c in 0..width {
        if keys.contains(&c) {
            continue;
        }
        let flags: BooleanArray = match flagged.iter().position(|&f| f == c) {
            Some(f) => resolved[f].iter().map(|(_, keep)| Some(*keep)).collect(),
            None => outs.iter().map(|_| Some(false)).collect(),
        };
        reads |= flags.true_count() > 0;
        columns.push(Arc::new(flags));
    }
    for &k in &keys {
        let nulls = new_null_array(changes.new[k].data_type(), 1);
        let arrays: [&dyn Array; 2] = [changes.old.column(k).as_ref(), nulls.as_ref()];
        let indices: Vec<(usize, usize)> = read_from
            .iter()
            .map(|from| from.map_or((1, 0), |r| (0, r)))
            .collect();
        columns.push(interleave(&arrays, &indices).map_err(|e| arrow_error(table, e))?);
    }

    let layout = landing_columns(table);
    let mut fields: Vec<Field> = table.columns.iter().map(arrow_field).collect();
    for (name, _) in &layout[width..] {
        fields.push(Field::new(
            name,
            columns[fields.len()].data_type().clone(),
            true,
        ));
    }
    let csv_columns: Vec<CsvColumn<'_>> = layout
        .iter()
        .zip(&fields)
        .zip(&columns)
        .map(|(((name, ty), field), values)| CsvColumn {
            name,
            ty: *ty,
            field,
            values: values.as_ref(),
        })
        .collect();
    write_rows(&table.name, &csv_columns, outs.len(), csv)?;
    Ok(Landed {
        rows: outs.len(),
        reads,
    })
}

fn arrow_error(table: &TableSchema, error: arrow::error::ArrowError) -> Error {
    Error::with_source(
        ErrorKind::Sink,
        format!("cannot prepare the changes of {} for Snowflake", table.name),
        error,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sinks::test_fixtures::{change_batch, table, Change};

    fn change(op: ChangeOp, new: Option<(i32, i32)>, toast: bool, old: Option<i32>) -> Change {
        Change {
            op,
            new: new.map(|(id, v)| (Some(id), Some(v), (!toast).then(|| format!("t{id}")))),
            toast,
            old: old.map(|id| (Some(id), None, None)),
        }
    }

    fn lines(table: &TableSchema, changes: &[Change]) -> (Vec<String>, Landed) {
        let batch = change_batch(&Arc::new(table.clone()), changes, 100);
        let mut csv = Vec::new();
        let landed = write_landing(table, &batch, &mut csv).unwrap();
        let text = String::from_utf8(csv).unwrap();
        (text.lines().map(str::to_owned).collect(), landed)
    }

    #[test]
    fn a_moved_row_lands_as_a_delete_and_keeps_values_from_its_first_key() {
        let items = table(1, "items", false);
        // Columns: ID, V, T, _PGR_OP, _PGR_LSN, _PGR_SEQ, _PGR_KEEP_1,
        // _PGR_KEEP_2, _PGR_FROM_0.
        let (rows, landed) = lines(
            &items,
            &[
                // A stored row updated without its TOASTed text, then moved
                // twice: it keeps the text stored at key 3.
                change(ChangeOp::Update, Some((3, 5)), true, None),
                change(ChangeOp::Update, Some((30, 5)), true, Some(3)),
                change(ChangeOp::Update, Some((300, 6)), true, Some(30)),
                // Inserted, then moved without its text: it takes the text
                // from the insert.
                change(ChangeOp::Insert, Some((7, 1)), false, None),
                change(ChangeOp::Update, Some((70, 1)), true, Some(7)),
                change(ChangeOp::Delete, None, false, Some(9)),
            ],
        );
        assert_eq!(
            rows,
            [
                "\"3\",\"5\",\\N,\"2\",\"100\",\"0\",\"FALSE\",\"TRUE\",\\N",
                "\"3\",\\N,\\N,\"3\",\"100\",\"1\",\"FALSE\",\"FALSE\",\\N",
                "\"30\",\"5\",\\N,\"2\",\"100\",\"1\",\"FALSE\",\"TRUE\",\"3\"",
                "\"30\",\\N,\\N,\"3\",\"100\",\"2\",\"FALSE\",\"FALSE\",\\N",
                "\"300\",\"6\",\\N,\"2\",\"100\",\"2\",\"FALSE\",\"TRUE\",\"3\"",
                "\"7\",\"1\",\"xt7\",\"1\",\"100\",\"3\",\"FALSE\",\"FALSE\",\\N",
                "\"7\",\\N,\\N,\"3\",\"100\",\"4\",\"FALSE\",\"FALSE\",\\N",
                "\"70\",\"1\",\"xt7\",\"2\",\"100\",\"4\",\"FALSE\",\"FALSE\",\\N",
                "\"9\",\\N,\\N,\"3\",\"100\",\"5\",\"FALSE\",\"FALSE\",\\N",
            ]
        );
        assert_eq!(
            landed,
            Landed {
                rows: 9,
                reads: true
            }
        );
    }

    #[test]
    fn a_table_without_key_takes_inserts_only() {
        let mut log = (*table(1, "log", false)).clone();
        for column in &mut log.columns {
            column.identity = false;
        }
        let (rows, _) = lines(&log, &[change(ChangeOp::Insert, Some((1, 2)), false, None)]);
        assert_eq!(rows.len(), 1);
        let batch = change_batch(
            &Arc::new(log.clone()),
            &[change(ChangeOp::Delete, None, false, Some(1))],
            100,
        );
        let error = write_landing(&log, &batch, &mut Vec::new()).unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Schema);
        assert!(error.message().contains("no primary key"), "{error}");
    }
}
