//! The change model. (Being written.)
