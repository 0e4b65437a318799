//! Shared by the decode, pipeline and rebuild test support modules: the Debezium 3.6.3
//! reference recording (writer schemas in `schemas/debezium/`, recorded records in
//! `tests/fixtures/debezium/`, both at the repository root), the recorded schemas registered
//! for a test's own topics, and the check that the real services are up before a test starts.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value as Json;
use testkit::loadgen::{self, WireEncoder};

/// The recorded writer schemas (`<subject>.v<version>.id<id>.json`).
pub fn schemas_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../schemas/debezium")
}

/// The recorded records (`avro-*.json`, `raw-wire-bytes.json`).
pub fn records_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/debezium")
}

fn read_json(path: &Path) -> Json {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read fixture {}: {e}", path.display()));
    serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("fixture {} is not json: {e}", path.display()))
}

/// A recorded record file (in [`records_dir`]) as JSON.
pub fn record(name: &str) -> Json {
    read_json(&records_dir().join(name))
}

/// A recorded schema file (in [`schemas_dir`]) as JSON: `{"subject", "version", "id", "schemaType", "schema"}`.
pub fn schema_file(name: &str) -> Json {
    read_json(&schemas_dir().join(name))
}

/// Panics with a message naming the service and `how_to_start` unless Redis, the registry and
/// Kafka all answer.
pub async fn check_services(bootstrap: &str, registry: &str, redis: &str, how_to_start: &str) {
    let timeout = Duration::from_secs(10);
    if let Err(e) = sink::health::check_redis(redis, timeout).await {
        panic!("{e} ({how_to_start})");
    }
    let registry = sink::registry::Registry::new(registry).expect("registry client");
    if let Err(e) = sink::health::check_registry(&registry).await {
        panic!("{e} ({how_to_start})");
    }
    let mut client = rdkafka::ClientConfig::new();
    client.set("bootstrap.servers", bootstrap);
    if let Err(e) = sink::health::check_kafka(&client, &[], timeout).await {
        panic!("{e} ({how_to_start})");
    }
}

/// A random id for one test's topics, group and keys.
/// Deletes a test's `topics` (best effort: a failure is printed), so the broker does not
/// gather every run's topics. Blocking: rdkafka resolves the request on its own thread, so
/// this works from `Drop` and from inside a runtime alike.
pub fn delete_topics(bootstrap: &str, topics: &[&str], owner: &str) {
    let deleted = loadgen::delete_topics(bootstrap, topics);
    if let Err(e) = futures::executor::block_on(deleted) {
        eprintln!("could not delete the topics of {owner}: {e}");
    }
}

pub fn rand_id() -> String {
    format!("{:08x}", rand::random::<u32>())
}

/// The `schema` field of a recorded schema file, as text.
pub fn schema_text(name: &str) -> String {
    schema_file(name)["schema"].to_string()
}

/// Registers the recorded v1 key and value schemas of `table` (`customers` or `orders`) under
/// `{topic}-key` and `{topic}-value` at `registry`; returns (key, value) encoders with the
/// ids the registry assigned.
pub async fn register_table(
    registry: &str,
    topic: &str,
    table: &str,
) -> (WireEncoder, WireEncoder) {
    let (key_id, value_id) = match table {
        "customers" => (1, 2),
        "orders" => (3, 4),
        other => panic!("no recorded schemas for table {other}"),
    };
    let key_text = schema_text(&format!("cdc.public.{table}-key.v1.id{key_id}.json"));
    let value_text = schema_text(&format!("cdc.public.{table}-value.v1.id{value_id}.json"));
    let k = loadgen::register(registry, &format!("{topic}-key"), &key_text)
        .await
        .expect("register key schema");
    let v = loadgen::register(registry, &format!("{topic}-value"), &value_text)
        .await
        .expect("register value schema");
    (
        WireEncoder::new(k, &key_text).expect("key schema"),
        WireEncoder::new(v, &value_text).expect("value schema"),
    )
}
