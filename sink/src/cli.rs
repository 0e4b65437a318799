//! The command line: clap's argument structs, one per subcommand, and how they resolve into
//! the configuration ([`crate::config`]) and the rebuild's options. Parsing only: `main.rs`
//! decides what runs and with which exit code.

use std::path::PathBuf;
use std::time::Duration;

use bytesize::ByteSize;
use clap::{Args, Parser, Subcommand};
use mapping::{ConfigError, ConfigErrors, ConnectionOverrides};

use crate::config::{
    BatchSettings, MemorySettings, SinkConfig, Writer, DEFAULT_BATCH_SIZE, DEFAULT_LINGER_MS,
};
use crate::properties;
use crate::rebuild::RebuildOptions;

mod security;

pub use security::SecurityArgs;

/// Keeps a Redis read model in sync with Debezium change events in Kafka.
///
/// Exit codes: 0 success (also after SIGINT/SIGTERM), 1 runtime failure (a service
/// unreachable, Kafka or Redis failing), 2 bad configuration or usage (also: an exclusive
/// writer's bookkeeping above --max-writer-memory; a Redis whose maxmemory-policy may evict
/// the sink's keys).
#[derive(Debug, Parser)]
#[command(name = "sink", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
    /// How log lines on stderr look: `text` for people, `json` (one object per line) for log
    /// shippers.
    #[arg(
        long,
        global = true,
        value_enum,
        default_value_t = LogFormat::Text,
        env = "SINK_LOG_FORMAT"
    )]
    pub log_format: LogFormat,
}

/// How log lines look (`--log-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line: `timestamp`, `level`, `fields` (with `message`), `target`.
    Json,
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
    Rebuild(RebuildArgs),
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
    #[arg(
        long,
        value_name = "URL",
        env = "SCHEMA_REGISTRY_URL",
        hide_env_values = true
    )]
    pub schema_registry_url: Option<String>,
    /// Redis URL (overrides `redis.url`).
    #[arg(long, value_name = "URL", env = "REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,
    /// Kafka consumer group id (overrides `kafka.group_id`).
    #[arg(long, value_name = "ID", env = "SINK_GROUP_ID")]
    pub group_id: Option<String>,
    /// A librdkafka property, `key=value`; repeatable; overrides `kafka.properties`. A value
    /// `${env:NAME}` or `${file:PATH}` is read from that variable or file (for secrets).
    #[arg(short = 'X', value_name = "KEY=VALUE", value_parser = parse_property)]
    pub kafka_property: Vec<(String, String)>,
    /// Credentials and certificates.
    #[command(flatten)]
    pub security: SecurityArgs,
}

impl ConfigArgs {
    /// Loads and validates the mapping file, applying the connection overrides and the `-X`
    /// properties; `batch`'s limits, or the defaults without it, with the byte bound from the
    /// file (`batch.max_bytes`) unless `batch` overrides it.
    pub fn load(&self, batch: Option<&BatchArgs>) -> Result<SinkConfig, ConfigErrors> {
        let overrides = ConnectionOverrides {
            bootstrap_servers: self.bootstrap_servers.clone(),
            schema_registry_url: self.schema_registry_url.clone(),
            redis_url: self.redis_url.clone(),
            group_id: self.group_id.clone(),
            security: (&self.security).into(),
        };
        let config = mapping::load_config(&self.config, &overrides)?;
        let batch = match batch {
            Some(args) => args.settings(&config.batch),
            None => BatchArgs::default().settings(&config.batch),
        };
        let mut cfg = SinkConfig::new(config, &self.kafka_property, batch);
        cfg.kafka_properties =
            properties::resolve(&cfg.kafka_properties).map_err(|e| ConfigError::File {
                file: self.config.display().to_string(),
                message: mapping::one_line(&e),
            })?;
        Ok(cfg)
    }
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
    /// Redis memory.
    #[command(flatten)]
    pub memory: MemoryArgs,
    /// Who writes the Redis database. `shared`: every change through the change script,
    /// which reads the bookkeeping from Redis, so several sinks (a consumer group split
    /// across processes) may write one database; one stands by while an exclusive sink
    /// holds its mappings. `exclusive`: this sink alone; it takes a
    /// lease (`sink:writer`; a second exclusive sink stands by until it lapses), holds the
    /// bookkeeping in memory and sends plain writes, one transaction per batch: a third of
    /// the Redis CPU per change. `auto` (the default): exclusive, except beside shared sinks
    /// (until they are gone; it gives its lease up to one that stands by for it), for
    /// mappings with `ttl_seconds` or bookkeeping above
    /// --max-writer-memory, where it writes through the change script; it also falls back to
    /// the script instead of stopping (README, "Writers").
    #[arg(long, value_enum, default_value_t = WriterMode::Auto, env = "SINK_WRITER")]
    pub writer: WriterMode,
    /// How long an exclusive sink's lease lasts without renewal, in milliseconds: how soon a
    /// standby takes over from a sink that died (and, with `--writer auto`, how long a
    /// shared sink's announcement holds; six times it, at least 10 s, without announcements
    /// before it takes the shared sinks beside it for gone).
    #[arg(long, value_name = "MS", default_value_t = default_lease_ms(), env = "SINK_LEASE_MS")]
    pub lease_ms: u64,
    /// The most memory an exclusive sink's bookkeeping may take, e.g. `512MiB` or `4GiB`
    /// (README, "Bounded resources"). Above it `--writer exclusive` refuses to start, or
    /// stops once a batch took it there, with exit code 2; `--writer auto` writes through
    /// the change script instead.
    #[arg(
        long,
        value_name = "SIZE",
        value_parser = parse_positive_size,
        default_value = "1GiB",
        env = "SINK_MAX_WRITER_MEMORY"
    )]
    pub max_writer_memory: ByteSize,

    /// Reload the configuration when the file changes, as on SIGHUP (README, "Reloading the
    /// configuration").
    #[arg(long, env = "SINK_WATCH_CONFIG")]
    pub watch_config: bool,

    /// Serve `GET /metrics` (Prometheus), `/health` and `/ready` on this address, e.g.
    /// `0.0.0.0:9464`. Off unless given.
    #[arg(long, value_name = "HOST:PORT", env = "SINK_METRICS_ADDR")]
    pub metrics_addr: Option<String>,

    /// How long to wait at start for Redis, the schema registry and the broker to answer, in
    /// seconds, before exiting 1 naming the one that does not (each failed attempt is logged
    /// with that line meanwhile). Unset: as long as it takes, so that a sink restarted during
    /// an outage waits for it rather than exit into another restart. `0`: not at all.
    #[arg(long, value_name = "SECS", env = "SINK_WAIT_FOR_SERVICES")]
    pub wait_for_services: Option<u64>,
}

/// Who writes the Redis database (`sink run --writer`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum WriterMode {
    /// Any number of sinks, each change through the change script.
    Shared,
    /// This sink alone, under a lease, deciding changes in memory.
    Exclusive,
    /// Exclusive where that is safe, the change script otherwise.
    Auto,
}

impl RunArgs {
    /// The configuration these arguments name, with their batch limits and writer.
    pub fn load(&self) -> Result<SinkConfig, ConfigErrors> {
        let cfg = self.config.load(Some(&self.batch))?;
        let memory = self.memory.resolve(&cfg);
        Ok(cfg
            .with_writer(self.writer())
            .with_memory(memory)
            .with_wait_for_services(self.wait_for_services.map(Duration::from_secs)))
    }

    /// The writer these arguments ask for.
    pub fn writer(&self) -> Writer {
        match self.writer {
            WriterMode::Shared => Writer::Shared,
            WriterMode::Exclusive => Writer::Exclusive {
                lease: Duration::from_millis(self.lease_ms),
                max_memory: self.max_writer_memory.as_u64(),
            },
            WriterMode::Auto => Writer::Auto {
                lease: Duration::from_millis(self.lease_ms),
                max_memory: self.max_writer_memory.as_u64(),
            },
        }
    }
}

/// The lease the applier takes unless told otherwise.
fn default_lease_ms() -> u64 {
    u64::try_from(crate::apply::DEFAULT_LEASE_TTL.as_millis()).unwrap_or(10_000)
}

/// How records are grouped into Redis pipelines.
#[derive(Debug, Clone, Copy, Default, Args)]
pub struct BatchArgs {
    /// Largest number of records applied as one Redis pipeline (overrides
    /// `batch.max_records`; default 2000).
    #[arg(long, value_name = "N", env = "SINK_BATCH_SIZE")]
    pub batch_size: Option<usize>,
    /// How long a batch waits for more records while Redis is busy, in milliseconds
    /// (overrides `batch.linger_ms`; default 5). While Redis is idle a batch goes at once.
    #[arg(long, value_name = "MS", env = "SINK_LINGER_MS")]
    pub linger_ms: Option<u64>,
    /// Largest number of bytes of record keys and values per batch, e.g. `16MiB` (overrides
    /// `batch.max_bytes`; default 16 MiB). A larger record forms a batch of its own.
    #[arg(long, value_name = "SIZE", value_parser = parse_positive_size, env = "SINK_BATCH_MAX_BYTES")]
    pub batch_max_bytes: Option<ByteSize>,
}

impl BatchArgs {
    /// The limits these arguments set; what they leave out comes from `file` (`batch:` in
    /// connectors.yaml, re-read on reload), then from the defaults.
    pub fn settings(&self, file: &mapping::BatchConfig) -> BatchSettings {
        let max_bytes = self
            .batch_max_bytes
            .map_or(file.max_bytes, |size| size.as_u64());
        let max_records = self
            .batch_size
            .or(file.max_records)
            .unwrap_or(DEFAULT_BATCH_SIZE);
        let linger_ms = self
            .linger_ms
            .or(file.linger_ms)
            .unwrap_or(DEFAULT_LINGER_MS);
        BatchSettings::new(max_records, Duration::from_millis(linger_ms)).with_max_bytes(max_bytes)
    }
}

/// A byte size above zero: `16777216`, `16MiB`, `512 KB`.
pub fn parse_positive_size(s: &str) -> Result<ByteSize, String> {
    match s.trim().parse::<ByteSize>() {
        Ok(size) if size.as_u64() > 0 => Ok(size),
        Ok(_) => Err("expected a size above 0".to_owned()),
        Err(_) => Err(format!(
            "`{s}` is not a size (expected bytes such as 16777216 or 16MiB)"
        )),
    }
}

/// How Redis memory is guarded (README, "Redis memory").
#[derive(Debug, Clone, Copy, Args)]
pub struct MemoryArgs {
    /// Start even when Redis's maxmemory-policy may evict the sink's keys (`allkeys-*`, or
    /// `volatile-*` with mappings that set ttl_seconds), with a warning instead of exit code 2.
    /// Evicted rows are lost silently.
    #[arg(long, env = "SINK_ALLOW_EVICTION")]
    pub allow_eviction: bool,
    /// Pause consumption while Redis's used_memory exceeds this share of maxmemory, above 0
    /// and at most 1 (overrides `redis.pause_at_memory_share`, default 0.95).
    #[arg(long, value_name = "SHARE", env = "SINK_PAUSE_AT_MEMORY_SHARE", value_parser = parse_share)]
    pub pause_at_memory_share: Option<f64>,
}

impl MemoryArgs {
    /// The settings of `cfg` with these arguments applied.
    fn resolve(&self, cfg: &SinkConfig) -> MemorySettings {
        MemorySettings {
            pause_at_share: self
                .pause_at_memory_share
                .unwrap_or(cfg.memory.pause_at_share),
            allow_eviction: self.allow_eviction,
        }
    }
}

/// Arguments of `sink rebuild`.
#[derive(Debug, Clone, Args)]
pub struct RebuildArgs {
    /// Configuration and connection settings.
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Batch tuning.
    #[command(flatten)]
    pub batch: BatchArgs,
    /// Redis memory.
    #[command(flatten)]
    pub memory: MemoryArgs,
    /// Redis logical database to build the new state in (default: the live database + 1).
    /// It is flushed first.
    #[arg(long, value_name = "N")]
    pub staging_db: Option<i64>,
    /// Rebuild even when Redis's maxmemory cannot hold both states (warn instead of refusing),
    /// and hand over even when the live state records offsets beyond the end of the log.
    #[arg(long)]
    pub force: bool,
    /// Give up when the live sink stays ahead this long after the replay, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 300)]
    pub handover_timeout: u64,
    /// No progress bars even on a terminal (log lines instead).
    #[arg(long)]
    pub no_progress: bool,
}

impl RebuildArgs {
    /// The configuration these arguments name, with their batch limits.
    pub fn load(&self) -> Result<SinkConfig, ConfigErrors> {
        let cfg = self.config.load(Some(&self.batch))?;
        let memory = self.memory.resolve(&cfg);
        Ok(cfg.with_memory(memory))
    }
}

impl From<&RebuildArgs> for RebuildOptions {
    fn from(args: &RebuildArgs) -> Self {
        RebuildOptions {
            staging_db: args.staging_db,
            force: args.force,
            handover_timeout: Duration::from_secs(args.handover_timeout),
            progress: !args.no_progress,
        }
    }
}

fn parse_share(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(share) if mapping::RedisMemory::is_valid_share(share) => Ok(share),
        _ => Err(format!(
            "expected a share of maxmemory above 0 and at most 1 (e.g. 0.95), got `{s}`"
        )),
    }
}

fn parse_property(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((key, value)) if !key.trim().is_empty() => {
            Ok((key.trim().to_owned(), value.to_owned()))
        }
        _ => Err(format!("expected `key=value`, got `{s}`")),
    }
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
        assert_eq!(args.batch.batch_size, Some(10));
    }

    #[test]
    fn batch_flags_override_the_file_which_overrides_the_defaults() {
        let file = mapping::BatchConfig {
            max_records: Some(500),
            linger_ms: Some(0),
            ..mapping::BatchConfig::default()
        };
        let settings = BatchArgs::default().settings(&file);
        assert_eq!(
            (settings.max_records, settings.linger),
            (500, Duration::ZERO)
        );
        let flags = BatchArgs {
            batch_size: Some(10),
            linger_ms: Some(7),
            ..BatchArgs::default()
        };
        let settings = flags.settings(&file);
        assert_eq!(
            (settings.max_records, settings.linger),
            (10, Duration::from_millis(7))
        );
        let settings = BatchArgs::default().settings(&mapping::BatchConfig::default());
        assert_eq!(
            (settings.max_records, settings.linger),
            (DEFAULT_BATCH_SIZE, Duration::from_millis(DEFAULT_LINGER_MS))
        );
    }

    #[test]
    fn batch_max_bytes_overrides_the_file() {
        let parse = |extra: &[&str]| {
            let cli = Cli::try_parse_from([&["sink", "run"], extra].concat()).unwrap();
            let Command::Run(args) = cli.command else {
                panic!("not run")
            };
            args.batch.settings(&mapping::BatchConfig {
                max_bytes: 1000,
                ..mapping::BatchConfig::default()
            })
        };
        assert_eq!(parse(&[]).max_bytes, 1000);
        assert_eq!(parse(&["--batch-max-bytes", "2KiB"]).max_bytes, 2048);
        assert_eq!(parse(&["--batch-max-bytes", "300"]).max_bytes, 300);
        assert!(parse_positive_size("0").is_err());
        assert!(parse_positive_size("big").is_err());
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
        assert_eq!(
            parse(&[]),
            Writer::Auto {
                lease: crate::apply::DEFAULT_LEASE_TTL,
                max_memory: crate::apply::DEFAULT_MAX_WRITER_MEMORY,
            }
        );
        assert_eq!(parse(&["--writer", "shared"]), Writer::Shared);
        assert_eq!(
            parse(&["--writer", "exclusive", "--lease-ms", "2500"]),
            Writer::Exclusive {
                lease: Duration::from_millis(2500),
                max_memory: crate::apply::DEFAULT_MAX_WRITER_MEMORY,
            }
        );
        assert_eq!(
            parse(&["--writer", "exclusive", "--max-writer-memory", "512MiB"]),
            Writer::Exclusive {
                lease: crate::apply::DEFAULT_LEASE_TTL,
                max_memory: 512 * 1024 * 1024,
            }
        );
        assert!(Cli::try_parse_from(["sink", "run", "--writer", "solo"]).is_err());
    }

    #[test]
    fn cli_parses_the_memory_settings() {
        let parse = |extra: &[&str]| {
            let mut argv = vec!["sink", "run"];
            argv.extend_from_slice(extra);
            match Cli::try_parse_from(argv).unwrap().command {
                Command::Run(args) => args.memory,
                _ => panic!("not run"),
            }
        };
        let defaults = parse(&[]);
        assert!(!defaults.allow_eviction);
        assert_eq!(defaults.pause_at_memory_share, None);
        let set = parse(&["--allow-eviction", "--pause-at-memory-share", "0.8"]);
        assert!(set.allow_eviction);
        assert_eq!(set.pause_at_memory_share, Some(0.8));
        for bad in ["0", "1.01", "x"] {
            assert!(
                Cli::try_parse_from(["sink", "run", "--pause-at-memory-share", bad]).is_err(),
                "{bad}"
            );
        }
        assert!(Cli::try_parse_from(["sink", "rebuild", "--allow-eviction"]).is_ok());
    }

    #[test]
    fn cli_parses_the_metrics_address_and_log_format() {
        let cli = Cli::try_parse_from(["sink", "run", "--metrics-addr", "127.0.0.1:9464"]).unwrap();
        assert_eq!(cli.log_format, LogFormat::Text);
        let Command::Run(args) = cli.command else {
            panic!("not run")
        };
        assert_eq!(args.metrics_addr.as_deref(), Some("127.0.0.1:9464"));

        // Global: before or after the subcommand, for every subcommand.
        for argv in [
            &["sink", "--log-format", "json", "validate"][..],
            &["sink", "rebuild", "--log-format", "json"][..],
        ] {
            assert_eq!(
                Cli::try_parse_from(argv).unwrap().log_format,
                LogFormat::Json
            );
        }
        assert!(Cli::try_parse_from(["sink", "--log-format", "xml", "run"]).is_err());
    }

    #[test]
    fn clap_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
