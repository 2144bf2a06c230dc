//! Arrow values in Postgres' binary `COPY` format: the inverse of the
//! source's decoder (`types::values`), pure and I/O-free.
//!
//! A stream is [`HEADER`], then per row an `i16` field count and per field
//! an `i32` length (−1 for NULL) and that many bytes in the column type's
//! binary receive format, then [`TRAILER`]. Each Arrow column is read
//! through a typed [`ColumnEncoder`] chosen once per batch.
//!
//! Columns of a type the mapping carries as text (`TextForm`: enums,
//! domains, `inet`, unconstrained `numeric`, …) are written as `text` (and
//! arrays of them as `text[]`): the sink copies them into a stage column of
//! that type and casts to the real type in SQL, since only the type's own
//! input function knows its format.

use arrow::array::{
    Array, AsArray, BinaryArray, BooleanArray, Date32Array, Decimal128Array, FixedSizeBinaryArray,
    Float32Array, Float64Array, Int16Array, Int32Array, Int64Array, IntervalMonthDayNanoArray,
    ListArray, StringArray, StructArray, Time64MicrosecondArray, TimestampMicrosecondArray,
    UInt32Array, UInt8Array,
};

use crate::types::table::ArrayForm;
use crate::types::values::{oid, ColumnKind, ScalarKind};

/// The signature, flags and header extension length of a binary COPY stream.
pub const HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";
/// The end of a binary COPY stream: a field count of −1.
pub const TRAILER: &[u8] = &[0xff, 0xff];

/// Days from 1970-01-01 (Arrow) to 2000-01-01 (Postgres).
const EPOCH_DAYS: i32 = 10_957;
/// Microseconds from 1970-01-01 to 2000-01-01.
const EPOCH_MICROS: i64 = 946_684_800_000_000;

/// Why a value cannot be encoded.
pub type EncodeResult<T> = std::result::Result<T, &'static str>;

/// Whether `kind` travels as text (see the module documentation): the
/// stage column is `text` (or `text[]`) and SQL casts it.
pub fn carried_as_text(kind: ColumnKind) -> bool {
    match kind {
        ColumnKind::Scalar(scalar) => scalar == ScalarKind::TextForm,
        ColumnKind::List { element, .. } => element == ScalarKind::TextForm,
    }
}

/// Reads one Arrow column and writes its values in binary COPY format.
#[derive(Debug)]
pub struct ColumnEncoder<'a> {
    values: Values<'a>,
}

#[derive(Debug)]
enum Values<'a> {
    Bool(&'a BooleanArray),
    Int16(&'a Int16Array),
    Int32(&'a Int32Array),
    Int64(&'a Int64Array),
    /// `oid`, 4 bytes.
    Oid(&'a UInt32Array),
    /// Bookkeeping: an operation code as `int2`.
    SmallAsInt2(&'a UInt8Array),
    /// Bookkeeping: a round or position as `int8`.
    UnsignedAsInt8(&'a UInt32Array),
    Float32(&'a Float32Array),
    Float64(&'a Float64Array),
    Decimal(&'a Decimal128Array, i8),
    /// text, varchar, bpchar, name, json, and text-carried types.
    Text(&'a StringArray),
    Jsonb(&'a StringArray),
    Char(&'a StringArray),
    Bytea(&'a BinaryArray),
    Date(&'a Date32Array),
    Time(&'a Time64MicrosecondArray),
    Timestamp(&'a TimestampMicrosecondArray),
    Interval(&'a IntervalMonthDayNanoArray),
    Uuid(&'a FixedSizeBinaryArray),
    List {
        lists: &'a ListArray,
        element: Box<Values<'a>>,
        element_oid: u32,
    },
    Exact {
        arrays: &'a StructArray,
        dims: &'a ListArray,
        lower_bounds: &'a ListArray,
        elements: &'a ListArray,
        element: Box<Values<'a>>,
        element_oid: u32,
    },
}

/// The error of an Arrow array whose type is not the mapping's.
const MISTYPED: &str = "the Arrow array does not have the type of the column's mapping";

impl<'a> ColumnEncoder<'a> {
    /// An encoder of a table column of mapping `kind` held in `array`.
    pub fn new(array: &'a dyn Array, kind: ColumnKind) -> EncodeResult<Self> {
        let values = match kind {
            ColumnKind::Scalar(scalar) => scalar_values(array, scalar)?,
            ColumnKind::List {
                element,
                element_wire_oid,
                form,
                ..
            } => {
                let element_oid = if element == ScalarKind::TextForm {
                    oid::TEXT
                } else {
                    element_wire_oid
                };
                match form {
                    ArrayForm::Lists => {
                        let lists = array.as_list_opt::<i32>().ok_or(MISTYPED)?;
                        Values::List {
                            lists,
                            element: Box::new(scalar_values(lists.values().as_ref(), element)?),
                            element_oid,
                        }
                    }
                    ArrayForm::Exact => {
                        let arrays = array.as_struct_opt().ok_or(MISTYPED)?;
                        let list = |i: usize| arrays.column(i).as_list_opt::<i32>().ok_or(MISTYPED);
                        if arrays.num_columns() != 3 {
                            return Err(MISTYPED);
                        }
                        let elements = list(2)?;
                        Values::Exact {
                            arrays,
                            dims: list(0)?,
                            lower_bounds: list(1)?,
                            elements,
                            element: Box::new(scalar_values(elements.values().as_ref(), element)?),
                            element_oid,
                        }
                    }
                }
            }
        };
        Ok(Self { values })
    }

    /// An encoder of bookkeeping flags (`bool`).
    pub fn flags(array: &'a BooleanArray) -> Self {
        Self {
            values: Values::Bool(array),
        }
    }

    /// An encoder of small codes as `int2`.
    pub fn codes(array: &'a UInt8Array) -> Self {
        Self {
            values: Values::SmallAsInt2(array),
        }
    }

    /// An encoder of unsigned numbers as `int8`.
    pub fn counters(array: &'a UInt32Array) -> Self {
        Self {
            values: Values::UnsignedAsInt8(array),
        }
    }

    /// Appends the field of row `row` (length and value, or −1 for NULL).
    #[inline]
    pub fn write_field(&self, row: usize, out: &mut Vec<u8>) -> EncodeResult<()> {
        write_field(&self.values, row, out)
    }
}

fn scalar_values(array: &dyn Array, kind: ScalarKind) -> EncodeResult<Values<'_>> {
    use arrow::datatypes::{
        Date32Type, Decimal128Type, Float32Type, Float64Type, Int16Type, Int32Type, Int64Type,
        IntervalMonthDayNanoType, Time64MicrosecondType, TimestampMicrosecondType, UInt32Type,
    };
    let values = match kind {
        ScalarKind::Bool => Values::Bool(array.as_boolean_opt().ok_or(MISTYPED)?),
        ScalarKind::Int16 => Values::Int16(array.as_primitive_opt::<Int16Type>().ok_or(MISTYPED)?),
        ScalarKind::Int32 => Values::Int32(array.as_primitive_opt::<Int32Type>().ok_or(MISTYPED)?),
        ScalarKind::Int64 => Values::Int64(array.as_primitive_opt::<Int64Type>().ok_or(MISTYPED)?),
        ScalarKind::Oid => Values::Oid(array.as_primitive_opt::<UInt32Type>().ok_or(MISTYPED)?),
        ScalarKind::Float32 => {
            Values::Float32(array.as_primitive_opt::<Float32Type>().ok_or(MISTYPED)?)
        }
        ScalarKind::Float64 => {
            Values::Float64(array.as_primitive_opt::<Float64Type>().ok_or(MISTYPED)?)
        }
        ScalarKind::Decimal { scale, .. } => Values::Decimal(
            array.as_primitive_opt::<Decimal128Type>().ok_or(MISTYPED)?,
            scale,
        ),
        ScalarKind::Text | ScalarKind::TextForm => {
            Values::Text(array.as_string_opt::<i32>().ok_or(MISTYPED)?)
        }
        ScalarKind::Jsonb => Values::Jsonb(array.as_string_opt::<i32>().ok_or(MISTYPED)?),
        ScalarKind::Char => Values::Char(array.as_string_opt::<i32>().ok_or(MISTYPED)?),
        ScalarKind::Bytea => Values::Bytea(array.as_binary_opt::<i32>().ok_or(MISTYPED)?),
        ScalarKind::Date => Values::Date(array.as_primitive_opt::<Date32Type>().ok_or(MISTYPED)?),
        ScalarKind::Time => Values::Time(
            array
                .as_primitive_opt::<Time64MicrosecondType>()
                .ok_or(MISTYPED)?,
        ),
        ScalarKind::Timestamp | ScalarKind::TimestampTz => Values::Timestamp(
            array
                .as_primitive_opt::<TimestampMicrosecondType>()
                .ok_or(MISTYPED)?,
        ),
        ScalarKind::Interval => Values::Interval(
            array
                .as_primitive_opt::<IntervalMonthDayNanoType>()
                .ok_or(MISTYPED)?,
        ),
        ScalarKind::Uuid => Values::Uuid(array.as_fixed_size_binary_opt().ok_or(MISTYPED)?),
    };
    Ok(values)
}

fn is_null(values: &Values<'_>, row: usize) -> bool {
    match values {
        Values::Bool(a) => a.is_null(row),
        Values::Int16(a) => a.is_null(row),
        Values::Int32(a) => a.is_null(row),
        Values::Int64(a) => a.is_null(row),
        Values::Oid(a) | Values::UnsignedAsInt8(a) => a.is_null(row),
        Values::SmallAsInt2(a) => a.is_null(row),
        Values::Float32(a) => a.is_null(row),
        Values::Float64(a) => a.is_null(row),
        Values::Decimal(a, _) => a.is_null(row),
        Values::Text(a) | Values::Jsonb(a) | Values::Char(a) => a.is_null(row),
        Values::Bytea(a) => a.is_null(row),
        Values::Date(a) => a.is_null(row),
        Values::Time(a) => a.is_null(row),
        Values::Timestamp(a) => a.is_null(row),
        Values::Interval(a) => a.is_null(row),
        Values::Uuid(a) => a.is_null(row),
        Values::List { lists, .. } => lists.is_null(row),
        Values::Exact { arrays, .. } => arrays.is_null(row),
    }
}

/// Writes a field whose length is known up front.
#[inline]
fn fixed(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as i32).to_be_bytes());
    out.extend_from_slice(bytes);
}

fn write_field(values: &Values<'_>, row: usize, out: &mut Vec<u8>) -> EncodeResult<()> {
    if is_null(values, row) {
        out.extend_from_slice(&(-1i32).to_be_bytes());
        return Ok(());
    }
    match values {
        Values::Bool(a) => fixed(out, &[u8::from(a.value(row))]),
        Values::Int16(a) => fixed(out, &a.value(row).to_be_bytes()),
        Values::Int32(a) => fixed(out, &a.value(row).to_be_bytes()),
        Values::Int64(a) => fixed(out, &a.value(row).to_be_bytes()),
        Values::Oid(a) => fixed(out, &a.value(row).to_be_bytes()),
        Values::SmallAsInt2(a) => fixed(out, &i16::from(a.value(row)).to_be_bytes()),
        Values::UnsignedAsInt8(a) => fixed(out, &i64::from(a.value(row)).to_be_bytes()),
        Values::Float32(a) => fixed(out, &a.value(row).to_be_bytes()),
        Values::Float64(a) => fixed(out, &a.value(row).to_be_bytes()),
        Values::Decimal(a, scale) => with_length(out, |out| {
            write_numeric(a.value(row), *scale, out);
            Ok(())
        })?,
        Values::Text(a) => fixed(out, a.value(row).as_bytes()),
        Values::Jsonb(a) => {
            let text = a.value(row).as_bytes();
            out.extend_from_slice(&(text.len() as i32 + 1).to_be_bytes());
            out.push(1);
            out.extend_from_slice(text);
        }
        Values::Char(a) => fixed(out, &[char_byte(a.value(row))?]),
        Values::Bytea(a) => fixed(out, a.value(row)),
        Values::Date(a) => fixed(out, &date_days(a.value(row))?.to_be_bytes()),
        Values::Time(a) => fixed(out, &a.value(row).to_be_bytes()),
        Values::Timestamp(a) => fixed(out, &timestamp_micros(a.value(row))?.to_be_bytes()),
        Values::Interval(a) => {
            let value = a.value(row);
            if value.nanoseconds % 1000 != 0 {
                return Err(
                    "an interval with a fraction of a microsecond (Postgres would round it)",
                );
            }
            let mut bytes = [0u8; 16];
            bytes[..8].copy_from_slice(&(value.nanoseconds / 1000).to_be_bytes());
            bytes[8..12].copy_from_slice(&value.days.to_be_bytes());
            bytes[12..].copy_from_slice(&value.months.to_be_bytes());
            fixed(out, &bytes);
        }
        Values::Uuid(a) => fixed(out, a.value(row)),
        Values::List {
            lists,
            element,
            element_oid,
        } => with_length(out, |out| {
            let range =
                lists.value_offsets()[row] as usize..lists.value_offsets()[row + 1] as usize;
            let len = range.len() as i32;
            let shape: &[(i32, i32)] = &[(len, 1)];
            write_array(
                out,
                if len == 0 { &[] } else { shape },
                element,
                *element_oid,
                range,
            )
        })?,
        Values::Exact {
            dims,
            lower_bounds,
            elements,
            element,
            element_oid,
            ..
        } => with_length(out, |out| {
            let dims = dims.value(row);
            let lower_bounds = lower_bounds.value(row);
            let dims = dims
                .as_primitive_opt::<arrow::datatypes::Int32Type>()
                .ok_or(MISTYPED)?;
            let lower_bounds = lower_bounds
                .as_primitive_opt::<arrow::datatypes::Int32Type>()
                .ok_or(MISTYPED)?;
            if dims.len() != lower_bounds.len() || dims.len() > 6 {
                return Err(
                    "an array with more than 6 dimensions, or dimensions without lower bounds",
                );
            }
            let mut shape = [(0i32, 0i32); 6];
            for (i, slot) in shape.iter_mut().enumerate().take(dims.len()) {
                *slot = (dims.value(i), lower_bounds.value(i));
            }
            let range =
                elements.value_offsets()[row] as usize..elements.value_offsets()[row + 1] as usize;
            let count = shape[..dims.len()]
                .iter()
                .try_fold(1usize, |n, (d, _)| n.checked_mul(usize::try_from(*d).ok()?));
            if dims.is_empty() && range.is_empty() {
                return write_array(out, &[], element, *element_oid, range);
            }
            if count != Some(range.len()) {
                return Err("an array whose dimensions do not match its number of elements");
            }
            write_array(out, &shape[..dims.len()], element, *element_oid, range)
        })?,
    }
    Ok(())
}

/// Writes a length placeholder, the value `f` writes, then patches the
/// length in.
fn with_length(
    out: &mut Vec<u8>,
    f: impl FnOnce(&mut Vec<u8>) -> EncodeResult<()>,
) -> EncodeResult<()> {
    let at = out.len();
    out.extend_from_slice(&[0; 4]);
    f(out)?;
    let len = i32::try_from(out.len() - at - 4).map_err(|_| "a value over 2 GiB")?;
    out[at..at + 4].copy_from_slice(&len.to_be_bytes());
    Ok(())
}

/// `array_recv`'s format: dimensions, has-null flag, element oid, the
/// `(size, lower bound)` of each dimension, then the elements.
fn write_array(
    out: &mut Vec<u8>,
    shape: &[(i32, i32)],
    element: &Values<'_>,
    element_oid: u32,
    range: std::ops::Range<usize>,
) -> EncodeResult<()> {
    let has_null = range.clone().any(|i| is_null(element, i));
    out.extend_from_slice(&(shape.len() as i32).to_be_bytes());
    out.extend_from_slice(&i32::from(has_null).to_be_bytes());
    out.extend_from_slice(&element_oid.to_be_bytes());
    for (size, lower) in shape {
        out.extend_from_slice(&size.to_be_bytes());
        out.extend_from_slice(&lower.to_be_bytes());
    }
    for i in range {
        write_field(element, i, out)?;
    }
    Ok(())
}

/// The byte of a `"char"` from its text form (see `text::char_text`):
/// empty for 0, one ASCII character, or `\ooo` octal.
fn char_byte(text: &str) -> EncodeResult<u8> {
    match text.as_bytes() {
        [] => Ok(0),
        [byte] if byte.is_ascii() => Ok(*byte),
        [b'\\', a @ b'0'..=b'3', b @ b'0'..=b'7', c @ b'0'..=b'7'] => {
            Ok(((a - b'0') << 6) | ((b - b'0') << 3) | (c - b'0'))
        }
        _ => Err("a \"char\" value that is not one byte"),
    }
}

/// Arrow days (1970 epoch, ±`i32::MAX` for ±infinity) to Postgres days.
fn date_days(days: i32) -> EncodeResult<i32> {
    match days {
        i32::MAX => Ok(i32::MAX),
        d if d == -i32::MAX => Ok(i32::MIN),
        d => d
            .checked_sub(EPOCH_DAYS)
            .ok_or("a date outside Postgres' range"),
    }
}

/// Arrow microseconds (1970 epoch, ±`i64::MAX` for ±infinity) to
/// Postgres microseconds.
fn timestamp_micros(micros: i64) -> EncodeResult<i64> {
    match micros {
        i64::MAX => Ok(i64::MAX),
        m if m == -i64::MAX => Ok(i64::MIN),
        m => m
            .checked_sub(EPOCH_MICROS)
            .ok_or("a timestamp outside Postgres' range"),
    }
}

/// `numeric_send`'s format of the Decimal128 `unscaled / 10^scale`
/// (`0 ≤ scale ≤ 38`): base-10000 digits aligned on the decimal point,
/// leading and trailing zero digits left out, display scale `scale`.
fn write_numeric(unscaled: i128, scale: i8, out: &mut Vec<u8>) {
    let scale = scale.max(0) as usize;
    let mut text = itoa::Buffer::new();
    let digits = text.format(unscaled.unsigned_abs()).as_bytes();
    // The integer digits right-aligned and the fraction digits left-aligned
    // on 4-digit group boundaries around the decimal point. At most 39
    // digits and a scale of 38: 40 + 40 bytes.
    let mut aligned = [b'0'; 80];
    let int_len = digits.len().saturating_sub(scale);
    let int_padded = int_len.div_ceil(4) * 4;
    aligned[int_padded - int_len..int_padded].copy_from_slice(&digits[..int_len]);
    let fraction = &digits[int_len..];
    let fraction_at = int_padded + scale - fraction.len();
    aligned[fraction_at..fraction_at + fraction.len()].copy_from_slice(fraction);
    let total = int_padded + scale.div_ceil(4) * 4;
    let mut groups = [0i16; 20];
    for (group, chunk) in groups.iter_mut().zip(aligned[..total].chunks(4)) {
        *group = chunk.iter().fold(0i16, |n, d| n * 10 + i16::from(d - b'0'));
    }
    let groups = &groups[..total / 4];
    let leading = groups.iter().take_while(|g| **g == 0).count();
    let trailing = groups[leading..]
        .iter()
        .rev()
        .take_while(|g| **g == 0)
        .count();
    let kept = &groups[leading..groups.len() - trailing];
    let (weight, sign) = if kept.is_empty() {
        (0i16, 0u16)
    } else {
        (
            (int_padded / 4) as i16 - 1 - leading as i16,
            if unscaled < 0 { 0x4000 } else { 0 },
        )
    };
    out.extend_from_slice(&(kept.len() as i16).to_be_bytes());
    out.extend_from_slice(&weight.to_be_bytes());
    out.extend_from_slice(&sign.to_be_bytes());
    out.extend_from_slice(&(scale as u16).to_be_bytes());
    for group in kept {
        out.extend_from_slice(&group.to_be_bytes());
    }
}

#[cfg(test)]
mod tests;
