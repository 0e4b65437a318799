//! Which assignment each record was read under, so that its batch carries that
//! assignment's fence (apply/fence.rs) to the writers.
//!
//! The consumer context records, at every assignment, the marker that `self_heal.rs` wrote
//! for each assigned partition ([`Assignments::assigned`]), and forgets revoked partitions.
//! The rebalance callback runs inside the consume stage's poll of the consumer, and
//! librdkafka discards records fetched under an earlier assignment of a partition once it is
//! assigned again, so a record polled after the callback belongs to the assignment the
//! callback recorded. The consume stage looks the fence up per record through a
//! [`FenceCache`], which asks the shared map again only after a rebalance.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use rdkafka::TopicPartitionList;

/// The fence of every assigned partition, shared by the consumer context and the consume
/// stage.
#[derive(Debug, Default, Clone)]
pub struct Assignments(Arc<Shared>);

/// The marker an assignment holds; `None` when it could not ask Redis.
type Fence = Option<Arc<str>>;

#[derive(Debug, Default)]
struct Shared {
    /// Bumped by every rebalance, so that readers know when to look again.
    generation: AtomicU64,
    /// Assigned `(topic, partition)` -> the marker its assignment holds (`None`: the
    /// assignment could not ask Redis). Revoked partitions are absent.
    fences: Mutex<HashMap<(String, i32), Fence>>,
}

impl Assignments {
    /// The partitions of `tpl` were assigned, their markers set to `marker`; `None` when the
    /// assignment could not ask Redis (no marker was set: batches read under it carry no
    /// fence, and a guarded writer refuses them).
    pub fn assigned(&self, tpl: &TopicPartitionList, marker: Option<&str>) {
        let marker: Option<Arc<str>> = marker.map(Arc::from);
        let mut fences = self.0.fences.lock().unwrap_or_else(PoisonError::into_inner);
        for e in tpl.elements() {
            fences.insert((e.topic().to_owned(), e.partition()), marker.clone());
        }
        self.0.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// The partitions of `tpl` were revoked.
    pub fn revoked(&self, tpl: &TopicPartitionList) {
        let mut fences = self.0.fences.lock().unwrap_or_else(PoisonError::into_inner);
        for e in tpl.elements() {
            fences.remove(&(e.topic().to_owned(), e.partition()));
        }
        self.0.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// Bumped by every rebalance.
    pub fn generation(&self) -> u64 {
        self.0.generation.load(Ordering::Acquire)
    }

    /// The fence of `topic`/`partition`'s current assignment (`None`: not assigned, or its
    /// assignment could not ask Redis).
    pub fn current(&self, topic: &str, partition: i32) -> Option<Arc<str>> {
        let fences = self.0.fences.lock().unwrap_or_else(PoisonError::into_inner);
        fences
            .get(&(topic.to_owned(), partition))
            .cloned()
            .flatten()
    }

    /// Whether `topic`/`partition` is assigned to this process under `fence` (`None`: an
    /// assignment that could not ask Redis). A revoked partition is under no fence at all, so
    /// a batch read under an unmarked assignment is not taken for current once its partition
    /// went elsewhere.
    pub fn is_current(&self, topic: &str, partition: i32, fence: Option<&Arc<str>>) -> bool {
        let fences = self.0.fences.lock().unwrap_or_else(PoisonError::into_inner);
        fences
            .get(&(topic.to_owned(), partition))
            .is_some_and(|current| current.as_ref() == fence)
    }
}

/// The consume stage's view of [`Assignments`]: one atomic read per record, the shared map
/// only after a rebalance.
#[derive(Debug)]
pub(super) struct FenceCache {
    assignments: Assignments,
    generation: u64,
    fences: HashMap<(Arc<str>, i32), Option<Arc<str>>>,
}

impl FenceCache {
    pub fn new(assignments: Assignments) -> FenceCache {
        FenceCache {
            generation: assignments.generation(),
            assignments,
            fences: HashMap::new(),
        }
    }

    /// The fence of `topic`/`partition`'s current assignment (`None`: no marker known).
    pub fn fence(&mut self, topic: &Arc<str>, partition: i32) -> Option<Arc<str>> {
        let generation = self.assignments.generation();
        if generation != self.generation {
            self.fences.clear();
            self.generation = generation;
        }
        self.fences
            .entry((Arc::clone(topic), partition))
            .or_insert_with(|| self.assignments.current(topic, partition))
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cache_follows_rebalances() {
        let assignments = Assignments::default();
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition("t", 0);
        assignments.assigned(&tpl, Some("r:1"));
        let mut cache = FenceCache::new(assignments.clone());
        let topic: Arc<str> = Arc::from("t");
        assert_eq!(cache.fence(&topic, 0).as_deref(), Some("r:1"));
        assert_eq!(cache.fence(&topic, 1), None);
        assignments.assigned(&tpl, Some("r:2"));
        assert_eq!(cache.fence(&topic, 0).as_deref(), Some("r:2"));
        assignments.revoked(&tpl);
        assert_eq!(cache.fence(&topic, 0), None);
        assignments.assigned(&tpl, Some("r:3"));
        assignments.assigned(&tpl, None);
        assert_eq!(
            cache.fence(&topic, 0),
            None,
            "an unverified assignment has no fence"
        );
    }

    #[test]
    fn an_unmarked_assignment_is_current_only_while_it_lasts() {
        let assignments = Assignments::default();
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition("t", 0);
        assert!(!assignments.is_current("t", 0, None), "never assigned");
        assignments.assigned(&tpl, None);
        assert!(assignments.is_current("t", 0, None));
        assignments.revoked(&tpl);
        assert!(!assignments.is_current("t", 0, None), "revoked");
        assignments.assigned(&tpl, Some("r:4"));
        assert!(!assignments.is_current("t", 0, None), "marked since");
        assert!(assignments.is_current("t", 0, Some(&Arc::from("r:4"))));
    }
}
