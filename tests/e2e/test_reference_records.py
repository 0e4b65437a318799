"""The recorded Debezium 3.6.3 records (tests/fixtures/debezium/avro-*.json), produced through the
real broker, applied by the real `sink run` binary to the real Redis, and read back with the
real `agent-cli tool` binary: every field of every tool's output is checked against values
computed from the records themselves (not from SQL, not from the sink's code).

How:
- The reference schemas (cdc.public.*-key/-value, their `schema` field) are registered in the
  real registry (SCHEMA_REGISTRY_URL, Confluent-compatible API) under `{topic}-key` and
  `{topic}-value` for fresh topics `ref{token}.public.customers|orders`.
- Records are Avro-encoded with fastavro's schemaless writer and framed the Confluent way
  (magic 0 + the id the registry returned, big endian); keys are Avro too; tombstones carry a
  null value. The encoder is first checked byte for byte against the captured wire bytes
  (raw-wire-bytes.json, with the ids of the capture).
- Records go out per topic in the order of their captured offsets. The capture kept one
  snapshot record per table; the seed's other snapshot rows (customers 2-3 at captured offsets
  1-2, orders 2-4 at offsets 1-3) are built from the reference snapshot record with the values
  of tests/stack/connect/seed.sql (same statement, so the same created_at), so that the later
  reference records (update of order 3, delete of order 2) act on rows that exist, as they did
  when they were captured.
- The sink runs on the default connectors.yaml with only the topics renamed, in a Redis
  logical database of its own (harness.RedisDb: one of 15..2, emptied), so key names are the
  seed's. "Caught up" = `sink:offsets` holds the last produced offset of both topics.

Stages, each followed by the full check (every tool for every customer, email and order ever
seen, customer_orders with several limits, freshness, the Redis keys themselves, no dead
letters):
1. snapshot + inserts,
2. updates: email change under REPLICA IDENTITY DEFAULT (old email -> null, new -> the row),
   the change back under FULL (with a new name), order 3's update,
3. deletes: customer 4 (FULL before image) + tombstone, order 2 (DEFAULT: before holds Avro
   defaults) + tombstone: row, index entry and relation member gone,
4. a primary-key change as Debezium emits it for `UPDATE orders SET id=100 WHERE id=4`:
   `d` key 4 (built from the reference DEFAULT delete), tombstone key 4, `c` key 100 (built
   from the reference insert, the row of order 4 with id 100), both at the same LSN: only
   order 100 remains, in customer 3's relation.

Needs the stack (tests/stack/up.sh redis kafka registry) and the built binaries (SINK_BIN,
AGENT_CLI_BIN or $CARGO_TARGET_DIR/debug); anything missing fails the test, never skips it.
"""

from __future__ import annotations

import copy
import datetime as dt
import io
import json
import os
import re
import secrets
import struct
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import fastavro
import redis
import yaml
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from harness import (HOW_TO_START, RedisDb, Sink, binary, delete_topics, kafka_bootstrap,
                     order_stats, redis_base_url, registry_url, run_agent_cli, scenario_config)
from scenario import REPO

REF = REPO / "tests" / "fixtures" / "debezium"
SCHEMAS = REPO / "schemas" / "debezium"
TABLES = ("customers", "orders")
CAUGHT_UP_TIMEOUT = 30.0
STALE_AFTER_MS = 30_000  # freshness.stale_after_ms of the default connectors.yaml
# get_customer's `include` in the default connectors.yaml: its 3 newest orders as
# `recent_orders`, so its answer is as fresh as the staler of customers and orders.
RECENT_ORDERS = 3
INCLUDED_MAPPINGS = {"get_customer": ["orders"]}


def ref(name: str) -> dict:
    return json.loads((REF / name).read_text())


# ---------------------------------------------------------------- schemas and encoding


def ref_schema(table: str, part: str) -> dict:
    """The captured `{cdc.public.table}-{part}` schema (the `schema` field of the fixture)."""
    [path] = sorted(SCHEMAS.glob(f"cdc.public.{table}-{part}.v1.id*.json"))
    return json.loads(path.read_text())["schema"]


def register(registry: str, subject: str, schema: dict) -> int:
    """POST /subjects/{subject}/versions, as Debezium's AvroConverter does; returns the id."""
    body = json.dumps({"schema": json.dumps(schema)}).encode()
    req = urllib.request.Request(f"{registry}/subjects/{subject}/versions", data=body, method="POST",
                                 headers={"Content-Type": "application/vnd.schemaregistry.v1+json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return int(json.loads(resp.read())["id"])
    except urllib.error.HTTPError as e:
        raise AssertionError(f"registry {registry}: registering {subject} -> HTTP {e.code}: "
                             f"{e.read().decode(errors='replace')}") from e
    except OSError as e:
        raise AssertionError(f"registry {registry} unreachable: {e} ({HOW_TO_START})") from e


def frame(schema_id: int, parsed: Any, datum: Any) -> bytes:
    buf = io.BytesIO()
    buf.write(b"\x00" + struct.pack(">I", schema_id))
    fastavro.schemaless_writer(buf, parsed, datum)
    return buf.getvalue()


def field_kinds(value_schema: dict) -> dict[str, str]:
    """Row field -> how agent-cli renders it, read from the Connect annotations of the schema."""
    before = next(f for f in value_schema["fields"] if f["name"] == "before")
    row = next(t for t in before["type"] if isinstance(t, dict))
    kinds = {}
    for f in row["fields"]:
        branches = f["type"] if isinstance(f["type"], list) else [f["type"]]
        [t] = [b for b in branches if b != "null"]
        t = t if isinstance(t, dict) else {"type": t}
        name = t.get("connect.name")
        if name in ("io.debezium.time.MicroTimestamp",):
            kinds[f["name"]] = "timestamp_us"
        elif name == "io.debezium.data.Json":
            kinds[f["name"]] = "json"
        elif name is None and t["type"] in ("int", "long"):
            kinds[f["name"]] = "int"
        elif name is None and t["type"] == "string":
            kinds[f["name"]] = "string"
        else:
            raise AssertionError(f"field {f['name']}: no expectation for {t}")
    return kinds


def rfc3339_micros(us: int) -> str:
    t = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc) + dt.timedelta(microseconds=us)
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# ---------------------------------------------------------------- the records


def snapshot_like(template: dict, row: dict, snapshot: str) -> dict:
    """The reference snapshot record with another row of the same snapshot."""
    rec = copy.deepcopy(template)
    rec["key"] = {"id": row["id"]}
    rec["value"]["after"] = {**rec["value"]["after"], **row}
    rec["value"]["source"]["snapshot"] = snapshot
    return rec


def items(*lines: tuple[int, str, int]) -> str:
    """jsonb text as Debezium sends it (jsonb key order: qty, sku, price_cents)."""
    return json.dumps([{"qty": q, "sku": s, "price_cents": p} for q, s, p in lines])


def seed_snapshot() -> dict[str, list[dict]]:
    """Stage 1, per topic in captured-offset order: the reference snapshot and insert records,
    with the seed's other snapshot rows in the captured offsets the reference set lacks."""
    cust_r = ref("avro-customers-op_r-snapshot.json")
    ord_r = ref("avro-orders-op_r-snapshot.json")
    assert cust_r["offset"] == 0 and ord_r["offset"] == 0
    customers = [
        cust_r,
        snapshot_like(cust_r, {"id": 2, "email": "bob@example.com", "name": "Bob Smith", "plan": "free",
                               "mrr_cents": 0}, "true"),
        snapshot_like(cust_r, {"id": 3, "email": "alice@example.com", "name": "Alice Jones",
                               "plan": "enterprise", "mrr_cents": 29900}, "last_in_data_collection"),
        ref("avro-customers-op_c-insert.json"),  # offset 3: customer 4 (carol)
    ]
    orders = [
        ord_r,
        snapshot_like(ord_r, {"id": 2, "customer_id": 1, "status": "shipped", "total_cents": 2500,
                              "items": items((2, "MUG", 1250))}, "true"),
        snapshot_like(ord_r, {"id": 3, "customer_id": 1, "status": "pending", "total_cents": 12000,
                              "items": items((1, "HOODIE", 12000))}, "true"),
        snapshot_like(ord_r, {"id": 4, "customer_id": 3, "status": "paid", "total_cents": 29900,
                              "items": items((1, "ENT-M", 29900))}, "last"),
        ref("avro-orders-op_c-insert.json"),  # offset 4: order 5
    ]
    assert [r["offset"] for r in (customers[3], orders[4])] == [3, 4]
    return {"customers": customers, "orders": orders}


def updates() -> dict[str, list[dict]]:
    return {"customers": [ref("avro-customers-op_u-email-change-replica-identity-default.json"),
                          ref("avro-customers-op_u-email-change-replica-identity-full.json")],
            "orders": [ref("avro-orders-op_u-replica-identity-default.json")]}


def deletes() -> dict[str, list[dict]]:
    return {"customers": [ref("avro-customers-op_d-replica-identity-full.json"),
                          ref("avro-customers-tombstone-after-delete.json")],
            "orders": [ref("avro-orders-op_d-replica-identity-default.json"),
                       ref("avro-orders-tombstone-after-delete.json")]}


def primary_key_change(order4_after: dict) -> dict[str, list[dict]]:
    """`UPDATE orders SET id=100 WHERE id=4` the way NOTES.md recorded Debezium emitting it:
    d key 4, tombstone key 4, c key 100, the d and c at one LSN (one WAL record)."""
    lsn, ts_ms = 22_560_000, 1_795_480_950_000
    d = ref("avro-orders-op_d-replica-identity-default.json")
    d["key"] = {"id": 4}
    d["value"]["before"]["id"] = 4
    tomb = ref("avro-orders-tombstone-after-delete.json")
    tomb["key"] = {"id": 4}
    c = ref("avro-orders-op_c-insert.json")
    c["key"] = {"id": 100}
    c["value"]["after"] = {**order4_after, "id": 100}
    for rec in (d, c):
        src = rec["value"]["source"]
        src.update(ts_ms=ts_ms, ts_us=ts_ms * 1000, ts_ns=ts_ms * 1_000_000, lsn=lsn, txId=760,
                   sequence=json.dumps([str(lsn - 100), str(lsn)]).replace(" ", ""))
        rec["value"].update(ts_ms=ts_ms + 100, ts_us=(ts_ms + 100) * 1000, ts_ns=(ts_ms + 100) * 1_000_000)
    return {"orders": [d, tomb, c]}


# ---------------------------------------------------------------- the expected state


class Model:
    """What the records say the tables hold (applied in Python), rendered as agent-cli does."""

    def __init__(self, kinds: dict[str, dict[str, str]]):
        self.kinds = kinds
        self.rows: dict[str, dict[int, dict]] = {t: {} for t in TABLES}
        self.emails_seen: set[str] = set()
        self.ids_seen: dict[str, set[int]] = {t: set() for t in TABLES}
        self.source_ts_ms: dict[str, int] = {}

    def apply(self, table: str, rec: dict) -> None:
        key = rec["key"]["id"]
        self.ids_seen[table].add(key)
        v = rec["value"]
        if v is None:
            self.rows[table].pop(key, None)
            return
        if v["op"] in ("r", "c", "u"):
            self.rows[table][key] = v["after"]
            if table == "customers":
                self.emails_seen.add(v["after"]["email"])
        elif v["op"] == "d":
            if self.rows[table].pop(key, None) is None:
                return
        else:
            raise AssertionError(f"op {v['op']}")
        self.source_ts_ms[table] = v["source"]["ts_ms"]

    def render(self, table: str, row: dict | None) -> dict | None:
        if row is None:
            return None
        out = {}
        for f, kind in self.kinds[table].items():
            val = row.get(f)
            if val is None:
                out[f] = None
            elif kind == "timestamp_us":
                out[f] = rfc3339_micros(val)
            elif kind == "json":
                out[f] = json.loads(val)
            else:
                out[f] = val
        return out

    def customer(self, cid: int) -> dict | None:
        return self.with_recent_orders(self.render("customers", self.rows["customers"].get(cid)))

    def customer_by_email(self, email: str) -> dict | None:
        rows = [r for r in self.rows["customers"].values() if r["email"] == email]
        assert len(rows) <= 1
        return self.with_recent_orders(self.render("customers", rows[0])) if rows else None

    def with_recent_orders(self, customer: dict | None) -> dict | None:
        """A found customer as get_customer answers it: with its included newest orders."""
        if customer is not None:
            customer["recent_orders"] = self.customer_orders(customer["id"], RECENT_ORDERS)
        return customer

    def order(self, oid: int) -> dict | None:
        return self.render("orders", self.rows["orders"].get(oid))

    def customer_orders(self, cid: int, limit: int) -> list[dict]:
        rows = [r for r in self.rows["orders"].values() if r["customer_id"] == cid]
        rows.sort(key=lambda r: (r["created_at"], r["id"]), reverse=True)
        return [self.render("orders", r) for r in rows[:limit]]

    def redis_keys(self) -> dict[str, Any]:
        """Every data key of the default mapping, content as redis-py returns it."""
        out: dict[str, Any] = {}
        for table, prefix in (("customers", "customer"), ("orders", "order")):
            for rid, row in self.rows[table].items():
                out[f"{prefix}:{rid}"] = {f: self.stored(table, f, v) for f, v in row.items() if v is not None}
        for cid, row in self.rows["customers"].items():
            out[f"customer:email:{row['email']}"] = str(cid)
        for oid, row in self.rows["orders"].items():
            if row["customer_id"] is not None:
                out.setdefault(f"customer:{row['customer_id']}:orders", {})[str(oid)] = float(row["created_at"])
                if row.get("status") is not None:  # the lookup's `filters: status` relation
                    out.setdefault(f"customer:{row['customer_id']}:orders:status:{row['status']}", {})[
                        str(oid)] = float(row["created_at"])
        out.update(order_stats(self.rows["orders"].values()))
        return out

    def stored(self, table: str, field: str, v: Any) -> str:
        kind = self.kinds[table][field]
        return rfc3339_micros(v) if kind == "timestamp_us" else str(v)


# ---------------------------------------------------------------- the pipeline


class RefPipeline:
    def __init__(self, tmp: Path):
        self.token = secrets.token_hex(4)
        self.prefix = f"ref{self.token}"
        self.topics = {t: f"{self.prefix}.public.{t}" for t in TABLES}
        self.bootstrap = kafka_bootstrap()
        self.registry = registry_url()
        self.tmp = tmp
        self.db = RedisDb(redis_base_url())
        self.sink: Sink | None = None
        self.produced: dict[str, int] = {}  # topic -> last offset
        self.ids: dict[tuple[str, str], int] = {}
        self.parsed: dict[tuple[str, str], Any] = {}
        for t in TABLES:
            for part in ("key", "value"):
                schema = ref_schema(t, part)
                self.parsed[(t, part)] = fastavro.parse_schema(schema)
                try:
                    self.ids[(t, part)] = register(self.registry, f"{self.topics[t]}-{part}", schema)
                except AssertionError:
                    self.db.release()
                    raise
        admin = AdminClient({"bootstrap.servers": self.bootstrap})
        futures = admin.create_topics([NewTopic(self.topics[t], 1, 1) for t in TABLES], operation_timeout=10)
        for topic, fut in futures.items():
            try:
                fut.result(15)
            except (KafkaException, TimeoutError) as e:
                self.db.release()
                raise AssertionError(f"kafka at {self.bootstrap}: creating {topic}: {e!r} ({HOW_TO_START})") from e
        cfg = scenario_config(self.prefix, self.db.url, self.bootstrap, self.registry, f"ref-sink-{self.token}")
        self.dlq = cfg["kafka"]["dead_letter_topic"]
        self.config = tmp / "connectors.yaml"
        self.config.write_text(yaml.safe_dump(cfg, sort_keys=False))
        self.producer = Producer({"bootstrap.servers": self.bootstrap, "enable.idempotence": True})

    def start_sink(self) -> None:
        env = {k: v for k, v in os.environ.items()
               if k not in ("REDIS_URL", "KAFKA_BOOTSTRAP_SERVERS", "SCHEMA_REGISTRY_URL", "SINK_GROUP_ID")}
        env["RUST_LOG"] = env.get("E2E_SINK_LOG", "info")
        self.sink = Sink(self.config, env, self.tmp / "sink.log")

    def encode(self, table: str, rec: dict) -> tuple[bytes, bytes | None]:
        key = frame(self.ids[(table, "key")], self.parsed[(table, "key")], rec["key"])
        if rec["value"] is None:
            return key, None
        return key, frame(self.ids[(table, "value")], self.parsed[(table, "value")], rec["value"])

    def produce(self, batch: dict[str, list[dict]], model: Model) -> None:
        """Produces each topic's records in order, waits for the broker to take them, then
        applies them to the model."""
        delivered: list[tuple[str, int]] = []
        errors: list[str] = []

        def on_delivery(err: Any, msg: Any) -> None:
            if err is not None:
                errors.append(str(err))
            else:
                delivered.append((msg.topic(), msg.offset()))

        headers = [("__debezium.context.connectorLogicalName", b"cdc"), ("__debezium.context.taskId", b"0"),
                   ("__debezium.context.connectorName", b"postgresql")]
        count = 0
        for table, records in batch.items():
            for rec in records:
                key, value = self.encode(table, rec)
                self.producer.produce(self.topics[table], key=key, value=value, headers=headers,
                                      on_delivery=on_delivery)
                count += 1
        left = self.producer.flush(30)
        assert left == 0 and not errors and len(delivered) == count, \
            f"kafka at {self.bootstrap}: {left} undelivered, errors {errors} ({HOW_TO_START})"
        for topic, offset in delivered:
            self.produced[topic] = max(self.produced.get(topic, -1), offset)
        for table, records in batch.items():
            for rec in records:
                model.apply(table, rec)

    def wait_caught_up(self) -> None:
        r = self.db.r
        deadline = time.monotonic() + CAUGHT_UP_TIMEOUT
        while True:
            offsets = r.hgetall("sink:offsets")
            behind = {t: (offsets.get(f"{t}/0"), last) for t, last in self.produced.items()
                      if int(offsets.get(f"{t}/0", -1)) < last}
            if not behind:
                return
            if self.sink is not None and not self.sink.alive():
                raise AssertionError(f"the sink exited ({self.sink.proc.returncode}):\n{self.sink.log_tail()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"the sink did not catch up within {CAUGHT_UP_TIMEOUT}s: "
                                     f"(stored, last produced) {behind}\n{self.sink.log_tail() if self.sink else ''}")
            time.sleep(0.05)

    def tool(self, name: str, args: dict) -> dict:
        r = run_agent_cli(self.config, self.db.url, "tool", name, json.dumps(args))
        assert r.returncode == 0, f"agent-cli tool {name} {json.dumps(args)} exited {r.returncode}: {r.stderr}"
        assert r.stdout.endswith("\n") and r.stdout.count("\n") == 1, f"not one line: {r.stdout!r}"
        return json.loads(r.stdout)

    def dead_letters(self) -> int:
        c = Consumer({"bootstrap.servers": self.bootstrap, "group.id": f"ref-dlq-{secrets.token_hex(4)}"})
        try:
            md = c.list_topics(self.dlq, timeout=5).topics.get(self.dlq)
            if md is None or md.error is not None:
                return 0
            return sum(hi - lo for lo, hi in (c.get_watermark_offsets(TopicPartition(self.dlq, p), timeout=5)
                                              for p in md.partitions))
        finally:
            c.close()

    def close(self) -> int | None:
        code = self.sink.stop() if self.sink is not None else None
        self.producer.flush(5)
        return code


# ---------------------------------------------------------------- checks


AS_OF = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def freshness_bounds(r: redis.Redis, mapping: str) -> int:
    h = r.hgetall(f"sink:freshness:{mapping}")
    return max(int(h.get("source_ts_ms", 0)), int(h.get("caught_up_at_ms", 0)))


def call(p: RefPipeline, mapping: str, name: str, args: dict) -> Any:
    """One tool call; checks the freshness object against sink:freshness read around the call;
    returns the result."""
    # With includes, as_of is the staler (earlier) of the mappings' own: within the minima.
    mappings = [mapping, *INCLUDED_MAPPINGS.get(name, [])]
    lo = min(freshness_bounds(p.db.r, m) for m in mappings)
    t0 = int(time.time() * 1000)
    out = p.tool(name, args)
    t1 = int(time.time() * 1000)
    hi = min(freshness_bounds(p.db.r, m) for m in mappings)
    assert set(out) == {"result", "freshness"}, out
    fr = out["freshness"]
    assert set(fr) == {"as_of", "lag_ms", "stale"}, fr
    assert isinstance(fr["as_of"], str) and AS_OF.match(fr["as_of"]), fr
    as_of = dt.datetime.strptime(fr["as_of"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.timezone.utc)
    as_of_ms = round(as_of.timestamp() * 1000)
    assert lo <= as_of_ms <= hi, f"{name} {args}: as_of {fr['as_of']} ({as_of_ms}) outside [{lo}, {hi}]"
    assert type(fr["lag_ms"]) is int and t0 - as_of_ms - 5 <= fr["lag_ms"] <= t1 - as_of_ms + 5, (fr, t0, t1)
    assert fr["stale"] is (fr["lag_ms"] > STALE_AFTER_MS), fr
    return out["result"]


def field_diff(actual: Any, expected: Any, where: str) -> list[str]:
    if isinstance(actual, dict) and isinstance(expected, dict):
        out = []
        for k in sorted(set(actual) | set(expected)):
            if k not in actual or k not in expected:
                out.append(f"{where}.{k}: agent-cli {actual.get(k, '<absent>')!r} != records {expected.get(k, '<absent>')!r}")
            else:
                out += field_diff(actual[k], expected[k], f"{where}.{k}")
        return out
    if isinstance(actual, list) and isinstance(expected, list) and len(actual) == len(expected):
        return [d for i, (a, e) in enumerate(zip(actual, expected)) for d in field_diff(a, e, f"{where}[{i}]")]
    # `type(...) is` too: 1 == 1.0 == True in Python, not in JSON.
    if actual != expected or type(actual) is not type(expected):
        return [f"{where}: agent-cli {actual!r} != records {expected!r}"]
    return []


def check_state(p: RefPipeline, m: Model, stage: str) -> None:
    p.wait_caught_up()
    problems: list[str] = []

    def expect(mapping: str, name: str, args: dict, expected: Any) -> None:
        got = call(p, mapping, name, args)
        problems.extend(field_diff(got, expected, f"{name}{json.dumps(args)}"))

    for cid in sorted(m.ids_seen["customers"] | {999}):
        expect("customers", "get_customer", {"customer_id": cid}, m.customer(cid))
    for email in sorted(m.emails_seen | {"nobody@example.com"}):
        expect("customers", "get_customer", {"email": email}, m.customer_by_email(email))
    for oid in sorted(m.ids_seen["orders"] | {999}):
        expect("orders", "get_order", {"order_id": oid}, m.order(oid))
    parents = {r["customer_id"] for r in m.rows["orders"].values()} | m.ids_seen["customers"]
    for cid in sorted(parents):
        for limit in (1, 2, 10, 100):
            expect("orders", "get_customer_orders", {"customer_id": cid, "limit": limit},
                   m.customer_orders(cid, limit))
        expect("orders", "get_customer_orders", {"customer_id": cid}, m.customer_orders(cid, 10))

    # The Redis keys themselves: exactly the model's data keys, nothing left over.
    r = p.db.r
    actual: dict[str, Any] = {}
    for key in p.db.keys():
        if key.startswith("sink:"):
            continue
        t = r.type(key)
        actual[key] = (r.hgetall(key) if t == "hash" else r.get(key) if t == "string"
                       else dict(r.zrange(key, 0, -1, withscores=True)) if t == "zset" else f"<{t}>")
    expected = m.redis_keys()
    for k in sorted(set(actual) | set(expected)):
        a, e = actual.get(k), expected.get(k)
        if isinstance(a, dict) and isinstance(e, dict) and k.startswith("order:") and "items" in e:
            a = {**a, "items": json.loads(a["items"]) if "items" in a else None}
            e = {**e, "items": json.loads(e["items"])}
        if a != e:
            problems.append(f"redis {k}: {a!r} != records {e!r}")
    for table, prefix in (("customers", "customer"), ("orders", "order")):
        listed = set(r.hkeys(f"sink:rows:{table}"))
        want = {f"{prefix}:{i}" for i in m.rows[table]}
        if listed != want:
            problems.append(f"sink:rows:{table} = {sorted(listed)}, records say {sorted(want)}")
        fresh = r.hgetall(f"sink:freshness:{table}")
        if table in m.source_ts_ms and int(fresh.get("source_ts_ms", -1)) != m.source_ts_ms[table]:
            problems.append(f"sink:freshness:{table} source_ts_ms {fresh.get('source_ts_ms')} != "
                            f"source.ts_ms of the last applied change {m.source_ts_ms[table]}")
    email_index = r.hgetall("sink:index:customers:email")
    want_index = {f"customer:email:{row['email']}" for row in m.rows["customers"].values()}
    if not want_index <= set(email_index):
        problems.append(f"sink:index:customers:email lacks {sorted(want_index - set(email_index))}")
    dl = p.dead_letters()
    if dl:
        problems.append(f"{dl} record(s) dead-lettered to {p.dlq}")
    assert not problems, f"after {stage}:\n  " + "\n  ".join(problems)


# ---------------------------------------------------------------- the test


def test_encoder_matches_the_captured_wire_bytes() -> None:
    """fastavro + Confluent framing reproduce Debezium's bytes exactly (capture's schema ids)."""
    by_offset = {}
    for path in REF.glob("avro-*.json"):
        rec = json.loads(path.read_text())
        by_offset[(rec["topic"], rec["offset"])] = rec
    raw = json.loads((REF / "raw-wire-bytes.json").read_text())
    assert raw, "raw-wire-bytes.json is empty"
    for entry in raw:
        rec = by_offset[(entry["topic"], entry["offset"])]
        table = entry["topic"].rsplit(".", 1)[1]
        key = frame(rec["key_schema_id"], fastavro.parse_schema(ref_schema(table, "key")), rec["key"])
        assert key.hex() == entry["key_hex"], entry["topic"]
        if entry["value_hex"] is None:
            assert rec["value"] is None
        else:
            value = frame(rec["value_schema_id"], fastavro.parse_schema(ref_schema(table, "value")), rec["value"])
            assert value.hex() == entry["value_hex"], f"{entry['topic']}@{entry['offset']}"


def test_reference_records_through_sink_and_agent_cli(tmp_path: Path) -> None:
    binary("sink"), binary("agent-cli")  # fail early when not built
    kinds = {t: field_kinds(ref_schema(t, "value")) for t in TABLES}
    assert kinds["customers"]["created_at"] == "timestamp_us" and kinds["orders"]["items"] == "json"
    model = Model(kinds)
    p = RefPipeline(tmp_path)
    ok = False
    try:
        p.produce(seed_snapshot(), model)
        p.start_sink()
        check_state(p, model, "snapshot + inserts")
        assert [o["id"] for o in model.customer_orders(1, 10)] == [5, 3, 2, 1]  # ties: id desc
        assert model.customer(4)["email"] == "carol@example.com"

        # Email change (DEFAULT: before=null), then back with a new name (FULL), order 3 shipped.
        up = updates()
        p.produce({"customers": up["customers"][:1]}, model)
        check_state(p, model, "email change jane -> jane.doe (REPLICA IDENTITY DEFAULT)")
        assert model.customer_by_email("jane@example.com") is None
        assert model.customer_by_email("jane.doe@example.com")["id"] == 1
        p.produce({"customers": up["customers"][1:], "orders": up["orders"]}, model)
        check_state(p, model, "email change back + name (FULL), order 3 update")
        assert model.customer(1)["name"] == "Jane Q. Doe" and model.order(3)["status"] == "shipped"
        assert model.customer_by_email("jane.doe@example.com") is None

        # Deletes: the `d`s alone, then their tombstones.
        de = deletes()
        p.produce({t: [r for r in recs if r["value"] is not None] for t, recs in de.items()}, model)
        check_state(p, model, "deletes of customer 4 (FULL) and order 2 (DEFAULT)")
        assert model.customer(4) is None and model.order(2) is None
        assert [o["id"] for o in model.customer_orders(1, 10)] == [5, 3, 1]
        p.produce({t: [r for r in recs if r["value"] is None] for t, recs in de.items()}, model)
        check_state(p, model, "tombstones after the deletes")

        # Primary-key change 4 -> 100.
        order4 = model.rows["orders"][4]
        p.produce(primary_key_change(order4), model)
        check_state(p, model, "primary-key change of order 4 -> 100")
        assert model.order(4) is None and model.order(100)["customer_id"] == 3
        assert [o["id"] for o in model.customer_orders(3, 10)] == [100]
        assert p.db.r.zrange("customer:3:orders", 0, -1) == ["100"]
        ok = True
    finally:
        code = p.close()
        if not ok and p.sink is not None:
            print(f"---- sink log {p.sink.log}:\n{p.sink.log_tail()}")
        if ok:
            p.db.release()
            delete_topics(p.bootstrap, p.prefix)
        else:
            print(f"---- Redis database {p.db.url} kept for inspection")
    assert code == 0, f"sink exited {code} after SIGTERM:\n{p.sink.log_tail()}"
