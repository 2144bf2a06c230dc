//! The change model: what a CDC batch carries from source to sink.
//!
//! Changes of one table travel as an Arrow [`RecordBatch`] whose first
//! columns are the table's columns (the new row image; all NULL for deletes)
//! followed by metadata columns:
//!
//! | column | type | meaning |
//! |---|---|---|
//! | [`OP_COLUMN`] | UInt8 | a [`ChangeOp`] code |
//! | [`COMMIT_LSN_COLUMN`] | UInt64 | the transaction's commit LSN |
//! | [`COMMIT_TIME_COLUMN`] | Timestamp(µs, UTC) | the transaction's commit time |
//! | [`SEQUENCE_COLUMN`] | UInt32 | position of the change within its transaction (across tables) |
//! | [`UNCHANGED_COLUMN`] | Binary, nullable | bitmap of columns whose TOAST value was not sent (bit `i` = column `i`); NULL when none |
//! | [`OLD_COLUMN`] | Struct of the table's columns, nullable | the old row image when Postgres sent one (updates that changed the key or under `REPLICA IDENTITY FULL`, all deletes); under a key identity only the identity columns are filled |
//!
//! Rows of a batch are in `(commit LSN, sequence)` order, which is also the
//! order across tables.

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};
use arrow::record_batch::RecordBatch;
use bytes::Bytes;

use super::values::arrow_field;
use super::{Lsn, TableId, TableSchema};

/// Name of the operation metadata column.
pub const OP_COLUMN: &str = "_pgr_op";
/// Name of the commit LSN metadata column.
pub const COMMIT_LSN_COLUMN: &str = "_pgr_commit_lsn";
/// Name of the commit time metadata column.
pub const COMMIT_TIME_COLUMN: &str = "_pgr_commit_time";
/// Name of the in-transaction sequence metadata column.
pub const SEQUENCE_COLUMN: &str = "_pgr_seq";
/// Name of the unchanged-TOAST bitmap metadata column.
pub const UNCHANGED_COLUMN: &str = "_pgr_unchanged";
/// Name of the old row image column.
pub const OLD_COLUMN: &str = "_pgr_old";
/// Number of metadata columns after the table's columns.
pub const METADATA_COLUMNS: usize = 6;

/// The kind of a row change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum ChangeOp {
    /// A new row.
    Insert = 1,
    /// A changed row.
    Update = 2,
    /// A removed row.
    Delete = 3,
}

impl ChangeOp {
    /// Decodes the value of [`OP_COLUMN`].
    pub fn from_code(code: u8) -> Option<Self> {
        match code {
            1 => Some(Self::Insert),
            2 => Some(Self::Update),
            3 => Some(Self::Delete),
            _ => None,
        }
    }

    /// Lower-case name: `insert`, `update` or `delete`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Insert => "insert",
            Self::Update => "update",
            Self::Delete => "delete",
        }
    }
}

/// Arrow schema of a table's backfill batches: the table's columns.
pub fn table_arrow_schema(table: &TableSchema) -> SchemaRef {
    let fields: Vec<Field> = table.columns.iter().map(arrow_field).collect();
    Arc::new(Schema::new(fields))
}

/// Arrow schema of a table's change batches: the table's columns followed by
/// the metadata columns described in the module documentation.
pub fn change_arrow_schema(table: &TableSchema) -> SchemaRef {
    let table_fields: Fields = table.columns.iter().map(arrow_field).collect();
    let mut fields: Vec<Arc<Field>> = table_fields.iter().cloned().collect();
    fields.push(Arc::new(Field::new(OP_COLUMN, DataType::UInt8, false)));
    fields.push(Arc::new(Field::new(
        COMMIT_LSN_COLUMN,
        DataType::UInt64,
        false,
    )));
    fields.push(Arc::new(Field::new(
        COMMIT_TIME_COLUMN,
        DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        false,
    )));
    fields.push(Arc::new(Field::new(
        SEQUENCE_COLUMN,
        DataType::UInt32,
        false,
    )));
    fields.push(Arc::new(Field::new(
        UNCHANGED_COLUMN,
        DataType::Binary,
        true,
    )));
    fields.push(Arc::new(Field::new(
        OLD_COLUMN,
        DataType::Struct(table_fields),
        true,
    )));
    Arc::new(Schema::new(fields))
}

/// Whether bit `column` is set in an [`UNCHANGED_COLUMN`] bitmap.
pub fn is_unchanged(bitmap: &[u8], column: usize) -> bool {
    bitmap
        .get(column / 8)
        .is_some_and(|byte| byte & (1 << (column % 8)) != 0)
}

/// Changes of one table, in commit order.
#[derive(Clone, Debug)]
pub struct TableChanges {
    /// The table's schema at the time of these changes.
    pub table: Arc<TableSchema>,
    /// The changes, laid out as [`change_arrow_schema`] describes.
    pub batch: RecordBatch,
}

/// One event of a CDC batch. Events are in commit order; row changes of
/// several tables between two other events may be grouped per table (their
/// `(commit LSN, sequence)` columns give the order across tables).
#[derive(Clone, Debug)]
pub enum CdcEvent {
    /// Row changes of one table.
    Changes(TableChanges),
    /// `TRUNCATE` of one or more tables in one statement.
    Truncate {
        /// The truncated tables.
        tables: Vec<Arc<TableSchema>>,
        /// `TRUNCATE ... CASCADE` was used.
        cascade: bool,
        /// `TRUNCATE ... RESTART IDENTITY` was used.
        restart_identity: bool,
        /// Commit LSN of the transaction.
        commit_lsn: Lsn,
    },
    /// A table's schema changed (columns added, dropped, retyped or renamed,
    /// or the replica identity changed); later changes of the table use the
    /// new schema.
    SchemaChange {
        /// The schema before the change.
        old: Arc<TableSchema>,
        /// The schema from now on.
        new: Arc<TableSchema>,
    },
    /// A logical decoding message (`pg_logical_emit_message`).
    Message {
        /// Emitted inside a transaction (delivered at its commit) or not.
        transactional: bool,
        /// LSN of the message.
        lsn: Lsn,
        /// The message prefix.
        prefix: String,
        /// The message content.
        content: Bytes,
    },
}

/// A unit of CDC delivery: committed transactions, in order. A batch may
/// have no events: it then only moves the position forward past WAL that
/// carried nothing for the sink (the sink stores `end_lsn` like any other
/// batch's).
///
/// A transaction larger than the batch limits arrives in several batches:
/// all but the last have [`continues`](Self::continues) set.
#[derive(Clone, Debug)]
pub struct CdcBatch {
    /// The events of the transactions, in commit order.
    pub events: Vec<CdcEvent>,
    /// End LSN of the last transaction's commit record: once the sink has
    /// stored this batch durably, the slot may be confirmed up to here.
    pub end_lsn: Lsn,
    /// Number of transactions the batch completes.
    pub transactions: u64,
    /// The batch ends inside a transaction that the next batch continues.
    /// Its events are to be applied like any others, but not made durable
    /// on their own: a transactional sink keeps its transaction open until
    /// a batch without this flag, whose `end_lsn` then covers everything.
    /// `end_lsn` of a continuing batch is the position already handed out
    /// before it, so a sink that returns `end_lsn` never reports part of a
    /// transaction as stored.
    pub continues: bool,
}

/// What a sink remembers of earlier runs, so that a restarted pipeline
/// continues where the last one stopped.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ResumptionState {
    /// Tables whose backfill completed, with the LSN of the snapshot they
    /// were copied in: changes committed before it are already in the copy.
    pub copied_tables: std::collections::BTreeMap<TableId, Lsn>,
    /// End LSN of the last transaction the sink durably applied.
    pub last_lsn: Option<Lsn>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn op_codes_round_trip() {
        for op in [ChangeOp::Insert, ChangeOp::Update, ChangeOp::Delete] {
            assert_eq!(ChangeOp::from_code(op as u8), Some(op));
        }
        assert_eq!(ChangeOp::from_code(0), None);
    }

    #[test]
    fn unchanged_bitmap_bits() {
        let bitmap = [0b0000_0101u8, 0b1000_0000];
        assert!(is_unchanged(&bitmap, 0));
        assert!(!is_unchanged(&bitmap, 1));
        assert!(is_unchanged(&bitmap, 2));
        assert!(is_unchanged(&bitmap, 15));
        assert!(!is_unchanged(&bitmap, 16));
    }
}
