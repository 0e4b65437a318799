//! The compiled readers ([`super::binary`]) against apache-avro's generic decoder on
//! generated Debezium schemas and records: key and envelope schemas with random column
//! types (primitives, nullable unions either way round, Debezium and Connect semantic types,
//! Avro logical types, `VariableScaleDecimal`, now and then a column out of the compiled
//! readers' scope), random envelope layouts (field order, `source` fields, optional
//! `transaction` and timestamps, named or referenced row record) and random records, encoded
//! with apache-avro. Whenever a compiled reader takes a body apart, the generic path must
//! accept it and give the same change; a compiled reader may only decline (fall back) when
//! its schema is out of scope or the generic path rejects the body. The same holds for the
//! body cut one byte short.
//!
//! Beyond Debezium's columns, random Avro types ([`shapes`]: nested records, arrays, maps,
//! enums, fixed, multi-branch unions, decimals, logical types) appear as extra envelope
//! fields, which the compiled envelope reader must skip exactly, and now and then as a row
//! column, read by the generic decoder. Every body apache-avro writes must pass the layout
//! check that guards the generic decoder ([`BodyLayout`]), and every body cut short must
//! fail it. With one byte of the body changed, whatever the compiled reader accepts the
//! guarded generic path must accept alike.
//!
//! 256 cases by default (`PROPTEST_CASES` sets another number, `PROPTEST_RNG_SEED` fixes the
//! seed).

use apache_avro::types::Value;
use apache_avro::Decimal;
use proptest::prelude::*;
use serde_json::{json, Value as Json};

mod shapes;

use super::binary::{BodyLayout, EnvelopeReader, Misfit, RowReader};
use super::schema::{envelope_schema, key_schema, RowSchema};
use super::value::UNAVAILABLE;
use super::{decode_body, read_row, Envelope, Part};
use crate::registry::WriterSchema;
use shapes::{complex_shape, shape, Shape};

/// A column type as Debezium (or plain Avro) writes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Type {
    Int,
    Long,
    String,
    Boolean,
    Double,
    Float,
    Bytes,
    /// `io.debezium.time.MicroTimestamp`.
    MicroTimestamp,
    /// `io.debezium.time.Timestamp` (milliseconds).
    Timestamp,
    /// `io.debezium.time.NanoTimestamp`.
    NanoTimestamp,
    /// `io.debezium.time.ZonedTimestamp`.
    ZonedTimestamp,
    /// `io.debezium.data.Json`.
    Json,
    /// `io.debezium.data.Enum`.
    Enum,
    /// `io.debezium.time.Date`.
    Date,
    /// Connect `Date` with Avro `date`.
    ConnectDate,
    /// Connect `Timestamp` with Avro `timestamp-millis`.
    ConnectTimestamp,
    /// Connect `Time` with Avro `time-millis`.
    ConnectTime,
    /// Connect `Decimal` with Avro `decimal` (as Debezium writes it).
    Decimal(u8),
    /// Connect `Decimal` without the Avro logical type.
    PlainDecimal(u8),
    /// `io.debezium.data.VariableScaleDecimal`.
    VariableScaleDecimal,
    TimestampMicros,
    TimestampMillis,
    TimestampNanos,
    LocalTimestampMicros,
    AvroDate,
    TimeMicros,
    /// An array of strings: out of the compiled readers' scope.
    Array,
    /// `connect.name` and `logicalType` disagreeing (no producer writes these; apache-avro
    /// follows the logical type): `MicroTimestamp` marked `timestamp-millis`, Connect
    /// `Timestamp` marked `timestamp-micros`, Debezium `Date` marked `time-millis`. Out of
    /// the compiled readers' scope.
    MicrosAsMillis,
    MillisAsMicros,
    DateAsTime,
}

impl Type {
    /// Whether the compiled readers take a column of this type apart.
    fn in_scope(self) -> bool {
        !matches!(
            self,
            Type::Array | Type::MicrosAsMillis | Type::MillisAsMicros | Type::DateAsTime
        )
    }

    /// The schema of the type; `defined` says whether `VariableScaleDecimal` was defined
    /// earlier in the schema (then it is referenced by name).
    fn schema(self, defined: &mut bool) -> Json {
        let connect =
            |ty: &str, name: &str| json!({"type": ty, "connect.version": 1, "connect.name": name});
        let logical = |ty: &str, l: &str| json!({"type": ty, "logicalType": l});
        match self {
            Type::Int => json!("int"),
            Type::Long => json!("long"),
            Type::String => json!({"type": "string", "connect.default": "x"}),
            Type::Boolean => json!("boolean"),
            Type::Double => json!("double"),
            Type::Float => json!("float"),
            Type::Bytes => json!("bytes"),
            Type::MicroTimestamp => connect("long", "io.debezium.time.MicroTimestamp"),
            Type::Timestamp => connect("long", "io.debezium.time.Timestamp"),
            Type::NanoTimestamp => connect("long", "io.debezium.time.NanoTimestamp"),
            Type::ZonedTimestamp => connect("string", "io.debezium.time.ZonedTimestamp"),
            Type::Json => connect("string", "io.debezium.data.Json"),
            Type::Enum => {
                let mut e = connect("string", "io.debezium.data.Enum");
                e["connect.parameters"] = json!({"allowed": "a,b"});
                e
            }
            Type::Date => connect("int", "io.debezium.time.Date"),
            Type::ConnectDate => {
                let mut d = connect("int", "org.apache.kafka.connect.data.Date");
                d["logicalType"] = json!("date");
                d
            }
            Type::ConnectTimestamp => {
                let mut t = connect("long", "org.apache.kafka.connect.data.Timestamp");
                t["logicalType"] = json!("timestamp-millis");
                t
            }
            Type::ConnectTime => {
                let mut t = connect("int", "org.apache.kafka.connect.data.Time");
                t["logicalType"] = json!("time-millis");
                t
            }
            Type::Decimal(scale) | Type::PlainDecimal(scale) => {
                let mut d = connect("bytes", "org.apache.kafka.connect.data.Decimal");
                d["connect.parameters"] =
                    json!({"scale": scale.to_string(), "connect.decimal.precision": "38"});
                if let Type::Decimal(_) = self {
                    d["logicalType"] = json!("decimal");
                    d["precision"] = json!(38);
                    d["scale"] = json!(scale);
                }
                d
            }
            Type::VariableScaleDecimal if *defined => {
                json!("io.debezium.data.VariableScaleDecimal")
            }
            Type::VariableScaleDecimal => {
                *defined = true;
                json!({
                    "type": "record",
                    "name": "VariableScaleDecimal",
                    "namespace": "io.debezium.data",
                    "fields": [
                        {"name": "scale", "type": "int"},
                        {"name": "value", "type": "bytes"}
                    ],
                    "connect.doc": "Variable scaled decimal",
                    "connect.version": 1,
                    "connect.name": "io.debezium.data.VariableScaleDecimal"
                })
            }
            Type::TimestampMicros => logical("long", "timestamp-micros"),
            Type::TimestampMillis => logical("long", "timestamp-millis"),
            Type::TimestampNanos => logical("long", "timestamp-nanos"),
            Type::LocalTimestampMicros => logical("long", "local-timestamp-micros"),
            Type::AvroDate => logical("int", "date"),
            Type::TimeMicros => logical("long", "time-micros"),
            Type::Array => json!({"type": "array", "items": "string"}),
            Type::MicrosAsMillis => {
                let mut t = connect("long", "io.debezium.time.MicroTimestamp");
                t["logicalType"] = json!("timestamp-millis");
                t
            }
            Type::MillisAsMicros => {
                let mut t = connect("long", "org.apache.kafka.connect.data.Timestamp");
                t["logicalType"] = json!("timestamp-micros");
                t
            }
            Type::DateAsTime => {
                let mut d = connect("int", "io.debezium.time.Date");
                d["logicalType"] = json!("time-millis");
                d
            }
        }
    }

    /// Values of the type, as apache-avro takes them for encoding.
    fn values(self) -> BoxedStrategy<Value> {
        let text = prop_oneof![
            4 => "\\PC{0,6}",
            1 => Just(UNAVAILABLE.to_owned()),
        ];
        let bytes = prop_oneof![
            4 => prop::collection::vec(any::<u8>(), 0..6),
            1 => Just(UNAVAILABLE.as_bytes().to_vec()),
        ];
        let micros = prop_oneof![
            19 => -4_000_000_000_000_000_i64..4_000_000_000_000_000,
            1 => any::<i64>(),
        ];
        match self {
            Type::Int | Type::Date => any::<i32>().prop_map(Value::Int).boxed(),
            Type::Long | Type::MicroTimestamp | Type::Timestamp | Type::NanoTimestamp => {
                micros.prop_map(Value::Long).boxed()
            }
            Type::String | Type::Json | Type::Enum => text.prop_map(Value::String).boxed(),
            Type::ZonedTimestamp => prop_oneof![
                Just("2026-11-24T10:56:33.142906+01:00".to_owned()),
                Just("1970-01-01T00:00:00Z".to_owned()),
                Just(UNAVAILABLE.to_owned()),
                "\\PC{0,6}",
            ]
            .prop_map(Value::String)
            .boxed(),
            Type::Boolean => any::<bool>().prop_map(Value::Boolean).boxed(),
            Type::Double => any::<f64>()
                .prop_filter("NaN is not equal to itself", |f| !f.is_nan())
                .prop_map(Value::Double)
                .boxed(),
            Type::Float => any::<f32>()
                .prop_filter("NaN is not equal to itself", |f| !f.is_nan())
                .prop_map(Value::Float)
                .boxed(),
            Type::Bytes | Type::PlainDecimal(_) => bytes.prop_map(Value::Bytes).boxed(),
            Type::ConnectDate | Type::AvroDate => any::<i32>().prop_map(Value::Date).boxed(),
            Type::ConnectTimestamp | Type::TimestampMillis | Type::MicrosAsMillis => {
                micros.prop_map(Value::TimestampMillis).boxed()
            }
            Type::ConnectTime | Type::DateAsTime => {
                (0..86_400_000).prop_map(Value::TimeMillis).boxed()
            }
            // At least one byte, as Debezium writes them (apache-avro cannot write an empty
            // unscaled value; the compiled reader would read one as 0, the generic decoder
            // refuses it).
            Type::Decimal(_) => prop::collection::vec(any::<u8>(), 1..9)
                .prop_map(|b| Value::Decimal(Decimal::from(b)))
                .boxed(),
            Type::VariableScaleDecimal => (
                prop_oneof![19 => 0..12_i32, 1 => Just(-1)],
                prop::collection::vec(any::<u8>(), 0..9),
            )
                .prop_map(|(scale, value)| {
                    Value::Record(vec![
                        ("scale".into(), Value::Int(scale)),
                        ("value".into(), Value::Bytes(value)),
                    ])
                })
                .boxed(),
            Type::TimestampMicros | Type::MillisAsMicros => {
                micros.prop_map(Value::TimestampMicros).boxed()
            }
            Type::TimestampNanos => micros.prop_map(Value::TimestampNanos).boxed(),
            Type::LocalTimestampMicros => micros.prop_map(Value::LocalTimestampMicros).boxed(),
            Type::TimeMicros => (0..86_400_000_000_i64).prop_map(Value::TimeMicros).boxed(),
            Type::Array => prop::collection::vec(text, 0..3)
                .prop_map(|items| Value::Array(items.into_iter().map(Value::String).collect()))
                .boxed(),
        }
    }
}

fn any_type() -> impl Strategy<Value = Type> {
    prop_oneof![
        12 => prop_oneof![
            Just(Type::Int),
            Just(Type::Long),
            Just(Type::String),
            Just(Type::Boolean),
            Just(Type::Double),
            Just(Type::Float),
            Just(Type::Bytes),
        ],
        16 => prop_oneof![
            Just(Type::MicroTimestamp),
            Just(Type::Timestamp),
            Just(Type::NanoTimestamp),
            Just(Type::ZonedTimestamp),
            Just(Type::Json),
            Just(Type::Enum),
            Just(Type::Date),
            Just(Type::ConnectDate),
            Just(Type::ConnectTimestamp),
            Just(Type::ConnectTime),
            (0..6_u8).prop_map(Type::Decimal),
            (0..6_u8).prop_map(Type::PlainDecimal),
            Just(Type::VariableScaleDecimal),
        ],
        8 => prop_oneof![
            Just(Type::TimestampMicros),
            Just(Type::TimestampMillis),
            Just(Type::TimestampNanos),
            Just(Type::LocalTimestampMicros),
            Just(Type::AvroDate),
            Just(Type::TimeMicros),
        ],
        // Out of scope: the whole schema goes through the generic decoder.
        1 => prop_oneof![
            Just(Type::Array),
            Just(Type::MicrosAsMillis),
            Just(Type::MillisAsMicros),
            Just(Type::DateAsTime),
        ],
    ]
}

/// A column: its type and whether it is nullable (`Some(true)`: `["null", T]`,
/// `Some(false)`: `[T, "null"]`, as Debezium writes columns with defaults).
#[derive(Debug, Clone)]
struct Column {
    ty: Type,
    nullable: Option<bool>,
    /// A type beyond Debezium's instead of `ty` (never nullable: it may be a union).
    nested: Option<Shape>,
}

impl Column {
    fn in_scope(&self) -> bool {
        self.nested.is_none() && self.ty.in_scope()
    }

    fn schema(&self, name: &str, defined: &mut bool, names: &mut usize) -> Json {
        if let Some(shape) = &self.nested {
            return json!({"name": name, "type": shape.schema(names)});
        }
        let ty = self.ty.schema(defined);
        let ty = match self.nullable {
            None => ty,
            Some(true) => json!(["null", ty]),
            Some(false) => json!([ty, "null"]),
        };
        json!({"name": name, "type": ty})
    }

    /// A value of the column (null only when nullable), as encoded.
    fn values(&self) -> BoxedStrategy<Value> {
        if let Some(shape) = &self.nested {
            return shape.values();
        }
        let values = self.ty.values();
        match self.nullable {
            None => values,
            Some(null_first) => {
                let (null, value) = if null_first { (0, 1) } else { (1, 0) };
                prop_oneof![
                    1 => Just(Value::Union(null, Box::new(Value::Null))),
                    3 => values.prop_map(move |v| Value::Union(value, Box::new(v))),
                ]
                .boxed()
            }
        }
    }
}

fn column() -> impl Strategy<Value = Column> {
    (
        any_type(),
        prop::option::of(any::<bool>()),
        prop::option::weighted(0.03, complex_shape()),
    )
        .prop_map(|(ty, nullable, nested)| Column {
            ty,
            nullable: nullable.filter(|_| nested.is_none()),
            nested,
        })
}

/// Fields of the `source` block, in Debezium's order.
const SOURCE_FIELDS: [&str; 9] = [
    "version",
    "connector",
    "ts_ms",
    "snapshot",
    "db",
    "sequence",
    "txId",
    "lsn",
    "xmin",
];

/// An envelope schema.
#[derive(Debug, Clone)]
struct Layout {
    /// Key columns.
    key: Vec<Column>,
    /// Row columns.
    row: Vec<Column>,
    /// Whether the envelope has a `before` field.
    before: bool,
    /// `after` ahead of `before`.
    after_first: bool,
    /// The row record named `ns.Value` instead of `Value` in the envelope's namespace.
    qualified: bool,
    /// Which `source` fields exist (bit n: `SOURCE_FIELDS[n]`), rotated by `rotate`.
    source: u16,
    rotate: u8,
    /// Whether `source.lsn` is nullable, `source.ts_ms` an `int`.
    lsn_nullable: bool,
    ts_int: bool,
    transaction: bool,
    /// `ts_ms`: absent, `long` or nullable.
    ts_ms: Option<bool>,
    /// `ts_us` and `ts_ns` after `ts_ms`.
    ts_us: bool,
    /// Extra envelope fields `x0`, `x1`, ... of random types, each at a position (modulo
    /// the number of fields before it).
    extras: Vec<(usize, Shape)>,
}

/// Names of the extra envelope fields.
const EXTRAS: [&str; 3] = ["x0", "x1", "x2"];

fn layout() -> impl Strategy<Value = Layout> {
    (
        prop::collection::vec(column(), 1..=3),
        prop::collection::vec(column(), 1..=8),
        prop::bool::weighted(0.9),
        prop::bool::weighted(0.2),
        any::<bool>(),
        any::<u16>(),
        any::<u8>(),
        (any::<bool>(), prop::bool::weighted(0.1)),
        (
            any::<bool>(),
            prop::option::of(any::<bool>()),
            any::<bool>(),
        ),
        prop::collection::vec((any::<usize>(), shape()), 0..=EXTRAS.len()),
    )
        .prop_map(
            |(key, row, before, after_first, qualified, source, rotate, lsn, ts, extras)| Layout {
                key,
                row,
                before,
                after_first,
                qualified,
                source,
                rotate,
                lsn_nullable: lsn.0,
                ts_int: lsn.1,
                transaction: ts.0,
                ts_ms: ts.1,
                ts_us: ts.2,
                extras,
            },
        )
}

/// One generated record: the key and the envelope fields, in schema order.
#[derive(Debug, Clone)]
struct Record {
    key: Value,
    envelope: Value,
}

impl Layout {
    fn key_schema(&self) -> Json {
        let (mut defined, mut names) = (false, 0);
        let fields: Vec<Json> = (self.key.iter().enumerate())
            .map(|(i, c)| c.schema(&format!("k{i}"), &mut defined, &mut names))
            .collect();
        json!({"type": "record", "name": "Key", "namespace": "cdc.public.t", "fields": fields})
    }

    fn source_fields(&self) -> Vec<&'static str> {
        let mut fields: Vec<&str> = SOURCE_FIELDS
            .iter()
            .enumerate()
            .filter(|(n, _)| self.source & (1 << n) != 0)
            .map(|(_, f)| *f)
            .collect();
        if !fields.is_empty() {
            let by = usize::from(self.rotate) % fields.len();
            fields.rotate_left(by);
        }
        fields
    }

    /// The envelope's fields in order, with their schemas.
    fn envelope_fields(&self) -> Vec<(&'static str, Json)> {
        let (mut defined, mut names) = (false, 0);
        let name = if self.qualified {
            "cdc.public.t.Value"
        } else {
            "Value"
        };
        let columns: Vec<Json> = (self.row.iter().enumerate())
            .map(|(i, c)| c.schema(&format!("c{i}"), &mut defined, &mut names))
            .collect();
        let record = json!({"type": "record", "name": name, "fields": columns,
            "connect.name": "cdc.public.t.Value"});
        // The first of `before` and `after` defines the row record, the other names it.
        let (first, second) = if self.before && !self.after_first {
            ("before", "after")
        } else {
            ("after", "before")
        };
        let mut rows = vec![(first, json!(["null", record]))];
        if self.before {
            rows.push((second, json!(["null", name])));
        }
        let source: Vec<Json> = self
            .source_fields()
            .into_iter()
            .map(|f| {
                let ty = match f {
                    "ts_ms" if self.ts_int => json!("int"),
                    "ts_ms" => json!("long"),
                    "lsn" if self.lsn_nullable => json!(["null", "long"]),
                    "lsn" => json!("long"),
                    "txId" | "xmin" => json!(["null", "long"]),
                    "sequence" => json!(["null", "string"]),
                    "snapshot" => json!([{"type": "string", "connect.default": "false",
                        "connect.name": "io.debezium.data.Enum"}, "null"]),
                    _ => json!("string"),
                };
                json!({"name": f, "type": ty})
            })
            .collect();
        let mut fields = rows;
        fields.push((
            "source",
            json!({"type": "record", "name": "Source",
                "namespace": "io.debezium.connector.postgresql", "fields": source}),
        ));
        if self.transaction {
            fields.push((
                "transaction",
                json!(["null", {"type": "record", "name": "block", "namespace": "event",
                    "fields": [{"name": "id", "type": "string"},
                               {"name": "total_order", "type": "long"}]}]),
            ));
        }
        fields.push(("op", json!("string")));
        match self.ts_ms {
            None => {}
            Some(true) => fields.push(("ts_ms", json!(["null", "long"]))),
            Some(false) => fields.push(("ts_ms", json!("long"))),
        }
        if self.ts_us {
            fields.push(("ts_us", json!(["null", "long"])));
            fields.push(("ts_ns", json!(["null", "long"])));
        }
        for (name, (at, shape)) in EXTRAS.iter().zip(&self.extras) {
            let at = at % (fields.len() + 1);
            fields.insert(at, (name, shape.schema(&mut names)));
        }
        fields
    }

    fn envelope_schema(&self) -> Json {
        let fields: Vec<Json> = self
            .envelope_fields()
            .into_iter()
            .map(|(name, ty)| json!({"name": name, "type": ty}))
            .collect();
        json!({"type": "record", "name": "Envelope", "namespace": "cdc.public.t",
            "fields": fields, "connect.name": "cdc.public.t.Envelope"})
    }

    fn in_scope(&self) -> (bool, bool) {
        let all = |columns: &[Column]| columns.iter().all(Column::in_scope);
        (all(&self.key), all(&self.row))
    }

    fn records(&self) -> impl Strategy<Value = Record> {
        let row = |columns: &[Column], prefix: &'static str| {
            columns
                .iter()
                .enumerate()
                .map(|(i, c)| c.values().prop_map(move |v| (format!("{prefix}{i}"), v)))
                .collect::<Vec<_>>()
                .prop_map(Value::Record)
        };
        let optional_row = |present: f64| {
            prop::option::weighted(present, row(&self.row, "c")).prop_map(|r| match r {
                Some(r) => Value::Union(1, Box::new(r)),
                None => Value::Union(0, Box::new(Value::Null)),
            })
        };
        // Mostly what Debezium sends for the op, now and then not (both paths must refuse).
        let op = prop_oneof![
            20 => prop::sample::select(vec!["r", "c", "u", "d", "t"]).prop_map(str::to_owned),
            1 => "\\PC{0,2}",
        ];
        let long = || {
            prop_oneof![
                1 => Just(Value::Union(0, Box::new(Value::Null))),
                3 => any::<i64>().prop_map(|v| Value::Union(1, Box::new(Value::Long(v)))),
            ]
        };
        let fields = self.envelope_fields();
        let ts_int = self.ts_int;
        let lsn_nullable = self.lsn_nullable;
        let values: Vec<BoxedStrategy<(String, Value)>> = fields
            .iter()
            .map(|(name, ty)| {
                let value: BoxedStrategy<Value> = match *name {
                    "before" => optional_row(0.5).boxed(),
                    "after" => optional_row(0.9).boxed(),
                    "op" => op.clone().prop_map(Value::String).boxed(),
                    "ts_ms" if ty.is_array() => long().boxed(),
                    "ts_ms" => any::<i64>().prop_map(Value::Long).boxed(),
                    "ts_us" | "ts_ns" => long().boxed(),
                    extra if EXTRAS.contains(&extra) => {
                        let n = EXTRAS.iter().position(|x| *x == extra).unwrap_or_default();
                        self.extras[n].1.values()
                    }
                    "transaction" => prop_oneof![
                        Just(Value::Union(0, Box::new(Value::Null))),
                        any::<i64>().prop_map(|n| Value::Union(
                            1,
                            Box::new(Value::Record(vec![
                                ("id".into(), Value::String(format!("{n}:1"))),
                                ("total_order".into(), Value::Long(n)),
                            ]))
                        )),
                    ]
                    .boxed(),
                    _ => {
                        let source: Vec<BoxedStrategy<(String, Value)>> = self
                            .source_fields()
                            .into_iter()
                            .map(|f| {
                                let v: BoxedStrategy<Value> = match f {
                                    "ts_ms" if ts_int => any::<i32>().prop_map(Value::Int).boxed(),
                                    "ts_ms" => any::<i64>().prop_map(Value::Long).boxed(),
                                    "lsn" if lsn_nullable => long().boxed(),
                                    "lsn" => any::<i64>().prop_map(Value::Long).boxed(),
                                    "txId" | "xmin" => long().boxed(),
                                    "sequence" => prop_oneof![
                                        Just(Value::Union(0, Box::new(Value::Null))),
                                        Just(Value::Union(
                                            1,
                                            Box::new(Value::String("[\"1\",\"2\"]".into()))
                                        )),
                                    ]
                                    .boxed(),
                                    "snapshot" => Just(Value::Union(
                                        0,
                                        Box::new(Value::String("false".into())),
                                    ))
                                    .boxed(),
                                    _ => "\\PC{0,4}".prop_map(Value::String).boxed(),
                                };
                                v.prop_map(move |v| (f.to_owned(), v)).boxed()
                            })
                            .collect();
                        source.prop_map(Value::Record).boxed()
                    }
                };
                let name = (*name).to_owned();
                value.prop_map(move |v| (name.clone(), v)).boxed()
            })
            .collect();
        (row(&self.key, "k"), values.prop_map(Value::Record))
            .prop_map(|(key, envelope)| Record { key, envelope })
    }
}

fn case() -> impl Strategy<Value = (Layout, Record)> {
    layout().prop_flat_map(|layout| {
        let records = layout.records();
        (Just(layout), records)
    })
}

/// What both paths must agree on (compared by their `Debug` text, which is exact for
/// floats and equal for the NaN a changed byte can make).
type Parts<'a> = (
    mapping::Op,
    &'a Option<mapping::Row>,
    &'a Option<mapping::Row>,
    Option<i64>,
    Option<i64>,
    Option<i64>,
);

fn parts(e: &Envelope) -> Parts<'_> {
    (e.op, &e.before, &e.after, e.lsn, e.source_ts_ms, e.ts_ms)
}

/// The envelope `body` through both paths: the compiled reader, and the generic decoder
/// behind its layout check as the sink runs it.
fn check_envelope(
    writer: &WriterSchema,
    row: &RowSchema,
    reader: Option<&EnvelopeReader>,
    in_scope: bool,
    body: &[u8],
) -> Result<(), TestCaseError> {
    let layout = BodyLayout::compile(&writer.json);
    let generic = decode_body(Part::Value, writer, layout.as_ref(), body)
        .and_then(|record| Envelope::read(writer.id, row, record));
    match (reader.and_then(|r| r.read(body, row)), &generic) {
        (Some(fast), Ok(generic)) => prop_assert_eq!(
            format!("{:?}", parts(&fast)),
            format!("{:?}", parts(generic))
        ),
        (Some(fast), Err(e)) => {
            return Err(TestCaseError::fail(format!(
                "the compiled reader read {:?}, the generic decoder failed: {e:#}",
                parts(&fast)
            )))
        }
        (None, Ok(generic)) => prop_assert!(
            !in_scope,
            "the compiled reader declined an in-scope body the generic decoder read as {:?}",
            parts(generic)
        ),
        (None, Err(_)) => {}
    }
    Ok(())
}

/// The key `body` through both paths.
fn check_key(
    writer: &WriterSchema,
    row: &RowSchema,
    reader: Option<&RowReader>,
    in_scope: bool,
    body: &[u8],
) -> Result<(), TestCaseError> {
    let layout = BodyLayout::compile(&writer.json);
    let generic =
        decode_body(Part::Key, writer, layout.as_ref(), body).and_then(|record| match record {
            Value::Record(fields) => read_row(Part::Key, writer.id, row, fields),
            other => panic!("key decoded as {other:?}"),
        });
    match (reader.and_then(|r| r.read_key(body, row)), &generic) {
        (Some(fast), Ok(generic)) => {
            prop_assert_eq!(format!("{fast:?}"), format!("{generic:?}"))
        }
        (Some(fast), Err(e)) => {
            return Err(TestCaseError::fail(format!(
                "the compiled reader read key {fast:?}, the generic decoder failed: {e:#}"
            )))
        }
        (None, Ok(generic)) => prop_assert!(
            !in_scope,
            "the compiled reader declined an in-scope key the generic decoder read as {generic:?}"
        ),
        (None, Err(_)) => {}
    }
    Ok(())
}

/// The layout check accepts what apache-avro wrote, and refuses it cut one byte short.
fn check_layout(writer: &WriterSchema, body: &[u8]) -> Result<(), TestCaseError> {
    let layout = BodyLayout::compile(&writer.json);
    prop_assert!(layout.is_some(), "no layout for {}", writer.text);
    let layout = layout.unwrap_or_else(|| unreachable!());
    prop_assert_eq!(
        layout.check(body),
        Ok(()),
        "a body apache-avro wrote was refused"
    );
    prop_assert!(
        body.is_empty()
            || matches!(
                layout.check(&body[..body.len() - 1]),
                Err(Misfit::Malformed { .. })
            ),
        "a body cut short passed"
    );
    Ok(())
}

/// `body` with the byte at `at` (modulo its length) xor-ed with `with` (not 0).
fn flipped(body: &[u8], (at, with): (prop::sample::Index, u8)) -> Vec<u8> {
    let mut out = body.to_vec();
    out[at.index(body.len())] ^= with.max(1);
    out
}

/// The Avro body of `value`, as apache-avro writes it.
fn encode(writer: &WriterSchema, value: Value) -> Vec<u8> {
    apache_avro::writer::datum::GenericDatumWriter::builder(&writer.avro)
        .build()
        .and_then(|w| w.write_value_to_vec(value))
        .unwrap_or_else(|e| panic!("schema {} does not encode the value: {e}", writer.text))
}

/// `PROPTEST_CASES`, or 256.
fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(256)
}

/// Key and envelope of `record` through both paths: whole, cut one byte short, and with
/// one byte changed.
fn readers_agree(
    layout: &Layout,
    record: Record,
    flip: (prop::sample::Index, u8),
) -> Result<(), TestCaseError> {
    let (key_in_scope, row_in_scope) = layout.in_scope();

    let key_writer = WriterSchema::parse(1, layout.key_schema().to_string()).expect("key schema");
    let key_row = key_schema(&key_writer.json).expect("key shape");
    let keys = RowReader::for_key(&key_writer.json, &key_row);
    prop_assert_eq!(keys.is_some(), key_in_scope, "key reader compiled");
    let key = encode(&key_writer, record.key);
    check_layout(&key_writer, &key)?;
    check_key(&key_writer, &key_row, keys.as_ref(), key_in_scope, &key)?;
    // (A key of columns that take no bytes, such as an empty record, has an empty body.)
    if !key.is_empty() {
        let short = &key[..key.len() - 1];
        check_key(&key_writer, &key_row, keys.as_ref(), false, short)?;
        let changed = flipped(&key, flip);
        check_key(&key_writer, &key_row, keys.as_ref(), false, &changed)?;
    }

    let writer = WriterSchema::parse(2, layout.envelope_schema().to_string()).expect("schema");
    let row = envelope_schema(&writer.json).expect("envelope shape");
    let envelopes = EnvelopeReader::compile(&writer.json, &row);
    prop_assert_eq!(
        envelopes.is_some(),
        row_in_scope,
        "envelope reader compiled"
    );
    let body = encode(&writer, record.envelope);
    check_layout(&writer, &body)?;
    check_envelope(&writer, &row, envelopes.as_ref(), row_in_scope, &body)?;
    let short = &body[..body.len() - 1];
    check_envelope(&writer, &row, envelopes.as_ref(), false, short)?;
    let changed = flipped(&body, flip);
    check_envelope(&writer, &row, envelopes.as_ref(), false, &changed)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn compiled_readers_read_as_the_generic_decoder_reads(
        (layout, record) in case(),
        flip in any::<(prop::sample::Index, u8)>(),
    ) {
        readers_agree(&layout, record, flip)?;
    }
}
