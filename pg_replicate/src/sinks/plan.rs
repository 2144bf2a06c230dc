//! Ordering the changes of one table so that they can be applied with
//! set-based SQL: the *rounds*.
//!
//! A change touches up to two keys: its old key (the row it removes or
//! replaces) and its new key (the row it writes). Applied in order one by
//! one, the changes give the right result; applied all at once, two changes
//! of the same key would conflict. So every change gets a round: one more
//! than the highest round of the earlier changes that touch one of its keys.
//! Changes of one round touch pairwise different keys and can be applied
//! together (`DELETE` of their keys, `INSERT` of their new rows), rounds one
//! after the other. Independent changes share round 1, so a batch of changes
//! to distinct keys is one round whatever its size.
//!
//! Before that, changes whose effect a later change erases are dropped: a
//! change is dead when, for every key it touches, the next change touching
//! that key removes the row without reading it (a delete, an insert or an
//! update that sends all its values). Repeated updates of a hot key thus
//! cost one round, not one per update. A change that keeps unchanged TOAST
//! values reads the row at its lookup key, so the change before it there
//! stays.
//!
//! The planner is generic over the key type; the sink passes the bytes of
//! Arrow's row format of the key columns.

use std::collections::HashMap;
use std::hash::Hash;

#[cfg(any(feature = "duckdb", feature = "postgres-sink"))]
pub use keyed::{plan_keyed, unkeyed_steps, UnkeyedStep};

/// What the planner needs to know of one change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlannedChange<K> {
    /// The key of the row the change removes or replaces: the old key of
    /// updates that sent one, and of deletes. `None` for inserts and for
    /// updates that kept their key.
    pub old: Option<K>,
    /// The key of the row the change writes (inserts, updates); `None` for
    /// deletes.
    pub new: Option<K>,
    /// The change keeps some stored values (unchanged TOAST columns), read
    /// from the row at its lookup key (`old`, else `new`).
    pub reads: bool,
}

impl<K: Copy + Eq> PlannedChange<K> {
    /// The keys the change touches: one or two.
    fn keys(&self) -> impl Iterator<Item = K> {
        let second = match (self.old, self.new) {
            (Some(old), Some(new)) if old != new => Some(new),
            (None, new) => new,
            _ => None,
        };
        self.old.into_iter().chain(second)
    }

    /// The key whose row the change reads, when it reads.
    fn lookup(&self) -> Option<K> {
        if self.reads {
            self.old.or(self.new)
        } else {
            None
        }
    }
}

/// The rounds of a table's changes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Per change, in input order: its round (1-based), or 0 when a later
    /// change erases its effect and it is skipped.
    pub round: Vec<u32>,
    /// Per round (index `round - 1`): whether a change of the round reads
    /// stored values.
    pub reads: Vec<bool>,
}

impl Plan {
    /// The number of rounds.
    pub fn rounds(&self) -> u32 {
        self.reads.len() as u32
    }

    /// The number of changes that are applied (not skipped).
    pub fn applied(&self) -> usize {
        self.round.iter().filter(|r| **r > 0).count()
    }
}

/// Plans the changes of one table, given in commit order.
pub fn plan<K: Copy + Eq + Hash>(changes: &[PlannedChange<K>]) -> Plan {
    // Backward: is the next (kept) change touching a key one that removes
    // the row there without reading it?
    let mut next_removes: HashMap<K, bool> = HashMap::with_capacity(changes.len());
    let mut kept = vec![false; changes.len()];
    for (i, change) in changes.iter().enumerate().rev() {
        let dead = change
            .keys()
            .all(|k| next_removes.get(&k).copied().unwrap_or(false));
        if dead {
            continue;
        }
        kept[i] = true;
        let lookup = change.lookup();
        for key in change.keys() {
            next_removes.insert(key, lookup != Some(key));
        }
    }

    // Forward: rounds of the kept changes.
    let mut last_round: HashMap<K, u32> = HashMap::with_capacity(changes.len());
    let mut plan = Plan {
        round: vec![0; changes.len()],
        reads: Vec::new(),
    };
    for (i, change) in changes.iter().enumerate() {
        if !kept[i] {
            continue;
        }
        let round = 1 + change
            .keys()
            .map(|k| last_round.get(&k).copied().unwrap_or(0))
            .max()
            .unwrap_or(0);
        for key in change.keys() {
            last_round.insert(key, round);
        }
        plan.round[i] = round;
        let index = round as usize - 1;
        if plan.reads.len() <= index {
            plan.reads.resize(index + 1, false);
        }
        plan.reads[index] |= change.reads;
    }
    plan
}

#[cfg(any(feature = "duckdb", feature = "postgres-sink"))]
mod keyed {
    use arrow::array::{Array, ArrayRef};
    use arrow::row::{RowConverter, SortField};

    use super::{plan, Plan, PlannedChange};
    use crate::sinks::changes::Changes;
    use crate::types::change::{is_unchanged, ChangeOp};
    use crate::{Error, ErrorKind, Result};

    /// The rounds of the changes of a table whose rows are identified by
    /// the columns `keys`, compared as Arrow row-format bytes. `sink` names
    /// the sink in errors (a key column not sent, a delete without old key).
    pub fn plan_keyed(changes: &Changes<'_>, keys: &[usize], sink: &str) -> Result<Plan> {
        let table = changes.table;
        let arrow_error = |e: arrow::error::ArrowError| {
            Error::with_source(
                ErrorKind::Sink,
                format!("cannot compare the keys of the changes of {}", table.name),
                e,
            )
        };
        let converter = RowConverter::new(
            keys.iter()
                .map(|&k| SortField::new(changes.new[k].data_type().clone()))
                .collect(),
        )
        .map_err(arrow_error)?;
        let new_keys: Vec<ArrayRef> = keys.iter().map(|&k| changes.new[k].clone()).collect();
        let old_keys: Vec<ArrayRef> = keys
            .iter()
            .map(|&k| changes.old.column(k).clone())
            .collect();
        let new_rows = converter.convert_columns(&new_keys).map_err(arrow_error)?;
        let old_rows = converter.convert_columns(&old_keys).map_err(arrow_error)?;

        let mut planned = Vec::with_capacity(changes.len());
        for row in 0..changes.len() {
            let old = changes.old.is_valid(row).then(|| old_rows.row(row));
            let bitmap = changes.unchanged_bitmap(row);
            if let Some(bitmap) = bitmap {
                if let Some(&k) = keys.iter().find(|&&k| is_unchanged(bitmap, k)) {
                    return Err(Error::new(
                        ErrorKind::Data,
                        format!(
                            "an update of {} did not send its key column {} (unchanged TOAST value); the \
                             {sink} sink cannot find the row: use a key without out-of-line values",
                            table.name, table.columns[k].name
                        ),
                    ));
                }
            }
            let change = match changes.op(row) {
                ChangeOp::Insert => PlannedChange {
                    old: None,
                    new: Some(new_rows.row(row)),
                    reads: false,
                },
                ChangeOp::Update => PlannedChange {
                    old,
                    new: Some(new_rows.row(row)),
                    reads: bitmap.is_some(),
                },
                ChangeOp::Delete => {
                    let Some(old) = old else {
                        return Err(Error::new(
                            ErrorKind::Data,
                            format!(
                                "a delete of {} carries no old key, so the {sink} sink cannot tell which \
                                 row to remove; give the table a primary key or replica identity",
                                table.name
                            ),
                        ));
                    };
                    PlannedChange {
                        old: Some(old),
                        new: None,
                        reads: false,
                    }
                }
            };
            planned.push(change);
        }
        Ok(plan(&planned))
    }

    /// One statement of the apply of a table without key (rows matched by
    /// their whole old image).
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum UnkeyedStep {
        /// Insert the new rows of changes `first..=last` (all inserts), in order.
        Insert {
            /// The first change of the run.
            first: usize,
            /// The last change of the run.
            last: usize,
        },
        /// Remove one stored row equal to the old image of change `row` (an
        /// update or a delete).
        Remove {
            /// The change.
            row: usize,
        },
        /// Insert the new row of update `row` (after its `Remove`).
        InsertUpdated {
            /// The change.
            row: usize,
        },
    }

    /// The statements applying the changes of a table without key, in
    /// order: runs of inserts together; an update or delete removes one row
    /// equal to its old image, and an update then inserts its new row.
    /// Fails, naming `sink`, on an update or delete without old image.
    pub fn unkeyed_steps(changes: &Changes<'_>, sink: &str) -> Result<Vec<UnkeyedStep>> {
        let mut steps = Vec::new();
        let mut row = 0usize;
        while row < changes.len() {
            let op = changes.op(row);
            if op == ChangeOp::Insert {
                let first = row;
                while row < changes.len() && changes.op(row) == ChangeOp::Insert {
                    row += 1;
                }
                steps.push(UnkeyedStep::Insert {
                    first,
                    last: row - 1,
                });
                continue;
            }
            if !changes.old.is_valid(row) {
                return Err(Error::new(
                    ErrorKind::Data,
                    format!(
                        "an {} of {} carries no old row and the table has no key, so the {sink} sink \
                         cannot tell which row it changes; give the table a primary key or REPLICA \
                         IDENTITY FULL",
                        op.as_str(),
                        changes.table.name
                    ),
                ));
            }
            steps.push(UnkeyedStep::Remove { row });
            if op == ChangeOp::Update {
                steps.push(UnkeyedStep::InsertUpdated { row });
            }
            row += 1;
        }
        Ok(steps)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn insert(k: u32) -> PlannedChange<u32> {
        PlannedChange {
            old: None,
            new: Some(k),
            reads: false,
        }
    }
    fn update(k: u32) -> PlannedChange<u32> {
        PlannedChange {
            old: None,
            new: Some(k),
            reads: false,
        }
    }
    fn toast_update(k: u32) -> PlannedChange<u32> {
        PlannedChange {
            old: None,
            new: Some(k),
            reads: true,
        }
    }
    fn move_key(from: u32, to: u32, reads: bool) -> PlannedChange<u32> {
        PlannedChange {
            old: Some(from),
            new: Some(to),
            reads,
        }
    }
    fn delete(k: u32) -> PlannedChange<u32> {
        PlannedChange {
            old: Some(k),
            new: None,
            reads: false,
        }
    }

    #[test]
    fn distinct_keys_share_one_round() {
        let changes: Vec<_> = (0..1000).map(insert).collect();
        let plan = plan(&changes);
        assert_eq!(plan.rounds(), 1);
        assert_eq!(plan.applied(), 1000);
    }

    #[test]
    fn a_hot_key_collapses_to_its_last_change() {
        let mut changes = vec![insert(1)];
        changes.extend((0..500).map(|_| update(1)));
        changes.push(insert(2));
        let plan = plan(&changes);
        assert_eq!(plan.rounds(), 1);
        assert_eq!(plan.applied(), 2);
        assert_eq!(plan.round[500], 1, "the last update of 1 is applied");
    }

    #[test]
    fn unchanged_values_keep_the_change_they_read_from() {
        let changes = [insert(1), toast_update(1), toast_update(1)];
        let plan = plan(&changes);
        assert_eq!(plan.round, vec![1, 2, 3]);
        assert_eq!(plan.reads, vec![false, true, true]);
    }

    #[test]
    fn key_changes_order_the_keys_they_touch() {
        // 1 → 2, then a new 1, then 2 → 3 reading its values.
        let changes = [
            move_key(1, 2, false),
            insert(1),
            move_key(2, 3, true),
            delete(3),
        ];
        let plan = plan(&changes);
        // The delete of 3 does not make the move 2 → 3 dead: the move also
        // removes the row at 2, which no later change removes.
        assert_eq!(plan.round, vec![1, 2, 2, 3]);
    }

    #[test]
    fn delete_then_reinsert_keeps_the_reinsert() {
        let changes = [delete(1), insert(1), delete(2), insert(2), update(2)];
        let plan = plan(&changes);
        assert_eq!(plan.round, vec![0, 1, 0, 0, 1]);
    }

    /// Applying the plan round by round (deletes of all keys, then inserts)
    /// gives the same table as applying the changes one by one.
    #[test]
    fn rounds_match_sequential_application_on_random_sequences() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        for _ in 0..300 {
            // Table: key → (value, toast value). Values are change numbers.
            let mut initial: BTreeMap<u32, (u64, u64)> = BTreeMap::new();
            for k in 0..6 {
                if next(2) == 0 {
                    initial.insert(k, (0, 0));
                }
            }
            let mut sequential = initial.clone();
            let mut changes = Vec::new();
            let mut values = Vec::new();
            for n in 1..=(1 + next(25)) {
                let keys: Vec<u32> = sequential.keys().copied().collect();
                let free: Vec<u32> = (0..6).filter(|k| !sequential.contains_key(k)).collect();
                let kind = next(4);
                let change = if kind == 0 && !free.is_empty() {
                    let k = free[next(free.len() as u64) as usize];
                    sequential.insert(k, (n, n));
                    insert(k)
                } else if kind == 1 && !keys.is_empty() {
                    let k = keys[next(keys.len() as u64) as usize];
                    sequential.remove(&k);
                    delete(k)
                } else if !keys.is_empty() {
                    let from = keys[next(keys.len() as u64) as usize];
                    let to = if kind == 2 && !free.is_empty() {
                        free[next(free.len() as u64) as usize]
                    } else {
                        from
                    };
                    let reads = next(2) == 0;
                    let (_, toast) = sequential.remove(&from).unwrap_or((0, 0));
                    sequential.insert(to, (n, if reads { toast } else { n }));
                    if from == to {
                        PlannedChange {
                            old: None,
                            new: Some(to),
                            reads,
                        }
                    } else {
                        move_key(from, to, reads)
                    }
                } else {
                    continue;
                };
                changes.push(change);
                values.push(n);
            }

            let plan = plan(&changes);
            let mut by_rounds = initial.clone();
            for round in 1..=plan.rounds() {
                let members: Vec<usize> = (0..changes.len())
                    .filter(|&i| plan.round[i] == round)
                    .collect();
                // New rows first, reading the table as the round starts.
                let rows: Vec<(u32, (u64, u64))> = members
                    .iter()
                    .filter_map(|&i| {
                        let c = changes[i];
                        let key = c.new?;
                        let toast = if c.reads {
                            let lookup = c.old.or(c.new).unwrap();
                            by_rounds.get(&lookup).expect("the row read exists").1
                        } else {
                            values[i]
                        };
                        Some((key, (values[i], toast)))
                    })
                    .collect();
                let mut touched = Vec::new();
                for &i in &members {
                    touched.extend(changes[i].keys());
                }
                assert_eq!(
                    touched.len(),
                    touched
                        .iter()
                        .collect::<std::collections::HashSet<_>>()
                        .len(),
                    "changes of a round touch distinct keys"
                );
                for k in touched {
                    by_rounds.remove(&k);
                }
                by_rounds.extend(rows);
            }
            assert_eq!(by_rounds, sequential, "changes {changes:?} plan {plan:?}");
        }
    }

    #[cfg(any(feature = "duckdb", feature = "postgres-sink"))]
    #[test]
    fn unkeyed_changes_become_runs_removals_and_reinserts() {
        use crate::sinks::changes::Changes;
        use crate::sinks::test_fixtures::{change_batch, table, Change};
        use crate::types::change::ChangeOp;
        let t = table(9, "keyless", true);
        let change = |op, new: Option<i32>, old: Option<i32>| Change {
            op,
            new: new.map(|v| (Some(v), Some(v), None)),
            toast: false,
            old: old.map(|v| (Some(v), Some(v), None)),
        };
        let changes = [
            change(ChangeOp::Insert, Some(1), None),
            change(ChangeOp::Insert, Some(2), None),
            change(ChangeOp::Update, Some(3), Some(1)),
            change(ChangeOp::Delete, None, Some(2)),
            change(ChangeOp::Insert, Some(4), None),
        ];
        let batch = change_batch(&t, &changes, 1);
        let steps = unkeyed_steps(&Changes::new(&t, &batch).unwrap(), "Test").unwrap();
        assert_eq!(
            steps,
            [
                UnkeyedStep::Insert { first: 0, last: 1 },
                UnkeyedStep::Remove { row: 2 },
                UnkeyedStep::InsertUpdated { row: 2 },
                UnkeyedStep::Remove { row: 3 },
                UnkeyedStep::Insert { first: 4, last: 4 },
            ]
        );
        let without_old = change_batch(&t, &[change(ChangeOp::Delete, None, None)], 1);
        let error = unkeyed_steps(&Changes::new(&t, &without_old).unwrap(), "Test").unwrap_err();
        assert!(
            error
                .to_string()
                .contains("the Test sink cannot tell which row"),
            "{error}"
        );
    }
}
