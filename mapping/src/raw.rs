//! `connectors.yaml` as written: serde structs mirroring the file exactly, before any
//! validation (that is `load`'s second phase). Leaves that validation may complain about are
//! [`Spanned`] so every error can point at its `line:col`.
//!
//! Containers are deliberately not wrapped in `Spanned`: marked-yaml cannot follow an error
//! path through the wrapper, and `load` finds container positions in the parsed node tree.

use std::collections::BTreeMap;
use std::fmt;

use marked_yaml::{Span, Spanned};
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::Deserialize;

/// A value with no position: a default that is not in the file.
fn unspanned<T>(value: T) -> Spanned<T> {
    Spanned::new(Span::new_blank(), value)
}

/// Default Kafka bootstrap servers: a broker on this machine.
pub fn default_bootstrap_servers() -> Spanned<String> {
    unspanned("127.0.0.1:9092".to_owned())
}

/// Default consumer group of the sink.
pub fn default_group_id() -> Spanned<String> {
    unspanned("agent-context-sink".to_owned())
}

/// Default dead-letter topic of the sink.
pub fn default_dead_letter_topic() -> Spanned<String> {
    unspanned("agent-context-sink-dlq".to_owned())
}

/// Default schema registry: Confluent's port on this machine.
pub fn default_schema_registry_url() -> Spanned<String> {
    unspanned("http://127.0.0.1:8081".to_owned())
}

/// Default Redis: the standard port on this machine, database 0.
pub fn default_redis_url() -> Spanned<String> {
    unspanned("redis://127.0.0.1:6379".to_owned())
}

/// Default `redis.pause_at_memory_share`: the sink pauses consumption when Redis's
/// `used_memory` passes 95% of `maxmemory`, leaving room for the batches already in flight.
pub const DEFAULT_PAUSE_AT_MEMORY_SHARE: f64 = 0.95;

/// Default staleness threshold: 30 seconds.
pub const fn default_stale_after_ms() -> u64 {
    30_000
}

fn default_stale_after_ms_spanned() -> Spanned<u64> {
    unspanned(default_stale_after_ms())
}

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Kafka connection and consumer settings; optional, defaults point at localhost.
    #[serde(default)]
    pub kafka: RawKafka,
    /// Schema registry; optional, defaults to `http://127.0.0.1:8081`.
    #[serde(default)]
    pub schema_registry: RawSchemaRegistry,
    /// Redis; optional, defaults to `redis://127.0.0.1:6379`.
    #[serde(default)]
    pub redis: RawRedis,
    /// Staleness threshold for agent-cli; optional.
    #[serde(default)]
    pub freshness: RawFreshness,
    /// The sink's batch limits; optional.
    #[serde(default)]
    pub batch: RawBatch,
    /// The source databases whose heartbeats give the watermark; optional.
    #[serde(default)]
    pub sources: Vec<RawSource>,
    /// One entry per mapped topic.
    pub mappings: Vec<RawMapping>,
}

/// `kafka:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawKafka {
    /// `bootstrap.servers`; overridden by `KAFKA_BOOTSTRAP_SERVERS`.
    #[serde(default = "default_bootstrap_servers")]
    pub bootstrap_servers: Spanned<String>,
    /// Consumer group id; overridden by `SINK_GROUP_ID`.
    #[serde(default = "default_group_id")]
    pub group_id: Spanned<String>,
    /// Topic for records that cannot be decoded or mapped.
    #[serde(default = "default_dead_letter_topic")]
    pub dead_letter_topic: Spanned<String>,
    /// librdkafka properties passed through as is.
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
}

impl Default for RawKafka {
    fn default() -> Self {
        RawKafka {
            bootstrap_servers: default_bootstrap_servers(),
            group_id: default_group_id(),
            dead_letter_topic: default_dead_letter_topic(),
            properties: BTreeMap::new(),
        }
    }
}

/// `schema_registry:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSchemaRegistry {
    /// Base URL; overridden by `SCHEMA_REGISTRY_URL`. May carry `user:password@`.
    #[serde(default = "default_schema_registry_url")]
    pub url: Spanned<String>,
    /// HTTP basic auth user; overridden by `SCHEMA_REGISTRY_USERNAME`.
    #[serde(default)]
    pub username: Option<Spanned<String>>,
    /// HTTP basic auth password; overridden by `SCHEMA_REGISTRY_PASSWORD`. Better given
    /// through the environment than written here.
    #[serde(default)]
    pub password: Option<Spanned<String>>,
    /// Confluent's `basic.auth.user.info`: `user:password` in one value; overridden by
    /// `SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO`.
    #[serde(default)]
    pub basic_auth_user_info: Option<Spanned<String>>,
    /// PEM file of the CA that signed the registry's HTTPS certificate (added to the system
    /// roots); overridden by `SCHEMA_REGISTRY_CA_FILE`.
    #[serde(default)]
    pub ca_file: Option<Spanned<String>>,
}

impl Default for RawSchemaRegistry {
    fn default() -> Self {
        RawSchemaRegistry {
            url: default_schema_registry_url(),
            username: None,
            password: None,
            basic_auth_user_info: None,
            ca_file: None,
        }
    }
}

/// `redis:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRedis {
    /// `redis://[user:password@]host:port[/db]` or `rediss://...`; overridden by `REDIS_URL`.
    #[serde(default = "default_redis_url")]
    pub url: Spanned<String>,
    /// Certificates for a `rediss://` URL.
    #[serde(default)]
    pub tls: RawRedisTls,
    /// The sink pauses consumption when `used_memory` exceeds this share of `maxmemory`
    /// (sink only; default [`DEFAULT_PAUSE_AT_MEMORY_SHARE`]).
    #[serde(default)]
    pub pause_at_memory_share: Option<Spanned<f64>>,
}

impl Default for RawRedis {
    fn default() -> Self {
        RawRedis {
            url: default_redis_url(),
            tls: RawRedisTls::default(),
            pause_at_memory_share: None,
        }
    }
}

/// `redis.tls:`: PEM files; each overridden by its `REDIS_TLS_*_FILE` variable.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRedisTls {
    /// CA that signed the server's certificate (instead of the system roots).
    #[serde(default)]
    pub ca_file: Option<Spanned<String>>,
    /// Client certificate, for servers that require one (`tls-auth-clients yes`).
    #[serde(default)]
    pub cert_file: Option<Spanned<String>>,
    /// The client certificate's private key.
    #[serde(default)]
    pub key_file: Option<Spanned<String>>,
}

/// `freshness:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFreshness {
    /// Results older than this many milliseconds are marked stale.
    #[serde(default = "default_stale_after_ms_spanned")]
    pub stale_after_ms: Spanned<u64>,
}

impl Default for RawFreshness {
    fn default() -> Self {
        RawFreshness {
            stale_after_ms: default_stale_after_ms_spanned(),
        }
    }
}

/// `batch:`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBatch {
    /// At most this many bytes of record keys and values per batch, as a number of bytes or
    /// with a unit (`16MiB`, `512KB`); default [`crate::model::DEFAULT_BATCH_MAX_BYTES`];
    /// overridden by `SINK_BATCH_MAX_BYTES`.
    #[serde(default)]
    pub max_bytes: Option<Spanned<String>>,
    /// At most this many records per batch; overridden by `--batch-size`.
    #[serde(default)]
    pub max_records: Option<Spanned<u64>>,
    /// How long a batch waits for more records once it holds one, in milliseconds;
    /// overridden by `--linger-ms`.
    #[serde(default)]
    pub linger_ms: Option<Spanned<u64>>,
}

/// One entry of `sources:`: a source database and the topic carrying its heartbeats.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSource {
    /// Unique source name; used in `sink:watermark:{name}` and in `source:` of mappings.
    pub name: Spanned<String>,
    /// Kafka topic of the heartbeat table's change events (e.g. `cdc.public.dbz_heartbeat`).
    pub heartbeat_topic: Spanned<String>,
    /// Results whose watermark is older than this are stale; defaults to
    /// `freshness.stale_after_ms`.
    #[serde(default)]
    pub stale_after_ms: Option<Spanned<u64>>,
}

/// One entry of `mappings:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMapping {
    /// Unique mapping name.
    pub name: Spanned<String>,
    /// Kafka topic of the table's change events.
    pub topic: Spanned<String>,
    /// Row key template, e.g. `customer:{id}`.
    pub key: Spanned<String>,
    /// `all` (the default) or a list of columns.
    #[serde(default)]
    pub fields: RawFields,
    /// Types of columns in records without a schema (JsonConverter with
    /// `schemas.enable=false`): column name -> type name (see `declared`).
    #[serde(default)]
    pub types: BTreeMap<String, Spanned<String>>,
    /// Expiry of row hashes after their last change, in seconds.
    #[serde(default)]
    pub ttl_seconds: Option<Spanned<u64>>,
    /// Unique secondary indexes.
    #[serde(default)]
    pub indexes: Vec<RawIndex>,
    /// Parent -> children sorted sets.
    #[serde(default)]
    pub relations: Vec<RawRelation>,
    /// Tools offered to agents.
    #[serde(default)]
    pub lookups: Vec<RawLookup>,
    /// Per-parent counts and sums maintained by the sink.
    #[serde(default)]
    pub aggregates: Vec<RawAggregate>,
    /// Case-insensitive prefix searches over stored fields.
    #[serde(default)]
    pub search: Vec<RawSearch>,
    /// The source (`sources:`) whose watermark covers the mapping; defaults to the only one.
    #[serde(default)]
    pub source: Option<Spanned<String>>,
}

/// `fields:`: `all` or a list.
#[derive(Debug, Default)]
pub enum RawFields {
    /// `fields: all`.
    #[default]
    All,
    /// `fields: [id, {from: mrr_cents, as: mrr}]`.
    List(Vec<Spanned<RawField>>),
}

/// One entry of a `fields:` list.
#[derive(Debug)]
pub enum RawField {
    /// `id`: the column under its own name.
    Name(String),
    /// `{from: mrr_cents, as: mrr}`: the column under another name.
    Renamed(RawRename),
}

/// `{from: column, as: stored_name}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRename {
    /// Column name in the Debezium record.
    pub from: Spanned<String>,
    /// Stored field name.
    #[serde(rename = "as")]
    pub to: Spanned<String>,
}

impl<'de> Deserialize<'de> for RawFields {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct FieldsVisitor;

        impl<'de> Visitor<'de> for FieldsVisitor {
            type Value = RawFields;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("`all` or a list of column names and {from, as} entries")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawFields, E> {
                if v == "all" {
                    Ok(RawFields::All)
                } else {
                    Err(E::invalid_value(de::Unexpected::Str(v), &self))
                }
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RawFields, A::Error> {
                let mut list = Vec::new();
                while let Some(item) = seq.next_element()? {
                    list.push(item);
                }
                Ok(RawFields::List(list))
            }
        }

        deserializer.deserialize_any(FieldsVisitor)
    }
}

impl<'de> Deserialize<'de> for RawField {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct FieldVisitor;

        impl<'de> Visitor<'de> for FieldVisitor {
            type Value = RawField;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a column name or {from: column, as: name}")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawField, E> {
                Ok(RawField::Name(v.to_owned()))
            }

            fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<RawField, A::Error> {
                RawRename::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(RawField::Renamed)
            }
        }

        deserializer.deserialize_any(FieldVisitor)
    }
}

/// One entry of `indexes:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawIndex {
    /// Unique within the mapping.
    pub name: Spanned<String>,
    /// Index key template, e.g. `customer:email:{email}`.
    pub key: Spanned<String>,
}

/// One entry of `relations:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRelation {
    /// Unique within the mapping.
    pub name: Spanned<String>,
    /// Parent key template, e.g. `customer:{customer_id}:orders`.
    pub key: Spanned<String>,
    /// Stored field giving the child's score.
    pub order_by: Spanned<String>,
}

/// One entry of `lookups:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLookup {
    /// Tool name, unique across the file.
    pub tool: Spanned<String>,
    /// Tool description for the model.
    pub description: Spanned<String>,
    /// Alternative parameters; a call gives exactly one.
    pub by: Vec<RawParam>,
    /// Relation whose children the lookup returns.
    #[serde(default)]
    pub relation: Option<Spanned<String>>,
    /// Limit parameter of a relation lookup.
    #[serde(default)]
    pub limit: Option<RawLimit>,
    /// Equality filters of a relation lookup (optional parameters).
    #[serde(default)]
    pub filters: Vec<RawFilter>,
    /// Inclusive bounds on the relation's `order_by` (RFC 3339 parameters).
    #[serde(default)]
    pub range: Option<RawRange>,
    /// Aggregate (`aggregates:`) whose figures the lookup returns.
    #[serde(default)]
    pub aggregate: Option<Spanned<String>>,
    /// Related rows returned inside the found row (row lookups only).
    #[serde(default)]
    pub include: Vec<RawInclude>,
    /// Search (of `search:`) whose matches the lookup returns.
    #[serde(default)]
    pub search: Option<Spanned<String>>,
}

/// One entry of a row lookup's `include:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawInclude {
    /// Relation of another mapping whose key the found row's primary key fills.
    pub relation: Spanned<String>,
    /// Field of the answer that holds the related rows.
    #[serde(rename = "as")]
    pub as_field: Spanned<String>,
    /// At most this many related rows, newest first.
    pub limit: Spanned<u32>,
}

/// One entry of a lookup's `filters:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFilter {
    /// Parameter name.
    pub param: Spanned<String>,
    /// Stored field compared for equality.
    pub field: Spanned<String>,
    /// Parameter description for the model.
    pub description: Spanned<String>,
}

/// A lookup's `range:`: the names of its two bound parameters.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRange {
    /// Parameter of the lower bound (inclusive).
    pub since: Spanned<String>,
    /// Parameter of the upper bound (inclusive).
    pub until: Spanned<String>,
}

/// One entry of `aggregates:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAggregate {
    /// Unique within the mapping.
    pub name: Spanned<String>,
    /// Parent key template, e.g. `customer:{customer_id}:order_stats`.
    pub key: Spanned<String>,
    /// Whether to count the children.
    #[serde(default)]
    pub count: Option<Spanned<bool>>,
    /// Stored numeric fields to sum.
    #[serde(default)]
    pub sum: Vec<Spanned<String>>,
    /// Stored field whose values split the figures into groups.
    #[serde(default)]
    pub group_by: Option<Spanned<String>>,
}

/// One entry of `search:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSearch {
    /// Search name, unique within the mapping.
    pub name: Spanned<String>,
    /// Stored field whose lower-cased value is searched by prefix.
    pub field: Spanned<String>,
}

/// One entry of `by:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawParam {
    /// Parameter name.
    pub param: Spanned<String>,
    /// `integer` or `string`.
    #[serde(rename = "type")]
    pub r#type: Spanned<String>,
    /// Parameter description for the model.
    pub description: Spanned<String>,
    /// Unique index resolving the value to a row.
    #[serde(default)]
    pub index: Option<Spanned<String>>,
}

/// `limit:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimit {
    /// Parameter name.
    pub param: Spanned<String>,
    /// Parameter description for the model.
    pub description: Spanned<String>,
    /// Used when the call omits the parameter.
    pub default: Spanned<u32>,
    /// Largest accepted value.
    pub max: Spanned<u32>,
}
