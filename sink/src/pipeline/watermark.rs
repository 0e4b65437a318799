//! The source watermark rule, without I/O: which (LSN, commit time) the sink may claim to
//! hold everything of, given the heartbeats it consumed and how far each partition is applied.
//!
//! Debezium's `heartbeat.action.query` writes the heartbeat table with `now()` and the
//! replication slot's `confirmed_flush_lsn` `C`. Debezium confirms an LSN to the slot only
//! after Kafka Connect committed the offsets of the records up to it, and Connect commits
//! them only once the broker acknowledged those records. So when the sink consumes a
//! heartbeat carrying `C`, every change with LSN <= `C` is already in the Kafka log: the high
//! watermarks of the source's partitions read *after* consuming the heartbeat include them.
//! Once every partition is applied up to those high watermarks, everything up to `C` is in
//! Redis. The commit time claimed is that of the newest heartbeat whose own LSN is <= `C`:
//! everything committed before it has a smaller LSN (commit order is LSN order).
//!
//! A heartbeat may overtake data still in flight on another partition; such data is not
//! confirmed yet, so its LSN is above `C` and the watermark does not claim it
//! (ARCHITECTURE.md, "Source watermark").

use std::collections::VecDeque;

use mapping::{Change, FieldValue};

use crate::apply::Watermark;

/// The heartbeat table's column holding the slot's confirmed LSN.
pub const CONFIRMED_LSN_COLUMN: &str = "confirmed_lsn";

/// Heartbeats remembered per source for the commit-time rule: a few seconds' worth at the
/// stack's 1 s interval; older ones only matter when the slot's confirmation lags that much.
const REMEMBERED: usize = 64;

/// One consumed heartbeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Heartbeat {
    /// Index into `config.sources`.
    pub source: usize,
    /// The heartbeat's own position (`source.lsn`).
    pub lsn: u64,
    /// Its commit time (`source.ts_ms`).
    pub ts_ms: i64,
    /// The slot's confirmed LSN when it was written; `None` before the first confirmation.
    pub confirmed: Option<u64>,
}

impl Heartbeat {
    /// The heartbeat a decoded change of the heartbeat table carries; `None` for changes
    /// that say nothing (tombstones, deletes, records without a position or time).
    pub fn from_change(source: usize, change: &Change) -> Option<Heartbeat> {
        let lsn = u64::try_from(change.position?).ok()?;
        let ts_ms = change.source_ts_ms?;
        let row = change.after.as_ref()?;
        let confirmed = row
            .iter()
            .find(|(name, _)| name == CONFIRMED_LSN_COLUMN)
            .and_then(|(_, value)| match value {
                FieldValue::Int(n) => u64::try_from(*n).ok(),
                FieldValue::String(text) => text.parse::<mapping::lsn::Lsn>().ok().map(|l| l.0),
                _ => None,
            });
        Some(Heartbeat {
            source,
            lsn,
            ts_ms,
            confirmed,
        })
    }
}

/// A confirmation waiting for the partitions to be applied up to their high watermarks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    /// The watermark it becomes.
    pub watermark: Watermark,
    /// `(topic, partition, high watermark)` read after the heartbeat was consumed.
    pub targets: Vec<(String, i32, i64)>,
}

impl Pending {
    /// Whether every target partition is applied up to its high watermark; `next` says where
    /// a partition stands (the next offset to apply).
    pub fn reached(&self, mut next: impl FnMut(&str, i32) -> i64) -> bool {
        self.targets
            .iter()
            .all(|(topic, partition, high)| next(topic, *partition) >= *high)
    }
}

/// The heartbeats of one source, and the confirmation to prove next.
#[derive(Debug, Default)]
pub struct SourceTracker {
    /// Consumed heartbeats `(lsn, ts_ms)`, in consumption (= LSN) order.
    seen: VecDeque<(u64, i64)>,
    /// The newest heartbeat with a confirmation not yet turned into a [`Pending`].
    latest: Option<Heartbeat>,
}

impl SourceTracker {
    /// Remembers a consumed heartbeat.
    pub fn observe(&mut self, heartbeat: Heartbeat) {
        if self
            .seen
            .back()
            .is_some_and(|&(lsn, _)| lsn >= heartbeat.lsn)
        {
            // Redelivered after a restart or rebalance: already known.
            return;
        }
        if self.seen.len() == REMEMBERED {
            self.seen.pop_front();
        }
        self.seen.push_back((heartbeat.lsn, heartbeat.ts_ms));
        if heartbeat.confirmed.is_some() {
            self.latest = Some(heartbeat);
        }
    }

    /// The watermark the newest confirmation proves once the partitions catch up: its
    /// confirmed LSN, and the commit time of the newest heartbeat at or below it. `None`
    /// when there is none, or no remembered heartbeat is at or below it yet (it stays the
    /// candidate until one is). Read the partitions' high watermarks after calling this.
    pub fn candidate(&mut self) -> Option<Watermark> {
        let heartbeat = self.latest?;
        let confirmed = heartbeat.confirmed?;
        let ts_ms = self
            .seen
            .iter()
            .filter(|&&(lsn, _)| lsn <= confirmed)
            .map(|&(_, ts)| ts)
            .max()?;
        self.latest = None;
        Some(Watermark {
            lsn: confirmed,
            ts_ms,
            heartbeat_ts_ms: heartbeat.ts_ms,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mapping::Op;

    fn beat(lsn: u64, ts_ms: i64, confirmed: Option<u64>) -> Heartbeat {
        Heartbeat {
            source: 0,
            lsn,
            ts_ms,
            confirmed,
        }
    }

    #[test]
    fn the_time_is_that_of_the_newest_heartbeat_at_or_below_the_confirmation() {
        let mut t = SourceTracker::default();
        // The first heartbeat's confirmation is below every heartbeat seen: nothing to claim.
        t.observe(beat(100, 1_000, Some(90)));
        assert_eq!(t.candidate(), None);
        // The second one confirms the first heartbeat's LSN and more, not itself.
        t.observe(beat(200, 2_000, Some(150)));
        assert_eq!(
            t.candidate(),
            Some(Watermark {
                lsn: 150,
                ts_ms: 1_000,
                heartbeat_ts_ms: 2_000
            })
        );
        // Taken: nothing new until the next heartbeat.
        assert_eq!(t.candidate(), None);
        t.observe(beat(300, 3_000, Some(300)));
        assert_eq!(t.candidate().map(|w| (w.lsn, w.ts_ms)), Some((300, 3_000)));
    }

    #[test]
    fn unconfirmed_and_redelivered_heartbeats_claim_nothing() {
        let mut t = SourceTracker::default();
        t.observe(beat(100, 1_000, None));
        assert_eq!(t.candidate(), None);
        t.observe(beat(200, 2_000, Some(120)));
        let w = t.candidate().unwrap();
        // Redelivered older heartbeats neither add a candidate nor move time back.
        t.observe(beat(100, 1_000, Some(500)));
        assert_eq!(t.candidate(), None);
        assert_eq!((w.lsn, w.ts_ms), (120, 1_000));
    }

    #[test]
    fn a_pending_watermark_waits_for_every_partition() {
        let pending = Pending {
            watermark: Watermark {
                lsn: 1,
                ts_ms: 1,
                heartbeat_ts_ms: 1,
            },
            targets: vec![("a".into(), 0, 10), ("a".into(), 1, 3), ("b".into(), 0, 0)],
        };
        // A heartbeat that overtook data still in flight on a/1: not reached.
        assert!(!pending.reached(|t, p| if (t, p) == ("a", 1) { 2 } else { 10 }));
        assert!(pending.reached(|_, _| 10));
    }

    #[test]
    fn heartbeats_come_from_the_heartbeat_table_row() {
        let change = Change {
            op: Op::Update,
            key: vec![("id".into(), FieldValue::Int(1))],
            before: None,
            after: Some(vec![
                ("id".into(), FieldValue::Int(1)),
                ("ts".into(), FieldValue::String("x".into())),
                (CONFIRMED_LSN_COLUMN.into(), FieldValue::Int(42)),
            ]),
            position: Some(77),
            source_ts_ms: Some(5),
        };
        assert_eq!(
            Heartbeat::from_change(2, &change),
            Some(Heartbeat {
                source: 2,
                lsn: 77,
                ts_ms: 5,
                confirmed: Some(42)
            })
        );
        let mut text = change.clone();
        text.after.as_mut().unwrap()[2].1 = FieldValue::String("0/2A".into());
        assert_eq!(
            Heartbeat::from_change(0, &text).unwrap().confirmed,
            Some(42)
        );
        let tombstone = Change {
            op: Op::Tombstone,
            after: None,
            ..change
        };
        assert_eq!(Heartbeat::from_change(0, &tombstone), None);
    }
}
