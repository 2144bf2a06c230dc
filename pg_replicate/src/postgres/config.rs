//! Connection options shared by the replication connection and the ordinary
//! query/COPY connections.

use std::fmt;
use std::path::PathBuf;

/// Whether and how to use TLS, with the meaning libpq gives these names.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SslMode {
    /// Never use TLS.
    Disable,
    /// Use TLS when the server offers it, without verifying the certificate.
    #[default]
    Prefer,
    /// Require TLS, without verifying the certificate.
    Require,
    /// Require TLS and verify that the certificate chains to a trusted root
    /// and names the host.
    VerifyFull,
}

impl std::str::FromStr for SslMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "disable" => Ok(Self::Disable),
            "prefer" => Ok(Self::Prefer),
            "require" => Ok(Self::Require),
            "verify-full" => Ok(Self::VerifyFull),
            other => Err(format!(
                "unknown sslmode `{other}`; use disable, prefer, require or verify-full"
            )),
        }
    }
}

/// Where and how to connect to Postgres.
#[derive(Clone, PartialEq, Eq)]
pub struct PgConnectionConfig {
    /// Host name or IP address; a path starting with `/` is a directory
    /// holding the server's Unix socket.
    pub host: String,
    /// TCP port, also used to name the Unix socket file (`.s.PGSQL.<port>`).
    pub port: u16,
    /// Database to connect to.
    pub dbname: String,
    /// User name; logical replication needs the `REPLICATION` attribute.
    pub username: String,
    /// Password, when the server asks for one.
    pub password: Option<String>,
    /// TLS policy.
    pub ssl_mode: SslMode,
    /// PEM file of root certificates trusted for `verify-full`; the bundled
    /// web roots are used when unset.
    pub ssl_root_cert: Option<PathBuf>,
}

impl PgConnectionConfig {
    /// Whether `host` names a Unix socket directory.
    pub fn is_unix_socket(&self) -> bool {
        self.host.starts_with('/')
    }

    /// Path of the Unix socket file for this host directory and port.
    pub fn unix_socket_path(&self) -> PathBuf {
        PathBuf::from(&self.host).join(format!(".s.PGSQL.{}", self.port))
    }
}

impl fmt::Debug for PgConnectionConfig {
    /// Never prints the password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgConnectionConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("dbname", &self.dbname)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("ssl_mode", &self.ssl_mode)
            .field("ssl_root_cert", &self.ssl_root_cert)
            .finish()
    }
}
