//! Debezium records written by Kafka Connect's JsonConverter: keys and values that start
//! with `{` (Confluent Avro starts with the magic byte 0, so no setting is needed).
//!
//! With `schemas.enable=true` a record is `{"schema": <Connect schema>, "payload": ...}`; the
//! schema gives each column's [`Kind`] ([`schema`]), analysed once per distinct schema text,
//! as the Avro path does per schema id. With `schemas.enable=false` the record is the payload
//! alone: a column's kind comes from the mapping's `types:` ([`mapping::DeclaredTypes`]), and
//! an undeclared column is taken as it comes ([`value::infer`]).
//!
//! Either way the result is the same [`Change`](mapping::change::Change) values as the Avro
//! path gives for the same change, so the planner and rendering do not know the difference.
//! Errors say what is wrong with the record; the caller adds topic, partition and offset.

pub mod schema;
pub mod value;

#[cfg(test)]
mod agree;

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use mapping::change::{Op, Row};
use mapping::{ColumnType, DeclaredType, Mapping};
use serde::de::{Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value as Json;
use thiserror::Error;

use super::schema::{Kind, RowSchema, ShapeError, TimeUnit};
use super::{Envelope, Part};
use value::JsonValueError;

/// Column names and types as reported to the caller.
type Columns = Arc<[(String, ColumnType)]>;

/// Whether a key or value is JSON rather than the Confluent wire format.
pub(super) fn is_json(bytes: &[u8]) -> bool {
    bytes.first() == Some(&b'{')
}

/// Why a JSON record could not be decoded.
#[derive(Debug, Error)]
pub enum JsonError {
    /// Not JSON, or not the shape of a Debezium key or envelope.
    #[error("json {part} is not a debezium {}", .part.schema_noun())]
    Syntax {
        /// Key or value.
        part: Part,
        /// serde_json's complaint (with line and column).
        #[source]
        source: serde_json::Error,
    },
    /// The embedded Connect schema is not what a Debezium key or envelope looks like.
    #[error("json {part} schema is not a debezium {}: {problem}", .part.schema_noun())]
    Shape {
        /// Key or value.
        part: Part,
        /// What is missing.
        problem: ShapeError,
    },
    /// The envelope has no `op`.
    #[error("json envelope has no `op`")]
    MissingOp,
    /// `op` is not one of `r c u d t`.
    #[error("unknown debezium op {0:?} in a json envelope")]
    UnknownOp(String),
    /// `r`, `c` or `u` without an `after` row.
    #[error("op {0:?} without an `after` row in a json envelope")]
    MissingAfter(&'static str),
    /// A column value could not be converted.
    #[error("json {part} column `{column}`")]
    Column {
        /// Key or value.
        part: Part,
        /// The column name.
        column: String,
        /// What is wrong.
        #[source]
        source: JsonValueError,
    },
}

/// A decoded JSON value.
pub(super) struct DecodedValue {
    /// The envelope; `None` for `"payload": null` (a tombstone).
    pub(super) envelope: Option<Envelope>,
    /// The row's columns and types; stable (the same `Arc`) while they do not change.
    pub(super) columns: Columns,
}

/// Decodes JSON keys and values, with the mappings' declared types by topic and the
/// embedded schemas' analysis cached by their text.
#[derive(Debug, Default)]
pub(super) struct JsonDecoder {
    /// Declared column kinds by topic.
    declared: HashMap<String, HashMap<String, Kind>>,
    keys: Mutex<HashMap<Box<str>, Arc<RowSchema>>>,
    envelopes: Mutex<HashMap<Box<str>, Arc<RowSchema>>>,
    /// Per topic: the columns of schemaless records seen so far with their types.
    seen: Mutex<HashMap<String, Columns>>,
}

/// `{"schema": ..., "payload": ...}`, exactly: what `schemas.enable=true` writes.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WithSchema<'a> {
    #[serde(borrow)]
    schema: &'a RawValue,
    #[serde(borrow)]
    payload: &'a RawValue,
}

/// The parts of a Debezium envelope payload the sink uses.
#[derive(Deserialize)]
struct Payload {
    #[serde(default)]
    op: Option<String>,
    #[serde(default)]
    before: Option<Fields>,
    #[serde(default)]
    after: Option<Fields>,
    #[serde(default)]
    source: Option<Source>,
    #[serde(default)]
    ts_ms: Option<i64>,
}

#[derive(Deserialize)]
struct Source {
    #[serde(default)]
    lsn: Option<i64>,
    #[serde(default)]
    ts_ms: Option<i64>,
}

/// A row object's fields in document order (JsonConverter writes schema order; serde_json's
/// own map would sort them).
struct Fields(Vec<(String, Json)>);

impl<'de> Deserialize<'de> for Fields {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct FieldsVisitor;

        impl<'de> Visitor<'de> for FieldsVisitor {
            type Value = Fields;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a row object")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Fields, A::Error> {
                let mut fields = Vec::with_capacity(map.size_hint().unwrap_or(8));
                while let Some(entry) = map.next_entry()? {
                    fields.push(entry);
                }
                Ok(Fields(fields))
            }
        }

        deserializer.deserialize_map(FieldsVisitor)
    }
}

impl JsonDecoder {
    /// A decoder knowing the `types:` of each mapping, by topic.
    pub(super) fn new(mappings: &[Mapping]) -> Self {
        let declared = mappings
            .iter()
            .filter(|m| !m.types.is_empty())
            .map(|m| {
                let kinds = m
                    .types
                    .iter()
                    .map(|(column, ty)| (column.clone(), declared_kind(*ty)))
                    .collect();
                (m.topic.clone(), kinds)
            })
            .collect();
        JsonDecoder {
            declared,
            ..JsonDecoder::default()
        }
    }

    /// Decodes a JSON key into its row.
    pub(super) fn key(&self, topic: &str, bytes: &[u8]) -> Result<Row, JsonError> {
        let part = Part::Key;
        match serde_json::from_slice::<WithSchema<'_>>(bytes) {
            Ok(framed) => {
                let schema = analysed(&self.keys, part, framed.schema, schema::key_schema)?;
                let fields = parse::<Fields>(part, framed.payload.get().as_bytes())?;
                typed_row(part, &schema, fields)
            }
            // Not `{"schema", "payload"}`: the payload alone (`schemas.enable=false`); what
            // is wrong with it, if anything, is said when it is read as such.
            Err(_) => {
                let fields = parse::<Fields>(part, bytes)?;
                Ok(self.schemaless_row(topic, part, fields)?.0)
            }
        }
    }

    /// Decodes a JSON value into its envelope.
    pub(super) fn value(&self, topic: &str, bytes: &[u8]) -> Result<DecodedValue, JsonError> {
        let part = Part::Value;
        if let Ok(framed) = serde_json::from_slice::<WithSchema<'_>>(bytes) {
            let schema = analysed(
                &self.envelopes,
                part,
                framed.schema,
                schema::envelope_schema,
            )?;
            let Some(payload) = parse::<Option<Payload>>(part, framed.payload.get().as_bytes())?
            else {
                return Ok(DecodedValue {
                    envelope: None,
                    columns: Arc::clone(&schema.types),
                });
            };
            let before = payload
                .before
                .map(|fields| typed_row(part, &schema, fields))
                .transpose()?;
            let after = payload
                .after
                .map(|fields| typed_row(part, &schema, fields))
                .transpose()?;
            return Ok(DecodedValue {
                envelope: Some(envelope(
                    payload.op,
                    before,
                    after,
                    payload.source,
                    payload.ts_ms,
                )?),
                columns: Arc::clone(&schema.types),
            });
        }
        // Not `{"schema", "payload"}`: the payload alone (`schemas.enable=false`).
        let payload = parse::<Payload>(part, bytes)?;
        let schemaless = |fields| self.schemaless_row(topic, part, fields);
        let (before, before_types) = payload.before.map(schemaless).transpose()?.unzip();
        let (after, after_types) = payload.after.map(schemaless).transpose()?.unzip();
        // The types of the newest image: `after`, or `before` of a delete.
        let seen = after_types.or(before_types).unwrap_or_default();
        Ok(DecodedValue {
            envelope: Some(envelope(
                payload.op,
                before,
                after,
                payload.source,
                payload.ts_ms,
            )?),
            columns: self.remember(topic, seen),
        })
    }

    /// A schemaless row: declared columns converted, the others as they come; with the types
    /// of its non-null columns.
    fn schemaless_row(
        &self,
        topic: &str,
        part: Part,
        fields: Fields,
    ) -> Result<(Row, Vec<(String, ColumnType)>), JsonError> {
        let declared = self.declared.get(topic);
        let mut row = Vec::with_capacity(fields.0.len());
        let mut types = Vec::with_capacity(fields.0.len());
        for (name, json) in fields.0 {
            match declared.and_then(|d| d.get(&name)) {
                Some(kind) => {
                    let value =
                        value::convert(*kind, json).map_err(|source| JsonError::Column {
                            part,
                            column: name.clone(),
                            source,
                        })?;
                    types.push((name.clone(), kind.column_type()));
                    row.push((name, value));
                }
                None => {
                    let (value, ty) = value::infer(json);
                    if let Some(ty) = ty {
                        types.push((name.clone(), ty));
                    }
                    row.push((name, value));
                }
            }
        }
        Ok((row, types))
    }

    /// The columns known for `topic` with `seen` merged in: the same `Arc` as before when
    /// `seen` adds nothing, so that the caller records types only when they change.
    fn remember(&self, topic: &str, seen: Vec<(String, ColumnType)>) -> Columns {
        let mut known = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        let columns = known
            .entry(topic.to_owned())
            .or_insert_with(|| Arc::from(Vec::new()));
        if seen.iter().all(|column| columns.contains(column)) {
            return Arc::clone(columns);
        }
        let mut merged: Vec<(String, ColumnType)> = columns
            .iter()
            .filter(|(name, _)| !seen.iter().any(|(new, _)| new == name))
            .cloned()
            .collect();
        merged.extend(seen);
        *columns = Arc::from(merged);
        Arc::clone(columns)
    }
}

/// The kind a declared type reads a JSON value as.
fn declared_kind(ty: DeclaredType) -> Kind {
    match ty {
        DeclaredType::String => Kind::String,
        DeclaredType::Int => Kind::Int,
        DeclaredType::Long => Kind::Long,
        DeclaredType::Float => Kind::Float,
        DeclaredType::Double => Kind::Double,
        DeclaredType::Boolean => Kind::Boolean,
        DeclaredType::Json => Kind::Json,
        DeclaredType::Bytes => Kind::Bytes,
        DeclaredType::Date => Kind::Date,
        DeclaredType::TimestampMillis => Kind::Timestamp(TimeUnit::Millis),
        DeclaredType::TimestampMicros => Kind::Timestamp(TimeUnit::Micros),
        DeclaredType::TimestampNanos => Kind::Timestamp(TimeUnit::Nanos),
        DeclaredType::ZonedTimestamp => Kind::ZonedTimestamp,
        DeclaredType::Decimal { scale } => Kind::Decimal { scale },
        DeclaredType::VariableScaleDecimal => Kind::VariableScaleDecimal,
    }
}

fn parse<'a, T: Deserialize<'a>>(part: Part, bytes: &'a [u8]) -> Result<T, JsonError> {
    serde_json::from_slice(bytes).map_err(|source| JsonError::Syntax { part, source })
}

/// The analysis of an embedded schema, computed once per distinct schema text.
fn analysed(
    cache: &Mutex<HashMap<Box<str>, Arc<RowSchema>>>,
    part: Part,
    schema: &RawValue,
    analyse: fn(&Json) -> Result<RowSchema, ShapeError>,
) -> Result<Arc<RowSchema>, JsonError> {
    let text = schema.get();
    if let Some(found) = cache
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get(text)
    {
        return Ok(Arc::clone(found));
    }
    let json: Json = parse(part, text.as_bytes())?;
    let row = Arc::new(analyse(&json).map_err(|problem| JsonError::Shape { part, problem })?);
    cache
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(text.into(), Arc::clone(&row));
    Ok(row)
}

/// A row with a schema: its columns in schema order, each converted by its kind; a column
/// the payload lacks is NULL.
fn typed_row(part: Part, schema: &RowSchema, fields: Fields) -> Result<Row, JsonError> {
    let in_order = fields.0.len() == schema.columns.len()
        && fields
            .0
            .iter()
            .zip(&schema.columns)
            .all(|((field, _), (column, _))| field == column);
    let values: Vec<Json> = if in_order {
        fields.0.into_iter().map(|(_, value)| value).collect()
    } else {
        let mut by_name: HashMap<String, Json> = fields.0.into_iter().collect();
        schema
            .columns
            .iter()
            .map(|(name, _)| by_name.remove(name).unwrap_or(Json::Null))
            .collect()
    };
    schema
        .columns
        .iter()
        .zip(values)
        .map(|((name, kind), json)| {
            value::convert(*kind, json)
                .map(|v| (name.clone(), v))
                .map_err(|source| JsonError::Column {
                    part,
                    column: name.clone(),
                    source,
                })
        })
        .collect()
}

fn envelope(
    op: Option<String>,
    before: Option<Row>,
    after: Option<Row>,
    source: Option<Source>,
    ts_ms: Option<i64>,
) -> Result<Envelope, JsonError> {
    let op = op.ok_or(JsonError::MissingOp)?;
    let op = Op::from_code(&op).ok_or(JsonError::UnknownOp(op))?;
    if after.is_none() {
        match op {
            Op::Read | Op::Create | Op::Update => return Err(JsonError::MissingAfter(op.as_str())),
            _ => {}
        }
    }
    let (lsn, source_ts_ms) = source.map_or((None, None), |s| (s.lsn, s.ts_ms));
    Ok(Envelope {
        op,
        before,
        after,
        lsn,
        source_ts_ms,
        ts_ms,
    })
}

#[cfg(test)]
mod tests {
    use mapping::change::FieldValue;
    use mapping::{load_config_str, ConnectionOverrides};

    use super::*;

    fn decoder(types: &str) -> JsonDecoder {
        let yaml = format!(
            "mappings:\n  - name: t\n    topic: t\n    key: \"t:{{id}}\"\n    types: {types}\n"
        );
        let config = load_config_str(&yaml, "connectors.yaml", &ConnectionOverrides::default())
            .unwrap_or_else(|e| panic!("{e}"));
        JsonDecoder::new(&config.mappings)
    }

    #[test]
    fn detection() {
        assert!(is_json(br#"{"id":1}"#));
        assert!(!is_json(&[0, 0, 0, 0, 1]));
        assert!(!is_json(b""));
    }

    #[test]
    fn schemaless_rows_use_declared_types_and_keep_column_order() {
        let d = decoder("{at: timestamp_millis}");
        let value = br#"{"op":"c","after":{"z":1,"at":1000,"a":"x","n":null},"source":{"lsn":7,"ts_ms":9}}"#;
        let decoded = d.value("t", value).unwrap();
        let envelope = decoded.envelope.unwrap();
        assert_eq!(envelope.op, Op::Create);
        assert_eq!((envelope.lsn, envelope.source_ts_ms), (Some(7), Some(9)));
        assert_eq!(
            envelope.after.unwrap(),
            vec![
                ("z".to_owned(), FieldValue::Int(1)),
                ("at".to_owned(), FieldValue::TimestampMicros(1_000_000)),
                ("a".to_owned(), FieldValue::String("x".into())),
                ("n".to_owned(), FieldValue::Null),
            ]
        );
        assert_eq!(
            &decoded.columns[..],
            &[
                ("z".to_owned(), ColumnType::Long),
                ("at".to_owned(), ColumnType::Timestamp),
                ("a".to_owned(), ColumnType::String),
            ]
        );
        // Another topic: nothing declared.
        let other = d.value("u", value).unwrap().envelope.unwrap();
        assert_eq!(other.after.unwrap()[1].1, FieldValue::Int(1000));
    }

    #[test]
    fn schemaless_column_types_are_handed_out_once_per_change() {
        let d = decoder("{}");
        let first = d
            .value("t", br#"{"op":"c","after":{"id":1,"note":"a"}}"#)
            .unwrap();
        // NULL says nothing about the type: the known columns stay as they are.
        let same = d
            .value("t", br#"{"op":"u","after":{"id":1,"note":null}}"#)
            .unwrap();
        assert!(Arc::ptr_eq(&first.columns, &same.columns));
        let added = d
            .value("t", br#"{"op":"u","after":{"id":1,"note":"b","vip":true}}"#)
            .unwrap();
        assert!(!Arc::ptr_eq(&first.columns, &added.columns));
        assert_eq!(added.columns.len(), 3);
        let delete = d
            .value("t", br#"{"op":"d","before":{"id":1},"after":null}"#)
            .unwrap();
        assert!(Arc::ptr_eq(&added.columns, &delete.columns));
    }

    #[test]
    fn keys_and_tombstones_with_a_schema() {
        let d = JsonDecoder::default();
        let key = br#"{"schema":{"type":"struct","fields":[{"type":"int32","optional":false,"field":"id"}],"optional":false,"name":"k"},"payload":{"id":4}}"#;
        assert_eq!(
            d.key("t", key).unwrap(),
            vec![("id".to_owned(), FieldValue::Int(4))]
        );
        assert_eq!(
            d.key("t", br#"{"id":4}"#).unwrap(),
            vec![("id".to_owned(), FieldValue::Int(4))]
        );
        let envelope = r#"{"type":"struct","fields":[{"type":"struct","fields":[{"type":"int32","field":"id"}],"optional":true,"field":"after"},{"type":"string","field":"op"}]}"#;
        let tombstone = format!(r#"{{"schema":{envelope},"payload":null}}"#);
        assert!(d
            .value("t", tombstone.as_bytes())
            .unwrap()
            .envelope
            .is_none());
        let err = d
            .value(
                "t",
                format!(r#"{{"schema":{envelope},"payload":{{"op":"r","after":null}}}}"#)
                    .as_bytes(),
            )
            .err()
            .unwrap();
        assert!(matches!(err, JsonError::MissingAfter("r")), "{err:?}");
    }
}
