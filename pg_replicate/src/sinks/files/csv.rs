//! Data file rows as CSV. Pure: no I/O.
//!
//! Postgres' CSV conventions, which BigQuery, Snowflake, DuckDB and
//! Postgres' own `COPY … (FORMAT csv)` load as they are: a header line;
//! NULL is an empty unquoted field and an empty text is `""`; a field
//! holding a comma, a quote or a line break is quoted, quotes doubled.
//! Values: text as it is; numbers in their exact decimal form (floats as
//! their shortest round-trip text, `NaN`, `Infinity`, `-Infinity`); dates,
//! times and timestamps in ISO 8601 (timestamps with time zone in UTC,
//! `Z`); bytea as `\x` and hex; arrays and composite values as JSON.

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Field};

use crate::sinks::stdout::json::{write_hex, write_value};

/// Appends the header line of `batch`'s columns to `out`.
pub(super) fn write_header(fields: &[std::sync::Arc<Field>], out: &mut Vec<u8>) {
    for (i, field) in fields.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_field(out, field.name().as_bytes());
    }
    out.extend_from_slice(b"\r\n");
}

/// Appends every row of `batch` to `out`, one line each.
pub(super) fn write_rows(batch: &RecordBatch, out: &mut Vec<u8>) {
    let schema = batch.schema();
    let mut cell = Vec::with_capacity(64);
    for row in 0..batch.num_rows() {
        for (i, (field, column)) in schema.fields().iter().zip(batch.columns()).enumerate() {
            if i > 0 {
                out.push(b',');
            }
            if column.is_null(row) {
                continue;
            }
            cell.clear();
            write_cell(&mut cell, field, column.as_ref(), row);
            write_field(out, &cell);
        }
        out.extend_from_slice(b"\r\n");
    }
}

/// One non-NULL value as its CSV text (before quoting).
fn write_cell(cell: &mut Vec<u8>, field: &Field, array: &dyn Array, row: usize) {
    match array.data_type() {
        DataType::Utf8 => cell.extend_from_slice(array.as_string::<i32>().value(row).as_bytes()),
        DataType::Binary => {
            cell.extend_from_slice(b"\\x");
            write_hex(cell, array.as_binary::<i32>().value(row));
        }
        DataType::List(_) | DataType::Struct(_) => write_value(cell, field, array, row),
        _ => {
            // Scalars: their JSON form without the quotes of a JSON string
            // (none of these forms contains a quote or a backslash).
            write_value(cell, field, array, row);
            if cell.len() >= 2 && cell[0] == b'"' && cell[cell.len() - 1] == b'"' {
                cell.pop();
                cell.remove(0);
            }
        }
    }
}

/// Appends `value` as a non-NULL field, quoted when it must be.
fn write_field(out: &mut Vec<u8>, value: &[u8]) {
    let quote = value.is_empty()
        || value
            .iter()
            .any(|&b| matches!(b, b',' | b'"' | b'\n' | b'\r'));
    if !quote {
        out.extend_from_slice(value);
        return;
    }
    out.push(b'"');
    for &b in value {
        if b == b'"' {
            out.push(b'"');
        }
        out.push(b);
    }
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{BinaryArray, Float64Array, Int64Array, ListArray, StringArray};
    use arrow::datatypes::{Int64Type, Schema};

    use super::*;

    #[test]
    fn nulls_empty_texts_quotes_and_line_breaks_stay_apart() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("t", DataType::Utf8, true),
            Field::new("n", DataType::Int64, true),
            Field::new("f", DataType::Float64, true),
            Field::new("b", DataType::Binary, true),
        ]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(StringArray::from(vec![
                    Some(""),
                    None,
                    Some("a,\"b\"\nc"),
                    Some("plain"),
                ])),
                Arc::new(Int64Array::from(vec![
                    Some(1),
                    None,
                    Some(-3),
                    Some(i64::MAX),
                ])),
                Arc::new(Float64Array::from(vec![
                    Some(0.1),
                    Some(f64::NAN),
                    Some(f64::NEG_INFINITY),
                    None,
                ])),
                Arc::new(BinaryArray::from(vec![
                    Some(&b"\x00\xff"[..]),
                    None,
                    Some(&b""[..]),
                    None,
                ])),
            ],
        )
        .unwrap();
        let mut out = Vec::new();
        write_header(schema.fields(), &mut out);
        write_rows(&batch, &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "t,n,f,b\r\n\
             \"\",1,0.1,\\x00ff\r\n\
             ,,NaN,\r\n\
             \"a,\"\"b\"\"\nc\",-3,-Infinity,\\x\r\n\
             plain,9223372036854775807,,\r\n"
        );
    }

    #[test]
    fn arrays_are_json() {
        let list = ListArray::from_iter_primitive::<Int64Type, _, _>(vec![
            Some(vec![Some(1), None]),
            Some(vec![]),
        ]);
        let schema = Arc::new(Schema::new(vec![Field::new(
            "a",
            list.data_type().clone(),
            true,
        )]));
        let batch = RecordBatch::try_new(schema, vec![Arc::new(list)]).unwrap();
        let mut out = Vec::new();
        write_rows(&batch, &mut out);
        assert_eq!(String::from_utf8(out).unwrap(), "\"[1,null]\"\r\n[]\r\n");
    }
}
