//! The exclusive writer's marker guard, the transaction-side twin of the change script's
//! (ARCHITECTURE.md, *Self-healing*): a batch is sent only while each of its partitions is
//! marked in `sink:offsets:run` under the Redis server's current `run_id` by the assignment
//! it was read under (apply/fence.rs). Checked after the lease keys are watched, so a flush
//! between the check and `EXEC` aborts the transaction (it touches every watched key) and a
//! restart drops the connection. A marker that a new assignment writes between the check and
//! `EXEC` is not seen, and needs not be: that assignment read its start before this batch
//! landed, so it applies this batch's records again after it, in order.

use mapping::layout;
use redis::aio::ConnectionLike;

use crate::apply::fence::{self, Verdict};
use crate::apply::{ApplyError, Fences, PlannedChange};

/// The offsets fields (`{topic}/{partition}`) of `batch`'s partitions, each once.
pub(super) fn fields(batch: &[PlannedChange]) -> Vec<String> {
    let mut fields: Vec<String> = Vec::new();
    for change in batch {
        let field = layout::offsets_field(&change.topic, change.partition);
        if !fields.contains(&field) {
            fields.push(field);
        }
    }
    fields
}

/// [`ApplyError::BookkeepingLost`] for the first of `fields` whose marker is missing or
/// names another server run than the one `conn` talks to, [`ApplyError::Superseded`] for the
/// first whose marker is not the one `fences` names (apply/fence.rs).
pub(super) async fn check(
    conn: &mut impl ConnectionLike,
    fields: &[String],
    fences: &Fences,
    changes: usize,
) -> Result<(), ApplyError> {
    let run = server_run(conn, changes).await?;
    let marked: Vec<Option<String>> = redis::cmd("HMGET")
        .arg(layout::OFFSETS_RUN_KEY)
        .arg(fields)
        .query_async(conn)
        .await
        .map_err(|source| ApplyError::Redis {
            operation: "HMGET sink:offsets:run",
            changes,
            source,
        })?;
    for (field, marker) in fields.iter().zip(marked) {
        let fence = fences.expected(field);
        match fence::judge(marker.as_deref(), &run, fence) {
            Verdict::Holds => {}
            Verdict::Lost => {
                return Err(ApplyError::BookkeepingLost {
                    field: field.clone(),
                    marker: marker.unwrap_or_else(|| "unmarked".to_owned()),
                })
            }
            Verdict::Superseded => {
                return Err(ApplyError::Superseded {
                    field: field.clone(),
                    marker: marker.unwrap_or_default(),
                    fence: fence.to_owned(),
                })
            }
        }
    }
    Ok(())
}

/// The server's `run_id`, as the self-heal marks it: empty when `INFO` is refused (an ACL
/// without `+info`) or names none, an error only when the server cannot be reached.
async fn server_run(conn: &mut impl ConnectionLike, changes: usize) -> Result<String, ApplyError> {
    match redis::cmd("INFO")
        .arg("server")
        .query_async::<String>(conn)
        .await
    {
        Ok(info) => Ok(info
            .lines()
            .find_map(|line| line.strip_prefix("run_id:"))
            .map_or_else(String::new, |id| id.trim().to_owned())),
        Err(e) if e.is_io_error() || e.is_timeout() || e.is_connection_dropped() => {
            Err(ApplyError::Redis {
                operation: "INFO server",
                changes,
                source: e,
            })
        }
        Err(_) => Ok(String::new()),
    }
}
