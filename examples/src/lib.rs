//! Pieces shared by the example pipelines in this folder: connection
//! options, logging set-up, Ctrl-C handling and a progress-reporting sink
//! wrapper.

mod progress;

pub use progress::ProgressSink;

use clap::Args;
use pg_replicate::postgres::{PgConnectionConfig, SslMode};
use tokio_util::sync::CancellationToken;

/// Options naming the Postgres server to replicate from.
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
        }
    }
}

/// Sends logs to stderr (level from `RUST_LOG`, default `info`), keeping
/// stdout for data.
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
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
        tracing::info!("shutting down: finishing the current batch");
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
