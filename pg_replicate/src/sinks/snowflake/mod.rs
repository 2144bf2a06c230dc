//! Snowflake over its REST protocol, from Rust (feature `snowflake`).
//!
//! The client ([`SnowflakeClient`]): login with a key-pair JWT or a
//! password, queries with bound values (one row or many rows in one
//! request), results as JSON or Arrow, polling of running queries, a new
//! login when the session expires, requests that fail on the way sent
//! again, uploads to stages, Snowflake's errors as clear errors. The sink
//! ([`SnowflakeSink`]): tables with exact types, backfill through a stage,
//! changes through landing tables merged by key (docs/snowflake.md).
//!
//! Rooms: `config` and `sink_config` (account, user, credentials; the
//! sink's identity), `auth` (the key and the JWT), `binding` (bound
//! values), `result` (answers), `client` (the protocol), `s3` (signed
//! uploads to S3 stages), `schema` (names, types, DDL), `csv` (values as
//! the text Snowflake loads), `state` (the state tables), `copy` (the
//! backfill), `landing` (changes as landing rows), `merge` (applying them),
//! `apply` (a change batch), `task` and `accumulate` (landing tables that
//! keep changes until a task or the application merges them), `sink`,
//! `emulator` (fakesnow for tests).

mod accumulate;
mod apply;
mod auth;
mod binding;
mod client;
mod config;
mod copy;
mod csv;
mod emulator;
mod landing;
mod merge;
mod result;
mod s3;
mod schema;
mod sink;
mod sink_config;
mod state;
mod task;

pub use binding::{Binding, BindingType};
pub use client::SnowflakeClient;
pub use config::{SnowflakeConfig, SnowflakeCredentials};
pub use emulator::LocalSnowflake;
pub use result::{QueryResult, ResultColumn, ResultRows};
pub use schema::{snowflake_name, SnowflakeType};
pub use sink::SnowflakeSink;
pub use sink_config::{MergeMode, SnowflakeSinkConfig};
