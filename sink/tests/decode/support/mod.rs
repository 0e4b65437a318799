//! Shared by the decode integration tests: the recorded Debezium 3.6.3 fixtures
//! (`schemas/debezium/` and `tests/fixtures/debezium/` at the repository root), and the
//! real schema registry at `SCHEMA_REGISTRY_URL` where each test run registers the fixture
//! schemas under subjects of its own.
#![allow(dead_code)]

#[path = "../../common/mod.rs"]
mod common;

use std::collections::HashMap;
use std::sync::Arc;

use mapping::change::{Change, FieldValue, Op, Row};
use mapping::ColumnType;
use schema_registry_converter::async_impl::schema_registry::{post_schema, SrSettings};
use schema_registry_converter::schema_registry_common::{SchemaType, SuppliedSchema};
use serde_json::Value as Json;
use sink::decode::Decoder;
use sink::registry::Registry;

pub use common::record as read_json;

/// Every recorded sample (`avro-*.json`) with its file name.
pub fn samples() -> Vec<(String, Json)> {
    let mut names: Vec<String> = std::fs::read_dir(common::records_dir())
        .expect("fixture directory")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with("avro-") && n.ends_with(".json"))
        .collect();
    names.sort();
    assert_eq!(
        names.len(),
        11,
        "expected the 11 recorded samples, found {names:?}"
    );
    names
        .into_iter()
        .map(|n| (n.clone(), read_json(&n)))
        .collect()
}

/// The registry URL; the test fails (never skips) without one.
pub fn registry_url() -> String {
    match std::env::var("SCHEMA_REGISTRY_URL") {
        Ok(url) if !url.is_empty() => url,
        _ => panic!(
            "SCHEMA_REGISTRY_URL is not set: start the local stack with `tests/stack/up.sh` \
             and `source` the env file it writes (or `eval \"$(tests/stack/registry.sh env)\"` \
             after `tests/stack/registry.sh start`)"
        ),
    }
}

/// A random suffix that keeps this run's subjects apart from other runs'.
pub fn run_id() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// Registers an Avro schema under `subject` and returns the id the registry assigned.
pub async fn register(subject: &str, schema: &Json) -> u32 {
    let url = registry_url();
    let settings = SrSettings::new(url.trim_end_matches('/').to_owned());
    let supplied = SuppliedSchema::new(None, SchemaType::Avro, schema.to_string());
    post_schema(&settings, subject.to_owned(), supplied)
        .await
        .unwrap_or_else(|e| panic!("cannot register {subject} at {url}: {e}"))
        .id
}

/// The fixture tables' schemas registered for one test run.
pub struct Registered {
    /// Fixture id (1 customers key, 2 customers value, 3 orders key, 4 orders value) ->
    /// the id this registry assigned.
    pub ids: HashMap<u32, u32>,
    /// The suffix of this run's subjects.
    pub run: String,
}

impl Registered {
    /// Registers the four recorded schemas under `{topic}-{run}-key|value`.
    pub async fn new() -> Self {
        let run = run_id();
        let mut ids = HashMap::new();
        for (fixture_id, file, subject) in [
            (
                1,
                "cdc.public.customers-key.v1.id1.json",
                "cdc.public.customers-key",
            ),
            (
                2,
                "cdc.public.customers-value.v1.id2.json",
                "cdc.public.customers-value",
            ),
            (
                3,
                "cdc.public.orders-key.v1.id3.json",
                "cdc.public.orders-key",
            ),
            (
                4,
                "cdc.public.orders-value.v1.id4.json",
                "cdc.public.orders-value",
            ),
        ] {
            let schema = common::schema_file(file)["schema"].clone();
            let id = register(&format!("{subject}-{run}"), &schema).await;
            ids.insert(fixture_id, id);
        }
        Self { ids, run }
    }

    /// The id assigned for a fixture id.
    pub fn id(&self, fixture_id: u32) -> u32 {
        self.ids[&fixture_id]
    }
}

/// A decoder on the real registry.
pub fn decoder() -> Decoder {
    let registry = Registry::new(&registry_url()).expect("registry client");
    Decoder::new(Arc::new(registry))
}

/// Confluent wire-format frame.
pub fn frame(id: u32, body: &[u8]) -> Vec<u8> {
    let mut out = vec![0];
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// Replaces the schema id of a frame.
pub fn with_id(bytes: &[u8], id: u32) -> Vec<u8> {
    frame(id, &bytes[5..])
}

/// The schema id of a frame.
pub fn id_of(bytes: &[u8]) -> u32 {
    u32::from_be_bytes(bytes[1..5].try_into().expect("5-byte header"))
}

/// Hex text to bytes.
pub fn unhex(text: &str) -> Vec<u8> {
    assert!(text.len().is_multiple_of(2), "odd hex length");
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex digit"))
        .collect()
}

/// Expected column types of a fixture table, in schema order.
pub fn value_columns(topic: &str) -> Vec<(String, ColumnType)> {
    use ColumnType::*;
    let cols: &[(&str, ColumnType)] = match topic {
        "cdc.public.customers" => &[
            ("id", Int),
            ("email", String),
            ("name", String),
            ("plan", String),
            ("mrr_cents", Int),
            ("created_at", Timestamp),
            ("updated_at", Timestamp),
        ],
        "cdc.public.orders" => &[
            ("id", Int),
            ("customer_id", Int),
            ("status", String),
            ("total_cents", Int),
            ("items", Json),
            ("created_at", Timestamp),
            ("updated_at", Timestamp),
        ],
        other => panic!("no fixture table for topic {other}"),
    };
    cols.iter().map(|(n, t)| ((*n).to_owned(), *t)).collect()
}

/// A row as expected from a sample's JSON object, in schema order.
pub fn expected_row(object: &Json, columns: &[(String, ColumnType)]) -> Row {
    columns
        .iter()
        .map(|(name, ty)| {
            let v = &object[name.as_str()];
            let value = match (ty, v) {
                (_, Json::Null) => FieldValue::Null,
                (ColumnType::Int, v) => FieldValue::Int(v.as_i64().expect("int")),
                (ColumnType::String, v) => {
                    FieldValue::String(v.as_str().expect("string").to_owned())
                }
                (ColumnType::Json, v) => {
                    FieldValue::Json(v.as_str().expect("json text").to_owned())
                }
                // MicroTimestamp columns: the recorded number is already microseconds.
                (ColumnType::Timestamp, v) => {
                    FieldValue::TimestampMicros(v.as_i64().expect("micros"))
                }
                (other, _) => panic!("fixture has no {other:?} column"),
            };
            (name.clone(), value)
        })
        .collect()
}

/// The [`Change`] a recorded sample must decode to, built from its JSON.
pub fn expected_change(sample: &Json) -> Change {
    let topic = sample["topic"].as_str().expect("topic");
    let columns = value_columns(topic);
    let key = expected_row(&sample["key"], &columns[..1]);
    let value = &sample["value"];
    if value.is_null() {
        return Change {
            op: Op::Tombstone,
            key,
            before: None,
            after: None,
            position: None,
            source_ts_ms: sample["ts"].as_i64(),
        };
    }
    let op = match value["op"].as_str().expect("op") {
        "r" => Op::Read,
        "c" => Op::Create,
        "u" => Op::Update,
        "d" => Op::Delete,
        "t" => Op::Truncate,
        other => panic!("sample op {other}"),
    };
    let row = |v: &Json| (!v.is_null()).then(|| expected_row(v, &columns));
    Change {
        op,
        key,
        before: row(&value["before"]),
        after: row(&value["after"]),
        position: value["source"]["lsn"].as_i64(),
        source_ts_ms: value["source"]["ts_ms"].as_i64(),
    }
}

/// Encodes a JSON datum with a schema (apache-avro resolves unions and records).
pub fn encode(schema: &apache_avro::Schema, datum: &Json) -> Vec<u8> {
    let value = apache_avro::types::Value::try_from(datum.clone())
        .expect("json to avro value")
        .resolve(schema)
        .unwrap_or_else(|e| panic!("datum does not fit the schema: {e}: {datum}"));
    apache_avro::writer::datum::GenericDatumWriter::builder(schema)
        .build()
        .expect("writer")
        .write_value_to_vec(value)
        .expect("encode")
}

/// The fixture schema of a fixture id, parsed for apache-avro.
pub fn fixture_schema(fixture_id: u32) -> (Json, apache_avro::Schema) {
    let file = match fixture_id {
        1 => "cdc.public.customers-key.v1.id1.json",
        2 => "cdc.public.customers-value.v1.id2.json",
        3 => "cdc.public.orders-key.v1.id3.json",
        4 => "cdc.public.orders-value.v1.id4.json",
        other => panic!("no fixture schema {other}"),
    };
    let json = common::schema_file(file)["schema"].clone();
    let avro = apache_avro::Schema::parse(&json).expect("fixture schema parses");
    (json, avro)
}

/// The sample with this topic and offset.
pub fn sample_at(topic: &str, offset: i64) -> (String, Json) {
    samples()
        .into_iter()
        .find(|(_, s)| s["topic"] == topic && s["offset"] == offset)
        .unwrap_or_else(|| panic!("no recorded sample for {topic} offset {offset}"))
}
