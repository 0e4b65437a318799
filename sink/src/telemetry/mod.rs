//! The sink's metrics: their names (a contract: dashboards and alerts use them as written),
//! their descriptions, and small helpers for the ones several modules set.
//!
//! Code records through the [`metrics`] facade (`metrics::counter!(telemetry::EVENTS_APPLIED,
//! ...)`), so recording costs an atomic add and nothing at all when no exporter is installed
//! (tests, `sink rebuild`). Labels are low-cardinality by design: mapping, op, topic,
//! partition, reason, kind, source; never anything per row.
//!
//! # Layout
//!
//! - [`exporter`]: installs the Prometheus recorder (`sink run --metrics-addr`).
//! - [`server`]: `GET /metrics`, `/health` and `/ready` over HTTP.
//! - [`applied`]: the apply stage's per-mapping counters and its batch-latency histogram,
//!   registered once so that the hot path does no label lookups.
//! - [`lag`]: the consumer lag per assigned partition.
//! - [`redis`]: `sink_redis_errors_total` and what kind of failure an apply error is.
//! - [`watermark_age`]: the age of each source's confirmed watermark, refreshed per scrape.
//! - here: the names, their descriptions, and the dead-letter counter.

pub mod applied;
pub mod exporter;
pub mod lag;
pub mod redis;
pub mod server;
pub mod watermark_age;

/// Counter: changes applied to Redis. Labels: `mapping`, `op` (`c`, `u`, `d`, `r`, `t`, or
/// `tombstone`).
pub const EVENTS_APPLIED: &str = "sink_events_applied_total";
/// Counter: records sent to the dead-letter topic. Labels: `topic` (origin), `reason`.
pub const DEAD_LETTERS: &str = "sink_dead_letters_total";
/// Histogram: seconds to apply one batch slice to Redis.
pub const APPLY_BATCH_SECONDS: &str = "sink_apply_batch_seconds";
/// Histogram: seconds from a record's Kafka timestamp to Redis answering the slice that
/// applied it: the sink's share of a change's freshness, as users measure it (broker and
/// fetch included). Labels: `timestamp_type` (`log_append_time`: the broker's append time,
/// the exact share; `create_time`: the producer's, which adds the producer's batching).
/// Dead-lettered records and records without a timestamp are not counted.
pub const RECORD_DELAY_SECONDS: &str = "sink_record_delay_seconds";
/// Gauge: records between the applied position and the high watermark. Labels: `topic`,
/// `partition`.
pub const CONSUMER_LAG_RECORDS: &str = "sink_consumer_lag_records";
/// Counter: failed Redis commands. Labels: `kind` (see [`redis::RedisErrorKind`]).
pub const REDIS_ERRORS: &str = "sink_redis_errors_total";
/// Gauge: 1 while the partitions are paused for `reason`, else 0. Labels: `reason`.
pub const PAUSED: &str = "sink_paused";
/// Gauge: seconds since the source's last confirmed watermark commit. Labels: `source`.
pub const SOURCE_WATERMARK_AGE_SECONDS: &str = "sink_source_watermark_age_seconds";
/// Gauge: 1 while `GET /ready` answers 200, else 0 (set at each scrape, so that dashboards
/// and alerts see readiness without probing `/ready`).
pub const READY: &str = "sink_ready";
/// Counter: partitions the sink moved back to what Redis says was applied (self-healing).
/// Labels: `topic`.
pub const OFFSET_RESETS: &str = "sink_offset_resets_total";
/// Counter: records read under an assignment of their partition that a later assignment
/// superseded (a rebalance; apply/fence.rs), dropped unapplied: the partition's current
/// assignment reads and applies them. Labels: `topic`.
pub const SUPERSEDED_RECORDS: &str = "sink_superseded_records_total";

/// Gauge: estimated bytes of the exclusive writer's bookkeeping in memory, bounded by
/// `--max-writer-memory`.
pub const WRITER_MEMORY_BYTES: &str = "sink_writer_memory_bytes";
/// Gauge: 1 for how the sink writes Redis now, 0 for the other ways. Labels: `writer`
/// ([`WriterState`]): with `--writer auto`, whether it is on the fast path.
pub const WRITER: &str = "sink_writer";
/// Counter: times `--writer auto` fell back from the exclusive writer to the change script
/// for the rest of the process. Labels: `reason` (`memory`: the bookkeeping above
/// `--max-writer-memory`; `foreign_key`: a mapped key another program wrote with another
/// type).
pub const WRITER_FALLBACKS: &str = "sink_writer_fallbacks_total";
/// Counter: configuration reloads (SIGHUP, `--watch-config`). Labels: `outcome` (`applied`,
/// `refused`): alert on refusals, which leave the sink on its previous configuration.
pub const CONFIG_RELOADS: &str = "sink_config_reloads_total";

/// How the sink writes Redis (the `writer` label of `sink_writer`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriterState {
    /// The exclusive writer, holding the lease.
    Exclusive,
    /// The change script.
    Shared,
    /// Waiting for another exclusive sink's lease; not writing.
    Standby,
}

impl WriterState {
    const ALL: [WriterState; 3] = [
        WriterState::Exclusive,
        WriterState::Shared,
        WriterState::Standby,
    ];

    /// The label value.
    pub const fn as_str(self) -> &'static str {
        match self {
            WriterState::Exclusive => "exclusive",
            WriterState::Shared => "shared",
            WriterState::Standby => "standby",
        }
    }
}

/// Sets `sink_writer`: 1 for `now`, 0 for the other states (so that a dashboard sees the
/// change from one to the other, not two series at 1).
pub fn writer_state(now: WriterState) {
    for state in WriterState::ALL {
        metrics::gauge!(WRITER, "writer" => state.as_str()).set(if state == now {
            1.0
        } else {
            0.0
        });
    }
}

/// Why a record was dead-lettered (the `reason` label of `sink_dead_letters_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeadLetterReason {
    /// The record could not be decoded (not Avro, unknown schema id, bad envelope).
    Decode,
    /// The change could not be mapped to rows (a key field missing, a bad value).
    Plan,
    /// Redis rejected the change for good.
    Apply,
}

impl DeadLetterReason {
    /// The label value.
    pub const fn as_str(self) -> &'static str {
        match self {
            DeadLetterReason::Decode => "decode",
            DeadLetterReason::Plan => "plan",
            DeadLetterReason::Apply => "apply",
        }
    }
}

/// Counts a record of `topic` written to the dead-letter topic (rare: the label lookup is
/// fine here).
pub fn dead_lettered(topic: &str, reason: DeadLetterReason) {
    metrics::counter!(DEAD_LETTERS, "topic" => topic.to_owned(), "reason" => reason.as_str())
        .increment(1);
}

/// Registers every metric's description and unit with the installed recorder (call once,
/// after installing it).
pub fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(
        EVENTS_APPLIED,
        "Changes applied to Redis, by mapping and Debezium op."
    );
    describe_counter!(
        DEAD_LETTERS,
        "Records sent to the dead-letter topic, by origin topic and reason."
    );
    describe_histogram!(
        APPLY_BATCH_SECONDS,
        Unit::Seconds,
        "Time to apply one batch slice to Redis."
    );
    describe_histogram!(
        RECORD_DELAY_SECONDS,
        Unit::Seconds,
        "Time from a record's Kafka timestamp to its change applied in Redis, by timestamp type."
    );
    describe_gauge!(
        CONSUMER_LAG_RECORDS,
        "Records between the applied position and the high watermark."
    );
    describe_counter!(REDIS_ERRORS, "Failed Redis commands, by kind.");
    describe_gauge!(
        PAUSED,
        "1 while the sink's partitions are paused, by reason."
    );
    describe_gauge!(
        SOURCE_WATERMARK_AGE_SECONDS,
        Unit::Seconds,
        "Seconds since the source commit the watermark confirms."
    );
    describe_gauge!(
        WRITER_MEMORY_BYTES,
        Unit::Bytes,
        "Estimated bytes of the exclusive writer's bookkeeping in memory."
    );
    describe_gauge!(
        WRITER,
        "1 for how the sink writes Redis now (exclusive, shared or standby), 0 for the others."
    );
    describe_counter!(
        WRITER_FALLBACKS,
        "Times --writer auto fell back from the exclusive writer to the change script, by reason."
    );
    describe_counter!(
        CONFIG_RELOADS,
        "Configuration reloads, applied or refused (the sink then runs on the previous one)."
    );
    describe_gauge!(
        READY,
        "1 while the sink is ready (Redis reachable, not paused, caught up once), else 0."
    );
    describe_counter!(
        OFFSET_RESETS,
        "Partitions moved back to the offsets Redis says were applied."
    );
    describe_counter!(
        SUPERSEDED_RECORDS,
        "Records read under a partition assignment that a later one superseded, dropped unapplied (the current assignment applies them)."
    );
}

#[cfg(test)]
mod tests {
    use metrics_exporter_prometheus::PrometheusBuilder;

    use super::*;

    /// One state at 1, the others at 0, and a change of state moves the 1.
    #[test]
    fn the_writer_state_is_one_series_at_one() {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        let value = |state: &str| {
            let prefix = format!("{WRITER}{{writer=\"{state}\"}} ");
            handle
                .render()
                .lines()
                .find_map(|line| line.strip_prefix(&prefix).map(str::to_owned))
                .unwrap_or_else(|| panic!("no {prefix}"))
        };
        metrics::with_local_recorder(&recorder, || writer_state(WriterState::Standby));
        assert_eq!(
            [value("exclusive"), value("shared"), value("standby")],
            ["0", "0", "1"]
        );
        metrics::with_local_recorder(&recorder, || writer_state(WriterState::Exclusive));
        assert_eq!(
            [value("exclusive"), value("shared"), value("standby")],
            ["1", "0", "0"]
        );
    }
}
