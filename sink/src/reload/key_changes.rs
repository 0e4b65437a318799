//! Which differences between the running configuration and a re-read one would change the
//! Redis keys of rows the sink already wrote: those a reload must refuse, because only
//! `sink rebuild` (a replay into a fresh database) can re-key existing rows.
//!
//! Pure: two [`Config`]s in, the list of [`KeyChange`]s out. The rule, per mapping matched
//! by name:
//! - its row key template, topic, or any index's or relation's key template (or a
//!   relation's `order_by`, the score of existing members) changed;
//! - an index or relation was removed (its entries stay behind) or added (existing rows have
//!   no entry in it until they change);
//! - the primary key's meaning changed: a stored field that a key template names now comes
//!   from another column, or its declared type (which decides how the value is rendered into
//!   the key) changed;
//! - the mapping was removed (or renamed, which is a removal and an addition): its rows
//!   would stay behind, unmanaged. Whether any exist is for the caller to ask Redis
//!   ([`KeyChange::RemovedMapping`]).
//!
//! Besides the mappings: another Redis server or database (host, port, db, user) or another
//! consumer group (whose offsets would not match the rows).
//!
//! Everything else applies on reload: new mappings and their topics, lookups, `ttl_seconds`,
//! field selections (for changes from then on), types of fields no key names, sources,
//! freshness, Kafka properties, the schema registry and the dead-letter topic.

use std::fmt;

use mapping::{Config, DeclaredType, FieldSelection, KeyTemplate, Mapping};

/// One difference a reload refuses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyChange {
    /// `redis.url` (or the user) names another server or logical database.
    RedisDatabase,
    /// `kafka.group_id` changed.
    ConsumerGroup {
        /// The running group.
        old: String,
        /// The re-read one.
        new: String,
    },
    /// A mapping of the running configuration is gone.
    RemovedMapping {
        /// Its name.
        mapping: String,
    },
    /// A mapping reads another topic.
    Topic {
        /// The mapping.
        mapping: String,
    },
    /// The row key template changed.
    RowKey {
        /// The mapping.
        mapping: String,
        /// The running template.
        old: String,
        /// The re-read one.
        new: String,
    },
    /// An index's or relation's key (or a relation's `order_by`) was added, removed or
    /// changed.
    Derived {
        /// The mapping.
        mapping: String,
        /// `index` or `relation`.
        kind: &'static str,
        /// Its name.
        name: String,
        /// `added`, `removed` or `changed`.
        how: &'static str,
    },
    /// A stored field that a key template names comes from another column or has another
    /// declared type.
    KeyField {
        /// The mapping.
        mapping: String,
        /// The stored field name.
        field: String,
    },
}

impl fmt::Display for KeyChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyChange::RedisDatabase => {
                f.write_str("redis.url names another redis server or database")
            }
            KeyChange::ConsumerGroup { old, new } => {
                write!(f, "kafka.group_id changed from `{old}` to `{new}`")
            }
            KeyChange::RemovedMapping { mapping } => {
                write!(f, "mapping `{mapping}` was removed and its rows exist")
            }
            KeyChange::Topic { mapping } => write!(f, "mapping `{mapping}` reads another topic"),
            KeyChange::RowKey { mapping, old, new } => {
                write!(
                    f,
                    "mapping `{mapping}`: key changed from `{old}` to `{new}`"
                )
            }
            KeyChange::Derived {
                mapping,
                kind,
                name,
                how,
            } => write!(f, "mapping `{mapping}`: {kind} `{name}` {how}"),
            KeyChange::KeyField { mapping, field } => write!(
                f,
                "mapping `{mapping}`: key field `{field}` comes from another column or type"
            ),
        }
    }
}

/// Every difference from `old` to `new` that would change the keys of existing rows, in
/// file order. [`KeyChange::RemovedMapping`] is listed for every removed mapping; the
/// caller keeps it only when the mapping has rows. `same_redis` tells whether the two Redis
/// settings name the same server and database (parsing URLs is the caller's job).
pub fn key_changes(old: &Config, new: &Config, same_redis: bool) -> Vec<KeyChange> {
    let mut changes = Vec::new();
    if !same_redis {
        changes.push(KeyChange::RedisDatabase);
    }
    if old.kafka.group_id != new.kafka.group_id {
        changes.push(KeyChange::ConsumerGroup {
            old: old.kafka.group_id.clone(),
            new: new.kafka.group_id.clone(),
        });
    }
    for before in &old.mappings {
        match new.mapping(&before.name) {
            None => changes.push(KeyChange::RemovedMapping {
                mapping: before.name.clone(),
            }),
            Some(after) => mapping_changes(before, after, &mut changes),
        }
    }
    changes
}

fn mapping_changes(old: &Mapping, new: &Mapping, changes: &mut Vec<KeyChange>) {
    let mapping = || old.name.clone();
    if old.topic != new.topic {
        changes.push(KeyChange::Topic { mapping: mapping() });
    }
    if old.key != new.key {
        changes.push(KeyChange::RowKey {
            mapping: mapping(),
            old: old.key.source.clone(),
            new: new.key.source.clone(),
        });
    }
    derived_changes(&old.name, "index", &indexes(old), &indexes(new), changes);
    derived_changes(
        &old.name,
        "relation",
        &relations(old),
        &relations(new),
        changes,
    );
    for field in key_fields(old) {
        if source_of(old, field) != source_of(new, field) {
            changes.push(KeyChange::KeyField {
                mapping: mapping(),
                field: field.to_owned(),
            });
        }
    }
}

/// An index or relation: its name, its key template and (relations) the score's field.
type Derived<'a> = (&'a str, &'a KeyTemplate, Option<&'a str>);

fn indexes(mapping: &Mapping) -> Vec<Derived<'_>> {
    mapping
        .indexes
        .iter()
        .map(|i| (i.name.as_str(), &i.key, None))
        .collect()
}

fn relations(mapping: &Mapping) -> Vec<Derived<'_>> {
    mapping
        .relations
        .iter()
        .map(|r| (r.name.as_str(), &r.key, Some(r.order_by.as_str())))
        .collect()
}

fn derived_changes(
    mapping: &str,
    kind: &'static str,
    old: &[Derived<'_>],
    new: &[Derived<'_>],
    changes: &mut Vec<KeyChange>,
) {
    let change = |name: &str, how| KeyChange::Derived {
        mapping: mapping.to_owned(),
        kind,
        name: name.to_owned(),
        how,
    };
    for (name, key, score) in old {
        match new.iter().find(|(n, _, _)| n == name) {
            None => changes.push(change(name, "removed")),
            Some((_, new_key, new_score)) if new_key != key || new_score != score => {
                changes.push(change(name, "changed"));
            }
            Some(_) => {}
        }
    }
    for (name, _, _) in new {
        if !old.iter().any(|(n, _, _)| n == name) {
            changes.push(change(name, "added"));
        }
    }
}

/// The stored fields any key template of `mapping` names (row key, indexes, relations),
/// once each, in order of appearance.
fn key_fields(mapping: &Mapping) -> Vec<&str> {
    let templates = std::iter::once(&mapping.key)
        .chain(mapping.indexes.iter().map(|i| &i.key))
        .chain(mapping.relations.iter().map(|r| &r.key));
    let mut fields: Vec<&str> = Vec::new();
    for field in templates.flat_map(KeyTemplate::fields) {
        if !fields.contains(&field) {
            fields.push(field);
        }
    }
    fields
}

/// Where stored field `field` comes from: its column and that column's declared type.
fn source_of<'a>(
    mapping: &'a Mapping,
    field: &'a str,
) -> (Option<&'a str>, Option<&'a DeclaredType>) {
    let column = match &mapping.fields {
        FieldSelection::All => Some(field),
        FieldSelection::List(list) => list.iter().find(|f| f.to == field).map(|f| f.from.as_str()),
    };
    (column, column.and_then(|c| mapping.types.get(c)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHIPPED: &str = include_str!("../../../connectors.yaml");

    fn load(text: &str) -> Config {
        mapping::load_config_str(text, "connectors.yaml", &Default::default())
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// The shipped configuration with `from` replaced by `to` (which must occur).
    fn edited(from: &str, to: &str) -> Config {
        assert!(SHIPPED.contains(from), "{from:?} not in connectors.yaml");
        load(&SHIPPED.replacen(from, to, 1))
    }

    fn changes(new: &Config) -> Vec<KeyChange> {
        key_changes(&load(SHIPPED), new, true)
    }

    const NEW_MAPPING: &str = "
  - name: invoices
    topic: cdc.public.invoices
    key: \"invoice:{id}\"
    fields: all
    lookups:
      - tool: get_invoice
        description: Look up an invoice
        by:
          - param: invoice_id
            type: integer
            description: Invoice ID
";

    #[test]
    fn the_same_configuration_changes_no_key() {
        assert_eq!(changes(&load(SHIPPED)), []);
    }

    #[test]
    fn new_mappings_lookups_ttls_and_settings_change_no_key() {
        let text = format!("{SHIPPED}{NEW_MAPPING}")
            .replace("    # ttl_seconds: 86400", "    ttl_seconds: 86400")
            .replace("Look up a specific order by ID", "An order by its ID")
            .replace(
                "dead_letter_topic: agent-context-sink-dlq",
                "dead_letter_topic: other-dlq",
            )
            .replace("stale_after_ms: 30000", "stale_after_ms: 5000");
        assert_eq!(changes(&load(&text)), []);
    }

    #[test]
    fn a_changed_row_key_is_refused() {
        assert_eq!(
            changes(&edited("key: \"order:{id}\"", "key: \"orders:{id}\"")),
            [KeyChange::RowKey {
                mapping: "orders".to_owned(),
                old: "order:{id}".to_owned(),
                new: "orders:{id}".to_owned(),
            }]
        );
    }

    #[test]
    fn indexes_and_relations_may_not_change_appear_or_go() {
        let derived = |kind, name: &str, how| KeyChange::Derived {
            mapping: if kind == "index" {
                "customers"
            } else {
                "orders"
            }
            .to_owned(),
            kind,
            name: name.to_owned(),
            how,
        };
        assert_eq!(
            changes(&edited("customer:email:{email}", "customer:mail:{email}")),
            [derived("index", "email", "changed")]
        );
        assert_eq!(
            changes(&load(
                &SHIPPED
                    .replacen("- name: email\n", "- name: mail\n", 1)
                    .replace("index: email", "index: mail")
            )),
            [
                derived("index", "email", "removed"),
                derived("index", "mail", "added")
            ]
        );
        assert_eq!(
            changes(&edited("order_by: created_at", "order_by: id")),
            // The relation filtered by `get_customer_orders`' `status` filter orders by the
            // same field, so it changes with it.
            [
                derived("relation", "customer_orders", "changed"),
                derived("relation", "customer_orders.status", "changed")
            ]
        );
    }

    #[test]
    fn a_removed_mapping_or_another_topic_is_listed() {
        let start = SHIPPED.find("  - name: orders").expect("orders mapping");
        // Without orders, get_customer's `include` of their relation goes too.
        let without_orders: String = SHIPPED[..start]
            .lines()
            .filter(|l| !l.contains("include:") && !l.contains("as: recent_orders"))
            .map(|l| format!("{l}\n"))
            .collect();
        let without_orders = load(&without_orders);
        assert_eq!(
            changes(&without_orders),
            [KeyChange::RemovedMapping {
                mapping: "orders".to_owned()
            }]
        );
        assert_eq!(
            changes(&edited(
                "topic: cdc.public.orders",
                "topic: cdc.public.orders2"
            )),
            [KeyChange::Topic {
                mapping: "orders".to_owned()
            }]
        );
    }

    #[test]
    fn a_key_field_from_another_column_or_type_is_refused() {
        // `name` stays selected: the shipped name search needs it.
        let listed = "fields: [id, email, name]";
        let base = edited(
            "    fields: all\n    # Only for",
            &format!("    {listed}\n    # Only for"),
        );
        let renamed = edited(
            "    fields: all\n    # Only for",
            "    fields: [{from: customer_id, as: id}, email, name]\n    # Only for",
        );
        let key_field = KeyChange::KeyField {
            mapping: "customers".to_owned(),
            field: "id".to_owned(),
        };
        assert_eq!(key_changes(&base, &renamed, true), [key_field]);
        let typed = edited(
            "    # ttl_seconds: 86400",
            "    types: {email: json}\n    # ttl_seconds: 86400",
        );
        assert_eq!(
            changes(&typed),
            [KeyChange::KeyField {
                mapping: "customers".to_owned(),
                field: "email".to_owned(),
            }]
        );
        // A selection that keeps every key field's column changes no key.
        let more = edited(
            "    fields: all\n    # Only for",
            "    fields: [id, email, name, plan]\n    # Only for",
        );
        assert_eq!(key_changes(&base, &more, true), []);
    }

    #[test]
    fn another_group_or_redis_database_is_refused() {
        let other_group = edited("group_id: agent-context-sink", "group_id: other");
        assert_eq!(
            key_changes(&load(SHIPPED), &other_group, false),
            [
                KeyChange::RedisDatabase,
                KeyChange::ConsumerGroup {
                    old: "agent-context-sink".to_owned(),
                    new: "other".to_owned()
                }
            ]
        );
    }
}
