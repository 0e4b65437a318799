//! In-process `Lookups::call` latency on data loaded by someone else: the agent-cli side of
//! `tests/e2e/lookup_vs_pgbench.sh`, which runs it in rounds interleaved with pgbench on the
//! same data.
//!
//!     REDIS_URL=redis://127.0.0.1:6379/3 cargo bench -p agent-cli --bench lookup_latency -- \
//!         --config connectors.yaml --seconds 5 \
//!         get_customer '{"email":"jane@example.com"}' \
//!         get_customer_orders '{"customer_id":1,"limit":10}'
//!
//! For each `TOOL ARGS` pair: 200 warm-up calls, then calls for `--seconds` (or `--iterations`
//! calls), each timed alone, and one JSON line on stdout:
//! `{"tool", "args", "runtime", "n", "p50_us", "p99_us", "mean_us", "max_us"}`.
//!
//! `--ping` adds one line for Redis `PING` over a multiplexed connection of the same runtime
//! (tool `PING`): the round trip every lookup pays before any work.
//!
//! Both run on a current-thread tokio runtime, as `agent-cli` does. `--runtime embedded`
//! (default) reads through `Store::connect` (one multiplexed connection), `--runtime mcp`
//! through `Store::connect_managed` (the reconnecting connection of `agent-cli mcp`).
//!
//! `--read-cache` answers through the read cache `agent-cli mcp` keeps by default (README,
//! "Read cache"): the line then also gives, over the timed calls, `cache_hits`, `cache_misses`
//! (script calls: a row the answer read changed), `cache_stale_hits` (answers served while a
//! newer freshness hash existed) and `cache_stored` (answers read again or anew and kept).

use std::sync::Arc;
use std::time::{Duration, Instant};

use agent_cli::lookup::{self, AnswerCache, Lookups};
use agent_cli::read_cache::tracking;
use agent_cli::store::Store;
use redis::aio::ConnectionLike;
use serde_json::json;

struct Options {
    config: String,
    seconds: Option<f64>,
    iterations: usize,
    mcp_runtime: bool,
    read_cache: bool,
    ping: bool,
    calls: Vec<(String, String)>,
}

fn options() -> Options {
    let mut opts = Options {
        config: "connectors.yaml".into(),
        seconds: None,
        iterations: 5_000,
        mcp_runtime: false,
        read_cache: false,
        ping: false,
        calls: Vec::new(),
    };
    let mut args = std::env::args().skip(1);
    let mut free = Vec::new();
    while let Some(arg) = args.next() {
        let mut value = |name: &str| {
            args.next()
                .unwrap_or_else(|| panic!("{name} needs a value"))
        };
        match arg.as_str() {
            "--bench" => {} // added by `cargo bench`
            "--ping" => opts.ping = true,
            "--read-cache" => opts.read_cache = true,
            "--config" => opts.config = value("--config"),
            "--seconds" => opts.seconds = Some(value("--seconds").parse().expect("--seconds")),
            "--iterations" => {
                opts.iterations = value("--iterations").parse().expect("--iterations")
            }
            "--runtime" => {
                opts.mcp_runtime = match value("--runtime").as_str() {
                    "mcp" => true,
                    "embedded" => false,
                    other => panic!("--runtime is `embedded` or `mcp`, not `{other}`"),
                }
            }
            _ => free.push(arg),
        }
    }
    assert!(
        free.len() % 2 == 0,
        "expected TOOL ARGS_JSON pairs, got {free:?}"
    );
    let mut free = free.into_iter();
    while let (Some(tool), Some(args)) = (free.next(), free.next()) {
        opts.calls.push((tool, args));
    }
    opts
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo bench -- --list` / `cargo test --benches` probes
    }
    let opts = options();
    if opts.calls.is_empty() && !opts.ping {
        return; // `cargo bench` over the whole workspace: nothing to measure without data
    }
    let redis_url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let config = Arc::new(
        mapping::load_config(std::path::Path::new(&opts.config), &Default::default())
            .expect("the --config file loads"),
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    // A spawned task, as the MCP server's handlers are.
    let handle = runtime.spawn(async move {
        let cache = if opts.read_cache {
            Some(live_cache(&config, &redis_url).await)
        } else {
            None
        };
        if opts.mcp_runtime {
            let store = Store::connect_managed(&redis_url).await.expect("connect");
            measure(&opts, with(Lookups::new(config, store, None), cache)).await;
        } else {
            let store = Store::connect(&redis_url).await.expect("connect");
            measure(&opts, with(Lookups::new(config, store, None), cache)).await;
        }
    });
    runtime.block_on(handle).expect("the measurement panicked");
}

/// The read cache of `agent-cli mcp` (its default size), once tracking is on.
async fn live_cache(config: &mapping::Config, redis_url: &str) -> AnswerCache {
    let cache = lookup::answer_cache(config, 10_000);
    let mut redis = config.redis.clone();
    redis.url = redis_url.to_owned();
    tracking::spawn(&redis, cache.clone()).expect("tracking");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cache.is_live() {
        assert!(Instant::now() < deadline, "the read cache did not go live");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    cache
}

fn with<C: ConnectionLike + Clone + Send + Sync + 'static>(
    lookups: Lookups<C>,
    cache: Option<AnswerCache>,
) -> Lookups<C> {
    match cache {
        Some(cache) => lookups.with_cache(cache),
        None => lookups,
    }
}

async fn measure<C: ConnectionLike + Clone + Send + Sync + 'static>(
    opts: &Options,
    lookups: Lookups<C>,
) {
    let runtime = if opts.mcp_runtime { "mcp" } else { "embedded" };
    if opts.ping {
        let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
        let client = redis::Client::open(url).expect("REDIS_URL");
        let conn = client
            .get_multiplexed_async_connection()
            .await
            .expect("connect");
        let ping = || {
            let mut conn = conn.clone();
            async move {
                redis::cmd("PING")
                    .query_async::<String>(&mut conn)
                    .await
                    .expect("PING")
            }
        };
        warm_up(ping).await;
        let samples = timed(opts, ping).await;
        report("PING", "", runtime, samples, None);
    }
    for (tool, args) in &opts.calls {
        let call = || async { lookups.call(tool, args).await.expect("lookup") };
        warm_up(call).await;
        let before = lookups.cache().map(|c| c.stats());
        let samples = timed(opts, call).await;
        let during = lookups.cache().zip(before).map(|(c, before)| {
            let after = c.stats();
            json!({
                "cache_hits": after.hits - before.hits,
                "cache_misses": after.misses - before.misses,
                "cache_stale_hits": after.stale_hits - before.stale_hits,
                "cache_stored": after.inserted - before.inserted,
            })
        });
        report(tool, args, runtime, samples, during);
    }
}

/// 200 calls, not timed.
async fn warm_up<F, Fut, T>(call: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = T>,
{
    for _ in 0..200 {
        std::hint::black_box(call().await);
    }
}

/// `--seconds` or `--iterations` calls, each timed alone.
async fn timed<F, Fut, T>(opts: &Options, call: F) -> Vec<Duration>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = T>,
{
    let budget = opts.seconds.map(Duration::from_secs_f64);
    let started = Instant::now();
    let mut samples = Vec::with_capacity(opts.iterations);
    loop {
        let start = Instant::now();
        let out = call().await;
        samples.push(start.elapsed());
        std::hint::black_box(out);
        let done = match budget {
            Some(b) => started.elapsed() >= b,
            None => samples.len() >= opts.iterations,
        };
        if done {
            return samples;
        }
    }
}

/// One JSON line; `cache`: the read cache's counters over the timed calls.
fn report(
    tool: &str,
    args: &str,
    runtime: &str,
    mut samples: Vec<Duration>,
    cache: Option<serde_json::Value>,
) {
    samples.sort();
    let us = |d: Duration| (d.as_secs_f64() * 1e7).round() / 10.0;
    let pct = |q: f64| us(samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)]);
    let mean = samples.iter().sum::<Duration>() / samples.len() as u32;
    let mut line = json!({
        "tool": tool,
        "args": args,
        "runtime": runtime,
        "read_cache": cache.is_some(),
        "n": samples.len(),
        "p50_us": pct(0.50),
        "p99_us": pct(0.99),
        "mean_us": us(mean),
        "max_us": us(samples[samples.len() - 1]),
    });
    if let Some(serde_json::Value::Object(counters)) = cache {
        line.as_object_mut().expect("an object").extend(counters);
    }
    println!("{line}");
}
