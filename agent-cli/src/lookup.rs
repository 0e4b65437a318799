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
use crate::read_cache::{Prefixes, ReadCache, Reads};
use crate::store::{self, Store};
use crate::tools::Tool;
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

/// What an answer is cached under: the tool (which shapes the result) and what it reads.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AnswerKey {
    tool: String,
    plan: store::ReadPlan,
}

/// A lookup's answer as read: the result, and the freshness hashes read with it (assessed
/// against the clock each time it is served).
#[derive(Debug)]
pub struct Answer {
    result: Value,
    /// The mapping's.
    freshness: Recorded,
    /// Each include's mapping and its freshness hash.
    included_freshness: Vec<(String, Recorded)>,
}

/// A freshness hash as read, parsed.
#[derive(Debug, Clone, Copy)]
enum Recorded {
    /// A source's watermark (the mapping has a source).
    Watermark(Option<watermark::Record>),
    /// `sink:freshness:{mapping}`.
    Mapping(Option<Record>),
}

/// `agent-cli mcp`'s read cache ([`crate::read_cache`]).
pub type AnswerCache = ReadCache<AnswerKey, Arc<Answer>>;

/// A read cache for the lookups of `config`, tracking what they can read; live once
/// [`crate::read_cache::tracking::spawn`] has turned tracking on.
pub fn answer_cache(config: &Config, capacity: usize) -> AnswerCache {
    ReadCache::new(capacity, Prefixes::of(config))
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
    /// Answers kept until a key they read changes (`agent-cli mcp`).
    cache: Option<AnswerCache>,
}

impl<C: ConnectionLike + Clone + Send + Sync + 'static> Lookups<C> {
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
            cache: None,
        }
    }

    /// Serves repeated lookups from `cache` while it is live ([`crate::read_cache`]).
    pub fn with_cache(mut self, cache: AnswerCache) -> Self {
        self.cache = Some(cache);
        self
    }

    /// The read cache, if answers are cached.
    pub fn cache(&self) -> Option<&AnswerCache> {
        self.cache.as_ref()
    }

    /// The same store, overrides and `--after-lsn` with another configuration (a reload of
    /// `agent-cli mcp`); `freshness.stale_after_ms` is the new file's unless overridden.
    pub fn with_config(&self, config: Arc<Config>) -> Self {
        // A tool of the new file may read the same keys and answer differently.
        if let Some(cache) = &self.cache {
            cache.clear();
        }
        Lookups {
            stale_after_ms: self
                .stale_override
                .unwrap_or(config.freshness.stale_after_ms),
            config,
            store: self.store.clone(),
            stale_override: self.stale_override,
            read_after: self.read_after,
            cache: self.cache.clone(),
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
        let cache =
            (self.cache.as_ref()).filter(|_| after.is_none() && may_cache(&self.config, call));
        let answer = match cache {
            Some(cache) => self.cached_answer(cache, call, plan).await?,
            None => {
                let raw = self.store.read(&plan).await?;
                Arc::new(self.answer(&call.tool, ranged(call), &raw.parse()?)?)
            }
        };
        Ok(self.serve(&answer, mapping, after))
    }

    /// The answer `cache` holds for `plan`, or the one read now (the script naming every key
    /// it read), kept there unless one of those keys changed meanwhile.
    async fn cached_answer(
        &self,
        cache: &AnswerCache,
        call: &Call<'_>,
        plan: store::ReadPlan,
    ) -> Result<Arc<Answer>, CallError> {
        let key = AnswerKey {
            tool: call.tool.lookup.tool.clone(),
            plan,
        };
        // Let the runtime read what Redis already sent first: a caller answered from memory
        // never waits on I/O, so in a loop of hits on a one-thread runtime the tracking
        // connection would never be polled and its invalidations never applied. Tokio polls
        // the I/O driver before resuming a yielded task.
        tokio::task::yield_now().await;
        if let Some(hit) = cache.get(&key) {
            if hit.revalidate {
                self.read_again(cache, key, call);
            }
            return Ok(hit.value);
        }
        let ticket = cache.ticket();
        let (answer, reads) = self
            .read_to_cache(&key.plan, &call.tool, ranged(call))
            .await?;
        cache.insert(ticket, key, Arc::clone(&answer), reads);
        Ok(answer)
    }

    /// Reads `plan` for the cache: the answer and the keys it was read from, the freshness
    /// hashes apart ([`Reads`]).
    async fn read_to_cache(
        &self,
        plan: &store::ReadPlan,
        tool: &Tool<'_>,
        ranged: bool,
    ) -> Result<(Arc<Answer>, Reads), CallError> {
        let reply = self.store.read_reporting_keys(plan).await?;
        let raw = reply.parse()?;
        let answer = Arc::new(self.answer(tool, ranged, &raw)?);
        let includes = plan.includes.iter().flat_map(|i| &i.reads);
        let soft: Vec<String> = std::iter::once(&plan.freshness_key)
            .chain(includes.map(|r| &r.freshness_key))
            .cloned()
            .collect();
        let hard = (plan.keys())
            .filter(|k| !soft.iter().any(|s| s == k))
            .chain(raw.reads.iter().map(|k| k.as_ref()))
            .map(str::to_owned)
            .collect();
        Ok((answer, Reads { hard, soft }))
    }

    /// Reads the answer for `key` again in the background (a newer freshness hash exists) and
    /// puts it in `cache`; on failure forgets it, so that the next caller reads it. The ticket
    /// is taken now: a reload meanwhile (another tool behind the same name) voids it.
    fn read_again(&self, cache: &AnswerCache, key: AnswerKey, call: &Call<'_>) {
        let ticket = cache.ticket();
        let (me, cache) = (self.clone(), cache.clone());
        let ranged = ranged(call);
        tokio::spawn(async move {
            let read = match crate::tools::find(&me.config, &key.tool) {
                Some(tool) => me.read_to_cache(&key.plan, &tool, ranged).await,
                None => return cache.forget(&key),
            };
            match read {
                Ok((answer, reads)) => {
                    cache.insert(ticket, key, answer, reads);
                }
                Err(err) => {
                    tracing::debug!(tool = %key.tool, error = %err, "Reading a cached answer again failed; dropping it.");
                    cache.forget(&key);
                }
            }
        });
    }

    /// The answer in `raw`: typed rows shaped as the tool returns them, and the freshness
    /// hashes read with them.
    /// `ranged`: the call gave a `range`.
    fn answer(
        &self,
        tool: &Tool<'_>,
        ranged: bool,
        raw: &store::RawRead<'_>,
    ) -> Result<Answer, CallError> {
        let mapping = tool.mapping.name.as_str();
        let includes = &tool.lookup.include;
        let aggregate = (tool.lookup.aggregate.as_deref()).and_then(|a| tool.mapping.aggregate(a));
        let types = typing::types_of(&raw.types);
        if ranged {
            range_needs_time(tool, &types)?;
        }
        let mut rows = raw
            .rows
            .iter()
            .map(|row| typing::typed_row(row, &types, mapping).map(Value::Object))
            .collect::<Result<Vec<_>, _>>()?;
        let result = if let Some(aggregate) = aggregate {
            crate::aggregate::figures(aggregate, raw.rows.first().map(|r| r.as_slice()))
        } else if tool.lookup.relation.is_some() || tool.lookup.search.is_some() {
            Value::Array(rows)
        } else {
            let mut row = rows.pop().unwrap_or(Value::Null);
            if let Value::Object(fields) = &mut row {
                included_rows::attach(fields, includes, &raw.included)?;
            }
            row
        };
        let included_freshness = (includes.iter().zip(&raw.included))
            .map(|(include, read)| {
                let child = self.recorded(&include.mapping, &read.freshness)?;
                Ok((include.mapping.clone(), child))
            })
            .collect::<Result<_, CallError>>()?;
        Ok(Answer {
            result,
            freshness: self.recorded(mapping, &raw.freshness)?,
            included_freshness,
        })
    }

    /// `answer` with its freshness as of now. Included rows come from other mappings: the
    /// answer is as fresh as the stalest.
    fn serve(&self, answer: &Answer, mapping: &str, after: Option<&ReadAfter>) -> ToolOutput {
        let now = freshness::now_ms();
        let own = self.assess(mapping, answer.freshness, now, after);
        let freshness =
            (answer.included_freshness.iter()).fold(own, |stalest, (child, recorded)| {
                freshness::staler(stalest, self.assess(child, *recorded, now, after))
            });
        ToolOutput {
            result: answer.result.clone(),
            freshness,
        }
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

    /// The freshness hash of `mapping` as read (`pairs`): its source's watermark, or its own.
    fn recorded(&self, mapping: &str, pairs: &store::Pairs<'_>) -> Result<Recorded, CallError> {
        let pairs = pairs.iter().map(|(f, v)| (f.as_ref(), v.as_ref()));
        Ok(match self.config.source_of(mapping) {
            Some(source) => Recorded::Watermark(watermark::Record::parse(&source.name, pairs)?),
            None => Recorded::Mapping(Record::parse(mapping, pairs)?),
        })
    }

    /// The freshness of `mapping` at `now` from its freshness hash as read.
    fn assess(
        &self,
        mapping: &str,
        recorded: Recorded,
        now: i64,
        after: Option<&ReadAfter>,
    ) -> Freshness {
        let record = match (recorded, self.config.source_of(mapping)) {
            (Recorded::Watermark(record), Some(source)) => {
                return watermark::assess(
                    source,
                    record.as_ref(),
                    now,
                    self.source_stale_after_ms(source),
                    after,
                );
            }
            (Recorded::Mapping(record), _) => record,
            // Read under a configuration that gave the mapping a source (not cached across
            // reloads, see `with_config`): nothing this configuration can assess.
            (Recorded::Watermark(_), None) => None,
        };
        let mut freshness = freshness::assess(record.as_ref(), now, self.stale_after_ms);
        if after.is_some() {
            freshness.stale = true;
            freshness.reason = Some(format!(
                "mapping `{mapping}` has no source with a heartbeat in the configuration, so an LSN cannot be waited for"
            ));
        }
        freshness
    }
}

/// Whether the call gave a `range` (its answer depends on the recorded `order_by` type).
fn ranged(call: &Call<'_>) -> bool {
    call.relation_args.range.is_some()
}

/// Whether `call`'s answer may be cached: not when rows it reads may expire
/// (`ttl_seconds`), which Redis reports only once it removes them, possibly well after.
fn may_cache(config: &Config, call: &Call<'_>) -> bool {
    let expires = |mapping: &str| {
        config
            .mapping(mapping)
            .is_none_or(|m| m.ttl_seconds.is_some())
    };
    call.tool.mapping.ttl_seconds.is_none()
        && !(call.tool.lookup.include.iter()).any(|include| expires(&include.mapping))
}

/// A `range` compares epoch microseconds with the relation's scores, which are epoch
/// microseconds only for a timestamp or date `order_by` (mapping::score): refuse a call whose
/// relation is ordered by another type the sink recorded, rather than answer a wrong range.
/// An `order_by` the types hash does not name yet (nothing applied) passes.
fn range_needs_time(tool: &Tool<'_>, types: &typing::Types<'_>) -> Result<(), PlanError> {
    let mapping = tool.mapping;
    let Some(relation) = (tool.lookup.relation.as_deref()).and_then(|r| mapping.relation(r)) else {
        return Ok(());
    };
    match types.get(relation.order_by.as_str()).copied().flatten() {
        None | Some(ColumnType::Timestamp | ColumnType::Date) => Ok(()),
        Some(found) => Err(PlanError::RangeNeedsTime {
            tool: tool.lookup.tool.clone(),
            mapping: mapping.name.clone(),
            field: relation.order_by.clone(),
            found,
        }),
    }
}
