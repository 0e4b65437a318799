"""docker/ (compose file, images, connector config) checked against what the tests run.

No Docker engine here, so nothing is started: the compose file is parsed and its services,
ports, environment and wiring are checked; docker/connect/pg-avro.json must equal the local
stack's connector properties (tests/stack/connect/connector.properties, converters from
worker.properties) except for the differences documented in DOCKER_ONLY / LOCAL_ONLY /
DIFFERENT below; the build image must be new enough for the locked dependencies. The
monitoring files (Prometheus scrape config, Grafana provisioning and dashboard) must parse,
be mounted where the services read them, and query only metrics the sink exports
(sink/src/telemetry/mod.rs).
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
DOCKER = REPO / "docker"
STACK_CONNECT = REPO / "tests" / "stack" / "connect"
TELEMETRY = REPO / "sink" / "src" / "telemetry" / "mod.rs"
DASHBOARD = DOCKER / "grafana" / "dashboards" / "sink.json"

# Properties whose values legitimately differ, and why.
DIFFERENT = {
    "database.hostname": "compose service name `postgres` instead of 127.0.0.1",
    "database.port": "the container's 5432; locally PGPORT (@PGPORT@)",
    "database.dbname": "fixed `agent_context`; locally one database per test (@DBNAME@)",
    "slot.name": "fixed; locally dbz_<database> (@DBNAME@)",
    "poll.interval.ms": "fixed 20; locally CONNECT_POLL_INTERVAL_MS (@POLL_INTERVAL_MS@, default 20)",
}
# Only in pg-avro.json: the converters, which the local stack sets on the worker
# (worker.properties), and what only the docker image's newer converter supports.
DOCKER_ONLY = {
    "key.converter": "worker.properties",
    "value.converter": "worker.properties",
    "key.converter.schema.registry.url": "worker.properties (http://schema-registry:8081 vs the local registry)",
    "value.converter.schema.registry.url": "worker.properties",
    # Confluent's AvroConverter >= 7.3 (the image installs 7.7.1) writes a NULL column that has a
    # DEFAULT as null instead of the default; the local stack's 7.0.16 has no such option (see
    # test_e2e_changes.py::test_null_in_column_with_default).
    "key.converter.ignore.default.for.nullables": "converter >= 7.3 only",
    "value.converter.ignore.default.for.nullables": "converter >= 7.3 only",
}
LOCAL_ONLY: dict[str, str] = {}


def compose() -> dict:
    return yaml.safe_load((DOCKER / "compose.yaml").read_text())


def properties(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        k, _, v = line.partition("=")
        out[k.strip()] = v.strip()
    return out


def env(service: dict) -> dict[str, str]:
    e = service.get("environment", {})
    if isinstance(e, list):
        e = dict(x.split("=", 1) for x in e)
    return {k: str(v) for k, v in e.items()}


def published(service: dict) -> dict[int, int]:
    """container port -> host port."""
    out = {}
    for p in service.get("ports", []):
        host, _, container = str(p).rpartition(":")
        out[int(container)] = int(host.rpartition(":")[2])
    return out


def healthy_deps(service: dict) -> set[str]:
    deps = service.get("depends_on", {})
    if isinstance(deps, list):
        return set()
    return {k for k, v in deps.items() if (v or {}).get("condition") == "service_healthy"}


def test_services_and_ports():
    c = compose()
    s = c["services"]
    assert set(s) == {"postgres", "kafka", "schema-registry", "connect", "connect-init", "redis", "sink",
                      "agent-cli", "prometheus", "grafana"}, sorted(s)
    assert published(s["postgres"]) == {5432: 5432}
    assert published(s["schema-registry"]) == {8081: 8081}
    assert published(s["connect"]) == {8083: 8083}
    assert published(s["redis"]) == {6379: 6379}
    for name in ("postgres", "kafka", "schema-registry", "connect"):
        assert "healthcheck" in s[name], f"{name} needs a healthcheck (others wait for service_healthy)"
    assert s["agent-cli"].get("profiles") == ["cli"], "agent-cli is run on demand (docker compose run)"


def test_postgres_logical_wal_and_seed():
    s = compose()["services"]["postgres"]
    cmd = " ".join(s["command"])
    assert "wal_level=logical" in cmd
    m = re.search(r"max_replication_slots=(\d+)", cmd)
    assert m and int(m.group(1)) >= 1
    mounts = s["volumes"]
    # Bind-mount sources are relative to the compose file's directory (docker/).
    seeds = [(DOCKER / v.split(":")[0]).resolve() for v in mounts
             if v.split(":")[1].startswith("/docker-entrypoint-initdb.d/")]
    assert seeds == [(STACK_CONNECT / "seed.sql").resolve()], \
        f"postgres must be seeded with the local stack's seed (tests/stack/connect/seed.sql): {mounts}"
    assert seeds[0].is_file(), seeds


def test_kafka_listeners_consistent():
    s = compose()["services"]["kafka"]
    e = env(s)
    listeners = dict(re.match(r"(\w+)://(.*):(\d+)$", x).group(1, 3) for x in e["KAFKA_LISTENERS"].split(","))
    advertised = {m.group(1): (m.group(2), int(m.group(3))) for m in
                  (re.match(r"(\w+)://(.*):(\d+)$", x) for x in e["KAFKA_ADVERTISED_LISTENERS"].split(","))}
    protocols = dict(x.split(":") for x in e["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
    assert set(listeners) <= set(protocols), (listeners, protocols)
    assert e["KAFKA_CONTROLLER_LISTENER_NAMES"] in listeners
    assert set(advertised) <= set(listeners) and e["KAFKA_CONTROLLER_LISTENER_NAMES"] not in advertised
    assert advertised["PLAINTEXT"] == ("kafka", int(listeners["PLAINTEXT"])), "in-network clients use kafka:9092"
    host_name, host_port = advertised["HOST"]
    assert published(s) == {int(listeners["HOST"]): host_port}, "the HOST listener is the published port"
    assert e["KAFKA_CONTROLLER_QUORUM_VOTERS"] == f"{e['KAFKA_NODE_ID']}@kafka:{listeners['CONTROLLER']}"
    assert e["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == "1"


def test_wiring_between_services():
    s = compose()["services"]
    kafka_internal = "kafka:9092"
    registry = "http://schema-registry:8081"
    assert env(s["schema-registry"])["SCHEMA_REGISTRY_KAFKASTORE_BOOTSTRAP_SERVERS"].endswith(kafka_internal)
    ce = env(s["connect"])
    assert ce["BOOTSTRAP_SERVERS"] == kafka_internal
    assert ce["CONNECT_KEY_CONVERTER_SCHEMA_REGISTRY_URL"] == registry
    assert ce["CONNECT_VALUE_CONVERTER_SCHEMA_REGISTRY_URL"] == registry
    assert {"kafka", "schema-registry", "postgres"} <= healthy_deps(s["connect"])
    init = s["connect-init"]
    assert "connect" in healthy_deps(init)
    assert any(v.startswith("./connect/pg-avro.json:") for v in init["volumes"])
    assert re.search(r"PUT .*http://connect:8083/connectors/[\w-]+/config", " ".join(init["command"]))
    se = env(s["sink"])
    assert se["KAFKA_BOOTSTRAP_SERVERS"] == kafka_internal
    assert se["SCHEMA_REGISTRY_URL"] == registry, "Confluent Schema Registry serves its API at the root"
    assert se["REDIS_URL"] == "redis://redis:6379"
    assert se["SINK_WRITER"] in ("auto", "shared", "exclusive"), "a value `sink run --writer` accepts"
    assert s["sink"]["command"][:2] == ["sink", "run"] and "/etc/agent-context/connectors.yaml" in s["sink"]["command"]
    assert {"kafka", "schema-registry"} <= healthy_deps(s["sink"])
    ae = env(s["agent-cli"])
    assert ae["REDIS_URL"] == "redis://redis:6379"
    assert s["agent-cli"]["entrypoint"][:3] == ["agent-cli", "--config", "/etc/agent-context/connectors.yaml"]
    for svc in ("sink", "agent-cli"):
        assert s[svc]["build"] == {"context": "..", "dockerfile": "docker/Dockerfile"}
    pg = env(s["postgres"])
    conn = json.loads((DOCKER / "connect" / "pg-avro.json").read_text())
    assert conn["database.hostname"] == "postgres" and conn["database.port"] == "5432"
    assert conn["database.dbname"] == pg.get("POSTGRES_DB", pg.get("POSTGRES_USER", "postgres"))
    assert conn["database.user"] == pg.get("POSTGRES_USER", "postgres")
    assert conn["database.password"] == pg["POSTGRES_PASSWORD"]
    assert conn["key.converter.schema.registry.url"] == conn["value.converter.schema.registry.url"] == registry


def test_images_build_what_compose_runs():
    df = (DOCKER / "Dockerfile").read_text()
    assert re.search(r"COPY --from=build .*/release/sink .*/release/agent-cli /usr/local/bin/", df)
    assert "COPY connectors.yaml /etc/agent-context/connectors.yaml" in df
    assert "--locked" in df
    cdf = (DOCKER / "connect" / "Dockerfile").read_text()
    image = re.search(r"^FROM quay.io/debezium/connect:(\S+)", cdf, re.M).group(1)
    pom = (STACK_CONNECT / "pom.xml").read_text()
    local = re.search(r"<debezium.version>(.+)</debezium.version>", pom).group(1)
    assert image == local, f"docker runs Debezium {image}, the tests record {local}"
    version = re.search(r"ARG CONFLUENT_VERSION=(\d+)\.(\d+)", cdf)
    assert version and (int(version.group(1)), int(version.group(2))) >= (7, 3), \
        "ignore.default.for.nullables needs Confluent's AvroConverter 7.3 or newer"


def test_build_image_rust_is_new_enough():
    df = (DOCKER / "Dockerfile").read_text()
    m = re.search(r"^FROM rust:(\d+)\.(\d+)", df, re.M)
    assert m, "pin the rust image's minor version"
    image = (int(m.group(1)), int(m.group(2)))
    meta = subprocess.run(["cargo", "metadata", "--format-version", "1", "--locked"], cwd=REPO,
                          capture_output=True, text=True)
    assert meta.returncode == 0, meta.stderr
    needs = []
    for p in json.loads(meta.stdout)["packages"]:
        rv = p.get("rust_version")
        if rv:
            needs.append((tuple(int(x) for x in rv.split(".")[:2]), f"{p['name']} {p['version']}"))
    worst = max(needs)
    assert image >= worst[0], f"rust:{image[0]}.{image[1]} is older than {worst[1]}'s rust-version {worst[0]}"


def test_connector_config_matches_the_tests():
    docker = json.loads((DOCKER / "connect" / "pg-avro.json").read_text())
    local = properties(STACK_CONNECT / "connector.properties")
    worker = properties(STACK_CONNECT / "worker.properties")
    problems = []
    for k in sorted(set(docker) | set(local)):
        if k in DIFFERENT:
            if k not in docker or k not in local:
                problems.append(f"{k}: documented as different but missing on one side")
            continue
        if k in DOCKER_ONLY:
            if k in local:
                problems.append(f"{k}: documented as docker-only but connector.properties sets it")
            continue
        if k in LOCAL_ONLY:
            continue
        if k not in docker:
            problems.append(f"{k}={local[k]} in connector.properties, missing in pg-avro.json")
        elif k not in local:
            problems.append(f"{k}={docker[k]} in pg-avro.json, missing in connector.properties")
        elif docker[k] != local[k]:
            problems.append(f"{k}: pg-avro.json {docker[k]!r} != connector.properties {local[k]!r}")
    # The converters are the worker's locally: same classes.
    for side in ("key", "value"):
        if docker[f"{side}.converter"] != worker[f"{side}.converter"]:
            problems.append(f"{side}.converter: {docker[f'{side}.converter']} vs worker {worker[f'{side}.converter']}")
    assert docker["poll.interval.ms"] == "20"
    assert not problems, "\n".join(problems)


def test_topics_match_the_default_mapping():
    docker = json.loads((DOCKER / "connect" / "pg-avro.json").read_text())
    cfg = yaml.safe_load((REPO / "connectors.yaml").read_text())
    tables = {t.strip() for t in docker["table.include.list"].split(",")}
    for m in cfg["mappings"]:
        prefix, schema, table = m["topic"].split(".")
        assert prefix == docker["topic.prefix"], m["topic"]
        assert f"{schema}.{table}" in tables, m["topic"]


def exported_metrics() -> tuple[set[str], set[str]]:
    """The metric names the sink exports (constants of sink/src/telemetry/mod.rs), and which of
    them are histograms."""
    source = TELEMETRY.read_text()
    consts = dict(re.findall(r'pub const (\w+): &str = "(\w+)";', source))
    histograms = {consts[c] for c in re.findall(r"describe_histogram!\(\s*(\w+)", source)}
    assert consts and histograms <= set(consts.values()), (consts, histograms)
    return set(consts.values()), histograms


def mounts(service: dict) -> dict[str, Path]:
    """container path -> host path (relative to docker/) of the bind mounts."""
    out = {}
    for v in service.get("volumes", []):
        host, container = v.split(":")[:2]
        out[container] = (DOCKER / host).resolve()
    return out


def metrics_port(sink: dict) -> int:
    command = sink["command"]
    addr = command[command.index("--metrics-addr") + 1]
    host, _, port = addr.rpartition(":")
    assert host == "0.0.0.0", f"in a container the endpoint must listen on every interface: {addr}"
    return int(port)


def test_sink_serves_metrics_and_prometheus_scrapes_it():
    s = compose()["services"]
    port = metrics_port(s["sink"])
    assert published(s["sink"]) == {port: port}
    prom = s["prometheus"]
    config_file = prom["command"][0].removeprefix("--config.file=")
    host_file = mounts(prom)[config_file]
    assert host_file.is_file(), host_file
    config = yaml.safe_load(host_file.read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    sink_job = jobs["sink"]
    assert sink_job.get("metrics_path", "/metrics") == "/metrics"
    targets = [t for sc in sink_job["static_configs"] for t in sc["targets"]]
    assert targets == [f"sink:{port}"], targets
    assert published(prom) == {9090: 9090}


def test_grafana_provisions_the_datasource_and_the_dashboard():
    s = compose()["services"]
    grafana = s["grafana"]
    m = mounts(grafana)
    provisioning = m["/etc/grafana/provisioning"]
    assert provisioning.is_dir(), provisioning
    datasources = [d for f in sorted((provisioning / "datasources").glob("*.yaml"))
                   for d in yaml.safe_load(f.read_text())["datasources"]]
    assert [d["url"] for d in datasources] == [f"http://prometheus:{next(iter(published(s['prometheus'])))}"]
    uid = datasources[0]["uid"]
    providers = [p for f in sorted((provisioning / "dashboards").glob("*.yaml"))
                 for p in yaml.safe_load(f.read_text())["providers"]]
    assert len(providers) == 1
    dashboards_dir = providers[0]["options"]["path"]
    assert m[dashboards_dir] == DASHBOARD.parent.resolve(), "the provider reads the mounted dashboards"
    home = env(grafana)["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == f"{dashboards_dir}/{DASHBOARD.name}"
    dashboard = json.loads(DASHBOARD.read_text())
    panels = dashboard["panels"]
    assert len({p["id"] for p in panels}) == len(panels), "panel ids are unique"
    for p in panels:
        assert p["datasource"]["uid"] == uid, p["title"]
        assert all(t["datasource"]["uid"] == uid for t in p["targets"]), p["title"]
        assert set(p["gridPos"]) == {"x", "y", "w", "h"}, p["title"]


def test_dashboard_queries_only_exported_metrics():
    exported, histograms = exported_metrics()
    allowed = exported | {f"{h}_{suffix}" for h in histograms for suffix in ("bucket", "sum", "count")}
    exprs = [t["expr"] for p in json.loads(DASHBOARD.read_text())["panels"] for t in p["targets"]]
    assert exprs
    used = set()
    for expr in exprs:
        assert expr.count("(") == expr.count(")"), expr
        for name in re.findall(r"\bsink_\w+", expr):
            assert name in allowed, f"{name} in {expr!r} is not a metric the sink exports"
            used.add(re.sub(r"_(bucket|sum|count)$", "", name) if name not in exported else name)
        # Histograms are queried through their buckets, sum or count, never by the bare name.
        for h in histograms:
            assert not re.search(rf"\b{h}\b(?!_)", expr), expr
    assert used == exported, f"metrics without a panel: {sorted(exported - used)}"


def test_readme_documents_every_metric():
    exported, _ = exported_metrics()
    readme = (REPO / "README.md").read_text()
    missing = sorted(m for m in exported if f"`{m}" not in readme)
    assert not missing, f"README.md does not document {missing}"
