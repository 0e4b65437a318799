//! The applier each pipeline of `sink run` writes with, as `--writer` asks, and for
//! `--writer auto` (the default) the choice between the exclusive writer and the change
//! script.
//!
//! # `--writer auto`
//!
//! The exclusive writer costs Redis a third of the change script's CPU per change, so `auto`
//! takes it wherever that cannot harm anyone, and writes through the script otherwise:
//!
//! - **Mappings with `ttl_seconds`**: rows expiring behind the writer's back would leave its
//!   bookkeeping wrong, so the script.
//! - **Shared sinks already writing** (`--writer shared`, or `auto` sinks on the script for
//!   good), which announce themselves in `sink:shared:{mapping}`
//!   ([`crate::apply::Announcement`]): the lease would make the script refuse them, so the
//!   script, beside them, without announcing itself; once no other sink's announcement
//!   has held for six lease times, at least 10 s (a minute by default; checked every third
//!   of a lease time, [`Appliers::choose_again`]), the pipeline is drained as for a
//!   reload and the choice made again: the exclusive writer.
//! - **A shared sink announces itself while `auto` holds the lease** (a `--writer shared`
//!   sink that came back after that wait, or started since: it stands by for the lease,
//!   announced, instead of being refused): `auto` notices within a third of its lease time,
//!   drains its pipeline, gives the lease up and writes beside it.
//! - **Another exclusive sink holds the lease**: a standby, as `--writer exclusive`.
//! - **Bookkeeping above `--max-writer-memory`**, at start or grown there: the script, for
//!   the rest of the process, instead of stopping with exit code 2.
//! - **A key another program wrote with another type** fails a command of the exclusive
//!   batch's transaction (the rest of it is applied; the batch's changes that write the
//!   key are dead-lettered, `pipeline/apply_stage.rs`): the script, for the rest of the
//!   process, instead of stopping; the pipeline starts again from the committed offsets and
//!   the script dead-letters any later change that writes such a key.
//! - **The lease lost** (another sink took it) or the script refused (an exclusive sink
//!   holds the mappings): the choice is made again, fall-back included, which stands by
//!   for the lease.
//!
//! # `--writer shared`
//!
//! A shared sink never writes behind an exclusive one, and never stops for one either: it
//! announces itself first, then stands by while another sink holds the lease of one of its
//! mappings (checked every half second), and a refusal by the script (the lease taken
//! after that check) brings it back to standing by. Exiting instead would make a
//! supervisor restart it into the same refusal.
//!
//! Falling back announces the script first and gives the lease up after, so that a standby
//! that takes the lease at that moment sees the announcement and writes through the script
//! too.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use deadpool_redis::Pool;
use mapping::one_line;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::shared_sinks_seen::SharedSinksSeen;
use super::RunError;
use crate::apply::{
    announced_by_another, exclusive_holder, Announcement, Applier, ApplyError, BesideSharedSinks,
    WriterId, DEFAULT_LEASE_TTL,
};
use crate::config::{SinkConfig, Writer};
use crate::memory;
use crate::pipeline::{Backoff, ConsumeError, WAITING_TO_START_MAX_DELAY};
use crate::telemetry::{self, WriterState};

/// The appliers of one `sink run` process: its writer identity (kept across reloads, so that
/// the next exclusive applier holds the lease of the last one), whether `auto` fell back to
/// the script for good, and the script's announcement while it writes through it.
pub(super) struct Appliers {
    writer: WriterId,
    /// `--writer auto` fell back to the change script for the rest of the process.
    fell_back: bool,
    /// While the current applier is the change script, announced.
    announcement: Option<Announcement>,
    /// The current applier is the change script only because other sinks announced
    /// themselves (`--writer auto`): it is not announced, and leaves once they are gone.
    beside_shared_sinks: bool,
    /// The current applier is the exclusive writer of `--writer auto`, which gives the
    /// lease up to a shared sink that announces itself.
    yielding: bool,
    /// When another sink last announced itself on the mappings (`--writer auto`).
    shared_sinks_seen: SharedSinksSeen,
}

/// A watch that ends when the applier should be chosen again ([`Appliers::choose_again`]).
pub(super) type Watch = Pin<Box<dyn Future<Output = ()> + Send>>;

/// How often a shared sink standing by for an exclusive sink checks whether the lease is
/// free: an `auto` sink gives it up for the shared sink within a third of its lease time.
const STANDBY_POLL: Duration = Duration::from_millis(500);

/// How often a shared sink still standing by says so: an `auto` sink gives the lease up
/// within seconds, so a long wait is a `--writer exclusive` sink of the same mappings,
/// which keeps them until it stops.
const STANDBY_REMINDER: Duration = Duration::from_secs(60);

/// How long no other sink's announcement must hold before an `auto` sink beside shared
/// sinks takes them for gone: [`GONE_AFTER_LEASES`] of its lease times, and at least the
/// default lease time, which a `--writer shared` sink announces itself for (renewing every
/// third of it).
fn gone_after(lease: Duration) -> Duration {
    (lease * GONE_AFTER_LEASES).max(DEFAULT_LEASE_TTL)
}

/// Lease times without announcements after which shared sinks count as gone. A shared sink
/// that comes back later finds the lease taken and stands by, announced, until the `auto`
/// sink gives it up (within a third of its lease time, plus draining its pipeline); one
/// restarted within this time (a minute with the default lease: a crash, a reschedule)
/// announces itself again first and is never held up. Taking the fast path that much later
/// costs little; giving it up again costs a drain.
const GONE_AFTER_LEASES: u32 = 6;

impl Appliers {
    pub(super) fn new() -> Appliers {
        Appliers {
            writer: WriterId::new(),
            fell_back: false,
            announcement: None,
            beside_shared_sinks: false,
            yielding: false,
            shared_sinks_seen: SharedSinksSeen::default(),
        }
    }

    /// This process's writer identity.
    pub(super) fn id(&self) -> &WriterId {
        &self.writer
    }

    /// The applier `cfg` asks for, guarded by the partitions' self-healing markers; `None`
    /// if `shutdown` is cancelled while standing by for the lease.
    pub(super) async fn next(
        &mut self,
        cfg: &SinkConfig,
        pool: Pool,
        shutdown: &CancellationToken,
    ) -> Result<Option<Arc<Applier>>, RunError> {
        self.beside_shared_sinks = false;
        let applier = match cfg.writer {
            Writer::Shared => self.script(cfg, pool, DEFAULT_LEASE_TTL, shutdown).await,
            Writer::Exclusive { lease, max_memory } => {
                let exclusive = self
                    .exclusive(
                        cfg,
                        pool,
                        lease,
                        max_memory,
                        BesideSharedSinks::TakeTheLease,
                        shutdown,
                    )
                    .await
                    .map_err(RunError::Exclusive)?;
                if exclusive.is_some() {
                    self.announcement = None;
                }
                exclusive
            }
            Writer::Auto { lease, max_memory } => {
                self.auto(cfg, pool, lease, max_memory, shutdown).await?
            }
        };
        self.yielding = matches!(cfg.writer, Writer::Auto { .. })
            && applier.as_ref().is_some_and(Applier::is_owning);
        if let Some(applier) = &applier {
            telemetry::writer_state(if applier.is_owning() {
                WriterState::Exclusive
            } else {
                WriterState::Shared
            });
        }
        // The pipeline's assignment marks its partitions: batches of a partition whose marker
        // vanished (Redis lost its data) are refused until the pipeline restarts and rewinds.
        Ok(applier.map(|a| Arc::new(a.with_marker_guard())))
    }

    /// Whether the sink goes on with a new applier after its pipeline stopped with `error`:
    /// `--writer auto` falls back to the script, or chooses again (module documentation); a
    /// shared sink refused by an exclusive one, and an exclusive sink whose lease another
    /// took, stand by for the lease. Every other error stops the sink.
    pub(super) fn recovers(&mut self, cfg: &SinkConfig, error: &ConsumeError) -> bool {
        let ConsumeError::Apply { source, .. } = error else {
            return false;
        };
        match cfg.writer {
            Writer::Auto { .. } => {}
            // Refused by an exclusive sink that took the lease: stand by for it, announced
            // ([`Appliers::next`]), rather than exit into a restart that is refused again.
            Writer::Shared => {
                let excluded = matches!(source, ApplyError::Excluded { .. });
                if excluded {
                    info!(error = %one_line(source), "Standing by until the exclusive sink gives these mappings up (--writer shared).");
                }
                return excluded;
            }
            // Another sink took the lease (this one stalled past it, e.g. through an outage):
            // a standby for it, as a second exclusive sink is, rather than exit into a
            // restart that would end as one.
            Writer::Exclusive { .. } => {
                let lost = matches!(source, ApplyError::LeaseLost { .. });
                if lost {
                    info!(error = %one_line(source), "Standing by for the exclusive lease (--writer exclusive).");
                }
                return lost;
            }
        }
        match source {
            ApplyError::WriterMemory(_) => {
                warn!(error = %one_line(source), "The exclusive writer's bookkeeping outgrew --max-writer-memory; writing through the change script from now on (--writer auto).");
                self.fall_back("memory");
                true
            }
            ApplyError::ForeignKey { .. } => {
                warn!(error = %one_line(source), "Writing through the change script from now on (--writer auto); it dead-letters the changes that write a key of another type.");
                self.fall_back("foreign_key");
                true
            }
            ApplyError::LeaseLost { .. } | ApplyError::Excluded { .. } => {
                // Another sink holds the lease: stand by for it rather than go on refused
                // by the script (a fall-back is decided again once the lease is free).
                info!(error = %one_line(source), "Choosing the writer again (--writer auto).");
                self.fell_back = false;
                true
            }
            _ => false,
        }
    }

    /// `--writer auto`: exclusive unless that is unsafe (module documentation).
    async fn auto(
        &mut self,
        cfg: &SinkConfig,
        pool: Pool,
        lease: Duration,
        max_memory: u64,
        shutdown: &CancellationToken,
    ) -> Result<Option<Applier>, RunError> {
        if self.fell_back {
            info!("Writing through the change script (--writer auto fell back to it in this process).");
            return Ok(self.script(cfg, pool, lease, shutdown).await);
        }
        let with_ttl = Applier::mappings_with_ttl(&cfg.config);
        if !with_ttl.is_empty() {
            info!(mappings = %with_ttl.join(","), "Writing through the change script: the exclusive writer cannot apply mappings with ttl_seconds (--writer auto).");
            return Ok(self.script(cfg, pool, lease, shutdown).await);
        }
        // No longer a shared writer: a standby must not keep other `auto` sinks on the script
        // (its own announcement lapses within one lease time; it never blocks itself).
        self.announcement = None;
        // The lease script checks the announcements only when it takes a lease that is not
        // held: this process may hold it now (a reload, or giving it up to a shared sink
        // standing by for it, [`Appliers::choose_again`]). A failed read leaves the choice to
        // the lease script.
        match announced_by_another(&pool, &cfg.config.mappings, &self.writer).await {
            Ok(Some(sink)) => {
                self.shared_sinks_seen.now();
                return Ok(Some(self.beside(cfg, pool, &sink)));
            }
            // None announced now, or Redis did not answer; seen recently, they are most
            // likely still there (shared_sinks_seen.rs): the wait for them goes on beside
            // them. Taking the lease once Redis answers again would find their announcements
            // gone with its data just the same.
            _ if self.shared_sinks_seen.within(gone_after(lease)) => {
                info!(wait_s = gone_after(lease).as_secs(), "No other sink announces itself as a shared writer of these mappings now, but one did less than the wait ago (redis lost the announcements with its data, or was away): writing beside them through the change script until none has for that long (--writer auto).");
                self.beside_shared_sinks = true;
                return Ok(Some(Applier::new(pool, &cfg.config)));
            }
            Ok(None) | Err(_) => {}
        }
        match self
            .exclusive(
                cfg,
                pool.clone(),
                lease,
                max_memory,
                BesideSharedSinks::Yield,
                shutdown,
            )
            .await
        {
            Ok(applier) => {
                if applier.is_some() {
                    self.announcement = None;
                    info!("Writing as the exclusive writer (--writer auto).");
                }
                Ok(applier)
            }
            Err(ApplyError::SharedSinks { sink }) => {
                self.shared_sinks_seen.now();
                Ok(Some(self.beside(cfg, pool, &sink)))
            }
            Err(e @ ApplyError::WriterMemory(_)) => {
                warn!(error = %one_line(&e), "Writing through the change script (--writer auto).");
                self.fall_back("memory");
                Ok(self.script(cfg, pool, lease, shutdown).await)
            }
            Err(e) => Err(RunError::Exclusive(e)),
        }
    }

    /// Ends when `--writer auto` should choose its applier again; never for the other
    /// writers. The caller then drains the pipeline as for a reload and calls
    /// [`Appliers::next`]. Checked every third of the lease time:
    ///
    /// - **On the script beside shared sinks**: once no sink but this one has announced
    ///   itself on `cfg`'s mappings for [`gone_after`]. The next choice takes the exclusive
    ///   lease unless a sink announced itself meanwhile. Why that long, not one check:
    ///   announcements vanish without their sinks too. Redis loses its data, or comes back
    ///   after an outage longer than the lease, and the shared sinks still running announce
    ///   themselves again within a third of their lease time; a shared sink killed is
    ///   restarted. A lease taken in that gap would make them stand by until it is given
    ///   back. A check Redis does not answer is logged and starts the wait anew.
    /// - **The exclusive writer**: once another sink announces itself as a shared writer
    ///   of the mappings. Only a sink shut out by the lease does that (a shared sink that
    ///   came back after the wait above, or started since), and it stands by until the lease
    ///   is given up; the next choice writes beside it.
    pub(super) fn choose_again(&self, cfg: &SinkConfig, pool: &Pool) -> Watch {
        let Writer::Auto { lease, .. } = cfg.writer else {
            return Box::pin(std::future::pending());
        };
        let (pool, mappings, writer, seen) = (
            pool.clone(),
            cfg.config.mappings.clone(),
            self.writer.clone(),
            self.shared_sinks_seen.clone(),
        );
        if self.yielding {
            return Box::pin(async move {
                loop {
                    tokio::time::sleep(lease / 3).await;
                    if let Ok(Some(sink)) = announced_by_another(&pool, &mappings, &writer).await {
                        seen.now();
                        info!(%sink, "A shared sink announced itself on these mappings; giving the exclusive lease up to write beside it through the change script (--writer auto).");
                        return;
                    }
                }
            });
        }
        if !self.beside_shared_sinks {
            return Box::pin(std::future::pending());
        }
        let gone_after = gone_after(lease);
        Box::pin(async move {
            let mut unannounced_since = None;
            loop {
                tokio::time::sleep(lease / 3).await;
                match announced_by_another(&pool, &mappings, &writer).await {
                    Ok(None) => {
                        let since = *unannounced_since.get_or_insert_with(Instant::now);
                        if since.elapsed() >= gone_after {
                            info!("No other sink announces itself as a shared writer of these mappings any more; choosing the writer again (--writer auto).");
                            return;
                        }
                    }
                    Ok(Some(_)) => {
                        seen.now();
                        unannounced_since = None;
                    }
                    Err(e) => {
                        unannounced_since = None;
                        warn!(error = %one_line(&e), "Cannot read the shared sinks' announcements; writing through the change script (--writer auto).");
                    }
                }
            }
        })
    }

    /// From now on the change script, for the rest of the process (`reason`: the label of
    /// `sink_writer_fallbacks_total`).
    fn fall_back(&mut self, reason: &'static str) {
        self.fell_back = true;
        metrics::counter!(telemetry::WRITER_FALLBACKS, "reason" => reason).increment(1);
    }

    /// The change script, announced for `ttl` (renewed while it is the applier), once no
    /// other exclusive sink holds the lease of one of the mappings (the script would be
    /// refused): standing by until then, announced, so that an `auto` sink holding it gives
    /// it up. `None` if `shutdown` is cancelled meanwhile. Announced anew for every applier,
    /// since a reload may add mappings or change the pool; the new announcement is made
    /// before the old one stops renewing, so there is no gap.
    async fn script(
        &mut self,
        cfg: &SinkConfig,
        pool: Pool,
        ttl: Duration,
        shutdown: &CancellationToken,
    ) -> Option<Applier> {
        self.announcement =
            Some(Announcement::start(pool.clone(), &cfg.config.mappings, &self.writer, ttl).await);
        if !self.stand_by_for_the_lease(cfg, &pool, shutdown).await {
            return None;
        }
        Some(Applier::new(pool, &cfg.config))
    }

    /// Waits while an exclusive sink other than this process holds the lease of one of
    /// `cfg`'s mappings; false if `shutdown` is cancelled meanwhile. This process's own
    /// lease does not count: `auto` falling back announces the script before it gives the
    /// lease up (`run.rs`, `hand_over`). A read Redis does not answer ends the wait: the
    /// script checks the lease itself, and a refusal brings the sink back here.
    async fn stand_by_for_the_lease(
        &self,
        cfg: &SinkConfig,
        pool: &Pool,
        shutdown: &CancellationToken,
    ) -> bool {
        // Since when, and when to say so again.
        let mut standing_by: Option<(Instant, Instant)> = None;
        loop {
            match exclusive_holder(pool, &cfg.config.mappings, &self.writer).await {
                Ok(Some(holder)) => match &mut standing_by {
                    None => {
                        warn!(%holder, "An exclusive sink holds these mappings, and the change script would be refused; standing by, announced as a shared sink, until it gives them up (an `auto` sink does within a third of its lease time, a --writer exclusive one when it stops).");
                        telemetry::writer_state(WriterState::Standby);
                        let now = Instant::now();
                        standing_by = Some((now, now + STANDBY_REMINDER));
                    }
                    Some((since, remind_at)) if Instant::now() >= *remind_at => {
                        warn!(%holder, waited_s = since.elapsed().as_secs(), "Still standing by: an exclusive sink holds these mappings (a --writer exclusive sink keeps them until it stops; give every sink of these mappings the same --writer).");
                        *remind_at += STANDBY_REMINDER;
                    }
                    Some(_) => {}
                },
                Ok(None) | Err(_) => {
                    if standing_by.is_some() {
                        info!(
                            "The exclusive lease was given up; writing through the change script."
                        );
                    }
                    return true;
                }
            }
            tokio::select! {
                () = shutdown.cancelled() => return false,
                () = tokio::time::sleep(STANDBY_POLL) => {}
            }
        }
    }

    /// The change script beside the shared sink `sink` (and any others), not announced:
    /// `--writer auto` leaves it once they are gone ([`Appliers::choose_again`]).
    fn beside(&mut self, cfg: &SinkConfig, pool: Pool, sink: &str) -> Applier {
        info!(%sink, "Writing through the change script beside the shared sinks of these mappings, until they are gone (--writer auto).");
        self.beside_shared_sinks = true;
        Applier::new(pool, &cfg.config)
    }

    /// The exclusive writer (`beside` shared sinks: as it says), waiting for room while
    /// Redis is full (taking the lease is a write), and with backoff while Redis does not
    /// answer, rather than exiting and being restarted into the same Redis.
    async fn exclusive(
        &self,
        cfg: &SinkConfig,
        pool: Pool,
        lease: Duration,
        max_memory: u64,
        beside: BesideSharedSinks,
        shutdown: &CancellationToken,
    ) -> Result<Option<Applier>, ApplyError> {
        // Until the lease is taken (at once, unless another exclusive sink holds it).
        telemetry::writer_state(WriterState::Standby);
        let mut backoff = Backoff::capped_at(WAITING_TO_START_MAX_DELAY);
        loop {
            let taken = Applier::exclusive_unless(
                beside,
                pool.clone(),
                &cfg.config,
                &self.writer,
                lease,
                max_memory,
                shutdown,
            )
            .await;
            match taken {
                Err(e) if e.is_out_of_memory() => {
                    warn!(error = %one_line(&e), "Redis is full; the exclusive writer waits for room to take its lease.");
                    tokio::select! {
                        () = shutdown.cancelled() => return Ok(None),
                        () = tokio::time::sleep(memory::CHECK_INTERVAL) => {}
                    }
                }
                // Redis went away while the lease was taken or the bookkeeping loaded:
                // exiting would only have the supervisor start this again, into the same
                // outage.
                Err(e) if e.is_retriable() => {
                    if !backoff
                        .wait("Taking the exclusive lease", &e, shutdown)
                        .await
                    {
                        return Ok(None);
                    }
                }
                taken => return taken,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::BatchSettings;
    use crate::connection::unreachable_pool;

    /// Redis restarted empty and is not answering yet when a loss or a give-up has the
    /// applier chosen again: an `auto` sink that saw shared sinks just before writes beside
    /// them, instead of waiting for Redis to take a lease whose refusals went with its data.
    #[tokio::test]
    async fn auto_writes_beside_shared_sinks_seen_just_before_while_redis_does_not_answer() {
        let config = mapping::load_config_str(
            include_str!("../../../connectors.yaml"),
            "connectors.yaml",
            &Default::default(),
        )
        .expect("loads");
        let cfg =
            SinkConfig::new(config, &[], BatchSettings::default()).with_writer(Writer::Auto {
                lease: Duration::from_secs(3),
                max_memory: 1 << 30,
            });
        let mut appliers = Appliers::new();
        appliers.shared_sinks_seen.now();
        let shutdown = CancellationToken::new();
        let chosen = tokio::time::timeout(
            Duration::from_secs(10),
            appliers.next(&cfg, unreachable_pool(), &shutdown),
        )
        .await
        .expect("chose at once, without waiting for redis")
        .expect("no error")
        .expect("an applier");
        assert!(!chosen.is_owning(), "the exclusive writer");
        assert!(appliers.beside_shared_sinks);
    }
}
