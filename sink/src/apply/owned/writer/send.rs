//! Sending one batch of the exclusive writer: the lease and marker checks, then the
//! transaction, with the checks of the next batch read in the same request.
//!
//! Each batch must run only while the lease keys name this writer and its partitions hold
//! their self-healing markers (`markers.rs`), so the transaction runs under a `WATCH` of the
//! lease keys, after reading them (and the markers) under that watch. Done as its own round
//! trip before each transaction, that cost every batch a second round trip and a wake-up of
//! the writer task, which at light load (a batch per change) is per change (BENCHMARKS.md,
//! *Fewer round trips, fewer lookups*; at full load it is lost in a batch's milliseconds).
//! So the request that carries a transaction also
//! carries, after its `EXEC`, the `WATCH` and the reads for the next batch: the watch then
//! covers everything from those reads to the next `EXEC`, exactly as when it was sent
//! alone just before it, and the next batch goes out at once when what was read holds.
//!
//! The reads are of the lease keys and of the markers of every partition whose batches went
//! through this connection (the lanes' partitions take turns); a next batch of a partition
//! not among them reads first. Held for longer than a round trip, the markers are watched
//! too, so the values read are still Redis's when the `EXEC` runs: a marker written
//! meanwhile (an assignment, this sink's or another's) refuses the transaction, which is then
//! sent once more after everything is read again and judged, so that only a changed
//! database (the lease keys no longer name this writer) counts as one.

use deadpool_redis::Pool;
use mapping::layout;
use redis::Value;

use super::super::commands::{self, Transaction};
use super::super::lease::Lease;
use super::super::markers;
use super::Sent;
use crate::apply::{ApplyError, Fences, PlannedChange};

/// The connection of the last batch that went through, kept for the next one (the pool
/// would check it with `UNWATCH` and `PING` when handing it out again: two round trips per
/// batch), with the server's `run_id` once asked on it and the reads made for the next
/// batch under a `WATCH` still in force.
pub(super) struct Kept {
    conn: deadpool_redis::Connection,
    run: Option<String>,
    /// The offsets fields whose markers are read ahead: those of the batches sent on this
    /// connection (the lanes' partitions take turns).
    fields: Vec<String>,
    ahead: Option<ReadAhead>,
}

/// Offsets fields read ahead at most; past that, only the last batch's (a writer's
/// partitions are far fewer).
const MAX_FIELDS_AHEAD: usize = 1024;

/// What was read, under the `WATCH` of the lease keys and the markers, after the last
/// batch's `EXEC`: still what Redis holds when the next `EXEC` runs, or it runs nothing.
struct ReadAhead {
    /// The lease keys' values.
    holders: Vec<Option<String>>,
    /// The markers of [`Kept::fields`], in that order.
    marked: Vec<Option<String>>,
}

impl ReadAhead {
    /// The values of `markers`, when all of `fields` were read.
    fn markers_for(&self, fields: &[String], markers: &[String]) -> Option<Vec<Option<String>>> {
        markers
            .iter()
            .map(|m| {
                let at = fields.iter().position(|f| f == m)?;
                self.marked.get(at).cloned()
            })
            .collect()
    }
}

/// One batch to send: its transaction (opened, not closed: `commands.rs`) and what its
/// errors and checks need.
pub(super) struct Batch<'a> {
    pub(super) pipe: redis::Pipeline,
    /// The batch's first change: errors about the whole batch are reported there.
    pub(super) first: Option<&'a PlannedChange>,
    pub(super) changes: usize,
    /// The offsets fields whose self-healing markers must hold (empty: unguarded).
    pub(super) markers: &'a [String],
    /// The markers they must hold: those of the assignments the batch was read under.
    pub(super) fences: &'a Fences,
}

/// Sends `batch` as a transaction, on the connection `kept` holds (or one from the pool),
/// which it keeps for the next batch once this one went through. A server error is the
/// batch's, reported at its first change as an error of a whole chunk script is (retriable
/// when transient: OOM, LOADING, ...), or the command's. The transaction runs only if the
/// lease keys still name this writer, and renews them; with markers, only while those
/// partitions hold their self-healing markers. One round trip when the reads made after the
/// last batch's `EXEC` cover this one, two otherwise.
///
/// Those reads also watch the markers, whose values they hold for longer than a round
/// trip: a transaction not executed after them, or refused on their values, is sent once
/// more after reading everything again, which tells a marker written meanwhile (judged
/// now) from a database that changed under the writer (the lease keys no longer name it:
/// [`Sent::Conflict`]).
pub(super) async fn send(
    pool: &Pool,
    kept: &mut Option<Kept>,
    lease: &Lease,
    batch: Batch<'_>,
) -> Sent {
    let Batch {
        mut pipe,
        first,
        changes,
        markers,
        fences,
    } = batch;
    let redis_error = |operation, source| {
        Sent::Failed(ApplyError::Redis {
            operation,
            changes,
            source,
        })
    };
    let Kept {
        mut conn,
        mut run,
        mut fields,
        mut ahead,
    } = match kept.take() {
        Some(held) => held,
        None => match pool.get().await {
            Ok(conn) => Kept {
                conn,
                run: None,
                fields: Vec::new(),
                ahead: None,
            },
            Err(e) => return Sent::Failed(ApplyError::Pool(e)),
        },
    };
    // Reply number of the transaction's EXEC, once closed, and whether the next batch's
    // reads ask for the server's run_id.
    let mut closed: Option<(usize, bool)> = None;
    loop {
        let read_ahead = ahead
            .take()
            .and_then(|a| Some((a.markers_for(&fields, markers)?, a.holders)));
        let from_ahead = read_ahead.is_some();
        let (marked, holders) = match read_ahead {
            Some(read) => read,
            None => {
                let mut reads = redis::pipe();
                reads.ignore_errors();
                // Reads ahead that do not cover this batch watched the markers too: that
                // watch would refuse this transaction for a marker it judges now.
                reads.cmd("UNWATCH").ignore();
                let asks_run = ask(&mut reads, lease, markers, run.as_deref(), false);
                let replies: Vec<Value> = match reads.query_async(&mut conn).await {
                    Ok(replies) => replies,
                    Err(source) => return redis_error("WATCH", source),
                };
                match answers(replies, asks_run) {
                    Ok(answers) => {
                        if asks_run {
                            run = Some(answers.run);
                        }
                        (answers.marked, answers.holders)
                    }
                    Err((operation, source)) => return redis_error(operation, source),
                }
            }
        };
        let refusal =
            if holders.is_empty() || holders.iter().any(|h| h.as_deref() != Some(lease.id())) {
                Some(Sent::Conflict)
            } else if markers.is_empty() {
                None
            } else {
                let run = run.as_deref().unwrap_or_default();
                markers::judge(markers, marked, run, fences)
                    .err()
                    .map(Sent::Failed)
            };
        if let Some(refusal) = refusal {
            if from_ahead {
                // Values read ahead may be older than what refuses: read them again.
                continue;
            }
            let _ = redis::cmd("UNWATCH").query_async::<()>(&mut conn).await;
            return refusal;
        }
        let (exec, asks_run) = *closed.get_or_insert_with(|| {
            lease.renew_in(&mut pipe);
            let exec = commands::close(&mut pipe);
            // The next batch's reads, after the EXEC.
            if fields.len() + markers.len() > MAX_FIELDS_AHEAD {
                fields.clear();
            }
            for m in markers {
                if !fields.contains(m) {
                    fields.push(m.clone());
                }
            }
            let asks_run = ask(&mut pipe, lease, &fields, run.as_deref(), true);
            pipe.ignore_errors();
            (exec, asks_run)
        });
        let mut replies = match pipe.query_async::<Vec<Value>>(&mut conn).await {
            Ok(replies) => replies,
            Err(source) => return redis_error("pipeline", source),
        };
        let answer = commands::executed(&mut replies, exec);
        if from_ahead && matches!(answer, Transaction::NotExecuted) {
            continue;
        }
        let sent = outcome(&pipe, answer, first, changes);
        if matches!(sent, Sent::Done) {
            // Unreadable reads only cost the next batch a round trip (its own reads).
            let ahead = answers(replies, asks_run).ok().map(|a| {
                if asks_run {
                    run = Some(a.run);
                }
                ReadAhead {
                    holders: a.holders,
                    marked: a.marked,
                }
            });
            *kept = Some(Kept {
                conn,
                run,
                fields,
                ahead,
            });
        }
        return sent;
    }
}

/// Adds the reads a batch's checks need to `pipe`: the `WATCH` of the lease keys (and of
/// the markers when `watch_markers`: reads made ahead), their values, then the markers of
/// `markers` (and the server's `run_id` unless `run` is known). Whether that asks for the
/// `run_id`.
fn ask(
    pipe: &mut redis::Pipeline,
    lease: &Lease,
    markers: &[String],
    run: Option<&str>,
    watch_markers: bool,
) -> bool {
    let watch = pipe.cmd("WATCH").arg(lease.keys());
    if watch_markers && !markers.is_empty() {
        watch.arg(layout::OFFSETS_RUN_KEY);
    }
    pipe.cmd("MGET").arg(lease.keys());
    if markers.is_empty() {
        return false;
    }
    markers::ask(pipe, markers, run);
    run.is_none()
}

/// The replies to [`ask`]'s reads.
struct Answers {
    holders: Vec<Option<String>>,
    /// The server's `run_id`, when asked.
    run: String,
    marked: Vec<Option<String>>,
}

/// [`ask`]'s replies read; `asked_run` when they include the `run_id`. A failed read as the
/// command that failed and its error.
fn answers(
    replies: Vec<Value>,
    asked_run: bool,
) -> Result<Answers, (&'static str, redis::RedisError)> {
    let failed = |operation, source| (operation, source);
    let mut replies = replies.into_iter();
    let (watched, holders) = (replies.next(), replies.next());
    if let Some(Value::ServerError(e)) = &watched {
        return Err(failed("WATCH", e.clone().into()));
    }
    let holders: Vec<Option<String>> = match holders.map(redis::from_redis_value) {
        Some(Ok(holders)) => holders,
        Some(Err(source)) => return Err(failed("MGET", source.into())),
        None => Vec::new(),
    };
    let run = if asked_run {
        replies
            .next()
            .map_or_else(String::new, |v| markers::run_of(&v))
    } else {
        String::new()
    };
    let marked: Vec<Option<String>> = match replies.next().map(redis::from_redis_value) {
        Some(Ok(marked)) => marked,
        Some(Err(source)) => return Err(failed("HMGET sink:offsets:run", source.into())),
        None => Vec::new(),
    };
    Ok(Answers {
        holders,
        run,
        marked,
    })
}

/// What Redis's answer to the transaction `pipe` (a batch of `changes` changes starting with
/// `first`) says: executed, not executed because a watched key changed, or failed (the
/// batch's error when Redis refused the whole transaction; a command's, with its key, when
/// one failed inside it).
pub(super) fn outcome(
    pipe: &redis::Pipeline,
    answer: Transaction,
    first: Option<&PlannedChange>,
    changes: usize,
) -> Sent {
    match answer {
        Transaction::NotExecuted => Sent::Conflict,
        Transaction::Executed(results) => results
            .into_iter()
            .enumerate()
            .find_map(|(command, r)| match r {
                // The transaction's commands follow its MULTI.
                Value::ServerError(source) => {
                    let (command, key) = failed_command(pipe, command + 1);
                    Some(Sent::Failed(ApplyError::ForeignKey {
                        command,
                        key,
                        source,
                    }))
                }
                _ => None,
            })
            .unwrap_or(Sent::Done),
        Transaction::Aborted(e) => Sent::Failed(match first {
            Some(c) => ApplyError::at_change(c, 0, e),
            None => ApplyError::Resend { changes },
        }),
        Transaction::Garbled(reply) => Sent::Failed(match first {
            Some(c) => ApplyError::unexpected_reply(c, &reply),
            None => ApplyError::Resend { changes },
        }),
    }
}

/// Command number `n` of `pipe` as its name and first key (`HSET customer:5`), and the key
/// alone (its first argument), if it has one.
fn failed_command(pipe: &redis::Pipeline, n: usize) -> (String, Option<String>) {
    let Some(cmd) = pipe.cmd_iter().nth(n) else {
        return (format!("command {n} of the transaction"), None);
    };
    let words: Vec<Option<String>> = cmd
        .args_iter()
        .take(2)
        .map(|arg| match arg {
            redis::Arg::Simple(bytes) => Some(String::from_utf8_lossy(bytes).into_owned()),
            _ => None,
        })
        .collect();
    let described = words
        .iter()
        .map(|word| word.as_deref().unwrap_or("?"))
        .collect::<Vec<_>>()
        .join(" ");
    (described, words.get(1).cloned().flatten())
}
