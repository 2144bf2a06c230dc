//! Runs every pipeline a config database describes: polls its `sources`,
//! `destinations` and `pipelines` tables (created on first start) and runs
//! each pipeline whose status is `START`, pausing it when set to `PAUSE`.
//! Each pipeline's state and error are written back to its row.
//!
//! ```text
//! CONFIG_DB_HOST=localhost CONFIG_DB_NAME=config CONFIG_DB_USER=replicator \
//! CONFIG_DB_PASSWORD=... cargo run --release --example replicator
//! ```
//!
//! Settings come from the environment or a `.env` file in the working
//! directory (the environment wins):
//!
//! | Setting | Default |
//! |---|---|
//! | `CONFIG_DB_HOST` | `localhost` |
//! | `CONFIG_DB_PORT` | `5432` |
//! | `CONFIG_DB_NAME` | required |
//! | `CONFIG_DB_USER` | required |
//! | `CONFIG_DB_PASSWORD` | none |
//! | `CONFIG_DB_SSLMODE` | `prefer` |
//! | `CONFIG_DB_SCHEMA` | `public` |
//! | `PIPELINE_POLL_INTERVAL_SECS` | `10` |
//! | `MAX_RUNNING_PIPELINES` | `16` |
//!
//! The tables and the destination configs: docs/config_db.md. Ctrl-C
//! stops every pipeline after storing and confirming what it received.

use std::path::Path;
use std::time::Duration;

use pg_replicate::config_db::ConfigDbReplicator;
use pg_replicate::postgres::{PgConnectionConfig, SslMode};
use pg_replicate_examples::{init_logging, shutdown_on_signal, Settings};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    init_logging();
    match run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), String> {
    let settings = Settings::load(Path::new(".env"))?;
    let config_db = PgConnectionConfig {
        host: settings
            .get("CONFIG_DB_HOST")
            .unwrap_or_else(|| "localhost".to_owned()),
        port: settings.parsed("CONFIG_DB_PORT", 5432)?,
        dbname: settings.required("CONFIG_DB_NAME")?,
        username: settings.required("CONFIG_DB_USER")?,
        password: settings.get("CONFIG_DB_PASSWORD"),
        ssl_mode: settings.parsed("CONFIG_DB_SSLMODE", SslMode::Prefer)?,
        ssl_root_cert: None,
        application_name: Some("pg_replicate replicator".to_owned()),
    };
    let replicator = ConfigDbReplicator::new(config_db)
        .with_schema(
            settings
                .get("CONFIG_DB_SCHEMA")
                .unwrap_or_else(|| "public".to_owned()),
        )
        .with_poll_interval(Duration::from_secs(
            settings.parsed("PIPELINE_POLL_INTERVAL_SECS", 10)?,
        ))
        .with_max_running(settings.parsed("MAX_RUNNING_PIPELINES", 16)?);
    eprintln!("replicator: polling the config database; Ctrl-C stops");
    replicator
        .run(shutdown_on_signal())
        .await
        .map_err(|e| e.to_string())
}
