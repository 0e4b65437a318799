//! The Kafka Connect schema that JsonConverter embeds with `schemas.enable=true`
//! (`{"type": "struct", "fields": [{"field": "id", "type": "int32", "name": ..., "parameters":
//! {...}}]}`) read into the same [`RowSchema`] the Avro path derives from its writer schema:
//! Connect's types and the semantic `name`s (`io.debezium.time.MicroTimestamp`,
//! `org.apache.kafka.connect.data.Decimal` with `parameters.scale`, ...) give the same
//! [`Kind`]s, so a column decodes to the same value through either converter.

use serde_json::{Map, Value as Json};

use crate::decode::schema::{semantic_kind, Kind, RowSchema, ShapeError};

/// Analyses a key schema: a struct whose fields are the primary-key columns.
pub fn key_schema(root: &Json) -> Result<RowSchema, ShapeError> {
    let root = as_struct(root).ok_or(ShapeError::NotARecord)?;
    Ok(row_of(root))
}

/// Analyses a Debezium envelope schema: the row columns from `after` (or `before`).
pub fn envelope_schema(root: &Json) -> Result<RowSchema, ShapeError> {
    let envelope = as_struct(root).ok_or(ShapeError::NotARecord)?;
    if field(envelope, "op").is_none() {
        return Err(ShapeError::MissingField("op"));
    }
    let (which, row) = match (field(envelope, "after"), field(envelope, "before")) {
        (Some(after), _) => ("after", after),
        (None, Some(before)) => ("before", before),
        (None, None) => return Err(ShapeError::MissingField("after")),
    };
    let row = as_struct(row).ok_or(ShapeError::RowNotARecord(which))?;
    Ok(row_of(row))
}

fn as_struct(node: &Json) -> Option<&Map<String, Json>> {
    node.as_object()
        .filter(|o| o.get("type").and_then(Json::as_str) == Some("struct"))
}

fn fields(record: &Map<String, Json>) -> impl Iterator<Item = &Map<String, Json>> {
    record
        .get("fields")
        .and_then(Json::as_array)
        .into_iter()
        .flatten()
        .filter_map(Json::as_object)
}

/// A field of a struct; in a Connect schema the field is its own schema (`type`, `fields`).
fn field<'a>(record: &'a Map<String, Json>, name: &str) -> Option<&'a Json> {
    record
        .get("fields")?
        .as_array()?
        .iter()
        .find(|f| f.get("field").and_then(Json::as_str) == Some(name))
}

fn row_of(record: &Map<String, Json>) -> RowSchema {
    RowSchema::new(
        fields(record)
            .filter_map(|f| Some((f.get("field")?.as_str()?.to_owned(), kind_of(f))))
            .collect(),
    )
}

/// The kind of one field's values: its semantic name first, then its Connect type.
fn kind_of(schema: &Map<String, Json>) -> Kind {
    if let Some(kind) = schema
        .get("name")
        .and_then(Json::as_str)
        .and_then(|name| semantic_kind(name, || scale(schema)))
    {
        return kind;
    }
    match schema.get("type").and_then(Json::as_str) {
        Some("int8" | "int16" | "int32") => Kind::Int,
        Some("int64") => Kind::Long,
        // JsonConverter's names for Connect's float32 and float64.
        Some("float") => Kind::Float,
        Some("double") => Kind::Double,
        Some("boolean") => Kind::Boolean,
        Some("string") => Kind::String,
        Some("bytes") => Kind::Bytes,
        _ => Kind::Other,
    }
}

/// `parameters.scale` of a Connect `Decimal` (a string, as Connect writes parameters).
fn scale(schema: &Map<String, Json>) -> Option<u32> {
    match schema.get("parameters")?.get("scale")? {
        Json::String(s) => s.parse().ok(),
        Json::Number(n) => n.as_u64().and_then(|n| u32::try_from(n).ok()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use mapping::ColumnType;
    use serde_json::json;

    use super::*;
    use crate::decode::schema::TimeUnit;

    fn column(field: &str, ty: &str, name: Option<&str>) -> Json {
        let mut c = json!({"field": field, "type": ty, "optional": true});
        if let Some(name) = name {
            c["name"] = json!(name);
        }
        c
    }

    #[test]
    fn connect_types_and_names() {
        let mut amount = column(
            "amount",
            "bytes",
            Some("org.apache.kafka.connect.data.Decimal"),
        );
        amount["parameters"] = json!({"scale": "2", "connect.decimal.precision": "10"});
        let row = json!({"type": "struct", "optional": true, "name": "t.Value", "fields": [
            column("id", "int32", None),
            column("small", "int16", None),
            column("big", "int64", None),
            column("f", "float", None),
            column("d", "double", None),
            column("ok", "boolean", None),
            column("s", "string", None),
            column("e", "string", Some("io.debezium.data.Enum")),
            column("j", "string", Some("io.debezium.data.Json")),
            column("ts", "int64", Some("io.debezium.time.Timestamp")),
            column("mts", "int64", Some("io.debezium.time.MicroTimestamp")),
            column("nts", "int64", Some("io.debezium.time.NanoTimestamp")),
            column("zts", "string", Some("io.debezium.time.ZonedTimestamp")),
            column("day", "int32", Some("io.debezium.time.Date")),
            column("t", "int64", Some("io.debezium.time.MicroTime")),
            amount,
            {"field": "vsd", "type": "struct", "name": "io.debezium.data.VariableScaleDecimal",
             "fields": [{"field": "scale", "type": "int32"}, {"field": "value", "type": "bytes"}]},
            column("raw", "bytes", None),
            {"field": "tags", "type": "array", "items": {"type": "string"}},
        ]});
        let envelope = json!({"type": "struct", "name": "t.Envelope", "fields": [
            {"field": "before", "type": "struct", "fields": []},
            {"field": "after", "type": "struct", "fields": row["fields"]},
            {"field": "op", "type": "string"},
        ]});
        let schema = envelope_schema(&envelope).unwrap();
        let kinds: Vec<(&str, Kind)> = schema
            .columns
            .iter()
            .map(|(n, k)| (n.as_str(), *k))
            .collect();
        assert_eq!(
            kinds,
            vec![
                ("id", Kind::Int),
                ("small", Kind::Int),
                ("big", Kind::Long),
                ("f", Kind::Float),
                ("d", Kind::Double),
                ("ok", Kind::Boolean),
                ("s", Kind::String),
                ("e", Kind::String),
                ("j", Kind::Json),
                ("ts", Kind::Timestamp(TimeUnit::Millis)),
                ("mts", Kind::Timestamp(TimeUnit::Micros)),
                ("nts", Kind::Timestamp(TimeUnit::Nanos)),
                ("zts", Kind::ZonedTimestamp),
                ("day", Kind::Date),
                ("t", Kind::Long),
                ("amount", Kind::Decimal { scale: 2 }),
                ("vsd", Kind::VariableScaleDecimal),
                ("raw", Kind::Bytes),
                ("tags", Kind::Other),
            ]
        );
        assert_eq!(schema.types[15], ("amount".to_owned(), ColumnType::Decimal));
        assert_eq!(key_schema(&row).unwrap().columns.len(), 19);
    }

    #[test]
    fn shape_errors() {
        assert_eq!(
            envelope_schema(&json!({"type": "string"})).unwrap_err(),
            ShapeError::NotARecord
        );
        let no_op = json!({"type": "struct", "fields": [{"field": "after", "type": "struct", "fields": []}]});
        assert_eq!(
            envelope_schema(&no_op).unwrap_err(),
            ShapeError::MissingField("op")
        );
        let flat = json!({"type": "struct", "fields": [
            {"field": "after", "type": "string"}, {"field": "op", "type": "string"}]});
        assert_eq!(
            envelope_schema(&flat).unwrap_err(),
            ShapeError::RowNotARecord("after")
        );
    }
}
