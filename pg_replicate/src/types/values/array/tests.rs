//! Tests of the array builders: both formats, both forms.

use arrow::array::{
    Array, ArrayRef, AsArray, BinaryArray, Date32Array, Decimal128Array, FixedSizeBinaryArray,
    Int32Array, ListArray, StringArray, TimestampMicrosecondArray,
};
use arrow::datatypes::DataType;

use crate::types::values::mapping::tests::{column, numeric_typmod};
use crate::types::values::numeric::numeric_binary;
use crate::types::values::tests::{bin, same};
use crate::types::values::{copy_select_expr, ColumnBuilder, ValueError};

/// A binary one-dimensional array.
fn array_binary(element_oid: u32, lower_bound: i32, elements: &[Option<Vec<u8>>]) -> Vec<u8> {
    shaped_binary(
        element_oid,
        &[(elements.len() as i32, lower_bound)],
        elements,
    )
}

/// The binary empty array: no dimensions.
fn empty_array_binary(element_oid: u32) -> Vec<u8> {
    let mut out = vec![0; 8];
    out.extend_from_slice(&element_oid.to_be_bytes());
    out
}

fn list_values<T: Array + Clone + 'static>(a: &ArrayRef) -> (ListArray, T) {
    let list = a.as_list::<i32>().clone();
    let values = list
        .values()
        .as_any()
        .downcast_ref::<T>()
        .expect("element type")
        .clone();
    (list, values)
}

#[test]
fn int_arrays_with_nulls_and_bounds() {
    let c = column(1007, -1, "integer[]", Some(23));
    let a = same(
        &c,
        &[
            (
                bin(array_binary(23, 1, &[int(1), None, int(-3)])),
                Some("{1,NULL,-3}"),
            ),
            (bin(empty_array_binary(23)), Some("{}")),
            (None, None),
            (
                bin(array_binary(23, 1, &[int(7), int(8)])),
                Some("[1:2]={7,8}"),
            ),
            (
                bin(array_binary(23, 1, &[int(i32::MIN)])),
                Some("{ -2147483648 }"),
            ),
        ],
    );
    let (list, values) = list_values::<Int32Array>(&a);
    assert_eq!(list.value_offsets(), [0, 3, 3, 3, 5, 6]);
    assert!(list.is_null(2) && !list.is_null(1));
    assert_eq!(
        values.iter().collect::<Vec<_>>(),
        [Some(1), None, Some(-3), Some(7), Some(8), Some(i32::MIN)]
    );
    let DataType::List(item) = a.data_type() else {
        panic!()
    };
    assert_eq!(item.name(), "item");
    assert!(item.is_nullable());
}

#[test]
fn text_arrays_quoting_and_escapes() {
    let c = column(1009, -1, "text[]", Some(25));
    let elements = [
        "a,b",
        "c\"d",
        "NULL",
        "",
        "back\\slash",
        "plain",
        "{}",
        " sp ",
    ];
    let mut binary: Vec<Option<Vec<u8>>> = elements.iter().map(bin).collect();
    binary.insert(3, None);
    let text = r#"{"a,b","c\"d","NULL",NULL,"","back\\slash",plain,"{}"," sp "}"#;
    let a = same(&c, &[(bin(array_binary(25, 1, &binary)), Some(text))]);
    let (_, values) = list_values::<StringArray>(&a);
    let got: Vec<_> = values.iter().collect();
    let mut want: Vec<_> = elements.iter().map(|e| Some(*e)).collect();
    want.insert(3, None);
    assert_eq!(got, want);
    // Unquoted elements may carry escapes and surrounding white space, and
    // `null` is NULL in any case.
    let mut b = ColumnBuilder::new(&c, 1);
    b.append_text(br#"{ a\,b , null }"#).unwrap();
    let a = b.finish().unwrap();
    let (_, values) = list_values::<StringArray>(&a);
    assert_eq!(values.iter().collect::<Vec<_>>(), [Some("a,b"), None]);
    // An element that is not UTF-8 fails the batch when it is finished,
    // also after a failed append set earlier elements aside.
    b.append_binary(&array_binary(25, 1, &[Some(b"\xff".to_vec())]))
        .unwrap();
    assert!(b.append_text(b"{unterminated").is_err());
    assert!(b.finish().is_err());
    b.append_text(b"{ok}").unwrap();
    let a = b.finish().unwrap();
    let (_, values) = list_values::<StringArray>(&a);
    assert_eq!(values.iter().collect::<Vec<_>>(), [Some("ok")]);
}

#[test]
fn arrays_of_other_element_types() {
    // numeric(5,2)[] → List<Decimal128(5,2)>, natively.
    let c = column(1231, numeric_typmod(5, 2), "numeric(5,2)[]", Some(1700));
    assert_eq!(copy_select_expr(&c), "\"c\"");
    let n = bin(numeric_binary(0, 0, 2, &[1, 5000]));
    let a = same(
        &c,
        &[(bin(array_binary(1700, 1, &[n, None])), Some("{1.50,NULL}"))],
    );
    let (_, values) = list_values::<Decimal128Array>(&a);
    assert_eq!(values.iter().collect::<Vec<_>>(), [Some(150), None]);

    // jsonb[] → List<Utf8>; COPY sends binary jsonb elements.
    let c = column(3807, -1, "jsonb[]", Some(3802));
    assert_eq!(copy_select_expr(&c), "\"c\"");
    let text = r#"{"{\"a\": 1}",NULL}"#;
    let element = bin(b"\x01{\"a\": 1}");
    let a = same(
        &c,
        &[(bin(array_binary(3802, 1, &[element, None])), Some(text))],
    );
    let (_, values) = list_values::<StringArray>(&a);
    assert_eq!(values.value(0), "{\"a\": 1}");
    assert!(values.is_null(1));

    // box[] uses ';' between elements.
    let c = column(1020, -1, "box[]", Some(603));
    let text = "{(1,1),(0,0);(2,2),(1,1)}";
    let a = same(&c, &[(bin(text), Some(text))]);
    let (_, values) = list_values::<StringArray>(&a);
    assert_eq!(values.value(1), "(2,2),(1,1)");

    // bytea[]: the element's own backslash is escaped in the array text.
    let c = column(1001, -1, "bytea[]", Some(17));
    let a = same(
        &c,
        &[(
            bin(array_binary(17, 1, &[bin([1u8, 2])])),
            Some(r#"{"\\x0102"}"#),
        )],
    );
    let (_, values) = list_values::<BinaryArray>(&a);
    assert_eq!(values.value(0), [1, 2]);

    // uuid[], timestamptz[], date[] with infinity.
    let c = column(2951, -1, "uuid[]", Some(2950));
    let a = same(
        &c,
        &[(
            bin(array_binary(2950, 1, &[bin([7u8; 16])])),
            Some("{07070707-0707-0707-0707-070707070707}"),
        )],
    );
    assert_eq!(list_values::<FixedSizeBinaryArray>(&a).1.value(0), [7; 16]);
    let c = column(1185, -1, "timestamp with time zone[]", Some(1184));
    let ts = bin(0i64.to_be_bytes());
    let a = same(
        &c,
        &[(
            bin(array_binary(1184, 1, &[ts, bin(i64::MAX.to_be_bytes())])),
            Some(r#"{"2000-01-01 00:00:00+00",infinity}"#),
        )],
    );
    let (_, values) = list_values::<TimestampMicrosecondArray>(&a);
    assert_eq!(values.values().as_ref(), [946_684_800_000_000, i64::MAX]);
    let c = column(1182, -1, "date[]", Some(1082));
    let a = same(
        &c,
        &[(
            bin(array_binary(1082, 1, &[bin(i32::MIN.to_be_bytes())])),
            Some("{-infinity}"),
        )],
    );
    assert_eq!(list_values::<Date32Array>(&a).1.value(0), -i32::MAX);
}

#[test]
fn lists_refuse_what_they_would_lose() {
    let c = column(1007, -1, "integer[]", Some(23));
    let mut b = ColumnBuilder::new(&c, 1);
    let two_d = shaped_binary(23, &[(2, 1), (2, 1)], &[1, 2, 3, 4].map(int));
    let e = b.append_binary(&two_d).unwrap_err();
    assert_eq!(
        e,
        ValueError::MultiDimensionalArray {
            pg_type: "integer[]".into(),
            dimensions: 2
        }
    );
    assert!(e.to_string().contains("ArrayForm::Exact"), "{e}");
    for text in ["{{1,2},{3,4}}", "[1:1][1:2]={{1,2}}", "{{{1}}}"] {
        let e = b.append_text(text.as_bytes()).unwrap_err();
        assert!(
            matches!(e, ValueError::MultiDimensionalArray { .. }),
            "{text}: {e}"
        );
    }
    let e = b
        .append_binary(&array_binary(23, 0, &[int(7), int(8)]))
        .unwrap_err();
    assert_eq!(
        e,
        ValueError::ArrayLowerBound {
            pg_type: "integer[]".into()
        }
    );
    assert!(e.to_string().contains("ArrayForm::Exact"), "{e}");
    let e = b.append_text(b"[0:1]={7,8}").unwrap_err();
    assert!(matches!(e, ValueError::ArrayLowerBound { .. }), "{e}");
    assert!(b.is_empty());
    // A lower bound of 1 written out is a plain list.
    b.append_text(b"[1:2]={7,8}").unwrap();
    b.append_text(b"[2]={9,10}").unwrap();
    let a = b.finish().unwrap();
    assert_eq!(
        list_values::<Int32Array>(&a).1.values().as_ref(),
        [7, 8, 9, 10]
    );
}

fn int(v: i32) -> Option<Vec<u8>> {
    Some(v.to_be_bytes().to_vec())
}

/// A binary array of the given (size, lower bound) dimensions.
fn shaped_binary(element_oid: u32, dims: &[(i32, i32)], elements: &[Option<Vec<u8>>]) -> Vec<u8> {
    let mut out = Vec::new();
    let has_null = elements.iter().any(Option::is_none);
    for v in [dims.len() as i32, has_null as i32, element_oid as i32] {
        out.extend_from_slice(&v.to_be_bytes());
    }
    for (size, lower) in dims {
        out.extend_from_slice(&size.to_be_bytes());
        out.extend_from_slice(&lower.to_be_bytes());
    }
    for e in elements {
        match e {
            Some(v) => {
                out.extend_from_slice(&(v.len() as i32).to_be_bytes());
                out.extend_from_slice(v);
            }
            None => out.extend_from_slice(&(-1i32).to_be_bytes()),
        }
    }
    out
}

fn exact(oid: u32, name: &str, element: u32) -> crate::types::ColumnSchema {
    let mut c = column(oid, -1, name, Some(element));
    c.array_form = crate::types::ArrayForm::Exact;
    c
}

/// Per row of an exact struct array: dims, lower bounds, elements
/// (`None` for a NULL array).
#[allow(clippy::type_complexity)]
fn exact_rows(a: &ArrayRef) -> Vec<Option<(Vec<i32>, Vec<i32>, Vec<Option<i32>>)>> {
    let s = a.as_struct();
    let ints = |column: usize, row: usize| -> Vec<Option<i32>> {
        let list = s.column(column).as_list::<i32>().value(row);
        list.as_any()
            .downcast_ref::<Int32Array>()
            .expect("int32 items")
            .iter()
            .collect()
    };
    (0..s.len())
        .map(|row| {
            if s.is_null(row) {
                assert!(ints(0, row).is_empty() && ints(2, row).is_empty());
                return None;
            }
            let flat = |v: Vec<Option<i32>>| v.into_iter().map(Option::unwrap).collect();
            Some((flat(ints(0, row)), flat(ints(1, row)), ints(2, row)))
        })
        .collect()
}

#[test]
fn exact_form_keeps_every_shape() {
    let c = exact(1007, "integer[]", 23);
    let a = same(
        &c,
        &[
            (
                bin(array_binary(23, 1, &[int(1), None, int(-3)])),
                Some("{1,NULL,-3}"),
            ),
            (bin(empty_array_binary(23)), Some("{}")),
            (None, None),
            (
                bin(array_binary(23, 0, &[int(7), int(8)])),
                Some("[0:1]={7,8}"),
            ),
            (
                bin(shaped_binary(
                    23,
                    &[(2, 1), (2, 1)],
                    &[int(1), int(2), int(3), None],
                )),
                Some("{{1,2},{3,NULL}}"),
            ),
            (
                bin(shaped_binary(
                    23,
                    &[(2, 1), (1, 1), (3, 1)],
                    &[1, 2, 3, 4, 5, 6].map(int),
                )),
                Some("{ {{1,2,3}} , {{4,5,6}} }"),
            ),
            (
                bin(shaped_binary(23, &[(1, -5), (2, 3)], &[int(9), None])),
                Some("[-5:-5][3:4]={{9,NULL}}"),
            ),
        ],
    );
    let DataType::Struct(fields) = a.data_type() else {
        panic!("{}", a.data_type())
    };
    let names: Vec<&str> = fields.iter().map(|f| f.name().as_str()).collect();
    assert_eq!(names, ["dims", "lower_bounds", "elements"]);
    let row = |d: &[i32], l: &[i32], e: &[Option<i32>]| Some((d.to_vec(), l.to_vec(), e.to_vec()));
    assert_eq!(
        exact_rows(&a),
        [
            row(&[3], &[1], &[Some(1), None, Some(-3)]),
            row(&[], &[], &[]),
            None,
            row(&[2], &[0], &[Some(7), Some(8)]),
            row(&[2, 2], &[1, 1], &[Some(1), Some(2), Some(3), None]),
            row(&[2, 1, 3], &[1, 1, 1], &[1, 2, 3, 4, 5, 6].map(Some)),
            row(&[1, 2], &[-5, 3], &[Some(9), None]),
        ]
    );
}

#[test]
fn exact_text_arrays_keep_quoting_and_text_elements() {
    let c = exact(1009, "text[]", 25);
    let a = same(
        &c,
        &[(
            bin(shaped_binary(
                25,
                &[(2, 1), (2, 1)],
                &[bin("a,b"), bin("NULL"), None, bin("{x}")],
            )),
            Some(r#"{{"a,b","NULL"},{NULL,"{x}"}}"#),
        )],
    );
    let s = a.as_struct();
    let elements = s.column(2).as_list::<i32>().value(0);
    let elements: &StringArray = elements.as_string();
    assert_eq!(
        elements.iter().collect::<Vec<_>>(),
        [Some("a,b"), Some("NULL"), None, Some("{x}")]
    );
}

#[test]
fn exact_form_refuses_malformed_shapes() {
    let c = exact(1007, "integer[]", 23);
    let mut b = ColumnBuilder::new(&c, 1);
    for bad in [
        "{{1,2},{3}}",
        "{{1,2},3}",
        "{1,{2}}",
        "{{}}",
        "{{1},{2}",
        "[1:3]={1,2}",
        "[1:2][1:1]={1,2}",
        "[0:1]={}",
        "[2:1]={1}",
        "[x:1]={1}",
        "{{{{{{{1}}}}}}}",
    ] {
        assert!(b.append_text(bad.as_bytes()).is_err(), "{bad}");
    }
    // Seven dimensions, a huge element count in a short value, a
    // negative size.
    let seven = shaped_binary(23, &[(1, 1); 7], &[int(1)]);
    assert!(b.append_binary(&seven).is_err());
    let huge = shaped_binary(23, &[(i32::MAX, 1), (i32::MAX, 1)], &[int(1)]);
    assert!(b.append_binary(&huge).is_err());
    let negative = shaped_binary(23, &[(-1, 1)], &[]);
    assert!(b.append_binary(&negative).is_err());
    assert!(b.is_empty());
    b.append_text(b"{{1}}").unwrap();
    assert_eq!(
        exact_rows(&b.finish().unwrap()),
        [Some((vec![1, 1], vec![1, 1], vec![Some(1)]))]
    );
}

#[test]
fn failed_array_appends_leave_the_builder_unchanged() {
    let c = column(1007, -1, "integer[]", Some(23));
    let int = |v: i32| Some(v.to_be_bytes().to_vec());
    let mut b = ColumnBuilder::new(&c, 1);
    b.append_text(b"{1,2}").unwrap();
    // Fails at its third element, after two were appended to the child.
    assert!(b.append_text(b"{3,4,x,5}").is_err());
    b.append_binary(&array_binary(23, 1, &[int(6)])).unwrap();
    // Wrong element type (the column must be selected natively).
    assert!(b.append_binary(&array_binary(25, 1, &[bin("7")])).is_err());
    // Truncated element.
    let mut truncated = array_binary(23, 1, &[int(8), int(9)]);
    truncated.pop();
    assert!(b.append_binary(&truncated).is_err());
    for bad in ["{1,2", "1,2}", "{1,,2}", "{\"1}", "{1}x", "[1:2={1,2}"] {
        assert!(b.append_text(bad.as_bytes()).is_err(), "{bad}");
    }
    b.append_null();
    b.append_text(b"{10}").unwrap();
    assert_eq!(b.len(), 4);
    let a = b.finish().unwrap();
    let (list, values) = list_values::<Int32Array>(&a);
    assert_eq!(list.value_offsets(), [0, 2, 3, 3, 4]);
    assert_eq!(values.values().as_ref(), [1, 2, 6, 10]);
    // Reusable after finish.
    b.append_text(b"{11}").unwrap();
    let a = b.finish().unwrap();
    assert_eq!(list_values::<Int32Array>(&a).1.values().as_ref(), [11]);
}
