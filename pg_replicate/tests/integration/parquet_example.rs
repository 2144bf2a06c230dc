//! The `parquet_to_postgres` example end to end: Parquet files in a bucket
//! of the `moto` S3 server loaded into the throwaway Postgres, with
//! `/health` and `/status` scraped while it runs. The example is built by
//! `scripts/test` (cargo builds the workspace's examples with the tests).

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use object_store::path::Path;
use object_store::ObjectStore;
use parquet::arrow::ArrowWriter;
use serde_json::Value;

use crate::common::{example_binary, free_local_addr, http_get, Example};
use crate::files_s3::{create_bucket, s3, settings};
use crate::support::fresh_database;

fn parquet_bytes(first: i64, rows: i64) -> Vec<u8> {
    let ids: Vec<i64> = (first..first + rows).collect();
    let batch = RecordBatch::try_from_iter(vec![
        ("id", Arc::new(Int64Array::from(ids.clone())) as ArrayRef),
        (
            "label",
            Arc::new(StringArray::from_iter_values(
                ids.iter().map(|i| format!("row {i}")),
            )) as ArrayRef,
        ),
    ])
    .unwrap();
    let mut out = Vec::new();
    let mut writer = ArrowWriter::try_new(&mut out, batch.schema(), None).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
    out
}

#[tokio::test]
async fn parquet_to_postgres_loads_a_bucket_and_reports_its_status() {
    let server = s3();
    let bucket = "parquet-example";
    create_bucket(server, bucket).await;
    let store = settings(server, bucket).location().unwrap().store;
    for (name, bytes) in [
        ("exports/a.parquet", parquet_bytes(1, 1000)),
        ("exports/b.parquet", parquet_bytes(1001, 234)),
        ("exports/broken.parquet", b"PAR1 not really".to_vec()),
    ] {
        store.put(&Path::from(name), bytes.into()).await.unwrap();
    }

    let target = fresh_database("parquet_example").await;
    let config = target.config();
    let url = format!(
        "postgres://{}:{}@{}:{}/{}?sslmode=disable",
        config.username,
        config.password.clone().unwrap_or_default(),
        config.host,
        config.port,
        config.dbname
    );
    let addr = free_local_addr();
    let log = std::env::temp_dir().join(format!("pgr_parquet_example_{}.log", target.name()));
    let _example = Example(
        Command::new(example_binary("parquet_to_postgres"))
            .args([
                "--s3-bucket",
                bucket,
                "--s3-prefix",
                "exports",
                "--s3-endpoint",
            ])
            .arg(server.url())
            .args([
                "--table",
                "public.events",
                "--interval-secs",
                "1",
                "--settle-secs",
                "1",
            ])
            .args(["--target", &url, "--http-addr", &addr])
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );

    let start = Instant::now();
    let status: Value = loop {
        if let Some((200, body)) = http_get(&addr, "/status").await {
            let status: Value = serde_json::from_str(&body).unwrap();
            if status["files_loaded"] == 2
                && status["file_errors"]
                    .as_array()
                    .is_some_and(|e| e.len() == 1)
            {
                break status;
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the example did not load the bucket within 60 s; its log:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(status["pipeline"], "running");
    assert_eq!(status["rows_loaded"], 1234);
    assert!(
        status["last_run_unix"].as_f64().is_some_and(|t| t > 1.7e9),
        "{status}"
    );
    assert_eq!(status["file_errors"][0]["file"], "exports/broken.parquet");
    assert!(
        status["file_errors"][0]["error"]
            .as_str()
            .is_some_and(|e| e.contains("not a readable Parquet file")),
        "{status}"
    );
    assert_eq!(
        http_get(&addr, "/health").await,
        Some((200, "ok\n".to_owned()))
    );
    assert_eq!(http_get(&addr, "/nothing").await.map(|r| r.0), Some(404));

    let client = target.client().await;
    let row = client
        .query_one(
            "SELECT count(*), sum(id)::bigint, min(label) FROM events",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 1234);
    assert_eq!(row.get::<_, i64>(1), 1234 * 1235 / 2);
    assert_eq!(row.get::<_, String>(2), "row 1");
}
