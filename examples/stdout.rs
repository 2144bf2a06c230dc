//! Replicates a Postgres database to standard output as JSON Lines.
//!
//! ```text
//! cargo run --release --example stdout -- --db-host localhost --db-port 5432 \
//!     --db-name postgres --db-username postgres --db-password password \
//!     cdc my_publication stdout_slot
//! cargo run --release --example stdout -- ... copy-table public my_table
//! ```
//!
//! Data goes to stdout; progress (rows copied, changes/s) to stderr, logs
//! too with `RUST_LOG=info`. Ctrl-C stops after handing out the
//! transactions already received.

use clap::Parser;
use pg_replicate::sinks::stdout::StdoutSink;
use pg_replicate_examples::{init_logging, run_pipeline, shutdown_on_signal, Command, DbArgs};

/// Print a Postgres database's rows and changes as JSON Lines.
#[derive(Parser, Debug)]
#[command(version)]
struct Cli {
    #[command(flatten)]
    db: DbArgs,
    #[command(subcommand)]
    command: Command,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    init_logging();
    let cli = Cli::parse();
    let (source, action, _) = cli.command.into_source(cli.db.connection());
    let source = cli.db.configure(source);
    let result = run_pipeline(
        "stdout",
        source,
        StdoutSink::new(),
        action,
        &cli.db,
        shutdown_on_signal(),
    )
    .await;
    match result {
        Ok(_) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}
