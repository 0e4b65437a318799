//! A reader compiled once per writer schema that takes the Debezium envelope (and key) apart
//! straight from the Avro binary encoding, instead of apache-avro's generic decoder.
//!
//! # Why
//!
//! The generic decoder builds a `Value` tree for the whole record: every field of `before`,
//! `after`, `source` and `transaction`, each record field with its name copied. The sink
//! needs the row columns, `op`, `source.lsn` and two timestamps; everything else can be
//! skipped without allocating. This reader skips what is not needed and hands each column
//! to the same [`super::value::convert`] as the generic path, as the plain Avro value
//! apache-avro would give for it (the columns' logical types are those `convert` reads the
//! same from either).
//!
//! # Scope and fallback
//!
//! Columns of primitive types (possibly nullable), with the logical types `convert` treats
//! identically, and Debezium's `VariableScaleDecimal` record are read here; a schema with
//! any other column (arrays, maps, enums, nested records, other logical types) is not
//! compiled, and its records go through the generic decoder. A body this reader cannot
//! take apart (malformed, unexpected shape) also goes through the generic decoder, which
//! then reports the error exactly as before. `sink/tests/decode/fixtures.rs` holds both
//! paths to the recorded Debezium records.

use apache_avro::types::Value;
use mapping::change::{Op, Row};
use serde_json::{Map, Value as Json};

use super::schema::{
    field, full_name, logical_kind, record_of, top_record, Kind, Names, RowSchema,
};
use super::{value, Envelope};

/// Nested named types deeper than this are not compiled (a recursive schema).
const MAX_DEPTH: usize = 16;

/// How to read (or skip) one Avro value.
#[derive(Debug, Clone)]
enum Node {
    Null,
    Boolean,
    Int,
    Long,
    Float,
    Double,
    Bytes,
    String,
    Fixed(usize),
    /// The number of symbols.
    Enum(usize),
    Array(Box<Node>),
    Map(Box<Node>),
    Union(Vec<Node>),
    /// Field names and nodes.
    Record(Vec<(String, Node)>),
}

/// One column: how to read it and what it means.
#[derive(Debug, Clone)]
struct Column {
    node: Node,
    kind: Kind,
}

/// Reads a row record (a key, or `before`/`after`).
#[derive(Debug, Clone)]
pub(crate) struct RowReader {
    columns: Vec<Column>,
}

/// What an envelope field is for.
#[derive(Debug, Clone)]
enum Slot {
    Op,
    Before,
    After,
    TsMs,
    /// `source`: the numbers of its `lsn` and `ts_ms` fields.
    Source {
        lsn: Option<usize>,
        ts_ms: Option<usize>,
    },
    Skip,
}

/// Reads a Debezium envelope.
#[derive(Debug, Clone)]
pub(crate) struct EnvelopeReader {
    fields: Vec<(Slot, Node)>,
    row: RowReader,
}

impl RowReader {
    /// The reader of a key schema (a record of the key columns); `None` when a column is out
    /// of scope.
    pub(crate) fn for_key(root: &Json, row: &RowSchema) -> Option<RowReader> {
        let names = Names::collect(root);
        let (record, ns) = top_record(root).ok()?;
        RowReader::compile(record, ns.as_deref(), &names, row)
    }

    fn compile(
        record: &Map<String, Json>,
        ns: Option<&str>,
        names: &Names<'_>,
        row: &RowSchema,
    ) -> Option<RowReader> {
        let fields = record.get("fields")?.as_array()?;
        if fields.len() != row.columns.len() {
            return None;
        }
        let mut columns = Vec::with_capacity(fields.len());
        for (f, (name, kind)) in fields.iter().zip(&row.columns) {
            if f.get("name")?.as_str()? != name {
                return None;
            }
            let ty = f.get("type")?;
            if !column_in_scope(ty, *kind) {
                return None;
            }
            columns.push(Column {
                node: node_of(ty, ns, names, 0)?,
                kind: *kind,
            });
        }
        Some(RowReader { columns })
    }

    /// Reads a whole key body into its row; `None` if it does not take it apart exactly.
    pub(crate) fn read_key(&self, body: &[u8], row: &RowSchema) -> Option<Row> {
        let mut input = Input::new(body);
        let out = self.read(&mut input, row)?;
        input.rest.is_empty().then_some(out)
    }

    fn read(&self, input: &mut Input<'_>, row: &RowSchema) -> Option<Row> {
        let mut out = Vec::with_capacity(self.columns.len());
        for (column, (name, _)) in self.columns.iter().zip(&row.columns) {
            let avro = input.value(&column.node)?;
            out.push((name.clone(), value::convert(column.kind, avro).ok()?));
        }
        Some(out)
    }
}

impl EnvelopeReader {
    /// The reader of a Debezium envelope schema whose row columns are `row`; `None` when a
    /// column is out of scope or the envelope is not the expected shape.
    pub(crate) fn compile(root: &Json, row: &RowSchema) -> Option<EnvelopeReader> {
        let names = Names::collect(root);
        let (envelope, ns) = top_record(root).ok()?;
        let ns = ns.as_deref();
        let row_type = field(envelope, "after").or_else(|| field(envelope, "before"))?;
        let (record, row_ns) = record_of(row_type, ns, &names)?;
        let row_reader = RowReader::compile(record, row_ns.as_deref(), &names, row)?;
        let mut fields = Vec::new();
        for f in envelope.get("fields")?.as_array()? {
            let name = f.get("name")?.as_str()?;
            let ty = f.get("type")?;
            let node = node_of(ty, ns, &names, 0)?;
            let slot = match name {
                "op" => Slot::Op,
                "before" => Slot::Before,
                "after" => Slot::After,
                "ts_ms" => Slot::TsMs,
                "source" => {
                    let Node::Record(source) = &node else {
                        return None;
                    };
                    let at = |n: &str| source.iter().position(|(f, _)| f == n);
                    Slot::Source {
                        lsn: at("lsn"),
                        ts_ms: at("ts_ms"),
                    }
                }
                _ => Slot::Skip,
            };
            fields.push((slot, node));
        }
        Some(EnvelopeReader {
            fields,
            row: row_reader,
        })
    }

    /// Takes a whole value body apart; `None` if it does not do so exactly (the generic
    /// decoder then decides, and reports any error).
    pub(crate) fn read(&self, body: &[u8], row: &RowSchema) -> Option<Envelope> {
        let mut input = Input::new(body);
        let (mut op, mut before, mut after) = (None, None, None);
        let (mut lsn, mut source_ts_ms, mut ts_ms) = (None, None, None);
        for (slot, node) in &self.fields {
            match slot {
                Slot::Op => op = Some(input.string_of(node)?),
                Slot::Before => before = self.optional_row(&mut input, node, row)?,
                Slot::After => after = self.optional_row(&mut input, node, row)?,
                Slot::TsMs => ts_ms = input.optional_long(node)?,
                Slot::Source {
                    lsn: lsn_at,
                    ts_ms: ts_at,
                } => {
                    let Node::Record(fields) = node else {
                        return None;
                    };
                    for (i, (_, node)) in fields.iter().enumerate() {
                        if Some(i) == *lsn_at {
                            lsn = input.optional_long(node)?;
                        } else if Some(i) == *ts_at {
                            source_ts_ms = input.optional_long(node)?;
                        } else {
                            input.skip(node)?;
                        }
                    }
                }
                Slot::Skip => input.skip(node)?,
            }
        }
        if !input.rest.is_empty() {
            return None;
        }
        let op = Op::from_code(&op?)?;
        if after.is_none() && matches!(op, Op::Read | Op::Create | Op::Update) {
            return None;
        }
        Some(Envelope {
            op,
            before,
            after,
            lsn,
            source_ts_ms,
            ts_ms,
        })
    }

    /// `before`/`after`: null, or the row record.
    fn optional_row(
        &self,
        input: &mut Input<'_>,
        node: &Node,
        row: &RowSchema,
    ) -> Option<Option<Row>> {
        let inner = match node {
            Node::Union(branches) => branches.get(input.index()?)?,
            other => other,
        };
        match inner {
            Node::Null => Some(None),
            Node::Record(_) => self.row.read(input, row).map(Some),
            _ => None,
        }
    }
}

/// Whether a column of type `ty` (with kind `kind`) is read here: a primitive, possibly in
/// a union with null, without a logical type that apache-avro would turn into a value
/// `convert` treats differently; or Debezium's `VariableScaleDecimal` record.
fn column_in_scope(ty: &Json, kind: Kind) -> bool {
    if kind == Kind::VariableScaleDecimal {
        return true;
    }
    if kind == Kind::Other {
        return false;
    }
    match ty {
        Json::Array(branches) => {
            branches.len() <= 2 && branches.iter().all(|b| column_in_scope(b, kind))
        }
        Json::String(name) => is_primitive(name),
        Json::Object(obj) => {
            let primitive = obj
                .get("type")
                .and_then(Json::as_str)
                .is_some_and(is_primitive);
            // apache-avro reads a logical type into a value carrying its own unit, which
            // `convert` follows; this reader hands over the plain number, read in the
            // column's kind. Only the same when both say the same (`connect.name` can
            // disagree with `logicalType`).
            let logical_ok = match obj.get("logicalType").and_then(Json::as_str) {
                None => true,
                Some(l) => {
                    matches!(
                        l,
                        "timestamp-millis"
                            | "timestamp-micros"
                            | "timestamp-nanos"
                            | "local-timestamp-millis"
                            | "local-timestamp-micros"
                            | "local-timestamp-nanos"
                            | "date"
                            | "time-millis"
                            | "time-micros"
                            | "decimal"
                    ) && logical_kind(l, obj) == Some(kind)
                }
            };
            primitive && logical_ok
        }
        _ => false,
    }
}

fn is_primitive(name: &str) -> bool {
    matches!(
        name,
        "null" | "boolean" | "int" | "long" | "float" | "double" | "bytes" | "string"
    )
}

/// How to read a type node of the schema JSON.
fn node_of(ty: &Json, ns: Option<&str>, names: &Names<'_>, depth: usize) -> Option<Node> {
    if depth > MAX_DEPTH {
        return None;
    }
    match ty {
        Json::Array(branches) => branches
            .iter()
            .map(|b| node_of(b, ns, names, depth))
            .collect::<Option<Vec<_>>>()
            .map(Node::Union),
        Json::String(name) => match name.as_str() {
            "null" => Some(Node::Null),
            "boolean" => Some(Node::Boolean),
            "int" => Some(Node::Int),
            "long" => Some(Node::Long),
            "float" => Some(Node::Float),
            "double" => Some(Node::Double),
            "bytes" => Some(Node::Bytes),
            "string" => Some(Node::String),
            other => {
                let (def, inner_ns) = names.resolve(other, ns)?;
                named_node(def, inner_ns.as_deref(), names, depth + 1)
            }
        },
        Json::Object(obj) => match obj.get("type")? {
            Json::String(t) => match t.as_str() {
                "record" | "error" | "enum" | "fixed" => {
                    let (_, inner_ns) = full_name(obj, ns)?;
                    named_node(obj, inner_ns.as_deref(), names, depth + 1)
                }
                "array" => Some(Node::Array(Box::new(node_of(
                    obj.get("items")?,
                    ns,
                    names,
                    depth + 1,
                )?))),
                "map" => Some(Node::Map(Box::new(node_of(
                    obj.get("values")?,
                    ns,
                    names,
                    depth + 1,
                )?))),
                _ => node_of(obj.get("type")?, ns, names, depth + 1),
            },
            inner => node_of(inner, ns, names, depth + 1),
        },
        _ => None,
    }
}

/// A record, enum or fixed definition.
fn named_node(
    def: &Map<String, Json>,
    ns: Option<&str>,
    names: &Names<'_>,
    depth: usize,
) -> Option<Node> {
    match def.get("type")?.as_str()? {
        "record" | "error" => def
            .get("fields")?
            .as_array()?
            .iter()
            .map(|f| {
                Some((
                    f.get("name")?.as_str()?.to_owned(),
                    node_of(f.get("type")?, ns, names, depth)?,
                ))
            })
            .collect::<Option<Vec<_>>>()
            .map(Node::Record),
        "enum" => Some(Node::Enum(def.get("symbols")?.as_array()?.len())),
        "fixed" => usize::try_from(def.get("size")?.as_u64()?)
            .ok()
            .map(Node::Fixed),
        _ => None,
    }
}

/// Array items of a type that takes no bytes (`null`, an empty record) one body may hold.
/// Every other item takes at least one byte, so a body can only claim as many as it has
/// bytes; without a bound, a count of a few bytes would make the generic decoder build
/// millions of values (hundreds of megabytes) and this reader loop as long.
const MAX_EMPTY_ITEMS: usize = 4096;

/// The rest of a body.
struct Input<'a> {
    rest: &'a [u8],
    /// How many more items that take no bytes the body may hold.
    empty_items: usize,
}

impl<'a> Input<'a> {
    fn new(body: &'a [u8]) -> Self {
        Input {
            rest: body,
            empty_items: MAX_EMPTY_ITEMS,
        }
    }

    /// A zig-zag varint (Avro `int` and `long`).
    fn long(&mut self) -> Option<i64> {
        let mut n: u64 = 0;
        for shift in (0..64).step_by(7) {
            let (&byte, rest) = self.rest.split_first()?;
            self.rest = rest;
            n |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Some(((n >> 1) as i64) ^ -((n & 1) as i64));
            }
        }
        None
    }

    fn int(&mut self) -> Option<i32> {
        i32::try_from(self.long()?).ok()
    }

    fn index(&mut self) -> Option<usize> {
        usize::try_from(self.long()?).ok()
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, rest) = self.rest.split_at_checked(n)?;
        self.rest = rest;
        Some(head)
    }

    fn bytes(&mut self) -> Option<&'a [u8]> {
        let len = self.index()?;
        self.take(len)
    }

    fn string(&mut self) -> Option<&'a str> {
        std::str::from_utf8(self.bytes()?).ok()
    }

    /// A `string` (possibly in a union), owned.
    fn string_of(&mut self, node: &Node) -> Option<String> {
        match node {
            Node::String => self.string().map(str::to_owned),
            Node::Union(branches) => {
                let branch = branches.get(self.index()?)?;
                self.string_of(branch)
            }
            _ => None,
        }
    }

    /// A `long`/`int`, or null (possibly in a union).
    fn optional_long(&mut self, node: &Node) -> Option<Option<i64>> {
        match node {
            Node::Null => Some(None),
            Node::Long => self.long().map(Some),
            Node::Int => self.int().map(|i| Some(i64::from(i))),
            Node::Union(branches) => {
                let branch = branches.get(self.index()?)?;
                self.optional_long(branch)
            }
            _ => None,
        }
    }

    /// A column value as apache-avro decodes it without logical types.
    fn value(&mut self, node: &Node) -> Option<Value> {
        Some(match node {
            Node::Null => Value::Null,
            Node::Boolean => match self.take(1)? {
                [0] => Value::Boolean(false),
                [1] => Value::Boolean(true),
                _ => return None,
            },
            Node::Int => Value::Int(self.int()?),
            Node::Long => Value::Long(self.long()?),
            Node::Float => Value::Float(f32::from_le_bytes(self.take(4)?.try_into().ok()?)),
            Node::Double => Value::Double(f64::from_le_bytes(self.take(8)?.try_into().ok()?)),
            Node::Bytes => Value::Bytes(self.bytes()?.to_vec()),
            Node::String => Value::String(self.string()?.to_owned()),
            Node::Union(branches) => {
                let i = self.index()?;
                let inner = self.value(branches.get(i)?)?;
                Value::Union(u32::try_from(i).ok()?, Box::new(inner))
            }
            Node::Record(fields) => Value::Record(
                fields
                    .iter()
                    .map(|(name, node)| Some((name.clone(), self.value(node)?)))
                    .collect::<Option<Vec<_>>>()?,
            ),
            Node::Fixed(_) | Node::Enum(_) | Node::Array(_) | Node::Map(_) => return None,
        })
    }

    /// Skips a value of any type, checking it as apache-avro's generic decoder reads it
    /// (a boolean is 0 or 1, a string UTF-8, an int and an enum index in range), so that
    /// what this reader skips the generic decoder would accept.
    fn skip(&mut self, node: &Node) -> Option<()> {
        match node {
            Node::Null => {}
            Node::Boolean => {
                let [0 | 1] = self.take(1)? else {
                    return None;
                };
            }
            Node::Int => {
                self.int()?;
            }
            Node::Long => {
                self.long()?;
            }
            Node::Enum(symbols) => {
                let index = usize::try_from(self.int()?).ok()?;
                (index < *symbols).then_some(())?;
            }
            Node::Float => {
                self.take(4)?;
            }
            Node::Double => {
                self.take(8)?;
            }
            Node::Bytes => {
                self.bytes()?;
            }
            Node::String => {
                self.string()?;
            }
            Node::Fixed(n) => {
                self.take(*n)?;
            }
            Node::Union(branches) => {
                let branch = branches.get(self.index()?)?;
                self.skip(branch)?;
            }
            Node::Record(fields) => {
                for (_, node) in fields {
                    self.skip(node)?;
                }
            }
            Node::Array(items) => self.skip_blocks(items.min_len(), |input| input.skip(items))?,
            Node::Map(values) => self.skip_blocks(1 + values.min_len(), |input| {
                input.string()?;
                input.skip(values)
            })?,
        }
        Some(())
    }

    /// Array or map blocks: a count (negative: followed by the block's size in bytes), the
    /// items, until a count of 0. Every item is read, as the generic decoder reads them (it
    /// does not use the size either). A count the rest of the body cannot hold (each item
    /// takes at least `item_len` bytes) is refused before reading any item.
    fn skip_blocks(
        &mut self,
        item_len: usize,
        mut item: impl FnMut(&mut Self) -> Option<()>,
    ) -> Option<()> {
        loop {
            let count = match self.long()? {
                0 => return Some(()),
                count if count < 0 => {
                    self.long()?;
                    count.checked_neg()?
                }
                count => count,
            };
            let count = usize::try_from(count).ok()?;
            if item_len == 0 {
                self.empty_items = self.empty_items.checked_sub(count)?;
            } else if count > self.rest.len() / item_len {
                return None;
            }
            for _ in 0..count {
                item(self)?;
            }
        }
    }
}

impl Node {
    /// The fewest bytes a value of this type takes.
    fn min_len(&self) -> usize {
        match self {
            Node::Null => 0,
            Node::Boolean
            | Node::Int
            | Node::Long
            | Node::Bytes
            | Node::String
            | Node::Enum(_)
            | Node::Array(_)
            | Node::Map(_)
            | Node::Union(_) => 1,
            Node::Float => 4,
            Node::Double => 8,
            Node::Fixed(n) => *n,
            Node::Record(fields) => fields
                .iter()
                .fold(0, |sum, (_, node)| sum.saturating_add(node.min_len())),
        }
    }
}

/// The layout of every value of one writer schema, to check a body before apache-avro's
/// generic decoder reads it. That decoder allocates what a length or count says before
/// reading (a string's bytes, an array's items, up to 512 MiB each), so a few bytes of a
/// poison record could claim hundreds of megabytes; and it reads a body that ends early as
/// if the missing values were null. A body that passes this check has every length and
/// count within it and nothing missing, so the generic decoder allocates in proportion to
/// the body.
#[derive(Debug, Clone)]
pub(crate) struct BodyLayout(Node);

/// Why a body does not fit its [`BodyLayout`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Misfit {
    /// A value could not be read at this byte offset: the body ends early, or a length,
    /// count, union branch, enum index, boolean or UTF-8 text there is invalid.
    Malformed {
        /// How far into the body reading got before a value could not be read.
        offset: usize,
    },
    /// The body is longer than its values.
    Trailing {
        /// How many bytes are left over.
        count: usize,
    },
}

impl BodyLayout {
    /// The layout of a writer schema's JSON; `None` for a schema this reader does not
    /// follow (recursive, or nested deeper than it compiles).
    pub(crate) fn compile(root: &Json) -> Option<BodyLayout> {
        node_of(root, None, &Names::collect(root), 0).map(BodyLayout)
    }

    /// Whether `body` holds exactly one value of the schema.
    pub(crate) fn check(&self, body: &[u8]) -> Result<(), Misfit> {
        let mut input = Input::new(body);
        if input.skip(&self.0).is_none() {
            return Err(Misfit::Malformed {
                offset: body.len() - input.rest.len(),
            });
        }
        match input.rest.len() {
            0 => Ok(()),
            count => Err(Misfit::Trailing { count }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::WriterSchema;
    use testkit::loadgen::{reference, WireEncoder};

    /// The recorded records, encoded with the recorded schemas: the compiled readers take
    /// every one apart (none falls back) into exactly what the generic decoder gives.
    #[test]
    fn recorded_records_read_as_the_generic_decoder_reads_them() {
        let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/debezium");
        let tables = [
            (
                "customers",
                reference::CUSTOMER_KEY,
                reference::CUSTOMER_VALUE,
            ),
            ("orders", reference::ORDER_KEY, reference::ORDER_VALUE),
        ];
        let mut read = 0;
        for (table, key_entry, value_entry) in tables {
            let key_text = reference::schema_text(key_entry).unwrap();
            let value_text = reference::schema_text(value_entry).unwrap();
            let (key_json, value_json): (Json, Json) = (
                serde_json::from_str(&key_text).unwrap(),
                serde_json::from_str(&value_text).unwrap(),
            );
            let key_row = super::super::schema::key_schema(&key_json).unwrap();
            let value_row = super::super::schema::envelope_schema(&value_json).unwrap();
            let keys = RowReader::for_key(&key_json, &key_row).expect("key schema compiles");
            let envelopes =
                EnvelopeReader::compile(&value_json, &value_row).expect("envelope compiles");
            let key_writer = WriterSchema::parse(1, key_text.clone()).unwrap();
            let value_writer = WriterSchema::parse(2, value_text.clone()).unwrap();
            let (key_encoder, value_encoder) = (
                WireEncoder::new(1, &key_text).unwrap(),
                WireEncoder::new(2, &value_text).unwrap(),
            );
            for entry in std::fs::read_dir(fixtures).unwrap() {
                let path = entry.unwrap().path();
                let name = path.file_name().unwrap().to_string_lossy().into_owned();
                if !name.starts_with(&format!("avro-{table}-")) {
                    continue;
                }
                let sample: Json =
                    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
                let key = key_encoder.encode(&sample["key"]).unwrap();
                let generic = match key_writer.reader.read(&mut &key[5..]).unwrap() {
                    Value::Record(fields) => {
                        super::super::read_row(super::super::Part::Key, 1, &key_row, fields)
                            .unwrap()
                    }
                    other => panic!("{name}: key {other:?}"),
                };
                assert_eq!(
                    keys.read_key(&key[5..], &key_row),
                    Some(generic),
                    "{name}: key"
                );
                if sample["value"].is_null() {
                    continue;
                }
                let value = value_encoder.encode(&sample["value"]).unwrap();
                let fast = envelopes
                    .read(&value[5..], &value_row)
                    .unwrap_or_else(|| panic!("{name}: the compiled reader fell back"));
                let record = value_writer.reader.read(&mut &value[5..]).unwrap();
                let generic = super::super::Envelope::read(2, &value_row, record).unwrap();
                assert_eq!(
                    (fast.op, &fast.before, &fast.after),
                    (generic.op, &generic.before, &generic.after),
                    "{name}: rows"
                );
                assert_eq!(
                    (fast.lsn, fast.source_ts_ms, fast.ts_ms),
                    (generic.lsn, generic.source_ts_ms, generic.ts_ms),
                    "{name}: positions and times"
                );
                // A truncated body is not taken apart (the generic decoder reports it).
                assert!(envelopes
                    .read(&value[5..value.len() - 1], &value_row)
                    .is_none());
                read += 1;
            }
        }
        assert!(read >= 8, "only {read} recorded values read");
    }

    fn zigzag(v: i64) -> Vec<u8> {
        let mut n = ((v << 1) ^ (v >> 63)) as u64;
        let mut out = Vec::new();
        loop {
            let byte = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                out.push(byte);
                return out;
            }
            out.push(byte | 0x80);
        }
    }

    #[test]
    fn longs_round_trip_through_zigzag() {
        for v in [
            0,
            -1,
            1,
            63,
            -64,
            64,
            300,
            i64::MAX,
            i64::MIN,
            1_795_480_593_142_906,
        ] {
            let bytes = zigzag(v);
            let mut input = Input::new(&bytes);
            assert_eq!(input.long(), Some(v), "{v}");
            assert!(input.rest.is_empty());
        }
        assert_eq!(Input::new(&[0x80]).long(), None, "truncated");
        assert_eq!(Input::new(&zigzag(i64::from(i32::MAX) + 1)).int(), None);
    }

    /// An array of a type that takes no bytes (`null`) with a count of
    /// 2^62 in nine bytes made the skip loop for ever; a count beyond what the rest of the
    /// body can hold is refused at once.
    #[test]
    fn counts_are_bounded_by_the_body() {
        let nulls = Node::Array(Box::new(Node::Null));
        let endless = [zigzag(1 << 62), zigzag(0)].concat();
        assert_eq!(Input::new(&endless).skip(&nulls), None);
        let allowed = [zigzag(MAX_EMPTY_ITEMS as i64), zigzag(0)].concat();
        assert_eq!(Input::new(&allowed).skip(&nulls), Some(()));
        let one_over = [zigzag(MAX_EMPTY_ITEMS as i64), zigzag(1), zigzag(0)].concat();
        assert_eq!(Input::new(&one_over).skip(&nulls), None);

        let longs = Node::Array(Box::new(Node::Long));
        let claimed = [zigzag(3), zigzag(1), zigzag(2), zigzag(0)].concat();
        assert_eq!(
            Input::new(&claimed).skip(&longs),
            None,
            "3 items, 3 bytes left"
        );
        let exact = [zigzag(2), zigzag(1), zigzag(2), zigzag(0)].concat();
        assert_eq!(Input::new(&exact).skip(&longs), Some(()));
        assert_eq!(
            Input::new(&[zigzag(i64::MIN), zigzag(0)].concat()).skip(&longs),
            None
        );
    }

    #[test]
    fn skipped_values_are_checked_as_the_generic_decoder_reads_them() {
        assert_eq!(Input::new(&[2]).skip(&Node::Boolean), None);
        assert_eq!(
            Input::new(&[0x02, 0xff]).skip(&Node::String),
            None,
            "not UTF-8"
        );
        assert_eq!(Input::new(&[0x02, 0xff]).skip(&Node::Bytes), Some(()));
        assert_eq!(Input::new(&zigzag(2)).skip(&Node::Enum(2)), None);
        assert_eq!(Input::new(&zigzag(1)).skip(&Node::Enum(2)), Some(()));
        let wide = zigzag(i64::from(i32::MAX) + 1);
        assert_eq!(Input::new(&wide).skip(&Node::Int), None);
        assert_eq!(Input::new(&wide).skip(&Node::Long), Some(()));
    }

    #[test]
    fn layouts_check_whole_bodies() {
        let schema = serde_json::json!({"type": "record", "name": "R", "fields": [
            {"name": "a", "type": {"type": "map", "values": "long"}},
            {"name": "b", "type": ["null", {"type": "fixed", "name": "F", "size": 2}]},
            {"name": "c", "type": "F"}]});
        let layout = BodyLayout::compile(&schema).unwrap();
        let body = [
            zigzag(1),
            vec![0x02, b'x'],
            zigzag(7),
            zigzag(0),
            zigzag(1),
            vec![1, 2, 3, 4],
        ]
        .concat();
        assert_eq!(layout.check(&body), Ok(()));
        assert_eq!(
            layout.check(&body[..body.len() - 1]),
            Err(Misfit::Malformed { offset: 8 })
        );
        assert_eq!(
            layout.check(&[&body[..], &[0]].concat()),
            Err(Misfit::Trailing { count: 1 })
        );
    }

    #[test]
    fn blocks_with_sizes_are_read_item_by_item() {
        // An array of longs in two blocks, the second with its byte size: [1, 2] [3].
        let mut body = zigzag(2);
        body.extend(zigzag(1));
        body.extend(zigzag(2));
        body.extend(zigzag(-1));
        body.extend(zigzag(1));
        body.extend(zigzag(3));
        body.extend(zigzag(0));
        body.push(0x2a);
        let mut input = Input::new(&body);
        input.skip(&Node::Array(Box::new(Node::Long))).unwrap();
        assert_eq!(input.rest, [0x2a]);
    }
}
