//! Postgres arrays to Arrow: a `List` of the elements, or the exact struct
//! of dimensions, lower bounds and elements ([`ArrayForm`]).
//!
//! Binary format (`array_send`): `ndim` i32, has-nulls flag i32, element
//! oid u32, then per dimension `size` i32 and `lbound` i32, then every
//! element, in row-major order, as an i32 length (−1 for NULL) followed by
//! that many bytes in the element type's binary format. An empty array has
//! `ndim` 0.
//!
//! Text format (`array_out`): `{a,b,NULL}`, one level of braces per
//! dimension (`{{1,2},{3,4}}`), preceded by a `[lo:hi]...=` bounds
//! decoration when a lower bound is not 1. Elements are double-quoted when
//! they contain the delimiter, braces, quotes, backslashes or white space,
//! are empty, or spell `NULL`; inside quotes a backslash escapes the next
//! character. An unquoted `NULL` is a NULL element, a quoted `"NULL"` the
//! string. The delimiter is `,` for every built-in type but `box` (`;`).
//!
//! Both formats give the same [`Shape`] and the same elements; the form
//! decides what is kept: [`ArrayForm::Lists`] refuses a shape a plain list
//! would lose, [`ArrayForm::Exact`] keeps it.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, Int32Array, ListArray, NullBufferBuilder, StructArray};
use arrow::buffer::{OffsetBuffer, ScalarBuffer};
use arrow::datatypes::FieldRef;

use super::error::{DecodeResult, Fault};
use super::mapping::{bounds_item_field, exact_array_fields, list_item_field, ScalarKind};
use super::scalar::ScalarBuilder;
use crate::types::table::ArrayForm;

/// Average elements reserved per array.
const AVERAGE_ELEMENTS: usize = 4;

/// Postgres' limit on array dimensions (`MAXDIM`).
const MAX_DIMENSIONS: usize = 6;

const TRUNCATED: Fault = Fault::Malformed("binary array is shorter than its header says");
const NOT_BRACED: Fault = Fault::Malformed("array text is not {...}");

/// The dimensions of one array value.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Shape {
    /// Number of dimensions; 0 for the empty array.
    ndim: usize,
    /// Size of each dimension (the first `ndim` entries).
    dims: [i32; MAX_DIMENSIONS],
    /// Lower bound of each dimension (the first `ndim` entries).
    lower_bounds: [i32; MAX_DIMENSIONS],
}

impl Shape {
    /// Number of elements: the product of the dimensions.
    fn elements(&self) -> DecodeResult<usize> {
        self.dims[..self.ndim].iter().try_fold(1usize, |n, &d| {
            usize::try_from(d)
                .ok()
                .and_then(|d| n.checked_mul(d))
                .ok_or(Fault::Malformed(
                    "array dimensions are negative or too large",
                ))
        })
    }
}

/// Builds a `List` column ([`ArrayForm::Lists`]) or an exact struct column
/// ([`ArrayForm::Exact`]) from array values.
#[derive(Debug)]
pub(crate) struct ListBuilder {
    form: ArrayForm,
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
    /// Exact form: offsets into `dims` and `lower_bounds`; starts with 0.
    shape_offsets: Vec<i32>,
    /// Exact form: the dimensions of every value, concatenated.
    dims: Vec<i32>,
    /// Exact form: the lower bounds of every value, concatenated.
    lower_bounds: Vec<i32>,
}

fn read_i32(value: &[u8], at: &mut usize) -> DecodeResult<i32> {
    let Some(&[b0, b1, b2, b3]) = value.get(*at..*at + 4) else {
        return Err(TRUNCATED);
    };
    *at += 4;
    Ok(i32::from_be_bytes([b0, b1, b2, b3]))
}

impl ListBuilder {
    /// A builder of arrays of `element` in `form`, with room for `capacity`
    /// arrays.
    pub(crate) fn new(
        element: ScalarKind,
        element_oid: u32,
        delimiter: u8,
        form: ArrayForm,
        capacity: usize,
    ) -> Self {
        let mut offsets = Vec::with_capacity(capacity + 1);
        offsets.push(0);
        let shape_capacity = if form == ArrayForm::Exact {
            capacity
        } else {
            0
        };
        let mut shape_offsets = Vec::with_capacity(shape_capacity + 1);
        shape_offsets.push(0);
        Self {
            form,
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
            shape_offsets,
            dims: Vec::with_capacity(shape_capacity),
            lower_bounds: Vec::with_capacity(shape_capacity),
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
        if self.form == ArrayForm::Exact {
            let end = self.shape_offsets.last().copied().unwrap_or(0);
            self.shape_offsets.push(end);
        }
    }

    /// Refuses, in the list form, a shape a plain list would lose.
    fn check_form(&self, shape: &Shape) -> DecodeResult<()> {
        if self.form == ArrayForm::Exact {
            return Ok(());
        }
        if shape.ndim > 1 {
            return Err(Fault::MultiDimensional(shape.ndim as i32));
        }
        if shape.ndim == 1 && shape.lower_bounds[0] != 1 {
            return Err(Fault::LowerBound);
        }
        Ok(())
    }

    /// Closes the array whose elements were appended since the last one.
    fn commit(&mut self, shape: &Shape) -> DecodeResult<()> {
        self.check_form(shape)?;
        const TOO_MANY: Fault = Fault::Unrepresentable("more than 2^31 list elements in one batch");
        let end = i32::try_from(self.chunked + self.values.len()).map_err(|_| TOO_MANY)?;
        if self.form == ArrayForm::Exact {
            let shape_end = i32::try_from(self.dims.len() + shape.ndim).map_err(|_| TOO_MANY)?;
            self.dims.extend_from_slice(&shape.dims[..shape.ndim]);
            self.lower_bounds
                .extend_from_slice(&shape.lower_bounds[..shape.ndim]);
            self.shape_offsets.push(shape_end);
        }
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
        let result = self
            .decode_binary(value)
            .and_then(|shape| self.commit(&shape));
        if result.is_err() {
            self.rollback();
        }
        result
    }

    fn decode_binary(&mut self, value: &[u8]) -> DecodeResult<Shape> {
        let mut at = 0;
        let ndim = read_i32(value, &mut at)?;
        let flags = read_i32(value, &mut at)?;
        let element_oid = read_i32(value, &mut at)? as u32;
        let ndim = usize::try_from(ndim)
            .ok()
            .filter(|&n| n <= MAX_DIMENSIONS)
            .ok_or(Fault::Malformed("binary array header is invalid"))?;
        if !(0..=1).contains(&flags) {
            return Err(Fault::Malformed("binary array header is invalid"));
        }
        if element_oid != self.element_oid {
            return Err(Fault::Malformed(
                "binary array element type differs from the one copy_select_expr selects",
            ));
        }
        let mut shape = Shape {
            ndim,
            ..Shape::default()
        };
        for dimension in 0..ndim {
            shape.dims[dimension] = read_i32(value, &mut at)?;
            shape.lower_bounds[dimension] = read_i32(value, &mut at)?;
        }
        // Refused shapes are refused before any element is decoded.
        self.check_form(&shape)?;
        let count = if ndim == 0 { 0 } else { shape.elements()? };
        // Every element takes at least its 4-byte length: a hostile header
        // cannot make the loop run past the value.
        if count > (value.len() - at) / 4 {
            return Err(TRUNCATED);
        }
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
        Ok(shape)
    }

    /// Appends a text array value. On error nothing is appended.
    pub(crate) fn append_text(&mut self, value: &[u8]) -> DecodeResult<()> {
        let result = self
            .decode_text(value)
            .and_then(|shape| self.commit(&shape));
        if result.is_err() {
            self.rollback();
        }
        result
    }

    fn decode_text(&mut self, value: &[u8]) -> DecodeResult<Shape> {
        let (declared, s) = parse_bounds(value)?;
        let mut s = s.strip_prefix(b"{").ok_or(NOT_BRACED)?.trim_ascii_start();
        if let Some(rest) = s.strip_prefix(b"}") {
            return match declared {
                None if rest.trim_ascii().is_empty() => Ok(Shape::default()),
                _ => Err(NOT_BRACED),
            };
        }
        let mut shape = Shape::default();
        // Elements (or sub-arrays) seen so far in the open array of each level.
        let mut counts = [0i32; MAX_DIMENSIONS];
        // Sizes known for each level (after its first sub-array closed).
        let mut known = [false; MAX_DIMENSIONS];
        let mut depth = 1;
        loop {
            // An item of the array at `depth`: a sub-array or an element.
            s = s.trim_ascii_start();
            match s.first() {
                Some(b'{') => {
                    if depth == MAX_DIMENSIONS || (shape.ndim != 0 && depth >= shape.ndim) {
                        return Err(Fault::Malformed("array text nests its braces unevenly"));
                    }
                    depth += 1;
                    s = &s[1..];
                    continue;
                }
                Some(first) => {
                    if shape.ndim == 0 {
                        shape.ndim = depth;
                    } else if shape.ndim != depth {
                        return Err(Fault::Malformed("array text nests its braces unevenly"));
                    }
                    s = if *first == b'"' {
                        self.quoted_element(&s[1..])?
                    } else {
                        self.unquoted_element(s)?
                    };
                    counts[depth - 1] += 1;
                }
                None => return Err(NOT_BRACED),
            }
            // After an item: closing braces, then a delimiter or the end.
            loop {
                s = s.trim_ascii_start();
                match s.split_first() {
                    Some((&b'}', rest)) => {
                        let level = depth - 1;
                        if !known[level] {
                            known[level] = true;
                            shape.dims[level] = counts[level];
                        } else if shape.dims[level] != counts[level] {
                            return Err(Fault::Malformed(
                                "array text has sub-arrays of different sizes",
                            ));
                        }
                        counts[level] = 0;
                        depth = level;
                        s = rest;
                        if depth == 0 {
                            if !s.trim_ascii().is_empty() {
                                return Err(NOT_BRACED);
                            }
                            return apply_declared_bounds(shape, declared);
                        }
                        counts[depth - 1] += 1;
                    }
                    Some((&b, rest)) if b == self.delimiter => {
                        s = rest;
                        break;
                    }
                    _ => return Err(NOT_BRACED),
                }
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

    /// The array of the values appended; the builder starts over empty.
    /// Fails when a text element is not valid UTF-8.
    pub(crate) fn finish(&mut self) -> DecodeResult<ArrayRef> {
        let last = self.values.finish();
        let chunks = std::mem::take(&mut self.chunks);
        self.chunked = 0;
        let offsets = std::mem::replace(&mut self.offsets, vec![0]);
        let shape_offsets = std::mem::replace(&mut self.shape_offsets, vec![0]);
        let dims = std::mem::take(&mut self.dims);
        let lower_bounds = std::mem::take(&mut self.lower_bounds);
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
        if self.form == ArrayForm::Lists {
            return Ok(Arc::new(ListArray::new(
                self.field.clone(),
                offsets,
                values,
                nulls,
            )));
        }
        // The struct's NULL marks a NULL array; its children hold empty
        // lists there, so they carry no NULLs of their own.
        let elements = ListArray::new(self.field.clone(), offsets, values, None);
        let shape_offsets = OffsetBuffer::new(ScalarBuffer::from(shape_offsets));
        let bounds = |values: Vec<i32>| {
            ListArray::new(
                bounds_item_field(),
                shape_offsets.clone(),
                Arc::new(Int32Array::from(values)),
                None,
            )
        };
        let fields = exact_array_fields(self.field.clone());
        let columns: Vec<ArrayRef> = vec![
            Arc::new(bounds(dims)),
            Arc::new(bounds(lower_bounds)),
            Arc::new(elements),
        ];
        StructArray::try_new(fields, columns, nulls)
            .map(|a| Arc::new(a) as ArrayRef)
            .map_err(|_| Fault::Unrepresentable("exact array struct does not assemble"))
    }

    /// An estimate of the bytes buffered.
    pub(crate) fn approx_bytes(&self) -> usize {
        self.len() * 4
            + self.len() / 8
            + (self.shape_offsets.len() - 1 + self.dims.len() + self.lower_bounds.len()) * 4
            + self.values.approx_bytes()
            + self
                .chunks
                .iter()
                .map(|c| c.get_array_memory_size())
                .sum::<usize>()
    }
}

/// Dimensions declared by a `[lo:hi]...=` decoration: per dimension the
/// lower bound and the size.
#[derive(Clone, Copy, Debug)]
struct Declared {
    ndim: usize,
    lower_bounds: [i32; MAX_DIMENSIONS],
    sizes: [i64; MAX_DIMENSIONS],
}

/// Reads a `[lo:hi]...=` bounds decoration (`[hi]` means `[1:hi]`);
/// returns it, if any, and the text after it.
fn parse_bounds(value: &[u8]) -> DecodeResult<(Option<Declared>, &[u8])> {
    const BAD: Fault = Fault::Malformed("array text has malformed bounds");
    let mut s = value.trim_ascii_start();
    let mut declared = Declared {
        ndim: 0,
        lower_bounds: [1; MAX_DIMENSIONS],
        sizes: [0; MAX_DIMENSIONS],
    };
    while let Some(rest) = s.strip_prefix(b"[") {
        let close = memchr::memchr(b']', rest).ok_or(BAD)?;
        let bounds = std::str::from_utf8(&rest[..close]).map_err(|_| BAD)?;
        let (lower, upper) = match bounds.split_once(':') {
            Some((lower, upper)) => (lower, upper),
            None => ("1", bounds),
        };
        let number = |t: &str| t.trim().parse::<i32>().map_err(|_| BAD);
        let (lower, upper) = (number(lower)?, number(upper)?);
        if declared.ndim == MAX_DIMENSIONS || i64::from(upper) < i64::from(lower) - 1 {
            return Err(BAD);
        }
        declared.lower_bounds[declared.ndim] = lower;
        declared.sizes[declared.ndim] = i64::from(upper) - i64::from(lower) + 1;
        declared.ndim += 1;
        s = rest[close + 1..].trim_ascii_start();
    }
    if declared.ndim == 0 {
        return Ok((None, s));
    }
    let s = s.strip_prefix(b"=").ok_or(BAD)?.trim_ascii_start();
    Ok((Some(declared), s))
}

/// The parsed shape with the declared lower bounds; the declared sizes must
/// be the parsed ones.
fn apply_declared_bounds(mut shape: Shape, declared: Option<Declared>) -> DecodeResult<Shape> {
    let Some(declared) = declared else {
        shape.lower_bounds[..shape.ndim].fill(1);
        return Ok(shape);
    };
    let sizes_match = declared.ndim == shape.ndim
        && (0..shape.ndim).all(|d| declared.sizes[d] == i64::from(shape.dims[d]));
    if !sizes_match {
        return Err(Fault::Malformed(
            "array text's bounds differ from its elements' dimensions",
        ));
    }
    shape.lower_bounds = declared.lower_bounds;
    Ok(shape)
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
        shaped_binary(
            element_oid,
            &[(elements.len() as i32, lower_bound)],
            elements,
        )
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
                    bin(array_binary(23, 1, &[int(7), int(8)])),
                    Some("[1:2]={7,8}"),
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
    fn lists_refuse_what_they_would_lose() {
        let c = column(1007, -1, "integer[]", Some(23));
        let mut b = ColumnBuilder::new(&c, 1);
        let two_d = shaped_binary(23, &[(2, 1), (2, 1)], &[1, 2, 3, 4].map(int));
        let e = b.append_binary(&two_d).unwrap_err();
        assert_eq!(
            e,
            ValueError::MultiDimensionalArray {
                pg_type: "integer[]".into(),
                dimensions: 2
            }
        );
        assert!(e.to_string().contains("ArrayForm::Exact"), "{e}");
        for text in ["{{1,2},{3,4}}", "[1:1][1:2]={{1,2}}", "{{{1}}}"] {
            let e = b.append_text(text.as_bytes()).unwrap_err();
            assert!(
                matches!(e, ValueError::MultiDimensionalArray { .. }),
                "{text}: {e}"
            );
        }
        let e = b
            .append_binary(&array_binary(23, 0, &[int(7), int(8)]))
            .unwrap_err();
        assert_eq!(
            e,
            ValueError::ArrayLowerBound {
                pg_type: "integer[]".into()
            }
        );
        assert!(e.to_string().contains("ArrayForm::Exact"), "{e}");
        let e = b.append_text(b"[0:1]={7,8}").unwrap_err();
        assert!(matches!(e, ValueError::ArrayLowerBound { .. }), "{e}");
        assert!(b.is_empty());
        // A lower bound of 1 written out is a plain list.
        b.append_text(b"[1:2]={7,8}").unwrap();
        b.append_text(b"[2]={9,10}").unwrap();
        let a = b.finish().unwrap();
        assert_eq!(
            list_values::<Int32Array>(&a).1.values().as_ref(),
            [7, 8, 9, 10]
        );
    }

    fn int(v: i32) -> Option<Vec<u8>> {
        Some(v.to_be_bytes().to_vec())
    }

    /// A binary array of the given (size, lower bound) dimensions.
    fn shaped_binary(
        element_oid: u32,
        dims: &[(i32, i32)],
        elements: &[Option<Vec<u8>>],
    ) -> Vec<u8> {
        let mut out = Vec::new();
        let has_null = elements.iter().any(Option::is_none);
        for v in [dims.len() as i32, has_null as i32, element_oid as i32] {
            out.extend_from_slice(&v.to_be_bytes());
        }
        for (size, lower) in dims {
            out.extend_from_slice(&size.to_be_bytes());
            out.extend_from_slice(&lower.to_be_bytes());
        }
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

    fn exact(oid: u32, name: &str, element: u32) -> crate::types::ColumnSchema {
        let mut c = column(oid, -1, name, Some(element));
        c.array_form = crate::types::ArrayForm::Exact;
        c
    }

    /// Per row of an exact struct array: dims, lower bounds, elements
    /// (`None` for a NULL array).
    #[allow(clippy::type_complexity)]
    fn exact_rows(a: &ArrayRef) -> Vec<Option<(Vec<i32>, Vec<i32>, Vec<Option<i32>>)>> {
        let s = a.as_struct();
        let ints = |column: usize, row: usize| -> Vec<Option<i32>> {
            let list = s.column(column).as_list::<i32>().value(row);
            list.as_any()
                .downcast_ref::<Int32Array>()
                .expect("int32 items")
                .iter()
                .collect()
        };
        (0..s.len())
            .map(|row| {
                if s.is_null(row) {
                    assert!(ints(0, row).is_empty() && ints(2, row).is_empty());
                    return None;
                }
                let flat = |v: Vec<Option<i32>>| v.into_iter().map(Option::unwrap).collect();
                Some((flat(ints(0, row)), flat(ints(1, row)), ints(2, row)))
            })
            .collect()
    }

    #[test]
    fn exact_form_keeps_every_shape() {
        let c = exact(1007, "integer[]", 23);
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
                    bin(shaped_binary(
                        23,
                        &[(2, 1), (2, 1)],
                        &[int(1), int(2), int(3), None],
                    )),
                    Some("{{1,2},{3,NULL}}"),
                ),
                (
                    bin(shaped_binary(
                        23,
                        &[(2, 1), (1, 1), (3, 1)],
                        &[1, 2, 3, 4, 5, 6].map(int),
                    )),
                    Some("{ {{1,2,3}} , {{4,5,6}} }"),
                ),
                (
                    bin(shaped_binary(23, &[(1, -5), (2, 3)], &[int(9), None])),
                    Some("[-5:-5][3:4]={{9,NULL}}"),
                ),
            ],
        );
        let DataType::Struct(fields) = a.data_type() else {
            panic!("{}", a.data_type())
        };
        let names: Vec<&str> = fields.iter().map(|f| f.name().as_str()).collect();
        assert_eq!(names, ["dims", "lower_bounds", "elements"]);
        let row =
            |d: &[i32], l: &[i32], e: &[Option<i32>]| Some((d.to_vec(), l.to_vec(), e.to_vec()));
        assert_eq!(
            exact_rows(&a),
            [
                row(&[3], &[1], &[Some(1), None, Some(-3)]),
                row(&[], &[], &[]),
                None,
                row(&[2], &[0], &[Some(7), Some(8)]),
                row(&[2, 2], &[1, 1], &[Some(1), Some(2), Some(3), None]),
                row(&[2, 1, 3], &[1, 1, 1], &[1, 2, 3, 4, 5, 6].map(Some)),
                row(&[1, 2], &[-5, 3], &[Some(9), None]),
            ]
        );
    }

    #[test]
    fn exact_text_arrays_keep_quoting_and_text_elements() {
        let c = exact(1009, "text[]", 25);
        let a = same(
            &c,
            &[(
                bin(shaped_binary(
                    25,
                    &[(2, 1), (2, 1)],
                    &[bin("a,b"), bin("NULL"), None, bin("{x}")],
                )),
                Some(r#"{{"a,b","NULL"},{NULL,"{x}"}}"#),
            )],
        );
        let s = a.as_struct();
        let elements = s.column(2).as_list::<i32>().value(0);
        let elements: &StringArray = elements.as_string();
        assert_eq!(
            elements.iter().collect::<Vec<_>>(),
            [Some("a,b"), Some("NULL"), None, Some("{x}")]
        );
    }

    #[test]
    fn exact_form_refuses_malformed_shapes() {
        let c = exact(1007, "integer[]", 23);
        let mut b = ColumnBuilder::new(&c, 1);
        for bad in [
            "{{1,2},{3}}",
            "{{1,2},3}",
            "{1,{2}}",
            "{{}}",
            "{{1},{2}",
            "[1:3]={1,2}",
            "[1:2][1:1]={1,2}",
            "[0:1]={}",
            "[2:1]={1}",
            "[x:1]={1}",
            "{{{{{{{1}}}}}}}",
        ] {
            assert!(b.append_text(bad.as_bytes()).is_err(), "{bad}");
        }
        // Seven dimensions, a huge element count in a short value, a
        // negative size.
        let seven = shaped_binary(23, &[(1, 1); 7], &[int(1)]);
        assert!(b.append_binary(&seven).is_err());
        let huge = shaped_binary(23, &[(i32::MAX, 1), (i32::MAX, 1)], &[int(1)]);
        assert!(b.append_binary(&huge).is_err());
        let negative = shaped_binary(23, &[(-1, 1)], &[]);
        assert!(b.append_binary(&negative).is_err());
        assert!(b.is_empty());
        b.append_text(b"{{1}}").unwrap();
        assert_eq!(
            exact_rows(&b.finish().unwrap()),
            [Some((vec![1, 1], vec![1, 1], vec![Some(1)]))]
        );
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
