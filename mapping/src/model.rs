//! The validated, compiled mapping model: what both binaries work from once
//! `connectors.yaml` has been loaded and checked (see `load`). Nothing here does I/O.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use crate::aggregate::Aggregate;
use crate::declared::DeclaredTypes;
use crate::diagnostics::{redact_properties, redact_url, split_userinfo};
use crate::secret::Secret;
use crate::template::KeyTemplate;
use crate::types::ColumnType;

/// The whole validated `connectors.yaml`.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Kafka connection and consumer settings (sink only).
    pub kafka: KafkaConfig,
    /// Confluent-compatible schema registry (sink only).
    pub schema_registry: SchemaRegistryConfig,
    /// Redis connection (both binaries).
    pub redis: RedisConfig,
    /// When the sink stops writing for lack of Redis memory (sink only).
    pub redis_memory: RedisMemory,
    /// How old data may be before agent-cli calls it stale.
    pub freshness: FreshnessConfig,
    /// The sink's batch limits from the file (sink only).
    pub batch: BatchConfig,
    /// Source databases with a heartbeat (empty: freshness comes from the sink's own marks).
    pub sources: Vec<Source>,
    /// One entry per mapped topic, in file order.
    pub mappings: Vec<Mapping>,
}

/// Kafka settings.
#[derive(Clone, PartialEq)]
pub struct KafkaConfig {
    /// `bootstrap.servers`.
    pub bootstrap_servers: String,
    /// Consumer group id.
    pub group_id: String,
    /// Topic receiving records that cannot be decoded or mapped.
    pub dead_letter_topic: String,
    /// Raw librdkafka properties passed through unchanged.
    pub properties: BTreeMap<String, String>,
}

impl fmt::Debug for KafkaConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KafkaConfig")
            .field("bootstrap_servers", &self.bootstrap_servers)
            .field("group_id", &self.group_id)
            .field("dead_letter_topic", &self.dead_letter_topic)
            .field("properties", &redact_properties(&self.properties))
            .finish()
    }
}

/// Schema registry settings.
#[derive(Debug, Clone, PartialEq)]
pub struct SchemaRegistryConfig {
    /// Base URL, e.g. `http://127.0.0.1:8081` or Apicurio's `.../apis/ccompat/v7`, without
    /// credentials: a `user:password@` written in the URL is moved to `username`/`password`,
    /// so the URL can be shown as is.
    pub url: String,
    /// HTTP basic auth user.
    pub username: Option<String>,
    /// HTTP basic auth password.
    pub password: Option<Secret>,
    /// PEM file of a CA trusted for HTTPS in addition to the system roots.
    pub ca_file: Option<PathBuf>,
}

impl SchemaRegistryConfig {
    /// The registry at `url`; a `user:password@` in it becomes the credentials.
    pub fn from_url(url: &str) -> SchemaRegistryConfig {
        let (url, credentials) = split_userinfo(url);
        let (username, password) = credentials.map_or((None, None), |(user, password)| {
            (Some(user), password.map(Secret::new))
        });
        SchemaRegistryConfig {
            url,
            username,
            password,
            ca_file: None,
        }
    }
}

/// A bare URL names a registry with no settings beyond it (tests, tools).
impl From<&str> for SchemaRegistryConfig {
    fn from(url: &str) -> Self {
        SchemaRegistryConfig::from_url(url)
    }
}

impl From<&String> for SchemaRegistryConfig {
    fn from(url: &String) -> Self {
        SchemaRegistryConfig::from_url(url)
    }
}

impl From<&SchemaRegistryConfig> for SchemaRegistryConfig {
    fn from(config: &SchemaRegistryConfig) -> Self {
        config.clone()
    }
}

/// How the sink guards Redis memory (`redis.pause_at_memory_share`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RedisMemory {
    /// The sink pauses consumption while `used_memory` exceeds this share of `maxmemory`
    /// (above 0, at most 1; no check when `maxmemory` is 0).
    pub pause_at_share: f64,
}

impl Default for RedisMemory {
    fn default() -> Self {
        RedisMemory {
            pause_at_share: crate::raw::DEFAULT_PAUSE_AT_MEMORY_SHARE,
        }
    }
}

impl RedisMemory {
    /// Whether `share` is a usable `pause_at_share`: above 0 and at most 1.
    pub fn is_valid_share(share: f64) -> bool {
        share > 0.0 && share <= 1.0
    }
}

/// Redis settings.
#[derive(Clone, PartialEq)]
pub struct RedisConfig {
    /// `redis://` or `rediss://` URL, possibly with `user:password@` (show it only through
    /// [`redact_url`]).
    pub url: String,
    /// Certificates for `rediss://`.
    pub tls: RedisTls,
    /// ACL user (`REDIS_USERNAME`); replaces the URL's.
    pub username: Option<String>,
    /// Password (`REDIS_PASSWORD`); replaces the URL's.
    pub password: Option<Secret>,
}

impl RedisConfig {
    /// The Redis at `url`, with no settings beyond what the URL says.
    pub fn from_url(url: impl Into<String>) -> RedisConfig {
        RedisConfig {
            url: url.into(),
            tls: RedisTls::default(),
            username: None,
            password: None,
        }
    }
}

/// A bare URL names a Redis with no settings beyond it (tests, tools, defaults).
impl From<&str> for RedisConfig {
    fn from(url: &str) -> Self {
        RedisConfig::from_url(url)
    }
}

impl From<String> for RedisConfig {
    fn from(url: String) -> Self {
        RedisConfig::from_url(url)
    }
}

impl From<&String> for RedisConfig {
    fn from(url: &String) -> Self {
        RedisConfig::from_url(url.as_str())
    }
}

impl From<&RedisConfig> for RedisConfig {
    fn from(config: &RedisConfig) -> Self {
        config.clone()
    }
}

impl fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisConfig")
            .field("url", &redact_url(&self.url))
            .field("tls", &self.tls)
            .field("username", &self.username)
            .field("password", &self.password)
            .finish()
    }
}

/// PEM files for a `rediss://` connection; unset files mean the system roots and no client
/// certificate.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RedisTls {
    /// CA that signed the server's certificate, trusted instead of the system roots.
    pub ca_file: Option<PathBuf>,
    /// Client certificate (set together with `key_file`).
    pub cert_file: Option<PathBuf>,
    /// The client certificate's private key.
    pub key_file: Option<PathBuf>,
}

/// Freshness settings.
#[derive(Debug, Clone, PartialEq)]
pub struct FreshnessConfig {
    /// A result older than this is marked stale.
    pub stale_after_ms: u64,
}

/// Bytes of record keys and values per batch unless told otherwise: a batch of the default
/// 2,000 records of up to 8 KiB each fits, and the consume stage's queue of batches stays
/// within a few hundred MiB however large the records are.
pub const DEFAULT_BATCH_MAX_BYTES: u64 = 16 * 1024 * 1024;

/// `batch:` settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchConfig {
    /// At most this many bytes of record keys and values per batch (at least 1); a record
    /// larger than that forms a batch of its own.
    pub max_bytes: u64,
    /// At most this many records per batch (at least 1), when the file says; the sink's
    /// default otherwise.
    pub max_records: Option<usize>,
    /// How long a batch waits for company, in milliseconds, when the file says.
    pub linger_ms: Option<u64>,
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig {
            max_bytes: DEFAULT_BATCH_MAX_BYTES,
            max_records: None,
            linger_ms: None,
        }
    }
}

/// A source database whose heartbeats travel the same path as its data, giving the
/// watermark `sink:watermark:{name}` (ARCHITECTURE.md, "Source watermark").
#[derive(Debug, Clone, PartialEq)]
pub struct Source {
    /// Unique name, e.g. `cdc`.
    pub name: String,
    /// Topic of the heartbeat table's change events; consumed, never mapped to rows.
    pub heartbeat_topic: String,
    /// A watermark older than this makes results stale.
    pub stale_after_ms: u64,
    /// The mappings it covers (names, in file order): their partitions are the ones the
    /// watermark waits for.
    pub mappings: Vec<String>,
}

/// How one topic's rows become Redis keys.
#[derive(Debug, Clone, PartialEq)]
pub struct Mapping {
    /// Unique name; used in bookkeeping keys (`sink:rows:{name}`).
    pub name: String,
    /// Kafka topic carrying the table's Debezium change events.
    pub topic: String,
    /// Row hash key, e.g. `customer:{id}`; names stored fields that come from the primary key.
    pub key: KeyTemplate,
    /// Which columns are stored, under which names.
    pub fields: FieldSelection,
    /// Types of columns in records that carry no schema (`types:`); records with a schema
    /// take their types from it.
    pub types: DeclaredTypes,
    /// Optional expiry of row hashes after their last change.
    pub ttl_seconds: Option<u64>,
    /// Unique secondary indexes.
    pub indexes: Vec<Index>,
    /// Parent -> children sorted sets.
    pub relations: Vec<Relation>,
    /// Lookups offered to agents as tools.
    pub lookups: Vec<Lookup>,
    /// Per-parent figures maintained by the sink.
    pub aggregates: Vec<Aggregate>,
    /// Case-insensitive prefix searches maintained by the sink.
    pub search: Vec<Search>,
}

/// A case-insensitive prefix search over one stored field (`search:`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Search {
    /// Name, unique within the mapping; lookups name it.
    pub name: String,
    /// Stored field (its name in the row hash).
    pub field: String,
}

/// Column selection.
#[derive(Debug, Clone, PartialEq)]
pub enum FieldSelection {
    /// Every column, under its own name (new columns appear by themselves).
    All,
    /// Only these columns, in this order.
    List(Vec<SelectedField>),
}

/// One selected column.
#[derive(Debug, Clone, PartialEq)]
pub struct SelectedField {
    /// Column name in the Debezium record.
    pub from: String,
    /// Field name in the Redis hash (and in templates).
    pub to: String,
}

/// A unique secondary index: string key -> row primary key.
#[derive(Debug, Clone, PartialEq)]
pub struct Index {
    /// Unique within the mapping; used in `sink:index:{mapping}:{name}`.
    pub name: String,
    /// e.g. `customer:email:{email}`.
    pub key: KeyTemplate,
}

/// A parent -> children relation kept as a sorted set of child primary keys.
#[derive(Debug, Clone, PartialEq)]
pub struct Relation {
    /// Unique within the mapping.
    pub name: String,
    /// Parent key, e.g. `customer:{customer_id}:orders`.
    pub key: KeyTemplate,
    /// Stored field whose numeric value (timestamps: epoch microseconds) is the score.
    pub order_by: String,
}

/// A lookup offered as an LLM tool.
#[derive(Debug, Clone, PartialEq)]
pub struct Lookup {
    /// Tool name, unique across the file.
    pub tool: String,
    /// Tool description shown to the model.
    pub description: String,
    /// Alternative parameters; a call must give exactly one of them.
    pub by: Vec<LookupParam>,
    /// When set, the lookup returns the relation's children (newest first) instead of one row.
    pub relation: Option<String>,
    /// The limit parameter of a relation lookup.
    pub limit: Option<LimitParam>,
    /// When set, the lookup returns the figures of this aggregate of the mapping.
    pub aggregate: Option<String>,
    /// Equality filters of a relation lookup, each an optional parameter.
    pub filters: Vec<LookupFilter>,
    /// Inclusive bounds on the relation's `order_by`, as optional RFC 3339 parameters.
    pub range: Option<RangeParams>,
    /// Related rows a row lookup returns inside the found row (`include:`).
    pub include: Vec<Include>,
    /// For search lookups: the search whose matches are returned.
    pub search: Option<String>,
}

/// One `include:` entry of a row lookup: the newest rows of another mapping's relation whose
/// key the found row's primary key fills, returned in the row under `as_field`.
#[derive(Debug, Clone, PartialEq)]
pub struct Include {
    /// The relation's name.
    pub relation: String,
    /// The mapping that declares the relation (whose rows, types and freshness it reads).
    pub mapping: String,
    /// Field of the found row that holds the related rows (`as:`).
    pub as_field: String,
    /// At most this many related rows.
    pub limit: u32,
}

/// An optional equality filter of a relation lookup, answered from a filtered relation the
/// sink maintains ([`crate::layout::filtered_relation_key`]).
#[derive(Debug, Clone, PartialEq)]
pub struct LookupFilter {
    /// Parameter name.
    pub param: String,
    /// Stored field it compares.
    pub field: String,
    /// Its description.
    pub description: String,
}

/// The parameter names of a relation lookup's `range`.
#[derive(Debug, Clone, PartialEq)]
pub struct RangeParams {
    /// Lower bound parameter (inclusive).
    pub since: String,
    /// Upper bound parameter (inclusive).
    pub until: String,
}

/// JSON type of a lookup parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamType {
    /// JSON integer.
    Integer,
    /// JSON string.
    String,
}

/// One way to address the row(s) of a lookup.
#[derive(Debug, Clone, PartialEq)]
pub struct LookupParam {
    /// Parameter name in the tool's JSON schema.
    pub param: String,
    /// Its JSON type.
    pub r#type: ParamType,
    /// Its description.
    pub description: String,
    /// Resolve through this unique index; `None` means the value fills the single field of
    /// the row key template (or, for a relation lookup, of the relation's key template).
    pub index: Option<String>,
}

/// The `limit` parameter of a relation lookup.
#[derive(Debug, Clone, PartialEq)]
pub struct LimitParam {
    /// Parameter name.
    pub param: String,
    /// Its description.
    pub description: String,
    /// Used when the call omits it.
    pub default: u32,
    /// Largest accepted value.
    pub max: u32,
}

impl Config {
    /// The mapping consuming `topic`.
    pub fn mapping_for_topic(&self, topic: &str) -> Option<&Mapping> {
        self.mappings.iter().find(|m| m.topic == topic)
    }

    /// The mapping by its name.
    pub fn mapping(&self, name: &str) -> Option<&Mapping> {
        self.mappings.iter().find(|m| m.name == name)
    }

    /// The lookup offered as tool `tool`, with its mapping.
    pub fn lookup(&self, tool: &str) -> Option<(&Mapping, &Lookup)> {
        self.mappings
            .iter()
            .find_map(|m| m.lookups.iter().find(|l| l.tool == tool).map(|l| (m, l)))
    }

    /// Every lookup with its mapping, in file order.
    pub fn lookups(&self) -> impl Iterator<Item = (&Mapping, &Lookup)> {
        self.mappings
            .iter()
            .flat_map(|m| m.lookups.iter().map(move |l| (m, l)))
    }

    /// Every mapped topic, in file order.
    pub fn topics(&self) -> impl Iterator<Item = &str> {
        self.mappings.iter().map(|m| m.topic.as_str())
    }

    /// The source whose watermark covers mapping `name`, if sources are declared.
    pub fn source_of(&self, name: &str) -> Option<&Source> {
        self.sources
            .iter()
            .find(|s| s.mappings.iter().any(|m| m == name))
    }

    /// The source whose heartbeats `topic` carries.
    pub fn source_for_heartbeat(&self, topic: &str) -> Option<&Source> {
        self.sources.iter().find(|s| s.heartbeat_topic == topic)
    }
}

impl Mapping {
    /// The stored name of Debezium column `column`, or `None` when it is not selected.
    pub fn stored_name<'a>(&'a self, column: &'a str) -> Option<&'a str> {
        match &self.fields {
            FieldSelection::All => Some(column),
            FieldSelection::List(list) => list
                .iter()
                .find(|f| f.from == column)
                .map(|f| f.to.as_str()),
        }
    }

    /// Applies the field selection and renames to the columns of a value schema: stored
    /// name and type, in stored order (schema order for `all`, list order otherwise; selected
    /// columns missing from `columns` are left out).
    pub fn stored_types(&self, columns: &[(String, ColumnType)]) -> Vec<(String, ColumnType)> {
        match &self.fields {
            FieldSelection::All => columns.to_vec(),
            FieldSelection::List(list) => list
                .iter()
                .filter_map(|f| {
                    columns
                        .iter()
                        .find(|(name, _)| *name == f.from)
                        .map(|(_, t)| (f.to.clone(), *t))
                })
                .collect(),
        }
    }

    /// The index by name.
    pub fn index(&self, name: &str) -> Option<&Index> {
        self.indexes.iter().find(|i| i.name == name)
    }

    /// The relation by name.
    pub fn relation(&self, name: &str) -> Option<&Relation> {
        self.relations.iter().find(|r| r.name == name)
    }

    /// The aggregate by name.
    pub fn aggregate(&self, name: &str) -> Option<&Aggregate> {
        self.aggregates.iter().find(|a| a.name == name)
    }
}

impl Lookup {
    /// The parameter by name.
    pub fn param(&self, name: &str) -> Option<&LookupParam> {
        self.by.iter().find(|p| p.param == name)
    }
}

impl ParamType {
    /// `integer` or `string`, as in `connectors.yaml` and JSON Schema.
    pub const fn as_str(self) -> &'static str {
        match self {
            ParamType::Integer => "integer",
            ParamType::String => "string",
        }
    }
}
