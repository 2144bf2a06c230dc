//! BigQuery benchmarks against the `local-bigquery` emulator (started on
//! 127.0.0.1 by the benchmark, installed by `scripts/emulators/bigquery`):
//!
//! 1. backfill of 1,000,000 mixed-type rows into a BigQuery table (load job
//!    and Storage Write backfill), next to the emulator loading the same
//!    rows from a CSV file with one load job (its own bulk path, without
//!    reading Postgres), in the same run;
//! 2. CDC apply of 500,000 change events (inserts, updates, deletes in
//!    1,000-row transactions) into the current-state table, staged through
//!    the Storage Write API and through load jobs, next to `pg_recvlogical`
//!    receiving the same slot range into /dev/null.
//!
//! ```text
//! cargo bench -p pg_replicate_benches --bench bigquery
//! BENCH_ROWS=200000 BENCH_EVENTS=100000 cargo bench -p pg_replicate_benches --bench bigquery
//! ```

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use pg_replicate::postgres::throwaway::ThrowawayRole;
use pg_replicate::sinks::bigquery::{
    BackfillMethod, BigQueryCredentials, BigQuerySink, BigQuerySinkConfig, LocalBigQuery,
    StagingMethod,
};
use pg_replicate_benches::*;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

const PROJECT: &str = "bench-project";
const TRANSACTION_ROWS: u64 = 1000;

/// The emulator's environment, installed on first use.
fn venv() -> PathBuf {
    let script = Path::new(&manifest_dir()).join("../scripts/emulators/bigquery");
    let output = Command::new("bash")
        .arg(&script)
        .stderr(Stdio::inherit())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    assert!(output.status.success(), "{} failed", script.display());
    PathBuf::from(String::from_utf8_lossy(&output.stdout).trim())
}

/// Runs `sql` on the emulator and returns the answer.
async fn query(http: &reqwest::Client, emulator: &LocalBigQuery, sql: &str) -> Value {
    let answer: Value = http
        .post(format!(
            "{}/bigquery/v2/projects/{PROJECT}/queries",
            emulator.rest_endpoint()
        ))
        .json(&json!({ "query": sql, "useLegacySql": false, "timeoutMs": 600_000 }))
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .json()
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    assert!(answer.get("error").is_none(), "{sql}: {answer}");
    answer
}

async fn count(http: &reqwest::Client, emulator: &LocalBigQuery, table: &str) -> u64 {
    let answer = query(http, emulator, &format!("SELECT COUNT(*) FROM {table}")).await;
    answer["rows"][0]["f"][0]["v"]
        .as_str()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no count in {answer}"))
}

/// Loads the CSV file `csv` into `dataset.reference` with one multipart
/// load job, uploaded by `curl` from a file (so the file's bytes never sit
/// in this process's memory), and waits until the job is done. The
/// request body is written to `body` before the clock starts.
async fn load_csv(
    http: &reqwest::Client,
    emulator: &LocalBigQuery,
    dataset: &str,
    csv: &Path,
    body: &Path,
) -> Duration {
    let job_id = format!("reference_{}", std::process::id());
    let fields = [
        ("id", "INT64"),
        ("i", "INT64"),
        ("f", "FLOAT64"),
        ("n", "NUMERIC"),
        ("s", "STRING"),
        ("ts", "TIMESTAMP"),
        ("b", "BOOL"),
        ("j", "STRING"),
        ("u", "STRING"),
    ];
    let configuration = json!({
        "jobReference": { "projectId": PROJECT, "jobId": job_id },
        "configuration": { "load": {
            "destinationTable": { "projectId": PROJECT, "datasetId": dataset, "tableId": "reference" },
            "sourceFormat": "CSV",
            "schema": { "fields": fields.iter().map(|(n, t)| json!({"name": n, "type": t})).collect::<Vec<_>>() },
            "writeDisposition": "WRITE_TRUNCATE",
        }},
    });
    let boundary = "pgr_bench_boundary";
    {
        use std::io::Write as _;
        let mut out =
            std::io::BufWriter::new(std::fs::File::create(body).expect("the request body"));
        write!(
            out,
            "--{boundary}\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n{configuration}\r\n\
             --{boundary}\r\nContent-Type: text/csv\r\n\r\n"
        )
        .expect("the request body");
        std::io::copy(
            &mut std::fs::File::open(csv).expect("the CSV file"),
            &mut out,
        )
        .expect("the request body");
        write!(out, "\r\n--{boundary}--\r\n").expect("the request body");
        out.flush().expect("the request body");
    }
    let started = Instant::now();
    let upload = Command::new("curl")
        .args(["-sS", "--fail-with-body", "-X", "POST", "-H"])
        .arg(format!(
            "Content-Type: multipart/related; boundary={boundary}"
        ))
        .arg("--data-binary")
        .arg(format!("@{}", body.display()))
        .arg(format!(
            "{}/upload/bigquery/v2/projects/{PROJECT}/jobs?uploadType=multipart",
            emulator.rest_endpoint()
        ))
        .output()
        .expect("curl (the reference uploads with it)");
    assert!(
        upload.status.success(),
        "reference upload failed: {}",
        String::from_utf8_lossy(&upload.stdout)
    );
    loop {
        let job: Value = http
            .get(format!(
                "{}/bigquery/v2/projects/{PROJECT}/jobs/{job_id}",
                emulator.rest_endpoint()
            ))
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .unwrap_or_else(|e| panic!("reference job: {e}"))
            .json()
            .await
            .unwrap_or_else(|e| panic!("reference job: {e}"));
        if job["status"]["state"] == "DONE" {
            assert!(
                job["status"]["errorResult"].is_null(),
                "reference load failed: {job}"
            );
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(1800),
            "the reference load job did not finish in 30 minutes"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn main() {
    let rows = env_count("BENCH_ROWS", 1_000_000);
    let events = env_count("BENCH_EVENTS", 500_000);
    eprintln!("starting PostgreSQL, the emulator, and generating {rows} rows ...");
    let emulator = LocalBigQuery::start(&venv(), PROJECT)
        .unwrap_or_else(|e| panic!("cannot start local-bigquery: {e}"));
    let cluster = start_cluster();
    create_mixed_table(&cluster, rows);
    let inserts = events / 3 / TRANSACTION_ROWS * TRANSACTION_ROWS;
    let (updates, deletes) = (inserts, inserts);
    let total = inserts + updates + deletes;
    create_change_table(&cluster, &["ref", "ours_sw", "ours_lj"], "");
    let work = cluster
        .data_dir()
        .parent()
        .unwrap_or(cluster.data_dir())
        .to_path_buf();
    let config = cluster.connection_config("bench", ThrowawayRole::Superuser.name());
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let http = reqwest::Client::new();

    runtime.block_on(async {
        for dataset in [
            "reference_ds",
            "load_job_ds",
            "storage_write_ds",
            "cdc_sw_ds",
            "cdc_lj_ds",
        ] {
            let answer: Value = http
                .post(format!(
                    "{}/bigquery/v2/projects/{PROJECT}/datasets",
                    emulator.rest_endpoint()
                ))
                .json(
                    &json!({ "datasetReference": { "projectId": PROJECT, "datasetId": dataset } }),
                )
                .send()
                .await
                .and_then(|r| r.error_for_status())
                .unwrap_or_else(|e| panic!("create dataset {dataset}: {e}"))
                .json()
                .await
                .unwrap_or_default();
            assert!(
                answer.get("error").is_none(),
                "create dataset {dataset}: {answer}"
            );
        }
    });

    let mut ours = Vec::new();
    for (method, dataset, name) in [
        (
            BackfillMethod::LoadJob,
            "load_job_ds",
            "pg_replicate → BigQuery, Parquet load job",
        ),
        (
            BackfillMethod::StorageWrite,
            "storage_write_ds",
            "pg_replicate → BigQuery, Storage Write (pending stream)",
        ),
    ] {
        let elapsed = runtime.block_on(async {
            let started = Instant::now();
            let sink = BigQuerySink::connect(
                BigQuerySinkConfig::new(PROJECT, dataset, BigQueryCredentials::None)
                    .with_endpoints(emulator.rest_endpoint(), emulator.storage_endpoint())
                    .with_backfill(method),
            )
            .await
            .unwrap_or_else(|e| panic!("cannot connect the sink: {e}"));
            copy_table_t(&config, sink, rows).await;
            let elapsed = started.elapsed();
            assert_eq!(
                count(&http, &emulator, &format!("{dataset}.public_t")).await,
                rows
            );
            elapsed
        });
        ours.push(Measurement {
            name: name.into(),
            count: rows,
            bytes: None,
            elapsed,
            peak_rss_mib: Some(peak_rss_self_mib()),
        });
    }

    // The reference: the same rows from a CSV file, one load job.
    let csv_path = work.join("t.csv");
    let export = time_command(
        client_command(&cluster, "psql", "127.0.0.1")
            .args(["-X", "-q", "-c"])
            .arg(format!(
                "\\copy (SELECT id, i, f, n, s, to_char(ts AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS'), b, j, u \
                 FROM t) TO '{}' CSV",
                csv_path.display()
            )),
    );
    let csv_bytes = std::fs::metadata(&csv_path).map_or(0, |m| m.len());
    let export = Measurement {
        name: "psql \\copy t TO file CSV (making the reference's file)".into(),
        count: rows,
        bytes: Some(csv_bytes),
        elapsed: export.elapsed,
        peak_rss_mib: Some(export.peak_rss_mib),
    };
    let mut measurements = Vec::new();
    runtime.block_on(async {
        let body = work.join("t.body");
        let elapsed = load_csv(&http, &emulator, "reference_ds", &csv_path, &body).await;
        let _ = std::fs::remove_file(&body);
        assert_eq!(
            count(&http, &emulator, "reference_ds.reference").await,
            rows
        );
        measurements.push(Measurement {
            name: "emulator: one CSV load job of the exported file (reference)".into(),
            count: rows,
            bytes: Some(csv_bytes),
            elapsed,
            peak_rss_mib: None,
        });
    });
    let _ = std::fs::remove_file(&csv_path);

    measurements.extend(ours);
    measurements.push(export);
    print_table(
        &format!("Backfill of {rows} mixed-type rows into the local-bigquery emulator"),
        "rows",
        &measurements,
    );

    eprintln!("generating {total} change events ...");
    let end_lsn = generate_changes(&cluster, inserts, updates, deletes, TRANSACTION_ROWS);
    let reference = time_command(&mut recvlogical(&cluster, "127.0.0.1", "ref", &end_lsn));
    let mut applies = vec![Measurement {
        name: "pg_recvlogical → /dev/null (receive only)".into(),
        count: total,
        bytes: None,
        elapsed: reference.elapsed,
        peak_rss_mib: Some(reference.peak_rss_mib),
    }];
    let expected: u64 = cluster
        .psql("bench", "SELECT count(*) FROM c WHERE id <> -1")
        .unwrap_or_else(|e| panic!("count c: {e}"))
        .trim()
        .parse()
        .unwrap_or_default();
    for (staging, dataset, slot, name) in [
        (
            StagingMethod::StorageWrite,
            "cdc_sw_ds",
            "ours_sw",
            "pg_replicate → emulator, staged by Storage Write (applied, committed)",
        ),
        (
            StagingMethod::LoadJob,
            "cdc_lj_ds",
            "ours_lj",
            "pg_replicate → emulator, staged by load jobs (applied, committed)",
        ),
    ] {
        let (elapsed, applied, stored) = runtime.block_on(async {
            let sink = BigQuerySink::connect(
                BigQuerySinkConfig::new(PROJECT, dataset, BigQueryCredentials::None)
                    .with_endpoints(emulator.rest_endpoint(), emulator.storage_endpoint())
                    .with_identity(format!("bench_pub/{slot}"))
                    .with_staging(staging),
            )
            .await
            .unwrap_or_else(|e| panic!("cannot connect the sink: {e}"));
            let cancel = CancellationToken::new();
            let mut sink = CountingSink::new(sink);
            sink.stop_after = Some((total, cancel.clone()));
            let (elapsed, sink) = time_cdc(config.clone(), slot, sink, cancel).await;
            let stored = count(
                &http,
                &emulator,
                &format!("{dataset}.public_c WHERE id <> -1"),
            )
            .await;
            (elapsed, sink.changes, stored)
        });
        assert!(applied >= total, "applied {applied} of {total}");
        assert_eq!(
            stored, expected,
            "the BigQuery table differs from Postgres in rows"
        );
        applies.push(Measurement {
            name: name.into(),
            count: total,
            bytes: None,
            elapsed,
            peak_rss_mib: Some(peak_rss_self_mib()),
        });
    }
    print_table(
        &format!("CDC apply of {total} change events into the emulator (1,000-row transactions)"),
        "events",
        &applies,
    );
}

/// The package's directory: cargo's value at run time (the build directory
/// may be shared by checkouts in other places), else the one built in.
fn manifest_dir() -> String {
    std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_owned())
}
