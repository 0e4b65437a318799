//! What the apply stage records once a slice is applied: `sink_events_applied_total{mapping,
//! op}` and `sink_apply_batch_seconds`.
//!
//! The counters are registered once, when the pipeline starts, for every mapping and op: the
//! hot path (well over 100,000 changes a second) then does no label lookup and no allocation,
//! only one atomic add per run of changes of the same mapping and op. Registering them up
//! front also exports every series at 0, so that `rate()` sees the first change.

use std::time::Duration;

use mapping::change::Op;
use metrics::{counter, histogram, Counter, Histogram};

use super::{APPLY_BATCH_SECONDS, EVENTS_APPLIED};

/// Every op a planned change can carry, in the order of [`op_index`].
const OPS: [Op; 6] = [
    Op::Read,
    Op::Create,
    Op::Update,
    Op::Delete,
    Op::Truncate,
    Op::Tombstone,
];

/// Where `op` sits in [`OPS`].
const fn op_index(op: Op) -> usize {
    match op {
        Op::Read => 0,
        Op::Create => 1,
        Op::Update => 2,
        Op::Delete => 3,
        Op::Truncate => 4,
        Op::Tombstone => 5,
    }
}

/// The apply stage's metric handles; cheap to share (`&self`).
#[derive(Debug)]
pub struct ApplyMetrics {
    /// By mapping index, then by [`op_index`].
    applied: Vec<[Counter; OPS.len()]>,
    /// Seconds per applied slice.
    batch_seconds: Histogram,
}

impl ApplyMetrics {
    /// Registers the series of these mappings (their names, by mapping index).
    pub fn new<'a>(mappings: impl IntoIterator<Item = &'a str>) -> ApplyMetrics {
        let applied = mappings
            .into_iter()
            .map(|name| {
                OPS.map(|op| {
                    counter!(EVENTS_APPLIED, "mapping" => name.to_owned(), "op" => op.as_str())
                })
            })
            .collect();
        ApplyMetrics {
            applied,
            batch_seconds: histogram!(APPLY_BATCH_SECONDS),
        }
    }

    /// Records an applied slice: how long Redis took, and its changes as `(mapping, op)` in
    /// order. Consecutive changes of the same mapping and op are added at once.
    pub fn slice_applied(&self, took: Duration, changes: impl IntoIterator<Item = (usize, Op)>) {
        self.batch_seconds.record(took.as_secs_f64());
        let mut run: Option<((usize, Op), u64)> = None;
        for change in changes {
            match &mut run {
                Some((current, count)) if *current == change => *count += 1,
                _ => {
                    if let Some((done, count)) = run.replace((change, 1)) {
                        self.add(done, count);
                    }
                }
            }
        }
        if let Some((done, count)) = run {
            self.add(done, count);
        }
    }

    fn add(&self, (mapping, op): (usize, Op), count: u64) {
        if let Some(counters) = self.applied.get(mapping) {
            counters[op_index(op)].increment(count);
        }
    }
}

#[cfg(test)]
mod tests {
    use metrics_exporter_prometheus::PrometheusBuilder;

    use super::*;

    #[test]
    fn slices_add_up_per_mapping_and_op() {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        let metrics =
            metrics::with_local_recorder(&recorder, || ApplyMetrics::new(["customers", "orders"]));
        let (c, u, d) = (Op::Create, Op::Update, Op::Delete);
        metrics.slice_applied(
            Duration::from_millis(3),
            [(0, c), (0, c), (1, c), (0, c), (0, u), (0, u)],
        );
        metrics.slice_applied(Duration::from_millis(40), [(1, d), (1, Op::Tombstone)]);
        metrics.slice_applied(Duration::from_millis(1), []);

        let text = handle.render();
        let value = |mapping: &str, op: &str| {
            let series = format!("{EVENTS_APPLIED}{{mapping=\"{mapping}\",op=\"{op}\"}} ");
            text.lines()
                .find_map(|line| line.strip_prefix(&series))
                .unwrap_or_else(|| panic!("no {series} in:\n{text}"))
                .to_owned()
        };
        assert_eq!(value("customers", "c"), "3");
        assert_eq!(value("customers", "u"), "2");
        assert_eq!(value("orders", "c"), "1");
        assert_eq!(value("orders", "d"), "1");
        assert_eq!(value("orders", "tombstone"), "1");
        assert_eq!(
            value("orders", "r"),
            "0",
            "every series exported from the start"
        );
        assert!(
            text.contains(&format!("{APPLY_BATCH_SECONDS}_count 3")),
            "{text}"
        );
    }
}
