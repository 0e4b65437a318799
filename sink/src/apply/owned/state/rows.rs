//! One mapping's rows: per row its `sink:rows` position and its bookkeeping bytes
//! (`row_bytes.rs`), in a table that stores no key. A row is found by its key's hash and
//! recognised by rendering the key template from its values, which give the key for every
//! row the planner keys from its own values; any other row keeps its key in its bytes.

use std::sync::Arc;

use hashbrown::HashTable;

use super::hashing::KeyHashing;
use super::row_bytes::{self, RowBytes};
use super::{allocation, put, table_bytes, RowState};
use crate::apply::owned::model::{Model, Part};

/// A row as held: 24 bytes in the table, its bytes in one allocation.
struct Slot {
    position: i64,
    bytes: Box<[u8]>,
}

impl Slot {
    /// The table's hash of the row's key (what growing the table needs).
    fn key_hash(&self, template: &[Part], hashing: &KeyHashing) -> u64 {
        RowBytes(&self.bytes).key_hash(template, hashing)
    }
}

/// The rows of one mapping.
pub(crate) struct RowTable {
    model: Arc<Model>,
    hashing: KeyHashing,
    table: HashTable<Slot>,
    /// Bytes of the rows' allocations, rounded as the allocator does.
    heap: usize,
}

impl RowTable {
    pub(super) fn new(model: Arc<Model>, hashing: KeyHashing) -> RowTable {
        RowTable {
            model,
            hashing,
            table: HashTable::new(),
            heap: 0,
        }
    }

    fn find(&self, key: &str) -> Option<&Slot> {
        let template = &self.model.key;
        self.table.find(self.hashing.of(key), |s| {
            RowBytes(&s.bytes).has_key(template, key)
        })
    }

    /// Row `key`, decoded.
    pub(crate) fn get(&self, key: &str) -> Option<RowState> {
        self.find(key)
            .map(|s| RowBytes(&s.bytes).decode(s.position))
    }

    /// Row `key`'s `sink:rows` position.
    pub(crate) fn position(&self, key: &str) -> Option<i64> {
        self.find(key).map(|s| s.position)
    }

    pub(crate) fn len(&self) -> usize {
        self.table.len()
    }

    /// Every row with its key, decoded.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (String, RowState)> + '_ {
        self.table.iter().map(|s| {
            let bytes = RowBytes(&s.bytes);
            (bytes.key(&self.model.key), bytes.decode(s.position))
        })
    }

    /// Every row as held: (position, bytes), for a snapshot.
    pub(crate) fn raw(&self) -> impl Iterator<Item = (i64, &[u8])> + '_ {
        self.table.iter().map(|s| (s.position, &s.bytes[..]))
    }

    /// Adds a row a snapshot held ([`RowTable::raw`]), which this table does not hold.
    pub(crate) fn insert_raw(&mut self, position: i64, bytes: Box<[u8]>) {
        let (template, hashing) = (&self.model.key, &self.hashing);
        let hash = RowBytes(&bytes).key_hash(template, hashing);
        self.heap += allocation(bytes.len());
        self.table
            .insert_unique(hash, Slot { position, bytes }, |s| {
                s.key_hash(template, hashing)
            });
    }

    /// Sets (or with `None` removes) row `key`; the previous state.
    pub(crate) fn replace(&mut self, key: &str, state: Option<RowState>) -> Option<RowState> {
        let RowTable {
            model,
            hashing,
            table,
            heap,
        } = self;
        let template = &model.key;
        let entry = table.entry(
            hashing.of(key),
            |s| RowBytes(&s.bytes).has_key(template, key),
            |s| s.key_hash(template, hashing),
        );
        let new = state.map(|state| Slot {
            position: state.position,
            bytes: row_bytes::encode(key, template, &state),
        });
        *heap += new.as_ref().map_or(0, |s| allocation(s.bytes.len()));
        let old = put(entry, new);
        old.map(|s| {
            *heap -= allocation(s.bytes.len());
            RowBytes(&s.bytes).decode(s.position)
        })
    }

    /// Makes room for `additional` more rows at once (a load knows how many): one table
    /// allocation instead of every doubling on the way.
    pub(super) fn reserve(&mut self, additional: usize) {
        let (template, hashing) = (&self.model.key, &self.hashing);
        self.table
            .reserve(additional, |s| s.key_hash(template, hashing));
    }

    /// Bytes of the rows' allocations.
    pub(super) fn heap(&self) -> usize {
        self.heap
    }

    /// Bytes of the table's allocation.
    pub(super) fn table_memory(&self) -> usize {
        table_bytes::<Slot>(self.table.capacity())
    }

    /// The rows' allocations counted from scratch (for tests of the running count).
    #[cfg(test)]
    pub(super) fn recount(&self) -> usize {
        self.table.iter().map(|s| allocation(s.bytes.len())).sum()
    }
}

#[cfg(test)]
mod tests {
    use std::mem::size_of;

    use mapping::{FieldSelection, KeyTemplate, Mapping};

    use super::*;

    fn table() -> RowTable {
        let mapping = Mapping {
            name: "lines".into(),
            topic: "cdc.lines".into(),
            key: KeyTemplate::parse("line:{order_id}:{n}").unwrap(),
            fields: FieldSelection::All,
            types: Default::default(),
            ttl_seconds: None,
            indexes: vec![],
            relations: vec![],
            lookups: vec![],
            aggregates: vec![],
            search: vec![],
        };
        RowTable::new(Arc::new(Model::new(&mapping)), KeyHashing::random())
    }

    fn row(position: i64, order: &str, n: &str) -> RowState {
        RowState {
            position,
            values: vec![Some(order.into()), Some(n.into())],
            scores: vec![],
        }
    }

    #[test]
    fn a_slot_is_24_bytes() {
        assert_eq!(size_of::<Slot>(), 24);
    }

    #[test]
    fn rows_are_found_by_key_through_growth_and_removal() {
        let mut rows = table();
        for i in 0..2000 {
            let key = format!("line:{i}:1");
            assert!(rows
                .replace(&key, Some(row(i, &i.to_string(), "1")))
                .is_none());
        }
        // A key the planner wrote differently from the values is kept as it came.
        rows.replace("line:07:1", Some(row(5000, "7", "1")));
        assert_eq!(rows.len(), 2001);
        assert_eq!(rows.position("line:7:1"), Some(7));
        assert_eq!(rows.position("line:07:1"), Some(5000));
        assert_eq!(rows.position("line:1:7"), None);
        assert_eq!(
            rows.get("line:1999:1").unwrap().values,
            row(0, "1999", "1").values
        );
        assert_eq!(rows.heap(), rows.recount());

        let old = rows.replace("line:7:1", Some(row(8, "7", "1"))).unwrap();
        assert_eq!(old.position, 7);
        for i in (0..2000).step_by(2) {
            assert!(rows.replace(&format!("line:{i}:1"), None).is_some());
        }
        assert_eq!(rows.len(), 1001);
        assert_eq!(rows.position("line:7:1"), Some(8));
        assert_eq!(rows.position("line:8:1"), None);
        assert_eq!(rows.heap(), rows.recount());
        let mut keys: Vec<String> = rows.iter().map(|(k, _)| k).collect();
        keys.sort();
        assert_eq!(keys[0], "line:07:1");
        assert_eq!(keys[1], "line:1001:1");
    }
}
