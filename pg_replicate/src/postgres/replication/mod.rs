//! The logical replication connection: a small client of the walsender
//! protocol built on `postgres-protocol` (tokio-postgres has no replication
//! mode).
//!
//! - [`codec`]: I/O-free framing and the CopyData payloads (XLogData,
//!   keepalive, standby status update).
//! - [`ReplicationClient`]: connect (TCP or Unix socket, TLS per `sslmode`,
//!   trust/password/md5/SCRAM-SHA-256), `IDENTIFY_SYSTEM`,
//!   `CREATE_REPLICATION_SLOT`, simple queries, `START_REPLICATION`.
//! - [`ReplicationStream`]: the CopyBoth stream, cancel-safe reads and
//!   standby status updates.
//! - [`CopyClient`]: an ordinary session on the same client, for the
//!   backfill's `COPY … TO STDOUT`, handing rows over from the read buffer.
//! - [`errors`]: SQLSTATE → [`ErrorKind`](crate::ErrorKind) mapping with fix
//!   hints, shared with the ordinary query connection.
//!
//! ```no_run
//! # async fn demo(config: pg_replicate::postgres::PgConnectionConfig) -> pg_replicate::Result<()> {
//! use pg_replicate::postgres::replication::{ReplicationClient, ReplicationMessage};
//!
//! let mut client = ReplicationClient::connect(&config).await?;
//! let slot = client.create_logical_slot("my_slot", false).await?;
//! // ... copy tables with `SET TRANSACTION SNAPSHOT '<slot.snapshot_name>'` ...
//! let mut stream = client
//!     .start_replication("my_slot", slot.consistent_point, "my_pub", 1)
//!     .await?;
//! while let Some(message) = stream.next_message().await? {
//!     match message {
//!         ReplicationMessage::XLogData { wal_end, data, .. } => { /* decode pgoutput */ }
//!         ReplicationMessage::Keepalive { wal_end, reply_requested, .. } => {
//!             if reply_requested {
//!                 stream.send_status_update(wal_end, wal_end, wal_end, false).await?;
//!             }
//!         }
//!     }
//! }
//! # Ok(()) }
//! ```

mod auth;
mod client;
pub mod codec;
mod commands;
mod copy_client;
pub mod errors;
mod stream;
mod transport;

pub use client::{ReplicationClient, APPLICATION_NAME};
pub use codec::ReplicationMessage;
pub use commands::{CreatedSlot, IdentifySystem};
pub use copy_client::CopyClient;
pub use stream::ReplicationStream;
