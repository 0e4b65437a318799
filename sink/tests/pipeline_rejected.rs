//! Changes Redis rejects for good (a row key that holds another application's string): one
//! is dead-lettered with its bytes and the stream goes on; a run of them stops the sink.

mod pipeline_support;

use std::time::Duration;

use pipeline_support::{fixture, Scenario, Table};
use redis::Commands;
use serde_json::json;
use sink::config::BatchSettings;
use sink::pipeline::{ConsumeError, StopWhen};
use sink::run::RunError;
use testkit::loadgen::envelope;
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_change_is_dead_lettered_and_the_rest_applied() {
    let s = Scenario::new(1).await;
    let mut redis = s.stack.redis();
    // Another application's string where the customer hash would go: WRONGTYPE.
    let _: () = redis.set(s.key("customer:1"), "not a hash").unwrap();
    let snapshot = s.sample("avro-customers-op_r-snapshot.json");
    let insert = s.sample("avro-customers-op_c-insert.json");
    s.produce(&[snapshot.clone(), insert]).await;

    let summary = s.run_until_caught_up(BatchSettings::default()).await;
    assert_eq!(summary.dead_lettered, 1, "{summary:?}");
    assert_eq!(
        redis.get::<_, String>(s.key("customer:1")).unwrap(),
        "not a hash",
        "left alone"
    );
    assert!(
        redis.exists::<_, bool>(s.key("customer:4")).unwrap(),
        "the next change was applied"
    );

    let letters = pipeline_support::read_topic(&s.stack.bootstrap, &s.dlq, 1);
    let (key, value, headers) = &letters[0];
    assert_eq!(key.as_deref(), snapshot.key.as_deref());
    assert_eq!(value.as_deref(), snapshot.value.as_deref());
    assert_eq!(headers["dlq.offset"], "0");
    assert!(
        headers["dlq.error"].starts_with("redis rejected the change"),
        "{headers:?}"
    );
    s.cleanup();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_rejected_changes_in_a_row_stop_the_sink() {
    let s = Scenario::new(1).await;
    let mut redis = s.stack.redis();
    let template = fixture("avro-customers-op_c-insert.json")["value"].clone();
    let mut records = Vec::new();
    for id in 1..=30 {
        let _: () = redis
            .set(s.key(&format!("customer:{id}")), "not a hash")
            .unwrap();
        let row = json!({
            "id": id, "email": format!("c{id}@example.com"), "name": "x", "plan": "pro",
            "mrr_cents": 1, "created_at": 1, "updated_at": 1,
        });
        let value = envelope(
            &template,
            "c",
            None,
            Some(row),
            60_000_000 + id,
            1_795_480_000_000,
        );
        records.push(s.record(Table::Customers, &json!({"id": id}), Some(&value)));
    }
    s.produce(&records).await;

    let cfg = s.sink_config(BatchSettings::default());
    let run = sink::run::run(&cfg, StopWhen::CaughtUp, CancellationToken::new());
    let result = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("stops by itself");
    match result {
        Err(RunError::Consume(ConsumeError::Rejected { count, .. })) => assert!(count > 20),
        other => panic!("expected a stop after many rejections, got {other:?}"),
    }
    s.cleanup();
}
