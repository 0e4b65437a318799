//! The index keys: per key its owner and its `sink:index` position, in a table that holds a
//! 96-bit fingerprint of each key instead of the key (`hashing.rs`). Every write of an
//! index key is decided from a key rendered from a change, so the table is only ever asked
//! about keys it can fingerprint.

use super::dense::DenseTable;
use super::hashing::{KeyHashing, OwnerId};
use super::IndexState;

/// An index key as held: 28 bytes, nothing on the heap. Packed to 4-byte alignment, since
/// 8 would pad it to 32: a seventh more for every index key (fields are only ever copied
/// out, never borrowed).
#[repr(C, packed(4))]
struct Slot {
    /// The fingerprint's low 64 bits, also the table's hash (xxh3 mixes every bit).
    fingerprint_low: u64,
    fingerprint_high: u32,
    owner: Option<OwnerId>,
    position: i64,
}

impl Slot {
    fn new(fingerprint: u128, state: IndexState) -> Slot {
        Slot {
            fingerprint_low: fingerprint as u64,
            fingerprint_high: (fingerprint >> 64) as u32,
            owner: state.owner,
            position: state.position,
        }
    }

    fn fingerprint(&self) -> u128 {
        u128::from(self.fingerprint_high) << 64 | u128::from(self.fingerprint_low)
    }

    fn hash(&self) -> u64 {
        self.fingerprint_low
    }

    fn state(&self) -> IndexState {
        IndexState {
            owner: self.owner,
            position: self.position,
        }
    }
}

/// The index keys of every mapping.
pub(crate) struct IndexTable {
    hashing: KeyHashing,
    table: DenseTable<Slot>,
}

impl IndexTable {
    pub(super) fn new(hashing: KeyHashing) -> IndexTable {
        IndexTable {
            hashing,
            table: DenseTable::default(),
        }
    }

    /// Index key `key`'s owner and position.
    pub(crate) fn get(&self, key: &str) -> Option<IndexState> {
        let fingerprint = self.hashing.fingerprint(key);
        self.table
            .find(fingerprint as u64, |s| s.fingerprint() == fingerprint)
            .map(|n| self.table.get(n).state())
    }

    pub(crate) fn len(&self) -> usize {
        self.table.len()
    }

    /// Every index key as held: (fingerprint, owner, position), for a snapshot.
    pub(crate) fn raw(&self) -> impl Iterator<Item = (u128, Option<OwnerId>, i64)> + '_ {
        self.table
            .iter()
            .map(|s| (s.fingerprint(), s.owner, s.position))
    }

    /// Adds an index key a snapshot held ([`IndexTable::raw`]), which this table does not
    /// hold; the snapshot's fingerprints are this table's when its hashing has the
    /// snapshot's seed.
    pub(crate) fn insert_raw(&mut self, fingerprint: u128, owner: Option<OwnerId>, position: i64) {
        let slot = Slot::new(fingerprint, IndexState { owner, position });
        self.table.insert_unique(slot.hash(), slot, Slot::hash);
    }

    /// Sets (or with `None` removes) index key `key`; the previous state.
    pub(crate) fn replace(&mut self, key: &str, state: Option<IndexState>) -> Option<IndexState> {
        let fingerprint = self.hashing.fingerprint(key);
        let hash = fingerprint as u64;
        let held = self.table.find(hash, |s| s.fingerprint() == fingerprint);
        let new = state.map(|s| Slot::new(fingerprint, s));
        let old = match (held, new) {
            (Some(n), Some(new)) => Some(std::mem::replace(self.table.get_mut(n), new)),
            (Some(n), None) => Some(self.table.remove(hash, n, Slot::hash)),
            (None, Some(new)) => {
                self.table.insert_unique(hash, new, Slot::hash);
                None
            }
            (None, None) => None,
        };
        old.as_ref().map(Slot::state)
    }

    /// Makes room for `additional` more index keys at once (a load knows how many).
    pub(super) fn reserve(&mut self, additional: usize) {
        self.table.reserve(additional, Slot::hash);
    }

    /// Estimated bytes held: the table's allocations.
    pub(super) fn memory(&self) -> usize {
        self.table.memory()
    }
}

#[cfg(test)]
mod tests {
    use std::mem::size_of;

    use super::*;

    #[test]
    fn a_slot_is_28_bytes() {
        assert_eq!(size_of::<Slot>(), 28);
    }

    #[test]
    fn keys_are_found_by_fingerprint_through_growth_and_removal() {
        let hashing = KeyHashing::random();
        let mut indexes = IndexTable::new(hashing);
        let key = |i: i64| format!("customer:email:user{i}@example.com");
        for i in 0..5000 {
            let state = IndexState {
                owner: (i % 3 != 0).then(|| hashing.owner(&i.to_string())),
                position: i,
            };
            assert_eq!(indexes.replace(&key(i), Some(state)), None);
        }
        assert_eq!(indexes.len(), 5000);
        for i in (0..5000).step_by(7) {
            let state = indexes.get(&key(i)).unwrap();
            assert_eq!(state.position, i);
            assert_eq!(state.owner.is_some(), i % 3 != 0);
        }
        let released = IndexState {
            owner: None,
            position: 9,
        };
        let old = indexes.replace(&key(1), Some(released.clone())).unwrap();
        assert_eq!(old.owner, Some(hashing.owner("1")));
        assert_eq!(indexes.get(&key(1)), Some(released));
        assert!(indexes.replace(&key(2), None).is_some());
        assert_eq!(indexes.get(&key(2)), None);
        assert_eq!(indexes.get("customer:email:nobody@example.com"), None);
        assert_eq!(indexes.len(), 4999);
    }
}
