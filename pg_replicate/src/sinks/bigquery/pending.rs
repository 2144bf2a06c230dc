//! The changes of a CDC batch waiting for the next apply script, and which
//! of them a stored position already covers. Pure: no I/O.

use std::sync::Arc;

use arrow::array::{Array, RecordBatch, UInt32Array, UInt64Array};

use super::script::Step;
use super::state::{Position, Progress};
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

/// The row changes of `batch` that `stored` does not cover, or `None` when
/// it covers all. A table's changes arrive in stream order (commit LSN,
/// then sequence), so the covered ones are a prefix: the rest is a slice.
pub(super) fn uncovered(batch: &RecordBatch, stored: &Progress) -> Result<Option<RecordBatch>> {
    let (commits, seqs) = commits_and_seqs(batch)?;
    let rows = batch.num_rows();
    let first = (0..rows)
        .find(|&i| !stored.covers_row(Lsn(commits.value(i)), seqs.value(i)))
        .unwrap_or(rows);
    Ok((first < rows).then(|| batch.slice(first, rows - first)))
}

/// The first and last commit LSN of the row changes of `batch` (for logs).
pub(super) fn commit_range(batch: &crate::types::change::CdcBatch) -> Option<(Lsn, Lsn)> {
    let mut range: Option<(u64, u64)> = None;
    for event in &batch.events {
        if let crate::types::change::CdcEvent::Changes(changes) = event {
            if let Ok((commits, _)) = commits_and_seqs(&changes.batch) {
                for &c in commits.values() {
                    range = Some(range.map_or((c, c), |(a, b)| (a.min(c), b.max(c))));
                }
            }
        }
    }
    range.map(|(a, b)| (Lsn(a), Lsn(b)))
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

#[cfg(test)]
mod tests {
    use arrow::compute::concat_batches;

    use super::*;
    use crate::sinks::test_fixtures::{change_batch, table, Change};
    use crate::types::change::ChangeOp;

    fn insert(id: i32) -> Change {
        Change {
            op: ChangeOp::Insert,
            new: Some((Some(id), Some(id), None)),
            toast: false,
            old: None,
        }
    }

    /// Two transactions: three changes committed at 100, three at 200.
    fn two_transactions() -> RecordBatch {
        let t = table(1, "t", false);
        let first = change_batch(&t, &[insert(1), insert(2), insert(3)], 100);
        let second = change_batch(&t, &[insert(4), insert(5), insert(6)], 200);
        concat_batches(&first.schema(), &[first, second]).unwrap()
    }

    fn kept(batch: &RecordBatch, stored: &Progress) -> Vec<(u64, u32)> {
        match uncovered(batch, stored).unwrap() {
            None => Vec::new(),
            Some(rows) => {
                let (commits, seqs) = commits_and_seqs(&rows).unwrap();
                commits
                    .values()
                    .iter()
                    .copied()
                    .zip(seqs.values().iter().copied())
                    .collect()
            }
        }
    }

    #[test]
    fn changes_of_transactions_before_the_stored_lsn_are_dropped() {
        let batch = two_transactions();
        assert_eq!(kept(&batch, &Progress::default()).len(), 6);
        // Stored up to the end of the first transaction, as when a killed
        // process's last script committed after the stream chose its start.
        let stored = Progress {
            last_lsn: Some(Lsn(150)),
            position: None,
        };
        assert_eq!(kept(&batch, &stored), vec![(200, 0), (200, 1), (200, 2)]);
        let partial = Progress {
            last_lsn: Some(Lsn(150)),
            position: Some(Position {
                commit_lsn: Lsn(200),
                seq: Some(1),
                events: 0,
            }),
        };
        assert_eq!(kept(&batch, &partial), vec![(200, 2)]);
        let all = Progress {
            last_lsn: Some(Lsn(250)),
            position: None,
        };
        assert!(kept(&batch, &all).is_empty());
    }
}
