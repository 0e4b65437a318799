//! Which value columns the consume stage has had recorded in `sink:types:{mapping}`, so
//! that a schema's columns go to Redis once, ahead of its first records, and not with
//! every batch.
//!
//! What was recorded is forgotten at every rebalance. An assignment is where the self-heal
//! (`self_heal.rs`) may be first to learn that Redis lost writes it had acknowledged (an
//! empty restart or a flush just before the rebalance, ahead of the running check): it then
//! rewinds the partitions to the earliest offsets, and the pipeline goes on with this same
//! stage. The types recorded before the loss went with it, so the replay must record them
//! again. It costs one `HSET` per mapping and rebalance.

use std::sync::Arc;

use super::batch::Columns;
use super::fencing::Assignments;

/// The columns recorded per mapping since the last rebalance.
#[derive(Debug)]
pub(super) struct RecordedTypes {
    assignments: Assignments,
    /// The rebalance `columns` were recorded under.
    generation: u64,
    /// Per mapping: the columns last recorded (`None`: none since the last rebalance).
    columns: Vec<Option<Columns>>,
}

impl RecordedTypes {
    /// Nothing recorded yet for any of `mappings` mappings.
    pub fn new(mappings: usize, assignments: Assignments) -> RecordedTypes {
        RecordedTypes {
            generation: assignments.generation(),
            assignments,
            columns: vec![None; mappings],
        }
    }

    /// Whether `columns` of `mapping` are to be recorded ahead of the record that carries
    /// them: they differ from the mapping's last recorded ones, or a rebalance came since.
    /// They count as recorded from now on.
    pub fn needs_recording(&mut self, mapping: usize, columns: &Columns) -> bool {
        let generation = self.assignments.generation();
        if generation != self.generation {
            self.columns.fill(None);
            self.generation = generation;
        }
        // The decoder hands out one `Arc` per schema (Avro schema id, JSON schema text,
        // schemaless columns seen): comparing pointers is the common case.
        let known = self.columns[mapping]
            .as_ref()
            .is_some_and(|known| Arc::ptr_eq(known, columns) || known == columns);
        if !known {
            self.columns[mapping] = Some(Arc::clone(columns));
        }
        !known
    }
}

#[cfg(test)]
mod tests {
    use mapping::ColumnType;
    use rdkafka::TopicPartitionList;

    use super::*;

    fn columns(names: &[&str]) -> Columns {
        names
            .iter()
            .map(|n| ((*n).to_owned(), ColumnType::String))
            .collect()
    }

    #[test]
    fn columns_are_recorded_once_per_schema_and_again_after_every_rebalance() {
        let assignments = Assignments::default();
        let mut types = RecordedTypes::new(2, assignments.clone());
        let v1 = columns(&["id", "email"]);
        assert!(types.needs_recording(0, &v1));
        assert!(!types.needs_recording(0, &v1), "the same schema again");
        assert!(
            !types.needs_recording(0, &columns(&["id", "email"])),
            "equal columns"
        );
        assert!(types.needs_recording(1, &v1), "another mapping");
        let v2 = columns(&["id", "email", "phone"]);
        assert!(types.needs_recording(0, &v2), "a new schema");

        let mut tpl = TopicPartitionList::new();
        tpl.add_partition("t", 0);
        assignments.revoked(&tpl);
        assignments.assigned(&tpl, Some("run:token"));
        assert!(types.needs_recording(0, &v2), "after a rebalance");
        assert!(
            types.needs_recording(1, &v1),
            "every mapping after a rebalance"
        );
        assert!(!types.needs_recording(0, &v2));
    }
}
