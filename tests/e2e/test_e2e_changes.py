"""End to end on real PostgreSQL and Debezium, one isolated pipeline per test (harness.py):
each kind of change is made in SQL, then the real `agent-cli tool ...` output is compared with
what SQL returns, field by field, polling until equal; then the whole Redis database is
compared key by key with the SQL rows. Needs the stack (tests/run.sh starts it) and the built
binaries; a missing service fails the test."""

from __future__ import annotations

import time

import pytest
from confluent_kafka import Producer

from harness import CONVERTERS, Pipeline

IDENTITIES = ["default", "full"]
# `sink run --writer`: the script path, and the exclusive writer's own decisions.
WRITERS = ["shared", "exclusive"]
# Debezium's converters (harness.CONVERTERS): every scenario runs with Avro, JsonConverter with
# the schema embedded and without it (and the mapping's `types:`), and must give the same read
# model; the exclusive writer's runs are not repeated per converter (the decoder is the same).
WRITER_CONVERTERS = [("shared", c) for c in CONVERTERS] + [("exclusive", "avro")]


def set_identity(p: Pipeline, identity: str) -> None:
    if identity == "full":
        p.execute("ALTER TABLE customers REPLICA IDENTITY FULL")
        p.execute("ALTER TABLE orders REPLICA IDENTITY FULL")


def check_everything(p: Pipeline) -> None:
    """Every customer (by id and email), order and customer's orders, then every Redis key."""
    for (cid, email) in p.sc.query("SELECT id, email FROM customers ORDER BY id"):
        p.converge_customer(cid)
        p.converge_email(email)
        p.converge_customer_orders(cid)
    for (oid,) in p.sc.query("SELECT id FROM orders ORDER BY id"):
        p.converge_order(oid)
    p.assert_redis_matches_sql()
    assert p.dead_letters() == 0, "the sink dead-lettered records"


def check_fresh(p: Pipeline, since_ms: int, timeout: float = 10.0) -> None:
    """agent-cli status --json: both mappings fresh with a small lag and the last change seen,
    once the sink has recorded that it caught up (it checks once a second)."""
    deadline = time.monotonic() + timeout
    while True:
        st = p.status()
        by_name = {m["mapping"]: m for m in st["mappings"]}
        assert set(by_name) == {"customers", "orders"}, st
        problems = []
        for name, m in by_name.items():
            if m["stale"] is not False:
                problems.append(f"{name} stale")
            if m["lag_ms"] is None or not 0 <= m["lag_ms"] < 3000:
                problems.append(f"{name} lag {m['lag_ms']}")
            if not m["applied_count"] or m["topic"] != p.sc.topic(name):
                problems.append(f"{name}: {m}")
        # The changes of this test were committed after `since_ms`: their source time shows.
        if max(m["source_ts_ms"] or 0 for m in by_name.values()) < since_ms - 1000:
            problems.append("last change not seen")
        if not problems:
            return
        assert time.monotonic() < deadline, f"agent-cli status --json after {timeout}s: {problems}\n{st}"
        time.sleep(0.2)


@pytest.mark.parametrize("converter", CONVERTERS)
def test_initial_snapshot(converter):
    with Pipeline(f"snapshot_{converter}", converter=converter) as p:
        p.converge_customer(1, timeout=30)  # the sink's start and group join included
        check_everything(p)
        assert p.tool("get_customer", {"email": "jane@example.com"})["result"]["plan"] == "pro"
        assert [o["id"] for o in p.tool("get_customer_orders", {"customer_id": 1})["result"]] == [3, 2, 1], \
            "same created_at (one transaction): ties newest id first"
        st = p.status()
        assert {m["mapping"]: m["applied_count"] for m in st["mappings"]} == {"customers": 3, "orders": 4}, st
        check_fresh(p, 0)


@pytest.mark.parametrize("converter", CONVERTERS)
def test_insert_and_update(converter):
    with Pipeline(f"insert_update_{converter}", converter=converter) as p:
        p.converge_customer(1, timeout=30)
        t0 = int(time.time() * 1000)
        p.transaction([
            "INSERT INTO customers(id, email, name, plan, mrr_cents) VALUES (10, 'dora@example.com', 'Dora', 'pro', 1999)",
            "INSERT INTO orders(id, customer_id, status, total_cents, items, created_at) VALUES "
            "(10, 10, 'paid', 1999, '[{\"sku\": \"PRO-M\", \"qty\": 1, \"nested\": {\"a\": [1, 2.5, null, true]}}]',"
            " '2030-01-02 03:04:05.000007')",
            # NULL (in a column without DEFAULT): an order without customer, in no relation.
            "INSERT INTO orders(id, customer_id, total_cents, items, created_at) VALUES (11, NULL, 5, '{}', '1999-12-31 23:59:59')",
        ])
        p.converge_customer(10)
        p.converge_email("dora@example.com")
        p.converge_order(10)
        assert p.tool("get_order", {"order_id": 10})["result"]["created_at"] == "2030-01-02T03:04:05.000007Z"
        assert p.converge_customer_orders(10)[0]["items"][0]["nested"] == {"a": [1, 2.5, None, True]}
        o11 = p.converge_order(11)
        assert o11["customer_id"] is None and o11["created_at"] == "1999-12-31T23:59:59.000000Z", o11

        p.execute("UPDATE customers SET plan = 'enterprise', mrr_cents = 29900, name = 'Jane Q. Doe', "
                  "updated_at = '2031-05-06 07:08:09.123456' WHERE id = 1")
        p.execute("UPDATE orders SET status = 'refunded', items = '[]', total_cents = 0 WHERE id = 2")
        p.execute("UPDATE orders SET customer_id = 2 WHERE id = 11")      # NULL -> value: joins a relation
        p.execute("UPDATE orders SET customer_id = NULL WHERE id = 4")    # value -> NULL: leaves it
        assert p.converge_customer(1)["updated_at"] == "2031-05-06T07:08:09.123456Z"
        assert p.converge_order(2)["items"] == []
        assert [o["id"] for o in p.converge_customer_orders(2)] == [11]
        assert p.converge_customer_orders(3) == []
        assert p.converge_order(4)["customer_id"] is None
        # The rename moved Jane in the name search; "dora" was inserted above.
        assert [c["id"] for c in p.converge_find_customers("JANE q")] == [1]
        assert p.converge_find_customers("jane doe") == []
        assert [c["name"] for c in p.converge_find_customers("d", 10)] == ["Dora"]
        check_everything(p)
        check_fresh(p, t0)


@pytest.mark.parametrize("converter", CONVERTERS)
@pytest.mark.parametrize("identity", IDENTITIES)
def test_email_change(identity, converter):
    with Pipeline(f"email_{identity}_{converter}", converter=converter) as p:
        set_identity(p, identity)
        p.converge_customer(1, timeout=30)
        p.execute("UPDATE customers SET email = 'jane.doe@example.com' WHERE id = 1")
        p.converge_email("jane.doe@example.com")
        p.converge_email("jane@example.com")  # SQL: no such row -> null
        assert p.tool("get_customer", {"email": "jane@example.com"})["result"] is None
        assert p.tool("get_customer", {"email": "jane.doe@example.com"})["result"]["id"] == 1
        # A swap in one transaction: the index ends up naming the right rows.
        p.transaction([
            "UPDATE customers SET email = 'swap@example.com' WHERE id = 2",
            "UPDATE customers SET email = 'bob@example.com' WHERE id = 3",
            "UPDATE customers SET email = 'alice@example.com' WHERE id = 2",
        ])
        assert p.converge_email("alice@example.com")["id"] == 2
        assert p.converge_email("bob@example.com")["id"] == 3
        p.converge_email("swap@example.com")
        # The released email is taken by a new row.
        p.execute("INSERT INTO customers(id, email, name) VALUES (4, 'jane@example.com', 'Other Jane')")
        assert p.converge_email("jane@example.com")["id"] == 4
        check_everything(p)


@pytest.mark.parametrize("converter", CONVERTERS)
@pytest.mark.parametrize("identity", IDENTITIES)
def test_deletes(identity, converter):
    with Pipeline(f"delete_{identity}_{converter}", converter=converter) as p:
        set_identity(p, identity)
        p.converge_customer_orders(3, timeout=30)
        p.execute("DELETE FROM orders WHERE id = 4")
        assert p.converge_order(4) is None
        assert p.converge_customer_orders(3) == []
        p.execute("DELETE FROM customers WHERE id = 3")
        assert p.converge_customer(3) is None
        # Also under REPLICA IDENTITY DEFAULT, whose before image holds only the key.
        assert p.converge_find_customers("alice") == []
        assert p.converge_email("alice@example.com") is None
        p.transaction(["DELETE FROM orders WHERE id = 2", "DELETE FROM customers WHERE id = 2"])
        assert p.converge_customer(2) is None
        assert [o["id"] for o in p.converge_customer_orders(1)] == [3, 1]
        check_everything(p)
        assert not any(k.startswith(("customer:3", "order:4", "customer:2", "order:2")) or k.endswith(
            ("alice@example.com", "bob@example.com")) for k in p.db.keys()), sorted(p.db.keys())


@pytest.mark.parametrize("writer,converter", WRITER_CONVERTERS)
@pytest.mark.parametrize("identity", IDENTITIES)
def test_primary_key_change(identity, writer, converter):
    with Pipeline(f"pk_{identity}_{writer}_{converter}", writer=writer, converter=converter) as p:
        set_identity(p, identity)
        p.converge_order(4, timeout=30)
        p.execute("UPDATE orders SET id = 100 WHERE id = 4")
        assert p.converge_order(100)["customer_id"] == 3
        assert p.converge_order(4) is None
        assert [o["id"] for o in p.converge_customer_orders(3)] == [100]
        # A customer's key too (one without orders: the foreign key): the email follows.
        p.execute("UPDATE customers SET id = 200 WHERE id = 2")
        assert p.converge_customer(200)["email"] == "bob@example.com"
        assert p.converge_customer(2) is None
        assert p.converge_email("bob@example.com")["id"] == 200
        assert [c["id"] for c in p.converge_find_customers("BOB")] == [200]
        # Key and parent at once.
        p.execute("UPDATE orders SET id = 300, customer_id = 200 WHERE id = 3")
        assert [o["id"] for o in p.converge_customer_orders(200)] == [300]
        assert [o["id"] for o in p.converge_customer_orders(1)] == [2, 1]
        check_everything(p)


@pytest.mark.parametrize("writer,converter", WRITER_CONVERTERS)
def test_add_column_mid_stream(writer, converter):
    with Pipeline(f"add_column_{writer}_{converter}", writer=writer, converter=converter) as p:
        p.converge_customer(1, timeout=30)
        p.execute("ALTER TABLE customers ADD COLUMN phone VARCHAR(32), ADD COLUMN loyalty INTEGER, "
                  "ADD COLUMN credit NUMERIC(10, 2), ADD COLUMN vip BOOLEAN, ADD COLUMN birthday DATE")
        p.execute("INSERT INTO customers(id, email, name, phone, loyalty, credit, vip, birthday) "
                  "VALUES (5, 'dan@example.com', 'Dan', '+1-555-0100', 42, 12.50, true, '1990-02-03')")
        dan = p.converge_customer(5)
        assert dan["phone"] == "+1-555-0100" and dan["loyalty"] == 42 and dan["vip"] is True, dan
        assert dan["credit"] == "12.50" and dan["birthday"] == "1990-02-03", dan
        p.execute("UPDATE customers SET phone = '+44 20 7946 0000', loyalty = -7 WHERE id = 1")
        jane = p.converge_customer(1)
        assert jane["phone"] == "+44 20 7946 0000" and jane["loyalty"] == -7 and jane["vip"] is None, jane
        # Rows not touched since the ALTER have the new fields as null (SQL: NULL).
        assert p.converge_customer(2)["phone"] is None
        types = p.db.r.hgetall("sink:types:customers")
        assert {k: types.get(k) for k in ("phone", "loyalty", "credit", "vip", "birthday")} == {
            "phone": "string", "loyalty": "int", "credit": "decimal", "vip": "boolean", "birthday": "date"}, types
        check_everything(p)


@pytest.mark.parametrize("writer,converter", WRITER_CONVERTERS)
def test_truncate(writer, converter):
    with Pipeline(f"truncate_{writer}_{converter}", writer=writer, converter=converter) as p:
        p.converge_customer_orders(1, timeout=30)
        p.execute("TRUNCATE orders")
        for oid in (1, 2, 3, 4):
            assert p.converge_order(oid) is None
        assert p.converge_customer_orders(1) == []
        assert p.converge_customer(1)["email"] == "jane@example.com", "customers are not truncated"
        p.assert_redis_matches_sql()
        p.execute("TRUNCATE customers CASCADE")
        for cid in (1, 2, 3):
            assert p.converge_customer(cid) is None
        assert p.converge_email("jane@example.com") is None
        p.assert_redis_matches_sql()
        assert not [k for k in p.db.keys() if not k.startswith("sink:")], sorted(p.db.keys())
        # Life after a truncate: new rows (and an old email) are served again.
        p.transaction([
            "INSERT INTO customers(id, email, name) VALUES (1, 'jane@example.com', 'Jane Again')",
            "INSERT INTO orders(id, customer_id, total_cents, items) VALUES (7, 1, 100, '[]')",
        ])
        assert p.converge_email("jane@example.com")["name"] == "Jane Again"
        assert [o["id"] for o in p.converge_customer_orders(1)] == [7]
        check_everything(p)


@pytest.mark.parametrize("writer", WRITERS)
def test_sink_restart_resumes(writer):
    with Pipeline(f"restart_{writer}", writer=writer) as p:
        p.converge_customer(1, timeout=30)
        assert p.sink.stop() == 0, p.sink.log_tail()
        p.execute("UPDATE customers SET plan = 'free' WHERE id = 1")
        p.execute("INSERT INTO orders(id, customer_id, total_cents, items) VALUES (50, 2, 700, '[]')")
        p.execute("DELETE FROM orders WHERE id = 4")
        p.start_sink()
        assert p.converge_customer(1, timeout=30)["plan"] == "free"
        check_everything(p)
        st = p.status()
        assert {m["mapping"]: m["applied_count"] for m in st["mappings"]}["orders"] >= 6, st


@pytest.mark.parametrize("converter", ["json", "json_plain"])
def test_malformed_json_is_dead_lettered(converter):
    """A JSON record that does not parse goes to the dead-letter topic with its origin, and
    the changes after it are applied."""
    with Pipeline(f"bad_json_{converter}", converter=converter) as p:
        p.converge_customer(1, timeout=30)
        topic = p.sc.topic("customers")
        delivered = []
        producer = Producer({"bootstrap.servers": p.bootstrap})
        bad = b'{"op": "u", "after": {"id": 1, "plan": '
        producer.produce(topic, key=b'{"id":1}', value=bad,
                         on_delivery=lambda err, msg: delivered.append((err, msg.partition(), msg.offset())))
        producer.flush(10)
        [(err, partition, offset)] = delivered
        assert err is None, err
        p.execute("UPDATE customers SET plan = 'starter' WHERE id = 1")
        assert p.converge_customer(1)["plan"] == "starter", "the change after the bad record"
        [(key, value, headers)] = p.dead_letter_records(1)
        assert (key, value) == (b'{"id":1}', bad)
        assert (headers["dlq.topic"], headers["dlq.partition"], headers["dlq.offset"]) == (
            topic, str(partition), str(offset)), headers
        assert headers["dlq.error"].startswith("cannot decode: json value is not a debezium envelope"), headers
        p.assert_redis_matches_sql()


@pytest.mark.xfail(strict=True, reason=(
    "Known pipeline defect, not the sink's: Confluent's AvroConverter before 7.3 (the local stack "
    "runs 7.0.16) writes a NULL of a column that has a DEFAULT as that default (plan 'free', "
    "mrr_cents 0, timestamps 0), see confluentinc/schema-registry#2314; 7.3+ fixes it with "
    "{key,value}.converter.ignore.default.for.nullables=true (docker/connect/pg-avro.json sets it). "
    "strict: once the stack's converter is fixed this XPASSes and fails, so remove the mark."))
def test_null_in_column_with_default():
    with Pipeline("null_default") as p:
        p.converge_customer(1, timeout=30)
        p.execute("INSERT INTO customers(id, email, name, plan, mrr_cents, updated_at) "
                  "VALUES (11, 'eve@example.com', 'Eve', NULL, NULL, NULL)")
        p.execute("UPDATE customers SET plan = NULL WHERE id = 2")
        c11 = p.converge_customer(11, timeout=5)
        assert c11["plan"] is None and c11["mrr_cents"] is None and c11["updated_at"] is None, c11
        assert p.converge_customer(2, timeout=5)["plan"] is None


def test_idle_mapping_stays_fresh_while_another_is_busy():
    with Pipeline("idle_fresh") as p:
        p.converge_customer(1, timeout=30)
        t0, i, worst = time.monotonic(), 0, {}
        next_status = t0 + 1
        while time.monotonic() - t0 < 6:
            p.execute("UPDATE customers SET mrr_cents = %s WHERE id = 1", (i,))
            i += 1
            time.sleep(0.05)
            if time.monotonic() > next_status:
                for m in p.status()["mappings"]:
                    worst[m["mapping"]] = max(worst.get(m["mapping"], 0), m["lag_ms"])
                next_status = time.monotonic() + 1
        assert worst["customers"] < 2000, worst
        assert worst["orders"] < 2000, f"orders (idle, applied) lag under load on customers: {worst}"
