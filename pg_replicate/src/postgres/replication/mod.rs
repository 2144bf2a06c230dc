//! The replication connection. (Being written.)
