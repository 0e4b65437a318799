//! A poison record too large for the dead-letter topic: a 2 MB undecodable record on a topic
//! that allows 3 MB, with a dead-letter topic limited to 1 MB. Whether the sink's own producer
//! refuses it (`message.max.bytes`, librdkafka's default 1,000,000) or the broker does (the
//! topic's `max.message.bytes`), it is dead-lettered headers only, the records after it are
//! applied, and a restart neither fails nor sends it again.

mod pipeline_support;

use std::time::Duration;

use pipeline_support::{read_topic, run_until_caught_up, Scenario, Table};
use rdkafka::admin::{AdminClient, AdminOptions, AlterConfig, ResourceSpecifier};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use redis::Commands;
use sink::config::BatchSettings;

/// The poison record's value size: larger than the dead-letter topic allows.
const POISON_BYTES: usize = 2 * 1024 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_refused_by_the_producer_goes_out_headers_only() {
    // librdkafka's default `message.max.bytes` (1,000,000) refuses the 2 MB dead letter.
    oversized_dead_letter(&[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_refused_by_the_broker_goes_out_headers_only() {
    // The producer lets 10 MB through; the topic's `max.message.bytes` (1 MiB) refuses it.
    oversized_dead_letter(&[("message.max.bytes", "10000000")]).await;
}

async fn oversized_dead_letter(properties: &[(&str, &str)]) {
    let s = Scenario::new(1).await;
    let topic = s.topic(Table::Customers).to_owned();
    set_topic_config(&s, &topic, "3145728").await;
    set_topic_config(&s, &s.dlq, "1048576").await;

    let before = s.sample("avro-customers-op_r-snapshot.json");
    let after = s.sample("avro-customers-op_c-insert.json");
    let poison_key = b"poison-key".to_vec();
    let poison_value = vec![0xa5u8; POISON_BYTES];
    s.produce(std::slice::from_ref(&before)).await;
    produce_large(&s, &topic, &poison_key, &poison_value).await;
    s.produce(std::slice::from_ref(&after)).await;

    let mut cfg = s.sink_config(BatchSettings::default());
    for (key, value) in properties {
        cfg.kafka_properties
            .insert((*key).to_owned(), (*value).to_owned());
    }
    let summary = run_until_caught_up(&cfg).await;
    assert_eq!(summary.records, 3, "{summary:?}");
    assert_eq!(summary.dead_lettered, 1, "{summary:?}");

    let mut redis = s.stack.redis();
    assert!(redis.exists::<_, bool>(s.key("customer:1")).unwrap());
    assert!(
        redis.exists::<_, bool>(s.key("customer:4")).unwrap(),
        "the record after the oversized one was applied"
    );

    let letters = read_topic(&s.stack.bootstrap, &s.dlq, 1);
    let (key, value, headers) = &letters[0];
    assert_eq!(key.as_deref(), Some(&poison_key[..]), "a small key is kept");
    assert_eq!(value.as_deref(), None, "no value: headers only");
    assert_eq!(headers["dlq.topic"], topic);
    assert_eq!(headers["dlq.partition"], "0");
    assert_eq!(headers["dlq.offset"], "1");
    assert_eq!(headers["dlq.truncated"], "true");
    assert_eq!(
        headers["dlq.original.size"],
        (poison_key.len() + POISON_BYTES).to_string()
    );
    assert!(
        headers["dlq.error"].starts_with("cannot decode"),
        "{headers:?}"
    );
    assert!(
        headers["dlq.truncated.error"].contains("too large"),
        "{headers:?}"
    );

    // A restart starts after the committed offsets: nothing fails, nothing is sent twice.
    let again = run_until_caught_up(&cfg).await;
    assert_eq!(again.records, 0, "{again:?}");
    assert_eq!(
        dead_letters(&s),
        1,
        "the oversized record is dead-lettered once"
    );

    s.cleanup();
}

/// Sets the topic's `max.message.bytes`.
async fn set_topic_config(s: &Scenario, topic: &str, max_message_bytes: &str) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &s.stack.bootstrap)
        .create()
        .expect("admin client");
    let change = AlterConfig::new(ResourceSpecifier::Topic(topic))
        .set("max.message.bytes", max_message_bytes);
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    for result in admin
        .alter_configs([&change], &options)
        .await
        .expect("alter configs")
    {
        result.unwrap_or_else(|e| panic!("max.message.bytes of {topic}: {e:?}"));
    }
}

/// Produces one record larger than librdkafka's default limit.
async fn produce_large(s: &Scenario, topic: &str, key: &[u8], value: &[u8]) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &s.stack.bootstrap)
        .set("message.max.bytes", "10000000")
        .create()
        .expect("producer");
    producer
        .send(
            FutureRecord::to(topic).key(key).payload(value),
            Duration::from_secs(30),
        )
        .await
        .unwrap_or_else(|(e, _)| panic!("produce the 2 MB record: {e}"));
}

/// Records in the dead-letter topic.
fn dead_letters(s: &Scenario) -> i64 {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &s.stack.bootstrap)
        .create()
        .expect("consumer");
    let (low, high) = consumer
        .fetch_watermarks(&s.dlq, 0, Duration::from_secs(10))
        .expect("watermarks");
    high - low
}
