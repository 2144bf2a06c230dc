//! [`ParquetSourceConfig`]: where the files are and where their rows go.

use std::sync::Arc;
use std::time::Duration;

use object_store::path::Path;
use object_store::ObjectStore;

use super::schedule::{CronSchedule, Schedule};
use crate::types::{ColumnSchema, TableName};
use crate::{Error, ErrorKind, Result};

/// Configuration of a [`ParquetSource`](super::ParquetSource).
#[derive(Clone)]
pub struct ParquetSourceConfig {
    /// The store holding the files: a local folder
    /// ([`local`](Self::local)) or any `object_store` store (S3, GCS,
    /// Azure).
    pub store: Arc<dyn ObjectStore>,
    /// The prefix listed (every file below it, at any depth); empty for
    /// the whole store.
    pub prefix: Path,
    /// How messages name the location, for example `s3://bucket/prefix`.
    pub location_name: String,
    /// The table the rows go to.
    pub table: TableName,
    /// When the files are listed (once when the stream starts, then on
    /// this schedule).
    pub schedule: Schedule,
    /// Files modified less than this long ago are left for the next
    /// listing, so a file still being written is not read half-way.
    pub settle: Duration,
    /// Only files modified after this moment (microseconds since 1970)
    /// are loaded by a pipeline that stored nothing yet; `None` loads every
    /// file.
    pub start_after_micros: Option<u64>,
    /// The table's columns; `None` takes them from the first file.
    pub columns: Option<Vec<ColumnSchema>>,
}

impl std::fmt::Debug for ParquetSourceConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParquetSourceConfig")
            .field("location", &self.location_name)
            .field("table", &self.table)
            .field("schedule", &self.schedule)
            .finish_non_exhaustive()
    }
}

impl ParquetSourceConfig {
    /// Files below `prefix` in `store`, loaded into `table` every minute.
    pub fn new(
        store: Arc<dyn ObjectStore>,
        prefix: impl Into<String>,
        location_name: impl Into<String>,
        table: TableName,
    ) -> Self {
        Self {
            store,
            prefix: Path::from(prefix.into()),
            location_name: location_name.into(),
            table,
            schedule: Schedule::Every(Duration::from_secs(60)),
            settle: Duration::from_secs(5),
            start_after_micros: None,
            columns: None,
        }
    }

    /// Files in the local folder `dir` (which must exist), loaded into
    /// `table` every minute.
    pub fn local(dir: impl AsRef<std::path::Path>, table: TableName) -> Result<Self> {
        let dir = dir.as_ref();
        let store = object_store::local::LocalFileSystem::new_with_prefix(dir).map_err(|e| {
            Error::with_source(
                ErrorKind::Config,
                format!(
                    "cannot read Parquet files from {}: the folder must exist",
                    dir.display()
                ),
                e,
            )
        })?;
        Ok(Self::new(
            Arc::new(store),
            "",
            dir.display().to_string(),
            table,
        ))
    }

    /// The same configuration, listing every `interval`.
    pub fn with_interval(mut self, interval: Duration) -> Self {
        self.schedule = Schedule::Every(interval);
        self
    }

    /// The same configuration, listing at the minutes the cron expression
    /// `expression` names (UTC; see [`CronSchedule`]).
    pub fn with_cron(mut self, expression: &str) -> Result<Self> {
        self.schedule = Schedule::Cron(CronSchedule::parse(expression)?);
        Ok(self)
    }

    /// The same configuration, waiting `settle` after a file's last
    /// modification before reading it.
    pub fn with_settle(mut self, settle: Duration) -> Self {
        self.settle = settle;
        self
    }
}
