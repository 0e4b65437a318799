//! `filters:` and `range:` of a relation lookup, and the filtered relations they make the
//! sink maintain.
//!
//! A filter is an optional equality parameter on a stored field; a range is a pair of
//! optional RFC 3339 bounds on the relation's `order_by`. A call with filters reads the
//! relation filtered by exactly the given fields, which the sink keeps as one more relation
//! per non-empty subset of a lookup's filters ([`derived_relations`]), so every filtered read
//! is as bounded as an unfiltered one.

use std::collections::HashMap;

use marked_yaml::Span;

use super::{is_name, list, pos, Validator};
use crate::layout;
use crate::model::{Lookup, LookupFilter, RangeParams, Relation};
use crate::raw::RawLookup;
use crate::template::KeyTemplate;

/// At most this many filters per lookup: the sink keeps one relation per non-empty subset
/// (2^n - 1 sorted sets per parent and value combination).
pub(super) const MAX_FILTERS: usize = 3;

impl Validator<'_> {
    /// Checks `filters` and `range` of `l` against its relation `relation` (`None`: not a
    /// relation lookup or an unknown one, which `lookup` reports), the selected fields
    /// (`None`: `fields: all`) and the lookup's other parameter names.
    pub(super) fn relation_filters(
        &mut self,
        l: &RawLookup,
        relation: Option<&Relation>,
        selected: Option<&[&str]>,
    ) -> (Vec<LookupFilter>, Option<RangeParams>) {
        // `by` and `limit` names: their own clashes are reported by `lookup`.
        let mut params: HashMap<&str, &Span> = HashMap::new();
        for p in
            l.by.iter()
                .map(|p| &p.param)
                .chain(l.limit.as_ref().map(|x| &x.param))
        {
            params.entry(p.as_str()).or_insert(p.span());
        }
        let params = &mut params;
        let mut filters = Vec::new();
        let mut fields: HashMap<&str, &Span> = HashMap::new();
        for f in &l.filters {
            if l.relation.is_none() {
                self.error(
                    f.param.span(),
                    format!("filter `{}` in a lookup without `relation` (expected `filters` only on relation lookups)", *f.param),
                );
            }
            self.new_param(&f.param, params);
            if let Some(sel) = selected {
                if !sel.contains(&f.field.as_str()) {
                    self.error(
                        f.field.span(),
                        format!("filter `{}` names field `{}`, which `fields` does not select (expected one of {})", *f.param, *f.field, list(sel)),
                    );
                }
            }
            if let Some(first) = fields.insert(&f.field, f.field.span()) {
                self.error(
                    f.field.span(),
                    format!(
                        "field `{}` is filtered twice (first at {}; expected one filter per field)",
                        *f.field,
                        pos(first)
                    ),
                );
            }
            if let Some(rel) = relation {
                if rel.key.fields().any(|x| x == *f.field) {
                    self.error(
                        f.field.span(),
                        format!("filter `{}` names field `{}`, which is already in relation key `{}` (expected another field)", *f.param, *f.field, rel.key),
                    );
                }
            }
            if f.description.trim().is_empty() {
                self.error(
                    f.description.span(),
                    "empty parameter description (expected a sentence for the model)".to_owned(),
                );
            }
            filters.push(LookupFilter {
                param: f.param.to_string(),
                field: f.field.to_string(),
                description: f.description.to_string(),
            });
        }
        if let Some(extra) = l.filters.get(MAX_FILTERS) {
            self.error(
                extra.param.span(),
                format!("more than {MAX_FILTERS} filters (expected at most {MAX_FILTERS}: the sink keeps a relation per combination)"),
            );
        }
        let range = l.range.as_ref().map(|r| {
            if l.relation.is_none() {
                self.error(
                    r.since.span(),
                    "`range` in a lookup without `relation` (expected `range` only on relation lookups)".to_owned(),
                );
            }
            self.new_param(&r.since, params);
            self.new_param(&r.until, params);
            RangeParams {
                since: r.since.to_string(),
                until: r.until.to_string(),
            }
        });
        (filters, range)
    }

    /// Checks a parameter name: valid and not already used by the lookup.
    fn new_param<'r>(
        &mut self,
        param: &'r marked_yaml::Spanned<String>,
        params: &mut HashMap<&'r str, &'r Span>,
    ) {
        if !(is_name(param, b"-") && param.len() <= 64) {
            self.error(
                param.span(),
                format!(
                    "invalid parameter name `{}` (expected 1-64 letters, digits, `_` or `-`)",
                    **param
                ),
            );
        }
        if let Some(first) = params.insert(param.as_str(), param.span()) {
            self.error(
                param.span(),
                format!(
                    "duplicate parameter `{}` (first at {}; expected unique parameter names)",
                    **param,
                    pos(first)
                ),
            );
        }
    }
}

/// The filtered relations the lookups' filters need, to be kept by the sink with the declared
/// ones: per lookup and non-empty subset of its filters (declaration order), the relation's
/// key followed by the filtered fields ([`layout::filtered_relation_key`]). Lookups sharing a
/// relation and subset share the relation.
pub(super) fn derived_relations(relations: &[Relation], lookups: &[Lookup]) -> Vec<Relation> {
    let mut derived: Vec<Relation> = Vec::new();
    for l in lookups {
        let Some(rel) = l
            .relation
            .as_ref()
            .and_then(|r| relations.iter().find(|x| &x.name == r))
        else {
            continue;
        };
        for subset in 1..(1u32 << l.filters.len()) {
            let fields: Vec<&str> = l
                .filters
                .iter()
                .enumerate()
                .filter(|(i, _)| subset & (1 << i) != 0)
                .map(|(_, f)| f.field.as_str())
                .collect();
            let name = layout::filtered_relation_name(&rel.name, &fields);
            if derived.iter().any(|d| d.name == name) {
                continue;
            }
            let source = layout::filtered_relation_key(&rel.key.source, &fields);
            // The relation's template was valid and the fields are names: so is this one.
            if let Ok(key) = KeyTemplate::parse(&source) {
                derived.push(Relation {
                    name,
                    key,
                    order_by: rel.order_by.clone(),
                });
            }
        }
    }
    derived
}

#[cfg(test)]
mod tests {
    use crate::load::{load_config_str, ConnectionOverrides};
    use crate::model::Config;

    const DEFAULT: &str = include_str!("../../../../connectors.yaml");

    fn load(yaml: &str) -> Result<Config, String> {
        load_config_str(yaml, "connectors.yaml", &ConnectionOverrides::default())
            .map_err(|e| e.to_string())
    }

    /// The default file with the orders lookup's `filters`/`range` lines replaced.
    fn edited(from: &str, to: &str) -> String {
        assert!(DEFAULT.contains(from), "{from}");
        DEFAULT.replace(from, to)
    }

    const FILTER: &str =
        "          - { param: status, field: status, description: Only orders with this status }\n";

    #[test]
    fn the_default_file_declares_a_status_filtered_relation() {
        let config = load(DEFAULT).unwrap();
        let orders = &config.mappings[1];
        let (_, lookup) = config.lookup("get_customer_orders").unwrap();
        assert_eq!(lookup.filters[0].param, "status");
        assert_eq!(lookup.filters[0].field, "status");
        let range = lookup.range.as_ref().unwrap();
        assert_eq!(
            (range.since.as_str(), range.until.as_str()),
            ("created_after", "created_before")
        );
        let derived = orders.relation("customer_orders.status").unwrap();
        assert_eq!(
            derived.key.source,
            "customer:{customer_id}:orders:status:{status}"
        );
        assert_eq!(derived.order_by, "created_at");
        assert_eq!(orders.relations.len(), 2);
    }

    #[test]
    fn two_filters_make_three_relations() {
        let yaml = edited(
            FILTER,
            &format!(
                "{FILTER}          - {{ param: total, field: total_cents, description: Total }}\n"
            ),
        );
        let config = load(&yaml).unwrap();
        let names: Vec<&str> = config.mappings[1]
            .relations
            .iter()
            .map(|r| r.name.as_str())
            .collect();
        assert_eq!(
            names,
            [
                "customer_orders",
                "customer_orders.status",
                "customer_orders.total_cents",
                "customer_orders.status.total_cents"
            ]
        );
    }

    #[test]
    fn filters_and_ranges_are_checked() {
        let dup_field = edited(
            FILTER,
            &format!("{FILTER}          - {{ param: state, field: status, description: Again }}\n"),
        );
        let err = load(&dup_field).unwrap_err();
        assert!(
            err.contains("field `status` is filtered twice (first at"),
            "{err}"
        );
        assert!(err.starts_with("connectors.yaml:"), "{err}");

        let clash = edited("{ since: created_after,", "{ since: limit,");
        let err = load(&clash).unwrap_err();
        assert!(err.contains("duplicate parameter `limit`"), "{err}");

        let clash = edited("param: status, field", "param: customer_id, field");
        assert!(load(&clash)
            .unwrap_err()
            .contains("duplicate parameter `customer_id`"));

        let parent = edited("field: status,", "field: customer_id,");
        let err = load(&parent).unwrap_err();
        assert!(err.contains("which is already in relation key"), "{err}");

        // A filter or range on a row lookup.
        let on_row = edited(
            "            description: Order ID\n      - tool: get_customer_orders",
            "            description: Order ID\n        range: { since: a, until: b }\n        filters:\n          - { param: s, field: status, description: S }\n      - tool: get_customer_orders",
        );
        let err = load(&on_row).unwrap_err();
        assert!(
            err.contains("filter `s` in a lookup without `relation`"),
            "{err}"
        );
        assert!(
            err.contains("`range` in a lookup without `relation`"),
            "{err}"
        );

        let unknown = edited(
            "{ since: created_after, until: created_before }",
            "{ since: a, upto: b }",
        );
        assert!(load(&unknown).unwrap_err().contains("unknown key `upto`"));
    }

    #[test]
    fn a_filter_on_an_unselected_field_is_refused_with_its_position() {
        let yaml = edited(
            "    key: \"order:{id}\"\n    fields: all",
            "    key: \"order:{id}\"\n    fields: [id, customer_id, created_at]",
        );
        let err = load(&yaml).unwrap_err();
        assert!(
            err.contains("filter `status` names field `status`, which `fields` does not select"),
            "{err}"
        );
        let line = DEFAULT
            .lines()
            .position(|l| l.contains("param: status, field: status"))
            .unwrap()
            + 1;
        assert!(err.contains(&format!("connectors.yaml:{line}:")), "{err}");
    }
}
