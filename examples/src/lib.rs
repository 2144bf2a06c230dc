//! Pieces shared by the example pipelines in this folder: connection
//! options, logging set-up, Ctrl-C handling, a progress-reporting sink
//! wrapper and a minimal HTTP server for status endpoints.

pub mod http;
mod observe;
mod progress;
mod settings;

pub use observe::run_pipeline;
pub use progress::{copy_progress, ProgressSink};
pub use settings::Settings;

use clap::{Args, Subcommand};
use pg_replicate::pipeline::PipelineAction;
use pg_replicate::postgres::{PgConnectionConfig, SslMode};
use pg_replicate::sources::postgres::PostgresSource;
use pg_replicate::types::{ArrayForm, TableName};
use tokio_util::sync::CancellationToken;

/// Options of the Postgres source: the server to replicate from, the
/// backfill, and the metrics endpoint.
#[derive(Args, Debug, Clone)]
pub struct DbArgs {
    /// Host name or IP address of the server; a path starting with `/` is a
    /// directory holding its Unix socket.
    #[arg(long, default_value = "localhost")]
    pub db_host: String,
    /// Server port.
    #[arg(long, default_value_t = 5432)]
    pub db_port: u16,
    /// Database to replicate.
    #[arg(long, default_value = "postgres")]
    pub db_name: String,
    /// User name; it needs the REPLICATION attribute to stream changes.
    #[arg(long, default_value = "postgres")]
    pub db_username: String,
    /// Password (or set PGPASSWORD).
    #[arg(long, env = "PGPASSWORD", hide_env_values = true)]
    pub db_password: Option<String>,
    /// TLS: disable, prefer, require or verify-full.
    #[arg(long, default_value = "prefer")]
    pub sslmode: SslMode,
    /// PEM file of root certificates trusted with --sslmode verify-full.
    #[arg(long)]
    pub ssl_root_cert: Option<std::path::PathBuf>,
    /// Connections copying tables in parallel during the backfill
    /// (default: one per CPU, at most 4).
    #[arg(long)]
    pub copy_connections: Option<usize>,
    /// Replicate array columns in their exact form (dimensions, lower bounds
    /// and elements), so multi-dimensional arrays and lower bounds other
    /// than 1 are kept; default plain lists (docs/types.md, "Arrays").
    #[arg(long)]
    pub exact_arrays: bool,
    /// Serve Prometheus metrics on /metrics and readiness on /health (200
    /// once changes stream) at this address, e.g. 127.0.0.1:9000; also
    /// reports the slot's retained WAL every 10 s (docs/metrics.md).
    #[arg(long)]
    pub metrics_addr: Option<std::net::SocketAddr>,
}

impl DbArgs {
    /// The connection options these arguments describe.
    pub fn connection(&self) -> PgConnectionConfig {
        PgConnectionConfig {
            host: self.db_host.clone(),
            port: self.db_port,
            dbname: self.db_name.clone(),
            username: self.db_username.clone(),
            password: self.db_password.clone(),
            ssl_mode: self.sslmode,
            ssl_root_cert: self.ssl_root_cert.clone(),
            application_name: None,
        }
    }

    /// Applies the source options of these arguments to `source`.
    pub fn configure(&self, source: PostgresSource) -> PostgresSource {
        let source = match self.copy_connections {
            Some(connections) => source.with_copy_connections(connections),
            None => source,
        };
        let source = if self.metrics_addr.is_some() {
            source.with_slot_metrics(std::time::Duration::from_secs(10))
        } else {
            source
        };
        if self.exact_arrays {
            source.with_array_form(ArrayForm::Exact)
        } else {
            source
        }
    }
}

/// What an example does: stream a publication, or copy one table.
#[derive(Subcommand, Debug)]
pub enum Command {
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

impl Command {
    /// The source and pipeline action for this command, and for `cdc` the
    /// `publication/slot` identity of the stream.
    pub fn into_source(
        self,
        connection: PgConnectionConfig,
    ) -> (PostgresSource, PipelineAction, Option<String>) {
        match self {
            Command::Cdc {
                publication,
                slot_name,
                no_backfill,
            } => {
                let identity = format!("{publication}/{slot_name}");
                let action = if no_backfill {
                    PipelineAction::CdcOnly
                } else {
                    PipelineAction::Both
                };
                (
                    PostgresSource::new(connection, publication, slot_name),
                    action,
                    Some(identity),
                )
            }
            Command::CopyTable { schema, name } => (
                PostgresSource::for_tables(connection, vec![TableName::new(schema, name)]),
                PipelineAction::TableCopiesOnly,
                None,
            ),
        }
    }
}

/// Sends logs to stderr, keeping stdout for data. Only warnings and errors
/// unless `RUST_LOG` asks for more (`RUST_LOG=info`, `RUST_LOG=pg_replicate=debug`):
/// the examples print their own progress lines for people.
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

/// A token cancelled on the first Ctrl-C (SIGINT) or SIGTERM, so the
/// pipeline can hand the sink what it has and stop.
pub fn shutdown_on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        eprintln!("shutting down: storing and confirming what was received ...");
        cancel.cancel();
    });
    token
}

#[cfg(unix)]
async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(not(unix))]
async fn wait_for_signal() {
    let _ = tokio::signal::ctrl_c().await;
}
