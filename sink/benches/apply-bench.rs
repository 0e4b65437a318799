//! Redis's cost of applying changes, isolated from Kafka, decoding and the registry.
//!
//! ```text
//! cargo bench -p sink --bench apply-bench -- --events 200000
//! ```
//!
//! Generates `--events` changes ([`testkit::loadgen::workload`]: customer inserts, email-changing
//! updates, deletes with tombstones, order inserts, status changes, deletes), turns them into
//! planned changes directly (no Avro, no registry), spreads them over `--partitions`
//! partitions per topic by primary key, and applies them through [`Applier::apply_batch`]:
//! one task per partition, batches of `--batch-size` in order, as the consumer does. Then
//! replays everything (mostly no-ops). Reports events/s and what Redis itself spent
//! per change: `EVALSHA` time from `INFO commandstats` and the server's CPU time
//! (`INFO cpu`, which also counts reading and parsing the commands).
//!
//! Runs against a private `redis-server` on a free port (started and stopped here) unless
//! `--redis-url` names one, whose database must then be empty (it is flushed at the end).
//!
//! Last, the memory of `sink run --writer exclusive`'s bookkeeping: a fresh process (this
//! bench again, with `--load-bookkeeping`) loads what the applied workload left in Redis as an
//! exclusive writer does, and reports the process's resident memory growth and the writer's
//! estimate (`--max-writer-memory` bounds the estimate), per row and index key.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use mapping::{Change, FieldValue, Op, Row};
use serde_json::Value as Json;
use sink::apply::{Applier, ChangeScript, PlannedChange, ScriptWriter, DEFAULT_CHUNK};
use testkit::loadgen::{self, reference, Table};

/// The sink binary's allocator (`sink/src/main.rs`), so the figures are what `sink` runs.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Measures Redis's cost per applied change.
#[derive(Debug, Parser)]
#[command(name = "apply-bench")]
struct Args {
    /// Change events to generate.
    #[arg(long, default_value_t = 200_000)]
    events: usize,
    /// Partitions per topic (applied in parallel).
    #[arg(long, default_value_t = 4)]
    partitions: i32,
    /// Changes per `apply_batch` call (one pipeline).
    #[arg(long, default_value_t = 2000)]
    batch_size: usize,
    /// Changes per script call (`ScriptWriter::new`); default: the applier's.
    #[arg(long)]
    chunk: Option<usize>,
    /// An existing Redis (its database must be empty); default: a private redis-server.
    #[arg(long)]
    redis_url: Option<String>,
    /// Only load the bookkeeping in this Redis as an exclusive writer and report memory (the
    /// bench runs itself with it).
    #[arg(long, value_name = "URL", hide = true)]
    load_bookkeeping: Option<String>,
}

fn main() -> ExitCode {
    let args: Args = testkit::bench::args();
    match &args.load_bookkeeping {
        Some(url) => testkit::bench::run("apply-bench", load_bookkeeping(url)),
        None => testkit::bench::run("apply-bench", bench(&args)),
    }
}

/// A private `redis-server`, killed on drop.
struct Server(std::process::Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_server() -> anyhow::Result<(Server, String)> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let child = std::process::Command::new("redis-server")
        .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
        .args(["--save", "", "--appendonly", "no"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .context("redis-server must be installed (tests/stack/redis.sh installs it)")?;
    Ok((Server(child), format!("redis://127.0.0.1:{port}")))
}

fn yaml(url: &str) -> String {
    format!(
        r#"kafka:
  bootstrap_servers: "127.0.0.1:9"
  group_id: "apply-bench"
  dead_letter_topic: "apply-bench-dlq"
schema_registry:
  url: "http://127.0.0.1:9"
redis:
  url: "{url}"
mappings:
  - name: customers
    topic: "bench.public.customers"
    key: "customer:{{id}}"
    fields: all
    indexes:
      - name: email
        key: "customer:email:{{email}}"
  - name: orders
    topic: "bench.public.orders"
    key: "order:{{id}}"
    fields: all
    relations:
      - name: customer_orders
        key: "customer:{{customer_id}}:orders"
        order_by: created_at
"#
    )
}

/// The decoder's view of a generated row (the reference tables' column types).
fn row(json: &Json) -> Row {
    let Some(object) = json.as_object() else {
        return Vec::new();
    };
    object
        .iter()
        .map(|(name, v)| {
            let value = match (name.as_str(), v) {
                (_, Json::Null) => FieldValue::Null,
                ("created_at" | "updated_at", v) => {
                    FieldValue::TimestampMicros(v.as_i64().unwrap_or(0))
                }
                ("items", Json::String(s)) => FieldValue::Json(s.clone()),
                (_, Json::String(s)) => FieldValue::String(s.clone()),
                (_, v) => FieldValue::Int(v.as_i64().unwrap_or(0)),
            };
            (name.clone(), value)
        })
        .collect()
}

fn change(event: &loadgen::Event) -> Change {
    let key = row(&event.key);
    let Some(value) = &event.value else {
        return Change {
            op: Op::Tombstone,
            key,
            before: None,
            after: None,
            position: None,
            source_ts_ms: None,
        };
    };
    let op = match value["op"].as_str() {
        Some("c") => Op::Create,
        Some("u") => Op::Update,
        Some("d") => Op::Delete,
        _ => Op::Read,
    };
    let image = |name: &str| (!value[name].is_null()).then(|| row(&value[name]));
    Change {
        op,
        key,
        before: image("before"),
        after: image("after"),
        position: value["source"]["lsn"].as_i64(),
        source_ts_ms: value["source"]["ts_ms"].as_i64(),
    }
}

/// `INFO` figures: EVALSHA calls and microseconds, server CPU seconds.
#[derive(Debug, Clone, Copy, Default)]
struct Stats {
    calls: u64,
    /// Calls of every other command (those the scripts make, mostly).
    inner: u64,
    usec: u64,
    cpu: f64,
}

async fn stats(conn: &mut redis::aio::MultiplexedConnection) -> anyhow::Result<Stats> {
    let info: String = redis::cmd("INFO").arg("all").query_async(conn).await?;
    let mut s = Stats::default();
    for line in info.lines() {
        if let Some((name, rest)) = line
            .strip_prefix("cmdstat_")
            .and_then(|l| l.split_once(':'))
        {
            if !matches!(name, "evalsha" | "info" | "script" | "dbsize" | "flushdb") {
                let calls = rest.split(',').find_map(|p| p.strip_prefix("calls="));
                s.inner += calls.and_then(|c| c.parse::<u64>().ok()).unwrap_or(0);
            }
        }
        if let Some(rest) = line.strip_prefix("cmdstat_evalsha:") {
            for part in rest.split(',') {
                if let Some(v) = part.strip_prefix("calls=") {
                    s.calls = v.parse()?;
                } else if let Some(v) = part.strip_prefix("usec=") {
                    s.usec = v.parse()?;
                }
            }
        } else if let Some(v) = line
            .strip_prefix("used_cpu_sys:")
            .or_else(|| line.strip_prefix("used_cpu_user:"))
        {
            s.cpu += v.trim().parse::<f64>()?;
        }
    }
    Ok(s)
}

/// This process's CPU time in seconds (`/proc/self/stat` utime + stime, 100 Hz ticks).
fn own_cpu() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = stat.rsplit_once(") ").map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split(' ').collect();
    let tick = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (tick(11) + tick(12)) / 100.0
}

/// Applies every partition's changes in batches, partitions in parallel.
async fn run(
    applier: &Arc<Applier>,
    partitions: &Arc<Vec<Vec<PlannedChange>>>,
    batch: usize,
) -> anyhow::Result<(usize, usize)> {
    let mut tasks = Vec::new();
    for p in 0..partitions.len() {
        let partitions = partitions.clone();
        let applier = applier.clone();
        tasks.push(tokio::spawn(async move {
            let (mut applied, mut skipped) = (0, 0);
            for chunk in partitions[p].chunks(batch.max(1)) {
                let out = applier.apply_batch(chunk).await?;
                applied += out.applied;
                skipped += out.skipped;
            }
            anyhow::Ok((applied, skipped))
        }));
    }
    let (mut applied, mut skipped) = (0, 0);
    for task in tasks {
        let (a, s) = task.await??;
        applied += a;
        skipped += s;
    }
    Ok((applied, skipped))
}

async fn bench(args: &Args) -> anyhow::Result<()> {
    let (_server, url) = match &args.redis_url {
        Some(url) => (None, url.clone()),
        None => {
            let (server, url) = start_server()?;
            (Some(server), url)
        }
    };
    let client = redis::Client::open(url.as_str())?;
    let mut admin = None;
    for _ in 0..100 {
        if let Ok(c) = client.get_multiplexed_async_connection().await {
            admin = Some(c);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut admin = admin.with_context(|| format!("redis at {url} does not answer"))?;
    let size: i64 = redis::cmd("DBSIZE").query_async(&mut admin).await?;
    if size != 0 {
        bail!("the database of {url} holds {size} keys; the bench needs an empty one");
    }

    let config = mapping::load_config_str(
        &yaml(&url),
        "apply-bench.yaml",
        &mapping::ConnectionOverrides::default(),
    )
    .map_err(|e| anyhow::anyhow!("bench mapping does not load:\n{e}"))?;
    let customer: Json = reference::envelope_of(reference::CUSTOMER_SAMPLE)?;
    let order: Json = reference::envelope_of(reference::ORDER_SAMPLE)?;
    let workload = loadgen::workload(args.events, 7, &customer, &order, 1_795_480_000_000);
    let parts = args.partitions.max(1);
    let mut partitions: Vec<Vec<PlannedChange>> = vec![Vec::new(); 2 * parts as usize];
    let topics: [Arc<str>; 2] = [
        Arc::from("bench.public.customers"),
        Arc::from("bench.public.orders"),
    ];
    for event in &workload.events {
        let m = usize::from(event.table == Table::Orders);
        let id = event.key["id"].as_i64().unwrap_or(0);
        let partition = id.rem_euclid(i64::from(parts)) as i32;
        let list = &mut partitions[m * parts as usize + partition as usize];
        let change = change(event);
        list.push(PlannedChange {
            mapping: m,
            op: change.op,
            source_ts_ms: change.source_ts_ms,
            plan: mapping::plan(&config.mappings[m], change)?,
            topic: topics[m].clone(),
            partition,
            offset: list.len() as i64,
            record_time: None,
        });
    }
    let events = workload.events.len();
    let partitions = Arc::new(partitions);

    let pool = sink::connection::redis_pool(&url)?;
    let chunk = args.chunk.unwrap_or(DEFAULT_CHUNK);
    ChangeScript::new(&config.mappings, chunk)
        .load(&mut admin)
        .await?;
    let applier = Arc::new(Applier::Script(ScriptWriter::new(pool, &config, chunk)));
    // The replay re-applies some changes: a delete forgets the row's position, so the row's
    // older upserts re-create it until the replayed delete removes it again.
    for pass in ["apply", "replay"] {
        let before = stats(&mut admin).await?;
        let cpu_before = own_cpu();
        let start = Instant::now();
        let (applied, skipped) = run(&applier, &partitions, args.batch_size).await?;
        let wall = start.elapsed();
        let client_cpu = own_cpu() - cpu_before;
        let after = stats(&mut admin).await?;
        if applied + skipped != events {
            bail!("{pass}: {applied} applied + {skipped} skipped for {events} events");
        }
        let calls = after.calls - before.calls;
        let usec = (after.usec - before.usec) as f64;
        let cpu = after.cpu - before.cpu;
        println!(
            "apply-bench {pass}: {events} events ({applied} applied, {skipped} skipped) in {:.2} s = {:.0} events/s; \
             redis: {calls} EVALSHA, {:.2} commands per event, {:.2} us EVALSHA time per event ({:.1} us per call), {:.2} us server CPU per event \
             (busy {:.0}% of wall); client CPU {:.2} us per event; {} partitions x 2 topics, batch {}",
            wall.as_secs_f64(),
            events as f64 / wall.as_secs_f64(),
            (after.inner - before.inner) as f64 / events as f64,
            usec / events as f64,
            usec / calls.max(1) as f64,
            cpu * 1e6 / events as f64,
            100.0 * cpu / wall.as_secs_f64(),
            client_cpu * 1e6 / events as f64,
            parts,
            args.batch_size,
        );
    }
    let status = std::process::Command::new(std::env::current_exe()?)
        .args(["--load-bookkeeping", &url])
        .status()
        .context("run the bookkeeping load")?;
    if !status.success() {
        bail!("the bookkeeping load failed: {status}");
    }
    redis::cmd("FLUSHDB").query_async::<()>(&mut admin).await?;
    Ok(())
}

/// This process's resident memory in bytes (`/proc/self/statm`, 4 KiB pages).
fn resident_bytes() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: usize = statm
        .split(' ')
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

/// Loads the bookkeeping in `url` as `sink run --writer exclusive` does (in a fresh process)
/// and reports its memory: resident growth and the writer's estimate.
async fn load_bookkeeping(url: &str) -> anyhow::Result<()> {
    let config = mapping::load_config_str(
        &yaml(url),
        "apply-bench.yaml",
        &mapping::ConnectionOverrides::default(),
    )
    .map_err(|e| anyhow::anyhow!("bench mapping does not load:\n{e}"))?;
    let mut admin = redis::Client::open(url)?
        .get_multiplexed_async_connection()
        .await?;
    let mut lengths = redis::pipe();
    for key in [
        "sink:rows:customers",
        "sink:rows:orders",
        "sink:index:customers:email",
    ] {
        lengths.cmd("HLEN").arg(key);
    }
    let lengths: Vec<usize> = lengths.query_async(&mut admin).await?;
    let (rows, index_keys) = (lengths[0] + lengths[1], lengths[2]);
    let pool = sink::connection::redis_pool(url)?;
    let before = resident_bytes();
    let applier = Applier::exclusive(
        pool,
        &config,
        &sink::apply::WriterId::new(),
        sink::apply::DEFAULT_LEASE_TTL,
        u64::MAX,
        &tokio_util::sync::CancellationToken::new(),
    )
    .await?
    .context("no lease")?;
    let grown = resident_bytes().saturating_sub(before);
    let estimate = applier.bookkeeping_memory().await.unwrap_or(0);
    applier.release().await?;
    let entries = (rows + index_keys).max(1);
    println!(
        "apply-bench bookkeeping: {rows} rows + {index_keys} index keys; estimate {estimate} bytes = {:.0} per row or index key; \
         resident growth {grown} bytes = {:.0} per row or index key",
        estimate as f64 / entries as f64,
        grown as f64 / entries as f64,
    );
    Ok(())
}
