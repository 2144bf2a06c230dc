//! The error of value decoding.
//!
//! Decoders deep in the hot path report a small, `Copy` [`Fault`] (no
//! allocation, no type name); [`ColumnBuilder`](super::ColumnBuilder) turns it
//! into a [`ValueError`] naming the Postgres type, on the (rare) error path
//! only. Neither ever carries the value itself: row values must not end up in
//! logs.

use std::fmt;

/// Which wire format a value that failed to decode came in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Format {
    /// The binary COPY format of the expression chosen by
    /// [`copy_select_expr`](super::copy_select_expr).
    Binary,
    /// The text format of pgoutput (the type's output function).
    Text,
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Format::Binary => "binary",
            Format::Text => "text",
        })
    }
}

/// A value that could not be appended to a
/// [`ColumnBuilder`](super::ColumnBuilder).
///
/// The builder is left unchanged by a failed append. Messages name the
/// Postgres type and the problem, never the value.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ValueError {
    /// The bytes are not a well-formed value of the type in the given format
    /// (a protocol or usage error, for example a binary value that does not
    /// come from the expression [`copy_select_expr`](super::copy_select_expr)
    /// chose).
    #[error("malformed {format} value of Postgres type {pg_type}: {problem}")]
    Malformed {
        /// The Postgres type as `format_type` prints it.
        pg_type: String,
        /// The format the value came in.
        format: Format,
        /// What is wrong, without the value.
        problem: &'static str,
    },
    /// The value is valid in Postgres but the column's Arrow type cannot hold
    /// it without losing data (numeric NaN in a Decimal128 column, a
    /// timestamp past the Arrow range, ...).
    #[error(
        "a value of Postgres type {pg_type} cannot be stored in Arrow {arrow_type}: {problem}"
    )]
    Unrepresentable {
        /// The Postgres type as `format_type` prints it.
        pg_type: String,
        /// The Arrow type of the column, as Arrow displays it.
        arrow_type: String,
        /// Why it does not fit, without the value.
        problem: &'static str,
    },
    /// A multi-dimensional array in a column mapped to plain lists.
    #[error(
        "{dimensions}-dimensional value of Postgres array type {pg_type}: a plain list holds only \
         one-dimensional arrays; replicate array columns in their exact form \
         (PostgresSource::with_array_form(ArrayForm::Exact), docs/types.md \"Arrays\")"
    )]
    MultiDimensionalArray {
        /// The Postgres type as `format_type` prints it.
        pg_type: String,
        /// The number of dimensions of the value (at least 2).
        dimensions: i32,
    },
    /// An array with a lower bound other than 1 in a column mapped to plain
    /// lists, which would lose it.
    #[error(
        "value of Postgres array type {pg_type} has a lower bound other than 1, which a plain list \
         would lose; replicate array columns in their exact form \
         (PostgresSource::with_array_form(ArrayForm::Exact), docs/types.md \"Arrays\")"
    )]
    ArrayLowerBound {
        /// The Postgres type as `format_type` prints it.
        pg_type: String,
    },
}

/// The allocation-free error of the decoders; see the module documentation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fault {
    /// Becomes [`ValueError::Malformed`].
    Malformed(&'static str),
    /// Becomes [`ValueError::Unrepresentable`].
    Unrepresentable(&'static str),
    /// Becomes [`ValueError::MultiDimensionalArray`].
    MultiDimensional(i32),
    /// Becomes [`ValueError::ArrayLowerBound`].
    LowerBound,
}

impl Fault {
    /// Attaches the column's types to the fault.
    pub(crate) fn into_error(
        self,
        pg_type: &str,
        arrow_type: &arrow::datatypes::DataType,
        format: Format,
    ) -> ValueError {
        match self {
            Fault::Malformed(problem) => ValueError::Malformed {
                pg_type: pg_type.to_owned(),
                format,
                problem,
            },
            Fault::Unrepresentable(problem) => ValueError::Unrepresentable {
                pg_type: pg_type.to_owned(),
                arrow_type: arrow_type.to_string(),
                problem,
            },
            Fault::MultiDimensional(dimensions) => ValueError::MultiDimensionalArray {
                pg_type: pg_type.to_owned(),
                dimensions,
            },
            Fault::LowerBound => ValueError::ArrayLowerBound {
                pg_type: pg_type.to_owned(),
            },
        }
    }
}

/// Result of the internal decoders.
pub(crate) type DecodeResult<T> = Result<T, Fault>;

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::DataType;

    #[test]
    fn messages_name_the_type_and_problem() {
        let e = Fault::Unrepresentable("NaN is not a decimal number").into_error(
            "numeric(12,2)",
            &DataType::Decimal128(12, 2),
            Format::Binary,
        );
        assert_eq!(
            e.to_string(),
            "a value of Postgres type numeric(12,2) cannot be stored in Arrow \
             Decimal128(12, 2): NaN is not a decimal number"
        );
        let e = Fault::Malformed("expected 4 bytes").into_error(
            "integer",
            &DataType::Int32,
            Format::Text,
        );
        assert_eq!(
            e.to_string(),
            "malformed text value of Postgres type integer: expected 4 bytes"
        );
        let e = Fault::MultiDimensional(2).into_error("integer[]", &DataType::Int32, Format::Text);
        assert!(e
            .to_string()
            .starts_with("2-dimensional value of Postgres array type integer[]"));
    }
}
