//! A relation filtered by a field (`filters:` of a relation lookup): both writers keep one
//! sorted set per parent and value, exact after status changes, parent and `order_by`
//! changes, REPLICA IDENTITY DEFAULT deletes (whose `before` names another status), replays
//! and truncates, and leave the same state key for key.

use crate::support::*;
use mapping::{Change, FieldValue, Op};

fn order(
    op: Op,
    id: i64,
    customer: Option<i64>,
    status: &str,
    created: i64,
    lsn: i64,
) -> (usize, Change) {
    let mut row = order_row(id, customer, T0 + created);
    for (name, value) in &mut row {
        if name == "status" {
            *value = FieldValue::String(status.into());
        }
    }
    (ORDERS, upsert(op, row, lsn))
}

/// Members of `{tag}:customer:{customer}:orders:status:{status}`, lowest score first.
async fn members(f: &Fixture, customer: i64, status: &str) -> Vec<(String, f64)> {
    let mut conn = f.conn().await;
    redis::cmd("ZRANGE")
        .arg(format!(
            "{}:customer:{customer}:orders:status:{status}",
            f.tag
        ))
        .arg(0)
        .arg(-1)
        .arg("WITHSCORES")
        .query_async(&mut conn)
        .await
        .expect("ZRANGE")
}

fn m(id: &str, created: i64) -> (String, f64) {
    (id.to_owned(), (T0 + created) as f64)
}

#[tokio::test]
async fn filtered_relations_are_exact_in_both_writers() {
    let lua = Fixture::new().await.with_status_filter();
    let owned = Fixture::owning().await.with_status_filter();
    let batches = [
        vec![
            order(Op::Read, 1, Some(1), "pending", 10, 100),
            order(Op::Read, 2, Some(1), "paid", 20, 110),
            order(Op::Read, 3, Some(1), "pending", 30, 120),
            order(Op::Read, 4, Some(2), "pending", 40, 130),
        ],
        // Status change, parent change, order_by change.
        vec![
            order(Op::Update, 1, Some(1), "paid", 10, 200),
            order(Op::Update, 4, Some(1), "pending", 40, 210),
            order(Op::Update, 3, Some(1), "pending", 35, 220),
        ],
        // A replay of older changes is a no-op.
        vec![
            order(Op::Read, 1, Some(1), "pending", 10, 100),
            order(Op::Update, 4, Some(2), "pending", 40, 130),
        ],
        // Delete with a `before` naming `pending` and no parent: the stored values decide.
        vec![(ORDERS, delete_order(2, 300)), (ORDERS, tombstone(2))],
        // To NULL parent and back.
        vec![order(Op::Update, 3, None, "pending", 35, 310)],
    ];
    for (n, batch) in batches.iter().enumerate() {
        let a = lua.apply(batch).await;
        let b = owned.apply(batch).await;
        assert_eq!(a, b, "outcome of batch {n}");
        assert_eq!(
            lua.dump().await,
            owned.dump().await,
            "state after batch {n}"
        );
    }
    for f in [&lua, &owned] {
        assert_eq!(members(f, 1, "pending").await, vec![m("4", 40)]);
        assert_eq!(members(f, 1, "paid").await, vec![m("1", 10)]);
        assert_eq!(members(f, 2, "pending").await, vec![]);
    }
    let end = vec![
        order(Op::Update, 3, Some(2), "paid", 35, 400),
        (ORDERS, truncate(500)),
    ];
    let (a, b) = (lua.apply(&end).await, owned.apply(&end).await);
    assert_eq!(a, b);
    assert_eq!(
        lua.dump().await,
        owned.dump().await,
        "state after the truncate"
    );
    for f in [&lua, &owned] {
        assert_eq!(members(f, 1, "pending").await, vec![]);
        assert_eq!(members(f, 1, "paid").await, vec![]);
        assert_eq!(members(f, 2, "paid").await, vec![]);
    }
}

/// The generated histories of `owned.rs` (parents moving, deletes, truncates, redelivered
/// suffixes), with the filtered relation kept too.
#[tokio::test]
async fn random_interleavings_keep_filtered_relations_equal() {
    for seed in 0..3 {
        let lua = Fixture::new().await.with_status_filter();
        let owned = Fixture::owning().await.with_status_filter();
        for (n, batch) in random_history(seed).iter().enumerate() {
            assert_eq!(
                lua.apply(batch).await,
                owned.apply(batch).await,
                "seed {seed} batch {n}"
            );
        }
        let dump = lua.dump().await;
        assert_eq!(dump, owned.dump().await, "seed {seed}");
        assert!(
            dump.contains(":orders:status:shipped"),
            "seed {seed}: no filtered relation in\n{dump}"
        );
    }
}
