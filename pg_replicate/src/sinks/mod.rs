//! Sinks. (Being written.)
pub mod stdout;
