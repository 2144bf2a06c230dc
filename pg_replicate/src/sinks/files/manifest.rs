//! The manifest of a table's folder (`_manifest.json`): the data files
//! that are complete, in order, and the position they cover. A file is
//! complete once its manifest lists it; readers go by the manifest only.
//!
//! The sink state (`_pg_replicate_state.json` in the root): the position
//! from which a restarted sink asks for changes again.

use serde::{Deserialize, Serialize};

use super::config::FilesSinkConfig;
use super::storage::Storage;
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

    /// Writes the manifest of `folder`, replacing the last one atomically.
    pub(super) async fn store(&self, storage: &Storage, folder: &str) -> Result<()> {
        let bytes = serde_json::to_vec_pretty(self).map_err(|e| {
            Error::with_source(ErrorKind::Internal, "could not encode a manifest", e)
        })?;
        storage
            .put(&format!("{folder}/{MANIFEST_FILE}"), bytes)
            .await
    }

    /// Reads the manifest of `folder`, if there is one.
    pub(super) async fn load(storage: &Storage, folder: &str) -> Result<Option<Self>> {
        let key = format!("{folder}/{MANIFEST_FILE}");
        let Some(bytes) = storage.get(&key).await? else {
            return Ok(None);
        };
        let manifest: Self =
            serde_json::from_slice(&bytes).map_err(|e| corrupt(storage, &key, e))?;
        check_version(storage, &key, manifest.format_version)?;
        Ok(Some(manifest))
    }
}

/// The manifests of every table folder a sink with `config` writes, with
/// the folders' names.
pub async fn read_manifests(config: &FilesSinkConfig) -> Result<Vec<(String, Manifest)>> {
    load_manifests(&config.storage()).await
}

pub(super) async fn load_manifests(storage: &Storage) -> Result<Vec<(String, Manifest)>> {
    let mut manifests = Vec::new();
    for folder in storage.folders().await? {
        if let Some(manifest) = Manifest::load(storage, &folder).await? {
            manifests.push((folder, manifest));
        }
    }
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
    pub(super) async fn load(storage: &Storage) -> Result<Self> {
        let Some(bytes) = storage.get(STATE_FILE).await? else {
            return Ok(Self::default());
        };
        let state: Self =
            serde_json::from_slice(&bytes).map_err(|e| corrupt(storage, STATE_FILE, e))?;
        check_version(storage, STATE_FILE, state.format_version)?;
        Ok(state)
    }

    pub(super) async fn store(&self, storage: &Storage) -> Result<()> {
        let bytes = serde_json::to_vec_pretty(self).map_err(|e| {
            Error::with_source(ErrorKind::Internal, "could not encode the sink state", e)
        })?;
        storage.put(STATE_FILE, bytes).await
    }
}

fn corrupt(storage: &Storage, key: &str, error: serde_json::Error) -> Error {
    // Not retried: the file stays as it is until someone acts.
    Error::with_source(
        ErrorKind::Config,
        format!(
            "{key} in {} is not a manifest or state file this library wrote (edited by hand?); \
             restore it or replicate into a fresh location",
            storage.describe()
        ),
        error,
    )
}

fn check_version(storage: &Storage, key: &str, version: u32) -> Result<()> {
    if version == FILES_FORMAT_VERSION {
        return Ok(());
    }
    Err(Error::new(
        ErrorKind::Config,
        format!(
            "{key} in {} has layout version {version}, this library reads version \
             {FILES_FORMAT_VERSION}: use the library version that wrote it, or replicate into a \
             fresh location",
            storage.describe()
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
