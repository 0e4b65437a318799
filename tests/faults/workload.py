"""The fault suite's workload: a seeded history of Debezium changes to the reference tables
(`customers` with the unique `email`, `orders` in a relation to their customer), encoded the
way Debezium's AvroConverter writes them, and the poison records mixed into it.

The changes are the ones the sink must get right under redelivery and any interleaving of
partitions (ARCHITECTURE.md, "Change semantics"):
- inserts, updates (with `before` null, as under REPLICA IDENTITY DEFAULT, or the full row),
  deletes whose `before` holds only the key and Avro defaults (REPLICA IDENTITY DEFAULT) or the
  full row, each usually followed by its tombstone;
- unique emails that move between rows: an email released by an update or a delete is soon
  claimed by another customer, which usually lives on another partition;
- orders moving between customers (relation members changing parent);
- primary-key changes as Debezium emits them: delete and tombstone of the old key, insert of
  the new key, all at one LSN.
Source positions (`source.lsn`) grow with every transaction, as PostgreSQL's do.

Poison records (each must end in the dead-letter topic with its origin): not Avro, an unknown
schema id, a truncated body, a registered schema of the wrong shape (`op` an int, `after` a
string), JSON that is not an envelope, and an oversized record (about 1 MB of noise behind a
valid header).

Everything here is pure: the same seed gives the same records, byte for byte.
"""

from __future__ import annotations

import copy
import io
import json
import random
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import fastavro

REPO = Path(__file__).resolve().parents[2]
SCHEMAS = REPO / "schemas" / "debezium"
FIXTURES = REPO / "tests" / "fixtures" / "debezium"

TABLES = ("customers", "orders")
RECORDED_IDS = {"customers": (1, 2), "orders": (3, 4)}
PLANS = ("free", "pro", "enterprise")
STATUSES = ("pending", "paid", "shipped", "delivered", "cancelled")
# An Avro record of a registered schema that is not a Debezium envelope.
WRONG_SHAPE_SCHEMA = {
    "type": "record", "name": "Envelope", "namespace": "faults.wrong",
    "fields": [{"name": "op", "type": "int"}, {"name": "after", "type": "string"}],
}
OVERSIZED_BYTES = 1_000_000


def schema_text(table: str, part: str) -> str:
    """The recorded registry entry's schema (`part` is `key` or `value`) as JSON text."""
    key_id, value_id = RECORDED_IDS[table]
    sid = key_id if part == "key" else value_id
    entry = json.loads((SCHEMAS / f"cdc.public.{table}-{part}.v1.id{sid}.json").read_text())
    return json.dumps(entry["schema"])


def envelope_template(table: str) -> dict[str, Any]:
    """A recorded insert's value: the `source` block and the other fields generated records keep."""
    return json.loads((FIXTURES / f"avro-{table}-op_c-insert.json").read_text())["value"]


def frame(schema_id: int, schema: Any, datum: Any) -> bytes:
    """Confluent wire format: magic byte 0, the schema id (big endian), the Avro body."""
    out = io.BytesIO()
    out.write(b"\x00" + struct.pack(">I", schema_id))
    fastavro.schemaless_writer(out, schema, datum)
    return out.getvalue()


@dataclass
class Record:
    """One record to produce: its table (topic), key and value bytes (`None`: tombstone)."""

    table: str
    key: bytes | None
    value: bytes | None
    # The record's timestamp: a few milliseconds after the commit, as Debezium's producer
    # stamps it (a tombstone's `source_ts_ms` is this; it has no envelope).
    timestamp_ms: int = 0
    # Poison records: what is wrong with them (`None` for a valid change).
    poison: str | None = None


@dataclass
class Workload:
    """The records in production order, and what they are made of."""

    records: list[Record] = field(default_factory=list)
    changes: int = 0  # valid change events (tombstones included)
    counts: dict[str, int] = field(default_factory=dict)  # by kind of change

    def count(self, kind: str) -> None:
        self.counts[kind] = self.counts.get(kind, 0) + 1


class Codecs:
    """Avro writers for both tables with the ids the registry gave their schemas."""

    def __init__(self, ids: dict[str, tuple[int, int]], wrong_shape_id: int):
        self.ids = ids
        self.wrong_shape_id = wrong_shape_id
        self.key = {t: fastavro.parse_schema(json.loads(schema_text(t, "key"))) for t in TABLES}
        self.value = {t: fastavro.parse_schema(json.loads(schema_text(t, "value"))) for t in TABLES}
        self.wrong_shape = fastavro.parse_schema(WRONG_SHAPE_SCHEMA)

    def encode_key(self, table: str, row_id: int) -> bytes:
        return frame(self.ids[table][0], self.key[table], {"id": row_id})

    def encode_value(self, table: str, envelope: dict[str, Any]) -> bytes:
        return frame(self.ids[table][1], self.value[table], envelope)


class IdPool:
    """Row ids with O(1) add, remove and random choice."""

    def __init__(self) -> None:
        self.ids: list[int] = []
        self.where: dict[int, int] = {}

    def __len__(self) -> int:
        return len(self.ids)

    def __contains__(self, row_id: int) -> bool:
        return row_id in self.where

    def add(self, row_id: int) -> None:
        self.where[row_id] = len(self.ids)
        self.ids.append(row_id)

    def remove(self, row_id: int) -> None:
        i = self.where.pop(row_id)
        last = self.ids.pop()
        if last != row_id:
            self.ids[i] = last
            self.where[last] = i

    def choice(self, rng: random.Random) -> int:
        return self.ids[rng.randrange(len(self.ids))]


class Generator:
    """Builds the history: a small simulated database whose every statement becomes changes."""

    def __init__(self, codecs: Codecs, seed: int, start_us: int = 1_795_480_000_000_000):
        self.codecs = codecs
        self.rng = random.Random(seed)
        self.templates = {t: envelope_template(t) for t in TABLES}
        self.lsn = 60_000_000
        self.tx = 1000
        self.now_us = start_us
        self.customers: dict[int, dict[str, Any]] = {}
        self.orders: dict[int, dict[str, Any]] = {}
        self.customer_ids, self.order_ids = IdPool(), IdPool()
        self.children: dict[int, set[int]] = {}  # customer id -> its order ids
        self.next_id = {"customers": 1, "orders": 1}
        self.email_serial = 0
        self.free_emails: list[str] = []  # released, to be claimed again soon
        self.taken_emails: set[str] = set()
        self.out = Workload()

    # ------------------------------------------------------------ envelopes

    def _tick(self) -> None:
        """A new transaction: a later LSN and commit time."""
        self.lsn += 8 + self.rng.randrange(64)
        self.tx += 1
        self.now_us += 100 + self.rng.randrange(5000)

    def _envelope(self, table: str, op: str, before: dict | None, after: dict | None) -> dict[str, Any]:
        value = copy.deepcopy(self.templates[table])
        ms = self.now_us // 1000
        value.update(op=op, before=before, after=after, ts_ms=ms + 3, ts_us=self.now_us + 3000,
                     ts_ns=(self.now_us + 3000) * 1000)
        source = value["source"]
        source.update(lsn=self.lsn, txId=self.tx, ts_ms=ms, ts_us=self.now_us, ts_ns=self.now_us * 1000,
                      snapshot="false", sequence=json.dumps([str(self.lsn - 8), str(self.lsn)]))
        return value

    def _emit(self, table: str, row_id: int, envelope: dict | None, kind: str) -> None:
        value = None if envelope is None else self.codecs.encode_value(table, envelope)
        self.out.records.append(Record(table, self.codecs.encode_key(table, row_id), value, self.now_us // 1000 + 3))
        self.out.changes += 1
        self.out.count(kind)

    @staticmethod
    def _default_before(table: str, row_id: int) -> dict[str, Any]:
        """`before` of a delete under REPLICA IDENTITY DEFAULT: the key, the rest Avro defaults
        (as the recorded `avro-orders-op_d-replica-identity-default.json` shows)."""
        if table == "customers":
            return {"id": row_id, "email": "", "name": "", "plan": "free", "mrr_cents": 0,
                    "created_at": 0, "updated_at": 0}
        return {"id": row_id, "customer_id": None, "status": "pending", "total_cents": 0, "items": "",
                "created_at": 0, "updated_at": 0}

    # ------------------------------------------------------------ emails

    def _email(self) -> str:
        """A free email: usually one another row released lately (so unique values move
        between rows), else a new one."""
        if self.free_emails and self.rng.random() < 0.6:
            recent = len(self.free_emails) // 4 + 1
            email = self.free_emails.pop(len(self.free_emails) - 1 - self.rng.randrange(recent))
        else:
            self.email_serial += 1
            email = f"user{self.email_serial}@example.com"
        self.taken_emails.add(email)
        return email

    def _release(self, email: str) -> None:
        self.taken_emails.discard(email)
        self.free_emails.append(email)
        if len(self.free_emails) > 200:
            self.free_emails.pop(0)

    # ------------------------------------------------------------ statements

    def insert_customer(self) -> None:
        self._tick()
        row_id = self.next_id["customers"]
        self.next_id["customers"] += 1
        row = {"id": row_id, "email": self._email(), "name": f"Customer {row_id}",
               "plan": self.rng.choice(PLANS), "mrr_cents": self.rng.randrange(0, 50_000),
               "created_at": self.now_us, "updated_at": self.now_us}
        self._add_customer(row)
        self._emit("customers", row_id, self._envelope("customers", "c", None, dict(row)), "customer insert")

    def _add_customer(self, row: dict[str, Any]) -> None:
        self.customers[row["id"]] = row
        self.customer_ids.add(row["id"])
        self.children[row["id"]] = set()

    def _drop_customer(self, row_id: int) -> dict[str, Any]:
        self.customer_ids.remove(row_id)
        del self.children[row_id]
        return self.customers.pop(row_id)

    def update_customer(self) -> None:
        row_id = self.customer_ids.choice(self.rng)
        self._tick()
        row = self.customers[row_id]
        before = None if self.rng.random() < 0.7 else dict(row)  # DEFAULT: no before image
        if self.rng.random() < 0.7:
            old = row["email"]
            row["email"] = self._email()
            self._release(old)
        row["mrr_cents"] = self.rng.randrange(0, 50_000)
        row["plan"] = self.rng.choice(PLANS + (None,))
        row["updated_at"] = self.now_us
        # Renamed from the update's own position (no draw: the random stream stays as it was),
        # so the name search's members move under every fault too.
        row["name"] = f"{('Jane', 'JANE', 'Ågot', 'åsa')[self.now_us % 4]} {row_id}"
        self._emit("customers", row_id, self._envelope("customers", "u", before, dict(row)), "customer update")

    def swap_emails(self) -> None:
        """Two customers exchange their emails in one transaction (through a temporary value,
        as the unique constraint requires): three updates at one LSN, on any partitions."""
        a, b = self.customer_ids.choice(self.rng), self.customer_ids.choice(self.rng)
        if a == b:
            return
        self._tick()
        ea, eb = self.customers[a]["email"], self.customers[b]["email"]
        for row_id, email in ((a, f"swap{self.tx}@example.com"), (b, ea), (a, eb)):
            row = self.customers[row_id]
            row["email"] = email
            row["updated_at"] = self.now_us
            self._emit("customers", row_id, self._envelope("customers", "u", None, dict(row)), "email swap update")

    def delete_customer(self) -> None:
        row_id = self.customer_ids.choice(self.rng)
        for order_id in sorted(self.children[row_id]):  # its orders first, as a foreign key demands
            self.delete_order(order_id)
        self._tick()
        row = self._drop_customer(row_id)
        self._release(row["email"])
        full = self.rng.random() < 0.3
        before = dict(row) if full else self._default_before("customers", row_id)
        self._emit("customers", row_id, self._envelope("customers", "d", before, None),
                   "customer delete (identity full)" if full else "customer delete (identity default)")
        if self.rng.random() < 0.9:
            self._emit("customers", row_id, None, "tombstone")

    def rekey_customer(self) -> None:
        """`UPDATE customers SET id = new` for a customer without orders: delete + tombstone of
        the old key and insert of the new one at one LSN (Debezium's primary-key change)."""
        old_id = self.customer_ids.choice(self.rng)
        if self.children[old_id]:
            return
        self._tick()
        row = self._drop_customer(old_id)
        new_id = self.next_id["customers"]
        self.next_id["customers"] += 1
        self._emit("customers", old_id,
                   self._envelope("customers", "d", self._default_before("customers", old_id), None),
                   "primary key change (delete)")
        self._emit("customers", old_id, None, "tombstone")
        row = dict(row, id=new_id, updated_at=self.now_us)
        self._add_customer(row)
        self._emit("customers", new_id, self._envelope("customers", "c", None, dict(row)), "primary key change (insert)")

    def insert_order(self) -> None:
        self._tick()
        row_id = self.next_id["orders"]
        self.next_id["orders"] += 1
        qty = 1 + self.rng.randrange(5)
        row = {"id": row_id, "customer_id": self.customer_ids.choice(self.rng), "status": "pending",
               "total_cents": qty * 1250,
               "items": json.dumps([{"sku": f"SKU-{row_id % 97}", "qty": qty, "price_cents": 1250}]),
               "created_at": self.now_us, "updated_at": self.now_us}
        self.orders[row_id] = row
        self.order_ids.add(row_id)
        self.children[row["customer_id"]].add(row_id)
        self._emit("orders", row_id, self._envelope("orders", "c", None, dict(row)), "order insert")

    def update_order(self) -> None:
        row_id = self.order_ids.choice(self.rng)
        self._tick()
        row = self.orders[row_id]
        row["status"] = self.rng.choice(STATUSES)
        kind = "order update"
        if self.rng.random() < 0.2:  # handed to another customer: the relation member moves
            self.children[row["customer_id"]].discard(row_id)
            row["customer_id"] = self.customer_ids.choice(self.rng)
            self.children[row["customer_id"]].add(row_id)
            kind = "order moved to another customer"
        row["updated_at"] = self.now_us
        self._emit("orders", row_id, self._envelope("orders", "u", None, dict(row)), kind)

    def delete_order(self, row_id: int | None = None) -> None:
        if row_id is None:
            row_id = self.order_ids.choice(self.rng)
        self._tick()
        row = self.orders.pop(row_id)
        self.order_ids.remove(row_id)
        self.children[row["customer_id"]].discard(row_id)
        full = self.rng.random() < 0.3
        before = dict(row) if full else self._default_before("orders", row_id)
        self._emit("orders", row_id, self._envelope("orders", "d", before, None),
                   "order delete (identity full)" if full else "order delete (identity default)")
        if self.rng.random() < 0.9:
            self._emit("orders", row_id, None, "tombstone")

    def step(self) -> None:
        """One statement, drawn so that the tables keep a working size."""
        roll = self.rng.random()
        n_customers, n_orders = len(self.customer_ids), len(self.order_ids)
        if n_customers < 50 or roll < 0.12:
            self.insert_customer()
        elif roll < 0.34:
            self.update_customer()
        elif roll < 0.37:
            self.swap_emails()
        elif roll < 0.43:
            if n_customers > 500:
                self.delete_customer()
        elif roll < 0.44:
            self.rekey_customer()
        elif roll < 0.66 or n_orders < 20:
            self.insert_order()
        elif roll < 0.92:
            self.update_order()
        else:
            self.delete_order()

    # ------------------------------------------------------------ poison

    def poison(self) -> None:
        """One poison record of a random kind, on a random table, with the key of a live row
        (so that it lands among that row's changes)."""
        table = self.rng.choice(TABLES)
        rows = self.customer_ids if table == "customers" else self.order_ids
        key = self.codecs.encode_key(table, rows.choice(self.rng) if len(rows) else 1)
        kind = self.rng.choice(("not avro", "unknown schema id", "truncated body", "wrong types", "json not an envelope"))
        if kind == "not avro":
            value = b"\x07this is not avro: " + self.rng.randbytes(40)
        elif kind == "unknown schema id":
            value = b"\x00" + struct.pack(">I", 987_654_321) + self.rng.randbytes(60)
        elif kind == "truncated body":
            self._tick()
            row = {"id": 999_999_999, "email": "cut@example.com", "name": "cut short", "plan": "pro",
                   "mrr_cents": 1, "created_at": self.now_us, "updated_at": self.now_us}
            whole = self.codecs.encode_value("customers", self._envelope("customers", "c", None, row))
            table, key = "customers", self.codecs.encode_key("customers", 999_999_999)
            value = whole[: len(whole) // 2]
        elif kind == "wrong types":
            value = frame(self.codecs.wrong_shape_id, self.codecs.wrong_shape, {"op": 3, "after": "not a row"})
        else:
            value = json.dumps({"op": 42, "after": "not a row", "payload": None}).encode()
        self.out.records.append(Record(table, key, value, self.now_us // 1000 + 3, poison=kind))

    def oversized(self) -> None:
        """About 1 MB of noise behind a valid header: undecodable, and as large as the
        broker takes."""
        value = b"\x00" + struct.pack(">I", self.codecs.ids["orders"][1]) + self.rng.randbytes(OVERSIZED_BYTES)
        self.out.records.append(Record("orders", self.codecs.encode_key("orders", 1), value, self.now_us // 1000 + 3,
                                       poison="oversized"))


def generate(codecs: Codecs, seed: int, changes: int, poison: int) -> Workload:
    """About `changes` valid changes (a statement may end a few above) with `poison` poison
    records spread through them (one of them oversized), in production order."""
    gen = Generator(codecs, seed)
    poison_at = sorted(gen.rng.sample(range(changes // 20, changes), max(0, poison - 1)))
    oversized_at = changes // 2
    while gen.out.changes < changes:
        gen.step()
        while poison_at and gen.out.changes >= poison_at[0]:
            poison_at.pop(0)
            gen.poison()
        if oversized_at is not None and poison > 0 and gen.out.changes >= oversized_at:
            oversized_at = None
            gen.oversized()
    return gen.out
