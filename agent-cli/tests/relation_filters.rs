//! `filters:` and `range:` of a relation lookup through the binary, against a real Redis
//! filled the way the sink fills it (the relation and its status-filtered relation): exactly
//! the matching rows, newest first, ties by id descending, up to `limit`; bounds inclusive;
//! a clear error for a bound that is not RFC 3339; the tool schemas describe the parameters.

mod support;

use redis::Commands;
use serde_json::{json, Value};
use support::{micros_rfc3339, run_tool, Fixture};

const T0: i64 = 1_790_000_000_000_000;

/// Order `id`'s creation time: one second apart, except 9, 10 and 11, which tie (byte order
/// of the members, "9" > "11" > "10", is not the answer's order).
fn created(id: i64) -> i64 {
    match id {
        9 | 11 => T0 + 10_000_000,
        _ => T0 + id * 1_000_000,
    }
}

fn status(id: i64) -> &'static str {
    if id % 3 == 0 {
        "pending"
    } else {
        "paid"
    }
}

/// Customer 42 with orders 1..=30 (and customer 43 with one pending order), the lookup
/// declaring a `status` filter and a `created_after`/`created_before` range.
fn fixture() -> Fixture {
    let mut fx = Fixture::new();
    fx.edit_config(
        "          max: 100\n",
        "          max: 100\n        filters:\n          - { param: status, field: status, description: Only orders with this status }\n        range: { since: created_after, until: created_before }\n",
    );
    fx.put_types();
    fx.put_customer(42, "jane@example.com", "Jane", "pro", 4900);
    let put = |fx: &mut Fixture, id: i64, customer: i64| {
        fx.put_order(id, customer, created(id), status(id), id * 100);
        let filtered = format!(
            "{}:customer:{customer}:orders:status:{}",
            fx.prefix,
            status(id)
        );
        let _: () = fx
            .conn
            .zadd(filtered, id.to_string(), created(id) as f64)
            .unwrap();
    };
    for id in 1..=30 {
        put(&mut fx, id, 42);
    }
    put(&mut fx, 99, 43);
    fx
}

fn ids(fx: &Fixture, args: Value) -> Vec<i64> {
    let (code, out, stderr) = run_tool(fx, "get_customer_orders", &args.to_string(), &[]);
    assert_eq!(code, 0, "{args}: {stderr}");
    out["result"]
        .as_array()
        .unwrap_or_else(|| panic!("{args}: {out}"))
        .iter()
        .map(|o| o["id"].as_i64().unwrap())
        .collect()
}

fn at(id: i64) -> String {
    micros_rfc3339(created(id))
}

#[test]
fn filter_range_and_limit_answer_exactly_the_matching_rows() {
    let fx = fixture();
    // Filter only: the newest pending orders.
    assert_eq!(
        ids(
            &fx,
            json!({"customer_id": 42, "status": "pending", "limit": 3})
        ),
        [30, 27, 24]
    );
    assert_eq!(
        ids(&fx, json!({"customer_id": 42, "status": "refunded"})),
        Vec::<i64>::new()
    );
    // Another customer's filtered relation stays apart.
    assert_eq!(
        ids(&fx, json!({"customer_id": 43, "status": "pending"})),
        [99]
    );
    // Range only, both bounds inclusive (9, 10 and 11 share the lower bound).
    assert_eq!(
        ids(
            &fx,
            json!({"customer_id": 42, "created_after": at(10), "created_before": at(14)})
        ),
        [14, 13, 12, 11, 10, 9]
    );
    assert_eq!(
        ids(
            &fx,
            json!({"customer_id": 42, "created_after": at(14), "created_before": at(14)})
        ),
        [14]
    );
    // Open ends.
    assert_eq!(
        ids(&fx, json!({"customer_id": 42, "created_after": at(28)})),
        [30, 29, 28]
    );
    assert_eq!(
        ids(
            &fx,
            json!({"customer_id": 42, "created_before": at(2), "limit": 5})
        ),
        [2, 1]
    );
    // Filter and range together.
    assert_eq!(
        ids(
            &fx,
            json!({"customer_id": 42, "status": "pending", "created_after": at(5), "created_before": at(16)})
        ),
        [15, 12, 9, 6]
    );
    // Offsets other than UTC mean the same instant.
    let plus_two = chrono::DateTime::from_timestamp_micros(created(14))
        .unwrap()
        .with_timezone(&chrono::FixedOffset::east_opt(7200).unwrap())
        .to_rfc3339();
    assert_eq!(
        ids(
            &fx,
            json!({"customer_id": 42, "created_after": plus_two, "created_before": at(14)})
        ),
        [14]
    );
    // null is "not given".
    assert_eq!(
        ids(
            &fx,
            json!({"customer_id": 42, "status": null, "created_after": null, "limit": 2})
        ),
        [30, 29]
    );
}

#[test]
fn ties_at_the_limit_are_ordered_by_id_descending() {
    let fx = fixture();
    // 9, 10 and 11 tie at the upper bound: the limit cuts the group by id, not by bytes.
    assert_eq!(
        ids(
            &fx,
            json!({"customer_id": 42, "created_before": at(10), "limit": 2})
        ),
        [11, 10]
    );
    assert_eq!(
        ids(
            &fx,
            json!({"customer_id": 42, "created_before": at(10), "limit": 4})
        ),
        [11, 10, 9, 8]
    );
    assert_eq!(
        ids(
            &fx,
            json!({"customer_id": 42, "created_after": at(10), "created_before": at(12), "limit": 2})
        ),
        [12, 11]
    );
}

#[test]
fn a_bound_that_is_not_rfc_3339_is_refused_clearly() {
    let fx = fixture();
    for bad in [json!("yesterday"), json!("2026-11-24"), json!(1790000000)] {
        let args = json!({"customer_id": 42, "created_after": bad});
        let (code, out, stderr) = run_tool(&fx, "get_customer_orders", &args.to_string(), &[]);
        assert_eq!(code, 2, "{args}: {out} {stderr}");
        assert!(
            stderr.contains("parameter `created_after` must be an RFC 3339 time"),
            "{stderr}"
        );
    }
    let args = json!({"customer_id": 42, "status": "a:b"});
    let (code, _, stderr) = run_tool(&fx, "get_customer_orders", &args.to_string(), &[]);
    assert_eq!(code, 2);
    assert!(
        stderr.contains("parameter `status` must not contain `:`"),
        "{stderr}"
    );
}

#[test]
fn a_range_on_a_relation_not_ordered_by_time_is_refused() {
    let mut fx = fixture();
    // The sink recorded `created_at` as a plain number: epoch-microsecond bounds would be
    // compared with its values.
    let _: () = fx
        .conn
        .hset(format!("sink:types:{}", fx.orders), "created_at", "long")
        .unwrap();
    let args = json!({"customer_id": 42, "created_after": "2026-01-01T00:00:00Z"});
    let (code, out, stderr) = run_tool(&fx, "get_customer_orders", &args.to_string(), &[]);
    assert_eq!(code, 2, "{out} {stderr}");
    assert!(
        stderr.contains("`range` needs a timestamp or date `order_by`, but field `created_at`"),
        "{stderr}"
    );
}

#[test]
fn the_default_file_describes_filters_and_range() {
    for (format, path) in [
        ("openai", "/function/parameters"),
        ("anthropic", "/input_schema"),
        ("mcp", "/inputSchema"),
    ] {
        let out = assert_cmd::Command::new(support::bin())
            .arg("--config")
            .arg(support::default_config())
            .args(["tools", "--format", format])
            .output()
            .unwrap();
        assert!(out.status.success());
        let tools: Value = serde_json::from_slice(&out.stdout).unwrap();
        let orders = tools
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t.to_string().contains("\"get_customer_orders\""))
            .unwrap();
        let props = &orders.pointer(path).unwrap()["properties"];
        for bound in ["created_after", "created_before"] {
            assert_eq!(props[bound]["type"], "string", "{format}");
            assert_eq!(props[bound]["format"], "date-time", "{format}");
            assert!(props[bound]["description"]
                .as_str()
                .unwrap()
                .contains("`created_at`"));
        }
        assert_eq!(props["status"]["type"], "string");
        assert!(props["status"]["description"]
            .as_str()
            .unwrap()
            .starts_with("Only orders with this status"));
        assert_eq!(
            orders.pointer(path).unwrap()["required"],
            json!(["customer_id"])
        );
    }
}
