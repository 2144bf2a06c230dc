//! Postgres tables as DuckDB tables: type mapping, names and DDL.
//!
//! A Postgres table `schema.table` becomes the DuckDB table
//! `"schema"."table"` (its history `"schema"."table__history"`). Column
//! types follow the Arrow mapping of [`crate::types::values`]:
//!
//! | Arrow | DuckDB |
//! |---|---|
//! | Boolean | `BOOLEAN` |
//! | Int16 / Int32 / Int64 | `SMALLINT` / `INTEGER` / `BIGINT` |
//! | UInt32 (oid) | `UINTEGER` |
//! | Float32 / Float64 | `FLOAT` / `DOUBLE` |
//! | Decimal128(p,s) | `DECIMAL(p,s)` |
//! | Utf8 of `json`/`jsonb` | `JSON` |
//! | Utf8 (text and text-form types, numeric beyond 38 digits) | `VARCHAR` |
//! | Binary | `BLOB` |
//! | Date32 / Time64(µs) | `DATE` / `TIME` |
//! | Timestamp(µs) / Timestamp(µs, UTC) | `TIMESTAMP` / `TIMESTAMP WITH TIME ZONE` |
//! | Interval(MonthDayNano) | `INTERVAL` |
//! | FixedSizeBinary(16) `arrow.uuid` | `UUID` |
//! | List\<T\> | `T[]` |
//!
//! The type names are written the way DuckDB prints them back
//! (`duckdb_columns().data_type`), so an existing table can be compared with
//! the wanted one by text.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::datatypes::{DataType, IntervalUnit, TimeUnit};

use super::config::DuckDbMode;
use crate::types::change::{
    COMMIT_LSN_COLUMN, COMMIT_TIME_COLUMN, OLD_COLUMN, OP_COLUMN, SEQUENCE_COLUMN, UNCHANGED_COLUMN,
};
use crate::types::table::quote_identifier;
use crate::types::values::{arrow_field, ARRAY_ELEMENTS_FIELD};
use crate::types::{ColumnSchema, ReplicaIdentity, TableName, TableSchema};
use crate::{Error, ErrorKind, Result};

/// Suffix of history table names: `orders` → `orders__history`.
pub const HISTORY_SUFFIX: &str = "__history";

/// The DuckDB schema holding the sink's own state.
pub const STATE_SCHEMA: &str = "_pg_replicate";

/// Postgres type oids of `json` and `jsonb`.
const JSON_OIDS: [u32; 2] = [114, 3802];

/// The DuckDB type of a column, as DuckDB prints it.
pub fn duckdb_type(column: &ColumnSchema) -> String {
    let field = arrow_field(column);
    let json_element = column
        .pg_type
        .element_oid
        .is_some_and(|e| JSON_OIDS.contains(&e));
    let json = JSON_OIDS.contains(&column.pg_type.oid) || json_element;
    arrow_type(field.data_type(), json)
}

/// DuckDB type of an Arrow type of the mapping; `json` marks text that is
/// JSON. Types outside the mapping (never produced by the source) become
/// `VARCHAR`, which the appender refuses with a clear error.
fn arrow_type(data_type: &DataType, json: bool) -> String {
    match data_type {
        DataType::Boolean => "BOOLEAN".into(),
        DataType::Int16 => "SMALLINT".into(),
        DataType::Int32 => "INTEGER".into(),
        DataType::Int64 => "BIGINT".into(),
        DataType::UInt8 => "UTINYINT".into(),
        DataType::UInt32 => "UINTEGER".into(),
        DataType::UInt64 => "UBIGINT".into(),
        DataType::Float32 => "FLOAT".into(),
        DataType::Float64 => "DOUBLE".into(),
        DataType::Decimal128(precision, scale) => format!("DECIMAL({precision},{scale})"),
        DataType::Utf8 if json => "JSON".into(),
        DataType::Utf8 => "VARCHAR".into(),
        DataType::Binary => "BLOB".into(),
        DataType::Date32 => "DATE".into(),
        DataType::Time64(TimeUnit::Microsecond) => "TIME".into(),
        DataType::Timestamp(TimeUnit::Microsecond, None) => "TIMESTAMP".into(),
        DataType::Timestamp(TimeUnit::Microsecond, Some(_)) => "TIMESTAMP WITH TIME ZONE".into(),
        DataType::Interval(IntervalUnit::MonthDayNano) => "INTERVAL".into(),
        DataType::FixedSizeBinary(16) => "UUID".into(),
        DataType::List(item) => format!("{}[]", arrow_type(item.data_type(), json)),
        // The exact array struct (`ArrayForm::Exact`), spelled as DuckDB
        // prints it so that existing tables compare equal.
        DataType::Struct(fields) => {
            let fields: Vec<String> = fields
                .iter()
                .map(|f| {
                    let json = json && f.name() == ARRAY_ELEMENTS_FIELD;
                    format!("{} {}", f.name(), arrow_type(f.data_type(), json))
                })
                .collect();
            format!("STRUCT({})", fields.join(", "))
        }
        _ => "VARCHAR".into(),
    }
}

/// Indexes of the columns that identify a row: the replica identity's
/// columns (the primary key, or the replica identity index); under
/// `REPLICA IDENTITY FULL` the primary key when there is one. Empty for
/// tables without any (they are matched by their whole old row).
pub fn key_columns(table: &TableSchema) -> Vec<usize> {
    if table.replica_identity == ReplicaIdentity::Nothing {
        return Vec::new();
    }
    table.identity_columns().collect()
}

/// The DuckDB name of a table's history table.
pub fn history_name(name: &TableName) -> TableName {
    TableName::new(&name.schema, format!("{}{HISTORY_SUFFIX}", name.name))
}

/// `CREATE TABLE` of the current-state table: the columns and the primary
/// key on [`key_columns`].
pub fn create_table_sql(table: &TableSchema) -> String {
    create_sql(table, true)
}

/// `CREATE TABLE` of the current-state table with its columns only; a
/// copy into it adds the key afterwards with [`add_key_sql`].
pub fn create_table_without_key_sql(table: &TableSchema) -> String {
    create_sql(table, false)
}

fn create_sql(table: &TableSchema, with_key: bool) -> String {
    let mut sql = format!("CREATE TABLE {} (", table.name.quoted());
    for (i, column) in table.columns.iter().enumerate() {
        if i > 0 {
            sql.push_str(", ");
        }
        sql.push_str(&quote_identifier(&column.name));
        sql.push(' ');
        sql.push_str(&duckdb_type(column));
    }
    let keys = key_columns(table);
    if with_key && !keys.is_empty() {
        sql.push_str(", PRIMARY KEY (");
        sql.push_str(&column_list(table, &keys));
        sql.push(')');
    }
    sql.push(')');
    sql
}

/// `ALTER TABLE … ADD PRIMARY KEY` on [`key_columns`]; `None` for tables
/// without key.
pub fn add_key_sql(table: &TableSchema) -> Option<String> {
    let keys = key_columns(table);
    (!keys.is_empty()).then(|| {
        format!(
            "ALTER TABLE {} ADD PRIMARY KEY ({})",
            table.name.quoted(),
            column_list(table, &keys)
        )
    })
}

/// The metadata columns of history tables with their DuckDB types, after
/// the table's columns.
pub const HISTORY_COLUMNS: [(&str, &str); 6] = [
    (OP_COLUMN, "VARCHAR"),
    (COMMIT_LSN_COLUMN, "UBIGINT"),
    (COMMIT_TIME_COLUMN, "TIMESTAMP WITH TIME ZONE"),
    (SEQUENCE_COLUMN, "UINTEGER"),
    (UNCHANGED_COLUMN, "VARCHAR[]"),
    (OLD_COLUMN, "JSON"),
];

/// `CREATE TABLE` of the history table: the table's columns (no key) and
/// [`HISTORY_COLUMNS`].
pub fn create_history_sql(table: &TableSchema) -> String {
    let mut sql = format!("CREATE TABLE {} (", history_name(&table.name).quoted());
    for column in &table.columns {
        sql.push_str(&quote_identifier(&column.name));
        sql.push(' ');
        sql.push_str(&duckdb_type(column));
        sql.push_str(", ");
    }
    for (i, (name, ty)) in HISTORY_COLUMNS.iter().enumerate() {
        if i > 0 {
            sql.push_str(", ");
        }
        sql.push_str(&quote_identifier(name));
        sql.push(' ');
        sql.push_str(ty);
    }
    sql.push(')');
    sql
}

/// The wanted columns of a table in DuckDB: name and type.
pub fn wanted_columns(table: &TableSchema) -> Vec<(String, String)> {
    table
        .columns
        .iter()
        .map(|c| (c.name.clone(), duckdb_type(c)))
        .collect()
}

/// Names of the key columns, in key order.
pub fn key_names(table: &TableSchema) -> Vec<String> {
    key_columns(table)
        .into_iter()
        .map(|i| table.columns[i].name.clone())
        .collect()
}

/// Quoted, comma-separated names of `columns` (indexes into the table).
pub fn column_list(table: &TableSchema, columns: &[usize]) -> String {
    columns
        .iter()
        .map(|&i| quote_identifier(&table.columns[i].name))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Refuses tables DuckDB cannot keep apart or that collide with the sink's
/// own names. DuckDB matches identifiers case-insensitively, so Postgres
/// tables (or columns) whose names differ only in case would be one table
/// (column) in DuckDB.
pub fn check_names(tables: &[Arc<TableSchema>], mode: DuckDbMode) -> Result<()> {
    let mut seen: HashMap<(String, String), &TableName> = HashMap::new();
    for table in tables {
        let name = &table.name;
        if name.schema.eq_ignore_ascii_case(STATE_SCHEMA) {
            return Err(name_error(format!(
                "table {name} is in the schema {STATE_SCHEMA}, which the DuckDB sink reserves for its state; \
                 rename the Postgres schema or leave the table out of the publication"
            )));
        }
        let mut names = vec![name.clone()];
        if mode.history() {
            names.push(history_name(name));
        }
        for duck in names {
            let folded = (duck.schema.to_lowercase(), duck.name.to_lowercase());
            if let Some(other) = seen.insert(folded, name) {
                return Err(name_error(format!(
                    "tables {other} and {name} would both be stored as DuckDB table {duck} (DuckDB \
                     matches names case-insensitively, and history tables end in {HISTORY_SUFFIX}); \
                     rename one of them or replicate them into separate DuckDB files"
                )));
            }
        }
        let mut columns: HashMap<String, &str> = HashMap::new();
        for column in &table.columns {
            if let Some(other) = columns.insert(column.name.to_lowercase(), &column.name) {
                return Err(name_error(format!(
                    "columns {other:?} and {:?} of {name} differ only in case, which DuckDB cannot keep \
                     apart; rename one of them or leave it out of the publication (column list)",
                    column.name
                )));
            }
            if mode.history()
                && HISTORY_COLUMNS
                    .iter()
                    .any(|(h, _)| h.eq_ignore_ascii_case(&column.name))
            {
                return Err(name_error(format!(
                    "column {:?} of {name} has the name of a history metadata column; rename it or use \
                     DuckDbMode::CurrentState",
                    column.name
                )));
            }
        }
        if mode.current_state()
            && key_columns(table).is_empty()
            && table
                .columns
                .iter()
                .any(|c| c.name.eq_ignore_ascii_case("rowid"))
        {
            return Err(name_error(format!(
                "{name} has no key and a column named rowid, which hides the DuckDB row id the sink uses \
                 to update rows of tables without key; add a primary key or rename the column"
            )));
        }
    }
    Ok(())
}

fn name_error(message: String) -> Error {
    Error::new(ErrorKind::Schema, message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{PgType, TableId};

    pub(crate) fn column(name: &str, oid: u32, modifier: i32, type_name: &str) -> ColumnSchema {
        ColumnSchema {
            name: name.into(),
            pg_type: PgType {
                oid,
                modifier,
                name: type_name.into(),
                element_oid: None,
            },
            nullable: true,
            identity: false,
            array_form: crate::types::ArrayForm::Lists,
        }
    }

    #[test]
    fn types_follow_the_arrow_mapping() {
        let numeric_12_2 = ((12 << 16) | 2) + 4;
        let cases = [
            (column("a", 16, -1, "boolean"), "BOOLEAN"),
            (column("a", 21, -1, "smallint"), "SMALLINT"),
            (column("a", 26, -1, "oid"), "UINTEGER"),
            (column("a", 700, -1, "real"), "FLOAT"),
            (
                column("a", 1700, numeric_12_2, "numeric(12,2)"),
                "DECIMAL(12,2)",
            ),
            (column("a", 1700, -1, "numeric"), "VARCHAR"),
            (column("a", 114, -1, "json"), "JSON"),
            (column("a", 3802, -1, "jsonb"), "JSON"),
            (column("a", 17, -1, "bytea"), "BLOB"),
            (
                column("a", 1184, -1, "timestamp with time zone"),
                "TIMESTAMP WITH TIME ZONE",
            ),
            (column("a", 1186, -1, "interval"), "INTERVAL"),
            (column("a", 2950, -1, "uuid"), "UUID"),
            (column("a", 869, -1, "inet"), "VARCHAR"),
        ];
        for (column, expected) in cases {
            assert_eq!(duckdb_type(&column), expected, "{}", column.pg_type.name);
        }
        let mut array = column("a", 1007, -1, "integer[]");
        array.pg_type.element_oid = Some(23);
        assert_eq!(duckdb_type(&array), "INTEGER[]");
        let mut json_array = column("a", 3807, -1, "jsonb[]");
        json_array.pg_type.element_oid = Some(3802);
        assert_eq!(duckdb_type(&json_array), "JSON[]");
        json_array.array_form = crate::types::ArrayForm::Exact;
        assert_eq!(
            duckdb_type(&json_array),
            "STRUCT(dims INTEGER[], lower_bounds INTEGER[], elements JSON[])"
        );
    }

    fn table(name: &str, columns: Vec<ColumnSchema>) -> Arc<TableSchema> {
        Arc::new(TableSchema {
            id: TableId(1),
            name: TableName::new("public", name),
            columns,
            replica_identity: ReplicaIdentity::Default,
        })
    }

    #[test]
    fn ddl_keeps_the_key_and_quotes_names() {
        let mut id = column("Id", 23, -1, "integer");
        id.identity = true;
        let t = table("My \"T\"", vec![id, column("v", 25, -1, "text")]);
        assert_eq!(
            create_table_sql(&t),
            r#"CREATE TABLE "public"."My ""T""" ("Id" INTEGER, "v" VARCHAR, PRIMARY KEY ("Id"))"#
        );
        assert_eq!(
            create_table_without_key_sql(&t),
            r#"CREATE TABLE "public"."My ""T""" ("Id" INTEGER, "v" VARCHAR)"#
        );
        assert_eq!(
            add_key_sql(&t).as_deref(),
            Some(r#"ALTER TABLE "public"."My ""T""" ADD PRIMARY KEY ("Id")"#)
        );
        let unkeyed = table("u", vec![column("v", 25, -1, "text")]);
        assert_eq!(add_key_sql(&unkeyed), None);
        assert_eq!(
            create_table_sql(&unkeyed),
            create_table_without_key_sql(&unkeyed)
        );
        assert!(create_history_sql(&t).starts_with(
            r#"CREATE TABLE "public"."My ""T""__history" ("Id" INTEGER, "v" VARCHAR, "_pgr_op" VARCHAR"#
        ));
    }

    #[test]
    fn names_that_collide_in_duckdb_are_refused() {
        let a = table("Orders", vec![column("v", 25, -1, "text")]);
        let b = table("orders", vec![column("v", 25, -1, "text")]);
        let error = check_names(&[a.clone(), b], DuckDbMode::CurrentState).unwrap_err();
        assert!(error.message().contains("case-insensitively"), "{error}");

        let h = table("orders__history", vec![column("v", 25, -1, "text")]);
        assert!(check_names(&[a.clone(), h.clone()], DuckDbMode::CurrentState).is_ok());
        assert!(check_names(&[a, h], DuckDbMode::Both).is_err());

        let c = table(
            "t",
            vec![column("V", 25, -1, "text"), column("v", 25, -1, "text")],
        );
        assert!(check_names(&[c], DuckDbMode::CurrentState).is_err());
        let meta = table("t", vec![column("_pgr_op", 25, -1, "text")]);
        assert!(check_names(std::slice::from_ref(&meta), DuckDbMode::CurrentState).is_ok());
        assert!(check_names(&[meta], DuckDbMode::History).is_err());
    }
}
