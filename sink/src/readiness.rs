//! Whether the sink is ready: shared by the parts that know (the pipeline knows when it has
//! caught up, the Redis memory guard knows when it paused the partitions, the apply stage
//! knows when Redis stopped answering) and the part that tells (`GET /ready`).
//!
//! Ready means: Redis answers, no partition is paused, and the sink has caught up with the end
//! of the log at least once since it started. A sink that is replaying a long backlog is alive
//! (`/health`) but not ready: what it serves is still old.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use crate::telemetry;

/// Why the sink paused its partitions (the `reason` label of `sink_paused`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PauseReason {
    /// Redis answered `OOM`, or its `used_memory` passed the configured share of `maxmemory`.
    RedisMemory,
}

impl PauseReason {
    /// Every reason, for exporting `sink_paused{reason} 0` before anything paused.
    pub const ALL: [PauseReason; 1] = [PauseReason::RedisMemory];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            PauseReason::RedisMemory => "redis_memory",
        }
    }
}

impl fmt::Display for PauseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The shared readiness state; clones share it.
#[derive(Debug, Clone)]
pub struct Readiness {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    redis_reachable: AtomicBool,
    caught_up_once: AtomicBool,
    paused: Mutex<BTreeSet<PauseReason>>,
}

impl Default for Readiness {
    fn default() -> Self {
        Readiness::new()
    }
}

impl Readiness {
    /// Not caught up yet, nothing paused, Redis assumed reachable (the start-up checks have
    /// just pinged it). Exports `sink_paused{reason} 0` for every reason.
    pub fn new() -> Readiness {
        for reason in PauseReason::ALL {
            export_paused(reason, false);
        }
        Readiness {
            inner: Arc::new(Inner {
                redis_reachable: AtomicBool::new(true),
                caught_up_once: AtomicBool::new(false),
                paused: Mutex::new(BTreeSet::new()),
            }),
        }
    }

    /// Records whether Redis answers.
    pub fn set_redis_reachable(&self, reachable: bool) {
        self.inner
            .redis_reachable
            .store(reachable, Ordering::Relaxed);
    }

    /// Records that every assigned partition was applied up to its end (once is enough).
    pub fn mark_caught_up(&self) {
        self.inner.caught_up_once.store(true, Ordering::Relaxed);
    }

    /// Whether the sink has caught up at least once.
    pub fn has_caught_up(&self) -> bool {
        self.inner.caught_up_once.load(Ordering::Relaxed)
    }

    /// Marks the partitions paused for `reason`; `true` if they were not already.
    pub fn pause(&self, reason: PauseReason) -> bool {
        let newly = self.paused_set().insert(reason);
        export_paused(reason, true);
        newly
    }

    /// Clears `reason`; `true` if it was set.
    pub fn resume(&self, reason: PauseReason) -> bool {
        let was = self.paused_set().remove(&reason);
        export_paused(reason, false);
        was
    }

    /// The reasons the partitions are paused for, if any.
    pub fn paused(&self) -> Vec<PauseReason> {
        self.paused_set().iter().copied().collect()
    }

    /// `Ok` when ready, else every reason it is not.
    pub fn check(&self) -> Result<(), NotReady> {
        let not_ready = NotReady {
            redis_unreachable: !self.inner.redis_reachable.load(Ordering::Relaxed),
            paused: self.paused(),
            not_caught_up: !self.has_caught_up(),
        };
        if not_ready.redis_unreachable || !not_ready.paused.is_empty() || not_ready.not_caught_up {
            Err(not_ready)
        } else {
            Ok(())
        }
    }

    fn paused_set(&self) -> std::sync::MutexGuard<'_, BTreeSet<PauseReason>> {
        // The set stays consistent even if a holder panicked: each change is one call.
        self.inner
            .paused
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// Sets `sink_paused{reason}`.
fn export_paused(reason: PauseReason, paused: bool) {
    metrics::gauge!(telemetry::PAUSED, "reason" => reason.as_str()).set(if paused {
        1.0
    } else {
        0.0
    });
}

/// Why the sink is not ready, for the body of `GET /ready`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotReady {
    /// Redis did not answer the last command.
    pub redis_unreachable: bool,
    /// The partitions are paused, for these reasons.
    pub paused: Vec<PauseReason>,
    /// The sink has not reached the end of the log since it started.
    pub not_caught_up: bool,
}

impl fmt::Display for NotReady {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut reasons = Vec::new();
        if self.redis_unreachable {
            reasons.push("redis is unreachable".to_owned());
        }
        for reason in &self.paused {
            reasons.push(format!("paused ({reason})"));
        }
        if self.not_caught_up {
            reasons.push("not caught up yet".to_owned());
        }
        write!(f, "not ready: {}", reasons.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_when_reachable_unpaused_and_caught_up() {
        let readiness = Readiness::new();
        let err = readiness.check().unwrap_err();
        assert!(err.not_caught_up && !err.redis_unreachable && err.paused.is_empty());
        readiness.mark_caught_up();
        assert_eq!(readiness.check(), Ok(()));

        assert!(readiness.pause(PauseReason::RedisMemory));
        assert!(!readiness.pause(PauseReason::RedisMemory));
        assert_eq!(
            readiness.check().unwrap_err().to_string(),
            "not ready: paused (redis_memory)"
        );
        assert!(readiness.resume(PauseReason::RedisMemory));
        readiness.set_redis_reachable(false);
        assert_eq!(
            readiness.check().unwrap_err().to_string(),
            "not ready: redis is unreachable"
        );
        readiness.set_redis_reachable(true);
        assert_eq!(readiness.clone().check(), Ok(()));
    }
}
