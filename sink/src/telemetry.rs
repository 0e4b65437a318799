//! The sink's metrics: their names (a contract: dashboards and alerts use them as written),
//! their descriptions, and small helpers for the ones several modules set.
//!
//! Code records through the [`metrics`] facade (`metrics::counter!(telemetry::EVENTS_APPLIED,
//! ...)`), so recording costs an atomic add and nothing at all when no exporter is installed
//! (tests, `sink rebuild` without `--metrics-addr`). Labels are low-cardinality by design:
//! mapping, op, topic, partition, reason, kind; never anything per row.

/// Counter: changes applied to Redis. Labels: `mapping`, `op` (`c`, `u`, `d`, `r`, `t`).
pub const EVENTS_APPLIED: &str = "sink_events_applied_total";
/// Counter: records sent to the dead-letter topic. Labels: `topic` (origin), `reason`.
pub const DEAD_LETTERS: &str = "sink_dead_letters_total";
/// Histogram: seconds to apply one batch slice to Redis.
pub const APPLY_BATCH_SECONDS: &str = "sink_apply_batch_seconds";
/// Gauge: records between the applied position and the high watermark. Labels: `topic`,
/// `partition`.
pub const CONSUMER_LAG_RECORDS: &str = "sink_consumer_lag_records";
/// Counter: failed Redis commands. Labels: `kind` (`io`, `oom`, `script`, `other`...).
pub const REDIS_ERRORS: &str = "sink_redis_errors_total";
/// Gauge: 1 while the partitions are paused for `reason`, else 0. Labels: `reason`.
pub const PAUSED: &str = "sink_paused";
/// Gauge: seconds since the source's last confirmed watermark commit. Labels: `source`.
pub const SOURCE_WATERMARK_AGE_SECONDS: &str = "sink_source_watermark_age_seconds";
/// Counter: partitions the sink moved back to what Redis says was applied (self-healing).
/// Labels: `topic`.
pub const OFFSET_RESETS: &str = "sink_offset_resets_total";

/// Gauge: estimated bytes of the exclusive writer's bookkeeping in memory, bounded by
/// `--max-writer-memory`.
pub const WRITER_MEMORY_BYTES: &str = "sink_writer_memory_bytes";
/// Counter: configuration reloads (SIGHUP, `--watch-config`). Labels: `outcome` (`applied`,
/// `refused`): alert on refusals, which leave the sink on its previous configuration.
pub const CONFIG_RELOADS: &str = "sink_config_reloads_total";

/// Sets `sink_paused{reason}`.
pub fn set_paused(reason: crate::readiness::PauseReason, paused: bool) {
    metrics::gauge!(PAUSED, "reason" => reason.as_str()).set(if paused { 1.0 } else { 0.0 });
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
    describe_counter!(
        CONFIG_RELOADS,
        "Configuration reloads, applied or refused (the sink then runs on the previous one)."
    );
    describe_counter!(
        OFFSET_RESETS,
        "Partitions moved back to the offsets Redis says were applied."
    );
}
