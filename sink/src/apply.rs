//! Write plans -> Redis: atomic, idempotent Lua, several changes per script call, a batch
//! of changes sent as one pipeline of `EVALSHA` calls on one connection.
//!
//! The script implements ARCHITECTURE.md's "Change semantics": it reads what the sink stored
//! for the row (never `before`), guards by source position through `sink:rows:{mapping}`
//! (a stored position >= the incoming one makes the change a no-op), writes the hash,
//! releases old unique-index entries only if they still name this row and claims new ones
//! unless `sink:index:{mapping}:{index}` records a later position, moves relation members
//! between parents, and records freshness and the partition offset. Index entries and
//! relation members hold the row's primary key text: the values of the row key template's
//! fields, joined by `:` when there are several (`"1"` for `customer:{id}`).
//!
//! # Cost
//! One script per configuration ([`script`]): `apply/change.lua` after a generated table of
//! the mappings' static part (key names, template fields, pre-split templates), so a change
//! only sends its own data. One `EVALSHA` applies a *chunk* of up to [`DEFAULT_CHUNK`]
//! consecutive changes of the batch, one after another, each completely before the next,
//! and records freshness (one server `TIME`) and the partitions' offsets once, at the end of
//! the same call. A batch is still one pipeline; per-call overhead (script lookup, argument
//! conversion, bookkeeping commands) is paid once per chunk instead of once per change.
//!
//! A database that only this process writes (the rebuild's staging database) can skip the
//! script: [`Applier::owning`] keeps the bookkeeping in memory and decides each change in
//! Rust exactly as the script does (`apply/owned.rs`), sending only the resulting writes.
//!
//! # Failures
//! Every change in a chunk is atomic by itself: it makes all its reads (and everything that
//! could fail with `WRONGTYPE`) before its first write, so a failing change leaves nothing of
//! itself behind. The script catches its error, puts it in the chunk's reply at the change's
//! place, and goes on with the next change, exactly as a pipeline of one script per change
//! did; its offset is not recorded by the chunk. [`Applier::apply_batch`] reports the first
//! failing change with its topic, partition and offset ([`ApplyError::Change`]); resending
//! the batch is harmless. An error of the whole call (`NOSCRIPT`, `BUSY`, a bookkeeping key
//! of the wrong type) is reported at the chunk's first change.
//!
//! The script touches keys it does not declare, so the sink needs a standalone Redis (not
//! Redis Cluster). A batch is not a transaction: every change in it is atomic by itself (a
//! chunk is even atomic as a whole), and the pipeline keeps their order, which is what
//! per-partition ordering needs.
//!
//! # Limits of the contract
//! - A delete removes the row from `sink:rows`, so nothing remembers its position: when a
//!   redelivered suffix starts before a row's delete, the row's older upserts re-create it
//!   until the redelivered delete removes it again. The end state is the same (the
//!   `applied_count`/`applied_at_ms` counters aside); the row is briefly visible meanwhile.
//! - A truncate deletes the rows stored before its source position; rows that a later
//!   change (from another partition) already wrote stay.
//! - With `ttl_seconds`, an expired row's index entries and relation memberships stay until
//!   the row changes again (the stored values they were rendered from are gone).
//! - Index ownership follows source positions, which matches PostgreSQL's immediate unique
//!   constraints; two rows swapping values under a deferred constraint may leave one
//!   entry unset.

mod args;
mod error;
mod lease;
mod owned;
mod owned_writer;
mod script;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use deadpool_redis::Pool;
use mapping::plan::Plan;
use mapping::{layout, ColumnType, Config, Mapping};
use redis::Value;

use args::MappingArgs;
pub use error::ApplyError;
pub use lease::DEFAULT_LEASE_TTL;
pub use owned::LoadError;

/// Changes per script call unless [`Applier::with_chunk_size`] says otherwise.
pub const DEFAULT_CHUNK: usize = 128;

/// Arguments per script call beyond which a chunk ends early (big rows).
const MAX_CHUNK_ARGS: usize = 16_384;

/// Sets field ARGV[1] (`caught_up_at_ms`) of every hash in KEYS (`sink:freshness:{mapping}`)
/// to server time.
const CAUGHT_UP_SCRIPT: &str = r"
local now = redis.call('TIME')
local ms = now[1] .. string.format('%03d', math.floor(tonumber(now[2]) / 1000))
for _, key in ipairs(KEYS) do
  redis.call('HSET', key, ARGV[1], ms)
end
return ms
";

/// One planned change with where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedChange {
    /// Index into `config.mappings`.
    pub mapping: usize,
    /// The Redis work.
    pub plan: Plan,
    /// Source commit time (`source.ts_ms`), recorded as freshness.
    pub source_ts_ms: Option<i64>,
    /// Kafka topic.
    pub topic: Arc<str>,
    /// Kafka partition.
    pub partition: i32,
    /// Kafka offset.
    pub offset: i64,
}

/// What a batch did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchOutcome {
    /// Changes that modified the read model.
    pub applied: usize,
    /// Changes that were no-ops: replays, older than what is stored, tombstones or deletes of
    /// absent rows, truncates of empty mappings.
    pub skipped: usize,
}

/// Applies planned changes to Redis; cheap to share (`&self` everywhere).
pub struct Applier {
    pool: Pool,
    mappings: Vec<MappingArgs>,
    /// `config.mappings[i].name`, for the bookkeeping keys written from Rust.
    names: Vec<String>,
    /// The config's mappings, for `stored_types`.
    config: Vec<Mapping>,
    /// The generated apply script and its SHA1.
    script: String,
    sha: String,
    /// Changes per script call.
    chunk: usize,
    caught_up: redis::Script,
    /// Whether this applier has loaded the script since start (NOSCRIPT reloads it anyway).
    loaded: AtomicBool,
    /// For a database only this applier writes ([`Applier::owning`]): the bookkeeping, held
    /// here instead of read by the script.
    owned: Option<owned_writer::OwnedWriter>,
}

impl Applier {
    /// Generates the apply script of `config` (its mappings' static part baked in).
    pub fn new(pool: Pool, config: &Config) -> Applier {
        let script = script::generate(&config.mappings);
        Applier {
            pool,
            mappings: config
                .mappings
                .iter()
                .enumerate()
                .map(|(i, m)| MappingArgs::new(i, m))
                .collect(),
            names: config.mappings.iter().map(|m| m.name.clone()).collect(),
            sha: redis::Script::new(&script).get_hash().to_owned(),
            script,
            chunk: DEFAULT_CHUNK,
            caught_up: redis::Script::new(CAUGHT_UP_SCRIPT),
            loaded: AtomicBool::new(false),
            config: config.mappings.clone(),
            owned: None,
        }
    }

    /// An applier for an empty database that nobody else writes or reads until it is done
    /// (the rebuild's staging database): it keeps the bookkeeping in memory and decides
    /// every change as the script would, sending only the resulting writes (see
    /// `apply/owned.rs`). Configurations it does not support (`ttl_seconds`) get the
    /// script, as [`Applier::new`]. Call it within a Tokio runtime (it starts the task that
    /// writes the batches in order).
    pub fn owning(pool: Pool, config: &Config) -> Applier {
        let mut applier = Applier::new(pool, config);
        if owned::OwnedState::supports(&config.mappings) {
            let state = owned::OwnedState::new(&config.mappings);
            applier.owned = Some(owned_writer::OwnedWriter::start(
                state,
                applier.pool.clone(),
                None,
            ));
        }
        applier
    }

    /// An applier for the live database whose mappings this sink alone writes: it takes
    /// the writer's lease (`sink:writer:{mapping}` of each mapping), waiting while another
    /// exclusive sink holds one, loads the
    /// bookkeeping from Redis, and from then on decides every change in memory as
    /// [`Applier::owning`] does, keeping the lease with every batch. Readers see each batch
    /// at once (one `MULTI`/`EXEC`). A rebuild swapping the database in, or a lapsed lease,
    /// makes it load the bookkeeping again; another sink taking the lease makes every later
    /// batch fail with [`ApplyError::LeaseLost`]. Configurations the owned path does not
    /// support (`ttl_seconds`) get the shared script applier, as [`Applier::new`].
    ///
    /// `None` if `shutdown` is cancelled while waiting for the lease.
    pub async fn exclusive(
        pool: Pool,
        config: &Config,
        lease_ttl: std::time::Duration,
        shutdown: &tokio_util::sync::CancellationToken,
    ) -> Result<Option<Applier>, ApplyError> {
        let mut applier = Applier::new(pool, config);
        if !owned::OwnedState::supports(&config.mappings) {
            tracing::warn!("A mapping sets ttl_seconds, which the exclusive writer does not support: applying through the shared change script instead.");
            return Ok(Some(applier));
        }
        let exclusive = owned_writer::Exclusive {
            lease: lease::Lease::new(config.mappings.iter().map(|m| m.name.as_str()), lease_ttl),
            mappings: config.mappings.clone(),
        };
        let mut conn = applier.pool.get().await.map_err(ApplyError::Pool)?;
        let mut waiting = false;
        let mut started = std::time::Instant::now();
        let state = loop {
            match owned_writer::load_exclusive(&mut conn, &exclusive).await {
                Ok(state) => break state,
                Err(ApplyError::LeaseLost { holder }) => {
                    if !waiting {
                        tracing::info!(%holder, "Another exclusive sink holds the redis database; standing by until its lease lapses.");
                        waiting = true;
                    }
                    tokio::select! {
                        () = shutdown.cancelled() => return Ok(None),
                        () = tokio::time::sleep(exclusive.lease.renew_every()) => {}
                    }
                    started = std::time::Instant::now();
                }
                Err(e) => {
                    // Best effort: a standby need not wait for the lease to lapse.
                    let _ = exclusive.lease.release(&mut conn).await;
                    return Err(e);
                }
            }
        };
        drop(conn);
        let (rows, index_keys) = state.size();
        tracing::info!(
            writer = exclusive.lease.id(),
            rows,
            index_keys,
            load_ms = started.elapsed().as_millis(),
            "Holding the exclusive lease on the redis database; bookkeeping loaded."
        );
        applier.owned = Some(owned_writer::OwnedWriter::start(
            state,
            applier.pool.clone(),
            Some(exclusive),
        ));
        Ok(Some(applier))
    }

    /// An exclusive applier gives its lease up (others may write from now on); any other
    /// applier does nothing. Call it after the last batch.
    pub async fn release(&self) -> Result<(), ApplyError> {
        match &self.owned {
            Some(owned) => owned.release().await,
            None => Ok(()),
        }
    }

    /// Whether this applier keeps the bookkeeping itself ([`Applier::owning`]).
    pub fn is_owning(&self) -> bool {
        self.owned.is_some()
    }

    /// Applies at most `changes` changes per script call (at least 1).
    #[must_use]
    pub fn with_chunk_size(mut self, changes: usize) -> Applier {
        self.chunk = changes.max(1);
        self
    }

    /// The generated Lua script (`apply/change.lua` after the mappings' static part).
    pub fn script(&self) -> &str {
        &self.script
    }

    /// SHA1 of [`Applier::script`], as `EVALSHA` takes it.
    pub fn script_sha(&self) -> &str {
        &self.sha
    }

    /// `batch` cut into the chunks [`Applier::apply_batch`] sends as one script call each:
    /// at most the chunk size, fewer when the arguments would exceed 16,384.
    pub fn chunks<'a>(&self, batch: &'a [PlannedChange]) -> Vec<&'a [PlannedChange]> {
        let mut out = Vec::with_capacity(batch.len() / self.chunk + 1);
        let (mut start, mut args) = (0, 0);
        for (i, change) in batch.iter().enumerate() {
            let n = self
                .mappings
                .get(change.mapping)
                .map_or(0, |m| m.arg_count(change));
            if i > start && (i - start == self.chunk || args + n > MAX_CHUNK_ARGS) {
                out.push(&batch[start..i]);
                (start, args) = (i, 0);
            }
            args += n;
        }
        if start < batch.len() {
            out.push(&batch[start..]);
        }
        out
    }

    /// The complete `EVALSHA` command applying `chunk` (one of [`Applier::chunks`]), as
    /// [`Applier::apply_batch`] sends it; its reply holds one entry per change: 1 applied,
    /// 0 no-op, or an error. For benchmarks that want Redis's own ceiling
    /// ([`Applier::load_script`] first).
    pub fn chunk_command(&self, chunk: &[PlannedChange]) -> Result<redis::Cmd, ApplyError> {
        args::chunk_command(&self.sha, &self.mappings, chunk)
    }

    /// The `EVALSHA` command applying `change` alone (a chunk of one, see
    /// [`Applier::chunk_command`]).
    pub fn command(&self, change: &PlannedChange) -> Result<redis::Cmd, ApplyError> {
        self.chunk_command(std::slice::from_ref(change))
    }

    /// Loads [`Applier::script`] into the script cache (`SCRIPT LOAD`).
    pub async fn load_script(&self) -> Result<(), ApplyError> {
        let mut conn = self.pool.get().await.map_err(ApplyError::Pool)?;
        self.load_on(&mut conn, 0).await
    }

    async fn load_on(
        &self,
        conn: &mut deadpool_redis::Connection,
        changes: usize,
    ) -> Result<(), ApplyError> {
        let sha: String = redis::cmd("SCRIPT")
            .arg("LOAD")
            .arg(&self.script)
            .query_async(conn)
            .await
            .map_err(|source| ApplyError::Redis {
                operation: "SCRIPT LOAD",
                changes,
                source,
            })?;
        debug_assert_eq!(sha, self.sha);
        self.loaded.store(true, Ordering::Relaxed);
        Ok(())
    }

    /// Applies `batch` in order as one pipeline of chunk scripts on one connection.
    ///
    /// On `NOSCRIPT` (Redis restarted or flushed its scripts) the script is loaded and the
    /// whole batch sent again, which is harmless because every change is idempotent. On
    /// [`ApplyError::Change`], the other changes of the batch were executed and the failing
    /// one left nothing behind; resending the batch is harmless too.
    pub async fn apply_batch(&self, batch: &[PlannedChange]) -> Result<BatchOutcome, ApplyError> {
        if batch.is_empty() {
            return Ok(BatchOutcome::default());
        }
        if let Some(owned) = &self.owned {
            return owned.apply(batch).await;
        }
        let chunks = self.chunks(batch);
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        for chunk in &chunks {
            pipe.add_command(self.chunk_command(chunk)?);
        }
        let mut conn = self.pool.get().await.map_err(ApplyError::Pool)?;
        if !self.loaded.load(Ordering::Relaxed) {
            self.load_on(&mut conn, batch.len()).await?;
        }
        let mut replies = self.send(&mut conn, &pipe, batch.len()).await?;
        // A script flush between our load and the batch: load again, send again (twice at
        // most; a third NOSCRIPT is reported as the change's error).
        for _ in 0..2 {
            if !replies.iter().any(is_noscript) {
                break;
            }
            self.load_on(&mut conn, batch.len()).await?;
            replies = self.send(&mut conn, &pipe, batch.len()).await?;
        }
        if replies.len() != chunks.len() {
            return Err(ApplyError::ReplyCount {
                changes: batch.len(),
                replies: replies.len(),
            });
        }
        outcome(&chunks, replies)
    }

    async fn send(
        &self,
        conn: &mut deadpool_redis::Connection,
        pipe: &redis::Pipeline,
        changes: usize,
    ) -> Result<Vec<Value>, ApplyError> {
        pipe.query_async(conn)
            .await
            .map_err(|source| ApplyError::Redis {
                operation: "pipeline",
                changes,
                source,
            })
    }

    /// Records the stored types of a mapping (`HSET sink:types:{mapping}`), from the columns
    /// of its current value schema (selection and renames applied here). Call it when the
    /// value schema id of a mapping's records changes.
    pub async fn record_column_types(
        &self,
        mapping: usize,
        types: &[(String, ColumnType)],
    ) -> Result<(), ApplyError> {
        let (Some(m), Some(name)) = (self.config.get(mapping), self.names.get(mapping)) else {
            return Err(self.bad_mapping(mapping));
        };
        let stored = m.stored_types(types);
        if stored.is_empty() {
            return Ok(());
        }
        let mut cmd = redis::cmd("HSET");
        cmd.arg(layout::types_key(name));
        for (field, ty) in &stored {
            cmd.arg(field).arg(ty.as_str());
        }
        let mut conn = self.pool.get().await.map_err(ApplyError::Pool)?;
        cmd.query_async::<()>(&mut conn)
            .await
            .map_err(|source| ApplyError::Redis {
                operation: "HSET sink:types",
                changes: 0,
                source,
            })
    }

    /// Sets `caught_up_at_ms` (Redis server time) in `sink:freshness:{mapping}` of each
    /// mapping: the sink has seen the end of the log of their partitions.
    pub async fn record_caught_up(&self, mappings: &[usize]) -> Result<(), ApplyError> {
        if mappings.is_empty() {
            return Ok(());
        }
        let mut invocation = self.caught_up.prepare_invoke();
        invocation.arg(layout::freshness::CAUGHT_UP_AT_MS);
        for &m in mappings {
            let name = self.names.get(m).ok_or_else(|| self.bad_mapping(m))?;
            invocation.key(layout::freshness_key(name));
        }
        let mut conn = self.pool.get().await.map_err(ApplyError::Pool)?;
        invocation
            .invoke_async::<String>(&mut conn)
            .await
            .map(drop)
            .map_err(|source| ApplyError::Redis {
                operation: "caught-up script",
                changes: 0,
                source,
            })
    }

    fn bad_mapping(&self, mapping: usize) -> ApplyError {
        ApplyError::Invalid {
            topic: Arc::from(""),
            partition: -1,
            offset: -1,
            reason: format!(
                "mapping number {mapping} out of range ({} mappings)",
                self.names.len()
            ),
        }
    }
}

fn is_noscript(v: &Value) -> bool {
    matches!(v, Value::ServerError(e) if e.code() == "NOSCRIPT")
}

/// Counts the chunks' per-change replies; the first error wins, a retriable one over the
/// others. An error answering a whole chunk is the error of its first change.
fn outcome(chunks: &[&[PlannedChange]], replies: Vec<Value>) -> Result<BatchOutcome, ApplyError> {
    let mut out = BatchOutcome::default();
    let mut failure: Option<ApplyError> = None;
    let note = |failure: &mut Option<ApplyError>, e: ApplyError| {
        let replace = match &*failure {
            None => true,
            Some(f) => e.is_retriable() && !f.is_retriable(),
        };
        if replace {
            *failure = Some(e);
        }
    };
    let mut position = 0;
    for (chunk, reply) in chunks.iter().zip(replies) {
        let Some(first) = chunk.first() else { continue };
        match reply {
            Value::Array(items) if items.len() == chunk.len() => {
                for (offset, (change, item)) in chunk.iter().zip(items).enumerate() {
                    match item {
                        Value::Int(1) => out.applied += 1,
                        Value::Int(0) => out.skipped += 1,
                        Value::ServerError(source) => {
                            note(
                                &mut failure,
                                change_error(change, position + offset, source),
                            );
                        }
                        other => note(&mut failure, reply_error(change, &other)),
                    }
                }
            }
            Value::ServerError(source) => note(&mut failure, change_error(first, position, source)),
            other => note(&mut failure, reply_error(first, &other)),
        }
        position += chunk.len();
    }
    match failure {
        Some(e) => Err(e),
        None => Ok(out),
    }
}

/// The error of `change` (position `position` of its batch) that Redis answered `source`.
fn change_error(change: &PlannedChange, position: usize, source: redis::ServerError) -> ApplyError {
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
        retriable: error::is_transient_code(source.code()),
        source,
    }
}

/// An unexpected reply about `change`.
fn reply_error(change: &PlannedChange, reply: &Value) -> ApplyError {
    ApplyError::Reply {
        topic: change.topic.clone(),
        partition: change.partition,
        offset: change.offset,
        reply: format!("{reply:?}"),
    }
}
