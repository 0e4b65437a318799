//! Prefix searches (`search:`) kept by both writers against a real Redis: one member per live
//! row with a value, ordered by the Unicode-folded value then the primary key, exact after
//! renames, NULLs, deletes under REPLICA IDENTITY DEFAULT (the before image holds only the
//! key), primary-key changes, replays, truncate; an exclusive writer continues the members
//! the script stored.

use mapping::{FieldValue, Op};

use crate::support::{
    customer_row, delete_customer, dump_tagged, tombstone, truncate, upsert, Fixture, CUSTOMERS, T0,
};

/// A customer upsert with `name` (`None`: NULL).
fn customer(op: Op, id: i64, name: Option<&str>, lsn: i64) -> (usize, mapping::Change) {
    let mut row = customer_row(id, &format!("c{id}@example.com"), "", T0 + lsn);
    for (field, value) in &mut row {
        if field == "name" {
            *value = name.map_or(FieldValue::Null, |n| FieldValue::String(n.into()));
        }
    }
    (CUSTOMERS, upsert(op, row, lsn))
}

/// The row keys the search's sorted set lists, in its (byte) order, and whether the members
/// hash names exactly the same members.
async fn searched(f: &Fixture) -> Vec<String> {
    let name = &f.config.mappings[CUSTOMERS].name;
    let mut conn = f.conn().await;
    let members: Vec<String> = redis::cmd("ZRANGE")
        .arg(mapping::layout::search_key(name, "name_prefix"))
        .arg(0)
        .arg(-1)
        .query_async(&mut *conn)
        .await
        .expect("ZRANGE");
    let recorded: Vec<String> = redis::cmd("HVALS")
        .arg(mapping::layout::search_members_key(name, "name_prefix"))
        .query_async(&mut *conn)
        .await
        .expect("HVALS");
    let mut sorted = recorded.clone();
    sorted.sort();
    assert_eq!(
        sorted, members,
        "the members hash and the sorted set disagree"
    );
    members
        .iter()
        .map(|m| {
            let (folded, rest) = m.split_once('\0').expect("a member has a folded value");
            let row = mapping::search::member_row_key(rest).replace(&f.tag, "P");
            format!("{folded} -> {row}")
        })
        .collect()
}

#[tokio::test]
async fn search_members_follow_every_change_exactly() {
    follow_every_change(Fixture::new().await).await;
    follow_every_change(Fixture::owning().await).await;
}

async fn follow_every_change(f: Fixture) {
    let first = [
        customer(Op::Read, 1, Some("Jane Doe"), 100),
        customer(Op::Read, 2, Some("jane austen"), 110),
        customer(Op::Read, 10, Some("JANET"), 120),
        customer(Op::Read, 9, Some("Janet"), 130),
        customer(Op::Read, 3, Some("Ågot Øvre"), 140),
        customer(Op::Read, 4, None, 150),
    ];
    f.apply(&first).await;
    assert_eq!(
        searched(&f).await,
        [
            "jane austen -> P:customer:2",
            "jane doe -> P:customer:1",
            // Equal folded values: by primary key, 9 before 10.
            "janet -> P:customer:9",
            "janet -> P:customer:10",
            "ågot øvre -> P:customer:3",
        ]
    );
    // A rename, a name set from NULL and one set to NULL; the first batch replayed (no-ops);
    // a delete whose before image holds only the key, twice, and its tombstone; customer 10's
    // primary key changes to 11 (Debezium: a delete of the old key, then a create).
    f.apply(&[
        customer(Op::Update, 1, Some("Bob"), 200),
        customer(Op::Update, 4, Some("ÉLODIE"), 210),
        customer(Op::Update, 9, None, 220),
    ])
    .await;
    f.apply(&first).await;
    f.apply(&[(CUSTOMERS, delete_customer(2, 230))]).await;
    f.apply(&[
        (CUSTOMERS, delete_customer(2, 230)),
        (CUSTOMERS, tombstone(2)),
    ])
    .await;
    f.apply(&[
        (CUSTOMERS, delete_customer(10, 240)),
        customer(Op::Create, 11, Some("JANET"), 240),
    ])
    .await;
    assert_eq!(
        searched(&f).await,
        [
            "bob -> P:customer:1",
            "janet -> P:customer:11",
            "ågot øvre -> P:customer:3",
            "élodie -> P:customer:4",
        ]
    );
    f.apply(&[(CUSTOMERS, truncate(250))]).await;
    assert_eq!(searched(&f).await, Vec::<String>::new());
}

#[tokio::test]
async fn an_exclusive_writer_continues_the_scripts_search_members() {
    let script = Fixture::new().await;
    script
        .apply(&[
            customer(Op::Read, 1, Some("Jane"), 100),
            customer(Op::Read, 2, Some("Ågot"), 110),
        ])
        .await;
    let lease = std::time::Duration::from_secs(5);
    let applier = script.exclusive_applier(lease).await;
    let f = script.handed_to(applier);
    // The exclusive writer loaded each row's member: a rename and a delete remove the old
    // ones, as the script would have.
    f.apply(&[
        customer(Op::Update, 1, Some("Zoë"), 200),
        (CUSTOMERS, delete_customer(2, 210)),
    ])
    .await;
    assert_eq!(searched(&f).await, ["zoë -> P:customer:1"]);
    let offsets: Vec<String> = Vec::new();
    let dump = dump_tagged(&f.pool, &f.tag, &offsets, false).await;
    assert!(!dump.contains("ågot"), "{dump}");
}
