//! Redis reads. agent-cli only ever reads the keys the sink maintains (see ARCHITECTURE.md)
//! and never writes.
//!
//! Every lookup is ONE round trip: [`plan`] renders the addressed key from the lookup's
//! declared template and the validated argument, and [`Store::read`] runs `lookup.lua` as a
//! read-only script (`EVAL_RO` the first time on a connection, `EVALSHA_RO` afterwards; plain
//! `EVAL`/`EVALSHA` on servers older than Redis 7, which answer "unknown command"). The script resolves the index, reads the
//! row or the relation's newest children, and the mapping's `sink:types` and
//! `sink:freshness` hashes in the same atomic call, so a row and its freshness always agree.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use mapping::layout;
use mapping::redact_url;
use mapping::template::{KeyTemplate, TemplatePart};
use redis::aio::{
    ConnectionLike, ConnectionManager, ConnectionManagerConfig, MultiplexedConnection,
};
use redis::{ErrorKind, RedisError, ServerErrorKind, Value};

use crate::args::Call;
use crate::error::{PlanError, StoreError};

/// The lookup script (see the file for its KEYS/ARGV contract).
pub const LOOKUP_SCRIPT: &str = include_str!("lookup.lua");

/// Relation lookups without a declared `limit` parameter return this many children.
pub const DEFAULT_RELATION_LIMIT: u32 = 10;

/// How long connecting may take before Redis counts as unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long one command may take.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);

/// What one lookup reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadPlan {
    /// `sink:types:{mapping}` of the mapping whose rows are returned.
    pub types_key: String,
    /// The hash freshness comes from: `sink:freshness:{mapping}` of that mapping, or its
    /// source's watermark `sink:watermark:{source}` (the lookup sets it when the mapping has
    /// a source).
    pub freshness_key: String,
    /// The addressed key and how to get from it to rows.
    pub target: Target,
}

/// The addressed key of a lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
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
}

/// Renders the keys of a validated call, only from templates its lookup declares.
pub fn plan(call: &Call<'_>) -> Result<ReadPlan, PlanError> {
    let mapping = call.tool.mapping;
    let lookup = call.tool.lookup;
    let tool = lookup.tool.as_str();
    let target = if let Some(relation_name) = &lookup.relation {
        let relation =
            mapping
                .relation(relation_name)
                .ok_or_else(|| PlanError::UnknownRelation {
                    tool: tool.to_owned(),
                    mapping: mapping.name.clone(),
                    relation: relation_name.clone(),
                })?;
        Target::Relation {
            key: fill(&relation.key, &call.value, tool)?,
            limit: call.limit.unwrap_or(DEFAULT_RELATION_LIMIT),
            row_pieces: pieces(&mapping.key, tool, "a stored primary key")?,
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
    })
}

/// The literal text around the placeholders of a template with one distinct field
/// (`customer:{id}` -> `["customer:", ""]`).
fn pieces(
    template: &KeyTemplate,
    tool: &str,
    what: &'static str,
) -> Result<Vec<String>, PlanError> {
    if template.single_field().is_none() {
        return Err(PlanError::NotSingleField {
            tool: tool.to_owned(),
            template: template.source.clone(),
            what,
        });
    }
    let mut out = vec![String::new()];
    for part in &template.parts {
        match part {
            TemplatePart::Literal(text) => {
                if let Some(last) = out.last_mut() {
                    last.push_str(text);
                }
            }
            TemplatePart::Field(_) => out.push(String::new()),
        }
    }
    Ok(out)
}

/// The template with its (single distinct) field replaced by `value`.
fn fill(template: &KeyTemplate, value: &str, tool: &str) -> Result<String, PlanError> {
    Ok(pieces(template, tool, "the parameter")?.join(value))
}

/// A stored hash as field/value pairs, in the order Redis returned them.
pub type Pairs = Vec<(String, String)>;

/// What the lookup script returned.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RawRead {
    /// `sink:types:{mapping}` (empty if the sink has not recorded types yet).
    pub types: Pairs,
    /// The hash of [`ReadPlan::freshness_key`] (empty if the sink has not recorded it yet).
    pub freshness: Pairs,
    /// The rows found: none, one, or a relation's children newest first.
    pub rows: Vec<Pairs>,
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

impl Store<MultiplexedConnection> {
    /// Connects (with a timeout, so an unreachable server fails fast).
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let shown = redact_url(url);
        let client = redis::Client::open(url).map_err(|source| StoreError::Connect {
            url: shown.clone(),
            source,
        })?;
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
    /// Connects with a connection that re-establishes itself after Redis restarts or the
    /// network drops (for the long-running MCP server). The first connection must succeed.
    pub async fn connect_managed(url: &str) -> Result<Self, StoreError> {
        let shown = redact_url(url);
        let client = redis::Client::open(url).map_err(|source| StoreError::Connect {
            url: shown.clone(),
            source,
        })?;
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
    pub async fn read(&self, plan: &ReadPlan) -> Result<RawRead, StoreError> {
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
            cmd.arg(3).arg(&plan.types_key).arg(&plan.freshness_key);
            match &plan.target {
                Target::Row { key } => {
                    cmd.arg(key).arg("row");
                }
                Target::Index { key, row_pieces } => {
                    cmd.arg(key).arg("index").arg(0).arg(row_pieces);
                }
                Target::Relation {
                    key,
                    limit,
                    row_pieces,
                } => {
                    cmd.arg(key).arg("relation").arg(*limit).arg(row_pieces);
                }
            }
            let mut conn = self.conn.clone();
            match cmd.query_async::<Value>(&mut conn).await {
                Ok(value) => {
                    self.script_cached.store(true, Ordering::Relaxed);
                    return parse_reply(value);
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
    pub async fn hash(&self, key: &str) -> Result<Pairs, StoreError> {
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

fn target_key(plan: &ReadPlan) -> &str {
    match &plan.target {
        Target::Row { key } | Target::Index { key, .. } | Target::Relation { key, .. } => key,
    }
}

fn is_unknown_command(err: &RedisError) -> bool {
    err.kind() == ErrorKind::Server(ServerErrorKind::ResponseError)
        && err
            .detail()
            .is_some_and(|d| d.to_ascii_lowercase().contains("unknown command"))
}

fn parse_reply(value: Value) -> Result<RawRead, StoreError> {
    let mut parts = array(value, "lookup reply")?.into_iter();
    let (Some(types), Some(freshness), Some(rows), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(StoreError::Malformed(
            "lookup reply does not have 3 parts".into(),
        ));
    };
    Ok(RawRead {
        types: pairs(types, "sink:types hash")?,
        freshness: pairs(freshness, "sink:freshness hash")?,
        rows: array(rows, "rows")?
            .into_iter()
            .map(|r| pairs(r, "row hash"))
            .collect::<Result<_, _>>()?,
    })
}

fn array(value: Value, what: &str) -> Result<Vec<Value>, StoreError> {
    match value {
        Value::Array(items) | Value::Set(items) => Ok(items),
        other => Err(StoreError::Malformed(format!(
            "{what}: expected an array, got {other:?}"
        ))),
    }
}

fn text(value: Value, what: &str) -> Result<String, StoreError> {
    match value {
        Value::BulkString(bytes) => String::from_utf8(bytes)
            .map_err(|_| StoreError::Malformed(format!("{what}: not UTF-8"))),
        Value::SimpleString(s) => Ok(s),
        Value::Int(n) => Ok(n.to_string()),
        other => Err(StoreError::Malformed(format!(
            "{what}: expected a string, got {other:?}"
        ))),
    }
}

fn pairs(value: Value, what: &str) -> Result<Pairs, StoreError> {
    let items = array(value, what)?;
    if items.len() % 2 != 0 {
        return Err(StoreError::Malformed(format!(
            "{what}: odd number of field/value items"
        )));
    }
    let mut out = Vec::with_capacity(items.len() / 2);
    let mut iter = items.into_iter();
    while let (Some(field), Some(value)) = (iter.next(), iter.next()) {
        out.push((text(field, what)?, text(value, what)?));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_is_parsed() {
        let bulk = |s: &str| Value::BulkString(s.as_bytes().to_vec());
        let reply = Value::Array(vec![
            Value::Array(vec![bulk("id"), bulk("int")]),
            Value::Array(vec![]),
            Value::Array(vec![Value::Array(vec![bulk("id"), bulk("7")])]),
        ]);
        let raw = parse_reply(reply).unwrap();
        assert_eq!(raw.types, vec![("id".to_owned(), "int".to_owned())]);
        assert!(raw.freshness.is_empty());
        assert_eq!(raw.rows, vec![vec![("id".to_owned(), "7".to_owned())]]);
        assert!(parse_reply(Value::Array(vec![])).is_err());
    }
}
