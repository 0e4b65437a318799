//! The writer task of a staging database (the rebuild's): several transactions in flight
//! on one connection, so that Redis executes the next batch while the sink reads the reply
//! of the last one, instead of waiting a round trip (and the sink's wake-up) between
//! batches.
//!
//! Redis executes commands of one connection in the order they were sent, so the batches
//! still land in the order they were decided; replies come back in that order too, and are
//! settled one by one as the one-at-a-time task settles them. What differs is a refusal:
//! the batches sent after the refused one may have been executed by then, on top of a
//! batch that was not. They are undone in the bookkeeping and sent again like every batch
//! decided after a refusal (their writes set final values, so writing them twice leaves
//! the same keys), except for the one count that adds up: their `applied_count`, which
//! is taken back ([`Job::applied`]).
//!
//! There is no lease and nothing else writes a staging database, so no watch either: the
//! live database's writer keeps one transaction in flight (`writer.rs`), because each of
//! its batches must first see that the lease still names it.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use deadpool_redis::Pool;
use futures::stream::{FuturesOrdered, StreamExt};
use redis::aio::MultiplexedConnection;
use redis::Value;
use tokio::sync::mpsc;
use tracing::warn;

use super::super::commands;
use super::send::outcome;
use super::{undo_all, Job, Sent, Shared};
use crate::apply::ApplyError;
use mapping::layout;

/// Transactions sent and not yet answered, at most: enough that Redis has the next one
/// while the sink reads a reply and wakes up for it. Three took 2-12 % off a rebuild's
/// replay against one at a time (BENCHMARKS.md, *Fewer round trips, fewer lookups*); two
/// were not measured apart.
const DEPTH: usize = 3;

/// Sends each job as soon as it comes (up to [`DEPTH`] unanswered), settles the replies in
/// order; on a failure undoes every batch in flight.
pub(super) async fn write(shared: Arc<Shared>, pool: Pool, mut jobs: mpsc::UnboundedReceiver<Job>) {
    // The pooled connection the transactions go through (clones share its socket).
    let mut held: Option<deadpool_redis::Connection> = None;
    let mut sent = FuturesOrdered::new();
    let mut open = true;
    loop {
        tokio::select! {
            biased;
            Some((job, reply)) = sent.next(), if !sent.is_empty() => {
                settle(&shared, &mut held, job, reply).await;
            }
            job = jobs.recv(), if open && sent.len() < DEPTH => {
                let Some(job) = job else {
                    open = false;
                    continue;
                };
                // A staging database has no self-healing markers (`OwnedWriter::guarded`).
                debug_assert!(job.markers.is_empty(), "a staging writer is never guarded");
                if job.epoch != shared.epoch.load(Ordering::Acquire) {
                    // Decided on top of a batch that failed; already undone.
                    resend(job);
                    continue;
                }
                let mut conn = match connection(&pool, &mut held).await {
                    Ok(conn) => conn,
                    Err(e) => {
                        fail(&shared, job, e).await;
                        continue;
                    }
                };
                sent.push_back(async move {
                    let mut job = job;
                    let exec = commands::close(&mut job.pipe);
                    job.pipe.ignore_errors();
                    let reply = job.pipe.query_async::<Vec<Value>>(&mut conn).await;
                    (job, reply.map(|mut replies| commands::executed(&mut replies, exec)))
                });
            }
            else => break,
        }
    }
}

/// A handle on the held connection, taking one from the pool first if none is held.
async fn connection(
    pool: &Pool,
    held: &mut Option<deadpool_redis::Connection>,
) -> Result<MultiplexedConnection, ApplyError> {
    if held.is_none() {
        *held = Some(pool.get().await.map_err(ApplyError::Pool)?);
    }
    Ok(held.as_ref().map(|c| (**c).clone()).expect("held above"))
}

/// Settles the reply to `job`'s transaction, in the order the jobs were sent.
async fn settle(
    shared: &Shared,
    held: &mut Option<deadpool_redis::Connection>,
    job: Job,
    reply: redis::RedisResult<commands::Transaction>,
) {
    let sent = match reply {
        Ok(answer) => outcome(&job.pipe, answer, job.first.as_ref(), job.changes),
        Err(source) => Sent::Failed(ApplyError::Redis {
            operation: "pipeline",
            changes: job.changes,
            source,
        }),
    };
    if job.epoch != shared.epoch.load(Ordering::Acquire) {
        // Undone with a batch before it, and to be sent again.
        if matches!(sent, Sent::Done) {
            take_back(held, &job).await;
        }
        resend(job);
        return;
    }
    match sent {
        Sent::Done => {
            shared.inner.lock().await.in_flight.pop_front();
            let _ = job.reply.send(Ok(()));
        }
        Sent::Conflict => {
            // Nothing is watched here, so this is not Redis's answer to a transaction.
            let changes = job.changes;
            fail(shared, job, ApplyError::Resend { changes }).await;
        }
        Sent::Failed(e) => {
            if matches!(e, ApplyError::Redis { .. }) {
                // The connection may be broken: take another for the next batch.
                *held = None;
            }
            fail(shared, job, e).await;
        }
    }
}

/// Undoes every batch in flight and answers `job` with `failure`.
async fn fail(shared: &Shared, job: Job, failure: ApplyError) {
    let mut inner = shared.inner.lock().await;
    undo_all(shared, &mut inner);
    let _ = job.reply.send(Err(failure));
}

/// Answers `job` "send again".
fn resend(job: Job) {
    let _ = job.reply.send(Err(ApplyError::Resend {
        changes: job.changes,
    }));
}

/// Takes back the applied counts of a batch Redis executed after an earlier one failed: the
/// batch is sent again and counted again. Best effort: a failure leaves the staging
/// database's `applied_count` too high by that batch, and says so.
async fn take_back(held: &mut Option<deadpool_redis::Connection>, job: &Job) {
    if job.applied.is_empty() {
        return;
    }
    let Some(conn) = held.as_mut() else {
        warn!(
            changes = job.changes,
            "Cannot take back the applied count of a batch sent again: no redis connection."
        );
        return;
    };
    let mut pipe = redis::pipe();
    for (key, applied) in &job.applied {
        let applied = i64::try_from(*applied).unwrap_or(i64::MAX);
        pipe.hincr(key, layout::freshness::APPLIED_COUNT, -applied)
            .ignore();
    }
    if let Err(e) = pipe.query_async::<()>(&mut **conn).await {
        warn!(error = %e, changes = job.changes, "Cannot take back the applied count of a batch sent again; the rebuilt applied_count counts it twice.");
    }
}
