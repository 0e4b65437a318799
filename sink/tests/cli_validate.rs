//! `sink validate` and start-up failures, through the built binary: stdout, stderr, exit code.

use std::path::PathBuf;
use std::process::{Command, Output};

fn sink(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sink"))
        .args(args)
        .env_remove("KAFKA_BOOTSTRAP_SERVERS")
        .env_remove("SCHEMA_REGISTRY_URL")
        .env_remove("REDIS_URL")
        .env_remove("SINK_GROUP_ID")
        .output()
        .expect("run sink")
}

fn temp_file(name: &str, text: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("{:08x}-{name}", rand::random::<u32>()));
    std::fs::write(&path, text).unwrap();
    path
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn the_shipped_connectors_yaml_validates() {
    let shipped = concat!(env!("CARGO_MANIFEST_DIR"), "/../connectors.yaml");
    let out = sink(&["validate", "--config", shipped]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.starts_with("OK: 2 mapping(s)"), "{stdout}");
    assert!(
        stdout.contains("customers: cdc.public.customers -> customer:{id} (1 index(es), 0 relation(s), 0 aggregate(s), 1 search(es), 2 lookup(s))"),
        "{stdout}"
    );
    // The status-filtered relation counts: `filters:` on get_customer_orders derives it.
    assert!(
        stdout.contains("orders: cdc.public.orders -> order:{id} (0 index(es), 2 relation(s), 1 aggregate(s), 0 search(es), 3 lookup(s))"),
        "{stdout}"
    );
}

#[test]
fn a_broken_yaml_prints_every_error_with_its_position_and_exits_2() {
    let path = temp_file(
        "connectors.yaml",
        r#"kafka:
  bootstrap_servers: 127.0.0.1:9092
mappings:
  - name: customers
    topic: cdc.public.customers
    key: "customer:{id"
    fields: all
  - name: customers
    topic: cdc.public.orders
    key: "order:{id}"
    fields: all
    relations:
      - name: r
        key: "customer:{customer_id}:orders"
        order_by: created_at
"#,
    );
    let out = sink(&["validate", "--config", path.to_str().unwrap()]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    assert_eq!(text(&out.stdout), "", "nothing on stdout");
    let name = path.to_str().unwrap();
    let lines: Vec<&str> = stderr.lines().filter(|l| l.starts_with(name)).collect();
    assert!(lines.len() >= 2, "every error is reported:\n{stderr}");
    for line in &lines {
        let rest = &line[name.len()..];
        let mut parts = rest.splitn(4, ':');
        assert_eq!(parts.next(), Some(""), "{line}");
        assert!(
            parts.next().unwrap().parse::<u32>().is_ok(),
            "line number in {line}"
        );
        assert!(
            parts.next().unwrap().parse::<u32>().is_ok(),
            "column in {line}"
        );
    }
    assert!(
        stderr.contains(&format!("{name}:6:10: ")),
        "the bad template is on line 6:\n{stderr}"
    );
    assert!(
        stderr.contains(&format!("{name}:8:11: duplicate mapping name")),
        "{stderr}"
    );
    std::fs::remove_file(path).ok();
}

#[test]
fn a_missing_file_exits_2() {
    let out = sink(&["validate", "--config", "/nonexistent/connectors.yaml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("/nonexistent/connectors.yaml"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn a_zero_or_unreadable_batch_max_bytes_is_refused_with_its_position() {
    let yaml = |max_bytes: &str| {
        format!(
            "batch:\n  max_bytes: {max_bytes}\nmappings:\n  - name: customers\n    \
             topic: cdc.public.customers\n    key: \"customer:{{id}}\"\n    fields: all\n"
        )
    };
    for (value, message) in [
        ("0", "max_bytes is 0"),
        ("lots", "max_bytes `lots` is not a size"),
    ] {
        let path = temp_file("connectors.yaml", &yaml(value));
        let out = sink(&["validate", "--config", path.to_str().unwrap()]);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
        assert!(
            stderr.contains(&format!("{}:2:14: {message}", path.display())),
            "{stderr}"
        );
    }
    let path = temp_file("connectors.yaml", &yaml("4MiB"));
    let out = sink(&["validate", "--config", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("batches of at most 4194304 bytes"),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn usage_errors_exit_2() {
    let out = sink(&["run", "--no-such-flag"]);
    assert_eq!(out.status.code(), Some(2));
    let out = sink(&["run", "--batch-max-bytes", "0"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("expected a size above 0"),
        "{}",
        text(&out.stderr)
    );
    let out = sink(&["run", "-X", "novalue"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("key=value"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn run_with_redis_down_names_redis_and_its_address_and_fails() {
    // Not waiting for it.
    let stderr = run_with_redis_down("0");
    assert_one_line_naming_redis(&stderr);
}

#[test]
fn run_with_redis_down_waits_for_it_as_long_as_told_then_fails() {
    let started = std::time::Instant::now();
    let stderr = run_with_redis_down("2");
    assert!(
        started.elapsed() >= std::time::Duration::from_secs(2),
        "did not wait:\n{stderr}"
    );
    // Each failed attempt meanwhile is logged with the same line.
    let retries = stderr
        .lines()
        .filter(|l| {
            l.contains("Start-up check failed; retrying.")
                && l.contains("redis at redis://127.0.0.1:1 is unreachable")
        })
        .count();
    assert!(retries >= 2, "{stderr}");
    assert_one_line_naming_redis(&stderr);
}

/// `sink run` with the shipped mapping and a Redis URL where nothing listens (port 1),
/// waiting `wait` seconds for it; it must exit 1. Its stderr.
fn run_with_redis_down(wait: &str) -> String {
    let shipped = concat!(env!("CARGO_MANIFEST_DIR"), "/../connectors.yaml");
    let out = sink(&[
        "run",
        "--config",
        shipped,
        "--redis-url",
        "redis://127.0.0.1:1",
        "--wait-for-services",
        wait,
    ]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    stderr
}

/// One error line, naming Redis and its address.
fn assert_one_line_naming_redis(stderr: &str) {
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("sink: ")).collect();
    assert_eq!(errors.len(), 1, "one clear line:\n{stderr}");
    assert!(
        errors[0].starts_with("sink: redis at redis://127.0.0.1:1 is unreachable: "),
        "{stderr}"
    );
}

/// `sink run` with Redis (and the registry unless `registry` is given) from the stack's
/// environment, plus `args`.
fn run_with(registry: Option<&str>, args: &[&str]) -> (Option<i32>, String) {
    let redis = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let stack_registry = std::env::var("SCHEMA_REGISTRY_URL")
        .unwrap_or_else(|_| "http://127.0.0.1:8081/apis/ccompat/v7".into());
    let registry = registry.unwrap_or(&stack_registry);
    let shipped = concat!(env!("CARGO_MANIFEST_DIR"), "/../connectors.yaml");
    let mut all = vec![
        "run",
        "--config",
        shipped,
        "--redis-url",
        &redis,
        "--schema-registry-url",
        registry,
    ];
    all.extend_from_slice(args);
    let out = sink(&all);
    (out.status.code(), text(&out.stderr))
}

#[test]
fn run_with_the_registry_down_names_it_and_fails() {
    let (code, stderr) = run_with(
        Some("http://127.0.0.1:1/apis/ccompat/v7"),
        &["--wait-for-services", "0"],
    );
    assert_eq!(code, Some(1), "{stderr}");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("sink: ")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(
        errors[0].starts_with(
            "sink: schema registry at http://127.0.0.1:1/apis/ccompat/v7 is unreachable: "
        ),
        "{stderr}"
    );
}

#[test]
fn run_with_kafka_down_names_it_and_fails() {
    let (code, stderr) = run_with(
        None,
        &[
            "--bootstrap-servers",
            "127.0.0.1:1",
            "--wait-for-services",
            "0",
        ],
    );
    assert_eq!(code, Some(1), "{stderr}");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("sink: ")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(
        errors[0].starts_with("sink: kafka at 127.0.0.1:1 is unreachable: "),
        "{stderr}"
    );
}
