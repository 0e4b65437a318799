//! The decoder against the real schema registry (`SCHEMA_REGISTRY_URL`): what Debezium
//! 3.6.3 recorded (through AvroConverter and JsonConverter), column types beyond it, and
//! the records it must refuse. One test binary; the modules share [`support`]'s fixtures,
//! registered under subjects of each run's own.

mod errors;
mod fixtures;
mod fuzz_smoke;
mod json;
mod support;
mod types;
