//! Column types declared in `connectors.yaml` (`types: {created_at: timestamp_micros}`) for
//! records that carry no schema: Debezium's JsonConverter with `schemas.enable=false` sends a
//! microsecond timestamp as a bare number and a JSONB column as a string, and only the
//! mapping can say what they mean. Records with a schema (Avro, JSON with `schemas.enable`)
//! take their types from it and ignore these.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

/// What a schemaless JSON value of one column means; each name is the Debezium / Kafka
/// Connect type whose JSON encoding it reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeclaredType {
    /// `string`: text as is.
    String,
    /// `int`: a 32-bit integer (Connect `int8`/`int16`/`int32`).
    Int,
    /// `long`: a 64-bit integer (Connect `int64`).
    Long,
    /// `float`: a single-precision number (Connect `float32`).
    Float,
    /// `double`: a double-precision number (Connect `float64`).
    Double,
    /// `boolean`.
    Boolean,
    /// `json`: JSON text in a string (`io.debezium.data.Json`, JSONB columns).
    Json,
    /// `bytes`: base64 text (Connect `bytes`).
    Bytes,
    /// `date`: days since 1970-01-01 (`io.debezium.time.Date`).
    Date,
    /// `timestamp_millis`: milliseconds since the epoch (`io.debezium.time.Timestamp`).
    TimestampMillis,
    /// `timestamp_micros`: microseconds since the epoch (`io.debezium.time.MicroTimestamp`).
    TimestampMicros,
    /// `timestamp_nanos`: nanoseconds since the epoch (`io.debezium.time.NanoTimestamp`).
    TimestampNanos,
    /// `zoned_timestamp`: ISO-8601 text with an offset (`io.debezium.time.ZonedTimestamp`).
    ZonedTimestamp,
    /// `decimal(S)`: base64 of the unscaled big-endian two's complement integer, `S`
    /// digits after the point (Connect `Decimal` with the JsonConverter's default
    /// `decimal.format=BASE64`).
    Decimal {
        /// Digits after the decimal point.
        scale: u32,
    },
    /// `variable_scale_decimal`: `{"scale": S, "value": "<base64>"}`
    /// (`io.debezium.data.VariableScaleDecimal`, NUMERIC without a scale).
    VariableScaleDecimal,
}

/// The names [`DeclaredType::from_str`] accepts, for messages and the README.
pub const DECLARED_TYPE_NAMES: &str = "string, int, long, float, double, boolean, json, bytes, \
     date, timestamp_millis, timestamp_micros, timestamp_nanos, zoned_timestamp, decimal(SCALE), \
     variable_scale_decimal";

/// Declared types by column name (the column as Debezium names it, before any renaming).
pub type DeclaredTypes = BTreeMap<String, DeclaredType>;

/// A `types:` entry that names no [`DeclaredType`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown type `{0}` (expected one of {DECLARED_TYPE_NAMES})")]
pub struct UnknownDeclaredType(pub String);

impl FromStr for DeclaredType {
    type Err = UnknownDeclaredType;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "string" => DeclaredType::String,
            "int" => DeclaredType::Int,
            "long" => DeclaredType::Long,
            "float" => DeclaredType::Float,
            "double" => DeclaredType::Double,
            "boolean" => DeclaredType::Boolean,
            "json" => DeclaredType::Json,
            "bytes" => DeclaredType::Bytes,
            "date" => DeclaredType::Date,
            "timestamp_millis" => DeclaredType::TimestampMillis,
            "timestamp_micros" => DeclaredType::TimestampMicros,
            "timestamp_nanos" => DeclaredType::TimestampNanos,
            "zoned_timestamp" => DeclaredType::ZonedTimestamp,
            "variable_scale_decimal" => DeclaredType::VariableScaleDecimal,
            other => {
                let scale = other
                    .strip_prefix("decimal(")
                    .and_then(|rest| rest.strip_suffix(')'))
                    .and_then(|digits| digits.trim().parse().ok());
                match scale {
                    Some(scale) => DeclaredType::Decimal { scale },
                    None => return Err(UnknownDeclaredType(other.to_owned())),
                }
            }
        })
    }
}

impl fmt::Display for DeclaredType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DeclaredType::String => "string",
            DeclaredType::Int => "int",
            DeclaredType::Long => "long",
            DeclaredType::Float => "float",
            DeclaredType::Double => "double",
            DeclaredType::Boolean => "boolean",
            DeclaredType::Json => "json",
            DeclaredType::Bytes => "bytes",
            DeclaredType::Date => "date",
            DeclaredType::TimestampMillis => "timestamp_millis",
            DeclaredType::TimestampMicros => "timestamp_micros",
            DeclaredType::TimestampNanos => "timestamp_nanos",
            DeclaredType::ZonedTimestamp => "zoned_timestamp",
            DeclaredType::VariableScaleDecimal => "variable_scale_decimal",
            DeclaredType::Decimal { scale } => return write!(f, "decimal({scale})"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for name in DECLARED_TYPE_NAMES.split(", ") {
            let name = name.replace("SCALE", "2");
            let parsed: DeclaredType = name.parse().unwrap();
            assert_eq!(parsed.to_string(), name);
        }
        assert_eq!(
            "decimal(0)".parse::<DeclaredType>(),
            Ok(DeclaredType::Decimal { scale: 0 })
        );
    }

    #[test]
    fn unknown_names() {
        for bad in [
            "varchar",
            "decimal",
            "decimal(-1)",
            "decimal(x)",
            "Timestamp_micros",
        ] {
            let err = bad.parse::<DeclaredType>().unwrap_err();
            assert!(
                err.to_string()
                    .starts_with(&format!("unknown type `{bad}`")),
                "{err}"
            );
        }
    }
}
