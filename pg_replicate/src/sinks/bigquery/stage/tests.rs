//! The staged rows, applied the way the transaction script applies them,
//! give the same table as the changes applied one by one.

use arrow::array::{AsArray, BooleanArray, Int64Array, StringArray};
use arrow::datatypes::Int64Type;

use super::*;
use crate::sinks::test_fixtures::*;

/// Applies staged rows like [`super::super::script`] does: a snapshot of the
/// stored rows first, then per round a DELETE of the round's old and new
/// keys and an INSERT of its new rows, stored values read from the
/// snapshot at `r0`.
fn apply(stored: &mut KeyedModel, rows: &RecordBatch) {
    let snapshot = stored.clone();
    let int = |name: &str| {
        rows.column_by_name(name)
            .unwrap()
            .as_primitive::<Int64Type>()
            .clone()
    };
    let flag = |name: &str| rows.column_by_name(name).unwrap().as_boolean().clone();
    let (round, op, id, v, old_id, read_id): (Int64Array, Int64Array, _, _, _, _) = (
        int(ROUND),
        int(OP),
        int("n0"),
        int("n1"),
        int("o0"),
        int("r0"),
    );
    let text: StringArray = rows.column_by_name("n2").unwrap().as_string().clone();
    let unchanged: BooleanArray = flag("u2");
    let last = round.iter().flatten().max().unwrap_or(0);
    for r in 1..=last {
        let in_round: Vec<usize> = (0..rows.num_rows())
            .filter(|&i| round.value(i) == r)
            .collect();
        for &i in &in_round {
            if old_id.is_valid(i) {
                stored.remove(&(old_id.value(i) as i32));
            }
            if op.value(i) != ChangeOp::Delete as i64 {
                stored.remove(&(id.value(i) as i32));
            }
        }
        for &i in &in_round {
            if op.value(i) == ChangeOp::Delete as i64 {
                continue;
            }
            let t = if unchanged.is_valid(i) && unchanged.value(i) {
                let origin = snapshot
                    .get(&(read_id.value(i) as i32))
                    .expect("the stored row read exists");
                origin.1.clone()
            } else {
                text.is_valid(i).then(|| text.value(i).to_owned())
            };
            let v = v.is_valid(i).then(|| v.value(i) as i32);
            stored.insert(id.value(i) as i32, (v, t));
        }
    }
}

#[test]
fn staged_random_changes_give_the_table_the_changes_give() {
    let t = table(10, "keyed", false);
    let mut model = KeyedModel::new();
    let mut stored = KeyedModel::new();
    let mut rng = Rng(0x1234_5678_9abc_def1);
    let (mut skipped, mut reads, mut multi_round) = (0, 0, 0);
    for batch in 0..400 {
        let changes = random_keyed_changes(&mut rng, &mut model, batch);
        let staged = stage(&t, &change_batch(&t, &changes, 100), 3).unwrap();
        assert_eq!(staged.changes, changes.len());
        assert_eq!(staged.rows.num_rows() + staged.skipped, changes.len());
        skipped += staged.skipped;
        reads += usize::from(staged.reads);
        multi_round += usize::from(staged.last_round > 4);
        let rounds = staged
            .rows
            .column_by_name(ROUND)
            .unwrap()
            .as_primitive::<Int64Type>();
        assert!(rounds
            .iter()
            .flatten()
            .all(|r| r > 3 && r <= i64::from(staged.last_round)));
        // Shift the rounds back to 1.. for the model of the script.
        let shifted: Int64Array = rounds.iter().map(|r| r.map(|r| r - 3)).collect();
        let mut columns = staged.rows.columns().to_vec();
        columns[0] = Arc::new(shifted);
        let rows = RecordBatch::try_new(staged.rows.schema(), columns).unwrap();
        apply(&mut stored, &rows);
        assert_eq!(
            model_rows(&stored),
            model_rows(&model),
            "after batch {batch}: {changes:?}"
        );
    }
    assert!(skipped > 0, "later changes erase earlier ones");
    assert!(reads > 0, "some batches read stored values");
    assert!(multi_round > 0, "key moves need more than one round");
}

#[test]
fn unchanged_values_come_from_the_batch_where_it_has_them() {
    let t = table(10, "keyed", false);
    let changes = [
        Change {
            op: ChangeOp::Insert,
            new: Some((Some(1), Some(1), Some("big".into()))),
            toast: false,
            old: None,
        },
        Change {
            op: ChangeOp::Update,
            new: Some((Some(1), Some(2), None)),
            toast: true,
            old: None,
        },
        Change {
            op: ChangeOp::Update,
            new: Some((Some(5), Some(3), None)),
            toast: true,
            old: Some((Some(1), None, None)),
        },
    ];
    let staged = stage(&t, &change_batch(&t, &changes, 100), 0).unwrap();
    // Only the last change is left, with the text of the insert.
    assert_eq!(staged.rows.num_rows(), 1);
    assert_eq!(staged.skipped, 2);
    assert!(!staged.reads, "nothing is read from the stored row");
    let text = staged.rows.column_by_name("n2").unwrap().as_string::<i32>();
    assert_eq!(text.value(0), "big");
}

#[test]
fn full_identity_takes_unchanged_values_from_the_old_image() {
    let mut t = (*table(11, "full", true)).clone();
    t.columns[0].identity = true;
    let t = Arc::new(t);
    let changes = [Change {
        op: ChangeOp::Update,
        new: Some((Some(1), Some(2), None)),
        toast: true,
        old: Some((Some(1), Some(1), Some("kept".into()))),
    }];
    let staged = stage(&t, &change_batch(&t, &changes, 100), 0).unwrap();
    assert!(!staged.reads);
    let text = staged.rows.column_by_name("n2").unwrap().as_string::<i32>();
    assert_eq!(text.value(0), "kept");
}

#[test]
fn tables_without_key_take_inserts_and_refuse_the_rest() {
    let t = table(12, "nokey", true);
    let insert = Change {
        op: ChangeOp::Insert,
        new: Some((Some(1), None, Some("a".into()))),
        toast: false,
        old: None,
    };
    let staged = stage(&t, &change_batch(&t, std::slice::from_ref(&insert), 100), 2).unwrap();
    assert_eq!(staged.rows.num_rows(), 1);
    assert_eq!(staged.last_round, 3);
    let delete = Change {
        op: ChangeOp::Delete,
        new: None,
        toast: false,
        old: Some((Some(1), None, Some("a".into()))),
    };
    let error = stage(&t, &change_batch(&t, &[insert, delete], 100), 0).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Schema);
    assert!(
        error.message().contains("a delete of public.nokey"),
        "{error}"
    );
}
