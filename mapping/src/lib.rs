//! The mapping between Debezium change events and Redis, shared by `sink` and `agent-cli`:
//! `connectors.yaml` loading and validation, key templates, value rendering and the write
//! plan for each change. No I/O beyond reading the configuration file.
//!
//! # Layout
//!
//! - [`raw`]: serde structs mirroring `connectors.yaml` as written.
//! - [`load`]: parse (positions kept) + layer overrides (figment) + validate (its own
//!   module, `load/validate.rs`) -> [`Config`], every error as
//!   `connectors.yaml:LINE:COL: message`.
//! - [`change`]: the decoded Debezium event ([`Change`], [`Op`], [`FieldValue`]).
//! - [`diagnostics`]: operator-facing text both binaries share: an error chain on one line
//!   ([`one_line`]), URLs with the password hidden ([`redact_url`]).
//! - [`model`]: the validated configuration ([`Config`], [`Mapping`], [`Lookup`], ...).
//! - [`template`]: `customer:{id}` key templates: parse, render, collision rule.
//! - [`types`]: [`ColumnType`], the names kept in `sink:types:{mapping}`.
//! - [`layout`]: the Redis layout contract: every `sink:*` bookkeeping key and field name,
//!   used by the sink, its change script generator and agent-cli.
//! - [`render`]: [`FieldValue`] -> stored text ([`render_value`]) and sorted-set [`score`].
//! - [`lsn`]: PostgreSQL log sequence numbers (`16/B374D848` <-> `u64`), the watermark's
//!   position.
//! - [`mod@plan`]: [`Change`] + [`Mapping`] -> [`Plan`], the Redis work for one change ([`fn@plan`]).

pub mod change;
pub mod diagnostics;
pub mod layout;
pub mod load;
pub mod lsn;
pub mod model;
pub mod plan;
pub mod raw;
pub mod render;
pub mod template;
pub mod types;

pub use change::{Change, FieldValue, Op, Row};
pub use diagnostics::{one_line, redact_url};
pub use load::{load_config, load_config_str, ConfigError, ConfigErrors, ConnectionOverrides};
pub use model::{
    Config, FieldSelection, FreshnessConfig, Index, KafkaConfig, LimitParam, Lookup, LookupParam,
    Mapping, ParamType, RedisConfig, Relation, SchemaRegistryConfig, SelectedField, Source,
};
pub use plan::{plan, FieldWrite, Plan, PlanError, RowDelete, RowUpsert};
pub use render::{check_value, render_value, score, Rendered, ValueError};
pub use template::{KeyTemplate, TemplateError, TemplatePart};
pub use types::{ColumnType, UnknownColumnType};
