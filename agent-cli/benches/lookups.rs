//! Lookup latency against a real Redis (`REDIS_URL`, default `redis://127.0.0.1:6379`).
//!
//!     cargo bench -p agent-cli --bench lookups            # in-process + whole-process
//!     BENCH_ITERATIONS=20000 cargo bench -p agent-cli --bench lookups
//!
//! Fills Redis under a random key prefix with one customer and 1,000 orders of that customer
//! (the documented layout), then reports p50/p99:
//! - in process: `Lookups::call` (validation, one EVALSHA_RO round trip, typing) for
//!   `get_customer` by email and for the 10 newest of the 1,000 orders;
//! - whole process: `agent-cli tool get_customer '{"email": ...}'` spawned repeatedly
//!   (start-up, config load, connect, one EVAL_RO, print). With hyperfine installed the same
//!   is measured by hyperfine as well.
//!
//! Keys are deleted afterwards. The key prefix, mapping names and connectors.yaml come from
//! the integration tests' fixture (`tests/support/mod.rs`).
//!
//! The same whole-process lookups next to `psql -c` answering the same question from
//! PostgreSQL, on the same data in one run: `tests/e2e/lookup_vs_psql.sh` (figures in
//! BENCHMARKS.md, "agent-cli lookups vs psql"). In process next to a pooled PostgreSQL query
//! (pgbench -M prepared): `tests/e2e/lookup_vs_pgbench.sh` with the `lookup_latency` bench.

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use agent_cli::lookup::Lookups;
use agent_cli::store::Store;
use redis::Commands;

#[path = "../tests/support/mod.rs"]
mod support;

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo bench -- --list` / `cargo test --benches` probes
    }
    let redis_url = support::redis_url();
    let iterations: usize = std::env::var("BENCH_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5_000);
    let runs: usize = std::env::var("BENCH_PROCESS_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);

    // The tests' fixture: a random key prefix, mappings `customers_{prefix}` and
    // `orders_{prefix}` in a connectors.yaml of its own, the keys deleted when dropped.
    let mut fx = support::Fixture::new();
    let p = fx.prefix.clone();
    let config_path = fx.config.clone();
    let (customers, orders) = (fx.customers.clone(), fx.orders.clone());

    // One customer, 1,000 orders. The types are written here rather than with
    // `Fixture::put_types`, which adds `updated_at`: the rows have none, and a typed-but-absent
    // column would add `"updated_at": null` to every measured answer.
    let email = "jane.doe+bench@example.com";
    let conn = &mut fx.conn;
    let _: () = conn
        .hset_multiple(
            format!("sink:types:{customers}"),
            &[
                ("id", "int"),
                ("email", "string"),
                ("name", "string"),
                ("plan", "string"),
                ("mrr_cents", "int"),
                ("created_at", "timestamp"),
            ],
        )
        .unwrap();
    let _: () = conn
        .hset_multiple(
            format!("sink:types:{orders}"),
            &[
                ("id", "int"),
                ("customer_id", "int"),
                ("status", "string"),
                ("total_cents", "int"),
                ("items", "json"),
                ("created_at", "timestamp"),
            ],
        )
        .unwrap();
    fx.put_customer(42, email, "Jane Doe", "pro", 4900);
    let mut pipe = redis::pipe();
    let t0 = 1_790_000_000_000_000_i64;
    for id in 1..=1000_i64 {
        let ts = t0 + id * 1_000_000;
        let created = chrono::DateTime::from_timestamp_micros(ts)
            .unwrap()
            .to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        pipe.hset_multiple(
            format!("{p}:order:{id}"),
            &[
                ("id", id.to_string()),
                ("customer_id", "42".into()),
                ("status", "paid".into()),
                ("total_cents", (id * 100).to_string()),
                (
                    "items",
                    format!(
                        r#"[{{"sku":"SKU-{id}","qty":2,"price_cents":{}}}]"#,
                        id * 50
                    ),
                ),
                ("created_at", created),
            ],
        )
        .ignore();
        pipe.zadd(format!("{p}:customer:42:orders"), id.to_string(), ts as f64)
            .ignore();
    }
    let now = chrono::Utc::now().timestamp_millis();
    pipe.hset(format!("sink:freshness:{customers}"), "source_ts_ms", now)
        .ignore();
    pipe.hset(format!("sink:freshness:{orders}"), "source_ts_ms", now)
        .ignore();
    let _: () = pipe.query(&mut fx.conn).unwrap();

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let config = mapping::load_config(&config_path, &Default::default()).expect("bench config");
    let lookups = runtime.block_on(async {
        let store = Store::connect(&redis_url).await.expect("connect");
        Lookups::new(Arc::new(config), store, None)
    });
    let by_email = format!(r#"{{"email":"{email}"}}"#);
    println!(
        "agent-cli lookup latency against {redis_url} ({iterations} iterations each, in process)"
    );
    for (label, tool, args) in [
        ("get_customer by email", "get_customer", by_email.as_str()),
        (
            "10 newest of 1,000 orders",
            "get_customer_orders",
            r#"{"customer_id":42}"#,
        ),
    ] {
        let samples = runtime.block_on(async {
            for _ in 0..200 {
                lookups.call(tool, args).await.unwrap();
            }
            let mut samples = Vec::with_capacity(iterations);
            for _ in 0..iterations {
                let start = Instant::now();
                let out = lookups.call(tool, args).await.unwrap();
                samples.push(start.elapsed());
                std::hint::black_box(out);
            }
            samples
        });
        report(label, samples);
    }
    let out = runtime
        .block_on(lookups.call("get_customer_orders", r#"{"customer_id":42}"#))
        .unwrap();
    assert_eq!(out.result.as_array().unwrap().len(), 10);
    assert_eq!(out.result[0]["id"], 1000);

    let bin = env!("CARGO_BIN_EXE_agent-cli");
    let spawn = || {
        let status = Command::new(bin)
            .args([
                "--config",
                config_path.to_str().unwrap(),
                "tool",
                "get_customer",
                &by_email,
            ])
            .env("REDIS_URL", &redis_url)
            .stdout(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(status.success());
    };
    for _ in 0..5 {
        spawn();
    }
    let mut samples = Vec::with_capacity(runs);
    for _ in 0..runs {
        let start = Instant::now();
        spawn();
        samples.push(start.elapsed());
    }
    println!("whole process ({runs} runs):");
    report("agent-cli tool get_customer (email)", samples);

    if Command::new("hyperfine").arg("--version").output().is_ok() {
        let command = format!(
            "{bin} --config {} tool get_customer '{by_email}'",
            config_path.display()
        );
        let _ = Command::new("hyperfine")
            .args([
                "--warmup",
                "5",
                "--runs",
                &runs.to_string(),
                "-N",
                "--style",
                "basic",
                &command,
            ])
            .env("REDIS_URL", &redis_url)
            .status();
    } else {
        println!("(hyperfine not installed: `apt-get install hyperfine` for its statistics too)");
    }
    drop(fx); // deletes the keys
}

fn report(label: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let pct = |q: f64| samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)];
    let mean = samples.iter().sum::<Duration>() / samples.len() as u32;
    println!(
        "  {label:<40} p50 {:>8.1} µs   p99 {:>8.1} µs   mean {:>8.1} µs",
        pct(0.50).as_secs_f64() * 1e6,
        pct(0.99).as_secs_f64() * 1e6,
        mean.as_secs_f64() * 1e6
    );
}
