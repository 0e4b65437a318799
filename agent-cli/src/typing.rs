//! Stored text -> typed JSON, using the types the sink recorded in `sink:types:{mapping}`.
//!
//! | stored type | JSON |
//! |---|---|
//! | `int`, `long` | number (integer) |
//! | `float`, `double` | number (`NaN`/`Infinity` stay strings: JSON has no such numbers) |
//! | `boolean` | `true` / `false` |
//! | `json` | the parsed JSON value |
//! | `timestamp`, `date`, `decimal`, `bytes`, `string` | the stored string (RFC 3339, `YYYY-MM-DD`, exact decimal text, base64) |
//!
//! A field the types hash knows but the row lacks is a NULL column: it appears as `null`. A
//! field without a recorded type (or with a type newer than this binary) stays a string. A
//! value that does not parse as its recorded type is malformed data: an error, never a guess.

use std::collections::HashMap;

use mapping::ColumnType;
use serde_json::{Map, Number, Value};

use crate::error::StoreError;
use crate::store::Pairs;

/// Field name -> recorded type (`None`: a type name this binary does not know).
pub type Types<'a> = HashMap<&'a str, Option<ColumnType>>;

/// Indexes the types hash, parsing each type name once per lookup rather than once per row.
pub fn types_of<'a>(pairs: &'a Pairs<'_>) -> Types<'a> {
    pairs
        .iter()
        .map(|(f, t)| (f.as_ref(), t.parse::<ColumnType>().ok()))
        .collect()
}

/// One row as a JSON object, fields in name order.
pub fn typed_row(
    row: &Pairs<'_>,
    types: &Types<'_>,
    mapping: &str,
) -> Result<Map<String, Value>, StoreError> {
    let mut fields = Map::new();
    for (field, raw) in row {
        let value = match types.get(field.as_ref()).copied().flatten() {
            Some(ty) => typed_value(raw, ty).map_err(|why| {
                StoreError::Malformed(format!(
                    "field `{field}` of a `{mapping}` row is recorded as {ty} but holds {:?}: {why}",
                    shorten(raw)
                ))
            })?,
            None => Value::String(raw.as_ref().to_owned()),
        };
        fields.insert(field.as_ref().to_owned(), value);
    }
    // A typed field the row lacks is a NULL column.
    for field in types.keys() {
        if !fields.contains_key(*field) {
            fields.insert((*field).to_owned(), Value::Null);
        }
    }
    Ok(fields)
}

/// One stored value as JSON, or why it does not parse as `ty`.
pub fn typed_value(raw: &str, ty: ColumnType) -> Result<Value, String> {
    Ok(match ty {
        ColumnType::Int | ColumnType::Long => Value::Number(
            raw.parse::<i64>()
                .map_err(|e| format!("not an integer ({e})"))?
                .into(),
        ),
        ColumnType::Float | ColumnType::Double => {
            let x = raw
                .parse::<f64>()
                .map_err(|e| format!("not a number ({e})"))?;
            match Number::from_f64(x) {
                Some(n) => Value::Number(n),
                None => Value::String(raw.to_owned()),
            }
        }
        ColumnType::Boolean => match raw {
            "true" => Value::Bool(true),
            "false" => Value::Bool(false),
            _ => return Err("not `true` or `false`".into()),
        },
        ColumnType::Json => serde_json::from_str(raw).map_err(|e| format!("not JSON ({e})"))?,
        ColumnType::String
        | ColumnType::Timestamp
        | ColumnType::Date
        | ColumnType::Decimal
        | ColumnType::Bytes => Value::String(raw.to_owned()),
    })
}

fn shorten(raw: &str) -> String {
    let mut s: String = raw.chars().take(60).collect();
    if s.len() < raw.len() {
        s.push_str("...");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pairs(items: &[(&'static str, &'static str)]) -> Pairs<'static> {
        items
            .iter()
            .map(|(a, b)| ((*a).into(), (*b).into()))
            .collect()
    }

    #[test]
    fn every_type_is_rendered() {
        let types = pairs(&[
            ("id", "int"),
            ("big", "long"),
            ("ratio", "double"),
            ("f", "float"),
            ("active", "boolean"),
            ("items", "json"),
            ("created_at", "timestamp"),
            ("born", "date"),
            ("price", "decimal"),
            ("blob", "bytes"),
            ("name", "string"),
            ("gone", "string"),
        ]);
        let row = pairs(&[
            ("id", "42"),
            ("big", "-9007199254740993"),
            ("ratio", "0.25"),
            ("f", "NaN"),
            ("active", "false"),
            ("items", r#"[{"sku":"A","qty":2}]"#),
            ("created_at", "2026-11-24T09:56:33.142906Z"),
            ("born", "1990-01-31"),
            ("price", "12.50"),
            ("blob", "AAE="),
            ("name", "Jane"),
            ("extra", "7"),
        ]);
        let out = typed_row(&row, &types_of(&types), "t").unwrap();
        assert_eq!(
            Value::Object(out),
            json!({
                "id": 42, "big": -9007199254740993_i64, "ratio": 0.25, "f": "NaN", "active": false,
                "items": [{"sku": "A", "qty": 2}], "created_at": "2026-11-24T09:56:33.142906Z",
                "born": "1990-01-31", "price": "12.50", "blob": "AAE=", "name": "Jane",
                "gone": null, "extra": "7"
            })
        );
    }

    #[test]
    fn malformed_values_are_errors() {
        let types = pairs(&[("id", "int"), ("ok", "boolean"), ("j", "json")]);
        for row in [
            pairs(&[("id", "4x")]),
            pairs(&[("ok", "yes")]),
            pairs(&[("j", "{")]),
        ] {
            let err = typed_row(&row, &types_of(&types), "customers").unwrap_err();
            assert!(err.to_string().contains("malformed data in redis"), "{err}");
        }
    }

    #[test]
    fn unknown_type_names_stay_strings() {
        let types = pairs(&[("x", "geometry")]);
        let out = typed_row(&pairs(&[("x", "POINT(1 2)")]), &types_of(&types), "t").unwrap();
        assert_eq!(out["x"], json!("POINT(1 2)"));
    }
}
