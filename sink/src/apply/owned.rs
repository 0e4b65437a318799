//! The change semantics of `change.lua`, decided in the sink against bookkeeping it holds in
//! memory, for mappings that only this process writes: the rebuild's staging database, and
//! the live database of `sink run --writer exclusive` (which holds a lease, `lease.rs`).
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
//! exactly as the script would, and send only the resulting writes, coalesced per key
//! (`emit.rs`), plus the bookkeeping hashes once per batch (one multi-field `HSET`/`HDEL` per
//! hash instead of one per change). `owned_writer.rs` sends the batches, in the order they
//! were decided; an exclusive writer loads the bookkeeping from Redis first (`load.rs`).
//!
//! # Equivalence
//!
//! [`OwnedState`] mirrors the script's reads: `sink:rows` (position), the row hash's template
//! fields, index keys' values and `sink:index` positions, and the member scores of the row's
//! relations; the decisions below follow the script step by step. The tests in
//! `sink/tests/apply_owned.rs` apply the same histories (every semantics case, random
//! interleavings of partitions, failures) through both and compare every key, as
//! `apply_exclusive.rs` does for an exclusive writer starting from what the script stored.
//! What differs on purpose: a batch is one transaction (so each change is atomic too, and
//! readers see whole batches), and offsets and freshness are written once per batch, with
//! the same final values.
//!
//! # Limits
//!
//! Memory: the bookkeeping of every row and index key lives in the sink (about 220 bytes
//! per row or index key in the rebuild benchmark). Mappings with `ttl_seconds` are not
//! supported (rows expire behind the sink's back): those use the script
//! ([`OwnedState::supports`]).

mod bookkeeping;
mod emit;
mod load;
mod model;

use std::collections::BTreeMap;
use std::sync::Arc;

use mapping::plan::{FieldWrite, Plan, RowUpsert};
use mapping::Mapping;

use super::args::relation_score;
use super::{ApplyError, BatchOutcome, PlannedChange};
use emit::Writes;
pub use load::LoadError;
use model::{render, Model};

/// Maps keyed by row and index keys: many lookups per change, so a fast (still randomly
/// seeded) hasher rather than SipHash.
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
type HashSet<K> = std::collections::HashSet<K, foldhash::fast::RandomState>;

/// What the sink stored for one row: its `sink:rows` position, its hash's template fields,
/// and per relation its member's score in the parent its values render (None: no member).
#[derive(Debug, Clone)]
struct RowState {
    position: i64,
    values: Vec<Option<String>>,
    scores: Vec<Option<f64>>,
}

/// What the sink stored for one index key: its value (the owner), its `sink:index`
/// position, and which bookkeeping hash that is in.
#[derive(Debug, Clone, PartialEq)]
struct IndexState {
    owner: Option<String>,
    position: i64,
    hash: usize,
}

/// How to undo one mutation of the state (a batch whose writes fail is rolled back); also
/// the list of bookkeeping entries the batch changed.
enum Undo {
    Row(usize, String, Option<RowState>),
    Index(String, Option<IndexState>),
}

/// The bookkeeping of a database this process alone writes, and the change semantics on it.
pub(crate) struct OwnedState {
    models: Vec<Arc<Model>>,
    /// Per mapping: row key -> state (`sink:rows` and the hash's template fields).
    rows: Vec<HashMap<String, RowState>>,
    /// Index key -> owner and position (the key's value and its `sink:index` entry).
    indexes: HashMap<String, IndexState>,
    /// Every index bookkeeping hash name (`sink:index:{mapping}:{index}`), numbered.
    index_hashes: Vec<String>,
    /// Per mapping: the number of its first index in `index_hashes`.
    first_index: Vec<usize>,
}

/// The writes of one batch.
struct BatchWrites {
    writes: Writes,
    undo: Vec<Undo>,
    applied: Vec<usize>,
    max_ts: Vec<Option<i64>>,
    offsets: BTreeMap<(Arc<str>, i32), i64>,
}

/// What deleting one row writes, decided before anything is written.
struct Deletion {
    /// Index keys still naming the row: (key, bookkeeping hash, position to record).
    releases: Vec<(String, usize, i64)>,
    /// Relation members to remove: (parent, member).
    members: Vec<(String, String)>,
}

impl OwnedState {
    /// Whether the owned path can apply `mappings` (no `ttl_seconds`).
    pub(crate) fn supports(mappings: &[Mapping]) -> bool {
        mappings.iter().all(|m| m.ttl_seconds.is_none())
    }

    /// An empty state: for an empty database.
    pub(crate) fn new(mappings: &[Mapping]) -> OwnedState {
        let models: Vec<Arc<Model>> = mappings.iter().map(|m| Arc::new(Model::new(m))).collect();
        let mut index_hashes = Vec::new();
        let mut first_index = Vec::with_capacity(models.len());
        for m in &models {
            first_index.push(index_hashes.len());
            index_hashes.extend(m.indexes.iter().map(|(h, _)| h.clone()));
        }
        OwnedState {
            rows: vec![HashMap::default(); models.len()],
            models,
            indexes: HashMap::default(),
            index_hashes,
            first_index,
        }
    }

    /// How much bookkeeping is held: (rows of every mapping, index keys).
    pub(crate) fn size(&self) -> (usize, usize) {
        let rows = self.rows.iter().map(HashMap::len).sum();
        (rows, self.indexes.len())
    }

    /// Decides `batch` in order, as the script would, and returns the writes to send with
    /// the outcome; [`OwnedState::rollback`] undoes the state change if sending fails.
    pub(crate) fn plan_batch(&mut self, batch: &[PlannedChange]) -> DecidedBatch {
        let n = self.models.len();
        let mut w = BatchWrites {
            writes: Writes::default(),
            undo: Vec::new(),
            applied: vec![0; n],
            max_ts: vec![None; n],
            offsets: BTreeMap::new(),
        };
        let mut outcome = BatchOutcome::default();
        let mut failure = None;
        for (position, change) in batch.iter().enumerate() {
            match self.apply_one(&mut w, change) {
                Ok(applied) => {
                    if applied {
                        outcome.applied += 1;
                        w.applied[change.mapping] += 1;
                        if let Some(ts) = change.source_ts_ms.filter(|ts| *ts >= 0) {
                            let max = &mut w.max_ts[change.mapping];
                            *max = Some(max.map_or(ts, |m| m.max(ts)));
                        }
                    } else {
                        outcome.skipped += 1;
                    }
                    let top = w
                        .offsets
                        .entry((change.topic.clone(), change.partition))
                        .or_insert(change.offset);
                    *top = (*top).max(change.offset);
                }
                Err(reason) => {
                    failure.get_or_insert(ApplyError::Invalid {
                        topic: change.topic.clone(),
                        partition: change.partition,
                        offset: change.offset,
                        reason: format!("{reason} (batch position {position})"),
                    });
                }
            }
        }
        let writes = std::mem::take(&mut w.writes);
        let mut pipe = writes.into_pipeline();
        bookkeeping::write(self, &w, &mut pipe);
        let result = match failure {
            Some(e) => Err(e),
            None => Ok(outcome),
        };
        DecidedBatch {
            pipe,
            undo: UndoLog(w.undo),
            outcome: result,
        }
    }

    /// Undoes what [`OwnedState::plan_batch`] changed, newest first.
    pub(crate) fn rollback(&mut self, UndoLog(undo): UndoLog) {
        for u in undo.into_iter().rev() {
            match u {
                Undo::Row(m, key, Some(state)) => {
                    self.rows[m].insert(key, state);
                }
                Undo::Row(m, key, None) => {
                    self.rows[m].remove(&key);
                }
                Undo::Index(key, Some(state)) => {
                    self.indexes.insert(key, state);
                }
                Undo::Index(key, None) => {
                    self.indexes.remove(&key);
                }
            }
        }
    }

    fn set_row(&mut self, w: &mut BatchWrites, m: usize, key: &str, state: Option<RowState>) {
        let rows = &mut self.rows[m];
        let old = match (state, rows.get_mut(key)) {
            (Some(s), Some(slot)) => Some(std::mem::replace(slot, s)),
            (Some(s), None) => rows.insert(key.to_owned(), s),
            (None, _) => rows.remove(key),
        };
        w.undo.push(Undo::Row(m, key.to_owned(), old));
    }

    fn set_index(&mut self, w: &mut BatchWrites, key: &str, state: IndexState) {
        let old = match self.indexes.get_mut(key) {
            Some(slot) => Some(std::mem::replace(slot, state)),
            None => self.indexes.insert(key.to_owned(), state),
        };
        w.undo.push(Undo::Index(key.to_owned(), old));
    }

    fn index(&self, key: &str) -> (Option<&str>, Option<i64>) {
        self.indexes
            .get(key)
            .map_or((None, None), |s| (s.owner.as_deref(), Some(s.position)))
    }

    /// One change; `Ok(true)` when it changed anything. An `Err` leaves nothing of it.
    fn apply_one(&mut self, w: &mut BatchWrites, change: &PlannedChange) -> Result<bool, String> {
        let m = change.mapping;
        if m >= self.models.len() {
            return Err(format!("unknown mapping number {}", m + 1));
        }
        match &change.plan {
            Plan::Upsert(u) => self.upsert(w, m, u),
            Plan::Delete(d) => {
                // `d`: skip unless newer than the stored row; a tombstone (no position) and
                // a delete of a row the sink never stored do nothing.
                let Some(stored) = self.rows[m].get(&d.row_key) else {
                    return Ok(false);
                };
                if d.position.is_some_and(|p| p <= stored.position) {
                    return Ok(false);
                }
                let deletion = self.deletion(m, stored, d.position);
                self.delete(w, m, &d.row_key, deletion);
                Ok(true)
            }
            Plan::Truncate { position } => {
                // Every decision against the state before the truncate, as the script's
                // queued writes.
                let doomed: Vec<(String, Deletion)> = self.rows[m]
                    .iter()
                    .filter(|(_, s)| position.is_none_or(|p| p > s.position))
                    .map(|(k, s)| (k.clone(), self.deletion(m, s, *position)))
                    .collect();
                let applied = !doomed.is_empty();
                for (key, deletion) in doomed {
                    self.delete(w, m, &key, deletion);
                }
                Ok(applied)
            }
        }
    }

    /// The script's `plan_delete`: index entries still naming the row (unless a later change
    /// recorded them) and relation members; reads only.
    fn deletion(&self, m: usize, stored: &RowState, p: Option<i64>) -> Deletion {
        let model = &self.models[m];
        let mut out = Deletion {
            releases: Vec::new(),
            members: Vec::new(),
        };
        let Some(pk) = model.primary_key(&stored.values) else {
            return out;
        };
        for (i, (_, parts)) in model.indexes.iter().enumerate() {
            let Some(k) = render(parts, &stored.values) else {
                continue;
            };
            let (owner, rec) = self.index(&k);
            if owner == Some(pk.as_str()) && not_later(rec, p) {
                let position = record_pos(p, rec, Some(stored.position));
                out.releases.push((k, self.first_index[m] + i, position));
            }
        }
        for (r, (parts, _)) in model.relations.iter().enumerate() {
            if stored.scores.get(r).copied().flatten().is_some() {
                if let Some(parent) = render(parts, &stored.values) {
                    out.members.push((parent, pk.clone()));
                }
            }
        }
        out
    }

    /// Writes a [`Deletion`]: index entries, relation members, the hash, the row's entry.
    fn delete(&mut self, w: &mut BatchWrites, m: usize, key: &str, deletion: Deletion) {
        for (k, hash, position) in deletion.releases {
            w.writes.delete(&k);
            self.set_index(
                w,
                &k,
                IndexState {
                    owner: None,
                    position,
                    hash,
                },
            );
        }
        for (parent, member) in deletion.members {
            w.writes.zrem(&parent, &member);
        }
        w.writes.delete_row(key);
        self.set_row(w, m, key, None);
    }

    /// The script's `u`: guard, new template values, index and relation decisions against
    /// the state before the change, then the writes (hash, indexes, relations, bookkeeping).
    fn upsert(&mut self, w: &mut BatchWrites, m: usize, u: &RowUpsert) -> Result<bool, String> {
        let model = Arc::clone(&self.models[m]);
        let stored = self.rows[m].get(&u.row_key);
        // The ordering guard.
        if let (Some(p), Some(s)) = (u.position, stored) {
            if p <= s.position {
                return Ok(false);
            }
        }
        let none = vec![None; model.fields.len()];
        let old: &[Option<String>] = stored.map_or(&none, |s| &s.values);
        let new = new_values(&model, u, old);
        let pk = model
            .primary_key(&new)
            .ok_or_else(|| format!("row {}: the row key fields have no value", u.row_key))?;
        let stored_pos = stored.map(|s| s.position);
        let mut queued = Vec::new();
        let index_writes =
            self.index_decisions(m, old, &new, &pk, u.position, stored_pos, &mut queued);
        let current = stored.map_or(&[][..], |s| &s.scores[..]);
        let scores = relation_decisions(&model, u, old, &new, &pk, current, &mut queued);

        // Writes, in the script's order: hash, indexes and relations, bookkeeping.
        w.writes.write_hash(u);
        for write in queued {
            write.emit(&mut w.writes);
        }
        for (key, state) in index_writes {
            self.set_index(w, &key, state);
        }
        let recorded = record_pos(u.position, stored_pos, stored_pos);
        self.set_row(
            w,
            m,
            &u.row_key,
            Some(RowState {
                position: recorded,
                values: new,
                scores,
            }),
        );
        Ok(true)
    }

    /// Per index of mapping `m`: release the old entry if it still names the row and no later
    /// change recorded it; claim the new one unless a later change recorded it. Queues the
    /// `DEL`/`SET`s, returns the bookkeeping to record.
    #[allow(clippy::too_many_arguments)]
    fn index_decisions(
        &self,
        m: usize,
        old: &[Option<String>],
        new: &[Option<String>],
        pk: &str,
        position: Option<i64>,
        stored_pos: Option<i64>,
        queued: &mut Vec<Queued>,
    ) -> Vec<(String, IndexState)> {
        let mut writes = Vec::new();
        for (i, (_, parts)) in self.models[m].indexes.iter().enumerate() {
            let (old_key, new_key) = (render(parts, old), render(parts, new));
            let hash = self.first_index[m] + i;
            if let Some(k) = old_key.filter(|k| Some(k) != new_key.as_ref()) {
                let (owner, rec) = self.index(&k);
                if owner == Some(pk) && not_later(rec, position) {
                    queued.push(Queued::Delete(k.clone()));
                    let position = record_pos(position, rec, stored_pos);
                    writes.push((
                        k,
                        IndexState {
                            owner: None,
                            position,
                            hash,
                        },
                    ));
                }
            }
            if let Some(k) = new_key {
                let (owner, rec) = self.index(&k);
                if owner != Some(pk) && not_later(rec, position) {
                    queued.push(Queued::Set(k.clone(), pk.to_owned()));
                    let position = record_pos(position, rec, stored_pos);
                    writes.push((
                        k,
                        IndexState {
                            owner: Some(pk.to_owned()),
                            position,
                            hash,
                        },
                    ));
                }
            }
        }
        writes
    }
}

/// The row's template values after upsert `u`: set, removed (NULL), or kept from `old`
/// (unchanged TOASTed value, or not in the row).
fn new_values(model: &Model, u: &RowUpsert, old: &[Option<String>]) -> Vec<Option<String>> {
    model
        .fields
        .iter()
        .zip(old)
        .map(
            |(name, old)| match u.fields.iter().find(|(n, _)| n == name).map(|(_, w)| w) {
                Some(FieldWrite::Set(v)) => Some(v.clone()),
                Some(FieldWrite::Remove) => None,
                Some(FieldWrite::Keep) | None => old.clone(),
            },
        )
        .collect()
}

/// Per relation: the member leaves the parent its old values render when that changes, and
/// is added to (or rescored in) the parent its new values render. Queues the `ZREM`/`ZADD`s,
/// returns the member's score per relation (None: no parent). `current` holds the stored
/// scores (the script's `ZSCORE` of the old parent).
fn relation_decisions(
    model: &Model,
    u: &RowUpsert,
    old: &[Option<String>],
    new: &[Option<String>],
    pk: &str,
    current: &[Option<f64>],
    queued: &mut Vec<Queued>,
) -> Vec<Option<f64>> {
    let mut scores = Vec::with_capacity(model.relations.len());
    for (r, (parts, order_by)) in model.relations.iter().enumerate() {
        let (old_parent, new_parent) = (render(parts, old), render(parts, new));
        let current = current.get(r).copied().flatten();
        let mut old_score = None;
        if let Some(op) = old_parent
            .as_ref()
            .filter(|op| Some(*op) != new_parent.as_ref())
        {
            old_score = current;
            if old_score.is_some() {
                queued.push(Queued::Zrem(op.clone(), pk.to_owned()));
            }
        }
        let Some(np) = new_parent else {
            scores.push(None);
            continue;
        };
        // ZSCORE new_parent pk: the stored score when the parent did not change.
        let cur = if old_parent.as_ref() == Some(&np) {
            current
        } else {
            None
        };
        let score = relation_score(u, r, order_by)
            .or(cur)
            .or(old_score)
            .unwrap_or(0.0);
        if cur != Some(score) {
            queued.push(Queued::Zadd(np.clone(), score, pk.to_owned()));
        }
        scores.push(Some(score));
    }
    scores
}

/// A write decided before the change's hash is written (the script's queued writes).
enum Queued {
    Delete(String),
    Set(String, String),
    Zrem(String, String),
    Zadd(String, f64, String),
}

impl Queued {
    fn emit(self, writes: &mut Writes) {
        match self {
            Queued::Delete(k) => writes.delete(&k),
            Queued::Set(k, v) => writes.set(&k, &v),
            Queued::Zrem(parent, member) => writes.zrem(&parent, &member),
            Queued::Zadd(parent, score, member) => writes.zadd(&parent, score, &member),
        }
    }
}

/// The state changes of one planned batch, for [`OwnedState::rollback`].
pub(crate) struct UndoLog(Vec<Undo>);

/// A batch decided by [`OwnedState::plan_batch`].
pub(crate) struct DecidedBatch {
    /// Its writes, bookkeeping last.
    pub(crate) pipe: redis::Pipeline,
    /// How to undo its decisions.
    pub(crate) undo: UndoLog,
    pub(crate) outcome: Result<BatchOutcome, ApplyError>,
}

/// Whether a change at `p` may write an index entry recorded at `rec` (the script's
/// `pos == '' or not rec or not gt(rec, pos)`).
fn not_later(rec: Option<i64>, p: Option<i64>) -> bool {
    match (rec, p) {
        (Some(rec), Some(p)) => rec <= p,
        _ => true,
    }
}

/// The position to record for a change at `p` over `recorded`, when the row's last stored
/// position is `fallback` (the script's `record_pos`).
fn record_pos(p: Option<i64>, recorded: Option<i64>, fallback: Option<i64>) -> i64 {
    if let Some(p) = p {
        return p;
    }
    let e = fallback.unwrap_or(0);
    recorded.filter(|r| *r > e).unwrap_or(e)
}
