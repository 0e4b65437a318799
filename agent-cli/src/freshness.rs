//! Freshness of the read model, from `sink:freshness:{mapping}`: what mappings without a
//! source (no `sources:` in `connectors.yaml`) report. With a source, freshness comes from its
//! watermark instead ([`crate::watermark`]).
//!
//! Here the data is known to be current as of the later of two times the sink records: the source
//! commit time of the last change it applied (`source_ts_ms`) and the last time it saw its
//! partitions at the end of the log (`caught_up_at_ms`: nothing newer existed then). The lag
//! is the time since then; a result is stale when the lag exceeds the configured bound, or
//! when the sink has recorded nothing at all. This says how far the sink is behind the
//! *Kafka log*, not the database: a stopped connector goes unnoticed.

use chrono::{DateTime, SecondsFormat, Utc};
use mapping::layout::{self, freshness as fields};
use serde::Serialize;

use crate::error::StoreError;

/// The freshness hash of one mapping, as the sink records it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Record {
    /// Source commit time of the last applied change (ms since the epoch).
    pub source_ts_ms: Option<i64>,
    /// When the sink applied it.
    pub applied_at_ms: Option<i64>,
    /// How many changes the sink has applied.
    pub applied_count: Option<u64>,
    /// Last time the sink saw its partitions at the end of the log.
    pub caught_up_at_ms: Option<i64>,
}

impl Record {
    /// Parses the hash; `None` when the sink has not recorded anything for this mapping.
    /// Unknown fields are ignored (newer sinks may add some).
    pub fn parse<'a>(
        mapping: &str,
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Option<Record>, StoreError> {
        let mut record = Record::default();
        let mut any = false;
        for (field, value) in pairs {
            any = true;
            let bad = |e: std::num::ParseIntError| {
                StoreError::Malformed(format!(
                    "`{field}` in {} is {value:?}: {e}",
                    layout::freshness_key(mapping)
                ))
            };
            match field {
                fields::SOURCE_TS_MS => record.source_ts_ms = Some(value.parse().map_err(bad)?),
                fields::APPLIED_AT_MS => record.applied_at_ms = Some(value.parse().map_err(bad)?),
                fields::APPLIED_COUNT => record.applied_count = Some(value.parse().map_err(bad)?),
                fields::CAUGHT_UP_AT_MS => {
                    record.caught_up_at_ms = Some(value.parse().map_err(bad)?);
                }
                _ => {}
            }
        }
        Ok(any.then_some(record))
    }

    /// The time the data is known to be current as of.
    pub fn as_of_ms(&self) -> Option<i64> {
        match (self.source_ts_ms, self.caught_up_at_ms) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        }
    }
}

/// What every tool result carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Freshness {
    /// RFC 3339 UTC time the data is current as of; `null` when unknown.
    pub as_of: Option<String>,
    /// Milliseconds between `as_of` and now; `null` when unknown.
    pub lag_ms: Option<i64>,
    /// Lag above the bound, or unknown.
    pub stale: bool,
    /// Why it is stale, in a few words (only when it is, and only from a source watermark).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Assesses a record at `now_ms` against `stale_after_ms`.
pub fn assess(record: Option<&Record>, now_ms: i64, stale_after_ms: u64) -> Freshness {
    match record.and_then(Record::as_of_ms) {
        None => Freshness {
            as_of: None,
            lag_ms: None,
            stale: true,
            reason: None,
        },
        Some(as_of) => {
            // A sink clock slightly ahead of ours is not "negative lag".
            let lag_ms = now_ms.saturating_sub(as_of).max(0);
            Freshness {
                as_of: Some(rfc3339_ms(as_of)),
                lag_ms: Some(lag_ms),
                stale: u64::try_from(lag_ms).map_or(true, |lag| lag > stale_after_ms),
                reason: None,
            }
        }
    }
}

/// The freshness of an answer read from two mappings (a row and its `include:` rows): the
/// staler of the two, i.e. the one with the larger lag (unknown counts as the largest); stale
/// when either is, with the first reason either gives.
pub fn staler(a: Freshness, b: Freshness) -> Freshness {
    let lag = |f: &Freshness| f.lag_ms.unwrap_or(i64::MAX);
    let stale = a.stale || b.stale;
    let (mut older, other) = if lag(&b) > lag(&a) { (b, a) } else { (a, b) };
    older.stale = stale;
    if older.reason.is_none() {
        older.reason = other.reason;
    }
    older
}

/// Milliseconds since the epoch as RFC 3339 UTC with milliseconds.
pub fn rfc3339_ms(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true))
        .unwrap_or_else(|| ms.to_string())
}

/// Now, in milliseconds since the epoch.
pub fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn as_of_is_the_later_time() {
        let r = Record::parse(
            "m",
            [
                ("source_ts_ms", "1000"),
                ("caught_up_at_ms", "5000"),
                ("x", "y"),
            ],
        )
        .unwrap()
        .unwrap();
        assert_eq!(r.as_of_ms(), Some(5000));
        let f = assess(Some(&r), 7000, 1500);
        assert_eq!(
            f,
            Freshness {
                as_of: Some("1970-01-01T00:00:05.000Z".into()),
                lag_ms: Some(2000),
                stale: true,
                reason: None,
            }
        );
        assert!(!assess(Some(&r), 6000, 1500).stale);
    }

    #[test]
    fn nothing_recorded_is_stale() {
        assert_eq!(Record::parse("m", []).unwrap(), None);
        assert_eq!(
            assess(None, 1, 1),
            Freshness {
                as_of: None,
                lag_ms: None,
                stale: true,
                reason: None,
            }
        );
        let only_count = Record::parse("m", [("applied_count", "3")]).unwrap();
        assert!(assess(only_count.as_ref(), 1, 1).stale);
    }

    #[test]
    fn staler_takes_the_larger_lag_and_either_staleness() {
        let at = |lag: Option<i64>, stale: bool, reason: Option<&str>| Freshness {
            as_of: lag.map(|l| rfc3339_ms(10_000 - l)),
            lag_ms: lag,
            stale,
            reason: reason.map(str::to_owned),
        };
        let fresh = at(Some(10), false, None);
        let older = at(Some(900), false, None);
        assert_eq!(staler(fresh.clone(), older.clone()), older);
        assert_eq!(staler(older.clone(), fresh.clone()), older);
        let unknown = at(None, true, Some("no watermark"));
        assert_eq!(staler(fresh.clone(), unknown.clone()), unknown);
        // The newer one's staleness (e.g. an unreached `--after-lsn`) is kept.
        let waited = at(Some(10), true, Some("not reached"));
        assert_eq!(
            staler(waited, older),
            at(Some(900), true, Some("not reached"))
        );
    }

    #[test]
    fn malformed_numbers_are_errors() {
        assert!(Record::parse("m", [("source_ts_ms", "soon")]).is_err());
    }
}
