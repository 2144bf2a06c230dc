//! [`PostgresSinkConfig`]: where the replica goes.

use crate::postgres::PgConnectionConfig;

/// Default of [`PostgresSinkConfig::stage_flush_bytes`]: 64 MiB.
pub const DEFAULT_STAGE_FLUSH_BYTES: usize = 64 << 20;

/// Configuration of a [`PostgresSink`](super::PostgresSink).
#[derive(Clone, Debug)]
pub struct PostgresSinkConfig {
    /// The target database. The user needs `CREATE` on the database (the
    /// schema `_pg_replicate` and the tables' schemas are created when
    /// missing) or on existing schemas, and owns the tables it creates.
    pub connection: PgConnectionConfig,
    /// What the replica is of (for example `"publication/slot"`), stored in
    /// `_pg_replicate.progress`: a target database that holds the replica
    /// of another identity is refused rather than mixed. `None` skips the
    /// check.
    pub identity: Option<String>,
    /// A backfill of a table with columns of text-carried types (enums,
    /// domains, `inet`, unconstrained `numeric`, …) copies into a
    /// temporary table and casts into the table every this many bytes.
    pub stage_flush_bytes: usize,
}

impl PostgresSinkConfig {
    /// A configuration writing to `connection`, without identity check.
    pub fn new(connection: PgConnectionConfig) -> Self {
        Self {
            connection,
            identity: None,
            stage_flush_bytes: DEFAULT_STAGE_FLUSH_BYTES,
        }
    }

    /// The same configuration, refusing a target that holds the replica of
    /// another `identity`.
    pub fn with_identity(mut self, identity: impl Into<String>) -> Self {
        self.identity = Some(identity.into());
        self
    }
}
