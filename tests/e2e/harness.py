"""The whole pipeline for one end-to-end test: PostgreSQL -> Debezium -> Kafka -> the real
`sink run` binary -> Redis -> the real `agent-cli` binary, checked against SQL.

    from harness import Pipeline

    with Pipeline("email_change") as p:         # database + connector + topics (Scenario),
        p.execute("UPDATE customers ...")       # a Redis database of its own, sink running
        p.converge_customer(1)                  # agent-cli get_customer == SELECT, polled
        p.assert_redis_matches_sql()            # every key in the db accounted for

Isolation: each pipeline has its own PostgreSQL database, connector, replication slot and
topic prefix (see scenario.py), its own Kafka consumer group and dead-letter topic, and its
own Redis *logical database* (`redis://host:port/N`), so the key names are exactly those of
the default connectors.yaml. The temporary config is the default file with only the topics
renamed (`cdc.public.x` -> `{prefix}.public.x`) and the dead-letter topic moved.

Comparisons render SQL values the way ARCHITECTURE.md says agent-cli returns them: integers
as JSON numbers, timestamps as RFC 3339 UTC with microseconds, JSON columns parsed, NULL as
null. They poll (SQL and agent-cli queried anew each round) until equal, and fail with a
field-by-field diff after the timeout.

Services come from the environment tests/run.sh exports (REDIS_URL, KAFKA_BOOTSTRAP_SERVERS,
SCHEMA_REGISTRY_URL, PGPORT, CONNECT_PORT), else from the stack scripts' defaults; binaries
from SINK_BIN / AGENT_CLI_BIN, else $CARGO_TARGET_DIR/debug. A missing service or binary is
a test failure with a message saying what to start, never a skip.
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import os
import secrets
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import redis
import yaml
from confluent_kafka import Consumer, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient

from scenario import REPO, Scenario, stack

HOW_TO_START = ('start the stack: eval "$(bash tests/stack/up.sh redis kafka registry postgres connect)"'
                " (tests/run.sh does it)")

# Redis logical databases the e2e tests may take (the Rust tests use low numbers).
E2E_DBS = range(15, 1, -1)
CLAIM_KEY = "e2e:claim"  # our marker in a claimed database; ignored by the key checks


# ---------------------------------------------------------------- environment


def _stack_url(script: str, fallback: str) -> str:
    try:
        return stack(script, "url").strip() or fallback
    except Exception:  # noqa: BLE001 - the default then; a wrong one fails loudly later
        return fallback


def redis_base_url() -> str:
    """REDIS_URL without a database number."""
    url = os.environ.get("REDIS_URL") or _stack_url("redis.sh", "redis://127.0.0.1:6379")
    scheme, rest = url.split("://", 1)
    return f"{scheme}://{rest.split('/', 1)[0]}"


def kafka_bootstrap() -> str:
    return os.environ.get("KAFKA_BOOTSTRAP_SERVERS") or _stack_url("kafka.sh", "127.0.0.1:9092")


def registry_url() -> str:
    return os.environ.get("SCHEMA_REGISTRY_URL") or _stack_url(
        "registry.sh", "http://127.0.0.1:8081/apis/ccompat/v7")


def binary(name: str) -> Path:
    """The built binary `name` (sink, agent-cli); fails when it was not built."""
    env = {"sink": "SINK_BIN", "agent-cli": "AGENT_CLI_BIN"}[name]
    if os.environ.get(env):
        path = Path(os.environ[env])
    else:
        target = Path(os.environ.get("CARGO_TARGET_DIR") or Path.home() / ".cache/agent-context/target")
        path = target / "debug" / name
    if not os.access(path, os.X_OK):
        raise AssertionError(f"{name} binary not found at {path}: build it (cargo build --workspace) "
                             f"or set {env}")
    return path


# ---------------------------------------------------------------- SQL -> agent-cli JSON


def render_timestamp(v: dt.datetime) -> str:
    """RFC 3339 UTC with microseconds (TIMESTAMP without zone is taken as UTC, as Debezium does)."""
    if v.tzinfo is not None:
        v = v.astimezone(dt.timezone.utc).replace(tzinfo=None)
    return v.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def epoch_micros(v: dt.datetime) -> int:
    if v.tzinfo is None:
        v = v.replace(tzinfo=dt.timezone.utc)
    delta = v - dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
    return (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds


def json_value(v: Any) -> Any:
    """A SQL value (as psycopg returns it) as agent-cli returns it."""
    if isinstance(v, bool) or v is None or isinstance(v, (int, float, str)):
        return v
    if isinstance(v, dt.datetime):
        return render_timestamp(v)
    if isinstance(v, dt.date):
        return v.isoformat()
    if isinstance(v, decimal.Decimal):
        return str(v)
    if isinstance(v, (dict, list)):  # json/jsonb, parsed by psycopg
        return v
    raise TypeError(f"no agent-cli rendering for SQL value {v!r} ({type(v).__name__})")


def stored_text(v: Any) -> str | None:
    """A SQL value as the sink stores it in a hash field (None: the field is absent)."""
    if v is None:
        return None
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (dict, list)):
        return json.dumps(v)
    j = json_value(v)
    return j if isinstance(j, str) else str(j)


def diff(actual: Any, expected: Any, path: str = "") -> list[str]:
    """Field-by-field differences, one line each (empty when equal)."""
    here = path or "result"
    if isinstance(actual, dict) and isinstance(expected, dict):
        out = []
        for k in sorted(set(actual) | set(expected)):
            sub = f"{path}.{k}" if path else k
            if k not in actual:
                out.append(f"{sub}: missing in agent-cli, SQL has {expected[k]!r}")
            elif k not in expected:
                out.append(f"{sub}: agent-cli has {actual[k]!r}, SQL has no such column")
            else:
                out.extend(diff(actual[k], expected[k], sub))
        return out
    if isinstance(actual, list) and isinstance(expected, list):
        def ident(x: Any) -> Any:
            return x.get("id") if isinstance(x, dict) else x
        if [ident(x) for x in actual] != [ident(x) for x in expected]:
            return [f"{here}: agent-cli ids {[ident(x) for x in actual]} != SQL ids {[ident(x) for x in expected]}"]
        out = []
        for i, (a, e) in enumerate(zip(actual, expected)):
            out.extend(diff(a, e, f"{here}[{i}]"))
        return out
    if actual != expected or type(actual) is not type(expected):
        return [f"{here}: agent-cli {actual!r} != SQL {expected!r}"]
    return []


# ---------------------------------------------------------------- Redis database


class RedisDb:
    """One logical Redis database taken for a test: an empty one if any, else one whose content
    is ours (an earlier e2e run) or left behind by earlier test binaries (flushed)."""

    def __init__(self, base_url: str):
        self.base_url = base_url
        self.token = secrets.token_hex(4)
        try:
            redis.Redis.from_url(base_url, socket_timeout=5).ping()
        except redis.RedisError as e:
            raise AssertionError(f"redis at {base_url} does not answer: {e} ({HOW_TO_START})") from e
        chosen = self._claim(lambda r: r.dbsize() == 1) or self._claim(lambda r: True)
        if chosen is None:
            raise AssertionError(f"no free Redis database in {list(E2E_DBS)} at {base_url}: every one is "
                                 f"claimed by a running e2e test ({CLAIM_KEY})")
        self.db, self.r = chosen
        self.url = f"{base_url}/{self.db}"

    def _claim(self, acceptable: Callable[[redis.Redis], bool]) -> tuple[int, redis.Redis] | None:
        for n in E2E_DBS:
            r = redis.Redis.from_url(f"{self.base_url}/{n}", decode_responses=True, socket_timeout=10)
            if not r.set(CLAIM_KEY, self.token, nx=True, ex=3600):
                continue
            if acceptable(r):
                # Whatever else is there was left by earlier tests: start empty.
                for key in r.scan_iter(count=1000):
                    if key != CLAIM_KEY:
                        r.unlink(key)
                return n, r
            r.delete(CLAIM_KEY)
        return None

    def keys(self) -> set[str]:
        return {k for k in self.r.scan_iter(count=1000) if k != CLAIM_KEY}

    def release(self) -> None:
        self.r.flushdb()


# ---------------------------------------------------------------- processes


class Sink:
    """`sink run --config F` as a subprocess, stderr to a log file."""

    def __init__(self, config: Path, env: dict[str, str], log: Path):
        self.log = log
        self._log_file = open(log, "ab")
        self.proc = subprocess.Popen(
            [str(binary("sink")), "run", "--config", str(config)],
            env=env, stdin=subprocess.DEVNULL, stdout=self._log_file, stderr=subprocess.STDOUT)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log.read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        return "\n".join(text[-lines:])

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM, wait; SIGKILL after the timeout. Returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log_file.close()
        return self.proc.returncode


def delete_topics(bootstrap: str, prefix: str) -> None:
    """Deletes the topics named `prefix.*` (a test's Debezium topics and dead-letter topic),
    so that the broker does not gather every run's topics. Best effort: a failure is printed."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    try:
        topics = [t for t in admin.list_topics(timeout=5).topics if t.startswith(prefix + ".")]
        for topic, fut in (admin.delete_topics(topics, operation_timeout=10).items() if topics else ()):
            fut.result(15)
    except (KafkaException, TimeoutError) as e:
        print(f"could not delete the topics {prefix}.*: {e!r}")


def run_agent_cli(config: Path, redis_url: str, *args: str, timeout: float = 20.0) -> subprocess.CompletedProcess:
    env = {**os.environ, "REDIS_URL": redis_url, "RUST_LOG": "warn"}
    env.pop("AGENT_CLI_CONFIG", None)
    env.pop("AGENT_CLI_STALE_AFTER_MS", None)
    return subprocess.run([str(binary("agent-cli")), "--config", str(config), *args], env=env,
                          capture_output=True, text=True, timeout=timeout)


def order_stats(orders: Any) -> dict[str, dict[str, str]]:
    """The `customer:{customer_id}:order_stats` hashes of the default connectors.yaml's aggregate
    (mapping::layout::aggregate), from the order rows: count and sum of total_cents, overall and
    per status; only customers with orders have one."""
    out: dict[str, dict[str, int]] = {}
    for o in orders:
        if o["customer_id"] is None:
            continue
        h = out.setdefault(f"customer:{o['customer_id']}:order_stats", {})
        cents = int(o["total_cents"] or 0)
        h["count"] = h.get("count", 0) + 1
        h["sum:total_cents"] = h.get("sum:total_cents", 0) + cents
        if o["status"] is not None:
            h[f"group_count:{o['status']}"] = h.get(f"group_count:{o['status']}", 0) + 1
            key = f"group_sum:total_cents:{o['status']}"
            h[key] = h.get(key, 0) + cents
    return {k: {f: str(v) for f, v in h.items()} for k, h in out.items()}


# The default connectors.yaml's prefix search (`search: name_prefix` on customers): its sorted
# set and members hash (mapping::layout::search_key, search_members_key).
SEARCH_KEY = "sink:search:customers:name_prefix"
SEARCH_MEMBERS_KEY = "sink:search:customers:name_prefix:members"


def search_member(name: str, customer_id: int) -> str:
    """A customer's member of the name search (mapping::search::member): the lower-cased name,
    the id as 16 hex digits with its sign bit flipped, the row key, separated by NUL."""
    sortable = (customer_id + 2**63) % 2**64
    return f"{name.lower()}\0{sortable:016x}\0customer:{customer_id}"


# ---------------------------------------------------------------- the pipeline


MAPPING_TABLES = {"customers": "customers", "orders": "orders"}
# get_customer's `include` in the default connectors.yaml: its newest orders, at most this many.
RECENT_ORDERS = 3

# How Debezium writes the records (`Pipeline(converter=...)`): Confluent's AvroConverter (the
# Connect worker's default), or Kafka Connect's JsonConverter set on the connector, with the
# Connect schema embedded in each record (`json`) or without (`json_plain`, the format of
# Debezium's tutorial).
CONVERTERS = ("avro", "json", "json_plain")
JSON_CONVERTER = "org.apache.kafka.connect.json.JsonConverter"

# What a user declares for `json_plain` (`types:` in connectors.yaml) so that the values mean
# what the schema would have said: the seed tables' timestamps and JSONB, and the columns
# test_add_column_mid_stream adds whose JSON alone is ambiguous (an integer column would
# otherwise be recorded as `long`, a NUMERIC(10, 2) as its base64 text, a DATE as a number).
JSON_PLAIN_TYPES = {
    "customers": {"created_at": "timestamp_micros", "updated_at": "timestamp_micros",
                  "loyalty": "int", "credit": "decimal(2)", "birthday": "date"},
    "orders": {"items": "json", "created_at": "timestamp_micros", "updated_at": "timestamp_micros"},
}


def converter_props(converter: str) -> dict[str, str]:
    """The connector properties that make Debezium write with `converter`."""
    if converter == "avro":
        return {}
    enable = "true" if converter == "json" else "false"
    return {"key.converter": JSON_CONVERTER, "value.converter": JSON_CONVERTER,
            "key.converter.schemas.enable": enable, "value.converter.schemas.enable": enable}


def scenario_config(prefix: str, redis_url: str, bootstrap: str, registry: str, group: str,
                    converter: str = "avro", watermark: bool = False) -> dict:
    """The default connectors.yaml with the topics moved to `prefix` (and for `json_plain`,
    the declared types). Without `watermark` its `sources` are left out, so freshness is the
    sink's own view of the Kafka log (what these tests were written against); with it, the
    source watermark (test_source_watermark.py)."""
    cfg = yaml.safe_load((REPO / "connectors.yaml").read_text())
    cfg["kafka"]["bootstrap_servers"] = bootstrap
    cfg["kafka"]["group_id"] = group
    cfg["kafka"]["dead_letter_topic"] = f"{prefix}.dlq"
    cfg["schema_registry"]["url"] = registry
    cfg["redis"]["url"] = redis_url
    for m in cfg["mappings"]:
        assert m["topic"].startswith("cdc."), m["topic"]
        m["topic"] = prefix + m["topic"][len("cdc"):]
        if converter == "json_plain":
            m["types"] = JSON_PLAIN_TYPES[m["name"]]
    if not watermark:
        cfg.pop("sources", None)
    for s in cfg.get("sources", []):
        assert s["heartbeat_topic"].startswith("cdc."), s["heartbeat_topic"]
        s["heartbeat_topic"] = prefix + s["heartbeat_topic"][len("cdc"):]
    return cfg


class Pipeline:
    """A Scenario (database, connector, topics) + a Redis database + the sink running on them."""

    def __init__(self, name: str, *, poll_interval_ms: int | None = None, start_sink: bool = True,
                 timeout: float = 10.0, connector_props: dict[str, str] | None = None,
                 writer: str = "shared", converter: str = "avro", watermark: bool = False):
        assert converter in CONVERTERS, converter
        self.name = name
        self.writer = writer
        self.converter = converter
        self.watermark = watermark  # the default connectors.yaml's `sources` (see scenario_config)
        props = {**converter_props(converter), **(connector_props or {})}
        self.sc = Scenario(name, poll_interval_ms=poll_interval_ms, connector_props=props)
        self.start_sink_at_enter = start_sink
        self.timeout = timeout
        self.bootstrap = kafka_bootstrap()
        self.registry = registry_url()
        self.tmp = Path(tempfile.mkdtemp(prefix=f"e2e-{self.sc.db}-"))
        self.config_path = self.tmp / "connectors.yaml"
        self.sink: Sink | None = None
        self.db: RedisDb | None = None

    # ------------------------------------------------------------ lifecycle

    def __enter__(self) -> "Pipeline":
        try:
            self.db = RedisDb(redis_base_url())
            try:
                self.sc.start()
            except Exception as e:
                raise AssertionError(f"scenario {self.name}: {e}\n({HOW_TO_START})") from e
            cfg = scenario_config(self.sc.prefix, self.db.url, self.bootstrap, self.registry,
                                  f"e2e-sink-{self.sc.prefix}", self.converter,
                                  watermark=self.watermark)
            self.config_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
            self.wait_for_topics([self.sc.topic("customers"), self.sc.topic("orders")])
            if self.start_sink_at_enter:
                self.start_sink()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        code = None
        if self.sink is not None:
            code = self.sink.stop()
            if exc_type is not None:
                print(f"---- sink log ({self.sink.log}), last lines:\n{self.sink.log_tail()}")
        if self.db is not None and exc_type is None:
            self.db.release()
        elif self.db is not None:
            print(f"---- Redis database {self.db.url} kept for inspection (claim {CLAIM_KEY} expires in 1 h)")
        self.sc.close()
        if exc_type is None:
            delete_topics(self.bootstrap, self.sc.prefix)  # after the connector is gone
        if exc_type is None and code not in (None, 0):
            raise AssertionError(f"sink exited {code} after SIGTERM; log:\n{self.sink.log_tail()}")

    def sink_env(self) -> dict[str, str]:
        env = {**os.environ, "RUST_LOG": os.environ.get("E2E_SINK_LOG", "info")}
        # The config file says it all; the stack's variables would override it.
        for k in ("REDIS_URL", "KAFKA_BOOTSTRAP_SERVERS", "SCHEMA_REGISTRY_URL", "SINK_GROUP_ID"):
            env.pop(k, None)
        env["SINK_WRITER"] = self.writer  # `sink run --writer`
        return env

    def start_sink(self) -> Sink:
        assert self.sink is None or not self.sink.alive(), "the sink is already running"
        self.sink = Sink(self.config_path, self.sink_env(), self.tmp / "sink.log")
        return self.sink

    def wait_for_topics(self, topics: list[str], timeout: float = 30.0) -> None:
        """Debezium creates its topics with the snapshot's first records."""
        admin = AdminClient({"bootstrap.servers": self.bootstrap})
        deadline = time.monotonic() + timeout
        while True:
            try:
                have = set(admin.list_topics(timeout=5).topics)
            except KafkaException as e:
                raise AssertionError(f"kafka at {self.bootstrap}: {e} ({HOW_TO_START})") from e
            if all(t in have for t in topics):
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"Debezium did not create {topics} within {timeout}s "
                                     f"(connector {self.sc.connector}: connect.sh connector-status)")
            time.sleep(0.1)

    # ------------------------------------------------------------ SQL

    def execute(self, sql: str, params: Any = None) -> None:
        self.sc.execute(sql, params)

    def transaction(self, statements: list) -> None:
        self.sc.transaction(statements)

    def rows(self, sql: str, params: Any = None) -> list[dict[str, Any]]:
        cur = self.sc.conn.execute(sql, params)
        names = [c.name for c in cur.description]
        return [dict(zip(names, r)) for r in cur.fetchall()]

    def sql_customer(self, customer_id: int) -> dict | None:
        rows = self.rows("SELECT * FROM customers WHERE id = %s", (customer_id,))
        return self.with_recent_orders(rows[0]) if rows else None

    def sql_customer_by_email(self, email: str) -> dict | None:
        rows = self.rows("SELECT * FROM customers WHERE email = %s", (email,))
        return self.with_recent_orders(rows[0]) if rows else None

    def with_recent_orders(self, row: dict) -> dict:
        """A customer row as get_customer answers it: with the default connectors.yaml's
        `include` (its RECENT_ORDERS newest orders as `recent_orders`)."""
        customer = {k: json_value(v) for k, v in row.items()}
        customer["recent_orders"] = self.sql_customer_orders(customer["id"], RECENT_ORDERS)
        return customer

    def sql_find_customers(self, prefix: str, limit: int) -> list[dict]:
        """find_customers' answer: customers whose lower-cased name starts with the lower-cased
        prefix, by lower-cased name (code point order) then id, at most `limit`."""
        rows = self.rows("SELECT * FROM customers WHERE name IS NOT NULL")
        hits = [r for r in rows if r["name"].lower().startswith(prefix.lower())]
        hits.sort(key=lambda r: (r["name"].lower(), r["id"]))
        return [{k: json_value(v) for k, v in r.items()} for r in hits[:limit]]

    def sql_order(self, order_id: int) -> dict | None:
        rows = self.rows("SELECT * FROM orders WHERE id = %s", (order_id,))
        return {k: json_value(v) for k, v in rows[0].items()} if rows else None

    def sql_customer_orders(self, customer_id: int, limit: int) -> list[dict]:
        rows = self.rows("SELECT * FROM orders WHERE customer_id = %s ORDER BY created_at DESC, id DESC LIMIT %s",
                         (customer_id, limit))
        return [{k: json_value(v) for k, v in r.items()} for r in rows]

    # ------------------------------------------------------------ agent-cli

    def agent_cli(self, *args: str) -> subprocess.CompletedProcess:
        return run_agent_cli(self.config_path, self.db.url, *args)

    def tool(self, name: str, args: dict) -> dict:
        """`agent-cli tool NAME 'ARGS'`, parsed: {"result": ..., "freshness": {...}}."""
        r = self.agent_cli("tool", name, json.dumps(args))
        if r.returncode != 0:
            raise AssertionError(f"agent-cli tool {name} {json.dumps(args)} exited {r.returncode}: {r.stderr.strip()}")
        try:
            out = json.loads(r.stdout)
        except json.JSONDecodeError as e:
            raise AssertionError(f"agent-cli tool {name} printed no JSON ({e}): {r.stdout!r}") from e
        assert set(out) >= {"result", "freshness"}, f"agent-cli tool output lacks result/freshness: {out}"
        return out

    def status(self) -> dict:
        r = self.agent_cli("status", "--json")
        if r.returncode != 0:
            raise AssertionError(f"agent-cli status --json exited {r.returncode}: {r.stderr.strip()}")
        return json.loads(r.stdout)

    # ------------------------------------------------------------ convergence

    def converge(self, what: str, actual: Callable[[], Any], expected: Callable[[], Any],
                 timeout: float | None = None) -> Any:
        """Polls until actual() == expected() (both evaluated anew each round); fails with a diff."""
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            exp = expected()
            act = actual()
            d = diff(act, exp)
            if not d:
                return act
            if time.monotonic() > deadline:
                sink_state = "" if self.sink is None or self.sink.alive() else \
                    f"\nTHE SINK EXITED ({self.sink.proc.returncode}):\n{self.sink.log_tail()}"
                raise AssertionError(
                    f"{what}: agent-cli did not match SQL within {timeout or self.timeout}s:\n  "
                    + "\n  ".join(d) + f"\nagent-cli: {json.dumps(act, sort_keys=True)}"
                    f"\nSQL:       {json.dumps(exp, sort_keys=True)}{sink_state}")
            time.sleep(0.05)

    def converge_customer(self, customer_id: int, timeout: float | None = None) -> Any:
        return self.converge(f"get_customer customer_id={customer_id}",
                             lambda: self.tool("get_customer", {"customer_id": customer_id})["result"],
                             lambda: self.sql_customer(customer_id), timeout)

    def converge_email(self, email: str, timeout: float | None = None) -> Any:
        return self.converge(f"get_customer email={email}",
                             lambda: self.tool("get_customer", {"email": email})["result"],
                             lambda: self.sql_customer_by_email(email), timeout)

    def converge_order(self, order_id: int, timeout: float | None = None) -> Any:
        return self.converge(f"get_order order_id={order_id}",
                             lambda: self.tool("get_order", {"order_id": order_id})["result"],
                             lambda: self.sql_order(order_id), timeout)

    def converge_customer_orders(self, customer_id: int, limit: int = 100, timeout: float | None = None) -> Any:
        return self.converge(f"get_customer_orders customer_id={customer_id} limit={limit}",
                             lambda: self.tool("get_customer_orders",
                                               {"customer_id": customer_id, "limit": limit})["result"],
                             lambda: self.sql_customer_orders(customer_id, limit), timeout)

    def converge_find_customers(self, prefix: str, limit: int = 50, timeout: float | None = None) -> Any:
        return self.converge(f"find_customers name_prefix={prefix!r} limit={limit}",
                             lambda: self.tool("find_customers",
                                               {"name_prefix": prefix, "limit": limit})["result"],
                             lambda: self.sql_find_customers(prefix, limit), timeout)

    # ------------------------------------------------------------ the whole state

    def expected_redis(self) -> dict[str, Any]:
        """Every key the default mapping should hold for the current SQL rows (bookkeeping
        keys aside), with its content as Redis returns it."""
        out: dict[str, Any] = {}
        for c in self.rows("SELECT * FROM customers"):
            out[f"customer:{c['id']}"] = {k: stored_text(v) for k, v in c.items() if v is not None}
            out[f"customer:email:{c['email']}"] = str(c["id"])
        for o in self.rows("SELECT * FROM orders"):
            out[f"order:{o['id']}"] = {k: stored_text(v) for k, v in o.items() if v is not None}
            if o["customer_id"] is not None:
                rel = out.setdefault(f"customer:{o['customer_id']}:orders", {})
                rel[str(o["id"])] = float(epoch_micros(o["created_at"]))
                if o["status"] is not None:  # the lookup's `filters: status` relation
                    key = f"customer:{o['customer_id']}:orders:status:{o['status']}"
                    out.setdefault(key, {})[str(o["id"])] = float(epoch_micros(o["created_at"]))
        out.update(order_stats(self.rows("SELECT customer_id, status, total_cents FROM orders")))
        return out

    def actual_redis(self) -> tuple[dict[str, Any], set[str]]:
        """(data keys with content, bookkeeping keys) of the pipeline's database."""
        r = self.db.r
        data: dict[str, Any] = {}
        book: set[str] = set()
        for key in self.db.keys():
            if key.startswith("sink:"):
                book.add(key)
                continue
            t = r.type(key)
            if t == "hash":
                data[key] = r.hgetall(key)
            elif t == "string":
                data[key] = r.get(key)
            elif t == "zset":
                data[key] = dict(r.zrange(key, 0, -1, withscores=True))
            else:
                data[key] = f"<{t}>"
        return data, book

    def redis_differences(self) -> list[str]:
        exp = self.expected_redis()
        act, book = self.actual_redis()
        out = []
        for k in sorted(set(exp) | set(act)):
            if k not in act:
                out.append(f"missing key {k} (SQL: {exp[k]!r})")
            elif k not in exp:
                out.append(f"extra key {k} = {act[k]!r} (no such SQL row)")
            elif isinstance(exp[k], dict) and k.startswith(("customer:", "order:")) and not k.endswith(":orders") \
                    and isinstance(act[k], dict):
                if _json_fields_equal(act[k], exp[k]):
                    continue
                out.append(f"{k}: Redis {act[k]!r} != SQL {exp[k]!r}")
            elif act[k] != exp[k]:
                out.append(f"{k}: Redis {act[k]!r} != SQL {exp[k]!r}")
        allowed = {"sink:offsets", "sink:offsets:run"} | {f"sink:{kind}:{m}" for kind in ("rows", "types", "freshness")
                                       for m in MAPPING_TABLES} | {"sink:index:customers:email"}
        if self.watermark:
            # The source watermark of the default connectors.yaml's source (ARCHITECTURE.md).
            allowed |= {"sink:watermark:cdc"}
        if self.writer == "exclusive" and self.sink is not None and self.sink.alive():
            # The running exclusive sink holds a lease per mapping.
            leases = {f"sink:writer:{m}" for m in MAPPING_TABLES}
            allowed |= leases
            out += [f"missing lease {k} of the exclusive sink" for k in sorted(leases - book)]
        if self.writer == "shared" and self.sink is not None and self.sink.alive():
            # A running shared sink announces itself (README, "Writers"), so that a sink with
            # the default writer does not take the exclusive lease beside it.
            announced = {f"sink:shared:{m}" for m in MAPPING_TABLES}
            out += [f"missing announcement {k} of the shared sink" for k in sorted(announced - book)]
        if self.writer == "shared":
            # It expires one lease time after the sink stopped.
            allowed |= {f"sink:shared:{m}" for m in MAPPING_TABLES}
        allowed |= {SEARCH_KEY, SEARCH_MEMBERS_KEY}
        if self.writer == "exclusive":
            # An exclusive sink that stopped cleanly leaves its bookkeeping for the next one
            # (README, "Writers"): a manifest and its chunks.
            allowed |= {k for k in book if k.startswith("sink:snapshot:")}
        out += [f"unexpected bookkeeping key {k}" for k in sorted(book - allowed)]
        out += self.search_differences()
        # sink:rows lists exactly the rows present.
        for m, prefix in (("customers", "customer:"), ("orders", "order:")):
            listed = set(self.db.r.hkeys(f"sink:rows:{m}"))
            rows = {k for k in exp if k.startswith(prefix) and k.count(":") == 1}
            if listed != rows:
                out.append(f"sink:rows:{m} lists {sorted(listed - rows)} without a row and misses {sorted(rows - listed)}")
        return out

    def search_differences(self) -> list[str]:
        """The name search's sorted set and members hash against the SQL rows: one member per
        customer with a name, scored 0, and the hash naming each row's member."""
        expected = {f"customer:{c['id']}": search_member(c["name"], c["id"])
                    for c in self.rows("SELECT id, name FROM customers WHERE name IS NOT NULL")}
        out = []
        members = dict(self.db.r.zrange(SEARCH_KEY, 0, -1, withscores=True))
        want = {m: 0.0 for m in expected.values()}
        if members != want:
            out.append(f"{SEARCH_KEY}: extra {sorted(set(members) - set(want))[:5]}, "
                       f"missing {sorted(set(want) - set(members))[:5]}")
        recorded = self.db.r.hgetall(SEARCH_MEMBERS_KEY)
        if recorded != expected:
            wrong = sorted(k for k in set(recorded) | set(expected) if recorded.get(k) != expected.get(k))
            out.append(f"{SEARCH_MEMBERS_KEY} differs for {wrong[:5]}")
        return out

    def assert_redis_matches_sql(self, timeout: float | None = None) -> None:
        """Polls until the Redis database holds exactly the keys the SQL rows call for."""
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            d = self.redis_differences()
            if not d:
                return
            if time.monotonic() > deadline:
                more = f"\n  ... {len(d) - 40} more" if len(d) > 40 else ""
                raise AssertionError(f"Redis db {self.db.db} != SQL after {timeout or self.timeout}s "
                                     f"({len(d)} differences):\n  " + "\n  ".join(d[:40]) + more)
            time.sleep(0.1)

    # ------------------------------------------------------------ dead letters

    def dead_letters(self) -> int:
        """How many records the sink dead-lettered (0 when the topic does not exist)."""
        topic = f"{self.sc.prefix}.dlq"
        c = Consumer({"bootstrap.servers": self.bootstrap, "group.id": f"e2e-dlq-{secrets.token_hex(4)}"})
        try:
            md = c.list_topics(topic, timeout=5).topics.get(topic)
            if md is None or md.error is not None:
                return 0
            total = 0
            for p in md.partitions:
                lo, hi = c.get_watermark_offsets(TopicPartition(topic, p), timeout=5)
                total += hi - lo
            return total
        finally:
            c.close()

    def dead_letter_records(self, count: int, timeout: float = 10.0) -> list[tuple[bytes | None, bytes | None, dict[str, str]]]:
        """The first `count` dead-lettered records: (key, value, headers)."""
        topic = f"{self.sc.prefix}.dlq"
        c = Consumer({"bootstrap.servers": self.bootstrap, "group.id": f"e2e-dlq-{secrets.token_hex(4)}",
                      "auto.offset.reset": "earliest", "enable.auto.commit": False})
        try:
            c.subscribe([topic])
            out = []
            deadline = time.monotonic() + timeout
            while len(out) < count:
                assert time.monotonic() < deadline, f"{len(out)} of {count} dead letters in {topic} after {timeout}s"
                m = c.poll(0.5)
                if m is None or m.error() is not None:
                    continue
                headers = {k: (v or b"").decode() for k, v in (m.headers() or [])}
                out.append((m.key(), m.value(), headers))
            return out
        finally:
            c.close()


def _json_fields_equal(actual: dict[str, str], expected: dict[str, str]) -> bool:
    """Hash fields equal, JSON-valued ones compared parsed (key order and spacing may differ)."""
    if set(actual) != set(expected):
        return False
    for k, v in expected.items():
        if actual[k] == v:
            continue
        try:
            if json.loads(actual[k]) == json.loads(v) and v[:1] in "[{":
                continue
        except (json.JSONDecodeError, TypeError):
            pass
        return False
    return True
