//! The files sink: each table's backfill and changes as Parquet or CSV data
//! files in a folder per table, with a manifest listing the complete ones.
//!
//! Layout under the root folder ([`FilesSinkConfig::root`]):
//!
//! ```text
//! _pg_replicate_state.json          where a restarted sink resumes
//! _tmp/                             files being written (cleared on open)
//! public.orders/                    a table: <schema>.<table>, escaped
//!     _manifest.json                the complete files, in order
//!     copy-00000000016B3748-000001.parquet
//!     changes-00000000016B9A10-00000000016C0F20-000002.parquet
//! ```
//!
//! Every row of a data file is a table row followed by the change metadata
//! ([`record`] has the columns). A file is written in `_tmp`, synced,
//! moved into the table's folder and then listed in the manifest, which is
//! replaced atomically; the manifest also records up to which LSN the
//! table's changes are listed. A process killed at any moment therefore
//! leaves only complete files listed, and a restart asks for the changes
//! after the position stored in the state file, skipping per table those
//! its manifest already covers: no change is listed twice or lost. The
//! pipeline confirms to Postgres only the position up to which everything
//! received is listed.
//!
//! Files roll by rows, bytes or age ([`RollPolicy`]). A file may end inside
//! a transaction, but files are listed only at transaction boundaries.
//!
//! Rooms: `config`, `record` (rows of a file), `csv` (CSV encoding),
//! `writer` (a file being written), `durable` (atomic replacement),
//! `manifest` (manifests and state), `sink` (the
//! [`Sink`](crate::sinks::Sink) implementation). The user guide is
//! `docs/files.md`.

mod config;
mod csv;
mod durable;
#[cfg(feature = "files-object-store")]
mod emulator;
mod manifest;
pub mod record;
#[cfg(feature = "files-object-store")]
mod remote;
mod sink;
mod storage;
mod writer;

pub use config::{FileFormat, FilesDestination, FilesSinkConfig, RollPolicy};
#[cfg(feature = "files-object-store")]
pub use emulator::LocalS3;
pub use manifest::{
    read_manifests, Manifest, ManifestEntry, FILES_FORMAT_VERSION, MANIFEST_FILE, STATE_FILE,
};
#[cfg(feature = "files-object-store")]
pub use remote::{ObjectStoreLocation, S3Settings};
pub use sink::FilesSink;
pub use storage::MULTIPART_PART;
