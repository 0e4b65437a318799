//! Several changes per script call (`ChangeScript::chunks`) against a real Redis: any chunk size
//! leaves exactly the state of one script per change, a failing change in the middle of a
//! chunk leaves nothing of itself while the others are applied, and it is reported with its
//! own offset and batch position.

use crate::support::*;
use mapping::{Change, FieldValue, Op};
use sink::apply::{Applier, ApplyError, ChangeScript, ScriptWriter, DEFAULT_CHUNK};

/// The shared writer of `f`'s mappings, `size` changes per script call.
fn chunked(f: &Fixture, size: usize) -> Applier {
    Applier::Script(ScriptWriter::new(f.pool.clone(), &f.config, size))
}

/// Every kind of change, skipped ones included (replays, tombstones after deletes).
fn history() -> Vec<(usize, Change)> {
    let mut toast = order_row(3, Some(2), T0 + 3);
    toast[4].1 = FieldValue::Unavailable;
    toast[2].1 = FieldValue::Null;
    vec![
        customer_upsert(Op::Read, 1, "a@example.com", 100),
        customer_upsert(Op::Read, 2, "b@example.com", 101),
        order_upsert(Op::Read, 3, Some(1), 102),
        order_upsert(Op::Create, 4, Some(1), 110),
        customer_upsert(Op::Update, 1, "a2@example.com", 120),
        customer_upsert(Op::Update, 1, "a1@example.com", 115), // older: skipped
        order_upsert(Op::Update, 3, Some(2), 130),
        (ORDERS, upsert(Op::Update, toast, 140)),
        customer_upsert(Op::Update, 2, "a@example.com", 150),
        (ORDERS, delete_order(4, 200)),
        (ORDERS, tombstone(4)), // skipped
        (CUSTOMERS, delete_customer(1, 220)),
        (CUSTOMERS, tombstone(1)), // skipped
        customer_upsert(Op::Create, 7, "a2@example.com", 230),
        (ORDERS, truncate(240)),
        order_upsert(Op::Create, 9, Some(7), 250),
    ]
}

#[tokio::test]
async fn every_chunk_size_leaves_the_state_of_one_script_per_change() {
    let mut reference: Option<(String, (usize, usize))> = None;
    for size in [1, 2, 3, 5, DEFAULT_CHUNK] {
        let f = Fixture::new().await;
        let applier = chunked(&f, size);
        let batch = f.plan_all(&history());
        let chunks = ChangeScript::new(&f.config.mappings, size).chunks(&batch);
        assert_eq!(
            chunks.len(),
            batch.len().div_ceil(size),
            "chunk size {size}"
        );
        assert!(chunks.iter().all(|c| c.len() <= size));
        let out = applier.apply_batch(&batch).await.expect("apply");
        let state = (f.dump().await, (out.applied, out.skipped));
        assert_eq!(state.1, (13, 3), "chunk size {size}");
        match &reference {
            None => reference = Some(state),
            Some(r) => assert!(
                r == &state,
                "chunk size {size} differs from one change per call\n--- one\n{}--- {size}\n{}",
                r.0,
                state.0
            ),
        }
        // A replay in chunks of another size changes nothing but the counters of re-applied
        // changes (rows deleted later are re-created and deleted again).
        let replay = chunked(&f, size + 1);
        replay.apply_batch(&batch).await.expect("replay");
        let after = f.dump().await;
        let strip = |s: &str| -> String {
            s.lines()
                .filter(|l| !l.starts_with("  applied_count = "))
                .map(|l| format!("{l}\n"))
                .collect()
        };
        assert_eq!(
            strip(&after),
            strip(&reference.as_ref().unwrap().0),
            "replay, chunk size {}",
            size + 1
        );
    }
}

#[tokio::test]
async fn a_failing_change_in_the_middle_of_a_chunk_is_located_and_leaves_nothing() {
    let f = Fixture::new().await;
    let applier = chunked(&f, 3);
    let mut conn = f.conn().await;
    let tag = &f.tag;
    // The row hash of customer 6 holds a string: its upsert fails with WRONGTYPE.
    redis::cmd("SET")
        .arg(format!("{tag}:customer:6"))
        .arg("not a hash")
        .query_async::<()>(&mut conn)
        .await
        .unwrap();
    // Chunks: [1, 2, 3] [4, 6(bad), 5] [7]; customer 6 is change 4 (offset 4) of the batch.
    let batch = f.plan_all(&[
        customer_upsert(Op::Create, 1, "c1@example.com", 100),
        customer_upsert(Op::Create, 2, "c2@example.com", 101),
        customer_upsert(Op::Create, 3, "c3@example.com", 102),
        customer_upsert(Op::Create, 4, "c4@example.com", 103),
        customer_upsert(Op::Create, 6, "c6@example.com", 104),
        customer_upsert(Op::Create, 5, "c5@example.com", 105),
        customer_upsert(Op::Create, 7, "c7@example.com", 106),
    ]);
    assert_eq!(
        ChangeScript::new(&f.config.mappings, 3)
            .chunks(&batch)
            .iter()
            .map(|c| c.len())
            .collect::<Vec<_>>(),
        [3, 3, 1]
    );
    let err = applier
        .apply_batch(&batch)
        .await
        .expect_err("customer 6 must fail");
    assert!(!err.is_retriable(), "{err}");
    assert_eq!(err.location(), Some((&*f.topics[CUSTOMERS], 0, 4)));
    let ApplyError::Change {
        position, source, ..
    } = &err
    else {
        panic!("expected ApplyError::Change, got {err:?}");
    };
    assert_eq!((*position, source.code()), (4, "WRONGTYPE"));

    let state = f.dump().await;
    for id in [1, 2, 3, 4, 5, 7] {
        assert!(
            state.contains(&format!("P:customer:{id} (hash)")),
            "customer {id}\n{state}"
        );
        assert!(
            state.contains(&format!("P:customer:email:c{id}@example.com = {id}\n")),
            "{state}"
        );
    }
    // Nothing of customer 6: no index entry, no row position, not counted.
    assert!(state.contains("P:customer:6 = not a hash\n"), "{state}");
    assert!(!state.contains("c6@example.com"), "{state}");
    assert!(!state.contains("P:customer:6 = 10"), "{state}");
    assert!(state.contains("  applied_count = 6\n"), "{state}");
    // Offsets: the highest offset of a change that did not fail.
    assert!(
        state.contains("sink:offsets P.cdc.public.customers/0 = 6\n"),
        "{state}"
    );

    // The consumer dead-letters the culprit and sends the rest again: exact results.
    let rest: Vec<_> = batch.iter().filter(|c| c.offset != 4).cloned().collect();
    let out = applier.apply_batch(&rest).await.expect("rest");
    assert_eq!((out.applied, out.skipped), (0, 6));
    assert_eq!(f.dump().await, state);
}

#[tokio::test]
async fn a_failing_last_change_does_not_record_its_offset() {
    let f = Fixture::new().await;
    let mut conn = f.conn().await;
    redis::cmd("SET")
        .arg(format!("{}:customer:2", f.tag))
        .arg("x")
        .query_async::<()>(&mut conn)
        .await
        .unwrap();
    let batch = f.plan_all(&[
        customer_upsert(Op::Create, 1, "c1@example.com", 100),
        customer_upsert(Op::Create, 2, "c2@example.com", 101),
    ]);
    let err = f
        .applier
        .apply_batch(&batch)
        .await
        .expect_err("customer 2 must fail");
    assert_eq!(err.location(), Some((&*f.topics[CUSTOMERS], 0, 1)));
    let state = f.dump().await;
    assert!(
        state.contains("sink:offsets P.cdc.public.customers/0 = 0\n"),
        "{state}"
    );
}

/// A bookkeeping key of the wrong type fails the whole call: reported at the chunk's first
/// change, not retriable.
#[tokio::test]
async fn an_error_of_the_whole_call_is_reported_at_the_chunk_start() {
    let f = Fixture::new().await;
    let applier = chunked(&f, 2);
    let mut conn = f.conn().await;
    redis::cmd("SET")
        .arg(format!("sink:freshness:{}", f.config.mappings[ORDERS].name))
        .arg("x")
        .query_async::<()>(&mut conn)
        .await
        .unwrap();
    let batch = f.plan_all(&[
        customer_upsert(Op::Create, 1, "c1@example.com", 100),
        customer_upsert(Op::Create, 2, "c2@example.com", 101),
        customer_upsert(Op::Create, 3, "c3@example.com", 102),
        order_upsert(Op::Create, 4, Some(3), 103),
    ]);
    let err = applier
        .apply_batch(&batch)
        .await
        .expect_err("freshness of orders");
    assert!(!err.is_retriable(), "{err}");
    let ApplyError::Change {
        position,
        offset,
        source,
        ..
    } = &err
    else {
        panic!("expected ApplyError::Change, got {err:?}");
    };
    assert_eq!((*position, *offset, source.code()), (2, 2, "WRONGTYPE"));
}

/// Chunks end early when their arguments would pass 16,384 (PostgreSQL's 1,600 columns).
#[tokio::test]
async fn wide_rows_make_shorter_chunks() {
    let f = Fixture::new().await;
    let changes: Vec<(usize, Change)> = (0..6)
        .map(|i| {
            let mut row = customer_row(i, &format!("w{i}@example.com"), "Wide", T0);
            for c in 0..1590 {
                row.push((format!("c{c}"), FieldValue::Int(c)));
            }
            (CUSTOMERS, upsert(Op::Create, row, 100 + i))
        })
        .collect();
    let batch = f.plan_all(&changes);
    let sizes: Vec<usize> = ChangeScript::new(&f.config.mappings, DEFAULT_CHUNK)
        .chunks(&batch)
        .iter()
        .map(|c| c.len())
        .collect();
    assert_eq!(sizes, [5, 1]);
    let out = f.applier.apply_batch(&batch).await.expect("apply");
    assert_eq!((out.applied, out.skipped), (6, 0));
    let mut conn = f.conn().await;
    let n: i64 = redis::cmd("HLEN")
        .arg(format!("{}:customer:5", f.tag))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(n, 1597);
}
