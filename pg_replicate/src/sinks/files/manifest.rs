//! The manifest of a table's folder (`_manifest.json`): the data files
//! that are complete, in order, and the position they cover. A file is
//! complete once its manifest lists it; readers go by the manifest only.
//!
//! The sink state (`_pg_replicate_state.json` in the root): the position
//! from which a restarted sink asks for changes again.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::durable::{io_error, replace_file};
use crate::types::{Lsn, TableId, TableSchema};
use crate::{Error, ErrorKind, Result};

/// The manifest's file name in each table folder.
pub const MANIFEST_FILE: &str = "_manifest.json";
/// The sink state's file name in the root folder.
pub const STATE_FILE: &str = "_pg_replicate_state.json";
/// The version of the manifest and state layout this library writes.
pub const FILES_FORMAT_VERSION: u32 = 1;

/// A table folder's manifest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// [`FILES_FORMAT_VERSION`] of the library that wrote it.
    pub format_version: u32,
    /// The table's oid.
    pub table_id: u32,
    /// The table's schema (namespace).
    pub schema: String,
    /// The table's name.
    pub table: String,
    /// The snapshot LSN of the table's completed backfill, if any.
    #[serde(with = "optional_lsn")]
    pub copied_at: Option<Lsn>,
    /// Every change of the table committed before this LSN is in the
    /// listed files (changes at or after it are not).
    #[serde(with = "lsn_text")]
    pub covers_until: Lsn,
    /// Number given to the next data file.
    pub next_file: u64,
    /// The files and truncates, in the order to apply them.
    pub entries: Vec<ManifestEntry>,
}

/// One entry of a manifest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ManifestEntry {
    /// A file of the table's backfill.
    Copy {
        /// The file name, in the table's folder.
        file: String,
        /// Rows in the file.
        rows: u64,
        /// The file's size.
        bytes: u64,
    },
    /// A file of changes.
    Changes {
        /// The file name, in the table's folder.
        file: String,
        /// Rows (changes) in the file.
        rows: u64,
        /// The file's size.
        bytes: u64,
        /// Commit LSN of the first change.
        #[serde(with = "lsn_text")]
        first_lsn: Lsn,
        /// Commit LSN of the last change.
        #[serde(with = "lsn_text")]
        last_lsn: Lsn,
    },
    /// `TRUNCATE` of the table: the rows of the entries before it are gone.
    Truncate {
        /// Commit LSN of the truncating transaction.
        #[serde(with = "lsn_text")]
        lsn: Lsn,
        /// `TRUNCATE … CASCADE` was used.
        cascade: bool,
        /// `TRUNCATE … RESTART IDENTITY` was used.
        restart_identity: bool,
    },
}

impl ManifestEntry {
    /// The data file of the entry, if it has one.
    pub fn file(&self) -> Option<&str> {
        match self {
            Self::Copy { file, .. } | Self::Changes { file, .. } => Some(file),
            Self::Truncate { .. } => None,
        }
    }
}

impl Manifest {
    /// An empty manifest of `table`.
    pub(super) fn empty(table: &TableSchema) -> Self {
        Self {
            format_version: FILES_FORMAT_VERSION,
            table_id: table.id.0,
            schema: table.name.schema.clone(),
            table: table.name.name.clone(),
            copied_at: None,
            covers_until: Lsn::ZERO,
            next_file: 1,
            entries: Vec::new(),
        }
    }

    /// The table's id.
    pub fn id(&self) -> TableId {
        TableId(self.table_id)
    }

    /// Writes the manifest into `dir`, replacing the last one atomically.
    pub(super) fn store(&self, dir: &Path) -> Result<()> {
        let bytes = serde_json::to_vec_pretty(self).map_err(|e| {
            Error::with_source(ErrorKind::Internal, "could not encode a manifest", e)
        })?;
        replace_file(&dir.join(MANIFEST_FILE), &bytes)
    }

    /// Reads the manifest in `dir`, if there is one.
    pub fn load(dir: &Path) -> Result<Option<Self>> {
        let path = dir.join(MANIFEST_FILE);
        let Some(bytes) = read_if_exists(&path)? else {
            return Ok(None);
        };
        let manifest: Self = serde_json::from_slice(&bytes).map_err(|e| corrupt(&path, e))?;
        check_version(&path, manifest.format_version)?;
        Ok(Some(manifest))
    }
}

/// The manifests of every table folder under `root`, with their folders.
pub fn read_manifests(root: &Path) -> Result<Vec<(PathBuf, Manifest)>> {
    let mut manifests = Vec::new();
    let entries = match std::fs::read_dir(root) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(manifests),
        Err(e) => return Err(io_error("list", root, e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| io_error("list", root, e))?;
        let dir = entry.path();
        if !dir.is_dir() {
            continue;
        }
        if let Some(manifest) = Manifest::load(&dir)? {
            manifests.push((dir, manifest));
        }
    }
    manifests.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(manifests)
}

/// The sink's state file.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct SinkState {
    pub(super) format_version: u32,
    /// Every change before this LSN is listed in a manifest (or skipped as
    /// already listed).
    #[serde(with = "optional_lsn")]
    pub(super) last_lsn: Option<Lsn>,
}

impl SinkState {
    pub(super) fn load(root: &Path) -> Result<Self> {
        let path = root.join(STATE_FILE);
        let Some(bytes) = read_if_exists(&path)? else {
            return Ok(Self::default());
        };
        let state: Self = serde_json::from_slice(&bytes).map_err(|e| corrupt(&path, e))?;
        check_version(&path, state.format_version)?;
        Ok(state)
    }

    pub(super) fn store(&self, root: &Path) -> Result<()> {
        let bytes = serde_json::to_vec_pretty(self).map_err(|e| {
            Error::with_source(ErrorKind::Internal, "could not encode the sink state", e)
        })?;
        replace_file(&root.join(STATE_FILE), &bytes)
    }
}

fn read_if_exists(path: &Path) -> Result<Option<Vec<u8>>> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_error("read", path, e)),
    }
}

fn corrupt(path: &Path, error: serde_json::Error) -> Error {
    // Not retried: the file stays as it is until someone acts.
    Error::with_source(
        ErrorKind::Config,
        format!(
            "{} is not a manifest or state file this library wrote (edited by hand?); restore it or \
             replicate into a fresh directory",
            path.display()
        ),
        error,
    )
}

fn check_version(path: &Path, version: u32) -> Result<()> {
    if version == FILES_FORMAT_VERSION {
        return Ok(());
    }
    Err(Error::new(
        ErrorKind::Config,
        format!(
            "{} has layout version {version}, this library reads version {FILES_FORMAT_VERSION}: \
             use the library version that wrote it, or replicate into a fresh directory",
            path.display()
        ),
    ))
}

/// An LSN as its Postgres text (`16/B374D848`).
mod lsn_text {
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::types::Lsn;

    pub fn serialize<S: Serializer>(lsn: &Lsn, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(lsn)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Lsn, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse()
            .map_err(|_| serde::de::Error::custom(format!("invalid LSN {text:?}")))
    }
}

/// An optional LSN as its Postgres text or `null`.
mod optional_lsn {
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::types::Lsn;

    pub fn serialize<S: Serializer>(lsn: &Option<Lsn>, serializer: S) -> Result<S::Ok, S::Error> {
        match lsn {
            Some(lsn) => serializer.collect_str(lsn),
            None => serializer.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Lsn>, D::Error> {
        let text = Option::<String>::deserialize(deserializer)?;
        text.map(|text| {
            text.parse()
                .map_err(|_| serde::de::Error::custom(format!("invalid LSN {text:?}")))
        })
        .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifests_round_trip_through_json() {
        let manifest = Manifest {
            format_version: FILES_FORMAT_VERSION,
            table_id: 16384,
            schema: "public".into(),
            table: "orders".into(),
            copied_at: Some(Lsn(0x16_B374_D848)),
            covers_until: Lsn(0x17_0000_0000),
            next_file: 4,
            entries: vec![
                ManifestEntry::Copy {
                    file: "copy-1.parquet".into(),
                    rows: 10,
                    bytes: 100,
                },
                ManifestEntry::Truncate {
                    lsn: Lsn(0x16_C000_0000),
                    cascade: false,
                    restart_identity: true,
                },
            ],
        };
        let text = serde_json::to_string(&manifest).unwrap();
        assert!(text.contains(r#""copied_at":"16/B374D848""#), "{text}");
        assert!(text.contains(r#""kind":"truncate""#), "{text}");
        let back: Manifest = serde_json::from_str(&text).unwrap();
        assert_eq!(back, manifest);
    }
}
