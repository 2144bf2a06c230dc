//! Lossless JSON text for Arrow values, as the stdout sink prints them.
//!
//! - integers are JSON numbers; floats are numbers, or the strings `"NaN"`,
//!   `"Infinity"`, `"-Infinity"`;
//! - numeric values (Decimal128, or numeric text) with at most 15
//!   significant digits are JSON numbers (exact in an f64); longer ones and
//!   NaN/±Infinity are strings, so no reader rounds them;
//! - `json`/`jsonb` columns are embedded as JSON, other text as strings;
//! - dates, times and timestamps are ISO 8601 strings (timestamps with time
//!   zone end in `Z`); years before 1 or after 9999 use ISO 8601's signed
//!   expanded form (year 0 is 1 BC); infinite values are `"infinity"` and
//!   `"-infinity"`;
//! - intervals are ISO 8601 durations (`P1Y2M3DT4H5M6.5S`), bytea is `"\\x…"`
//!   hex, uuid the usual 8-4-4-4-12 form, arrays JSON arrays.

use arrow::array::{
    Array, AsArray, BinaryArray, BooleanArray, Date32Array, Decimal128Array, FixedSizeBinaryArray,
    Float32Array, Float64Array, Int16Array, Int32Array, Int64Array, IntervalMonthDayNanoArray,
    ListArray, StringArray, Time64MicrosecondArray, TimestampMicrosecondArray, UInt32Array,
    UInt64Array, UInt8Array,
};
use arrow::datatypes::{DataType, Field, IntervalUnit, TimeUnit};

/// Most significant digits a decimal may have to be printed as a JSON number.
const MAX_EXACT_DIGITS: usize = 15;

/// Writes `value` as a JSON string literal.
pub fn write_str(out: &mut Vec<u8>, value: &str) {
    out.push(b'"');
    let bytes = value.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        if escape.is_empty() {
            out.extend_from_slice(format!("\\u{b:04x}").as_bytes());
        } else {
            out.extend_from_slice(escape);
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

fn pg_type(field: &Field) -> &str {
    field.metadata().get("pg.type").map_or("", String::as_str)
}

/// Writes row `row` of `array` (described by `field`) as a JSON value.
pub fn write_value(out: &mut Vec<u8>, field: &Field, array: &dyn Array, row: usize) {
    if array.is_null(row) {
        out.extend_from_slice(b"null");
        return;
    }
    match array.data_type() {
        DataType::Boolean => {
            let v = array
                .as_any()
                .downcast_ref::<BooleanArray>()
                .map(|a| a.value(row));
            out.extend_from_slice(if v == Some(true) { b"true" } else { b"false" });
        }
        DataType::Int16 => write_int(out, downcast::<Int16Array>(array).map(|a| a.value(row))),
        DataType::Int32 => write_int(out, downcast::<Int32Array>(array).map(|a| a.value(row))),
        DataType::Int64 => write_int(out, downcast::<Int64Array>(array).map(|a| a.value(row))),
        DataType::UInt8 => write_int(out, downcast::<UInt8Array>(array).map(|a| a.value(row))),
        DataType::UInt32 => write_int(out, downcast::<UInt32Array>(array).map(|a| a.value(row))),
        DataType::UInt64 => write_int(out, downcast::<UInt64Array>(array).map(|a| a.value(row))),
        DataType::Float32 => {
            if let Some(v) = downcast::<Float32Array>(array).map(|a| a.value(row)) {
                write_float(out, v);
            }
        }
        DataType::Float64 => {
            if let Some(v) = downcast::<Float64Array>(array).map(|a| a.value(row)) {
                write_float(out, v);
            }
        }
        DataType::Decimal128(_, scale) => {
            if let Some(v) = downcast::<Decimal128Array>(array).map(|a| a.value(row)) {
                write_numeric_text(out, &decimal_to_string(v, *scale));
            }
        }
        DataType::Utf8 => {
            let text = downcast::<StringArray>(array).map_or("", |a| a.value(row));
            let ty = pg_type(field);
            if ty == "json" || ty == "jsonb" {
                out.extend_from_slice(text.as_bytes());
            } else if ty == "numeric" || ty.starts_with("numeric(") {
                write_numeric_text(out, text);
            } else {
                write_str(out, text);
            }
        }
        DataType::Binary => {
            let bytes = downcast::<BinaryArray>(array).map_or(&[][..], |a| a.value(row));
            out.extend_from_slice(b"\"\\\\x");
            write_hex(out, bytes);
            out.push(b'"');
        }
        DataType::FixedSizeBinary(16) => {
            let bytes = downcast::<FixedSizeBinaryArray>(array).map_or(&[][..], |a| a.value(row));
            out.push(b'"');
            write_uuid(out, bytes);
            out.push(b'"');
        }
        DataType::Date32 => {
            if let Some(days) = downcast::<Date32Array>(array).map(|a| a.value(row)) {
                out.push(b'"');
                write_date(out, days);
                out.push(b'"');
            }
        }
        DataType::Time64(TimeUnit::Microsecond) => {
            if let Some(micros) = downcast::<Time64MicrosecondArray>(array).map(|a| a.value(row)) {
                out.push(b'"');
                write_time(out, micros);
                out.push(b'"');
            }
        }
        DataType::Timestamp(TimeUnit::Microsecond, tz) => {
            if let Some(micros) = downcast::<TimestampMicrosecondArray>(array).map(|a| a.value(row))
            {
                out.push(b'"');
                write_timestamp(out, micros, tz.is_some());
                out.push(b'"');
            }
        }
        DataType::Interval(IntervalUnit::MonthDayNano) => {
            if let Some(v) = downcast::<IntervalMonthDayNanoArray>(array).map(|a| a.value(row)) {
                out.push(b'"');
                write_interval(out, v.months, v.days, v.nanoseconds);
                out.push(b'"');
            }
        }
        DataType::List(item) => {
            if let Some(list) = downcast::<ListArray>(array) {
                let values = list.value(row);
                out.push(b'[');
                for i in 0..values.len() {
                    if i > 0 {
                        out.push(b',');
                    }
                    write_value(out, item, values.as_ref(), i);
                }
                out.push(b']');
            }
        }
        DataType::Struct(fields) => {
            let array = array.as_struct();
            out.push(b'{');
            for (i, (f, column)) in fields.iter().zip(array.columns()).enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_str(out, f.name());
                out.push(b':');
                write_value(out, f, column.as_ref(), row);
            }
            out.push(b'}');
        }
        other => write_str(out, &format!("<unsupported arrow type {other}>")),
    }
}

fn downcast<T: 'static>(array: &dyn Array) -> Option<&T> {
    array.as_any().downcast_ref::<T>()
}

fn write_int<T: itoa::Integer>(out: &mut Vec<u8>, value: Option<T>) {
    if let Some(v) = value {
        out.extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
    }
}

/// A finite float as its shortest round-trip text; NaN and infinities as
/// strings (JSON has no literal for them).
fn write_float<F: ryu::Float + Into<f64>>(out: &mut Vec<u8>, value: F) {
    let wide: f64 = value.into();
    if wide.is_nan() {
        out.extend_from_slice(b"\"NaN\"");
    } else if wide.is_infinite() {
        let text: &[u8] = if wide > 0.0 {
            b"\"Infinity\""
        } else {
            b"\"-Infinity\""
        };
        out.extend_from_slice(text);
    } else {
        out.extend_from_slice(ryu::Buffer::new().format_finite(value).as_bytes());
    }
}

/// A decimal numeral (`-123.4500`) as a JSON number when an f64 holds it
/// exactly enough, else as a string.
fn write_numeric_text(out: &mut Vec<u8>, text: &str) {
    let numeric = !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || b == b'-' || b == b'.');
    let significant = text
        .bytes()
        .filter(u8::is_ascii_digit)
        .skip_while(|&b| b == b'0')
        .count();
    if numeric && significant <= MAX_EXACT_DIGITS {
        out.extend_from_slice(text.as_bytes());
    } else {
        write_str(out, text);
    }
}

/// Formats an unscaled Decimal128 value with `scale` fraction digits.
pub fn decimal_to_string(value: i128, scale: i8) -> String {
    let negative = value < 0;
    let digits = value.unsigned_abs().to_string();
    let mut out = String::with_capacity(digits.len() + 3);
    if negative {
        out.push('-');
    }
    if scale <= 0 {
        out.push_str(&digits);
        if value != 0 {
            out.extend(std::iter::repeat_n('0', scale.unsigned_abs() as usize));
        }
        return out;
    }
    let scale = scale as usize;
    if digits.len() > scale {
        let (int, frac) = digits.split_at(digits.len() - scale);
        out.push_str(int);
        out.push('.');
        out.push_str(frac);
    } else {
        out.push_str("0.");
        out.extend(std::iter::repeat_n('0', scale - digits.len()));
        out.push_str(&digits);
    }
    out
}

/// A 16-byte uuid in its 8-4-4-4-12 hex form (other lengths as plain hex).
pub(crate) fn write_uuid(out: &mut Vec<u8>, bytes: &[u8]) {
    if bytes.len() != 16 {
        write_hex(out, bytes);
        return;
    }
    for (i, chunk) in [
        &bytes[0..4],
        &bytes[4..6],
        &bytes[6..8],
        &bytes[8..10],
        &bytes[10..16],
    ]
    .iter()
    .enumerate()
    {
        if i > 0 {
            out.push(b'-');
        }
        write_hex(out, chunk);
    }
}

/// Lower-case hex of `bytes`.
pub(crate) fn write_hex(out: &mut Vec<u8>, bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        out.push(HEX[usize::from(b >> 4)]);
        out.push(HEX[usize::from(b & 0xf)]);
    }
}

/// Civil date from days since 1970-01-01 (proleptic Gregorian).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

fn write_year(out: &mut Vec<u8>, year: i64) {
    if (0..=9999).contains(&year) {
        out.extend_from_slice(format!("{year:04}").as_bytes());
    } else if year < 0 {
        out.extend_from_slice(format!("-{:04}", -year).as_bytes());
    } else {
        out.extend_from_slice(format!("+{year}").as_bytes());
    }
}

/// A date (days since 1970-01-01) as `YYYY-MM-DD`; infinities as words.
pub(crate) fn write_date(out: &mut Vec<u8>, days: i32) {
    if days == i32::MAX {
        out.extend_from_slice(b"infinity");
        return;
    }
    if days == -i32::MAX {
        out.extend_from_slice(b"-infinity");
        return;
    }
    let (year, month, day) = civil_from_days(i64::from(days));
    write_year(out, year);
    out.extend_from_slice(format!("-{month:02}-{day:02}").as_bytes());
}

/// A time of day (µs since midnight) as `HH:MM:SS[.ffffff]`.
pub(crate) fn write_time(out: &mut Vec<u8>, micros: i64) {
    let seconds = micros.div_euclid(1_000_000);
    let fraction = micros.rem_euclid(1_000_000);
    out.extend_from_slice(
        format!(
            "{:02}:{:02}:{:02}",
            seconds / 3600,
            (seconds / 60) % 60,
            seconds % 60
        )
        .as_bytes(),
    );
    if fraction != 0 {
        let digits = format!("{fraction:06}");
        out.push(b'.');
        out.extend_from_slice(digits.trim_end_matches('0').as_bytes());
    }
}

/// A timestamp (µs since 1970) as ISO 8601, `Z` at the end when `utc`.
pub(crate) fn write_timestamp(out: &mut Vec<u8>, micros: i64, utc: bool) {
    if micros == i64::MAX {
        out.extend_from_slice(b"infinity");
        return;
    }
    if micros == -i64::MAX {
        out.extend_from_slice(b"-infinity");
        return;
    }
    let days = micros.div_euclid(86_400_000_000);
    let in_day = micros.rem_euclid(86_400_000_000);
    let (year, month, day) = civil_from_days(days);
    write_year(out, year);
    out.extend_from_slice(format!("-{month:02}-{day:02}T").as_bytes());
    write_time(out, in_day);
    if utc {
        out.push(b'Z');
    }
}

/// An interval as an ISO 8601 duration (`P1Y2M3DT4H5M6.5S`).
pub(crate) fn write_interval(out: &mut Vec<u8>, months: i32, days: i32, nanos: i64) {
    if months == 0 && days == 0 && nanos == 0 {
        out.extend_from_slice(b"PT0S");
        return;
    }
    out.push(b'P');
    let (years, months) = (months / 12, months % 12);
    if years != 0 {
        out.extend_from_slice(format!("{years}Y").as_bytes());
    }
    if months != 0 {
        out.extend_from_slice(format!("{months}M").as_bytes());
    }
    if days != 0 {
        out.extend_from_slice(format!("{days}D").as_bytes());
    }
    if nanos != 0 {
        out.push(b'T');
        let negative = nanos < 0;
        let nanos = nanos.unsigned_abs();
        let sign = if negative { "-" } else { "" };
        let hours = nanos / 3_600_000_000_000;
        let minutes = (nanos / 60_000_000_000) % 60;
        let seconds = (nanos / 1_000_000_000) % 60;
        let fraction = nanos % 1_000_000_000;
        if hours != 0 {
            out.extend_from_slice(format!("{sign}{hours}H").as_bytes());
        }
        if minutes != 0 {
            out.extend_from_slice(format!("{sign}{minutes}M").as_bytes());
        }
        if seconds != 0 || fraction != 0 {
            out.extend_from_slice(format!("{sign}{seconds}").as_bytes());
            if fraction != 0 {
                let digits = format!("{fraction:09}");
                out.push(b'.');
                out.extend_from_slice(digits.trim_end_matches('0').as_bytes());
            }
            out.push(b'S');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(f: impl FnOnce(&mut Vec<u8>)) -> String {
        let mut out = Vec::new();
        f(&mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn strings_are_escaped() {
        assert_eq!(
            text(|o| write_str(o, "a\"b\\c\n\u{1}é")),
            "\"a\\\"b\\\\c\\n\\u0001é\""
        );
    }

    #[test]
    fn decimals_keep_every_digit() {
        assert_eq!(decimal_to_string(12345, 2), "123.45");
        assert_eq!(decimal_to_string(-5, 3), "-0.005");
        assert_eq!(decimal_to_string(0, 2), "0.00");
        assert_eq!(decimal_to_string(7, -2), "700");
        assert_eq!(text(|o| write_numeric_text(o, "123.45")), "123.45");
        // 16 significant digits no longer fit an f64 exactly.
        assert_eq!(
            text(|o| write_numeric_text(o, "1234567890.123456")),
            "\"1234567890.123456\""
        );
        assert_eq!(
            text(|o| write_numeric_text(o, "0.000000000000000001")),
            "0.000000000000000001"
        );
        assert_eq!(text(|o| write_numeric_text(o, "NaN")), "\"NaN\"");
    }

    #[test]
    fn dates_and_timestamps() {
        assert_eq!(text(|o| write_date(o, 0)), "1970-01-01");
        assert_eq!(text(|o| write_date(o, 10_957)), "2000-01-01");
        assert_eq!(text(|o| write_date(o, -719_528)), "0000-01-01");
        assert_eq!(text(|o| write_date(o, -719_529)), "-0001-12-31");
        assert_eq!(text(|o| write_date(o, i32::MAX)), "infinity");
        assert_eq!(text(|o| write_date(o, -i32::MAX)), "-infinity");
        assert_eq!(
            text(|o| write_timestamp(o, 1_700_000_000_123_456, true)),
            "2023-11-14T22:13:20.123456Z"
        );
        assert_eq!(
            text(|o| write_timestamp(o, -1, false)),
            "1969-12-31T23:59:59.999999"
        );
        assert_eq!(text(|o| write_timestamp(o, i64::MAX, true)), "infinity");
        assert_eq!(text(|o| write_time(o, 86_399_000_000)), "23:59:59");
    }

    #[test]
    fn intervals_are_iso_durations() {
        assert_eq!(
            text(|o| write_interval(o, 14, 3, 14_706_500_000_000)),
            "P1Y2M3DT4H5M6.5S"
        );
        assert_eq!(text(|o| write_interval(o, 0, 0, 0)), "PT0S");
        assert_eq!(
            text(|o| write_interval(o, -1, 0, -1_000_000_000)),
            "P-1MT-1S"
        );
    }
}
