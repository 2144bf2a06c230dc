//! Arrow batches as the DuckDB appender takes them.
//!
//! DuckDB's Arrow appender (duckdb-rs `append_record_batch`) takes every
//! type of the mapping as it is: integers, floats, Decimal128, Utf8, Binary,
//! Date32, Time64(µs), Timestamp(µs) with and without time zone, Interval
//! (MonthDayNano, whose nanoseconds it stores as microseconds: exact, since
//! the source fills them from microseconds), FixedSizeBinary(16) with the
//! `arrow.uuid` extension (as UUID), List and Struct; text appended to a
//! `JSON` column is stored as it is. So backfill batches are appended
//! unchanged; this module builds the batches that are not the source's:
//!
//! - the **stage** of a table's change batch: the columns the set-based
//!   apply needs (round, operation, new values, old key or old row,
//!   unchanged flags), with the changes a later change erases left out;
//! - **history** rows of copied rows, changes and truncates.
//!
//! One type needs help: duckdb-rs 1.20000.1 drops the validity of Interval
//! arrays (a NULL interval would be stored as a zero interval), so
//! [`for_appender`] sends intervals, also inside lists, as DuckDB interval
//! text (`<months> months <days> days <µs> microseconds`), which DuckDB
//! casts back to exactly the same months, days and microseconds, NULL
//! staying NULL.
//!
//! Column names of the stage are positional (`n3` = new value of table
//! column 3, `k3`/`o3` = its old value, `u3` = its "unchanged" flag), so no
//! table column name can collide with them.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, ListBuilder, RecordBatch, StringArray, StringBuilder,
    StructArray, UInt32Array,
};
use arrow::compute::kernels::{take::take, zip::zip};
use arrow::datatypes::{
    DataType, Field, Fields, IntervalMonthDayNanoType, IntervalUnit, Schema, SchemaRef, TimeUnit,
};

use super::schema::{duckdb_type, key_columns, HISTORY_COLUMNS};
use crate::sinks::changes::column;
pub use crate::sinks::changes::Changes;
use crate::sinks::plan::{plan_keyed, Plan};
use crate::sinks::stdout::json::{write_str, write_value};
use crate::types::change::{
    is_unchanged, ChangeOp, COMMIT_LSN_COLUMN, COMMIT_TIME_COLUMN, SEQUENCE_COLUMN,
};
use crate::types::{Lsn, ReplicaIdentity, TableSchema};
use crate::{Error, ErrorKind, Result};

/// Stage column: round of the change.
pub const ROUND: &str = "_pgr_round";
/// Stage column: position of the change in its batch.
pub const INDEX: &str = "_pgr_i";
/// Stage column: operation code ([`ChangeOp`]).
pub const OP: &str = "_pgr_op";

/// Name of the stage column with the new value of table column `i`.
pub fn new_col(i: usize) -> String {
    format!("n{i}")
}
/// Name of the stage column with the old value of table column `i`.
pub fn old_col(i: usize) -> String {
    format!("o{i}")
}
/// Name of the stage column flagging table column `i` as unchanged.
pub fn unchanged_col(i: usize) -> String {
    format!("u{i}")
}

fn arrow_error(table: &TableSchema, what: &str, error: arrow::error::ArrowError) -> Error {
    Error::with_source(
        ErrorKind::Sink,
        format!("cannot build the DuckDB {what} of {}", table.name),
        error,
    )
}

/// A staged change batch: what is appended to the temporary stage table.
pub struct Stage {
    /// The rows: the kept changes.
    pub batch: RecordBatch,
    /// Column definitions of the stage table (`name TYPE, ...`).
    pub columns_sql: String,
    /// Table columns that some change leaves unchanged (a `u` column each).
    pub unchanged: Vec<usize>,
    /// The rounds (keyed tables; a single round of all changes otherwise).
    pub plan: Plan,
}

/// Stages the changes of a table with a key: per kept change its round,
/// operation, new values, old key (NULL when the change sent none) and
/// unchanged flags.
pub fn keyed_stage(changes: &Changes<'_>) -> Result<Stage> {
    let table = changes.table;
    let keys = key_columns(table);
    let plan = plan_keyed(changes, &keys, "DuckDB")?;

    let kept: UInt32Array = plan
        .round
        .iter()
        .enumerate()
        .filter(|(_, r)| **r > 0)
        .map(|(i, _)| i as u32)
        .collect();
    let rounds: UInt32Array = plan.round.iter().copied().filter(|r| *r > 0).collect();
    let mut stage = StageBuilder::new(table, &kept);
    stage.push_array(ROUND, "UINTEGER", Arc::new(rounds), false)?;
    stage.push(OP, "UTINYINT", changes.ops)?;
    stage.push_new_values(changes)?;
    for &k in &keys {
        stage.push(
            &old_col(k),
            &duckdb_type(&table.columns[k]),
            changes.old.column(k).as_ref(),
        )?;
    }
    let unchanged = stage.push_flags(changes)?;
    Ok(Stage {
        batch: stage.finish()?,
        columns_sql: stage.columns_sql,
        unchanged,
        plan,
    })
}

/// Stages the changes of a table without key (matched by their whole old
/// row): per change its position, operation, new values, old values and
/// unchanged flags.
pub fn unkeyed_stage(changes: &Changes<'_>) -> Result<Stage> {
    let table = changes.table;
    let all: UInt32Array = (0..changes.len() as u32).collect();
    let mut stage = StageBuilder::new(table, &all);
    stage.push_array(INDEX, "UINTEGER", Arc::new(all.clone()), false)?;
    stage.push(OP, "UTINYINT", changes.ops)?;
    stage.push_new_values(changes)?;
    for (i, column) in changes.old.columns().iter().enumerate() {
        stage.push(
            &old_col(i),
            &duckdb_type(&table.columns[i]),
            column.as_ref(),
        )?;
    }
    let unchanged = stage.push_flags(changes)?;
    Ok(Stage {
        batch: stage.finish()?,
        columns_sql: stage.columns_sql,
        unchanged,
        plan: Plan {
            round: vec![1; changes.len()],
            reads: vec![changes.unchanged.null_count() < changes.len()],
        },
    })
}

/// Collects the stage columns of the rows `rows`.
struct StageBuilder<'a> {
    table: &'a TableSchema,
    rows: &'a UInt32Array,
    fields: Vec<Field>,
    arrays: Vec<ArrayRef>,
    columns_sql: String,
}

impl<'a> StageBuilder<'a> {
    fn new(table: &'a TableSchema, rows: &'a UInt32Array) -> Self {
        Self {
            table,
            rows,
            fields: Vec::new(),
            arrays: Vec::new(),
            columns_sql: String::new(),
        }
    }

    /// Adds `array` (all changes) as column `name`, keeping the staged rows.
    fn push(&mut self, name: &str, sql_type: &str, array: &dyn Array) -> Result<()> {
        let taken = if self.rows.len() == array.len() && is_identity(self.rows) {
            arrow::array::make_array(array.to_data())
        } else {
            take(array, self.rows, None).map_err(|e| arrow_error(self.table, "stage", e))?
        };
        self.push_array(name, sql_type, taken, true)
    }

    /// Adds an array that already holds the staged rows.
    fn push_array(
        &mut self,
        name: &str,
        sql_type: &str,
        array: ArrayRef,
        nullable: bool,
    ) -> Result<()> {
        if !self.columns_sql.is_empty() {
            self.columns_sql.push_str(", ");
        }
        self.columns_sql.push_str(name);
        self.columns_sql.push(' ');
        self.columns_sql.push_str(sql_type);
        self.fields.push(
            Field::new(name, array.data_type().clone(), nullable)
                .with_metadata(uuid_metadata(&array)),
        );
        self.arrays.push(array);
        Ok(())
    }

    /// Adds the unchanged flags; returns the flagged table columns.
    /// Adds the new value of every table column.
    fn push_new_values(&mut self, changes: &Changes<'_>) -> Result<()> {
        for (i, column) in changes.new.iter().enumerate() {
            self.push(
                &new_col(i),
                &duckdb_type(&self.table.columns[i]),
                column.as_ref(),
            )?;
        }
        Ok(())
    }

    fn push_flags(&mut self, changes: &Changes<'_>) -> Result<Vec<usize>> {
        let mut flagged = Vec::new();
        for (i, flags) in changes.unchanged_flags().into_iter().enumerate() {
            if let Some(flags) = flags {
                self.push(&unchanged_col(i), "BOOLEAN", &flags)?;
                flagged.push(i);
            }
        }
        Ok(flagged)
    }

    fn finish(&mut self) -> Result<RecordBatch> {
        let schema: SchemaRef = Arc::new(Schema::new(std::mem::take(&mut self.fields)));
        RecordBatch::try_new(schema, std::mem::take(&mut self.arrays))
            .map_err(|e| arrow_error(self.table, "stage", e))
    }
}

fn is_identity(rows: &UInt32Array) -> bool {
    rows.values()
        .iter()
        .enumerate()
        .all(|(i, r)| *r as usize == i)
}

/// The field metadata the appender needs to store FixedSizeBinary(16) (also
/// inside lists) as UUID.
fn uuid_metadata(array: &ArrayRef) -> std::collections::HashMap<String, String> {
    match array.data_type() {
        DataType::FixedSizeBinary(16) => std::collections::HashMap::from([(
            crate::types::values::EXTENSION_NAME_KEY.to_owned(),
            crate::types::values::UUID_EXTENSION_NAME.to_owned(),
        )]),
        _ => Default::default(),
    }
}

/// History rows of a table's changes: the table's columns (the new row;
/// for deletes the old image Postgres sent), then the history metadata
/// columns of [`HISTORY_COLUMNS`].
pub fn history_changes(changes: &Changes<'_>) -> Result<RecordBatch> {
    let table = changes.table;
    let rows = changes.len();
    let deletes: BooleanArray = (0..rows)
        .map(|r| Some(changes.op(r) == ChangeOp::Delete))
        .collect();
    let mut columns: Vec<ArrayRef> =
        Vec::with_capacity(table.columns.len() + HISTORY_COLUMNS.len());
    for (i, new) in changes.new.iter().enumerate() {
        let column = if deletes.true_count() == 0 {
            new.clone()
        } else {
            zip(&deletes, changes.old.column(i), new)
                .map_err(|e| arrow_error(table, "history", e))?
        };
        columns.push(column);
    }
    let ops: StringArray = (0..rows).map(|r| Some(changes.op(r).as_str())).collect();
    columns.push(Arc::new(ops));
    for name in [COMMIT_LSN_COLUMN, COMMIT_TIME_COLUMN, SEQUENCE_COLUMN] {
        columns.push(column(table, changes.batch, name)?.clone());
    }
    let mut unchanged = ListBuilder::new(StringBuilder::new());
    let mut old = StringBuilder::new();
    let key_only = table.replica_identity != ReplicaIdentity::Full;
    let old_fields = changes.old.fields();
    let mut json = Vec::new();
    for row in 0..rows {
        match changes.unchanged_bitmap(row) {
            Some(bitmap) => {
                for (i, column) in table.columns.iter().enumerate() {
                    if is_unchanged(bitmap, i) {
                        unchanged.values().append_value(&column.name);
                    }
                }
                unchanged.append(true);
            }
            None => unchanged.append(false),
        }
        if changes.op(row) == ChangeOp::Update && changes.old.is_valid(row) {
            json.clear();
            json.push(b'{');
            let mut first = true;
            for (i, (field, array)) in old_fields.iter().zip(changes.old.columns()).enumerate() {
                if key_only && !table.columns[i].identity {
                    continue;
                }
                if !first {
                    json.push(b',');
                }
                first = false;
                write_str(&mut json, field.name());
                json.push(b':');
                write_value(&mut json, field, array.as_ref(), row);
            }
            json.push(b'}');
            old.append_value(String::from_utf8_lossy(&json));
        } else {
            old.append_null();
        }
    }
    columns.push(Arc::new(unchanged.finish()));
    columns.push(Arc::new(old.finish()));
    history_batch(table, columns)
}

/// History rows of copied rows: operation `copy`, other metadata NULL (the
/// snapshot LSN is filled in when the copy ends).
pub fn history_copy(table: &TableSchema, rows: &RecordBatch) -> Result<RecordBatch> {
    let count = rows.num_rows();
    let mut columns: Vec<ArrayRef> = rows.columns().to_vec();
    columns.push(Arc::new(StringArray::from(vec!["copy"; count])));
    push_null_metadata(&mut columns, count, None);
    history_batch(table, columns)
}

/// The history row of a truncate: operation `truncate`, the commit LSN,
/// every column NULL.
pub fn history_truncate(table: &TableSchema, commit_lsn: Lsn) -> Result<RecordBatch> {
    let mut columns: Vec<ArrayRef> = table
        .columns
        .iter()
        .map(|c| arrow::array::new_null_array(crate::types::values::arrow_field(c).data_type(), 1))
        .collect();
    columns.push(Arc::new(StringArray::from(vec!["truncate"])));
    push_null_metadata(&mut columns, 1, Some(commit_lsn));
    history_batch(table, columns)
}

fn push_null_metadata(columns: &mut Vec<ArrayRef>, count: usize, lsn: Option<Lsn>) {
    columns.push(Arc::new(arrow::array::UInt64Array::from(vec![
        lsn.map(
            |l| l.0
        );
        count
    ])));
    columns.push(arrow::array::new_null_array(
        &DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        count,
    ));
    columns.push(arrow::array::new_null_array(&DataType::UInt32, count));
    columns.push(arrow::array::new_null_array(
        &DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))),
        count,
    ));
    columns.push(arrow::array::new_null_array(&DataType::Utf8, count));
}

fn history_batch(table: &TableSchema, columns: Vec<ArrayRef>) -> Result<RecordBatch> {
    let mut fields: Vec<Field> = table
        .columns
        .iter()
        .map(crate::types::values::arrow_field)
        .collect();
    for ((name, _), array) in HISTORY_COLUMNS.iter().zip(&columns[table.columns.len()..]) {
        fields.push(Field::new(*name, array.data_type().clone(), true));
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
        .map_err(|e| arrow_error(table, "history rows", e))
}

/// Makes `batch` safe for DuckDB's Arrow appender: Interval columns (also
/// as list items) become their exact DuckDB text, see the module
/// documentation. Other columns are passed through.
pub fn for_appender(batch: RecordBatch) -> Result<RecordBatch> {
    let schema = batch.schema();
    if !schema.fields().iter().any(|f| has_interval(f.data_type())) {
        return Ok(batch);
    }
    let mut fields = Vec::with_capacity(schema.fields().len());
    let mut columns = Vec::with_capacity(schema.fields().len());
    for (field, column) in schema.fields().iter().zip(batch.columns()) {
        let converted = interval_text(column)?;
        fields.push(
            Field::new(
                field.name(),
                converted.data_type().clone(),
                field.is_nullable(),
            )
            .with_metadata(field.metadata().clone()),
        );
        columns.push(converted);
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).map_err(|e| {
        Error::with_source(
            ErrorKind::Sink,
            "cannot convert intervals for the DuckDB appender",
            e,
        )
    })
}

fn has_interval(data_type: &DataType) -> bool {
    match data_type {
        DataType::Interval(_) => true,
        DataType::List(item) => has_interval(item.data_type()),
        DataType::Struct(fields) => fields.iter().any(|f| has_interval(f.data_type())),
        _ => false,
    }
}

/// An Interval array as DuckDB interval text; lists of intervals as lists
/// of text; other arrays unchanged.
fn interval_text(array: &ArrayRef) -> Result<ArrayRef> {
    match array.data_type() {
        DataType::Interval(IntervalUnit::MonthDayNano) => {
            let intervals = array.as_primitive::<IntervalMonthDayNanoType>();
            let mut text = StringBuilder::with_capacity(intervals.len(), intervals.len() * 40);
            for value in intervals.iter() {
                match value {
                    Some(v) => text.append_value(format!(
                        "{} months {} days {} microseconds",
                        v.months,
                        v.days,
                        v.nanoseconds / 1000
                    )),
                    None => text.append_null(),
                }
            }
            Ok(Arc::new(text.finish()))
        }
        DataType::List(item) if has_interval(item.data_type()) => {
            let list = array.as_list::<i32>();
            let values = interval_text(list.values())?;
            let item = Arc::new(Field::new(
                item.name(),
                values.data_type().clone(),
                item.is_nullable(),
            ));
            let converted = arrow::array::ListArray::try_new(
                item,
                list.offsets().clone(),
                values,
                list.nulls().cloned(),
            )
            .map_err(|e| {
                Error::with_source(
                    ErrorKind::Sink,
                    "cannot convert interval lists for DuckDB",
                    e,
                )
            })?;
            Ok(Arc::new(converted))
        }
        DataType::Struct(fields) if has_interval(array.data_type()) => {
            let array = array.as_struct();
            let columns = array
                .columns()
                .iter()
                .map(interval_text)
                .collect::<Result<Vec<_>>>()?;
            let fields: Fields = fields
                .iter()
                .zip(&columns)
                .map(|(f, c)| {
                    Field::new(f.name(), c.data_type().clone(), f.is_nullable())
                        .with_metadata(f.metadata().clone())
                })
                .collect();
            let converted =
                StructArray::try_new(fields, columns, array.nulls().cloned()).map_err(|e| {
                    Error::with_source(
                        ErrorKind::Sink,
                        "cannot convert interval arrays for DuckDB",
                        e,
                    )
                })?;
            Ok(Arc::new(converted))
        }
        _ => Ok(array.clone()),
    }
}
