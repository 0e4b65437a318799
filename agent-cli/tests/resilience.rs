//! Server-level scenarios on a private redis-server: a server without EVAL_RO/EVALSHA_RO
//! (as before Redis 7: "unknown command") and a Redis restart under the long-running store
//! the MCP server uses.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use agent_cli::error::CallError;
use agent_cli::lookup::Lookups;
use agent_cli::store::Store;
use redis::Commands;
use serde_json::json;

fn config_for(url: &str) -> (tempfile::TempDir, mapping::Config) {
    let dir = tempfile::tempdir().unwrap();
    let yaml = std::fs::read_to_string(support::default_config()).unwrap();
    let path = dir.path().join("connectors.yaml");
    std::fs::write(&path, yaml).unwrap();
    let overrides = mapping::ConnectionOverrides {
        redis_url: Some(url.to_owned()),
        ..Default::default()
    };
    let config = mapping::load_config(&path, &overrides).unwrap();
    (dir, config)
}

fn fill(conn: &mut redis::Connection) {
    let _: () = conn
        .hset_multiple(
            "sink:types:customers",
            &[("id", "int"), ("email", "string")],
        )
        .unwrap();
    let _: () = conn
        .hset_multiple("customer:1", &[("id", "1"), ("email", "a@example.com")])
        .unwrap();
    let _: () = conn.set("customer:email:a@example.com", "1").unwrap();
    // An order, which the default file's `get_customer` includes as `recent_orders`.
    let _: () = conn
        .hset_multiple("sink:types:orders", &[("id", "int")])
        .unwrap();
    let _: () = conn.hset_multiple("order:7", &[("id", "7")]).unwrap();
    let _: () = conn.zadd("customer:1:orders", "7", 1.0).unwrap();
}

/// What `get_customer` answers for the filled customer.
fn customer_one() -> serde_json::Value {
    json!({"id": 1, "email": "a@example.com", "recent_orders": [{"id": 7}]})
}

#[tokio::test(flavor = "multi_thread")]
async fn falls_back_to_eval_without_read_only_variants() {
    let redis = support::PrivateRedis::start(&[
        "--rename-command",
        "EVAL_RO",
        "",
        "--rename-command",
        "EVALSHA_RO",
        "",
    ]);
    let mut conn = redis.conn();
    fill(&mut conn);
    let err = redis::cmd("EVAL_RO")
        .arg("return 1")
        .arg(0)
        .query::<i64>(&mut conn)
        .unwrap_err();
    assert!(err.to_string().contains("unknown command"), "{err}");

    let (_dir, config) = config_for(&redis.url);
    let lookups = Lookups::new(
        Arc::new(config),
        Store::connect(&redis.url).await.unwrap(),
        None,
    );
    for _ in 0..3 {
        let out = lookups
            .call("get_customer", r#"{"email":"a@example.com"}"#)
            .await
            .unwrap();
        assert_eq!(out.result, customer_one());
    }
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query(&mut conn)
        .unwrap();
    let calls = |name: &str| {
        info.lines()
            .find(|l| l.starts_with(&format!("cmdstat_{name}:")))
            .and_then(|l| {
                l.split(&[':', ','][..])
                    .find_map(|kv| kv.strip_prefix("calls="))
            })
            .map_or(0, |n| n.parse::<u64>().unwrap())
    };
    // The first lookup learnt the server lacks the read-only variants; then EVAL loaded the
    // script and EVALSHA served the rest.
    assert_eq!((calls("eval"), calls("evalsha")), (1, 2), "{info}");
}

#[tokio::test(flavor = "multi_thread")]
async fn managed_store_survives_a_redis_restart() {
    let mut redis = support::PrivateRedis::start(&[]);
    fill(&mut redis.conn());
    let (_dir, config) = config_for(&redis.url);
    let lookups = Lookups::new(
        Arc::new(config),
        Store::connect_managed(&redis.url).await.unwrap(),
        None,
    );
    let args = r#"{"customer_id":1}"#;
    assert_eq!(
        lookups.call("get_customer", args).await.unwrap().result["id"],
        1
    );

    redis.stop();
    let err = lookups.call("get_customer", args).await.unwrap_err();
    assert!(matches!(err, CallError::Store(_)), "{err}");
    assert_eq!(err.exit_code(), 1);

    redis.restart(); // empty, and without the script cached
    fill(&mut redis.conn());
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match lookups.call("get_customer", args).await {
            Ok(out) => {
                assert_eq!(out.result, customer_one());
                break;
            }
            Err(e) if Instant::now() < deadline => {
                eprintln!("not yet: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("no recovery after the restart: {e}"),
        }
    }
}
