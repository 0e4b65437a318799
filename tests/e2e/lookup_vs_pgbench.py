"""In-process agent-cli lookups next to the same question asked of PostgreSQL on an open, prepared
connection (pgbench -M prepared -c 1), in one run, on the same data, in interleaved rounds; plus
MCP `tools/call` round trips through the official MCP Python SDK. Started by
tests/e2e/lookup_vs_pgbench.sh (which builds the binaries and starts the stack); see there for
the knobs.

1. A Pipeline (harness.py) and the data of lookup_vs_psql.py (10,000 more customers, 1,000 orders
   for customer 1, index on orders(customer_id, created_at)), through the real sink.
2. Checks that agent-cli and PostgreSQL give the same answer to each question.
3. BENCH_ROUNDS rounds; in each, per question: pgbench for BENCH_SECONDS (per-transaction log
   -> p50/p99/mean), agent-cli's `lookup_latency` bench for BENCH_SECONDS (`Lookups::call`
   timed call by call) without and then with the read cache `agent-cli mcp` keeps (README,
   "Read cache") while BENCH_CHANGES_PER_S changes a second flow through the pipeline (updates
   of another customer: each applied batch advances the source watermark every answer was read
   with, so the cache drops them all), the order of PostgreSQL and agent-cli alternating
   between rounds; then BENCH_MCP_CALLS
   `tools/call` per question through one MCP session with `agent-cli mcp`.
   Per round also the round trip alone on each side (`SELECT 1` through pgbench, Redis `PING`
   through the bench's runtime) and the Redis CPU time per script call (INFO commandstats).
4. A markdown table per round and the ratios PostgreSQL / agent-cli of p50 and mean.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path

from harness import Pipeline, binary
from lookup_vs_psql import CUSTOMER, CUSTOMER_SQL, EMAIL, ORDERS, ORDERS_SQL, load
from scenario import stack

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
SECONDS = int(os.environ.get("BENCH_SECONDS", "5"))
MCP_CALLS = int(os.environ.get("BENCH_MCP_CALLS", "1000"))
RUNTIME = os.environ.get("BENCH_RUNTIME", "mcp")  # lookup_latency --runtime
CHANGES_PER_S = float(os.environ.get("BENCH_CHANGES_PER_S", "50"))  # while the read cache is measured


def pgbench(url: str, sql: str, log_prefix: Path) -> dict:
    """pgbench -M prepared -c 1 -T SECONDS on `sql`; latencies from its per-transaction log."""
    script = log_prefix.with_suffix(".sql")
    # pgbench reads `:name` as a variable: quote the colons of the time format instead.
    script.write_text(sql.replace("HH24:MI:SS", 'HH24":"MI":"SS') + ";\n")
    r = subprocess.run(["pgbench", "-n", "-M", "prepared", "-c", "1", "-T", str(SECONDS), "-f", str(script),
                        "--log", f"--log-prefix={log_prefix}", url], capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"pgbench failed ({r.returncode}):\n{r.stdout}{r.stderr}")
    # Each line: client_id transaction_no latency_us script_no epoch_s epoch_us. Not latency_us:
    # pgbench reads its clock lazily, so a transaction of a few µs is often logged as 0 µs (most
    # `SELECT 1`s). With -c 1 the interval between consecutive completions is the whole cycle.
    latencies = []
    for log in log_prefix.parent.glob(log_prefix.name + ".*"):
        if log.suffix == ".sql":
            continue
        ends = [int(f[4]) * 1_000_000 + int(f[5]) for f in map(str.split, log.read_text().splitlines())]
        latencies += [b - a for a, b in zip(ends, ends[1:])]
    return summary(latencies)


def summary(latencies_us: list[float]) -> dict:
    xs = sorted(latencies_us)
    pct = lambda q: xs[min(int(len(xs) * q), len(xs) - 1)]  # noqa: E731 (as lookup_latency.rs)
    return {"n": len(xs), "p50_us": pct(0.5), "p99_us": pct(0.99), "mean_us": statistics.fmean(xs)}


def agent(bench: Path, config: Path, env: dict, tool: str, args: dict | None, r, cache: bool = False) -> dict:
    """The `lookup_latency` bench on one call (`PING` alone without args), plus the Redis CPU time
    per script call from INFO commandstats (server-wide: other clients' EVALSHA_RO count too).
    With `cache`, through the read cache (its hits and misses over the timed calls in the result)."""
    call = ["--ping"] if args is None else [tool, json.dumps(args, separators=(",", ":"))]
    if cache:
        call.insert(0, "--read-cache")
    before = r.info("commandstats").get("cmdstat_evalsha_ro", {})
    out = subprocess.run([str(bench), "--config", str(config), "--seconds", str(SECONDS), "--runtime", RUNTIME,
                          *call], env=env, check=True, capture_output=True, text=True).stdout
    after = r.info("commandstats").get("cmdstat_evalsha_ro", {})
    res = json.loads(out.splitlines()[-1])
    calls = after.get("calls", 0) - before.get("calls", 0)
    res["script_us"] = (after.get("usec", 0) - before.get("usec", 0)) / calls if calls else None
    return res


@contextmanager
def changes_flowing(p: Pipeline, per_s: float):
    """Updates customer 2 (not a benchmarked row) `per_s` times a second meanwhile."""
    stop = threading.Event()
    done = []

    def run() -> None:
        import psycopg
        from scenario import pg_conninfo

        with psycopg.connect(**pg_conninfo(p.sc.db), autocommit=True) as conn:
            start = time.monotonic()
            while not stop.is_set():
                conn.execute("UPDATE customers SET mrr_cents = mrr_cents + 1 WHERE id = 2")
                done.append(1)
                time.sleep(max(0.0, start + len(done) / per_s - time.monotonic()))

    thread = threading.Thread(target=run, daemon=True)
    if per_s > 0:
        thread.start()
    try:
        yield done
    finally:
        stop.set()
        if per_s > 0:
            thread.join()


async def mcp_round(agent_cli: Path, config: Path, env: dict, questions: list) -> list[dict]:
    """MCP_CALLS `tools/call` per question through one session (after 50 warm-up calls each)."""
    from mcp import ClientSession, StdioServerParameters
    from mcp.client.stdio import stdio_client

    params = StdioServerParameters(command=str(agent_cli), args=["--config", str(config), "mcp"], env=env)
    out = []
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        for _label, tool, args, _sql in questions:
            for _ in range(50):
                await session.call_tool(tool, args)
            samples = []
            for _ in range(MCP_CALLS):
                t = time.perf_counter()
                r = await session.call_tool(tool, args)
                samples.append((time.perf_counter() - t) * 1e6)
                assert not getattr(r, "is_error", getattr(r, "isError", False)), r
            out.append(summary(samples))
    return out


def main() -> int:
    agent_cli = binary("agent-cli")
    bench = Path(os.environ["LOOKUP_BENCH_BIN"])
    out_dir = Path(tempfile.mkdtemp(prefix="lookup-vs-pgbench-"))
    questions = [
        ("customer by email", "get_customer", {"email": EMAIL}, CUSTOMER_SQL),
        (f"10 newest of {ORDERS:,} orders", "get_customer_orders", {"customer_id": CUSTOMER, "limit": 10},
         ORDERS_SQL),
    ]
    with Pipeline("lookup_vs_pgbench", timeout=120.0) as p:
        load(p)
        url = stack("postgres.sh", "url", p.sc.db).strip()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AGENT_CLI_", "PG"))}
        env.update(REDIS_URL=p.db.url, RUST_LOG="warn")
        for label, tool, args, sql in questions:
            a_out = subprocess.run([str(agent_cli), "--config", str(p.config_path), "tool", tool,
                                    json.dumps(args)], env=env, capture_output=True, text=True, check=True).stdout
            [(q_res,)] = p.sc.query(sql)
            if json.loads(a_out)["result"] != q_res:
                raise SystemExit(f"{label}: different answers\nagent-cli: {a_out}\nPostgreSQL: {q_res}")
            print(f"{label}: same answer from agent-cli and PostgreSQL", file=sys.stderr)

        # The round trip alone on each side: `SELECT 1` prepared, Redis `PING`.
        floor = ("round trip only (SELECT 1 / PING)", "PING", None, "SELECT 1")
        results = []  # [round, load, label, pg, agent, agent with the read cache, mcp]
        for rnd in range(1, ROUNDS + 1):
            load_avg = " ".join(Path("/proc/loadavg").read_text().split()[:3])
            for label, tool, args, sql in [*questions, floor]:
                prefix = out_dir / f"pg-{rnd}-{tool}"
                def cached():
                    if not args:
                        return None
                    with changes_flowing(p, CHANGES_PER_S) as changes:
                        t = time.monotonic()
                        res = agent(bench, p.config_path, env, tool, args, p.db.r, cache=True)
                        res["changes_per_s"] = len(changes) / (time.monotonic() - t)
                    return res

                if rnd % 2:
                    pg = pgbench(url, sql, prefix)
                    ag, ac = agent(bench, p.config_path, env, tool, args, p.db.r), cached()
                else:
                    ag, ac = agent(bench, p.config_path, env, tool, args, p.db.r), cached()
                    pg = pgbench(url, sql, prefix)
                results.append([rnd, load_avg, label, pg, ag, ac, None])
            mcp = asyncio.run(mcp_round(agent_cli, p.config_path, env, questions))
            for row, m in zip(results[-len(questions) - 1:], mcp):
                row[6] = m
            print(f"round {rnd} done (load {load_avg})", file=sys.stderr)
        assert p.dead_letters() == 0

    ms = lambda us: f"{us / 1000:.3f}"  # noqa: E731
    print(f"\n{ROUNDS} interleaved rounds of {SECONDS} s per side and question; agent-cli in process "
          f"(`Lookups::call`, --runtime {RUNTIME}); with read cache: while {CHANGES_PER_S:g} changes/s flow; "
          f"MCP: {MCP_CALLS} tools/call per question and round "
          "through the MCP Python SDK; times in ms; Redis script: CPU µs per EVALSHA_RO (INFO commandstats)")
    print("\n| round (load) | question | PostgreSQL pooled p50 / p99 / mean | agent-cli in process p50 / p99 / mean "
          "| PostgreSQL / agent-cli (p50, mean) | Redis script µs | agent-cli with read cache p50 / p99 / mean "
          "| PostgreSQL / cached (p50, mean) | cache hits | MCP tools/call p50 / p99 / mean |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    trio = lambda x: f"{ms(x['p50_us'])} / {ms(x['p99_us'])} / {ms(x['mean_us'])}"  # noqa: E731
    ratio = lambda pg, x: f"{pg['p50_us'] / x['p50_us']:.2f}×, {pg['mean_us'] / x['mean_us']:.2f}×"  # noqa: E731
    for rnd, load_avg, label, pg, ag, ac, m in results:
        script = f"{ag['script_us']:.1f}" if ag.get("script_us") and ag["tool"] != "PING" else ""
        hits = ""
        if ac:
            calls = ac["cache_hits"] + ac["cache_misses"]
            hits = (f"{ac['cache_hits']:,} of {calls:,} ({100 * ac['cache_hits'] / calls:.2f} %), "
                    f"{ac['cache_stale_hits']:,} before a newer freshness was read, "
                    f"{ac['cache_stored']:,} stored; {ac['changes_per_s']:.0f} changes/s")
        print(f"| {rnd} ({load_avg}) | {label} | {trio(pg)} | {trio(ag)} | {ratio(pg, ag)} | {script} "
              f"| {trio(ac) if ac else ''} | {ratio(pg, ac) if ac else ''} | {hits} | {trio(m) if m else ''} |")
    print(f"\n(samples: pgbench {sum(r[3]['n'] for r in results)} transactions, agent-cli "
          f"{sum(r[4]['n'] + (r[5]['n'] if r[5] else 0) for r in results)} calls; pgbench logs in {out_dir})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
