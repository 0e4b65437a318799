//! The decoder against what Debezium 3.6.3 really produced, with schemas served by the real
//! registry at `SCHEMA_REGISTRY_URL` (start it with `tests/stack/up.sh`; the test fails
//! without it). Each run registers the recorded schemas under subjects of its own and
//! rewrites the schema ids of the frames to the ids this registry assigned.

use std::sync::Arc;

use crate::support::*;
use mapping::change::{FieldValue, Op};
use mapping::ColumnType;
use serde_json::{json, Value as Json};
use sink::registry::Registry;

/// The raw frames captured from Kafka decode to exactly the recorded records.
#[tokio::test]
async fn raw_wire_bytes_decode_to_the_recorded_records() {
    let registered = Registered::new().await;
    let decoder = decoder();
    let raw = read_json("raw-wire-bytes.json");
    let raw = raw.as_array().expect("array of frames");
    assert_eq!(raw.len(), 3);
    let mut ops = Vec::new();
    for frame in raw {
        let topic = frame["topic"].as_str().expect("topic");
        let offset = frame["offset"].as_i64().expect("offset");
        let (name, sample) = sample_at(topic, offset);
        let key = unhex(frame["key_hex"].as_str().expect("key"));
        assert_eq!(
            id_of(&key) as i64,
            sample["key_schema_id"],
            "{name}: recorded key id"
        );
        let key = with_id(&key, registered.id(id_of(&key)));
        let value = frame["value_hex"].as_str().map(unhex);
        let value = value.map(|v| {
            assert_eq!(
                id_of(&v) as i64,
                sample["value_schema_id"],
                "{name}: recorded value id"
            );
            with_id(&v, registered.id(id_of(&v)))
        });

        let decoded = decoder
            .decode(topic, Some(&key), value.as_deref(), sample["ts"].as_i64())
            .await
            .unwrap_or_else(|e| panic!("{name}: {:#}", anyhow::Error::from(e)));
        assert_eq!(decoded.change, expected_change(&sample), "{name}");
        match &value {
            Some(v) => {
                assert_eq!(decoded.value_schema_id, Some(id_of(v)), "{name}");
                assert_eq!(
                    decoded.columns.as_deref(),
                    Some(&value_columns(topic)[..]),
                    "{name}"
                );
            }
            None => {
                assert_eq!(decoded.value_schema_id, None, "{name}");
                assert_eq!(decoded.columns, None, "{name}");
            }
        }
        ops.push(decoded.change.op);

        // Every envelope field (source block, transaction, ts_*), not only those the sink
        // uses: the frame body decoded with the schema the registry served, as JSON.
        let registry = decoder.registry();
        let key_schema = registry.schema(id_of(&key)).await.expect("key schema");
        let key_json = avro_json(&key_schema.avro, &key[5..]);
        assert_eq!(key_json, sample["key"], "{name}: key");
        if let Some(v) = &value {
            let value_schema = registry.schema(id_of(v)).await.expect("value schema");
            assert_eq!(
                avro_json(&value_schema.avro, &v[5..]),
                sample["value"],
                "{name}: value"
            );
        }
    }
    assert_eq!(ops, [Op::Read, Op::Tombstone, Op::Delete]);
}

fn avro_json(schema: &apache_avro::Schema, body: &[u8]) -> Json {
    let mut rest = body;
    let value = apache_avro::reader::datum::GenericDatumReader::builder(schema)
        .build()
        .expect("reader")
        .read_value(&mut rest)
        .expect("body decodes");
    assert!(rest.is_empty(), "trailing bytes");
    Json::try_from(value).expect("avro value as json")
}

/// Every recorded record (snapshot, insert, both update kinds, both delete kinds,
/// tombstones), encoded again through its schema, decodes back to what was recorded.
#[tokio::test]
async fn every_recorded_record_round_trips() {
    let registered = Registered::new().await;
    let decoder = decoder();
    let mut seen = Vec::new();
    for (name, sample) in samples() {
        let topic = sample["topic"].as_str().expect("topic");
        let key_fixture = sample["key_schema_id"].as_u64().expect("key id") as u32;
        let (_, key_schema) = fixture_schema(key_fixture);
        let key = frame(
            registered.id(key_fixture),
            &encode(&key_schema, &sample["key"]),
        );
        let value = sample["value_schema_id"].as_u64().map(|fixture| {
            let (_, schema) = fixture_schema(fixture as u32);
            frame(
                registered.id(fixture as u32),
                &encode(&schema, &sample["value"]),
            )
        });
        let decoded = decoder
            .decode(topic, Some(&key), value.as_deref(), sample["ts"].as_i64())
            .await
            .unwrap_or_else(|e| panic!("{name}: {:#}", anyhow::Error::from(e)));
        let expected = expected_change(&sample);
        assert_eq!(decoded.change, expected, "{name}");
        let before = decoded.change.before.is_some();
        let after = decoded.change.after.is_some();
        seen.push((decoded.change.op, before, after));
    }
    // The variants the recording covers: r, c, u with and without `before` (replica identity
    // default/full), d with the key-only and the full `before`, and tombstones.
    for wanted in [
        (Op::Read, false, true),
        (Op::Create, false, true),
        (Op::Update, false, true),
        (Op::Update, true, true),
        (Op::Delete, true, false),
        (Op::Tombstone, false, false),
    ] {
        assert!(
            seen.contains(&wanted),
            "no sample decoded to {wanted:?}: {seen:?}"
        );
    }
}

/// A value schema v2 with an added nullable column, registered mid-stream under the same
/// subject, is picked up by its new id; records of v1 keep decoding.
#[tokio::test]
async fn added_column_schema_version_decodes_mid_stream() {
    let registered = Registered::new().await;
    let decoder = decoder();
    let (mut v2_json, v1) = fixture_schema(2);
    let fields = v2_json["fields"][0]["type"][1]["fields"]
        .as_array_mut()
        .expect("before's Value record fields");
    fields.push(json!({"name": "phone", "type": ["null", "string"], "default": null}));
    let v2_id = register(
        &format!("cdc.public.customers-value-{}", registered.run),
        &v2_json,
    )
    .await;
    assert_ne!(
        v2_id,
        registered.id(2),
        "a changed schema must get a new id"
    );
    let v2 = apache_avro::Schema::parse(&v2_json).expect("v2 parses");

    let (_, key_schema) = fixture_schema(1);
    let (_, insert) = sample_at("cdc.public.customers", 3);
    let key = frame(registered.id(1), &encode(&key_schema, &insert["key"]));
    let v1_frame = frame(registered.id(2), &encode(&v1, &insert["value"]));
    let mut v2_value = insert["value"].clone();
    v2_value["after"]["phone"] = json!("+1 555 0100");
    v2_value["source"]["lsn"] = json!(22_600_000);
    let v2_frame = frame(v2_id, &encode(&v2, &v2_value));

    let first = decoder
        .decode("cdc.public.customers", Some(&key), Some(&v1_frame), None)
        .await
        .expect("v1");
    let second = decoder
        .decode("cdc.public.customers", Some(&key), Some(&v2_frame), None)
        .await
        .expect("v2");
    let third = decoder
        .decode("cdc.public.customers", Some(&key), Some(&v1_frame), None)
        .await
        .expect("v1 again");

    assert_eq!(first, third);
    assert_eq!(first.value_schema_id, Some(registered.id(2)));
    assert_eq!(second.value_schema_id, Some(v2_id));
    let mut v2_columns = value_columns("cdc.public.customers");
    v2_columns.push(("phone".to_owned(), ColumnType::String));
    assert_eq!(second.columns.as_deref(), Some(&v2_columns[..]));
    let mut after = first.change.after.clone().expect("after");
    after.push((
        "phone".to_owned(),
        FieldValue::String("+1 555 0100".to_owned()),
    ));
    assert_eq!(second.change.after, Some(after));
    assert_eq!(second.change.position, Some(22_600_000));
    // v1 records carry no phone column at all (not a NULL one).
    assert!(first
        .change
        .after
        .expect("after")
        .iter()
        .all(|(n, _)| n != "phone"));
}

/// The registry client: cached per id (concurrent callers share one fetch), the raw text
/// with Debezium's attributes kept, and a health check.
#[tokio::test]
async fn registry_serves_cached_raw_schemas() {
    let registered = Registered::new().await;
    let registry = Arc::new(Registry::new(&registry_url()).expect("client"));
    registry.health_check().await.expect("health check");
    let id = registered.id(2);
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let registry = Arc::clone(&registry);
            tokio::spawn(async move { registry.schema(id).await })
        })
        .collect();
    let mut schemas = Vec::new();
    for task in tasks {
        schemas.push(task.await.expect("task").expect("schema"));
    }
    assert!(
        schemas.iter().all(|s| Arc::ptr_eq(s, &schemas[0])),
        "one cached schema per id"
    );
    let schema = &schemas[0];
    assert_eq!(schema.id, id);
    assert_eq!(
        schema.json,
        fixture_schema(2).0,
        "the registry returns the schema as registered"
    );
    assert!(schema.text.contains("io.debezium.time.MicroTimestamp"));
}
