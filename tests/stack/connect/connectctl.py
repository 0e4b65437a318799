"""Connector management over the Kafka Connect REST API, for tests/stack/connect.sh.

Standard library only (one Python process per command: registering a connector for a test
should cost the worker's time, not the script's).

    connectctl.py register NAME [--fresh] [FILE.properties | KEY=VALUE]...
    connectctl.py unregister NAME
    connectctl.py wait NAME [STATE]

Environment: CONNECT_URL (http://127.0.0.1:8083), CONNECTOR_TEMPLATE (the rendered
connector.properties: the defaults), PSQL (psql binary for the replication slot look-up),
CONNECT_WAIT_S (60).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request

URL = os.environ.get("CONNECT_URL", "http://127.0.0.1:8083").rstrip("/")
WAIT_S = float(os.environ.get("CONNECT_WAIT_S", "60"))


class Fail(Exception):
    pass


def log(msg: str) -> None:
    print(f"{time.strftime('%H:%M:%S', time.gmtime())}.{int(time.time() * 1000) % 1000:03d} [connect] {msg}",
          file=sys.stderr)


def rest(method: str, path: str, body: object | None = None, ok: tuple[int, ...] = (200, 201, 202, 204)) -> tuple[int, object]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(URL + path, data=data, method=method,
                                 headers={"Content-Type": "application/json", "Accept": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            code, raw = resp.status, resp.read()
    except urllib.error.HTTPError as e:
        code, raw = e.code, e.read()
    except OSError as e:
        raise Fail(f"{method} {URL}{path}: {e}") from e
    try:
        payload = json.loads(raw) if raw else None
    except ValueError:
        payload = raw.decode(errors="replace")
    if code not in ok:
        raise Fail(f"{method} {path} answered {code}: {payload}")
    return code, payload


def parse_props(text: str, origin: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line[0] in "#!":
            continue
        if "=" not in line:
            raise Fail(f"{origin}:{n}: expected KEY=VALUE, got {line!r}")
        k, v = line.split("=", 1)
        out[k.strip()] = v.strip()
    return out


def merged_config(name: str, args: list[str]) -> dict[str, str]:
    cfg = parse_props(os.environ.get("CONNECTOR_TEMPLATE", ""), "connector.properties")
    for arg in args:
        if "=" in arg:
            k, v = arg.split("=", 1)
            cfg[k] = v
        else:
            with open(arg) as f:
                cfg.update(parse_props(f.read(), arg))
    cfg["name"] = name
    return cfg


def slot_exists(cfg: dict[str, str]) -> bool:
    psql = os.environ.get("PSQL", "psql")
    slot = cfg.get("slot.name", "debezium").replace("'", "''")
    env = dict(os.environ, PGPASSWORD=cfg.get("database.password", ""), PGCONNECT_TIMEOUT="5")
    r = subprocess.run(
        [psql, "-X", "-tA", "-h", cfg.get("database.hostname", "127.0.0.1"), "-p", cfg.get("database.port", "5432"),
         "-U", cfg.get("database.user", "postgres"), "-d", cfg.get("database.dbname", "postgres"),
         "-c", f"select count(*) from pg_replication_slots where slot_name = '{slot}'"],
        capture_output=True, text=True, env=env)
    if r.returncode != 0:
        raise Fail(f"cannot query database {cfg.get('database.dbname')}: {r.stderr.strip()}")
    return r.stdout.strip() == "1"


def summarize(status: object) -> tuple[str, str]:
    """(RUNNING | STOPPED | FAILED | PENDING, traces)."""
    if not isinstance(status, dict) or "connector" not in status:
        return "PENDING", ""
    tasks = status.get("tasks") or []
    states = [status["connector"]["state"]] + [t["state"] for t in tasks]
    if "FAILED" in states:
        traces = [status["connector"].get("trace", "")] + [t.get("trace", "") for t in tasks]
        return "FAILED", "\n".join(t for t in traces if t)
    if tasks and all(s == "RUNNING" for s in states):
        return "RUNNING", ""
    if status["connector"]["state"] == "STOPPED":
        return "STOPPED", ""
    return "PENDING", ""


def wait_state(name: str, want: str) -> None:
    deadline = time.monotonic() + WAIT_S
    last: object = None
    while True:
        code, last = rest("GET", f"/connectors/{name}/status", ok=(200, 404))
        state, trace = summarize(last) if code == 200 else ("PENDING", "")
        if state == want:
            return
        if state == "FAILED":
            raise Fail(f"connector {name} failed:\n{trace}")
        if time.monotonic() > deadline:
            raise Fail(f"connector {name} not {want} after {WAIT_S:.0f} s: {last}")
        time.sleep(0.05)


def register(name: str, args: list[str]) -> None:
    """Create or update NAME and wait until it and its task run.

    The worker keeps source offsets per connector name across restarts and
    re-registrations. They are deleted before the connector first runs when --fresh is given
    or when its replication slot does not exist (a reset database: the stored LSN would point
    into WAL that the new slot does not have, and Debezium would fail).
    """
    t0 = time.monotonic()
    fresh = False
    if args and args[0] == "--fresh":
        fresh, args = True, args[1:]
    cfg = merged_config(name, args)
    reason = "--fresh" if fresh else ""
    if not fresh and not slot_exists(cfg):
        fresh, reason = True, f"slot {cfg.get('slot.name')} absent"
    code, _ = rest("GET", f"/connectors/{name}", ok=(200, 404))
    if code == 200:
        # Stopped first: the status then tells the new tasks from the old ones, and no task
        # runs with offsets that are about to go.
        rest("PUT", f"/connectors/{name}/stop")
        wait_state(name, "STOPPED")
        rest("PUT", f"/connectors/{name}/config", cfg)
        if fresh:
            rest("DELETE", f"/connectors/{name}/offsets")
        rest("PUT", f"/connectors/{name}/resume")
    elif fresh:
        rest("POST", "/connectors", {"name": name, "config": cfg, "initial_state": "STOPPED"})
        wait_state(name, "STOPPED")
        rest("DELETE", f"/connectors/{name}/offsets")
        rest("PUT", f"/connectors/{name}/resume")
    else:
        rest("PUT", f"/connectors/{name}/config", cfg)
    wait_state(name, "RUNNING")
    shown = ", ".join(f"{k}={cfg[k]}" for k in ("database.dbname", "slot.name", "topic.prefix", "poll.interval.ms")
                      if k in cfg)
    log(f"connector {name} running in {(time.monotonic() - t0) * 1000:.0f} ms"
        + (f" (offsets reset: {reason})" if reason else "") + f" ({shown})")


def unregister(name: str) -> None:
    code, _ = rest("DELETE", f"/connectors/{name}", ok=(200, 204, 404))
    log(f"connector {name} {'did not exist' if code == 404 else 'deleted'}")


def main(argv: list[str]) -> int:
    try:
        if len(argv) >= 2 and argv[0] == "register":
            register(argv[1], argv[2:])
        elif len(argv) == 2 and argv[0] == "unregister":
            unregister(argv[1])
        elif len(argv) in (2, 3) and argv[0] == "wait":
            wait_state(argv[1], argv[2] if len(argv) == 3 else "RUNNING")
        else:
            print(__doc__, file=sys.stderr)
            return 2
    except Fail as e:
        log(f"ERROR: {e}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
