"""A tiny run of the freshness benchmark (tests/e2e/freshness_bench.py): 10 single-row commits
at Debezium poll.interval.ms=20 must each be visible in Redis, with either writer, with the change record's broker
append time between commit and visibility, and the median well under a second. The real
figures come from the benchmark itself (BENCHMARKS.md)."""

from __future__ import annotations

import pytest

from freshness_bench import run_one


@pytest.mark.parametrize("writer", ["shared", "exclusive"])
def test_freshness_smoke(writer):
    res = run_one(20, writer, samples=10, agent_cli_every=5, log=print)
    assert res["commit_to_redis"]["n"] == 10
    assert res["commit_to_broker"]["min"] > -5, f"broker append before the commit? {res}"  # same clock, ms
    assert res["broker_to_redis"]["min"] >= 0, res
    assert res["commit_to_redis"]["p50"] < 1000, res
    assert res["agent_cli_process"]["n"] == 2, res
