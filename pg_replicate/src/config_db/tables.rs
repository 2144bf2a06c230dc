//! The config database's tables: their migrations, the rows the replicator
//! reads and the state it writes back.

use tokio_postgres::Client;

use crate::postgres::{PgConnectionConfig, SslMode};
use crate::types::table::quote_identifier;
use crate::{Error, ErrorKind, Result};

/// The migrations, in order; `schema_migrations` records which ran.
/// `{schema}` stands for the quoted schema name.
const MIGRATIONS: &[&str] = &[
    // 1: sources, destinations and pipelines.
    "CREATE TABLE {schema}.sources (
        id bigserial PRIMARY KEY,
        name text NOT NULL UNIQUE,
        host text NOT NULL,
        port integer NOT NULL DEFAULT 5432 CHECK (port BETWEEN 1 AND 65535),
        dbname text NOT NULL,
        username text NOT NULL,
        password text,
        sslmode text NOT NULL DEFAULT 'prefer'
            CHECK (sslmode IN ('disable', 'prefer', 'require', 'verify-full')),
        publication text NOT NULL
    );
    CREATE TABLE {schema}.destinations (
        id bigserial PRIMARY KEY,
        name text NOT NULL UNIQUE,
        type text NOT NULL,
        -- text, not jsonb: a config that is not JSON is kept and reported
        -- on its pipelines instead of being refused without a trace.
        config text NOT NULL DEFAULT '{}'
    );
    CREATE TABLE {schema}.pipelines (
        id bigserial PRIMARY KEY,
        name text NOT NULL UNIQUE,
        source_id bigint NOT NULL REFERENCES {schema}.sources (id),
        destination_id bigint NOT NULL REFERENCES {schema}.destinations (id),
        slot text NOT NULL UNIQUE,
        status text NOT NULL DEFAULT 'PAUSE' CHECK (status IN ('START', 'PAUSE')),
        state text,
        error text,
        state_changed_at timestamptz
    );",
    // 2: per-pipeline transforms (JSON, as text like destination configs).
    "ALTER TABLE {schema}.pipelines ADD COLUMN transforms text NOT NULL DEFAULT '';",
];

/// Creates or brings up to date the config tables in `schema` (created
/// when missing). Safe to run from several replicators at once: an
/// advisory lock orders them.
pub async fn migrate(client: &Client, schema: &str) -> Result<()> {
    let quoted = quote_identifier(schema);
    let failed = |e: tokio_postgres::Error| {
        Error::with_source(
            ErrorKind::SourceSetup,
            format!(
                "could not create the config tables in schema {schema}; the user needs CREATE on \
                 the database (or create the schema and grant CREATE on it)"
            ),
            e,
        )
    };
    client
        .batch_execute(&format!(
            "BEGIN;
             SELECT pg_advisory_xact_lock(hashtext('pg_replicate config migrations'));
             CREATE SCHEMA IF NOT EXISTS {quoted};
             CREATE TABLE IF NOT EXISTS {quoted}.schema_migrations (
                 version integer PRIMARY KEY,
                 applied_at timestamptz NOT NULL DEFAULT now()
             );"
        ))
        .await
        .map_err(failed)?;
    let result = async {
        let applied: i32 = client
            .query_one(
                &format!("SELECT coalesce(max(version), 0) FROM {quoted}.schema_migrations"),
                &[],
            )
            .await?
            .get(0);
        for (index, migration) in MIGRATIONS.iter().enumerate() {
            let version = index as i32 + 1;
            if version <= applied {
                continue;
            }
            client
                .batch_execute(&migration.replace("{schema}", &quoted))
                .await?;
            client
                .execute(
                    &format!("INSERT INTO {quoted}.schema_migrations (version) VALUES ($1)"),
                    &[&version],
                )
                .await?;
        }
        client.batch_execute("COMMIT").await
    }
    .await;
    if let Err(error) = result {
        let _ = client.batch_execute("ROLLBACK").await;
        return Err(failed(error));
    }
    Ok(())
}

/// One row of `pipelines` with its source and destination.
#[derive(Clone, PartialEq, Eq)]
pub struct PipelineRow {
    /// The pipeline's name.
    pub name: String,
    /// Where it reads.
    pub source: PgConnectionConfig,
    /// The source's publication.
    pub publication: String,
    /// The replication slot.
    pub slot: String,
    /// The destination's name.
    pub destination: String,
    /// The destination's type.
    pub destination_type: String,
    /// The destination's JSON config, as stored.
    pub destination_config: String,
    /// `START` or `PAUSE`.
    pub status: String,
    /// The pipeline's transforms (JSON), as stored; empty for none.
    pub transforms: String,
}

impl std::fmt::Debug for PipelineRow {
    /// Leaves out the password and the destination config (secrets).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PipelineRow")
            .field("name", &self.name)
            .field("source", &self.source)
            .field("publication", &self.publication)
            .field("slot", &self.slot)
            .field("destination", &self.destination)
            .field("destination_type", &self.destination_type)
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}

/// Every pipeline row, with its source and destination.
pub async fn pipelines(client: &Client, schema: &str) -> Result<Vec<PipelineRow>> {
    let s = quote_identifier(schema);
    let rows = client
        .query(
            &format!(
                "SELECT p.name, s.host, s.port, s.dbname, s.username, s.password, s.sslmode,
                        s.publication, p.slot, d.name, d.type, d.config, p.status, p.transforms
                 FROM {s}.pipelines p
                 JOIN {s}.sources s ON s.id = p.source_id
                 JOIN {s}.destinations d ON d.id = p.destination_id
                 ORDER BY p.name"
            ),
            &[],
        )
        .await
        .map_err(|e| {
            Error::with_source(
                ErrorKind::Connection,
                "could not read the pipelines from the config database",
                e,
            )
        })?;
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let port: i32 = row.get(2);
        let sslmode: String = row.get(6);
        out.push(PipelineRow {
            name: row.get(0),
            source: PgConnectionConfig {
                host: row.get(1),
                port: u16::try_from(port).unwrap_or(5432),
                dbname: row.get(3),
                username: row.get(4),
                password: row.get(5),
                ssl_mode: sslmode.parse().unwrap_or(SslMode::Prefer),
                ssl_root_cert: None,
                application_name: None,
            },
            publication: row.get(7),
            slot: row.get(8),
            destination: row.get(9),
            destination_type: row.get(10),
            destination_config: row.get(11),
            status: row.get(12),
            transforms: row.get(13),
        });
    }
    Ok(out)
}

/// Records a pipeline's state (and error, if any) in its row, when they
/// changed.
pub async fn write_state(
    client: &Client,
    schema: &str,
    pipeline: &str,
    state: &str,
    error: Option<&str>,
) -> Result<()> {
    let s = quote_identifier(schema);
    client
        .execute(
            &format!(
                "UPDATE {s}.pipelines SET state = $2, error = $3, state_changed_at = now()
                 WHERE name = $1 AND (state IS DISTINCT FROM $2 OR error IS DISTINCT FROM $3)"
            ),
            &[&pipeline, &state, &error],
        )
        .await
        .map_err(|e| {
            Error::with_source(
                ErrorKind::Connection,
                "could not write a pipeline's state to the config database",
                e,
            )
        })?;
    Ok(())
}
