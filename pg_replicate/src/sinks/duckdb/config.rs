//! [`DuckDbSinkConfig`]: where the DuckDB file is and what the sink keeps in
//! it.

use std::fmt;
use std::path::PathBuf;

/// What the sink maintains for every replicated table.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum DuckDbMode {
    /// A table equal to the Postgres table (`"schema"."table"`): inserts,
    /// updates and deletes are applied. The default.
    #[default]
    CurrentState,
    /// Only an append-only change history per table
    /// (`"schema"."table__history"`): one row per copied row and per
    /// change, with the operation, commit LSN, commit time and sequence.
    History,
    /// Both the current-state table and the history table.
    Both,
}

impl DuckDbMode {
    /// Whether current-state tables are maintained.
    pub fn current_state(self) -> bool {
        matches!(self, Self::CurrentState | Self::Both)
    }

    /// Whether history tables are maintained.
    pub fn history(self) -> bool {
        matches!(self, Self::History | Self::Both)
    }

    /// The name stored in the state table: `current_state`, `history` or
    /// `both`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::CurrentState => "current_state",
            Self::History => "history",
            Self::Both => "both",
        }
    }

    /// Parses [`DuckDbMode::as_str`]'s names.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "current_state" => Some(Self::CurrentState),
            "history" => Some(Self::History),
            "both" => Some(Self::Both),
            _ => None,
        }
    }
}

impl fmt::Display for DuckDbMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// DuckDB's memory limit while a sink is open, unless told otherwise
/// ([`DuckDbSinkConfig::memory_limit`]): the backfill of a table of any
/// size then peaks at about this much plus the pipeline's own batches
/// (docs/duckdb.md, "Memory").
pub const DEFAULT_MEMORY_LIMIT: &str = "1GB";

/// The storage version of the files a sink creates unless told otherwise:
/// every DuckDB release from 1.0 on opens them. (DuckDB's own default is
/// its newest format, which older releases refuse to open.)
pub const DEFAULT_STORAGE_VERSION: &str = "v1.0.0";

/// Configuration of a [`DuckDbSink`](super::DuckDbSink).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DuckDbSinkConfig {
    /// The DuckDB database file; created when missing. The sink holds
    /// DuckDB's exclusive lock on it while open.
    pub path: PathBuf,
    /// Current state, history or both.
    pub mode: DuckDbMode,
    /// Who writes this file, for example `"publication/slot"`. Stored in
    /// the file by the first run; a later run with a different identity is
    /// refused, so a file is never mixed with the data of another
    /// replication stream. `None` skips the check (and stores nothing).
    pub identity: Option<String>,
    /// DuckDB's `memory_limit` while the sink is open, for example
    /// `"1GB"`; beyond it DuckDB spills to temporary files. Default
    /// [`DEFAULT_MEMORY_LIMIT`], so the sink's memory stays bounded
    /// whatever the table size; `None` keeps DuckDB's own default (80% of
    /// the machine's memory).
    pub memory_limit: Option<String>,
    /// The oldest DuckDB release that must open a file this sink creates,
    /// as DuckDB names it (`"v1.0.0"`, `"v1.4.0"`, `"latest"`; DuckDB's
    /// `storage_compatibility_version`). An existing file keeps the version
    /// it was created with. Default: [`DEFAULT_STORAGE_VERSION`].
    pub storage_version: String,
}

impl DuckDbSinkConfig {
    /// A current-state sink writing `path`, without an identity check.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            mode: DuckDbMode::default(),
            identity: None,
            memory_limit: Some(DEFAULT_MEMORY_LIMIT.to_owned()),
            storage_version: DEFAULT_STORAGE_VERSION.to_owned(),
        }
    }

    /// Sets the mode.
    pub fn with_mode(mut self, mode: DuckDbMode) -> Self {
        self.mode = mode;
        self
    }

    /// Sets the identity stored in and checked against the file.
    pub fn with_identity(mut self, identity: impl Into<String>) -> Self {
        self.identity = Some(identity.into());
        self
    }

    /// Sets DuckDB's memory limit, for example `"1GB"`.
    pub fn with_memory_limit(mut self, limit: impl Into<String>) -> Self {
        self.memory_limit = Some(limit.into());
        self
    }

    /// Sets the storage version of a file the sink creates, for example
    /// `"latest"`.
    pub fn with_storage_version(mut self, version: impl Into<String>) -> Self {
        self.storage_version = version.into();
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_round_trip_and_say_what_they_keep() {
        for mode in [
            DuckDbMode::CurrentState,
            DuckDbMode::History,
            DuckDbMode::Both,
        ] {
            assert_eq!(DuckDbMode::from_name(mode.as_str()), Some(mode));
        }
        assert!(DuckDbMode::CurrentState.current_state() && !DuckDbMode::CurrentState.history());
        assert!(!DuckDbMode::History.current_state() && DuckDbMode::History.history());
        assert!(DuckDbMode::Both.current_state() && DuckDbMode::Both.history());
        let config = DuckDbSinkConfig::new("x.duckdb").with_identity("pub/slot");
        assert_eq!(config.identity.as_deref(), Some("pub/slot"));
        assert_eq!(config.mode, DuckDbMode::CurrentState);
    }
}
