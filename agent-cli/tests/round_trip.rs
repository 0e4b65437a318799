//! "Reads done right": every lookup is ONE Redis round trip (a single read-only script call)
//! and the script's reads are bounded (newest `limit` members plus the boundary ties, then
//! one HGETALL per returned row), never the whole set.
//!
//! Three independent observations: a counting connection in process, the server's
//! `INFO commandstats`, and `MONITOR` (which also lists the commands run inside the script).

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use agent_cli::lookup::Lookups;
use agent_cli::store::Store;
use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::{Arg, Cmd, Pipeline, RedisFuture, Value};
use support::Fixture;

/// The tests here count server-wide statistics: run them one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A connection that records every request it sends (one entry per round trip).
#[derive(Clone)]
struct Counting {
    inner: MultiplexedConnection,
    round_trips: Arc<AtomicUsize>,
    commands: Arc<Mutex<Vec<String>>>,
}

impl Counting {
    fn round_trips(&self) -> usize {
        self.round_trips.load(Ordering::SeqCst)
    }
}

fn name_of(cmd: &Cmd) -> String {
    match cmd.args_iter().next() {
        Some(Arg::Simple(bytes)) => String::from_utf8_lossy(bytes).into_owned(),
        _ => "?".into(),
    }
}

impl ConnectionLike for Counting {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        self.round_trips.fetch_add(1, Ordering::SeqCst);
        self.commands.lock().unwrap().push(name_of(cmd));
        self.inner.req_packed_command(cmd)
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        self.round_trips.fetch_add(1, Ordering::SeqCst);
        self.commands
            .lock()
            .unwrap()
            .push(format!("pipeline of {}", pipeline.cmd_iter().count()));
        self.inner.req_packed_commands(pipeline, offset, count)
    }

    fn get_db(&self) -> i64 {
        self.inner.get_db()
    }
}

/// A customer with 1,000 orders whose newest ones tie at the 10th place.
fn fill(fx: &mut Fixture) {
    fx.put_types();
    fx.put_customer(42, "jane@example.com", "Jane", "pro", 4900);
    let t0 = 1_790_000_000_000_000_i64;
    for id in 1..=1000 {
        // Orders 991..=1000 are the newest; 985..=993 share one timestamp (ties around #10).
        let ts = match id {
            985..=993 => t0 + 993_000,
            _ => t0 + id * 1000,
        };
        fx.put_order(id, 42, ts, "paid", id);
    }
    let now = support::now_ms();
    fx.put_freshness(&fx.customers.clone(), Some(now), None);
    fx.put_freshness(&fx.orders.clone(), Some(now), None);
}

const CALLS: [(&str, &str); 5] = [
    ("get_customer", r#"{"email":"jane@example.com"}"#),
    ("get_customer", r#"{"customer_id":42}"#),
    ("get_order", r#"{"order_id":500}"#),
    ("get_customer_orders", r#"{"customer_id":42}"#),
    ("get_customer_orders", r#"{"customer_id":42,"limit":100}"#),
];

#[tokio::test(flavor = "multi_thread")]
async fn one_round_trip_per_lookup_in_process() {
    let _serial = SERIAL.lock().await;
    let mut fx = Fixture::new();
    fill(&mut fx);
    let config = mapping::load_config(&fx.config, &Default::default()).unwrap();
    let client = redis::Client::open(support::redis_url()).unwrap();
    let conn = client.get_multiplexed_async_connection().await.unwrap();
    let counting = Counting {
        inner: conn,
        round_trips: Default::default(),
        commands: Default::default(),
    };
    let lookups = Lookups::new(
        Arc::new(config),
        Store::with_connection(counting.clone()),
        None,
    );

    for round in 0..2 {
        for (tool, args) in CALLS {
            let before = counting.round_trips();
            let out = lookups.call(tool, args).await.unwrap();
            assert_eq!(
                counting.round_trips() - before,
                1,
                "{tool} {args} (round {round})"
            );
            assert!(!out.result.is_null(), "{tool} {args}");
        }
    }
    let commands = counting.commands.lock().unwrap().clone();
    // The script text goes over once; afterwards only its SHA.
    assert_eq!(commands[0], "EVAL_RO");
    assert!(
        commands[1..].iter().all(|c| c == "EVALSHA_RO"),
        "{commands:?}"
    );
    assert_eq!(commands.len(), 2 * CALLS.len());

    let orders = lookups
        .call("get_customer_orders", r#"{"customer_id":42}"#)
        .await
        .unwrap();
    let ids: Vec<i64> = orders
        .result
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, [1000, 999, 998, 997, 996, 995, 994, 993, 992, 991]);
    let orders = lookups
        .call("get_customer_orders", r#"{"customer_id":42,"limit":12}"#)
        .await
        .unwrap();
    let ids: Vec<i64> = orders
        .result
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["id"].as_i64().unwrap())
        .collect();
    assert_eq!(
        ids[10..],
        [990, 989],
        "ties at 993_000: ids 993..985 descending, after 994"
    );
    let orders = lookups
        .call("get_customer_orders", r#"{"customer_id":42,"limit":9}"#)
        .await
        .unwrap();
    let ids: Vec<i64> = orders
        .result
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, [1000, 999, 998, 997, 996, 995, 994, 993, 992]);
}

fn ro_script_calls(conn: &mut redis::Connection) -> u64 {
    let info: String = redis::cmd("INFO").arg("commandstats").query(conn).unwrap();
    info.lines()
        .filter(|l| l.starts_with("cmdstat_eval_ro:") || l.starts_with("cmdstat_evalsha_ro:"))
        .filter_map(|l| {
            l.split(&[':', ','][..])
                .find_map(|kv| kv.strip_prefix("calls="))
        })
        .map(|n| n.parse::<u64>().unwrap())
        .sum()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_binary_makes_one_script_call_and_bounded_reads() {
    let _serial = SERIAL.lock().await;
    let mut fx = Fixture::new();
    fill(&mut fx);

    for (tool, args) in CALLS {
        // Watch the server while the binary runs one lookup.
        let ((before, after), lines) = support::monitor_while(&mut fx, |fx| {
            let before = ro_script_calls(&mut fx.conn);
            let out = fx.cmd().args(["tool", tool, args]).output().unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            (before, ro_script_calls(&mut fx.conn))
        })
        .await;

        assert_eq!(
            after - before,
            1,
            "{tool} {args}: EVAL_RO + EVALSHA_RO calls"
        );
        // Other clients may be busy on a shared server: keep what touches this fixture's keys.
        let ours: Vec<&String> = lines.iter().filter(|l| l.contains(&fx.prefix)).collect();
        let (inside, outside): (Vec<&String>, Vec<&String>) =
            ours.into_iter().partition(|l| l.contains(" lua] "));
        assert_eq!(
            outside.len(),
            1,
            "{tool} {args}: client commands touching the keys: {outside:#?}"
        );
        assert!(
            outside[0].contains(r#""EVAL_RO""#) || outside[0].contains(r#""EVALSHA_RO""#),
            "{}",
            outside[0]
        );
        // Everything the binary's connection sent, whatever the keys: that one call.
        let start = outside[0].find('[').unwrap();
        let end = outside[0].find(']').unwrap();
        let client = outside[0][start..=end].to_owned(); // `[0 127.0.0.1:58860]`
        assert!(
            client.contains("127.0.0.1:") || client.contains("::1"),
            "{client}"
        );
        let from_binary: Vec<&String> = lines.iter().filter(|l| l.contains(&client)).collect();
        assert_eq!(from_binary.len(), 1, "{tool} {args}: {from_binary:#?}");

        let count = |name: &str| {
            inside
                .iter()
                .filter(|l| l.contains(&format!("] \"{name}\"")))
                .count()
        };
        let hgetall = count("HGETALL");
        match tool {
            "get_customer" if args.contains("email") => {
                assert_eq!((count("GET"), hgetall), (1, 3), "{inside:#?}");
            }
            "get_customer" | "get_order" => assert_eq!(hgetall, 3, "{inside:#?}"),
            _ => {
                let limit = if args.contains("100") { 100 } else { 10 };
                // types + freshness + one per returned order; one bounded ZREVRANGE and, as the
                // window was full, one ZRANGEBYSCORE from the boundary score up.
                assert_eq!(hgetall, 2 + limit, "{inside:#?}");
                assert_eq!(count("ZREVRANGE"), 1);
                let zrevrange = inside.iter().find(|l| l.contains("\"ZREVRANGE\"")).unwrap();
                assert!(
                    zrevrange.contains(&format!("\"0\" \"{}\" \"WITHSCORES\"", limit - 1)),
                    "{zrevrange}"
                );
                assert_eq!(count("ZRANGEBYSCORE"), 1);
                let zrangebyscore = inside
                    .iter()
                    .find(|l| l.contains("\"ZRANGEBYSCORE\""))
                    .unwrap();
                assert!(zrangebyscore.contains("\"+inf\""), "{zrangebyscore}");
                assert_eq!(
                    inside.len(),
                    hgetall + 2,
                    "nothing else inside the script: {inside:#?}"
                );
            }
        }
    }
}
