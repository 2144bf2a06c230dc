//! Benchmarks of pg_replicate; each benchmark is a file in this folder.
