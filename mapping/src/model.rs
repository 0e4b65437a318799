//! The validated, compiled mapping model: what both binaries work from once
//! `connectors.yaml` has been loaded and checked (see `load`). Nothing here does I/O.

use std::collections::BTreeMap;

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
    /// How old data may be before agent-cli calls it stale.
    pub freshness: FreshnessConfig,
    /// Source databases with a heartbeat (empty: freshness comes from the sink's own marks).
    pub sources: Vec<Source>,
    /// One entry per mapped topic, in file order.
    pub mappings: Vec<Mapping>,
}

/// Kafka settings.
#[derive(Debug, Clone, PartialEq)]
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

/// Schema registry settings.
#[derive(Debug, Clone, PartialEq)]
pub struct SchemaRegistryConfig {
    /// Base URL, e.g. `http://127.0.0.1:8081` or Apicurio's `.../apis/ccompat/v7`.
    pub url: String,
}

/// Redis settings.
#[derive(Debug, Clone, PartialEq)]
pub struct RedisConfig {
    /// `redis://host:port[/db]`.
    pub url: String,
}

/// Freshness settings.
#[derive(Debug, Clone, PartialEq)]
pub struct FreshnessConfig {
    /// A result older than this is marked stale.
    pub stale_after_ms: u64,
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
    /// Optional expiry of row hashes after their last change.
    pub ttl_seconds: Option<u64>,
    /// Unique secondary indexes.
    pub indexes: Vec<Index>,
    /// Parent -> children sorted sets.
    pub relations: Vec<Relation>,
    /// Lookups offered to agents as tools.
    pub lookups: Vec<Lookup>,
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
