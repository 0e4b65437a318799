//! A topic with 4 partitions keyed by primary key: rows spread over partitions that are
//! consumed in parallel, unique emails moving between customers on different partitions,
//! and a value schema v2 (nullable `phone` added) arriving mid-stream.

mod pipeline_support;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use pipeline_support::{
    customers_value_v2, fixture, hash, rfc3339_micros, wait_until, Scenario, Table,
};
use redis::Commands;
use serde_json::{json, Value as Json};
use sink::config::BatchSettings;
use testkit::loadgen::{self, envelope, WireEncoder, WireRecord};

const BASE_MICROS: i64 = 1_795_480_593_142_906;

fn customer(id: i64, email: &str, name: &str, phone: Option<&str>) -> Json {
    let mut row = json!({
        "id": id, "email": email, "name": name, "plan": "pro", "mrr_cents": 100 * id,
        "created_at": BASE_MICROS + id, "updated_at": BASE_MICROS + id,
    });
    if let Some(phone) = phone {
        row["phone"] = json!(phone);
    }
    row
}

fn expected(row: &Json) -> BTreeMap<String, String> {
    pipeline_support::expected_row(row, &["created_at", "updated_at"])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emails_move_between_customers_on_different_partitions() {
    let s = Scenario::new(4).await;
    let template = fixture("avro-customers-op_c-insert.json")["value"].clone();
    let mut lsn = 30_000_000;
    let mut records = Vec::new();
    let event = |s: &Scenario, op: &str, row: &Json, lsn: &mut i64| {
        *lsn += 8;
        let value = envelope(
            &template,
            op,
            None,
            Some(row.clone()),
            *lsn,
            1_795_480_000_000 + *lsn,
        );
        s.record(Table::Customers, &json!({"id": row["id"]}), Some(&value))
    };
    // 40 customers, each with its own email.
    let mut rows: BTreeMap<i64, Json> = BTreeMap::new();
    for id in 1..=40 {
        let row = customer(
            id,
            &format!("c{id}@example.com"),
            &format!("Customer {id}"),
            None,
        );
        records.push(event(&s, "c", &row, &mut lsn));
        rows.insert(id, row);
    }
    // Rotate the emails twice: customer 1 parks on a temporary email, then customer k takes
    // the email customer k-1 just released (usually on another partition), and customer 1
    // takes the one customer 40 had.
    for round in 0..2 {
        let old: BTreeMap<i64, String> = rows
            .iter()
            .map(|(id, r)| (*id, r["email"].as_str().unwrap().to_owned()))
            .collect();
        let mut update = |id: i64,
                          email: &str,
                          records: &mut Vec<WireRecord>,
                          rows: &mut BTreeMap<i64, Json>| {
            let row = customer(id, email, &format!("Customer {id} r{round}"), None);
            records.push(event(&s, "u", &row, &mut lsn));
            rows.insert(id, row);
        };
        update(
            1,
            &format!("parked-r{round}@example.com"),
            &mut records,
            &mut rows,
        );
        for id in 2..=40 {
            update(id, &old[&(id - 1)], &mut records, &mut rows);
        }
        update(1, &old[&40], &mut records, &mut rows);
    }
    s.produce(&records).await;

    // Small batches: many pipelines, partitions interleaved.
    let summary = s
        .run_until_caught_up(BatchSettings::new(7, std::time::Duration::from_millis(2)))
        .await;
    assert_eq!(summary.records, records.len() as u64, "{summary:?}");

    let mut redis = s.stack.redis();
    let offsets: BTreeMap<String, String> = redis.hgetall("sink:offsets").unwrap();
    let used = (0..4)
        .filter(|p| offsets.contains_key(&format!("{}/{p}", s.topic(Table::Customers))))
        .count();
    assert!(
        used >= 2,
        "records should spread over partitions: {offsets:?}"
    );
    for (id, row) in &rows {
        assert_eq!(
            hash(&mut redis, &s.key(&format!("customer:{id}"))),
            expected(row),
            "customer {id}"
        );
        let email = row["email"].as_str().unwrap();
        assert_eq!(
            redis
                .get::<_, Option<String>>(s.key(&format!("customer:email:{email}")))
                .unwrap(),
            Some(id.to_string()),
            "owner of {email}"
        );
    }
    let index: Vec<String> = redis.keys(s.key("customer:email:*")).unwrap();
    assert_eq!(
        index.len(),
        rows.len(),
        "only current emails are indexed: {index:?}"
    );

    s.cleanup();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_value_schema_mid_stream_adds_the_column() {
    let s = Scenario::new(1).await;
    let topic = s.topic(Table::Customers).to_owned();
    let v2_text = customers_value_v2();
    let v2_id = loadgen::register(&s.stack.registry, &format!("{topic}-value"), &v2_text)
        .await
        .expect("register v2");
    let v2 = WireEncoder::new(v2_id, &v2_text).expect("v2 schema");
    assert_ne!(v2_id, s.codecs[&Table::Customers].value.id());

    let template = fixture("avro-customers-op_c-insert.json")["value"].clone();
    let v1_row = customer(7, "seven@example.com", "Seven", None);
    let v1 = envelope(
        &template,
        "c",
        None,
        Some(v1_row),
        40_000_000,
        1_795_480_000_000,
    );
    let v2_row = customer(7, "seven@example.com", "Seven", Some("+1 555 0100"));
    let v2_value = envelope(
        &template,
        "u",
        None,
        Some(v2_row.clone()),
        40_000_100,
        1_795_480_000_100,
    );
    let key = s.codecs[&Table::Customers]
        .key
        .encode(&json!({"id": 7}))
        .unwrap();
    let records = vec![
        s.record(Table::Customers, &json!({"id": 7}), Some(&v1)),
        WireRecord {
            topic: topic.clone(),
            key: Some(key),
            value: Some(v2.encode(&v2_value).unwrap()),
            headers: vec![],
        },
    ];
    s.produce(&records).await;
    s.run_until_caught_up(BatchSettings::default()).await;

    let mut redis = s.stack.redis();
    let stored = hash(&mut redis, &s.key("customer:7"));
    assert_eq!(
        stored.get("phone").map(String::as_str),
        Some("+1 555 0100"),
        "{stored:?}"
    );
    assert_eq!(stored, expected(&v2_row));
    assert_eq!(stored["created_at"], rfc3339_micros(BASE_MICROS + 7));
    let types = hash(
        &mut redis,
        &format!("sink:types:{}", s.mapping(Table::Customers)),
    );
    assert_eq!(
        types.get("phone").map(String::as_str),
        Some("string"),
        "{types:?}"
    );

    s.cleanup();
}

/// The column types a sink recorded can go with a loss that an assignment, not the running
/// check, is first to learn of (an empty restart just before a rebalance: the self-heal
/// rewinds the partitions and the pipeline goes on, replaying). So a rebalance makes the
/// sink record the types again with its next records. Here the key is deleted, and a
/// consumer of another topic joins the sink's group: with the default (eager) protocol
/// every member's partitions are assigned again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_column_types_are_recorded_again_after_a_rebalance() {
    use rdkafka::consumer::{BaseConsumer, Consumer};

    let s = Scenario::new(2).await;
    let template = fixture("avro-customers-op_c-insert.json")["value"].clone();
    let insert = |id: i64| {
        let row = customer(id, &format!("c{id}@example.com"), "C", None);
        let value = envelope(
            &template,
            "c",
            None,
            Some(row),
            40_000_000 + id,
            1_795_480_000_000,
        );
        s.record(Table::Customers, &json!({"id": id}), Some(&value))
    };
    let types_key = format!("sink:types:{}", s.mapping(Table::Customers));
    let mut redis = s.stack.redis();

    s.produce(&[insert(1)]).await;
    let stop = tokio_util::sync::CancellationToken::new();
    let cfg = s.sink_config(BatchSettings::default());
    let running = tokio::spawn({
        let stop = stop.clone();
        async move { sink::run::run(&cfg, sink::pipeline::StopWhen::Shutdown, stop).await }
    });
    wait_until("the first record", Duration::from_secs(60), || {
        redis.exists(s.key("customer:1")).unwrap_or(false)
    })
    .await;
    let recorded = hash(&mut redis, &types_key);
    assert_eq!(
        recorded.get("email").map(String::as_str),
        Some("string"),
        "{recorded:?}"
    );

    let _: () = redis.del(&types_key).expect("DEL");
    let markers = |redis: &mut redis::Connection| hash(redis, "sink:offsets:run");
    let placed = markers(&mut redis);
    let joined = Arc::new(AtomicBool::new(false));
    let member = std::thread::spawn({
        let (bootstrap, group, topic, joined) = (
            s.stack.bootstrap.clone(),
            s.group.clone(),
            s.dlq.clone(),
            Arc::clone(&joined),
        );
        move || {
            let consumer: BaseConsumer = rdkafka::ClientConfig::new()
                .set("bootstrap.servers", &bootstrap)
                .set("group.id", &group)
                .set("enable.auto.commit", "false")
                .create()
                .expect("consumer");
            consumer.subscribe(&[&topic]).expect("subscribe");
            while !joined.load(Ordering::Acquire) {
                let _ = consumer.poll(Duration::from_millis(100));
            }
        }
    });
    wait_until(
        "the sink's partitions to be assigned again",
        Duration::from_secs(60),
        || {
            let now = markers(&mut redis);
            (0..2).all(|p| {
                let field = mapping::layout::offsets_field(s.topic(Table::Customers), p);
                now.get(&field)
                    .is_some_and(|m| placed.get(&field) != Some(m))
            })
        },
    )
    .await;

    s.produce(&[insert(2)]).await;
    wait_until(
        "the record after the rebalance",
        Duration::from_secs(60),
        || redis.exists(s.key("customer:2")).unwrap_or(false),
    )
    .await;
    assert_eq!(
        hash(&mut redis, &types_key),
        recorded,
        "{types_key} recorded again after the rebalance"
    );

    joined.store(true, Ordering::Release);
    member.join().expect("group member");
    stop.cancel();
    running
        .await
        .expect("sink task")
        .unwrap_or_else(|e| panic!("sink failed: {e:#}"));
    s.cleanup();
}
