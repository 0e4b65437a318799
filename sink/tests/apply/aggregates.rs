//! Aggregates (`aggregates:`) kept by both writers against a real Redis: exact after
//! amount, status and parent changes, deletes under REPLICA IDENTITY DEFAULT, replays,
//! decimals beyond a double's precision and truncate; an emptied parent loses its hash. The
//! same expectations hold for the change script and the owning writer; an exclusive writer
//! continues the figures the script stored.

use mapping::{FieldValue, Op};

use crate::support::{dedent, delete_order, order_row, truncate, upsert, Fixture, ORDERS, T0};

/// An order upsert with its own customer, status and amount.
fn order(
    op: Op,
    id: i64,
    customer: i64,
    status: &str,
    total: FieldValue,
    lsn: i64,
) -> (usize, mapping::Change) {
    let mut row = order_row(id, Some(customer), T0 + id);
    for (name, value) in &mut row {
        match name.as_str() {
            "status" => *value = FieldValue::String(status.into()),
            "total_cents" => *value = total.clone(),
            _ => {}
        }
    }
    (ORDERS, upsert(op, row, lsn))
}

/// The aggregate keys of the fixture, as `dump_data` shows them.
async fn stats(f: &Fixture) -> String {
    let mut out = String::new();
    let mut keep = false;
    for line in f.dump_data().await.lines() {
        if !line.starts_with(' ') {
            keep = line.contains(":order_stats");
        }
        if keep {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

#[tokio::test]
async fn aggregates_follow_every_change_exactly() {
    follow_every_change(Fixture::new().await.with_order_stats()).await;
    follow_every_change(Fixture::owning().await.with_order_stats()).await;
}

async fn follow_every_change(f: Fixture) {
    let first = [
        order(Op::Create, 1, 1, "paid", FieldValue::Int(100), 1000),
        order(Op::Create, 2, 1, "pending", FieldValue::Int(250), 1010),
        order(Op::Create, 3, 2, "paid", FieldValue::Int(7), 1020),
    ];
    f.apply(&first).await;
    assert_eq!(
        stats(&f).await,
        dedent(
            "
            P:customer:1:order_stats (hash)
              count = 2
              group_count:paid = 1
              group_count:pending = 1
              group_sum:total_cents:paid = 100
              group_sum:total_cents:pending = 250
              sum:total_cents = 350
            P:customer:2:order_stats (hash)
              count = 1
              group_count:paid = 1
              group_sum:total_cents:paid = 7
              sum:total_cents = 7
            "
        )
    );
    // Amount and status change; the order of customer 2 moves to customer 1; the first
    // changes are replayed (the position guard makes them no-ops); order 1 is deleted with a
    // `before` that holds only its key (REPLICA IDENTITY DEFAULT).
    f.apply(&[
        order(Op::Update, 2, 1, "paid", FieldValue::Int(300), 1030),
        order(Op::Update, 3, 1, "paid", FieldValue::Int(7), 1040),
    ])
    .await;
    f.apply(&first).await;
    f.apply(&[(ORDERS, delete_order(1, 1050))]).await;
    f.apply(&[(ORDERS, delete_order(1, 1050))]).await;
    assert_eq!(
        stats(&f).await,
        dedent(
            "
            P:customer:1:order_stats (hash)
              count = 2
              group_count:paid = 2
              group_sum:total_cents:paid = 307
              sum:total_cents = 307
            "
        )
    );
    f.apply(&[(ORDERS, truncate(1060))]).await;
    assert_eq!(stats(&f).await, "");
}

#[tokio::test]
async fn decimal_sums_are_exact_beyond_doubles() {
    exact_beyond_doubles(Fixture::new().await.with_order_stats()).await;
    exact_beyond_doubles(Fixture::owning().await.with_order_stats()).await;
}

async fn exact_beyond_doubles(f: Fixture) {
    let decimal = |unscaled: i64, scale| FieldValue::Decimal {
        unscaled: unscaled.to_be_bytes().to_vec(),
        scale,
    };
    f.apply(&[
        order(Op::Create, 1, 5, "paid", decimal(150, 2), 1000),
        order(
            Op::Create,
            2,
            5,
            "paid",
            decimal(9_007_199_254_740_993, 0),
            1010,
        ),
        order(Op::Create, 3, 5, "refunded", decimal(-125, 3), 1020),
    ])
    .await;
    assert_eq!(
        stats(&f).await,
        dedent(
            "
            P:customer:5:order_stats (hash)
              count = 3
              group_count:paid = 2
              group_count:refunded = 1
              group_sum:total_cents:paid = 9007199254740994.5
              group_sum:total_cents:refunded = -0.125
              sum:total_cents = 9007199254740994.375
            "
        )
    );
    f.apply(&[order(Op::Update, 1, 5, "paid", decimal(50, 2), 1030)])
        .await;
    f.apply(&[(ORDERS, delete_order(3, 1040))]).await;
    assert_eq!(
        stats(&f).await,
        dedent(
            "
            P:customer:5:order_stats (hash)
              count = 2
              group_count:paid = 2
              group_sum:total_cents:paid = 9007199254740993.5
              sum:total_cents = 9007199254740993.5
            "
        )
    );
}

/// The exclusive writer takes over from what the script stored: it counts the figures from
/// the rows it loads, then moves an order to another customer, empties a group and a parent,
/// and leaves what the script alone leaves.
#[tokio::test]
async fn an_exclusive_writer_continues_the_scripts_aggregates() {
    let lua = Fixture::new().await.with_order_stats();
    let first = Fixture::new().await.with_order_stats();
    let before = [
        order(Op::Create, 1, 1, "paid", FieldValue::Int(100), 1000),
        order(Op::Create, 2, 1, "pending", FieldValue::Int(250), 1010),
        order(Op::Create, 3, 2, "paid", FieldValue::Int(7), 1020),
    ];
    lua.apply(&before).await;
    first.apply(&before).await;
    let applier = first
        .exclusive_applier(std::time::Duration::from_secs(10))
        .await;
    let exclusive = first.handed_to(applier);
    let after = [
        vec![order(Op::Update, 3, 1, "pending", FieldValue::Int(8), 1030)],
        vec![(ORDERS, delete_order(2, 1040))],
        vec![order(Op::Update, 1, 3, "refunded", FieldValue::Null, 1050)],
    ];
    for (n, batch) in after.iter().enumerate() {
        assert_eq!(lua.apply(batch).await, exclusive.apply(batch).await);
        assert_eq!(lua.dump().await, exclusive.dump().await, "after batch {n}");
    }
    assert_eq!(
        stats(&exclusive).await,
        dedent(
            "
            P:customer:1:order_stats (hash)
              count = 1
              group_count:pending = 1
              group_sum:total_cents:pending = 8
              sum:total_cents = 8
            P:customer:3:order_stats (hash)
              count = 1
              group_count:refunded = 1
              group_sum:total_cents:refunded = 0
              sum:total_cents = 0
            "
        )
    );
    exclusive.applier.release().await.expect("release");
}
