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
