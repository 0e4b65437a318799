//! `sink run --writer exclusive` through the broker: the exclusive sink applies the stream
//! exactly as the shared one does; while it holds the mappings a second exclusive sink
//! stands by without consuming; when the first stops, the standby takes the lease, loads
//! the bookkeeping and resumes from the committed offsets, ending in the source's state. A
//! shared sink never writes behind it and never stops for it: it stands by too, whether the
//! lease was held when it started or taken while it ran. Nor does an exclusive sink whose
//! lease another took: it stands by and takes the lease back once it is free.

mod pipeline_support;

use std::sync::Arc;
use std::time::Duration;

use pipeline_support::{applied, assert_state, generate, wait_until, Scenario, Table};
use redis::Commands;
use sink::config::{BatchSettings, SinkConfig, Writer};
use sink::pipeline::StopWhen;
use tokio_util::sync::CancellationToken;

const EXCLUSIVE: Writer = Writer::Exclusive {
    lease: Duration::from_secs(2),
    max_memory: sink::apply::DEFAULT_MAX_WRITER_MEMORY,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_takes_over_from_a_stopped_exclusive_sink() {
    let s = Scenario::new(2).await;
    let w = generate(4000);
    let records = s.encode(&w.events);
    let total = records.len() as i64;
    // The first half now; the second once the first sink has stopped.
    let (early, late) = records.split_at(records.len() / 2);
    s.produce(early).await;

    let first_stop = CancellationToken::new();
    let first = tokio::spawn({
        let cfg = s
            .sink_config(BatchSettings::default())
            .with_writer(EXCLUSIVE);
        let stop = first_stop.clone();
        async move { sink::run::run(&cfg, StopWhen::Shutdown, stop).await }
    });
    let mut redis = s.stack.redis();
    wait_until("the first half applied", Duration::from_secs(60), || {
        applied_records(&s, &mut redis) == early.len() as i64
    })
    .await;

    // A second exclusive sink in the same group waits for the lease, consuming nothing.
    // It runs until stopped: stopping when caught up could end it before the second half
    // is produced.
    let standby_stop = CancellationToken::new();
    let standby = tokio::spawn({
        let cfg = s
            .sink_config(BatchSettings::default())
            .with_writer(EXCLUSIVE);
        let stop = standby_stop.clone();
        async move { sink::run::run(&cfg, StopWhen::Shutdown, stop).await }
    });
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(!standby.is_finished(), "the standby did not wait");

    // The idle first sink kept its lease (renewed, 2 s lease) all along.
    first_stop.cancel();
    let stopped = first.await.unwrap().expect("first run");
    assert_eq!(stopped.records as usize, early.len(), "{stopped:?}");
    s.produce(late).await;
    wait_until(
        "the standby to take over and apply the second half",
        Duration::from_secs(90),
        || applied_records(&s, &mut redis) == total,
    )
    .await;
    standby_stop.cancel();
    let resumed = standby.await.unwrap().expect("standby run");
    assert_eq!(
        resumed.records as i64,
        total - stopped.records as i64,
        "resumed from the committed offsets, not from the start: {resumed:?} after {stopped:?}"
    );
    assert_state(&s, &w);
    let lease: Option<String> = redis::cmd("GET")
        .arg(format!("sink:writer:{}", s.mapping(Table::Customers)))
        .query(&mut redis)
        .expect("GET");
    assert_eq!(lease, None, "released at the end of the run");
    s.cleanup();
}

/// The shared sinks announced on the scenario's customers mapping.
fn shared_sinks(s: &Scenario) -> Vec<String> {
    let key = mapping::layout::shared_key(&s.mapping(Table::Customers));
    s.stack.redis().zrange(key, 0, -1).expect("ZRANGE")
}

/// A shared sink started while an exclusive sink holds its mappings stands by, announced,
/// instead of stopping (a supervisor would restart it into the same refusal), and applies
/// the stream once the exclusive sink stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_sink_stands_by_while_an_exclusive_sink_holds_its_mappings() {
    let s = Scenario::new(2).await;
    let w = generate(2000);
    let records = s.encode(&w.events);
    s.produce(&records).await;
    let mut redis = s.stack.redis();
    let exclusive_stop = CancellationToken::new();
    let exclusive = tokio::spawn({
        let cfg = s
            .sink_config(BatchSettings::default())
            .with_writer(EXCLUSIVE);
        let stop = exclusive_stop.clone();
        async move { sink::run::run(&cfg, StopWhen::Shutdown, stop).await }
    });
    wait_until(
        "the exclusive sink applied everything",
        Duration::from_secs(60),
        || applied_records(&s, &mut redis) == records.len() as i64,
    )
    .await;

    // Another group, from the beginning.
    let shared = tokio::spawn({
        let cfg = in_group(s.sink_config(BatchSettings::default()), "-shared")
            .with_writer(Writer::Shared);
        async move { sink::run::run(&cfg, StopWhen::CaughtUp, CancellationToken::new()).await }
    });
    wait_until("the shared sink announced", Duration::from_secs(30), || {
        !shared_sinks(&s).is_empty()
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(!shared.is_finished(), "the shared sink stopped");

    exclusive_stop.cancel();
    exclusive.await.unwrap().expect("exclusive run");
    let summary = tokio::time::timeout(Duration::from_secs(90), shared)
        .await
        .expect("the shared sink caught up once the lease was free")
        .unwrap()
        .expect("shared run");
    assert_eq!(summary.records as usize, records.len(), "{summary:?}");
    assert_state(&s, &w);
    s.cleanup();
}

/// Records applied over the scenario's two topics (their offsets recorded in Redis).
fn applied_records(s: &Scenario, redis: &mut redis::Connection) -> i64 {
    [Table::Customers, Table::Orders]
        .into_iter()
        .map(|t| applied(redis, s.topic(t)))
        .sum()
}

/// `cfg` in the consumer group named by its group id and `suffix`.
fn in_group(mut cfg: SinkConfig, suffix: &str) -> SinkConfig {
    let mut config = (*cfg.config).clone();
    config.kafka.group_id.push_str(suffix);
    cfg.config = Arc::new(config);
    cfg
}

/// A lease taken while a shared sink runs (a `--writer exclusive` sink of the same mappings
/// started by mistake, here the key written directly) makes the script refuse its next
/// batch: the shared sink stands by until the lease lapses and resumes from its committed
/// offsets, instead of stopping.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_sink_refused_by_a_lease_taken_meanwhile_stands_by_and_resumes() {
    let ran = outlive_a_foreign_lease(Writer::Shared).await;
    ran.stop().await;
}

/// An exclusive sink whose lease another sink took (as when it stalled past its lease time)
/// stands by for the lease instead of stopping (a supervisor would restart it into a
/// standby anyway), takes it again once it is free, and resumes from its committed offsets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exclusive_sink_whose_lease_was_taken_stands_by_and_takes_it_back() {
    let mut ran = outlive_a_foreign_lease(EXCLUSIVE).await;
    let holder: Option<String> = ran.redis.get(&ran.lease_key).expect("GET");
    assert!(
        holder.is_some_and(|h| h != FOREIGN_HOLDER),
        "took the lease back"
    );
    ran.stop().await;
}

/// Another sink's writer id, as a lease key holds it.
const FOREIGN_HOLDER: &str = "another-host:1:0";

/// A sink of [`outlive_a_foreign_lease`], still running, with every change applied.
struct Outlived {
    s: Scenario,
    redis: redis::Connection,
    lease_key: String,
    stop: CancellationToken,
    run: tokio::task::JoinHandle<Result<sink::pipeline::Summary, sink::run::RunError>>,
}

impl Outlived {
    /// Stops the sink, which must end cleanly, and cleans up.
    async fn stop(self) {
        self.stop.cancel();
        self.run.await.unwrap().expect("the sink stops cleanly");
        self.s.cleanup();
    }
}

/// Runs a `writer` sink over the first half of a workload, then writes the customers
/// mapping's lease as another sink's for 4 s and produces the second half: while that lease
/// holds, the sink writes nothing and does not stop; once it lapsed, the sink applies the
/// rest and Redis ends in the source's state.
async fn outlive_a_foreign_lease(writer: Writer) -> Outlived {
    let s = Scenario::new(2).await;
    let w = generate(2000);
    let records = s.encode(&w.events);
    let half = records.len() / 2;
    s.produce(&records[..half]).await;
    let mut redis = s.stack.redis();
    let stop = CancellationToken::new();
    let run = tokio::spawn({
        let cfg = s.sink_config(BatchSettings::default()).with_writer(writer);
        let stop = stop.clone();
        async move { sink::run::run(&cfg, StopWhen::Shutdown, stop).await }
    });
    wait_until("the first half applied", Duration::from_secs(60), || {
        applied_records(&s, &mut redis) == half as i64
    })
    .await;

    let lease_key = mapping::layout::writer_key(&s.mapping(Table::Customers));
    let _: () = redis
        .set_options(
            &lease_key,
            FOREIGN_HOLDER,
            redis::SetOptions::default().with_expiration(redis::SetExpiry::PX(4000)),
        )
        .expect("SET");
    s.produce(&records[half..]).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let holder: Option<String> = redis.get(&lease_key).expect("GET");
    assert_eq!(
        holder.as_deref(),
        Some(FOREIGN_HOLDER),
        "the foreign lease held"
    );
    assert_eq!(
        applied_records(&s, &mut redis),
        half as i64,
        "written behind another sink's lease"
    );
    assert!(!run.is_finished(), "the sink stopped");

    wait_until("the second half applied", Duration::from_secs(60), || {
        applied_records(&s, &mut redis) == records.len() as i64
    })
    .await;
    assert_state(&s, &w);
    Outlived {
        s,
        redis,
        lease_key,
        stop,
        run,
    }
}
