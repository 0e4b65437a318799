//! `include:` of a row lookup: the newest rows of another mapping's relation, read by the
//! lookup script in the same round trip as the found row and returned inside it.
//!
//! [`reads`] renders what the script needs per include (the child mapping's `sink:types` and
//! freshness hash, the relation key's and the child row key's literal pieces, the limit);
//! the script fills both with the found row's primary key, so a row and its included rows
//! always come from the same atomic read. [`attach`] types the children with the child
//! mapping's types and puts them under the include's `as` field.

use mapping::layout;
use mapping::model::{Config, Include, Mapping};
use serde_json::Value;

use crate::error::PlanError;
use crate::template_pieces::pieces;

/// What the lookup script reads for one include.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IncludeRead {
    /// `sink:types:{child mapping}`.
    pub types_key: String,
    /// The child mapping's freshness hash: its source's watermark, or `sink:freshness:{child}`.
    pub freshness_key: String,
    /// At most this many children.
    pub limit: u32,
    /// The relation key's literal pieces around its placeholder (the found row's primary key).
    pub relation_pieces: Vec<String>,
    /// The child row key's literal pieces around its placeholder (a stored child primary key).
    pub row_pieces: Vec<String>,
}

/// The includes of a row lookup.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Includes {
    /// The found row's primary key when the lookup addresses the row itself (by its key);
    /// `None` for an index lookup, whose script reads it from the index.
    pub id: Option<String>,
    /// One per `include:` entry, in declaration order.
    pub reads: Vec<IncludeRead>,
}

impl Includes {
    /// The script's last argument: `{"id": ..., "includes": [{"limit", "key", "rows"}]}`.
    pub fn spec_json(&self) -> String {
        let includes: Vec<Value> = self
            .reads
            .iter()
            .map(|r| {
                serde_json::json!({
                    "limit": r.limit,
                    "key": r.relation_pieces,
                    "rows": r.row_pieces,
                })
            })
            .collect();
        serde_json::json!({"id": self.id, "includes": includes}).to_string()
    }
}

/// What the tool description adds for `includes`: one sentence per include naming its
/// field, limit, mapping and relation (empty without includes).
pub fn describe(includes: &[Include]) -> String {
    includes
        .iter()
        .map(|i| {
            format!(
                " The answer also holds `{}`: up to {} newest `{}` rows of relation `{}`, newest first (an empty array when there are none).",
                i.as_field, i.limit, i.mapping, i.relation
            )
        })
        .collect()
}

/// The child mapping of `include`.
pub fn child<'c>(config: &'c Config, include: &Include) -> Option<&'c Mapping> {
    config.mappings.iter().find(|m| m.name == include.mapping)
}

/// The freshness hash of `mapping`: its source's watermark, or its own freshness record.
pub fn freshness_key(config: &Config, mapping: &str) -> String {
    match config.source_of(mapping) {
        Some(source) => layout::watermark_key(&source.name),
        None => layout::freshness_key(mapping),
    }
}

/// Renders the reads of `includes` (of tool `tool`) from the declared templates only.
pub fn reads(
    config: &Config,
    tool: &str,
    includes: &[Include],
) -> Result<Vec<IncludeRead>, PlanError> {
    includes
        .iter()
        .map(|include| {
            let unknown = || PlanError::UnknownRelation {
                tool: tool.to_owned(),
                mapping: include.mapping.clone(),
                relation: include.relation.clone(),
            };
            let child = child(config, include).ok_or_else(unknown)?;
            let relation = child.relation(&include.relation).ok_or_else(unknown)?;
            Ok(IncludeRead {
                types_key: layout::types_key(&child.name),
                freshness_key: freshness_key(config, &child.name),
                limit: include.limit,
                relation_pieces: pieces(&relation.key, tool, "the found row's primary key")?,
                row_pieces: pieces(&child.key, tool, "a stored primary key")?,
            })
        })
        .collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The shipped file's include of `get_customer`.
    pub(crate) fn recent_orders() -> Include {
        Include {
            relation: "customer_orders".into(),
            mapping: "orders".into(),
            as_field: "recent_orders".into(),
            limit: 3,
        }
    }

    #[test]
    fn the_spec_carries_the_pieces_in_include_order() {
        let read = IncludeRead {
            types_key: "sink:types:orders".into(),
            freshness_key: "sink:freshness:orders".into(),
            limit: 3,
            relation_pieces: vec!["customer:".into(), ":orders".into()],
            row_pieces: vec!["order:".into(), String::new()],
        };
        let spec = Includes {
            id: Some("42".into()),
            reads: vec![read],
        };
        let value: Value = serde_json::from_str(&spec.spec_json()).unwrap();
        assert_eq!(
            value,
            serde_json::json!({"id": "42", "includes": [
                {"limit": 3, "key": ["customer:", ":orders"], "rows": ["order:", ""]}
            ]})
        );
    }

    #[test]
    fn the_description_names_field_limit_and_relation() {
        assert_eq!(describe(&[]), "");
        let text = describe(&[recent_orders()]);
        assert!(
            text.starts_with(" The answer also holds `recent_orders`: up to 3 newest `orders` rows of relation `customer_orders`"),
            "{text}"
        );
    }
}
