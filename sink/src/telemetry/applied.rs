//! What the apply stage records once a slice is applied: `sink_events_applied_total{mapping,
//! op}`, `sink_apply_batch_seconds` and, per change, `sink_record_delay_seconds`.
//!
//! The counters are registered once, when the pipeline starts, for every mapping and op: the
//! hot path (well over 100,000 changes a second) then does no label lookup and no allocation,
//! only one atomic add per run of changes of the same mapping and op. Registering them up
//! front also exports every series at 0, so that `rate()` sees the first change.

use std::time::Duration;

use mapping::change::Op;
use metrics::{counter, histogram, Counter, Histogram};

use super::{APPLY_BATCH_SECONDS, EVENTS_APPLIED, RECORD_DELAY_SECONDS};
use crate::apply::RecordTime;

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
    /// Record timestamp → applied, for producer (create) timestamps.
    create_time_delay: Histogram,
    /// Record timestamp → applied, for broker (log append) timestamps.
    log_append_time_delay: Histogram,
}

/// One applied change as the metrics count it.
#[derive(Debug, Clone, Copy)]
pub struct AppliedChange {
    /// Index of its mapping.
    pub mapping: usize,
    /// Its Debezium operation.
    pub op: Op,
    /// Its record's Kafka timestamp.
    pub record_time: Option<RecordTime>,
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
            create_time_delay: histogram!(RECORD_DELAY_SECONDS, "timestamp_type" => "create_time"),
            log_append_time_delay: histogram!(RECORD_DELAY_SECONDS, "timestamp_type" => "log_append_time"),
        }
    }

    /// Records an applied slice: how long Redis took, its changes in order, and how long
    /// after its record's timestamp each change was applied (Redis answered at
    /// `applied_at_ms`, milliseconds since the Unix epoch; a timestamp ahead of it, from a
    /// producer's clock, counts as 0). Consecutive changes of the same mapping and op are
    /// counted at once.
    pub fn slice_applied(
        &self,
        took: Duration,
        applied_at_ms: i64,
        changes: impl IntoIterator<Item = AppliedChange>,
    ) {
        self.batch_seconds.record(took.as_secs_f64());
        let mut run: Option<((usize, Op), u64)> = None;
        for AppliedChange {
            mapping,
            op,
            record_time,
        } in changes
        {
            match record_time {
                Some(RecordTime::Create(ms)) => {
                    self.create_time_delay.record(delay(ms, applied_at_ms))
                }
                Some(RecordTime::LogAppend(ms)) => {
                    self.log_append_time_delay.record(delay(ms, applied_at_ms))
                }
                None => {}
            }
            let change = (mapping, op);
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

/// Now, in milliseconds since the Unix epoch (the clock Kafka timestamps are in).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Seconds from `stamped_ms` to `applied_ms`, never negative.
fn delay(stamped_ms: i64, applied_ms: i64) -> f64 {
    applied_ms.saturating_sub(stamped_ms).max(0) as f64 / 1000.0
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
        let changes = |list: &[(usize, Op)]| {
            list.iter()
                .map(|&(mapping, op)| AppliedChange {
                    mapping,
                    op,
                    record_time: None,
                })
                .collect::<Vec<_>>()
        };
        metrics.slice_applied(
            Duration::from_millis(3),
            0,
            changes(&[(0, c), (0, c), (1, c), (0, c), (0, u), (0, u)]),
        );
        metrics.slice_applied(
            Duration::from_millis(40),
            0,
            changes(&[(1, d), (1, Op::Tombstone)]),
        );
        metrics.slice_applied(Duration::from_millis(1), 0, []);

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

    /// Each change's delay lands in the series of its timestamp's type, in the exporter's
    /// buckets; a timestamp after the apply (a producer's clock ahead) counts as 0, a record
    /// without one is not counted.
    #[test]
    fn record_delays_are_counted_by_timestamp_type() {
        use metrics_exporter_prometheus::Matcher;

        use crate::telemetry::exporter::RECORD_DELAY_BUCKETS;

        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(
                Matcher::Full(RECORD_DELAY_SECONDS.to_owned()),
                &RECORD_DELAY_BUCKETS,
            )
            .expect("buckets")
            .build_recorder();
        let handle = recorder.handle();
        let metrics = metrics::with_local_recorder(&recorder, || ApplyMetrics::new(["customers"]));
        let applied_at = 1_700_000_010_000;
        let change = |record_time| AppliedChange {
            mapping: 0,
            op: Op::Update,
            record_time,
        };
        metrics.slice_applied(
            Duration::from_millis(2),
            applied_at,
            [
                change(Some(RecordTime::LogAppend(applied_at - 250))),
                change(Some(RecordTime::LogAppend(applied_at - 500))),
                change(Some(RecordTime::LogAppend(applied_at + 40))),
                change(Some(RecordTime::Create(applied_at - 1500))),
                change(None),
            ],
        );

        let text = handle.render();
        let sample = |series: &str| {
            let prefix = format!("{RECORD_DELAY_SECONDS}{series} ");
            text.lines()
                .find_map(|line| line.strip_prefix(&prefix))
                .unwrap_or_else(|| panic!("no {prefix} in:\n{text}"))
                .to_owned()
        };
        let broker = "timestamp_type=\"log_append_time\"";
        let producer = "timestamp_type=\"create_time\"";
        assert_eq!(sample(&format!("_count{{{broker}}}")), "3");
        assert_eq!(sample(&format!("_sum{{{broker}}}")), "0.75");
        assert_eq!(sample(&format!("_bucket{{{broker},le=\"0.25\"}}")), "2");
        assert_eq!(sample(&format!("_bucket{{{broker},le=\"0.5\"}}")), "3");
        assert_eq!(sample(&format!("_count{{{producer}}}")), "1");
        assert_eq!(sample(&format!("_sum{{{producer}}}")), "1.5");
        assert_eq!(sample(&format!("_bucket{{{producer},le=\"1\"}}")), "0");
        assert_eq!(sample(&format!("_bucket{{{producer},le=\"2.5\"}}")), "1");
        assert_eq!(
            text.matches(&format!(
                "{EVENTS_APPLIED}{{mapping=\"customers\",op=\"u\"}} 5"
            ))
            .count(),
            1,
            "{text}"
        );
    }
}
