//! At least once: a sink stopped mid-way and started again (same group) ends in exactly the
//! state of the source; records applied twice change nothing.

mod pipeline_support;

use std::time::Duration;

use pipeline_support::{applied, assert_state, generate, wait_until_every, Scenario, Table};
use sink::config::BatchSettings;
use sink::pipeline::StopWhen;
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopped_mid_way_and_restarted_ends_in_the_same_state() {
    let s = Scenario::new(2).await;
    let w = generate(4000);
    let records = s.encode(&w.events);
    s.produce(&records).await;
    let total = records.len() as i64;

    // First run: one record per batch, stopped once a third is applied. A batch of one takes
    // a Redis round trip, so the 4,000 records take seconds; with batches of 50 the sink
    // applied all of them within one 100 ms poll (seen in CI) and was never stopped mid-way.
    let batch = BatchSettings::new(1, Duration::from_millis(1));
    let cfg = s.sink_config(batch);
    let shutdown = CancellationToken::new();
    let first = tokio::spawn({
        let shutdown = shutdown.clone();
        async move { sink::run::run(&cfg, StopWhen::Shutdown, shutdown).await }
    });
    let mut redis = s.stack.redis();
    let topics = [
        s.topic(Table::Customers).to_owned(),
        s.topic(Table::Orders).to_owned(),
    ];
    wait_until_every(
        "a third of the records applied",
        Duration::from_secs(60),
        Duration::from_millis(5),
        || topics.iter().map(|t| applied(&mut redis, t)).sum::<i64>() > total / 3,
    )
    .await;
    shutdown.cancel();
    let summary = first.await.unwrap().expect("first run");
    assert!(
        summary.records > 0 && (summary.records as i64) < total,
        "stopped mid-way: {summary:?}"
    );

    // Second run: same group, resumes from the committed offsets.
    let second = s.run_until_caught_up(BatchSettings::default()).await;
    assert!(
        second.records as i64 <= total - summary.records as i64 + 2000,
        "resumed, not restarted: {second:?}"
    );
    assert_state(&s, &w);
    s.cleanup();
}
