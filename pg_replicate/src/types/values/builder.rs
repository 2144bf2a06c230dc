//! [`ColumnBuilder`]: decodes one column's values, binary (COPY) or text
//! (pgoutput), straight into an Arrow array.

use arrow::array::ArrayRef;
use arrow::datatypes::DataType;

use super::array::ListBuilder;
use super::error::{Fault, Format, ValueError};
use super::mapping::{column_data_type, column_kind, ColumnKind, ScalarKind};
use super::scalar::ScalarBuilder;
use crate::types::table::ColumnSchema;

/// Builds the Arrow array of one column from Postgres values.
///
/// The array has the type of [`arrow_field`](super::arrow_field) for the same
/// column. Values come either in the binary COPY format of the expression
/// [`copy_select_expr`](super::copy_select_expr) selects
/// ([`append_binary`](Self::append_binary)) or in pgoutput's text format
/// ([`append_text`](Self::append_text)); both give identical Arrow values.
/// A failed append leaves the builder as it was; text that is not valid
/// UTF-8 is found by [`finish`](Self::finish).
#[derive(Debug)]
pub struct ColumnBuilder {
    /// The Postgres type name, for errors.
    pg_type: Box<str>,
    data_type: DataType,
    inner: Inner,
    /// COPY sends this column in its text form (see `copy_select_expr`).
    binary_is_text: bool,
    /// The format of the latest value, for an error found in `finish`.
    format: Format,
}

#[derive(Debug)]
enum Inner {
    Scalar(ScalarBuilder),
    List(Box<ListBuilder>),
}

impl ColumnBuilder {
    /// A builder for `column` with room for `capacity` values.
    pub fn new(column: &ColumnSchema, capacity: usize) -> Self {
        let kind = column_kind(column);
        let binary_is_text = matches!(
            kind,
            ColumnKind::List {
                element: ScalarKind::TextForm,
                ..
            }
        );
        let inner = match kind {
            ColumnKind::Scalar(scalar) => Inner::Scalar(ScalarBuilder::new(scalar, capacity)),
            ColumnKind::List {
                element,
                element_wire_oid,
                delimiter,
                form,
            } => Inner::List(Box::new(ListBuilder::new(
                element,
                element_wire_oid,
                delimiter,
                form,
                capacity,
            ))),
        };
        Self {
            pg_type: column.pg_type.name.as_str().into(),
            data_type: column_data_type(kind),
            inner,
            binary_is_text,
            format: Format::Binary,
        }
    }

    /// Appends a NULL.
    #[inline]
    pub fn append_null(&mut self) {
        match &mut self.inner {
            Inner::Scalar(b) => b.append_null(),
            Inner::List(b) => b.append_null(),
        }
    }

    /// Appends a value in the binary COPY format of the expression
    /// [`copy_select_expr`](super::copy_select_expr) chose for the column
    /// (the bytes after the field length; NULLs go to
    /// [`append_null`](Self::append_null)).
    #[inline]
    pub fn append_binary(&mut self, value: &[u8]) -> Result<(), ValueError> {
        self.format = Format::Binary;
        let result = match &mut self.inner {
            Inner::Scalar(b) => b.append_binary(value),
            Inner::List(b) if self.binary_is_text => b.append_text(value),
            Inner::List(b) => b.append_binary(value),
        };
        result.map_err(|fault| self.error(fault, Format::Binary))
    }

    /// Appends a value in pgoutput's text format: the type's output function
    /// under the session settings of `postgres::session`.
    #[inline]
    pub fn append_text(&mut self, value: &[u8]) -> Result<(), ValueError> {
        self.format = Format::Text;
        let result = match &mut self.inner {
            Inner::Scalar(b) => b.append_text(value),
            Inner::List(b) => b.append_text(value),
        };
        result.map_err(|fault| self.error(fault, Format::Text))
    }

    #[cold]
    fn error(&self, fault: Fault, format: Format) -> ValueError {
        fault.into_error(&self.pg_type, &self.data_type, format)
    }

    /// Number of values appended since the last [`finish`](Self::finish).
    pub fn len(&self) -> usize {
        match &self.inner {
            Inner::Scalar(b) => b.len(),
            Inner::List(b) => b.len(),
        }
    }

    /// Whether no value was appended since the last [`finish`](Self::finish).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The array of the values appended; the builder starts over empty and
    /// can be reused. Text is checked as UTF-8 here, once for the whole
    /// batch: a value that is not fails the batch (its values are dropped).
    pub fn finish(&mut self) -> Result<ArrayRef, ValueError> {
        let result = match &mut self.inner {
            Inner::Scalar(b) => b.finish(),
            Inner::List(b) => b.finish(),
        };
        result.map_err(|fault| self.error(fault, self.format))
    }

    /// The Arrow type of the arrays this builder makes.
    pub fn data_type(&self) -> &DataType {
        &self.data_type
    }

    /// A cheap estimate of the bytes buffered so far, for batch-size limits.
    pub fn approx_bytes(&self) -> usize {
        match &self.inner {
            Inner::Scalar(b) => b.approx_bytes(),
            Inner::List(b) => b.approx_bytes(),
        }
    }
}
