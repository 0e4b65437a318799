//! The `EVALSHA` call for one change: ARGV as `change.lua` documents it. The per-mapping
//! static part (template fields, index and relation templates) is encoded once, when the
//! [`Applier`](super::Applier) is built; per change only the row's data is added.

use mapping::plan::{FieldWrite, Plan, RowUpsert};
use mapping::{Mapping, TemplatePart};

use super::{ApplyError, PlannedChange};

/// What the script needs to know about one mapping, encoded once.
#[derive(Debug, Clone)]
pub(crate) struct MappingArgs {
    /// `mapping.name`.
    name: String,
    /// `ttl_seconds` as text, or empty.
    ttl: String,
    /// The template fields (stored names) in ARGV order.
    fields: Vec<String>,
    /// Per relation: the stored name of its `order_by` field.
    order_by: Vec<String>,
    /// ARGV from position 9 on: nf, fields, nk, key field numbers, indexes, relations.
    static_part: Vec<String>,
}

impl MappingArgs {
    pub(crate) fn new(mapping: &Mapping) -> MappingArgs {
        let mut fields: Vec<String> = Vec::new();
        let templates = std::iter::once(&mapping.key)
            .chain(mapping.indexes.iter().map(|i| &i.key))
            .chain(mapping.relations.iter().map(|r| &r.key));
        for template in templates {
            for f in template.fields() {
                if !fields.iter().any(|known| known == f) {
                    fields.push(f.to_owned());
                }
            }
        }
        let number = |f: &str| {
            fields
                .iter()
                .position(|known| known == f)
                .map_or(0, |p| p + 1)
        };

        let mut s = Vec::with_capacity(8 + 2 * fields.len());
        s.push(fields.len().to_string());
        s.extend(fields.iter().cloned());
        let key_fields: Vec<usize> = mapping.key.fields().map(number).collect();
        s.push(key_fields.len().to_string());
        s.extend(key_fields.iter().map(usize::to_string));
        s.push(mapping.indexes.len().to_string());
        for index in &mapping.indexes {
            s.push(index.name.clone());
            encode_template(&mut s, &index.key.parts, &number);
        }
        s.push(mapping.relations.len().to_string());
        for relation in &mapping.relations {
            encode_template(&mut s, &relation.key.parts, &number);
        }

        MappingArgs {
            name: mapping.name.clone(),
            ttl: mapping
                .ttl_seconds
                .map(|t| t.to_string())
                .unwrap_or_default(),
            order_by: mapping.relations.iter().map(|r| r.order_by.clone()).collect(),
            fields,
            static_part: s,
        }
    }

    /// The complete `EVALSHA` command for `change`.
    pub(crate) fn command(
        &self,
        sha: &str,
        change: &PlannedChange,
    ) -> Result<redis::Cmd, ApplyError> {
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

        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(sha).arg(0).arg(op).arg(&self.name).arg(row);
        match position {
            Some(p) if p < 0 => return Err(invalid(format!("negative source position {p}"))),
            Some(p) => cmd.arg(p),
            None => cmd.arg(""),
        };
        match change.source_ts_ms {
            Some(ts) if ts >= 0 => cmd.arg(ts),
            _ => cmd.arg(""),
        };
        cmd.arg(format!("{}/{}", change.topic, change.partition))
            .arg(change.offset)
            .arg(&self.ttl);
        for a in &self.static_part {
            cmd.arg(a);
        }
        if let Plan::Upsert(u) = &change.plan {
            self.upsert_args(&mut cmd, u);
        }
        Ok(cmd)
    }

    /// refs, scores, set pairs, removed fields.
    fn upsert_args(&self, cmd: &mut redis::Cmd, u: &RowUpsert) {
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
        for r in refs {
            cmd.arg(r);
        }
        for (r, order_by) in self.order_by.iter().enumerate() {
            match u.relation_scores.get(r).copied().flatten() {
                Some(x) if x.is_nan() => cmd.arg("0"),
                Some(x) => cmd.arg(format_score(x)),
                None => match u.fields.iter().find(|(n, _)| n == order_by) {
                    // Not sent (unchanged TOASTed value) or not in the row: keep the score.
                    None | Some((_, FieldWrite::Keep)) => cmd.arg(""),
                    // NULL or not a number.
                    Some(_) => cmd.arg("0"),
                },
            };
        }
        cmd.arg(sets.len());
        for (name, value) in sets {
            cmd.arg(name).arg(value);
        }
        cmd.arg(removes.len());
        for name in removes {
            cmd.arg(name);
        }
    }
}

/// A score as Redis parses it: plain decimal (`1795480593143715`), `inf`, `-inf`.
fn format_score(x: f64) -> String {
    if x.is_infinite() {
        return if x > 0.0 { "inf".into() } else { "-inf".into() };
    }
    format!("{x}")
}

/// `n, L0, (field number, L) x n`.
fn encode_template(out: &mut Vec<String>, parts: &[TemplatePart], number: &impl Fn(&str) -> usize) {
    let mut literals = vec![String::new()];
    let mut numbers = Vec::new();
    for part in parts {
        match part {
            TemplatePart::Literal(l) => {
                if let Some(last) = literals.last_mut() {
                    last.push_str(l);
                }
            }
            TemplatePart::Field(f) => {
                numbers.push(number(f));
                literals.push(String::new());
            }
        }
    }
    out.push(numbers.len().to_string());
    let mut literals = literals.into_iter();
    out.push(literals.next().unwrap_or_default());
    for (n, l) in numbers.into_iter().zip(literals) {
        out.push(n.to_string());
        out.push(l);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mapping::{FieldSelection, Index, KeyTemplate, Relation};

    fn mapping() -> Mapping {
        Mapping {
            name: "orders".into(),
            topic: "t".into(),
            key: KeyTemplate::parse("order:{id}").unwrap(),
            fields: FieldSelection::All,
            ttl_seconds: Some(60),
            indexes: vec![Index {
                name: "ref".into(),
                key: KeyTemplate::parse("order:ref:{region}-{ref}").unwrap(),
            }],
            relations: vec![Relation {
                name: "customer_orders".into(),
                key: KeyTemplate::parse("customer:{customer_id}:orders").unwrap(),
                order_by: "created_at".into(),
            }],
            lookups: vec![],
        }
    }

    #[test]
    fn static_part_layout() {
        let a = MappingArgs::new(&mapping());
        assert_eq!(
            a.static_part,
            [
                "4", "id", "region", "ref", "customer_id", // template fields
                "1", "1", // key fields
                "1", "ref", "2", "order:ref:", "2", "-", "3", "", // index
                "1", "1", "customer:", "4", ":orders", // relation
            ]
        );
        assert_eq!(a.ttl, "60");
    }

    #[test]
    fn upsert_args_layout() {
        let a = MappingArgs::new(&mapping());
        let change = PlannedChange {
            mapping: 0,
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
            }),
            source_ts_ms: Some(99),
            topic: "cdc.orders".into(),
            partition: 2,
            offset: 11,
        };
        let cmd = a.command("sha", &change).unwrap();
        let args: Vec<String> = cmd
            .args_iter()
            .map(|a| match a {
                redis::Arg::Simple(b) => String::from_utf8(b.to_vec()).unwrap(),
                _ => "<cursor>".into(),
            })
            .collect();
        let mut expected: Vec<String> = [
            "EVALSHA", "sha", "0", "u", "orders", "order:3", "7", "99", "cdc.orders/2", "11", "60",
        ]
        .map(String::from)
        .to_vec();
        expected.extend(a.static_part.iter().cloned());
        expected.extend(
            [
                "1", "-1", "0", "2", // refs: id, region, ref, customer_id
                "1500000000000000", // score
                "2", "id", "3", "customer_id", "1", // sets
                "1", "region", // removes
            ]
            .map(String::from),
        );
        assert_eq!(args, expected);
    }

    #[test]
    fn negative_position_is_invalid() {
        let a = MappingArgs::new(&mapping());
        let change = PlannedChange {
            mapping: 0,
            plan: Plan::Delete(mapping::RowDelete {
                row_key: "order:3".into(),
                position: Some(-1),
            }),
            source_ts_ms: None,
            topic: "cdc.orders".into(),
            partition: 0,
            offset: 1,
        };
        let err = a.command("sha", &change).unwrap_err();
        assert_eq!(
            err.to_string(),
            "change at cdc.orders/0 offset 1: negative source position -1"
        );
        assert!(!err.is_retriable());
    }
}
