//! The sink: Debezium change events (Avro, Confluent wire format) from Kafka, applied to the
//! Redis read model that `connectors.yaml` describes.
//!
//! # Layout
//!
//! The data path, in the order a record takes it:
//! - [`pipeline`]: consume -> decode -> plan -> apply, at least once; partitions in parallel,
//!   each in order. Started by [`pipeline::Pipeline::connect`] and
//!   [`pipeline::Pipeline::start`], the same for every subcommand.
//! - [`decode`]: wire bytes -> [`mapping::change::Change`] (Debezium envelope, logical types),
//!   with writer schemas from the [`registry`] (by id, cached). [`mapping::plan`] then turns a
//!   change into a write plan.
//! - [`apply`]: write plans -> Redis, through the change script or the exclusive writer.
//! - [`dlq`]: poison records to the dead-letter topic.
//!
//! The process around it:
//! - [`cli`]: the command line; [`config`]: the resolved configuration it yields;
//!   [`properties`]: librdkafka property values read from the environment or a file.
//! - [`run`]: `sink run`, with [`reload`]: the configuration re-read on SIGHUP;
//!   [`rebuild`]: `sink rebuild` (replay into a staging database, then an atomic `SWAPDB`);
//!   [`validate`]: `sink validate`.
//! - [`memory`]: Redis memory: the `maxmemory-policy` check at start, and the guard that
//!   pauses consumption while Redis is full.
//! - [`health`]: start-up checks of Redis, the registry and the broker; [`connection`]:
//!   Redis clients (URL, ACL user, TLS) and connection pools; [`shutdown`]: SIGINT/SIGTERM to
//!   a cancellation token. [`properties`]: `${env:NAME}` and `${file:PATH}` in Kafka
//!   properties.

pub mod apply;
pub mod cli;
pub mod config;
pub mod connection;
pub mod decode;
pub mod dlq;
pub mod health;
pub mod memory;
pub mod pipeline;
pub mod properties;
pub mod readiness;
pub mod rebuild;
pub mod registry;
pub mod reload;
pub mod run;
pub mod shutdown;
pub mod telemetry;
pub mod validate;
