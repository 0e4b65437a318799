//! What the change script knows about a mapping, for deciding changes in the sink: template
//! fields, row key fields, and the pre-split index, relation and aggregate templates.

use mapping::{layout, Mapping, TemplatePart};

use crate::apply::script::template_fields;

/// One piece of a template, its placeholders as template-field numbers.
#[derive(Debug, Clone)]
pub(super) enum Part {
    Literal(String),
    Field(usize),
}

/// Renders `parts` from `values`; `None` when a placeholder's value is absent (no key).
pub(super) fn render(parts: &[Part], values: &[Option<String>]) -> Option<String> {
    let mut out = String::new();
    for part in parts {
        match part {
            Part::Literal(l) => out.push_str(l),
            Part::Field(f) => out.push_str(values.get(*f)?.as_deref()?),
        }
    }
    Some(out)
}

/// What the script knows about one mapping (`MAPPINGS[m]` in `change.lua`).
#[derive(Debug, Clone)]
pub(super) struct Model {
    pub(super) rows_key: String,
    pub(super) fresh_key: String,
    /// Template fields (stored names), as the script numbers them.
    pub(super) fields: Vec<String>,
    /// The row key template (its fields are always template fields).
    pub(super) key: Vec<Part>,
    pub(super) key_fields: Vec<usize>,
    /// Per index: its bookkeeping hash and template.
    pub(super) indexes: Vec<(String, Vec<Part>)>,
    /// Per relation: template and `order_by` field.
    pub(super) relations: Vec<(Vec<Part>, String)>,
    /// Per aggregate: what the script's `M.aggregates` holds.
    pub(super) aggregates: Vec<AggregateModel>,
    /// Per search: its sorted set and its members hash (the script's `M.searches`).
    pub(super) searches: Vec<SearchModel>,
}

/// Where one search's members live (`M.searches[i]` in `change.lua`).
#[derive(Debug, Clone)]
pub(super) struct SearchModel {
    /// `sink:search:{mapping}:{search}`.
    pub(super) zset: String,
    /// `sink:search:{mapping}:{search}:members`.
    pub(super) members: String,
}

/// What the script knows about one aggregate (`M.aggregates[i]` in `change.lua`).
#[derive(Debug, Clone)]
pub(super) struct AggregateModel {
    /// The parent key template.
    pub(super) parent: Vec<Part>,
    /// Per summed field: its template-field number and stored name.
    pub(super) sums: Vec<(usize, String)>,
    /// The `group_by` field's template-field number.
    pub(super) group: Option<usize>,
}

impl Model {
    pub(super) fn new(m: &Mapping) -> Model {
        let fields = template_fields(m);
        let number = |f: &str| {
            fields
                .iter()
                .position(|known| known == f)
                .unwrap_or(usize::MAX)
        };
        let parts = |t: &mapping::KeyTemplate| -> Vec<Part> {
            t.parts
                .iter()
                .map(|p| match p {
                    TemplatePart::Literal(l) => Part::Literal(l.clone()),
                    TemplatePart::Field(f) => Part::Field(number(f)),
                })
                .collect()
        };
        Model {
            rows_key: layout::rows_key(&m.name),
            fresh_key: layout::freshness_key(&m.name),
            key: parts(&m.key),
            key_fields: m.key.fields().map(number).collect(),
            indexes: m
                .indexes
                .iter()
                .map(|i| (layout::index_key(&m.name, &i.name), parts(&i.key)))
                .collect(),
            relations: m
                .relations
                .iter()
                .map(|r| (parts(&r.key), r.order_by.clone()))
                .collect(),
            aggregates: m
                .aggregates
                .iter()
                .map(|a| AggregateModel {
                    parent: parts(&a.key),
                    sums: a.sum.iter().map(|f| (number(f), f.clone())).collect(),
                    group: a.group_by.as_deref().map(number),
                })
                .collect(),
            searches: m
                .search
                .iter()
                .map(|s| SearchModel {
                    zset: layout::search_key(&m.name, &s.name),
                    members: layout::search_members_key(&m.name, &s.name),
                })
                .collect(),
            fields,
        }
    }

    /// The primary key text: the row key's field values joined by `:`.
    pub(super) fn primary_key(&self, values: &[Option<String>]) -> Option<String> {
        let mut parts = Vec::with_capacity(self.key_fields.len());
        for &f in &self.key_fields {
            parts.push(values.get(f)?.as_deref()?);
        }
        Some(parts.join(":"))
    }
}
