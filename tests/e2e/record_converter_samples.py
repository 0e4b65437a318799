"""Records what real Debezium puts on the wire for the same changes through three converters:
Confluent's AvroConverter (the stack's default), Kafka Connect's JsonConverter with
`schemas.enable=true` and with `schemas.enable=false`. Writes
tests/fixtures/debezium/converters.json, which sink/tests/decode/json.rs decodes (each JSON
record must give the same Change as the Avro record of the same change).

    eval "$(bash tests/stack/up.sh redis kafka registry postgres connect)"
    ~/.cache/agent-context/venv/bin/python tests/e2e/record_converter_samples.py

One database (scenario.py) with three connectors, each with its own replication slot and
topic prefix, so the three streams carry the same changes in the same order. The changes:
the snapshot, insert, update and delete under REPLICA IDENTITY DEFAULT (delete: the key and
defaults, then a tombstone) and FULL, a primary-key change, ADD COLUMN with one column per
Debezium logical type (Decimal, VariableScaleDecimal, Date, Timestamp, MicroTimestamp,
ZonedTimestamp, Json, Uuid, bytes, arrays, ...), rows with those columns set and NULL, and a
TRUNCATE (op=t). Avro records are kept as wire bytes with the schemas the registry served.
"""

from __future__ import annotations

import json
import sys
import time
import urllib.request
from pathlib import Path

from confluent_kafka import Consumer, KafkaException, TopicPartition

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import kafka_bootstrap, registry_url  # noqa: E402
from scenario import REPO, Scenario, stack  # noqa: E402

OUT = REPO / "tests" / "fixtures" / "debezium" / "converters.json"
TABLES = ("customers", "orders")
JSON = "org.apache.kafka.connect.json.JsonConverter"


def json_converter(schemas: bool) -> dict[str, str]:
    enable = "true" if schemas else "false"
    return {"key.converter": JSON, "value.converter": JSON,
            "key.converter.schemas.enable": enable, "value.converter.schemas.enable": enable}


CHANGES = [
    "INSERT INTO customers(id, email, name, plan, mrr_cents, created_at) "
    "VALUES (10, 'dora@example.com', 'Dora', 'pro', 1999, '2030-01-02 03:04:05.000007')",
    "UPDATE customers SET plan = 'enterprise', mrr_cents = 29900 WHERE id = 1",
    "INSERT INTO orders(id, customer_id, status, total_cents, items, created_at) VALUES "
    "(10, 10, 'paid', 1999, '[{\"sku\": \"PRO-M\", \"nested\": {\"a\": [1, 2.5, null, true]}}]', "
    "'1969-12-31 23:59:59.999999')",
    "DELETE FROM orders WHERE id = 4",
    "UPDATE orders SET id = 100 WHERE id = 3",
    "ALTER TABLE customers ADD COLUMN phone VARCHAR(32), ADD COLUMN loyalty INTEGER, "
    "ADD COLUMN small SMALLINT, ADD COLUMN big BIGINT, ADD COLUMN credit NUMERIC(10, 2), "
    "ADD COLUMN ratio NUMERIC, ADD COLUMN score DOUBLE PRECISION, ADD COLUMN real4 REAL, "
    "ADD COLUMN vip BOOLEAN, ADD COLUMN birthday DATE, ADD COLUMN t3 TIMESTAMP(3), "
    "ADD COLUMN seen_at TIMESTAMPTZ, ADD COLUMN doc JSONB, ADD COLUMN uid UUID, "
    "ADD COLUMN blob BYTEA, ADD COLUMN tags TEXT[]",
    "INSERT INTO customers(id, email, name, phone, loyalty, small, big, credit, ratio, score, real4, "
    "vip, birthday, t3, seen_at, doc, uid, blob, tags) VALUES (11, 'eve@example.com', 'Eve', "
    "'+1-555-0100', -42, 7, 9007199254740993, -12.50, 3.14159, 0.1, 1.5, true, '1969-07-20', "
    "'2026-11-24 09:56:33.142', '2026-11-24 10:56:33.142906+01', '{\"k\": [1, {\"x\": null}]}', "
    "'0a1b2c3d-4e5f-4061-8273-9405a6b7c8d9', '\\x00ff10', ARRAY['a', 'b c'])",
    "INSERT INTO customers(id, email, name) VALUES (12, 'nul@example.com', 'Nul')",
    "UPDATE customers SET email = 'eve2@example.com', ratio = -0.001 WHERE id = 11",
    "ALTER TABLE customers REPLICA IDENTITY FULL",
    "UPDATE customers SET name = 'Bob B.' WHERE id = 2",
    "DELETE FROM customers WHERE id = 12",
    "TRUNCATE orders",
]


def schema_json(registry: str, schema_id: int, cache: dict[int, object]) -> object:
    if schema_id not in cache:
        with urllib.request.urlopen(f"{registry}/schemas/ids/{schema_id}", timeout=10) as r:
            cache[schema_id] = json.loads(json.loads(r.read())["schema"])
    return cache[schema_id]


def consume(bootstrap: str, topic: str, expect_at_least: int) -> list:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"record-samples-{time.time_ns()}",
                  "enable.auto.commit": False})
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                lo, hi = c.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
            except KafkaException:  # the topic does not exist yet
                lo, hi = 0, 0
            if hi - lo >= expect_at_least:
                break
            assert time.monotonic() < deadline, f"{topic}: {hi - lo} records, expected {expect_at_least}"
            time.sleep(0.5)
        c.assign([TopicPartition(topic, 0, lo)])
        out = []
        while len(out) < hi - lo:
            m = c.poll(10)
            assert m is not None, f"{topic}: poll timed out after {len(out)} records"
            assert m.error() is None, m.error()
            out.append(m)
        return out
    finally:
        c.close()


def main() -> None:
    bootstrap, registry = kafka_bootstrap(), registry_url()
    with Scenario("converters") as sc:
        variants = {"avro": sc.prefix}
        extra = []
        for name, schemas in (("json", True), ("json_plain", False)):
            prefix = f"{sc.prefix}_{name}"
            connector = f"{sc.connector}-{name}".replace("_", "-")
            props = {"database.dbname": sc.db, "slot.name": f"{sc.slot}_{name}", "topic.prefix": prefix,
                     **json_converter(schemas)}
            stack("connect.sh", "register", connector, *(f"{k}={v}" for k, v in props.items()))
            extra.append(connector)
            variants[name] = prefix
        try:
            # Every connector's snapshot is done before the first change.
            for prefix in variants.values():
                consume(bootstrap, f"{prefix}.public.orders", 4)
            for sql in CHANGES:
                sc.execute(sql)
            # Snapshot, then customers: 6 inserts/updates and a delete with its tombstone; orders:
            # an insert, a delete + tombstone, a key change (delete, tombstone, create), a truncate.
            counts = {"customers": 3 + 6 + 2, "orders": 4 + 1 + 2 + 3 + 1}
            streams = {name: {t: consume(bootstrap, f"{prefix}.public.{t}", counts[t]) for t in TABLES}
                       for name, prefix in variants.items()}
        finally:
            # Their slots go with the database (postgres.sh drop).
            for connector in extra:
                stack("connect.sh", "unregister", connector)
    schemas: dict[int, object] = {}
    records = []
    for table in TABLES:
        lengths = {name: len(s[table]) for name, s in streams.items()}
        assert len(set(lengths.values())) == 1, f"{table}: streams differ in length: {lengths}"
        for avro, js, plain in zip(*(streams[n][table] for n in ("avro", "json", "json_plain"))):
            for m in (avro.key(), avro.value()):
                if m is not None:
                    schema_json(registry, int.from_bytes(m[1:5], "big"), schemas)
            records.append({
                "table": table,
                "offset": avro.offset(),
                "timestamp_ms": avro.timestamp()[1],
                "avro": {"key_hex": avro.key() and avro.key().hex(), "value_hex": avro.value() and avro.value().hex()},
                "json": {"key": js.key() and js.key().decode(), "value": js.value() and js.value().decode()},
                "json_plain": {"key": plain.key() and plain.key().decode(),
                               "value": plain.value() and plain.value().decode()},
            })
    OUT.write_text(json.dumps({
        "about": "tests/e2e/record_converter_samples.py: Debezium 3.6.3, the same changes through "
                 "AvroConverter and JsonConverter (schemas.enable true: json, false: json_plain)",
        "changes": CHANGES,
        "avro_schemas": {str(k): v for k, v in sorted(schemas.items())},
        "records": records,
    }, indent=1) + "\n")
    print(f"wrote {len(records)} records to {OUT}")


if __name__ == "__main__":
    main()
