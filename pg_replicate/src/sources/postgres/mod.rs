//! The Postgres source. (Being written.)
