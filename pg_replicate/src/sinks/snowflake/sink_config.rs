//! [`SnowflakeSinkConfig`]: how the Snowflake sink connects and names its
//! state.

use super::config::SnowflakeConfig;

/// Default size of one file uploaded to the stage.
pub const DEFAULT_FILE_BYTES: usize = 64 << 20;

/// Configuration of a [`SnowflakeSink`](super::SnowflakeSink).
#[derive(Clone, Debug)]
pub struct SnowflakeSinkConfig {
    pub(crate) connection: SnowflakeConfig,
    pub(crate) identity: String,
    pub(crate) file_bytes: usize,
}

impl SnowflakeSinkConfig {
    /// Replicates into the database and schema of `connection` (both must
    /// be set, and the schema must exist).
    pub fn new(connection: SnowflakeConfig) -> Self {
        Self {
            connection,
            identity: "default".to_owned(),
            file_bytes: DEFAULT_FILE_BYTES,
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

    /// The identity.
    pub fn identity(&self) -> &str {
        &self.identity
    }
}
