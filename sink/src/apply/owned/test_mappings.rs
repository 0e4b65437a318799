//! The mappings the owning writer's unit tests decide against: customers with a unique
//! email index, orders in their customer's relation (the reference schema's shape).

use mapping::{FieldSelection, Index, KeyTemplate, Mapping, Relation};

/// `customers`: `customer:{id}`, unique index `customer:email:{email}`.
pub(crate) fn customers() -> Mapping {
    Mapping {
        name: "customers".into(),
        topic: "cdc.customers".into(),
        key: KeyTemplate::parse("customer:{id}").unwrap(),
        fields: FieldSelection::All,
        types: Default::default(),
        ttl_seconds: None,
        indexes: vec![Index {
            name: "email".into(),
            key: KeyTemplate::parse("customer:email:{email}").unwrap(),
        }],
        relations: vec![],
        lookups: vec![],
        aggregates: vec![],
        search: vec![],
    }
}

/// `orders`: `order:{id}`, members of `customer:{customer_id}:orders` by `created_at`.
pub(crate) fn orders() -> Mapping {
    Mapping {
        name: "orders".into(),
        topic: "cdc.orders".into(),
        key: KeyTemplate::parse("order:{id}").unwrap(),
        indexes: vec![],
        relations: vec![Relation {
            name: "customer_orders".into(),
            key: KeyTemplate::parse("customer:{customer_id}:orders").unwrap(),
            order_by: "created_at".into(),
        }],
        ..customers()
    }
}
