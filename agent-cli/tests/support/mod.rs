//! Shared test support: a real Redis (`REDIS_URL`, default `redis://127.0.0.1:6379`; the
//! tests FAIL when it is unreachable: start it with `tests/stack/redis.sh start`), a
//! connectors.yaml with a random key prefix and mapping names per test, and writers that fill
//! Redis in the documented layout (ARCHITECTURE.md) the way the sink does.
#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};

use rand::Rng;
use redis::Commands;

/// The Redis the tests use.
pub fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// A synchronous connection; panics with instructions when Redis is unreachable.
pub fn redis() -> redis::Connection {
    let url = redis_url();
    let client =
        redis::Client::open(url.as_str()).unwrap_or_else(|e| panic!("bad REDIS_URL {url}: {e}"));
    client.get_connection_with_timeout(std::time::Duration::from_secs(3)).unwrap_or_else(|e| {
        panic!("Redis is not reachable at {url} ({e}); start it with `tests/stack/redis.sh start` or set REDIS_URL")
    })
}

/// The built binary.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_agent-cli"))
}

/// The repository's default connectors.yaml.
pub fn default_config() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../connectors.yaml")
}

/// Milliseconds since the epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// One test's slice of Redis: keys under a random prefix, mappings with random names.
pub struct Fixture {
    /// Random token, e.g. `t3f9a...`.
    pub prefix: String,
    /// `customers_{prefix}`.
    pub customers: String,
    /// `orders_{prefix}`.
    pub orders: String,
    /// The generated connectors.yaml.
    pub config: PathBuf,
    _dir: tempfile::TempDir,
    pub conn: redis::Connection,
}

impl Fixture {
    /// A fixture with the default freshness bound (30 s).
    pub fn new() -> Self {
        Self::with_stale_after_ms(30_000)
    }

    /// A fixture whose connectors.yaml sets `freshness.stale_after_ms`.
    pub fn with_stale_after_ms(stale_after_ms: u64) -> Self {
        let token: u64 = rand::rng().random();
        let prefix = format!("t{token:016x}");
        let customers = format!("customers_{prefix}");
        let orders = format!("orders_{prefix}");
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("connectors.yaml");
        let yaml = format!(
            r#"kafka:
  bootstrap_servers: 127.0.0.1:9092
  group_id: agent-cli-test
  dead_letter_topic: agent-cli-test-dlq
schema_registry:
  url: http://127.0.0.1:8081
redis:
  url: {redis}
freshness:
  stale_after_ms: {stale_after_ms}
mappings:
  - name: {customers}
    topic: cdc.{prefix}.customers
    key: "{prefix}:customer:{{id}}"
    fields: all
    indexes:
      - name: email
        key: "{prefix}:customer:email:{{email}}"
    lookups:
      - tool: get_customer
        description: Look up a customer by ID or email address
        by:
          - param: customer_id
            type: integer
            description: Customer ID
          - param: email
            type: string
            description: Customer email
            index: email
  - name: {orders}
    topic: cdc.{prefix}.orders
    key: "{prefix}:order:{{id}}"
    fields: all
    relations:
      - name: customer_orders
        key: "{prefix}:customer:{{customer_id}}:orders"
        order_by: created_at
    aggregates:
      - name: customer_order_stats
        key: "{prefix}:customer:{{customer_id}}:order_stats"
        count: true
        sum: [total_cents]
        group_by: status
    lookups:
      - tool: get_order
        description: Look up a specific order by ID
        by:
          - param: order_id
            type: integer
            description: Order ID
      - tool: get_customer_orders
        description: Get recent orders for a customer, newest first
        relation: customer_orders
        by:
          - param: customer_id
            type: integer
            description: Customer ID
        limit:
          param: limit
          description: Max orders to return
          default: 10
          max: 100
      - tool: get_customer_order_stats
        description: Count and total of a customer's orders, overall and by status
        aggregate: customer_order_stats
        by: [{{ param: customer_id, type: integer, description: Customer ID }}]
"#,
            redis = redis_url()
        );
        std::fs::File::create(&config)
            .unwrap()
            .write_all(yaml.as_bytes())
            .unwrap();
        Fixture {
            prefix,
            customers,
            orders,
            config,
            _dir: dir,
            conn: redis(),
        }
    }

    /// `agent-cli --config <this fixture's file>` with `REDIS_URL` set.
    pub fn cmd(&self) -> assert_cmd::Command {
        let mut cmd = assert_cmd::Command::new(bin());
        cmd.arg("--config")
            .arg(&self.config)
            .env("REDIS_URL", redis_url())
            .env_remove("AGENT_CLI_STALE_AFTER_MS");
        cmd
    }

    /// Edits this fixture's connectors.yaml: `anchor`, which must occur exactly once, becomes
    /// `replacement`.
    pub fn edit_config(&self, anchor: &str, replacement: &str) {
        let yaml = std::fs::read_to_string(&self.config).unwrap();
        assert_eq!(yaml.matches(anchor).count(), 1, "{anchor:?} in {yaml}");
        std::fs::write(&self.config, yaml.replace(anchor, replacement)).unwrap();
    }

    /// Records the customer and order types the way the sink does.
    pub fn put_types(&mut self) {
        let customers = [
            ("id", "int"),
            ("email", "string"),
            ("name", "string"),
            ("plan", "string"),
            ("mrr_cents", "int"),
            ("created_at", "timestamp"),
            ("updated_at", "timestamp"),
        ];
        let orders = [
            ("id", "int"),
            ("customer_id", "int"),
            ("status", "string"),
            ("total_cents", "int"),
            ("items", "json"),
            ("created_at", "timestamp"),
            ("updated_at", "timestamp"),
        ];
        let _: () = self
            .conn
            .hset_multiple(format!("sink:types:{}", self.customers), &customers)
            .unwrap();
        let _: () = self
            .conn
            .hset_multiple(format!("sink:types:{}", self.orders), &orders)
            .unwrap();
    }

    /// A customer row and its email index entry (NULL columns are simply absent).
    pub fn put_customer(&mut self, id: i64, email: &str, name: &str, plan: &str, mrr_cents: i64) {
        let key = format!("{}:customer:{id}", self.prefix);
        let fields = [
            ("id", id.to_string()),
            ("email", email.to_owned()),
            ("name", name.to_owned()),
            ("plan", plan.to_owned()),
            ("mrr_cents", mrr_cents.to_string()),
            ("created_at", "2026-01-15T08:30:00.000000Z".to_owned()),
        ];
        let _: () = self.conn.hset_multiple(&key, &fields).unwrap();
        let _: () = self
            .conn
            .set(
                format!("{}:customer:email:{email}", self.prefix),
                id.to_string(),
            )
            .unwrap();
    }

    /// An order row and its relation membership (score = created_at in epoch microseconds).
    pub fn put_order(
        &mut self,
        id: i64,
        customer_id: i64,
        created_at_micros: i64,
        status: &str,
        total_cents: i64,
    ) {
        let key = format!("{}:order:{id}", self.prefix);
        let fields = [
            ("id", id.to_string()),
            ("customer_id", customer_id.to_string()),
            ("status", status.to_owned()),
            ("total_cents", total_cents.to_string()),
            ("items", format!(r#"[{{"sku":"SKU-{id}","qty":1}}]"#)),
            ("created_at", micros_rfc3339(created_at_micros)),
            ("updated_at", micros_rfc3339(created_at_micros)),
        ];
        let _: () = self.conn.hset_multiple(&key, &fields).unwrap();
        let _: () = self
            .conn
            .zadd(
                format!("{}:customer:{customer_id}:orders", self.prefix),
                id.to_string(),
                created_at_micros as f64,
            )
            .unwrap();
    }

    /// `sink:freshness:{mapping}`.
    pub fn put_freshness(
        &mut self,
        mapping: &str,
        source_ts_ms: Option<i64>,
        caught_up_at_ms: Option<i64>,
    ) {
        let key = format!("sink:freshness:{mapping}");
        let _: () = self.conn.del(&key).unwrap();
        let mut fields = vec![
            ("applied_count", "17".to_owned()),
            ("applied_at_ms", now_ms().to_string()),
        ];
        if let Some(ts) = source_ts_ms {
            fields.push(("source_ts_ms", ts.to_string()));
        }
        if let Some(ts) = caught_up_at_ms {
            fields.push(("caught_up_at_ms", ts.to_string()));
        }
        let _: () = self.conn.hset_multiple(&key, &fields).unwrap();
    }

    /// Every key of this fixture.
    pub fn keys(&mut self) -> Vec<String> {
        let mut keys: Vec<String> = self.conn.keys(format!("{}:*", self.prefix)).unwrap();
        for m in [&self.customers, &self.orders] {
            keys.push(format!("sink:types:{m}"));
            keys.push(format!("sink:freshness:{m}"));
        }
        keys
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let keys = self.keys();
        let _: Result<(), _> = self.conn.del(keys);
    }
}

/// Epoch microseconds -> `2026-11-24T09:56:33.142906Z`, as the sink renders timestamps.
pub fn micros_rfc3339(micros: i64) -> String {
    chrono::DateTime::from_timestamp_micros(micros)
        .unwrap()
        .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// Runs `agent-cli tool` and returns (exit code, stdout JSON or Null, stderr).
pub fn run_tool(
    fx: &Fixture,
    name: &str,
    args: &str,
    extra: &[&str],
) -> (i32, serde_json::Value, String) {
    let out = fx
        .cmd()
        .args(extra)
        .arg("tool")
        .arg(name)
        .arg(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    let json = if stdout.trim().is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_str(&stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {stdout}"))
    };
    (out.status.code().unwrap_or(-1), json, stderr)
}

/// A redis-server of the test's own on a free port (for server-level scenarios that must not
/// disturb a shared Redis: restarts, renamed commands). Killed when dropped.
pub struct PrivateRedis {
    pub port: u16,
    pub url: String,
    args: Vec<String>,
    child: Option<std::process::Child>,
    _dir: tempfile::TempDir,
}

impl PrivateRedis {
    /// Starts `redis-server` with extra arguments (e.g. `--rename-command EVAL_RO ""`).
    pub fn start(extra: &[&str]) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut me = PrivateRedis {
            port,
            url: format!("redis://127.0.0.1:{port}"),
            args: extra.iter().map(|s| (*s).to_owned()).collect(),
            child: None,
            _dir: tempfile::tempdir().unwrap(),
        };
        me.restart();
        me
    }

    /// Starts the server (again, on the same port, empty).
    pub fn restart(&mut self) {
        self.stop();
        let child = std::process::Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .arg("--dir")
            .arg(self._dir.path())
            .args(&self.args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start redis-server ({e}): install it (apt-get install redis-server)")
            });
        self.child = Some(child);
        let client = redis::Client::open(self.url.as_str()).unwrap();
        for _ in 0..100 {
            if let Ok(mut c) =
                client.get_connection_with_timeout(std::time::Duration::from_millis(200))
            {
                if redis::cmd("PING").query::<String>(&mut c).is_ok() {
                    return;
                }
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        panic!("redis-server on port {} did not come up", self.port);
    }

    /// Stops the server.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// A connection to it.
    pub fn conn(&self) -> redis::Connection {
        redis::Client::open(self.url.as_str())
            .unwrap()
            .get_connection()
            .unwrap()
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Runs `run` while the server's `MONITOR` records, and returns its result with every line
/// recorded meanwhile (all clients: callers keep what names their fixture's prefix). The
/// recording ends at a marker `ECHO` sent after `run`, so it holds everything `run` caused.
pub async fn monitor_while<T>(
    fx: &mut Fixture,
    run: impl FnOnce(&mut Fixture) -> T,
) -> (T, Vec<String>) {
    use futures::StreamExt;

    let client = redis::Client::open(redis_url()).unwrap();
    let monitor = client.get_async_monitor().await.unwrap();
    let marker = format!("{}-done", fx.prefix);
    let collector = {
        let marker = marker.clone();
        tokio::spawn(async move {
            let mut stream = monitor.into_on_message::<String>();
            let mut lines = Vec::new();
            while let Some(line) = stream.next().await {
                if line.contains(&marker) {
                    break;
                }
                lines.push(line);
            }
            lines
        })
    };
    let out = run(fx);
    let _: String = redis::cmd("ECHO").arg(&marker).query(&mut fx.conn).unwrap();
    let lines = tokio::time::timeout(std::time::Duration::from_secs(10), collector)
        .await
        .unwrap()
        .unwrap();
    (out, lines)
}
