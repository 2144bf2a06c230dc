//! Column types and DDL of the target tables.
//!
//! A target column has the source column's type as `format_type` printed
//! it (`numeric(12,2)`, `character varying(40)[]`, `mood`): the target
//! database must know user-defined types (enums, domains, extension types)
//! under the same name. Stage columns hold what the binary COPY sends:
//! the same type, or `text` / `text[]` for text-carried types, cast to the
//! column's type in SQL.

use super::copy_encoder::carried_as_text;
use crate::types::table::quote_identifier;
use crate::types::values::column_kind;
use crate::types::{ColumnSchema, ReplicaIdentity, TableSchema};

/// The schema of the sink's own tables.
pub const STATE_SCHEMA: &str = "_pg_replicate";

/// The columns identifying a row: the replica identity's (primary key or
/// chosen unique index); none under `REPLICA IDENTITY NOTHING` or `FULL`
/// without primary key.
pub fn key_columns(table: &TableSchema) -> Vec<usize> {
    if table.replica_identity == ReplicaIdentity::Nothing {
        return Vec::new();
    }
    table.identity_columns().collect()
}

/// The type of `column` in the target table.
pub fn target_type(column: &ColumnSchema) -> &str {
    &column.pg_type.name
}

/// Whether the COPY sends `column` as text (see the module documentation).
pub fn is_text_carried(column: &ColumnSchema) -> bool {
    carried_as_text(column_kind(column))
}

/// The type of a stage column holding values of `column`.
pub fn stage_type(column: &ColumnSchema) -> String {
    match (is_text_carried(column), column.pg_type.element_oid) {
        (false, _) => target_type(column).to_owned(),
        (true, Some(element)) if element != 0 && column.pg_type.name.ends_with("[]") => {
            "text[]".to_owned()
        }
        (true, _) => "text".to_owned(),
    }
}

/// `expr` (a stage column of `column`) as a value of the column's type.
pub fn cast(expr: &str, column: &ColumnSchema) -> String {
    if is_text_carried(column) {
        format!("{expr}::{}", target_type(column))
    } else {
        expr.to_owned()
    }
}

/// The quoted names of the columns `indexes` of `table`, comma separated.
pub fn column_list(table: &TableSchema, indexes: impl IntoIterator<Item = usize>) -> String {
    indexes
        .into_iter()
        .map(|i| quote_identifier(&table.columns[i].name))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `CREATE TABLE` of `table` with its columns and, when it has key
/// columns, their primary key.
pub fn create_table_sql(table: &TableSchema) -> String {
    let mut parts: Vec<String> = table
        .columns
        .iter()
        .map(|c| format!("{} {}", quote_identifier(&c.name), target_type(c)))
        .collect();
    let keys = key_columns(table);
    if !keys.is_empty() {
        parts.push(format!("PRIMARY KEY ({})", column_list(table, keys)));
    }
    format!(
        "CREATE TABLE {} ({})",
        table.name.quoted(),
        parts.join(", ")
    )
}

/// `CREATE SCHEMA IF NOT EXISTS` of the table's schema.
pub fn create_schema_sql(table: &TableSchema) -> String {
    format!(
        "CREATE SCHEMA IF NOT EXISTS {}",
        quote_identifier(&table.name.schema)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sinks::test_fixtures::column;
    use crate::types::{TableId, TableName};

    #[test]
    fn text_carried_columns_stage_as_text() {
        let array = |name: &str, oid: u32, type_name: &str, element: u32| {
            let mut c = column(name, oid, type_name, false);
            c.pg_type.element_oid = Some(element);
            c
        };
        let table = TableSchema {
            id: TableId(1),
            name: TableName::new("public", "typed"),
            columns: vec![
                column("id", 23, "integer", true),
                column("n", 1700, "numeric", false),
                column("a", 869, "inet", false),
                array("b", 1041, "inet[]", 869),
                array("c", 1007, "integer[]", 23),
                {
                    let mut c = column("d", 1700, "numeric(12,2)", false);
                    c.pg_type.modifier = ((12 << 16) | 2) + 4;
                    c
                },
            ],
            replica_identity: ReplicaIdentity::Default,
        };
        let types: Vec<(String, String)> = table
            .columns
            .iter()
            .map(|c| (target_type(c).to_owned(), stage_type(c)))
            .collect();
        for (target, stage) in &types {
            match target.as_str() {
                "inet" | "numeric" => assert_eq!(stage, "text", "{target}"),
                "inet[]" => assert_eq!(stage, "text[]"),
                _ => assert_eq!(stage, target),
            }
        }
        let sql = create_table_sql(&table);
        assert!(
            sql.starts_with("CREATE TABLE \"public\".\"typed\" ("),
            "{sql}"
        );
        assert!(sql.ends_with("PRIMARY KEY (\"id\"))"), "{sql}");
    }
}
