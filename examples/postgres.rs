//! Replicates a Postgres database into another Postgres database: each
//! published table copied with binary COPY, then every committed change
//! applied exactly once (the applied LSN is stored in the target, in the
//! same transaction as the changes).
//!
//! ```text
//! cargo run --release --example postgres -- --db-host localhost --db-port 5432 \
//!     --db-name postgres --db-username postgres --db-password password \
//!     --target postgres://replica:secret@replica-host:5432/analytics \
//!     cdc my_publication replica_slot
//! ```
//!
//! The target database must know the source's user-defined types (enums,
//! domains, composite and extension types) under the same names; tables
//! and their schemas are created. docs/postgres_sink.md has the details.

use clap::Parser;
use pg_replicate::postgres::PgConnectionConfig;
use pg_replicate::sinks::postgres::{PostgresSink, PostgresSinkConfig};
use pg_replicate_examples::{init_logging, run_pipeline, shutdown_on_signal, Command, DbArgs};

/// Replicate a Postgres database into another Postgres database.
#[derive(Parser, Debug)]
#[command(version)]
struct Cli {
    #[command(flatten)]
    db: DbArgs,
    /// The target database, as a URL:
    /// `postgres://user[:password]@host[:port]/dbname[?sslmode=...]`.
    #[arg(long, env = "PGR_TARGET_URL", hide_env_values = true)]
    target: String,
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
    let target = PgConnectionConfig::from_url(&cli.target)?;
    let cancel = shutdown_on_signal();
    let (source, action, identity) = cli.command.into_source(cli.db.connection());
    let source = cli.db.configure(source);
    let mut config = PostgresSinkConfig::new(target);
    config.identity = identity;
    let sink = PostgresSink::connect(config).await?;
    run_pipeline("postgres", source, sink, action, &cli.db, cancel).await?;
    Ok(())
}
