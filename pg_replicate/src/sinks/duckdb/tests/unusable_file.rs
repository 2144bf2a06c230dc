//! Paths a sink cannot use: a clear error, and nothing there overwritten.

use std::path::Path;
use std::process::Command;

use super::*;

fn refusal(path: &Path) -> crate::Error {
    match DuckDbSink::open(DuckDbSinkConfig::new(path)) {
        Ok(_) => panic!("{} was opened", path.display()),
        Err(error) => error,
    }
}

#[test]
fn a_file_that_is_not_duckdb_is_refused_and_left_as_it_was() {
    let file = TempFile::new("not-duckdb");
    // Larger than DuckDB's headers, so nothing is mistaken for a short file.
    let content: Vec<u8> = b"id,name\n1,alpha\n2,beta\n"
        .iter()
        .copied()
        .cycle()
        .take(64 * 1024)
        .collect();
    std::fs::write(&file.0, &content).unwrap();
    let error = refusal(&file.0);
    assert_eq!(error.kind(), crate::ErrorKind::Config, "{error}");
    let message = error.to_string();
    assert!(
        message.contains(&file.0.display().to_string()) && message.contains("DuckDB database"),
        "{message}"
    );
    assert_eq!(
        std::fs::read(&file.0).unwrap(),
        content,
        "the file was changed"
    );
    assert!(
        !file.0.with_extension("duckdb.wal").exists(),
        "a WAL was created beside it"
    );
}

/// Makes `path` unwritable for this process until dropped: read-only
/// permissions, and where they do not stop this process (root), the
/// immutable attribute.
struct Unwritable<'a> {
    path: &'a Path,
    immutable: bool,
}

impl<'a> Unwritable<'a> {
    fn new(path: &'a Path) -> Self {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o444)).unwrap();
        let immutable = std::fs::OpenOptions::new().append(true).open(path).is_ok();
        if immutable {
            let status = Command::new("chattr")
                .arg("+i")
                .arg(path)
                .status()
                .expect("chattr (e2fsprogs) makes a file unwritable for root");
            assert!(status.success(), "chattr +i {} failed", path.display());
        }
        Self { path, immutable }
    }
}

impl Drop for Unwritable<'_> {
    fn drop(&mut self) {
        if self.immutable {
            let _ = Command::new("chattr").arg("-i").arg(self.path).status();
        }
    }
}

#[test]
fn a_file_that_is_not_writable_is_refused_and_left_as_it_was() {
    let file = TempFile::new("unwritable");
    drop(DuckDbSink::open(DuckDbSinkConfig::new(&file.0)).unwrap());
    let content = std::fs::read(&file.0).unwrap();
    let error = {
        let _unwritable = Unwritable::new(&file.0);
        refusal(&file.0)
    };
    assert_eq!(error.kind(), crate::ErrorKind::Config, "{error}");
    let message = error.to_string();
    assert!(
        message.contains(&file.0.display().to_string())
            && message.contains("cannot be opened for writing"),
        "{message}"
    );
    assert_eq!(
        std::fs::read(&file.0).unwrap(),
        content,
        "the file was changed"
    );
}

#[test]
fn a_directory_or_a_missing_directory_is_refused() {
    let file = TempFile::new("paths");
    let dir = file.0.parent().unwrap().to_path_buf();
    let error = refusal(&dir);
    assert_eq!(error.kind(), crate::ErrorKind::Config, "{error}");
    assert!(error.to_string().contains("is a directory"), "{error}");

    let missing = dir.join("no-such-directory").join("x.duckdb");
    let error = refusal(&missing);
    assert_eq!(error.kind(), crate::ErrorKind::Config, "{error}");
    assert!(error.to_string().contains("not accessible"), "{error}");
    assert!(
        !missing.parent().unwrap().exists(),
        "the directory was created"
    );
}
