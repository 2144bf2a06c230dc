//! Backfill: the `COPY (SELECT ...) TO STDOUT (FORMAT binary)` of one
//! [`CopyUnit`], decoded straight into Arrow builders.

use std::pin::Pin;
use std::sync::Arc;

use arrow::array::ArrayRef;
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use futures_util::StreamExt;
use tokio_postgres::{Client, CopyOutStream};

use super::copy_plan::CopyUnit;
use crate::pipeline::BatchConfig;
use crate::postgres::copy_binary::{CopyBinaryError, CopyBinaryParser};
use crate::types::change::table_arrow_schema;
use crate::types::values::{ColumnBuilder, ValueError};
use crate::types::TableSchema;
use crate::{Error, ErrorKind, Result};

/// Reads one unit's `COPY` into batches of the table's schema.
pub(crate) struct UnitReader {
    table: Arc<TableSchema>,
    schema: SchemaRef,
    stream: Pin<Box<CopyOutStream>>,
    parser: Option<CopyBinaryParser>,
    builders: Vec<ColumnBuilder>,
    rows: usize,
    max_rows: usize,
    max_bytes: usize,
    bytes: usize,
}

impl UnitReader {
    /// Starts the unit's `COPY` on `client`.
    pub(crate) async fn start(
        client: &Client,
        unit: &CopyUnit,
        batch: &BatchConfig,
    ) -> Result<Self> {
        let table = unit.table.clone();
        let stream = client
            .copy_out(unit.statement().as_str())
            .await
            .map_err(|e| {
                Error::with_source(
                    copy_error_kind(&e),
                    format!(
                    "could not start copying {} (was it dropped or altered during the backfill? \
                     restart the pipeline to copy it again)",
                    table.name
                ),
                    e,
                )
            })?;
        let capacity = batch.max_rows.min(8192);
        let builders = table
            .columns
            .iter()
            .map(|c| ColumnBuilder::new(c, capacity))
            .collect();
        // A table without columns is copied through one placeholder column.
        let expected_fields = table.columns.len().max(1);
        Ok(Self {
            schema: table_arrow_schema(&table),
            table,
            stream: Box::pin(stream),
            parser: Some(CopyBinaryParser::new(expected_fields)),
            builders,
            rows: 0,
            max_rows: batch.max_rows,
            max_bytes: batch.max_bytes,
            bytes: 0,
        })
    }

    fn take_batch(&mut self) -> Result<RecordBatch> {
        let columns: Vec<ArrayRef> = self
            .builders
            .iter_mut()
            .map(ColumnBuilder::finish)
            .collect();
        let options =
            arrow::record_batch::RecordBatchOptions::new().with_row_count(Some(self.rows));
        self.rows = 0;
        self.bytes = 0;
        RecordBatch::try_new_with_options(self.schema.clone(), columns, &options).map_err(|e| {
            Error::with_source(
                ErrorKind::Data,
                format!("cannot assemble a batch of {}", self.table.name),
                e,
            )
        })
    }
}

fn copy_error_kind(error: &tokio_postgres::Error) -> ErrorKind {
    if error.is_closed() {
        ErrorKind::Connection
    } else {
        ErrorKind::Schema
    }
}

impl UnitReader {
    /// The next batch, or `None` when the unit is read completely.
    pub(crate) async fn next_batch(&mut self) -> Result<Option<RecordBatch>> {
        loop {
            if self.rows >= self.max_rows || self.bytes >= self.max_bytes {
                return self.take_batch().map(Some);
            }
            let Some(parser) = self.parser.as_mut() else {
                return Ok(None);
            };
            match self.stream.next().await {
                Some(Ok(chunk)) => {
                    self.bytes += chunk.len();
                    let builders = &mut self.builders;
                    let rows = &mut self.rows;
                    let mut on_row = |fields: &mut crate::postgres::copy_binary::RowFields<'_>| {
                        for (index, (field, builder)) in fields.zip(builders.iter_mut()).enumerate()
                        {
                            match field {
                                None => builder.append_null(),
                                Some(bytes) => {
                                    builder.append_binary(bytes).map_err(|e| (index, e))?
                                }
                            }
                        }
                        *rows += 1;
                        Ok::<(), (usize, ValueError)>(())
                    };
                    parser
                        .feed(&chunk, &mut on_row)
                        .map_err(|e| decode_error(&self.table, e))?;
                }
                Some(Err(e)) => {
                    return Err(Error::with_source(
                        copy_error_kind(&e),
                        format!("copying {} failed", self.table.name),
                        e,
                    ))
                }
                None => {
                    if let Some(parser) = self.parser.take() {
                        parser.finish().map_err(|e| decode_error(&self.table, e))?;
                    }
                    if self.rows == 0 {
                        return Ok(None);
                    }
                    return self.take_batch().map(Some);
                }
            }
        }
    }
}

fn decode_error(table: &TableSchema, error: CopyBinaryError<(usize, ValueError)>) -> Error {
    match error {
        CopyBinaryError::Row((index, value)) => {
            let column = table.columns.get(index).map_or("?", |c| c.name.as_str());
            Error::with_source(
                ErrorKind::Data,
                format!(
                    "cannot convert a value of column {column} of {}",
                    table.name
                ),
                value,
            )
        }
        other => Error::with_source(
            ErrorKind::Protocol,
            format!("malformed COPY data for {}", table.name),
            other.map_row(|(_, value)| value),
        ),
    }
}
