//! At least once: a sink stopped mid-way and started again (same group) ends in exactly the
//! state of the source; records applied twice change nothing.

mod pipeline_support;

use std::collections::BTreeMap;
use std::time::Duration;

use pipeline_support::{expected_row, fixture, hash, wait_until, Scenario, Table};
use redis::Commands;
use sink::config::BatchSettings;
use sink::consume::StopWhen;
use sink::loadgen::{workload, Workload};
use tokio_util::sync::CancellationToken;

/// Sum of the applied offsets (+1 each) recorded in `sink:offsets` for `topic`.
pub fn applied(redis: &mut redis::Connection, topic: &str) -> i64 {
    let offsets: BTreeMap<String, String> = redis.hgetall("sink:offsets").unwrap_or_default();
    offsets
        .iter()
        .filter(|(k, _)| k.rsplit_once('/').is_some_and(|(t, _)| t == topic))
        .map(|(_, v)| v.parse::<i64>().unwrap_or(-1) + 1)
        .sum()
}

/// Asserts that Redis holds exactly the rows of `w`.
pub fn assert_state(s: &Scenario, w: &Workload) {
    let mut redis = s.stack.redis();
    let ts = ["created_at", "updated_at"];
    let customers: Vec<String> = redis.keys(s.key("customer:*")).unwrap();
    let rows: Vec<&String> = customers.iter().filter(|k| k.matches(':').count() == 2 && !k.ends_with(":orders")).collect();
    assert_eq!(rows.len(), w.customers.len(), "customer rows");
    for (id, row) in &w.customers {
        assert_eq!(hash(&mut redis, &s.key(&format!("customer:{id}"))), expected_row(row, &ts), "customer {id}");
        let email = row["email"].as_str().unwrap();
        assert_eq!(redis.get::<_, Option<String>>(s.key(&format!("customer:email:{email}"))).unwrap(), Some(id.to_string()));
    }
    let emails: Vec<String> = redis.keys(s.key("customer:email:*")).unwrap();
    assert_eq!(emails.len(), w.customers.len(), "email index entries");
    let orders: Vec<String> = redis.keys(s.key("order:*")).unwrap();
    assert_eq!(orders.len(), w.orders.len(), "order rows");
    for (id, row) in &w.orders {
        assert_eq!(hash(&mut redis, &s.key(&format!("order:{id}"))), expected_row(row, &ts), "order {id}");
    }
    let mut children: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (id, row) in &w.orders {
        children.entry(format!("customer:{}:orders", row["customer_id"])).or_default().push(id.to_string());
    }
    let sets: Vec<String> = redis.keys(s.key("customer:*:orders")).unwrap();
    assert_eq!(sets.len(), children.len(), "relation sets");
    for (key, mut members) in children {
        let mut stored: Vec<String> = redis.zrange(s.key(&key), 0, -1).unwrap();
        stored.sort();
        members.sort();
        assert_eq!(stored, members, "{key}");
    }
}

pub fn generate(n: usize) -> Workload {
    let customer = fixture("avro-customers-op_c-insert.json")["value"].clone();
    let order = fixture("avro-orders-op_c-insert.json")["value"].clone();
    workload(n, 42, &customer, &order, 1_795_480_000_000)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopped_mid_way_and_restarted_ends_in_the_same_state() {
    let s = Scenario::new(2).await;
    let w = generate(4000);
    let records = s.encode(&w.events);
    s.produce(&records).await;
    let total = records.len() as i64;

    // First run: small batches, stopped once about a third is applied.
    let batch = BatchSettings { max_records: 50, linger: Duration::from_millis(1) };
    let cfg = s.sink_config(batch);
    let shutdown = CancellationToken::new();
    let first = tokio::spawn({
        let shutdown = shutdown.clone();
        async move { sink::run::run(&cfg, StopWhen::Shutdown, shutdown).await }
    });
    let mut redis = s.stack.redis();
    let topics = [s.topic(Table::Customers).to_owned(), s.topic(Table::Orders).to_owned()];
    wait_until("a third of the records applied", Duration::from_secs(60), || {
        topics.iter().map(|t| applied(&mut redis, t)).sum::<i64>() > total / 3
    })
    .await;
    shutdown.cancel();
    let summary = first.await.unwrap().expect("first run");
    assert!(summary.records > 0 && (summary.records as i64) < total, "stopped mid-way: {summary:?}");

    // Second run: same group, resumes from the committed offsets.
    let second = s.run_until_caught_up(BatchSettings::default()).await;
    assert!(second.records as i64 <= total - summary.records as i64 + 2000, "resumed, not restarted: {second:?}");
    assert_state(&s, &w);
    s.cleanup();
}
