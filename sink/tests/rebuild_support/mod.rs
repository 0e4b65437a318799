//! Shared by the `rebuild_*` tests: the real stack (Kafka, schema registry, Redis), one
//! world per test (its own topics, dead-letter topic, group and Redis logical databases),
//! Debezium records re-encoded from the recorded samples, a deterministic workload, the
//! `sink` binary, and whole-database snapshots for comparing states key by key.
//!
//! Environment: `KAFKA_BOOTSTRAP_SERVERS` (127.0.0.1:9092), `SCHEMA_REGISTRY_URL`
//! (http://127.0.0.1:8081/apis/ccompat/v7), `REDIS_URL` (redis://127.0.0.1:6379; its database
//! is ignored: each test takes databases of its own among 2..15). A missing service fails the
//! test with a message saying how to start it.
#![allow(dead_code)]

#[path = "../common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use redis::Commands;
use serde_json::{json, Value as Json};
use sink::config::{BatchSettings, SinkConfig};
use sink::pipeline::{StopWhen, Summary};
use testkit::loadgen::{self, WireEncoder, WireRecord};
use tokio_util::sync::CancellationToken;

const HOW_TO_START: &str =
    "start the stack with `tests/stack/up.sh redis kafka registry` and export its env";

/// Where the services are.
#[derive(Debug, Clone)]
pub struct Stack {
    pub bootstrap: String,
    pub registry: String,
    /// Redis URL without a database.
    pub redis: String,
}

impl Stack {
    /// From the environment, checked: panics with a clear message when a service is down.
    pub async fn get() -> Stack {
        let env =
            |name: &str, default: &str| std::env::var(name).unwrap_or_else(|_| default.to_owned());
        let redis = env("REDIS_URL", "redis://127.0.0.1:6379");
        let redis = sink::rebuild::target::with_db(&redis, 0).expect("REDIS_URL");
        let redis = redis.trim_end_matches("/0").to_owned();
        let stack = Stack {
            bootstrap: env("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"),
            registry: env(
                "SCHEMA_REGISTRY_URL",
                "http://127.0.0.1:8081/apis/ccompat/v7",
            ),
            redis,
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

    /// The URL of logical database `db`.
    pub fn url(&self, db: i64) -> String {
        format!("{}/{db}", self.redis)
    }

    /// A synchronous connection to database `db`.
    pub fn conn(&self, db: i64) -> redis::Connection {
        redis::Client::open(self.url(db))
            .and_then(|c| c.get_connection())
            .unwrap_or_else(|e| panic!("redis at {}: {e}", self.url(db)))
    }
}

/// Databases handed out in this test binary (tests of one binary run in parallel; binaries
/// run one after another).
static NEXT_DB: AtomicI64 = AtomicI64::new(2);

/// `n` consecutive databases of this test, flushed.
pub fn take_dbs(stack: &Stack, n: i64) -> Vec<i64> {
    let first = NEXT_DB.fetch_add(n, Ordering::SeqCst);
    assert!(
        first + n <= 16,
        "out of redis databases: run fewer rebuild tests per binary"
    );
    let dbs: Vec<i64> = (first..first + n).collect();
    for &db in &dbs {
        let _: () = redis::cmd("FLUSHDB")
            .query(&mut stack.conn(db))
            .expect("FLUSHDB");
    }
    dbs
}

pub use common::{rand_id, record as fixture};

/// Encoders of one table.
#[derive(Debug, Clone)]
pub struct Codec {
    pub topic: String,
    pub key: WireEncoder,
    pub value: WireEncoder,
    pub template: Json,
}

/// One test's world.
pub struct World {
    pub stack: Stack,
    pub id: String,
    pub dlq: String,
    pub customers: Codec,
    pub orders: Codec,
}

impl Drop for World {
    /// Deletes the world's topics, also after a failed test, so the broker does not gather
    /// every run's topics.
    fn drop(&mut self) {
        let owner = format!("world {}", self.id);
        common::delete_topics(&self.stack.bootstrap, &self.topics(), &owner);
    }
}

/// Topic-level settings for a compacted topic that the cleaner compacts within seconds.
pub const FAST_COMPACTION: [(&str, &str); 6] = [
    ("cleanup.policy", "compact"),
    ("segment.ms", "100"),
    ("min.cleanable.dirty.ratio", "0.01"),
    ("delete.retention.ms", "0"),
    ("min.compaction.lag.ms", "0"),
    ("max.compaction.lag.ms", "100"),
];

async fn create_topic(stack: &Stack, topic: &str, partitions: i32, settings: &[(&str, &str)]) {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    let admin: AdminClient<rdkafka::client::DefaultClientContext> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &stack.bootstrap)
        .create()
        .expect("admin");
    let mut new = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
    for (k, v) in settings {
        new = new.set(k, v);
    }
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    for result in admin
        .create_topics([&new], &options)
        .await
        .expect("create topics")
    {
        result.unwrap_or_else(|(t, e)| panic!("create topic {t}: {e}"));
    }
}

impl World {
    /// Creates the topics (`partitions` each, with `settings`) and registers the schemas.
    pub async fn new(partitions: i32, settings: &[(&str, &str)]) -> World {
        let stack = Stack::get().await;
        let id = rand_id();
        let mut codecs = Vec::new();
        for (table, sample) in [
            ("customers", "avro-customers-op_c-insert.json"),
            ("orders", "avro-orders-op_c-insert.json"),
        ] {
            let topic = format!("r{id}.public.{table}");
            create_topic(&stack, &topic, partitions, settings).await;
            let (key, value) = common::register_table(&stack.registry, &topic, table).await;
            codecs.push(Codec {
                topic,
                key,
                value,
                template: fixture(sample)["value"].clone(),
            });
        }
        let dlq = format!("r{id}-dlq");
        create_topic(&stack, &dlq, 1, &[]).await;
        let orders = codecs.pop().expect("orders");
        let customers = codecs.pop().expect("customers");
        World {
            stack,
            id,
            dlq,
            customers,
            orders,
        }
    }

    /// The world's topics.
    pub fn topics(&self) -> [&str; 3] {
        [&self.customers.topic, &self.orders.topic, &self.dlq]
    }

    /// The default mapping (the seed's key names) for Redis database `db`, group `group`.
    pub fn yaml(&self, db: i64, group: &str) -> String {
        self.yaml_with(db, group, DEFAULT_MAPPINGS)
    }

    /// `mappings` (with `{customers}`/`{orders}` for the topics) for database `db`.
    pub fn yaml_with(&self, db: i64, group: &str, mappings: &str) -> String {
        let head = format!(
            "kafka:\n  bootstrap_servers: \"{}\"\n  group_id: \"{group}\"\n  dead_letter_topic: \"{}\"\n\
             schema_registry:\n  url: \"{}\"\nredis:\n  url: \"{}\"\n",
            self.stack.bootstrap,
            self.dlq,
            self.stack.registry,
            self.stack.url(db),
        );
        head + &mappings
            .replace("{customers}", &self.customers.topic)
            .replace("{orders}", &self.orders.topic)
    }

    /// Writes a connectors.yaml for this world; returns its path.
    pub fn write_config(&self, name: &str, yaml: &str) -> PathBuf {
        let path = std::env::temp_dir().join(format!("rebuild-{}-{name}.yaml", self.id));
        std::fs::write(&path, yaml).expect("write connectors.yaml");
        path
    }

    /// A customer upsert (`op` r/c/u) at `lsn`.
    pub fn customer(&self, op: &str, id: i64, email: &str, lsn: i64) -> WireRecord {
        let after = json!({"id": id, "email": email, "name": format!("Customer {id}"), "plan": "pro",
            "mrr_cents": id * 100, "created_at": 1_795_480_942_596_973_i64, "updated_at": 1_795_480_942_596_973_i64 + lsn});
        let value = loadgen::envelope(
            &self.customers.template,
            op,
            None,
            Some(after),
            lsn,
            1_795_480_942_000 + lsn,
        );
        self.record(&self.customers, id, Some(&value))
    }

    /// A customer delete (REPLICA IDENTITY DEFAULT: `before` holds the key only).
    pub fn customer_delete(&self, id: i64, lsn: i64) -> WireRecord {
        let before = json!({"id": id, "email": "", "name": "", "plan": "free", "mrr_cents": 0,
            "created_at": 0, "updated_at": 0});
        let value = loadgen::envelope(
            &self.customers.template,
            "d",
            Some(before),
            None,
            lsn,
            1_795_480_942_000 + lsn,
        );
        self.record(&self.customers, id, Some(&value))
    }

    /// An order upsert.
    pub fn order(&self, op: &str, id: i64, customer_id: i64, lsn: i64) -> WireRecord {
        let after = json!({"id": id, "customer_id": customer_id, "status": if id % 2 == 0 { "paid" } else { "pending" },
            "total_cents": id * 7, "items": "[]", "created_at": 1_795_480_942_634_072_i64 + id * 1000,
            "updated_at": 1_795_480_942_634_072_i64 + lsn});
        let value = loadgen::envelope(
            &self.orders.template,
            op,
            None,
            Some(after),
            lsn,
            1_795_480_942_000 + lsn,
        );
        self.record(&self.orders, id, Some(&value))
    }

    /// An order delete.
    pub fn order_delete(&self, id: i64, lsn: i64) -> WireRecord {
        let before = json!({"id": id, "customer_id": null, "status": "pending", "total_cents": 0, "items": "",
            "created_at": 0, "updated_at": 0});
        let value = loadgen::envelope(
            &self.orders.template,
            "d",
            Some(before),
            None,
            lsn,
            1_795_480_942_000 + lsn,
        );
        self.record(&self.orders, id, Some(&value))
    }

    /// A tombstone of `id` in the customers (`orders == false`) or orders topic.
    pub fn tombstone(&self, orders: bool, id: i64) -> WireRecord {
        let codec = if orders {
            &self.orders
        } else {
            &self.customers
        };
        self.record(codec, id, None)
    }

    fn record(&self, codec: &Codec, id: i64, value: Option<&Json>) -> WireRecord {
        WireRecord {
            topic: codec.topic.clone(),
            key: Some(codec.key.encode(&json!({"id": id})).expect("encode key")),
            value: value.map(|v| codec.value.encode(v).expect("encode value")),
            headers: vec![],
        }
    }

    pub async fn produce(&self, records: &[WireRecord]) {
        let producer = loadgen::producer(&self.stack.bootstrap).expect("producer");
        loadgen::produce_all(&producer, records)
            .await
            .expect("produce");
    }

    /// A workload over `customers` customers and `2 * customers` orders starting at
    /// position `lsn0`: snapshot, updates with email changes, order moves, deletes with
    /// tombstones, re-inserts.
    pub fn workload(&self, customers: i64, lsn0: i64) -> Vec<WireRecord> {
        let mut out = Vec::new();
        let mut lsn = lsn0;
        let mut next = || {
            lsn += 10;
            lsn
        };
        for id in 1..=customers {
            out.push(self.customer("r", id, &format!("c{id}@example.com"), next()));
        }
        for id in 1..=2 * customers {
            out.push(self.order("r", id, (id % customers) + 1, next()));
        }
        for id in 1..=customers {
            match id % 5 {
                0 => {
                    out.push(self.customer_delete(id, next()));
                    out.push(self.tombstone(false, id));
                }
                1 => out.push(self.customer("u", id, &format!("changed{id}@example.com"), next())),
                2 => out.push(self.order("u", id, ((id + 3) % customers) + 1, next())),
                3 => {
                    out.push(self.order_delete(2 * id, next()));
                    out.push(self.tombstone(true, 2 * id));
                }
                _ => out.push(self.customer("u", id, &format!("c{id}@example.com"), next())),
            }
        }
        out
    }

    /// Builds `db` from the whole log with the library (`sink run` until caught up), with a
    /// fresh group: the reference state.
    pub async fn clean_build(&self, db: i64, mappings: &str) -> Summary {
        let group = format!("r{}-ref-{}", self.id, rand_id());
        let path = self.write_config(&format!("ref{db}"), &self.yaml_with(db, &group, mappings));
        let config = mapping::load_config(&path, &mapping::ConnectionOverrides::default())
            .unwrap_or_else(|e| panic!("config does not load:\n{e}"));
        let cfg = SinkConfig::new(config, &[], BatchSettings::default());
        let run = sink::run::run(&cfg, StopWhen::CaughtUp, CancellationToken::new());
        match tokio::time::timeout(Duration::from_secs(120), run).await {
            Ok(result) => result.unwrap_or_else(|e| panic!("clean build failed: {e:#}")),
            Err(_) => panic!("clean build did not catch up within 120 s"),
        }
    }
}

/// The default mapping file's mappings, for this world's topics (with its name search and
/// order aggregate, which a rebuild must restore like every other key).
pub const DEFAULT_MAPPINGS: &str = r#"mappings:
  - name: customers
    topic: "{customers}"
    key: "customer:{id}"
    fields: all
    indexes:
      - name: email
        key: "customer:email:{email}"
    search:
      - { name: name_prefix, field: name }
  - name: orders
    topic: "{orders}"
    key: "order:{id}"
    fields: all
    relations:
      - name: customer_orders
        key: "customer:{customer_id}:orders"
        order_by: created_at
    aggregates:
      - name: customer_order_stats
        key: "customer:{customer_id}:order_stats"
        count: true
        sum: [total_cents]
        group_by: status
"#;

/// The `sink` binary, without the environment variables that would override the file.
pub fn sink(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sink"));
    cmd.args(args);
    for var in [
        "REDIS_URL",
        "KAFKA_BOOTSTRAP_SERVERS",
        "SCHEMA_REGISTRY_URL",
        "SINK_GROUP_ID",
        "SINK_BATCH_SIZE",
        "SINK_LINGER_MS",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("RUST_LOG", "info");
    cmd
}

/// Runs `sink rebuild --config path extra...` to the end (at most `timeout`).
pub fn rebuild(config: &Path, extra: &[&str], timeout: Duration) -> Output {
    let path = config.to_str().expect("utf-8 path");
    let mut args = vec!["rebuild", "--config", path];
    args.extend_from_slice(extra);
    let child = sink(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sink rebuild");
    wait_output(child, timeout)
}

/// Waits for `child` (kills it after `timeout`).
pub fn wait_output(mut child: Child, timeout: Duration) -> Output {
    let start = Instant::now();
    loop {
        if child.try_wait().expect("try_wait").is_some() {
            return child.wait_with_output().expect("output");
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!(
                "timed out after {timeout:?}\nstdout:\n{}\nstderr:\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Sends SIGTERM to a child we started.
pub fn terminate(child: &Child) {
    let status = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .expect("kill");
    assert!(status.success(), "kill -TERM {}", child.id());
}

/// Asserts success, returns stdout; shows both streams otherwise.
pub fn assert_ok(out: &Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "exit {:?}\nstdout:\n{stdout}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// One key's type and content, comparable.
#[derive(Debug, Clone, PartialEq)]
pub enum Content {
    String(String),
    Hash(BTreeMap<String, String>),
    ZSet(Vec<(String, String)>),
    Other(String),
}

/// Bookkeeping fields that hold wall-clock times (or counts of work done, with `counts`).
fn volatile(key: &str, field: &str, counts: bool) -> bool {
    key.starts_with("sink:freshness:")
        && (field.ends_with("_at_ms") || (counts && field == "applied_count"))
}

/// Every key of database `db` with its content, except `sink:rebuild*` (the rebuild's own
/// metadata and lock), `sink:snapshot:*` (a stopped exclusive writer's copy of the
/// bookkeeping, for the next one), `sink:shared:*` (shared sinks announcing themselves:
/// who runs, not what is stored) and wall-clock fields; `counts` also drops `applied_count`.
pub fn snapshot(stack: &Stack, db: i64, counts: bool) -> BTreeMap<String, Content> {
    let mut conn = stack.conn(db);
    let keys: Vec<String> = conn.keys("*").expect("KEYS");
    let mut out = BTreeMap::new();
    for key in keys {
        if key.starts_with("sink:rebuild")
            || key.starts_with("sink:snapshot:")
            || key.starts_with("sink:shared:")
        {
            continue;
        }
        let kind: String = redis::cmd("TYPE").arg(&key).query(&mut conn).expect("TYPE");
        let content = match kind.as_str() {
            "string" => Content::String(conn.get(&key).expect("GET")),
            "hash" => {
                let mut h: BTreeMap<String, String> = conn.hgetall(&key).expect("HGETALL");
                h.retain(|f, _| !volatile(&key, f, counts));
                if key == mapping::layout::OFFSETS_RUN_KEY {
                    // A marker's fencing token is fresh for every assignment: only the server
                    // run it names is state.
                    for mark in h.values_mut() {
                        *mark = sink::apply::run_of(mark).to_owned();
                    }
                }
                Content::Hash(h)
            }
            "zset" => Content::ZSet(conn.zrange_withscores(&key, 0, -1).expect("ZRANGE")),
            "none" => continue,
            other => Content::Other(other.to_owned()),
        };
        out.insert(key, content);
    }
    out
}

/// Asserts that two snapshots are equal, listing the differences.
pub fn assert_same(
    actual: &BTreeMap<String, Content>,
    expected: &BTreeMap<String, Content>,
    what: &str,
) {
    let mut diffs = Vec::new();
    for (k, v) in expected {
        match actual.get(k) {
            None => diffs.push(format!("missing {k}: {v:?}")),
            Some(a) if a != v => diffs.push(format!("differs {k}: {a:?} != expected {v:?}")),
            _ => {}
        }
    }
    for k in actual.keys() {
        if !expected.contains_key(k) {
            diffs.push(format!("extra {k}: {:?}", actual[k]));
        }
    }
    assert!(
        diffs.is_empty(),
        "{what}: {} difference(s) over {} expected keys:\n{}",
        diffs.len(),
        expected.len(),
        diffs
            .iter()
            .take(40)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// Polls `check` every 100 ms until it returns `true` (panics after `timeout`).
pub async fn wait_until(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
