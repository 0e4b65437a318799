//! The shared writer's marker guard (ARCHITECTURE.md, *Self-healing*): a guarded writer
//! applies a partition's changes only while its `sink:offsets:run` marker names the Redis
//! server's current run. A marker gone (a flush, an empty restart) or naming another run (a
//! restart from an older file) makes it refuse the whole chunk, writing nothing, with a
//! error that is about no change (never dead-lettered) and not retriable. Both writers.

use crate::support::*;
use mapping::{layout, Op};
use redis::AsyncCommands;
use sink::apply::{Applier, ApplyError};

/// The offsets fields of `f`'s partitions (both topics, partition 0).
fn fields(f: &Fixture) -> Vec<String> {
    f.topics
        .iter()
        .map(|t| layout::offsets_field(t, 0))
        .collect()
}

/// Sets `f`'s markers to `run` (what an assignment does), or deletes them (`None`: what a
/// flush or an empty restart leaves).
async fn mark(f: &Fixture, run: Option<&str>) {
    let mut conn = f.conn().await;
    for field in fields(f) {
        let _: () = match run {
            Some(run) => conn.hset(layout::OFFSETS_RUN_KEY, &field, run).await,
            None => conn.hdel(layout::OFFSETS_RUN_KEY, &field).await,
        }
        .expect("marker write");
    }
}

/// The server's `run_id`.
async fn run_id(f: &Fixture) -> String {
    let info: String = redis::cmd("INFO")
        .arg("server")
        .query_async(&mut f.conn().await)
        .await
        .expect("INFO server");
    info.lines()
        .find_map(|l| l.strip_prefix("run_id:"))
        .expect("run_id line")
        .trim()
        .to_owned()
}

/// Asserts that `guarded` refuses `changes` as bookkeeping lost, leaving `f`'s keys as they
/// were.
async fn assert_refused(f: &Fixture, guarded: &Applier, changes: &[(usize, mapping::Change)]) {
    let before = f.dump().await;
    let error = guarded
        .apply_batch(&f.plan_all(changes))
        .await
        .expect_err("a guarded writer must refuse a partition without its marker");
    assert!(
        matches!(error, ApplyError::BookkeepingLost { .. }),
        "{error:?}"
    );
    assert!(
        !error.is_retriable(),
        "never resent: the pipeline drops it and restarts"
    );
    assert_eq!(
        error.location(),
        None,
        "no change is at fault: never dead-lettered"
    );
    assert_eq!(f.dump().await, before, "the refused batch wrote nothing");
}

#[tokio::test]
async fn guarded_shared_writer_refuses_partitions_whose_marker_is_gone_or_stale() {
    let f = Fixture::new().await;
    let guarded = Applier::new(f.pool.clone(), &f.config).with_marker_guard();
    refuses_partitions_whose_marker_is_gone_or_stale(&f, &guarded).await;
}

#[tokio::test]
async fn guarded_exclusive_writer_refuses_partitions_whose_marker_is_gone_or_stale() {
    let f = Fixture::new().await;
    let guarded = f
        .exclusive_applier(std::time::Duration::from_secs(5))
        .await
        .with_marker_guard();
    refuses_partitions_whose_marker_is_gone_or_stale(&f, &guarded).await;
    guarded.release().await.expect("release the lease");
}

async fn refuses_partitions_whose_marker_is_gone_or_stale(f: &Fixture, guarded: &Applier) {
    let run = run_id(f).await;
    let first = [
        customer_upsert(Op::Read, 1, "a@example.com", 100),
        order_upsert(Op::Read, 3, Some(1), 102),
    ];
    // Never marked (no assignment vouched for this database).
    assert_refused(f, guarded, &first).await;

    mark(f, Some(&run)).await;
    let out = guarded
        .apply_batch(&f.plan_all(&first))
        .await
        .expect("apply");
    assert_eq!(out.applied, 2);

    // Redis flushed under the running sink: the markers went with the data.
    let later = [
        customer_upsert(Op::Update, 1, "b@example.com", 300),
        order_upsert(Op::Update, 3, Some(1), 302),
    ];
    mark(f, None).await;
    assert_refused(f, guarded, &later).await;

    // Restarted from an older file: the markers name the previous run.
    mark(f, Some("0000000000000000000000000000000000000000")).await;
    assert_refused(f, guarded, &later).await;

    // Only one partition of the chunk unmarked: the whole chunk is refused.
    mark(f, Some(&run)).await;
    let _: () = f
        .conn()
        .await
        .hdel(layout::OFFSETS_RUN_KEY, &fields(f)[1])
        .await
        .expect("HDEL");
    assert_refused(f, guarded, &later).await;

    mark(f, None).await;
    let mut conn = f.conn().await;
    let _: () = conn
        .hdel(layout::OFFSETS_RUN_KEY, fields(f))
        .await
        .expect("HDEL");
}
