"""1,000 random mixed changes through the real pipeline, under REPLICA IDENTITY DEFAULT and
FULL with the default writer and under DEFAULT with `sink run --writer exclusive`, then the final state compared row by row with SQL: every customer through get_customer by
id and by email, every order through get_order, every customer's orders through
get_customer_orders (newest first by created_at, ties by id desc), deleted rows and released
emails answering null, and the Redis database holding exactly the keys the SQL rows call for.

The RNG seed is printed and named in every failure; rerun one with
    E2E_SEED=<seed> pytest -q -p no:cacheprovider tests/e2e/test_e2e_random.py
E2E_CHANGES changes the number of changes (default 1000).
"""

from __future__ import annotations

import datetime as dt
import os
import random
import time
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest

from harness import Pipeline

CHANGES = int(os.environ.get("E2E_CHANGES", "1000"))
PLANS = ["free", "pro", "team", "enterprise"]
# Customer names: some fold together, some only beyond ASCII (find_customers is case-insensitive
# in Unicode), and the prefixes find_customers is checked with at the end.
NAMES = ["Jane", "JANE", "jane doe", "Janet", "Ågot", "ÅSA", "Élodie", "Zoë", "Re: Bob"]
SEARCHES = ["j", "JAN", "jane ", "å", "ÉL", "zo", "re: ", "x"]
STATUSES = ["pending", "paid", "shipped", "refunded", "cancelled"]
# A few fixed instants, so that orders of one customer often tie on created_at.
INSTANTS = [dt.datetime(2026, 1, 1, 12, 0, 0), dt.datetime(2026, 1, 1, 12, 0, 0, 1),
            dt.datetime(2025, 6, 30, 23, 59, 59, 999999), dt.datetime(2027, 3, 4, 5, 6, 7, 80910)]


class Workload:
    """Random changes over the seed tables. Every statement is plain SQL against the
    scenario's database; the generator only reads SQL to pick rows."""

    def __init__(self, p: Pipeline, rng: random.Random):
        self.p = p
        self.rng = rng
        self.n = 0
        self.old_emails: set[str] = set()
        self.counts: dict[str, int] = {}

    # helpers ---------------------------------------------------------------------------------

    def ids(self, table: str) -> list[int]:
        return [r[0] for r in self.p.sc.query(f"SELECT id FROM {table} ORDER BY id")]

    def email(self) -> str:
        self.n += 1
        return f"u{self.n}.{self.rng.randrange(10**6)}@example.com"

    def items(self) -> str:
        rng = self.rng
        return rng.choice([
            "[]",
            '[{"sku": "MUG", "qty": %d, "price_cents": 1250}]' % rng.randint(1, 9),
            '[{"sku": "A", "qty": 1}, {"sku": "B", "qty": 2, "tags": ["x", "y"], "gift": true, "note": null}]',
            '{"weird": {"nested": [1, 2.5, "three"]}, "unicode": "caf\\u00e9 \\ud83d\\ude00"}',
        ])

    def created_at(self):
        """An explicit instant (ties likely), or NOW() (the transaction's start time)."""
        return self.rng.choice(INSTANTS) if self.rng.random() < 0.5 else None

    # operations: each returns a list of statements for one transaction ------------------------

    def insert_customer(self) -> list:
        return [("INSERT INTO customers(email, name, plan, mrr_cents) VALUES (%s, %s, %s, %s)",
                 (self.email(), f"{NAMES[self.n % len(NAMES)]} {self.n}", self.rng.choice(PLANS), self.rng.randrange(0, 50000)))]

    def insert_orders(self) -> list:
        customers = self.ids("customers")
        if not customers:
            return self.insert_customer()
        cid = self.rng.choice(customers + [None]) if self.rng.random() < 0.1 else self.rng.choice(customers)
        at = self.created_at()
        out = []
        for _ in range(self.rng.choice([1, 1, 2, 3])):
            if at is None:
                out.append(("INSERT INTO orders(customer_id, status, total_cents, items) VALUES (%s, %s, %s, %s)",
                            (cid, self.rng.choice(STATUSES), self.rng.randrange(0, 10**6), self.items())))
            else:
                out.append(("INSERT INTO orders(customer_id, status, total_cents, items, created_at) "
                            "VALUES (%s, %s, %s, %s, %s)",
                            (cid, self.rng.choice(STATUSES), self.rng.randrange(0, 10**6), self.items(), at)))
        return out

    def update_customer(self) -> list:
        customers = self.ids("customers")
        if not customers:
            return self.insert_customer()
        plan, mrr, n = self.rng.choice(PLANS), self.rng.randrange(0, 50000), self.rng.randrange(1000)
        return [("UPDATE customers SET plan = %s, mrr_cents = %s, name = %s, updated_at = NOW() WHERE id = %s",
                 (plan, mrr, f"{NAMES[n % len(NAMES)]} {n}", self.rng.choice(customers)))]

    def change_email(self) -> list:
        rows = self.p.sc.query("SELECT id, email FROM customers")
        if not rows:
            return self.insert_customer()
        cid, old = self.rng.choice(rows)
        self.old_emails.add(old)
        return [("UPDATE customers SET email = %s WHERE id = %s", (self.email(), cid))]

    def swap_emails(self) -> list:
        rows = self.p.sc.query("SELECT id, email FROM customers")
        if len(rows) < 2:
            return self.insert_customer()
        (a, ea), (b, eb) = self.rng.sample(rows, 2)
        tmp = self.email()
        self.old_emails.add(tmp)
        return [("UPDATE customers SET email = %s WHERE id = %s", (tmp, a)),
                ("UPDATE customers SET email = %s WHERE id = %s", (ea, b)),
                ("UPDATE customers SET email = %s WHERE id = %s", (eb, a))]

    def update_order(self) -> list:
        orders = self.ids("orders")
        if not orders:
            return self.insert_orders()
        return [("UPDATE orders SET status = %s, total_cents = %s, items = %s, updated_at = NOW() WHERE id = %s",
                 (self.rng.choice(STATUSES), self.rng.randrange(0, 10**6), self.items(), self.rng.choice(orders)))]

    def move_order(self) -> list:
        orders, customers = self.ids("orders"), self.ids("customers")
        if not orders or not customers:
            return self.insert_orders()
        target = None if self.rng.random() < 0.15 else self.rng.choice(customers)
        return [("UPDATE orders SET customer_id = %s WHERE id = %s", (target, self.rng.choice(orders)))]

    def retime_order(self) -> list:
        orders = self.ids("orders")
        if not orders:
            return self.insert_orders()
        at = self.created_at() or dt.datetime(2026, 5, 1) + dt.timedelta(microseconds=self.rng.randrange(10**12))
        return [("UPDATE orders SET created_at = %s WHERE id = %s", (at, self.rng.choice(orders)))]

    def delete_order(self) -> list:
        orders = self.ids("orders")
        if not orders:
            return self.insert_orders()
        return [("DELETE FROM orders WHERE id = %s", (self.rng.choice(orders),))]

    def delete_customer(self) -> list:
        rows = self.p.sc.query("SELECT id, email FROM customers")
        if len(rows) < 3:
            return self.insert_customer()
        cid, email = self.rng.choice(rows)
        self.old_emails.add(email)
        others = [r[0] for r in rows if r[0] != cid]
        first = (("UPDATE orders SET customer_id = %s WHERE customer_id = %s", (self.rng.choice(others), cid))
                 if self.rng.random() < 0.5 else ("DELETE FROM orders WHERE customer_id = %s", (cid,)))
        return [first, ("DELETE FROM customers WHERE id = %s", (cid,))]

    def rekey_order(self) -> list:
        orders = self.ids("orders")
        if not orders:
            return self.insert_orders()
        new = max(orders) + self.rng.randint(1, 5) + 100000
        return [("UPDATE orders SET id = %s WHERE id = %s", (new, self.rng.choice(orders)))]

    OPS = [("insert_customer", 10), ("insert_orders", 18), ("update_customer", 12), ("change_email", 6),
           ("swap_emails", 5), ("update_order", 12), ("move_order", 9), ("retime_order", 5),
           ("delete_order", 9), ("delete_customer", 5), ("rekey_order", 3)]

    def run(self, changes: int) -> None:
        names = [n for n, _ in self.OPS]
        weights = [w for _, w in self.OPS]
        done = 0
        while done < changes:
            # Mostly one change per transaction, sometimes several in one.
            k = 1 if self.rng.random() < 0.8 else min(self.rng.randint(2, 4), changes - done)
            statements, ops = [], self.rng.choices(names, weights, k=k)
            for op in ops:
                statements += getattr(self, op)()
            try:
                conn = self.p.sc.conn  # one connection; an explicit transaction per batch
                with conn.transaction():
                    for sql, params in statements:
                        conn.execute(sql, params)
            except psycopg.errors.IntegrityError:
                # Several changes drawn from the same snapshot may conflict (an order moved to a
                # customer deleted earlier in the transaction): rolled back, drawn again.
                self.counts["rolled_back"] = self.counts.get("rolled_back", 0) + 1
                continue
            for op in ops:
                self.counts[op] = self.counts.get(op, 0) + 1
            done += k


def check_final_state(p: Pipeline, w: Workload) -> dict:
    """Every row through agent-cli (4 in parallel) against SQL, then every Redis key."""
    p.assert_redis_matches_sql(timeout=60)
    customers = p.sc.query("SELECT id, email FROM customers ORDER BY id")
    orders = [r[0] for r in p.sc.query("SELECT id FROM orders ORDER BY id")]
    counts = p.sc.query("SELECT coalesce(max(n), 0) FROM (SELECT count(*) n FROM orders GROUP BY customer_id) c")
    assert counts[0][0] <= 100, "a customer has more orders than get_customer_orders' max limit"
    max_c = max([c for c, _ in customers] + [3])
    max_o = max([o for o in orders if o < 100000] + [4])
    gone_customers = sorted(set(range(1, max_c + 1)) - {c for c, _ in customers})
    gone_orders = sorted(set(range(1, max_o + 1)) - set(orders))
    live_emails = {e for _, e in customers}
    gone_emails = sorted(w.old_emails - live_emails)
    checks = ([lambda c=c: p.converge_customer(c) for c, _ in customers]
              + [lambda e=e: p.converge_email(e) for _, e in customers]
              + [lambda c=c: p.converge_customer_orders(c, 100) for c, _ in customers]
              + [lambda o=o: p.converge_order(o) for o in orders]
              + [lambda c=c: p.converge_customer(c) for c in gone_customers]
              + [lambda o=o: p.converge_order(o) for o in gone_orders]
              + [lambda e=e: p.converge_email(e) for e in gone_emails]
              + [lambda q=q: p.converge_find_customers(q) for q in SEARCHES])
    with ThreadPoolExecutor(4) as pool:
        for f in [pool.submit(c) for c in checks]:
            f.result()
    p.assert_redis_matches_sql()
    assert p.dead_letters() == 0, "the sink dead-lettered records"
    return {"customers": len(customers), "orders": len(orders), "gone_customers": len(gone_customers),
            "gone_orders": len(gone_orders), "gone_emails": len(gone_emails), "agent_cli_calls": len(checks)}


@pytest.mark.parametrize(("identity", "writer"),
                         [("default", "shared"), ("full", "shared"), ("default", "exclusive")])
def test_random_changes(identity, writer):
    seed = int(os.environ.get("E2E_SEED") or random.SystemRandom().randrange(2**32))
    print(f"E2E_SEED={seed} identity={identity} writer={writer} changes={CHANGES}")
    rng = random.Random(seed)
    with Pipeline(f"random_{identity}_{writer}", writer=writer) as p:
        try:
            if identity == "full":
                p.execute("ALTER TABLE customers REPLICA IDENTITY FULL")
                p.execute("ALTER TABLE orders REPLICA IDENTITY FULL")
            # Ties across a digit boundary first: orders 5..11 of customer 2, one created_at.
            p.transaction([("INSERT INTO orders(customer_id, total_cents, items) VALUES (2, %s, '[]')", (i,))
                           for i in range(7)])
            w = Workload(p, rng)
            t0 = time.monotonic()
            w.run(CHANGES)
            t_sql = time.monotonic() - t0
            summary = check_final_state(p, w)
            lagging = [m for m in p.status()["mappings"] if m["stale"] or m["lag_ms"] > 5000]
            assert not lagging, f"agent-cli status: {lagging}"
            print(f"ops {w.counts}; SQL {t_sql:.1f}s; checked {summary} in {time.monotonic() - t0 - t_sql:.1f}s")
        except AssertionError as e:
            raise AssertionError(f"[E2E_SEED={seed} identity={identity} writer={writer}] {e}") from e
