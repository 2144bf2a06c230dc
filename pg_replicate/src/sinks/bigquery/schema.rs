//! Postgres tables as BigQuery tables: type mapping, names and DDL.
//!
//! A Postgres table `schema.table` becomes the table `schema_table` of the
//! sink's dataset, with a staging table `_pgr_staging_schema_table` next to
//! it for the changes of the batch being applied. Column types follow the
//! Arrow mapping of [`crate::types::values`], taking the closest BigQuery
//! type that holds every value exactly (`docs/bigquery.md` has the table):
//!
//! | Arrow | BigQuery |
//! |---|---|
//! | Boolean | `BOOL` |
//! | Int16 / Int32 / Int64 / UInt32 (oid) | `INT64` |
//! | Float32 / Float64 | `FLOAT64` |
//! | Decimal128(p,s), s ≤ 9 and p − s ≤ 29 | `NUMERIC(p, s)` |
//! | Decimal128(p,s), otherwise | `BIGNUMERIC(p, s)` |
//! | Utf8 of `json`/`jsonb` | `JSON` |
//! | Utf8 (text, text-form types, numeric beyond 38 digits) | `STRING` |
//! | Binary | `BYTES` |
//! | Date32 / Time64(µs) | `DATE` / `TIME` |
//! | Timestamp(µs) / Timestamp(µs, UTC) | `DATETIME` / `TIMESTAMP` |
//! | Interval(MonthDayNano) | `STRING`, ISO 8601 duration |
//! | FixedSizeBinary(16) `arrow.uuid` | `STRING` |
//! | List\<T\> (arrays) | `JSON` array |
//! | Struct (exact arrays, `ArrayForm::Exact`) | `JSON` object of dims, lower bounds, elements |
//!
//! Arrays are JSON because BigQuery's `ARRAY` holds no NULL element and
//! stores a NULL array as an empty one: a JSON array keeps both.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use arrow::datatypes::{DataType, IntervalUnit, TimeUnit};

use crate::types::values::{arrow_field, oid};
use crate::types::{ColumnSchema, ReplicaIdentity, TableName, TableSchema};
use crate::{Error, ErrorKind, Result};

/// Prefix of the staging tables' names.
pub const STAGING_PREFIX: &str = "_pgr_staging_";
/// The table of the sink's progress (one row per identity).
pub const STATE_TABLE: &str = "_pg_replicate_state";
/// The table of the copied tables (one row per identity and table).
pub const COPIED_TABLE: &str = "_pg_replicate_copied";

/// The sink's table of copies in progress: one row per identity and table
/// being copied, with the token naming its copy table.
pub const COPYING_TABLE: &str = "_pg_replicate_copying";

/// The table a copy loads into before its rows move to the target table.
pub fn copy_table_name(token: &str) -> String {
    format!("_pgr_copy_{token}")
}

/// A BigQuery column type of the mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BigQueryType {
    /// `BOOL`.
    Bool,
    /// `INT64`.
    Int64,
    /// `FLOAT64`.
    Float64,
    /// `NUMERIC(precision, scale)`.
    Numeric {
        /// Digits in all.
        precision: u8,
        /// Digits after the point.
        scale: u8,
    },
    /// `BIGNUMERIC(precision, scale)`.
    BigNumeric {
        /// Digits in all.
        precision: u8,
        /// Digits after the point.
        scale: u8,
    },
    /// `STRING`.
    String,
    /// `BYTES`.
    Bytes,
    /// `DATE`.
    Date,
    /// `TIME`.
    Time,
    /// `DATETIME`.
    Datetime,
    /// `TIMESTAMP`.
    Timestamp,
    /// `JSON`.
    Json,
}

impl BigQueryType {
    /// The type's name in BigQuery's API (`tables.get`, load job schemas).
    pub fn api_name(self) -> &'static str {
        match self {
            Self::Bool => "BOOL",
            Self::Int64 => "INT64",
            Self::Float64 => "FLOAT64",
            Self::Numeric { .. } => "NUMERIC",
            Self::BigNumeric { .. } => "BIGNUMERIC",
            Self::String => "STRING",
            Self::Bytes => "BYTES",
            Self::Date => "DATE",
            Self::Time => "TIME",
            Self::Datetime => "DATETIME",
            Self::Timestamp => "TIMESTAMP",
            Self::Json => "JSON",
        }
    }

    /// Precision and scale of the decimal types.
    pub fn decimal(self) -> Option<(u8, u8)> {
        match self {
            Self::Numeric { precision, scale } | Self::BigNumeric { precision, scale } => {
                Some((precision, scale))
            }
            _ => None,
        }
    }

    /// The Arrow type the encoder gives columns of this type.
    pub fn arrow_type(self) -> DataType {
        match self {
            Self::Bool => DataType::Boolean,
            Self::Int64 => DataType::Int64,
            Self::Float64 => DataType::Float64,
            Self::Numeric { precision, scale } | Self::BigNumeric { precision, scale } => {
                DataType::Decimal128(precision, scale as i8)
            }
            Self::String | Self::Json => DataType::Utf8,
            Self::Bytes => DataType::Binary,
            Self::Date => DataType::Date32,
            Self::Time => DataType::Time64(TimeUnit::Microsecond),
            Self::Datetime => DataType::Timestamp(TimeUnit::Microsecond, None),
            Self::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        }
    }

    /// Whether a table column of type `api_name` (as `tables.get` reports
    /// it, with its precision and scale) is this type. BigQuery reports
    /// legacy names (`INTEGER`, `FLOAT`, `BOOLEAN`), and a decimal column
    /// by the family that fits its parameters, so decimals are compared by
    /// precision and scale only. A decimal column reported without
    /// parameters (created as plain `NUMERIC` or `BIGNUMERIC`, or by an
    /// emulator that does not report them) matches when it holds every
    /// value of this type exactly: 29 integer and 9 fraction digits for
    /// `NUMERIC`, 38 and 38 for `BIGNUMERIC`.
    pub fn matches(self, api_name: &str, precision: Option<u8>, scale: Option<u8>) -> bool {
        let name = match api_name.to_ascii_uppercase().as_str() {
            "INTEGER" => "INT64".to_owned(),
            "FLOAT" => "FLOAT64".to_owned(),
            "BOOLEAN" => "BOOL".to_owned(),
            other => other.to_owned(),
        };
        match self.decimal() {
            Some((p, s)) => match (name.as_str(), precision) {
                ("NUMERIC" | "BIGNUMERIC", Some(_)) => {
                    precision == Some(p) && scale.unwrap_or(0) == s
                }
                ("NUMERIC", None) => s <= 9 && p - s <= 29,
                ("BIGNUMERIC", None) => s <= 38 && p - s <= 38,
                _ => false,
            },
            None => name == self.api_name(),
        }
    }
}

impl fmt::Display for BigQueryType {
    /// The type as DDL writes it: `INT64`, `NUMERIC(12, 2)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.decimal() {
            Some((precision, scale)) => {
                write!(f, "{}({precision}, {scale})", self.api_name())
            }
            None => f.write_str(self.api_name()),
        }
    }
}

/// The BigQuery type of a column.
pub fn bigquery_type(column: &ColumnSchema) -> BigQueryType {
    let field = arrow_field(column);
    let json = column.pg_type.oid == oid::JSON || column.pg_type.oid == oid::JSONB;
    match field.data_type() {
        DataType::Boolean => BigQueryType::Bool,
        DataType::Int16 | DataType::Int32 | DataType::Int64 | DataType::UInt32 => {
            BigQueryType::Int64
        }
        DataType::Float32 | DataType::Float64 => BigQueryType::Float64,
        DataType::Decimal128(precision, scale) => {
            let (precision, scale) = (*precision, (*scale).max(0) as u8);
            if scale <= 9 && precision - scale <= 29 {
                BigQueryType::Numeric { precision, scale }
            } else {
                BigQueryType::BigNumeric { precision, scale }
            }
        }
        DataType::Utf8 if json => BigQueryType::Json,
        DataType::Binary => BigQueryType::Bytes,
        DataType::Date32 => BigQueryType::Date,
        DataType::Time64(TimeUnit::Microsecond) => BigQueryType::Time,
        DataType::Timestamp(TimeUnit::Microsecond, None) => BigQueryType::Datetime,
        DataType::Timestamp(TimeUnit::Microsecond, Some(_)) => BigQueryType::Timestamp,
        DataType::List(_) | DataType::Struct(_) => BigQueryType::Json,
        DataType::Interval(IntervalUnit::MonthDayNano) | DataType::FixedSizeBinary(16) => {
            BigQueryType::String
        }
        _ => BigQueryType::String,
    }
}

/// Indexes of the columns that identify a row: the replica identity's
/// columns (the primary key, or the replica identity index; under `FULL`
/// the primary key when there is one). Empty for tables without any, which
/// the sink can only append to.
pub fn key_columns(table: &TableSchema) -> Vec<usize> {
    if table.replica_identity == ReplicaIdentity::Nothing {
        return Vec::new();
    }
    table.identity_columns().collect()
}

/// The BigQuery name of a Postgres table: `schema_table`.
pub fn target_name(table: &TableName) -> String {
    format!("{}_{}", table.schema, table.name)
}

/// The name of a table's staging table.
pub fn staging_name(table: &TableName) -> String {
    format!("{STAGING_PREFIX}{}", target_name(table))
}

/// A quoted BigQuery identifier: `` `name` `` (backticks and backslashes
/// escaped).
pub fn quote(identifier: &str) -> String {
    let mut quoted = String::with_capacity(identifier.len() + 2);
    quoted.push('`');
    for c in identifier.chars() {
        if c == '`' || c == '\\' {
            quoted.push('\\');
        }
        quoted.push(c);
    }
    quoted.push('`');
    quoted
}

/// A BigQuery string literal: `'text'` (quotes and backslashes escaped).
pub fn literal(text: &str) -> String {
    let mut quoted = String::with_capacity(text.len() + 2);
    quoted.push('\'');
    for c in text.chars() {
        match c {
            '\'' | '\\' => {
                quoted.push('\\');
                quoted.push(c);
            }
            '\n' => quoted.push_str("\\n"),
            '\r' => quoted.push_str("\\r"),
            _ => quoted.push(c),
        }
    }
    quoted.push('\'');
    quoted
}

/// `` `dataset`.`table` ``.
pub fn qualified(dataset: &str, table: &str) -> String {
    format!("{}.{}", quote(dataset), quote(table))
}

/// Prefixes BigQuery reserves for its own columns (case-insensitive).
const RESERVED_COLUMN_PREFIXES: [&str; 9] = [
    "_TABLE_",
    "_FILE_",
    "_PARTITION",
    "_ROW_TIMESTAMP",
    "__ROOT__",
    "_COLIDENTIFIER",
    "_CHANGE_SEQUENCE_NUMBER",
    "_CHANGE_TYPE",
    "_CHANGE_TIMESTAMP",
];

/// Characters BigQuery allows in a table name besides letters, marks and
/// numbers (Unicode categories L, M, N): connectors, dashes and spaces.
fn table_name_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_' || c == '-' || c == ' '
}

/// Characters of a flexible column name besides letters, marks and numbers.
fn column_name_char(c: char) -> bool {
    c.is_alphanumeric() || "_- &%=+:'<>#|".contains(c)
}

/// Refuses tables and columns BigQuery cannot store under the names this
/// sink gives them: table names that collide (BigQuery compares table
/// names as given; `a_b.c` and `a.b_c` both become `a_b_c`), names with
/// characters BigQuery does not allow, columns whose names differ only in
/// case (BigQuery matches column names case-insensitively) or start with a
/// prefix BigQuery reserves.
pub fn check_names(tables: &[Arc<TableSchema>]) -> Result<()> {
    let mut seen: HashMap<String, &TableName> = HashMap::new();
    for table in tables {
        let name = &table.name;
        let target = target_name(name);
        if !target.chars().all(table_name_char) || staging_name(name).len() > 1024 {
            return Err(name_error(format!(
                "table {name} would be stored as BigQuery table {target:?}, which is not a valid BigQuery \
                 table name (letters, digits, '_', '-' and spaces, at most 1,010 bytes); rename the table \
                 or leave it out of the publication"
            )));
        }
        if let Some(other) = seen.insert(target.clone(), name) {
            return Err(name_error(format!(
                "tables {other} and {name} would both be stored as BigQuery table {target:?}; rename one \
                 of them or replicate them into separate datasets"
            )));
        }
        let mut columns: HashMap<String, &str> = HashMap::new();
        for column in &table.columns {
            let upper = column.name.to_uppercase();
            if column.name.len() > 300
                || !column.name.chars().all(column_name_char)
                || RESERVED_COLUMN_PREFIXES
                    .iter()
                    .any(|p| upper.starts_with(p))
            {
                return Err(name_error(format!(
                    "column {:?} of {name} is not a valid BigQuery column name (at most 300 bytes of \
                     letters, digits and _- &%=+:'<>#|, not starting with a prefix BigQuery reserves \
                     such as _TABLE_ or _PARTITION); rename it or leave it out of the publication (column \
                     list)",
                    column.name
                )));
            }
            if let Some(other) = columns.insert(column.name.to_lowercase(), &column.name) {
                return Err(name_error(format!(
                    "columns {other:?} and {:?} of {name} differ only in case, which BigQuery cannot keep \
                     apart; rename one of them or leave it out of the publication (column list)",
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

/// The message of the copy's fence: another copy of the table started
/// after this one (or it ended).
pub const COPY_SUPERSEDED: &str = "pg_replicate: another copy of this table started after this one";

/// The statement that fails with [`COPY_SUPERSEDED`] unless the copy of
/// `token` is still `table`'s copy in progress for `identity`.
pub fn copy_fence_sql(dataset: &str, identity: &str, table: &TableSchema, token: &str) -> String {
    format!(
        "ASSERT (SELECT COUNT(*) FROM {} WHERE identity = {} AND table_id = {} AND copy_token = {}) = 1 \
         AS {};\n",
        qualified(dataset, COPYING_TABLE),
        literal(identity),
        table.id.0,
        literal(token),
        literal(COPY_SUPERSEDED),
    )
}

/// A script running `statements` only while the copy of `token` is still
/// `table`'s copy in progress: the same statements sent by a killed
/// process and run late, after a newer copy started or ended, change
/// nothing.
pub fn fenced_copy_sql(
    dataset: &str,
    identity: &str,
    table: &TableSchema,
    token: &str,
    statements: &[String],
) -> String {
    let mut sql = copy_fence_sql(dataset, identity, table, token);
    for statement in statements {
        sql.push_str(statement);
        sql.push_str(";\n");
    }
    sql
}

/// `CREATE TABLE` of a target table: every column nullable (a column
/// added later cannot be required), the primary key `NOT ENFORCED`.
pub fn create_target_sql(dataset: &str, table: &TableSchema, replace: bool) -> String {
    let columns: Vec<String> = table
        .columns
        .iter()
        .map(|c| format!("{} {}", quote(&c.name), bigquery_type(c)))
        .collect();
    let keys = key_columns(table);
    let mut sql = format!(
        "{} {} ({}",
        if replace {
            "CREATE OR REPLACE TABLE"
        } else {
            "CREATE TABLE IF NOT EXISTS"
        },
        qualified(dataset, &target_name(&table.name)),
        columns.join(", ")
    );
    if !keys.is_empty() {
        let names: Vec<String> = keys
            .iter()
            .map(|&k| quote(&table.columns[k].name))
            .collect();
        sql.push_str(&format!(
            ", PRIMARY KEY ({}) NOT ENFORCED",
            names.join(", ")
        ));
    }
    sql.push(')');
    sql
}

/// `CREATE TABLE IF NOT EXISTS` of the sink's state tables.
pub fn create_state_sql(dataset: &str) -> [String; 3] {
    [
        format!(
            "CREATE TABLE IF NOT EXISTS {} (identity STRING NOT NULL, format_version INT64 NOT NULL, \
             last_lsn INT64, position_commit_lsn INT64, position_seq INT64, position_events INT64, \
             updated_at TIMESTAMP)",
            qualified(dataset, STATE_TABLE)
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS {} (identity STRING NOT NULL, table_id INT64 NOT NULL, \
             table_name STRING NOT NULL, snapshot_lsn INT64 NOT NULL, copied_at TIMESTAMP)",
            qualified(dataset, COPIED_TABLE)
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS {} (identity STRING NOT NULL, table_id INT64 NOT NULL, \
             copy_token STRING NOT NULL, started_at TIMESTAMP)",
            qualified(dataset, COPYING_TABLE)
        ),
    ]
}

/// `CREATE TABLE` of a copy table with the columns of `table`'s target.
pub fn create_copy_table_sql(dataset: &str, table: &TableSchema, token: &str) -> String {
    let columns: Vec<String> = table
        .columns
        .iter()
        .map(|c| format!("{} {}", quote(&c.name), bigquery_type(c)))
        .collect();
    format!(
        "CREATE TABLE {} ({})",
        qualified(dataset, &copy_table_name(token)),
        columns.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{PgType, TableId};

    fn column(name: &str, oid: u32, modifier: i32, element: Option<u32>) -> ColumnSchema {
        ColumnSchema {
            name: name.into(),
            pg_type: PgType {
                oid,
                modifier,
                name: String::new(),
                element_oid: element,
            },
            nullable: true,
            identity: false,
            array_form: crate::types::ArrayForm::Lists,
        }
    }

    fn numeric(precision: i32, scale: i32) -> ColumnSchema {
        column("n", 1700, ((precision << 16) | scale) + 4, None)
    }

    #[test]
    fn types_are_the_closest_exact_ones() {
        let cases = [
            (column("b", 16, -1, None), "BOOL"),
            (column("s", 21, -1, None), "INT64"),
            (column("o", 26, -1, None), "INT64"),
            (column("f", 700, -1, None), "FLOAT64"),
            (numeric(12, 2), "NUMERIC(12, 2)"),
            (numeric(38, 9), "NUMERIC(38, 9)"),
            (numeric(38, 0), "BIGNUMERIC(38, 0)"),
            (numeric(20, 10), "BIGNUMERIC(20, 10)"),
            (column("n", 1700, -1, None), "STRING"),
            (column("j", 114, -1, None), "JSON"),
            (column("j", 3802, -1, None), "JSON"),
            (column("t", 25, -1, None), "STRING"),
            (column("x", 17, -1, None), "BYTES"),
            (column("d", 1082, -1, None), "DATE"),
            (column("t", 1083, -1, None), "TIME"),
            (column("t", 1114, -1, None), "DATETIME"),
            (column("t", 1184, -1, None), "TIMESTAMP"),
            (column("i", 1186, -1, None), "STRING"),
            (column("u", 2950, -1, None), "STRING"),
            (column("a", 1007, -1, Some(23)), "JSON"),
            (column("inet", 869, -1, None), "STRING"),
        ];
        for (column, expected) in cases {
            assert_eq!(
                bigquery_type(&column).to_string(),
                expected,
                "{:?}",
                column.pg_type
            );
        }
    }

    #[test]
    fn reported_types_match_their_family_and_parameters() {
        let numeric = BigQueryType::BigNumeric {
            precision: 38,
            scale: 0,
        };
        // The emulator reports BIGNUMERIC(38, 0) as NUMERIC with its parameters.
        assert!(numeric.matches("NUMERIC", Some(38), Some(0)));
        assert!(!numeric.matches("NUMERIC", Some(38), Some(9)));
        // Reported without parameters: the family must hold every value.
        assert!(!numeric.matches("NUMERIC", None, None));
        assert!(numeric.matches("BIGNUMERIC", None, None));
        let small = BigQueryType::Numeric {
            precision: 8,
            scale: 3,
        };
        assert!(small.matches("NUMERIC", None, None));
        assert!(!small.matches("STRING", None, None));
        assert!(BigQueryType::Int64.matches("INTEGER", None, None));
        assert!(BigQueryType::Bool.matches("BOOLEAN", None, None));
        assert!(!BigQueryType::Json.matches("STRING", None, None));
    }

    #[test]
    fn identifiers_and_literals_are_escaped() {
        assert_eq!(quote("we`ird\\"), "`we\\`ird\\\\`");
        assert_eq!(literal("it's\n"), "'it\\'s\\n'");
        assert_eq!(qualified("ds", "t"), "`ds`.`t`");
    }

    fn table(schema: &str, name: &str, columns: &[&str]) -> Arc<TableSchema> {
        Arc::new(TableSchema {
            id: TableId(1),
            name: TableName::new(schema, name),
            columns: columns.iter().map(|c| column(c, 23, -1, None)).collect(),
            replica_identity: ReplicaIdentity::Default,
        })
    }

    #[test]
    fn names_bigquery_cannot_keep_apart_are_refused() {
        assert!(check_names(&[table("public", "orders", &["id", "Total amount"])]).is_ok());
        let collide = [table("a_b", "c", &["id"]), table("a", "b_c", &["id"])];
        let error = check_names(&collide).unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Schema);
        assert!(error.message().contains("a_b_c"), "{error}");
        let case = check_names(&[table("public", "t", &["Id", "id"])]).unwrap_err();
        assert!(case.message().contains("differ only in case"), "{case}");
        let reserved = check_names(&[table("public", "t", &["_partitiontime"])]).unwrap_err();
        assert!(reserved.message().contains("reserves"), "{reserved}");
        let dotted = check_names(&[table("public", "t.x", &["id"])]).unwrap_err();
        assert!(dotted.message().contains("not a valid BigQuery table name"));
    }

    #[test]
    fn target_ddl_keeps_the_key_not_enforced() {
        let mut t = (*table("public", "orders", &["id", "v"])).clone();
        t.columns[0].identity = true;
        assert_eq!(
            create_target_sql("ds", &t, false),
            "CREATE TABLE IF NOT EXISTS `ds`.`public_orders` (`id` INT64, `v` INT64, PRIMARY KEY (`id`) NOT ENFORCED)"
        );
    }
}
