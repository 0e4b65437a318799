//! Aggregates (`aggregates:`) kept by the change script against a real Redis: exact after
//! amount, status and parent changes, deletes under REPLICA IDENTITY DEFAULT, replays,
//! decimals beyond a double's precision and truncate; an emptied parent loses its hash.

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
    let f = Fixture::new().await.with_order_stats();
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
    let f = Fixture::new().await.with_order_stats();
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

#[tokio::test]
async fn owned_writers_leave_aggregates_to_the_script() {
    let f = Fixture::new().await.with_order_stats();
    // The rebuild's applier falls back to the change script, which keeps the aggregates.
    let rebuild = sink::apply::Applier::owning(f.pool.clone(), &f.config);
    assert!(!rebuild.is_owning());
    let f = f.handed_to(rebuild);
    f.apply(&[order(Op::Create, 1, 9, "paid", FieldValue::Int(5), 1000)])
        .await;
    assert!(stats(&f).await.contains("sum:total_cents = 5"));
    let refused = sink::apply::Applier::exclusive(
        f.pool.clone(),
        &f.config,
        &sink::apply::WriterId::new(),
        std::time::Duration::from_secs(10),
        sink::apply::DEFAULT_MAX_WRITER_MEMORY,
        &tokio_util::sync::CancellationToken::new(),
    )
    .await;
    let message = refused.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(
        message.contains("the exclusive writer does not maintain aggregates"),
        "{message}"
    );
}
