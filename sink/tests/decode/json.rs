//! The JSON path against what real Debezium 3.6.3 wrote for the same changes through three
//! converters (`tests/fixtures/debezium/converters.json`, recorded by
//! `tests/e2e/record_converter_samples.py`): every record of Kafka Connect's JsonConverter,
//! with `schemas.enable=true` and with `schemas.enable=false` (plus the mapping's `types:`),
//! decodes to the same [`Change`] as the AvroConverter record of the same change. The Avro
//! schemas are registered in the real registry at `SCHEMA_REGISTRY_URL` under subjects of
//! this run (the test fails without it).

use std::collections::HashMap;

use crate::support::*;
use mapping::change::{Change, FieldValue, Op};
use mapping::{load_config_str, ColumnType, ConnectionOverrides};
use serde_json::Value as Json;
use sink::decode::json::JsonError;
use sink::decode::{DecodeError, Decoded, Decoder, Part};

/// What `schemas.enable=false` needs declared to read as the Avro schema does.
const PLAIN_TYPES: &str = r#"
mappings:
  - name: customers
    topic: plain.public.customers
    key: "customer:{id}"
    types:
      created_at: timestamp_micros
      updated_at: timestamp_micros
      credit: decimal(2)
      ratio: variable_scale_decimal
      real4: float
      birthday: date
      t3: timestamp_millis
      seen_at: zoned_timestamp
      doc: json
      blob: bytes
  - name: orders
    topic: plain.public.orders
    key: "order:{id}"
    types: {items: json, created_at: timestamp_micros, updated_at: timestamp_micros}
"#;

fn recording() -> Json {
    read_json("converters.json")
}

fn plain_decoder() -> Decoder {
    let config = load_config_str(
        PLAIN_TYPES,
        "connectors.yaml",
        &ConnectionOverrides::default(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    decoder().with_declared_types(&config.mappings)
}

fn bytes(part: &Json) -> Option<Vec<u8>> {
    part.as_str().map(|s| s.as_bytes().to_vec())
}

async fn decode(
    decoder: &Decoder,
    topic: &str,
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    ts: Option<i64>,
) -> Decoded {
    decoder
        .decode(topic, key.as_deref(), value.as_deref(), ts)
        .await
        .unwrap_or_else(|e| panic!("{topic}: {:#}", anyhow::Error::from(e)))
}

/// Every recorded change: Avro, JSON with schema and schemaless JSON give equal changes.
#[tokio::test]
async fn json_records_decode_as_their_avro_twins() {
    let recording = recording();
    let run = run_id();
    let mut ids = HashMap::new();
    for (id, schema) in recording["avro_schemas"].as_object().expect("schemas") {
        let registered = register(&format!("converters-{id}-{run}"), schema).await;
        ids.insert(id.parse::<u32>().expect("id"), registered);
    }
    let avro_frame = |hex: &Json| {
        hex.as_str().map(|hex| {
            let bytes = unhex(hex);
            with_id(&bytes, ids[&id_of(&bytes)])
        })
    };
    let avro = decoder();
    let json = decoder();
    let plain = plain_decoder();
    let records = recording["records"].as_array().expect("records");
    assert_eq!(records.len(), 22);
    let mut ops = Vec::new();
    for record in records {
        let table = record["table"].as_str().expect("table");
        let what = format!("{table} offset {}", record["offset"]);
        let ts = record["timestamp_ms"].as_i64();
        let a = &record["avro"];
        let from_avro = decode(
            &avro,
            table,
            avro_frame(&a["key_hex"]),
            avro_frame(&a["value_hex"]),
            ts,
        )
        .await;
        let j = &record["json"];
        let from_json = decode(&json, table, bytes(&j["key"]), bytes(&j["value"]), ts).await;
        let p = &record["json_plain"];
        let topic = format!("plain.public.{table}");
        let from_plain = decode(&plain, &topic, bytes(&p["key"]), bytes(&p["value"]), ts).await;

        // Each connector took its own snapshot: its own position and time.
        let same_source = |mut change: Change| {
            if change.op == Op::Read {
                change.position = from_avro.change.position;
                change.source_ts_ms = from_avro.change.source_ts_ms;
            }
            change
        };
        assert_eq!(
            same_source(from_json.change),
            from_avro.change,
            "{what}: json (schemas.enable=true)"
        );
        assert_eq!(
            same_source(from_plain.change),
            from_avro.change,
            "{what}: json (schemas.enable=false)"
        );
        assert_eq!(from_json.value_schema_id, None, "{what}");
        // The embedded schema gives the writer schema's column types.
        assert_eq!(from_json.columns, from_avro.columns, "{what}: column types");
        if let (Some(plain), Some(avro)) = (&from_plain.columns, &from_avro.columns) {
            // Schemaless: the declared and inferred types of the columns seen so far agree
            // with the schema's where they say the same (integers are all `long` there).
            for (name, ty) in plain.iter() {
                let (_, schema_ty) = avro
                    .iter()
                    .find(|(n, _)| n == name)
                    .unwrap_or_else(|| panic!("{what}: {name}"));
                let same =
                    ty == schema_ty || (*ty == ColumnType::Long && *schema_ty == ColumnType::Int);
                assert!(
                    same,
                    "{what}: {name} is {ty} schemaless, {schema_ty} with a schema"
                );
            }
        }
        ops.push(from_avro.change.op);
    }
    // Every op, tombstones, and the logical types of the added columns were exercised.
    for op in [
        Op::Read,
        Op::Create,
        Op::Update,
        Op::Delete,
        Op::Tombstone,
        Op::Truncate,
    ] {
        assert!(ops.contains(&op), "no {op} record");
    }
}

/// The changes the recording holds are what Debezium means: DEFAULT-identity deletes carry
/// the key and defaults, logical types arrive typed.
#[tokio::test]
async fn json_logical_types_and_default_identity_deletes() {
    let recording = recording();
    let json = decoder();
    let plain = plain_decoder();
    let find = |table: &str, offset: i64| {
        recording["records"]
            .as_array()
            .expect("records")
            .iter()
            .find(|r| r["table"] == table && r["offset"] == offset)
            .unwrap_or_else(|| panic!("no {table} record at {offset}"))
            .clone()
    };
    // customers offset 5: the insert with every added column set.
    let eve = find("customers", 5);
    for (decoder, variant, topic) in [
        (&json, "json", "customers"),
        (&plain, "json_plain", "plain.public.customers"),
    ] {
        let r = &eve[variant];
        let change = decode(decoder, topic, bytes(&r["key"]), bytes(&r["value"]), None)
            .await
            .change;
        let after: HashMap<_, _> = change.after.expect("after").into_iter().collect();
        assert_eq!(
            after["credit"],
            FieldValue::Decimal {
                unscaled: vec![0xfb, 0x1e],
                scale: 2
            },
            "{variant}"
        );
        assert_eq!(
            after["ratio"],
            FieldValue::Decimal {
                unscaled: vec![0x04, 0xcb, 0x2f],
                scale: 5
            },
            "{variant}"
        );
        assert_eq!(after["birthday"], FieldValue::Date(-165), "{variant}");
        assert_eq!(
            after["t3"],
            FieldValue::TimestampMicros(1_795_514_193_142_000),
            "{variant}"
        );
        assert_eq!(
            after["seen_at"],
            FieldValue::TimestampMicros(1_795_514_193_142_906),
            "{variant}"
        );
        assert_eq!(
            after["doc"],
            FieldValue::Json(r#"{"k": [1, {"x": null}]}"#.into()),
            "{variant}"
        );
        assert_eq!(
            after["blob"],
            FieldValue::Bytes(vec![0, 0xff, 0x10]),
            "{variant}"
        );
        assert_eq!(
            after["tags"],
            FieldValue::Json(r#"["a","b c"]"#.into()),
            "{variant}"
        );
        assert_eq!(
            after["big"],
            FieldValue::Int(9_007_199_254_740_993),
            "{variant}"
        );
        assert_eq!(after["real4"], FieldValue::Float(1.5), "{variant}");
    }
    // orders offset 5: DELETE under REPLICA IDENTITY DEFAULT: the key, defaults elsewhere.
    let delete = find("orders", 5);
    for (decoder, variant, topic) in [
        (&json, "json", "orders"),
        (&plain, "json_plain", "plain.public.orders"),
    ] {
        let r = &delete[variant];
        let change: Change = decode(decoder, topic, bytes(&r["key"]), bytes(&r["value"]), None)
            .await
            .change;
        assert_eq!(change.op, Op::Delete, "{variant}");
        assert_eq!(
            change.key,
            vec![("id".to_owned(), FieldValue::Int(4))],
            "{variant}"
        );
        let before = change.before.expect("before");
        assert_eq!(
            before[0],
            ("id".to_owned(), FieldValue::Int(4)),
            "{variant}"
        );
        assert_eq!(
            before[1],
            ("customer_id".to_owned(), FieldValue::Null),
            "{variant}"
        );
        assert!(change.after.is_none(), "{variant}");
    }
}

/// Malformed JSON is poison (dead-lettered by the caller, never retried), with what is wrong.
#[tokio::test]
async fn malformed_json_is_refused() {
    let decoder = plain_decoder();
    let topic = "plain.public.customers";
    let key = br#"{"id":1}"#;
    let cases: [(&[u8], &str); 5] = [
        (
            br#"{"op": "c", "after": {"id": 1"#,
            "json value is not a debezium envelope",
        ),
        (
            br#"{"op": "x", "after": {"id": 1}}"#,
            "unknown debezium op \"x\" in a json envelope",
        ),
        (br#"{"after": {"id": 1}}"#, "json envelope has no `op`"),
        (
            br#"{"op": "c", "after": {"id": 1, "created_at": "yesterday"}}"#,
            "json value column `created_at`",
        ),
        (
            br#"{"schema": {"type": "string"}, "payload": "x"}"#,
            "json value schema is not a debezium envelope: top-level schema is not a record",
        ),
    ];
    for (value, message) in cases {
        let err = decoder
            .decode(topic, Some(key), Some(value), None)
            .await
            .unwrap_err();
        assert!(matches!(err, DecodeError::Json(_)), "{err:?}");
        assert_eq!(err.to_string(), message);
        assert!(!err.is_retriable());
    }
    let err = decoder
        .decode(topic, Some(b"{id: 1}"), None, None)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            DecodeError::Json(JsonError::Syntax {
                part: Part::Key,
                ..
            })
        ),
        "{err:?}"
    );
    assert_eq!(
        format!("{:#}", anyhow::Error::from(err)),
        "json key is not a debezium key: key must be a string at line 1 column 2"
    );
}
