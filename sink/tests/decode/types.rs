//! Column types beyond the recorded tables: the schema fragments Debezium's PostgreSQL
//! connector writes through Confluent's AvroConverter for timestamps of every precision,
//! `timestamptz`, `date`, `numeric(p,s)` and unconstrained `numeric`, `bytea`, `uuid`,
//! `jsonb`, enums, floats, booleans and arrays, registered in the real registry at
//! `SCHEMA_REGISTRY_URL` (start it with `tests/stack/up.sh`; the test fails without it).

use crate::support::*;
use apache_avro::types::Value;
use mapping::change::{FieldValue, Op};
use mapping::ColumnType;
use serde_json::json;

fn envelope_schema() -> serde_json::Value {
    json!({
      "type": "record", "name": "Envelope", "namespace": "cdc.public.everything",
      "fields": [
        {"name": "before", "type": ["null", {
          "type": "record", "name": "Value", "connect.name": "cdc.public.everything.Value",
          "fields": [
            {"name": "id", "type": {"type": "long", "connect.default": 0}, "default": 0},
            {"name": "ts0", "type": ["null", {"type": "long", "connect.version": 1,
              "connect.name": "io.debezium.time.Timestamp"}], "default": null},
            {"name": "ts6", "type": ["null", {"type": "long", "connect.version": 1,
              "connect.name": "io.debezium.time.MicroTimestamp"}], "default": null},
            {"name": "tsn", "type": ["null", {"type": "long", "connect.version": 1,
              "connect.name": "io.debezium.time.NanoTimestamp"}], "default": null},
            {"name": "tstz", "type": ["null", {"type": "string", "connect.version": 1,
              "connect.name": "io.debezium.time.ZonedTimestamp"}], "default": null},
            {"name": "day", "type": ["null", {"type": "int", "connect.version": 1,
              "connect.name": "io.debezium.time.Date"}], "default": null},
            {"name": "price", "type": ["null", {"type": "bytes", "scale": 2, "precision": 10,
              "connect.version": 1,
              "connect.parameters": {"scale": "2", "connect.decimal.precision": "10"},
              "connect.name": "org.apache.kafka.connect.data.Decimal",
              "logicalType": "decimal"}], "default": null},
            {"name": "ratio", "type": ["null", {"type": "record", "name": "VariableScaleDecimal",
              "namespace": "io.debezium.data",
              "fields": [{"name": "scale", "type": "int"}, {"name": "value", "type": "bytes"}],
              "connect.doc": "Variable scaled decimal", "connect.version": 1,
              "connect.name": "io.debezium.data.VariableScaleDecimal"}], "default": null},
            {"name": "blob", "type": ["null", "bytes"], "default": null},
            {"name": "uid", "type": ["null", {"type": "string", "connect.version": 1,
              "connect.name": "io.debezium.data.Uuid"}], "default": null},
            {"name": "doc", "type": ["null", {"type": "string", "connect.version": 1,
              "connect.name": "io.debezium.data.Json"}], "default": null},
            {"name": "mood", "type": ["null", {"type": "string", "connect.version": 1,
              "connect.parameters": {"allowed": "sad,ok,happy"},
              "connect.name": "io.debezium.data.Enum"}], "default": null},
            {"name": "score", "type": ["null", "double"], "default": null},
            {"name": "weight", "type": ["null", "float"], "default": null},
            {"name": "active", "type": ["null", "boolean"], "default": null},
            {"name": "tags", "type": ["null", {"type": "array", "items": ["null", "string"]}],
              "default": null}
          ]}], "default": null},
        {"name": "after", "type": ["null", "Value"], "default": null},
        {"name": "source", "type": {"type": "record", "name": "Source",
          "namespace": "io.debezium.connector.postgresql", "fields": [
            {"name": "ts_ms", "type": "long"},
            {"name": "lsn", "type": ["null", "long"], "default": null}]}},
        {"name": "op", "type": "string"},
        {"name": "ts_ms", "type": ["null", "long"], "default": null}
      ],
      "connect.name": "cdc.public.everything.Envelope"
    })
}

fn key_schema() -> serde_json::Value {
    json!({"type": "record", "name": "Key", "namespace": "cdc.public.everything",
      "fields": [{"name": "id", "type": "long"}]})
}

fn some(v: Value) -> Value {
    Value::Union(1, Box::new(v))
}

#[tokio::test]
async fn debezium_column_types_decode_to_typed_values() {
    let run = run_id();
    let value_json = envelope_schema();
    let key_json = key_schema();
    let value_id = register(&format!("cdc.public.everything-{run}-value"), &value_json).await;
    let key_id = register(&format!("cdc.public.everything-{run}-key"), &key_json).await;
    let value_avro = apache_avro::Schema::parse(&value_json).expect("value schema parses");
    let key_avro = apache_avro::Schema::parse(&key_json).expect("key schema parses");

    let row = Value::Record(vec![
        ("id".into(), Value::Long(7)),
        ("ts0".into(), some(Value::Long(1_795_514_193_142))),
        ("ts6".into(), some(Value::Long(1_795_514_193_142_906))),
        ("tsn".into(), some(Value::Long(1_795_514_193_142_906_123))),
        (
            "tstz".into(),
            some(Value::String("2026-11-24T10:56:33.142906+01:00".into())),
        ),
        ("day".into(), some(Value::Int(20_781))),
        (
            "price".into(),
            some(Value::Decimal(apache_avro::Decimal::from(vec![0x04, 0xe2]))),
        ),
        (
            "ratio".into(),
            some(Value::Record(vec![
                ("scale".into(), Value::Int(3)),
                ("value".into(), Value::Bytes(vec![0xff, 0x85])),
            ])),
        ),
        ("blob".into(), some(Value::Bytes(vec![0, 1, 2, 255]))),
        (
            "uid".into(),
            some(Value::String("7d0c7c64-3b4e-4a53-9f5d-6a0f2b1e9c11".into())),
        ),
        ("doc".into(), some(Value::String(r#"{"a": [1, 2]}"#.into()))),
        ("mood".into(), some(Value::String("happy".into()))),
        ("score".into(), some(Value::Double(0.25))),
        ("weight".into(), some(Value::Float(1.5))),
        ("active".into(), some(Value::Boolean(false))),
        (
            "tags".into(),
            some(Value::Array(vec![
                Value::Union(1, Box::new(Value::String("x".into()))),
                Value::Union(0, Box::new(Value::Null)),
            ])),
        ),
    ]);
    let envelope = Value::Record(vec![
        ("before".into(), Value::Union(0, Box::new(Value::Null))),
        ("after".into(), some(row)),
        (
            "source".into(),
            Value::Record(vec![
                ("ts_ms".into(), Value::Long(1_795_514_193_200)),
                ("lsn".into(), some(Value::Long(123_456))),
            ]),
        ),
        ("op".into(), Value::String("c".into())),
        ("ts_ms".into(), some(Value::Long(1_795_514_193_300))),
    ]);
    let write = |schema: &apache_avro::Schema, value: Value| {
        apache_avro::writer::datum::GenericDatumWriter::builder(schema)
            .build()
            .expect("writer")
            .write_value_to_vec(value)
            .expect("value fits the schema")
    };
    let value = frame(value_id, &write(&value_avro, envelope));
    let key = frame(
        key_id,
        &write(
            &key_avro,
            Value::Record(vec![("id".into(), Value::Long(7))]),
        ),
    );

    let decoded = decoder()
        .decode("cdc.public.everything", Some(&key), Some(&value), Some(1))
        .await
        .unwrap_or_else(|e| panic!("{:#}", anyhow::Error::from(e)));

    let at = 1_795_514_193_142_906;
    use ColumnType as T;
    use FieldValue as F;
    let expected: Vec<(&str, ColumnType, FieldValue)> = vec![
        ("id", T::Long, F::Int(7)),
        (
            "ts0",
            T::Timestamp,
            F::TimestampMicros(1_795_514_193_142_000),
        ),
        ("ts6", T::Timestamp, F::TimestampMicros(at)),
        ("tsn", T::Timestamp, F::TimestampMicros(at)),
        ("tstz", T::Timestamp, F::TimestampMicros(at)),
        ("day", T::Date, F::Date(20_781)),
        (
            "price",
            T::Decimal,
            F::Decimal {
                unscaled: vec![0x04, 0xe2],
                scale: 2,
            },
        ),
        (
            "ratio",
            T::Decimal,
            F::Decimal {
                unscaled: vec![0xff, 0x85],
                scale: 3,
            },
        ),
        ("blob", T::Bytes, F::Bytes(vec![0, 1, 2, 255])),
        (
            "uid",
            T::String,
            F::String("7d0c7c64-3b4e-4a53-9f5d-6a0f2b1e9c11".into()),
        ),
        ("doc", T::Json, F::Json(r#"{"a": [1, 2]}"#.into())),
        ("mood", T::String, F::String("happy".into())),
        ("score", T::Double, F::Float(0.25)),
        ("weight", T::Float, F::Float(1.5)),
        ("active", T::Boolean, F::Boolean(false)),
        ("tags", T::Json, F::Json(r#"["x",null]"#.into())),
    ];
    let columns: Vec<(String, ColumnType)> = expected
        .iter()
        .map(|(n, t, _)| ((*n).to_owned(), *t))
        .collect();
    let after: Vec<(String, FieldValue)> = expected
        .into_iter()
        .map(|(n, _, v)| (n.to_owned(), v))
        .collect();

    assert_eq!(decoded.value_schema_id, Some(value_id));
    assert_eq!(decoded.columns.as_deref(), Some(&columns[..]));
    assert_eq!(decoded.change.op, Op::Create);
    assert_eq!(decoded.change.key, vec![("id".to_owned(), F::Int(7))]);
    assert_eq!(decoded.change.before, None);
    assert_eq!(decoded.change.after, Some(after));
    assert_eq!(decoded.change.position, Some(123_456));
    assert_eq!(decoded.change.source_ts_ms, Some(1_795_514_193_200));
}
