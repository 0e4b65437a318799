//! agent-cli: the sink's Redis read model offered to LLMs as tools.
//!
//! The lookups declared in `connectors.yaml` become tools (JSON Schema parameters and
//! descriptions from the file). A tool call is validated, turned into keys rendered only
//! from the declared templates, and answered with ONE Redis round trip: a read-only Lua
//! script that resolves the index, reads the row(s), the field types and the freshness
//! record together. Every answer carries the freshness of the data it came from.
//!
//! agent-cli never writes to Redis and never talks to PostgreSQL.
//!
//! # Layout
//! - [`cli`]: the command line (clap derive) and the subcommands' entry points.
//! - [`tools`]: tool definitions from the mapping, in OpenAI, Anthropic and MCP format.
//! - [`args`]: validation of a tool call's JSON arguments.
//! - [`relation_args`]: a relation lookup's optional filters and time range.
//! - [`store`]: Redis reads (the Lua script, one round trip per lookup).
//! - [`include`]: a row lookup's related rows (`include:`), read in the same round trip.
//! - [`typing`]: stored text -> typed JSON using `sink:types:{mapping}`.
//! - [`freshness`]: `sink:freshness:{mapping}` -> as-of time, lag and staleness (mappings
//!   without a source).
//! - [`watermark`]: `sink:watermark:{source}` -> the same with a reason; `--after-lsn` waits.
//! - [`lookup`]: a tool call end to end (validate, plan, read, type), shared by every front end.
//! - [`read_cache`]: `agent-cli mcp`'s answers kept in process until Redis reports a change
//!   of a key they were read from.
//! - [`llm`]: the one-shot function-calling loop over OpenAI- and Anthropic-style APIs.
//! - [`mcp`]: the MCP server on stdio (rmcp); [`reload`]: its configuration re-read on
//!   SIGHUP.
//! - [`status`]: freshness per mapping, for people and scripts.
//! - [`error`]: error types and exit codes.

pub mod aggregate;
pub mod args;
pub mod cli;
pub mod error;
pub mod freshness;
pub mod include;
pub mod included_rows;
pub mod key_part;
pub mod llm;
pub mod lookup;
pub mod mcp;
pub mod read_cache;
pub mod relation_args;
pub mod reload;
pub mod status;
pub mod store;
pub mod template_pieces;
pub mod tools;
pub mod typing;
pub mod watermark;
