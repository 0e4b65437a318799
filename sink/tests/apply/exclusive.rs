//! The exclusive writer (`Applier::exclusive`, `sink run --writer exclusive`): it continues
//! from what the change script stored and leaves exactly the state the script leaves; it
//! holds a lease per mapping that keeps other writers of those mappings out (a second
//! exclusive writer stands by, a shared one is refused); it notices a database swapped in
//! under it and loads it again; it stops when another writer took its lease, and when
//! another program wrote a mapped key with another type, naming the key.

use std::time::Duration;

use crate::support::*;
use mapping::{Change, Op};
use sink::apply::{Applier, ApplyError, BatchOutcome, PlannedChange, DEFAULT_MAX_WRITER_MEMORY};
use tokio_util::sync::CancellationToken;

/// A short lease, so that take-overs happen within the test.
const LEASE: Duration = Duration::from_millis(1500);

/// Applies `batch`, sending it again while the writer answers "send again" (a reload).
async fn apply_until_settled(
    applier: &Applier,
    batch: &[PlannedChange],
) -> Result<BatchOutcome, ApplyError> {
    for _ in 0..20 {
        match applier.apply_batch(batch).await {
            Err(ApplyError::Resend { .. }) => continue,
            other => return other,
        }
    }
    panic!("still answered \"send again\" after 20 attempts");
}

/// Random histories: the first half through the script, then the exclusive writer loads
/// the bookkeeping and applies the rest; after every batch every key equals what the script
/// alone leaves.
#[tokio::test]
async fn continues_from_what_the_script_stored() {
    for seed in 11..=14 {
        continue_from_the_script(seed, false).await;
    }
}

/// The same with the orders' aggregate: the exclusive writer counts the figures from the
/// rows it loads and keeps them exactly as the script does.
#[tokio::test]
async fn continues_the_aggregates_the_script_stored() {
    for seed in 15..=17 {
        continue_from_the_script(seed, true).await;
    }
}

/// Applies the batches of `history` from `from` on through the script (`lua`) and the
/// exclusive writer alike: after every batch, their outcomes and every key are equal.
async fn apply_to_both(
    lua: &Fixture,
    exclusive: &Fixture,
    history: &[Vec<(usize, Change)>],
    from: usize,
    seed: u64,
) {
    for (n, batch) in history.iter().enumerate().skip(from) {
        let outcome = lua.apply(batch).await;
        assert_eq!(
            outcome,
            exclusive.apply(batch).await,
            "seed {seed}, outcome of batch {n}"
        );
        assert_eq!(
            lua.dump().await,
            exclusive.dump().await,
            "seed {seed}, state after batch {n} (left: script, right: exclusive): {batch:?}"
        );
    }
}

async fn continue_from_the_script(seed: u64, stats: bool) {
    {
        let history = if stats {
            with_varied_orders(random_history(seed))
        } else {
            random_history(seed)
        };
        let half = history.len() / 2;
        let (mut lua, mut first) = (Fixture::new().await, Fixture::new().await);
        if stats {
            lua = lua.with_order_stats();
            first = first.with_order_stats();
        }
        for batch in &history[..half] {
            lua.apply(batch).await;
            first.apply(batch).await;
        }
        assert_eq!(lua.dump().await, first.dump().await);
        let applier = first.exclusive_applier(LEASE).await;
        let exclusive = first.handed_to(applier);
        apply_to_both(&lua, &exclusive, &history, half, seed).await;
        exclusive.applier.release().await.expect("release");
    }
}

fn customer(id: i64, email: &str, lsn: i64) -> (usize, Change) {
    (
        CUSTOMERS,
        upsert(Op::Create, customer_row(id, email, "N", T0 + lsn), lsn),
    )
}

/// While an exclusive writer holds the mappings, the change script refuses to write them
/// (a shared sink stops with `Excluded`) and a second exclusive writer waits; once the
/// first gives the lease up, the second takes over from the stored state, and once that one
/// gives it up too, the script writes again.
#[tokio::test]
async fn the_lease_keeps_other_writers_out() {
    let holder = Fixture::exclusive_on(pool().await, LEASE).await;
    holder.apply(&[customer(1, "a@example.com", 100)]).await;

    let shared = Applier::new(holder.pool.clone(), &holder.config);
    let refused = shared
        .apply_batch(&holder.plan_all(&[customer(2, "b@example.com", 110)]))
        .await
        .expect_err("the script must refuse");
    assert!(
        matches!(refused, ApplyError::Excluded { .. }) && !refused.is_retriable(),
        "{refused}"
    );

    let cancel = CancellationToken::new();
    let (pool, config) = (holder.pool.clone(), holder.config.clone());
    let standby = tokio::spawn({
        let cancel = cancel.clone();
        async move {
            Applier::exclusive(
                pool,
                &config,
                &sink::apply::WriterId::new(),
                LEASE,
                DEFAULT_MAX_WRITER_MEMORY,
                &cancel,
            )
            .await
        }
    });
    // Renewed by the idle holder, the lease does not lapse: the standby keeps waiting.
    tokio::time::sleep(LEASE * 3).await;
    assert!(!standby.is_finished(), "the standby took a held lease");

    holder.applier.release().await.expect("release");
    let next = tokio::time::timeout(LEASE * 3, standby)
        .await
        .expect("the standby takes the released lease")
        .expect("join")
        .expect("exclusive")
        .expect("not cancelled");
    let successor = holder.handed_to(next);
    // The successor loaded the first writer's row: the email moves, the old entry goes.
    successor
        .apply(&[(
            CUSTOMERS,
            upsert(Op::Update, customer_row(1, "c@example.com", "N", T0), 200),
        )])
        .await;
    successor.applier.release().await.expect("release");
    // Released for good: the idle writer's renewals (every third of the lease) do not take
    // it back.
    tokio::time::sleep(LEASE * 2).await;
    let mut conn = successor.conn().await;
    let lease: Option<String> = redis::cmd("GET")
        .arg(format!(
            "sink:writer:{}",
            successor.config.mappings[CUSTOMERS].name
        ))
        .query_async(&mut conn)
        .await
        .expect("GET");
    assert_eq!(lease, None, "the lease stays released");
    let outcome = shared
        .apply_batch(&successor.plan_all(&[customer(2, "b@example.com", 110)]))
        .await
        .expect("the script writes again");
    assert_eq!(outcome.applied, 1);
    let lua = Fixture::new().await;
    lua.apply(&[customer(1, "a@example.com", 100)]).await;
    // The refused change took an offset there.
    let _ = lua.plan_all(&[customer(2, "b@example.com", 110)]);
    lua.apply(&[(
        CUSTOMERS,
        upsert(Op::Update, customer_row(1, "c@example.com", "N", T0), 200),
    )])
    .await;
    lua.apply(&[customer(2, "b@example.com", 110)]).await;
    assert_eq!(lua.dump().await, successor.dump().await);
    cancel.cancel();
}

/// A rebuild swaps another database in under the writer (`SWAPDB`): the writer notices,
/// loads that database's bookkeeping and applies the next batches on top of it, exactly
/// as the script would.
#[tokio::test]
async fn a_database_swapped_in_is_loaded_again() {
    let server = PrivateRedis::start();
    let db = |n: u8| sink::connection::redis_pool(format!("{}/{n}", server.url)).expect("pool");
    let exclusive = Fixture::exclusive_on(db(0), LEASE).await;
    exclusive
        .apply(&[
            customer(1, "a@example.com", 100),
            customer(2, "b@example.com", 110),
        ])
        .await;

    // The "rebuilt" database: the same mappings, another history, written by the script.
    let rebuilt = [
        customer(1, "x@example.com", 300),
        customer(3, "b@example.com", 310),
        (ORDERS, upsert(Op::Create, order_row(7, Some(3), T0), 320)),
    ];
    let staged = Fixture::build_like(&exclusive, db(1)).await;
    staged.apply(&rebuilt).await;
    let lua = Fixture::new().await;
    lua.apply(&rebuilt).await;

    let mut conn = exclusive.conn().await;
    let _: () = redis::cmd("SWAPDB")
        .arg(0)
        .arg(1)
        .query_async(&mut conn)
        .await
        .expect("SWAPDB");
    // Offsets as in the script's run, where the order was created before it was updated.
    let _ = exclusive.plan_all(&rebuilt[2..]);
    let next = [
        (
            CUSTOMERS,
            upsert(Op::Update, customer_row(3, "a@example.com", "N", T0), 400),
        ),
        (ORDERS, upsert(Op::Update, order_row(7, Some(1), T0), 410)),
        (CUSTOMERS, delete_customer(1, 420)),
    ];
    let outcome = apply_until_settled(&exclusive.applier, &exclusive.plan_all(&next))
        .await
        .expect("applied after the reload");
    assert_eq!(outcome.applied, 3);
    lua.apply(&next).await;
    assert_eq!(lua.dump().await, exclusive.dump().await);
}

/// Another writer holding the lease (this one stalled past it) stops this writer for good.
#[tokio::test]
async fn a_lost_lease_stops_the_writer() {
    let exclusive = Fixture::exclusive_on(pool().await, LEASE).await;
    exclusive.apply(&[customer(1, "a@example.com", 100)]).await;
    let mut conn = exclusive.conn().await;
    let key = format!("sink:writer:{}", exclusive.config.mappings[CUSTOMERS].name);
    let _: () = redis::cmd("SET")
        .arg(&key)
        .arg("another-sink")
        .query_async(&mut conn)
        .await
        .expect("SET");
    let err = apply_until_settled(
        &exclusive.applier,
        &exclusive.plan_all(&[customer(2, "b@example.com", 110)]),
    )
    .await
    .expect_err("the lease is gone");
    assert!(
        matches!(&err, ApplyError::LeaseLost { holder } if holder == "another-sink")
            && !err.is_retriable(),
        "{err}"
    );
    let _: () = redis::cmd("DEL")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .expect("DEL");
    let lua = Fixture::new().await;
    lua.apply(&[customer(1, "a@example.com", 100)]).await;
    assert_eq!(
        lua.dump().await,
        exclusive.dump().await,
        "nothing written after the loss"
    );
}

/// A row key that another program wrote as a string fails its command in the batch's
/// transaction: the writer reports the command and its key, not retriable and at no offset
/// (so the sink stops instead of dead-lettering), and the batch's other writes were applied.
#[tokio::test]
async fn a_foreign_key_of_another_type_stops_the_writer_naming_it() {
    let exclusive = Fixture::exclusive_on(pool().await, LEASE).await;
    let foreign = format!("{}:customer:5", exclusive.tag);
    let mut conn = exclusive.conn().await;
    let _: () = redis::cmd("SET")
        .arg(&foreign)
        .arg("not a hash")
        .query_async(&mut conn)
        .await
        .expect("SET");
    let batch = exclusive.plan_all(&[
        customer(4, "d@example.com", 100),
        customer(5, "e@example.com", 110),
        customer(6, "f@example.com", 120),
    ]);
    let err = apply_until_settled(&exclusive.applier, &batch)
        .await
        .expect_err("customer 5 cannot be written");
    match &err {
        ApplyError::ForeignKey {
            command,
            key,
            source,
        } => {
            assert_eq!(command, &format!("HSET {foreign}"));
            assert_eq!(key.as_deref(), Some(foreign.as_str()));
            assert_eq!(source.code(), "WRONGTYPE");
            assert_eq!(err.key_of_another_type(), Some(foreign.as_str()));
        }
        other => panic!("expected the foreign key's error, got {other}"),
    }
    assert!(!err.is_retriable() && err.location().is_none(), "{err}");
    let rows: Vec<Option<String>> = redis::cmd("HGET")
        .arg(format!("{}:customer:4", exclusive.tag))
        .arg("email")
        .query_async(&mut conn)
        .await
        .map(|v: Option<String>| vec![v])
        .expect("HGET");
    assert_eq!(rows, vec![Some("d@example.com".to_owned())]);
    exclusive.applier.release().await.expect("release");
}

/// Whether the snapshot an exclusive writer of `fixture`'s mappings leaves is in Redis.
async fn snapshot_exists(fixture: &Fixture) -> bool {
    let key =
        mapping::layout::snapshot_key(fixture.config.mappings.iter().map(|m| m.name.as_str()));
    let mut conn = fixture.conn().await;
    redis::cmd("EXISTS")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .expect("EXISTS")
}

/// An exclusive writer that stops cleanly leaves its bookkeeping in Redis; the next one
/// starts from it (deleting it) instead of reading every entry, and goes on exactly as the
/// script would.
#[tokio::test]
async fn the_next_writer_starts_from_the_bookkeeping_the_last_one_left() {
    for seed in 21..=23 {
        let history = random_history(seed);
        let half = history.len() / 2;
        let lua = Fixture::new().await;
        let first = Fixture::exclusive_on(pool().await, LEASE).await;
        assert_eq!(first.applier.bookkeeping_source(), Some("redis"));
        for batch in &history[..half] {
            lua.apply(batch).await;
            first.apply(batch).await;
        }
        first.applier.release().await.expect("release");
        assert!(snapshot_exists(&first).await, "seed {seed}: none left");
        let next = first.exclusive_applier(LEASE).await;
        assert_eq!(next.bookkeeping_source(), Some("snapshot"), "seed {seed}");
        assert!(!snapshot_exists(&first).await, "seed {seed}: not deleted");
        let second = first.handed_to(next);
        apply_to_both(&lua, &second, &history, half, seed).await;
        second.applier.release().await.expect("release");
    }
}

/// A snapshot that another writer made stale (the shared writer moved an email after the
/// exclusive one stopped) is not used: the next exclusive writer reads the bookkeeping entry
/// by entry and goes on as the script would. Started from the stale snapshot, it would
/// leave the email index naming the customer under its second address.
#[tokio::test]
async fn a_snapshot_another_writer_made_stale_is_not_used() {
    let lua = Fixture::new().await;
    let first = Fixture::exclusive_on(pool().await, LEASE).await;
    let a = [customer(1, "a@example.com", 100)];
    lua.apply(&a).await;
    first.apply(&a).await;
    first.applier.release().await.expect("release");
    assert!(snapshot_exists(&first).await);

    let b = [customer(1, "b@example.com", 200)];
    let shared = Applier::new(first.pool.clone(), &first.config);
    shared
        .apply_batch(&first.plan_all(&b))
        .await
        .expect("the script writes once the lease is released");
    lua.apply(&b).await;

    let next = first.exclusive_applier(LEASE).await;
    assert_eq!(next.bookkeeping_source(), Some("redis"));
    assert!(
        !snapshot_exists(&first).await,
        "a refused snapshot is deleted too"
    );
    let second = first.handed_to(next);
    let c = [customer(1, "c@example.com", 300)];
    lua.apply(&c).await;
    second.apply(&c).await;
    assert_eq!(lua.dump().await, second.dump().await);
    second.applier.release().await.expect("release");
}
