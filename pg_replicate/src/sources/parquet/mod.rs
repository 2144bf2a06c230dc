//! The Parquet source: Parquet files that appear in a folder or an object
//! store bucket, loaded into one table on a schedule.
//!
//! On its [`Schedule`] (every so often, or a cron expression) the source
//! lists the files under its prefix and takes
//! those modified after the position the sink stored, in `(modified,
//! path)` order. Each file becomes inserts into the configured table,
//! handed to the sink as one transaction whose LSN is the file's
//! modification time in microseconds since 1970 ([`file_lsn`]); files
//! modified in the same microsecond travel in one batch. The sink stores
//! that LSN with the rows (exactly once for the DuckDB and Postgres sinks),
//! so a restarted pipeline neither skips nor repeats a file.
//!
//! The table's columns come from the first file (or
//! [`ParquetSourceConfig::columns`]); a file whose columns differ, or that
//! is not a readable Parquet file, is skipped with an error naming it
//! ([`ParquetStatus`]) and the others are loaded.
//!
//! Rooms: `config` ([`ParquetSourceConfig`]), `listing` (which files, in
//! which batches; pure), `schedule` (when; pure), `schema` (Arrow types to Postgres types, file rows
//! to change batches), `status` ([`ParquetStatus`]), `stream` (the
//! [`Source`](crate::sources::Source) and its change stream). The user
//! guide is `docs/parquet_source.md`.

mod config;
mod listing;
mod schedule;
mod schema;
mod status;
mod stream;

pub use config::ParquetSourceConfig;
pub use listing::file_lsn;
pub use schedule::{CronSchedule, Schedule};
pub use status::{FileError, ParquetStatus, StatusHandle};
pub use stream::{ParquetCdcStream, ParquetSource, ParquetTableCopy};
