//! Checks of `aggregates:` and of lookups that read one (`aggregate:`): names, the parent key
//! template, that every summed or grouped field is stored, and that a sum is over a type the
//! sink can add exactly (integers and decimals) wherever `types:` tells the type.

use std::collections::HashMap;

use marked_yaml::{Span, Spanned};

use super::{list, Validator};
use crate::aggregate::Aggregate;
use crate::declared::DeclaredType;
use crate::raw::{RawField, RawFields, RawLookup, RawMapping};

impl Validator<'_> {
    /// `aggregates:` of mapping `m`; `selected` is its stored field list, if any. Returns the
    /// aggregates whose key template parses, so that lookups naming them are still checked.
    pub(super) fn aggregates(
        &mut self,
        m: &RawMapping,
        selected: Option<&[&str]>,
    ) -> Vec<Aggregate> {
        let mut names: HashMap<&str, &Span> = HashMap::new();
        let mut aggregates = Vec::new();
        for a in &m.aggregates {
            self.name_unique_in_mapping(&a.name, "aggregate", &mut names);
            let count = a.count.as_ref().is_some_and(|c| **c);
            if !count && a.sum.is_empty() {
                self.error(
                    a.name.span(),
                    format!("aggregate `{}` has nothing to compute (expected `count: true` or a `sum` list)", *a.name),
                );
            }
            let mut summed: Vec<&str> = Vec::new();
            for field in &a.sum {
                if summed.contains(&field.as_str()) {
                    self.error(
                        field.span(),
                        format!(
                            "field `{}` is summed twice (expected each field once)",
                            **field
                        ),
                    );
                }
                summed.push(field);
                self.stored_field(field, "sum", selected);
                self.exactly_summable(m, field);
            }
            if let Some(group) = &a.group_by {
                self.stored_field(group, "group_by", selected);
            }
            let what = format!("mapping `{}` aggregate `{}` key", *m.name, *a.name);
            if let Some(key) = self.template(&a.key, &what, selected) {
                aggregates.push(Aggregate {
                    name: a.name.to_string(),
                    key,
                    count,
                    sum: a.sum.iter().map(|f| f.to_string()).collect(),
                    group_by: a.group_by.as_ref().map(|g| g.to_string()),
                });
            }
        }
        aggregates
    }

    /// `field` (of `sum` or `group_by`) must be a stored field name.
    fn stored_field(&mut self, field: &Spanned<String>, what: &str, selected: Option<&[&str]>) {
        if field.is_empty() {
            self.error(
                field.span(),
                format!("empty field name in `{what}` (expected a stored field)"),
            );
        } else if let Some(sel) = selected {
            if !sel.contains(&field.as_str()) {
                self.error(
                    field.span(),
                    format!("{what} names field `{}`, which `fields` does not select (expected one of {})", **field, list(sel)),
                );
            }
        }
    }

    /// A summed field whose type `types:` declares must be an integer or a decimal: floats
    /// cannot be added exactly, and other types are not numbers.
    fn exactly_summable(&mut self, m: &RawMapping, field: &Spanned<String>) {
        let column = column_of(m, field);
        let Some(declared) = m.types.get(column) else {
            return;
        };
        let Ok(ty) = declared.parse::<DeclaredType>() else {
            return;
        };
        if !matches!(
            ty,
            DeclaredType::Int
                | DeclaredType::Long
                | DeclaredType::Decimal { .. }
                | DeclaredType::VariableScaleDecimal
        ) {
            self.error(
                field.span(),
                format!(
                    "sum over field `{}`, whose column `{column}` is declared `{}` (expected an integer or decimal column: `int`, `long`, `decimal(S)` or `variable_scale_decimal`)",
                    **field, **declared
                ),
            );
        }
    }

    /// Checks the `aggregate:` of lookup `l`: it names an aggregate of the mapping, is not
    /// combined with `relation`, and each parameter fills the aggregate key's single field.
    pub(super) fn lookup_aggregate(
        &mut self,
        m: &RawMapping,
        l: &RawLookup,
        aggregates: &[Aggregate],
    ) {
        let Some(name) = &l.aggregate else { return };
        if let Some(relation) = &l.relation {
            self.error(
                relation.span(),
                "`relation` and `aggregate` in one lookup (expected one of them)".to_owned(),
            );
        }
        let Some(aggregate) = aggregates.iter().find(|a| a.name == **name) else {
            if !m.aggregates.iter().any(|a| *a.name == **name) {
                self.error(
                    name.span(),
                    format!(
                        "unknown aggregate `{}` (expected one of {})",
                        **name,
                        list(m.aggregates.iter().map(|a| a.name.as_str()))
                    ),
                );
            }
            return;
        };
        for p in &l.by {
            if let Some(ix) = &p.index {
                self.error(
                    ix.span(),
                    format!("parameter `{}` has an `index` in an aggregate lookup (expected a parameter that fills the aggregate key)", *p.param),
                );
            } else if aggregate.key.single_field().is_none() {
                self.error(
                    p.param.span(),
                    format!("parameter `{}` fills aggregate key `{}`, which does not have exactly one field (expected an aggregate key with one placeholder)", *p.param, aggregate.key),
                );
            }
        }
    }
}

/// The Debezium column stored as `field` (the field itself under `fields: all`).
fn column_of<'m>(m: &'m RawMapping, field: &'m str) -> &'m str {
    let RawFields::List(items) = &m.fields else {
        return field;
    };
    items
        .iter()
        .find_map(|item| match &**item {
            RawField::Renamed(r) if *r.to == field => Some(r.from.as_str()),
            _ => None,
        })
        .unwrap_or(field)
}

#[cfg(test)]
mod tests {
    use crate::load::{load_config_str, ConnectionOverrides};

    /// An orders mapping with an aggregate and its lookup, edited by the tests.
    const ORDERS: &str = r#"mappings:
  - name: orders
    topic: cdc.public.orders
    key: "order:{id}"
    types: { total_cents: long, note: string }
    aggregates:
      - name: customer_order_stats
        key: "customer:{customer_id}:order_stats"
        count: true
        sum: [total_cents]
        group_by: status
    lookups:
      - tool: get_customer_order_stats
        description: Count and total of a customer's orders
        aggregate: customer_order_stats
        by: [{ param: customer_id, type: integer, description: Customer ID }]
"#;

    fn errors(yaml: &str) -> String {
        match load_config_str(yaml, "connectors.yaml", &ConnectionOverrides::default()) {
            Ok(_) => "OK".to_owned(),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn a_valid_aggregate_and_its_lookup_load() {
        let config = load_config_str(ORDERS, "connectors.yaml", &ConnectionOverrides::default())
            .unwrap_or_else(|e| panic!("{e}"));
        let orders = &config.mappings[0];
        let a = orders.aggregate("customer_order_stats").expect("aggregate");
        assert_eq!(a.key.to_string(), "customer:{customer_id}:order_stats");
        assert!(a.count);
        assert_eq!(a.sum, ["total_cents"]);
        assert_eq!(a.group_by.as_deref(), Some("status"));
        assert_eq!(a.groups_name().as_deref(), Some("by_status"));
        let (_, lookup) = config.lookup("get_customer_order_stats").expect("lookup");
        assert_eq!(lookup.aggregate.as_deref(), Some("customer_order_stats"));
        assert_eq!(lookup.relation, None);
    }

    #[test]
    fn unknown_aggregate_fields_are_errors() {
        let yaml = ORDERS.replace(
            "group_by: status",
            "group_by: status\n        average: [total_cents]",
        );
        assert_eq!(
            errors(&yaml),
            "connectors.yaml:12:9: mappings[0].aggregates[0]: unknown key `average` (expected one of `name`, `key`, `count`, `sum`, `group_by`)"
        );
    }

    #[test]
    fn aggregate_keys_must_be_valid_templates() {
        let yaml = ORDERS.replace(
            "customer:{customer_id}:order_stats",
            "customer:{customer_id:order_stats",
        );
        assert!(
            errors(&yaml).starts_with("connectors.yaml:8:14: invalid mapping `orders` aggregate `customer_order_stats` key `customer:{customer_id:order_stats`"),
            "{}",
            errors(&yaml)
        );
        let yaml = ORDERS.replace("customer:{customer_id}:order_stats", "order:{id}");
        assert!(
            errors(&yaml).contains("can produce the same keys as mapping `orders` row key"),
            "{}",
            errors(&yaml)
        );
        let yaml = ORDERS.replace("customer:{customer_id}:order_stats", "sink:{customer_id}");
        assert!(
            errors(&yaml).contains("uses the reserved `sink:` prefix"),
            "{}",
            errors(&yaml)
        );
    }

    #[test]
    fn lookups_must_name_an_aggregate_of_the_mapping() {
        let yaml = ORDERS.replace("aggregate: customer_order_stats", "aggregate: order_stats");
        assert_eq!(
            errors(&yaml),
            "connectors.yaml:15:20: unknown aggregate `order_stats` (expected one of `customer_order_stats`)"
        );
        let yaml = ORDERS.replace(
            "customer:{customer_id}:order_stats",
            "customer:{customer_id}:{status}:order_stats",
        );
        assert_eq!(
            errors(&yaml),
            "connectors.yaml:16:23: parameter `customer_id` fills aggregate key `customer:{customer_id}:{status}:order_stats`, which does not have exactly one field (expected an aggregate key with one placeholder)"
        );
        let yaml = ORDERS.replace(
            "aggregate: customer_order_stats",
            "aggregate: customer_order_stats\n        relation: customer_orders",
        );
        assert!(errors(&yaml).contains("connectors.yaml:16:19: `relation` and `aggregate` in one lookup (expected one of them)"), "{}", errors(&yaml));
    }

    #[test]
    fn sums_are_over_stored_exact_numbers() {
        let yaml = ORDERS.replace("sum: [total_cents]", "sum: [note]");
        assert_eq!(
            errors(&yaml),
            "connectors.yaml:10:15: sum over field `note`, whose column `note` is declared `string` (expected an integer or decimal column: `int`, `long`, `decimal(S)` or `variable_scale_decimal`)"
        );
        let yaml = ORDERS.replace("total_cents: long", "total_cents: double");
        assert!(
            errors(&yaml).contains("is declared `double`"),
            "{}",
            errors(&yaml)
        );
        let yaml = ORDERS.replace("total_cents: long", "total_cents: decimal(2)");
        assert_eq!(errors(&yaml), "OK");
        let yaml = ORDERS.replace("sum: [total_cents]", "sum: [total_cents, total_cents]");
        assert_eq!(
            errors(&yaml),
            "connectors.yaml:10:28: field `total_cents` is summed twice (expected each field once)"
        );
        let yaml = ORDERS.replace(
            "key: \"order:{id}\"",
            "key: \"order:{id}\"\n    fields: [id, customer_id, {from: total_cents, as: total}]",
        );
        assert_eq!(
            errors(&yaml),
            "connectors.yaml:11:15: sum names field `total_cents`, which `fields` does not select (expected one of `id`, `customer_id`, `total`)\n\
             connectors.yaml:12:19: group_by names field `status`, which `fields` does not select (expected one of `id`, `customer_id`, `total`)"
        );
        let yaml = ORDERS
            .replace("count: true", "count: false")
            .replace("sum: [total_cents]", "sum: []");
        assert_eq!(
            errors(&yaml),
            "connectors.yaml:7:15: aggregate `customer_order_stats` has nothing to compute (expected `count: true` or a `sum` list)"
        );
        let yaml = ORDERS.replace("name: customer_order_stats", "name: \"stats!\"");
        assert!(
            errors(&yaml).contains("invalid aggregate name `stats!`"),
            "{}",
            errors(&yaml)
        );
    }
}
