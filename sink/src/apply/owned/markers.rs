//! The exclusive writer's marker guard, the transaction-side twin of the change script's
//! (ARCHITECTURE.md, *Self-healing*): a batch is sent only while each of its partitions is
//! marked in `sink:offsets:run` under the Redis server's current `run_id` by the assignment
//! it was read under (apply/fence.rs). Read in the request that watches the lease keys,
//! after the `WATCH` (the request of the batch before, which watches the markers too:
//! `writer/send.rs`), so a flush
//! between the check and `EXEC` aborts the transaction (it touches every watched key) and a
//! restart drops the connection. A marker that a new assignment writes between the check and
//! `EXEC` is not seen, and needs not be: that assignment read its start before this batch
//! landed, so it applies this batch's records again after it, in order.

use mapping::layout;
use redis::Value;

use crate::apply::fence::{self, Verdict};
use crate::apply::{ApplyError, Fences, PlannedChange};

/// The offsets fields (`{topic}/{partition}`) of `batch`'s partitions, each once, in the
/// order they first appear (each named once per batch, not once per change).
pub(super) fn fields(batch: &[PlannedChange]) -> Vec<String> {
    let mut partitions: Vec<(&str, i32)> = Vec::new();
    for change in batch {
        let partition = (&*change.topic, change.partition);
        if !partitions.contains(&partition) {
            partitions.push(partition);
        }
    }
    partitions
        .into_iter()
        .map(|(topic, partition)| layout::offsets_field(topic, partition))
        .collect()
}

/// Adds the reads the guard needs to `pipe`, after the lease keys' `WATCH`: the server's
/// `run_id` (`INFO server`) unless `run` is already known for this connection, then the
/// markers of `fields`. [`judge`] reads their replies.
pub(super) fn ask(pipe: &mut redis::Pipeline, fields: &[String], run: Option<&str>) {
    if run.is_none() {
        pipe.cmd("INFO").arg("server");
    }
    pipe.cmd("HMGET").arg(layout::OFFSETS_RUN_KEY).arg(fields);
}

/// The server's `run_id` from the reply to `INFO server`, as the self-heal marks it: empty
/// when `INFO` was refused (an ACL without `+info`) or names none. A server's `run_id` holds
/// for as long as a connection to it does, so a writer asks once per connection.
pub(super) fn run_of(info: &Value) -> String {
    let text = match info {
        Value::BulkString(bytes) => String::from_utf8_lossy(bytes),
        Value::VerbatimString { text, .. } => text.into(),
        _ => return String::new(),
    };
    text.lines()
        .find_map(|line| line.strip_prefix("run_id:"))
        .map_or_else(String::new, |id| id.trim().to_owned())
}

/// [`ApplyError::BookkeepingLost`] for the first of `fields` whose marker (`marked`, the
/// reply of [`ask`]'s `HMGET`) is missing or names another server run than `run`,
/// [`ApplyError::Superseded`] for the first whose marker is not the one `fences` names
/// (apply/fence.rs).
pub(super) fn judge(
    fields: &[String],
    marked: Vec<Option<String>>,
    run: &str,
    fences: &Fences,
) -> Result<(), ApplyError> {
    // A reply shorter than `fields` (never seen) reads as unmarked, not as nothing to check.
    let mut marked = marked.into_iter();
    for field in fields {
        let marker = marked.next().flatten();
        let fence = fences.expected(field);
        match fence::judge(marker.as_deref(), run, fence) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_run_id_is_read_from_info_and_empty_without_one() {
        let info = b"# Server\r\nredis_version:7.0.15\r\nrun_id:abc123\r\ntcp_port:6379\r\n";
        assert_eq!(run_of(&Value::BulkString(info.to_vec())), "abc123");
        assert_eq!(run_of(&Value::BulkString(b"# Server\r\n".to_vec())), "");
        // A refused `INFO` (an ACL without `+info`) reads as no run.
        assert_eq!(run_of(&Value::Nil), "");
    }

    #[test]
    fn a_batch_names_each_of_its_partitions_once_in_first_seen_order() {
        let change = |topic: &str, partition| PlannedChange {
            mapping: 0,
            op: mapping::Op::Update,
            plan: mapping::plan::Plan::Truncate { position: None },
            source_ts_ms: None,
            topic: topic.into(),
            partition,
            offset: 0,
            record_time: None,
        };
        let batch = [
            change("cdc.orders", 1),
            change("cdc.customers", 1),
            change("cdc.orders", 1),
            change("cdc.orders", 0),
            change("cdc.customers", 1),
        ];
        assert_eq!(
            fields(&batch),
            [
                layout::offsets_field("cdc.orders", 1),
                layout::offsets_field("cdc.customers", 1),
                layout::offsets_field("cdc.orders", 0),
            ]
        );
    }
}
