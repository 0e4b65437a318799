//! Shared by the pipeline and CLI tests: the real stack (Kafka, schema registry, Redis from
//! `tests/stack/`), one scenario per test with its own topics, group, mapping names and key
//! prefix, the recorded Debezium samples re-encoded to wire bytes through schemas registered
//! in the real registry, and Redis assertions.
//!
//! Environment: `KAFKA_BOOTSTRAP_SERVERS` (127.0.0.1:9092), `SCHEMA_REGISTRY_URL`
//! (http://127.0.0.1:8081/apis/ccompat/v7), `REDIS_URL` (redis://127.0.0.1:6379). A missing
//! service fails the test with a message saying how to start it.
#![allow(dead_code)]

#[path = "../common/mod.rs"]
mod common;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use rdkafka::consumer::Consumer;
use rdkafka::message::Headers;
use rdkafka::Message;
use redis::Commands;
use serde_json::{json, Value as Json};
use sink::config::{BatchSettings, SinkConfig};
use sink::pipeline::{StopWhen, Summary};
use testkit::loadgen::{self, workload, WireEncoder, WireRecord, Workload};
use tokio_util::sync::CancellationToken;

/// Where the services are.
#[derive(Debug, Clone)]
pub struct Stack {
    pub bootstrap: String,
    pub registry: String,
    pub redis: String,
}

const HOW_TO_START: &str = "start the stack with `bash tests/stack/up.sh` and export its env";

impl Stack {
    /// From the environment, checked: panics with a clear message when a service is down.
    pub async fn get() -> Stack {
        let env =
            |name: &str, default: &str| std::env::var(name).unwrap_or_else(|_| default.to_owned());
        let stack = Stack {
            bootstrap: env("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"),
            registry: env(
                "SCHEMA_REGISTRY_URL",
                "http://127.0.0.1:8081/apis/ccompat/v7",
            ),
            redis: env("REDIS_URL", "redis://127.0.0.1:6379"),
        };
        common::check_services(
            &stack.bootstrap,
            &stack.registry,
            &stack.redis,
            HOW_TO_START,
        )
        .await;
        stack
    }

    /// A synchronous Redis connection for assertions.
    pub fn redis(&self) -> redis::Connection {
        redis::Client::open(self.redis.as_str())
            .and_then(|c| c.get_connection())
            .unwrap_or_else(|e| panic!("redis at {}: {e}", self.redis))
    }
}

/// A fresh random id for names.
pub use common::{rand_id, record as fixture};

/// The customers value schema v2: v1 plus a nullable `phone` column at the end.
pub fn customers_value_v2() -> String {
    let mut schema =
        common::schema_file("cdc.public.customers-value.v1.id2.json")["schema"].clone();
    let fields = schema["fields"][0]["type"][1]["fields"]
        .as_array_mut()
        .expect("before.Value fields");
    fields.push(json!({"name": "phone", "type": ["null", "string"], "default": null}));
    schema.to_string()
}

pub use testkit::loadgen::Table;

/// Encoders for one table's key and value.
#[derive(Debug, Clone)]
pub struct TableCodec {
    pub topic: String,
    pub key: WireEncoder,
    pub value: WireEncoder,
}

/// One test's world: its topics, group, mappings and key prefix.
pub struct Scenario {
    pub stack: Stack,
    pub id: String,
    pub group: String,
    pub dlq: String,
    pub codecs: HashMap<Table, TableCodec>,
    pub config_path: PathBuf,
}

impl Scenario {
    /// Creates the topics (`partitions` each), registers the v1 schemas under
    /// `{topic}-key`/`{topic}-value` and writes the scenario's connectors.yaml.
    pub async fn new(partitions: i32) -> Scenario {
        let stack = Stack::get().await;
        let id = rand_id();
        let mut codecs = HashMap::new();
        for table in [Table::Customers, Table::Orders] {
            let topic = format!("t{id}.public.{}", table.name());
            loadgen::create_topic(&stack.bootstrap, &topic, partitions)
                .await
                .expect("create topic");
            let (key, value) = common::register_table(&stack.registry, &topic, table.name()).await;
            codecs.insert(table, TableCodec { topic, key, value });
        }
        let dlq = format!("t{id}-dlq");
        loadgen::create_topic(&stack.bootstrap, &dlq, 1)
            .await
            .expect("create dlq topic");
        let scenario = Scenario {
            group: format!("t{id}-group"),
            dlq,
            config_path: std::env::temp_dir().join(format!("sink-test-{id}.yaml")),
            stack,
            id,
            codecs,
        };
        std::fs::write(&scenario.config_path, scenario.yaml()).expect("write connectors.yaml");
        scenario
    }

    pub fn topic(&self, table: Table) -> &str {
        &self.codecs[&table].topic
    }

    /// The scenario's connectors.yaml: the default mapping with prefixed keys and names.
    pub fn yaml(&self) -> String {
        let id = &self.id;
        format!(
            r#"kafka:
  bootstrap_servers: "{bootstrap}"
  group_id: "{group}"
  dead_letter_topic: "{dlq}"
schema_registry:
  url: "{registry}"
redis:
  url: "{redis}"
mappings:
  - name: customers_{id}
    topic: "{customers}"
    key: "t{id}:customer:{{id}}"
    fields: all
    indexes:
      - name: email
        key: "t{id}:customer:email:{{email}}"
  - name: orders_{id}
    topic: "{orders}"
    key: "t{id}:order:{{id}}"
    fields: all
    relations:
      - name: customer_orders
        key: "t{id}:customer:{{customer_id}}:orders"
        order_by: created_at
"#,
            bootstrap = self.stack.bootstrap,
            group = self.group,
            dlq = self.dlq,
            registry = self.stack.registry,
            redis = self.stack.redis,
            customers = self.topic(Table::Customers),
            orders = self.topic(Table::Orders),
        )
    }

    /// The validated configuration, as `sink run --config` would load it.
    pub fn sink_config(&self, batch: BatchSettings) -> SinkConfig {
        let config =
            mapping::load_config(&self.config_path, &mapping::ConnectionOverrides::default())
                .unwrap_or_else(|e| panic!("scenario config does not load:\n{e}"));
        SinkConfig::new(config, &[], batch)
    }

    /// Encodes a record of `table`: key JSON and value JSON (`None`: tombstone).
    pub fn record(&self, table: Table, key: &Json, value: Option<&Json>) -> WireRecord {
        let codec = &self.codecs[&table];
        WireRecord {
            topic: codec.topic.clone(),
            key: Some(codec.key.encode(key).expect("encode key")),
            value: value.map(|v| codec.value.encode(v).expect("encode value")),
            headers: vec![(
                "__debezium.context.connectorLogicalName".into(),
                "cdc".into(),
            )],
        }
    }

    /// A recorded sample re-encoded for this scenario's topics.
    pub fn sample(&self, name: &str) -> WireRecord {
        let sample = fixture(name);
        let table = if sample["topic"] == "cdc.public.customers" {
            Table::Customers
        } else {
            Table::Orders
        };
        let value = (!sample["value"].is_null()).then_some(&sample["value"]);
        self.record(table, &sample["key"], value)
    }

    /// Encodes generated events.
    pub fn encode(&self, events: &[testkit::loadgen::Event]) -> Vec<WireRecord> {
        events
            .iter()
            .map(|e| self.record(e.table, &e.key, e.value.as_ref()))
            .collect()
    }

    /// Produces records in order and waits for the acknowledgements.
    pub async fn produce(&self, records: &[WireRecord]) {
        let producer = loadgen::producer(&self.stack.bootstrap).expect("producer");
        loadgen::produce_all(&producer, records)
            .await
            .expect("produce");
    }

    /// Runs the sink in-process until it has caught up with every partition (60 s at most).
    pub async fn run_until_caught_up(&self, batch: BatchSettings) -> Summary {
        run_until_caught_up(&self.sink_config(batch)).await
    }

    pub fn key(&self, rest: &str) -> String {
        format!("t{}:{rest}", self.id)
    }

    pub fn mapping(&self, table: Table) -> String {
        format!("{}_{}", table.name(), self.id)
    }

    /// Removes every key of this scenario from Redis and deletes its topics (best effort;
    /// a failed test leaves them for inspection).
    pub fn cleanup(&self) {
        let mut redis = self.stack.redis();
        let mut keys: Vec<String> = redis.keys(format!("t{}:*", self.id)).unwrap_or_default();
        for table in [Table::Customers, Table::Orders] {
            let m = self.mapping(table);
            keys.extend(
                redis
                    .keys::<_, Vec<String>>(format!("sink:*:{m}*"))
                    .unwrap_or_default(),
            );
        }
        if !keys.is_empty() {
            let _: Result<(), _> = redis.del(keys);
        }
        let _ = std::fs::remove_file(&self.config_path);
        let topics = [
            self.topic(Table::Customers),
            self.topic(Table::Orders),
            &self.dlq,
        ];
        common::delete_topics(
            &self.stack.bootstrap,
            &topics,
            &format!("scenario {}", self.id),
        );
    }
}

/// `micros` since the epoch as the sink renders timestamps.
pub fn rfc3339_micros(micros: i64) -> String {
    chrono::DateTime::from_timestamp_micros(micros)
        .expect("timestamp in range")
        .format("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string()
}

/// A Redis hash as a sorted map.
pub fn hash(redis: &mut redis::Connection, key: &str) -> BTreeMap<String, String> {
    redis
        .hgetall(key)
        .unwrap_or_else(|e| panic!("HGETALL {key}: {e}"))
}

/// Runs the sink with `cfg` until it has caught up (panics after 60 s).
pub async fn run_until_caught_up(cfg: &SinkConfig) -> Summary {
    let run = sink::run::run(cfg, StopWhen::CaughtUp, CancellationToken::new());
    match tokio::time::timeout(Duration::from_secs(60), run).await {
        Ok(result) => result.unwrap_or_else(|e| panic!("sink failed: {e:#}")),
        Err(_) => panic!("sink did not catch up within 60 s"),
    }
}

/// Polls `check` every 100 ms until it returns `true` (panics after `timeout`).
pub async fn wait_until(what: &str, timeout: Duration, check: impl FnMut() -> bool) {
    wait_until_every(what, timeout, Duration::from_millis(100), check).await;
}

/// Polls `check` every `every` until it returns `true` (panics after `timeout`).
pub async fn wait_until_every(
    what: &str,
    timeout: Duration,
    every: Duration,
    mut check: impl FnMut() -> bool,
) {
    let start = Instant::now();
    while !check() {
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(every).await;
    }
}

/// Expected hash of a row image from the samples: every non-null column rendered.
pub fn expected_row(after: &Json, timestamps: &[&str]) -> BTreeMap<String, String> {
    after
        .as_object()
        .expect("row object")
        .iter()
        .filter(|(_, v)| !v.is_null())
        .map(|(k, v)| {
            let text = match v {
                Json::String(s) => s.clone(),
                Json::Number(n) if timestamps.contains(&k.as_str()) => {
                    rfc3339_micros(n.as_i64().expect("micros"))
                }
                other => other.to_string(),
            };
            (k.clone(), text)
        })
        .collect()
}

/// Sum of the applied offsets (+1 each) recorded in `sink:offsets` for `topic`.
pub fn applied(redis: &mut redis::Connection, topic: &str) -> i64 {
    let offsets: BTreeMap<String, String> = redis.hgetall("sink:offsets").unwrap_or_default();
    offsets
        .iter()
        .filter(|(k, _)| k.rsplit_once('/').is_some_and(|(t, _)| t == topic))
        .map(|(_, v)| v.parse::<i64>().unwrap_or(-1) + 1)
        .sum()
}

/// Asserts that Redis holds exactly the rows of `w`.
pub fn assert_state(s: &Scenario, w: &Workload) {
    let mut redis = s.stack.redis();
    let ts = ["created_at", "updated_at"];
    let customers: Vec<String> = redis.keys(s.key("customer:*")).unwrap();
    let rows: Vec<&String> = customers
        .iter()
        .filter(|k| k.matches(':').count() == 2 && !k.ends_with(":orders"))
        .collect();
    assert_eq!(rows.len(), w.customers.len(), "customer rows");
    for (id, row) in &w.customers {
        assert_eq!(
            hash(&mut redis, &s.key(&format!("customer:{id}"))),
            expected_row(row, &ts),
            "customer {id}"
        );
        let email = row["email"].as_str().unwrap();
        assert_eq!(
            redis
                .get::<_, Option<String>>(s.key(&format!("customer:email:{email}")))
                .unwrap(),
            Some(id.to_string())
        );
    }
    let emails: Vec<String> = redis.keys(s.key("customer:email:*")).unwrap();
    assert_eq!(emails.len(), w.customers.len(), "email index entries");
    let orders: Vec<String> = redis.keys(s.key("order:*")).unwrap();
    assert_eq!(orders.len(), w.orders.len(), "order rows");
    for (id, row) in &w.orders {
        assert_eq!(
            hash(&mut redis, &s.key(&format!("order:{id}"))),
            expected_row(row, &ts),
            "order {id}"
        );
    }
    let mut children: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (id, row) in &w.orders {
        children
            .entry(format!("customer:{}:orders", row["customer_id"]))
            .or_default()
            .push(id.to_string());
    }
    let sets: Vec<String> = redis.keys(s.key("customer:*:orders")).unwrap();
    assert_eq!(sets.len(), children.len(), "relation sets");
    for (key, mut members) in children {
        let mut stored: Vec<String> = redis.zrange(s.key(&key), 0, -1).unwrap();
        stored.sort();
        members.sort();
        assert_eq!(stored, members, "{key}");
    }
}

pub fn generate(n: usize) -> Workload {
    let customer = fixture("avro-customers-op_c-insert.json")["value"].clone();
    let order = fixture("avro-orders-op_c-insert.json")["value"].clone();
    workload(n, 42, &customer, &order, 1_795_480_000_000)
}

/// Key, value and headers of a record.
pub type Letter = (
    Option<Vec<u8>>,
    Option<Vec<u8>>,
    std::collections::HashMap<String, String>,
);

/// Reads `count` records of partition 0 of `topic` from the beginning.
pub fn read_topic(bootstrap: &str, topic: &str, count: usize) -> Vec<Letter> {
    let consumer: rdkafka::consumer::BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "unused")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut tpl = rdkafka::TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, rdkafka::Offset::Beginning)
        .unwrap();
    consumer.assign(&tpl).unwrap();
    let mut out = Vec::new();
    let start = Instant::now();
    while out.len() < count {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "only {} of {count} records in {topic}",
            out.len()
        );
        if let Some(message) = consumer.poll(Duration::from_millis(200)) {
            let message = message.expect("consume");
            let headers = message
                .headers()
                .map(|h| {
                    h.iter()
                        .map(|h| {
                            (
                                h.key.to_owned(),
                                String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned(),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            out.push((
                message.key().map(<[u8]>::to_vec),
                message.payload().map(<[u8]>::to_vec),
                headers,
            ));
        }
    }
    out
}
