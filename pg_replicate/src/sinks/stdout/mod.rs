//! The stdout sink: every copied row and every change as one JSON object per
//! line (JSON Lines). See [`StdoutSink`] for the format.

pub mod json;
mod sink;

pub use sink::StdoutSink;
