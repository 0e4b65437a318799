//! The change semantics of ARCHITECTURE.md against a real Redis: every key and field the
//! sink leaves behind, after each kind of change (changes mirror the recorded Debezium
//! samples in /work/shared/reference/debezium/samples).

use crate::support::*;
use mapping::{Change, FieldValue, Op};

fn jane(lsn: i64) -> (usize, Change) {
    (
        CUSTOMERS,
        upsert(
            Op::Read,
            customer_row(1, "jane@example.com", "Jane Doe", T0),
            lsn,
        ),
    )
}

fn order(op: Op, id: i64, customer: Option<i64>, created_at: i64, lsn: i64) -> (usize, Change) {
    (ORDERS, upsert(op, order_row(id, customer, created_at), lsn))
}

#[tokio::test]
async fn snapshot_and_insert() {
    let f = Fixture::new().await;
    let out = f
        .apply(&[
            jane(22547280),
            order(Op::Create, 3, Some(1), 1795480593143715, 22547400),
        ])
        .await;
    assert_eq!((out.applied, out.skipped), (2, 0));
    assert_state(
        &f,
        "
        sink:freshness:P_customers (hash)
          applied_at_ms = <ms>
          applied_count = 1
          source_ts_ms = 1795480022547
        sink:freshness:P_orders (hash)
          applied_at_ms = <ms>
          applied_count = 1
          source_ts_ms = 1795480022547
        sink:index:P_customers:email (hash)
          P:customer:email:jane@example.com = 22547280
        sink:rows:P_customers (hash)
          P:customer:1 = 22547280
        sink:rows:P_orders (hash)
          P:order:3 = 22547400
        sink:search:P_customers:name_prefix (zset, newest first)
          jane doe\\08000000000000001\\0P:customer:1 @ 0
        sink:search:P_customers:name_prefix:members (hash)
          P:customer:1 = jane doe\\08000000000000001\\0P:customer:1
        P:customer:1 (hash)
          created_at = 2026-11-24T00:36:33.142906Z
          email = jane@example.com
          id = 1
          mrr_cents = 4900
          name = Jane Doe
          plan = pro
          updated_at = 2026-11-24T00:36:33.142906Z
        P:customer:1:orders (zset, newest first)
          3 @ 1795480593143715
        P:customer:email:jane@example.com = 1
        P:order:3 (hash)
          created_at = 2026-11-24T00:36:33.143715Z
          customer_id = 1
          id = 3
          items = [{\"qty\": 1, \"sku\": \"HOODIE\", \"price_cents\": 12000}]
          status = shipped
          total_cents = 12000
          updated_at = 2026-11-24T00:36:33.143715Z
        sink:offsets P.cdc.public.customers/0 = 0
        sink:offsets P.cdc.public.orders/0 = 0
    ",
    )
    .await;
    // applied_at_ms is Redis server time.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let mut conn = f.conn().await;
    let at: i64 = redis::cmd("HGET")
        .arg(format!(
            "sink:freshness:{}",
            f.config.mappings[CUSTOMERS].name
        ))
        .arg("applied_at_ms")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!((now - at).abs() < 5_000, "applied_at_ms {at}, now {now}");
}

#[tokio::test]
async fn update_with_null_before_moves_the_email_index() {
    let f = Fixture::new().await;
    f.apply(&[jane(22547280)]).await;
    // The recorded `u` under REPLICA IDENTITY DEFAULT: before = null, new email.
    let update = upsert(
        Op::Update,
        customer_row(1, "jane.doe@example.com", "Jane Doe", 1795480942775185),
        22550208,
    );
    assert!(update.before.is_none());
    let out = f.apply(&[(CUSTOMERS, update)]).await;
    assert_eq!((out.applied, out.skipped), (1, 0));
    assert_state(
        &f,
        "
        sink:freshness:P_customers (hash)
          applied_at_ms = <ms>
          applied_count = 2
          source_ts_ms = 1795480022550
        sink:index:P_customers:email (hash)
          P:customer:email:jane.doe@example.com = 22550208
          P:customer:email:jane@example.com = 22550208
        sink:rows:P_customers (hash)
          P:customer:1 = 22550208
        sink:search:P_customers:name_prefix (zset, newest first)
          jane doe\\08000000000000001\\0P:customer:1 @ 0
        sink:search:P_customers:name_prefix:members (hash)
          P:customer:1 = jane doe\\08000000000000001\\0P:customer:1
        P:customer:1 (hash)
          created_at = 2026-11-24T00:36:33.142906Z
          email = jane.doe@example.com
          id = 1
          mrr_cents = 4900
          name = Jane Doe
          plan = pro
          updated_at = 2026-11-24T00:42:22.775185Z
        P:customer:email:jane.doe@example.com = 1
        sink:offsets P.cdc.public.customers/0 = 1
    ",
    )
    .await;
}

#[tokio::test]
async fn order_moves_between_customers() {
    let f = Fixture::new().await;
    f.apply(&[
        order(Op::Read, 3, Some(1), T0, 100),
        order(Op::Read, 4, Some(1), T0 + 1, 101),
    ])
    .await;
    f.apply(&[order(Op::Update, 3, Some(2), T0, 200)]).await;
    assert_eq!(
        f.dump_data().await,
        dedent(
            "
            P:customer:1:orders (zset, newest first)
              4 @ 1795480593142907
            P:customer:2:orders (zset, newest first)
              3 @ 1795480593142906
            P:order:3 (hash)
              created_at = 2026-11-24T00:36:33.142906Z
              customer_id = 2
              id = 3
              items = [{\"qty\": 1, \"sku\": \"HOODIE\", \"price_cents\": 12000}]
              status = shipped
              total_cents = 12000
              updated_at = 2026-11-24T00:36:33.142906Z
            P:order:4 (hash)
              created_at = 2026-11-24T00:36:33.142907Z
              customer_id = 1
              id = 4
              items = [{\"qty\": 1, \"sku\": \"HOODIE\", \"price_cents\": 12000}]
              status = shipped
              total_cents = 12000
              updated_at = 2026-11-24T00:36:33.142907Z
        "
        )
    );
    // Moving the last order out removes the parent's sorted set; to no parent (NULL) too.
    f.apply(&[order(Op::Update, 4, None, T0 + 1, 300)]).await;
    f.apply(&[order(Op::Update, 3, Some(1), T0, 301)]).await;
    let data = f.dump_data().await;
    assert!(
        data.contains(
            "P:customer:1:orders (zset, newest first)\n  3 @ 1795480593142906\nP:order:3"
        ),
        "{data}"
    );
    assert!(!data.contains("P:customer:2:orders"), "{data}");
    assert!(!data.contains("customer_id = 1\n  id = 4"), "{data}");
}

#[tokio::test]
async fn delete_with_replica_identity_default_cleans_up_from_stored_state() {
    let f = Fixture::new().await;
    f.apply(&[jane(100), order(Op::Read, 2, Some(1), T0, 101)])
        .await;
    // `before` holds the key and Avro defaults (customer_id null, email ""): ignored.
    let out = f
        .apply(&[
            (ORDERS, delete_order(2, 200)),
            (CUSTOMERS, delete_customer(1, 201)),
        ])
        .await;
    assert_eq!((out.applied, out.skipped), (2, 0));
    assert_state(
        &f,
        "
        sink:freshness:P_customers (hash)
          applied_at_ms = <ms>
          applied_count = 2
          source_ts_ms = 1795480000000
        sink:freshness:P_orders (hash)
          applied_at_ms = <ms>
          applied_count = 2
          source_ts_ms = 1795480000000
        sink:index:P_customers:email (hash)
          P:customer:email:jane@example.com = 201
        sink:offsets P.cdc.public.customers/0 = 1
        sink:offsets P.cdc.public.orders/0 = 1
    ",
    )
    .await;
}

#[tokio::test]
async fn tombstones() {
    let f = Fixture::new().await;
    f.apply(&[(
        CUSTOMERS,
        upsert(
            Op::Create,
            customer_row(4, "carol@example.com", "Carol King", T0),
            100,
        ),
    )])
    .await;
    f.apply(&[(CUSTOMERS, delete_customer(4, 200))]).await;
    let after_delete = f.dump_with(true).await;
    // Tombstone after the delete: nothing to do, nothing recorded but the offset.
    let out = f.apply(&[(CUSTOMERS, tombstone(4))]).await;
    assert_eq!((out.applied, out.skipped), (0, 1));
    assert_eq!(
        f.dump_with(true).await,
        after_delete.replace("customers/0 = 1", "customers/0 = 2")
    );

    // Tombstone for a row that is still present (its `d` was lost): deleted, and the index
    // entry released at the row's last known position.
    f.apply(&[(
        CUSTOMERS,
        upsert(
            Op::Create,
            customer_row(5, "eve@example.com", "Eve", T0),
            300,
        ),
    )])
    .await;
    let out = f.apply(&[(CUSTOMERS, tombstone(5))]).await;
    assert_eq!((out.applied, out.skipped), (1, 0));
    assert_state(
        &f,
        "
        sink:freshness:P_customers (hash)
          applied_at_ms = <ms>
          applied_count = 4
          source_ts_ms = 1795480946657
        sink:index:P_customers:email (hash)
          P:customer:email:carol@example.com = 200
          P:customer:email:eve@example.com = 300
        sink:offsets P.cdc.public.customers/0 = 4
    ",
    )
    .await;
}

#[tokio::test]
async fn primary_key_change_is_delete_tombstone_create() {
    let f = Fixture::new().await;
    f.apply(&[order(Op::Create, 4, Some(1), T0, 100)]).await;
    // UPDATE orders SET id=100 WHERE id=4: d key 4, tombstone key 4, c key 100.
    let out = f
        .apply(&[
            (ORDERS, delete_order(4, 200)),
            (ORDERS, tombstone(4)),
            order(Op::Create, 100, Some(1), T0, 200),
        ])
        .await;
    assert_eq!((out.applied, out.skipped), (2, 1));
    assert_state(
        &f,
        "
        sink:freshness:P_orders (hash)
          applied_at_ms = <ms>
          applied_count = 3
          source_ts_ms = 1795480000000
        sink:rows:P_orders (hash)
          P:order:100 = 200
        P:customer:1:orders (zset, newest first)
          100 @ 1795480593142906
        P:order:100 (hash)
          created_at = 2026-11-24T00:36:33.142906Z
          customer_id = 1
          id = 100
          items = [{\"qty\": 1, \"sku\": \"HOODIE\", \"price_cents\": 12000}]
          status = shipped
          total_cents = 12000
          updated_at = 2026-11-24T00:36:33.142906Z
        sink:offsets P.cdc.public.orders/0 = 3
    ",
    )
    .await;
}

#[tokio::test]
async fn truncate_deletes_every_row_of_the_mapping_only() {
    let f = Fixture::new().await;
    f.apply(&[
        jane(100),
        (
            CUSTOMERS,
            upsert(Op::Read, customer_row(2, "bob@example.com", "Bob", T0), 101),
        ),
        order(Op::Read, 3, Some(1), T0, 102),
    ])
    .await;
    let out = f.apply(&[(CUSTOMERS, truncate(300))]).await;
    assert_eq!((out.applied, out.skipped), (1, 0));
    let state = f.dump().await;
    assert_eq!(
        f.dump_data().await,
        dedent(
            "
            P:customer:1:orders (zset, newest first)
              3 @ 1795480593142906
            P:order:3 (hash)
              created_at = 2026-11-24T00:36:33.142906Z
              customer_id = 1
              id = 3
              items = [{\"qty\": 1, \"sku\": \"HOODIE\", \"price_cents\": 12000}]
              status = shipped
              total_cents = 12000
              updated_at = 2026-11-24T00:36:33.142906Z
        "
        ),
        "{state}"
    );
    assert!(!state.contains("sink:rows:P_customers"), "{state}");
    // Released at the truncate's position, so an older claim arriving late cannot win.
    assert!(
        state.contains(
            "sink:index:P_customers:email (hash)
  P:customer:email:bob@example.com = 300
  P:customer:email:jane@example.com = 300
"
        ),
        "{state}"
    );
    assert!(state.contains("sink:rows:P_orders"), "{state}");
    // A second truncate has nothing to do.
    let out = f.apply(&[(CUSTOMERS, truncate(400))]).await;
    assert_eq!((out.applied, out.skipped), (0, 1));
}

/// A row written by a change after the truncate (arriving first, from another partition)
/// survives the truncate.
#[tokio::test]
async fn truncate_keeps_rows_written_after_it() {
    let f = Fixture::new().await;
    f.apply(&[
        jane(100),
        (
            CUSTOMERS,
            upsert(
                Op::Create,
                customer_row(2, "bob@example.com", "Bob", T0),
                350,
            ),
        ),
    ])
    .await;
    let out = f.apply(&[(CUSTOMERS, truncate(300))]).await;
    assert_eq!((out.applied, out.skipped), (1, 0));
    let data = f.dump_data().await;
    assert!(!data.contains("P:customer:1 "), "{data}");
    assert!(!data.contains("jane@example.com"), "{data}");
    assert!(data.contains("P:customer:2 (hash)"), "{data}");
    assert!(data.contains("P:customer:email:bob@example.com"), "{data}");
}

/// customer 1 changes x -> y at 200, customer 2 changes z -> x at 300; whatever the arrival
/// order (different partitions), x ends with customer 2 and no entry of the other is lost.
#[tokio::test]
async fn unique_email_moving_between_customers_in_both_arrival_orders() {
    let a_moves = || {
        (
            CUSTOMERS,
            upsert(Op::Update, customer_row(1, "y@example.com", "A", T0), 200),
        )
    };
    let b_takes = || {
        (
            CUSTOMERS,
            upsert(Op::Update, customer_row(2, "x@example.com", "B", T0), 300),
        )
    };
    let setup = || {
        [
            (
                CUSTOMERS,
                upsert(Op::Read, customer_row(1, "x@example.com", "A", T0), 100),
            ),
            (
                CUSTOMERS,
                upsert(Op::Read, customer_row(2, "z@example.com", "B", T0), 110),
            ),
        ]
    };
    let mut dumps = Vec::new();
    for order in [[a_moves(), b_takes()], [b_takes(), a_moves()]] {
        let f = Fixture::new().await;
        f.apply(&setup()).await;
        // One batch per change, as two partitions would deliver them.
        for change in order {
            f.apply(&[change]).await;
        }
        let data = f.dump().await;
        assert!(
            data.contains("P:customer:email:x@example.com = 2\n"),
            "{data}"
        );
        assert!(
            data.contains("P:customer:email:y@example.com = 1\n"),
            "{data}"
        );
        assert!(!data.contains("\nP:customer:email:z@example.com"), "{data}");
        dumps.push(data);
    }
    assert_eq!(dumps[0], dumps[1]);
    assert!(
        dumps[0].contains(
            "sink:index:P_customers:email (hash)
  P:customer:email:x@example.com = 300
  P:customer:email:y@example.com = 200
  P:customer:email:z@example.com = 300
"
        ),
        "{}",
        dumps[0]
    );
}

/// A late change of the previous owner (older position) must not release the entry a newer
/// owner holds, and a late older claim must not take an entry released later.
#[tokio::test]
async fn late_older_changes_do_not_steal_index_entries() {
    let f = Fixture::new().await;
    f.apply(&[(
        CUSTOMERS,
        upsert(Op::Read, customer_row(1, "x@example.com", "A", T0), 100),
    )])
    .await;
    // Customer 1 leaves x at 200 (applied), customer 3 claimed x at 150 but arrives late:
    // by the source, 3 released it again before 200... its claim is older than the release.
    f.apply(&[(
        CUSTOMERS,
        upsert(Op::Update, customer_row(1, "y@example.com", "A", T0), 200),
    )])
    .await;
    f.apply(&[(
        CUSTOMERS,
        upsert(Op::Create, customer_row(3, "x@example.com", "C", T0), 150),
    )])
    .await;
    let data = f.dump().await;
    assert!(!data.contains("\nP:customer:email:x@example.com"), "{data}");
    assert!(
        data.contains("P:customer:email:y@example.com = 1\n"),
        "{data}"
    );
}

#[tokio::test]
async fn toast_keeps_the_stored_value_and_null_removes_the_field() {
    let f = Fixture::new().await;
    f.apply(&[order(Op::Create, 3, Some(1), T0, 100)]).await;
    let mut row = order_row(3, Some(1), T0);
    for (name, value) in &mut row {
        match name.as_str() {
            "items" => *value = FieldValue::Unavailable,
            "status" => *value = FieldValue::Null,
            "total_cents" => *value = FieldValue::Int(99),
            _ => {}
        }
    }
    f.apply(&[(ORDERS, upsert(Op::Update, row, 200))]).await;
    assert_eq!(
        f.dump_data().await,
        dedent(
            "
            P:customer:1:orders (zset, newest first)
              3 @ 1795480593142906
            P:order:3 (hash)
              created_at = 2026-11-24T00:36:33.142906Z
              customer_id = 1
              id = 3
              items = [{\"qty\": 1, \"sku\": \"HOODIE\", \"price_cents\": 12000}]
              total_cents = 99
              updated_at = 2026-11-24T00:36:33.142906Z
        "
        )
    );
}

#[tokio::test]
async fn relation_is_newest_first_by_created_at() {
    let f = Fixture::new().await;
    f.apply(&[
        order(Op::Read, 3, Some(1), T0, 100),
        order(Op::Read, 5, Some(1), T0 + 2_000_000, 101),
        order(Op::Read, 4, Some(1), T0 + 1_000_000, 102),
        order(Op::Read, 6, None, T0 + 3_000_000, 103),
    ])
    .await;
    // An update whose order_by value was not sent keeps the member's score.
    let mut row = order_row(3, Some(1), T0);
    for (name, value) in &mut row {
        if name == "created_at" {
            *value = FieldValue::Unavailable;
        }
    }
    f.apply(&[(ORDERS, upsert(Op::Update, row, 200))]).await;
    let data = f.dump_data().await;
    assert!(
        data.starts_with(
            "P:customer:1:orders (zset, newest first)
  5 @ 1795480595142906
  4 @ 1795480594142906
  3 @ 1795480593142906
P:order:3 (hash)
"
        ),
        "{data}"
    );
}

#[tokio::test]
async fn older_and_equal_positions_are_no_ops() {
    let f = Fixture::new().await;
    f.apply(&[(
        CUSTOMERS,
        upsert(
            Op::Update,
            customer_row(1, "new@example.com", "New", T0),
            200,
        ),
    )])
    .await;
    let before = f.dump_with(true).await;
    let out = f
        .apply(&[
            (
                CUSTOMERS,
                upsert(
                    Op::Update,
                    customer_row(1, "old@example.com", "Old", T0),
                    150,
                ),
            ),
            (
                CUSTOMERS,
                upsert(
                    Op::Update,
                    customer_row(1, "new@example.com", "New", T0),
                    200,
                ),
            ),
            (CUSTOMERS, delete_customer(1, 199)),
        ])
        .await;
    assert_eq!((out.applied, out.skipped), (0, 3));
    assert_eq!(
        f.dump_with(true).await,
        before.replace("customers/0 = 0", "customers/0 = 3")
    );
}

#[tokio::test]
async fn positions_compare_exactly_beyond_double_precision() {
    let f = Fixture::new().await;
    let big = 9_007_199_254_740_993; // 2^53 + 1: a double cannot tell it from 2^53
    f.apply(&[(
        CUSTOMERS,
        upsert(Op::Update, customer_row(1, "a@example.com", "A", T0), big),
    )])
    .await;
    let out = f
        .apply(&[(
            CUSTOMERS,
            upsert(
                Op::Update,
                customer_row(1, "b@example.com", "B", T0),
                big - 1,
            ),
        )])
        .await;
    assert_eq!((out.applied, out.skipped), (0, 1));
    let out = f
        .apply(&[(
            CUSTOMERS,
            upsert(
                Op::Update,
                customer_row(1, "c@example.com", "C", T0),
                big + 1,
            ),
        )])
        .await;
    assert_eq!((out.applied, out.skipped), (1, 0));
    assert!(f.dump().await.contains("P:customer:1 = 9007199254740994\n"));
}

#[tokio::test]
async fn ttl_expires_row_hashes_only() {
    let f = Fixture::with_ttl(Some(3600)).await;
    f.apply(&[jane(100)]).await;
    let data = f.dump().await;
    assert!(data.contains("P:customer:1 (expires) (hash)\n"), "{data}");
    assert!(
        data.contains("P:customer:email:jane@example.com = 1\n"),
        "{data}"
    );
}
