//! The writers' marker guard (ARCHITECTURE.md, *Self-healing*): a guarded writer applies a
//! partition's changes only while its `sink:offsets:run` marker names the Redis server's
//! current run *and* the assignment the batch was read under (`{run_id}:{token}`, its fence).
//! A marker gone (a flush, an empty restart) or naming another run (a restart from an older
//! file) makes it refuse the whole chunk as bookkeeping lost; a marker of the current run
//! written by another assignment (a rebalance since the batch was read) as superseded. Either
//! way nothing is written, and the error is about no change (never dead-lettered) and not
//! retriable. Both writers.

use crate::support::*;
use mapping::{layout, Op};
use redis::AsyncCommands;
use sink::apply::{marker, Applier, ApplyError, Fences};

/// The offsets fields of `f`'s partitions (both topics, partition 0).
fn fields(f: &Fixture) -> Vec<String> {
    f.topics
        .iter()
        .map(|t| layout::offsets_field(t, 0))
        .collect()
}

/// Both of `f`'s partitions read under the assignment that marked them `marker`.
fn read_under(f: &Fixture, marker: &str) -> Fences {
    f.topics
        .iter()
        .fold(Fences::none(), |fences, t| fences.with(t, 0, marker))
}

/// Sets `f`'s markers to `marker` (what an assignment does), or deletes them (`None`: what
/// a flush or an empty restart leaves).
async fn mark(f: &Fixture, marker: Option<&str>) {
    let mut conn = f.conn().await;
    for field in fields(f) {
        let _: () = match marker {
            Some(marker) => conn.hset(layout::OFFSETS_RUN_KEY, &field, marker).await,
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

/// Why a guarded writer refuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    Lost,
    Superseded,
}

/// Asserts that `guarded` refuses `changes`, read under `fences`, for `why`, leaving `f`'s
/// keys as they were.
async fn assert_refused(
    f: &Fixture,
    guarded: &Applier,
    changes: &[(usize, mapping::Change)],
    fences: &Fences,
    why: Refusal,
) {
    let before = f.dump().await;
    let error = guarded
        .apply_fenced(&f.plan_all(changes), fences)
        .await
        .expect_err("a guarded writer must refuse a partition without its batch's marker");
    let refusal = match error {
        ApplyError::BookkeepingLost { .. } => Refusal::Lost,
        ApplyError::Superseded { .. } => Refusal::Superseded,
        ref other => panic!("not a marker refusal: {other:?}"),
    };
    assert_eq!(refusal, why, "{error}");
    assert!(
        !error.is_retriable(),
        "never resent: the pipeline drops it (and restarts when bookkeeping was lost)"
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

#[tokio::test]
async fn guarded_shared_writer_refuses_a_batch_of_a_superseded_assignment() {
    let f = Fixture::new().await;
    let guarded = Applier::new(f.pool.clone(), &f.config).with_marker_guard();
    refuses_a_batch_of_a_superseded_assignment(&f, &guarded).await;
}

#[tokio::test]
async fn guarded_exclusive_writer_refuses_a_batch_of_a_superseded_assignment() {
    let f = Fixture::new().await;
    let guarded = f
        .exclusive_applier(std::time::Duration::from_secs(5))
        .await
        .with_marker_guard();
    refuses_a_batch_of_a_superseded_assignment(&f, &guarded).await;
}

/// The interleaving of fault run `f976f92` (RELIABILITY.md): sink A read a batch under its
/// assignment of the partition (an update of customer 1) and had not applied it yet (queued,
/// or retrying through a Redis outage); a rebalance gave the partition to sink B, whose
/// assignment marked it anew and applied further, the customer's delete included (a delete
/// forgets the row's position). A's batch, sent at last, must not bring the deleted row back.
async fn refuses_a_batch_of_a_superseded_assignment(f: &Fixture, guarded: &Applier) {
    let run = run_id(f).await;
    let a = marker(&run, "a0a0a0a0a0a0a0a0");
    let b = marker(&run, "b1b1b1b1b1b1b1b1");
    mark(f, Some(&a)).await;
    let created = [
        customer_upsert(Op::Read, 1, "a@example.com", 100),
        order_upsert(Op::Read, 3, Some(1), 102),
    ];
    let out = guarded
        .apply_fenced(&f.plan_all(&created), &read_under(f, &a))
        .await
        .expect("apply under A's assignment");
    assert_eq!(out.applied, 2);
    // A reads the next batch; before it lands, B's assignment marks the partitions and
    // applies the customer's later delete.
    let stale = [customer_upsert(Op::Update, 1, "b@example.com", 200)];
    mark(f, Some(&b)).await;
    let deleted = [(CUSTOMERS, delete_customer(1, 300))];
    guarded
        .apply_fenced(&f.plan_all(&deleted), &read_under(f, &b))
        .await
        .expect("apply under B's assignment");
    let row = format!("{}:customer:1", f.tag);
    let after_delete = f.dump_data().await;
    assert!(!row_exists(f, &row).await, "{after_delete}");

    // A's batch: refused, by its fence, whatever else it holds.
    assert_refused(f, guarded, &stale, &read_under(f, &a), Refusal::Superseded).await;
    // A batch read under no known assignment (the assignment could not ask Redis) too.
    assert_refused(f, guarded, &stale, &Fences::none(), Refusal::Superseded).await;
    // A fence of another partition does not cover this one.
    let other = Fences::none().with(&f.topics[0], 1, b.as_str());
    assert_refused(f, guarded, &stale, &other, Refusal::Superseded).await;
    assert_eq!(
        f.dump_data().await,
        after_delete,
        "the deleted row stays deleted"
    );

    // What the run-only guard let through: the same batch, unfenced, re-creates the row
    // that B deleted (no position remembers the delete), and nothing applies the delete again.
    guarded.release().await.expect("release the lease");
    let unguarded = Applier::new(f.pool.clone(), &f.config);
    unguarded
        .apply_batch(&f.plan_all(&stale))
        .await
        .expect("unguarded apply");
    assert!(
        row_exists(f, &row).await,
        "without the fence the stale update brings the deleted row back"
    );
    mark(f, None).await;
}

async fn row_exists(f: &Fixture, key: &str) -> bool {
    f.conn().await.exists(key).await.expect("EXISTS")
}

async fn refuses_partitions_whose_marker_is_gone_or_stale(f: &Fixture, guarded: &Applier) {
    let run = run_id(f).await;
    let ours = marker(&run, "0123456789abcdef");
    let fences = read_under(f, &ours);
    let first = [
        customer_upsert(Op::Read, 1, "a@example.com", 100),
        order_upsert(Op::Read, 3, Some(1), 102),
    ];
    // Never marked (no assignment vouched for this database).
    assert_refused(f, guarded, &first, &fences, Refusal::Lost).await;

    mark(f, Some(&ours)).await;
    let out = guarded
        .apply_fenced(&f.plan_all(&first), &fences)
        .await
        .expect("apply");
    assert_eq!(out.applied, 2);

    // Redis flushed under the running sink: the markers went with the data.
    let later = [
        customer_upsert(Op::Update, 1, "b@example.com", 300),
        order_upsert(Op::Update, 3, Some(1), 302),
    ];
    mark(f, None).await;
    assert_refused(f, guarded, &later, &fences, Refusal::Lost).await;

    // Restarted from an older file: the markers name the previous run (its marker is the
    // batch's own, yet the run is gone).
    let older = marker(
        "0000000000000000000000000000000000000000",
        "0123456789abcdef",
    );
    mark(f, Some(&older)).await;
    assert_refused(f, guarded, &later, &read_under(f, &older), Refusal::Lost).await;

    // Only one partition of the chunk unmarked: the whole chunk is refused.
    mark(f, Some(&ours)).await;
    let _: () = f
        .conn()
        .await
        .hdel(layout::OFFSETS_RUN_KEY, &fields(f)[1])
        .await
        .expect("HDEL");
    assert_refused(f, guarded, &later, &fences, Refusal::Lost).await;

    mark(f, None).await;
    let mut conn = f.conn().await;
    let _: () = conn
        .hdel(layout::OFFSETS_RUN_KEY, fields(f))
        .await
        .expect("HDEL");
}

/// The exclusive writer reads a batch's markers ahead, after the `EXEC` of the batch before,
/// under a watch of the markers: a marker written meanwhile for another partition (another
/// assignment's) refuses nothing. The batch goes on, after its markers are read again,
/// rather than taking the database as changed under the writer (`Resend`, and its
/// bookkeeping loaded again).
#[tokio::test]
async fn a_marker_written_for_another_partition_stops_no_exclusive_batch() {
    let f = Fixture::new().await;
    let guarded = f
        .exclusive_applier(std::time::Duration::from_secs(60))
        .await
        .with_marker_guard();
    let run = run_id(&f).await;
    let ours = marker(&run, "0123456789abcdef");
    mark(&f, Some(&ours)).await;
    let fences = read_under(&f, &ours);
    let first = [customer_upsert(Op::Read, 1, "a@example.com", 100)];
    guarded
        .apply_fenced(&f.plan_all(&first), &fences)
        .await
        .expect("first batch");
    let elsewhere = layout::offsets_field(&f.topics[0], 7);
    let _: () = f
        .conn()
        .await
        .hset(
            layout::OFFSETS_RUN_KEY,
            &elsewhere,
            marker(&run, "fedcba9876543210"),
        )
        .await
        .expect("another assignment's marker");
    let next = [customer_upsert(Op::Update, 1, "b@example.com", 200)];
    let out = guarded
        .apply_fenced(&f.plan_all(&next), &fences)
        .await
        .expect("a marker of another partition refuses nothing");
    assert_eq!(out.applied, 1);
    let email = format!("{}:customer:email:b@example.com", f.tag);
    let owner: Option<String> = f.conn().await.get(&email).await.expect("GET");
    assert_eq!(owner.as_deref(), Some("1"));
    guarded.release().await.expect("release the lease");
    let _: () = f
        .conn()
        .await
        .hdel(layout::OFFSETS_RUN_KEY, &elsewhere)
        .await
        .expect("HDEL");
    mark(&f, None).await;
}
