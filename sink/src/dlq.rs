//! Poison records (undecodable, unmappable) go to the dead-letter topic, byte for byte, with
//! their origin and the error in headers, so that the sink can move on and an operator can
//! inspect or replay them later.
//!
//! Headers: the record's own headers first, then `dlq.topic`, `dlq.partition`, `dlq.offset`
//! and `dlq.error` (UTF-8 text). The key, value and timestamp are copied unchanged.
//! [`DeadLetters::send`] waits for the broker's acknowledgement: the record's offset is stored
//! only after its dead letter is safe.

use std::time::Duration;

use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Header, Headers, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::util::Timeout;
use rdkafka::{ClientConfig, Message};
use thiserror::Error;

/// How long one dead letter may wait in the producer queue before the send fails (and is
/// retried by the caller).
const SEND_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a dead letter could not be written.
#[derive(Debug, Error)]
pub enum DlqError {
    /// The producer could not be created from the configuration.
    #[error("cannot create the dead-letter producer")]
    Create(#[source] KafkaError),
    /// The broker did not acknowledge the dead letter.
    #[error("cannot write record {origin} to dead-letter topic {dlq_topic}")]
    Send {
        /// The dead-letter topic.
        dlq_topic: String,
        /// Origin, `topic/partition@offset`.
        origin: String,
        /// What librdkafka reported.
        #[source]
        source: Box<KafkaError>,
    },
}

/// Writes poison records to the dead-letter topic.
pub struct DeadLetters {
    producer: FutureProducer,
    topic: String,
}

impl std::fmt::Debug for DeadLetters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeadLetters")
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

impl DeadLetters {
    /// A producer for `topic` with the given client settings.
    pub fn new(config: &ClientConfig, topic: &str) -> Result<DeadLetters, DlqError> {
        let producer = config.create().map_err(DlqError::Create)?;
        Ok(DeadLetters {
            producer,
            topic: topic.to_owned(),
        })
    }

    /// The dead-letter topic.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Copies `message` to the dead-letter topic with `error` and its origin in headers, and
    /// waits for the acknowledgement.
    pub async fn send(&self, message: &BorrowedMessage<'_>, error: &str) -> Result<(), DlqError> {
        let origin = Origin {
            topic: message.topic(),
            partition: message.partition(),
            offset: message.offset(),
        };
        let mut headers = OwnedHeaders::new();
        if let Some(original) = message.headers() {
            for header in original.iter() {
                headers = headers.insert(header);
            }
        }
        self.send_raw(
            origin,
            message.key(),
            message.payload(),
            message.timestamp().to_millis(),
            headers,
            error,
        )
        .await
    }

    /// Like [`DeadLetters::send`] for a record given by parts.
    pub async fn send_raw(
        &self,
        origin: Origin<'_>,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        timestamp_ms: Option<i64>,
        headers: OwnedHeaders,
        error: &str,
    ) -> Result<(), DlqError> {
        let partition = origin.partition.to_string();
        let offset = origin.offset.to_string();
        let headers = headers
            .insert(Header {
                key: "dlq.topic",
                value: Some(origin.topic),
            })
            .insert(Header {
                key: "dlq.partition",
                value: Some(&partition),
            })
            .insert(Header {
                key: "dlq.offset",
                value: Some(&offset),
            })
            .insert(Header {
                key: "dlq.error",
                value: Some(error),
            });
        let mut record: FutureRecord<'_, [u8], [u8]> =
            FutureRecord::to(&self.topic).headers(headers);
        if let Some(key) = key {
            record = record.key(key);
        }
        if let Some(value) = value {
            record = record.payload(value);
        }
        if let Some(ts) = timestamp_ms {
            record = record.timestamp(ts);
        }
        self.producer
            .send(record, Timeout::After(SEND_TIMEOUT))
            .await
            .map(|_| ())
            .map_err(|(source, _)| DlqError::Send {
                dlq_topic: self.topic.clone(),
                origin: format!("{}/{}@{}", origin.topic, origin.partition, origin.offset),
                source: Box::new(source),
            })
    }

    /// Waits until every queued dead letter is acknowledged (at shutdown).
    pub fn flush(&self, timeout: Duration) -> Result<(), KafkaError> {
        self.producer.flush(timeout)
    }
}

/// Where a poison record came from.
#[derive(Debug, Clone, Copy)]
pub struct Origin<'a> {
    /// Topic.
    pub topic: &'a str,
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
}
