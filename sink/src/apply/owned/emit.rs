//! The writes of one decided batch, coalesced, as data ([`Write`]).
//!
//! A batch is sent as one `MULTI`/`EXEC`, so readers only ever see its final effect: the
//! writes can be *coalesced* per key (the last value of each index key, the final fields of
//! each row hash, the final membership of each relation member) and sent as few multi-key
//! commands (`MSET`, multi-key `DEL`, one `HSET` per row, one `ZADD`/`ZREM` per parent).
//! That takes about a tenth off Redis's CPU per change and off the sink's encoding and reply
//! parsing (BENCHMARKS.md, *Exclusive writer*). A coalesced command belongs to no single
//! change: when one fails (only possible when another program wrote a mapped key with
//! another type), the writer reports the command and its key, not a change.
//!
//! A row's key, field names and values are borrowed from the batch's plans (`'b`), not
//! copied: the transaction is encoded while the batch is still held, and those copies were
//! the largest share of the allocations `perf` found in the owning writer's decisions.

use std::borrow::Cow;

use mapping::plan::{FieldWrite, RowUpsert};

use super::HashMap;

/// Keys, fields and values per command at most (a command's size stays moderate).
const SLICE: usize = 512;

/// The final effect of a batch's writes on one row hash.
#[derive(Default)]
struct RowWrites<'b> {
    /// The key was deleted (then written again from scratch by the fields below).
    deleted: bool,
    /// Field -> final value (`None`: removed), in first-written order.
    fields: Vec<(Cow<'b, str>, Option<Cow<'b, str>>)>,
}

impl<'b> RowWrites<'b> {
    fn set(&mut self, field: Cow<'b, str>, value: Option<Cow<'b, str>>) {
        match self.fields.iter_mut().find(|(f, _)| *f == field) {
            Some((_, v)) => *v = value,
            None => self.fields.push((field, value)),
        }
    }
}

/// The commands of a batch being decided.
#[derive(Default)]
pub(crate) struct Writes<'b> {
    /// Row key -> final hash writes.
    rows: HashMap<Cow<'b, str>, RowWrites<'b>>,
    /// String key (index entry) -> final value (`None`: deleted).
    strings: HashMap<String, Option<String>>,
    /// Parent -> member -> final score (`None`: removed).
    members: HashMap<String, HashMap<String, Option<f64>>>,
}

impl<'b> Writes<'b> {
    /// The row hash as upsert `u` writes it: set fields, removed (NULL) fields.
    pub(crate) fn write_hash(&mut self, u: &'b RowUpsert) {
        let row = self.rows.entry(Cow::Borrowed(&u.row_key)).or_default();
        for (name, w) in &u.fields {
            match w {
                FieldWrite::Set(v) => row.set(Cow::Borrowed(name), Some(Cow::Borrowed(v))),
                FieldWrite::Remove => row.set(Cow::Borrowed(name), None),
                FieldWrite::Keep => {}
            }
        }
    }

    /// Sets (`None`: removes) one field of a hash (an aggregate's figures).
    pub(crate) fn write_field(&mut self, key: &str, field: &str, value: Option<&str>) {
        self.row(key).set(
            Cow::Owned(field.to_owned()),
            value.map(|v| Cow::Owned(v.to_owned())),
        );
    }

    /// Deletes a row hash.
    pub(crate) fn delete_row(&mut self, key: &str) {
        let row = self.row(key);
        row.deleted = true;
        row.fields.clear();
    }

    /// The writes of the row hash `key`, new if it has none yet.
    fn row(&mut self, key: &str) -> &mut RowWrites<'b> {
        self.rows.entry(Cow::Owned(key.to_owned())).or_default()
    }

    /// Sets an index entry.
    pub(crate) fn set(&mut self, key: &str, value: &str) {
        self.strings.insert(key.to_owned(), Some(value.to_owned()));
    }

    /// Deletes an index entry.
    pub(crate) fn delete(&mut self, key: &str) {
        self.strings.insert(key.to_owned(), None);
    }

    /// Adds (or rescores) a relation member.
    pub(crate) fn zadd(&mut self, parent: &str, score: f64, member: &str) {
        self.member(parent, member, Some(score));
    }

    /// Removes a relation member.
    pub(crate) fn zrem(&mut self, parent: &str, member: &str) {
        self.member(parent, member, None);
    }

    fn member(&mut self, parent: &str, member: &str, score: Option<f64>) {
        let members = match self.members.get_mut(parent) {
            Some(m) => m,
            None => self.members.entry(parent.to_owned()).or_default(),
        };
        members.insert(member.to_owned(), score);
    }

    /// The batch's commands: the coalesced effect (row deletions before the rows' new
    /// fields, which is all the order that matters within one transaction: every other key
    /// is written once), at most [`SLICE`] keys or fields per command.
    pub(crate) fn into_writes(self) -> Vec<Write<'b>> {
        let Writes {
            rows,
            strings,
            members,
        } = self;
        let mut out = Vec::new();
        let mut deleted: Vec<Cow<'b, str>> = rows
            .iter()
            .filter(|(_, r)| r.deleted)
            .map(|(k, _)| k.clone())
            .collect();
        let mut set: Vec<(String, String)> = Vec::new();
        for (key, value) in strings {
            match value {
                Some(v) => set.push((key, v)),
                None => deleted.push(Cow::Owned(key)),
            }
        }
        out.extend(slices(deleted, SLICE).map(|keys| Write::Del { keys }));
        for (key, row) in rows {
            let mut sets = Vec::new();
            let mut removed = Vec::new();
            for (field, value) in row.fields {
                match value {
                    Some(v) => sets.push((field, v)),
                    // A deleted hash has no fields to remove.
                    None if !row.deleted => removed.push(field),
                    None => {}
                }
            }
            match (sets.is_empty(), removed.is_empty()) {
                (false, true) => out.push(Write::Hset { key, fields: sets }),
                (true, false) => out.push(Write::Hdel {
                    key,
                    fields: removed,
                }),
                (false, false) => {
                    out.push(Write::Hset {
                        key: key.clone(),
                        fields: sets,
                    });
                    out.push(Write::Hdel {
                        key,
                        fields: removed,
                    });
                }
                (true, true) => {}
            }
        }
        out.extend(slices(set, SLICE).map(|pairs| Write::Mset { pairs }));
        for (parent, members) in members {
            let (added, removed): (Vec<_>, Vec<_>) =
                members.into_iter().partition(|(_, s)| s.is_some());
            let added: Vec<(f64, String)> = added
                .into_iter()
                .filter_map(|(m, s)| s.map(|s| (s, m)))
                .collect();
            let removed: Vec<String> = removed.into_iter().map(|(m, _)| m).collect();
            for members in slices(added, SLICE) {
                out.push(Write::Zadd {
                    key: parent.clone(),
                    members,
                });
            }
            for members in slices(removed, SLICE) {
                out.push(Write::Zrem {
                    key: parent.clone(),
                    members,
                });
            }
        }
        out
    }
}

/// One Redis command of a decided batch, as data; row keys, field names and values
/// borrowed from the batch's plans where they come from there (`'b`).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Write<'b> {
    /// `DEL keys...`: row hashes and index entries.
    Del { keys: Vec<Cow<'b, str>> },
    /// `HSET key field value...`: a row hash, or a bookkeeping hash.
    Hset {
        key: Cow<'b, str>,
        fields: Vec<(Cow<'b, str>, Cow<'b, str>)>,
    },
    /// `HDEL key field...`: NULL fields of a row hash, or bookkeeping entries.
    Hdel {
        key: Cow<'b, str>,
        fields: Vec<Cow<'b, str>>,
    },
    /// `MSET key value...`: index entries.
    Mset { pairs: Vec<(String, String)> },
    /// `ZADD key score member...`: relation members.
    Zadd {
        key: String,
        members: Vec<(f64, String)>,
    },
    /// `ZREM key member...`: relation members.
    Zrem { key: String, members: Vec<String> },
}

/// `items` in slices of at most `n`.
pub(super) fn slices<T>(items: Vec<T>, n: usize) -> impl Iterator<Item = Vec<T>> {
    let mut items = items.into_iter().peekable();
    std::iter::from_fn(move || {
        items.peek()?;
        Some(items.by_ref().take(n).collect())
    })
}
