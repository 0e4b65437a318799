//! Kafka for the harness: topics created and deleted around a run, and a producer that
//! delivers generated records in order.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::KafkaError;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::ClientConfig;

use super::LoadgenError;

/// Deletes `topics` (benchmarks and tests clean up after themselves: a broker that keeps
/// every run's topics starts slower and holds more files with each run).
pub async fn delete_topics(bootstrap: &str, topics: &[&str]) -> Result<(), LoadgenError> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()?;
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    for result in admin.delete_topics(topics, &options).await? {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::UnknownTopicOrPartition)) => {}
            Err((_, code)) => return Err(LoadgenError::Kafka(KafkaError::AdminOp(code))),
        }
    }
    Ok(())
}

/// Creates `topic` with `partitions` partitions (replication 1); an existing topic is fine.
pub async fn create_topic(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
) -> Result<(), LoadgenError> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()?;
    let new = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    for result in admin.create_topics([&new], &options).await? {
        match result {
            Ok(_) => {}
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => {
                return Err(LoadgenError::Kafka(KafkaError::AdminOp(code))).inspect_err(|_| {
                    tracing::warn!(%topic, "Topic creation failed.");
                })
            }
        }
    }
    Ok(())
}

/// One record to produce.
#[derive(Debug, Clone)]
pub struct WireRecord {
    /// Topic.
    pub topic: String,
    /// Key bytes.
    pub key: Option<Vec<u8>>,
    /// Value bytes; `None` for a tombstone.
    pub value: Option<Vec<u8>>,
    /// Headers as in the recording.
    pub headers: Vec<(String, String)>,
}

/// A producer for test records: acks from all replicas, idempotent, batching.
pub fn producer(bootstrap: &str) -> Result<FutureProducer, LoadgenError> {
    Ok(ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("enable.idempotence", "true")
        .set("linger.ms", "20")
        .set("batch.num.messages", "10000")
        .set("queue.buffering.max.messages", "1000000")
        .set("compression.type", "lz4")
        .create()?)
}

async fn settle(pending: &mut Vec<rdkafka::producer::DeliveryFuture>) -> Result<(), LoadgenError> {
    for delivery in pending.drain(..) {
        match delivery.await {
            Ok(Ok(_)) => {}
            Ok(Err((e, _))) => return Err(e.into()),
            Err(_) => return Err(KafkaError::Canceled.into()),
        }
    }
    Ok(())
}

/// Produces `records` in order (idempotent producer: per-partition order is kept) and waits
/// for every acknowledgement.
pub async fn produce_all(
    producer: &FutureProducer,
    records: &[WireRecord],
) -> Result<(), LoadgenError> {
    let mut pending = Vec::with_capacity(records.len().min(100_000));
    for record in records {
        let mut headers = rdkafka::message::OwnedHeaders::new();
        for (k, v) in &record.headers {
            headers = headers.insert(rdkafka::message::Header {
                key: k,
                value: Some(v),
            });
        }
        let mut out: FutureRecord<'_, [u8], [u8]> =
            FutureRecord::to(&record.topic).headers(headers);
        if let Some(key) = &record.key {
            out = out.key(key);
        }
        if let Some(value) = &record.value {
            out = out.payload(value);
        }
        loop {
            match producer.send_result(out) {
                Ok(delivery) => {
                    pending.push(delivery);
                    break;
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    out = back;
                    // Let the queue drain.
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err((e, _)) => return Err(e.into()),
            }
        }
        if pending.len() >= 100_000 {
            settle(&mut pending).await?;
        }
    }
    settle(&mut pending).await?;
    producer.flush(Duration::from_secs(30))?;
    Ok(())
}
