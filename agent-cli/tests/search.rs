//! Prefix search lookups (`search:`) through the binary, against a real Redis filled the way
//! the sink fills it (`mapping::search` members in `sink:search:{mapping}:{search}`): rows
//! whose name starts with the prefix whatever its case, Unicode included, ordered by the
//! lower-cased name then the primary key, at most `limit`, typed, with freshness; a prefix
//! may hold `:` and spaces; a member whose row is gone (expired) is not answered; the whole
//! answer is ONE script call (observed with `MONITOR`).

mod support;

use mapping::layout;
use mapping::FieldValue;
use redis::Commands;
use serde_json::{json, Value};
use support::{monitor_while, now_ms, run_tool, Fixture};

/// The default fixture with `search: name_prefix` on customers and `find_customers`.
fn fixture() -> Fixture {
    let mut fx = Fixture::new();
    fx.edit_config(
        "    lookups:\n      - tool: get_customer\n",
        "    search:\n      - { name: name_prefix, field: name }\n    lookups:\n      - tool: find_customers\n        description: Find customers whose name starts with the given text (case-insensitive)\n        search: name_prefix\n        by: [{ param: name_prefix, type: string, description: Start of the name }]\n        limit: { param: limit, description: Max customers, default: 10, max: 50 }\n      - tool: get_customer\n",
    );
    fx.put_types();
    fx
}

/// A customer as the sink stores it, with its search member.
fn put(fx: &mut Fixture, id: i64, name: &str) {
    fx.put_customer(id, &format!("c{id}@example.com"), name, "pro", 100);
    let row_key = format!("{}:customer:{id}", fx.prefix);
    let member = mapping::search::member(name, [&FieldValue::Int(id)], &row_key);
    let _: () = fx.conn.zadd(search_key(fx), member, 0).unwrap();
}

fn search_key(fx: &Fixture) -> String {
    layout::search_key(&fx.customers, "name_prefix")
}

fn find(fx: &Fixture, args: Value) -> (Vec<i64>, Value) {
    let (code, out, stderr) = run_tool(fx, "find_customers", &args.to_string(), &[]);
    assert_eq!(code, 0, "{args}: {stderr}");
    let ids = out["result"]
        .as_array()
        .unwrap_or_else(|| panic!("{args}: not an array: {out}"))
        .iter()
        .map(|c| c["id"].as_i64().unwrap())
        .collect();
    (ids, out)
}

#[test]
fn rows_whose_name_starts_with_the_prefix_in_order() {
    let mut fx = fixture();
    for (id, name) in [
        (1, "Jane Doe"),
        (2, "jane austen"),
        (10, "JANET"),
        (9, "Janet"),
        (3, "Ågot Øvre"),
        (5, "Re: Invoice 7"),
        (6, "Bob"),
    ] {
        put(&mut fx, id, name);
    }
    fx.put_freshness(&fx.customers.clone(), Some(now_ms() - 50), None);
    let cases = [
        (json!({"name_prefix": "jan"}), vec![2, 1, 9, 10]),
        (json!({"name_prefix": "JANE"}), vec![2, 1, 9, 10]),
        (json!({"name_prefix": "Jane "}), vec![2, 1]),
        (json!({"name_prefix": "jan", "limit": 3}), vec![2, 1, 9]),
        (json!({"name_prefix": "åGOT ø"}), vec![3]),
        (json!({"name_prefix": "re: inv"}), vec![5]),
        (json!({"name_prefix": "x"}), vec![]),
    ];
    for (args, expected) in cases {
        assert_eq!(find(&fx, args.clone()).0, expected, "{args}");
    }
    let (_, out) = find(&fx, json!({"name_prefix": "bo"}));
    // Typed rows, and the answer's freshness.
    assert_eq!(out["result"][0]["name"], "Bob");
    assert_eq!(out["result"][0]["mrr_cents"], 100);
    assert_eq!(out["freshness"]["stale"], false, "{out}");
    let _: () = fx.conn.del(search_key(&fx)).unwrap();
}

#[test]
fn a_member_whose_row_is_gone_is_not_answered() {
    let mut fx = fixture();
    put(&mut fx, 1, "Ann");
    put(&mut fx, 2, "Anna");
    // The row hash expired (`ttl_seconds`): its member stays until the row changes again.
    let _: () = fx.conn.del(format!("{}:customer:1", fx.prefix)).unwrap();
    assert_eq!(find(&fx, json!({"name_prefix": "an"})).0, [2]);
    let _: () = fx.conn.del(search_key(&fx)).unwrap();
}

#[test]
fn bad_prefixes_and_limits_are_refused_clearly() {
    let fx = fixture();
    for (args, expected) in [
        (json!({"name_prefix": ""}), "name_prefix"),
        (json!({"name_prefix": "a\u{0}b"}), "control characters"),
        (json!({"name_prefix": "a", "limit": 51}), "limit"),
        (json!({"name_prefix": 7}), "a string"),
    ] {
        let (code, _, stderr) = run_tool(&fx, "find_customers", &args.to_string(), &[]);
        assert_ne!(code, 0, "{args}");
        assert!(stderr.contains(expected), "{args}: {stderr}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn one_search_is_one_script_call_with_bounded_reads() {
    let mut fx = fixture();
    for id in 1..=20 {
        put(&mut fx, id, &format!("Jane {id:02}"));
    }
    let ((), lines) = monitor_while(&mut fx, |fx| {
        let out = fx
            .cmd()
            .args([
                "tool",
                "find_customers",
                r#"{"name_prefix":"ja","limit":3}"#,
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    })
    .await;
    let ours: Vec<&String> = lines.iter().filter(|l| l.contains(&fx.prefix)).collect();
    let (inside, outside): (Vec<&String>, Vec<&String>) =
        ours.into_iter().partition(|l| l.contains(" lua] "));
    assert_eq!(outside.len(), 1, "client commands: {outside:#?}");
    assert!(outside[0].contains("\"EVAL"), "{outside:#?}");
    let ranges = inside
        .iter()
        .filter(|l| l.contains("\"ZRANGEBYLEX\""))
        .count();
    let rows = inside.iter().filter(|l| l.contains(":customer:")).count();
    assert_eq!((ranges, rows), (1, 3), "script reads: {inside:#?}");
    let _: () = fx.conn.del(search_key(&fx)).unwrap();
}
