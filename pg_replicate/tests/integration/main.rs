//! Integration tests against a real PostgreSQL server.
//!
//! All integration tests live in this one test binary, so one server serves
//! the whole run: `support::cluster()` starts a throwaway cluster on first
//! use (or uses `PG_REPLICATE_TEST_PG`), and every test takes a database of
//! its own from `support::fresh_database`. Add a module per area below.

#![recursion_limit = "256"]

#[path = "../support/mod.rs"]
mod support;

mod throwaway_cluster;

#[tokio::test]
async fn harness_starts_cluster_and_creates_database() {
    let a = support::fresh_database("harness_starts_cluster_and_creates_database").await;
    let b = support::fresh_database("harness_starts_cluster_and_creates_database").await;
    assert_ne!(a.name(), b.name());

    let client = a.client().await;
    let row = client
        .query_one(
            "SELECT current_setting('wal_level'), current_database()",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "logical");
    assert_eq!(row.get::<_, String>(1), a.name());

    // The databases are separate: a table made in one is not in the other.
    b.execute("CREATE TABLE only_in_b (id int PRIMARY KEY)")
        .await;
    let in_a: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_class WHERE relname = 'only_in_b'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(in_a, 0);
    assert_eq!(
        b.psql("SELECT count(*) FROM pg_class WHERE relname = 'only_in_b'"),
        "1"
    );

    // Unique names differ within and across databases.
    let names = [
        a.unique_name("slot"),
        a.unique_name("slot"),
        b.unique_name("slot"),
    ];
    assert!(names[0] != names[1] && names[1] != names[2] && names[0] != names[2]);
    assert!(names.iter().all(|name| name.len() <= 63));

    // Dropping a TestDb drops its database and its replication slots.
    let slot = a.unique_name("drop_me");
    a.execute(&format!(
        "SELECT pg_create_logical_replication_slot('{slot}', 'pgoutput')"
    ))
    .await;
    let name = a.name().to_owned();
    let pg = a.pg();
    drop(client);
    drop(a);
    let left = pg
        .psql(
            &pg.maintenance_db(),
            &format!(
                "SELECT (SELECT count(*) FROM pg_database WHERE datname = '{name}') \
                 + (SELECT count(*) FROM pg_replication_slots WHERE slot_name = '{slot}')"
            ),
        )
        .unwrap();
    assert_eq!(left, "0");
}

mod arrays;
#[cfg(feature = "bigquery")]
mod bigquery;
#[cfg(feature = "bigquery")]
mod bigquery_common;
mod common;
#[cfg(all(feature = "config-db", feature = "duckdb"))]
mod config_db;
#[cfg(feature = "duckdb")]
mod duckdb_cdc;
#[cfg(feature = "duckdb")]
mod duckdb_common;
#[cfg(feature = "duckdb")]
mod duckdb_files;
#[cfg(feature = "duckdb")]
mod duckdb_kill;
#[cfg(feature = "duckdb")]
mod duckdb_types;
mod errors;
mod fault_proxy;
#[cfg(all(feature = "files", feature = "duckdb"))]
mod files;
#[cfg(all(feature = "files", feature = "duckdb"))]
mod files_common;
#[cfg(all(feature = "files-object-store", feature = "duckdb"))]
mod files_s3;
#[cfg(feature = "duckdb")]
mod manager;
mod memory_sink;
#[cfg(feature = "duckdb")]
mod metrics;
#[cfg(all(feature = "postgres-sink", feature = "duckdb"))]
mod metrics_endpoint;
#[cfg(all(
    feature = "parquet-source",
    feature = "postgres-sink",
    feature = "files-object-store",
    feature = "duckdb"
))]
mod parquet_example;
#[cfg(all(
    feature = "parquet-source",
    feature = "postgres-sink",
    feature = "duckdb"
))]
mod parquet_source;
mod pipeline;
#[cfg(all(feature = "postgres-sink", feature = "duckdb"))]
mod postgres_sink;
#[cfg(feature = "duckdb")]
mod reliability;
mod replication_connection;
mod scale;
#[cfg(feature = "duckdb")]
mod sink_faults;
#[cfg(feature = "duckdb")]
mod slot_safety;
#[cfg(feature = "snowflake")]
mod snowflake;
#[cfg(feature = "snowflake")]
mod snowflake_landing;
#[cfg(feature = "snowflake")]
mod snowflake_sink;
#[cfg(feature = "duckdb")]
mod transform;
mod types;
