//! The bookkeeping an owning writer holds in memory, mirroring what the change script reads
//! from Redis: per row its `sink:rows` position, its hash's template fields and its relation
//! scores; per index key its owner and `sink:index` position. Every change to it is logged
//! so that a batch Redis refuses can be undone.
//!
//! # Memory
//!
//! [`OwnedState::memory`] estimates the bytes it holds, for `--max-writer-memory`: every
//! entry's heap allocations (its key, template values and scores, each rounded up to the
//! allocator's 8-byte granularity), counted as entries come and go, plus the hash tables at
//! their current capacity (a slot per bucket and a control byte). What the allocator keeps
//! beyond that is not counted: README, *Bounded resources*, gives the estimate against
//! the process's measured growth.

use std::mem::size_of;
use std::sync::Arc;

use mapping::Mapping;

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
    /// row's member of its sorted set (`mapping::search`; [`RowState::search_members`]). One
    /// vector rather than two keeps a row's slot as small as before searches existed.
    pub(super) values: Vec<Option<String>>,
    pub(super) scores: Vec<Option<f64>>,
}

impl RowState {
    /// The row's search members: what follows its `fields` template values.
    pub(super) fn search_members(&self, fields: usize) -> &[Option<String>] {
        self.values.get(fields..).unwrap_or_default()
    }
}

/// What the sink stored for one index key: its value (the owner), its `sink:index`
/// position, and which bookkeeping hash that is in.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct IndexState {
    pub(super) owner: Option<String>,
    pub(super) position: i64,
    pub(super) hash: usize,
}

/// How to undo one mutation of the state (a batch whose writes fail is rolled back); also
/// the list of bookkeeping entries the batch changed.
pub(super) enum Undo {
    Row(usize, String, Option<RowState>),
    Index(String, Option<IndexState>),
    Aggregate(String, Option<Figures>),
}

/// The state changes of one decided batch, for [`OwnedState::rollback`]; also the list of
/// bookkeeping entries the batch changed.
pub(crate) struct UndoLog(pub(super) Vec<Undo>);

/// The bookkeeping of a database this process alone writes (decided on by `decide.rs`).
pub(crate) struct OwnedState {
    pub(super) models: Vec<Arc<Model>>,
    /// Per mapping: row key -> state (`sink:rows` and the hash's template fields).
    pub(super) rows: Vec<HashMap<String, RowState>>,
    /// Index key -> owner and position (the key's value and its `sink:index` entry).
    pub(super) indexes: HashMap<String, IndexState>,
    /// Every index bookkeeping hash name (`sink:index:{mapping}:{index}`), numbered.
    pub(super) index_hashes: Vec<String>,
    /// Per mapping: the number of its first index in `index_hashes`.
    pub(super) first_index: Vec<usize>,
    /// Aggregate parent key -> its hash's figures (`aggregates.rs`).
    pub(super) aggregates: HashMap<String, Figures>,
    /// Heap bytes of the entries of `rows`, `indexes` and `aggregates` (see
    /// [`OwnedState::memory`]).
    pub(super) heap: usize,
}

impl OwnedState {
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
            aggregates: HashMap::default(),
            heap: 0,
        }
    }

    /// Estimated bytes held: the entries' heap allocations and the hash tables (module doc).
    pub(crate) fn memory(&self) -> usize {
        self.heap
            + self.rows.iter().map(table_bytes).sum::<usize>()
            + table_bytes(&self.indexes)
            + table_bytes(&self.aggregates)
    }

    /// How much bookkeeping is held: (rows of every mapping, index keys).
    pub(crate) fn size(&self) -> (usize, usize) {
        let rows = self.rows.iter().map(HashMap::len).sum();
        (rows, self.indexes.len())
    }

    /// Undoes what [`super::decide::decide`] changed, newest first.
    pub(crate) fn rollback(&mut self, UndoLog(undo): UndoLog) {
        for u in undo.into_iter().rev() {
            match u {
                Undo::Row(m, key, state) => {
                    self.replace_row(m, &key, state);
                }
                Undo::Index(key, state) => {
                    self.replace_index(&key, state);
                }
                Undo::Aggregate(key, figures) => {
                    self.replace_aggregate(&key, figures);
                }
            }
        }
    }

    pub(super) fn set_row(
        &mut self,
        undo: &mut Vec<Undo>,
        m: usize,
        key: &str,
        state: Option<RowState>,
    ) {
        let old = self.replace_row(m, key, state);
        undo.push(Undo::Row(m, key.to_owned(), old));
    }

    pub(super) fn set_index(&mut self, undo: &mut Vec<Undo>, key: &str, state: IndexState) {
        let old = self.replace_index(key, Some(state));
        undo.push(Undo::Index(key.to_owned(), old));
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
    /// [`OwnedState::heap`]; the previous figures.
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
        self.heap = self.heap + added - removed;
        old
    }

    /// Sets (or with `None` removes) row `key` of mapping `m`, keeping [`OwnedState::heap`];
    /// the previous state.
    fn replace_row(&mut self, m: usize, key: &str, state: Option<RowState>) -> Option<RowState> {
        let added = state.as_ref().map_or(0, |s| row_bytes(key.len(), s));
        let rows = &mut self.rows[m];
        let old = match (state, rows.get_mut(key)) {
            (Some(s), Some(slot)) => Some(std::mem::replace(slot, s)),
            (Some(s), None) => rows.insert(key.to_owned(), s),
            (None, _) => rows.remove(key),
        };
        let removed = old.as_ref().map_or(0, |s| row_bytes(key.len(), s));
        self.heap = self.heap + added - removed;
        old
    }

    /// Sets (or with `None` removes) index key `key`, keeping [`OwnedState::heap`]; the
    /// previous state.
    fn replace_index(&mut self, key: &str, state: Option<IndexState>) -> Option<IndexState> {
        let added = state.as_ref().map_or(0, |s| index_bytes(key.len(), s));
        let old = match (state, self.indexes.get_mut(key)) {
            (Some(s), Some(slot)) => Some(std::mem::replace(slot, s)),
            (Some(s), None) => self.indexes.insert(key.to_owned(), s),
            (None, _) => self.indexes.remove(key),
        };
        let removed = old.as_ref().map_or(0, |s| index_bytes(key.len(), s));
        self.heap = self.heap + added - removed;
        old
    }

    /// Adds row `key` of mapping `m` as loaded from Redis (`HSCAN` may repeat a key).
    pub(super) fn load_row(&mut self, m: usize, key: String, state: RowState) {
        let key_len = key.len();
        self.heap += row_bytes(key_len, &state);
        if let Some(old) = self.rows[m].insert(key, state) {
            self.heap -= row_bytes(key_len, &old);
        }
    }

    /// Adds index key `key` as loaded from Redis (`HSCAN` may repeat a key).
    pub(super) fn load_index(&mut self, key: String, state: IndexState) {
        let key_len = key.len();
        self.heap += index_bytes(key_len, &state);
        if let Some(old) = self.indexes.insert(key, state) {
            self.heap -= index_bytes(key_len, &old);
        }
    }

    pub(super) fn index(&self, key: &str) -> (Option<&str>, Option<i64>) {
        self.indexes
            .get(key)
            .map_or((None, None), |s| (s.owner.as_deref(), Some(s.position)))
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

/// Heap bytes of a row entry whose key is `key_len` bytes long.
fn row_bytes(key_len: usize, row: &RowState) -> usize {
    let values: usize = row
        .values
        .iter()
        .map(|v| v.as_ref().map_or(0, |s| allocation(s.len())))
        .sum();
    allocation(key_len)
        + allocation(row.values.len() * size_of::<Option<String>>())
        + values
        + allocation(row.scores.len() * size_of::<Option<f64>>())
}

/// Heap bytes of an index entry whose key is `key_len` bytes long.
fn index_bytes(key_len: usize, index: &IndexState) -> usize {
    allocation(key_len) + index.owner.as_ref().map_or(0, |o| allocation(o.len()))
}

/// Heap bytes of an aggregate key's figures, the key being `key_len` bytes long.
fn aggregate_bytes(key_len: usize, figures: &Figures) -> usize {
    let fields: usize = figures
        .iter()
        .map(|(f, v)| allocation(f.len()) + allocation(v.len()))
        .sum();
    allocation(key_len) + allocation(figures.len() * size_of::<(String, String)>()) + fields
}

/// Bytes of a hash table's own allocation at its current capacity: hashbrown keeps a bucket
/// per 7/8 of an entry (a power of two), each a slot and a control byte.
fn table_bytes<K, V>(map: &HashMap<K, V>) -> usize {
    if map.capacity() == 0 {
        return 0;
    }
    let buckets = (map.capacity() * 8 / 7).next_power_of_two();
    buckets * (size_of::<(K, V)>() + 1)
}

#[cfg(test)]
mod tests {
    use mapping::{FieldSelection, Index, KeyTemplate};

    use super::*;

    fn state() -> OwnedState {
        OwnedState::new(&[Mapping {
            name: "customers".into(),
            topic: "cdc.customers".into(),
            key: KeyTemplate::parse("customer:{id}").unwrap(),
            fields: FieldSelection::All,
            types: Default::default(),
            ttl_seconds: None,
            indexes: vec![Index {
                name: "email".into(),
                key: KeyTemplate::parse("customer:email:{email}").unwrap(),
            }],
            relations: vec![],
            lookups: vec![],
            aggregates: vec![],
            search: vec![],
        }])
    }

    /// The entries' heap bytes counted from scratch.
    fn recount(state: &OwnedState) -> usize {
        let rows: usize = state
            .rows
            .iter()
            .flat_map(|rows| rows.iter().map(|(k, r)| row_bytes(k.len(), r)))
            .sum();
        let indexes: usize = state
            .indexes
            .iter()
            .map(|(k, i)| index_bytes(k.len(), i))
            .sum();
        rows + indexes
    }

    fn row(position: i64, email: &str) -> RowState {
        RowState {
            position,
            values: vec![Some("1".into()), Some(email.into())],
            scores: vec![],
        }
    }

    fn index(owner: &str) -> IndexState {
        IndexState {
            owner: Some(owner.into()),
            position: 1,
            hash: 0,
        }
    }

    #[test]
    fn table_slots_are_as_documented() {
        // README, "Bounded resources": 81 bytes per row slot, 65 per index key slot.
        assert_eq!(size_of::<(String, RowState)>() + 1, 81);
        assert_eq!(size_of::<(String, IndexState)>() + 1, 65);
    }

    #[test]
    fn memory_follows_every_change_and_its_rollback() {
        let mut state = state();
        assert_eq!(state.memory(), 0);
        let mut undo = Vec::new();
        state.set_row(&mut undo, 0, "customer:1", Some(row(1, "a@example.com")));
        state.set_index(&mut undo, "customer:email:a@example.com", index("1"));
        // "customer:1" (10 -> 16), values 2 * 24, "1" (8), "a@example.com" (13 -> 16);
        // the index key (28 -> 32) and its owner (8).
        assert_eq!(state.heap, 16 + 48 + 8 + 16 + 32 + 8);
        assert_eq!(state.heap, recount(&state));
        assert!(state.memory() > state.heap, "the tables count too");
        state.set_row(
            &mut undo,
            0,
            "customer:1",
            Some(row(2, "a-much-longer@example.com")),
        );
        assert_eq!(state.heap, recount(&state));
        state.set_row(&mut undo, 0, "customer:1", None);
        assert_eq!(state.heap, recount(&state));
        state.rollback(UndoLog(undo));
        assert_eq!(state.heap, 0);
        assert_eq!(state.size(), (0, 0));

        // A key loaded twice (HSCAN may repeat one) is counted once.
        state.load_row(0, "customer:1".into(), row(1, "a@example.com"));
        state.load_row(0, "customer:1".into(), row(1, "a@example.com"));
        state.load_index("customer:email:a@example.com".into(), index("1"));
        state.load_index("customer:email:a@example.com".into(), index("1"));
        assert_eq!(state.heap, 16 + 48 + 8 + 16 + 32 + 8);
    }

    #[test]
    fn aggregate_figures_are_counted_and_rolled_back() {
        let mut state = state();
        let mut undo = Vec::new();
        let figures = |count: &str| vec![("count".to_owned(), count.to_owned())];
        state.set_aggregate(&mut undo, "customer:1:stats", Some(figures("1")));
        // The key (16 -> 16), one (String, String) slot (48), "count" (8) and "1" (8).
        assert_eq!(state.heap, 16 + 48 + 8 + 8);
        state.set_aggregate(&mut undo, "customer:1:stats", Some(figures("12")));
        state.set_aggregate(&mut undo, "customer:1:stats", None);
        assert_eq!(state.heap, 0);
        state.rollback(UndoLog(undo));
        assert_eq!(state.heap, 0);
        assert!(state.aggregates.is_empty());
    }
}
