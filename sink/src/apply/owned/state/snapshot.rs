//! The bookkeeping as bytes, so that an exclusive writer that stops cleanly can leave it in
//! Redis and the next one can start from it instead of reading every row and index key
//! (`owned/snapshots.rs` stores and takes it). Only what the tables hold is written: rows
//! as their bytes, index keys as fingerprints, with the seed those were made with; the
//! aggregates are counted again from the rows, as after a load.
//!
//! A snapshot is used only for the same sink version and the same mappings (a fingerprint
//! of both), and only while `sink:offsets` holds for the writer's topics what it held when
//! the snapshot was made: any writer that applies a change records its offset, so a
//! snapshot that another writer made stale is refused.
//!
//! Layout (little endian): `SINKSNAP`, format (u32), config fingerprint (u128), seed (u64);
//! offsets: count (u32), each field (u32 length, bytes) and offset (i64); per mapping, in
//! configuration order: rows (u64), each position (i64) and bytes (u32 length, bytes);
//! index keys (u64), each fingerprint (96 bits: 12 bytes), owner (u64, 0 for none) and
//! position (i64).

use mapping::Mapping;
use xxhash_rust::xxh3::Xxh3;

use super::hashing::{KeyHashing, OwnerId};
use super::OwnedState;

const MAGIC: &[u8; 8] = b"SINKSNAP";
/// Bytes of an index key's fingerprint (`KeyHashing::fingerprint`: 96 bits).
const FINGERPRINT_BYTES: usize = 12;
/// 2: index fingerprints of 96 bits (1: 128).
const FORMAT: u32 = 2;

/// The `sink:offsets` fields of a writer's topics with their offsets, sorted by field.
pub(crate) type SnapshotOffsets = Vec<(String, i64)>;

/// Why a snapshot was not used (the writer then reads the bookkeeping from Redis).
#[derive(Debug, thiserror::Error)]
pub(crate) enum SnapshotRefusal {
    /// The bytes are not a snapshot this sink can read.
    #[error("its bytes are not a bookkeeping snapshot of this format: {0}")]
    Format(&'static str),
    /// Made by another sink version or for other mappings.
    #[error("it was made by another sink version or for other mappings")]
    Config,
    /// `sink:offsets` moved since: another writer applied changes.
    #[error("the offsets in redis moved since it was made: another writer applied changes")]
    Offsets,
    /// Its bytes alone are more than `--max-writer-memory` (the state would take more).
    #[error("its {bytes} bytes are more than --max-writer-memory allows ({bound})")]
    TooLarge {
        /// The snapshot's size.
        bytes: usize,
        /// `--max-writer-memory`.
        bound: usize,
    },
}

impl OwnedState {
    /// What a snapshot must have been made for: this sink version, this format and every
    /// mapping's bookkeeping model.
    fn config_fingerprint(&self) -> u128 {
        let shape = format!(
            "{} {FORMAT} {:?} {:?}",
            env!("CARGO_PKG_VERSION"),
            self.models,
            self.index_hashes
        );
        xxhash_rust::xxh3::xxh3_128(shape.as_bytes())
    }

    /// The state as snapshot bytes, made when `sink:offsets` held `offsets` for the writer's
    /// topics.
    pub(crate) fn to_snapshot(&self, offsets: &SnapshotOffsets) -> Vec<u8> {
        let rows: usize = self.rows.iter().map(|t| t.heap() + 12 * t.len()).sum();
        let mut out = Vec::with_capacity(64 + rows + 32 * self.indexes.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&FORMAT.to_le_bytes());
        out.extend_from_slice(&self.config_fingerprint().to_le_bytes());
        out.extend_from_slice(&self.hashing.seed().to_le_bytes());
        put_len(&mut out, offsets.len());
        for (field, offset) in offsets {
            put_len(&mut out, field.len());
            out.extend_from_slice(field.as_bytes());
            out.extend_from_slice(&offset.to_le_bytes());
        }
        for table in &self.rows {
            out.extend_from_slice(&(table.len() as u64).to_le_bytes());
            for (position, bytes) in table.raw() {
                out.extend_from_slice(&position.to_le_bytes());
                put_len(&mut out, bytes.len());
                out.extend_from_slice(bytes);
            }
        }
        out.extend_from_slice(&(self.indexes.len() as u64).to_le_bytes());
        for (fingerprint, owner, position) in self.indexes.raw() {
            out.extend_from_slice(&fingerprint.to_le_bytes()[..FINGERPRINT_BYTES]);
            out.extend_from_slice(&OwnerId::bits(owner).to_le_bytes());
            out.extend_from_slice(&position.to_le_bytes());
        }
        out
    }

    /// The state of `mappings` a snapshot holds, if it was made for them by this sink
    /// version and `sink:offsets` holds `offsets_now` as it did then. Aggregates are
    /// counted from the rows.
    ///
    /// The bytes come in `chunks` as Redis hands them over, so that the snapshot is never
    /// held whole besides the state it holds: a buffer of its size, freed right after,
    /// stayed resident (BENCHMARKS.md, *Exclusive writer memory*). Their length and checksum
    /// must be the manifest's `len` and `checksum`, which only the end can tell: a state
    /// built from damaged bytes is dropped then.
    pub(crate) fn from_snapshot(
        mappings: &[Mapping],
        chunks: impl IntoIterator<Item = Vec<u8>>,
        (len, checksum): (usize, u64),
        offsets_now: &SnapshotOffsets,
    ) -> Result<OwnedState, SnapshotRefusal> {
        let mut r = Reader::new(chunks.into_iter(), len);
        if r.take(MAGIC.len())? != MAGIC || r.u32()? != FORMAT {
            return Err(SnapshotRefusal::Format("no snapshot header"));
        }
        let config = r.u128()?;
        let mut state = OwnedState::with_hashing(mappings, KeyHashing::from_seed(r.u64()?));
        if config != state.config_fingerprint() {
            return Err(SnapshotRefusal::Config);
        }
        let mut offsets = Vec::new();
        for _ in 0..r.u32()? {
            let len = r.u32()? as usize;
            let field = std::str::from_utf8(r.take(len)?)
                .map_err(|_| SnapshotRefusal::Format("an offsets field is not UTF-8"))?;
            offsets.push((field.to_owned(), r.i64()?));
        }
        if &offsets != offsets_now {
            return Err(SnapshotRefusal::Offsets);
        }
        for m in 0..state.rows.len() {
            let count = r.count(12)?;
            state.rows[m].reserve(count);
            for _ in 0..count {
                let position = r.i64()?;
                let len = r.u32()? as usize;
                state.rows[m].insert_raw(position, r.take(len)?);
            }
        }
        let count = r.count(FINGERPRINT_BYTES + 16)?;
        state.indexes.reserve(count);
        for _ in 0..count {
            let fingerprint = r.fingerprint()?;
            let owner = OwnerId::from_bits(r.u64()?);
            state.indexes.insert_raw(fingerprint, owner, r.i64()?);
        }
        r.finish(checksum)?;
        Ok(state)
    }
}

fn put_len(out: &mut Vec<u8>, len: usize) {
    out.extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_le_bytes());
}

/// Reads snapshot bytes front to back as their chunks arrive, hashing them; running out
/// is a [`SnapshotRefusal::Format`].
struct Reader<I> {
    chunks: I,
    chunk: Vec<u8>,
    /// Bytes of `chunk` read.
    at: usize,
    /// Bytes the manifest says the snapshot has, and of those, the ones still to read.
    len: usize,
    left: usize,
    /// Bytes received and their hash.
    received: usize,
    hasher: Xxh3,
    /// A read that spans two chunks, put together.
    joined: Vec<u8>,
}

impl<I: Iterator<Item = Vec<u8>>> Reader<I> {
    fn new(chunks: I, len: usize) -> Reader<I> {
        Reader {
            chunks,
            chunk: Vec::new(),
            at: 0,
            len,
            left: len,
            received: 0,
            hasher: Xxh3::new(),
            joined: Vec::new(),
        }
    }

    fn take(&mut self, n: usize) -> Result<&[u8], SnapshotRefusal> {
        if n > self.left {
            return Err(SnapshotRefusal::Format("cut short"));
        }
        self.left -= n;
        if self.chunk.len() - self.at >= n {
            self.at += n;
            return Ok(&self.chunk[self.at - n..self.at]);
        }
        self.joined.clear();
        while self.joined.len() < n {
            if self.at == self.chunk.len() {
                self.next_chunk()?;
            }
            let part = (n - self.joined.len()).min(self.chunk.len() - self.at);
            self.joined
                .extend_from_slice(&self.chunk[self.at..self.at + part]);
            self.at += part;
        }
        Ok(&self.joined)
    }

    fn next_chunk(&mut self) -> Result<(), SnapshotRefusal> {
        let chunk = self
            .chunks
            .next()
            .ok_or(SnapshotRefusal::Format("cut short"))?;
        self.hasher.update(&chunk);
        self.received += chunk.len();
        self.chunk = chunk;
        self.at = 0;
        Ok(())
    }

    /// Checks that every byte was read, and that they are the manifest's.
    fn finish(mut self, checksum: u64) -> Result<(), SnapshotRefusal> {
        if self.left != 0 || self.at != self.chunk.len() {
            return Err(SnapshotRefusal::Format("bytes after the index keys"));
        }
        for chunk in self.chunks.by_ref() {
            self.hasher.update(&chunk);
            self.received += chunk.len();
        }
        if self.received != self.len || self.hasher.digest() != checksum {
            return Err(SnapshotRefusal::Format(
                "its bytes do not match the manifest (a chunk missing or changed)",
            ));
        }
        Ok(())
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], SnapshotRefusal> {
        let mut out = [0; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn u32(&mut self) -> Result<u32, SnapshotRefusal> {
        self.array().map(u32::from_le_bytes)
    }

    fn u64(&mut self) -> Result<u64, SnapshotRefusal> {
        self.array().map(u64::from_le_bytes)
    }

    fn i64(&mut self) -> Result<i64, SnapshotRefusal> {
        self.array().map(i64::from_le_bytes)
    }

    fn u128(&mut self) -> Result<u128, SnapshotRefusal> {
        self.array().map(u128::from_le_bytes)
    }

    /// An index key's fingerprint: its 96 bits, little endian.
    fn fingerprint(&mut self) -> Result<u128, SnapshotRefusal> {
        let mut bytes = [0; 16];
        bytes[..FINGERPRINT_BYTES].copy_from_slice(self.take(FINGERPRINT_BYTES)?);
        Ok(u128::from_le_bytes(bytes))
    }

    /// A count of entries of at least `entry` bytes each, no more than the bytes left hold
    /// (so that damaged bytes cannot make the tables reserve without bound).
    fn count(&mut self, entry: usize) -> Result<usize, SnapshotRefusal> {
        let count = usize::try_from(self.u64()?).unwrap_or(usize::MAX);
        if count > self.left / entry {
            return Err(SnapshotRefusal::Format(
                "a count larger than the bytes left",
            ));
        }
        Ok(count)
    }
}

#[cfg(test)]
mod tests {
    use mapping::KeyTemplate;

    use super::super::{IndexState, RowState};
    use super::*;
    use crate::apply::owned::test_mappings;

    fn mappings() -> Vec<Mapping> {
        vec![test_mappings::customers(), test_mappings::orders()]
    }

    fn filled() -> OwnedState {
        let mut state = OwnedState::new(&mappings());
        let mut undo = Vec::new();
        for i in 0..500_i64 {
            let email = format!("user{i}@example.com");
            let customer = RowState {
                position: i,
                values: vec![Some(i.to_string()), Some(email.clone())],
                scores: vec![],
            };
            state.set_row(&mut undo, 0, &format!("customer:{i}"), Some(customer), None);
            let owner = (i % 5 != 0).then(|| state.owner(&i.to_string()));
            let index = IndexState { owner, position: i };
            state.set_index(&mut undo, &format!("customer:email:{email}"), 0, index);
            let order = RowState {
                position: 1000 + i,
                values: vec![Some(i.to_string()), None],
                scores: vec![Some(i as f64 / 2.0)],
            };
            state.set_row(&mut undo, 1, &format!("order:{i}"), Some(order), None);
        }
        // A key the values do not render.
        let odd = RowState {
            position: 7,
            values: vec![Some("7".into()), Some("seven@example.com".into())],
            scores: vec![],
        };
        state.set_row(&mut undo, 0, "customer:007", Some(odd), None);
        state
    }

    fn offsets() -> SnapshotOffsets {
        vec![
            ("cdc.customers/0".into(), 500),
            ("cdc.orders/0".into(), 499),
        ]
    }

    /// `bytes` in chunks of `size`, with their length and checksum, as a manifest has them.
    fn read(
        mappings: &[Mapping],
        bytes: &[u8],
        size: usize,
        offsets_now: &SnapshotOffsets,
    ) -> Result<OwnedState, SnapshotRefusal> {
        let chunks = bytes.chunks(size).map(<[u8]>::to_vec);
        let manifest = (bytes.len(), xxhash_rust::xxh3::xxh3_64(bytes));
        OwnedState::from_snapshot(mappings, chunks, manifest, offsets_now)
    }

    #[test]
    fn a_state_comes_back_from_its_snapshot_in_chunks_of_any_size() {
        let state = filled();
        let bytes = state.to_snapshot(&offsets());
        for size in [1, 7, 4096, bytes.len()] {
            let back = read(&mappings(), &bytes, size, &offsets()).unwrap();
            assert_eq!(back.size(), state.size(), "chunks of {size}");
            assert_eq!(back.memory(), state.memory(), "chunks of {size}");
        }
        let back = read(&mappings(), &bytes, 7, &offsets()).unwrap();
        assert_eq!(back.size(), state.size());
        assert_eq!(back.memory(), state.memory());
        for key in ["customer:0", "customer:499", "customer:007", "order:3"] {
            let (m, expected) = if key.starts_with("order") {
                (1, state.rows[1].get(key))
            } else {
                (0, state.rows[0].get(key))
            };
            let got = back.rows[m].get(key).unwrap();
            let expected = expected.unwrap();
            assert_eq!(
                (got.position, got.values, got.scores),
                (expected.position, expected.values, expected.scores),
                "{key}"
            );
        }
        for i in [0, 1, 250, 499] {
            let key = format!("customer:email:user{i}@example.com");
            assert_eq!(back.index(&key), state.index(&key), "{key}");
            assert_eq!(back.owner(&i.to_string()), state.owner(&i.to_string()));
        }
    }

    #[test]
    fn a_snapshot_is_refused_when_offsets_moved_mappings_changed_or_bytes_are_damaged() {
        let state = filled();
        let bytes = state.to_snapshot(&offsets());
        let mut moved = offsets();
        moved[1].1 += 1;
        assert!(matches!(
            read(&mappings(), &bytes, 1000, &moved),
            Err(SnapshotRefusal::Offsets)
        ));
        let mut other = mappings();
        other[0].indexes[0].key = KeyTemplate::parse("customer:mail:{email}").unwrap();
        assert!(matches!(
            read(&other, &bytes, 1000, &offsets()),
            Err(SnapshotRefusal::Config)
        ));
        for cut in [0, 10, bytes.len() / 2, bytes.len() - 1] {
            assert!(matches!(
                read(&mappings(), &bytes[..cut], 1000, &offsets()),
                Err(SnapshotRefusal::Format(_))
            ));
        }
        // Format 1 held 128-bit fingerprints: this version must not read its keys.
        let mut format_1 = bytes.clone();
        format_1[MAGIC.len()..MAGIC.len() + 4].copy_from_slice(&1_u32.to_le_bytes());
        assert!(matches!(
            read(&mappings(), &format_1, 1000, &offsets()),
            Err(SnapshotRefusal::Format(_))
        ));
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(matches!(
            read(&mappings(), &longer, 1000, &offsets()),
            Err(SnapshotRefusal::Format(_))
        ));
        // The manifest's length and checksum are checked against the chunks read.
        let manifest = (bytes.len(), xxhash_rust::xxh3::xxh3_64(&bytes));
        let chunks = |bytes: &[u8]| bytes.chunks(1000).map(<[u8]>::to_vec).collect::<Vec<_>>();
        let mut changed = bytes.clone();
        let last = changed.len() - 1;
        changed[last] ^= 1;
        assert!(matches!(
            OwnedState::from_snapshot(&mappings(), chunks(&changed), manifest, &offsets()),
            Err(SnapshotRefusal::Format(_))
        ));
        let mut extra = chunks(&bytes);
        extra.push(vec![0]);
        assert!(matches!(
            OwnedState::from_snapshot(&mappings(), extra, manifest, &offsets()),
            Err(SnapshotRefusal::Format(_))
        ));
        assert!(
            OwnedState::from_snapshot(&mappings(), chunks(&bytes), manifest, &offsets()).is_ok()
        );
    }
}
