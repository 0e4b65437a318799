//! The handover script (`rebuild/handover.lua`) against real Redis: it swaps only when the
//! rebuilt state has applied at least what the live sink has, in every partition of a mapped
//! topic, and only for the lock's holder; otherwise it changes nothing but the staging
//! offsets it is told the rebuild settled. The swapped-in state vouches for its offsets
//! (`sink:offsets:run`), so that sinks trust them instead of replaying.

mod rebuild_support;

use std::collections::BTreeMap;

use rebuild_support::{take_dbs, Stack};
use redis::Commands;
use sink::rebuild::target::{Handover, HandoverOutcome, Lagging, Target};

#[tokio::test]
async fn swaps_only_when_the_rebuilt_state_is_not_behind() {
    let stack = Stack::get().await;
    let dbs = take_dbs(&stack, 2);
    let (live, staging) = (dbs[0], dbs[1]);
    let target = Target::connect(&stack.url(live), Some(staging))
        .await
        .expect("connect");
    let mut l = stack.conn(live);
    let mut s = stack.conn(staging);
    let _: () = l.set("customer:1", "old").unwrap();
    let _: () = l
        .hset_multiple(
            "sink:offsets",
            &[("a/0", "10"), ("a/1", "5"), ("unmapped/0", "99")],
        )
        .unwrap();
    let _: () = s.set("customer:1", "new").unwrap();
    let _: () = s.hset("sink:offsets", "a/0", "10").unwrap();

    target.lock("me").await.expect("lock");
    let topics = vec!["a".to_owned()];
    let meta = vec![("events".to_owned(), "3".to_owned())];

    // a/1: the live sink applied offset 5, the rebuild only 3.
    let floors = vec![("a/1".to_owned(), 3)];
    let request = Handover {
        token: "me",
        topics: &topics,
        floors: &floors,
        meta: &meta,
        watermarks: &[],
        partitions: &[],
    };
    assert_eq!(
        target.handover(&request).await.unwrap(),
        HandoverOutcome::Lagging(vec![Lagging {
            field: "a/1".into(),
            live: 5,
            staging: 3
        }])
    );
    assert_eq!(
        l.get::<_, String>("customer:1").unwrap(),
        "old",
        "swapped while behind"
    );
    assert_eq!(
        s.hget::<_, _, String>("sink:offsets", "a/1").unwrap(),
        "3",
        "floor not recorded"
    );

    // Someone else's token: nothing happens.
    let floors = vec![("a/1".to_owned(), 5)];
    let intruder = Handover {
        token: "other",
        topics: &topics,
        floors: &floors,
        meta: &meta,
        watermarks: &[],
        partitions: &[],
    };
    assert_eq!(
        target.handover(&intruder).await.unwrap(),
        HandoverOutcome::LockLost("me".into())
    );
    assert_eq!(l.get::<_, String>("customer:1").unwrap(), "old");

    // Caught up (the unmapped topic's offsets do not count): swapped, metadata written,
    // lock gone, the old state in the staging db, every replayed partition marked whole
    // under the server's run (a stale marker of the staging db dropped).
    let _: () = s.hset("sink:offsets:run", "gone/0", "old-run").unwrap();
    let info: String = redis::cmd("INFO").arg("server").query(&mut l).unwrap();
    let run_id = info
        .lines()
        .find_map(|line| line.strip_prefix("run_id:"))
        .expect("run_id")
        .trim()
        .to_owned();
    // A live sink's assignment holds a/1 under this run: its marker (and fencing token)
    // carries over, so that the live sink's batches still land; a/0's names an older run.
    let live_mark = format!("{run_id}:feedfacefeedface");
    let _: () = l.hset("sink:offsets:run", "a/1", &live_mark).unwrap();
    let _: () = l.hset("sink:offsets:run", "a/0", "old-run:0123").unwrap();
    let replayed = ["a/0".to_owned(), "a/1".to_owned()];
    let request = Handover {
        token: "me",
        topics: &topics,
        floors: &floors,
        meta: &meta,
        watermarks: &[],
        partitions: &replayed,
    };
    assert_eq!(
        target.handover(&request).await.unwrap(),
        HandoverOutcome::Swapped
    );
    assert_eq!(l.get::<_, String>("customer:1").unwrap(), "new");
    assert_eq!(s.get::<_, String>("customer:1").unwrap(), "old");
    let info: BTreeMap<String, String> = l.hgetall("sink:rebuild").unwrap();
    assert_eq!(info.get("events").map(String::as_str), Some("3"));
    assert!(!l.exists::<_, bool>("sink:rebuild:lock").unwrap());
    let offsets: BTreeMap<String, String> = l.hgetall("sink:offsets").unwrap();
    assert_eq!(
        offsets,
        BTreeMap::from([("a/0".into(), "10".into()), ("a/1".into(), "5".into())])
    );
    let marks: BTreeMap<String, String> = l.hgetall("sink:offsets:run").unwrap();
    assert_eq!(
        marks,
        BTreeMap::from([("a/0".into(), run_id), ("a/1".into(), live_mark)])
    );
}

#[tokio::test]
async fn the_lock_admits_one_rebuild_at_a_time() {
    let stack = Stack::get().await;
    let dbs = take_dbs(&stack, 2);
    let target = Target::connect(&stack.url(dbs[0]), Some(dbs[1]))
        .await
        .expect("connect");
    target.lock("first").await.expect("lock");
    let err = target.lock("second").await.expect_err("second lock");
    assert!(err.to_string().contains("another rebuild of db"), "{err}");
    assert!(target.refresh_lock("first").await.unwrap());
    assert!(!target.refresh_lock("second").await.unwrap());
    target.unlock("second").await.unwrap();
    assert!(
        target.lock("third").await.is_err(),
        "unlock by a non-holder released the lock"
    );
    target.unlock("first").await.unwrap();
    target.lock("third").await.expect("lock after release");
    target.unlock("third").await.unwrap();
}
