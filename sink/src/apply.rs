//! Write plans -> Redis, through one of two writers that leave the same Redis state
//! (ARCHITECTURE.md, "Change semantics"):
//!
//! - [`Applier::Script`] (`apply/script/`): any number of sinks may share the database. Each
//!   batch is one pipeline of `EVALSHA` calls of the configuration's generated change script
//!   on one connection; the script reads what the sink stored for each row (never `before`)
//!   and decides in Redis. `sink run --writer shared`, the default.
//! - [`Applier::Owned`] (`apply/owned/`): this process alone writes the mappings, so it keeps
//!   their bookkeeping in memory, decides every change in Rust exactly as the script does
//!   (a pure `decide`, testable without Redis), and sends only the resulting writes, coalesced, as one
//!   `MULTI`/`EXEC` per batch. The rebuild's staging database ([`Applier::owning`]) and
//!   `sink run --writer exclusive` under a lease ([`Applier::exclusive`]).
//!
//! Both guard every change by source position through `sink:rows:{mapping}` (a stored
//! position >= the incoming one makes the change a no-op), write the hash, release old
//! unique-index entries only if they still name this row and claim new ones unless
//! `sink:index:{mapping}:{index}` records a later position, move relation members between
//! parents, and record freshness and the partitions' offsets. A source's watermark
//! (`sink:watermark:{source}`) is written after the batches it covers
//! ([`Applier::record_watermark`]). Index entries and relation
//! members hold the row's primary key text: the values of the row key template's fields,
//! joined by `:` when there are several (`"1"` for `customer:{id}`). Every bookkeeping key
//! name comes from [`mapping::layout`].
//!
//! # Failures
//!
//! [`Applier::apply_batch`] reports the first failing change with its topic, partition and
//! offset ([`ApplyError::Change`]), or a failure of the whole batch; resending the batch is
//! harmless, because every change is idempotent. [`ApplyError::is_retriable`] tells whether
//! waiting can help.
//!
//! # Limits of the contract
//! - A delete removes the row from `sink:rows`, so nothing remembers its position: when a
//!   redelivered suffix starts before a row's delete, the row's older upserts re-create it
//!   until the redelivered delete removes it again. The end state is the same (the
//!   `applied_count`/`applied_at_ms` counters aside); the row is briefly visible meanwhile.
//! - A truncate deletes the rows stored before its source position; rows that a later
//!   change (from another partition) already wrote stay.
//! - With `ttl_seconds`, an expired row's index entries and relation memberships stay until
//!   the row changes again (the stored values they were rendered from are gone). Only the
//!   script writer supports it: rows expiring behind an owning writer's back would leave its
//!   bookkeeping wrong.
//! - Index ownership follows source positions, which matches PostgreSQL's immediate unique
//!   constraints; two rows swapping values under a deferred constraint may leave one
//!   entry unset.
//! - The scripts touch keys they do not declare, so the sink needs a standalone Redis (not
//!   Redis Cluster).

mod error;
mod fence;
mod owned;
mod records;
mod script;

use std::sync::Arc;
use std::time::Duration;

use deadpool_redis::Pool;
use mapping::plan::Plan;
use mapping::{ColumnType, Config};
use tokio_util::sync::CancellationToken;

pub use error::ApplyError;
pub use fence::{marker, run_of, Fences};
pub use owned::{
    exclusive_holder, LoadError, MemoryBound, OwnedWriter, WriterId, DEFAULT_LEASE_TTL,
    DEFAULT_MAX_WRITER_MEMORY,
};
use records::Records;
pub use records::Watermark;
pub use script::{announced_by_another, Announcement, ChangeScript, ScriptWriter, DEFAULT_CHUNK};

/// One planned change with where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedChange {
    /// Index into `config.mappings`.
    pub mapping: usize,
    /// The Debezium operation (the `op` label of `sink_events_applied_total`).
    pub op: mapping::Op,
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
    /// The record's Kafka timestamp, where the sink's share of the change's freshness starts
    /// (`sink_record_delay_seconds`); `None` when the record carries none.
    pub record_time: Option<RecordTime>,
}

/// A record's Kafka timestamp in milliseconds since the Unix epoch, by who stamped it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordTime {
    /// The producer, when it created the record (Kafka's default,
    /// `message.timestamp.type=CreateTime`): includes the producer's own batching.
    Create(i64),
    /// The broker, when it appended the record (`message.timestamp.type=LogAppendTime`).
    LogAppend(i64),
}

impl RecordTime {
    /// The timestamp of `timestamp` as rdkafka reports it (`None`: not available).
    pub fn of(timestamp: rdkafka::Timestamp) -> Option<RecordTime> {
        match timestamp {
            rdkafka::Timestamp::NotAvailable => None,
            rdkafka::Timestamp::CreateTime(ms) => Some(RecordTime::Create(ms)),
            rdkafka::Timestamp::LogAppendTime(ms) => Some(RecordTime::LogAppend(ms)),
        }
    }
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

/// What an exclusive applier does about sinks that announced themselves as shared writers
/// of its mappings (`sink:shared:{mapping}`, [`Announcement`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BesideSharedSinks {
    /// Takes the lease regardless (`--writer exclusive`): the change script then refuses
    /// to write for them.
    TakeTheLease,
    /// Does not take a lease it does not hold yet: [`ApplyError::SharedSinks`] (`--writer
    /// auto`, which then writes through the script beside them).
    Yield,
}

/// Applies planned changes to Redis; cheap to share (`&self` everywhere).
pub enum Applier {
    /// Through the change script: the database may be shared with other sinks.
    Script(ScriptWriter),
    /// Decided in this process against bookkeeping it owns (staging database, or the live
    /// one under the exclusive lease).
    Owned(OwnedWriter),
}

impl Applier {
    /// The shared writer: the change script of `config`, [`DEFAULT_CHUNK`] changes per call.
    pub fn new(pool: Pool, config: &Config) -> Applier {
        Applier::Script(ScriptWriter::new(pool, config, DEFAULT_CHUNK))
    }

    /// An applier for an empty database that nobody else writes or reads until it is done
    /// (the rebuild's staging database): it keeps the bookkeeping in memory and decides
    /// every change as the script would, sending only the resulting writes. Mappings with
    /// `ttl_seconds` need the script: then this is [`Applier::new`] (logged once). Call it
    /// within a Tokio runtime (it starts the task that writes the batches in order).
    pub fn owning(pool: Pool, config: &Config) -> Applier {
        let with_ttl = owned::with_ttl(&config.mappings);
        if with_ttl.is_empty() {
            return Applier::Owned(OwnedWriter::owning(pool, config));
        }
        tracing::info!(
            mappings = %with_ttl.join(","),
            "Mappings with ttl_seconds are applied through the change script, not decided in memory."
        );
        Applier::new(pool, config)
    }

    /// The rebuild's applier: [`Applier::owning`], whose batches leave the rows' positions
    /// (`sink:rows:{mapping}`) out until [`Applier::write_held_rows`] writes each row's
    /// final one. A replay writes most rows several times, and recording each of those
    /// positions cost Redis a tenth to a fifth of its work per change (BENCHMARKS.md,
    /// *Rebuild: the rows' positions written once*). The database lacks them until then, so only a
    /// database nobody reads may be written this way.
    pub fn rebuilding(pool: Pool, config: &Config) -> Applier {
        let with_ttl = owned::with_ttl(&config.mappings);
        if with_ttl.is_empty() {
            return Applier::Owned(OwnedWriter::rebuilding(pool, config));
        }
        Applier::owning(pool, config)
    }

    /// [`Applier::rebuilding`]: writes the `sink:rows` entries its batches left out, once
    /// every batch sent is answered (decisions wait meanwhile), and records them with every
    /// batch from then on. The number of entries written; 0 for any other applier, which
    /// records them with every batch.
    pub async fn write_held_rows(&self) -> Result<usize, ApplyError> {
        match self {
            Applier::Script(_) => Ok(0),
            Applier::Owned(writer) => writer.write_held_rows().await,
        }
    }

    /// An applier for the live database whose mappings this sink alone writes: it takes
    /// the writer's lease (`sink:writer:{mapping}` of each mapping), waiting while another
    /// exclusive sink holds one, loads the bookkeeping from Redis, and from then on decides
    /// every change in memory as [`Applier::owning`] does, keeping the lease with every
    /// batch. Readers see each batch at once (one `MULTI`/`EXEC`). A rebuild swapping the
    /// database in, or a lapsed lease, makes it load the bookkeeping again; another sink
    /// taking the lease makes every later batch fail with [`ApplyError::LeaseLost`].
    /// Bookkeeping that takes more than `max_memory` bytes, at start or grown past it by a
    /// batch, fails with [`ApplyError::WriterMemory`] (README, *Bounded resources*).
    ///
    /// `writer` is the lease holder's identity: an applier with the same one (the next
    /// configuration's, after a reload) keeps the lease instead of waiting for it.
    ///
    /// `None` if `shutdown` is cancelled while waiting for the lease;
    /// [`ApplyError::ExclusiveTtl`] if a mapping sets `ttl_seconds`, which only the shared
    /// writer supports.
    pub async fn exclusive(
        pool: Pool,
        config: &Config,
        writer: &WriterId,
        lease_ttl: Duration,
        max_memory: u64,
        shutdown: &CancellationToken,
    ) -> Result<Option<Applier>, ApplyError> {
        let take = BesideSharedSinks::TakeTheLease;
        Applier::exclusive_unless(take, pool, config, writer, lease_ttl, max_memory, shutdown).await
    }

    /// [`Applier::exclusive`], doing what `beside` says about sinks that announced
    /// themselves as shared writers of the mappings ([`Announcement`]).
    pub async fn exclusive_unless(
        beside: BesideSharedSinks,
        pool: Pool,
        config: &Config,
        writer: &WriterId,
        lease_ttl: Duration,
        max_memory: u64,
        shutdown: &CancellationToken,
    ) -> Result<Option<Applier>, ApplyError> {
        let with_ttl = owned::with_ttl(&config.mappings);
        if !with_ttl.is_empty() {
            return Err(ApplyError::ExclusiveTtl {
                mappings: with_ttl.into_iter().map(str::to_owned).collect(),
            });
        }
        let writer = OwnedWriter::exclusive(
            pool, config, writer, lease_ttl, max_memory, beside, shutdown,
        )
        .await?;
        Ok(writer.map(Applier::Owned))
    }

    /// The names of `config`'s mappings that set `ttl_seconds`, which only the change script
    /// applies (an owning writer's bookkeeping cannot follow rows expiring behind it).
    pub fn mappings_with_ttl(config: &Config) -> Vec<&str> {
        owned::with_ttl(&config.mappings)
    }

    /// An exclusive applier gives its lease up (others may write from now on); any other
    /// applier does nothing. Call it after the last batch, when no applier of the same
    /// [`WriterId`] takes over.
    pub async fn release(&self) -> Result<(), ApplyError> {
        match self {
            Applier::Script(_) => Ok(()),
            Applier::Owned(writer) => writer.release(true).await,
        }
    }

    /// [`Applier::release`] for an exclusive applier that the change script follows in this
    /// process (`--writer auto` falling back): no bookkeeping is left for a next exclusive
    /// writer, since the script's first batch would make it stale.
    pub async fn release_to_script(&self) -> Result<(), ApplyError> {
        match self {
            Applier::Script(_) => Ok(()),
            Applier::Owned(writer) => writer.release(false).await,
        }
    }

    /// The same applier, refusing a batch while one of its partitions' self-healing markers
    /// (`sink:offsets:run`) is gone or names another Redis server run
    /// ([`ApplyError::BookkeepingLost`]: the pipeline drops the batch and starts again), or
    /// names another assignment than the one the batch was read under
    /// ([`ApplyError::Superseded`]: the pipeline drops the batch; see
    /// [`Applier::apply_fenced`]). For `sink run`, whose assignment marks its partitions; a
    /// database without markers by design (a rebuild's staging database, a test applying
    /// directly) keeps the unguarded applier.
    pub fn with_marker_guard(self) -> Applier {
        match self {
            Applier::Script(writer) => Applier::Script(writer.guarded()),
            Applier::Owned(writer) => Applier::Owned(writer.guarded()),
        }
    }

    /// Whether this applier keeps the bookkeeping itself ([`Applier::Owned`]).
    pub fn is_owning(&self) -> bool {
        matches!(self, Applier::Owned(_))
    }

    /// Applies `batch` in order. On [`ApplyError::Change`], the other changes of the batch
    /// were executed and the failing one left nothing behind; resending the batch is
    /// harmless.
    ///
    /// A guarded applier ([`Applier::with_marker_guard`]) refuses every batch given here:
    /// give it [`Applier::apply_fenced`] the assignment the batch was read under.
    pub async fn apply_batch(&self, batch: &[PlannedChange]) -> Result<BatchOutcome, ApplyError> {
        self.apply_fenced(batch, &Fences::none()).await
    }

    /// [`Applier::apply_batch`] for a batch read under `fences`: per partition, the marker
    /// its assignment wrote in `sink:offsets:run` (apply/fence.rs). A guarded applier applies
    /// the batch only while every partition's marker is still the one `fences` names; an
    /// unguarded one ignores `fences`.
    pub async fn apply_fenced(
        &self,
        batch: &[PlannedChange],
        fences: &Fences,
    ) -> Result<BatchOutcome, ApplyError> {
        if batch.is_empty() {
            return Ok(BatchOutcome::default());
        }
        match self {
            Applier::Script(writer) => writer.apply(batch, fences).await,
            Applier::Owned(writer) => writer.apply(batch, fences).await,
        }
    }

    /// The estimated bytes an owning applier's bookkeeping takes in memory (what
    /// `--max-writer-memory` bounds); `None` for the shared writer, which holds none.
    pub async fn bookkeeping_memory(&self) -> Option<usize> {
        match self {
            Applier::Script(_) => None,
            Applier::Owned(writer) => Some(writer.memory().await),
        }
    }

    /// An exclusive applier's source of its bookkeeping at start: `"snapshot"` (what the
    /// last exclusive writer left when it stopped cleanly) or `"redis"` (read entry by
    /// entry); `None` for the other appliers.
    pub fn bookkeeping_source(&self) -> Option<&'static str> {
        match self {
            Applier::Script(_) => None,
            Applier::Owned(writer) => writer.loaded_from(),
        }
    }

    /// Records the stored types of a mapping (`HSET sink:types:{mapping}`), from the columns
    /// of its current value schema (selection and renames applied here). Call it when the
    /// value schema id of a mapping's records changes.
    pub async fn record_column_types(
        &self,
        mapping: usize,
        types: &[(String, ColumnType)],
    ) -> Result<(), ApplyError> {
        self.records().column_types(mapping, types).await
    }

    /// Sets `caught_up_at_ms` (Redis server time) in `sink:freshness:{mapping}` of each
    /// mapping: the sink has seen the end of the log of their partitions.
    pub async fn record_caught_up(&self, mappings: &[usize]) -> Result<(), ApplyError> {
        self.records().caught_up(mappings).await
    }

    /// Moves the watermark of `source` (`sink:watermark:{source}`) forward to `watermark`;
    /// whether it moved (an equal or later one may be stored already). Call it only once
    /// every change the watermark covers is applied.
    pub async fn record_watermark(
        &self,
        source: &str,
        watermark: &Watermark,
    ) -> Result<bool, ApplyError> {
        self.records().watermark(source, watermark).await
    }

    fn records(&self) -> &Records {
        match self {
            Applier::Script(writer) => writer.records(),
            Applier::Owned(writer) => writer.records(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connection::unreachable_pool;

    /// The shipped configuration with `ttl_seconds` on its `customers` mapping.
    fn config_with_ttl() -> Config {
        let text = include_str!("../../connectors.yaml")
            .replace("    # ttl_seconds: 86400", "    ttl_seconds: 86400");
        mapping::load_config_str(&text, "connectors.yaml", &Default::default())
            .expect("connectors.yaml")
    }

    #[tokio::test]
    async fn the_exclusive_writer_refuses_mappings_with_a_ttl() {
        let config = config_with_ttl();
        let with_ttl: Vec<&str> = config
            .mappings
            .iter()
            .filter(|m| m.ttl_seconds.is_some())
            .map(|m| m.name.as_str())
            .collect();
        assert_eq!(with_ttl, ["customers"]);
        let err = Applier::exclusive(
            unreachable_pool(),
            &config,
            &WriterId::new(),
            DEFAULT_LEASE_TTL,
            DEFAULT_MAX_WRITER_MEMORY,
            &CancellationToken::new(),
        )
        .await
        .err()
        .expect("refused");
        assert_eq!(
            err.to_string(),
            "the exclusive writer does not support ttl_seconds, which mapping `customers` sets; \
             run the sink with --writer shared"
        );
        assert!(!err.is_retriable());
    }

    #[tokio::test]
    async fn the_rebuild_applies_mappings_with_a_ttl_through_the_script() {
        let config = config_with_ttl();
        assert!(!Applier::owning(unreachable_pool(), &config).is_owning());
        let without: Config = mapping::load_config_str(
            include_str!("../../connectors.yaml"),
            "connectors.yaml",
            &Default::default(),
        )
        .expect("connectors.yaml");
        assert!(Applier::owning(unreachable_pool(), &without).is_owning());
    }
}
