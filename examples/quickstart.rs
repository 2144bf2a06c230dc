//! The first thing to run. With no arguments it starts a throwaway Postgres
//! from the system's server binaries (or uses `DATABASE_URL` when set),
//! creates a small sample schema with varied types (schema
//! `quickstart_shop`, dropped and recreated), and replicates it into
//! `quickstart.duckdb` while a writer makes inserts, updates and deletes.
//! It ends by comparing every table in Postgres and DuckDB (row count and a
//! checksum of the contents) and removes the throwaway server.
//!
//! Progress for people goes to stderr (what started, rows copied with their
//! rate, a CDC status line every two seconds); the comparison and its
//! verdict to stdout. `RUST_LOG=info` adds the library's own log lines.
//!
//! ```text
//! cargo run --release --example quickstart
//! DATABASE_URL=postgresql://postgres:secret@localhost/app cargo run --release --example quickstart
//! ```

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use pg_replicate::pipeline::{DataPipeline, PipelineAction};
use pg_replicate::postgres::client::connect_query_client;
use pg_replicate::postgres::throwaway::{ThrowawayCluster, ThrowawayOptions, ThrowawayRole};
use pg_replicate::postgres::PgConnectionConfig;
use pg_replicate::sinks::duckdb::{
    DuckDbMode, DuckDbSink, DuckDbSinkConfig, DEFAULT_MEMORY_LIMIT, DEFAULT_STORAGE_VERSION,
};
use pg_replicate::sources::postgres::PostgresSource;
use pg_replicate::{Error, ErrorKind};
use pg_replicate_examples::{init_logging, shutdown_on_signal, ProgressSink};

const DUCKDB_FILE: &str = "quickstart.duckdb";
const SLOT: &str = "pg_replicate_quickstart";
const PUBLICATION: &str = "pg_replicate_quickstart";

const SCHEMA: &str = "
DROP SCHEMA IF EXISTS quickstart_shop CASCADE;
CREATE SCHEMA quickstart_shop;
CREATE TYPE quickstart_shop.status AS ENUM ('new', 'paid', 'shipped');
CREATE TABLE quickstart_shop.customers (
    id bigint PRIMARY KEY, name text NOT NULL, email text, tags text[],
    created timestamptz NOT NULL DEFAULT now(), vip bool NOT NULL DEFAULT false);
CREATE TABLE quickstart_shop.orders (
    id bigint PRIMARY KEY, customer_id bigint NOT NULL, total numeric(12,2), status quickstart_shop.status,
    items jsonb, placed_on date, token uuid NOT NULL DEFAULT gen_random_uuid());
INSERT INTO quickstart_shop.customers (id, name, email, tags)
    SELECT g, 'customer ' || g, 'c' || g || '@example.com', ARRAY['tag' || g % 3, NULL]
    FROM generate_series(1, 1000) g;
INSERT INTO quickstart_shop.orders (id, customer_id, total, status, items, placed_on)
    SELECT g, g % 1000 + 1, g * 1.25, 'new', jsonb_build_object('sku', g, 'qty', g % 7), DATE '2024-01-01' + g % 365
    FROM generate_series(1, 5000) g;
DROP PUBLICATION IF EXISTS pg_replicate_quickstart;
CREATE PUBLICATION pg_replicate_quickstart FOR TABLE quickstart_shop.customers, quickstart_shop.orders;";

/// Per table: (name, Postgres row text, DuckDB row text) — the same canonical
/// text of a row in both dialects, for the checksum.
const COMPARED: &[(&str, &str, &str)] = &[
    (
        "quickstart_shop.customers",
        "concat_ws('|', id, name, coalesce(email, '-'), coalesce(array_to_string(tags, ',', '~'), '-'), \
         (extract(epoch FROM created) * 1000000)::bigint, CASE WHEN vip THEN 1 ELSE 0 END)",
        "concat_ws('|', id, name, coalesce(email, '-'), \
         coalesce(array_to_string(list_transform(tags, lambda x: coalesce(x, '~')), ','), '-'), \
         epoch_us(created), CASE WHEN vip THEN 1 ELSE 0 END)",
    ),
    (
        "quickstart_shop.orders",
        "concat_ws('|', id, customer_id, coalesce(total::text, '-'), coalesce(status::text, '-'), \
         coalesce(items::text, '-'), coalesce(placed_on::text, '-'), token)",
        "concat_ws('|', id, customer_id, coalesce(total::VARCHAR, '-'), coalesce(status::VARCHAR, '-'), \
         coalesce(items::VARCHAR, '-'), coalesce(placed_on::VARCHAR, '-'), token)",
    ),
];

#[tokio::main]
async fn main() -> std::process::ExitCode {
    init_logging();
    match run().await {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::FAILURE,
        Err(error) => {
            eprintln!("error: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn io_error(what: &str, error: impl std::error::Error + Send + Sync + 'static) -> Error {
    Error::with_source(ErrorKind::Io, what.to_owned(), error)
}

async fn run() -> Result<bool, Error> {
    // A server: DATABASE_URL, or a throwaway one that is removed at the end.
    let (connection, cluster) = match std::env::var("DATABASE_URL") {
        Ok(url) => {
            let config = PgConnectionConfig::from_url(&url)?;
            eprintln!(
                "using the server of DATABASE_URL ({}:{}, database {})",
                config.host, config.port, config.dbname
            );
            (config, None)
        }
        Err(_) => {
            eprintln!("starting a throwaway PostgreSQL ...");
            let cluster = tokio::task::spawn_blocking(|| {
                ThrowawayCluster::start(ThrowawayOptions {
                    ssl: false,
                    ..ThrowawayOptions::default()
                })
            })
            .await
            .map_err(|e| io_error("start-up task failed", e))??;
            let config = cluster.connection_config("postgres", ThrowawayRole::Superuser.name());
            eprintln!(
                "a throwaway PostgreSQL ({}) is running on {}:{}, removed at the end",
                cluster.bin_dir().display(),
                cluster.host(),
                cluster.port()
            );
            (config, Some(cluster))
        }
    };
    let client = connect_query_client(&connection).await?;
    let sql_error = |e: tokio_postgres::Error| {
        let detail = e
            .as_db_error()
            .map_or_else(|| e.to_string(), |d| d.message().to_owned());
        Error::new(
            ErrorKind::Io,
            format!("a sample-data statement failed: {detail}"),
        )
    };
    client.batch_execute(SCHEMA).await.map_err(sql_error)?;
    eprintln!(
        "sample data: schema quickstart_shop, 1,000 customers and 5,000 orders \
         (text, arrays, enums, numeric, jsonb, dates, uuids)"
    );
    // A fresh start: an old slot or file of an earlier quickstart is removed.
    client
        .execute("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1", &[&SLOT])
        .await
        .map_err(sql_error)?;
    for file in [DUCKDB_FILE.to_owned(), format!("{DUCKDB_FILE}.wal")] {
        let _ = std::fs::remove_file(file);
    }

    let sink = ProgressSink::new(DuckDbSink::open(DuckDbSinkConfig {
        path: DUCKDB_FILE.into(),
        mode: DuckDbMode::CurrentState,
        identity: Some(format!("{PUBLICATION}/{SLOT}")),
        memory_limit: Some(DEFAULT_MEMORY_LIMIT.to_owned()),
        storage_version: DEFAULT_STORAGE_VERSION.to_owned(),
    })?);
    let stored_changes = sink.changes_counter();
    let cancel = shutdown_on_signal();
    let source = PostgresSource::new(connection.clone(), PUBLICATION, SLOT);
    let mut pipeline =
        DataPipeline::new(source, sink, PipelineAction::Both).with_cancellation(cancel.clone());
    eprintln!(
        "replicating publication {PUBLICATION} into {DUCKDB_FILE}: copy the tables, then stream every change"
    );
    let replication = tokio::spawn(async move { pipeline.start().await });

    // Changes committed once the slot exists are all streamed (the copy's
    // snapshot is taken at the slot's creation), so the writer starts then.
    while !replication.is_finished() {
        let slot_exists = client
            .query_opt(
                "SELECT 1 FROM pg_replication_slots WHERE slot_name = $1",
                &[&SLOT],
            )
            .await
            .map_err(sql_error)?
            .is_some();
        if slot_exists {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // The writer: small transactions of inserts, updates and deletes.
    eprintln!("writer: 200 transactions of inserts, updates and deletes while the pipeline streams them ...");
    let mut written = 0u64;
    let started = Instant::now();
    for step in 1..=200u64 {
        if cancel.is_cancelled() {
            break;
        }
        let id = 1000 + step;
        let tx = [
            format!("INSERT INTO quickstart_shop.customers (id, name, tags, vip) VALUES ({id}, 'new customer {id}', ARRAY['new'], {})", step % 2 == 0),
            format!("INSERT INTO quickstart_shop.orders (id, customer_id, total, status, items, placed_on) VALUES ({}, {id}, {step}.99, 'new', '{{\"sku\": {step}}}', current_date)", 5000 + step),
            format!("UPDATE quickstart_shop.orders SET status = 'paid', total = total + 1 WHERE id = {}", step * 7),
            format!("UPDATE quickstart_shop.customers SET email = NULL, tags = array_append(tags, 'updated') WHERE id = {}", step * 3),
            format!("DELETE FROM quickstart_shop.orders WHERE id = {}", step * 11),
        ];
        client.batch_execute("BEGIN").await.map_err(sql_error)?;
        for statement in &tx {
            written += client
                .execute(statement.as_str(), &[])
                .await
                .map_err(sql_error)?;
        }
        client.batch_execute("COMMIT").await.map_err(sql_error)?;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!(
        "writer: {written} row changes in {:.1} s; waiting for DuckDB to catch up ...",
        started.elapsed().as_secs_f64()
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while stored_changes.load(Ordering::Relaxed) < written
        && Instant::now() < deadline
        && !replication.is_finished()
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cancel.cancel();
    let report = replication
        .await
        .map_err(|e| io_error("the pipeline task failed", e))??;
    eprintln!(
        "replicated: {} tables copied ({} rows), {} transactions applied",
        report.tables_copied, report.rows_copied, report.transactions
    );

    // Compare every table.
    let duckdb = duckdb::Connection::open(DUCKDB_FILE)
        .map_err(|e| io_error("cannot reopen the DuckDB file", e))?;
    let mut differing = 0;
    println!(
        "\n{:<34} {:>8} {:>8}  {:<32}  result",
        "table", "postgres", "duckdb", "checksum (md5 of all rows)"
    );
    for (table, pg_row, duck_row) in COMPARED {
        let pg = client
            .query_one(
                &format!(
                    "SELECT count(*), md5(string_agg({pg_row}, E'\\n' ORDER BY id)) FROM {table}"
                ),
                &[],
            )
            .await
            .map_err(sql_error)?;
        let (pg_count, pg_sum): (i64, Option<String>) = (pg.get(0), pg.get(1));
        let (duck_count, duck_sum): (i64, Option<String>) = duckdb
            .query_row(&format!("SELECT count(*), md5(string_agg({duck_row}, chr(10) ORDER BY id)) FROM {table}"), [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .map_err(|e| io_error("cannot query DuckDB", e))?;
        let equal = pg_count == duck_count && pg_sum == duck_sum;
        differing += usize::from(!equal);
        println!(
            "{table:<34} {pg_count:>8} {duck_count:>8}  {:<32}  {}",
            pg_sum.as_deref().unwrap_or("-"),
            if equal { "equal" } else { "DIFFERENT" }
        );
    }
    if differing == 0 {
        println!(
            "\nverdict: EQUAL: all {} tables are the same in Postgres and DuckDB",
            COMPARED.len()
        );
    } else {
        println!(
            "\nverdict: DIFFERENT: {differing} of {} tables differ between Postgres and DuckDB",
            COMPARED.len()
        );
    }
    println!("The replica is in {DUCKDB_FILE}; open it with the duckdb CLI or any DuckDB client.");

    drop(client);
    if let Some(cluster) = cluster {
        eprintln!("removing the throwaway PostgreSQL");
        let _ = tokio::task::spawn_blocking(move || cluster.stop()).await;
    } else {
        eprintln!("note: slot {SLOT} and publication {PUBLICATION} stay in your database; drop them when done");
    }
    Ok(differing == 0)
}
