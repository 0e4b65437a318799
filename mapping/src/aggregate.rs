//! Aggregates (`aggregates:` of a mapping): per-parent figures over a mapping's rows that the
//! sink maintains next to the rows, so that an agent gets "how many, how much" in one read
//! instead of paging through a relation. The Redis hash holding them is described in
//! [`crate::layout::aggregate`].

use crate::template::KeyTemplate;

/// Figures over the rows of one mapping, per rendered parent key.
#[derive(Debug, Clone, PartialEq)]
pub struct Aggregate {
    /// Unique within the mapping; named by lookups (`aggregate:`).
    pub name: String,
    /// Parent key, e.g. `customer:{customer_id}:order_stats`; each row counts under the key
    /// its current values render.
    pub key: KeyTemplate,
    /// Whether the number of rows is kept. It is kept whenever `sum` or `group_by` are set
    /// too (the sink needs it to remove a parent's hash when its last row leaves), so this
    /// only says whether lookups report it.
    pub count: bool,
    /// Stored numeric fields summed exactly (integers, and decimals as scaled integers).
    pub sum: Vec<String>,
    /// Stored field whose values split the figures into groups (`by_{field}` in results).
    pub group_by: Option<String>,
}

impl Aggregate {
    /// The name of the group object in lookup results: `by_{group_by}`.
    pub fn groups_name(&self) -> Option<String> {
        self.group_by.as_ref().map(|g| format!("by_{g}"))
    }
}
