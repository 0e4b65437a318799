//! Generated change histories over the reference tables (`customers`, `orders`):
//! reproducible from a seed, built from recorded envelopes, with the rows that exist at the
//! end so tests can check the read model against them.

use std::collections::BTreeMap;

use serde_json::Value as Json;

/// The two tables of the reference schema (`customers`, `orders`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Table {
    /// `customers(id, email UNIQUE, name, plan, mrr_cents, created_at, updated_at)`.
    Customers,
    /// `orders(id, customer_id, status, total_cents, items JSONB, created_at, updated_at)`.
    Orders,
}

impl Table {
    /// The table name (`customers`, `orders`).
    pub fn name(self) -> &'static str {
        match self {
            Table::Customers => "customers",
            Table::Orders => "orders",
        }
    }
}

/// One change event as JSON: key row and envelope (`None`: tombstone).
#[derive(Debug, Clone)]
pub struct Event {
    /// The table.
    pub table: Table,
    /// Key row, e.g. `{"id": 7}`.
    pub key: Json,
    /// Envelope; `None` for a tombstone.
    pub value: Option<Json>,
}

/// A generated stream of changes and the rows that exist at its end.
#[derive(Debug, Clone, Default)]
pub struct Workload {
    /// The events in source order.
    pub events: Vec<Event>,
    /// Final `after` image of every customer that exists at the end, by id.
    pub customers: BTreeMap<i64, Json>,
    /// Final `after` image of every order that exists at the end, by id.
    pub orders: BTreeMap<i64, Json>,
}

/// A tiny deterministic generator (64-bit LCG), so workloads are reproducible.
#[derive(Debug, Clone)]
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

const STATUSES: [&str; 4] = ["pending", "paid", "shipped", "delivered"];
const PLANS: [&str; 3] = ["free", "pro", "enterprise"];

/// Generates about `n` events (deletes add a tombstone, so a few more) from recorded envelope
/// templates: customer inserts, updates (every update changes the unique email) and deletes;
/// order inserts (for existing customers), status updates and deletes. Positions (`lsn`) grow
/// by event; times start at `start_ms`.
pub fn workload(
    n: usize,
    seed: u64,
    customer_template: &Json,
    order_template: &Json,
    start_ms: i64,
) -> Workload {
    let mut rng = Lcg(seed);
    let mut w = Workload {
        events: Vec::with_capacity(n + n / 10),
        ..Workload::default()
    };
    let mut lsn: i64 = 50_000_000;
    let mut next_customer = 1i64;
    let mut next_order = 1i64;
    let mut customer_ids: Vec<i64> = Vec::new();
    let mut order_ids: Vec<i64> = Vec::new();
    let mut version = 0u64;
    while w.events.len() < n {
        lsn += 16;
        let ms = start_ms + (lsn - 50_000_000) / 16;
        let micros = ms * 1000;
        let roll = rng.below(100);
        let push = |w: &mut Workload, table: Table, id: i64, value: Option<Json>| {
            w.events.push(Event {
                table,
                key: serde_json::json!({ "id": id }),
                value,
            });
        };
        if customer_ids.len() < 10 || roll < 20 {
            let id = next_customer;
            next_customer += 1;
            let row = serde_json::json!({
                "id": id, "email": format!("c{id}@example.com"), "name": format!("Customer {id}"),
                "plan": PLANS[(id % 3) as usize], "mrr_cents": (id % 50) * 100,
                "created_at": micros, "updated_at": micros,
            });
            let value = envelope(customer_template, "c", None, Some(row.clone()), lsn, ms);
            push(&mut w, Table::Customers, id, Some(value));
            w.customers.insert(id, row);
            customer_ids.push(id);
        } else if roll < 45 {
            let id = customer_ids[rng.below(customer_ids.len() as u64) as usize];
            version += 1;
            let mut row = w.customers[&id].clone();
            row["email"] = Json::from(format!("c{id}-v{version}@example.com"));
            row["mrr_cents"] = Json::from(rng.below(100_000));
            row["updated_at"] = Json::from(micros);
            let value = envelope(customer_template, "u", None, Some(row.clone()), lsn, ms);
            push(&mut w, Table::Customers, id, Some(value));
            w.customers.insert(id, row);
        } else if roll < 50 {
            let i = rng.below(customer_ids.len() as u64) as usize;
            let id = customer_ids.swap_remove(i);
            let before = w.customers.remove(&id);
            let value = envelope(customer_template, "d", before, None, lsn, ms);
            push(&mut w, Table::Customers, id, Some(value));
            push(&mut w, Table::Customers, id, None);
        } else if roll < 75 || order_ids.is_empty() {
            let id = next_order;
            next_order += 1;
            let customer = customer_ids[rng.below(customer_ids.len() as u64) as usize];
            let qty = 1 + rng.below(5);
            let row = serde_json::json!({
                "id": id, "customer_id": customer, "status": "pending",
                "total_cents": qty * 1250,
                "items": format!(r#"[{{"qty": {qty}, "sku": "SKU-{}", "price_cents": 1250}}]"#, id % 97),
                "created_at": micros, "updated_at": micros,
            });
            let value = envelope(order_template, "c", None, Some(row.clone()), lsn, ms);
            push(&mut w, Table::Orders, id, Some(value));
            w.orders.insert(id, row);
            order_ids.push(id);
        } else if roll < 95 {
            let id = order_ids[rng.below(order_ids.len() as u64) as usize];
            let mut row = w.orders[&id].clone();
            row["status"] = Json::from(STATUSES[rng.below(4) as usize]);
            row["updated_at"] = Json::from(micros);
            let value = envelope(order_template, "u", None, Some(row.clone()), lsn, ms);
            push(&mut w, Table::Orders, id, Some(value));
            w.orders.insert(id, row);
        } else {
            let i = rng.below(order_ids.len() as u64) as usize;
            let id = order_ids.swap_remove(i);
            let before = w.orders.remove(&id);
            let value = envelope(order_template, "d", before, None, lsn, ms);
            push(&mut w, Table::Orders, id, Some(value));
            push(&mut w, Table::Orders, id, None);
        }
    }
    w
}

/// A Debezium envelope like `template` (a recorded sample's value: `source` and the other
/// fields are kept) with another operation, row images, position and times.
pub fn envelope(
    template: &Json,
    op: &str,
    before: Option<Json>,
    after: Option<Json>,
    lsn: i64,
    ts_ms: i64,
) -> Json {
    let mut value = template.clone();
    if let Some(object) = value.as_object_mut() {
        object.insert("op".into(), Json::from(op));
        object.insert("before".into(), before.unwrap_or(Json::Null));
        object.insert("after".into(), after.unwrap_or(Json::Null));
        object.insert("ts_ms".into(), Json::from(ts_ms));
        object.insert("ts_us".into(), Json::from(ts_ms * 1000));
        object.insert("ts_ns".into(), Json::from(ts_ms * 1_000_000));
        if let Some(source) = object.get_mut("source").and_then(Json::as_object_mut) {
            source.insert("lsn".into(), Json::from(lsn));
            source.insert("ts_ms".into(), Json::from(ts_ms));
            source.insert("ts_us".into(), Json::from(ts_ms * 1000));
            source.insert("ts_ns".into(), Json::from(ts_ms * 1_000_000));
            source.insert(
                "snapshot".into(),
                Json::from(if op == "r" { "true" } else { "false" }),
            );
        }
    }
    value
}
