//! Redis memory, against a private `redis-server` this test starts (so the shared Redis is
//! untouched) with the shared Kafka and schema registry:
//!
//! - a workload larger than `maxmemory` under `noeviction`: both writers pause (readiness not
//!   ready, `sink_paused{reason="redis_memory"}` 1, `OOM`s counted), stay members of their
//!   consumer groups for longer than `max.poll.interval.ms`, and once `maxmemory` is raised
//!   resume and apply every change exactly, with nothing dead-lettered;
//! - a Redis that stops answering (SIGSTOP) for longer than `max.poll.interval.ms`: the sink
//!   keeps its group membership (the consume stage pauses and keeps polling), then applies
//!   everything;
//! - an evicting `maxmemory-policy` is refused (exit code 2, the message naming the policy and
//!   the fix) by `sink run` and `sink rebuild`, and accepted with `--allow-eviction`;
//!   `volatile-*` only when a mapping sets `ttl_seconds`; read from `INFO` when the sink's ACL
//!   user may not run `CONFIG`.

mod pipeline_support;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use pipeline_support::{applied, assert_state, generate, rand_id, Scenario, Stack, Table};
use rdkafka::consumer::{BaseConsumer, Consumer};
use sink::apply::Applier;
use sink::config::{BatchSettings, MemorySettings, SinkConfig};
use sink::connection::redis_pool;
use sink::pipeline::{Pipeline, Source, StopWhen, Summary};
use sink::readiness::{PauseReason, Readiness};
use tokio_util::sync::CancellationToken;

/// `max.poll.interval.ms` of the sinks under test: as low as librdkafka allows with the
/// broker's minimum `session.timeout.ms` (6 s), so that staying paused longer is quick.
const MAX_POLL_INTERVAL: Duration = Duration::from_secs(6);

/// A `redis-server` of this test's own on a unix socket, killed on drop.
struct PrivateRedis {
    child: std::process::Child,
    socket: PathBuf,
    url: String,
    admin: redis::Connection,
}

impl PrivateRedis {
    /// Starts `redis-server` without persistence, with `maxmemory-policy` `policy` and
    /// `extra` arguments.
    fn start(policy: &str, extra: &[&str]) -> PrivateRedis {
        let socket = std::env::temp_dir().join(format!("sink-memory-{}.sock", rand_id()));
        let child = Command::new("redis-server")
            .args(["--port", "0", "--unixsocket", socket.to_str().unwrap()])
            .args(["--save", "", "--appendonly", "no"])
            .args(["--maxmemory-policy", policy])
            .args(extra)
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (tests/stack/redis.sh installs it)");
        let url = format!("redis+unix://{}", socket.display());
        let start = Instant::now();
        let admin = loop {
            match redis::Client::open(url.as_str()).and_then(|c| c.get_connection()) {
                Ok(conn) => break conn,
                Err(e) if start.elapsed() > Duration::from_secs(10) => {
                    panic!("private redis-server at {url} did not answer: {e}")
                }
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        };
        PrivateRedis {
            child,
            socket,
            url,
            admin,
        }
    }

    fn config_set(&mut self, key: &str, value: &str) {
        let _: () = redis::cmd("CONFIG")
            .arg("SET")
            .arg(key)
            .arg(value)
            .query(&mut self.admin)
            .unwrap_or_else(|e| panic!("CONFIG SET {key} {value}: {e}"));
    }

    fn used_memory(&mut self) -> u64 {
        let info: String = redis::cmd("INFO")
            .arg("memory")
            .query(&mut self.admin)
            .unwrap();
        info.lines()
            .find_map(|l| l.trim().strip_prefix("used_memory:"))
            .and_then(|v| v.parse().ok())
            .expect("used_memory in INFO memory")
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.socket);
    }
}

/// The metrics recorded in this test binary, as `GET /metrics` renders them (installed once,
/// before any pipeline exists).
fn metrics() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        PrometheusBuilder::new()
            .install_recorder()
            .expect("the only recorder of this binary")
    })
}

/// The value of `name{label="value"}` in the rendered metrics, if recorded.
fn metric(name: &str, label: (&str, &str)) -> Option<f64> {
    let series = format!("{name}{{{}=\"{}\"}} ", label.0, label.1);
    metrics()
        .render()
        .lines()
        .find_map(|line| line.strip_prefix(&series))
        .map(|value| value.parse().expect("a number"))
}

/// The member ids of consumer group `group` (empty when it has none).
fn group_members(bootstrap: &str, group: &str) -> Vec<String> {
    let admin: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("admin consumer");
    let groups = admin
        .fetch_group_list(Some(group), Duration::from_secs(10))
        .expect("group list");
    groups
        .groups()
        .iter()
        .flat_map(|g| g.members().iter().map(|m| m.id().to_owned()))
        .collect()
}

/// Records in partition 0 of `topic` (its high watermark).
fn records_in(bootstrap: &str, topic: &str) -> i64 {
    let admin: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("admin consumer");
    admin
        .fetch_watermarks(topic, 0, Duration::from_secs(10))
        .expect("watermarks")
        .1
}

/// One sink under test: its scenario, readiness and the task running its pipeline.
struct Sink {
    scenario: Scenario,
    workload: testkit::loadgen::Workload,
    total: i64,
    readiness: Readiness,
    task: tokio::task::JoinHandle<Summary>,
}

impl Sink {
    /// Produces `events` changes to a new scenario writing `redis`, then runs the pipeline
    /// with the `exclusive` or the shared writer, pausing above `share` of `maxmemory`, as
    /// `sink run` does, in the background.
    async fn start(
        redis: &str,
        events: usize,
        exclusive: bool,
        share: f64,
        shutdown: &CancellationToken,
    ) -> Sink {
        let mut scenario = Scenario::new(2).await;
        scenario.stack.redis = redis.to_owned();
        std::fs::write(&scenario.config_path, scenario.yaml()).unwrap();
        let workload = generate(events);
        let records = scenario.encode(&workload.events);
        scenario.produce(&records).await;

        let mut cfg: SinkConfig =
            scenario.sink_config(BatchSettings::new(100, Duration::from_millis(5)));
        for (key, value) in [
            (
                "max.poll.interval.ms",
                MAX_POLL_INTERVAL.as_millis().to_string(),
            ),
            ("session.timeout.ms", "6000".to_owned()),
        ] {
            cfg.kafka_properties.insert(key.to_owned(), value);
        }
        cfg.memory.pause_at_share = share;
        let pipeline = Pipeline::connect(&cfg, &cfg.consumer_config())
            .await
            .expect("pipeline connects");
        let readiness = pipeline.readiness().clone();
        let pool = redis_pool(&cfg.config.redis).unwrap();
        let applier = if exclusive {
            // A short lease, so that it lapses while Redis refuses its renewal (OOM).
            Applier::exclusive(pool, &cfg.config, Duration::from_secs(2), shutdown)
                .await
                .expect("exclusive writer")
                .expect("not shut down")
        } else {
            Applier::new(pool, &cfg.config)
        };
        let mut running = pipeline
            .start(Source::Group, applier, StopWhen::Shutdown, shutdown.clone())
            .expect("pipeline starts");
        let task = tokio::spawn(async move { running.stopped().await.expect("sink runs") });
        Sink {
            scenario,
            workload,
            total: records.len() as i64,
            readiness,
            task,
        }
    }

    fn applied(&self) -> i64 {
        let mut redis = self.scenario.stack.redis();
        [Table::Customers, Table::Orders]
            .iter()
            .map(|t| applied(&mut redis, self.scenario.topic(*t)))
            .sum()
    }

    fn is_paused(&self) -> bool {
        self.readiness.paused() == vec![PauseReason::RedisMemory]
    }
}

/// Polls `check` every 100 ms until it holds (panics after `timeout`).
async fn wait_for(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_redis_pauses_both_writers_keeps_their_groups_and_loses_nothing() {
    metrics();
    let mut redis = PrivateRedis::start("noeviction", &[]);
    // About a third of what the two workloads need (they take some 3 MB together).
    let budget = redis.used_memory() + 1_000_000;
    redis.config_set("maxmemory", &budget.to_string());
    let shutdown = CancellationToken::new();
    // The exclusive writer first: it loads its bookkeeping and takes its lease before the
    // shared one fills Redis (`sink run` would wait for room to do that).
    // Each pauses at the default share of maxmemory or on an OOM reply, whichever comes
    // first; the batches already consumed (far more than the last 5%) make OOMs certain.
    let exclusive = Sink::start(&redis.url, 6000, true, 0.95, &shutdown).await;
    let shared = Sink::start(&redis.url, 6000, false, 0.95, &shutdown).await;
    let sinks = [&shared, &exclusive];

    wait_for("both sinks to pause", Duration::from_secs(60), || {
        sinks.iter().all(|s| s.is_paused())
    })
    .await;
    for s in sinks {
        assert_eq!(
            s.readiness.check().unwrap_err().to_string(),
            "not ready: paused (redis_memory), not caught up yet"
        );
    }
    assert_eq!(metric("sink_paused", ("reason", "redis_memory")), Some(1.0));
    wait_for("an OOM reply", Duration::from_secs(30), || {
        metric("sink_redis_errors_total", ("kind", "oom")).is_some_and(|n| n >= 1.0)
    })
    .await;
    // A sink may pause before its group finished forming (Redis is full from the other).
    let bootstrap = shared.scenario.stack.bootstrap.clone();
    wait_for(
        "both groups to have their member",
        Duration::from_secs(30),
        || {
            sinks
                .iter()
                .all(|s| group_members(&bootstrap, &s.scenario.group).len() == 1)
        },
    )
    .await;
    let members: Vec<Vec<String>> = sinks
        .iter()
        .map(|s| group_members(&bootstrap, &s.scenario.group))
        .collect();
    let applied_while_full: Vec<i64> = sinks.iter().map(|s| s.applied()).collect();

    // Paused for longer than max.poll.interval.ms: still paused, still the same member.
    let paused_since = Instant::now();
    while paused_since.elapsed() < MAX_POLL_INTERVAL * 3 / 2 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(
            sinks.iter().all(|s| s.is_paused()),
            "resumed while redis is full"
        );
    }
    assert_eq!(metric("sink_paused", ("reason", "redis_memory")), Some(1.0));
    for (s, before) in sinks.iter().zip(&members) {
        assert_eq!(
            &group_members(&bootstrap, &s.scenario.group),
            before,
            "{}: the member left or rejoined the group while paused",
            s.scenario.group
        );
    }
    for (s, before) in sinks.iter().zip(&applied_while_full) {
        assert!(
            s.applied() < s.total,
            "applied everything although redis was full"
        );
        assert!(s.applied() >= *before);
    }

    // Room again: both resume and apply every change.
    redis.config_set("maxmemory", "0");
    wait_for(
        "both sinks to apply everything",
        Duration::from_secs(60),
        || {
            sinks
                .iter()
                .all(|s| s.applied() == s.total && !s.is_paused())
        },
    )
    .await;
    assert_eq!(metric("sink_paused", ("reason", "redis_memory")), Some(0.0));
    shutdown.cancel();
    let (shared_summary, exclusive_summary) = (shared.task, exclusive.task);
    for (summary, s, total) in [
        (
            shared_summary.await.unwrap(),
            &shared.scenario,
            shared.total,
        ),
        (
            exclusive_summary.await.unwrap(),
            &exclusive.scenario,
            exclusive.total,
        ),
    ] {
        // Each record applied once: pausing and resuming delivered none twice (one member,
        // no rebalance), and the offsets above say none was skipped.
        assert_eq!(summary.records as i64, total, "{summary:?}");
        assert_eq!(summary.dead_lettered, 0, "{summary:?}");
        assert_eq!(records_in(&s.stack.bootstrap, &s.dlq), 0, "dead letters");
    }
    assert_state(&shared.scenario, &shared.workload);
    assert_state(&exclusive.scenario, &exclusive.workload);
    shared.scenario.cleanup();
    exclusive.scenario.cleanup();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stalled_redis_keeps_the_group_membership_and_loses_nothing() {
    let redis = PrivateRedis::start("noeviction", &[]);
    let shutdown = CancellationToken::new();
    let sink = Sink::start(&redis.url, 6000, false, 0.95, &shutdown).await;
    let bootstrap = sink.scenario.stack.bootstrap.clone();
    wait_for(
        "the group to form and some records applied",
        Duration::from_secs(30),
        || sink.applied() > 0 && group_members(&bootstrap, &sink.scenario.group).len() == 1,
    )
    .await;
    let member = group_members(&bootstrap, &sink.scenario.group);

    // Redis stops answering (SIGSTOP) for longer than max.poll.interval.ms: the apply queue
    // fills up, the consume stage pauses the partitions and keeps polling.
    let signal = |name: &str| {
        let status = Command::new("kill")
            .args([name, &redis.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill {name}");
    };
    signal("-STOP");
    tokio::time::sleep(MAX_POLL_INTERVAL * 3 / 2).await;
    let during = group_members(&bootstrap, &sink.scenario.group);
    signal("-CONT");
    assert_eq!(
        during, member,
        "the member left or rejoined the group while redis stalled"
    );
    assert!(
        sink.applied() < sink.total,
        "everything was applied before the stall"
    );

    wait_for("everything applied", Duration::from_secs(60), || {
        sink.applied() == sink.total
    })
    .await;
    shutdown.cancel();
    let summary = sink.task.await.unwrap();
    assert_eq!(summary.records as i64, sink.total, "{summary:?}");
    assert_eq!(summary.dead_lettered, 0, "{summary:?}");
    assert_state(&sink.scenario, &sink.workload);
    sink.scenario.cleanup();
}

/// A connectors.yaml for `redis` whose topics need not exist (the checks run before
/// consuming); `ttl` gives the mapping `ttl_seconds`.
fn config_file(stack: &Stack, redis: &str, ttl: bool) -> PathBuf {
    let id = rand_id();
    let path = std::env::temp_dir().join(format!("sink-memory-{id}.yaml"));
    let ttl = if ttl { "    ttl_seconds: 600\n" } else { "" };
    std::fs::write(
        &path,
        format!(
            "kafka:\n  bootstrap_servers: \"{}\"\n  group_id: \"t{id}-group\"\n  dead_letter_topic: \"t{id}-dlq\"\n\
             schema_registry:\n  url: \"{}\"\nredis:\n  url: \"{redis}\"\n\
             mappings:\n  - name: customers_{id}\n    topic: \"t{id}.public.customers\"\n    key: \"t{id}:customer:{{id}}\"\n{ttl}",
            stack.bootstrap, stack.registry
        ),
    )
    .unwrap();
    path
}

/// Runs the `sink` binary with `args`; its exit code and stderr.
fn sink(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_sink"))
        .args(args)
        .envs(env.iter().copied())
        .env_remove("KAFKA_BOOTSTRAP_SERVERS")
        .env_remove("SCHEMA_REGISTRY_URL")
        .env_remove("REDIS_URL")
        .env_remove("SINK_ALLOW_EVICTION")
        .env("RUST_LOG", "info")
        .output()
        .expect("run sink");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test]
async fn an_evicting_policy_is_refused_with_exit_2_unless_allowed() {
    let stack = Stack::get().await;
    let redis = PrivateRedis::start("allkeys-lru", &[]);
    let config = config_file(&stack, &redis.url, false);
    let config = config.to_str().unwrap();

    for command in ["run", "rebuild"] {
        let (code, stderr) = sink(&[command, "--config", config], &[]);
        assert_eq!(code, Some(2), "sink {command}: {stderr}");
        let refusal = stderr
            .lines()
            .find(|l| l.starts_with("sink: "))
            .unwrap_or_else(|| panic!("sink {command}: no error line in {stderr}"));
        for part in [
            "maxmemory-policy `allkeys-lru`",
            "redis evicts any key",
            "CONFIG SET maxmemory-policy noeviction",
            "--allow-eviction",
        ] {
            assert!(
                refusal.contains(part),
                "sink {command}: `{part}` missing in {refusal}"
            );
        }
    }

    // Allowed by the flag or the environment: it starts (and runs until stopped).
    for (args, env) in [
        (vec!["run", "--config", config, "--allow-eviction"], vec![]),
        (
            vec!["run", "--config", config],
            vec![("SINK_ALLOW_EVICTION", "true")],
        ),
    ] {
        let log = std::env::temp_dir().join(format!("sink-memory-{}.log", rand_id()));
        let mut child = Command::new(env!("CARGO_BIN_EXE_sink"))
            .args(&args)
            .envs(env.iter().copied())
            .env_remove("KAFKA_BOOTSTRAP_SERVERS")
            .env_remove("SCHEMA_REGISTRY_URL")
            .env_remove("REDIS_URL")
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start sink");
        let started = Instant::now();
        let text = loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if text.contains("Consuming.") {
                break text;
            }
            if let Some(status) = child.try_wait().unwrap() {
                panic!("{args:?} {env:?} exited with {status}: {text}");
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "{args:?} did not start: {text}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert!(
            text.contains("Redis may evict the sink's keys; starting anyway (--allow-eviction)."),
            "{text}"
        );
        let kill = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(kill.success());
        assert_eq!(child.wait().unwrap().code(), Some(0));
        let _ = std::fs::remove_file(&log);
    }
    let _ = std::fs::remove_file(config);
}

/// `sink::memory::start` with the mapping of `config_file` (`ttl` or not) against `redis`.
async fn start_guard(
    stack: &Stack,
    redis: &mapping::RedisConfig,
    ttl: bool,
    allow_eviction: bool,
) -> Result<(), sink::memory::MemoryError> {
    let path = config_file(stack, &redis.url, ttl);
    let config = mapping::load_config(&path, &mapping::ConnectionOverrides::default()).unwrap();
    let _ = std::fs::remove_file(&path);
    let settings = MemorySettings {
        pause_at_share: 0.95,
        allow_eviction,
    };
    sink::memory::start(redis, &config.mappings, settings, &Readiness::new())
        .await
        .map(drop)
}

#[tokio::test]
async fn volatile_policies_are_refused_only_with_ttl_mappings() {
    let stack = Stack::get().await;
    let redis = PrivateRedis::start("volatile-lru", &[]);
    let config = mapping::RedisConfig::from_url(redis.url.as_str());
    let refused = start_guard(&stack, &config, true, false).await.unwrap_err();
    assert!(refused.is_refusal(), "{refused:?}");
    let text = refused.to_string();
    assert!(
        text.contains("maxmemory-policy `volatile-lru`: redis evicts keys that have a TTL"),
        "{text}"
    );
    assert!(text.contains("(ttl_seconds)"), "{text}");
    start_guard(&stack, &config, false, false)
        .await
        .expect("volatile-lru without ttl_seconds");
    start_guard(&stack, &config, true, true)
        .await
        .expect("allowed");
}

#[tokio::test]
async fn the_policy_is_read_from_info_when_config_is_not_allowed() {
    let stack = Stack::get().await;
    let mut redis = PrivateRedis::start("allkeys-lfu", &[]);
    let _: () = redis::cmd("ACL")
        .arg(
            &[
                "SETUSER", "sink", "on", ">sink-pw", "~*", "+@all", "-config",
            ][..],
        )
        .query(&mut redis.admin)
        .unwrap();
    let mut config = mapping::RedisConfig::from_url(redis.url.as_str());
    config.username = Some("sink".to_owned());
    config.password = Some(mapping::Secret::new("sink-pw"));
    let refused = start_guard(&stack, &config, false, false)
        .await
        .unwrap_err();
    assert!(refused.is_refusal(), "{refused:?}");
    assert!(
        refused
            .to_string()
            .contains("maxmemory-policy `allkeys-lfu`"),
        "{refused}"
    );
    // Neither CONFIG nor INFO: named, and not a refusal of the policy itself.
    let _: () = redis::cmd("ACL")
        .arg(&["SETUSER", "sink", "-info"][..])
        .query(&mut redis.admin)
        .unwrap();
    let unreadable = start_guard(&stack, &config, false, false)
        .await
        .unwrap_err();
    assert!(!unreadable.is_refusal(), "{unreadable:?}");
    let text = unreadable.to_string();
    assert!(
        text.starts_with("cannot read maxmemory-policy of redis at "),
        "{text}"
    );
    assert!(!text.contains("sink-pw"), "{text}");
}
