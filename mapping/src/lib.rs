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
//! - [`declared`]: column types a mapping declares (`types:`) for records without a schema
//!   (Debezium's JsonConverter with `schemas.enable=false`).
//! - [`diagnostics`]: operator-facing text both binaries share: an error chain on one line
//!   ([`one_line`]), URLs and client properties with their secrets hidden ([`redact_url`],
//!   [`redact_property`]).
//! - [`secret`]: [`Secret`], a value whose `Debug`/`Display` print `***`.
//! - [`model`]: the validated configuration ([`Config`], [`Mapping`], [`Lookup`], ...).
//! - [`template`]: `customer:{id}` key templates: parse, render, collision rule.
//! - [`types`]: [`ColumnType`], the names kept in `sink:types:{mapping}`.
//! - [`layout`]: the Redis layout contract: every `sink:*` bookkeeping key and field name,
//!   used by the sink, its change script generator and agent-cli.
//! - [`render`]: [`FieldValue`] -> stored text ([`render_value`]) and sorted-set [`score`].
//! - [`search`]: prefix searches: the folding and the sorted-set members both writers keep.
//! - [`lsn`]: PostgreSQL log sequence numbers (`16/B374D848` <-> `u64`), the watermark's
//!   position.
//! - [`mod@plan`]: [`Change`] + [`Mapping`] -> [`Plan`], the Redis work for one change ([`fn@plan`]).

pub mod aggregate;
pub mod change;
pub mod declared;
pub mod diagnostics;
pub mod layout;
pub mod load;
pub mod lsn;
pub mod model;
pub mod plan;
pub mod raw;
pub mod render;
pub mod search;
pub mod secret;
pub mod template;
pub mod types;

pub use aggregate::Aggregate;
pub use change::{Change, FieldValue, Op, Row};
pub use declared::{DeclaredType, DeclaredTypes};
pub use diagnostics::{
    is_secret_property, one_line, redact_properties, redact_property, redact_url,
};
pub use load::{
    load_config, load_config_str, ConfigError, ConfigErrors, ConnectionOverrides, SecurityOverrides,
};
pub use model::{
    BatchConfig, Config, FieldSelection, FreshnessConfig, Index, KafkaConfig, LimitParam, Lookup,
    LookupParam, Mapping, ParamType, RedisConfig, RedisMemory, RedisTls, Relation,
    SchemaRegistryConfig, SelectedField, Source, DEFAULT_BATCH_MAX_BYTES,
};
pub use plan::{plan, FieldWrite, Plan, PlanError, RowDelete, RowUpsert};
pub use render::{check_value, render_owned_value, render_value, score, Rendered, ValueError};
pub use secret::Secret;
pub use template::{KeyTemplate, TemplateError, TemplatePart};
pub use types::{ColumnType, UnknownColumnType};
