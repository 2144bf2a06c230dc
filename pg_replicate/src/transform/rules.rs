//! What a table's transform does: which rows pass, which columns are kept,
//! renamed or masked, and which are computed.

use std::fmt;
use std::sync::Arc;

use arrow::array::ArrayRef;
use arrow::record_batch::RecordBatch;

use crate::types::PgType;
use crate::Result;

/// How a masked column's values are hidden.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mask {
    /// Every value becomes NULL; the column keeps its type.
    Null,
    /// Every value becomes the lower-case hex SHA-256 of its bytes (text
    /// and bytea) or of its Arrow text form (other types); the column
    /// becomes `text`. NULL stays NULL. Equal values give equal hashes, so
    /// the column can still be joined and counted.
    Hash,
}

/// A comparison of a [`Predicate`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Comparison {
    /// `=`
    Eq,
    /// `<>`
    NotEq,
    /// `<`
    Lt,
    /// `<=`
    LtEq,
    /// `>`
    Gt,
    /// `>=`
    GtEq,
}

impl Comparison {
    /// Reads `=`, `!=` or `<>`, `<`, `<=`, `>`, `>=`.
    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "=" | "==" => Self::Eq,
            "!=" | "<>" => Self::NotEq,
            "<" => Self::Lt,
            "<=" => Self::LtEq,
            ">" => Self::Gt,
            ">=" => Self::GtEq,
            _ => return None,
        })
    }
}

/// A condition on one column of a row; a row passes a filter when all its
/// predicates hold. A comparison with NULL does not hold (as in SQL).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Predicate {
    /// The column compared with a value, written as Postgres would print it
    /// (`'42'`, `'2024-01-31'`, `'active'`) and read as the column's type.
    Compare {
        /// The column (its Postgres name).
        column: String,
        /// The comparison.
        op: Comparison,
        /// The value, as text.
        value: String,
    },
    /// The column is NULL.
    IsNull(String),
    /// The column is not NULL.
    IsNotNull(String),
}

impl Predicate {
    /// `column = value`.
    pub fn eq(column: impl Into<String>, value: impl Into<String>) -> Self {
        Self::compare(column, Comparison::Eq, value)
    }

    /// `column <op> value`.
    pub fn compare(column: impl Into<String>, op: Comparison, value: impl Into<String>) -> Self {
        Self::Compare {
            column: column.into(),
            op,
            value: value.into(),
        }
    }

    /// The column the predicate reads.
    pub fn column(&self) -> &str {
        match self {
            Self::Compare { column, .. } | Self::IsNull(column) | Self::IsNotNull(column) => column,
        }
    }
}

/// Computes a column's values from a batch of the table's columns (the
/// original ones, before the transform).
pub type ComputeFn = Arc<dyn Fn(&RecordBatch) -> Result<ArrayRef> + Send + Sync>;

/// A column added by the transform, computed from the table's columns with
/// Arrow kernels.
#[derive(Clone)]
pub struct ComputedColumn {
    pub(super) name: String,
    pub(super) pg_type: PgType,
    pub(super) inputs: Vec<String>,
    pub(super) compute: ComputeFn,
}

impl ComputedColumn {
    /// A column `name` of type `pg_type`, computed by `compute` from the
    /// columns `inputs` (named so that a change whose inputs were not sent
    /// — unchanged TOAST values — keeps the stored value instead). The
    /// array `compute` returns must have the Arrow type the library maps
    /// `pg_type` to (docs/types.md) and one value per row.
    pub fn new<F>(
        name: impl Into<String>,
        pg_type: PgType,
        inputs: impl IntoIterator<Item = impl Into<String>>,
        compute: F,
    ) -> Self
    where
        F: Fn(&RecordBatch) -> Result<ArrayRef> + Send + Sync + 'static,
    {
        Self {
            name: name.into(),
            pg_type,
            inputs: inputs.into_iter().map(Into::into).collect(),
            compute: Arc::new(compute),
        }
    }
}

impl fmt::Debug for ComputedColumn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ComputedColumn")
            .field("name", &self.name)
            .field("pg_type", &self.pg_type.name)
            .field("inputs", &self.inputs)
            .finish_non_exhaustive()
    }
}

/// The transform of one table. Names refer to the table's own columns;
/// renames apply last.
#[derive(Clone, Debug, Default)]
pub struct TableTransform {
    pub(super) filter: Vec<Predicate>,
    pub(super) select: Option<Vec<String>>,
    pub(super) mask: Vec<(String, Mask)>,
    pub(super) rename: Vec<(String, String)>,
    pub(super) computed: Vec<ComputedColumn>,
}

impl TableTransform {
    /// A transform that changes nothing yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Keeps only rows for which `predicate` holds (with the others added
    /// before). An update whose new row no longer passes becomes a delete,
    /// so the row leaves the sink; one that passes is applied (it enters
    /// the sink if it was not there).
    ///
    /// A filtered table that keeps a variable-size column (text, bytea,
    /// json, numeric, arrays, ...) needs `REPLICA IDENTITY FULL`: updates
    /// leave unchanged large values out, and only the old row they then
    /// carry can complete a row entering the filter.
    pub fn filter(mut self, predicate: Predicate) -> Self {
        self.filter.push(predicate);
        self
    }

    /// Keeps only these columns, in the table's order (the key columns must
    /// be among them).
    pub fn select(mut self, columns: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.select = Some(columns.into_iter().map(Into::into).collect());
        self
    }

    /// Masks `column` (not a key column).
    pub fn mask(mut self, column: impl Into<String>, mask: Mask) -> Self {
        self.mask.push((column.into(), mask));
        self
    }

    /// Gives `column` the name `to` in the sink.
    pub fn rename(mut self, column: impl Into<String>, to: impl Into<String>) -> Self {
        self.rename.push((column.into(), to.into()));
        self
    }

    /// Adds a computed column after the table's columns.
    pub fn computed(mut self, column: ComputedColumn) -> Self {
        self.computed.push(column);
        self
    }
}
