//! The recorded Debezium 3.6.3 fixtures the generated workloads start from
//! (`schemas/debezium/`, `tests/fixtures/debezium/`), embedded so the benches run from
//! anywhere.

use serde_json::Value as Json;

/// Registry entry of the customers key schema.
pub const CUSTOMER_KEY: &str =
    include_str!("../../../schemas/debezium/cdc.public.customers-key.v1.id1.json");
/// Registry entry of the customers value schema.
pub const CUSTOMER_VALUE: &str =
    include_str!("../../../schemas/debezium/cdc.public.customers-value.v1.id2.json");
/// Registry entry of the orders key schema.
pub const ORDER_KEY: &str =
    include_str!("../../../schemas/debezium/cdc.public.orders-key.v1.id3.json");
/// Registry entry of the orders value schema.
pub const ORDER_VALUE: &str =
    include_str!("../../../schemas/debezium/cdc.public.orders-value.v1.id4.json");
/// A recorded customers insert.
pub const CUSTOMER_SAMPLE: &str =
    include_str!("../../../tests/fixtures/debezium/avro-customers-op_c-insert.json");
/// A recorded orders insert.
pub const ORDER_SAMPLE: &str =
    include_str!("../../../tests/fixtures/debezium/avro-orders-op_c-insert.json");

/// The Avro schema text of a recorded registry entry (its `schema` field).
pub fn schema_text(entry: &str) -> Result<String, serde_json::Error> {
    let json: Json = serde_json::from_str(entry)?;
    Ok(json["schema"].to_string())
}

/// The Debezium envelope (`value`) of a recorded record: the template of generated rows.
pub fn envelope_of(sample: &str) -> Result<Json, serde_json::Error> {
    Ok(serde_json::from_str::<Json>(sample)?["value"].clone())
}
