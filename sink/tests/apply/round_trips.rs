//! Redis round trips of the writers at light load: a batch right after another one reuses
//! that batch's connection as it is, without the pool's check of a connection it hands out
//! again (`UNWATCH` + `PING`, one more round trip per batch, which at light load is per
//! change); a kept connection that Redis closed is replaced, as the pool's check would. The
//! exclusive writer's batch after a batch is one round trip: the watch of its lease keys
//! and their reads went with the batch before, after its `EXEC`.

use crate::support::*;
use mapping::Op;

/// `PING`s Redis has run so far (`INFO commandstats`), on a connection of its own.
async fn pings(url: &str) -> u64 {
    calls(url, "ping").await
}

/// Calls of `command` Redis has run so far (`INFO commandstats`), on a connection of its own.
async fn calls(url: &str, command: &str) -> u64 {
    info(url, "commandstats")
        .await
        .lines()
        .find_map(|line| line.strip_prefix(&format!("cmdstat_{command}:calls=")))
        .and_then(|rest| rest.split(',').next())
        .map_or(0, |calls| calls.parse().expect("calls"))
}

/// Requests Redis has read from clients so far (`total_reads_processed` of `INFO stats`),
/// asked on a connection of its own.
async fn reads(url: &str) -> u64 {
    info(url, "stats")
        .await
        .lines()
        .find_map(|line| line.strip_prefix("total_reads_processed:"))
        .map_or(0, |reads| reads.trim().parse().expect("reads"))
}

/// `INFO section`, on a connection of its own.
async fn info(url: &str, section: &str) -> String {
    let client = redis::Client::open(url).expect("redis url");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("redis connection");
    redis::cmd("INFO")
        .arg(section)
        .query_async(&mut conn)
        .await
        .expect("INFO")
}

/// Which of the customer rows `ids` exist.
async fn rows(f: &Fixture, ids: std::ops::RangeInclusive<i64>) -> Vec<i64> {
    let mut conn = f.pool.get().await.expect("redis connection");
    let mut found = Vec::new();
    for id in ids {
        let exists: bool = redis::cmd("EXISTS")
            .arg(format!("{}:customer:{id}", f.tag))
            .query_async(&mut conn)
            .await
            .expect("EXISTS");
        if exists {
            found.push(id);
        }
    }
    found
}

fn customer(id: i64) -> (usize, mapping::Change) {
    customer_upsert(Op::Create, id, &format!("c{id}@example.com"), 100 + id)
}

#[tokio::test]
async fn a_batch_after_a_batch_costs_no_connection_check() {
    let server = PrivateRedis::start();
    let pool = sink::connection::redis_pool(server.url.as_str()).expect("pool");
    let f = Fixture::build_like(&Fixture::new().await, pool).await;
    f.apply(&[customer(1)]).await;
    let before = pings(&server.url).await;
    // One change at a time, each after the one before was applied: light load.
    for id in 2..=20 {
        f.apply(&[customer(id)]).await;
    }
    assert_eq!(
        pings(&server.url).await - before,
        0,
        "19 batches in a row checked their connection"
    );
    assert_eq!(rows(&f, 1..=20).await, (1..=20).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_kept_connection_that_redis_closed_is_replaced() {
    let server = PrivateRedis::start();
    let pool = sink::connection::redis_pool(server.url.as_str()).expect("pool");
    let f = Fixture::build_like(&Fixture::new().await, pool).await;
    f.apply(&[customer(1)]).await;
    // Redis closes every client connection, the kept one too (a restart, an idle timeout).
    let client = redis::Client::open(server.url.as_str()).expect("redis url");
    let mut admin = client
        .get_multiplexed_async_connection()
        .await
        .expect("redis connection");
    let killed: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("normal")
        .arg("SKIPME")
        .arg("yes")
        .query_async(&mut admin)
        .await
        .expect("CLIENT KILL");
    assert!(killed >= 1, "the writer's connection was open");
    // The next batch may meet the closed connection: a retriable error, as for any lost
    // connection, and the apply stage sends it again; that attempt takes a fresh one.
    let batch = f.plan_all(&[customer(2)]);
    if let Err(e) = f.applier.apply_batch(&batch).await {
        assert!(e.is_retriable(), "{e}");
        f.applier
            .apply_batch(&batch)
            .await
            .unwrap_or_else(|e| panic!("sent again: {e}"));
    }
    f.apply(&[customer(3)]).await;
    assert_eq!(rows(&f, 1..=3).await, vec![1, 2, 3]);
}

#[tokio::test]
async fn an_exclusive_batch_after_a_batch_is_one_round_trip() {
    let server = PrivateRedis::start();
    let pool = sink::connection::redis_pool(server.url.as_str()).expect("pool");
    // A lease long enough that no idle renewal runs meanwhile.
    let f = Fixture::exclusive_on(pool, std::time::Duration::from_secs(60)).await;
    f.apply(&[customer(1)]).await;
    let commands = ["ping", "unwatch", "watch", "mget", "exec"];
    let mut before = Vec::new();
    for c in commands {
        before.push(calls(&server.url, c).await);
    }
    // What asking costs: the reads of one connection asking once.
    let asked = reads(&server.url).await;
    let reads_before = reads(&server.url).await;
    let asking = reads_before - asked;
    for id in 2..=20 {
        f.apply(&[customer(id)]).await;
    }
    let requests = reads(&server.url).await - reads_before - asking;
    // One request each (a request read in two parts now and then is tolerated); the
    // watch and reads sent on their own before each transaction made it two.
    assert!(
        (19..19 + 5).contains(&requests),
        "19 batches in a row made {requests} requests (asking for the count costs {asking})"
    );
    let mut made = Vec::new();
    for (c, was) in commands.iter().zip(before) {
        made.push((*c, calls(&server.url, c).await - was));
    }
    assert_eq!(
        made,
        [
            ("ping", 0),
            ("unwatch", 0),
            ("watch", 19),
            ("mget", 19),
            ("exec", 19)
        ],
        "19 batches in a row"
    );
    assert_eq!(rows(&f, 1..=20).await, (1..=20).collect::<Vec<_>>());
}
