//! The owning writer's decisions: a batch of changes against the bookkeeping held in memory
//! ([`OwnedState`]), step by step as `change.lua` decides them in Redis, returned as data:
//! the writes ([`Write`], coalesced per key by `emit.rs`), the bookkeeping to record
//! (`bookkeeping.rs`) and the outcome. No I/O: `commands.rs` turns a [`Decision`] into a
//! transaction, `writer.rs` sends it.

use std::sync::Arc;

use mapping::plan::{FieldWrite, Plan, RowUpsert};

use super::aggregates::{Deltas, Planned};
use super::bookkeeping::{self, Bookkeeping, Tally};
use super::emit::{Write, Writes};
use super::model::{render, Model};
use super::state::{IndexState, OwnedState, RowState, Undo, UndoLog};
use crate::apply::script::relation_score;
use crate::apply::{ApplyError, BatchOutcome, PlannedChange};

/// A decided batch.
pub(crate) struct Decision<'b> {
    /// Its writes, coalesced per key (the change script's effect on the mapped keys),
    /// borrowing from the batch.
    pub(crate) writes: Vec<Write<'b>>,
    /// The bookkeeping it changed: `sink:rows`, `sink:index`, freshness and offsets.
    pub(crate) bookkeeping: Bookkeeping,
    /// How to undo its decisions.
    pub(crate) undo: UndoLog,
    /// What it did, or the first change that could not be decided (which left nothing).
    pub(crate) outcome: Result<BatchOutcome, ApplyError>,
}

/// A batch being decided: its writes so far, and the state changes it made.
pub(super) struct BatchWrites<'b> {
    writes: Writes<'b>,
    /// The state changes, oldest first.
    pub(super) undo: Vec<Undo>,
}

/// What deleting one row writes, decided before anything is written.
struct Deletion {
    /// Index keys still naming the row: (key, bookkeeping hash number, position to record).
    releases: Vec<(String, usize, i64)>,
    /// Relation members to remove: (parent, member).
    members: Vec<(String, String)>,
    /// Search members to remove: (search number, member).
    search_members: Vec<(usize, String)>,
}

/// Decides `batch` in order, exactly as the change script would, against `state` and
/// updates `state` to match: the writes to send as data, the bookkeeping to record, the
/// outcome, and how to undo the state change ([`OwnedState::rollback`]) if Redis refuses
/// the writes. No I/O; the state is held by the caller and changed in place (copying it
/// per batch would cost as much as the rows it holds).
pub(crate) fn decide<'b>(state: &mut OwnedState, batch: &'b [PlannedChange]) -> Decision<'b> {
    let mut w = BatchWrites {
        writes: Writes::default(),
        undo: Vec::new(),
    };
    let mut tally = Tally::new(state.models.len());
    let mut outcome = BatchOutcome::default();
    let mut failure = None;
    for (position, change) in batch.iter().enumerate() {
        match state.apply_one(&mut w, change) {
            Ok(applied) => {
                if applied {
                    outcome.applied += 1;
                } else {
                    outcome.skipped += 1;
                }
                tally.count(change, applied);
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
    let bookkeeping = bookkeeping::collect(state, &w.undo, &tally);
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
    fn apply_one<'b>(
        &mut self,
        w: &mut BatchWrites<'b>,
        change: &'b PlannedChange,
    ) -> Result<bool, String> {
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
                let aggregates = self.removal(m, [&stored])?;
                let deletion = self.deletion(m, &stored, d.position);
                self.delete(w, m, &d.row_key, stored, deletion);
                self.apply_aggregates(&mut w.writes, &mut w.undo, aggregates);
                Ok(true)
            }
            Plan::Truncate { position } => {
                // Every decision against the state before the truncate, as the script's
                // queued writes.
                let doomed: Vec<(String, RowState)> = self.rows[m]
                    .iter()
                    .filter(|(_, s)| position.is_none_or(|p| p > s.position))
                    .collect();
                let aggregates = self.removal(m, doomed.iter().map(|(_, s)| s))?;
                let doomed: Vec<(String, RowState, Deletion)> = doomed
                    .into_iter()
                    .map(|(k, s)| {
                        let deletion = self.deletion(m, &s, *position);
                        (k, s, deletion)
                    })
                    .collect();
                let applied = !doomed.is_empty();
                for (key, stored, deletion) in doomed {
                    self.delete(w, m, &key, stored, deletion);
                }
                self.apply_aggregates(&mut w.writes, &mut w.undo, aggregates);
                Ok(applied)
            }
        }
    }

    /// What removing `rows` of mapping `m` does to its aggregates, decided before anything
    /// is written (the script's `agg_collect` of each row's stored values, then `agg_plan`).
    fn removal<'a>(
        &self,
        m: usize,
        rows: impl IntoIterator<Item = &'a RowState>,
    ) -> Result<Vec<Planned>, String> {
        let model = &self.models[m];
        if model.aggregates.is_empty() {
            return Ok(Vec::new());
        }
        let mut deltas = Deltas::default();
        for row in rows {
            deltas.collect(model, &row.values, true)?;
        }
        self.plan_aggregates(deltas)
    }

    /// The script's `plan_delete`: index entries still naming the row (unless a later change
    /// recorded them) and relation members; reads only.
    fn deletion(&self, m: usize, stored: &RowState, p: Option<i64>) -> Deletion {
        let model = &self.models[m];
        let mut out = Deletion {
            releases: Vec::new(),
            members: Vec::new(),
            search_members: stored
                .search_members(model.fields.len())
                .iter()
                .enumerate()
                .filter_map(|(s, member)| Some((s, member.clone()?)))
                .collect(),
        };
        let Some(pk) = model.primary_key(&stored.values) else {
            return out;
        };
        let me = Some(self.owner(&pk));
        for (i, (_, parts)) in model.indexes.iter().enumerate() {
            let Some(k) = render(parts, &stored.values) else {
                continue;
            };
            let (owner, rec) = self.index(&k);
            if owner == me && not_later(rec, p) {
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

    /// Writes a [`Deletion`] of row `key`, stored as `stored`: index entries, relation
    /// members, the hash, the row's entry.
    fn delete(
        &mut self,
        w: &mut BatchWrites<'_>,
        m: usize,
        key: &str,
        stored: RowState,
        deletion: Deletion,
    ) {
        for (k, hash, position) in deletion.releases {
            w.writes.delete(&k);
            let released = IndexState {
                owner: None,
                position,
            };
            self.set_index(&mut w.undo, &k, hash, released);
        }
        for (parent, member) in deletion.members {
            w.writes.zrem(&parent, &member);
        }
        let model = Arc::clone(&self.models[m]);
        for (s, member) in deletion.search_members {
            let search = &model.searches[s];
            w.writes.zrem(&search.zset, &member);
            w.writes.write_field(&search.members, key, None);
        }
        w.writes.delete_row(key);
        self.set_row(&mut w.undo, m, key, None, Some(stored));
    }

    /// The script's `u`: guard, new template values, index and relation decisions against
    /// the state before the change, then the writes (hash, indexes, relations, bookkeeping).
    fn upsert<'b>(
        &mut self,
        w: &mut BatchWrites<'b>,
        m: usize,
        u: &'b RowUpsert,
    ) -> Result<bool, String> {
        let model = Arc::clone(&self.models[m]);
        let stored_row = self.rows[m].get(&u.row_key);
        let stored = stored_row.as_ref();
        // The ordering guard.
        if let (Some(p), Some(s)) = (u.position, stored) {
            if p <= s.position {
                return Ok(false);
            }
        }
        let none = vec![None; model.fields.len()];
        let old: &[Option<String>] = stored.map_or(&none, |s| &s.values);
        let mut new = new_values(&model, u, old);
        let pk = model
            .primary_key(&new)
            .ok_or_else(|| format!("row {}: the row key fields have no value", u.row_key))?;
        let stored_pos = stored.map(|s| s.position);
        let mut queued = Vec::new();
        let index_writes =
            self.index_decisions(m, old, &new, &pk, u.position, stored_pos, &mut queued);
        let current = stored.map_or(&[][..], |s| &s.scores[..]);
        let scores = relation_decisions(&model, u, old, &new, &pk, current, &mut queued);
        let old_members = stored.map_or(&[][..], |s| s.search_members(model.fields.len()));
        let search_members = search_decisions(&model, u, old_members, &mut queued);
        let mut deltas = Deltas::default();
        let aggregates = deltas
            .collect(&model, old, true)
            .and_then(|()| deltas.collect(&model, &new, false))
            .and_then(|()| self.plan_aggregates(deltas))
            .map_err(|e| format!("row {}: {e}", u.row_key))?;

        // Writes, in the script's order: hash, indexes and relations, bookkeeping.
        w.writes.write_hash(u);
        for write in queued {
            write.emit(&mut w.writes);
        }
        for (key, hash, state) in index_writes {
            self.set_index(&mut w.undo, &key, hash, state);
        }
        self.apply_aggregates(&mut w.writes, &mut w.undo, aggregates);
        let recorded = record_pos(u.position, stored_pos, stored_pos);
        new.extend(search_members);
        self.set_row(
            &mut w.undo,
            m,
            &u.row_key,
            Some(RowState {
                position: recorded,
                values: new,
                scores,
            }),
            stored_row,
        );
        Ok(true)
    }

    /// Per index of mapping `m`: release the old entry if it still names the row and no later
    /// change recorded it; claim the new one unless a later change recorded it. Queues the
    /// `DEL`/`SET`s, returns the bookkeeping to record: (key, bookkeeping hash number, state).
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
    ) -> Vec<(String, usize, IndexState)> {
        let mut writes = Vec::new();
        let me = Some(self.owner(pk));
        for (i, (_, parts)) in self.models[m].indexes.iter().enumerate() {
            let (old_key, new_key) = (render(parts, old), render(parts, new));
            let hash = self.first_index[m] + i;
            if let Some(k) = old_key.filter(|k| Some(k) != new_key.as_ref()) {
                let (owner, rec) = self.index(&k);
                if owner == me && not_later(rec, position) {
                    queued.push(Queued::Delete(k.clone()));
                    let position = record_pos(position, rec, stored_pos);
                    let released = IndexState {
                        owner: None,
                        position,
                    };
                    writes.push((k, hash, released));
                }
            }
            if let Some(k) = new_key {
                let (owner, rec) = self.index(&k);
                if owner != me && not_later(rec, position) {
                    queued.push(Queued::Set(k.clone(), pk.to_owned()));
                    let position = record_pos(position, rec, stored_pos);
                    writes.push((
                        k,
                        hash,
                        IndexState {
                            owner: me,
                            position,
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

/// Per search: the row's member after upsert `u` (set, removed when the field is NULL, kept
/// when its value was not sent), queuing the `ZREM` of the old member, the `ZADD` of the new
/// one and the members hash entry when it changes.
fn search_decisions(
    model: &Model,
    u: &RowUpsert,
    old: &[Option<String>],
    queued: &mut Vec<Queued>,
) -> Vec<Option<String>> {
    model
        .searches
        .iter()
        .enumerate()
        .map(|(s, search)| {
            let old = old.get(s).cloned().flatten();
            let new = match u.search_members.get(s) {
                Some(FieldWrite::Set(member)) => Some(member.clone()),
                Some(FieldWrite::Remove) => None,
                Some(FieldWrite::Keep) | None => return old,
            };
            if old != new {
                if let Some(old) = old {
                    queued.push(Queued::Zrem(search.zset.clone(), old));
                }
                if let Some(member) = &new {
                    queued.push(Queued::Zadd(search.zset.clone(), 0.0, member.clone()));
                }
                queued.push(Queued::Field(
                    search.members.clone(),
                    u.row_key.clone(),
                    new.clone(),
                ));
            }
            new
        })
        .collect()
}

/// A write decided before the change's hash is written (the script's queued writes).
enum Queued {
    Delete(String),
    Set(String, String),
    Zrem(String, String),
    Zadd(String, f64, String),
    /// A bookkeeping hash field: set, or removed with `None`.
    Field(String, String, Option<String>),
}

impl Queued {
    fn emit(self, writes: &mut Writes<'_>) {
        match self {
            Queued::Delete(k) => writes.delete(&k),
            Queued::Set(k, v) => writes.set(&k, &v),
            Queued::Zrem(parent, member) => writes.zrem(&parent, &member),
            Queued::Zadd(parent, score, member) => writes.zadd(&parent, score, &member),
            Queued::Field(key, field, value) => writes.write_field(&key, &field, value.as_deref()),
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

#[cfg(test)]
mod tests {
    use mapping::RowDelete;

    use super::*;
    use crate::apply::owned::bookkeeping::Freshness;
    use crate::apply::owned::test_mappings;

    const CUSTOMERS: usize = 0;
    const ORDERS: usize = 1;

    /// Customers with a unique email index, orders in their customer's relation.
    fn state() -> OwnedState {
        OwnedState::new(&[test_mappings::customers(), test_mappings::orders()])
    }

    fn change(mapping: usize, plan: Plan, offset: i64) -> PlannedChange {
        let op = match plan {
            Plan::Upsert(_) => mapping::Op::Update,
            Plan::Delete(_) => mapping::Op::Delete,
            Plan::Truncate { .. } => mapping::Op::Truncate,
        };
        PlannedChange {
            mapping,
            op,
            plan,
            source_ts_ms: Some(1000 + offset),
            topic: if mapping == CUSTOMERS {
                "cdc.customers"
            } else {
                "cdc.orders"
            }
            .into(),
            partition: 0,
            offset,
            record_time: None,
        }
    }

    fn customer(id: u32, email: &str, position: i64, offset: i64) -> PlannedChange {
        let plan = Plan::Upsert(RowUpsert {
            row_key: format!("customer:{id}"),
            position: Some(position),
            fields: vec![
                ("id".into(), FieldWrite::Set(id.to_string())),
                ("email".into(), FieldWrite::Set(email.into())),
            ],
            relation_scores: vec![],
            search_members: vec![],
        });
        change(CUSTOMERS, plan, offset)
    }

    fn order(id: u32, customer_id: u32, score: Option<f64>, position: i64) -> PlannedChange {
        let mut fields = vec![
            ("id".into(), FieldWrite::Set(id.to_string())),
            (
                "customer_id".into(),
                FieldWrite::Set(customer_id.to_string()),
            ),
        ];
        if let Some(s) = score {
            fields.push(("created_at".into(), FieldWrite::Set(s.to_string())));
        }
        let plan = Plan::Upsert(RowUpsert {
            row_key: format!("order:{id}"),
            position: Some(position),
            fields,
            relation_scores: vec![score],
            search_members: vec![],
        });
        change(ORDERS, plan, position)
    }

    fn delete(mapping: usize, row_key: &str, position: Option<i64>, offset: i64) -> PlannedChange {
        let plan = Plan::Delete(RowDelete {
            row_key: row_key.into(),
            position,
        });
        change(mapping, plan, offset)
    }

    /// Writes as one sorted line per key or field, whatever their coalescing order.
    fn lines(writes: &[Write<'_>]) -> Vec<String> {
        let mut out = Vec::new();
        for w in writes {
            match w {
                Write::Del { keys } => out.extend(keys.iter().map(|k| format!("DEL {k}"))),
                Write::Hset { key, fields } => {
                    out.extend(fields.iter().map(|(f, v)| format!("HSET {key} {f} {v}")));
                }
                Write::Hdel { key, fields } => {
                    out.extend(fields.iter().map(|f| format!("HDEL {key} {f}")));
                }
                Write::Mset { pairs } => {
                    out.extend(pairs.iter().map(|(k, v)| format!("SET {k} {v}")))
                }
                Write::Zadd { key, members } => {
                    out.extend(members.iter().map(|(s, m)| format!("ZADD {key} {s} {m}")));
                }
                Write::Zrem { key, members } => {
                    out.extend(members.iter().map(|m| format!("ZREM {key} {m}")));
                }
            }
        }
        out.sort();
        out
    }

    fn outcome(d: &Decision) -> (usize, usize) {
        let o = d.outcome.as_ref().expect("decided");
        (o.applied, o.skipped)
    }

    #[test]
    fn a_new_row_writes_its_hash_index_and_bookkeeping() {
        let mut state = state();
        let batch = [customer(1, "a@x", 10, 0)];
        let d = decide(&mut state, &batch);
        assert_eq!(outcome(&d), (1, 0));
        assert_eq!(
            lines(&d.writes),
            [
                "HSET customer:1 email a@x",
                "HSET customer:1 id 1",
                "SET customer:email:a@x 1",
            ]
        );
        assert_eq!(
            lines(&d.bookkeeping.entries),
            [
                "HSET sink:index:customers:email customer:email:a@x 10",
                "HSET sink:rows:customers customer:1 10",
            ]
        );
        assert_eq!(
            d.bookkeeping.freshness,
            [Freshness {
                key: "sink:freshness:customers".into(),
                applied: 1,
                source_ts_ms: Some(1000),
            }]
        );
        assert_eq!(d.bookkeeping.offsets, [("cdc.customers/0".to_owned(), 0)]);
        assert_eq!(state.size(), (1, 1));
    }

    #[test]
    fn writes_are_coalesced_per_key_and_older_changes_skipped() {
        let mut state = state();
        let batch = [
            customer(1, "a@x", 10, 0),
            customer(1, "b@x", 20, 1),
            customer(1, "c@x", 15, 2), // older than what is stored: no-op
        ];
        let d = decide(&mut state, &batch);
        assert_eq!(outcome(&d), (2, 1));
        assert_eq!(
            lines(&d.writes),
            [
                "DEL customer:email:a@x",
                "HSET customer:1 email b@x",
                "HSET customer:1 id 1",
                "SET customer:email:b@x 1",
            ]
        );
        assert_eq!(
            lines(&d.bookkeeping.entries),
            [
                "HSET sink:index:customers:email customer:email:a@x 20",
                "HSET sink:index:customers:email customer:email:b@x 20",
                "HSET sink:rows:customers customer:1 20",
            ]
        );
        assert_eq!(d.bookkeeping.offsets, [("cdc.customers/0".to_owned(), 2)]);
    }

    #[test]
    fn an_index_entry_claimed_later_by_another_row_stays_its() {
        let mut state = state();
        decide(
            &mut state,
            &[customer(1, "a@x", 10, 0), customer(2, "a@x", 30, 1)],
        );
        // Customer 1 moves away from a@x, recorded at 30 by customer 2: not released.
        let batch = [customer(1, "b@x", 20, 2)];
        let d = decide(&mut state, &batch);
        assert_eq!(outcome(&d), (1, 0));
        assert_eq!(
            lines(&d.writes),
            [
                "HSET customer:1 email b@x",
                "HSET customer:1 id 1",
                "SET customer:email:b@x 1",
            ]
        );
    }

    #[test]
    fn a_delete_releases_the_row_and_a_tombstone_of_an_absent_row_does_nothing() {
        let mut state = state();
        decide(&mut state, &[customer(1, "a@x", 10, 0)]);
        let batch = [
            delete(CUSTOMERS, "customer:1", Some(30), 1),
            delete(CUSTOMERS, "customer:1", None, 2),
        ];
        let d = decide(&mut state, &batch);
        assert_eq!(outcome(&d), (1, 1));
        assert_eq!(
            lines(&d.writes),
            ["DEL customer:1", "DEL customer:email:a@x"]
        );
        assert_eq!(
            lines(&d.bookkeeping.entries),
            [
                "HDEL sink:rows:customers customer:1",
                "HSET sink:index:customers:email customer:email:a@x 30",
            ]
        );
        assert_eq!(state.size(), (0, 1));
    }

    #[test]
    fn a_relation_member_moves_with_its_parent_and_keeps_its_score() {
        let mut state = state();
        let batch = [order(3, 1, Some(5.0), 10)];
        let d = decide(&mut state, &batch);
        assert_eq!(
            lines(&d.writes),
            [
                "HSET order:3 created_at 5",
                "HSET order:3 customer_id 1",
                "HSET order:3 id 3",
                "ZADD customer:1:orders 5 3",
            ]
        );
        // created_at not sent (unchanged TOASTed value): the member keeps its score.
        let batch = [order(3, 2, None, 20)];
        let d = decide(&mut state, &batch);
        assert_eq!(
            lines(&d.writes),
            [
                "HSET order:3 customer_id 2",
                "HSET order:3 id 3",
                "ZADD customer:2:orders 5 3",
                "ZREM customer:1:orders 3",
            ]
        );
    }

    #[test]
    fn a_truncate_deletes_the_rows_stored_before_it() {
        let mut state = state();
        decide(
            &mut state,
            &[order(3, 1, Some(5.0), 10), order(4, 1, Some(6.0), 30)],
        );
        let batch = [change(ORDERS, Plan::Truncate { position: Some(20) }, 40)];
        let d = decide(&mut state, &batch);
        assert_eq!(outcome(&d), (1, 0));
        assert_eq!(
            lines(&d.writes),
            ["DEL order:3", "ZREM customer:1:orders 3"]
        );
        assert_eq!(
            lines(&d.bookkeeping.entries),
            ["HDEL sink:rows:orders order:3"]
        );
    }

    #[test]
    fn a_change_that_cannot_be_decided_leaves_nothing_and_is_reported() {
        let mut state = state();
        let mut keyless = customer(2, "b@x", 11, 1);
        if let Plan::Upsert(u) = &mut keyless.plan {
            u.fields[0].1 = FieldWrite::Remove;
        }
        let batch = [customer(1, "a@x", 10, 0), keyless];
        let d = decide(&mut state, &batch);
        let err = d.outcome.as_ref().expect_err("row key fields missing");
        assert_eq!(err.location(), Some(("cdc.customers", 0, 1)));
        assert_eq!(
            lines(&d.writes),
            [
                "HSET customer:1 email a@x",
                "HSET customer:1 id 1",
                "SET customer:email:a@x 1",
            ]
        );
        assert_eq!(d.bookkeeping.offsets, [("cdc.customers/0".to_owned(), 0)]);
    }

    #[test]
    fn rollback_restores_the_state_the_batch_was_decided_on() {
        let mut state = state();
        decide(&mut state, &[customer(1, "a@x", 10, 0)]);
        let batch = [
            customer(1, "b@x", 20, 1),
            delete(CUSTOMERS, "customer:1", Some(30), 2),
        ];
        let first = decide(&mut state, &batch);
        state.rollback(first.undo);
        let again = decide(&mut state, &batch);
        assert_eq!(lines(&again.writes), lines(&first.writes));
        assert_eq!(
            lines(&again.bookkeeping.entries),
            lines(&first.bookkeeping.entries)
        );
        assert_eq!(outcome(&again), (2, 0));
    }
}
