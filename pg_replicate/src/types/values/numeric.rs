//! `numeric(p,s)` values to the unscaled `i128` of a Decimal128(p,s), exactly
//! or not at all (never rounded).
//!
//! Binary format (`numeric_send`): `ndigits` i16, `weight` i16, `sign` u16,
//! `dscale` u16, then `ndigits` base-10000 digits (i16 each, most significant
//! first). The value is `Σ digit[i] · 10000^(weight − i)`. Sign is `0x0000`
//! (positive), `0x4000` (negative), `0xC000` (NaN), `0xD000` (+Infinity),
//! `0xF000` (−Infinity). Text format (`numeric_out`): an optional `-`, digits,
//! an optional `.` and fraction digits; or `NaN`, `Infinity`, `-Infinity`.

use super::error::{DecodeResult, Fault};

/// `10^i` for `i` in `0..=38`.
const POW10: [i128; 39] = {
    let mut table = [1i128; 39];
    let mut i = 1;
    while i < 39 {
        table[i] = table[i - 1] * 10;
        i += 1;
    }
    table
};

const SIGN_POSITIVE: u16 = 0x0000;
const SIGN_NEGATIVE: u16 = 0x4000;
const SIGN_NAN: u16 = 0xC000;
const SIGN_POS_INFINITY: u16 = 0xD000;
const SIGN_NEG_INFINITY: u16 = 0xF000;

const NAN: Fault = Fault::Unrepresentable("numeric NaN is not a decimal number");
const INFINITY: Fault = Fault::Unrepresentable("numeric Infinity is not a decimal number");
const TOO_MANY_FRACTION_DIGITS: Fault =
    Fault::Unrepresentable("more fractional digits than the scale (would round)");
const TOO_LARGE: Fault = Fault::Unrepresentable("more integer digits than the precision");

fn read_u16(bytes: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([bytes[at], bytes[at + 1]])
}

/// Checks `|unscaled| < 10^precision`, applies the sign.
fn finish(magnitude: i128, negative: bool, precision: u8) -> DecodeResult<i128> {
    if magnitude >= POW10[precision as usize] {
        return Err(TOO_LARGE);
    }
    Ok(if negative { -magnitude } else { magnitude })
}

/// Decodes a binary numeric into the unscaled value of Decimal128(precision, scale).
pub(crate) fn decimal_from_binary(value: &[u8], precision: u8, scale: i8) -> DecodeResult<i128> {
    if value.len() < 8 {
        return Err(Fault::Malformed("numeric shorter than its 8-byte header"));
    }
    let ndigits = read_u16(value, 0) as i16;
    let weight = read_u16(value, 2) as i16;
    let sign = read_u16(value, 4);
    if ndigits < 0 || value.len() != 8 + 2 * ndigits as usize {
        return Err(Fault::Malformed(
            "numeric length does not match its digit count",
        ));
    }
    let negative = match sign {
        SIGN_POSITIVE => false,
        SIGN_NEGATIVE => true,
        SIGN_NAN => return Err(NAN),
        SIGN_POS_INFINITY | SIGN_NEG_INFINITY => return Err(INFINITY),
        _ => return Err(Fault::Malformed("numeric sign is not a known value")),
    };
    if ndigits <= 4 {
        return small_decimal(value, ndigits, weight, negative, precision, scale);
    }
    let mut magnitude: i128 = 0;
    for i in 0..ndigits as i32 {
        let digit = read_u16(value, 8 + 2 * i as usize) as i16;
        if !(0..10000).contains(&digit) {
            return Err(Fault::Malformed("numeric digit outside 0..9999"));
        }
        if digit == 0 {
            continue;
        }
        // The power of ten of this digit's unit in the unscaled integer.
        let exponent = 4 * (weight as i32 - i) + scale as i32;
        let term = if exponent >= 0 {
            if exponent as usize >= POW10.len() {
                return Err(TOO_LARGE);
            }
            (digit as i128)
                .checked_mul(POW10[exponent as usize])
                .ok_or(TOO_LARGE)?
        } else {
            // Only the leading decimal digits of this group are within the
            // scale; the rest must be zero.
            // (In 16 bits: 128-bit division is slow and this runs per value.)
            let drop = (-exponent) as u32;
            let unit = 10u16.pow(drop.min(4));
            let digit = digit as u16;
            if drop >= 4 || !digit.is_multiple_of(unit) {
                return Err(TOO_MANY_FRACTION_DIGITS);
            }
            i128::from(digit / unit)
        };
        magnitude = magnitude.checked_add(term).ok_or(TOO_LARGE)?;
    }
    finish(magnitude, negative, precision)
}

/// [`decimal_from_binary`] for values of at most 4 base-10000 digits (16
/// decimal digits, the common case): the digits are gathered in a `u64` and
/// scaled once, instead of one 128-bit step per digit.
fn small_decimal(
    value: &[u8],
    ndigits: i16,
    weight: i16,
    negative: bool,
    precision: u8,
    scale: i8,
) -> DecodeResult<i128> {
    let mut digits: u64 = 0;
    for i in 0..ndigits as usize {
        let digit = read_u16(value, 8 + 2 * i);
        if digit >= 10000 {
            return Err(Fault::Malformed("numeric digit outside 0..9999"));
        }
        digits = digits * 10000 + u64::from(digit);
    }
    if digits == 0 {
        return Ok(0);
    }
    // The power of ten of the last digit's unit in the unscaled integer.
    let exponent = 4 * (i32::from(weight) - i32::from(ndigits) + 1) + i32::from(scale);
    let magnitude = if exponent >= 0 {
        let factor = POW10.get(exponent as usize).ok_or(TOO_LARGE)?;
        i128::from(digits).checked_mul(*factor).ok_or(TOO_LARGE)?
    } else {
        // Digits beyond the scale must be zero.
        let unit = u32::try_from(-exponent)
            .ok()
            .and_then(|drop| 10u64.checked_pow(drop))
            .ok_or(TOO_MANY_FRACTION_DIGITS)?;
        if !digits.is_multiple_of(unit) {
            return Err(TOO_MANY_FRACTION_DIGITS);
        }
        i128::from(digits / unit)
    };
    finish(magnitude, negative, precision)
}

/// Decodes a text numeric into the unscaled value of Decimal128(precision, scale).
pub(crate) fn decimal_from_text(value: &[u8], precision: u8, scale: i8) -> DecodeResult<i128> {
    let (negative, digits) = match value {
        [b'-', rest @ ..] => (true, rest),
        [b'+', rest @ ..] => (false, rest),
        _ => (false, value),
    };
    if digits.eq_ignore_ascii_case(b"NaN") {
        return Err(NAN);
    }
    if digits.eq_ignore_ascii_case(b"Infinity") || digits.eq_ignore_ascii_case(b"inf") {
        return Err(INFINITY);
    }
    let scale = scale as usize;
    let mut magnitude: i128 = 0;
    let mut seen_digit = false;
    let mut fraction_digits: Option<usize> = None;
    for &b in digits {
        match b {
            b'0'..=b'9' => {
                seen_digit = true;
                match &mut fraction_digits {
                    Some(n) if *n >= scale => {
                        if b != b'0' {
                            return Err(TOO_MANY_FRACTION_DIGITS);
                        }
                        continue;
                    }
                    Some(n) => *n += 1,
                    None => {}
                }
                magnitude = magnitude
                    .checked_mul(10)
                    .and_then(|m| m.checked_add((b - b'0') as i128))
                    .ok_or(TOO_LARGE)?;
            }
            b'.' if fraction_digits.is_none() => fraction_digits = Some(0),
            _ => return Err(Fault::Malformed("numeric text is not a decimal number")),
        }
    }
    if !seen_digit {
        return Err(Fault::Malformed("numeric text has no digits"));
    }
    let missing = scale - fraction_digits.unwrap_or(0).min(scale);
    magnitude = magnitude.checked_mul(POW10[missing]).ok_or(TOO_LARGE)?;
    finish(magnitude, negative, precision)
}

/// Builds binary numerics for tests, from the documented format.
#[cfg(test)]
pub(crate) fn numeric_binary(weight: i16, sign: u16, dscale: u16, digits: &[i16]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&(digits.len() as i16).to_be_bytes());
    out.extend_from_slice(&weight.to_be_bytes());
    out.extend_from_slice(&sign.to_be_bytes());
    out.extend_from_slice(&dscale.to_be_bytes());
    for d in digits {
        out.extend_from_slice(&d.to_be_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn both(binary: &[u8], text: &str, precision: u8, scale: i8) -> DecodeResult<i128> {
        let b = decimal_from_binary(binary, precision, scale);
        let t = decimal_from_text(text.as_bytes(), precision, scale);
        assert_eq!(b, t, "binary and text differ for {text}");
        b
    }

    #[test]
    fn typical_values() {
        // 1234.56 in numeric(12,2): digits 1234, 5600; weight 0.
        let v = numeric_binary(0, SIGN_POSITIVE, 2, &[1234, 5600]);
        assert_eq!(both(&v, "1234.56", 12, 2), Ok(123456));
        let v = numeric_binary(0, SIGN_NEGATIVE, 2, &[1234, 5600]);
        assert_eq!(both(&v, "-1234.56", 12, 2), Ok(-123456));
        // Zero: no digits.
        let v = numeric_binary(0, SIGN_POSITIVE, 2, &[]);
        assert_eq!(both(&v, "0.00", 12, 2), Ok(0));
        // 0.0001 in numeric(10,4): weight -1, one digit 1.
        let v = numeric_binary(-1, SIGN_POSITIVE, 4, &[1]);
        assert_eq!(both(&v, "0.0001", 10, 4), Ok(1));
        // 0.00000001 in numeric(20,8): weight -2.
        let v = numeric_binary(-2, SIGN_POSITIVE, 8, &[1]);
        assert_eq!(both(&v, "0.00000001", 20, 8), Ok(1));
        // 0.5 in numeric(3,1): digit 5000, weight -1.
        let v = numeric_binary(-1, SIGN_POSITIVE, 1, &[5000]);
        assert_eq!(both(&v, "0.5", 3, 1), Ok(5));
        // 10000 (trailing zero digit groups stripped): weight 1, digit 1.
        let v = numeric_binary(1, SIGN_POSITIVE, 0, &[1]);
        assert_eq!(both(&v, "10000", 5, 0), Ok(10000));
        // 100000000.5 in numeric(12,3) with text 100000000.500.
        let v = numeric_binary(2, SIGN_POSITIVE, 3, &[1, 0, 0, 5000]);
        assert_eq!(both(&v, "100000000.500", 12, 3), Ok(100000000500));
    }

    #[test]
    fn leading_and_trailing_zeros() {
        assert_eq!(decimal_from_text(b"000012.3400", 10, 4), Ok(123400));
        assert_eq!(decimal_from_text(b"12.3", 10, 4), Ok(123000));
        assert_eq!(decimal_from_text(b"12", 10, 4), Ok(120000));
        assert_eq!(decimal_from_text(b"12.", 10, 4), Ok(120000));
        assert_eq!(decimal_from_text(b".5", 10, 4), Ok(5000));
        assert_eq!(decimal_from_text(b"-0", 10, 4), Ok(0));
        // Extra zero fraction digits beyond the scale are exact.
        assert_eq!(decimal_from_text(b"1.230000000", 10, 2), Ok(123));
        // A binary value whose last group is only partly inside the scale.
        let v = numeric_binary(0, SIGN_POSITIVE, 6, &[1, 2300]);
        assert_eq!(decimal_from_binary(&v, 10, 2), Ok(123));
    }

    #[test]
    fn thirty_eight_digits() {
        let text = "12345678901234567890123456789012345678";
        let expected: i128 = text.parse().unwrap();
        let v = numeric_binary(
            9,
            SIGN_POSITIVE,
            0,
            &[12, 3456, 7890, 1234, 5678, 9012, 3456, 7890, 1234, 5678],
        );
        assert_eq!(both(&v, text, 38, 0), Ok(expected));
        let max = "99999999999999999999999999999999999999";
        let v = numeric_binary(
            9,
            SIGN_NEGATIVE,
            0,
            &[99, 9999, 9999, 9999, 9999, 9999, 9999, 9999, 9999, 9999],
        );
        assert_eq!(
            both(&v, &format!("-{max}"), 38, 0),
            Ok(-max.parse::<i128>().unwrap())
        );
        // 36 integer digits and 2 fraction digits: the last group "xx00" would
        // overflow i128 if multiplied before dividing.
        let text = "999999999999999999999999999999999999.99";
        let mut digits = vec![9999i16; 9];
        digits.push(9900);
        let v = numeric_binary(8, SIGN_POSITIVE, 2, &digits);
        assert_eq!(
            both(&v, text, 38, 2),
            Ok("99999999999999999999999999999999999999".parse().unwrap())
        );
        // All 38 digits fractional.
        let text = "0.12345678901234567890123456789012345678";
        let v = numeric_binary(
            -1,
            SIGN_POSITIVE,
            38,
            &[1234, 5678, 9012, 3456, 7890, 1234, 5678, 9012, 3456, 7800],
        );
        assert_eq!(
            both(&v, text, 38, 38),
            Ok("12345678901234567890123456789012345678".parse().unwrap())
        );
    }

    #[test]
    fn rejects_what_does_not_fit() {
        let nan = numeric_binary(0, SIGN_NAN, 0, &[]);
        assert_eq!(both(&nan, "NaN", 12, 2), Err(NAN));
        let inf = numeric_binary(0, SIGN_POS_INFINITY, 0, &[]);
        assert_eq!(both(&inf, "Infinity", 12, 2), Err(INFINITY));
        let inf = numeric_binary(0, SIGN_NEG_INFINITY, 0, &[]);
        assert_eq!(both(&inf, "-Infinity", 12, 2), Err(INFINITY));
        // 1.234 into scale 2 would round.
        let v = numeric_binary(0, SIGN_POSITIVE, 3, &[1, 2340]);
        assert_eq!(both(&v, "1.234", 12, 2), Err(TOO_MANY_FRACTION_DIGITS));
        let v = numeric_binary(-2, SIGN_POSITIVE, 8, &[1]);
        assert_eq!(both(&v, "0.00000001", 12, 2), Err(TOO_MANY_FRACTION_DIGITS));
        // 1000 into numeric(3,0).
        let v = numeric_binary(0, SIGN_POSITIVE, 0, &[1000]);
        assert_eq!(both(&v, "1000", 3, 0), Err(TOO_LARGE));
        // 39 digits into numeric(38,0).
        let v = numeric_binary(9, SIGN_POSITIVE, 0, &[100, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(
            both(&v, "1000000000000000000000000000000000000000", 38, 0),
            Err(TOO_LARGE)
        );
        let v = numeric_binary(20, SIGN_POSITIVE, 0, &[1]);
        assert_eq!(decimal_from_binary(&v, 38, 0), Err(TOO_LARGE));
    }

    #[test]
    fn rejects_malformed() {
        assert!(matches!(
            decimal_from_binary(&[0; 7], 10, 2),
            Err(Fault::Malformed(_))
        ));
        let mut v = numeric_binary(0, SIGN_POSITIVE, 0, &[1, 2]);
        v.pop();
        assert!(matches!(
            decimal_from_binary(&v, 10, 2),
            Err(Fault::Malformed(_))
        ));
        let v = numeric_binary(0, SIGN_POSITIVE, 0, &[10000]);
        assert!(matches!(
            decimal_from_binary(&v, 10, 2),
            Err(Fault::Malformed(_))
        ));
        let v = numeric_binary(0, 0x1234, 0, &[1]);
        assert!(matches!(
            decimal_from_binary(&v, 10, 2),
            Err(Fault::Malformed(_))
        ));
        for bad in ["", "-", ".", "1.2.3", "1e5", "abc", " 1", "1,5"] {
            assert!(
                matches!(
                    decimal_from_text(bad.as_bytes(), 10, 2),
                    Err(Fault::Malformed(_))
                ),
                "{bad:?}"
            );
        }
    }
}
