//! Raw Kafka key and value bytes through the sink's decoder with the recorded Debezium
//! writer schemas: the Confluent frame (magic byte, schema id), the compiled readers and
//! the generic apache-avro path behind its layout check, the row and envelope analysis.
//! Any input may be refused; none may panic, hang, or allocate beyond
//! [`sink_fuzz::assert_bounded`].
#![no_main]

use std::sync::{Arc, LazyLock};

use libfuzzer_sys::fuzz_target;
use sink::decode::Decoder;
use sink::registry::Registry;
use sink_fuzz::{assert_bounded, measure, CountingAllocator, Record, Schemas};

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

struct Target {
    schemas: Schemas,
    decoder: Decoder,
}

/// One decoder for the whole run, as in the sink, with its per-schema caches filled first
/// (their one-off cost is not the input's).
static TARGET: LazyLock<Target> = LazyLock::new(|| {
    let registry = Registry::new("http://127.0.0.1:9").expect("registry client");
    let target = Target {
        schemas: Schemas::reference(),
        decoder: Decoder::new(Arc::new(registry)),
    };
    for id in target.schemas.ids() {
        let frame = [&[0][..], &id.to_be_bytes()[..]].concat();
        let _ = target.decode(Some(&frame), Some(&frame));
        let _ = target.decode(Some(&[0, 0, 0, 0, 1, 2]), Some(&frame));
    }
    target
});

impl Target {
    fn decode(&self, key: Option<&[u8]>, value: Option<&[u8]>) -> bool {
        self.decoder
            .decode_with("cdc.public.t", key, value, Some(0), |id| {
                self.schemas.get(id)
            })
            .is_ok()
    }
}

fuzz_target!(|data: &[u8]| {
    let target = &*TARGET;
    let Some(record) = Record::split(data) else {
        return;
    };
    // JSON keys and values are the `json` target's (its decoder caches by schema text).
    if [record.key, record.value]
        .into_iter()
        .flatten()
        .any(|part| part.first() == Some(&b'{'))
    {
        return;
    }
    let (_, allocations) = measure(|| target.decode(record.key, record.value));
    assert_bounded(data.len(), allocations);
});
