//! Operating-system chores of the throwaway cluster: who we are, which
//! user runs the server, temporary directories, free ports, running
//! programs.

use std::fs;
use std::net::TcpListener;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use super::HOST;
use crate::error::{Error, ErrorKind, Result};

/// The unprivileged OS user that runs the server when we are root.
pub(super) struct ServerUser {
    pub(super) name: String,
    pub(super) uid: u32,
    pub(super) gid: u32,
}

impl ServerUser {
    pub(super) fn lookup(name: &str) -> Result<Self> {
        let id = |flag: &str| -> Option<u32> {
            let output = Command::new("id")
                .arg(flag)
                .arg(name)
                .stdin(Stdio::null())
                .stderr(Stdio::null())
                .output()
                .ok()?;
            if !output.status.success() {
                return None;
            }
            String::from_utf8_lossy(&output.stdout).trim().parse().ok()
        };
        match (id("-u"), id("-g")) {
            (Some(uid), Some(gid)) if uid != 0 => Ok(Self {
                name: name.to_owned(),
                uid,
                gid,
            }),
            _ => Err(Error::new(
                ErrorKind::Config,
                format!(
                    "this process runs as root and PostgreSQL refuses to run as root, so the \
                     throwaway server runs as the OS user `{name}`, which does not exist (or is \
                     root); create it (installing postgresql-15 does, or `useradd --system \
                     --user-group {name}`), choose another with ThrowawayOptions::os_user, or \
                     run as a non-root user"
                ),
            )),
        }
    }
}

/// Whether this process runs as root, asked of `id -u` (environment
/// variables such as `USER` are not reliable).
pub(super) fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .map(|output| {
            output.status.success() && String::from_utf8_lossy(&output.stdout).trim() == "0"
        })
        .unwrap_or(false)
}

pub(super) fn has_server_binaries(dir: &Path) -> bool {
    ["initdb", "pg_ctl", "postgres"]
        .iter()
        .all(|name| dir.join(name).is_file())
}

/// `15` → `[15]`, `9.6` → `[9, 6]`; `None` for other names.
pub(super) fn parse_version(name: &str) -> Option<Vec<u32>> {
    name.split('.').map(|part| part.parse().ok()).collect()
}

/// Creates a new private directory under the system's temporary directory
/// (or `/tmp` when that path is too long for a Unix socket path).
pub(super) fn create_temp_dir() -> Result<PathBuf> {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let mut base = std::env::temp_dir();
    // `<base>/pg_replicate-<pid>-<n>-<nanos>/.s.PGSQL.<port>` must fit in
    // sun_path (108 bytes).
    if base.as_os_str().len() > 48 {
        base = PathBuf::from("/tmp");
    }
    let mut last_error = None;
    for _ in 0..100 {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let dir = base.join(format!(
            "pg_replicate-{}-{}-{nanos}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        match fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => last_error = Some(e),
            Err(e) => {
                return Err(Error::with_source(
                    ErrorKind::Io,
                    format!(
                        "could not create a directory in {}; set TMPDIR to a writable directory",
                        base.display()
                    ),
                    e,
                ))
            }
        }
    }
    Err(Error::new(
        ErrorKind::Io,
        format!(
            "could not create a fresh directory in {} ({last_error:?}); remove stale \
             pg_replicate-* directories there",
            base.display()
        ),
    ))
}

/// A port on 127.0.0.1 that was free a moment ago.
pub(super) fn free_port() -> Result<u16> {
    TcpListener::bind((HOST, 0))
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .map_err(|e| {
            Error::with_source(
                ErrorKind::Io,
                format!("could not bind a TCP port on {HOST} to find a free one"),
                e,
            )
        })
}

/// Removes the caller's libpq variables (`PGDATA`, `PGHOST`, `PGOPTIONS`,
/// …) that would redirect or change the programs we run, and asks for
/// English messages (start failures are recognized by their text).
pub(super) fn clean_env(cmd: &mut Command) {
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("PG") {
            cmd.env_remove(name);
        }
    }
    cmd.env("LC_ALL", "C");
}

/// Runs `cmd` with stdin closed and output captured; fails with the output
/// when it exits unsuccessfully.
pub(super) fn run(mut cmd: Command, what: &str) -> Result<Output> {
    cmd.stdin(Stdio::null());
    let output = cmd.output().map_err(|e| {
        Error::with_source(
            ErrorKind::Io,
            format!("could not run {what} ({:?})", cmd.get_program()),
            e,
        )
    })?;
    if output.status.success() {
        return Ok(output);
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let stdout = String::from_utf8_lossy(&output.stdout);
    Err(Error::new(
        ErrorKind::Io,
        format!(
            "{what} failed ({}): {}",
            output.status,
            [stderr.trim(), stdout.trim()]
                .iter()
                .filter(|s| !s.is_empty())
                .copied()
                .collect::<Vec<_>>()
                .join("\n")
        ),
    ))
}

pub(super) fn write_file(path: &Path, contents: &str) -> Result<()> {
    fs::write(path, contents).map_err(|e| {
        Error::with_source(
            ErrorKind::Io,
            format!("could not write {}", path.display()),
            e,
        )
    })
}

/// The file's text from byte `offset` on (empty when unreadable).
pub(super) fn read_from(path: &Path, offset: u64) -> String {
    let bytes = fs::read(path).unwrap_or_default();
    let start = usize::try_from(offset).unwrap_or(0).min(bytes.len());
    String::from_utf8_lossy(&bytes[start..]).into_owned()
}

pub(super) fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_order_numerically() {
        assert!(parse_version("15").unwrap() > parse_version("9.6").unwrap());
        assert_eq!(parse_version("main"), None);
    }

    #[test]
    fn tail_keeps_the_last_lines() {
        assert_eq!(tail("a\nb\nc\n", 2), "b\nc");
    }
}
