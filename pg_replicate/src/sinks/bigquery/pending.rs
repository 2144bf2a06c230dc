//! The changes of a CDC batch waiting for the next apply script. Pure: no
//! I/O.

use std::sync::Arc;

use arrow::array::RecordBatch;

use super::script::Step;
use crate::types::TableSchema;

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
