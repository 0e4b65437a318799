//! Command line and layered configuration of the sink binary.
//!
//! `connectors.yaml` is loaded and validated by [`mapping::load_config`]; this module adds what
//! only the running sink needs: connection overrides from flags and environment variables,
//! extra librdkafka properties (`-X key=value`, applied over `kafka.properties`), batch tuning,
//! and the librdkafka client configurations derived from all of that.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use mapping::{redact_url, Config, ConfigErrors, ConnectionOverrides};
use rdkafka::ClientConfig;

/// Keeps a Redis read model in sync with Debezium change events in Kafka.
///
/// Exit codes: 0 success (also after SIGINT/SIGTERM), 1 runtime failure (a service
/// unreachable, Kafka or Redis failing), 2 bad configuration or usage.
#[derive(Debug, Parser)]
#[command(name = "sink", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Consume change events and apply them to Redis until SIGINT or SIGTERM.
    Run(RunArgs),
    /// Load and validate the configuration, print a summary; touches neither Kafka nor Redis.
    Validate(ConfigArgs),
    /// Replay every mapped topic from the beginning into a staging Redis database, then swap
    /// it in atomically; exits once swapped (readers keep the old state until then).
    Rebuild(crate::rebuild::RebuildArgs),
}

/// Where the configuration comes from and which connection settings override it.
#[derive(Debug, Clone, Args)]
pub struct ConfigArgs {
    /// The mapping file.
    #[arg(
        long,
        short = 'c',
        value_name = "PATH",
        default_value = "connectors.yaml"
    )]
    pub config: PathBuf,
    /// Kafka bootstrap servers (overrides `kafka.bootstrap_servers`).
    #[arg(long, value_name = "HOST:PORT,...", env = "KAFKA_BOOTSTRAP_SERVERS")]
    pub bootstrap_servers: Option<String>,
    /// Schema registry base URL (overrides `schema_registry.url`).
    #[arg(long, value_name = "URL", env = "SCHEMA_REGISTRY_URL")]
    pub schema_registry_url: Option<String>,
    /// Redis URL (overrides `redis.url`).
    #[arg(long, value_name = "URL", env = "REDIS_URL")]
    pub redis_url: Option<String>,
    /// Kafka consumer group id (overrides `kafka.group_id`).
    #[arg(long, value_name = "ID", env = "SINK_GROUP_ID")]
    pub group_id: Option<String>,
    /// A librdkafka property, `key=value`; repeatable; overrides `kafka.properties`.
    #[arg(short = 'X', value_name = "KEY=VALUE", value_parser = parse_property)]
    pub kafka_property: Vec<(String, String)>,
}

/// Arguments of `sink run`.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// Configuration and connection settings.
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Batch tuning.
    #[command(flatten)]
    pub batch: BatchArgs,
    /// Who writes the Redis database. `shared`: every change through the change script,
    /// which reads the bookkeeping from Redis, so several sinks (a consumer group split
    /// across processes) may write one database. `exclusive`: this sink alone; it takes a
    /// lease (`sink:writer`; a second exclusive sink stands by until it lapses), holds the
    /// bookkeeping in memory and sends plain writes, one transaction per batch: about half
    /// the Redis CPU per change (README, "Writers").
    #[arg(long, value_enum, default_value_t = WriterMode::Shared, env = "SINK_WRITER")]
    pub writer: WriterMode,
    /// How long an exclusive sink's lease lasts without renewal, in milliseconds: how soon a
    /// standby takes over from a sink that died.
    #[arg(long, value_name = "MS", default_value_t = default_lease_ms(), env = "SINK_LEASE_MS")]
    pub lease_ms: u64,
}

/// Who writes the Redis database (`sink run --writer`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum WriterMode {
    /// Any number of sinks, each change through the change script.
    Shared,
    /// This sink alone, under a lease, deciding changes in memory.
    Exclusive,
}

/// How the running sink writes Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Writer {
    /// Through the change script ([`crate::apply::Applier::new`]).
    Shared,
    /// Alone, under a lease of this length ([`crate::apply::Applier::exclusive`]).
    Exclusive {
        /// The lease time.
        lease: Duration,
    },
}

impl RunArgs {
    /// The writer these arguments ask for.
    pub fn writer(&self) -> Writer {
        match self.writer {
            WriterMode::Shared => Writer::Shared,
            WriterMode::Exclusive => Writer::Exclusive {
                lease: Duration::from_millis(self.lease_ms),
            },
        }
    }
}

fn default_lease_ms() -> u64 {
    u64::try_from(crate::apply::DEFAULT_LEASE_TTL.as_millis()).unwrap_or(10_000)
}

/// How records are grouped into Redis pipelines.
#[derive(Debug, Clone, Copy, Args)]
pub struct BatchArgs {
    /// Largest number of records applied as one Redis pipeline.
    #[arg(long, value_name = "N", default_value_t = default_batch_size(), env = "SINK_BATCH_SIZE")]
    pub batch_size: usize,
    /// How long a batch waits for more records once it holds one, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = default_linger_ms(), env = "SINK_LINGER_MS")]
    pub linger_ms: u64,
}

impl Default for BatchArgs {
    fn default() -> Self {
        BatchArgs {
            batch_size: default_batch_size(),
            linger_ms: default_linger_ms(),
        }
    }
}

/// Large enough to amortise a Redis round trip, small enough to keep a batch's latency low.
const fn default_batch_size() -> usize {
    2000
}

/// Short: under light load a change should reach Redis within milliseconds.
const fn default_linger_ms() -> u64 {
    5
}

fn parse_property(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((key, value)) if !key.trim().is_empty() => {
            Ok((key.trim().to_owned(), value.to_owned()))
        }
        _ => Err(format!("expected `key=value`, got `{s}`")),
    }
}

/// Batch limits, validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchSettings {
    /// At most this many records per batch (at least 1).
    pub max_records: usize,
    /// A started batch is flushed after this long even if not full.
    pub linger: Duration,
}

impl From<BatchArgs> for BatchSettings {
    fn from(args: BatchArgs) -> Self {
        BatchSettings {
            max_records: args.batch_size.max(1),
            linger: Duration::from_millis(args.linger_ms),
        }
    }
}

impl Default for BatchSettings {
    fn default() -> Self {
        BatchArgs::default().into()
    }
}

/// Everything the running sink needs: the validated mapping plus runtime settings.
#[derive(Debug, Clone)]
pub struct SinkConfig {
    /// The validated `connectors.yaml` with connection overrides applied.
    pub config: Arc<Config>,
    /// `kafka.properties` with the `-X` properties applied over them.
    pub kafka_properties: BTreeMap<String, String>,
    /// Batch limits.
    pub batch: BatchSettings,
    /// How Redis is written.
    pub writer: Writer,
}

/// Settings the sink relies on for at-least-once delivery; applied after the user's properties
/// so that they cannot be switched off by accident.
const FORCED_CONSUMER_PROPERTIES: [(&str, &str); 2] = [
    // Offsets are stored by the sink only after Redis applied the record (see `consume`).
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
    /// Loads and validates `args.config`, applying the connection overrides.
    pub fn load(args: &ConfigArgs, batch: BatchSettings) -> Result<SinkConfig, ConfigErrors> {
        let overrides = ConnectionOverrides {
            bootstrap_servers: args.bootstrap_servers.clone(),
            schema_registry_url: args.schema_registry_url.clone(),
            redis_url: args.redis_url.clone(),
            group_id: args.group_id.clone(),
        };
        let config = mapping::load_config(&args.config, &overrides)?;
        Ok(SinkConfig::new(config, &args.kafka_property, batch))
    }

    /// Combines a validated configuration with `-X` properties and batch limits.
    pub fn new(config: Config, extra: &[(String, String)], batch: BatchSettings) -> SinkConfig {
        let mut kafka_properties = config.kafka.properties.clone();
        kafka_properties.extend(extra.iter().cloned());
        SinkConfig {
            config: Arc::new(config),
            kafka_properties,
            batch,
            writer: Writer::Shared,
        }
    }

    /// The same configuration with `writer`.
    #[must_use]
    pub fn with_writer(mut self, writer: Writer) -> SinkConfig {
        self.writer = writer;
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

    /// Indexes of the mappings, by topic.
    pub fn topics(&self) -> Vec<&str> {
        self.config
            .mappings
            .iter()
            .map(|m| m.topic.as_str())
            .collect()
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

/// The summary `sink validate` prints on success.
pub fn summary(config: &Config) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "OK: {} mapping(s); kafka {} (group {}, dead letters to {}); registry {}; redis {}\n",
        config.mappings.len(),
        config.kafka.bootstrap_servers,
        config.kafka.group_id,
        config.kafka.dead_letter_topic,
        config.schema_registry.url,
        redact_url(&config.redis.url),
    ));
    for m in &config.mappings {
        out.push_str(&format!(
            "  {}: {} -> {} ({} index(es), {} relation(s), {} lookup(s))\n",
            m.name,
            m.topic,
            m.key.source,
            m.indexes.len(),
            m.relations.len(),
            m.lookups.len(),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn properties_parse_as_key_value() {
        assert_eq!(
            parse_property("fetch.min.bytes=1"),
            Ok(("fetch.min.bytes".to_owned(), "1".to_owned()))
        );
        assert_eq!(
            parse_property("a=b=c"),
            Ok(("a".to_owned(), "b=c".to_owned()))
        );
        assert!(parse_property("novalue").is_err());
        assert!(parse_property("=x").is_err());
    }

    #[test]
    fn cli_parses_run_with_overrides() {
        let cli = Cli::try_parse_from([
            "sink",
            "run",
            "--config",
            "x.yaml",
            "--redis-url",
            "redis://h:1",
            "-X",
            "fetch.min.bytes=1",
            "-X",
            "client.id=a",
            "--batch-size",
            "10",
        ])
        .unwrap();
        let Command::Run(args) = cli.command else {
            panic!("not run")
        };
        assert_eq!(args.config.config, PathBuf::from("x.yaml"));
        assert_eq!(args.config.redis_url.as_deref(), Some("redis://h:1"));
        assert_eq!(args.config.kafka_property.len(), 2);
        assert_eq!(args.batch.batch_size, 10);
    }

    #[test]
    fn cli_parses_the_writer() {
        let parse = |extra: &[&str]| {
            let mut argv = vec!["sink", "run"];
            argv.extend_from_slice(extra);
            match Cli::try_parse_from(argv).unwrap().command {
                Command::Run(args) => args.writer(),
                _ => panic!("not run"),
            }
        };
        assert_eq!(parse(&[]), Writer::Shared);
        assert_eq!(
            parse(&["--writer", "exclusive", "--lease-ms", "2500"]),
            Writer::Exclusive {
                lease: Duration::from_millis(2500)
            }
        );
        assert!(Cli::try_parse_from(["sink", "run", "--writer", "solo"]).is_err());
    }

    #[test]
    fn clap_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
