//! The source's Arrow columns as BigQuery takes them.
//!
//! Every column is converted to the Arrow type of its BigQuery type
//! ([`BigQueryType::arrow_type`]), which both the Parquet of load jobs and
//! the protocol buffers of the Storage Write API are written from:
//!
//! - small integers and oids widen to Int64, float4 to Float64 (exact);
//! - intervals become their ISO 8601 duration text, uuids their usual text,
//!   arrays their JSON text (the stdout sink's lossless JSON);
//! - dates, times and timestamps are checked against BigQuery's ranges
//!   (years 1 to 9999, times below 24:00): a value outside them, such as
//!   `infinity` or a BC date, is refused with an error naming the table and
//!   column, never clamped.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, Date32Array, FixedSizeBinaryArray, IntervalMonthDayNanoArray,
    RecordBatch, StringBuilder, Time64MicrosecondArray, TimestampMicrosecondArray,
};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};

use super::schema::{bigquery_type, BigQueryType};
use crate::sinks::stdout::json::{write_interval, write_uuid, write_value};
use crate::types::{ColumnSchema, TableSchema};
use crate::{Error, ErrorKind, Result};

/// Days since 1970-01-01 of 0001-01-01, BigQuery's first date.
pub const MIN_DATE: i32 = -719_162;
/// Days since 1970-01-01 of 9999-12-31, BigQuery's last date.
pub const MAX_DATE: i32 = 2_932_896;
/// µs since 1970 of 0001-01-01 00:00:00, BigQuery's first timestamp.
pub const MIN_TIMESTAMP: i64 = -62_135_596_800_000_000;
/// µs since 1970 of 9999-12-31 23:59:59.999999, BigQuery's last timestamp.
pub const MAX_TIMESTAMP: i64 = 253_402_300_799_999_999;
/// µs in a day: BigQuery's `TIME` ends just before it.
const DAY_MICROS: i64 = 86_400_000_000;

/// The Arrow field of a column as BigQuery takes it, named `name`.
pub fn bigquery_field(name: &str, column: &ColumnSchema) -> Field {
    Field::new(name, bigquery_type(column).arrow_type(), true)
}

/// The Arrow schema of a table's rows as BigQuery takes them, columns named
/// like the table's.
pub fn table_schema(table: &TableSchema) -> SchemaRef {
    Arc::new(Schema::new(
        table
            .columns
            .iter()
            .map(|c| bigquery_field(&c.name, c))
            .collect::<Vec<_>>(),
    ))
}

/// Converts the first `table.columns.len()` columns of `batch` (a backfill
/// batch, or the new values of a change batch) and names them like the
/// table's columns.
pub fn encode_rows(table: &TableSchema, batch: &RecordBatch) -> Result<RecordBatch> {
    if batch.num_columns() < table.columns.len() {
        return Err(Error::new(
            ErrorKind::Sink,
            format!(
                "a batch of {} has {} columns, the table {}",
                table.name,
                batch.num_columns(),
                table.columns.len()
            ),
        ));
    }
    let columns = table
        .columns
        .iter()
        .enumerate()
        .map(|(i, c)| encode_column(table, c, batch.column(i)))
        .collect::<Result<Vec<_>>>()?;
    RecordBatch::try_new(table_schema(table), columns).map_err(|e| {
        Error::with_source(
            ErrorKind::Sink,
            format!("cannot build the BigQuery rows of {}", table.name),
            e,
        )
    })
}

/// Converts one column of `table` to the Arrow type of its BigQuery type.
pub fn encode_column(
    table: &TableSchema,
    column: &ColumnSchema,
    array: &ArrayRef,
) -> Result<ArrayRef> {
    let wanted = bigquery_type(column);
    let target = wanted.arrow_type();
    let converted: ArrayRef = match (array.data_type(), wanted) {
        (DataType::Date32, BigQueryType::Date) => {
            let dates: &Date32Array = array.as_primitive();
            check_range(table, column, dates.iter().flatten(), MIN_DATE, MAX_DATE)?;
            array.clone()
        }
        (DataType::Time64(_), BigQueryType::Time) => {
            let times: &Time64MicrosecondArray = array.as_primitive();
            check_range(table, column, times.iter().flatten(), 0, DAY_MICROS - 1)?;
            array.clone()
        }
        (DataType::Timestamp(_, _), BigQueryType::Datetime | BigQueryType::Timestamp) => {
            let stamps: &TimestampMicrosecondArray = array.as_primitive();
            check_range(
                table,
                column,
                stamps.iter().flatten(),
                MIN_TIMESTAMP,
                MAX_TIMESTAMP,
            )?;
            if array.data_type() == &target {
                array.clone()
            } else {
                Arc::new(stamps.clone().with_timezone_opt(timezone(&target)))
            }
        }
        (DataType::Interval(_), _) => {
            let intervals: &IntervalMonthDayNanoArray = array.as_primitive();
            text_column(intervals.len(), |row, out| {
                if intervals.is_null(row) {
                    return false;
                }
                let v = intervals.value(row);
                write_interval(out, v.months, v.days, v.nanoseconds);
                true
            })
        }
        (DataType::FixedSizeBinary(16), _) => {
            let uuids: &FixedSizeBinaryArray = array.as_fixed_size_binary();
            text_column(uuids.len(), |row, out| {
                if uuids.is_null(row) {
                    return false;
                }
                write_uuid(out, uuids.value(row));
                true
            })
        }
        (DataType::List(_) | DataType::Struct(_), _) => {
            let field = crate::types::values::arrow_field(column);
            text_column(array.len(), |row, out| {
                if array.is_null(row) {
                    return false;
                }
                write_value(out, &field, array.as_ref(), row);
                true
            })
        }
        (source, _) if source == &target => array.clone(),
        _ => cast(array, &target).map_err(|e| {
            Error::with_source(
                ErrorKind::Sink,
                format!(
                    "cannot convert column {:?} of {} to BigQuery {wanted}",
                    column.name, table.name
                ),
                e,
            )
        })?,
    };
    Ok(converted)
}

fn timezone(data_type: &DataType) -> Option<Arc<str>> {
    match data_type {
        DataType::Timestamp(_, tz) => tz.clone(),
        _ => None,
    }
}

/// A Utf8 column of `len` rows, each written by `write` (which returns
/// false for NULL).
fn text_column(len: usize, mut write: impl FnMut(usize, &mut Vec<u8>) -> bool) -> ArrayRef {
    let mut builder = StringBuilder::with_capacity(len, len * 16);
    let mut text = Vec::new();
    for row in 0..len {
        text.clear();
        if write(row, &mut text) {
            // The writers produce ASCII or text taken from valid UTF-8.
            builder.append_value(String::from_utf8_lossy(&text));
        } else {
            builder.append_null();
        }
    }
    Arc::new(builder.finish())
}

/// Refuses a column holding a value outside `min..=max`.
fn check_range<T: PartialOrd + Copy>(
    table: &TableSchema,
    column: &ColumnSchema,
    mut values: impl Iterator<Item = T>,
    min: T,
    max: T,
) -> Result<()> {
    if values.any(|v| v < min || v > max) {
        return Err(out_of_range(table, column));
    }
    Ok(())
}

fn out_of_range(table: &TableSchema, column: &ColumnSchema) -> Error {
    let range = match bigquery_type(column) {
        BigQueryType::Time => "00:00:00 to 23:59:59.999999 (Postgres allows 24:00:00)",
        _ => "years 1 to 9999 (not infinity, BC dates or years beyond 9999)",
    };
    Error::new(
        ErrorKind::Data,
        format!(
            "a value of column {:?} of {} (Postgres type {}) is outside BigQuery {}'s range, {range}, and \
             is not stored rather than changed; correct the value in Postgres, or replicate the column as \
             text (publish a generated text column instead of it)",
            column.name,
            table.name,
            column.pg_type.name,
            bigquery_type(column)
        ),
    )
}

#[cfg(test)]
mod tests {
    use arrow::array::{
        Date32Array, Float32Array, Int16Array, IntervalMonthDayNanoArray, ListArray, StringArray,
        Time64MicrosecondArray,
    };
    use arrow::datatypes::{Int32Type, IntervalMonthDayNano};

    use super::*;
    use crate::types::{PgType, ReplicaIdentity, TableId, TableName};

    fn table(columns: &[(&str, u32, Option<u32>)]) -> TableSchema {
        TableSchema {
            id: TableId(7),
            name: TableName::new("public", "t"),
            columns: columns
                .iter()
                .map(|(name, oid, element)| ColumnSchema {
                    name: (*name).into(),
                    pg_type: PgType {
                        oid: *oid,
                        modifier: -1,
                        name: format!("type{oid}"),
                        element_oid: *element,
                    },
                    nullable: true,
                    identity: false,
                    array_form: crate::types::ArrayForm::Lists,
                })
                .collect(),
            replica_identity: ReplicaIdentity::Default,
        }
    }

    fn encode(table: &TableSchema, arrays: Vec<ArrayRef>) -> Result<RecordBatch> {
        let batch = RecordBatch::try_new(
            Arc::new(Schema::new(
                table
                    .columns
                    .iter()
                    .map(crate::types::values::arrow_field)
                    .collect::<Vec<_>>(),
            )),
            arrays,
        )
        .unwrap();
        encode_rows(table, &batch)
    }

    #[test]
    fn columns_take_their_bigquery_arrow_types() {
        let t = table(&[
            ("s", 21, None),
            ("f", 700, None),
            ("i", 1186, None),
            ("a", 1007, Some(23)),
        ]);
        let list = ListArray::from_iter_primitive::<Int32Type, _, _>(vec![
            Some(vec![Some(1), None]),
            None,
        ]);
        let rows = encode(
            &t,
            vec![
                Arc::new(Int16Array::from(vec![Some(-3), None])),
                Arc::new(Float32Array::from(vec![Some(0.1f32), Some(f32::NAN)])),
                Arc::new(IntervalMonthDayNanoArray::from(vec![
                    Some(IntervalMonthDayNano::new(14, 3, 4_500_000_000)),
                    None,
                ])),
                Arc::new(list),
            ],
        )
        .unwrap();
        assert_eq!(rows.schema().field(0).name(), "s");
        assert_eq!(
            rows.column(0)
                .as_primitive::<arrow::datatypes::Int64Type>()
                .value(0),
            -3
        );
        assert!(rows.column(0).is_null(1));
        let floats = rows
            .column(1)
            .as_primitive::<arrow::datatypes::Float64Type>();
        assert_eq!(floats.value(0), f64::from(0.1f32), "float4 widens exactly");
        assert!(floats.value(1).is_nan());
        let text = |c: usize| rows.column(c).as_string::<i32>().clone();
        assert_eq!(text(2).value(0), "P1Y2M3DT4.5S");
        assert!(text(2).is_null(1));
        assert_eq!(text(3).value(0), "[1,null]");
        assert!(text(3).is_null(1), "a NULL array stays NULL");
    }

    #[test]
    fn exact_arrays_become_json_objects() {
        let mut t = table(&[("a", 1007, Some(23))]);
        t.columns[0].array_form = crate::types::ArrayForm::Exact;
        assert_eq!(bigquery_type(&t.columns[0]), BigQueryType::Json);
        let mut builder = crate::types::values::ColumnBuilder::new(&t.columns[0], 2);
        builder.append_text(b"[0:1][1:2]={{1,2},{3,NULL}}").unwrap();
        builder.append_null();
        let rows = encode(&t, vec![builder.finish().unwrap()]).unwrap();
        let text = rows.column(0).as_string::<i32>();
        assert_eq!(
            text.value(0),
            r#"{"dims":[2,2],"lower_bounds":[0,1],"elements":[1,2,3,null]}"#
        );
        assert!(text.is_null(1), "a NULL array stays NULL");
    }

    #[test]
    fn values_outside_bigquery_ranges_are_refused_naming_the_column() {
        let t = table(&[("d", 1082, None)]);
        assert!(encode(
            &t,
            vec![Arc::new(Date32Array::from(vec![MIN_DATE, MAX_DATE]))]
        )
        .is_ok());
        let error = encode(&t, vec![Arc::new(Date32Array::from(vec![i32::MAX]))]).unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Data);
        assert!(error.message().contains("\"d\" of public.t"), "{error}");
        let t = table(&[("t", 1083, None)]);
        let error = encode(
            &t,
            vec![Arc::new(Time64MicrosecondArray::from(vec![DAY_MICROS]))],
        )
        .unwrap_err();
        assert!(error.message().contains("24:00:00"), "{error}");
        let t = table(&[("ts", 1184, None)]);
        let stamps = TimestampMicrosecondArray::from(vec![MAX_TIMESTAMP + 1]).with_timezone("UTC");
        assert!(encode(&t, vec![Arc::new(stamps)]).is_err());
    }

    #[test]
    fn text_columns_pass_unchanged() {
        let t = table(&[("j", 3802, None)]);
        let rows = encode(&t, vec![Arc::new(StringArray::from(vec!["{\"a\": 1}"]))]).unwrap();
        assert_eq!(rows.column(0).as_string::<i32>().value(0), "{\"a\": 1}");
    }
}
