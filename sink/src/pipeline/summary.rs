//! What a pipeline run did, counted by the stages and summed when it stops.

/// Counts of one pipeline run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    /// Records consumed and settled (applied or dead-lettered).
    pub records: u64,
    /// Changes applied to Redis.
    pub changes: u64,
    /// Records sent to the dead-letter topic.
    pub dead_lettered: u64,
    /// Of the changes applied, those that were no-ops (replays, older than what is stored).
    pub skipped: u64,
    /// Batches applied.
    pub batches: u64,
    /// When the first record arrived (for throughput measurements).
    pub first_record_at: Option<std::time::Instant>,
    /// When the last batch was applied.
    pub last_applied_at: Option<std::time::Instant>,
    /// The pipeline stopped because Redis lost writes it had acknowledged (`self_heal.rs`):
    /// start it again, and every assigned partition resumes from what Redis holds.
    pub bookkeeping_lost: bool,
}

impl Summary {
    /// Adds the counts of `next`, a later run of the same sink (started again after
    /// [`Summary::bookkeeping_lost`]).
    pub fn absorb(&mut self, next: &Summary) {
        self.records += next.records;
        self.changes += next.changes;
        self.dead_lettered += next.dead_lettered;
        self.skipped += next.skipped;
        self.batches += next.batches;
        self.first_record_at = self.first_record_at.or(next.first_record_at);
        self.last_applied_at = next.last_applied_at.or(self.last_applied_at);
        self.bookkeeping_lost = next.bookkeeping_lost;
    }
}
