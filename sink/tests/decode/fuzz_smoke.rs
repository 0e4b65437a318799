//! A few seconds of the fuzz targets' work on every CI run (the long runs are
//! `bash fuzz/run.sh`, RELIABILITY.md "Fuzzing"): the recorded Avro and JsonConverter
//! records, mutated with a fixed seed (bytes changed, cut short, a huge length or count
//! put in, parts repeated), and the inputs the fuzzers once crashed on
//! (`fuzz/regressions/`), through [`Decoder::decode_with`] with the recorded writer
//! schemas. Any input may be refused; none may panic or take long.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value as Json;
use sink::decode::{DecodeError, Decoded, Decoder};
use sink::registry::{Registry, RegistryError, WriterSchema};

use crate::support::{read_json, unhex};

/// Mutants per recorded record.
const MUTANTS: usize = 150;

/// One decode taking this long is a hang.
const SLOW: Duration = Duration::from_secs(1);

/// Varints a length or count may be replaced with: 2^31-ish, 400 MB, 2^62, -1, i64::MIN.
const HUGE: [&[u8]; 5] = [
    &[0xfe, 0xff, 0xff, 0xff, 0x0f],
    &[0x80, 0xb4, 0xc4, 0xfd, 0x02],
    &[0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01],
    &[0x01],
    &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
];

struct Harness {
    decoder: Decoder,
    schemas: HashMap<u32, Arc<WriterSchema>>,
}

impl Harness {
    fn new() -> Self {
        let mut schemas = HashMap::new();
        for entry in
            std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("../schemas/debezium"))
                .expect("schemas/debezium")
        {
            let text = std::fs::read_to_string(entry.expect("entry").path()).expect("schema");
            let entry: Json = serde_json::from_str(&text).expect("registry entry");
            let id = entry["id"].as_u64().expect("id") as u32;
            let schema = WriterSchema::parse(id, entry["schema"].to_string()).expect("parses");
            schemas.insert(id, Arc::new(schema));
        }
        for (id, schema) in read_json("converters.json")["avro_schemas"]
            .as_object()
            .expect("avro_schemas")
        {
            let id = id.parse().expect("numeric id");
            let schema = WriterSchema::parse(id, schema.to_string()).expect("parses");
            schemas.insert(id, Arc::new(schema));
        }
        let registry = Registry::new("http://127.0.0.1:9").expect("registry client");
        Harness {
            decoder: Decoder::new(Arc::new(registry)),
            schemas,
        }
    }

    fn decode(&self, key: Option<&[u8]>, value: Option<&[u8]>) -> Result<Decoded, DecodeError> {
        let started = Instant::now();
        let decoded = self.decoder.decode_with("t", key, value, Some(0), |id| {
            self.schemas
                .get(&id)
                .cloned()
                .ok_or(RegistryError::NotFound { id })
        });
        assert!(
            started.elapsed() < SLOW,
            "decoding took {:?}: key {key:02x?}, value {value:02x?}",
            started.elapsed()
        );
        decoded
    }
}

/// A record's key and value bytes.
type Bytes = (Option<Vec<u8>>, Option<Vec<u8>>);

/// The recorded records: Avro from both fixtures, JsonConverter with and without schemas.
fn recorded() -> Vec<Bytes> {
    let hex = |v: &Json| v.as_str().filter(|s| !s.is_empty()).map(unhex);
    let text = |v: &Json| v.as_str().map(|s| s.as_bytes().to_vec());
    let mut records: Vec<_> = read_json("raw-wire-bytes.json")
        .as_array()
        .expect("records")
        .iter()
        .map(|r| (hex(&r["key_hex"]), hex(&r["value_hex"])))
        .collect();
    for r in read_json("converters.json")["records"]
        .as_array()
        .expect("records")
    {
        records.push((hex(&r["avro"]["key_hex"]), hex(&r["avro"]["value_hex"])));
        for converter in ["json", "json_plain"] {
            records.push((text(&r[converter]["key"]), text(&r[converter]["value"])));
        }
    }
    records
}

fn mutate(rng: &mut StdRng, bytes: &[u8]) -> Vec<u8> {
    let mut out = bytes.to_vec();
    if out.is_empty() {
        return out;
    }
    let at = rng.random_range(0..out.len());
    match rng.random_range(0..5) {
        0 => out[at] ^= rng.random_range(1..=255),
        1 => out.truncate(at),
        2 => {
            let huge = HUGE[rng.random_range(0..HUGE.len())];
            let end = (at + huge.len()).min(out.len());
            out.splice(at..end, huge.iter().copied());
        }
        3 => {
            let end = rng.random_range(at..=out.len());
            let part = out[at..end].to_vec();
            out.splice(at..at, part);
        }
        _ => {
            for _ in 0..rng.random_range(1..8) {
                let at = rng.random_range(0..out.len());
                out[at] = rng.random();
            }
        }
    }
    out
}

#[test]
fn mutated_records_are_refused_or_decoded_never_a_panic_or_a_hang() {
    let harness = Harness::new();
    let mut rng = StdRng::seed_from_u64(13);
    let records = recorded();
    assert!(
        records.len() >= 30,
        "only {} recorded records",
        records.len()
    );
    let (mut decoded, mut refused) = (0, 0);
    for (key, value) in &records {
        // Every recorded record decodes as it is.
        harness
            .decode(key.as_deref(), value.as_deref())
            .unwrap_or_else(|e| panic!("recorded record refused: {e:#}"));
        for _ in 0..MUTANTS {
            let key = key.as_deref().map(|k| mutate(&mut rng, k));
            let value = value.as_deref().map(|v| mutate(&mut rng, v));
            match harness.decode(key.as_deref(), value.as_deref()) {
                Ok(_) => decoded += 1,
                Err(_) => refused += 1,
            }
        }
    }
    // The mutants reach the decoders: not all refused at the frame.
    assert!(
        decoded > 0 && refused > 0,
        "{decoded} decoded, {refused} refused"
    );
}

/// What the fuzz targets crashed on once (`fuzz/regressions/<target>/`, in the targets'
/// input format: flags, key length, key, value), now refused.
#[test]
fn fuzz_regressions_are_refused() {
    let harness = Harness::new();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/regressions");
    let mut replayed = 0;
    for target in std::fs::read_dir(&dir).expect("fuzz/regressions") {
        for input in std::fs::read_dir(target.expect("target").path()).expect("inputs") {
            let path = input.expect("input").path();
            let data = std::fs::read(&path).expect("input");
            let (&flags, rest) = data.split_first().expect("flags");
            let (len, rest) = rest.split_first_chunk::<2>().expect("key length");
            let (key, value) = rest.split_at(usize::from(u16::from_le_bytes(*len)).min(rest.len()));
            let key = (flags & 1 != 0).then_some(key);
            let value = (flags & 2 != 0).then_some(value);
            let result = harness.decode(key, value);
            assert!(result.is_err(), "{} decoded: {result:?}", path.display());
            replayed += 1;
        }
    }
    assert!(replayed > 0, "no regression inputs in {}", dir.display());
}
