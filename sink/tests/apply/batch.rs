//! Batches against a real Redis: replays are harmless, a failing change leaves nothing
//! half-applied, the script is reloaded after `SCRIPT FLUSH`, errors are classified and
//! located, and the bookkeeping written from Rust (`sink:types`, `caught_up_at_ms`).

use std::time::Instant;

use crate::support::*;
use mapping::{Change, ColumnType, FieldValue, Op};
use sink::apply::{Applier, ApplyError, ChangeScript, PlannedChange, DEFAULT_CHUNK};

/// A stream without deletes: snapshot, inserts, email change, order move, TOAST, NULL.
fn history_without_deletes() -> Vec<(usize, Change)> {
    let mut toast = order_row(3, Some(2), T0 + 3);
    toast[4].1 = FieldValue::Unavailable; // items not sent
    toast[2].1 = FieldValue::Null; // status NULL
    vec![
        customer_upsert(Op::Read, 1, "a@example.com", 100),
        customer_upsert(Op::Read, 2, "b@example.com", 101),
        order_upsert(Op::Read, 3, Some(1), 102),
        order_upsert(Op::Create, 4, Some(1), 110),
        customer_upsert(Op::Update, 1, "a2@example.com", 120),
        order_upsert(Op::Update, 3, Some(2), 130),
        (ORDERS, upsert(Op::Update, toast, 140)),
        customer_upsert(Op::Update, 2, "a@example.com", 150),
    ]
}

/// The same plus deletes, tombstones and a primary-key change.
fn history_with_deletes() -> Vec<(usize, Change)> {
    let mut h = history_without_deletes();
    h.extend([
        (ORDERS, delete_order(4, 200)),
        (ORDERS, tombstone(4)),
        (ORDERS, delete_order(3, 210)),
        (ORDERS, tombstone(3)),
        order_upsert(Op::Create, 300, Some(2), 210),
        (CUSTOMERS, delete_customer(1, 220)),
        (CUSTOMERS, tombstone(1)),
        customer_upsert(Op::Create, 7, "a2@example.com", 230),
    ]);
    h
}

/// The dump without the fields a re-applied (not skipped) change legitimately bumps.
fn without_counters(dump: &str) -> String {
    dump.lines()
        .filter(|l| !l.starts_with("  applied_at_ms = ") && !l.starts_with("  applied_count = "))
        .map(|l| format!("{l}\n"))
        .collect()
}

#[tokio::test]
async fn replaying_any_suffix_leaves_identical_state() {
    let f = Fixture::new().await;
    let batch = f.plan_all(&history_without_deletes());
    f.applier.apply_batch(&batch).await.expect("first delivery");
    let reference = f.dump_with(true).await;
    for start in 0..batch.len() {
        // As one batch, then change by change.
        let out = f
            .applier
            .apply_batch(&batch[start..])
            .await
            .expect("replay");
        assert_eq!((out.applied, out.skipped), (0, batch.len() - start));
        for change in &batch[start..] {
            f.applier
                .apply_batch(std::slice::from_ref(change))
                .await
                .expect("replay");
        }
        assert_eq!(
            f.dump_with(true).await,
            reference,
            "replay from change {start}"
        );
    }
}

/// With deletes, a replayed upsert of a row deleted later re-creates it until the replayed
/// delete removes it again (ARCHITECTURE.md: `d` removes the row from `sink:rows`, so
/// nothing remembers the delete's position); the end state is the same but for the
/// applied counters.
#[tokio::test]
async fn replaying_any_suffix_with_deletes_converges() {
    let f = Fixture::new().await;
    let batch = f.plan_all(&history_with_deletes());
    f.applier.apply_batch(&batch).await.expect("first delivery");
    let reference = f.dump_with(true).await;
    assert_eq!(
        f.dump_data().await,
        dedent(
            "
            P:customer:2 (hash)
              created_at = 2026-11-24T00:36:33.142906Z
              email = a@example.com
              id = 2
              mrr_cents = 4900
              name = Name
              plan = pro
              updated_at = 2026-11-24T00:36:33.142906Z
            P:customer:2:orders (zset, newest first)
              300 @ 1795480593143206
            P:customer:7 (hash)
              created_at = 2026-11-24T00:36:33.142906Z
              email = a2@example.com
              id = 7
              mrr_cents = 4900
              name = Name
              plan = pro
              updated_at = 2026-11-24T00:36:33.142906Z
            P:customer:email:a2@example.com = 7
            P:customer:email:a@example.com = 2
            P:order:300 (hash)
              created_at = 2026-11-24T00:36:33.143206Z
              customer_id = 2
              id = 300
              items = [{\"qty\": 1, \"sku\": \"HOODIE\", \"price_cents\": 12000}]
              status = shipped
              total_cents = 12000
              updated_at = 2026-11-24T00:36:33.143206Z
        "
        )
    );
    for start in 0..batch.len() {
        f.applier
            .apply_batch(&batch[start..])
            .await
            .expect("replay");
        assert_eq!(
            without_counters(&f.dump_with(true).await),
            without_counters(&reference),
            "replay from change {start}"
        );
    }
    // A replay that starts after the last delete of every row it touches is exact.
    let last = batch.len() - 1;
    f.applier.apply_batch(&batch[last..]).await.expect("replay");
    let now = f.dump_with(true).await;
    f.applier.apply_batch(&batch[last..]).await.expect("replay");
    assert_eq!(f.dump_with(true).await, now);
}

#[tokio::test]
async fn a_failing_change_leaves_nothing_behind_and_is_located() {
    let f = Fixture::new().await;
    let mut conn = f.conn().await;
    let tag = &f.tag;
    // Keys of the wrong type where the script will look: an index entry, a row hash and a
    // relation parent.
    redis::cmd("HSET")
        .arg(format!("{tag}:customer:email:bad@example.com"))
        .arg("f")
        .arg("v")
        .query_async::<()>(&mut conn)
        .await
        .unwrap();
    redis::cmd("SET")
        .arg(format!("{tag}:customer:6"))
        .arg("not a hash")
        .query_async::<()>(&mut conn)
        .await
        .unwrap();
    redis::cmd("SET")
        .arg(format!("{tag}:customer:9:orders"))
        .arg("not a zset")
        .query_async::<()>(&mut conn)
        .await
        .unwrap();
    let before_bad = f.dump_with(true).await;

    let batch = f.plan_all(&[
        customer_upsert(Op::Create, 1, "ok1@example.com", 100),
        customer_upsert(Op::Create, 5, "bad@example.com", 101),
        customer_upsert(Op::Create, 6, "six@example.com", 102),
        order_upsert(Op::Create, 8, Some(9), 103),
        customer_upsert(Op::Create, 2, "ok2@example.com", 104),
    ]);
    let err = f.applier.apply_batch(&batch).await.expect_err("must fail");
    assert!(!err.is_retriable(), "{err}");
    assert_eq!(err.location(), Some((&*f.topics[CUSTOMERS], 0, 1)));
    let ApplyError::Change {
        position, source, ..
    } = &err
    else {
        panic!("expected ApplyError::Change, got {err:?}");
    };
    assert_eq!(*position, 1);
    assert_eq!(source.code(), "WRONGTYPE");
    assert_eq!(
        err.to_string(),
        format!("change at {tag}.cdc.public.customers/0 offset 1 (batch position 1)")
    );

    // The other changes were applied; the three failing ones left nothing.
    let state = f.dump().await;
    for line in before_bad.lines() {
        assert!(state.contains(line), "lost {line}\n{state}");
    }
    for absent in [
        "P:customer:5",
        "P:customer:6 (hash)",
        "P:customer:email:six@example.com",
        "P:order:8",
    ] {
        assert!(!state.contains(absent), "{absent} present\n{state}");
    }
    assert!(state.contains("P:customer:6 = not a hash\n"), "{state}");
    assert!(state.contains("P:customer:1 (hash)"), "{state}");
    assert!(state.contains("P:customer:2 (hash)"), "{state}");
    assert!(state.contains("  applied_count = 2\n"), "{state}");
    assert!(!state.contains("sink:freshness:P_orders"), "{state}");

    // Retrying the whole batch once the bad keys are gone applies the rest.
    redis::cmd("DEL")
        .arg(format!("{tag}:customer:email:bad@example.com"))
        .arg(format!("{tag}:customer:6"))
        .arg(format!("{tag}:customer:9:orders"))
        .query_async::<()>(&mut conn)
        .await
        .unwrap();
    let out = f.applier.apply_batch(&batch).await.expect("retry");
    assert_eq!((out.applied, out.skipped), (3, 2));
}

#[tokio::test]
async fn script_is_reloaded_after_script_flush() {
    let f = Fixture::new().await;
    f.apply(&[customer_upsert(Op::Read, 1, "a@example.com", 100)])
        .await;
    let mut conn = f.conn().await;
    redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query_async::<()>(&mut conn)
        .await
        .unwrap();
    let exists: Vec<bool> = redis::cmd("SCRIPT")
        .arg("EXISTS")
        .arg(ChangeScript::new(&f.config.mappings, DEFAULT_CHUNK).sha())
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(exists, [false]);
    let out = f
        .apply(&[customer_upsert(Op::Update, 1, "b@example.com", 200)])
        .await;
    assert_eq!((out.applied, out.skipped), (1, 0));
    assert!(f
        .dump()
        .await
        .contains("P:customer:email:b@example.com = 1\n"));
}

#[tokio::test]
async fn invalid_changes_and_unreachable_redis_are_classified() {
    let f = Fixture::new().await;
    let mut change = f.planned(CUSTOMERS, &tombstone(1));
    change.mapping = 7;
    let err = f
        .applier
        .apply_batch(&[change])
        .await
        .expect_err("bad mapping");
    assert!(!err.is_retriable());
    assert_eq!(err.location().map(|(_, p, o)| (p, o)), Some((0, 0)));

    let pool = deadpool_redis::Config::from_url("redis://127.0.0.1:1")
        .create_pool(Some(deadpool_redis::Runtime::Tokio1))
        .unwrap();
    let down = Applier::new(pool, &f.config);
    let err = down
        .apply_batch(&[f.planned(CUSTOMERS, &tombstone(1))])
        .await
        .expect_err("redis down");
    assert!(err.is_retriable(), "{err:?}");
    assert_eq!(err.location(), None);
}

#[tokio::test]
async fn column_types_and_caught_up() {
    let f = Fixture::new().await;
    f.applier
        .record_column_types(
            CUSTOMERS,
            &[
                ("id".into(), ColumnType::Int),
                ("email".into(), ColumnType::String),
                ("created_at".into(), ColumnType::Timestamp),
                ("mrr_cents".into(), ColumnType::Decimal),
            ],
        )
        .await
        .expect("record types");
    let t0 = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    f.applier
        .record_caught_up(&[CUSTOMERS, ORDERS])
        .await
        .expect("caught up");
    let state = f.dump().await;
    assert!(
        state.contains(
            "sink:types:P_customers (hash)
  created_at = timestamp
  email = string
  id = int
  mrr_cents = decimal
"
        ),
        "{state}"
    );
    let mut conn = f.conn().await;
    for m in &f.config.mappings {
        let at: i64 = redis::cmd("HGET")
            .arg(format!("sink:freshness:{}", m.name))
            .arg("caught_up_at_ms")
            .query_async(&mut conn)
            .await
            .expect("caught_up_at_ms");
        assert!((at - t0).abs() < 5_000, "caught_up_at_ms {at} vs now {t0}");
    }
    assert!(f.applier.record_column_types(9, &[]).await.is_err());
}

/// Many changes in one pipeline; prints the rate (not asserted: shared machine).
#[tokio::test]
async fn large_batch_in_one_pipeline() {
    let f = Fixture::new().await;
    let changes: Vec<(usize, Change)> = (0..2000)
        .map(|i| {
            if i % 2 == 0 {
                customer_upsert(Op::Read, i, &format!("c{i}@example.com"), 1000 + i)
            } else {
                order_upsert(Op::Read, i, Some(i - 1), 1000 + i)
            }
        })
        .collect();
    let batch: Vec<PlannedChange> = f.plan_all(&changes);
    let started = Instant::now();
    let out = f.applier.apply_batch(&batch).await.expect("apply");
    let elapsed = started.elapsed();
    assert_eq!((out.applied, out.skipped), (2000, 0));
    let replay_started = Instant::now();
    let out = f.applier.apply_batch(&batch).await.expect("replay");
    let replay = replay_started.elapsed();
    assert_eq!((out.applied, out.skipped), (0, 2000));
    eprintln!(
        "2000 changes: {:?} ({:.0}/s), replay {:?} ({:.0}/s)",
        elapsed,
        2000.0 / elapsed.as_secs_f64(),
        replay,
        2000.0 / replay.as_secs_f64()
    );
}

/// A private `redis-server` with `maxmemory 1`: every write is refused with OOM, which must
/// be reported as retriable (not dead-lettered) and leave nothing behind.
#[tokio::test]
async fn out_of_memory_is_retriable_and_writes_nothing() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let mut server = std::process::Command::new("redis-server")
        .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
        .args(["--save", "", "--appendonly", "no", "--maxmemory", "1"])
        .args(["--maxmemory-policy", "noeviction"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("redis-server must be installed (tests/stack/redis.sh installs it)");
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let url = format!("redis://127.0.0.1:{port}");
    let pool = deadpool_redis::Config::from_url(url.as_str())
        .create_pool(Some(deadpool_redis::Runtime::Tokio1))
        .unwrap();
    let mut ready = false;
    for _ in 0..100 {
        if let Ok(mut c) = pool.get().await {
            if redis::cmd("PING")
                .query_async::<String>(&mut c)
                .await
                .is_ok()
            {
                ready = true;
                break;
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    if !ready {
        let _ = server.kill();
        panic!("private redis-server on {url} did not answer");
    }
    let _guard = Kill(server);

    let f = Fixture::new().await; // for plans and config only
    let applier = Applier::new(pool.clone(), &f.config);
    let batch = f.plan_all(&[customer_upsert(Op::Create, 1, "a@example.com", 100)]);
    let err = applier.apply_batch(&batch).await.expect_err("OOM");
    assert!(err.is_retriable(), "{err:?}");
    let ApplyError::Change { source, .. } = &err else {
        panic!("expected ApplyError::Change, got {err:?}");
    };
    assert_eq!(source.code(), "OOM");
    let mut conn = pool.get().await.unwrap();
    let size: i64 = redis::cmd("DBSIZE").query_async(&mut conn).await.unwrap();
    assert_eq!(size, 0);
}
