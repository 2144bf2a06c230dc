//! Builds a table's change batch (see [`crate::types::change`]) straight
//! from pgoutput tuples.

use std::sync::Arc;

use arrow::array::builder::NullBufferBuilder;
use arrow::array::{
    ArrayRef, BinaryBuilder, StructArray, TimestampMicrosecondBuilder, UInt32Builder,
    UInt64Builder, UInt8Builder,
};
use arrow::datatypes::{DataType, SchemaRef};
use arrow::record_batch::RecordBatch;

use crate::postgres::pgoutput::{TupleData, TupleValue};
use crate::types::change::{change_arrow_schema, ChangeOp, OLD_COLUMN};
use crate::types::values::{ColumnBuilder, ValueError};
use crate::types::{Lsn, TableSchema};
use crate::{Error, ErrorKind, Result};

/// Transaction-level facts stamped on every change row.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ChangeStamp {
    pub commit_lsn: Lsn,
    /// Commit time in microseconds since 1970-01-01 UTC.
    pub commit_time: i64,
    pub sequence: u32,
}

/// Accumulates changes of one table into Arrow builders.
pub(crate) struct ChangeBatchBuilder {
    table: Arc<TableSchema>,
    schema: SchemaRef,
    new: Vec<ColumnBuilder>,
    /// Old-image builders, created when the first old image arrives; until
    /// then old images of all rows are NULL.
    old: Option<Vec<ColumnBuilder>>,
    old_validity: NullBufferBuilder,
    op: UInt8Builder,
    commit_lsn: UInt64Builder,
    commit_time: TimestampMicrosecondBuilder,
    sequence: UInt32Builder,
    unchanged: BinaryBuilder,
    unchanged_scratch: Vec<u8>,
    rows: usize,
}

impl ChangeBatchBuilder {
    pub(crate) fn new(table: Arc<TableSchema>) -> Self {
        let schema = change_arrow_schema(&table);
        let new = table
            .columns
            .iter()
            .map(|c| ColumnBuilder::new(c, 1024))
            .collect();
        Self {
            unchanged_scratch: vec![0; table.columns.len().div_ceil(8)],
            table,
            schema,
            new,
            old: None,
            old_validity: NullBufferBuilder::new(1024),
            op: UInt8Builder::new(),
            commit_lsn: UInt64Builder::new(),
            commit_time: TimestampMicrosecondBuilder::new().with_timezone("UTC"),
            sequence: UInt32Builder::new(),
            unchanged: BinaryBuilder::new(),
            rows: 0,
        }
    }

    pub(crate) fn table(&self) -> &Arc<TableSchema> {
        &self.table
    }

    pub(crate) fn len(&self) -> usize {
        self.rows
    }

    /// Appends one change. `new` is absent for deletes; `old` is the old key
    /// or row image when Postgres sent one.
    pub(crate) fn append(
        &mut self,
        op: ChangeOp,
        stamp: ChangeStamp,
        new: Option<&TupleData<'_>>,
        old: Option<&TupleData<'_>>,
    ) -> Result<()> {
        let columns = self.table.columns.len();
        match new {
            Some(tuple) => {
                self.check_width(tuple)?;
                self.unchanged_scratch.fill(0);
                let mut any_unchanged = false;
                for (index, (value, builder)) in tuple.iter().zip(&mut self.new).enumerate() {
                    match value {
                        TupleValue::Null => builder.append_null(),
                        TupleValue::UnchangedToast => {
                            builder.append_null();
                            self.unchanged_scratch[index / 8] |= 1 << (index % 8);
                            any_unchanged = true;
                        }
                        value => append_value(builder, value)
                            .map_err(|e| value_error(&self.table, index, e))?,
                    }
                }
                if any_unchanged {
                    self.unchanged.append_value(&self.unchanged_scratch);
                } else {
                    self.unchanged.append_null();
                }
            }
            None => {
                for builder in &mut self.new {
                    builder.append_null();
                }
                self.unchanged.append_null();
            }
        }

        match old {
            Some(tuple) => {
                self.check_width(tuple)?;
                let rows = self.rows;
                let old_builders = self.old.get_or_insert_with(|| {
                    self.table
                        .columns
                        .iter()
                        .map(|c| {
                            let mut b = ColumnBuilder::new(c, rows + 16);
                            for _ in 0..rows {
                                b.append_null();
                            }
                            b
                        })
                        .collect()
                });
                for (index, (value, builder)) in
                    tuple.iter().zip(old_builders.iter_mut()).enumerate()
                {
                    append_value(builder, value).map_err(|e| value_error(&self.table, index, e))?;
                }
                self.old_validity.append_non_null();
            }
            None => {
                if let Some(old_builders) = &mut self.old {
                    for builder in old_builders {
                        builder.append_null();
                    }
                }
                self.old_validity.append_null();
            }
        }
        debug_assert_eq!(self.new.len(), columns);

        self.op.append_value(op as u8);
        self.commit_lsn.append_value(stamp.commit_lsn.0);
        self.commit_time.append_value(stamp.commit_time);
        self.sequence.append_value(stamp.sequence);
        self.rows += 1;
        Ok(())
    }

    fn check_width(&self, tuple: &TupleData<'_>) -> Result<()> {
        if tuple.len() != self.table.columns.len() {
            return Err(Error::new(
                ErrorKind::Protocol,
                format!(
                    "a change of {} has {} columns but its Relation message announced {}",
                    self.table.name,
                    tuple.len(),
                    self.table.columns.len()
                ),
            ));
        }
        Ok(())
    }

    /// Hands out the accumulated rows and resets the builder.
    pub(crate) fn finish(&mut self) -> Result<RecordBatch> {
        let rows = self.rows;
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(self.schema.fields().len());
        columns.extend(finish_columns(&self.table, &mut self.new)?);
        columns.push(Arc::new(self.op.finish()));
        columns.push(Arc::new(self.commit_lsn.finish()));
        columns.push(Arc::new(self.commit_time.finish()));
        columns.push(Arc::new(self.sequence.finish()));
        columns.push(Arc::new(self.unchanged.finish()));
        let old_fields = match self
            .schema
            .field_with_name(OLD_COLUMN)
            .map(|f| f.data_type())
        {
            Ok(DataType::Struct(fields)) => fields.clone(),
            _ => {
                return Err(Error::new(
                    ErrorKind::Protocol,
                    "internal: change schema lacks the old-image struct",
                ))
            }
        };
        let validity = self.old_validity.finish();
        let old: ArrayRef = match self.old.take() {
            Some(mut builders) => {
                let arrays = finish_columns(&self.table, &mut builders)?;
                Arc::new(
                    StructArray::try_new(old_fields, arrays, validity)
                        .map_err(|e| arrow_error(&self.table, e))?,
                )
            }
            None => Arc::new(StructArray::new_null(old_fields, rows)),
        };
        columns.push(old);
        self.rows = 0;
        RecordBatch::try_new(self.schema.clone(), columns).map_err(|e| arrow_error(&self.table, e))
    }
}

/// Appends one tuple value; an unchanged TOAST value has no place in an old
/// image and is stored as NULL (the new image marks it separately).
#[inline]
fn append_value(builder: &mut ColumnBuilder, value: TupleValue<'_>) -> Result<(), ValueError> {
    match value {
        TupleValue::Null | TupleValue::UnchangedToast => {
            builder.append_null();
            Ok(())
        }
        TupleValue::Text(text) => builder.append_text(text),
        TupleValue::Binary(bytes) => builder.append_binary(bytes),
    }
}

/// The arrays of `builders`, one per column of `table`, in order.
pub(crate) fn finish_columns(
    table: &TableSchema,
    builders: &mut [ColumnBuilder],
) -> Result<Vec<ArrayRef>> {
    builders
        .iter_mut()
        .enumerate()
        .map(|(index, builder)| builder.finish().map_err(|e| value_error(table, index, e)))
        .collect()
}

fn value_error(
    table: &TableSchema,
    column: usize,
    error: impl std::error::Error + Send + Sync + 'static,
) -> Error {
    let name = table.columns.get(column).map_or("?", |c| c.name.as_str());
    Error::with_source(
        ErrorKind::Data,
        format!("cannot convert a value of column {name} of {}", table.name),
        error,
    )
}

fn arrow_error(table: &TableSchema, error: arrow::error::ArrowError) -> Error {
    Error::with_source(
        ErrorKind::Data,
        format!("cannot assemble the change batch of {}", table.name),
        error,
    )
}
