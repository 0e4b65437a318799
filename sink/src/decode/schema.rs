//! Reads a writer schema's JSON (not apache-avro's parsed schema, which drops the custom
//! attributes of primitive types) to find out what each column means: Debezium's
//! `connect.name` semantic types, Connect's decimal scale, Avro logical types. The result,
//! one [`Kind`] per column, is computed once per schema id and drives the value conversion
//! in [`super::value`].

use std::collections::HashMap;
use std::sync::Arc;

use mapping::ColumnType;
use serde_json::{Map, Value as Json};

/// How the Avro values of one column are turned into a [`mapping::change::FieldValue`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `boolean`.
    Boolean,
    /// `int` (also Debezium `Time`, `Year`, Avro `time-millis`).
    Int,
    /// `long` (also Debezium `MicroTime`, `NanoTime`, Avro `time-micros`).
    Long,
    /// `float`.
    Float,
    /// `double`.
    Double,
    /// `string`, Avro `enum`, `io.debezium.data.Enum`, `Uuid`, ...
    String,
    /// `io.debezium.data.Json`: JSON text.
    Json,
    /// A timestamp as a number of `TimeUnit`s since the epoch, UTC.
    Timestamp(TimeUnit),
    /// `io.debezium.time.ZonedTimestamp`: an ISO-8601 string with an offset.
    ZonedTimestamp,
    /// Days since the epoch (`io.debezium.time.Date`, Connect `Date`, Avro `date`).
    Date,
    /// Fixed-scale decimal: unscaled big-endian two's complement bytes.
    Decimal {
        /// Digits after the decimal point.
        scale: u32,
    },
    /// `io.debezium.data.VariableScaleDecimal`: a record `{scale: int, value: bytes}`.
    VariableScaleDecimal,
    /// `bytes` or `fixed`.
    Bytes,
    /// Anything else (arrays, maps, records, multi-type unions): rendered as JSON text.
    Other,
}

/// Unit of a numeric timestamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeUnit {
    /// Milliseconds (`io.debezium.time.Timestamp`, Connect `Timestamp`, `timestamp-millis`).
    Millis,
    /// Microseconds (`io.debezium.time.MicroTimestamp`, `timestamp-micros`).
    Micros,
    /// Nanoseconds (`io.debezium.time.NanoTimestamp`, `timestamp-nanos`).
    Nanos,
}

impl Kind {
    /// The type recorded in `sink:types:{mapping}`.
    pub fn column_type(self) -> ColumnType {
        match self {
            Kind::Boolean => ColumnType::Boolean,
            Kind::Int => ColumnType::Int,
            Kind::Long => ColumnType::Long,
            Kind::Float => ColumnType::Float,
            Kind::Double => ColumnType::Double,
            Kind::String => ColumnType::String,
            Kind::Json | Kind::Other => ColumnType::Json,
            Kind::Timestamp(_) | Kind::ZonedTimestamp => ColumnType::Timestamp,
            Kind::Date => ColumnType::Date,
            Kind::Decimal { .. } | Kind::VariableScaleDecimal => ColumnType::Decimal,
            Kind::Bytes => ColumnType::Bytes,
        }
    }
}

/// The columns of a record (a Kafka key, or the `before`/`after` row of an envelope).
#[derive(Debug)]
pub struct RowSchema {
    /// Column names and kinds, in schema order.
    pub columns: Vec<(String, Kind)>,
    /// The same columns as reported to the caller.
    pub types: Arc<[(String, ColumnType)]>,
}

impl RowSchema {
    pub(super) fn new(columns: Vec<(String, Kind)>) -> Self {
        let types = columns
            .iter()
            .map(|(name, kind)| (name.clone(), kind.column_type()))
            .collect();
        Self { columns, types }
    }
}

/// Why a schema is not what the decoder expects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShapeError {
    /// The top-level schema is not a record.
    NotARecord,
    /// A field the envelope needs is missing.
    MissingField(&'static str),
    /// `before`/`after` is not a (nullable) record.
    RowNotARecord(&'static str),
}

impl std::fmt::Display for ShapeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ShapeError::NotARecord => f.write_str("top-level schema is not a record"),
            ShapeError::MissingField(name) => write!(f, "no `{name}` field"),
            ShapeError::RowNotARecord(name) => write!(f, "`{name}` is not a nullable record"),
        }
    }
}

/// Named types (records, enums, fixed) of one schema by full name.
pub(super) struct Names<'a> {
    defs: HashMap<String, (&'a Map<String, Json>, Option<String>)>,
}

impl<'a> Names<'a> {
    pub(super) fn collect(root: &'a Json) -> Self {
        let mut names = Names {
            defs: HashMap::new(),
        };
        names.walk(root, None);
        names
    }

    fn walk(&mut self, node: &'a Json, ns: Option<&str>) {
        match node {
            Json::Array(branches) => branches.iter().for_each(|b| self.walk(b, ns)),
            Json::Object(obj) => match obj.get("type") {
                Some(Json::String(t))
                    if matches!(t.as_str(), "record" | "error" | "enum" | "fixed") =>
                {
                    let Some((full, inner_ns)) = full_name(obj, ns) else {
                        return;
                    };
                    self.defs.insert(full, (obj, inner_ns.clone()));
                    if let Some(Json::Array(fields)) = obj.get("fields") {
                        for field in fields {
                            if let Some(ty) = field.get("type") {
                                self.walk(ty, inner_ns.as_deref());
                            }
                        }
                    }
                }
                Some(Json::String(t)) if t == "array" => {
                    if let Some(items) = obj.get("items") {
                        self.walk(items, ns);
                    }
                }
                Some(Json::String(t)) if t == "map" => {
                    if let Some(values) = obj.get("values") {
                        self.walk(values, ns);
                    }
                }
                Some(inner) => self.walk(inner, ns),
                None => {}
            },
            _ => {}
        }
    }

    /// The definition a type name refers to, with its namespace.
    pub(super) fn resolve(
        &self,
        name: &str,
        ns: Option<&str>,
    ) -> Option<(&'a Map<String, Json>, Option<String>)> {
        let qualified = match ns {
            Some(ns) if !name.contains('.') && !ns.is_empty() => Some(format!("{ns}.{name}")),
            _ => None,
        };
        qualified
            .and_then(|q| self.defs.get(&q))
            .or_else(|| self.defs.get(name))
            .cloned()
    }
}

/// The full name of a named type and the namespace its fields are resolved in.
pub(super) fn full_name(
    obj: &Map<String, Json>,
    ns: Option<&str>,
) -> Option<(String, Option<String>)> {
    let name = obj.get("name")?.as_str()?;
    if let Some((space, _)) = name.rsplit_once('.') {
        return Some((name.to_owned(), Some(space.to_owned())));
    }
    let space = match obj.get("namespace") {
        Some(Json::String(s)) => Some(s.as_str()),
        _ => ns,
    };
    match space {
        Some(s) if !s.is_empty() => Some((format!("{s}.{name}"), Some(s.to_owned()))),
        _ => Some((name.to_owned(), None)),
    }
}

/// The kind of the values a type node describes; a nullable union is its non-null branch.
fn kind_of(node: &Json, ns: Option<&str>, names: &Names<'_>) -> Kind {
    match node {
        Json::String(name) => match name.as_str() {
            "boolean" => Kind::Boolean,
            "int" => Kind::Int,
            "long" => Kind::Long,
            "float" => Kind::Float,
            "double" => Kind::Double,
            "string" => Kind::String,
            "bytes" => Kind::Bytes,
            "null" => Kind::Other,
            other => match names.resolve(other, ns) {
                Some((def, def_ns)) => kind_of_object(def, def_ns.as_deref(), names),
                None => Kind::Other,
            },
        },
        Json::Array(branches) => {
            let mut non_null = branches.iter().filter(|b| b.as_str() != Some("null"));
            match (non_null.next(), non_null.next()) {
                (Some(only), None) => kind_of(only, ns, names),
                _ => Kind::Other,
            }
        }
        Json::Object(obj) => kind_of_object(obj, ns, names),
        _ => Kind::Other,
    }
}

fn kind_of_object(obj: &Map<String, Json>, ns: Option<&str>, names: &Names<'_>) -> Kind {
    if let Some(kind) = obj
        .get("connect.name")
        .and_then(Json::as_str)
        .and_then(|n| connect_kind(n, obj))
    {
        return kind;
    }
    if let Some(kind) = obj
        .get("logicalType")
        .and_then(Json::as_str)
        .and_then(|l| logical_kind(l, obj))
    {
        return kind;
    }
    match obj.get("type") {
        Some(Json::String(t)) => match t.as_str() {
            "record" | "error" | "array" | "map" => Kind::Other,
            "enum" => Kind::String,
            "fixed" => Kind::Bytes,
            _ => kind_of(&Json::String(t.clone()), ns, names),
        },
        Some(inner) => kind_of(inner, ns, names),
        None => Kind::Other,
    }
}

/// Debezium / Kafka Connect semantic types (`connect.name`).
fn connect_kind(name: &str, obj: &Map<String, Json>) -> Option<Kind> {
    semantic_kind(name, || connect_scale(obj).or_else(|| avro_scale(obj)))
}

/// The kind of a Debezium / Kafka Connect semantic type name, for Avro (`connect.name`) and
/// JSON (the Connect schema's `name`) alike; `scale` gives a `Decimal`'s scale.
pub(super) fn semantic_kind(name: &str, scale: impl FnOnce() -> Option<u32>) -> Option<Kind> {
    Some(match name {
        "io.debezium.time.Timestamp" | "org.apache.kafka.connect.data.Timestamp" => {
            Kind::Timestamp(TimeUnit::Millis)
        }
        "io.debezium.time.MicroTimestamp" => Kind::Timestamp(TimeUnit::Micros),
        "io.debezium.time.NanoTimestamp" => Kind::Timestamp(TimeUnit::Nanos),
        "io.debezium.time.ZonedTimestamp" => Kind::ZonedTimestamp,
        "io.debezium.time.Date" | "org.apache.kafka.connect.data.Date" => Kind::Date,
        "io.debezium.data.Json" => Kind::Json,
        "io.debezium.data.VariableScaleDecimal" => Kind::VariableScaleDecimal,
        "org.apache.kafka.connect.data.Decimal" => Kind::Decimal {
            scale: scale().unwrap_or(0),
        },
        _ => return None,
    })
}

/// Avro logical types.
pub(super) fn logical_kind(logical: &str, obj: &Map<String, Json>) -> Option<Kind> {
    Some(match logical {
        "timestamp-millis" | "local-timestamp-millis" => Kind::Timestamp(TimeUnit::Millis),
        "timestamp-micros" | "local-timestamp-micros" => Kind::Timestamp(TimeUnit::Micros),
        "timestamp-nanos" | "local-timestamp-nanos" => Kind::Timestamp(TimeUnit::Nanos),
        "date" => Kind::Date,
        "decimal" => Kind::Decimal {
            scale: avro_scale(obj).unwrap_or(0),
        },
        "uuid" => Kind::String,
        "time-millis" => Kind::Int,
        "time-micros" => Kind::Long,
        _ => return None,
    })
}

/// `connect.parameters.scale`, a string in Connect's schema parameters.
fn connect_scale(obj: &Map<String, Json>) -> Option<u32> {
    match obj.get("connect.parameters")?.get("scale")? {
        Json::String(s) => s.parse().ok(),
        Json::Number(n) => n.as_u64().and_then(|n| u32::try_from(n).ok()),
        _ => None,
    }
}

/// The Avro `scale` attribute of a `decimal` logical type.
fn avro_scale(obj: &Map<String, Json>) -> Option<u32> {
    obj.get("scale")?
        .as_u64()
        .and_then(|n| u32::try_from(n).ok())
}

/// The columns of a record definition.
fn row_of(record: &Map<String, Json>, ns: Option<&str>, names: &Names<'_>) -> RowSchema {
    let columns = record
        .get("fields")
        .and_then(Json::as_array)
        .map(|fields| {
            fields
                .iter()
                .filter_map(|field| {
                    let name = field.get("name")?.as_str()?;
                    let kind = field
                        .get("type")
                        .map_or(Kind::Other, |t| kind_of(t, ns, names));
                    Some((name.to_owned(), kind))
                })
                .collect()
        })
        .unwrap_or_default();
    RowSchema::new(columns)
}

/// The record a (possibly nullable) type node stands for.
pub(super) fn record_of<'a>(
    node: &'a Json,
    ns: Option<&str>,
    names: &Names<'a>,
) -> Option<(&'a Map<String, Json>, Option<String>)> {
    match node {
        Json::Array(branches) => {
            let mut non_null = branches.iter().filter(|b| b.as_str() != Some("null"));
            match (non_null.next(), non_null.next()) {
                (Some(only), None) => record_of(only, ns, names),
                _ => None,
            }
        }
        Json::String(name) => names.resolve(name, ns).filter(|(def, _)| is_record(def)),
        Json::Object(obj) if is_record(obj) => {
            full_name(obj, ns).map(|(_, inner_ns)| (obj, inner_ns))
        }
        Json::Object(obj) => record_of(obj.get("type")?, ns, names),
        _ => None,
    }
}

pub(super) fn is_record(obj: &Map<String, Json>) -> bool {
    matches!(
        obj.get("type").and_then(Json::as_str),
        Some("record" | "error")
    )
}

/// The top-level record of a schema and its field list.
pub(super) fn top_record(root: &Json) -> Result<(&Map<String, Json>, Option<String>), ShapeError> {
    let obj = root
        .as_object()
        .filter(|o| is_record(o))
        .ok_or(ShapeError::NotARecord)?;
    let (_, ns) = full_name(obj, None).ok_or(ShapeError::NotARecord)?;
    Ok((obj, ns))
}

pub(super) fn field<'a>(record: &'a Map<String, Json>, name: &str) -> Option<&'a Json> {
    record
        .get("fields")?
        .as_array()?
        .iter()
        .find(|f| f.get("name").and_then(Json::as_str) == Some(name))?
        .get("type")
}

/// Analyses a key schema: a record whose fields are the primary-key columns.
pub fn key_schema(root: &Json) -> Result<RowSchema, ShapeError> {
    let names = Names::collect(root);
    let (record, ns) = top_record(root)?;
    Ok(row_of(record, ns.as_deref(), &names))
}

/// Analyses a Debezium envelope value schema: the row columns from `after` (or `before`).
pub fn envelope_schema(root: &Json) -> Result<RowSchema, ShapeError> {
    let names = Names::collect(root);
    let (envelope, ns) = top_record(root)?;
    if field(envelope, "op").is_none() {
        return Err(ShapeError::MissingField("op"));
    }
    let (which, row_type) = match (field(envelope, "after"), field(envelope, "before")) {
        (Some(after), _) => ("after", after),
        (None, Some(before)) => ("before", before),
        (None, None) => return Err(ShapeError::MissingField("after")),
    };
    let (record, row_ns) =
        record_of(row_type, ns.as_deref(), &names).ok_or(ShapeError::RowNotARecord(which))?;
    Ok(row_of(record, row_ns.as_deref(), &names))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn kinds(row: &RowSchema) -> Vec<(&str, Kind)> {
        row.columns.iter().map(|(n, k)| (n.as_str(), *k)).collect()
    }

    #[test]
    fn debezium_and_avro_types() {
        let schema: Json = serde_json::from_str(
            r#"{
          "type": "record", "name": "Envelope", "namespace": "cdc.public.t",
          "fields": [
            {"name": "before", "type": ["null", {"type": "record", "name": "Value", "fields": [
              {"name": "id", "type": {"type": "int", "connect.default": 0}, "default": 0},
              {"name": "big", "type": "long"},
              {"name": "ok", "type": ["null", "boolean"]},
              {"name": "f", "type": "float"},
              {"name": "d", "type": ["null", "double"]},
              {"name": "s", "type": [{"type": "string", "connect.default": "x"}, "null"]},
              {"name": "e", "type": {"type": "string", "connect.name": "io.debezium.data.Enum"}},
              {"name": "u", "type": {"type": "string", "connect.name": "io.debezium.data.Uuid"}},
              {"name": "j", "type": {"type": "string", "connect.name": "io.debezium.data.Json"}},
              {"name": "ts", "type": {"type": "long", "connect.name": "io.debezium.time.Timestamp"}},
              {"name": "mts", "type": ["null", {"type": "long", "connect.name": "io.debezium.time.MicroTimestamp"}]},
              {"name": "nts", "type": {"type": "long", "connect.name": "io.debezium.time.NanoTimestamp"}},
              {"name": "zts", "type": {"type": "string", "connect.name": "io.debezium.time.ZonedTimestamp"}},
              {"name": "day", "type": {"type": "int", "connect.name": "io.debezium.time.Date"}},
              {"name": "amount", "type": {"type": "bytes", "scale": 2, "precision": 10, "logicalType": "decimal",
                 "connect.parameters": {"scale": "2", "connect.decimal.precision": "10"},
                 "connect.name": "org.apache.kafka.connect.data.Decimal"}},
              {"name": "vsd", "type": ["null", {"type": "record", "name": "VariableScaleDecimal",
                 "namespace": "io.debezium.data", "fields": [
                   {"name": "scale", "type": "int"}, {"name": "value", "type": "bytes"}],
                 "connect.name": "io.debezium.data.VariableScaleDecimal"}]},
              {"name": "ltm", "type": {"type": "long", "logicalType": "timestamp-millis"}},
              {"name": "ldate", "type": {"type": "int", "logicalType": "date"}},
              {"name": "ldec", "type": {"type": "bytes", "logicalType": "decimal", "precision": 9, "scale": 3}},
              {"name": "raw", "type": "bytes"},
              {"name": "tags", "type": ["null", {"type": "array", "items": "string"}]},
              {"name": "mood", "type": {"type": "enum", "name": "Mood", "symbols": ["a", "b"]}}
            ]}], "default": null},
            {"name": "after", "type": ["null", "Value"], "default": null},
            {"name": "op", "type": "string"}
          ]
        }"#,
        )
        .unwrap();
        let row = envelope_schema(&schema).unwrap();
        assert_eq!(
            kinds(&row),
            vec![
                ("id", Kind::Int),
                ("big", Kind::Long),
                ("ok", Kind::Boolean),
                ("f", Kind::Float),
                ("d", Kind::Double),
                ("s", Kind::String),
                ("e", Kind::String),
                ("u", Kind::String),
                ("j", Kind::Json),
                ("ts", Kind::Timestamp(TimeUnit::Millis)),
                ("mts", Kind::Timestamp(TimeUnit::Micros)),
                ("nts", Kind::Timestamp(TimeUnit::Nanos)),
                ("zts", Kind::ZonedTimestamp),
                ("day", Kind::Date),
                ("amount", Kind::Decimal { scale: 2 }),
                ("vsd", Kind::VariableScaleDecimal),
                ("ltm", Kind::Timestamp(TimeUnit::Millis)),
                ("ldate", Kind::Date),
                ("ldec", Kind::Decimal { scale: 3 }),
                ("raw", Kind::Bytes),
                ("tags", Kind::Other),
                ("mood", Kind::String),
            ]
        );
        assert_eq!(row.types[9], ("ts".to_owned(), ColumnType::Timestamp));
        assert_eq!(row.types[14], ("amount".to_owned(), ColumnType::Decimal));
    }

    #[test]
    fn shape_errors() {
        assert_eq!(
            envelope_schema(&json!("string")).unwrap_err(),
            ShapeError::NotARecord
        );
        let no_op = json!({"type": "record", "name": "E", "fields": [
            {"name": "after", "type": ["null", {"type": "record", "name": "V", "fields": []}]}]});
        assert_eq!(
            envelope_schema(&no_op).unwrap_err(),
            ShapeError::MissingField("op")
        );
        let flat = json!({"type": "record", "name": "E", "fields": [
            {"name": "after", "type": ["null", "string"]}, {"name": "op", "type": "string"}]});
        assert_eq!(
            envelope_schema(&flat).unwrap_err(),
            ShapeError::RowNotARecord("after")
        );
        assert_eq!(
            envelope_schema(&flat).unwrap_err().to_string(),
            "`after` is not a nullable record"
        );
    }

    #[test]
    fn key_columns() {
        let key = json!({"type": "record", "name": "Key", "namespace": "cdc.public.orders",
            "fields": [{"name": "id", "type": {"type": "int", "connect.default": 0}, "default": 0}],
            "connect.name": "cdc.public.orders.Key"});
        assert_eq!(kinds(&key_schema(&key).unwrap()), vec![("id", Kind::Int)]);
    }
}
