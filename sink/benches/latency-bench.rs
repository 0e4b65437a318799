//! Added latency at light load (#17): broker append → value visible in Redis, per change, at
//! fixed rates, through the real `sink run` binary.
//!
//! ```text
//! cargo bench -p sink --bench latency-bench -- --rates 50,200,1000 --seconds 20 --writers shared,exclusive
//! ```
//!
//! 1. Starts a private `redis-server` (keyspace notifications on, no persistence) and
//!    subscribes to the keyspace events of the bench's row keys on a thread of its own.
//! 2. Per writer: creates a customers topic with `message.timestamp.type=LogAppendTime`,
//!    registers the recorded Debezium schemas, starts `sink run --writer W` (the release binary
//!    cargo built next to this bench, `-X` properties passed through) and waits until it
//!    applies a first record, then sends `--warmup-seconds` (5) of uncounted traffic at
//!    500 changes/s.
//! 3. Per rate: produces Debezium-shaped Avro inserts (Confluent wire format, from the
//!    recorded fixture; each a new row) at a fixed schedule from a thread of its own, one
//!    record per produce request (`linger.ms=0`). The delivery report carries the broker's
//!    append time (LogAppendTime); the keyspace notification of the row key marks the moment
//!    the value is visible in Redis. Latency = notification received − broker append.
//!
//! Error of the method, printed with the figures: the append time is whole milliseconds,
//! rounded down by the broker, so each figure overstates the true latency by 0–1 ms (0.5 ms on
//! average); the notification reaches the subscriber after the script or transaction that
//! wrote the row has finished, so the figure includes its delivery to the subscriber, which
//! the bench measures by timing notifications of its own `SET`s (a round trip, an upper bound).
//! Also printed, to say where the time goes: produce call → visible (one microsecond clock,
//! producer path included); append → received by a *probe consumer* (a plain librdkafka
//! consumer beside the sink with the sink's consumer defaults and the same `-X` properties,
//! polling on a thread of its own: the broker and the fetch alone) and probe consumer →
//! visible (about the sink's own stages and Redis); the sink's records per batch and mean
//! Redis time per batch (`sink_apply_batch_seconds` from its metrics endpoint); the mean
//! latency as the bench measured it beside the sink's own `sink_record_delay_seconds` for the
//! same changes (append → Redis answered: a cross-check of the metric); the Redis
//! commands per change (`INFO commandstats` of the private Redis, scripts' calls included: the
//! round trips a change costs); and the load average before → after each phase.
//!
//! Ports: the private Redis and the sink's metrics endpoint take free ones unless
//! `--redis-port` / `--metrics-port` say otherwise; Kafka and the registry are the running
//! stack's (environment as for `sink run`: KAFKA_BOOTSTRAP_SERVERS, SCHEMA_REGISTRY_URL). The
//! bench deletes its topics at the end.
//!
//! The broker's JVM settings weigh on the tail: run it as Kafka's own start scripts do
//! (`KAFKA_JVM_PROFILE=production bash tests/stack/kafka.sh start`), not with the test
//! stack's fast-start settings (C1 JIT only, serial GC), which add about half a millisecond to
//! the broker's p99 in most phases and a few millisecond-long tails (BENCHMARKS.md, *Adaptive
//! batching*). Discard the first run after the broker starts: its JIT is still compiling.

use std::collections::HashMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use clap::Parser;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Message, Offset, Timestamp, TopicPartitionList};
use serde_json::Value as Json;
use sink::cli::WriterMode;
use testkit::loadgen::{self, reference, WireEncoder};

/// Measures broker append → visible in Redis at fixed rates through `sink run`.
#[derive(Debug, Parser)]
#[command(name = "latency-bench")]
struct Args {
    /// Changes per second, one phase each.
    #[arg(long, value_delimiter = ',', default_values_t = [50, 200, 1000])]
    rates: Vec<u32>,
    /// Length of each phase in seconds.
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// Seconds of uncounted traffic at 500 changes/s once the sink applies its first record:
    /// the broker's JIT (C2 in the `production` profile of `kafka.sh`) and the sink's
    /// connections warm up before the first measured phase.
    #[arg(long, default_value_t = 5)]
    warmup_seconds: u64,
    /// `sink run --writer` values, one sink each.
    #[arg(long, value_delimiter = ',', value_enum, default_values_t = [WriterMode::Shared, WriterMode::Exclusive])]
    writers: Vec<WriterMode>,
    /// Partitions of the topic.
    #[arg(long, default_value_t = 4)]
    partitions: i32,
    /// A librdkafka property for the sink, `key=value` (passed as `sink run -X`); repeatable.
    #[arg(short = 'X', value_name = "KEY=VALUE")]
    sink_property: Vec<String>,
    /// Further `sink run` arguments, e.g. `--sink-arg=--linger-ms=2`; repeatable.
    #[arg(long, value_name = "ARG", allow_hyphen_values = true)]
    sink_arg: Vec<String>,
    /// The sink binary.
    #[arg(long, default_value = env!("CARGO_BIN_EXE_sink"))]
    sink: PathBuf,
    /// The `redis-server` to start.
    #[arg(long, default_value = "redis-server")]
    redis_server: String,
    /// Port of the private Redis (0: a free one).
    #[arg(long, default_value_t = 0)]
    redis_port: u16,
    /// Port of the sink's metrics endpoint (0: a free one).
    #[arg(long, default_value_t = 0)]
    metrics_port: u16,
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
}

fn main() -> ExitCode {
    let args: Args = testkit::bench::args();
    testkit::bench::run("latency-bench", bench(&args))
}

/// A child process killed when dropped (the private Redis, the sink on an error path).
struct Owned(Child);

impl Drop for Owned {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Changes per second of the uncounted warm-up traffic.
const WARMUP_RATE: u32 = 500;

/// Microseconds since the Unix epoch.
fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// When each row key was first seen changed (keyspace notification), by sequence number;
/// and when each probe key's notification came.
#[derive(Default)]
struct Seen {
    rows: HashMap<u64, i64>,
    probes: HashMap<u64, i64>,
    /// When the probe consumer received each record.
    fetched: HashMap<u64, i64>,
}

/// Subscribes to the keyspace events of `{prefix}:customer:{n}` and `{prefix}:probe:{n}` on a
/// thread of its own (blocking client: nothing else runs on it, so a notification is stamped
/// as soon as it is read). Returns once subscribed.
fn subscribe(redis_url: &str, prefix: &str, seen: Arc<Mutex<Seen>>) -> anyhow::Result<()> {
    let client = redis::Client::open(redis_url)?;
    let mut conn = client.get_connection()?;
    let rows = format!("__keyspace@0__:{prefix}:customer:");
    let probes = format!("__keyspace@0__:{prefix}:probe:");
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut pubsub = conn.as_pubsub();
        let subscribed = pubsub
            .psubscribe(format!("{rows}*"))
            .and_then(|()| pubsub.psubscribe(format!("{probes}*")));
        let _ = ready_tx.send(subscribed.map_err(anyhow::Error::from));
        while let Ok(message) = pubsub.get_message() {
            let at = now_us();
            let channel = message.get_channel_name();
            let mut seen = seen.lock().expect("seen lock");
            if let Some(n) = channel.strip_prefix(&rows).and_then(|n| n.parse().ok()) {
                seen.rows.entry(n).or_insert(at);
            } else if let Some(n) = channel.strip_prefix(&probes).and_then(|n| n.parse().ok()) {
                seen.probes.entry(n).or_insert(at);
            }
        }
    });
    ready_rx.recv()?
}

/// A consumer beside the sink, with the sink's consumer defaults and the bench's `-X`
/// properties, on a thread of its own that stamps each record as it arrives: how much of the
/// latency is the broker and the fetch, before the sink's own stages. Runs until `stop`.
fn probe_consumer(
    args: &Args,
    topic: &str,
    group: &str,
    seen: Arc<Mutex<Seen>>,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<()> {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &args.bootstrap_servers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("queued.min.messages", "100000");
    for property in &args.sink_property {
        let (key, value) = property
            .split_once('=')
            .with_context(|| format!("-X {property}: not key=value"))?;
        config.set(key, value);
    }
    let consumer: BaseConsumer = config.create()?;
    let mut assignment = TopicPartitionList::new();
    for partition in 0..args.partitions {
        assignment.add_partition_offset(topic, partition, Offset::End)?;
    }
    consumer.assign(&assignment)?;
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            let Some(Ok(message)) = consumer.poll(Duration::from_millis(100)) else {
                continue;
            };
            let at = now_us();
            if let Some(id) = message.key().and_then(wire_key_id) {
                seen.lock()
                    .expect("seen lock")
                    .fetched
                    .entry(id)
                    .or_insert(at);
            }
        }
    });
    Ok(())
}

/// The row id of a customers key in the Confluent wire format: magic byte, schema id, then
/// the Avro record `{id}`, whose only field is a zigzag varint.
fn wire_key_id(key: &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for (i, byte) in key.get(5..)?.iter().enumerate().take(10) {
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((value >> 1) ^ (value & 1).wrapping_neg());
        }
    }
    None
}

/// Nearest-rank percentile of sorted `values`.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// `p50 / p90 / p99 / max` in milliseconds.
fn spread(mut ms: Vec<f64>) -> (usize, [f64; 4]) {
    ms.sort_by(f64::total_cmp);
    if ms.is_empty() {
        return (0, [f64::NAN; 4]);
    }
    let max = ms[ms.len() - 1];
    (
        ms.len(),
        [
            percentile(&ms, 0.50),
            percentile(&ms, 0.90),
            percentile(&ms, 0.99),
            max,
        ],
    )
}

async fn bench(args: &Args) -> anyhow::Result<()> {
    if !args.sink.exists() {
        bail!("no sink binary at {}", args.sink.display());
    }
    let id = format!(
        "{:08x}",
        SystemTime::now().duration_since(UNIX_EPOCH)?.subsec_nanos()
    );
    let dir = std::env::temp_dir().join(format!("latency-bench-{id}"));
    std::fs::create_dir_all(&dir)?;
    let port = if args.redis_port == 0 {
        free_port()?
    } else {
        args.redis_port
    };
    let _redis = Owned(
        Command::new(&args.redis_server)
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .args(["--notify-keyspace-events", "KA"])
            .args(["--dir", &dir.display().to_string()])
            .stdout(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", args.redis_server))?,
    );
    let redis_url = format!("redis://127.0.0.1:{port}/0");
    let client = redis::Client::open(redis_url.as_str())?;
    let mut conn = wait_for_redis(&client).await?;
    let prefix = format!("lat{id}");
    let seen = Arc::new(Mutex::new(Seen::default()));
    subscribe(&redis_url, &prefix, Arc::clone(&seen))?;

    // The method's own delay: SET → its notification read by the subscriber thread.
    let mut probes = Vec::new();
    for n in 0..500u64 {
        let sent = now_us();
        redis::cmd("SET")
            .arg(format!("{prefix}:probe:{n}"))
            .arg(1)
            .query_async::<()>(&mut conn)
            .await?;
        probes.push((n, sent));
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let probe_ms: Vec<f64> = {
        let seen = seen.lock().expect("seen lock");
        probes
            .iter()
            .filter_map(|(n, sent)| seen.probes.get(n).map(|at| (at - sent) as f64 / 1000.0))
            .collect()
    };
    let (count, [p50, p90, p99, max]) = spread(probe_ms);
    println!(
        "method: keyspace notification of the row key, stamped by a dedicated subscriber thread (µs clock); broker append time in whole ms (rounded down: figures overstate by 0-1 ms)"
    );
    println!(
        "method: SET → its notification at the subscriber ({count} probes, upper bound of the notification delay): p50 {p50:.3} / p90 {p90:.3} / p99 {p99:.3} / max {max:.3} ms"
    );
    println!(
        "sink:   {} {}",
        args.sink.display(),
        args.sink_arg.join(" ")
    );
    if !args.sink_property.is_empty() {
        println!("sink:   -X {}", args.sink_property.join(" -X "));
    }
    println!();
    println!("| writer | changes/s | samples | lost | append → visible p50 | p90 | p99 | max | produce call → visible p50 | p99 | append → probe consumer p50 | p99 | probe consumer → visible p50 | p99 | batches | records/batch | Redis ms/batch | mean append → visible: bench / sink's metric | load (1/5/15 min) |");
    println!(
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"
    );

    let customer: Json = reference::envelope_of(reference::CUSTOMER_SAMPLE)?;
    // Row ids are sequence numbers, from 1 (the key the subscriber parses).
    let mut next_seq = 1u64;
    for &writer in &args.writers {
        let topic = format!("{prefix}-{}.public.customers", writer_name(writer));
        create_log_append_topic(&args.bootstrap_servers, &topic, args.partitions).await?;
        let (key_text, value_text) = (
            reference::schema_text(reference::CUSTOMER_KEY)?,
            reference::schema_text(reference::CUSTOMER_VALUE)?,
        );
        let key_id = loadgen::register(
            &args.schema_registry_url,
            &format!("{topic}-key"),
            &key_text,
        )
        .await?;
        let value_id = loadgen::register(
            &args.schema_registry_url,
            &format!("{topic}-value"),
            &value_text,
        )
        .await?;
        let encoders = Arc::new((
            WireEncoder::new(key_id, &key_text)?,
            WireEncoder::new(value_id, &value_text)?,
        ));
        let group = format!("{prefix}-{}-group", writer_name(writer));
        let config = dir.join(format!("{}.yaml", writer_name(writer)));
        std::fs::write(
            &config,
            mapping_yaml(args, &redis_url, &prefix, &topic, &group),
        )?;
        let metrics_port = if args.metrics_port == 0 {
            free_port()?
        } else {
            args.metrics_port
        };
        let log = dir.join(format!("sink-{}.log", writer_name(writer)));
        let mut sink = Command::new(&args.sink);
        sink.arg("run")
            .arg("--config")
            .arg(&config)
            .args(["--writer", writer_name(writer)])
            .args(["--metrics-addr", &format!("127.0.0.1:{metrics_port}")])
            .args(&args.sink_arg)
            .env_remove("REDIS_URL")
            .env_remove("KAFKA_BOOTSTRAP_SERVERS")
            .env_remove("SCHEMA_REGISTRY_URL")
            .env_remove("SINK_WRITER")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?);
        for property in &args.sink_property {
            sink.arg("-X").arg(property);
        }
        let sink = Owned(
            sink.spawn()
                .with_context(|| format!("starting {}", args.sink.display()))?,
        );
        let probe_stop = Arc::new(AtomicBool::new(false));
        probe_consumer(
            args,
            &topic,
            &format!("{group}-probe"),
            Arc::clone(&seen),
            Arc::clone(&probe_stop),
        )?;
        let producer = latency_producer(&args.bootstrap_servers)?;
        let world = World {
            producer: &producer,
            encoders: &encoders,
            customer: &customer,
            topic: &topic,
            seen: &seen,
        };

        // Warm up: until the sink applies a record (group joined, schema fetched), then
        // `--warmup-seconds` of traffic that is not counted.
        let started = Instant::now();
        loop {
            let phase = world.produce_at(next_seq, 1, 10).await?;
            next_seq += 1;
            if world.wait_visible(&phase, Duration::from_millis(500)).await == 0 {
                break;
            }
            if started.elapsed() > Duration::from_secs(60) {
                bail!(
                    "the sink applied nothing within 60 s (log: {})",
                    log.display()
                );
            }
        }
        let warmup = u64::from(WARMUP_RATE) * args.warmup_seconds;
        let phase = world.produce_at(next_seq, warmup, WARMUP_RATE).await?;
        next_seq += warmup;
        world.wait_visible(&phase, Duration::from_secs(10)).await;

        let mut round_trips = Vec::new();
        for &rate in &args.rates {
            let n = u64::from(rate) * args.seconds;
            let load_before = load_average();
            let metrics_before = apply_batches(metrics_port).await?;
            let commands_before = command_calls(&mut conn).await?;
            let phase = world.produce_at(next_seq, n, rate).await?;
            next_seq += n;
            let lost = world.wait_visible(&phase, Duration::from_secs(10)).await;
            let metrics_after = apply_batches(metrics_port).await?;
            let commands = command_calls(&mut conn).await?;
            let (batches, redis_seconds) = (
                metrics_after.batches - metrics_before.batches,
                metrics_after.batch_seconds - metrics_before.batch_seconds,
            );
            // The sink's own figure for the same changes (`sink_record_delay_seconds`, from
            // the broker's append time to Redis answering), as a mean in ms.
            let metric_mean = 1000.0 * (metrics_after.delay_seconds - metrics_before.delay_seconds)
                / (metrics_after.delayed - metrics_before.delayed).max(1.0);
            let seen = seen.lock().expect("seen lock");
            let (mut from_append, mut from_send, mut fetched, mut after_fetch) =
                (Vec::new(), Vec::new(), Vec::new(), Vec::new());
            for sent in &phase {
                let fetched_at = seen.fetched.get(&sent.seq);
                if let Some(at) = fetched_at {
                    fetched.push((at - sent.appended_ms * 1000) as f64 / 1000.0);
                }
                if let Some(at) = seen.rows.get(&sent.seq) {
                    from_append.push((at - sent.appended_ms * 1000) as f64 / 1000.0);
                    from_send.push((at - sent.sent_us) as f64 / 1000.0);
                    if let Some(fetched_at) = fetched_at {
                        after_fetch.push((at - fetched_at) as f64 / 1000.0);
                    }
                }
            }
            drop(seen);
            let bench_mean = from_append.iter().sum::<f64>() / from_append.len().max(1) as f64;
            round_trips.push((rate, per_change(&commands_before, &commands, n)));
            let (samples, [p50, p90, p99, max]) = spread(from_append);
            let (_, [s50, _, s99, _]) = spread(from_send);
            let (_, [f50, _, f99, _]) = spread(fetched);
            let (_, [a50, _, a99, _]) = spread(after_fetch);
            println!(
                "| {} | {rate} | {samples} | {lost} | {p50:.2} | {p90:.2} | {p99:.2} | {max:.2} | {s50:.2} | {s99:.2} | {f50:.2} | {f99:.2} | {a50:.2} | {a99:.2} | {batches:.0} | {:.2} | {:.3} | {bench_mean:.2} / {metric_mean:.2} | {load_before} → {} |",
                writer_name(writer),
                samples as f64 / batches.max(1.0),
                1000.0 * redis_seconds / batches.max(1.0),
                load_average(),
            );
        }
        probe_stop.store(true, Ordering::Relaxed);
        for (rate, per_change) in &round_trips {
            println!(
                "  {} {rate}/s, Redis commands per change: {per_change}",
                writer_name(writer)
            );
        }
        stop(sink, &log)?;
        loadgen::delete_topics(&args.bootstrap_servers, &[topic.as_str()]).await?;
    }
    std::fs::remove_dir_all(&dir).ok();
    Ok(())
}

/// One produced change: its sequence number (the row id), when `send` was called, and the
/// broker's append time from the delivery report.
struct Sent {
    seq: u64,
    sent_us: i64,
    appended_ms: i64,
}

/// What producing a phase needs.
struct World<'a> {
    producer: &'a FutureProducer,
    encoders: &'a Arc<(WireEncoder, WireEncoder)>,
    customer: &'a Json,
    topic: &'a str,
    seen: &'a Arc<Mutex<Seen>>,
}

impl World<'_> {
    /// Produces `n` inserts (rows `first..first + n`) at `rate` per second on a schedule kept
    /// by a thread of its own (`std::thread::sleep`, finer than the runtime's 1 ms timer),
    /// then waits for every delivery report.
    async fn produce_at(&self, first: u64, n: u64, rate: u32) -> anyhow::Result<Vec<Sent>> {
        let mut records = Vec::with_capacity(n as usize);
        for seq in first..first + n {
            let id = seq as i64;
            let micros = now_us();
            let row = serde_json::json!({
                "id": id, "email": format!("c{id}@example.com"), "name": format!("Customer {id}"),
                "plan": "pro", "mrr_cents": id % 1000 * 100, "created_at": micros, "updated_at": micros,
            });
            let value = loadgen::envelope(
                self.customer,
                "c",
                None,
                Some(row),
                50_000_000 + 16 * id,
                micros / 1000,
            );
            records.push((
                seq,
                self.encoders.0.encode(&serde_json::json!({ "id": id }))?,
                self.encoders.1.encode(&value)?,
            ));
        }
        let producer = self.producer.clone();
        let topic = self.topic.to_owned();
        let period = Duration::from_secs_f64(1.0 / f64::from(rate.max(1)));
        let sends = tokio::task::spawn_blocking(move || {
            let start = Instant::now();
            let mut sends: Vec<(u64, i64, DeliveryFuture)> = Vec::with_capacity(records.len());
            for (i, (seq, key, value)) in records.iter().enumerate() {
                let due = start + period.mul_f64(i as f64);
                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
                let record = FutureRecord::to(&topic).key(key).payload(value);
                let sent_us = now_us();
                match producer.send_result(record) {
                    Ok(delivery) => sends.push((*seq, sent_us, delivery)),
                    Err((e, _)) => return Err(anyhow::Error::from(e).context("producing")),
                }
            }
            Ok(sends)
        })
        .await??;
        let mut phase = Vec::with_capacity(sends.len());
        for (seq, sent_us, delivery) in sends {
            let delivery = delivery
                .await
                .context("delivery report dropped")?
                .map_err(|(e, _)| e)?;
            let Timestamp::LogAppendTime(appended_ms) = delivery.timestamp else {
                bail!(
                    "{}: the delivery report carries {:?}, not LogAppendTime",
                    self.topic,
                    delivery.timestamp
                );
            };
            phase.push(Sent {
                seq,
                sent_us,
                appended_ms,
            });
        }
        Ok(phase)
    }

    /// Waits up to `timeout` for every row of `phase` to be seen; returns how many were not.
    async fn wait_visible(&self, phase: &[Sent], timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        loop {
            let missing = {
                let seen = self.seen.lock().expect("seen lock");
                phase
                    .iter()
                    .filter(|s| !seen.rows.contains_key(&s.seq))
                    .count()
            };
            if missing == 0 || Instant::now() >= deadline {
                return missing;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

fn writer_name(writer: WriterMode) -> &'static str {
    match writer {
        WriterMode::Shared => "shared",
        WriterMode::Exclusive => "exclusive",
        WriterMode::Auto => "auto",
    }
}

/// A producer that sends each record in a request of its own at once (`linger.ms=0`), so
/// that the broker appends it when the bench's schedule says.
fn latency_producer(bootstrap: &str) -> anyhow::Result<FutureProducer> {
    Ok(ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("enable.idempotence", "true")
        .set("linger.ms", "0")
        .set("socket.nagle.disable", "true")
        .create()?)
}

/// Creates `topic` with the broker's append time as record timestamps.
async fn create_log_append_topic(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()?;
    let new = NewTopic::new(topic, partitions, TopicReplication::Fixed(1))
        .set("message.timestamp.type", "LogAppendTime");
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    for result in admin.create_topics([&new], &options).await? {
        result.map_err(|(topic, code)| anyhow::anyhow!("creating {topic}: {code}"))?;
    }
    Ok(())
}

/// The mapping file of one sink: the customers topic, rows under `{prefix}:customer:{id}`
/// with the email index, as in the shipped `connectors.yaml`.
fn mapping_yaml(args: &Args, redis_url: &str, prefix: &str, topic: &str, group: &str) -> String {
    format!(
        r#"kafka:
  bootstrap_servers: "{bootstrap}"
  group_id: "{group}"
  dead_letter_topic: "{group}-dlq"
schema_registry:
  url: "{registry}"
redis:
  url: "{redis_url}"
mappings:
  - name: customers
    topic: "{topic}"
    key: "{prefix}:customer:{{id}}"
    fields: all
    indexes:
      - name: email
        key: "{prefix}:customer:email:{{email}}"
"#,
        bootstrap = args.bootstrap_servers,
        registry = args.schema_registry_url,
    )
}

async fn wait_for_redis(
    client: &redis::Client,
) -> anyhow::Result<redis::aio::MultiplexedConnection> {
    let started = Instant::now();
    loop {
        match client.get_multiplexed_async_connection().await {
            Ok(conn) => return Ok(conn),
            Err(e) if started.elapsed() > Duration::from_secs(10) => {
                return Err(e).context("the private redis-server did not start")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// What the sink's metrics endpoint says so far, summed over labels.
struct SinkMetrics {
    /// `sink_apply_batch_seconds`: slices applied and their seconds.
    batches: f64,
    batch_seconds: f64,
    /// `sink_record_delay_seconds`: changes counted and their seconds.
    delayed: f64,
    delay_seconds: f64,
}

/// The sink's apply metrics so far.
async fn apply_batches(port: u16) -> anyhow::Result<SinkMetrics> {
    let text = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await?
        .text()
        .await?;
    let sum_of = |name: &str| -> f64 {
        text.lines()
            .filter(|l| {
                l.strip_prefix(name)
                    .is_some_and(|rest| rest.starts_with([' ', '{']))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    Ok(SinkMetrics {
        batches: sum_of("sink_apply_batch_seconds_count"),
        batch_seconds: sum_of("sink_apply_batch_seconds_sum"),
        delayed: sum_of("sink_record_delay_seconds_count"),
        delay_seconds: sum_of("sink_record_delay_seconds_sum"),
    })
}

/// Calls per command so far (`INFO commandstats`), e.g. `evalsha` → 1234.
async fn command_calls(
    conn: &mut redis::aio::MultiplexedConnection,
) -> anyhow::Result<HashMap<String, u64>> {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(conn)
        .await?;
    Ok(info
        .lines()
        .filter_map(|line| {
            let (name, stats) = line.strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = stats
                .strip_prefix("calls=")?
                .split(',')
                .next()?
                .parse()
                .ok()?;
            Some((name.to_owned(), calls))
        })
        .collect())
}

/// The commands Redis ran between `before` and `after` per change, most frequent first
/// (the bench's own `INFO` calls left out): how many round trips and commands a change costs.
fn per_change(before: &HashMap<String, u64>, after: &HashMap<String, u64>, changes: u64) -> String {
    let mut calls: Vec<(&String, u64)> = after
        .iter()
        .filter(|(name, _)| name.as_str() != "info")
        .map(|(name, n)| (name, n - before.get(name).copied().unwrap_or(0)))
        .filter(|(_, n)| *n > 0)
        .collect();
    calls.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
    calls
        .iter()
        .map(|(name, n)| format!("{name} {:.2}", *n as f64 / changes as f64))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Stops the sink with SIGTERM (as a service manager would) and checks it exits cleanly.
fn stop(mut sink: Owned, log: &Path) -> anyhow::Result<()> {
    Command::new("kill")
        .args(["-TERM", &sink.0.id().to_string()])
        .status()?;
    let status = sink.0.wait()?;
    if !status.success() {
        bail!("sink exited with {status} (log: {})", log.display());
    }
    Ok(())
}
