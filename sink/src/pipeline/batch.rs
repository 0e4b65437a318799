//! One batch of work for Redis: planned changes in consumption order, the column types to
//! record first (a mapping's value schema changed), and the highest offset seen per partition
//! (dead-lettered records included), stored once the batch is applied.
//!
//! The raw key and value bytes of each planned change are kept in one buffer per batch (no
//! allocation per record), so that a change Redis rejects for good can still be
//! dead-lettered byte for byte.
//!
//! Each partition's records in a batch were read under one assignment of it, whose fence
//! (apply/fence.rs) the batch carries to the writers: when a rebalance gives a partition a
//! new assignment while the batch is being filled, the records read under the old one are
//! dropped from it ([`Batch::enter`]).
//!
//! A batch is bounded by records and by bytes ([`BatchSettings`]): it is full at
//! `max_records` records or `max_bytes` bytes of held keys and values, and a record that would
//! take it past `max_bytes` starts the next batch instead ([`Batch::has_room_for`]). A record
//! larger than `max_bytes` on its own still forms a batch of one, so nothing is ever stuck.

use std::ops::Range;
use std::sync::Arc;

use mapping::ColumnType;

use crate::apply::{Fences, PlannedChange};
use crate::config::BatchSettings;

/// A topic partition, with the topic name shared between all records of the topic.
pub type Partition = (Arc<str>, i32);

/// Columns and their types from a value schema.
pub type Columns = Arc<[(String, ColumnType)]>;

/// Where a record's key and value sit in [`RawRecords`]'s buffer.
type Spans = (Option<Range<usize>>, Option<Range<usize>>);

/// Work for the apply stage, in order.
#[derive(Debug, Default)]
pub struct Batch {
    /// Planned changes in consumption order.
    pub changes: Vec<PlannedChange>,
    /// The raw bytes of `changes[i]`, at index `i`.
    pub raw: RawRecords,
    /// `(mapping, columns)` to record in `sink:types:{mapping}` before the changes.
    pub column_types: Vec<(usize, Columns)>,
    /// Per partition: the last offset consumed and how many records (a handful of
    /// partitions: a vector beats a map).
    pub partitions: Vec<PartitionMark>,
    /// Records consumed (applied, skipped or dead-lettered).
    pub records: usize,
    /// Per partition: the fence of the assignment its records were read under (`None`: no
    /// marker known).
    pub fences: Vec<(Partition, Option<Arc<str>>)>,
}

impl Batch {
    /// An empty batch with room for `capacity` changes.
    pub fn with_capacity(capacity: usize) -> Batch {
        Batch {
            changes: Vec::with_capacity(capacity),
            raw: RawRecords::with_capacity(capacity),
            ..Batch::default()
        }
    }

    /// Adds a planned change with the record's raw bytes.
    pub fn push_change(&mut self, change: PlannedChange, key: Option<&[u8]>, value: Option<&[u8]>) {
        self.changes.push(change);
        self.raw.push(key, value);
    }

    /// Removes change `i` (it was dead-lettered).
    pub fn remove_change(&mut self, i: usize) -> PlannedChange {
        self.raw.remove(i);
        self.changes.remove(i)
    }

    /// Whether nothing was consumed into this batch.
    pub fn is_empty(&self) -> bool {
        self.records == 0
    }

    /// Bytes of keys and values held for the planned changes.
    pub fn bytes(&self) -> usize {
        self.raw.bytes.len()
    }

    /// Whether a record of `bytes` key and value bytes may join without taking the batch past
    /// `limits.max_bytes`; always when the batch holds no bytes yet (a large record forms a
    /// batch of its own).
    pub fn has_room_for(&self, bytes: usize, limits: &BatchSettings) -> bool {
        self.bytes() == 0 || self.bytes().saturating_add(bytes) <= limits.max_bytes
    }

    /// Whether the batch is to be handed over now: `limits.max_records` records or
    /// `limits.max_bytes` bytes.
    pub fn is_full(&self, limits: &BatchSettings) -> bool {
        self.records >= limits.max_records || self.bytes() >= limits.max_bytes
    }

    /// Notes that the next record of `topic`/`partition` was read under the assignment fenced
    /// by `fence`. When the batch holds records of the partition read under another
    /// assignment, that one was superseded: they are dropped (their offsets were not stored,
    /// and the new assignment starts at or before them), and their count returned.
    pub fn enter(&mut self, topic: &Arc<str>, partition: i32, fence: Option<Arc<str>>) -> usize {
        let known = self
            .fences
            .iter_mut()
            .find(|((t, p), _)| *p == partition && **t == **topic);
        match known {
            Some((_, current)) if *current == fence => 0,
            Some((_, current)) => {
                *current = fence;
                self.drop_partition(topic, partition)
            }
            None => {
                self.fences.push(((Arc::clone(topic), partition), fence));
                0
            }
        }
    }

    /// Drops the records of `topic`/`partition`; how many there were.
    fn drop_partition(&mut self, topic: &Arc<str>, partition: i32) -> usize {
        let Some(i) = self
            .partitions
            .iter()
            .position(|m| m.partition.1 == partition && *m.partition.0 == **topic)
        else {
            return 0;
        };
        let mark = self.partitions.remove(i);
        self.records -= mark.records;
        let changes = std::mem::take(&mut self.changes);
        let mut raw = RawRecords::with_capacity(changes.len());
        for (i, change) in changes.into_iter().enumerate() {
            if change.partition != partition || *change.topic != **topic {
                let (key, value) = self.raw.get(i);
                raw.push(key, value);
                self.changes.push(change);
            }
        }
        self.raw = raw;
        mark.records
    }

    /// Whether no partition of the batch was read under a fenced assignment (its
    /// assignment could not mark it).
    pub fn is_unfenced(&self) -> bool {
        self.fences.iter().all(|(_, fence)| fence.is_none())
    }

    /// The fences of the batch's partitions, for the writers.
    pub fn fences(&self) -> Fences {
        self.fences.iter().fold(
            Fences::none(),
            |fences, ((topic, partition), fence)| match fence {
                Some(fence) => fences.with(topic, *partition, Arc::clone(fence)),
                None => fences,
            },
        )
    }

    /// Notes that `offset` of `topic`/`partition` was consumed.
    pub fn note_offset(&mut self, topic: &Arc<str>, partition: i32, offset: i64) {
        self.records += 1;
        match self
            .partitions
            .iter_mut()
            .find(|m| m.partition.1 == partition && *m.partition.0 == **topic)
        {
            Some(mark) => {
                mark.last = mark.last.max(offset);
                mark.records += 1;
            }
            None => self.partitions.push(PartitionMark {
                partition: (Arc::clone(topic), partition),
                last: offset,
                records: 1,
            }),
        }
    }

    /// One batch per partition, each keeping the consumption order of its changes. Column
    /// types are not carried over (the caller records them first).
    pub fn split_by_partition(self) -> Vec<Batch> {
        if self.partitions.len() == 1 {
            let mut single = self;
            single.column_types.clear();
            return vec![single];
        }
        let mut parts: Vec<Batch> = self
            .partitions
            .iter()
            .map(|mark| Batch {
                records: mark.records,
                partitions: vec![mark.clone()],
                fences: self
                    .fences
                    .iter()
                    .filter(|(p, _)| *p == mark.partition)
                    .cloned()
                    .collect(),
                ..Batch::default()
            })
            .collect();
        for (i, change) in self.changes.into_iter().enumerate() {
            let Some(part) = parts.iter_mut().find(|b| {
                let (topic, partition) = &b.partitions[0].partition;
                *partition == change.partition && **topic == *change.topic
            }) else {
                continue;
            };
            let (key, value) = self.raw.get(i);
            part.push_change(change, key, value);
        }
        parts
    }
}

/// Where a batch ends in one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionMark {
    /// The partition.
    pub partition: Partition,
    /// Last offset consumed into the batch.
    pub last: i64,
    /// Records of this partition in the batch.
    pub records: usize,
}

/// Key and value bytes of many records in one buffer.
#[derive(Debug, Default)]
pub struct RawRecords {
    bytes: Vec<u8>,
    spans: Vec<Spans>,
}

impl RawRecords {
    /// Room for `records` records of a typical size.
    pub fn with_capacity(records: usize) -> RawRecords {
        RawRecords {
            bytes: Vec::with_capacity(records * 256),
            spans: Vec::with_capacity(records),
        }
    }

    fn append(&mut self, part: Option<&[u8]>) -> Option<Range<usize>> {
        part.map(|bytes| {
            let start = self.bytes.len();
            self.bytes.extend_from_slice(bytes);
            start..self.bytes.len()
        })
    }

    /// Appends one record's key and value.
    pub fn push(&mut self, key: Option<&[u8]>, value: Option<&[u8]>) {
        let key = self.append(key);
        let value = self.append(value);
        self.spans.push((key, value));
    }

    /// Key and value of record `i`.
    pub fn get(&self, i: usize) -> (Option<&[u8]>, Option<&[u8]>) {
        match self.spans.get(i) {
            Some((key, value)) => (
                key.clone().map(|r| &self.bytes[r]),
                value.clone().map(|r| &self.bytes[r]),
            ),
            None => (None, None),
        }
    }

    /// Forgets record `i` (its bytes stay in the buffer until the batch is dropped).
    pub fn remove(&mut self, i: usize) {
        if i < self.spans.len() {
            self.spans.remove(i);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_last_offset_per_partition() {
        let a: Arc<str> = Arc::from("a");
        let b: Arc<str> = Arc::from("b");
        let mut batch = Batch::default();
        assert!(batch.is_empty());
        batch.note_offset(&a, 0, 5);
        batch.note_offset(&a, 1, 7);
        batch.note_offset(&a, 0, 6);
        batch.note_offset(&b, 0, 1);
        assert_eq!(batch.records, 4);
        let marks: Vec<_> = batch
            .partitions
            .iter()
            .map(|m| (m.partition.clone(), m.last, m.records))
            .collect();
        assert_eq!(
            marks,
            vec![((a.clone(), 0), 6, 2), ((a, 1), 7, 1), ((b, 0), 1, 1)]
        );
    }

    fn change(topic: &Arc<str>, partition: i32, offset: i64) -> PlannedChange {
        PlannedChange {
            mapping: 0,
            op: mapping::Op::Truncate,
            plan: mapping::Plan::Truncate { position: None },
            source_ts_ms: None,
            topic: Arc::clone(topic),
            partition,
            offset,
            record_time: None,
        }
    }

    #[test]
    fn splits_by_partition_in_order_with_raw_bytes() {
        let a: Arc<str> = Arc::from("a");
        let mut batch = Batch::default();
        for (partition, offset) in [(0, 10), (1, 20), (0, 11), (1, 21), (0, 12)] {
            batch.note_offset(&a, partition, offset);
            // Offset 11 was dead-lettered: consumed, not planned.
            if offset != 11 {
                let key = offset.to_string();
                batch.push_change(change(&a, partition, offset), Some(key.as_bytes()), None);
            }
        }
        let parts = batch.split_by_partition();
        assert_eq!(parts.len(), 2);
        let offsets: Vec<Vec<i64>> = parts
            .iter()
            .map(|b| b.changes.iter().map(|c| c.offset).collect())
            .collect();
        assert_eq!(offsets, vec![vec![10, 12], vec![20, 21]]);
        assert_eq!(parts[0].records, 3);
        assert_eq!(parts[0].partitions[0].last, 12);
        assert_eq!(parts[1].records, 2);
        assert_eq!(parts[0].raw.get(1), (Some(&b"12"[..]), None));
        assert_eq!(parts[1].raw.get(0), (Some(&b"20"[..]), None));
    }

    #[test]
    fn a_new_assignment_drops_the_records_read_under_the_old_one() {
        let a: Arc<str> = Arc::from("a");
        let old: Option<Arc<str>> = Some(Arc::from("r:old"));
        let new: Option<Arc<str>> = Some(Arc::from("r:new"));
        let mut batch = Batch::default();
        let read = |batch: &mut Batch, partition: i32, offset: i64, fence: &Option<Arc<str>>| {
            let dropped = batch.enter(&a, partition, fence.clone());
            let key = offset.to_string();
            batch.push_change(change(&a, partition, offset), Some(key.as_bytes()), None);
            batch.note_offset(&a, partition, offset);
            dropped
        };
        assert_eq!(read(&mut batch, 0, 10, &old), 0);
        assert_eq!(read(&mut batch, 1, 20, &old), 0);
        assert_eq!(read(&mut batch, 0, 11, &old), 0);
        // Partition 0 assigned again (from offset 5): 10 and 11 belong to the old assignment.
        assert_eq!(read(&mut batch, 0, 5, &new), 2);
        assert_eq!(read(&mut batch, 1, 21, &old), 0);
        assert_eq!(batch.records, 3);
        let parts = batch.split_by_partition();
        let offsets: Vec<Vec<i64>> = parts
            .iter()
            .map(|b| b.changes.iter().map(|c| c.offset).collect())
            .collect();
        assert_eq!(offsets, vec![vec![20, 21], vec![5]]);
        assert_eq!(parts[1].partitions[0].last, 5);
        assert_eq!(parts[1].raw.get(0), (Some(&b"5"[..]), None));
        assert_eq!(parts[0].raw.get(1), (Some(&b"21"[..]), None));
        assert_eq!(parts[0].fences().expected("a/1"), "r:old");
        assert_eq!(parts[1].fences().expected("a/0"), "r:new");
        assert_eq!(parts[1].fences().expected("a/1"), "");
    }

    /// Cuts records of `sizes` bytes into batches as the consume stage does; the sizes of
    /// each batch.
    fn cut(sizes: &[usize], limits: &BatchSettings) -> Vec<Vec<usize>> {
        let topic: Arc<str> = Arc::from("t");
        let mut batches = Vec::new();
        let mut batch = Batch::default();
        let mut current = Vec::new();
        for (offset, &size) in (0..).zip(sizes) {
            if !batch.is_empty() && !batch.has_room_for(size, limits) {
                batches.push(std::mem::take(&mut current));
                batch = Batch::default();
            }
            batch.push_change(change(&topic, 0, offset), None, Some(&vec![0; size]));
            batch.note_offset(&topic, 0, offset);
            current.push(size);
            if batch.is_full(limits) {
                batches.push(std::mem::take(&mut current));
                batch = Batch::default();
            }
        }
        if !current.is_empty() {
            batches.push(current);
        }
        batches
    }

    #[test]
    fn batches_are_bounded_by_bytes_and_records() {
        let limits = BatchSettings::new(3, std::time::Duration::ZERO).with_max_bytes(100);
        // Bytes: 40 + 40 fit, a third 40 would pass 100 and starts the next batch.
        assert_eq!(
            cut(&[40, 40, 40, 40], &limits),
            vec![vec![40, 40], vec![40, 40]]
        );
        // Records: three small ones fill a batch.
        assert_eq!(cut(&[1, 1, 1, 1], &limits), vec![vec![1, 1, 1], vec![1]]);
        // Exactly the bound is full.
        assert_eq!(cut(&[60, 40, 10], &limits), vec![vec![60, 40], vec![10]]);
        // A record above the bound forms a batch of its own, before and after others.
        assert_eq!(
            cut(&[10, 500, 10], &limits),
            vec![vec![10], vec![500], vec![10]]
        );
        // A bound of one byte: one record per batch.
        let one = limits.with_max_bytes(1);
        assert_eq!(cut(&[5, 5], &one), vec![vec![5], vec![5]]);
    }

    #[test]
    fn raw_records_round_trip() {
        let mut raw = RawRecords::default();
        raw.push(Some(b"k1"), Some(b"value1"));
        raw.push(Some(b"k2"), None);
        raw.push(None, Some(b"v3"));
        assert_eq!(raw.get(1), (Some(&b"k2"[..]), None));
        raw.remove(1);
        assert_eq!(raw.get(0), (Some(&b"k1"[..]), Some(&b"value1"[..])));
        assert_eq!(raw.get(1), (None, Some(&b"v3"[..])));
        assert_eq!(raw.get(2), (None, None));
    }
}
