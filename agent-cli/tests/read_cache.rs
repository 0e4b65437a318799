//! `agent-cli mcp`'s read cache against a real Redis, changed the way the sink changes it: a
//! repeated lookup is answered from memory with no command reaching Redis (observed with
//! `MONITOR`), and every change of a key the answer was read from (the row, the index, a
//! relation's members and their rows, the freshness hash, the types) is seen by the next
//! lookups within moments; a new freshness hash alone keeps the answer served (with the
//! freshness it was read with, never going back) while it is read again. After random changes, cached and uncached lookups agree. A flush
//! and a Redis restart drop everything; rows that may expire are never cached.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use agent_cli::lookup::{self, AnswerCache, Lookups, ToolOutput};
use agent_cli::read_cache::tracking;
use agent_cli::store::Store;
use rand::{Rng, SeedableRng};
use redis::aio::ConnectionManager;
use redis::Commands;
use serde_json::{json, Value};
use support::{now_ms, Fixture, PrivateRedis};

/// How long a change may take to reach the cache (it takes well under a millisecond).
const PATIENCE: Duration = Duration::from_secs(3);

/// Over a reconnecting connection, as `agent-cli mcp` reads.
type Managed = Lookups<ConnectionManager>;

/// The fixture's lookups with a live read cache, and the same without one.
async fn lookups(config_path: &std::path::Path) -> (Managed, Managed, AnswerCache) {
    let config = Arc::new(
        mapping::load_config(config_path, &Default::default()).expect("fixture configuration"),
    );
    let store = Store::connect_managed(&config.redis)
        .await
        .expect("connect");
    let cache = lookup::answer_cache(&config, 1_000);
    tracking::spawn(&config.redis, cache.clone()).expect("tracking");
    let deadline = Instant::now() + PATIENCE;
    while !cache.is_live() {
        assert!(Instant::now() < deadline, "the read cache never went live");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let plain = Lookups::new(Arc::clone(&config), store.clone(), None);
    let cached = Lookups::new(config, store, None).with_cache(cache.clone());
    (cached, plain, cache)
}

async fn call(lookups: &Managed, tool: &str, args: &Value) -> ToolOutput {
    lookups
        .call(tool, &args.to_string())
        .await
        .unwrap_or_else(|e| panic!("{tool} {args}: {e}"))
}

/// Calls until `wanted` holds for the answer (the change has reached the cache), or panics.
async fn eventually(
    lookups: &Managed,
    tool: &str,
    args: &Value,
    what: &str,
    wanted: impl Fn(&ToolOutput) -> bool,
) -> ToolOutput {
    let deadline = Instant::now() + PATIENCE;
    loop {
        // Errors count as "not yet": Redis may be restarting.
        let out = lookups.call(tool, &args.to_string()).await;
        match &out {
            Ok(out) if wanted(out) => return out.clone(),
            Ok(out) => assert!(Instant::now() < deadline, "{what}: still {}", out.to_json()),
            Err(e) => assert!(Instant::now() < deadline, "{what}: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Calls until the answer is held by the cache (a call is a hit), so that a change made next
/// can only reach the lookups by invalidating it.
async fn held(lookups: &Managed, cache: &AnswerCache, tool: &str, args: &Value) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let hits = cache.stats().hits;
        call(lookups, tool, args).await;
        if cache.stats().hits > hits {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{tool} {args} is never answered from the cache"
        );
    }
}

fn setup() -> Fixture {
    let mut fx = Fixture::new();
    fx.put_types();
    let now = now_ms();
    let (customers, orders) = (fx.customers.clone(), fx.orders.clone());
    fx.put_freshness(&customers, Some(now), Some(now));
    fx.put_freshness(&orders, Some(now), Some(now));
    fx.put_customer(1, "ann@example.com", "Ann", "pro", 100);
    fx
}

/// The lines `MONITOR` records while `run` runs, among them those naming `prefix`.
async fn commands_naming<T>(prefix: &str, run: impl std::future::Future<Output = T>) -> (T, usize) {
    use futures::StreamExt;

    let client = redis::Client::open(support::redis_url()).unwrap();
    let monitor = client.get_async_monitor().await.unwrap();
    let marker = format!("{prefix}-done");
    let collector = {
        let (marker, prefix) = (marker.clone(), prefix.to_owned());
        tokio::spawn(async move {
            let mut stream = monitor.into_on_message::<String>();
            let mut naming = 0;
            while let Some(line) = stream.next().await {
                if line.contains(&marker) {
                    break;
                }
                naming += usize::from(line.contains(&prefix));
            }
            naming
        })
    };
    // MONITOR starts recording when the server has answered it; a round trip on another
    // connection after it was sent does not prove that, so mark the start too and wait.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let out = run.await;
    let mut conn = support::redis();
    let _: String = redis::cmd("ECHO").arg(&marker).query(&mut conn).unwrap();
    let naming = tokio::time::timeout(Duration::from_secs(10), collector)
        .await
        .unwrap()
        .unwrap();
    (out, naming)
}

#[tokio::test]
async fn a_repeated_lookup_is_answered_from_memory_without_reaching_redis() {
    let fx = setup();
    let (cached, _, cache) = lookups(&fx.config).await;
    let args = json!({"email": "ann@example.com"});
    let first = call(&cached, "get_customer", &args).await;
    assert_eq!(first.result["name"], "Ann");
    let (answers, commands) = commands_naming(&fx.prefix, async {
        let mut answers = Vec::new();
        for _ in 0..50 {
            answers.push(call(&cached, "get_customer", &args).await);
        }
        answers
    })
    .await;
    assert_eq!(
        commands, 0,
        "a cached lookup sent a command naming the fixture"
    );
    for answer in &answers {
        assert_eq!(answer.result, first.result);
        assert_eq!(answer.freshness.as_of, first.freshness.as_of);
    }
    let stats = cache.stats();
    assert_eq!((stats.hits, stats.inserted), (50, 1), "{stats:?}");

    // The uncached path for the same call does reach Redis: the check above can fail.
    let (_, commands) = commands_naming(&fx.prefix, async {
        cache.clear();
        call(&cached, "get_customer", &args).await
    })
    .await;
    assert!(commands >= 1, "a lookup after clear() sent nothing");
}

#[tokio::test]
async fn every_change_of_a_key_an_answer_was_read_from_reaches_the_next_lookups() {
    let mut fx = setup();
    let (cached, _, cache) = lookups(&fx.config).await;
    let by_email = json!({"email": "ann@example.com"});
    let by_id = json!({"customer_id": 1});
    held(&cached, &cache, "get_customer", &by_email).await;
    held(&cached, &cache, "get_customer", &by_id).await;

    // The row hash (read through the index, and directly).
    let row = format!("{}:customer:1", fx.prefix);
    let _: () = fx.conn.hset(&row, "name", "Anne").unwrap();
    eventually(&cached, "get_customer", &by_email, "row renamed", |o| {
        o.result["name"] == "Anne"
    })
    .await;
    eventually(&cached, "get_customer", &by_id, "row renamed", |o| {
        o.result["name"] == "Anne"
    })
    .await;

    // The index: the email moves to another customer.
    held(&cached, &cache, "get_customer", &by_email).await;
    fx.put_customer(2, "ann@example.com", "Ann Two", "free", 0);
    eventually(&cached, "get_customer", &by_email, "email moved", |o| {
        o.result["id"] == 2
    })
    .await;

    // The freshness hash.
    held(&cached, &cache, "get_customer", &by_id).await;
    let customers = fx.customers.clone();
    let later = now_ms() + 1_000;
    fx.put_freshness(&customers, Some(later), Some(later));
    let as_of = agent_cli::freshness::rfc3339_ms(later);
    eventually(&cached, "get_customer", &by_id, "freshness advanced", |o| {
        o.freshness.as_of.as_deref() == Some(as_of.as_str())
    })
    .await;

    // The types hash: `mrr_cents` typed as a string now.
    held(&cached, &cache, "get_customer", &by_id).await;
    let _: () = fx
        .conn
        .hset(format!("sink:types:{customers}"), "mrr_cents", "string")
        .unwrap();
    eventually(&cached, "get_customer", &by_id, "types changed", |o| {
        o.result["mrr_cents"] == "100"
    })
    .await;

    // A relation: a new member, then a change of a child row it returned.
    let t0 = 1_780_000_000_000_000_i64;
    fx.put_order(10, 1, t0, "new", 500);
    let orders = json!({"customer_id": 1});
    let ids = |o: &ToolOutput| -> Vec<i64> {
        o.result
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].as_i64().unwrap())
            .collect()
    };
    eventually(
        &cached,
        "get_customer_orders",
        &orders,
        "first order",
        |o| ids(o) == [10],
    )
    .await;
    held(&cached, &cache, "get_customer_orders", &orders).await;
    fx.put_order(11, 1, t0 + 1, "new", 700);
    eventually(
        &cached,
        "get_customer_orders",
        &orders,
        "second order",
        |o| ids(o) == [11, 10],
    )
    .await;
    held(&cached, &cache, "get_customer_orders", &orders).await;
    let _: () = fx
        .conn
        .hset(format!("{}:order:10", fx.prefix), "status", "shipped")
        .unwrap();
    eventually(
        &cached,
        "get_customer_orders",
        &orders,
        "child row changed",
        |o| o.result[1]["status"] == "shipped",
    )
    .await;
    // A row that was not found: it appears.
    let missing = json!({"customer_id": 3});
    assert_eq!(
        call(&cached, "get_customer", &missing).await.result,
        Value::Null
    );
    held(&cached, &cache, "get_customer", &missing).await;
    fx.put_customer(3, "cy@example.com", "Cy", "pro", 1);
    eventually(&cached, "get_customer", &missing, "row appeared", |o| {
        o.result["id"] == 3
    })
    .await;
}

#[tokio::test]
async fn a_new_freshness_hash_keeps_the_answer_served_while_it_is_read_again() {
    // The sink rewrites a mapping's freshness hash on every batch: answers must survive it.
    let mut fx = setup();
    let (cached, _, cache) = lookups(&fx.config).await;
    let args = json!({"customer_id": 1});
    held(&cached, &cache, "get_customer", &args).await;
    let misses = cache.stats().misses;
    let customers = fx.customers.clone();
    let mut seen: Vec<String> = Vec::new();
    for n in 1..=20 {
        let ts = now_ms() + n * 1_000;
        fx.put_freshness(&customers, Some(ts), Some(ts));
        let want = agent_cli::freshness::rfc3339_ms(ts);
        let deadline = Instant::now() + PATIENCE;
        loop {
            let out = call(&cached, "get_customer", &args).await;
            assert_eq!(out.result["name"], "Ann");
            let as_of = out.freshness.as_of.expect("as_of");
            if let Some(last) = seen.last() {
                assert!(&as_of >= last, "as_of went back from {last} to {as_of}");
            }
            seen.push(as_of.clone());
            if as_of == want {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "as_of never reached {want}: {as_of}"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    let stats = cache.stats();
    assert_eq!(
        stats.misses, misses,
        "a new freshness hash dropped the answer: {stats:?}"
    );
    assert!(stats.stale_hits >= 1, "{stats:?}");
}

#[tokio::test]
async fn a_caller_that_never_waits_between_lookups_still_sees_changes() {
    // On this one-thread runtime nothing but the lookups themselves gives the tracking
    // connection a chance to run: a loop of hits that never yielded would keep the old row.
    let mut fx = setup();
    let (cached, _, cache) = lookups(&fx.config).await;
    let args = json!({"customer_id": 1});
    held(&cached, &cache, "get_customer", &args).await;
    let row = format!("{}:customer:1", fx.prefix);
    let writer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        let _: () = fx.conn.hset(&row, "name", "Renamed").unwrap();
        fx
    });
    let deadline = Instant::now() + PATIENCE;
    let mut calls = 0;
    while call(&cached, "get_customer", &args).await.result["name"] != "Renamed" {
        calls += 1;
        assert!(
            Instant::now() < deadline,
            "still the old row after {calls} calls"
        );
    }
    assert!(cache.stats().hits > 1, "{:?}", cache.stats());
    drop(writer.join());
}

#[tokio::test]
async fn a_change_of_an_included_row_or_relation_reaches_the_answer_that_includes_it() {
    let mut fx = setup();
    fx.edit_config(
        "            index: email\n",
        "            index: email\n        include:\n          - { relation: customer_orders, as: recent_orders, limit: 2 }\n",
    );
    let (cached, _, cache) = lookups(&fx.config).await;
    let t0 = 1_780_000_000_000_000_i64;
    fx.put_order(10, 1, t0, "new", 500);
    let args = json!({"email": "ann@example.com"});
    let included = |o: &ToolOutput| -> Vec<(i64, String)> {
        (o.result["recent_orders"].as_array().into_iter().flatten())
            .map(|r| {
                (
                    r["id"].as_i64().unwrap(),
                    r["status"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    };
    eventually(&cached, "get_customer", &args, "first order", |o| {
        included(o) == [(10, "new".to_owned())]
    })
    .await;
    held(&cached, &cache, "get_customer", &args).await;
    // A child row changes.
    let _: () = fx
        .conn
        .hset(format!("{}:order:10", fx.prefix), "status", "paid")
        .unwrap();
    eventually(
        &cached,
        "get_customer",
        &args,
        "included row changed",
        |o| included(o) == [(10, "paid".to_owned())],
    )
    .await;
    held(&cached, &cache, "get_customer", &args).await;
    // The relation gains a newer child.
    fx.put_order(11, 1, t0 + 1, "new", 700);
    eventually(&cached, "get_customer", &args, "relation grew", |o| {
        included(o) == [(11, "new".to_owned()), (10, "paid".to_owned())]
    })
    .await;
}

#[tokio::test]
async fn after_random_changes_cached_and_uncached_lookups_agree() {
    let mut fx = setup();
    let (cached, plain, cache) = lookups(&fx.config).await;
    let seed: u64 = rand::rng().random();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let t0 = 1_780_000_000_000_000_i64;
    let calls: Vec<(&str, Value)> = (1..=4)
        .flat_map(|id| {
            [
                ("get_customer", json!({"customer_id": id})),
                (
                    "get_customer",
                    json!({"email": format!("c{id}@example.com")}),
                ),
                (
                    "get_customer_orders",
                    json!({"customer_id": id, "limit": 3}),
                ),
                ("get_customer_order_stats", json!({"customer_id": id})),
            ]
        })
        .collect();
    for round in 0..30 {
        for _ in 0..rng.random_range(1..6) {
            let id: i64 = rng.random_range(1..=4);
            match rng.random_range(0..5) {
                0 => {
                    let email = format!("c{}@example.com", rng.random_range(1..=4));
                    let name = format!("n{}", rng.random_range(0..1000));
                    fx.put_customer(id, &email, &name, "pro", rng.random_range(0..500));
                }
                1 => {
                    let _: () = fx.conn.del(format!("{}:customer:{id}", fx.prefix)).unwrap();
                }
                2 => {
                    let order: i64 = rng.random_range(1..=20);
                    let at = t0 + rng.random_range(0..50);
                    fx.put_order(order, id, at, "new", rng.random_range(1..900));
                }
                3 => {
                    let order: i64 = rng.random_range(1..=20);
                    let key = format!("{}:order:{order}", fx.prefix);
                    let _: () = fx.conn.hset(key, "status", "shipped").unwrap();
                }
                _ => {
                    let key = format!("{}:customer:{id}:order_stats", fx.prefix);
                    let _: () = fx.conn.hincr(key, "count", 1).unwrap();
                }
            }
        }
        for (tool, args) in &calls {
            let fresh = call(&plain, tool, args).await;
            let what = format!("seed {seed}, round {round}, {tool} {args}");
            eventually(&cached, tool, args, &what, |o| {
                o.result == fresh.result && o.freshness.as_of == fresh.freshness.as_of
            })
            .await;
        }
        // And once more, now that every change has arrived: hits, all equal.
        for (tool, args) in &calls {
            let fresh = call(&plain, tool, args).await;
            let held = call(&cached, tool, args).await;
            assert_eq!(
                held.result, fresh.result,
                "seed {seed}, round {round}, {tool} {args}"
            );
        }
    }
    let stats = cache.stats();
    assert!(stats.hits > 0 && stats.invalidated > 0, "{stats:?}");
}

#[tokio::test]
async fn a_flush_and_a_restarted_redis_leave_nothing_behind() {
    let mut redis = PrivateRedis::start(&[]);
    let fx = Fixture::new();
    fx.edit_config(
        &format!("url: {}", support::redis_url()),
        &format!("url: {}", redis.url),
    );
    let put = |redis: &PrivateRedis| {
        let mut conn = redis.conn();
        let _: () = conn
            .hset_multiple(
                format!("{}:customer:1", fx.prefix),
                &[("id", "1"), ("name", "Ann")],
            )
            .unwrap();
    };
    put(&redis);
    let (cached, _, cache) = lookups(&fx.config).await;
    let args = json!({"customer_id": 1});
    assert_eq!(
        call(&cached, "get_customer", &args).await.result["name"],
        "Ann"
    );
    assert_eq!(cache.len(), 1);

    let _: () = redis::cmd("FLUSHALL").query(&mut redis.conn()).unwrap();
    eventually(&cached, "get_customer", &args, "flushed", |o| {
        o.result.is_null()
    })
    .await;

    put(&redis);
    eventually(&cached, "get_customer", &args, "written again", |o| {
        o.result["name"] == "Ann"
    })
    .await;
    redis.restart();
    let deadline = Instant::now() + PATIENCE;
    while cache.is_live() || !cache.is_empty() {
        assert!(
            Instant::now() < deadline,
            "the cache outlived its tracking connection"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The restarted server is empty: the row must not come back from memory.
    eventually(&cached, "get_customer", &args, "after restart", |o| {
        o.result.is_null()
    })
    .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cache.is_live() {
        assert!(Instant::now() < deadline, "tracking did not come back");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    put(&redis);
    eventually(&cached, "get_customer", &args, "back", |o| {
        o.result["name"] == "Ann"
    })
    .await;
    assert!(cache.stats().resets >= 3, "{:?}", cache.stats());
}

#[tokio::test]
async fn rows_that_may_expire_are_not_cached() {
    let fx = setup();
    fx.edit_config(
        "    fields: all\n    indexes:",
        "    fields: all\n    ttl_seconds: 3600\n    indexes:",
    );
    let (cached, _, cache) = lookups(&fx.config).await;
    let args = json!({"customer_id": 1});
    for _ in 0..3 {
        assert_eq!(
            call(&cached, "get_customer", &args).await.result["name"],
            "Ann"
        );
    }
    assert_eq!(cache.stats().inserted, 0);
    // The orders mapping has no TTL: its lookups are.
    call(&cached, "get_order", &json!({"order_id": 1})).await;
    call(&cached, "get_order", &json!({"order_id": 1})).await;
    assert_eq!(cache.stats().hits, 1);
}
