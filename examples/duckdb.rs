//! Replicates a Postgres database into a DuckDB file: backfill, then every
//! committed change, exactly once (the DuckDB file stores the position it
//! has applied, in the same transaction as the data).
//!
//! ```text
//! cargo run --release --example duckdb -- --db-host localhost --db-port 5432 \
//!     --db-name postgres --db-username postgres --db-password password \
//!     --duckdb-file replica.duckdb cdc my_publication duckdb_slot
//! cargo run --release --example duckdb -- ... --duckdb-file replica.duckdb copy-table public my_table
//! ```
//!
//! Progress goes to stderr: rows copied per table with their rate, then a
//! status line every few seconds (last stored LSN, changes/s, lag).

use std::path::PathBuf;

use clap::{Parser, ValueEnum};
use pg_replicate::sinks::duckdb::{
    DuckDbMode, DuckDbSink, DuckDbSinkConfig, DEFAULT_MEMORY_LIMIT, DEFAULT_STORAGE_VERSION,
};
use pg_replicate_examples::{init_logging, run_pipeline, shutdown_on_signal, Command, DbArgs};

/// Replicate a Postgres database into a DuckDB file.
#[derive(Parser, Debug)]
#[command(version)]
struct Cli {
    #[command(flatten)]
    db: DbArgs,
    /// The DuckDB file to write (created when missing).
    #[arg(long)]
    duckdb_file: PathBuf,
    /// What to keep in DuckDB: the current rows, an append-only history of
    /// every change per table, or both.
    #[arg(long, value_enum, default_value_t = Mode::Current)]
    mode: Mode,
    /// DuckDB's memory limit, for example 4GB; `none` leaves DuckDB's own
    /// default (80% of RAM).
    #[arg(long, default_value = DEFAULT_MEMORY_LIMIT)]
    duckdb_memory_limit: String,
    /// The oldest DuckDB release that must open a file created here, for
    /// example v1.4.0 or latest.
    #[arg(long, default_value = DEFAULT_STORAGE_VERSION)]
    duckdb_storage_version: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Mode {
    Current,
    History,
    Both,
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
    let mode = match cli.mode {
        Mode::Current => DuckDbMode::CurrentState,
        Mode::History => DuckDbMode::History,
        Mode::Both => DuckDbMode::Both,
    };
    let cancel = shutdown_on_signal();
    let (source, action, identity) = cli.command.into_source(connection);
    let source = cli.db.configure(source);
    let sink = DuckDbSink::open(DuckDbSinkConfig {
        path: cli.duckdb_file,
        mode,
        identity,
        memory_limit: (cli.duckdb_memory_limit != "none").then_some(cli.duckdb_memory_limit),
        storage_version: cli.duckdb_storage_version,
    })?;
    run_pipeline("duckdb", source, sink, action, &cli.db, cancel).await?;
    Ok(())
}
