//! Runnable example pipelines for pg_replicate; each example is a file in this folder.
