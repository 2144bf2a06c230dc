//! Rows as the protocol buffers of the Storage Write API: a message
//! descriptor made from an Arrow schema, and the rows of a batch encoded
//! straight from its columns. Pure: no I/O.
//!
//! Every column is an optional field (absent = NULL), numbered from 1 in
//! column order and named like the column, so names must be valid proto
//! field names (the staging tables' positional names are). Encodings, per
//! the Arrow types of [`super::encoder`]:
//!
//! | Arrow | proto | value |
//! |---|---|---|
//! | Boolean | `bool` | |
//! | Int64 | `int64` | |
//! | Float64 | `double` | NaN and infinities included |
//! | Utf8 / Decimal128 | `string` | decimals as their exact numeral |
//! | Binary | `bytes` | |
//! | Date32 | `int32` | days since 1970-01-01 |
//! | Time64(µs) | `string` | `HH:MM:SS[.ffffff]` |
//! | Timestamp(µs) | `string` | `YYYY-MM-DDTHH:MM:SS[.ffffff]` (DATETIME) |
//! | Timestamp(µs, UTC) | `int64` | µs since 1970 (TIMESTAMP) |

use arrow::array::{
    Array, AsArray, BinaryArray, BooleanArray, Date32Array, Decimal128Array, Float64Array,
    Int64Array, RecordBatch, StringArray, Time64MicrosecondArray, TimestampMicrosecondArray,
};
use arrow::datatypes::{DataType, Schema, TimeUnit};
use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::{DescriptorProto, FieldDescriptorProto};

use crate::sinks::stdout::json::{decimal_to_string, write_time, write_timestamp};
use crate::{Error, ErrorKind, Result};

/// Name of the message type of every descriptor.
const MESSAGE_NAME: &str = "Row";

/// Whether `name` can be a proto field name.
pub fn valid_field_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The message descriptor of rows laid out as `schema`.
pub fn descriptor(schema: &Schema) -> Result<DescriptorProto> {
    let mut fields = Vec::with_capacity(schema.fields().len());
    for (i, field) in schema.fields().iter().enumerate() {
        if !valid_field_name(field.name()) {
            return Err(Error::new(
                ErrorKind::Config,
                format!(
                    "column {:?} cannot be written through the Storage Write API by this sink (its name is \
                     not a protocol buffer field name); load the table with load jobs \
                     (BackfillMethod::LoadJob)",
                    field.name()
                ),
            ));
        }
        let kind = proto_type(field.data_type()).ok_or_else(|| {
            Error::new(
                ErrorKind::Sink,
                format!(
                    "column {:?} has Arrow type {}, which the Storage Write encoder does not take (a bug in \
                     the BigQuery encoder)",
                    field.name(),
                    field.data_type()
                ),
            )
        })?;
        fields.push(FieldDescriptorProto {
            name: Some(field.name().clone()),
            number: Some(i as i32 + 1),
            label: Some(Label::Optional as i32),
            r#type: Some(kind as i32),
            ..FieldDescriptorProto::default()
        });
    }
    Ok(DescriptorProto {
        name: Some(MESSAGE_NAME.to_owned()),
        field: fields,
        ..DescriptorProto::default()
    })
}

fn proto_type(data_type: &DataType) -> Option<Type> {
    Some(match data_type {
        DataType::Boolean => Type::Bool,
        DataType::Int64 | DataType::Timestamp(TimeUnit::Microsecond, Some(_)) => Type::Int64,
        DataType::Float64 => Type::Double,
        DataType::Utf8
        | DataType::Decimal128(_, _)
        | DataType::Time64(TimeUnit::Microsecond)
        | DataType::Timestamp(TimeUnit::Microsecond, None) => Type::String,
        DataType::Binary => Type::Bytes,
        DataType::Date32 => Type::Int32,
        _ => return None,
    })
}

/// A column ready to encode.
enum Column<'a> {
    Bool(&'a BooleanArray),
    Int64(&'a Int64Array),
    Float64(&'a Float64Array),
    Text(&'a StringArray),
    Bytes(&'a BinaryArray),
    Decimal(&'a Decimal128Array, i8),
    Date(&'a Date32Array),
    Time(&'a Time64MicrosecondArray),
    Datetime(&'a TimestampMicrosecondArray),
    Timestamp(&'a TimestampMicrosecondArray),
}

fn columns(batch: &RecordBatch) -> Result<Vec<Column<'_>>> {
    batch
        .columns()
        .iter()
        .map(|array| {
            Ok(match array.data_type() {
                DataType::Boolean => Column::Bool(array.as_boolean()),
                DataType::Int64 => Column::Int64(array.as_primitive()),
                DataType::Float64 => Column::Float64(array.as_primitive()),
                DataType::Utf8 => Column::Text(array.as_string()),
                DataType::Binary => Column::Bytes(array.as_binary()),
                DataType::Decimal128(_, scale) => Column::Decimal(array.as_primitive(), *scale),
                DataType::Date32 => Column::Date(array.as_primitive()),
                DataType::Time64(TimeUnit::Microsecond) => Column::Time(array.as_primitive()),
                DataType::Timestamp(TimeUnit::Microsecond, None) => {
                    Column::Datetime(array.as_primitive())
                }
                DataType::Timestamp(TimeUnit::Microsecond, Some(_)) => {
                    Column::Timestamp(array.as_primitive())
                }
                other => {
                    return Err(Error::new(
                        ErrorKind::Sink,
                        format!("the Storage Write encoder does not take Arrow type {other}"),
                    ))
                }
            })
        })
        .collect()
}

/// Encodes every row of `batch` as one serialized message of
/// [`descriptor`]`(batch.schema())`.
pub fn encode_rows(batch: &RecordBatch) -> Result<Vec<Vec<u8>>> {
    let columns = columns(batch)?;
    let mut rows = Vec::with_capacity(batch.num_rows());
    let mut text = Vec::new();
    for row in 0..batch.num_rows() {
        let mut out = Vec::with_capacity(16 * columns.len());
        for (i, column) in columns.iter().enumerate() {
            encode_value(&mut out, &mut text, i as u32 + 1, column, row);
        }
        rows.push(out);
    }
    Ok(rows)
}

const VARINT: u32 = 0;
const FIXED64: u32 = 1;
const LENGTH_DELIMITED: u32 = 2;

fn encode_value(out: &mut Vec<u8>, text: &mut Vec<u8>, field: u32, column: &Column, row: usize) {
    let key = |out: &mut Vec<u8>, wire: u32| put_varint(out, u64::from(field << 3 | wire));
    match column {
        Column::Bool(a) if a.is_valid(row) => {
            key(out, VARINT);
            put_varint(out, u64::from(a.value(row)));
        }
        Column::Int64(a) if a.is_valid(row) => {
            key(out, VARINT);
            put_varint(out, a.value(row) as u64);
        }
        Column::Timestamp(a) if a.is_valid(row) => {
            key(out, VARINT);
            put_varint(out, a.value(row) as u64);
        }
        Column::Date(a) if a.is_valid(row) => {
            key(out, VARINT);
            // int32 is sign-extended to 64 bits on the wire.
            put_varint(out, i64::from(a.value(row)) as u64);
        }
        Column::Float64(a) if a.is_valid(row) => {
            key(out, FIXED64);
            out.extend_from_slice(&a.value(row).to_le_bytes());
        }
        Column::Text(a) if a.is_valid(row) => {
            key(out, LENGTH_DELIMITED);
            put_bytes(out, a.value(row).as_bytes());
        }
        Column::Bytes(a) if a.is_valid(row) => {
            key(out, LENGTH_DELIMITED);
            put_bytes(out, a.value(row));
        }
        Column::Decimal(a, scale) if a.is_valid(row) => {
            key(out, LENGTH_DELIMITED);
            put_bytes(out, decimal_to_string(a.value(row), *scale).as_bytes());
        }
        Column::Time(a) if a.is_valid(row) => {
            text.clear();
            write_time(text, a.value(row));
            key(out, LENGTH_DELIMITED);
            put_bytes(out, text);
        }
        Column::Datetime(a) if a.is_valid(row) => {
            text.clear();
            write_timestamp(text, a.value(row), false);
            key(out, LENGTH_DELIMITED);
            put_bytes(out, text);
        }
        _ => {}
    }
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::ArrayRef;
    use arrow::datatypes::Field;
    use prost::Message;

    use super::*;

    /// A message with the fields of the test batch, decoded by prost.
    #[derive(Clone, PartialEq, Message)]
    struct Decoded {
        #[prost(bool, optional, tag = "1")]
        flag: Option<bool>,
        #[prost(int64, optional, tag = "2")]
        int: Option<i64>,
        #[prost(double, optional, tag = "3")]
        float: Option<f64>,
        #[prost(string, optional, tag = "4")]
        text: Option<String>,
        #[prost(bytes = "vec", optional, tag = "5")]
        bytes: Option<Vec<u8>>,
        #[prost(string, optional, tag = "6")]
        decimal: Option<String>,
        #[prost(int32, optional, tag = "7")]
        date: Option<i32>,
        #[prost(string, optional, tag = "8")]
        time: Option<String>,
        #[prost(string, optional, tag = "9")]
        datetime: Option<String>,
        #[prost(int64, optional, tag = "10")]
        timestamp: Option<i64>,
    }

    fn batch() -> RecordBatch {
        let columns: Vec<(&str, ArrayRef)> = vec![
            ("flag", Arc::new(BooleanArray::from(vec![Some(true), None]))),
            ("int", Arc::new(Int64Array::from(vec![Some(-5), None]))),
            (
                "float",
                Arc::new(Float64Array::from(vec![Some(f64::NEG_INFINITY), None])),
            ),
            ("text", Arc::new(StringArray::from(vec![Some(""), None]))),
            (
                "bytes",
                Arc::new(BinaryArray::from(vec![Some(&b"\x00\xff"[..]), None])),
            ),
            (
                "decimal",
                Arc::new(
                    Decimal128Array::from(vec![Some(-12345), None])
                        .with_precision_and_scale(10, 3)
                        .unwrap(),
                ),
            ),
            (
                "date",
                Arc::new(Date32Array::from(vec![Some(-719_162), None])),
            ),
            (
                "time",
                Arc::new(Time64MicrosecondArray::from(vec![
                    Some(45_296_000_001),
                    None,
                ])),
            ),
            (
                "datetime",
                Arc::new(TimestampMicrosecondArray::from(vec![Some(-1), None])),
            ),
            (
                "timestamp",
                Arc::new(
                    TimestampMicrosecondArray::from(vec![Some(-1), None]).with_timezone("UTC"),
                ),
            ),
        ];
        let schema = Schema::new(
            columns
                .iter()
                .map(|(n, a)| Field::new(*n, a.data_type().clone(), true))
                .collect::<Vec<_>>(),
        );
        RecordBatch::try_new(
            Arc::new(schema),
            columns.into_iter().map(|(_, a)| a).collect(),
        )
        .unwrap()
    }

    #[test]
    fn rows_decode_to_the_values_they_were_made_of() {
        let batch = batch();
        let descriptor = descriptor(&batch.schema()).unwrap();
        assert_eq!(descriptor.field.len(), 10);
        assert_eq!(descriptor.field[6].r#type, Some(Type::Int32 as i32));
        let rows = encode_rows(&batch).unwrap();
        let first = Decoded::decode(rows[0].as_slice()).unwrap();
        assert_eq!(
            first,
            Decoded {
                flag: Some(true),
                int: Some(-5),
                float: Some(f64::NEG_INFINITY),
                text: Some(String::new()),
                bytes: Some(vec![0, 255]),
                decimal: Some("-12.345".into()),
                date: Some(-719_162),
                time: Some("12:34:56.000001".into()),
                datetime: Some("1969-12-31T23:59:59.999999".into()),
                timestamp: Some(-1),
            }
        );
        assert!(rows[1].is_empty(), "NULLs are absent fields");
        assert_eq!(
            Decoded::decode(rows[1].as_slice()).unwrap(),
            Decoded::default()
        );
    }

    #[test]
    fn names_that_are_not_field_names_are_refused() {
        assert!(valid_field_name("n12") && valid_field_name("_pgr_op"));
        assert!(!valid_field_name("Total amount") && !valid_field_name("1st"));
        let schema = Schema::new(vec![Field::new("a b", DataType::Int64, true)]);
        assert_eq!(descriptor(&schema).unwrap_err().kind(), ErrorKind::Config);
    }
}
