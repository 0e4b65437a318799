//! Poison records (undecodable, unmappable, rejected by Redis) go to the dead-letter topic,
//! byte for byte, with their origin and the error in headers, so that the sink can move on
//! and an operator can inspect or replay them later.
//!
//! Headers: the record's own headers first, then `dlq.topic`, `dlq.partition`, `dlq.offset`
//! and `dlq.error` (UTF-8 text). The key, value and timestamp are copied unchanged.
//! [`DeadLetters::send`] waits for the broker's acknowledgement: the record's offset is stored
//! only after its dead letter is safe. The pipeline retries what [`DlqError::is_retriable`]
//! allows.
//!
//! A record too large for the dead-letter topic (the producer's `message.max.bytes`, or the
//! topic's `max.message.bytes` on the broker) would be refused again at every restart, so it
//! is sent *headers only* instead: no value, the key and the record's own headers only when
//! small ([`KEPT_BYTES`]), the `dlq.*` headers above plus `dlq.truncated=true`,
//! `dlq.original.size` (key, value and headers in bytes) and `dlq.truncated.error` (why the
//! whole record was refused). The origin headers say where to read the record itself.

use std::time::Duration;

use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Header, Headers, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::util::Timeout;
use rdkafka::{ClientConfig, Message};
use thiserror::Error;

/// How long one dead letter may wait in the producer queue before the send fails (and is
/// retried by the caller).
const SEND_TIMEOUT: Duration = Duration::from_secs(30);

/// A headers-only dead letter keeps the record's key, and separately its own headers, only
/// up to this many bytes, and cuts its error texts to this length: small enough to fit any
/// sensible `max.message.bytes`, large enough for Debezium's keys and headers.
pub const KEPT_BYTES: usize = 1024;

/// Header names of the dead-letter topic (a contract: operators' tools read them).
pub mod header {
    /// The origin topic.
    pub const TOPIC: &str = "dlq.topic";
    /// The origin partition (decimal).
    pub const PARTITION: &str = "dlq.partition";
    /// The origin offset (decimal).
    pub const OFFSET: &str = "dlq.offset";
    /// Why the record is dead-lettered.
    pub const ERROR: &str = "dlq.error";
    /// `true` on a headers-only dead letter: the record was too large for the topic.
    pub const TRUNCATED: &str = "dlq.truncated";
    /// The record's size in bytes (key, value, header names and values) on a headers-only
    /// dead letter.
    pub const ORIGINAL_SIZE: &str = "dlq.original.size";
    /// Why the whole record was refused (the producer's or broker's error) on a headers-only
    /// dead letter.
    pub const TRUNCATED_ERROR: &str = "dlq.truncated.error";
}

/// How a dead letter went out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Byte for byte.
    Whole,
    /// Headers only: the record, `size` bytes, was too large for the dead-letter topic.
    HeadersOnly {
        /// The record's size in bytes (key, value and headers).
        size: usize,
    },
}

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
    /// waits for the acknowledgement; sends it headers only when it is too large for the
    /// topic (see the module doc).
    pub async fn send(&self, letter: &DeadLetter<'_>) -> Result<Delivery, DlqError> {
        let origin = letter.origin;
        let partition = origin.partition.to_string();
        let offset = origin.offset.to_string();
        let headers = letter
            .headers
            .clone()
            .insert(text(header::TOPIC, origin.topic))
            .insert(text(header::PARTITION, &partition))
            .insert(text(header::OFFSET, &offset))
            .insert(text(header::ERROR, letter.error));
        let whole = self
            .produce(letter, letter.key, letter.value, headers)
            .await;
        let refused = match whole {
            Ok(()) => return Ok(Delivery::Whole),
            Err(e) if is_too_large(&e) => e,
            Err(e) => return Err(self.send_error(origin, e)),
        };

        let size = letter.size();
        let size_text = size.to_string();
        let refused_text = refused.to_string();
        let own_headers = letter.headers.clone();
        let mut headers = if headers_size(&own_headers) <= KEPT_BYTES {
            own_headers
        } else {
            OwnedHeaders::new()
        };
        headers = headers
            .insert(text(header::TOPIC, origin.topic))
            .insert(text(header::PARTITION, &partition))
            .insert(text(header::OFFSET, &offset))
            .insert(text(header::ERROR, cut(letter.error)))
            .insert(text(header::TRUNCATED, "true"))
            .insert(text(header::ORIGINAL_SIZE, &size_text))
            .insert(text(header::TRUNCATED_ERROR, cut(&refused_text)));
        let key = letter.key.filter(|key| key.len() <= KEPT_BYTES);
        self.produce(letter, key, None, headers)
            .await
            .map_err(|e| self.send_error(origin, e))?;
        Ok(Delivery::HeadersOnly { size })
    }

    /// Produces one record to the dead-letter topic and waits for its acknowledgement.
    async fn produce(
        &self,
        letter: &DeadLetter<'_>,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: OwnedHeaders,
    ) -> Result<(), KafkaError> {
        let mut record: FutureRecord<'_, [u8], [u8]> =
            FutureRecord::to(&self.topic).headers(headers);
        if let Some(key) = key {
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
            .map_err(|(source, _)| source)
    }

    fn send_error(&self, origin: Origin<'_>, source: KafkaError) -> DlqError {
        DlqError::Send {
            dlq_topic: self.topic.clone(),
            origin: format!("{}/{}@{}", origin.topic, origin.partition, origin.offset),
            source: Box::new(source),
        }
    }

    /// Waits until every queued dead letter is acknowledged (at shutdown).
    pub fn flush(&self, timeout: Duration) -> Result<(), KafkaError> {
        self.producer.flush(timeout)
    }
}

/// A UTF-8 header.
fn text<'a>(key: &'a str, value: &'a str) -> Header<'a, &'a str> {
    Header {
        key,
        value: Some(value),
    }
}

/// `text` cut to at most [`KEPT_BYTES`] bytes, at a character boundary.
fn cut(text: &str) -> &str {
    if text.len() <= KEPT_BYTES {
        return text;
    }
    let mut end = KEPT_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Bytes of header names and values.
fn headers_size(headers: &OwnedHeaders) -> usize {
    headers
        .iter()
        .map(|h| h.key.len() + h.value.map_or(0, <[u8]>::len))
        .sum()
}

/// Whether the producer (`message.max.bytes`) or the broker (the topic's
/// `max.message.bytes`) refused the record for its size.
fn is_too_large(e: &KafkaError) -> bool {
    matches!(
        e.rdkafka_error_code(),
        Some(RDKafkaErrorCode::MessageSizeTooLarge | RDKafkaErrorCode::MessageBatchTooLarge)
    )
}

impl DlqError {
    /// Whether sending again may succeed: not when the producer cannot be created, nor when
    /// the broker refuses the record itself (too large, not authorised, invalid).
    pub fn is_retriable(&self) -> bool {
        match self {
            DlqError::Create(_) => false,
            DlqError::Send { source, .. } => !matches!(
                source.rdkafka_error_code(),
                Some(
                    RDKafkaErrorCode::MessageSizeTooLarge
                        | RDKafkaErrorCode::MessageBatchTooLarge
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
    /// The record's size in bytes: key, value, and its own header names and values.
    pub fn size(&self) -> usize {
        self.key.map_or(0, <[u8]>::len)
            + self.value.map_or(0, <[u8]>::len)
            + headers_size(&self.headers)
    }

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_errors_of_the_producer_and_the_broker_are_too_large() {
        let error = |code| KafkaError::MessageProduction(code);
        assert!(is_too_large(&error(RDKafkaErrorCode::MessageSizeTooLarge)));
        assert!(is_too_large(&error(RDKafkaErrorCode::MessageBatchTooLarge)));
        assert!(!is_too_large(&error(RDKafkaErrorCode::MessageTimedOut)));
        assert!(!is_too_large(&error(
            RDKafkaErrorCode::TopicAuthorizationFailed
        )));
    }

    #[test]
    fn texts_are_cut_at_a_character_boundary() {
        assert_eq!(cut("short"), "short");
        let long = "é".repeat(KEPT_BYTES);
        let kept = cut(&long);
        assert!(kept.len() <= KEPT_BYTES && kept.len() >= KEPT_BYTES - 1);
        assert!(long.starts_with(kept));
    }

    #[test]
    fn the_size_counts_key_value_and_own_headers() {
        let letter = DeadLetter {
            origin: Origin {
                topic: "t",
                partition: 0,
                offset: 1,
            },
            key: Some(b"key"),
            value: Some(&[0; 100]),
            timestamp_ms: None,
            headers: OwnedHeaders::new().insert(text("origin", "test")),
            error: "cannot decode",
        };
        assert_eq!(letter.size(), 3 + 100 + 6 + 4);
    }
}
