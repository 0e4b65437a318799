//! The owning writer: the change semantics of `change.lua`, decided in the sink against
//! bookkeeping it holds in memory, for mappings that only this process writes: the rebuild's
//! staging database, and the live database of `sink run --writer exclusive` (which holds a
//! lease, `lease.rs`).
//!
//! # Layout
//!
//! - `state.rs`: [`state::OwnedState`], the bookkeeping in memory, with its undo log.
//! - `decide.rs`: the pure decision, batch + state -> writes and bookkeeping as data;
//!   `aggregates.rs` its part for `aggregates:` (the figures per parent, held in the state),
//!   with the exact decimal text sums of `decimal.rs`.
//! - `emit.rs`: the batch's writes coalesced per key; `bookkeeping.rs`: its `sink:rows`,
//!   `sink:index`, freshness and offsets records.
//! - `commands.rs`: a decision as the commands of one transaction.
//! - `writer.rs`: [`OwnedWriter`], sending the transactions in the order they were decided
//!   (`writer/staging.rs`: several at once to a staging database, which has no lease);
//!   `lease.rs` and `load.rs`: an exclusive writer's lease and its bookkeeping loaded from
//!   Redis; `snapshots.rs`: the bookkeeping a writer that stops cleanly leaves for the next.
//!
//! # Why
//!
//! Applying a change through the Lua script costs Redis 12-18 µs of CPU on the reference
//! machine: reading what the sink stored (row position, template values, index owners and
//! positions), the Lua around it, and writing the bookkeeping back, one small command at a
//! time. Deciding in the sink and sending plain writes costs Redis 7-8 µs per change in the
//! same rebuild, 4-5.5 µs once coalesced (BENCHMARKS.md). A rebuild owns its staging
//! database (nobody else writes there and nobody reads it before the swap), an exclusive
//! sink its mappings, so the sink can keep the bookkeeping itself, decide every change
//! exactly as the script would, and send only the resulting writes, coalesced per key,
//! plus the bookkeeping hashes once per batch (one multi-field `HSET`/`HDEL` per hash
//! instead of one per change).
//!
//! # Equivalence
//!
//! [`state::OwnedState`] mirrors the script's reads: `sink:rows` (position), the row hash's
//! template fields, index keys' values and `sink:index` positions, the member scores of
//! the row's relations, and the aggregate hashes' figures; `decide.rs` follows the script
//! step by step. The tests in
//! `sink/tests/apply/owned.rs` apply the same histories (every semantics case, random
//! interleavings of partitions, failures) through both and compare every key, as
//! `sink/tests/apply/exclusive.rs` does for an exclusive writer starting from what the script stored.
//! What differs on purpose: a batch is one transaction (so each change is atomic too, and
//! readers see whole batches), and offsets and freshness are written once per batch, with
//! the same final values.
//!
//! # Limits
//!
//! Memory: the bookkeeping of every row and index key lives in the sink (README, *Exclusive
//! writer memory*, for the figures); an exclusive writer refuses to hold more than
//! `--max-writer-memory` ([`MemoryBound`]). Mappings with `ttl_seconds` are not supported
//! (rows expire behind the sink's back): see [`with_ttl`].

mod aggregates;
mod bookkeeping;
mod commands;
mod decide;
mod decimal;
mod emit;
mod lease;
mod load;
mod markers;
mod model;
mod snapshots;
mod state;
#[cfg(test)]
mod test_mappings;
mod writer;

use mapping::Mapping;

pub use lease::{exclusive_holder, WriterId, DEFAULT_LEASE_TTL};

/// The most memory an exclusive writer's bookkeeping may take unless told otherwise
/// (`--max-writer-memory`): about 2.5 million rows with an index key each (README,
/// *Bounded resources*).
pub const DEFAULT_MAX_WRITER_MEMORY: u64 = 1 << 30;

/// Bookkeeping that takes more memory than `--max-writer-memory` allows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the exclusive writer's bookkeeping for {rows} rows and {index_keys} index keys takes about {} of memory, more than --max-writer-memory {} allows; raise it (--max-writer-memory or SINK_MAX_WRITER_MEMORY) or run the sink with --writer shared",
    bytesize::ByteSize::b(*.estimate).display().iec(),
    bytesize::ByteSize::b(*.bound).display().iec(),
)]
pub struct MemoryBound {
    /// Rows of every mapping.
    pub rows: usize,
    /// Index keys of every mapping.
    pub index_keys: usize,
    /// The estimated bytes ([`state::OwnedState::memory`]).
    pub estimate: u64,
    /// `--max-writer-memory`.
    pub bound: u64,
}
pub use load::LoadError;
pub use writer::OwnedWriter;

/// Maps keyed by row and index keys: many lookups per change, so a fast (still randomly
/// seeded) hasher rather than SipHash.
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
type HashSet<K> = std::collections::HashSet<K, foldhash::fast::RandomState>;

/// The names of the mappings that set `ttl_seconds`, which an owning writer cannot apply:
/// their rows expire behind its back, so the bookkeeping it holds would go wrong.
pub(crate) fn with_ttl(mappings: &[Mapping]) -> Vec<&str> {
    mappings
        .iter()
        .filter(|m| m.ttl_seconds.is_some())
        .map(|m| m.name.as_str())
        .collect()
}
