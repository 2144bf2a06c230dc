//! Names and types of the Snowflake tables the sink keeps. Pure text.
//!
//! Names: a Postgres name that is plain lower case (`orders`, `order_id`)
//! becomes its upper-case form (`ORDERS`), which Snowflake users write
//! without quotes; any other name (`Orders`, `line item`) keeps its exact
//! spelling and must be quoted in Snowflake. Tables of schema `public` keep
//! their name; other tables become `<schema>_<table>`.
//!
//! Types: see docs/snowflake.md, "Types". Every value loads through a CSV
//! file into a table of VARCHAR columns (the *load* table) and is cast to
//! its column type by the `INSERT … SELECT` that moves it on, so the text
//! written for a type and the cast reading it are defined side by side
//! here and in [`super::csv`].

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use arrow::datatypes::{DataType, IntervalUnit, TimeUnit};

use crate::types::values::{arrow_field, oid};
use crate::types::{ColumnSchema, ReplicaIdentity, TableName, TableSchema};
use crate::{Error, ErrorKind, Result};

/// The sink's table of replication state (one row per identity).
pub const STATE_TABLE: &str = "_PGR_STATE";
/// The sink's table of copied tables (one row per identity and table).
pub const COPIED_TABLE: &str = "_PGR_COPIED";
/// The internal stage files are uploaded to.
pub const STAGE: &str = "_PGR_STAGE";
/// Prefix of column and table names the sink reserves.
pub const RESERVED_PREFIX: &str = "_PGR_";

/// The Snowflake type of a replicated column.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SnowflakeType {
    /// `NUMBER(p,s)`.
    Number {
        /// Digits in all.
        precision: u8,
        /// Digits after the point.
        scale: u8,
    },
    /// `FLOAT` (a double).
    Float,
    /// `VARCHAR`.
    Varchar,
    /// `BINARY`.
    Binary,
    /// `BOOLEAN`.
    Boolean,
    /// `DATE`.
    Date,
    /// `TIME(6)`.
    Time,
    /// `TIMESTAMP_NTZ(6)`.
    TimestampNtz,
    /// `TIMESTAMP_TZ(6)`.
    TimestampTz,
    /// `VARIANT`: JSON, arrays.
    Variant,
}

impl fmt::Display for SnowflakeType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Number { precision, scale } => write!(f, "NUMBER({precision},{scale})"),
            Self::Float => f.write_str("FLOAT"),
            Self::Varchar => f.write_str("VARCHAR"),
            Self::Binary => f.write_str("BINARY"),
            Self::Boolean => f.write_str("BOOLEAN"),
            Self::Date => f.write_str("DATE"),
            Self::Time => f.write_str("TIME(6)"),
            Self::TimestampNtz => f.write_str("TIMESTAMP_NTZ(6)"),
            Self::TimestampTz => f.write_str("TIMESTAMP_TZ(6)"),
            Self::Variant => f.write_str("VARIANT"),
        }
    }
}

impl SnowflakeType {
    /// Whether a column Snowflake describes as `type_name` (as
    /// `information_schema.columns.data_type` spells it) with `precision`
    /// and `scale` has this type.
    pub fn matches(&self, type_name: &str, precision: Option<i64>, scale: Option<i64>) -> bool {
        let name = type_name.to_ascii_uppercase();
        match self {
            Self::Number {
                precision: p,
                scale: s,
            } => {
                name == "NUMBER"
                    && precision.is_none_or(|x| x == i64::from(*p))
                    && scale.is_none_or(|x| x == i64::from(*s))
            }
            Self::Float => matches!(name.as_str(), "FLOAT" | "DOUBLE" | "REAL"),
            Self::Varchar => matches!(name.as_str(), "TEXT" | "VARCHAR" | "STRING"),
            Self::Binary => matches!(name.as_str(), "BINARY" | "VARBINARY"),
            Self::Boolean => name == "BOOLEAN",
            Self::Date => name == "DATE",
            Self::Time => name == "TIME",
            Self::TimestampNtz => matches!(name.as_str(), "TIMESTAMP_NTZ" | "DATETIME"),
            Self::TimestampTz => name == "TIMESTAMP_TZ",
            Self::Variant => name == "VARIANT",
        }
    }

    /// The expression reading this type from `text`, a load table's
    /// VARCHAR cell written by the sink's CSV writer.
    pub fn cast(&self, text: &str) -> String {
        match self {
            Self::Varchar => format!("SUBSTR({text}, 2)"),
            Self::Variant => format!("PARSE_JSON(SUBSTR({text}, 2))"),
            Self::Binary => format!("TO_BINARY({text}, 'HEX')"),
            other => format!("{text}::{other}"),
        }
    }
}

/// The Snowflake type of `column`.
pub fn snowflake_type(column: &ColumnSchema) -> SnowflakeType {
    let field = arrow_field(column);
    let json = column.pg_type.oid == oid::JSON || column.pg_type.oid == oid::JSONB;
    match field.data_type() {
        DataType::Boolean => SnowflakeType::Boolean,
        DataType::Int16 | DataType::Int32 | DataType::Int64 | DataType::UInt32 => {
            SnowflakeType::Number {
                precision: 38,
                scale: 0,
            }
        }
        DataType::Float32 | DataType::Float64 => SnowflakeType::Float,
        DataType::Decimal128(precision, scale) => SnowflakeType::Number {
            precision: *precision,
            scale: (*scale).max(0) as u8,
        },
        DataType::Utf8 if json => SnowflakeType::Variant,
        DataType::Binary => SnowflakeType::Binary,
        DataType::Date32 => SnowflakeType::Date,
        DataType::Time64(TimeUnit::Microsecond) => SnowflakeType::Time,
        DataType::Timestamp(TimeUnit::Microsecond, None) => SnowflakeType::TimestampNtz,
        DataType::Timestamp(TimeUnit::Microsecond, Some(_)) => SnowflakeType::TimestampTz,
        DataType::List(_) | DataType::Struct(_) => SnowflakeType::Variant,
        DataType::Interval(IntervalUnit::MonthDayNano) | DataType::FixedSizeBinary(16) => {
            SnowflakeType::Varchar
        }
        _ => SnowflakeType::Varchar,
    }
}

/// Indexes of the columns that identify a row (see
/// [`TableSchema::identity_columns`]); empty for tables without any,
/// which the sink can only append to.
pub fn key_columns(table: &TableSchema) -> Vec<usize> {
    if table.replica_identity == ReplicaIdentity::Nothing {
        return Vec::new();
    }
    table.identity_columns().collect()
}

/// The Snowflake spelling of a Postgres name: upper case when it is plain
/// lower case (so it needs no quotes in Snowflake), else unchanged.
pub fn snowflake_name(name: &str) -> String {
    let plain = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '$');
    if plain {
        name.to_ascii_uppercase()
    } else {
        name.to_owned()
    }
}

/// A quoted Snowflake identifier (`"name"`, quotes doubled).
pub fn quote(identifier: &str) -> String {
    format!("\"{}\"", identifier.replace('"', "\"\""))
}

/// A Snowflake string literal (quotes and backslashes escaped).
pub fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// The (unquoted) Snowflake name of a Postgres table.
pub fn target_name(table: &TableName) -> String {
    if table.schema == "public" {
        snowflake_name(&table.name)
    } else {
        snowflake_name(&format!("{}_{}", table.schema, table.name))
    }
}

/// The (unquoted) name of a table's landing table.
pub fn landing_name(table: &TableName) -> String {
    let target = target_name(table);
    if target.chars().any(|c| c.is_ascii_lowercase()) {
        format!("landing_{target}")
    } else {
        format!("LANDING_{target}")
    }
}

/// The (unquoted) name of a table's load table: VARCHAR columns that CSV
/// files are copied into.
pub fn load_name(table: &TableName) -> String {
    format!("{RESERVED_PREFIX}LOAD_{}", target_name(table))
}

/// The (unquoted) name of a table's batch table: the changes of one batch
/// on their way into a landing table that keeps changes.
pub fn batch_name(table: &TableName) -> String {
    format!("{RESERVED_PREFIX}BATCH_{}", target_name(table))
}

/// The (unquoted) name of the task merging a table's landing table.
pub fn task_name(table: &TableName) -> String {
    format!("{RESERVED_PREFIX}MERGE_{}", target_name(table))
}

/// The name Snowflake resolves a database, schema or warehouse name to,
/// as a user writes it: upper case when it needs no quotes (`analytics`
/// is `ANALYTICS`), as spelled inside double quotes.
pub fn resolved_name(name: &str) -> String {
    if let Some(inner) = name
        .strip_prefix('"')
        .and_then(|rest| rest.strip_suffix('"'))
        .filter(|inner| !inner.is_empty())
    {
        return inner.replace("\"\"", "\"");
    }
    let bare = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$');
    if bare {
        name.to_ascii_uppercase()
    } else {
        name.to_owned()
    }
}

/// [`resolved_name`], quoted for a statement.
pub fn object_name(name: &str) -> String {
    quote(&resolved_name(name))
}

/// The (unquoted) Snowflake name of a column.
pub fn column_name(column: &ColumnSchema) -> String {
    snowflake_name(&column.name)
}

/// The columns a target table of a table without key has after the
/// table's own: each row's change position, so that a change applied
/// again is not inserted twice (see [`super::merge`]).
pub const POSITION_COLUMNS: [(&str, &str); 2] =
    [("_PGR_LSN", "NUMBER(20,0)"), ("_PGR_SEQ", "NUMBER(20,0)")];

/// `CREATE TABLE` of a table's target table (`replace`: anew, else only
/// when missing).
pub fn create_target_sql(table: &TableSchema, replace: bool) -> String {
    let mut columns: Vec<String> = table
        .columns
        .iter()
        .map(|c| format!("{} {}", quote(&column_name(c)), snowflake_type(c)))
        .collect();
    if key_columns(table).is_empty() {
        columns.extend(
            POSITION_COLUMNS
                .iter()
                .map(|(name, ty)| format!("{name} {ty}")),
        );
    }
    let head = if replace {
        "CREATE OR REPLACE TABLE"
    } else {
        "CREATE TABLE IF NOT EXISTS"
    };
    format!(
        "{head} {} ({})",
        quote(&target_name(&table.name)),
        columns.join(", ")
    )
}

/// `CREATE OR REPLACE TABLE` of a load table with `width` VARCHAR columns
/// named `C1`, `C2`, ….
pub fn create_load_sql(name: &str, width: usize) -> String {
    let columns: Vec<String> = (1..=width).map(|i| format!("\"C{i}\" VARCHAR")).collect();
    format!(
        "CREATE OR REPLACE TABLE {} ({})",
        quote(name),
        columns.join(", ")
    )
}

/// The load table column holding CSV field `i` (0-based).
pub fn load_column(i: usize) -> String {
    format!("\"C{}\"", i + 1)
}

/// `COPY INTO` a load table from the files under `path` of the stage,
/// which are removed once loaded.
pub fn copy_into_sql(load: &str, path: &str) -> String {
    format!(
        "COPY INTO {} FROM @{STAGE}/{path} FILE_FORMAT = (TYPE = CSV FIELD_OPTIONALLY_ENCLOSED_BY = '\"' \
         NULL_IF = ('\\\\N') EMPTY_FIELD_AS_NULL = FALSE ESCAPE_UNENCLOSED_FIELD = NONE) PURGE = TRUE",
        quote(load)
    )
}

/// Refuses tables and columns whose Snowflake names collide or use the
/// sink's reserved prefix.
pub fn check_names(tables: &[Arc<TableSchema>]) -> Result<()> {
    let mut seen: HashMap<String, &TableName> = HashMap::new();
    for table in tables {
        let name = &table.name;
        let target = target_name(name);
        if target.to_ascii_uppercase().starts_with(RESERVED_PREFIX) {
            return Err(name_error(format!(
                "table {name} would be stored as Snowflake table {target:?}, whose prefix {RESERVED_PREFIX} \
                 the sink reserves for its own tables; rename the table or leave it out of the publication"
            )));
        }
        if let Some(other) = seen.insert(target.clone(), name) {
            return Err(name_error(format!(
                "tables {other} and {name} would both be stored as Snowflake table {target:?}; rename one \
                 of them or replicate them into separate schemas"
            )));
        }
        let mut columns: HashMap<String, &str> = HashMap::new();
        for column in &table.columns {
            let stored = column_name(column);
            if stored.to_ascii_uppercase().starts_with(RESERVED_PREFIX) {
                return Err(name_error(format!(
                    "column {:?} of {name} starts with {RESERVED_PREFIX}, which the sink reserves for its own \
                     columns; rename it or leave it out of the publication (column list)",
                    column.name
                )));
            }
            if let Some(other) = columns.insert(stored.clone(), &column.name) {
                return Err(name_error(format!(
                    "columns {other:?} and {:?} of {name} would both be Snowflake column {stored:?}; rename \
                     one of them or leave it out of the publication (column list)",
                    column.name
                )));
            }
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
    use crate::sinks::test_fixtures::column;

    #[test]
    fn plain_lower_case_names_become_upper_case_and_others_stay() {
        assert_eq!(snowflake_name("orders"), "ORDERS");
        assert_eq!(snowflake_name("_x1$"), "_X1$");
        assert_eq!(snowflake_name("Orders"), "Orders");
        assert_eq!(snowflake_name("line item"), "line item");
        assert_eq!(snowflake_name("1st"), "1st");
        assert_eq!(quote("a\"b"), "\"a\"\"b\"");
        assert_eq!(literal("it's \\"), "'it\\'s \\\\'");
        assert_eq!(target_name(&TableName::new("public", "orders")), "ORDERS");
        assert_eq!(
            target_name(&TableName::new("sales", "orders")),
            "SALES_ORDERS"
        );
    }

    fn table(name: &str, columns: &[&str]) -> Arc<TableSchema> {
        Arc::new(TableSchema {
            id: crate::types::TableId(1),
            name: TableName::new("public", name),
            columns: columns
                .iter()
                .map(|c| column(c, 23, "integer", false))
                .collect(),
            replica_identity: ReplicaIdentity::Default,
        })
    }

    #[test]
    fn colliding_and_reserved_names_are_refused() {
        assert!(check_names(&[table("t", &["a", "A2"])]).is_ok());
        let clash = check_names(&[table("t", &["a", "A"])]).unwrap_err();
        assert!(clash.message().contains("\"A\""), "{clash}");
        let reserved = check_names(&[table("t", &["_pgr_op"])]).unwrap_err();
        assert!(reserved.message().contains("reserves"), "{reserved}");
        // Unquoted t is Snowflake's T.
        let tables = check_names(&[table("t", &["a"]), table("T", &["a"])]).unwrap_err();
        assert!(tables.message().contains("both"), "{tables}");
    }
}
