//! `sink run --writer exclusive` through the broker: the exclusive sink applies the stream
//! exactly as the shared one does; while it holds the mappings a shared sink is refused and
//! a second exclusive sink stands by without consuming; when the first stops, the standby
//! takes the lease, loads the bookkeeping and resumes from the committed offsets, ending in
//! the source's state.

mod pipeline_support;

use std::sync::Arc;
use std::time::Duration;

use pipeline_support::{applied, assert_state, generate, wait_until, Scenario, Table};
use sink::config::{BatchSettings, Writer};
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
    let topics = [
        s.topic(Table::Customers).to_owned(),
        s.topic(Table::Orders).to_owned(),
    ];
    let applied_now =
        |redis: &mut redis::Connection| topics.iter().map(|t| applied(redis, t)).sum::<i64>();
    wait_until("the first half applied", Duration::from_secs(60), || {
        applied_now(&mut redis) == early.len() as i64
    })
    .await;

    // A shared sink (another group, from the beginning) is refused at its first batch.
    let mut shared_cfg = s.sink_config(BatchSettings::default());
    let mut config = (*shared_cfg.config).clone();
    config.kafka.group_id.push_str("-shared");
    shared_cfg.config = Arc::new(config);
    let refused = tokio::time::timeout(
        Duration::from_secs(60),
        sink::run::run(&shared_cfg, StopWhen::CaughtUp, CancellationToken::new()),
    )
    .await
    .expect("the shared sink stops")
    .expect_err("the shared sink must not write behind the exclusive one");
    let message = format!("{:#}", anyhow::Error::new(refused));
    assert!(
        message.contains("an exclusive sink holds this mapping"),
        "{message}"
    );

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
        || applied_now(&mut redis) == total,
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
