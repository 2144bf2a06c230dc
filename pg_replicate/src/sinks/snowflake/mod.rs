//! Snowflake over its REST protocol, from Rust (feature `snowflake`).
//!
//! Built so far: the client ([`SnowflakeClient`]): login with a key-pair
//! JWT or a password, queries with bound values (one row or many rows in
//! one request), results as JSON or Arrow, polling of running queries, a
//! new login when the session expires, Snowflake's errors as clear errors.
//! The sink that uses it comes next (docs/snowflake.md).
//!
//! Rooms: `config` (account, user, credentials), `auth` (the key and the
//! JWT), `binding` (bound values), `result` (answers), `client` (the
//! protocol), `emulator` (fakesnow for tests).

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

pub use binding::{Binding, BindingType};
pub use client::SnowflakeClient;
pub use config::{SnowflakeConfig, SnowflakeCredentials};
pub use emulator::LocalSnowflake;
pub use result::{QueryResult, ResultColumn, ResultRows};
pub use schema::{snowflake_name, SnowflakeType};
pub use sink::SnowflakeSink;
pub use sink_config::SnowflakeSinkConfig;
