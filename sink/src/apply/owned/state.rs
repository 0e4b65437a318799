//! The bookkeeping an owning writer holds in memory, mirroring what the change script reads
//! from Redis: per row its `sink:rows` position, its hash's template fields and its relation
//! scores; per index key its owner and `sink:index` position. Every change to it is logged
//! so that a batch Redis refuses can be undone.
//!
//! # Memory
//!
//! Rows and index keys are held compactly, since there may be millions (issue #17: at most
//! 64 bytes each): a row is a 16-byte slot and its values' bytes in pages, without its key
//! (`rows.rs`, `row_bytes.rs`, `arena.rs`); an index key is a 28-byte slot holding a
//! fingerprint of the key, its owner's hash and its position (`indexes.rs`, `hashing.rs`).
//! Slots sit side by side, found through a table of their numbers (`dense.rs`).
//! [`RowState`] and [`IndexState`] are what a lookup decodes. [`OwnedState::memory`]
//! estimates the bytes held, for `--max-writer-memory`: the rows' live bytes and the
//! aggregates' figures, counted as entries come and go, plus the slots' vectors and the
//! tables at their current capacity. What the allocator keeps beyond that is not counted:
//! README, *Bounded resources*, gives the
//! estimate against the process's measured growth.

mod arena;
mod dense;
mod hashing;
mod indexes;
mod row_bytes;
mod rows;
mod snapshot;

use std::mem::size_of;
use std::sync::Arc;

use mapping::Mapping;

use self::hashing::KeyHashing;
pub(crate) use self::hashing::OwnerId;
use self::indexes::IndexTable;
use self::rows::RowTable;
pub(crate) use self::snapshot::{SnapshotOffsets, SnapshotRefusal};
use super::model::Model;
use super::HashMap;

/// The fields of one parent's aggregate hash: field -> exact decimal text (`aggregates.rs`
/// keeps them).
pub(super) type Figures = Vec<(String, String)>;

/// What the sink stored for one row: its `sink:rows` position, its hash's template fields,
/// and per relation its member's score in the parent its values render (None: no member).
#[derive(Debug, Clone)]
pub(super) struct RowState {
    pub(super) position: i64,
    /// The template fields' values (`Model::fields`), then, per search of the mapping, the
    /// row's member of its sorted set (`mapping::search`; [`RowState::search_members`]).
    pub(super) values: Vec<Option<String>>,
    pub(super) scores: Vec<Option<f64>>,
}

impl RowState {
    /// The row's search members: what follows its `fields` template values.
    pub(super) fn search_members(&self, fields: usize) -> &[Option<String>] {
        self.values.get(fields..).unwrap_or_default()
    }
}

/// What the sink stored for one index key: the row it names (the key's value) and its
/// `sink:index` position.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct IndexState {
    pub(super) owner: Option<OwnerId>,
    pub(super) position: i64,
}

/// How to undo one mutation of the state (a batch whose writes fail is rolled back); also
/// the list of bookkeeping entries the batch changed.
pub(super) enum Undo {
    /// Mapping, row key, its previous state, and the position it was given (`None`:
    /// removed), which `bookkeeping.rs` records without looking the row up again.
    Row(usize, String, Option<RowState>, Option<i64>),
    /// Index key, the number of its bookkeeping hash, its previous state, and the position
    /// it was given.
    Index(String, usize, Option<IndexState>, i64),
    Aggregate(String, Option<Figures>),
}

/// The state changes of one decided batch, for [`OwnedState::rollback`]; also the list of
/// bookkeeping entries the batch changed.
pub(crate) struct UndoLog(pub(super) Vec<Undo>);

/// The bookkeeping of a database this process alone writes (decided on by `decide.rs`).
pub(crate) struct OwnedState {
    pub(super) models: Vec<Arc<Model>>,
    /// Per mapping: its rows (`sink:rows` and the hash's template fields).
    pub(super) rows: Vec<RowTable>,
    /// Index key -> owner and position (the key's value and its `sink:index` entry).
    pub(super) indexes: IndexTable,
    /// Every index bookkeeping hash name (`sink:index:{mapping}:{index}`), numbered.
    pub(super) index_hashes: Vec<String>,
    /// Per mapping: the number of its first index in `index_hashes`.
    pub(super) first_index: Vec<usize>,
    /// Aggregate parent key -> its hash's figures (`aggregates.rs`).
    pub(super) aggregates: HashMap<String, Figures>,
    /// Heap bytes of the entries of `aggregates` (see [`OwnedState::memory`]).
    aggregate_heap: usize,
    hashing: KeyHashing,
    /// Whether each batch records its rows' positions in `sink:rows`. A rebuild holds them
    /// back while it replays (`OwnedWriter::write_held_rows`): a tenth to a fifth of Redis's
    /// work per change, most of it overwritten by later changes of the same rows.
    pub(super) rows_recorded: bool,
}

impl OwnedState {
    /// An empty state: for an empty database.
    pub(crate) fn new(mappings: &[Mapping]) -> OwnedState {
        OwnedState::with_hashing(mappings, KeyHashing::random())
    }

    fn with_hashing(mappings: &[Mapping], hashing: KeyHashing) -> OwnedState {
        let models: Vec<Arc<Model>> = mappings.iter().map(|m| Arc::new(Model::new(m))).collect();
        let mut index_hashes = Vec::new();
        let mut first_index = Vec::with_capacity(models.len());
        for m in &models {
            first_index.push(index_hashes.len());
            index_hashes.extend(m.indexes.iter().map(|(h, _)| h.clone()));
        }
        OwnedState {
            rows: models
                .iter()
                .map(|m| RowTable::new(Arc::clone(m), hashing))
                .collect(),
            models,
            indexes: IndexTable::new(hashing),
            index_hashes,
            first_index,
            aggregates: HashMap::default(),
            aggregate_heap: 0,
            hashing,
            rows_recorded: true,
        }
    }

    /// Estimated bytes held: the entries' heap allocations and the hash tables (module doc).
    pub(crate) fn memory(&self) -> usize {
        let (tables, entries) = self.memory_parts();
        tables + entries
    }

    /// [`OwnedState::memory`] in two parts: (the tables at their capacity, the entries'
    /// own allocations). A load reserves the tables for every entry in Redis first, so only
    /// the second part grows with the entries loaded.
    pub(crate) fn memory_parts(&self) -> (usize, usize) {
        let tables = self.rows.iter().map(RowTable::table_memory).sum::<usize>()
            + self.indexes.memory()
            + table_bytes::<(String, Figures)>(self.aggregates.capacity());
        let entries = self.rows.iter().map(RowTable::heap).sum::<usize>() + self.aggregate_heap;
        (tables, entries)
    }

    /// Makes room for `rows[m]` more rows of each mapping `m` and `index_keys` more index
    /// keys (a load knows how many).
    pub(super) fn reserve(&mut self, rows: &[usize], index_keys: usize) {
        for (table, &n) in self.rows.iter_mut().zip(rows) {
            table.reserve(n);
        }
        self.indexes.reserve(index_keys);
    }

    /// How much bookkeeping is held: (rows of every mapping, index keys).
    pub(crate) fn size(&self) -> (usize, usize) {
        let rows = self.rows.iter().map(RowTable::len).sum();
        (rows, self.indexes.len())
    }

    /// Every row held, as its `sink:rows` entry: (the hash, the row key, its position).
    pub(super) fn row_entries(&self) -> impl Iterator<Item = (&str, String, i64)> + '_ {
        self.models
            .iter()
            .zip(&self.rows)
            .flat_map(|(model, rows)| {
                rows.keys_and_positions()
                    .map(|(key, position)| (model.rows_key.as_str(), key, position))
            })
    }

    /// Undoes what [`super::decide::decide`] changed, newest first.
    pub(crate) fn rollback(&mut self, UndoLog(undo): UndoLog) {
        for u in undo.into_iter().rev() {
            match u {
                Undo::Row(m, key, state, _) => {
                    self.rows[m].replace(&key, state);
                }
                Undo::Index(key, _, state, _) => {
                    self.indexes.replace(&key, state);
                }
                Undo::Aggregate(key, figures) => {
                    self.replace_aggregate(&key, figures);
                }
            }
        }
    }

    /// Sets (or with `None` removes) row `key` of mapping `m`, whose state is `old` (as
    /// read from this state just before).
    pub(super) fn set_row(
        &mut self,
        undo: &mut Vec<Undo>,
        m: usize,
        key: &str,
        state: Option<RowState>,
        old: Option<RowState>,
    ) {
        let now = state.as_ref().map(|s| s.position);
        self.rows[m].put(key, state);
        undo.push(Undo::Row(m, key.to_owned(), old, now));
    }

    /// Sets index key `key`, of bookkeeping hash number `hash`.
    pub(super) fn set_index(
        &mut self,
        undo: &mut Vec<Undo>,
        key: &str,
        hash: usize,
        state: IndexState,
    ) {
        let now = state.position;
        let old = self.indexes.replace(key, Some(state));
        undo.push(Undo::Index(key.to_owned(), hash, old, now));
    }

    pub(super) fn set_aggregate(
        &mut self,
        undo: &mut Vec<Undo>,
        key: &str,
        figures: Option<Figures>,
    ) {
        let old = self.replace_aggregate(key, figures);
        undo.push(Undo::Aggregate(key.to_owned(), old));
    }

    /// Sets (or with `None` removes) the figures of aggregate key `key`, keeping
    /// `aggregate_heap`; the previous figures.
    fn replace_aggregate(&mut self, key: &str, figures: Option<Figures>) -> Option<Figures> {
        let added = figures
            .as_ref()
            .map_or(0, |f| aggregate_bytes(key.len(), f));
        let old = match (figures, self.aggregates.get_mut(key)) {
            (Some(f), Some(slot)) => Some(std::mem::replace(slot, f)),
            (Some(f), None) => self.aggregates.insert(key.to_owned(), f),
            (None, _) => self.aggregates.remove(key),
        };
        let removed = old.as_ref().map_or(0, |f| aggregate_bytes(key.len(), f));
        self.aggregate_heap = self.aggregate_heap + added - removed;
        old
    }

    /// Adds row `key` of mapping `m` as loaded from Redis (`HSCAN` may repeat a key).
    pub(super) fn load_row(&mut self, m: usize, key: &str, state: RowState) {
        self.rows[m].replace(key, Some(state));
    }

    /// Adds index key `key` as loaded from Redis (`HSCAN` may repeat a key), its value
    /// naming primary key `owner`.
    pub(super) fn load_index(&mut self, key: &str, owner: Option<&str>, position: i64) {
        let owner = owner.map(|pk| self.hashing.owner(pk));
        self.indexes
            .replace(key, Some(IndexState { owner, position }));
    }

    /// Index key `key`'s owner and position.
    pub(super) fn index(&self, key: &str) -> (Option<OwnerId>, Option<i64>) {
        self.indexes
            .get(key)
            .map_or((None, None), |s| (s.owner, Some(s.position)))
    }

    /// The owner an index entry naming primary key `pk` holds.
    pub(super) fn owner(&self, pk: &str) -> OwnerId {
        self.hashing.owner(pk)
    }
}

/// Heap bytes of one allocation of `len` bytes: none when empty, else rounded up to the
/// allocator's 8-byte granularity.
const fn allocation(len: usize) -> usize {
    if len == 0 {
        0
    } else {
        len.div_ceil(8) * 8
    }
}

/// Heap bytes of an aggregate key's figures, the key being `key_len` bytes long.
fn aggregate_bytes(key_len: usize, figures: &Figures) -> usize {
    let fields: usize = figures
        .iter()
        .map(|(f, v)| allocation(f.len()) + allocation(v.len()))
        .sum();
    allocation(key_len) + allocation(figures.len() * size_of::<(String, String)>()) + fields
}

/// Bytes of a hash table's own allocation holding entries of type `T` at `capacity`:
/// hashbrown keeps a bucket per 7/8 of an entry (a power of two), each a slot and a control
/// byte.
fn table_bytes<T>(capacity: usize) -> usize {
    if capacity == 0 {
        return 0;
    }
    let buckets = (capacity * 8 / 7).next_power_of_two();
    buckets * (size_of::<T>() + 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apply::owned::test_mappings;

    fn state() -> OwnedState {
        OwnedState::new(&[test_mappings::customers()])
    }

    fn row(position: i64, email: &str) -> RowState {
        RowState {
            position,
            values: vec![Some("1".into()), Some(email.into())],
            scores: vec![],
        }
    }

    #[test]
    fn memory_follows_every_change_and_its_rollback() {
        let mut state = state();
        assert_eq!(state.memory(), 0);
        let mut undo = Vec::new();
        state.set_row(
            &mut undo,
            0,
            "customer:1",
            Some(row(1, "a@example.com")),
            None,
        );
        let owner = Some(state.owner("1"));
        let index = IndexState { owner, position: 1 };
        state.set_index(&mut undo, "customer:email:a@example.com", 0, index.clone());
        // The row's bytes and their length: flags, count, "1" (2), "a@example.com" (14),
        // count: 19, and 1.
        assert_eq!(state.rows[0].heap(), 20);
        // A row slot of 16 bytes and an index slot of 28, each found through a table of 4
        // buckets of 4 + 1 bytes.
        assert_eq!(state.memory(), 20 + (16 + 4 * 5) + (28 + 4 * 5));
        state.set_row(
            &mut undo,
            0,
            "customer:1",
            Some(row(2, "a-much-longer@example.com")),
            Some(row(1, "a@example.com")),
        );
        assert_eq!(state.rows[0].heap(), 32);
        let stored = state.rows[0].get("customer:1");
        state.set_row(&mut undo, 0, "customer:1", None, stored);
        assert_eq!(state.rows[0].heap(), 0);
        state.rollback(UndoLog(undo));
        assert_eq!(state.rows[0].heap(), 0);
        assert_eq!(state.size(), (0, 0));

        // A key loaded twice (HSCAN may repeat one) is counted once.
        state.load_row(0, "customer:1", row(1, "a@example.com"));
        state.load_row(0, "customer:1", row(1, "a@example.com"));
        state.load_index("customer:email:a@example.com", Some("1"), 1);
        state.load_index("customer:email:a@example.com", Some("1"), 1);
        assert_eq!(state.rows[0].heap(), 20);
        assert_eq!(state.size(), (1, 1));
        assert_eq!(
            state.index("customer:email:a@example.com"),
            (owner, Some(1))
        );
    }

    #[test]
    fn aggregate_figures_are_counted_and_rolled_back() {
        let mut state = state();
        let mut undo = Vec::new();
        let figures = |count: &str| vec![("count".to_owned(), count.to_owned())];
        state.set_aggregate(&mut undo, "customer:1:stats", Some(figures("1")));
        // The key (16 -> 16), one (String, String) slot (48), "count" (8) and "1" (8).
        assert_eq!(state.aggregate_heap, 16 + 48 + 8 + 8);
        state.set_aggregate(&mut undo, "customer:1:stats", Some(figures("12")));
        state.set_aggregate(&mut undo, "customer:1:stats", None);
        assert_eq!(state.aggregate_heap, 0);
        state.rollback(UndoLog(undo));
        assert_eq!(state.aggregate_heap, 0);
        assert!(state.aggregates.is_empty());
    }
}
