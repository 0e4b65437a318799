//! Adaptive batching at light load: with a linger time far longer than the test, a change that
//! arrives while the apply stage has nothing in flight is applied at once, not after linger,
//! and so is the next one after Redis is idle again.

mod pipeline_support;

use std::time::Duration;

use pipeline_support::{applied, assert_state, generate, wait_until_every, Scenario, Table};
use sink::config::BatchSettings;
use sink::pipeline::StopWhen;
use tokio_util::sync::CancellationToken;

/// Longer than the whole test may take: a batch that waited for it would fail the test.
const LINGER: Duration = Duration::from_secs(600);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_change_is_applied_without_waiting_for_linger() {
    let s = Scenario::new(1).await;
    let w = generate(3);
    let records = s.encode(&w.events);
    let cfg = s.sink_config(BatchSettings::new(100_000, LINGER));
    let shutdown = CancellationToken::new();
    let run = tokio::spawn({
        let shutdown = shutdown.clone();
        async move { sink::run::run(&cfg, StopWhen::Shutdown, shutdown).await }
    });
    let mut redis = s.stack.redis();
    let topics = [
        s.topic(Table::Customers).to_owned(),
        s.topic(Table::Orders).to_owned(),
    ];
    // One record at a time, each produced once the one before is applied: each finds the
    // apply stage idle.
    for (i, record) in records.iter().enumerate() {
        s.produce(std::slice::from_ref(record)).await;
        wait_until_every(
            &format!("record {} of {} applied", i + 1, records.len()),
            Duration::from_secs(60),
            Duration::from_millis(5),
            || topics.iter().map(|t| applied(&mut redis, t)).sum::<i64>() > i as i64,
        )
        .await;
    }
    shutdown.cancel();
    let summary = run.await.unwrap().expect("sink run");
    assert_eq!(summary.records, records.len() as u64, "{summary:?}");
    assert_state(&s, &w);
    s.cleanup();
}
