"""The fault suite: the real `sink run` binary, both writers at once, under SIGKILLs, Redis,
broker and registry outages, with poison records in the log; then its Redis state compared key
by key with a clean replay of the same log, and its dead-letter topic with the poison records.

    bash tests/faults/run.sh [--profile short|full] [--seed N] [--port-base P] [--keep]

One run:
1. Starts its own Kafka, schema registry and Redis on `--port-base`.. (default 26100..26106;
   services.py), creates two topics (`customers`, `orders`) of `partitions` partitions and
   registers the recorded Debezium schemas.
2. Generates the seeded workload (workload.py): `changes` Debezium changes plus `poison`
   poison records, produced at a steady rate over `produce_s` seconds while everything below
   happens.
3. Runs two `--writer shared` sinks (one consumer group, Redis db 1), two exclusive
   sinks (active + standby, another group, db 2: one `--writer exclusive`, one with the
   default writer, `auto`, which is exclusive there), and a mixed group (db 3): one
   `--writer shared` sink and one with the default writer, `auto`, which writes through the
   change script beside it. All under a supervisor that restarts any sink that ends
   (sinks.py).
4. Meanwhile SIGKILLs a sink at random moments, alternating writers, until each writer was
   killed `kills` times (for the exclusive writer always the lease holder, so the standby must
   take over; every third turn of the exclusive writer is instead a clean handover: SIGTERM to
   the holder, which must exit 0 leaving its bookkeeping in Redis, and the standby takes over
   from that snapshot), and runs the profile's faults at their times: Redis stopped and restarted with
   its data, the broker down for longer than the groups' session (and the exclusive lease
   holder SIGTERMed in that outage: its final offset commit fails, and it must still exit 0),
   the registry down, Redis restarted empty. And keeps the mixed group's shared sink away
   (stopped, not restarted) until the `auto` sink took the exclusive lease, having outwaited
   its announcement; then lets it start again: it must stand by for the lease rather than
   exit refused, and the `auto` sink must give the lease up to it and write beside it.
5. Waits until both groups have committed the end of every partition, stops the sinks with
   SIGTERM (exit code 0 expected), replays the whole log with `sink rebuild` into an empty
   database (db 5), and compares db 1 and db 2 with it key by key (compare.py), and each
   writer's dead-letter topic with the poison records (every one present, byte for byte, with
   its origin topic/partition/offset; nothing else there).

Prints a report (and writes it as JSON to `--report`, default `<state>/report.json`); exits
0 only when every group lost nothing, added nothing, differs in nothing and dead-lettered
exactly the poison records, the mixed group's lease went to `auto` and back as above, and
no sink ended on its own (no unplanned exit: every one waits out the outages).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import secrets
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

import redis
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

import compare
import sinks
import workload
from services import REPO, Ports, Services


@dataclass(frozen=True)
class Profile:
    changes: int
    poison: int
    partitions: int
    produce_s: float  # production spread over this long
    kills: int  # per writer, at least
    kill_every_s: tuple[float, float]  # between two kills (any writer)
    faults: tuple[tuple[float, str], ...]  # (seconds after the start of production, fault)


FAULTS = ("redis-restart", "broker-restart", "registry-down", "redis-empty")
PROFILES = {
    "short": Profile(changes=20_000, poison=12, partitions=4, produce_s=45, kills=4, kill_every_s=(3.0, 6.0),
                     faults=((5, "redis-restart"), (18, "broker-restart"), (30, "redis-empty"), (38, "registry-down"))),
    "full": Profile(changes=100_000, poison=60, partitions=6, produce_s=150, kills=22, kill_every_s=(1.5, 3.5),
                    faults=((20, "redis-restart"), (55, "broker-restart"), (90, "registry-down"),
                            (130, "redis-empty"))),
}
OUTAGE_S = 10.0
LEASE_MS = 3000
# The consumer groups' session timeout.
SESSION_S = 6.0
DBS = {"shared": 1, "exclusive": 2, "mixed": 3}
# The mixed group's shared sink goes away this long after the start of production.
AWAY_AFTER_S = 3.0
# The error a shared sink stopped with when an exclusive sink held its mappings (before it
# stood by instead).
REFUSED = "an exclusive sink holds this mapping"
# What the `auto` sink logs when it gives the lease up to a shared sink.
GIVES_UP = "giving the exclusive lease up"
REPLAY_DB, REPLAY_STAGING_DB = 5, 6
MAPPINGS = ("customers", "orders")


def log(msg: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} faults: {msg}", file=sys.stderr, flush=True)


def config_yaml(sv: Services, run_id: str, group: str, dlq: str, db: int) -> str:
    """The default mapping layout (key names of the shipped connectors.yaml) on our topics."""
    return f"""kafka:
  bootstrap_servers: "{sv.bootstrap}"
  group_id: "{group}"
  dead_letter_topic: "{dlq}"
schema_registry:
  url: "{sv.registry_url}"
redis:
  url: "{sv.redis_url(db)}"
mappings:
  - name: customers
    topic: "{run_id}.public.customers"
    key: "customer:{{id}}"
    fields: all
    indexes:
      - {{ name: email, key: "customer:email:{{email}}" }}
    # Its sorted set and members hash are compared with the clean replay like every key.
    search:
      - {{ name: name_prefix, field: name }}
  - name: orders
    topic: "{run_id}.public.orders"
    key: "order:{{id}}"
    fields: all
    relations:
      - {{ name: customer_orders, key: "customer:{{customer_id}}:orders", order_by: created_at }}
    # Compared with the clean replay like every key: exact figures under every fault.
    aggregates:
      - {{ name: customer_order_stats, key: "customer:{{customer_id}}:order_stats", count: true,
           sum: [total_cents], group_by: status }}
    lookups:
      # Its `filters` make the sink keep customer:{{customer_id}}:orders:status:{{status}} too,
      # compared with the clean replay like every key.
      - tool: get_customer_orders
        description: Orders of a customer
        relation: customer_orders
        by: [{{ param: customer_id, type: integer, description: Customer ID }}]
        filters: [{{ param: status, field: status, description: Status }}]
"""


def register(registry: str, subject: str, schema: str) -> int:
    req = urllib.request.Request(f"{registry}/subjects/{subject}/versions",
                                 data=json.dumps({"schema": schema}).encode(),
                                 headers={"Content-Type": "application/vnd.schemaregistry.v1+json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())["id"]


class Production:
    """Produces the workload at a steady rate in a thread; remembers where every poison record
    landed."""

    def __init__(self, bootstrap: str, topics: dict[str, str], records: list[workload.Record], seconds: float):
        self.topics = topics
        self.records = records
        self.seconds = seconds
        self.poison: dict[tuple[str, int, int], tuple[str, bytes]] = {}
        self.delivered = 0
        self.failed: list[str] = []
        self.producer = Producer({
            "bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 10, "log_level": 2,
            "partitioner": "murmur2_random",  # what Debezium's Java producer does
            "message.max.bytes": 1_100_000, "message.timeout.ms": 600_000,
            "queue.buffering.max.messages": 1_000_000, "queue.buffering.max.kbytes": 1_048_576,
        })
        self.thread = threading.Thread(target=self._run, name="producer", daemon=True)

    def _on_delivery(self, record: workload.Record):
        def done(err, msg):
            if err is not None:
                self.failed.append(str(err))
                return
            self.delivered += 1
            if record.poison:
                self.poison[(msg.topic(), msg.partition(), msg.offset())] = (record.poison, record.value)
        return done

    def _run(self) -> None:
        t0 = time.monotonic()
        n = len(self.records)
        for i, record in enumerate(self.records):
            due = t0 + self.seconds * i / n
            while (now := time.monotonic()) < due:
                self.producer.poll(min(0.05, due - now))
            while True:
                try:
                    self.producer.produce(self.topics[record.table], key=record.key, value=record.value,
                                          timestamp=record.timestamp_ms,
                                          headers=[("__debezium.context.connectorLogicalName", b"cdc")],
                                          on_delivery=self._on_delivery(record))
                    break
                except BufferError:
                    self.producer.poll(0.1)
            self.producer.poll(0)
        left = self.producer.flush(600)
        if left:
            self.failed.append(f"{left} records not delivered after 600 s")

    def start(self) -> None:
        self.thread.start()

    def wait(self) -> None:
        self.thread.join()


def lags(bootstrap: str, group: str, topics: list[str], partitions: int) -> int:
    """Records not yet committed by `group`, summed over every partition of `topics`."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False, "log_level": 2})
    try:
        tps = [TopicPartition(t, p) for t in topics for p in range(partitions)]
        committed = {(tp.topic, tp.partition): tp.offset for tp in c.committed(tps, timeout=10)}
        total = 0
        for tp in tps:
            _, hi = c.get_watermark_offsets(tp, timeout=10)
            done = committed.get((tp.topic, tp.partition), -1)
            total += hi - max(done, 0)
        return total
    finally:
        c.close()


class Suite:
    """One run of the suite: its services, topics, sinks, faults and verdicts; `report` holds
    every count the summary prints."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.profile = PROFILES[args.profile]
        self.rng = random.Random(args.seed)
        self.state = Path(args.state or f"/tmp/agent-context-faults-{args.port_base}")
        self.state.mkdir(parents=True, exist_ok=True)
        self.sv = Services(Ports(args.port_base), self.state, log)
        self.run_id = f"f{secrets.token_hex(3)}"
        self.logs = self.state / "logs" / self.run_id
        self.logs.mkdir(parents=True, exist_ok=True)
        self.faults: list[dict] = []
        self.report: dict = {"profile": args.profile, "seed": args.seed, "run": self.run_id}
        self.t0 = time.monotonic()
        self.supervisor: sinks.Supervisor | None = None
        # The clean handover made while the broker is down, until its takeover is seen.
        self.outage_handover: sinks.Stop | None = None
        # Set while the mixed group's `auto` sink is to give its lease up (`shared_away`).
        self.mixed_settling = threading.Event()

    # ------------------------------------------------------------ set-up

    def setup(self) -> None:
        self.sv.start()
        topics = [f"{self.run_id}.public.{t}" for t in workload.TABLES]
        self.dlqs = {w: f"{self.run_id}.dlq.{w}" for w in (*DBS, "replay")}
        admin = AdminClient({"bootstrap.servers": self.sv.bootstrap})
        # Kept forever: the records carry their source commit times (weeks before now, as a
        # replayed history's would), which time-based retention would delete at once.
        keep = {"retention.ms": "-1"}
        new = [NewTopic(t, self.profile.partitions, 1, config=keep) for t in topics]
        new += [NewTopic(t, 1, 1, config={**keep, "max.message.bytes": "2000000"}) for t in self.dlqs.values()]
        for topic, fut in admin.create_topics(new, operation_timeout=30).items():
            fut.result(60)
        self.topics = dict(zip(workload.TABLES, topics))
        ids = {}
        for table, topic in self.topics.items():
            ids[table] = (register(self.sv.registry_url, f"{topic}-key", workload.schema_text(table, "key")),
                          register(self.sv.registry_url, f"{topic}-value", workload.schema_text(table, "value")))
        wrong = register(self.sv.registry_url, f"{self.run_id}.wrong-value", json.dumps(workload.WRONG_SHAPE_SCHEMA))
        self.schema_ids = [i for pair in ids.values() for i in pair] + [wrong]
        self.codecs = workload.Codecs(ids, wrong)
        self.configs = {}
        for name, db in (*DBS.items(), ("replay", REPLAY_DB)):
            path = self.state / f"{self.run_id}-{name}.yaml"
            path.write_text(config_yaml(self.sv, self.run_id, f"{self.run_id}-{name}", self.dlqs[name], db))
            self.configs[name] = path

    # ------------------------------------------------------------ faults

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def fault(self, name: str) -> None:
        start = self.elapsed()
        log(f"fault: {name}")
        if name == "redis-restart":
            self.sv.restart_redis(OUTAGE_S, empty=False)
        elif name == "redis-empty":
            self.sv.restart_redis(OUTAGE_S / 5, empty=True)
        elif name == "broker-restart":
            # Down for longer than the groups' session timeout: the lease holder stopped in the
            # outage cannot make its final offset commit, and must still exit 0.
            starting = self.sv.restart_broker(SESSION_S + 1.0, while_down=self.handover_while_broker_down)
            self.await_handover(down_until_s=starting - self.t0)
        elif name == "registry-down":
            self.sv.registry_down(OUTAGE_S)
            lost = [i for i in self.schema_ids if not self.sv.schema_resolves(i)]
            if lost:
                raise RuntimeError(f"the restarted registry lost schema ids {lost}: the suite's set-up is broken")
        else:
            raise ValueError(name)
        self.faults.append({"fault": name, "at_s": round(start, 1), "took_s": round(self.elapsed() - start, 1)})

    def handover_while_broker_down(self) -> None:
        """SIGTERMs the exclusive lease holder while the broker is down (a clean handover)."""
        holder = sinks.lease_holder(self.sv.redis_url(DBS["exclusive"]), MAPPINGS[0])
        if self.supervisor is None or holder not in self.supervisor.pids("exclusive"):
            log("no exclusive sink holds the lease: no handover in the broker outage")
            return
        self.outage_handover = self.supervisor.stop_holder(holder)
        if self.outage_handover is None:
            log(f"the lease holder (pid {holder}) is already being stopped or killed")
        else:
            log(f"SIGTERM {self.outage_handover.slot} (pid {holder}, lease holder) while the broker is down")

    def await_handover(self, down_until_s: float) -> None:
        """Waits for a standby to take over the lease from the holder stopped in the outage,
        and notes when the broker came back (`down_until_s` into the run), for the report."""
        handover, self.outage_handover = self.outage_handover, None
        if handover is not None:
            handover.broker_down_until_s = round(down_until_s, 2)
            handover.takeover_s = self.wait_takeover(self.supervisor, handover.pid, timeout=60.0)
            log(f"lease taken over by another exclusive sink {handover.takeover_s} s after the broker started")
            if handover.takeover_s is None:
                # The report keeps only figures; CI keeps only this output.
                for slot, path in self.supervisor.logs_of("exclusive").items():
                    log(f"no takeover: the last lines of {slot}'s log:\n{sinks.own_lines(path)}")

    def kill_loop(self, sup: sinks.Supervisor, stop: threading.Event) -> None:
        """Kills until every group reached the profile's count and `stop` is set."""
        writers = list(DBS)
        while True:
            counts = {w: sum(1 for k in sup.kills if k.writer == w) for w in writers}
            if stop.is_set() and all(counts[w] >= self.profile.kills for w in writers):
                return
            time.sleep(self.rng.uniform(*self.profile.kill_every_s))
            open_to_kills = [w for w in writers if not (w == "mixed" and self.mixed_settling.is_set())]
            writer = min(open_to_kills, key=lambda w: counts[w])
            holder = None
            if writer == "exclusive":
                holder = sinks.lease_holder(self.sv.redis_url(DBS["exclusive"]), MAPPINGS[0])
                if holder not in sup.pids("exclusive"):
                    holder = None
                # Every third time, a clean handover instead (not counted as a kill): the
                # holder leaves its bookkeeping in Redis and the standby starts from it.
                if holder is not None and counts[writer] % 3 == 1 and len(sup.stops) < counts[writer] // 3 + 1:
                    handover = sup.stop_holder(holder)
                    if handover is not None:
                        log(f"SIGTERM {handover.slot} (pid {handover.pid}, lease holder): clean handover")
                        handover.takeover_s = self.wait_takeover(sup, handover.pid)
                        log(f"lease taken over by another exclusive sink after {handover.takeover_s} s")
                        continue
            kill = sup.kill(writer, holder)
            if kill is None:
                continue
            log(f"SIGKILL {kill.slot} (pid {kill.pid}{', lease holder' if kill.lease_holder else ''})")
            if kill.lease_holder:
                kill.takeover_s = self.wait_takeover(sup, kill.pid)
                log(f"lease taken over by another exclusive sink after {kill.takeover_s} s")

    def shared_away(self, sup: sinks.Supervisor, result: dict) -> None:
        """Keeps the mixed group's shared sink away until its `auto` sink took the exclusive
        lease (no announcement for six lease times), then lets it start again and measures
        how soon the `auto` sink gives the lease up to it. Records the seconds in `result`
        (`None`: not within the time allowed)."""
        url = self.sv.redis_url(DBS["mixed"])

        def held_by_auto() -> bool | None:
            """Whether a running sink of the group holds the lease; None while Redis does
            not answer (an outage must not pass for a lease given up)."""
            try:
                return sinks.read_lease_holder(url, MAPPINGS[0]) in sup.pids("mixed")
            except redis.RedisError:
                return None

        time.sleep(max(0.0, AWAY_AFTER_S - self.elapsed()))
        result["away_at_s"] = round(self.elapsed(), 1)
        pid = sup.hold("mixed-1")
        log(f"mixed-1 (the shared sink, pid {pid}) stopped and kept away until the auto sink takes the lease")
        result["lease_taken_s"] = wait_for(lambda: held_by_auto() is True, timeout=150.0)
        # No kills in the group until the lease is given up: a killed `auto` sink's lease lapses
        # by itself, which is not what this measures.
        self.mixed_settling.set()
        try:
            sup.release("mixed-1")
            result["back_at_s"] = round(self.elapsed(), 1)
            log(f"mixed: lease taken by the auto sink {result['lease_taken_s']} s after the shared sink left; "
                "it starts again")
            given_up = None
            if result["lease_taken_s"] is not None:
                given_up = wait_for(lambda: held_by_auto() is False, timeout=90.0)
            # For good: not seen held again for three lease times.
            result["lease_given_up_s"] = given_up if given_up is not None and not_for(
                lambda: held_by_auto() is True, 3 * LEASE_MS / 1000) else None
        finally:
            self.mixed_settling.clear()
        log(f"mixed: lease given up {result['lease_given_up_s']} s after the shared sink started again")

    def wait_takeover(self, sup: sinks.Supervisor, dead: int, timeout: float = 30.0) -> float | None:
        """Seconds until a live exclusive sink other than `dead` holds the lease (`None`: not
        within `timeout`)."""
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            holder = sinks.lease_holder(self.sv.redis_url(DBS["exclusive"]), MAPPINGS[0])
            if holder is not None and holder != dead and holder in sup.pids("exclusive"):
                return round(time.monotonic() - start, 2)
            time.sleep(0.1)
        return None

    # ------------------------------------------------------------ the run

    def run(self) -> bool:
        self.setup()
        log(f"run {self.run_id}: generating {self.profile.changes} changes + {self.profile.poison} poison (seed {self.args.seed})")
        wl = workload.generate(self.codecs, self.args.seed, self.profile.changes, self.profile.poison)
        self.report["workload"] = {"records": len(wl.records), "changes": wl.changes, "poison": sum(1 for r in wl.records if r.poison),
                                   "by_kind": wl.counts, "partitions": self.profile.partitions, "topics": list(self.topics.values())}
        env = sinks.environment({})
        sup = self.supervisor = sinks.Supervisor(Path(self.args.sink_bin), env, self.logs, self.rng, self.t0)
        kafka_props = ["-X", f"session.timeout.ms={SESSION_S * 1000:.0f}", "-X", "heartbeat.interval.ms=1000"]
        for writer in DBS:
            for i in (1, 2):
                args = ["run", "--config", str(self.configs[writer]), *kafka_props]
                if writer == "exclusive":
                    # The second of the pair runs with the default writer, `auto`, which is
                    # the exclusive writer here (no shared sink writes db 2): each takes over
                    # from the other.
                    args += ["--writer", "exclusive"] if i == 1 else []
                    args += ["--lease-ms", str(LEASE_MS)]
                elif writer == "mixed":
                    # A shared sink and one with the default writer, `auto`, in one group.
                    args += ["--writer", "shared"] if i == 1 else []
                    args += ["--lease-ms", str(LEASE_MS)]
                else:
                    args += ["--writer", writer]
                sup.add(f"{writer}-{i}", writer, args)
        production = Production(self.sv.bootstrap, self.topics, wl.records, self.profile.produce_s)
        self.t0 = time.monotonic()
        sup.t0 = self.t0
        sup.start()
        production.start()
        stop_killing = threading.Event()
        killer = threading.Thread(target=self.kill_loop, args=(sup, stop_killing), name="killer", daemon=True)
        killer.start()
        away: dict = {}
        away_thread = threading.Thread(target=self.shared_away, args=(sup, away), name="away", daemon=True)
        away_thread.start()
        for at, name in self.profile.faults:
            if name not in self.args.faults:
                continue
            time.sleep(max(0.0, at - self.elapsed()))
            self.fault(name)
        production.wait()
        log(f"produced {production.delivered} records in {self.elapsed():.0f} s")
        stop_killing.set()
        killer.join()
        away_thread.join()
        log(f"kills done at {self.elapsed():.0f} s; waiting for every group to commit the end of the log")
        converged = self.wait_converged()
        codes = sup.stop()
        self.report["sinks"] = {
            "kills": {w: sum(1 for k in sup.kills if k.writer == w) for w in DBS},
            "takeovers_s": [k.takeover_s for k in sup.kills if k.lease_holder],
            "kills_of_lease_holder": sum(1 for k in sup.kills if k.lease_holder),
            "clean_handovers": [asdict(h) for h in sup.stops],
            "started_from_snapshot": started_from_snapshot(self.logs),
            "unplanned_exits": [asdict(e) for e in sup.exits],
            "unplanned_exits_by_reason": exit_reasons(sup.exits),
            "starts": {s.name: s.starts for s in sup.slots},
            "exit_codes_at_stop": codes,
            "converged": converged,
        }
        refused = [e.slot for e in sup.exits if e.slot.startswith("mixed") and REFUSED in e.log_tail]
        away["exits_refused"] = refused
        away["gave_up_lines"] = log_lines(self.logs, "mixed-2", GIVES_UP)
        self.report["shared_away"] = away
        away_ok = (away.get("lease_taken_s") is not None and away.get("lease_given_up_s") is not None
                   and away["gave_up_lines"] > 0 and not refused)
        self.report["faults"] = self.faults
        self.report["produced"] = {"delivered": production.delivered, "failed": production.failed[:5]}
        # No sink ended on its own: one that cannot go on waits (for a service, a lease)
        # rather than exit into the supervisor's restart, a crash loop while the fault lasts.
        ok = (all(v is not None for v in converged.values()) and not production.failed
              and all(c == 0 for c in codes.values()) and away_ok and not sup.exits)
        # A clean handover: the holder stopped with 0 and a standby took the lease over.
        ok &= all(h.exit_code == 0 and h.takeover_s is not None for h in sup.stops)
        ok &= self.verify(production.poison)
        self.report["ok"] = ok
        self.report["wall_s"] = round(self.elapsed(), 1)
        return ok

    def wait_converged(self, timeout: float = 300.0) -> dict[str, float | None]:
        """When (seconds into the run) each writer's group had committed the end of every
        partition; `None` for a group still behind after `timeout`."""
        topics = list(self.topics.values())
        out: dict[str, float | None] = {}
        start = time.monotonic()
        for writer in DBS:
            group = f"{self.run_id}-{writer}"
            while (lag := lags(self.sv.bootstrap, group, topics, self.profile.partitions)) > 0:
                if time.monotonic() - start > timeout:
                    log(f"{writer}: still {lag} records behind after {timeout:.0f} s")
                    out[writer] = None
                    break
                time.sleep(1.0)
            else:
                out[writer] = round(self.elapsed(), 1)
        return out

    def verify(self, poison: dict) -> bool:
        """Replays the log into an empty database, compares both writers' databases with it
        and checks the dead-letter topics; records everything in the report."""
        log("replaying the log into an empty database (sink rebuild)")
        t = time.monotonic()
        r = subprocess.run([self.args.sink_bin, "rebuild", "--config", str(self.configs["replay"]),
                            "--staging-db", str(REPLAY_STAGING_DB), "--no-progress"],
                           env=sinks.environment({}), capture_output=True, text=True, timeout=600)
        (self.logs / "replay.log").write_text(r.stdout + r.stderr)
        if r.returncode != 0:
            log(f"sink rebuild failed ({r.returncode}):\n{r.stderr[-3000:]}")
            self.report["replay"] = {"exit_code": r.returncode}
            return False
        self.report["replay"] = {"exit_code": 0, "took_s": round(time.monotonic() - t, 1)}
        replay = compare.dump(self.sv.redis_url(REPLAY_DB))
        ok = True
        self.report["comparison"] = {}
        self.report["dead_letters"] = {}
        for writer, db in (*DBS.items(), ("replay", None)):
            if db is not None:
                run = compare.dump(self.sv.redis_url(db))
                result = compare.compare(run, replay)
                self.report["comparison"][writer] = {
                    "keys_replay": result.keys, "keys_compared": result.compared, "lost": len(result.lost),
                    "extra": len(result.extra), "different": len(result.different),
                    "examples": result.describe(run, replay)}
                ok &= result.ok
                log(f"{writer}: {result.compared} keys compared: {len(result.lost)} lost, "
                    f"{len(result.extra)} extra, {len(result.different)} different")
                for line in result.describe(run, replay):
                    log(f"  {line}")
            letters = compare.read_topic(self.sv.bootstrap, self.dlqs[writer])
            check = compare.check_dead_letters(letters, poison)
            self.report["dead_letters"][writer] = {
                "letters": check.letters, "poison": check.poison, "covered": check.covered,
                "headers_only": check.value_omitted,
                "missing": check.missing[:10], "not_poison": check.not_poison[:10], "altered": check.altered[:10]}
            ok &= check.ok
            log(f"{writer}: {check.letters} dead letters, {check.covered} of {check.poison} poison records "
                f"with their origin; missing {len(check.missing)}, not poison {len(check.not_poison)}, "
                f"altered {len(check.altered)}")
        return ok

    def close(self) -> None:
        if self.supervisor is not None and not self.supervisor.stopping:
            self.supervisor.stop(timeout=10)
        if self.args.keep:
            log(f"--keep: services left running (state {self.state})")
            return
        self.sv.stop()


def wait_for(check, timeout: float, every: float = 0.2) -> float | None:
    """Seconds until `check()` held (`None`: not within `timeout`)."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if check():
            return round(time.monotonic() - start, 1)
        time.sleep(every)
    return None


def not_for(check, seconds: float, every: float = 0.2) -> bool:
    """Whether `check()` stayed false for `seconds`."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if check():
            return False
        time.sleep(every)
    return True


def log_lines(logs: Path, slot: str, text: str) -> int:
    """Lines of slot `slot`'s log (every process it ran) that contain `text`."""
    path = logs / f"{slot}.log"
    if not path.exists():
        return 0
    return sum(1 for line in path.read_text(errors="replace").splitlines() if text in line)


def started_from_snapshot(logs: Path) -> int:
    """Exclusive sink starts whose bookkeeping came from a snapshot (their start-up line)."""
    plain = (re.sub(r"\x1b\[[0-9;]*m", "", line) for f in sorted(logs.glob("exclusive-*.log"))
             for line in f.read_text(errors="replace").splitlines())
    return sum(1 for line in plain if "bookkeeping loaded" in line and 'from="snapshot"' in line)


def exit_reasons(exits: list[sinks.Exit]) -> dict[str, int]:
    """Unplanned exits counted by the sink's error line (`sink: ...`), shortened to its kind."""
    out: dict[str, int] = {}
    for e in exits:
        errors = [line for line in e.log_tail.splitlines() if line.startswith("sink: ")]
        reason = errors[-1] if errors else f"exit {e.code} without an error line"
        for marker in (" is unreachable", "cannot start as the exclusive writer"):
            if marker in reason:
                reason = reason[: reason.index(marker) + len(marker)]
                break
        reason = reason.replace("redis://", "").split("/apis")[0][:160]
        out[reason] = out.get(reason, 0) + 1
    return out


def summary(report: dict) -> str:
    w = report.get("workload", {})
    s = report.get("sinks", {})
    lines = [f"fault suite, profile {report['profile']}, seed {report['seed']}, run {report['run']}: "
             f"{'PASS' if report.get('ok') else 'FAIL'} in {report.get('wall_s', '?')} s",
             f"  workload: {w.get('changes')} changes + {w.get('poison')} poison records on "
             f"{len(w.get('topics', []))} topics x {w.get('partitions')} partitions"]
    if s:
        lines.append(f"  kills (SIGKILL): {s['kills']}; of the exclusive lease holder: {s['kills_of_lease_holder']}, "
                     f"standby takeover in {s['takeovers_s']} s")
        handovers = s["clean_handovers"]
        lines.append(f"  clean handovers (SIGTERM of the lease holder): {len(handovers)}, exit codes "
                     f"{[h['exit_code'] for h in handovers]}, takeover in {[h['takeover_s'] for h in handovers]} s; "
                     f"exclusive starts from a snapshot: {s['started_from_snapshot']}")
        for h in handovers:
            if h.get("broker_down_until_s") is not None:
                exited = h["exited_at_s"]
                lines.append(f"  handover in the broker outage: SIGTERM at {h['at_s']:.1f} s, exited at "
                             f"{exited if exited is None else f'{exited:.1f}'} s, broker back at "
                             f"{h['broker_down_until_s']:.1f} s")
        lines.append(f"  unplanned exits (restarted by the supervisor): {len(s['unplanned_exits'])}")
        for reason, n in s["unplanned_exits_by_reason"].items():
            lines.append(f"    {n} x {reason}")
        lines.append(f"  exit codes at SIGTERM: {s['exit_codes_at_stop']}")
    away = report.get("shared_away")
    if away:
        lines.append(f"  mixed group: shared sink away at {away.get('away_at_s')} s; lease taken by auto after "
                     f"{away.get('lease_taken_s')} s; shared sink back at {away.get('back_at_s')} s; lease given up "
                     f"after {away.get('lease_given_up_s')} s ({away.get('gave_up_lines')} times in auto's log); "
                     f"exits refused: {away.get('exits_refused')}")
    for f in report.get("faults", []):
        lines.append(f"  fault {f['fault']} at {f['at_s']} s, took {f['took_s']} s")
    for writer, c in report.get("comparison", {}).items():
        lines.append(f"  {writer}: {c['keys_compared']} keys compared with the replay ({c['keys_replay']} there): "
                     f"{c['lost']} lost, {c['extra']} extra, {c['different']} different")
    for writer, d in report.get("dead_letters", {}).items():
        lines.append(f"  {writer} dead letters: {d['letters']} records; {d['covered']} of {d['poison']} poison records "
                     f"with their origin ({d['headers_only']} too large, sent headers only); "
                     f"{len(d['not_poison'])} valid records; {len(d['missing'])} missing")
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--profile", choices=sorted(PROFILES), default="short")
    p.add_argument("--seed", type=int, default=13)
    p.add_argument("--port-base", type=int, default=int(os.environ.get("FAULTS_PORT_BASE", 26100)))
    p.add_argument("--state", help="state directory (default /tmp/agent-context-faults-<port base>)")
    p.add_argument("--faults", default=",".join(FAULTS),
                   help=f"which of the profile's faults to run, comma-separated (default all: {','.join(FAULTS)})")
    p.add_argument("--report", help="write the report as JSON here (default <state>/report.json)")
    p.add_argument("--keep", action="store_true", help="leave the services running afterwards")
    p.add_argument("--sink-bin", default=os.environ.get("SINK_BIN") or
                   str(Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target")) / "debug" / "sink"))
    args = p.parse_args()
    args.faults = set(args.faults.split(",")) if args.faults else set()
    unknown = args.faults - set(FAULTS)
    if unknown:
        p.error(f"unknown faults {sorted(unknown)} (known: {', '.join(FAULTS)})")
    if not Path(args.sink_bin).is_file():
        p.error(f"no sink binary at {args.sink_bin} (build it, or set SINK_BIN / --sink-bin)")
    # SIGTERM (CI's timeout, a user's kill) stops the sinks and services like Ctrl-C does.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    suite = Suite(args)
    ok = False
    try:
        ok = suite.run()
    finally:
        suite.close()
        report_path = Path(args.report or suite.state / "report.json")
        report_path.write_text(json.dumps(suite.report, indent=2, default=str))
        print(summary(suite.report))
        print(f"report: {report_path}; sink logs: {suite.logs}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
