//! Files replaced atomically and durably: a crash leaves either the old
//! content or the new one, never a mix, and what was renamed stays renamed.

use std::fs::{self, File};
use std::io::Write;
use std::path::Path;

use crate::{Error, ErrorKind, Result};

/// Replaces `path` with `bytes`: written to a temporary file beside it,
/// synced, renamed over `path`, and the directory synced.
pub(super) fn replace_file(path: &Path, bytes: &[u8]) -> Result<()> {
    let temporary = path.with_extension("json.tmp");
    let mut file = File::create(&temporary).map_err(|e| io_error("create", &temporary, e))?;
    file.write_all(bytes)
        .map_err(|e| io_error("write", &temporary, e))?;
    file.sync_all()
        .map_err(|e| io_error("sync", &temporary, e))?;
    drop(file);
    rename(&temporary, path)
}

/// Renames `from` to `to` and syncs the directory of `to` (and of `from`
/// when it is another one).
pub(super) fn rename(from: &Path, to: &Path) -> Result<()> {
    fs::rename(from, to).map_err(|e| io_error("rename into place", to, e))?;
    if let Some(dir) = to.parent() {
        sync_dir(dir)?;
    }
    match from.parent() {
        Some(dir) if Some(dir) != to.parent() => sync_dir(dir),
        _ => Ok(()),
    }
}

/// Syncs a directory's entries to disk.
pub(super) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_error("sync the directory", dir, e))
}

/// Creates `dir` (and its parents) when missing.
pub(super) fn create_dir(dir: &Path) -> Result<()> {
    fs::create_dir_all(dir).map_err(|e| io_error("create the directory", dir, e))
}

/// A failed file operation `what` on `path`, of kind [`ErrorKind::Io`].
pub(super) fn io_error(what: &str, path: &Path, error: std::io::Error) -> Error {
    Error::with_source(
        ErrorKind::Io,
        format!(
            "the files sink could not {what} {}: check that the directory exists, is writable \
             and has space",
            path.display()
        ),
        error,
    )
}
