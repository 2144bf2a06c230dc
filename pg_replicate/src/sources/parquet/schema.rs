//! The table a Parquet file's rows go to: its columns from the file's Arrow
//! schema (Arrow types to Postgres types), and a file's rows as a change
//! batch of inserts.

use std::sync::Arc;

use arrow::array::{
    new_null_array, Array, ArrayRef, RecordBatch, TimestampMicrosecondArray, UInt32Array,
    UInt64Array, UInt8Array,
};
use arrow::compute::{cast, CastOptions};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};

use crate::types::change::{change_arrow_schema, table_arrow_schema, ChangeOp};
use crate::types::{
    ArrayForm, ColumnSchema, Lsn, PgType, ReplicaIdentity, TableId, TableName, TableSchema,
};

/// The Postgres type of an Arrow type: oid, type modifier, `format_type`
/// name and element oid; `None` when unsupported.
fn pg_type(data_type: &DataType, field: &Field) -> Option<PgType> {
    let scalar = |oid: u32, name: &str| PgType {
        oid,
        modifier: -1,
        name: name.to_owned(),
        element_oid: None,
    };
    Some(match data_type {
        DataType::Boolean => scalar(16, "boolean"),
        DataType::Int8 | DataType::Int16 | DataType::UInt8 => scalar(21, "smallint"),
        DataType::Int32 | DataType::UInt16 => scalar(23, "integer"),
        DataType::Int64 | DataType::UInt32 => scalar(20, "bigint"),
        DataType::UInt64 => PgType {
            oid: 1700,
            modifier: (20 << 16) + 4,
            name: "numeric(20,0)".to_owned(),
            element_oid: None,
        },
        DataType::Float16 | DataType::Float32 => scalar(700, "real"),
        DataType::Float64 => scalar(701, "double precision"),
        DataType::Decimal128(precision, scale)
            if *scale >= 0 && i16::from(*scale) <= i16::from(*precision) =>
        {
            PgType {
                oid: 1700,
                modifier: ((i32::from(*precision) << 16) | i32::from(*scale)) + 4,
                name: format!("numeric({precision},{scale})"),
                element_oid: None,
            }
        }
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => scalar(25, "text"),
        DataType::FixedSizeBinary(16)
            if field
                .metadata()
                .get(crate::types::values::EXTENSION_NAME_KEY)
                .map(String::as_str)
                == Some(crate::types::values::UUID_EXTENSION_NAME) =>
        {
            scalar(2950, "uuid")
        }
        DataType::Binary
        | DataType::LargeBinary
        | DataType::BinaryView
        | DataType::FixedSizeBinary(_) => scalar(17, "bytea"),
        DataType::Date32 | DataType::Date64 => scalar(1082, "date"),
        DataType::Time32(_) | DataType::Time64(_) => scalar(1083, "time without time zone"),
        DataType::Timestamp(_, None) => scalar(1114, "timestamp without time zone"),
        DataType::Timestamp(_, Some(_)) => scalar(1184, "timestamp with time zone"),
        DataType::Interval(arrow::datatypes::IntervalUnit::MonthDayNano) => {
            scalar(1186, "interval")
        }
        DataType::List(item) | DataType::LargeList(item) => {
            let element = pg_type(item.data_type(), item)?;
            if element.element_oid.is_some()
                || matches!(
                    item.data_type(),
                    DataType::Timestamp(TimeUnit::Nanosecond, _)
                        | DataType::Time64(TimeUnit::Nanosecond)
                )
            {
                // Arrays of arrays, and nanoseconds inside lists (they
                // could not be checked for rounding), are not mapped.
                return None;
            }
            PgType {
                oid: array_oid(element.oid)?,
                modifier: element.modifier,
                name: format!("{}[]", element.name),
                element_oid: Some(element.oid),
            }
        }
        _ => return None,
    })
}

/// The array type oid of a builtin element type.
fn array_oid(element: u32) -> Option<u32> {
    Some(match element {
        16 => 1000,
        17 => 1001,
        20 => 1016,
        21 => 1005,
        23 => 1007,
        25 => 1009,
        700 => 1021,
        701 => 1022,
        1082 => 1182,
        1083 => 1183,
        1114 => 1115,
        1184 => 1185,
        1186 => 1187,
        1700 => 1231,
        2950 => 2951,
        _ => return None,
    })
}

/// The columns of a file of Arrow schema `schema`; the error names the
/// first column whose type has no mapping.
pub fn columns_of(schema: &Schema) -> Result<Vec<ColumnSchema>, String> {
    schema
        .fields()
        .iter()
        .map(|field| {
            let pg_type = pg_type(field.data_type(), field).ok_or_else(|| {
                format!(
                    "column {} has Arrow type {}, which has no Postgres mapping",
                    field.name(),
                    field.data_type()
                )
            })?;
            Ok(ColumnSchema {
                name: field.name().clone(),
                pg_type,
                nullable: true,
                identity: false,
                array_form: ArrayForm::Lists,
            })
        })
        .collect()
}

/// The table of the source: `name` with `columns`, no key (rows are only
/// ever inserted), and an id derived from the name (stable across runs).
pub fn table_schema(name: &TableName, columns: Vec<ColumnSchema>) -> TableSchema {
    // FNV-1a: the same id in every run and build.
    let mut hash: u32 = 0x811c_9dc5;
    for byte in name.schema.bytes().chain([b'.']).chain(name.name.bytes()) {
        hash = (hash ^ u32::from(byte)).wrapping_mul(0x0100_0193);
    }
    TableSchema {
        id: TableId(hash | 0x8000_0000),
        name: name.clone(),
        columns,
        replica_identity: ReplicaIdentity::Full,
    }
}

/// A file's batch in the table's layout (columns cast to the mapping's
/// Arrow types). Fails, naming the column, when a value would change
/// (sub-microsecond times).
pub fn to_table_layout(table: &TableSchema, batch: &RecordBatch) -> Result<RecordBatch, String> {
    let schema = table_arrow_schema(table);
    let options = CastOptions {
        safe: false,
        ..CastOptions::default()
    };
    let mut columns = Vec::with_capacity(batch.num_columns());
    for (field, array) in schema.fields().iter().zip(batch.columns()) {
        if let DataType::Timestamp(TimeUnit::Nanosecond, _)
        | DataType::Time64(TimeUnit::Nanosecond) = array.data_type()
        {
            let as_nanos = cast(array, &DataType::Int64).map_err(|e| e.to_string())?;
            let nanos = as_nanos
                .as_any()
                .downcast_ref::<arrow::array::Int64Array>()
                .ok_or("nanosecond column not read as integers")?;
            if nanos.iter().flatten().any(|n| n % 1000 != 0) {
                return Err(format!(
                    "column {} holds times with nanoseconds, which Postgres cannot store (it keeps microseconds)",
                    field.name()
                ));
            }
        }
        let converted = cast_with(array, field.data_type(), &options).map_err(|e| {
            format!(
                "column {} cannot be converted to {}: {e}",
                field.name(),
                field.data_type()
            )
        })?;
        columns.push(converted);
    }
    RecordBatch::try_new(schema, columns).map_err(|e| e.to_string())
}

fn cast_with(
    array: &ArrayRef,
    to: &DataType,
    options: &CastOptions<'_>,
) -> arrow::error::Result<ArrayRef> {
    if array.data_type() == to {
        return Ok(array.clone());
    }
    arrow::compute::cast_with_options(array, to, options)
}

/// Rows of the table (in its layout) as a change batch of inserts
/// committed at `lsn` and `commit_micros`, sequence numbers from `first_seq`.
pub fn inserts(
    table: &TableSchema,
    rows: &RecordBatch,
    lsn: Lsn,
    commit_micros: i64,
    first_seq: u32,
) -> Result<RecordBatch, String> {
    let schema = change_arrow_schema(table);
    let n = rows.num_rows();
    let mut columns: Vec<ArrayRef> = rows.columns().to_vec();
    columns.push(Arc::new(UInt8Array::from(vec![ChangeOp::Insert as u8; n])));
    columns.push(Arc::new(UInt64Array::from(vec![lsn.0; n])));
    columns.push(Arc::new(
        TimestampMicrosecondArray::from(vec![commit_micros; n]).with_timezone("UTC"),
    ));
    columns.push(Arc::new(UInt32Array::from_iter_values(
        (0..n as u32).map(|i| first_seq.wrapping_add(i)),
    )));
    let metadata = schema.fields().len();
    columns.push(new_null_array(schema.field(metadata - 2).data_type(), n));
    columns.push(new_null_array(schema.field(metadata - 1).data_type(), n));
    RecordBatch::try_new(schema, columns).map_err(|e| e.to_string())
}

/// Whether `columns` describe the same table columns as the table's (names
/// and types), for a later file.
pub fn same_columns(table: &TableSchema, columns: &[ColumnSchema]) -> bool {
    table.columns.len() == columns.len()
        && table
            .columns
            .iter()
            .zip(columns)
            .all(|(a, b)| a.name == b.name && a.pg_type == b.pg_type)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int32Array, StringArray, TimestampNanosecondArray};

    #[test]
    fn arrow_types_map_to_postgres_types() {
        let schema = Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("name", DataType::LargeUtf8, true),
            Field::new("price", DataType::Decimal128(12, 2), true),
            Field::new(
                "at",
                DataType::Timestamp(TimeUnit::Millisecond, Some("+02:00".into())),
                true,
            ),
            Field::new(
                "tags",
                DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))),
                true,
            ),
            Field::new("big", DataType::UInt64, true),
        ]);
        let names: Vec<String> = columns_of(&schema)
            .unwrap()
            .into_iter()
            .map(|c| c.pg_type.name)
            .collect();
        assert_eq!(
            names,
            [
                "bigint",
                "text",
                "numeric(12,2)",
                "timestamp with time zone",
                "text[]",
                "numeric(20,0)"
            ]
        );
        let unsupported = Schema::new(vec![Field::new("m", DataType::Decimal256(50, 2), true)]);
        assert!(columns_of(&unsupported).unwrap_err().contains("column m"));
    }

    #[test]
    fn file_rows_become_inserts_in_the_table_layout() {
        let file = RecordBatch::try_from_iter(vec![
            ("id", Arc::new(Int32Array::from(vec![1, 2])) as ArrayRef),
            (
                "s",
                Arc::new(StringArray::from(vec![Some("a"), None])) as ArrayRef,
            ),
        ])
        .unwrap();
        let table = table_schema(
            &TableName::new("public", "t"),
            columns_of(&file.schema()).unwrap(),
        );
        let rows = to_table_layout(&table, &file).unwrap();
        let changes = inserts(&table, &rows, Lsn(77), 5, 10).unwrap();
        assert_eq!(changes.num_rows(), 2);
        assert_eq!(changes.schema(), change_arrow_schema(&table));
        assert_eq!(
            table.id,
            table_schema(&TableName::new("public", "t"), vec![]).id
        );
    }

    #[test]
    fn nanoseconds_are_refused_not_rounded() {
        let file = RecordBatch::try_from_iter(vec![(
            "at",
            Arc::new(TimestampNanosecondArray::from(vec![1_000, 1_500])) as ArrayRef,
        )])
        .unwrap();
        let table = table_schema(
            &TableName::new("public", "t"),
            columns_of(&file.schema()).unwrap(),
        );
        let error = to_table_layout(&table, &file).unwrap_err();
        assert!(error.contains("nanoseconds"), "{error}");
        let whole = RecordBatch::try_from_iter(vec![(
            "at",
            Arc::new(TimestampNanosecondArray::from(vec![1_000, 2_000])) as ArrayRef,
        )])
        .unwrap();
        assert!(to_table_layout(&table, &whole).is_ok());
    }
}
