//! Why applying a batch failed, and whether trying again can help.

use std::sync::Arc;

use super::PlannedChange;

/// An error applying changes to Redis.
///
/// [`ApplyError::is_retriable`] separates transient trouble (connection, timeouts, a server
/// that is loading, out of memory: back off and resend the batch, which the scripts make
/// harmless) from a change Redis rejects for good (e.g. a row key that holds another type:
/// dead-letter the change named by [`ApplyError::location`] and move on).
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// No connection could be taken from the pool.
    #[error("redis connection pool")]
    Pool(#[source] deadpool_redis::PoolError),
    /// A command for the whole batch (or the script load) failed without a reply per change:
    /// I/O, protocol or timeout.
    #[error("redis {operation} for a batch of {changes} changes")]
    Redis {
        /// What was being done (`pipeline`, `SCRIPT LOAD`, ...).
        operation: &'static str,
        /// How many changes the batch held.
        changes: usize,
        /// The client's error.
        #[source]
        source: redis::RedisError,
    },
    /// Redis answered one change of the batch with an error. The script makes all its reads
    /// before its first write, so the change left nothing behind; the other changes of the
    /// pipeline were executed.
    #[error("change at {topic}/{partition} offset {offset} (batch position {position})")]
    Change {
        /// Kafka topic of the change.
        topic: Arc<str>,
        /// Kafka partition.
        partition: i32,
        /// Kafka offset.
        offset: i64,
        /// Index of the change in the batch.
        position: usize,
        /// Whether the server reported a transient condition (`LOADING`, `BUSY`, `OOM`, ...).
        retriable: bool,
        /// The server's error.
        #[source]
        source: redis::ServerError,
    },
    /// The change cannot be turned into a script call (a bug in the caller, or a value the
    /// script cannot order by).
    #[error("change at {topic}/{partition} offset {offset}: {reason}")]
    Invalid {
        /// Kafka topic of the change.
        topic: Arc<str>,
        /// Kafka partition.
        partition: i32,
        /// Kafka offset.
        offset: i64,
        /// What is wrong.
        reason: String,
    },
    /// The pipeline's reply did not hold one reply per change (a protocol or connection
    /// problem: resend the batch).
    #[error("{replies} replies to a pipeline of {changes} changes")]
    ReplyCount {
        /// Changes sent.
        changes: usize,
        /// Replies received.
        replies: usize,
    },
    /// The owning applier did not send this batch: a batch decided before it failed, and
    /// both were undone. Send it again.
    #[error(
        "a batch of {changes} changes was not sent because an earlier batch failed; send it again"
    )]
    Resend {
        /// How many changes the batch held.
        changes: usize,
    },
    /// The script's reply was not the 0/1 it always returns.
    #[error("unexpected reply {reply} to change at {topic}/{partition} offset {offset}")]
    Reply {
        /// Kafka topic of the change.
        topic: Arc<str>,
        /// Kafka partition.
        partition: i32,
        /// Kafka offset.
        offset: i64,
        /// The reply, debug-formatted.
        reply: String,
    },
    /// The change script refused to run: an exclusive sink holds a mapping (its
    /// `sink:writer:{mapping}` key). Stop that sink, or run this one with `--writer
    /// exclusive` as its standby.
    #[error("an exclusive sink holds this mapping in redis ({holder}): a shared sink must not write behind it; stop that sink or run this one with --writer exclusive")]
    Excluded {
        /// The lease key and the holder's writer id.
        holder: String,
    },
    /// This exclusive sink's lease was taken by another sink (this one stalled for longer
    /// than the lease time): it must not write any more.
    #[error("another sink ({holder}) holds the exclusive lease on this sink's mappings in redis (keys `sink:writer:{{mapping}}`); this sink does not write")]
    LeaseLost {
        /// The new holder's writer id.
        holder: String,
    },
    /// `--writer auto` did not take the exclusive lease: another sink announced itself as a
    /// shared writer of these mappings (`sink:shared:{mapping}`), and the lease would shut
    /// it out. The sink writes through the change script beside it instead.
    #[error("sink `{sink}` writes these mappings through the change script (announced in `sink:shared:{{mapping}}`); taking the exclusive lease would shut it out")]
    SharedSinks {
        /// The announcing sink's writer id.
        sink: String,
    },
    /// A command of an owning applier's transaction failed (another program wrote a mapped
    /// key with another type): the rest of the transaction was executed, so the batch is
    /// partly applied. Fix the key, then `sink rebuild`.
    #[error("redis refused `{command} ...` in a batch's transaction: another program wrote this key with another type; the rest of the batch was applied, so fix the key and run `sink rebuild`")]
    ForeignKey {
        /// The command's name and key.
        command: String,
        /// The key alone, where the command has one.
        key: Option<String>,
        /// What Redis answered.
        #[source]
        source: redis::ServerError,
    },
    /// The exclusive writer's bookkeeping takes more memory than `--max-writer-memory`
    /// allows: at start, or grown past it by the last batch (it takes no further batch).
    #[error(transparent)]
    WriterMemory(super::owned::MemoryBound),
    /// The exclusive sink could not load its bookkeeping from Redis.
    #[error("loading the exclusive sink's bookkeeping")]
    Load(#[source] super::LoadError),
    /// `--writer exclusive` was asked for mappings with `ttl_seconds`: their rows expire
    /// behind the writer's back, which bookkeeping held in memory cannot follow.
    #[error(
        "the exclusive writer does not support ttl_seconds, which {} {} set{}; run the sink with --writer shared",
        if .mappings.len() == 1 { "mapping" } else { "mappings" },
        .mappings.iter().map(|m| format!("`{m}`")).collect::<Vec<_>>().join(", "),
        if .mappings.len() == 1 { "s" } else { "" },
    )]
    ExclusiveTtl {
        /// The mappings that set `ttl_seconds`.
        mappings: Vec<String>,
    },
    /// A guarded writer refused a batch: a partition's self-healing marker (its field of
    /// `sink:offsets:run`) is gone or names another Redis server run, so Redis lost what
    /// this partition had applied. Nothing of the refused call was written. Never the
    /// change's fault (never dead-lettered), and not retriable: a later assignment may mark
    /// the partition again, and the batch resent then would land ahead of the replay. The
    /// pipeline drops it and starts again, resuming the partition from what Redis holds.
    #[error("redis lost the bookkeeping of partition `{field}` (its `sink:offsets:run` marker is {marker}); the batch is not applied: the sink resumes the partition from what redis holds")]
    BookkeepingLost {
        /// The partition's offsets field (`{topic}/{partition}`).
        field: String,
        /// What the marker holds: `unmarked`, or the run id it names.
        marker: String,
    },
    /// A guarded writer refused a batch read under an assignment of its partition that
    /// another assignment has superseded since (apply/fence.rs): the partition's marker names
    /// the current Redis server run, but not the batch's fence. Nothing of the refused call
    /// was written. Never the change's fault, and not retriable: the partition's current
    /// owner applies these records from where it starts, so the pipeline drops this batch and
    /// those of the same assignment, and goes on with the rest.
    #[error("the batch of partition `{field}` was read under an assignment that another one superseded (its `sink:offsets:run` marker is {marker}, the batch's {fence}); the batch is dropped: the partition's current owner applies it")]
    Superseded {
        /// The partition's offsets field (`{topic}/{partition}`).
        field: String,
        /// What the marker holds.
        marker: String,
        /// The marker of the assignment the batch was read under (empty: none known).
        fence: String,
    },
}

impl ApplyError {
    /// Whether resending the same batch later may succeed.
    pub fn is_retriable(&self) -> bool {
        match self {
            ApplyError::Pool(_) | ApplyError::ReplyCount { .. } | ApplyError::Resend { .. } => true,
            ApplyError::Redis { source, .. } => {
                source.is_io_error()
                    || source.is_timeout()
                    || source.is_connection_dropped()
                    || source.is_connection_refusal()
                    || source.code().is_some_and(is_transient_code)
                    || is_out_of_memory(source)
                    || !matches!(source.retry_method(), redis::RetryMethod::NoRetry)
            }
            ApplyError::Change { retriable, .. } => *retriable,
            ApplyError::Load(e) => !matches!(
                e,
                super::LoadError::Position { .. }
                    | super::LoadError::TooLarge(_)
                    | super::LoadError::Aggregate(_)
            ),
            ApplyError::Invalid { .. }
            | ApplyError::Reply { .. }
            | ApplyError::Excluded { .. }
            | ApplyError::LeaseLost { .. }
            | ApplyError::SharedSinks { .. }
            | ApplyError::ForeignKey { .. }
            | ApplyError::WriterMemory(_)
            | ApplyError::ExclusiveTtl { .. }
            | ApplyError::BookkeepingLost { .. }
            | ApplyError::Superseded { .. } => false,
        }
    }

    /// The key that holds another type than a mapping writes there ([`ApplyError::ForeignKey`]
    /// with Redis's `WRONGTYPE`): the changes of the batch that write it (as their row, or
    /// as a relation's new parent) are dead-lettered, as the change script does.
    pub fn key_of_another_type(&self) -> Option<&str> {
        match self {
            ApplyError::ForeignKey {
                key: Some(key),
                source,
                ..
            } if source.code() == "WRONGTYPE" => Some(key),
            _ => None,
        }
    }

    /// Whether Redis refused the write for lack of memory (`OOM`: `used_memory` above
    /// `maxmemory` under `noeviction`), also when it aborted a transaction for it.
    pub fn is_out_of_memory(&self) -> bool {
        match self {
            ApplyError::Change { source, .. } => source.code() == "OOM",
            ApplyError::Redis { source, .. }
            | ApplyError::Load(super::LoadError::Redis(source)) => is_out_of_memory(source),
            _ => false,
        }
    }

    /// The Kafka topic, partition and offset of the change at fault, when one change is.
    pub fn location(&self) -> Option<(&str, i32, i64)> {
        match self {
            ApplyError::Change {
                topic,
                partition,
                offset,
                ..
            }
            | ApplyError::Invalid {
                topic,
                partition,
                offset,
                ..
            }
            | ApplyError::Reply {
                topic,
                partition,
                offset,
                ..
            } => Some((topic, *partition, *offset)),
            ApplyError::Pool(_)
            | ApplyError::Redis { .. }
            | ApplyError::ReplyCount { .. }
            | ApplyError::Resend { .. }
            | ApplyError::Excluded { .. }
            | ApplyError::LeaseLost { .. }
            | ApplyError::SharedSinks { .. }
            | ApplyError::ForeignKey { .. }
            | ApplyError::Load(_)
            | ApplyError::WriterMemory(_)
            | ApplyError::ExclusiveTtl { .. }
            | ApplyError::BookkeepingLost { .. }
            | ApplyError::Superseded { .. } => None,
        }
    }

    /// The error Redis answered about `change` (position `position` of its batch).
    pub(crate) fn at_change(
        change: &PlannedChange,
        position: usize,
        source: redis::ServerError,
    ) -> ApplyError {
        if source.code() == "BOOKKEEPING" {
            let details = source.details().unwrap_or_default();
            let (field, marker) = details.split_once(' ').unwrap_or((details, ""));
            return ApplyError::BookkeepingLost {
                field: field.to_owned(),
                marker: marker.to_owned(),
            };
        }
        if source.code() == "SUPERSEDED" {
            let mut details = source.details().unwrap_or_default().splitn(3, ' ');
            let mut next = || details.next().unwrap_or_default().to_owned();
            return ApplyError::Superseded {
                field: next(),
                marker: next(),
                fence: next(),
            };
        }
        if source.code() == "EXCLUSIVE" {
            return ApplyError::Excluded {
                holder: source.details().unwrap_or_default().to_owned(),
            };
        }
        ApplyError::Change {
            topic: change.topic.clone(),
            partition: change.partition,
            offset: change.offset,
            position,
            retriable: is_transient_code(source.code()),
            source,
        }
    }

    /// An unexpected reply about `change`.
    pub(crate) fn unexpected_reply(change: &PlannedChange, reply: &redis::Value) -> ApplyError {
        ApplyError::Reply {
            topic: change.topic.clone(),
            partition: change.partition,
            offset: change.offset,
            reply: format!("{reply:?}"),
        }
    }
}

/// `OOM`, on its own or as the reason Redis discarded a transaction (`EXECABORT`).
fn is_out_of_memory(error: &redis::RedisError) -> bool {
    error.code() == Some("OOM")
        || error
            .clone()
            .into_server_errors()
            .is_some_and(|errors| errors.iter().any(|(_, e)| e.code() == "OOM"))
}

/// Server error codes that describe the server's state or configuration rather than the
/// change (dead-lettering data because Redis is full or misconfigured would lose it).
fn is_transient_code(code: &str) -> bool {
    matches!(
        code,
        "LOADING"
            | "BUSY"
            | "TRYAGAIN"
            | "MASTERDOWN"
            | "CLUSTERDOWN"
            | "READONLY"
            | "OOM"
            | "MISCONF"
            | "NOREPLICAS"
            | "NOSCRIPT"
            | "NOAUTH"
            | "NOPERM"
    )
}
