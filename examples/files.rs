//! Replicates a Postgres database into Parquet or CSV files: a folder per
//! table, each with a manifest listing the complete files (backfill, then
//! every committed change with its operation, commit LSN and sequence).
//!
//! ```text
//! cargo run --release --example files -- --db-host localhost --db-port 5432 \
//!     --db-name postgres --db-username postgres --db-password password \
//!     --dir replica-files --format parquet cdc my_publication files_slot
//! ```
//!
//! With `--s3-bucket` the files go to S3 (or an S3-compatible server given
//! by `--s3-endpoint`), with the credentials from `AWS_ACCESS_KEY_ID` and
//! `AWS_SECRET_ACCESS_KEY`; `--dir` is then where files are built before
//! their upload.
//!
//! Files are listed when they reach `--max-rows` or `--max-mb`, or at the
//! latest `--max-age-secs` after their first change. docs/files.md shows
//! the layout and how a warehouse loads it.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use pg_replicate::sinks::files::{
    FileFormat, FilesDestination, FilesSink, FilesSinkConfig, RollPolicy, S3Settings,
};
use pg_replicate_examples::{init_logging, run_pipeline, shutdown_on_signal, Command, DbArgs};

/// Replicate a Postgres database into Parquet or CSV files.
#[derive(Parser, Debug)]
#[command(version)]
struct Cli {
    #[command(flatten)]
    db: DbArgs,
    /// The folder to write (created when missing; one replication stream
    /// per folder).
    #[arg(long)]
    dir: PathBuf,
    /// The file format.
    #[arg(long, value_enum, default_value_t = Format::Parquet)]
    format: Format,
    /// Rows per file at most.
    #[arg(long, default_value_t = RollPolicy::default().max_rows)]
    max_rows: u64,
    /// Megabytes per file, about.
    #[arg(long, default_value_t = RollPolicy::default().max_bytes >> 20)]
    max_mb: u64,
    /// Seconds a change waits at most before its file is listed.
    #[arg(long, default_value_t = RollPolicy::default().max_age.as_secs())]
    max_age_secs: u64,
    /// Upload the files to this S3 bucket (it must exist).
    #[arg(long)]
    s3_bucket: Option<String>,
    /// The prefix under which the files go in the bucket.
    #[arg(long, default_value = "")]
    s3_prefix: String,
    /// The bucket's region.
    #[arg(long, default_value = "us-east-1", env = "AWS_REGION")]
    s3_region: String,
    /// An S3-compatible server instead of AWS, for example http://127.0.0.1:9000.
    #[arg(long)]
    s3_endpoint: Option<String>,
    /// The access key id.
    #[arg(
        long,
        env = "AWS_ACCESS_KEY_ID",
        hide_env_values = true,
        default_value = ""
    )]
    s3_access_key_id: String,
    /// The secret access key.
    #[arg(
        long,
        env = "AWS_SECRET_ACCESS_KEY",
        hide_env_values = true,
        default_value = ""
    )]
    s3_secret_access_key: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Format {
    Parquet,
    Csv,
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
    let (source, action, _identity) = cli.command.into_source(connection);
    let source = cli.db.configure(source);
    let destination = match cli.s3_bucket {
        None => FilesDestination::Local,
        Some(bucket) => FilesDestination::ObjectStore(
            S3Settings {
                bucket,
                prefix: cli.s3_prefix,
                region: cli.s3_region,
                endpoint: cli.s3_endpoint,
                access_key_id: cli.s3_access_key_id,
                secret_access_key: cli.s3_secret_access_key,
                session_token: std::env::var("AWS_SESSION_TOKEN").ok(),
            }
            .location()?,
        ),
    };
    let sink = FilesSink::open(FilesSinkConfig {
        root: cli.dir,
        destination,
        format: match cli.format {
            Format::Parquet => FileFormat::Parquet,
            Format::Csv => FileFormat::Csv,
        },
        roll: RollPolicy {
            max_rows: cli.max_rows,
            max_bytes: cli.max_mb.saturating_mul(1 << 20),
            max_age: Duration::from_secs(cli.max_age_secs),
        },
    })?;
    run_pipeline("files", source, sink, action, &cli.db, cancel).await?;
    Ok(())
}
