//! A tool call end to end: validate the arguments, render the keys, read them in one round
//! trip, type the fields and attach freshness. The CLI's `tool` command, the query loop and
//! the MCP server all go through [`Lookups::call`], so they return exactly the same text.

use std::sync::Arc;

use mapping::layout;
use mapping::model::{Config, Source};
use mapping::ColumnType;
use redis::aio::{ConnectionLike, MultiplexedConnection};
use serde::Serialize;
use serde_json::Value;

use crate::args::{self, Call};
use crate::error::{CallError, PlanError};
use crate::freshness::{self, Freshness, Record};
use crate::include;
use crate::included_rows;
use crate::store::{self, Store};
use crate::typing;
use crate::watermark::{self, ReadAfter};

/// What a tool returns: `{"result": ..., "freshness": {...}}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ToolOutput {
    /// An object (single-row lookup), `null` (not found) or an array (relation or search
    /// lookup).
    pub result: Value,
    /// How current the data is.
    pub freshness: Freshness,
}

impl ToolOutput {
    /// The compact JSON text the model sees.
    pub fn to_json(&self) -> String {
        // Serialising plain JSON values and strings into a String cannot fail.
        serde_json::to_string(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }

    /// As a JSON value.
    pub fn to_value(&self) -> Value {
        serde_json::json!({"result": self.result, "freshness": self.freshness})
    }
}

/// The declared lookups over one Redis database.
#[derive(Clone)]
pub struct Lookups<C = MultiplexedConnection> {
    config: Arc<Config>,
    store: Store<C>,
    stale_after_ms: u64,
    /// `--stale-after-ms`: replaces every source's bound too.
    stale_override: Option<u64>,
    /// `--after-lsn`: every call waits for this position.
    read_after: Option<ReadAfter>,
}

impl<C: ConnectionLike + Clone + Send> Lookups<C> {
    /// `stale_after_ms` overrides `freshness.stale_after_ms` of the file when given.
    pub fn new(config: Arc<Config>, store: Store<C>, stale_after_ms: Option<u64>) -> Self {
        let stale_override = stale_after_ms;
        let stale_after_ms = stale_after_ms.unwrap_or(config.freshness.stale_after_ms);
        Lookups {
            config,
            store,
            stale_after_ms,
            stale_override,
            read_after: None,
        }
    }

    /// The same store, overrides and `--after-lsn` with another configuration (a reload of
    /// `agent-cli mcp`); `freshness.stale_after_ms` is the new file's unless overridden.
    pub fn with_config(&self, config: Arc<Config>) -> Self {
        Lookups {
            stale_after_ms: self
                .stale_override
                .unwrap_or(config.freshness.stale_after_ms),
            config,
            store: self.store.clone(),
            stale_override: self.stale_override,
            read_after: self.read_after,
        }
    }

    /// Every call reads at least the state of `read_after.lsn` (waiting for it up to
    /// `read_after.wait`), `--after-lsn`.
    pub fn read_after(mut self, read_after: Option<ReadAfter>) -> Self {
        self.read_after = read_after;
        self
    }

    /// The bound in force for `source`.
    pub fn source_stale_after_ms(&self, source: &Source) -> u64 {
        self.stale_override.unwrap_or(source.stale_after_ms)
    }

    /// The configuration the tools come from.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The read handle.
    pub fn store(&self) -> &Store<C> {
        &self.store
    }

    /// The staleness bound in force.
    pub fn stale_after_ms(&self) -> u64 {
        self.stale_after_ms
    }

    /// Calls a tool with JSON argument text.
    pub async fn call(&self, tool: &str, args_json: &str) -> Result<ToolOutput, CallError> {
        let call = args::parse(&self.config, tool, args_json)?;
        self.run(&call, self.read_after.as_ref()).await
    }

    /// Calls a tool with parsed arguments.
    pub async fn call_value(
        &self,
        tool: &str,
        args_value: &Value,
    ) -> Result<ToolOutput, CallError> {
        self.call_value_after(tool, args_value, self.read_after.as_ref())
            .await
    }

    /// [`Lookups::call_value`], reading at least the state of `after` (the MCP tools'
    /// `after_lsn` argument).
    pub async fn call_value_after(
        &self,
        tool: &str,
        args_value: &Value,
        after: Option<&ReadAfter>,
    ) -> Result<ToolOutput, CallError> {
        let found = crate::tools::find(&self.config, tool).ok_or_else(|| {
            crate::error::ArgError::UnknownTool {
                tool: tool.to_owned(),
                available: crate::tools::names(&self.config),
            }
        })?;
        let call = args::validate(found, args_value)?;
        self.run(&call, after).await
    }

    async fn run(
        &self,
        call: &Call<'_>,
        after: Option<&ReadAfter>,
    ) -> Result<ToolOutput, CallError> {
        let mut plan = store::plan(call)?;
        let mapping = call.tool.mapping.name.as_str();
        let source = self.config.source_of(mapping);
        if let Some(source) = source {
            // The lookup script reads the watermark with the rows, in the same atomic call.
            plan.freshness_key = layout::watermark_key(&source.name);
            if let Some(after) = after {
                watermark::wait_for(&self.store, source, after).await?;
            }
        }
        let includes = &call.tool.lookup.include;
        if !includes.is_empty() {
            plan.includes = Some(self.include_plan(call, &plan.target, source, after).await?);
        }
        let reply = self.store.read(&plan).await?;
        let raw = reply.parse()?;
        let aggregate =
            (call.tool.lookup.aggregate.as_deref()).and_then(|a| call.tool.mapping.aggregate(a));
        let types = typing::types_of(&raw.types);
        if call.relation_args.range.is_some() {
            range_needs_time(call, &types)?;
        }
        let mut rows = raw
            .rows
            .iter()
            .map(|row| typing::typed_row(row, &types, mapping).map(Value::Object))
            .collect::<Result<Vec<_>, _>>()?;
        let result = if let Some(aggregate) = aggregate {
            crate::aggregate::figures(aggregate, raw.rows.first().map(|r| r.as_slice()))
        } else if call.tool.lookup.relation.is_some() || call.tool.lookup.search.is_some() {
            Value::Array(rows)
        } else {
            let mut row = rows.pop().unwrap_or(Value::Null);
            if let Value::Object(fields) = &mut row {
                included_rows::attach(fields, includes, &raw.included)?;
            }
            row
        };
        let now = freshness::now_ms();
        let mut freshness = self.freshness(mapping, &raw.freshness, now, after)?;
        // Included rows come from other mappings: the answer is as fresh as the stalest.
        for (include, read) in includes.iter().zip(&raw.included) {
            let child = self.freshness(&include.mapping, &read.freshness, now, after)?;
            freshness = freshness::staler(freshness, child);
        }
        Ok(ToolOutput { result, freshness })
    }

    /// What the script reads for the lookup's `include:` (a row or index lookup): the found
    /// row's primary key is the call's value when the lookup addresses the row by its key.
    /// With `after`, also waits for the watermark of every other source the includes read.
    async fn include_plan(
        &self,
        call: &Call<'_>,
        target: &store::Target,
        source: Option<&Source>,
        after: Option<&ReadAfter>,
    ) -> Result<include::Includes, CallError> {
        let lookup = call.tool.lookup;
        let reads = include::reads(&self.config, &lookup.tool, &lookup.include)?;
        if let Some(after) = after {
            let mut waited: Vec<&str> = source.iter().map(|s| s.name.as_str()).collect();
            for inc in &lookup.include {
                if let Some(other) = self.config.source_of(&inc.mapping) {
                    if !waited.contains(&other.name.as_str()) {
                        watermark::wait_for(&self.store, other, after).await?;
                        waited.push(&other.name);
                    }
                }
            }
        }
        let id = matches!(target, store::Target::Row { .. }).then(|| call.value.clone());
        Ok(include::Includes { id, reads })
    }

    /// The freshness of `mapping` from its freshness hash as read (`pairs`).
    fn freshness(
        &self,
        mapping: &str,
        pairs: &store::Pairs<'_>,
        now: i64,
        after: Option<&ReadAfter>,
    ) -> Result<Freshness, CallError> {
        let pairs = pairs.iter().map(|(f, v)| (f.as_ref(), v.as_ref()));
        let source = self.config.source_of(mapping);
        Ok(match source {
            Some(source) => watermark::assess(
                source,
                watermark::Record::parse(&source.name, pairs)?.as_ref(),
                now,
                self.source_stale_after_ms(source),
                after,
            ),
            None => {
                let record = Record::parse(mapping, pairs)?;
                let mut freshness = freshness::assess(record.as_ref(), now, self.stale_after_ms);
                if after.is_some() {
                    freshness.stale = true;
                    freshness.reason = Some(format!(
                        "mapping `{mapping}` has no source with a heartbeat in the configuration, so an LSN cannot be waited for"
                    ));
                }
                freshness
            }
        })
    }
}

/// A `range` compares epoch microseconds with the relation's scores, which are epoch
/// microseconds only for a timestamp or date `order_by` (mapping::score): refuse a call whose
/// relation is ordered by another type the sink recorded, rather than answer a wrong range.
/// An `order_by` the types hash does not name yet (nothing applied) passes.
fn range_needs_time(call: &Call<'_>, types: &typing::Types<'_>) -> Result<(), PlanError> {
    let mapping = call.tool.mapping;
    let Some(relation) = (call.tool.lookup.relation.as_deref()).and_then(|r| mapping.relation(r))
    else {
        return Ok(());
    };
    match types.get(relation.order_by.as_str()).copied().flatten() {
        None | Some(ColumnType::Timestamp | ColumnType::Date) => Ok(()),
        Some(found) => Err(PlanError::RangeNeedsTime {
            tool: call.tool.lookup.tool.clone(),
            mapping: mapping.name.clone(),
            field: relation.order_by.clone(),
            found,
        }),
    }
}
