"""Read Debezium's Avro records straight from Kafka and decode them through the registry.

A test helper (and a small CLI) for looking at what Debezium really produced: each record's
Confluent wire-format header (magic byte 0 + 4-byte big-endian schema id), the decoded key
and value, headers and broker timestamp. It is independent of the sink, so e2e tests can
tell a Debezium/registry problem from a sink problem.

Needs `confluent-kafka` and `fastavro` (pip).

    python tests/e2e/dbz_probe.py --topic cdc.public.customers [--count N] [--timeout S]
        [--bootstrap 127.0.0.1:9092] [--registry URL]   (defaults: env KAFKA_BOOTSTRAP_SERVERS,
        SCHEMA_REGISTRY_URL, else `tests/stack/registry.sh url`)

prints one JSON object per record.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import struct
import subprocess
import sys
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

try:
    import fastavro
    from confluent_kafka import Consumer, KafkaError, KafkaException
except ImportError as e:  # pragma: no cover - environment problem, not a test result
    raise ImportError(f"dbz_probe needs confluent-kafka and fastavro (pip install confluent-kafka fastavro): {e}") from e

REPO = Path(__file__).resolve().parents[2]


def default_bootstrap() -> str:
    url = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if url:
        return url
    script = REPO / "tests" / "stack" / "kafka.sh"
    if script.exists():
        return subprocess.run(["bash", str(script), "url"], check=True, capture_output=True,
                              text=True).stdout.strip()
    return "127.0.0.1:9092"


def default_registry() -> str:
    url = os.environ.get("SCHEMA_REGISTRY_URL")
    if url:
        return url
    script = REPO / "tests" / "stack" / "registry.sh"
    if script.exists():
        return subprocess.run(["bash", str(script), "url"], check=True, capture_output=True,
                              text=True).stdout.strip()
    return "http://127.0.0.1:8081"


class WireFormatError(Exception):
    """A key or value that is not in the Confluent wire format."""


@dataclass
class Registry:
    """Schemas fetched by id (GET /schemas/ids/{id}), cached."""

    url: str
    _cache: dict[int, Any] = field(default_factory=dict)

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(self.url.rstrip("/") + path, timeout=10) as resp:
            return json.load(resp)

    def schema(self, schema_id: int) -> Any:
        if schema_id not in self._cache:
            raw = self.get(f"/schemas/ids/{schema_id}")["schema"]
            self._cache[schema_id] = fastavro.parse_schema(json.loads(raw))
        return self._cache[schema_id]

    def subjects(self) -> list[str]:
        return self.get("/subjects")

    def versions(self, subject: str) -> list[int]:
        return self.get(f"/subjects/{subject}/versions")

    def version(self, subject: str, version: int | str) -> dict:
        return self.get(f"/subjects/{subject}/versions/{version}")


def split_wire(data: bytes) -> tuple[int, bytes]:
    """(schema id, Avro body) of a Confluent wire-format payload."""
    if len(data) < 5:
        raise WireFormatError(f"{len(data)} bytes, shorter than the 5-byte header")
    if data[0] != 0:
        raise WireFormatError(f"magic byte {data[0]}, expected 0")
    return struct.unpack(">I", data[1:5])[0], data[5:]


def _jsonable(v: Any) -> Any:
    if isinstance(v, bytes):
        return base64.b64encode(v).decode()
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_jsonable(x) for x in v]
    return v


@dataclass
class Record:
    topic: str
    partition: int
    offset: int
    timestamp_type: int  # 1 = CreateTime, 2 = LogAppendTime
    timestamp_ms: int
    received_ms: float  # when this consumer got it (epoch ms)
    key_schema_id: int | None
    value_schema_id: int | None
    key: Any
    value: Any  # None for a tombstone
    headers: dict[str, str]
    raw_key: bytes | None
    raw_value: bytes | None

    @property
    def op(self) -> str | None:
        return None if self.value is None else self.value.get("op")

    def as_json(self) -> dict:
        d = {k: getattr(self, k) for k in (
            "topic", "partition", "offset", "timestamp_type", "timestamp_ms", "key_schema_id",
            "value_schema_id", "key", "value", "headers")}
        d["key_hex"] = self.raw_key.hex() if self.raw_key is not None else None
        d["value_hex"] = self.raw_value.hex() if self.raw_value is not None else None
        return _jsonable(d)


class Probe:
    """A consumer of one or more topics from the beginning (no group offsets committed)."""

    def __init__(self, topics: list[str], bootstrap: str | None = None,
                 registry: str | None = None):
        self.registry = Registry(registry or default_registry())
        self.topics = topics
        self.bootstrap = bootstrap or default_bootstrap()
        self.consumer = Consumer({
            "bootstrap.servers": self.bootstrap,
            "group.id": f"dbz-probe-{uuid.uuid4()}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "topic.metadata.refresh.interval.ms": 200,
            "fetch.wait.max.ms": 10,
            "allow.auto.create.topics": False,
            "reconnect.backoff.ms": 200,
            "reconnect.backoff.max.ms": 2000,
        })
        try:
            self.consumer.list_topics(timeout=10)
        except KafkaException as e:
            self.consumer.close()
            raise RuntimeError(f"kafka at {self.bootstrap} does not answer: {e}") from e
        self.consumer.subscribe(topics)
        # A topic that appears after subscribe() causes a rebalance, and without committed
        # offsets the partitions already read restart from the beginning: skip what was seen.
        self._seen: set[tuple[str, int, int]] = set()

    def close(self) -> None:
        self.consumer.close()

    def __enter__(self) -> "Probe":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def decode(self, msg: Any) -> Record:
        received = time.time() * 1000
        key = value = None
        kid = vid = None
        if msg.key() is not None:
            kid, body = split_wire(msg.key())
            key = fastavro.schemaless_reader(io.BytesIO(body), self.registry.schema(kid))
        if msg.value() is not None:
            vid, body = split_wire(msg.value())
            value = fastavro.schemaless_reader(io.BytesIO(body), self.registry.schema(vid))
        ts_type, ts = msg.timestamp()
        headers = {k: (v.decode(errors="replace") if v is not None else None)
                   for k, v in (msg.headers() or [])}
        return Record(msg.topic(), msg.partition(), msg.offset(), ts_type, ts, received, kid, vid,
                      key, value, headers, msg.key(), msg.value())

    def poll(self, timeout_s: float) -> Record | None:
        msg = self.consumer.poll(timeout_s)
        if msg is None:
            return None
        err = msg.error()
        if err is not None:
            if err.code() in (KafkaError._PARTITION_EOF, KafkaError.UNKNOWN_TOPIC_OR_PART):
                return None
            raise RuntimeError(f"kafka: {err}")
        pos = (msg.topic(), msg.partition(), msg.offset())
        if pos in self._seen:
            return None
        self._seen.add(pos)
        return self.decode(msg)

    def take(self, count: int, timeout_s: float = 30.0) -> list[Record]:
        """Exactly `count` records (in arrival order), or fail after the timeout."""
        out: list[Record] = []
        deadline = time.monotonic() + timeout_s
        while len(out) < count:
            left = deadline - time.monotonic()
            if left <= 0:
                got = [(r.topic, r.offset, r.op) for r in out]
                raise TimeoutError(f"wanted {count} records from {self.topics} in {timeout_s}s, "
                                   f"got {len(out)}: {got}")
            rec = self.poll(min(left, 0.5))
            if rec is not None:
                out.append(rec)
        return out

    def drain(self, quiet_s: float = 1.0) -> list[Record]:
        """Whatever arrives until nothing came for `quiet_s`."""
        out: list[Record] = []
        while True:
            rec = self.poll(quiet_s)
            if rec is None:
                return out
            out.append(rec)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--topic", action="append", required=True)
    ap.add_argument("--count", type=int, help="stop after N records (fail if fewer arrive)")
    ap.add_argument("--timeout", type=float, default=30.0)
    ap.add_argument("--bootstrap", default=None)
    ap.add_argument("--registry", default=None)
    a = ap.parse_args()
    with Probe(a.topic, a.bootstrap, a.registry) as p:
        recs = p.take(a.count, a.timeout) if a.count else p.drain(min(a.timeout, 3.0))
        for r in recs:
            print(json.dumps(r.as_json(), default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
