//! DuckDB's C API where duckdb-rs has no counterpart: the database handle
//! itself, and connections that can register an Arrow stream as a view
//! (`duckdb_arrow_scan`), which the streamed table copy needs.
//!
//! Every `unsafe` block here calls the C API with handles this module
//! created and still owns; each type frees what it holds exactly once.

use std::ffi::{CStr, CString};
use std::path::Path;
use std::ptr;

use arrow::ffi_stream::FFI_ArrowArrayStream;
use duckdb::ffi;

/// DuckDB's start-up option for the storage format of new files; a value
/// DuckDB refuses gives an open error that names it.
pub(crate) const STORAGE_VERSION_OPTION: &str = "storage_compatibility_version";

/// A DuckDB message (the C API reports errors as text).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct DuckDbMessage(pub(crate) String);

/// An open database, closed on drop. Connections made from it keep the
/// database instance alive on their own (DuckDB counts references), so
/// dropping this first is safe; it must outlive every
/// [`duckdb::Connection`] made with [`open_connection`](Self::open_connection)
/// that is cloned later, which [`OpenFile`](super::file::OpenFile) ensures.
pub(crate) struct RawDatabase(ffi::duckdb_database);

// SAFETY: a DuckDB database handle may be used from any thread.
unsafe impl Send for RawDatabase {}
// SAFETY: the C API's database functions are thread-safe.
unsafe impl Sync for RawDatabase {}

impl RawDatabase {
    /// Opens (or creates) the database file at `path`; a file it creates
    /// gets the storage format of DuckDB release `storage_version`.
    pub(crate) fn open(path: &Path, storage_version: &str) -> Result<Self, duckdb::Error> {
        let c_path = c_path(path)?;
        let config = OpenConfig::new()?;
        config.set(STORAGE_VERSION_OPTION, storage_version)?;
        let mut database: ffi::duckdb_database = ptr::null_mut();
        let mut message: *mut std::os::raw::c_char = ptr::null_mut();
        // SAFETY: valid C string and config, out-pointers to locals.
        let state =
            unsafe { ffi::duckdb_open_ext(c_path.as_ptr(), &mut database, config.0, &mut message) };
        if state == ffi::DuckDBSuccess {
            return Ok(Self(database));
        }
        let text = if message.is_null() {
            None
        } else {
            // SAFETY: DuckDB set a NUL-terminated message we must free.
            let text = unsafe { CStr::from_ptr(message) }
                .to_string_lossy()
                .into_owned();
            unsafe { ffi::duckdb_free(message.cast()) };
            Some(text)
        };
        Err(duckdb::Error::DuckDBFailure(ffi::Error::new(state), text))
    }

    /// A duckdb-rs connection to this database.
    pub(crate) fn open_connection(&self) -> Result<duckdb::Connection, duckdb::Error> {
        // SAFETY: the handle is open; duckdb-rs does not close it (it only
        // connects to it, now and in `try_clone`).
        unsafe { duckdb::Connection::open_from_raw(self.0) }
    }

    /// A connection of the C API to this database.
    pub(crate) fn connect(&self) -> Result<RawConnection, DuckDbMessage> {
        let mut connection: ffi::duckdb_connection = ptr::null_mut();
        // SAFETY: the handle is open; the out-pointer is a local.
        let state = unsafe { ffi::duckdb_connect(self.0, &mut connection) };
        if state == ffi::DuckDBSuccess {
            Ok(RawConnection(connection))
        } else {
            Err(DuckDbMessage("cannot connect to the database".to_owned()))
        }
    }
}

/// Start-up options of a database, destroyed on drop.
struct OpenConfig(ffi::duckdb_config);

impl OpenConfig {
    fn new() -> Result<Self, duckdb::Error> {
        let mut config: ffi::duckdb_config = ptr::null_mut();
        // SAFETY: out-pointer to a local; destroyed in Drop even on failure.
        let state = unsafe { ffi::duckdb_create_config(&mut config) };
        let config = Self(config);
        if state == ffi::DuckDBSuccess {
            Ok(config)
        } else {
            Err(failure(state, "DuckDB could not create a configuration"))
        }
    }

    /// Sets option `name`; DuckDB checks the value here.
    fn set(&self, name: &str, value: &str) -> Result<(), duckdb::Error> {
        let invalid = || failure(ffi::DuckDBError, &format!("invalid {name} {value:?}"));
        let c_name = CString::new(name).map_err(|_| invalid())?;
        let c_value = CString::new(value).map_err(|_| invalid())?;
        // SAFETY: live config, valid C strings (DuckDB copies them).
        let state = unsafe { ffi::duckdb_set_config(self.0, c_name.as_ptr(), c_value.as_ptr()) };
        if state == ffi::DuckDBSuccess {
            Ok(())
        } else {
            Err(invalid())
        }
    }
}

impl Drop for OpenConfig {
    fn drop(&mut self) {
        // SAFETY: created by duckdb_create_config, destroyed only here.
        unsafe { ffi::duckdb_destroy_config(&mut self.0) };
    }
}

fn failure(state: ffi::duckdb_state, text: &str) -> duckdb::Error {
    duckdb::Error::DuckDBFailure(ffi::Error::new(state), Some(text.to_owned()))
}

/// The path as DuckDB takes it: its bytes on Unix, UTF-8 elsewhere.
fn c_path(path: &Path) -> Result<CString, duckdb::Error> {
    #[cfg(unix)]
    let bytes = {
        use std::os::unix::ffi::OsStrExt;
        path.as_os_str().as_bytes().to_vec()
    };
    #[cfg(not(unix))]
    let bytes = path
        .to_str()
        .ok_or_else(|| duckdb::Error::InvalidPath(path.to_owned()))?
        .as_bytes()
        .to_vec();
    CString::new(bytes).map_err(duckdb::Error::NulError)
}

impl Drop for RawDatabase {
    fn drop(&mut self) {
        // SAFETY: opened by `open`, closed only here.
        unsafe { ffi::duckdb_close(&mut self.0) };
    }
}

/// A connection of the C API, disconnected on drop (which rolls back a
/// transaction left open).
pub(crate) struct RawConnection(ffi::duckdb_connection);

// SAFETY: a connection may move between threads; it is used by one at a
// time (`&mut self`).
unsafe impl Send for RawConnection {}

impl RawConnection {
    /// Runs `sql` (one or more statements), discarding any result.
    pub(crate) fn execute(&mut self, sql: &str) -> Result<(), DuckDbMessage> {
        let sql = CString::new(sql)
            .map_err(|_| DuckDbMessage("the statement contains a NUL byte".to_owned()))?;
        // SAFETY: zeroed is the documented initial state of a result.
        let mut result: ffi::duckdb_result = unsafe { std::mem::zeroed() };
        // SAFETY: open connection, valid C string, result freed below.
        let state = unsafe { ffi::duckdb_query(self.0, sql.as_ptr(), &mut result) };
        let outcome = if state == ffi::DuckDBSuccess {
            Ok(())
        } else {
            // SAFETY: the error text lives until the result is destroyed.
            let message = unsafe { ffi::duckdb_result_error(&mut result) };
            Err(DuckDbMessage(if message.is_null() {
                "unknown DuckDB error".to_owned()
            } else {
                unsafe { CStr::from_ptr(message) }
                    .to_string_lossy()
                    .into_owned()
            }))
        };
        // SAFETY: filled by duckdb_query, destroyed once.
        unsafe { ffi::duckdb_destroy_result(&mut result) };
        outcome
    }

    /// Makes `stream` queryable on this connection as the temporary view
    /// `name`.
    ///
    /// # Safety
    ///
    /// `stream` must stay alive and unmoved until the last query that reads
    /// the view has finished; DuckDB does not release it.
    pub(crate) unsafe fn register_stream(
        &mut self,
        name: &str,
        stream: *mut FFI_ArrowArrayStream,
    ) -> Result<(), DuckDbMessage> {
        let name = CString::new(name)
            .map_err(|_| DuckDbMessage("the view name contains a NUL byte".to_owned()))?;
        // SAFETY: open connection, valid name; the caller keeps `stream`.
        let state = unsafe { ffi::duckdb_arrow_scan(self.0, name.as_ptr(), stream.cast()) };
        if state == ffi::DuckDBSuccess {
            Ok(())
        } else {
            Err(DuckDbMessage(
                "DuckDB refused the Arrow stream of the copy".to_owned(),
            ))
        }
    }
}

impl Drop for RawConnection {
    fn drop(&mut self) {
        // SAFETY: connected by `RawDatabase::connect`, disconnected only here.
        unsafe { ffi::duckdb_disconnect(&mut self.0) };
    }
}
