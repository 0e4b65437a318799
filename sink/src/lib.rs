//! The sink: Debezium change events (Avro, Confluent wire format) from Kafka, applied to the
//! Redis read model that `connectors.yaml` describes.
//!
//! # Layout
//! - [`registry`]: fetches writer schemas by id from a Confluent-compatible registry, cached.
//! - [`decode`]: wire bytes -> [`mapping::change::Change`] (Debezium envelope, logical types).
//! - [`apply`]: write plans -> atomic, idempotent Lua (each change on its own), one pipeline
//!   per batch.
//! - [`config`]: command line and layered configuration.
//! - [`consume`]: the consumer loop: partitions in parallel, each in order; at-least-once.
//! - [`dlq`]: poison records to the dead-letter topic.
//! - [`health`]: start-up checks of Redis, the registry and the broker.
//! - [`run`]: `sink run` and `sink validate`: health checks, then the consumer loop.
//! - [`rebuild`]: `sink rebuild`: replay into a staging database, then an atomic `SWAPDB`.

pub mod apply;
pub mod config;
pub mod consume;
pub mod decode;
pub mod dlq;
pub mod health;
pub mod rebuild;
pub mod registry;
pub mod run;
