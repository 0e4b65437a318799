"""The schema registry started by tests/stack/registry.sh, checked through its Confluent API.

The module starts its own, private registry instance (same script, free ports, a temporary
state directory) so that it sees a fresh registry, as Debezium did when the reference in
/work/shared/reference/debezium/ was recorded, and so that it never disturbs the shared
instance the end-to-end tests use. It calls exactly what Debezium's AvroConverter and our
sink call, with the real Debezium schemas:

* ``POST /subjects/{subject}/versions?normalize=false`` with ``{"schema": "<avro json>"}``
  -> ``{"id": N}``; ids global and deduplicated across subjects;
* ``GET /schemas/ids/{id}`` -> ``{"schema": "..."}`` with Debezium's ``connect.*``
  attributes intact (the sink recognises logical types by them);
* subjects, versions, latest, config and the Confluent error bodies.
"""

from __future__ import annotations

import copy
import json
import os
import socket
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
SCRIPT = REPO / "tests" / "stack" / "registry.sh"
REFERENCE = Path(
    os.environ.get("DEBEZIUM_REFERENCE_DIR", "/work/shared/reference/debezium")
) / "schemas"
# Fallback: the repository's copy of the reference schemas, so the test does not depend on
# /work/shared existing on every machine.
LOCAL_REFERENCE = REPO / "schemas" / "debezium"

CONFLUENT_JSON = "application/vnd.schemaregistry.v1+json"

# (file stem, subject, id Debezium got on a fresh Confluent-API registry)
REFERENCE_SCHEMAS = [
    ("cdc.public.customers-key.v1.id1", "cdc.public.customers-key", 1),
    ("cdc.public.customers-value.v1.id2", "cdc.public.customers-value", 2),
    ("cdc.public.orders-key.v1.id3", "cdc.public.orders-key", 3),
    ("cdc.public.orders-value.v1.id4", "cdc.public.orders-value", 4),
]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def load_reference(stem: str) -> dict:
    for base in (REFERENCE, LOCAL_REFERENCE):
        path = base / f"{stem}.json"
        if path.is_file():
            return json.loads(path.read_text())
    raise FileNotFoundError(
        f"reference schema {stem}.json found neither in {REFERENCE} nor in {LOCAL_REFERENCE}"
    )


def avro_text(schema: dict) -> str:
    """The schema as the AvroConverter sends it: compact JSON (Avro's Schema.toString())."""
    return json.dumps(schema, separators=(",", ":"))


class Registry:
    """A tiny Confluent-API client over urllib (no third-party dependencies)."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url.rstrip("/")

    def call(self, method: str, path: str, body: object | None = None):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base_url + path, data=data, method=method)
        req.add_header("Accept", f"{CONFLUENT_JSON}, application/json")
        if data is not None:
            req.add_header("Content-Type", CONFLUENT_JSON)
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return resp.status, resp.headers.get("Content-Type", ""), json.loads(resp.read())
        except urllib.error.HTTPError as err:
            raw = err.read()
            return err.code, err.headers.get("Content-Type", ""), json.loads(raw) if raw else None

    def ok(self, method: str, path: str, body: object | None = None):
        status, _, payload = self.call(method, path, body)
        assert status == 200, f"{method} {path} -> HTTP {status}: {payload}"
        return payload

    def register(self, subject: str, schema_text: str) -> int:
        payload = self.ok(
            "POST", f"/subjects/{subject}/versions?normalize=false", {"schema": schema_text}
        )
        assert set(payload) >= {"id"}, payload
        return payload["id"]


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory):
    state = tmp_path_factory.mktemp("registry-state")
    env = dict(
        os.environ,
        AGENT_CONTEXT_STATE=str(state),
        REGISTRY_PORT=str(free_port()),
        REGISTRY_MGMT_PORT=str(free_port()),
        REGISTRY_AUTH_PORT=str(free_port()),
    )
    start = subprocess.run(
        ["bash", str(SCRIPT), "start"], env=env, capture_output=True, text=True, timeout=900
    )
    try:
        assert start.returncode == 0, (
            f"registry.sh start failed (exit {start.returncode}):\n{start.stderr}\n{start.stdout}"
        )
        url = subprocess.run(
            ["bash", str(SCRIPT), "url"], env=env, capture_output=True, text=True, check=True
        ).stdout.strip()
        yield Registry(url)
    finally:
        stop = subprocess.run(
            ["bash", str(SCRIPT), "stop"], env=env, capture_output=True, text=True, timeout=120
        )
        assert stop.returncode == 0, f"registry.sh stop failed:\n{stop.stderr}"


def customers_value_v2() -> dict:
    """customers' value schema after `ALTER TABLE customers ADD COLUMN phone text`."""
    schema = copy.deepcopy(load_reference("cdc.public.customers-value.v1.id2")["schema"])
    before = schema["fields"][0]
    assert before["name"] == "before"
    value = before["type"][1]
    assert value["name"] == "Value"
    value["fields"].append({"name": "phone", "type": ["null", "string"], "default": None})
    return schema


def find_field(record: dict, name: str) -> dict:
    for field in record["fields"]:
        if field["name"] == name:
            return field
    raise KeyError(name)


# The first test runs against the fresh registry: ids must come out as Debezium's did.
def test_debezium_sequence_on_a_fresh_registry(registry: Registry) -> None:
    assert registry.ok("GET", "/subjects") == []
    for stem, subject, expected_id in REFERENCE_SCHEMAS:
        text = avro_text(load_reference(stem)["schema"])
        assert registry.register(subject, text) == expected_id, subject
        # The same schema again: the same id, no new version.
        assert registry.register(subject, text) == expected_id, subject
        assert registry.ok("GET", f"/subjects/{subject}/versions") == [1]

    # ALTER TABLE ADD COLUMN: a new value schema version gets the next id (5, as with Debezium).
    v2 = avro_text(customers_value_v2())
    assert registry.register("cdc.public.customers-value", v2) == 5
    assert registry.register("cdc.public.customers-value", v2) == 5
    assert registry.ok("GET", "/subjects/cdc.public.customers-value/versions") == [1, 2]
    assert registry.ok("GET", "/subjects/cdc.public.customers-key/versions") == [1]
    # Both versions stay readable by id.
    assert "phone" not in registry.ok("GET", "/schemas/ids/2")["schema"]
    assert '"phone"' in registry.ok("GET", "/schemas/ids/5")["schema"]
    # An old writer schema re-registered (e.g. a second producer) keeps its id.
    old = avro_text(load_reference("cdc.public.customers-value.v1.id2")["schema"])
    assert registry.register("cdc.public.customers-value", old) == 2
    assert registry.ok("GET", "/subjects/cdc.public.customers-value/versions") == [1, 2]


def test_schema_by_id_keeps_debezium_attributes(registry: Registry) -> None:
    for stem, subject, _ in REFERENCE_SCHEMAS:
        ref = load_reference(stem)["schema"]
        schema_id = registry.register(subject, avro_text(ref))
        status, content_type, payload = registry.call(
            "GET", f"/schemas/ids/{schema_id}?fetchMaxId=false&subject={subject}"
        )
        assert status == 200, payload
        assert "json" in content_type, content_type
        # Stored verbatim: same text, hence same JSON, connect.* attributes included.
        assert payload["schema"] == avro_text(ref), stem
        assert json.loads(payload["schema"]) == ref, stem

    customers = json.loads(registry.ok("GET", "/schemas/ids/2")["schema"])
    value = customers["fields"][0]["type"][1]
    created_at = find_field(value, "created_at")["type"][0]
    assert created_at == {
        "type": "long",
        "connect.version": 1,
        "connect.default": 0,
        "connect.name": "io.debezium.time.MicroTimestamp",
    }
    assert find_field(value, "plan")["type"][0]["connect.default"] == "free"
    assert value["connect.name"] == "cdc.public.customers.Value"
    source = find_field(customers, "source")["type"]
    snapshot = find_field(source, "snapshot")["type"][0]
    assert snapshot["connect.name"] == "io.debezium.data.Enum"
    assert "allowed" in snapshot["connect.parameters"]


def test_ids_are_global_across_subjects(registry: Registry) -> None:
    key = avro_text(load_reference("cdc.public.customers-key.v1.id1")["schema"])
    customers_key_id = registry.register("cdc.public.customers-key", key)
    # The same schema under another subject: the same global id, and a subject of its own.
    assert registry.register("other-topic-key", key) == customers_key_id
    assert registry.ok("GET", "/subjects/other-topic-key/versions") == [1]
    # A different schema under the same other subject: a new id, version 2.
    orders_key = avro_text(load_reference("cdc.public.orders-key.v1.id3")["schema"])
    orders_key_id = registry.register("other-topic-key", orders_key)
    assert orders_key_id != customers_key_id
    assert registry.ok("GET", "/subjects/other-topic-key/versions") == [1, 2]


def test_subjects_versions_and_latest(registry: Registry) -> None:
    subjects = registry.ok("GET", "/subjects")
    for _, subject, _ in REFERENCE_SCHEMAS:
        assert subject in subjects

    latest = registry.ok("GET", "/subjects/cdc.public.customers-value/versions/latest")
    assert latest["subject"] == "cdc.public.customers-value"
    assert latest["version"] == 2
    assert latest["id"] == registry.register(
        "cdc.public.customers-value", avro_text(customers_value_v2())
    )
    assert json.loads(latest["schema"]) == customers_value_v2()

    first = registry.ok("GET", "/subjects/cdc.public.customers-value/versions/1")
    assert (first["subject"], first["version"], first["id"]) == ("cdc.public.customers-value", 1, 2)

    # "Is this schema registered under this subject?" (POST /subjects/{subject}).
    found = registry.ok(
        "POST",
        "/subjects/cdc.public.customers-value?normalize=false",
        {"schema": avro_text(load_reference("cdc.public.customers-value.v1.id2")["schema"])},
    )
    assert (found["version"], found["id"]) == (1, 2)


def test_config_global_and_per_subject(registry: Registry) -> None:
    assert "compatibilityLevel" in registry.ok("GET", "/config")
    put = registry.ok("PUT", "/config", {"compatibility": "BACKWARD"})
    assert put["compatibility"] == "BACKWARD"
    assert registry.ok("GET", "/config")["compatibilityLevel"] == "BACKWARD"

    subject = "cdc.public.orders-value"
    assert registry.ok("PUT", f"/config/{subject}", {"compatibility": "NONE"})["compatibility"] == "NONE"
    assert registry.ok("GET", f"/config/{subject}")["compatibilityLevel"] == "NONE"

    status, _, payload = registry.call("PUT", "/config", {"compatibility": "NOT-A-LEVEL"})
    assert status == 422 and payload["error_code"] == 42203, (status, payload)
    # Leave the global level as a fresh registry has it.
    registry.ok("PUT", "/config", {"compatibility": "NONE"})


def test_confluent_error_bodies(registry: Registry) -> None:
    cases = [
        ("GET", "/schemas/ids/987654", 404, 40403),
        ("GET", "/subjects/no-such-subject/versions", 404, 40401),
        ("GET", "/subjects/no-such-subject/versions/latest", 404, 40401),
        ("GET", "/subjects/cdc.public.customers-key/versions/99", 404, 40402),
    ]
    for method, path, http_status, error_code in cases:
        status, content_type, payload = registry.call(method, path)
        assert status == http_status, (path, status, payload)
        assert payload["error_code"] == error_code, (path, payload)
        assert isinstance(payload["message"], str) and payload["message"], (path, payload)
        assert "json" in content_type, (path, content_type)

    status, _, payload = registry.call(
        "POST", "/subjects/broken-value/versions", {"schema": "this is not a schema"}
    )
    assert status == 422 and payload["error_code"] == 42201, (status, payload)


def test_delete_subject(registry: Registry) -> None:
    text = avro_text(load_reference("cdc.public.orders-value.v1.id4")["schema"])
    schema_id = registry.register("to-delete-value", text)
    assert registry.ok("DELETE", "/subjects/to-delete-value") == [1]
    assert "to-delete-value" not in registry.ok("GET", "/subjects")
    status, _, payload = registry.call("GET", "/subjects/to-delete-value/versions")
    assert status == 404 and payload["error_code"] == 40401, (status, payload)
    # Ids stay readable: records already in Kafka still name them.
    assert json.loads(registry.ok("GET", f"/schemas/ids/{schema_id}")["schema"]) == json.loads(text)
