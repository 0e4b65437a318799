//! Redis memory, the other cases, each against a private `redis-server` (the shared Redis
//! stays untouched) with the shared Kafka and schema registry:
//!
//! - a Redis that stops answering (SIGSTOP) for longer than `max.poll.interval.ms`: the sink
//!   keeps its group membership (the consume stage pauses and keeps polling), then applies
//!   everything;
//! - an evicting `maxmemory-policy` is refused (exit code 2, the message naming the policy and
//!   the fix) by `sink run` and `sink rebuild`, and accepted with `--allow-eviction`;
//!   `volatile-*` only when a mapping sets `ttl_seconds`; read from `INFO` when the sink's ACL
//!   user may not run `CONFIG`;
//! - a Redis that goes away between the health check and the policy read is an outage
//!   (waited for at start), not an unreadable policy.

mod memory_support;
mod pipeline_support;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use memory_support::{group_members, wait_for, PrivateRedis, Sink, MAX_POLL_INTERVAL};
use pipeline_support::{assert_state, rand_id, Stack};
use sink::config::MemorySettings;
use sink::readiness::Readiness;
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stalled_redis_keeps_the_group_membership_and_loses_nothing() {
    let redis = PrivateRedis::start("noeviction", &[]);
    let shutdown = CancellationToken::new();
    let sink = Sink::start(&redis.url, 6000, false, 0.95, &shutdown).await;
    let bootstrap = sink.scenario.stack.bootstrap.clone();
    wait_for(
        "the group to form and some records applied",
        Duration::from_secs(30),
        || sink.applied() > 0 && group_members(&bootstrap, &sink.scenario.group).len() == 1,
    )
    .await;
    let member = group_members(&bootstrap, &sink.scenario.group);

    // Redis stops answering (SIGSTOP) for longer than max.poll.interval.ms: the apply queue
    // fills up, the consume stage pauses the partitions and keeps polling.
    let signal = |name: &str| {
        let status = Command::new("kill")
            .args([name, &redis.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill {name}");
    };
    signal("-STOP");
    tokio::time::sleep(MAX_POLL_INTERVAL * 3 / 2).await;
    let during = group_members(&bootstrap, &sink.scenario.group);
    signal("-CONT");
    assert_eq!(
        during, member,
        "the member left or rejoined the group while redis stalled"
    );
    assert!(
        sink.applied() < sink.total,
        "everything was applied before the stall"
    );

    wait_for("everything applied", Duration::from_secs(60), || {
        sink.applied() == sink.total
    })
    .await;
    shutdown.cancel();
    let summary = sink.task.await.unwrap();
    assert_eq!(summary.records as i64, sink.total, "{summary:?}");
    assert_eq!(summary.dead_lettered, 0, "{summary:?}");
    assert_state(&sink.scenario, &sink.workload);
    sink.scenario.cleanup();
}

/// A connectors.yaml for `redis` whose topics need not exist (the checks run before
/// consuming); `ttl` gives the mapping `ttl_seconds`.
fn config_file(stack: &Stack, redis: &str, ttl: bool) -> PathBuf {
    let id = rand_id();
    let path = std::env::temp_dir().join(format!("sink-memory-{id}.yaml"));
    let ttl = if ttl { "    ttl_seconds: 600\n" } else { "" };
    std::fs::write(
        &path,
        format!(
            "kafka:\n  bootstrap_servers: \"{}\"\n  group_id: \"t{id}-group\"\n  dead_letter_topic: \"t{id}-dlq\"\n\
             schema_registry:\n  url: \"{}\"\nredis:\n  url: \"{redis}\"\n\
             mappings:\n  - name: customers_{id}\n    topic: \"t{id}.public.customers\"\n    key: \"t{id}:customer:{{id}}\"\n{ttl}",
            stack.bootstrap, stack.registry
        ),
    )
    .unwrap();
    path
}

/// Runs the `sink` binary with `args`; its exit code and stderr.
fn sink(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_sink"))
        .args(args)
        .envs(env.iter().copied())
        .env_remove("KAFKA_BOOTSTRAP_SERVERS")
        .env_remove("SCHEMA_REGISTRY_URL")
        .env_remove("REDIS_URL")
        .env_remove("SINK_ALLOW_EVICTION")
        .env("RUST_LOG", "info")
        .output()
        .expect("run sink");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test]
async fn an_evicting_policy_is_refused_with_exit_2_unless_allowed() {
    let stack = Stack::get().await;
    let redis = PrivateRedis::start("allkeys-lru", &[]);
    let config = config_file(&stack, &redis.url, false);
    let config = config.to_str().unwrap();

    for command in ["run", "rebuild"] {
        let (code, stderr) = sink(&[command, "--config", config], &[]);
        assert_eq!(code, Some(2), "sink {command}: {stderr}");
        let refusal = stderr
            .lines()
            .find(|l| l.starts_with("sink: "))
            .unwrap_or_else(|| panic!("sink {command}: no error line in {stderr}"));
        for part in [
            "maxmemory-policy `allkeys-lru`",
            "redis evicts any key",
            "CONFIG SET maxmemory-policy noeviction",
            "--allow-eviction",
        ] {
            assert!(
                refusal.contains(part),
                "sink {command}: `{part}` missing in {refusal}"
            );
        }
    }

    // Allowed by the flag or the environment: it starts (and runs until stopped).
    for (args, env) in [
        (vec!["run", "--config", config, "--allow-eviction"], vec![]),
        (
            vec!["run", "--config", config],
            vec![("SINK_ALLOW_EVICTION", "true")],
        ),
    ] {
        let log = std::env::temp_dir().join(format!("sink-memory-{}.log", rand_id()));
        let mut child = Command::new(env!("CARGO_BIN_EXE_sink"))
            .args(&args)
            .envs(env.iter().copied())
            .env_remove("KAFKA_BOOTSTRAP_SERVERS")
            .env_remove("SCHEMA_REGISTRY_URL")
            .env_remove("REDIS_URL")
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start sink");
        let started = Instant::now();
        let text = loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if text.contains("Consuming.") {
                break text;
            }
            if let Some(status) = child.try_wait().unwrap() {
                panic!("{args:?} {env:?} exited with {status}: {text}");
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "{args:?} did not start: {text}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert!(
            text.contains("Redis may evict the sink's keys; starting anyway (--allow-eviction)."),
            "{text}"
        );
        let kill = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(kill.success());
        assert_eq!(child.wait().unwrap().code(), Some(0));
        let _ = std::fs::remove_file(&log);
    }
    let _ = std::fs::remove_file(config);
}

/// `sink::memory::start` with the mapping of `config_file` (`ttl` or not) against `redis`.
async fn start_guard(
    stack: &Stack,
    redis: &mapping::RedisConfig,
    ttl: bool,
    allow_eviction: bool,
) -> Result<(), sink::memory::MemoryError> {
    let path = config_file(stack, &redis.url, ttl);
    let config = mapping::load_config(&path, &mapping::ConnectionOverrides::default()).unwrap();
    let _ = std::fs::remove_file(&path);
    let settings = MemorySettings {
        pause_at_share: 0.95,
        allow_eviction,
    };
    sink::memory::start(redis, &config.mappings, settings, &Readiness::new())
        .await
        .map(drop)
}

#[tokio::test]
async fn volatile_policies_are_refused_only_with_ttl_mappings() {
    let stack = Stack::get().await;
    let redis = PrivateRedis::start("volatile-lru", &[]);
    let config = mapping::RedisConfig::from_url(redis.url.as_str());
    let refused = start_guard(&stack, &config, true, false).await.unwrap_err();
    assert!(refused.is_refusal(), "{refused:?}");
    let text = refused.to_string();
    assert!(
        text.contains("maxmemory-policy `volatile-lru`: redis evicts keys that have a TTL"),
        "{text}"
    );
    assert!(text.contains("(ttl_seconds)"), "{text}");
    start_guard(&stack, &config, false, false)
        .await
        .expect("volatile-lru without ttl_seconds");
    start_guard(&stack, &config, true, true)
        .await
        .expect("allowed");
}

#[tokio::test]
async fn the_policy_is_read_from_info_when_config_is_not_allowed() {
    let stack = Stack::get().await;
    let mut redis = PrivateRedis::start("allkeys-lfu", &[]);
    let _: () = redis::cmd("ACL")
        .arg(
            &[
                "SETUSER", "sink", "on", ">sink-pw", "~*", "+@all", "-config",
            ][..],
        )
        .query(&mut redis.admin)
        .unwrap();
    let mut config = mapping::RedisConfig::from_url(redis.url.as_str());
    config.username = Some("sink".to_owned());
    config.password = Some(mapping::Secret::new("sink-pw"));
    let refused = start_guard(&stack, &config, false, false)
        .await
        .unwrap_err();
    assert!(refused.is_refusal(), "{refused:?}");
    assert!(
        refused
            .to_string()
            .contains("maxmemory-policy `allkeys-lfu`"),
        "{refused}"
    );
    // Neither CONFIG nor INFO: named, and not a refusal of the policy itself.
    let _: () = redis::cmd("ACL")
        .arg(&["SETUSER", "sink", "-info"][..])
        .query(&mut redis.admin)
        .unwrap();
    let unreadable = start_guard(&stack, &config, false, false)
        .await
        .unwrap_err();
    assert!(!unreadable.is_refusal(), "{unreadable:?}");
    let text = unreadable.to_string();
    assert!(
        text.starts_with("cannot read maxmemory-policy of redis at "),
        "{text}"
    );
    assert!(!text.contains("sink-pw"), "{text}");
}

/// Redis stopping after the health check's `PING` and before the policy read (here: the
/// connection dropped as `CONFIG GET` is sent, by a proxy in front of a real Redis) is an
/// outage, which `sink run` waits for at start, not a policy it cannot read (exit 1).
#[tokio::test]
async fn a_redis_gone_while_the_policy_is_read_is_an_outage() {
    let stack = Stack::get().await;
    let redis = PrivateRedis::start("noeviction", &[]);
    let proxy = dropping_proxy(&redis.url, b"CONFIG").await;
    let config = mapping::RedisConfig::from_url(proxy.as_str());
    let error = start_guard(&stack, &config, false, false)
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            sink::memory::MemoryError::Policy(sink::memory::PolicyError::Connect { .. })
        ),
        "{error:?}"
    );
    let start = sink::pipeline::StartError::Memory(error);
    assert!(
        start.is_unreachable() && start.is_redis_unreachable(),
        "{start:?}"
    );
    // The same Redis, read directly, passes.
    let direct = mapping::RedisConfig::from_url(redis.url.as_str());
    start_guard(&stack, &direct, false, false)
        .await
        .expect("noeviction, read directly");
}

/// A TCP address forwarding to the Redis at `url` (`redis+unix://`) that closes a
/// connection, both ways, when its client sends `word`.
async fn dropping_proxy(url: &str, word: &'static [u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let socket = url
        .strip_prefix("redis+unix://")
        .expect("a private redis listens on a unix socket")
        .to_owned();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(server) = tokio::net::UnixStream::connect(&socket).await else {
                return;
            };
            tokio::spawn(async move {
                let (mut from_client, mut to_client) = client.into_split();
                let (mut from_server, mut to_server) = server.into_split();
                let up = async {
                    let mut buf = [0u8; 4096];
                    loop {
                        let n = from_client.read(&mut buf).await?;
                        if n == 0 || buf[..n].windows(word.len()).any(|w| w == word) {
                            return Ok::<(), std::io::Error>(());
                        }
                        to_server.write_all(&buf[..n]).await?;
                    }
                };
                let down = tokio::io::copy(&mut from_server, &mut to_client);
                tokio::select! {
                    _ = up => {}
                    _ = down => {}
                }
            });
        }
    });
    format!("redis://{address}")
}
