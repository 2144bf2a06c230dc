//! Mistakes a user can make get errors that name the problem and the fix.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use pg_replicate::pipeline::{DataPipeline, PipelineAction};
use pg_replicate::postgres::throwaway::{ThrowawayCluster, ThrowawayOptions};
use pg_replicate::postgres::PgConnectionConfig;
use pg_replicate::sinks::stdout::StdoutSink;
use pg_replicate::sources::postgres::PostgresSource;
use pg_replicate::{Error, ErrorKind};

use crate::common::*;
use crate::memory_sink::Store;
use crate::support::fresh_database;

async fn run_once(config: PgConnectionConfig, publication: &str, slot: &str) -> Result<(), Error> {
    let source = PostgresSource::new(config, publication, slot);
    let sink = StdoutSink::with_writer(Vec::new());
    let mut pipeline = DataPipeline::new(source, sink, PipelineAction::Both);
    let token = pipeline.cancellation_token();
    // Set-up errors come first; a pipeline that got as far as streaming is
    // stopped after a moment.
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(5)).await;
        token.cancel();
    });
    pipeline.start().await.map(|_| ())
}

fn assert_error(result: Result<(), Error>, kind: ErrorKind, needles: &[&str]) {
    let error = result.expect_err("the run must fail");
    let text = error.to_string();
    assert_eq!(error.kind(), kind, "{text}");
    for needle in needles {
        assert!(text.contains(needle), "`{text}` should mention `{needle}`");
    }
}

#[tokio::test]
async fn wrong_password_is_an_authentication_error() {
    let db = fresh_database("wrong_password").await;
    let mut config = db.config();
    config.password = Some("not the password".into());
    let result = run_once(config, "p", "s").await;
    let error = result.as_ref().expect_err("must fail");
    assert!(
        !error.to_string().contains("not the password"),
        "the password is never shown"
    );
    assert_error(result, ErrorKind::Authentication, &["password"]);
}

#[tokio::test]
async fn unknown_database_is_named() {
    let db = fresh_database("unknown_db").await;
    let mut config = db.config();
    config.dbname = "no_such_database".into();
    assert_error(
        run_once(config, "p", "s").await,
        ErrorKind::Config,
        &["no_such_database"],
    );
}

#[tokio::test]
async fn missing_publication_names_the_fix() {
    let db = fresh_database("missing_pub").await;
    let slot = db.unique_name("slot");
    assert_error(
        run_once(db.config(), "nonexistent_pub", &slot).await,
        ErrorKind::SourceSetup,
        &["nonexistent_pub", "CREATE PUBLICATION"],
    );
}

#[tokio::test]
async fn table_without_replica_identity_is_reported_at_start() {
    let db = fresh_database("no_identity").await;
    let publication = db.unique_name("pub");
    let slot = db.unique_name("slot");
    db.execute(&format!(
        "CREATE TABLE keyless (a int, b text); CREATE PUBLICATION {publication} FOR TABLE keyless;"
    ))
    .await;
    assert_error(
        run_once(db.config(), &publication, &slot).await,
        ErrorKind::Schema,
        &["public.keyless", "REPLICA IDENTITY FULL"],
    );
    // Nothing was created for a run that could not start.
    assert!(confirmed_flush(&db, &slot).await.is_none());
}

#[tokio::test]
async fn invalid_slot_name_is_a_config_error() {
    let db = fresh_database("bad_slot_name").await;
    let publication = db.unique_name("pub");
    db.execute(&format!(
        "CREATE TABLE t (id int PRIMARY KEY); CREATE PUBLICATION {publication} FOR TABLE t;"
    ))
    .await;
    assert_error(
        run_once(db.config(), &publication, "Bad-Name").await,
        ErrorKind::Config,
        &["Bad-Name"],
    );
}

#[tokio::test]
async fn slot_in_use_by_another_connection() {
    let db = fresh_database("slot_in_use").await;
    let publication = db.unique_name("pub");
    let slot = db.unique_name("slot");
    db.execute(&format!(
        "CREATE TABLE t (id int PRIMARY KEY); CREATE PUBLICATION {publication} FOR TABLE t;"
    ))
    .await;
    let store = Arc::new(Mutex::new(Store::default()));
    let running = start(&db, &publication, &slot, &store, PipelineAction::Both);
    // Wait until the first pipeline streams from the slot.
    wait_slot_state(&db, &slot, true).await;
    assert_error(
        run_once(db.config(), &publication, &slot).await,
        ErrorKind::SourceSetup,
        &[&slot, "in use"],
    );
    running.stop().await.unwrap();
}

#[tokio::test]
async fn wal_level_not_logical_names_the_setting() {
    if crate::support::cluster().throwaway().is_none() {
        eprintln!("skipped: needs a throwaway cluster of its own");
        return;
    }
    let cluster = tokio::task::spawn_blocking(|| {
        ThrowawayCluster::start(ThrowawayOptions {
            wal_level: "replica".into(),
            ..ThrowawayOptions::default()
        })
    })
    .await
    .unwrap()
    .expect("second cluster");
    let config = cluster.connection_config("postgres", "postgres");
    assert_error(
        run_once(config, "p", "s").await,
        ErrorKind::SourceSetup,
        &["wal_level", "logical"],
    );
    tokio::task::spawn_blocking(move || drop(cluster))
        .await
        .unwrap();
}
