"""The verdicts: a Redis database compared key by key with the clean replay's, and the
dead-letter topic compared with the poison records that were produced.

Every key of both databases is read with its type and whole value (strings, hashes, sorted sets
with scores, sets, lists). TTLs are not compared. What legitimately differs between a sink that
was killed and restarted and one that ran once is left out, and only that:
- `sink:freshness:{mapping}`: `applied_count` counts redelivered changes again, and
  `applied_at_ms`, `caught_up_at_ms` are wall-clock times; `source_ts_ms` is compared;
- `sink:writer:{mapping}` (an exclusive sink's lease, gone after a clean stop),
  `sink:rebuild` (written only by the replay, which is a rebuild) and `sink:offsets:run`
  (the `run_id` of the Redis server process under which each partition's offset was marked
  whole, and the fencing token of the partition's last assignment: properties of the server's
  life and of the group's rebalances, not of the data).

Everything else is compared strictly, the bookkeeping included: row positions, the claim/release
positions in `sink:index:{mapping}:{index}` (once a known finding counted apart; closed by the
writers' marker guard, RELIABILITY.md *Findings*), offsets and column types.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import redis
from confluent_kafka import Consumer, TopicPartition

VOLATILE_FRESHNESS_FIELDS = {"applied_count", "applied_at_ms", "caught_up_at_ms"}


def ignored(key: str) -> bool:
    # Who writes (leases, shared sinks' announcements), how the state was made (rebuild,
    # markers), and a stopped exclusive writer's copy of its bookkeeping for the next one
    # (README, "Writers"): not the state.
    return key.startswith(("sink:writer:", "sink:shared:", "sink:snapshot:")) or key in ("sink:rebuild", "sink:offsets:run")


def dump(url: str) -> dict[str, tuple[str, Any]]:
    """Every key of the database at `url`: key -> (type, value)."""
    r = redis.Redis.from_url(url, decode_responses=False)
    out: dict[str, tuple[str, Any]] = {}
    for raw in r.scan_iter(count=1000):
        key = raw.decode()
        if ignored(key):
            continue
        kind = r.type(raw).decode()
        if kind == "string":
            value: Any = r.get(raw)
        elif kind == "hash":
            value = r.hgetall(raw)
            if key.startswith("sink:freshness:"):
                value = {k: v for k, v in value.items() if k.decode() not in VOLATILE_FRESHNESS_FIELDS}
        elif kind == "zset":
            value = r.zrange(raw, 0, -1, withscores=True)
        elif kind == "set":
            value = sorted(r.smembers(raw))
        elif kind == "list":
            value = r.lrange(raw, 0, -1)
        else:  # expired meanwhile ("none") or a type the sink never writes
            value = kind
        out[key] = (kind, value)
    return out


@dataclass
class Comparison:
    keys: int  # keys of the replay
    compared: int  # keys of the union
    lost: list[str] = field(default_factory=list)  # in the replay only
    extra: list[str] = field(default_factory=list)  # in the run only
    different: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.lost or self.extra or self.different)

    def describe(self, run: dict, replay: dict, limit: int = 10) -> list[str]:
        lines = []
        for name, keys in (("lost", self.lost), ("extra", self.extra), ("different", self.different)):
            for key in keys[:limit]:
                a, b = run.get(key), replay.get(key)
                if a and b and a[0] == b[0] == "hash":
                    lines.append(f"{name}: {key}: hash fields (run / replay): {_hash_diff(a[1], b[1])}")
                else:
                    lines.append(f"{name}: {key}: run={_short(a)} replay={_short(b)}")
        return lines


def _hash_diff(run: dict, replay: dict, limit: int = 8) -> str:
    fields = sorted(f for f in set(run) | set(replay) if run.get(f) != replay.get(f))
    shown = [f"{f.decode(errors='replace')}: {run.get(f)} / {replay.get(f)}" for f in fields[:limit]]
    more = f" (+{len(fields) - limit} more)" if len(fields) > limit else ""
    return f"{len(fields)} differ: " + "; ".join(shown) + more


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 300 else text[:300] + "..."


def compare(run: dict, replay: dict) -> Comparison:
    result = Comparison(keys=len(replay), compared=len(set(run) | set(replay)))
    for key in sorted(set(run) | set(replay)):
        if key not in run:
            result.lost.append(key)
        elif key not in replay:
            result.extra.append(key)
        elif run[key] != replay[key]:
            result.different.append(key)
    return result


@dataclass
class Letter:
    topic: str
    partition: int
    offset: int
    value: bytes | None
    error: str
    original_size: int | None  # `dlq.original.size` of a headers-only letter (`dlq.truncated`)


def read_topic(bootstrap: str, topic: str) -> list[Letter]:
    """Every record of the dead-letter topic `topic` (all partitions), with its `dlq.*` headers."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "faults-dlq-reader", "enable.auto.commit": False,
                  "log_level": 2,
                  "fetch.message.max.bytes": 2_000_000})
    try:
        md = c.list_topics(topic, timeout=10).topics.get(topic)
        if md is None or md.error is not None:
            return []
        ends = {}
        for p in md.partitions:
            lo, hi = c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            if hi > lo:
                ends[p] = hi
        c.assign([TopicPartition(topic, p, 0) for p in ends])
        out: list[Letter] = []
        seen = {p: 0 for p in ends}
        while any(seen[p] < ends[p] for p in ends):
            m = c.poll(1.0)
            if m is None or m.error() is not None:
                continue
            seen[m.partition()] = m.offset() + 1
            headers = {k: (v or b"").decode(errors="replace") for k, v in (m.headers() or [])}
            out.append(Letter(headers.get("dlq.topic", "?"), int(headers.get("dlq.partition", -1)),
                              int(headers.get("dlq.offset", -1)), m.value(), headers.get("dlq.error", ""),
                              int(headers["dlq.original.size"]) if headers.get("dlq.truncated") == "true" else None))
        return out
    finally:
        c.close()


@dataclass
class DeadLetterCheck:
    letters: int  # records in the dead-letter topic (a poison record may be there twice)
    poison: int  # poison records produced
    covered: int  # poison records found, byte for byte, with their origin
    missing: list[str] = field(default_factory=list)
    not_poison: list[str] = field(default_factory=list)  # valid records dead-lettered
    altered: list[str] = field(default_factory=list)  # origin right, bytes not
    value_omitted: int = 0  # letters too large for the topic, sent headers only

    @property
    def ok(self) -> bool:
        return not (self.missing or self.not_poison or self.altered) and self.covered == self.poison


def check_dead_letters(letters: list[Letter], poison: dict[tuple[str, int, int], tuple[str, bytes]]) -> DeadLetterCheck:
    """`poison`: origin (topic, partition, offset) -> (kind, value bytes) of every poison record."""
    check = DeadLetterCheck(letters=len(letters), poison=len(poison), covered=0)
    found = set()
    for letter in letters:
        origin = (letter.topic, letter.partition, letter.offset)
        if origin not in poison:
            check.not_poison.append(f"{origin}: {letter.error}")
        elif letter.original_size is not None and letter.value is None:
            # Too large for the dead-letter topic: sent headers only, with the record's size
            # (key, value and headers: at least the value).
            if letter.original_size < len(poison[origin][1]):
                check.altered.append(f"{origin} ({poison[origin][0]}): original size {letter.original_size}")
            else:
                check.value_omitted += 1
                found.add(origin)
        elif letter.value != poison[origin][1]:
            check.altered.append(f"{origin} ({poison[origin][0]})")
        else:
            found.add(origin)
    check.covered = len(found)
    check.missing = [f"{o} ({poison[o][0]})" for o in sorted(set(poison) - found)]
    return check
