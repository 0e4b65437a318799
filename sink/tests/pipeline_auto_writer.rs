//! `sink run --writer auto`, the default: the exclusive writer where nothing stands in its
//! way, the change script beside shared sinks, and the script instead of stopping when the
//! exclusive writer cannot go on (its memory bound, a key another program wrote with another
//! type). Each run ends with every change applied.

mod pipeline_support;

use std::time::Duration;

use pipeline_support::{assert_state, generate, Scenario, Table};
use redis::Commands;
use sink::apply::DEFAULT_LEASE_TTL;
use sink::config::{BatchSettings, SinkConfig, Writer};
use sink::pipeline::{StopWhen, Summary};
use sink::run::RunError;
use testkit::loadgen::{WireRecord, Workload};
use tokio_util::sync::CancellationToken;

/// Far less than the bookkeeping of the workload's rows and index keys.
const TINY: u64 = 64 * 1024;

fn auto(max_memory: u64) -> Writer {
    Writer::Auto {
        lease: DEFAULT_LEASE_TTL,
        max_memory,
    }
}

/// The scenario's mapping names.
fn mappings(s: &Scenario) -> [String; 2] {
    [s.mapping(Table::Customers), s.mapping(Table::Orders)]
}

/// Whether a stopped exclusive writer of the scenario's mappings left its bookkeeping: only
/// an exclusive writer does, when it stops cleanly.
fn exclusive_snapshot_left(s: &Scenario) -> bool {
    let [customers, orders] = mappings(s);
    let key = mapping::layout::snapshot_key([customers.as_str(), orders.as_str()]);
    s.stack.redis().exists(key).expect("EXISTS")
}

/// The sinks announced as shared writers of the scenario's customers mapping.
fn shared_sinks(s: &Scenario) -> Vec<String> {
    let key = mapping::layout::shared_key(&s.mapping(Table::Customers));
    s.stack.redis().zrange(key, 0, -1).expect("ZRANGE")
}

/// Records applied over the scenario's two topics (their offsets recorded in Redis).
fn applied(s: &Scenario, redis: &mut redis::Connection) -> i64 {
    [Table::Customers, Table::Orders]
        .into_iter()
        .map(|t| pipeline_support::applied(redis, s.topic(t)))
        .sum()
}

/// A scenario with a workload of `events` changes, its records, and how many of them (the
/// first half) are produced.
async fn half_produced(events: usize) -> (Scenario, Workload, Vec<WireRecord>, usize) {
    let s = Scenario::new(2).await;
    let w = generate(events);
    let records = s.encode(&w.events);
    let half = records.len() / 2;
    s.produce(&records[..half]).await;
    (s, w, records, half)
}

/// Produces the records after the first `half`, waits until every record is applied, and
/// checks the state against the workload `w`.
async fn apply_the_rest(s: &Scenario, w: &Workload, records: &[WireRecord], half: usize) {
    s.produce(&records[half..]).await;
    let mut redis = s.stack.redis();
    pipeline_support::wait_until("everything applied", Duration::from_secs(60), || {
        applied(s, &mut redis) >= records.len() as i64
    })
    .await;
    assert_state(s, w);
}

fn config(s: &Scenario, batch: BatchSettings, writer: Writer) -> SinkConfig {
    s.sink_config(batch).with_writer(writer)
}

/// `sink run` with `cfg` in a task, until `stop` is cancelled.
fn spawn_run(
    cfg: SinkConfig,
    stop: &CancellationToken,
) -> tokio::task::JoinHandle<Result<Summary, RunError>> {
    let stop = stop.clone();
    tokio::spawn(async move { sink::run::run(&cfg, StopWhen::Shutdown, stop).await })
}

/// Waits for a run spawned by [`spawn_run`] whose stop was cancelled; it must end without
/// an error.
async fn stops_cleanly(run: tokio::task::JoinHandle<Result<Summary, RunError>>, what: &str) {
    let stopped = run.await.expect("join");
    if let Err(e) = stopped {
        panic!("{what} stopped with an error: {:#}", anyhow::Error::new(e));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_is_the_exclusive_writer_when_nothing_stands_in_its_way() {
    let s = Scenario::new(2).await;
    let w = generate(1500);
    s.produce(&s.encode(&w.events)).await;

    let cfg = config(&s, BatchSettings::default(), auto(1 << 30));
    let summary = pipeline_support::run_until_caught_up(&cfg).await;
    assert!(summary.changes > 0, "{summary:?}");
    assert_state(&s, &w);
    assert!(exclusive_snapshot_left(&s), "not the exclusive writer");
    assert!(shared_sinks(&s).is_empty(), "{:?}", shared_sinks(&s));
    let lease: Option<String> = s
        .stack
        .redis()
        .get(mapping::layout::writer_key(&s.mapping(Table::Customers)))
        .expect("GET");
    assert_eq!(lease, None, "the lease is given up at the end");
    s.cleanup();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_writes_through_the_script_beside_a_shared_sink() {
    let (s, w, records, half) = half_produced(1500).await;

    // A shared sink applies the first half and stops; its announcement holds for one lease
    // time after its last renewal, as it would for a shared sink still running.
    let shared = config(&s, BatchSettings::default(), Writer::Shared);
    pipeline_support::run_until_caught_up(&shared).await;
    let announced = shared_sinks(&s);
    assert_eq!(announced.len(), 1, "{announced:?}");

    s.produce(&records[half..]).await;
    let cfg = config(&s, BatchSettings::default(), auto(1 << 30));
    let summary = pipeline_support::run_until_caught_up(&cfg).await;
    assert!(summary.changes > 0, "{summary:?}");
    assert_state(&s, &w);
    assert!(
        !exclusive_snapshot_left(&s),
        "took the lease beside a shared sink"
    );
    assert_eq!(
        shared_sinks(&s),
        announced,
        "announced itself, so that it would keep others on the script"
    );
    s.cleanup();
}

/// An `auto` sink beside a shared sink takes the exclusive lease once the shared sink's
/// announcement lapsed, without a restart, and goes on from where the script left off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_beside_a_shared_sink_becomes_the_exclusive_writer_once_it_is_gone() {
    outlive_a_shared_sink(1).await;
}

/// Two `auto` sinks of one group beside a shared sink: once it is gone, one takes the
/// lease and the other stands by (neither announces itself, so neither keeps the other on
/// the script), and neither stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_auto_sinks_beside_a_shared_sink_end_as_writer_and_standby() {
    outlive_a_shared_sink(2).await;
}

/// Announcements vanish without their sinks (Redis lost its data, or was away for longer
/// than the lease): an `auto` sink beside a shared sink still running keeps to the script
/// while the shared sink announces itself again, so the shared sink is never refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_beside_a_running_shared_sink_outwaits_its_vanished_announcement() {
    let (s, w, records, half) = half_produced(2000).await;
    let mut redis = s.stack.redis();
    let batch = BatchSettings::new(100, Duration::from_millis(5));
    let stop = CancellationToken::new();
    let shared_run = spawn_run(config(&s, batch, Writer::Shared), &stop);
    pipeline_support::wait_until("the shared sink announced", Duration::from_secs(30), || {
        !shared_sinks(&s).is_empty()
    })
    .await;
    // It checks the announcements every second.
    let writer = Writer::Auto {
        lease: Duration::from_secs(3),
        max_memory: 1 << 30,
    };
    let auto_run = spawn_run(config(&s, batch, writer), &stop);
    pipeline_support::wait_until("the first half applied", Duration::from_secs(60), || {
        applied(&s, &mut redis) >= half as i64
    })
    .await;

    let announcements = mappings(&s).map(|m| mapping::layout::shared_key(&m));
    let lease_key = mapping::layout::writer_key(&s.mapping(Table::Customers));
    for _ in 0..2 {
        let _: () = redis.del(&announcements).expect("DEL");
        pipeline_support::wait_until("announced again", DEFAULT_LEASE_TTL, || {
            !shared_sinks(&s).is_empty()
        })
        .await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let holder: Option<String> = redis.get(&lease_key).expect("GET");
        assert_eq!(holder, None, "took the lease beside a running shared sink");
    }
    assert!(!shared_run.is_finished(), "the shared sink stopped");

    apply_the_rest(&s, &w, &records, half).await;
    stop.cancel();
    stops_cleanly(shared_run, "the shared sink").await;
    stops_cleanly(auto_run, "the auto sink").await;
    s.cleanup();
}

/// Redis losing its data takes the shared sinks' announcements with it and starts every
/// sink's pipeline again, so the applier is chosen anew while no announcement is there. An
/// `auto` sink that wrote beside shared sinks keeps to the script then, instead of taking
/// the lease before they announce themselves again: it saw them less than six lease times
/// ago, and it waits that long once more. Here the test announces a shared sink itself, so
/// that nothing announces it again, and the loss is this scenario's part of Redis: its
/// partitions' markers and the announcement, deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_beside_shared_sinks_keeps_to_the_script_when_redis_loses_its_data() {
    let (s, w, records, half) = half_produced(1000).await;
    let mut redis = s.stack.redis();
    let announcement = mapping::layout::shared_key(&s.mapping(Table::Customers));
    let (seconds, micros): (u64, u64) = redis::cmd("TIME").query(&mut redis).expect("TIME");
    let until_ms = seconds * 1000 + micros / 1000 + 120_000;
    let _: () = redis
        .zadd(&announcement, "a-shared-sink", until_ms)
        .expect("ZADD");
    let lease_key = mapping::layout::writer_key(&s.mapping(Table::Customers));
    // Shared sinks count as gone after max(6 x 3 s, 10 s) = 18 s without an announcement.
    let writer = Writer::Auto {
        lease: Duration::from_secs(3),
        max_memory: 1 << 30,
    };
    let batch = BatchSettings::new(100, Duration::from_millis(5));
    let stop = CancellationToken::new();
    let auto_run = spawn_run(config(&s, batch, writer), &stop);
    pipeline_support::wait_until("the first half applied", Duration::from_secs(60), || {
        applied(&s, &mut redis) >= half as i64
    })
    .await;
    let holder: Option<String> = redis.get(&lease_key).expect("GET");
    assert_eq!(
        holder, None,
        "took the lease beside an announced shared sink"
    );

    let fields: Vec<String> = [Table::Customers, Table::Orders]
        .into_iter()
        .flat_map(|t| (0..2).map(move |p| (t, p)))
        .map(|(t, p)| mapping::layout::offsets_field(s.topic(t), p))
        .collect();
    let markers = |redis: &mut redis::Connection| -> Vec<Option<String>> {
        redis::cmd("HMGET")
            .arg(mapping::layout::OFFSETS_RUN_KEY)
            .arg(&fields)
            .query(redis)
            .expect("HMGET")
    };
    let _: () = redis.del(&announcement).expect("DEL");
    let _: () = redis
        .hdel(mapping::layout::OFFSETS_RUN_KEY, &fields)
        .expect("HDEL");
    let lost = std::time::Instant::now();
    pipeline_support::wait_until(
        "the pipeline started again, its partitions marked",
        Duration::from_secs(30),
        || markers(&mut redis).iter().all(Option::is_some),
    )
    .await;
    // The applier is chosen before the new pipeline's assignment marks the partitions.
    let holder: Option<String> = redis.get(&lease_key).expect("GET");
    assert_eq!(
        holder, None,
        "took the lease as the pipeline started again, {:.1} s after the loss, with the shared sink seen just before",
        lost.elapsed().as_secs_f64()
    );

    // No announcement comes back: once the wait is over, the sink takes the lease.
    pipeline_support::wait_until("the lease taken", Duration::from_secs(60), || {
        redis.exists(&lease_key).expect("EXISTS")
    })
    .await;
    assert!(
        lost.elapsed() >= Duration::from_secs(18),
        "took the lease {:.1} s after the loss, before the wait was over",
        lost.elapsed().as_secs_f64()
    );
    apply_the_rest(&s, &w, &records, half).await;
    stop.cancel();
    stops_cleanly(auto_run, "the auto sink").await;
    s.cleanup();
}

/// A shared sink that starts while an `auto` sink holds the lease (one that came back after
/// the `auto` sink outwaited its announcement, or a process of the group started with
/// `--writer shared`) stands by, announced, instead of being refused; the `auto` sink gives
/// the lease up within a third of its lease time and writes beside it through the script,
/// without announcing itself. Neither stops, and every change is applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_gives_the_lease_up_to_a_shared_sink_that_stands_by_for_it() {
    let (s, w, records, half) = half_produced(2000).await;
    let mut redis = s.stack.redis();
    let lease_key = mapping::layout::writer_key(&s.mapping(Table::Customers));
    let batch = BatchSettings::new(100, Duration::from_millis(5));
    // It checks the announcements every second.
    let writer = Writer::Auto {
        lease: Duration::from_secs(3),
        max_memory: 1 << 30,
    };
    let stop = CancellationToken::new();
    let auto_run = spawn_run(config(&s, batch, writer), &stop);
    pipeline_support::wait_until("the first half applied", Duration::from_secs(60), || {
        applied(&s, &mut redis) >= half as i64
    })
    .await;
    let holder: Option<String> = redis.get(&lease_key).expect("GET");
    assert!(holder.is_some(), "not the exclusive writer");

    // The same group: the sinks split the partitions once both consume.
    let shared_run = spawn_run(config(&s, batch, Writer::Shared), &stop);
    pipeline_support::wait_until("the lease given up", Duration::from_secs(30), || {
        !redis.exists::<_, bool>(&lease_key).expect("EXISTS")
    })
    .await;
    apply_the_rest(&s, &w, &records, half).await;
    assert!(!shared_run.is_finished(), "the shared sink stopped");
    assert!(!auto_run.is_finished(), "the auto sink stopped");
    assert_eq!(shared_sinks(&s).len(), 1, "{:?}", shared_sinks(&s));
    let holder: Option<String> = redis.get(&lease_key).expect("GET");
    assert_eq!(holder, None, "took the lease back beside the shared sink");

    stop.cancel();
    stops_cleanly(shared_run, "the shared sink").await;
    stops_cleanly(auto_run, "the auto sink").await;
    s.cleanup();
}

/// `sinks` `auto` sinks start beside a shared sink that applied the first third of a
/// workload and stopped; they apply the second third through the script, take the lease
/// once its announcement lapsed, and apply the rest as the exclusive writer.
async fn outlive_a_shared_sink(sinks: usize) {
    let s = Scenario::new(2).await;
    let w = generate(3000);
    let records = s.encode(&w.events);
    let (first, second) = (records.len() / 3, 2 * records.len() / 3);
    s.produce(&records[..first]).await;
    let mut redis = s.stack.redis();
    let lease_key = mapping::layout::writer_key(&s.mapping(Table::Customers));

    // A shared sink applies the first third and stops; its announcement holds for one
    // default lease time (10 s) after its last renewal.
    let shared = config(&s, BatchSettings::default(), Writer::Shared);
    pipeline_support::run_until_caught_up(&shared).await;
    let announced = shared_sinks(&s);
    assert_eq!(announced.len(), 1, "{announced:?}");

    // The auto sinks' lease time sets how often they check the announcements: every second.
    let batch = BatchSettings::new(100, Duration::from_millis(5));
    let writer = Writer::Auto {
        lease: Duration::from_secs(3),
        max_memory: 1 << 30,
    };
    let stop = CancellationToken::new();
    let runs: Vec<_> = (0..sinks)
        .map(|_| spawn_run(config(&s, batch, writer), &stop))
        .collect();
    s.produce(&records[first..second]).await;
    pipeline_support::wait_until("the second third applied", Duration::from_secs(60), || {
        applied(&s, &mut redis) >= second as i64
    })
    .await;
    let holder: Option<String> = redis.get(&lease_key).expect("GET");
    assert_eq!(holder, None, "took the lease beside a shared sink");
    assert_eq!(shared_sinks(&s), announced, "announced itself");

    // The shared sink's announcement lapses within 10 s; then none may hold for six of the
    // auto sinks' lease times (18 s).
    pipeline_support::wait_until("the exclusive lease taken", DEFAULT_LEASE_TTL * 6, || {
        redis.exists::<_, bool>(&lease_key).expect("EXISTS")
    })
    .await;
    s.produce(&records[second..]).await;
    pipeline_support::wait_until("everything applied", Duration::from_secs(60), || {
        applied(&s, &mut redis) >= records.len() as i64
    })
    .await;
    assert_state(&s, &w);
    assert!(
        runs.iter().all(|run| !run.is_finished()),
        "an auto sink stopped"
    );
    pipeline_support::wait_until(
        "the shared sink's announcement lapsed",
        DEFAULT_LEASE_TTL * 2,
        || shared_sinks(&s).is_empty(),
    )
    .await;

    stop.cancel();
    for run in runs {
        stops_cleanly(run, "an auto sink").await;
    }
    assert!(
        exclusive_snapshot_left(&s),
        "stopped as the exclusive writer"
    );
    s.cleanup();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_writes_through_the_script_above_its_memory_bound() {
    let s = Scenario::new(1).await;
    let w = generate(3000);
    s.produce(&s.encode(&w.events)).await;
    // Small batches, so the bound is crossed long before the end.
    let batch = BatchSettings::new(100, Duration::from_millis(5));

    // Starts exclusive on an empty database, outgrows the bound, goes on with the script.
    let cfg = config(&s, batch, auto(TINY));
    let summary = pipeline_support::run_until_caught_up(&cfg).await;
    assert!(summary.changes > 0, "{summary:?}");
    assert_state(&s, &w);
    assert!(!exclusive_snapshot_left(&s));
    assert_eq!(shared_sinks(&s).len(), 1, "{:?}", shared_sinks(&s));

    // Again on the same bound, once the announcements lapsed: the script from the start.
    let announcements = mappings(&s).map(|m| mapping::layout::shared_key(&m));
    let _: () = s.stack.redis().del(&announcements).expect("DEL");
    let more = generate(3100);
    s.produce(&s.encode(&more.events[w.events.len()..])).await;
    let summary = pipeline_support::run_until_caught_up(&cfg).await;
    assert!(summary.changes > 0, "{summary:?}");
    assert_state(&s, &more);
    assert!(!exclusive_snapshot_left(&s));
    assert_eq!(shared_sinks(&s).len(), 1, "{:?}", shared_sinks(&s));
    s.cleanup();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_writes_through_the_script_after_a_key_of_another_type() {
    let s = Scenario::new(1).await;
    let mut redis = s.stack.redis();
    let snapshot = s.sample("avro-customers-op_r-snapshot.json");
    let insert = s.sample("avro-customers-op_c-insert.json");
    let update = s.sample("avro-customers-op_u-email-change-replica-identity-full.json");
    // Another application's string where the customer hash would go: the exclusive batch's
    // `HSET` fails with WRONGTYPE (the rest of its transaction is applied).
    let _: () = redis.set(s.key("customer:1"), "not a hash").unwrap();
    s.produce(std::slice::from_ref(&snapshot)).await;
    s.produce(&[insert]).await;

    // One record per batch: the first fails as an exclusive transaction, the second is
    // applied through the script the sink falls back to, instead of stopping.
    let batch = BatchSettings::new(1, Duration::from_millis(5));
    let cfg = config(&s, batch, auto(1 << 30));
    let summary = pipeline_support::run_until_caught_up(&cfg).await;
    assert!(summary.changes >= 1, "{summary:?}");
    // The change the refused command was for is dead-lettered (the rest of its exclusive
    // transaction was applied), not lost.
    let letters = pipeline_support::read_topic(&s.stack.bootstrap, &s.dlq, 1);
    assert_eq!(letters[0].1.as_deref(), snapshot.value.as_deref());
    assert_eq!(
        redis.get::<_, String>(s.key("customer:1")).unwrap(),
        "not a hash",
        "left alone"
    );
    assert!(
        redis.exists::<_, bool>(s.key("customer:4")).unwrap(),
        "the next change was applied"
    );
    assert_eq!(shared_sinks(&s).len(), 1, "{:?}", shared_sinks(&s));

    // Still on the script (the announcement holds): a later change to that key is
    // dead-lettered, as the shared writer does, and the sink goes on.
    s.produce(std::slice::from_ref(&update)).await;
    let summary = pipeline_support::run_until_caught_up(&cfg).await;
    assert_eq!(summary.dead_lettered, 1, "{summary:?}");
    let letters = pipeline_support::read_topic(&s.stack.bootstrap, &s.dlq, 2);
    assert_eq!(letters[1].1.as_deref(), update.value.as_deref());
    s.cleanup();
}

/// A relation's parent key that another program wrote with another type: the exclusive
/// batch's `ZADD` fails, and the order whose new parent it is goes to the dead-letter
/// topic; the rest of the batch (the order's row) is applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_dead_letters_a_change_whose_relation_parent_is_of_another_type() {
    let s = Scenario::new(1).await;
    let mut redis = s.stack.redis();
    let customer = s.sample("avro-customers-op_r-snapshot.json");
    let order = s.sample("avro-orders-op_c-insert.json");
    // Order 5 belongs to customer 1.
    let _: () = redis
        .set(s.key("customer:1:orders"), "not a sorted set")
        .unwrap();
    s.produce(&[customer, order.clone()]).await;

    let batch = BatchSettings::new(1, Duration::from_millis(5));
    let cfg = config(&s, batch, auto(1 << 30));
    pipeline_support::run_until_caught_up(&cfg).await;
    let letters = pipeline_support::read_topic(&s.stack.bootstrap, &s.dlq, 1);
    assert_eq!(letters[0].1.as_deref(), order.value.as_deref());
    assert!(
        redis.exists::<_, bool>(s.key("order:5")).unwrap(),
        "the rest of the order's batch was applied"
    );
    assert!(redis.exists::<_, bool>(s.key("customer:1")).unwrap());
    assert_eq!(
        redis.get::<_, String>(s.key("customer:1:orders")).unwrap(),
        "not a sorted set",
        "left alone"
    );
    s.cleanup();
}

/// An `auto` sink on the script (its bookkeeping above the bound) that an explicit
/// exclusive sink shuts out stands by for the lease, stops announcing itself, and does not
/// stop; the exclusive sink applies everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_refused_by_an_exclusive_sink_stands_by_for_its_lease() {
    let (s, w, records, half) = half_produced(3000).await;
    let batch = BatchSettings::new(100, Duration::from_millis(5));
    let mut redis = s.stack.redis();

    let auto_stop = CancellationToken::new();
    // A bound of one byte: on the script after its first batch at most.
    let auto_run = spawn_run(config(&s, batch, auto(1)), &auto_stop);
    pipeline_support::wait_until("the first half applied", Duration::from_secs(60), || {
        applied(&s, &mut redis) >= half as i64
    })
    .await;
    assert_eq!(shared_sinks(&s).len(), 1, "on the script, announced");

    let exclusive_stop = CancellationToken::new();
    let exclusive = Writer::Exclusive {
        lease: DEFAULT_LEASE_TTL,
        max_memory: 1 << 30,
    };
    let exclusive_run = spawn_run(config(&s, batch, exclusive), &exclusive_stop);
    s.produce(&records[half..]).await;
    pipeline_support::wait_until("everything applied", Duration::from_secs(90), || {
        applied(&s, &mut redis) >= records.len() as i64
    })
    .await;
    // The auto sink stopped announcing itself: the key lapses one lease time after its last
    // renewal.
    pipeline_support::wait_until(
        "the auto sink's announcement lapsed",
        DEFAULT_LEASE_TTL * 3,
        || shared_sinks(&s).is_empty(),
    )
    .await;
    assert!(!auto_run.is_finished(), "the auto sink stopped");
    assert_state(&s, &w);

    exclusive_stop.cancel();
    stops_cleanly(exclusive_run, "the exclusive sink").await;
    auto_stop.cancel();
    stops_cleanly(auto_run, "the auto sink").await;
    s.cleanup();
}

/// A mapping with `ttl_seconds`: the change script from the start (the exclusive writer's
/// bookkeeping cannot follow rows expiring behind it), announced like any shared sink.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_writes_mappings_with_a_ttl_through_the_script() {
    let s = Scenario::new(2).await;
    let w = generate(600);
    s.produce(&s.encode(&w.events)).await;
    let yaml = s.yaml().replacen(
        "    fields: all\n",
        "    fields: all\n    ttl_seconds: 3600\n",
        1,
    );
    assert!(yaml.contains("ttl_seconds: 3600"), "{yaml}");
    let config =
        mapping::load_config_str(&yaml, "ttl.yaml", &mapping::ConnectionOverrides::default())
            .unwrap_or_else(|e| panic!("ttl config does not load:\n{e}"));
    let cfg = SinkConfig::new(config, &[], BatchSettings::default()).with_writer(auto(1 << 30));
    let summary = pipeline_support::run_until_caught_up(&cfg).await;
    assert!(summary.changes > 0, "{summary:?}");
    assert_state(&s, &w);
    assert!(!exclusive_snapshot_left(&s), "took the exclusive lease");
    assert_eq!(shared_sinks(&s).len(), 1, "{:?}", shared_sinks(&s));
    let ttl: i64 = s
        .stack
        .redis()
        .ttl(s.key(&format!(
            "customer:{}",
            w.customers.keys().next().expect("a customer")
        )))
        .expect("TTL");
    assert!((1..=3600).contains(&ttl), "the row expires: TTL {ttl}");
    s.cleanup();
}
