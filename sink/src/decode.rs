//! Kafka record bytes -> [`Change`]: the Confluent wire format (magic byte 0, 4-byte
//! big-endian schema id, Avro binary body), the writer schema from the [`Registry`], the
//! Avro body decoded, then the Debezium envelope (`op`, `before`, `after`, `source.lsn`,
//! `source.ts_ms`) read into typed columns. Bodies are taken apart by a reader compiled per
//! schema ([`binary`]), which skips what the sink does not use; schemas or bodies outside
//! its scope go through apache-avro's generic decoder.
//!
//! A key or value that starts with `{` instead of the magic byte was written by Kafka
//! Connect's JsonConverter and is decoded by [`json`] into the same values, with or without
//! an embedded schema; nothing needs configuring.
//!
//! A null value is a tombstone: only the key is decoded. Column types come from the writer
//! schema's JSON (see [`schema`]); they are analysed once per schema id and cached, so a
//! new schema version (a column added) is picked up the first time a record names its id.
//!
//! Errors say what is wrong with the record (schema id, field name); the caller adds topic,
//! partition and offset. [`DecodeError::is_retriable`] separates an unreachable registry
//! (retry) from a poison record (dead-letter it).

mod binary;
pub mod json;
pub mod schema;
pub mod value;

#[cfg(test)]
mod readers_agree;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use apache_avro::types::Value;
use mapping::change::{Change, Op, Row};
use mapping::{ColumnType, Mapping};
use thiserror::Error;

use crate::registry::{Registry, RegistryError, WriterSchema};
use json::{JsonDecoder, JsonError};
use schema::{RowSchema, ShapeError};
use value::{avro_type_name, ValueError};

/// Length of the Confluent wire-format header: magic byte and schema id.
const HEADER_LEN: usize = 5;

/// A decoded record: the change, and what the value's schema says about the columns.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    /// The change event.
    pub change: Change,
    /// Registry schema id of an Avro value; `None` for JSON values and tombstones.
    pub value_schema_id: Option<u32>,
    /// Row columns and their types from the value schema (for schemaless JSON: the declared
    /// and the inferred types seen so far); `None` for tombstones.
    pub columns: Option<Arc<[(String, ColumnType)]>>,
}

/// Which part of the Kafka record an error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// The record key.
    Key,
    /// The record value.
    Value,
}

impl Part {
    /// What a Debezium schema for this part is called.
    fn schema_noun(self) -> &'static str {
        match self {
            Part::Key => "key",
            Part::Value => "envelope",
        }
    }
}

impl std::fmt::Display for Part {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Part::Key => "key",
            Part::Value => "value",
        })
    }
}

/// Why a record could not be decoded.
#[derive(Debug, Error)]
pub enum DecodeError {
    /// Fewer bytes than the 5-byte wire-format header.
    #[error("{part} of {len} bytes is shorter than the 5-byte confluent wire-format header")]
    ShortFrame {
        /// Key or value.
        part: Part,
        /// Its length.
        len: usize,
    },
    /// The first byte is not the wire format's magic byte 0.
    #[error("{part} starts with byte {byte:#04x}, not the confluent magic byte 0")]
    BadMagic {
        /// Key or value.
        part: Part,
        /// The byte found.
        byte: u8,
    },
    /// The writer schema could not be had; retriable if the registry was unreachable.
    #[error("cannot get the {part} writer schema {id}")]
    Schema {
        /// Key or value.
        part: Part,
        /// The schema id from the frame.
        id: u32,
        /// The registry's failure.
        #[source]
        source: RegistryError,
    },
    /// The schema is not what a Debezium key or envelope looks like.
    #[error("{part} schema {id} is not a debezium {}: {problem}", .part.schema_noun())]
    Shape {
        /// Key or value.
        part: Part,
        /// The schema id.
        id: u32,
        /// What is missing.
        problem: ShapeError,
    },
    /// The Avro body does not decode with its writer schema.
    #[error("{part} body does not match its writer schema {id}")]
    Body {
        /// Key or value.
        part: Part,
        /// The schema id.
        id: u32,
        /// apache-avro's complaint.
        #[source]
        source: apache_avro::Error,
    },
    /// The Avro body does not take apart by its writer schema: it ends early, or a length,
    /// count, union branch, enum index, boolean or text is invalid. Checked before the
    /// generic decoder reads it, which would allocate what a length says first.
    #[error(
        "{part} body is malformed for its writer schema {id} at byte {offset}: it ends early, \
         or a length, count, union branch or value there is invalid"
    )]
    Malformed {
        /// Key or value.
        part: Part,
        /// The schema id.
        id: u32,
        /// How far into the body (after the 5-byte header) reading got before a value could
        /// not be read.
        offset: usize,
    },
    /// Bytes left over after the Avro body.
    #[error("{part} has {count} bytes after the avro body of schema {id}")]
    TrailingBytes {
        /// Key or value.
        part: Part,
        /// The schema id.
        id: u32,
        /// How many bytes were left.
        count: usize,
    },
    /// A decoded record lacks a field its schema analysis promised (or is not a record).
    #[error("{part} of schema {id} has no `{field}` field")]
    MissingField {
        /// Key or value.
        part: Part,
        /// The schema id.
        id: u32,
        /// The field.
        field: &'static str,
    },
    /// An envelope field has an unexpected Avro type.
    #[error("envelope field `{field}` of schema {id} is avro {found}")]
    EnvelopeField {
        /// The schema id.
        id: u32,
        /// The field.
        field: &'static str,
        /// The Avro type found.
        found: &'static str,
    },
    /// `op` is not one of `r c u d t`.
    #[error("unknown debezium op {op:?} (schema {id})")]
    UnknownOp {
        /// The schema id.
        id: u32,
        /// The op text.
        op: String,
    },
    /// `r`, `c` or `u` without an `after` row.
    #[error("op {op:?} without an `after` row (schema {id})")]
    MissingAfter {
        /// The schema id.
        id: u32,
        /// The op letter.
        op: &'static str,
    },
    /// A column value could not be converted.
    #[error("{part} column `{column}` of schema {id}")]
    Column {
        /// Key or value.
        part: Part,
        /// The schema id.
        id: u32,
        /// The column name.
        column: String,
        /// What is wrong.
        #[source]
        source: ValueError,
    },
    /// A tombstone (null value) without a key: nothing says which row it deletes.
    #[error("tombstone without a key")]
    KeylessTombstone,
    /// A JsonConverter record that cannot be decoded.
    #[error(transparent)]
    Json(#[from] JsonError),
}

impl DecodeError {
    /// Whether decoding the same record later may succeed (the registry was unreachable);
    /// otherwise the record is poison.
    pub fn is_retriable(&self) -> bool {
        match self {
            DecodeError::Schema { source, .. } => source.is_retriable(),
            _ => false,
        }
    }
}

/// Decodes Debezium records, with writer schemas from a registry and their column analysis
/// cached per schema id.
#[derive(Debug)]
pub struct Decoder {
    registry: Arc<Registry>,
    keys: Mutex<HashMap<u32, Arc<RowSchema>>>,
    envelopes: Mutex<HashMap<u32, Arc<RowSchema>>>,
    /// Per key schema id: its compiled reader (`None`: the generic decoder reads it).
    key_readers: Mutex<HashMap<u32, Option<Arc<binary::RowReader>>>>,
    /// Per value schema id: its compiled envelope reader (`None`: the generic decoder).
    envelope_readers: Mutex<HashMap<u32, Option<Arc<binary::EnvelopeReader>>>>,
    /// Per schema id: the layout a body is checked against before the generic decoder reads
    /// it (`None`: a schema the check does not follow).
    layouts: Mutex<HashMap<u32, Option<Arc<binary::BodyLayout>>>>,
    /// Records written by JsonConverter.
    json: JsonDecoder,
}

impl Decoder {
    /// A decoder fetching schemas from `registry`.
    pub fn new(registry: Arc<Registry>) -> Self {
        Self {
            registry,
            keys: Mutex::new(HashMap::new()),
            envelopes: Mutex::new(HashMap::new()),
            key_readers: Mutex::new(HashMap::new()),
            envelope_readers: Mutex::new(HashMap::new()),
            layouts: Mutex::new(HashMap::new()),
            json: JsonDecoder::default(),
        }
    }

    /// The same decoder reading schemaless JSON records (JsonConverter with
    /// `schemas.enable=false`) with the column types the mappings declare (`types:`).
    pub fn with_declared_types(self, mappings: &[Mapping]) -> Self {
        Self {
            json: JsonDecoder::new(mappings),
            ..self
        }
    }

    /// The registry schemas come from.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// Decodes one Kafka record, Confluent Avro or JsonConverter JSON (key and value each
    /// by their first byte). `timestamp_ms` (the record's timestamp) becomes the
    /// tombstone's `source_ts_ms`. A missing key (keyless table) gives an empty `key` row.
    pub async fn decode(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        timestamp_ms: Option<i64>,
    ) -> Result<Decoded, DecodeError> {
        let key_writer = self.avro_writer(topic, Part::Key, key).await?;
        let value_writer = self.avro_writer(topic, Part::Value, value).await?;
        self.decode_with(topic, key, value, timestamp_ms, |id| {
            [&key_writer, &value_writer]
                .into_iter()
                .flatten()
                .find(|writer| writer.id == id)
                .cloned()
                .ok_or(RegistryError::NotFound { id })
        })
    }

    /// Decodes one record as [`Decoder::decode`] does, with the writer schemas `writer`
    /// gives by id instead of the registry's: decoding without I/O, for records whose
    /// schemas are at hand (fetched beforehand, or read from files).
    pub fn decode_with(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        timestamp_ms: Option<i64>,
        writer: impl Fn(u32) -> Result<Arc<WriterSchema>, RegistryError>,
    ) -> Result<Decoded, DecodeError> {
        let writer =
            |part, id| writer(id).map_err(|source| DecodeError::Schema { part, id, source });
        let key_row = match key {
            Some(bytes) if json::is_json(bytes) => self.json.key(topic, bytes)?,
            Some(bytes) => {
                let (id, body) = split_frame(Part::Key, bytes)?;
                self.decode_key(&*writer(Part::Key, id)?, body)?
            }
            None => Row::new(),
        };
        let tombstone = |key_row| {
            if key.is_none() {
                return Err(DecodeError::KeylessTombstone);
            }
            Ok(Decoded {
                change: Change {
                    op: Op::Tombstone,
                    key: key_row,
                    before: None,
                    after: None,
                    position: None,
                    source_ts_ms: timestamp_ms,
                },
                value_schema_id: None,
                columns: None,
            })
        };
        let Some(value) = value else {
            return tombstone(key_row);
        };
        if json::is_json(value) {
            let decoded = self.json.value(topic, value)?;
            let Some(envelope) = decoded.envelope else {
                return tombstone(key_row);
            };
            return Ok(Decoded {
                change: envelope.into_change(key_row, timestamp_ms),
                value_schema_id: None,
                columns: Some(decoded.columns),
            });
        }
        let part = Part::Value;
        let (id, body) = split_frame(part, value)?;
        let writer = writer(part, id)?;
        let row_schema = cached(&self.envelopes, id, || {
            schema::envelope_schema(&writer.json)
        })
        .map_err(|problem| DecodeError::Shape { part, id, problem })?;
        let fast = compiled(&self.envelope_readers, id, || {
            binary::EnvelopeReader::compile(&writer.json, &row_schema)
        });
        let envelope = match fast.and_then(|reader| reader.read(body, &row_schema)) {
            Some(envelope) => envelope,
            None => Envelope::read(id, &row_schema, self.generic(part, &writer, body)?)?,
        };
        Ok(Decoded {
            change: envelope.into_change(key_row, timestamp_ms),
            value_schema_id: Some(id),
            columns: Some(Arc::clone(&row_schema.types)),
        })
    }

    fn decode_key(&self, writer: &WriterSchema, body: &[u8]) -> Result<Row, DecodeError> {
        let (part, id) = (Part::Key, writer.id);
        let row_schema = cached(&self.keys, id, || schema::key_schema(&writer.json))
            .map_err(|problem| DecodeError::Shape { part, id, problem })?;
        let fast = compiled(&self.key_readers, id, || {
            binary::RowReader::for_key(&writer.json, &row_schema)
        });
        if let Some(row) = fast.and_then(|reader| reader.read_key(body, &row_schema)) {
            return Ok(row);
        }
        match self.generic(part, writer, body)? {
            Value::Record(fields) => read_row(part, id, &row_schema, fields),
            other => Err(DecodeError::EnvelopeField {
                id,
                field: "key",
                found: avro_type_name(&other),
            }),
        }
    }

    /// A body through apache-avro's generic decoder, once its layout checks out.
    fn generic(
        &self,
        part: Part,
        writer: &WriterSchema,
        body: &[u8],
    ) -> Result<Value, DecodeError> {
        let layout = compiled(&self.layouts, writer.id, || {
            binary::BodyLayout::compile(&writer.json)
        });
        decode_body(part, writer, layout.as_deref(), body)
    }

    /// The writer schema of an Avro key or value from the registry; `None` for a JSON or
    /// missing one.
    async fn avro_writer(
        &self,
        topic: &str,
        part: Part,
        bytes: Option<&[u8]>,
    ) -> Result<Option<Arc<WriterSchema>>, DecodeError> {
        let Some(bytes) = bytes.filter(|bytes| !json::is_json(bytes)) else {
            return Ok(None);
        };
        let (id, _) = split_frame(part, bytes)?;
        self.registry.schema(id).await.map(Some).map_err(|source| {
            tracing::debug!(topic, schema_id = id, %part, "Writer schema unavailable.");
            DecodeError::Schema { part, id, source }
        })
    }
}

/// The analysed schema for `id`, computed once.
fn cached(
    cache: &Mutex<HashMap<u32, Arc<RowSchema>>>,
    id: u32,
    analyse: impl FnOnce() -> Result<RowSchema, ShapeError>,
) -> Result<Arc<RowSchema>, ShapeError> {
    if let Some(found) = cache
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get(&id)
    {
        return Ok(Arc::clone(found));
    }
    let analysed = Arc::new(analyse()?);
    cache
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(id, Arc::clone(&analysed));
    Ok(analysed)
}

/// The compiled reader for schema `id`, compiled once (`None`: out of its scope).
fn compiled<R>(
    cache: &Mutex<HashMap<u32, Option<Arc<R>>>>,
    id: u32,
    compile: impl FnOnce() -> Option<R>,
) -> Option<Arc<R>> {
    if let Some(found) = cache
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get(&id)
    {
        return found.clone();
    }
    let compiled = compile().map(Arc::new);
    cache
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(id, compiled.clone());
    compiled
}

/// Splits a Confluent wire-format frame into schema id and Avro body.
pub fn split_frame(part: Part, bytes: &[u8]) -> Result<(u32, &[u8]), DecodeError> {
    let Some((header, body)) = bytes.split_first_chunk::<HEADER_LEN>() else {
        return Err(DecodeError::ShortFrame {
            part,
            len: bytes.len(),
        });
    };
    let [magic, id @ ..] = *header;
    if magic != 0 {
        return Err(DecodeError::BadMagic { part, byte: magic });
    }
    Ok((u32::from_be_bytes(id), body))
}

/// A body through apache-avro's generic decoder, checked against `layout` first (when the
/// schema has one) so that a malformed body is refused before the decoder allocates for it.
fn decode_body(
    part: Part,
    writer: &WriterSchema,
    layout: Option<&binary::BodyLayout>,
    body: &[u8],
) -> Result<Value, DecodeError> {
    let id = writer.id;
    match layout.map(|layout| layout.check(body)) {
        Some(Err(binary::Misfit::Malformed { offset })) => {
            return Err(DecodeError::Malformed { part, id, offset })
        }
        Some(Err(binary::Misfit::Trailing { count })) => {
            return Err(DecodeError::TrailingBytes { part, id, count })
        }
        Some(Ok(())) | None => {}
    }
    let mut rest = body;
    let value = writer
        .reader
        .read(&mut rest)
        .map_err(|source| DecodeError::Body { part, id, source })?;
    if !rest.is_empty() {
        return Err(DecodeError::TrailingBytes {
            part,
            id,
            count: rest.len(),
        });
    }
    Ok(value)
}

/// Reads a decoded record into a row, column by column in schema order.
fn read_row(
    part: Part,
    id: u32,
    row_schema: &RowSchema,
    fields: Vec<(String, Value)>,
) -> Result<Row, DecodeError> {
    // apache-avro returns a record's fields in schema order, the order of `columns`; look a
    // field up by name only if that ever does not hold.
    let in_order = fields.len() == row_schema.columns.len()
        && fields
            .iter()
            .zip(&row_schema.columns)
            .all(|((field, _), (column, _))| field == column);
    let values: Vec<Value> = if in_order {
        fields.into_iter().map(|(_, value)| value).collect()
    } else {
        let mut by_name: HashMap<String, Value> = fields.into_iter().collect();
        row_schema
            .columns
            .iter()
            .map(|(name, _)| by_name.remove(name).unwrap_or(Value::Null))
            .collect()
    };
    row_schema
        .columns
        .iter()
        .zip(values)
        .map(|((name, kind), value)| {
            value::convert(*kind, value)
                .map(|v| (name.clone(), v))
                .map_err(|source| DecodeError::Column {
                    part,
                    id,
                    column: name.clone(),
                    source,
                })
        })
        .collect()
}

/// The parts of a Debezium envelope the sink uses.
struct Envelope {
    op: Op,
    before: Option<Row>,
    after: Option<Row>,
    lsn: Option<i64>,
    source_ts_ms: Option<i64>,
    ts_ms: Option<i64>,
}

impl Envelope {
    /// The change of a record with this envelope and key; `timestamp_ms` (the record's) is
    /// the source time when the envelope gives none.
    fn into_change(self, key: Row, timestamp_ms: Option<i64>) -> Change {
        Change {
            op: self.op,
            key,
            before: self.before,
            after: self.after,
            position: self.lsn,
            source_ts_ms: self.source_ts_ms.or(self.ts_ms).or(timestamp_ms),
        }
    }

    fn read(id: u32, row_schema: &RowSchema, record: Value) -> Result<Self, DecodeError> {
        let Value::Record(fields) = record else {
            return Err(DecodeError::EnvelopeField {
                id,
                field: "envelope",
                found: avro_type_name(&record),
            });
        };
        let mut op = None;
        let mut before = None;
        let mut after = None;
        let mut lsn = None;
        let mut source_ts_ms = None;
        let mut ts_ms = None;
        for (name, value) in fields {
            match name.as_str() {
                "op" => op = Some(value),
                "before" => before = optional_row(id, "before", row_schema, value)?,
                "after" => after = optional_row(id, "after", row_schema, value)?,
                "ts_ms" => ts_ms = optional_long(id, "ts_ms", value)?,
                "source" => {
                    let Value::Record(source) = unwrap_union(value) else {
                        continue;
                    };
                    for (name, value) in source {
                        match name.as_str() {
                            "lsn" => lsn = optional_long(id, "source.lsn", value)?,
                            "ts_ms" => source_ts_ms = optional_long(id, "source.ts_ms", value)?,
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        let op = match op.map(unwrap_union) {
            Some(Value::String(op)) => parse_op(id, op)?,
            Some(other) => {
                return Err(DecodeError::EnvelopeField {
                    id,
                    field: "op",
                    found: avro_type_name(&other),
                })
            }
            None => {
                return Err(DecodeError::MissingField {
                    part: Part::Value,
                    id,
                    field: "op",
                })
            }
        };
        if after.is_none() {
            let letter = match op {
                Op::Read => Some("r"),
                Op::Create => Some("c"),
                Op::Update => Some("u"),
                _ => None,
            };
            if let Some(op) = letter {
                return Err(DecodeError::MissingAfter { id, op });
            }
        }
        Ok(Self {
            op,
            before,
            after,
            lsn,
            source_ts_ms,
            ts_ms,
        })
    }
}

fn parse_op(id: u32, op: String) -> Result<Op, DecodeError> {
    Op::from_code(&op).ok_or(DecodeError::UnknownOp { id, op })
}

fn unwrap_union(value: Value) -> Value {
    match value {
        Value::Union(_, inner) => *inner,
        other => other,
    }
}

fn optional_row(
    id: u32,
    field: &'static str,
    row_schema: &RowSchema,
    value: Value,
) -> Result<Option<Row>, DecodeError> {
    match unwrap_union(value) {
        Value::Null => Ok(None),
        Value::Record(fields) => read_row(Part::Value, id, row_schema, fields).map(Some),
        other => Err(DecodeError::EnvelopeField {
            id,
            field,
            found: avro_type_name(&other),
        }),
    }
}

fn optional_long(id: u32, field: &'static str, value: Value) -> Result<Option<i64>, DecodeError> {
    match unwrap_union(value) {
        Value::Null => Ok(None),
        Value::Long(v) | Value::TimestampMillis(v) => Ok(Some(v)),
        Value::Int(v) => Ok(Some(i64::from(v))),
        other => Err(DecodeError::EnvelopeField {
            id,
            field,
            found: avro_type_name(&other),
        }),
    }
}

#[cfg(test)]
mod tests {
    use mapping::change::FieldValue;
    use serde_json::json;

    use super::*;

    /// Decodes a record whose key and value bodies are framed with schema ids 1 and 2.
    fn decode_bodies(
        key_schema: &serde_json::Value,
        value_schema: &serde_json::Value,
        key: &[u8],
        value: Option<&[u8]>,
    ) -> Result<Decoded, DecodeError> {
        let registry = Registry::new("http://127.0.0.1:9").unwrap();
        let writers = [
            Arc::new(WriterSchema::parse(1, key_schema.to_string()).unwrap()),
            Arc::new(WriterSchema::parse(2, value_schema.to_string()).unwrap()),
        ];
        let key = [&[0, 0, 0, 0, 1][..], key].concat();
        let value = value.map(|body| [&[0, 0, 0, 0, 2][..], body].concat());
        Decoder::new(Arc::new(registry)).decode_with(
            "t",
            Some(&key),
            value.as_deref(),
            None,
            |id| Ok(Arc::clone(&writers[id as usize - 1])),
        )
    }

    fn key_of(ty: serde_json::Value) -> serde_json::Value {
        json!({"type": "record", "name": "Key", "fields": [{"name": "k", "type": ty}]})
    }

    /// apache-avro allocates what a length says before reading (up to 512 MiB): six bytes
    /// of a key made it allocate 400 MB (`wire_avro` finds such inputs within seconds when
    /// the check is off). The layout check refuses the length first.
    #[test]
    fn a_length_beyond_the_body_is_refused_before_it_is_allocated() {
        // An array column: out of the compiled readers' scope, read by the generic decoder.
        let schema = key_of(json!({"type": "array", "items": "string"}));
        let mut body = vec![0x02]; // one item
        body.extend([0x80, 0xb4, 0xc4, 0xfd, 0x02]); // a string of 400,067,840 bytes
        let err = decode_bodies(&schema, &schema, &body, None).unwrap_err();
        assert!(
            matches!(
                err,
                DecodeError::Malformed {
                    part: Part::Key,
                    id: 1,
                    offset: 6
                }
            ),
            "{err:?}"
        );
    }

    /// apache-avro reads a string whose bytes are cut off, a boolean or a union index at
    /// the end of the body as null: a key cut short was decoded into a row with a NULL
    /// column, an envelope cut before its last field was accepted.
    #[test]
    fn a_body_cut_short_is_refused_not_read_as_nulls() {
        let schema = key_of(json!("string"));
        // A string of 2 bytes, 1 there.
        let err = decode_bodies(&schema, &schema, &[0x04, b'a'], None).unwrap_err();
        assert!(
            matches!(
                err,
                DecodeError::Malformed {
                    part: Part::Key,
                    id: 1,
                    offset: 1
                }
            ),
            "{err:?}"
        );
        let whole = decode_bodies(&schema, &schema, &[0x02, b'a'], None).unwrap();
        assert_eq!(
            whole.change.key,
            vec![("k".to_owned(), FieldValue::String("a".into()))]
        );

        // An envelope missing its last field (the union index of `ts_ms`).
        let envelope = json!({"type": "record", "name": "Envelope", "fields": [
            {"name": "after", "type": ["null", {"type": "record", "name": "Value",
                "fields": [{"name": "k", "type": "string"}]}]},
            {"name": "op", "type": "string"},
            {"name": "ts_ms", "type": ["null", "long"]}]});
        let body = [0x02, 0x02, b'a', 0x02, b'c'];
        let err = decode_bodies(&schema, &envelope, &[0x02, b'a'], Some(&body)).unwrap_err();
        assert!(
            matches!(
                err,
                DecodeError::Malformed {
                    part: Part::Value,
                    id: 2,
                    offset: 5
                }
            ),
            "{err:?}"
        );
        let whole = [&body[..], &[0x02, 0x04]].concat();
        let decoded = decode_bodies(&schema, &envelope, &[0x02, b'a'], Some(&whole)).unwrap();
        assert_eq!(decoded.change.source_ts_ms, Some(2));
    }

    #[test]
    fn frames() {
        assert!(matches!(
            split_frame(Part::Value, &[0, 0, 0]),
            Err(DecodeError::ShortFrame {
                part: Part::Value,
                len: 3
            })
        ));
        assert!(matches!(
            split_frame(Part::Key, &[1, 0, 0, 0, 2, 9]),
            Err(DecodeError::BadMagic {
                part: Part::Key,
                byte: 1
            })
        ));
        assert_eq!(
            split_frame(Part::Key, &[0, 0, 0, 1, 2, 9]).unwrap(),
            (258, &[9u8][..])
        );
        assert_eq!(
            DecodeError::BadMagic {
                part: Part::Key,
                byte: 0x7b
            }
            .to_string(),
            "key starts with byte 0x7b, not the confluent magic byte 0"
        );
    }

    #[test]
    fn ops() {
        assert_eq!(parse_op(1, "t".into()).unwrap(), Op::Truncate);
        let err = parse_op(2, "m".into()).unwrap_err();
        assert_eq!(err.to_string(), "unknown debezium op \"m\" (schema 2)");
        assert!(!err.is_retriable());
    }
}
