//! Phase 2 for prefix searches: a mapping's `search:` entries and the lookups that name one.
//!
//! Rules: a search name is a valid name, unique within the mapping; its field is stored (one of
//! `fields` when the mapping selects fields); a search lookup names a search of its own mapping,
//! has no `relation`, exactly one `by` parameter, of type `string` and without `index` (the
//! prefix), and a `limit` (a prefix can match every row, so the answer must be bounded); it
//! has no `aggregate` (`filters`, `range` and `include` are refused by their own rules).

use std::collections::HashMap;

use marked_yaml::Span;

use super::{is_name, list, Step, Validator};
use crate::load::node_mark;
use crate::model::Search;
use crate::raw::{RawLookup, RawMapping};

impl Validator<'_> {
    /// `search:` of mapping `m`; `selected` holds the stored field names when `fields` lists them.
    pub(super) fn searches(&mut self, m: &RawMapping, selected: Option<&[&str]>) -> Vec<Search> {
        let mut names: HashMap<&str, &Span> = HashMap::new();
        let mut out = Vec::new();
        for s in &m.search {
            self.name_unique_in_mapping(&s.name, "search", &mut names);
            if !is_name(&s.field, b"") {
                self.error(
                    s.field.span(),
                    format!(
                        "invalid field name `{}` in search `{}` (expected letters, digits or `_`)",
                        *s.field, *s.name
                    ),
                );
            } else if let Some(sel) = selected {
                if !sel.contains(&s.field.as_str()) {
                    self.error(
                        s.field.span(),
                        format!(
                            "search `{}` names field `{}`, which `fields` does not select (expected one of {})",
                            *s.name,
                            *s.field,
                            list(sel)
                        ),
                    );
                }
            }
            out.push(Search {
                name: s.name.to_string(),
                field: s.field.to_string(),
            });
        }
        out
    }

    /// The search-specific rules of lookup `j` of mapping `i` (nothing when it names no search).
    pub(super) fn search_lookup(&mut self, i: usize, j: usize, m: &RawMapping, l: &RawLookup) {
        let Some(search) = &l.search else { return };
        if !m.search.iter().any(|s| *s.name == **search) {
            let expected = if m.search.is_empty() {
                format!("a `search:` entry of mapping `{}`", *m.name)
            } else {
                format!("one of {}", list(m.search.iter().map(|s| s.name.as_str())))
            };
            self.error(
                search.span(),
                format!("unknown search `{}` (expected {expected})", **search),
            );
        }
        if let Some(relation) = &l.relation {
            self.error(
                relation.span(),
                "`relation` in a search lookup (expected either `search` or `relation`)".to_owned(),
            );
        }
        if let Some(aggregate) = &l.aggregate {
            self.error(
                aggregate.span(),
                "`aggregate` in a search lookup (expected either `search` or `aggregate`)"
                    .to_owned(),
            );
        }
        match l.by.as_slice() {
            // An empty `by` is reported by the lookup rules.
            [] => {}
            [p] => {
                if p.r#type.as_str() != "string" {
                    self.error(
                        p.r#type.span(),
                        format!(
                            "search parameter `{}` has type `{}` (expected `string`: the prefix)",
                            *p.param, *p.r#type
                        ),
                    );
                }
                if let Some(ix) = &p.index {
                    self.error(
                        ix.span(),
                        format!("parameter `{}` has an `index` in a search lookup (expected only the prefix parameter)", *p.param),
                    );
                }
            }
            [_, extra, ..] => self.error(
                extra.param.span(),
                format!(
                    "search lookup `{}` has more than one `by` parameter (expected exactly one, of type `string`: the prefix)",
                    *l.tool
                ),
            ),
        }
        if l.limit.is_none() {
            let mark = node_mark(
                self.root,
                &[
                    Step::Key("mappings"),
                    Step::Index(i),
                    Step::Key("lookups"),
                    Step::Index(j),
                ],
            );
            self.error_at(
                mark,
                format!("search lookup `{}` has no `limit` (expected `limit: {{ param, description, default, max }}`: a prefix can match every row)", *l.tool),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::load::{load_config_str, ConnectionOverrides};
    use crate::model::{Config, LimitParam, ParamType, Search};

    /// A customers mapping with a search and a search lookup; `edit` changes its text.
    fn yaml(edit: impl Fn(String) -> String) -> String {
        edit(
            r#"mappings:
  - name: customers
    topic: cdc.public.customers
    key: "customer:{id}"
    search:
      - { name: name_prefix, field: name }
    lookups:
      - tool: find_customers
        description: Find customers whose name starts with the given text
        search: name_prefix
        by: [{ param: name_prefix, type: string, description: Start of the name }]
        limit: { param: limit, description: Max customers, default: 10, max: 50 }
"#
            .to_owned(),
        )
    }

    fn load(yaml: &str) -> Result<Config, String> {
        load_config_str(yaml, "connectors.yaml", &ConnectionOverrides::default())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn search_and_search_lookup_load() {
        let config = load(&yaml(|y| y)).unwrap();
        let m = &config.mappings[0];
        assert_eq!(
            m.search,
            [Search {
                name: "name_prefix".into(),
                field: "name".into()
            }]
        );
        let (_, l) = config.lookup("find_customers").unwrap();
        assert_eq!(l.search.as_deref(), Some("name_prefix"));
        assert_eq!(l.relation, None);
        assert_eq!(l.by[0].r#type, ParamType::String);
        assert_eq!(
            l.limit,
            Some(LimitParam {
                param: "limit".into(),
                description: "Max customers".into(),
                default: 10,
                max: 50
            })
        );
    }

    #[test]
    fn search_entries_are_checked() {
        let cases: [(&str, &str, &str); 4] = [
            (
                "      - { name: name_prefix, field: name }\n",
                "      - { name: name_prefix, field: name }\n      - { name: name_prefix, field: email }\n",
                "connectors.yaml:7:17: duplicate search name `name_prefix` (first used at 6:17; expected unique names within the mapping)",
            ),
            (
                "field: name }",
                "field: \"na me\" }",
                "connectors.yaml:6:37: invalid field name `na me` in search `name_prefix` (expected letters, digits or `_`)",
            ),
            (
                "name: name_prefix, field",
                "name: \"a b\", field",
                "connectors.yaml:6:17: invalid search name `a b` (expected letters, digits, `_` or `-`)\nconnectors.yaml:10:17: unknown search `name_prefix` (expected one of `a b`)",
            ),
            (
                "    search:\n",
                "    fields: [id, email]\n    search:\n",
                "connectors.yaml:7:37: search `name_prefix` names field `name`, which `fields` does not select (expected one of `id`, `email`)",
            ),
        ];
        for (from, to, expected) in cases {
            let text = yaml(|y| y.replacen(from, to, 1));
            assert_eq!(load(&text).unwrap_err(), expected, "{text}");
        }
    }

    #[test]
    fn search_lookups_are_checked() {
        let cases: [(&str, &str, &str); 6] = [
            (
                "search: name_prefix\n",
                "search: name_start\n",
                "connectors.yaml:10:17: unknown search `name_start` (expected one of `name_prefix`)",
            ),
            (
                "type: string",
                "type: integer",
                "connectors.yaml:11:42: search parameter `name_prefix` has type `integer` (expected `string`: the prefix)",
            ),
            (
                "description: Start of the name }",
                "description: Start of the name, index: email }",
                "connectors.yaml:11:89: parameter `name_prefix` has an `index` in a search lookup (expected only the prefix parameter)",
            ),
            (
                "description: Start of the name }]",
                "description: Start of the name }, { param: email, type: string, description: Email }]",
                "connectors.yaml:11:93: search lookup `find_customers` has more than one `by` parameter (expected exactly one, of type `string`: the prefix)",
            ),
            (
                "        limit: { param: limit, description: Max customers, default: 10, max: 50 }\n",
                "",
                "connectors.yaml:8:13: search lookup `find_customers` has no `limit` (expected `limit: { param, description, default, max }`: a prefix can match every row)",
            ),
            (
                "        search: name_prefix\n",
                "        search: name_prefix\n        relation: orders\n",
                "connectors.yaml:11:19: `relation` in a search lookup (expected either `search` or `relation`)\nconnectors.yaml:11:19: unknown relation `orders` (expected one of none defined)",
            ),
        ];
        for (from, to, expected) in cases {
            let text = yaml(|y| y.replacen(from, to, 1));
            assert_eq!(load(&text).unwrap_err(), expected, "{text}");
        }
    }

    #[test]
    fn a_search_lookup_has_no_other_kind_of_read() {
        let cases = [
            (
                "        aggregate: stats\n",
                "`aggregate` in a search lookup",
            ),
            (
                "        filters: [{ param: s, field: name, description: S }]\n",
                "filter `s` in a lookup without `relation`",
            ),
            (
                "        range: { since: a, until: b }\n",
                "`range` in a lookup without `relation`",
            ),
            (
                "        include: [{ relation: r, as: x, limit: 1 }]\n",
                "include `x` in a lookup that returns no single row",
            ),
        ];
        for (line, expected) in cases {
            let text = yaml(|y| {
                y.replace(
                    "        search: name_prefix\n",
                    &format!("        search: name_prefix\n{line}"),
                )
            });
            let err = load(&text).unwrap_err();
            assert!(err.contains(expected), "{err}");
        }
    }

    #[test]
    fn a_search_lookup_needs_the_mappings_search() {
        let text = yaml(|y| {
            y.replace(
                "    search:\n      - { name: name_prefix, field: name }\n",
                "",
            )
        });
        assert_eq!(
            load(&text).unwrap_err(),
            "connectors.yaml:8:17: unknown search `name_prefix` (expected a `search:` entry of mapping `customers`)"
        );
    }
}
