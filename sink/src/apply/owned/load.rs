//! Reading the bookkeeping of a database the sink already wrote into an [`OwnedState`], so an
//! exclusive writer can decide changes in memory from where the database stands: the same
//! reads the change script makes, done once for every row and index key.
//!
//! Cost: one `HLEN` per bookkeeping hash (the tables are sized for every entry at once),
//! then one `HSCAN` page per 1,000 entries, then one pipelined round trip per page for the
//! rows' template fields and relation scores (or the index keys' owners). The caller holds a
//! watch that tells whether the database changed meanwhile (`lease.rs`).

use redis::aio::ConnectionLike;

use super::lease::{Holding, Lease};
use super::model::render;
use super::state::{OwnedState, RowState};
use super::MemoryBound;

/// Entries per `HSCAN` page and per pipelined round trip.
const PAGE: usize = 1000;

impl OwnedState {
    /// Fills this (empty) state from the bookkeeping in Redis: `sink:rows:{mapping}` with each
    /// row's template fields and relation scores, `sink:index:{mapping}:{index}` with each
    /// index key's owner. With `lease`, the lease is renewed after each page (a load can
    /// outlast it), and the load stops if another writer holds it. The load stops as soon as
    /// the state holds more than `max_memory` bytes ([`OwnedState::memory`]), with the
    /// estimate for every entry in Redis ([`LoadError::TooLarge`]). The aggregates' figures
    /// are counted from the loaded rows, whose sum the stored hashes hold.
    pub(crate) async fn load<C: ConnectionLike + Send>(
        &mut self,
        conn: &mut C,
        lease: Option<&Lease>,
        max_memory: usize,
    ) -> Result<(), LoadError> {
        let counts = self.count_entries(conn).await?;
        self.reserve(&counts.rows, counts.index_keys());
        for m in 0..self.models.len() {
            let mut pages = HashPages::new(self.models[m].rows_key.clone());
            while let Some(page) = pages.next(conn).await? {
                self.load_rows(conn, m, page).await?;
                self.check_memory(counts.total(), max_memory)?;
                renew(conn, lease).await?;
            }
        }
        for hash in 0..self.index_hashes.len() {
            let mut pages = HashPages::new(self.index_hashes[hash].clone());
            while let Some(page) = pages.next(conn).await? {
                self.load_indexes(conn, hash, page).await?;
                self.check_memory(counts.total(), max_memory)?;
                renew(conn, lease).await?;
            }
        }
        self.count_aggregates().map_err(LoadError::Aggregate)?;
        self.check_memory(counts.total(), max_memory)
    }

    /// A state taken from a snapshot, finished as a load finishes: its aggregates counted
    /// from its rows, and [`LoadError::TooLarge`] when it holds more than `max_memory`
    /// bytes.
    pub(crate) fn counted(mut self, max_memory: usize) -> Result<OwnedState, LoadError> {
        self.count_aggregates().map_err(LoadError::Aggregate)?;
        self.check_memory(self.size(), max_memory)?;
        Ok(self)
    }

    /// How many entries Redis holds: `HLEN` of every bookkeeping hash.
    async fn count_entries<C: ConnectionLike + Send>(
        &self,
        conn: &mut C,
    ) -> Result<EntryCounts, LoadError> {
        let mut pipe = redis::pipe();
        for model in &self.models {
            pipe.cmd("HLEN").arg(&model.rows_key);
        }
        for hash in &self.index_hashes {
            pipe.cmd("HLEN").arg(hash);
        }
        let mut lengths: Vec<usize> = pipe.query_async(conn).await.map_err(LoadError::Redis)?;
        let index_keys = lengths.split_off(self.models.len());
        Ok(EntryCounts {
            rows: lengths,
            index_keys,
        })
    }

    /// [`LoadError::TooLarge`] once the state holds more than `max_memory` bytes, with the
    /// (rows, index keys) in Redis (counted before a load) and the memory they would take:
    /// the tables, reserved for all of them, and the entries' allocations at the loaded
    /// entries' average.
    fn check_memory(&self, in_redis: (usize, usize), max_memory: usize) -> Result<(), LoadError> {
        let memory = self.memory();
        if memory <= max_memory {
            return Ok(());
        }
        let (rows, index_keys) = in_redis;
        let (loaded_rows, loaded_index_keys) = self.size();
        let loaded = (loaded_rows + loaded_index_keys).max(1);
        let total = (rows + index_keys).max(loaded);
        let (tables, entries) = self.memory_parts();
        let estimate = tables as u128 + entries as u128 * total as u128 / loaded as u128;
        Err(LoadError::TooLarge(MemoryBound {
            rows: rows.max(loaded_rows),
            index_keys: index_keys.max(loaded_index_keys),
            estimate: u64::try_from(estimate).unwrap_or(u64::MAX),
            bound: max_memory as u64,
        }))
    }

    /// One page of `sink:rows:{mapping}`: (row key, position) pairs.
    async fn load_rows<C: ConnectionLike + Send>(
        &mut self,
        conn: &mut C,
        m: usize,
        page: Vec<(String, String)>,
    ) -> Result<(), LoadError> {
        if page.is_empty() {
            return Ok(());
        }
        let model = std::sync::Arc::clone(&self.models[m]);
        let mut values: Vec<Vec<Option<String>>> = if model.fields.is_empty() {
            vec![Vec::new(); page.len()]
        } else {
            let mut pipe = redis::pipe();
            for (row, _) in &page {
                pipe.cmd("HMGET").arg(row).arg(&model.fields);
            }
            replies(conn, pipe)
                .await?
                .into_iter()
                .map(|v| v.unwrap_or_else(|| vec![None; model.fields.len()]))
                .collect()
        };
        // Per row and relation: the parent its values render, if any, and its member's score.
        let mut pipe = redis::pipe();
        let mut asked = Vec::new();
        for (i, vals) in values.iter().enumerate() {
            let Some(pk) = model.primary_key(vals) else {
                continue;
            };
            for (r, (parts, _)) in model.relations.iter().enumerate() {
                if let Some(parent) = render(parts, vals) {
                    pipe.cmd("ZSCORE").arg(parent).arg(&pk);
                    asked.push((i, r));
                }
            }
        }
        let scores: Vec<Option<f64>> = if asked.is_empty() {
            Vec::new()
        } else {
            replies(conn, pipe)
                .await?
                .into_iter()
                .map(Option::flatten)
                .collect()
        };
        let mut row_scores = vec![vec![None; model.relations.len()]; page.len()];
        for ((i, r), score) in asked.into_iter().zip(scores) {
            row_scores[i][r] = score;
        }
        let members = self.load_search_members(conn, &model, &page).await?;
        for ((((row, position), vals), scores), search_members) in page
            .into_iter()
            .zip(values.iter_mut())
            .zip(row_scores)
            .zip(members)
        {
            vals.extend(search_members);
            let position = parse_position(&model.rows_key, &row, &position)?;
            self.load_row(
                m,
                &row,
                RowState {
                    position,
                    values: std::mem::take(vals),
                    scores,
                },
            );
        }
        Ok(())
    }

    /// Per row of `page`, its member of each search of `model` (the members hashes), in one
    /// pipelined round trip when the mapping has searches.
    async fn load_search_members<C: ConnectionLike + Send>(
        &self,
        conn: &mut C,
        model: &super::model::Model,
        page: &[(String, String)],
    ) -> Result<Vec<Vec<Option<String>>>, LoadError> {
        if model.searches.is_empty() {
            return Ok(vec![Vec::new(); page.len()]);
        }
        let mut pipe = redis::pipe();
        for (row, _) in page {
            for search in &model.searches {
                pipe.cmd("HGET").arg(&search.members).arg(row);
            }
        }
        let replies: Vec<Option<Option<String>>> = replies(conn, pipe).await?;
        Ok(replies
            .chunks(model.searches.len())
            .map(|row| row.iter().map(|m| m.clone().flatten()).collect())
            .collect())
    }

    /// One page of `sink:index:{mapping}:{index}`: (index key, position) pairs.
    async fn load_indexes<C: ConnectionLike + Send>(
        &mut self,
        conn: &mut C,
        hash: usize,
        page: Vec<(String, String)>,
    ) -> Result<(), LoadError> {
        if page.is_empty() {
            return Ok(());
        }
        let keys: Vec<&str> = page.iter().map(|(k, _)| k.as_str()).collect();
        let owners: Vec<Option<String>> = redis::cmd("MGET")
            .arg(&keys)
            .query_async(conn)
            .await
            .map_err(LoadError::Redis)?;
        for ((key, position), owner) in page.into_iter().zip(owners) {
            let position = parse_position(&self.index_hashes[hash], &key, &position)?;
            self.load_index(&key, owner.as_deref(), position);
        }
        Ok(())
    }
}

/// The entries of the bookkeeping hashes in Redis when a load starts.
struct EntryCounts {
    /// Per mapping: `HLEN sink:rows:{mapping}`.
    rows: Vec<usize>,
    /// Per index bookkeeping hash: its `HLEN`.
    index_keys: Vec<usize>,
}

impl EntryCounts {
    fn index_keys(&self) -> usize {
        self.index_keys.iter().sum()
    }

    /// (rows, index keys).
    fn total(&self) -> (usize, usize) {
        (self.rows.iter().sum(), self.index_keys())
    }
}

/// The replies of `pipe`, `None` where a command failed: a key that something else
/// replaced with another type reads as holding nothing (writing it will fail the change
/// that tries, with its own error), rather than stopping the load.
async fn replies<C: ConnectionLike + Send, T: redis::FromRedisValue>(
    conn: &mut C,
    mut pipe: redis::Pipeline,
) -> Result<Vec<Option<T>>, LoadError> {
    let values: Vec<redis::Value> = pipe
        .ignore_errors()
        .query_async(conn)
        .await
        .map_err(LoadError::Redis)?;
    values
        .into_iter()
        .map(|v| match v {
            redis::Value::ServerError(_) => Ok(None),
            v => redis::from_redis_value(v)
                .map(Some)
                .map_err(|e| LoadError::Redis(e.into())),
        })
        .collect()
}

/// Renews `lease` between pages; an error if another writer took it.
async fn renew<C: ConnectionLike + Send>(
    conn: &mut C,
    lease: Option<&Lease>,
) -> Result<(), LoadError> {
    let Some(lease) = lease else { return Ok(()) };
    match lease.take(conn).await.map_err(LoadError::Redis)? {
        Holding::Kept | Holding::Taken => Ok(()),
        Holding::HeldBy(holder) | Holding::SharedSinks(holder) => Err(LoadError::LeaseLost(holder)),
    }
}

/// The (field, value) pairs of a hash, one `HSCAN` page at a time.
struct HashPages {
    key: String,
    cursor: u64,
    done: bool,
}

impl HashPages {
    fn new(key: String) -> HashPages {
        HashPages {
            key,
            cursor: 0,
            done: false,
        }
    }

    /// The next page; `None` once the scan is complete.
    async fn next<C: ConnectionLike + Send>(
        &mut self,
        conn: &mut C,
    ) -> Result<Option<Vec<(String, String)>>, LoadError> {
        if self.done {
            return Ok(None);
        }
        let (next, page): (u64, Vec<(String, String)>) = redis::cmd("HSCAN")
            .arg(&self.key)
            .arg(self.cursor)
            .arg("COUNT")
            .arg(PAGE)
            .query_async(conn)
            .await
            .map_err(LoadError::Redis)?;
        self.cursor = next;
        self.done = next == 0;
        Ok(Some(page))
    }
}

fn parse_position(hash: &str, field: &str, text: &str) -> Result<i64, LoadError> {
    text.parse().map_err(|_| LoadError::Position {
        hash: hash.to_owned(),
        field: field.to_owned(),
        value: text.to_owned(),
    })
}

/// Why the bookkeeping could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// Redis failed a read.
    #[error("reading the sink's bookkeeping from redis")]
    Redis(#[source] redis::RedisError),
    /// A bookkeeping hash holds something that is not a position.
    #[error("`{hash}` holds `{value}` for `{field}`, not a source position")]
    Position {
        /// The bookkeeping hash.
        hash: String,
        /// Its field (a row or index key).
        field: String,
        /// What it holds.
        value: String,
    },
    /// The bookkeeping takes more memory than `--max-writer-memory` allows.
    #[error(transparent)]
    TooLarge(MemoryBound),
    /// A stored row holds a summed value that is not a number (the change script would
    /// refuse its next change too).
    #[error("counting the aggregates of the stored rows: {0}")]
    Aggregate(String),
    /// Another writer took the lease meanwhile.
    #[error("another sink ({0}) took the lease on the database while the bookkeeping was loading")]
    LeaseLost(String),
}
