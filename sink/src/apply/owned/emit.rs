//! The writes of one decided batch, as Redis commands.
//!
//! A batch is sent as one `MULTI`/`EXEC`, so readers only ever see its final effect: the
//! writes can be *coalesced* per key (the last value of each index key, the final fields of
//! each row hash, the final membership of each relation member) and sent as few multi-key
//! commands (`MSET`, multi-key `DEL`, one `HSET` per row, one `ZADD`/`ZREM` per parent).
//! That takes about a tenth off Redis's CPU per change and off the sink's encoding and reply
//! parsing (BENCHMARKS.md, *Exclusive writer*). A coalesced command belongs to no single
//! change: when one fails (only possible when another program wrote a mapped key with
//! another type), the writer reports the command and its key, not a change.

use mapping::plan::{FieldWrite, RowUpsert};

use super::super::args::format_score;
use super::HashMap;

/// Keys, fields and values per command at most (a command's size stays moderate).
const SLICE: usize = 512;

/// The final effect of a batch's writes on one row hash.
#[derive(Default)]
struct RowWrites {
    /// The key was deleted (then written again from scratch by the fields below).
    deleted: bool,
    /// Field -> final value (`None`: removed), in first-written order.
    fields: Vec<(String, Option<String>)>,
}

impl RowWrites {
    fn set(&mut self, field: &str, value: Option<&str>) {
        match self.fields.iter_mut().find(|(f, _)| f == field) {
            Some((_, v)) => *v = value.map(str::to_owned),
            None => self
                .fields
                .push((field.to_owned(), value.map(str::to_owned))),
        }
    }
}

/// The commands of a batch being decided.
#[derive(Default)]
pub(crate) struct Writes {
    /// Row key -> final hash writes.
    rows: HashMap<String, RowWrites>,
    /// String key (index entry) -> final value (`None`: deleted).
    strings: HashMap<String, Option<String>>,
    /// Parent -> member -> final score (`None`: removed).
    members: HashMap<String, HashMap<String, Option<f64>>>,
}

impl Writes {
    /// The row hash as upsert `u` writes it: set fields, removed (NULL) fields.
    pub(crate) fn write_hash(&mut self, u: &RowUpsert) {
        let row = self.rows.entry(u.row_key.clone()).or_default();
        for (name, w) in &u.fields {
            match w {
                FieldWrite::Set(v) => row.set(name, Some(v)),
                FieldWrite::Remove => row.set(name, None),
                FieldWrite::Keep => {}
            }
        }
    }

    /// Deletes a row hash.
    pub(crate) fn delete_row(&mut self, key: &str) {
        let row = self.rows.entry(key.to_owned()).or_default();
        row.deleted = true;
        row.fields.clear();
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
    /// is written once).
    pub(crate) fn into_pipeline(self) -> redis::Pipeline {
        let mut pipe = redis::pipe();
        let deleted: Vec<&str> = self
            .rows
            .iter()
            .filter(|(_, r)| r.deleted)
            .map(|(k, _)| k.as_str())
            .chain(
                self.strings
                    .iter()
                    .filter(|(_, v)| v.is_none())
                    .map(|(k, _)| k.as_str()),
            )
            .collect();
        for keys in deleted.chunks(SLICE) {
            pipe.cmd("DEL").arg(keys);
        }
        for (key, row) in &self.rows {
            let mut sets = row.fields.iter().filter(|(_, v)| v.is_some()).peekable();
            if sets.peek().is_some() {
                let cmd = pipe.cmd("HSET").arg(key);
                for (f, v) in sets {
                    cmd.arg(f).arg(v.as_deref().unwrap_or_default());
                }
            }
            if !row.deleted {
                let removed: Vec<&str> = row
                    .fields
                    .iter()
                    .filter(|(_, v)| v.is_none())
                    .map(|(f, _)| f.as_str())
                    .collect();
                if !removed.is_empty() {
                    pipe.cmd("HDEL").arg(key).arg(removed);
                }
            }
        }
        let set: Vec<(&str, &str)> = self
            .strings
            .iter()
            .filter_map(|(k, v)| v.as_deref().map(|v| (k.as_str(), v)))
            .collect();
        for pairs in set.chunks(SLICE) {
            pipe.cmd("MSET").arg(pairs);
        }
        for (parent, members) in &self.members {
            let added: Vec<(String, &str)> = members
                .iter()
                .filter_map(|(m, s)| s.map(|s| (format_score(s), m.as_str())))
                .collect();
            for pairs in added.chunks(SLICE) {
                pipe.cmd("ZADD").arg(parent).arg(pairs);
            }
            let removed: Vec<&str> = members
                .iter()
                .filter(|(_, s)| s.is_none())
                .map(|(m, _)| m.as_str())
                .collect();
            for members in removed.chunks(SLICE) {
                pipe.cmd("ZREM").arg(parent).arg(members);
            }
        }
        pipe
    }
}
