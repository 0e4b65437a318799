//! The owning applier (`Applier::owning`, which `sink rebuild` uses for its staging
//! database) leaves exactly the state the change script leaves: the same changes, batched
//! the same way, through both, and every key compared after every batch (values,
//! bookkeeping, offsets and freshness; only `applied_at_ms`, a clock reading, is masked).

use crate::support::*;
use mapping::{Change, FieldValue, Op};
use sink::apply::PlannedChange;

/// Applies `batches` to both fixtures, comparing outcomes and dumps after each batch.
async fn same_state(batches: &[Vec<(usize, Change)>]) {
    same_state_of(Fixture::new().await, Fixture::owning().await, batches).await;
}

/// [`same_state`] with the orders' aggregate (`order_stats`) kept by both writers too.
async fn same_state_with_stats(batches: &[Vec<(usize, Change)>]) {
    let lua = Fixture::new().await.with_order_stats();
    let owned = Fixture::owning().await.with_order_stats();
    same_state_of(lua, owned, batches).await;
}

async fn same_state_of(lua: Fixture, owned: Fixture, batches: &[Vec<(usize, Change)>]) {
    assert!(owned.applier.is_owning() && !lua.applier.is_owning());
    for (n, batch) in batches.iter().enumerate() {
        let a = lua.apply(batch).await;
        let b = owned.apply(batch).await;
        assert_eq!(a, b, "outcome of batch {n}: {batch:?}");
        let (da, db) = (lua.dump().await, owned.dump().await);
        assert_eq!(
            da, db,
            "state after batch {n} (left: script, right: owning): {batch:?}"
        );
    }
}

/// The cases of `semantics.rs` in one history: snapshot, insert, email change with a
/// null `before`, order moving between customers and to NULL, TOAST-kept values and kept
/// scores, REPLICA IDENTITY DEFAULT deletes, tombstones (after a delete and for a present
/// row), a primary key change, an email moving between customers in both arrival orders, a
/// late older claim, truncates with and without later rows, replays.
#[tokio::test]
async fn semantics_cases_leave_the_same_state() {
    let c = |op, id, email: &str, lsn| {
        (
            CUSTOMERS,
            upsert(op, customer_row(id, email, "N", T0 + lsn), lsn),
        )
    };
    let o = |op, id, customer, lsn| {
        (
            ORDERS,
            upsert(op, order_row(id, customer, T0 + id * 1000), lsn),
        )
    };
    let mut toast = order_row(3, Some(1), T0);
    for (name, value) in &mut toast {
        match name.as_str() {
            "items" | "created_at" => *value = FieldValue::Unavailable,
            "status" => *value = FieldValue::Null,
            _ => {}
        }
    }
    let batches = vec![
        vec![
            c(Op::Read, 1, "x@example.com", 100),
            c(Op::Read, 2, "z@example.com", 110),
            o(Op::Read, 3, Some(1), 120),
        ],
        vec![c(Op::Update, 1, "y@example.com", 200)],
        vec![
            c(Op::Update, 2, "x@example.com", 300),
            c(Op::Create, 3, "x@example.com", 150),
        ],
        vec![
            o(Op::Update, 3, Some(2), 310),
            (ORDERS, upsert(Op::Update, toast, 320)),
        ],
        vec![
            o(Op::Update, 3, None, 330),
            o(Op::Update, 3, Some(1), 340),
            o(Op::Create, 4, Some(1), 350),
        ],
        vec![
            (ORDERS, delete_order(4, 400)),
            (ORDERS, tombstone(4)),
            o(Op::Create, 100, Some(1), 400),
        ],
        vec![
            (CUSTOMERS, delete_customer(2, 410)),
            (CUSTOMERS, tombstone(2)),
            (CUSTOMERS, tombstone(1)),
        ],
        vec![
            c(Op::Update, 1, "y@example.com", 200),
            c(Op::Create, 5, "w@example.com", 420),
        ],
        vec![
            (ORDERS, truncate(500)),
            o(Op::Create, 7, Some(5), 450),
            o(Op::Create, 8, Some(5), 550),
        ],
        vec![
            (ORDERS, truncate(600)),
            (CUSTOMERS, truncate(600)),
            (CUSTOMERS, truncate(700)),
        ],
        vec![
            c(Op::Create, 9, "x@example.com", 800),
            c(Op::Create, 9, "x@example.com", 800),
        ],
    ];
    same_state(&batches).await;
    same_state_with_stats(&batches).await;
}

#[tokio::test]
async fn random_interleavings_leave_the_same_state() {
    for seed in 1..=6 {
        same_state(&random_history(seed)).await;
    }
}

/// The rebuild's applier (`Applier::rebuilding`) leaves the rows' positions out of its
/// batches; once it writes the ones it held back, the state is the script's key for key,
/// and from then on each batch records its rows as the script does (a delete removes its
/// row's entry).
#[tokio::test]
async fn a_rebuilding_applier_writes_the_rows_held_back_then_records_each_batch() {
    for seed in 31..=34 {
        let history = random_history(seed);
        let (lua, rebuilding) = (Fixture::new().await, Fixture::rebuilding().await);
        assert!(rebuilding.applier.is_owning());
        let half = history.len() / 2;
        for (n, batch) in history[..half].iter().enumerate() {
            let (a, b) = (lua.apply(batch).await, rebuilding.apply(batch).await);
            assert_eq!(a, b, "seed {seed}: outcome of batch {n}: {batch:?}");
        }
        let rows = rows_listed(&lua).await;
        assert!(rows > 0, "seed {seed}: the script recorded rows");
        assert_eq!(
            rows_listed(&rebuilding).await,
            0,
            "seed {seed}: rows held back"
        );
        let written = rebuilding
            .applier
            .write_held_rows()
            .await
            .expect("write the held rows");
        assert_eq!(written, rows, "seed {seed}: one entry per row held");
        assert_eq!(
            lua.dump().await,
            rebuilding.dump().await,
            "seed {seed}: state once the held rows are written (left: script, right: rebuilding)"
        );
        assert_eq!(
            rebuilding.applier.write_held_rows().await.expect("again"),
            0,
            "seed {seed}: nothing is held any more"
        );
        for (n, batch) in history.iter().enumerate().skip(half) {
            let (a, b) = (lua.apply(batch).await, rebuilding.apply(batch).await);
            assert_eq!(a, b, "seed {seed}: outcome of batch {n}: {batch:?}");
            assert_eq!(
                lua.dump().await,
                rebuilding.dump().await,
                "seed {seed}: state after batch {n} (left: script, right: rebuilding)"
            );
        }
    }
}

/// How many rows `f`'s mappings list in their `sink:rows` hashes.
async fn rows_listed(f: &Fixture) -> usize {
    let mut conn = f.conn().await;
    let mut total = 0;
    for m in &f.config.mappings {
        let n: usize = redis::cmd("HLEN")
            .arg(mapping::layout::rows_key(&m.name))
            .query_async(&mut conn)
            .await
            .expect("HLEN");
        total += n;
    }
    total
}

/// Aggregates through amount, status and parent changes, deletes, truncates and replays of
/// random histories: the owning writer's figures equal the script's, key for key.
#[tokio::test]
async fn random_interleavings_leave_the_same_aggregates() {
    for seed in 21..=24 {
        same_state_with_stats(&with_varied_orders(random_history(seed))).await;
    }
}

/// A batch Redis refuses (OOM) is retriable, leaves nothing behind and is undone in the
/// sink's bookkeeping: sending it again gives exactly the state of one successful send
/// (freshness counters and aggregate figures included), as with the script.
#[tokio::test]
async fn a_refused_batch_leaves_nothing_and_is_sent_again() {
    let mut server = PrivateRedis::start();
    let lua = Fixture::new().await.with_order_stats();
    let owned = Fixture::owning_on(&server.url).await.with_order_stats();
    let c = |id, email: &str, lsn| {
        (
            CUSTOMERS,
            upsert(Op::Create, customer_row(id, email, "N", T0), lsn),
        )
    };
    let first = [
        c(1, "a@example.com", 100),
        c(2, "b@example.com", 110),
        (ORDERS, upsert(Op::Create, order_row(4, Some(1), T0), 120)),
    ];
    let second = [
        c(1, "c@example.com", 200),
        (CUSTOMERS, delete_customer(2, 210)),
        (ORDERS, upsert(Op::Create, order_row(3, Some(1), T0), 220)),
    ];
    for f in [&lua, &owned] {
        f.apply(&first).await;
    }
    let planned = owned.plan_all(&second);
    server.set_maxmemory("1");
    let err = owned
        .applier
        .apply_batch(&planned)
        .await
        .expect_err("over maxmemory");
    server.set_maxmemory("0");
    assert!(err.is_retriable(), "{err}");
    let outcome = owned
        .applier
        .apply_batch(&planned)
        .await
        .expect("sent again");
    assert_eq!((outcome.applied, outcome.skipped), (3, 0));
    lua.apply(&second).await;
    assert_eq!(lua.dump().await, owned.dump().await);
}

/// The staging writer keeps several transactions in flight: when Redis refuses one, a
/// later one may already have been executed on top of it. Both are undone and sent again
/// in order, and the later one's `applied_count` is taken back, so the state is that of one
/// successful send each. The first batch is refused for an ACL rule on one of its keys
/// (the whole transaction aborts at `EXEC`), the second has no such key.
#[tokio::test]
async fn a_batch_executed_after_a_refused_one_is_counted_once() {
    let mut server = PrivateRedis::start();
    let user = "staging";
    server.acl_setuser(user, &["on", ">pw", "~*", "&*", "+@all"]);
    let url = server
        .url
        .replacen("redis://", &format!("redis://{user}:pw@"), 1);
    let lua = Fixture::new().await;
    let owned = Fixture::owning_on(&url).await;
    let c = |id, email: &str, lsn| {
        (
            CUSTOMERS,
            upsert(Op::Create, customer_row(id, email, "N", T0), lsn),
        )
    };
    let first = [c(7, "a@example.com", 100)];
    let second = [c(2, "b@example.com", 210), c(3, "c@example.com", 220)];
    let (p1, p2) = (owned.plan_all(&first), owned.plan_all(&second));
    // Every key but customer 7's row.
    let tag = owned.tag.clone();
    server.acl_setuser(
        user,
        &[
            "resetkeys",
            "~sink:*",
            &format!("~{tag}:order*"),
            &format!("~{tag}:customer:[^7]*"),
        ],
    );
    let (r1, r2) = tokio::join!(
        owned.applier.apply_batch(&p1),
        owned.applier.apply_batch(&p2)
    );
    let e1 = r1.expect_err("refused: NOPERM on customer 7");
    assert!(format!("{e1:?}").contains("NoPerm"), "{e1:?}");
    let e2 = r2.expect_err("undone with the first");
    assert!(e2.is_retriable(), "{e2}");
    server.acl_setuser(user, &["allkeys"]);
    sent_again_in_order(&lua, &owned, [&p1, &p2], [&first, &second]).await;
}

/// Batches decided while an earlier one is on its way are undone with it when Redis refuses
/// it (they were decided on top of it) and answered "send again"; sent again in order, both
/// give the state of one successful send each.
#[tokio::test]
async fn batches_decided_after_a_refused_one_are_undone_too() {
    let mut server = PrivateRedis::start();
    let lua = Fixture::new().await;
    let owned = Fixture::owning_on(&server.url).await;
    let c = |id, email: &str, lsn| {
        (
            CUSTOMERS,
            upsert(Op::Update, customer_row(id, email, "N", T0), lsn),
        )
    };
    let first = [c(1, "a@example.com", 100), c(2, "b@example.com", 110)];
    // The second batch moves `a` to customer 2: decided on top of the first.
    let second = [c(1, "c@example.com", 200), c(2, "a@example.com", 210)];
    let (p1, p2) = (owned.plan_all(&first), owned.plan_all(&second));
    server.set_maxmemory("1");
    let (r1, r2) = tokio::join!(
        owned.applier.apply_batch(&p1),
        owned.applier.apply_batch(&p2)
    );
    server.set_maxmemory("0");
    let (e1, e2) = (r1.expect_err("refused"), r2.expect_err("refused or undone"));
    assert!(e1.is_retriable() && e2.is_retriable(), "{e1} / {e2}");
    sent_again_in_order(&lua, &owned, [&p1, &p2], [&first, &second]).await;
}

/// Sends the planned batches `planned` again through `owned`, in order, each expected to go
/// through, applies their `changes` through the script of `lua`, and compares every key.
async fn sent_again_in_order(
    lua: &Fixture,
    owned: &Fixture,
    planned: [&[PlannedChange]; 2],
    changes: [&[(usize, Change)]; 2],
) {
    for (n, batch) in planned.into_iter().enumerate() {
        owned
            .applier
            .apply_batch(batch)
            .await
            .unwrap_or_else(|e| panic!("batch {n} sent again: {e}"));
    }
    for batch in changes {
        lua.apply(batch).await;
    }
    assert_eq!(lua.dump().await, owned.dump().await);
}
