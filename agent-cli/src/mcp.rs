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
//! The tools follow the configuration: on `SIGHUP` (and with `--watch-config` when the file
//! changes) it is read again ([`crate::reload`]); a valid file replaces the lookups, and when
//! the tool list changed the client gets `notifications/tools/list_changed` (the server
//! declares `tools.listChanged`), so its next `tools/list` shows the new tools. An invalid
//! file is refused on stderr and the tools stay as they were.
//!
//! Every tool also takes the optional arguments `after_lsn` (a PostgreSQL LSN such as
//! `0/1A2B3C4`) and `wait_ms`: read-your-writes, as `agent-cli tool --after-lsn`
//! ([`crate::watermark::ReadAfter`]).

use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use mapping::lsn::Lsn;
use mapping::{one_line, Config, ConfigErrors};
use redis::aio::ConnectionManager;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation,
    JsonObject, ListToolsResult, PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool,
    ToolAnnotations,
};
use rmcp::service::{Peer, RequestContext, RoleServer};
use rmcp::{ErrorData as McpError, ServerHandler, ServiceExt};
use serde_json::Value;

use crate::error::CallError;
use crate::lookup::Lookups;
use crate::reload::{self, Triggers};
use crate::tools;
use crate::watermark::ReadAfter;

/// The MCP server: the declared lookups, replaced as a whole when the configuration is
/// reloaded (clones share them).
#[derive(Clone)]
pub struct Server {
    catalog: Arc<RwLock<Arc<Catalog>>>,
}

/// One configuration's lookups and the tools they offer.
struct Catalog {
    lookups: Lookups<ConnectionManager>,
    tools: Vec<Tool>,
}

/// What re-reads the configuration for [`Server::serve_stdio`].
pub struct Reloads {
    /// When to re-read.
    pub triggers: Triggers,
    /// Loads the file as at start-up.
    pub load: Box<dyn Fn() -> Result<Config, ConfigErrors> + Send>,
}

impl Server {
    /// Builds the tool list from the configuration.
    pub fn new(lookups: Lookups<ConnectionManager>) -> Self {
        Server {
            catalog: Arc::new(RwLock::new(Arc::new(Catalog::new(lookups)))),
        }
    }

    /// The tools offered now.
    pub fn tools(&self) -> Vec<Tool> {
        self.catalog().tools.clone()
    }

    fn catalog(&self) -> Arc<Catalog> {
        Arc::clone(&self.catalog.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Offers the lookups of `config` from now on (calls already running finish with the
    /// old ones); whether the tool list changed.
    fn reconfigure(&self, config: Arc<Config>) -> bool {
        let current = self.catalog();
        let next = Catalog::new(current.lookups.with_config(config));
        let changed = next.tools != current.tools;
        *self.catalog.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(next);
        changed
    }

    /// Serves on stdin/stdout until the client closes the stream, reloading the
    /// configuration when `reloads` asks.
    pub async fn serve_stdio(self, reloads: Reloads) -> anyhow::Result<()> {
        use anyhow::Context as _;
        let running = self
            .clone()
            .serve(rmcp::transport::stdio())
            .await
            .context("cannot start the MCP server on stdio")?;
        tracing::info!("MCP server ready on stdio.");
        let reloading = tokio::spawn(self.reload_on(reloads, running.peer().clone()));
        let stopped = running.waiting().await;
        reloading.abort();
        stopped.context("MCP server stopped with an error")?;
        tracing::info!("MCP client closed the connection.");
        Ok(())
    }

    /// Re-reads the configuration at every trigger; a change of the tools is announced to
    /// the client.
    async fn reload_on(self, mut reloads: Reloads, peer: Peer<RoleServer>) {
        loop {
            let trigger = reloads.triggers.next().await;
            tracing::info!(trigger = trigger.as_str(), "Reloading the configuration.");
            let current = self.catalog();
            let config = match reload::vet(current.lookups.config(), (reloads.load)()) {
                Ok(config) => config,
                Err(refused) => {
                    tracing::warn!(error = %refused, "Configuration reload refused; keeping the previous tools.");
                    continue;
                }
            };
            let changed = self.reconfigure(Arc::new(config));
            tracing::info!(
                tools = self.catalog().tools.len(),
                changed,
                "Configuration reloaded."
            );
            if changed {
                if let Err(e) = peer.notify_tool_list_changed().await {
                    tracing::warn!(error = %e, "Cannot tell the client that the tools changed.");
                }
            }
        }
    }

    /// Runs one call; `Err` only for an unknown tool.
    pub async fn call(
        &self,
        name: &str,
        arguments: Option<JsonObject>,
    ) -> Result<CallToolResult, McpError> {
        let catalog = self.catalog();
        let mut arguments = arguments.unwrap_or_default();
        let after = match read_after(&mut arguments) {
            Ok(after) => after,
            Err(message) => return Ok(CallToolResult::error(vec![ContentBlock::text(message)])),
        };
        let args = Value::Object(arguments);
        match catalog
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

impl Catalog {
    /// The tools of `lookups`' configuration.
    fn new(lookups: Lookups<ConnectionManager>) -> Catalog {
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
        Catalog { lookups, tools }
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
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_tool_list_changed()
                .build(),
        )
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
        Ok(ListToolsResult::with_all_items(self.tools()))
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
