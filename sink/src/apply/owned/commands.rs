//! A decided batch as Redis commands: `MULTI`, its writes, then its bookkeeping entries,
//! then one script call recording freshness and offsets, for [`super::writer`] to close
//! with `EXEC` and send. The only place the owning writer's decisions meet the Redis client.
//!
//! The transaction is spelled out (`MULTI` here, `EXEC` by the writer) rather than left to
//! `redis::Pipeline::atomic`, so that the writer can send more after the `EXEC` in the same
//! request: the exclusive writer's reads for its next batch (`writer.rs`).

use std::sync::LazyLock;

use redis::Value;

use super::bookkeeping::Bookkeeping;
use super::emit::Write;
use crate::apply::script::{format_score, layout_constants};

/// Records freshness and offsets for a batch, as the end of a chunk script does; run after
/// the layout's names ([`layout_constants`]).
/// ARGV: M, then M × (freshness key, applied count, highest source_ts_ms or ''), then
/// P, then P × (offsets field, offset).
const BOOKKEEPING_BODY: &str = r"
local function gt(a, b)
  if #a ~= #b then return #a > #b end
  return a > b
end
local i, now = 2, false
for _ = 1, tonumber(ARGV[1]) do
  local fresh, n, ts = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  i = i + 3
  if not now then
    local t = redis.call('TIME')
    now = t[1] .. string.format('%03d', math.floor(tonumber(t[2]) / 1000))
  end
  local cur = ts ~= '' and redis.call('HGET', fresh, SOURCE_TS_MS)
  if ts ~= '' and (not cur or gt(ts, cur)) then
    redis.call('HSET', fresh, SOURCE_TS_MS, ts, APPLIED_AT_MS, now)
  else
    redis.call('HSET', fresh, APPLIED_AT_MS, now)
  end
  redis.call('HINCRBY', fresh, APPLIED_COUNT, n)
end
local np = tonumber(ARGV[i])
i = i + 1
for _ = 1, np do
  local field, offset = ARGV[i], ARGV[i + 1]
  i = i + 2
  local cur = redis.call('HGET', OFFSETS, field)
  if not cur or gt(offset, cur) then redis.call('HSET', OFFSETS, field, offset) end
end
return 1
";

/// [`BOOKKEEPING_BODY`] after the layout's names.
static BOOKKEEPING_SCRIPT: LazyLock<String> =
    LazyLock::new(|| format!("{}{BOOKKEEPING_BODY}", layout_constants()));

/// The commands of a decided batch, in order: `MULTI`, `writes`, then `bookkeeping`; not
/// closed ([`close`]).
pub(super) fn transaction(writes: &[Write<'_>], bookkeeping: &Bookkeeping) -> redis::Pipeline {
    let mut pipe = redis::pipe();
    pipe.cmd("MULTI");
    for write in writes {
        push(&mut pipe, write);
    }
    for write in &bookkeeping.entries {
        push(&mut pipe, write);
    }
    if !bookkeeping.freshness.is_empty() || !bookkeeping.offsets.is_empty() {
        let cmd = pipe
            .cmd("EVAL")
            .arg(BOOKKEEPING_SCRIPT.as_str())
            .arg(0)
            .arg(bookkeeping.freshness.len());
        for f in &bookkeeping.freshness {
            cmd.arg(&f.key)
                .arg(f.applied)
                .arg(f.source_ts_ms.map_or_else(String::new, |t| t.to_string()));
        }
        cmd.arg(bookkeeping.offsets.len());
        for (field, offset) in &bookkeeping.offsets {
            cmd.arg(field).arg(*offset);
        }
    }
    pipe
}

/// Closes the transaction [`transaction`] opened (anything added before this is part of
/// it); returns the number of its reply in the pipeline's replies.
pub(super) fn close(pipe: &mut redis::Pipeline) -> usize {
    pipe.cmd("EXEC");
    pipe.cmd_iter().count() - 1
}

/// What the replies to a pipeline with a transaction (`MULTI` first, `EXEC` at reply number
/// `exec`, sent with `ignore_errors`) say about it; the replies after the `EXEC` are left in
/// `replies`.
pub(super) fn executed(replies: &mut Vec<Value>, exec: usize) -> Transaction {
    if replies.len() <= exec {
        return Transaction::Garbled(Value::SimpleString(format!(
            "{} replies to a pipeline whose EXEC is reply {}",
            replies.len(),
            exec + 1
        )));
    }
    let after = replies.split_off(exec + 1);
    let exec_reply = replies.pop().expect("exec is within replies");
    let queued = std::mem::replace(replies, after);
    match exec_reply {
        Value::Array(results) => Transaction::Executed(results),
        Value::Nil => Transaction::NotExecuted,
        Value::ServerError(abort) => Transaction::Aborted(
            queued
                .into_iter()
                .find_map(|r| match r {
                    Value::ServerError(e) => Some(e),
                    _ => None,
                })
                .unwrap_or(abort),
        ),
        other => Transaction::Garbled(other),
    }
}

/// Redis's answer to a transaction.
#[derive(Debug)]
pub(super) enum Transaction {
    /// `EXEC` ran it: one result per command (a failed command's is a `ServerError`).
    Executed(Vec<Value>),
    /// `EXEC` did not run it: a watched key changed.
    NotExecuted,
    /// `EXEC` refused it for an error when a command was queued (`OOM`, `NOPERM`...): that
    /// error (or the abort's own).
    Aborted(redis::ServerError),
    /// Not a reply to a transaction (never seen): what came instead.
    Garbled(Value),
}

/// Adds `write` to `pipe` as one command, its buffers sized for its arguments at once (a
/// row's `HSET` would otherwise grow them argument by argument: a tenth of the time spent
/// building a batch's transaction went to those reallocations).
fn push(pipe: &mut redis::Pipeline, write: &Write<'_>) {
    let cmd = match write {
        Write::Del { keys } => command("DEL", keys.iter().map(AsRef::as_ref)),
        Write::Hset { key, fields } => command(
            "HSET",
            std::iter::once(key.as_ref())
                .chain(fields.iter().flat_map(|(f, v)| [f.as_ref(), v.as_ref()])),
        ),
        Write::Hdel { key, fields } => command(
            "HDEL",
            std::iter::once(key.as_ref()).chain(fields.iter().map(AsRef::as_ref)),
        ),
        Write::Mset { pairs } => command(
            "MSET",
            pairs.iter().flat_map(|(k, v)| [k.as_str(), v.as_str()]),
        ),
        Write::Zadd { key, members } => {
            let scores: Vec<String> = members.iter().map(|(s, _)| format_score(*s)).collect();
            command(
                "ZADD",
                std::iter::once(key.as_str()).chain(
                    scores
                        .iter()
                        .zip(members)
                        .flat_map(|(score, (_, member))| [score.as_str(), member.as_str()]),
                ),
            )
        }
        Write::Zrem { key, members } => command(
            "ZREM",
            std::iter::once(key.as_str()).chain(members.iter().map(String::as_str)),
        ),
    };
    pipe.add_command(cmd);
}

/// `name` with `args`, in a command whose buffers hold them without growing.
fn command<'a>(name: &str, args: impl Iterator<Item = &'a str> + Clone) -> redis::Cmd {
    let (count, bytes) = args.clone().fold((1, name.len()), |(count, bytes), arg| {
        (count + 1, bytes + arg.len())
    });
    let mut cmd = redis::Cmd::with_capacity(count, bytes);
    cmd.arg(name);
    for arg in args {
        cmd.arg(arg);
    }
    cmd
}
