//! What the manager runs: a pipeline under a name, its hooks and its
//! restart policy.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::future::BoxFuture;
use tokio_util::sync::CancellationToken;

use crate::pipeline::{DataPipeline, PipelineReport};
use crate::sinks::Sink;
use crate::sources::Source;
use crate::{Error, Result};

/// A pipeline the manager can run again and again: each run goes until it
/// ends by itself, fails, or `cancel` fires (then it stores and confirms
/// what it received, and returns `Ok`).
#[async_trait]
pub trait ManagedRun: Send + 'static {
    /// Runs once, until the end, a failure, or `cancel`.
    async fn run(&mut self, cancel: CancellationToken) -> Result<PipelineReport>;

    /// Takes the name the manager runs it under (for its metrics).
    fn set_name(&mut self, _name: &str) {}
}

#[async_trait]
impl<S, K> ManagedRun for DataPipeline<S, K>
where
    S: Source + 'static,
    K: Sink + 'static,
{
    async fn run(&mut self, cancel: CancellationToken) -> Result<PipelineReport> {
        // A paused pipeline starts again with a token that has not fired.
        self.cancel = cancel;
        self.start().await
    }

    fn set_name(&mut self, name: &str) {
        self.metrics = super::super::metrics::PipelineMetrics::new(name);
    }
}

/// Runs before each run of a pipeline (after it got its place under the
/// concurrency limit), with the pipeline's name; an error fails the run.
pub type PreHook = Arc<dyn Fn(String) -> BoxFuture<'static, Result<()>> + Send + Sync>;

/// Runs after each run of a pipeline, with its name and how the run ended.
pub type PostHook = Arc<
    dyn Fn(String, std::result::Result<PipelineReport, Arc<Error>>) -> BoxFuture<'static, ()>
        + Send
        + Sync,
>;

/// Whether the manager starts a failed pipeline again by itself.
///
/// A [`DataPipeline`] already rides through passing faults (its
/// [`RetryConfig`](crate::pipeline::RetryConfig)); this policy covers a
/// run that gave up on a retryable error anyway (for example a sink down
/// for longer than `give_up_after`). Permanent errors (configuration,
/// schema, authentication) are never restarted: the pipeline stays
/// [`Failed`](super::PipelineStatus::Failed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RestartPolicy {
    /// Restarts in a row at most (a run that ends by itself or on request
    /// resets the count).
    pub max_restarts: u32,
    /// The pause before each restart.
    pub delay: Duration,
}

impl RestartPolicy {
    /// Never restarts (the default).
    pub fn never() -> Self {
        Self {
            max_restarts: 0,
            delay: Duration::ZERO,
        }
    }
}

impl Default for RestartPolicy {
    fn default() -> Self {
        Self::never()
    }
}

/// A pipeline to hand to a [`PipelineManager`](super::PipelineManager):
/// its name, the pipeline, its hooks and its restart policy.
pub struct ManagedPipeline {
    pub(super) name: String,
    pub(super) run: Box<dyn ManagedRun>,
    pub(super) pre_hook: Option<PreHook>,
    pub(super) post_hook: Option<PostHook>,
    pub(super) restart: RestartPolicy,
}

impl ManagedPipeline {
    /// `run` (usually a [`DataPipeline`]) under `name`, unique within a
    /// manager.
    pub fn new(name: impl Into<String>, mut run: impl ManagedRun) -> Self {
        let name = name.into();
        run.set_name(&name);
        Self {
            name,
            run: Box::new(run),
            pre_hook: None,
            post_hook: None,
            restart: RestartPolicy::never(),
        }
    }

    /// Runs `hook` before each run; when it fails, the run does not happen
    /// and the pipeline is failed with its error.
    pub fn with_pre_hook<F>(mut self, hook: F) -> Self
    where
        F: Fn(String) -> BoxFuture<'static, Result<()>> + Send + Sync + 'static,
    {
        self.pre_hook = Some(Arc::new(hook));
        self
    }

    /// Runs `hook` after each run, however it ended.
    pub fn with_post_hook<F>(mut self, hook: F) -> Self
    where
        F: Fn(String, std::result::Result<PipelineReport, Arc<Error>>) -> BoxFuture<'static, ()>
            + Send
            + Sync
            + 'static,
    {
        self.post_hook = Some(Arc::new(hook));
        self
    }

    /// Sets whether a failed run starts again by itself ([`RestartPolicy`]).
    pub fn with_restart_policy(mut self, restart: RestartPolicy) -> Self {
        self.restart = restart;
        self
    }

    /// The pipeline's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}
