//! Throughput of `sink rebuild` against the real stack.
//!
//! ```text
//! cargo bench -p sink --bench rebuild-bench -- --events 1000000
//! ```
//!
//! 1. Unless `--reuse ID` names topics of an earlier `--keep` run, generates `--events`
//!    change events ([`testkit::loadgen::workload`]: customer inserts, email-changing updates,
//!    deletes with tombstones, order inserts, status changes, deletes), encodes them in the
//!    Avro wire format with schemas registered in the registry and produces them to new
//!    topics (`--partitions` each).
//! 2. Runs [`sink::rebuild::rebuild`] (what `sink rebuild` runs) with the live state in
//!    `--live-db` and the staging database `--staging-db`, and reports the replay's events/s
//!    and the time from start to swap (health checks, memory check, flush and handover
//!    included), the Redis server's CPU time over the rebuild (`INFO cpu`), and the CPU time
//!    of the rebuild itself (this process's, over the same span: decoding, planning,
//!    deciding, encoding; librdkafka's threads included), per event.
//!
//! 3. With `--run-exclusive SECONDS`, starts the real `sink run --writer exclusive` (`--sink`,
//!    default the release build cargo builds with the bench) on the rebuilt state, and reports
//!    its start-up (the bookkeeping load, from its start-up line; process start to ready) and
//!    its resident memory (`VmRSS`) when ready and over SECONDS after (it is caught up:
//!    the rebuild recorded the offsets it resumes from), per row and index key held.
//!
//! Both databases are flushed at the end, and the topics deleted, unless `--keep`.
//! Environment as for `sink run`: KAFKA_BOOTSTRAP_SERVERS, SCHEMA_REGISTRY_URL, REDIS_URL
//! (its database is ignored: `--live-db` and `--staging-db` say which ones the bench uses).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use serde_json::Value as Json;
use sink::config::{BatchSettings, SinkConfig};
use sink::rebuild::{target, RebuildOptions};
use testkit::loadgen::{self, reference, Table, WireEncoder, WireRecord};
use tokio_util::sync::CancellationToken;

#[path = "support/exclusive_run.rs"]
mod exclusive_run;

/// The sink binary's allocator (`sink/src/main.rs`), so the figures are what `sink` runs.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Measures `sink rebuild`.
#[derive(Debug, Parser)]
#[command(name = "rebuild-bench")]
struct Args {
    /// Change events to generate.
    #[arg(long, default_value_t = 1_000_000)]
    events: usize,
    /// Partitions per topic.
    #[arg(long, default_value_t = 4)]
    partitions: i32,
    /// Records per Redis pipeline (`sink rebuild --batch-size`).
    #[arg(long, default_value_t = 2000)]
    batch_size: usize,
    /// Linger of a started batch, in milliseconds.
    #[arg(long, default_value_t = 5)]
    linger_ms: u64,
    /// Redis database of the live state.
    #[arg(long, default_value_t = 14)]
    live_db: i64,
    /// Redis database the rebuild builds in.
    #[arg(long, default_value_t = 15)]
    staging_db: i64,
    /// Rebuild from the topics of an earlier `--keep` run (its printed id) instead of
    /// producing new ones.
    #[arg(long, value_name = "ID")]
    reuse: Option<String>,
    /// Keep the topics and the databases.
    #[arg(long)]
    keep: bool,
    /// After the rebuild, run `sink run --writer exclusive` on its state and measure it,
    /// sampling its resident memory for this many seconds once it is ready.
    #[arg(long, value_name = "SECONDS")]
    run_exclusive: Option<u64>,
    /// With `--reuse ID --keep` and `--run-exclusive`: measure the sink on the state that
    /// run left in `--live-db`, without rebuilding it.
    #[arg(long)]
    skip_rebuild: bool,
    /// A further `sink run` argument for `--run-exclusive`, e.g.
    /// `--sink-arg=-Xqueued.max.messages.kbytes=8192`; repeatable.
    #[arg(long, value_name = "ARG", allow_hyphen_values = true)]
    sink_arg: Vec<String>,
    /// The sink binary for `--run-exclusive`.
    #[arg(long, default_value = env!("CARGO_BIN_EXE_sink"))]
    sink: PathBuf,
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

fn main() -> ExitCode {
    let args: Args = testkit::bench::args();
    testkit::bench::run("rebuild-bench", bench(&args))
}

fn topic(id: &str, table: Table) -> String {
    format!("rbench{id}.public.{}", table.name())
}

/// Creates the topics, registers the schemas, produces the workload.
async fn produce(args: &Args, id: &str) -> anyhow::Result<usize> {
    let mut encoders = Vec::new();
    for (table, key, value) in [
        (
            Table::Customers,
            reference::CUSTOMER_KEY,
            reference::CUSTOMER_VALUE,
        ),
        (Table::Orders, reference::ORDER_KEY, reference::ORDER_VALUE),
    ] {
        let topic = topic(id, table);
        loadgen::create_topic(&args.bootstrap_servers, &topic, args.partitions)
            .await
            .with_context(|| format!("creating {topic} at {}", args.bootstrap_servers))?;
        let (key, value) = (reference::schema_text(key)?, reference::schema_text(value)?);
        let key_id =
            loadgen::register(&args.schema_registry_url, &format!("{topic}-key"), &key).await?;
        let value_id =
            loadgen::register(&args.schema_registry_url, &format!("{topic}-value"), &value).await?;
        encoders.push((
            table,
            WireEncoder::new(key_id, &key)?,
            WireEncoder::new(value_id, &value)?,
        ));
    }
    let started = Instant::now();
    let customer: Json = reference::envelope_of(reference::CUSTOMER_SAMPLE)?;
    let order: Json = reference::envelope_of(reference::ORDER_SAMPLE)?;
    let workload = loadgen::workload(args.events, 7, &customer, &order, 1_795_480_000_000);
    let mut records = Vec::with_capacity(workload.events.len());
    for event in &workload.events {
        let (_, key, value) = encoders
            .iter()
            .find(|(t, _, _)| *t == event.table)
            .context("encoder")?;
        records.push(WireRecord {
            topic: topic(id, event.table),
            key: Some(key.encode(&event.key)?),
            value: event.value.as_ref().map(|v| value.encode(v)).transpose()?,
            headers: Vec::new(),
        });
    }
    let producer = loadgen::producer(&args.bootstrap_servers)?;
    loadgen::produce_all(&producer, &records).await?;
    println!(
        "workload: {} events ({} customers, {} orders at the end), {} partitions per topic; generated and produced in {:.2?}",
        records.len(),
        workload.customers.len(),
        workload.orders.len(),
        args.partitions,
        started.elapsed()
    );
    Ok(records.len())
}

fn yaml(args: &Args, id: &str, live_url: &str) -> String {
    format!(
        r#"kafka:
  bootstrap_servers: "{bootstrap}"
  group_id: "rbench{id}-group"
  dead_letter_topic: "rbench{id}-dlq"
schema_registry:
  url: "{registry}"
redis:
  url: "{live_url}"
mappings:
  - name: customers
    topic: "{customers}"
    key: "customer:{{id}}"
    fields: all
    indexes:
      - name: email
        key: "customer:email:{{email}}"
  - name: orders
    topic: "{orders}"
    key: "order:{{id}}"
    fields: all
    relations:
      - name: customer_orders
        key: "customer:{{customer_id}}:orders"
        order_by: created_at
"#,
        bootstrap = args.bootstrap_servers,
        registry = args.schema_registry_url,
        customers = topic(id, Table::Customers),
        orders = topic(id, Table::Orders),
    )
}

/// Runs the rebuild and prints its figures.
async fn rebuild(
    args: &Args,
    cfg: &SinkConfig,
    options: &RebuildOptions,
    live_url: &str,
    id: &str,
) -> anyhow::Result<()> {
    let cpu_before = testkit::bench::redis_cpu_seconds(live_url).await?;
    let own_cpu_before = testkit::bench::process_cpu_seconds()?;
    let start = Instant::now();
    let report = sink::rebuild::rebuild(cfg, options, CancellationToken::new())
        .await
        .context("rebuild")?;
    let wall = start.elapsed();
    let own_cpu = testkit::bench::process_cpu_seconds()? - own_cpu_before;
    let redis_cpu = testkit::bench::redis_cpu_seconds(live_url).await? - cpu_before;
    print!("{report}");
    let events = report.events();
    if events == 0 {
        bail!("the rebuild replayed nothing");
    }
    println!(
        "rebuild-bench: {events} events, replay {:.2} s = {:.0} events/s; start to swap {:.2} s (wall {:.2} s) = {:.0} events/s; redis CPU {redis_cpu:.2} s = {:.2} us per event; rebuild CPU {own_cpu:.2} s = {:.2} us per event; owning applier; batch size {}, {} partitions per topic; topics id {id}",
        report.replay.as_secs_f64(),
        report.rate(),
        report.total.as_secs_f64(),
        wall.as_secs_f64(),
        events as f64 / wall.as_secs_f64(),
        redis_cpu * 1e6 / events as f64,
        own_cpu * 1e6 / events as f64,
        args.batch_size,
        args.partitions,
    );
    Ok(())
}

async fn flushdb(url: &str) -> anyhow::Result<()> {
    let client = redis::Client::open(url)?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    redis::cmd("FLUSHDB")
        .arg("ASYNC")
        .query_async::<()>(&mut conn)
        .await?;
    Ok(())
}

async fn bench(args: &Args) -> anyhow::Result<()> {
    let id = match &args.reuse {
        Some(id) => id.clone(),
        None => {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)?
                .subsec_nanos();
            let id = format!("{nanos:08x}");
            produce(args, &id).await?;
            id
        }
    };
    let live_url = target::with_db(&args.redis_url, args.live_db)?;
    let staging_url = target::with_db(&args.redis_url, args.staging_db)?;
    let config = mapping::load_config_str(
        &yaml(args, &id, &live_url),
        "rebuild-bench.yaml",
        &mapping::ConnectionOverrides::default(),
    )
    .map_err(|e| anyhow::anyhow!("bench mapping does not load:\n{e}"))?;
    let cfg = SinkConfig::new(
        config,
        &[],
        BatchSettings::new(args.batch_size, Duration::from_millis(args.linger_ms)),
    );
    let options = RebuildOptions {
        staging_db: Some(args.staging_db),
        force: false,
        handover_timeout: Duration::from_secs(60),
        progress: false,
    };
    if args.skip_rebuild {
        if args.reuse.is_none() {
            bail!(
                "--skip-rebuild measures the state an earlier --keep run left: it needs --reuse ID"
            );
        }
    } else {
        rebuild(args, &cfg, &options, &live_url, &id).await?;
    }
    if let Some(seconds) = args.run_exclusive {
        let dir = std::env::temp_dir().join(format!("rebuild-bench-{id}"));
        std::fs::create_dir_all(&dir)?;
        let config = yaml(args, &id, &live_url);
        let run = exclusive_run::measure(
            &args.sink,
            &config,
            &live_url,
            &args.sink_arg,
            seconds,
            &dir,
        )
        .await?;
        let entries = (run.rows + run.index_keys).max(1) as f64;
        let mib = |bytes: u64| bytes as f64 / (1 << 20) as f64;
        println!(
            "rebuild-bench: sink run --writer exclusive: {} rows + {} index keys loaded from {} in {} ms (ready {:.2} s after start); estimate {:.1} MiB = {:.0} bytes per row or index key ({} when ready); resident {:.1} MiB when ready, at most {:.1} MiB and {:.1} MiB last over {seconds} s = {:.0} bytes per row or index key (the whole process)",
            run.rows,
            run.index_keys,
            run.from,
            run.load_ms,
            run.ready.as_secs_f64(),
            mib(run.estimate),
            run.estimate as f64 / entries,
            run.estimate_ready
                .map_or("no batch yet".to_owned(), |b| format!("{:.1} MiB", mib(b))),
            mib(run.rss_ready),
            mib(run.rss_max),
            mib(run.rss_last),
            run.rss_max as f64 / entries,
        );
        match run.left {
            Some((bytes, ms)) => println!(
                "rebuild-bench: at shutdown it left its bookkeeping in redis: {:.1} MiB in {ms} ms",
                mib(bytes)
            ),
            None => println!("rebuild-bench: at shutdown it left no bookkeeping in redis"),
        }
    }
    if !args.keep {
        flushdb(&live_url).await?;
        flushdb(&staging_url).await?;
        let topics = [topic(&id, Table::Customers), topic(&id, Table::Orders)];
        let topics: Vec<&str> = topics.iter().map(String::as_str).collect();
        loadgen::delete_topics(&args.bootstrap_servers, &topics).await?;
    }
    Ok(())
}
