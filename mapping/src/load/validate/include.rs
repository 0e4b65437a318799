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
            if l.relation.is_some() || l.aggregate.is_some() || l.search.is_some() {
                self.error(
                    inc.relation.span(),
                    format!("include `{}` in a lookup that returns no single row (expected `include` only on row lookups, without `relation`, `aggregate` or `search`)", *inc.as_field),
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

#[cfg(test)]
mod tests {
    use crate::load::{load_config_str, ConnectionOverrides};
    use crate::model::{Config, Include};

    const DEFAULT: &str = include_str!("../../../../connectors.yaml");
    const INCLUDE: &str =
        "          - { relation: customer_orders, as: recent_orders, limit: 3 }\n";

    fn load(yaml: &str) -> Result<Config, String> {
        load_config_str(yaml, "connectors.yaml", &ConnectionOverrides::default())
            .map_err(|e| e.to_string())
    }

    fn edited(from: &str, to: &str) -> String {
        assert_eq!(DEFAULT.matches(from).count(), 1, "{from}");
        DEFAULT.replace(from, to)
    }

    /// The default file's `get_customer` include replaced by `to`; the error text.
    fn refused(to: &str) -> String {
        load(&edited(INCLUDE, to)).unwrap_err()
    }

    /// 1-based line of the first line of the default file containing `text`.
    fn line_of(yaml: &str, text: &str) -> usize {
        yaml.lines().position(|l| l.contains(text)).unwrap() + 1
    }

    #[test]
    fn the_default_file_includes_recent_orders() {
        let config = load(DEFAULT).unwrap();
        let (_, lookup) = config.lookup("get_customer").unwrap();
        assert_eq!(
            lookup.include,
            [Include {
                relation: "customer_orders".into(),
                mapping: "orders".into(),
                as_field: "recent_orders".into(),
                limit: 3,
            }]
        );
        let (_, orders) = config.lookup("get_customer_orders").unwrap();
        assert!(orders.include.is_empty());
    }

    #[test]
    fn an_unknown_relation_is_refused_with_its_position() {
        let yaml = edited(
            INCLUDE,
            "          - { relation: customer_invoices, as: recent_orders, limit: 3 }\n",
        );
        let err = load(&yaml).unwrap_err();
        let line = line_of(&yaml, "relation: customer_invoices");
        assert!(
            err.contains(&format!("connectors.yaml:{line}:"))
                && err.contains("unknown relation `customer_invoices` (expected a relation of a mapping: one of `orders.customer_orders`"),
            "{err}"
        );
    }

    #[test]
    fn limits_and_names_are_checked() {
        let err =
            refused("          - { relation: customer_orders, as: recent_orders, limit: 0 }\n");
        assert!(
            err.contains("include limit is 0 (expected 1 to 100)"),
            "{err}"
        );
        let err =
            refused("          - { relation: customer_orders, as: recent_orders, limit: 101 }\n");
        assert!(
            err.contains("include limit is 101 (expected 1 to 100)"),
            "{err}"
        );
        let err = refused(&format!(
            "{INCLUDE}          - {{ relation: customer_orders, as: recent_orders, limit: 5 }}\n"
        ));
        assert!(
            err.contains("duplicate include `as: recent_orders` (first at"),
            "{err}"
        );
        let err = refused("          - { relation: customer_orders, as: \"a b\", limit: 3 }\n");
        assert!(err.contains("invalid `as` name `a b`"), "{err}");
        let err =
            refused("          - { relation: customer_orders, as: x, limit: 3, order: asc }\n");
        assert!(err.contains("unknown key `order`"), "{err}");
    }

    #[test]
    fn as_must_not_name_a_selected_field() {
        let yaml = edited(
            "    key: \"customer:{id}\"\n    # `all`",
            "    key: \"customer:{id}\"\n    fields: [id, email, name, recent_orders]\n    # `all`",
        )
        .replacen("    fields: all\n", "", 1);
        let err = load(&yaml).unwrap_err();
        assert!(
            err.contains("include `as: recent_orders` names a field `fields` already selects"),
            "{err}"
        );
        assert!(
            err.contains(&format!(
                "connectors.yaml:{}:",
                line_of(&yaml, "as: recent_orders")
            )),
            "{err}"
        );
    }

    #[test]
    fn only_row_lookups_include() {
        let yaml = edited(
            "        relation: customer_orders\n        by:",
            &format!(
                "        relation: customer_orders\n        include:\n{}        by:",
                INCLUDE.replace("recent_orders", "more")
            ),
        );
        let err = load(&yaml).unwrap_err();
        assert!(
            err.contains("include `more` in a lookup that returns no single row (expected `include` only on row lookups"),
            "{err}"
        );
    }

    #[test]
    fn a_relation_key_with_two_placeholders_is_refused() {
        let yaml = edited(
            "        key: \"customer:{customer_id}:orders\"",
            "        key: \"customer:{customer_id}:orders:{status}\"",
        );
        let err = load(&yaml).unwrap_err();
        assert!(
            err.contains("relation `customer_orders` has key `customer:{customer_id}:orders:{status}`, which does not have exactly one placeholder"),
            "{err}"
        );
    }
}
