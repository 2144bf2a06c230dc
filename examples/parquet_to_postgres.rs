//! Loads the Parquet files that appear in a folder or an S3 bucket into a
//! Postgres table on a schedule, each file once (the position is stored in
//! the target with the rows), and serves `/health` and `/status`.
//!
//! ```text
//! cargo run --release --example parquet_to_postgres -- \
//!     --s3-bucket exports --s3-prefix events/ --table public.events \
//!     --cron '*/5 * * * *' --target postgres://loader:secret@db/analytics \
//!     --http-addr 127.0.0.1:8080
//! ```
//!
//! `--dir` reads a local folder instead of a bucket; `--interval-secs`
//! lists every so many seconds instead of a cron expression. The S3
//! credentials come from `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY`.
//!
//! - `GET /health`: `200 ok` while the pipeline runs and the last listing
//!   worked; `503` with the reason otherwise.
//! - `GET /status`: JSON with the last listing's time, the listings, files
//!   and rows loaded, the files skipped with their errors, and the
//!   pipeline's state.
//!
//! docs/parquet_source.md describes the source.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use clap::Parser;
use pg_replicate::pipeline::{DataPipeline, PipelineAction};
use pg_replicate::postgres::PgConnectionConfig;
use pg_replicate::sinks::files::S3Settings;
use pg_replicate::sinks::postgres::{PostgresSink, PostgresSinkConfig};
use pg_replicate::sources::parquet::{ParquetSource, ParquetSourceConfig, StatusHandle};
use pg_replicate::types::TableName;
use pg_replicate_examples::http::{serve, Handler, Response};
use pg_replicate_examples::{init_logging, shutdown_on_signal};
use serde_json::json;

/// Load Parquet files from a folder or bucket into a Postgres table.
#[derive(Parser, Debug)]
#[command(version)]
struct Cli {
    /// A local folder of Parquet files.
    #[arg(
        long,
        conflicts_with = "s3_bucket",
        required_unless_present = "s3_bucket"
    )]
    dir: Option<PathBuf>,
    /// An S3 bucket of Parquet files.
    #[arg(long)]
    s3_bucket: Option<String>,
    /// The prefix listed in the bucket.
    #[arg(long, default_value = "")]
    s3_prefix: String,
    /// The bucket's region.
    #[arg(long, default_value = "us-east-1", env = "AWS_REGION")]
    s3_region: String,
    /// An S3-compatible server instead of AWS, for example http://127.0.0.1:9000.
    #[arg(long)]
    s3_endpoint: Option<String>,
    /// The table to load into, `schema.name` (created from the first file's columns).
    #[arg(long)]
    table: String,
    /// List the files every so many seconds.
    #[arg(long, default_value_t = 60, conflicts_with = "cron")]
    interval_secs: u64,
    /// List the files at the minutes this cron expression names (UTC), e.g. '*/5 * * * *'.
    #[arg(long)]
    cron: Option<String>,
    /// Leave files modified in the last so many seconds for the next listing.
    #[arg(long, default_value_t = 5)]
    settle_secs: u64,
    /// The target database, as a URL: postgres://user[:password]@host[:port]/dbname.
    #[arg(long, env = "PGR_TARGET_URL", hide_env_values = true)]
    target: String,
    /// Serve /health and /status on this address, e.g. 127.0.0.1:8080.
    #[arg(long)]
    http_addr: Option<SocketAddr>,
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

/// The pipeline's state, for the endpoints.
#[derive(Clone, Debug)]
enum State {
    Running,
    Stopped,
    Failed(String),
}

async fn run(cli: Cli) -> Result<(), pg_replicate::Error> {
    let bad = |why: String| pg_replicate::Error::new(pg_replicate::ErrorKind::Config, why);
    let (schema, name) = cli
        .table
        .split_once('.')
        .ok_or_else(|| bad(format!("--table {:?}: write schema.name", cli.table)))?;
    let table = TableName::new(schema, name);
    let mut config = match (&cli.dir, &cli.s3_bucket) {
        (Some(dir), _) => ParquetSourceConfig::local(dir, table)?,
        (None, Some(bucket)) => {
            let location = S3Settings {
                bucket: bucket.clone(),
                prefix: cli.s3_prefix.trim_end_matches('/').to_owned(),
                region: cli.s3_region.clone(),
                endpoint: cli.s3_endpoint.clone(),
                access_key_id: std::env::var("AWS_ACCESS_KEY_ID").unwrap_or_default(),
                secret_access_key: std::env::var("AWS_SECRET_ACCESS_KEY").unwrap_or_default(),
                session_token: std::env::var("AWS_SESSION_TOKEN").ok(),
            }
            .location()?;
            ParquetSourceConfig::new(location.store, location.prefix, location.name, table)
        }
        (None, None) => return Err(bad("give --dir or --s3-bucket".to_owned())),
    };
    config = match &cli.cron {
        Some(cron) => config.with_cron(cron)?,
        None => config.with_interval(Duration::from_secs(cli.interval_secs)),
    };
    config = config.with_settle(Duration::from_secs(cli.settle_secs));
    let identity = format!("parquet/{}", config.location_name);
    let source = ParquetSource::new(config);
    let status = source.status();

    let target = PgConnectionConfig::from_url(&cli.target)?;
    let sink =
        PostgresSink::connect(PostgresSinkConfig::new(target).with_identity(identity)).await?;

    let cancel = shutdown_on_signal();
    let state = Arc::new(Mutex::new(State::Running));
    if let Some(addr) = cli.http_addr {
        let handler = endpoints(status.clone(), state.clone());
        serve(addr, handler, cancel.clone())
            .await
            .map_err(|e| bad(format!("cannot serve HTTP on {addr}: {e}")))?;
        eprintln!("serving /health and /status on http://{addr}");
    }
    let result = DataPipeline::new(source, sink, PipelineAction::Both)
        .with_cancellation(cancel.clone())
        .start()
        .await;
    *state.lock().unwrap_or_else(|e| e.into_inner()) = match &result {
        Ok(_) => State::Stopped,
        Err(error) => State::Failed(error.to_string()),
    };
    let loaded = status.snapshot();
    eprintln!(
        "done: {} file(s), {} rows loaded, {} file(s) skipped",
        loaded.files_loaded,
        loaded.rows_loaded,
        loaded.errors.len()
    );
    result.map(|_| ())
}

fn endpoints(status: StatusHandle, state: Arc<Mutex<State>>) -> Handler {
    Arc::new(move |path| {
        let snapshot = status.snapshot();
        let state = state.lock().unwrap_or_else(|e| e.into_inner()).clone();
        match path {
            "/health" => match (&state, &snapshot.last_listing_error) {
                (State::Running, None) => Response::text(200, "ok\n"),
                (State::Running, Some(error)) => {
                    Response::text(503, format!("the last listing failed: {error}\n"))
                }
                (State::Stopped, _) => Response::text(503, "the pipeline stopped\n"),
                (State::Failed(error), _) => {
                    Response::text(503, format!("the pipeline failed: {error}\n"))
                }
            },
            "/status" => {
                let seconds = |t: Option<std::time::SystemTime>| {
                    t.and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                        .map(|d| d.as_secs_f64())
                };
                let (pipeline, error) = match &state {
                    State::Running => ("running", None),
                    State::Stopped => ("stopped", None),
                    State::Failed(error) => ("failed", Some(error.clone())),
                };
                let errors: Vec<_> = snapshot
                    .errors
                    .iter()
                    .map(|e| json!({ "file": e.path, "error": e.error }))
                    .collect();
                Response::json(
                    json!({
                        "pipeline": pipeline,
                        "pipeline_error": error,
                        "last_run_unix": seconds(snapshot.last_run),
                        "runs": snapshot.runs,
                        "files_loaded": snapshot.files_loaded,
                        "rows_loaded": snapshot.rows_loaded,
                        "last_listing_error": snapshot.last_listing_error,
                        "file_errors": errors,
                    })
                    .to_string(),
                )
            }
            _ => Response::text(404, "try /health or /status\n"),
        }
    })
}
