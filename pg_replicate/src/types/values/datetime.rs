//! date, time, timestamp[tz] and interval values, binary and text.
//!
//! Binary (`*_send`): date = i32 days since 2000-01-01; time = i64 µs since
//! midnight; timestamp[tz] = i64 µs since 2000-01-01 00:00 UTC; interval =
//! i64 µs, i32 days, i32 months. Infinite dates are `i32::MAX`/`i32::MIN`,
//! infinite timestamps `i64::MAX`/`i64::MIN`.
//!
//! Text is what the output functions print under `DateStyle=ISO` and
//! `IntervalStyle=iso_8601` (see `postgres::session`).
//!
//! Infinity is stored the way DuckDB stores it: `±i32::MAX` days for dates,
//! `±i64::MAX` µs for timestamps.

use arrow::datatypes::IntervalMonthDayNano;

use super::error::{DecodeResult, Fault};
use super::text::be_bytes;

/// Days from 1970-01-01 to 2000-01-01 (the Postgres epoch).
pub(crate) const PG_EPOCH_DAYS: i32 = 10_957;
/// Microseconds from 1970-01-01 to 2000-01-01.
pub(crate) const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;
/// Date32 of `infinity`.
pub(crate) const DATE_INFINITY: i32 = i32::MAX;
/// Date32 of `-infinity`.
pub(crate) const DATE_NEG_INFINITY: i32 = -i32::MAX;
/// Timestamp µs of `infinity`.
pub(crate) const TIMESTAMP_INFINITY: i64 = i64::MAX;
/// Timestamp µs of `-infinity`.
pub(crate) const TIMESTAMP_NEG_INFINITY: i64 = -i64::MAX;

const MICROS_PER_SECOND: i64 = 1_000_000;
const MICROS_PER_DAY: i64 = 86_400 * MICROS_PER_SECOND;

const BAD_DATE: Fault = Fault::Malformed("date text is not YYYY-MM-DD [BC]");
const BAD_TIME: Fault = Fault::Malformed("time text is not HH:MM:SS[.ffffff]");
const BAD_TIMESTAMP: Fault =
    Fault::Malformed("timestamp text is not YYYY-MM-DD HH:MM:SS[.ffffff][+HH[:MM[:SS]]] [BC]");
const BAD_INTERVAL: Fault = Fault::Malformed("interval text is not ISO 8601 (P...T...)");
const TIMESTAMP_RANGE: Fault = Fault::Unrepresentable(
    "timestamp outside the range of microseconds since 1970 that do not collide with ±infinity",
);
const DATE_RANGE: Fault = Fault::Unrepresentable("date outside the Date32 range");
const INTERVAL_RANGE: Fault =
    Fault::Unrepresentable("interval time part overflows 64-bit nanoseconds");

/// Days since 1970-01-01 of a proleptic Gregorian date (astronomical year).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = month as i64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + day as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        2 if year.rem_euclid(4) == 0
            && (year.rem_euclid(100) != 0 || year.rem_euclid(400) == 0) =>
        {
            29
        }
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Reads exactly `n` ASCII digits at the front of `s`.
fn digits(s: &[u8], n: usize) -> Option<(u32, &[u8])> {
    if s.len() < n || !s[..n].iter().all(u8::is_ascii_digit) {
        return None;
    }
    let v = s[..n]
        .iter()
        .fold(0u32, |acc, b| acc * 10 + (b - b'0') as u32);
    Some((v, &s[n..]))
}

/// Reads one or more ASCII digits (at most 18) at the front of `s`.
fn number(s: &[u8]) -> Option<(i64, &[u8])> {
    let n = s.iter().take_while(|b| b.is_ascii_digit()).count();
    if n == 0 || n > 18 {
        return None;
    }
    let v = s[..n]
        .iter()
        .fold(0i64, |acc, b| acc * 10 + (b - b'0') as i64);
    Some((v, &s[n..]))
}

/// Reads `.f{1,6}` if present: microseconds.
fn fraction(s: &[u8]) -> Option<(i64, &[u8])> {
    let Some(rest) = s.strip_prefix(b".") else {
        return Some((0, s));
    };
    let n = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    if n == 0 || n > 6 {
        return None;
    }
    let (v, rest) = digits(rest, n)?;
    Some((v as i64 * 10i64.pow(6 - n as u32), rest))
}

/// Parses `YYYY-MM-DD` (year of 1+ digits): (days since 1970 before the BC
/// correction is applied, i.e. the year is still as written).
fn date_prefix(s: &[u8]) -> Option<(i64, u32, u32, &[u8])> {
    let (year, s) = number(s)?;
    let s = s.strip_prefix(b"-")?;
    let (month, s) = digits(s, 2)?;
    let s = s.strip_prefix(b"-")?;
    let (day, s) = digits(s, 2)?;
    Some((year, month, day, s))
}

/// Days since 1970 of a written date, `bc` giving the era.
fn civil_days(year: i64, month: u32, day: u32, bc: bool) -> Option<i64> {
    if year < 1 || !(1..=12).contains(&month) {
        return None;
    }
    // 1 BC is astronomical year 0.
    let year = if bc { 1 - year } else { year };
    if day < 1 || day > days_in_month(year, month) {
        return None;
    }
    Some(days_from_civil(year, month, day))
}

/// Parses `HH:MM:SS[.ffffff]` into µs since midnight (24:00:00 allowed).
fn time_prefix(s: &[u8]) -> Option<(i64, &[u8])> {
    let (h, s) = digits(s, 2)?;
    let s = s.strip_prefix(b":")?;
    let (m, s) = digits(s, 2)?;
    let s = s.strip_prefix(b":")?;
    let (sec, s) = digits(s, 2)?;
    let (micros, s) = fraction(s)?;
    let total = ((h as i64 * 60 + m as i64) * 60 + sec as i64) * MICROS_PER_SECOND + micros;
    if h > 24 || m > 59 || sec > 59 || total > MICROS_PER_DAY {
        return None;
    }
    Some((total, s))
}

/// Parses a UTC offset `+HH[:MM[:SS]]` into seconds east of UTC.
fn offset(s: &[u8]) -> Option<(i64, &[u8])> {
    let (negative, s) = match s.first()? {
        b'+' => (false, &s[1..]),
        b'-' => (true, &s[1..]),
        _ => return None,
    };
    let (h, mut s) = digits(s, 2)?;
    let mut seconds = h as i64 * 3600;
    for unit in [60, 1] {
        match s.strip_prefix(b":") {
            Some(rest) => {
                let (v, rest) = digits(rest, 2)?;
                if v > 59 {
                    return None;
                }
                seconds += v as i64 * unit;
                s = rest;
            }
            None => break,
        }
    }
    Some((if negative { -seconds } else { seconds }, s))
}

/// Strips a trailing ` BC`.
fn era(s: &[u8]) -> (bool, &[u8]) {
    match s.strip_suffix(b" BC") {
        Some(rest) => (true, rest),
        None => (false, s),
    }
}

/// Binary date → Date32.
pub(crate) fn date_from_binary(value: &[u8]) -> DecodeResult<i32> {
    let days = i32::from_be_bytes(be_bytes(value, "date is not 4 bytes")?);
    match days {
        i32::MAX => Ok(DATE_INFINITY),
        i32::MIN => Ok(DATE_NEG_INFINITY),
        _ => match days.checked_add(PG_EPOCH_DAYS) {
            Some(d) if d != DATE_INFINITY && d > DATE_NEG_INFINITY => Ok(d),
            _ => Err(DATE_RANGE),
        },
    }
}

/// Text date (`YYYY-MM-DD[ BC]`, `infinity`, `-infinity`) → Date32.
pub(crate) fn date_from_text(value: &[u8]) -> DecodeResult<i32> {
    match value {
        b"infinity" => return Ok(DATE_INFINITY),
        b"-infinity" => return Ok(DATE_NEG_INFINITY),
        _ => {}
    }
    let (bc, s) = era(value);
    let (year, month, day, rest) = date_prefix(s).ok_or(BAD_DATE)?;
    if !rest.is_empty() {
        return Err(BAD_DATE);
    }
    let days = civil_days(year, month, day, bc).ok_or(BAD_DATE)?;
    match i32::try_from(days) {
        Ok(d) if d != DATE_INFINITY && d > DATE_NEG_INFINITY => Ok(d),
        _ => Err(DATE_RANGE),
    }
}

/// Binary time → µs since midnight.
pub(crate) fn time_from_binary(value: &[u8]) -> DecodeResult<i64> {
    let micros = i64::from_be_bytes(be_bytes(value, "time is not 8 bytes")?);
    if !(0..=MICROS_PER_DAY).contains(&micros) {
        return Err(Fault::Malformed("time outside 00:00:00..24:00:00"));
    }
    Ok(micros)
}

/// Text time → µs since midnight.
pub(crate) fn time_from_text(value: &[u8]) -> DecodeResult<i64> {
    match time_prefix(value) {
        Some((micros, b"")) => Ok(micros),
        _ => Err(BAD_TIME),
    }
}

/// A finite timestamp in µs since 1970, if it does not collide with the
/// infinity encoding.
fn finite_timestamp(micros: i128) -> DecodeResult<i64> {
    match i64::try_from(micros) {
        Ok(m) if m != TIMESTAMP_INFINITY && m > TIMESTAMP_NEG_INFINITY => Ok(m),
        _ => Err(TIMESTAMP_RANGE),
    }
}

/// Binary timestamp or timestamptz → µs since 1970 (UTC).
pub(crate) fn timestamp_from_binary(value: &[u8]) -> DecodeResult<i64> {
    let micros = i64::from_be_bytes(be_bytes(value, "timestamp is not 8 bytes")?);
    match micros {
        i64::MAX => Ok(TIMESTAMP_INFINITY),
        i64::MIN => Ok(TIMESTAMP_NEG_INFINITY),
        _ => finite_timestamp(micros as i128 + PG_EPOCH_MICROS as i128),
    }
}

/// Text timestamp → µs since 1970. With `with_offset` (timestamptz) a UTC
/// offset may follow the time and is applied; without, none is accepted.
pub(crate) fn timestamp_from_text(value: &[u8], with_offset: bool) -> DecodeResult<i64> {
    match value {
        b"infinity" => return Ok(TIMESTAMP_INFINITY),
        b"-infinity" => return Ok(TIMESTAMP_NEG_INFINITY),
        _ => {}
    }
    let (bc, s) = era(value);
    let (year, month, day, s) = date_prefix(s).ok_or(BAD_TIMESTAMP)?;
    let s = s.strip_prefix(b" ").ok_or(BAD_TIMESTAMP)?;
    let (time, s) = time_prefix(s).ok_or(BAD_TIMESTAMP)?;
    let (offset_seconds, s) = match s {
        [b'+' | b'-', ..] if with_offset => offset(s).ok_or(BAD_TIMESTAMP)?,
        _ => (0, s),
    };
    if !s.is_empty() {
        return Err(BAD_TIMESTAMP);
    }
    let days = civil_days(year, month, day, bc).ok_or(BAD_TIMESTAMP)?;
    let micros = days as i128 * MICROS_PER_DAY as i128 + time as i128
        - offset_seconds as i128 * MICROS_PER_SECOND as i128;
    finite_timestamp(micros)
}

/// Binary interval → MonthDayNano.
pub(crate) fn interval_from_binary(value: &[u8]) -> DecodeResult<IntervalMonthDayNano> {
    let bytes: [u8; 16] = be_bytes(value, "interval is not 16 bytes")?;
    let [m0, m1, m2, m3, m4, m5, m6, m7, d0, d1, d2, d3, o0, o1, o2, o3] = bytes;
    let micros = i64::from_be_bytes([m0, m1, m2, m3, m4, m5, m6, m7]);
    let days = i32::from_be_bytes([d0, d1, d2, d3]);
    let months = i32::from_be_bytes([o0, o1, o2, o3]);
    let nanoseconds = micros.checked_mul(1000).ok_or(INTERVAL_RANGE)?;
    Ok(IntervalMonthDayNano::new(months, days, nanoseconds))
}

/// Text interval in ISO 8601 (`P1Y2M3DT4H5M6.5S`, `PT0S`,
/// `P-1Y-2M3DT-4H-5M-6.5S`) → MonthDayNano.
pub(crate) fn interval_from_text(value: &[u8]) -> DecodeResult<IntervalMonthDayNano> {
    if value == b"infinity" || value == b"-infinity" {
        return Err(Fault::Unrepresentable(
            "infinite intervals have no Arrow form",
        ));
    }
    let mut s = value.strip_prefix(b"P").ok_or(BAD_INTERVAL)?;
    if s.is_empty() {
        return Err(BAD_INTERVAL);
    }
    let (mut months, mut days, mut micros) = (0i64, 0i64, 0i128);
    let mut in_time = false;
    // Designators must come in this order; `rank` enforces it.
    let mut rank = 0;
    while !s.is_empty() {
        if let Some(rest) = s.strip_prefix(b"T") {
            if in_time || rest.is_empty() {
                return Err(BAD_INTERVAL);
            }
            in_time = true;
            s = rest;
            continue;
        }
        let (negative, rest) = match s[0] {
            b'-' => (true, &s[1..]),
            b'+' => (false, &s[1..]),
            _ => (false, s),
        };
        let (whole, rest) = number(rest).ok_or(BAD_INTERVAL)?;
        let (fraction_micros, rest) = fraction(rest).ok_or(BAD_INTERVAL)?;
        let (&designator, rest) = rest.split_first().ok_or(BAD_INTERVAL)?;
        let sign = if negative { -1 } else { 1 };
        let new_rank = match (in_time, designator) {
            (false, b'Y') => 1,
            (false, b'M') => 2,
            (false, b'W') => 3,
            (false, b'D') => 4,
            (true, b'H') => 5,
            (true, b'M') => 6,
            (true, b'S') => 7,
            _ => return Err(BAD_INTERVAL),
        };
        if new_rank <= rank || (fraction_micros != 0 && new_rank != 7) {
            return Err(BAD_INTERVAL);
        }
        rank = new_rank;
        let whole = sign * whole;
        match new_rank {
            1 => months += whole * 12,
            2 => months += whole,
            3 => days += whole * 7,
            4 => days += whole,
            5 => micros += whole as i128 * 3_600_000_000,
            6 => micros += whole as i128 * 60_000_000,
            _ => {
                micros += whole as i128 * 1_000_000 + (sign * fraction_micros) as i128;
            }
        }
        s = rest;
    }
    let months = i32::try_from(months).map_err(|_| INTERVAL_RANGE)?;
    let days = i32::try_from(days).map_err(|_| INTERVAL_RANGE)?;
    let nanoseconds = i64::try_from(micros * 1000).map_err(|_| INTERVAL_RANGE)?;
    Ok(IntervalMonthDayNano::new(months, days, nanoseconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn date_both(pg_days: i32, text: &str) -> DecodeResult<i32> {
        let b = date_from_binary(&pg_days.to_be_bytes());
        assert_eq!(b, date_from_text(text.as_bytes()), "{text}");
        b
    }

    fn ts_both(pg_micros: i64, text: &str, with_offset: bool) -> DecodeResult<i64> {
        let b = timestamp_from_binary(&pg_micros.to_be_bytes());
        assert_eq!(
            b,
            timestamp_from_text(text.as_bytes(), with_offset),
            "{text}"
        );
        b
    }

    fn interval_binary(micros: i64, days: i32, months: i32) -> Vec<u8> {
        let mut v = micros.to_be_bytes().to_vec();
        v.extend_from_slice(&days.to_be_bytes());
        v.extend_from_slice(&months.to_be_bytes());
        v
    }

    fn interval_both(
        micros: i64,
        days: i32,
        months: i32,
        text: &str,
    ) -> DecodeResult<IntervalMonthDayNano> {
        let b = interval_from_binary(&interval_binary(micros, days, months));
        assert_eq!(b, interval_from_text(text.as_bytes()), "{text}");
        b
    }

    #[test]
    fn dates() {
        assert_eq!(date_both(0, "2000-01-01"), Ok(10957));
        assert_eq!(date_both(-10957, "1970-01-01"), Ok(0));
        assert_eq!(date_both(-10958, "1969-12-31"), Ok(-1));
        assert_eq!(date_both(59, "2000-02-29"), Ok(10957 + 59));
        // 1 BC is a leap year (astronomical year 0): 0001-02-29 BC exists.
        assert!(date_from_text(b"0001-02-29 BC").is_ok());
        assert!(date_from_text(b"0002-02-29 BC").is_err());
        // Earliest Postgres date: 4713-11-24 BC, Julian day 0.
        assert_eq!(
            date_both(-2_451_545, "4714-11-24 BC"),
            Ok(-2_451_545 + 10957)
        );
        // Latest Postgres date.
        // (Julian day 2147483494 is 5874898-01-01, the first day not allowed.)
        assert_eq!(
            date_both(2_147_483_493 - 2_451_545, "5874897-12-31"),
            Ok(2_147_483_493 - 2_451_545 + 10957)
        );
        // 4713-01-01 BC, the "4713 BC" of the Postgres documentation.
        assert_eq!(
            date_from_text(b"4713-01-01 BC"),
            Ok(days_from_civil(-4712, 1, 1) as i32)
        );
        // 0001-01-01 and the day before it, 0001-12-31 BC.
        assert_eq!(date_both(-730_119, "0001-01-01"), Ok(-719_162));
        assert_eq!(date_both(-730_120, "0001-12-31 BC"), Ok(-719_163));
        assert_eq!(date_both(i32::MAX, "infinity"), Ok(i32::MAX));
        assert_eq!(date_both(i32::MIN, "-infinity"), Ok(-i32::MAX));
        for bad in [
            "2000-13-01",
            "2000-02-30",
            "0000-01-01",
            "2000-1-01",
            "2000-01-01 AD",
            "",
            "20000101",
        ] {
            assert_eq!(date_from_text(bad.as_bytes()), Err(BAD_DATE), "{bad}");
        }
        assert!(date_from_binary(&[0, 0, 0]).is_err());
        assert_eq!(
            date_from_binary(&(i32::MAX - 1).to_be_bytes()),
            Err(DATE_RANGE)
        );
    }

    #[test]
    fn times() {
        let t: i64 = ((13 * 60 + 14) * 60 + 15) * 1_000_000 + 500_000;
        assert_eq!(time_from_binary(&t.to_be_bytes()), Ok(t));
        assert_eq!(time_from_text(b"13:14:15.5"), Ok(t));
        assert_eq!(time_from_text(b"00:00:00"), Ok(0));
        assert_eq!(time_from_text(b"23:59:59.999999"), Ok(MICROS_PER_DAY - 1));
        assert_eq!(time_from_text(b"24:00:00"), Ok(MICROS_PER_DAY));
        assert_eq!(
            time_from_binary(&MICROS_PER_DAY.to_be_bytes()),
            Ok(MICROS_PER_DAY)
        );
        for bad in [
            "24:00:01",
            "12:60:00",
            "1:00:00",
            "12:00:00.1234567",
            "12:00",
            "12:00:00+01",
        ] {
            assert_eq!(time_from_text(bad.as_bytes()), Err(BAD_TIME), "{bad}");
        }
        assert!(time_from_binary(&(-1i64).to_be_bytes()).is_err());
    }

    #[test]
    fn timestamps() {
        assert_eq!(
            ts_both(0, "2000-01-01 00:00:00", false),
            Ok(PG_EPOCH_MICROS)
        );
        assert_eq!(
            ts_both(0, "2000-01-01 00:00:00+00", true),
            Ok(PG_EPOCH_MICROS)
        );
        assert_eq!(
            ts_both(-PG_EPOCH_MICROS, "1970-01-01 00:00:00", false),
            Ok(0)
        );
        let v = 86_400_000_000 + 3_723_456_789;
        assert_eq!(
            ts_both(v, "2000-01-02 01:02:03.456789", false),
            Ok(v + PG_EPOCH_MICROS)
        );
        assert_eq!(
            ts_both(v, "2000-01-02 01:02:03.456789+00", true),
            Ok(v + PG_EPOCH_MICROS)
        );
        // Other offsets are applied.
        assert_eq!(
            ts_both(v, "2000-01-02 03:32:03.456789+02:30", true),
            Ok(v + PG_EPOCH_MICROS)
        );
        assert_eq!(
            ts_both(v, "2000-01-01 23:02:03.456789-02", true),
            Ok(v + PG_EPOCH_MICROS)
        );
        assert_eq!(
            ts_both(v, "2000-01-02 01:02:13.456789+00:00:10", true),
            Ok(v + PG_EPOCH_MICROS)
        );
        assert!(timestamp_from_text(b"2000-01-02 01:02:03+00", false).is_err());
        // Earliest: 4714-11-24 00:00:00 BC.
        let min = -2_451_545i64 * MICROS_PER_DAY;
        assert_eq!(
            ts_both(min, "4714-11-24 00:00:00 BC", false),
            Ok(min + PG_EPOCH_MICROS)
        );
        assert_eq!(
            ts_both(min, "4714-11-24 00:00:00+00 BC", true),
            Ok(min + PG_EPOCH_MICROS)
        );
        // Latest Postgres timestamp (294276-12-31 23:59:59.999999) is past
        // what µs since 1970 can hold next to the infinity encoding.
        // Postgres' END_TIMESTAMP: 294277-01-01 in µs since 2000.
        let end = (days_from_civil(294_277, 1, 1) - PG_EPOCH_DAYS as i64) * MICROS_PER_DAY;
        assert_eq!(end, 9_223_371_331_200_000_000);
        let max = end - 1;
        assert_eq!(
            ts_both(max, "294276-12-31 23:59:59.999999", false),
            Err(TIMESTAMP_RANGE)
        );
        // The last one that fits: 294247-01-10 04:00:54.775806 UTC.
        let last = i64::MAX - 1 - PG_EPOCH_MICROS;
        assert_eq!(
            ts_both(last, "294247-01-10 04:00:54.775806+00", true),
            Ok(i64::MAX - 1)
        );
        // One µs later would be i64::MAX, which means infinity.
        assert_eq!(
            ts_both(last + 1, "294247-01-10 04:00:54.775807", false),
            Err(TIMESTAMP_RANGE)
        );
        assert_eq!(ts_both(i64::MAX, "infinity", true), Ok(i64::MAX));
        assert_eq!(ts_both(i64::MIN, "-infinity", false), Ok(-i64::MAX));
        for bad in [
            "2000-01-01",
            "2000-01-01T00:00:00",
            "2000-01-01 00:00:00 +00",
            "2000-01-01 00:00:00+0",
        ] {
            assert_eq!(
                timestamp_from_text(bad.as_bytes(), true),
                Err(BAD_TIMESTAMP),
                "{bad}"
            );
        }
    }

    #[test]
    fn intervals() {
        let nd =
            |months, days, micros: i64| Ok(IntervalMonthDayNano::new(months, days, micros * 1000));
        let time = ((4 * 60 + 5) * 60 + 6) * 1_000_000 + 500_000;
        assert_eq!(
            interval_both(time, 3, 14, "P1Y2M3DT4H5M6.5S"),
            nd(14, 3, time)
        );
        assert_eq!(interval_both(0, 0, 0, "PT0S"), nd(0, 0, 0));
        assert_eq!(
            interval_both(-time, 3, -14, "P-1Y-2M3DT-4H-5M-6.5S"),
            nd(-14, 3, -time)
        );
        assert_eq!(interval_both(-500_000, 0, 0, "PT-0.5S"), nd(0, 0, -500_000));
        assert_eq!(interval_both(1, 0, 0, "PT0.000001S"), nd(0, 0, 1));
        assert_eq!(interval_both(0, -1, 0, "P-1D"), nd(0, -1, 0));
        assert_eq!(interval_both(0, 0, 12, "P1Y"), nd(12, 0, 0));
        // Large hour counts (no day carry in intervals).
        let big = 1_000_000i64 * 3_600_000_000;
        assert_eq!(interval_both(big, 0, 0, "PT1000000H"), nd(0, 0, big));
        assert_eq!(
            interval_both(0, i32::MIN, i32::MAX, "P178956970Y7M-2147483648D"),
            nd(i32::MAX, i32::MIN, 0)
        );
        // The time part is limited by i64 nanoseconds.
        assert_eq!(
            interval_from_binary(&interval_binary(i64::MAX, 0, 0)),
            Err(INTERVAL_RANGE)
        );
        assert_eq!(interval_from_text(b"PT2562047788H"), Err(INTERVAL_RANGE));
        assert!(matches!(
            interval_from_text(b"infinity"),
            Err(Fault::Unrepresentable(_))
        ));
        for bad in [
            "",
            "P",
            "PT",
            "1Y",
            "P1H",
            "PT1D",
            "P1M1Y",
            "P1.5Y",
            "P1YT",
            "PT1.1234567S",
            "@ 1 day",
        ] {
            assert_eq!(
                interval_from_text(bad.as_bytes()),
                Err(BAD_INTERVAL),
                "{bad}"
            );
        }
    }
}
