//! Aggregates (`aggregates:` of a mapping) as the owning writer keeps them, step by step as
//! `aggregate.lua` does: a change takes back what the row's stored values contributed to
//! each parent's figures and adds what its new values contribute (one delta per field), and
//! the new figures are written where they differ; a parent whose count drops to 0 loses its
//! hash, a group whose count drops to 0 loses its fields. The figures live in
//! [`OwnedState`] next to the rows (the writer alone writes them), so deciding reads no
//! Redis; a loaded state counts them from the loaded rows ([`OwnedState::count_aggregates`]).

use mapping::layout::aggregate;

use super::decimal;
use super::emit::Writes;
use super::model::{render, Model};
use super::state::{Figures, OwnedState, Undo};
use super::HashMap;

/// What a change (or a truncate) adds to each parent's fields, in first-touched order.
#[derive(Default)]
pub(super) struct Deltas {
    keys: Vec<KeyDelta>,
    /// Parent -> its number in `keys`.
    index: HashMap<String, usize>,
}

struct KeyDelta {
    parent: String,
    /// Field, delta, and for a group sum its group's count field.
    fields: Vec<(String, String, Option<String>)>,
}

/// The decided effect on one parent: its figures from now on (`None`: the hash is deleted)
/// and the fields to set and remove.
pub(super) struct Planned {
    parent: String,
    figures: Option<Figures>,
    sets: Vec<(String, String)>,
    removed: Vec<String>,
}

impl Deltas {
    /// The script's `agg_collect`: adds (or with `take_back` subtracts) what a row with
    /// template values `values` contributes to every aggregate of `model`. A NULL summed
    /// value counts as 0, so a sum field exists exactly while its scope counts a row.
    pub(super) fn collect(
        &mut self,
        model: &Model,
        values: &[Option<String>],
        take_back: bool,
    ) -> Result<(), String> {
        for a in &model.aggregates {
            let Some(parent) = render(&a.parent, values) else {
                continue;
            };
            let key = self.key(parent);
            key.add(aggregate::COUNT, "1", take_back, None)?;
            let group = a.group.and_then(|g| values.get(g)?.as_deref());
            let group_count = group.map(aggregate::group_count_field);
            if let Some(gc) = &group_count {
                key.add(gc, "1", take_back, None)?;
            }
            for (f, name) in &a.sums {
                let v = values.get(*f).and_then(Option::as_deref).unwrap_or("0");
                key.add(&aggregate::sum_field(name), v, take_back, None)?;
                if let Some(g) = group {
                    let field = aggregate::group_sum_field(name, g);
                    key.add(&field, v, take_back, group_count.as_deref())?;
                }
            }
        }
        Ok(())
    }

    fn key(&mut self, parent: String) -> &mut KeyDelta {
        let n = match self.index.get(&parent) {
            Some(n) => *n,
            None => {
                self.index.insert(parent.clone(), self.keys.len());
                self.keys.push(KeyDelta {
                    parent,
                    fields: Vec::new(),
                });
                self.keys.len() - 1
            }
        };
        &mut self.keys[n]
    }
}

impl KeyDelta {
    fn add(
        &mut self,
        field: &str,
        value: &str,
        take_back: bool,
        group: Option<&str>,
    ) -> Result<(), String> {
        let slot = match self.fields.iter().position(|(f, _, _)| f == field) {
            Some(i) => i,
            None => {
                self.fields.push((field.to_owned(), "0".to_owned(), None));
                self.fields.len() - 1
            }
        };
        let (_, by, group_of) = &mut self.fields[slot];
        *by = decimal::add(by, value, take_back)?;
        if let Some(g) = group {
            *group_of = Some(g.to_owned());
        }
        Ok(())
    }
}

impl OwnedState {
    /// The script's `agg_plan` against the figures held: the new figures of every parent in
    /// `deltas` and the writes that make Redis hold them. Reads only.
    pub(super) fn plan_aggregates(&self, deltas: Deltas) -> Result<Vec<Planned>, String> {
        let mut out = Vec::with_capacity(deltas.keys.len());
        for KeyDelta { parent, fields } in deltas.keys {
            let cur = self.aggregates.get(&parent);
            let current = |field: &str| {
                cur.and_then(|c| c.iter().find(|(f, _)| f == field))
                    .map(|(_, v)| v.as_str())
            };
            let mut new = Vec::with_capacity(fields.len());
            for (field, by, _) in &fields {
                new.push(decimal::add(current(field).unwrap_or("0"), by, false)?);
            }
            let new_of = |field: &str| {
                fields
                    .iter()
                    .position(|(f, _, _)| f == field)
                    .map(|i| new[i].as_str())
            };
            if new_of(aggregate::COUNT) == Some("0") {
                out.push(Planned {
                    parent,
                    figures: None,
                    sets: Vec::new(),
                    removed: Vec::new(),
                });
                continue;
            }
            let mut figures = cur.cloned().unwrap_or_default();
            let (mut sets, mut removed) = (Vec::new(), Vec::new());
            let group_prefix = aggregate::group_count_field("");
            for ((field, _, group_of), value) in fields.iter().zip(&new) {
                let scope = group_of.as_deref().unwrap_or(field);
                let emptied = scope.starts_with(&group_prefix) && new_of(scope) == Some("0");
                if emptied {
                    if current(field).is_some() {
                        removed.push(field.clone());
                        figures.retain(|(f, _)| f != field);
                    }
                } else if current(field) != Some(value.as_str()) {
                    sets.push((field.clone(), value.clone()));
                    match figures.iter_mut().find(|(f, _)| f == field) {
                        Some((_, v)) => v.clone_from(value),
                        None => figures.push((field.clone(), value.clone())),
                    }
                }
            }
            out.push(Planned {
                parent,
                figures: Some(figures),
                sets,
                removed,
            });
        }
        Ok(out)
    }

    /// Writes what [`OwnedState::plan_aggregates`] decided and holds the new figures.
    pub(super) fn apply_aggregates(
        &mut self,
        writes: &mut Writes<'_>,
        undo: &mut Vec<Undo>,
        planned: Vec<Planned>,
    ) {
        for p in planned {
            match &p.figures {
                None => writes.delete_row(&p.parent),
                Some(_) => {
                    for (field, value) in &p.sets {
                        writes.write_field(&p.parent, field, Some(value));
                    }
                    for field in &p.removed {
                        writes.write_field(&p.parent, field, None);
                    }
                }
            }
            self.set_aggregate(undo, &p.parent, p.figures);
        }
    }

    /// Counts the figures of every aggregate from the rows held (a state loaded from Redis,
    /// where the script or an owning writer kept the hashes equal to what the rows add up to).
    pub(super) fn count_aggregates(&mut self) -> Result<(), String> {
        for m in 0..self.models.len() {
            if self.models[m].aggregates.is_empty() {
                continue;
            }
            let mut deltas = Deltas::default();
            for (key, row) in self.rows[m].iter() {
                deltas
                    .collect(&self.models[m], &row.values, false)
                    .map_err(|e| format!("row {key}: {e}"))?;
            }
            let planned = self.plan_aggregates(deltas)?;
            self.apply_aggregates(&mut Writes::default(), &mut Vec::new(), planned);
        }
        Ok(())
    }
}
