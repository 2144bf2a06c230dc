//! What a managed pipeline is doing.

use std::fmt;
use std::sync::Arc;

use crate::pipeline::PipelineReport;
use crate::Error;

/// The state of one pipeline of a [`PipelineManager`](super::PipelineManager).
#[derive(Clone, Debug)]
pub enum PipelineStatus {
    /// Added and never started.
    Idle,
    /// Started, waiting for a free place under the manager's concurrency
    /// limit.
    Waiting,
    /// Its pre-hook or its run is going on.
    Running,
    /// Its run failed with a retryable error; it starts again after its
    /// [`RestartPolicy`](super::RestartPolicy)'s delay.
    Restarting {
        /// How many restarts this is, from 1.
        attempt: u32,
        /// The failure it restarts after.
        error: Arc<Error>,
    },
    /// Paused on request: it stored and confirmed what it received; its slot
    /// is kept, so starting it again resumes without loss.
    Paused,
    /// Stopped on request, like [`Paused`](Self::Paused).
    Stopped,
    /// The run ended by itself (a copy-only pipeline, or a stream that
    /// ended), with its counters.
    Finished(PipelineReport),
    /// The run, or its pre-hook, failed; the pipeline waits for a new start.
    Failed(Arc<Error>),
}

impl PipelineStatus {
    /// Whether a run is under way or about to be (waiting or restarting).
    pub fn is_active(&self) -> bool {
        matches!(
            self,
            Self::Waiting | Self::Running | Self::Restarting { .. }
        )
    }

    /// A short name of the state: `idle`, `waiting`, `running`,
    /// `restarting`, `paused`, `stopped`, `finished` or `failed`.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Idle => "idle",
            Self::Waiting => "waiting",
            Self::Running => "running",
            Self::Restarting { .. } => "restarting",
            Self::Paused => "paused",
            Self::Stopped => "stopped",
            Self::Finished(_) => "finished",
            Self::Failed(_) => "failed",
        }
    }
}

impl fmt::Display for PipelineStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Restarting { attempt, error } => {
                write!(f, "restarting (attempt {attempt}) after: {error}")
            }
            Self::Failed(error) => write!(f, "failed: {error}"),
            other => f.write_str(other.name()),
        }
    }
}
