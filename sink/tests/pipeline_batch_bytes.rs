//! Batches bounded by bytes: with a count bound and a linger time too large to cut anything,
//! `max_bytes` alone splits the records into batches that each hold at most that many bytes of
//! keys and values, and every record is applied.

mod pipeline_support;

use std::time::Duration;

use pipeline_support::{assert_state, generate, Scenario};
use sink::config::BatchSettings;

/// The byte bound: a dozen or so records per batch.
const MAX_BYTES: usize = 4096;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_bytes_splits_batches() {
    let s = Scenario::new(1).await;
    let w = generate(300);
    let records = s.encode(&w.events);
    s.produce(&records).await;
    let bytes: usize = records
        .iter()
        .map(|r| r.key.as_ref().map_or(0, Vec::len) + r.value.as_ref().map_or(0, Vec::len))
        .sum();
    let largest = records
        .iter()
        .map(|r| r.key.as_ref().map_or(0, Vec::len) + r.value.as_ref().map_or(0, Vec::len))
        .max()
        .unwrap();
    assert!(largest < MAX_BYTES, "records are smaller than the bound");

    // Count and linger would hand over everything in one batch per topic.
    let batch =
        BatchSettings::new(100_000, Duration::from_secs(2)).with_max_bytes(MAX_BYTES as u64);
    let summary = s.run_until_caught_up(batch).await;
    assert_eq!(summary.records, records.len() as u64, "{summary:?}");
    // Every batch holds at most MAX_BYTES, and a batch is only cut when the next record would
    // not fit (two batches in a row hold more than MAX_BYTES): so between bytes / MAX_BYTES
    // and twice that plus one batches. `summary.batches` counts what Redis applied: one slice
    // per topic of each batch, up to two here.
    let least = bytes.div_ceil(MAX_BYTES) as u64;
    let most = 2 * (2 * least + 1);
    assert!(
        (least..=most).contains(&summary.batches),
        "{bytes} bytes in {} slices, expected {least}..={most}",
        summary.batches,
    );
    assert_state(&s, &w);
    s.cleanup();
}
