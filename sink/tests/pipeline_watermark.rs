//! The source watermark is never ahead of the data (issue #12), against real Kafka, the
//! registry and Redis: customers on 4 partitions, consumed and applied in parallel, and a
//! heartbeat topic whose records confirm the positions of data already acknowledged by the
//! broker (as Debezium's `confirmed_flush_lsn` does). The heartbeat partition is tiny and
//! always ahead of the data partitions, so a heartbeat is consumed while data before it on
//! other partitions is still being applied. A checker reads `sink:watermark:{source}` and
//! then `sink:rows:{mapping}` over and over: every change at or below the watermark's LSN
//! must already be in Redis.

mod pipeline_support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pipeline_support::{fixture, Scenario, Table};
use redis::Commands;
use serde_json::{json, Value as Json};
use sink::config::{BatchSettings, SinkConfig};
use sink::pipeline::StopWhen;
use testkit::loadgen::{self, envelope, WireEncoder, WireRecord};
use tokio_util::sync::CancellationToken;

const ROUNDS: usize = 15;
/// Rounds produced only once the watermark reached the previous one.
const PACED_ROUNDS: usize = 3;
const PER_ROUND: i64 = 300;
const ROWS: i64 = 120;
const BASE_MICROS: i64 = 1_795_480_593_142_906;

/// A recorded writer schema (`schemas/debezium/`), as text.
fn schema_text(name: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../schemas/debezium")
        .join(name);
    let file: Json = serde_json::from_str(&std::fs::read_to_string(&path).expect("schema file"))
        .expect("schema file json");
    file["schema"].to_string()
}

/// The recorded customers value schema with the row replaced by the heartbeat table's
/// columns `(id int, ts string, confirmed_lsn long)`.
fn heartbeat_value_schema() -> String {
    let mut schema: Json =
        serde_json::from_str(&schema_text("cdc.public.customers-value.v1.id2.json"))
            .expect("schema json");
    let fields = schema["fields"].as_array_mut().expect("envelope fields");
    let before = fields
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
        {"name": "ts", "type": {"type": "string", "connect.version": 1, "connect.name": "io.debezium.time.ZonedTimestamp"}},
        {"name": "confirmed_lsn", "type": ["null", "long"], "default": null},
    ]);
    schema.to_string()
}

/// Where a checker saw the watermark ahead of a row.
fn violations(
    redis: &mut redis::Connection,
    rows_key: &str,
    key_prefix: &str,
    source: &str,
    produced: &[(i64, i64)],
) -> Option<(i64, Vec<String>)> {
    let watermark: Option<i64> = redis
        .hget(
            mapping::layout::watermark_key(source),
            mapping::layout::watermark::LSN,
        )
        .expect("HGET watermark");
    let watermark = watermark?;
    let rows: HashMap<String, String> = redis.hgetall(rows_key).expect("HGETALL rows");
    // The newest change of each row at or below the watermark.
    let mut newest: HashMap<i64, i64> = HashMap::new();
    for &(lsn, id) in produced.iter().filter(|(lsn, _)| *lsn <= watermark) {
        let e = newest.entry(id).or_insert(lsn);
        *e = (*e).max(lsn);
    }
    let behind: Vec<String> = newest
        .iter()
        .filter_map(|(id, lsn)| {
            let key = format!("{key_prefix}{id}");
            let stored = rows
                .get(&key)
                .and_then(|p| p.parse::<i64>().ok())
                .unwrap_or(-1);
            (stored < *lsn).then(|| format!("{key}: stored {stored} < {lsn}"))
        })
        .collect();
    Some((watermark, behind))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watermark_never_runs_ahead_of_data_on_other_partitions() {
    let s = Scenario::new(4).await;
    let source = format!("src_{}", s.id);
    let heartbeat_topic = format!("t{}.public.dbz_heartbeat", s.id);
    loadgen::create_topic(&s.stack.bootstrap, &heartbeat_topic, 1)
        .await
        .expect("create heartbeat topic");
    let key_text = schema_text("cdc.public.customers-key.v1.id1.json");
    let value_text = heartbeat_value_schema();
    let key_id = loadgen::register(
        &s.stack.registry,
        &format!("{heartbeat_topic}-key"),
        &key_text,
    )
    .await
    .expect("register key");
    let value_id = loadgen::register(
        &s.stack.registry,
        &format!("{heartbeat_topic}-value"),
        &value_text,
    )
    .await
    .expect("register value");
    let hb_key = WireEncoder::new(key_id, &key_text).expect("key schema");
    let hb_value = WireEncoder::new(value_id, &value_text).expect("value schema");

    let yaml = format!(
        "{}sources:\n  - name: {source}\n    heartbeat_topic: \"{heartbeat_topic}\"\n",
        s.yaml()
    );
    let config = mapping::load_config_str(&yaml, "connectors.yaml", &Default::default())
        .unwrap_or_else(|e| panic!("{e}"));
    let cfg = SinkConfig::new(
        config,
        &[],
        BatchSettings::new(100, Duration::from_millis(5)),
    );
    let shutdown = CancellationToken::new();
    let sink = tokio::spawn({
        let shutdown = shutdown.clone();
        async move { sink::run::run(&cfg, StopWhen::Shutdown, shutdown).await }
    });

    let produced: Arc<Mutex<Vec<(i64, i64)>>> = Arc::default();
    let done = CancellationToken::new();
    let checker = tokio::task::spawn_blocking({
        let (produced, done) = (Arc::clone(&produced), done.clone());
        let mut redis = s.stack.redis();
        let rows_key = mapping::layout::rows_key(&s.mapping(Table::Customers));
        let key_prefix = s.key("customer:");
        let source = source.clone();
        move || {
            let mut seen = Vec::new();
            while !done.is_cancelled() {
                let snapshot = produced.lock().unwrap().clone();
                if let Some((watermark, behind)) =
                    violations(&mut redis, &rows_key, &key_prefix, &source, &snapshot)
                {
                    assert!(
                        behind.is_empty(),
                        "watermark {watermark} ahead of the data: {behind:?}"
                    );
                    if seen.last() != Some(&watermark) {
                        seen.push(watermark);
                    }
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            seen
        }
    });

    // Stops the checker however the test ends: a panic would otherwise leave its blocking
    // task polling, and the runtime waits for blocking tasks, so the test would hang.
    let stop_checker = done.clone().drop_guard();

    let template = fixture("avro-customers-op_c-insert.json")["value"].clone();
    let producer = loadgen::producer(&s.stack.bootstrap).expect("producer");
    let mut lsn: i64 = 40_000_000;
    let heartbeat = |lsn: i64, confirmed: i64| WireRecord {
        topic: heartbeat_topic.clone(),
        key: Some(hb_key.encode(&json!({"id": 1})).expect("key")),
        value: Some(
            hb_value
                .encode(&envelope(
                    &template,
                    "u",
                    None,
                    Some(
                        json!({"id": 1, "ts": "2026-12-06T09:00:00Z", "confirmed_lsn": confirmed}),
                    ),
                    lsn,
                    1_795_480_000_000 + lsn,
                ))
                .expect("value"),
        ),
        headers: Vec::new(),
    };
    let rows_key = mapping::layout::rows_key(&s.mapping(Table::Customers));
    let mut rows_redis = s.stack.redis();
    for round in 0..ROUNDS {
        let mut records = Vec::new();
        let mut batch = Vec::new();
        for n in 0..PER_ROUND {
            lsn += 8;
            let id = (lsn / 8 + n) % ROWS + 1;
            let row = json!({
                "id": id, "email": format!("c{id}@example.com"), "name": format!("Customer {id}"),
                "plan": "pro", "mrr_cents": lsn, "created_at": BASE_MICROS, "updated_at": BASE_MICROS,
            });
            let value = envelope(
                &template,
                "u",
                None,
                Some(row),
                lsn,
                1_795_480_000_000 + lsn,
            );
            records.push(s.record(Table::Customers, &json!({"id": id}), Some(&value)));
            batch.push((lsn, id));
        }
        loadgen::produce_all(&producer, &records)
            .await
            .expect("produce data");
        // Acknowledged by the broker: now the slot may confirm them.
        let confirmed = lsn;
        produced.lock().unwrap().extend(batch);
        lsn += 8;
        loadgen::produce_all(&producer, &[heartbeat(lsn, confirmed)])
            .await
            .expect("produce heartbeat");
        // The first rounds wait until the sink stored their last change, so that the
        // watermark moves in steps the checker can see even when the sink joins its group
        // late (it would otherwise take the whole backlog at once); the rest come as fast as
        // they can.
        if round < PACED_ROUNDS {
            let (last_lsn, last_id) = *produced.lock().unwrap().last().expect("a change");
            let row = s.key(&format!("customer:{last_id}"));
            pipeline_support::wait_until(
                "the sink stores the round's last change",
                Duration::from_secs(60),
                || {
                    let stored: Option<i64> = rows_redis.hget(&rows_key, &row).unwrap_or(None);
                    stored >= Some(last_lsn)
                },
            )
            .await;
        }
    }
    // One more heartbeat confirming the last one: the watermark must reach the end.
    let last = lsn;
    lsn += 8;
    loadgen::produce_all(&producer, &[heartbeat(lsn, last)])
        .await
        .expect("produce heartbeat");

    let mut redis = s.stack.redis();
    pipeline_support::wait_until(
        "the watermark reaches the last confirmation",
        Duration::from_secs(60),
        || {
            let w: Option<i64> = redis
                .hget(
                    mapping::layout::watermark_key(&format!("src_{}", s.id)),
                    "lsn",
                )
                .unwrap_or(None);
            w == Some(last)
        },
    )
    .await;
    drop(stop_checker);
    let seen = checker.await.expect("checker");
    shutdown.cancel();
    sink.await.expect("sink task").expect("sink");
    assert!(
        seen.len() >= 3,
        "the watermark advanced only through {seen:?}"
    );
    let _: () = redis
        .del(mapping::layout::watermark_key(&format!("src_{}", s.id)))
        .unwrap_or(());
    s.cleanup();
    if let Err(e) = loadgen::delete_topics(&s.stack.bootstrap, &[&heartbeat_topic]).await {
        eprintln!("could not delete {heartbeat_topic}: {e}");
    }
}
