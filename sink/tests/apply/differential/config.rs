//! Random mapping configurations, written out as `connectors.yaml` text and loaded through
//! the mapping crate's loader (the path the sink takes): one mapping per table, composite or
//! single-column primary keys, up to three unique indexes (one of them composite), up to two
//! relations ordered by a timestamp, by an integer or by text (no score: "without order"),
//! `fields: all` or a subset of the columns with renamed key, index and order fields, and
//! optionally an aggregate per parent (count and sum of `code`, maybe grouped by `label`).

use std::fmt::Write as _;

use mapping::{load_config_str, Config, ConnectionOverrides};
use proptest::prelude::*;
use proptest::sample::subsequence;

/// The columns of every table, in schema order (see `history.rs` for their values).
pub const COLUMNS: [&str; 8] = [
    "id",
    "region",
    "email",
    "code",
    "parent_id",
    "created_at",
    "label",
    "note",
];

/// The tables of one case, one mapping each.
#[derive(Debug, Clone)]
pub struct ConfigSpec {
    pub tables: Vec<TableSpec>,
}

#[derive(Debug, Clone)]
pub struct TableSpec {
    /// Primary key `(region, id)` instead of `(id)`.
    pub composite: bool,
    /// Kafka partitions of the table's topic.
    pub partitions: u8,
    pub fields: Fields,
    pub indexes: Vec<IndexKind>,
    pub relations: Vec<RelationSpec>,
    pub aggregate: Option<AggregateSpec>,
}

/// An aggregate counting the rows and summing `code` per parent.
#[derive(Debug, Clone, Copy)]
pub struct AggregateSpec {
    /// Parent key from `(parent_id, region)` instead of `(parent_id)`.
    pub by_region: bool,
    /// `group_by: label`.
    pub grouped: bool,
}

/// `fields:` of a mapping.
#[derive(Debug, Clone, Copy)]
pub enum Fields {
    All,
    /// The columns templates need, plus those whose bit is set in `keep` (bit n: column n),
    /// the list rotated by `rotate`; `rename` stores `id`, `email` and `created_at` as `pk`,
    /// `mail` and `created`.
    Subset {
        rename: bool,
        keep: u8,
        rotate: u8,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IndexKind {
    Email,
    Code,
    /// `(email, code)`.
    EmailCode,
}

#[derive(Debug, Clone, Copy)]
pub struct RelationSpec {
    /// Parent key from `(parent_id, region)` instead of `(parent_id)`.
    pub by_region: bool,
    pub order: Order,
}

/// The `order_by` field of a relation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    CreatedAt,
    Code,
    /// Text: no score, members keep 0 or their previous score.
    Label,
}

pub fn config_spec() -> impl Strategy<Value = ConfigSpec> {
    prop::collection::vec(table_spec(), 1..=3).prop_map(|tables| ConfigSpec { tables })
}

fn table_spec() -> impl Strategy<Value = TableSpec> {
    let fields = prop_oneof![
        Just(Fields::All),
        (any::<bool>(), any::<u8>(), any::<u8>()).prop_map(|(rename, keep, rotate)| {
            Fields::Subset {
                rename,
                keep,
                rotate,
            }
        }),
    ];
    let indexes = subsequence(
        vec![IndexKind::Email, IndexKind::Code, IndexKind::EmailCode],
        0..=3,
    );
    let order = prop_oneof![
        Just(Order::CreatedAt),
        Just(Order::Code),
        Just(Order::Label)
    ];
    let relation =
        (any::<bool>(), order).prop_map(|(by_region, order)| RelationSpec { by_region, order });
    (
        any::<bool>(),
        1..=3_u8,
        fields,
        indexes,
        prop::collection::vec(relation, 0..=2),
        prop::option::of((any::<bool>(), any::<bool>())),
    )
        .prop_map(
            |(composite, partitions, fields, indexes, relations, aggregate)| TableSpec {
                composite,
                partitions,
                fields,
                indexes,
                relations,
                aggregate: aggregate
                    .map(|(by_region, grouped)| AggregateSpec { by_region, grouped }),
            },
        )
}

impl TableSpec {
    fn renamed(&self) -> bool {
        matches!(self.fields, Fields::Subset { rename: true, .. })
    }

    /// The stored name of `column`.
    fn stored(&self, column: &str) -> &'static str {
        match (self.renamed(), column) {
            (true, "id") => "pk",
            (true, "email") => "mail",
            (true, "created_at") => "created",
            (_, c) => COLUMNS
                .iter()
                .find(|known| **known == c)
                .expect("a known column"),
        }
    }

    /// The columns the templates and `order_by`s name.
    fn needed(&self) -> Vec<&'static str> {
        let mut out = vec!["id"];
        let by_region = self.aggregate.is_some_and(|a| a.by_region);
        if self.composite || by_region || self.relations.iter().any(|r| r.by_region) {
            out.push("region");
        }
        for ix in &self.indexes {
            match ix {
                IndexKind::Email => out.push("email"),
                IndexKind::Code => out.push("code"),
                IndexKind::EmailCode => out.extend(["email", "code"]),
            }
        }
        for r in &self.relations {
            out.push("parent_id");
            out.push(match r.order {
                Order::CreatedAt => "created_at",
                Order::Code => "code",
                Order::Label => "label",
            });
        }
        if let Some(a) = self.aggregate {
            out.extend(["parent_id", "code"]);
            if a.grouped {
                out.push("label");
            }
        }
        out
    }

    fn key(&self, tag: &str, t: usize) -> String {
        let id = self.stored("id");
        if self.composite {
            format!("{tag}:m{t}:row:{{region}}:{{{id}}}")
        } else {
            format!("{tag}:m{t}:row:{{{id}}}")
        }
    }
}

/// The mapping name of table `t` under `tag`.
pub fn mapping_name(tag: &str, t: usize) -> String {
    format!("{tag}_m{t}")
}

/// `connectors.yaml` for `spec` with every key, mapping name and topic under `tag`.
pub fn yaml(spec: &ConfigSpec, tag: &str, redis_url: &str) -> String {
    let mut y = String::new();
    writeln!(y, "redis:\n  url: {redis_url}\nmappings:").ok();
    for (t, table) in spec.tables.iter().enumerate() {
        writeln!(y, "  - name: {}", mapping_name(tag, t)).ok();
        writeln!(y, "    topic: {tag}.m{t}").ok();
        writeln!(y, "    key: \"{}\"", table.key(tag, t)).ok();
        match table.fields {
            Fields::All => {
                writeln!(y, "    fields: all").ok();
            }
            Fields::Subset { keep, rotate, .. } => {
                let needed = table.needed();
                let mut list: Vec<&str> = COLUMNS
                    .iter()
                    .enumerate()
                    .filter(|(n, c)| needed.contains(c) || keep & (1 << n) != 0)
                    .map(|(_, c)| *c)
                    .collect();
                let by = usize::from(rotate) % list.len();
                list.rotate_left(by);
                writeln!(y, "    fields:").ok();
                for column in list {
                    let stored = table.stored(column);
                    if stored == column {
                        writeln!(y, "      - {column}").ok();
                    } else {
                        writeln!(y, "      - {{from: {column}, as: {stored}}}").ok();
                    }
                }
            }
        }
        if !table.indexes.is_empty() {
            writeln!(y, "    indexes:").ok();
        }
        let (mail, created) = (table.stored("email"), table.stored("created_at"));
        for ix in &table.indexes {
            let (name, key) = match ix {
                IndexKind::Email => ("email", format!("{tag}:m{t}:email:{{{mail}}}")),
                IndexKind::Code => ("code", format!("{tag}:m{t}:code:{{code}}")),
                IndexKind::EmailCode => ("ec", format!("{tag}:m{t}:ec:{{{mail}}}:{{code}}")),
            };
            writeln!(y, "      - name: {name}\n        key: \"{key}\"").ok();
        }
        if !table.relations.is_empty() {
            writeln!(y, "    relations:").ok();
        }
        for (r, rel) in table.relations.iter().enumerate() {
            let key = if rel.by_region {
                format!("{tag}:m{t}:r{r}:{{parent_id}}:{{region}}")
            } else {
                format!("{tag}:m{t}:r{r}:{{parent_id}}")
            };
            let order_by = match rel.order {
                Order::CreatedAt => created,
                Order::Code => "code",
                Order::Label => "label",
            };
            writeln!(
                y,
                "      - name: r{r}\n        key: \"{key}\"\n        order_by: {order_by}"
            )
            .ok();
        }
        if let Some(a) = table.aggregate {
            let key = if a.by_region {
                format!("{tag}:m{t}:stats:{{parent_id}}:{{region}}")
            } else {
                format!("{tag}:m{t}:stats:{{parent_id}}")
            };
            writeln!(
                y,
                "    aggregates:\n      - name: stats\n        key: \"{key}\"\n        count: true\n        sum: [code]"
            )
            .ok();
            if a.grouped {
                writeln!(y, "        group_by: label").ok();
            }
        }
    }
    y
}

/// Loads `text` as the sink would; a generated file that does not load is a bug of the
/// generator.
pub fn load(text: &str) -> Config {
    load_config_str(text, "connectors.yaml", &ConnectionOverrides::default())
        .unwrap_or_else(|e| panic!("generated connectors.yaml does not load:\n{e}\n{text}"))
}
