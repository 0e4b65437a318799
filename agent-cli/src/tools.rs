//! Tool definitions: every `lookups` entry of `connectors.yaml` becomes one tool whose name,
//! description and parameters come from the file. The same definition is rendered in the
//! three shapes clients expect: OpenAI Chat Completions `tools`, Anthropic Messages `tools`
//! and MCP `tools/list` entries.

use std::time::Duration;

use mapping::model::{Config, Lookup, Mapping, ParamType};
use serde_json::{json, Map, Value};

use crate::key_part::MAX_STRING_CHARS;

/// How long `--after-lsn` (the `after_lsn` argument) waits by default
/// ([`crate::watermark::wait_for`]).
pub const DEFAULT_WAIT: Duration = Duration::from_millis(5_000);
/// The MCP tools' argument naming the LSN to wait for (`--after-lsn`).
pub const AFTER_LSN_ARG: &str = "after_lsn";
/// The MCP tools' argument bounding the wait (`--wait-ms`).
pub const WAIT_MS_ARG: &str = "wait_ms";

/// Which API's shape to print the definitions in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// `{"type": "function", "function": {"name", "description", "parameters"}}`.
    Openai,
    /// `{"name", "description", "input_schema"}`.
    Anthropic,
    /// `{"name", "description", "inputSchema", "annotations"}` as in MCP `tools/list`.
    Mcp,
}

/// A declared lookup together with the mapping whose rows it returns.
#[derive(Debug, Clone, Copy)]
pub struct Tool<'a> {
    /// The mapping the lookup belongs to (its rows, types and freshness).
    pub mapping: &'a Mapping,
    /// The lookup itself.
    pub lookup: &'a Lookup,
}

impl<'a> Tool<'a> {
    /// The tool's name.
    pub fn name(&self) -> &'a str {
        &self.lookup.tool
    }

    /// The description shown to the model: the file's text, plus the "exactly one" rule when
    /// the lookup has alternative parameters (JSON Schema's `oneOf` is not accepted at the top
    /// level of tool schemas by every provider, so the rule is also stated in words).
    /// With `include:`, it also names the fields that hold the related rows.
    pub fn description(&self) -> String {
        let lookup = self.lookup;
        let text = if lookup.by.len() > 1 {
            let names: Vec<String> = lookup.by.iter().map(|p| format!("`{}`", p.param)).collect();
            format!(
                "{} (give exactly one of {}).",
                lookup.description.trim_end_matches('.'),
                names.join(", ")
            )
        } else {
            lookup.description.clone()
        };
        text + &crate::include::describe(&lookup.include)
    }

    /// [`Tool::input_schema`] plus the optional read-your-writes arguments every MCP tool
    /// takes (`after_lsn`, `wait_ms`: [`crate::watermark::ReadAfter`]).
    pub fn mcp_input_schema(&self) -> Value {
        let mut schema = self.input_schema();
        if let Some(Value::Object(properties)) = schema.get_mut("properties") {
            properties.insert(
                AFTER_LSN_ARG.into(),
                json!({
                    "type": "string",
                    "description": "Read-your-writes: answer only once every change up to this PostgreSQL LSN (SELECT pg_current_wal_lsn() after the commit, e.g. 0/1A2B3C4) is in the cache",
                    "pattern": "^[0-9A-Fa-f]{1,8}/[0-9A-Fa-f]{1,8}$",
                }),
            );
            properties.insert(
                WAIT_MS_ARG.into(),
                json!({
                    "type": "integer",
                    "description": "How long to wait for after_lsn, in milliseconds; then the answer is marked stale",
                    "minimum": 0,
                    "default": DEFAULT_WAIT.as_millis() as u64,
                }),
            );
        }
        // `maxProperties` counts the lookup's own parameters: leave room for these two.
        if let Some(max) = schema.get("maxProperties").and_then(Value::as_u64) {
            schema["maxProperties"] = Value::from(max + 2);
        }
        schema
    }

    /// The JSON Schema of the tool's arguments.
    pub fn input_schema(&self) -> Value {
        let lookup = self.lookup;
        let mut properties = Map::new();
        for p in &lookup.by {
            let schema = match p.r#type {
                ParamType::Integer => json!({"type": "integer", "description": p.description}),
                ParamType::String => json!({
                    "type": "string",
                    "description": p.description,
                    "minLength": 1,
                    "maxLength": MAX_STRING_CHARS,
                }),
            };
            properties.insert(p.param.clone(), schema);
        }
        if let Some(limit) = &lookup.limit {
            properties.insert(
                limit.param.clone(),
                json!({
                    "type": "integer",
                    "description": limit.description,
                    "default": limit.default,
                    "minimum": 1,
                    "maximum": limit.max,
                }),
            );
        }
        crate::relation_args::describe(lookup, self.mapping, &mut properties);
        let mut schema = Map::new();
        schema.insert("type".into(), json!("object"));
        schema.insert("properties".into(), Value::Object(properties));
        if lookup.by.len() == 1 {
            schema.insert("required".into(), json!([lookup.by[0].param]));
        } else {
            // Exactly one of the alternatives, and nothing else: expressed without `oneOf`.
            schema.insert("minProperties".into(), json!(1));
            schema.insert("maxProperties".into(), json!(1));
        }
        schema.insert("additionalProperties".into(), json!(false));
        Value::Object(schema)
    }

    /// The definition in the given format.
    pub fn definition(&self, format: Format) -> Value {
        let (name, description, schema) = (self.name(), self.description(), self.input_schema());
        match format {
            Format::Openai => json!({
                "type": "function",
                "function": {"name": name, "description": description, "parameters": schema},
            }),
            Format::Anthropic => {
                json!({"name": name, "description": description, "input_schema": schema})
            }
            Format::Mcp => json!({
                "name": name,
                "description": description,
                "inputSchema": self.mcp_input_schema(),
                "annotations": {
                    "readOnlyHint": true,
                    "destructiveHint": false,
                    "idempotentHint": true,
                    "openWorldHint": false,
                },
            }),
        }
    }
}

/// Every declared tool, in file order.
pub fn all(config: &Config) -> Vec<Tool<'_>> {
    config
        .mappings
        .iter()
        .flat_map(|mapping| {
            mapping
                .lookups
                .iter()
                .map(move |lookup| Tool { mapping, lookup })
        })
        .collect()
}

/// The tool with this name, if declared.
pub fn find<'a>(config: &'a Config, name: &str) -> Option<Tool<'a>> {
    all(config).into_iter().find(|t| t.name() == name)
}

/// The declared tool names, comma separated (for error messages).
pub fn names(config: &Config) -> String {
    let names: Vec<&str> = all(config).iter().map(|t| t.name()).collect();
    if names.is_empty() {
        "none declared".to_owned()
    } else {
        names.join(", ")
    }
}

/// All definitions as a JSON array in the given format.
pub fn definitions(config: &Config, format: Format) -> Value {
    Value::Array(all(config).iter().map(|t| t.definition(format)).collect())
}
