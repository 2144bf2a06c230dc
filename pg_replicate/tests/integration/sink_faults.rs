//! A sink that fails: transient failures during the backfill and the
//! stream (before it stores a batch, and after it stored one but before
//! the pipeline heard so) are retried with backoff and end with DuckDB
//! equal to Postgres, nothing lost or twice; a permanent failure stops the
//! pipeline with its error. The slot is never confirmed past what DuckDB
//! stored. The faults are injected by a wrapper around the real DuckDB
//! sink, on command.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use pg_replicate::pipeline::{DataPipeline, PipelineAction, RetryConfig};
use pg_replicate::sinks::duckdb::{DuckDbReader, DuckDbSink};
use pg_replicate::sinks::Sink;
use pg_replicate::sources::postgres::PostgresSource;
use pg_replicate::types::change::{CdcBatch, ResumptionState};
use pg_replicate::types::{Lsn, TableSchema};
use pg_replicate::{Error, ErrorKind, Result};
use tokio_util::sync::CancellationToken;

use crate::common::{confirmed_flush, test_batch_config, wait_until, Running};
use crate::duckdb_common::{columns, config, stored_lsn, wait_duck_converged, DuckDir};
use crate::support::{fresh_database, TestDb};

/// Failures to inject, each counter consumed one failure at a time.
#[derive(Default)]
pub struct Faults {
    /// `write_table_rows` calls to fail.
    pub copy_rows: AtomicU32,
    /// `write_cdc_batch` calls to fail before the batch is written.
    pub before_store: AtomicU32,
    /// `write_cdc_batch` calls to fail after the batch is stored.
    pub after_store: AtomicU32,
    /// Fail with a permanent error instead of a transient one.
    pub permanent: AtomicBool,
    /// Failures injected so far.
    pub injected: AtomicU32,
}

impl Faults {
    fn take(&self, counter: &AtomicU32) -> Result<()> {
        if counter
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_err()
        {
            return Ok(());
        }
        self.injected.fetch_add(1, Ordering::SeqCst);
        Err(if self.permanent.load(Ordering::SeqCst) {
            Error::new(ErrorKind::Config, "injected permanent sink failure")
        } else {
            Error::new(ErrorKind::Sink, "injected sink outage")
        })
    }
}

/// The DuckDB sink, failing as `faults` says (`ErrorKind::Sink`, or
/// `Config` when permanent).
pub struct FaultySink {
    pub inner: DuckDbSink,
    pub faults: Arc<Faults>,
}

#[async_trait]
impl Sink for FaultySink {
    async fn resumption_state(&mut self) -> Result<ResumptionState> {
        self.inner.resumption_state().await
    }

    async fn write_table_schemas(&mut self, tables: &[Arc<TableSchema>]) -> Result<()> {
        self.inner.write_table_schemas(tables).await
    }

    async fn begin_table_copy(&mut self, table: &Arc<TableSchema>) -> Result<()> {
        self.inner.begin_table_copy(table).await
    }

    async fn write_table_rows(
        &mut self,
        table: &Arc<TableSchema>,
        rows: RecordBatch,
    ) -> Result<()> {
        self.faults.take(&self.faults.copy_rows)?;
        self.inner.write_table_rows(table, rows).await
    }

    async fn end_table_copy(&mut self, table: &Arc<TableSchema>, snapshot_lsn: Lsn) -> Result<()> {
        self.inner.end_table_copy(table, snapshot_lsn).await
    }

    async fn write_cdc_batch(&mut self, batch: CdcBatch) -> Result<Lsn> {
        self.faults.take(&self.faults.before_store)?;
        let stored = self.inner.write_cdc_batch(batch).await?;
        self.faults.take(&self.faults.after_store)?;
        Ok(stored)
    }
}

/// A pipeline into a DuckDB sink that fails on command.
struct Faulty {
    db: TestDb,
    slot: String,
    _dir: DuckDir,
    reader: DuckDbReader,
    faults: Arc<Faults>,
    running: Running,
}

/// Creates table `t` (5,000 rows) and its publication, and starts the
/// pipeline into a faulty sink whose first `copy_failures` copy writes
/// fail.
async fn start_faulty(name: &str, copy_failures: u32) -> Faulty {
    let db = fresh_database(name).await;
    let (publication, slot) = (db.unique_name("pub"), db.unique_name("slot"));
    db.execute(&format!(
        "CREATE TABLE t (id bigint PRIMARY KEY, v text NOT NULL);
         INSERT INTO t SELECT g, 'r' || g FROM generate_series(1, 5000) g;
         CREATE PUBLICATION {publication} FOR TABLE t"
    ))
    .await;
    let dir = DuckDir::new(&db);
    let inner = DuckDbSink::open(config(&dir.file("r.duckdb"), &publication, &slot)).unwrap();
    let reader = inner.reader().unwrap();
    let faults = Arc::new(Faults::default());
    faults.copy_rows.store(copy_failures, Ordering::SeqCst);
    let sink = FaultySink {
        inner,
        faults: faults.clone(),
    };
    let cancel = CancellationToken::new();
    let mut pipeline = DataPipeline::new(
        PostgresSource::new(db.config(), publication.as_str(), slot.as_str()),
        sink,
        PipelineAction::Both,
    )
    .with_batch_config(test_batch_config())
    .with_retry_config(RetryConfig {
        initial_backoff: Duration::from_millis(50),
        max_backoff: Duration::from_millis(400),
        give_up_after: Duration::from_secs(60),
    })
    .with_cancellation(cancel.clone());
    let handle = tokio::spawn(async move { pipeline.start().await });
    Faulty {
        db,
        slot,
        _dir: dir,
        reader,
        faults,
        running: Running { handle, cancel },
    }
}

#[tokio::test]
async fn transient_sink_failures_are_retried_with_nothing_lost_or_twice() {
    let Faulty {
        db,
        slot,
        _dir,
        reader,
        faults,
        running,
    } = start_faulty("sink_transient", 2).await;
    let cols = columns(&[("id", "bigint"), ("v", "text")]);
    let tables = [("t", "public.t", cols.as_slice())];
    wait_duck_converged(&db, &reader, &tables).await;
    assert_eq!(
        faults.injected.load(Ordering::SeqCst),
        2,
        "the copy failures were not injected"
    );

    // Failures before and after a batch is stored, while changes keep
    // coming; each batch is sent again and stored once.
    faults.before_store.store(2, Ordering::SeqCst);
    faults.after_store.store(3, Ordering::SeqCst);
    for round in 0..20 {
        db.execute(&format!(
            "BEGIN; INSERT INTO t VALUES ({0}, 'n{0}'); UPDATE t SET v = v || '+' WHERE id % 20 = {1};
             DELETE FROM t WHERE id = {2}; COMMIT;",
            10_000 + round,
            round,
            round * 7 + 1
        ))
        .await;
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    wait_until(
        "the injected stream failures",
        Duration::from_secs(60),
        || faults.injected.load(Ordering::SeqCst) == 7,
    )
    .await;
    wait_duck_converged(&db, &reader, &tables).await;
    assert!(!running.handle.is_finished(), "the pipeline stopped");
    running.stop().await.unwrap();
    let (confirmed, stored) = (confirmed_flush(&db, &slot).await, stored_lsn(&reader));
    assert!(
        confirmed.is_some_and(|c| stored.is_some_and(|s| c <= s)),
        "slot confirmed {confirmed:?}, DuckDB stored {stored:?}"
    );
}

#[tokio::test]
async fn a_permanent_sink_failure_stops_the_pipeline_with_its_error() {
    let Faulty {
        db,
        slot,
        _dir,
        reader,
        faults,
        running,
    } = start_faulty("sink_permanent", 0).await;
    let cols = columns(&[("id", "bigint"), ("v", "text")]);
    wait_duck_converged(&db, &reader, &[("t", "public.t", cols.as_slice())]).await;
    faults.permanent.store(true, Ordering::SeqCst);
    faults.after_store.store(1, Ordering::SeqCst);
    db.execute("INSERT INTO t VALUES (10000, 'after')").await;
    let error = tokio::time::timeout(Duration::from_secs(30), running.handle)
        .await
        .expect("the pipeline did not stop within 30 s of a permanent sink failure")
        .unwrap()
        .expect_err("the pipeline ended without the sink's error");
    assert_eq!(error.kind(), ErrorKind::Config, "{error}");
    assert!(error.to_string().contains("injected permanent"), "{error}");
    assert_eq!(faults.injected.load(Ordering::SeqCst), 1);
    // The failed batch was stored, but the pipeline never heard so: the
    // slot is behind DuckDB, never ahead.
    let (confirmed, stored) = (confirmed_flush(&db, &slot).await, stored_lsn(&reader));
    assert!(
        confirmed.is_some_and(|c| stored.is_some_and(|s| c <= s)),
        "slot confirmed {confirmed:?}, DuckDB stored {stored:?}"
    );
}
