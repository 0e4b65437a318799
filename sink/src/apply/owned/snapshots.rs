//! Snapshots of an exclusive writer's bookkeeping in Redis (`sink:snapshot:{mappings}`): left
//! by a writer that stops cleanly, taken by the next one, which then starts from them
//! instead of reading every row and index key (for a million rows, under a second instead of
//! about ten; BENCHMARKS.md). After a crash there is none, and the next writer reads the
//! bookkeeping as before.
//!
//! Safety: a writer leaves one only while it still holds its lease (checked in the same
//! transaction, under a watch of the lease keys) and only when Redis applied every batch it
//! decided. The next writer deletes it as it reads it, and uses it only if it was made by the
//! same sink version for the same mappings, and `sink:offsets` still holds for those
//! mappings' topics what it held then (`state/snapshot.rs`): a shared writer, or an older
//! sink that knows nothing of snapshots, records an offset with every change it applies.
//! A rebuild's swap leaves none (the staging database has none).
//!
//! Layout: the manifest `sink:snapshot:{mappings}` holds `{format} {chunks} {bytes}
//! {checksum}` (xxh3-64 in hex), the bytes are split into strings of at most 4 MiB
//! (`sink:snapshot:{mappings}:{n}`; one string may hold at most 512 MB).

use mapping::{layout, Mapping};
use redis::aio::ConnectionLike;
use redis::RedisResult;

use super::lease::Lease;
use super::state::{OwnedState, SnapshotOffsets, SnapshotRefusal};

/// Bytes per chunk string: small enough that reading one holds little besides the
/// snapshot itself, large enough that a million rows take a score of round trips.
const CHUNK: usize = 4 << 20;

/// The manifest's first word.
const MANIFEST_FORMAT: &str = "1";

/// What [`take`] found.
pub(crate) enum Taken {
    /// No snapshot.
    Absent,
    /// One that cannot be used, and why (it is deleted all the same).
    Refused(SnapshotRefusal),
    /// The state it holds (aggregates not counted yet), boxed: far larger than the rest.
    Used {
        state: Box<OwnedState>,
        bytes: usize,
    },
}

fn key(mappings: &[Mapping]) -> String {
    layout::snapshot_key(mappings.iter().map(|m| m.name.as_str()))
}

/// `sink:offsets` for the topics of `mappings`, sorted by field.
async fn offsets<C: ConnectionLike + Send>(
    conn: &mut C,
    mappings: &[Mapping],
) -> RedisResult<SnapshotOffsets> {
    let all: Vec<(String, String)> = redis::cmd("HGETALL")
        .arg(layout::OFFSETS_KEY)
        .query_async(conn)
        .await?;
    let mut offsets: SnapshotOffsets = all
        .into_iter()
        .filter(|(field, _)| {
            field
                .rsplit_once('/')
                .is_some_and(|(topic, _)| mappings.iter().any(|m| m.topic == topic))
        })
        .map(|(field, offset)| (field, offset.parse().unwrap_or(i64::MIN)))
        .collect();
    offsets.sort();
    Ok(offsets)
}

/// Leaves `state`, the bookkeeping of `mappings`, in Redis, if this writer still holds
/// `lease`: the snapshot's size in bytes, or `None` when it does not hold it.
pub(crate) async fn write<C: ConnectionLike + Send>(
    conn: &mut C,
    lease: &Lease,
    mappings: &[Mapping],
    state: &OwnedState,
) -> RedisResult<Option<usize>> {
    let key = key(mappings);
    redis::cmd("WATCH")
        .arg(lease.keys())
        .query_async::<()>(conn)
        .await?;
    let holders: Vec<Option<String>> = redis::cmd("MGET")
        .arg(lease.keys())
        .query_async(conn)
        .await?;
    if holders.iter().any(|h| h.as_deref() != Some(lease.id())) {
        redis::cmd("UNWATCH").query_async::<()>(conn).await?;
        return Ok(None);
    }
    let bytes = state.to_snapshot(&offsets(conn, mappings).await?);
    let old: Option<String> = redis::cmd("GET").arg(&key).query_async(conn).await?;
    let old_chunks = old.as_deref().and_then(|m| Manifest::parse(m).ok());
    let mut pipe = redis::pipe();
    pipe.atomic();
    pipe.cmd("DEL").arg(&key).ignore();
    for n in 0..old_chunks.map_or(0, |m| m.chunks) {
        pipe.cmd("DEL")
            .arg(layout::snapshot_chunk_key(&key, n))
            .ignore();
    }
    let chunks = bytes.chunks(CHUNK);
    let manifest = Manifest {
        chunks: chunks.len(),
        bytes: bytes.len(),
        checksum: xxhash_rust::xxh3::xxh3_64(&bytes),
    };
    for (n, chunk) in chunks.enumerate() {
        pipe.cmd("SET")
            .arg(layout::snapshot_chunk_key(&key, n))
            .arg(chunk)
            .ignore();
    }
    pipe.cmd("SET").arg(&key).arg(manifest.to_string()).ignore();
    let done: Option<()> = pipe.query_async(conn).await?;
    Ok(done.map(|()| bytes.len()))
}

/// Reads and deletes the snapshot of `mappings`' bookkeeping. One larger than `max_memory`
/// bytes is refused unread (the state it holds would take more): the entry-by-entry load
/// then stops at the bound with its own error, without this process having held it all.
pub(crate) async fn take<C: ConnectionLike + Send>(
    conn: &mut C,
    mappings: &[Mapping],
    max_memory: usize,
) -> RedisResult<Taken> {
    let key = key(mappings);
    let manifest: Option<String> = redis::cmd("GET").arg(&key).query_async(conn).await?;
    let Some(manifest) = manifest else {
        return Ok(Taken::Absent);
    };
    let manifest = match Manifest::parse(&manifest) {
        Ok(m) => m,
        Err(why) => {
            discard(conn, &key, &[]).await?;
            return Ok(Taken::Refused(SnapshotRefusal::Format(why)));
        }
    };
    let chunk_keys: Vec<String> = (0..manifest.chunks)
        .map(|n| layout::snapshot_chunk_key(&key, n))
        .collect();
    if manifest.bytes > max_memory {
        discard(conn, &key, &chunk_keys).await?;
        return Ok(Taken::Refused(SnapshotRefusal::TooLarge {
            bytes: manifest.bytes,
            bound: max_memory,
        }));
    }
    // The chunks go one at a time to a parse on a blocking thread, which builds the state as
    // they arrive: the snapshot is never held whole, only a chunk or two of it.
    let now = offsets(conn, mappings).await?;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(1);
    let owned_mappings = mappings.to_vec();
    let parse = tokio::task::spawn_blocking(move || {
        let chunks = std::iter::from_fn(move || rx.blocking_recv());
        let manifest = (manifest.bytes, manifest.checksum);
        OwnedState::from_snapshot(&owned_mappings, chunks, manifest, &now)
    });
    let mut fetched = Ok(());
    for k in &chunk_keys {
        match redis::cmd("GET")
            .arg(k)
            .query_async::<Option<Vec<u8>>>(conn)
            .await
        {
            // A missing chunk shows as a length that differs from the manifest's.
            Ok(chunk) => {
                if tx.send(chunk.unwrap_or_default()).await.is_err() {
                    break; // The parse stopped: the snapshot is refused.
                }
            }
            Err(e) => {
                fetched = Err(e);
                break;
            }
        }
    }
    drop(tx);
    let parsed = parse.await;
    fetched?;
    discard(conn, &key, &chunk_keys).await?;
    Ok(match parsed {
        Ok(Ok(state)) => Taken::Used {
            state: Box::new(state),
            bytes: manifest.bytes,
        },
        Ok(Err(why)) => Taken::Refused(why),
        Err(_) => Taken::Refused(SnapshotRefusal::Format("reading it panicked")),
    })
}

/// Deletes a snapshot's manifest `key` and `chunk_keys`: a snapshot is read once.
async fn discard<C: ConnectionLike + Send>(
    conn: &mut C,
    key: &str,
    chunk_keys: &[String],
) -> RedisResult<()> {
    redis::cmd("DEL")
        .arg(key)
        .arg(chunk_keys)
        .query_async(conn)
        .await
}

/// What the manifest string says.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Manifest {
    chunks: usize,
    bytes: usize,
    checksum: u64,
}

impl Manifest {
    fn parse(text: &str) -> Result<Manifest, &'static str> {
        let words: Vec<&str> = text.split(' ').collect();
        let [MANIFEST_FORMAT, chunks, bytes, checksum] = words[..] else {
            return Err("the manifest is not `1 CHUNKS BYTES CHECKSUM`");
        };
        let number = "the manifest's chunks, bytes and checksum are not numbers";
        Ok(Manifest {
            chunks: chunks.parse().map_err(|_| number)?,
            bytes: bytes.parse().map_err(|_| number)?,
            checksum: u64::from_str_radix(checksum, 16).map_err(|_| number)?,
        })
    }
}

impl std::fmt::Display for Manifest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{MANIFEST_FORMAT} {} {} {:016x}",
            self.chunks, self.bytes, self.checksum
        )
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::apply::owned::lease::WriterId;
    use crate::apply::owned::test_mappings;

    /// Mappings of their own (a random prefix), so that tests may share the Redis of
    /// `REDIS_URL` (tests/stack).
    fn mappings() -> Vec<Mapping> {
        let tag = format!("snap{:08x}", rand::random::<u32>());
        let (mut customers, mut orders) = (test_mappings::customers(), test_mappings::orders());
        customers.name = format!("{tag}_customers");
        customers.topic = format!("{tag}.customers");
        orders.name = format!("{tag}_orders");
        orders.topic = format!("{tag}.orders");
        vec![customers, orders]
    }

    #[tokio::test]
    async fn a_snapshot_larger_than_the_memory_bound_is_refused_unread() {
        let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
        let client = redis::Client::open(url.as_str()).expect("redis url");
        let mut conn = client
            .get_multiplexed_async_connection()
            .await
            .unwrap_or_else(|e| {
                panic!("redis at {url} is unreachable ({e}); start tests/stack/redis.sh")
            });
        let mappings = mappings();
        let lease = Lease::new(
            &WriterId::new(),
            mappings.iter().map(|m| m.name.as_str()),
            Duration::from_secs(30),
        );
        lease.take(&mut conn).await.expect("lease");
        let state = OwnedState::new(&mappings);
        let bytes = write(&mut conn, &lease, &mappings, &state)
            .await
            .expect("write")
            .expect("the lease is this writer's");
        match take(&mut conn, &mappings, bytes - 1).await.expect("take") {
            Taken::Refused(SnapshotRefusal::TooLarge { bytes: b, bound }) => {
                assert_eq!((b, bound), (bytes, bytes - 1));
            }
            _ => panic!("not refused as too large"),
        }
        assert!(
            matches!(
                take(&mut conn, &mappings, usize::MAX).await.expect("take"),
                Taken::Absent
            ),
            "a refused snapshot is deleted"
        );
        write(&mut conn, &lease, &mappings, &state)
            .await
            .expect("write");
        assert!(matches!(
            take(&mut conn, &mappings, bytes).await.expect("take"),
            Taken::Used { .. }
        ));
        lease.release(&mut conn).await.expect("release");
        // Not this writer's lease any more: nothing is written.
        assert_eq!(
            write(&mut conn, &lease, &mappings, &state)
                .await
                .expect("write"),
            None
        );
    }

    #[test]
    fn a_manifest_reads_back_what_it_wrote() {
        let manifest = Manifest {
            chunks: 3,
            bytes: 70_000_000,
            checksum: 0xfeed,
        };
        assert_eq!(Manifest::parse(&manifest.to_string()), Ok(manifest));
        assert!(Manifest::parse("2 3 70000000 feed").is_err());
        assert!(Manifest::parse("1 3 lots feed").is_err());
        assert!(Manifest::parse("1 3").is_err());
    }
}
