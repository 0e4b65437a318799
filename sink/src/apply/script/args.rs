//! The `EVALSHA` call for a chunk of changes: ARGV as `change.lua` documents it. The static
//! per-mapping part lives in the generated script (`generate.rs`); per change only the
//! change's own data is sent.

use mapping::plan::{FieldWrite, Plan, RowUpsert};
use mapping::{layout, Mapping};

use crate::apply::{ApplyError, Fences, PlannedChange};

/// Arguments every change has before its upsert part (its length included).
const HEAD: usize = 8;

/// What the Rust side needs to know about one mapping to encode its changes.
#[derive(Debug, Clone)]
pub(crate) struct MappingArgs {
    /// The mapping's number in the script (1-based).
    number: String,
    /// The template fields (stored names) in script order.
    fields: Vec<String>,
    /// Per relation: the stored name of its `order_by` field.
    order_by: Vec<String>,
    /// How many searches (`search:`) the mapping has.
    searches: usize,
}

/// The upsert part of one change, before it is written out.
struct UpsertArgs<'a> {
    refs: Vec<i64>,
    scores: Vec<String>,
    searches: Vec<String>,
    sets: Vec<(&'a str, &'a str)>,
    removes: Vec<&'a str>,
}

impl UpsertArgs<'_> {
    fn len(&self) -> usize {
        self.refs.len()
            + self.scores.len()
            + self.searches.len()
            + 2
            + 2 * self.sets.len()
            + self.removes.len()
    }
}

impl MappingArgs {
    /// `index` is the mapping's position in `config.mappings`.
    pub(crate) fn new(index: usize, mapping: &Mapping) -> MappingArgs {
        MappingArgs {
            number: (index + 1).to_string(),
            fields: super::generate::template_fields(mapping),
            order_by: mapping
                .relations
                .iter()
                .map(|r| r.order_by.clone())
                .collect(),
            searches: mapping.search.len(),
        }
    }

    /// How many arguments `change` takes.
    pub(crate) fn arg_count(&self, change: &PlannedChange) -> usize {
        match &change.plan {
            Plan::Upsert(u) => {
                let (mut sets, mut removes) = (0, 0);
                for (_, w) in &u.fields {
                    match w {
                        FieldWrite::Set(_) => sets += 1,
                        FieldWrite::Remove => removes += 1,
                        FieldWrite::Keep => {}
                    }
                }
                HEAD + self.fields.len()
                    + self.order_by.len()
                    + self.searches
                    + 2
                    + 2 * sets
                    + removes
            }
            Plan::Delete(_) | Plan::Truncate { .. } => HEAD,
        }
    }

    /// Appends `change`'s arguments to `cmd`; `slot` is the number of its offsets field.
    pub(crate) fn push(
        &self,
        cmd: &mut redis::Cmd,
        slot: usize,
        change: &PlannedChange,
    ) -> Result<(), ApplyError> {
        let invalid = |reason: String| ApplyError::Invalid {
            topic: change.topic.clone(),
            partition: change.partition,
            offset: change.offset,
            reason,
        };
        if change.offset < 0 {
            return Err(invalid(format!("negative offset {}", change.offset)));
        }
        let (op, row, position) = match &change.plan {
            Plan::Upsert(u) => ("u", u.row_key.as_str(), u.position),
            Plan::Delete(d) => ("d", d.row_key.as_str(), d.position),
            Plan::Truncate { position } => ("t", "", *position),
        };
        if let Some(p) = position.filter(|p| *p < 0) {
            return Err(invalid(format!("negative source position {p}")));
        }
        let upsert = match &change.plan {
            Plan::Upsert(u) => Some(self.upsert_args(u)),
            _ => None,
        };
        let len = HEAD + upsert.as_ref().map_or(0, UpsertArgs::len);
        cmd.arg(len).arg(&self.number).arg(op).arg(row);
        match position {
            Some(p) => cmd.arg(p),
            None => cmd.arg(""),
        };
        match change.source_ts_ms {
            Some(ts) if ts >= 0 => cmd.arg(ts),
            _ => cmd.arg(""),
        };
        cmd.arg(slot).arg(change.offset);
        if let Some(u) = upsert {
            for r in u.refs {
                cmd.arg(r);
            }
            for s in u.scores {
                cmd.arg(s);
            }
            for s in u.searches {
                cmd.arg(s);
            }
            cmd.arg(u.sets.len());
            for (name, value) in u.sets {
                cmd.arg(name).arg(value);
            }
            cmd.arg(u.removes.len());
            for name in u.removes {
                cmd.arg(name);
            }
        }
        Ok(())
    }

    /// refs, scores, search members, set pairs, removed fields.
    fn upsert_args<'a>(&self, u: &'a RowUpsert) -> UpsertArgs<'a> {
        let mut refs = vec![0_i64; self.fields.len()];
        let mut sets: Vec<(&str, &str)> = Vec::with_capacity(u.fields.len());
        let mut removes: Vec<&str> = Vec::new();
        for (name, write) in &u.fields {
            let slot = self.fields.iter().position(|f| f == name);
            match write {
                FieldWrite::Set(v) => {
                    sets.push((name, v));
                    if let Some(s) = slot {
                        refs[s] = i64::try_from(sets.len()).unwrap_or(i64::MAX);
                    }
                }
                FieldWrite::Remove => {
                    removes.push(name);
                    if let Some(s) = slot {
                        refs[s] = -1;
                    }
                }
                FieldWrite::Keep => {}
            }
        }
        let scores = self
            .order_by
            .iter()
            .enumerate()
            .map(|(r, order_by)| {
                relation_score(u, r, order_by).map_or_else(String::new, format_score)
            })
            .collect();
        // 'k' keep the stored member, 'r' remove it, 's' + the new member.
        let searches = (0..self.searches)
            .map(|i| match u.search_members.get(i) {
                Some(FieldWrite::Set(member)) => format!("s{member}"),
                Some(FieldWrite::Remove) => "r".to_owned(),
                Some(FieldWrite::Keep) | None => "k".to_owned(),
            })
            .collect();
        UpsertArgs {
            refs,
            scores,
            searches,
            sets,
            removes,
        }
    }
}

/// The `EVALSHA` command applying `chunk` (mapping numbers index `mappings`); with `guard`,
/// refused unless each partition's marker is the one `guard` fences it by.
pub(crate) fn chunk_command(
    sha: &str,
    mappings: &[MappingArgs],
    chunk: &[PlannedChange],
    guard: Option<&Fences>,
) -> Result<redis::Cmd, ApplyError> {
    let mut slots: Vec<(&str, i32)> = Vec::new();
    let mut slot_of = Vec::with_capacity(chunk.len());
    for change in chunk {
        let key = (&*change.topic, change.partition);
        let slot = match slots.iter().position(|s| *s == key) {
            Some(s) => s,
            None => {
                slots.push(key);
                slots.len() - 1
            }
        };
        slot_of.push(slot + 1);
    }
    let mut cmd = redis::cmd("EVALSHA");
    cmd.arg(sha).arg(0).arg(slots.len());
    let fields: Vec<String> = slots
        .iter()
        .map(|(topic, partition)| layout::offsets_field(topic, *partition))
        .collect();
    cmd.arg(&fields);
    match guard {
        Some(fences) => {
            cmd.arg("1");
            for field in &fields {
                cmd.arg(fences.expected(field));
            }
        }
        None => {
            cmd.arg("");
        }
    }
    for (change, slot) in chunk.iter().zip(slot_of) {
        let args = mappings
            .get(change.mapping)
            .ok_or_else(|| ApplyError::Invalid {
                topic: change.topic.clone(),
                partition: change.partition,
                offset: change.offset,
                reason: format!(
                    "mapping number {} out of range ({} mappings)",
                    change.mapping,
                    mappings.len()
                ),
            })?;
        args.push(&mut cmd, slot, change)?;
    }
    Ok(cmd)
}

/// The score of relation `r` (ordered by stored field `order_by`) that upsert `u` gives its
/// member; `None`: keep the member's current score (the field was not sent: an unchanged
/// TOASTed value, or not in the row). NULL, NaN and non-numbers score 0.
pub(crate) fn relation_score(u: &RowUpsert, r: usize, order_by: &str) -> Option<f64> {
    match u.relation_scores.get(r).copied().flatten() {
        Some(x) if x.is_nan() => Some(0.0),
        Some(x) => Some(x),
        None => match u.fields.iter().find(|(n, _)| n == order_by) {
            None | Some((_, FieldWrite::Keep)) => None,
            Some(_) => Some(0.0),
        },
    }
}

/// A score as Redis parses it: plain decimal (`1795480593143715`), `inf`, `-inf`.
pub(crate) fn format_score(x: f64) -> String {
    if x.is_infinite() {
        return if x > 0.0 { "inf".into() } else { "-inf".into() };
    }
    format!("{x}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apply::script::generate::tests::mapping;

    fn texts(cmd: &redis::Cmd) -> Vec<String> {
        cmd.args_iter()
            .map(|a| match a {
                redis::Arg::Simple(b) => String::from_utf8(b.to_vec()).unwrap(),
                _ => "<cursor>".into(),
            })
            .collect()
    }

    fn upsert(offset: i64, partition: i32) -> PlannedChange {
        PlannedChange {
            mapping: 0,
            op: mapping::Op::Update,
            plan: Plan::Upsert(RowUpsert {
                row_key: "order:3".into(),
                position: Some(7),
                fields: vec![
                    ("id".into(), FieldWrite::Set("3".into())),
                    ("region".into(), FieldWrite::Remove),
                    ("note".into(), FieldWrite::Keep),
                    ("customer_id".into(), FieldWrite::Set("1".into())),
                ],
                relation_scores: vec![Some(1.5e15)],
                search_members: vec![],
            }),
            source_ts_ms: Some(99),
            topic: "cdc.orders".into(),
            partition,
            offset,
            record_time: None,
        }
    }

    fn delete(offset: i64, position: Option<i64>) -> PlannedChange {
        PlannedChange {
            mapping: 0,
            op: mapping::Op::Delete,
            plan: Plan::Delete(mapping::RowDelete {
                row_key: "order:3".into(),
                position,
            }),
            source_ts_ms: None,
            topic: "cdc.orders".into(),
            partition: 0,
            offset,
            record_time: None,
        }
    }

    #[test]
    fn chunk_args_layout() {
        let a = [MappingArgs::new(0, &mapping())];
        let chunk = [upsert(11, 2), delete(12, None), upsert(13, 2)];
        let fences = Fences::none().with("cdc.orders", 2, "r1:t2");
        let cmd = chunk_command("sha", &a, &chunk, Some(&fences)).unwrap();
        let upsert_part = [
            "1",
            "-1",
            "0",
            "2",                // refs: id, region, ref, customer_id
            "1500000000000000", // score
            "2",
            "id",
            "3",
            "customer_id",
            "1", // sets
            "1",
            "region", // removes
        ];
        let mut expected: Vec<&str> = vec![
            "EVALSHA",
            "sha",
            "0",
            "2",
            "cdc.orders/2",
            "cdc.orders/0", // offsets fields
            "1",            // marker guard
            "r1:t2",        // the marker of cdc.orders/2's assignment
            "",             // cdc.orders/0: read under no known assignment
            "20",
            "1",
            "u",
            "order:3",
            "7",
            "99",
            "1",
            "11",
        ];
        expected.extend(upsert_part);
        expected.extend(["8", "1", "d", "order:3", "", "", "2", "12"]);
        expected.extend(["20", "1", "u", "order:3", "7", "99", "1", "13"]);
        expected.extend(upsert_part);
        assert_eq!(texts(&cmd), expected);
        assert_eq!(a[0].arg_count(&chunk[0]), 20);
        assert_eq!(a[0].arg_count(&chunk[1]), 8);
    }

    #[test]
    fn negative_position_is_invalid() {
        let a = [MappingArgs::new(0, &mapping())];
        let err = chunk_command("sha", &a, &[upsert(1, 0), delete(2, Some(-1))], None).unwrap_err();
        assert_eq!(
            err.to_string(),
            "change at cdc.orders/0 offset 2: negative source position -1"
        );
        assert!(!err.is_retriable());
    }
}
