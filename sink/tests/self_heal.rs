//! Self-healing offsets against the real stack, with both writers: Redis, not the group's
//! committed offsets, says where each partition resumes.
//!
//! - At assignment: a database restored to an older image (a failover to a lagging replica)
//!   resumes from its own `sink:offsets`, a flushed one from the earliest offset, although
//!   the group committed the end of the log; both end key for key equal to a clean replay.
//! - While running: a `FLUSHDB` under a caught-up sink is noticed within seconds, the sink
//!   replays in-process and ends key for key equal to the clean replay.
//!
//! Each test uses Redis databases of its own (`rebuild_support::take_dbs`) and counts the
//! rewinds through `sink_offset_resets_total`, rendered by the Prometheus recorder.

mod rebuild_support;

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use rebuild_support::*;
use redis::Commands;
use sink::config::{BatchSettings, SinkConfig, Writer};
use sink::pipeline::{StopWhen, Summary};
use tokio_util::sync::CancellationToken;

const EXCLUSIVE: Writer = Writer::Exclusive {
    lease: Duration::from_secs(2),
    max_memory: sink::apply::DEFAULT_MAX_WRITER_MEMORY,
};

/// The process-wide recorder (installed once per test binary).
fn metrics() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        PrometheusBuilder::new()
            .install_recorder()
            .expect("install the prometheus recorder")
    })
}

/// `sink_offset_resets_total{topic}` so far.
fn resets(topic: &str) -> u64 {
    let prefix = format!("{}{{topic=\"{topic}\"}} ", sink::telemetry::OFFSET_RESETS);
    metrics()
        .render()
        .lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .map_or(0, |n| n.trim().parse().expect("counter value"))
}

/// The sink's configuration for database `db`, group `group`, with `writer`.
fn config(world: &World, db: i64, group: &str, writer: Writer) -> SinkConfig {
    let path = world.write_config(&format!("heal-{group}"), &world.yaml(db, group));
    let config = mapping::load_config(&path, &mapping::ConnectionOverrides::default())
        .unwrap_or_else(|e| panic!("config does not load:\n{e}"));
    SinkConfig::new(config, &[], BatchSettings::default()).with_writer(writer)
}

/// `sink run` until caught up.
async fn run_caught_up(cfg: &SinkConfig) -> Summary {
    let run = sink::run::run(cfg, StopWhen::CaughtUp, CancellationToken::new());
    match tokio::time::timeout(Duration::from_secs(120), run).await {
        Ok(result) => result.unwrap_or_else(|e| panic!("sink run failed: {e:#}")),
        Err(_) => panic!("sink run did not catch up within 120 s"),
    }
}

/// Every key of database `db` as `DUMP` images.
fn image(world: &World, db: i64) -> Vec<(String, Vec<u8>)> {
    let mut conn = world.stack.conn(db);
    let keys: Vec<String> = conn.keys("*").expect("KEYS");
    keys.into_iter()
        .map(|key| {
            let dump: Vec<u8> = redis::cmd("DUMP").arg(&key).query(&mut conn).expect("DUMP");
            (key, dump)
        })
        .collect()
}

/// Replaces database `db` with `image` (what a failover to a replica that saw only `image`
/// leaves: the same server, an older state).
fn restore(world: &World, db: i64, image: &[(String, Vec<u8>)]) {
    let mut conn = world.stack.conn(db);
    let _: () = redis::cmd("FLUSHDB").query(&mut conn).expect("FLUSHDB");
    for (key, dump) in image {
        let _: () = redis::cmd("RESTORE")
            .arg(key)
            .arg(0)
            .arg(dump)
            .query(&mut conn)
            .expect("RESTORE");
    }
}

fn flushdb(world: &World, db: i64) {
    let _: () = redis::cmd("FLUSHDB")
        .query(&mut world.stack.conn(db))
        .expect("FLUSHDB");
}

/// The state of database `db` as [`snapshot`] takes it, without the exclusive writer's
/// lease (held while it runs, gone once it stopped).
fn state(world: &World, db: i64) -> std::collections::BTreeMap<String, Content> {
    let mut state = snapshot(&world.stack, db, true);
    state.retain(|key, _| !key.starts_with("sink:writer:"));
    state
}

/// Customers of the running tests' workload (about 4.4 records each): 300, or
/// `SELF_HEAL_CUSTOMERS` for measuring how long healing takes (RELIABILITY.md).
fn customers() -> i64 {
    std::env::var("SELF_HEAL_CUSTOMERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300)
}

/// `sink:offsets` of database `db`: where each partition's applied records end.
fn offsets(world: &World, db: i64) -> std::collections::BTreeMap<String, String> {
    world
        .stack
        .conn(db)
        .hgetall(mapping::layout::OFFSETS_KEY)
        .expect("HGETALL sink:offsets")
}

/// The group's committed offsets of the world's topics, by `sink:offsets` field.
fn committed(world: &World, group: &str) -> std::collections::BTreeMap<String, i64> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &world.stack.bootstrap)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut tpl = rdkafka::TopicPartitionList::new();
    for topic in [&world.customers.topic, &world.orders.topic] {
        for partition in 0..2 {
            tpl.add_partition(topic, partition);
        }
    }
    consumer
        .committed_offsets(tpl, Duration::from_secs(10))
        .expect("committed offsets")
        .elements()
        .iter()
        .filter_map(|e| match e.offset() {
            rdkafka::Offset::Offset(o) => {
                Some((mapping::layout::offsets_field(e.topic(), e.partition()), o))
            }
            _ => None,
        })
        .collect()
}

/// Resets of both of the world's topics.
fn resets_of(world: &World) -> u64 {
    resets(&world.customers.topic) + resets(&world.orders.topic)
}

async fn resumes_from_what_redis_holds_at_assignment(writer: Writer) {
    metrics();
    let world = World::new(2, &[]).await;
    let dbs = take_dbs(&world.stack, 2);
    let (live, reference) = (dbs[0], dbs[1]);
    let records = world.workload(300, 1_000);
    let (early, late) = records.split_at(records.len() / 2);
    let group = format!("r{}-heal", world.id);
    let cfg = config(&world, live, &group, writer);

    world.produce(early).await;
    let first = run_caught_up(&cfg).await;
    assert_eq!(first.records as usize, early.len(), "{first:?}");
    let older = image(&world, live);
    world.produce(late).await;
    let second = run_caught_up(&cfg).await;
    assert_eq!(second.records as usize, late.len(), "{second:?}");
    world.clean_build(reference, DEFAULT_MAPPINGS).await;
    let expected = snapshot(&world.stack, reference, true);
    assert_same(
        &snapshot(&world.stack, live, true),
        &expected,
        "after both halves",
    );

    // Redis lags the group: it holds only the first half, the group committed the end.
    let held_at_end = offsets(&world, live);
    restore(&world, live, &older);
    assert_ne!(
        snapshot(&world.stack, live, true),
        expected,
        "no lag planted"
    );
    let before = resets_of(&world);
    // Where each partition must start: after what Redis holds, never after the group.
    let end = committed(&world, &group);
    let held = offsets(&world, live);
    let starts: std::collections::BTreeMap<String, i64> = end
        .iter()
        .map(|(field, &c)| {
            let next = held.get(field).map_or(0, |a| a.parse::<i64>().unwrap() + 1);
            (field.clone(), next.min(c))
        })
        .collect();
    assert_ne!(starts, end, "the group is not ahead of redis");
    // The sink's own commits of what it applied only at shutdown, so that the assignment's
    // commit of the starts is seen: the group's offsets then say what Redis says.
    let path = world.write_config("heal-lag", &world.yaml(live, &group));
    let quiet = SinkConfig::new(
        mapping::load_config(&path, &mapping::ConnectionOverrides::default()).expect("config"),
        &[("auto.commit.interval.ms".to_owned(), "600000".to_owned())],
        BatchSettings::default(),
    )
    .with_writer(writer);
    let stop = CancellationToken::new();
    let healed = tokio::spawn({
        let stop = stop.clone();
        async move { sink::run::run(&quiet, StopWhen::Shutdown, stop).await }
    });
    wait_until(
        "the group's committed offsets to move back to what redis holds",
        Duration::from_secs(30),
        || committed(&world, &group) == starts,
    )
    .await;
    wait_until(
        "the sink to apply the second half again",
        Duration::from_secs(60),
        || offsets(&world, live) == held_at_end,
    )
    .await;
    stop.cancel();
    let healed = healed
        .await
        .expect("sink task")
        .unwrap_or_else(|e| panic!("sink run failed: {e:#}"));
    assert_eq!(committed(&world, &group), end, "committed at shutdown");
    assert_eq!(
        healed.records as usize,
        late.len(),
        "resumed from sink:offsets + 1, not from the committed end or the beginning: {healed:?}"
    );
    assert_same(
        &snapshot(&world.stack, live, true),
        &expected,
        "after resuming from the older image",
    );
    assert!(
        resets_of(&world) > before,
        "no sink_offset_resets_total counted"
    );

    // Redis lost everything while the sink was stopped: a replay from the earliest offsets.
    flushdb(&world, live);
    let before = resets_of(&world);
    let replayed = run_caught_up(&cfg).await;
    assert_eq!(replayed.records as usize, records.len(), "{replayed:?}");
    assert_same(
        &snapshot(&world.stack, live, true),
        &expected,
        "after the replay of a flushed database",
    );
    // Every partition of both topics holds records, so every one moved back.
    assert_eq!(resets_of(&world) - before, 4, "one reset per partition");

    // Nothing lost now: the next start trusts Redis and the group alike.
    let idle = run_caught_up(&cfg).await;
    assert_eq!(idle.records, 0, "{idle:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_writer_resumes_from_what_redis_holds_at_assignment() {
    resumes_from_what_redis_holds_at_assignment(Writer::Shared).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exclusive_writer_resumes_from_what_redis_holds_at_assignment() {
    resumes_from_what_redis_holds_at_assignment(EXCLUSIVE).await;
}

async fn heals_a_flush_while_running(writer: Writer) {
    metrics();
    let world = World::new(2, &[]).await;
    let dbs = take_dbs(&world.stack, 2);
    let (live, reference) = (dbs[0], dbs[1]);
    let records = world.workload(customers(), 1_000);
    world.produce(&records).await;
    world.clean_build(reference, DEFAULT_MAPPINGS).await;
    let expected = state(&world, reference);
    let end = offsets(&world, reference);
    let patience = Duration::from_secs(60 + records.len() as u64 / 1_000);

    let stop = CancellationToken::new();
    let cfg = config(&world, live, &format!("r{}-heal", world.id), writer);
    let running = tokio::spawn({
        let stop = stop.clone();
        async move { sink::run::run(&cfg, StopWhen::Shutdown, stop).await }
    });
    wait_until("the sink to apply the log", patience, || {
        offsets(&world, live) == end
    })
    .await;
    assert_same(&state(&world, live), &expected, "applied once");

    let before = resets_of(&world);
    flushdb(&world, live);
    let flushed = Instant::now();
    // Offsets are recorded atomically with the changes they cover: once every partition's
    // is back at the end, the replay is complete.
    wait_until("the sink to notice the flush and replay", patience, || {
        offsets(&world, live) == end
    })
    .await;
    let healed_in = flushed.elapsed();
    assert_same(&state(&world, live), &expected, "healed");
    assert!(
        !running.is_finished(),
        "the sink stopped instead of healing"
    );
    assert_eq!(resets_of(&world) - before, 4, "one reset per partition");
    stop.cancel();
    let summary = running
        .await
        .expect("sink task")
        .unwrap_or_else(|e| panic!("sink run failed: {e:#}"));
    assert_same(&state(&world, live), &expected, "after shutdown");
    assert_eq!(
        summary.records as usize,
        2 * records.len(),
        "applied once, then replayed once: {summary:?}"
    );
    println!(
        "{writer:?}: healed {} records in {:.1} s after FLUSHDB",
        records.len(),
        healed_in.as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_writer_heals_a_flush_while_running() {
    heals_a_flush_while_running(Writer::Shared).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exclusive_writer_heals_a_flush_while_running() {
    heals_a_flush_while_running(EXCLUSIVE).await;
}

/// A `redis-server` of this test on a free port, saving only when told (`SAVE`) into a
/// directory of its own, which the test can restart empty or from the saved file; killed
/// (and its directory removed) on drop.
struct EphemeralRedis {
    port: u16,
    dir: std::path::PathBuf,
    child: std::process::Child,
}

impl EphemeralRedis {
    fn start() -> EphemeralRedis {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let dir = std::env::temp_dir().join(format!("sink-self-heal-redis-{port}"));
        std::fs::create_dir_all(&dir).expect("redis dir");
        let child = EphemeralRedis::spawn(port, &dir);
        EphemeralRedis { port, dir, child }
    }

    fn spawn(port: u16, dir: &std::path::Path) -> std::process::Child {
        let child = std::process::Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args(["--save", "", "--appendonly", "no", "--dir"])
            .arg(dir)
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server must be installed (tests/stack/redis.sh installs it)");
        let url = format!("redis://127.0.0.1:{port}");
        let started = Instant::now();
        while redis::Client::open(url.as_str())
            .and_then(|c| c.get_connection())
            .and_then(|mut c| redis::cmd("DBSIZE").query::<i64>(&mut c))
            .is_err()
        {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "redis-server on {port} did not answer"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        child
    }

    /// Redis URL without a database.
    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Writes the dataset to its file now (`SAVE`).
    fn save(&self) {
        let mut conn = redis::Client::open(self.url())
            .and_then(|c| c.get_connection())
            .expect("redis connection");
        let _: () = redis::cmd("SAVE").query(&mut conn).expect("SAVE");
    }

    /// Kills the server (what it did not save is gone) and, after `down`, starts it again
    /// on its port, loading the last saved file if there is one.
    fn restart(&mut self, down: Duration) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::thread::sleep(down);
        self.child = EphemeralRedis::spawn(self.port, &self.dir);
    }

    /// [`EphemeralRedis::restart`] without a saved file: everything it held is gone.
    fn restart_empty(&mut self, down: Duration) {
        let _ = std::fs::remove_file(self.dir.join("dump.rdb"));
        self.restart(down);
    }
}

impl Drop for EphemeralRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// [`state`] without `sink:offsets:run`, whose values name the server run.
fn state_across_servers(world: &World, db: i64) -> std::collections::BTreeMap<String, Content> {
    let mut state = state(world, db);
    state.remove(mapping::layout::OFFSETS_RUN_KEY);
    state
}

async fn heals_an_empty_restart_while_running(writer: Writer) {
    metrics();
    let mut world = World::new(2, &[]).await;
    let reference = take_dbs(&world.stack, 1)[0];
    let records = world.workload(customers(), 1_000);
    world.produce(&records).await;
    world.clean_build(reference, DEFAULT_MAPPINGS).await;
    let expected = state_across_servers(&world, reference);
    let end = offsets(&world, reference);
    let patience = Duration::from_secs(60 + records.len() as u64 / 1_000);

    // From here on the world's Redis is the test's own server.
    let mut server = EphemeralRedis::start();
    world.stack.redis = server.url();
    let live = 0;
    let stop = CancellationToken::new();
    let cfg = config(&world, live, &format!("r{}-heal", world.id), writer);
    let running = tokio::spawn({
        let stop = stop.clone();
        async move { sink::run::run(&cfg, StopWhen::Shutdown, stop).await }
    });
    wait_until("the sink to apply the log", patience, || {
        offsets(&world, live) == end
    })
    .await;
    assert_same(
        &state_across_servers(&world, live),
        &expected,
        "applied once",
    );

    let before = resets_of(&world);
    // Down for 2 s (the sink's batches and checks fail meanwhile), then back empty.
    server.restart_empty(Duration::from_secs(2));
    let restarted = Instant::now();
    wait_until(
        "the sink to notice the restart and replay",
        patience,
        || offsets(&world, live) == end,
    )
    .await;
    let healed_in = restarted.elapsed();
    assert_same(&state_across_servers(&world, live), &expected, "healed");
    assert!(
        !running.is_finished(),
        "the sink stopped instead of healing"
    );
    assert_eq!(resets_of(&world) - before, 4, "one reset per partition");
    let mut conn = world.stack.conn(live);
    let info: String = redis::cmd("INFO").arg("server").query(&mut conn).unwrap();
    let run_id = info
        .lines()
        .find_map(|l| l.strip_prefix("run_id:"))
        .expect("run_id")
        .trim()
        .to_owned();
    let marks: std::collections::BTreeMap<String, String> =
        conn.hgetall(mapping::layout::OFFSETS_RUN_KEY).unwrap();
    assert_eq!(marks.len(), 4, "{marks:?}");
    assert!(
        marks
            .values()
            .all(|m| sink::apply::run_of(m) == run_id && m.len() > run_id.len() + 1),
        "every marker names the run and its assignment's token: {marks:?} vs {run_id}"
    );
    stop.cancel();
    let summary = running
        .await
        .expect("sink task")
        .unwrap_or_else(|e| panic!("sink run failed: {e:#}"));
    assert_eq!(
        summary.records as usize,
        2 * records.len(),
        "applied once, then replayed once: {summary:?}"
    );
    println!(
        "{writer:?}: healed {} records in {:.1} s after an empty restart",
        records.len(),
        healed_in.as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_writer_heals_an_empty_restart_while_running() {
    heals_an_empty_restart_while_running(Writer::Shared).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exclusive_writer_heals_an_empty_restart_while_running() {
    heals_an_empty_restart_while_running(EXCLUSIVE).await;
}

/// Records applied so far per `sink:offsets` (sum of last offset + 1 over partitions).
fn applied_records(world: &World, db: i64) -> i64 {
    offsets(world, db)
        .values()
        .map(|o| o.parse::<i64>().expect("offset") + 1)
        .sum()
}

/// A flush while batches are in flight: batches applied after the flush record
/// `sink:offsets` again, but not the markers, so the sink still replays everything.
async fn heals_a_flush_mid_apply(writer: Writer) {
    metrics();
    let mut world = World::new(2, &[]).await;
    let reference = take_dbs(&world.stack, 1)[0];
    let records = world.workload(2_000, 1_000);
    world.produce(&records).await;
    world.clean_build(reference, DEFAULT_MAPPINGS).await;
    let expected = state_across_servers(&world, reference);
    let end = offsets(&world, reference);

    // The live database on a server of the test's own (the shared one has 14 databases
    // for every test of this binary).
    let server = EphemeralRedis::start();
    world.stack.redis = server.url();
    let live = 0;

    let stop = CancellationToken::new();
    let path = world.write_config("mid", &world.yaml(live, &format!("r{}-mid", world.id)));
    let config = mapping::load_config(&path, &mapping::ConnectionOverrides::default())
        .unwrap_or_else(|e| panic!("config does not load:\n{e}"));
    // Small batches, so that the flush lands between them.
    let batch = BatchSettings::new(50, Duration::from_millis(5));
    let cfg = SinkConfig::new(config, &[], batch).with_writer(writer);
    let running = tokio::spawn({
        let stop = stop.clone();
        async move { sink::run::run(&cfg, StopWhen::Shutdown, stop).await }
    });
    let total = records.len() as i64;
    wait_until("the sink to apply a part", Duration::from_secs(60), || {
        applied_records(&world, live) > total / 4
    })
    .await;
    let before = resets_of(&world);
    flushdb(&world, live);
    assert!(
        applied_records(&world, live) < total,
        "applied everything before the flush"
    );
    // Batches after the flush may bring `sink:offsets` to the end before the sink notices;
    // the rewind drops those fields first, so the end after it is the replay's.
    wait_until(
        "the sink to notice the flush and replay",
        Duration::from_secs(90),
        || resets_of(&world) > before && offsets(&world, live) == end,
    )
    .await;
    // Every key equal, except the positions in the index bookkeeping: a change applied after
    // the flush found no stored row, so it recorded its own position as the value's claim
    // (or no release at all), and the replay of the older claim is skipped under the row's
    // newer position. The index keys themselves are equal (RELIABILITY.md, *Limits*).
    let mut actual = state_across_servers(&world, live);
    let mut expected = expected;
    let index_keys: Vec<String> = expected
        .keys()
        .filter(|k| k.starts_with("sink:index:"))
        .cloned()
        .collect();
    for key in index_keys {
        let (Some(Content::Hash(want)), Some(Content::Hash(got))) =
            (expected.remove(&key), actual.remove(&key))
        else {
            panic!("{key} missing or not a hash");
        };
        for (field, position) in &got {
            let at = |p: &String| p.parse::<i64>().expect("position");
            assert!(
                want.get(field).is_some_and(|w| at(w) <= at(position)),
                "{key} {field}: {position} after the replay, {:?} in the clean one",
                want.get(field)
            );
        }
    }
    assert_same(&actual, &expected, "healed");
    stop.cancel();
    running
        .await
        .expect("sink task")
        .unwrap_or_else(|e| panic!("sink run failed: {e:#}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_writer_heals_a_flush_mid_apply() {
    heals_a_flush_mid_apply(Writer::Shared).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exclusive_writer_heals_a_flush_mid_apply() {
    heals_a_flush_mid_apply(EXCLUSIVE).await;
}

/// A restart from a file older than what Redis acknowledged (the last `SAVE` before a crash,
/// or a failover to a replica that saw only that much): the markers survive, but under the
/// old `run_id`, so every partition is replayed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_writer_heals_a_restart_from_an_older_file() {
    metrics();
    let mut world = World::new(2, &[]).await;
    let shared_redis = world.stack.redis.clone();
    let reference = take_dbs(&world.stack, 1)[0];
    let records = world.workload(300, 1_000);
    let (early, late) = records.split_at(records.len() / 2);
    let total = records.len() as i64;

    let mut server = EphemeralRedis::start();
    world.stack.redis = server.url();
    let live = 0;
    let stop = CancellationToken::new();
    let cfg = config(&world, live, &format!("r{}-heal", world.id), Writer::Shared);
    let running = tokio::spawn({
        let stop = stop.clone();
        async move { sink::run::run(&cfg, StopWhen::Shutdown, stop).await }
    });
    world.produce(early).await;
    wait_until("the first half applied", Duration::from_secs(60), || {
        applied_records(&world, live) == early.len() as i64
    })
    .await;
    server.save();
    world.produce(late).await;
    wait_until("the second half applied", Duration::from_secs(60), || {
        applied_records(&world, live) == total
    })
    .await;

    let before = resets_of(&world);
    server.restart(Duration::from_secs(1));
    assert!(
        applied_records(&world, live) < total,
        "the file holds everything"
    );
    wait_until(
        "the sink to notice the restart and replay",
        Duration::from_secs(60),
        || resets_of(&world) > before && applied_records(&world, live) == total,
    )
    .await;
    assert!(
        !running.is_finished(),
        "the sink stopped instead of healing"
    );
    let healed = state_across_servers(&world, live);

    world.stack.redis = shared_redis;
    world.clean_build(reference, DEFAULT_MAPPINGS).await;
    assert_same(
        &healed,
        &state_across_servers(&world, reference),
        "healed from the older file",
    );
    stop.cancel();
    running
        .await
        .expect("sink task")
        .unwrap_or_else(|e| panic!("sink run failed: {e:#}"));
}
