//! Text-format parsers of the simple scalar types (the output functions'
//! forms under the session settings of `postgres::session`), and the small
//! binary helpers they share with the builders.
//!
//! numeric lives in `numeric.rs`, the date/time types in `datetime.rs`.

use super::error::{DecodeResult, Fault};

/// `boolout`: `t` or `f`.
pub(crate) fn bool_from_text(value: &[u8]) -> DecodeResult<bool> {
    match value {
        b"t" => Ok(true),
        b"f" => Ok(false),
        _ => Err(Fault::Malformed("boolean text is not t or f")),
    }
}

/// Binary bool: one byte, 0 or 1.
pub(crate) fn bool_from_binary(value: &[u8]) -> DecodeResult<bool> {
    match value {
        [0] => Ok(false),
        [1] => Ok(true),
        _ => Err(Fault::Malformed("boolean is not one byte 0 or 1")),
    }
}

/// A decimal integer with optional sign, within `min..=max`.
pub(crate) fn int_from_text(value: &[u8], min: i64, max: i64) -> DecodeResult<i64> {
    const BAD: Fault = Fault::Malformed("integer text is not a decimal integer in range");
    let (negative, digits) = match value {
        [b'-', rest @ ..] => (true, rest),
        [b'+', rest @ ..] => (false, rest),
        _ => (false, value),
    };
    if digits.is_empty() {
        return Err(BAD);
    }
    // Accumulate negatively so that i64::MIN is reachable.
    let mut acc: i64 = 0;
    for &b in digits {
        if !b.is_ascii_digit() {
            return Err(BAD);
        }
        acc = acc
            .checked_mul(10)
            .and_then(|a| a.checked_sub((b - b'0') as i64))
            .ok_or(BAD)?;
    }
    let v = if negative {
        acc
    } else {
        acc.checked_neg().ok_or(BAD)?
    };
    if v < min || v > max {
        return Err(BAD);
    }
    Ok(v)
}

/// An unsigned decimal integer (oid).
pub(crate) fn u32_from_text(value: &[u8]) -> DecodeResult<u32> {
    let v = int_from_text(value, 0, u32::MAX as i64)?;
    Ok(v as u32)
}

fn float_str(value: &[u8]) -> DecodeResult<&str> {
    // `str::parse` also accepts "inf"/"infinity"/"nan" in any case, which
    // covers Postgres' `Infinity`, `-Infinity` and `NaN`.
    std::str::from_utf8(value).map_err(|_| Fault::Malformed("float text is not ASCII"))
}

const BAD_FLOAT: Fault = Fault::Malformed("float text is not a number");

/// `float8out` (shortest exact form with extra_float_digits > 0).
pub(crate) fn f64_from_text(value: &[u8]) -> DecodeResult<f64> {
    float_str(value)?.parse().map_err(|_| BAD_FLOAT)
}

/// `float4out`; parsing straight to f32 gives the exact float4 back.
pub(crate) fn f32_from_text(value: &[u8]) -> DecodeResult<f32> {
    float_str(value)?.parse().map_err(|_| BAD_FLOAT)
}

/// Reads a big-endian fixed-size value.
pub(crate) fn be_bytes<const N: usize>(value: &[u8], what: &'static str) -> DecodeResult<[u8; N]> {
    value.try_into().map_err(|_| Fault::Malformed(what))
}

/// Validates UTF-8 (text types, text forms).
pub(crate) fn utf8(value: &[u8]) -> DecodeResult<&str> {
    std::str::from_utf8(value).map_err(|_| Fault::Malformed("text is not valid UTF-8"))
}

fn hex_digit(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// How a bytea text value is written.
pub(crate) enum ByteaText<'a> {
    /// `\x` followed by this many pairs of hex digits (already validated).
    Hex(&'a [u8]),
    /// The traditional escape format (already validated): printable bytes,
    /// `\\` and `\ooo`.
    Escape(&'a [u8]),
}

/// Validates a bytea text value (`byteaout`: hex with `bytea_output=hex`,
/// the escape format is accepted too).
pub(crate) fn bytea_text(value: &[u8]) -> DecodeResult<ByteaText<'_>> {
    if let Some(hex) = value.strip_prefix(b"\\x") {
        if hex.len() % 2 != 0 || !hex.iter().all(|b| hex_digit(*b).is_some()) {
            return Err(Fault::Malformed(
                "bytea hex text is not an even number of hex digits",
            ));
        }
        return Ok(ByteaText::Hex(hex));
    }
    let mut i = 0;
    while i < value.len() {
        if value[i] != b'\\' {
            i += 1;
        } else if value.get(i + 1) == Some(&b'\\') {
            i += 2;
        } else if let Some([b'0'..=b'3', b'0'..=b'7', b'0'..=b'7']) = value.get(i + 1..i + 4) {
            i += 4;
        } else {
            return Err(Fault::Malformed("bytea escape text has a bad escape"));
        }
    }
    Ok(ByteaText::Escape(value))
}

/// Decodes validated bytea text in chunks, without allocating.
pub(crate) fn decode_bytea(text: ByteaText<'_>, mut sink: impl FnMut(&[u8])) {
    let mut chunk = [0u8; 256];
    let mut n = 0;
    let mut push = |b: u8, chunk: &mut [u8; 256], n: &mut usize| {
        chunk[*n] = b;
        *n += 1;
        if *n == chunk.len() {
            sink(&chunk[..]);
            *n = 0;
        }
    };
    match text {
        ByteaText::Hex(hex) => {
            for pair in hex.chunks_exact(2) {
                let hi = hex_digit(pair[0]).unwrap_or(0);
                let lo = hex_digit(pair[1]).unwrap_or(0);
                push(hi << 4 | lo, &mut chunk, &mut n);
            }
        }
        ByteaText::Escape(value) => {
            let mut i = 0;
            while i < value.len() {
                if value[i] == b'\\' {
                    if value[i + 1] == b'\\' {
                        push(b'\\', &mut chunk, &mut n);
                        i += 2;
                    } else {
                        let o = |k: usize| (value[i + k] - b'0') as u32;
                        push((o(1) << 6 | o(2) << 3 | o(3)) as u8, &mut chunk, &mut n);
                        i += 4;
                    }
                } else {
                    push(value[i], &mut chunk, &mut n);
                    i += 1;
                }
            }
        }
    }
    if n > 0 {
        sink(&chunk[..n]);
    }
}

/// `uuid_out` (`8-4-4-4-12` hex); braces and missing hyphens are accepted
/// like `uuid_in` does.
pub(crate) fn uuid_from_text(value: &[u8]) -> DecodeResult<[u8; 16]> {
    const BAD: Fault = Fault::Malformed("uuid text is not 32 hex digits");
    let value = match value {
        [b'{', inner @ .., b'}'] => inner,
        _ => value,
    };
    let mut out = [0u8; 16];
    let mut nibbles = 0;
    for &b in value {
        if b == b'-' {
            continue;
        }
        let d = hex_digit(b).ok_or(BAD)?;
        if nibbles == 32 {
            return Err(BAD);
        }
        out[nibbles / 2] |= if nibbles % 2 == 0 { d << 4 } else { d };
        nibbles += 1;
    }
    if nibbles != 32 {
        return Err(BAD);
    }
    Ok(out)
}

/// The text form `charout` gives a `"char"` byte: empty for 0, the byte
/// itself when ASCII, `\ooo` (octal) for bytes with the high bit set. The
/// binary form is the raw byte; this makes both decode to the same string.
pub(crate) fn char_text(byte: u8, out: &mut [u8; 4]) -> &str {
    let len = match byte {
        0 => 0,
        0x01..=0x7F => {
            out[0] = byte;
            1
        }
        _ => {
            out[0] = b'\\';
            out[1] = b'0' + (byte >> 6);
            out[2] = b'0' + ((byte >> 3) & 7);
            out[3] = b'0' + (byte & 7);
            4
        }
    };
    // Only ASCII is written above, so this never falls back.
    std::str::from_utf8(&out[..len]).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn booleans() {
        assert_eq!(bool_from_text(b"t"), Ok(true));
        assert_eq!(bool_from_text(b"f"), Ok(false));
        assert_eq!(bool_from_binary(&[1]), Ok(true));
        assert_eq!(bool_from_binary(&[0]), Ok(false));
        assert!(bool_from_text(b"true").is_err());
        assert!(bool_from_binary(&[2]).is_err());
        assert!(bool_from_binary(&[]).is_err());
    }

    #[test]
    fn integers() {
        let (min, max) = (i16::MIN as i64, i16::MAX as i64);
        assert_eq!(int_from_text(b"-32768", min, max), Ok(-32768));
        assert_eq!(int_from_text(b"32767", min, max), Ok(32767));
        assert!(int_from_text(b"32768", min, max).is_err());
        assert_eq!(
            int_from_text(b"-9223372036854775808", i64::MIN, i64::MAX),
            Ok(i64::MIN)
        );
        assert_eq!(
            int_from_text(b"9223372036854775807", i64::MIN, i64::MAX),
            Ok(i64::MAX)
        );
        assert!(int_from_text(b"9223372036854775808", i64::MIN, i64::MAX).is_err());
        assert!(int_from_text(b"-9223372036854775809", i64::MIN, i64::MAX).is_err());
        assert_eq!(int_from_text(b"+0", i64::MIN, i64::MAX), Ok(0));
        for bad in ["", "-", "1.0", " 1", "1 ", "0x10", "１"] {
            assert!(
                int_from_text(bad.as_bytes(), i64::MIN, i64::MAX).is_err(),
                "{bad}"
            );
        }
        assert_eq!(u32_from_text(b"4294967295"), Ok(u32::MAX));
        assert!(u32_from_text(b"4294967296").is_err());
        assert!(u32_from_text(b"-1").is_err());
    }

    #[test]
    fn floats() {
        assert!(f64_from_text(b"NaN").unwrap().is_nan());
        assert_eq!(f64_from_text(b"Infinity"), Ok(f64::INFINITY));
        assert_eq!(f64_from_text(b"-Infinity"), Ok(f64::NEG_INFINITY));
        let z = f64_from_text(b"-0").unwrap();
        assert!(z == 0.0 && z.is_sign_negative());
        assert_eq!(f64_from_text(b"1e+308"), Ok(1e308));
        assert_eq!(
            f64_from_text(b"2.2250738585072014e-308"),
            Ok(f64::MIN_POSITIVE)
        );
        assert_eq!(f64_from_text(b"5e-324"), Ok(5e-324));
        assert_eq!(f64_from_text(b"0.1"), Ok(0.1));
        assert_eq!(f32_from_text(b"3.4028235e+38"), Ok(f32::MAX));
        assert_eq!(f32_from_text(b"0.1"), Ok(0.1f32));
        assert_eq!(f32_from_text(b"1e-45"), Ok(f32::from_bits(1)));
        assert!(f32_from_text(b"NaN").unwrap().is_nan());
        assert!(f64_from_text(b"").is_err());
        assert!(f64_from_text(b"1,5").is_err());
    }

    fn bytea(text: &[u8]) -> DecodeResult<Vec<u8>> {
        let parsed = bytea_text(text)?;
        let mut out = Vec::new();
        decode_bytea(parsed, |chunk| out.extend_from_slice(chunk));
        Ok(out)
    }

    #[test]
    fn bytea_forms() {
        assert_eq!(bytea(b"\\x"), Ok(vec![]));
        assert_eq!(bytea(b"\\x00ff10Ab"), Ok(vec![0, 0xff, 0x10, 0xab]));
        let long: Vec<u8> = (0..1000).map(|i| (i * 7) as u8).collect();
        let hex: String = long.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(bytea(format!("\\x{hex}").as_bytes()), Ok(long));
        assert_eq!(bytea(b"ab\\\\c\\000\\377"), Ok(b"ab\\c\x00\xff".to_vec()));
        for bad in [&b"\\x0"[..], b"\\x0g", b"a\\b", b"\\", b"\\400"] {
            assert!(bytea(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn uuids() {
        let expected = [
            0xa0, 0xee, 0xbc, 0x99, 0x9c, 0x0b, 0x4e, 0xf8, 0xbb, 0x6d, 0x6b, 0xb9, 0xbd, 0x38,
            0x0a, 0x11,
        ];
        assert_eq!(
            uuid_from_text(b"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
            Ok(expected)
        );
        assert_eq!(
            uuid_from_text(b"{A0EEBC999C0B4EF8BB6D6BB9BD380A11}"),
            Ok(expected)
        );
        assert!(uuid_from_text(b"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a1").is_err());
        assert!(uuid_from_text(b"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a111").is_err());
        assert!(uuid_from_text(b"g0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11").is_err());
    }

    #[test]
    fn char_forms() {
        let mut buf = [0; 4];
        assert_eq!(char_text(b'a', &mut buf), "a");
        assert_eq!(char_text(0, &mut buf), "");
        assert_eq!(char_text(0xFF, &mut buf), "\\377");
        assert_eq!(char_text(0x80, &mut buf), "\\200");
        assert_eq!(char_text(b'\\', &mut buf), "\\");
    }
}
