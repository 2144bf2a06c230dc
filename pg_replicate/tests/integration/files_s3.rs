//! The files sink on S3: the `moto` server (installed by
//! `scripts/emulators/s3`, started on a free port of 127.0.0.1, stopped when
//! the test process ends) receives the files, large ones in parts; a
//! missing bucket stops the pipeline with its name, and while the store is
//! down the slot is not confirmed past the files listed.
//! `PG_REPLICATE_S3_VENV` names an installed environment to skip the
//! install check.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use object_store::ObjectStore;
use pg_replicate::pipeline::{DataPipeline, PipelineAction};
use pg_replicate::sinks::files::{
    read_manifests, FileFormat, FilesDestination, FilesSink, FilesSinkConfig, LocalS3,
    ManifestEntry, RollPolicy, S3Settings, MULTIPART_PART,
};
use pg_replicate::sources::postgres::PostgresSource;
use pg_replicate::ErrorKind;

use crate::common::{confirmed_flush, start_with, test_batch_config};
use crate::duckdb_kill::{create_tables, write_changes};
use crate::files::{keys, scratch_dir};
use crate::files_common::{assert_same, replay, wait_all_listed, wait_copied};
use crate::support::{fresh_database, TestDb};

fn venv() -> std::path::PathBuf {
    crate::common::emulator_venv("PG_REPLICATE_S3_VENV", "s3")
}

/// The S3 server of this test process, started on first use.
pub fn s3() -> &'static LocalS3 {
    static S3: OnceLock<LocalS3> = OnceLock::new();
    S3.get_or_init(|| LocalS3::start(&venv()).unwrap_or_else(|e| panic!("moto: {e}")))
}

pub async fn create_bucket(server: &LocalS3, bucket: &str) {
    let response = reqwest::Client::new()
        .put(format!("{}/{bucket}", server.url()))
        .send()
        .await
        .unwrap();
    assert!(
        response.status().is_success(),
        "create bucket {bucket}: {response:?}"
    );
}

pub fn settings(server: &LocalS3, bucket: &str) -> S3Settings {
    S3Settings {
        bucket: bucket.to_owned(),
        prefix: "cdc/app".to_owned(),
        region: "us-east-1".to_owned(),
        endpoint: Some(server.url().to_owned()),
        access_key_id: "test".to_owned(),
        secret_access_key: "test".to_owned(),
        session_token: None,
    }
}

fn s3_config(db: &TestDb, server: &LocalS3, bucket: &str) -> FilesSinkConfig {
    FilesSinkConfig {
        root: scratch_dir(db, "spool"),
        destination: FilesDestination::ObjectStore(settings(server, bucket).location().unwrap()),
        format: FileFormat::Parquet,
        roll: RollPolicy {
            max_rows: 1_000_000,
            max_bytes: 64 << 20,
            max_age: Duration::from_millis(300),
        },
    }
}

#[tokio::test]
async fn files_on_s3_replay_to_the_source_tables() {
    let db = fresh_database("files_s3").await;
    let publication = db.unique_name("pub");
    let slot = db.unique_name("slot");
    create_tables(&db, &publication, 5_000).await;
    // Random text that compresses badly: its copy file is uploaded in parts.
    db.execute(&format!(
        "CREATE TABLE blobs (id int PRIMARY KEY, payload text);
         INSERT INTO blobs SELECT g, md5(g::text) || md5((g * 7)::text) FROM generate_series(1, 200000) g;
         ALTER PUBLICATION {publication} ADD TABLE blobs;"
    ))
    .await;
    let bucket = db.unique_name("bucket").replace('_', "-");
    create_bucket(s3(), &bucket).await;
    let config = s3_config(&db, s3(), &bucket);
    let sink = FilesSink::open(config.clone()).unwrap();
    let running = start_with(&db, &publication, &slot, sink, PipelineAction::Both);
    wait_copied(&config, 4).await;
    for round in 0..4 {
        write_changes(&db, round).await;
    }
    db.execute(
        "UPDATE blobs SET payload = 'short' WHERE id <= 10;
         DELETE FROM blobs WHERE id BETWEEN 11 AND 20;
         BEGIN; TRUNCATE small; INSERT INTO small VALUES (7, 7); COMMIT;",
    )
    .await;
    wait_all_listed(&db, &slot, Duration::from_secs(60)).await;
    running.stop().await.unwrap();

    let replayed = replay(&config, &keys_with_blobs()).await;
    for table in ["big", "small", "keyless", "blobs"] {
        assert_same(&db, &replayed, &format!("public.{table}"), None, "S3").await;
    }

    // The blobs copy went up in parts: S3 gives a multipart object an ETag
    // with the number of parts.
    let manifests = read_manifests(&config).await.unwrap();
    let (folder, blobs) = manifests.iter().find(|(_, m)| m.table == "blobs").unwrap();
    let Some(ManifestEntry::Copy { file, bytes, .. }) = blobs.entries.first() else {
        panic!("the blobs manifest starts with its copy: {blobs:?}");
    };
    assert!(
        *bytes > MULTIPART_PART as u64,
        "the copy file has {bytes} bytes"
    );
    let FilesDestination::ObjectStore(location) = &config.destination else {
        unreachable!()
    };
    let key = object_store::path::Path::from(format!("cdc/app/{folder}/{file}"));
    let head = location.store.head(&key).await.unwrap();
    assert_eq!(head.size, *bytes);
    let etag = head.e_tag.unwrap_or_default();
    assert!(
        etag.contains('-'),
        "a multipart ETag ends in -<parts>: {etag}"
    );
    // Uploaded files do not stay in the spool folder.
    let spooled = std::fs::read_dir(config.root.join("_tmp")).unwrap().count();
    assert_eq!(spooled, 0, "files left in the spool folder");
    let _ = std::fs::remove_dir_all(&config.root);
}

fn keys_with_blobs() -> std::collections::HashMap<&'static str, Vec<&'static str>> {
    let mut keys = keys();
    keys.insert("public.blobs", vec!["id"]);
    keys
}

#[tokio::test]
async fn a_missing_bucket_stops_the_pipeline_with_its_name() {
    let db = fresh_database("files_s3_missing").await;
    let publication = db.unique_name("pub");
    let slot = db.unique_name("slot");
    create_tables(&db, &publication, 10).await;
    let config = s3_config(&db, s3(), "no-such-bucket");
    let sink = FilesSink::open(config.clone()).unwrap();
    let source = PostgresSource::new(db.config(), &publication, &slot);
    let mut pipeline = DataPipeline::new(source, sink, PipelineAction::Both)
        .with_batch_config(test_batch_config());
    let error = tokio::time::timeout(Duration::from_secs(60), pipeline.start())
        .await
        .expect("the pipeline did not stop within 60 s")
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Config, "{error}");
    let message = error.to_string();
    assert!(
        message.contains("s3://no-such-bucket/cdc/app")
            && message.contains("bucket does not exist"),
        "{message}"
    );
    // Nothing was replicated: no slot was created for a sink that cannot store.
    assert_eq!(confirmed_flush(&db, &slot).await, None);
    let _ = std::fs::remove_dir_all(&config.root);
}

#[tokio::test]
async fn while_the_store_is_down_the_slot_stays_at_the_listed_files() {
    let db = fresh_database("files_s3_down").await;
    let publication = db.unique_name("pub");
    let slot = db.unique_name("slot");
    create_tables(&db, &publication, 1_000).await;
    // A server of its own, stopped midway.
    let server = LocalS3::start(&venv()).unwrap();
    create_bucket(&server, "down").await;
    let config = s3_config(&db, &server, "down");
    let sink = FilesSink::open(config.clone()).unwrap();
    let running = start_with(&db, &publication, &slot, sink, PipelineAction::Both);
    wait_copied(&config, 3).await;
    write_changes(&db, 0).await;
    wait_all_listed(&db, &slot, Duration::from_secs(60)).await;

    drop(server);
    let before = crate::common::current_wal_lsn(&db).await;
    for round in 1..4 {
        write_changes(&db, round).await;
    }
    // Well past max_age and the idle tick: the sink tried to list them.
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(4) {
        let confirmed = confirmed_flush(&db, &slot).await.unwrap();
        assert!(
            confirmed <= before,
            "the slot was confirmed to {confirmed}, past {before}, while no file could be listed"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        !running.handle.is_finished(),
        "the pipeline retries the store"
    );
    let _ = running.stop().await;
    let _ = std::fs::remove_dir_all(&config.root);
}
