//! Debezium change events in the real wire format, made up from templates: registers schemas
//! in a Confluent-compatible registry, encodes JSON records (Avro's JSON shape with unions
//! unwrapped, as in the recorded samples) to Avro through those schemas, and produces them
//! to Kafka. Used by the integration tests and the benches; the sink itself never uses it.
//!
//! One module per job: [`reference`] (the recorded schemas and samples), `history` (the
//! generated changes), `wire` (JSON -> Avro wire frames), `registry` (schema registration)
//! and `kafka` (topics and producing). Their items are re-exported here.

mod history;
mod kafka;
pub mod reference;
mod registry;
mod wire;

pub use history::{envelope, workload, Event, Table, Workload};
pub use kafka::{create_topic, delete_topics, produce_all, producer, WireRecord};
pub use registry::register;
pub use wire::WireEncoder;

use rdkafka::error::KafkaError;
use schema_registry_converter::error::SRCError;
use thiserror::Error;

/// Why generating or producing events failed.
#[derive(Debug, Error)]
pub enum LoadgenError {
    /// The registry refused or could not be reached.
    #[error("registering subject {subject} at {url}")]
    Register {
        /// Subject.
        subject: String,
        /// Registry URL.
        url: String,
        /// What went wrong.
        #[source]
        source: SRCError,
    },
    /// The schema text is not a valid Avro schema.
    #[error("invalid avro schema")]
    Schema(#[source] apache_avro::Error),
    /// The JSON record does not fit the schema.
    #[error("record does not fit the schema at {path}: {problem}")]
    Shape {
        /// Field path.
        path: String,
        /// What does not fit.
        problem: String,
    },
    /// apache-avro refused the value.
    #[error("avro encoding failed")]
    Encode(#[source] apache_avro::Error),
    /// Kafka failed.
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
}
