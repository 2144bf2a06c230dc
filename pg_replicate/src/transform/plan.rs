//! A table's transform resolved against its schema: the schema the sink
//! sees, and the Arrow operations that turn the source's batches into
//! batches of that schema (filter and comparison kernels, `zip`/`nullif`
//! for updates that leave the filter, a hash per masked value).

use std::sync::Arc;

use arrow::array::{
    new_null_array, Array, ArrayRef, AsArray, BinaryBuilder, BooleanArray, RecordBatch,
    StringBuilder, StructArray, UInt8Array,
};
use arrow::buffer::NullBuffer;
use arrow::compute::kernels::{boolean, cmp, zip::zip};
use arrow::compute::{cast, cast_with_options, filter_record_batch, is_not_null, is_null};
use arrow::compute::{prep_null_mask_filter, CastOptions};
use arrow::datatypes::{DataType, Field, Schema, UInt8Type};
use sha2::{Digest, Sha256};

use super::rules::{Comparison, ComputeFn, Mask, Predicate, TableTransform};
use crate::types::change::{change_arrow_schema, is_unchanged, table_arrow_schema, ChangeOp};
use crate::types::values::arrow_field;
use crate::types::{ColumnSchema, PgType, ReplicaIdentity, TableSchema};
use crate::{Error, ErrorKind, Result};

/// Where an output column comes from.
enum Output {
    Column {
        index: usize,
        mask: Option<Mask>,
    },
    Computed {
        compute: ComputeFn,
        inputs: Vec<usize>,
    },
}

/// A compiled filter predicate on column `index`.
struct Condition {
    index: usize,
    test: Test,
}

enum Test {
    Compare(Comparison, ArrayRef),
    IsNull,
    IsNotNull,
}

/// A table's transform resolved against one schema of the table.
pub(super) struct TablePlan {
    input: Arc<TableSchema>,
    output: Arc<TableSchema>,
    conditions: Vec<Condition>,
    outputs: Vec<Output>,
    output_types: Vec<DataType>,
}

impl TablePlan {
    /// Checks `transform` against `table` and resolves it; errors
    /// ([`ErrorKind::Config`]) name the table and column.
    pub(super) fn new(table: &Arc<TableSchema>, transform: &TableTransform) -> Result<Self> {
        let bad = |why: String| {
            Error::new(
                ErrorKind::Config,
                format!("transform of {}: {why}", table.name),
            )
        };
        let index_of = |column: &str| {
            table
                .columns
                .iter()
                .position(|c| c.name == column)
                .ok_or_else(|| bad(format!("the table has no column `{column}`")))
        };

        let mut conditions = Vec::with_capacity(transform.filter.len());
        for predicate in &transform.filter {
            let index = index_of(predicate.column())?;
            let data_type = arrow_field(&table.columns[index]).data_type().clone();
            let test = match predicate {
                Predicate::IsNull(_) => Test::IsNull,
                Predicate::IsNotNull(_) => Test::IsNotNull,
                Predicate::Compare { op, value, column } => {
                    let text: ArrayRef =
                        Arc::new(arrow::array::StringArray::from(vec![value.as_str()]));
                    let options = CastOptions {
                        safe: false,
                        ..CastOptions::default()
                    };
                    let scalar = cast_with_options(&text, &data_type, &options).map_err(|e| {
                        bad(format!(
                            "the filter value {value:?} cannot be read as column `{column}`'s type \
                             ({}): {e}",
                            table.columns[index].pg_type.name
                        ))
                    })?;
                    let empty = arrow::array::new_empty_array(&data_type);
                    compare(*op, &empty, &scalar).map_err(|e| {
                        bad(format!(
                            "column `{column}` ({}) cannot be compared in a filter: {e}",
                            table.columns[index].pg_type.name
                        ))
                    })?;
                    Test::Compare(*op, scalar)
                }
            };
            conditions.push(Condition { index, test });
        }

        let mut keep = vec![transform.select.is_none(); table.columns.len()];
        if let Some(select) = &transform.select {
            for column in select {
                keep[index_of(column)?] = true;
            }
        }
        let mut masks: Vec<Option<Mask>> = vec![None; table.columns.len()];
        for (column, mask) in &transform.mask {
            masks[index_of(column)?] = Some(*mask);
        }
        let mut names: Vec<String> = table.columns.iter().map(|c| c.name.clone()).collect();
        for (column, to) in &transform.rename {
            names[index_of(column)?] = to.clone();
        }
        for (index, column) in table.columns.iter().enumerate() {
            if column.identity && (!keep[index] || masks[index].is_some()) {
                return Err(bad(format!(
                    "key column `{}` cannot be left out or masked: the sink needs it to apply \
                     updates and deletes",
                    column.name
                )));
            }
        }

        if !conditions.is_empty() && table.replica_identity != ReplicaIdentity::Full {
            let needed = table.columns.iter().enumerate().filter(|(i, _)| {
                (keep[*i] && masks[*i] != Some(Mask::Null))
                    || transform
                        .computed
                        .iter()
                        .any(|c| c.inputs.iter().any(|name| *name == table.columns[*i].name))
            });
            if let Some((_, column)) = needed.into_iter().find(|(_, c)| !fixed_size(&c.pg_type)) {
                return Err(bad(format!(
                    "a filtered table needs REPLICA IDENTITY FULL when it keeps a column Postgres                      may leave out of an update (`{}`, {}: a value over about 2 kB is kept                      aside and not sent again): a row an update brings into the filter would miss                      it. Run ALTER TABLE {} REPLICA IDENTITY FULL, or leave such columns out",
                    column.name,
                    column.pg_type.name,
                    table.name.quoted()
                )));
            }
        }

        let mut columns = Vec::new();
        let mut outputs = Vec::new();
        for (index, column) in table.columns.iter().enumerate() {
            if !keep[index] {
                continue;
            }
            let mut out = column.clone();
            out.name = names[index].clone();
            match masks[index] {
                Some(Mask::Hash) => {
                    out.pg_type = text_type();
                    out.array_form = Default::default();
                }
                Some(Mask::Null) => out.nullable = true,
                None => {}
            }
            columns.push(out);
            outputs.push(Output::Column {
                index,
                mask: masks[index],
            });
        }
        for computed in &transform.computed {
            let inputs = computed
                .inputs
                .iter()
                .map(|c| index_of(c))
                .collect::<Result<Vec<_>>>()?;
            columns.push(ColumnSchema {
                name: computed.name.clone(),
                pg_type: computed.pg_type.clone(),
                nullable: true,
                identity: false,
                array_form: Default::default(),
            });
            outputs.push(Output::Computed {
                compute: computed.compute.clone(),
                inputs,
            });
        }
        let mut seen = std::collections::HashSet::new();
        for column in &columns {
            if !seen.insert(column.name.as_str()) {
                return Err(bad(format!(
                    "two output columns are named `{}`; rename one",
                    column.name
                )));
            }
        }
        let output_types = columns
            .iter()
            .map(|c| arrow_field(c).data_type().clone())
            .collect();
        let output = Arc::new(TableSchema {
            columns,
            ..(**table).clone()
        });
        Ok(Self {
            input: table.clone(),
            output,
            conditions,
            outputs,
            output_types,
        })
    }

    /// Whether this plan was made for `table`'s schema.
    pub(super) fn fits(&self, table: &TableSchema) -> bool {
        *self.input == *table
    }

    /// The schema the sink sees.
    pub(super) fn output(&self) -> &Arc<TableSchema> {
        &self.output
    }

    /// Transforms a backfill batch (the table's columns).
    pub(super) fn rows(&self, batch: &RecordBatch) -> Result<RecordBatch> {
        let batch = if self.conditions.is_empty() {
            batch.clone()
        } else {
            let passes = self.passes(batch)?;
            filter_record_batch(batch, &passes)
                .map_err(|e| self.arrow_error("filtering rows", e))?
        };
        let columns = self.project(&batch)?;
        RecordBatch::try_new(table_arrow_schema(&self.output), columns)
            .map_err(|e| self.arrow_error("building the transformed rows", e))
    }

    /// Transforms a change batch (the table's columns and the metadata
    /// columns): inserts that do not pass the filter are dropped, updates
    /// that do not pass become deletes, deletes stay.
    pub(super) fn changes(&self, batch: &RecordBatch) -> Result<RecordBatch> {
        let n = self.input.columns.len();
        let mut batch = batch.clone();
        if !self.conditions.is_empty() {
            batch = self.filter_changes(&batch)?;
        }
        let news = self.columns_of(&batch, 0..n)?;
        let mut columns = self.project(&news)?;
        // op, commit LSN, commit time and sequence pass unchanged.
        for index in n..n + 4 {
            columns.push(batch.column(index).clone());
        }
        columns.push(self.unchanged(batch.column(n + 4).as_binary::<i32>()));
        columns.push(self.old(batch.column(n + 5).as_struct())?);
        RecordBatch::try_new(change_arrow_schema(&self.output), columns)
            .map_err(|e| self.arrow_error("building the transformed changes", e))
    }

    /// Rows for which every condition holds (NULL counts as not holding).
    fn passes(&self, batch: &RecordBatch) -> Result<BooleanArray> {
        let mut all: Option<BooleanArray> = None;
        for condition in &self.conditions {
            let column = batch.column(condition.index);
            let holds = match &condition.test {
                Test::IsNull => is_null(column),
                Test::IsNotNull => is_not_null(column),
                Test::Compare(op, value) => compare(*op, column, value),
            }
            .map_err(|e| self.arrow_error("evaluating the filter", e))?;
            // NULL counts as not holding (prep_null_mask_filter expects nulls).
            let holds = if holds.null_count() > 0 {
                prep_null_mask_filter(&holds)
            } else {
                holds
            };
            all = Some(match all {
                None => holds,
                Some(before) => boolean::and(&before, &holds)
                    .map_err(|e| self.arrow_error("evaluating the filter", e))?,
            });
        }
        Ok(all.unwrap_or_else(|| BooleanArray::from(vec![true; batch.num_rows()])))
    }

    fn filter_changes(&self, batch: &RecordBatch) -> Result<RecordBatch> {
        let n = self.input.columns.len();
        let batch = &self.fill_from_old(batch)?;
        let ops = batch.column(n).as_primitive::<UInt8Type>();
        let unchanged = batch.column(n + 4).as_binary::<i32>();
        for row in 0..batch.num_rows() {
            if unchanged.is_null(row) || ops.value(row) != ChangeOp::Update as u8 {
                continue;
            }
            if let Some(c) = self
                .conditions
                .iter()
                .find(|c| is_unchanged(unchanged.value(row), c.index))
            {
                return Err(Error::new(
                    ErrorKind::Data,
                    format!(
                        "{}: an update did not send column `{}` (an unchanged TOAST value), so the \
                         filter on it cannot be evaluated; filter on another column, or set \
                         ALTER TABLE {} REPLICA IDENTITY FULL",
                        self.input.name,
                        self.input.columns[c.index].name,
                        self.input.name.quoted()
                    ),
                ));
            }
        }
        let err = |e| self.arrow_error("filtering changes", e);
        let news = self.columns_of(batch, 0..n)?;
        let passes = self.passes(&news)?;
        let fails = boolean::not(&passes).map_err(err)?;
        let inserts = cmp::eq(ops, &UInt8Array::new_scalar(ChangeOp::Insert as u8)).map_err(err)?;
        let updates = cmp::eq(ops, &UInt8Array::new_scalar(ChangeOp::Update as u8)).map_err(err)?;
        let dropped = boolean::and(&inserts, &fails).map_err(err)?;
        let kept = boolean::not(&dropped).map_err(err)?;
        let leaving = boolean::and(&updates, &fails).map_err(err)?;
        let batch = filter_record_batch(batch, &kept).map_err(err)?;
        let leaving = arrow::compute::filter(&leaving, &kept).map_err(err)?;
        let leaving = leaving.as_boolean();
        if leaving.true_count() == 0 {
            return Ok(batch);
        }

        // Updates leaving the filter become deletes of their row: op 3, no
        // new image, the key in the old image.
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(batch.num_columns());
        for index in 0..n {
            columns.push(arrow::compute::nullif(batch.column(index), leaving).map_err(err)?);
        }
        let delete = UInt8Array::new_scalar(ChangeOp::Delete as u8);
        columns.push(zip(leaving, &delete, batch.column(n)).map_err(err)?);
        for index in n + 1..n + 4 {
            columns.push(batch.column(index).clone());
        }
        columns.push(arrow::compute::nullif(batch.column(n + 4), leaving).map_err(err)?);
        let old = batch.column(n + 5).as_struct();
        let had_old = is_not_null(old).map_err(err)?;
        // Where no old image was sent (the key did not change), the key
        // comes from the new image.
        let key_from_new = boolean::and_not(leaving, &had_old).map_err(err)?;
        let keyed = self.input.replica_identity != ReplicaIdentity::Full;
        let mut children = Vec::with_capacity(n);
        for (index, column) in self.input.columns.iter().enumerate() {
            let child = old.column(index);
            if keyed && column.identity {
                children.push(zip(&key_from_new, batch.column(index), child).map_err(err)?);
            } else {
                children.push(child.clone());
            }
        }
        let valid = boolean::or(&had_old, leaving).map_err(err)?;
        let fields = match old.data_type() {
            DataType::Struct(fields) => fields.clone(),
            _ => return Err(self.internal("the old image is not a struct")),
        };
        let nulls = NullBuffer::from(valid.values().clone());
        let old = StructArray::try_new(fields, children, Some(nulls)).map_err(err)?;
        columns.push(Arc::new(old));
        RecordBatch::try_new(batch.schema(), columns).map_err(err)
    }

    /// Under `REPLICA IDENTITY FULL` an update carries the whole old row:
    /// the values it left out of the new row (unchanged TOAST) are taken
    /// from there, so the filter can read them and a row entering the
    /// filter arrives whole.
    fn fill_from_old(&self, batch: &RecordBatch) -> Result<RecordBatch> {
        let n = self.input.columns.len();
        let unchanged = batch.column(n + 4).as_binary::<i32>();
        if self.input.replica_identity != ReplicaIdentity::Full
            || unchanged.null_count() == unchanged.len()
        {
            return Ok(batch.clone());
        }
        let err = |e| self.arrow_error("completing updates from their old rows", e);
        let old = batch.column(n + 5).as_struct();
        let rows = batch.num_rows();
        let mut columns = batch.columns().to_vec();
        for (index, column) in columns.iter_mut().enumerate().take(n) {
            let fill: BooleanArray = (0..rows)
                .map(|row| {
                    Some(
                        unchanged.is_valid(row)
                            && old.is_valid(row)
                            && is_unchanged(unchanged.value(row), index),
                    )
                })
                .collect();
            if fill.true_count() > 0 {
                *column = zip(&fill, old.column(index), &*column).map_err(err)?;
            }
        }
        let filled: BooleanArray = (0..rows)
            .map(|row| Some(unchanged.is_valid(row) && old.is_valid(row)))
            .collect();
        columns[n + 4] = arrow::compute::nullif(unchanged, &filled).map_err(err)?;
        RecordBatch::try_new(batch.schema(), columns).map_err(err)
    }

    /// The output columns computed from a batch of the table's columns.
    fn project(&self, batch: &RecordBatch) -> Result<Vec<ArrayRef>> {
        let mut columns = Vec::with_capacity(self.outputs.len());
        for (output, data_type) in self.outputs.iter().zip(&self.output_types) {
            columns.push(match output {
                Output::Column { index, mask: None } => batch.column(*index).clone(),
                Output::Column {
                    mask: Some(Mask::Null),
                    ..
                } => new_null_array(data_type, batch.num_rows()),
                Output::Column {
                    index,
                    mask: Some(Mask::Hash),
                } => {
                    let hashed = hash(batch.column(*index))
                        .map_err(|e| self.arrow_error("hashing a masked column", e))?;
                    cast(&hashed, data_type)
                        .map_err(|e| self.arrow_error("hashing a masked column", e))?
                }
                Output::Computed { compute, .. } => {
                    let values = compute(batch)?;
                    if values.len() != batch.num_rows() || values.data_type() != data_type {
                        return Err(Error::new(
                            ErrorKind::Config,
                            format!(
                                "transform of {}: a computed column returned {} values of type {}; \
                                 expected {} of type {data_type}",
                                self.input.name,
                                values.len(),
                                values.data_type(),
                                batch.num_rows()
                            ),
                        ));
                    }
                    values
                }
            });
        }
        Ok(columns)
    }

    /// The unchanged-TOAST bitmaps renumbered for the output columns: a
    /// hashed column keeps its bit (the sink keeps the stored hash), a
    /// computed one is unchanged when one of its inputs is.
    fn unchanged(&self, bitmaps: &arrow::array::BinaryArray) -> ArrayRef {
        let bytes = self.outputs.len().div_ceil(8);
        let mut out = BinaryBuilder::with_capacity(bitmaps.len(), 0);
        let mut bitmap = vec![0u8; bytes];
        for row in 0..bitmaps.len() {
            if bitmaps.is_null(row) {
                out.append_null();
                continue;
            }
            let input = bitmaps.value(row);
            bitmap.iter_mut().for_each(|b| *b = 0);
            for (position, output) in self.outputs.iter().enumerate() {
                let set = match output {
                    Output::Column {
                        mask: Some(Mask::Null),
                        ..
                    } => false,
                    Output::Column { index, .. } => is_unchanged(input, *index),
                    Output::Computed { inputs, .. } => {
                        inputs.iter().any(|i| is_unchanged(input, *i))
                    }
                };
                if set {
                    bitmap[position / 8] |= 1 << (position % 8);
                }
            }
            if bitmap.iter().all(|b| *b == 0) {
                out.append_null();
            } else {
                out.append_value(&bitmap);
            }
        }
        Arc::new(out.finish())
    }

    /// The old row images, transformed like the new ones.
    fn old(&self, old: &StructArray) -> Result<ArrayRef> {
        let fields: Vec<Field> = self.output.columns.iter().map(arrow_field).collect();
        let schema = Arc::new(Schema::new(
            self.input
                .columns
                .iter()
                .map(arrow_field)
                .collect::<Vec<_>>(),
        ));
        let images = RecordBatch::try_new(schema, old.columns().to_vec())
            .map_err(|e| self.arrow_error("reading the old row images", e))?;
        let children = self.project(&images)?;
        let array = StructArray::try_new(fields.into(), children, old.nulls().cloned())
            .map_err(|e| self.arrow_error("building the old row images", e))?;
        Ok(Arc::new(array))
    }

    /// The given columns of `batch` as a batch of their own.
    fn columns_of(
        &self,
        batch: &RecordBatch,
        range: std::ops::Range<usize>,
    ) -> Result<RecordBatch> {
        batch
            .project(&range.collect::<Vec<_>>())
            .map_err(|e| self.arrow_error("reading the changes", e))
    }

    fn arrow_error(&self, what: &str, error: arrow::error::ArrowError) -> Error {
        Error::with_source(
            ErrorKind::Data,
            format!("transform of {}: {what} failed", self.input.name),
            error,
        )
    }

    fn internal(&self, what: &str) -> Error {
        Error::new(
            ErrorKind::Internal,
            format!("transform of {}: {what}", self.input.name),
        )
    }
}

/// `column <op> value` with Arrow's comparison kernels.
fn compare(
    op: Comparison,
    column: &dyn Array,
    value: &ArrayRef,
) -> std::result::Result<BooleanArray, arrow::error::ArrowError> {
    let value = arrow::array::Scalar::new(value.clone());
    match op {
        Comparison::Eq => cmp::eq(&column, &value),
        Comparison::NotEq => cmp::neq(&column, &value),
        Comparison::Lt => cmp::lt(&column, &value),
        Comparison::LtEq => cmp::lt_eq(&column, &value),
        Comparison::Gt => cmp::gt(&column, &value),
        Comparison::GtEq => cmp::gt_eq(&column, &value),
    }
}

/// Lower-case hex SHA-256 of each value: of its bytes for strings and
/// binaries, of Arrow's text form otherwise.
fn hash(values: &ArrayRef) -> std::result::Result<ArrayRef, arrow::error::ArrowError> {
    let mut out = StringBuilder::with_capacity(values.len(), values.len() * 64);
    let mut hex = String::with_capacity(64);
    let mut push = |bytes: Option<&[u8]>| match bytes {
        None => out.append_null(),
        Some(bytes) => {
            hex.clear();
            for byte in Sha256::digest(bytes) {
                hex.push(char::from_digit(u32::from(byte >> 4), 16).unwrap_or('0'));
                hex.push(char::from_digit(u32::from(byte & 15), 16).unwrap_or('0'));
            }
            out.append_value(&hex);
        }
    };
    match values.data_type() {
        DataType::Utf8 => values
            .as_string::<i32>()
            .iter()
            .for_each(|v| push(v.map(str::as_bytes))),
        DataType::LargeUtf8 => values
            .as_string::<i64>()
            .iter()
            .for_each(|v| push(v.map(str::as_bytes))),
        DataType::Binary => values.as_binary::<i32>().iter().for_each(&mut push),
        DataType::LargeBinary => values.as_binary::<i64>().iter().for_each(&mut push),
        _ => {
            let text = cast(values, &DataType::Utf8)?;
            text.as_string::<i32>()
                .iter()
                .for_each(|v| push(v.map(str::as_bytes)));
        }
    }
    Ok(Arc::new(out.finish()))
}

/// Whether values of `pg_type` have a fixed size, so Postgres never keeps
/// them aside (TOAST) and always sends them in updates.
fn fixed_size(pg_type: &PgType) -> bool {
    matches!(
        pg_type.oid,
        16 | 18
            | 20
            | 21
            | 23
            | 26
            | 600
            | 700
            | 701
            | 774
            | 790
            | 829
            | 1082
            | 1083
            | 1114
            | 1184
            | 1186
            | 1266
            | 2950
            | 3220
    )
}

/// Postgres `text`, the type of hashed columns.
fn text_type() -> PgType {
    PgType {
        oid: 25,
        modifier: -1,
        name: "text".to_owned(),
        element_oid: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_sha256_hex() {
        let values: ArrayRef = Arc::new(arrow::array::StringArray::from(vec![Some("abc"), None]));
        let hashed = hash(&values).unwrap();
        let hashed = hashed.as_string::<i32>();
        assert_eq!(
            hashed.value(0),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert!(hashed.is_null(1));
    }
}
