//! [`PipelinePhase`]: what a running pipeline is doing, for health checks.

/// The phase of a [`DataPipeline`](super::DataPipeline) run, published on
/// the watch channel of [`DataPipeline::phase`](super::DataPipeline::phase).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PipelinePhase {
    /// Not started, or reading the sink's state and preparing the source.
    Starting,
    /// Copying tables (backfill).
    Copying,
    /// Streaming changes: the change stream is open.
    Streaming,
    /// Pausing and starting again after a failure of the source or sink.
    Recovering,
    /// The run returned (done, cancelled or failed).
    Stopped,
}

impl PipelinePhase {
    /// A short name: `starting`, `copying`, `streaming`, `recovering` or
    /// `stopped`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Starting => "starting",
            Self::Copying => "copying",
            Self::Streaming => "streaming",
            Self::Recovering => "recovering",
            Self::Stopped => "stopped",
        }
    }
}
