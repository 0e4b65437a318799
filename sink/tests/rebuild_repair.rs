//! `sink rebuild` (the built binary) against the real stack: it repairs a corrupted state key
//! for key, readers see one complete state or the other throughout, and a mapping change
//! yields exactly the new layout.

mod rebuild_support;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rebuild_support::*;
use redis::Commands;

/// Plants what a broken or outdated state holds: a missing row, missing index and relation
/// entries, a stray row with bookkeeping, a stale index entry, a key of an older mapping, a
/// stray search member and a lost aggregate.
fn corrupt(conn: &mut redis::Connection) {
    let _: () = conn
        .zadd(
            "sink:search:customers:name_prefix",
            "ghost\08000000000001869f\0customer:99999",
            0,
        )
        .unwrap();
    let _: () = conn.del("customer:1:order_stats").unwrap();
    let _: () = conn
        .del(&["customer:2", "order:3", "customer:email:c4@example.com"])
        .unwrap();
    let _: () = conn.zrem("customer:2:orders", "1").unwrap();
    let _: () = conn
        .hset_multiple(
            "customer:99999",
            &[("id", "99999"), ("email", "ghost@example.com")],
        )
        .unwrap();
    let _: () = conn
        .hset("sink:rows:customers", "customer:99999", "1")
        .unwrap();
    let _: () = conn
        .set("customer:email:ghost@example.com", "99999")
        .unwrap();
    let _: () = conn
        .hset("sink:index:customers:email", "ghost@example.com", "1")
        .unwrap();
    let _: () = conn.set("customer:email:old@example.com", "1").unwrap();
    let _: () = conn.zadd("customer:3:orders", "424242", 1.0).unwrap();
    let _: () = conn.hset("legacy:customer:1", "id", "1").unwrap();
    let _: () = conn
        .hset("customer:1", "email", "tampered@example.com")
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebuild_repairs_a_corrupted_state_key_for_key() {
    let world = World::new(3, &[]).await;
    let dbs = take_dbs(&world.stack, 3);
    let (live, staging, reference) = (dbs[0], dbs[1], dbs[2]);
    world.produce(&world.workload(300, 1_000)).await;

    world.clean_build(live, DEFAULT_MAPPINGS).await;
    let before = snapshot(&world.stack, live, false);
    corrupt(&mut world.stack.conn(live));
    assert_ne!(
        snapshot(&world.stack, live, false),
        before,
        "corruption changed nothing"
    );

    let config = world.write_config("live", &world.yaml(live, &format!("r{}-live", world.id)));
    let out = rebuild(
        &config,
        &["--staging-db", &staging.to_string()],
        Duration::from_secs(120),
    );
    let stdout = assert_ok(&out);
    assert!(
        stdout.contains(&format!("{}: 540 events", world.customers.topic)),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("{}: 780 events", world.orders.topic)),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("db {live} now serves the rebuilt state")),
        "{stdout}"
    );

    world.clean_build(reference, DEFAULT_MAPPINGS).await;
    let expected = snapshot(&world.stack, reference, false);
    assert_same(
        &snapshot(&world.stack, live, false),
        &expected,
        "rebuilt state vs clean build",
    );
    assert_eq!(
        before, expected,
        "the first build differs from the clean build"
    );

    let mut conn = world.stack.conn(live);
    let meta: std::collections::BTreeMap<String, String> = conn.hgetall("sink:rebuild").unwrap();
    for field in [
        "started_at_ms",
        "finished_at_ms",
        "config_fingerprint",
        "events",
    ] {
        assert!(
            meta.contains_key(field),
            "sink:rebuild lacks {field}: {meta:?}"
        );
    }
    assert_eq!(meta["events"], "1320");
    assert_eq!(meta[&format!("events:{}", world.customers.topic)], "540");
    assert!(
        !conn.exists::<_, bool>("sink:rebuild:lock").unwrap(),
        "lock left behind"
    );
    let mut old = world.stack.conn(staging);
    wait_until("the old state to be freed", Duration::from_secs(10), || {
        redis::cmd("DBSIZE").query::<i64>(&mut old).unwrap() == 0
    })
    .await;
}

/// The reader's view of row 1 (corrupted in the old state), its two possible index entries
/// and row 2, read atomically.
const READ: &str = r"
return { redis.call('HGET', 'customer:1', 'email') or false,
         redis.call('GET', 'customer:email:stale@example.com') or false,
         redis.call('GET', 'customer:email:changed1@example.com') or false,
         redis.call('EXISTS', 'customer:2'),
         redis.call('ZCARD', 'customer:3:orders') }";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_see_the_old_state_then_the_new_one_never_a_mix() {
    let world = World::new(2, &[]).await;
    let dbs = take_dbs(&world.stack, 3);
    let (live, staging) = (dbs[0], dbs[1]);
    world.produce(&world.workload(4_000, 1_000)).await;
    world.clean_build(live, DEFAULT_MAPPINGS).await;
    {
        // The old state: row 1 with another email, indexed consistently.
        let mut conn = world.stack.conn(live);
        let _: () = conn
            .hset("customer:1", "email", "stale@example.com")
            .unwrap();
        let _: () = conn.del("customer:email:changed1@example.com").unwrap();
        let _: () = conn.set("customer:email:stale@example.com", "1").unwrap();
    }

    let stop = Arc::new(AtomicBool::new(false));
    let (old_seen, new_seen) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let reader = {
        let (stop, old_seen, new_seen) = (stop.clone(), old_seen.clone(), new_seen.clone());
        let mut conn = world.stack.conn(live);
        std::thread::spawn(move || {
            let script = redis::Script::new(READ);
            while !stop.load(Ordering::Relaxed) {
                let (email, stale, real, row2, orders): (
                    Option<String>,
                    Option<String>,
                    Option<String>,
                    i64,
                    i64,
                ) = script.invoke(&mut conn).expect("reader script");
                assert_eq!(row2, 1, "row 2 (present before and after) was missing");
                assert!(
                    orders > 0,
                    "customer 3's orders (present before and after) were missing"
                );
                match email.as_deref() {
                    Some("stale@example.com") => {
                        assert_eq!(
                            (stale.as_deref(), real.as_deref()),
                            (Some("1"), None),
                            "old row with new index"
                        );
                        old_seen.fetch_add(1, Ordering::Relaxed);
                    }
                    Some("changed1@example.com") => {
                        assert_eq!(
                            (stale.as_deref(), real.as_deref()),
                            (None, Some("1")),
                            "new row with old index"
                        );
                        new_seen.fetch_add(1, Ordering::Relaxed);
                    }
                    other => panic!("row 1 missing or unexpected: {other:?}"),
                }
            }
        })
    };

    let config = world.write_config("live", &world.yaml(live, &format!("r{}-live", world.id)));
    let out = rebuild(
        &config,
        &["--staging-db", &staging.to_string(), "--batch-size", "200"],
        Duration::from_secs(120),
    );
    assert_ok(&out);
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    reader.join().expect("the reader saw an inconsistent state");
    let (old, new) = (
        old_seen.load(Ordering::Relaxed),
        new_seen.load(Ordering::Relaxed),
    );
    assert!(
        old > 10,
        "the reader saw the old state only {old} times during the rebuild"
    );
    assert!(new > 0, "the reader never saw the new state");
}

/// The edited mapping: the email index removed, a unique index on the name added; orders
/// get a second relation.
const NEW_MAPPINGS: &str = r#"mappings:
  - name: customers
    topic: "{customers}"
    key: "customer:{id}"
    fields: all
    indexes:
      - name: name
        key: "customer:name:{name}"
  - name: orders
    topic: "{orders}"
    key: "order:{id}"
    fields: all
    relations:
      - name: customer_orders
        key: "customer:{customer_id}:orders"
        order_by: created_at
      - name: status_orders
        key: "status:{status}:orders"
        order_by: total_cents
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebuild_after_a_mapping_change_yields_exactly_the_new_layout() {
    let world = World::new(1, &[]).await;
    let dbs = take_dbs(&world.stack, 3);
    let (live, staging, reference) = (dbs[0], dbs[1], dbs[2]);
    world.produce(&world.workload(100, 1_000)).await;
    world.clean_build(live, DEFAULT_MAPPINGS).await;
    let mut conn = world.stack.conn(live);
    assert!(!conn
        .keys::<_, Vec<String>>("customer:email:*")
        .unwrap()
        .is_empty());

    let yaml = world.yaml_with(live, &format!("r{}-live", world.id), NEW_MAPPINGS);
    let config = world.write_config("new", &yaml);
    assert_ok(&rebuild(
        &config,
        &["--staging-db", &staging.to_string()],
        Duration::from_secs(120),
    ));

    world.clean_build(reference, NEW_MAPPINGS).await;
    assert_same(
        &snapshot(&world.stack, live, false),
        &snapshot(&world.stack, reference, false),
        "new layout",
    );
    assert!(
        conn.keys::<_, Vec<String>>("customer:email:*")
            .unwrap()
            .is_empty(),
        "old index entries left"
    );
    assert!(
        !conn
            .exists::<_, bool>("sink:index:customers:email")
            .unwrap(),
        "old index bookkeeping left"
    );
    assert!(
        !conn
            .keys::<_, Vec<String>>("customer:name:*")
            .unwrap()
            .is_empty(),
        "new index missing"
    );
    assert!(
        !conn
            .keys::<_, Vec<String>>("status:*:orders")
            .unwrap()
            .is_empty(),
        "new relation missing"
    );
}
