//! `sink run` as a subprocess, reloaded with SIGHUP against the real stack: an invalid file
//! is refused with its `file:line:col` and the sink goes on with the old mapping; a
//! key-changing file is refused with the `sink rebuild` advice; a TTL applies to rows written
//! afterwards; a new mapping's topic is consumed without a restart (with either writer; the
//! exclusive one keeps its lease and extends it to the new mapping, unless another exclusive
//! sink holds that one); `--watch-config` reloads on a file change; reloads mid-stream settle
//! every record exactly once across the pipelines and leave Redis in the source state.

mod pipeline_support;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use pipeline_support::{applied, assert_state, fixture, generate, wait_until, Scenario, Table};
use serde_json::json;
use testkit::loadgen::WireRecord;

const TIMEOUT: Duration = Duration::from_secs(60);

fn start(s: &Scenario, log: &Path, extra: &[&str]) -> Child {
    let log = std::fs::File::create(log).expect("log file");
    Command::new(env!("CARGO_BIN_EXE_sink"))
        .args(["run", "--config", s.config_path.to_str().unwrap()])
        .args(extra)
        .env("RUST_LOG", "info")
        .env_remove("KAFKA_BOOTSTRAP_SERVERS")
        .env_remove("SCHEMA_REGISTRY_URL")
        .env_remove("REDIS_URL")
        .env_remove("SINK_GROUP_ID")
        .env_remove("SINK_WATCH_CONFIG")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start sink")
}

fn signal(child: &Child, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success(), "kill -{name}");
}

/// The scenario's configuration with only the customers mapping.
fn customers_only(s: &Scenario) -> String {
    let yaml = s.yaml();
    let orders = yaml.find("  - name: orders_").expect("orders mapping");
    yaml[..orders].to_owned()
}

fn write_config(s: &Scenario, text: &str) {
    std::fs::write(&s.config_path, text).expect("write config");
}

/// A customer insert with `id`, at source position `lsn`.
fn customer(s: &Scenario, id: i64, lsn: i64) -> WireRecord {
    let sample = fixture("avro-customers-op_c-insert.json");
    let mut value = sample["value"].clone();
    value["after"]["id"] = json!(id);
    value["after"]["email"] = json!(format!("c{id}@example.com"));
    value["source"]["lsn"] = json!(lsn);
    s.record(Table::Customers, &json!({ "id": id }), Some(&value))
}

/// An order insert with `id` for customer 1, at source position `lsn`.
fn order(s: &Scenario, id: i64, lsn: i64) -> WireRecord {
    let sample = fixture("avro-orders-op_c-insert.json");
    let mut value = sample["value"].clone();
    value["after"]["id"] = json!(id);
    value["after"]["customer_id"] = json!(1);
    value["source"]["lsn"] = json!(lsn);
    s.record(Table::Orders, &json!({ "id": id }), Some(&value))
}

fn log_text(log: &Path) -> String {
    std::fs::read_to_string(log).unwrap_or_default()
}

/// Waits until the log holds `n` lines containing `text`.
async fn wait_for_log(log: &Path, text: &str, n: usize) {
    wait_until(&format!("{n} log line(s) with {text:?}"), TIMEOUT, || {
        log_text(log).lines().filter(|l| l.contains(text)).count() >= n
    })
    .await;
}

/// `line` without its terminal colour codes (`ESC [ ... m`).
fn without_colours(line: &str) -> String {
    let mut plain = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            chars.by_ref().find(|&c| c == 'm');
        } else {
            plain.push(c);
        }
    }
    plain
}

fn exists(redis: &mut redis::Connection, key: &str) -> bool {
    redis::cmd("EXISTS").arg(key).query(redis).expect("EXISTS")
}

async fn wait_for_key(redis: &mut redis::Connection, key: &str) {
    wait_until(&format!("{key} written"), TIMEOUT, || exists(redis, key)).await;
}

async fn stop(child: Child, log: &Path) {
    signal(&child, "TERM");
    let mut child = child;
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .expect("wait");
    assert_eq!(
        status.code(),
        Some(0),
        "exit after SIGTERM:\n{}",
        log_text(log)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_refuses_bad_files_and_applies_ttls_and_new_mappings() {
    let s = Scenario::new(1).await;
    let log = std::env::temp_dir().join(format!("sink-reload-{}.log", s.id));
    let mut redis = s.stack.redis();
    let path = s.config_path.display().to_string();
    write_config(&s, &customers_only(&s));
    let sink = start(&s, &log, &[]);
    wait_for_log(&log, "Consuming.", 1).await;
    s.produce(&[customer(&s, 1, 100), order(&s, 10, 101)]).await;
    wait_for_key(&mut redis, &s.key("customer:1")).await;

    // (a) An invalid file: refused on one line naming file:line:col; the old mapping goes on.
    write_config(
        &s,
        &customers_only(&s).replacen("    fields: all\n", "    fields: all\n    bogus: 1\n", 1),
    );
    signal(&sink, "HUP");
    wait_for_log(&log, "Configuration reload refused", 1).await;
    let text = log_text(&log);
    let refused = text
        .lines()
        .find(|l| l.contains("Configuration reload refused"))
        .unwrap();
    let at = refused
        .find(&format!("{path}:"))
        .unwrap_or_else(|| panic!("file named: {refused}"));
    let position: Vec<&str> = refused[at + path.len() + 1..].splitn(3, ':').collect();
    assert!(
        position[0].parse::<u32>().is_ok() && position[1].parse::<u32>().is_ok(),
        "line:col after the file: {refused}"
    );
    assert!(refused.contains("bogus"), "{refused}");
    s.produce(&[customer(&s, 2, 102)]).await;
    wait_for_key(&mut redis, &s.key("customer:2")).await;

    // (c) A key-changing file: refused with the rebuild advice; the old keys go on.
    write_config(
        &s,
        &customers_only(&s).replace(":customer:{id}\"", ":client:{id}\""),
    );
    signal(&sink, "HUP");
    wait_for_log(&log, "Configuration reload refused", 2).await;
    let text = log_text(&log);
    let refused = text
        .lines()
        .filter(|l| l.contains("Configuration reload refused"))
        .nth(1)
        .unwrap();
    assert!(refused.contains("run `sink rebuild`"), "{refused}");
    assert!(refused.contains("key changed from"), "{refused}");
    s.produce(&[customer(&s, 3, 103)]).await;
    wait_for_key(&mut redis, &s.key("customer:3")).await;
    assert!(!exists(&mut redis, &s.key("client:3")));

    // (d) A TTL applies to the rows written from then on, and batch limits at once.
    let with_ttl = customers_only(&s).replacen(
        "    fields: all\n",
        "    fields: all\n    ttl_seconds: 3600\n",
        1,
    );
    write_config(
        &s,
        &format!("batch:\n  max_records: 7\n  linger_ms: 1\n{with_ttl}"),
    );
    signal(&sink, "HUP");
    wait_for_log(&log, "Configuration reloaded", 1).await;
    // The first pipeline's line, and the reloaded one's.
    wait_for_log(&log, "Consuming.", 2).await;
    let consuming = log_text(&log)
        .lines()
        .rfind(|l| l.contains("Consuming."))
        .map(without_colours)
        .unwrap_or_default();
    assert!(
        consuming.contains("batch_records=7") && consuming.contains("linger_ms=1"),
        "the reloaded batch limits: {consuming}"
    );
    s.produce(&[customer(&s, 4, 104)]).await;
    wait_for_key(&mut redis, &s.key("customer:4")).await;
    let ttl = |redis: &mut redis::Connection, key: &str| -> i64 {
        redis::cmd("TTL").arg(key).query(redis).expect("TTL")
    };
    let expiry = ttl(&mut redis, &s.key("customer:4"));
    assert!(
        (3500..=3600).contains(&expiry),
        "ttl of a new row: {expiry}"
    );
    assert_eq!(
        ttl(&mut redis, &s.key("customer:1")),
        -1,
        "old rows keep no expiry"
    );

    // (b) A new mapping: its topic is consumed from the beginning, without a restart.
    assert!(
        !exists(&mut redis, &s.key("order:10")),
        "orders were not mapped"
    );
    write_config(&s, &s.yaml());
    signal(&sink, "HUP");
    wait_for_log(&log, "Configuration reloaded", 2).await;
    wait_for_key(&mut redis, &s.key("order:10")).await;
    s.produce(&[order(&s, 11, 105), customer(&s, 5, 106)]).await;
    wait_for_key(&mut redis, &s.key("order:11")).await;
    wait_for_key(&mut redis, &s.key("customer:5")).await;
    let members: Vec<String> = redis::cmd("ZRANGE")
        .arg(s.key("customer:1:orders"))
        .arg(0)
        .arg(-1)
        .query(&mut redis)
        .expect("ZRANGE");
    assert_eq!(members, ["10", "11"]);

    stop(sink, &log).await;
    let text = log_text(&log);
    assert_eq!(
        text.matches("Configuration reloaded").count(),
        2,
        "two reloads applied:\n{text}"
    );
    s.cleanup();
    std::fs::remove_file(log).ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_exclusive_writer_keeps_its_lease_across_a_reload_with_a_new_mapping() {
    let s = Scenario::new(1).await;
    let log = std::env::temp_dir().join(format!("sink-reload-x-{}.log", s.id));
    let mut redis = s.stack.redis();
    write_config(&s, &customers_only(&s));
    let sink = start(&s, &log, &["--writer", "exclusive", "--lease-ms", "3000"]);
    wait_for_log(&log, "Consuming.", 1).await;
    s.produce(&[customer(&s, 1, 100), order(&s, 10, 101)]).await;
    wait_for_key(&mut redis, &s.key("customer:1")).await;
    let lease = |redis: &mut redis::Connection, table| -> Option<String> {
        redis::cmd("GET")
            .arg(format!("sink:writer:{}", s.mapping(table)))
            .query(redis)
            .expect("GET")
    };
    let holder = lease(&mut redis, Table::Customers).expect("lease held");
    assert_eq!(lease(&mut redis, Table::Orders), None);

    // Another exclusive sink holds the new mapping: refused, rather than standing by.
    let orders_lease = format!("sink:writer:{}", s.mapping(Table::Orders));
    let _: () = redis::cmd("SET")
        .arg(&orders_lease)
        .arg("another-sink")
        .arg("PX")
        .arg(60_000)
        .query(&mut redis)
        .expect("SET");
    write_config(&s, &s.yaml());
    signal(&sink, "HUP");
    wait_for_log(&log, "Configuration reload refused", 1).await;
    assert!(
        log_text(&log).contains("exclusive sink `another-sink` holds the lease"),
        "{}",
        log_text(&log)
    );
    let _: () = redis::cmd("DEL")
        .arg(&orders_lease)
        .query(&mut redis)
        .expect("DEL");

    signal(&sink, "HUP");
    wait_for_log(&log, "Configuration reloaded", 1).await;
    wait_for_key(&mut redis, &s.key("order:10")).await;
    s.produce(&[customer(&s, 2, 102), order(&s, 11, 103)]).await;
    wait_for_key(&mut redis, &s.key("customer:2")).await;
    wait_for_key(&mut redis, &s.key("order:11")).await;
    assert_eq!(
        lease(&mut redis, Table::Customers).as_deref(),
        Some(&*holder)
    );
    assert_eq!(lease(&mut redis, Table::Orders).as_deref(), Some(&*holder));

    stop(sink, &log).await;
    let text = log_text(&log);
    assert!(
        !text.contains("standing by"),
        "no wait for its own lease:\n{text}"
    );
    assert_eq!(
        lease(&mut redis, Table::Customers),
        None,
        "released at exit"
    );
    assert_eq!(lease(&mut redis, Table::Orders), None, "released at exit");
    s.cleanup();
    std::fs::remove_file(log).ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_config_reloads_when_the_file_changes() {
    let s = Scenario::new(1).await;
    let log = std::env::temp_dir().join(format!("sink-reload-w-{}.log", s.id));
    let mut redis = s.stack.redis();
    write_config(&s, &customers_only(&s));
    let sink = start(&s, &log, &["--watch-config"]);
    wait_for_log(&log, "Consuming.", 1).await;
    s.produce(&[customer(&s, 1, 100), order(&s, 10, 101)]).await;
    wait_for_key(&mut redis, &s.key("customer:1")).await;
    assert!(
        !exists(&mut redis, &s.key("order:10")),
        "orders are not mapped"
    );

    write_config(&s, &s.yaml());
    wait_for_log(&log, "Configuration reloaded", 1).await;
    wait_for_key(&mut redis, &s.key("order:10")).await;

    stop(sink, &log).await;
    let text = log_text(&log);
    let reloads: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("Reloading the configuration"))
        .collect();
    assert_eq!(
        reloads.len(),
        1,
        "one reload per burst of file events:\n{text}"
    );
    assert!(reloads[0].contains("file change"), "{}", reloads[0]);
    s.cleanup();
    std::fs::remove_file(log).ok();
}

/// `line` without its ANSI colour codes.
fn plain(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            chars.by_ref().find(|c| c.is_ascii_alphabetic());
        } else {
            out.push(c);
        }
    }
    out
}

/// The `records=N` of every "offsets committed" line: what each pipeline settled.
fn settled(log: &str) -> Vec<u64> {
    log.lines()
        .filter(|l| l.contains("offsets committed"))
        .filter_map(|l| {
            let l = plain(l);
            let at = l.find(" records=")? + " records=".len();
            let digits: String = l[at..].chars().take_while(char::is_ascii_digit).collect();
            digits.parse().ok()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_under_load_lose_nothing_and_apply_nothing_twice() {
    let s = Scenario::new(2).await;
    let log = std::env::temp_dir().join(format!("sink-reload-l-{}.log", s.id));
    let mut redis = s.stack.redis();
    let w = generate(4000);
    let records = s.encode(&w.events);
    let total = records.len() as i64;
    let topics = [
        s.topic(Table::Customers).to_owned(),
        s.topic(Table::Orders).to_owned(),
    ];
    let progress =
        |redis: &mut redis::Connection| -> i64 { topics.iter().map(|t| applied(redis, t)).sum() };
    // One record per batch, so that the reloads land mid-stream.
    let sink = start(&s, &log, &["--batch-size", "1"]);
    wait_for_log(&log, "Consuming.", 1).await;
    s.produce(&records).await;

    let mut mid_stream = Vec::new();
    for (n, stale_after_ms) in [10_000, 20_000, 30_000].into_iter().enumerate() {
        // A change that applies (freshness is agent-cli's), so the pipeline is drained and
        // started again.
        write_config(
            &s,
            &format!(
                "{}freshness:\n  stale_after_ms: {stale_after_ms}\n",
                s.yaml()
            ),
        );
        signal(&sink, "HUP");
        wait_for_log(&log, "Configuration reloaded", n + 1).await;
        mid_stream.push(progress(&mut redis));
    }
    wait_until("every record applied", TIMEOUT, || {
        progress(&mut redis) == total
    })
    .await;
    stop(sink, &log).await;

    let text = log_text(&log);
    assert!(
        mid_stream[0] < total,
        "the first reload came after the last record ({mid_stream:?} of {total})"
    );
    let settled = settled(&text);
    assert_eq!(settled.len(), 4, "four pipelines:\n{text}");
    assert_eq!(
        settled.iter().sum::<u64>(),
        total as u64,
        "every record settled exactly once across the reloads ({settled:?})"
    );
    assert_state(&s, &w);
    s.cleanup();
    std::fs::remove_file(log).ok();
}
