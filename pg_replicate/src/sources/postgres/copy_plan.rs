//! Splitting a backfill into units that copy connections read in parallel:
//! one unit per leaf relation (a partitioned table is read partition by
//! partition), large relations split into ctid block ranges.
//!
//! The ranges are planned from the relation's size when the backfill starts,
//! which may be stale by the time a range is read. The first range has no
//! lower bound and the last no upper bound, so rows in blocks the plan did
//! not know about are still read, exactly once.

use std::sync::Arc;

use crate::types::values::copy_select_expr;
use crate::types::{TableName, TableSchema};

/// Smallest relation (in 8 KiB blocks) worth splitting: 16 MiB.
pub(crate) const MIN_SPLIT_BLOCKS: u64 = 2048;

/// Smallest range (in blocks) a split produces: 8 MiB.
const MIN_RANGE_BLOCKS: u64 = 1024;

/// Each range takes this share, per copy connection, of the blocks not yet
/// planned: ranges shrink towards the end of the relation, so connections
/// that take them in order finish close together (guided scheduling).
const SHARE_PER_CONNECTION: u64 = 4;

/// Which blocks of a relation one `COPY` reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BlockRange {
    /// The whole relation.
    All,
    /// Blocks before the given one (the first range: no lower bound).
    Before(u32),
    /// Blocks from the first to before the second.
    Between(u32, u32),
    /// Blocks from the given one on (the last range: no upper bound).
    From(u32),
}

impl BlockRange {
    /// The `WHERE` condition selecting the range (Postgres 14+ reads it
    /// with a TID range scan), or `None` for the whole relation.
    pub(crate) fn condition(self) -> Option<String> {
        match self {
            Self::All => None,
            Self::Before(end) => Some(format!("ctid < '({end},0)'::tid")),
            Self::Between(start, end) => Some(format!(
                "ctid >= '({start},0)'::tid AND ctid < '({end},0)'::tid"
            )),
            Self::From(start) => Some(format!("ctid >= '({start},0)'::tid")),
        }
    }
}

/// Splits a relation of `blocks` blocks into consecutive ranges for
/// `connections` copy connections; small relations stay whole.
pub(crate) fn split_blocks(blocks: u64, connections: usize) -> Vec<BlockRange> {
    let connections = connections.max(1) as u64;
    if connections == 1 || blocks < MIN_SPLIT_BLOCKS {
        return vec![BlockRange::All];
    }
    // Block numbers are 32-bit in Postgres; sizes come from the server.
    let block = |n: u64| u32::try_from(n).unwrap_or(u32::MAX);
    let mut ranges = Vec::new();
    let mut start = 0;
    loop {
        let remaining = blocks - start;
        let size = remaining
            .div_ceil(connections * SHARE_PER_CONNECTION)
            .max(MIN_RANGE_BLOCKS);
        if remaining < size + MIN_RANGE_BLOCKS {
            break;
        }
        let end = start + size;
        ranges.push(if start == 0 {
            BlockRange::Before(block(end))
        } else {
            BlockRange::Between(block(start), block(end))
        });
        start = end;
    }
    if ranges.is_empty() {
        return vec![BlockRange::All];
    }
    ranges.push(BlockRange::From(block(start)));
    ranges
}

/// One `COPY` of a backfill.
#[derive(Clone, Debug)]
pub(crate) struct CopyUnit {
    /// The published table; batches have its columns.
    pub table: Arc<TableSchema>,
    /// The relation read (`FROM ONLY`): the table itself, or one of its leaf
    /// partitions.
    pub relation: TableName,
    /// The blocks read.
    pub range: BlockRange,
    /// The publication's row filter of the table, if any (Postgres 15+).
    pub row_filter: Option<String>,
}

impl CopyUnit {
    /// The `COPY` statement of this unit.
    pub(crate) fn statement(&self) -> String {
        let columns: Vec<String> = self.table.columns.iter().map(copy_select_expr).collect();
        let select = if columns.is_empty() {
            // A table without columns still has rows; COPY needs an expression.
            "NULL::int4".to_owned()
        } else {
            columns.join(", ")
        };
        let conditions: Vec<String> = self
            .row_filter
            .iter()
            .map(|filter| format!("({filter})"))
            .chain(self.range.condition())
            .collect();
        let filter = if conditions.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", conditions.join(" AND "))
        };
        format!(
            "COPY (SELECT {select} FROM ONLY {}{filter}) TO STDOUT (FORMAT binary)",
            self.relation.quoted()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_relations_and_single_connections_stay_whole() {
        assert_eq!(split_blocks(0, 4), vec![BlockRange::All]);
        assert_eq!(split_blocks(MIN_SPLIT_BLOCKS - 1, 4), vec![BlockRange::All]);
        assert_eq!(split_blocks(1_000_000, 1), vec![BlockRange::All]);
    }

    #[test]
    fn ranges_are_contiguous_with_open_ends() {
        for (blocks, connections) in [(2048, 2), (100_000, 2), (99_999, 3), (5_000_000, 8)] {
            let ranges = split_blocks(blocks, connections);
            assert!(ranges.len() >= 2, "{blocks} blocks should split");
            assert!(matches!(ranges[0], BlockRange::Before(_)));
            assert!(matches!(ranges[ranges.len() - 1], BlockRange::From(_)));
            let mut next = 0;
            for range in &ranges {
                let (start, end) = match *range {
                    BlockRange::Before(end) => (0, Some(end)),
                    BlockRange::Between(start, end) => (start, Some(end)),
                    BlockRange::From(start) => (start, None),
                    BlockRange::All => unreachable!(),
                };
                assert_eq!(start, next, "gap or overlap in {ranges:?}");
                if let Some(end) = end {
                    assert!(end > start);
                    assert!(u64::from(end - start) >= MIN_RANGE_BLOCKS);
                    next = end;
                }
            }
            assert!(
                u64::from(next) < blocks,
                "the open last range starts inside the relation"
            );
        }
    }

    #[test]
    fn ranges_shrink_towards_the_end() {
        let ranges = split_blocks(125_000, 2);
        let sizes: Vec<u32> = ranges
            .windows(2)
            .map(|pair| match (pair[0], pair[1]) {
                (BlockRange::Before(end), BlockRange::Between(start, _))
                | (
                    BlockRange::Between(_, end),
                    BlockRange::Between(start, _) | BlockRange::From(start),
                ) => {
                    assert_eq!(end, start);
                    end
                }
                (BlockRange::Before(end), BlockRange::From(_)) => end,
                other => panic!("unexpected ranges {other:?}"),
            })
            .scan(0, |previous, end| {
                let size = end - *previous;
                *previous = end;
                Some(size)
            })
            .collect();
        // The first takes an eighth (4 shares × 2 connections), the last
        // ones the minimum, so the connections end within a small range.
        assert_eq!(sizes[0], 125_000 / 8);
        assert!(sizes.windows(2).all(|w| w[0] >= w[1]), "{sizes:?}");
        assert_eq!(*sizes.last().unwrap(), MIN_RANGE_BLOCKS as u32);
        assert!(ranges.len() < 40, "{} ranges", ranges.len());
    }

    #[test]
    fn conditions_select_by_ctid() {
        assert_eq!(BlockRange::All.condition(), None);
        assert_eq!(
            BlockRange::Before(8).condition().as_deref(),
            Some("ctid < '(8,0)'::tid")
        );
        assert_eq!(
            BlockRange::Between(8, 16).condition().as_deref(),
            Some("ctid >= '(8,0)'::tid AND ctid < '(16,0)'::tid")
        );
        assert_eq!(
            BlockRange::From(16).condition().as_deref(),
            Some("ctid >= '(16,0)'::tid")
        );
    }
}
