//! The bookkeeping a decided batch changed, as data: its `sink:rows` and `sink:index`
//! entries (one `HSET`/`HDEL` per hash instead of one per change), and the freshness and
//! offsets to record once for the batch, with the same final values as the chunk scripts'.

use mapping::layout;

use super::decide::BatchWrites;
use super::emit::{slices, Write};
use super::state::{OwnedState, Undo};
use super::{HashMap, HashSet};

/// Entries per bookkeeping `HSET`/`HDEL` at most.
const SLICE: usize = 1000;

/// What a batch records besides its writes.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Bookkeeping {
    /// `sink:rows` and `sink:index` entries set (position) or deleted.
    pub(crate) entries: Vec<Write>,
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

/// The bookkeeping of batch `w`, decided on `state` (which holds the final entries).
pub(super) fn collect(state: &OwnedState, w: &BatchWrites) -> Bookkeeping {
    let mut seen: HashSet<(usize, &str)> = HashSet::default();
    let mut sets: HashMap<&str, Vec<(String, String)>> = HashMap::default();
    let mut dels: HashMap<&str, Vec<String>> = HashMap::default();
    for u in &w.undo {
        match u {
            Undo::Row(m, key, _) => {
                if !seen.insert((*m, key)) {
                    continue;
                }
                let hash = state.models[*m].rows_key.as_str();
                match state.rows[*m].get(key) {
                    Some(s) => sets
                        .entry(hash)
                        .or_default()
                        .push((key.clone(), s.position.to_string())),
                    None => dels.entry(hash).or_default().push(key.clone()),
                }
            }
            Undo::Index(key, _) => {
                if !seen.insert((usize::MAX, key)) {
                    continue;
                }
                if let Some(s) = state.indexes.get(key) {
                    let hash = state.index_hashes[s.hash].as_str();
                    sets.entry(hash)
                        .or_default()
                        .push((key.clone(), s.position.to_string()));
                }
            }
        }
    }
    let mut entries = Vec::new();
    for (hash, pairs) in sets {
        entries.extend(slices(pairs, SLICE).map(|fields| Write::Hset {
            key: hash.to_owned(),
            fields,
        }));
    }
    for (hash, fields) in dels {
        entries.extend(slices(fields, SLICE).map(|fields| Write::Hdel {
            key: hash.to_owned(),
            fields,
        }));
    }
    let freshness = (0..state.models.len())
        .filter(|&m| w.applied[m] > 0)
        .map(|m| Freshness {
            key: state.models[m].fresh_key.clone(),
            applied: w.applied[m],
            source_ts_ms: w.max_ts[m],
        })
        .collect();
    let offsets = w
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
