//! The Parquet source: files of a folder loaded into a table of the
//! Postgres sink on a schedule, each file exactly once across restarts; a
//! corrupt file and a file with other columns are skipped with errors
//! naming them, and the files after them are loaded.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use arrow::array::{
    ArrayRef, Decimal128Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use parquet::arrow::ArrowWriter;
use pg_replicate::pipeline::PipelineAction;
use pg_replicate::sinks::postgres::{PostgresSink, PostgresSinkConfig};
use pg_replicate::sources::parquet::{ParquetSource, ParquetSourceConfig, StatusHandle};
use pg_replicate::types::TableName;

use crate::common::{start_source, Running};
use crate::support::{fresh_database, TestDb};

/// Writes `rows` rows with ids from `first` as a Parquet file, modified
/// `age` ago.
fn write_file(dir: &Path, name: &str, first: i64, rows: i64, age: Duration) -> PathBuf {
    let ids: Vec<i64> = (first..first + rows).collect();
    let batch = RecordBatch::try_from_iter(vec![
        ("id", Arc::new(Int64Array::from(ids.clone())) as ArrayRef),
        (
            "name",
            Arc::new(StringArray::from_iter(
                ids.iter()
                    .map(|i| (i % 7 != 0).then(|| format!("item {i}"))),
            )) as ArrayRef,
        ),
        (
            "amount",
            Arc::new(
                Decimal128Array::from_iter_values(ids.iter().map(|i| i128::from(*i) * 101))
                    .with_precision_and_scale(12, 2)
                    .unwrap(),
            ) as ArrayRef,
        ),
        (
            "at",
            Arc::new(
                TimestampMicrosecondArray::from_iter_values(
                    ids.iter().map(|i| 1_700_000_000_000_000 + i),
                )
                .with_timezone("UTC"),
            ) as ArrayRef,
        ),
    ])
    .unwrap();
    write_batch(dir, name, &batch, age)
}

fn write_batch(dir: &Path, name: &str, batch: &RecordBatch, age: Duration) -> PathBuf {
    let path = dir.join(name);
    let file = std::fs::File::create(&path).unwrap();
    let mut writer = ArrowWriter::try_new(file, batch.schema(), None).unwrap();
    writer.write(batch).unwrap();
    writer.close().unwrap();
    set_age(&path, age);
    path
}

fn set_age(path: &Path, age: Duration) {
    let file = std::fs::File::options().write(true).open(path).unwrap();
    file.set_modified(SystemTime::now() - age).unwrap();
}

fn source(dir: &Path) -> (ParquetSource, StatusHandle) {
    let config = ParquetSourceConfig::local(dir, TableName::new("public", "events"))
        .unwrap()
        .with_interval(Duration::from_millis(200))
        .with_settle(Duration::from_millis(500));
    let source = ParquetSource::new(config);
    let status = source.status();
    (source, status)
}

async fn start(dir: &Path, target: &TestDb) -> (Running, StatusHandle) {
    let (source, status) = source(dir);
    let sink = PostgresSink::connect(
        PostgresSinkConfig::new(target.config()).with_identity("files/events"),
    )
    .await
    .unwrap();
    (start_source(source, sink, PipelineAction::Both), status)
}

/// `(rows, distinct ids, sum of ids, sum of amounts)` of the target table.
async fn totals(target: &TestDb) -> Option<(i64, i64, i64, String)> {
    let client = target.client().await;
    let row = client
        .query_one(
            "SELECT count(*), count(DISTINCT id), coalesce(sum(id), 0)::bigint, coalesce(sum(amount), 0)::text \
             FROM events WHERE to_regclass('public.events') IS NOT NULL",
            &[],
        )
        .await
        .ok()?;
    Some((row.get(0), row.get(1), row.get(2), row.get(3)))
}

async fn wait_rows(target: &TestDb, rows: i64) -> (i64, i64, i64, String) {
    let start = Instant::now();
    loop {
        let now = totals(target).await;
        if let Some(t) = &now {
            if t.0 >= rows {
                return t.clone();
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "waited 60 s for {rows} rows in the target; it has {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn files_load_once_each_and_bad_files_are_named() {
    let target = fresh_database("parquet_source").await;
    let dir = std::env::temp_dir().join(format!("pgr_parquet_{}", target.name()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    write_file(&dir, "a.parquet", 1, 1000, Duration::from_secs(30));
    write_file(&dir, "b.parquet", 1001, 2500, Duration::from_secs(20));
    std::fs::write(dir.join("notes.txt"), "not a Parquet file").unwrap();

    let (running, status) = start(&dir, &target).await;
    let (rows, distinct, ids, amounts) = wait_rows(&target, 3500).await;
    assert_eq!((rows, distinct), (3500, 3500));
    assert_eq!(ids, 3500 * 3501 / 2);
    assert_eq!(amounts, format!("{:.2}", (3500 * 3501 / 2) as f64 * 1.01));
    let client = target.client().await;
    let typed: String = client
        .query_one(
            "SELECT format('%s|%s|%s', name, amount, at) FROM events WHERE id = 14 OR id = 15 ORDER BY id LIMIT 1",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        typed, "|14.14|2023-11-14 22:13:20.000014+00",
        "id 14: NULL name, exact decimal and time"
    );

    // A corrupt file and one with other columns are skipped, named; the
    // file after them is loaded.
    std::fs::write(dir.join("c_corrupt.parquet"), b"PAR1 this is not parquet").unwrap();
    set_age(&dir.join("c_corrupt.parquet"), Duration::from_secs(10));
    let other = RecordBatch::try_from_iter(vec![(
        "id",
        Arc::new(StringArray::from(vec!["x"])) as ArrayRef,
    )])
    .unwrap();
    write_batch(&dir, "d_other.parquet", &other, Duration::from_secs(9));
    write_file(&dir, "e.parquet", 5001, 10, Duration::from_secs(8));
    wait_rows(&target, 3510).await;
    let snapshot = status.snapshot();
    let errors: Vec<(&str, &str)> = snapshot
        .errors
        .iter()
        .map(|e| (e.path.as_str(), e.error.as_str()))
        .collect();
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert_eq!(errors[0].0, "c_corrupt.parquet");
    assert!(
        errors[0].1.contains("not a readable Parquet file"),
        "{errors:?}"
    );
    assert_eq!(errors[1].0, "d_other.parquet");
    assert!(
        errors[1].1.contains("id text") && errors[1].1.contains("id bigint"),
        "{errors:?}"
    );
    assert_eq!(snapshot.files_loaded, 3);
    assert_eq!(snapshot.rows_loaded, 3510);
    assert!(snapshot.last_run.is_some());
    running.stop().await.unwrap();

    // A restart loads only the files that are new.
    write_file(&dir, "f.parquet", 6001, 5, Duration::from_secs(5));
    let (running, status) = start(&dir, &target).await;
    let (rows, distinct, _, _) = wait_rows(&target, 3515).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        totals(&target).await.unwrap().0,
        3515,
        "no file is loaded twice"
    );
    assert_eq!((rows, distinct), (3515, 3515));
    assert_eq!(status.snapshot().files_loaded, 1);
    running.stop().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

/// A backlog of files is read one modification time at a time as the
/// pipeline asks for batches, not all at once when it is listed: memory
/// holds one file's rows, whatever the backlog.
#[tokio::test]
async fn a_backlog_is_read_one_file_time_at_a_time() {
    use pg_replicate::pipeline::BatchConfig;
    use pg_replicate::sources::{CdcStream, Source};
    use pg_replicate::types::change::{CdcEvent, ResumptionState};
    use tokio_util::sync::CancellationToken;

    let dir = std::env::temp_dir().join(format!("pgr_parquet_backlog_{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let sizes = [300i64, 200, 100];
    let mut first = 1;
    for (i, rows) in sizes.iter().enumerate() {
        let age = Duration::from_secs(30 - 10 * i as u64);
        write_file(&dir, &format!("f{i}.parquet"), first, *rows, age);
        first += rows;
    }
    let (mut source, status) = source(&dir);
    let state = ResumptionState::default();
    source
        .prepare(PipelineAction::CdcOnly, &state)
        .await
        .unwrap();
    let mut stream = source
        .start_cdc(&state, &BatchConfig::default(), CancellationToken::new())
        .await
        .unwrap();
    let mut last_lsn = None;
    for (i, rows) in sizes.iter().enumerate() {
        let batch = tokio::time::timeout(Duration::from_secs(20), stream.next_batch())
            .await
            .unwrap_or_else(|_| panic!("no batch for file {i} within 20 s"))
            .unwrap()
            .expect("a batch, not the end of the stream");
        let got: usize = batch
            .events
            .iter()
            .map(|e| match e {
                CdcEvent::Changes(c) => c.batch.num_rows(),
                _ => 0,
            })
            .sum();
        assert_eq!((got as i64, batch.transactions), (*rows, 1), "file {i}");
        assert!(Some(batch.end_lsn) > last_lsn, "file times in order");
        last_lsn = Some(batch.end_lsn);
        let now = status.snapshot();
        assert_eq!(
            (now.runs, now.files_loaded, now.rows_loaded as i64),
            (1, i as u64 + 1, sizes[..=i].iter().sum::<i64>()),
            "after the batch of file {i}, only the files up to it are read, from one listing"
        );
    }
    stream.close().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
