"""tests/stack/pipeline.sh (the README's first command) end to end, on a second stack of its
own: separate state directory and ports, so the stack tests/run.sh started is not touched.
`up` twice (idempotent), the live change seen through agent-cli, `status`, `down` leaving no
process behind. The binaries are the ones the test run uses (SINK_BIN / AGENT_CLI_BIN)."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
from pathlib import Path

from harness import binary

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "tests" / "stack" / "pipeline.sh"
# Below Linux's ephemeral range (32768-60999): a port in it can be held for a moment by any
# outgoing connection's local end, and the server's bind then fails.
PORTS = {"REDIS_PORT": 26379, "REDIS_TLS_PORT": 26380, "KAFKA_PORT": 29092, "KAFKA_CONTROLLER_PORT": 29093,
         "KAFKA_SASL_PORT": 29094, "REGISTRY_PORT": 28081, "REGISTRY_MGMT_PORT": 29081,
         "REGISTRY_AUTH_PORT": 28085, "PGPORT": 25432, "CONNECT_PORT": 28083}
# Settings of the stack run.sh started, which must not leak into the second one.
STACK_VARS = ("REDIS_URL", "KAFKA_BOOTSTRAP_SERVERS", "SCHEMA_REGISTRY_URL", "CONNECT_URL", "DATABASE_URL",
              "PGHOST", "PGUSER", "PGPASSWORD", "SINK_GROUP_ID", "AGENT_CLI_CONFIG")


def port_busy(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def run(env: dict, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    r = subprocess.run(["bash", str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=timeout)
    print(f"---- pipeline.sh {' '.join(args)} -> {r.returncode}\n{r.stdout}{r.stderr}")
    return r


def our_pids(state: Path) -> list[int]:
    pids = []
    for f in (state / "run").glob("*.pid"):
        pids.append(int(f.read_text().split()[0]))
    return pids


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_pipeline_up_twice_status_down():
    state = Path(os.environ.get("AGENT_CONTEXT_STATE") or Path.home() / ".local/state/agent-context")
    state = state.with_name(state.name + "-pipeline-test")
    env = {k: v for k, v in os.environ.items() if k not in STACK_VARS}
    env.update({k: str(v) for k, v in PORTS.items()})
    env.update(AGENT_CONTEXT_STATE=str(state), SINK_BIN=str(binary("sink")), AGENT_CLI_BIN=str(binary("agent-cli")))
    if not (state / "run").is_dir() or not our_pids(state):
        busy = [f"{k}={v}" for k, v in PORTS.items() if port_busy(v)]
        assert not busy, f"ports of the pipeline test's own stack are taken by something else: {busy}"
    try:
        first = run(env, "up")
        assert first.returncode == 0, "pipeline.sh up failed"
        out = first.stdout + first.stderr
        m = re.search(r"commit -> visible through agent-cli: (\d+) ms", out)
        assert m, "no timing of the live change"
        assert int(m.group(1)) < 2000, f"the live change took {m.group(1)} ms to show"
        assert "tests/stack/pipeline.sh down" in out and "query" in out, "says how to stop and to ask"

        second = run(env, "up")
        assert second.returncode == 0, "second pipeline.sh up failed"
        out2 = second.stdout + second.stderr
        for svc in ("redis", "kafka", "registry", "postgres", "connect"):
            assert re.search(rf"\[{svc}\] already running", out2), f"{svc} was not kept running"
        assert "sink already running" in out2

        status = run(env, "status", timeout=60)
        assert status.returncode == 0 and "sink running" in status.stdout, "pipeline.sh status"

        # What agent-cli serves is what PostgreSQL holds.
        sql = subprocess.run(["bash", str(REPO / "tests/stack/postgres.sh"), "psql", "-qtAX", "-c",
                              "SELECT plan FROM customers WHERE email = 'jane@example.com'"],
                             env=env, capture_output=True, text=True, timeout=60)
        assert sql.returncode == 0, sql.stderr
        cli_env = {**env, "REDIS_URL": f"redis://127.0.0.1:{PORTS['REDIS_PORT']}"}
        tool = subprocess.run([str(binary("agent-cli")), "--config", str(REPO / "connectors.yaml"), "tool",
                               "get_customer", '{"email": "jane@example.com"}'],
                              env=cli_env, capture_output=True, text=True, timeout=60)
        assert tool.returncode == 0, tool.stderr
        assert json.loads(tool.stdout)["result"]["plan"] == sql.stdout.strip()
        pids = our_pids(state)
        assert len(pids) == 8, f"5 services, the secured redis, the registry's auth proxy and the sink have pid files: {pids}"
    finally:
        down = run(env, "down", timeout=180)
    assert down.returncode == 0, "pipeline.sh down failed"
    assert "no process left" in down.stdout + down.stderr
    left = [p for p in pids if alive(p)]
    assert not left, f"still running after down: {left}"
    assert not our_pids(state), "pid files left"
