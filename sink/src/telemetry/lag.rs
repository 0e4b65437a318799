//! `sink_consumer_lag_records{topic,partition}`: records between the applied position and the
//! high watermark of each partition this sink is assigned, set by the caught-up watcher at
//! every check (about once a second).
//!
//! A partition that left the assignment (a rebalance gave it to another member) is set to 0
//! rather than left at its last value: its new owner reports it, so summing the series of
//! every member of the group gives the group's lag, and no stale value keeps an alert firing.

use std::collections::HashMap;

use metrics::{gauge, Gauge};

use super::CONSUMER_LAG_RECORDS;

/// The lag gauges of the partitions reported last time.
#[derive(Debug, Default)]
pub struct LagGauges {
    reported: HashMap<(String, i32), Gauge>,
}

impl LagGauges {
    /// Sets the lag of every partition of `standing` (`(topic, partition, records behind)`)
    /// and 0 for the partitions reported before that are no longer in it.
    pub fn set<'a>(&mut self, standing: impl IntoIterator<Item = (&'a str, i32, i64)>) {
        let mut previous = std::mem::take(&mut self.reported);
        for (topic, partition, lag) in standing {
            let key = (topic.to_owned(), partition);
            let gauge = previous.remove(&key).unwrap_or_else(|| {
                gauge!(
                    CONSUMER_LAG_RECORDS,
                    "topic" => topic.to_owned(),
                    "partition" => partition.to_string()
                )
            });
            // Lag counts in records: exact as f64 up to 2^53.
            gauge.set(lag.max(0) as f64);
            self.reported.insert(key, gauge);
        }
        for gauge in previous.into_values() {
            gauge.set(0.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use metrics_exporter_prometheus::PrometheusBuilder;

    use super::*;

    #[test]
    fn revoked_partitions_drop_to_zero() {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        let mut gauges = LagGauges::default();
        metrics::with_local_recorder(&recorder, || {
            gauges.set([("a", 0, 5), ("a", 1, 7)]);
            gauges.set([("a", 1, 2), ("b", 0, -1)]);
        });
        let text = handle.render();
        for expected in [
            r#"sink_consumer_lag_records{topic="a",partition="0"} 0"#,
            r#"sink_consumer_lag_records{topic="a",partition="1"} 2"#,
            r#"sink_consumer_lag_records{topic="b",partition="0"} 0"#,
        ] {
            assert!(
                text.lines().any(|l| l == expected),
                "{expected} in:\n{text}"
            );
        }
    }
}
