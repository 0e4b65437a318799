//! Installs the Prometheus recorder behind the [`metrics`] facade, so that what the stages
//! record can be rendered for `GET /metrics` ([`super::server`]). The recorder has no HTTP
//! listener of its own: the sink serves it beside `/health` and `/ready`.

use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder, PrometheusHandle};

use super::{describe, APPLY_BATCH_SECONDS, RECORD_DELAY_SECONDS};

/// Upper bounds of the `sink_apply_batch_seconds` buckets: a slice usually takes a few
/// milliseconds (one pipelined round trip); the tail reaches seconds when Redis is slow or a
/// large batch is written.
pub const APPLY_BATCH_BUCKETS: [f64; 14] = [
    0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Upper bounds of the `sink_record_delay_seconds` buckets: a few milliseconds when the sink
/// keeps up (BENCHMARKS.md, *Adaptive batching*), up to hours while it catches up on a
/// backlog.
pub const RECORD_DELAY_BUCKETS: [f64; 20] = [
    0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    30.0, 60.0, 300.0, 1800.0, 7200.0,
];

/// Why the recorder could not be installed.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    /// The histogram buckets were refused.
    #[error("cannot configure the prometheus recorder")]
    Build(#[source] BuildError),
    /// Another recorder is installed already (once per process).
    #[error("a metrics recorder is installed already")]
    Installed,
}

/// Installs the process-wide Prometheus recorder, describes every metric and returns the
/// handle that renders them.
pub fn install() -> Result<PrometheusHandle, InstallError> {
    let recorder = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full(APPLY_BATCH_SECONDS.to_owned()),
            &APPLY_BATCH_BUCKETS,
        )
        .map_err(InstallError::Build)?
        .set_buckets_for_metric(
            Matcher::Full(RECORD_DELAY_SECONDS.to_owned()),
            &RECORD_DELAY_BUCKETS,
        )
        .map_err(InstallError::Build)?
        .build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder).map_err(|_| InstallError::Installed)?;
    describe();
    Ok(handle)
}
