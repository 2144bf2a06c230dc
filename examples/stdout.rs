//! Replicates a Postgres database to standard output as JSON Lines.
//!
//! ```text
//! cargo run --release --example stdout -- --db-host localhost --db-port 5432 \
//!     --db-name postgres --db-username postgres --db-password password \
//!     cdc my_publication stdout_slot
//! cargo run --release --example stdout -- ... copy-table public my_table
//! ```
//!
//! Data goes to stdout, logs to stderr. Ctrl-C stops after handing out the
//! transactions already received.

use clap::{Parser, Subcommand};
use pg_replicate::pipeline::{DataPipeline, PipelineAction};
use pg_replicate::sinks::stdout::StdoutSink;
use pg_replicate::sources::postgres::PostgresSource;
use pg_replicate::types::TableName;
use pg_replicate_examples::{init_logging, shutdown_on_signal, DbArgs};

/// Print a Postgres database's rows and changes as JSON Lines.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    #[command(flatten)]
    db: DbArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Copy the publication's tables, then stream every committed change.
    Cdc {
        /// Publication naming the tables to replicate.
        publication: String,
        /// Logical replication slot to stream from (created when missing).
        slot_name: String,
        /// Skip the initial copy; stream changes only.
        #[arg(long)]
        no_backfill: bool,
    },
    /// Copy one table and exit.
    CopyTable {
        /// The table's schema.
        schema: String,
        /// The table's name.
        name: String,
    },
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    init_logging();
    let cli = Cli::parse();
    let connection = cli.db.connection();
    let cancel = shutdown_on_signal();
    let result = match cli.command {
        Command::Cdc {
            publication,
            slot_name,
            no_backfill,
        } => {
            let action = if no_backfill {
                PipelineAction::CdcOnly
            } else {
                PipelineAction::Both
            };
            let source = PostgresSource::new(connection, publication, slot_name);
            DataPipeline::new(source, StdoutSink::new(), action)
                .with_cancellation(cancel)
                .start()
                .await
        }
        Command::CopyTable { schema, name } => {
            let source = PostgresSource::for_tables(connection, vec![TableName::new(schema, name)]);
            DataPipeline::new(source, StdoutSink::new(), PipelineAction::TableCopiesOnly)
                .with_cancellation(cancel)
                .start()
                .await
        }
    };
    match result {
        Ok(report) => {
            tracing::info!(?report, "done");
            std::process::ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("error: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}
