//! `sink run` as a subprocess against the real stack: killed with SIGKILL mid-way (no final
//! commit, so records are delivered again), restarted, stopped with SIGTERM (exit 0 after the
//! final commit), and Redis ends in exactly the source's state; with each writer (the
//! exclusive one's restart, and the default `auto` one's, which is exclusive here, waits for
//! the killed one's lease to lapse, then loads what it left).

mod pipeline_support;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use pipeline_support::{
    applied, assert_state, generate, wait_until, wait_until_every, Scenario, Table,
};

fn start(s: &Scenario, log: &std::path::Path, extra: &[&str]) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("log file");
    Command::new(env!("CARGO_BIN_EXE_sink"))
        .args([
            "run",
            "--config",
            s.config_path.to_str().unwrap(),
            // One record per batch, so that the kill lands mid-way even on a fast machine
            // (batches of 50 applied all 4,000 records between two polls).
            "--batch-size",
            "1",
        ])
        // The killed member leaves the group after the session timeout: keep it short.
        .args(["-X", "session.timeout.ms=6000"])
        .args(extra)
        .env("RUST_LOG", "info")
        .env_remove("KAFKA_BOOTSTRAP_SERVERS")
        .env_remove("SCHEMA_REGISTRY_URL")
        .env_remove("REDIS_URL")
        .env_remove("SINK_GROUP_ID")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start sink")
}

/// Redis server time in milliseconds.
fn now_ms(redis: &mut redis::Connection) -> i64 {
    let (secs, micros): (i64, i64) = redis::cmd("TIME").query(redis).expect("TIME");
    secs * 1000 + micros / 1000
}

fn terminate(child: &Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_and_restarted_binary_ends_in_the_source_state() {
    // The default writer, `auto`: exclusive, since nothing stands in its way.
    killed_restarted_and_stopped(&["--lease-ms", "2000"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_and_restarted_shared_binary_ends_in_the_source_state() {
    killed_restarted_and_stopped(&["--writer", "shared"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_and_restarted_exclusive_binary_ends_in_the_source_state() {
    killed_restarted_and_stopped(&["--writer", "exclusive", "--lease-ms", "2000"]).await;
}

/// Runs the binary with `extra` arguments: killed mid-way, restarted, stopped.
async fn killed_restarted_and_stopped(extra: &[&str]) {
    let exclusive = !extra.contains(&"shared");
    let s = Scenario::new(2).await;
    let w = generate(4000);
    let records = s.encode(&w.events);
    s.produce(&records).await;
    let total = records.len() as i64;
    let topics = [
        s.topic(Table::Customers).to_owned(),
        s.topic(Table::Orders).to_owned(),
    ];
    let mut redis = s.stack.redis();
    let log = std::env::temp_dir().join(format!("sink-cli-run-{}.log", s.id));

    let lease_key = format!("sink:writer:{}", s.mapping(Table::Customers));
    let mut first = start(&s, &log, extra);
    wait_until_every(
        "a third of the records applied",
        Duration::from_secs(60),
        Duration::from_millis(5),
        || topics.iter().map(|t| applied(&mut redis, t)).sum::<i64>() > total / 3,
    )
    .await;
    let holder: Option<String> = redis::cmd("GET")
        .arg(&lease_key)
        .query(&mut redis)
        .expect("GET");
    assert_eq!(
        holder.is_some(),
        exclusive,
        "lease held while running: {holder:?}"
    );
    first.kill().expect("SIGKILL");
    first.wait().expect("reap");
    let at_kill: i64 = topics.iter().map(|t| applied(&mut redis, t)).sum();
    assert!(at_kill < total, "killed mid-way ({at_kill} of {total})");

    // Caught up in the second run: `sink:offsets` alone would not say it, since it keeps the
    // highest offset ever applied while the second run replays from the last commit.
    let restarted_ms = now_ms(&mut redis);
    let mut second = start(&s, &log, extra);
    let mappings = [s.mapping(Table::Customers), s.mapping(Table::Orders)];
    wait_until(
        "the restarted sink caught up",
        Duration::from_secs(60),
        || {
            mappings.iter().all(|m| {
                redis::cmd("HGET")
                    .arg(format!("sink:freshness:{m}"))
                    .arg("caught_up_at_ms")
                    .query::<Option<i64>>(&mut redis)
                    .ok()
                    .flatten()
                    .is_some_and(|at| at >= restarted_ms)
            })
        },
    )
    .await;
    assert_eq!(
        topics.iter().map(|t| applied(&mut redis, t)).sum::<i64>(),
        total
    );
    terminate(&second);
    let status = tokio::task::spawn_blocking(move || second.wait())
        .await
        .unwrap()
        .expect("wait");
    let stderr = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(status.code(), Some(0), "exit after SIGTERM; log:\n{stderr}");
    assert!(
        stderr.contains("offsets committed"),
        "final commit logged:\n{stderr}"
    );
    assert_eq!(
        stderr.contains("Holding the exclusive lease"),
        exclusive,
        "writer as asked:\n{stderr}"
    );
    let holder: Option<String> = redis::cmd("GET")
        .arg(&lease_key)
        .query(&mut redis)
        .expect("GET");
    assert_eq!(holder, None, "lease released at exit");

    assert_state(&s, &w);
    s.cleanup();
    std::fs::remove_file(log).ok();
}
