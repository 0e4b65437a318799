//! Loading `connectors.yaml` into a validated [`Config`], in two phases.
//!
//! 1. Parse: marked-yaml reads the YAML into a node tree with positions and deserialises it
//!    into [`RawConfig`] (unknown keys and wrong types are errors). figment then layers the
//!    file's connection settings with [`ConnectionOverrides`] (environment variables and
//!    flags, read by the binaries); the overrides win. This phase stops at the first error.
//! 2. Validate: [`RawConfig`] -> [`Config`], collecting every error. Each error reads
//!    `connectors.yaml:LINE:COL: what is wrong (what was expected)` and points at the
//!    offending YAML node.
//!
//! Validation rules:
//! - connection settings are not empty; the registry URL is `http(s)://`, the Redis URL
//!   `redis://`, `rediss://`, `unix://` or `redis+unix://`; `stale_after_ms` > 0;
//!   `batch.max_bytes` is a positive size (`16777216`, `16MiB`), `batch.max_records` at least 1;
//!   `redis.pause_at_memory_share` is above 0 and at most 1;
//! - credentials and certificate files (`redis.tls`, the registry's basic auth and CA) follow
//!   the rules in `load/validate/security.rs`; a URL in a message is always redacted;
//! - at least one mapping; mapping names, topics and tool names are unique across the file;
//!   names of mappings, indexes and relations are letters, digits, `_` and `-` (they are
//!   parts of `sink:` keys); topics are valid Kafka topic names and differ from the
//!   dead-letter topic;
//! - a `fields` list is not empty, selects each column once and stores each name once;
//!   `as` names are letters, digits and `_`;
//! - templates parse (see [`crate::template`]), start with literal text, do not use the
//!   reserved `sink:` prefix, and (when `fields` is a list) only name selected fields;
//! - no two key templates of the file (row, index and relation keys of all mappings) may
//!   produce the same key, by [`crate::template::KeyTemplate::may_collide`]'s rule: split on `:`, same number
//!   of segments, equal literal segments and overlapping placeholder segments at the same
//!   positions;
//! - index and relation names are unique per mapping; a relation's `order_by` is selected;
//!   `ttl_seconds` > 0;
//! - lookups: tool names are 1-64 letters, digits, `_`, `-`; descriptions are not empty; `by`
//!   is not empty and its parameter names are unique; `type` is `integer` or `string`;
//!   `index` names an index of the mapping and is not combined with `relation`; a parameter
//!   without `index` fills a template with exactly one field (the row key, or the relation
//!   key for relation lookups); `relation` names a relation of the mapping; `limit` only with
//!   `relation`, with 1 <= default <= max and a name distinct from the `by` parameters;
//! - sources: unique names (letters, digits, `_`, `-`), heartbeat topics valid, distinct,
//!   neither mapped nor the dead-letter topic, `stale_after_ms` > 0; a mapping's `source`
//!   names a declared source and may be left out when there is exactly one.

use std::fmt;
use std::path::Path;

use figment::providers::Serialized;
use figment::Figment;
use marked_yaml::spanned_serde::{Error as NodeError, FromNodeError};
use marked_yaml::{LoadError, LoaderOptions, Marker, Node};
use serde::{Deserialize, Serialize};

use crate::model::Config;
use crate::raw::RawConfig;
use crate::secret::Secret;
use validate::Validator;

mod validate;

/// Connection settings given outside the file (environment variables, flags); each `Some`
/// replaces the file's value.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ConnectionOverrides {
    /// Replaces `kafka.bootstrap_servers` (`KAFKA_BOOTSTRAP_SERVERS`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bootstrap_servers: Option<String>,
    /// Replaces `schema_registry.url` (`SCHEMA_REGISTRY_URL`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schema_registry_url: Option<String>,
    /// Replaces `redis.url` (`REDIS_URL`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis_url: Option<String>,
    /// Replaces `kafka.group_id` (`SINK_GROUP_ID`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group_id: Option<String>,
    /// Credentials and certificates, applied by the validator rather than layered by figment
    /// (so secrets never pass through figment's values).
    #[serde(skip)]
    pub security: SecurityOverrides,
}

/// Credentials and certificate files given outside the file; each `Some` replaces the
/// file's value (or, for Redis credentials, the URL's).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SecurityOverrides {
    /// Replaces `redis.tls.ca_file` (`REDIS_TLS_CA_FILE`).
    pub redis_tls_ca_file: Option<String>,
    /// Replaces `redis.tls.cert_file` (`REDIS_TLS_CERT_FILE`).
    pub redis_tls_cert_file: Option<String>,
    /// Replaces `redis.tls.key_file` (`REDIS_TLS_KEY_FILE`).
    pub redis_tls_key_file: Option<String>,
    /// Replaces the Redis URL's user (`REDIS_USERNAME`).
    pub redis_username: Option<String>,
    /// Replaces the Redis URL's password (`REDIS_PASSWORD`).
    pub redis_password: Option<Secret>,
    /// Replaces `schema_registry.username` (`SCHEMA_REGISTRY_USERNAME`).
    pub schema_registry_username: Option<String>,
    /// Replaces `schema_registry.password` (`SCHEMA_REGISTRY_PASSWORD`).
    pub schema_registry_password: Option<Secret>,
    /// Replaces `schema_registry.basic_auth_user_info` (`SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO`).
    pub schema_registry_basic_auth_user_info: Option<Secret>,
    /// Replaces `schema_registry.ca_file` (`SCHEMA_REGISTRY_CA_FILE`).
    pub schema_registry_ca_file: Option<String>,
}

/// The connection settings figment layers (same names as [`ConnectionOverrides`]).
#[derive(Debug, Serialize, Deserialize)]
struct Connections {
    bootstrap_servers: String,
    schema_registry_url: String,
    redis_url: String,
    group_id: String,
}

/// One problem with the configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Something at a position in the file.
    #[error("{file}:{line}:{column}: {message}")]
    At {
        /// The file as named to [`load_config`].
        file: String,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What is wrong (what was expected).
        message: String,
    },
    /// Something about the file without a position.
    #[error("{file}: {message}")]
    File {
        /// The file as named to [`load_config`].
        file: String,
        /// What is wrong (what was expected).
        message: String,
    },
    /// The file cannot be read.
    #[error("{file}: cannot read: {source}")]
    Read {
        /// The file as named to [`load_config`].
        file: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A connection override (environment variable or flag) is unusable.
    #[error("{setting} (overridden by the environment or a flag): {message}")]
    Override {
        /// The overridden setting, e.g. `redis.url`.
        setting: &'static str,
        /// What is wrong (what was expected).
        message: String,
    },
}

impl ConfigError {
    fn position(&self) -> (usize, usize) {
        match self {
            ConfigError::At { line, column, .. } => (*line, *column),
            _ => (0, 0),
        }
    }
}

/// Every problem found, displayed one per line.
#[derive(Debug)]
pub struct ConfigErrors {
    /// In file order (errors without a position first).
    pub errors: Vec<ConfigError>,
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl ConfigErrors {
    /// Every error on one line, `; `-separated: for a log line (a refused reload).
    pub fn one_line(&self) -> String {
        self.to_string()
            .lines()
            .filter(|l| !l.trim().is_empty())
            .collect::<Vec<_>>()
            .join("; ")
    }
}

impl std::error::Error for ConfigErrors {}

impl From<ConfigError> for ConfigErrors {
    fn from(e: ConfigError) -> Self {
        ConfigErrors { errors: vec![e] }
    }
}

/// Reads, parses and validates the file at `path`, with `overrides` applied.
pub fn load_config(path: &Path, overrides: &ConnectionOverrides) -> Result<Config, ConfigErrors> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        file: file.clone(),
        source,
    })?;
    load_config_str(&text, &file, overrides)
}

/// [`load_config`] on text already read; `file` names it in errors.
pub fn load_config_str(
    text: &str,
    file: &str,
    overrides: &ConnectionOverrides,
) -> Result<Config, ConfigErrors> {
    let options = LoaderOptions::default().error_on_duplicate_keys(true);
    let root = marked_yaml::parse_yaml_with_options(0, text, options)
        .map_err(|e| syntax_error(file, &e))?;
    let raw: RawConfig = marked_yaml::from_node(&root).map_err(|e| shape_error(file, &root, e))?;
    let connections = layer(&raw, overrides).map_err(|e| ConfigError::File {
        file: file.to_owned(),
        message: format!("cannot layer connection overrides: {e}"),
    })?;
    Validator::new(file, &root).validate(&raw, connections, overrides)
}

fn layer(
    raw: &RawConfig,
    overrides: &ConnectionOverrides,
) -> Result<Connections, Box<figment::Error>> {
    let from_file = Connections {
        bootstrap_servers: raw.kafka.bootstrap_servers.to_string(),
        schema_registry_url: raw.schema_registry.url.to_string(),
        redis_url: raw.redis.url.to_string(),
        group_id: raw.kafka.group_id.to_string(),
    };
    Figment::from(Serialized::defaults(from_file))
        .merge(Serialized::defaults(overrides))
        .extract()
        .map_err(Box::new)
}

fn at(file: &str, mark: Option<&Marker>, message: String) -> ConfigError {
    match mark {
        Some(m) => ConfigError::At {
            file: file.to_owned(),
            line: m.line(),
            column: m.column(),
            message,
        },
        None => ConfigError::File {
            file: file.to_owned(),
            message,
        },
    }
}

fn syntax_error(file: &str, e: &LoadError) -> ConfigError {
    let (mark, message) = match e {
        LoadError::TopLevelMustBeMapping(m) => (
            Some(*m),
            "the top level is not a mapping (expected `mappings:` and optional connection sections)"
                .to_owned(),
        ),
        LoadError::TopLevelMustBeSequence(m) => {
            (Some(*m), "the top level is not a sequence".to_owned())
        }
        LoadError::UnexpectedAnchor(m) => (
            Some(*m),
            "yaml anchors are not supported (expected plain values)".to_owned(),
        ),
        LoadError::MappingKeyMustBeScalar(m) => (
            Some(*m),
            "a mapping key is not a scalar (expected a plain key)".to_owned(),
        ),
        LoadError::UnexpectedTag(m) => (
            Some(*m),
            "yaml tags are not supported (expected plain values)".to_owned(),
        ),
        LoadError::ScanError(m, scan) => (Some(*m), format!("yaml syntax error: {}", scan.info())),
        LoadError::DuplicateKey(dup) => (
            dup.key.span().start().copied(),
            format!(
                "duplicate key `{}` (first at {}; expected each key once)",
                dup.key.as_str(),
                dup.prev_key
                    .span()
                    .start()
                    .map_or_else(|| "?".to_owned(), ToString::to_string)
            ),
        ),
    };
    at(file, mark.as_ref(), message)
}

/// The steps of a serde path such as `mappings[0].lookups[1].by`.
fn parse_path(path: &str) -> Vec<Step<'_>> {
    let mut steps = Vec::new();
    for part in path.split('.') {
        let (key, indexes) = part
            .split_once('[')
            .map_or((part, ""), |(k, rest)| (k, rest));
        if !key.is_empty() {
            steps.push(Step::Key(key));
        }
        for index in indexes.split('[') {
            if let Ok(i) = index.trim_end_matches(']').parse() {
                steps.push(Step::Index(i));
            }
        }
    }
    steps
}

fn shape_error(file: &str, root: &Node, e: FromNodeError) -> ConfigError {
    let path = e.path().map(str::to_owned);
    let mut mark = e.start_mark();
    if let NodeError::Other(msg, _) = &*e {
        // A missing key is reported on its mapping, whose own mark is not where a reader
        // looks: point at the mapping's first key instead.
        if msg.starts_with("missing field ") {
            let steps = parse_path(path.as_deref().unwrap_or(""));
            let mut node = Some(root);
            for step in &steps {
                node = node.and_then(|n| match step {
                    Step::Key(k) => n.as_mapping()?.get_node(k),
                    Step::Index(i) => n.as_sequence()?.get_node(*i),
                });
            }
            if let Some(first_key) = node
                .and_then(Node::as_mapping)
                .and_then(|m| m.keys().next())
                .and_then(|k| k.span().start())
            {
                mark = Some(*first_key);
            }
        }
    }
    let what = match e.into_inner() {
        NodeError::UnknownFieldError(key, expected, _) => {
            let key_name = key.clone();
            let expected = if expected.is_empty() {
                "no keys here".to_owned()
            } else {
                format!(
                    "one of {}",
                    expected
                        .iter()
                        .map(|k| format!("`{k}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            };
            // The path ends with the unknown key itself; report its parent.
            let parent = path
                .as_deref()
                .and_then(|p| p.strip_suffix(key_name.as_str()))
                .map(|p| p.trim_end_matches('.'))
                .filter(|p| !p.is_empty());
            return at(
                file,
                mark.as_ref(),
                match parent {
                    Some(p) => format!("{p}: unknown key `{key}` (expected {expected})"),
                    None => format!("unknown key `{key}` (expected {expected})"),
                },
            );
        }
        NodeError::NotBoolean(_) => "not a boolean (expected `true` or `false`)".to_owned(),
        NodeError::IntegerParseFailure(err, _) => {
            format!("not a valid integer: {err} (expected a non-negative whole number)")
        }
        NodeError::FloatParseFailure(err, _) => {
            format!("not a valid number: {err} (expected a number)")
        }
        NodeError::Other(msg, _) => match msg.strip_prefix("missing field ") {
            Some(key) => format!("missing required key {key}"),
            // Serde names the Rust type; the reader knows it as a YAML mapping.
            None => match msg.find("expected struct ") {
                Some(i) => format!("{}expected a mapping", &msg[..i]),
                None => msg,
            },
        },
        // `spanned_serde::Error` is not exhaustive in spirit; keep its own text otherwise.
    };
    let message = match path {
        Some(p) => format!("{p}: {what}"),
        None => what,
    };
    at(file, mark.as_ref(), message)
}

/// A step of a path into the node tree.
enum Step<'a> {
    Key(&'a str),
    Index(usize),
}

/// Start of the node at `path`, for containers (leaves carry their own spans).
fn node_mark(root: &Node, path: &[Step<'_>]) -> Option<Marker> {
    let mut node = root;
    for step in path {
        node = match step {
            Step::Key(k) => node.as_mapping()?.get_node(k)?,
            Step::Index(i) => node.as_sequence()?.get_node(*i)?,
        };
    }
    node.span().start().copied()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::declared::{DeclaredType, DECLARED_TYPE_NAMES};
    use crate::model::{FieldSelection, LimitParam, ParamType, SelectedField};

    /// The errors for `yaml`, one per line, or `OK`.
    fn errors_with(yaml: &str, overrides: &ConnectionOverrides) -> String {
        match load_config_str(yaml, "connectors.yaml", overrides) {
            Ok(_) => "OK".to_owned(),
            Err(e) => e.to_string(),
        }
    }

    fn errors(yaml: &str) -> String {
        errors_with(yaml, &ConnectionOverrides::default())
    }

    fn load(yaml: &str) -> Config {
        load_config_str(yaml, "connectors.yaml", &ConnectionOverrides::default())
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// A valid mapping to append others to.
    const CUSTOMERS: &str = r#"mappings:
  - name: customers
    topic: cdc.public.customers
    key: "customer:{id}"
    indexes:
      - name: email
        key: "customer:email:{email}"
    lookups:
      - tool: get_customer
        description: Look up a customer
        by:
          - param: customer_id
            type: integer
            description: Customer ID
          - param: email
            type: string
            description: Customer email
            index: email
"#;

    #[test]
    fn shipped_connectors_yaml_loads() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../connectors.yaml");
        let config =
            load_config(&path, &ConnectionOverrides::default()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(config.kafka.bootstrap_servers, "127.0.0.1:9092");
        assert_eq!(config.kafka.group_id, "agent-context-sink");
        assert_eq!(config.kafka.dead_letter_topic, "agent-context-sink-dlq");
        assert!(config.kafka.properties.is_empty());
        assert_eq!(
            config.schema_registry.url,
            "http://127.0.0.1:8081/apis/ccompat/v7"
        );
        assert_eq!(config.redis.url, "redis://127.0.0.1:6379");
        assert_eq!(config.freshness.stale_after_ms, 30_000);
        let names: Vec<_> = config.mappings.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["customers", "orders"]);
        let customers = config.mapping_for_topic("cdc.public.customers").unwrap();
        assert_eq!(customers.key.source, "customer:{id}");
        assert_eq!(customers.fields, FieldSelection::All);
        assert_eq!(customers.indexes[0].key.source, "customer:email:{email}");
        let (m, l) = config.lookup("get_customer_orders").unwrap();
        assert_eq!(m.name, "orders");
        assert_eq!(l.relation.as_deref(), Some("customer_orders"));
        assert_eq!(
            l.limit,
            Some(LimitParam {
                param: "limit".into(),
                description: "Max orders to return".into(),
                default: 10,
                max: 100
            })
        );
        let (_, l) = config.lookup("get_customer").unwrap();
        assert_eq!(l.by[0].r#type, ParamType::Integer);
        assert_eq!(l.by[1].index.as_deref(), Some("email"));
        assert!(config.lookup("get_order").is_some());
        assert_eq!(config.mappings[1].relations[0].order_by, "created_at");
    }

    #[test]
    fn unreadable_file() {
        let err = load_config(
            Path::new("/nonexistent/connectors.yaml"),
            &ConnectionOverrides::default(),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "/nonexistent/connectors.yaml: cannot read: No such file or directory (os error 2)"
        );
    }

    #[test]
    fn sections_default_to_localhost() {
        let config = load(CUSTOMERS);
        assert_eq!(config.kafka.bootstrap_servers, "127.0.0.1:9092");
        assert_eq!(config.kafka.group_id, "agent-context-sink");
        assert_eq!(config.kafka.dead_letter_topic, "agent-context-sink-dlq");
        assert_eq!(config.schema_registry.url, "http://127.0.0.1:8081");
        assert_eq!(config.redis.url, "redis://127.0.0.1:6379");
        assert_eq!(config.freshness.stale_after_ms, 30_000);
        // An empty section means its defaults too.
        let config = load(&format!("redis:\n{CUSTOMERS}"));
        assert_eq!(config.redis.url, "redis://127.0.0.1:6379");
    }

    #[test]
    fn overrides_win_over_the_file() {
        let yaml = format!(
            "kafka:\n  bootstrap_servers: file:9092\n  group_id: file-group\n  properties:\n    fetch.wait.max.ms: 10\nredis:\n  url: redis://file:6379\n{CUSTOMERS}"
        );
        let config = load(&yaml);
        assert_eq!(config.kafka.bootstrap_servers, "file:9092");
        assert_eq!(config.kafka.properties["fetch.wait.max.ms"], "10");
        let overrides = ConnectionOverrides {
            bootstrap_servers: Some("env:9092".into()),
            schema_registry_url: Some("http://env:8081".into()),
            redis_url: Some("redis://env:6379/2".into()),
            group_id: None,
            security: SecurityOverrides::default(),
        };
        let config = load_config_str(&yaml, "connectors.yaml", &overrides).unwrap();
        assert_eq!(config.kafka.bootstrap_servers, "env:9092");
        assert_eq!(config.kafka.group_id, "file-group");
        assert_eq!(config.schema_registry.url, "http://env:8081");
        assert_eq!(config.redis.url, "redis://env:6379/2");
    }

    #[test]
    fn connection_settings_are_checked() {
        let yaml = format!(
            "schema_registry:\n  url: 127.0.0.1:8081\nkafka:\n  group_id: \"\"\n{CUSTOMERS}"
        );
        assert_eq!(
            errors(&yaml),
            "connectors.yaml:2:8: schema_registry.url: `127.0.0.1:8081` is not a supported url (expected one starting with http:// or https://)\n\
             connectors.yaml:4:13: kafka.group_id: empty (expected a value)"
        );
        let overrides = ConnectionOverrides {
            redis_url: Some("localhost:6379".into()),
            ..ConnectionOverrides::default()
        };
        assert_eq!(
            errors_with(CUSTOMERS, &overrides),
            "redis.url (overridden by the environment or a flag): `localhost:6379` is not a supported url (expected one starting with redis:// or rediss:// or unix:// or redis+unix://)"
        );
    }

    #[test]
    fn yaml_syntax_errors_have_positions() {
        assert_eq!(
            errors("mappings:\n  - name: a\n    topic: t\n  key: x\n"),
            "connectors.yaml:4:3: yaml syntax error: while parsing a block collection, did not find expected '-' indicator"
        );
        assert_eq!(
            errors("mappings:\n  - name: a\n    name: b\n"),
            "connectors.yaml:3:5: duplicate key `name` (first at 2:5; expected each key once)"
        );
        assert_eq!(
            errors("- a\n- b\n"),
            "connectors.yaml:1:1: the top level is not a mapping (expected `mappings:` and optional connection sections)"
        );
    }

    #[test]
    fn unknown_keys_are_errors() {
        assert_eq!(
            errors(&format!("foo: 1\n{CUSTOMERS}")),
            "connectors.yaml:1:1: unknown key `foo` (expected one of `kafka`, `schema_registry`, `redis`, `freshness`, `batch`, `sources`, `mappings`)"
        );
        assert_eq!(
            errors("mappings:\n  - name: a\n    topic: t\n    key: \"a:{id}\"\n    topics: x\n"),
            "connectors.yaml:5:5: mappings[0]: unknown key `topics` (expected one of `name`, `topic`, `key`, `fields`, `types`, `ttl_seconds`, `indexes`, `relations`, `lookups`, `aggregates`, `search`, `source`)"
        );
        let yaml = CUSTOMERS.replace("            index: email", "            indx: email");
        assert_eq!(
            errors(&yaml),
            "connectors.yaml:18:13: mappings[0].lookups[0].by[1]: unknown key `indx` (expected one of `param`, `type`, `description`, `index`)"
        );
    }

    #[test]
    fn wrong_types_and_missing_keys_are_errors() {
        let base = "mappings:\n  - name: a\n    topic: t\n";
        assert_eq!(
            errors(&format!("{base}    key: \"a:{{id}}\"\n    ttl_seconds: soon\n")),
            "connectors.yaml:5:18: mappings[0].ttl_seconds: not a valid integer: invalid digit found in string (expected a non-negative whole number)"
        );
        assert_eq!(
            errors(&format!("{base}    key: [id]\n")),
            "connectors.yaml:4:10: mappings[0].key: invalid type: sequence, expected a string"
        );
        assert_eq!(
            errors(&format!("kafka: 3\n{CUSTOMERS}")),
            "connectors.yaml:1:8: kafka: invalid type: string \"3\", expected a mapping"
        );
        assert_eq!(
            errors(base),
            "connectors.yaml:2:5: mappings[0]: missing required key `key`"
        );
        assert_eq!(
            errors(""),
            "connectors.yaml:1:1: missing required key `mappings`"
        );
        assert_eq!(
            errors(&format!("{base}    key: \"a:{{id}}\"\n    fields: some\n")),
            "connectors.yaml:5:13: mappings[0].fields: invalid value: string \"some\", expected `all` or a list of column names and {from, as} entries"
        );
        assert_eq!(
            errors(&format!("{base}    key: \"a:{{id}}\"\n    fields: [id, {{from: x, to: y}}]\n")),
            "connectors.yaml:5:18: mappings[0].fields[1]: unknown key `to` (expected one of `from`, `as`)"
        );
    }

    #[test]
    fn names_topics_and_tools_are_unique() {
        let yaml = format!(
            "{CUSTOMERS}  - name: customers\n    topic: cdc.public.customers\n    key: \"client:{{id}}\"\n    lookups:\n      - tool: get_customer\n        description: Again\n        by:\n          - param: id\n            type: integer\n            description: ID\n"
        );
        assert_eq!(
            errors(&yaml),
            "connectors.yaml:19:11: duplicate mapping name `customers` (first used at 2:11; expected unique names)\n\
             connectors.yaml:20:12: topic `cdc.public.customers` is already mapped at 3:12 (expected one mapping per topic)\n\
             connectors.yaml:23:15: duplicate tool name `get_customer` (first defined at 9:15; expected unique tool names)"
        );
    }

    #[test]
    fn names_and_topics_are_well_formed() {
        let yaml = CUSTOMERS
            .replace("name: customers", "name: \"cust:omers\"")
            .replace(
                "topic: cdc.public.customers",
                "topic: agent-context-sink-dlq",
            )
            .replace("name: email", "name: e mail")
            .replace("index: email", "index: e mail")
            .replace("tool: get_customer", "tool: get customer");
        assert_eq!(
            errors(&yaml),
            "connectors.yaml:2:11: invalid mapping name `cust:omers` (expected letters, digits, `_` or `-`)\n\
             connectors.yaml:3:12: topic `agent-context-sink-dlq` is the dead-letter topic (expected a table's change topic)\n\
             connectors.yaml:6:15: invalid index name `e mail` (expected letters, digits, `_` or `-`)\n\
             connectors.yaml:9:15: invalid tool name `get customer` (expected 1-64 letters, digits, `_` or `-`)"
        );
        let yaml = CUSTOMERS.replace("topic: cdc.public.customers", "topic: cdc/customers");
        assert_eq!(
            errors(&yaml),
            "connectors.yaml:3:12: invalid topic name `cdc/customers` (expected up to 249 letters, digits, `.`, `_`, `-`)"
        );
    }

    #[test]
    fn templates_must_parse() {
        let cases = [
            ("customer:{id", "invalid mapping `customers` row key `customer:{id`: unclosed `{` at offset 9 (expected `{field}`)"),
            ("customer:{id}}", "invalid mapping `customers` row key `customer:{id}}`: stray `}` at offset 13 (expected `{field}`)"),
            ("customer", "invalid mapping `customers` row key `customer`: no `{field}` placeholder (expected at least one, e.g. `customer:{id}`)"),
            ("customer:{a.b}", "invalid mapping `customers` row key `customer:{a.b}`: invalid placeholder `{a.b}` at offset 9 (expected a field name of letters, digits and `_`)"),
            ("{id}", "mapping `customers` row key `{id}` starts with a placeholder (expected a literal prefix such as `customer:`)"),
            ("sink:rows:{id}", "mapping `customers` row key `sink:rows:{id}` uses the reserved `sink:` prefix (expected another prefix)"),
        ];
        for (template, message) in cases {
            let yaml = CUSTOMERS.replace("\"customer:{id}\"", &format!("\"{template}\""));
            assert_eq!(errors(&yaml), format!("connectors.yaml:4:10: {message}"));
        }
    }

    #[test]
    fn templates_name_selected_fields_only() {
        let yaml = format!(
            "{}    fields: [id, {{from: mail, as: email}}]\n    relations:\n      - name: referrer\n        key: \"customer:{{referrer_id}}:referrals\"\n        order_by: created_at\n",
            CUSTOMERS.replace("\"customer:{id}\"", "\"customer:{id}:{tenant}\"")
        );
        assert_eq!(
            errors(&yaml),
            "connectors.yaml:4:10: mapping `customers` row key `customer:{id}:{tenant}` names field `tenant`, which `fields` does not select (expected one of `id`, `email`)\n\
             connectors.yaml:12:20: parameter `customer_id` has no `index`, so it fills row key `customer:{id}:{tenant}`, which does not have exactly one field (expected an `index`, or a row key with one placeholder)\n\
             connectors.yaml:22:14: mapping `customers` relation `referrer` key `customer:{referrer_id}:referrals` names field `referrer_id`, which `fields` does not select (expected one of `id`, `email`)\n\
             connectors.yaml:23:19: order_by names field `created_at`, which `fields` does not select (expected one of `id`, `email`)"
        );
        // With `fields: all` any field may be named.
        let yaml = format!(
            "{CUSTOMERS}    relations:\n      - name: referrer\n        key: \"customer:{{referrer_id}}:referrals\"\n        order_by: created_at\n"
        );
        assert_eq!(errors(&yaml), "OK");
    }

    #[test]
    fn key_patterns_must_not_collide() {
        let yaml = format!(
            "{CUSTOMERS}  - name: clients\n    topic: cdc.public.clients\n    key: \"customer:{{client_id}}\"\n    indexes:\n      - name: mail\n        key: \"customer:email:{{address}}\"\n"
        );
        assert_eq!(
            errors(&yaml),
            "connectors.yaml:21:10: mapping `clients` row key `customer:{client_id}` can produce the same keys as mapping `customers` row key `customer:{id}` at 4:10 (expected patterns that differ in a literal `:`-separated segment)\n\
             connectors.yaml:24:14: mapping `clients` index `mail` key `customer:email:{address}` can produce the same keys as mapping `customers` index `email` key `customer:email:{email}` at 7:14 (expected patterns that differ in a literal `:`-separated segment)"
        );
        // Same mapping: an index shaped like the row key.
        let yaml = CUSTOMERS.replace("\"customer:email:{email}\"", "\"customer:{email}\"");
        assert_eq!(
            errors(&yaml),
            "connectors.yaml:7:14: mapping `customers` index `email` key `customer:{email}` can produce the same keys as mapping `customers` row key `customer:{id}` at 4:10 (expected patterns that differ in a literal `:`-separated segment)"
        );
    }

    #[test]
    fn index_and_relation_names_are_unique_per_mapping() {
        let yaml = r#"mappings:
  - name: customers
    topic: cdc.public.customers
    key: "customer:{id}"
    indexes:
      - name: email
        key: "customer:email:{email}"
      - name: email
        key: "customer:mail:{email}"
    relations:
      - name: r
        key: "tenant:{tenant_id}:customers"
        order_by: id
      - name: r
        key: "plan:{plan}:customers"
        order_by: id
"#;
        assert_eq!(
            errors(yaml),
            "connectors.yaml:8:15: duplicate index name `email` (first used at 6:15; expected unique names within the mapping)\n\
             connectors.yaml:14:15: duplicate relation name `r` (first used at 11:15; expected unique names within the mapping)"
        );
        // The same names in different mappings are fine.
        let yaml = format!(
            "{CUSTOMERS}  - name: clients\n    topic: cdc.public.clients\n    key: \"client:{{id}}\"\n    indexes:\n      - name: email\n        key: \"client:email:{{email}}\"\n"
        );
        assert_eq!(errors(&yaml), "OK");
    }

    #[test]
    fn fields_lists_are_checked() {
        let base = "mappings:\n  - name: a\n    topic: t\n    key: \"a:{id}\"\n";
        assert_eq!(
            errors(&format!("{base}    fields: []\n")),
            "connectors.yaml:5:13: `fields` is an empty list (expected `all` or at least one column)"
        );
        assert_eq!(
            errors(&format!("{base}    fields: [id, id, {{from: x, as: id}}, {{from: y, as: a-b}}]\n")),
            "connectors.yaml:5:18: column `id` is selected twice (first at 5:14; expected each column once)\n\
             connectors.yaml:5:18: field name `id` is stored twice (first at 5:14; expected unique stored names)\n\
             connectors.yaml:5:36: field name `id` is stored twice (first at 5:14; expected unique stored names)\n\
             connectors.yaml:5:55: invalid stored field name `a-b` (expected letters, digits and `_`)"
        );
        let config = load(&format!(
            "{base}    fields: [id, {{from: mrr_cents, as: mrr}}]\n"
        ));
        assert_eq!(
            config.mappings[0].fields,
            FieldSelection::List(vec![
                SelectedField {
                    from: "id".into(),
                    to: "id".into()
                },
                SelectedField {
                    from: "mrr_cents".into(),
                    to: "mrr".into()
                },
            ])
        );
    }

    #[test]
    fn numbers_must_be_positive() {
        let yaml = format!("freshness:\n  stale_after_ms: 0\n{CUSTOMERS}    ttl_seconds: 0\n");
        assert_eq!(
            errors(&yaml),
            "connectors.yaml:2:19: stale_after_ms is 0 (expected a positive number of milliseconds)\n\
             connectors.yaml:21:18: ttl_seconds is 0 (expected a positive number of seconds, or no ttl_seconds)"
        );
        let config = load(&format!("{CUSTOMERS}    ttl_seconds: 86400\n"));
        assert_eq!(config.mappings[0].ttl_seconds, Some(86_400));
    }

    #[test]
    fn batch_records_and_linger_come_from_the_file_when_given() {
        let batch = load(CUSTOMERS).batch;
        assert_eq!((batch.max_records, batch.linger_ms), (None, None));
        let batch = load(&format!(
            "batch:\n  max_records: 500\n  linger_ms: 0\n{CUSTOMERS}"
        ))
        .batch;
        assert_eq!((batch.max_records, batch.linger_ms), (Some(500), Some(0)));
        assert_eq!(
            errors(&format!("batch:\n  max_records: 0\n{CUSTOMERS}")),
            "connectors.yaml:2:16: max_records is 0 (expected at least 1 record per batch)"
        );
    }

    #[test]
    fn batch_max_bytes_is_a_positive_size() {
        assert_eq!(
            load(CUSTOMERS).batch.max_bytes,
            crate::model::DEFAULT_BATCH_MAX_BYTES
        );
        let sized = |text: &str| load(&format!("batch:\n  max_bytes: {text}\n{CUSTOMERS}"));
        assert_eq!(sized("1048576").batch.max_bytes, 1_048_576);
        assert_eq!(sized("4MiB").batch.max_bytes, 4 * 1024 * 1024);
        assert_eq!(sized("\"512 KB\"").batch.max_bytes, 512_000);
        assert_eq!(
            errors(&format!("batch:\n  max_bytes: 0\n{CUSTOMERS}")),
            "connectors.yaml:2:14: max_bytes is 0 (expected a positive size such as 16MiB)"
        );
        assert_eq!(
            errors(&format!("batch:\n  max_bytes: lots\n{CUSTOMERS}")),
            "connectors.yaml:2:14: max_bytes `lots` is not a size (expected bytes such as 16777216 or 16MiB)"
        );
    }

    #[test]
    fn pause_at_memory_share_is_a_share() {
        assert_eq!(load(CUSTOMERS).redis_memory.pause_at_share, 0.95);
        let config = load(&format!(
            "redis:\n  pause_at_memory_share: 0.8\n{CUSTOMERS}"
        ));
        assert_eq!(config.redis_memory.pause_at_share, 0.8);
        let config = load(&format!("redis:\n  pause_at_memory_share: 1\n{CUSTOMERS}"));
        assert_eq!(config.redis_memory.pause_at_share, 1.0);
        for bad in ["0", "1.5", "-0.1"] {
            assert_eq!(
                errors(&format!("redis:\n  pause_at_memory_share: {bad}\n{CUSTOMERS}")),
                format!("connectors.yaml:2:26: pause_at_memory_share is {} (expected a share of maxmemory above 0 and at most 1, e.g. 0.95)", bad.parse::<f64>().unwrap())
            );
        }
    }

    #[test]
    fn declared_types() {
        let config = load(&format!(
            "{CUSTOMERS}    types: {{created_at: timestamp_micros, credit: decimal(2), doc: json}}\n"
        ));
        let types = &config.mappings[0].types;
        assert_eq!(types["created_at"], DeclaredType::TimestampMicros);
        assert_eq!(types["credit"], DeclaredType::Decimal { scale: 2 });
        assert_eq!(types["doc"], DeclaredType::Json);
        assert!(load(CUSTOMERS).mappings[0].types.is_empty());

        let yaml = format!("{CUSTOMERS}    types:\n      created_at: timestamp\n      ok: date\n      n: decimal\n");
        assert_eq!(
            errors(&yaml),
            format!(
                "connectors.yaml:20:19: column `created_at`: unknown type `timestamp` (expected one of {DECLARED_TYPE_NAMES})\n\
                 connectors.yaml:22:10: column `n`: unknown type `decimal` (expected one of {DECLARED_TYPE_NAMES})"
            )
        );
    }

    #[test]
    fn no_mappings_is_an_error() {
        assert_eq!(
            errors("mappings: []\n"),
            "connectors.yaml:1:11: no mappings (expected at least one entry)"
        );
    }

    /// The orders mapping of the shipped file, with a customers mapping for context.
    const ORDERS: &str = r#"  - name: orders
    topic: cdc.public.orders
    key: "order:{id}"
    relations:
      - name: customer_orders
        key: "customer:{customer_id}:orders"
        order_by: created_at
    lookups:
      - tool: get_customer_orders
        description: Recent orders
        relation: customer_orders
        by:
          - param: customer_id
            type: integer
            description: Customer ID
        limit:
          param: limit
          description: Max orders
          default: 10
          max: 100
"#;

    fn with_orders(edit: impl Fn(&str) -> String) -> String {
        format!("{CUSTOMERS}{}", edit(ORDERS))
    }

    #[test]
    fn lookup_parameters_are_checked() {
        assert_eq!(errors(&with_orders(str::to_owned)), "OK");
        let yaml = CUSTOMERS
            .replace("type: integer", "type: int")
            .replace("index: email", "index: mail")
            .replace("param: email", "param: customer_id")
            .replace("description: Customer ID", "description: \"\"");
        assert_eq!(
            errors(&yaml),
            "connectors.yaml:13:19: unknown parameter type `int` (expected `integer` or `string`)\n\
             connectors.yaml:14:26: empty parameter description (expected a sentence for the model)\n\
             connectors.yaml:15:20: duplicate parameter `customer_id` (first at 12:20; expected unique parameter names)\n\
             connectors.yaml:18:20: unknown index `mail` (expected one of `email`)"
        );
        let yaml = CUSTOMERS.replace(
            "        by:\n          - param: customer_id",
            "        by: []\n        other:\n          - param: customer_id",
        );
        assert!(errors(&yaml).contains("unknown key `other`"));
        let yaml = CUSTOMERS
            .split("        by:")
            .next()
            .map(|head| format!("{head}        by: []\n"))
            .unwrap();
        assert_eq!(
            errors(&yaml),
            "connectors.yaml:11:13: `by` is empty (expected at least one parameter)"
        );
        let yaml = CUSTOMERS.replace("description: Look up a customer", "description: \" \"");
        assert_eq!(
            errors(&yaml),
            "connectors.yaml:10:22: empty tool description (expected a sentence for the model)"
        );
    }

    #[test]
    fn relation_lookups_are_checked() {
        let yaml = with_orders(|o| o.replace("relation: customer_orders", "relation: orders_of"));
        assert_eq!(
            errors(&yaml),
            "connectors.yaml:29:19: unknown relation `orders_of` (expected one of `customer_orders`)"
        );
        let yaml = with_orders(|o| {
            o.replace(
                "key: \"customer:{customer_id}:orders\"",
                "key: \"customer:{customer_id}:{status}:orders\"",
            )
        });
        assert_eq!(
            errors(&yaml),
            "connectors.yaml:31:20: parameter `customer_id` fills relation key `customer:{customer_id}:{status}:orders`, which does not have exactly one field (expected a relation key with one placeholder)"
        );
        let yaml = with_orders(|o| {
            o.replace(
                "            description: Customer ID\n",
                "            description: Customer ID\n            index: email\n",
            )
        });
        assert_eq!(
            errors(&yaml),
            "connectors.yaml:34:20: parameter `customer_id` has an `index` in a relation lookup (expected a parameter that fills the relation key)"
        );
        let yaml = with_orders(|o| o.replace("default: 10", "default: 200"));
        assert_eq!(
            errors(&yaml),
            "connectors.yaml:37:20: default 200 exceeds max 100 (expected default <= max)"
        );
        let yaml = with_orders(|o| {
            o.replace("default: 10", "default: 0")
                .replace("max: 100", "max: 0")
        });
        assert_eq!(
            errors(&yaml),
            "connectors.yaml:37:20: default is 0 (expected at least 1)\n\
             connectors.yaml:38:16: max is 0 (expected at least 1)"
        );
        let yaml = with_orders(|o| o.replace("param: limit", "param: customer_id"));
        assert_eq!(
            errors(&yaml),
            "connectors.yaml:35:18: limit parameter `customer_id` is also a `by` parameter at 31:20 (expected a distinct name)"
        );
        let yaml = with_orders(|o| o.replace("        relation: customer_orders\n", ""));
        assert_eq!(
            errors(&yaml),
            "connectors.yaml:34:18: `limit` in a lookup without `relation` (expected `limit` only on relation lookups)"
        );
    }

    #[test]
    fn all_errors_are_reported_in_file_order() {
        let yaml = with_orders(|o| {
            o.replace("default: 10", "default: 200").replace(
                "order_by: created_at",
                "order_by: created_at\n        extra_field_ok: no",
            )
        });
        // A shape error stops phase 1 before validation.
        assert_eq!(
            errors(&yaml),
            "connectors.yaml:26:9: mappings[1].relations[0]: unknown key `extra_field_ok` (expected one of `name`, `key`, `order_by`)"
        );
        let yaml = with_orders(|o| {
            o.replace("default: 10", "default: 200")
                .replace("key: \"order:{id}\"", "key: \"order:{id\"")
        })
        .replace("type: integer", "type: number");
        assert_eq!(
            errors(&yaml),
            "connectors.yaml:13:19: unknown parameter type `number` (expected `integer` or `string`)\n\
             connectors.yaml:21:10: invalid mapping `orders` row key `order:{id`: unclosed `{` at offset 6 (expected `{field}`)\n\
             connectors.yaml:32:19: unknown parameter type `number` (expected `integer` or `string`)\n\
             connectors.yaml:37:20: default 200 exceeds max 100 (expected default <= max)"
        );
    }

    #[test]
    fn sources_default_to_the_only_one_and_are_checked() {
        let yaml = format!(
            "freshness:\n  stale_after_ms: 7000\nsources:\n  - name: cdc\n    heartbeat_topic: cdc.public.dbz_heartbeat\n{CUSTOMERS}"
        );
        let config = load(&yaml);
        assert_eq!(config.sources.len(), 1);
        let source = &config.sources[0];
        assert_eq!(source.heartbeat_topic, "cdc.public.dbz_heartbeat");
        assert_eq!(source.stale_after_ms, 7000);
        assert_eq!(source.mappings, ["customers"]);
        assert_eq!(
            config.source_of("customers").map(|s| s.name.as_str()),
            Some("cdc")
        );
        assert!(config
            .source_for_heartbeat("cdc.public.dbz_heartbeat")
            .is_some());
        assert!(load(CUSTOMERS).sources.is_empty());

        let two = format!(
            "sources:\n  - name: a\n    heartbeat_topic: cdc.public.customers\n    stale_after_ms: 0\n  - name: a\n    heartbeat_topic: hb\n{CUSTOMERS}"
        );
        assert_eq!(
            errors(&two),
            "connectors.yaml:3:22: heartbeat topic `cdc.public.customers` is mapped at 9:12 (expected a topic that carries only heartbeats)\n\
             connectors.yaml:4:21: stale_after_ms is 0 (expected a positive number of milliseconds)\n\
             connectors.yaml:5:11: duplicate source name `a` (first used at 2:11; expected unique names)\n\
             connectors.yaml:8:11: mapping `customers` names no source (expected `source:` with one of `a`, `a`)"
        );
        let unknown =
            format!("sources:\n  - name: a\n    heartbeat_topic: hb\n{CUSTOMERS}    source: b\n");
        assert!(
            errors(&unknown).contains("unknown source `b` (expected one of `a`)"),
            "{}",
            errors(&unknown)
        );
    }
}
