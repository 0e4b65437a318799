//! Avro values (as apache-avro decodes them) to [`FieldValue`]s, guided by the column's
//! [`Kind`] from the writer schema: timestamps normalised to microseconds UTC, Connect
//! decimals to unscaled bytes plus scale, Debezium's TOAST placeholder to
//! [`FieldValue::Unavailable`].

use apache_avro::types::Value;
use mapping::change::FieldValue;
use thiserror::Error;

use super::schema::{Kind, TimeUnit};

/// What Debezium sends for an unchanged TOASTed column (`unavailable.value.placeholder`).
pub const UNAVAILABLE: &str = "__debezium_unavailable_value";

/// Why one column value could not be converted.
#[derive(Debug, Error)]
pub enum ValueError {
    /// The Avro value is not of a type the column's schema type allows.
    #[error("expected {expected}, found avro {found}")]
    Unexpected {
        /// What the schema says.
        expected: &'static str,
        /// What the body held.
        found: &'static str,
    },
    /// A timestamp outside the range of microseconds in an `i64`.
    #[error("timestamp {value} {unit} out of range")]
    TimestampRange {
        /// The raw number.
        value: i64,
        /// Its unit.
        unit: &'static str,
    },
    /// An `io.debezium.time.ZonedTimestamp` that is not ISO-8601 with an offset.
    #[error("invalid zoned timestamp {value:?}")]
    ZonedTimestamp {
        /// The text.
        value: String,
        /// The parser's complaint.
        #[source]
        source: chrono::ParseError,
    },
    /// A decimal scale that is negative.
    #[error("invalid decimal scale {0}")]
    Scale(i32),
    /// A value apache-avro cannot represent (decimal bytes, JSON rendering).
    #[error("unrepresentable value")]
    Avro(#[source] apache_avro::Error),
}

/// Converts one column value.
pub fn convert(kind: Kind, value: Value) -> Result<FieldValue, ValueError> {
    let value = match value {
        Value::Union(_, inner) => *inner,
        other => other,
    };
    match (kind, value) {
        (_, Value::Null) => Ok(FieldValue::Null),
        (_, Value::String(s)) if s == UNAVAILABLE => Ok(FieldValue::Unavailable),
        (Kind::Bytes, Value::Bytes(b)) if b == UNAVAILABLE.as_bytes() => {
            Ok(FieldValue::Unavailable)
        }
        (Kind::Boolean, Value::Boolean(b)) => Ok(FieldValue::Boolean(b)),
        (Kind::Int | Kind::Long, value) => integer(value).map(FieldValue::Int),
        (Kind::Float | Kind::Double, Value::Float(f)) => Ok(FieldValue::Float(f64::from(f))),
        (Kind::Float | Kind::Double, Value::Double(d)) => Ok(FieldValue::Float(d)),
        (Kind::String, Value::String(s) | Value::Enum(_, s)) => Ok(FieldValue::String(s)),
        (Kind::String, Value::Uuid(u)) => Ok(FieldValue::String(u.to_string())),
        (Kind::Json, Value::String(s)) => Ok(FieldValue::Json(s)),
        (Kind::Timestamp(unit), value) => timestamp(unit, value).map(FieldValue::TimestampMicros),
        (Kind::ZonedTimestamp, Value::String(s)) => zoned(s).map(FieldValue::TimestampMicros),
        (Kind::Date, Value::Date(d) | Value::Int(d)) => Ok(FieldValue::Date(d)),
        (Kind::Decimal { scale }, value) => decimal(scale, value),
        (Kind::VariableScaleDecimal, Value::Record(fields)) => variable_scale_decimal(fields),
        (Kind::Bytes, Value::Bytes(b) | Value::Fixed(_, b)) => Ok(FieldValue::Bytes(b)),
        (Kind::Other, Value::Array(items)) if matches!(items.as_slice(), [Value::String(s)] if s == UNAVAILABLE) => {
            Ok(FieldValue::Unavailable)
        }
        (Kind::Other, value) => serde_json::Value::try_from(value)
            .map(|json| FieldValue::Json(json.to_string()))
            .map_err(ValueError::Avro),
        (kind, value) => Err(unexpected(expected(kind), &value)),
    }
}

fn integer(value: Value) -> Result<i64, ValueError> {
    match value {
        Value::Int(i) | Value::TimeMillis(i) | Value::Date(i) => Ok(i64::from(i)),
        Value::Long(l) | Value::TimeMicros(l) => Ok(l),
        other => Err(unexpected("int or long", &other)),
    }
}

fn timestamp(unit: TimeUnit, value: Value) -> Result<i64, ValueError> {
    let (raw, unit) = match value {
        Value::TimestampMillis(v) | Value::LocalTimestampMillis(v) => (v, TimeUnit::Millis),
        Value::TimestampMicros(v) | Value::LocalTimestampMicros(v) => (v, TimeUnit::Micros),
        Value::TimestampNanos(v) | Value::LocalTimestampNanos(v) => (v, TimeUnit::Nanos),
        Value::Long(v) => (v, unit),
        Value::Int(v) => (i64::from(v), unit),
        other => return Err(unexpected("timestamp", &other)),
    };
    micros(raw, unit)
}

/// A number of `unit`s since the epoch in microseconds (nanoseconds rounded down).
pub(super) fn micros(raw: i64, unit: TimeUnit) -> Result<i64, ValueError> {
    match unit {
        TimeUnit::Millis => raw.checked_mul(1000).ok_or(ValueError::TimestampRange {
            value: raw,
            unit: "ms",
        }),
        TimeUnit::Micros => Ok(raw),
        TimeUnit::Nanos => Ok(raw.div_euclid(1000)),
    }
}

/// An ISO-8601 timestamp with an offset in microseconds since the epoch.
pub(super) fn zoned(text: String) -> Result<i64, ValueError> {
    match chrono::DateTime::parse_from_rfc3339(&text) {
        Ok(t) => Ok(t.timestamp_micros()),
        Err(source) => Err(ValueError::ZonedTimestamp {
            value: text,
            source,
        }),
    }
}

fn decimal(scale: u32, value: Value) -> Result<FieldValue, ValueError> {
    let unscaled = match value {
        Value::Bytes(b) | Value::Fixed(_, b) => b,
        Value::Decimal(d) => Vec::<u8>::try_from(&d).map_err(ValueError::Avro)?,
        other => return Err(unexpected("decimal bytes", &other)),
    };
    Ok(FieldValue::Decimal { unscaled, scale })
}

fn variable_scale_decimal(fields: Vec<(String, Value)>) -> Result<FieldValue, ValueError> {
    let mut scale = None;
    let mut unscaled = None;
    for (name, value) in fields {
        match (name.as_str(), value) {
            ("scale", Value::Int(s)) => scale = Some(s),
            ("value", Value::Bytes(b)) => unscaled = Some(b),
            _ => {}
        }
    }
    match (scale, unscaled) {
        (Some(s), Some(unscaled)) => {
            let scale = scale_of(s)?;
            Ok(FieldValue::Decimal { unscaled, scale })
        }
        _ => Err(ValueError::Unexpected {
            expected: "record {scale: int, value: bytes}",
            found: "record",
        }),
    }
}

/// A decimal scale, which must not be negative.
pub(super) fn scale_of(scale: i32) -> Result<u32, ValueError> {
    u32::try_from(scale).map_err(|_| ValueError::Scale(scale))
}

/// What a column of `kind` holds, for messages.
pub(super) fn expected(kind: Kind) -> &'static str {
    match kind {
        Kind::Boolean => "boolean",
        Kind::Int | Kind::Long => "int or long",
        Kind::Float | Kind::Double => "float or double",
        Kind::String => "string",
        Kind::Json => "json string",
        Kind::Timestamp(_) => "timestamp",
        Kind::ZonedTimestamp => "zoned timestamp string",
        Kind::Date => "date int",
        Kind::Decimal { .. } => "decimal bytes",
        Kind::VariableScaleDecimal => "variable scale decimal record",
        Kind::Bytes => "bytes",
        Kind::Other => "any",
    }
}

fn unexpected(expected: &'static str, found: &Value) -> ValueError {
    ValueError::Unexpected {
        expected,
        found: avro_type_name(found),
    }
}

/// The Avro type of a decoded value, for messages.
pub fn avro_type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Boolean(_) => "boolean",
        Value::Int(_) => "int",
        Value::Long(_) => "long",
        Value::Float(_) => "float",
        Value::Double(_) => "double",
        Value::Bytes(_) => "bytes",
        Value::String(_) => "string",
        Value::Fixed(..) => "fixed",
        Value::Enum(..) => "enum",
        Value::Union(..) => "union",
        Value::Array(_) => "array",
        Value::Map(_) => "map",
        Value::Record(_) => "record",
        Value::Date(_) => "date",
        Value::Decimal(_) | Value::BigDecimal(_) => "decimal",
        Value::TimeMillis(_) => "time-millis",
        Value::TimeMicros(_) => "time-micros",
        Value::TimestampMillis(_) => "timestamp-millis",
        Value::TimestampMicros(_) => "timestamp-micros",
        Value::TimestampNanos(_) => "timestamp-nanos",
        Value::LocalTimestampMillis(_) => "local-timestamp-millis",
        Value::LocalTimestampMicros(_) => "local-timestamp-micros",
        Value::LocalTimestampNanos(_) => "local-timestamp-nanos",
        Value::Duration(_) => "duration",
        Value::Uuid(_) => "uuid",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nullable(v: Value) -> Value {
        Value::Union(1, Box::new(v))
    }

    #[test]
    fn timestamps_become_utc_micros() {
        let millis = Kind::Timestamp(TimeUnit::Millis);
        let micros = Kind::Timestamp(TimeUnit::Micros);
        let nanos = Kind::Timestamp(TimeUnit::Nanos);
        assert_eq!(
            convert(millis, Value::Long(1_795_480_593_142)).unwrap(),
            FieldValue::TimestampMicros(1_795_480_593_142_000)
        );
        assert_eq!(
            convert(micros, nullable(Value::Long(1_795_480_593_142_906))).unwrap(),
            FieldValue::TimestampMicros(1_795_480_593_142_906)
        );
        assert_eq!(
            convert(nanos, Value::Long(1_795_480_593_142_906_789)).unwrap(),
            FieldValue::TimestampMicros(1_795_480_593_142_906)
        );
        assert_eq!(
            convert(nanos, Value::Long(-1)).unwrap(),
            FieldValue::TimestampMicros(-1)
        );
        // apache-avro's logical variants carry their own unit.
        assert_eq!(
            convert(micros, Value::TimestampMillis(5)).unwrap(),
            FieldValue::TimestampMicros(5000)
        );
        assert!(matches!(
            convert(millis, Value::Long(i64::MAX)),
            Err(ValueError::TimestampRange { .. })
        ));
        assert_eq!(
            convert(
                Kind::ZonedTimestamp,
                Value::String("2026-11-24T10:56:33.142906+01:00".into())
            )
            .unwrap(),
            FieldValue::TimestampMicros(1_795_514_193_142_906)
        );
        assert_eq!(
            convert(
                Kind::ZonedTimestamp,
                Value::String("2026-11-24T09:56:33.142906Z".into())
            )
            .unwrap(),
            FieldValue::TimestampMicros(1_795_514_193_142_906)
        );
        let err = convert(Kind::ZonedTimestamp, Value::String("yesterday".into())).unwrap_err();
        assert_eq!(err.to_string(), "invalid zoned timestamp \"yesterday\"");
    }

    #[test]
    fn placeholders_nulls_and_plain_types() {
        assert_eq!(
            convert(Kind::String, nullable(Value::String(UNAVAILABLE.into()))).unwrap(),
            FieldValue::Unavailable
        );
        assert_eq!(
            convert(Kind::Json, Value::String(UNAVAILABLE.into())).unwrap(),
            FieldValue::Unavailable
        );
        assert_eq!(
            convert(Kind::Bytes, Value::Bytes(UNAVAILABLE.as_bytes().to_vec())).unwrap(),
            FieldValue::Unavailable
        );
        assert_eq!(
            convert(
                Kind::Other,
                Value::Array(vec![Value::String(UNAVAILABLE.into())])
            )
            .unwrap(),
            FieldValue::Unavailable
        );
        assert_eq!(
            convert(Kind::Int, Value::Union(0, Box::new(Value::Null))).unwrap(),
            FieldValue::Null
        );
        assert_eq!(
            convert(Kind::Int, Value::Int(-3)).unwrap(),
            FieldValue::Int(-3)
        );
        assert_eq!(
            convert(Kind::Long, Value::Long(1 << 40)).unwrap(),
            FieldValue::Int(1 << 40)
        );
        assert_eq!(
            convert(Kind::Float, Value::Float(0.5)).unwrap(),
            FieldValue::Float(0.5)
        );
        assert_eq!(
            convert(Kind::Boolean, Value::Boolean(true)).unwrap(),
            FieldValue::Boolean(true)
        );
        assert_eq!(
            convert(Kind::String, Value::Enum(1, "b".into())).unwrap(),
            FieldValue::String("b".into())
        );
        assert_eq!(
            convert(Kind::Json, Value::String("{}".into())).unwrap(),
            FieldValue::Json("{}".into())
        );
        assert_eq!(
            convert(Kind::Date, Value::Int(20_000)).unwrap(),
            FieldValue::Date(20_000)
        );
        assert_eq!(
            convert(
                Kind::Other,
                Value::Array(vec![Value::String("a".into()), Value::String("b".into())])
            )
            .unwrap(),
            FieldValue::Json(r#"["a","b"]"#.into())
        );
        let err = convert(Kind::Boolean, Value::Int(1)).unwrap_err();
        assert_eq!(err.to_string(), "expected boolean, found avro int");
    }

    #[test]
    fn decimals() {
        assert_eq!(
            convert(Kind::Decimal { scale: 2 }, Value::Bytes(vec![0x04, 0xe2])).unwrap(),
            FieldValue::Decimal {
                unscaled: vec![0x04, 0xe2],
                scale: 2
            }
        );
        assert_eq!(
            convert(
                Kind::Decimal { scale: 2 },
                Value::Decimal(apache_avro::Decimal::from(vec![0xff, 0x38]))
            )
            .unwrap(),
            FieldValue::Decimal {
                unscaled: vec![0xff, 0x38],
                scale: 2
            }
        );
        let vsd = Value::Record(vec![
            ("scale".into(), Value::Int(3)),
            ("value".into(), Value::Bytes(vec![0x01])),
        ]);
        assert_eq!(
            convert(Kind::VariableScaleDecimal, nullable(vsd)).unwrap(),
            FieldValue::Decimal {
                unscaled: vec![0x01],
                scale: 3
            }
        );
    }
}
