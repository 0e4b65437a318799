"""`agent-cli mcp` driven by the official MCP Python SDK over stdio.

Fills a real Redis (REDIS_URL, default redis://127.0.0.1:6379; the test FAILS when it is
unreachable: start it with `tests/stack/redis.sh start`) in the documented layout under a
random key prefix, spawns the binary (AGENT_CLI_BIN, default
$CARGO_TARGET_DIR/debug/agent-cli), lists the tools and calls each one.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import socket
import subprocess
import time
from pathlib import Path
from urllib.parse import urlparse

import pytest
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379")


def agent_cli_bin() -> str:
    explicit = os.environ.get("AGENT_CLI_BIN")
    if explicit:
        return explicit
    target = os.environ.get("CARGO_TARGET_DIR", str(Path.home() / ".cache/agent-context/target"))
    path = Path(target) / "debug" / "agent-cli"
    if not path.exists():
        pytest.fail(f"{path} does not exist: run `cargo build -p agent-cli` or set AGENT_CLI_BIN")
    return str(path)


class Redis:
    """Just enough RESP2 to fill the test data (no client library needed)."""

    def __init__(self, url: str):
        u = urlparse(url)
        try:
            self.sock = socket.create_connection((u.hostname or "127.0.0.1", u.port or 6379), timeout=5)
        except OSError as e:
            pytest.fail(f"Redis is not reachable at {url} ({e}); start it with `tests/stack/redis.sh start`")
        self.f = self.sock.makefile("rb")
        if u.password:
            self.cmd("AUTH", *([u.username] if u.username else []), u.password)
        db = (u.path or "/").lstrip("/")
        if db:
            self.cmd("SELECT", db)

    def cmd(self, *args):
        out = [b"*%d\r\n" % len(args)]
        for a in args:
            b = a if isinstance(a, bytes) else str(a).encode()
            out.append(b"$%d\r\n%s\r\n" % (len(b), b))
        self.sock.sendall(b"".join(out))
        return self._read()

    def _read(self):
        line = self.f.readline().rstrip(b"\r\n")
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise RuntimeError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            if n < 0:
                return None
            data = self.f.read(n + 2)[:-2]
            return data.decode()
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self._read() for _ in range(n)]
        raise RuntimeError(f"unexpected reply {line!r}")


CONFIG = """\
redis:
  url: {redis}
freshness:
  stale_after_ms: 30000
mappings:
  - name: customers_{p}
    topic: cdc.{p}.customers
    key: "{p}:customer:{{id}}"
    fields: all
    indexes:
      - name: email
        key: "{p}:customer:email:{{email}}"
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
  - name: orders_{p}
    topic: cdc.{p}.orders
    key: "{p}:order:{{id}}"
    fields: all
    relations:
      - name: customer_orders
        key: "{p}:customer:{{customer_id}}:orders"
        order_by: created_at
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
"""


@pytest.fixture()
def world(tmp_path):
    p = "t" + secrets.token_hex(8)
    r = Redis(REDIS_URL)
    config = tmp_path / "connectors.yaml"
    config.write_text(CONFIG.format(redis=REDIS_URL, p=p))
    customers, orders = f"customers_{p}", f"orders_{p}"
    r.cmd("HSET", f"sink:types:{customers}", "id", "int", "email", "string", "name", "string",
          "plan", "string", "mrr_cents", "int", "updated_at", "timestamp")
    r.cmd("HSET", f"sink:types:{orders}", "id", "int", "customer_id", "int", "status", "string",
          "total_cents", "int", "items", "json", "created_at", "timestamp")
    r.cmd("HSET", f"{p}:customer:42", "id", "42", "email", "jane.doe+x@example.com", "name", "Jane Doe",
          "plan", "pro", "mrr_cents", "4900")
    r.cmd("SET", f"{p}:customer:email:jane.doe+x@example.com", "42")
    t0 = 1_790_000_000_000_000
    # Orders 9, 10 and 11 share the newest timestamp: ties go to the higher id.
    for oid, ts in [(1, t0), (2, t0 + 1), (9, t0 + 5), (10, t0 + 5), (11, t0 + 5)]:
        created = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts // 1_000_000)) + ".%06dZ" % (ts % 1_000_000)
        r.cmd("HSET", f"{p}:order:{oid}", "id", str(oid), "customer_id", "42", "status", "paid",
              "total_cents", str(oid * 100), "items", json.dumps([{"sku": f"SKU-{oid}", "qty": 1}]),
              "created_at", created)
        r.cmd("ZADD", f"{p}:customer:42:orders", str(ts), str(oid))
    now = int(time.time() * 1000)
    for m in (customers, orders):
        r.cmd("HSET", f"sink:freshness:{m}", "source_ts_ms", str(now - 1000), "applied_count", "5",
              "applied_at_ms", str(now))
    yield {"prefix": p, "config": str(config), "redis": r, "customers": customers}
    keys = r.cmd("KEYS", f"{p}:*") + [f"sink:{k}:{m}" for k in ("types", "freshness") for m in (customers, orders)]
    r.cmd("DEL", *keys)


def run_mcp(world, body):
    """Runs `body(session)` against a fresh `agent-cli mcp`."""

    async def main():
        params = StdioServerParameters(
            command=agent_cli_bin(),
            args=["--config", world["config"], "mcp"],
            env={"REDIS_URL": REDIS_URL, "RUST_LOG": "warn"},
        )
        async with stdio_client(params) as (read, write):
            async with ClientSession(read, write) as session:
                init = await session.initialize()
                assert get(init, "server_info").name == "agent-cli"
                assert init.capabilities.tools is not None
                return await body(session)

    return asyncio.run(asyncio.wait_for(main(), timeout=60))


def cli_tool(world, name, args):
    out = subprocess.run(
        [agent_cli_bin(), "--config", world["config"], "tool", name, json.dumps(args)],
        env={**os.environ, "REDIS_URL": REDIS_URL},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def get(obj, name):
    """Attribute `name` (snake_case, SDK 2.x) or its camelCase form (SDK 1.x)."""
    if hasattr(obj, name):
        return getattr(obj, name)
    camel = re.sub(r"_([a-z])", lambda m: m.group(1).upper(), name)
    return getattr(obj, camel)


def payload(result):
    """The JSON of a successful call: text content and structuredContent must agree."""
    assert get(result, "is_error") is False, result.content
    assert len(result.content) == 1 and result.content[0].type == "text"
    text = json.loads(result.content[0].text)
    assert get(result, "structured_content") == text
    assert list(text) == ["result", "freshness"]
    assert set(text["freshness"]) == {"as_of", "lag_ms", "stale"}
    return text


def test_lists_the_declared_tools(world):
    async def body(session):
        return (await session.list_tools()).tools

    tools = run_mcp(world, body)
    assert [t.name for t in tools] == ["get_customer", "get_order", "get_customer_orders"]
    by_name = {t.name: t for t in tools}
    gc = by_name["get_customer"]
    assert gc.description.startswith("Look up a customer by ID or email address")
    assert get(gc, "input_schema")["properties"]["customer_id"]["type"] == "integer"
    assert get(gc, "input_schema")["properties"]["email"]["type"] == "string"
    assert "required" not in get(gc, "input_schema")
    assert get(by_name["get_order"], "input_schema")["required"] == ["order_id"]
    limit = get(by_name["get_customer_orders"], "input_schema")["properties"]["limit"]
    assert (limit["default"], limit["minimum"], limit["maximum"]) == (10, 1, 100)
    for t in tools:
        assert get(t.annotations, "read_only_hint") is True
        assert get(t.annotations, "destructive_hint") is False

    # `agent-cli tools --format mcp` prints the same definitions.
    printed = json.loads(subprocess.run(
        [agent_cli_bin(), "--config", world["config"], "tools", "--format", "mcp"],
        capture_output=True, text=True, timeout=30, check=True,
    ).stdout)
    listed = [t.model_dump(by_alias=True, exclude_none=True) for t in tools]
    assert [(t["name"], t["description"], t["inputSchema"], t["annotations"]) for t in printed] == [
        (t["name"], t["description"], t["inputSchema"], t["annotations"]) for t in listed
    ]


def test_calls_every_tool(world):
    async def body(session):
        return [
            await session.call_tool("get_customer", {"email": "jane.doe+x@example.com"}),
            await session.call_tool("get_customer", {"customer_id": 42}),
            await session.call_tool("get_order", {"order_id": 10}),
            await session.call_tool("get_customer_orders", {"customer_id": 42}),
            await session.call_tool("get_customer_orders", {"customer_id": 42, "limit": 2}),
            await session.call_tool("get_customer", {"customer_id": 7}),
        ]

    by_email, by_id, order, orders, two, missing = [payload(r) for r in run_mcp(world, body)]
    jane = {"id": 42, "email": "jane.doe+x@example.com", "name": "Jane Doe", "plan": "pro",
            "mrr_cents": 4900, "updated_at": None}
    assert by_email["result"] == jane
    assert by_id["result"] == jane
    assert by_email["freshness"]["stale"] is False
    assert 1000 <= by_email["freshness"]["lag_ms"] < 60_000
    assert order["result"] == {"id": 10, "customer_id": 42, "status": "paid", "total_cents": 1000,
                               "items": [{"sku": "SKU-10", "qty": 1}], "created_at": "2026-09-21T14:13:20.000005Z"}
    assert [o["id"] for o in orders["result"]] == [11, 10, 9, 2, 1]
    assert [o["id"] for o in two["result"]] == [11, 10]
    assert missing["result"] is None

    # Same answer as `agent-cli tool` (lag aside).
    cli = cli_tool(world, "get_customer", {"email": "jane.doe+x@example.com"})
    assert cli["result"] == by_email["result"]
    assert cli["freshness"]["as_of"] == by_email["freshness"]["as_of"]


def test_rejected_calls_are_tool_errors(world):
    async def body(session):
        results = [
            await session.call_tool("get_customer", {"email": "x:*"}),
            await session.call_tool("get_customer", {}),
            await session.call_tool("get_customer", {"customer_id": 1, "email": "a@b.c"}),
            await session.call_tool("get_customer_orders", {"customer_id": 42, "limit": 1000}),
            await session.call_tool("get_order", {"order_id": "10"}),
        ]
        try:
            await session.call_tool("drop_everything", {})
            unknown = None
        except Exception as e:  # a JSON-RPC error (-32602) surfaces as an exception
            unknown = e
        return results, unknown

    results, unknown = run_mcp(world, body)
    messages = []
    for r in results:
        assert get(r, "is_error") is True
        messages.append(r.content[0].text)
    assert messages == [
        "`get_customer`: parameter `email` must not contain `:` (the key separator, which could address another key)",
        "`get_customer` needs exactly one of `customer_id`, `email`, got none",
        "`get_customer` needs exactly one of `customer_id`, `email`, got `customer_id` and `email`",
        "`get_customer_orders`: parameter `limit` must be between 1 and 100, got 1000",
        '`get_order`: parameter `order_id` must be an integer, got a string "10"',
    ]
    assert unknown is not None and "unknown tool `drop_everything`" in str(unknown)


def test_unreachable_redis_fails_at_start(world):
    out = subprocess.run(
        [agent_cli_bin(), "--config", world["config"], "mcp"],
        env={**os.environ, "REDIS_URL": "redis://127.0.0.1:1"},
        input="",
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 1
    assert out.stdout == ""
    assert "cannot connect to redis at redis://127.0.0.1:1" in out.stderr


def test_after_lsn_is_an_optional_argument_of_every_tool(world):
    async def body(session):
        tools = (await session.list_tools()).tools
        return tools, [
            await session.call_tool("get_customer", {"customer_id": 42, "after_lsn": "0/0", "wait_ms": 0}),
            await session.call_tool("get_customer", {"customer_id": 42, "after_lsn": "nope"}),
        ]

    tools, (waited, bad) = run_mcp(world, body)
    for t in tools:
        schema = get(t, "input_schema")
        assert schema["properties"]["after_lsn"]["type"] == "string", t.name
        assert schema["properties"]["wait_ms"]["type"] == "integer", t.name
    out = json.loads(waited.content[0].text)
    assert out["result"]["id"] == 42
    # This world's connectors.yaml declares no source: an LSN cannot be waited for.
    assert out["freshness"]["stale"] is True
    assert "no source with a heartbeat" in out["freshness"]["reason"]
    assert get(bad, "is_error") is True
    assert "`nope` is not a PostgreSQL LSN" in bad.content[0].text
