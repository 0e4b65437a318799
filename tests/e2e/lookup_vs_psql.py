"""Whole-process `agent-cli tool ...` next to `psql -c` answering the same question from
PostgreSQL, in one run, on the same data. Started by tests/e2e/lookup_vs_psql.sh (which builds
the release binary and starts the stack); see there for the knobs.

1. A Pipeline (harness.py): a fresh PostgreSQL database from the seed, its own Debezium
   connector, the real `sink run` into a Redis logical database of its own.
2. 10,000 more customers; customer 1 (jane@example.com) gets 997 more orders (1,000 in all, distinct created_at), in
   one transaction; index orders(customer_id, created_at) added and ANALYZEd, so PostgreSQL
   answers the "10 newest" question from an index, as Redis does from its sorted set.
3. Waits until the sink has every row, then checks that agent-cli's `result` and psql's output
   are the same answer (psql builds the same JSON: RFC 3339 timestamps, items as JSON).
4. hyperfine, both commands in one invocation per question (-N: no shell in between), and a
   summary with the ratios (psql / agent-cli) of mean and median.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness import Pipeline, binary
from scenario import stack

EMAIL = "jane@example.com"
CUSTOMER = 1
ORDERS = 1000
EXTRA_CUSTOMERS = 10_000
RUNS = int(os.environ.get("BENCH_RUNS", "200"))
WARMUP = int(os.environ.get("BENCH_WARMUP", "10"))

TS = "to_char({c}, 'YYYY-MM-DD') || 'T' || to_char({c}, 'HH24:MI:SS.US') || 'Z'"
ORDER_JSON = ("json_build_object('id', o.id, 'customer_id', o.customer_id, 'status', o.status, "
              f"'total_cents', o.total_cents, 'items', o.items, 'created_at', {TS.format(c='o.created_at')}, "
              f"'updated_at', {TS.format(c='o.updated_at')})")
# get_customer answers with the customer's 3 newest orders (`include:` in connectors.yaml): the
# same question asked of PostgreSQL, in one query.
RECENT_ORDERS = 3
CUSTOMER_SQL = ("SELECT json_build_object('id', c.id, 'email', c.email, 'name', c.name, 'plan', c.plan, "
                f"'mrr_cents', c.mrr_cents, 'created_at', {TS.format(c='c.created_at')}, "
                f"'updated_at', {TS.format(c='c.updated_at')}, 'recent_orders', "
                f"(SELECT coalesce(json_agg({ORDER_JSON} ORDER BY o.created_at DESC, o.id DESC), '[]') "
                f"FROM (SELECT * FROM orders WHERE customer_id = c.id ORDER BY created_at DESC, id DESC "
                f"LIMIT {RECENT_ORDERS}) o)) FROM customers c WHERE c.email = '{EMAIL}'")
ORDERS_SQL = (f"SELECT coalesce(json_agg({ORDER_JSON} ORDER BY o.created_at DESC, o.id DESC), '[]') "
              f"FROM (SELECT * FROM orders WHERE customer_id = {CUSTOMER} ORDER BY created_at DESC, id DESC "
              "LIMIT 10) o")

def load(p: Pipeline) -> None:
    """Step 2 and the wait of step 3: the benchmark data, in PostgreSQL and (through the sink)
    in Redis. Shared with lookup_vs_pgbench.py."""
    p.execute(f"""INSERT INTO orders(customer_id, status, total_cents, items, created_at, updated_at)
                  SELECT {CUSTOMER}, 'paid', i * 100,
                         jsonb_build_array(jsonb_build_object('sku', 'SKU-' || i, 'qty', 2, 'price_cents', i * 50)),
                         timestamp '2026-01-01' + i * interval '1 minute',
                         timestamp '2026-01-01' + i * interval '1 minute'
                  FROM generate_series(1, {ORDERS} - (SELECT count(*) FROM orders WHERE customer_id = {CUSTOMER})) i""")
    # A realistic customers table, so that PostgreSQL looks the email up in its unique index
    # (with the seed's 3 rows it rightly scans); Redis gets the same rows through the sink.
    p.execute(f"""INSERT INTO customers(email, name, plan, mrr_cents)
                  SELECT 'customer' || i || '@example.com', 'Customer ' || i, 'free', 0
                  FROM generate_series(1, {EXTRA_CUSTOMERS}) i""")
    p.execute("CREATE INDEX orders_customer_created ON orders(customer_id, created_at)")
    p.execute("ANALYZE customers; ANALYZE orders")
    [(n,)] = p.sc.query("SELECT count(*) FROM orders WHERE customer_id = %s", (CUSTOMER,))
    assert n == ORDERS, n
    [(total,)] = p.sc.query("SELECT count(*) FROM orders")
    [(customers,)] = p.sc.query("SELECT count(*) FROM customers")
    t0 = time.monotonic()
    while p.db.r.hlen("sink:rows:orders") < total or p.db.r.hlen("sink:rows:customers") < customers:
        if time.monotonic() - t0 > 120 or not p.sink.alive() or p.dead_letters():
            raise SystemExit(f"the sink did not store {customers} customers and {total} orders "
                             f"({p.dead_letters()} dead-lettered):\n{p.sink.log_tail(5)}")
        time.sleep(0.2)
    print(f"sink: {customers} customers, {total} orders in Redis after {time.monotonic() - t0:.1f} s", file=sys.stderr)


def main() -> int:
    if shutil.which("hyperfine") is None:
        raise SystemExit("hyperfine not installed: apt-get install hyperfine")
    agent = binary("agent-cli")
    out_dir = Path(tempfile.mkdtemp(prefix="lookup-vs-psql-"))
    with Pipeline("lookup_vs_psql", timeout=120.0) as p:
        load(p)

        url = stack("postgres.sh", "url", p.sc.db).strip()
        # The psql binary itself: Debian's /usr/bin/psql is postgresql-common's Perl wrapper,
        # which alone adds ~25 ms per run here.
        psql = str(Path(os.environ.get("PG_BIN", "/usr/lib/postgresql/15/bin")) / "psql")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AGENT_CLI_", "PG"))}
        env.update(REDIS_URL=p.db.url, RUST_LOG="warn")
        questions = [
            ("get_customer by email", "get_customer", {"email": EMAIL}, CUSTOMER_SQL),
            (f"10 newest of {ORDERS:,} orders", "get_customer_orders", {"customer_id": CUSTOMER, "limit": 10},
             ORDERS_SQL),
        ]
        rows = []
        for label, tool, args, sql in questions:
            a_cmd = [str(agent), "--config", str(p.config_path), "tool", tool, json.dumps(args, separators=(",", ":"))]
            q_cmd = [psql, url, "-X", "-At", "-c", sql]
            a_out = subprocess.run(a_cmd, env=env, capture_output=True, text=True, check=True).stdout
            q_out = subprocess.run(q_cmd, env=env, capture_output=True, text=True, check=True).stdout
            a_res, q_res = json.loads(a_out)["result"], json.loads(q_out)
            if a_res != q_res:
                raise SystemExit(f"{label}: different answers\nagent-cli: {a_res}\npsql:      {q_res}")
            if isinstance(a_res, list):
                assert len(a_res) == 10 and a_res[0]["created_at"] > a_res[-1]["created_at"], a_res
            print(f"{label}: same answer ({len(q_out)} bytes from psql, {len(a_out)} from agent-cli)",
                  file=sys.stderr)
            export = out_dir / f"{tool}.json"
            subprocess.run(["hyperfine", "-N", "--warmup", str(WARMUP), "--runs", str(RUNS), "--style", "basic",
                            "--export-json", str(export),
                            "-n", f"agent-cli tool {tool}", sh_join(a_cmd),
                            "-n", "psql -c", sh_join(q_cmd)], env=env, check=True)
            res = {r["command"]: r for r in json.loads(export.read_text())["results"]}
            a, q = res[f"agent-cli tool {tool}"], res["psql -c"]
            rows.append((label, a, q))
        # The fixed part of psql's time: process start, connection (scram-sha-256 over TCP, a
        # forked backend), a trivial query.
        base_cmd = [psql, url, "-X", "-At", "-c", "SELECT 1"]
        export = out_dir / "select1.json"
        subprocess.run(["hyperfine", "-N", "--warmup", str(WARMUP), "--runs", str(RUNS), "--style", "basic",
                        "--export-json", str(export), "-n", "psql -c 'SELECT 1'", sh_join(base_cmd)],
                       env=env, check=True)
        baseline = json.loads(export.read_text())["results"][0]
        # Fairness: PostgreSQL answers from indexes, not a scan.
        for sql in (CUSTOMER_SQL, ORDERS_SQL):
            plan = subprocess.run([psql, url, "-X", "-At", "-c", "EXPLAIN (ANALYZE, COSTS OFF) " + sql],
                                  env=env, capture_output=True, text=True, check=True).stdout
            if "Index" not in plan or "Seq Scan" in plan:
                raise SystemExit(f"PostgreSQL does not use an index for {sql}:\n{plan}")
            print(plan, file=sys.stderr)
        assert p.dead_letters() == 0

    print("\n| question | agent-cli mean ± σ | agent-cli median | psql -c mean ± σ | psql -c median | psql / agent-cli (mean, median) |")
    print("|---|---|---|---|---|---|")
    for label, a, q in rows:
        print(f"| {label} | {ms(a['mean'])} ± {ms(a['stddev'])} | {ms(a['median'])} | {ms(q['mean'])} ± {ms(q['stddev'])} "
              f"| {ms(q['median'])} | {q['mean'] / a['mean']:.2f}×, {q['median'] / a['median']:.2f}× |")
    print(f"| (psql -c 'SELECT 1': process + connection only) | | | {ms(baseline['mean'])} ± {ms(baseline['stddev'])} "
          f"| {ms(baseline['median'])} | |")
    print(f"\n(psql: {psql}; {RUNS} runs each after {WARMUP} warm-up runs; hyperfine exports in {out_dir})")
    return 0


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms"


def sh_join(cmd: list[str]) -> str:
    """A command line for hyperfine -N (it splits shell-words itself)."""
    import shlex
    return shlex.join(cmd)


if __name__ == "__main__":
    sys.exit(main())
