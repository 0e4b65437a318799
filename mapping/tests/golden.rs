//! Golden tests: every Avro record Debezium 3.6.3 produced on the reference stack
//! (`tests/fixtures/debezium/avro-*.json` at the repository root), turned into the
//! [`Change`] the sink's decoder produces from the same bytes, planned with the shipped
//! `connectors.yaml`, and snapshotted with insta (`tests/snapshots/`).
//!
//! The sample JSON shows Avro values as plain JSON; the column types come from the recorded
//! writer schemas (`schemas/debezium/`, `connect.name` logical types), exactly as the decoder reads
//! them from the registry.

use std::fs;
use std::path::{Path, PathBuf};

use mapping::{
    load_config, plan, Change, ColumnType, Config, ConnectionOverrides, FieldValue, Op, Plan, Row,
    RowDelete,
};
use serde::Serialize;
use serde_json::Value;

/// The recorded records (`avro-*.json`), at the repository root.
fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/debezium")
}

/// The recorded writer schemas, at the repository root.
fn schemas_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../schemas/debezium")
}

fn config() -> Config {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../connectors.yaml");
    load_config(&path, &ConnectionOverrides::default()).unwrap_or_else(|e| panic!("{e}"))
}

/// Column name and type, in schema order.
type Columns = Vec<(String, ColumnType)>;

fn read_json(path: &Path) -> Value {
    let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Column name -> type of a record schema, from its Avro fields (unions with null unwrapped).
fn columns(record: &Value) -> Columns {
    let fields = record["fields"].as_array().expect("record fields");
    fields
        .iter()
        .map(|f| {
            let name = f["name"].as_str().expect("field name").to_owned();
            let ty = match &f["type"] {
                Value::Array(branches) => branches
                    .iter()
                    .find(|b| b.as_str() != Some("null"))
                    .expect("non-null branch")
                    .clone(),
                other => other.clone(),
            };
            (name, column_type(&ty))
        })
        .collect()
}

fn column_type(ty: &Value) -> ColumnType {
    let (base, logical) = match ty {
        Value::String(s) => (s.as_str(), None),
        Value::Object(o) => (
            o["type"].as_str().expect("type"),
            o.get("connect.name").and_then(Value::as_str),
        ),
        other => panic!("unexpected avro type {other}"),
    };
    match (logical, base) {
        (
            Some(
                "io.debezium.time.MicroTimestamp"
                | "io.debezium.time.Timestamp"
                | "io.debezium.time.NanoTimestamp"
                | "io.debezium.time.ZonedTimestamp",
            ),
            _,
        ) => ColumnType::Timestamp,
        (Some("io.debezium.time.Date"), _) => ColumnType::Date,
        (Some("io.debezium.data.Json"), _) => ColumnType::Json,
        (Some("org.apache.kafka.connect.data.Decimal"), _) => ColumnType::Decimal,
        (_, "int") => ColumnType::Int,
        (_, "long") => ColumnType::Long,
        (_, "float") => ColumnType::Float,
        (_, "double") => ColumnType::Double,
        (_, "boolean") => ColumnType::Boolean,
        (_, "string") => ColumnType::String,
        (_, "bytes") => ColumnType::Bytes,
        other => panic!("unexpected avro type {other:?}"),
    }
}

fn value(ty: ColumnType, v: &Value) -> FieldValue {
    if v.is_null() {
        return FieldValue::Null;
    }
    let int = || v.as_i64().expect("integer");
    match ty {
        ColumnType::Int | ColumnType::Long => FieldValue::Int(int()),
        ColumnType::Timestamp => FieldValue::TimestampMicros(int()),
        ColumnType::Date => FieldValue::Date(i32::try_from(int()).expect("date")),
        ColumnType::Float | ColumnType::Double => FieldValue::Float(v.as_f64().expect("float")),
        ColumnType::Boolean => FieldValue::Boolean(v.as_bool().expect("bool")),
        ColumnType::String => FieldValue::String(v.as_str().expect("string").to_owned()),
        ColumnType::Json => FieldValue::Json(v.as_str().expect("json text").to_owned()),
        ColumnType::Decimal | ColumnType::Bytes => panic!("no such columns in the samples"),
    }
}

fn row(schema: &Columns, v: &Value) -> Option<Row> {
    let obj = v.as_object()?;
    Some(
        schema
            .iter()
            .map(|(name, ty)| (name.clone(), value(*ty, &obj[name])))
            .collect(),
    )
}

/// The schemas recorded for a topic: (key columns, value columns).
fn schemas(topic: &str) -> (Columns, Columns) {
    let find = |suffix: &str| {
        let prefix = format!("{topic}-{suffix}.");
        let entry = fs::read_dir(schemas_dir())
            .expect("schemas")
            .map(|e| e.expect("entry").path())
            .find(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(&prefix))
            })
            .unwrap_or_else(|| panic!("no {suffix} schema for {topic}"));
        read_json(&entry)
    };
    let key = columns(&find("key")["schema"]);
    let envelope = find("value");
    let before = envelope["schema"]["fields"]
        .as_array()
        .expect("envelope fields")
        .iter()
        .find(|f| f["name"] == "before")
        .expect("before field");
    let record = before["type"]
        .as_array()
        .expect("before union")
        .iter()
        .find(|b| b.is_object())
        .expect("row record");
    (key, columns(record))
}

/// The decoded change for one recorded sample.
fn change(sample: &Value) -> Change {
    let topic = sample["topic"].as_str().expect("topic");
    let (key_schema, value_schema) = schemas(topic);
    let key = row(&key_schema, &sample["key"]).expect("key");
    let envelope = &sample["value"];
    if envelope.is_null() {
        return Change {
            op: Op::Tombstone,
            key,
            before: None,
            after: None,
            position: None,
            source_ts_ms: sample["ts"].as_i64(),
        };
    }
    let op = match envelope["op"].as_str().expect("op") {
        "r" => Op::Read,
        "c" => Op::Create,
        "u" => Op::Update,
        "d" => Op::Delete,
        "t" => Op::Truncate,
        other => panic!("unexpected op {other}"),
    };
    Change {
        op,
        key,
        before: row(&value_schema, &envelope["before"]),
        after: row(&value_schema, &envelope["after"]),
        position: envelope["source"]["lsn"].as_i64(),
        source_ts_ms: envelope["source"]["ts_ms"].as_i64(),
    }
}

fn samples() -> Vec<(String, Value)> {
    let mut paths: Vec<PathBuf> = fs::read_dir(fixtures())
        .expect("fixtures")
        .map(|e| e.expect("entry").path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("avro-") && n.ends_with(".json"))
        })
        .collect();
    paths.sort();
    paths
        .into_iter()
        .map(|p| {
            let name = p
                .file_stem()
                .and_then(|n| n.to_str())
                .expect("file name")
                .to_owned();
            (name, read_json(&p))
        })
        .collect()
}

/// What a snapshot shows: where the record came from and what the planner made of it.
#[derive(Serialize)]
struct Golden<'a> {
    topic: &'a str,
    offset: i64,
    op: &'static str,
    mapping: &'a str,
    plan: Plan,
}

#[test]
fn every_recorded_sample_plans_as_snapshotted() {
    let config = config();
    let samples = samples();
    assert_eq!(samples.len(), 11, "recorded samples");
    for (name, sample) in &samples {
        let change = change(sample);
        let topic = sample["topic"].as_str().expect("topic");
        let mapping = config
            .mapping_for_topic(topic)
            .unwrap_or_else(|| panic!("{name}: no mapping for {topic}"));
        let plan = plan(mapping, change.clone()).unwrap_or_else(|e| panic!("{name}: {e}"));
        let golden = Golden {
            topic,
            offset: sample["offset"].as_i64().expect("offset"),
            op: change.op.as_str(),
            mapping: &mapping.name,
            plan,
        };
        insta::assert_yaml_snapshot!(name.as_str(), golden);
    }
}

#[test]
fn stored_types_follow_the_recorded_schemas() {
    let config = config();
    for topic in config.topics() {
        let (_, value_schema) = schemas(topic);
        let mapping = config.mapping_for_topic(topic).expect("mapping");
        let stored: Vec<(String, &str)> = mapping
            .stored_types(&value_schema)
            .into_iter()
            .map(|(name, ty)| (name, ty.as_str()))
            .collect();
        insta::assert_yaml_snapshot!(format!("stored_types-{topic}"), stored);
    }
}

/// REPLICA IDENTITY DEFAULT: the delete's `before` holds Avro defaults (`customer_id: null`,
/// `items: ""`, timestamps 0), not the row's values. The plan comes from the Kafka key only.
#[test]
fn replica_identity_default_delete_ignores_before() {
    let config = config();
    let sample = read_json(&fixtures().join("avro-orders-op_d-replica-identity-default.json"));
    let change = change(&sample);
    let before = change.before.as_ref().expect("before");
    assert!(before.contains(&("customer_id".into(), FieldValue::Null)));
    assert!(before.contains(&("items".into(), FieldValue::Json(String::new()))));
    let orders = config.mapping("orders").expect("orders mapping");
    let expected = Plan::Delete(RowDelete {
        row_key: "order:2".into(),
        position: Some(22_550_776),
    });
    assert_eq!(plan(orders, change.clone()), Ok(expected.clone()));
    // Whatever `before` holds (nothing, or other values), the plan is the same.
    let mut without = change.clone();
    without.before = None;
    assert_eq!(plan(orders, without), Ok(expected.clone()));
    let mut other = change.clone();
    other.before = Some(vec![
        ("id".into(), FieldValue::Int(999)),
        ("customer_id".into(), FieldValue::Int(3)),
    ]);
    assert_eq!(plan(orders, other), Ok(expected));
}

/// The tombstone after a delete deletes by the same key, unconditionally.
#[test]
fn tombstones_delete_by_key_without_position() {
    let config = config();
    for (file, row_key) in [
        ("avro-orders-tombstone-after-delete.json", "order:2"),
        ("avro-customers-tombstone-after-delete.json", "customer:4"),
    ] {
        let sample = read_json(&fixtures().join(file));
        let change = change(&sample);
        let mapping = config
            .mapping_for_topic(sample["topic"].as_str().expect("topic"))
            .expect("mapping");
        assert_eq!(
            plan(mapping, change.clone()),
            Ok(Plan::Delete(RowDelete {
                row_key: row_key.into(),
                position: None
            }))
        );
    }
}
