//! Shared fixture of the `apply_*` tests: a real Redis (`REDIS_URL`, default
//! `redis://127.0.0.1:6379`), the default mappings rewritten under a random key prefix and
//! mapping names (so tests run in parallel on one database), change builders mirroring the
//! recorded Debezium samples, and a dump of every key a test owns.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use deadpool_redis::Pool;
use mapping::{
    model::Search, Change, Config, FieldSelection, FieldValue, FreshnessConfig, Index, KafkaConfig,
    KeyTemplate, Mapping, Op, RedisConfig, Relation, Row, SchemaRegistryConfig,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sink::apply::{Applier, BatchOutcome, PlannedChange};

/// Index of the customers mapping.
pub const CUSTOMERS: usize = 0;
/// Index of the orders mapping.
pub const ORDERS: usize = 1;

/// `created_at` of the samples' customer 1 (epoch microseconds).
pub const T0: i64 = 1_795_480_593_142_906;

pub struct Fixture {
    /// Random tag: keys start with `{tag}:`, mapping names with `{tag}_`.
    pub tag: String,
    pub config: Config,
    pub applier: Applier,
    pub pool: Pool,
    pub topics: [Arc<str>; 2],
    next_offset: [AtomicI64; 2],
}

pub fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

fn tpl(s: &str) -> KeyTemplate {
    KeyTemplate::parse(s).unwrap_or_else(|e| panic!("template {s}: {e}"))
}

/// The default `connectors.yaml` mappings, under `tag`.
pub fn config(tag: &str, ttl_seconds: Option<u64>) -> Config {
    Config {
        kafka: KafkaConfig {
            bootstrap_servers: "127.0.0.1:9092".into(),
            group_id: "test".into(),
            dead_letter_topic: "dlq".into(),
            properties: BTreeMap::new(),
        },
        schema_registry: SchemaRegistryConfig::from_url("http://127.0.0.1:8081"),
        redis: RedisConfig::from_url(redis_url()),
        redis_memory: Default::default(),
        freshness: FreshnessConfig {
            stale_after_ms: 30_000,
        },
        batch: mapping::BatchConfig::default(),
        sources: Vec::new(),
        mappings: vec![
            Mapping {
                name: format!("{tag}_customers"),
                topic: format!("{tag}.cdc.public.customers"),
                key: tpl(&format!("{tag}:customer:{{id}}")),
                fields: FieldSelection::All,
                types: Default::default(),
                ttl_seconds,
                indexes: vec![Index {
                    name: "email".into(),
                    key: tpl(&format!("{tag}:customer:email:{{email}}")),
                }],
                relations: vec![],
                lookups: vec![],
                aggregates: vec![],
                search: vec![Search {
                    name: "name_prefix".into(),
                    field: "name".into(),
                }],
            },
            Mapping {
                name: format!("{tag}_orders"),
                topic: format!("{tag}.cdc.public.orders"),
                key: tpl(&format!("{tag}:order:{{id}}")),
                fields: FieldSelection::All,
                types: Default::default(),
                ttl_seconds: None,
                indexes: vec![],
                relations: vec![Relation {
                    name: "customer_orders".into(),
                    key: tpl(&format!("{tag}:customer:{{customer_id}}:orders")),
                    order_by: "created_at".into(),
                }],
                lookups: vec![],
                aggregates: vec![],
                search: vec![],
            },
        ],
    }
}

/// A pool on `REDIS_URL` (the sink's, with its 30 s response timeout: the shared test Redis
/// can be slow to answer `KEYS` under load); panics (the test fails) when Redis does not
/// answer.
pub async fn pool() -> Pool {
    let url = redis_url();
    let pool =
        sink::connection::redis_pool(&url).unwrap_or_else(|e| panic!("redis pool for {url}: {e}"));
    let mut conn = pool.get().await.unwrap_or_else(|e| {
        panic!("redis at {url} is unreachable ({e}); start it with tests/stack/redis.sh start or set REDIS_URL")
    });
    let pong: String = redis::cmd("PING")
        .query_async(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("PING {url}: {e}"));
    assert_eq!(pong, "PONG");
    pool
}

impl Fixture {
    pub async fn new() -> Fixture {
        Fixture::with_ttl(None).await
    }

    pub async fn with_ttl(ttl_seconds: Option<u64>) -> Fixture {
        Fixture::build(ttl_seconds, false).await
    }

    /// With [`Applier::owning`] (the rebuild's applier) instead of the script.
    pub async fn owning() -> Fixture {
        Fixture::build(None, true).await
    }

    /// With [`Applier::rebuilding`] (the rebuild's applier, holding the rows' positions
    /// back) instead of the script.
    pub async fn rebuilding() -> Fixture {
        let owning = Fixture::owning().await;
        let applier = Applier::rebuilding(owning.pool.clone(), &owning.config);
        owning.handed_to(applier)
    }

    /// With [`Applier::exclusive`] (lease time `lease`) on `pool`, once it holds the lease.
    pub async fn exclusive_on(pool: Pool, lease: std::time::Duration) -> Fixture {
        let script = Fixture::build_on(None, false, pool).await;
        let applier = script.exclusive_applier(lease).await;
        script.handed_to(applier)
    }

    /// A script fixture for `other`'s mappings and keys on `pool` (another database).
    pub async fn build_like(other: &Fixture, pool: Pool) -> Fixture {
        Fixture {
            tag: other.tag.clone(),
            config: other.config.clone(),
            applier: Applier::new(pool.clone(), &other.config),
            pool,
            topics: other.topics.clone(),
            next_offset: [AtomicI64::new(0), AtomicI64::new(0)],
        }
    }

    /// An exclusive applier for this fixture's mappings, once it holds the lease.
    pub async fn exclusive_applier(&self, lease: std::time::Duration) -> Applier {
        let applier = Applier::exclusive(
            self.pool.clone(),
            &self.config,
            &sink::apply::WriterId::new(),
            lease,
            sink::apply::DEFAULT_MAX_WRITER_MEMORY,
            &tokio_util::sync::CancellationToken::new(),
        )
        .await
        .unwrap_or_else(|e| {
            panic!(
                "exclusive applier: {e}: {:?}",
                std::error::Error::source(&e)
            )
        })
        .expect("not cancelled");
        assert!(applier.is_owning());
        applier
    }

    /// The orders' relation filtered by `status` too (what a lookup's `filters:` on
    /// `status` makes the loader add, `mapping::layout::filtered_relation_key`), written by a
    /// new applier of the same kind.
    pub fn with_status_filter(mut self) -> Fixture {
        let orders = &mut self.config.mappings[ORDERS];
        let base = orders.relations[0].clone();
        orders.relations.push(Relation {
            name: mapping::layout::filtered_relation_name(&base.name, &["status"]),
            key: tpl(&mapping::layout::filtered_relation_key(
                &base.key.source,
                &["status"],
            )),
            order_by: base.order_by,
        });
        let applier = if self.applier.is_owning() {
            Applier::owning(self.pool.clone(), &self.config)
        } else {
            Applier::new(self.pool.clone(), &self.config)
        };
        Fixture { applier, ..self }
    }

    /// The same mappings, keys and offsets, written by `applier` from now on.
    pub fn handed_to(self, applier: Applier) -> Fixture {
        Fixture { applier, ..self }
    }

    /// [`Fixture::owning`] on another Redis.
    pub async fn owning_on(url: &str) -> Fixture {
        Fixture::build_on(
            None,
            true,
            sink::connection::redis_pool(url).expect("redis pool"),
        )
        .await
    }

    async fn build(ttl_seconds: Option<u64>, owning: bool) -> Fixture {
        Fixture::build_on(ttl_seconds, owning, pool().await).await
    }

    async fn build_on(ttl_seconds: Option<u64>, owning: bool, pool: Pool) -> Fixture {
        let tag = format!("t{:08x}", rand::random::<u32>());
        let config = config(&tag, ttl_seconds);
        let applier = if owning {
            Applier::owning(pool.clone(), &config)
        } else {
            Applier::new(pool.clone(), &config)
        };
        Fixture {
            topics: [
                Arc::from(config.mappings[0].topic.as_str()),
                Arc::from(config.mappings[1].topic.as_str()),
            ],
            tag,
            config,
            applier,
            pool,
            next_offset: [AtomicI64::new(0), AtomicI64::new(0)],
        }
    }

    /// Plans `change` for mapping `m` at the next offset of its topic (partition 0).
    pub fn planned(&self, m: usize, change: &Change) -> PlannedChange {
        let plan = mapping::plan(&self.config.mappings[m], change.clone())
            .unwrap_or_else(|e| panic!("plan {change:?}: {e}"));
        PlannedChange {
            mapping: m,
            op: change.op,
            plan,
            source_ts_ms: change.source_ts_ms,
            topic: self.topics[m].clone(),
            partition: 0,
            offset: self.next_offset[m].fetch_add(1, Ordering::Relaxed),
            record_time: None,
        }
    }

    pub fn plan_all(&self, changes: &[(usize, Change)]) -> Vec<PlannedChange> {
        changes.iter().map(|(m, c)| self.planned(*m, c)).collect()
    }

    /// Plans and applies `changes` as one batch.
    pub async fn apply(&self, changes: &[(usize, Change)]) -> BatchOutcome {
        let batch = self.plan_all(changes);
        self.applier
            .apply_batch(&batch)
            .await
            .unwrap_or_else(|e| panic!("apply_batch: {e}: {:?}", std::error::Error::source(&e)))
    }

    pub async fn conn(&self) -> deadpool_redis::Connection {
        self.pool.get().await.expect("redis connection")
    }

    /// Every key this test owns, with its full content, rendered as text with the tag
    /// replaced by `P`. `applied_at_ms` is shown as `<ms>` unless `exact`.
    pub async fn dump_with(&self, exact: bool) -> String {
        let offsets: Vec<String> = self.topics.iter().map(|t| format!("{t}/0")).collect();
        dump_tagged(&self.pool, &self.tag, &offsets, exact).await
    }

    pub async fn dump(&self) -> String {
        self.dump_with(false).await
    }

    /// `dump()` without the bookkeeping keys (`sink:*`).
    pub async fn dump_data(&self) -> String {
        let all = self.dump().await;
        let mut out = String::new();
        let mut keep = false;
        for line in all.lines() {
            if !line.starts_with(' ') {
                keep = !line.starts_with("sink:");
            }
            if keep {
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }
}

/// Every key of `tag` (keys `{tag}:*`, bookkeeping `sink:*{tag}_*` and the `sink:offsets`
/// fields named in `offsets`), with its full content, rendered as text with the tag replaced
/// by `P`. `applied_at_ms` is shown as `<ms>` unless `exact`.
pub async fn dump_tagged(pool: &Pool, tag: &str, offsets: &[String], exact: bool) -> String {
    let mut conn = pool.get().await.expect("redis connection");
    let mut keys: Vec<String> = Vec::new();
    for pattern in [format!("{tag}:*"), format!("sink:*{tag}_*")] {
        let mut found: Vec<String> = redis::cmd("KEYS")
            .arg(&pattern)
            .query_async(&mut conn)
            .await
            .expect("KEYS");
        keys.append(&mut found);
    }
    // An exclusive writer's lease is who writes, not what was written; its snapshot a copy
    // of the bookkeeping for the next one (`sink/tests/apply/snapshot.rs`).
    keys.retain(|k| !k.starts_with("sink:writer:") && !k.starts_with("sink:snapshot:"));
    keys.sort();
    let mut out = String::new();
    for key in keys {
        let ty: String = redis::cmd("TYPE")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .expect("TYPE");
        let ttl: i64 = redis::cmd("TTL")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .expect("TTL");
        let shown = key.replace(tag, "P");
        let ttl = if ttl >= 0 { " (expires)" } else { "" };
        match ty.as_str() {
            "string" => {
                let v: String = redis::cmd("GET")
                    .arg(&key)
                    .query_async(&mut conn)
                    .await
                    .expect("GET");
                writeln!(out, "{shown}{ttl} = {}", v.replace(tag, "P")).ok();
            }
            "hash" => {
                let h: BTreeMap<String, String> = redis::cmd("HGETALL")
                    .arg(&key)
                    .query_async(&mut conn)
                    .await
                    .expect("HGETALL");
                writeln!(out, "{shown}{ttl} (hash)").ok();
                for (f, v) in h {
                    let v = if f == "applied_at_ms" && !exact {
                        "<ms>".to_owned()
                    } else {
                        shown_text(&v, tag)
                    };
                    writeln!(out, "  {} = {v}", f.replace(tag, "P")).ok();
                }
            }
            "zset" => {
                let z: Vec<(String, String)> = redis::cmd("ZREVRANGE")
                    .arg(&key)
                    .arg(0)
                    .arg(-1)
                    .arg("WITHSCORES")
                    .query_async(&mut conn)
                    .await
                    .expect("ZREVRANGE");
                writeln!(out, "{shown}{ttl} (zset, newest first)").ok();
                for (m, s) in z {
                    writeln!(out, "  {} @ {s}", shown_text(&m, tag)).ok();
                }
            }
            other => {
                writeln!(out, "{shown} ({other})").ok();
            }
        }
    }
    for field in offsets {
        let v: Option<String> = redis::cmd("HGET")
            .arg("sink:offsets")
            .arg(field)
            .query_async(&mut conn)
            .await
            .expect("HGET sink:offsets");
        if let Some(v) = v {
            writeln!(out, "sink:offsets {} = {v}", field.replace(tag, "P")).ok();
        }
    }
    out
}

/// A stored text as dumps show it: the tag as `P` (search members hold row keys), NUL
/// (which separates a search member's parts) as `\0`.
fn shown_text(text: &str, tag: &str) -> String {
    text.replace(tag, "P").replace('\0', "\\0")
}

// ---- changes mirroring /work/shared/reference/debezium/samples ----

fn ts(micros: i64) -> FieldValue {
    FieldValue::TimestampMicros(micros)
}

pub fn customer_row(id: i64, email: &str, name: &str, updated_at: i64) -> Row {
    vec![
        ("id".into(), FieldValue::Int(id)),
        ("email".into(), FieldValue::String(email.into())),
        ("name".into(), FieldValue::String(name.into())),
        ("plan".into(), FieldValue::String("pro".into())),
        ("mrr_cents".into(), FieldValue::Int(4900)),
        ("created_at".into(), ts(T0)),
        ("updated_at".into(), ts(updated_at)),
    ]
}

pub fn order_row(id: i64, customer_id: Option<i64>, created_at: i64) -> Row {
    vec![
        ("id".into(), FieldValue::Int(id)),
        (
            "customer_id".into(),
            customer_id.map_or(FieldValue::Null, FieldValue::Int),
        ),
        ("status".into(), FieldValue::String("shipped".into())),
        ("total_cents".into(), FieldValue::Int(12000)),
        (
            "items".into(),
            FieldValue::Json(r#"[{"qty": 1, "sku": "HOODIE", "price_cents": 12000}]"#.into()),
        ),
        ("created_at".into(), ts(created_at)),
        ("updated_at".into(), ts(created_at)),
    ]
}

fn key(id: i64) -> Row {
    vec![("id".into(), FieldValue::Int(id))]
}

/// `r`/`c`/`u` with `before = null` (REPLICA IDENTITY DEFAULT).
pub fn upsert(op: Op, row: Row, lsn: i64) -> Change {
    let id = match row.first() {
        Some((_, FieldValue::Int(id))) => *id,
        _ => panic!("row without id first"),
    };
    Change {
        op,
        key: key(id),
        before: None,
        after: Some(row),
        position: Some(lsn),
        source_ts_ms: Some(lsn / 1000 + 1_795_480_000_000),
    }
}

/// An upsert of customer `id` with `email` (name "Name") for mapping `CUSTOMERS`.
pub fn customer_upsert(op: Op, id: i64, email: &str, lsn: i64) -> (usize, Change) {
    (
        CUSTOMERS,
        upsert(op, customer_row(id, email, "Name", T0), lsn),
    )
}

/// An upsert of order `id` of `customer` (created at `T0 + id`) for mapping `ORDERS`.
pub fn order_upsert(op: Op, id: i64, customer: Option<i64>, lsn: i64) -> (usize, Change) {
    (ORDERS, upsert(op, order_row(id, customer, T0 + id), lsn))
}

/// `d` under REPLICA IDENTITY DEFAULT: `before` holds the key and Avro defaults.
pub fn delete_customer(id: i64, lsn: i64) -> Change {
    Change {
        op: Op::Delete,
        key: key(id),
        before: Some(vec![
            ("id".into(), FieldValue::Int(id)),
            ("email".into(), FieldValue::String(String::new())),
            ("name".into(), FieldValue::String(String::new())),
            ("plan".into(), FieldValue::String(String::new())),
            ("mrr_cents".into(), FieldValue::Int(0)),
            ("created_at".into(), ts(0)),
            ("updated_at".into(), ts(0)),
        ]),
        after: None,
        position: Some(lsn),
        source_ts_ms: Some(lsn / 1000 + 1_795_480_000_000),
    }
}

/// `d` of an order under REPLICA IDENTITY DEFAULT (the recorded sample's `before`).
pub fn delete_order(id: i64, lsn: i64) -> Change {
    Change {
        op: Op::Delete,
        key: key(id),
        before: Some(vec![
            ("id".into(), FieldValue::Int(id)),
            ("customer_id".into(), FieldValue::Null),
            ("status".into(), FieldValue::String("pending".into())),
            ("total_cents".into(), FieldValue::Int(0)),
            ("items".into(), FieldValue::Json(String::new())),
            ("created_at".into(), ts(0)),
            ("updated_at".into(), ts(0)),
        ]),
        after: None,
        position: Some(lsn),
        source_ts_ms: Some(lsn / 1000 + 1_795_480_000_000),
    }
}

/// The tombstone after a delete: key only, no position, Kafka timestamp.
pub fn tombstone(id: i64) -> Change {
    Change {
        op: Op::Tombstone,
        key: key(id),
        before: None,
        after: None,
        position: None,
        source_ts_ms: Some(1_795_480_946_657),
    }
}

pub fn truncate(lsn: i64) -> Change {
    Change {
        op: Op::Truncate,
        key: vec![],
        before: None,
        after: None,
        position: Some(lsn),
        source_ts_ms: Some(lsn / 1000 + 1_795_480_000_000),
    }
}

/// `s` without its common indentation and surrounding blank lines, ending in a newline.
pub fn dedent(s: &str) -> String {
    let lines: Vec<&str> = s.lines().skip_while(|l| l.trim().is_empty()).collect();
    let margin = lines
        .iter()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.len() - l.trim_start().len())
        .min()
        .unwrap_or(0);
    let mut out = String::new();
    for l in lines {
        out.push_str(l.get(margin..).unwrap_or("").trim_end());
        out.push('\n');
    }
    while out.ends_with("\n\n") {
        out.pop();
    }
    out
}

/// Asserts the exact dump (see [`Fixture::dump`]).
pub async fn assert_state(f: &Fixture, expected: &str) {
    let actual = f.dump().await;
    let expected = dedent(expected);
    assert!(
        actual == expected,
        "redis state differs\n--- expected\n{expected}--- actual\n{actual}"
    );
}

/// A consistent source history (unique emails at every position) of customers and orders,
/// each row's changes in order, rows spread over partitions delivered in a random
/// interleaving, in random batches, with redelivered suffixes.
pub fn random_history(seed: u64) -> Vec<Vec<(usize, Change)>> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut lsn = 1_000;
    let mut email_of: std::collections::BTreeMap<i64, String> = Default::default();
    let mut orders: std::collections::BTreeMap<i64, Option<i64>> = Default::default();
    // Per partition, in source order.
    let mut partitions: Vec<Vec<(usize, Change)>> = vec![Vec::new(); 3];
    for _ in 0..400 {
        lsn += 10;
        let roll = rng.random_range(0..100);
        if roll < 45 {
            let id = rng.random_range(1..12_i64);
            let taken: Vec<&String> = email_of.values().collect();
            let free: Vec<String> = (0..14)
                .map(|e| format!("e{e}@example.com"))
                .filter(|e| !taken.contains(&e))
                .collect();
            let email = free[rng.random_range(0..free.len())].clone();
            let op = if email_of.contains_key(&id) {
                Op::Update
            } else {
                Op::Create
            };
            email_of.insert(id, email.clone());
            // Names that fold together, apart and beyond ASCII (the search follows them);
            // taken from the position so that the random stream stays what it was.
            let name = ["Jane", "JANE", "jane doe", "Ågot", "ÅGOT ø"][(lsn / 10 % 5) as usize];
            partitions[(id % 3) as usize].push((
                CUSTOMERS,
                upsert(op, customer_row(id, &email, name, T0 + lsn), lsn),
            ));
        } else if roll < 55 {
            let id = rng.random_range(1..12_i64);
            if email_of.remove(&id).is_some() {
                let p = &mut partitions[(id % 3) as usize];
                p.push((CUSTOMERS, delete_customer(id, lsn)));
                p.push((CUSTOMERS, tombstone(id)));
            }
        } else if roll < 85 {
            let id = rng.random_range(1..20_i64);
            let customer = if rng.random_range(0..8) == 0 {
                None
            } else {
                Some(rng.random_range(1..12_i64))
            };
            let op = if orders.contains_key(&id) {
                Op::Update
            } else {
                Op::Create
            };
            orders.insert(id, customer);
            let mut row = order_row(id, customer, T0 + rng.random_range(0..5) * 1_000_000);
            if op == Op::Update && rng.random_range(0..4) == 0 {
                for (name, value) in &mut row {
                    if name == "items" || name == "created_at" {
                        *value = FieldValue::Unavailable;
                    }
                }
            }
            partitions[(id % 3) as usize].push((ORDERS, upsert(op, row, lsn)));
        } else if roll < 97 {
            let id = rng.random_range(1..20_i64);
            if orders.remove(&id).is_some() {
                let p = &mut partitions[(id % 3) as usize];
                p.push((ORDERS, delete_order(id, lsn)));
                p.push((ORDERS, tombstone(id)));
            }
        } else {
            orders.clear();
            partitions[0].push((ORDERS, truncate(lsn)));
        }
    }
    // Deliver: pick a partition, take a batch of its next changes; sometimes redeliver.
    let mut next = vec![0_usize; partitions.len()];
    let mut batches = Vec::new();
    while next.iter().zip(&partitions).any(|(n, p)| *n < p.len()) {
        let p = rng.random_range(0..partitions.len());
        if next[p] >= partitions[p].len() {
            continue;
        }
        if next[p] > 0 && rng.random_range(0..10) == 0 {
            next[p] -= rng.random_range(1..=next[p].min(8));
        }
        let end = (next[p] + rng.random_range(1..12)).min(partitions[p].len());
        batches.push(partitions[p][next[p]..end].to_vec());
        next[p] = end;
    }
    batches
}

/// A private `redis-server` on a free port, killed on drop.
pub struct PrivateRedis {
    child: std::process::Child,
    pub url: String,
    /// For `CONFIG SET`.
    admin: redis::Connection,
}

impl PrivateRedis {
    pub fn start() -> PrivateRedis {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = std::process::Command::new("redis-server")
            .args([
                "--bind",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server must be installed (tests/stack/redis.sh installs it)");
        let url = format!("redis://127.0.0.1:{port}");
        let admin = loop {
            if let Ok(c) = redis::Client::open(url.as_str()).and_then(|c| c.get_connection()) {
                break c;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        };
        PrivateRedis { child, url, admin }
    }

    /// `ACL SETUSER name rules...`.
    pub fn acl_setuser(&mut self, name: &str, rules: &[&str]) {
        let _: () = redis::cmd("ACL")
            .arg("SETUSER")
            .arg(name)
            .arg(rules)
            .query(&mut self.admin)
            .unwrap();
    }

    /// `CONFIG SET maxmemory` (`1`: every write is refused; `0`: no limit).
    pub fn set_maxmemory(&mut self, bytes: &str) {
        let _: () = redis::cmd("CONFIG")
            .arg("SET")
            .arg("maxmemory")
            .arg(bytes)
            .query(&mut self.admin)
            .unwrap();
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The aggregate of the default `connectors.yaml` (`customer_order_stats`), under `tag`.
pub fn order_stats(tag: &str) -> mapping::Aggregate {
    mapping::Aggregate {
        name: "customer_order_stats".into(),
        key: tpl(&format!("{tag}:customer:{{customer_id}}:order_stats")),
        count: true,
        sum: vec!["total_cents".into()],
        group_by: Some("status".into()),
    }
}

impl Fixture {
    /// This fixture's mappings with [`order_stats`] on the orders, written by a new applier
    /// of the same kind (script or owning).
    pub fn with_order_stats(mut self) -> Fixture {
        self.config.mappings[ORDERS]
            .aggregates
            .push(order_stats(&self.tag));
        let applier = if self.applier.is_owning() {
            Applier::owning(self.pool.clone(), &self.config)
        } else {
            Applier::new(self.pool.clone(), &self.config)
        };
        Fixture { applier, ..self }
    }
}

/// `history` with every order upsert's status and amount varied by its position (status
/// paid, pending, refunded or NULL; amount an integer, a decimal with cents, or NULL), so
/// that aggregates see amount, group and parent changes; a redelivered change keeps its
/// values.
pub fn with_varied_orders(mut history: Vec<Vec<(usize, Change)>>) -> Vec<Vec<(usize, Change)>> {
    for (m, change) in history.iter_mut().flatten() {
        let (Some(p), Some(row)) = (change.position, change.after.as_mut()) else {
            continue;
        };
        if *m != ORDERS {
            continue;
        }
        for (name, value) in row.iter_mut() {
            match name.as_str() {
                "status" => {
                    *value = match p % 7 {
                        0 => FieldValue::Null,
                        n => FieldValue::String(
                            ["paid", "pending", "refunded"][n as usize % 3].into(),
                        ),
                    }
                }
                "total_cents" => {
                    *value = match p % 5 {
                        0 => FieldValue::Null,
                        1 | 2 => FieldValue::Int(p % 1000 - 300),
                        _ => FieldValue::Decimal {
                            unscaled: (p * 7 % 100_003).to_be_bytes().to_vec(),
                            scale: 2,
                        },
                    }
                }
                _ => {}
            }
        }
    }
    history
}
