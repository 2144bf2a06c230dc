//! Opening the DuckDB file: one writer per file.
//!
//! DuckDB locks a database file for the process that opens it for writing,
//! so a second process gets DuckDB's lock error (turned into a clear
//! message here). The lock does not keep apart two opens inside one
//! process, which would be two independent database instances writing one
//! file; a process-wide registry therefore hands every open of a file the
//! same instance, and refuses a second [`DuckDbSink`](super::DuckDbSink) on
//! a file while one is open. [`DuckDbReader`]s share the instance too.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock, Mutex, PoisonError, Weak};

use duckdb::Connection;

use super::raw::{RawConnection, RawDatabase, STORAGE_VERSION_OPTION};
use crate::{Error, ErrorKind, Result};

/// An open DuckDB database file, shared within the process.
pub(crate) struct OpenFile {
    path: PathBuf,
    /// Keeps the instance open; new connections are cloned from it.
    root: Mutex<Connection>,
    /// Whether a sink writes through this instance.
    writer: AtomicBool,
    /// The database handle `root` was made from; declared after it, so
    /// dropped after it.
    database: RawDatabase,
}

static OPEN_FILES: LazyLock<Mutex<HashMap<PathBuf, Weak<OpenFile>>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

impl OpenFile {
    /// The file's path as opened (canonical directory).
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// A new connection to the instance.
    pub(crate) fn connect(&self) -> Result<Connection> {
        self.root
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .try_clone()
            .map_err(|e| {
                Error::with_source(
                    ErrorKind::Sink,
                    format!(
                        "cannot open another connection to DuckDB file {}",
                        self.path.display()
                    ),
                    e,
                )
            })
    }

    /// A connection of DuckDB's C API to the instance (for what duckdb-rs
    /// cannot do).
    pub(crate) fn raw_connect(&self) -> Result<RawConnection> {
        self.database.connect().map_err(|e| {
            Error::with_source(
                ErrorKind::Sink,
                format!(
                    "cannot open another connection to DuckDB file {}",
                    self.path.display()
                ),
                e,
            )
        })
    }

    /// Gives up the writer role (when the sink is dropped).
    pub(crate) fn release_writer(&self) {
        self.writer.store(false, Ordering::SeqCst);
    }
}

/// Opens `path` (creating it when missing, in the storage format of DuckDB
/// release `storage_version`) for a sink: the file's shared instance and a
/// connection to it.
pub(crate) fn open_writer(
    path: &Path,
    storage_version: &str,
) -> Result<(Arc<OpenFile>, Connection)> {
    let file = open_shared(path, storage_version)?;
    if file.writer.swap(true, Ordering::SeqCst) {
        return Err(Error::new(
            ErrorKind::Sink,
            format!(
                "DuckDB file {} is already written by another DuckDbSink of this process; drop that sink \
                 (or stop its pipeline) first, or use another file",
                file.path.display()
            ),
        ));
    }
    match file.connect() {
        Ok(conn) => Ok((file, conn)),
        Err(error) => {
            file.release_writer();
            Err(error)
        }
    }
}

fn open_shared(path: &Path, storage_version: &str) -> Result<Arc<OpenFile>> {
    let key = canonical(path)?;
    let mut files = OPEN_FILES.lock().unwrap_or_else(PoisonError::into_inner);
    files.retain(|_, file| file.strong_count() > 0);
    if let Some(file) = files.get(&key).and_then(Weak::upgrade) {
        return Ok(file);
    }
    if key.is_dir() {
        return Err(Error::new(
            ErrorKind::Config,
            format!(
                "{} is a directory, not a DuckDB file; give the path of a file",
                key.display()
            ),
        ));
    }
    let database = RawDatabase::open(&key, storage_version).map_err(|e| {
        if e.to_string().contains(STORAGE_VERSION_OPTION) {
            Error::with_source(
                ErrorKind::Config,
                format!(
                    "DuckDB does not know storage version {storage_version:?}; give a DuckDB release such as \
                     \"v1.0.0\" or \"latest\""
                ),
                e,
            )
        } else {
            open_error(&key, e)
        }
    })?;
    let conn = database
        .open_connection()
        .map_err(|e| open_error(&key, e))?;
    let file = Arc::new(OpenFile {
        path: key.clone(),
        root: Mutex::new(conn),
        writer: AtomicBool::new(false),
        database,
    });
    files.insert(key, Arc::downgrade(&file));
    Ok(file)
}

/// The path with its directory made canonical (the file may not exist yet).
fn canonical(path: &Path) -> Result<PathBuf> {
    let name = path.file_name().ok_or_else(|| {
        Error::new(
            ErrorKind::Config,
            format!(
                "{} does not name a file; give the path of a DuckDB file",
                path.display()
            ),
        )
    })?;
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let parent = parent.canonicalize().map_err(|e| {
        Error::with_source(
            ErrorKind::Config,
            format!(
                "the directory of DuckDB file {} is not accessible; create it or fix the path",
                path.display()
            ),
            e,
        )
    })?;
    Ok(parent.join(name))
}

fn open_error(path: &Path, error: duckdb::Error) -> Error {
    let text = error.to_string();
    let path = path.display();
    if text.contains("Could not set lock") || text.contains("Conflicting lock") {
        Error::with_source(
            ErrorKind::Sink,
            format!(
                "DuckDB file {path} is in use by another process (DuckDB allows one writer); stop that \
                 process or use another file"
            ),
            error,
        )
    } else if text.contains("Permission denied")
        || text.contains("Operation not permitted")
        || text.contains("Read-only")
        || text.contains("read-only")
    {
        Error::with_source(
            ErrorKind::Config,
            format!("DuckDB file {path} cannot be opened for writing; check its permissions and its directory's"),
            error,
        )
    } else {
        Error::with_source(
            ErrorKind::Config,
            format!(
                "cannot open DuckDB file {path}; check that it is a DuckDB database of a compatible version \
                 and that it and its directory are writable"
            ),
            error,
        )
    }
}

/// A read connection to the file of a running [`DuckDbSink`](super::DuckDbSink),
/// for queries while it replicates (it sees committed batches).
///
/// It keeps the database instance open; a sink opened later on the same
/// file in this process shares it.
pub struct DuckDbReader {
    conn: Connection,
    _file: Arc<OpenFile>,
}

impl DuckDbReader {
    pub(crate) fn new(file: Arc<OpenFile>) -> Result<Self> {
        Ok(Self {
            conn: file.connect()?,
            _file: file,
        })
    }

    /// Opens a reader on `path` without a sink (sharing the instance of a
    /// sink of this process that has it open). A missing file is created
    /// in [`DEFAULT_STORAGE_VERSION`](super::DEFAULT_STORAGE_VERSION).
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        Self::new(open_shared(
            path.as_ref(),
            super::config::DEFAULT_STORAGE_VERSION,
        )?)
    }

    /// The DuckDB connection.
    pub fn connection(&self) -> &Connection {
        &self.conn
    }
}
