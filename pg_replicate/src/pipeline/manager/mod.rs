//! [`PipelineManager`]: many pipelines in one process, under a concurrency
//! limit, each started, paused and stopped by name.
//!
//! Every start of a pipeline gets a driver task: it waits for a place
//! under the limit, runs the pre-hook and the pipeline (in a task of its
//! own, so a panic fails only that pipeline), runs the post-hook, and
//! records how the run ended. Pausing or stopping cancels the run
//! gracefully: the pipeline stores and confirms what it received, and its
//! slot stays, so a later start resumes without loss.

mod spec;
mod status;

pub use spec::{ManagedPipeline, ManagedRun, PostHook, PreHook, RestartPolicy};
pub use status::PipelineStatus;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::pipeline::PipelineReport;
use crate::{Error, ErrorKind, Result};

/// Runs named pipelines, at most `max_running` at a time.
///
/// Dropping the manager cancels every run gracefully without waiting for
/// them; [`shutdown`](Self::shutdown) waits.
pub struct PipelineManager {
    inner: Arc<Inner>,
}

struct Inner {
    limit: Arc<Semaphore>,
    pipelines: Mutex<HashMap<String, Entry>>,
}

/// One pipeline: its status, what runs it, and its current run.
struct Entry {
    status: PipelineStatus,
    /// The state a run cancelled on request ends in (paused or stopped).
    requested_end: Option<PipelineStatus>,
    shared: Arc<Shared>,
    run: Option<ActiveRun>,
}

/// What every run of a pipeline uses.
struct Shared {
    run: tokio::sync::Mutex<Box<dyn ManagedRun>>,
    pre_hook: Option<PreHook>,
    post_hook: Option<PostHook>,
    restart: RestartPolicy,
}

struct ActiveRun {
    cancel: CancellationToken,
    driver: JoinHandle<()>,
}

impl ActiveRun {
    /// Whether this run is going on and nobody asked it to end.
    fn is_live(&self) -> bool {
        !self.driver.is_finished() && !self.cancel.is_cancelled()
    }
}

impl PipelineManager {
    /// A manager running at most `max_running` pipelines at a time (at
    /// least 1); the others wait in [`PipelineStatus::Waiting`].
    pub fn new(max_running: usize) -> Self {
        Self {
            inner: Arc::new(Inner {
                limit: Arc::new(Semaphore::new(max_running.max(1))),
                pipelines: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Adds `pipeline`, not started ([`PipelineStatus::Idle`]). Fails with
    /// [`ErrorKind::Config`] when the name is taken.
    pub fn add(&self, pipeline: ManagedPipeline) -> Result<()> {
        let mut pipelines = self.inner.lock();
        if pipelines.contains_key(&pipeline.name) {
            return Err(Error::new(
                ErrorKind::Config,
                format!(
                    "a pipeline named `{}` is already managed; give each pipeline its own name",
                    pipeline.name
                ),
            ));
        }
        let shared = Arc::new(Shared {
            run: tokio::sync::Mutex::new(pipeline.run),
            pre_hook: pipeline.pre_hook,
            post_hook: pipeline.post_hook,
            restart: pipeline.restart,
        });
        pipelines.insert(
            pipeline.name,
            Entry {
                status: PipelineStatus::Idle,
                requested_end: None,
                shared,
                run: None,
            },
        );
        Ok(())
    }

    /// Starts the pipeline `name` (a pipeline paused, stopped, finished or
    /// failed starts again; one already running is left alone). It runs as
    /// soon as there is a place under the limit.
    pub async fn start(&self, name: &str) -> Result<()> {
        // A run still ending (paused or stopped meanwhile) ends first.
        let ending = {
            let mut pipelines = self.inner.lock();
            let entry = entry(&mut pipelines, name)?;
            match &entry.run {
                Some(run) if run.is_live() => return Ok(()),
                _ => entry.run.take(),
            }
        };
        if let Some(run) = ending {
            wait_driver(name, run.driver).await;
        }
        let mut pipelines = self.inner.lock();
        let entry = entry(&mut pipelines, name)?;
        if entry.run.as_ref().is_some_and(ActiveRun::is_live) {
            return Ok(());
        }
        let cancel = CancellationToken::new();
        entry.requested_end = None;
        entry.status = PipelineStatus::Waiting;
        let driver = tokio::spawn(drive(
            self.inner.clone(),
            name.to_owned(),
            entry.shared.clone(),
            cancel.clone(),
        ));
        entry.run = Some(ActiveRun { cancel, driver });
        info!(pipeline = name, "pipeline started");
        Ok(())
    }

    /// Pauses the pipeline `name` and returns once its run has ended: it
    /// stored and confirmed what it received, and keeps its slot.
    pub async fn pause(&self, name: &str) -> Result<()> {
        self.end(name, PipelineStatus::Paused).await
    }

    /// Stops the pipeline `name` like [`pause`](Self::pause), leaving it
    /// [`PipelineStatus::Stopped`].
    pub async fn stop(&self, name: &str) -> Result<()> {
        self.end(name, PipelineStatus::Stopped).await
    }

    /// Stops the pipeline `name` and forgets it.
    pub async fn remove(&self, name: &str) -> Result<()> {
        self.stop(name).await?;
        self.inner.lock().remove(name);
        Ok(())
    }

    /// Stops every pipeline gracefully and waits until all runs ended.
    pub async fn shutdown(&self) {
        let drivers: Vec<(String, JoinHandle<()>)> = {
            let mut pipelines = self.inner.lock();
            pipelines
                .iter_mut()
                .filter_map(|(name, entry)| {
                    let run = entry.run.take()?;
                    if entry.status.is_active() {
                        entry.requested_end = Some(PipelineStatus::Stopped);
                    }
                    run.cancel.cancel();
                    Some((name.clone(), run.driver))
                })
                .collect()
        };
        for (name, driver) in drivers {
            wait_driver(&name, driver).await;
        }
    }

    /// The status of the pipeline `name`, if it is managed.
    pub fn status(&self, name: &str) -> Option<PipelineStatus> {
        self.inner.lock().get(name).map(|e| e.status.clone())
    }

    /// Every managed pipeline's name and status, by name.
    pub fn statuses(&self) -> Vec<(String, PipelineStatus)> {
        let mut all: Vec<_> = self
            .inner
            .lock()
            .iter()
            .map(|(name, entry)| (name.clone(), entry.status.clone()))
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    /// Ends the run of `name` (if any) in the state `end`.
    async fn end(&self, name: &str, end: PipelineStatus) -> Result<()> {
        let run = {
            let mut pipelines = self.inner.lock();
            let entry = entry(&mut pipelines, name)?;
            match entry.run.take() {
                Some(run) if !run.driver.is_finished() => {
                    entry.requested_end = Some(end);
                    run.cancel.cancel();
                    Some(run)
                }
                _ => {
                    // Nothing runs: the pipeline just takes the state, so a
                    // start request seen later is the only thing that runs it.
                    entry.status = end;
                    None
                }
            }
        };
        if let Some(run) = run {
            info!(pipeline = name, "pipeline ending on request");
            wait_driver(name, run.driver).await;
        }
        Ok(())
    }
}

impl Drop for PipelineManager {
    fn drop(&mut self) {
        for entry in self.inner.lock().values() {
            if let Some(run) = &entry.run {
                run.cancel.cancel();
            }
        }
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Entry>> {
        // A panic while holding the lock leaves plain data behind.
        self.pipelines.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set(&self, name: &str, status: PipelineStatus) {
        if let Some(entry) = self.lock().get_mut(name) {
            entry.status = status;
        }
    }

    /// The run ended because it was asked to: the state asked for.
    fn end_on_request(&self, name: &str) {
        if let Some(entry) = self.lock().get_mut(name) {
            entry.status = entry
                .requested_end
                .take()
                .unwrap_or(PipelineStatus::Stopped);
        }
    }
}

fn entry<'a>(pipelines: &'a mut HashMap<String, Entry>, name: &str) -> Result<&'a mut Entry> {
    pipelines.get_mut(name).ok_or_else(|| {
        Error::new(
            ErrorKind::Config,
            format!("no pipeline named `{name}` is managed; add it first"),
        )
    })
}

async fn wait_driver(name: &str, driver: JoinHandle<()>) {
    if let Err(error) = driver.await {
        warn!(pipeline = name, %error, "the pipeline's driver task failed");
    }
}

/// One start of a pipeline: waits for a place, runs (restarting per the
/// policy), and records how it ended.
async fn drive(inner: Arc<Inner>, name: String, shared: Arc<Shared>, cancel: CancellationToken) {
    let mut restarts = 0u32;
    loop {
        inner.set(&name, PipelineStatus::Waiting);
        let place = tokio::select! {
            biased;
            _ = cancel.cancelled() => None,
            place = inner.limit.clone().acquire_owned() => place.ok(),
        };
        let Some(place) = place else {
            inner.end_on_request(&name);
            return;
        };
        inner.set(&name, PipelineStatus::Running);
        let outcome = run_once(&name, &shared, cancel.clone()).await;
        if let Some(hook) = &shared.post_hook {
            // In a task of its own, so a panicking hook fails nothing else.
            if let Err(error) = tokio::spawn(hook(name.clone(), outcome.clone())).await {
                warn!(pipeline = %name, %error, "the pipeline's post-hook panicked");
            }
        }
        drop(place);
        let error = match outcome {
            Ok(_) if cancel.is_cancelled() => {
                inner.end_on_request(&name);
                return;
            }
            Ok(report) => {
                info!(pipeline = %name, "pipeline finished");
                inner.set(&name, PipelineStatus::Finished(report));
                return;
            }
            Err(error) => error,
        };
        let restart = !cancel.is_cancelled()
            && error.is_retryable()
            && restarts < shared.restart.max_restarts;
        if !restart {
            warn!(pipeline = %name, %error, "pipeline failed");
            inner.set(&name, PipelineStatus::Failed(error));
            return;
        }
        restarts += 1;
        warn!(pipeline = %name, %error, attempt = restarts, "pipeline failed; restarting");
        inner.set(
            &name,
            PipelineStatus::Restarting {
                attempt: restarts,
                error,
            },
        );
        tokio::select! {
            biased;
            _ = cancel.cancelled() => {
                inner.end_on_request(&name);
                return;
            }
            _ = tokio::time::sleep(shared.restart.delay) => {}
        }
    }
}

/// The pre-hook and one run, in a task of their own so a panic becomes
/// this pipeline's error.
async fn run_once(
    name: &str,
    shared: &Arc<Shared>,
    cancel: CancellationToken,
) -> std::result::Result<PipelineReport, Arc<Error>> {
    let task_shared = shared.clone();
    let task_name = name.to_owned();
    let task = tokio::spawn(async move {
        if let Some(hook) = &task_shared.pre_hook {
            hook(task_name.clone())
                .await
                .map_err(|e| e.context(format!("the pre-hook of pipeline `{task_name}`")))?;
        }
        task_shared.run.lock().await.run(cancel).await
    });
    match task.await {
        Ok(result) => result.map_err(Arc::new),
        Err(error) => Err(Arc::new(Error::new(
            ErrorKind::Internal,
            format!("pipeline `{name}` panicked: {error}"),
        ))),
    }
}
