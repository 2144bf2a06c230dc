//! A table copy streamed into DuckDB: the copy's batches feed an Arrow
//! stream that one `INSERT … SELECT` reads, in the copy's own transaction
//! on a connection of its own.
//!
//! DuckDB scans an Arrow stream with all its threads and converts Arrow in
//! its own engine; the Arrow appender converts value by value and inserts
//! on the calling thread (see `docs/benchmarks.md`). The transaction holds
//! the emptying of the table, every row and the record of the finished
//! copy, so a copy is stored whole or not at all, as with the appender.
//!
//! A table that may be replaced (empty, nothing of the user's on it, see
//! [`replaceable`](super::migrate::replaceable)) is instead created again
//! without its primary key and filled, and the key is added in a second
//! transaction that also records the copy. DuckDB then builds the key's
//! index once, in parallel, from the stored rows; filling a keyed table
//! builds it row by row twice (for the insert, then at commit). Until the
//! second transaction commits, the table is not recorded as copied, so a
//! restart copies it again.

use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::error::ArrowError;
use arrow::ffi_stream::FFI_ArrowArrayStream;
use arrow::record_batch::{RecordBatch, RecordBatchReader};
use tracing::warn;

use super::file::OpenFile;
use super::locked_stream::locked_stream;
use super::raw::{DuckDbMessage, RawConnection};
use super::schema::{add_key_sql, column_list, create_table_without_key_sql};
use super::state;
use crate::types::change::table_arrow_schema;
use crate::types::table::quote_identifier;
use crate::types::values::{oid, EXTENSION_NAME_KEY, PG_TYPE_OID_KEY};
use crate::types::{Lsn, TableSchema};
use crate::{Error, ErrorKind, Result};

/// Batches queued between the pipeline and DuckDB's scan: enough to keep
/// DuckDB's threads fed, few enough to bound memory.
const QUEUED_BATCHES: usize = 2;

/// The in-memory database holding the stream's view: `duckdb_arrow_scan`
/// creates a view that is not temporary, and DuckDB cannot write one to a
/// file's log.
const STREAM_DATABASE: &str = "_pg_replicate_copy";

/// The name of the stream's view in [`STREAM_DATABASE`].
const STREAM_VIEW: &str = "_pg_replicate_copy_rows";

/// What the `INSERT` thread hands back: the connection, with the copy's
/// transaction still open, the stream its view refers to, and how the
/// `INSERT` ended.
type Inserted = (
    RawConnection,
    Option<Box<FFI_ArrowArrayStream>>,
    std::result::Result<(), DuckDbMessage>,
);

/// What a copy does with the table's DuckDB table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CopyTarget {
    /// Emptied and filled in one transaction, its key index maintained.
    Refill,
    /// Created again without its key, filled and committed; the key is
    /// added with the record of the copy (see the module documentation).
    RecreateKeyAfter,
}

/// An open streamed copy of one table.
pub(crate) struct StreamedCopy {
    /// The table copied (its DuckDB table has the same name and columns).
    table: Arc<TableSchema>,
    /// How the table is filled.
    target: CopyTarget,
    /// The schema every batch must have: the stream's.
    schema: SchemaRef,
    /// The connection while no `INSERT` runs on it.
    conn: Option<RawConnection>,
    /// The stream, until the `INSERT` takes it. Boxed: DuckDB keeps its
    /// address from the registration on.
    stream: Option<Box<FFI_ArrowArrayStream>>,
    /// Feeds the stream.
    rows: Option<SyncSender<RecordBatch>>,
    /// The thread running the `INSERT`.
    insert: Option<JoinHandle<Inserted>>,
    /// When the `INSERT` started (the first batch).
    started: Option<Instant>,
}

/// Where a copy's time went inside DuckDB, from its first batch on (logged
/// when the copy commits; `benches/duckdb_backfill.rs` reports it).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct CopyTimings {
    /// From the first batch until DuckDB has inserted the last one.
    pub(crate) insert: Duration,
    /// Committing the rows (with [`CopyTarget::Refill`]: the whole commit).
    pub(crate) commit: Duration,
    /// Adding the key and committing it with the copy's record.
    pub(crate) key: Duration,
}

impl StreamedCopy {
    /// Registers the stream, opens the copy's transaction and empties the
    /// table (and its record of a finished copy), or creates it again
    /// without its key. `database` is the name DuckDB gives the file
    /// (`current_database()`).
    pub(crate) fn begin(
        file: &OpenFile,
        database: &str,
        table: Arc<TableSchema>,
        target: CopyTarget,
    ) -> Result<Self> {
        let schema = stream_schema(&table);
        let (sender, receiver) = sync_channel(QUEUED_BATCHES);
        let reader = ChannelReader {
            schema: schema.clone(),
            receiver,
        };
        let mut stream = Box::new(locked_stream(Box::new(reader)));
        let mut conn = file.raw_connect()?;
        conn.execute(&format!(
            "ATTACH IF NOT EXISTS ':memory:' AS {STREAM_DATABASE}; USE {STREAM_DATABASE};"
        ))
        .map_err(|e| {
            failed(
                &table,
                "attach the in-memory database of the copy's stream",
                e,
            )
        })?;
        // SAFETY: the stream is boxed and kept until the connection is gone
        // (it moves to the INSERT's thread and back).
        unsafe { conn.register_stream(STREAM_VIEW, &mut *stream) }
            .map_err(|e| failed(&table, "register the copy's stream", e))?;
        // From here on, dropping the copy removes the view before the stream.
        let mut copy = Self {
            table,
            target,
            schema,
            conn: Some(conn),
            stream: Some(stream),
            rows: Some(sender),
            insert: None,
            started: None,
        };
        let name = copy.table.name.quoted();
        let empty = match target {
            CopyTarget::Refill => format!("DELETE FROM {name};"),
            CopyTarget::RecreateKeyAfter => format!(
                "DROP TABLE {name}; {};",
                create_table_without_key_sql(&copy.table)
            ),
        };
        let sql = format!(
            "USE {}; BEGIN TRANSACTION; {} {empty}",
            quote_identifier(database),
            state::unmark_copied_sql(copy.table.id),
        );
        if let Some(conn) = copy.conn.as_mut() {
            conn.execute(&sql)
                .map_err(|e| failed(&copy.table, "empty the table for its copy", e))?;
        }
        Ok(copy)
    }

    /// Hands `rows` to the copy; the first batch starts the `INSERT`.
    /// Blocks while DuckDB is behind by [`QUEUED_BATCHES`].
    pub(crate) fn write(&mut self, rows: RecordBatch) -> Result<()> {
        // DuckDB reads each batch as the registered schema says.
        if !same_types(&rows.schema(), &self.schema) {
            return Err(Error::new(
                ErrorKind::Sink,
                format!(
                    "a copied batch of {} does not have the table's Arrow schema",
                    self.table.name
                ),
            ));
        }
        if self.insert.is_none() {
            self.start_insert()?;
        }
        let sent = self.rows.as_ref().map(|sender| sender.send(rows));
        match sent {
            Some(Ok(())) => Ok(()),
            // The INSERT ended early: its error says why.
            _ => {
                self.rows = None;
                self.join_insert()?;
                Err(Error::new(
                    ErrorKind::Sink,
                    format!(
                        "DuckDB stopped reading the copy of {} before its end",
                        self.table.name
                    ),
                ))
            }
        }
    }

    /// Ends the stream, records the copy as finished at `snapshot_lsn` and
    /// commits (with [`CopyTarget::RecreateKeyAfter`]: commits the rows,
    /// then adds the key and records the copy in a second transaction).
    pub(crate) fn commit(mut self, snapshot_lsn: Lsn) -> Result<CopyTimings> {
        self.rows = None;
        let started = self.started.unwrap_or_else(Instant::now);
        self.join_insert()?;
        let inserted = Instant::now();
        let mut timings = CopyTimings {
            insert: inserted - started,
            ..CopyTimings::default()
        };
        let table = self.table.clone();
        let conn = self.conn.as_mut().ok_or_else(|| lost(&table))?;
        let record = state::mark_copied_sql(&table, snapshot_lsn);
        let add_key = match self.target {
            CopyTarget::Refill => None,
            CopyTarget::RecreateKeyAfter => add_key_sql(&table),
        };
        let Some(add_key) = add_key else {
            conn.execute(&format!("{record} COMMIT;"))
                .map_err(|e| failed(&table, "commit the copy", e))?;
            timings.commit = inserted.elapsed();
            return Ok(timings);
        };
        conn.execute("COMMIT")
            .map_err(|e| failed(&table, "commit the copied rows", e))?;
        let committed = Instant::now();
        timings.commit = committed - inserted;
        commit_by_checkpoint(conn, &format!("BEGIN TRANSACTION; {add_key}; {record} COMMIT;"))
            .map_err(|e| {
                Error::with_source(
                    ErrorKind::Sink,
                    format!(
                        "DuckDB failed to add the primary key of {} after its copy (the rows are stored but \
                         the table is not recorded as copied; a restart copies it again)",
                        table.name
                    ),
                    e,
                )
            })?;
        timings.key = committed.elapsed();
        Ok(timings)
    }

    /// Ends the stream and rolls the copy back.
    pub(crate) fn rollback(self) {
        drop(self);
    }

    fn start_insert(&mut self) -> Result<()> {
        let table = self.table.clone();
        let mut conn = self.conn.take().ok_or_else(|| lost(&table))?;
        let stream = self.stream.take();
        let columns: Vec<usize> = (0..table.columns.len()).collect();
        let sql = format!(
            "INSERT INTO {} ({}) SELECT * FROM {STREAM_DATABASE}.main.{STREAM_VIEW}",
            table.name.quoted(),
            column_list(&table, &columns)
        );
        let insert = std::thread::Builder::new()
            .name("pg_replicate-duckdb-copy".to_owned())
            .spawn(move || {
                // Whatever happens, the stream comes back with the
                // connection, so that it outlives the view reading it.
                let result =
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| conn.execute(&sql)))
                        .unwrap_or_else(|_| Err(DuckDbMessage("the INSERT panicked".to_owned())));
                (conn, stream, result)
            });
        match insert {
            Ok(insert) => {
                self.insert = Some(insert);
                self.started = Some(Instant::now());
                Ok(())
            }
            Err(e) => Err(Error::with_source(
                ErrorKind::Sink,
                format!("cannot start the DuckDB copy of {}", table.name),
                e,
            )),
        }
    }

    /// Waits for the `INSERT` to end (the stream must be closed) and takes
    /// the connection and the stream back.
    fn join_insert(&mut self) -> Result<()> {
        let Some(insert) = self.insert.take() else {
            return Ok(());
        };
        let Ok((conn, stream, result)) = insert.join() else {
            return Err(lost(&self.table));
        };
        self.conn = Some(conn);
        self.stream = stream;
        result.map_err(|e| failed(&self.table, "insert the copied rows", e))
    }
}

impl Drop for StreamedCopy {
    /// Ends the stream (an unfinished `INSERT` then ends), rolls back what
    /// was not committed, and removes the view before the stream it reads
    /// is freed; if the view cannot be removed, the stream is leaked
    /// rather than left dangling.
    fn drop(&mut self) {
        self.rows = None;
        let _ = self.join_insert();
        let removed = match self.conn.as_mut() {
            Some(conn) => {
                // Fails harmlessly after a commit.
                let _ = conn.execute("ROLLBACK");
                conn.execute(&format!(
                    "DROP VIEW IF EXISTS {STREAM_DATABASE}.main.{STREAM_VIEW}; \
                     DETACH DATABASE IF EXISTS {STREAM_DATABASE};"
                ))
                .is_ok()
            }
            None => false,
        };
        self.conn = None;
        if let Some(stream) = self.stream.take() {
            if !removed {
                std::mem::forget(stream);
            }
        }
    }
}

/// Runs `transaction` (a whole `BEGIN … COMMIT`) so that its commit checkpoints
/// the file instead of writing the WAL.
///
/// Adding the key writes the whole index at commit: through the WAL it is
/// written twice (to the WAL, then by the next checkpoint, at the latest when
/// the file is closed), about 85 ms more for 5,000,000 rows
/// (`docs/benchmarks.md`). The settings are the
/// database's, so they are reset whatever the outcome; DuckDB falls back to
/// the WAL when another transaction keeps it from checkpointing. Left set,
/// they would only make later commits checkpoint too, so a failed reset is
/// logged rather than reported as a failed copy.
fn commit_by_checkpoint(conn: &mut RawConnection, transaction: &str) -> Result<(), DuckDbMessage> {
    conn.execute("SET checkpoint_threshold = '0KB'; SET auto_checkpoint_skip_wal_threshold = 0;")?;
    let outcome = conn.execute(transaction);
    if outcome.is_err() {
        // Fails harmlessly when the failed statement ended the transaction.
        let _ = conn.execute("ROLLBACK");
    }
    if let Err(e) =
        conn.execute("RESET checkpoint_threshold; RESET auto_checkpoint_skip_wal_threshold;")
    {
        warn!(error = %e, "DuckDB did not reset its checkpoint settings; later commits checkpoint the file");
    }
    outcome
}

fn lost(table: &TableSchema) -> Error {
    Error::new(
        ErrorKind::Sink,
        format!(
            "the DuckDB copy of {} lost its connection after an earlier error (the copy was rolled back; a \
             restart copies the table again)",
            table.name
        ),
    )
}

/// The table's Arrow schema, json and jsonb columns marked as the
/// `arrow.json` extension type: DuckDB then takes them as JSON as they
/// are, where a cast from text would parse every value again (Postgres
/// only sends valid JSON).
fn stream_schema(table: &TableSchema) -> SchemaRef {
    let schema = table_arrow_schema(table);
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|field| {
            let json = field.data_type() == &DataType::Utf8
                && matches!(
                    field
                        .metadata()
                        .get(PG_TYPE_OID_KEY)
                        .and_then(|o| o.parse().ok()),
                    Some(oid::JSON | oid::JSONB)
                );
            let mut field = field.as_ref().clone();
            if json {
                let mut metadata = field.metadata().clone();
                metadata.insert(EXTENSION_NAME_KEY.to_owned(), "arrow.json".to_owned());
                field = field.with_metadata(metadata);
            }
            field
        })
        .collect();
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

/// Whether two schemas have the same fields in the same order (names,
/// types, nullability).
fn same_types(a: &SchemaRef, b: &SchemaRef) -> bool {
    a.fields().len() == b.fields().len()
        && a.fields().iter().zip(b.fields()).all(|(x, y)| {
            x.name() == y.name()
                && x.data_type() == y.data_type()
                && x.is_nullable() == y.is_nullable()
        })
}

fn failed(table: &TableSchema, what: &str, error: DuckDbMessage) -> Error {
    Error::with_source(
        ErrorKind::Sink,
        format!(
            "DuckDB failed to {what} of {} (the copy was rolled back; a restart copies the table again)",
            table.name
        ),
        error,
    )
}

/// The copy's batches, as DuckDB's Arrow scan asks for them (from its own
/// threads, one at a time).
struct ChannelReader {
    schema: SchemaRef,
    receiver: Receiver<RecordBatch>,
}

impl Iterator for ChannelReader {
    type Item = std::result::Result<RecordBatch, ArrowError>;

    fn next(&mut self) -> Option<Self::Item> {
        // The sender is dropped at the end of the copy: the stream ends.
        self.receiver.recv().ok().map(Ok)
    }
}

impl RecordBatchReader for ChannelReader {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }
}
