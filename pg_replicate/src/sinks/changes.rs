//! A table's change batch (see [`change_arrow_schema`]) taken apart into
//! typed columns, for the sinks that apply changes with set-based SQL.
//!
//! [`change_arrow_schema`]: crate::types::change::change_arrow_schema

use arrow::array::{Array, ArrayRef, AsArray, BinaryArray, RecordBatch, StructArray, UInt8Array};
use arrow::datatypes::UInt8Type;

use crate::types::change::{ChangeOp, OLD_COLUMN, OP_COLUMN, UNCHANGED_COLUMN};
use crate::types::TableSchema;
use crate::{Error, ErrorKind, Result};

/// A table's change batch taken apart into typed columns.
pub struct Changes<'a> {
    /// The table.
    pub table: &'a TableSchema,
    /// New values, one array per table column.
    pub new: &'a [ArrayRef],
    /// Operation codes.
    pub ops: &'a UInt8Array,
    /// The unchanged-TOAST bitmaps.
    pub unchanged: &'a BinaryArray,
    /// The old images.
    pub old: &'a StructArray,
    /// The batch itself.
    pub batch: &'a RecordBatch,
}

impl<'a> Changes<'a> {
    /// Checks the layout of `batch` ([`change_arrow_schema`](crate::types::change::change_arrow_schema)).
    pub fn new(table: &'a TableSchema, batch: &'a RecordBatch) -> Result<Self> {
        let width = table.columns.len();
        if batch.num_columns() < width + 6 {
            return Err(layout_error(table, "has too few columns"));
        }
        let ops = column(table, batch, OP_COLUMN)?
            .as_primitive_opt::<UInt8Type>()
            .ok_or_else(|| layout_error(table, "has a mistyped operation column"))?;
        let unchanged = column(table, batch, UNCHANGED_COLUMN)?
            .as_binary_opt::<i32>()
            .ok_or_else(|| layout_error(table, "has a mistyped unchanged column"))?;
        let old = column(table, batch, OLD_COLUMN)?
            .as_struct_opt()
            .ok_or_else(|| layout_error(table, "has a mistyped old image column"))?;
        if old.num_columns() != width {
            return Err(layout_error(table, "has an old image of another width"));
        }
        if let Some(code) = ops
            .values()
            .iter()
            .find(|c| ChangeOp::from_code(**c).is_none())
        {
            return Err(layout_error(
                table,
                &format!("has the unknown operation code {code}"),
            ));
        }
        Ok(Self {
            table,
            new: &batch.columns()[..width],
            ops,
            unchanged,
            old,
            batch,
        })
    }

    /// The operation of change `row`.
    pub fn op(&self, row: usize) -> ChangeOp {
        ChangeOp::from_code(self.ops.value(row)).unwrap_or(ChangeOp::Insert)
    }

    /// Number of changes.
    pub fn len(&self) -> usize {
        self.batch.num_rows()
    }

    /// Whether there are no changes.
    #[cfg(any(
        feature = "duckdb",
        feature = "bigquery",
        feature = "snowflake",
        feature = "postgres-sink"
    ))]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The unchanged bitmap of change `row`, if any column is unchanged.
    pub fn unchanged_bitmap(&self, row: usize) -> Option<&[u8]> {
        (!self.unchanged.is_null(row)).then(|| self.unchanged.value(row))
    }

    /// Per table column, the flags of the changes that leave it unchanged;
    /// `None` for columns no change leaves unchanged.
    #[cfg(any(
        feature = "duckdb",
        feature = "bigquery",
        feature = "snowflake",
        feature = "postgres-sink"
    ))]
    pub fn unchanged_flags(&self) -> Vec<Option<arrow::array::BooleanArray>> {
        use crate::types::change::is_unchanged;
        let width = self.table.columns.len();
        let mut flagged = vec![false; width];
        if self.unchanged.null_count() < self.len() {
            for row in 0..self.len() {
                if let Some(bitmap) = self.unchanged_bitmap(row) {
                    for (column, flag) in flagged.iter_mut().enumerate() {
                        *flag |= is_unchanged(bitmap, column);
                    }
                }
            }
        }
        flagged
            .iter()
            .enumerate()
            .map(|(column, flagged)| {
                flagged.then(|| {
                    (0..self.len())
                        .map(|row| {
                            Some(
                                self.unchanged_bitmap(row)
                                    .is_some_and(|b| is_unchanged(b, column)),
                            )
                        })
                        .collect()
                })
            })
            .collect()
    }
}

/// The column `name` of a change batch of `table`.
pub fn column<'a>(table: &TableSchema, batch: &'a RecordBatch, name: &str) -> Result<&'a ArrayRef> {
    batch
        .column_by_name(name)
        .ok_or_else(|| layout_error(table, &format!("lacks the {name} column")))
}

/// A change batch of `table` that does not follow the change schema.
pub fn layout_error(table: &TableSchema, what: &str) -> Error {
    Error::new(
        ErrorKind::Sink,
        format!(
            "the change batch of {} {what}; it does not follow change_arrow_schema (a bug in the source \
             that produced it)",
            table.name
        ),
    )
}
