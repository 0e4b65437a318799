//! A hash table whose entries sit side by side in one vector, found through a table of
//! their numbers (4 bytes a bucket), as in `indexmap`.
//!
//! A hash table keeps a bucket per entry and then some: its buckets are a power of two, at
//! most 7/8 used, so between 44 and 88 % of them hold an entry, and every bucket is written
//! when the table is made. A million rows and 1.3 million index keys left both bookkeeping
//! tables at 2^21 buckets of 16 and 32 bytes: 100 MiB, 40 of them empty buckets
//! (BENCHMARKS.md, *Exclusive writer memory*). Here an empty bucket costs 5 bytes, and the
//! entries' vector grows by a quarter at a time, so at most a fifth of it is spare.
//!
//! The numbers are `u32`: a table holds at most 2^32 − 1 entries (at the 64 bytes an entry
//! #17 allows, 256 GiB of bookkeeping).

use std::mem::size_of;

use hashbrown::HashTable;

use super::table_bytes;

/// Entries of type `T`, each found by a hash the caller computes from it.
pub(super) struct DenseTable<T> {
    entries: Vec<T>,
    numbers: HashTable<u32>,
}

impl<T> Default for DenseTable<T> {
    fn default() -> Self {
        DenseTable {
            entries: Vec::new(),
            numbers: HashTable::new(),
        }
    }
}

impl<T> DenseTable<T> {
    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }

    pub(super) fn iter(&self) -> std::slice::Iter<'_, T> {
        self.entries.iter()
    }

    pub(super) fn iter_mut(&mut self) -> std::slice::IterMut<'_, T> {
        self.entries.iter_mut()
    }

    /// The number of the entry with hash `hash` that `is` recognises.
    pub(super) fn find(&self, hash: u64, is: impl Fn(&T) -> bool) -> Option<usize> {
        let entries = &self.entries;
        self.numbers
            .find(hash, |&n| is(&entries[n as usize]))
            .map(|&n| n as usize)
    }

    pub(super) fn get(&self, number: usize) -> &T {
        &self.entries[number]
    }

    pub(super) fn get_mut(&mut self, number: usize) -> &mut T {
        &mut self.entries[number]
    }

    /// Adds `entry`, whose hash is `hash` and which the table does not hold; `hash_of`
    /// gives any entry's hash (growing the table rehashes them).
    pub(super) fn insert_unique(&mut self, hash: u64, entry: T, hash_of: impl Fn(&T) -> u64) {
        let number = u32::try_from(self.entries.len())
            .ok()
            .filter(|&n| n < u32::MAX)
            .expect("a bookkeeping table holds fewer than 2^32 - 1 entries");
        if self.entries.len() == self.entries.capacity() {
            self.entries.reserve_exact((self.entries.len() / 4).max(16));
        }
        self.entries.push(entry);
        let entries = &self.entries;
        self.numbers
            .insert_unique(hash, number, |&n| hash_of(&entries[n as usize]));
    }

    /// Removes entry `number`, whose hash is `hash`; the last entry takes its number.
    pub(super) fn remove(&mut self, hash: u64, number: usize, hash_of: impl Fn(&T) -> u64) -> T {
        let held = self
            .numbers
            .find_entry(hash, |&n| n as usize == number)
            .expect("the entry's number is in the table under its hash");
        held.remove();
        let entry = self.entries.swap_remove(number);
        if let Some(moved) = self.entries.get(number) {
            let last = self.entries.len() as u32;
            *self
                .numbers
                .find_mut(hash_of(moved), |&n| n == last)
                .expect("the last entry's number is in the table under its hash") = number as u32;
        }
        entry
    }

    /// Makes room for `additional` more entries at once (a load knows how many).
    pub(super) fn reserve(&mut self, additional: usize, hash_of: impl Fn(&T) -> u64) {
        self.entries.reserve_exact(additional);
        let entries = &self.entries;
        self.numbers
            .reserve(additional, |&n| hash_of(&entries[n as usize]));
    }

    /// Bytes held: the entries in use and the numbers' table ([`table_bytes`]). Only the
    /// entries in use count, since a state must weigh the same when written, its vector up
    /// to a quarter spare, and when loaded, its vector exact; the spare part is not written,
    /// so it is resident only where the allocator hands out pages it used before.
    pub(super) fn memory(&self) -> usize {
        self.entries.len() * size_of::<T>() + table_bytes::<u32>(self.numbers.capacity())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Entries are (key, value); the hash is deliberately poor (key % 64) so that numbers
    /// share buckets' probe sequences and a wrong renumbering would be found.
    fn hash(entry: &(u64, u64)) -> u64 {
        entry.0 % 64
    }

    fn find(table: &DenseTable<(u64, u64)>, key: u64) -> Option<u64> {
        table.find(key % 64, |e| e.0 == key).map(|n| table.get(n).1)
    }

    #[test]
    fn entries_are_found_through_growth_and_removals_in_any_order() {
        let mut table = DenseTable::default();
        for key in 0..3000_u64 {
            table.insert_unique(key % 64, (key, key * 10), hash);
        }
        // Remove every third key, the first, the last and some in between.
        for key in (0..3000_u64).filter(|k| k % 3 == 0).rev().chain([2999, 1]) {
            let number = table.find(key % 64, |e| e.0 == key).unwrap();
            assert_eq!(table.remove(key % 64, number, hash), (key, key * 10));
        }
        assert_eq!(table.len(), 3000 - 1000 - 2);
        for key in 0..3000_u64 {
            let held = key % 3 != 0 && key != 2999 && key != 1;
            assert_eq!(find(&table, key), held.then_some(key * 10), "key {key}");
        }
        let number = table.find(2, |e| e.0 == 2).unwrap();
        table.get_mut(number).1 = 7;
        assert_eq!(find(&table, 2), Some(7));
        let mut keys: Vec<u64> = table.iter().map(|e| e.0).collect();
        keys.sort_unstable();
        assert_eq!(keys.len(), table.len());
        assert_eq!(keys[..3], [2, 4, 5]);
    }

    #[test]
    fn removing_the_only_entry_empties_the_table() {
        let mut table = DenseTable::default();
        table.insert_unique(5, (5, 1), hash);
        assert_eq!(table.remove(5, 0, hash), (5, 1));
        assert_eq!(table.len(), 0);
        assert_eq!(find(&table, 5), None);
    }

    /// The entries grow by a quarter, so the spare part of the vector stays small.
    #[test]
    fn the_entries_vector_has_little_spare_room() {
        let mut table = DenseTable::default();
        for key in 0..100_000_u64 {
            table.insert_unique(key % 64, (key, 0), hash);
        }
        let spare = table.entries.capacity() - table.len();
        assert!(spare * 4 <= table.len(), "{spare} spare entries");
    }
}
