"""End-to-end check of the Debezium part of the stack, independent of the sink.

On the running stack (postgres.sh, kafka.sh, registry.sh, connect.sh started) it creates a
fresh database from the seed, registers one Debezium connector on it, and checks what
reaches Kafka for each kind of change: snapshot, UPDATE under REPLICA IDENTITY DEFAULT and
FULL, DELETE (+ tombstone), ALTER TABLE ADD COLUMN (value schema v2 in the registry),
TRUNCATE with skipped.operations=none. Every record must be in the Confluent wire format
(magic byte 0 + schema id) with its schemas registered under {topic}-key / {topic}-value.
Then it measures commit -> broker latency (topics created with LogAppendTime, so the record
timestamp is the broker's append time).

    python tests/e2e/debezium_proof.py [--db dbz_proof] [--poll-ms 20] [--samples 20] [--keep]

Exits non-zero with a message when an expectation fails. Needs psycopg, confluent-kafka,
fastavro. Environment as for the stack scripts (PGPORT, CONNECT_PORT, KAFKA_BOOTSTRAP_SERVERS,
SCHEMA_REGISTRY_URL).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))
from dbz_probe import Probe, Record, Registry, default_registry  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
STACK = REPO / "tests" / "stack"


class Failed(Exception):
    pass


def check(cond: bool, what: str) -> None:
    if not cond:
        raise Failed(what)
    print(f"  ok: {what}")


def stack(script: str, *args: str) -> str:
    r = subprocess.run(["bash", str(STACK / script), *args], capture_output=True, text=True)
    if r.returncode != 0:
        raise Failed(f"{script} {' '.join(args)} failed ({r.returncode}): {r.stderr.strip()}")
    return r.stdout


def summary(r: Record) -> str:
    if r.value is None:
        return f"{r.topic}@{r.offset} key={r.key} TOMBSTONE (key schema {r.key_schema_id})"
    v = r.value
    return (f"{r.topic}@{r.offset} key={r.key} op={v['op']} ids={r.key_schema_id}/{r.value_schema_id}"
            f" before={json.dumps(v['before'])} after={json.dumps(v['after'])}")


def wire_ok(recs: list[Record]) -> None:
    for r in recs:
        check(r.raw_key is not None and r.raw_key[0] == 0 and r.key_schema_id is not None,
              f"{r.topic}@{r.offset}: key in wire format (magic 0, schema id {r.key_schema_id})")
        if r.raw_value is not None:
            check(r.raw_value[0] == 0 and r.value_schema_id is not None,
                  f"{r.topic}@{r.offset}: value in wire format (magic 0, schema id {r.value_schema_id})")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--db", default="dbz_proof")
    ap.add_argument("--poll-ms", type=int, default=int(os.environ.get("CONNECT_POLL_INTERVAL_MS", "20")))
    ap.add_argument("--samples", type=int, default=20)
    ap.add_argument("--keep", action="store_true", help="leave the connector and database")
    a = ap.parse_args()

    stamp = time.strftime("%H%M%S")
    prefix = f"proof{stamp}"
    name = f"proof-{stamp}"
    slot = f"dbz_{a.db}"
    cust, orders = f"{prefix}.public.customers", f"{prefix}.public.orders"
    registry = Registry(default_registry())
    pg = dict(host="127.0.0.1", port=int(os.environ.get("PGPORT", "5432")), user="postgres",
              password="postgres", dbname=a.db, autocommit=True)
    results: dict = {"prefix": prefix, "poll_interval_ms": a.poll_ms}

    print(f"== fresh database {a.db}, connector {name}, topics {prefix}.public.*")
    stack("postgres.sh", "reset", a.db)
    probe = Probe([cust, orders])
    try:
        t0 = time.time()
        stack("connect.sh", "register", name, f"database.dbname={a.db}", f"slot.name={slot}",
              f"topic.prefix={prefix}", f"poll.interval.ms={a.poll_ms}", "skipped.operations=none",
              "topic.creation.default.message.timestamp.type=LogAppendTime")
        t_reg = time.time()
        snap = probe.take(7, 60)
        first = min(r.received_ms for r in snap) / 1000
        results["register_to_running_ms"] = round((t_reg - t0) * 1000)
        results["register_to_first_record_ms"] = round((first - t0) * 1000)
        print(f"== snapshot: register -> RUNNING {results['register_to_running_ms']} ms, "
              f"-> first record {results['register_to_first_record_ms']} ms")
        for r in snap:
            print("   " + summary(r))
        check(sorted((r.topic, r.op) for r in snap).count((cust, "r")) == 3, "3 customers snapshot records (op=r)")
        check(sorted((r.topic, r.op) for r in snap).count((orders, "r")) == 4, "4 orders snapshot records (op=r)")
        wire_ok(snap)
        subjects = registry.subjects()
        for t in (cust, orders):
            for part in ("key", "value"):
                check(f"{t}-{part}" in subjects, f"registry subject {t}-{part}")
        results["snapshot_source_snapshot"] = [r.value["source"]["snapshot"] for r in snap if r.topic == cust]

        with psycopg.connect(**pg) as conn:
            def change(sql: str, n: int, label: str, timeout: float = 15) -> list[Record]:
                conn.execute(sql)
                recs = probe.take(n, timeout)
                extra = probe.drain(1.0)
                print(f"== {label}: {sql}")
                for r in recs + extra:
                    print("   " + summary(r))
                check(not extra, f"no more than {n} record(s)")
                wire_ok(recs)
                return recs

            (u,) = change("UPDATE customers SET email = 'bob2@example.com' WHERE id = 2", 1,
                          "UPDATE email, REPLICA IDENTITY DEFAULT")
            check(u.op == "u" and u.value["before"] is None and u.value["after"]["email"] == "bob2@example.com",
                  "op=u, before=null, after has the new email")

            conn.execute("ALTER TABLE customers REPLICA IDENTITY FULL")
            (u,) = change("UPDATE customers SET email = 'alice2@example.com' WHERE id = 3", 1,
                          "UPDATE email, REPLICA IDENTITY FULL")
            check(u.op == "u" and u.value["before"]["email"] == "alice@example.com"
                  and u.value["after"]["email"] == "alice2@example.com", "op=u, before has the old email")

            d, tomb = change("DELETE FROM orders WHERE id = 4", 2, "DELETE, REPLICA IDENTITY DEFAULT")
            check(d.op == "d" and d.value["before"]["id"] == 4 and d.value["after"] is None, "op=d with the key in before")
            check(tomb.value is None and tomb.key == {"id": 4} and tomb.value_schema_id is None, "then a tombstone")
            results["delete_default_before"] = d.value["before"]
            orders_vid = d.value_schema_id

            d, tomb = change("DELETE FROM customers WHERE id = 2", 2, "DELETE, REPLICA IDENTITY FULL")
            check(d.op == "d" and d.value["before"]["email"] == "bob2@example.com", "op=d with the full row in before")
            check(tomb.value is None and tomb.key == {"id": 2}, "then a tombstone")

            v1 = registry.versions(f"{cust}-value")
            conn.execute("ALTER TABLE customers ADD COLUMN phone VARCHAR(32)")
            time.sleep(1)
            check(not probe.drain(0.5), "ALTER TABLE ADD COLUMN alone emits nothing")
            (c,) = change("INSERT INTO customers(email, name, phone) VALUES ('dan@example.com', 'Dan', '+1-555-0100')",
                          1, "INSERT after ADD COLUMN phone")
            v2 = registry.versions(f"{cust}-value")
            check(c.op == "c" and c.value["after"]["phone"] == "+1-555-0100", "op=c with phone")
            check(len(v2) == len(v1) + 1, f"{cust}-value versions {v1} -> {v2}")
            check(c.value_schema_id != snap[0].value_schema_id or snap[0].topic != cust,
                  f"new value schema id {c.value_schema_id}")
            latest = json.loads(registry.version(f"{cust}-value", "latest")["schema"])
            phone = [f for f in latest["fields"][0]["type"][1]["fields"] if f["name"] == "phone"]
            print(f"   registry {cust}-value latest: phone field {phone}")
            results["schema_v2"] = {"versions": v2, "value_schema_id": c.value_schema_id, "phone": phone}

            print("== TRUNCATE orders (skipped.operations=none)")
            conn.execute("TRUNCATE orders")
            tr = probe.drain(3.0)
            for r in tr:
                print("   " + summary(r) + f" source.table={r.value and r.value['source']['table']}")
            results["truncate"] = [{"topic": r.topic, "op": r.op, "key": r.key,
                                    "key_schema_id": r.key_schema_id, "value_schema_id": r.value_schema_id,
                                    "before": r.value and r.value["before"], "after": r.value and r.value["after"]}
                                   for r in tr]
            check(len(tr) == 1 and tr[0].op == "t" and tr[0].topic == orders,
                  "one op=t record on the orders topic")
            t = tr[0]
            check(t.raw_key is None, "its Kafka key is null (no key schema id)")
            check(t.raw_value[0] == 0 and t.value_schema_id == orders_vid,
                  f"its value is in wire format with the table's value schema (id {t.value_schema_id})")
            check(t.value["before"] is None and t.value["after"] is None, "before and after are null")

            print(f"== latency: {a.samples} single-row INSERT commits, poll.interval.ms={a.poll_ms}")
            lat_broker, lat_consumer = [], []
            for i in range(a.samples):
                t_commit = None
                conn.execute("INSERT INTO orders(customer_id, status, total_cents, items) VALUES (1, 'paid', %s, '[]')",
                             (i,))
                t_commit = time.time() * 1000
                (r,) = probe.take(1, 10)
                check_ts = r.timestamp_type == 2
                if not check_ts:
                    raise Failed(f"record timestamp type {r.timestamp_type}, expected LogAppendTime (2)")
                lat_broker.append(r.timestamp_ms - t_commit)
                lat_consumer.append(r.received_ms - t_commit)
                time.sleep(random.uniform(0.15, 0.65))  # no phase lock with the poll interval
            def stats(xs: list[float]) -> dict:
                xs = sorted(xs)
                return {"p50": round(statistics.median(xs), 1), "p90": round(xs[int(len(xs) * 0.9) - 1], 1),
                        "min": round(xs[0], 1), "max": round(xs[-1], 1)}
            results["latency_commit_to_broker_ms"] = stats(lat_broker)
            results["latency_commit_to_consumer_ms"] = stats(lat_consumer)
            print(f"   commit -> broker append: {results['latency_commit_to_broker_ms']}")
            print(f"   commit -> consumer:      {results['latency_commit_to_consumer_ms']}")
    finally:
        probe.close()
        if not a.keep:
            subprocess.run(["bash", str(STACK / "connect.sh"), "unregister", name], capture_output=True)
            subprocess.run(["bash", str(STACK / "postgres.sh"), "drop", a.db], capture_output=True)
    print("== results")
    print(json.dumps(results, indent=1, default=str))
    print("PROOF PASSED")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Failed as e:
        print(f"PROOF FAILED: {e}", file=sys.stderr)
        sys.exit(1)
