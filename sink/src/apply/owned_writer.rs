//! Sending the owning applier's batches: decided in order under one lock, written to Redis
//! by one task in that same order, so that deciding (and encoding) the next batch overlaps
//! with Redis executing the current one instead of waiting for its reply.
//!
//! A batch Redis refuses is undone in the bookkeeping together with every batch decided
//! after it (newest first: each was decided on top of the one before); those later batches
//! are not sent and are answered [`ApplyError::Resend`], so their lanes send them again and
//! they are decided afresh. Each batch is one `MULTI`/`EXEC`: a refused one (OOM when queued
//! aborts the whole transaction) leaves nothing behind, so nothing is counted twice.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use deadpool_redis::Pool;
use redis::Value;
use tokio::sync::{mpsc, oneshot, Mutex};

use super::owned::{OwnedState, UndoLog};
use super::{ApplyError, BatchOutcome, PlannedChange};

/// One decided batch on its way to Redis.
struct Job {
    /// The rollback generation it was decided in.
    epoch: u64,
    pipe: redis::Pipeline,
    /// The batch's first change: errors about the whole batch are reported there.
    first: Option<PlannedChange>,
    changes: usize,
    reply: oneshot::Sender<Result<(), ApplyError>>,
}

/// The bookkeeping and the undo logs of batches decided but not yet confirmed, oldest first.
struct Inner {
    state: OwnedState,
    in_flight: VecDeque<UndoLog>,
    epoch: u64,
}

struct Shared {
    inner: Mutex<Inner>,
    /// `Inner::epoch`, readable without the lock.
    epoch: AtomicU64,
}

/// The owning applier's state and its writer task.
pub(crate) struct OwnedWriter {
    shared: Arc<Shared>,
    jobs: mpsc::UnboundedSender<Job>,
}

impl OwnedWriter {
    /// Starts the writer task (call within a Tokio runtime); it ends with the last handle.
    pub(crate) fn start(state: OwnedState, pool: Pool) -> OwnedWriter {
        let shared = Arc::new(Shared {
            inner: Mutex::new(Inner {
                state,
                in_flight: VecDeque::new(),
                epoch: 0,
            }),
            epoch: AtomicU64::new(0),
        });
        let (jobs, rx) = mpsc::unbounded_channel();
        tokio::spawn(write(Arc::clone(&shared), pool, rx));
        OwnedWriter { shared, jobs }
    }

    /// Decides `batch`, queues its writes behind every batch decided before, and returns
    /// once Redis took them (or refused them: then the decisions are undone).
    pub(crate) async fn apply(&self, batch: &[PlannedChange]) -> Result<BatchOutcome, ApplyError> {
        let (reply, outcome) = {
            let mut inner = self.shared.inner.lock().await;
            let (pipe, undo, outcome) = inner.state.plan_batch(batch);
            inner.in_flight.push_back(undo);
            let (tx, rx) = oneshot::channel();
            let job = Job {
                epoch: inner.epoch,
                pipe,
                first: batch.first().cloned(),
                changes: batch.len(),
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
            (rx, outcome)
        };
        match reply.await {
            Ok(Ok(())) => outcome,
            Ok(Err(e)) => Err(e),
            Err(_) => Err(ApplyError::Resend {
                changes: batch.len(),
            }),
        }
    }
}

/// The writer task: sends each job in turn; on a failure undoes it and every later one.
async fn write(shared: Arc<Shared>, pool: Pool, mut jobs: mpsc::UnboundedReceiver<Job>) {
    while let Some(job) = jobs.recv().await {
        if job.epoch != shared.epoch.load(Ordering::Acquire) {
            // Decided on top of a batch that failed; already undone.
            let _ = job.reply.send(Err(ApplyError::Resend {
                changes: job.changes,
            }));
            continue;
        }
        let failed = send(&pool, job.pipe, job.first.as_ref(), job.changes).await;
        let mut inner = shared.inner.lock().await;
        match failed {
            None => {
                inner.in_flight.pop_front();
                let _ = job.reply.send(Ok(()));
            }
            Some(e) => {
                while let Some(undo) = inner.in_flight.pop_back() {
                    inner.state.rollback(undo);
                }
                inner.epoch += 1;
                shared.epoch.store(inner.epoch, Ordering::Release);
                let _ = job.reply.send(Err(e));
            }
        }
    }
}

/// Sends one batch as a transaction; the error, if Redis did not take all of it. A server
/// error is the batch's, reported at its first change as an error of a whole chunk script is
/// (retriable when transient: OOM, LOADING, ...).
async fn send(
    pool: &Pool,
    mut pipe: redis::Pipeline,
    first: Option<&PlannedChange>,
    changes: usize,
) -> Option<ApplyError> {
    pipe.atomic().ignore_errors();
    let mut conn = match pool.get().await {
        Ok(conn) => conn,
        Err(e) => return Some(ApplyError::Pool(e)),
    };
    let at = |source: redis::ServerError| first.map(|c| super::change_error(c, 0, source));
    match pipe.query_async::<Vec<Value>>(&mut conn).await {
        Ok(replies) => replies.into_iter().find_map(|r| match r {
            Value::ServerError(e) => at(e),
            _ => None,
        }),
        Err(source)
            if matches!(
                source.kind(),
                redis::ErrorKind::Server(redis::ServerErrorKind::ExecAbort)
            ) =>
        {
            let text = source.to_string();
            match source
                .into_server_errors()
                .and_then(|errors| errors.first().map(|(_, e)| e.clone()))
            {
                Some(e) => at(e),
                None => first.map(|c| super::reply_error(c, &Value::SimpleString(text))),
            }
        }
        Err(source) => Some(ApplyError::Redis {
            operation: "pipeline",
            changes,
            source,
        }),
    }
}
