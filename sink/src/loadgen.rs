//! Debezium change events in the real wire format, made up from templates: registers schemas
//! in a Confluent-compatible registry, encodes JSON records (Avro's JSON shape with unions
//! unwrapped, as in the recorded samples) to Avro through those schemas, and produces them
//! to Kafka. Used by the integration tests and by `sink-bench`; the sink itself never uses it.

use std::collections::HashMap;
use std::time::Duration;

use apache_avro::types::Value;
use apache_avro::Schema;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::KafkaError;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::ClientConfig;
use schema_registry_converter::async_impl::schema_registry::{post_schema, SrSettings};
use schema_registry_converter::error::SRCError;
use schema_registry_converter::schema_registry_common::{SchemaType, SuppliedSchema};
use serde_json::Value as Json;
use thiserror::Error;

/// Why generating or producing events failed.
#[derive(Debug, Error)]
pub enum LoadgenError {
    /// The registry refused or could not be reached.
    #[error("registering subject {subject} at {url}")]
    Register {
        /// Subject.
        subject: String,
        /// Registry URL.
        url: String,
        /// What went wrong.
        #[source]
        source: SRCError,
    },
    /// The schema text is not a valid Avro schema.
    #[error("invalid avro schema")]
    Schema(#[source] apache_avro::Error),
    /// The JSON record does not fit the schema.
    #[error("record does not fit the schema at {path}: {problem}")]
    Shape {
        /// Field path.
        path: String,
        /// What does not fit.
        problem: String,
    },
    /// apache-avro refused the value.
    #[error("avro encoding failed")]
    Encode(#[source] apache_avro::Error),
    /// Kafka failed.
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
}

/// Registers `schema` (Avro JSON text) under `subject`; returns its id.
pub async fn register(
    registry_url: &str,
    subject: &str,
    schema: &str,
) -> Result<u32, LoadgenError> {
    let settings = SrSettings::new(registry_url.trim_end_matches('/').to_owned());
    let supplied = SuppliedSchema::new(None, SchemaType::Avro, schema.to_owned());
    post_schema(&settings, subject.to_owned(), supplied)
        .await
        .map(|registered| registered.id)
        .map_err(|source| LoadgenError::Register {
            subject: subject.to_owned(),
            url: registry_url.to_owned(),
            source,
        })
}

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

/// A Debezium envelope like `template` (a recorded sample's value: `source` and the other
/// fields are kept) with another operation, row images, position and times.
pub fn envelope(
    template: &Json,
    op: &str,
    before: Option<Json>,
    after: Option<Json>,
    lsn: i64,
    ts_ms: i64,
) -> Json {
    let mut value = template.clone();
    if let Some(object) = value.as_object_mut() {
        object.insert("op".into(), Json::from(op));
        object.insert("before".into(), before.unwrap_or(Json::Null));
        object.insert("after".into(), after.unwrap_or(Json::Null));
        object.insert("ts_ms".into(), Json::from(ts_ms));
        object.insert("ts_us".into(), Json::from(ts_ms * 1000));
        object.insert("ts_ns".into(), Json::from(ts_ms * 1_000_000));
        if let Some(source) = object.get_mut("source").and_then(Json::as_object_mut) {
            source.insert("lsn".into(), Json::from(lsn));
            source.insert("ts_ms".into(), Json::from(ts_ms));
            source.insert("ts_us".into(), Json::from(ts_ms * 1000));
            source.insert("ts_ns".into(), Json::from(ts_ms * 1_000_000));
            source.insert(
                "snapshot".into(),
                Json::from(if op == "r" { "true" } else { "false" }),
            );
        }
    }
    value
}

/// Deletes `topics` (benchmarks and tests clean up after themselves: a broker that keeps
/// every run's topics starts slower and holds more files with each run).
pub async fn delete_topics(bootstrap: &str, topics: &[&str]) -> Result<(), LoadgenError> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()?;
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    for result in admin.delete_topics(topics, &options).await? {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::UnknownTopicOrPartition)) => {}
            Err((_, code)) => return Err(LoadgenError::Kafka(KafkaError::AdminOp(code))),
        }
    }
    Ok(())
}

/// Creates `topic` with `partitions` partitions (replication 1); an existing topic is fine.
pub async fn create_topic(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
) -> Result<(), LoadgenError> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()?;
    let new = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    for result in admin.create_topics([&new], &options).await? {
        match result {
            Ok(_) => {}
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => {
                return Err(LoadgenError::Kafka(KafkaError::AdminOp(code))).inspect_err(|_| {
                    tracing::warn!(%topic, "Topic creation failed.");
                })
            }
        }
    }
    Ok(())
}

/// One record to produce.
#[derive(Debug, Clone)]
pub struct WireRecord {
    /// Topic.
    pub topic: String,
    /// Key bytes.
    pub key: Option<Vec<u8>>,
    /// Value bytes; `None` for a tombstone.
    pub value: Option<Vec<u8>>,
    /// Headers as in the recording.
    pub headers: Vec<(String, String)>,
}

/// A producer for test records: acks from all replicas, idempotent, batching.
pub fn producer(bootstrap: &str) -> Result<FutureProducer, LoadgenError> {
    Ok(ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("enable.idempotence", "true")
        .set("linger.ms", "20")
        .set("batch.num.messages", "10000")
        .set("queue.buffering.max.messages", "1000000")
        .set("compression.type", "lz4")
        .create()?)
}

async fn settle(pending: &mut Vec<rdkafka::producer::DeliveryFuture>) -> Result<(), LoadgenError> {
    for delivery in pending.drain(..) {
        match delivery.await {
            Ok(Ok(_)) => {}
            Ok(Err((e, _))) => return Err(e.into()),
            Err(_) => return Err(KafkaError::Canceled.into()),
        }
    }
    Ok(())
}

/// Produces `records` in order (idempotent producer: per-partition order is kept) and waits
/// for every acknowledgement.
pub async fn produce_all(
    producer: &FutureProducer,
    records: &[WireRecord],
) -> Result<(), LoadgenError> {
    let mut pending = Vec::with_capacity(records.len().min(100_000));
    for record in records {
        let mut headers = rdkafka::message::OwnedHeaders::new();
        for (k, v) in &record.headers {
            headers = headers.insert(rdkafka::message::Header {
                key: k,
                value: Some(v),
            });
        }
        let mut out: FutureRecord<'_, [u8], [u8]> =
            FutureRecord::to(&record.topic).headers(headers);
        if let Some(key) = &record.key {
            out = out.key(key);
        }
        if let Some(value) = &record.value {
            out = out.payload(value);
        }
        loop {
            match producer.send_result(out) {
                Ok(delivery) => {
                    pending.push(delivery);
                    break;
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    out = back;
                    // Let the queue drain.
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err((e, _)) => return Err(e.into()),
            }
        }
        if pending.len() >= 100_000 {
            settle(&mut pending).await?;
        }
    }
    settle(&mut pending).await?;
    producer.flush(Duration::from_secs(30))?;
    Ok(())
}

/// The two tables of the reference schema (`customers`, `orders`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Table {
    /// `customers(id, email UNIQUE, name, plan, mrr_cents, created_at, updated_at)`.
    Customers,
    /// `orders(id, customer_id, status, total_cents, items JSONB, created_at, updated_at)`.
    Orders,
}

impl Table {
    /// The table name (`customers`, `orders`).
    pub fn name(self) -> &'static str {
        match self {
            Table::Customers => "customers",
            Table::Orders => "orders",
        }
    }
}

/// One change event as JSON: key row and envelope (`None`: tombstone).
#[derive(Debug, Clone)]
pub struct Event {
    /// The table.
    pub table: Table,
    /// Key row, e.g. `{"id": 7}`.
    pub key: Json,
    /// Envelope; `None` for a tombstone.
    pub value: Option<Json>,
}

/// A generated stream of changes and the rows that exist at its end.
#[derive(Debug, Clone, Default)]
pub struct Workload {
    /// The events in source order.
    pub events: Vec<Event>,
    /// Final `after` image of every customer that exists at the end, by id.
    pub customers: std::collections::BTreeMap<i64, Json>,
    /// Final `after` image of every order that exists at the end, by id.
    pub orders: std::collections::BTreeMap<i64, Json>,
}

/// A tiny deterministic generator (64-bit LCG), so workloads are reproducible.
#[derive(Debug, Clone)]
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

const STATUSES: [&str; 4] = ["pending", "paid", "shipped", "delivered"];
const PLANS: [&str; 3] = ["free", "pro", "enterprise"];

/// Generates about `n` events (deletes add a tombstone, so a few more) from recorded envelope
/// templates: customer inserts, updates (every update changes the unique email) and deletes;
/// order inserts (for existing customers), status updates and deletes. Positions (`lsn`) grow
/// by event; times start at `start_ms`.
pub fn workload(
    n: usize,
    seed: u64,
    customer_template: &Json,
    order_template: &Json,
    start_ms: i64,
) -> Workload {
    let mut rng = Lcg(seed);
    let mut w = Workload {
        events: Vec::with_capacity(n + n / 10),
        ..Workload::default()
    };
    let mut lsn: i64 = 50_000_000;
    let mut next_customer = 1i64;
    let mut next_order = 1i64;
    let mut customer_ids: Vec<i64> = Vec::new();
    let mut order_ids: Vec<i64> = Vec::new();
    let mut version = 0u64;
    while w.events.len() < n {
        lsn += 16;
        let ms = start_ms + (lsn - 50_000_000) / 16;
        let micros = ms * 1000;
        let roll = rng.below(100);
        let push = |w: &mut Workload, table: Table, id: i64, value: Option<Json>| {
            w.events.push(Event {
                table,
                key: serde_json::json!({ "id": id }),
                value,
            });
        };
        if customer_ids.len() < 10 || roll < 20 {
            let id = next_customer;
            next_customer += 1;
            let row = serde_json::json!({
                "id": id, "email": format!("c{id}@example.com"), "name": format!("Customer {id}"),
                "plan": PLANS[(id % 3) as usize], "mrr_cents": (id % 50) * 100,
                "created_at": micros, "updated_at": micros,
            });
            let value = envelope(customer_template, "c", None, Some(row.clone()), lsn, ms);
            push(&mut w, Table::Customers, id, Some(value));
            w.customers.insert(id, row);
            customer_ids.push(id);
        } else if roll < 45 {
            let id = customer_ids[rng.below(customer_ids.len() as u64) as usize];
            version += 1;
            let mut row = w.customers[&id].clone();
            row["email"] = Json::from(format!("c{id}-v{version}@example.com"));
            row["mrr_cents"] = Json::from(rng.below(100_000));
            row["updated_at"] = Json::from(micros);
            let value = envelope(customer_template, "u", None, Some(row.clone()), lsn, ms);
            push(&mut w, Table::Customers, id, Some(value));
            w.customers.insert(id, row);
        } else if roll < 50 {
            let i = rng.below(customer_ids.len() as u64) as usize;
            let id = customer_ids.swap_remove(i);
            let before = w.customers.remove(&id);
            let value = envelope(customer_template, "d", before, None, lsn, ms);
            push(&mut w, Table::Customers, id, Some(value));
            push(&mut w, Table::Customers, id, None);
        } else if roll < 75 || order_ids.is_empty() {
            let id = next_order;
            next_order += 1;
            let customer = customer_ids[rng.below(customer_ids.len() as u64) as usize];
            let qty = 1 + rng.below(5);
            let row = serde_json::json!({
                "id": id, "customer_id": customer, "status": "pending",
                "total_cents": qty * 1250,
                "items": format!(r#"[{{"qty": {qty}, "sku": "SKU-{}", "price_cents": 1250}}]"#, id % 97),
                "created_at": micros, "updated_at": micros,
            });
            let value = envelope(order_template, "c", None, Some(row.clone()), lsn, ms);
            push(&mut w, Table::Orders, id, Some(value));
            w.orders.insert(id, row);
            order_ids.push(id);
        } else if roll < 95 {
            let id = order_ids[rng.below(order_ids.len() as u64) as usize];
            let mut row = w.orders[&id].clone();
            row["status"] = Json::from(STATUSES[rng.below(4) as usize]);
            row["updated_at"] = Json::from(micros);
            let value = envelope(order_template, "u", None, Some(row.clone()), lsn, ms);
            push(&mut w, Table::Orders, id, Some(value));
            w.orders.insert(id, row);
        } else {
            let i = rng.below(order_ids.len() as u64) as usize;
            let id = order_ids.swap_remove(i);
            let before = w.orders.remove(&id);
            let value = envelope(order_template, "d", before, None, lsn, ms);
            push(&mut w, Table::Orders, id, Some(value));
            push(&mut w, Table::Orders, id, None);
        }
    }
    w
}

/// The recorded Debezium 3.6.3 fixtures the generated workloads start from
/// (`schemas/debezium/`, `tests/fixtures/debezium/`), embedded so the bench binaries run from
/// anywhere.
pub mod reference {
    use serde_json::Value as Json;

    /// Registry entry of the customers key schema.
    pub const CUSTOMER_KEY: &str =
        include_str!("../../schemas/debezium/cdc.public.customers-key.v1.id1.json");
    /// Registry entry of the customers value schema.
    pub const CUSTOMER_VALUE: &str =
        include_str!("../../schemas/debezium/cdc.public.customers-value.v1.id2.json");
    /// Registry entry of the orders key schema.
    pub const ORDER_KEY: &str =
        include_str!("../../schemas/debezium/cdc.public.orders-key.v1.id3.json");
    /// Registry entry of the orders value schema.
    pub const ORDER_VALUE: &str =
        include_str!("../../schemas/debezium/cdc.public.orders-value.v1.id4.json");
    /// A recorded customers insert.
    pub const CUSTOMER_SAMPLE: &str =
        include_str!("../../tests/fixtures/debezium/avro-customers-op_c-insert.json");
    /// A recorded orders insert.
    pub const ORDER_SAMPLE: &str =
        include_str!("../../tests/fixtures/debezium/avro-orders-op_c-insert.json");

    /// The Avro schema text of a recorded registry entry (its `schema` field).
    pub fn schema_text(entry: &str) -> Result<String, serde_json::Error> {
        let json: Json = serde_json::from_str(entry)?;
        Ok(json["schema"].to_string())
    }

    /// The Debezium envelope (`value`) of a recorded record: the template of generated rows.
    pub fn envelope_of(sample: &str) -> Result<Json, serde_json::Error> {
        Ok(serde_json::from_str::<Json>(sample)?["value"].clone())
    }
}

/// Redis server CPU seconds so far (`INFO cpu`: user + sys, reading and parsing commands
/// included), for benchmarks that compare work per change.
pub async fn redis_cpu_seconds(url: &str) -> anyhow::Result<f64> {
    let client = redis::Client::open(url)?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    let info: String = redis::cmd("INFO").arg("cpu").query_async(&mut conn).await?;
    let mut cpu = 0.0;
    for line in info.lines() {
        if let Some(v) = line
            .strip_prefix("used_cpu_sys:")
            .or_else(|| line.strip_prefix("used_cpu_user:"))
        {
            cpu += v.trim().parse::<f64>()?;
        }
    }
    Ok(cpu)
}

/// `main` of a bench binary: logs (`RUST_LOG`, default `warn`) to stderr, runs `bench` on a
/// multi-threaded runtime, and prints `{name}: {err:#}` on failure.
pub fn bench_main<F>(name: &str, bench: F) -> std::process::ExitCode
where
    F: std::future::Future<Output = anyhow::Result<()>>,
{
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("{name}: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(bench) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("{name}: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
