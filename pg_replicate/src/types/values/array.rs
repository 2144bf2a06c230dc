//! One-dimensional Postgres arrays to Arrow `List`.
//!
//! Binary format (`array_send`): `ndim` i32, has-nulls flag i32, element
//! oid u32, then per dimension `size` i32 and `lbound` i32, then every
//! element as an i32 length (−1 for NULL) followed by that many bytes in the
//! element type's binary format. An empty array has `ndim` 0.
//!
//! Text format (`array_out`): `{a,b,NULL}`, optionally preceded by a
//! `[lo:hi]=` bounds decoration when the lower bound is not 1. Elements are
//! double-quoted when they contain the delimiter, braces, quotes,
//! backslashes or white space, are empty, or spell `NULL`; inside quotes a
//! backslash escapes the next character. An unquoted `NULL` is a NULL
//! element, a quoted `"NULL"` the string. The delimiter is `,` for every
//! built-in type but `box` (`;`).
//!
//! Lower bounds are not kept; arrays of more than one dimension are refused.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, ListArray, NullBufferBuilder};
use arrow::buffer::{OffsetBuffer, ScalarBuffer};
use arrow::datatypes::FieldRef;

use super::error::{DecodeResult, Fault};
use super::mapping::{list_item_field, ScalarKind};
use super::scalar::ScalarBuilder;

/// Average elements reserved per array.
const AVERAGE_ELEMENTS: usize = 4;

const TRUNCATED: Fault = Fault::Malformed("binary array is shorter than its header says");

/// Builds a `List` column from one-dimensional array values.
#[derive(Debug)]
pub(crate) struct ListBuilder {
    field: FieldRef,
    /// Element offsets (global over `chunks` and `values`); starts with 0.
    offsets: Vec<i32>,
    nulls: NullBufferBuilder,
    values: ScalarBuilder,
    /// Element arrays set aside when a failed append had to be rolled back.
    chunks: Vec<ArrayRef>,
    /// Number of elements in `chunks`.
    chunked: usize,
    /// Set when setting elements aside found invalid text; `finish` fails.
    invalid: Option<Fault>,
    /// The element oid binary values must carry.
    element_oid: u32,
    /// The text-format delimiter.
    delimiter: u8,
    /// Reused buffer for de-escaping quoted text elements.
    scratch: Vec<u8>,
}

fn read_i32(value: &[u8], at: &mut usize) -> DecodeResult<i32> {
    let Some(&[b0, b1, b2, b3]) = value.get(*at..*at + 4) else {
        return Err(TRUNCATED);
    };
    *at += 4;
    Ok(i32::from_be_bytes([b0, b1, b2, b3]))
}

impl ListBuilder {
    /// A builder of lists of `element`, with room for `capacity` arrays.
    pub(crate) fn new(
        element: ScalarKind,
        element_oid: u32,
        delimiter: u8,
        capacity: usize,
    ) -> Self {
        let mut offsets = Vec::with_capacity(capacity + 1);
        offsets.push(0);
        Self {
            field: list_item_field(element),
            offsets,
            nulls: NullBufferBuilder::new(capacity),
            values: ScalarBuilder::new(element, capacity.saturating_mul(AVERAGE_ELEMENTS)),
            chunks: Vec::new(),
            chunked: 0,
            invalid: None,
            element_oid,
            delimiter,
            scratch: Vec::new(),
        }
    }

    /// Number of arrays appended.
    pub(crate) fn len(&self) -> usize {
        self.offsets.len() - 1
    }

    /// Appends a NULL array.
    pub(crate) fn append_null(&mut self) {
        // `offsets` always starts with 0, so it is never empty.
        let end = self.offsets.last().copied().unwrap_or(0);
        self.offsets.push(end);
        self.nulls.append_null();
    }

    /// Closes the array whose elements were appended since the last one.
    fn commit(&mut self) -> DecodeResult<()> {
        let end = i32::try_from(self.chunked + self.values.len())
            .map_err(|_| Fault::Unrepresentable("more than 2^31 list elements in one batch"))?;
        self.offsets.push(end);
        self.nulls.append_non_null();
        Ok(())
    }

    /// Undoes the elements appended by a failed append: the elements of the
    /// committed arrays are set aside (rare path; costs a copy).
    #[cold]
    fn rollback(&mut self) {
        let committed = self.offsets.last().copied().unwrap_or(0) as usize - self.chunked;
        if self.values.len() == committed {
            return;
        }
        match self.values.finish() {
            Ok(values) if committed > 0 => {
                self.chunks.push(values.slice(0, committed));
                self.chunked += committed;
            }
            Ok(_) => {}
            Err(fault) => self.invalid = Some(fault),
        }
    }

    /// Appends a binary array value. On error nothing is appended.
    pub(crate) fn append_binary(&mut self, value: &[u8]) -> DecodeResult<()> {
        let result = self.decode_binary(value).and_then(|()| self.commit());
        if result.is_err() {
            self.rollback();
        }
        result
    }

    fn decode_binary(&mut self, value: &[u8]) -> DecodeResult<()> {
        let mut at = 0;
        let ndim = read_i32(value, &mut at)?;
        let flags = read_i32(value, &mut at)?;
        let element_oid = read_i32(value, &mut at)? as u32;
        if !(0..=6).contains(&ndim) || !(0..=1).contains(&flags) {
            return Err(Fault::Malformed("binary array header is invalid"));
        }
        if ndim > 1 {
            return Err(Fault::MultiDimensional(ndim));
        }
        if element_oid != self.element_oid {
            return Err(Fault::Malformed(
                "binary array element type differs from the one copy_select_expr selects",
            ));
        }
        let count = if ndim == 0 {
            0
        } else {
            let size = read_i32(value, &mut at)?;
            let _lower_bound = read_i32(value, &mut at)?;
            usize::try_from(size).map_err(|_| Fault::Malformed("negative array size"))?
        };
        for _ in 0..count {
            let len = read_i32(value, &mut at)?;
            if len == -1 {
                self.values.append_null();
                continue;
            }
            let len =
                usize::try_from(len).map_err(|_| Fault::Malformed("negative element length"))?;
            let element = value.get(at..at + len).ok_or(TRUNCATED)?;
            at += len;
            self.values.append_binary(element)?;
        }
        if at != value.len() {
            return Err(Fault::Malformed(
                "binary array has bytes after its last element",
            ));
        }
        Ok(())
    }

    /// Appends a text array value. On error nothing is appended.
    pub(crate) fn append_text(&mut self, value: &[u8]) -> DecodeResult<()> {
        let result = self.decode_text(value).and_then(|()| self.commit());
        if result.is_err() {
            self.rollback();
        }
        result
    }

    fn decode_text(&mut self, value: &[u8]) -> DecodeResult<()> {
        const BAD: Fault = Fault::Malformed("array text is not {...}");
        let mut s = skip_bounds(value)?;
        s = s.strip_prefix(b"{").ok_or(BAD)?;
        s = s.trim_ascii_start();
        if let Some(rest) = s.strip_prefix(b"}") {
            return if rest.trim_ascii().is_empty() {
                Ok(())
            } else {
                Err(BAD)
            };
        }
        loop {
            s = s.trim_ascii_start();
            match s.first() {
                Some(b'{') => {
                    let depth = 1 + s.iter().take_while(|&&b| b == b'{').count();
                    return Err(Fault::MultiDimensional(depth as i32));
                }
                Some(b'"') => s = self.quoted_element(&s[1..])?,
                Some(_) => s = self.unquoted_element(s)?,
                None => return Err(BAD),
            }
            s = s.trim_ascii_start();
            match s.split_first() {
                Some((&b'}', rest)) if rest.trim_ascii().is_empty() => return Ok(()),
                Some((&b, rest)) if b == self.delimiter => s = rest,
                _ => return Err(BAD),
            }
        }
    }

    /// Appends the element after an opening quote; returns what follows the
    /// closing quote.
    fn quoted_element<'a>(&mut self, s: &'a [u8]) -> DecodeResult<&'a [u8]> {
        const UNTERMINATED: Fault = Fault::Malformed("array text has an unterminated quote");
        let end = memchr::memchr2(b'"', b'\\', s).ok_or(UNTERMINATED)?;
        if s[end] == b'"' {
            self.values.append_text(&s[..end])?;
            return Ok(&s[end + 1..]);
        }
        // Escapes: de-escape into the scratch buffer.
        self.scratch.clear();
        let mut i = 0;
        loop {
            match s.get(i) {
                None => return Err(UNTERMINATED),
                Some(b'"') => break,
                Some(b'\\') => {
                    self.scratch.push(*s.get(i + 1).ok_or(UNTERMINATED)?);
                    i += 2;
                }
                Some(&b) => {
                    self.scratch.push(b);
                    i += 1;
                }
            }
        }
        self.values.append_text(&self.scratch)?;
        Ok(&s[i + 1..])
    }

    /// Appends an unquoted element (`NULL` is a NULL); returns what follows.
    fn unquoted_element<'a>(&mut self, s: &'a [u8]) -> DecodeResult<&'a [u8]> {
        let delimiter = self.delimiter;
        let end = s
            .iter()
            .position(|&b| b == delimiter || b == b'}' || b == b'\\' || b == b'"' || b == b'{')
            .unwrap_or(s.len());
        match s.get(end) {
            Some(b'\\') => {}
            Some(b'"' | b'{') => {
                return Err(Fault::Malformed(
                    "array text has a misplaced quote or brace",
                ))
            }
            _ => {
                let element = s[..end].trim_ascii_end();
                if element.is_empty() {
                    return Err(Fault::Malformed("array text has an empty unquoted element"));
                } else if element.eq_ignore_ascii_case(b"NULL") {
                    self.values.append_null();
                } else {
                    self.values.append_text(element)?;
                }
                return Ok(&s[end..]);
            }
        }
        // array_out quotes every element with a backslash, but array_in
        // accepts escapes in unquoted elements too.
        self.scratch.clear();
        let mut i = 0;
        while let Some(&b) = s.get(i) {
            if b == delimiter || b == b'}' {
                break;
            }
            if b == b'\\' {
                self.scratch.push(
                    *s.get(i + 1)
                        .ok_or(Fault::Malformed("array text ends in a backslash"))?,
                );
                i += 2;
            } else {
                self.scratch.push(b);
                i += 1;
            }
        }
        let trimmed = self.scratch.trim_ascii_end().len();
        self.scratch.truncate(trimmed);
        self.values.append_text(&self.scratch)?;
        Ok(&s[i..])
    }

    /// The list array of the arrays appended; the builder starts over empty.
    /// Fails when a text element is not valid UTF-8.
    pub(crate) fn finish(&mut self) -> DecodeResult<ArrayRef> {
        let last = self.values.finish();
        let chunks = std::mem::take(&mut self.chunks);
        self.chunked = 0;
        let offsets = std::mem::replace(&mut self.offsets, vec![0]);
        let nulls = self.nulls.finish();
        if let Some(fault) = self.invalid.take() {
            return Err(fault);
        }
        let last = last?;
        let values = if chunks.is_empty() {
            last
        } else {
            let mut parts: Vec<&dyn Array> = chunks.iter().map(|c| c.as_ref()).collect();
            parts.push(last.as_ref());
            arrow::compute::concat(&parts)
                .map_err(|_| Fault::Unrepresentable("list elements of different types"))?
        };
        let offsets = OffsetBuffer::new(ScalarBuffer::from(offsets));
        Ok(Arc::new(ListArray::new(
            self.field.clone(),
            offsets,
            values,
            nulls,
        )))
    }

    /// An estimate of the bytes buffered.
    pub(crate) fn approx_bytes(&self) -> usize {
        self.len() * 4
            + self.len() / 8
            + self.values.approx_bytes()
            + self
                .chunks
                .iter()
                .map(|c| c.get_array_memory_size())
                .sum::<usize>()
    }
}

/// Skips a `[lo:hi]=` bounds decoration; more than one dimension is refused.
fn skip_bounds(value: &[u8]) -> DecodeResult<&[u8]> {
    const BAD: Fault = Fault::Malformed("array text has malformed bounds");
    let mut s = value.trim_ascii_start();
    let mut dimensions = 0;
    while let Some(rest) = s.strip_prefix(b"[") {
        let close = memchr::memchr(b']', rest).ok_or(BAD)?;
        let bounds = &rest[..close];
        if bounds.is_empty()
            || !bounds
                .iter()
                .all(|b| b.is_ascii_digit() || matches!(b, b':' | b'-' | b'+'))
        {
            return Err(BAD);
        }
        dimensions += 1;
        s = &rest[close + 1..];
    }
    if dimensions == 0 {
        return Ok(s);
    }
    if dimensions > 1 {
        return Err(Fault::MultiDimensional(dimensions));
    }
    s.strip_prefix(b"=")
        .map(<[u8]>::trim_ascii_start)
        .ok_or(BAD)
}

#[cfg(test)]
mod tests {
    use arrow::array::{
        Array, ArrayRef, AsArray, BinaryArray, Date32Array, Decimal128Array, FixedSizeBinaryArray,
        Int32Array, ListArray, StringArray, TimestampMicrosecondArray,
    };
    use arrow::datatypes::DataType;

    use super::super::mapping::tests::{column, numeric_typmod};
    use super::super::numeric::numeric_binary;
    use super::super::tests::{bin, same};
    use super::super::{copy_select_expr, ColumnBuilder, ValueError};

    /// A binary one-dimensional array.
    fn array_binary(element_oid: u32, lower_bound: i32, elements: &[Option<Vec<u8>>]) -> Vec<u8> {
        let mut out = Vec::new();
        let has_null = elements.iter().any(Option::is_none);
        out.extend_from_slice(&1i32.to_be_bytes());
        out.extend_from_slice(&(has_null as i32).to_be_bytes());
        out.extend_from_slice(&element_oid.to_be_bytes());
        out.extend_from_slice(&(elements.len() as i32).to_be_bytes());
        out.extend_from_slice(&lower_bound.to_be_bytes());
        for e in elements {
            match e {
                Some(v) => {
                    out.extend_from_slice(&(v.len() as i32).to_be_bytes());
                    out.extend_from_slice(v);
                }
                None => out.extend_from_slice(&(-1i32).to_be_bytes()),
            }
        }
        out
    }

    /// The binary empty array: no dimensions.
    fn empty_array_binary(element_oid: u32) -> Vec<u8> {
        let mut out = vec![0; 8];
        out.extend_from_slice(&element_oid.to_be_bytes());
        out
    }

    fn list_values<T: Array + Clone + 'static>(a: &ArrayRef) -> (ListArray, T) {
        let list = a.as_list::<i32>().clone();
        let values = list
            .values()
            .as_any()
            .downcast_ref::<T>()
            .expect("element type")
            .clone();
        (list, values)
    }

    #[test]
    fn int_arrays_with_nulls_and_bounds() {
        let c = column(1007, -1, "integer[]", Some(23));
        let int = |v: i32| Some(v.to_be_bytes().to_vec());
        let a = same(
            &c,
            &[
                (
                    bin(array_binary(23, 1, &[int(1), None, int(-3)])),
                    Some("{1,NULL,-3}"),
                ),
                (bin(empty_array_binary(23)), Some("{}")),
                (None, None),
                (
                    bin(array_binary(23, 0, &[int(7), int(8)])),
                    Some("[0:1]={7,8}"),
                ),
                (
                    bin(array_binary(23, 1, &[int(i32::MIN)])),
                    Some("{ -2147483648 }"),
                ),
            ],
        );
        let (list, values) = list_values::<Int32Array>(&a);
        assert_eq!(list.value_offsets(), [0, 3, 3, 3, 5, 6]);
        assert!(list.is_null(2) && !list.is_null(1));
        assert_eq!(
            values.iter().collect::<Vec<_>>(),
            [Some(1), None, Some(-3), Some(7), Some(8), Some(i32::MIN)]
        );
        let DataType::List(item) = a.data_type() else {
            panic!()
        };
        assert_eq!(item.name(), "item");
        assert!(item.is_nullable());
    }

    #[test]
    fn text_arrays_quoting_and_escapes() {
        let c = column(1009, -1, "text[]", Some(25));
        let elements = [
            "a,b",
            "c\"d",
            "NULL",
            "",
            "back\\slash",
            "plain",
            "{}",
            " sp ",
        ];
        let mut binary: Vec<Option<Vec<u8>>> = elements.iter().map(bin).collect();
        binary.insert(3, None);
        let text = r#"{"a,b","c\"d","NULL",NULL,"","back\\slash",plain,"{}"," sp "}"#;
        let a = same(&c, &[(bin(array_binary(25, 1, &binary)), Some(text))]);
        let (_, values) = list_values::<StringArray>(&a);
        let got: Vec<_> = values.iter().collect();
        let mut want: Vec<_> = elements.iter().map(|e| Some(*e)).collect();
        want.insert(3, None);
        assert_eq!(got, want);
        // Unquoted elements may carry escapes and surrounding white space, and
        // `null` is NULL in any case.
        let mut b = ColumnBuilder::new(&c, 1);
        b.append_text(br#"{ a\,b , null }"#).unwrap();
        let a = b.finish().unwrap();
        let (_, values) = list_values::<StringArray>(&a);
        assert_eq!(values.iter().collect::<Vec<_>>(), [Some("a,b"), None]);
        // An element that is not UTF-8 fails the batch when it is finished,
        // also after a failed append set earlier elements aside.
        b.append_binary(&array_binary(25, 1, &[Some(b"\xff".to_vec())]))
            .unwrap();
        assert!(b.append_text(b"{unterminated").is_err());
        assert!(b.finish().is_err());
        b.append_text(b"{ok}").unwrap();
        let a = b.finish().unwrap();
        let (_, values) = list_values::<StringArray>(&a);
        assert_eq!(values.iter().collect::<Vec<_>>(), [Some("ok")]);
    }

    #[test]
    fn arrays_of_other_element_types() {
        // numeric(5,2)[] → List<Decimal128(5,2)>, natively.
        let c = column(1231, numeric_typmod(5, 2), "numeric(5,2)[]", Some(1700));
        assert_eq!(copy_select_expr(&c), "\"c\"");
        let n = bin(numeric_binary(0, 0, 2, &[1, 5000]));
        let a = same(
            &c,
            &[(bin(array_binary(1700, 1, &[n, None])), Some("{1.50,NULL}"))],
        );
        let (_, values) = list_values::<Decimal128Array>(&a);
        assert_eq!(values.iter().collect::<Vec<_>>(), [Some(150), None]);

        // jsonb[] → List<Utf8>; COPY sends binary jsonb elements.
        let c = column(3807, -1, "jsonb[]", Some(3802));
        assert_eq!(copy_select_expr(&c), "\"c\"");
        let text = r#"{"{\"a\": 1}",NULL}"#;
        let element = bin(b"\x01{\"a\": 1}");
        let a = same(
            &c,
            &[(bin(array_binary(3802, 1, &[element, None])), Some(text))],
        );
        let (_, values) = list_values::<StringArray>(&a);
        assert_eq!(values.value(0), "{\"a\": 1}");
        assert!(values.is_null(1));

        // box[] uses ';' between elements.
        let c = column(1020, -1, "box[]", Some(603));
        let text = "{(1,1),(0,0);(2,2),(1,1)}";
        let a = same(&c, &[(bin(text), Some(text))]);
        let (_, values) = list_values::<StringArray>(&a);
        assert_eq!(values.value(1), "(2,2),(1,1)");

        // bytea[]: the element's own backslash is escaped in the array text.
        let c = column(1001, -1, "bytea[]", Some(17));
        let a = same(
            &c,
            &[(
                bin(array_binary(17, 1, &[bin([1u8, 2])])),
                Some(r#"{"\\x0102"}"#),
            )],
        );
        let (_, values) = list_values::<BinaryArray>(&a);
        assert_eq!(values.value(0), [1, 2]);

        // uuid[], timestamptz[], date[] with infinity.
        let c = column(2951, -1, "uuid[]", Some(2950));
        let a = same(
            &c,
            &[(
                bin(array_binary(2950, 1, &[bin([7u8; 16])])),
                Some("{07070707-0707-0707-0707-070707070707}"),
            )],
        );
        assert_eq!(list_values::<FixedSizeBinaryArray>(&a).1.value(0), [7; 16]);
        let c = column(1185, -1, "timestamp with time zone[]", Some(1184));
        let ts = bin(0i64.to_be_bytes());
        let a = same(
            &c,
            &[(
                bin(array_binary(1184, 1, &[ts, bin(i64::MAX.to_be_bytes())])),
                Some(r#"{"2000-01-01 00:00:00+00",infinity}"#),
            )],
        );
        let (_, values) = list_values::<TimestampMicrosecondArray>(&a);
        assert_eq!(values.values().as_ref(), [946_684_800_000_000, i64::MAX]);
        let c = column(1182, -1, "date[]", Some(1082));
        let a = same(
            &c,
            &[(
                bin(array_binary(1082, 1, &[bin(i32::MIN.to_be_bytes())])),
                Some("{-infinity}"),
            )],
        );
        assert_eq!(list_values::<Date32Array>(&a).1.value(0), -i32::MAX);
    }

    #[test]
    fn multi_dimensional_arrays_are_refused() {
        let c = column(1007, -1, "integer[]", Some(23));
        let mut b = ColumnBuilder::new(&c, 1);
        let mut two_d = Vec::new();
        for v in [2i32, 0, 23, 1, 1, 1, 1, 4, 1, 4, 2] {
            two_d.extend_from_slice(&v.to_be_bytes());
        }
        let e = b.append_binary(&two_d).unwrap_err();
        assert_eq!(
            e,
            ValueError::MultiDimensionalArray {
                pg_type: "integer[]".into(),
                dimensions: 2
            }
        );
        assert!(e
            .to_string()
            .contains("only one-dimensional arrays are supported"));
        let e = b.append_text(b"{{1,2},{3,4}}").unwrap_err();
        assert!(matches!(
            e,
            ValueError::MultiDimensionalArray { dimensions: 2, .. }
        ));
        let e = b.append_text(b"[1:1][1:2]={{1,2}}").unwrap_err();
        assert!(matches!(
            e,
            ValueError::MultiDimensionalArray { dimensions: 2, .. }
        ));
        assert!(b.is_empty());
    }

    #[test]
    fn failed_array_appends_leave_the_builder_unchanged() {
        let c = column(1007, -1, "integer[]", Some(23));
        let int = |v: i32| Some(v.to_be_bytes().to_vec());
        let mut b = ColumnBuilder::new(&c, 1);
        b.append_text(b"{1,2}").unwrap();
        // Fails at its third element, after two were appended to the child.
        assert!(b.append_text(b"{3,4,x,5}").is_err());
        b.append_binary(&array_binary(23, 1, &[int(6)])).unwrap();
        // Wrong element type (the column must be selected natively).
        assert!(b.append_binary(&array_binary(25, 1, &[bin("7")])).is_err());
        // Truncated element.
        let mut truncated = array_binary(23, 1, &[int(8), int(9)]);
        truncated.pop();
        assert!(b.append_binary(&truncated).is_err());
        for bad in ["{1,2", "1,2}", "{1,,2}", "{\"1}", "{1}x", "[1:2={1,2}"] {
            assert!(b.append_text(bad.as_bytes()).is_err(), "{bad}");
        }
        b.append_null();
        b.append_text(b"{10}").unwrap();
        assert_eq!(b.len(), 4);
        let a = b.finish().unwrap();
        let (list, values) = list_values::<Int32Array>(&a);
        assert_eq!(list.value_offsets(), [0, 2, 3, 3, 4]);
        assert_eq!(values.values().as_ref(), [1, 2, 6, 10]);
        // Reusable after finish.
        b.append_text(b"{11}").unwrap();
        let a = b.finish().unwrap();
        assert_eq!(list_values::<Int32Array>(&a).1.values().as_ref(), [11]);
    }
}
