//! `sink run --metrics-addr` as a subprocess against the real stack: after a known workload
//! (creates, updates, deletes with their tombstones, on two topics of two partitions each),
//! one poison record and two heartbeats of a source, `GET /metrics`, parsed with a Prometheus
//! text-format parser, counts exactly what was applied and dead-lettered, with no lag left and
//! the watermark's age; `/health` and `/ready` answer 200; every log line is JSON
//! (`--log-format json`); SIGTERM stops the endpoint with the sink. A metrics address that is
//! taken stops the sink at start-up with exit code 2.

mod pipeline_support;

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use pipeline_support::{fixture, generate, Scenario, Table};
use prometheus_parse::{Sample, Scrape, Value};
use serde_json::{json, Value as Json};
use testkit::loadgen::{self, envelope, WireEncoder, WireRecord};

/// How long before the test the heartbeat that the watermark confirms was committed.
const WATERMARK_AGE_S: i64 = 42;

/// A recorded writer schema (`schemas/debezium/`), as text.
fn schema_text(name: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../schemas/debezium")
        .join(name);
    let file: Json = serde_json::from_str(&std::fs::read_to_string(&path).expect("schema file"))
        .expect("schema file json");
    file["schema"].to_string()
}

/// Registers a heartbeat table's schemas for `topic` (the customers envelope with the row
/// `(id int, ts string, confirmed_lsn long)`) and encodes two heartbeats: the first committed
/// [`WATERMARK_AGE_S`] ago, the second confirming the first's LSN, so that the watermark
/// claims the first's commit time.
async fn heartbeats(registry: &str, topic: &str) -> Vec<WireRecord> {
    let key_text = schema_text("cdc.public.customers-key.v1.id1.json");
    let mut value: Json =
        serde_json::from_str(&schema_text("cdc.public.customers-value.v1.id2.json"))
            .expect("schema json");
    let before = value["fields"]
        .as_array_mut()
        .expect("envelope fields")
        .iter_mut()
        .find(|f| f["name"] == "before")
        .expect("before");
    let row = before["type"]
        .as_array_mut()
        .expect("union")
        .iter_mut()
        .find(|t| t.is_object())
        .expect("row record");
    row["fields"] = json!([
        {"name": "id", "type": "int"},
        {"name": "ts", "type": "string"},
        {"name": "confirmed_lsn", "type": ["null", "long"], "default": null},
    ]);
    let value_text = value.to_string();
    let key_id = loadgen::register(registry, &format!("{topic}-key"), &key_text)
        .await
        .expect("register key");
    let value_id = loadgen::register(registry, &format!("{topic}-value"), &value_text)
        .await
        .expect("register value");
    let key = WireEncoder::new(key_id, &key_text).expect("key schema");
    let value = WireEncoder::new(value_id, &value_text).expect("value schema");
    let template = fixture("avro-customers-op_c-insert.json")["value"].clone();
    let committed_ms = chrono::Utc::now().timestamp_millis() - WATERMARK_AGE_S * 1000;
    [
        (1_000, None, committed_ms),
        (1_008, Some(1_000), committed_ms + 1_000),
    ]
    .into_iter()
    .map(|(lsn, confirmed, ts_ms)| {
        let row = json!({"id": 1, "ts": "2026-12-06T09:00:00Z", "confirmed_lsn": confirmed});
        WireRecord {
            topic: topic.to_owned(),
            key: Some(key.encode(&json!({"id": 1})).expect("key")),
            value: Some(
                value
                    .encode(&envelope(&template, "u", None, Some(row), lsn, ts_ms))
                    .expect("value"),
            ),
            headers: Vec::new(),
        }
    })
    .collect()
}

/// A free local port (the race with other processes is tolerable in a test).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

fn sink(config: &std::path::Path, args: &[&str], log: &std::path::Path) -> Child {
    let log = std::fs::File::create(log).expect("log file");
    Command::new(env!("CARGO_BIN_EXE_sink"))
        .arg("run")
        .arg("--config")
        .arg(config)
        .args(args)
        .env("RUST_LOG", "info")
        .env_remove("KAFKA_BOOTSTRAP_SERVERS")
        .env_remove("SCHEMA_REGISTRY_URL")
        .env_remove("REDIS_URL")
        .env_remove("SINK_GROUP_ID")
        .env_remove("SINK_METRICS_ADDR")
        .env_remove("SINK_LOG_FORMAT")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start sink")
}

/// `GET url`: status and body, or `None` while nothing listens.
async fn get(url: &str) -> Option<(u16, String)> {
    let response = reqwest::get(url).await.ok()?;
    let status = response.status().as_u16();
    Some((status, response.text().await.ok()?))
}

/// Waits until `/ready` answers 200 (60 s at most); any other answer than 503 with reasons,
/// or the sink exiting, fails.
async fn wait_ready(base: &str, child: &mut Child, log: &std::path::Path) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut not_ready = Vec::new();
    loop {
        match get(&format!("{base}/ready")).await {
            Some((200, body)) => {
                assert_eq!(body, "ready\n");
                return;
            }
            Some((503, body)) => {
                assert!(body.starts_with("not ready: "), "{body}");
                not_ready.push(body);
            }
            Some(other) => panic!("/ready answered {other:?}"),
            None => {}
        }
        if let Ok(Some(status)) = child.try_wait() {
            let log = std::fs::read_to_string(log).unwrap_or_default();
            panic!("sink exited with {status} before it was ready:\n{log}");
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not ready after 60 s: {:?}",
            not_ready.last()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `GET /metrics`, parsed.
async fn scrape(base: &str) -> (Scrape, String) {
    let (status, text) = get(&format!("{base}/metrics")).await.expect("scrape");
    assert_eq!(status, 200);
    let scrape = Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).expect("prometheus text");
    (scrape, text)
}

/// A private `redis-server` on `port`, killed when dropped.
struct PrivateRedis(Child);

impl PrivateRedis {
    fn start(port: u16) -> PrivateRedis {
        let server = PrivateRedis(
            Command::new("redis-server")
                .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
                .args(["--save", "", "--appendonly", "no"])
                .stdout(Stdio::null())
                .spawn()
                .expect("redis-server must be installed (tests/stack/redis.sh installs it)"),
        );
        let url = format!("redis://127.0.0.1:{port}");
        let client = redis::Client::open(url.as_str()).expect("redis url");
        for _ in 0..100 {
            let pong = client
                .get_connection()
                .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c));
            if pong.is_ok() {
                return server;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("private redis-server on {url} did not answer");
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `sink_writer` for `exclusive`, `shared` and `standby`, in that order.
fn writer_states(scrape: &Scrape) -> [f64; 3] {
    let states = series(scrape, "sink_writer", &["writer"]);
    ["exclusive", "shared", "standby"].map(|state| {
        states
            .get(&vec![state.to_owned()])
            .map_or(f64::NAN, |s| scalar(s))
    })
}

/// The value of a counter, gauge or untyped sample.
fn scalar(sample: &Sample) -> f64 {
    match sample.value {
        Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => v,
        ref other => panic!("{} is not a scalar: {other:?}", sample.metric),
    }
}

/// The samples of `metric` whose labels include `labels`, by their label values.
fn series<'a>(
    scrape: &'a Scrape,
    metric: &str,
    labels: &[&str],
) -> BTreeMap<Vec<String>, &'a Sample> {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == metric)
        .map(|s| {
            let key = labels
                .iter()
                .map(|l| s.labels.get(l).unwrap_or_default().to_owned())
                .collect();
            (key, s)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_a_known_workload_and_the_endpoints_answer() {
    let s = Scenario::new(2).await;
    let w = generate(600);
    let mut records = s.encode(&w.events);
    let customers = s.topic(Table::Customers).to_owned();
    records.push(WireRecord {
        topic: customers.clone(),
        key: Some(b"not avro".to_vec()),
        value: Some(b"\x00poison".to_vec()),
        headers: vec![],
    });
    let source = format!("src_{}", s.id);
    let heartbeat_topic = format!("t{}.public.dbz_heartbeat", s.id);
    loadgen::create_topic(&s.stack.bootstrap, &heartbeat_topic, 1)
        .await
        .expect("create heartbeat topic");
    records.extend(heartbeats(&s.stack.registry, &heartbeat_topic).await);
    s.produce(&records).await;
    let config = std::env::temp_dir().join(format!("sink-cli-metrics-{}.yaml", s.id));
    let yaml = format!(
        "{}sources:\n  - name: {source}\n    heartbeat_topic: \"{heartbeat_topic}\"\n",
        s.yaml()
    );
    std::fs::write(&config, yaml).expect("write connectors.yaml");

    // What the workload holds, per mapping and op (a tombstone has no envelope).
    let mut expected: BTreeMap<Vec<String>, f64> = BTreeMap::new();
    for event in &w.events {
        let op = match &event.value {
            Some(envelope) => envelope["op"].as_str().expect("op").to_owned(),
            None => "tombstone".to_owned(),
        };
        *expected
            .entry(vec![s.mapping(event.table), op])
            .or_default() += 1.0;
    }
    assert!(
        ["c", "u", "d", "tombstone"]
            .iter()
            .all(|op| expected.keys().any(|k| k[1] == *op)),
        "the workload has every op: {expected:?}"
    );

    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let log = std::env::temp_dir().join(format!("sink-cli-metrics-{}.log", s.id));
    let started = std::time::Instant::now();
    let mut child = sink(
        &config,
        &[
            "--metrics-addr",
            &format!("127.0.0.1:{port}"),
            "--log-format",
            "json",
        ],
        &log,
    );

    // Ready once it has caught up; alive meanwhile.
    wait_ready(&base, &mut child, &log).await;
    assert_eq!(
        get(&format!("{base}/health")).await,
        Some((200, "ok\n".to_owned()))
    );

    // The watermark is recorded once the data before the heartbeat is applied: soon after
    // the catch-up.
    let mut scrape;
    let mut text;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        (scrape, text) = self::scrape(&base).await;
        if scrape
            .samples
            .iter()
            .any(|s| s.metric == "sink_source_watermark_age_seconds")
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no watermark age after 30 s:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let context = || format!("scrape:\n{text}");

    // The age of the first heartbeat's commit, measured at the scrape.
    let ages = series(&scrape, "sink_source_watermark_age_seconds", &["source"]);
    let age = ages
        .get(&vec![source.clone()])
        .map(|s| scalar(s))
        .unwrap_or_else(|| panic!("no age for {source}; {}", context()));
    let elapsed = started.elapsed().as_secs_f64();
    assert!(
        (WATERMARK_AGE_S as f64..WATERMARK_AGE_S as f64 + elapsed + 2.0).contains(&age),
        "age {age} s, expected {WATERMARK_AGE_S} s plus at most the {elapsed} s since"
    );

    // Every change applied, per mapping and op; the other ops are exported at 0.
    let applied = series(&scrape, "sink_events_applied_total", &["mapping", "op"]);
    for mapping in [s.mapping(Table::Customers), s.mapping(Table::Orders)] {
        for op in ["r", "c", "u", "d", "t", "tombstone"] {
            let key = vec![mapping.clone(), op.to_owned()];
            let sample = applied
                .get(&key)
                .unwrap_or_else(|| panic!("no series for {key:?}; {}", context()));
            assert!(matches!(sample.value, Value::Counter(_)), "{sample:?}");
            assert_eq!(
                scalar(sample),
                expected.get(&key).copied().unwrap_or(0.0),
                "applied {key:?}"
            );
        }
    }

    // The poison record, once, under its origin topic.
    let letters = series(&scrape, "sink_dead_letters_total", &["topic", "reason"]);
    let counted: Vec<(Vec<String>, f64)> = letters
        .iter()
        .map(|(k, s)| (k.clone(), scalar(s)))
        .collect();
    assert_eq!(
        counted,
        vec![(vec![customers.clone(), "decode".to_owned()], 1.0)],
        "{}",
        context()
    );

    // No lag on any of the four data partitions (the caught-up check leaves the heartbeat
    // topic out).
    let lag = series(
        &scrape,
        "sink_consumer_lag_records",
        &["topic", "partition"],
    );
    let mut partitions: Vec<(Vec<String>, f64)> =
        lag.iter().map(|(k, s)| (k.clone(), scalar(s))).collect();
    partitions.sort_by(|a, b| a.0.cmp(&b.0));
    let mut want: Vec<(Vec<String>, f64)> = [customers.as_str(), s.topic(Table::Orders)]
        .iter()
        .flat_map(|t| (0..2).map(move |p| (vec![t.to_string(), p.to_string()], 0.0)))
        .collect();
    want.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(partitions, want, "{}", context());

    // Batches were timed, in buckets.
    let histogram = scrape
        .samples
        .iter()
        .find(|s| s.metric == "sink_apply_batch_seconds")
        .unwrap_or_else(|| panic!("no histogram; {}", context()));
    let Value::Histogram(buckets) = &histogram.value else {
        panic!("not a histogram: {histogram:?}");
    };
    let total = buckets
        .iter()
        .find(|b| b.less_than.is_infinite())
        .expect("+Inf bucket")
        .count;
    assert!(total > 0.0, "{}", context());
    let count = scrape
        .samples
        .iter()
        .find(|s| s.metric == "sink_apply_batch_seconds_count")
        .map(scalar);
    assert_eq!(count, Some(total));

    // Every applied change's delay since its record's timestamp, under the timestamp's type:
    // the test's topics keep Kafka's default, the producer's create time. None is older than
    // the test itself.
    let applied_total: f64 = applied.values().map(|s| scalar(s)).sum();
    let delays = series(&scrape, "sink_record_delay_seconds", &["timestamp_type"]);
    let created = delays
        .get(&vec!["create_time".to_owned()])
        .unwrap_or_else(|| panic!("no create_time delays; {}", context()));
    let Value::Histogram(buckets) = &created.value else {
        panic!("not a histogram: {created:?}");
    };
    let delayed = |le: f64| {
        buckets
            .iter()
            .find(|b| b.less_than == le)
            .unwrap_or_else(|| panic!("no bucket le={le}: {buckets:?}"))
            .count
    };
    assert_eq!(delayed(f64::INFINITY), applied_total, "{}", context());
    assert_eq!(delayed(300.0), applied_total, "{}", context());
    if let Some(appended) = delays.get(&vec!["log_append_time".to_owned()]) {
        let Value::Histogram(buckets) = &appended.value else {
            panic!("not a histogram: {appended:?}");
        };
        assert!(buckets.iter().all(|b| b.count == 0.0), "{}", context());
    }

    let paused = series(&scrape, "sink_paused", &["reason"]);
    assert_eq!(
        paused
            .get(&vec!["redis_memory".to_owned()])
            .map(|s| scalar(s)),
        Some(0.0),
        "{}",
        context()
    );
    let ready = scrape.samples.iter().find(|s| s.metric == "sink_ready");
    assert_eq!(ready.map(scalar), Some(1.0), "{}", context());
    // The default writer, `auto`, is the exclusive writer here; it never fell back.
    assert_eq!(writer_states(&scrape), [1.0, 0.0, 0.0], "{}", context());
    assert!(
        series(&scrape, "sink_writer_fallbacks_total", &["reason"]).is_empty(),
        "{}",
        context()
    );
    let redis_errors: f64 = series(&scrape, "sink_redis_errors_total", &["kind"])
        .values()
        .map(|s| scalar(s))
        .sum();
    assert_eq!(redis_errors, 0.0, "{}", context());

    // SIGTERM: exit 0, and the endpoint is gone with the sink.
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .expect("wait");
    let stderr = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(status.code(), Some(0), "exit after SIGTERM; log:\n{stderr}");
    assert_eq!(get(&format!("{base}/health")).await, None);

    // Every log line is one JSON object.
    let lines: Vec<Json> = stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let messages: Vec<&str> = lines
        .iter()
        .map(|l| l["fields"]["message"].as_str().unwrap_or_default())
        .collect();
    for expected in [
        "Consuming.",
        "Dead-lettering a record.",
        "Consumer stopped; offsets committed.",
    ] {
        assert!(messages.contains(&expected), "{expected} in {messages:?}");
    }
    let letter = lines
        .iter()
        .find(|l| l["fields"]["message"] == "Dead-lettering a record.")
        .expect("dead-letter line");
    assert_eq!(letter["level"], "WARN");
    assert_eq!(letter["fields"]["topic"], customers.as_str());

    let _ = std::fs::remove_file(&log);
    let _ = std::fs::remove_file(&config);
    let mut redis = s.stack.redis();
    let _: () =
        redis::Commands::del(&mut redis, mapping::layout::watermark_key(&source)).unwrap_or(());
    s.cleanup();
    let topics = [heartbeat_topic.as_str()];
    if let Err(e) = loadgen::delete_topics(&s.stack.bootstrap, &topics).await {
        eprintln!("could not delete {heartbeat_topic}: {e}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_taken_metrics_address_is_a_start_up_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let config = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../connectors.yaml");
    let log =
        std::env::temp_dir().join(format!("sink-cli-metrics-taken-{}.log", std::process::id()));
    let mut child = sink(&config, &["--metrics-addr", &addr], &log);
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .expect("wait");
    let stderr = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!("sink: cannot listen for metrics on {addr}: ")),
        "{stderr}"
    );
    let _ = std::fs::remove_file(&log);
}

/// Redis stops answering, once while the sink is idle and once while changes arrive: `/ready`
/// says so and `sink_redis_errors_total{kind="io"}` counts the failures while `/health` stays
/// 200; once Redis answers again the sink is ready again and applies what arrived meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_redis_makes_the_sink_not_ready_until_it_answers() {
    let s = Scenario::new(1).await;
    let redis_port = free_port();
    let mut redis = Some(PrivateRedis::start(redis_port));
    let private_url = format!("redis://127.0.0.1:{redis_port}");
    let config = std::env::temp_dir().join(format!("sink-cli-metrics-redis-{}.yaml", s.id));
    std::fs::write(&config, s.yaml().replace(&s.stack.redis, &private_url)).expect("config");
    let w = generate(100);
    let records = s.encode(&w.events);
    let (before, after) = records.split_at(records.len() / 2);
    s.produce(before).await;

    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let log = std::env::temp_dir().join(format!("sink-cli-metrics-redis-{}.log", s.id));
    let mut child = sink(
        &config,
        &["--metrics-addr", &format!("127.0.0.1:{port}")],
        &log,
    );
    wait_ready(&base, &mut child, &log).await;

    // Idle: the caught-up marks the sink records every second notice the outage, and the
    // first one Redis answers again ends it.
    drop(redis.take());
    wait_unreachable(&base).await;
    redis = Some(PrivateRedis::start(redis_port));
    wait_ready(&base, &mut child, &log).await;

    // Busy: changes arrive while Redis is down.
    drop(redis.take());
    s.produce(after).await;
    wait_unreachable(&base).await;
    assert_eq!(
        get(&format!("{base}/health")).await,
        Some((200, "ok\n".to_owned()))
    );
    let (scraped, text) = scrape(&base).await;
    let errors = series(&scraped, "sink_redis_errors_total", &["kind"]);
    let io = errors.get(&vec!["io".to_owned()]).map(|s| scalar(s));
    assert!(io.is_some_and(|n| n >= 1.0), "io errors counted:\n{text}");
    let ready = scraped.samples.iter().find(|s| s.metric == "sink_ready");
    assert_eq!(ready.map(scalar), Some(0.0), "{text}");

    // Back: ready again, and every change applied. The new Redis is empty: self-healing
    // replays every partition from the earliest offset, so it ends up holding every row of the
    // workload (and counts more applied changes than records).
    redis = Some(PrivateRedis::start(redis_port));
    wait_ready(&base, &mut child, &log).await;
    let applied = || async {
        let (scraped, _) = scrape(&base).await;
        series(&scraped, "sink_events_applied_total", &["mapping", "op"])
            .values()
            .map(|s| scalar(s))
            .sum::<f64>()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut private = redis::Client::open(private_url.as_str())
        .and_then(|c| c.get_connection())
        .expect("private redis");
    let mut customer_rows = || {
        let keys: Vec<String> = redis::Commands::keys(&mut private, s.key("customer:*")).unwrap();
        keys.iter()
            .filter(|k| k.matches(':').count() == 2 && !k.ends_with(":orders"))
            .count()
    };
    while applied().await < records.len() as f64 || customer_rows() < w.customers.len() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not every change applied after the outage"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(customer_rows(), w.customers.len());

    let _ = child.kill();
    let _ = child.wait();
    drop(redis);
    let _ = std::fs::remove_file(&log);
    let _ = std::fs::remove_file(&config);
    s.cleanup();
}

/// Waits until `/ready` says Redis is unreachable (30 s at most).
async fn wait_unreachable(base: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let body = get(&format!("{base}/ready")).await.expect("/ready answers");
        if body == (503, "not ready: redis is unreachable\n".to_owned()) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "still {body:?} 30 s after redis stopped"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `--writer auto` above its memory bound: `sink_writer` says the change script writes, and
/// `sink_writer_fallbacks_total{reason="memory"}` counts the fall-back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_writer_metrics_show_a_fall_back_to_the_script() {
    let s = Scenario::new(1).await;
    let w = generate(300);
    s.produce(&s.encode(&w.events)).await;
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let log = std::env::temp_dir().join(format!("sink-cli-metrics-writer-{}.log", s.id));
    let mut child = sink(
        &s.config_path,
        &[
            "--metrics-addr",
            &format!("127.0.0.1:{port}"),
            "--max-writer-memory",
            "1B",
        ],
        &log,
    );
    wait_ready(&base, &mut child, &log).await;
    let (scrape, text) = scrape(&base).await;
    assert_eq!(writer_states(&scrape), [0.0, 1.0, 0.0], "scrape:\n{text}");
    let fallbacks = series(&scrape, "sink_writer_fallbacks_total", &["reason"]);
    assert_eq!(
        fallbacks.get(&vec!["memory".to_owned()]).map(|s| scalar(s)),
        Some(1.0),
        "scrape:\n{text}"
    );
    let _ = child.kill();
    let _ = child.wait();
    s.cleanup();
}
