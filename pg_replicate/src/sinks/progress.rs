//! How far a sink has applied the stream, finer than an LSN: the end LSN
//! of the last batch applied completely, and the part of a transaction
//! applied beyond it when a sink had to commit part of one (a transaction
//! larger than a batch, or a schema change inside a batch). A restarted
//! sink skips exactly the changes this covers when Postgres sends them
//! again. Pure: no I/O.

use arrow::array::{Array, RecordBatch, UInt32Array, UInt64Array};

use crate::types::change::{COMMIT_LSN_COLUMN, SEQUENCE_COLUMN};
use crate::types::Lsn;
use crate::{Error, ErrorKind, Result};

/// Part of a transaction applied (see the module documentation).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Position {
    /// Commit LSN of the transaction.
    pub commit_lsn: Lsn,
    /// Its row changes up to this sequence number are applied; `None`: none.
    pub seq: Option<u32>,
    /// Its first `events` truncates and schema changes are applied.
    pub events: u32,
}

impl Position {
    /// Whether a row change of the transaction committed at `commit_lsn`
    /// with sequence number `seq` is already applied.
    pub fn covers_row(&self, commit_lsn: Lsn, seq: u32) -> bool {
        commit_lsn < self.commit_lsn || (commit_lsn == self.commit_lsn && self.seq >= Some(seq))
    }
}

/// How far the sink has applied the stream.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    /// End LSN of the last batch applied completely.
    pub last_lsn: Option<Lsn>,
    /// The part of a transaction applied beyond `last_lsn`, if any.
    pub position: Option<Position>,
}

impl Progress {
    /// Whether a row change of the transaction committed at `commit_lsn`
    /// with sequence number `seq` is already applied: its transaction
    /// committed before `last_lsn`, or the position covers it. The sink
    /// checks this itself rather than trust where the stream resumes: a
    /// killed process's last script can commit after the restarted
    /// pipeline chose its start.
    pub fn covers_row(&self, commit_lsn: Lsn, seq: u32) -> bool {
        self.last_lsn.is_some_and(|last| commit_lsn < last)
            || self.position.is_some_and(|p| p.covers_row(commit_lsn, seq))
    }

    /// Whether every transaction of a complete batch ending at `end_lsn`
    /// is already applied: it ends before the stored LSN, or before the
    /// commit of the transaction applied in part.
    pub fn covers_batch_ending_at(&self, end_lsn: Lsn) -> bool {
        self.last_lsn.is_some_and(|last| end_lsn <= last)
            || self.position.is_some_and(|p| end_lsn <= p.commit_lsn)
    }

    /// Whether the `index`-th truncate or schema change (from 1) of the
    /// transaction committed at `commit_lsn` is already applied.
    pub fn covers_event(&self, commit_lsn: Lsn, index: u32) -> bool {
        self.last_lsn.is_some_and(|last| commit_lsn < last)
            || self.position.is_some_and(|p| {
                commit_lsn < p.commit_lsn || (commit_lsn == p.commit_lsn && index <= p.events)
            })
    }
}

/// The row changes of `batch` that `stored` does not cover, or `None` when
/// it covers all. A table's changes arrive in stream order (commit LSN,
/// then sequence), so the covered ones are a prefix: the rest is a slice.
pub(crate) fn uncovered(batch: &RecordBatch, stored: &Progress) -> Result<Option<RecordBatch>> {
    let (commits, seqs) = commits_and_seqs(batch)?;
    let rows = batch.num_rows();
    let first = (0..rows)
        .find(|&i| !stored.covers_row(Lsn(commits.value(i)), seqs.value(i)))
        .unwrap_or(rows);
    Ok((first < rows).then(|| batch.slice(first, rows - first)))
}

/// Counts a truncate of the transaction committed at `commit_lsn` in
/// `seen` (the commit LSN of the transaction whose truncates it counts,
/// and how many so far) and, unless `stored` already covers it, moves
/// `applied` past it. `false` when it is already applied.
pub(crate) fn advance_truncate(
    seen: &mut (Lsn, u32),
    applied: &mut Option<Position>,
    stored: &Progress,
    commit_lsn: Lsn,
) -> bool {
    if seen.0 != commit_lsn {
        *seen = (commit_lsn, 0);
    }
    seen.1 += 1;
    let index = seen.1;
    if stored.covers_event(commit_lsn, index) {
        return false;
    }
    match applied {
        Some(p) if p.commit_lsn == commit_lsn => p.events = index,
        _ => {
            *applied = Some(Position {
                commit_lsn,
                seq: None,
                events: index,
            })
        }
    }
    true
}

/// The first and last commit LSN of the row changes of `batch` (for logs).
pub(crate) fn commit_range(batch: &crate::types::change::CdcBatch) -> Option<(Lsn, Lsn)> {
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

pub(crate) fn commits_and_seqs(batch: &RecordBatch) -> Result<(&UInt64Array, &UInt32Array)> {
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
pub(crate) fn advance_rows(applied: &mut Option<Position>, batch: &RecordBatch) -> Result<()> {
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
