//! Postgres protocol pieces: connection options, the replication connection,
//! the pgoutput and COPY binary decoders (pure functions over bytes) and the
//! catalog queries.

pub mod catalog;
pub mod client;
pub mod config;
pub mod copy_binary;
pub mod pgoutput;
pub mod replication;
pub mod session;
pub mod throwaway;
pub mod tls;

pub use config::{PgConnectionConfig, SslMode};
