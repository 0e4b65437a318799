//! The shared writer: a batch as one pipeline of [`ChangeScript`] calls on one connection,
//! and the calls' per-change replies as the batch's outcome.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};

use deadpool_redis::{Connection, Pool};
use mapping::Config;
use redis::Value;

use super::ChangeScript;
use crate::apply::records::Records;
use crate::apply::{ApplyError, BatchOutcome, Fences, PlannedChange};

/// Applies batches through the change script; cheap to share (`&self` everywhere).
pub struct ScriptWriter {
    pool: Pool,
    script: ChangeScript,
    records: Records,
    /// Whether this writer has loaded the script since start (NOSCRIPT reloads it anyway).
    loaded: AtomicBool,
    /// The connection of the last batch that went through, kept for the next one. The pool
    /// checks every connection it hands out again with a round trip of its own (`UNWATCH` +
    /// `PING`); at light load, where a batch is a single change, that was one more Redis round
    /// trip per change (BENCHMARKS.md, *Adaptive batching*). One connection is kept at most,
    /// so the pool's bound holds (it always has more than one) and lanes that run at the same
    /// time still take connections of their own. A connection whose batch failed is not kept:
    /// it goes back to the pool, whose check replaces it if it is broken.
    idle: Mutex<Option<Connection>>,
}

impl ScriptWriter {
    /// A writer of `config`'s mappings on `pool`, at most `chunk` changes per script call.
    pub fn new(pool: Pool, config: &Config, chunk: usize) -> ScriptWriter {
        ScriptWriter {
            script: ChangeScript::new(&config.mappings, chunk),
            records: Records::new(pool.clone(), &config.mappings),
            pool,
            loaded: AtomicBool::new(false),
            idle: Mutex::new(None),
        }
    }

    /// The same writer, its script calls refusing partitions without their self-healing
    /// marker ([`ChangeScript::guarded`]).
    pub fn guarded(mut self) -> ScriptWriter {
        self.script = self.script.guarded();
        self
    }

    pub(crate) fn records(&self) -> &Records {
        &self.records
    }

    /// Applies `batch` (not empty), read under `fences`, in order as one pipeline of chunk
    /// scripts on one connection (a guarded writer's scripts check the fences).
    ///
    /// On `NOSCRIPT` (Redis restarted or flushed its scripts) the script is loaded and the
    /// whole batch sent again, which is harmless because every change is idempotent.
    pub(crate) async fn apply(
        &self,
        batch: &[PlannedChange],
        fences: &Fences,
    ) -> Result<BatchOutcome, ApplyError> {
        let chunks = self.script.chunks(batch);
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        for chunk in &chunks {
            pipe.add_command(self.script.command_under(chunk, fences)?);
        }
        let kept = self
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let mut conn = match kept {
            Some(conn) => conn,
            None => self.pool.get().await.map_err(ApplyError::Pool)?,
        };
        if !self.loaded.load(Ordering::Relaxed) {
            self.load(&mut conn, batch.len()).await?;
        }
        let mut replies = send(&mut conn, &pipe, batch.len()).await?;
        // A script flush between our load and the batch: load again, send again (twice at
        // most; a third NOSCRIPT is reported as the change's error).
        for _ in 0..2 {
            if !replies.iter().any(is_noscript) {
                break;
            }
            self.load(&mut conn, batch.len()).await?;
            replies = send(&mut conn, &pipe, batch.len()).await?;
        }
        if replies.len() != chunks.len() {
            return Err(ApplyError::ReplyCount {
                changes: batch.len(),
                replies: replies.len(),
            });
        }
        let outcome = outcome(&chunks, replies);
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.is_none() {
            *idle = Some(conn);
        }
        outcome
    }

    async fn load(&self, conn: &mut Connection, changes: usize) -> Result<(), ApplyError> {
        self.script
            .load(conn)
            .await
            .map_err(|source| ApplyError::Redis {
                operation: "SCRIPT LOAD",
                changes,
                source,
            })?;
        self.loaded.store(true, Ordering::Relaxed);
        Ok(())
    }
}

async fn send(
    conn: &mut Connection,
    pipe: &redis::Pipeline,
    changes: usize,
) -> Result<Vec<Value>, ApplyError> {
    pipe.query_async(conn)
        .await
        .map_err(|source| ApplyError::Redis {
            operation: "pipeline",
            changes,
            source,
        })
}

fn is_noscript(v: &Value) -> bool {
    matches!(v, Value::ServerError(e) if e.code() == "NOSCRIPT")
}

/// Counts the chunks' per-change replies; the first error wins, a retriable one over the
/// others. An error answering a whole chunk is the error of its first change.
fn outcome(chunks: &[&[PlannedChange]], replies: Vec<Value>) -> Result<BatchOutcome, ApplyError> {
    let mut out = BatchOutcome::default();
    let mut failure: Option<ApplyError> = None;
    let note = |failure: &mut Option<ApplyError>, e: ApplyError| {
        let replace = match &*failure {
            None => true,
            Some(f) => e.is_retriable() && !f.is_retriable(),
        };
        if replace {
            *failure = Some(e);
        }
    };
    let mut position = 0;
    for (chunk, reply) in chunks.iter().zip(replies) {
        let Some(first) = chunk.first() else { continue };
        match reply {
            Value::Array(items) if items.len() == chunk.len() => {
                for (offset, (change, item)) in chunk.iter().zip(items).enumerate() {
                    match item {
                        Value::Int(1) => out.applied += 1,
                        Value::Int(0) => out.skipped += 1,
                        Value::ServerError(source) => {
                            note(
                                &mut failure,
                                ApplyError::at_change(change, position + offset, source),
                            );
                        }
                        other => note(&mut failure, ApplyError::unexpected_reply(change, &other)),
                    }
                }
            }
            Value::ServerError(source) => {
                note(&mut failure, ApplyError::at_change(first, position, source));
            }
            other => note(&mut failure, ApplyError::unexpected_reply(first, &other)),
        }
        position += chunk.len();
    }
    match failure {
        Some(e) => Err(e),
        None => Ok(out),
    }
}
