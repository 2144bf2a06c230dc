//! Which Arrow type a Postgres column becomes, and how COPY must select it.
//!
//! The table is documented in `docs/types.md`; keep the two in step.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, FieldRef, Fields, IntervalUnit, TimeUnit};

use crate::types::table::{quote_identifier, ArrayForm, ColumnSchema};

/// Field metadata key holding the Postgres type as `format_type` prints it.
pub const PG_TYPE_KEY: &str = "pg.type";
/// Field metadata key holding the Postgres type oid, in decimal.
pub const PG_TYPE_OID_KEY: &str = "pg.type_oid";
/// The Arrow extension-type metadata key.
pub const EXTENSION_NAME_KEY: &str = "ARROW:extension:name";
/// The canonical Arrow extension name of UUID columns.
pub const UUID_EXTENSION_NAME: &str = "arrow.uuid";

/// Builtin type oids (`pg_type.oid`), stable across Postgres versions.
pub(crate) mod oid {
    pub const BOOL: u32 = 16;
    pub const BYTEA: u32 = 17;
    pub const CHAR: u32 = 18;
    pub const NAME: u32 = 19;
    pub const INT8: u32 = 20;
    pub const INT2: u32 = 21;
    pub const INT2VECTOR: u32 = 22;
    pub const INT4: u32 = 23;
    pub const TEXT: u32 = 25;
    pub const OID: u32 = 26;
    pub const OIDVECTOR: u32 = 30;
    pub const JSON: u32 = 114;
    pub const POINT: u32 = 600;
    pub const LSEG: u32 = 601;
    pub const BOX: u32 = 603;
    pub const LINE: u32 = 628;
    pub const FLOAT4: u32 = 700;
    pub const FLOAT8: u32 = 701;
    pub const BPCHAR: u32 = 1042;
    pub const VARCHAR: u32 = 1043;
    pub const DATE: u32 = 1082;
    pub const TIME: u32 = 1083;
    pub const TIMESTAMP: u32 = 1114;
    pub const TIMESTAMPTZ: u32 = 1184;
    pub const INTERVAL: u32 = 1186;
    pub const NUMERIC: u32 = 1700;
    pub const UUID: u32 = 2950;
    pub const JSONB: u32 = 3802;
}

/// How one (scalar) Postgres value is decoded and stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum ScalarKind {
    /// bool → Boolean.
    Bool,
    /// int2 → Int16.
    Int16,
    /// int4 → Int32.
    Int32,
    /// int8 → Int64.
    Int64,
    /// oid → UInt32.
    Oid,
    /// float4 → Float32.
    Float32,
    /// float8 → Float64.
    Float64,
    /// numeric(p,s), 1 ≤ p ≤ 38, 0 ≤ s ≤ p → Decimal128(p,s).
    Decimal { precision: u8, scale: i8 },
    /// text, varchar, bpchar, name, json → Utf8; binary is the UTF-8 text
    /// (json's binary form is its text, as stored).
    Text,
    /// jsonb → Utf8; binary is a format version byte (1) followed by the
    /// same text as jsonb's output function.
    Jsonb,
    /// `"char"` → Utf8; binary is one byte, text is `charout`'s form.
    Char,
    /// bytea → Binary.
    Bytea,
    /// date → Date32.
    Date,
    /// time → Time64(µs).
    Time,
    /// timestamp → Timestamp(µs, None).
    Timestamp,
    /// timestamptz → Timestamp(µs, "UTC").
    TimestampTz,
    /// interval → Interval(MonthDayNano).
    Interval,
    /// uuid → FixedSizeBinary(16), extension `arrow.uuid`.
    Uuid,
    /// Everything else → Utf8 of the type's text form (`::text` in COPY).
    TextForm,
}

/// How a whole column is decoded and stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum ColumnKind {
    /// A scalar column.
    Scalar(ScalarKind),
    /// An array column → List ([`ArrayForm::Lists`]) or the exact struct
    /// ([`ArrayForm::Exact`]).
    List {
        /// The element mapping.
        element: ScalarKind,
        /// The oid the elements of binary array values carry: the element
        /// type, or `text` when the column is cast to `text[]`.
        element_wire_oid: u32,
        /// The element delimiter of the text form (`,`; `;` for box).
        delimiter: u8,
        /// Plain list or exact struct.
        form: ArrayForm,
    },
}

/// Field names of the exact array struct ([`ArrayForm::Exact`]).
pub const ARRAY_DIMS_FIELD: &str = "dims";
/// See [`ARRAY_DIMS_FIELD`].
pub const ARRAY_LOWER_BOUNDS_FIELD: &str = "lower_bounds";
/// See [`ARRAY_DIMS_FIELD`].
pub const ARRAY_ELEMENTS_FIELD: &str = "elements";

/// The mapping of a scalar type oid with its type modifier.
pub(crate) fn scalar_kind(type_oid: u32, modifier: i32) -> ScalarKind {
    match type_oid {
        oid::BOOL => ScalarKind::Bool,
        oid::INT2 => ScalarKind::Int16,
        oid::INT4 => ScalarKind::Int32,
        oid::INT8 => ScalarKind::Int64,
        oid::OID => ScalarKind::Oid,
        oid::FLOAT4 => ScalarKind::Float32,
        oid::FLOAT8 => ScalarKind::Float64,
        oid::NUMERIC => numeric_kind(modifier),
        oid::TEXT | oid::VARCHAR | oid::BPCHAR | oid::NAME | oid::JSON => ScalarKind::Text,
        oid::JSONB => ScalarKind::Jsonb,
        oid::CHAR => ScalarKind::Char,
        oid::BYTEA => ScalarKind::Bytea,
        oid::DATE => ScalarKind::Date,
        oid::TIME => ScalarKind::Time,
        oid::TIMESTAMP => ScalarKind::Timestamp,
        oid::TIMESTAMPTZ => ScalarKind::TimestampTz,
        oid::INTERVAL => ScalarKind::Interval,
        oid::UUID => ScalarKind::Uuid,
        _ => ScalarKind::TextForm,
    }
}

/// numeric(p,s) with 1 ≤ p ≤ 38 and 0 ≤ s ≤ p is a Decimal128; anything else
/// (unconstrained, wider, negative scale or scale above precision, both
/// allowed since Postgres 15) stays exact as text.
fn numeric_kind(modifier: i32) -> ScalarKind {
    if modifier < 4 {
        return ScalarKind::TextForm;
    }
    let packed = modifier - 4;
    let precision = (packed >> 16) & 0xFFFF;
    // The scale is an 11-bit two's complement field.
    let scale = ((packed & 0x7FF) ^ 0x400) - 0x400;
    if (1..=38).contains(&precision) && (0..=precision).contains(&scale) {
        ScalarKind::Decimal {
            precision: precision as u8,
            scale: scale as i8,
        }
    } else {
        ScalarKind::TextForm
    }
}

/// The mapping of a column.
pub(crate) fn column_kind(column: &ColumnSchema) -> ColumnKind {
    let pg_type = &column.pg_type;
    match pg_type.element_oid {
        // `pg_type.typelem` is also set for a few types that are not arrays:
        // fixed-length subscriptable types (name, point, lseg, box, line) and
        // the internal vectors (int2vector, oidvector, whose text form is
        // space separated). They map as scalars.
        Some(element)
            if element != 0
                && !matches!(
                    pg_type.oid,
                    oid::NAME
                        | oid::POINT
                        | oid::LSEG
                        | oid::BOX
                        | oid::LINE
                        | oid::INT2VECTOR
                        | oid::OIDVECTOR
                ) =>
        {
            // An array column's typmod applies to its elements.
            let kind = scalar_kind(element, pg_type.modifier);
            ColumnKind::List {
                element: kind,
                element_wire_oid: if kind == ScalarKind::TextForm {
                    oid::TEXT
                } else {
                    element
                },
                delimiter: if element == oid::BOX { b';' } else { b',' },
                form: column.array_form,
            }
        }
        _ => ColumnKind::Scalar(scalar_kind(pg_type.oid, pg_type.modifier)),
    }
}

/// The Arrow type of a scalar mapping.
pub(crate) fn scalar_data_type(kind: ScalarKind) -> DataType {
    match kind {
        ScalarKind::Bool => DataType::Boolean,
        ScalarKind::Int16 => DataType::Int16,
        ScalarKind::Int32 => DataType::Int32,
        ScalarKind::Int64 => DataType::Int64,
        ScalarKind::Oid => DataType::UInt32,
        ScalarKind::Float32 => DataType::Float32,
        ScalarKind::Float64 => DataType::Float64,
        ScalarKind::Decimal { precision, scale } => DataType::Decimal128(precision, scale),
        ScalarKind::Text | ScalarKind::Jsonb | ScalarKind::Char | ScalarKind::TextForm => {
            DataType::Utf8
        }
        ScalarKind::Bytea => DataType::Binary,
        ScalarKind::Date => DataType::Date32,
        ScalarKind::Time => DataType::Time64(TimeUnit::Microsecond),
        ScalarKind::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, None),
        ScalarKind::TimestampTz => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        ScalarKind::Interval => DataType::Interval(IntervalUnit::MonthDayNano),
        ScalarKind::Uuid => DataType::FixedSizeBinary(16),
    }
}

/// The `item` field of a list of `element`.
pub(crate) fn list_item_field(element: ScalarKind) -> FieldRef {
    let mut field = Field::new("item", scalar_data_type(element), true);
    if element == ScalarKind::Uuid {
        field = field.with_metadata(uuid_metadata());
    }
    Arc::new(field)
}

/// The Arrow type of a column mapping.
pub(crate) fn column_data_type(kind: ColumnKind) -> DataType {
    match kind {
        ColumnKind::Scalar(scalar) => scalar_data_type(scalar),
        ColumnKind::List {
            element,
            form: ArrayForm::Lists,
            ..
        } => DataType::List(list_item_field(element)),
        ColumnKind::List {
            element,
            form: ArrayForm::Exact,
            ..
        } => DataType::Struct(exact_array_fields(list_item_field(element))),
    }
}

/// The item field of the exact struct's `dims` and `lower_bounds` lists.
pub(crate) fn bounds_item_field() -> FieldRef {
    Arc::new(Field::new("item", DataType::Int32, false))
}

/// The fields of the exact struct of arrays whose list item field is `item`.
pub(crate) fn exact_array_fields(item: FieldRef) -> Fields {
    Fields::from(vec![
        Field::new(ARRAY_DIMS_FIELD, DataType::List(bounds_item_field()), false),
        Field::new(
            ARRAY_LOWER_BOUNDS_FIELD,
            DataType::List(bounds_item_field()),
            false,
        ),
        Field::new(ARRAY_ELEMENTS_FIELD, DataType::List(item), false),
    ])
}

fn uuid_metadata() -> HashMap<String, String> {
    HashMap::from([(
        EXTENSION_NAME_KEY.to_owned(),
        UUID_EXTENSION_NAME.to_owned(),
    )])
}

/// The Arrow field a column becomes.
///
/// The field is named like the column and always nullable (update and
/// delete images can carry NULLs even in `NOT NULL` columns). Its metadata
/// holds [`PG_TYPE_KEY`] (the type as `format_type` prints it, e.g.
/// `numeric(12,2)`, `mood`, `integer[]`) and [`PG_TYPE_OID_KEY`]; uuid
/// columns also carry the `arrow.uuid` extension name.
pub fn arrow_field(column: &ColumnSchema) -> Field {
    let kind = column_kind(column);
    let mut metadata = HashMap::from([
        (PG_TYPE_KEY.to_owned(), column.pg_type.name.clone()),
        (PG_TYPE_OID_KEY.to_owned(), column.pg_type.oid.to_string()),
    ]);
    if kind == ColumnKind::Scalar(ScalarKind::Uuid) {
        metadata.extend(uuid_metadata());
    }
    Field::new(&column.name, column_data_type(kind), true).with_metadata(metadata)
}

/// The expression selecting `column` in
/// `COPY (SELECT <exprs> FROM t) TO STDOUT (FORMAT binary)`, whose binary
/// values [`ColumnBuilder::append_binary`](super::ColumnBuilder::append_binary)
/// decodes.
///
/// Types decoded natively from binary (json and jsonb among them: their
/// binary forms hold the output function's text) are selected as the quoted
/// column name; types carried as text, and arrays of them, through their output
/// function (`format('%s', "col")`, NULL kept), so COPY and pgoutput give
/// the same text.
pub fn copy_select_expr(column: &ColumnSchema) -> String {
    let quoted = quote_identifier(&column.name);
    match column_kind(column) {
        // The type's output function, exactly as pgoutput sends it: a plain
        // `::text` cast may use another function (inet's shows the netmask).
        // Arrays of text-form elements travel as the array's text form too.
        ColumnKind::Scalar(ScalarKind::TextForm)
        | ColumnKind::List {
            element: ScalarKind::TextForm,
            ..
        // `num_nulls`, not `IS NULL`: a composite whose fields are all NULL
        // `IS NULL` but is a value.
        } => format!("CASE WHEN num_nulls({quoted}) = 0 THEN format('%s', {quoted}) END"),
        _ => quoted,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::types::table::PgType;

    /// A column of the given type, for tests.
    pub(crate) fn column(
        oid: u32,
        modifier: i32,
        name: &str,
        element: Option<u32>,
    ) -> ColumnSchema {
        ColumnSchema {
            name: "c".to_owned(),
            pg_type: PgType {
                oid,
                modifier,
                name: name.to_owned(),
                element_oid: element,
            },
            nullable: true,
            identity: false,
            array_form: ArrayForm::Lists,
        }
    }

    /// The typmod of numeric(p,s).
    pub(crate) fn numeric_typmod(precision: i32, scale: i32) -> i32 {
        ((precision << 16) | (scale & 0x7FF)) + 4
    }

    fn data_type(oid: u32, modifier: i32) -> DataType {
        arrow_field(&column(oid, modifier, "t", None))
            .data_type()
            .clone()
    }

    #[test]
    fn scalar_types() {
        let cases = [
            (16, DataType::Boolean),
            (21, DataType::Int16),
            (23, DataType::Int32),
            (20, DataType::Int64),
            (26, DataType::UInt32),
            (700, DataType::Float32),
            (701, DataType::Float64),
            (25, DataType::Utf8),
            (1043, DataType::Utf8),
            (1042, DataType::Utf8),
            (19, DataType::Utf8),
            (18, DataType::Utf8),
            (17, DataType::Binary),
            (1082, DataType::Date32),
            (1083, DataType::Time64(TimeUnit::Microsecond)),
            (1266, DataType::Utf8),
            (1114, DataType::Timestamp(TimeUnit::Microsecond, None)),
            (
                1184,
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            ),
            (1186, DataType::Interval(IntervalUnit::MonthDayNano)),
            (2950, DataType::FixedSizeBinary(16)),
        ];
        for (oid, expected) in cases {
            assert_eq!(data_type(oid, -1), expected, "oid {oid}");
        }
        // Text-form types, including an unknown (enum, domain, extension) oid.
        for oid in [
            142, 869, 650, 829, 774, 790, 1560, 1562, 3904, 600, 603, 98765,
        ] {
            assert_eq!(data_type(oid, -1), DataType::Utf8, "oid {oid}");
            let c = column(oid, -1, "t", None);
            assert_eq!(
                copy_select_expr(&c),
                "CASE WHEN num_nulls(\"c\") = 0 THEN format('%s', \"c\") END"
            );
        }
        // json and jsonb are text too, but travel in their own binary form.
        for oid in [114, 3802] {
            assert_eq!(data_type(oid, -1), DataType::Utf8, "oid {oid}");
            assert_eq!(copy_select_expr(&column(oid, -1, "j", None)), "\"c\"");
        }
    }

    #[test]
    fn numeric_precision_decides() {
        assert_eq!(
            data_type(1700, numeric_typmod(12, 2)),
            DataType::Decimal128(12, 2)
        );
        assert_eq!(
            data_type(1700, numeric_typmod(38, 0)),
            DataType::Decimal128(38, 0)
        );
        assert_eq!(
            data_type(1700, numeric_typmod(38, 38)),
            DataType::Decimal128(38, 38)
        );
        assert_eq!(
            data_type(1700, numeric_typmod(1, 0)),
            DataType::Decimal128(1, 0)
        );
        assert_eq!(data_type(1700, -1), DataType::Utf8);
        assert_eq!(data_type(1700, numeric_typmod(39, 2)), DataType::Utf8);
        assert_eq!(data_type(1700, numeric_typmod(1000, 0)), DataType::Utf8);
        assert_eq!(data_type(1700, numeric_typmod(5, -2)), DataType::Utf8);
        assert_eq!(data_type(1700, numeric_typmod(3, 5)), DataType::Utf8);
        let c = column(1700, numeric_typmod(12, 2), "numeric(12,2)", None);
        assert_eq!(copy_select_expr(&c), "\"c\"");
        let c = column(1700, -1, "numeric", None);
        assert_eq!(
            copy_select_expr(&c),
            "CASE WHEN num_nulls(\"c\") = 0 THEN format('%s', \"c\") END"
        );
    }

    #[test]
    fn metadata_and_nullability() {
        let mut c = column(3802, -1, "jsonb", None);
        c.name = "my \"col\"".to_owned();
        c.nullable = false;
        let f = arrow_field(&c);
        assert_eq!(f.name(), "my \"col\"");
        assert!(f.is_nullable());
        assert_eq!(f.metadata()[PG_TYPE_KEY], "jsonb");
        assert_eq!(f.metadata()[PG_TYPE_OID_KEY], "3802");
        assert_eq!(f.metadata().len(), 2);
        assert_eq!(copy_select_expr(&c), "\"my \"\"col\"\"\"");
        let mut c = column(3904, -1, "int4range", None);
        c.name = "my \"col\"".to_owned();
        assert_eq!(
            copy_select_expr(&c),
            "CASE WHEN num_nulls(\"my \"\"col\"\"\") = 0 THEN format('%s', \"my \"\"col\"\"\") END"
        );

        let f = arrow_field(&column(2950, -1, "uuid", None));
        assert_eq!(f.metadata()[EXTENSION_NAME_KEY], UUID_EXTENSION_NAME);
        assert_eq!(f.metadata()[PG_TYPE_KEY], "uuid");
    }

    #[test]
    fn arrays() {
        let c = column(1007, -1, "integer[]", Some(23));
        let f = arrow_field(&c);
        let DataType::List(item) = f.data_type() else {
            panic!("not a list: {f:?}")
        };
        assert_eq!(item.name(), "item");
        assert!(item.is_nullable());
        assert_eq!(item.data_type(), &DataType::Int32);
        assert_eq!(f.metadata()[PG_TYPE_KEY], "integer[]");
        assert_eq!(f.metadata()[PG_TYPE_OID_KEY], "1007");
        assert_eq!(copy_select_expr(&c), "\"c\"");

        let c = column(1231, numeric_typmod(10, 3), "numeric(10,3)[]", Some(1700));
        assert_eq!(
            arrow_field(&c).data_type(),
            &DataType::List(list_item_field(ScalarKind::Decimal {
                precision: 10,
                scale: 3
            }))
        );
        assert_eq!(copy_select_expr(&c), "\"c\"");

        let c = column(3807, -1, "jsonb[]", Some(3802));
        assert_eq!(
            arrow_field(&c).data_type(),
            &DataType::List(list_item_field(ScalarKind::Jsonb))
        );
        assert_eq!(copy_select_expr(&c), "\"c\"");

        for (oid, elem) in [(1231, 1700), (1020, 603), (99999, 98765)] {
            let c = column(oid, -1, "x[]", Some(elem));
            assert_eq!(
                arrow_field(&c).data_type(),
                &DataType::List(list_item_field(ScalarKind::TextForm))
            );
            assert_eq!(
                copy_select_expr(&c),
                "CASE WHEN num_nulls(\"c\") = 0 THEN format('%s', \"c\") END"
            );
        }
        assert!(matches!(
            column_kind(&column(1020, -1, "box[]", Some(603))),
            ColumnKind::List {
                delimiter: b';',
                element_wire_oid: 25,
                ..
            }
        ));

        let c = column(2951, -1, "uuid[]", Some(2950));
        let DataType::List(item) = arrow_field(&c).data_type().clone() else {
            panic!()
        };
        assert_eq!(item.metadata()[EXTENSION_NAME_KEY], UUID_EXTENSION_NAME);
    }

    #[test]
    fn subscriptable_scalars_are_not_arrays() {
        assert_eq!(
            arrow_field(&column(19, -1, "name", Some(18))).data_type(),
            &DataType::Utf8
        );
        assert_eq!(copy_select_expr(&column(19, -1, "name", Some(18))), "\"c\"");
        for (oid, elem) in [
            (600, 701),
            (601, 600),
            (603, 600),
            (628, 701),
            (22, 21),
            (30, 26),
        ] {
            let c = column(oid, -1, "x", Some(elem));
            assert_eq!(arrow_field(&c).data_type(), &DataType::Utf8);
            assert_eq!(
                copy_select_expr(&c),
                "CASE WHEN num_nulls(\"c\") = 0 THEN format('%s', \"c\") END"
            );
        }
    }
}
