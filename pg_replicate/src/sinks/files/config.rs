//! [`FilesSinkConfig`]: where the files go, their format, and when a file
//! is rolled.

use std::path::PathBuf;
use std::time::Duration;

use crate::{Error, ErrorKind, Result};

/// The format of the data files.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum FileFormat {
    /// Apache Parquet, Snappy-compressed; the default.
    #[default]
    Parquet,
    /// CSV with a header line (Postgres' CSV conventions: NULL is an empty
    /// unquoted field, an empty text is `""`).
    Csv,
}

impl FileFormat {
    /// The file name extension: `parquet` or `csv`.
    pub fn extension(self) -> &'static str {
        match self {
            Self::Parquet => "parquet",
            Self::Csv => "csv",
        }
    }
}

/// When an open data file is closed and listed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RollPolicy {
    /// A file is closed once it holds this many rows.
    pub max_rows: u64,
    /// A file is closed once it holds about this many bytes (for Parquet,
    /// the bytes written plus the row group still buffered).
    pub max_bytes: u64,
    /// Changes wait at most about this long before their file is closed and
    /// listed (checked when a batch arrives, and every second while the
    /// stream is quiet). It bounds how far the slot's confirmed position
    /// trails the stream.
    pub max_age: Duration,
}

impl Default for RollPolicy {
    /// 1,000,000 rows, 128 MiB, 60 s.
    fn default() -> Self {
        Self {
            max_rows: 1_000_000,
            max_bytes: 128 << 20,
            max_age: Duration::from_secs(60),
        }
    }
}

/// Where the files go.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum FilesDestination {
    /// Into [`FilesSinkConfig::root`]: a folder per table.
    #[default]
    Local,
    /// Into an object store (S3, GCS, Azure, …) under a prefix; the files
    /// are built in [`FilesSinkConfig::root`] first.
    #[cfg(feature = "files-object-store")]
    ObjectStore(super::remote::ObjectStoreLocation),
}

/// Configuration of a [`FilesSink`](super::FilesSink).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FilesSinkConfig {
    /// With a local destination, the directory the sink owns: a folder per
    /// table, each with its manifest and data files. With an object store,
    /// the local folder where files are built before their upload. Created
    /// when missing.
    pub root: PathBuf,
    /// The local folder or an object store.
    pub destination: FilesDestination,
    /// Parquet or CSV.
    pub format: FileFormat,
    /// When files are closed.
    pub roll: RollPolicy,
}

impl FilesSinkConfig {
    /// Parquet files under `root`, rolled by the default policy.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            destination: FilesDestination::Local,
            format: FileFormat::default(),
            roll: RollPolicy::default(),
        }
    }

    /// Parquet files uploaded to `location`, built in the local folder
    /// `spool` first, rolled by the default policy.
    #[cfg(feature = "files-object-store")]
    pub fn object_store(
        location: super::remote::ObjectStoreLocation,
        spool: impl Into<PathBuf>,
    ) -> Self {
        Self {
            destination: FilesDestination::ObjectStore(location),
            ..Self::new(spool)
        }
    }

    /// The storage the files go to.
    pub(super) fn storage(&self) -> super::storage::Storage {
        match &self.destination {
            FilesDestination::Local => super::storage::Storage::Local(self.root.clone()),
            #[cfg(feature = "files-object-store")]
            FilesDestination::ObjectStore(location) => {
                super::storage::Storage::Remote(super::remote::Remote::new(location.clone()))
            }
        }
    }

    /// Refuses limits that would never roll or roll on every row.
    pub fn validate(&self) -> Result<()> {
        if self.roll.max_rows == 0 || self.roll.max_bytes == 0 {
            return Err(Error::new(
                ErrorKind::Config,
                "the files sink's roll limits max_rows and max_bytes must be at least 1",
            ));
        }
        if self.roll.max_age.is_zero() {
            return Err(Error::new(
                ErrorKind::Config,
                "the files sink's roll limit max_age must be longer than zero",
            ));
        }
        if self.root.as_os_str().is_empty() {
            return Err(Error::new(
                ErrorKind::Config,
                "the files sink needs a root directory",
            ));
        }
        Ok(())
    }
}
