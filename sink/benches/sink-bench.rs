//! End-to-end throughput of the sink against the real stack, and Redis's own ceiling for the
//! same work.
//!
//! ```text
//! cargo bench -p sink --bench sink-bench -- --events 200000
//! ```
//!
//! 1. Generates `--events` change events (customers and orders: inserts, updates that move
//!    the unique email, deletes with tombstones, order status changes), encodes them in the
//!    Avro wire format with schemas registered in the registry, and produces them to new
//!    topics (`--partitions` each).
//! 2. Runs the sink (the library's `run`, as `sink run` does, in a new group, with the metrics
//!    recorder installed) until it has caught up, and reports events/s from its first record
//!    to its last applied batch, and from start (health checks, group join and first fetch
//!    included) to caught up: the last applied batch, when Redis holds every change. The
//!    bench's stop after that (noticing it, committing, the exclusive writer leaving its
//!    bookkeeping) is reported apart, with the wall time from start to stopped.
//! 3. Ceiling: the same records decoded and planned up front, then the applier's script
//!    calls for them (`ChangeScript::chunks`/`command`, as the sink sends them) pipelined
//!    straight to Redis (no Kafka, no decoding), several pipelines in flight, against fresh
//!    keys: what Redis itself sustains for this work. With `--writer exclusive` or `auto` (the
//!    default, which is exclusive here: the bench's mappings set no `ttl_seconds` and no
//!    shared sink writes them), the ceiling is the owning applier's own writes instead: the
//!    planned batches through `Applier::owning`, several in flight.
//!
//! Both phases report Redis's server CPU per change (`INFO cpu`).
//!
//! Keys and bookkeeping of the run are deleted at the end; the topics are deleted too.
//! Environment as for `sink run`: KAFKA_BOOTSTRAP_SERVERS, SCHEMA_REGISTRY_URL, REDIS_URL.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use futures::StreamExt;
use serde_json::Value as Json;
use sink::apply::{Applier, ChangeScript, PlannedChange, DEFAULT_CHUNK};
use sink::cli::WriterMode;
use sink::config::{BatchSettings, SinkConfig, Writer};
use sink::decode::Decoder;
use sink::pipeline::StopWhen;
use sink::registry::Registry;
use testkit::loadgen::{self, reference, Table, WireEncoder, WireRecord};
use tokio_util::sync::CancellationToken;

/// The sink binary's allocator (`sink/src/main.rs`), so the figures are what `sink` runs.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Measures the sink end to end and Redis's ceiling for the same changes.
#[derive(Debug, Parser)]
#[command(name = "sink-bench")]
struct Args {
    /// Change events to generate.
    #[arg(long, default_value_t = 200_000)]
    events: usize,
    /// Partitions per topic.
    #[arg(long, default_value_t = 4)]
    partitions: i32,
    /// Records per Redis pipeline (the sink's `--batch-size`).
    #[arg(long, default_value_t = 2000)]
    batch_size: usize,
    /// Pipelines in flight when measuring the ceiling.
    #[arg(long, default_value_t = 4)]
    in_flight: usize,
    /// How the sink writes Redis (`sink run --writer`, whose default this is too).
    #[arg(long, value_enum, default_value_t = WriterMode::Auto)]
    writer: WriterMode,
    /// A librdkafka property for the sink's consumer, `key=value` (as `sink run -X`);
    /// repeatable: to compare consumer settings.
    #[arg(short = 'X', value_name = "KEY=VALUE", value_parser = key_value)]
    kafka_property: Vec<(String, String)>,
    /// Skip the ceiling measurement.
    #[arg(long)]
    skip_ceiling: bool,
    /// Keep the keys and topics (to inspect them).
    #[arg(long)]
    keep: bool,
    /// Kafka bootstrap servers.
    #[arg(
        long,
        env = "KAFKA_BOOTSTRAP_SERVERS",
        default_value = "127.0.0.1:9092"
    )]
    bootstrap_servers: String,
    /// Schema registry base URL.
    #[arg(
        long,
        env = "SCHEMA_REGISTRY_URL",
        default_value = "http://127.0.0.1:8081/apis/ccompat/v7"
    )]
    schema_registry_url: String,
    /// Redis URL.
    #[arg(long, env = "REDIS_URL", default_value = "redis://127.0.0.1:6379")]
    redis_url: String,
}

/// `key=value` of a `-X` flag.
fn key_value(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("{s}: expected KEY=VALUE"))
}

fn main() -> ExitCode {
    let args: Args = testkit::bench::args();
    testkit::bench::run("sink-bench", bench(&args))
}

/// One bench world: topics, registered encoders, mapping file.
struct World {
    id: String,
    topics: Vec<(Table, String)>,
    encoders: Vec<(Table, WireEncoder, WireEncoder)>,
}

impl World {
    fn encoders(&self, table: Table) -> (&WireEncoder, &WireEncoder) {
        self.encoders
            .iter()
            .find(|(t, _, _)| *t == table)
            .map(|(_, k, v)| (k, v))
            .expect("both tables registered")
    }

    fn topic(&self, table: Table) -> &str {
        self.topics
            .iter()
            .find(|(t, _)| *t == table)
            .map(|(_, t)| t.as_str())
            .expect("topic")
    }

    /// A mapping file like the shipped one, with keys under `{prefix}{id}:`.
    fn yaml(&self, args: &Args, prefix: &str) -> String {
        let p = format!("{prefix}{}", self.id);
        format!(
            r#"kafka:
  bootstrap_servers: "{bootstrap}"
  group_id: "{p}-group"
  dead_letter_topic: "{p}-dlq"
schema_registry:
  url: "{registry}"
redis:
  url: "{redis}"
mappings:
  - name: customers_{p}
    topic: "{customers}"
    key: "{p}:customer:{{id}}"
    fields: all
    indexes:
      - name: email
        key: "{p}:customer:email:{{email}}"
  - name: orders_{p}
    topic: "{orders}"
    key: "{p}:order:{{id}}"
    fields: all
    relations:
      - name: customer_orders
        key: "{p}:customer:{{customer_id}}:orders"
        order_by: created_at
"#,
            bootstrap = args.bootstrap_servers,
            registry = args.schema_registry_url,
            redis = args.redis_url,
            customers = self.topic(Table::Customers),
            orders = self.topic(Table::Orders),
        )
    }
}

fn load(yaml: &str, args: &Args) -> anyhow::Result<SinkConfig> {
    let config =
        mapping::load_config_str(yaml, "bench.yaml", &mapping::ConnectionOverrides::default())
            .map_err(|e| anyhow::anyhow!("bench mapping does not load:\n{e}"))?;
    Ok(SinkConfig::new(
        config,
        &args.kafka_property,
        BatchSettings::new(args.batch_size, Duration::from_millis(5)),
    )
    .with_writer(match args.writer {
        WriterMode::Shared => Writer::Shared,
        WriterMode::Exclusive => Writer::Exclusive {
            lease: sink::apply::DEFAULT_LEASE_TTL,
            max_memory: sink::apply::DEFAULT_MAX_WRITER_MEMORY,
        },
        WriterMode::Auto => Writer::Auto {
            lease: sink::apply::DEFAULT_LEASE_TTL,
            max_memory: sink::apply::DEFAULT_MAX_WRITER_MEMORY,
        },
    }))
}

async fn bench(args: &Args) -> anyhow::Result<()> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .subsec_nanos();
    let id = format!("{nanos:08x}");
    let mut world = World {
        id: id.clone(),
        topics: Vec::new(),
        encoders: Vec::new(),
    };
    for (table, key, value) in [
        (
            Table::Customers,
            reference::CUSTOMER_KEY,
            reference::CUSTOMER_VALUE,
        ),
        (Table::Orders, reference::ORDER_KEY, reference::ORDER_VALUE),
    ] {
        let topic = format!("bench{id}.public.{}", table.name());
        loadgen::create_topic(&args.bootstrap_servers, &topic, args.partitions)
            .await
            .with_context(|| format!("creating {topic} at {}", args.bootstrap_servers))?;
        let (key, value) = (reference::schema_text(key)?, reference::schema_text(value)?);
        let key_id =
            loadgen::register(&args.schema_registry_url, &format!("{topic}-key"), &key).await?;
        let value_id =
            loadgen::register(&args.schema_registry_url, &format!("{topic}-value"), &value).await?;
        world.encoders.push((
            table,
            WireEncoder::new(key_id, &key)?,
            WireEncoder::new(value_id, &value)?,
        ));
        world.topics.push((table, topic));
    }

    // 1. Generate, encode, produce.
    let started = Instant::now();
    let customer: Json = reference::envelope_of(reference::CUSTOMER_SAMPLE)?;
    let order: Json = reference::envelope_of(reference::ORDER_SAMPLE)?;
    let workload = loadgen::workload(args.events, 7, &customer, &order, 1_795_480_000_000);
    let mut records = Vec::with_capacity(workload.events.len());
    for event in &workload.events {
        let (key, value) = world.encoders(event.table);
        records.push(WireRecord {
            topic: world.topic(event.table).to_owned(),
            key: Some(key.encode(&event.key)?),
            value: event.value.as_ref().map(|v| value.encode(v)).transpose()?,
            headers: Vec::new(),
        });
    }
    let encoded = started.elapsed();
    let producer = loadgen::producer(&args.bootstrap_servers)?;
    loadgen::produce_all(&producer, &records).await?;
    let produced = started.elapsed() - encoded;
    let events = records.len();
    let bytes: usize = records
        .iter()
        .map(|r| r.value.as_ref().map_or(0, Vec::len))
        .sum();
    println!(
        "workload: {events} events ({} customers, {} orders at the end), {:.1} MiB of values, {} partitions per topic",
        workload.customers.len(),
        workload.orders.len(),
        bytes as f64 / 1048576.0,
        args.partitions
    );
    println!("  generated+encoded in {encoded:.2?}, produced in {produced:.2?}");

    // 2. The sink, as `sink run` runs it, until caught up.
    let yaml = world.yaml(args, "bench");
    if args.keep {
        let path = std::env::temp_dir().join(format!("sink-bench-{id}.yaml"));
        std::fs::write(&path, &yaml)?;
        println!("  mapping file (kept): {}", path.display());
    }
    let cfg = load(&yaml, args)?;
    // As `sink run` does: the Prometheus recorder installed and kept drained, so that
    // recording the metrics (a histogram sample per change among them) costs what it costs
    // the binary.
    let metrics = sink::telemetry::exporter::install().context("metrics recorder")?;
    let drained = CancellationToken::new();
    tokio::spawn(sink::telemetry::server::upkeep(metrics, drained.clone()));
    let redis_before = script_time(&args.redis_url).await?;
    let cpu_before = testkit::bench::redis_cpu_seconds(&args.redis_url).await?;
    let start = Instant::now();
    let summary = sink::run::run(&cfg, StopWhen::CaughtUp, CancellationToken::new())
        .await
        .context("sink run")?;
    let wall = start.elapsed();
    drained.cancel();
    if summary.records as usize != events {
        bail!("the sink settled {} of {events} records", summary.records);
    }
    let (Some(first), Some(last)) = (summary.first_record_at, summary.last_applied_at) else {
        bail!("the sink applied nothing");
    };
    let busy = last.duration_since(first);
    let sink_rate = events as f64 / busy.as_secs_f64();
    let redis_used = script_time(&args.redis_url).await?.since(redis_before);
    let cpu = testkit::bench::redis_cpu_seconds(&args.redis_url).await? - cpu_before;
    println!(
        "sink:    {events} events in {busy:.2?} from first record to last applied batch = {sink_rate:.0} events/s ({:?} writer)",
        args.writer
    );
    println!(
        "         redis server CPU {cpu:.2} s over the run (start-up included) = {:.1} us per change",
        cpu * 1e6 / events as f64
    );
    if redis_used.calls > 0 {
        println!(
            "         redis ran {} script calls for {:.2?} ({:.1} us per change), busy {:.0}% of that time",
            redis_used.calls,
            redis_used.busy,
            redis_used.busy.as_secs_f64() * 1e6 / events as f64,
            100.0 * redis_used.busy.as_secs_f64() / busy.as_secs_f64()
        );
    }
    // Caught up: Redis holds every change, at the last applied batch. What follows is the
    // bench's stop (`StopWhen::CaughtUp` noticing it, every 100 ms; the offsets committed;
    // the exclusive writer leaving its bookkeeping), which `sink run` never does while it runs.
    let caught_up = last.duration_since(start);
    println!(
        "         from start to caught up {caught_up:.2?} (health checks, group join and the first fetch {:.2?} included) = {:.0} events/s; {} batches, {} no-op changes",
        first.duration_since(start),
        events as f64 / caught_up.as_secs_f64(),
        summary.batches,
        summary.skipped
    );
    println!(
        "         then stopping {:.2?} (noticing it was caught up, committing, leaving the bookkeeping): {wall:.2?} from start to stopped = {:.0} events/s",
        wall.saturating_sub(caught_up),
        events as f64 / wall.as_secs_f64(),
    );

    // 3. Ceiling: the same script calls straight to Redis.
    if !args.skip_ceiling {
        let ceiling_cfg = load(&world.yaml(args, "ceil"), args)?;
        let changes = planned(args, &ceiling_cfg, &records).await?;
        let ceiling = match args.writer {
            WriterMode::Shared => script_ceiling(args, &ceiling_cfg, &changes).await?,
            WriterMode::Exclusive | WriterMode::Auto => {
                owned_ceiling(args, &ceiling_cfg, &changes).await?
            }
        };
        let how = match args.writer {
            WriterMode::Shared => "the applier's script calls pipelined",
            WriterMode::Exclusive | WriterMode::Auto => "the owning applier's transactions sent",
        };
        println!(
            "ceiling: the same {events} changes as {how} straight to Redis ({} per batch, {} in flight) = {ceiling:.0} events/s",
            args.batch_size, args.in_flight
        );
        println!(
            "ratio:   sink / ceiling = {:.0}%",
            100.0 * sink_rate / ceiling
        );
        if !args.keep {
            cleanup(&args.redis_url, &format!("ceil{id}")).await?;
        }
    }
    if !args.keep {
        cleanup(&args.redis_url, &format!("bench{id}")).await?;
        let topics: Vec<&str> = world.topics.iter().map(|(_, t)| t.as_str()).collect();
        loadgen::delete_topics(&args.bootstrap_servers, &topics).await?;
    }
    Ok(())
}

/// Decodes and plans `records` up front.
async fn planned(
    args: &Args,
    cfg: &SinkConfig,
    records: &[WireRecord],
) -> anyhow::Result<Vec<PlannedChange>> {
    let config = &cfg.config;
    let decoder = Decoder::new(Arc::new(Registry::new(&args.schema_registry_url)?));
    let mut changes = Vec::with_capacity(records.len());
    for (offset, record) in records.iter().enumerate() {
        let (mapping, m) = config
            .mappings
            .iter()
            .enumerate()
            .find(|(_, m)| m.topic == record.topic)
            .context("mapped topic")?;
        let decoded = decoder
            .decode(
                &record.topic,
                record.key.as_deref(),
                record.value.as_deref(),
                Some(0),
            )
            .await?;
        changes.push(PlannedChange {
            mapping,
            op: decoded.change.op,
            source_ts_ms: decoded.change.source_ts_ms,
            plan: mapping::plan(m, decoded.change)?,
            topic: Arc::from(record.topic.as_str()),
            partition: 0,
            offset: offset as i64,
            record_time: None,
        });
    }
    Ok(changes)
}

/// Times the owning applier alone on `changes` (fresh keys): batches of the sink's size,
/// `--in-flight` of them at a time, decided in order.
async fn owned_ceiling(
    args: &Args,
    cfg: &SinkConfig,
    changes: &[PlannedChange],
) -> anyhow::Result<f64> {
    let pool = sink::connection::redis_pool(&cfg.config.redis.url)?;
    let applier = Applier::owning(pool, &cfg.config);
    let cpu_before = testkit::bench::redis_cpu_seconds(&args.redis_url).await?;
    let start = Instant::now();
    let mut outcomes = futures::stream::iter(
        changes
            .chunks(args.batch_size)
            .map(|batch| applier.apply_batch(batch)),
    )
    .buffered(args.in_flight.max(1));
    let mut count = 0;
    while let Some(outcome) = outcomes.next().await {
        let outcome = outcome?;
        count += outcome.applied + outcome.skipped;
    }
    let elapsed = start.elapsed();
    if count != changes.len() {
        bail!("{count} results for {} changes", changes.len());
    }
    let cpu = testkit::bench::redis_cpu_seconds(&args.redis_url).await? - cpu_before;
    println!(
        "ceiling: redis server CPU {cpu:.2} s ({:.1} us per change), busy {:.0}% of {elapsed:.2?}",
        cpu * 1e6 / changes.len() as f64,
        100.0 * cpu / elapsed.as_secs_f64()
    );
    Ok(changes.len() as f64 / elapsed.as_secs_f64())
}

/// Times sending the script calls for `changes`.
async fn script_ceiling(
    args: &Args,
    cfg: &SinkConfig,
    changes: &[PlannedChange],
) -> anyhow::Result<f64> {
    let config = &cfg.config;
    let pool = sink::connection::redis_pool(&config.redis.url)?;
    let script = ChangeScript::new(&config.mappings, DEFAULT_CHUNK);
    script.load(&mut pool.get().await?).await?;
    // The same script calls the sink sends: batches cut into the applier's chunks.
    let mut pipelines = Vec::new();
    for batch in changes.chunks(args.batch_size) {
        let mut pipe = redis::pipe();
        for chunk in script.chunks(batch) {
            pipe.add_command(script.command(chunk)?);
        }
        pipelines.push(pipe);
    }
    let client = redis::Client::open(config.redis.url.as_str())?;
    let conn = client
        .get_multiplexed_async_connection_with_config(
            &redis::AsyncConnectionConfig::new()
                .set_response_timeout(Some(sink::connection::REDIS_RESPONSE_TIMEOUT)),
        )
        .await?;
    let redis_before = script_time(&args.redis_url).await?;
    let start = Instant::now();
    let mut replies = futures::stream::iter(pipelines.iter().map(|pipe| {
        let mut conn = conn.clone();
        async move { pipe.query_async::<Vec<redis::Value>>(&mut conn).await }
    }))
    .buffered(args.in_flight.max(1));
    let mut count = 0;
    while let Some(reply) = replies.next().await {
        for chunk in reply? {
            match chunk {
                redis::Value::Array(results) => count += results.len(),
                other => bail!("unexpected reply {other:?}"),
            }
        }
    }
    let elapsed = start.elapsed();
    if count != changes.len() {
        bail!("{count} results for {} changes", changes.len());
    }
    let used = script_time(&args.redis_url).await?.since(redis_before);
    println!(
        "ceiling: redis ran {} script calls for {:.2?} ({:.1} us per change), busy {:.0}% of {elapsed:.2?}",
        used.calls,
        used.busy,
        used.busy.as_secs_f64() * 1e6 / changes.len() as f64,
        100.0 * used.busy.as_secs_f64() / elapsed.as_secs_f64()
    );
    Ok(changes.len() as f64 / elapsed.as_secs_f64())
}

/// Redis's cumulative `EVALSHA` statistics (`INFO commandstats`).
#[derive(Debug, Clone, Copy)]
struct ScriptTime {
    calls: u64,
    busy: Duration,
}

impl ScriptTime {
    fn since(self, before: ScriptTime) -> ScriptTime {
        ScriptTime {
            calls: self.calls.saturating_sub(before.calls),
            busy: self.busy.saturating_sub(before.busy),
        }
    }
}

async fn script_time(redis_url: &str) -> anyhow::Result<ScriptTime> {
    let client = redis::Client::open(redis_url)?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut conn)
        .await?;
    let line = info
        .lines()
        .find(|l| l.starts_with("cmdstat_evalsha:"))
        .unwrap_or_default();
    let field = |name: &str| {
        line.split([':', ','])
            .find_map(|kv| kv.strip_prefix(name).and_then(|v| v.strip_prefix('=')))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    Ok(ScriptTime {
        calls: field("calls"),
        busy: Duration::from_micros(field("usec")),
    })
}

/// Deletes every key of the run: `{prefix}:*` and the bookkeeping of its mappings.
async fn cleanup(redis_url: &str, prefix: &str) -> anyhow::Result<()> {
    let client = redis::Client::open(redis_url)?;
    let config = redis::AsyncConnectionConfig::new()
        .set_response_timeout(Some(sink::connection::REDIS_RESPONSE_TIMEOUT));
    let mut conn = client
        .get_multiplexed_async_connection_with_config(&config)
        .await?;
    for pattern in [format!("{prefix}:*"), format!("sink:*_{prefix}*")] {
        let mut cursor = 0u64;
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(10_000)
                .query_async(&mut conn)
                .await?;
            if !keys.is_empty() {
                redis::cmd("UNLINK")
                    .arg(&keys)
                    .query_async::<()>(&mut conn)
                    .await?;
            }
            if next == 0 {
                break;
            }
            cursor = next;
        }
    }
    let fields: Vec<String> = redis::cmd("HKEYS")
        .arg("sink:offsets")
        .query_async(&mut conn)
        .await?;
    let ours: Vec<&String> = fields
        .iter()
        .filter(|f| f.starts_with(&format!("bench{}", &prefix[prefix.len() - 8..])))
        .collect();
    if !ours.is_empty() {
        redis::cmd("HDEL")
            .arg("sink:offsets")
            .arg(ours)
            .query_async::<()>(&mut conn)
            .await?;
    }
    Ok(())
}
