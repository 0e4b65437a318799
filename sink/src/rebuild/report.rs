//! What a rebuild did: the [`Report`] for callers and the text `sink rebuild` prints, and the
//! `sink:rebuild` fields the handover writes into the new state.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mapping::layout::rebuild as fields;

use crate::pipeline::Summary;

/// What a finished rebuild did.
#[derive(Debug, Clone)]
pub struct Report {
    /// The database that now serves the new state.
    pub live_db: i64,
    /// The database that held the new state while it was built (now being freed).
    pub staging_db: i64,
    /// Records replayed per topic (applied, skipped or dead-lettered) up to the start-time
    /// end of the log.
    pub per_topic: BTreeMap<String, u64>,
    /// Time from start until the replay reached the end of the log.
    pub replay: Duration,
    /// Time from start until the swap.
    pub total: Duration,
    /// Time from start until the replay had stopped and the old state was being freed.
    pub finished: Duration,
    /// Counts of the consume loop (including records consumed during the handover).
    pub summary: Summary,
    /// Handover attempts (1 when no live sink was ahead).
    pub attempts: u32,
}

impl Report {
    /// Records replayed in total.
    pub fn events(&self) -> u64 {
        self.per_topic.values().sum()
    }

    /// Records per second of the replay.
    pub fn rate(&self) -> f64 {
        self.events() as f64 / self.replay.as_secs_f64().max(0.001)
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "rebuild: db {} now serves the rebuilt state (built in db {}, where the old state is being freed)",
            self.live_db, self.staging_db
        )?;
        for (topic, n) in &self.per_topic {
            writeln!(f, "  {topic}: {n} events")?;
        }
        writeln!(
            f,
            "replayed {} events in {:.2} s ({:.0} events/s); swapped after {:.2} s ({} handover attempt(s)); {} dead-lettered",
            self.events(),
            self.replay.as_secs_f64(),
            self.rate(),
            self.total.as_secs_f64(),
            self.attempts,
            self.summary.dead_lettered,
        )
    }
}

/// Milliseconds since the Unix epoch.
pub(super) fn now_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}

/// FNV-1a of the validated mappings: equal for equal mappings, whatever the connection
/// settings.
pub fn fingerprint(config: &mapping::Config) -> String {
    let text = format!("{:?}", config.mappings);
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in text.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{hash:016x}")
}

/// The `sink:rebuild` fields: start and finish time, the mappings' fingerprint, records per
/// topic.
pub(super) fn meta(
    config: &mapping::Config,
    started_ms: u128,
    per_topic: &BTreeMap<String, u64>,
) -> Vec<(String, String)> {
    let mut meta = vec![
        (fields::STARTED_AT_MS.to_owned(), started_ms.to_string()),
        (fields::FINISHED_AT_MS.to_owned(), now_ms().to_string()),
        (fields::CONFIG_FINGERPRINT.to_owned(), fingerprint(config)),
        (
            fields::EVENTS.to_owned(),
            per_topic.values().sum::<u64>().to_string(),
        ),
    ];
    for (topic, n) in per_topic {
        meta.push((fields::events_field(topic), n.to_string()));
    }
    meta
}
