//! Fencing tokens: a batch lands only under the partition assignment it was read under.
//!
//! Each assignment of a partition (`pipeline/self_heal.rs`) writes the partition's marker in
//! `sink:offsets:run` as `{run_id}:{token}`: the Redis server run under which `sink:offsets`
//! covers the database, and a token fresh for that assignment. A batch carries the marker
//! of the assignment it was read under ([`Fences`]), and a guarded writer (the change
//! script inside its call, the exclusive writer under its `WATCH`) applies it only while the
//! marker still says exactly that ([`judge`]). So a batch that a pipeline read before a
//! rebalance and could send only after the partition's new owner marked it (Redis was
//! down, the batch waited in a retry) is refused instead of landing behind the new owner's
//! replay. A marker without a token (`{run_id}` alone) is what a rebuild's handover writes
//! for partitions no sink had marked under the current run; the next assignment replaces it.

use std::sync::Arc;

use mapping::layout;

/// The marker of an assignment: `{run}:{token}`.
pub fn marker(run: &str, token: &str) -> String {
    format!("{run}:{token}")
}

/// The server run a marker names (all of it when it holds no token).
pub fn run_of(marker: &str) -> &str {
    marker.split_once(':').map_or(marker, |(run, _)| run)
}

/// Per partition of a batch, the marker of the assignment its records were read under.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fences {
    /// `(offsets field, marker)`, a handful at most.
    by_field: Vec<(String, Arc<str>)>,
}

impl Fences {
    /// No partition fenced: a guarded writer refuses every partition.
    pub fn none() -> Fences {
        Fences::default()
    }

    /// These fences, and `topic`/`partition` read under `marker`.
    pub fn with(mut self, topic: &str, partition: i32, marker: impl Into<Arc<str>>) -> Fences {
        let field = layout::offsets_field(topic, partition);
        let marker = marker.into();
        match self.by_field.iter_mut().find(|(f, _)| *f == field) {
            Some((_, m)) => *m = marker,
            None => self.by_field.push((field, marker)),
        }
        self
    }

    /// The marker the partition of `field` must hold; empty (no marker is) when the batch
    /// was read under no known assignment.
    pub fn expected(&self, field: &str) -> &str {
        self.by_field
            .iter()
            .find(|(f, _)| f == field)
            .map_or("", |(_, m)| m)
    }
}

/// What a partition's marker says about a batch fenced by `expected`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// The batch's own assignment still holds the partition under this server run.
    Holds,
    /// The marker is gone or names another server run: Redis lost the partition's
    /// bookkeeping ([`super::ApplyError::BookkeepingLost`]).
    Lost,
    /// Another assignment marked the partition under this run since the batch was read
    /// ([`super::ApplyError::Superseded`]).
    Superseded,
}

/// Judges the marker `marked` of a partition, on the server run `run`, for a batch fenced by
/// `expected`. The change script's guard (`change.lua`, "Marker guard") decides alike.
pub(crate) fn judge(marked: Option<&str>, run: &str, expected: &str) -> Verdict {
    match marked {
        Some(marked) if run_of(marked) == run => {
            if marked == expected {
                Verdict::Holds
            } else {
                Verdict::Superseded
            }
        }
        _ => Verdict::Lost,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marker_names_run_and_token() {
        assert_eq!(marker("ab12", "7f"), "ab12:7f");
        assert_eq!(run_of("ab12:7f"), "ab12");
        assert_eq!(run_of("ab12"), "ab12", "a handover's marker has no token");
        assert_eq!(run_of(":7f"), "", "a server refusing INFO runs as ''");
    }

    #[test]
    fn only_the_batch_own_assignment_holds() {
        let fences = Fences::none().with("t", 0, "r1:a").with("t", 1, "r1:b");
        assert_eq!(fences.expected("t/0"), "r1:a");
        assert_eq!(fences.expected("t/2"), "");
        assert_eq!(judge(Some("r1:a"), "r1", "r1:a"), Verdict::Holds);
        assert_eq!(judge(Some("r1:b"), "r1", "r1:a"), Verdict::Superseded);
        assert_eq!(judge(Some("r1"), "r1", "r1:a"), Verdict::Superseded);
        assert_eq!(judge(Some("r1:a"), "r1", ""), Verdict::Superseded);
        assert_eq!(judge(Some("r0:a"), "r1", "r0:a"), Verdict::Lost);
        assert_eq!(judge(None, "r1", "r1:a"), Verdict::Lost);
    }
}
