//! The owning writer's decisions: a batch of changes against the bookkeeping held in memory
//! ([`OwnedState`]), step by step as `change.lua` decides them in Redis, returned as data:
//! the writes ([`Write`], coalesced per key by `emit.rs`), the bookkeeping to record
//! (`bookkeeping.rs`) and the outcome. No I/O: `commands.rs` turns a [`Decision`] into a
//! transaction, `writer.rs` sends it.

use std::collections::BTreeMap;
use std::sync::Arc;

use mapping::plan::{FieldWrite, Plan, RowUpsert};

use super::bookkeeping::{self, Bookkeeping};
use super::emit::{Write, Writes};
use super::model::{render, Model};
use super::state::{IndexState, OwnedState, RowState, Undo, UndoLog};
use crate::apply::script::relation_score;
use crate::apply::{ApplyError, BatchOutcome, PlannedChange};

/// A decided batch.
pub(crate) struct Decision {
    /// Its writes, coalesced per key (the change script's effect on the mapped keys).
    pub(crate) writes: Vec<Write>,
    /// The bookkeeping it changed: `sink:rows`, `sink:index`, freshness and offsets.
    pub(crate) bookkeeping: Bookkeeping,
    /// How to undo its decisions.
    pub(crate) undo: UndoLog,
    /// What it did, or the first change that could not be decided (which left nothing).
    pub(crate) outcome: Result<BatchOutcome, ApplyError>,
}

/// A batch being decided: its writes so far, and what the bookkeeping needs.
pub(super) struct BatchWrites {
    writes: Writes,
    /// The state changes, oldest first.
    pub(super) undo: Vec<Undo>,
    /// Per mapping: changes applied.
    pub(super) applied: Vec<usize>,
    /// Per mapping: the highest `source_ts_ms` of an applied change.
    pub(super) max_ts: Vec<Option<i64>>,
    /// Per partition: the highest offset of a change that did not fail.
    pub(super) offsets: BTreeMap<(Arc<str>, i32), i64>,
}

/// What deleting one row writes, decided before anything is written.
struct Deletion {
    /// Index keys still naming the row: (key, bookkeeping hash, position to record).
    releases: Vec<(String, usize, i64)>,
    /// Relation members to remove: (parent, member).
    members: Vec<(String, String)>,
}

/// Decides `batch` in order, exactly as the change script would, against `state` and
/// updates `state` to match: the writes to send as data, the bookkeeping to record, the
/// outcome, and how to undo the state change ([`OwnedState::rollback`]) if Redis refuses
/// the writes. No I/O; the state is held by the caller and changed in place (copying it
/// per batch would cost as much as the rows it holds).
pub(crate) fn decide(state: &mut OwnedState, batch: &[PlannedChange]) -> Decision {
    let n = state.models.len();
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
        match state.apply_one(&mut w, change) {
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
    let writes = std::mem::take(&mut w.writes).into_writes();
    let bookkeeping = bookkeeping::collect(state, &w);
    Decision {
        writes,
        bookkeeping,
        undo: UndoLog(w.undo),
        outcome: match failure {
            Some(e) => Err(e),
            None => Ok(outcome),
        },
    }
}

impl OwnedState {
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
                &mut w.undo,
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
        self.set_row(&mut w.undo, m, key, None);
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
            self.set_index(&mut w.undo, &key, state);
        }
        let recorded = record_pos(u.position, stored_pos, stored_pos);
        self.set_row(
            &mut w.undo,
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
