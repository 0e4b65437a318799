//! `agent-cli mcp`: the same tools as an MCP server on stdio, with the official Rust SDK
//! (rmcp). The tools come from `connectors.yaml` at run time, so `tools/list` and
//! `tools/call` are implemented by hand rather than with rmcp's `#[tool]` macros.
//!
//! A call's text content is exactly what `agent-cli tool` prints, and the same JSON is also
//! given as `structuredContent`. Rejected arguments and unreadable data are tool-level errors
//! (`isError: true` with the message, so the client shows it); an unknown tool is a protocol
//! error (`-32602`). stdout is the protocol: logs go to stderr. The server keeps running
//! across Redis restarts (a managed connection that reconnects).
//!
//! Every tool also takes the optional arguments `after_lsn` (a PostgreSQL LSN such as
//! `0/1A2B3C4`) and `wait_ms`: read-your-writes, as `agent-cli tool --after-lsn`
//! ([`crate::watermark::ReadAfter`]).

use std::sync::Arc;
use std::time::Duration;

use mapping::lsn::Lsn;
use mapping::one_line;
use redis::aio::ConnectionManager;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation,
    JsonObject, ListToolsResult, PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool,
    ToolAnnotations,
};
use rmcp::service::{RequestContext, RoleServer};
use rmcp::{ErrorData as McpError, ServerHandler, ServiceExt};
use serde_json::Value;

use crate::error::CallError;
use crate::lookup::Lookups;
use crate::tools;
use crate::watermark::ReadAfter;

/// The MCP server: the declared lookups.
#[derive(Clone)]
pub struct Server {
    lookups: Lookups<ConnectionManager>,
    tools: Arc<Vec<Tool>>,
}

impl Server {
    /// Builds the tool list once from the configuration.
    pub fn new(lookups: Lookups<ConnectionManager>) -> Self {
        let tools = tools::all(lookups.config())
            .into_iter()
            .map(|t| {
                let schema: JsonObject = match t.mcp_input_schema() {
                    Value::Object(map) => map,
                    _ => JsonObject::new(),
                };
                Tool::new(t.name().to_owned(), t.description(), Arc::new(schema)).with_annotations(
                    ToolAnnotations::new()
                        .read_only(true)
                        .destructive(false)
                        .idempotent(true)
                        .open_world(false),
                )
            })
            .collect();
        Server {
            lookups,
            tools: Arc::new(tools),
        }
    }

    /// The tools offered.
    pub fn tools(&self) -> &[Tool] {
        &self.tools
    }

    /// Serves on stdin/stdout until the client closes the stream.
    pub async fn serve_stdio(self) -> anyhow::Result<()> {
        use anyhow::Context as _;
        let running = self
            .serve(rmcp::transport::stdio())
            .await
            .context("cannot start the MCP server on stdio")?;
        tracing::info!("MCP server ready on stdio.");
        running
            .waiting()
            .await
            .context("MCP server stopped with an error")?;
        tracing::info!("MCP client closed the connection.");
        Ok(())
    }

    /// Runs one call; `Err` only for an unknown tool.
    pub async fn call(
        &self,
        name: &str,
        arguments: Option<JsonObject>,
    ) -> Result<CallToolResult, McpError> {
        let mut arguments = arguments.unwrap_or_default();
        let after = match read_after(&mut arguments) {
            Ok(after) => after,
            Err(message) => return Ok(CallToolResult::error(vec![ContentBlock::text(message)])),
        };
        let args = Value::Object(arguments);
        match self
            .lookups
            .call_value_after(name, &args, after.as_ref())
            .await
        {
            Ok(output) => {
                let mut result =
                    CallToolResult::success(vec![ContentBlock::text(output.to_json())]);
                result.structured_content = Some(output.to_value());
                Ok(result)
            }
            Err(CallError::Args(crate::error::ArgError::UnknownTool { tool, available })) => {
                Err(McpError::invalid_params(
                    format!("unknown tool `{tool}` (available: {available})"),
                    None,
                ))
            }
            Err(err) => {
                tracing::warn!(tool = name, error = %err, "Tool call failed.");
                Ok(CallToolResult::error(vec![ContentBlock::text(one_line(
                    &err,
                ))]))
            }
        }
    }
}

/// Takes `after_lsn` and `wait_ms` out of a call's arguments.
fn read_after(arguments: &mut JsonObject) -> Result<Option<ReadAfter>, String> {
    let wait = match arguments.remove(tools::WAIT_MS_ARG) {
        None => tools::DEFAULT_WAIT,
        Some(v) => Duration::from_millis(v.as_u64().ok_or_else(|| {
            format!(
                "`{}` is {v} (expected a non-negative integer)",
                tools::WAIT_MS_ARG
            )
        })?),
    };
    match arguments.remove(tools::AFTER_LSN_ARG) {
        None => Ok(None),
        Some(Value::String(text)) => {
            let lsn: Lsn = text
                .parse()
                .map_err(|e: mapping::lsn::BadLsn| e.to_string())?;
            Ok(Some(ReadAfter { lsn, wait }))
        }
        Some(v) => Err(format!(
            "`{}` is {v} (expected a string like \"0/1A2B3C4\")",
            tools::AFTER_LSN_ARG
        )),
    }
}

impl ServerHandler for Server {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("agent-cli", env!("CARGO_PKG_VERSION")))
            .with_instructions(
                "Read-only lookups over a Redis cache that change data capture keeps in sync with \
                 the production database. Every result carries `freshness` (as_of, lag_ms, stale, and a reason when stale); \
                 when `stale` is true the data may be out of date. Pass `after_lsn` to read your own writes.",
            )
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        Ok(ListToolsResult::with_all_items(self.tools.as_ref().clone()))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        self.call(&request.name, request.arguments)
            .await
            .map(CallToolResponse::from)
    }
}
