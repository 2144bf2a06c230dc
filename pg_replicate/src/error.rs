//! The library's error type: a kind (what went wrong, and whether retrying can
//! help) plus a message that names the problem and the fix.

use std::fmt;

/// What kind of failure an [`Error`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// Invalid configuration given by the application.
    Config,
    /// The server could not be reached, or the connection broke.
    Connection,
    /// The server rejected the credentials.
    Authentication,
    /// The server is not set up for replication (wal_level, publication,
    /// slot in use, missing privileges).
    SourceSetup,
    /// A table cannot be replicated as it is (no replica identity, a table
    /// that disappeared, an unsupported value).
    Schema,
    /// A value could not be converted without losing data.
    Data,
    /// The server sent something this library does not understand.
    Protocol,
    /// The sink failed to store data.
    Sink,
    /// Local I/O failed.
    Io,
    /// A bug: code run by the library (its own, or a hook of the
    /// application) panicked.
    Internal,
}

impl ErrorKind {
    /// Whether retrying the same operation later can succeed without the
    /// user changing anything (a dropped connection, a sink that was down).
    pub fn is_retryable(self) -> bool {
        matches!(
            self,
            ErrorKind::Connection | ErrorKind::Sink | ErrorKind::Io
        )
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// An error of the library: a kind, a message saying what failed and how to
/// fix it, and the underlying cause when there is one.
pub struct Error {
    kind: ErrorKind,
    message: String,
    source: Option<BoxError>,
}

impl Error {
    /// Creates an error of `kind` with a message naming the problem and fix.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            source: None,
        }
    }

    /// Creates an error of `kind` caused by `source`.
    pub fn with_source(
        kind: ErrorKind,
        message: impl Into<String>,
        source: impl Into<BoxError>,
    ) -> Self {
        Self {
            kind,
            message: message.into(),
            source: Some(source.into()),
        }
    }

    /// The kind of failure.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The message, without the cause.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Whether the same operation can succeed later without the user
    /// changing anything: the kind says so ([`ErrorKind::is_retryable`]), or
    /// the cause is a connection that closed, a server shutting down or
    /// starting (SQLSTATE 57P01, 57P02, 57P03), a connection exception
    /// (class 08), too many connections (53300), or a reset, refused or
    /// timed-out socket.
    pub fn is_retryable(&self) -> bool {
        if self.kind.is_retryable() {
            return true;
        }
        let mut cause = self
            .source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static));
        while let Some(error) = cause {
            if let Some(pg) = error.downcast_ref::<tokio_postgres::Error>() {
                if pg.is_closed() {
                    return true;
                }
                if let Some(state) = pg.code() {
                    let code = state.code();
                    if matches!(code, "57P01" | "57P02" | "57P03" | "53300")
                        || code.starts_with("08")
                    {
                        return true;
                    }
                }
            }
            if let Some(io) = error.downcast_ref::<std::io::Error>() {
                use std::io::ErrorKind as Io;
                if matches!(
                    io.kind(),
                    Io::ConnectionReset
                        | Io::ConnectionAborted
                        | Io::ConnectionRefused
                        | Io::BrokenPipe
                        | Io::UnexpectedEof
                        | Io::TimedOut
                        | Io::NotConnected
                ) {
                    return true;
                }
            }
            if let Some(inner) = error.downcast_ref::<Error>() {
                if inner.kind.is_retryable() {
                    return true;
                }
            }
            cause = error.source();
        }
        false
    }

    /// Prefixes the message with more context (for example the table name).
    pub fn context(mut self, context: impl fmt::Display) -> Self {
        self.message = format!("{context}: {}", self.message);
        self
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        if let Some(source) = &self.source {
            write!(f, ": {source}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Error")
            .field("kind", &self.kind)
            .field("message", &self.message)
            .field("source", &self.source)
            .finish()
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_ref()
            .map(|e| e.as_ref() as &(dyn std::error::Error + 'static))
    }
}

/// Result with the library's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retryable_errors_are_told_by_kind_or_cause() {
        assert!(Error::new(ErrorKind::Connection, "lost").is_retryable());
        assert!(!Error::new(ErrorKind::SourceSetup, "no publication").is_retryable());
        assert!(!Error::new(ErrorKind::Authentication, "wrong password").is_retryable());
        let reset = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset by peer");
        assert!(Error::with_source(ErrorKind::Protocol, "read failed", reset).is_retryable());
        let denied = std::io::Error::new(std::io::ErrorKind::PermissionDenied, "denied");
        assert!(!Error::with_source(ErrorKind::Protocol, "read failed", denied).is_retryable());
        let inner = Error::new(ErrorKind::Connection, "closed");
        assert!(Error::with_source(ErrorKind::Data, "while decoding", inner).is_retryable());
    }
}
