//! A throwaway PostgreSQL cluster started from the system's server binaries,
//! for tests, examples and benchmarks.
//!
//! [`ThrowawayCluster::start`] runs `initdb` in a fresh temporary directory,
//! configures the cluster for logical replication, starts it with `pg_ctl` on
//! a free TCP port of 127.0.0.1 (and a Unix socket inside the temporary
//! directory), and creates one login role per password authentication method
//! (see [`ThrowawayRole`]). Dropping the cluster stops the server
//! (`pg_ctl stop -m immediate`) and removes the directory.
//!
//! A cluster kept in a `static` is never dropped. For that case
//! [`ThrowawayOptions::stop_on_process_exit`] (on by default) starts a tiny
//! watchdog process (`sh`) that waits for its standard input to close — which
//! happens when the owning process ends in any way: normal exit, panic, abort
//! or `kill -9` — and then stops the server and removes the directory.
//!
//! Everything here is synchronous and uses only the standard library and
//! external programs: the PostgreSQL binaries (`initdb`, `pg_ctl`, `psql`),
//! `id`, `sh`, `openssl` (only when [`ThrowawayOptions::ssl`] is set) and, when
//! running as root, `runuser`.
//!
//! # Running as root
//!
//! `initdb` and `postgres` refuse to run as root. When this process runs as
//! root (`id -u` prints `0`), the temporary directory is handed to an
//! unprivileged OS user ([`ThrowawayOptions::os_user`], `postgres` by default,
//! which installing the `postgresql-15` package creates) and the server
//! programs run through `runuser -u <user> --`.
//!
//! # Security
//!
//! The role passwords are fixed and public ([`ThrowawayRole::password`]), local
//! (Unix socket) connections are trusted and durability is switched off
//! (`fsync=off`). The server listens on 127.0.0.1 only. Never keep data you
//! care about in a throwaway cluster.

use std::fmt::Write as _;
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};

use crate::error::{Error, ErrorKind, Result};
use crate::postgres::config::{PgConnectionConfig, SslMode};

mod conf;
mod os;
mod setup;

use conf::percent_encode;
use os::{
    clean_env, create_temp_dir, has_server_binaries, parse_version, run, running_as_root,
    ServerUser,
};

/// The address the server listens on.
const HOST: &str = "127.0.0.1";
/// How many free ports to try when another process grabs the chosen one
/// between choosing and binding it.
const PORT_ATTEMPTS: usize = 8;
/// Seconds `pg_ctl -w` waits for the server to accept connections.
const START_TIMEOUT_SECS: &str = "120";
/// Lines of the server log quoted in a start failure.
const LOG_TAIL_LINES: usize = 30;

/// Script of the process-exit watchdog. Arguments: the directory to remove,
/// then the command that stops the server. It ignores terminal signals (it
/// also runs in its own process group) so that Ctrl-C on the owning process
/// still lets it clean up, and acts once its stdin reaches end of file.
const WATCHDOG_SCRIPT: &str = r#"trap '' HUP INT QUIT TERM
dir=$1
shift
cat >/dev/null
"$@" >/dev/null 2>&1
rm -rf -- "$dir""#;

/// The login roles every throwaway cluster has, one per authentication method
/// that `pg_hba.conf` applies to TCP connections from 127.0.0.1. All of them
/// have `LOGIN REPLICATION`; the non-superusers are also members of
/// `pg_read_all_data` (PostgreSQL 14 and later), so they can copy any table.
/// Local (Unix socket) connections are trusted for every role.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ThrowawayRole {
    /// `postgres`, the superuser; `scram-sha-256` over TCP.
    Superuser,
    /// `pgr_md5`: password stored as an MD5 hash, `md5` over TCP.
    Md5,
    /// `pgr_password`: `password` (cleartext) over TCP.
    Password,
    /// `pgr_trust`: `trust` over TCP (no password asked).
    Trust,
    /// `pgr_scram`: `scram-sha-256` over TCP.
    Scram,
}

impl ThrowawayRole {
    /// Every role, superuser first.
    pub const ALL: [ThrowawayRole; 5] = [
        ThrowawayRole::Superuser,
        ThrowawayRole::Md5,
        ThrowawayRole::Password,
        ThrowawayRole::Trust,
        ThrowawayRole::Scram,
    ];

    /// The role's name.
    pub fn name(self) -> &'static str {
        match self {
            ThrowawayRole::Superuser => "postgres",
            ThrowawayRole::Md5 => "pgr_md5",
            ThrowawayRole::Password => "pgr_password",
            ThrowawayRole::Trust => "pgr_trust",
            ThrowawayRole::Scram => "pgr_scram",
        }
    }

    /// The role's (public, fixed) password.
    pub fn password(self) -> &'static str {
        match self {
            ThrowawayRole::Superuser => "pgr_superuser_secret",
            ThrowawayRole::Md5 => "pgr_md5_secret",
            ThrowawayRole::Password => "pgr_password_secret",
            ThrowawayRole::Trust => "pgr_trust_secret",
            ThrowawayRole::Scram => "pgr_scram_secret",
        }
    }

    /// The `pg_hba.conf` method used for this role's TCP connections.
    pub fn auth_method(self) -> &'static str {
        match self {
            ThrowawayRole::Superuser | ThrowawayRole::Scram => "scram-sha-256",
            ThrowawayRole::Md5 => "md5",
            ThrowawayRole::Password => "password",
            ThrowawayRole::Trust => "trust",
        }
    }

    /// The role called `name`, if it is one of these.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|role| role.name() == name)
    }
}

/// How [`ThrowawayCluster::restart`] stops the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShutdownMode {
    /// Disconnect clients and shut down cleanly.
    Fast,
    /// Stop at once, as in a crash; the next start recovers from the WAL.
    Immediate,
}

impl ShutdownMode {
    fn name(self) -> &'static str {
        match self {
            Self::Fast => "fast",
            Self::Immediate => "immediate",
        }
    }
}

/// How to set up a [`ThrowawayCluster`]. Start from `Default::default()`.
#[derive(Clone, Debug)]
pub struct ThrowawayOptions {
    /// `wal_level`; default `logical`.
    pub wal_level: String,
    /// Turn TLS on (`ssl=on`) with a self-signed CA and a server certificate
    /// for `localhost` and `127.0.0.1`, made with the `openssl` command; the
    /// CA certificate is at [`ThrowawayCluster::ca_cert_path`]. Default off.
    pub ssl: bool,
    /// `max_locks_per_transaction`; default 256 (tests and benchmarks with
    /// many tables need more than PostgreSQL's 64).
    pub max_locks_per_transaction: u32,
    /// Start a watchdog process that stops the server and removes its
    /// directory when this process exits, however it exits. Needed when the
    /// cluster lives in a `static` (statics are never dropped). Default on.
    pub stop_on_process_exit: bool,
    /// More `postgresql.conf` lines as `(name, value)`, written verbatim as
    /// `name = value` after the built-in settings, so they win. Quote string
    /// values yourself: `("work_mem".into(), "'64MB'".into())`.
    pub extra_settings: Vec<(String, String)>,
    /// Directory with `initdb`, `pg_ctl` and `postgres`; default: see
    /// [`ThrowawayCluster::find_bin_dir`].
    pub bin_dir: Option<PathBuf>,
    /// Unprivileged OS user that runs the server when this process runs as
    /// root; default `postgres`. Unused otherwise.
    pub os_user: String,
}

impl Default for ThrowawayOptions {
    fn default() -> Self {
        Self {
            wal_level: "logical".to_owned(),
            ssl: false,
            max_locks_per_transaction: 256,
            stop_on_process_exit: true,
            extra_settings: Vec::new(),
            bin_dir: None,
            os_user: "postgres".to_owned(),
        }
    }
}

/// The watchdog process and the write end of its stdin pipe. The pipe is
/// close-on-exec (as every descriptor Rust opens), so only this process holds
/// it: when this process ends, the watchdog reads end of file.
#[derive(Debug)]
struct Watchdog {
    child: Child,
    stdin: Option<ChildStdin>,
}

/// A running PostgreSQL server in a temporary directory; stopped and removed
/// on drop. See the [module documentation](self).
///
/// ```no_run
/// use pg_replicate::postgres::throwaway::{ThrowawayCluster, ThrowawayOptions, ThrowawayRole};
///
/// let cluster = ThrowawayCluster::start(ThrowawayOptions::default())?;
/// cluster.psql("postgres", "CREATE TABLE items (id int PRIMARY KEY, name text)")?;
/// let count = cluster.psql("postgres", "SELECT count(*) FROM items")?;
/// assert_eq!(count, "0");
/// // Options for the library's own connections (replication, COPY, queries):
/// let config = cluster.connection_config("postgres", ThrowawayRole::Superuser.name());
/// println!("connect with: psql {}", cluster.url("postgres", "postgres"));
/// # let _ = config;
/// # Ok::<(), pg_replicate::Error>(())
/// ```
#[derive(Debug)]
pub struct ThrowawayCluster {
    bin_dir: PathBuf,
    /// Temporary directory: holds `data/`, the log, the TLS files and the
    /// Unix socket.
    dir: PathBuf,
    data_dir: PathBuf,
    log_file: PathBuf,
    port: u16,
    ca_cert: Option<PathBuf>,
    /// OS user running the server programs (when this process is root).
    run_as: Option<String>,
    /// Whether the server may be running and must be stopped.
    running: bool,
    /// Whether `dir` still has to be removed.
    owns_dir: bool,
    watchdog: Option<Watchdog>,
}

impl ThrowawayCluster {
    /// Creates, configures and starts a cluster, then creates the
    /// [`ThrowawayRole`]s. Takes one to a few seconds. Whatever was created
    /// is removed again when this fails.
    pub fn start(options: ThrowawayOptions) -> Result<Self> {
        let bin_dir = match &options.bin_dir {
            Some(dir) if has_server_binaries(dir) => dir.clone(),
            Some(dir) => {
                return Err(Error::new(
                    ErrorKind::Config,
                    format!(
                        "{} has no initdb, pg_ctl and postgres; set ThrowawayOptions::bin_dir to \
                         the bin directory of a PostgreSQL server installation (for example \
                         /usr/lib/postgresql/15/bin) or leave it unset",
                        dir.display()
                    ),
                ))
            }
            None => Self::find_bin_dir()?,
        };
        let server_user = if running_as_root() {
            Some(ServerUser::lookup(&options.os_user)?)
        } else {
            None
        };
        let dir = create_temp_dir()?;
        let mut cluster = ThrowawayCluster {
            bin_dir,
            data_dir: dir.join("data"),
            log_file: dir.join("server.log"),
            dir,
            port: 0,
            ca_cert: None,
            run_as: server_user.as_ref().map(|user| user.name.clone()),
            running: false,
            owns_dir: true,
            watchdog: None,
        };
        // From here on, `cluster`'s Drop cleans up after any failure.
        if let Some(user) = &server_user {
            cluster.hand_dir_to(user)?;
        }
        if options.stop_on_process_exit {
            cluster.watchdog = Some(cluster.spawn_watchdog()?);
        }
        cluster.init_db()?;
        if options.ssl {
            cluster.ca_cert = Some(cluster.make_certificates()?);
        }
        cluster.write_config(&options)?;
        cluster.start_server()?;
        cluster.create_roles()?;
        Ok(cluster)
    }

    /// Restarts the server on the same port, cutting every connection:
    /// `Fast` shuts down cleanly (a checkpoint), `Immediate` like a crash
    /// (recovery from the WAL on start). Waits until it accepts
    /// connections again.
    pub fn restart(&self, mode: ShutdownMode) -> Result<()> {
        let mut cmd = self.server_command(&self.bin_dir.join("pg_ctl"));
        cmd.args(["restart", "-w", "-t", "60", "-m", mode.name(), "-D"])
            .arg(&self.data_dir)
            .arg("-l")
            .arg(&self.log_file);
        run(cmd, "pg_ctl restart").map(|_| ())
    }

    /// Finds the directory of the PostgreSQL server binaries: the
    /// environment variable `PG_BIN_DIR` if set, else `pg_config --bindir` if
    /// it has `initdb`, else the highest version's
    /// `/usr/lib/postgresql/<version>/bin` that has `initdb` (Debian and
    /// Ubuntu layout).
    pub fn find_bin_dir() -> Result<PathBuf> {
        if let Some(dir) = std::env::var_os("PG_BIN_DIR") {
            let dir = PathBuf::from(dir);
            if has_server_binaries(&dir) {
                return Ok(dir);
            }
            return Err(Error::new(
                ErrorKind::Config,
                format!(
                    "PG_BIN_DIR={} has no initdb, pg_ctl and postgres; point it at the bin \
                     directory of a PostgreSQL server installation (for example \
                     /usr/lib/postgresql/15/bin) or unset it",
                    dir.display()
                ),
            ));
        }
        if let Ok(output) = Command::new("pg_config")
            .arg("--bindir")
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
        {
            if output.status.success() {
                let dir = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
                if has_server_binaries(&dir) {
                    return Ok(dir);
                }
            }
        }
        let mut best: Option<(Vec<u32>, PathBuf)> = None;
        if let Ok(entries) = fs::read_dir("/usr/lib/postgresql") {
            for entry in entries.flatten() {
                let name = entry.file_name();
                let Some(version) = parse_version(&name.to_string_lossy()) else {
                    continue;
                };
                let bin = entry.path().join("bin");
                if has_server_binaries(&bin)
                    && best.as_ref().is_none_or(|(best, _)| version > *best)
                {
                    best = Some((version, bin));
                }
            }
        }
        best.map(|(_, dir)| dir).ok_or_else(|| {
            Error::new(
                ErrorKind::Config,
                "no PostgreSQL server binaries found (looked at $PG_BIN_DIR, `pg_config \
                 --bindir` and /usr/lib/postgresql/*/bin); install them, for example with \
                 `apt-get install postgresql-15` on Debian or Ubuntu, or set PG_BIN_DIR to the \
                 directory holding initdb, pg_ctl and postgres",
            )
        })
    }

    /// The address the server listens on: `127.0.0.1`.
    pub fn host(&self) -> &str {
        HOST
    }

    /// The server's TCP port (also the number in its Unix socket's name).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Directory holding the server's Unix socket (`.s.PGSQL.<port>`); use
    /// it as the host of a [`PgConnectionConfig`] to connect through it.
    pub fn socket_dir(&self) -> &Path {
        &self.dir
    }

    /// The data directory (`PGDATA`).
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The server log (warnings and errors only).
    pub fn log_file(&self) -> &Path {
        &self.log_file
    }

    /// The directory of the PostgreSQL binaries in use (`pg_recvlogical`,
    /// `pg_dump`, … are there too).
    pub fn bin_dir(&self) -> &Path {
        &self.bin_dir
    }

    /// PEM file of the CA that signed the server certificate, when the
    /// cluster runs with TLS; trust it for `verify-full` connections to
    /// `localhost` or `127.0.0.1`.
    pub fn ca_cert_path(&self) -> Option<&Path> {
        self.ca_cert.as_deref()
    }

    /// Connection options for `user` to `dbname` over TCP on 127.0.0.1,
    /// with the password filled in when `user` is a [`ThrowawayRole`].
    /// `ssl_mode` is `Prefer` (with the CA as `ssl_root_cert`, so switching
    /// to `VerifyFull` just works) when the cluster has TLS, `Disable`
    /// otherwise.
    pub fn connection_config(&self, dbname: &str, user: &str) -> PgConnectionConfig {
        PgConnectionConfig {
            host: HOST.to_owned(),
            port: self.port,
            dbname: dbname.to_owned(),
            username: user.to_owned(),
            password: ThrowawayRole::from_name(user).map(|role| role.password().to_owned()),
            ssl_mode: if self.ca_cert.is_some() {
                SslMode::Prefer
            } else {
                SslMode::Disable
            },
            ssl_root_cert: self.ca_cert.clone(),
            application_name: None,
        }
    }

    /// Connection options for `user` to `dbname` through the Unix socket
    /// (trusted: no password asked, no TLS).
    pub fn socket_connection_config(&self, dbname: &str, user: &str) -> PgConnectionConfig {
        PgConnectionConfig {
            host: self.dir.to_string_lossy().into_owned(),
            ssl_mode: SslMode::Disable,
            ssl_root_cert: None,
            application_name: None,
            ..self.connection_config(dbname, user)
        }
    }

    /// A libpq URL for `user` to `dbname` over TCP, with the password when
    /// `user` is a [`ThrowawayRole`]:
    /// `postgresql://user:password@127.0.0.1:port/dbname`.
    pub fn url(&self, dbname: &str, user: &str) -> String {
        let mut url = String::from("postgresql://");
        url.push_str(&percent_encode(user));
        if let Some(role) = ThrowawayRole::from_name(user) {
            url.push(':');
            url.push_str(&percent_encode(role.password()));
        }
        // Writing to a String cannot fail.
        let _ = write!(url, "@{HOST}:{}/{}", self.port, percent_encode(dbname));
        url
    }

    /// Runs `sql` (any number of statements, each in its own transaction
    /// unless the script says otherwise) with `psql` as the superuser through
    /// the Unix socket, stopping at the first error. Returns what the queries
    /// printed, unaligned and without headers (`psql -At`): one line per
    /// row, columns separated by `|`, without the final newline.
    pub fn psql(&self, dbname: &str, sql: &str) -> Result<String> {
        let mut cmd = Command::new(self.client_program("psql"));
        clean_env(&mut cmd);
        cmd.args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-A", "-t", "-h"])
            .arg(&self.dir)
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-U")
            .arg(ThrowawayRole::Superuser.name())
            .arg(format!("--dbname={dbname}"))
            .args(["-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(|e| {
            Error::with_source(
                ErrorKind::Io,
                format!(
                    "could not run {}; install the PostgreSQL client (package postgresql-client-15)",
                    self.client_program("psql").display()
                ),
                e,
            )
        })?;
        let stdin = child.stdin.take();
        let output = std::thread::scope(|scope| {
            // Feed the script from another thread so that a large output
            // cannot block psql while we are still writing.
            scope.spawn(move || {
                if let Some(mut stdin) = stdin {
                    // psql may exit early (connection failure); its error
                    // is reported below.
                    let _ = stdin.write_all(sql.as_bytes());
                }
            });
            child.wait_with_output()
        })
        .map_err(|e| Error::with_source(ErrorKind::Io, "could not wait for psql", e))?;
        if !output.status.success() {
            return Err(Error::new(
                ErrorKind::SourceSetup,
                format!(
                    "psql in database `{dbname}` of the throwaway cluster failed ({}): {}",
                    output.status,
                    String::from_utf8_lossy(&output.stderr).trim()
                ),
            ));
        }
        let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
        if text.ends_with('\n') {
            text.pop();
        }
        Ok(text)
    }

    /// Stops the server (`pg_ctl stop -m immediate`) and removes the
    /// directory, reporting failures (dropping does the same silently).
    pub fn stop(mut self) -> Result<()> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> Result<()> {
        let mut result = Ok(());
        if self.running {
            match self.stop_server() {
                Ok(()) => self.running = false,
                Err(e) => result = Err(e),
            }
        }
        // A server that could not be stopped keeps its directory: removing
        // the data directory under a running server would only hide it. The
        // watchdog (if any) still tries once more below.
        if self.owns_dir && !self.running {
            match fs::remove_dir_all(&self.dir) {
                Ok(()) => self.owns_dir = false,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => self.owns_dir = false,
                Err(e) => {
                    if result.is_ok() {
                        result = Err(Error::with_source(
                            ErrorKind::Io,
                            format!("could not remove {}", self.dir.display()),
                            e,
                        ));
                    }
                }
            }
        }
        if let Some(mut watchdog) = self.watchdog.take() {
            // Closing its stdin makes it stop the server (a no-op by now)
            // and remove the directory, then exit; reap it.
            drop(watchdog.stdin.take());
            let _ = watchdog.child.wait();
        }
        result
    }

    fn stop_server(&self) -> Result<()> {
        let mut cmd = self.server_command(&self.bin_dir.join("pg_ctl"));
        cmd.args(["stop", "-m", "immediate", "-w", "-D"])
            .arg(&self.data_dir);
        match run(cmd, "pg_ctl stop") {
            Ok(_) => Ok(()),
            // Not running any more (crashed, or stopped by someone else).
            Err(_) if !self.data_dir.join("postmaster.pid").exists() => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// A command running `program` as the server's OS user, in the
    /// temporary directory, without the caller's `PG*` variables.
    fn server_command(&self, program: &Path) -> Command {
        let mut cmd = match &self.run_as {
            Some(user) => {
                let mut cmd = Command::new("runuser");
                cmd.arg("-u").arg(user).arg("--").arg(program);
                cmd
            }
            None => Command::new(program),
        };
        clean_env(&mut cmd);
        cmd.current_dir(&self.dir);
        cmd
    }

    /// `name` from the bin directory, else from `PATH`.
    fn client_program(&self, name: &str) -> PathBuf {
        let path = self.bin_dir.join(name);
        if path.is_file() {
            path
        } else {
            PathBuf::from(name)
        }
    }
}

impl Drop for ThrowawayCluster {
    fn drop(&mut self) {
        if let Err(e) = self.shutdown() {
            tracing::warn!(error = %e, "could not stop the throwaway PostgreSQL cluster");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_round_trip_by_name() {
        for role in ThrowawayRole::ALL {
            assert_eq!(ThrowawayRole::from_name(role.name()), Some(role));
        }
        assert_eq!(ThrowawayRole::from_name("nobody"), None);
    }
}
