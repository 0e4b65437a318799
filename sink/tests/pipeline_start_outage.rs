//! `sink run` started while a service is down waits for it (`--wait-for-services`, unset by
//! default: as long as it takes) instead of exiting into a supervisor's restart, and then
//! applies everything; with a limit, it gives up after it, naming the service.

mod memory_support;
mod pipeline_support;

use std::time::{Duration, Instant};

use memory_support::PrivateRedis;
use pipeline_support::{assert_state, generate, Scenario};
use sink::config::{BatchSettings, SinkConfig};
use sink::pipeline::StopWhen;
use sink::run::RunError;
use tokio_util::sync::CancellationToken;

/// A scenario whose Redis is `redis` (nothing need listen there yet), with `events` changes
/// produced, and the configuration `sink run` would load for it.
async fn scenario_on(
    redis: &str,
    events: usize,
) -> (Scenario, testkit::loadgen::Workload, SinkConfig) {
    let mut s = Scenario::new(2).await;
    s.stack.redis = redis.to_owned();
    std::fs::write(&s.config_path, s.yaml()).unwrap();
    let w = generate(events);
    s.produce(&s.encode(&w.events)).await;
    let cfg = s.sink_config(BatchSettings::default());
    (s, w, cfg)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sink_started_before_redis_waits_for_it_then_applies_everything() {
    let socket = PrivateRedis::new_socket();
    let (s, w, cfg) = scenario_on(&PrivateRedis::url_of(&socket), 1500).await;
    let run = tokio::spawn(async move {
        sink::run::run(&cfg, StopWhen::CaughtUp, CancellationToken::new()).await
    });
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(!run.is_finished(), "gave up on redis before it started");

    let _redis = PrivateRedis::start_on(socket, "noeviction", &[]);
    let summary = tokio::time::timeout(Duration::from_secs(90), run)
        .await
        .expect("caught up once redis answered")
        .expect("join")
        .expect("the sink runs");
    assert!(summary.changes > 0, "{summary:?}");
    assert_state(&s, &w);
    s.cleanup();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sink_gives_up_on_redis_after_wait_for_services_naming_it() {
    let socket = PrivateRedis::new_socket();
    let url = PrivateRedis::url_of(&socket);
    let (mut s, _, cfg) = scenario_on(&url, 10).await;
    let cfg = cfg.with_wait_for_services(Some(Duration::from_secs(2)));
    let started = Instant::now();
    let refused = tokio::time::timeout(
        Duration::from_secs(60),
        sink::run::run(&cfg, StopWhen::CaughtUp, CancellationToken::new()),
    )
    .await
    .expect("gave up")
    .expect_err("redis never answered");
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "did not wait: {refused:#}"
    );
    let RunError::Start(e) = &refused else {
        panic!("not a start-up error: {refused:#}")
    };
    assert!(e.is_redis_unreachable(), "{e:#}");
    let message = format!("{:#}", anyhow::Error::new(refused));
    assert!(
        message.contains(&format!("redis at {url} is unreachable")),
        "{message}"
    );
    // Nothing was written; the topics go.
    s.stack.redis = pipeline_support::Stack::get().await.redis.clone();
    s.cleanup();
}
