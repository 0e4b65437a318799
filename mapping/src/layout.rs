//! The Redis layout contract: the name of every key the sink keeps for its own bookkeeping,
//! and of the fields in them that more than one program reads. The sink writes them, the
//! change script generator bakes them into its Lua, and agent-cli reads them, all from here,
//! so that no two places can disagree (ARCHITECTURE.md, "Redis layout", documents what each
//! key holds).
//!
//! Row, index and relation keys are not here: `connectors.yaml` declares them
//! ([`crate::KeyTemplate`]). Everything here is under [`RESERVED_PREFIX`], which
//! templates may not use. The names are a contract with data already stored in deployed
//! databases: the tests below pin each one, and changing one needs a migration.

/// The prefix of every bookkeeping key; `connectors.yaml` templates may not start with it.
pub const RESERVED_PREFIX: &str = "sink:";

/// `sink:rows:{mapping}`: hash, row key -> source position of the change that wrote it.
pub fn rows_key(mapping: &str) -> String {
    format!("sink:rows:{mapping}")
}

/// `sink:index:{mapping}:{index}`: hash, rendered index key -> source position of the
/// change that last claimed or released it.
pub fn index_key(mapping: &str, index: &str) -> String {
    format!("sink:index:{mapping}:{index}")
}

/// `sink:types:{mapping}`: hash, stored field name -> type name ([`crate::ColumnType`]).
pub fn types_key(mapping: &str) -> String {
    format!("sink:types:{mapping}")
}

/// `sink:freshness:{mapping}`: hash with the fields of [`freshness`].
pub fn freshness_key(mapping: &str) -> String {
    format!("sink:freshness:{mapping}")
}

/// `sink:watermark:{source}`: hash with the fields of [`watermark`]: the source position and
/// commit time up to which every change of the source is in this database.
pub fn watermark_key(source: &str) -> String {
    format!("sink:watermark:{source}")
}

/// `sink:writer:{mapping}`: string, the id of the exclusive writer holding the mapping's
/// lease (only while one does).
pub fn writer_key(mapping: &str) -> String {
    format!("sink:writer:{mapping}")
}

/// `sink:shared:{mapping}`: sorted set of the sinks writing the mapping through the change
/// script (`--writer shared`, or `auto` when it chose the script): member the sink's writer
/// id, score the Redis server time in milliseconds until which its announcement holds
/// (renewed while it runs; the key expires one lease time after the last renewal). A
/// `--writer auto` sink does not take the exclusive lease of a mapping while another sink's
/// announcement holds, so that it never shuts out shared sinks already running.
pub fn shared_key(mapping: &str) -> String {
    format!("sink:shared:{mapping}")
}

/// `sink:snapshot:{mappings}` (the mapping names joined by `,`, in configuration order):
/// string, the manifest of the bookkeeping an exclusive writer of those mappings held when
/// it stopped cleanly, whose bytes are in [`snapshot_chunk_key`]s. Read (and deleted) by the
/// next exclusive writer of the same mappings, which then need not read every row.
pub fn snapshot_key<'a>(mappings: impl IntoIterator<Item = &'a str>) -> String {
    let names: Vec<&str> = mappings.into_iter().collect();
    format!("sink:snapshot:{}", names.join(","))
}

/// Chunk `n` of the snapshot whose manifest is `snapshot_key`: string, `{snapshot_key}:{n}`.
pub fn snapshot_chunk_key(snapshot_key: &str, n: usize) -> String {
    format!("{snapshot_key}:{n}")
}

/// The key template of a relation filtered by equality on `fields` (a lookup's `filters`,
/// in declaration order): the relation's own template followed by `:{field}:{{field}}` per
/// field, e.g. `customer:{customer_id}:orders:status:{status}`. The sink maintains it as one
/// more relation (same members and scores, only the rows whose fields have those values), so
/// agent-cli reads a filtered relation exactly like an unfiltered one. Declared by
/// `connectors.yaml` through the relation's key, hence outside [`RESERVED_PREFIX`].
pub fn filtered_relation_key(relation_key: &str, fields: &[&str]) -> String {
    let mut key = relation_key.to_owned();
    for field in fields {
        key.push_str(&format!(":{field}:{{{field}}}"));
    }
    key
}

/// The name of that filtered relation: `{relation}.{field}` per field (`.` cannot occur in a
/// declared relation name, so it never clashes with one).
pub fn filtered_relation_name(relation: &str, fields: &[&str]) -> String {
    let mut name = relation.to_owned();
    for field in fields {
        name.push('.');
        name.push_str(field);
    }
    name
}

/// `sink:search:{mapping}:{search}`: sorted set, one member per row whose searched field has a
/// value, all scored 0 so that `ZRANGEBYLEX` answers a prefix ([`crate::search`] says what a
/// member holds).
pub fn search_key(mapping: &str, search: &str) -> String {
    format!("sink:search:{mapping}:{search}")
}

/// `sink:search:{mapping}:{search}:members`: hash, row key -> the row's member of
/// [`search_key`]. Lets the change script remove a row's member without folding its old value
/// (Lua has no Unicode lower case), also on deletes whose before image holds only the key.
/// Names cannot contain `:`, so it never clashes with another search's sorted set.
pub fn search_members_key(mapping: &str, search: &str) -> String {
    format!("sink:search:{mapping}:{search}:members")
}

/// `sink:offsets`: hash, [`offsets_field`] -> last applied Kafka offset.
pub const OFFSETS_KEY: &str = "sink:offsets";

/// The field of a partition in [`OFFSETS_KEY`]: `{topic}/{partition}`.
pub fn offsets_field(topic: &str, partition: i32) -> String {
    format!("{topic}/{partition}")
}

/// `sink:offsets:run`: hash, [`offsets_field`] -> `{run_id}:{token}`: the `run_id` of the
/// Redis server (`INFO server`) under which the partition's field in [`OFFSETS_KEY`] was
/// known to cover the database, and the fencing token of the partition's current assignment
/// (`{run_id}` alone where a rebuild's handover marked it). A field that is missing, or names
/// another server run, means Redis lost writes since (a flush, a restart, a failover): the
/// sink then replays that partition from its earliest offset instead of trusting
/// [`OFFSETS_KEY`]; a batch whose assignment's token is no longer there is not applied
/// (ARCHITECTURE.md, "Self-healing"). Writers never touch it; only a partition's assignment
/// and a rebuild's handover set it.
pub const OFFSETS_RUN_KEY: &str = "sink:offsets:run";

/// `sink:rebuild`: hash, the metadata of the rebuild that produced the current state (the
/// fields of [`rebuild`]).
pub const REBUILD_KEY: &str = "sink:rebuild";

/// `sink:rebuild:lock`: string, in the live database while a rebuild runs: its token.
pub const REBUILD_LOCK_KEY: &str = "sink:rebuild:lock";

/// `sink:swap-sentinel`: never written; an exclusive writer watches it while it loads the
/// bookkeeping, so that a `SWAPDB` meanwhile is noticed.
pub const SWAP_SENTINEL_KEY: &str = "sink:swap-sentinel";

/// The fields of `sink:freshness:{mapping}` ([`freshness_key`]).
pub mod freshness {
    /// Source commit time (ms) of the last applied change, kept as a maximum.
    pub const SOURCE_TS_MS: &str = "source_ts_ms";
    /// Redis server time (ms) when the sink last applied a change.
    pub const APPLIED_AT_MS: &str = "applied_at_ms";
    /// How many changes the sink has applied.
    pub const APPLIED_COUNT: &str = "applied_count";
    /// Redis server time (ms) when the sink last saw the mapping's partitions at the end of
    /// the log.
    pub const CAUGHT_UP_AT_MS: &str = "caught_up_at_ms";
}

/// The fields of `sink:watermark:{source}` ([`watermark_key`]). Only ever moves forward.
pub mod watermark {
    /// The source position (PostgreSQL LSN as a decimal number) up to which every change
    /// is applied.
    pub const LSN: &str = "lsn";
    /// Source commit time (ms) before which every change is applied.
    pub const TS_MS: &str = "ts_ms";
    /// Source commit time (ms) of the heartbeat that confirmed [`LSN`].
    pub const HEARTBEAT_TS_MS: &str = "heartbeat_ts_ms";
    /// Redis server time (ms) when the sink last advanced the watermark.
    pub const UPDATED_AT_MS: &str = "updated_at_ms";
}

/// The fields of `sink:rebuild` ([`super::REBUILD_KEY`](REBUILD_KEY)).
pub mod rebuild {
    /// When the rebuild started (ms since the epoch).
    pub const STARTED_AT_MS: &str = "started_at_ms";
    /// When it handed the state over (ms since the epoch).
    pub const FINISHED_AT_MS: &str = "finished_at_ms";
    /// The configuration the state was built with.
    pub const CONFIG_FINGERPRINT: &str = "config_fingerprint";
    /// How many events it replayed.
    pub const EVENTS: &str = "events";

    /// How many events of `topic` it replayed: `events:{topic}`.
    pub fn events_field(topic: &str) -> String {
        format!("events:{topic}")
    }
}

/// The fields of an aggregate's hash, at the key its `key:` template renders
/// (`customer:{customer_id}:order_stats`; [`crate::Aggregate`]). Stored field names have no
/// `:`, so a group value (any text) is always the last segment and needs no escaping.
pub mod aggregate {
    /// How many rows count under the parent.
    pub const COUNT: &str = "count";

    /// The exact sum of stored field `field` over the parent's rows: `sum:{field}`.
    pub fn sum_field(field: &str) -> String {
        format!("sum:{field}")
    }

    /// How many of the parent's rows have group value `value`: `group_count:{value}`.
    pub fn group_count_field(value: &str) -> String {
        format!("group_count:{value}")
    }

    /// The sum of `field` over the parent's rows with group value `value`:
    /// `group_sum:{field}:{value}`.
    pub fn group_sum_field(field: &str, value: &str) -> String {
        format!("group_sum:{field}:{value}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// These names are in deployed databases: a failure here is a breaking change.
    #[test]
    fn key_names_are_pinned() {
        assert_eq!(RESERVED_PREFIX, "sink:");
        assert_eq!(rows_key("customers"), "sink:rows:customers");
        assert_eq!(
            index_key("customers", "email"),
            "sink:index:customers:email"
        );
        assert_eq!(types_key("customers"), "sink:types:customers");
        assert_eq!(freshness_key("customers"), "sink:freshness:customers");
        assert_eq!(writer_key("customers"), "sink:writer:customers");
        assert_eq!(shared_key("customers"), "sink:shared:customers");
        assert_eq!(watermark_key("cdc"), "sink:watermark:cdc");
        assert_eq!(OFFSETS_KEY, "sink:offsets");
        assert_eq!(offsets_field("cdc.public.orders", 3), "cdc.public.orders/3");
        assert_eq!(OFFSETS_RUN_KEY, "sink:offsets:run");
        assert_eq!(REBUILD_KEY, "sink:rebuild");
        assert_eq!(REBUILD_LOCK_KEY, "sink:rebuild:lock");
        assert_eq!(SWAP_SENTINEL_KEY, "sink:swap-sentinel");
        assert_eq!(
            search_key("customers", "name_prefix"),
            "sink:search:customers:name_prefix"
        );
        assert_eq!(
            search_members_key("customers", "name_prefix"),
            "sink:search:customers:name_prefix:members"
        );
    }

    #[test]
    fn field_names_are_pinned() {
        assert_eq!(freshness::SOURCE_TS_MS, "source_ts_ms");
        assert_eq!(freshness::APPLIED_AT_MS, "applied_at_ms");
        assert_eq!(freshness::APPLIED_COUNT, "applied_count");
        assert_eq!(freshness::CAUGHT_UP_AT_MS, "caught_up_at_ms");
        assert_eq!(watermark::LSN, "lsn");
        assert_eq!(watermark::TS_MS, "ts_ms");
        assert_eq!(watermark::HEARTBEAT_TS_MS, "heartbeat_ts_ms");
        assert_eq!(watermark::UPDATED_AT_MS, "updated_at_ms");
        assert_eq!(rebuild::STARTED_AT_MS, "started_at_ms");
        assert_eq!(rebuild::FINISHED_AT_MS, "finished_at_ms");
        assert_eq!(rebuild::CONFIG_FINGERPRINT, "config_fingerprint");
        assert_eq!(rebuild::EVENTS, "events");
        assert_eq!(
            rebuild::events_field("cdc.public.orders"),
            "events:cdc.public.orders"
        );
        assert_eq!(aggregate::COUNT, "count");
        assert_eq!(aggregate::sum_field("total_cents"), "sum:total_cents");
        assert_eq!(aggregate::group_count_field("a:b"), "group_count:a:b");
        assert_eq!(
            aggregate::group_sum_field("total_cents", "paid"),
            "group_sum:total_cents:paid"
        );
    }

    #[test]
    fn every_key_is_under_the_reserved_prefix() {
        for key in [
            rows_key("m"),
            index_key("m", "i"),
            types_key("m"),
            freshness_key("m"),
            writer_key("m"),
            shared_key("m"),
            watermark_key("s"),
            search_key("m", "s"),
            search_members_key("m", "s"),
            OFFSETS_KEY.to_owned(),
            OFFSETS_RUN_KEY.to_owned(),
            REBUILD_KEY.to_owned(),
            REBUILD_LOCK_KEY.to_owned(),
            SWAP_SENTINEL_KEY.to_owned(),
        ] {
            assert!(key.starts_with(RESERVED_PREFIX), "{key}");
        }
    }

    #[test]
    fn filtered_relation_names_are_pinned() {
        assert_eq!(
            filtered_relation_key("customer:{customer_id}:orders", &["status"]),
            "customer:{customer_id}:orders:status:{status}"
        );
        assert_eq!(
            filtered_relation_key("c:{id}:o", &["status", "region"]),
            "c:{id}:o:status:{status}:region:{region}"
        );
        assert_eq!(
            filtered_relation_name("customer_orders", &["status", "region"]),
            "customer_orders.status.region"
        );
    }
}
