//! `sink_redis_errors_total{kind}`: what kind of failure a Redis error is, counted where the
//! apply stage retries or reports it. The kind also says whether Redis is unreachable, which
//! the apply stage tells [`crate::readiness::Readiness`].

use metrics::counter;

use super::REDIS_ERRORS;
use crate::apply::ApplyError;

/// What kind of Redis failure an error is (the `kind` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedisErrorKind {
    /// No answer: connection refused or dropped, timeout, no pooled connection, a reply
    /// cut short. Redis counts as unreachable until the next command succeeds.
    Io,
    /// Redis answered `OOM`: `maxmemory` is reached.
    Oom,
    /// Redis answered with a transient state (`LOADING`, `BUSY`, `READONLY`, `MISCONF`...).
    Busy,
    /// Redis refused a change or command for good (the change is dead-lettered, or the sink
    /// stops).
    Rejected,
    /// Another sink holds the exclusive lease.
    Lease,
    /// Anything else (an unexpected reply, a batch resent after an earlier failure).
    Other,
}

impl RedisErrorKind {
    /// What kind of failure `error` is.
    pub fn of(error: &ApplyError) -> RedisErrorKind {
        // Also an `OOM` inside an aborted transaction (`EXECABORT`).
        if error.is_out_of_memory() {
            return RedisErrorKind::Oom;
        }
        match error {
            ApplyError::Pool(_) | ApplyError::ReplyCount { .. } => RedisErrorKind::Io,
            ApplyError::Redis { source, .. } => of_client_error(source),
            ApplyError::Load(crate::apply::LoadError::Redis(source)) => of_client_error(source),
            ApplyError::Change {
                source, retriable, ..
            } => match source.code() {
                "OOM" => RedisErrorKind::Oom,
                _ if *retriable => RedisErrorKind::Busy,
                _ => RedisErrorKind::Rejected,
            },
            ApplyError::ForeignKey { source, .. } if source.code() == "OOM" => RedisErrorKind::Oom,
            ApplyError::ForeignKey { .. } => RedisErrorKind::Rejected,
            ApplyError::Excluded { .. }
            | ApplyError::LeaseLost { .. }
            | ApplyError::SharedSinks { .. }
            | ApplyError::Load(crate::apply::LoadError::LeaseLost(_)) => RedisErrorKind::Lease,
            ApplyError::BookkeepingLost { .. } | ApplyError::Superseded { .. } => {
                RedisErrorKind::Other
            }
            ApplyError::Invalid { .. }
            | ApplyError::Reply { .. }
            | ApplyError::Resend { .. }
            | ApplyError::Load(_)
            | ApplyError::ExclusiveTtl { .. }
            | ApplyError::WriterMemory(_) => RedisErrorKind::Other,
        }
    }

    /// The label value.
    pub const fn as_str(self) -> &'static str {
        match self {
            RedisErrorKind::Io => "io",
            RedisErrorKind::Oom => "oom",
            RedisErrorKind::Busy => "busy",
            RedisErrorKind::Rejected => "rejected",
            RedisErrorKind::Lease => "lease",
            RedisErrorKind::Other => "other",
        }
    }

    /// Whether the error means Redis did not answer.
    pub fn is_unreachable(self) -> bool {
        self == RedisErrorKind::Io
    }
}

/// The kind of a client error without a reply per change.
fn of_client_error(error: &redis::RedisError) -> RedisErrorKind {
    if error.is_io_error()
        || error.is_timeout()
        || error.is_connection_dropped()
        || error.is_connection_refusal()
    {
        return RedisErrorKind::Io;
    }
    match error.code() {
        Some("OOM") => RedisErrorKind::Oom,
        Some("LOADING" | "BUSY" | "TRYAGAIN" | "MASTERDOWN" | "READONLY" | "MISCONF") => {
            RedisErrorKind::Busy
        }
        Some(_) => RedisErrorKind::Rejected,
        None => RedisErrorKind::Other,
    }
}

/// Counts `error` under its kind and returns the kind.
pub fn count(error: &ApplyError) -> RedisErrorKind {
    let kind = RedisErrorKind::of(error);
    counter!(REDIS_ERRORS, "kind" => kind.as_str()).increment(1);
    kind
}
