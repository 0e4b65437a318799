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
//!   of a lease time, [`Appliers::shared_sinks_gone`]), the pipeline is drained as for a
//!   reload and the choice made again: the exclusive writer.
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

use super::RunError;
use crate::apply::{
    announced_by_another, Announcement, Applier, ApplyError, BesideSharedSinks, WriterId,
    DEFAULT_LEASE_TTL,
};
use crate::config::{SinkConfig, Writer};
use crate::memory;
use crate::pipeline::ConsumeError;
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
}

/// A watch that ends when the applier should be chosen again ([`Appliers::shared_sinks_gone`]).
pub(super) type Watch = Pin<Box<dyn Future<Output = ()> + Send>>;

/// How long no other sink's announcement must hold before an `auto` sink beside shared
/// sinks takes them for gone: [`GONE_AFTER_LEASES`] of its lease times, and at least the
/// default lease time, which a `--writer shared` sink announces itself for (renewing every
/// third of it).
fn gone_after(lease: Duration) -> Duration {
    (lease * GONE_AFTER_LEASES).max(DEFAULT_LEASE_TTL)
}

/// Lease times without announcements after which shared sinks count as gone. A shared sink
/// that comes back later finds the lease taken and is refused (exit 1), as beside any
/// exclusive sink; one restarted within this time (a minute with the default lease: a
/// crash, a reschedule) announces itself again first. Taking the fast path that much later
/// costs little.
const GONE_AFTER_LEASES: u32 = 6;

impl Appliers {
    pub(super) fn new() -> Appliers {
        Appliers {
            writer: WriterId::new(),
            fell_back: false,
            announcement: None,
            beside_shared_sinks: false,
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
            Writer::Shared => Some(self.script(cfg, pool, DEFAULT_LEASE_TTL).await),
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
    /// `--writer auto` falls back to the script, or chooses again, where `exclusive` would
    /// stop (module documentation).
    pub(super) fn recovers(&mut self, cfg: &SinkConfig, error: &ConsumeError) -> bool {
        let Writer::Auto { .. } = cfg.writer else {
            return false;
        };
        let ConsumeError::Apply { source, .. } = error else {
            return false;
        };
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
            return Ok(Some(self.script(cfg, pool, lease).await));
        }
        let with_ttl = Applier::mappings_with_ttl(&cfg.config);
        if !with_ttl.is_empty() {
            info!(mappings = %with_ttl.join(","), "Writing through the change script: the exclusive writer cannot apply mappings with ttl_seconds (--writer auto).");
            return Ok(Some(self.script(cfg, pool, lease).await));
        }
        // No longer a shared writer: a standby must not keep other `auto` sinks on the script
        // (its own announcement lapses within one lease time; it never blocks itself).
        self.announcement = None;
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
                info!(%sink, "Writing through the change script beside the shared sinks of these mappings, until they are gone (--writer auto).");
                self.beside_shared_sinks = true;
                Ok(Some(Applier::new(pool, &cfg.config)))
            }
            Err(e @ ApplyError::WriterMemory(_)) => {
                warn!(error = %one_line(&e), "Writing through the change script (--writer auto).");
                self.fall_back("memory");
                Ok(Some(self.script(cfg, pool, lease).await))
            }
            Err(e) => Err(RunError::Exclusive(e)),
        }
    }

    /// Ends once no sink but this one has announced itself on `cfg`'s mappings for
    /// [`gone_after`] (checked every third of the lease time), while the applier is the
    /// change script only because of such announcements; never otherwise. The caller then
    /// drains the pipeline and chooses the applier again, which takes the exclusive lease
    /// unless a sink announced itself meanwhile.
    ///
    /// Why that long, not one check: announcements vanish without their sinks too. Redis
    /// loses its data, or comes back after an outage longer than the lease, and the shared
    /// sinks still running announce themselves again within a third of their lease time;
    /// a shared sink killed is restarted. A lease taken in that gap would make the change
    /// script refuse them, and a `--writer shared` sink exits when refused. A check Redis
    /// does not answer is logged and starts the wait anew.
    pub(super) fn shared_sinks_gone(&self, cfg: &SinkConfig, pool: &Pool) -> Watch {
        let Writer::Auto { lease, .. } = cfg.writer else {
            return Box::pin(std::future::pending());
        };
        if !self.beside_shared_sinks {
            return Box::pin(std::future::pending());
        }
        let (pool, mappings, writer) = (
            pool.clone(),
            cfg.config.mappings.clone(),
            self.writer.clone(),
        );
        let gone_after = gone_after(lease);
        Box::pin(async move {
            let mut unannounced_since = None;
            loop {
                tokio::time::sleep(lease / 3).await;
                match announced_by_another(&pool, &mappings, &writer).await {
                    Ok(None) => {
                        let since = *unannounced_since.get_or_insert_with(Instant::now);
                        if since.elapsed() >= gone_after {
                            return;
                        }
                    }
                    Ok(Some(_)) => unannounced_since = None,
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

    /// The change script, announced for `ttl` (renewed while it is the applier). Announced
    /// anew for every applier, since a reload may add mappings or change the pool; the new
    /// announcement is made before the old one stops renewing, so there is no gap.
    async fn script(&mut self, cfg: &SinkConfig, pool: Pool, ttl: Duration) -> Applier {
        self.announcement =
            Some(Announcement::start(pool.clone(), &cfg.config.mappings, &self.writer, ttl).await);
        Applier::new(pool, &cfg.config)
    }

    /// The exclusive writer (`beside` shared sinks: as it says), waiting
    /// for room while Redis is full rather than exiting (and being restarted into the same
    /// full Redis): taking the lease is a write.
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
                taken => return taken,
            }
        }
    }
}
