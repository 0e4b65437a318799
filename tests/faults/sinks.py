"""The real `sink run` processes under test, and the supervisor that restarts them.

A *slot* is one sink process position (`shared-1`, `exclusive-2`, ...): the supervisor keeps a
process running in every slot, as systemd's `Restart=always` or a Kubernetes Deployment would.
A process the suite killed is restarted after a short random delay; one the suite stopped
(SIGTERM: a clean handover of the exclusive lease) is restarted likewise, with its exit code
recorded; one that exited on its own (an unplanned exit: it found a service unreachable at
start, lost its lease, or failed) is recorded with its exit code and the end of its log, then
restarted after a second.
"""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import redis


@dataclass
class Exit:
    """A sink process that ended without being killed by the suite."""

    slot: str
    code: int
    at_s: float
    log_tail: str


@dataclass
class Slot:
    name: str
    writer: str  # shared | exclusive | mixed
    args: list[str]
    log: Path
    proc: subprocess.Popen | None = None
    killed: bool = False  # the current process was killed (or stopped) by the suite
    stopped: bool = False  # ... stopped with SIGTERM: its exit code goes to `Supervisor.stops`
    restart_at: float = 0.0
    starts: int = 0
    held: bool = False  # kept stopped (`Supervisor.hold`) until released


@dataclass
class Kill:
    slot: str
    writer: str
    pid: int
    at_s: float
    lease_holder: bool  # exclusive: the killed process held the lease
    takeover_s: float | None = None  # exclusive: until another process held the lease


@dataclass
class Stop:
    """A clean stop (SIGTERM) of the exclusive lease holder: it leaves its bookkeeping in Redis
    and releases the lease, and a standby takes over from that snapshot."""

    slot: str
    pid: int
    at_s: float
    exit_code: int | None = None
    exited_at_s: float | None = None
    takeover_s: float | None = None
    # Stopped while the broker was down: when (seconds into the run) it was started again.
    broker_down_until_s: float | None = None


class Supervisor:
    """Runs the sink slots, kills on request, restarts whatever ended."""

    def __init__(self, binary: Path, env: dict[str, str], logs: Path, rng: random.Random, t0: float):
        self.binary = binary
        self.env = env
        self.logs = logs
        self.rng = rng
        self.t0 = t0
        self.slots: list[Slot] = []
        self.exits: list[Exit] = []
        self.kills: list[Kill] = []
        self.stops: list[Stop] = []
        self.lock = threading.Lock()
        self.stopping = False
        self.thread: threading.Thread | None = None

    def add(self, name: str, writer: str, args: list[str]) -> None:
        self.slots.append(Slot(name, writer, args, self.logs / f"{name}.log"))

    def _spawn(self, slot: Slot) -> None:
        with open(slot.log, "ab") as log:
            log.write(f"\n===== start {slot.starts + 1} at {time.monotonic() - self.t0:.1f} s\n".encode())
            log.flush()
            slot.proc = subprocess.Popen([str(self.binary), *slot.args], env=self.env, stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=subprocess.STDOUT)
        slot.starts += 1
        slot.killed = False
        slot.stopped = False

    def start(self) -> None:
        for slot in self.slots:
            self._spawn(slot)
        self.thread = threading.Thread(target=self._watch, name="supervisor", daemon=True)
        self.thread.start()

    def _watch(self) -> None:
        while not self.stopping:
            with self.lock:
                now = time.monotonic()
                for slot in self.slots:
                    if slot.proc is None:
                        if now >= slot.restart_at and not slot.held:
                            self._spawn(slot)
                        continue
                    code = slot.proc.poll()
                    if code is None:
                        continue
                    if slot.stopped:
                        stop = next(s for s in reversed(self.stops) if s.pid == slot.proc.pid)
                        stop.exit_code = code
                        stop.exited_at_s = round(now - self.t0, 2)
                        slot.restart_at = now + self.rng.uniform(0.0, 1.5)
                    elif not slot.killed:
                        self.exits.append(Exit(slot.name, code, now - self.t0, tail(slot.log)))
                        slot.restart_at = now + 1.0
                    else:
                        slot.restart_at = now + self.rng.uniform(0.0, 1.5)
                    slot.proc = None
            time.sleep(0.05)

    def kill(self, writer: str, holder_pid: int | None) -> Kill | None:
        """SIGKILLs a running sink of `writer` not already stopped or killed: the lease holder
        when given (exclusive), else a random one."""
        with self.lock:
            running = [s for s in self.slots if s.writer == writer and s.proc is not None
                       and s.proc.poll() is None and not s.killed]
            if holder_pid is not None:
                # None when the holder is already being stopped: a clean handover is not cut short.
                target = next((s for s in running if s.proc.pid == holder_pid), None)
            else:
                target = self.rng.choice(running) if running else None
            if target is None:
                return None
            target.killed = True
            target.proc.send_signal(signal.SIGKILL)
            kill = Kill(target.name, writer, target.proc.pid, time.monotonic() - self.t0,
                        lease_holder=holder_pid is not None and target.proc.pid == holder_pid)
            self.kills.append(kill)
            return kill

    def stop_holder(self, holder_pid: int) -> Stop | None:
        """SIGTERMs the exclusive sink `holder_pid` (the lease holder), if it runs and was not
        already stopped or killed."""
        with self.lock:
            target = next((s for s in self.slots if s.proc is not None and s.proc.pid == holder_pid
                           and s.proc.poll() is None and not s.killed), None)
            if target is None:
                return None
            target.killed = target.stopped = True
            target.proc.send_signal(signal.SIGTERM)
            stop = Stop(target.name, holder_pid, time.monotonic() - self.t0)
            self.stops.append(stop)
            return stop

    def hold(self, name: str) -> int | None:
        """SIGTERMs slot `name` and keeps it stopped until `release` (a sink away for a while:
        a host down, a deployment paused); the pid stopped, or None if it was not running."""
        with self.lock:
            slot = next(s for s in self.slots if s.name == name)
            slot.held = True
            if slot.proc is None or slot.proc.poll() is not None or slot.killed:
                return None
            slot.killed = True
            slot.proc.send_signal(signal.SIGTERM)
            return slot.proc.pid

    def release(self, name: str) -> None:
        """Lets the supervisor start slot `name` again."""
        with self.lock:
            slot = next(s for s in self.slots if s.name == name)
            slot.held = False
            slot.restart_at = min(slot.restart_at, time.monotonic())

    def logs_of(self, writer: str) -> dict[str, Path]:
        """Each slot of `writer` and its log."""
        return {s.name: s.log for s in self.slots if s.writer == writer}

    def pids(self, writer: str) -> set[int]:
        with self.lock:
            return {s.proc.pid for s in self.slots if s.writer == writer and s.proc is not None and s.proc.poll() is None}

    def stop(self, timeout: float = 60.0) -> dict[str, int]:
        """SIGTERM to every sink; their exit codes (a sink stops cleanly with 0)."""
        self.stopping = True
        if self.thread:
            self.thread.join()
        codes = {}
        for slot in self.slots:
            if slot.proc is not None and slot.proc.poll() is None:
                slot.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for slot in self.slots:
            if slot.proc is None:
                continue
            try:
                codes[slot.name] = slot.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                slot.proc.kill()
                codes[slot.name] = slot.proc.wait()
        return codes


def lease_holder(redis_url: str, mapping: str) -> int | None:
    """The pid of the exclusive sink holding `mapping`'s lease (`sink:writer:{mapping}` holds
    `host:pid:start`), if any; also None when Redis does not answer."""
    try:
        return read_lease_holder(redis_url, mapping)
    except redis.RedisError:
        return None


def read_lease_holder(redis_url: str, mapping: str) -> int | None:
    """`lease_holder`, raising `redis.RedisError` when Redis does not answer."""
    value = redis.Redis.from_url(redis_url, socket_timeout=2).get(f"sink:writer:{mapping}")
    if not value:
        return None
    parts = value.decode().rsplit(":", 2)
    return int(parts[1]) if len(parts) == 3 and parts[1].isdigit() else None


ANSI_COLOUR = re.compile(r"\x1b\[[0-9;]*m")


def own_lines(path: Path, lines: int = 12) -> str:
    """The last `lines` lines that the sink itself wrote to its log at `path` (librdkafka's
    lines and the consume stage's echo of them left out), without colours: enough to see
    what a sink was waiting for when the suite gave up on it."""
    try:
        text = ANSI_COLOUR.sub("", path.read_text(errors="replace"))
    except OSError:
        return "(no log)"
    own = [line for line in text.splitlines()
           if " sink::" in line and "Kafka consumer error" not in line]
    return "\n".join(own[-lines:])


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def environment(extra: dict[str, str]) -> dict[str, str]:
    """The sinks' environment: no settings of the shared stack, logs at info."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("KAFKA_", "REDIS_", "SCHEMA_REGISTRY", "SINK_"))}
    env.setdefault("RUST_LOG", "info")
    env.update(extra)
    return env
