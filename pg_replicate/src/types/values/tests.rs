//! End-to-end tests of [`ColumnBuilder`]: every mapping decoded from binary
//! inputs built by hand from the documented formats and from the text forms
//! Postgres prints, checking that both give identical Arrow arrays.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BinaryArray, BooleanArray, Date32Array, Decimal128Array,
    FixedSizeBinaryArray, Float32Array, Float64Array, Int16Array, Int32Array, Int64Array,
    IntervalMonthDayNanoArray, StringArray, Time64MicrosecondArray, TimestampMicrosecondArray,
    UInt32Array,
};
use arrow::datatypes::{DataType, IntervalMonthDayNano};

use super::mapping::tests::{column, numeric_typmod};
use super::numeric::numeric_binary;
use super::*;
use crate::types::table::ColumnSchema;

/// One value: its binary COPY form (None = NULL) and its text form.
pub(super) type Case<'a> = (Option<Vec<u8>>, Option<&'a str>);

/// Decodes the cases both ways, checks that the arrays are equal and have
/// the field's type, and returns the array.
pub(super) fn same(column: &ColumnSchema, cases: &[Case<'_>]) -> ArrayRef {
    let mut builder = ColumnBuilder::new(column, 2);
    assert_eq!(builder.data_type(), arrow_field(column).data_type());
    for (binary, _) in cases {
        match binary {
            Some(v) => builder.append_binary(v).unwrap(),
            None => builder.append_null(),
        }
    }
    assert_eq!(builder.len(), cases.len());
    let from_binary = builder.finish().unwrap();
    assert!(builder.is_empty());
    for (_, text) in cases {
        match text {
            Some(v) => builder.append_text(v.as_bytes()).unwrap(),
            None => builder.append_null(),
        }
    }
    let from_text = builder.finish().unwrap();
    assert_eq!(from_binary.data_type(), builder.data_type());
    assert_eq!(
        &from_binary, &from_text,
        "binary and text decode differently"
    );
    from_binary
}

pub(super) fn bin(bytes: impl AsRef<[u8]>) -> Option<Vec<u8>> {
    Some(bytes.as_ref().to_vec())
}

fn scalar(oid: u32, modifier: i32, name: &str) -> ColumnSchema {
    column(oid, modifier, name, None)
}

#[test]
fn booleans() {
    let a = same(
        &scalar(16, -1, "boolean"),
        &[(bin([1]), Some("t")), (bin([0]), Some("f")), (None, None)],
    );
    let a: &BooleanArray = a.as_boolean();
    assert_eq!(
        a.iter().collect::<Vec<_>>(),
        [Some(true), Some(false), None]
    );
}

#[test]
fn integers_and_oid() {
    let a = same(
        &scalar(21, -1, "smallint"),
        &[
            (bin(i16::MIN.to_be_bytes()), Some("-32768")),
            (bin(i16::MAX.to_be_bytes()), Some("32767")),
            (None, None),
        ],
    );
    let a: &Int16Array = a.as_primitive();
    assert_eq!(
        a.iter().collect::<Vec<_>>(),
        [Some(i16::MIN), Some(i16::MAX), None]
    );

    let a = same(
        &scalar(23, -1, "integer"),
        &[
            (bin(i32::MIN.to_be_bytes()), Some("-2147483648")),
            (bin(i32::MAX.to_be_bytes()), Some("2147483647")),
            (bin(0i32.to_be_bytes()), Some("0")),
        ],
    );
    let a: &Int32Array = a.as_primitive();
    assert_eq!(a.values().as_ref(), [i32::MIN, i32::MAX, 0]);

    let a = same(
        &scalar(20, -1, "bigint"),
        &[
            (bin(i64::MIN.to_be_bytes()), Some("-9223372036854775808")),
            (bin(i64::MAX.to_be_bytes()), Some("9223372036854775807")),
            (bin((-1i64).to_be_bytes()), Some("-1")),
        ],
    );
    let a: &Int64Array = a.as_primitive();
    assert_eq!(a.values().as_ref(), [i64::MIN, i64::MAX, -1]);

    let a = same(
        &scalar(26, -1, "oid"),
        &[
            (bin(0u32.to_be_bytes()), Some("0")),
            (bin(u32::MAX.to_be_bytes()), Some("4294967295")),
        ],
    );
    let a: &UInt32Array = a.as_primitive();
    assert_eq!(a.values().as_ref(), [0, u32::MAX]);
}

#[test]
fn floats_keep_nan_infinity_and_negative_zero() {
    let values = [
        (f32::NAN, "NaN"),
        (f32::INFINITY, "Infinity"),
        (f32::NEG_INFINITY, "-Infinity"),
        (-0.0, "-0"),
        (f32::MAX, "3.4028235e+38"),
        (f32::from_bits(1), "1e-45"),
        (0.1, "0.1"),
    ];
    let cases: Vec<Case> = values
        .iter()
        .map(|(v, t)| (bin(v.to_be_bytes()), Some(*t)))
        .collect();
    let a = same(&scalar(700, -1, "real"), &cases);
    let a: &Float32Array = a.as_primitive();
    for (got, (want, _)) in a.values().iter().zip(values) {
        assert_eq!(got.to_bits(), want.to_bits());
    }

    let values = [
        (f64::NAN, "NaN"),
        (f64::INFINITY, "Infinity"),
        (f64::NEG_INFINITY, "-Infinity"),
        (-0.0, "-0"),
        (f64::MAX, "1.7976931348623157e+308"),
        (5e-324, "5e-324"),
        (0.1, "0.1"),
        (123456.789, "123456.789"),
    ];
    let cases: Vec<Case> = values
        .iter()
        .map(|(v, t)| (bin(v.to_be_bytes()), Some(*t)))
        .collect();
    let a = same(&scalar(701, -1, "double precision"), &cases);
    let a: &Float64Array = a.as_primitive();
    for (got, (want, _)) in a.values().iter().zip(values) {
        assert_eq!(got.to_bits(), want.to_bits());
    }
}

#[test]
fn decimals() {
    let c = scalar(1700, numeric_typmod(12, 2), "numeric(12,2)");
    let a = same(
        &c,
        &[
            (bin(numeric_binary(0, 0, 2, &[1234, 5600])), Some("1234.56")),
            (bin(numeric_binary(0, 0x4000, 2, &[1])), Some("-1.00")),
            (bin(numeric_binary(-1, 0, 2, &[100])), Some("0.01")),
            (bin(numeric_binary(0, 0, 2, &[])), Some("0.00")),
            (None, None),
        ],
    );
    let a: &Decimal128Array = a.as_primitive();
    assert_eq!(a.data_type(), &DataType::Decimal128(12, 2));
    assert_eq!(
        a.iter().collect::<Vec<_>>(),
        [Some(123456), Some(-100), Some(1), Some(0), None]
    );

    let c = scalar(1700, numeric_typmod(38, 0), "numeric(38,0)");
    let digits = [99, 9999, 9999, 9999, 9999, 9999, 9999, 9999, 9999, 9999];
    let a = same(
        &c,
        &[(
            bin(numeric_binary(9, 0, 0, &digits)),
            Some("99999999999999999999999999999999999999"),
        )],
    );
    let a: &Decimal128Array = a.as_primitive();
    assert_eq!(a.value(0), 10i128.pow(38) - 1);
}

#[test]
fn decimal_nan_is_refused_with_a_clear_message() {
    let c = scalar(1700, numeric_typmod(12, 2), "numeric(12,2)");
    let mut b = ColumnBuilder::new(&c, 1);
    let e = b
        .append_binary(&numeric_binary(0, 0xC000, 0, &[]))
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "a value of Postgres type numeric(12,2) cannot be stored in Arrow Decimal128(12, 2): \
         numeric NaN is not a decimal number"
    );
    let e = b.append_text(b"NaN").unwrap_err();
    assert!(matches!(e, ValueError::Unrepresentable { .. }), "{e}");
    let e = b.append_text(b"Infinity").unwrap_err();
    assert!(e.to_string().contains("Infinity"), "{e}");
    // 1.234 would be rounded.
    assert!(b.append_text(b"1.234").is_err());
    assert!(b.is_empty());
}

#[test]
fn unconstrained_numeric_stays_exact_text() {
    for (modifier, name) in [(-1, "numeric"), (numeric_typmod(50, 10), "numeric(50,10)")] {
        let c = scalar(1700, modifier, name);
        assert_eq!(
            copy_select_expr(&c),
            "CASE WHEN num_nulls(\"c\") = 0 THEN format('%s', \"c\") END"
        );
        let texts = [
            "NaN",
            "Infinity",
            "-Infinity",
            "123.4500",
            "0.000000000000000000000000000000000000000001",
        ];
        let cases: Vec<Case> = texts.iter().map(|t| (bin(t), Some(*t))).collect();
        let a = same(&c, &cases);
        let a: &StringArray = a.as_string();
        assert_eq!(a.iter().flatten().collect::<Vec<_>>(), texts);
    }
}

#[test]
fn strings() {
    for (oid, name) in [
        (25, "text"),
        (1043, "character varying(10)"),
        (1042, "character(5)"),
        (19, "name"),
    ] {
        let c = scalar(oid, -1, name);
        assert_eq!(copy_select_expr(&c), "\"c\"");
        let texts = ["héllo ✓", "ab   ", "", "with\nnewline\tand \\ backslash"];
        let mut cases: Vec<Case> = texts.iter().map(|t| (bin(t), Some(*t))).collect();
        cases.push((None, None));
        let a = same(&c, &cases);
        let a: &StringArray = a.as_string();
        assert_eq!(a.value(1), "ab   ");
        assert!(a.is_null(4));

        // Text is checked as UTF-8 once per batch, when it is finished: an
        // invalid value fails the batch, also one cut inside a character
        // whose bytes the next value completes.
        let mut b = ColumnBuilder::new(&c, 1);
        b.append_binary(b"fine").unwrap();
        b.append_binary(b"\xff\xfe").unwrap();
        let e = b.finish().unwrap_err();
        assert!(
            matches!(
                e,
                ValueError::Malformed {
                    format: Format::Binary,
                    ..
                }
            ),
            "{e}"
        );
        assert!(e.to_string().contains("UTF-8"), "{e}");
        b.append_text(b"h\xc3").unwrap();
        b.append_text(b"\xa9llo").unwrap();
        let e = b.finish().unwrap_err();
        assert!(
            matches!(
                e,
                ValueError::Malformed {
                    format: Format::Text,
                    ..
                }
            ),
            "{e}"
        );
        // The builder starts over after a failed batch.
        b.append_text("héllo".as_bytes()).unwrap();
        let a = b.finish().unwrap();
        assert_eq!(a.as_string::<i32>().value(0), "héllo");
    }
}

#[test]
fn char_type() {
    let a = same(
        &scalar(18, -1, "\"char\""),
        &[
            (bin(b"a"), Some("a")),
            (bin([0xFF]), Some("\\377")),
            (bin([0]), Some("")),
            (None, None),
        ],
    );
    let a: &StringArray = a.as_string();
    assert_eq!(
        a.iter().collect::<Vec<_>>(),
        [Some("a"), Some("\\377"), Some(""), None]
    );
}

#[test]
fn bytea() {
    let a = same(
        &scalar(17, -1, "bytea"),
        &[
            (bin([0u8, 1, 255, b'\\']), Some("\\x0001ff5c")),
            (bin([]), Some("\\x")),
            (None, None),
        ],
    );
    let a: &BinaryArray = a.as_binary();
    assert_eq!(a.value(0), [0, 1, 255, b'\\']);
    assert_eq!(a.value(1), b"");
    let mut b = ColumnBuilder::new(&scalar(17, -1, "bytea"), 1);
    assert!(b.append_text(b"\\x0").is_err());
    b.append_text(b"\\x01").unwrap();
    let a = b.finish().unwrap();
    assert_eq!(a.as_binary::<i32>().value(0), [1]);
}

#[test]
fn dates() {
    let a = same(
        &scalar(1082, -1, "date"),
        &[
            (bin(0i32.to_be_bytes()), Some("2000-01-01")),
            (bin((-10957i32).to_be_bytes()), Some("1970-01-01")),
            (bin(i32::MAX.to_be_bytes()), Some("infinity")),
            (bin(i32::MIN.to_be_bytes()), Some("-infinity")),
            (bin((-2_451_545i32).to_be_bytes()), Some("4714-11-24 BC")),
            (
                bin((2_147_483_493i32 - 2_451_545).to_be_bytes()),
                Some("5874897-12-31"),
            ),
            (None, None),
        ],
    );
    let a: &Date32Array = a.as_primitive();
    assert_eq!(
        a.iter().collect::<Vec<_>>(),
        [
            Some(10957),
            Some(0),
            Some(i32::MAX),
            Some(-i32::MAX),
            Some(-2_440_588),
            Some(2_147_483_493 - 2_440_588),
            None
        ]
    );
}

#[test]
fn times() {
    let t = (13 * 3600 + 14 * 60 + 15) * 1_000_000i64 + 250_000;
    let a = same(
        &scalar(1083, -1, "time without time zone"),
        &[
            (bin(t.to_be_bytes()), Some("13:14:15.25")),
            (bin(0i64.to_be_bytes()), Some("00:00:00")),
            (bin(86_400_000_000i64.to_be_bytes()), Some("24:00:00")),
        ],
    );
    let a: &Time64MicrosecondArray = a.as_primitive();
    assert_eq!(a.values().as_ref(), [t, 0, 86_400_000_000]);
}

#[test]
fn timestamps() {
    const EPOCH: i64 = 946_684_800_000_000;
    let v = 86_400_000_000i64 + 3_723_000_001;
    let bc = -2_451_545i64 * 86_400_000_000;
    let a = same(
        &scalar(1114, -1, "timestamp without time zone"),
        &[
            (bin(v.to_be_bytes()), Some("2000-01-02 01:02:03.000001")),
            (bin(i64::MAX.to_be_bytes()), Some("infinity")),
            (bin(i64::MIN.to_be_bytes()), Some("-infinity")),
            (bin(bc.to_be_bytes()), Some("4714-11-24 00:00:00 BC")),
            (None, None),
        ],
    );
    let a: &TimestampMicrosecondArray = a.as_primitive();
    assert_eq!(
        a.iter().collect::<Vec<_>>(),
        [
            Some(v + EPOCH),
            Some(i64::MAX),
            Some(-i64::MAX),
            Some(bc + EPOCH),
            None
        ]
    );

    let c = scalar(1184, -1, "timestamp with time zone");
    let a = same(
        &c,
        &[
            (bin(v.to_be_bytes()), Some("2000-01-02 01:02:03.000001+00")),
            (
                bin(v.to_be_bytes()),
                Some("2000-01-02 06:32:03.000001+05:30"),
            ),
            (bin(i64::MAX.to_be_bytes()), Some("infinity")),
            (bin(bc.to_be_bytes()), Some("4714-11-24 00:00:00+00 BC")),
        ],
    );
    assert_eq!(
        a.data_type(),
        &DataType::Timestamp(arrow::datatypes::TimeUnit::Microsecond, Some("UTC".into()))
    );
    let a: &TimestampMicrosecondArray = a.as_primitive();
    assert_eq!(
        a.values().as_ref(),
        [v + EPOCH, v + EPOCH, i64::MAX, bc + EPOCH]
    );

    // 294276 AD is valid in Postgres but beyond µs since 1970 next to the
    // infinity encoding.
    let mut b = ColumnBuilder::new(&c, 1);
    let end = 9_223_371_331_200_000_000i64 - 1;
    let e = b.append_binary(&end.to_be_bytes()).unwrap_err();
    assert!(matches!(e, ValueError::Unrepresentable { .. }), "{e}");
    assert!(b.append_text(b"294276-12-31 23:59:59.999999+00").is_err());
}

#[test]
fn intervals() {
    let binary = |micros: i64, days: i32, months: i32| {
        let mut v = micros.to_be_bytes().to_vec();
        v.extend_from_slice(&days.to_be_bytes());
        v.extend_from_slice(&months.to_be_bytes());
        Some(v)
    };
    let time = (4 * 3600 + 5 * 60 + 6) * 1_000_000i64 + 500_000;
    let a = same(
        &scalar(1186, -1, "interval"),
        &[
            (binary(time, 3, 14), Some("P1Y2M3DT4H5M6.5S")),
            (binary(-time, 3, -14), Some("P-1Y-2M3DT-4H-5M-6.5S")),
            (binary(0, 0, 0), Some("PT0S")),
            (None, None),
        ],
    );
    let a: &IntervalMonthDayNanoArray = a.as_primitive();
    assert_eq!(
        a.iter().collect::<Vec<_>>(),
        [
            Some(IntervalMonthDayNano::new(14, 3, time * 1000)),
            Some(IntervalMonthDayNano::new(-14, 3, -time * 1000)),
            Some(IntervalMonthDayNano::new(0, 0, 0)),
            None
        ]
    );
}

#[test]
fn uuids() {
    let bytes: [u8; 16] = [
        0xa0, 0xee, 0xbc, 0x99, 0x9c, 0x0b, 0x4e, 0xf8, 0xbb, 0x6d, 0x6b, 0xb9, 0xbd, 0x38, 0x0a,
        0x11,
    ];
    let c = scalar(2950, -1, "uuid");
    let a = same(
        &c,
        &[
            (bin(bytes), Some("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11")),
            (None, None),
        ],
    );
    let a: &FixedSizeBinaryArray = a.as_fixed_size_binary();
    assert_eq!(a.value(0), bytes);
    assert!(a.is_null(1));
    assert!(ColumnBuilder::new(&c, 1)
        .append_binary(&bytes[..15])
        .is_err());
}

#[test]
fn json_and_jsonb_travel_in_their_binary_forms() {
    let text = "{\"a\": [1, 2], \"é\": null}";
    // json's binary form is its text.
    let c = scalar(114, -1, "json");
    assert_eq!(copy_select_expr(&c), "\"c\"");
    let a = same(&c, &[(bin(text), Some(text)), (None, None)]);
    assert_eq!(a.as_string::<i32>().value(0), text);
    assert!(a.is_null(1));

    // jsonb's is a version byte, then the same text as its output function.
    let c = scalar(3802, -1, "jsonb");
    assert_eq!(copy_select_expr(&c), "\"c\"");
    let mut binary = vec![1];
    binary.extend_from_slice(text.as_bytes());
    let a = same(&c, &[(bin(binary), Some(text)), (None, None)]);
    assert_eq!(a.as_string::<i32>().value(0), text);
    assert!(a.is_null(1));
    assert_eq!(a.data_type(), &DataType::Utf8);

    // Another version, an empty value or bytes that are not UTF-8 fail.
    let mut b = ColumnBuilder::new(&c, 1);
    assert!(b.append_binary(b"\x02{}").is_err());
    assert!(b.append_binary(b"").is_err());
    b.append_binary(b"\x01\"\xff\"").unwrap();
    assert!(b.finish().is_err());
}

#[test]
fn text_form_types() {
    let cases = [
        (142, "xml", "<a>b</a>"),
        (869, "inet", "192.168.0.1/24"),
        (650, "cidr", "10.0.0.0/8"),
        (829, "macaddr", "08:00:2b:01:02:03"),
        (774, "macaddr8", "08:00:2b:01:02:03:04:05"),
        (790, "money", "$1,234.56"),
        (1560, "bit(3)", "101"),
        (1562, "bit varying", "10"),
        (1266, "time with time zone", "12:00:00+02"),
        (3904, "int4range", "[1,10)"),
        (4451, "int4multirange", "{[1,3),[5,7)}"),
        (600, "point", "(1,2)"),
        (91_234, "mood", "happy"),
    ];
    for (oid, name, text) in cases {
        let c = scalar(oid, -1, name);
        assert_eq!(
            copy_select_expr(&c),
            "CASE WHEN num_nulls(\"c\") = 0 THEN format('%s', \"c\") END"
        );
        let f = arrow_field(&c);
        assert_eq!(f.metadata()[PG_TYPE_KEY], name);
        let a = same(&c, &[(bin(text), Some(text)), (None, None)]);
        assert_eq!(a.as_string::<i32>().value(0), text);
    }
}

#[test]
fn errors_never_carry_the_value() {
    let secret = "secret-value-0123456789";
    for (oid, name) in [
        (23, "integer"),
        (1082, "date"),
        (1184, "timestamptz"),
        (1186, "interval"),
        (2950, "uuid"),
        (16, "boolean"),
    ] {
        let mut b = ColumnBuilder::new(&scalar(oid, -1, name), 1);
        let e = b.append_text(secret.as_bytes()).unwrap_err();
        let message = format!("{e} {e:?}");
        assert!(!message.contains("secret"), "{message}");
        assert!(message.contains(name), "{message}");
        let e = b.append_binary(secret.as_bytes()).unwrap_err();
        assert!(!format!("{e} {e:?}").contains("secret"));
    }
}

#[test]
fn finish_reuse_and_size_estimate() {
    let mut b = ColumnBuilder::new(&scalar(25, -1, "text"), 0);
    assert!(b.is_empty());
    assert_eq!(b.approx_bytes(), 0);
    for _ in 0..100 {
        b.append_text(b"0123456789").unwrap();
    }
    let bytes = b.approx_bytes();
    assert!((1000..2000).contains(&bytes), "{bytes}");
    assert_eq!(b.finish().unwrap().len(), 100);
    assert_eq!(b.approx_bytes(), 0);
    b.append_null();
    let a = b.finish().unwrap();
    assert_eq!(a.len(), 1);
    assert!(a.is_null(0));

    let mut b = ColumnBuilder::new(&column(1016, -1, "bigint[]", Some(20)), 0);
    b.append_text(b"{1,2,3,4}").unwrap();
    assert!(b.approx_bytes() >= 32);
    let array: Arc<dyn Array> = b.finish().unwrap();
    assert_eq!(array.len(), 1);
    assert_eq!(b.approx_bytes(), 0);
}
