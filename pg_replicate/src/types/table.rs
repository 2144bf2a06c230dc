//! Table identity and schema as read from the Postgres catalog or from a
//! pgoutput `Relation` message.

use std::fmt;

/// The Postgres object id (`pg_class.oid`) of a table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TableId(pub u32);

impl fmt::Display for TableId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A schema-qualified table name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TableName {
    /// The Postgres schema (namespace), for example `public`.
    pub schema: String,
    /// The table name within the schema.
    pub name: String,
}

impl TableName {
    /// Creates a table name from its schema and name.
    pub fn new(schema: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            schema: schema.into(),
            name: name.into(),
        }
    }

    /// The name as a quoted SQL identifier: `"schema"."name"`.
    pub fn quoted(&self) -> String {
        format!(
            "{}.{}",
            quote_identifier(&self.schema),
            quote_identifier(&self.name)
        )
    }
}

impl fmt::Display for TableName {
    /// Displays as `schema.name`, unquoted.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.schema, self.name)
    }
}

/// Quotes a SQL identifier, doubling embedded quotes.
pub fn quote_identifier(identifier: &str) -> String {
    let mut quoted = String::with_capacity(identifier.len() + 2);
    quoted.push('"');
    for c in identifier.chars() {
        if c == '"' {
            quoted.push('"');
        }
        quoted.push(c);
    }
    quoted.push('"');
    quoted
}

/// Quotes a SQL string literal, doubling embedded single quotes.
pub fn quote_literal(value: &str) -> String {
    let mut quoted = String::with_capacity(value.len() + 2);
    quoted.push('\'');
    for c in value.chars() {
        if c == '\'' {
            quoted.push('\'');
        }
        quoted.push(c);
    }
    quoted.push('\'');
    quoted
}

/// A column's Postgres type, as far as the mapping to Arrow needs it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PgType {
    /// `pg_type.oid` of the column type.
    pub oid: u32,
    /// The type modifier (`atttypmod`), -1 when none; carries e.g. numeric
    /// precision and scale.
    pub modifier: i32,
    /// The type as `format_type(oid, typmod)` prints it, e.g. `numeric(12,2)`.
    pub name: String,
    /// For array types, the element type's oid (`pg_type.typelem`).
    pub element_oid: Option<u32>,
}

/// One column of a table.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ColumnSchema {
    /// Column name.
    pub name: String,
    /// Column type.
    pub pg_type: PgType,
    /// Whether the column may hold NULL.
    pub nullable: bool,
    /// Whether the column is part of the table's replica identity (the
    /// primary key, or the chosen unique index): the columns Postgres sends
    /// as the old key of updates and deletes.
    pub identity: bool,
    /// How the column's values become Arrow values when the column is an
    /// array; ignored for other columns.
    pub array_form: ArrayForm,
}

/// How array columns become Arrow values (`docs/types.md`, "Arrays").
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ArrayForm {
    /// A plain `List` of the elements. A value this cannot hold without
    /// loss (more than one dimension, a lower bound other than 1) is
    /// refused with an error naming the table, the column and this
    /// setting.
    #[default]
    Lists,
    /// A struct of the dimensions, the lower bounds and the elements in
    /// row-major order: every Postgres array value, exactly.
    Exact,
}

/// How a table identifies the old row of updates and deletes
/// (`pg_class.relreplident`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReplicaIdentity {
    /// The primary key (`d`), the default.
    Default,
    /// All columns (`f`).
    Full,
    /// A chosen unique index (`i`).
    Index,
    /// No identity (`n`): updates and deletes cannot be replicated.
    Nothing,
}

impl ReplicaIdentity {
    /// Decodes `pg_class.relreplident` / the pgoutput Relation flag.
    pub fn from_code(code: u8) -> Option<Self> {
        match code {
            b'd' => Some(Self::Default),
            b'f' => Some(Self::Full),
            b'i' => Some(Self::Index),
            b'n' => Some(Self::Nothing),
            _ => None,
        }
    }
}

/// The schema of one replicated table.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TableSchema {
    /// The table's oid.
    pub id: TableId,
    /// The table's qualified name.
    pub name: TableName,
    /// The columns in table order (only the published ones).
    pub columns: Vec<ColumnSchema>,
    /// How old rows are identified.
    pub replica_identity: ReplicaIdentity,
}

impl TableSchema {
    /// Whether the table has columns identifying rows (a primary key, a
    /// replica identity index, or `REPLICA IDENTITY FULL`).
    pub fn has_usable_identity(&self) -> bool {
        match self.replica_identity {
            ReplicaIdentity::Full => true,
            ReplicaIdentity::Nothing => false,
            ReplicaIdentity::Default | ReplicaIdentity::Index => {
                self.columns.iter().any(|c| c.identity)
            }
        }
    }

    /// Indexes of the identity columns.
    pub fn identity_columns(&self) -> impl Iterator<Item = usize> + '_ {
        self.columns
            .iter()
            .enumerate()
            .filter(|(_, c)| c.identity)
            .map(|(i, _)| i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_doubles_quotes() {
        assert_eq!(quote_identifier(r#"we"ird"#), r#""we""ird""#);
        assert_eq!(quote_literal("it's"), "'it''s'");
        assert_eq!(
            TableName::new("my schema", "T").quoted(),
            r#""my schema"."T""#
        );
        assert_eq!(TableName::new("s", "t").to_string(), "s.t");
    }
}
