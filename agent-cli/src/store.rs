//! Redis reads. agent-cli only ever reads the keys the sink maintains (see ARCHITECTURE.md)
//! and never writes.
//!
//! Every lookup is ONE round trip: [`plan`] renders the addressed key from the lookup's
//! declared template and the validated argument, and [`Store::read`] runs `lookup.lua` as a
//! read-only script (`EVAL_RO` the first time on a connection, `EVALSHA_RO` afterwards; plain
//! `EVAL`/`EVALSHA` on servers older than Redis 7, which answer "unknown command"). The script resolves the index, reads the
//! row or the relation's newest children, and the mapping's `sink:types` and
//! `sink:freshness` hashes in the same atomic call, so a row and its freshness always agree.
//! It answers with one JSON text ([`Reply`]), which [`Reply::parse`] reads without copying
//! the strings that need no unescaping.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use mapping::layout;
use mapping::model::Relation;
use mapping::template::KeyTemplate;
use mapping::{redact_url, RedisConfig};
use redis::aio::{
    ConnectionLike, ConnectionManager, ConnectionManagerConfig, MultiplexedConnection,
};
use redis::{ErrorKind, RedisError, ServerErrorKind};
use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use crate::args::Call;
use crate::error::{PlanError, StoreError};
use crate::relation_args::ScoreRange;
use crate::template_pieces::pieces;

/// The lookup script (see the file for its KEYS/ARGV contract).
pub const LOOKUP_SCRIPT: &str = include_str!("lookup.lua");

/// Relation lookups without a declared `limit` parameter return this many children.
pub const DEFAULT_RELATION_LIMIT: u32 = 10;

/// How long connecting may take before Redis counts as unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long one command may take.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);

/// What one lookup reads.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ReadPlan {
    /// `sink:types:{mapping}` of the mapping whose rows are returned.
    pub types_key: String,
    /// The hash freshness comes from: `sink:freshness:{mapping}` of that mapping, or its
    /// source's watermark `sink:watermark:{source}` (the lookup sets it when the mapping has
    /// a source).
    pub freshness_key: String,
    /// The addressed key and how to get from it to rows.
    pub target: Target,
    /// `include:` of a row lookup (the lookup sets it): related rows read with the row.
    pub includes: Option<crate::include::Includes>,
}

impl ReadPlan {
    /// The keys the script is given (KEYS): the types and freshness hashes, the addressed key,
    /// and each include's types and freshness hashes. What it reads beyond them it names when
    /// asked ([`Store::read_reporting_keys`]).
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        let includes = self.includes.iter().flat_map(|i| &i.reads);
        [
            self.types_key.as_str(),
            self.freshness_key.as_str(),
            target_key(self),
        ]
        .into_iter()
        .chain(includes.flat_map(|r| [r.types_key.as_str(), r.freshness_key.as_str()]))
    }
}

/// The addressed key of a lookup.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Target {
    /// The row hash itself, e.g. `customer:42`.
    Row {
        /// Row key.
        key: String,
    },
    /// A unique index string holding the row's primary key, e.g. `customer:email:{email}`.
    Index {
        /// Index key.
        key: String,
        /// The row key template's literal text around its placeholder(s): the row key is
        /// these pieces joined by the primary key.
        row_pieces: Vec<String>,
    },
    /// A relation's sorted set of child primary keys, e.g. `customer:42:orders`.
    Relation {
        /// Sorted set key.
        key: String,
        /// How many children, newest first.
        limit: u32,
        /// As for [`Target::Index`], for the child rows.
        row_pieces: Vec<String>,
    },
    /// A relation's children whose scores are within a range (`range:` of the lookup).
    RelationRange {
        /// Sorted set key (a filtered relation's when the call gave filters).
        key: String,
        /// How many children, newest first.
        limit: u32,
        /// Inclusive score bounds.
        range: ScoreRange,
        /// As for [`Target::Index`], for the child rows.
        row_pieces: Vec<String>,
    },
    /// An aggregate's hash, e.g. `customer:1:order_stats` (`crate::aggregate` shapes it).
    Aggregate {
        /// Aggregate key.
        key: String,
    },
    /// A prefix search's sorted set (`mapping::search`), e.g.
    /// `sink:search:customers:name_prefix`: the first rows whose folded field starts with
    /// the folded prefix, by folded value then primary key.
    Search {
        /// Sorted set key.
        key: String,
        /// The prefix, folded as the sink folds values.
        prefix: String,
        /// How many rows at most.
        limit: u32,
    },
}

/// Renders the keys of a validated call, only from templates its lookup declares.
pub fn plan(call: &Call<'_>) -> Result<ReadPlan, PlanError> {
    let mapping = call.tool.mapping;
    let lookup = call.tool.lookup;
    let tool = lookup.tool.as_str();
    let aggregate = lookup
        .aggregate
        .as_deref()
        .and_then(|a| mapping.aggregate(a));
    let target = if let Some(search) = &lookup.search {
        Target::Search {
            key: layout::search_key(&mapping.name, search),
            prefix: mapping::search::fold(&call.value),
            limit: call.limit.unwrap_or(DEFAULT_RELATION_LIMIT),
        }
    } else if let Some(aggregate) = aggregate {
        Target::Aggregate {
            key: fill(&aggregate.key, &call.value, tool)?,
        }
    } else if let Some(relation_name) = &lookup.relation {
        let relation =
            mapping
                .relation(relation_name)
                .ok_or_else(|| PlanError::UnknownRelation {
                    tool: tool.to_owned(),
                    mapping: mapping.name.clone(),
                    relation: relation_name.clone(),
                })?;
        let row_pieces = || pieces(&mapping.key, tool, "a stored primary key");
        match filtered_or_ranged(call, relation, row_pieces)? {
            Some(filtered) => filtered,
            None => Target::Relation {
                key: fill(&relation.key, &call.value, tool)?,
                limit: call.limit.unwrap_or(DEFAULT_RELATION_LIMIT),
                row_pieces: row_pieces()?,
            },
        }
    } else if let Some(index_name) = &call.by.index {
        let index = mapping
            .index(index_name)
            .ok_or_else(|| PlanError::UnknownIndex {
                tool: tool.to_owned(),
                mapping: mapping.name.clone(),
                index: index_name.clone(),
            })?;
        Target::Index {
            key: fill(&index.key, &call.value, tool)?,
            row_pieces: pieces(&mapping.key, tool, "a stored primary key")?,
        }
    } else {
        Target::Row {
            key: fill(&mapping.key, &call.value, tool)?,
        }
    };
    Ok(ReadPlan {
        types_key: layout::types_key(&mapping.name),
        freshness_key: layout::freshness_key(&mapping.name),
        target,
        includes: None,
    })
}

/// The template with its (single distinct) field replaced by `value`.
fn fill(template: &KeyTemplate, value: &str, tool: &str) -> Result<String, PlanError> {
    Ok(pieces(template, tool, "the parameter")?.join(value))
}

/// A stored hash as field/value pairs, in the order Redis returned them. The texts borrow from
/// the [`Reply`] unless they had JSON escapes to undo.
pub type Pairs<'a> = Vec<(Cow<'a, str>, Cow<'a, str>)>;

/// What the lookup script returned: the JSON text of `[types, freshness, rows]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply(Vec<u8>);

/// A parsed [`Reply`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RawRead<'a> {
    /// `sink:types:{mapping}` (empty if the sink has not recorded types yet).
    pub types: Pairs<'a>,
    /// The hash of [`ReadPlan::freshness_key`] (empty if the sink has not recorded it yet).
    pub freshness: Pairs<'a>,
    /// The rows found: none, one, or a relation's children newest first.
    pub rows: Vec<Pairs<'a>>,
    /// Per include of [`ReadPlan::includes`], its mapping's bookkeeping and the found row's
    /// children (none when no row was found; no entries when the plan has no includes).
    pub included: Vec<RawInclude<'a>>,
    /// The keys the script read beyond its KEYS, when asked
    /// ([`Store::read_reporting_keys`]; empty otherwise).
    pub reads: Vec<Cow<'a, str>>,
}

/// What the script read for one include.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RawInclude<'a> {
    /// The child mapping's `sink:types` hash.
    pub types: Pairs<'a>,
    /// The child mapping's freshness hash ([`crate::include::IncludeRead::freshness_key`]).
    pub freshness: Pairs<'a>,
    /// The children, newest first.
    pub rows: Vec<Pairs<'a>>,
}

/// A read-only handle on the sink's Redis database. Cheap to clone; clones share the
/// connection and the knowledge of whether the script is cached.
#[derive(Clone)]
pub struct Store<C = MultiplexedConnection> {
    conn: C,
    sha: Arc<str>,
    /// The server has the script cached (after the first successful call): use EVALSHA*.
    script_cached: Arc<AtomicBool>,
    /// The server predates Redis 7 (no EVAL_RO): use EVAL/EVALSHA.
    legacy: Arc<AtomicBool>,
}

/// A client for `redis` and its URL as it may be shown.
fn client(redis: &RedisConfig) -> Result<(redis::Client, String), StoreError> {
    let shown = redact_url(&redis.url);
    match redis_connect::client(redis) {
        Ok(client) => Ok((client, shown)),
        Err(source) => Err(StoreError::Client { url: shown, source }),
    }
}

impl Store<MultiplexedConnection> {
    /// Connects to `redis` (a [`RedisConfig`] or a bare URL) with a timeout, so an
    /// unreachable server fails fast.
    pub async fn connect(redis: impl Into<RedisConfig>) -> Result<Self, StoreError> {
        let (client, shown) = client(&redis.into())?;
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT));
        let conn = client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(|source| StoreError::Connect { url: shown, source })?;
        Ok(Store::with_connection(conn))
    }
}

impl Store<ConnectionManager> {
    /// Connects to `redis` with a connection that re-establishes itself after Redis restarts or the
    /// network drops (for the long-running MCP server). The first connection must succeed.
    pub async fn connect_managed(redis: impl Into<RedisConfig>) -> Result<Self, StoreError> {
        let (client, shown) = client(&redis.into())?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_number_of_retries(3)
            .set_max_delay(Duration::from_secs(2));
        let conn = ConnectionManager::new_with_config(client, config)
            .await
            .map_err(|source| StoreError::Connect { url: shown, source })?;
        Ok(Store::with_connection(conn))
    }
}

impl<C: ConnectionLike + Clone + Send> Store<C> {
    /// Wraps an existing connection (tests use this to count round trips).
    pub fn with_connection(conn: C) -> Self {
        Store {
            conn,
            sha: redis::Script::new(LOOKUP_SCRIPT).get_hash().into(),
            script_cached: Arc::new(AtomicBool::new(false)),
            legacy: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Runs one lookup: one round trip in the normal case. A second one happens only after
    /// the server lost its script cache (`NOSCRIPT`) or turned out to lack `EVAL_RO`.
    pub async fn read(&self, plan: &ReadPlan) -> Result<Reply, StoreError> {
        self.read_with(plan, false).await
    }

    /// [`Store::read`], with the reply also naming every key the script read beyond its
    /// KEYS ([`RawRead::reads`]; [`ReadPlan::keys`] lists them all): what the read cache
    /// needs to drop the answer when one of them changes.
    pub async fn read_reporting_keys(&self, plan: &ReadPlan) -> Result<Reply, StoreError> {
        self.read_with(plan, true).await
    }

    async fn read_with(&self, plan: &ReadPlan, report_reads: bool) -> Result<Reply, StoreError> {
        let mut attempts = 0;
        loop {
            attempts += 1;
            let cached = self.script_cached.load(Ordering::Relaxed);
            let legacy = self.legacy.load(Ordering::Relaxed);
            let mut cmd = match (cached, legacy) {
                (true, false) => redis::cmd("EVALSHA_RO"),
                (false, false) => redis::cmd("EVAL_RO"),
                (true, true) => redis::cmd("EVALSHA"),
                (false, true) => redis::cmd("EVAL"),
            };
            if cached {
                cmd.arg(&*self.sha);
            } else {
                cmd.arg(LOOKUP_SCRIPT);
            }
            let includes = plan.includes.as_ref();
            let include_keys = includes.map_or(&[][..], |i| i.reads.as_slice());
            cmd.arg(3 + 2 * include_keys.len())
                .arg(&plan.types_key)
                .arg(&plan.freshness_key)
                .arg(target_key(plan));
            for read in include_keys {
                cmd.arg(&read.types_key).arg(&read.freshness_key);
            }
            let mode = |name: &'static str| -> Cow<'static, str> {
                if report_reads {
                    Cow::Owned(format!("{name}+reads"))
                } else {
                    Cow::Borrowed(name)
                }
            };
            match &plan.target {
                Target::Row { .. } => {
                    cmd.arg(&*mode("row"));
                }
                Target::Index { row_pieces, .. } => {
                    cmd.arg(&*mode("index")).arg(0).arg(row_pieces);
                }
                Target::Relation {
                    limit, row_pieces, ..
                } => {
                    cmd.arg(&*mode("relation")).arg(*limit).arg(row_pieces);
                }
                Target::RelationRange {
                    limit,
                    range,
                    row_pieces,
                    ..
                } => {
                    cmd.arg(&*mode("range"))
                        .arg(*limit)
                        .arg(&range.max)
                        .arg(&range.min)
                        .arg(row_pieces);
                }
                Target::Aggregate { .. } => {
                    cmd.arg(&*mode("aggregate"));
                }
                Target::Search { prefix, limit, .. } => {
                    cmd.arg(&*mode("search")).arg(*limit).arg(prefix);
                }
            }
            if let Some(includes) = includes.filter(|i| !i.reads.is_empty()) {
                cmd.arg(includes.spec_json());
            }
            let mut conn = self.conn.clone();
            match cmd.query_async::<Vec<u8>>(&mut conn).await {
                Ok(json) => {
                    self.script_cached.store(true, Ordering::Relaxed);
                    return Ok(Reply(json));
                }
                Err(err)
                    if attempts < 3
                        && err.kind() == ErrorKind::Server(ServerErrorKind::NoScript) =>
                {
                    self.script_cached.store(false, Ordering::Relaxed);
                }
                Err(err) if attempts < 3 && !legacy && is_unknown_command(&err) => {
                    tracing::debug!("Redis has no EVAL_RO/EVALSHA_RO; using EVAL/EVALSHA.");
                    self.legacy.store(true, Ordering::Relaxed);
                }
                // A dropped connection (Redis restarted): a managed connection reconnects, so
                // try once more; the restarted server has lost its script cache as well.
                Err(err) if attempts < 2 && (err.is_connection_dropped() || err.is_io_error()) => {
                    tracing::debug!(error = %err, "Redis connection lost; retrying once.");
                    self.script_cached.store(false, Ordering::Relaxed);
                }
                Err(source) => {
                    return Err(StoreError::Command {
                        what: format!("lookup script on `{}`", target_key(plan)),
                        source,
                    })
                }
            }
        }
    }

    /// One hash (`HGETALL`), e.g. a source's `sink:watermark:{source}`.
    pub async fn hash(&self, key: &str) -> Result<Vec<(String, String)>, StoreError> {
        let mut conn = self.conn.clone();
        redis::cmd("HGETALL")
            .arg(key)
            .query_async(&mut conn)
            .await
            .map_err(|source| StoreError::Command {
                what: format!("HGETALL {key}"),
                source,
            })
    }

    /// `sink:freshness:{mapping}` of each mapping, in one pipelined round trip.
    pub async fn freshness_records(
        &self,
        mappings: &[&str],
    ) -> Result<Vec<HashMap<String, String>>, StoreError> {
        if mappings.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for name in mappings {
            pipe.cmd("HGETALL").arg(layout::freshness_key(name));
        }
        let mut conn = self.conn.clone();
        pipe.query_async(&mut conn)
            .await
            .map_err(|source| StoreError::Command {
                what: "HGETALL of the freshness records".into(),
                source,
            })
    }
}

/// The read of a relation call with filters or a range (`None`: neither given, the plain
/// relation read applies). `relation` is the lookup's declared relation, `row_pieces` gives
/// the child row key's pieces.
fn filtered_or_ranged(
    call: &Call<'_>,
    relation: &Relation,
    row_pieces: impl FnOnce() -> Result<Vec<String>, PlanError>,
) -> Result<Option<Target>, PlanError> {
    let args = &call.relation_args;
    if args.filters.is_empty() && args.range.is_none() {
        return Ok(None);
    }
    let mapping = call.tool.mapping;
    let tool = call.tool.lookup.tool.as_str();
    let fields: Vec<&str> = args.filters.iter().map(|(f, _)| f.as_str()).collect();
    let filtered;
    let template = if fields.is_empty() {
        &relation.key
    } else {
        let name = layout::filtered_relation_name(&relation.name, &fields);
        filtered = mapping
            .relation(&name)
            .ok_or_else(|| PlanError::UnknownRelation {
                tool: tool.to_owned(),
                mapping: mapping.name.clone(),
                relation: name.clone(),
            })?;
        &filtered.key
    };
    let key = template
        .render(|field| {
            Some(
                args.filters
                    .iter()
                    .find(|(f, _)| f == field)
                    .map_or(call.value.as_str(), |(_, v)| v.as_str()),
            )
        })
        .unwrap_or_default();
    let limit = call.limit.unwrap_or(DEFAULT_RELATION_LIMIT);
    let row_pieces = row_pieces()?;
    Ok(Some(match &args.range {
        None => Target::Relation {
            key,
            limit,
            row_pieces,
        },
        Some(range) => Target::RelationRange {
            key,
            limit,
            range: range.clone(),
            row_pieces,
        },
    }))
}

fn target_key(plan: &ReadPlan) -> &str {
    match &plan.target {
        Target::Row { key }
        | Target::Index { key, .. }
        | Target::Relation { key, .. }
        | Target::RelationRange { key, .. }
        | Target::Aggregate { key }
        | Target::Search { key, .. } => key,
    }
}

fn is_unknown_command(err: &RedisError) -> bool {
    err.kind() == ErrorKind::Server(ServerErrorKind::ResponseError)
        && err
            .detail()
            .is_some_and(|d| d.to_ascii_lowercase().contains("unknown command"))
}

impl Reply {
    /// Reads the script's JSON text.
    pub fn parse<'a>(&'a self) -> Result<RawRead<'a>, StoreError> {
        let Wire(types, freshness, rows, included, reads) = serde_json::from_slice(&self.0)
            .map_err(|e| StoreError::Malformed(format!("lookup reply: {e}")))?;
        let rows_of = |rows: LuaArray<LuaArray<Text<'a>>>, what: &str| {
            rows.0
                .into_iter()
                .map(|row| pairs(row, what))
                .collect::<Result<Vec<_>, _>>()
        };
        Ok(RawRead {
            types: pairs(types, "sink:types hash")?,
            freshness: pairs(freshness, "sink:freshness hash")?,
            rows: rows_of(rows, "row hash")?,
            included: included
                .0
                .into_iter()
                .map(|(types, freshness, rows)| {
                    Ok(RawInclude {
                        types: pairs(types, "included sink:types hash")?,
                        freshness: pairs(freshness, "included freshness hash")?,
                        rows: rows_of(rows, "included row hash")?,
                    })
                })
                .collect::<Result<_, StoreError>>()?,
            reads: reads.0.into_iter().map(|key| key.0).collect(),
        })
    }
}

/// One include's `[types, freshness, rows]` as the script writes it.
type WireInclude<'a> = (
    LuaArray<Text<'a>>,
    LuaArray<Text<'a>>,
    LuaArray<LuaArray<Text<'a>>>,
);

/// `[types, freshness, rows]`, or `[types, freshness, rows, includes]` when the plan has
/// includes, then the keys read when asked for them, as the script writes it.
struct Wire<'a>(
    LuaArray<Text<'a>>,
    LuaArray<Text<'a>>,
    LuaArray<LuaArray<Text<'a>>>,
    LuaArray<WireInclude<'a>>,
    LuaArray<Text<'a>>,
);

impl<'de> Deserialize<'de> for Wire<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct WireVisitor;
        impl<'de> Visitor<'de> for WireVisitor {
            type Value = Wire<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("[types, freshness, rows, includes?, reads?]")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let missing = |n| de::Error::invalid_length(n, &self);
                let types = seq.next_element()?.ok_or_else(|| missing(0))?;
                let freshness = seq.next_element()?.ok_or_else(|| missing(1))?;
                let rows = seq.next_element()?.ok_or_else(|| missing(2))?;
                let included = seq.next_element()?.unwrap_or(LuaArray(Vec::new()));
                let reads = seq.next_element()?.unwrap_or(LuaArray(Vec::new()));
                Ok(Wire(types, freshness, rows, included, reads))
            }
        }
        deserializer.deserialize_seq(WireVisitor)
    }
}

fn pairs<'a>(flat: LuaArray<Text<'a>>, what: &str) -> Result<Pairs<'a>, StoreError> {
    if !flat.0.len().is_multiple_of(2) {
        return Err(StoreError::Malformed(format!(
            "{what}: odd number of field/value items"
        )));
    }
    let mut out = Vec::with_capacity(flat.0.len() / 2);
    let mut iter = flat.0.into_iter();
    while let (Some(field), Some(value)) = (iter.next(), iter.next()) {
        out.push((field.0, value.0));
    }
    Ok(out)
}

/// A JSON array as Lua's cjson writes it: an empty Lua table comes out as `{}`.
struct LuaArray<T>(Vec<T>);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for LuaArray<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ArrayVisitor<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for ArrayVisitor<T> {
            type Value = LuaArray<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an array (or `{}` for an empty one)")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0));
                while let Some(item) = seq.next_element()? {
                    out.push(item);
                }
                Ok(LuaArray(out))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                match map.next_key::<IgnoredAny>()? {
                    None => Ok(LuaArray(Vec::new())),
                    Some(_) => Err(de::Error::invalid_type(de::Unexpected::Map, &self)),
                }
            }
        }
        deserializer.deserialize_any(ArrayVisitor(PhantomData))
    }
}

/// A JSON string, borrowed from the reply when it holds no escapes.
struct Text<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Text<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TextVisitor;
        impl<'de> Visitor<'de> for TextVisitor {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(v)))
            }
        }
        deserializer.deserialize_str(TextVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_is_parsed() {
        let pair = |a: &'static str, b: &'static str| (Cow::from(a), Cow::from(b));
        let reply = Reply(br#"[["id","int"],{},[["id","7","note","a \"quote\""]]]"#.to_vec());
        let raw = reply.parse().unwrap();
        assert_eq!(raw.types, vec![pair("id", "int")]);
        assert!(raw.freshness.is_empty());
        assert_eq!(
            raw.rows,
            vec![vec![pair("id", "7"), pair("note", "a \"quote\"")]]
        );
        assert!(raw.included.is_empty());
        // With includes: a fourth element, one [types, freshness, rows] per include.
        let reply = Reply(br#"[{},{},{},[[["id","int"],{},[["id","9"]]],[{},{},{}]]]"#.to_vec());
        let raw = reply.parse().unwrap();
        assert!(raw.rows.is_empty());
        assert_eq!(raw.included.len(), 2);
        assert_eq!(raw.included[0].types, vec![pair("id", "int")]);
        assert_eq!(raw.included[0].rows, vec![vec![pair("id", "9")]]);
        assert_eq!(raw.included[1], RawInclude::default());
        assert!(Reply(br#"[{},{},{},[[{},{}]]]"#.to_vec()).parse().is_err());
        assert!(Reply(b"[]".to_vec()).parse().is_err());
        assert!(Reply(br#"[{"a":"b"},{},{}]"#.to_vec()).parse().is_err());
        assert!(Reply(br#"[["odd"],{},{}]"#.to_vec()).parse().is_err());
    }
}
