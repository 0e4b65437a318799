//! Poison records (garbage bytes, an unknown schema id, a record the mapping cannot key) go to
//! the dead-letter topic byte for byte with their origin in headers, and the records after
//! them are still applied.

mod pipeline_support;

use pipeline_support::{read_topic, Scenario, Table};
use redis::Commands;
use sink::config::BatchSettings;
use testkit::loadgen::WireRecord;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_records_are_dead_lettered_and_the_rest_applied() {
    let s = Scenario::new(1).await;
    let topic = s.topic(Table::Customers).to_owned();
    let snapshot = s.sample("avro-customers-op_r-snapshot.json");
    let garbage = WireRecord {
        topic: topic.clone(),
        key: Some(b"not avro".to_vec()),
        value: Some(b"\x00garbage bytes".to_vec()),
        headers: vec![("origin".into(), "test".into())],
    };
    // Valid frame, schema id that no registry has.
    let unknown_id = WireRecord {
        topic: topic.clone(),
        key: snapshot.key.clone(),
        value: Some([&[0u8, 0x7f, 0xff, 0xff, 0xf0][..], b"body"].concat()),
        headers: vec![],
    };
    let insert = s.sample("avro-customers-op_c-insert.json");
    s.produce(&[snapshot, garbage.clone(), unknown_id.clone(), insert])
        .await;

    let summary = s.run_until_caught_up(BatchSettings::default()).await;
    assert_eq!(summary.records, 4, "{summary:?}");
    assert_eq!(summary.dead_lettered, 2, "{summary:?}");

    let mut redis = s.stack.redis();
    assert!(redis.exists::<_, bool>(s.key("customer:1")).unwrap());
    assert!(
        redis.exists::<_, bool>(s.key("customer:4")).unwrap(),
        "the record after the poison ones was applied"
    );

    let letters = read_topic(&s.stack.bootstrap, &s.dlq, 2);
    let (key, value, headers) = &letters[0];
    assert_eq!(key.as_deref(), garbage.key.as_deref());
    assert_eq!(value.as_deref(), garbage.value.as_deref());
    assert_eq!(headers["dlq.topic"], topic);
    assert_eq!(headers["dlq.partition"], "0");
    assert_eq!(headers["dlq.offset"], "1");
    assert!(
        headers["dlq.error"].starts_with("cannot decode"),
        "{headers:?}"
    );
    assert_eq!(headers["origin"], "test", "original headers are kept");
    let (_, value, headers) = &letters[1];
    assert_eq!(value.as_deref(), unknown_id.value.as_deref());
    assert_eq!(headers["dlq.offset"], "2");
    assert!(headers["dlq.error"].contains("not found"), "{headers:?}");

    s.cleanup();
}

/// A poison record the dead-letter topic cannot take (a source record near the broker's limit
/// plus the `dlq.*` headers) used to stop the sink for good: after every restart it failed at
/// the same record. It is now dead-lettered without its value, with the value's size.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_too_large_for_its_topic_goes_without_its_value() {
    use rdkafka::admin::{AdminClient, AdminOptions, AlterConfig, ResourceSpecifier};
    use rdkafka::client::DefaultClientContext;

    let s = Scenario::new(1).await;
    let admin: AdminClient<DefaultClientContext> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &s.stack.bootstrap)
        .create()
        .expect("admin client");
    let limit =
        AlterConfig::new(ResourceSpecifier::Topic(&s.dlq)).set("max.message.bytes", "10000");
    for result in admin
        .alter_configs([&limit], &AdminOptions::new())
        .await
        .expect("alter the dead-letter topic")
    {
        result.expect("max.message.bytes of the dead-letter topic");
    }
    let topic = s.topic(Table::Customers).to_owned();
    let large = WireRecord {
        topic: topic.clone(),
        key: Some(b"large".to_vec()),
        value: Some([&b"\x07"[..], &[b'x'; 49_999][..]].concat()),
        headers: vec![],
    };
    let insert = s.sample("avro-customers-op_c-insert.json");
    s.produce(&[large, insert]).await;

    let summary = s.run_until_caught_up(BatchSettings::default()).await;
    assert_eq!(summary.dead_lettered, 1, "{summary:?}");
    let mut redis = s.stack.redis();
    assert!(
        redis.exists::<_, bool>(s.key("customer:4")).unwrap(),
        "the record after the large one was applied"
    );
    let letters = read_topic(&s.stack.bootstrap, &s.dlq, 1);
    let (key, value, headers) = &letters[0];
    assert_eq!(key.as_deref(), Some(&b"large"[..]));
    assert_eq!(value, &None, "the value is left out");
    assert_eq!(headers[sink::dlq::VALUE_OMITTED_HEADER], "50000");
    assert_eq!(headers["dlq.topic"], topic);
    assert_eq!(headers["dlq.offset"], "0");
    s.cleanup();
}
