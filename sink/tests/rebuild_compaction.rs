//! A row deleted in the source whose records compaction removed from the log: replaying the
//! log over the old keys would keep it forever; `sink rebuild` (the built binary) drops it.
//!
//! The topics are compacted within seconds (`segment.ms=100`, `min.cleanable.dirty.ratio=0.01`,
//! `delete.retention.ms=0`, `min.compaction.lag.ms=0`); how soon the broker's cleaner runs
//! depends on its `log.cleaner.backoff.ms` (15 s by default; the test waits up to 120 s).

mod rebuild_support;

use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Message, Offset, TopicPartitionList};
use rebuild_support::*;
use redis::Commands;

/// How many records of `topic` (one partition) have the key `key`, reading it all.
fn records_with_key(bootstrap: &str, topic: &str, key: &[u8]) -> (usize, usize) {
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", format!("count-{}", rand_id()))
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let (_, high) = consumer
        .fetch_watermarks(topic, 0, Duration::from_secs(10))
        .expect("watermarks");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Beginning)
        .unwrap();
    consumer.assign(&tpl).expect("assign");
    let (mut matching, mut total) = (0, 0);
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(30) {
        match consumer.poll(Duration::from_millis(500)) {
            Some(Ok(m)) => {
                total += 1;
                if m.key() == Some(key) {
                    matching += 1;
                }
                if m.offset() >= high - 1 {
                    return (matching, total);
                }
            }
            Some(Err(e)) => panic!("reading {topic}: {e}"),
            None => {}
        }
    }
    panic!("could not read {topic} to its end (offset {high})");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebuild_drops_a_row_whose_delete_compaction_removed() {
    let world = World::new(1, &FAST_COMPACTION).await;
    let dbs = take_dbs(&world.stack, 3);
    let (live, staging, reference) = (dbs[0], dbs[1], dbs[2]);

    // The state as it was before the delete (what a replay over old keys keeps).
    world
        .produce(&[
            world.customer("r", 7, "c7@example.com", 100),
            world.customer("r", 8, "c8@example.com", 110),
        ])
        .await;
    world
        .produce(&[world.order("r", 70, 7, 120), world.order("r", 80, 8, 130)])
        .await;
    world.clean_build(live, DEFAULT_MAPPINGS).await;
    let mut conn = world.stack.conn(live);
    assert!(conn.exists::<_, bool>("customer:7").unwrap());

    // The delete, its tombstone, then more records so that segments roll and get cleaned.
    world
        .produce(&[world.customer_delete(7, 200), world.tombstone(false, 7)])
        .await;
    world
        .produce(&[world.order_delete(70, 210), world.tombstone(true, 70)])
        .await;
    let key7 = world.tombstone(false, 7).key.unwrap();
    let key70 = world.tombstone(true, 70).key.unwrap();
    let start = Instant::now();
    let mut lsn = 1_000;
    loop {
        lsn += 10;
        world
            .produce(&[world.customer("u", 8, &format!("f{lsn}@example.com"), lsn)])
            .await;
        world.produce(&[world.order("u", 80, 8, lsn + 1)]).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let (left7, total) =
            records_with_key(&world.stack.bootstrap, &world.customers.topic, &key7);
        let (left70, _) = records_with_key(&world.stack.bootstrap, &world.orders.topic, &key70);
        if left7 == 0 && left70 == 0 {
            eprintln!(
                "compacted after {:?}: {total} customer records left",
                start.elapsed()
            );
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "the broker did not compact away customer 7 ({left7} records left) / order 70 ({left70}) within 120 s; \
             is log.cleaner.backoff.ms small and the cleaner enabled?"
        );
    }

    let config = world.write_config("live", &world.yaml(live, &format!("r{}-live", world.id)));
    assert_ok(&rebuild(
        &config,
        &["--staging-db", &staging.to_string()],
        Duration::from_secs(120),
    ));

    assert!(
        !conn.exists::<_, bool>("customer:7").unwrap(),
        "deleted row survived the rebuild"
    );
    assert!(
        !conn
            .exists::<_, bool>("customer:email:c7@example.com")
            .unwrap(),
        "its index entry survived"
    );
    assert!(
        !conn.exists::<_, bool>("order:70").unwrap(),
        "deleted order survived"
    );
    assert!(
        !conn.exists::<_, bool>("customer:7:orders").unwrap(),
        "relation of the deleted rows survived"
    );
    assert!(!conn
        .hexists::<_, _, bool>("sink:rows:customers", "customer:7")
        .unwrap());
    let email: String = conn.hget("customer:8", "email").unwrap();
    assert_eq!(email, format!("f{lsn}@example.com"));

    // The cleaner may go on compacting (older records of customer 8 / order 80) between the
    // rebuild and this reference build, so the two replays can count different numbers of
    // applied records: compare everything but `applied_count`.
    world.clean_build(reference, DEFAULT_MAPPINGS).await;
    assert_same(
        &snapshot(&world.stack, live, true),
        &snapshot(&world.stack, reference, true),
        "vs clean build",
    );
}
