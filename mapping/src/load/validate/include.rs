//! `include:` of a row lookup: related rows of another mapping's relation, returned inside
//! the found row.
//!
//! Checked across mappings, after each mapping is valid by itself: the relation must exist
//! in exactly one mapping, its key must have one placeholder (filled with the found row's
//! primary key), the lookup must return one row, and `as` must name a new field of that row.

use std::collections::HashMap;

use marked_yaml::Span;

use super::{is_name, list, pos, Validator};
use crate::model::{FieldSelection, Include, Mapping};
use crate::raw::{RawConfig, RawLookup, RawMapping};
use crate::template::KeyTemplate;

/// At most this many included rows per include: they travel in every answer of the tool.
pub(super) const MAX_INCLUDE_LIMIT: u32 = 100;

impl Validator<'_> {
    /// Checks the `include:` entries of every lookup and fills them into the valid mappings
    /// (`mappings[i]` is `raw.mappings[i]`'s, `None` when it had errors).
    pub(super) fn includes(&mut self, raw: &RawConfig, mappings: &mut [Option<Mapping>]) {
        for (i, m) in raw.mappings.iter().enumerate() {
            for l in &m.lookups {
                let includes = self.lookup_includes(raw, m, l, mappings[i].as_ref());
                let lookup = (mappings[i].as_mut())
                    .and_then(|mapping| mapping.lookups.iter_mut().find(|x| x.tool == *l.tool));
                if let Some(lookup) = lookup {
                    lookup.include = includes;
                }
            }
        }
    }

    fn lookup_includes(
        &mut self,
        raw: &RawConfig,
        m: &RawMapping,
        l: &RawLookup,
        mapping: Option<&Mapping>,
    ) -> Vec<Include> {
        let selected: Vec<&str> = match mapping.map(|x| &x.fields) {
            Some(FieldSelection::List(fields)) => fields.iter().map(|f| f.to.as_str()).collect(),
            _ => Vec::new(),
        };
        let mut names: HashMap<&str, &Span> = HashMap::new();
        let mut out = Vec::new();
        for inc in &l.include {
            if l.relation.is_some() || l.aggregate.is_some() {
                self.error(
                    inc.relation.span(),
                    format!("include `{}` in a lookup that returns no single row (expected `include` only on row lookups, without `relation` or `aggregate`)", *inc.as_field),
                );
            }
            let declaring: Vec<&RawMapping> = (raw.mappings.iter())
                .filter(|x| x.relations.iter().any(|r| *r.name == *inc.relation))
                .collect();
            let mut child = None;
            match declaring.as_slice() {
                [] => {
                    let known = raw.mappings.iter().flat_map(|x| {
                        x.relations.iter().map(|r| format!("{}.{}", *x.name, *r.name))
                    });
                    self.error(
                        inc.relation.span(),
                        format!("unknown relation `{}` (expected a relation of a mapping: one of {})", *inc.relation, list(known)),
                    );
                }
                [one] => child = Some(*one),
                [first, ..] => self.error(
                    inc.relation.span(),
                    format!("relation `{}` is declared by several mappings (`{}` and others; expected a relation name unique across mappings)", *inc.relation, *first.name),
                ),
            }
            if let Some(child) = child {
                let relation = child.relations.iter().find(|r| *r.name == *inc.relation);
                let key = relation.and_then(|r| KeyTemplate::parse(&r.key).ok());
                // An invalid template is reported with its mapping.
                if let Some(key) = key.filter(|k| k.single_field().is_none()) {
                    self.error(
                        inc.relation.span(),
                        format!("relation `{}` has key `{}`, which does not have exactly one placeholder (expected one, filled with the found {} row's primary key)", *inc.relation, key.source, *m.name),
                    );
                }
            }
            if !(is_name(&inc.as_field, b"-") && inc.as_field.len() <= 64) {
                self.error(
                    inc.as_field.span(),
                    format!(
                        "invalid `as` name `{}` (expected 1-64 letters, digits, `_` or `-`)",
                        *inc.as_field
                    ),
                );
            }
            if selected.contains(&inc.as_field.as_str()) {
                self.error(
                    inc.as_field.span(),
                    format!("include `as: {}` names a field `fields` already selects (expected a new field name, not one of {})", *inc.as_field, list(&selected)),
                );
            }
            if let Some(first) = names.insert(&inc.as_field, inc.as_field.span()) {
                self.error(
                    inc.as_field.span(),
                    format!(
                        "duplicate include `as: {}` (first at {}; expected unique names)",
                        *inc.as_field,
                        pos(first)
                    ),
                );
            }
            if *inc.limit == 0 || *inc.limit > MAX_INCLUDE_LIMIT {
                self.error(
                    inc.limit.span(),
                    format!(
                        "include limit is {} (expected 1 to {MAX_INCLUDE_LIMIT})",
                        *inc.limit
                    ),
                );
            }
            if let Some(child) = child {
                out.push(Include {
                    relation: inc.relation.to_string(),
                    mapping: child.name.to_string(),
                    as_field: inc.as_field.to_string(),
                    limit: *inc.limit,
                });
            }
        }
        out
    }
}
