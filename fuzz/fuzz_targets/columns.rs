//! Column types a fuzz target can draw: scalars, arrays and text-form
//! types, with and without modifiers, in both array forms.

use pg_replicate::types::{ArrayForm, ColumnSchema, PgType};

/// `(oid, modifier, name, element oid)`.
const TYPES: &[(u32, i32, &str, Option<u32>)] = &[
    (16, -1, "boolean", None),
    (17, -1, "bytea", None),
    (18, -1, "\"char\"", None),
    (20, -1, "bigint", None),
    (21, -1, "smallint", None),
    (23, -1, "integer", None),
    (25, -1, "text", None),
    (26, -1, "oid", None),
    (114, -1, "json", None),
    (600, -1, "point", None),
    (700, -1, "real", None),
    (701, -1, "double precision", None),
    (790, -1, "money", None),
    (829, -1, "macaddr", None),
    (869, -1, "inet", None),
    (1042, 9, "character(5)", None),
    (1043, -1, "character varying", None),
    (1082, -1, "date", None),
    (1083, -1, "time without time zone", None),
    (1114, -1, "timestamp without time zone", None),
    (1184, -1, "timestamp with time zone", None),
    (1186, -1, "interval", None),
    (1266, -1, "time with time zone", None),
    (1560, 12, "bit(8)", None),
    (1562, -1, "bit varying", None),
    (1700, -1, "numeric", None),
    (1700, (12 << 16 | 2) + 4, "numeric(12,2)", None),
    (1700, (40 << 16 | 5) + 4, "numeric(40,5)", None),
    (2950, -1, "uuid", None),
    (3802, -1, "jsonb", None),
    (3220, -1, "pg_lsn", None),
    (1000, -1, "boolean[]", Some(16)),
    (1001, -1, "bytea[]", Some(17)),
    (1005, -1, "smallint[]", Some(21)),
    (1007, -1, "integer[]", Some(23)),
    (1009, -1, "text[]", Some(25)),
    (1016, -1, "bigint[]", Some(20)),
    (1021, -1, "real[]", Some(700)),
    (1022, -1, "double precision[]", Some(701)),
    (1115, -1, "timestamp without time zone[]", Some(1114)),
    (1182, -1, "date[]", Some(1082)),
    (1231, -1, "numeric[]", Some(1700)),
    (2951, -1, "uuid[]", Some(2950)),
    (3807, -1, "jsonb[]", Some(3802)),
    (16385, -1, "mood", None),
];

/// The column that byte `b` draws.
pub fn column(b: u8) -> ColumnSchema {
    let (oid, modifier, name, element_oid) = TYPES[usize::from(b) % TYPES.len()];
    ColumnSchema {
        name: format!("c{b}"),
        pg_type: PgType {
            oid,
            modifier,
            name: name.to_owned(),
            element_oid,
        },
        nullable: true,
        identity: false,
        array_form: if usize::from(b) / TYPES.len() % 2 == 0 {
            ArrayForm::Lists
        } else {
            ArrayForm::Exact
        },
    }
}
