//! JSON records (Avro's JSON shape with unions unwrapped, bytes as `\u00XX` strings, as in
//! the recorded samples) -> Confluent wire frames: magic byte, schema id, Avro body.

use std::collections::HashMap;

use apache_avro::types::Value;
use apache_avro::Schema;
use serde_json::Value as Json;

use super::LoadgenError;

/// Encodes JSON records to the Confluent wire format with one registered schema.
#[derive(Debug, Clone)]
pub struct WireEncoder {
    id: u32,
    schema: Schema,
    named: HashMap<String, Schema>,
}

impl WireEncoder {
    /// An encoder for the schema registered as `id`.
    pub fn new(id: u32, schema_text: &str) -> Result<WireEncoder, LoadgenError> {
        let schema = Schema::parse_str(schema_text).map_err(LoadgenError::Schema)?;
        let mut named = HashMap::new();
        collect_named(&schema, &mut named);
        Ok(WireEncoder { id, schema, named })
    }

    /// The schema id written into each frame.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// Magic byte, schema id, then the Avro body of `record`.
    pub fn encode(&self, record: &Json) -> Result<Vec<u8>, LoadgenError> {
        let value = to_avro(&self.schema, &self.named, record, "$")?;
        let body = apache_avro::writer::datum::GenericDatumWriter::builder(&self.schema)
            .build()
            .and_then(|writer| writer.write_value_to_vec(value))
            .map_err(LoadgenError::Encode)?;
        let mut frame = Vec::with_capacity(5 + body.len());
        frame.push(0);
        frame.extend_from_slice(&self.id.to_be_bytes());
        frame.extend_from_slice(&body);
        Ok(frame)
    }
}

fn collect_named(schema: &Schema, named: &mut HashMap<String, Schema>) {
    match schema {
        Schema::Record(record) => {
            named.insert(record.name.fullname(None), schema.clone());
            for field in &record.fields {
                collect_named(&field.schema, named);
            }
        }
        Schema::Enum(e) => {
            named.insert(e.name.fullname(None), schema.clone());
        }
        Schema::Fixed(f) => {
            named.insert(f.name.fullname(None), schema.clone());
        }
        Schema::Union(union) => union
            .variants()
            .iter()
            .for_each(|v| collect_named(v, named)),
        Schema::Array(array) => collect_named(&array.items, named),
        Schema::Map(map) => collect_named(&map.types, named),
        _ => {}
    }
}

fn shape(path: &str, problem: impl Into<String>) -> LoadgenError {
    LoadgenError::Shape {
        path: path.to_owned(),
        problem: problem.into(),
    }
}

/// Whether `json` can be a value of `schema` (for picking a union branch).
fn fits(schema: &Schema, named: &HashMap<String, Schema>, json: &Json) -> bool {
    match (schema, json) {
        (Schema::Null, Json::Null) => true,
        (Schema::Boolean, Json::Bool(_)) => true,
        (Schema::Int | Schema::Date | Schema::TimeMillis, Json::Number(n)) => n.is_i64(),
        (
            Schema::Long
            | Schema::TimeMicros
            | Schema::TimestampMillis
            | Schema::TimestampMicros
            | Schema::TimestampNanos
            | Schema::LocalTimestampMillis
            | Schema::LocalTimestampMicros
            | Schema::LocalTimestampNanos,
            Json::Number(n),
        ) => n.is_i64(),
        (Schema::Float | Schema::Double, Json::Number(_)) => true,
        (Schema::String | Schema::Uuid(_) | Schema::Enum(_), Json::String(_)) => true,
        (Schema::Bytes | Schema::Fixed(_) | Schema::Decimal(_), Json::String(_)) => true,
        (Schema::Record(_) | Schema::Map(_), Json::Object(_)) => true,
        (Schema::Array(_), Json::Array(_)) => true,
        (Schema::Ref { name }, _) => named
            .get(&name.fullname(None))
            .is_some_and(|s| fits(s, named, json)),
        _ => false,
    }
}

/// JSON (unions unwrapped, bytes as `\u00XX` strings) -> Avro value of `schema`.
fn to_avro(
    schema: &Schema,
    named: &HashMap<String, Schema>,
    json: &Json,
    path: &str,
) -> Result<Value, LoadgenError> {
    let int = |json: &Json| {
        json.as_i64()
            .ok_or_else(|| shape(path, format!("expected an integer, got {json}")))
    };
    Ok(match schema {
        Schema::Null => Value::Null,
        Schema::Boolean => Value::Boolean(
            json.as_bool()
                .ok_or_else(|| shape(path, "expected a boolean"))?,
        ),
        Schema::Int => {
            Value::Int(i32::try_from(int(json)?).map_err(|_| shape(path, "int out of range"))?)
        }
        Schema::Date => {
            Value::Date(i32::try_from(int(json)?).map_err(|_| shape(path, "date out of range"))?)
        }
        Schema::Long => Value::Long(int(json)?),
        Schema::TimestampMicros => Value::TimestampMicros(int(json)?),
        Schema::TimestampMillis => Value::TimestampMillis(int(json)?),
        Schema::Float => Value::Float(
            json.as_f64()
                .ok_or_else(|| shape(path, "expected a number"))? as f32,
        ),
        Schema::Double => Value::Double(
            json.as_f64()
                .ok_or_else(|| shape(path, "expected a number"))?,
        ),
        Schema::String => Value::String(
            json.as_str()
                .ok_or_else(|| shape(path, format!("expected a string, got {json}")))?
                .to_owned(),
        ),
        Schema::Bytes => Value::Bytes(
            json.as_str()
                .ok_or_else(|| shape(path, "expected bytes as a string"))?
                .chars()
                .map(|c| u8::try_from(u32::from(c)).map_err(|_| shape(path, "byte above 255")))
                .collect::<Result<_, _>>()?,
        ),
        Schema::Union(union) => {
            let (index, variant) = union
                .variants()
                .iter()
                .enumerate()
                .find(|(_, v)| fits(v, named, json))
                .ok_or_else(|| shape(path, format!("no union branch fits {json}")))?;
            let index = u32::try_from(index).map_err(|_| shape(path, "union too large"))?;
            Value::Union(index, Box::new(to_avro(variant, named, json, path)?))
        }
        Schema::Record(record) => {
            let object = json
                .as_object()
                .ok_or_else(|| shape(path, "expected an object"))?;
            let mut fields = Vec::with_capacity(record.fields.len());
            for field in &record.fields {
                let child = format!("{path}.{}", field.name);
                let value = match object.get(&field.name) {
                    Some(v) => to_avro(&field.schema, named, v, &child)?,
                    None => match &field.default {
                        Some(default) => to_avro(&field.schema, named, default, &child)?,
                        None => return Err(shape(&child, "missing field without default")),
                    },
                };
                fields.push((field.name.clone(), value));
            }
            Value::Record(fields)
        }
        Schema::Ref { name } => {
            let target = named.get(&name.fullname(None)).ok_or_else(|| {
                shape(path, format!("unknown named type {}", name.fullname(None)))
            })?;
            to_avro(target, named, json, path)?
        }
        Schema::Enum(e) => {
            let symbol = json
                .as_str()
                .ok_or_else(|| shape(path, "expected an enum symbol"))?;
            let index = e
                .symbols
                .iter()
                .position(|s| s == symbol)
                .ok_or_else(|| shape(path, format!("unknown enum symbol {symbol}")))?;
            Value::Enum(u32::try_from(index).unwrap_or(u32::MAX), symbol.to_owned())
        }
        Schema::Array(array) => Value::Array(
            json.as_array()
                .ok_or_else(|| shape(path, "expected an array"))?
                .iter()
                .map(|item| to_avro(&array.items, named, item, path))
                .collect::<Result<_, _>>()?,
        ),
        Schema::Map(map) => Value::Map(
            json.as_object()
                .ok_or_else(|| shape(path, "expected an object"))?
                .iter()
                .map(|(k, v)| Ok((k.clone(), to_avro(&map.types, named, v, path)?)))
                .collect::<Result<_, LoadgenError>>()?,
        ),
        other => return Err(shape(path, format!("unsupported schema {other:?}"))),
    })
}
