//! The bookkeeping an owning writer holds in memory, mirroring what the change script reads
//! from Redis: per row its `sink:rows` position, its hash's template fields and its relation
//! scores; per index key its owner and `sink:index` position. Every change to it is logged
//! so that a batch Redis refuses can be undone.

use std::sync::Arc;

use mapping::Mapping;

use super::model::Model;
use super::HashMap;

/// What the sink stored for one row: its `sink:rows` position, its hash's template fields,
/// and per relation its member's score in the parent its values render (None: no member).
#[derive(Debug, Clone)]
pub(super) struct RowState {
    pub(super) position: i64,
    pub(super) values: Vec<Option<String>>,
    pub(super) scores: Vec<Option<f64>>,
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
        }
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

    pub(super) fn set_row(
        &mut self,
        undo: &mut Vec<Undo>,
        m: usize,
        key: &str,
        state: Option<RowState>,
    ) {
        let rows = &mut self.rows[m];
        let old = match (state, rows.get_mut(key)) {
            (Some(s), Some(slot)) => Some(std::mem::replace(slot, s)),
            (Some(s), None) => rows.insert(key.to_owned(), s),
            (None, _) => rows.remove(key),
        };
        undo.push(Undo::Row(m, key.to_owned(), old));
    }

    pub(super) fn set_index(&mut self, undo: &mut Vec<Undo>, key: &str, state: IndexState) {
        let old = match self.indexes.get_mut(key) {
            Some(slot) => Some(std::mem::replace(slot, state)),
            None => self.indexes.insert(key.to_owned(), state),
        };
        undo.push(Undo::Index(key.to_owned(), old));
    }

    pub(super) fn index(&self, key: &str) -> (Option<&str>, Option<i64>) {
        self.indexes
            .get(key)
            .map_or((None, None), |s| (s.owner.as_deref(), Some(s.position)))
    }
}
