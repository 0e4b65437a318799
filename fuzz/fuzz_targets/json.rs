//! Raw Kafka key and value bytes through the sink's JsonConverter decoding: framed
//! (`{"schema", "payload"}`) and schemaless records, with the column types a mapping
//! declares (flag bit 2: topic `typed`) or inferred (topic `plain`). Any input may be
//! refused; none may panic, hang, or allocate beyond [`sink_fuzz::assert_bounded`].
//!
//! Each input gets a fresh decoder: its caches (schemas by text, the columns seen per
//! topic) grow with what a topic has sent, which is a property of the stream, not of one
//! record.
#![no_main]

use std::sync::{Arc, LazyLock};

use libfuzzer_sys::fuzz_target;
use mapping::{load_config_str, ConnectionOverrides, Mapping};
use sink::decode::Decoder;
use sink::registry::Registry;
use sink_fuzz::{assert_bounded, measure, CountingAllocator, Record};

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

/// A mapping declaring a column of every declared type on topic `typed`.
const CONFIG: &str = r#"
mappings:
  - name: typed
    topic: typed
    key: "t:{id}"
    types:
      s: string
      i: int
      l: long
      f: float
      d: double
      b: boolean
      j: json
      y: bytes
      dt: date
      ms: timestamp_millis
      us: timestamp_micros
      ns: timestamp_nanos
      z: zoned_timestamp
      dec: decimal(2)
      v: variable_scale_decimal
"#;

static SETUP: LazyLock<(Arc<Registry>, Vec<Mapping>)> = LazyLock::new(|| {
    let registry = Registry::new("http://127.0.0.1:9").expect("registry client");
    let config = load_config_str(CONFIG, "fuzz.yaml", &ConnectionOverrides::default())
        .expect("fuzz mapping");
    (Arc::new(registry), config.mappings)
});

fuzz_target!(|data: &[u8]| {
    let (registry, mappings) = &*SETUP;
    let Some(record) = Record::split(data) else {
        return;
    };
    let topic = if record.alternate { "typed" } else { "plain" };
    let (_, allocations) = measure(|| {
        let decoder = Decoder::new(Arc::clone(registry)).with_declared_types(mappings);
        decoder
            .decode_with(topic, record.key, record.value, Some(0), |id| {
                Err(sink::registry::RegistryError::NotFound { id })
            })
            .is_ok()
    });
    assert_bounded(data.len(), allocations);
});
