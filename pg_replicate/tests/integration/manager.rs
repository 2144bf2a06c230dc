//! `PipelineManager` with real pipelines into DuckDB and stdout: the
//! concurrency limit, pause and resume without loss, stop, failures that
//! stay with their pipeline, hooks, restarts and shutdown.

use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures_util::FutureExt;
use pg_replicate::pipeline::manager::{ManagedRun, RestartPolicy};
use pg_replicate::pipeline::{
    DataPipeline, ManagedPipeline, PipelineAction, PipelineManager, PipelineReport, PipelineStatus,
};
use pg_replicate::sinks::duckdb::{DuckDbReader, DuckDbSink};
use pg_replicate::sinks::stdout::StdoutSink;
use pg_replicate::sources::postgres::PostgresSource;
use pg_replicate::{Error, ErrorKind};
use tokio_util::sync::CancellationToken;

use crate::common::{confirmed_flush, test_batch_config, wait_slot_state};
use crate::duckdb_common::{columns, config, stored_lsn, wait_duck_converged, Col, DuckDir};
use crate::support::TestDb;

/// Counts the runs going on at once, through every pipeline it wraps.
#[derive(Clone, Default)]
struct Probe {
    now: Arc<AtomicUsize>,
    most: Arc<AtomicUsize>,
}

struct Probed<R> {
    run: R,
    probe: Probe,
}

#[async_trait]
impl<R: ManagedRun> ManagedRun for Probed<R> {
    async fn run(&mut self, cancel: CancellationToken) -> pg_replicate::Result<PipelineReport> {
        let now = self.probe.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.probe.most.fetch_max(now, Ordering::SeqCst);
        let result = self.run.run(cancel).await;
        self.probe.now.fetch_sub(1, Ordering::SeqCst);
        result
    }
}

/// A table `name` with its own publication, slot and DuckDB file.
struct Replicated {
    table: String,
    slot: String,
    pipeline: Option<DataPipeline<PostgresSource, DuckDbSink>>,
    reader: DuckDbReader,
}

async fn replicated(db: &TestDb, dir: &DuckDir, table: &str) -> Replicated {
    let publication = db.unique_name(&format!("pub_{table}"));
    let slot = db.unique_name(&format!("slot_{table}"));
    db.execute(&format!(
        "CREATE TABLE {table} (id int PRIMARY KEY, v text);
         INSERT INTO {table} SELECT g, 'copied' FROM generate_series(1, 50) g;
         CREATE PUBLICATION {publication} FOR TABLE {table};"
    ))
    .await;
    let sink = DuckDbSink::open(config(
        &dir.file(&format!("{table}.duckdb")),
        &publication,
        &slot,
    ))
    .expect("open the DuckDB file");
    let reader = sink.reader().expect("a reader of the DuckDB file");
    let pipeline = DataPipeline::new(
        PostgresSource::new(db.config(), &publication, &slot),
        sink,
        PipelineAction::Both,
    )
    .with_batch_config(test_batch_config());
    Replicated {
        table: table.to_owned(),
        slot,
        pipeline: Some(pipeline),
        reader,
    }
}

fn cols() -> Vec<Col> {
    columns(&[("id", "int4"), ("v", "text")])
}

async fn converged(db: &TestDb, r: &Replicated) {
    let cols = cols();
    let duck = format!("public.{}", r.table);
    wait_duck_converged(db, &r.reader, &[(r.table.as_str(), duck.as_str(), &cols)]).await;
}

/// Waits until `name` is in a state `pick` accepts; panics naming `what`.
async fn wait_status(
    manager: &PipelineManager,
    name: &str,
    what: &str,
    pick: impl Fn(&PipelineStatus) -> bool,
) -> PipelineStatus {
    let start = Instant::now();
    loop {
        let status = manager.status(name).expect("a managed pipeline");
        if pick(&status) {
            return status;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "pipeline {name} was not {what} within 60 s; it is {status}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn running(status: &PipelineStatus) -> bool {
    matches!(status, PipelineStatus::Running)
}

/// The names of the pipelines in `state` (by status name).
fn in_state(manager: &PipelineManager, state: &str) -> Vec<String> {
    manager
        .statuses()
        .into_iter()
        .filter(|(_, s)| s.name() == state)
        .map(|(n, _)| n)
        .collect()
}

async fn slot_active(db: &TestDb, slot: &str) -> bool {
    db.client()
        .await
        .query_one(
            "SELECT coalesce(bool_or(active), false) FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await
        .unwrap()
        .get(0)
}

/// Bounds a manager call that waits for runs to end.
async fn within<T>(what: &str, call: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(60), call)
        .await
        .unwrap_or_else(|_| panic!("{what} did not return within 60 s"))
}

#[tokio::test]
async fn the_limit_holds_and_a_paused_pipeline_resumes_without_loss() {
    let db = crate::support::fresh_database("manager_limit").await;
    let dir = DuckDir::new(&db);
    let mut tables = Vec::new();
    for name in ["alpha", "beta", "gamma"] {
        tables.push(replicated(&db, &dir, name).await);
    }
    let probe = Probe::default();
    let manager = PipelineManager::new(2);
    for t in &mut tables {
        let run = Probed {
            run: t.pipeline.take().unwrap(),
            probe: probe.clone(),
        };
        manager.add(ManagedPipeline::new(&t.table, run)).unwrap();
    }
    let duplicate = manager.add(ManagedPipeline::new("alpha", NeverRuns));
    assert_eq!(duplicate.unwrap_err().kind(), ErrorKind::Config);
    for t in &tables {
        manager.start(&t.table).await.unwrap();
    }

    // Two run, the third waits for a place, and keeps waiting.
    let start = Instant::now();
    while in_state(&manager, "running").len() < 2 {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "two pipelines were not running within 60 s: {:?}",
            manager.statuses()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let first_running = in_state(&manager, "running");
    let waiting = in_state(&manager, "waiting");
    assert_eq!(
        (first_running.len(), waiting.len()),
        (2, 1),
        "{:?}",
        manager.statuses()
    );
    let by_name = |name: &str| tables.iter().find(|t| t.table == name).unwrap();
    for name in &first_running {
        converged(&db, by_name(name)).await;
    }

    // Pausing one lets the waiting one run; the paused one keeps its slot.
    let paused = by_name(&first_running[0]);
    within("pause", manager.pause(&paused.table)).await.unwrap();
    assert!(matches!(
        manager.status(&paused.table),
        Some(PipelineStatus::Paused)
    ));
    assert!(
        confirmed_flush(&db, &paused.slot).await.is_some(),
        "the paused pipeline's slot is gone"
    );
    assert!(!slot_active(&db, &paused.slot).await);
    wait_status(&manager, &waiting[0], "running", running).await;
    converged(&db, by_name(&waiting[0])).await;

    // Changes made while paused: not in DuckDB until it runs again.
    let before = stored_lsn(&paused.reader);
    db.execute(&format!(
        "UPDATE {t} SET v = 'while paused' WHERE id <= 10;
         DELETE FROM {t} WHERE id > 45;
         INSERT INTO {t} VALUES (100, 'inserted while paused');",
        t = paused.table
    ))
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        stored_lsn(&paused.reader),
        before,
        "a paused pipeline wrote"
    );

    // Started again it waits for a place: pausing another makes one.
    manager.start(&paused.table).await.unwrap();
    assert!(matches!(
        manager.status(&paused.table),
        Some(PipelineStatus::Waiting)
    ));
    let other = &first_running[1];
    within("pause", manager.pause(other)).await.unwrap();
    wait_status(&manager, &paused.table, "running", running).await;
    converged(&db, paused).await;
    manager.start(other).await.unwrap();

    // Shut down: every run ends stopped, its slot free and confirmed
    // no further than DuckDB stored.
    for t in &tables {
        db.execute(&format!(
            "INSERT INTO {} VALUES (200, 'before the shutdown')",
            t.table
        ))
        .await;
    }
    assert!(matches!(
        manager.status(other),
        Some(PipelineStatus::Waiting)
    ));
    for name in [&paused.table, &waiting[0]] {
        wait_status(&manager, name, "running", running).await;
        converged(&db, by_name(name)).await;
    }
    within("shutdown", manager.shutdown()).await;
    for t in &tables {
        assert!(
            matches!(manager.status(&t.table), Some(PipelineStatus::Stopped)),
            "{}: {:?}",
            t.table,
            manager.status(&t.table)
        );
        wait_slot_state(&db, &t.slot, false).await;
        let confirmed = confirmed_flush(&db, &t.slot).await.unwrap();
        match stored_lsn(&t.reader) {
            Some(stored) => assert!(
                confirmed <= stored,
                "{}: slot at {confirmed}, DuckDB at {stored}",
                t.table
            ),
            // Only the one left waiting streamed nothing.
            None => assert_eq!(&t.table, other),
        }
    }
    assert_eq!(
        probe.most.load(Ordering::SeqCst),
        2,
        "more than 2 ran at once"
    );
    assert_eq!(probe.now.load(Ordering::SeqCst), 0);
}

/// A run that must never start.
struct NeverRuns;

#[async_trait]
impl ManagedRun for NeverRuns {
    async fn run(&mut self, _cancel: CancellationToken) -> pg_replicate::Result<PipelineReport> {
        panic!("this run must not start");
    }
}

/// A run that panics.
struct Panics;

#[async_trait]
impl ManagedRun for Panics {
    async fn run(&mut self, _cancel: CancellationToken) -> pg_replicate::Result<PipelineReport> {
        panic!("a bug in a pipeline");
    }
}

/// Fails with a retryable error `failures` times, then runs `run`.
struct FailsFirst<R> {
    failures: usize,
    run: R,
}

#[async_trait]
impl<R: ManagedRun> ManagedRun for FailsFirst<R> {
    async fn run(&mut self, cancel: CancellationToken) -> pg_replicate::Result<PipelineReport> {
        if self.failures > 0 {
            self.failures -= 1;
            return Err(Error::new(ErrorKind::Connection, "the network is down"));
        }
        self.run.run(cancel).await
    }
}

/// What the stdout sink wrote.
#[derive(Clone, Default)]
struct SharedOutput(Arc<Mutex<Vec<u8>>>);

impl Write for SharedOutput {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl SharedOutput {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

#[tokio::test]
async fn failures_and_stops_stay_with_their_pipeline() {
    let db = crate::support::fresh_database("manager_failures").await;
    let dir = DuckDir::new(&db);
    let mut duck = replicated(&db, &dir, "ducked").await;
    let mut flaky = replicated(&db, &dir, "flaky").await;
    let printed_publication = db.unique_name("pub_printed");
    let printed_slot = db.unique_name("slot_printed");
    db.execute(&format!(
        "CREATE TABLE printed (id int PRIMARY KEY, v text);
         CREATE PUBLICATION {printed_publication} FOR TABLE printed;"
    ))
    .await;
    let output = SharedOutput::default();
    let printed = DataPipeline::new(
        PostgresSource::new(db.config(), &printed_publication, &printed_slot),
        StdoutSink::with_writer(output.clone()),
        PipelineAction::Both,
    )
    .with_batch_config(test_batch_config());
    let missing = DataPipeline::new(
        PostgresSource::new(
            db.config(),
            "no_such_publication",
            db.unique_name("slot_missing"),
        ),
        StdoutSink::with_writer(Vec::new()),
        PipelineAction::Both,
    );

    // Hooks of `ducked`: the pre-hook counts, the post-hook keeps outcomes.
    let pre_runs = Arc::new(AtomicUsize::new(0));
    let outcomes: Arc<Mutex<Vec<Result<u64, ErrorKind>>>> = Arc::default();
    let (pre, post) = (pre_runs.clone(), outcomes.clone());
    let manager = PipelineManager::new(10);
    manager
        .add(
            ManagedPipeline::new("ducked", duck.pipeline.take().unwrap())
                .with_pre_hook(move |name| {
                    assert_eq!(name, "ducked");
                    pre.fetch_add(1, Ordering::SeqCst);
                    async { Ok(()) }.boxed()
                })
                .with_post_hook(move |_, outcome| {
                    post.lock().unwrap().push(
                        outcome
                            .map(|report| report.tables_copied)
                            .map_err(|e| e.kind()),
                    );
                    async {}.boxed()
                }),
        )
        .unwrap();
    manager
        .add(ManagedPipeline::new("printed", printed))
        .unwrap();
    manager
        .add(ManagedPipeline::new("missing", missing))
        .unwrap();
    manager.add(ManagedPipeline::new("panics", Panics)).unwrap();
    manager
        .add(
            ManagedPipeline::new("hook_fails", NeverRuns).with_pre_hook(|_| {
                async { Err(Error::new(ErrorKind::Config, "the target is not ready")) }.boxed()
            }),
        )
        .unwrap();
    manager
        .add(
            ManagedPipeline::new(
                "flaky",
                FailsFirst {
                    failures: 2,
                    run: flaky.pipeline.take().unwrap(),
                },
            )
            .with_restart_policy(RestartPolicy {
                max_restarts: 3,
                delay: Duration::from_millis(300),
            }),
        )
        .unwrap();
    let mut gives_up = replicated(&db, &dir, "gives_up").await;
    manager
        .add(ManagedPipeline::new(
            "gives_up",
            FailsFirst {
                failures: 1,
                run: gives_up.pipeline.take().unwrap(),
            },
        ))
        .unwrap();
    for (name, _) in manager.statuses() {
        manager.start(&name).await.unwrap();
    }

    // Each failure is its pipeline's own, with its cause.
    let failed = |status: &PipelineStatus| matches!(status, PipelineStatus::Failed(_));
    let error_of = |status: PipelineStatus| match status {
        PipelineStatus::Failed(error) => error,
        other => panic!("not failed: {other}"),
    };
    let missing_error = error_of(wait_status(&manager, "missing", "failed", failed).await);
    assert_eq!(missing_error.kind(), ErrorKind::SourceSetup);
    assert!(
        missing_error.to_string().contains("no_such_publication"),
        "{missing_error}"
    );
    let panic_error = error_of(wait_status(&manager, "panics", "failed", failed).await);
    assert_eq!(panic_error.kind(), ErrorKind::Internal);
    assert!(panic_error.to_string().contains("panics"), "{panic_error}");
    let hook_error = error_of(wait_status(&manager, "hook_fails", "failed", failed).await);
    assert!(
        hook_error.to_string().contains("pre-hook") && hook_error.to_string().contains("not ready"),
        "{hook_error}"
    );
    // Without a restart policy a retryable failure fails the pipeline; with
    // one, it restarts and runs.
    let gave_up = error_of(wait_status(&manager, "gives_up", "failed", failed).await);
    assert_eq!(gave_up.kind(), ErrorKind::Connection);
    wait_status(&manager, "flaky", "restarting", |s| {
        matches!(s, PipelineStatus::Restarting { .. })
    })
    .await;
    wait_status(&manager, "flaky", "running", running).await;
    converged(&db, &flaky).await;

    // The others run on: DuckDB and stdout get the changes.
    db.execute(
        "INSERT INTO ducked VALUES (100, 'streamed');
         INSERT INTO printed VALUES (1, 'printed-marker-1');",
    )
    .await;
    converged(&db, &duck).await;
    let start = Instant::now();
    while !output.text().contains("printed-marker-1") {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the stdout pipeline did not print the insert within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Stopping one leaves the others running.
    within("stop", manager.stop("printed")).await.unwrap();
    assert!(matches!(
        manager.status("printed"),
        Some(PipelineStatus::Stopped)
    ));
    wait_slot_state(&db, &printed_slot, false).await;
    db.execute(
        "INSERT INTO ducked VALUES (101, 'after the stop');
         INSERT INTO printed VALUES (2, 'printed-marker-2');",
    )
    .await;
    converged(&db, &duck).await;
    assert!(matches!(
        manager.status("ducked"),
        Some(PipelineStatus::Running)
    ));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !output.text().contains("printed-marker-2"),
        "a stopped pipeline printed"
    );

    // A failed pipeline starts again on request.
    manager.start("gives_up").await.unwrap();
    wait_status(&manager, "gives_up", "running", running).await;
    converged(&db, &gives_up).await;

    // A removed pipeline is stopped and forgotten.
    within("remove", manager.remove("gives_up")).await.unwrap();
    assert!(manager.status("gives_up").is_none());
    assert_eq!(
        manager.start("gives_up").await.unwrap_err().kind(),
        ErrorKind::Config
    );

    within("pause", manager.pause("ducked")).await.unwrap();
    assert_eq!(pre_runs.load(Ordering::SeqCst), 1);
    assert_eq!(*outcomes.lock().unwrap(), vec![Ok(1)]);
    within("shutdown", manager.shutdown()).await;
    assert!(matches!(
        manager.status("ducked"),
        Some(PipelineStatus::Paused)
    ));
}
