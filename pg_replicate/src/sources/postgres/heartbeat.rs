//! The optional heartbeat
//! ([`PostgresSource::with_heartbeat`](super::PostgresSource::with_heartbeat)):
//! while changes stream, a
//! connection of its own writes a small non-transactional logical
//! decoding message (`pg_logical_emit_message`) every interval. The stream
//! passes its WAL position on to the sink like any WAL that carries nothing
//! for it, so the slot's confirmed position and `restart_lsn` move on even
//! when the source database itself writes nothing (a server whose WAL
//! comes from other databases, or one whose platform writes WAL the slot
//! never sees decoded).

use std::time::Duration;

use tokio::task::JoinHandle;
use tracing::{debug, warn};

use crate::postgres::client::connect_query_client;
use crate::postgres::PgConnectionConfig;

/// The prefix of the heartbeat's messages.
pub const HEARTBEAT_PREFIX: &str = "pg_replicate.heartbeat";

/// The running heartbeat; it stops when dropped (with the stream).
pub(crate) struct Heartbeat(JoinHandle<()>);

impl Heartbeat {
    /// Starts writing a heartbeat every `every` through `config`.
    pub(crate) fn start(config: PgConnectionConfig, every: Duration) -> Self {
        Self(tokio::spawn(beat(config, every)))
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn beat(config: PgConnectionConfig, every: Duration) {
    let sql = format!("SELECT pg_logical_emit_message(false, '{HEARTBEAT_PREFIX}', '')");
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut client = None;
    // One warning per kind of failure, not one per beat.
    let mut warned = false;
    loop {
        ticks.tick().await;
        if client.is_none() {
            match connect_query_client(&config).await {
                Ok(connected) => client = Some(connected),
                Err(error) => {
                    if !warned {
                        warn!(error = %error, "the heartbeat cannot connect; retrying at its interval");
                        warned = true;
                    }
                    continue;
                }
            }
        }
        let Some(connected) = &client else {
            continue;
        };
        match connected.batch_execute(&sql).await {
            Ok(()) => {
                debug!("heartbeat written");
                warned = false;
            }
            Err(error) => {
                if !warned {
                    warn!(
                        error = %error,
                        "the heartbeat could not write its message; the user needs EXECUTE on \
                         pg_logical_emit_message (superuser, or GRANT EXECUTE ON FUNCTION \
                         pg_logical_emit_message(boolean, text, text) TO <user>)"
                    );
                    warned = true;
                }
                client = None;
            }
        }
    }
}
