"""The source watermark's own lag (BENCHMARKS.md, "Source watermark lag"): for single-row
commits, the time from the commit to (a) the row being visible in Redis and (b) the source
watermark (`sink:watermark:cdc`) covering the commit's LSN, i.e. when `--after-lsn` answers.
Runs the whole pipeline of tests/e2e/harness.py (PostgreSQL -> Debezium -> Kafka -> sink ->
Redis) at the stack's heartbeat settings (heartbeat.interval.ms=1000,
offset.flush.interval.ms=1000, poll.interval.ms=20).

    python tests/e2e/watermark_bench.py [SAMPLES]
"""

from __future__ import annotations

import random
import statistics
import sys
import time

import redis as redis_lib

from harness import Pipeline


def summary(values: list[float]) -> str:
    values = sorted(values)
    p = lambda q: values[min(len(values) - 1, int(q * len(values)))]  # noqa: E731
    return (f"n={len(values)} min={values[0]:.0f} p50={statistics.median(values):.0f} "
            f"p90={p(0.9):.0f} max={values[-1]:.0f} ms")


def main(samples: int) -> None:
    with Pipeline("watermark_bench", watermark=True) as p:
        r = redis_lib.Redis.from_url(p.db.url, decode_responses=True)
        deadline = time.monotonic() + 60
        while not r.hget("sink:watermark:cdc", "lsn"):
            assert time.monotonic() < deadline, "no watermark within 60 s"
            time.sleep(0.05)
        to_row, to_watermark = [], []
        for i in range(samples):
            time.sleep(random.uniform(0.2, 1.2))  # commits at random phases of the heartbeat
            plan = f"bench-{i}"
            p.execute("UPDATE customers SET plan = %s WHERE id = 1", (plan,))
            t0 = time.monotonic()
            lsn_text = p.sc.query("SELECT pg_current_wal_lsn()::text")[0][0]
            hi, lo = lsn_text.split("/")
            lsn = (int(hi, 16) << 32) | int(lo, 16)
            row_at = wm_at = None
            while row_at is None or wm_at is None:
                now = time.monotonic()
                if row_at is None and r.hget("customer:1", "plan") == plan:
                    row_at = now
                if wm_at is None and int(r.hget("sink:watermark:cdc", "lsn") or 0) >= lsn:
                    wm_at = now
                assert now - t0 < 30, f"sample {i}: not visible within 30 s"
                time.sleep(0.002)
            to_row.append((row_at - t0) * 1000)
            to_watermark.append((wm_at - t0) * 1000)
        print(f"commit -> row in Redis:        {summary(to_row)}")
        print(f"commit -> watermark covers it: {summary(to_watermark)}")
        lags = []
        for _ in range(20):
            out = p.tool("get_customer", {"customer_id": 1})
            lags.append(out["freshness"]["lag_ms"])
            time.sleep(0.25)
        print(f"idle lag_ms reported by agent-cli: {summary(lags)}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 30)
