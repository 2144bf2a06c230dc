//! [`ParquetStatus`]: what the source's listings did, for health and
//! status endpoints.

use std::sync::{Arc, Mutex};
use std::time::SystemTime;

/// A file that could not be loaded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileError {
    /// The file's path in the store.
    pub path: String,
    /// What is wrong with it.
    pub error: String,
}

/// What the source did so far.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ParquetStatus {
    /// When the last listing finished.
    pub last_run: Option<SystemTime>,
    /// Listings done.
    pub runs: u64,
    /// Files whose rows were handed to the sink.
    pub files_loaded: u64,
    /// Rows handed to the sink.
    pub rows_loaded: u64,
    /// Files skipped (unreadable, or columns other than the table's),
    /// newest last; at most [`MAX_ERRORS`] are kept.
    pub errors: Vec<FileError>,
    /// The last listing's failure (the store could not be listed), if any.
    pub last_listing_error: Option<String>,
}

/// File errors kept in [`ParquetStatus::errors`].
pub const MAX_ERRORS: usize = 100;

/// A shared view of a source's [`ParquetStatus`], readable from another
/// task while the pipeline runs.
#[derive(Clone, Debug, Default)]
pub struct StatusHandle(Arc<Mutex<ParquetStatus>>);

impl StatusHandle {
    /// A copy of the status now.
    pub fn snapshot(&self) -> ParquetStatus {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub(crate) fn update(&self, f: impl FnOnce(&mut ParquetStatus)) {
        let mut status = self.0.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut status);
        let excess = status.errors.len().saturating_sub(MAX_ERRORS);
        status.errors.drain(..excess);
    }
}
