//! Postgres values to Arrow: the type mapping and the column builders that
//! decode COPY binary and pgoutput text values straight into Arrow arrays.
//!
//! - [`arrow_field`]: the Arrow field a column becomes (type and metadata).
//! - [`copy_select_expr`]: how backfill's `COPY (SELECT ...) TO STDOUT
//!   (FORMAT binary)` selects the column, so that its binary values are ones
//!   [`ColumnBuilder::append_binary`] decodes (types without a native decoder
//!   are cast to `text`).
//! - [`ColumnBuilder`]: appends binary (COPY) or text (pgoutput) values;
//!   both formats of one value give the same Arrow value.
//!
//! The full mapping, with the text-form types, the metadata keys, the
//! infinity encoding and the values that are refused, is in `docs/types.md`.
//!
//! Rooms: `mapping` (types), `builder` (the public builder), `scalar` (the
//! enum of Arrow builders), `array` (lists and exact arrays; their text
//! form in `array::text`), `numeric`, `datetime`, `text` (decoders of the
//! other scalars), `error`.

mod array;
mod builder;
mod datetime;
mod error;
mod mapping;
mod numeric;
mod scalar;
#[cfg(test)]
mod tests;
mod text;

pub use builder::ColumnBuilder;
pub use error::{Format, ValueError};
#[cfg(any(
    feature = "duckdb",
    feature = "bigquery",
    feature = "snowflake",
    feature = "postgres-sink"
))]
pub(crate) use mapping::oid;
pub use mapping::{
    arrow_field, copy_select_expr, ARRAY_DIMS_FIELD, ARRAY_ELEMENTS_FIELD,
    ARRAY_LOWER_BOUNDS_FIELD, EXTENSION_NAME_KEY, PG_TYPE_KEY, PG_TYPE_OID_KEY,
    UUID_EXTENSION_NAME,
};
#[cfg(feature = "postgres-sink")]
pub(crate) use mapping::{column_kind, ColumnKind, ScalarKind};
