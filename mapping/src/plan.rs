//! One decoded [`Change`] + its [`Mapping`] -> the Redis work for it ([`Plan`]), without
//! touching Redis. The sink's Lua script executes a plan atomically (ARCHITECTURE.md,
//! "Change semantics"); everything that depends on what is stored (old index values, old
//! relation parents, the ordering guard) is decided there, not here.
//!
//! - `r`/`c`/`u`: [`Plan::Upsert`] built from `after` alone (selection and renames applied;
//!   every column when `fields: all`), row key rendered from the stored field values.
//! - `d`: [`Plan::Delete`] with the row key rendered from the Kafka key columns (renames
//!   applied). `before` is never read: under REPLICA IDENTITY DEFAULT it holds Avro
//!   defaults, not the row's values.
//! - tombstone: [`Plan::Delete`] by the Kafka key with no position (unconditional).
//! - `t`: [`Plan::Truncate`], guarded by its source position like every other change.

use serde::Serialize;

use crate::change::{Change, FieldValue, Op, Row};
use crate::model::{FieldSelection, Mapping};
use crate::render::{check_value, render_owned_value, render_value, score, Rendered, ValueError};
use crate::search;
use crate::template::KeyTemplate;

/// The Redis work for one change.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum Plan {
    /// Write (create or update) one row.
    Upsert(RowUpsert),
    /// Delete one row (`d` or tombstone).
    Delete(RowDelete),
    /// Delete every row of the mapping stored before `position` (`source.lsn` of the
    /// truncate; `None`: every row).
    Truncate {
        /// Source position of the truncate, for the ordering guard.
        position: Option<i64>,
    },
}

impl Plan {
    /// The row the plan writes or deletes (`None` for a truncate).
    pub fn row_key(&self) -> Option<&str> {
        match self {
            Plan::Upsert(RowUpsert { row_key, .. }) | Plan::Delete(RowDelete { row_key, .. }) => {
                Some(row_key)
            }
            Plan::Truncate { .. } => None,
        }
    }

    /// Whether the plan writes `key` as its row or, for an upsert of `mapping`, as the
    /// parent its new values render for one of the relations (the parent it leaves depends
    /// on what is stored, which the plan does not know).
    pub fn writes_key(&self, mapping: &Mapping, key: &str) -> bool {
        self.row_key() == Some(key)
            || matches!(self, Plan::Upsert(u) if u.relation_parents(mapping).any(|p| p == key))
    }
}

impl RowUpsert {
    /// The parent key of each of `mapping`'s relations that the upsert's new values render
    /// (none for a relation whose fields it does not all set).
    pub fn relation_parents<'a>(
        &'a self,
        mapping: &'a Mapping,
    ) -> impl Iterator<Item = String> + 'a {
        mapping.relations.iter().filter_map(move |relation| {
            relation.key.render(|field| {
                self.fields.iter().find_map(|(name, write)| match write {
                    FieldWrite::Set(value) if name == field => Some(value.as_str()),
                    _ => None,
                })
            })
        })
    }
}

/// Write one row hash and maintain its indexes and relations.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RowUpsert {
    /// Rendered row key, e.g. `customer:1`.
    pub row_key: String,
    /// Source position (`source.lsn`) of the change, for the ordering guard.
    pub position: Option<i64>,
    /// Stored field name -> what to do with it, in stored order.
    pub fields: Vec<(String, FieldWrite)>,
    /// One per `mapping.relations` entry, in order: the score of the `order_by` field, `None`
    /// when it is NULL, unavailable or not numeric.
    pub relation_scores: Vec<Option<f64>>,
    /// One per `mapping.search` entry, in order: the row's new member of the search's sorted
    /// set ([`crate::search::member`]), `Remove` when the field is NULL, `Keep` when its value
    /// was not sent (the stored member stays).
    pub search_members: Vec<FieldWrite>,
}

/// What to do with one hash field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum FieldWrite {
    /// `HSET` this rendered text.
    Set(String),
    /// SQL NULL: `HDEL`.
    Remove,
    /// Unchanged TOASTed column: leave the stored value alone.
    Keep,
}

impl From<Rendered> for FieldWrite {
    fn from(r: Rendered) -> Self {
        match r {
            Rendered::Value(v) => FieldWrite::Set(v),
            Rendered::Null => FieldWrite::Remove,
            Rendered::Unavailable => FieldWrite::Keep,
        }
    }
}

/// Delete one row with its index entries and relation memberships.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RowDelete {
    /// Rendered row key.
    pub row_key: String,
    /// Source position of the delete; `None` for tombstones, which delete unconditionally.
    pub position: Option<i64>,
}

/// Why a change cannot be planned (the record is dead-lettered).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PlanError {
    /// `r`/`c`/`u` without a row image.
    #[error("`{op}` change has no `after` row image")]
    MissingAfter {
        /// The operation.
        op: Op,
    },
    /// A column named in `fields` is not in the record.
    #[error("selected column `{column}` is not in the record (columns: {available})")]
    MissingColumn {
        /// The Debezium column name.
        column: String,
        /// The record's columns, comma-separated.
        available: String,
    },
    /// The row key template names a field the row does not have.
    #[error("key `{template}` needs field `{field}`, which the {origin} does not have")]
    KeyFieldMissing {
        /// The key template.
        template: String,
        /// The stored field name.
        field: String,
        /// `row` (upsert) or `kafka key` (delete, tombstone).
        origin: &'static str,
    },
    /// The row key template names a field that is NULL.
    #[error("key `{template}` needs field `{field}`, which is null")]
    KeyFieldNull {
        /// The key template.
        template: String,
        /// The stored field name.
        field: String,
    },
    /// The row key template names an unchanged TOASTed field (no value sent).
    #[error("key `{template}` needs field `{field}`, whose value debezium did not send (unchanged toasted column)")]
    KeyFieldUnavailable {
        /// The key template.
        template: String,
        /// The stored field name.
        field: String,
    },
    /// A value that cannot be stored, e.g. invalid JSON.
    #[error("column `{column}`: {source}")]
    InvalidValue {
        /// The Debezium column name.
        column: String,
        /// What is wrong with it.
        #[source]
        source: ValueError,
    },
}

/// Plans `change` for `mapping`; see the module documentation. The change is taken, not
/// borrowed: its column names and text values move into the plan instead of being copied
/// (the sink plans every change it consumes; copying cost two allocations per column).
pub fn plan(mapping: &Mapping, change: Change) -> Result<Plan, PlanError> {
    match change.op {
        Op::Read | Op::Create | Op::Update => {
            let after = change
                .after
                .ok_or(PlanError::MissingAfter { op: change.op })?;
            upsert(mapping, after, change.position).map(Plan::Upsert)
        }
        Op::Delete => Ok(Plan::Delete(RowDelete {
            row_key: key_from_kafka_key(mapping, &change.key)?,
            position: change.position,
        })),
        Op::Tombstone => Ok(Plan::Delete(RowDelete {
            row_key: key_from_kafka_key(mapping, &change.key)?,
            position: None,
        })),
        Op::Truncate => Ok(Plan::Truncate {
            position: change.position,
        }),
    }
}

/// The selected columns of `row` under their stored names, in stored order.
fn select(mapping: &Mapping, mut row: Row) -> Result<Row, PlanError> {
    let FieldSelection::List(list) = &mapping.fields else {
        return Ok(row);
    };
    let mut selected = Vec::with_capacity(list.len());
    for (i, f) in list.iter().enumerate() {
        let Some(column) = row.iter().position(|(name, _)| *name == f.from) else {
            return Err(PlanError::MissingColumn {
                column: f.from.clone(),
                available: row
                    .iter()
                    .map(|(n, _)| n.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        };
        // A column may be selected more than once, under several names: only its last
        // selection takes the value.
        let selected_again = list[i + 1..].iter().any(|later| later.from == f.from);
        let value = if selected_again {
            row[column].1.clone()
        } else {
            std::mem::replace(&mut row[column].1, FieldValue::Null)
        };
        selected.push((f.to.clone(), value));
    }
    Ok(selected)
}

fn upsert(mapping: &Mapping, after: Row, position: Option<i64>) -> Result<RowUpsert, PlanError> {
    let selected = select(mapping, after)?;
    for (stored, value) in &selected {
        check_value(value).map_err(|source| PlanError::InvalidValue {
            column: source_column(mapping, stored),
            source,
        })?;
    }
    let relation_scores = mapping
        .relations
        .iter()
        .map(|r| {
            selected
                .iter()
                .find(|(name, _)| *name == r.order_by)
                .and_then(|(_, v)| score(v))
        })
        .collect();
    let row_key = render_key(&mapping.key, "row", |field| {
        selected
            .iter()
            .find(|(name, _)| name == field)
            .map(|(_, v)| render_value(v))
    })?;
    let search_members = search_members(mapping, &selected, &row_key);
    let fields = selected
        .into_iter()
        .map(|(name, v)| (name, FieldWrite::from(render_owned_value(v))))
        .collect();
    Ok(RowUpsert {
        row_key,
        position,
        fields,
        relation_scores,
        search_members,
    })
}

/// The row's member of each search of `mapping` (see [`RowUpsert::search_members`]).
fn search_members(mapping: &Mapping, selected: &Row, row_key: &str) -> Vec<FieldWrite> {
    if mapping.search.is_empty() {
        return Vec::new();
    }
    let value = |field: &str| {
        selected
            .iter()
            .find(|(name, _)| name == field)
            .map(|(_, v)| v)
    };
    // The row key rendered, so every key field is in `selected`.
    let key: Vec<&FieldValue> = mapping.key.fields().filter_map(value).collect();
    mapping
        .search
        .iter()
        .map(|s| match value(&s.field).map(render_value) {
            Some(Rendered::Value(text)) => {
                FieldWrite::Set(search::member(&text, key.iter().copied(), row_key))
            }
            Some(Rendered::Null) => FieldWrite::Remove,
            Some(Rendered::Unavailable) | None => FieldWrite::Keep,
        })
        .collect()
}

/// The Debezium column a stored field comes from (for error messages).
fn source_column(mapping: &Mapping, stored: &str) -> String {
    match &mapping.fields {
        FieldSelection::All => stored.to_owned(),
        FieldSelection::List(list) => list
            .iter()
            .find(|f| f.to == stored)
            .map_or_else(|| stored.to_owned(), |f| f.from.clone()),
    }
}

fn key_from_kafka_key(mapping: &Mapping, key: &Row) -> Result<String, PlanError> {
    render_key(&mapping.key, "kafka key", |field| {
        key.iter()
            .find(|(column, _)| mapping.stored_name(column) == Some(field))
            .map(|(_, v)| render_value(v))
    })
}

/// Renders `template`, asking `value` for each field's rendering (`None`: no such field).
fn render_key(
    template: &KeyTemplate,
    origin: &'static str,
    mut value: impl FnMut(&str) -> Option<Rendered>,
) -> Result<String, PlanError> {
    let mut error = None;
    let rendered = template.render(|field| {
        let result = match value(field) {
            Some(Rendered::Value(v)) => Ok(v),
            Some(Rendered::Null) => Err(PlanError::KeyFieldNull {
                template: template.source.clone(),
                field: field.to_owned(),
            }),
            Some(Rendered::Unavailable) => Err(PlanError::KeyFieldUnavailable {
                template: template.source.clone(),
                field: field.to_owned(),
            }),
            None => Err(PlanError::KeyFieldMissing {
                template: template.source.clone(),
                field: field.to_owned(),
                origin,
            }),
        };
        result.map_err(|e| error = Some(e)).ok()
    });
    match (rendered, error) {
        (Some(key), _) => Ok(key),
        (None, Some(e)) => Err(e),
        // `render` only fails through the closure, which always records why.
        (None, None) => Err(PlanError::KeyFieldMissing {
            template: template.source.clone(),
            field: String::new(),
            origin,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Relation, SelectedField};

    fn mapping(fields: FieldSelection) -> Mapping {
        Mapping {
            name: "orders".into(),
            topic: "cdc.public.orders".into(),
            key: KeyTemplate::parse("order:{order_id}").unwrap(),
            fields,
            types: Default::default(),
            ttl_seconds: None,
            indexes: vec![],
            relations: vec![Relation {
                name: "customer_orders".into(),
                key: KeyTemplate::parse("customer:{customer_id}:orders").unwrap(),
                order_by: "created".into(),
            }],
            lookups: vec![],
            aggregates: vec![],
            search: vec![],
        }
    }

    fn renamed() -> Mapping {
        let f = |from: &str, to: &str| SelectedField {
            from: from.into(),
            to: to.into(),
        };
        mapping(FieldSelection::List(vec![
            f("id", "order_id"),
            f("customer_id", "customer_id"),
            f("created_at", "created"),
            f("note", "note"),
        ]))
    }

    fn row() -> Row {
        vec![
            ("id".into(), FieldValue::Int(3)),
            ("customer_id".into(), FieldValue::Null),
            ("created_at".into(), FieldValue::TimestampMicros(1_000_000)),
            ("note".into(), FieldValue::Unavailable),
            ("secret".into(), FieldValue::String("s".into())),
        ]
    }

    fn change(op: Op, after: Option<Row>) -> Change {
        Change {
            op,
            key: vec![("id".into(), FieldValue::Int(3))],
            before: None,
            after,
            position: Some(42),
            source_ts_ms: Some(1),
        }
    }

    #[test]
    fn upsert_applies_selection_renames_null_and_toast() {
        let plan = plan(&renamed(), change(Op::Update, Some(row()))).unwrap();
        assert_eq!(
            plan,
            Plan::Upsert(RowUpsert {
                row_key: "order:3".into(),
                position: Some(42),
                fields: vec![
                    ("order_id".into(), FieldWrite::Set("3".into())),
                    ("customer_id".into(), FieldWrite::Remove),
                    (
                        "created".into(),
                        FieldWrite::Set("1970-01-01T00:00:01.000000Z".into())
                    ),
                    ("note".into(), FieldWrite::Keep),
                ],
                relation_scores: vec![Some(1_000_000.0)],
                search_members: vec![],
            })
        );
    }

    #[test]
    fn upsert_plans_each_search_member() {
        use crate::model::Search;
        let mut m = renamed();
        m.search = ["order_id", "customer_id", "note", "created"]
            .iter()
            .map(|f| Search {
                name: format!("by_{f}"),
                field: (*f).into(),
            })
            .collect();
        let Ok(Plan::Upsert(u)) = plan(&m, change(Op::Update, Some(row()))) else {
            panic!("not an upsert");
        };
        let id = "8000000000000003";
        assert_eq!(
            u.search_members,
            [
                FieldWrite::Set(format!("3\0{id}\0order:3")),
                FieldWrite::Remove,
                FieldWrite::Keep,
                FieldWrite::Set(format!("1970-01-01t00:00:01.000000z\0{id}\0order:3")),
            ]
        );
    }

    #[test]
    fn delete_and_tombstone_use_the_kafka_key_with_renames() {
        let mut c = change(Op::Delete, None);
        // A `before` full of defaults must not matter.
        c.before = Some(vec![("id".into(), FieldValue::Int(999))]);
        assert_eq!(
            plan(&renamed(), c.clone()),
            Ok(Plan::Delete(RowDelete {
                row_key: "order:3".into(),
                position: Some(42)
            }))
        );
        c.op = Op::Tombstone;
        assert_eq!(
            plan(&renamed(), c),
            Ok(Plan::Delete(RowDelete {
                row_key: "order:3".into(),
                position: None
            }))
        );
    }

    #[test]
    fn a_column_selected_twice_is_stored_under_both_names() {
        let f = |from: &str, to: &str| SelectedField {
            from: from.into(),
            to: to.into(),
        };
        let m = mapping(FieldSelection::List(vec![
            f("id", "order_id"),
            f("created_at", "created"),
            f("created_at", "placed_at"),
            f("id", "number"),
        ]));
        let Ok(Plan::Upsert(u)) = plan(&m, change(Op::Update, Some(row()))) else {
            panic!("expected an upsert");
        };
        let stamp = FieldWrite::Set("1970-01-01T00:00:01.000000Z".into());
        assert_eq!(
            u.fields,
            vec![
                ("order_id".into(), FieldWrite::Set("3".into())),
                ("created".into(), stamp.clone()),
                ("placed_at".into(), stamp),
                ("number".into(), FieldWrite::Set("3".into())),
            ]
        );
        assert_eq!(u.relation_scores, vec![Some(1_000_000.0)]);
    }

    #[test]
    fn a_plan_writes_its_row_and_the_parents_its_new_values_render() {
        let m = renamed();
        let mut with_parent = row();
        with_parent[1].1 = FieldValue::Int(7);
        let upsert = plan(&m, change(Op::Update, Some(with_parent))).unwrap();
        assert!(upsert.writes_key(&m, "order:3"));
        assert!(upsert.writes_key(&m, "customer:7:orders"));
        assert!(!upsert.writes_key(&m, "customer:3:orders"));
        // A NULL parent field renders no parent.
        let orphan = plan(&m, change(Op::Update, Some(row()))).unwrap();
        assert!(!orphan.writes_key(&m, "customer::orders"));
        let delete = plan(&m, change(Op::Delete, None)).unwrap();
        assert!(delete.writes_key(&m, "order:3"));
        assert!(!delete.writes_key(&m, "customer:7:orders"));
        let truncate = plan(&m, change(Op::Truncate, None)).unwrap();
        assert!(!truncate.writes_key(&m, "order:3"));
    }

    #[test]
    fn truncate() {
        assert_eq!(
            plan(&renamed(), change(Op::Truncate, None)),
            Ok(Plan::Truncate { position: Some(42) })
        );
    }

    #[test]
    fn errors_name_what_is_missing() {
        let m = renamed();
        assert_eq!(
            plan(&m, change(Op::Create, None)).unwrap_err().to_string(),
            "`c` change has no `after` row image"
        );
        let mut r = row();
        r.retain(|(n, _)| n != "note");
        assert_eq!(
            plan(&m, change(Op::Read, Some(r))).unwrap_err().to_string(),
            "selected column `note` is not in the record (columns: id, customer_id, created_at, secret)"
        );
        let mut r = row();
        r[0].1 = FieldValue::Null;
        assert_eq!(
            plan(&m, change(Op::Read, Some(r))).unwrap_err().to_string(),
            "key `order:{order_id}` needs field `order_id`, which is null"
        );
        let mut r = row();
        r[0].1 = FieldValue::Unavailable;
        assert!(matches!(
            plan(&m, change(Op::Read, Some(r))),
            Err(PlanError::KeyFieldUnavailable { .. })
        ));
        let mut c = change(Op::Delete, None);
        c.key = vec![("pk".into(), FieldValue::Int(3))];
        assert_eq!(
            plan(&m, c).unwrap_err().to_string(),
            "key `order:{order_id}` needs field `order_id`, which the kafka key does not have"
        );
        let all = mapping(FieldSelection::All);
        assert_eq!(
            plan(&all, change(Op::Read, Some(row())))
                .unwrap_err()
                .to_string(),
            "key `order:{order_id}` needs field `order_id`, which the row does not have"
        );
        let mut r = row();
        r.push(("items".into(), FieldValue::Json("{".into())));
        r[0].0 = "order_id".into();
        assert_eq!(
            plan(&all, change(Op::Read, Some(r))).unwrap_err().to_string(),
            "column `items`: invalid json text \"{\": EOF while parsing an object at line 1 column 1"
        );
    }

    #[test]
    fn all_keeps_every_column_and_scores_missing_order_by_as_none() {
        let mut m = mapping(FieldSelection::All);
        m.key = KeyTemplate::parse("order:{id}").unwrap();
        let Ok(Plan::Upsert(u)) = plan(&m, change(Op::Read, Some(row()))) else {
            panic!("expected an upsert");
        };
        assert_eq!(u.fields.len(), 5);
        assert_eq!(u.relation_scores, vec![None]);
    }
}
