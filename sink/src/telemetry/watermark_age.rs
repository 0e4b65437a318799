//! `sink_source_watermark_age_seconds{source}`: how long ago the source committed what its
//! watermark (`sink:watermark:{source}`) confirms as applied.
//!
//! The age must keep growing when heartbeats stop (a stalled connector is exactly what an
//! alert on it should catch), so the apply stage records the commit time here and every
//! scrape ([`refresh`], called by `GET /metrics`) sets the gauges from the clock. The
//! commit times live in a process-wide map, like the recorder itself: written once per
//! heartbeat, read once per scrape.

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};

use metrics::gauge;

use super::SOURCE_WATERMARK_AGE_SECONDS;

/// Commit time (ms since the epoch) of the latest recorded watermark, by source.
static COMMITTED_MS: Mutex<BTreeMap<String, i64>> = Mutex::new(BTreeMap::new());

/// Notes that the watermark of `source` now confirms changes committed at `ts_ms`; an
/// older one (a replayed heartbeat) changes nothing.
pub fn recorded(source: &str, ts_ms: i64) {
    let mut committed = COMMITTED_MS.lock().unwrap_or_else(PoisonError::into_inner);
    match committed.get_mut(source) {
        Some(known) => *known = (*known).max(ts_ms),
        None => {
            committed.insert(source.to_owned(), ts_ms);
        }
    }
    drop(committed);
    refresh();
}

/// Sets every source's gauge to its age now.
pub fn refresh() {
    let now_ms = chrono::Utc::now().timestamp_millis();
    let committed = COMMITTED_MS.lock().unwrap_or_else(PoisonError::into_inner);
    for (source, ts_ms) in committed.iter() {
        let age_ms = now_ms.saturating_sub(*ts_ms).max(0);
        // Milliseconds since the epoch fit an f64 exactly.
        gauge!(SOURCE_WATERMARK_AGE_SECONDS, "source" => source.clone())
            .set(age_ms as f64 / 1000.0);
    }
}

#[cfg(test)]
mod tests {
    use metrics_exporter_prometheus::PrometheusBuilder;

    use super::*;

    #[test]
    fn the_age_grows_from_the_newest_commit_time() {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        let now_ms = chrono::Utc::now().timestamp_millis();
        metrics::with_local_recorder(&recorder, || {
            recorded("age-test", now_ms - 90_000);
            recorded("age-test", now_ms - 30_000);
            // A replayed, older heartbeat does not make the watermark look older.
            recorded("age-test", now_ms - 60_000);
        });
        let age: f64 = handle
            .render()
            .lines()
            .find_map(|l| {
                l.strip_prefix(r#"sink_source_watermark_age_seconds{source="age-test"} "#)
            })
            .expect("age exported")
            .parse()
            .expect("a number");
        assert!((30.0..35.0).contains(&age), "age {age}");
    }
}
