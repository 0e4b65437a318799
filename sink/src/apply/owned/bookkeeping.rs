//! The bookkeeping a decided batch changed, as data: its `sink:rows` and `sink:index`
//! entries (one `HSET`/`HDEL` per hash instead of one per change), and the freshness and
//! offsets to record once for the batch, with the same final values as the chunk scripts'.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;

use mapping::layout;

use super::emit::{slices, Write};
use super::state::{OwnedState, Undo};
use super::{HashMap, HashSet};
use crate::apply::PlannedChange;

/// Entries per bookkeeping `HSET`/`HDEL` at most.
const SLICE: usize = 1000;

/// What a batch records besides its writes.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Bookkeeping {
    /// `sink:rows` and `sink:index` entries set (position) or deleted.
    pub(crate) entries: Vec<Write<'static>>,
    /// Mappings with applied changes.
    pub(crate) freshness: Vec<Freshness>,
    /// `sink:offsets` fields and the batch's highest offset in each (a maximum).
    pub(crate) offsets: Vec<(String, i64)>,
}

/// What to record in one mapping's `sink:freshness:{mapping}`.
#[derive(Debug, PartialEq)]
pub(crate) struct Freshness {
    /// The hash.
    pub(crate) key: String,
    /// Changes applied (`applied_count` grows by this).
    pub(crate) applied: usize,
    /// Highest `source_ts_ms` of an applied change (`source_ts_ms` as a maximum).
    pub(crate) source_ts_ms: Option<i64>,
}

/// What a batch's changes add up to, counted as they are decided: the freshness and
/// offsets it records once.
#[derive(Debug)]
pub(super) struct Tally {
    /// Per mapping: changes applied.
    applied: Vec<usize>,
    /// Per mapping: the highest `source_ts_ms` of an applied change.
    max_ts: Vec<Option<i64>>,
    /// Per partition: the highest offset of a change that did not fail.
    offsets: BTreeMap<(Arc<str>, i32), i64>,
}

impl Tally {
    /// An empty tally for `mappings` mappings.
    pub(super) fn new(mappings: usize) -> Tally {
        Tally {
            applied: vec![0; mappings],
            max_ts: vec![None; mappings],
            offsets: BTreeMap::new(),
        }
    }

    /// Counts `change`, decided without failing; `applied` when it changed the read model.
    pub(super) fn count(&mut self, change: &PlannedChange, applied: bool) {
        if applied {
            self.applied[change.mapping] += 1;
            if let Some(ts) = change.source_ts_ms.filter(|ts| *ts >= 0) {
                let max = &mut self.max_ts[change.mapping];
                *max = Some(max.map_or(ts, |m| m.max(ts)));
            }
        }
        let top = self
            .offsets
            .entry((change.topic.clone(), change.partition))
            .or_insert(change.offset);
        *top = (*top).max(change.offset);
    }
}

/// Text a bookkeeping command owns (it outlives the batch it was decided from).
type Text = Cow<'static, str>;

fn owned(text: impl ToString) -> Text {
    Cow::Owned(text.to_string())
}

/// The bookkeeping of a batch whose state changes are `undo` (which say the positions
/// given) and whose changes `tally` counted, decided on `state`; without `sink:rows`
/// entries while `state` holds them back ([`OwnedState::rows_recorded`]).
pub(super) fn collect(state: &OwnedState, undo: &[Undo], tally: &Tally) -> Bookkeeping {
    let mut seen: HashSet<(usize, &str)> = HashSet::default();
    let mut sets: HashMap<&str, Vec<(Text, Text)>> = HashMap::default();
    let mut dels: HashMap<&str, Vec<Text>> = HashMap::default();
    // Newest first: the first time a key is met is its final entry.
    for u in undo.iter().rev() {
        match u {
            Undo::Row(m, key, _, now) => {
                if !state.rows_recorded || !seen.insert((*m, key)) {
                    continue;
                }
                let hash = state.models[*m].rows_key.as_str();
                match now {
                    Some(position) => sets
                        .entry(hash)
                        .or_default()
                        .push((owned(key), owned(position))),
                    None => dels.entry(hash).or_default().push(owned(key)),
                }
            }
            Undo::Index(key, hash, _, now) => {
                if !seen.insert((usize::MAX, key)) {
                    continue;
                }
                let hash = state.index_hashes[*hash].as_str();
                sets.entry(hash).or_default().push((owned(key), owned(now)));
            }
            // Aggregate figures are written with the batch's writes, not as bookkeeping.
            Undo::Aggregate(..) => {}
        }
    }
    let mut entries = Vec::new();
    for (hash, pairs) in sets {
        entries.extend(slices(pairs, SLICE).map(|fields| Write::Hset {
            key: owned(hash),
            fields,
        }));
    }
    for (hash, fields) in dels {
        entries.extend(slices(fields, SLICE).map(|fields| Write::Hdel {
            key: owned(hash),
            fields,
        }));
    }
    let freshness = (0..state.models.len())
        .filter(|&m| tally.applied[m] > 0)
        .map(|m| Freshness {
            key: state.models[m].fresh_key.clone(),
            applied: tally.applied[m],
            source_ts_ms: tally.max_ts[m],
        })
        .collect();
    let offsets = tally
        .offsets
        .iter()
        .map(|((topic, partition), offset)| (layout::offsets_field(topic, *partition), *offset))
        .collect();
    Bookkeeping {
        entries,
        freshness,
        offsets,
    }
}
