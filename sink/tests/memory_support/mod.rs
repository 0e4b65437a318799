//! Shared by the Redis memory tests: a private `redis-server` per test (the shared Redis
//! stays untouched), a sink pipeline run in the background as `sink run` runs it, with its
//! readiness at hand, and consumer-group and topic inspection.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use sink::config::{BatchSettings, SinkConfig, Writer};
use sink::pipeline::{StopWhen, Summary};
use sink::readiness::{PauseReason, Readiness};
use tokio_util::sync::CancellationToken;

use crate::pipeline_support::{applied, generate, rand_id, Scenario, Table};

/// `max.poll.interval.ms` of the sinks under test: as low as librdkafka allows with the
/// broker's minimum `session.timeout.ms` (6 s), so that staying paused longer is quick.
pub const MAX_POLL_INTERVAL: Duration = Duration::from_secs(6);

/// A `redis-server` of this test's own on a unix socket, killed on drop.
pub struct PrivateRedis {
    pub child: std::process::Child,
    socket: PathBuf,
    pub url: String,
    pub admin: redis::Connection,
}

impl PrivateRedis {
    /// Starts `redis-server` without persistence, with `maxmemory-policy` `policy` and
    /// `extra` arguments.
    pub fn start(policy: &str, extra: &[&str]) -> PrivateRedis {
        PrivateRedis::start_on(PrivateRedis::new_socket(), policy, extra)
    }

    /// A socket path of its own for a private `redis-server`, before one listens there.
    pub fn new_socket() -> PathBuf {
        std::env::temp_dir().join(format!("sink-memory-{}.sock", rand_id()))
    }

    /// The URL of a private `redis-server` on `socket`.
    pub fn url_of(socket: &std::path::Path) -> String {
        format!("redis+unix://{}", socket.display())
    }

    /// [`PrivateRedis::start`] on `socket`.
    pub fn start_on(socket: PathBuf, policy: &str, extra: &[&str]) -> PrivateRedis {
        let child = Command::new("redis-server")
            .args(["--port", "0", "--unixsocket", socket.to_str().unwrap()])
            .args(["--save", "", "--appendonly", "no"])
            .args(["--maxmemory-policy", policy])
            .args(extra)
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (tests/stack/redis.sh installs it)");
        let url = PrivateRedis::url_of(&socket);
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

    pub fn config_set(&mut self, key: &str, value: &str) {
        let _: () = redis::cmd("CONFIG")
            .arg("SET")
            .arg(key)
            .arg(value)
            .query(&mut self.admin)
            .unwrap_or_else(|e| panic!("CONFIG SET {key} {value}: {e}"));
    }

    pub fn used_memory(&mut self) -> u64 {
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

/// The member ids of consumer group `group` (empty when it has none).
pub fn group_members(bootstrap: &str, group: &str) -> Vec<String> {
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
pub fn records_in(bootstrap: &str, topic: &str) -> i64 {
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
pub struct Sink {
    pub scenario: Scenario,
    pub workload: testkit::loadgen::Workload,
    pub total: i64,
    pub readiness: Readiness,
    pub task: tokio::task::JoinHandle<Summary>,
}

impl Sink {
    /// Produces `events` changes to a new scenario writing `redis`, then runs the pipeline
    /// with the `exclusive` or the shared writer, pausing above `share` of `maxmemory`, as
    /// `sink run` does, in the background.
    pub async fn start(
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
        if exclusive {
            // A short lease, so that it lapses while Redis refuses its renewal (OOM).
            cfg.writer = Writer::Exclusive {
                lease: Duration::from_secs(2),
                max_memory: sink::apply::DEFAULT_MAX_WRITER_MEMORY,
            };
        }
        // As `sink run` runs it: started again in-process when Redis cannot vouch for what
        // it holds (`pipeline/self_heal.rs`).
        let readiness = Readiness::new();
        let (observed, shutdown) = (readiness.clone(), shutdown.clone());
        let task = tokio::spawn(async move {
            sink::run::run_reporting_to(&cfg, StopWhen::Shutdown, shutdown, readiness)
                .await
                .expect("sink runs")
        });
        let readiness = observed;
        Sink {
            scenario,
            workload,
            total: records.len() as i64,
            readiness,
            task,
        }
    }

    pub fn applied(&self) -> i64 {
        let mut redis = self.scenario.stack.redis();
        [Table::Customers, Table::Orders]
            .iter()
            .map(|t| applied(&mut redis, self.scenario.topic(*t)))
            .sum()
    }

    pub fn is_paused(&self) -> bool {
        self.readiness.paused() == vec![PauseReason::RedisMemory]
    }
}

/// Polls `check` every 100 ms until it holds (panics after `timeout`).
pub async fn wait_for(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
