//! Running an example's pipeline with its progress display and, with
//! `--metrics-addr`, the Prometheus endpoint `/metrics` and the readiness
//! endpoint `/health` (`200` only once the change stream is open).

use std::sync::Arc;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use pg_replicate::pipeline::{DataPipeline, PipelineAction, PipelinePhase, PipelineReport};
use pg_replicate::sinks::Sink;
use pg_replicate::sources::postgres::PostgresSource;
use pg_replicate::{Error, ErrorKind, Result};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::http::{serve, Handler, Response};
use crate::{DbArgs, ProgressSink};

/// Runs `source` into `sink` (wrapped in a [`ProgressSink`] with row
/// estimates from the source's server) as pipeline `name`; serves
/// `/metrics` and `/health` on `--metrics-addr` while it runs, and prints
/// what it did when it ends.
pub async fn run_pipeline<S: Sink + 'static>(
    name: &str,
    source: PostgresSource,
    sink: S,
    action: PipelineAction,
    db: &DbArgs,
    cancel: CancellationToken,
) -> Result<PipelineReport> {
    let sink = ProgressSink::new(sink).with_estimates_from(db.connection());
    let mut pipeline = DataPipeline::new(source, sink, action)
        .with_name(name)
        .with_cancellation(cancel.clone());
    if let Some(addr) = db.metrics_addr {
        let handle = PrometheusBuilder::new().install_recorder().map_err(|e| {
            Error::with_source(
                ErrorKind::Config,
                "cannot install the Prometheus recorder",
                e,
            )
        })?;
        serve(addr, endpoints(handle, pipeline.phase()), cancel)
            .await
            .map_err(|e| {
                Error::with_source(
                    ErrorKind::Config,
                    format!("cannot serve /metrics and /health on {addr}"),
                    e,
                )
            })?;
        eprintln!("serving /metrics and /health on http://{addr}");
    }
    let report = pipeline.start().await?;
    eprintln!(
        "done: {} table(s) copied ({} rows), {} transactions stored",
        report.tables_copied, report.rows_copied, report.transactions
    );
    Ok(report)
}

fn endpoints(handle: PrometheusHandle, phase: watch::Receiver<PipelinePhase>) -> Handler {
    Arc::new(move |path| match path {
        "/metrics" => Response {
            status: 200,
            content_type: "text/plain; version=0.0.4",
            body: handle.render(),
        },
        "/health" => match *phase.borrow() {
            PipelinePhase::Streaming => Response::text(200, "streaming\n"),
            other => Response::text(503, format!("{}\n", other.name())),
        },
        _ => Response::text(404, "try /metrics or /health\n"),
    })
}
