//! The hashes that stand in for keys in the bookkeeping tables: a row table finds a row by
//! its key's hash and then compares the key itself (rendered from the row's values), an
//! index table holds a 96-bit fingerprint of each index key instead of the key, and an
//! index entry names its owner by a 64-bit hash of the owner's primary key.
//!
//! xxh3, seeded at random per process (or with the seed of the snapshot a writer started
//! from, whose fingerprints were made with it; `snapshot.rs`): keys come from the source
//! database, so a fixed seed would let whoever writes rows craft keys that collide in a table
//! (long probe chains) or share a fingerprint. A snapshot holds its seed, so whoever can read
//! Redis as well could. Collision odds with a random seed: two of a million index keys
//! sharing a fingerprint about 6.3e-18 (n² / 2^97); an index entry naming another row with
//! the same owner hash 5.4e-20 per comparison. xxh3's streaming form hashes the same bytes
//! to the same value as the one-shot form, so a key rendered piece by piece hashes like its
//! text.

use std::hash::BuildHasher;
use std::num::NonZeroU64;

use xxhash_rust::xxh3::{xxh3_128_with_seed, xxh3_64_with_seed, Xxh3};

/// The bits of a 128-bit hash that make an index key's fingerprint.
const FINGERPRINT_MASK: u128 = (1 << 96) - 1;

/// The row (by a hash of its primary key) an index key names; `None` in an [`IndexState`]
/// when the key names no row.
///
/// [`IndexState`]: super::IndexState
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OwnerId(NonZeroU64);

impl OwnerId {
    /// The owner as a snapshot stores it; 0 for none.
    pub(crate) fn bits(owner: Option<OwnerId>) -> u64 {
        owner.map_or(0, |o| o.0.get())
    }

    /// The owner a snapshot stored as `bits`.
    pub(crate) fn from_bits(bits: u64) -> Option<OwnerId> {
        NonZeroU64::new(bits).map(OwnerId)
    }
}

/// This process's seeded key hashes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct KeyHashing {
    seed: u64,
}

impl KeyHashing {
    /// Hashing with a seed drawn from the standard library's per-process random keys.
    pub(crate) fn random() -> KeyHashing {
        KeyHashing {
            seed: std::hash::RandomState::new().hash_one(0_u8),
        }
    }

    /// Hashing with `seed`: a snapshot's, whose fingerprints and owners were made with it.
    pub(crate) fn from_seed(seed: u64) -> KeyHashing {
        KeyHashing { seed }
    }

    /// The seed, for a snapshot.
    pub(crate) fn seed(&self) -> u64 {
        self.seed
    }

    /// A row table's hash of `key`.
    pub(crate) fn of(&self, key: &str) -> u64 {
        xxh3_64_with_seed(key.as_bytes(), self.seed)
    }

    /// A hasher whose digest over pieces equals [`KeyHashing::of`] of their concatenation.
    pub(crate) fn pieces(&self) -> Xxh3 {
        Xxh3::with_seed(self.seed)
    }

    /// An index key's fingerprint, which the index table holds instead of the key: the low
    /// 96 bits of its 128-bit hash (module doc: the odds of two keys sharing one).
    pub(crate) fn fingerprint(&self, key: &str) -> u128 {
        xxh3_128_with_seed(key.as_bytes(), self.seed) & FINGERPRINT_MASK
    }

    /// The owner an index entry holding primary key `pk` names.
    pub(crate) fn owner(&self, pk: &str) -> OwnerId {
        let hash = xxh3_64_with_seed(pk.as_bytes(), self.seed.rotate_left(32));
        OwnerId(NonZeroU64::new(hash).unwrap_or(NonZeroU64::MIN))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_hashed_in_pieces_hashes_like_its_text() {
        let hashing = KeyHashing::random();
        let mut pieces = hashing.pieces();
        for piece in ["customer:", "12", ":", "", "a@example.com"] {
            pieces.update(piece.as_bytes());
        }
        assert_eq!(pieces.digest(), hashing.of("customer:12:a@example.com"));
    }

    #[test]
    fn seeds_differ_between_hashings() {
        let (a, b) = (KeyHashing::random(), KeyHashing::random());
        assert_ne!(a.of("customer:1"), b.of("customer:1"));
        assert_ne!(a.owner("1"), a.owner("2"));
    }
}
