//! Values bound to a query's placeholders (`?` or `:1`), in the wire form
//! of Snowflake's query request: `{"1": {"type": "FIXED", "value": "42"}}`,
//! one row, or `"value": ["1", "2", null]` for many rows in one request.

use serde_json::{Map, Value};

use crate::{Error, ErrorKind, Result};

/// The Snowflake type a bound value is sent as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BindingType {
    /// `FIXED`: an integer (bind a NUMBER with a scale as text).
    Fixed,
    /// `REAL`: a double.
    Real,
    /// `TEXT`.
    Text,
    /// `BOOLEAN`.
    Boolean,
    /// `DATE`, sent as milliseconds since 1970-01-01.
    Date,
    /// `TIME`, sent as nanoseconds since midnight.
    Time,
    /// `TIMESTAMP_NTZ`, sent as nanoseconds since the epoch.
    TimestampNtz,
    /// `BINARY`, sent as hex.
    Binary,
}

impl BindingType {
    fn wire_name(self) -> &'static str {
        match self {
            Self::Fixed => "FIXED",
            Self::Real => "REAL",
            Self::Text => "TEXT",
            Self::Boolean => "BOOLEAN",
            Self::Date => "DATE",
            Self::Time => "TIME",
            Self::TimestampNtz => "TIMESTAMP_NTZ",
            Self::Binary => "BINARY",
        }
    }
}

/// One bound value.
#[derive(Clone, Debug, PartialEq)]
pub enum Binding {
    /// NULL, sent as the given type.
    Null(BindingType),
    /// An integer.
    Fixed(i64),
    /// A double (NaN and infinities included).
    Real(f64),
    /// Text; also the exact way to bind a NUMBER with a scale.
    Text(String),
    /// A boolean.
    Boolean(bool),
    /// A date, in days since 1970-01-01.
    Date(i32),
    /// A time of day, in nanoseconds since midnight.
    Time(i64),
    /// A timestamp without time zone, in nanoseconds since the epoch.
    TimestampNtz(i64),
    /// Bytes.
    Binary(Vec<u8>),
}

impl Binding {
    /// The type the value is sent as.
    pub fn binding_type(&self) -> BindingType {
        match self {
            Self::Null(t) => *t,
            Self::Fixed(_) => BindingType::Fixed,
            Self::Real(_) => BindingType::Real,
            Self::Text(_) => BindingType::Text,
            Self::Boolean(_) => BindingType::Boolean,
            Self::Date(_) => BindingType::Date,
            Self::Time(_) => BindingType::Time,
            Self::TimestampNtz(_) => BindingType::TimestampNtz,
            Self::Binary(_) => BindingType::Binary,
        }
    }

    /// The wire text of the value; `None` for NULL.
    fn wire_value(&self) -> Option<String> {
        Some(match self {
            Self::Null(_) => return None,
            Self::Fixed(v) => v.to_string(),
            Self::Real(v) if v.is_nan() => "NaN".to_owned(),
            Self::Real(v) if v.is_infinite() => {
                if *v > 0.0 { "Infinity" } else { "-Infinity" }.to_owned()
            }
            Self::Real(v) => v.to_string(),
            Self::Text(v) => v.clone(),
            Self::Boolean(v) => v.to_string(),
            Self::Date(days) => (i64::from(*days) * 86_400_000).to_string(),
            Self::Time(nanos) | Self::TimestampNtz(nanos) => nanos.to_string(),
            Self::Binary(bytes) => {
                let mut hex = String::with_capacity(bytes.len() * 2);
                for b in bytes {
                    hex.push_str(&format!("{b:02X}"));
                }
                hex
            }
        })
    }
}

/// The `bindings` object of one row of values. A NULL goes as `TEXT`: it
/// converts to any column type, and the fakesnow emulator fails on a NULL
/// of another type.
pub(crate) fn row_bindings(values: &[Binding]) -> Value {
    let mut bindings = Map::new();
    for (i, value) in values.iter().enumerate() {
        let kind = match value {
            Binding::Null(_) => BindingType::Text,
            other => other.binding_type(),
        };
        bindings.insert(
            (i + 1).to_string(),
            serde_json::json!({
                "type": kind.wire_name(),
                "value": value.wire_value(),
            }),
        );
    }
    Value::Object(bindings)
}

/// The `bindings` object of many rows, one array per placeholder; every
/// row must have the same number of values, each placeholder one type
/// (NULLs aside).
pub(crate) fn array_bindings(rows: &[Vec<Binding>]) -> Result<Value> {
    let width = rows.first().map_or(0, Vec::len);
    let mut bindings = Map::new();
    for column in 0..width {
        let mut kind = None;
        let mut values = Vec::with_capacity(rows.len());
        for row in rows {
            let value = row
                .get(column)
                .filter(|_| row.len() == width)
                .ok_or_else(|| {
                    Error::new(
                    ErrorKind::Sink,
                    "rows bound in one Snowflake request must all have the same number of values",
                )
                })?;
            match (kind, value) {
                (_, Binding::Null(_)) => {}
                (None, v) => kind = Some(v.binding_type()),
                (Some(k), v) if k != v.binding_type() => {
                    return Err(Error::new(
                        ErrorKind::Sink,
                        format!(
                            "placeholder {} is bound as {k:?} and {:?} in one Snowflake request",
                            column + 1,
                            v.binding_type()
                        ),
                    ))
                }
                _ => {}
            }
            values.push(value.wire_value().map_or(Value::Null, Value::String));
        }
        let kind = kind.or_else(|| match rows.first().and_then(|r| r.get(column)) {
            Some(Binding::Null(t)) => Some(*t),
            _ => None,
        });
        bindings.insert(
            (column + 1).to_string(),
            serde_json::json!({
                "type": kind.unwrap_or(BindingType::Text).wire_name(),
                "value": values,
            }),
        );
    }
    Ok(Value::Object(bindings))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_take_their_wire_forms() {
        let row = row_bindings(&[
            Binding::Fixed(-7),
            Binding::Real(f64::NEG_INFINITY),
            Binding::Date(1),
            Binding::Binary(vec![0, 0xAB]),
            Binding::Null(BindingType::Text),
        ]);
        assert_eq!(
            row["1"],
            serde_json::json!({"type": "FIXED", "value": "-7"})
        );
        assert_eq!(row["2"]["value"], "-Infinity");
        assert_eq!(
            row["3"],
            serde_json::json!({"type": "DATE", "value": "86400000"})
        );
        assert_eq!(row["4"]["value"], "00AB");
        assert_eq!(row["5"], serde_json::json!({"type": "TEXT", "value": null}));
        let null = row_bindings(&[Binding::Null(BindingType::Date)]);
        assert_eq!(
            null["1"],
            serde_json::json!({"type": "TEXT", "value": null})
        );
    }

    #[test]
    fn many_rows_bind_one_array_per_placeholder() {
        let rows = vec![
            vec![Binding::Null(BindingType::Fixed), Binding::Text("a".into())],
            vec![Binding::Fixed(2), Binding::Text("b".into())],
        ];
        let bound = array_bindings(&rows).unwrap();
        assert_eq!(
            bound["1"],
            serde_json::json!({"type": "FIXED", "value": [null, "2"]})
        );
        assert_eq!(bound["2"]["value"], serde_json::json!(["a", "b"]));
        let mixed = vec![vec![Binding::Fixed(1)], vec![Binding::Text("x".into())]];
        assert!(array_bindings(&mixed).is_err());
        let ragged = vec![vec![Binding::Fixed(1)], vec![]];
        assert!(array_bindings(&ragged).is_err());
    }
}
