//! The sink and agent-cli against secured services, as managed deployments run them, with
//! every secret set and none of them printed:
//! - Kafka through the broker's SASL_SSL listener (SCRAM-SHA-512 for the sink, SCRAM-SHA-256
//!   for the test's producer), the password given as `${env:...}`; one topic per compression
//!   codec (zstd, gzip, snappy, lz4);
//! - the schema registry behind HTTPS and basic auth (`schema_registry.ca_file`, the password
//!   from `SCHEMA_REGISTRY_PASSWORD`);
//! - Redis over TLS with a client certificate, as ACL users: the sink as `sink` (the ACL the
//!   README documents), agent-cli as the read-only `agent` (`+@read +@connection +eval_ro
//!   +evalsha_ro`), the password once from `REDIS_PASSWORD` and once in the URL.
//!
//! The sink runs with both writers and rebuilds (as the `rebuild` user, whose ACL adds what
//! the rebuild needs); one poison record goes to the dead-letter topic. Every output stream of
//! every run (the sink at `RUST_LOG=trace`, `sink validate`, `sink rebuild`, failing runs with
//! a wrong password, `--help`, the dead letter's headers, agent-cli's `status`, `tools`,
//! `tool`, `query` and `mcp`) is searched for each secret.
//!
//! Two smaller tests give the registry its credentials every way (URL userinfo, explicit
//! user and password; the CA file is needed) and connect to Kafka with every SASL mechanism
//! (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512), wrong passwords refused and not shown.
//!
//! The secured services come from `tests/stack/up.sh` (redis.sh, kafka.sh, registry.sh), which
//! writes their settings to the env file (`REDIS_SECURE_*`, `KAFKA_SASL_*`,
//! `SCHEMA_REGISTRY_AUTH_*`); a missing setting fails the test.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use mapping::{RedisConfig, RedisTls, Secret};
use rdkafka::producer::FutureProducer;
use rdkafka::ClientConfig;
use serde_json::{json, Value as Json};
use testkit::loadgen::{self, WireRecord};

/// Compression codecs the sink must read; one topic each.
const CODECS: [&str; 4] = ["zstd", "gzip", "snappy", "lz4"];
/// Rows produced per topic.
const ROWS: i64 = 20;

fn setting(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: start the stack (tests/stack/up.sh) and source its env file")
    })
}

/// The secured services' settings from the stack's env file.
struct Stack {
    plain_bootstrap: String,
    plain_registry: String,
    sasl_bootstrap: String,
    sasl_user: String,
    sasl_password: String,
    kafka_ca: String,
    registry_url: String,
    registry_ca: String,
    registry_user: String,
    registry_password: String,
    redis_url: String,
    redis_ca: String,
    redis_cert: String,
    redis_key: String,
    admin_password: String,
    sink_password: String,
    agent_password: String,
}

impl Stack {
    fn from_env() -> Stack {
        Stack {
            plain_bootstrap: setting("KAFKA_BOOTSTRAP_SERVERS"),
            plain_registry: setting("SCHEMA_REGISTRY_URL"),
            sasl_bootstrap: setting("KAFKA_SASL_BOOTSTRAP_SERVERS"),
            sasl_user: setting("KAFKA_SASL_USERNAME"),
            sasl_password: setting("KAFKA_SASL_PASSWORD"),
            kafka_ca: setting("KAFKA_SSL_CA_FILE"),
            registry_url: setting("SCHEMA_REGISTRY_AUTH_URL"),
            registry_ca: setting("SCHEMA_REGISTRY_AUTH_CA_FILE"),
            registry_user: setting("SCHEMA_REGISTRY_AUTH_USERNAME"),
            registry_password: setting("SCHEMA_REGISTRY_AUTH_PASSWORD"),
            redis_url: setting("REDIS_SECURE_URL"),
            redis_ca: setting("REDIS_SECURE_CA_FILE"),
            redis_cert: setting("REDIS_SECURE_CERT_FILE"),
            redis_key: setting("REDIS_SECURE_KEY_FILE"),
            admin_password: setting("REDIS_SECURE_ADMIN_PASSWORD"),
            sink_password: setting("REDIS_SECURE_SINK_PASSWORD"),
            agent_password: setting("REDIS_SECURE_AGENT_PASSWORD"),
        }
    }

    /// The secured Redis as `user`.
    fn redis(&self, user: &str, password: &str) -> RedisConfig {
        RedisConfig {
            url: self.redis_url.clone(),
            tls: RedisTls {
                ca_file: Some(self.redis_ca.clone().into()),
                cert_file: Some(self.redis_cert.clone().into()),
                key_file: Some(self.redis_key.clone().into()),
            },
            username: Some(user.to_owned()),
            password: Some(Secret::new(password)),
        }
    }

    /// A producer on the SASL_SSL listener (SCRAM-SHA-256) compressing with `codec`.
    fn producer(&self, codec: &str) -> FutureProducer {
        ClientConfig::new()
            .set("bootstrap.servers", &self.sasl_bootstrap)
            .set("security.protocol", "SASL_SSL")
            .set("sasl.mechanism", "SCRAM-SHA-256")
            .set("sasl.username", &self.sasl_user)
            .set("sasl.password", &self.sasl_password)
            .set("ssl.ca.location", &self.kafka_ca)
            .set("compression.type", codec)
            .set("linger.ms", "20")
            .create()
            .expect("SASL_SSL producer")
    }
}

/// The per-run names and files.
struct Run {
    id: String,
    dir: PathBuf,
    config: PathBuf,
    /// Every output captured so far, by what produced it.
    outputs: Vec<(String, String)>,
}

impl Run {
    fn topic(&self, codec: &str) -> String {
        format!("secured-{}-{codec}", self.id)
    }

    fn tool(codec: &str) -> String {
        format!("get_{codec}_customer")
    }

    fn keep(&mut self, what: &str, output: &Output) {
        self.outputs.push((
            format!("{what} (stdout)"),
            String::from_utf8_lossy(&output.stdout).into_owned(),
        ));
        self.outputs.push((
            format!("{what} (stderr)"),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        ));
    }
}

/// `connectors.yaml` for the run: connections with no secret in them (those come from the
/// environment), one mapping and lookup per codec.
fn write_config(stack: &Stack, run: &Run) {
    let mut yaml = format!(
        "kafka:
  bootstrap_servers: {bootstrap}
  group_id: secured-{id}
  dead_letter_topic: secured-{id}-dlq
  properties:
    security.protocol: SASL_SSL
    sasl.mechanism: SCRAM-SHA-512
    sasl.username: {user}
    sasl.password: ${{env:SECURED_TEST_KAFKA_PASSWORD}}
    ssl.ca.location: {kafka_ca}
schema_registry:
  url: {registry}
  username: {registry_user}
  ca_file: {registry_ca}
redis:
  url: {redis}
  tls:
    ca_file: {redis_ca}
    cert_file: {redis_cert}
    key_file: {redis_key}
mappings:
",
        bootstrap = stack.sasl_bootstrap,
        id = run.id,
        user = stack.sasl_user,
        kafka_ca = stack.kafka_ca,
        registry = stack.registry_url,
        registry_user = stack.registry_user,
        registry_ca = stack.registry_ca,
        redis = stack.redis_url,
        redis_ca = stack.redis_ca,
        redis_cert = stack.redis_cert,
        redis_key = stack.redis_key,
    );
    for codec in CODECS {
        yaml.push_str(&format!(
            "  - name: secured_{id}_{codec}
    topic: {topic}
    key: \"secured:{id}:{codec}:customer:{{id}}\"
    lookups:
      - tool: {tool}
        description: A customer from the {codec} topic
        by:
          - param: customer_id
            type: integer
            description: Customer id
",
            id = run.id,
            topic = run.topic(codec),
            tool = Run::tool(codec),
        ));
    }
    std::fs::write(&run.config, yaml).expect("write connectors.yaml");
}

/// Registers the customers schemas for every topic and produces [`ROWS`] inserts to each, with
/// its codec, through the SASL_SSL listener.
async fn produce(stack: &Stack, run: &Run) {
    let sample = common::record("avro-customers-op_c-insert.json");
    for codec in CODECS {
        let topic = run.topic(codec);
        loadgen::create_topic(&stack.plain_bootstrap, &topic, 1)
            .await
            .expect("create topic");
        let (key, value) = common::register_table(&stack.plain_registry, &topic, "customers").await;
        let mut records: Vec<WireRecord> = (1..=ROWS)
            .map(|id| {
                let mut after = sample["value"]["after"].clone();
                after["id"] = json!(id);
                after["email"] = json!(format!("c{id}@example.com"));
                let envelope =
                    loadgen::envelope(&sample["value"], "c", None, Some(after), id, 1_000 + id);
                WireRecord {
                    topic: topic.clone(),
                    key: Some(key.encode(&json!({ "id": id })).expect("key")),
                    value: Some(value.encode(&envelope).expect("value")),
                    headers: Vec::new(),
                }
            })
            .collect();
        if codec == "zstd" {
            // A value naming a schema id the registry does not have: dead-lettered, with its
            // error text in the headers.
            records.push(WireRecord {
                topic: topic.clone(),
                key: Some(key.encode(&json!({ "id": 999 })).expect("key")),
                value: Some(vec![0, 0x7f, 0xff, 0xff, 0xf0, 1, 2, 3]),
                headers: Vec::new(),
            });
        }
        loadgen::produce_all(&stack.producer(codec), &records)
            .await
            .unwrap_or_else(|e| panic!("produce {codec} over SASL_SSL: {e}"));
    }
}

/// The dead letters of the run (waits for `expected` of them), each as its headers and
/// payload in one text.
fn dead_letters(stack: &Stack, run: &Run, expected: usize) -> Vec<String> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::{Headers, Message};
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &stack.plain_bootstrap)
        .set("group.id", format!("secured-{}-dlq-reader", run.id))
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("dlq consumer");
    consumer
        .subscribe(&[&format!("secured-{}-dlq", run.id)])
        .expect("subscribe");
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut letters = Vec::new();
    while letters.len() < expected && Instant::now() < deadline {
        let Some(message) = consumer.poll(Duration::from_millis(500)) else {
            continue;
        };
        let message = message.expect("dlq message");
        let mut text = String::new();
        if let Some(headers) = message.headers() {
            for header in headers.iter() {
                text.push_str(&format!(
                    "{}: {}\n",
                    header.key,
                    String::from_utf8_lossy(header.value.unwrap_or_default())
                ));
            }
        }
        text.push_str(&String::from_utf8_lossy(
            message.payload().unwrap_or_default(),
        ));
        letters.push(text);
    }
    letters
}

fn sink_bin() -> &'static str {
    env!("CARGO_BIN_EXE_sink")
}

/// agent-cli beside the sink binary (`cargo build --workspace` builds both).
fn agent_cli_bin() -> PathBuf {
    let path = Path::new(sink_bin()).with_file_name("agent-cli");
    assert!(
        path.exists(),
        "{} is missing: build the workspace first",
        path.display()
    );
    path
}

/// A sink command with the run's secrets in the environment only.
fn sink(stack: &Stack, run: &Run, args: &[&str]) -> Command {
    let mut command = Command::new(sink_bin());
    command
        .args(args)
        .args(["--config", run.config.to_str().unwrap()])
        .env("RUST_LOG", "trace")
        .env("SECURED_TEST_KAFKA_PASSWORD", &stack.sasl_password)
        .env("REDIS_USERNAME", "sink")
        .env("REDIS_PASSWORD", &stack.sink_password)
        .env("SCHEMA_REGISTRY_PASSWORD", &stack.registry_password)
        .env_remove("KAFKA_BOOTSTRAP_SERVERS")
        .env_remove("SCHEMA_REGISTRY_URL")
        .env_remove("REDIS_URL")
        .env_remove("SINK_GROUP_ID");
    command
}

/// An agent-cli command as the read-only user, the password in the URL.
fn agent_cli(stack: &Stack, run: &Run, args: &[&str]) -> Command {
    let url = stack.redis_url.replacen(
        "rediss://",
        &format!("rediss://agent:{}@", stack.agent_password),
        1,
    );
    let mut command = Command::new(agent_cli_bin());
    command
        .args(["--config", run.config.to_str().unwrap()])
        .args(args)
        .env("RUST_LOG", "trace")
        .env("REDIS_URL", url)
        .env("REDIS_TLS_CA_FILE", &stack.redis_ca)
        .env_remove("REDIS_USERNAME")
        .env_remove("REDIS_PASSWORD");
    command
}

fn output(mut command: Command) -> Output {
    command.stdin(Stdio::null()).output().expect("run binary")
}

fn row_count(admin: &mut redis::Connection, run: &Run, codec: &str) -> usize {
    let pattern = format!("secured:{}:{codec}:customer:*", run.id);
    let keys: Vec<String> = redis::cmd("KEYS").arg(&pattern).query(admin).expect("KEYS");
    keys.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sink_and_agent_cli_run_against_secured_services_without_printing_a_secret() {
    let stack = Stack::from_env();
    let id = common::rand_id();
    let dir = std::env::temp_dir().join(format!("sink-secured-{id}"));
    std::fs::create_dir_all(&dir).unwrap();
    let mut run = Run {
        config: dir.join("connectors.yaml"),
        dir,
        id,
        outputs: Vec::new(),
    };
    write_config(&stack, &run);
    produce(&stack, &run).await;
    let openai_key = format!("sk-test-{}", common::rand_id());
    let secrets = [
        ("kafka SASL password", stack.sasl_password.clone()),
        (
            "redis rebuild password",
            setting("REDIS_SECURE_REBUILD_PASSWORD"),
        ),
        ("registry password", stack.registry_password.clone()),
        ("redis sink password", stack.sink_password.clone()),
        ("redis agent password", stack.agent_password.clone()),
        ("redis admin password", stack.admin_password.clone()),
        ("LLM API key", openai_key.clone()),
    ];

    // `sink validate` and `--help` with every secret in the environment.
    let validate = output(sink(&stack, &run, &["validate"]));
    assert!(validate.status.success(), "{validate:?}");
    let summary = String::from_utf8_lossy(&validate.stdout);
    assert!(
        summary.contains("(basic auth as registry, ca ") && summary.contains("(as sink, ca "),
        "{summary}"
    );
    run.keep("sink validate", &validate);
    let mut help = sink(&stack, &run, &["run", "--help"]);
    help.env(
        "REDIS_URL",
        format!("rediss://sink:{}@h", stack.sink_password),
    );
    let help = output(help);
    run.keep("sink run --help", &help);

    // Wrong credentials: each fails at start-up with a message naming the service.
    let mut bad_registry = sink(&stack, &run, &["run"]);
    bad_registry.env("SCHEMA_REGISTRY_PASSWORD", "wrong");
    let bad_registry = output(bad_registry);
    assert_eq!(bad_registry.status.code(), Some(1), "{bad_registry:?}");
    let stderr = String::from_utf8_lossy(&bad_registry.stderr);
    assert!(stderr.contains("schema registry at"), "{stderr}");
    run.keep("sink run, wrong registry password", &bad_registry);
    let mut bad_redis = sink(&stack, &run, &["run"]);
    bad_redis.env(
        "REDIS_URL",
        format!(
            "{}/0",
            stack.redis_url.replacen(
                "rediss://",
                &format!("rediss://sink:{}@", stack.sink_password),
                1
            )
        ),
    );
    bad_redis.env("REDIS_PASSWORD", "wrong");
    let bad_redis = output(bad_redis);
    assert_eq!(bad_redis.status.code(), Some(1), "{bad_redis:?}");
    let stderr = String::from_utf8_lossy(&bad_redis.stderr);
    assert!(stderr.contains("redis at rediss://sink:***@"), "{stderr}");
    run.keep("sink run, wrong redis password", &bad_redis);

    // The sink consumes every codec over SASL_SSL into the TLS + ACL Redis.
    let stdout_path = run.dir.join("sink.stdout");
    let stderr_path = run.dir.join("sink.stderr");
    let mut child = sink(&stack, &run, &["run"])
        .stdout(std::fs::File::create(&stdout_path).unwrap())
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .spawn()
        .expect("start sink");
    let mut admin = sink::connection::redis_client(&stack.redis("admin", &stack.admin_password))
        .expect("admin client")
        .get_connection()
        .expect("admin connection");
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let counts: Vec<usize> = CODECS
            .iter()
            .map(|codec| row_count(&mut admin, &run, codec))
            .collect();
        if counts.iter().all(|&n| n == ROWS as usize) {
            break;
        }
        if Instant::now() > deadline || child.try_wait().unwrap().is_some() {
            let _ = child.kill();
            panic!(
                "rows per codec {counts:?} (want {ROWS} each); sink log:\n{}",
                std::fs::read_to_string(&stderr_path).unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    let status = child.wait().expect("wait");
    let sink_stderr = std::fs::read_to_string(&stderr_path).unwrap();
    assert_eq!(status.code(), Some(0), "sink exit; log:\n{sink_stderr}");
    assert!(sink_stderr.contains("offsets committed"), "{sink_stderr}");
    assert_permitted(&sink_stderr);
    run.outputs.push(("sink run (stderr)".into(), sink_stderr));
    run.outputs.push((
        "sink run (stdout)".into(),
        std::fs::read_to_string(&stdout_path).unwrap(),
    ));
    let letters = dead_letters(&stack, &run, 1);
    assert_eq!(letters.len(), 1, "the poison record is dead-lettered");
    assert!(
        letters[0].contains("40403") || letters[0].contains("not found"),
        "{}",
        letters[0]
    );
    for letter in letters {
        run.outputs
            .push(("dead letter headers and payload".into(), letter));
    }

    // The exclusive writer works under the same ACL (lease, transactions).
    exclusive_run(&stack, &mut run, &mut admin).await;
    // `sink rebuild` as the user with the rebuild's extra commands.
    let mut rebuild = sink(&stack, &run, &["rebuild", "--no-progress"]);
    rebuild
        .env("REDIS_USERNAME", "rebuild")
        .env("REDIS_PASSWORD", setting("REDIS_SECURE_REBUILD_PASSWORD"));
    let rebuild = output(rebuild);
    assert!(rebuild.status.success(), "{rebuild:?}");
    assert_permitted(&String::from_utf8_lossy(&rebuild.stderr));
    run.keep("sink rebuild", &rebuild);
    for codec in CODECS {
        assert_eq!(
            row_count(&mut admin, &run, codec),
            ROWS as usize,
            "{codec} after rebuild"
        );
    }

    // agent-cli as the read-only user: every command.
    let status = output(agent_cli(&stack, &run, &["status", "--json"]));
    assert!(status.status.success(), "{status:?}");
    let json: Json = serde_json::from_slice(&status.stdout).expect("status json");
    assert_eq!(
        json["mappings"].as_array().map(Vec::len),
        Some(CODECS.len())
    );
    run.keep("agent-cli status --json", &status);
    let table = output(agent_cli(&stack, &run, &["status"]));
    assert!(table.status.success(), "{table:?}");
    run.keep("agent-cli status", &table);
    let tools = output(agent_cli(&stack, &run, &["tools"]));
    assert!(tools.status.success(), "{tools:?}");
    run.keep("agent-cli tools", &tools);
    for codec in CODECS {
        let call = output(agent_cli(
            &stack,
            &run,
            &["tool", &Run::tool(codec), r#"{"customer_id": 7}"#],
        ));
        assert!(call.status.success(), "{call:?}");
        let answer: Json = serde_json::from_slice(&call.stdout).expect("tool json");
        assert_eq!(answer["result"]["email"], "c7@example.com", "{answer}");
        run.keep(&format!("agent-cli tool ({codec})"), &call);
    }
    let mut help = agent_cli(&stack, &run, &["--help"]);
    help.env("REDIS_PASSWORD", &stack.agent_password);
    let help = output(help);
    assert!(help.status.success(), "{help:?}");
    run.keep("agent-cli --help", &help);
    let query = query(&stack, &run, &openai_key);
    run.keep("agent-cli query", &query);
    let mcp = mcp(&stack, &run);
    run.keep("agent-cli mcp", &mcp);

    for (what, text) in &run.outputs {
        for (secret, value) in &secrets {
            assert!(
                !text.contains(value.as_str()),
                "{what} prints the {secret}:\n{text}"
            );
        }
    }
    // The trace-level sink log really was verbose: the check above read something.
    assert!(run.outputs.iter().map(|(_, t)| t.len()).sum::<usize>() > 10_000);

    common::delete_topics(
        &stack.plain_bootstrap,
        &CODECS
            .map(|c| run.topic(c))
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
        "the secured test",
    );
    std::fs::remove_dir_all(&run.dir).ok();
}

/// Panics if a log shows a command the ACL user may not run.
fn assert_permitted(log: &str) {
    for refusal in ["NOPERM", "can't run this command"] {
        assert!(!log.contains(refusal), "a command outside the ACL:\n{log}");
    }
}

/// Server time in milliseconds.
fn now_ms(redis: &mut redis::Connection) -> i64 {
    let (secs, micros): (i64, i64) = redis::cmd("TIME").query(redis).expect("TIME");
    secs * 1000 + micros / 1000
}

/// `sink run --writer exclusive` in a group of its own: takes the lease, replays every topic
/// and catches up, stops cleanly.
async fn exclusive_run(stack: &Stack, run: &mut Run, admin: &mut redis::Connection) {
    let started = now_ms(admin);
    let log = run.dir.join("exclusive.stderr");
    let mut command = sink(
        stack,
        run,
        &["run", "--writer", "exclusive", "--lease-ms", "2000"],
    );
    command
        .env("SINK_GROUP_ID", format!("secured-{}-exclusive", run.id))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
    let mut child = command.spawn().expect("start exclusive sink");
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let caught_up = CODECS.iter().all(|codec| {
            redis::cmd("HGET")
                .arg(format!("sink:freshness:secured_{}_{codec}", run.id))
                .arg("caught_up_at_ms")
                .query::<Option<i64>>(admin)
                .ok()
                .flatten()
                .is_some_and(|at| at >= started)
        });
        if caught_up {
            break;
        }
        if Instant::now() > deadline || child.try_wait().unwrap().is_some() {
            let _ = child.kill();
            panic!(
                "the exclusive sink did not catch up; log:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    let status = child.wait().expect("wait");
    let stderr = std::fs::read_to_string(&log).unwrap();
    assert_eq!(
        status.code(),
        Some(0),
        "exclusive sink exit; log:\n{stderr}"
    );
    assert!(stderr.contains("Holding the exclusive lease"), "{stderr}");
    assert!(!stderr.contains("NOPERM"), "{stderr}");
    run.outputs
        .push(("sink run --writer exclusive (stderr)".into(), stderr));
}

/// `agent-cli query` against a one-shot OpenAI-compatible server that asks for one tool call
/// and then answers; the API key is a secret too.
fn query(stack: &Stack, run: &Run, api_key: &str) -> Output {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind fake llm");
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    let tool = Run::tool("zstd");
    let server = std::thread::spawn(move || {
        let replies = [
            json!({"choices": [{"message": {"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_1", "type": "function",
                 "function": {"name": tool, "arguments": "{\"customer_id\": 3}"}}]},
                "finish_reason": "tool_calls"}]}),
            json!({"choices": [{"message": {"role": "assistant", "content": "Customer 3 is c3@example.com."},
                "finish_reason": "stop"}]}),
        ];
        let mut requests = Vec::new();
        for reply in replies {
            let (stream, _) = listener.accept().expect("accept");
            let mut reader = BufReader::new(stream);
            let mut length = 0;
            loop {
                let mut line = String::new();
                reader.read_line(&mut line).expect("header");
                if line == "\r\n" || line.is_empty() {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().expect("length");
                }
            }
            let mut body = vec![0; length];
            reader.read_exact(&mut body).expect("body");
            requests.push(String::from_utf8_lossy(&body).into_owned());
            let text = reply.to_string();
            let mut stream = reader.into_inner();
            write!(
                stream,
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{text}",
                text.len()
            )
            .expect("reply");
        }
        requests
    });
    let mut command = agent_cli(
        stack,
        run,
        &[
            "query",
            "--provider",
            "openai",
            "What is customer 3's email?",
        ],
    );
    command
        .env("OPENAI_BASE_URL", &url)
        .env("OPENAI_API_KEY", api_key);
    let out = output(command);
    assert!(out.status.success(), "{out:?}");
    let requests = server.join().expect("fake llm");
    assert!(
        requests[1].contains("c3@example.com"),
        "the tool result reached the model: {}",
        requests[1]
    );
    out
}

/// `agent-cli mcp`: initialize, list the tools, call one, and again once its read cache
/// had time to go live: the ACL user may turn on key tracking over TLS.
fn mcp(stack: &Stack, run: &Run) -> Output {
    let mut child = agent_cli(stack, run, &["mcp"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start mcp");
    let mut stdin = child.stdin.take().unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let mut send = |message: Json| writeln!(stdin, "{message}").expect("mcp stdin");
    send(
        json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": "secured-test", "version": "0"}}}),
    );
    let mut transcript = vec![lines.next().expect("initialize reply").unwrap()];
    send(json!({"jsonrpc": "2.0", "method": "notifications/initialized"}));
    send(json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}));
    transcript.push(lines.next().expect("tools/list reply").unwrap());
    send(json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call",
        "params": {"name": Run::tool("lz4"), "arguments": {"customer_id": 5}}}));
    let call = lines.next().expect("tools/call reply").unwrap();
    assert!(call.contains("c5@example.com"), "{call}");
    transcript.push(call);
    std::thread::sleep(Duration::from_millis(500));
    send(json!({"jsonrpc": "2.0", "id": 4, "method": "tools/call",
        "params": {"name": Run::tool("lz4"), "arguments": {"customer_id": 5}}}));
    let again = lines.next().expect("tools/call reply").unwrap();
    assert!(again.contains("c5@example.com"), "{again}");
    transcript.push(again);
    drop(stdin);
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .expect("mcp stderr");
    let status = child.wait().expect("mcp exit");
    assert!(
        stderr.contains("Read cache live") && !stderr.contains("Read cache off"),
        "the read cache did not go live as the agent ACL user over TLS:\n{stderr}"
    );
    Output {
        status,
        stdout: transcript.join("\n").into_bytes(),
        stderr: stderr.into_bytes(),
    }
}

/// Every way of giving the registry's credentials reaches it; a wrong password is refused
/// with a message that names the registry but not the password.
#[tokio::test]
async fn registry_credentials_work_every_way_and_wrong_ones_are_not_shown() {
    use mapping::SchemaRegistryConfig;
    use sink::registry::Registry;
    let stack = Stack::from_env();
    let with_ca = |config: SchemaRegistryConfig| SchemaRegistryConfig {
        ca_file: Some(stack.registry_ca.clone().into()),
        ..config
    };
    let in_url = stack.registry_url.replacen(
        "https://",
        &format!(
            "https://{}:{}@",
            stack.registry_user, stack.registry_password
        ),
        1,
    );
    let explicit = SchemaRegistryConfig {
        username: Some(stack.registry_user.clone()),
        password: Some(Secret::new(&stack.registry_password)),
        ..SchemaRegistryConfig::from_url(&stack.registry_url)
    };
    for (way, config) in [
        (
            "userinfo in the url",
            SchemaRegistryConfig::from_url(&in_url),
        ),
        ("username and password", explicit.clone()),
    ] {
        let registry = Registry::new(with_ca(config)).expect("registry client");
        registry
            .health_check()
            .await
            .unwrap_or_else(|e| panic!("{way}: {}", mapping::one_line(&e)));
    }
    // Without the CA the proxy's certificate is not trusted: a refusal, which `sink run`
    // reports at once, not an outage it would wait for.
    let untrusted = Registry::new(explicit.clone()).expect("registry client");
    let err = untrusted.health_check().await.unwrap_err();
    assert!(err.is_retriable(), "{err:?}");
    assert!(!err.is_outage(), "{}: {err:?}", mapping::one_line(&err));
    assert!(
        mapping::one_line(&err).contains("invalid peer certificate"),
        "{}",
        mapping::one_line(&err)
    );
    // No registry listening at an https URL is still an outage.
    let nobody = Registry::new(with_ca(SchemaRegistryConfig::from_url(
        "https://127.0.0.1:1",
    )))
    .expect("registry client")
    .health_check()
    .await
    .unwrap_err();
    assert!(nobody.is_outage(), "{nobody:?}");

    let wrong = SchemaRegistryConfig {
        password: Some(Secret::new("wrong-password-123")),
        ..explicit
    };
    let err = Registry::new(with_ca(wrong))
        .expect("registry client")
        .health_check()
        .await
        .unwrap_err();
    let text = format!("{} {err:?}", mapping::one_line(&err));
    assert!(text.contains("401"), "{text}");
    for secret in ["wrong-password-123", stack.registry_password.as_str()] {
        assert!(!text.contains(secret), "{text}");
    }
}

/// The SASL_SSL listener takes PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512; a wrong password
/// fails the start-up check without showing it.
#[tokio::test]
async fn kafka_sasl_mechanisms_connect_and_wrong_passwords_are_not_shown() {
    let stack = Stack::from_env();
    let client = |mechanism: &str, password: &str| {
        let mut client = ClientConfig::new();
        client
            .set("bootstrap.servers", &stack.sasl_bootstrap)
            .set("security.protocol", "SASL_SSL")
            .set("sasl.mechanism", mechanism)
            .set("sasl.username", &stack.sasl_user)
            .set("sasl.password", password)
            .set("ssl.ca.location", &stack.kafka_ca);
        client
    };
    let timeout = Duration::from_secs(10);
    for mechanism in ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] {
        let report =
            sink::health::check_kafka(&client(mechanism, &stack.sasl_password), &[], timeout)
                .await
                .unwrap_or_else(|e| panic!("{mechanism}: {e}"));
        assert_eq!(report.brokers, 1, "{mechanism}");
    }
    let err =
        sink::health::check_kafka(&client("SCRAM-SHA-512", "wrong-password-456"), &[], timeout)
            .await
            .unwrap_err();
    let text = format!("{err} {err:?}");
    assert!(!text.contains("wrong-password-456"), "{text}");
}
