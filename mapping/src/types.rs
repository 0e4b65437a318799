//! Column types as recorded in `sink:types:{mapping}`: the sink derives one per column from
//! the writer schema, agent-cli reads them back to turn stored text into typed JSON.

use std::fmt;
use std::str::FromStr;

/// The semantic type of a stored field (see ARCHITECTURE.md, `sink:types`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ColumnType {
    /// Avro `int` without a logical type.
    Int,
    /// Avro `long` without a logical type.
    Long,
    /// Avro `float`.
    Float,
    /// Avro `double`.
    Double,
    /// Avro `boolean`.
    Boolean,
    /// Avro `string` (also enums, UUIDs, ...).
    String,
    /// `io.debezium.data.Json`.
    Json,
    /// Any Debezium timestamp (stored as RFC 3339 UTC with microseconds).
    Timestamp,
    /// `io.debezium.time.Date` (stored as `YYYY-MM-DD`).
    Date,
    /// Connect `Decimal` (stored as exact decimal text).
    Decimal,
    /// Avro `bytes` (stored as base64).
    Bytes,
}

impl ColumnType {
    /// Every type, in declaration order.
    pub const ALL: [ColumnType; 11] = [
        ColumnType::Int,
        ColumnType::Long,
        ColumnType::Float,
        ColumnType::Double,
        ColumnType::Boolean,
        ColumnType::String,
        ColumnType::Json,
        ColumnType::Timestamp,
        ColumnType::Date,
        ColumnType::Decimal,
        ColumnType::Bytes,
    ];

    /// The name stored in `sink:types:{mapping}`.
    pub const fn as_str(self) -> &'static str {
        match self {
            ColumnType::Int => "int",
            ColumnType::Long => "long",
            ColumnType::Float => "float",
            ColumnType::Double => "double",
            ColumnType::Boolean => "boolean",
            ColumnType::String => "string",
            ColumnType::Json => "json",
            ColumnType::Timestamp => "timestamp",
            ColumnType::Date => "date",
            ColumnType::Decimal => "decimal",
            ColumnType::Bytes => "bytes",
        }
    }
}

impl fmt::Display for ColumnType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A type name that is not one of [`ColumnType::as_str`]'s.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown column type `{0}` (expected one of int, long, float, double, boolean, string, json, timestamp, date, decimal, bytes)")]
pub struct UnknownColumnType(pub String);

impl FromStr for ColumnType {
    type Err = UnknownColumnType;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ColumnType::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| UnknownColumnType(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for t in ColumnType::ALL {
            assert_eq!(t.as_str().parse::<ColumnType>(), Ok(t));
            assert_eq!(t.to_string(), t.as_str());
        }
    }

    #[test]
    fn unknown_name_is_an_error() {
        let err = "varchar".parse::<ColumnType>().unwrap_err();
        assert!(err.to_string().starts_with("unknown column type `varchar`"));
    }
}
