//! [`SnowflakeSinkConfig`]: how the Snowflake sink connects, names its
//! state and merges changes.

use super::config::SnowflakeConfig;

/// Default size of one file uploaded to the stage.
pub const DEFAULT_FILE_BYTES: usize = 64 << 20;

/// When the changes in the landing tables reach the target tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MergeMode {
    /// Each change batch is merged before its LSN is stored (the default):
    /// the target tables are as recent as the confirmed LSN.
    Inline,
    /// Changes accumulate in the landing tables and a Snowflake task per
    /// table, created and resumed by the sink, merges them every
    /// `every_minutes` minutes (on the warehouse of the connection, or
    /// serverless without one). The LSN is stored once the changes are in
    /// the landing table.
    Task {
        /// The task's schedule, in minutes (at least 1).
        every_minutes: u32,
    },
    /// Changes accumulate in the landing tables and nothing merges them:
    /// the application runs
    /// [`SnowflakeSink::merge_landing`](super::SnowflakeSink::merge_landing)
    /// itself (a process of its own, while no task runs).
    External,
}

impl MergeMode {
    /// Whether changes stay in the landing tables after a batch.
    pub fn accumulates(&self) -> bool {
        !matches!(self, Self::Inline)
    }
}

/// Configuration of a [`SnowflakeSink`](super::SnowflakeSink).
#[derive(Clone, Debug)]
pub struct SnowflakeSinkConfig {
    pub(crate) connection: SnowflakeConfig,
    pub(crate) identity: String,
    pub(crate) file_bytes: usize,
    pub(crate) merge: MergeMode,
    pub(crate) landing_schema: Option<String>,
}

impl SnowflakeSinkConfig {
    /// Replicates into the database and schema of `connection` (both must
    /// be set, and the schema must exist).
    pub fn new(connection: SnowflakeConfig) -> Self {
        Self {
            connection,
            identity: "default".to_owned(),
            file_bytes: DEFAULT_FILE_BYTES,
            merge: MergeMode::Inline,
            landing_schema: None,
        }
    }

    /// The name under which this pipeline's state is stored (default
    /// `default`); pipelines writing the same schema need distinct ones.
    pub fn with_identity(mut self, identity: impl Into<String>) -> Self {
        self.identity = identity.into();
        self
    }

    /// How large each CSV file uploaded to the stage grows before it is
    /// sent (default 64 MiB): the memory a copy holds per table.
    pub fn with_file_bytes(mut self, bytes: usize) -> Self {
        self.file_bytes = bytes.max(1);
        self
    }

    /// When changes are merged into the target tables (default
    /// [`MergeMode::Inline`]).
    pub fn with_merge(mut self, merge: MergeMode) -> Self {
        self.merge = match merge {
            MergeMode::Task { every_minutes } => MergeMode::Task {
                every_minutes: every_minutes.max(1),
            },
            other => other,
        };
        self
    }

    /// The schema (of the same database) holding the landing tables and
    /// the merge tasks, created when missing; default: the target schema.
    /// Spelled as table names are: plain lower case becomes upper case.
    pub fn with_landing_schema(mut self, schema: impl Into<String>) -> Self {
        self.landing_schema = Some(schema.into());
        self
    }

    /// The identity.
    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// The merge mode.
    pub fn merge(&self) -> MergeMode {
        self.merge
    }
}
