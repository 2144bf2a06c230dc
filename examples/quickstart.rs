//! The first thing to run: starts a throwaway Postgres from the system's
//! server binaries, creates a small sample schema, backfills it, then keeps
//! writing inserts, updates and deletes while the pipeline prints every row
//! and change to stdout as JSON Lines. Stops by itself after a few seconds
//! (or on Ctrl-C) and removes the throwaway server.
//!
//! ```text
//! cargo run --release --example quickstart
//! ```

use std::time::Duration;

use pg_replicate::pipeline::{DataPipeline, PipelineAction};
use pg_replicate::postgres::throwaway::{ThrowawayCluster, ThrowawayOptions, ThrowawayRole};
use pg_replicate::sinks::stdout::StdoutSink;
use pg_replicate::sources::postgres::PostgresSource;
use pg_replicate_examples::{init_logging, shutdown_on_signal};

const SCHEMA: &str = "
CREATE SCHEMA shop;
CREATE TYPE shop.status AS ENUM ('new', 'paid', 'shipped');
CREATE TABLE shop.customers (
    id bigint PRIMARY KEY, name text NOT NULL, email text, tags text[], created timestamptz DEFAULT now());
CREATE TABLE shop.orders (
    id bigint PRIMARY KEY, customer_id bigint REFERENCES shop.customers, total numeric(12,2),
    status shop.status, items jsonb, placed_on date, token uuid DEFAULT gen_random_uuid());
INSERT INTO shop.customers (id, name, email, tags)
    SELECT g, 'customer ' || g, 'c' || g || '@example.com', ARRAY['vip', NULL] FROM generate_series(1, 5) g;
INSERT INTO shop.orders (id, customer_id, total, status, items, placed_on)
    SELECT g, g % 5 + 1, g * 10.5, 'new', jsonb_build_object('sku', g), '2024-01-01'::date + g
    FROM generate_series(1, 5) g;
CREATE PUBLICATION quickstart FOR TABLE shop.customers, shop.orders;";

#[tokio::main]
async fn main() -> std::process::ExitCode {
    init_logging();
    match run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), pg_replicate::Error> {
    tracing::info!("starting a throwaway PostgreSQL");
    let cluster = tokio::task::spawn_blocking(|| {
        ThrowawayCluster::start(ThrowawayOptions {
            ssl: false,
            ..ThrowawayOptions::default()
        })
    })
    .await
    .map_err(|e| {
        pg_replicate::Error::with_source(pg_replicate::ErrorKind::Io, "start-up task failed", e)
    })??;
    cluster.psql("postgres", SCHEMA)?;

    let connection = cluster.connection_config("postgres", ThrowawayRole::Superuser.name());
    let source = PostgresSource::new(connection, "quickstart", "quickstart_slot");
    let cancel = shutdown_on_signal();
    let mut pipeline = DataPipeline::new(source, StdoutSink::new(), PipelineAction::Both)
        .with_cancellation(cancel.clone());
    let replication = tokio::spawn(async move { pipeline.start().await });

    // A writer: a few transactions of inserts, updates and deletes.
    for step in 6..=15 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        if cancel.is_cancelled() {
            break;
        }
        cluster.psql(
            "postgres",
            &format!(
                "BEGIN;
                 INSERT INTO shop.customers (id, name) VALUES ({step}, 'customer {step}');
                 INSERT INTO shop.orders (id, customer_id, total, status, placed_on)
                     VALUES ({step}, {step}, {step}.99, 'new', current_date);
                 UPDATE shop.orders SET status = 'paid' WHERE id = {};
                 DELETE FROM shop.orders WHERE id = {};
                 COMMIT;",
                step - 3,
                step - 5
            ),
        )?;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    cancel.cancel();
    let report = replication.await.map_err(|e| {
        pg_replicate::Error::with_source(pg_replicate::ErrorKind::Io, "pipeline task failed", e)
    })??;
    tracing::info!(
        tables = report.tables_copied,
        rows = report.rows_copied,
        transactions = report.transactions,
        "done; removing the throwaway server"
    );
    tokio::task::spawn_blocking(move || cluster.stop())
        .await
        .ok();
    Ok(())
}
