//! Poison records (undecodable, unmappable, rejected by Redis) go to the dead-letter topic,
//! byte for byte, with their origin and the error in headers, so that the sink can move on
//! and an operator can inspect or replay them later.
//!
//! Headers: the record's own headers first, then `dlq.topic`, `dlq.partition`, `dlq.offset`
//! and `dlq.error` (UTF-8 text). The key, value and timestamp are copied unchanged; only a
//! record too large for the dead-letter topic is written without its value, with
//! `dlq.value-omitted` giving the value's size (it stays readable at its origin).
//! [`DeadLetters::send`] waits for the broker's acknowledgement: the record's offset is stored
//! only after its dead letter is safe. The pipeline retries what [`DlqError::is_retriable`]
//! allows.

use std::time::Duration;

use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Header, Headers, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::util::Timeout;
use rdkafka::{ClientConfig, Message};
use thiserror::Error;
use tracing::warn;

/// How long one dead letter may wait in the producer queue before the send fails (and is
/// retried by the caller).
const SEND_TIMEOUT: Duration = Duration::from_secs(30);

/// Header of a dead letter written without its value because it was too large for the
/// dead-letter topic: the value's size in bytes. The value is at the letter's origin.
pub const VALUE_OMITTED_HEADER: &str = "dlq.value-omitted";

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

    /// Writes `letter` to the dead-letter topic with its origin and error in headers, and
    /// waits for the acknowledgement. A letter too large for the producer or the topic (a
    /// source record near the broker's limit, plus the `dlq.*` headers) is written without its
    /// value, with [`VALUE_OMITTED_HEADER`]: refusing it for good would stop the sink at the
    /// same record after every restart, and the value is still at its origin.
    pub async fn send(&self, letter: &DeadLetter<'_>) -> Result<(), DlqError> {
        match self.send_as(letter, letter.value, None).await {
            Err(e) if e.is_too_large() && letter.value.is_some() => {
                let size = letter.value.map_or(0, <[u8]>::len);
                warn!(
                    topic = %letter.origin.topic,
                    partition = letter.origin.partition,
                    offset = letter.origin.offset,
                    size,
                    dlq = %self.topic,
                    "Dead letter too large: writing it without its value."
                );
                self.send_as(letter, None, Some(&size.to_string())).await
            }
            sent => sent,
        }
    }

    /// Sends `letter` with `value` in place of its own and, when given, the size of the value
    /// left out.
    async fn send_as(
        &self,
        letter: &DeadLetter<'_>,
        value: Option<&[u8]>,
        omitted: Option<&str>,
    ) -> Result<(), DlqError> {
        let origin = letter.origin;
        let partition = origin.partition.to_string();
        let offset = origin.offset.to_string();
        let mut headers = letter
            .headers
            .clone()
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
                value: Some(letter.error),
            });
        if let Some(size) = omitted {
            headers = headers.insert(Header {
                key: VALUE_OMITTED_HEADER,
                value: Some(size),
            });
        }
        let mut record: FutureRecord<'_, [u8], [u8]> =
            FutureRecord::to(&self.topic).headers(headers);
        if let Some(key) = letter.key {
            record = record.key(key);
        }
        if let Some(value) = value {
            record = record.payload(value);
        }
        if let Some(ts) = letter.timestamp_ms {
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

impl DlqError {
    /// Whether the producer or the broker refused the record as too large.
    fn is_too_large(&self) -> bool {
        matches!(self, DlqError::Send { source, .. }
            if source.rdkafka_error_code() == Some(RDKafkaErrorCode::MessageSizeTooLarge))
    }

    /// Whether sending again may succeed: not when the producer cannot be created, nor when
    /// the broker refuses the record itself (too large, not authorised, invalid).
    pub fn is_retriable(&self) -> bool {
        match self {
            DlqError::Create(_) => false,
            DlqError::Send { source, .. } => !matches!(
                source.rdkafka_error_code(),
                Some(
                    RDKafkaErrorCode::MessageSizeTooLarge
                        | RDKafkaErrorCode::TopicAuthorizationFailed
                        | RDKafkaErrorCode::InvalidRecord
                )
            ),
        }
    }
}

/// A poison record and why it is one.
#[derive(Debug)]
pub struct DeadLetter<'a> {
    /// Where it came from.
    pub origin: Origin<'a>,
    /// Its key, unchanged.
    pub key: Option<&'a [u8]>,
    /// Its value, unchanged.
    pub value: Option<&'a [u8]>,
    /// Its timestamp, when known.
    pub timestamp_ms: Option<i64>,
    /// Its own headers; the `dlq.*` headers go after them.
    pub headers: OwnedHeaders,
    /// Why it is dead-lettered (`dlq.error`).
    pub error: &'a str,
}

impl<'a> DeadLetter<'a> {
    /// `message` as consumed, with its key, value, timestamp and headers.
    pub fn of_message(message: &'a BorrowedMessage<'_>, error: &'a str) -> DeadLetter<'a> {
        let mut headers = OwnedHeaders::new();
        if let Some(original) = message.headers() {
            for header in original.iter() {
                headers = headers.insert(header);
            }
        }
        DeadLetter {
            origin: Origin {
                topic: message.topic(),
                partition: message.partition(),
                offset: message.offset(),
            },
            key: message.key(),
            value: message.payload(),
            timestamp_ms: message.timestamp().to_millis(),
            headers,
            error,
        }
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
