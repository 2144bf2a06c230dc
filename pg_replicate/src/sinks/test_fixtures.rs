//! Hand-built tables and change batches for the sinks' unit tests: a
//! `(int, int, text)` table and its changes, laid out as the source builds
//! them.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, BinaryArray, Int32Array, RecordBatch, StringArray, StructArray,
    TimestampMicrosecondArray, UInt32Array, UInt64Array, UInt8Array,
};
use arrow::buffer::NullBuffer;
use arrow::datatypes::DataType;

use crate::types::change::{
    change_arrow_schema, table_arrow_schema, CdcBatch, CdcEvent, ChangeOp, TableChanges, OLD_COLUMN,
};
use crate::types::{ColumnSchema, Lsn, PgType, ReplicaIdentity, TableId, TableName, TableSchema};

pub(crate) fn column(name: &str, oid: u32, type_name: &str, identity: bool) -> ColumnSchema {
    ColumnSchema {
        name: name.into(),
        pg_type: PgType {
            oid,
            modifier: -1,
            name: type_name.into(),
            element_oid: None,
        },
        nullable: !identity,
        identity,
        array_form: crate::types::ArrayForm::Lists,
    }
}

/// `public.<name> (id int, v int, t text)`, keyed by `id` unless `full`.
pub(crate) fn table(oid: u32, name: &str, full: bool) -> Arc<TableSchema> {
    let (a, b) = if full { ("a", "b") } else { ("id", "v") };
    Arc::new(TableSchema {
        id: TableId(oid),
        name: TableName::new("public", name),
        columns: vec![
            column(a, 23, "integer", !full),
            column(b, 23, "integer", false),
            column("t", 25, "text", false),
        ],
        replica_identity: if full {
            ReplicaIdentity::Full
        } else {
            ReplicaIdentity::Default
        },
    })
}

pub(crate) type Row = (Option<i32>, Option<i32>, Option<String>);

/// One change of a `(int, int, text)` table, as the source would build it.
#[derive(Clone, Debug)]
pub(crate) struct Change {
    pub(crate) op: ChangeOp,
    /// New row; for unchanged TOAST `t` is `None` and `toast` is set.
    pub(crate) new: Option<Row>,
    pub(crate) toast: bool,
    pub(crate) old: Option<Row>,
}

pub(crate) fn change_batch(table: &Arc<TableSchema>, changes: &[Change], lsn: u64) -> RecordBatch {
    let schema = change_arrow_schema(table);
    let pick = |f: fn(&Row) -> Option<i32>, image: &Option<Row>| image.as_ref().and_then(f);
    let new = |c: &Change| c.new.clone();
    let ints = |idx: usize, old: bool| -> ArrayRef {
        Arc::new(
            changes
                .iter()
                .map(|c| {
                    let image = if old { c.old.clone() } else { new(c) };
                    if idx == 0 {
                        pick(|r| r.0, &image)
                    } else {
                        pick(|r| r.1, &image)
                    }
                })
                .collect::<Int32Array>(),
        )
    };
    let texts = |old: bool| -> ArrayRef {
        Arc::new(
            changes
                .iter()
                .map(|c| {
                    let image = if old { c.old.clone() } else { new(c) };
                    image.and_then(|r| r.2)
                })
                .collect::<StringArray>(),
        )
    };
    let DataType::Struct(old_fields) = schema
        .field_with_name(OLD_COLUMN)
        .unwrap()
        .data_type()
        .clone()
    else {
        unreachable!()
    };
    let old_valid = NullBuffer::from(changes.iter().map(|c| c.old.is_some()).collect::<Vec<_>>());
    let old = StructArray::new(
        old_fields,
        vec![ints(0, true), ints(1, true), texts(true)],
        Some(old_valid),
    );
    let columns: Vec<ArrayRef> = vec![
        ints(0, false),
        ints(1, false),
        texts(false),
        Arc::new(changes.iter().map(|c| c.op as u8).collect::<UInt8Array>()),
        Arc::new(UInt64Array::from(vec![lsn; changes.len()])),
        Arc::new(
            TimestampMicrosecondArray::from(vec![1_700_000_000_000_000; changes.len()])
                .with_timezone("UTC"),
        ),
        Arc::new((0..changes.len() as u32).collect::<UInt32Array>()),
        Arc::new(
            changes
                .iter()
                .map(|c| c.toast.then_some(&[0b100u8][..]))
                .collect::<BinaryArray>(),
        ),
        Arc::new(old),
    ];
    RecordBatch::try_new(schema, columns).unwrap()
}

pub(crate) fn cdc(events: Vec<CdcEvent>, end: u64) -> CdcBatch {
    CdcBatch {
        events,
        end_lsn: Lsn(end),
        transactions: 1,
        continues: false,
    }
}

pub(crate) fn changes_event(table: &Arc<TableSchema>, changes: &[Change], lsn: u64) -> CdcEvent {
    CdcEvent::Changes(TableChanges {
        table: table.clone(),
        batch: change_batch(table, changes, lsn),
    })
}

/// Copied rows of a [`table`]: `id` and `v` from `ids`, `t` = "x".
pub(crate) fn copy_rows(t: &TableSchema, ids: &[i32]) -> RecordBatch {
    RecordBatch::try_new(
        table_arrow_schema(t),
        vec![
            Arc::new(Int32Array::from(ids.to_vec())) as ArrayRef,
            Arc::new(Int32Array::from(ids.to_vec())),
            Arc::new(StringArray::from(vec![Some("x"); ids.len()])),
        ],
    )
    .unwrap()
}

/// A small xorshift generator, for seeded random tests.
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    pub(crate) fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

/// The rows of a keyed [`table`] by `id`: `(v, t)`.
pub(crate) type KeyedModel = BTreeMap<i32, (Option<i32>, Option<String>)>;

/// The rows of `model` in key order.
pub(crate) fn model_rows(model: &KeyedModel) -> Vec<Row> {
    model
        .iter()
        .map(|(k, (v, t))| (Some(*k), *v, t.clone()))
        .collect()
}

/// A random batch of changes of keys 0..12 of a keyed [`table`], applied to
/// `model` too: inserts, deletes, updates, some moving the row to another
/// key, some leaving `t` unchanged (unchanged TOAST).
pub(crate) fn random_keyed_changes(
    rng: &mut Rng,
    model: &mut KeyedModel,
    batch: usize,
) -> Vec<Change> {
    let mut changes = Vec::new();
    for n in 0..1 + rng.below(40) {
        let value = Some((batch * 100 + n) as i32);
        let text = (rng.below(5) > 0).then(|| format!("t{batch}-{n}"));
        let free: Vec<i32> = (0..12).filter(|k| !model.contains_key(k)).collect();
        let used: Vec<i32> = model.keys().copied().collect();
        match rng.below(5) {
            0 | 1 if !free.is_empty() => {
                let k = free[rng.below(free.len())];
                model.insert(k, (value, text.clone()));
                changes.push(Change {
                    op: ChangeOp::Insert,
                    new: Some((Some(k), value, text)),
                    toast: false,
                    old: None,
                });
            }
            2 if !used.is_empty() => {
                let k = used[rng.below(used.len())];
                model.remove(&k);
                changes.push(Change {
                    op: ChangeOp::Delete,
                    new: None,
                    toast: false,
                    old: Some((Some(k), None, None)),
                });
            }
            3 | 4 if !used.is_empty() => {
                let from = used[rng.below(used.len())];
                let moved = rng.below(3) == 0 && !free.is_empty();
                let to = if moved {
                    free[rng.below(free.len())]
                } else {
                    from
                };
                let toast = rng.below(2) == 0;
                let (_, stored) = model.remove(&from).unwrap();
                model.insert(to, (value, if toast { stored } else { text.clone() }));
                changes.push(Change {
                    op: ChangeOp::Update,
                    new: Some((Some(to), value, if toast { None } else { text })),
                    toast,
                    old: moved.then_some((Some(from), None, None)),
                });
            }
            _ => {}
        }
    }
    changes
}
