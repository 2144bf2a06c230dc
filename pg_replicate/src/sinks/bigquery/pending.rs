//! The changes of a CDC batch waiting for the next apply script, and which
//! of them a stored position already covers. Pure: no I/O.

use std::sync::Arc;

use arrow::array::{Array, BooleanArray, RecordBatch, UInt32Array, UInt64Array};
use arrow::compute::filter_record_batch;

use super::script::Step;
use super::state::Position;
use crate::types::change::{COMMIT_LSN_COLUMN, SEQUENCE_COLUMN};
use crate::types::{Lsn, TableSchema};
use crate::{Error, ErrorKind, Result};

/// The changes of one table waiting for the next script.
pub(super) struct PendingTable {
    pub(super) table: Arc<TableSchema>,
    pub(super) staged: Vec<RecordBatch>,
    pub(super) rows: usize,
    pub(super) last_round: u32,
    pub(super) reads: bool,
    pub(super) steps: Vec<Step>,
}

/// Everything waiting for the next script, tables in first-touched order.
#[derive(Default)]
pub(super) struct Pending {
    pub(super) tables: Vec<PendingTable>,
}

impl Pending {
    pub(super) fn entry(&mut self, table: &Arc<TableSchema>) -> &mut PendingTable {
        let at = match self.tables.iter().position(|t| t.table.id == table.id) {
            Some(at) => at,
            None => {
                self.tables.push(PendingTable {
                    table: table.clone(),
                    staged: Vec::new(),
                    rows: 0,
                    last_round: 0,
                    reads: false,
                    steps: Vec::new(),
                });
                self.tables.len() - 1
            }
        };
        &mut self.tables[at]
    }
}

/// The row changes of `batch` not covered by `position`, or `None` when
/// all are.
pub(super) fn uncovered(
    batch: &RecordBatch,
    position: Option<Position>,
) -> Result<Option<RecordBatch>> {
    let Some(position) = position else {
        return Ok((batch.num_rows() > 0).then(|| batch.clone()));
    };
    let (commits, seqs) = commits_and_seqs(batch)?;
    let keep: BooleanArray = (0..batch.num_rows())
        .map(|i| Some(!position.covers_row(Lsn(commits.value(i)), seqs.value(i))))
        .collect();
    if keep.true_count() == 0 {
        return Ok(None);
    }
    if keep.true_count() == batch.num_rows() {
        return Ok(Some(batch.clone()));
    }
    filter_record_batch(batch, &keep)
        .map(Some)
        .map_err(|e| Error::with_source(ErrorKind::Sink, "filter changes already applied", e))
}

pub(super) fn commits_and_seqs(batch: &RecordBatch) -> Result<(&UInt64Array, &UInt32Array)> {
    let commits = batch
        .column_by_name(COMMIT_LSN_COLUMN)
        .and_then(|c| c.as_any().downcast_ref::<UInt64Array>());
    let seqs = batch
        .column_by_name(SEQUENCE_COLUMN)
        .and_then(|c| c.as_any().downcast_ref::<UInt32Array>());
    commits.zip(seqs).ok_or_else(|| {
        Error::new(
            ErrorKind::Sink,
            "a change batch lacks its commit LSN or sequence column; this is a bug in the caller",
        )
    })
}

/// Moves `applied` past the last row change of `batch`.
pub(super) fn advance_rows(applied: &mut Option<Position>, batch: &RecordBatch) -> Result<()> {
    let (commits, seqs) = commits_and_seqs(batch)?;
    for i in 0..batch.num_rows() {
        let (commit, seq) = (Lsn(commits.value(i)), seqs.value(i));
        match applied {
            Some(p) if p.commit_lsn == commit => p.seq = p.seq.max(Some(seq)),
            Some(p) if p.commit_lsn > commit => {}
            _ => {
                *applied = Some(Position {
                    commit_lsn: commit,
                    seq: Some(seq),
                    events: 0,
                })
            }
        }
    }
    Ok(())
}
