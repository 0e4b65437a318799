//! The recorded Debezium samples (snapshot, insert, both update kinds, both delete kinds,
//! tombstones), re-encoded through schemas registered in the real registry, produced to the
//! real broker in the captured order and applied by the real sink to the real Redis, by
//! either writer (`sink run --writer shared|exclusive`).

mod pipeline_support;

use std::collections::BTreeMap;

use pipeline_support::{expected_row, fixture, hash, run_until_caught_up, Scenario, Table};
use redis::Commands;
use sink::config::{BatchSettings, Writer};

const CUSTOMER_SAMPLES: [&str; 6] = [
    "avro-customers-op_r-snapshot.json",
    "avro-customers-op_c-insert.json",
    "avro-customers-op_u-email-change-replica-identity-default.json",
    "avro-customers-op_u-email-change-replica-identity-full.json",
    "avro-customers-op_d-replica-identity-full.json",
    "avro-customers-tombstone-after-delete.json",
];

const ORDER_SAMPLES: [&str; 5] = [
    "avro-orders-op_r-snapshot.json",
    "avro-orders-op_c-insert.json",
    "avro-orders-op_u-replica-identity-default.json",
    "avro-orders-op_d-replica-identity-default.json",
    "avro-orders-tombstone-after-delete.json",
];

const TIMESTAMPS: [&str; 2] = ["created_at", "updated_at"];

fn after(sample: &str) -> serde_json::Value {
    fixture(sample)["value"]["after"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recorded_samples_end_in_the_expected_redis_state() {
    recorded_samples(Writer::Shared).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recorded_samples_end_in_the_expected_redis_state_with_the_exclusive_writer() {
    recorded_samples(Writer::Exclusive {
        lease: std::time::Duration::from_secs(10),
        max_memory: sink::apply::DEFAULT_MAX_WRITER_MEMORY,
    })
    .await;
}

async fn recorded_samples(writer: Writer) {
    let s = Scenario::new(1).await;
    let records: Vec<_> = CUSTOMER_SAMPLES
        .iter()
        .chain(ORDER_SAMPLES.iter())
        .map(|name| s.sample(name))
        .collect();
    s.produce(&records).await;

    let cfg = s.sink_config(BatchSettings::default()).with_writer(writer);
    let summary = run_until_caught_up(&cfg).await;
    assert_eq!(summary.records, 11, "{summary:?}");
    assert_eq!(summary.dead_lettered, 0, "{summary:?}");

    let mut redis = s.stack.redis();
    // Customer 1: snapshot, email changed, changed back with a new name (full before image).
    let jane = expected_row(&after(CUSTOMER_SAMPLES[3]), &TIMESTAMPS);
    assert_eq!(jane["name"], "Jane Q. Doe");
    assert_eq!(hash(&mut redis, &s.key("customer:1")), jane);
    assert_eq!(
        redis
            .get::<_, Option<String>>(s.key("customer:email:jane@example.com"))
            .unwrap(),
        Some("1".into())
    );
    assert!(!redis
        .exists::<_, bool>(s.key("customer:email:jane.doe@example.com"))
        .unwrap());
    // Customer 4: inserted, deleted (full before image), tombstone.
    assert!(!redis.exists::<_, bool>(s.key("customer:4")).unwrap());
    assert!(!redis
        .exists::<_, bool>(s.key("customer:email:carol@example.com"))
        .unwrap());

    // Orders 1 (snapshot), 5 (insert), 3 (update); 2 deleted before we ever saw it.
    for (id, sample) in [
        (1, ORDER_SAMPLES[0]),
        (5, ORDER_SAMPLES[1]),
        (3, ORDER_SAMPLES[2]),
    ] {
        assert_eq!(
            hash(&mut redis, &s.key(&format!("order:{id}"))),
            expected_row(&after(sample), &TIMESTAMPS),
            "order {id}"
        );
    }
    assert!(!redis.exists::<_, bool>(s.key("order:2")).unwrap());
    let members: Vec<(String, f64)> = redis
        .zrange_withscores(s.key("customer:1:orders"), 0, -1)
        .unwrap();
    let mut expected: Vec<(String, f64)> = [
        (1, ORDER_SAMPLES[0]),
        (5, ORDER_SAMPLES[1]),
        (3, ORDER_SAMPLES[2]),
    ]
    .iter()
    .map(|(id, sample)| {
        (
            id.to_string(),
            after(sample)["created_at"].as_f64().unwrap(),
        )
    })
    .collect();
    expected.sort_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)));
    assert_eq!(members, expected);

    // Bookkeeping: offsets, column types, freshness.
    let offsets: BTreeMap<String, String> = redis.hgetall("sink:offsets").unwrap();
    assert_eq!(
        offsets
            .get(&format!("{}/0", s.topic(Table::Customers)))
            .map(String::as_str),
        Some("5")
    );
    assert_eq!(
        offsets
            .get(&format!("{}/0", s.topic(Table::Orders)))
            .map(String::as_str),
        Some("4")
    );
    let types = hash(
        &mut redis,
        &format!("sink:types:{}", s.mapping(Table::Customers)),
    );
    assert_eq!(types.get("email").map(String::as_str), Some("string"));
    assert_eq!(
        types.get("created_at").map(String::as_str),
        Some("timestamp")
    );
    assert_eq!(types.get("mrr_cents").map(String::as_str), Some("int"));
    let freshness = hash(
        &mut redis,
        &format!("sink:freshness:{}", s.mapping(Table::Customers)),
    );
    assert!(freshness.contains_key("caught_up_at_ms"), "{freshness:?}");
    assert!(freshness.contains_key("source_ts_ms"), "{freshness:?}");

    // Replaying the whole topic (a new group) changes nothing.
    let before_replay = (
        hash(&mut redis, &s.key("customer:1")),
        hash(&mut redis, &s.key("order:3")),
    );
    let mut again = cfg.clone();
    std::sync::Arc::make_mut(&mut again.config)
        .kafka
        .group_id
        .push_str("-replay");
    let replayed = run_until_caught_up(&again).await;
    assert_eq!(replayed.records, 11, "{replayed:?}");
    assert_eq!(
        (
            hash(&mut redis, &s.key("customer:1")),
            hash(&mut redis, &s.key("order:3"))
        ),
        before_replay
    );
    assert!(!redis.exists::<_, bool>(s.key("customer:4")).unwrap());

    s.cleanup();
}
