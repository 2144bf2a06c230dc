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

mod text;

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

#[cfg(test)]
mod tests;
