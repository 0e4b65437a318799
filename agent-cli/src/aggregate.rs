//! The result of an aggregate lookup: the aggregate's hash (`mapping::layout::aggregate`)
//! as `{"count": 12, "sum_total_cents": 53200, "by_status": {"paid": {"count": 3, ...}}}`.
//! A parent without rows has no hash: it answers count 0 and sums 0. A sum is a JSON
//! integer when it is one within 64 bits, otherwise its exact decimal text as a string
//! (a JSON number would lose digits in most readers).

use std::borrow::Cow;

use mapping::layout::aggregate as layout;
use mapping::Aggregate;
use serde_json::{Map, Value};

/// The figures of `aggregate` from its hash's fields (`None`: no hash).
pub fn figures(aggregate: &Aggregate, hash: Option<&[(Cow<'_, str>, Cow<'_, str>)]>) -> Value {
    let hash = hash.unwrap_or_default();
    let get = |field: &str| {
        hash.iter()
            .find(|(f, _)| f == field)
            .map(|(_, v)| v.as_ref())
    };
    let mut out = Map::new();
    if aggregate.count {
        out.insert("count".into(), number(get(layout::COUNT).unwrap_or("0")));
    }
    for field in &aggregate.sum {
        let sum = get(&layout::sum_field(field)).unwrap_or("0");
        out.insert(format!("sum_{field}"), number(sum));
    }
    if let Some(name) = aggregate.groups_name() {
        let prefix = layout::group_count_field("");
        let mut groups = Map::new();
        for (f, count) in hash {
            let Some(value) = f.strip_prefix(prefix.as_str()) else {
                continue;
            };
            let mut group = Map::new();
            if aggregate.count {
                group.insert("count".into(), number(count));
            }
            for field in &aggregate.sum {
                let sum = get(&layout::group_sum_field(field, value)).unwrap_or("0");
                group.insert(format!("sum_{field}"), number(sum));
            }
            groups.insert(value.to_owned(), Value::Object(group));
        }
        out.insert(name, Value::Object(groups));
    }
    Value::Object(out)
}

/// A JSON integer when `text` is one within 64 bits, otherwise the exact text.
fn number(text: &str) -> Value {
    text.parse::<i64>()
        .map_or_else(|_| Value::String(text.to_owned()), Value::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats() -> Aggregate {
        Aggregate {
            name: "customer_order_stats".into(),
            key: mapping::KeyTemplate::parse("customer:{customer_id}:order_stats").unwrap(),
            count: true,
            sum: vec!["total_cents".into()],
            group_by: Some("status".into()),
        }
    }

    #[test]
    fn figures_are_typed_and_grouped() {
        let hash: Vec<(Cow<'_, str>, Cow<'_, str>)> = [
            ("count", "3"),
            ("sum:total_cents", "53200"),
            ("group_count:paid", "2"),
            ("group_sum:total_cents:paid", "9007199254740993.5"),
            ("group_count:a:b", "1"),
            ("group_sum:total_cents:a:b", "-7"),
        ]
        .into_iter()
        .map(|(f, v)| (Cow::Borrowed(f), Cow::Borrowed(v)))
        .collect();
        assert_eq!(
            figures(&stats(), Some(&hash)),
            serde_json::json!({
                "count": 3,
                "sum_total_cents": 53200,
                "by_status": {
                    "paid": {"count": 2, "sum_total_cents": "9007199254740993.5"},
                    "a:b": {"count": 1, "sum_total_cents": -7}
                }
            })
        );
    }

    #[test]
    fn a_parent_without_rows_counts_zero() {
        assert_eq!(
            figures(&stats(), None),
            serde_json::json!({"count": 0, "sum_total_cents": 0, "by_status": {}})
        );
    }
}
