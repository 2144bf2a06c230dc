//! The builder of one scalar Arrow column (or of a list's elements): an enum
//! over the Arrow builders, so that every append is one `match`.

use std::io::Write as _;
use std::mem::size_of;
use std::sync::Arc;

use arrow::array::{
    ArrayBuilder, ArrayRef, BinaryBuilder, BooleanBuilder, Date32Builder, Decimal128Builder,
    FixedSizeBinaryBuilder, Float32Builder, Float64Builder, Int16Builder, Int32Builder,
    Int64Builder, IntervalMonthDayNanoBuilder, StringArray, StringBuilder,
    Time64MicrosecondBuilder, TimestampMicrosecondBuilder, UInt32Builder,
};
use arrow::datatypes::DataType;

use super::datetime;
use super::error::{DecodeResult, Fault};
use super::mapping::ScalarKind;
use super::numeric;
use super::text::{self, be_bytes};

/// The only binary format version of jsonb (its first byte).
const JSONB_BINARY_VERSION: u8 = 1;

/// Average bytes reserved per value of variable-length columns.
const AVERAGE_VALUE_BYTES: usize = 16;

/// One Arrow builder per [`ScalarKind`].
#[derive(Debug)]
pub(crate) enum ScalarBuilder {
    /// bool.
    Bool(BooleanBuilder),
    /// int2.
    Int16(Int16Builder),
    /// int4.
    Int32(Int32Builder),
    /// int8.
    Int64(Int64Builder),
    /// oid.
    Oid(UInt32Builder),
    /// float4.
    Float32(Float32Builder),
    /// float8.
    Float64(Float64Builder),
    /// numeric(p,s): the builder, precision and scale.
    Decimal(Decimal128Builder, u8, i8),
    /// Text types and text forms: binary and text are the same UTF-8. Kept
    /// as bytes and checked as UTF-8 once per batch in `finish` (one pass
    /// over the whole buffer is several times cheaper than one per value).
    Text(BinaryBuilder),
    /// jsonb: stored like `Text`; its binary form has a version byte first.
    Jsonb(BinaryBuilder),
    /// `"char"`.
    Char(StringBuilder),
    /// bytea.
    Bytea(BinaryBuilder),
    /// date.
    Date(Date32Builder),
    /// time.
    Time(Time64MicrosecondBuilder),
    /// timestamp (`false`) or timestamptz (`true`: text carries an offset).
    Timestamp(TimestampMicrosecondBuilder, bool),
    /// interval.
    Interval(IntervalMonthDayNanoBuilder),
    /// uuid.
    Uuid(FixedSizeBinaryBuilder),
}

/// Runs `$body` with `$b` bound to the inner Arrow builder, whatever it is.
macro_rules! each_builder {
    ($self:expr, $b:ident => $body:expr) => {
        match $self {
            ScalarBuilder::Bool($b) => $body,
            ScalarBuilder::Int16($b) => $body,
            ScalarBuilder::Int32($b) => $body,
            ScalarBuilder::Int64($b) => $body,
            ScalarBuilder::Oid($b) => $body,
            ScalarBuilder::Float32($b) => $body,
            ScalarBuilder::Float64($b) => $body,
            ScalarBuilder::Decimal($b, ..) => $body,
            ScalarBuilder::Text($b) => $body,
            ScalarBuilder::Jsonb($b) => $body,
            ScalarBuilder::Char($b) => $body,
            ScalarBuilder::Bytea($b) => $body,
            ScalarBuilder::Date($b) => $body,
            ScalarBuilder::Time($b) => $body,
            ScalarBuilder::Timestamp($b, _) => $body,
            ScalarBuilder::Interval($b) => $body,
            ScalarBuilder::Uuid($b) => $body,
        }
    };
}

impl ScalarBuilder {
    /// A builder for `kind` with room for `capacity` values.
    pub(crate) fn new(kind: ScalarKind, capacity: usize) -> Self {
        let data_capacity = capacity.saturating_mul(AVERAGE_VALUE_BYTES);
        match kind {
            ScalarKind::Bool => Self::Bool(BooleanBuilder::with_capacity(capacity)),
            ScalarKind::Int16 => Self::Int16(Int16Builder::with_capacity(capacity)),
            ScalarKind::Int32 => Self::Int32(Int32Builder::with_capacity(capacity)),
            ScalarKind::Int64 => Self::Int64(Int64Builder::with_capacity(capacity)),
            ScalarKind::Oid => Self::Oid(UInt32Builder::with_capacity(capacity)),
            ScalarKind::Float32 => Self::Float32(Float32Builder::with_capacity(capacity)),
            ScalarKind::Float64 => Self::Float64(Float64Builder::with_capacity(capacity)),
            ScalarKind::Decimal { precision, scale } => Self::Decimal(
                Decimal128Builder::with_capacity(capacity)
                    .with_data_type(DataType::Decimal128(precision, scale)),
                precision,
                scale,
            ),
            ScalarKind::Text | ScalarKind::TextForm => {
                Self::Text(BinaryBuilder::with_capacity(capacity, data_capacity))
            }
            ScalarKind::Jsonb => Self::Jsonb(BinaryBuilder::with_capacity(capacity, data_capacity)),
            ScalarKind::Char => Self::Char(StringBuilder::with_capacity(capacity, capacity)),
            ScalarKind::Bytea => Self::Bytea(BinaryBuilder::with_capacity(capacity, data_capacity)),
            ScalarKind::Date => Self::Date(Date32Builder::with_capacity(capacity)),
            ScalarKind::Time => Self::Time(Time64MicrosecondBuilder::with_capacity(capacity)),
            ScalarKind::Timestamp => {
                Self::Timestamp(TimestampMicrosecondBuilder::with_capacity(capacity), false)
            }
            ScalarKind::TimestampTz => Self::Timestamp(
                TimestampMicrosecondBuilder::with_capacity(capacity).with_timezone("UTC"),
                true,
            ),
            ScalarKind::Interval => {
                Self::Interval(IntervalMonthDayNanoBuilder::with_capacity(capacity))
            }
            ScalarKind::Uuid => Self::Uuid(FixedSizeBinaryBuilder::with_capacity(capacity, 16)),
        }
    }

    /// Appends a NULL.
    #[inline]
    pub(crate) fn append_null(&mut self) {
        each_builder!(self, b => b.append_null())
    }

    /// Appends a value in the binary COPY format of the column's
    /// [`copy_select_expr`](super::copy_select_expr). On error nothing is
    /// appended.
    #[inline]
    pub(crate) fn append_binary(&mut self, value: &[u8]) -> DecodeResult<()> {
        match self {
            Self::Bool(b) => b.append_value(text::bool_from_binary(value)?),
            Self::Int16(b) => {
                b.append_value(i16::from_be_bytes(be_bytes(value, "int2 is not 2 bytes")?))
            }
            Self::Int32(b) => {
                b.append_value(i32::from_be_bytes(be_bytes(value, "int4 is not 4 bytes")?))
            }
            Self::Int64(b) => {
                b.append_value(i64::from_be_bytes(be_bytes(value, "int8 is not 8 bytes")?))
            }
            Self::Oid(b) => {
                b.append_value(u32::from_be_bytes(be_bytes(value, "oid is not 4 bytes")?))
            }
            Self::Float32(b) => b.append_value(f32::from_be_bytes(be_bytes(
                value,
                "float4 is not 4 bytes",
            )?)),
            Self::Float64(b) => b.append_value(f64::from_be_bytes(be_bytes(
                value,
                "float8 is not 8 bytes",
            )?)),
            Self::Decimal(b, precision, scale) => {
                b.append_value(numeric::decimal_from_binary(value, *precision, *scale)?)
            }
            Self::Text(b) => b.append_value(value),
            Self::Jsonb(b) => match value {
                [JSONB_BINARY_VERSION, text @ ..] => b.append_value(text),
                [] => return Err(Fault::Malformed("jsonb binary value is empty")),
                _ => return Err(Fault::Malformed("jsonb binary format version is not 1")),
            },
            Self::Char(b) => match value {
                [byte] => b.append_value(text::char_text(*byte, &mut [0; 4])),
                _ => return Err(Fault::Malformed("\"char\" is not one byte")),
            },
            Self::Bytea(b) => b.append_value(value),
            Self::Date(b) => b.append_value(datetime::date_from_binary(value)?),
            Self::Time(b) => b.append_value(datetime::time_from_binary(value)?),
            Self::Timestamp(b, _) => b.append_value(datetime::timestamp_from_binary(value)?),
            Self::Interval(b) => b.append_value(datetime::interval_from_binary(value)?),
            Self::Uuid(b) => b
                .append_value(value)
                .map_err(|_| Fault::Malformed("uuid is not 16 bytes"))?,
        }
        Ok(())
    }

    /// Appends a value in text format (the type's output function under the
    /// session settings). On error nothing is appended.
    #[inline]
    pub(crate) fn append_text(&mut self, value: &[u8]) -> DecodeResult<()> {
        match self {
            Self::Bool(b) => b.append_value(text::bool_from_text(value)?),
            Self::Int16(b) => {
                b.append_value(text::int_from_text(value, i16::MIN.into(), i16::MAX.into())? as i16)
            }
            Self::Int32(b) => {
                b.append_value(text::int_from_text(value, i32::MIN.into(), i32::MAX.into())? as i32)
            }
            Self::Int64(b) => b.append_value(text::int_from_text(value, i64::MIN, i64::MAX)?),
            Self::Oid(b) => b.append_value(text::u32_from_text(value)?),
            Self::Float32(b) => b.append_value(text::f32_from_text(value)?),
            Self::Float64(b) => b.append_value(text::f64_from_text(value)?),
            Self::Decimal(b, precision, scale) => {
                b.append_value(numeric::decimal_from_text(value, *precision, *scale)?)
            }
            Self::Text(b) | Self::Jsonb(b) => b.append_value(value),
            Self::Char(b) => b.append_value(text::utf8(value)?),
            Self::Bytea(b) => {
                let parsed = text::bytea_text(value)?;
                // Writing into the builder's memory cannot fail.
                text::decode_bytea(parsed, |chunk| {
                    let _ = b.write_all(chunk);
                });
                // Closes the value written above.
                b.append_value(b"");
            }
            Self::Date(b) => b.append_value(datetime::date_from_text(value)?),
            Self::Time(b) => b.append_value(datetime::time_from_text(value)?),
            Self::Timestamp(b, with_offset) => {
                b.append_value(datetime::timestamp_from_text(value, *with_offset)?)
            }
            Self::Interval(b) => b.append_value(datetime::interval_from_text(value)?),
            Self::Uuid(b) => b
                .append_value(text::uuid_from_text(value)?)
                .map_err(|_| Fault::Malformed("uuid is not 16 bytes"))?,
        }
        Ok(())
    }

    /// Number of values appended since the last `finish`.
    pub(crate) fn len(&self) -> usize {
        each_builder!(self, b => ArrayBuilder::len(b))
    }

    /// The array of the values appended; the builder starts over empty.
    /// Fails when a text value is not valid UTF-8 (the values are dropped).
    pub(crate) fn finish(&mut self) -> DecodeResult<ArrayRef> {
        match self {
            Self::Text(b) | Self::Jsonb(b) => StringArray::try_from_binary(b.finish())
                .map(|a| Arc::new(a) as ArrayRef)
                .map_err(|_| Fault::Malformed("text is not valid UTF-8")),
            other => Ok(each_builder!(other, b => Arc::new(b.finish()) as ArrayRef)),
        }
    }

    /// An estimate of the bytes buffered (values and offsets).
    pub(crate) fn approx_bytes(&self) -> usize {
        fn fixed<T>(values: &[T]) -> usize {
            std::mem::size_of_val(values)
        }
        let len = self.len();
        // Validity bits, plus 4 offset bytes per value of variable-length types.
        len / 8
            + match self {
                Self::Bool(b) => b.values_slice().len(),
                Self::Int16(b) => fixed(b.values_slice()),
                Self::Int32(b) => fixed(b.values_slice()),
                Self::Int64(b) => fixed(b.values_slice()),
                Self::Oid(b) => fixed(b.values_slice()),
                Self::Float32(b) => fixed(b.values_slice()),
                Self::Float64(b) => fixed(b.values_slice()),
                Self::Decimal(b, ..) => fixed(b.values_slice()),
                Self::Char(b) => b.values_slice().len() + len * size_of::<i32>(),
                Self::Text(b) | Self::Jsonb(b) | Self::Bytea(b) => {
                    b.values_slice().len() + len * size_of::<i32>()
                }
                Self::Date(b) => fixed(b.values_slice()),
                Self::Time(b) => fixed(b.values_slice()),
                Self::Timestamp(b, _) => fixed(b.values_slice()),
                Self::Interval(b) => fixed(b.values_slice()),
                Self::Uuid(b) => b.values_slice().len(),
            }
    }
}
