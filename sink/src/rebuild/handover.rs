//! The handover: once the replay reached the end of the log as it was at the start, the
//! rebuild keeps consuming until its offsets reach those the live sink recorded in
//! `sink:offsets` ([`Context::lagging`]), then asks `handover.lua` to compare once more and
//! swap atomically ([`Target::handover`]), with the offsets it settled as floors.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::display::Display;
use super::error::RebuildError;
use super::partitions::{self, PartitionState, PartitionTarget, Tracker, KAFKA_TIMEOUT};
use super::report::meta;
use super::target::{Handover, HandoverOutcome, Target};
use crate::apply::Applier;
use crate::config::SinkConfig;
use crate::pipeline::{OffsetsClient, Running};

/// How often the replay's progress is checked.
const TICK: Duration = Duration::from_millis(100);

/// What every step of one rebuild reads.
pub(super) struct Context<'a> {
    /// The configuration being rebuilt.
    pub cfg: &'a SinkConfig,
    /// Hand over even when the live state records offsets beyond the log (`--force`); also
    /// go on when the memory check fails.
    pub force: bool,
    /// How long the live sink may stay ahead after the replay.
    pub handover_timeout: Duration,
    /// The live and the staging database.
    pub target: &'a Target,
    /// The lock token.
    pub token: &'a str,
    /// Cancelled when another process took the lock.
    pub lock_lost: &'a CancellationToken,
}

/// The replay in progress.
pub(super) struct Replay {
    /// The pipeline applying the log to the staging database.
    pub running: Running,
    /// Its applier, which holds the rows' positions back until the replay is done.
    pub applier: Arc<Applier>,
    /// Whether its end was seen ([`Running::stopped`] must not be awaited again).
    pub ended: bool,
    /// Which partitions are done.
    pub tracker: Tracker,
    /// Progress bars or log lines.
    pub display: Display,
}

impl Replay {
    /// Where each partition stands now.
    fn poll(&mut self) -> Result<Vec<PartitionState>, RebuildError> {
        let positions = self
            .running
            .positions()
            .map_err(|source| RebuildError::Kafka {
                what: "reading fetch positions",
                source,
            })?;
        Ok(self.tracker.poll(self.running.progress(), &positions))
    }
}

/// A handover that swapped.
#[derive(Debug)]
pub(super) struct Swapped {
    /// Records replayed per topic up to the start-time end of the log.
    pub per_topic: BTreeMap<String, u64>,
    /// Time from start until the replay reached the end of the log.
    pub replay: Duration,
    /// Time from start until the swap.
    pub total: Duration,
    /// Handover attempts.
    pub attempts: u32,
}

impl Context<'_> {
    /// Waits for the replay to reach the start-time end of the log, then hands over.
    pub(super) async fn replay_and_swap(
        &self,
        replay: &mut Replay,
        shutdown: &CancellationToken,
        started_ms: u128,
        t0: Instant,
    ) -> Result<Swapped, RebuildError> {
        let mut ticks = tokio::time::interval(TICK);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Phase 1: the replay.
        let states = loop {
            self.wait(&mut ticks, replay, shutdown).await?;
            let states = replay.poll()?;
            replay.display.update(&replay.tracker.per_topic(&states));
            if states.iter().all(|s| s.done) {
                break states;
            }
        };
        let held = replay
            .applier
            .write_held_rows()
            .await
            .map_err(RebuildError::HeldRows)?;
        info!(
            rows = held,
            "Wrote the rows' positions (sink:rows) the replay held back."
        );
        let per_topic = replay.tracker.per_topic(&states);
        let replayed = t0.elapsed();
        let events: u64 = per_topic.values().sum();
        replay.display.note(&format!(
            "Replayed {events} events in {:.2} s; handing over to db {}.",
            replayed.as_secs_f64(),
            self.target.live_db
        ));

        // Phase 2: catch up with the live sink, then swap.
        let topics = self.cfg.topics();
        let watermarks: Vec<String> = self
            .cfg
            .config
            .sources
            .iter()
            .map(|s| mapping::layout::watermark_key(&s.name))
            .collect();
        let deadline = Instant::now() + self.handover_timeout;
        let mut forced: BTreeMap<String, i64> = BTreeMap::new();
        let mut attempts = 0;
        let mut last_lagging: String;
        loop {
            let states = replay.poll()?;
            let live = self.target.live_offsets().await?;
            let lagging = self
                .lagging(
                    replay.running.offsets(),
                    replay.tracker.targets(),
                    &states,
                    &live,
                    &mut forced,
                )
                .await?;
            if lagging.is_empty() {
                attempts += 1;
                let floors = floors(replay.tracker.targets(), &states, &forced);
                let meta = meta(&self.cfg.config, started_ms, &per_topic);
                let partitions: Vec<String> = replay
                    .tracker
                    .targets()
                    .iter()
                    .map(PartitionTarget::field)
                    .collect();
                let request = Handover {
                    token: self.token,
                    topics: &topics,
                    floors: &floors,
                    meta: &meta,
                    watermarks: &watermarks,
                    partitions: &partitions,
                };
                match self.target.handover(&request).await? {
                    HandoverOutcome::Swapped => {
                        return Ok(Swapped {
                            per_topic,
                            replay: replayed,
                            total: t0.elapsed(),
                            attempts,
                        })
                    }
                    HandoverOutcome::LockLost(holder) => {
                        return Err(RebuildError::LockLost(holder))
                    }
                    HandoverOutcome::Lagging(l) => {
                        last_lagging = l
                            .iter()
                            .map(|l| format!("{} live {} > rebuilt {}", l.field, l.live, l.staging))
                            .collect::<Vec<_>>()
                            .join(", ");
                    }
                }
            } else {
                last_lagging = lagging;
            }
            if Instant::now() >= deadline {
                return Err(RebuildError::HandoverTimeout {
                    waited: self.handover_timeout,
                    lagging: last_lagging,
                });
            }
            self.wait(&mut ticks, replay, shutdown).await?;
        }
    }

    /// One tick, or the reason to stop.
    async fn wait(
        &self,
        ticks: &mut tokio::time::Interval,
        replay: &mut Replay,
        shutdown: &CancellationToken,
    ) -> Result<(), RebuildError> {
        if replay.ended {
            return Err(RebuildError::Stopped);
        }
        let ended = tokio::select! {
            biased;
            () = shutdown.cancelled() => return Err(RebuildError::Interrupted),
            () = self.lock_lost.cancelled() => return Err(RebuildError::LockLost("another process".into())),
            result = replay.running.stopped() => result,
            _ = ticks.tick() => return Ok(()),
        };
        replay.ended = true;
        match ended {
            Err(e) => Err(RebuildError::Consume(e)),
            Ok(_) if shutdown.is_cancelled() => Err(RebuildError::Interrupted),
            Ok(_) => Err(RebuildError::Stopped),
        }
    }

    /// The partitions where the live state is ahead, as text (empty: none). Fails on live
    /// offsets the log cannot have (unless `--force`, which records them in `forced`) and on
    /// partitions the rebuild does not consume.
    async fn lagging(
        &self,
        offsets: &Arc<OffsetsClient>,
        targets: &[PartitionTarget],
        states: &[PartitionState],
        live: &BTreeMap<String, i64>,
        forced: &mut BTreeMap<String, i64>,
    ) -> Result<String, RebuildError> {
        let mapped: BTreeSet<String> = self.cfg.topics().into_iter().collect();
        let mut behind = Vec::new();
        let mut unknown = Vec::new();
        for (field, &offset) in live {
            let Some((topic, partition)) = field.rsplit_once('/') else {
                continue;
            };
            let Ok(partition) = partition.parse::<i32>() else {
                continue;
            };
            if !mapped.contains(topic) {
                continue;
            }
            let Some(i) = targets
                .iter()
                .position(|t| t.partition == partition && t.topic == topic)
            else {
                unknown.push(field.clone());
                continue;
            };
            let settled = states[i].next - 1;
            if settled >= offset || forced.get(field).is_some_and(|f| *f >= offset) {
                continue;
            }
            let high = partitions::high_watermark(
                Arc::clone(offsets),
                topic.to_owned(),
                partition,
                KAFKA_TIMEOUT,
            )
            .await
            .map_err(|source| RebuildError::Kafka {
                what: "reading a high watermark",
                source,
            })?;
            if offset >= high {
                if !self.force {
                    return Err(RebuildError::LiveAhead {
                        field: field.clone(),
                        live: offset,
                        high,
                    });
                }
                warn!(%field, live = offset, high, "The live state records an offset beyond the log; ignored (--force).");
                forced.insert(field.clone(), offset);
                continue;
            }
            behind.push(format!("{field} live {offset} > rebuilt {settled}"));
        }
        if !unknown.is_empty() {
            return Err(RebuildError::NewPartitions(unknown.join(", ")));
        }
        Ok(behind.join(", "))
    }
}

/// The offsets the rebuild settled per partition (`next - 1`), raised to the live offsets it
/// was told to ignore.
fn floors(
    targets: &[PartitionTarget],
    states: &[PartitionState],
    forced: &BTreeMap<String, i64>,
) -> Vec<(String, i64)> {
    targets
        .iter()
        .zip(states)
        .filter_map(|(t, s)| {
            let field = t.field();
            let floor = (s.next - 1).max(forced.get(&field).copied().unwrap_or(-1));
            (floor >= 0).then_some((field, floor))
        })
        .collect()
}
