//! Replicates a Postgres database into a BigQuery dataset: backfill, then
//! every committed change, as current-state tables that converge exactly
//! once (the dataset stores the position it has applied, in the same
//! BigQuery transaction as the changes).
//!
//! ```text
//! cargo run --release --example bigquery -- \
//!     --db-host localhost --db-port 5432 --db-name postgres --db-username postgres \
//!     --project-id my-project --dataset-id replica --service-account-key-file key.json \
//!     cdc my_publication bigquery_slot
//! cargo run --release --example bigquery -- ... copy-table public my_table
//! ```
//!
//! `--bigquery-endpoint http://127.0.0.1:9050 --bigquery-storage-endpoint
//! http://127.0.0.1:9060` and no key file talk to a local emulator instead.
//! Progress goes to stderr: rows copied per table with their rate, then a
//! status line every few seconds (last stored LSN, changes/s, lag).

use std::path::PathBuf;

use clap::{Parser, ValueEnum};
use pg_replicate::sinks::bigquery::{
    BackfillMethod, BigQueryCredentials, BigQuerySink, BigQuerySinkConfig, StagingMethod,
    DEFAULT_ENDPOINT, DEFAULT_STORAGE_ENDPOINT,
};
use pg_replicate_examples::{init_logging, run_pipeline, shutdown_on_signal, Command, DbArgs};

/// Replicate a Postgres database into a BigQuery dataset.
#[derive(Parser, Debug)]
#[command(version)]
struct Cli {
    #[command(flatten)]
    db: DbArgs,
    /// The Google Cloud project of the dataset.
    #[arg(long)]
    project_id: String,
    /// The dataset to write; it must exist.
    #[arg(long)]
    dataset_id: String,
    /// The service account's JSON key file. Without one, requests carry no
    /// token (only for emulators).
    #[arg(long)]
    service_account_key_file: Option<PathBuf>,
    /// BigQuery's REST endpoint.
    #[arg(long, default_value = DEFAULT_ENDPOINT)]
    bigquery_endpoint: String,
    /// The Storage Write API's endpoint (gRPC; `http://` for plaintext).
    #[arg(long, default_value = DEFAULT_STORAGE_ENDPOINT)]
    bigquery_storage_endpoint: String,
    /// How copied rows reach BigQuery.
    #[arg(long, value_enum, default_value_t = Backfill::LoadJob)]
    backfill: Backfill,
    /// How changes reach the staging tables before they are applied.
    #[arg(long, value_enum, default_value_t = Staging::StorageWrite)]
    staging: Staging,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Backfill {
    LoadJob,
    StorageWrite,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Staging {
    StorageWrite,
    LoadJob,
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
    let connection = cli.db.connection();
    let cancel = shutdown_on_signal();
    let (source, action, identity) = cli.command.into_source(connection);
    let source = cli.db.configure(source);
    let credentials = match cli.service_account_key_file {
        Some(path) => BigQueryCredentials::ServiceAccountKeyFile(path),
        None => BigQueryCredentials::None,
    };
    let mut config = BigQuerySinkConfig::new(cli.project_id, cli.dataset_id, credentials)
        .with_endpoints(cli.bigquery_endpoint, cli.bigquery_storage_endpoint)
        .with_backfill(match cli.backfill {
            Backfill::LoadJob => BackfillMethod::LoadJob,
            Backfill::StorageWrite => BackfillMethod::StorageWrite,
        })
        .with_staging(match cli.staging {
            Staging::StorageWrite => StagingMethod::StorageWrite,
            Staging::LoadJob => StagingMethod::LoadJob,
        });
    if let Some(identity) = identity {
        config = config.with_identity(identity);
    }
    let sink = BigQuerySink::connect(config).await?;
    run_pipeline("bigquery", source, sink, action, &cli.db, cancel).await?;
    Ok(())
}
