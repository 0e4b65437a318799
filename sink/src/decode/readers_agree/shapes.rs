//! Random Avro types beyond Debezium's columns, with random values of them: nested records,
//! arrays and maps of anything, enums, fixed, unions of several branches, decimals and
//! logical types. They go where the compiled readers must skip them (extra envelope
//! fields) or decline (row columns, read by the generic decoder), and every body must pass
//! the layout check.

use std::collections::HashMap;

use apache_avro::types::Value;
use apache_avro::Decimal;
use proptest::prelude::*;
use serde_json::{json, Value as Json};

/// An Avro type.
#[derive(Debug, Clone)]
pub(super) enum Shape {
    /// A primitive type by name.
    Primitive(&'static str),
    /// `int` with `date`, `long` with `timestamp-micros`, `bytes` with `decimal`.
    Date,
    TimestampMicros,
    Decimal,
    /// An enum with this many symbols (`S0`, `S1`, ...).
    Enum(usize),
    /// A fixed of this size.
    Fixed(usize),
    Array(Box<Shape>),
    Map(Box<Shape>),
    Record(Vec<Shape>),
    /// Branches: distinct primitives, then at most one complex type.
    Union(Vec<Shape>),
}

const PRIMITIVES: [&str; 8] = [
    "null", "boolean", "int", "long", "float", "double", "bytes", "string",
];

fn leaf() -> impl Strategy<Value = Shape> {
    prop_oneof![
        8 => prop::sample::select(&PRIMITIVES[..]).prop_map(Shape::Primitive),
        1 => Just(Shape::Date),
        1 => Just(Shape::TimestampMicros),
        1 => Just(Shape::Decimal),
        1 => (1..4_usize).prop_map(Shape::Enum),
        1 => (0..5_usize).prop_map(Shape::Fixed),
    ]
}

/// Any type, nested up to three levels.
pub(super) fn shape() -> impl Strategy<Value = Shape> {
    leaf().prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            inner.clone().prop_map(|s| Shape::Array(Box::new(s))),
            inner.clone().prop_map(|s| Shape::Map(Box::new(s))),
            prop::collection::vec(inner.clone(), 0..4).prop_map(Shape::Record),
            (
                prop::sample::subsequence(&PRIMITIVES[..], 1..4),
                prop::option::of(inner.prop_filter("one complex branch", Shape::is_complex)),
            )
                .prop_map(|(primitives, complex)| {
                    let mut branches: Vec<Shape> =
                        primitives.into_iter().map(Shape::Primitive).collect();
                    branches.extend(complex);
                    Shape::Union(branches)
                }),
        ]
    })
}

/// A type that is not a primitive (a row column of it is out of the compiled readers'
/// scope).
pub(super) fn complex_shape() -> impl Strategy<Value = Shape> {
    shape().prop_filter("complex", |s| {
        s.is_complex() || matches!(s, Shape::Union(b) if b.len() > 2)
    })
}

impl Shape {
    /// Not a primitive, logical type or union (may be a union's last branch).
    fn is_complex(&self) -> bool {
        matches!(
            self,
            Shape::Enum(_) | Shape::Fixed(_) | Shape::Array(_) | Shape::Map(_) | Shape::Record(_)
        )
    }

    /// The schema; `names` numbers the named types (records, enums, fixed) of one schema.
    pub(super) fn schema(&self, names: &mut usize) -> Json {
        let mut name = |prefix: &str| {
            *names += 1;
            format!("{prefix}{names}")
        };
        match self {
            Shape::Primitive(p) => json!(p),
            Shape::Date => json!({"type": "int", "logicalType": "date"}),
            Shape::TimestampMicros => json!({"type": "long", "logicalType": "timestamp-micros"}),
            Shape::Decimal => {
                json!({"type": "bytes", "logicalType": "decimal", "precision": 38, "scale": 2})
            }
            Shape::Enum(n) => {
                let symbols: Vec<String> = (0..*n).map(|i| format!("S{i}")).collect();
                json!({"type": "enum", "name": name("E"), "symbols": symbols})
            }
            Shape::Fixed(size) => json!({"type": "fixed", "name": name("F"), "size": size}),
            Shape::Array(items) => json!({"type": "array", "items": items.schema(names)}),
            Shape::Map(values) => json!({"type": "map", "values": values.schema(names)}),
            Shape::Record(fields) => {
                let record = name("R");
                let fields: Vec<Json> = (fields.iter().enumerate())
                    .map(|(i, f)| json!({"name": format!("f{i}"), "type": f.schema(names)}))
                    .collect();
                json!({"type": "record", "name": record, "fields": fields})
            }
            Shape::Union(branches) => {
                Json::Array(branches.iter().map(|b| b.schema(names)).collect())
            }
        }
    }

    /// Values of the type, as apache-avro takes them for encoding.
    pub(super) fn values(&self) -> BoxedStrategy<Value> {
        match self {
            Shape::Primitive(p) => match *p {
                "null" => Just(Value::Null).boxed(),
                "boolean" => any::<bool>().prop_map(Value::Boolean).boxed(),
                "int" => any::<i32>().prop_map(Value::Int).boxed(),
                "long" => any::<i64>().prop_map(Value::Long).boxed(),
                "float" => any::<f32>()
                    .prop_filter("NaN is not equal to itself", |f| !f.is_nan())
                    .prop_map(Value::Float)
                    .boxed(),
                "double" => any::<f64>()
                    .prop_filter("NaN is not equal to itself", |f| !f.is_nan())
                    .prop_map(Value::Double)
                    .boxed(),
                "bytes" => prop::collection::vec(any::<u8>(), 0..6)
                    .prop_map(Value::Bytes)
                    .boxed(),
                _ => "\\PC{0,6}".prop_map(Value::String).boxed(),
            },
            Shape::Date => any::<i32>().prop_map(Value::Date).boxed(),
            Shape::TimestampMicros => any::<i64>().prop_map(Value::TimestampMicros).boxed(),
            Shape::Decimal => prop::collection::vec(any::<u8>(), 1..9)
                .prop_map(|b| Value::Decimal(Decimal::from(b)))
                .boxed(),
            Shape::Enum(n) => (0..*n)
                .prop_map(|i| Value::Enum(i as u32, format!("S{i}")))
                .boxed(),
            Shape::Fixed(size) => {
                let size = *size;
                prop::collection::vec(any::<u8>(), size)
                    .prop_map(move |b| Value::Fixed(size, b))
                    .boxed()
            }
            Shape::Array(items) => prop::collection::vec(items.values(), 0..4)
                .prop_map(Value::Array)
                .boxed(),
            Shape::Map(values) => prop::collection::hash_map("\\PC{0,3}", values.values(), 0..4)
                .prop_map(|m: HashMap<String, Value>| Value::Map(m))
                .boxed(),
            Shape::Record(fields) => fields
                .iter()
                .enumerate()
                .map(|(i, f)| f.values().prop_map(move |v| (format!("f{i}"), v)))
                .collect::<Vec<_>>()
                .prop_map(Value::Record)
                .boxed(),
            Shape::Union(branches) => {
                let options: Vec<BoxedStrategy<Value>> = (branches.iter().enumerate())
                    .map(|(i, b)| {
                        b.values()
                            .prop_map(move |v| Value::Union(i as u32, Box::new(v)))
                            .boxed()
                    })
                    .collect();
                proptest::strategy::Union::new(options).boxed()
            }
        }
    }
}
