//! The binary's `tools`, `tool` and `status` commands against a real Redis filled in the
//! documented layout: every output field, exit codes and messages.

mod support;

use serde_json::{json, Value};
use support::{now_ms, run_tool, Fixture};

#[test]
fn default_file_yields_the_seed_tools() {
    let out = assert_cmd::Command::new(support::bin())
        .arg("--config")
        .arg(support::default_config())
        .args(["tools", "--format", "openai"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tools: Value = serde_json::from_slice(&out.stdout).unwrap();
    let tools = tools.as_array().unwrap();
    let names: Vec<&str> = tools
        .iter()
        .map(|t| t["function"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "get_customer",
            "find_customers",
            "get_order",
            "get_customer_orders",
            "get_customer_order_stats"
        ]
    );
    for t in tools {
        assert_eq!(t["type"], "function");
    }

    let get_customer = &tools[0]["function"];
    assert!(get_customer["description"]
        .as_str()
        .unwrap()
        .starts_with("Look up a customer by ID or email address"));
    let p = &get_customer["parameters"];
    assert_eq!(p["type"], "object");
    assert_eq!(p["properties"]["customer_id"]["type"], "integer");
    assert_eq!(p["properties"]["customer_id"]["description"], "Customer ID");
    assert_eq!(p["properties"]["email"]["type"], "string");
    assert_eq!(p["properties"]["email"]["description"], "Customer email");
    assert_eq!(p["properties"].as_object().unwrap().len(), 2);
    assert!(
        p.get("required").is_none(),
        "exactly one of two: neither is required by itself"
    );
    assert_eq!(
        (p["minProperties"].clone(), p["maxProperties"].clone()),
        (json!(1), json!(1))
    );

    let find = &tools[1]["function"];
    assert_eq!(
        find["description"],
        "Find customers whose name starts with the given text (case-insensitive)"
    );
    assert_eq!(
        find["parameters"]["properties"],
        json!({
            "name_prefix": {"type": "string", "description": "Start of the name", "minLength": 1, "maxLength": 256},
            "limit": {"type": "integer", "description": "Max customers", "default": 10, "minimum": 1, "maximum": 50},
        })
    );
    assert_eq!(find["parameters"]["required"], json!(["name_prefix"]));

    let get_order = &tools[2]["function"];
    assert_eq!(get_order["description"], "Look up a specific order by ID");
    assert_eq!(
        get_order["parameters"]["properties"]["order_id"]["type"],
        "integer"
    );
    assert_eq!(get_order["parameters"]["required"], json!(["order_id"]));

    let orders = &tools[3]["function"];
    assert_eq!(
        orders["description"],
        "Get recent orders for a customer, newest first"
    );
    let props = &orders["parameters"]["properties"];
    assert_eq!(props["customer_id"]["type"], "integer");
    assert_eq!(
        props["limit"],
        json!({"type": "integer", "description": "Max orders to return", "default": 10, "minimum": 1, "maximum": 100})
    );
    assert_eq!(orders["parameters"]["required"], json!(["customer_id"]));
    assert_eq!(orders["parameters"]["additionalProperties"], false);
}

#[test]
fn tool_formats_anthropic_and_mcp() {
    let run = |format: &str| -> Value {
        let out = assert_cmd::Command::new(support::bin())
            .arg("--config")
            .arg(support::default_config())
            .args(["tools", "--format", format])
            .output()
            .unwrap();
        assert!(out.status.success());
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let anthropic = run("anthropic");
    assert_eq!(anthropic[2]["name"], "get_order");
    assert_eq!(
        anthropic[2]["input_schema"]["required"],
        json!(["order_id"])
    );
    assert!(anthropic[2].get("type").is_none());
    let mcp = run("mcp");
    assert_eq!(mcp[3]["name"], "get_customer_orders");
    assert_eq!(mcp[3]["inputSchema"]["properties"]["limit"]["default"], 10);
    assert_eq!(mcp[3]["annotations"]["readOnlyHint"], true);
    assert_eq!(mcp[1]["name"], "find_customers");
    assert_eq!(mcp[1]["inputSchema"]["properties"]["limit"]["maximum"], 50);

    let bad = assert_cmd::Command::new(support::bin())
        .args(["tools", "--format", "xml"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
}

#[test]
fn get_customer_by_email_and_by_id() {
    let mut fx = Fixture::new();
    fx.put_types();
    fx.put_customer(42, "jane.doe+x@example.com", "Jane Doe", "pro", 4900);
    fx.put_customer(43, "bob@example.com", "Bob", "free", 0);
    let source_ts = now_ms() - 1_500;
    fx.put_freshness(&fx.customers.clone(), Some(source_ts), None);

    let expected = json!({
        "id": 42,
        "email": "jane.doe+x@example.com",
        "name": "Jane Doe",
        "plan": "pro",
        "mrr_cents": 4900,
        "created_at": "2026-01-15T08:30:00.000000Z",
        "updated_at": null,
    });
    for args in [
        r#"{"email": "jane.doe+x@example.com"}"#,
        r#"{"customer_id": 42}"#,
        r#"{"customer_id": 42, "email": null}"#,
    ] {
        let (code, out, stderr) = run_tool(&fx, "get_customer", args, &[]);
        assert_eq!(code, 0, "{args}: {stderr}");
        assert_eq!(out["result"], expected, "{args}");
        assert_eq!(out.as_object().unwrap().len(), 2);
        let f = &out["freshness"];
        assert_eq!(f.as_object().unwrap().len(), 3);
        assert_eq!(f["as_of"], support_rfc3339_ms(source_ts));
        let lag = f["lag_ms"].as_i64().unwrap();
        assert!((1_500..60_000).contains(&lag), "lag {lag}");
        assert_eq!(f["stale"], false);
    }
    let (_, other, _) = run_tool(&fx, "get_customer", r#"{"email":"bob@example.com"}"#, &[]);
    assert_eq!(other["result"]["id"], 43);
    assert_eq!(other["result"]["mrr_cents"], 0);
}

fn support_rfc3339_ms(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

#[test]
fn not_found_is_null_and_exit_0() {
    let mut fx = Fixture::new();
    fx.put_types();
    fx.put_customer(1, "a@example.com", "A", "free", 0);
    for (tool, args, expected) in [
        (
            "get_customer",
            r#"{"email":"nobody@example.com"}"#,
            Value::Null,
        ),
        ("get_customer", r#"{"customer_id":999}"#, Value::Null),
        ("get_order", r#"{"order_id":5}"#, Value::Null),
        ("get_customer_orders", r#"{"customer_id":1}"#, json!([])),
    ] {
        let (code, out, stderr) = run_tool(&fx, tool, args, &[]);
        assert_eq!(code, 0, "{tool} {args}: {stderr}");
        assert_eq!(out["result"], expected, "{tool} {args}");
        // Nothing recorded by the sink: unknown freshness is stale.
        assert_eq!(
            out["freshness"],
            json!({"as_of": null, "lag_ms": null, "stale": true})
        );
    }
}

#[test]
fn get_order_types_every_field() {
    let mut fx = Fixture::new();
    fx.put_types();
    let created = 1_795_000_000_123_456_i64;
    fx.put_order(7, 42, created, "shipped", 12_999);
    let (code, out, _) = run_tool(&fx, "get_order", r#"{"order_id": 7}"#, &[]);
    assert_eq!(code, 0);
    assert_eq!(
        out["result"],
        json!({
            "id": 7,
            "customer_id": 42,
            "status": "shipped",
            "total_cents": 12999,
            "items": [{"sku": "SKU-7", "qty": 1}],
            "created_at": support::micros_rfc3339(created),
            "updated_at": support::micros_rfc3339(created),
        })
    );
    assert_eq!(out["result"]["created_at"], "2026-11-18T11:06:40.123456Z");
}

#[test]
fn stored_types_become_json_types() {
    let mut fx = Fixture::new();
    let types = [
        ("id", "long"),
        ("ratio", "double"),
        ("weight", "float"),
        ("active", "boolean"),
        ("meta", "json"),
        ("born", "date"),
        ("balance", "decimal"),
        ("avatar", "bytes"),
        ("seen_at", "timestamp"),
        ("nickname", "string"),
    ];
    let _: () = redis::Commands::hset_multiple(
        &mut fx.conn,
        format!("sink:types:{}", fx.customers),
        &types,
    )
    .unwrap();
    let row = [
        ("id", "9007199254740993"),
        ("ratio", "0.125"),
        ("weight", "-2.5"),
        ("active", "true"),
        ("meta", r#"{"tags":["a","b"],"n":null}"#),
        ("born", "1990-01-31"),
        ("balance", "12.50"),
        ("avatar", "AAEC"),
        ("seen_at", "2026-11-24T09:56:33.142906Z"),
    ];
    let _: () =
        redis::Commands::hset_multiple(&mut fx.conn, format!("{}:customer:5", fx.prefix), &row)
            .unwrap();
    let (code, out, stderr) = run_tool(&fx, "get_customer", r#"{"customer_id": 5}"#, &[]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        out["result"],
        json!({
            "id": 9007199254740993_i64,
            "ratio": 0.125,
            "weight": -2.5,
            "active": true,
            "meta": {"tags": ["a", "b"], "n": null},
            "born": "1990-01-31",
            "balance": "12.50",
            "avatar": "AAEC",
            "seen_at": "2026-11-24T09:56:33.142906Z",
            "nickname": null,
        })
    );
}

#[test]
fn orders_newest_first_ties_by_id_descending_and_limit() {
    let mut fx = Fixture::new();
    fx.put_types();
    let t0 = 1_790_000_000_000_000_i64;
    // (id, created_at): ids 9, 10, 11 and 100 tie; lexicographic order would put "9" first.
    let orders = [
        (1, t0),
        (2, t0 + 1),
        (3, t0 + 2),
        (9, t0 + 5),
        (10, t0 + 5),
        (11, t0 + 5),
        (100, t0 + 5),
        (4, t0 + 6),
        (5, t0 + 7),
        (6, t0 + 8),
        (7, t0 + 9),
        (8, t0 + 10),
        (12, t0 + 11),
        (13, t0 + 12),
    ];
    for (id, ts) in orders {
        fx.put_order(id, 42, ts, "paid", id * 100);
    }
    fx.put_order(50, 43, t0 + 100, "paid", 1); // another customer's order
    let mut expected: Vec<(i64, i64)> = orders.to_vec();
    expected.sort_by(|a, b| b.1.cmp(&a.1).then(b.0.cmp(&a.0)));
    let expected_ids: Vec<i64> = expected.iter().map(|(id, _)| *id).collect();

    let ids = |out: &Value| -> Vec<i64> {
        out["result"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o["id"].as_i64().unwrap())
            .collect()
    };
    // Default limit 10: the boundary (10th) falls inside the tie group.
    let (code, out, _) = run_tool(&fx, "get_customer_orders", r#"{"customer_id": 42}"#, &[]);
    assert_eq!(code, 0);
    assert_eq!(ids(&out), expected_ids[..10].to_vec());
    // The 10th falls inside the tie group {9, 10, 11, 100}: numerically descending, 9 is cut.
    assert_eq!(ids(&out)[7..10], [100, 11, 10]);
    // Boundary cutting the tie group in the middle.
    for limit in [1, 7, 8, 9, 11, 13, 14, 100] {
        let (code, out, stderr) = run_tool(
            &fx,
            "get_customer_orders",
            &format!(r#"{{"customer_id": 42, "limit": {limit}}}"#),
            &[],
        );
        assert_eq!(code, 0, "{stderr}");
        let n = (limit as usize).min(expected_ids.len());
        assert_eq!(ids(&out), expected_ids[..n].to_vec(), "limit {limit}");
    }
    // Full rows, typed.
    let (_, out, _) = run_tool(
        &fx,
        "get_customer_orders",
        r#"{"customer_id": 42, "limit": 1}"#,
        &[],
    );
    assert_eq!(
        out["result"],
        json!([{
            "id": 13, "customer_id": 42, "status": "paid", "total_cents": 1300,
            "items": [{"sku": "SKU-13", "qty": 1}],
            "created_at": support::micros_rfc3339(t0 + 12), "updated_at": support::micros_rfc3339(t0 + 12),
        }])
    );
    let (_, other, _) = run_tool(&fx, "get_customer_orders", r#"{"customer_id": 43}"#, &[]);
    assert_eq!(ids(&other), [50]);
}

#[test]
fn bad_arguments_exit_2_with_a_clear_message() {
    let fx = Fixture::new();
    let cases: &[(&str, &str, &str)] = &[
        (
            "get_invoice",
            "{}",
            "unknown tool `get_invoice` (available: get_customer, get_order, get_customer_orders, get_customer_order_stats)",
        ),
        (
            "get_customer",
            "{}",
            "`get_customer` needs exactly one of `customer_id`, `email`, got none",
        ),
        (
            "get_customer",
            r#"{"customer_id": 1, "email": "a@b.c"}"#,
            "needs exactly one of `customer_id`, `email`, got `customer_id` and `email`",
        ),
        (
            "get_customer",
            r#"{"customer_id": "1"}"#,
            "parameter `customer_id` must be an integer, got a string \"1\"",
        ),
        (
            "get_customer",
            r#"{"customer_id": 1.5}"#,
            "parameter `customer_id` must be an integer, got a number 1.5",
        ),
        (
            "get_customer",
            r#"{"email": 5}"#,
            "parameter `email` must be a string, got a number 5",
        ),
        (
            "get_customer",
            r#"{"email": ""}"#,
            "parameter `email` must not be empty",
        ),
        (
            "get_customer",
            r#"{"id": 1}"#,
            "`get_customer` has no parameter `id` (parameters: `customer_id`, `email`)",
        ),
        (
            "get_customer",
            r#"[1]"#,
            "arguments of `get_customer` must be a JSON object, got an array",
        ),
        (
            "get_customer",
            r#"{"email": "#,
            "arguments of `get_customer` are not valid JSON",
        ),
        (
            "get_order",
            r#"{}"#,
            "`get_order` needs `order_id`, got none",
        ),
        (
            "get_customer_orders",
            r#"{"customer_id": 1, "limit": 0}"#,
            "parameter `limit` must be between 1 and 100, got 0",
        ),
        (
            "get_customer_orders",
            r#"{"customer_id": 1, "limit": 101}"#,
            "parameter `limit` must be between 1 and 100, got 101",
        ),
        (
            "get_customer_orders",
            r#"{"customer_id": 1, "limit": -3}"#,
            "must be between 1 and 100, got -3",
        ),
        (
            "get_customer_orders",
            r#"{"customer_id": 1, "limit": "5"}"#,
            "parameter `limit` must be an integer",
        ),
        (
            "get_customer_orders",
            r#"{"limit": 5}"#,
            "`get_customer_orders` needs `customer_id`, got none",
        ),
    ];
    for (tool, args, message) in cases {
        let (code, out, stderr) = run_tool(&fx, tool, args, &[]);
        assert_eq!(code, 2, "{tool} {args}: {stderr}");
        assert_eq!(out, Value::Null, "nothing on stdout for {tool} {args}");
        assert!(stderr.starts_with("agent-cli: "), "{stderr}");
        assert!(
            stderr.contains(message),
            "{tool} {args}: expected {message:?} in {stderr:?}"
        );
    }
}

#[test]
fn injection_attempts_are_rejected() {
    let mut fx = Fixture::new();
    fx.put_types();
    fx.put_customer(1, "a@example.com", "A", "free", 0);
    // A key the attempts would reach if the value were pasted into the template.
    let _: () = redis::Commands::set(
        &mut fx.conn,
        format!("{}:customer:email:x:y", fx.prefix),
        "1",
    )
    .unwrap();
    for email in ["x:y", "a:b", ":", "a\nb", "a\r\nPING", "\t", "a\u{0}b"] {
        let args = json!({ "email": email }).to_string();
        let (code, out, stderr) = run_tool(&fx, "get_customer", &args, &[]);
        assert_eq!(code, 2, "{email:?}: {stderr}");
        assert_eq!(out, Value::Null);
        assert!(
            stderr.contains("parameter `email` must not contain"),
            "{email:?}: {stderr}"
        );
    }
    // Pattern characters and braces are looked up literally: they match no other key.
    for email in ["*", "a*", "?", "[a-z]", "{x}", "a}", "a\\b"] {
        let args = json!({ "email": email }).to_string();
        let (code, out, stderr) = run_tool(&fx, "get_customer", &args, &[]);
        assert_eq!(
            (code, out["result"].clone()),
            (0, Value::Null),
            "{email:?}: {stderr}"
        );
    }
    let long = json!({ "email": format!("{}@example.com", "a".repeat(300)) }).to_string();
    let (code, _, stderr) = run_tool(&fx, "get_customer", &long, &[]);
    assert_eq!(code, 2);
    assert!(stderr.contains("is longer than 256 characters"), "{stderr}");
    // Legitimate addresses pass.
    let (code, out, _) = run_tool(
        &fx,
        "get_customer",
        r#"{"email":"o'brien+tag@sub.example.co.uk"}"#,
        &[],
    );
    assert_eq!((code, out["result"].clone()), (0, Value::Null));
}

#[test]
fn string_arguments_with_spaces_and_printable_characters_are_looked_up_literally() {
    let mut fx = Fixture::new();
    fx.put_types();
    let odd = "Jane Doe* [x] {y}? \\ 100% \"q\" <t>@example.com";
    fx.put_customer(7, odd, "Jane", "free", 0);
    fx.put_customer(8, "jane@example.com", "Other", "free", 0);
    let args = json!({ "email": odd }).to_string();
    let (code, out, stderr) = run_tool(&fx, "get_customer", &args, &[]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(out["result"]["id"], 7);
    assert_eq!(out["result"]["email"], odd);
    // A space-padded variant is a different value, not a match.
    let padded = json!({ "email": format!(" {odd}") }).to_string();
    let (code, out, _) = run_tool(&fx, "get_customer", &padded, &[]);
    assert_eq!((code, out["result"].clone()), (0, Value::Null));
}

#[test]
fn freshness_as_of_lag_and_staleness() {
    let mut fx = Fixture::with_stale_after_ms(5_000);
    fx.put_types();
    fx.put_customer(1, "a@example.com", "A", "free", 0);
    let customers = fx.customers.clone();
    let now = now_ms();

    // as_of is the later of the source time and the caught-up time.
    fx.put_freshness(&customers, Some(now - 600_000), Some(now - 1_000));
    let (_, out, _) = run_tool(&fx, "get_customer", r#"{"customer_id":1}"#, &[]);
    assert_eq!(out["freshness"]["as_of"], support_rfc3339_ms(now - 1_000));
    assert_eq!(out["freshness"]["stale"], false);

    // Older than the file's 5 s bound: stale.
    fx.put_freshness(&customers, Some(now - 20_000), Some(now - 10_000));
    let (code, out, _) = run_tool(&fx, "get_customer", r#"{"customer_id":1}"#, &[]);
    assert_eq!(code, 0);
    assert_eq!(out["freshness"]["as_of"], support_rfc3339_ms(now - 10_000));
    assert!(out["freshness"]["lag_ms"].as_i64().unwrap() >= 10_000);
    assert_eq!(out["freshness"]["stale"], true);
    assert_eq!(out["result"]["id"], 1, "stale data is still returned");

    // --stale-after-ms overrides the file.
    let (_, out, _) = run_tool(
        &fx,
        "get_customer",
        r#"{"customer_id":1}"#,
        &["--stale-after-ms", "600000"],
    );
    assert_eq!(out["freshness"]["stale"], false);

    // Only a source time.
    fx.put_freshness(&customers, Some(now - 2_000), None);
    let (_, out, _) = run_tool(&fx, "get_customer", r#"{"customer_id":1}"#, &[]);
    assert_eq!(out["freshness"]["as_of"], support_rfc3339_ms(now - 2_000));
    assert_eq!(out["freshness"]["stale"], false);

    // Freshness is per mapping: orders have none.
    let (_, out, _) = run_tool(&fx, "get_order", r#"{"order_id":1}"#, &[]);
    assert_eq!(
        out["freshness"],
        json!({"as_of": null, "lag_ms": null, "stale": true})
    );
}

#[test]
fn unreachable_redis_exits_1() {
    let fx = Fixture::new();
    let out = assert_cmd::Command::new(support::bin())
        .arg("--config")
        .arg(&fx.config)
        .env("REDIS_URL", "redis://127.0.0.1:1")
        .args(["tool", "get_customer", r#"{"customer_id":1}"#])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.starts_with("agent-cli: cannot connect to redis at redis://127.0.0.1:1"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty());
    // Bad arguments are reported before connecting: still exit 2.
    let out = assert_cmd::Command::new(support::bin())
        .arg("--config")
        .arg(&fx.config)
        .env("REDIS_URL", "redis://127.0.0.1:1")
        .args(["tool", "get_customer", r#"{"email":"a:b"}"#])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn malformed_data_exits_1() {
    let mut fx = Fixture::new();
    fx.put_types();
    let _: () = redis::Commands::hset(
        &mut fx.conn,
        format!("{}:customer:3", fx.prefix),
        "mrr_cents",
        "lots",
    )
    .unwrap();
    let (code, out, stderr) = run_tool(&fx, "get_customer", r#"{"customer_id":3}"#, &[]);
    assert_eq!(code, 1, "{stderr}");
    assert_eq!(out, Value::Null);
    assert!(
        stderr.contains("malformed data in redis: field `mrr_cents` of a `customers_"),
        "{stderr}"
    );
    let customers = fx.customers.clone();
    let _: () = redis::Commands::hset(
        &mut fx.conn,
        format!("sink:freshness:{customers}"),
        "source_ts_ms",
        "yesterday",
    )
    .unwrap();
    let (code, _, stderr) = run_tool(&fx, "get_customer", r#"{"customer_id":4}"#, &[]);
    assert_eq!(code, 1);
    assert!(
        stderr.contains("`source_ts_ms` in sink:freshness:customers_"),
        "{stderr}"
    );
    // A wrong key type (someone else's data under the name) is a Redis error: exit 1.
    let _: () = redis::Commands::set(
        &mut fx.conn,
        format!("{}:customer:8", fx.prefix),
        "not a hash",
    )
    .unwrap();
    let _: () = redis::Commands::del(&mut fx.conn, format!("sink:freshness:{customers}")).unwrap();
    let (code, _, stderr) = run_tool(&fx, "get_customer", r#"{"customer_id":8}"#, &[]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("WRONGTYPE"), "{stderr}");
}

#[test]
fn invalid_config_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("connectors.yaml");
    std::fs::write(&path, "mappings:\n  - name: x\n    topik: y\n").unwrap();
    let out = assert_cmd::Command::new(support::bin())
        .arg("--config")
        .arg(&path)
        .arg("tools")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.starts_with("agent-cli: invalid configuration:\n"),
        "{stderr}"
    );
    assert!(stderr.contains("connectors.yaml:3:5"), "{stderr}");
    let out = assert_cmd::Command::new(support::bin())
        .args(["--config", "/nonexistent.yaml", "tools"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn status_table_and_json() {
    let mut fx = Fixture::new();
    let now = now_ms();
    let customers = fx.customers.clone();
    fx.put_freshness(&customers, Some(now - 3_000), Some(now - 500));
    let out = fx.cmd().args(["status", "--json"]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["stale_after_ms"], 30_000);
    let m = &status["mappings"];
    assert_eq!(m.as_array().unwrap().len(), 2);
    assert_eq!(m[0]["mapping"], customers.as_str());
    assert_eq!(m[0]["topic"], format!("cdc.{}.customers", fx.prefix));
    assert_eq!(m[0]["source_ts_ms"], now - 3_000);
    assert_eq!(m[0]["last_change"], support_rfc3339_ms(now - 3_000));
    assert_eq!(m[0]["caught_up_at_ms"], now - 500);
    assert_eq!(m[0]["caught_up_at"], support_rfc3339_ms(now - 500));
    assert_eq!(m[0]["as_of"], support_rfc3339_ms(now - 500));
    assert_eq!(m[0]["applied_count"], 17);
    assert!(m[0]["applied_at_ms"].as_i64().unwrap() >= now);
    assert!(m[0]["lag_ms"].as_i64().unwrap() >= 500);
    assert_eq!(m[0]["stale"], false);
    assert_eq!(m[1]["mapping"], fx.orders.as_str());
    assert_eq!(m[1]["as_of"], Value::Null);
    assert_eq!(m[1]["stale"], true);

    let out = fx.cmd().arg("status").output().unwrap();
    assert!(out.status.success());
    let table = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("MAPPING"), "{table}");
    assert!(
        lines[1].starts_with(&customers) && lines[1].ends_with("fresh"),
        "{table}"
    );
    assert!(
        lines[1].contains(&support_rfc3339_ms(now - 3_000)) && lines[1].contains(" 17 "),
        "{table}"
    );
    assert!(
        lines[2].starts_with(&fx.orders) && lines[2].ends_with("no data"),
        "{table}"
    );
    assert_eq!(lines[3], "stale after 30.0s");

    let out = fx
        .cmd()
        .env("REDIS_URL", "redis://127.0.0.1:1")
        .arg("status")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn order_stats_come_typed_in_one_lookup() {
    let mut fx = Fixture::new();
    let stats = [
        ("count", "3"),
        ("sum:total_cents", "53200"),
        ("group_count:paid", "2"),
        ("group_sum:total_cents:paid", "14700"),
        ("group_count:pending", "1"),
        ("group_sum:total_cents:pending", "38500.5"),
    ];
    let _: () = redis::Commands::hset_multiple(
        &mut fx.conn,
        format!("{}:customer:1:order_stats", fx.prefix),
        &stats,
    )
    .unwrap();
    let (code, out, stderr) =
        run_tool(&fx, "get_customer_order_stats", r#"{"customer_id":1}"#, &[]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        out["result"],
        json!({
            "count": 3,
            "sum_total_cents": 53200,
            "by_status": {
                "paid": {"count": 2, "sum_total_cents": 14700},
                "pending": {"count": 1, "sum_total_cents": "38500.5"}
            }
        })
    );
    assert!(out["freshness"].is_object());
    let (code, out, stderr) =
        run_tool(&fx, "get_customer_order_stats", r#"{"customer_id":2}"#, &[]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        out["result"],
        json!({"count": 0, "sum_total_cents": 0, "by_status": {}})
    );
}
