"""Tool calls and Redis round trips per support question, before and after the context tools of
issue #16 (aggregates, filters and ranges, prefix search, includes). Started by
tests/e2e/tool_calls_bench.sh (which builds the binaries and starts the stack).

1. A Pipeline (harness.py): a fresh PostgreSQL database from the seed, its own Debezium
   connector, the real `sink run` into a Redis logical database of its own, with the default
   connectors.yaml (topics renamed).
2. Customer 1 (Jane Doe) gets ORDERS more orders over 60 days, of three statuses; customers
   named Jan..., Janet..., Ján... are added. The sink converges; then it is stopped, so that
   only agent-cli talks to Redis while the questions run.
3. Each question is asked through the real `agent-cli query` against a scripted OpenAI-style
   server (below) that plays the model: it asks for the tool calls a model needs with the tools
   of the time ("before": only get_customer, get_order and get_customer_orders with at most 100
   orders and no filters; "after": the tools of the default connectors.yaml), then answers.
   The server records every tool result agent-cli sends back.
4. Per question and variant: LLM requests, tool calls, Redis commands agent-cli sent (INFO
   commandstats before and after, the sink stopped), bytes of tool results the model had to
   read, and whether those results hold the exact answer, checked against SQL.

The figures go to stdout as a Markdown table (BENCHMARKS.md, "Tool calls per question").
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

import redis
import yaml

from harness import Pipeline, render_timestamp

ORDERS = int(os.environ.get("BENCH_ORDERS", "250"))
STATUSES = ("paid", "pending", "shipped")
NOW = dt.datetime(2026, 12, 6, 12, 0, 0)
WEEK_START = NOW - dt.timedelta(days=7)
SEARCH_NAMES = [  # "Jan…": three start with it whatever the case; János and Jansen do not
   "Jan Novák", "Janet Smith", "JÁNOS Kovács", "Jana Dvořák", "Bob Jansen"]


# ---------------------------------------------------------------- the scripted model


class ScriptedModel:
    """An OpenAI Chat Completions endpoint that replies from a queue of scripted turns and
    records what agent-cli sends (the tool results of the previous turn)."""

    def __init__(self) -> None:
        self.turns: list[dict] = []
        self.requests: list[dict] = []
        self.lock = threading.Lock()
        model = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                with model.lock:
                    model.requests.append(body)
                    reply = model.turns.pop(0) if model.turns else None
                data = json.dumps(reply or {"error": "script exhausted"}).encode()
                self.send_response(200 if reply else 500)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def script(self, tool_turns: list[list[tuple[str, dict]]], answer: str) -> None:
        self.requests = []
        self.turns = []
        n = 0
        for calls in tool_turns:
            tool_calls = []
            for name, args in calls:
                n += 1
                tool_calls.append({"id": f"call_{n}", "type": "function",
                                   "function": {"name": name, "arguments": json.dumps(args)}})
            self.turns.append({"id": f"c{n}", "object": "chat.completion", "choices": [
                {"index": 0, "finish_reason": "tool_calls",
                 "message": {"role": "assistant", "content": None, "tool_calls": tool_calls}}]})
        self.turns.append({"id": "final", "object": "chat.completion", "choices": [
            {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": answer}}]})

    def tool_results(self) -> list[dict]:
        """Every tool result agent-cli sent back, in order (from the last request)."""
        messages = self.requests[-1]["messages"] if self.requests else []
        return [json.loads(m["content"]) for m in messages if m.get("role") == "tool"]

    def tool_result_bytes(self) -> int:
        messages = self.requests[-1]["messages"] if self.requests else []
        return sum(len(m["content"].encode()) for m in messages if m.get("role") == "tool")


# ---------------------------------------------------------------- measuring


LOOKUP_COMMANDS = ("evalsha_ro", "eval_ro", "evalsha", "eval")


def redis_commands(r: redis.Redis) -> dict[str, int]:
    stats = r.info("commandstats")
    return {k.removeprefix("cmdstat_"): v["calls"] for k, v in stats.items()}


def ask(p: Pipeline, model: ScriptedModel, r: redis.Redis, question: str,
        tool_turns: list[list[tuple[str, dict]]]) -> dict:
    model.script(tool_turns, "(scripted answer)")
    before = redis_commands(r)
    env_extra = {"OPENAI_API_KEY": "bench", "OPENAI_BASE_URL": model.base_url}
    old = {k: os.environ.get(k) for k in env_extra}
    os.environ.update(env_extra)
    try:
        out = p.agent_cli("query", question, "--model", "scripted")
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    after = redis_commands(r)
    assert out.returncode == 0, f"agent-cli query failed: {out.stderr}"
    sent = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    sent = {k: v for k, v in sent.items() if v and k not in ("info",)}
    return {
        "llm_requests": len(model.requests),
        "tool_calls": sum(len(t) for t in tool_turns),
        "redis_commands": sum(v for k, v in sent.items() if k in LOOKUP_COMMANDS),
        "redis_by_command": sent,
        "result_bytes": model.tool_result_bytes(),
        "results": model.tool_results(),
    }


# ---------------------------------------------------------------- the data

# What the questions need from connectors.yaml, added to the pipeline's copy of the default
# file where it does not declare them (yet): the aggregate and include.
ORDER_STATS = {"name": "customer_order_stats", "key": "customer:{customer_id}:order_stats",
               "count": True, "sum": ["total_cents"], "group_by": "status"}
ORDER_STATS_TOOL = {"tool": "get_customer_order_stats",
                    "description": "Count and total of a customer's orders, overall and by status",
                    "aggregate": "customer_order_stats",
                    "by": [{"param": "customer_id", "type": "integer", "description": "Customer ID"}]}
RECENT_ORDERS = {"relation": "customer_orders", "as": "recent_orders", "limit": 3}


def complete_config(p: Pipeline) -> list[str]:
    """Adds the aggregate and the include the questions use when the file lacks them; returns
    what was added (printed with the figures)."""
    cfg = yaml.safe_load(p.config_path.read_text())
    added = []
    mappings = {m["name"]: m for m in cfg["mappings"]}
    orders, customers = mappings["orders"], mappings["customers"]
    if not orders.get("aggregates"):
        orders["aggregates"] = [ORDER_STATS]
        orders["lookups"].append(ORDER_STATS_TOOL)
        added.append("aggregates: customer_order_stats + get_customer_order_stats")
    get_customer = next(l for l in customers["lookups"] if l["tool"] == "get_customer")
    if not get_customer.get("include"):
        get_customer["include"] = [RECENT_ORDERS]
        added.append("get_customer include: recent_orders")
    p.config_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return added


def fill(p: Pipeline) -> None:
    p.execute(f"""INSERT INTO orders(customer_id, status, total_cents, items, created_at)
                  SELECT 1, (ARRAY['paid','pending','shipped'])[1 + i % 3], 100 + i * 7,
                         '[]'::jsonb, TIMESTAMP '{NOW:%Y-%m-%d %H:%M:%S}' - (i * INTERVAL '1 minute') * 341
                  FROM generate_series(1, {ORDERS}) i""")
    for i, name in enumerate(SEARCH_NAMES):
        p.execute("INSERT INTO customers(email, name) VALUES (%s, %s)", (f"search{i}@example.com", name))


def sql_stats(p: Pipeline) -> dict:
    rows = p.rows("SELECT status, count(*) AS n, sum(total_cents) AS s FROM orders "
                  "WHERE customer_id = 1 GROUP BY status")
    return {"count": sum(r["n"] for r in rows), "sum_total_cents": sum(int(r["s"]) for r in rows),
            "by_status": {r["status"]: {"count": r["n"], "sum_total_cents": int(r["s"])} for r in rows}}


def sql_pending_last_week(p: Pipeline) -> list[int]:
    rows = p.rows("SELECT id FROM orders WHERE customer_id = 1 AND status = 'pending' "
                  "AND created_at >= %s AND created_at <= %s ORDER BY created_at DESC, id DESC",
                  (WEEK_START, NOW))
    return [r["id"] for r in rows]


def sql_name_prefix(p: Pipeline, prefix: str) -> list[int]:
    """find_customers' order: lower-cased name, then id."""
    rows = p.rows("SELECT id, name FROM customers WHERE name IS NOT NULL")
    hits = sorted((r["name"].lower(), r["id"]) for r in rows if r["name"].lower().startswith(prefix.lower()))
    return [i for _, i in hits]


def sql_newest_orders(p: Pipeline, n: int) -> list[int]:
    rows = p.rows("SELECT id FROM orders WHERE customer_id = 1 ORDER BY created_at DESC, id DESC LIMIT %s", (n,))
    return [r["id"] for r in rows]


# ---------------------------------------------------------------- the questions


def main() -> int:
    model = ScriptedModel()
    rows_out = []
    with Pipeline("tool_calls_bench", start_sink=False, timeout=120.0) as p:
        added = complete_config(p)
        p.start_sink()
        fill(p)
        stats = sql_stats(p)
        p.converge("order stats", lambda: p.tool("get_customer_order_stats", {"customer_id": 1})["result"],
                   lambda: stats, timeout=120.0)
        p.converge_customer_orders(1, limit=100, timeout=120.0)
        jan = sql_name_prefix(p, "jan")
        p.converge_find_customers("jan", timeout=120.0)
        p.sink.stop()
        r = redis.Redis.from_url(p.db.url, decode_responses=True)
        p.tool("get_order", {"order_id": 1})  # loads the lookup script into Redis's cache
        pending = sql_pending_last_week(p)
        newest3 = sql_newest_orders(p, 3)
        week = {"created_after": render_timestamp(WEEK_START), "created_before": render_timestamp(NOW)}

        def orders_of(results: list[dict]) -> list[dict]:
            return [o for res in results if isinstance(res.get("result"), list) for o in res["result"]]

        # (short name, question, before: tool turns + check, after: tool turns + check); a
        # check says whether the tool results hold the exact answer. None: no tool can answer.
        questions = [
            ("spent + pending count",
             "How much has customer 1 spent, and how many orders are still pending?",
             ([[("get_customer_orders", {"customer_id": 1, "limit": 100})]],
              lambda res: len({o["id"] for o in orders_of(res)}) == stats["count"]),
             ([[("get_customer_order_stats", {"customer_id": 1})]],
              lambda res: res[0]["result"] == stats)),
            ("pending orders last week",
             "Which pending orders did customer 1 place last week?",
             ([[("get_customer_orders", {"customer_id": 1, "limit": 100})]],
              lambda res: [o["id"] for o in orders_of(res) if o["status"] == "pending"
                           and week["created_after"] <= o["created_at"] <= week["created_before"]] == pending),
             ([[("get_customer_orders", {"customer_id": 1, "status": "pending", "limit": 100, **week})]],
              lambda res: [o["id"] for o in res[0]["result"]] == pending)),
            ("customer + last orders",
             "Tell me about jane@example.com and her last orders",
             ([[("get_customer", {"email": "jane@example.com"})],
               [("get_customer_orders", {"customer_id": 1, "limit": 3})]],
              lambda res: res[0]["result"]["id"] == 1 and [o["id"] for o in res[1]["result"]] == newest3),
             ([[("get_customer", {"email": "jane@example.com"})]],
              lambda res: res[0]["result"]["id"] == 1
                          and [o["id"] for o in res[0]["result"]["recent_orders"]] == newest3)),
            ("name prefix search", "Find the customer called Jan...", None,
             ([[("find_customers", {"name_prefix": "Jan"})]],
              lambda res: [c["id"] for c in res[0]["result"]] == jan)),
        ]
        for short, question, before, after in questions:
            for variant, spec in (("before", before), ("after", after)):
                if spec is None:
                    rows_out.append((short, variant, None, False))
                    continue
                turns, check = spec
                m = ask(p, model, r, question, turns)
                exact = bool(check(m["results"]))
                rows_out.append((short, variant, m, exact))
                print(f"{short:26} {variant:6} llm={m['llm_requests']} tools={m['tool_calls']} "
                      f"redis={m['redis_by_command']} bytes={m['result_bytes']} exact={exact}", file=sys.stderr)
        for short, variant, m, exact in rows_out:
            if variant == "after" and m is not None:
                assert exact, f"{short}: the new tools must hold the exact answer"
                assert m["tool_calls"] == 1 and m["redis_commands"] == 1, f"{short}: {m}"
    print(f"config additions: {', '.join(added) or 'none (the default file declares everything)'}")
    print(f"orders of customer 1: {stats['count']}; pending last week: {len(pending)}")
    print()
    print("| question | tools | LLM requests | tool calls | Redis lookup round trips | tool-result bytes | exact answer in the results |")
    print("|---|---|---:|---:|---:|---:|---|")
    for short, variant, m, exact in rows_out:
        if m is None:
            print(f"| {short} | {variant} | - | - | - | - | no tool answers it |")
        else:
            print(f"| {short} | {variant} | {m['llm_requests']} | {m['tool_calls']} | {m['redis_commands']} "
                  f"| {m['result_bytes']:,} | {'yes' if exact else 'no'} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
