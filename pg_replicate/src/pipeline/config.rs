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
    /// How often a standby status update is sent while the stream is idle.
    pub status_interval: Duration,
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
        Ok(())
    }
}
