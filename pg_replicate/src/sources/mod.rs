//! Sources of data. (Being written.)
pub mod postgres;
