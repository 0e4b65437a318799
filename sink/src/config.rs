//! The resolved configuration of the running sink: the validated mapping (`connectors.yaml`,
//! loaded by [`mapping::load_config`] with the connection overrides applied) plus what only the
//! sink needs: extra librdkafka properties (`-X key=value`, applied over `kafka.properties`),
//! batch limits, the writer, the Redis memory settings, and the librdkafka client configurations derived from all of
//! that. The command line that fills it in is [`crate::cli`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use mapping::Config;
use rdkafka::ClientConfig;

/// How the running sink writes Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Writer {
    /// Through the change script ([`crate::apply::Applier::new`]).
    Shared,
    /// Alone, under a lease of this length ([`crate::apply::Applier::exclusive`]).
    Exclusive {
        /// The lease time.
        lease: Duration,
        /// The most memory the bookkeeping may take, in bytes (`--max-writer-memory`).
        max_memory: u64,
    },
    /// Exclusive where that is safe, through the change script otherwise, and falling back
    /// to the script for the rest of the process when the exclusive writer cannot go on
    /// (`sink run`'s default; [`crate::run`], "Writers").
    Auto {
        /// The lease time, when exclusive; also how long a shared announcement holds.
        lease: Duration,
        /// The most memory the bookkeeping may take, in bytes, before the sink falls back
        /// to the change script.
        max_memory: u64,
    },
}

/// Records per batch unless told otherwise: large enough to amortise a Redis round trip,
/// small enough to keep a batch's latency low.
pub const DEFAULT_BATCH_SIZE: usize = 2000;

/// How long a started batch waits for more records unless told otherwise, in milliseconds:
/// short, because under light load a change should reach Redis within milliseconds.
pub const DEFAULT_LINGER_MS: u64 = 5;

/// Batch limits, validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchSettings {
    /// At most this many records per batch (at least 1).
    pub max_records: usize,
    /// While Redis is busy, a started batch is flushed after this long even if not full
    /// (while it is idle, at once: `pipeline/in_flight.rs`).
    pub linger: Duration,
    /// At most this many bytes of record keys and values per batch (at least 1); a record
    /// larger than that forms a batch of its own (`batch.max_bytes`).
    pub max_bytes: usize,
}

impl BatchSettings {
    /// At most `max_records` records per batch (at least 1), flushed after `linger`, with the
    /// default byte bound.
    pub fn new(max_records: usize, linger: Duration) -> BatchSettings {
        BatchSettings {
            max_records: max_records.max(1),
            linger,
            max_bytes: usize::try_from(mapping::DEFAULT_BATCH_MAX_BYTES).unwrap_or(usize::MAX),
        }
    }

    /// The same limits with at most `max_bytes` bytes of keys and values per batch (at
    /// least 1; saturated on a 32-bit machine).
    #[must_use]
    pub fn with_max_bytes(mut self, max_bytes: u64) -> BatchSettings {
        self.max_bytes = usize::try_from(max_bytes).unwrap_or(usize::MAX).max(1);
        self
    }
}

impl Default for BatchSettings {
    fn default() -> Self {
        BatchSettings::new(DEFAULT_BATCH_SIZE, Duration::from_millis(DEFAULT_LINGER_MS))
    }
}

/// How the sink treats Redis memory (README, "Redis memory").
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MemorySettings {
    /// Pause consumption while `used_memory` exceeds this share of `maxmemory`
    /// (`redis.pause_at_memory_share`, or `--pause-at-memory-share`).
    pub pause_at_share: f64,
    /// Start even when `maxmemory-policy` may evict the sink's keys, with a warning
    /// (`--allow-eviction`).
    pub allow_eviction: bool,
}

impl MemorySettings {
    /// What `connectors.yaml` says (`redis.pause_at_memory_share`); eviction refused.
    pub fn from_config(config: &Config) -> MemorySettings {
        MemorySettings {
            pause_at_share: config.redis_memory.pause_at_share,
            allow_eviction: false,
        }
    }
}

/// Everything the running sink needs: the validated mapping plus runtime settings. Its
/// `Debug` hides secret property values.
#[derive(Clone)]
pub struct SinkConfig {
    /// The validated `connectors.yaml` with connection overrides applied.
    pub config: Arc<Config>,
    /// `kafka.properties` with the `-X` properties applied over them (references resolved by
    /// [`crate::properties`] when loaded through [`crate::cli`]).
    pub kafka_properties: BTreeMap<String, String>,
    /// Batch limits.
    pub batch: BatchSettings,
    /// How Redis is written.
    pub writer: Writer,
    /// How Redis memory is guarded.
    pub memory: MemorySettings,
    /// How long `sink run` waits at start for Redis, the schema registry and the broker to
    /// answer before it gives up naming the one that does not; `None`: as long as it takes.
    /// A sink restarted during an outage then waits for it instead of exiting into another
    /// restart (a crash loop under a supervisor).
    pub wait_for_services: Option<Duration>,
}

impl std::fmt::Debug for SinkConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SinkConfig")
            .field("config", &self.config)
            .field(
                "kafka_properties",
                &mapping::redact_properties(&self.kafka_properties),
            )
            .field("batch", &self.batch)
            .field("writer", &self.writer)
            .field("memory", &self.memory)
            .field("wait_for_services", &self.wait_for_services)
            .finish()
    }
}

/// Settings the sink relies on for at-least-once delivery; applied after the user's properties
/// so that they cannot be switched off by accident.
const FORCED_CONSUMER_PROPERTIES: [(&str, &str); 2] = [
    // Offsets are stored by the sink only after Redis applied the record (see `pipeline`).
    ("enable.auto.offset.store", "false"),
    ("enable.partition.eof", "false"),
];

/// Defaults the user may override with `kafka.properties` or `-X`.
const DEFAULT_CONSUMER_PROPERTIES: [(&str, &str); 4] = [
    // A new group starts from the beginning of each topic: the read model needs every row.
    ("auto.offset.reset", "earliest"),
    // Stored offsets are committed in the background; a final commit runs at shutdown.
    ("enable.auto.commit", "true"),
    // Debezium creates topics lazily: notice new ones within seconds, not minutes.
    ("topic.metadata.refresh.interval.ms", "10000"),
    // Keep the fetch queue large enough for full batches.
    ("queued.min.messages", "100000"),
];

impl SinkConfig {
    /// Combines a validated configuration with `-X` properties and batch limits. The writer
    /// is [`Writer::Shared`] until [`SinkConfig::with_writer`] says otherwise (`sink run`'s
    /// command line defaults to [`Writer::Auto`]).
    pub fn new(config: Config, extra: &[(String, String)], batch: BatchSettings) -> SinkConfig {
        let mut kafka_properties = config.kafka.properties.clone();
        kafka_properties.extend(extra.iter().cloned());
        SinkConfig {
            memory: MemorySettings::from_config(&config),
            config: Arc::new(config),
            kafka_properties,
            batch,
            writer: Writer::Shared,
            wait_for_services: None,
        }
    }

    /// The same configuration, waiting at most `wait` at start for the services to answer
    /// (`None`: as long as it takes).
    #[must_use]
    pub fn with_wait_for_services(mut self, wait: Option<Duration>) -> SinkConfig {
        self.wait_for_services = wait;
        self
    }

    /// The same configuration with `writer`.
    #[must_use]
    pub fn with_writer(mut self, writer: Writer) -> SinkConfig {
        self.writer = writer;
        self
    }

    /// The same configuration with `memory`.
    #[must_use]
    pub fn with_memory(mut self, memory: MemorySettings) -> SinkConfig {
        self.memory = memory;
        self
    }

    /// The consumer configuration: bootstrap servers and group from the mapping file, the
    /// sink's defaults, the user's properties, then the settings at-least-once depends on.
    pub fn consumer_config(&self) -> ClientConfig {
        let mut client = ClientConfig::new();
        for (key, value) in DEFAULT_CONSUMER_PROPERTIES {
            client.set(key, value);
        }
        client
            .set("bootstrap.servers", &self.config.kafka.bootstrap_servers)
            .set("group.id", &self.config.kafka.group_id);
        for (key, value) in &self.kafka_properties {
            client.set(key, value);
        }
        for (key, value) in FORCED_CONSUMER_PROPERTIES {
            client.set(key, value);
        }
        client
    }

    /// The dead-letter producer's configuration: bootstrap servers, then the user's properties
    /// except consumer-only ones (librdkafka would warn about each).
    pub fn producer_config(&self) -> ClientConfig {
        let mut client = ClientConfig::new();
        client
            .set("bootstrap.servers", &self.config.kafka.bootstrap_servers)
            .set("enable.idempotence", "true")
            .set("linger.ms", "5");
        for (key, value) in &self.kafka_properties {
            if !is_consumer_only(key) {
                client.set(key, value);
            }
        }
        client
    }

    /// The mapped topics, one per mapping, in mapping order.
    pub fn topics(&self) -> Vec<String> {
        self.config
            .mappings
            .iter()
            .map(|m| m.topic.clone())
            .collect()
    }

    /// Every topic the sink consumes: the mapped ones, then the sources' heartbeat topics.
    pub fn consumed_topics(&self) -> Vec<String> {
        let mut topics = self.topics();
        topics.extend(
            self.config
                .sources
                .iter()
                .map(|s| s.heartbeat_topic.clone()),
        );
        topics
    }
}

/// Properties that only mean something to a consumer.
fn is_consumer_only(key: &str) -> bool {
    key.starts_with("group.")
        || key.starts_with("fetch.")
        || key.starts_with("auto.")
        || key.starts_with("enable.auto.")
        || key.starts_with("session.")
        || key.starts_with("heartbeat.")
        || key.starts_with("max.poll.")
        || key.starts_with("partition.assignment")
        || key.starts_with("queued.")
        || key == "isolation.level"
        || key == "enable.partition.eof"
        || key == "check.crcs"
        || key == "allow.auto.create.topics"
}
