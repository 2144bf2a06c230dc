//! Pipeline configuration: what to run and how large batches may grow.

use std::path::PathBuf;
use std::time::Duration;

use crate::{Error, ErrorKind, Result};

/// What a pipeline does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PipelineAction {
    /// Copy the tables, then stop.
    TableCopiesOnly,
    /// Stream changes only; no backfill.
    CdcOnly,
    /// Copy the tables not yet copied, then stream changes.
    Both,
}

/// Limits of the batches handed to the sink, and of the memory the source
/// uses. A batch is handed over as soon as any limit is reached. CDC batches
/// end on a transaction boundary, except that a transaction larger than the
/// limits is handed over in several batches (see
/// [`CdcBatch::continues`](crate::types::change::CdcBatch::continues)).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatchConfig {
    /// Most rows in a batch.
    pub max_rows: usize,
    /// Most (approximate) bytes of row data in a batch.
    pub max_bytes: usize,
    /// Longest time a non-empty CDC batch waits for more changes.
    pub max_fill: Duration,
    /// How often a standby status update is sent while the stream is idle;
    /// after this long without a word from the server, the update asks it
    /// for a keepalive.
    pub status_interval: Duration,
    /// How long the server may stay silent while streaming (a keepalive
    /// asked for and not answered) before the connection counts as
    /// stalled and is replaced. Keep it at least twice `status_interval`;
    /// Postgres' own `wal_sender_timeout` (default 60 s) ends a walsender
    /// that hears nothing from the client.
    pub stall_timeout: Duration,
    /// Bytes of streamed, not yet committed transactions (pgoutput protocol
    /// 2, Postgres 14+) kept in memory; beyond it they are spilled to files
    /// in [`spill_dir`](Self::spill_dir).
    pub max_spool_memory: usize,
    /// Directory of spill files; `None` for the system's temporary
    /// directory. Files are unlinked as soon as they are created.
    pub spill_dir: Option<PathBuf>,
}

impl Default for BatchConfig {
    fn default() -> Self {
        Self {
            max_rows: 16_384,
            max_bytes: 32 * 1024 * 1024,
            max_fill: Duration::from_millis(250),
            status_interval: Duration::from_secs(10),
            stall_timeout: Duration::from_secs(60),
            max_spool_memory: 64 * 1024 * 1024,
            spill_dir: None,
        }
    }
}

impl BatchConfig {
    /// Checks the limits are usable.
    pub fn validate(&self) -> Result<()> {
        if self.max_rows == 0 || self.max_bytes == 0 {
            return Err(Error::new(
                ErrorKind::Config,
                "batch limits must be positive: set max_rows and max_bytes above zero",
            ));
        }
        if self.status_interval.is_zero() {
            return Err(Error::new(
                ErrorKind::Config,
                "status_interval must be positive (Postgres drops a silent replication connection after wal_sender_timeout)",
            ));
        }
        if self.stall_timeout < self.status_interval.saturating_mul(2) {
            return Err(Error::new(
                ErrorKind::Config,
                "stall_timeout must be at least twice status_interval, or a live but quiet \
                 connection would count as stalled",
            ));
        }
        Ok(())
    }
}

/// How the pipeline rides through a lost change stream (a Postgres restart,
/// a network fault) or a sink that fails for a while (retryable errors,
/// [`Error::is_retryable`](crate::Error::is_retryable)): it starts again
/// after a pause that doubles from `initial_backoff` up to `max_backoff`
/// (each with up to 25 % random jitter, so many pipelines do not retry in
/// step), and resumes from what the sink stored. It gives up, returning
/// the last error, when it has failed without delivering anything for
/// `give_up_after`. Permanent errors (authentication, a missing
/// publication or slot, `wal_level`, permissions, a sink's configuration
/// or a value it cannot hold) stop the pipeline at once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryConfig {
    /// First pause before reconnecting.
    pub initial_backoff: Duration,
    /// Longest pause between attempts.
    pub max_backoff: Duration,
    /// How long the stream may keep failing before the pipeline stops;
    /// zero never reconnects.
    pub give_up_after: Duration,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(60),
            give_up_after: Duration::from_secs(30 * 60),
        }
    }
}

impl RetryConfig {
    /// Never reconnect: the first error of the stream stops the pipeline.
    pub fn never() -> Self {
        Self {
            give_up_after: Duration::ZERO,
            ..Self::default()
        }
    }

    /// The pause before attempt `attempt` (0-based), with `jitter` in
    /// [0, 1) scaling the random part.
    pub(crate) fn backoff(&self, attempt: u32, jitter: f64) -> Duration {
        let base = self
            .initial_backoff
            .saturating_mul(1u32 << attempt.min(20))
            .min(self.max_backoff);
        base + base.mul_f64(0.25 * jitter.clamp(0.0, 1.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_bound_with_bounded_jitter() {
        let retry = RetryConfig {
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
            give_up_after: Duration::from_secs(10),
        };
        assert_eq!(retry.backoff(0, 0.0), Duration::from_millis(100));
        assert_eq!(retry.backoff(1, 0.0), Duration::from_millis(200));
        assert_eq!(retry.backoff(3, 0.0), Duration::from_millis(800));
        assert_eq!(retry.backoff(4, 0.0), Duration::from_secs(1));
        assert_eq!(retry.backoff(60, 0.0), Duration::from_secs(1));
        assert_eq!(retry.backoff(0, 0.5), Duration::from_micros(112_500));
        assert!(retry.backoff(2, 0.999_999) < Duration::from_millis(500));
        assert_eq!(RetryConfig::never().give_up_after, Duration::ZERO);
    }
}
