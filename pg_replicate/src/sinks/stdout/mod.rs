//! The stdout sink. (Being written.)
