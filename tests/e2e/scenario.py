"""One isolated CDC source per end-to-end scenario: a fresh PostgreSQL database seeded from
tests/stack/connect/seed.sql and its own Debezium connector, replication slot and topics.

    from scenario import Scenario          # tests/e2e on sys.path (conftest or sys.path.insert)

    with Scenario("email_change") as sc:   # reset database, register connector
        sc.topic("customers")              # -> "e2e_email_change_3f9a1c.public.customers"
        sc.execute("UPDATE customers SET email = %s WHERE id = %s", ("x@example.com", 1))
        sc.query("SELECT count(*) FROM orders")   # -> [(4,)]
    # connector deleted, database (and its slot) dropped; E2E_KEEP=1 keeps both

The database starts with the seed rows, so the connector's snapshot produces op=r records for
them first. Names carry a random token: topics from earlier runs (the broker keeps them) are
never reused. Requires the stack (tests/stack/up.sh ... postgres connect); fails loudly
otherwise. Only psycopg beyond the standard library.
"""

from __future__ import annotations

import os
import secrets
import subprocess
from pathlib import Path
from typing import Any, Sequence

import psycopg

REPO = Path(__file__).resolve().parents[2]
STACK = REPO / "tests" / "stack"


class StackError(RuntimeError):
    """A stack script failed; the message carries its stderr."""


def stack(script: str, *args: str) -> str:
    """Run tests/stack/SCRIPT ARGS..., return stdout; raise StackError with stderr on failure."""
    r = subprocess.run(["bash", str(STACK / script), *args], capture_output=True, text=True)
    if r.returncode != 0:
        raise StackError(f"tests/stack/{script} {' '.join(args)} exited {r.returncode}:\n{r.stderr.strip()}")
    return r.stdout


def pg_conninfo(dbname: str) -> dict[str, Any]:
    return dict(host="127.0.0.1", port=int(os.environ.get("PGPORT", "5432")), user="postgres",
                password="postgres", dbname=dbname)


class Scenario:
    """A database + Debezium connector + topics of its own (see the module doc)."""

    def __init__(self, name: str, *, poll_interval_ms: int | None = None,
                 connector_props: dict[str, str] | None = None, keep: bool | None = None):
        token = secrets.token_hex(3)
        base = "".join(c if c.isalnum() else "_" for c in name.lower())[:30]
        self.name = name
        self.db = f"e2e_{base}_{token}"
        self.slot = self.db
        self.prefix = self.db
        self.connector = f"e2e-{base}-{token}".replace("_", "-")
        self.poll_interval_ms = poll_interval_ms
        self.connector_props = dict(connector_props or {})
        self.keep = os.environ.get("E2E_KEEP") == "1" if keep is None else keep
        self._conn: psycopg.Connection | None = None
        self._registered = False

    # ---------------------------------------------------------------- lifecycle

    def start(self) -> "Scenario":
        stack("postgres.sh", "reset", self.db)
        props = {"database.dbname": self.db, "slot.name": self.slot, "topic.prefix": self.prefix}
        if self.poll_interval_ms is not None:
            props["poll.interval.ms"] = str(self.poll_interval_ms)
        props.update(self.connector_props)
        stack("connect.sh", "register", self.connector, *(f"{k}={v}" for k, v in props.items()))
        self._registered = True
        return self

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self.keep:
            return
        if self._registered:
            stack("connect.sh", "unregister", self.connector)
            self._registered = False
        stack("postgres.sh", "drop", self.db)

    def __enter__(self) -> "Scenario":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---------------------------------------------------------------- topics

    def topic(self, table: str, schema: str = "public") -> str:
        """Debezium's topic for TABLE: {topic.prefix}.{schema}.{table}."""
        return f"{self.prefix}.{schema}.{table}"

    # ---------------------------------------------------------------- SQL

    @property
    def conn(self) -> psycopg.Connection:
        """An autocommit connection to the scenario's database (every statement commits)."""
        if self._conn is None:
            self._conn = psycopg.connect(**pg_conninfo(self.db), autocommit=True)
        return self._conn

    def execute(self, sql: str, params: Sequence[Any] | None = None) -> None:
        self.conn.execute(sql, params)

    def query(self, sql: str, params: Sequence[Any] | None = None) -> list[tuple]:
        return self.conn.execute(sql, params).fetchall()

    def transaction(self, statements: Sequence[str | tuple[str, Sequence[Any]]]) -> None:
        """Run the statements in one transaction (one commit, one source.txId)."""
        with psycopg.connect(**pg_conninfo(self.db)) as conn:
            with conn.transaction():
                for st in statements:
                    if isinstance(st, tuple):
                        conn.execute(st[0], st[1])
                    else:
                        conn.execute(st)
