//! A Kafka client of its own for reading watermarks, committed offsets and topic metadata.
//!
//! Kafka answers the requests of one connection in the order they arrive. On the consuming
//! client's connection a watermark request waits behind the fetch in flight, which the broker
//! holds for up to `fetch.wait.max.ms` (500 ms) when no new records come. So checking 8 idle
//! partitions took about 4 s: once to see that the sink had caught up, and again while it
//! stopped. `sink-bench` measured 8.3 s of its 10.1 s from start to caught up waiting on
//! these checks. This client has its own connections and never fetches, so the broker
//! answers it at once.

use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaResult;
use rdkafka::metadata::Metadata;
use rdkafka::{ClientConfig, TopicPartitionList};

/// Reads watermarks and the group's committed offsets without joining the group.
pub struct OffsetsClient(BaseConsumer);

impl OffsetsClient {
    /// A client with the consumer's settings (bootstrap servers, security, `group.id` for
    /// committed offsets). It never subscribes, so it never joins the group; it commits
    /// nothing and does not carry the consumer's static membership id.
    pub fn new(config: &ClientConfig) -> KafkaResult<Self> {
        let mut config = config.clone();
        config
            .set("enable.auto.commit", "false")
            .remove("group.instance.id");
        config.create().map(OffsetsClient)
    }

    /// The low and high watermarks of one partition (blocking: one broker round trip).
    pub fn watermarks(
        &self,
        topic: &str,
        partition: i32,
        timeout: Duration,
    ) -> KafkaResult<(i64, i64)> {
        self.0.fetch_watermarks(topic, partition, timeout)
    }

    /// The cluster's metadata of `topic`: its partitions, or why it is not available
    /// (blocking: one broker round trip).
    pub fn metadata(&self, topic: &str, timeout: Duration) -> KafkaResult<Metadata> {
        self.0.fetch_metadata(Some(topic), timeout)
    }

    /// The group's committed offsets for `partitions` (blocking: one round trip to the
    /// group coordinator).
    pub fn committed(
        &self,
        partitions: TopicPartitionList,
        timeout: Duration,
    ) -> KafkaResult<TopicPartitionList> {
        self.0.committed_offsets(partitions, timeout)
    }
}

impl std::fmt::Debug for OffsetsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OffsetsClient").finish_non_exhaustive()
    }
}
