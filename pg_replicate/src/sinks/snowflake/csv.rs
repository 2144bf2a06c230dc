//! Arrow values as the CSV text Snowflake loads (`COPY INTO` a load table
//! of VARCHAR columns, then cast by [`SnowflakeType::cast`]). Pure: no I/O.
//!
//! The format (`FIELD_OPTIONALLY_ENCLOSED_BY = '"'`, `NULL_IF = ('\N')`,
//! `EMPTY_FIELD_AS_NULL = FALSE`, `ESCAPE_UNENCLOSED_FIELD = NONE`, see
//! [`super::schema::copy_into_sql`]):
//!
//! - NULL is `\N`, unquoted; every other value is quoted, quotes doubled;
//! - VARCHAR and VARIANT values start with one extra character (`x`) that
//!   the cast strips, so a text whose value is `\N` stays text;
//! - numbers in their exact decimal form, floats as their shortest
//!   round-trip text or `NaN`, `inf`, `-inf`; BINARY as hex;
//! - dates, times and timestamps in ISO form; TIMESTAMP_TZ with `+00:00`.
//!
//! Values Snowflake cannot hold are refused with an error naming the
//! table and column (never the value): infinite dates and timestamps,
//! years outside 1–9999, and the time `24:00:00`.

use arrow::array::{
    Array, BinaryArray, BooleanArray, Date32Array, Decimal128Array, FixedSizeBinaryArray,
    Float32Array, Float64Array, Int16Array, Int32Array, Int64Array, IntervalMonthDayNanoArray,
    StringArray, Time64MicrosecondArray, TimestampMicrosecondArray, UInt32Array, UInt64Array,
    UInt8Array,
};
use arrow::datatypes::{DataType, Field};

use super::schema::SnowflakeType;
use crate::sinks::stdout::json::{
    decimal_to_string, write_date, write_hex, write_interval, write_time, write_timestamp,
    write_uuid, write_value,
};
use crate::types::TableName;
use crate::{Error, ErrorKind, Result};

/// The first day Snowflake dates hold (0001-01-01), in days since 1970.
const FIRST_DAY: i32 = -719_162;
/// The last day (9999-12-31).
const LAST_DAY: i32 = 2_932_896;
const MICROS_PER_DAY: i64 = 86_400_000_000;

/// One column of a CSV file: the values and the Snowflake type they are
/// written for.
pub struct CsvColumn<'a> {
    /// The column's name, for errors.
    pub name: &'a str,
    /// The type the load casts the text to.
    pub ty: SnowflakeType,
    /// The Arrow field (its metadata names the Postgres type).
    pub field: &'a Field,
    /// The values.
    pub values: &'a dyn Array,
}

/// Appends `rows` rows of `columns` to `out`, one CSV line each.
pub fn write_rows(
    table: &TableName,
    columns: &[CsvColumn<'_>],
    rows: usize,
    out: &mut Vec<u8>,
) -> Result<()> {
    let mut cell = Vec::with_capacity(64);
    for row in 0..rows {
        for (i, column) in columns.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            if column.values.is_null(row) {
                out.extend_from_slice(b"\\N");
                continue;
            }
            cell.clear();
            write_cell(&mut cell, column, row).map_err(|problem| {
                Error::new(
                    ErrorKind::Data,
                    format!(
                        "a value of column {:?} of {table} cannot be stored in Snowflake {}: {problem}; \
                         leave the column out of the publication (column list) or change the value",
                        column.name, column.ty
                    ),
                )
            })?;
            out.push(b'"');
            for &b in &cell {
                if b == b'"' {
                    out.push(b'"');
                }
                out.push(b);
            }
            out.push(b'"');
        }
        out.push(b'\n');
    }
    Ok(())
}

fn downcast<T: 'static>(array: &dyn Array) -> std::result::Result<&T, &'static str> {
    array
        .as_any()
        .downcast_ref::<T>()
        .ok_or("its Arrow array has an unexpected type")
}

fn write_cell(
    out: &mut Vec<u8>,
    column: &CsvColumn<'_>,
    row: usize,
) -> std::result::Result<(), &'static str> {
    let values = column.values;
    let text_like = matches!(column.ty, SnowflakeType::Varchar | SnowflakeType::Variant);
    if text_like {
        out.push(b'x');
    }
    match values.data_type() {
        DataType::Boolean => {
            let v = downcast::<BooleanArray>(values)?.value(row);
            out.extend_from_slice(if v { b"TRUE" } else { b"FALSE" });
        }
        DataType::Int16 => int(out, downcast::<Int16Array>(values)?.value(row)),
        DataType::Int32 => int(out, downcast::<Int32Array>(values)?.value(row)),
        DataType::Int64 => int(out, downcast::<Int64Array>(values)?.value(row)),
        DataType::UInt8 => int(out, downcast::<UInt8Array>(values)?.value(row)),
        DataType::UInt32 => int(out, downcast::<UInt32Array>(values)?.value(row)),
        DataType::UInt64 => int(out, downcast::<UInt64Array>(values)?.value(row)),
        DataType::Float32 => float(out, downcast::<Float32Array>(values)?.value(row)),
        DataType::Float64 => float(out, downcast::<Float64Array>(values)?.value(row)),
        DataType::Decimal128(_, scale) => {
            let v = downcast::<Decimal128Array>(values)?.value(row);
            out.extend_from_slice(decimal_to_string(v, *scale).as_bytes());
        }
        DataType::Utf8 => {
            out.extend_from_slice(downcast::<StringArray>(values)?.value(row).as_bytes());
        }
        DataType::Binary => {
            write_hex(out, downcast::<BinaryArray>(values)?.value(row));
        }
        DataType::FixedSizeBinary(16) => {
            write_uuid(out, downcast::<FixedSizeBinaryArray>(values)?.value(row));
        }
        DataType::Date32 => {
            let days = downcast::<Date32Array>(values)?.value(row);
            if !(FIRST_DAY..=LAST_DAY).contains(&days) {
                return Err(out_of_range(days == i32::MAX || days == -i32::MAX));
            }
            write_date(out, days);
        }
        DataType::Time64(_) => {
            let micros = downcast::<Time64MicrosecondArray>(values)?.value(row);
            if micros >= MICROS_PER_DAY {
                return Err("Snowflake TIME ends before 24:00:00");
            }
            write_time(out, micros);
        }
        DataType::Timestamp(_, zone) => {
            let micros = downcast::<TimestampMicrosecondArray>(values)?.value(row);
            let first = i64::from(FIRST_DAY) * MICROS_PER_DAY;
            let end = (i64::from(LAST_DAY) + 1) * MICROS_PER_DAY;
            if !(first..end).contains(&micros) {
                return Err(out_of_range(micros == i64::MAX || micros == -i64::MAX));
            }
            write_timestamp(out, micros, false);
            if zone.is_some() {
                out.extend_from_slice(b"+00:00");
            }
        }
        DataType::Interval(_) => {
            let v = downcast::<IntervalMonthDayNanoArray>(values)?.value(row);
            write_interval(out, v.months, v.days, v.nanoseconds);
        }
        DataType::List(_) | DataType::Struct(_) => {
            write_value(out, column.field, values, row);
        }
        _ => return Err("its Arrow type has no Snowflake form"),
    }
    Ok(())
}

fn out_of_range(infinite: bool) -> &'static str {
    if infinite {
        "Snowflake has no infinity"
    } else {
        "the year is outside 1-9999"
    }
}

fn int<T: itoa::Integer>(out: &mut Vec<u8>, value: T) {
    out.extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
}

fn float<F: ryu::Float + Into<f64>>(out: &mut Vec<u8>, value: F) {
    let wide: f64 = value.into();
    if wide.is_nan() {
        out.extend_from_slice(b"NaN");
    } else if wide.is_infinite() {
        out.extend_from_slice(if wide > 0.0 { b"inf" } else { b"-inf" });
    } else {
        out.extend_from_slice(ryu::Buffer::new().format_finite(value).as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{ArrayRef, ListArray};
    use arrow::datatypes::{Int32Type, IntervalMonthDayNano};

    use super::*;

    fn csv(columns: Vec<(SnowflakeType, ArrayRef)>) -> Result<String> {
        let fields: Vec<Field> = columns
            .iter()
            .map(|(_, a)| Field::new("c", a.data_type().clone(), true))
            .collect();
        let cols: Vec<CsvColumn<'_>> = columns
            .iter()
            .zip(&fields)
            .map(|((ty, a), field)| CsvColumn {
                name: "c",
                ty: *ty,
                field,
                values: a.as_ref(),
            })
            .collect();
        let mut out = Vec::new();
        let rows = columns.first().map_or(0, |(_, a)| a.len());
        write_rows(&TableName::new("public", "t"), &cols, rows, &mut out)?;
        Ok(String::from_utf8(out).unwrap())
    }

    #[test]
    fn values_are_quoted_text_nulls_bare_and_text_prefixed() {
        let text: ArrayRef = Arc::new(StringArray::from(vec![
            Some("a\"b,\nc"),
            Some("\\N"),
            Some(""),
            None,
        ]));
        let ints: ArrayRef = Arc::new(Int64Array::from(vec![Some(-5), Some(0), None, Some(7)]));
        let bytes: ArrayRef = Arc::new(BinaryArray::from(vec![
            Some(&[0xde, 0xad][..]),
            Some(&[][..]),
            None,
            Some(&[1][..]),
        ]));
        let out = csv(vec![
            (SnowflakeType::Varchar, text),
            (
                SnowflakeType::Number {
                    precision: 38,
                    scale: 0,
                },
                ints,
            ),
            (SnowflakeType::Binary, bytes),
        ])
        .unwrap();
        assert_eq!(
            out,
            "\"xa\"\"b,\nc\",\"-5\",\"dead\"\n\"x\\N\",\"0\",\"\"\n\"x\",\\N,\\N\n\\N,\"7\",\"01\"\n"
        );
    }

    #[test]
    fn floats_decimals_and_times_have_exact_text() {
        let floats: ArrayRef = Arc::new(Float64Array::from(vec![
            0.1,
            f64::NAN,
            f64::NEG_INFINITY,
            -0.0,
            1e300,
        ]));
        let out = csv(vec![(SnowflakeType::Float, floats)]).unwrap();
        assert_eq!(out, "\"0.1\"\n\"NaN\"\n\"-inf\"\n\"-0.0\"\n\"1e300\"\n");
        let real: ArrayRef = Arc::new(Float32Array::from(vec![1.1f32]));
        assert_eq!(
            csv(vec![(SnowflakeType::Float, real)]).unwrap(),
            "\"1.1\"\n"
        );
        let decimals: ArrayRef = Arc::new(
            Decimal128Array::from(vec![-12345, 5])
                .with_precision_and_scale(10, 3)
                .unwrap(),
        );
        let number = SnowflakeType::Number {
            precision: 10,
            scale: 3,
        };
        assert_eq!(
            csv(vec![(number, decimals)]).unwrap(),
            "\"-12.345\"\n\"0.005\"\n"
        );
        let stamps: ArrayRef =
            Arc::new(TimestampMicrosecondArray::from(vec![1_500_000, -1]).with_timezone("UTC"));
        assert_eq!(
            csv(vec![(SnowflakeType::TimestampTz, stamps)]).unwrap(),
            "\"1970-01-01T00:00:01.5+00:00\"\n\"1969-12-31T23:59:59.999999+00:00\"\n"
        );
        let interval: ArrayRef = Arc::new(IntervalMonthDayNanoArray::from(vec![
            IntervalMonthDayNano::new(14, 3, 4_500_000_000),
        ]));
        assert_eq!(
            csv(vec![(SnowflakeType::Varchar, interval)]).unwrap(),
            "\"xP1Y2M3DT4.5S\"\n"
        );
        let list: ArrayRef = Arc::new(ListArray::from_iter_primitive::<Int32Type, _, _>(vec![
            Some(vec![Some(1), None]),
        ]));
        assert_eq!(
            csv(vec![(SnowflakeType::Variant, list)]).unwrap(),
            "\"x[1,null]\"\n"
        );
    }

    #[test]
    fn values_snowflake_cannot_hold_are_refused_without_the_value() {
        let dates: ArrayRef = Arc::new(Date32Array::from(vec![i32::MAX]));
        let error = csv(vec![(SnowflakeType::Date, dates)]).unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Data);
        assert!(error.message().contains("no infinity"), "{error}");
        assert!(
            error.message().contains("column \"c\" of public.t"),
            "{error}"
        );
        let early: ArrayRef = Arc::new(Date32Array::from(vec![FIRST_DAY - 1]));
        let error = csv(vec![(SnowflakeType::Date, early)]).unwrap_err();
        assert!(error.message().contains("outside 1-9999"), "{error}");
        let midnight: ArrayRef = Arc::new(Time64MicrosecondArray::from(vec![MICROS_PER_DAY]));
        let error = csv(vec![(SnowflakeType::Time, midnight)]).unwrap_err();
        assert!(error.message().contains("24:00:00"), "{error}");
        let first: ArrayRef = Arc::new(Date32Array::from(vec![FIRST_DAY, LAST_DAY]));
        assert_eq!(
            csv(vec![(SnowflakeType::Date, first)]).unwrap(),
            "\"0001-01-01\"\n\"9999-12-31\"\n"
        );
    }
}
