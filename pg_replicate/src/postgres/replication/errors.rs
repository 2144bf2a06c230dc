//! Turning what the server (or the socket) reports into the crate's
//! [`Error`]: the one place that maps SQLSTATE codes to an [`ErrorKind`] and a
//! fix hint, shared by the replication connection and the ordinary query
//! connection.

use std::fmt;
use std::io;

use fallible_iterator::FallibleIterator;
use postgres_protocol::message::backend::ErrorFields;

use super::codec::CodecError;
use crate::postgres::PgConnectionConfig;
use crate::{Error, ErrorKind};

/// The fields of an `ErrorResponse` or `NoticeResponse` this library uses.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServerError {
    /// Severity (`ERROR`, `FATAL`, `NOTICE`, …), not localized.
    pub severity: String,
    /// SQLSTATE code, for example `28P01`.
    pub code: String,
    /// Primary message.
    pub message: String,
    /// Optional detail.
    pub detail: Option<String>,
    /// Optional hint.
    pub hint: Option<String>,
}

impl ServerError {
    /// Collects the fields of an `ErrorResponse`/`NoticeResponse` body.
    pub fn from_fields(mut fields: ErrorFields<'_>) -> Result<ServerError, CodecError> {
        let mut out = ServerError::default();
        let mut localized_severity = None;
        while let Some(field) = fields
            .next()
            .map_err(|e| CodecError::Protocol(format!("malformed error fields: {e}")))?
        {
            let value = String::from_utf8_lossy(field.value_bytes()).into_owned();
            match field.type_() {
                b'V' => out.severity = value,
                b'S' => localized_severity = Some(value),
                b'C' => out.code = value,
                b'M' => out.message = value,
                b'D' => out.detail = Some(value),
                b'H' => out.hint = Some(value),
                _ => {}
            }
        }
        // Servers before 9.6 send only the localized severity.
        if out.severity.is_empty() {
            out.severity = localized_severity.unwrap_or_default();
        }
        Ok(out)
    }

    /// Converts the error of an ordinary (tokio-postgres) connection.
    pub fn from_db_error(e: &tokio_postgres::error::DbError) -> ServerError {
        ServerError {
            severity: e
                .parsed_severity()
                .map_or_else(|| e.severity().to_owned(), |s| s.to_string()),
            code: e.code().code().to_owned(),
            message: e.message().to_owned(),
            detail: e.detail().map(str::to_owned),
            hint: e.hint().map(str::to_owned),
        }
    }
}

impl fmt::Display for ServerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} (SQLSTATE {})",
            self.severity, self.message, self.code
        )?;
        if let Some(detail) = &self.detail {
            write!(f, "; detail: {detail}")?;
        }
        if let Some(hint) = &self.hint {
            write!(f, "; hint: {hint}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ServerError {}

/// What the connection was doing when the server reported an error; decides
/// the kind of codes that mean different things at different times.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Connecting: startup packet, authentication, session start.
    Connect,
    /// Running a command (simple query, replication command).
    Query,
    /// Streaming changes (CopyBoth).
    Stream,
}

/// Who and where, for error messages. Never holds the password.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnInfo {
    /// `host:port`, or the Unix socket path.
    pub endpoint: String,
    /// User name.
    pub user: String,
    /// Database name.
    pub dbname: String,
}

impl ConnInfo {
    /// Takes the non-secret parts of `config`.
    pub fn new(config: &PgConnectionConfig) -> ConnInfo {
        let endpoint = if config.is_unix_socket() {
            config.unix_socket_path().display().to_string()
        } else if config.host.contains(':') {
            format!("[{}]:{}", config.host, config.port)
        } else {
            format!("{}:{}", config.host, config.port)
        };
        ConnInfo {
            endpoint,
            user: config.username.clone(),
            dbname: config.dbname.clone(),
        }
    }
}

/// Maps a server error to the crate's error: kind from the SQLSTATE (and the
/// phase), a message naming the cause and the fix, and the server's own
/// message with its SQLSTATE.
pub fn map_server_error(err: &ServerError, phase: Phase, info: &ConnInfo) -> Error {
    let (kind, summary, fix) = classify(err, phase, info);
    let mut message = format!(
        "{summary}; {fix} (server {}: {} [SQLSTATE {}]",
        info.endpoint, err.message, err.code
    );
    if let Some(detail) = &err.detail {
        message.push_str("; detail: ");
        message.push_str(detail);
    }
    if let Some(hint) = &err.hint {
        message.push_str("; hint: ");
        message.push_str(hint);
    }
    message.push(')');
    Error::new(kind, message)
}

fn classify(err: &ServerError, phase: Phase, info: &ConnInfo) -> (ErrorKind, String, String) {
    let user = &info.user;
    let db = &info.dbname;
    let msg = err.message.to_ascii_lowercase();
    let code = err.code.as_str();
    let (kind, summary, fix): (ErrorKind, String, &str) = match code {
        "28P01" => (
            ErrorKind::Authentication,
            format!("password authentication failed for user \"{user}\""),
            "check the configured password and the pg_hba.conf entry for this user",
        ),
        "28000" => (
            ErrorKind::Authentication,
            format!("the server rejected user \"{user}\" for database \"{db}\""),
            "check that the role exists and may log in, and that pg_hba.conf has a line for this \
             user, database and client address (logical replication connections match the \
             database name, not the `replication` keyword)",
        ),
        "3D000" => (
            ErrorKind::Config,
            format!("database \"{db}\" does not exist"),
            "create it or fix the configured database name",
        ),
        "42501" if phase == Phase::Connect || msg.contains("replication") || msg.contains("wal sender") => (
            ErrorKind::SourceSetup,
            format!("user \"{user}\" may not use replication"),
            "grant it with `ALTER ROLE <user> WITH REPLICATION` (or connect as a superuser)",
        ),
        "42501" => (
            ErrorKind::SourceSetup,
            format!("user \"{user}\" lacks a privilege"),
            "grant the privilege named by the server to this user",
        ),
        "53300" => (
            ErrorKind::Connection,
            "the server has too many connections".to_owned(),
            "close idle connections or raise max_connections / max_wal_senders, then retry",
        ),
        "53400" => (
            ErrorKind::SourceSetup,
            "a server limit was reached".to_owned(),
            "raise the setting the server names (for replication slots: max_replication_slots, \
             then restart) or drop unused replication slots",
        ),
        "55000" if msg.contains("wal_level") => (
            ErrorKind::SourceSetup,
            "logical decoding is not enabled on the server".to_owned(),
            "set `wal_level = logical` in postgresql.conf and restart the server",
        ),
        "55000" if msg.contains("can no longer get changes")
            || msg.contains("cannot read from logical replication slot")
            || msg.contains("invalidated") =>
        {
            (
            ErrorKind::SourceSetup,
            "the replication slot was invalidated: Postgres removed WAL it still needed".to_owned(),
            "drop it with `SELECT pg_drop_replication_slot('<name>')` and replicate into a fresh \
             sink (or clear the sink's state) with a backfill; raise max_slot_wal_keep_size so a \
             lagging slot is not invalidated again",
            )
        }
        "58P01" if msg.contains("wal segment") => (
            ErrorKind::SourceSetup,
            "WAL the replication slot needs was already removed".to_owned(),
            "the slot cannot be streamed from any more: drop it with \
             `SELECT pg_drop_replication_slot('<name>')` and replicate into a fresh sink (or clear \
             the sink's state) with a backfill",
        ),
        "55000" => (
            ErrorKind::SourceSetup,
            "the server is not in a state that allows this command".to_owned(),
            "fix the server state the message names",
        ),
        // Retryable: after a network fault it is this pipeline's own earlier
        // walsender, which ends within wal_sender_timeout.
        "55006" if msg.contains("replication slot") => (
            ErrorKind::Connection,
            "the replication slot is in use by another connection".to_owned(),
            "stop the other consumer (its PID is in the message and in \
             pg_replication_slots.active_pid) or wait for it to exit, then retry; an earlier \
             connection of this pipeline cut by a network fault exits within wal_sender_timeout",
        ),
        "55006" => (
            ErrorKind::SourceSetup,
            "an object is in use by another session".to_owned(),
            "wait for the other session to finish or stop it, then retry",
        ),
        "42704" if msg.contains("publication") => (
            ErrorKind::SourceSetup,
            "the publication does not exist".to_owned(),
            "create it with `CREATE PUBLICATION <name> FOR TABLE ...` (or FOR ALL TABLES) in \
             this database, or fix the publication name",
        ),
        "42704" if msg.contains("replication slot") => (
            ErrorKind::SourceSetup,
            "the replication slot does not exist".to_owned(),
            "create the slot first or fix the slot name",
        ),
        "42704" => (
            ErrorKind::SourceSetup,
            "an object does not exist".to_owned(),
            "create it or fix its name",
        ),
        "42710" if msg.contains("replication slot") => (
            ErrorKind::SourceSetup,
            "the replication slot already exists".to_owned(),
            "reuse it, drop it with `SELECT pg_drop_replication_slot('<name>')`, or choose another \
             slot name",
        ),
        "42602" => (
            ErrorKind::Config,
            "invalid name".to_owned(),
            "replication slot names may contain only lower-case letters, digits and underscores \
             (at most 63)",
        ),
        "0A000" => (
            ErrorKind::SourceSetup,
            "the server does not support a requested feature".to_owned(),
            "use an option the server's version supports (for example a lower pgoutput \
             protocol version)",
        ),
        "57P01" | "57P02" | "57P03" => (
            ErrorKind::Connection,
            "the server is shutting down, starting up or terminated this connection".to_owned(),
            "retry once the server accepts connections",
        ),
        c if c.starts_with("08") => (
            ErrorKind::Connection,
            "the connection failed".to_owned(),
            "check the network and the server, then retry",
        ),
        c if c.starts_with("28") => (
            ErrorKind::Authentication,
            format!("authentication failed for user \"{user}\""),
            "check the credentials and pg_hba.conf",
        ),
        _ => match phase {
            Phase::Connect => (
                ErrorKind::Connection,
                format!("connecting as user \"{user}\" to database \"{db}\" failed"),
                "see the server's message",
            ),
            Phase::Query => (
                ErrorKind::SourceSetup,
                "the server rejected the command".to_owned(),
                "see the server's message",
            ),
            Phase::Stream => (
                ErrorKind::SourceSetup,
                "the server ended replication with an error".to_owned(),
                "see the server's message",
            ),
        },
    };
    (kind, summary, fix.to_owned())
}

/// Maps a failure to open the socket.
pub fn map_connect_io_error(err: io::Error, info: &ConnInfo, unix: bool) -> Error {
    let fix = if unix {
        "check that the server is running and that its unix_socket_directories and port match \
         the configured host directory and port"
    } else {
        "check that the server is running, listens on this address and port (listen_addresses, \
         port) and that no firewall blocks it"
    };
    Error::new(
        ErrorKind::Connection,
        format!("could not connect to {}: {err}; {fix}", info.endpoint),
    )
}

/// Maps a failure of the codec on an established connection.
pub fn map_codec_error(err: CodecError, info: &ConnInfo) -> Error {
    match err {
        CodecError::Io(e) => Error::new(
            ErrorKind::Connection,
            format!("the connection to {} broke: {e}; retry", info.endpoint),
        ),
        CodecError::Protocol(m) => Error::new(
            ErrorKind::Protocol,
            format!("{} sent an invalid message: {m}", info.endpoint),
        ),
        CodecError::Invalid(m) => Error::new(
            ErrorKind::Config,
            format!("cannot send a message to {}: {m}", info.endpoint),
        ),
    }
}

/// The error for a server that asks for a password when none is configured.
pub fn missing_password(info: &ConnInfo, method: &str) -> Error {
    Error::new(
        ErrorKind::Config,
        format!(
            "the server at {} asks for a password ({method} authentication) for user \"{}\" but \
             none is configured; set the password, or allow this user without one in pg_hba.conf",
            info.endpoint, info.user
        ),
    )
}

/// The error for a server that refuses TLS while `sslmode` requires it.
pub fn tls_refused(info: &ConnInfo) -> Error {
    Error::new(
        ErrorKind::Config,
        format!(
            "the server at {} does not accept TLS connections but sslmode requires TLS; enable \
             TLS on the server (ssl = on with a certificate) or use sslmode=prefer or disable",
            info.endpoint
        ),
    )
}

/// The error for a connection the server closed without saying why.
pub fn closed_unexpectedly(info: &ConnInfo) -> Error {
    Error::new(
        ErrorKind::Connection,
        format!(
            "the server at {} closed the connection unexpectedly; check the server log, then retry",
            info.endpoint
        ),
    )
}

/// The error for a message that does not fit the protocol state.
pub fn unexpected(what: &str, during: &str, info: &ConnInfo) -> Error {
    Error::new(
        ErrorKind::Protocol,
        format!(
            "{} sent an unexpected {what} during {during}",
            info.endpoint
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info() -> ConnInfo {
        ConnInfo {
            endpoint: "db.example:5432".into(),
            user: "alice".into(),
            dbname: "shop".into(),
        }
    }

    fn server(code: &str, message: &str) -> ServerError {
        ServerError {
            severity: "FATAL".into(),
            code: code.into(),
            message: message.into(),
            detail: None,
            hint: None,
        }
    }

    #[test]
    fn maps_startup_errors() {
        let e = map_server_error(
            &server("28P01", "password authentication failed for user \"alice\""),
            Phase::Connect,
            &info(),
        );
        assert_eq!(e.kind(), ErrorKind::Authentication);
        assert!(e
            .message()
            .starts_with("password authentication failed for user \"alice\""));
        assert!(e.message().contains("pg_hba.conf"));
        assert!(e.message().contains("SQLSTATE 28P01"));

        let e = map_server_error(
            &server("3D000", "database \"shop\" does not exist"),
            Phase::Connect,
            &info(),
        );
        assert_eq!(e.kind(), ErrorKind::Config);
        assert!(e.message().starts_with("database \"shop\" does not exist"));

        let e = map_server_error(
            &server(
                "42501",
                "must be superuser or replication role to start walsender",
            ),
            Phase::Connect,
            &info(),
        );
        assert_eq!(e.kind(), ErrorKind::SourceSetup);
        assert!(e.message().contains("WITH REPLICATION"));

        let e = map_server_error(
            &server("53300", "sorry, too many clients already"),
            Phase::Connect,
            &info(),
        );
        assert_eq!(e.kind(), ErrorKind::Connection);
        assert!(e.kind().is_retryable());
    }

    #[test]
    fn maps_replication_errors() {
        let e = map_server_error(
            &server("55006", "replication slot \"s\" is active for PID 4242"),
            Phase::Query,
            &info(),
        );
        assert_eq!(e.kind(), ErrorKind::Connection);
        assert!(e.message().contains("PID 4242"));

        let e = map_server_error(
            &server("42704", "publication \"p\" does not exist"),
            Phase::Stream,
            &info(),
        );
        assert_eq!(e.kind(), ErrorKind::SourceSetup);
        assert!(e.message().contains("CREATE PUBLICATION"));

        let e = map_server_error(
            &server("55000", "logical decoding requires wal_level >= logical"),
            Phase::Query,
            &info(),
        );
        assert!(e.message().contains("wal_level = logical"));

        let e = map_server_error(
            &server(
                "55000",
                "can no longer get changes from replication slot \"s\"",
            ),
            Phase::Stream,
            &info(),
        );
        assert_eq!(e.kind(), ErrorKind::SourceSetup);
        assert!(!e.is_retryable());
        assert!(e.message().contains("pg_drop_replication_slot"), "{e}");

        let e = map_server_error(
            &server(
                "58P01",
                "requested WAL segment 000000010000000000000003 has already been removed",
            ),
            Phase::Stream,
            &info(),
        );
        assert_eq!(e.kind(), ErrorKind::SourceSetup);
        assert!(e.message().contains("backfill"), "{e}");

        let e = map_server_error(&server("42601", "syntax error"), Phase::Query, &info());
        assert_eq!(e.kind(), ErrorKind::SourceSetup);
        assert!(e.message().contains("syntax error [SQLSTATE 42601]"));
    }

    #[test]
    fn includes_detail_and_hint() {
        let mut err = server("XX000", "boom");
        err.detail = Some("d".into());
        err.hint = Some("h".into());
        let e = map_server_error(&err, Phase::Stream, &info());
        assert!(e
            .message()
            .ends_with("boom [SQLSTATE XX000]; detail: d; hint: h)"));
    }

    #[test]
    fn endpoint_forms() {
        let mut config = PgConnectionConfig {
            host: "::1".into(),
            port: 5433,
            dbname: "d".into(),
            username: "u".into(),
            password: Some("secret".into()),
            ssl_mode: Default::default(),
            ssl_root_cert: None,
            application_name: None,
        };
        assert_eq!(ConnInfo::new(&config).endpoint, "[::1]:5433");
        config.host = "/tmp".into();
        assert_eq!(ConnInfo::new(&config).endpoint, "/tmp/.s.PGSQL.5433");
        assert!(!format!("{:?}", ConnInfo::new(&config)).contains("secret"));
    }
}
