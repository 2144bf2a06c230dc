//! Replicates a Postgres database into a Snowflake schema: backfill in
//! bulk through a stage, then every committed change through landing
//! tables merged by key, the applied LSN stored after them (docs/snowflake.md).
//!
//! ```text
//! cargo run --release --example snowflake -- \
//!     --db-host localhost --db-port 5432 --db-name postgres --db-username postgres \
//!     --account myorg-myaccount --user LOADER --database ANALYTICS --schema REPLICA \
//!     --warehouse LOAD_WH --private-key-path rsa_key.p8 \
//!     [--task-schedule-minutes 5 [--landing-schema LANDING]] \
//!     cdc my_publication snowflake_slot
//! cargo run --release --example snowflake -- ... copy-table public my_table
//! ```
//!
//! The key's passphrase comes from `--private-key-passphrase` or
//! `SNOWFLAKE_PRIVATE_KEY_PASSPHRASE`; `--password` (or
//! `SNOWFLAKE_PASSWORD`) logs in with a password instead of a key.
//! `--snowflake-url http://127.0.0.1:PORT` talks to an emulator or a
//! private-link host. Progress goes to stderr.

use std::path::PathBuf;

use clap::Parser;
use pg_replicate::sinks::snowflake::{
    MergeMode, SnowflakeConfig, SnowflakeCredentials, SnowflakeSink, SnowflakeSinkConfig,
};
use pg_replicate_examples::{init_logging, run_pipeline, shutdown_on_signal, Command, DbArgs};

/// Replicate a Postgres database into a Snowflake schema.
#[derive(Parser, Debug)]
#[command(version)]
struct Cli {
    #[command(flatten)]
    db: DbArgs,
    /// The account identifier (`myorg-myaccount`, or a locator with its
    /// region such as `xy12345.us-east-1`).
    #[arg(long)]
    account: String,
    /// The user the pipeline logs in as.
    #[arg(long)]
    user: String,
    /// The database to write.
    #[arg(long)]
    database: String,
    /// The schema to write; it must exist.
    #[arg(long)]
    schema: String,
    /// The warehouse that runs the statements.
    #[arg(long)]
    warehouse: Option<String>,
    /// The role to use.
    #[arg(long)]
    role: Option<String>,
    /// PKCS#8 PEM private key of the user (key-pair authentication).
    #[arg(long, conflicts_with = "password")]
    private_key_path: Option<PathBuf>,
    /// Passphrase of an encrypted private key.
    #[arg(long, env = "SNOWFLAKE_PRIVATE_KEY_PASSPHRASE", hide_env_values = true)]
    private_key_passphrase: Option<String>,
    /// The user's password, instead of a key.
    #[arg(long, env = "SNOWFLAKE_PASSWORD", hide_env_values = true)]
    password: Option<String>,
    /// The REST API's base URL instead of
    /// `https://<account>.snowflakecomputing.com`.
    #[arg(long)]
    snowflake_url: Option<String>,
    /// Keep changes in landing tables and merge them by a Snowflake task
    /// every this many minutes, instead of after every batch.
    #[arg(long)]
    task_schedule_minutes: Option<u32>,
    /// The schema (created when missing) of the landing tables and merge
    /// tasks, with `--task-schedule-minutes`; default: `--schema`.
    #[arg(long, requires = "task_schedule_minutes")]
    landing_schema: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    init_logging();
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<(), pg_replicate::Error> {
    let credentials = match (cli.private_key_path, cli.password) {
        (Some(path), _) => SnowflakeCredentials::key_pair_file(path, cli.private_key_passphrase)?,
        (None, Some(password)) => SnowflakeCredentials::Password(password),
        (None, None) => {
            return Err(pg_replicate::Error::new(
                pg_replicate::ErrorKind::Config,
                "give --private-key-path (key-pair authentication) or --password (or set SNOWFLAKE_PASSWORD)",
            ))
        }
    };
    let mut connection = SnowflakeConfig::new(cli.account, cli.user, credentials)
        .with_database(cli.database)
        .with_schema(cli.schema);
    if let Some(warehouse) = cli.warehouse {
        connection = connection.with_warehouse(warehouse);
    }
    if let Some(role) = cli.role {
        connection = connection.with_role(role);
    }
    if let Some(url) = cli.snowflake_url {
        connection = connection.with_base_url(url);
    }
    let cancel = shutdown_on_signal();
    let (source, action, identity) = cli.command.into_source(cli.db.connection());
    let source = cli.db.configure(source);
    let mut config = SnowflakeSinkConfig::new(connection);
    if let Some(identity) = identity {
        config = config.with_identity(identity);
    }
    if let Some(every_minutes) = cli.task_schedule_minutes {
        config = config.with_merge(MergeMode::Task { every_minutes });
    }
    if let Some(schema) = cli.landing_schema {
        config = config.with_landing_schema(schema);
    }
    let sink = SnowflakeSink::connect(config).await?;
    run_pipeline("snowflake", source, sink, action, &cli.db, cancel).await?;
    Ok(())
}
