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
//!
//! The same kind of task reports the slot's retained WAL as gauges
//! ([`PostgresSource::with_slot_metrics`](super::PostgresSource::with_slot_metrics)).

use std::time::Duration;

use tokio::task::JoinHandle;
use tracing::{debug, warn};

use crate::postgres::client::connect_query_client;
use crate::postgres::PgConnectionConfig;

/// The prefix of the heartbeat's messages.
pub const HEARTBEAT_PREFIX: &str = "pg_replicate.heartbeat";

/// What a periodic task does each time.
#[derive(Clone, Debug)]
pub(crate) enum Job {
    /// Writes a heartbeat message.
    Heartbeat,
    /// Sets the gauges of the named slot's retained and unconfirmed WAL.
    SlotMetrics(String),
}

/// A running heartbeat or slot-metrics task; it stops when dropped (with
/// the stream).
pub(crate) struct Heartbeat(JoinHandle<()>);

impl Heartbeat {
    /// Starts doing `job` every `every` through a connection of its own.
    pub(crate) fn start(config: PgConnectionConfig, every: Duration, job: Job) -> Self {
        Self(tokio::spawn(beat(config, every, job)))
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn beat(config: PgConnectionConfig, every: Duration, job: Job) {
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
                        warn!(error = %error, ?job, "a periodic task of the source cannot connect; retrying at its interval");
                        warned = true;
                    }
                    continue;
                }
            }
        }
        let Some(connected) = &client else {
            continue;
        };
        let done = match &job {
            Job::Heartbeat => connected.batch_execute(&sql).await.map_err(|error| {
                format!(
                    "the heartbeat could not write its message ({error}); the user needs EXECUTE on \
                     pg_logical_emit_message (superuser, or GRANT EXECUTE ON FUNCTION \
                     pg_logical_emit_message(boolean, text, text) TO <user>)"
                )
            }),
            Job::SlotMetrics(slot) => report_slot(connected, slot).await,
        };
        match done {
            Ok(()) => {
                debug!(?job, "periodic task done");
                warned = false;
            }
            Err(error) => {
                if !warned {
                    warn!(%error, "a periodic task of the source failed; retrying at its interval");
                    warned = true;
                }
                client = None;
            }
        }
    }
}

/// Sets `pg_replicate_slot_retained_bytes` and
/// `pg_replicate_slot_unconfirmed_bytes` (label `slot`).
async fn report_slot(client: &tokio_postgres::Client, slot: &str) -> Result<(), String> {
    let health = crate::postgres::catalog::slot_health(client, slot)
        .await
        .map_err(|e| format!("the slot metrics could not be read: {e}"))?
        .ok_or_else(|| format!("slot {slot} does not exist"))?;
    let label = slot.to_owned();
    if let Some(bytes) = health.retained_bytes {
        metrics::gauge!("pg_replicate_slot_retained_bytes", "slot" => label.clone())
            .set(bytes as f64);
    }
    if let Some(bytes) = health.unconfirmed_bytes {
        metrics::gauge!("pg_replicate_slot_unconfirmed_bytes", "slot" => label).set(bytes as f64);
    }
    Ok(())
}
