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
    /// `application_name` the server shows for these connections (in
    /// `pg_stat_activity`); `pg_replicate` when unset. A
    /// [`PostgresSource`](crate::sources::postgres::PostgresSource) adds a
    /// tag of its own to it, to find its own sessions.
    pub application_name: Option<String>,
}

impl PgConnectionConfig {
    /// Whether `host` names a Unix socket directory.
    pub fn is_unix_socket(&self) -> bool {
        self.host.starts_with('/')
    }

    /// The `application_name` sent to the server.
    pub fn application_name(&self) -> &str {
        self.application_name
            .as_deref()
            .unwrap_or(crate::postgres::replication::APPLICATION_NAME)
    }

    /// Path of the Unix socket file for this host directory and port.
    pub fn unix_socket_path(&self) -> PathBuf {
        PathBuf::from(&self.host).join(format!(".s.PGSQL.{}", self.port))
    }
}

impl PgConnectionConfig {
    /// Parses a libpq-style URL:
    /// `postgresql://user:password@host:port/dbname?sslmode=require&sslrootcert=/path`
    /// (also `postgres://`). Missing parts default to user `postgres`, host
    /// `localhost`, port 5432, the user name as database, `sslmode=prefer`.
    /// Percent-escapes are decoded; `host=/dir` in the query names a Unix
    /// socket directory.
    pub fn from_url(url: &str) -> Result<Self, crate::Error> {
        let bad = |why: &str| {
            crate::Error::new(
                crate::ErrorKind::Config,
                format!(
                    "invalid connection URL ({why}); expected postgresql://user:password@host:port/dbname"
                ),
            )
        };
        let rest = url
            .strip_prefix("postgresql://")
            .or_else(|| url.strip_prefix("postgres://"))
            .ok_or_else(|| bad("it must start with postgresql://"))?;
        let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (authority, dbname) = rest.split_once('/').unwrap_or((rest, ""));
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((userinfo, hostport)) => (Some(userinfo), hostport),
            None => (None, authority),
        };
        let (username, password) = match userinfo {
            Some(info) => match info.split_once(':') {
                Some((user, password)) => (percent_decode(user)?, Some(percent_decode(password)?)),
                None => (percent_decode(info)?, None),
            },
            None => ("postgres".to_owned(), None),
        };
        let parse_port = |port: &str| {
            port.parse::<u16>()
                .map_err(|_| bad("the port is not a number"))
        };
        let (host, port) = if let Some(bracketed) = hostport.strip_prefix('[') {
            // IPv6 literal: [::1]:5432
            let (host, after) = bracketed
                .split_once(']')
                .ok_or_else(|| bad("unclosed [ in the host"))?;
            match after.strip_prefix(':') {
                Some(port) => (host, parse_port(port)?),
                None => (host, 5432),
            }
        } else {
            match hostport.rsplit_once(':') {
                Some((host, port)) => (host, parse_port(port)?),
                None => (hostport, 5432),
            }
        };
        let mut config = PgConnectionConfig {
            host: if host.is_empty() {
                "localhost".to_owned()
            } else {
                percent_decode(host)?
            },
            port,
            dbname: if dbname.is_empty() {
                username.clone()
            } else {
                percent_decode(dbname)?
            },
            username,
            password,
            ssl_mode: SslMode::default(),
            ssl_root_cert: None,
            application_name: None,
        };
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let value = percent_decode(value)?;
            match key {
                "sslmode" => config.ssl_mode = value.parse().map_err(|e: String| bad(&e))?,
                "sslrootcert" => config.ssl_root_cert = Some(PathBuf::from(value)),
                "host" => config.host = value,
                "port" => config.port = parse_port(&value)?,
                "user" => config.username = value,
                "password" => config.password = Some(value),
                "dbname" => config.dbname = value,
                "application_name" => config.application_name = Some(value),
                _ => {}
            }
        }
        Ok(config)
    }
}

fn percent_decode(text: &str) -> Result<String, crate::Error> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| {
                    crate::Error::new(
                        crate::ErrorKind::Config,
                        "invalid percent-escape in the connection URL",
                    )
                })?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| {
        crate::Error::new(
            crate::ErrorKind::Config,
            "the connection URL is not UTF-8 after decoding",
        )
    })
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
            .field("application_name", &self.application_name)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls() {
        let c = PgConnectionConfig::from_url(
            "postgresql://rep%40x:p%3Ass@db.example:6543/app?sslmode=verify-full&sslrootcert=/ca.pem",
        )
        .unwrap();
        assert_eq!(c.username, "rep@x");
        assert_eq!(c.password.as_deref(), Some("p:ss"));
        assert_eq!(
            (c.host.as_str(), c.port, c.dbname.as_str()),
            ("db.example", 6543, "app")
        );
        assert_eq!(c.ssl_mode, SslMode::VerifyFull);
        assert_eq!(c.ssl_root_cert, Some(PathBuf::from("/ca.pem")));

        let c = PgConnectionConfig::from_url("postgresql://u@[::1]:5433/d").unwrap();
        assert_eq!((c.host.as_str(), c.port), ("::1", 5433));

        let c = PgConnectionConfig::from_url("postgres://localhost").unwrap();
        assert_eq!(c.application_name(), "pg_replicate");
        assert_eq!(
            (c.username.as_str(), c.port, c.dbname.as_str()),
            ("postgres", 5432, "postgres")
        );
        assert_eq!(c.password, None);

        let c = PgConnectionConfig::from_url(
            "postgresql:///db?host=/run/pg&port=5433&application_name=sync%20a",
        )
        .unwrap();
        assert_eq!(c.application_name(), "sync a");
        assert!(c.is_unix_socket());
        assert_eq!((c.port, c.dbname.as_str()), (5433, "db"));

        for bad in [
            "mysql://x",
            "postgresql://h:notaport/db",
            "postgresql://h/db?sslmode=maybe",
            "postgresql://h/%zz",
        ] {
            let error = PgConnectionConfig::from_url(bad).unwrap_err();
            assert_eq!(error.kind(), crate::ErrorKind::Config, "{bad}");
        }
    }
}
