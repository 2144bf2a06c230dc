//! The rows of a data file: a table's columns followed by the change
//! metadata, built from a backfill batch or a change batch. Pure: no I/O.
//!
//! | column | type | value |
//! |---|---|---|
//! | the table's columns | as replicated | the new row; for deletes, the old row Postgres sent |
//! | `_pgr_op` | text | `insert`, `update` or `delete` (copied rows: `insert`) |
//! | `_pgr_commit_lsn` | int64 | commit LSN of the change's transaction (copied rows: 0) |
//! | `_pgr_commit_time` | timestamp (µs, UTC) | commit time (copied rows: NULL) |
//! | `_pgr_seq` | int64 | position of the change in its transaction (copied rows: 0) |
//! | `_pgr_unchanged` | text | JSON array of the columns whose TOAST value Postgres did not send (their value in the row is NULL); NULL when none |
//! | `_pgr_old_<column>` | as the column | per old-image column (the identity columns; all under `REPLICA IDENTITY FULL`): the old value Postgres sent with updates changing the key and with deletes; NULL otherwise |
//!
//! Intervals, which Parquet cannot hold exactly, are ISO 8601 text.

use std::sync::Arc;

use arrow::array::{
    make_array, Array, ArrayRef, AsArray, BooleanArray, Int64Array, IntervalMonthDayNanoArray,
    ListArray, RecordBatch, StringArray, StructArray,
};
use arrow::buffer::NullBuffer;
use arrow::compute::filter_record_batch;
use arrow::compute::kernels::cmp::gt_eq;
use arrow::compute::kernels::zip::zip;
use arrow::datatypes::{DataType, Field, FieldRef, Fields, IntervalUnit, Schema, SchemaRef};

use crate::sinks::changes::{column as change_column, Changes};
use crate::sinks::stdout::json::{write_interval, write_str};
use crate::types::change::{
    is_unchanged, ChangeOp, COMMIT_LSN_COLUMN, COMMIT_TIME_COLUMN, SEQUENCE_COLUMN,
};
use crate::types::values::arrow_field;
use crate::types::{Lsn, ReplicaIdentity, TableSchema};
use crate::{Error, ErrorKind, Result};

/// The operation column of a data file.
pub const FILE_OP_COLUMN: &str = "_pgr_op";
/// The commit LSN column of a data file.
pub const FILE_LSN_COLUMN: &str = "_pgr_commit_lsn";
/// The commit time column of a data file.
pub const FILE_TIME_COLUMN: &str = "_pgr_commit_time";
/// The sequence column of a data file.
pub const FILE_SEQUENCE_COLUMN: &str = "_pgr_seq";
/// The unchanged-columns column of a data file.
pub const FILE_UNCHANGED_COLUMN: &str = "_pgr_unchanged";
/// The prefix of a data file's old-image columns.
pub const FILE_OLD_PREFIX: &str = "_pgr_old_";

/// How a table's rows are laid out in its data files.
pub(super) struct FileLayout {
    /// The file schema.
    pub(super) schema: SchemaRef,
    /// The table columns that have an old-image column, in table order.
    old_columns: Vec<usize>,
}

impl FileLayout {
    /// The layout of `table`'s files.
    pub(super) fn new(table: &TableSchema) -> Self {
        let old_columns: Vec<usize> = if table.replica_identity == ReplicaIdentity::Full {
            (0..table.columns.len()).collect()
        } else {
            table.identity_columns().collect()
        };
        let column_field = |i: usize| {
            let field = arrow_field(&table.columns[i]);
            let ty = file_type(field.data_type());
            field.with_data_type(ty)
        };
        let mut fields: Vec<Field> = (0..table.columns.len()).map(column_field).collect();
        fields.push(Field::new(FILE_OP_COLUMN, DataType::Utf8, false));
        fields.push(Field::new(FILE_LSN_COLUMN, DataType::Int64, false));
        fields.push(Field::new(
            FILE_TIME_COLUMN,
            DataType::Timestamp(arrow::datatypes::TimeUnit::Microsecond, Some("UTC".into())),
            true,
        ));
        fields.push(Field::new(FILE_SEQUENCE_COLUMN, DataType::Int64, false));
        fields.push(Field::new(FILE_UNCHANGED_COLUMN, DataType::Utf8, true));
        for &i in &old_columns {
            let field = column_field(i);
            let name = format!("{FILE_OLD_PREFIX}{}", field.name());
            fields.push(field.with_name(name));
        }
        Self {
            schema: Arc::new(Schema::new(fields)),
            old_columns,
        }
    }

    /// Rows copied in a backfill, laid out as `table_arrow_schema`.
    pub(super) fn copied_rows(&self, rows: &RecordBatch) -> Result<RecordBatch> {
        let n = rows.num_rows();
        let mut columns = Vec::with_capacity(self.schema.fields().len());
        for column in rows.columns() {
            columns.push(file_array(column)?);
        }
        columns.push(Arc::new(StringArray::from_iter_values(std::iter::repeat_n(
            ChangeOp::Insert.as_str(),
            n,
        ))) as ArrayRef);
        columns.push(Arc::new(Int64Array::from_value(0, n)));
        columns.push(arrow::array::new_null_array(
            self.schema.field(rows.num_columns() + 2).data_type(),
            n,
        ));
        columns.push(Arc::new(Int64Array::from_value(0, n)));
        columns.push(arrow::array::new_null_array(&DataType::Utf8, n));
        for field in &self.schema.fields()[rows.num_columns() + 5..] {
            columns.push(arrow::array::new_null_array(field.data_type(), n));
        }
        self.batch(columns)
    }

    /// A change batch of `table` (laid out as `change_arrow_schema`).
    pub(super) fn changes(&self, table: &TableSchema, batch: &RecordBatch) -> Result<RecordBatch> {
        let changes = Changes::new(table, batch)?;
        let n = changes.len();
        let deletes: BooleanArray = changes
            .ops
            .iter()
            .map(|op| Some(op == Some(ChangeOp::Delete as u8)))
            .collect();
        let old_values: Vec<ArrayRef> = (0..table.columns.len())
            .map(|i| with_parent_nulls(changes.old.column(i), changes.old.nulls()))
            .collect();
        let mut columns = Vec::with_capacity(self.schema.fields().len());
        for (new, old) in changes.new.iter().zip(&old_values) {
            // A delete's row is its old image.
            let row = zip(&deletes, old, new).map_err(arrow_error)?;
            columns.push(file_array(&row)?);
        }
        let ops: StringArray = (0..n).map(|row| Some(changes.op(row).as_str())).collect();
        columns.push(Arc::new(ops));
        let lsns = change_column(table, batch, COMMIT_LSN_COLUMN)?;
        columns.push(to_int64(lsns, "commit LSN")?);
        columns.push(change_column(table, batch, COMMIT_TIME_COLUMN)?.clone());
        columns.push(to_int64(
            change_column(table, batch, SEQUENCE_COLUMN)?,
            "sequence",
        )?);
        columns.push(Arc::new(unchanged_names(&changes)));
        for &i in &self.old_columns {
            columns.push(file_array(&old_values[i])?);
        }
        self.batch(columns)
    }

    fn batch(&self, columns: Vec<ArrayRef>) -> Result<RecordBatch> {
        RecordBatch::try_new(self.schema.clone(), columns).map_err(arrow_error)
    }
}

/// The changes of `batch` (a change batch) committed at or after `lsn`;
/// `None` when there are none.
pub(super) fn changes_from(batch: &RecordBatch, lsn: Lsn) -> Result<Option<RecordBatch>> {
    let lsns = batch
        .column_by_name(COMMIT_LSN_COLUMN)
        .and_then(|c| c.as_primitive_opt::<arrow::datatypes::UInt64Type>())
        .ok_or_else(|| {
            Error::new(
                ErrorKind::Sink,
                "a change batch lacks its commit LSN column (a bug in the source that produced it)",
            )
        })?;
    let keep = gt_eq(lsns, &arrow::array::UInt64Array::new_scalar(lsn.0)).map_err(arrow_error)?;
    match keep.true_count() {
        0 => Ok(None),
        n if n == batch.num_rows() => Ok(Some(batch.clone())),
        _ => filter_record_batch(batch, &keep)
            .map(Some)
            .map_err(arrow_error),
    }
}

/// The file type of an Arrow type: intervals become text.
fn file_type(ty: &DataType) -> DataType {
    match ty {
        DataType::Interval(_) => DataType::Utf8,
        DataType::List(item) => DataType::List(Arc::new(file_field(item))),
        DataType::Struct(fields) => DataType::Struct(fields.iter().map(file_field).collect()),
        other => other.clone(),
    }
}

fn file_field(field: &FieldRef) -> Field {
    field
        .as_ref()
        .clone()
        .with_data_type(file_type(field.data_type()))
}

/// `array` with intervals as ISO 8601 text (at any depth).
fn file_array(array: &ArrayRef) -> Result<ArrayRef> {
    match array.data_type() {
        DataType::Interval(IntervalUnit::MonthDayNano) => {
            let intervals = array
                .as_any()
                .downcast_ref::<IntervalMonthDayNanoArray>()
                .ok_or_else(|| mistyped("interval"))?;
            let mut text = Vec::with_capacity(32);
            let values: StringArray = intervals
                .iter()
                .map(|value| {
                    value.map(|v| {
                        text.clear();
                        write_interval(&mut text, v.months, v.days, v.nanoseconds);
                        String::from_utf8_lossy(&text).into_owned()
                    })
                })
                .collect();
            Ok(Arc::new(values))
        }
        DataType::List(item) if needs_conversion(item.data_type()) => {
            let list = array.as_list_opt::<i32>().ok_or_else(|| mistyped("list"))?;
            let values = file_array(list.values())?;
            let field = Arc::new(file_field(item));
            ListArray::try_new(field, list.offsets().clone(), values, list.nulls().cloned())
                .map(|l| Arc::new(l) as ArrayRef)
                .map_err(arrow_error)
        }
        DataType::Struct(fields) if fields.iter().any(|f| needs_conversion(f.data_type())) => {
            let parts = array.as_struct_opt().ok_or_else(|| mistyped("struct"))?;
            let columns = parts
                .columns()
                .iter()
                .map(file_array)
                .collect::<Result<Vec<_>>>()?;
            let fields: Fields = fields.iter().map(file_field).collect();
            StructArray::try_new(fields, columns, parts.nulls().cloned())
                .map(|s| Arc::new(s) as ArrayRef)
                .map_err(arrow_error)
        }
        _ => Ok(array.clone()),
    }
}

fn needs_conversion(ty: &DataType) -> bool {
    file_type(ty) != *ty
}

/// A child of a struct array with the struct's NULLs applied.
fn with_parent_nulls(child: &ArrayRef, parent: Option<&NullBuffer>) -> ArrayRef {
    let Some(parent) = parent else {
        return child.clone();
    };
    let nulls = NullBuffer::union(Some(parent), child.nulls());
    let data = child.to_data().into_builder().nulls(nulls);
    // The same buffers with fewer valid slots: always valid data.
    match data.build() {
        Ok(data) => make_array(data),
        Err(_) => child.clone(),
    }
}

fn to_int64(array: &ArrayRef, what: &str) -> Result<ArrayRef> {
    // Checked: a value beyond int64 is an error, never a wrapped number.
    let options = arrow::compute::CastOptions {
        safe: false,
        ..Default::default()
    };
    arrow::compute::cast_with_options(array, &DataType::Int64, &options).map_err(|e| {
        Error::with_source(
            ErrorKind::Data,
            format!("a change's {what} does not fit the files' int64 column"),
            e,
        )
    })
}

/// Per change, the JSON array of the columns left unchanged, or NULL.
fn unchanged_names(changes: &Changes<'_>) -> StringArray {
    let mut text = Vec::new();
    (0..changes.len())
        .map(|row| {
            let bitmap = changes.unchanged_bitmap(row)?;
            text.clear();
            text.push(b'[');
            for (i, column) in changes.table.columns.iter().enumerate() {
                if is_unchanged(bitmap, i) {
                    if text.len() > 1 {
                        text.push(b',');
                    }
                    write_str(&mut text, &column.name);
                }
            }
            text.push(b']');
            Some(String::from_utf8_lossy(&text).into_owned())
        })
        .collect()
}

fn mistyped(what: &str) -> Error {
    Error::new(
        ErrorKind::Sink,
        format!("a {what} column does not have the Arrow type its field declares (a bug)"),
    )
}

pub(super) fn arrow_error(error: arrow::error::ArrowError) -> Error {
    Error::with_source(
        ErrorKind::Sink,
        "could not lay out rows for a data file",
        error,
    )
}
