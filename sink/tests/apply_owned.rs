//! The owning applier (`Applier::owning`, which `sink rebuild` uses for its staging
//! database) leaves exactly the state the change script leaves: the same changes, batched
//! the same way, through both, and every key compared after every batch (values,
//! bookkeeping, offsets and freshness; only `applied_at_ms`, a clock reading, is masked).

mod apply_support;

use apply_support::*;
use mapping::{Change, FieldValue, Op};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Applies `batches` to both fixtures, comparing outcomes and dumps after each batch.
async fn same_state(batches: &[Vec<(usize, Change)>]) {
    let lua = Fixture::new().await;
    let owned = Fixture::owning().await;
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

/// The cases of `apply_semantics.rs` in one history: snapshot, insert, email change with a
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
}

/// A consistent source history (unique emails at every position) of customers and orders,
/// each row's changes in order, rows spread over partitions delivered in a random
/// interleaving, in random batches, with redelivered suffixes.
fn random_history(seed: u64) -> Vec<Vec<(usize, Change)>> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut lsn = 1_000;
    let mut email_of: std::collections::BTreeMap<i64, String> = Default::default();
    let mut orders: std::collections::BTreeMap<i64, Option<i64>> = Default::default();
    // Per partition, in source order.
    let mut partitions: Vec<Vec<(usize, Change)>> = vec![Vec::new(); 3];
    for _ in 0..400 {
        lsn += 10;
        let roll = rng.random_range(0..100);
        if roll < 45 {
            let id = rng.random_range(1..12_i64);
            let taken: Vec<&String> = email_of.values().collect();
            let free: Vec<String> = (0..14)
                .map(|e| format!("e{e}@example.com"))
                .filter(|e| !taken.contains(&e))
                .collect();
            let email = free[rng.random_range(0..free.len())].clone();
            let op = if email_of.contains_key(&id) {
                Op::Update
            } else {
                Op::Create
            };
            email_of.insert(id, email.clone());
            partitions[(id % 3) as usize].push((
                CUSTOMERS,
                upsert(op, customer_row(id, &email, "N", T0 + lsn), lsn),
            ));
        } else if roll < 55 {
            let id = rng.random_range(1..12_i64);
            if email_of.remove(&id).is_some() {
                let p = &mut partitions[(id % 3) as usize];
                p.push((CUSTOMERS, delete_customer(id, lsn)));
                p.push((CUSTOMERS, tombstone(id)));
            }
        } else if roll < 85 {
            let id = rng.random_range(1..20_i64);
            let customer = if rng.random_range(0..8) == 0 {
                None
            } else {
                Some(rng.random_range(1..12_i64))
            };
            let op = if orders.contains_key(&id) {
                Op::Update
            } else {
                Op::Create
            };
            orders.insert(id, customer);
            let mut row = order_row(id, customer, T0 + rng.random_range(0..5) * 1_000_000);
            if op == Op::Update && rng.random_range(0..4) == 0 {
                for (name, value) in &mut row {
                    if name == "items" || name == "created_at" {
                        *value = FieldValue::Unavailable;
                    }
                }
            }
            partitions[(id % 3) as usize].push((ORDERS, upsert(op, row, lsn)));
        } else if roll < 97 {
            let id = rng.random_range(1..20_i64);
            if orders.remove(&id).is_some() {
                let p = &mut partitions[(id % 3) as usize];
                p.push((ORDERS, delete_order(id, lsn)));
                p.push((ORDERS, tombstone(id)));
            }
        } else {
            orders.clear();
            partitions[0].push((ORDERS, truncate(lsn)));
        }
    }
    // Deliver: pick a partition, take a batch of its next changes; sometimes redeliver.
    let mut next = vec![0_usize; partitions.len()];
    let mut batches = Vec::new();
    while next.iter().zip(&partitions).any(|(n, p)| *n < p.len()) {
        let p = rng.random_range(0..partitions.len());
        if next[p] >= partitions[p].len() {
            continue;
        }
        if next[p] > 0 && rng.random_range(0..10) == 0 {
            next[p] -= rng.random_range(1..=next[p].min(8));
        }
        let end = (next[p] + rng.random_range(1..12)).min(partitions[p].len());
        batches.push(partitions[p][next[p]..end].to_vec());
        next[p] = end;
    }
    batches
}

#[tokio::test]
async fn random_interleavings_leave_the_same_state() {
    for seed in 1..=6 {
        same_state(&random_history(seed)).await;
    }
}

/// A private `redis-server` on a free port, killed on drop.
struct PrivateRedis {
    child: std::process::Child,
    url: String,
    /// For `CONFIG SET`.
    admin: redis::Connection,
}

impl PrivateRedis {
    fn start() -> PrivateRedis {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = std::process::Command::new("redis-server")
            .args([
                "--bind",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server must be installed (tests/stack/redis.sh installs it)");
        let url = format!("redis://127.0.0.1:{port}");
        let admin = loop {
            if let Ok(c) = redis::Client::open(url.as_str()).and_then(|c| c.get_connection()) {
                break c;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        };
        PrivateRedis { child, url, admin }
    }

    /// `CONFIG SET maxmemory` (`1`: every write is refused; `0`: no limit).
    fn set_maxmemory(&mut self, bytes: &str) {
        let _: () = redis::cmd("CONFIG")
            .arg("SET")
            .arg("maxmemory")
            .arg(bytes)
            .query(&mut self.admin)
            .unwrap();
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A batch Redis refuses (OOM) is retriable, leaves nothing behind and is undone in the
/// sink's bookkeeping: sending it again gives exactly the state of one successful send
/// (freshness counters included), as with the script.
#[tokio::test]
async fn a_refused_batch_leaves_nothing_and_is_sent_again() {
    let mut server = PrivateRedis::start();
    let lua = Fixture::new().await;
    let owned = Fixture::owning_on(&server.url).await;
    let c = |id, email: &str, lsn| {
        (
            CUSTOMERS,
            upsert(Op::Create, customer_row(id, email, "N", T0), lsn),
        )
    };
    let first = [c(1, "a@example.com", 100), c(2, "b@example.com", 110)];
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
    owned
        .applier
        .apply_batch(&p1)
        .await
        .expect("first sent again");
    owned
        .applier
        .apply_batch(&p2)
        .await
        .expect("second sent again");
    lua.apply(&first).await;
    lua.apply(&second).await;
    assert_eq!(lua.dump().await, owned.dump().await);
}
