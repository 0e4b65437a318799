#!/usr/bin/env python3
"""Writes the recorded Debezium records as seed inputs of the fuzz targets (the input
format is in src/lib.rs): corpus/wire_avro/ from the Avro records, corpus/json/ from the
JsonConverter ones (each JSON record twice, on topic `plain` and on topic `typed`)."""
import json
import os
import struct
import sys

root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
fixtures = os.path.join(root, "tests", "fixtures", "debezium")


def record(key, value, alternate=False):
    flags = (key is not None) | (value is not None) << 1 | alternate << 2
    key = key or b""
    return bytes([flags]) + struct.pack("<H", len(key)) + key + (value or b"")


def unhex(text):
    return bytes.fromhex(text) if text else None


def text(value):
    return value.encode() if value is not None else None


def main(corpus):
    avro, plain = [], []
    for r in json.load(open(os.path.join(fixtures, "raw-wire-bytes.json"))):
        avro.append(record(unhex(r["key_hex"]), unhex(r["value_hex"])))
    for r in json.load(open(os.path.join(fixtures, "converters.json")))["records"]:
        avro.append(record(unhex(r["avro"]["key_hex"]), unhex(r["avro"]["value_hex"])))
        for converter in ("json", "json_plain"):
            plain.append((text(r[converter]["key"]), text(r[converter]["value"])))
    json_seeds = [record(k, v, alternate) for k, v in plain for alternate in (False, True)]
    for target, seeds in (("wire_avro", avro), ("json", json_seeds)):
        directory = os.path.join(corpus, target)
        os.makedirs(directory, exist_ok=True)
        for n, seed in enumerate(seeds):
            with open(os.path.join(directory, f"seed-{n:03}"), "wb") as f:
                f.write(seed)
        print(f"{target}: {len(seeds)} seeds in {directory}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else os.path.join(root, "fuzz", "corpus"))
