//! A Debezium change event, decoded and independent of Avro: what the sink's decoder
//! produces and what the planner turns into Redis work.

/// What happened to the row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `r`: snapshot read.
    Read,
    /// `c`: insert.
    Create,
    /// `u`: update.
    Update,
    /// `d`: delete.
    Delete,
    /// `t`: truncate of the whole table.
    Truncate,
    /// Kafka record with a key and a null value, sent after a delete for log compaction.
    Tombstone,
}

impl Op {
    /// The op a Debezium `op` code (`r`, `c`, `u`, `d`, `t`) names; `None` for any other
    /// text (a tombstone has no code: it is a record without a value).
    pub fn from_code(code: &str) -> Option<Op> {
        match code {
            "r" => Some(Op::Read),
            "c" => Some(Op::Create),
            "u" => Some(Op::Update),
            "d" => Some(Op::Delete),
            "t" => Some(Op::Truncate),
            _ => None,
        }
    }

    /// Debezium's `op` code (`r`, `c`, `u`, `d`, `t`), or `tombstone`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Op::Read => "r",
            Op::Create => "c",
            Op::Update => "u",
            Op::Delete => "d",
            Op::Truncate => "t",
            Op::Tombstone => "tombstone",
        }
    }
}

impl std::fmt::Display for Op {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A column value with the Debezium/Connect semantic type resolved from the writer schema.
#[derive(Debug, Clone, PartialEq)]
pub enum FieldValue {
    /// SQL NULL.
    Null,
    /// `boolean`.
    Boolean(bool),
    /// `int`/`long` without a logical type.
    Int(i64),
    /// `float`/`double`.
    Float(f64),
    /// Plain `string` (also `io.debezium.data.Enum`, UUIDs, ...).
    String(String),
    /// `io.debezium.data.Json`: JSON text.
    Json(String),
    /// Any Debezium timestamp, normalised to microseconds since the Unix epoch, UTC.
    TimestampMicros(i64),
    /// `io.debezium.time.Date`: days since the Unix epoch.
    Date(i32),
    /// Connect `Decimal`: unscaled big-endian two's complement bytes and the scale.
    Decimal { unscaled: Vec<u8>, scale: u32 },
    /// Raw `bytes`.
    Bytes(Vec<u8>),
    /// `__debezium_unavailable_value`: an unchanged TOASTed column whose value Debezium did
    /// not send; the stored value must be kept.
    Unavailable,
}

/// Columns in schema order.
pub type Row = Vec<(String, FieldValue)>;

/// One decoded change event.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// The operation.
    pub op: Op,
    /// Columns of the Kafka key (the primary key).
    pub key: Row,
    /// Row image before the change; under REPLICA IDENTITY DEFAULT it is null on update and
    /// holds only the key (defaults elsewhere) on delete, so it is never used for cleanup.
    pub before: Option<Row>,
    /// Row image after the change (`r`, `c`, `u`).
    pub after: Option<Row>,
    /// Source position (`source.lsn`), when the connector provides one.
    pub position: Option<i64>,
    /// Source commit time (`source.ts_ms`); for tombstones, the Kafka record timestamp.
    pub source_ts_ms: Option<i64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn op_codes_round_trip() {
        for op in [Op::Read, Op::Create, Op::Update, Op::Delete, Op::Truncate] {
            assert_eq!(Op::from_code(op.as_str()), Some(op));
        }
        assert_eq!(Op::from_code("tombstone"), None);
        assert_eq!(Op::from_code("x"), None);
    }
}
