"""tests/stack/kafka.sh's JVM profiles: which options the broker would start with.

Latency benchmarks run the broker as Kafka's own start scripts do (`production`); the tests
and CI keep the fast-start options. Nothing is started here: `kafka.sh jvm-opts` prints the
options `kafka.sh start` passes to the JVM.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

KAFKA_SH = Path(__file__).resolve().parents[1] / "stack" / "kafka.sh"
OVERRIDES = ("KAFKA_JVM_PROFILE", "KAFKA_HEAP_OPTS", "KAFKA_JVM_OPTS")


def jvm_opts(**env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in OVERRIDES}
    return subprocess.run(
        ["bash", str(KAFKA_SH), "jvm-opts"],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_default_profile_starts_fast():
    run = jvm_opts()
    assert run.returncode == 0, run.stderr
    opts = run.stdout.split()
    assert "-XX:TieredStopAtLevel=1" in opts
    assert "-XX:+UseSerialGC" in opts


def test_the_production_profile_is_kafkas_own():
    run = jvm_opts(KAFKA_JVM_PROFILE="production")
    assert run.returncode == 0, run.stderr
    opts = run.stdout.split()
    # kafka-server-start.sh's heap, kafka-run-class.sh's KAFKA_JVM_PERFORMANCE_OPTS.
    for opt in (
        "-Xms1g",
        "-Xmx1g",
        "-server",
        "-XX:+UseG1GC",
        "-XX:MaxGCPauseMillis=20",
        "-XX:InitiatingHeapOccupancyPercent=35",
        "-XX:+ExplicitGCInvokesConcurrent",
    ):
        assert opt in opts, f"{opt} missing from {opts}"
    assert not any(o.startswith("-XX:TieredStopAtLevel") for o in opts)


def test_explicit_options_win_over_the_profile():
    run = jvm_opts(KAFKA_JVM_PROFILE="production", KAFKA_JVM_OPTS="-XX:+UseZGC")
    assert run.returncode == 0, run.stderr
    opts = run.stdout.split()
    assert "-XX:+UseZGC" in opts
    assert "-XX:+UseG1GC" not in opts
    assert "-Xmx1g" in opts


def test_an_unknown_profile_is_refused_by_name():
    run = jvm_opts(KAFKA_JVM_PROFILE="turbo")
    assert run.returncode == 2
    assert "KAFKA_JVM_PROFILE" in run.stderr and "turbo" in run.stderr
    assert run.stdout == ""
