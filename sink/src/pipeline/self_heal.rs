//! Self-healing offsets: Redis, not Kafka, says where each partition resumes.
//!
//! The group's committed offsets only say what Redis *acknowledged*; Redis may lose
//! acknowledged writes (a restart without persistence, a `FLUSHALL`, a failover to a lagging
//! replica, an eviction). The change scripts record `sink:offsets` (`{topic}/{partition}` ->
//! last applied offset) atomically with each change, so `sink:offsets` is exactly what the
//! database holds, *if* it survived. Whether it did is what `sink:offsets:run`
//! ([`OFFSETS_RUN_KEY`]) tells: per partition, the `run_id` of the Redis server run
//! under which the field was known whole. A loss either removes the marker with the data (a
//! flush, an empty restart, an eviction) or changes the server's `run_id` (any restart or
//! failover), and writers never write the marker, so writes that land after a loss (a batch
//! retried against the restarted server) cannot make a lost partition look whole.
//!
//! - On every assignment ([`SelfHeal::place`], from the consumer's rebalance callback) each
//!   partition starts at `min(committed, sink:offsets + 1)` when its marker names the current
//!   run, and at its earliest offset otherwise. One transaction drops the stale
//!   `sink:offsets` fields and sets every assigned partition's marker to the current run and
//!   a token fresh for this assignment (`{run_id}:{token}`, apply/fence.rs), so the decision
//!   survives a crash, and batches read under an earlier assignment of the partition (by
//!   this process or another) no longer pass the writers' guard.
//! - While running, [`watch`] checks once a second that the server's `run_id` is the one the
//!   assigned partitions were marked under and that their markers are still there; when not,
//!   it stops the pipeline so that `sink run` starts it again, and the new assignment rewinds.
//!
//! A replay from the earliest offset converges to what a clean replay gives: the writers'
//! position guards make records older than what survived no-ops, and re-create what was
//! lost. That needs every write to land in order with the replay: batches in flight between
//! a loss and its detection, and batches read under an assignment that a rebalance has
//! superseded since, are refused by the writers' marker guard (apply/fence.rs).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use mapping::layout::{offsets_field, OFFSETS_KEY, OFFSETS_RUN_KEY};
use rand::Rng;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::{Offset, TopicPartitionList};
use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::{AsyncConnectionConfig, RedisResult};
use thiserror::Error;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::apply::{marker, run_of};
use crate::memory::MemoryGuard;

/// How often the running check asks Redis (`INFO server` and one `HMGET`).
const CHECK_INTERVAL: Duration = Duration::from_secs(1);
/// Bound of each Redis and Kafka round trip of an assignment (it blocks the consumer's poll).
const TIMEOUT: Duration = Duration::from_secs(5);

/// Why the start offsets of an assignment could not be decided from Redis.
#[derive(Debug, Error)]
pub(super) enum PlaceError {
    /// Redis did not answer (or refused).
    #[error("cannot read sink:offsets from redis")]
    Redis(#[source] redis::RedisError),
    /// The group coordinator did not answer.
    #[error("cannot read the group's committed offsets")]
    Committed(#[source] rdkafka::error::KafkaError),
    /// The partition's leader did not answer.
    #[error("cannot read the earliest offset of {topic}/{partition}")]
    Watermarks {
        /// Topic.
        topic: String,
        /// Partition.
        partition: i32,
        /// The broker's error.
        #[source]
        source: rdkafka::error::KafkaError,
    },
}

/// Where one assigned partition starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct PartitionStart {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// The offset to consume first.
    pub start: i64,
    /// The group's committed offset.
    pub committed: i64,
}

impl PartitionStart {
    /// Whether Redis moved the partition back from where the group would have resumed.
    pub fn rewound(&self) -> bool {
        self.start < self.committed
    }
}

/// What an assignment decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Placement {
    /// Where the partitions the group committed an offset for start.
    pub starts: Vec<PartitionStart>,
    /// The marker every assigned partition holds now (`{run_id}:{token}`): batches read
    /// under this assignment carry it as their fence.
    pub marker: String,
}

/// Why the running check stopped the pipeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Loss {
    /// The Redis server is another run than the one the partitions were marked under.
    Restarted {
        /// The run the markers name.
        marked: String,
        /// The server's run now.
        now: String,
    },
    /// Markers of assigned partitions are missing or name another run.
    Markers {
        /// The partitions' `sink:offsets` fields.
        fields: Vec<String>,
    },
    /// An assignment started from the committed offsets because Redis or the broker did not
    /// answer; now that Redis does, the assignment is made again.
    Unverified,
}

impl std::fmt::Display for Loss {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Loss::Restarted { marked, now } => {
                write!(
                    f,
                    "the redis server's run_id changed from {marked} to {now}"
                )
            }
            Loss::Markers { fields } => write!(
                f,
                "{} of sink:offsets:run vanished (or name another run)",
                fields.join(",")
            ),
            Loss::Unverified => f.write_str("the last assignment could not ask redis"),
        }
    }
}

/// What this process marked in `sink:offsets:run`.
#[derive(Debug, Default)]
struct Marks {
    /// Assigned partitions with their marker set -> the server run they were marked under.
    /// Per partition: an incremental rebalance marks only the partitions it adds, and those
    /// it keeps stay under the run they were marked under, which a restart just before the
    /// rebalance made stale.
    partitions: BTreeMap<(String, i32), String>,
    /// Assigned partitions started from the committed offsets without asking Redis (their
    /// placement failed), until placed again or revoked. Per partition, so that placing
    /// other partitions (an incremental rebalance) does not hide them from [`watch`].
    unverified: BTreeSet<(String, i32)>,
}

impl Marks {
    /// `partitions` were marked under the server run `run_id`.
    fn placed(&mut self, run_id: &str, partitions: Vec<(String, i32)>) {
        for p in partitions {
            self.unverified.remove(&p);
            self.partitions.insert(p, run_id.to_owned());
        }
    }

    /// `partitions` were assigned but could not be placed.
    fn unplaced(&mut self, partitions: impl IntoIterator<Item = (String, i32)>) {
        self.unverified.extend(partitions);
    }

    /// `partitions` were revoked.
    fn revoked(&mut self, partitions: impl IntoIterator<Item = (String, i32)>) {
        for p in partitions {
            self.unverified.remove(&p);
            self.partitions.remove(&p);
        }
    }

    /// A run other than `now` that an assigned partition was marked under.
    fn other_run(&self, now: &str) -> Option<&str> {
        self.partitions
            .values()
            .map(String::as_str)
            .find(|run| *run != now)
    }
}

/// `(topic, partition)` of each element of `tpl`.
fn partitions_of(tpl: &TopicPartitionList) -> Vec<(String, i32)> {
    (tpl.elements().iter())
        .map(|e| (e.topic().to_owned(), e.partition()))
        .collect()
}

/// Decides start offsets from Redis and checks that Redis keeps what it acknowledged.
#[derive(Debug)]
pub(super) struct SelfHeal {
    /// The live database.
    client: redis::Client,
    marks: Mutex<Marks>,
}

impl SelfHeal {
    /// For the database `client` connects to (nothing is connected yet).
    pub fn new(client: redis::Client) -> SelfHeal {
        SelfHeal {
            client,
            marks: Mutex::new(Marks::default()),
        }
    }

    /// The start offset of every partition of `tpl` (an assignment) the group committed an
    /// offset for: `min(committed, sink:offsets + 1)` where Redis's marker names the current
    /// server run, the earliest offset otherwise (then the stale field is dropped and the
    /// marker set). Partitions without a committed offset are left to `auto.offset.reset`
    /// (earliest). Blocking: round trips to Redis and the broker, each bounded by
    /// [`TIMEOUT`].
    ///
    /// Every assigned partition is marked with a token fresh for this assignment
    /// ([`Placement::marker`]).
    ///
    /// On an error nothing is decided: the consumer resumes from the committed offsets and
    /// the next [`watch`] check that reaches Redis has the pipeline start again.
    pub fn place<C: ConsumerContext>(
        &self,
        consumer: &BaseConsumer<C>,
        tpl: &TopicPartitionList,
    ) -> Result<Placement, PlaceError> {
        let result = self.try_place(consumer, tpl);
        let mut marks = self.marks.lock().unwrap_or_else(PoisonError::into_inner);
        if result.is_err() {
            marks.unplaced(partitions_of(tpl));
        }
        result
    }

    /// [`SelfHeal::place`] before a failure is noted.
    fn try_place<C: ConsumerContext>(
        &self,
        consumer: &BaseConsumer<C>,
        tpl: &TopicPartitionList,
    ) -> Result<Placement, PlaceError> {
        let partitions: Vec<(String, i32)> = tpl
            .elements()
            .iter()
            .map(|e| (e.topic().to_owned(), e.partition()))
            .collect();
        if partitions.is_empty() {
            return Ok(Placement {
                starts: Vec::new(),
                marker: String::new(),
            });
        }
        let committed: BTreeMap<(String, i32), i64> = consumer
            .committed_offsets(tpl.clone(), TIMEOUT)
            .map_err(PlaceError::Committed)?
            .elements()
            .iter()
            .filter_map(|e| match e.offset() {
                Offset::Offset(o) => Some(((e.topic().to_owned(), e.partition()), o)),
                _ => None,
            })
            .collect();
        let token = format!("{:016x}", rand::rng().random::<u64>());
        let (run_id, applied) = self.claim(&partitions, &token).map_err(PlaceError::Redis)?;
        let mut starts = Vec::with_capacity(partitions.len());
        for (p, next) in partitions.iter().zip(applied) {
            // Without a committed offset the group starts where `auto.offset.reset` says
            // (earliest): never later than Redis.
            let Some(&committed) = committed.get(p) else {
                continue;
            };
            let start = match next {
                Some(next) => committed.min(next),
                None => {
                    consumer
                        .fetch_watermarks(&p.0, p.1, TIMEOUT)
                        .map_err(|source| PlaceError::Watermarks {
                            topic: p.0.clone(),
                            partition: p.1,
                            source,
                        })?
                        .0
                }
            };
            starts.push(PartitionStart {
                topic: p.0.clone(),
                partition: p.1,
                start,
                committed,
            });
        }
        let marker = marker(&run_id, &token);
        let mut marks = self.marks.lock().unwrap_or_else(PoisonError::into_inner);
        marks.placed(&run_id, partitions);
        Ok(Placement { starts, marker })
    }

    /// Reads the markers and `sink:offsets` of `partitions`; in one transaction drops the
    /// stale offsets of the untrusted ones and marks every one with the current run and
    /// `token`. Returns the server's run and, per partition, the next offset Redis says to
    /// apply (`None`: replay from the earliest offset).
    fn claim(
        &self,
        partitions: &[(String, i32)],
        token: &str,
    ) -> RedisResult<(String, Vec<Option<i64>>)> {
        let mut conn = self.client.get_connection_with_timeout(TIMEOUT)?;
        conn.set_read_timeout(Some(TIMEOUT))?;
        conn.set_write_timeout(Some(TIMEOUT))?;
        let info = redis::cmd("INFO").arg("server").query::<String>(&mut conn);
        let run_id = server_run(info)?;
        let fields: Vec<String> = partitions
            .iter()
            .map(|(t, p)| offsets_field(t, *p))
            .collect();
        let (runs, offsets): (Vec<Option<String>>, Vec<Option<String>>) = redis::pipe()
            .cmd("HMGET")
            .arg(OFFSETS_RUN_KEY)
            .arg(&fields)
            .cmd("HMGET")
            .arg(OFFSETS_KEY)
            .arg(&fields)
            .query(&mut conn)?;
        let mut untrusted = Vec::new();
        let next = fields
            .iter()
            .zip(runs.iter().zip(&offsets))
            .map(|(field, (run, offset))| {
                let applied = offset.as_deref().and_then(|o| o.parse::<i64>().ok());
                let this_run = run.as_deref().map(run_of) == Some(run_id.as_str());
                match applied {
                    Some(applied) if this_run => Some(applied + 1),
                    // Marked, nothing applied yet: nothing to trust either way.
                    None if this_run => None,
                    _ => {
                        untrusted.push(field.as_str());
                        None
                    }
                }
            })
            .collect();
        let mut pipe = redis::pipe();
        pipe.atomic();
        if !untrusted.is_empty() {
            pipe.cmd("HDEL").arg(OFFSETS_KEY).arg(&untrusted).ignore();
        }
        let marker = marker(&run_id, token);
        let mut hset = redis::cmd("HSET");
        hset.arg(OFFSETS_RUN_KEY);
        for field in &fields {
            hset.arg(field).arg(&marker);
        }
        pipe.add_command(hset).ignore();
        pipe.query::<()>(&mut conn)?;
        Ok((run_id, next))
    }

    /// Forgets the partitions of `tpl` (revoked).
    pub fn forget(&self, tpl: &TopicPartitionList) {
        let mut marks = self.marks.lock().unwrap_or_else(PoisonError::into_inner);
        marks.revoked(partitions_of(tpl));
    }

    /// One running check: `None` while Redis keeps what this process marked.
    async fn check(&self, conn: &mut MultiplexedConnection) -> RedisResult<Option<Loss>> {
        let now = server_run_id(conn).await?;
        let fields: Vec<String> = {
            let marks = self.marks.lock().unwrap_or_else(PoisonError::into_inner);
            if !marks.unverified.is_empty() {
                return Ok(Some(Loss::Unverified));
            }
            if let Some(marked) = marks.other_run(&now) {
                return Ok(Some(Loss::Restarted {
                    marked: marked.to_owned(),
                    now,
                }));
            }
            (marks.partitions.keys())
                .map(|(t, p)| offsets_field(t, *p))
                .collect()
        };
        if fields.is_empty() {
            return Ok(None);
        }
        let runs: Vec<Option<String>> = redis::cmd("HMGET")
            .arg(OFFSETS_RUN_KEY)
            .arg(&fields)
            .query_async(conn)
            .await?;
        // Only the run counts here: a token of another assignment is a rebalance that this
        // process hears of in its own rebalance callback (and its batches read before are
        // refused by the writers), not a loss.
        let lost: Vec<String> = fields
            .into_iter()
            .zip(runs)
            .filter(|(_, run)| run.as_deref().map(run_of) != Some(now.as_str()))
            .map(|(field, _)| field)
            .collect();
        Ok((!lost.is_empty()).then_some(Loss::Markers { fields: lost }))
    }
}

/// Checks Redis every [`CHECK_INTERVAL`] until `done`; on a loss, logs it and cancels
/// `rewind` (which stops the pipeline) and returns it. A check that cannot reach Redis is
/// skipped: the apply stage's retries deal with an outage, and the next check decides.
///
/// While `memory` says Redis is full, a placement that could not be verified (its marker
/// write refused with `OOM`) waits: a new pipeline would be refused the same way, and
/// restarting it over and over would only make its consumer leave and rejoin the group. The
/// partitions are paused meanwhile; once Redis has room the pipeline starts again.
pub(super) async fn watch(
    heal: Arc<SelfHeal>,
    memory: MemoryGuard,
    rewind: CancellationToken,
    done: CancellationToken,
) -> Option<Loss> {
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(TIMEOUT))
        .set_response_timeout(Some(TIMEOUT));
    let mut conn: Option<MultiplexedConnection> = None;
    let mut ticks = tokio::time::interval(CHECK_INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            () = done.cancelled() => return None,
            _ = ticks.tick() => {}
        }
        let c = match &mut conn {
            Some(c) => c,
            None => match heal
                .client
                .get_multiplexed_async_connection_with_config(&config)
                .await
            {
                Ok(c) => conn.insert(c),
                Err(e) => {
                    debug!(error = %e, "Bookkeeping check cannot reach redis.");
                    continue;
                }
            },
        };
        match heal.check(c).await {
            Ok(None) => {}
            Ok(Some(Loss::Unverified)) if memory.is_full() => {
                debug!("Partitions placed without their markers; waiting for redis to have room.");
            }
            Ok(Some(loss)) => {
                warn!(
                    %loss,
                    "Redis lost writes it had acknowledged; stopping the pipeline to resume every assigned partition from what redis holds."
                );
                rewind.cancel();
                return Some(loss);
            }
            Err(e) => {
                debug!(error = %e, "Bookkeeping check failed.");
                conn = None;
            }
        }
    }
}

/// The `run_id` of the Redis server `conn` talks to (see [`server_run`]).
pub(crate) async fn server_run_id(conn: &mut impl ConnectionLike) -> RedisResult<String> {
    let info = redis::cmd("INFO")
        .arg("server")
        .query_async::<String>(conn)
        .await;
    server_run(info)
}

/// The `run_id` in an `INFO server` reply. A server that refuses `INFO` (an ACL without
/// `+info`) counts as one run that never changes: only vanished markers are noticed then.
fn server_run(info: RedisResult<String>) -> RedisResult<String> {
    match info {
        Ok(info) => Ok(parse_run_id(&info).unwrap_or_default().to_owned()),
        Err(e) if e.is_io_error() || e.is_timeout() || e.is_connection_dropped() => Err(e),
        Err(e) => {
            debug!(error = %e, "INFO server refused; restarts are noticed by vanished markers only.");
            Ok(String::new())
        }
    }
}

/// The value of the `run_id:` line of an `INFO server` reply.
fn parse_run_id(info: &str) -> Option<&str> {
    info.lines()
        .find_map(|line| line.strip_prefix("run_id:"))
        .map(str::trim)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_id_is_read_from_info_server() {
        let info = "# Server\r\nredis_version:7.2.4\r\nrun_id:0a1b2c\r\ntcp_port:6379\r\n";
        assert_eq!(parse_run_id(info), Some("0a1b2c"));
        assert_eq!(parse_run_id("# Server\r\n"), None);
    }

    #[test]
    fn a_partition_placed_without_its_marker_stays_unverified_until_placed_again_or_revoked() {
        let p = |n: i32| ("t".to_owned(), n);
        let mut marks = Marks::default();
        marks.unplaced([p(0), p(1)]);
        // An incremental rebalance places another partition: 0 and 1 are still unmarked.
        marks.placed("run", vec![p(2)]);
        assert_eq!(marks.unverified, [p(0), p(1)].into());
        marks.revoked([p(0)]);
        assert_eq!(marks.unverified, [p(1)].into());
        marks.placed("run", vec![p(1), p(2)]);
        assert!(marks.unverified.is_empty());
        assert_eq!(
            marks.partitions.keys().cloned().collect::<BTreeSet<_>>(),
            [p(1), p(2)].into()
        );
    }

    #[test]
    fn partitions_kept_through_an_incremental_rebalance_stay_under_the_run_they_were_marked_under()
    {
        let p = |n: i32| ("t".to_owned(), n);
        let mut marks = Marks::default();
        marks.placed("before", vec![p(0), p(1)]);
        assert_eq!(marks.other_run("before"), None);
        // Redis restarted empty; an incremental rebalance adds partition 2 under the new
        // run before the running check noticed: 0 and 1 are still to be rewound.
        marks.placed("after", vec![p(2)]);
        assert_eq!(marks.other_run("after"), Some("before"));
        marks.revoked([p(0), p(1)]);
        assert_eq!(marks.other_run("after"), None);
    }

    #[test]
    fn rewound_only_when_behind_the_committed_offset() {
        let start = |start, committed| PartitionStart {
            topic: "t".into(),
            partition: 0,
            start,
            committed,
        };
        assert!(start(3, 10).rewound());
        assert!(!start(10, 10).rewound());
    }
}
