//! Random source histories and their delivery: abstract steps (upsert, delete, primary-key
//! change, truncate) played against a model of the source tables, which keeps unique values
//! unique and emits what Debezium would (snapshot reads sharing one position, `before`
//! images under REPLICA IDENTITY DEFAULT and FULL, delete + tombstone + create for a key
//! change, TOAST placeholders for unchanged text), into one log per topic partition; then
//! the logs delivered in random interleavings and batches, with suffixes of partitions
//! delivered again.

use std::collections::BTreeMap;

use mapping::{Change, FieldValue, Op, Row};
use proptest::prelude::*;

use super::config::ConfigSpec;

/// `created_at` base (epoch microseconds).
const T0: i64 = 1_795_480_593_142_906;
/// Source position of the snapshot reads.
const SNAPSHOT_LSN: i64 = 1_000;
/// Rows have ids 1..=IDS (in two regions when the key is composite).
const IDS: u8 = 6;
const REGIONS: [&str; 3] = ["eu", "us", "ap"];
const EMAILS: u8 = 6;
const CODES: i64 = 13;

/// One thing happening in the source database.
#[derive(Debug, Clone)]
pub enum Step {
    /// Insert the row, or update it if it exists; `values` pick email, code, parent,
    /// created_at, label (and region for single-column keys); `toast` bits send unchanged
    /// note (1), email (2) and label (4) as unavailable.
    Upsert {
        table: u8,
        row: u8,
        values: [u8; 5],
        toast: u8,
    },
    /// Delete the row, `before` under REPLICA IDENTITY FULL or DEFAULT, with or without the
    /// tombstone.
    Delete {
        table: u8,
        row: u8,
        full: bool,
        tombstone: bool,
    },
    /// Change the row's primary key to that of row `to` (if free).
    ChangeKey { table: u8, row: u8, to: u8 },
    /// Truncate the table (the event lands on partition `partition` modulo the count).
    Truncate { table: u8, partition: u8 },
}

/// One delivery step: from log `log` (modulo the live ones), first going back `rewind`
/// messages when `rewind` is 1..=8 (a redelivered suffix, always at a batch boundary), then
/// `take % 4 + 1` messages; `cut` ends the batch after them.
#[derive(Debug, Clone, Copy)]
pub struct Delivery {
    pub log: u8,
    pub take: u8,
    pub rewind: u8,
    pub cut: bool,
}

#[derive(Debug, Clone)]
pub struct HistorySpec {
    /// How many of the first steps are the snapshot (only inserts count there, as reads).
    pub snapshot: u8,
    pub steps: Vec<Step>,
    pub deliveries: Vec<Delivery>,
}

pub fn history_spec(max_steps: usize) -> impl Strategy<Value = HistorySpec> {
    let table = 0..3_u8;
    let row = 0..IDS * 2;
    let step = prop_oneof![
        6 => (table.clone(), row.clone(), any::<[u8; 5]>(), any::<u8>())
            .prop_map(|(table, row, values, toast)| Step::Upsert { table, row, values, toast }),
        2 => (table.clone(), row.clone(), any::<bool>(), prop::bool::weighted(0.8))
            .prop_map(|(table, row, full, tombstone)| Step::Delete { table, row, full, tombstone }),
        1 => (table.clone(), row.clone(), row)
            .prop_map(|(table, row, to)| Step::ChangeKey { table, row, to }),
        1 => (table, any::<u8>()).prop_map(|(table, partition)| Step::Truncate { table, partition }),
    ];
    let delivery = (
        any::<u8>(),
        any::<u8>(),
        0..40_u8,
        prop::bool::weighted(0.5),
    )
        .prop_map(|(log, take, rewind, cut)| Delivery {
            log,
            take,
            rewind,
            cut,
        });
    (
        0..8_u8,
        prop::collection::vec(step, 1..=max_steps),
        prop::collection::vec(delivery, 1..=24),
    )
        .prop_map(|(snapshot, steps, deliveries)| HistorySpec {
            snapshot,
            steps,
            deliveries,
        })
}

/// One record of a topic partition.
#[derive(Debug, Clone)]
pub struct Message {
    /// Mapping (table) number.
    pub table: usize,
    pub partition: i32,
    pub offset: i64,
    pub change: Change,
}

/// A source row's column values.
#[derive(Debug, Clone, PartialEq)]
struct Values {
    region: String,
    email: Option<String>,
    code: i64,
    parent: Option<i64>,
    created: Option<i64>,
    label: String,
    note: String,
}

/// Primary key: id and region (empty for single-column keys).
type Pk = (i64, &'static str);

/// The source tables and the partition logs they produced.
struct Source<'a> {
    spec: &'a ConfigSpec,
    tables: Vec<BTreeMap<Pk, Values>>,
    /// Per table, per partition.
    logs: Vec<Vec<Vec<Message>>>,
}

/// Plays `history` against the source model: the messages of every topic partition.
pub fn logs(spec: &ConfigSpec, history: &HistorySpec) -> Vec<Vec<Message>> {
    let mut source = Source {
        spec,
        tables: vec![BTreeMap::new(); spec.tables.len()],
        logs: spec
            .tables
            .iter()
            .map(|t| vec![Vec::new(); usize::from(t.partitions)])
            .collect(),
    };
    let mut lsn = SNAPSHOT_LSN;
    for (n, step) in history.steps.iter().enumerate() {
        if n < usize::from(history.snapshot) {
            if let Step::Upsert { .. } = step {
                source.step(step, SNAPSHOT_LSN, true);
            }
            continue;
        }
        lsn += 10;
        source.step(step, lsn, false);
    }
    source.logs.into_iter().flatten().collect()
}

impl Source<'_> {
    fn pk(&self, t: usize, row: u8) -> Pk {
        let id = i64::from(row % IDS) + 1;
        if self.spec.tables[t].composite {
            (id, REGIONS[usize::from(row / IDS) % 2])
        } else {
            (id, "")
        }
    }

    fn partition(&self, t: usize, pk: Pk) -> usize {
        let region = REGIONS.iter().position(|r| *r == pk.1).unwrap_or(0);
        (pk.0 as usize + region) % usize::from(self.spec.tables[t].partitions)
    }

    fn emit(&mut self, t: usize, partition: usize, change: Change) {
        let log = &mut self.logs[t][partition];
        log.push(Message {
            table: t,
            partition: i32::try_from(partition).expect("few partitions"),
            offset: i64::try_from(log.len()).expect("short logs"),
            change,
        });
    }

    fn step(&mut self, step: &Step, lsn: i64, snapshot: bool) {
        let table = |t: u8| usize::from(t) % self.spec.tables.len();
        match *step {
            Step::Upsert {
                table: t,
                row,
                values,
                toast,
            } => {
                let t = table(t);
                let pk = self.pk(t, row);
                let old = self.tables[t].get(&pk).cloned();
                if snapshot && old.is_some() {
                    return;
                }
                let mut new = self.values(t, pk, values, lsn, old.as_ref());
                // TOASTed text the update did not change: the source keeps the old value,
                // Debezium sends the placeholder.
                let mut unavailable = Vec::new();
                if let Some(old) = &old {
                    if toast & 1 != 0 {
                        new.note.clone_from(&old.note);
                        unavailable.push("note");
                    }
                    if toast & 2 != 0 && old.email.is_some() {
                        new.email.clone_from(&old.email);
                        unavailable.push("email");
                    }
                    if toast & 4 != 0 {
                        new.label.clone_from(&old.label);
                        unavailable.push("label");
                    }
                }
                let mut after = row_of(pk, &new);
                for column in unavailable {
                    set(&mut after, column, FieldValue::Unavailable);
                }
                let op = match (snapshot, &old) {
                    (true, _) => Op::Read,
                    (false, None) => Op::Create,
                    (false, Some(_)) => Op::Update,
                };
                self.tables[t].insert(pk, new);
                let p = self.partition(t, pk);
                self.emit(t, p, change(op, key_of(pk), None, Some(after), lsn));
            }
            Step::Delete {
                table: t,
                row,
                full,
                tombstone,
            } => {
                let t = table(t);
                let pk = self.pk(t, row);
                if let Some(old) = self.tables[t].remove(&pk) {
                    self.delete(t, pk, &old, full, tombstone, lsn);
                }
            }
            Step::ChangeKey { table: t, row, to } => {
                let t = table(t);
                let (from, to) = (self.pk(t, row), self.pk(t, to));
                if from == to || self.tables[t].contains_key(&to) {
                    return;
                }
                let Some(values) = self.tables[t].remove(&from) else {
                    return;
                };
                self.delete(t, from, &values, false, true, lsn);
                let mut moved = values;
                if !to.1.is_empty() {
                    to.1.clone_into(&mut moved.region);
                }
                let after = row_of(to, &moved);
                self.tables[t].insert(to, moved);
                let p = self.partition(t, to);
                self.emit(t, p, change(Op::Create, key_of(to), None, Some(after), lsn));
            }
            Step::Truncate {
                table: t,
                partition,
            } => {
                let t = table(t);
                self.tables[t].clear();
                let p = usize::from(partition) % self.logs[t].len();
                self.emit(t, p, change(Op::Truncate, vec![], None, None, lsn));
            }
        }
    }

    /// `d` (and its tombstone) of row `pk` of table `t`, which held `old`.
    fn delete(&mut self, t: usize, pk: Pk, old: &Values, full: bool, tombstone: bool, lsn: i64) {
        let before = if full {
            row_of(pk, old)
        } else {
            // REPLICA IDENTITY DEFAULT: the key, and Avro defaults elsewhere.
            let mut r = row_of(pk, old);
            for (name, value) in &mut r {
                *value = match name.as_str() {
                    "id" => continue,
                    "region" if !pk.1.is_empty() => continue,
                    "code" => FieldValue::Int(0),
                    "parent_id" => FieldValue::Null,
                    "created_at" => FieldValue::TimestampMicros(0),
                    _ => FieldValue::String(String::new()),
                };
            }
            r
        };
        let p = self.partition(t, pk);
        self.emit(
            t,
            p,
            change(Op::Delete, key_of(pk), Some(before), None, lsn),
        );
        if tombstone {
            let mut c = change(Op::Tombstone, key_of(pk), None, None, lsn);
            c.position = None;
            self.emit(t, p, c);
        }
    }

    /// New values of row `pk` from `picks`, keeping email and code unique in the table.
    fn values(&self, t: usize, pk: Pk, picks: [u8; 5], lsn: i64, old: Option<&Values>) -> Values {
        let others: Vec<&Values> = self.tables[t]
            .iter()
            .filter(|(k, _)| **k != pk)
            .map(|(_, v)| v)
            .collect();
        let [e, c, p, ts, l] = picks;
        let email = (0..EMAILS)
            .map(|i| (e % (EMAILS + 1) + i) % (EMAILS + 1))
            .map(|i| (i < EMAILS).then(|| format!("e{i}@example.com")))
            .find(|candidate| candidate.is_none() || others.iter().all(|o| o.email != *candidate))
            .flatten();
        let code = (0..CODES)
            .map(|i| (i64::from(c) + i) % CODES)
            .find(|candidate| others.iter().all(|o| o.code != *candidate))
            .expect("more codes than rows");
        let region = if pk.1.is_empty() {
            old.map_or_else(
                || REGIONS[usize::from(e ^ c) % 3].to_owned(),
                |o| o.region.clone(),
            )
        } else {
            pk.1.to_owned()
        };
        Values {
            region,
            email,
            code,
            parent: (p % 5 < 4).then(|| i64::from(p % 5) + 1),
            created: (ts % 6 < 5).then(|| T0 + i64::from(ts % 6) * 1_000_000),
            label: ["a", "b", "c"][usize::from(l % 3)].to_owned(),
            note: format!("n{lsn}"),
        }
    }
}

fn set(row: &mut Row, column: &str, value: FieldValue) {
    if let Some((_, v)) = row.iter_mut().find(|(n, _)| n == column) {
        *v = value;
    }
}

fn key_of(pk: Pk) -> Row {
    let mut key = Vec::new();
    if !pk.1.is_empty() {
        key.push(("region".to_owned(), FieldValue::String(pk.1.to_owned())));
    }
    key.push(("id".to_owned(), FieldValue::Int(pk.0)));
    key
}

fn row_of(pk: Pk, v: &Values) -> Row {
    let opt = |o: Option<FieldValue>| o.unwrap_or(FieldValue::Null);
    vec![
        ("id".into(), FieldValue::Int(pk.0)),
        ("region".into(), FieldValue::String(v.region.clone())),
        ("email".into(), opt(v.email.clone().map(FieldValue::String))),
        ("code".into(), FieldValue::Int(v.code)),
        ("parent_id".into(), opt(v.parent.map(FieldValue::Int))),
        (
            "created_at".into(),
            opt(v.created.map(FieldValue::TimestampMicros)),
        ),
        ("label".into(), FieldValue::String(v.label.clone())),
        ("note".into(), FieldValue::String(v.note.clone())),
    ]
}

fn change(op: Op, key: Row, before: Option<Row>, after: Option<Row>, lsn: i64) -> Change {
    Change {
        op,
        key,
        before,
        after,
        position: Some(lsn),
        source_ts_ms: Some(1_795_480_000_000 + lsn / 10),
    }
}

/// The logs delivered as `deliveries` say, cycling through them until every log is
/// delivered to its end: batches of messages, each partition's in order.
pub fn deliver<'a>(logs: &'a [Vec<Message>], deliveries: &[Delivery]) -> Vec<Vec<&'a Message>> {
    let total: usize = logs.iter().map(Vec::len).sum();
    let mut next = vec![0_usize; logs.len()];
    let mut rewound = 0;
    let mut batches = Vec::new();
    let mut batch: Vec<&Message> = Vec::new();
    for d in deliveries.iter().cycle() {
        let live: Vec<usize> = (0..logs.len())
            .filter(|l| next[*l] < logs[*l].len())
            .collect();
        if live.is_empty() {
            break;
        }
        let l = live[usize::from(d.log) % live.len()];
        // Go back at most 8 messages, and (so the history ends) at most `total` in all.
        let back = usize::from(d.rewind).min(next[l]);
        if (1..=8).contains(&d.rewind) && back > 0 && rewound < total {
            batches.extend((!batch.is_empty()).then(|| std::mem::take(&mut batch)));
            next[l] -= back;
            rewound += back;
        }
        let end = (next[l] + usize::from(d.take % 4) + 1).min(logs[l].len());
        batch.extend(&logs[l][next[l]..end]);
        next[l] = end;
        if d.cut {
            batches.extend((!batch.is_empty()).then(|| std::mem::take(&mut batch)));
        }
    }
    batches.extend((!batch.is_empty()).then_some(batch));
    batches
}
