//! The BigQuery sink: every replicated table kept as a current-state table
//! of one dataset, exactly once whatever crashes.
//!
//! - **Backfill**: the copied rows are written as Parquet, uploaded with a
//!   resumable upload and appended by one load job per table (the fastest
//!   bulk path measured against the emulator; `docs/bigquery.md`), or
//!   through a pending Storage Write stream committed at the table's end.
//! - **Change data capture**: each batch's changes are staged per table in
//!   `_pgr_staging_<table>` and applied by one multi-statement transaction
//!   that also records the applied LSN in `_pg_replicate_state`; a crash at
//!   any moment leaves either the whole batch applied and recorded or none
//!   of it, and a restart resumes exactly after what was recorded.
//!
//! The type mapping is in [`schema`]'s documentation and `docs/bigquery.md`.

mod auth;
mod backfill;
mod client;
mod config;
mod copy;
mod emulator;
mod encoder;
mod errors;
mod pending;
mod proto;
mod retry;
pub mod schema;
mod script;
mod sink;
mod stage;
mod state;
mod storage_write;

pub use config::{
    BackfillMethod, BigQueryCredentials, BigQuerySinkConfig, RetryPolicy, StagingMethod,
    DEFAULT_ENDPOINT, DEFAULT_STORAGE_ENDPOINT,
};
pub use emulator::LocalBigQuery;
pub use sink::BigQuerySink;
