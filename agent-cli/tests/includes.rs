//! `include:` of a row lookup through the binary, against a real Redis filled the way the sink
//! fills it: the found customer carries its newest orders (typed with the orders' types,
//! newest first, ties by id descending, at most `limit`) by id and by email, an empty array
//! without orders, `null` when the customer is not found, freshness of the staler mapping,
//! the tool description names the included field, and the whole answer is ONE script call
//! whose reads are bounded by the include's limit (observed with `MONITOR`).

mod support;

use serde_json::{json, Value};
use support::{micros_rfc3339, now_ms, run_tool, Fixture};

const T0: i64 = 1_790_000_000_000_000;

/// The default fixture with `get_customer` including the 3 newest `customer_orders`.
fn fixture() -> Fixture {
    let mut fx = Fixture::new();
    fx.edit_config(
        "            index: email\n",
        "            index: email\n        include:\n          - { relation: customer_orders, as: recent_orders, limit: 3 }\n",
    );
    fx.put_types();
    fx
}

fn call(fx: &Fixture, args: Value) -> Value {
    let (code, out, stderr) = run_tool(fx, "get_customer", &args.to_string(), &[]);
    assert_eq!(code, 0, "{args}: {stderr}");
    out
}

fn order_ids(out: &Value) -> Vec<i64> {
    out["result"]["recent_orders"]
        .as_array()
        .unwrap_or_else(|| panic!("no recent_orders: {out}"))
        .iter()
        .map(|o| o["id"].as_i64().unwrap())
        .collect()
}

#[test]
fn the_found_row_carries_its_newest_children_typed() {
    let mut fx = fixture();
    fx.put_customer(42, "jane@example.com", "Jane", "pro", 4900);
    for id in 1..=5 {
        fx.put_order(id, 42, T0 + id * 1_000_000, "paid", id * 100);
    }
    // Another customer's orders stay apart.
    fx.put_order(6, 43, T0 + 9_000_000, "paid", 1);
    for args in [
        json!({"customer_id": 42}),
        json!({"email": "jane@example.com"}),
    ] {
        let out = call(&fx, args.clone());
        assert_eq!(out["result"]["id"], 42, "{args}: {out}");
        assert_eq!(out["result"]["name"], "Jane");
        assert_eq!(order_ids(&out), [5, 4, 3], "{args}");
        // Typed with the orders' types: integers, parsed JSON, timestamps as RFC 3339.
        let newest = &out["result"]["recent_orders"][0];
        assert_eq!(newest["total_cents"], 500);
        assert_eq!(newest["customer_id"], 42);
        assert_eq!(newest["items"], json!([{"sku": "SKU-5", "qty": 1}]));
        assert_eq!(newest["created_at"], micros_rfc3339(T0 + 5_000_000));
    }
}

#[test]
fn none_one_and_tied_children() {
    let mut fx = fixture();
    fx.put_customer(1, "none@example.com", "None", "free", 0);
    fx.put_customer(2, "one@example.com", "One", "free", 0);
    fx.put_customer(3, "ties@example.com", "Ties", "free", 0);
    fx.put_order(20, 2, T0, "paid", 1);
    // 9, 10 and 11 tie at the newest time (member byte order "9" > "11" > "10" is not the
    // answer's); 8 is older. The limit keeps the three newest by id descending.
    for id in [9, 10, 11] {
        fx.put_order(id, 3, T0 + 5_000_000, "paid", 1);
    }
    fx.put_order(8, 3, T0, "paid", 1);
    fx.put_order(12, 3, T0 + 5_000_000 - 1, "paid", 1);

    let none = call(&fx, json!({"customer_id": 1}));
    assert_eq!(none["result"]["recent_orders"], json!([]), "{none}");
    assert_eq!(order_ids(&call(&fx, json!({"customer_id": 2}))), [20]);
    assert_eq!(
        order_ids(&call(&fx, json!({"email": "ties@example.com"}))),
        [11, 10, 9]
    );
}

#[test]
fn a_missing_row_is_null() {
    let mut fx = fixture();
    // Orders under a customer id whose row does not exist are not an answer.
    fx.put_order(1, 77, T0, "paid", 1);
    for args in [
        json!({"customer_id": 77}),
        json!({"email": "nobody@example.com"}),
    ] {
        let out = call(&fx, args);
        assert_eq!(out["result"], Value::Null, "{out}");
    }
}

#[test]
fn freshness_is_the_staler_mappings() {
    let mut fx = fixture();
    fx.put_customer(42, "jane@example.com", "Jane", "pro", 4900);
    let now = now_ms();
    let (customers, orders) = (fx.customers.clone(), fx.orders.clone());
    fx.put_freshness(&customers, Some(now), None);
    fx.put_freshness(&orders, Some(now - 120_000), None);
    // Also when the customer is not found: the answer covers both mappings either way.
    for args in [json!({"customer_id": 42}), json!({"customer_id": 41})] {
        let out = call(&fx, args);
        let lag = out["freshness"]["lag_ms"].as_i64().unwrap();
        assert!(lag >= 120_000, "{out}");
        assert_eq!(out["freshness"]["stale"], true, "{out}");
    }

    // Both fresh: fresh. Orders never recorded: unknown, so stale.
    fx.put_freshness(&orders, Some(now), None);
    let out = call(&fx, json!({"customer_id": 42}));
    assert_eq!(out["freshness"]["stale"], false, "{out}");
    let _: () = redis::Commands::del(&mut fx.conn, format!("sink:freshness:{orders}")).unwrap();
    let out = call(&fx, json!({"customer_id": 42}));
    assert_eq!(out["freshness"]["stale"], true, "{out}");
    assert_eq!(out["freshness"]["as_of"], Value::Null, "{out}");
}

#[test]
fn the_tool_description_names_the_included_rows() {
    let fx = fixture();
    let out = fx
        .cmd()
        .args(["tools", "--format", "openai"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tools: Value = serde_json::from_slice(&out.stdout).unwrap();
    let description = tools[0]["function"]["description"].as_str().unwrap();
    assert!(
        description.contains("`recent_orders`: up to 3 newest")
            && description.contains("relation `customer_orders`"),
        "{description}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn one_script_call_with_bounded_reads() {
    let mut fx = fixture();
    fx.put_customer(42, "jane@example.com", "Jane", "pro", 4900);
    for id in 1..=50 {
        fx.put_order(id, 42, T0 + id * 1_000_000, "paid", id);
    }
    let (out, lines) =
        support::monitor_while(&mut fx, |fx| call(fx, json!({"email": "jane@example.com"}))).await;
    assert_eq!(order_ids(&out), [50, 49, 48]);
    // Other clients may be busy on a shared server: keep what touches this fixture's keys.
    let ours: Vec<&String> = lines.iter().filter(|l| l.contains(&fx.prefix)).collect();
    let (inside, outside): (Vec<&String>, Vec<&String>) =
        ours.into_iter().partition(|l| l.contains(" lua] "));
    assert_eq!(outside.len(), 1, "client commands: {outside:#?}");
    assert!(outside[0].contains(r#""EVAL_RO""#), "{}", outside[0]);
    let count = |name: &str| {
        inside
            .iter()
            .filter(|l| l.contains(&format!("] \"{name}\"")))
            .count()
    };
    // The index, the customer's types, freshness and row, the orders' types and freshness,
    // and the 3 orders; one window of the relation, plus the boundary ties.
    assert_eq!(count("GET"), 1, "{inside:#?}");
    assert_eq!(count("HGETALL"), 8, "{inside:#?}");
    assert_eq!(count("ZREVRANGE"), 1, "{inside:#?}");
    assert_eq!(count("ZRANGEBYSCORE"), 1, "{inside:#?}");
}
