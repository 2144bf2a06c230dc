//! The encoder is the inverse of the source's binary decoder: values parsed
//! from Postgres' text forms, encoded, and decoded again give the same
//! Arrow arrays.

use arrow::array::{Array, ArrayRef, BooleanArray, UInt32Array, UInt8Array};

use super::*;
use crate::types::table::{ColumnSchema, PgType};
use crate::types::values::{column_kind, ColumnBuilder};

fn column(oid: u32, modifier: i32, element: Option<u32>, form: ArrayForm) -> ColumnSchema {
    ColumnSchema {
        name: "c".to_owned(),
        pg_type: PgType {
            oid,
            modifier,
            name: "t".to_owned(),
            element_oid: element,
        },
        nullable: true,
        identity: false,
        array_form: form,
    }
}

fn scalar(oid: u32, modifier: i32) -> ColumnSchema {
    column(oid, modifier, None, ArrayForm::Lists)
}

/// The array the decoder builds from text values (None = NULL).
fn from_text(column: &ColumnSchema, values: &[Option<&str>]) -> ArrayRef {
    let mut builder = ColumnBuilder::new(column, values.len());
    for value in values {
        match value {
            Some(v) => builder
                .append_text(v.as_bytes())
                .unwrap_or_else(|e| panic!("{v:?}: {e}")),
            None => builder.append_null(),
        }
    }
    builder.finish().unwrap()
}

/// The binary fields of every row of `array`.
fn encode(column: &ColumnSchema, array: &ArrayRef) -> Vec<Option<Vec<u8>>> {
    let encoder = ColumnEncoder::new(array.as_ref(), column_kind(column)).unwrap();
    (0..array.len())
        .map(|row| {
            let mut out = Vec::new();
            encoder.write_field(row, &mut out).unwrap();
            let len = i32::from_be_bytes(out[..4].try_into().unwrap());
            if len < 0 {
                assert_eq!(out.len(), 4);
                None
            } else {
                assert_eq!(out.len(), 4 + len as usize, "length prefix of row {row}");
                Some(out[4..].to_vec())
            }
        })
        .collect()
}

/// Text → Arrow → binary → Arrow gives the same array.
fn round_trip(column: &ColumnSchema, values: &[Option<&str>]) {
    let array = from_text(column, values);
    let fields = encode(column, &array);
    let mut builder = ColumnBuilder::new(column, values.len());
    for field in &fields {
        match field {
            Some(bytes) => builder.append_binary(bytes).unwrap(),
            None => builder.append_null(),
        }
    }
    let decoded = builder.finish().unwrap();
    assert_eq!(
        decoded.as_ref(),
        array.as_ref(),
        "type oid {}",
        column.pg_type.oid
    );
}

fn numeric_typmod(precision: i32, scale: i32) -> i32 {
    ((precision << 16) | (scale & 0x7FF)) + 4
}

#[test]
fn scalars_round_trip() {
    round_trip(&scalar(oid::BOOL, -1), &[Some("t"), Some("f"), None]);
    round_trip(
        &scalar(oid::INT2, -1),
        &[Some("-32768"), Some("32767"), None],
    );
    round_trip(&scalar(oid::INT4, -1), &[Some("-2147483648"), Some("7")]);
    round_trip(
        &scalar(oid::INT8, -1),
        &[Some("-9223372036854775808"), Some("9223372036854775807")],
    );
    round_trip(&scalar(oid::OID, -1), &[Some("4294967295"), Some("0")]);
    round_trip(
        &scalar(oid::FLOAT4, -1),
        &[Some("1.5"), Some("-Infinity"), Some("NaN")],
    );
    round_trip(
        &scalar(oid::FLOAT8, -1),
        &[Some("3.141592653589793"), Some("-0"), Some("1e-300")],
    );
    round_trip(
        &scalar(oid::TEXT, -1),
        &[Some(""), Some("héllo\nworld"), None],
    );
    round_trip(
        &scalar(oid::JSONB, -1),
        &[Some(r#"{"a": [1, null]}"#), Some("3")],
    );
    round_trip(
        &scalar(oid::CHAR, -1),
        &[Some(""), Some("a"), Some("\\377"), Some("\\200")],
    );
    round_trip(
        &scalar(oid::BYTEA, -1),
        &[Some("\\x"), Some("\\x00ff10"), None],
    );
    round_trip(
        &scalar(oid::DATE, -1),
        &[
            Some("2000-01-01"),
            Some("1970-01-01"),
            Some("4713-01-01 BC"),
            Some("5874897-12-31"),
            Some("infinity"),
            Some("-infinity"),
        ],
    );
    round_trip(
        &scalar(oid::TIME, -1),
        &[Some("00:00:00"), Some("23:59:59.999999"), Some("24:00:00")],
    );
    for ts in [oid::TIMESTAMP, oid::TIMESTAMPTZ] {
        let with_zone = ts == oid::TIMESTAMPTZ;
        let values: Vec<String> = [
            "2000-01-01 00:00:00",
            "1999-12-31 23:59:59.999999",
            "4713-01-01 00:00:00 BC",
            "294247-01-10 04:00:54.775806",
            "1970-01-01 00:00:00.000001",
        ]
        .iter()
        .map(|v| match (with_zone, v.strip_suffix(" BC")) {
            (false, _) => (*v).to_owned(),
            (true, Some(bc)) => format!("{bc}+00 BC"),
            (true, None) => format!("{v}+00"),
        })
        .collect();
        let mut cases: Vec<Option<&str>> = values.iter().map(|v| Some(v.as_str())).collect();
        cases.extend([Some("infinity"), Some("-infinity"), None]);
        round_trip(&scalar(ts, -1), &cases);
    }
    round_trip(
        &scalar(oid::INTERVAL, -1),
        &[
            Some("P1Y2M3DT4H5M6.000007S"),
            Some("PT0S"),
            Some("P-1Y-2M-3DT-4H-5M-6.000007S"),
        ],
    );
    round_trip(
        &scalar(oid::UUID, -1),
        &[Some("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"), None],
    );
    // Text-carried types are sent as their text.
    round_trip(&scalar(869, -1), &[Some("192.168.0.1/24"), None]);
}

#[test]
fn decimals_round_trip() {
    for (precision, scale) in [
        (1, 0),
        (5, 2),
        (12, 4),
        (18, 9),
        (38, 0),
        (38, 38),
        (20, 5),
        (9, 3),
    ] {
        let column = scalar(oid::NUMERIC, numeric_typmod(precision, scale));
        let int_digits = (precision - scale) as usize;
        let max_int = "9".repeat(int_digits);
        let frac = "9".repeat(scale as usize);
        let max = match (int_digits, scale) {
            (0, _) => format!("0.{frac}"),
            (_, 0) => max_int.clone(),
            _ => format!("{max_int}.{frac}"),
        };
        let negative_max = format!("-{max}");
        let small = if scale > 0 {
            format!("0.{}1", "0".repeat(scale as usize - 1))
        } else {
            "1".to_owned()
        };
        let negative_small = format!("-{small}");
        let mut cases = vec![
            Some("0"),
            Some(max.as_str()),
            Some(negative_max.as_str()),
            Some(small.as_str()),
            Some(negative_small.as_str()),
            None,
        ];
        let mid = if int_digits >= 5 && scale >= 3 {
            Some("10000.001")
        } else {
            None
        };
        if let Some(mid) = mid {
            cases.push(Some(mid));
        }
        round_trip(&column, &cases);
    }
    // Zeros inside and around the groups.
    let column = scalar(oid::NUMERIC, numeric_typmod(30, 10));
    round_trip(
        &column,
        &[
            Some("100000000.0000000001"),
            Some("-0.0001"),
            Some("10000"),
            Some("12345678901234567890.1234567890"),
        ],
    );
}

#[test]
fn numeric_groups_match_postgres() {
    // 12345.678 as numeric(10,3): digits [1, 2345, 6780], weight 1, dscale 3.
    let mut out = Vec::new();
    write_numeric(12_345_678, 3, &mut out);
    assert_eq!(out, [0, 3, 0, 1, 0, 0, 0, 3, 0, 1, 0x09, 0x29, 0x1a, 0x7c]);
    // -0.05 as numeric(4,2): digits [500], weight -1, negative, dscale 2.
    out.clear();
    write_numeric(-5, 2, &mut out);
    assert_eq!(out, [0, 1, 0xff, 0xff, 0x40, 0, 0, 2, 0x01, 0xf4]);
    // Zero keeps its display scale and no digits.
    out.clear();
    write_numeric(0, 2, &mut out);
    assert_eq!(out, [0, 0, 0, 0, 0, 0, 0, 2]);
}

#[test]
fn arrays_round_trip() {
    let lists = column(1007, -1, Some(oid::INT4), ArrayForm::Lists);
    round_trip(&lists, &[Some("{1,2,NULL}"), Some("{}"), None, Some("{7}")]);
    let texts = column(1009, -1, Some(oid::TEXT), ArrayForm::Lists);
    round_trip(&texts, &[Some(r#"{"a b",NULL,"",c}"#)]);
    let exact = column(1007, -1, Some(oid::INT4), ArrayForm::Exact);
    round_trip(
        &exact,
        &[
            Some("{{1,2},{3,NULL}}"),
            Some("[0:1]={5,6}"),
            Some("{}"),
            None,
        ],
    );
    let numerics = column(
        1231,
        numeric_typmod(6, 2),
        Some(oid::NUMERIC),
        ArrayForm::Lists,
    );
    round_trip(&numerics, &[Some("{1.50,-2.25,NULL}")]);
}

#[test]
fn array_headers_name_the_element_type() {
    let lists = column(1007, -1, Some(oid::INT4), ArrayForm::Lists);
    let array = from_text(&lists, &[Some("{1,NULL}"), Some("{}")]);
    let fields = encode(&lists, &array);
    let first = fields[0].as_ref().unwrap();
    // ndim 1, has nulls, element oid int4, size 2, lower bound 1.
    assert_eq!(
        &first[..20],
        &[0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 23, 0, 0, 0, 2, 0, 0, 0, 1]
    );
    // The empty array: no dimensions.
    assert_eq!(
        fields[1].as_ref().unwrap(),
        &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 23]
    );
    // An array of a text-carried type is sent as text[].
    let inets = column(1041, -1, Some(869), ArrayForm::Lists);
    let array = from_text(&inets, &[Some("{10.0.0.1}")]);
    let fields = encode(&inets, &array);
    assert_eq!(
        &fields[0].as_ref().unwrap()[8..12],
        &oid::TEXT.to_be_bytes()
    );
}

#[test]
fn bookkeeping_columns() {
    let ops = UInt8Array::from(vec![1, 3]);
    let rounds = UInt32Array::from(vec![4_000_000_000]);
    let flags = BooleanArray::from(vec![Some(true), None]);
    let mut out = Vec::new();
    ColumnEncoder::codes(&ops).write_field(1, &mut out).unwrap();
    ColumnEncoder::counters(&rounds)
        .write_field(0, &mut out)
        .unwrap();
    ColumnEncoder::flags(&flags)
        .write_field(0, &mut out)
        .unwrap();
    ColumnEncoder::flags(&flags)
        .write_field(1, &mut out)
        .unwrap();
    let mut expected = vec![0, 0, 0, 2, 0, 3, 0, 0, 0, 8];
    expected.extend_from_slice(&4_000_000_000i64.to_be_bytes());
    expected.extend_from_slice(&[0, 0, 0, 1, 1, 0xff, 0xff, 0xff, 0xff]);
    assert_eq!(out, expected);
}

#[test]
fn unencodable_values_are_refused() {
    assert!(char_byte("ab").is_err());
    assert!(char_byte("\\400").is_err());
    assert_eq!(char_byte("\\101"), Ok(b'A'));
    let intervals = arrow::array::IntervalMonthDayNanoArray::from(vec![
        arrow::datatypes::IntervalMonthDayNano::new(0, 0, 1_500),
    ]);
    let encoder = ColumnEncoder::new(&intervals, ColumnKind::Scalar(ScalarKind::Interval)).unwrap();
    assert!(encoder.write_field(0, &mut Vec::new()).is_err());
    let ints = arrow::array::Int32Array::from(vec![1]);
    assert_eq!(
        ColumnEncoder::new(&ints, ColumnKind::Scalar(ScalarKind::Int64)).unwrap_err(),
        MISTYPED
    );
}
