//! Records the decoder must refuse, each with the error variant (and retriability) the
//! consumer relies on to retry or dead-letter. Schemas come from the real registry at
//! `SCHEMA_REGISTRY_URL` (start it with `tests/stack/up.sh`; the test fails without it).

use std::sync::Arc;

use crate::support::*;
use serde_json::json;
use sink::decode::json::JsonError;
use sink::decode::{DecodeError, Decoder, Part};
use sink::registry::{Registry, RegistryError};

const TOPIC: &str = "cdc.public.customers";

/// A valid key and insert value for customers, framed with this run's ids.
fn insert_frames(registered: &Registered) -> (Vec<u8>, Vec<u8>, serde_json::Value) {
    let (_, sample) = sample_at(TOPIC, 3);
    let (_, key_schema) = fixture_schema(1);
    let (_, value_schema) = fixture_schema(2);
    let key = frame(registered.id(1), &encode(&key_schema, &sample["key"]));
    let value = frame(registered.id(2), &encode(&value_schema, &sample["value"]));
    (key, value, sample)
}

async fn decode_err(decoder: &Decoder, key: Option<&[u8]>, value: Option<&[u8]>) -> DecodeError {
    match decoder.decode(TOPIC, key, value, None).await {
        Ok(decoded) => panic!("decoded instead of failing: {decoded:?}"),
        Err(e) => e,
    }
}

#[tokio::test]
async fn framing_errors() {
    let registered = Registered::new().await;
    let decoder = decoder();
    let (key, value, _) = insert_frames(&registered);

    let err = decode_err(&decoder, Some(&key), Some(&[0, 0, 0])).await;
    assert!(
        matches!(
            err,
            DecodeError::ShortFrame {
                part: Part::Value,
                len: 3
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "value of 3 bytes is shorter than the 5-byte confluent wire-format header"
    );

    let err = decode_err(&decoder, Some(&key), Some(b"")).await;
    assert!(
        matches!(
            err,
            DecodeError::ShortFrame {
                part: Part::Value,
                len: 0
            }
        ),
        "{err:?}"
    );

    // A value starting with `{` is JsonConverter's: decoded as JSON, refused as an envelope.
    let json_value = br#"{"op":"c"}"#;
    let err = decode_err(&decoder, Some(&key), Some(json_value)).await;
    assert!(
        matches!(err, DecodeError::Json(JsonError::MissingAfter("c"))),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "op \"c\" without an `after` row in a json envelope"
    );
    assert!(!err.is_retriable());

    let text_value = b"[1, 2]";
    let err = decode_err(&decoder, Some(&key), Some(text_value)).await;
    assert!(
        matches!(
            err,
            DecodeError::BadMagic {
                part: Part::Value,
                byte: b'['
            }
        ),
        "{err:?}"
    );
    assert!(!err.is_retriable());

    let mut bad_key = key.clone();
    bad_key[0] = 1;
    let err = decode_err(&decoder, Some(&bad_key), Some(&value)).await;
    assert!(
        matches!(
            err,
            DecodeError::BadMagic {
                part: Part::Key,
                byte: 1
            }
        ),
        "{err:?}"
    );

    let err = decode_err(&decoder, None, None).await;
    assert!(matches!(err, DecodeError::KeylessTombstone), "{err:?}");
}

#[tokio::test]
async fn body_errors() {
    let registered = Registered::new().await;
    let decoder = decoder();
    let (key, value, _) = insert_frames(&registered);
    let id = registered.id(2);

    // Cut short: refused before the generic decoder reads it (which would take the missing
    // values for nulls).
    let truncated = &value[..value.len() / 2];
    let err = decode_err(&decoder, Some(&key), Some(truncated)).await;
    assert!(
        matches!(err, DecodeError::Malformed { part: Part::Value, id: i, offset } if i == id && offset == truncated.len() - 5),
        "{err:?}"
    );
    assert!(err.to_string().starts_with(&format!(
        "value body is malformed for its writer schema {id} at byte "
    )));
    assert!(!err.is_retriable());

    let mut trailing = value.clone();
    trailing.extend_from_slice(&[0, 0]);
    let err = decode_err(&decoder, Some(&key), Some(&trailing)).await;
    assert!(
        matches!(
            err,
            DecodeError::TrailingBytes {
                part: Part::Value,
                count: 2,
                ..
            }
        ),
        "{err:?}"
    );

    // The customers value body framed with the orders value schema id: the bytes are read
    // with the wrong schema.
    let wrong = with_id(&value, registered.id(4));
    let err = decode_err(&decoder, Some(&key), Some(&wrong)).await;
    assert!(
        matches!(
            err,
            DecodeError::Body { .. }
                | DecodeError::Malformed { .. }
                | DecodeError::TrailingBytes { .. }
                | DecodeError::Column { .. }
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn schema_errors() {
    let registered = Registered::new().await;
    let decoder = decoder();
    let (key, value, _) = insert_frames(&registered);

    // An id the registry never assigned: poison.
    let unknown = 2_000_000_000;
    let err = decode_err(&decoder, Some(&key), Some(&with_id(&value, unknown))).await;
    assert!(
        matches!(&err, DecodeError::Schema { part: Part::Value, id, source: RegistryError::NotFound { .. } } if *id == unknown),
        "{err:?}"
    );
    assert!(!err.is_retriable());
    assert_eq!(
        err.to_string(),
        format!("cannot get the value writer schema {unknown}")
    );

    // A registered schema that is no Debezium envelope.
    let plain = json!({"type": "record", "name": "Plain", "namespace": "test",
        "fields": [{"name": "x", "type": "int"}]});
    let plain_id = register(&format!("plain-{}-value", registered.run), &plain).await;
    let (_, plain_schema) = (
        plain.clone(),
        apache_avro::Schema::parse(&plain).expect("parses"),
    );
    let body = encode(&plain_schema, &json!({"x": 1}));
    let err = decode_err(&decoder, Some(&key), Some(&frame(plain_id, &body))).await;
    assert!(
        matches!(
            err,
            DecodeError::Shape {
                part: Part::Value,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        format!("value schema {plain_id} is not a debezium envelope: no `op` field")
    );

    // A key whose schema is not a record.
    let string_key = json!("string");
    let string_id = register(&format!("plain-{}-key", registered.run), &string_key).await;
    let body = encode(
        &apache_avro::Schema::parse(&string_key).expect("parses"),
        &json!("k"),
    );
    let err = decode_err(&decoder, Some(&frame(string_id, &body)), Some(&value)).await;
    assert!(
        matches!(
            err,
            DecodeError::Shape {
                part: Part::Key,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        format!("key schema {string_id} is not a debezium key: top-level schema is not a record")
    );
}

#[tokio::test]
async fn envelope_errors() {
    let registered = Registered::new().await;
    let decoder = decoder();
    let (key, _, sample) = insert_frames(&registered);
    let (_, schema) = fixture_schema(2);
    let id = registered.id(2);

    let mut unknown_op = sample["value"].clone();
    unknown_op["op"] = json!("m");
    let err = decode_err(
        &decoder,
        Some(&key),
        Some(&frame(id, &encode(&schema, &unknown_op))),
    )
    .await;
    assert!(
        matches!(&err, DecodeError::UnknownOp { op, .. } if op == "m"),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        format!("unknown debezium op \"m\" (schema {id})")
    );

    let mut no_after = sample["value"].clone();
    no_after["after"] = json!(null);
    let err = decode_err(
        &decoder,
        Some(&key),
        Some(&frame(id, &encode(&schema, &no_after))),
    )
    .await;
    assert!(
        matches!(err, DecodeError::MissingAfter { op: "c", .. }),
        "{err:?}"
    );

    // Truncate: no rows at all is fine.
    let mut truncate = sample["value"].clone();
    truncate["op"] = json!("t");
    truncate["after"] = json!(null);
    let decoded = decoder
        .decode(
            TOPIC,
            Some(&key),
            Some(&frame(id, &encode(&schema, &truncate))),
            None,
        )
        .await
        .expect("truncate decodes");
    assert_eq!(decoded.change.op, mapping::change::Op::Truncate);

    // TOASTed, unchanged column.
    let mut toasted = sample["value"].clone();
    toasted["op"] = json!("u");
    toasted["after"]["name"] = json!("__debezium_unavailable_value");
    let decoded = decoder
        .decode(
            TOPIC,
            Some(&key),
            Some(&frame(id, &encode(&schema, &toasted))),
            None,
        )
        .await
        .expect("update decodes");
    let after = decoded.change.after.expect("after");
    assert_eq!(
        after[2],
        ("name".to_owned(), mapping::change::FieldValue::Unavailable)
    );
}

/// An unreachable registry is retriable, and the error names the URL.
#[tokio::test]
async fn unreachable_registry_is_retriable() {
    let registered = Registered::new().await;
    let (key, value, _) = insert_frames(&registered);
    // Nothing listens on port 1: connection refused.
    let registry = Registry::new("http://127.0.0.1:1/apis/ccompat/v7").expect("client");
    let decoder = Decoder::new(Arc::new(registry));
    let err = decode_err(&decoder, Some(&key), Some(&value)).await;
    assert!(err.is_retriable(), "{err:?}");
    let chain = format!("{:#}", anyhow::Error::from(err));
    assert!(
        chain.starts_with(&format!(
            "cannot get the key writer schema {}: schema registry request http://127.0.0.1:1/apis/ccompat/v7/schemas/ids/{} failed",
            registered.id(1),
            registered.id(1)
        )),
        "{chain}"
    );
}
