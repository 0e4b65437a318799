//! One mapping's rows: per row its `sink:rows` position and its bookkeeping bytes
//! (`row_bytes.rs`, kept in pages: `arena.rs`), in a table that stores no key. A row is
//! found by its key's hash and recognised by rendering the key template from its values,
//! which give the key for every row the planner keys from its own values; any other row
//! keeps its key in its bytes.

use std::sync::Arc;

use super::arena::{Arena, Loc};
use super::dense::DenseTable;
use super::hashing::KeyHashing;
use super::row_bytes::{self, RowBytes};
use super::RowState;
use crate::apply::owned::model::{Model, Part};

/// A row as held: 16 bytes in the table's vector, its bytes in the arena.
struct Slot {
    position: i64,
    loc: Loc,
}

/// The rows of one mapping.
pub(crate) struct RowTable {
    keys: RowKeys,
    table: DenseTable<Slot>,
    arena: Arena,
    /// The bytes of the row being written (one buffer for every write).
    scratch: Vec<u8>,
}

/// How the table hashes and recognises the keys of one mapping's rows.
struct RowKeys {
    model: Arc<Model>,
    hashing: KeyHashing,
}

impl RowKeys {
    fn template(&self) -> &[Part] {
        &self.model.key
    }

    /// The hash of the key of the row whose bytes are `bytes`, without rendering it.
    fn of_row(&self, bytes: &[u8]) -> u64 {
        RowBytes(bytes).key_hash(self.template(), &self.hashing)
    }

    /// The hash of a slot's row (what growing the table needs).
    fn of_slot(&self, arena: &Arena, slot: &Slot) -> u64 {
        self.of_row(arena.get(slot.loc))
    }

    /// Whether a slot's row has key `key`.
    fn matches(&self, arena: &Arena, slot: &Slot, key: &str) -> bool {
        RowBytes(arena.get(slot.loc)).has_key(self.template(), key)
    }
}

impl RowTable {
    pub(super) fn new(model: Arc<Model>, hashing: KeyHashing) -> RowTable {
        RowTable {
            keys: RowKeys { model, hashing },
            table: DenseTable::default(),
            arena: Arena::default(),
            scratch: Vec::new(),
        }
    }

    fn find(&self, key: &str) -> Option<(&Slot, RowBytes<'_>)> {
        let (keys, arena) = (&self.keys, &self.arena);
        let n = self
            .table
            .find(keys.hashing.of(key), |s| keys.matches(arena, s, key))?;
        let slot = self.table.get(n);
        Some((slot, RowBytes(arena.get(slot.loc))))
    }

    /// Row `key`, decoded.
    pub(crate) fn get(&self, key: &str) -> Option<RowState> {
        self.find(key).map(|(s, bytes)| bytes.decode(s.position))
    }

    pub(crate) fn len(&self) -> usize {
        self.table.len()
    }

    /// Every row with its key, decoded.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (String, RowState)> + '_ {
        self.raw().map(|(position, bytes)| {
            let bytes = RowBytes(bytes);
            (bytes.key(self.keys.template()), bytes.decode(position))
        })
    }

    /// Every row's key and position, without decoding its values.
    pub(crate) fn keys_and_positions(&self) -> impl Iterator<Item = (String, i64)> + '_ {
        self.raw()
            .map(|(position, bytes)| (RowBytes(bytes).key(self.keys.template()), position))
    }

    /// Every row as held: (position, bytes), for a snapshot.
    pub(crate) fn raw(&self) -> impl Iterator<Item = (i64, &[u8])> + '_ {
        self.table
            .iter()
            .map(|s| (s.position, self.arena.get(s.loc)))
    }

    /// Adds a row a snapshot held ([`RowTable::raw`]), which this table does not hold.
    pub(crate) fn insert_raw(&mut self, position: i64, bytes: &[u8]) {
        let hash = self.keys.of_row(bytes);
        let slot = Slot {
            position,
            loc: self.arena.push(bytes),
        };
        let (keys, arena) = (&self.keys, &self.arena);
        self.table
            .insert_unique(hash, slot, |s| keys.of_slot(arena, s));
    }

    /// Sets (or with `None` removes) row `key`; the previous state.
    pub(crate) fn replace(&mut self, key: &str, state: Option<RowState>) -> Option<RowState> {
        self.write(key, state, true)
    }

    /// [`RowTable::replace`] for a caller that holds the previous state already (decoding
    /// it again was a tenth of a decision's time).
    pub(crate) fn put(&mut self, key: &str, state: Option<RowState>) {
        self.write(key, state, false);
    }

    /// Sets (or removes) row `key`; the previous state, decoded when `decode_old`.
    fn write(&mut self, key: &str, state: Option<RowState>, decode_old: bool) -> Option<RowState> {
        let RowTable {
            keys,
            table,
            arena,
            scratch,
        } = self;
        let hash = keys.hashing.of(key);
        if let Some(state) = &state {
            row_bytes::encode_into(scratch, key, keys.template(), state);
        }
        let found = table.find(hash, |s| keys.matches(arena, s, key));
        let old = match (found, state) {
            (Some(n), Some(state)) => {
                let slot = table.get_mut(n);
                let old = decode_old.then(|| RowBytes(arena.get(slot.loc)).decode(slot.position));
                slot.position = state.position;
                // Most updates change no value the bookkeeping keeps: the bytes stay put.
                if arena.get(slot.loc) != &scratch[..] {
                    arena.remove(slot.loc);
                    slot.loc = arena.push(scratch);
                }
                old
            }
            (Some(n), None) => {
                let slot = table.remove(hash, n, |s| keys.of_slot(arena, s));
                let old = decode_old.then(|| RowBytes(arena.get(slot.loc)).decode(slot.position));
                arena.remove(slot.loc);
                old
            }
            (None, Some(state)) => {
                let slot = Slot {
                    position: state.position,
                    loc: arena.push(scratch),
                };
                table.insert_unique(hash, slot, |s| keys.of_slot(arena, s));
                None
            }
            (None, None) => None,
        };
        if arena.wants_compaction() {
            arena.compact(table.iter_mut().map(|s| &mut s.loc));
        }
        old
    }

    /// Makes room for `additional` more rows at once (a load knows how many): one table
    /// allocation instead of every doubling on the way.
    pub(super) fn reserve(&mut self, additional: usize) {
        let (keys, arena) = (&self.keys, &self.arena);
        self.table.reserve(additional, |s| keys.of_slot(arena, s));
    }

    /// Bytes of the rows' bytes (`Arena::live`). A bound on memory uses this and not the
    /// pages held, so that a state weighs the same while it is written and when it is loaded:
    /// a sink stopped at `--max-writer-memory` must be refused at its next start, not stopped
    /// again after applying more.
    pub(super) fn heap(&self) -> usize {
        self.arena.live()
    }

    /// Bytes of the table's allocations.
    pub(super) fn table_memory(&self) -> usize {
        self.table.memory()
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
    fn a_slot_is_16_bytes() {
        assert_eq!(size_of::<Slot>(), 16);
    }

    /// Updates that change the rows' bytes, two rows in three each round: their pages keep
    /// live rows among dead ones, the compactions move rows within the arena, and every row
    /// is still found with its values.
    #[test]
    fn rows_survive_the_compactions_of_their_updates() {
        let mut rows = table();
        let n = 40_000usize;
        let value = |i: usize, version: usize| {
            format!("{:x}", i * 31 + version).repeat(8 + version % 7 * 4)
        };
        let mut versions = vec![0usize; n];
        for i in 0..n {
            rows.replace(
                &format!("line:{i}:{}", value(i, 0)),
                Some(row(0, &i.to_string(), &value(i, 0))),
            );
        }
        for round in 1..=12 {
            for (i, version) in versions.iter_mut().enumerate() {
                if (i * 7 + round) % 3 == 0 {
                    continue;
                }
                let (old, new) = (value(i, *version), value(i, round));
                assert!(rows.replace(&format!("line:{i}:{old}"), None).is_some());
                let state = row(round as i64, &i.to_string(), &new);
                rows.replace(&format!("line:{i}:{new}"), Some(state));
                *version = round;
            }
        }
        assert_eq!(rows.len(), n);
        assert!(rows.arena.compactions() > 0);
        for (i, &version) in versions.iter().enumerate() {
            let new = value(i, version);
            let state = rows.get(&format!("line:{i}:{new}")).expect("row found");
            assert_eq!(state.position, version as i64);
            assert_eq!(state.values, row(0, &i.to_string(), &new).values);
        }
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
        assert_eq!(rows.get("line:7:1").map(|s| s.position), Some(7));
        assert_eq!(rows.get("line:07:1").map(|s| s.position), Some(5000));
        assert_eq!(rows.get("line:1:7").map(|s| s.position), None);
        assert_eq!(
            rows.get("line:1999:1").unwrap().values,
            row(0, "1999", "1").values
        );

        let old = rows.replace("line:7:1", Some(row(8, "7", "1"))).unwrap();
        assert_eq!(old.position, 7);
        for i in (0..2000).step_by(2) {
            assert!(rows.replace(&format!("line:{i}:1"), None).is_some());
        }
        assert_eq!(rows.len(), 1001);
        assert_eq!(rows.get("line:7:1").map(|s| s.position), Some(8));
        assert_eq!(rows.get("line:8:1").map(|s| s.position), None);
        let mut keys: Vec<String> = rows.iter().map(|(k, _)| k).collect();
        keys.sort();
        assert_eq!(keys[0], "line:07:1");
        assert_eq!(keys[1], "line:1001:1");
    }
}
