//! Shared harness of the sink's fuzz targets (`fuzz_targets/`): the input format, the
//! reference writer schemas, and a global allocator that counts, so that a target can
//! assert that decoding one input allocates in proportion to its length.
//!
//! # Input format
//!
//! `[flags][key length: u16 LE][key][value]`: bit 0 of `flags` says a key is present, bit 1
//! a value (absent: a tombstone), bit 2 picks the topic of the JSON target; a key length
//! beyond the input takes the rest as key. Key and value are the raw Kafka bytes (the
//! Confluent frame, or JsonConverter JSON). `seeds.py` writes the recorded records in it.

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use serde_json::Value as Json;
use sink::registry::{RegistryError, WriterSchema};

/// One fuzz input taken apart.
#[derive(Debug, Clone, Copy)]
pub struct Record<'a> {
    /// The record key, if any.
    pub key: Option<&'a [u8]>,
    /// The record value; `None` is a tombstone.
    pub value: Option<&'a [u8]>,
    /// The flag bit 2.
    pub alternate: bool,
}

impl<'a> Record<'a> {
    /// Takes an input apart (see the module doc); `None` if it is shorter than the header.
    pub fn split(data: &'a [u8]) -> Option<Self> {
        let (&flags, rest) = data.split_first()?;
        let (len, rest) = rest.split_first_chunk::<2>()?;
        let len = usize::from(u16::from_le_bytes(*len)).min(rest.len());
        let (key, value) = rest.split_at(len);
        Some(Record {
            key: (flags & 1 != 0).then_some(key),
            value: (flags & 2 != 0).then_some(value),
            alternate: flags & 4 != 0,
        })
    }
}

/// The recorded Debezium writer schemas by registry id: ids 1-4 from `schemas/debezium/`
/// (customers and orders, key and value), 445-449 from the converter fixture (the same
/// tables, and customers with a column of every type Debezium writes, arrays included).
pub struct Schemas(HashMap<u32, Arc<WriterSchema>>);

impl Schemas {
    /// Parses the embedded fixtures.
    pub fn reference() -> Self {
        let mut schemas = HashMap::new();
        let entries = [
            (
                1,
                include_str!("../../schemas/debezium/cdc.public.customers-key.v1.id1.json"),
            ),
            (
                2,
                include_str!("../../schemas/debezium/cdc.public.customers-value.v1.id2.json"),
            ),
            (
                3,
                include_str!("../../schemas/debezium/cdc.public.orders-key.v1.id3.json"),
            ),
            (
                4,
                include_str!("../../schemas/debezium/cdc.public.orders-value.v1.id4.json"),
            ),
        ];
        for (id, entry) in entries {
            let entry: Json = serde_json::from_str(entry).expect("registry entry");
            schemas.insert(id, parse(id, entry["schema"].to_string()));
        }
        let converters: Json = serde_json::from_str(include_str!(
            "../../tests/fixtures/debezium/converters.json"
        ))
        .expect("converters fixture");
        for (id, schema) in converters["avro_schemas"]
            .as_object()
            .expect("avro_schemas")
        {
            let id = id.parse().expect("numeric schema id");
            schemas.insert(id, parse(id, schema.to_string()));
        }
        Schemas(schemas)
    }

    /// The ids known.
    pub fn ids(&self) -> impl Iterator<Item = u32> + '_ {
        self.0.keys().copied()
    }

    /// The writer schema with this id, as the registry would answer.
    pub fn get(&self, id: u32) -> Result<Arc<WriterSchema>, RegistryError> {
        self.0
            .get(&id)
            .cloned()
            .ok_or(RegistryError::NotFound { id })
    }
}

fn parse(id: u32, text: String) -> Arc<WriterSchema> {
    Arc::new(WriterSchema::parse(id, text).expect("reference schema parses"))
}

/// A [`System`] allocator that counts the bytes live, their peak, and all bytes allocated
/// (a reallocation counts what it grows by).
pub struct CountingAllocator;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);
static TOTAL: AtomicUsize = AtomicUsize::new(0);

fn allocated(size: usize) {
    let live = LIVE.fetch_add(size, Ordering::Relaxed) + size;
    PEAK.fetch_max(live, Ordering::Relaxed);
    TOTAL.fetch_add(size, Ordering::Relaxed);
}

// SAFETY: every call is forwarded to `System` unchanged; the counters are only updated.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        allocated(layout.size());
        System.alloc(layout)
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        allocated(layout.size());
        System.alloc_zeroed(layout)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        System.dealloc(ptr, layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        match new_size.checked_sub(layout.size()) {
            Some(growth) => allocated(growth),
            None => {
                LIVE.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
            }
        }
        System.realloc(ptr, layout, new_size)
    }
}

/// What one piece of work allocated.
#[derive(Debug, Clone, Copy)]
pub struct Allocations {
    /// The most bytes live at once, beyond those live when it started.
    pub peak: usize,
    /// Every byte allocated (freed or not).
    pub total: usize,
}

/// Runs `work` and says what it allocated (the fuzz targets are single-threaded).
pub fn measure<T>(work: impl FnOnce() -> T) -> (T, Allocations) {
    let start = LIVE.load(Ordering::Relaxed);
    PEAK.store(start, Ordering::Relaxed);
    let total = TOTAL.load(Ordering::Relaxed);
    let out = work();
    let allocations = Allocations {
        peak: PEAK.load(Ordering::Relaxed).saturating_sub(start),
        total: TOTAL.load(Ordering::Relaxed) - total,
    };
    (out, allocations)
}

/// The allocation bound of decoding an input of `len` bytes: a fixed allowance for the
/// decoder's own structures plus a multiple of the input. A length prefix or count that
/// is believed before it is checked against the input breaks it by orders of magnitude.
///
/// A reallocation counts what it grows by: apache-avro grows an array by exactly each
/// block's count, so an array written in one-item blocks reallocates once per item, and
/// counting each at its new size grows with the square of the items (RELIABILITY.md,
/// "Fuzzing", finding 5) while the memory does not.
pub fn assert_bounded(len: usize, allocations: Allocations) {
    let peak_bound = 256 * 1024 + 64 * len;
    let total_bound = 1024 * 1024 + 256 * len;
    assert!(
        allocations.peak <= peak_bound && allocations.total <= total_bound,
        "an input of {len} bytes allocated {allocations:?} (bounds: peak {peak_bound}, total {total_bound})"
    );
}
