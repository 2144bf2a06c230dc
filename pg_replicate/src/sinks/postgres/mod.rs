//! The Postgres sink: a replica of the published tables in another
//! Postgres database, applied exactly once.
//!
//! [`PostgresSink`] creates each table in the target database under the
//! same schema and name, with the source's column types (as `format_type`
//! prints them) and its key as primary key. A table's backfill is one
//! binary `COPY` in one transaction that also records the table as copied;
//! every CDC batch is one transaction that applies its changes set-based
//! (the rounds of `sinks::plan`, staged by binary `COPY` into a temporary
//! table) and records the batch's end LSN in `_pg_replicate.progress`. A
//! process killed at any moment restarts from exactly what was committed,
//! and the LSN confirmed to the source is never ahead of it.
//!
//! Rooms: `config` ([`PostgresSinkConfig`]), `copy_encoder` (Arrow →
//! binary COPY, pure), `schema` (types and DDL), `migrate` (creating and
//! converting tables), `state` (resumption state), `copy_in` (the streamed
//! COPY of a backfill or a stage), `apply` (the SQL of an apply), `sink`
//! (the [`Sink`](crate::sinks::Sink) implementation). The user guide is
//! `docs/postgres_sink.md`.

mod apply;
mod config;
mod copy_encoder;
mod copy_in;
mod migrate;
mod schema;
mod sink;
mod state;

use std::fmt::Display;

pub use apply::ApplyStats;
pub use config::PostgresSinkConfig;
pub use sink::PostgresSink;
pub use state::FORMAT_VERSION;

use crate::{Error, ErrorKind};

/// A failure of the target database while doing `what`, of kind
/// [`ErrorKind::Sink`] (retried): the transaction is rolled back and
/// nothing of it is stored. Errors the database gives for the statement
/// itself (a missing type, a constraint) carry its message and hint.
pub(crate) fn target_error(what: impl Display, error: tokio_postgres::Error) -> Error {
    let detail = error
        .as_db_error()
        .map(|db| {
            let mut text = format!(": {}", db.message());
            if let Some(detail) = db.detail() {
                text.push_str(&format!(" ({detail})"));
            }
            if let Some(hint) = db.hint() {
                text.push_str(&format!("; hint: {hint}"));
            }
            text
        })
        .unwrap_or_default();
    // A type or table the target lacks, a value or constraint it refuses:
    // retrying does not fix them.
    let kind = match error.code().map(|c| c.code()) {
        Some(code) if code.starts_with("42") => ErrorKind::Schema,
        Some(code) if code.starts_with("22") || code.starts_with("23") => ErrorKind::Data,
        _ => ErrorKind::Sink,
    };
    Error::with_source(
        kind,
        format!(
            "the target Postgres failed to {what}{detail} (the transaction was rolled back; a restart resumes \
             from the last committed batch)"
        ),
        error,
    )
}
