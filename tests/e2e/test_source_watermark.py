"""Honest freshness (issue #12) against real PostgreSQL, Debezium, Kafka, the sink and Redis.

The source watermark comes from Debezium heartbeats (tests/stack/connect/connector.properties:
heartbeat.interval.ms=1000 and a heartbeat.action.query writing public.dbz_heartbeat, which is
in the publication). These tests check what an agent sees:

- an idle database stays fresh for longer than the bound, because heartbeats keep coming;
- `--after-lsn` (pg_current_wal_lsn() after a commit) answers with that commit's value;
- a stopped connector makes every answer stale within bound + heartbeat interval, with a
  reason, and `status` says so per source and per mapping; once the connector is back the
  answers carry the new value and are fresh again.

The bound is lowered to STALE_AFTER_MS in the scenario's connectors.yaml (agent-cli reads it on
every call) so that the tests take seconds, not minutes.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
import urllib.request

import redis as redis_lib
import yaml

from harness import Pipeline, RedisDb, binary, redis_base_url
from scenario import stack

STALE_AFTER_MS = 4000
HEARTBEAT_INTERVAL_MS = 1000
# Polling and process start-up of agent-cli, on a loaded CI machine.
SLACK_MS = 2500
REASON = re.compile(r'^no change or heartbeat from source "cdc" for \d+ s$')


def start(p: Pipeline) -> None:
    """Lowers the source's bound in the scenario's connectors.yaml, then starts the sink (which
    must not read the file while it is rewritten)."""
    cfg = yaml.safe_load(p.config_path.read_text())
    cfg["sources"][0]["stale_after_ms"] = STALE_AFTER_MS
    p.config_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    p.start_sink()


def freshness(p: Pipeline, tool: str, args: dict, *extra: str) -> dict:
    r = p.agent_cli("tool", tool, json.dumps(args), *extra)
    assert r.returncode == 0, f"agent-cli tool {tool} exited {r.returncode}: {r.stderr}"
    return json.loads(r.stdout)


def wait_fresh(p: Pipeline, timeout: float = 30.0) -> dict:
    """Until the first watermark is recorded (connector snapshot + first heartbeats)."""
    deadline = time.monotonic() + timeout
    while True:
        out = freshness(p, "get_customer", {"customer_id": 1})
        if not out["freshness"]["stale"]:
            return out
        assert time.monotonic() < deadline, f"never fresh: {out}\n{p.sink.log_tail()}"
        time.sleep(0.2)


def connect_rest(method: str, path: str) -> None:
    url = stack("connect.sh", "url").strip() or "http://127.0.0.1:8083"
    req = urllib.request.Request(url + path, method=method)
    with urllib.request.urlopen(req, timeout=30) as resp:
        assert resp.status < 300, (method, path, resp.status)


def current_lsn(p: Pipeline) -> str:
    return p.sc.query("SELECT pg_current_wal_lsn()::text")[0][0]


def test_idle_database_stays_fresh_and_after_lsn_reads_the_commit():
    with Pipeline("watermark_idle", watermark=True, start_sink=False) as p:
        start(p)
        wait_fresh(p)
        # Idle for longer than the bound: heartbeats keep the watermark moving.
        time.sleep((STALE_AFTER_MS + 2000) / 1000)
        out = freshness(p, "get_customer", {"customer_id": 1})
        assert not out["freshness"]["stale"], out
        assert out["freshness"]["lag_ms"] < STALE_AFTER_MS, out
        assert "reason" not in out["freshness"], out
        status = p.status()
        [source] = status["sources"]
        assert source["source"] == "cdc" and not source["stale"], status
        assert re.fullmatch(r"[0-9A-F]+/[0-9A-F]+", source["watermark_lsn"]), status
        assert source["heartbeat_age_ms"] is not None, status
        assert all(m["source"] == "cdc" and not m["stale"] for m in status["mappings"]), status

        # Read-your-writes: the commit's LSN, then one call that must see it.
        p.execute("UPDATE customers SET plan = 'read-your-writes' WHERE id = 2")
        lsn = current_lsn(p)
        out = freshness(p, "get_customer", {"customer_id": 2}, "--after-lsn", lsn, "--wait-ms", "15000")
        assert out["result"]["plan"] == "read-your-writes", out
        assert not out["freshness"]["stale"], out

        # A position the database has not reached yet: answered after the wait, stale, exit 0.
        hi, lo = lsn.split("/")
        future = f"{int(hi, 16) + 1:X}/{lo}"
        started = time.monotonic()
        out = freshness(p, "get_customer", {"customer_id": 2}, "--after-lsn", future, "--wait-ms", "300")
        assert time.monotonic() - started < 5, "the wait is bounded"
        assert out["freshness"]["stale"], out
        assert f"had not reached {future}" in out["freshness"]["reason"], out


def test_stopped_connector_turns_every_answer_stale_then_fresh_again():
    with Pipeline("watermark_stop", watermark=True, start_sink=False) as p:
        start(p)
        before = wait_fresh(p)["result"]["plan"]
        connect_rest("PUT", f"/connectors/{p.sc.connector}/stop")
        stopped_at = time.monotonic()
        p.execute("UPDATE customers SET plan = 'changed-while-stopped' WHERE id = 1")
        calls = [("get_customer", {"customer_id": 1}), ("get_order", {"order_id": 1}),
                 ("get_customer_orders", {"customer_id": 1})]
        budget = (STALE_AFTER_MS + HEARTBEAT_INTERVAL_MS + SLACK_MS) / 1000
        while True:
            outs = [freshness(p, t, a) for t, a in calls]
            if all(o["freshness"]["stale"] for o in outs):
                break
            assert time.monotonic() - stopped_at < budget, f"not stale within {budget} s: {outs}"
            time.sleep(0.2)
        for o in outs:
            assert REASON.match(o["freshness"]["reason"]), o
        assert outs[0]["result"]["plan"] == before, "the change never reached Redis"
        status = p.status()
        assert status["sources"][0]["stale"] and REASON.match(status["sources"][0]["reason"]), status
        assert all(m["stale"] for m in status["mappings"]), status
        table = p.agent_cli("status").stdout
        assert "STALE: no change or heartbeat from source" in table, table

        connect_rest("PUT", f"/connectors/{p.sc.connector}/resume")
        deadline = time.monotonic() + 60
        while True:
            out = freshness(p, "get_customer", {"customer_id": 1})
            if out["result"]["plan"] == "changed-while-stopped" and not out["freshness"]["stale"]:
                break
            assert time.monotonic() < deadline, f"not fresh with the new value after resume: {out}"
            time.sleep(0.2)


def test_a_rebuilt_state_carries_a_watermark():
    """`sink rebuild` swaps in a state with a watermark of its own: built by the rebuild from the
    heartbeats it replays, or the live one carried over by the handover (valid because the
    rebuilt state holds every offset the live state had applied)."""
    with Pipeline("watermark_rebuild", watermark=True, start_sink=False) as p:
        start(p)
        wait_fresh(p)
        p.execute("UPDATE customers SET plan = 'before-rebuild' WHERE id = 3")
        p.converge_customer(3, timeout=20)
        live = redis_lib.Redis.from_url(p.db.url, decode_responses=True)
        before = int(live.hget("sink:watermark:cdc", "lsn"))
        staging = RedisDb(redis_base_url())  # claimed like the pipeline's own database
        try:
            r = subprocess.run([str(binary("sink")), "rebuild", "--config", str(p.config_path),
                                "--staging-db", staging.url.rsplit("/", 1)[1], "--no-progress"],
                               capture_output=True, text=True, timeout=120, env=p.sink_env())
        finally:
            staging.release()
        assert r.returncode == 0, r.stderr
        after = live.hgetall("sink:watermark:cdc")
        assert after and int(after["lsn"]) >= before, (before, after)
        out = freshness(p, "get_customer", {"customer_id": 3})
        assert out["result"]["plan"] == "before-rebuild" and not out["freshness"]["stale"], out

