//! The runtime side: whether Redis has room for the sink's writes. Paused when an apply was
//! refused with `OOM` ([`MemoryGuard::note_failure`]) or when `used_memory` exceeds the
//! configured share of `maxmemory` ([`MemoryGuard::watch`] reads `INFO memory` every
//! [`CHECK_INTERVAL`]); resumed when a reading is back under the share. The share is what
//! gives hysteresis after an `OOM` (Redis refuses writes above 100% of `maxmemory`, the sink
//! resumes only under 95% by default), so the partitions do not flap.
//!
//! The state is a [`watch`] channel: the consume stage pauses and resumes the partitions
//! when it changes, the lanes wait on it before retrying a refused slice, and
//! [`Readiness`] and `sink_paused{reason="redis_memory"}` follow it.

use std::sync::Arc;
use std::time::Duration;

use deadpool_redis::Pool;
use mapping::one_line;
use tokio::sync::watch;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::info::MemoryInfo;
use crate::apply::ApplyError;
use crate::readiness::{PauseReason, Readiness};

/// How often `INFO memory` is read: cheap for Redis, and short against how long Redis
/// takes to fill up from the share to `maxmemory`.
pub const CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// Whether Redis has room; clones share the state.
#[derive(Clone)]
pub struct MemoryGuard {
    inner: Arc<Inner>,
}

struct Inner {
    /// `true` while the sink should not write (paused).
    full: watch::Sender<bool>,
    /// Pause above this share of `maxmemory`.
    share: f64,
    readiness: Readiness,
    /// For `INFO memory`.
    pool: Pool,
}

impl std::fmt::Debug for MemoryGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryGuard")
            .field("full", &*self.inner.full.borrow())
            .field("share", &self.inner.share)
            .finish_non_exhaustive()
    }
}

impl MemoryGuard {
    /// Not paused; pauses above `share` of `maxmemory` once [`MemoryGuard::watch`] runs.
    pub(super) fn new(pool: Pool, share: f64, readiness: Readiness) -> MemoryGuard {
        MemoryGuard {
            inner: Arc::new(Inner {
                full: watch::Sender::new(false),
                share,
                readiness,
                pool,
            }),
        }
    }

    /// `true` while Redis is full (the partitions should be paused), with every change.
    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.inner.full.subscribe()
    }

    /// Whether Redis is full now.
    pub fn is_full(&self) -> bool {
        *self.inner.full.borrow()
    }

    /// Looks at a failed apply: when Redis refused it for lack of memory, pauses (the apply
    /// stage counts it in `sink_redis_errors_total{kind="oom"}`). Whether it was that.
    pub fn note_failure(&self, error: &ApplyError) -> bool {
        if !error.is_out_of_memory() {
            return false;
        }
        self.set(true, None);
        true
    }

    /// Resolves once Redis has room again (at once when it has).
    pub async fn has_room(&self) {
        let mut full = self.subscribe();
        // The sender lives as long as `self`: the wait cannot fail.
        let _ = full.wait_for(|full| !*full).await;
    }

    /// Reads `INFO memory` every [`CHECK_INTERVAL`] until `stop`, pausing above the share
    /// of `maxmemory` and resuming under it. Where `INFO` cannot be read, the guard resumes
    /// after each attempt, and the lanes' retries find out whether Redis has room.
    pub async fn watch(self, stop: CancellationToken) {
        let mut ticks = tokio::time::interval(CHECK_INTERVAL);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut unreadable = false;
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = ticks.tick() => {}
            }
            match self.read().await {
                Ok(info) => {
                    unreadable = false;
                    self.set(info.above(self.inner.share), Some(&info));
                }
                Err(error) => {
                    if !unreadable {
                        warn!(%error, "Cannot read redis INFO memory; the sink pauses on OOM replies only, and resumes by retrying.");
                        unreadable = true;
                    }
                    self.set(false, None);
                }
            }
        }
    }

    async fn read(&self) -> Result<MemoryInfo, String> {
        let mut conn = self.inner.pool.get().await.map_err(|e| one_line(&e))?;
        MemoryInfo::read(&mut conn).await.map_err(|e| one_line(&e))
    }

    /// Records whether Redis is `full` (from `info`, or an `OOM` reply when `None`); logs,
    /// and tells readiness, on a change only.
    fn set(&self, full: bool, info: Option<&MemoryInfo>) {
        let changed = self.inner.full.send_if_modified(|state| {
            let changed = *state != full;
            *state = full;
            changed
        });
        if !changed {
            return;
        }
        let share = self.inner.share;
        let (used, max) = info.map_or((None, None), |i| (Some(i.used), Some(i.max)));
        if full {
            self.inner.readiness.pause(PauseReason::RedisMemory);
            match info {
                Some(_) => warn!(used_memory = used, maxmemory = max, pause_at_memory_share = share, "Redis memory is above the share of maxmemory; pausing consumption until it is back under."),
                None => warn!(pause_at_memory_share = share, "Redis refused a write for lack of memory (OOM); pausing consumption until used_memory is back under the share of maxmemory."),
            }
        } else {
            self.inner.readiness.resume(PauseReason::RedisMemory);
            info!(
                used_memory = used,
                maxmemory = max,
                "Redis has room again; resuming consumption."
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connection::redis_pool;

    fn guard() -> (MemoryGuard, Readiness) {
        let readiness = Readiness::new();
        // Never connected: these tests do not read INFO.
        let pool = redis_pool("redis://127.0.0.1:1").unwrap();
        (MemoryGuard::new(pool, 0.9, readiness.clone()), readiness)
    }

    #[tokio::test]
    async fn full_pauses_readiness_and_room_resumes_it() {
        let (guard, readiness) = guard();
        let mut full = guard.subscribe();
        guard.has_room().await;
        guard.set(true, None);
        assert!(guard.is_full());
        assert!(full.has_changed().unwrap());
        assert!(*full.borrow_and_update());
        assert_eq!(readiness.paused(), vec![PauseReason::RedisMemory]);

        let waiting = tokio::spawn({
            let guard = guard.clone();
            async move { guard.has_room().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        let info = MemoryInfo {
            used: 80,
            max: 100,
            policy: None,
        };
        guard.set(info.above(0.9), Some(&info));
        waiting.await.unwrap();
        assert!(readiness.paused().is_empty());
    }
}
