//! DuckDB files that must not be written: locked by another process, or
//! holding the replica of another publication/slot.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use pg_replicate::sinks::duckdb::{DuckDbSink, DuckDbSinkConfig};
use pg_replicate::ErrorKind;

use crate::duckdb_common::*;
use crate::support::fresh_database;

/// Environment variable naming the file [`hold_duckdb_lock`] opens.
const HOLD_ENV: &str = "PG_REPLICATE_TEST_HOLD_DUCKDB";

/// Not a test of its own: the child process of
/// [`a_file_locked_by_another_process_is_refused`] (this test binary run
/// again with only this test). Opens the file, says so, and keeps it open
/// until its standard input closes.
#[test]
#[ignore = "helper process of a_file_locked_by_another_process_is_refused"]
fn hold_duckdb_lock() {
    let Ok(path) = std::env::var(HOLD_ENV) else {
        return;
    };
    let _sink = DuckDbSink::open(DuckDbSinkConfig::new(path)).unwrap();
    println!("LOCKED");
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
}

/// Kills the helper process if the test fails before it ends.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn a_file_locked_by_another_process_is_refused() {
    let dir = std::env::temp_dir().join(format!("pgr-duck-lock-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("locked.duckdb");
    let child = Command::new(std::env::current_exe().unwrap())
        .args([
            "duckdb_files::hold_duckdb_lock",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(HOLD_ENV, &path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = KillOnDrop(child);
    let mut out = BufReader::new(child.0.stdout.take().unwrap());
    let mut line = String::new();
    loop {
        line.clear();
        assert!(
            out.read_line(&mut line).unwrap() > 0,
            "the helper process ended without locking"
        );
        // The test harness prints the test name on the same line.
        if line.contains("LOCKED") {
            break;
        }
    }

    let error = DuckDbSink::open(DuckDbSinkConfig::new(&path))
        .err()
        .expect("the file is locked");
    assert_eq!(error.kind(), ErrorKind::Sink);
    assert!(
        error.message().contains("in use by another process"),
        "{error}"
    );

    drop(child.0.stdin.take());
    child.0.wait().unwrap();
    // Free again: it opens.
    DuckDbSink::open(DuckDbSinkConfig::new(&path)).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_file_of_another_publication_or_slot_is_refused_and_kept() {
    let db = fresh_database("duck_identity").await;
    let publication = db.unique_name("pub");
    let slot = db.unique_name("slot");
    let other_slot = db.unique_name("slot");
    let dir = DuckDir::new(&db);
    let path = dir.file("id.duckdb");
    db.execute(&format!(
        "CREATE TABLE t (id int PRIMARY KEY, v text);
         INSERT INTO t SELECT g, 'v' FROM generate_series(1, 10) g;
         CREATE PUBLICATION {publication} FOR TABLE t;"
    ))
    .await;
    let (running, reader) =
        start_into(&db, &publication, &slot, config(&path, &publication, &slot));
    wait_copied(&reader, 1).await;
    running.stop().await.unwrap();
    drop(reader);

    let error = DuckDbSink::open(config(&path, &publication, &other_slot))
        .err()
        .expect("another slot's file");
    assert_eq!(error.kind(), ErrorKind::Config);
    assert!(
        error.message().contains(&format!("{publication}/{slot}"))
            && error.message().contains(&other_slot),
        "{error}"
    );

    // Untouched: the right identity resumes without copying again.
    let (running, reader) =
        start_into(&db, &publication, &slot, config(&path, &publication, &slot));
    db.execute("INSERT INTO t VALUES (11, 'new');").await;
    let cols = columns(&[("id", "int4"), ("v", "text")]);
    wait_duck_converged(&db, &reader, &[("t", "public.t", &cols)]).await;
    let report = running.stop().await.unwrap();
    assert_eq!(report.tables_copied, 0);
}
