//! The pipeline's metrics, read back from a recorder while a real pipeline
//! copies and streams into DuckDB, checked against the rows moved.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};
use metrics_util::registry::{AtomicStorage, Registry};
use pg_replicate::pipeline::{DataPipeline, PipelineAction};
use pg_replicate::sinks::duckdb::DuckDbSink;
use pg_replicate::sources::postgres::PostgresSource;

use crate::common::{test_batch_config, Running};
use crate::duckdb_common::{columns, config, stored_lsn, wait_duck_converged, DuckDir};
use crate::sink_faults::{Faults, FaultySink};

/// A recorder that keeps every counter's total and every gauge's last
/// value, as a Prometheus exporter would show them.
struct Totals {
    registry: Registry<Key, AtomicStorage>,
}

impl Recorder for Totals {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        self.registry
            .get_or_create_counter(key, |c| Counter::from_arc(c.clone()))
    }

    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        self.registry
            .get_or_create_gauge(key, |g| Gauge::from_arc(g.clone()))
    }

    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        self.registry
            .get_or_create_histogram(key, |h| Histogram::from_arc(h.clone()))
    }
}

/// The value of metric `name` with `labels` (all of them given).
fn value(totals: &Totals, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let matches = |key: &Key| {
        key.name() == name
            && labels.iter().all(|(label, wanted)| {
                key.labels()
                    .any(|l| l.key() == *label && l.value() == *wanted)
            })
    };
    let counters = totals.registry.get_counter_handles();
    if let Some((_, counter)) = counters.iter().find(|(key, _)| matches(key)) {
        return Some(counter.load(Ordering::SeqCst) as f64);
    }
    let gauges = totals.registry.get_gauge_handles();
    gauges
        .iter()
        .find(|(key, _)| matches(key))
        .map(|(_, gauge)| f64::from_bits(gauge.load(Ordering::SeqCst)))
}

async fn wait_metric(totals: &Totals, name: &str, labels: &[(&str, &str)], wanted: f64) {
    let start = Instant::now();
    loop {
        let now = value(totals, name, labels);
        if now == Some(wanted) {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{name}{labels:?} was not {wanted} within 60 s: {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// The recorder is this thread's: the test's runtime runs every task of
// the pipeline on it.
#[tokio::test(flavor = "current_thread")]
async fn counters_match_the_rows_moved() {
    let recorder = Totals {
        registry: Registry::atomic(),
    };
    let totals = &recorder;
    let _guard = metrics::set_default_local_recorder(&recorder);

    let db = crate::support::fresh_database("metrics").await;
    let publication = db.unique_name("pub");
    let slot = db.unique_name("slot");
    db.execute(&format!(
        "CREATE TABLE items (id int PRIMARY KEY, v text);
         INSERT INTO items SELECT g, 'copied' FROM generate_series(1, 1234) g;
         CREATE TABLE other (id int PRIMARY KEY);
         CREATE PUBLICATION {publication} FOR TABLE items, other;"
    ))
    .await;
    let dir = DuckDir::new(&db);
    let sink = DuckDbSink::open(config(&dir.file("m.duckdb"), &publication, &slot)).unwrap();
    let reader = sink.reader().unwrap();
    let faults = Arc::new(Faults::default());
    faults.before_store.store(2, Ordering::SeqCst);
    let cancel = tokio_util::sync::CancellationToken::new();
    let mut pipeline = DataPipeline::new(
        PostgresSource::new(db.config(), &publication, &slot),
        FaultySink {
            inner: sink,
            faults: faults.clone(),
        },
        PipelineAction::Both,
    )
    .with_name("orders")
    .with_batch_config(test_batch_config())
    .with_retry_config(pg_replicate::pipeline::RetryConfig {
        initial_backoff: Duration::from_millis(50),
        ..Default::default()
    })
    .with_cancellation(cancel.clone());
    let running = Running {
        handle: tokio::spawn(async move { pipeline.start().await }),
        cancel,
    };

    let items = [("pipeline", "orders"), ("table", "public.items")];
    wait_metric(totals, "pg_replicate_tables_copied_total", &items[..1], 2.0).await;
    assert_eq!(
        value(totals, "pg_replicate_rows_copied_total", &items),
        Some(1234.0)
    );

    // 10 inserts and 5 updates in one transaction, 3 deletes and an insert
    // in another (the statements after COMMIT share one implicit
    // transaction). The sink fails its first two batches (these or earlier
    // empty ones); each failed batch is sent again.
    db.execute(
        "BEGIN;
         INSERT INTO items SELECT g, 'new' FROM generate_series(2001, 2010) g;
         UPDATE items SET v = 'changed' WHERE id <= 5;
         COMMIT;
         DELETE FROM items WHERE id BETWEEN 100 AND 102;
         INSERT INTO other VALUES (1);",
    )
    .await;
    let cols = columns(&[("id", "int4"), ("v", "text")]);
    wait_duck_converged(&db, &reader, &[("items", "public.items", &cols)]).await;
    wait_metric(totals, "pg_replicate_changes_total", &items, 18.0).await;
    wait_metric(
        totals,
        "pg_replicate_changes_total",
        &[("pipeline", "orders"), ("table", "public.other")],
        1.0,
    )
    .await;
    assert_eq!(faults.injected.load(Ordering::SeqCst), 2);
    let orders = [("pipeline", "orders")];
    assert_eq!(
        value(
            totals,
            "pg_replicate_retries_total",
            &[("pipeline", "orders"), ("side", "sink")]
        ),
        Some(2.0)
    );
    assert_eq!(
        value(
            totals,
            "pg_replicate_errors_total",
            &[("pipeline", "orders"), ("kind", "sink")]
        ),
        Some(2.0)
    );
    let transactions = value(totals, "pg_replicate_transactions_total", &orders).unwrap();
    assert_eq!(transactions, 2.0, "transactions");
    assert!(value(totals, "pg_replicate_cdc_batches_total", &orders).unwrap() >= 1.0);
    assert!(value(totals, "pg_replicate_bytes_total", &orders).unwrap() > 0.0);
    let lag = value(totals, "pg_replicate_lag_seconds", &orders).unwrap();
    assert!((0.0..60.0).contains(&lag), "lag {lag} s");
    // The stored-LSN gauge follows the sink.
    let start = Instant::now();
    loop {
        let gauge = value(totals, "pg_replicate_stored_lsn", &orders);
        let stored = stored_lsn(&reader).map(|lsn| lsn.0 as f64);
        if gauge.is_some() && gauge == stored {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the stored-LSN gauge {gauge:?} did not follow DuckDB's {stored:?} within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    running.stop().await.expect("the pipeline stops cleanly");
}
