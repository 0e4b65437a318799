//! Property test: a column value as Debezium's AvroConverter writes it and the same value as
//! Kafka Connect's JsonConverter writes it convert to the same [`FieldValue`] (compared by
//! `Debug`, so that NaN equals NaN), or both fail, for every [`Kind`]. The recorded changes
//! in `sink/tests/decode/json.rs` cover what Debezium really sent; this covers the value
//! ranges a recording does not reach (extreme numbers, non-finite floats, odd scales).

use apache_avro::types::Value as Avro;
use base64::Engine as _;
use proptest::prelude::*;
use serde_json::{json, Value as Json};

use crate::decode::schema::{Kind, TimeUnit};
use crate::decode::value::{self as avro_value, UNAVAILABLE};

/// One column value in both encodings.
#[derive(Debug, Clone)]
struct Twin {
    kind: Kind,
    avro: Avro,
    json: Json,
}

fn base64(bytes: &[u8]) -> Json {
    json!(base64::engine::general_purpose::STANDARD.encode(bytes))
}

/// Jackson writes non-finite floats as strings, finite ones as numbers.
fn float_json(f: f64) -> Json {
    if f.is_nan() {
        json!("NaN")
    } else if f.is_infinite() {
        json!(if f > 0.0 { "Infinity" } else { "-Infinity" })
    } else {
        json!(f)
    }
}

fn twin(kind: Kind, avro: Avro, json: Json) -> Twin {
    Twin { kind, avro, json }
}

fn unit() -> impl Strategy<Value = TimeUnit> {
    prop_oneof![
        Just(TimeUnit::Millis),
        Just(TimeUnit::Micros),
        Just(TimeUnit::Nanos)
    ]
}

fn value() -> impl Strategy<Value = Twin> {
    let bytes = || proptest::collection::vec(any::<u8>(), 0..12);
    prop_oneof![
        any::<bool>().prop_map(|b| twin(Kind::Boolean, Avro::Boolean(b), json!(b))),
        any::<i32>().prop_map(|i| twin(Kind::Int, Avro::Int(i), json!(i))),
        any::<i64>().prop_map(|i| twin(Kind::Long, Avro::Long(i), json!(i))),
        // JsonConverter writes a float32 with Java's shortest text for the float.
        any::<f32>().prop_map(|f| {
            let json = if f.is_finite() {
                serde_json::from_str(&f.to_string()).expect("float text")
            } else {
                float_json(f64::from(f))
            };
            twin(Kind::Float, Avro::Float(f), json)
        }),
        any::<f64>().prop_map(|f| twin(Kind::Double, Avro::Double(f), float_json(f))),
        ".*".prop_map(|s| twin(Kind::String, Avro::String(s.clone()), json!(s))),
        "[a-z0-9{}\\[\\]\":, ]*".prop_map(|s| twin(Kind::Json, Avro::String(s.clone()), json!(s))),
        (unit(), any::<i64>()).prop_map(|(u, t)| twin(Kind::Timestamp(u), Avro::Long(t), json!(t))),
        (
            -62_135_596_800_000_000_i64..253_402_300_799_000_000,
            -50_400_i32..50_400
        )
            .prop_map(|(micros, offset)| {
                let offset = chrono::FixedOffset::east_opt(offset - offset % 60).expect("offset");
                let text = chrono::DateTime::from_timestamp_micros(micros)
                    .expect("in range")
                    .with_timezone(&offset)
                    .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, false);
                twin(
                    Kind::ZonedTimestamp,
                    Avro::String(text.clone()),
                    json!(text),
                )
            }),
        any::<i32>().prop_map(|d| twin(Kind::Date, Avro::Int(d), json!(d))),
        (0_u32..20, bytes()).prop_map(|(scale, b)| twin(
            Kind::Decimal { scale },
            Avro::Bytes(b.clone()),
            base64(&b)
        )),
        (-2_i32..20, bytes()).prop_map(|(scale, b)| twin(
            Kind::VariableScaleDecimal,
            Avro::Record(vec![
                ("scale".into(), Avro::Int(scale)),
                ("value".into(), Avro::Bytes(b.clone())),
            ]),
            json!({"scale": scale, "value": base64(&b)})
        )),
        bytes().prop_map(|b| twin(Kind::Bytes, Avro::Bytes(b.clone()), base64(&b))),
        proptest::collection::vec(".*", 0..4).prop_map(|items| twin(
            Kind::Other,
            Avro::Array(items.iter().cloned().map(Avro::String).collect()),
            json!(items)
        )),
    ]
}

/// A value, sometimes NULL or Debezium's placeholder for an unchanged TOASTed column (in
/// the column's own encoding), as Debezium sends them for any column.
fn column() -> impl Strategy<Value = Twin> {
    (value(), 0..10).prop_map(|(t, pick)| match pick {
        0 => twin(t.kind, Avro::Union(0, Box::new(Avro::Null)), Json::Null),
        1 => match t.kind {
            Kind::Bytes => twin(
                t.kind,
                Avro::Bytes(UNAVAILABLE.as_bytes().to_vec()),
                base64(UNAVAILABLE.as_bytes()),
            ),
            Kind::Other => twin(
                t.kind,
                Avro::Array(vec![Avro::String(UNAVAILABLE.into())]),
                json!([UNAVAILABLE]),
            ),
            kind => twin(kind, Avro::String(UNAVAILABLE.into()), json!(UNAVAILABLE)),
        },
        _ => twin(t.kind, Avro::Union(1, Box::new(t.avro)), t.json),
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2_000, ..ProptestConfig::default() })]

    #[test]
    fn json_and_avro_values_convert_alike(t in column()) {
        let from_avro = avro_value::convert(t.kind, t.avro.clone()).map(|v| format!("{v:?}"));
        let from_json = super::value::convert(t.kind, t.json.clone()).map(|v| format!("{v:?}"));
        match (&from_avro, &from_json) {
            (Ok(a), Ok(j)) => prop_assert_eq!(a, j, "{:?}", t),
            (Err(_), Err(_)) => {}
            _ => prop_assert!(false, "{:?}: avro {:?}, json {:?}", t, from_avro, from_json),
        }
    }
}
