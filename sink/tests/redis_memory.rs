//! Redis memory, against a private `redis-server` this test starts (so the shared Redis is
//! untouched) with the shared Kafka and schema registry: a workload larger than `maxmemory`
//! under `noeviction` makes both writers pause (readiness not ready,
//! `sink_paused{reason="redis_memory"}` 1, `OOM`s counted); they stay members of their consumer
//! groups for longer than `max.poll.interval.ms` (`GET /ready` answers 503 meanwhile), and once
//! `maxmemory` is raised they resume and apply every change, with nothing dead-lettered.
//!
//! Alone in its test binary: `sink_paused` is one gauge per process, which every new
//! pipeline's readiness sets to 0.

mod memory_support;
mod pipeline_support;

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use memory_support::{group_members, records_in, wait_for, PrivateRedis, Sink, MAX_POLL_INTERVAL};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use pipeline_support::assert_state;
use sink::telemetry::server::MetricsServer;
use tokio_util::sync::CancellationToken;

/// The metrics recorded in this test binary, as `GET /metrics` renders them (installed once,
/// before any pipeline exists).
fn metrics() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        PrometheusBuilder::new()
            .install_recorder()
            .expect("the only recorder of this binary")
    })
}

/// The value of `name{label="value"}` in the rendered metrics, if recorded.
fn metric(name: &str, label: (&str, &str)) -> Option<f64> {
    let series = format!("{name}{{{}=\"{}\"}} ", label.0, label.1);
    metrics()
        .render()
        .lines()
        .find_map(|line| line.strip_prefix(&series))
        .map(|value| value.parse().expect("a number"))
}

/// Status and body of a GET.
async fn get(url: &str) -> (u16, String) {
    let response = reqwest::get(url)
        .await
        .expect("the metrics endpoint answers");
    let status = response.status().as_u16();
    (status, response.text().await.expect("a body"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_redis_pauses_both_writers_keeps_their_groups_and_loses_nothing() {
    metrics();
    let mut redis = PrivateRedis::start("noeviction", &[]);
    // About a third of what the two workloads need (they take some 3 MB together).
    let budget = redis.used_memory() + 1_000_000;
    redis.config_set("maxmemory", &budget.to_string());
    let shutdown = CancellationToken::new();
    // The exclusive writer first: it loads its bookkeeping and takes its lease before the
    // shared one fills Redis (`sink run` would wait for room to do that).
    // Each pauses at the default share of maxmemory or on an OOM reply, whichever comes
    // first; the batches already consumed (far more than the last 5%) make OOMs certain.
    let exclusive = Sink::start(&redis.url, 6000, true, 0.95, &shutdown).await;
    let shared = Sink::start(&redis.url, 6000, false, 0.95, &shutdown).await;
    let sinks = [&shared, &exclusive];
    // `GET /ready` and `/metrics` as `sink run --metrics-addr` serves them, for the shared sink.
    let server = MetricsServer::bind("127.0.0.1:0", metrics().clone()).expect("bind");
    let base = format!("http://{}", server.local_addr());
    let serving = server.spawn(shutdown.clone()).expect("serve");
    serving.watch(&shared.readiness);

    wait_for("both sinks to pause", Duration::from_secs(60), || {
        sinks.iter().all(|s| s.is_paused())
    })
    .await;
    for s in sinks {
        assert_eq!(
            s.readiness.check().unwrap_err().to_string(),
            "not ready: paused (redis_memory), not caught up yet"
        );
    }
    assert_eq!(metric("sink_paused", ("reason", "redis_memory")), Some(1.0));
    let (status, body) = get(&format!("{base}/ready")).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("paused (redis_memory)"), "{body}");
    let (_, scraped) = get(&format!("{base}/metrics")).await;
    assert!(
        scraped.contains("sink_paused{reason=\"redis_memory\"} 1"),
        "{scraped}"
    );
    wait_for("an OOM reply", Duration::from_secs(30), || {
        metric("sink_redis_errors_total", ("kind", "oom")).is_some_and(|n| n >= 1.0)
    })
    .await;
    // A sink may pause before its group finished forming (Redis is full from the other).
    let bootstrap = shared.scenario.stack.bootstrap.clone();
    wait_for(
        "both groups to have their member",
        Duration::from_secs(30),
        || {
            sinks
                .iter()
                .all(|s| group_members(&bootstrap, &s.scenario.group).len() == 1)
        },
    )
    .await;
    let members: Vec<Vec<String>> = sinks
        .iter()
        .map(|s| group_members(&bootstrap, &s.scenario.group))
        .collect();
    let applied_while_full: Vec<i64> = sinks.iter().map(|s| s.applied()).collect();

    // Paused for longer than max.poll.interval.ms: still paused, still the same member.
    let paused_since = Instant::now();
    while paused_since.elapsed() < MAX_POLL_INTERVAL * 3 / 2 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(
            sinks.iter().all(|s| s.is_paused()),
            "resumed while redis is full"
        );
    }
    assert_eq!(metric("sink_paused", ("reason", "redis_memory")), Some(1.0));
    for (s, before) in sinks.iter().zip(&members) {
        assert_eq!(
            &group_members(&bootstrap, &s.scenario.group),
            before,
            "{}: the member left or rejoined the group while paused",
            s.scenario.group
        );
    }
    for (s, before) in sinks.iter().zip(&applied_while_full) {
        assert!(
            s.applied() < s.total,
            "applied everything although redis was full"
        );
        assert!(s.applied() >= *before);
    }

    // Room again: both resume and apply every change.
    redis.config_set("maxmemory", "0");
    wait_for(
        "both sinks to apply everything",
        Duration::from_secs(60),
        || {
            sinks
                .iter()
                .all(|s| s.applied() == s.total && !s.is_paused())
        },
    )
    .await;
    assert_eq!(metric("sink_paused", ("reason", "redis_memory")), Some(0.0));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = get(&format!("{base}/ready")).await;
        if status == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not ready after resuming: {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    shutdown.cancel();
    let (shared_summary, exclusive_summary) = (shared.task, exclusive.task);
    for (summary, s, total) in [
        (
            shared_summary.await.unwrap(),
            &shared.scenario,
            shared.total,
        ),
        (
            exclusive_summary.await.unwrap(),
            &exclusive.scenario,
            exclusive.total,
        ),
    ] {
        // Every record applied, none skipped (the offsets above). A sink whose partitions
        // were assigned while Redis was already full could not write their self-healing
        // markers; once Redis has room it starts its pipeline again and replays them from the
        // earliest offset (harmless, `pipeline/self_heal.rs`), so records may count twice.
        assert!(summary.records as i64 >= total, "{summary:?}");
        assert_eq!(summary.dead_lettered, 0, "{summary:?}");
        assert_eq!(records_in(&s.stack.bootstrap, &s.dlq), 0, "dead letters");
    }
    assert_state(&shared.scenario, &shared.workload);
    assert_state(&exclusive.scenario, &exclusive.workload);
    shared.scenario.cleanup();
    exclusive.scenario.cleanup();
}
