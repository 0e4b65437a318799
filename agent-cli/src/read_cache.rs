//! The read cache of the long-running `agent-cli mcp`: answers kept in process and dropped as
//! soon as Redis reports that a key they were read from changed (server-assisted client-side
//! caching: RESP3 `CLIENT TRACKING on BCAST`, kept up by [`tracking`]).
//!
//! # Why an answer served from here is never wrong
//! - An entry is inserted only with the full list of keys its script call read (the script
//!   names the ones not in its KEYS: `lookup.lua`, "+reads"), and only if every one of them is
//!   under a prefix Redis reports changes for ([`Prefixes`]).
//! - Those keys are of two kinds ([`Reads`]). A change of a *hard* key (a row, an index entry,
//!   a relation, the types) makes the answer wrong: it is dropped. A change of a *soft* key
//!   (the freshness hash read with it) only makes the answer older than it could be: the
//!   rows it holds are still what Redis holds, and the freshness read with them still says
//!   truthfully how current they are, only no longer as current as Redis could say. The
//!   answer is then served as it is, and the first caller to get it is told to read it again
//!   ([`Hit::revalidate`]). The sink rewrites a mapping's freshness hash on every batch, so
//!   without this every change anywhere in a mapping would drop all of its answers.
//! - An invalidation that arrives while the read was in flight may concern a change made after
//!   the script ran: the entry is then not inserted. Every read takes a [`Ticket`] before it is
//!   sent; invalidations are logged while a ticket is out, and an insert whose keys appear in
//!   the log after its ticket (or whose ticket predates a reset, or whose part of the log was
//!   dropped) is refused.
//! - Without a working tracking connection nothing is served or inserted: a lost connection,
//!   `FLUSHDB`/`FLUSHALL` (a null invalidation) and every (re)start empty the cache.
//! - What remains is the delivery delay of an invalidation (Redis sends them when it finishes
//!   the command that changed the key): the same window every reader of a replica has. The
//!   answer's freshness is assessed against the clock when it is served, from the freshness
//!   hash read with it, which changes whenever the sink applies a batch or records a heartbeat;
//!   an answer held while no invalidation can arrive therefore reports a growing lag, never a
//!   newer state than it reflects.
//!
//! Keys with a TTL would expire without Redis having told anyone yet: lookups whose rows may
//! expire (`ttl_seconds`) bypass the cache (`lookup.rs`).

pub mod prefixes;
pub mod tracking;

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::Hash;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use redis::Value;

pub use prefixes::Prefixes;

/// How many invalidated keys are remembered for reads in flight; a read that sees more than
/// this many invalidations before its reply is answered but not cached.
const LOG_CAPACITY: usize = 4096;

/// Answers by key (`K`: what was asked; `V`: the answer), each dropped when a key it was read
/// from changes. Cheap to clone; clones share the entries.
pub struct ReadCache<K, V> {
    shared: Arc<Shared<K, V>>,
}

impl<K, V> Clone for ReadCache<K, V> {
    fn clone(&self) -> Self {
        ReadCache {
            shared: Arc::clone(&self.shared),
        }
    }
}

struct Shared<K, V> {
    capacity: usize,
    prefixes: Prefixes,
    state: Mutex<State<K, V>>,
}

/// Counters since start, for logs, tests and benchmarks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Answers served from the cache.
    pub hits: u64,
    /// Lookups the cache could not answer (absent, or the cache was not live).
    pub misses: u64,
    /// Answers stored.
    pub inserted: u64,
    /// Answers not stored because a key they read changed while in flight, the tracking
    /// connection was (re)made meanwhile, or a key is not tracked.
    pub refused: u64,
    /// Entries dropped because a key they were read from changed.
    pub invalidated: u64,
    /// Answers served while a newer freshness hash was known to exist (each followed by a
    /// read again).
    pub stale_hits: u64,
    /// Entries dropped to stay within the capacity (oldest first).
    pub evicted: u64,
    /// Times every entry was dropped: tracking (re)started or lost, a flush, a reload.
    pub resets: u64,
}

/// The keys an answer was read from (module doc): a change of a `hard` one drops it, a change
/// of a `soft` one asks for it to be read again.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reads {
    /// Keys whose change makes the answer wrong.
    pub hard: Vec<String>,
    /// Keys whose change makes the answer older than it could be (freshness hashes).
    pub soft: Vec<String>,
}

/// An answer the cache holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hit<V> {
    /// The answer.
    pub value: V,
    /// A soft key it was read from changed since: read it again and [`ReadCache::insert`] the
    /// result. Told to one caller per change; the others keep getting this answer meanwhile.
    pub revalidate: bool,
}

struct Slot<V> {
    id: u64,
    value: V,
    reads: Reads,
    /// A soft key changed since it was read.
    stale: bool,
    /// A caller was told to read it again.
    refreshing: bool,
}

struct State<K, V> {
    /// Tracking is on and its connection up: entries may be served and inserted.
    live: bool,
    entries: HashMap<Arc<K>, Slot<V>>,
    /// Entry id -> its key in `entries`.
    ids: HashMap<u64, Arc<K>>,
    /// The id the next entry gets.
    next_id: u64,
    /// Key read -> the ids of the entries read from it. Sets, so that dropping an entry costs
    /// the number of keys it read, not the number of entries sharing them (every answer of a
    /// mapping shares its freshness hash, and a new freshness drops them all).
    dependents: HashMap<String, HashSet<u64>>,
    /// Soft key read -> the ids of the entries read from it.
    soft_dependents: HashMap<String, HashSet<u64>>,
    /// Entry ids in insertion order (with leftovers of removed ones), for eviction.
    order: VecDeque<u64>,
    /// Invalidation events so far (each invalidated key and each reset counts one).
    seq: u64,
    /// The `seq` of the last reset: tickets taken before it are void.
    reset_at: u64,
    /// Tickets out (reads in flight): while there are any, invalidated keys are logged.
    tickets_out: usize,
    /// (seq, key) of recent invalidations, oldest first, at most [`LOG_CAPACITY`].
    log: VecDeque<(u64, String)>,
    stats: Stats,
}

/// Taken before a read is sent; [`ReadCache::insert`] uses it to tell whether the answer may
/// be older than an invalidation that arrived meanwhile.
pub struct Ticket<K, V> {
    shared: Arc<Shared<K, V>>,
    seq: u64,
}

impl<K, V> Drop for Ticket<K, V> {
    fn drop(&mut self) {
        let mut state = lock(&self.shared.state);
        state.tickets_out -= 1;
        if state.tickets_out == 0 {
            state.log.clear();
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // The state stays consistent under a panic in another holder: every change completes
    // before anything that could panic.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl<K: Hash + Eq, V: Clone> ReadCache<K, V> {
    /// An empty cache of at most `capacity` answers over keys under `prefixes`; not live
    /// until [`tracking`] says Redis reports their changes.
    pub fn new(capacity: usize, prefixes: Prefixes) -> Self {
        ReadCache {
            shared: Arc::new(Shared {
                capacity: capacity.max(1),
                prefixes,
                state: Mutex::new(State {
                    live: false,
                    entries: HashMap::new(),
                    ids: HashMap::new(),
                    next_id: 0,
                    dependents: HashMap::new(),
                    soft_dependents: HashMap::new(),
                    order: VecDeque::new(),
                    seq: 0,
                    reset_at: 0,
                    tickets_out: 0,
                    log: VecDeque::new(),
                    stats: Stats::default(),
                }),
            }),
        }
    }

    /// The prefixes whose changes Redis must report (`CLIENT TRACKING on BCAST PREFIX ...`).
    pub fn prefixes(&self) -> &Prefixes {
        &self.shared.prefixes
    }

    /// The answer for `key`, if one is held and the cache is live.
    pub fn get(&self, key: &K) -> Option<Hit<V>> {
        let mut state = lock(&self.shared.state);
        let live = state.live;
        let found = state.entries.get_mut(key).filter(|_| live).map(|slot| {
            let revalidate = slot.stale && !slot.refreshing;
            slot.refreshing |= revalidate;
            (
                slot.stale,
                Hit {
                    value: slot.value.clone(),
                    revalidate,
                },
            )
        });
        match &found {
            Some((stale, _)) => {
                state.stats.hits += 1;
                state.stats.stale_hits += u64::from(*stale);
            }
            None => state.stats.misses += 1,
        }
        found.map(|(_, hit)| hit)
    }

    /// Drops the answer for `key` (reading it again failed: the next caller reads it).
    pub fn forget(&self, key: &K) {
        let mut state = lock(&self.shared.state);
        if let Some(id) = state.entries.get(key).map(|slot| slot.id) {
            state.remove(id);
        }
    }

    /// Take before sending the read whose answer may be inserted.
    pub fn ticket(&self) -> Ticket<K, V> {
        let mut state = lock(&self.shared.state);
        state.tickets_out += 1;
        Ticket {
            shared: Arc::clone(&self.shared),
            seq: state.seq,
        }
    }

    /// Stores `value` for `key`, read from `reads` after `ticket` was taken, unless that read
    /// may already be wrong (module doc). Returns whether it was stored. A soft key that
    /// changed meanwhile stores it as to be read again.
    pub fn insert(&self, ticket: Ticket<K, V>, key: K, value: V, reads: Reads) -> bool {
        let shared = &self.shared;
        let mut state = lock(&shared.state);
        let stored = state.live
            && ticket.seq >= state.reset_at
            && (reads.hard.iter().chain(&reads.soft)).all(|k| shared.prefixes.covers(k))
            && !state.changed_since(ticket.seq, &reads.hard);
        if stored {
            let stale = state.changed_since(ticket.seq, &reads.soft);
            state.store(shared.capacity, key, value, reads, stale);
        } else {
            state.stats.refused += 1;
        }
        drop(state);
        drop(ticket);
        stored
    }

    /// Applies one `invalidate` push: its keys changed (`[keys]`), or everything did (`[nil]`,
    /// after a flush).
    pub fn on_invalidate(&self, data: &[Value]) {
        let mut state = lock(&self.shared.state);
        match data.first() {
            Some(Value::Array(keys)) => {
                for key in keys {
                    let bytes = match key {
                        Value::BulkString(bytes) => bytes.as_slice(),
                        Value::SimpleString(text) => text.as_bytes(),
                        _ => continue,
                    };
                    // Keys read by lookups are UTF-8 text: no other key can be one of them.
                    if let Ok(key) = std::str::from_utf8(bytes) {
                        state.invalidate(key);
                    }
                }
            }
            _ => state.reset(),
        }
    }

    /// Tracking is on (`true`) or lost (`false`); either way nothing held before is kept.
    pub fn set_live(&self, live: bool) {
        let mut state = lock(&self.shared.state);
        state.reset();
        state.live = live;
    }

    /// Whether answers are being served and stored.
    pub fn is_live(&self) -> bool {
        lock(&self.shared.state).live
    }

    /// Drops every answer (the configuration was reloaded: tools may mean something else).
    pub fn clear(&self) {
        lock(&self.shared.state).reset();
    }

    /// Counters since start.
    pub fn stats(&self) -> Stats {
        lock(&self.shared.state).stats
    }

    /// Answers held.
    pub fn len(&self) -> usize {
        lock(&self.shared.state).entries.len()
    }

    /// Whether no answer is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<K: Hash + Eq, V> State<K, V> {
    /// Whether a key of `reads` was invalidated after `seq`, or the log no longer reaches
    /// back that far.
    fn changed_since(&self, seq: u64, reads: &[String]) -> bool {
        if self.seq == seq {
            return false;
        }
        if self.log.front().is_none_or(|(first, _)| *first > seq + 1) {
            return true;
        }
        self.log
            .iter()
            .rev()
            .take_while(|(at, _)| *at > seq)
            .any(|(_, key)| reads.iter().any(|r| r == key))
    }

    fn store(&mut self, capacity: usize, key: K, value: V, reads: Reads, stale: bool) {
        if let Some(old) = self.entries.get(&key).map(|slot| slot.id) {
            self.remove(old);
        }
        while self.entries.len() >= capacity {
            let Some(oldest) = self.order.pop_front() else {
                break;
            };
            if self.remove(oldest) {
                self.stats.evicted += 1;
            }
        }
        let id = self.next_id;
        self.next_id += 1;
        for read in &reads.hard {
            self.dependents.entry(read.clone()).or_default().insert(id);
        }
        for read in &reads.soft {
            self.soft_dependents
                .entry(read.clone())
                .or_default()
                .insert(id);
        }
        self.order.push_back(id);
        if self.order.len() > 2 * capacity {
            let ids = &self.ids;
            self.order.retain(|id| ids.contains_key(id));
        }
        let key = Arc::new(key);
        self.ids.insert(id, Arc::clone(&key));
        let slot = Slot {
            id,
            value,
            reads,
            stale,
            refreshing: false,
        };
        self.entries.insert(key, slot);
        self.stats.inserted += 1;
    }

    /// Removes entry `id` (if it is still held) and its links from the keys it read.
    fn remove(&mut self, id: u64) -> bool {
        let Some(key) = self.ids.remove(&id) else {
            return false;
        };
        let Some(slot) = self.entries.remove(&*key) else {
            return false;
        };
        unlink(&mut self.dependents, &slot.reads.hard, id);
        unlink(&mut self.soft_dependents, &slot.reads.soft, id);
        true
    }

    fn invalidate(&mut self, key: &str) {
        self.seq += 1;
        if self.tickets_out > 0 {
            if self.log.len() == LOG_CAPACITY {
                self.log.pop_front();
            }
            self.log.push_back((self.seq, key.to_owned()));
        }
        for id in self.dependents.remove(key).unwrap_or_default() {
            if self.remove(id) {
                self.stats.invalidated += 1;
            }
        }
        for id in self.soft_dependents.get(key).into_iter().flatten() {
            if let Some(slot) = self.ids.get(id).and_then(|k| self.entries.get_mut(&**k)) {
                slot.stale = true;
            }
        }
    }

    fn reset(&mut self) {
        self.seq += 1;
        self.reset_at = self.seq;
        self.log.clear();
        self.entries.clear();
        self.ids.clear();
        self.dependents.clear();
        self.soft_dependents.clear();
        self.order.clear();
        self.stats.resets += 1;
    }
}

/// Removes `id` from the sets of `keys`, and sets left empty.
fn unlink(dependents: &mut HashMap<String, HashSet<u64>>, keys: &[String], id: u64) {
    for key in keys {
        if let Some(set) = dependents.get_mut(key) {
            set.remove(&id);
            if set.is_empty() {
                dependents.remove(key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache() -> ReadCache<&'static str, u32> {
        let cache = ReadCache::new(3, Prefixes::of_literals(["customer:", "sink:"]));
        cache.set_live(true);
        cache
    }

    fn invalidate(cache: &ReadCache<&'static str, u32>, keys: &[&str]) {
        let keys = keys
            .iter()
            .map(|k| Value::BulkString(k.as_bytes().to_vec()))
            .collect();
        cache.on_invalidate(&[Value::Array(keys)]);
    }

    fn reads(keys: &[&str]) -> Reads {
        Reads {
            hard: keys.iter().map(|k| k.to_string()).collect(),
            soft: Vec::new(),
        }
    }

    fn hit(value: u32, revalidate: bool) -> Option<Hit<u32>> {
        Some(Hit { value, revalidate })
    }

    fn value(cache: &ReadCache<&'static str, u32>, key: &'static str) -> Option<u32> {
        cache.get(&key).map(|hit| hit.value)
    }

    #[test]
    fn an_answer_is_served_until_a_key_it_read_changes() {
        let cache = cache();
        let t = cache.ticket();
        assert!(cache.insert(t, "a", 1, reads(&["customer:1", "sink:types:c"])));
        let t = cache.ticket();
        assert!(cache.insert(t, "b", 2, reads(&["customer:2", "sink:types:c"])));
        assert_eq!(value(&cache, "a"), Some(1));
        invalidate(&cache, &["customer:1", "customer:99"]);
        assert_eq!(value(&cache, "a"), None);
        assert_eq!(value(&cache, "b"), Some(2));
        invalidate(&cache, &["sink:types:c"]);
        assert_eq!(value(&cache, "b"), None);
        assert!(cache.is_empty());
        let stats = cache.stats();
        assert_eq!((stats.hits, stats.invalidated), (2, 2));
    }

    #[test]
    fn an_answer_whose_key_changed_while_it_was_read_is_not_kept() {
        let cache = cache();
        let t = cache.ticket();
        invalidate(&cache, &["customer:7"]);
        assert!(!cache.insert(t, "a", 1, reads(&["customer:7"])));
        // A change to another key does not matter.
        let t = cache.ticket();
        invalidate(&cache, &["customer:8"]);
        assert!(cache.insert(t, "a", 1, reads(&["customer:7"])));
        // A change before the ticket was taken does not either.
        invalidate(&cache, &["customer:9"]);
        let t = cache.ticket();
        assert!(cache.insert(t, "b", 1, reads(&["customer:9"])));
    }

    #[test]
    fn a_read_that_outlived_the_log_is_not_kept() {
        let cache = cache();
        let t = cache.ticket();
        for n in 0..=LOG_CAPACITY {
            invalidate(&cache, &[&format!("customer:x{n}")]);
        }
        assert!(!cache.insert(t, "a", 1, reads(&["customer:1"])));
    }

    #[test]
    fn flushes_reconnections_and_untracked_keys_keep_nothing() {
        let cache = cache();
        let t = cache.ticket();
        assert!(cache.insert(t, "a", 1, reads(&["customer:1"])));
        let t = cache.ticket();
        cache.on_invalidate(&[Value::Nil]);
        assert_eq!(value(&cache, "a"), None);
        assert!(
            !cache.insert(t, "a", 1, reads(&["customer:1"])),
            "read before the flush"
        );

        let t = cache.ticket();
        cache.set_live(false);
        assert!(!cache.insert(t, "a", 1, reads(&["customer:1"])));
        let t = cache.ticket();
        assert!(!cache.insert(t, "a", 1, reads(&["customer:1"])), "not live");
        cache.set_live(true);
        let t = cache.ticket();
        assert!(
            !cache.insert(t, "a", 1, reads(&["order:1"])),
            "order: is not tracked"
        );
        assert_eq!(cache.stats().refused, 4);
    }

    #[test]
    fn a_changed_freshness_hash_keeps_the_answer_and_asks_one_caller_to_read_it_again() {
        let cache = cache();
        let with_freshness = || Reads {
            hard: vec!["customer:1".into()],
            soft: vec!["sink:freshness:c".into()],
        };
        let t = cache.ticket();
        assert!(cache.insert(t, "a", 1, with_freshness()));
        assert_eq!(cache.get(&"a"), hit(1, false));
        invalidate(&cache, &["sink:freshness:c"]);
        assert_eq!(cache.get(&"a"), hit(1, true));
        assert_eq!(cache.get(&"a"), hit(1, false), "asked once");
        // The caller's new read replaces it.
        let t = cache.ticket();
        assert!(cache.insert(t, "a", 2, with_freshness()));
        assert_eq!(cache.get(&"a"), hit(2, false));
        // A freshness change during the read stores it, to be read again.
        let t = cache.ticket();
        invalidate(&cache, &["sink:freshness:c"]);
        assert!(cache.insert(t, "a", 3, with_freshness()));
        assert_eq!(cache.get(&"a"), hit(3, true));
        // A hard key still drops it; a failed read again forgets it.
        invalidate(&cache, &["customer:1"]);
        assert_eq!(value(&cache, "a"), None);
        let t = cache.ticket();
        assert!(cache.insert(t, "a", 4, with_freshness()));
        cache.forget(&"a");
        assert_eq!(value(&cache, "a"), None);
        assert_eq!(cache.stats().stale_hits, 3);
    }

    #[test]
    fn the_oldest_answers_make_room() {
        let cache = cache();
        for (n, key) in ["a", "b", "c", "d"].into_iter().enumerate() {
            let t = cache.ticket();
            assert!(cache.insert(t, key, n as u32, reads(&[&format!("customer:{n}")])));
        }
        assert_eq!(cache.len(), 3);
        assert_eq!(value(&cache, "a"), None);
        assert_eq!(value(&cache, "d"), Some(3));
        // Replacing an answer drops the old one's links: its old key no longer reaches it.
        let t = cache.ticket();
        assert!(cache.insert(t, "d", 30, reads(&["customer:new"])));
        invalidate(&cache, &["customer:3"]);
        assert_eq!(value(&cache, "d"), Some(30));
        assert_eq!(cache.stats().evicted, 1);
    }
}
