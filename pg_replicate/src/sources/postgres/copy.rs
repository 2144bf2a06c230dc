//! Backfill: the `COPY (SELECT ...) TO STDOUT (FORMAT binary)` of one
//! [`CopyUnit`], decoded straight into Arrow builders.

use std::ops::ControlFlow;
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;

use super::change_batch::finish_columns;
use super::copy_plan::CopyUnit;
use crate::pipeline::BatchConfig;
use crate::postgres::copy_binary::{CopyBinaryError, CopyBinaryParser, RowFields};
use crate::postgres::replication::CopyClient;
use crate::types::change::table_arrow_schema;
use crate::types::values::{ColumnBuilder, ValueError};
use crate::types::TableSchema;
use crate::{Error, ErrorKind, Result};

/// Reads one unit's `COPY` into batches of the table's schema.
pub(crate) struct UnitReader<'c> {
    client: &'c mut CopyClient,
    table: Arc<TableSchema>,
    schema: SchemaRef,
    parser: Option<CopyBinaryParser>,
    builders: Vec<ColumnBuilder>,
    rows: usize,
    max_rows: usize,
    max_bytes: usize,
    bytes: usize,
    /// How long the server may send nothing before the copy counts as
    /// stalled.
    silence_limit: std::time::Duration,
}

/// How many stall timeouts a COPY may stay silent: a scan that finds few
/// rows (a selective publication row filter) sends nothing for a while.
const COPY_SILENCE_FACTOR: u32 = 5;

impl<'c> UnitReader<'c> {
    /// Starts the unit's `COPY` on `client`.
    pub(crate) async fn start(
        client: &'c mut CopyClient,
        unit: &CopyUnit,
        batch: &BatchConfig,
    ) -> Result<Self> {
        let table = unit.table.clone();
        client
            .copy_out(unit.statement().as_str())
            .await
            .map_err(|e| {
                let kind = match e.kind() {
                    ErrorKind::Connection | ErrorKind::Protocol => e.kind(),
                    _ => ErrorKind::Schema,
                };
                Error::with_source(
                    kind,
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
            client,
            schema: table_arrow_schema(&table),
            table,
            parser: Some(CopyBinaryParser::new(expected_fields)),
            builders,
            rows: 0,
            max_rows: batch.max_rows,
            max_bytes: batch.max_bytes,
            bytes: 0,
            silence_limit: batch.stall_timeout.saturating_mul(COPY_SILENCE_FACTOR),
        })
    }

    fn take_batch(&mut self) -> Result<RecordBatch> {
        let columns = finish_columns(&self.table, &mut self.builders)?;
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

    /// The next batch, or `None` when the unit is read completely.
    pub(crate) async fn next_batch(&mut self) -> Result<Option<RecordBatch>> {
        loop {
            if self.rows >= self.max_rows || self.bytes >= self.max_bytes {
                return self.take_batch().map(Some);
            }
            let Some(parser) = self.parser.as_mut() else {
                return Ok(None);
            };
            let (max_rows, max_bytes) = (self.max_rows, self.max_bytes);
            let table = &self.table;
            let builders = &mut self.builders;
            let rows = &mut self.rows;
            let silence_limit = self.silence_limit;
            let bytes = &mut self.bytes;
            let read = self.client.read_copy_data(|payload| {
                *bytes += payload.len();
                let mut on_row = |fields: &mut RowFields<'_>| {
                    for (index, (field, builder)) in fields.zip(builders.iter_mut()).enumerate() {
                        match field {
                            None => builder.append_null(),
                            Some(value) => builder.append_binary(value).map_err(|e| (index, e))?,
                        }
                    }
                    *rows += 1;
                    Ok::<(), (usize, ValueError)>(())
                };
                parser
                    .feed(payload, &mut on_row)
                    .map_err(|e| decode_error(table, e))?;
                Ok(if *rows >= max_rows || *bytes >= max_bytes {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                })
            });
            let read = tokio::time::timeout(silence_limit, read)
                .await
                .map_err(|_| {
                    Error::new(
                        ErrorKind::Connection,
                        format!(
                            "copying {}: Postgres sent nothing for {} s (5 × BatchConfig::stall_timeout); \
                             the connection stalled",
                            table.name,
                            silence_limit.as_secs()
                        ),
                    )
                })?
                .map_err(|e| e.context(format_args!("copying {}", table.name)))?;
            if read.is_none() {
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
