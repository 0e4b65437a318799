//! Freshness from a source watermark (`sink:watermark:{source}`), and read-your-writes.
//!
//! The sink records, per source database, the commit time and LSN up to which every change
//! of that database is in Redis; it advances with Debezium heartbeats, so an idle database
//! stays fresh and a stopped connector, slot or sink makes it stop (ARCHITECTURE.md, "Source
//! watermark"). `as_of` is the watermark's commit time, `lag_ms` now minus that, `stale` a lag
//! above the source's `stale_after_ms`, and `reason` says why in a few words.
//!
//! `--after-lsn` ([`ReadAfter`]): the answer waits (polling the watermark) until the
//! watermark's LSN has reached the caller's commit LSN, up to a bound; after the bound it
//! answers anyway, stale, with a reason.

use std::time::Duration;

use mapping::layout::{self, watermark as fields};
use mapping::lsn::Lsn;
use mapping::Source;
use redis::aio::ConnectionLike;

use crate::error::StoreError;
use crate::freshness::{rfc3339_ms, Freshness};
use crate::store::Store;

/// How often it reads the watermark while waiting.
const POLL: Duration = Duration::from_millis(20);

/// A source watermark as the sink recorded it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Record {
    /// LSN up to which every change is in Redis.
    pub lsn: Option<u64>,
    /// Commit time (ms) before which every change is in Redis.
    pub ts_ms: Option<i64>,
    /// Commit time of the heartbeat that confirmed `lsn`.
    pub heartbeat_ts_ms: Option<i64>,
    /// When the sink last advanced it (Redis server time).
    pub updated_at_ms: Option<i64>,
}

impl Record {
    /// Parses the hash; `None` when the sink has not recorded one. Unknown fields are ignored.
    pub fn parse<'a>(
        source: &str,
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Option<Record>, StoreError> {
        let mut record = Record::default();
        let mut any = false;
        for (field, value) in pairs {
            any = true;
            let bad = |e: std::num::ParseIntError| {
                StoreError::Malformed(format!(
                    "`{field}` in {} is {value:?}: {e}",
                    layout::watermark_key(source)
                ))
            };
            match field {
                fields::LSN => record.lsn = Some(value.parse().map_err(bad)?),
                fields::TS_MS => record.ts_ms = Some(value.parse().map_err(bad)?),
                fields::HEARTBEAT_TS_MS => {
                    record.heartbeat_ts_ms = Some(value.parse().map_err(bad)?);
                }
                fields::UPDATED_AT_MS => record.updated_at_ms = Some(value.parse().map_err(bad)?),
                _ => {}
            }
        }
        Ok(any.then_some(record))
    }

    /// Whether every change up to `lsn` is in Redis.
    pub fn covers(&self, lsn: Lsn) -> bool {
        self.lsn.is_some_and(|have| have >= lsn.0)
    }
}

/// Read-your-writes: answer only once the watermark has reached `lsn`, waiting up to `wait`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadAfter {
    /// The caller's commit position (`SELECT pg_current_wal_lsn()` after its commit).
    pub lsn: Lsn,
    /// How long to wait for it.
    pub wait: Duration,
}

/// Assesses `record` of `source` at `now_ms`; `stale_after_ms` is the bound in force, `after`
/// the position the caller asked for (not reached: stale).
pub fn assess(
    source: &Source,
    record: Option<&Record>,
    now_ms: i64,
    stale_after_ms: u64,
    after: Option<&ReadAfter>,
) -> Freshness {
    let Some(as_of) = record.and_then(|r| r.ts_ms) else {
        return Freshness {
            as_of: None,
            lag_ms: None,
            stale: true,
            reason: Some(format!(
                "no watermark recorded for source \"{}\" yet (no heartbeat from {} applied)",
                source.name, source.heartbeat_topic
            )),
        };
    };
    let lag_ms = now_ms.saturating_sub(as_of).max(0);
    let too_old = u64::try_from(lag_ms).map_or(true, |lag| lag > stale_after_ms);
    let reason = match after {
        Some(after) if !record.is_some_and(|r| r.covers(after.lsn)) => Some(format!(
            "watermark of source \"{}\" at {} had not reached {} after {} ms",
            source.name,
            Lsn(record.and_then(|r| r.lsn).unwrap_or(0)),
            after.lsn,
            after.wait.as_millis()
        )),
        _ if too_old => Some(format!(
            "no change or heartbeat from source \"{}\" for {} s",
            source.name,
            lag_ms / 1000
        )),
        _ => None,
    };
    Freshness {
        as_of: Some(rfc3339_ms(as_of)),
        lag_ms: Some(lag_ms),
        stale: reason.is_some(),
        reason,
    }
}

/// Reads the watermark of `source` until it covers `after.lsn` or `after.wait` has passed.
pub async fn wait_for<C: ConnectionLike + Clone + Send>(
    store: &Store<C>,
    source: &Source,
    after: &ReadAfter,
) -> Result<(), StoreError> {
    let deadline = tokio::time::Instant::now() + after.wait;
    let key = layout::watermark_key(&source.name);
    loop {
        let pairs = store.hash(&key).await?;
        let record = Record::parse(
            &source.name,
            pairs.iter().map(|(f, v)| (f.as_str(), v.as_str())),
        )?;
        if record.is_some_and(|r| r.covers(after.lsn)) || tokio::time::Instant::now() >= deadline {
            return Ok(());
        }
        tokio::time::sleep(POLL.min(deadline - tokio::time::Instant::now())).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source() -> Source {
        Source {
            name: "cdc".into(),
            heartbeat_topic: "cdc.public.dbz_heartbeat".into(),
            stale_after_ms: 5_000,
            mappings: vec!["customers".into()],
        }
    }

    fn record(lsn: u64, ts_ms: i64) -> Record {
        Record::parse(
            "cdc",
            [
                ("lsn", lsn.to_string().as_str()),
                ("ts_ms", ts_ms.to_string().as_str()),
                ("heartbeat_ts_ms", "0"),
            ],
        )
        .unwrap()
        .unwrap()
    }

    #[test]
    fn fresh_while_heartbeats_keep_coming_then_stale_with_a_reason() {
        let r = record(100, 10_000);
        let fresh = assess(&source(), Some(&r), 12_000, 5_000, None);
        assert_eq!(
            fresh,
            Freshness {
                as_of: Some("1970-01-01T00:00:10.000Z".into()),
                lag_ms: Some(2_000),
                stale: false,
                reason: None
            }
        );
        let stale = assess(&source(), Some(&r), 51_500, 5_000, None);
        assert!(stale.stale);
        assert_eq!(
            stale.reason.as_deref(),
            Some("no change or heartbeat from source \"cdc\" for 41 s")
        );
        let none = assess(&source(), None, 1, 5_000, None);
        assert!(none.stale && none.as_of.is_none());
    }

    #[test]
    fn read_after_an_lsn_not_reached_is_stale() {
        let r = record(0x10, 10_000);
        let after = |lsn| ReadAfter {
            lsn: Lsn(lsn),
            wait: Duration::from_millis(300),
        };
        assert!(!assess(&source(), Some(&r), 10_001, 5_000, Some(&after(0x10))).stale);
        let late = assess(&source(), Some(&r), 10_001, 5_000, Some(&after(0x11)));
        assert!(late.stale);
        assert_eq!(
            late.reason.as_deref(),
            Some("watermark of source \"cdc\" at 0/10 had not reached 0/11 after 300 ms")
        );
    }

    #[test]
    fn malformed_numbers_are_errors() {
        assert!(Record::parse("cdc", [("lsn", "x")]).is_err());
        assert_eq!(Record::parse("cdc", []).unwrap(), None);
    }
}
