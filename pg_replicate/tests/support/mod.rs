//! Shared harness of the integration tests (`tests/integration/`, one test
//! binary, so one PostgreSQL server per test process).
//!
//! - [`cluster()`] starts, the first time it is called, one
//!   [`ThrowawayCluster`] for the whole process: `wal_level=logical`, TLS on
//!   (CA at [`TestPg::ca_cert_path`]), the [`ThrowawayRole`]s for the
//!   authentication tests. Its watchdog stops it when the process exits.
//! - [`fresh_database`] gives every test its own database, dropped again
//!   (with the test's replication slots) when the [`TestDb`] is dropped, and
//!   [`TestDb::unique_name`] gives cluster-wide unique slot and publication
//!   names.
//!
//! # Using an existing server
//!
//! Set `PG_REPLICATE_TEST_PG` to `key=value` pairs separated by spaces
//! (values without spaces), for example
//! `PG_REPLICATE_TEST_PG='host=127.0.0.1 port=5432 user=postgres password=secret'`.
//! Keys: `host` (default 127.0.0.1; a path starting with `/` is a Unix socket
//! directory), `port` (5432), `user` (postgres), `password`, `dbname` (the
//! maintenance database, postgres), `sslmode` (disable, prefer, require,
//! verify-full), `sslrootcert`. The user must be a superuser (it creates and
//! drops databases), the server must run with `wal_level=logical` and have
//! free replication slots and WAL senders, and the harness needs `psql` (from
//! `PG_BIN_DIR`, the PostgreSQL bin directory or `PATH`) to drop databases.
//! Authentication tests need the roles `pgr_md5`, `pgr_password`,
//! `pgr_trust` and `pgr_scram` with the passwords of [`ThrowawayRole`] and
//! matching `pg_hba.conf` lines; when they are missing those tests are
//! skipped with a printed notice (see [`TestPg::auth_roles_available`]).

#![allow(dead_code)]

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use pg_replicate::postgres::throwaway::{ThrowawayCluster, ThrowawayOptions, ThrowawayRole};
use pg_replicate::postgres::{PgConnectionConfig, SslMode};

/// Environment variable naming an existing server to test against.
pub const EXISTING_SERVER_ENV: &str = "PG_REPLICATE_TEST_PG";

/// The server of this test process.
pub enum TestPg {
    /// A throwaway cluster started by this process.
    Throwaway(ThrowawayCluster),
    /// An existing server named by `PG_REPLICATE_TEST_PG`.
    Existing(ExistingServer),
}

/// An existing server named by `PG_REPLICATE_TEST_PG`.
pub struct ExistingServer {
    /// Superuser connection to the maintenance database.
    config: PgConnectionConfig,
    /// Whether the `pgr_*` roles exist (asked once).
    auth_roles: OnceLock<bool>,
}

/// The server of this test process, started on first use (see the module
/// documentation). Panics with the cause when it cannot be started.
pub fn cluster() -> &'static TestPg {
    static PG: OnceLock<TestPg> = OnceLock::new();
    PG.get_or_init(|| match std::env::var(EXISTING_SERVER_ENV) {
        Ok(spec) if !spec.trim().is_empty() => {
            let config =
                parse_server_spec(&spec).unwrap_or_else(|e| panic!("{EXISTING_SERVER_ENV}: {e}"));
            let pg = TestPg::Existing(ExistingServer {
                config,
                auth_roles: OnceLock::new(),
            });
            let wal_level = pg
                .psql(&pg.maintenance_db(), "SHOW wal_level")
                .unwrap_or_else(|e| panic!("{EXISTING_SERVER_ENV}: cannot query the server: {e}"));
            assert_eq!(
                wal_level, "logical",
                "{EXISTING_SERVER_ENV} names a server with wal_level={wal_level}; set \
                 wal_level=logical in its postgresql.conf and restart it"
            );
            pg
        }
        _ => {
            let options = ThrowawayOptions {
                ssl: true,
                ..ThrowawayOptions::default()
            };
            TestPg::Throwaway(ThrowawayCluster::start(options).unwrap_or_else(|e| {
                panic!(
                    "could not start the throwaway PostgreSQL cluster for the tests: {e}\n\
                     (or set {EXISTING_SERVER_ENV} to use an existing server)"
                )
            }))
        }
    })
}

impl TestPg {
    /// The throwaway cluster, unless testing against an existing server.
    pub fn throwaway(&self) -> Option<&ThrowawayCluster> {
        match self {
            TestPg::Throwaway(cluster) => Some(cluster),
            TestPg::Existing(_) => None,
        }
    }

    /// Name of the superuser the harness connects as.
    pub fn superuser(&self) -> String {
        match self {
            TestPg::Throwaway(_) => ThrowawayRole::Superuser.name().to_owned(),
            TestPg::Existing(server) => server.config.username.clone(),
        }
    }

    /// Database to connect to when not in a test database (`postgres`).
    pub fn maintenance_db(&self) -> String {
        match self {
            TestPg::Throwaway(_) => "postgres".to_owned(),
            TestPg::Existing(server) => server.config.dbname.clone(),
        }
    }

    /// Superuser connection options for `dbname` over TCP.
    pub fn config(&self, dbname: &str) -> PgConnectionConfig {
        self.config_as(dbname, &self.superuser())
    }

    /// Connection options for `user` to `dbname` over TCP; the password is
    /// filled in for the superuser and the [`ThrowawayRole`]s.
    pub fn config_as(&self, dbname: &str, user: &str) -> PgConnectionConfig {
        match self {
            TestPg::Throwaway(cluster) => cluster.connection_config(dbname, user),
            TestPg::Existing(server) => {
                let password = if user == server.config.username {
                    server.config.password.clone()
                } else {
                    ThrowawayRole::from_name(user).map(|role| role.password().to_owned())
                };
                PgConnectionConfig {
                    dbname: dbname.to_owned(),
                    username: user.to_owned(),
                    password,
                    ..server.config.clone()
                }
            }
        }
    }

    /// PEM file of the CA that signed the server's certificate, when known
    /// (tests of `verify-full` are skipped without it).
    pub fn ca_cert_path(&self) -> Option<&Path> {
        match self {
            TestPg::Throwaway(cluster) => cluster.ca_cert_path(),
            TestPg::Existing(server) => server.config.ssl_root_cert.as_deref(),
        }
    }

    /// Whether the `pgr_*` roles of [`ThrowawayRole`] exist. Always true for
    /// the throwaway cluster; on an existing server without them, prints a
    /// notice that `test_name` is skipped and returns false.
    pub fn auth_roles_available(&self, test_name: &str) -> bool {
        let TestPg::Existing(server) = self else {
            return true;
        };
        let available = *server.auth_roles.get_or_init(|| {
            let sql = "SELECT count(*) FROM pg_roles WHERE rolname IN \
                       ('pgr_md5', 'pgr_password', 'pgr_trust', 'pgr_scram')";
            self.psql(&self.maintenance_db(), sql).as_deref() == Ok("4")
        });
        if !available {
            eprintln!(
                "skipping {test_name}: {EXISTING_SERVER_ENV} names a server without the roles \
                 pgr_md5, pgr_password, pgr_trust and pgr_scram (see tests/support/mod.rs)"
            );
        }
        available
    }

    /// Runs `sql` in `dbname` as the superuser with `psql` (blocking);
    /// returns the unaligned, header-less output or psql's error text.
    pub fn psql(&self, dbname: &str, sql: &str) -> Result<String, String> {
        match self {
            TestPg::Throwaway(cluster) => cluster.psql(dbname, sql).map_err(|e| e.to_string()),
            TestPg::Existing(server) => server.psql(dbname, sql),
        }
    }
}

impl ExistingServer {
    fn psql(&self, dbname: &str, sql: &str) -> Result<String, String> {
        let psql = ThrowawayCluster::find_bin_dir()
            .map(|dir| dir.join("psql"))
            .ok()
            .filter(|path| path.is_file())
            .unwrap_or_else(|| PathBuf::from("psql"));
        let mut cmd = Command::new(&psql);
        cmd.args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-A", "-t", "-f", "-"])
            .arg("-h")
            .arg(&self.config.host)
            .arg("-p")
            .arg(self.config.port.to_string())
            .arg("-U")
            .arg(&self.config.username)
            .arg(format!("--dbname={dbname}"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(password) = &self.config.password {
            cmd.env("PGPASSWORD", password);
        }
        let sslmode = match self.config.ssl_mode {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyFull => "verify-full",
        };
        cmd.env("PGSSLMODE", sslmode);
        if let Some(root) = &self.config.ssl_root_cert {
            cmd.env("PGSSLROOTCERT", root);
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("could not run {}: {e}", psql.display()))?;
        let mut stdin = child.stdin.take();
        let output = std::thread::scope(|scope| {
            scope.spawn(move || {
                if let Some(stdin) = stdin.as_mut() {
                    let _ = stdin.write_all(sql.as_bytes());
                }
            });
            child.wait_with_output()
        })
        .map_err(|e| format!("could not wait for psql: {e}"))?;
        if !output.status.success() {
            return Err(String::from_utf8_lossy(&output.stderr).trim().to_owned());
        }
        Ok(String::from_utf8_lossy(&output.stdout)
            .trim_end_matches('\n')
            .to_owned())
    }
}

/// Parses the `key=value ...` format of `PG_REPLICATE_TEST_PG`.
pub fn parse_server_spec(spec: &str) -> Result<PgConnectionConfig, String> {
    let mut config = PgConnectionConfig {
        host: "127.0.0.1".to_owned(),
        port: 5432,
        dbname: "postgres".to_owned(),
        username: "postgres".to_owned(),
        password: None,
        ssl_mode: SslMode::Prefer,
        ssl_root_cert: None,
        application_name: None,
    };
    for pair in spec.split_whitespace() {
        let (key, value) = pair
            .split_once('=')
            .ok_or_else(|| format!("`{pair}` is not key=value"))?;
        match key {
            "host" => config.host = value.to_owned(),
            "port" => {
                config.port = value
                    .parse()
                    .map_err(|_| format!("port `{value}` is not a number"))?
            }
            "user" => config.username = value.to_owned(),
            "password" => config.password = Some(value.to_owned()),
            "dbname" => config.dbname = value.to_owned(),
            "sslmode" => config.ssl_mode = value.parse()?,
            "sslrootcert" => config.ssl_root_cert = Some(PathBuf::from(value)),
            other => {
                return Err(format!(
                    "unknown key `{other}`; use host, port, user, password, dbname, sslmode, \
                     sslrootcert"
                ))
            }
        }
    }
    Ok(config)
}

/// Opens a plain (no TLS) tokio-postgres connection described by `config`
/// and drives it on the current runtime.
pub async fn connect(
    config: &PgConnectionConfig,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let mut pg = tokio_postgres::Config::new();
    pg.host(&config.host)
        .port(config.port)
        .user(&config.username)
        .dbname(&config.dbname)
        .ssl_mode(tokio_postgres::config::SslMode::Disable);
    if let Some(password) = &config.password {
        pg.password(password);
    }
    let (client, connection) = pg.connect(tokio_postgres::NoTls).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

/// A database of its own for one test; dropped (with its replication slots
/// and the slots named by [`TestDb::unique_name`]) when this is dropped.
pub struct TestDb {
    name: String,
    pg: &'static TestPg,
    /// `<pid>_<n>`: makes names unique across the cluster.
    suffix: String,
    names: Mutex<Vec<String>>,
    admin: tokio::sync::OnceCell<tokio_postgres::Client>,
}

/// Creates a database named after `test_name`, this process and a counter.
pub async fn fresh_database(test_name: &str) -> TestDb {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let pg = cluster();
    let suffix = format!(
        "{}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    );
    let name = format!("t_{}_{suffix}", identifier_part(test_name, 40));
    let admin = connect(&pg.config(&pg.maintenance_db()))
        .await
        .unwrap_or_else(|e| panic!("cannot connect to the test server: {e}"));
    admin
        .batch_execute(&format!("CREATE DATABASE {}", quote_ident(&name)))
        .await
        .unwrap_or_else(|e| panic!("cannot create database {name}: {e}"));
    TestDb {
        name,
        pg,
        suffix,
        names: Mutex::new(Vec::new()),
        admin: tokio::sync::OnceCell::new(),
    }
}

impl TestDb {
    /// The database's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The server.
    pub fn pg(&self) -> &'static TestPg {
        self.pg
    }

    /// Superuser connection options for this database (TCP 127.0.0.1;
    /// `ssl_mode` `Prefer` with the CA as root on the throwaway cluster).
    pub fn config(&self) -> PgConnectionConfig {
        self.pg.config(&self.name)
    }

    /// Connection options for `user` (for example a [`ThrowawayRole`] name)
    /// to this database.
    pub fn config_as(&self, user: &str) -> PgConnectionConfig {
        self.pg.config_as(&self.name, user)
    }

    /// A new superuser connection to this database (no TLS).
    pub async fn client(&self) -> tokio_postgres::Client {
        connect(&self.config())
            .await
            .unwrap_or_else(|e| panic!("cannot connect to test database {}: {e}", self.name))
    }

    /// Runs `sql` (one or more statements) as the superuser; panics with the
    /// statement and the error when it fails.
    pub async fn execute(&self, sql: &str) {
        if let Err(e) = self.try_execute(sql).await {
            panic!("SQL failed in {}: {e:?}\n{sql}", self.name);
        }
    }

    /// Runs `sql` (one or more statements) as the superuser.
    pub async fn try_execute(&self, sql: &str) -> Result<(), tokio_postgres::Error> {
        let admin = self
            .admin
            .get_or_try_init(|| async { connect(&self.config()).await })
            .await?;
        admin.batch_execute(sql).await
    }

    /// Runs `sql` with psql (blocking); returns its unaligned output.
    pub fn psql(&self, sql: &str) -> String {
        self.pg
            .psql(&self.name, sql)
            .unwrap_or_else(|e| panic!("psql failed in {}: {e}\n{sql}", self.name))
    }

    /// A name for a slot, publication or table that no other test of any
    /// process uses: `<prefix>_<pid>_<db>_<n>`, lowercase, at most 63 bytes.
    /// Slots with these names are dropped with the database.
    pub fn unique_name(&self, prefix: &str) -> String {
        let mut names = self.names.lock().unwrap_or_else(|e| e.into_inner());
        let name = format!(
            "{}_{}_{}",
            identifier_part(prefix, 30),
            self.suffix,
            names.len()
        );
        names.push(name.clone());
        name
    }

    /// Terminates the walsenders of this database's slots, drops the slots
    /// and the database (best effort; failures are printed).
    fn cleanup(&self) -> Result<(), String> {
        let names = self.names.lock().unwrap_or_else(|e| e.into_inner());
        let mut condition = format!("(database = {}", quote_literal(&self.name));
        for name in names.iter() {
            condition.push_str(&format!(" OR slot_name = {}", quote_literal(name)));
        }
        condition.push(')');
        let sql = format!(
            "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots \
               WHERE {condition} AND active_pid IS NOT NULL;\n\
             SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots \
               WHERE {condition} AND NOT active;\n\
             SELECT 'remaining=' || count(*) FROM pg_replication_slots WHERE {condition};"
        );
        let maintenance = self.pg.maintenance_db();
        let mut last = String::new();
        for _ in 0..100 {
            match self.pg.psql(&maintenance, &sql) {
                Ok(out) if out.ends_with("remaining=0") => {
                    last.clear();
                    break;
                }
                Ok(out) => last = out,
                // A slot that became active between the check and the drop.
                Err(e) => last = e,
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        if !last.is_empty() {
            return Err(format!("could not drop the replication slots: {last}"));
        }
        self.pg
            .psql(
                &maintenance,
                &format!(
                    "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                    quote_ident(&self.name)
                ),
            )
            .map(drop)
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Err(e) = self.cleanup() {
            eprintln!("could not clean up test database {}: {e}", self.name);
        }
    }
}

/// `text` as lowercase letters, digits and `_`, at most `max` bytes.
fn identifier_part(text: &str, max: usize) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .take(max)
        .collect()
}

/// A quoted SQL identifier.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A quoted SQL string literal.
pub fn quote_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}
