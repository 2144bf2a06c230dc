//! A pipeline's `transforms` column (JSON) as [`Transforms`]:
//!
//! ```json
//! {"public.users": {
//!     "filter": [{"column": "status", "op": "=", "value": "active"},
//!                {"column": "deleted_at", "op": "is null"}],
//!     "select": ["id", "email", "status"],
//!     "mask": {"email": "hash"},
//!     "rename": {"status": "state"}}}
//! ```
//!
//! A table named without a schema is in `public`. Computed columns are
//! Rust closures ([`ComputedColumn`](crate::transform::ComputedColumn)) and
//! have no JSON form.

use serde_json::{Map, Value};

use crate::transform::{Comparison, Mask, Predicate, TableTransform, Transforms};
use crate::types::TableName;
use crate::{Error, ErrorKind, Result};

/// Reads the `transforms` of pipeline `pipeline`; empty text means none.
/// Errors name the pipeline, the table and the key, never a value.
pub fn parse_transforms(pipeline: &str, text: &str) -> Result<Transforms> {
    let bad = |why: String| {
        Error::new(
            ErrorKind::Config,
            format!("pipeline `{pipeline}`: transforms: {why}"),
        )
    };
    if text.trim().is_empty() {
        return Ok(Transforms::new());
    }
    let value: Value = serde_json::from_str(text).map_err(|e| {
        bad(format!(
            "not valid JSON (line {}, column {})",
            e.line(),
            e.column()
        ))
    })?;
    let Value::Object(tables) = value else {
        return Err(bad(
            "write a JSON object of tables, like {\"public.users\": {...}}".to_owned(),
        ));
    };
    let mut transforms = Transforms::new();
    for (name, rules) in tables {
        let table = match name.split_once('.') {
            Some((schema, table)) => TableName::new(schema, table),
            None => TableName::new("public", &name),
        };
        let bad = |why: String| bad(format!("{table}: {why}"));
        let Value::Object(mut rules) = rules else {
            return Err(bad("the rules must be a JSON object".to_owned()));
        };
        let mut transform = TableTransform::new();
        if let Some(filter) = rules.remove("filter") {
            let Value::Array(predicates) = filter else {
                return Err(bad("`filter` must be a list of conditions".to_owned()));
            };
            for predicate in predicates {
                transform = transform.filter(predicate_of(predicate).map_err(&bad)?);
            }
        }
        if let Some(select) = rules.remove("select") {
            transform =
                transform
                    .select(strings(select).ok_or_else(|| {
                        bad("`select` must be a list of column names".to_owned())
                    })?);
        }
        for (column, mask) in object(&mut rules, "mask").map_err(&bad)? {
            let mask = match mask.as_str() {
                Some("hash") => Mask::Hash,
                Some("null") => Mask::Null,
                _ => {
                    return Err(bad(format!(
                        "the mask of `{column}` must be \"hash\" or \"null\""
                    )))
                }
            };
            transform = transform.mask(column, mask);
        }
        for (column, to) in object(&mut rules, "rename").map_err(&bad)? {
            let Some(to) = to.as_str() else {
                return Err(bad(format!("the new name of `{column}` must be a string")));
            };
            transform = transform.rename(column, to);
        }
        if let Some(key) = rules.keys().next() {
            return Err(bad(format!(
                "unknown key `{key}`; use filter, select, mask and rename"
            )));
        }
        transforms = transforms.table(table, transform);
    }
    Ok(transforms)
}

fn predicate_of(value: Value) -> std::result::Result<Predicate, String> {
    let Value::Object(mut condition) = value else {
        return Err("a condition must be an object with `column` and `op`".to_owned());
    };
    let column = match condition.remove("column") {
        Some(Value::String(column)) => column,
        _ => return Err("a condition needs a `column` (a string)".to_owned()),
    };
    let op = match condition.remove("op") {
        Some(Value::String(op)) => op.to_ascii_lowercase(),
        _ => {
            return Err(format!(
                "the condition on `{column}` needs an `op` (a string)"
            ))
        }
    };
    let value = condition.remove("value");
    if let Some(key) = condition.keys().next() {
        return Err(format!(
            "the condition on `{column}` has the unknown key `{key}`"
        ));
    }
    match (op.as_str(), value) {
        ("is null", None) => Ok(Predicate::IsNull(column)),
        ("is not null", None) => Ok(Predicate::IsNotNull(column)),
        (op, Some(value)) => {
            let Some(comparison) = Comparison::parse(op) else {
                return Err(format!(
                    "the condition on `{column}` has the unknown op `{op}`; use =, <>, <, <=, >, \
                     >=, is null or is not null"
                ));
            };
            let value = match value {
                Value::String(text) => text,
                Value::Number(number) => number.to_string(),
                Value::Bool(flag) => flag.to_string(),
                _ => {
                    return Err(format!(
                    "the value of the condition on `{column}` must be a string, number or boolean"
                ))
                }
            };
            Ok(Predicate::compare(column, comparison, value))
        }
        (op, None) => Err(format!(
            "the condition on `{column}` with op `{op}` needs a `value`"
        )),
    }
}

fn strings(value: Value) -> Option<Vec<String>> {
    match value {
        Value::Array(items) => items
            .into_iter()
            .map(|item| match item {
                Value::String(text) => Some(text),
                _ => None,
            })
            .collect(),
        _ => None,
    }
}

fn object(
    rules: &mut Map<String, Value>,
    key: &str,
) -> std::result::Result<Map<String, Value>, String> {
    match rules.remove(key) {
        None => Ok(Map::new()),
        Some(Value::Object(object)) => Ok(object),
        Some(_) => Err(format!("`{key}` must be an object of column names")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transforms_are_read_and_checked() {
        let ok = parse_transforms(
            "p",
            r#"{"public.users": {"filter": [{"column": "status", "op": "=", "value": "active"},
                                           {"column": "score", "op": ">=", "value": 3},
                                           {"column": "gone", "op": "IS NULL"}],
                                 "select": ["id", "email"], "mask": {"email": "hash"},
                                 "rename": {"email": "contact"}},
                "orders": {}}"#,
        )
        .unwrap();
        assert!(!ok.is_empty());
        assert!(parse_transforms("p", "  ").unwrap().is_empty());

        for (text, expected) in [
            ("{", "not valid JSON"),
            ("[]", "JSON object of tables"),
            (
                r#"{"t": {"mask": {"email": "scramble"}}}"#,
                "\"hash\" or \"null\"",
            ),
            (
                r#"{"t": {"filter": [{"column": "a", "op": "~", "value": "x"}]}}"#,
                "unknown op `~`",
            ),
            (
                r#"{"t": {"filter": [{"column": "a", "op": "="}]}}"#,
                "needs a `value`",
            ),
            (r#"{"t": {"sellect": ["a"]}}"#, "unknown key `sellect`"),
            (r#"{"t": {"select": "a"}}"#, "list of column names"),
        ] {
            let error = parse_transforms("p", text).unwrap_err();
            assert_eq!(error.kind(), ErrorKind::Config);
            assert!(error.message().contains(expected), "{text}: {error}");
        }
    }
}
