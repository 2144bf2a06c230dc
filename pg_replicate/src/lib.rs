//! # pg_replicate
//!
//! Composable building blocks for Postgres change data capture: a
//! [`sources::postgres::PostgresSource`] that copies existing rows inside a
//! consistent snapshot (backfill) and then streams every committed change over
//! logical replication (pgoutput), [`sinks`] that store what it produces, and a
//! [`pipeline::DataPipeline`] that wires the two and reports back to Postgres
//! the log position up to which the sink has durably stored data.
//!
//! Data travels from source to sink as Arrow [`RecordBatch`](arrow::record_batch::RecordBatch)es.
//! The mapping of Postgres types to Arrow is documented in `docs/types.md`.

#![warn(missing_docs)]

#[cfg(feature = "config-db")]
pub mod config_db;
pub mod error;
pub mod pipeline;
pub mod postgres;
pub mod sinks;
pub mod sources;
pub mod transform;
pub mod types;

pub use error::{Error, ErrorKind, Result};
