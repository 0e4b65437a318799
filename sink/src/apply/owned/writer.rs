//! The owning writer: batches decided in order under one lock (`decide.rs`), written to Redis
//! by one task in that same order, so that deciding (and encoding) the next batch overlaps
//! with Redis executing the current one instead of waiting for its reply.
//!
//! A batch Redis refuses is undone in the bookkeeping together with every batch decided
//! after it (newest first: each was decided on top of the one before); those later batches
//! are not sent and are answered [`ApplyError::Resend`], so their lanes send them again and
//! they are decided afresh. Each batch is one `MULTI`/`EXEC`: a refused one (OOM when queued
//! aborts the whole transaction) leaves nothing behind, so nothing is counted twice.
//!
//! # Exclusive writer
//!
//! On the live database ([`OwnedWriter::exclusive`]) the task also keeps the writer's
//! lease (`lease.rs`): each batch watches the lease keys and checks that they name this
//! writer before its transaction (read in the request of the batch before: `send.rs`), and
//! renews them inside the transaction; an idle writer
//! renews them every third of the lease time. When the transaction is not executed because
//! a watched key changed (a rebuild swapped the database in, or the lease lapsed and was
//! taken again), what the sink holds no longer matches the database: every batch in
//! flight is undone and the bookkeeping is loaded again from Redis before anything else is
//! decided. Another writer holding the lease ends this one: every later batch is answered
//! [`ApplyError::LeaseLost`].
//!
//! A command of a transaction that fails (possible only when another program wrote a
//! mapped key with another type) is reported with its key as [`ApplyError::ForeignKey`],
//! which stops the sink: Redis executed the rest of that transaction, so the batch is
//! partly applied (`sink rebuild` repairs it once the key is fixed).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use deadpool_redis::Pool;
use mapping::layout::SWAP_SENTINEL_KEY;
use mapping::{Config, Mapping};
use redis::Value;
use tokio::sync::{mpsc, oneshot, Mutex};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::commands;
use super::decide::decide;
use super::lease::{Holding, Lease, WriterId};
use super::load::LoadError;
use super::markers;
use super::snapshots::{self, Taken};
use super::state::{OwnedState, UndoLog};
use super::MemoryBound;
use crate::apply::records::Records;
use crate::apply::{ApplyError, BatchOutcome, BesideSharedSinks, Fences, PlannedChange};
use crate::telemetry;

mod held_rows;
mod send;
mod staging;

/// How often [`OwnedWriter::write_held_rows`] looks again for no batch in flight (the
/// writer task takes the lock to settle a batch, so it cannot be waited for holding it).
const SETTLING_POLL: Duration = Duration::from_millis(2);

/// One decided batch on its way to Redis.
struct Job {
    /// The rollback generation it was decided in.
    epoch: u64,
    pipe: redis::Pipeline,
    /// The batch's first change: errors about the whole batch are reported there.
    first: Option<PlannedChange>,
    changes: usize,
    /// Per mapping with applied changes: its freshness hash and the changes counted there
    /// (`staging.rs` takes them back when a batch it executed is sent again).
    applied: Vec<(String, usize)>,
    /// The offsets fields whose self-healing markers must hold (empty: unguarded).
    markers: Vec<String>,
    /// The markers they must hold: those of the assignments the batch was read under.
    fences: Fences,
    reply: oneshot::Sender<Result<(), ApplyError>>,
}

/// What sending one transaction found.
enum Sent {
    Done,
    /// Exclusive writer: the lease key changed or does not name this writer; not executed.
    Conflict,
    Failed(ApplyError),
}

/// The bookkeeping and the undo logs of batches decided but not yet confirmed, oldest first.
struct Inner {
    state: OwnedState,
    in_flight: VecDeque<UndoLog>,
    epoch: u64,
    /// Exclusive writer: the bookkeeping must be loaded again before the next decision.
    stale: bool,
    /// Exclusive writer: the other writer that holds the lease now.
    lost: Option<String>,
}

struct Shared {
    inner: Mutex<Inner>,
    /// `Inner::epoch`, readable without the lock.
    epoch: AtomicU64,
}

/// What an exclusive writer needs to keep its lease and reload its bookkeeping.
struct Exclusive {
    lease: Lease,
    mappings: Vec<Mapping>,
    /// `--max-writer-memory`: the most the bookkeeping may take ([`OwnedState::memory`]).
    max_memory: usize,
}

/// Applies batches decided in this process against the bookkeeping it holds; cheap to
/// share (`&self` everywhere).
pub struct OwnedWriter {
    shared: Arc<Shared>,
    jobs: mpsc::UnboundedSender<Job>,
    exclusive: Option<Arc<Exclusive>>,
    pool: Pool,
    records: Records,
    /// Whether each batch's partitions must hold their self-healing markers.
    guard: bool,
    /// Exclusive writer: where its bookkeeping came from at start, `"snapshot"` or
    /// `"redis"`.
    loaded_from: Option<&'static str>,
}

impl OwnedWriter {
    /// The same writer, sending a batch only while each of its partitions is marked in
    /// `sink:offsets:run` under the server's current run ([`ApplyError::BookkeepingLost`]
    /// otherwise) by the assignment it was read under ([`ApplyError::Superseded`]
    /// otherwise): for a pipeline whose assignment marks its partitions (`sink run`).
    pub(crate) fn guarded(mut self) -> OwnedWriter {
        self.guard = true;
        self
    }

    /// A writer for an empty database that nobody else writes or reads until it is done
    /// (the rebuild's staging database). `config` must have no mapping with `ttl_seconds`
    /// (`super::with_ttl`). Call it within a Tokio runtime.
    pub(crate) fn owning(pool: Pool, config: &Config) -> OwnedWriter {
        OwnedWriter::start(OwnedState::new(&config.mappings), pool, config, None)
    }

    /// [`OwnedWriter::owning`] for a replay: its batches leave `sink:rows` out until
    /// [`OwnedWriter::write_held_rows`] writes each row's final position once.
    pub(crate) fn rebuilding(pool: Pool, config: &Config) -> OwnedWriter {
        let mut state = OwnedState::new(&config.mappings);
        state.rows_recorded = false;
        OwnedWriter::start(state, pool, config, None)
    }

    /// A writer for the live database whose mappings this sink alone writes: takes the
    /// lease (`sink:writer:{mapping}` of each mapping), waiting while another exclusive
    /// sink holds one, and loads the bookkeeping from Redis. Readers see each batch at once
    /// (one `MULTI`/`EXEC`). A rebuild swapping the database in, or a lapsed lease, makes it
    /// load the bookkeeping again; another sink taking the lease makes every later batch
    /// fail with [`ApplyError::LeaseLost`]. `config` must have no mapping with
    /// `ttl_seconds`. Bookkeeping that takes more than `max_memory` bytes, when loaded or
    /// before a batch is decided, fails with [`ApplyError::WriterMemory`] (the writer takes
    /// no further batch).
    ///
    /// `writer` names the holder: a writer with the same id takes over its lease at once.
    /// `None` if `shutdown` is cancelled while waiting for the lease. `beside` says whether a
    /// lease that is not held yet is taken while another sink announces itself as a shared
    /// writer of one of the mappings.
    pub(crate) async fn exclusive(
        pool: Pool,
        config: &Config,
        writer: &WriterId,
        lease_ttl: Duration,
        max_memory: u64,
        beside: BesideSharedSinks,
        shutdown: &CancellationToken,
    ) -> Result<Option<OwnedWriter>, ApplyError> {
        let lease = Lease::new(
            writer,
            config.mappings.iter().map(|m| m.name.as_str()),
            lease_ttl,
        );
        let exclusive = Exclusive {
            lease: match beside {
                BesideSharedSinks::Yield => lease.yielding_to_shared_sinks(),
                BesideSharedSinks::TakeTheLease => lease,
            },
            mappings: config.mappings.clone(),
            max_memory: usize::try_from(max_memory).unwrap_or(usize::MAX),
        };
        let mut conn = pool.get().await.map_err(ApplyError::Pool)?;
        let mut waiting = false;
        let mut started = Instant::now();
        let (state, source) = loop {
            match load_exclusive(&mut conn, &exclusive).await {
                Ok(loaded) => break loaded,
                Err(ApplyError::LeaseLost { holder }) => {
                    if !waiting {
                        info!(%holder, "Another exclusive sink holds the redis database; standing by until its lease lapses.");
                        waiting = true;
                    }
                    tokio::select! {
                        () = shutdown.cancelled() => return Ok(None),
                        () = tokio::time::sleep(exclusive.lease.renew_every()) => {}
                    }
                    started = Instant::now();
                }
                Err(e) => {
                    // Best effort: a standby need not wait for the lease to lapse.
                    let _ = exclusive.lease.release(&mut conn).await;
                    return Err(e);
                }
            }
        };
        drop(conn);
        let (rows, index_keys) = state.size();
        info!(
            writer = exclusive.lease.id(),
            rows,
            index_keys,
            memory_bytes = state.memory(),
            max_memory_bytes = exclusive.max_memory,
            from = source,
            load_ms = started.elapsed().as_millis(),
            "Holding the exclusive lease on the redis database; bookkeeping loaded."
        );
        let mut writer = OwnedWriter::start(state, pool, config, Some(exclusive));
        writer.loaded_from = Some(source);
        Ok(Some(writer))
    }

    /// Starts the writer task (call within a Tokio runtime); it ends with the last handle.
    /// `exclusive`: the live database, with the lease already held and `state` loaded.
    fn start(
        state: OwnedState,
        pool: Pool,
        config: &Config,
        exclusive: Option<Exclusive>,
    ) -> OwnedWriter {
        let shared = Arc::new(Shared {
            inner: Mutex::new(Inner {
                state,
                in_flight: VecDeque::new(),
                epoch: 0,
                stale: false,
                lost: None,
            }),
            epoch: AtomicU64::new(0),
        });
        let exclusive = exclusive.map(Arc::new);
        let (jobs, rx) = mpsc::unbounded_channel();
        match &exclusive {
            Some(x) => tokio::spawn(write(Arc::clone(&shared), pool.clone(), rx, Arc::clone(x))),
            None => tokio::spawn(staging::write(Arc::clone(&shared), pool.clone(), rx)),
        };
        OwnedWriter {
            shared,
            jobs,
            exclusive,
            records: Records::new(pool.clone(), &config.mappings),
            pool,
            guard: false,
            loaded_from: None,
        }
    }

    /// Exclusive writer: where its bookkeeping came from at start, `"snapshot"` (what the
    /// last exclusive writer left) or `"redis"` (read entry by entry).
    pub(crate) fn loaded_from(&self) -> Option<&'static str> {
        self.loaded_from
    }

    /// The bookkeeping's estimated bytes ([`OwnedState::memory`]).
    pub(crate) async fn memory(&self) -> usize {
        self.shared.inner.lock().await.state.memory()
    }

    pub(crate) fn records(&self) -> &Records {
        &self.records
    }

    /// Decides `batch` (read under `fences`, which a guarded writer checks), queues its
    /// writes behind every batch decided before, and returns once Redis took them (or
    /// refused them: then the decisions are undone).
    pub(crate) async fn apply(
        &self,
        batch: &[PlannedChange],
        fences: &Fences,
    ) -> Result<BatchOutcome, ApplyError> {
        let (reply, outcome) = {
            let mut inner = self.shared.inner.lock().await;
            if let Some(x) = &self.exclusive {
                if let Some(holder) = &inner.lost {
                    return Err(ApplyError::LeaseLost {
                        holder: holder.clone(),
                    });
                }
                if inner.stale {
                    reload(&mut inner, &self.pool, x).await?;
                }
                let memory = inner.state.memory();
                metrics::gauge!(telemetry::WRITER_MEMORY_BYTES).set(memory as f64);
                if memory > x.max_memory {
                    let (rows, index_keys) = inner.state.size();
                    return Err(ApplyError::WriterMemory(MemoryBound {
                        rows,
                        index_keys,
                        estimate: memory as u64,
                        bound: x.max_memory as u64,
                    }));
                }
            }
            let decided = decide(&mut inner.state, batch);
            let pipe = commands::transaction(&decided.writes, &decided.bookkeeping);
            inner.in_flight.push_back(decided.undo);
            let (tx, rx) = oneshot::channel();
            let job = Job {
                epoch: inner.epoch,
                pipe,
                first: batch.first().cloned(),
                changes: batch.len(),
                applied: decided
                    .bookkeeping
                    .freshness
                    .iter()
                    .map(|f| (f.key.clone(), f.applied))
                    .collect(),
                markers: if self.guard {
                    markers::fields(batch)
                } else {
                    Vec::new()
                },
                fences: fences.clone(),
                reply: tx,
            };
            if self.jobs.send(job).is_err() {
                if let Some(undo) = inner.in_flight.pop_back() {
                    inner.state.rollback(undo);
                }
                return Err(ApplyError::Resend {
                    changes: batch.len(),
                });
            }
            (rx, decided.outcome)
        };
        match reply.await {
            Ok(Ok(())) => outcome,
            Ok(Err(e)) => Err(e),
            Err(_) => Err(ApplyError::Resend {
                changes: batch.len(),
            }),
        }
    }

    /// A rebuilding writer ([`OwnedWriter::rebuilding`]): writes the `sink:rows` entry of
    /// every row it holds, which its batches left out, and from then on records them with
    /// every batch as the other writers do. Waits until no batch is in flight, and holds the
    /// decisions meanwhile, so that the entries are those of the batches Redis executed.
    /// The number of entries written (0 when none were held back).
    pub(crate) async fn write_held_rows(&self) -> Result<usize, ApplyError> {
        let mut inner = self.settled().await;
        if inner.state.rows_recorded {
            return Ok(0);
        }
        let mut conn = self.pool.get().await.map_err(ApplyError::Pool)?;
        let mut written = 0;
        let mut requests = held_rows::Requests::default();
        for (hash, key, position) in inner.state.row_entries() {
            if let Some((request, entries)) = requests.push(hash, &key, position) {
                send_held_rows(&mut conn, request, entries).await?;
                written += entries;
            }
        }
        if let Some((request, entries)) = requests.finish() {
            send_held_rows(&mut conn, request, entries).await?;
            written += entries;
        }
        inner.state.rows_recorded = true;
        Ok(written)
    }

    /// The decisions' lock, once no batch is in flight: Redis holds what the state says.
    async fn settled(&self) -> tokio::sync::MutexGuard<'_, Inner> {
        loop {
            let inner = self.shared.inner.lock().await;
            if inner.in_flight.is_empty() {
                return inner;
            }
            drop(inner);
            tokio::time::sleep(SETTLING_POLL).await;
        }
    }

    /// Exclusive writer: stops writing, leaves its bookkeeping in Redis for the next
    /// exclusive writer (`snapshots.rs`) when `snapshot` says so, and gives the lease up.
    /// Call it once every batch was answered.
    pub(crate) async fn release(&self, snapshot: bool) -> Result<(), ApplyError> {
        let Some(x) = &self.exclusive else {
            return Ok(());
        };
        let mut inner = self.shared.inner.lock().await;
        // The state is Redis's only when every batch decided was confirmed.
        let settled = inner.in_flight.is_empty() && !inner.stale && inner.lost.is_none();
        undo_all(&self.shared, &mut inner);
        inner.lost = Some("(released at shutdown)".to_owned());
        let mut conn = self.pool.get().await.map_err(ApplyError::Pool)?;
        if settled && snapshot {
            leave_snapshot(&mut conn, x, &inner.state).await;
        }
        x.lease
            .release(&mut conn)
            .await
            .map_err(|source| ApplyError::Redis {
                operation: "lease release",
                changes: 0,
                source,
            })
    }
}

/// The exclusive writer's task: sends each job in turn (each must first see that the lease
/// still names this writer); on a failure undoes it and every later one.
async fn write(
    shared: Arc<Shared>,
    pool: Pool,
    mut jobs: mpsc::UnboundedReceiver<Job>,
    x: Arc<Exclusive>,
) {
    let mut kept: Option<send::Kept> = None;
    loop {
        let job = tokio::select! {
            job = jobs.recv() => job,
            () = tokio::time::sleep(x.lease.renew_every()) => {
                // Renewing writes the lease keys, which the kept connection watches for the
                // next batch: that watch would refuse it. The pool unwatches it.
                kept = None;
                renew_idle(&shared, &pool, &x).await;
                continue;
            }
        };
        let Some(job) = job else { break };
        if job.epoch != shared.epoch.load(Ordering::Acquire) {
            // Decided on top of a batch that failed; already undone.
            let _ = job.reply.send(Err(ApplyError::Resend {
                changes: job.changes,
            }));
            continue;
        }
        let sent = send::send(
            &pool,
            &mut kept,
            &x.lease,
            send::Batch {
                pipe: job.pipe,
                first: job.first.as_ref(),
                changes: job.changes,
                markers: &job.markers,
                fences: &job.fences,
            },
        )
        .await;
        let mut inner = shared.inner.lock().await;
        let failure = match sent {
            Sent::Done => {
                inner.in_flight.pop_front();
                let _ = job.reply.send(Ok(()));
                continue;
            }
            Sent::Conflict => {
                info!("The redis database changed under the exclusive sink (swapped in by a rebuild, or the lease lapsed); loading its bookkeeping again.");
                inner.stale = true;
                ApplyError::Resend {
                    changes: job.changes,
                }
            }
            Sent::Failed(failure) => {
                // The rest of the transaction was executed around a failed command: only
                // the database knows what holds now.
                if matches!(failure, ApplyError::ForeignKey { .. }) {
                    inner.stale = true;
                }
                failure
            }
        };
        undo_all(&shared, &mut inner);
        let _ = job.reply.send(Err(failure));
    }
}

/// Sends one request of [`OwnedWriter::write_held_rows`], `entries` entries.
async fn send_held_rows(
    conn: &mut deadpool_redis::Connection,
    request: redis::Pipeline,
    entries: usize,
) -> Result<(), ApplyError> {
    request
        .query_async::<()>(&mut **conn)
        .await
        .map_err(|source| ApplyError::Redis {
            operation: "HSET of the held sink:rows entries",
            changes: entries,
            source,
        })
}

/// Undoes every batch in flight, newest first; their jobs are answered "send again".
fn undo_all(shared: &Shared, inner: &mut Inner) {
    while let Some(undo) = inner.in_flight.pop_back() {
        inner.state.rollback(undo);
    }
    inner.epoch += 1;
    shared.epoch.store(inner.epoch, Ordering::Release);
}

/// Renews an idle writer's lease; a lapsed one is taken again with a reload.
async fn renew_idle(shared: &Shared, pool: &Pool, x: &Exclusive) {
    // Under the lock, so that a release (or a loss) and a renewal cannot cross: a writer
    // that gave its lease up must not take it again.
    let mut inner = shared.inner.lock().await;
    if inner.lost.is_some() {
        return;
    }
    let holding = match pool.get().await {
        Ok(mut conn) => x.lease.take(&mut conn).await,
        Err(e) => {
            warn!(error = %e, "Cannot renew the exclusive sink's lease: no redis connection.");
            return;
        }
    };
    match holding {
        Ok(Holding::Kept) => {}
        Ok(Holding::Taken) => {
            info!("The exclusive sink's lease had lapsed or the database was swapped; loading the bookkeeping again.");
            undo_all(shared, &mut inner);
            inner.stale = true;
        }
        Ok(Holding::HeldBy(holder) | Holding::SharedSinks(holder)) => {
            undo_all(shared, &mut inner);
            warn!(%holder, "Another sink took the exclusive lease on the redis database; this sink stops writing.");
            inner.lost = Some(holder);
        }
        Err(e) => warn!(error = %e, "Cannot renew the exclusive sink's lease."),
    }
}

/// Takes the lease again and loads the bookkeeping from the database (stale state): until
/// it succeeds, every batch is answered with the error (retriable unless the lease is lost).
async fn reload(inner: &mut Inner, pool: &Pool, x: &Exclusive) -> Result<(), ApplyError> {
    let mut conn = pool.get().await.map_err(ApplyError::Pool)?;
    match load_exclusive(&mut conn, x).await {
        Ok((state, _)) => {
            inner.state = state;
            inner.stale = false;
            Ok(())
        }
        Err(ApplyError::LeaseLost { holder }) => {
            inner.lost = Some(holder.clone());
            Err(ApplyError::LeaseLost { holder })
        }
        Err(e) => Err(e),
    }
}

/// Leaves `state` in Redis for the next exclusive writer; a failure only costs that writer
/// a full load.
async fn leave_snapshot(conn: &mut deadpool_redis::Connection, x: &Exclusive, state: &OwnedState) {
    let started = Instant::now();
    match snapshots::write(conn, &x.lease, &x.mappings, state).await {
        Ok(Some(bytes)) => info!(
            bytes,
            write_ms = started.elapsed().as_millis(),
            "Left the bookkeeping in redis for the next exclusive sink."
        ),
        Ok(None) => {
            info!("Not leaving the bookkeeping in redis: the lease is no longer this sink's.")
        }
        Err(e) => {
            warn!(error = %e, "Cannot leave the bookkeeping in redis; the next exclusive sink will read it row by row.")
        }
    }
}

/// Where a loaded state came from, for the start-up line.
const FROM_SNAPSHOT: &str = "snapshot";
const FROM_REDIS: &str = "redis";

/// Takes (or keeps) the lease, then loads the bookkeeping of the database under a watch
/// that notices a swap meanwhile (then loads again): from the snapshot a writer that
/// stopped cleanly left, when it is usable, else entry by entry. Also says which.
async fn load_exclusive(
    conn: &mut deadpool_redis::Connection,
    x: &Exclusive,
) -> Result<(OwnedState, &'static str), ApplyError> {
    let redis_error = |operation| {
        move |source| ApplyError::Redis {
            operation,
            changes: 0,
            source,
        }
    };
    loop {
        match x.lease.take(conn).await.map_err(redis_error("lease"))? {
            Holding::Kept | Holding::Taken => {}
            Holding::HeldBy(holder) => return Err(ApplyError::LeaseLost { holder }),
            Holding::SharedSinks(sink) => return Err(ApplyError::SharedSinks { sink }),
        }
        redis::cmd("WATCH")
            .arg(SWAP_SENTINEL_KEY)
            .query_async::<()>(conn)
            .await
            .map_err(redis_error("WATCH"))?;
        let loaded = match snapshots::take(conn, &x.mappings, x.max_memory)
            .await
            .map_err(redis_error("snapshot"))?
        {
            Taken::Used { state, bytes } => {
                info!(
                    bytes,
                    "Starting from the bookkeeping the last exclusive sink left in redis."
                );
                (*state).counted(x.max_memory).map(|s| (s, FROM_SNAPSHOT))
            }
            Taken::Refused(why) => {
                info!(reason = %why, "Not using the bookkeeping snapshot in redis; reading the bookkeeping entry by entry.");
                load_entries(conn, x).await.map(|s| (s, FROM_REDIS))
            }
            Taken::Absent => load_entries(conn, x).await.map(|s| (s, FROM_REDIS)),
        };
        let loaded = match loaded {
            Ok(loaded) => loaded,
            Err(LoadError::LeaseLost(holder)) => return Err(ApplyError::LeaseLost { holder }),
            Err(LoadError::TooLarge(bound)) => {
                let _ = redis::cmd("UNWATCH").query_async::<()>(conn).await;
                return Err(ApplyError::WriterMemory(bound));
            }
            Err(e) => {
                let _ = redis::cmd("UNWATCH").query_async::<()>(conn).await;
                return Err(ApplyError::Load(e));
            }
        };
        let mut confirm = redis::pipe();
        x.lease.renew_in(&mut confirm);
        let confirmed: Option<Vec<Value>> = confirm
            .atomic()
            .query_async(conn)
            .await
            .map_err(redis_error("EXEC"))?;
        if confirmed.is_some() {
            return Ok(loaded);
        }
        info!("The redis database was swapped while the bookkeeping was loading; loading again.");
    }
}

/// The bookkeeping read from Redis entry by entry.
async fn load_entries(
    conn: &mut deadpool_redis::Connection,
    x: &Exclusive,
) -> Result<OwnedState, LoadError> {
    let mut state = OwnedState::new(&x.mappings);
    state.load(conn, Some(&x.lease), x.max_memory).await?;
    Ok(state)
}
