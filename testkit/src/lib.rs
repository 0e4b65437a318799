//! Harness for the sink's integration tests and benchmarks: everything needed to put
//! realistic Debezium change events on Kafka and to drive a bench binary. The product crates
//! never depend on it except as a dev-dependency.
//!
//! # Layout
//! - [`loadgen`]: generated change histories, encoded in the Confluent wire format with
//!   schemas registered in the registry, produced to Kafka topics the harness creates.
//! - [`bench`]: the `main` of a bench binary and Redis's CPU counter that benches report.

pub mod bench;
pub mod loadgen;
