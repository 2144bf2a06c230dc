//! The data model shared by sources, sinks and the pipeline.

pub mod change;
pub mod lsn;
pub mod table;
pub mod values;

pub use lsn::Lsn;
pub use table::{
    ArrayForm, ColumnSchema, PgType, ReplicaIdentity, TableId, TableName, TableSchema,
};
