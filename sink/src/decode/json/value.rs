//! JSON values (as Kafka Connect's JsonConverter writes them) to [`FieldValue`]s: guided by
//! the column's [`Kind`] from the embedded schema or the mapping's `types:`, they become
//! exactly the values the Avro path gives for the same column ([`super::super::value`]), so
//! that rendering is the same; without a kind, a value is taken as it comes ([`infer`]).

use base64::Engine as _;
use mapping::change::FieldValue;
use mapping::ColumnType;
use serde_json::Value as Json;
use thiserror::Error;

use crate::decode::schema::Kind;
use crate::decode::value::{self as avro_value, ValueError, UNAVAILABLE};

/// Why one JSON column value could not be converted.
#[derive(Debug, Error)]
pub enum JsonValueError {
    /// The JSON value is not of a type the column's type allows.
    #[error("expected {expected}, found json {found}")]
    Unexpected {
        /// What the schema (or `types:`) says.
        expected: &'static str,
        /// The JSON type found.
        found: &'static str,
    },
    /// Bytes, a decimal or a variable-scale decimal whose text is not base64.
    #[error("invalid base64 {what}")]
    Base64 {
        /// What the text encodes.
        what: &'static str,
        /// The decoder's complaint.
        #[source]
        source: base64::DecodeError,
    },
    /// A timestamp or decimal outside what the sink can represent, as for Avro.
    #[error(transparent)]
    Value(#[from] ValueError),
}

/// Converts one column value of a known kind.
pub fn convert(kind: Kind, value: Json) -> Result<FieldValue, JsonValueError> {
    match (kind, value) {
        (_, Json::Null) => Ok(FieldValue::Null),
        (_, Json::String(s)) if s == UNAVAILABLE => Ok(FieldValue::Unavailable),
        (Kind::Boolean, Json::Bool(b)) => Ok(FieldValue::Boolean(b)),
        (Kind::Int | Kind::Long, Json::Number(n)) => n
            .as_i64()
            .map(FieldValue::Int)
            .ok_or_else(|| unexpected(kind, "non-integer number")),
        // A float32 read as the Avro path reads it: widened from single precision, so that
        // 0.1 renders as the same 0.10000000149011612.
        (Kind::Float, value) => float(kind, value).map(|f| FieldValue::Float(f64::from(f as f32))),
        (Kind::Double, value) => float(kind, value).map(FieldValue::Float),
        (Kind::String, Json::String(s)) => Ok(FieldValue::String(s)),
        (Kind::Json, Json::String(s)) => Ok(FieldValue::Json(s)),
        (Kind::Timestamp(unit), Json::Number(n)) => {
            let raw = n
                .as_i64()
                .ok_or_else(|| unexpected(kind, "non-integer number"))?;
            Ok(FieldValue::TimestampMicros(avro_value::micros(raw, unit)?))
        }
        (Kind::ZonedTimestamp, Json::String(s)) => {
            Ok(FieldValue::TimestampMicros(avro_value::zoned(s)?))
        }
        (Kind::Date, Json::Number(n)) => n
            .as_i64()
            .and_then(|d| i32::try_from(d).ok())
            .map(FieldValue::Date)
            .ok_or_else(|| unexpected(kind, "number out of range")),
        (Kind::Decimal { scale }, Json::String(s)) => Ok(FieldValue::Decimal {
            unscaled: base64(&s, "decimal")?,
            scale,
        }),
        (Kind::VariableScaleDecimal, Json::Object(mut fields)) => {
            let scale = fields.get("scale").and_then(Json::as_i64);
            let value = fields.remove("value");
            match (scale, value) {
                (Some(scale), Some(Json::String(value))) => {
                    let scale = i32::try_from(scale).unwrap_or(i32::MIN);
                    Ok(FieldValue::Decimal {
                        unscaled: base64(&value, "variable scale decimal")?,
                        scale: avro_value::scale_of(scale)?,
                    })
                }
                _ => Err(JsonValueError::Unexpected {
                    expected: "object {scale: int, value: base64 string}",
                    found: "object",
                }),
            }
        }
        (Kind::Bytes, Json::String(s)) => {
            let bytes = base64(&s, "bytes")?;
            if bytes == UNAVAILABLE.as_bytes() {
                Ok(FieldValue::Unavailable)
            } else {
                Ok(FieldValue::Bytes(bytes))
            }
        }
        (Kind::Other, Json::Array(items)) if matches!(items.as_slice(), [Json::String(s)] if s == UNAVAILABLE) => {
            Ok(FieldValue::Unavailable)
        }
        (Kind::Other, value) => Ok(FieldValue::Json(value.to_string())),
        (kind, value) => Err(unexpected(kind, json_type_name(&value))),
    }
}

/// A value of a column nothing declares, as it comes: numbers as numbers, strings as they
/// are, objects and arrays as JSON text. The type is `None` for NULL and the placeholder of
/// an unchanged TOASTed column (they say nothing about it).
pub fn infer(value: Json) -> (FieldValue, Option<ColumnType>) {
    match value {
        Json::Null => (FieldValue::Null, None),
        Json::Bool(b) => (FieldValue::Boolean(b), Some(ColumnType::Boolean)),
        Json::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => (FieldValue::Int(i), Some(ColumnType::Long)),
            // An integer beyond i64 (an unsigned 64-bit column): its exact text.
            _ if n.is_u64() => (FieldValue::String(n.to_string()), Some(ColumnType::Decimal)),
            (None, Some(f)) => (FieldValue::Float(f), Some(ColumnType::Double)),
            (None, None) => (FieldValue::String(n.to_string()), Some(ColumnType::String)),
        },
        Json::String(s) if s == UNAVAILABLE => (FieldValue::Unavailable, None),
        Json::String(s) => (FieldValue::String(s), Some(ColumnType::String)),
        value @ (Json::Array(_) | Json::Object(_)) => {
            (FieldValue::Json(value.to_string()), Some(ColumnType::Json))
        }
    }
}

/// A float column's number; Jackson writes NaN and the infinities as strings.
fn float(kind: Kind, value: Json) -> Result<f64, JsonValueError> {
    match value {
        Json::Number(n) => n.as_f64().ok_or_else(|| unexpected(kind, "number")),
        Json::String(s) => match s.as_str() {
            "NaN" => Ok(f64::NAN),
            "Infinity" => Ok(f64::INFINITY),
            "-Infinity" => Ok(f64::NEG_INFINITY),
            _ => Err(unexpected(kind, "string")),
        },
        other => Err(unexpected(kind, json_type_name(&other))),
    }
}

fn base64(text: &str, what: &'static str) -> Result<Vec<u8>, JsonValueError> {
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|source| JsonValueError::Base64 { what, source })
}

fn unexpected(kind: Kind, found: &'static str) -> JsonValueError {
    JsonValueError::Unexpected {
        expected: avro_value::expected(kind),
        found,
    }
}

/// The JSON type of a value, for messages.
pub fn json_type_name(value: &Json) -> &'static str {
    match value {
        Json::Null => "null",
        Json::Bool(_) => "boolean",
        Json::Number(_) => "number",
        Json::String(_) => "string",
        Json::Array(_) => "array",
        Json::Object(_) => "object",
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::decode::schema::TimeUnit;

    #[test]
    fn kinds() {
        let cases = [
            (Kind::Int, json!(-3), FieldValue::Int(-3)),
            (
                Kind::Long,
                json!(9_007_199_254_740_993_i64),
                FieldValue::Int(9_007_199_254_740_993),
            ),
            (Kind::Boolean, json!(true), FieldValue::Boolean(true)),
            (Kind::Double, json!(0.1), FieldValue::Float(0.1)),
            (
                Kind::Float,
                json!(0.1),
                FieldValue::Float(f64::from(0.1_f32)),
            ),
            (
                Kind::Double,
                json!("-Infinity"),
                FieldValue::Float(f64::NEG_INFINITY),
            ),
            (Kind::String, json!("x"), FieldValue::String("x".into())),
            (
                Kind::Json,
                json!("{\"a\": 1}"),
                FieldValue::Json("{\"a\": 1}".into()),
            ),
            (
                Kind::Timestamp(TimeUnit::Millis),
                json!(1_795_514_193_142_i64),
                FieldValue::TimestampMicros(1_795_514_193_142_000),
            ),
            (
                Kind::Timestamp(TimeUnit::Micros),
                json!(-1),
                FieldValue::TimestampMicros(-1),
            ),
            (
                Kind::Timestamp(TimeUnit::Nanos),
                json!(1_795_480_593_142_906_789_i64),
                FieldValue::TimestampMicros(1_795_480_593_142_906),
            ),
            (
                Kind::ZonedTimestamp,
                json!("2026-11-24T10:56:33.142906+01:00"),
                FieldValue::TimestampMicros(1_795_514_193_142_906),
            ),
            (Kind::Date, json!(-165), FieldValue::Date(-165)),
            (
                Kind::Decimal { scale: 2 },
                json!("+x4="),
                FieldValue::Decimal {
                    unscaled: vec![0xfb, 0x1e],
                    scale: 2,
                },
            ),
            (
                Kind::VariableScaleDecimal,
                json!({"scale": 3, "value": "/w=="}),
                FieldValue::Decimal {
                    unscaled: vec![0xff],
                    scale: 3,
                },
            ),
            (
                Kind::Bytes,
                json!("AP8Q"),
                FieldValue::Bytes(vec![0, 0xff, 0x10]),
            ),
            (
                Kind::Other,
                json!(["a", "b c"]),
                FieldValue::Json(r#"["a","b c"]"#.into()),
            ),
            (Kind::Int, json!(null), FieldValue::Null),
            (Kind::Json, json!(UNAVAILABLE), FieldValue::Unavailable),
            (Kind::Other, json!([UNAVAILABLE]), FieldValue::Unavailable),
            (
                Kind::Bytes,
                json!(base64::engine::general_purpose::STANDARD.encode(UNAVAILABLE)),
                FieldValue::Unavailable,
            ),
        ];
        for (kind, json, expected) in cases {
            assert_eq!(
                convert(kind, json.clone()).unwrap(),
                expected,
                "{kind:?} {json}"
            );
        }
    }

    #[test]
    fn refusals() {
        let err = convert(Kind::Boolean, json!(1)).unwrap_err();
        assert_eq!(err.to_string(), "expected boolean, found json number");
        let err = convert(Kind::Int, json!(1.5)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "expected int or long, found json non-integer number"
        );
        let err = convert(Kind::Bytes, json!("not base64!")).unwrap_err();
        assert_eq!(err.to_string(), "invalid base64 bytes");
        let err = convert(Kind::ZonedTimestamp, json!("yesterday")).unwrap_err();
        assert_eq!(err.to_string(), "invalid zoned timestamp \"yesterday\"");
        let err = convert(
            Kind::VariableScaleDecimal,
            json!({"scale": -1, "value": "AQ=="}),
        );
        assert_eq!(err.unwrap_err().to_string(), "invalid decimal scale -1");
    }

    #[test]
    fn inferred() {
        assert_eq!(
            infer(json!(7)),
            (FieldValue::Int(7), Some(ColumnType::Long))
        );
        assert_eq!(
            infer(json!(2.5)),
            (FieldValue::Float(2.5), Some(ColumnType::Double))
        );
        assert_eq!(
            infer(json!(u64::MAX)),
            (
                FieldValue::String(u64::MAX.to_string()),
                Some(ColumnType::Decimal)
            )
        );
        assert_eq!(
            infer(json!("s")),
            (FieldValue::String("s".into()), Some(ColumnType::String))
        );
        assert_eq!(
            infer(json!({"a": [1]})),
            (
                FieldValue::Json(r#"{"a":[1]}"#.into()),
                Some(ColumnType::Json)
            )
        );
        assert_eq!(infer(json!(null)), (FieldValue::Null, None));
        assert_eq!(infer(json!(UNAVAILABLE)), (FieldValue::Unavailable, None));
    }
}
