"""The fault suite's own services, on its own ports and state directory, so that stopping,
restarting and emptying them disturbs nobody: Kafka and the schema registry through the
project's stack scripts (tests/stack/kafka.sh, registry.sh) with their port variables, and a
Redis server this module starts itself, because the faults need two kinds of Redis restart
that the stack's Redis (no persistence) cannot give:

- `restart_redis(empty=False)`: SIGTERM, down for a while, started again on the same
  append-only file (`appendfsync always`): every acknowledged write survives, as on a
  production Redis with AOF;
- `restart_redis(empty=True)`: SIGKILL, the data directory deleted, started again: Redis has
  lost everything it acknowledged (a restart without persistence, a failover to an empty
  replica, a FLUSHALL).

The registry keeps its schemas across a restart (H2 in a file instead of in memory), as a
production registry does; the suite checks that every id still resolves after it.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
STACK = REPO / "tests" / "stack"


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


@dataclass(frozen=True)
class Ports:
    """Every port of one instance of the suite's stack, from a base (default 26100)."""

    base: int

    @property
    def redis(self) -> int:
        return self.base

    def env(self) -> dict[str, str]:
        b = self.base
        return {"KAFKA_PORT": str(b + 1), "KAFKA_CONTROLLER_PORT": str(b + 2), "KAFKA_SASL_PORT": str(b + 3),
                "REGISTRY_PORT": str(b + 4), "REGISTRY_MGMT_PORT": str(b + 5), "REGISTRY_AUTH_PORT": str(b + 6)}


class Services:
    """Start, stop and break the suite's Redis, Kafka and registry."""

    def __init__(self, ports: Ports, state: Path, log):
        self.ports = ports
        self.state = state
        self.log = log
        self.redis_dir = state / "redis-faults"
        self.redis_proc: subprocess.Popen | None = None
        # The stack scripts' environment: our ports and state directory; nothing of the
        # shared stack's settings.
        self.env = {k: v for k, v in os.environ.items()
                    if not k.startswith(("KAFKA_", "REGISTRY_", "REDIS_", "SCHEMA_REGISTRY"))}
        self.env.update(ports.env(), AGENT_CONTEXT_STATE=str(state))
        registry_db = state / "registry-db" / "registry"
        self.env["REGISTRY_JAVA_OPTS"] = f"-Dapicurio.datasource.url=jdbc:h2:file:{registry_db}"

    # ------------------------------------------------------------ addresses

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.ports.base + 1}"

    @property
    def registry_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.base + 4}/apis/ccompat/v7"

    def redis_url(self, db: int) -> str:
        return f"redis://127.0.0.1:{self.ports.redis}/{db}"

    # ------------------------------------------------------------ stack scripts

    def _script(self, script: str, *args: str, timeout: float = 300) -> None:
        t0 = time.monotonic()
        r = subprocess.run(["bash", str(STACK / script), *args], env=self.env, stdin=subprocess.DEVNULL,
                           capture_output=True, text=True, timeout=timeout)
        if r.returncode != 0:
            raise RuntimeError(f"tests/stack/{script} {' '.join(args)} failed ({r.returncode}):\n"
                               f"{r.stdout}{r.stderr[-3000:]}")
        self.log(f"tests/stack/{script} {' '.join(args)}: {time.monotonic() - t0:.1f} s")

    def start(self) -> None:
        """A fresh Kafka cluster and registry (state of an earlier run deleted), and Redis."""
        for port in [self.ports.redis, *map(int, self.ports.env().values())]:
            if port_open(port):
                raise RuntimeError(f"port {port} is taken: stop what listens there, or pick another --port-base")
        self._script("kafka.sh", "reset")
        shutil.rmtree(self.state / "registry-db", ignore_errors=True)
        shutil.rmtree(self.redis_dir, ignore_errors=True)
        self.start_redis()
        self._script("kafka.sh", "start")
        self._script("registry.sh", "start")

    def stop(self) -> None:
        """Everything down (also after a failure: each part on its own)."""
        for script in ("registry.sh", "kafka.sh"):
            try:
                self._script(script, "stop")
            except (RuntimeError, subprocess.TimeoutExpired) as e:
                self.log(f"could not stop {script}: {e}")
        self.stop_redis(signal.SIGTERM)

    # ------------------------------------------------------------ Redis

    def start_redis(self) -> None:
        self.redis_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.state / "redis-faults.log", "ab")
        self.redis_proc = subprocess.Popen(
            ["redis-server", "--bind", "127.0.0.1", "--port", str(self.ports.redis), "--save", "",
             "--appendonly", "yes", "--appendfsync", "always", "--dir", str(self.redis_dir),
             "--databases", "16", "--logfile", ""],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        deadline = time.monotonic() + 20
        while not self.redis_ping():
            if self.redis_proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start; see {self.state / 'redis-faults.log'}")
            time.sleep(0.05)

    def redis_ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.ports.redis), timeout=1) as s:
                s.sendall(b"PING\r\n")
                return s.recv(7).startswith(b"+PONG")
        except OSError:
            return False

    def stop_redis(self, sig: signal.Signals) -> None:
        if self.redis_proc is None:
            return
        if self.redis_proc.poll() is None:
            self.redis_proc.send_signal(sig)
            try:
                self.redis_proc.wait(30)
            except subprocess.TimeoutExpired:
                self.redis_proc.kill()
                self.redis_proc.wait()
        self.redis_proc = None

    def restart_redis(self, down_s: float, empty: bool) -> None:
        """Redis down for `down_s` seconds, then back with its data (SIGTERM: the append-only
        file is complete) or without any (`empty`: SIGKILL and the data directory deleted)."""
        self.stop_redis(signal.SIGKILL if empty else signal.SIGTERM)
        if empty:
            shutil.rmtree(self.redis_dir, ignore_errors=True)
        time.sleep(down_s)
        self.start_redis()

    # ------------------------------------------------------------ Kafka and registry

    def restart_broker(self, down_s: float = 0.0, while_down: Callable[[], None] | None = None) -> float:
        """The broker stopped (controlled shutdown), `while_down` called, `down_s` seconds
        passed, and the broker started again on its data. Returns when (`time.monotonic()`)
        it was started again: it was down until then."""
        self._script("kafka.sh", "stop")
        if while_down is not None:
            while_down()
        time.sleep(down_s)
        starting = time.monotonic()
        self._script("kafka.sh", "start")
        return starting

    def registry_down(self, down_s: float) -> None:
        """The registry stopped for `down_s` seconds, then started again on its stored schemas."""
        self._script("registry.sh", "stop")
        time.sleep(down_s)
        self._script("registry.sh", "start")

    def schema_resolves(self, schema_id: int) -> bool:
        try:
            with urllib.request.urlopen(f"{self.registry_url}/schemas/ids/{schema_id}", timeout=5) as r:
                return r.status == 200
        except OSError:
            return False
