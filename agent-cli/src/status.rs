//! `agent-cli status`: freshness of every mapping, as a table for people or JSON for scripts.

use redis::aio::ConnectionLike;
use serde::Serialize;

use crate::error::StoreError;
use crate::freshness::{self, Record};
use crate::lookup::Lookups;

/// Freshness of one mapping.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MappingStatus {
    /// Mapping name.
    pub mapping: String,
    /// Its topic.
    pub topic: String,
    /// Source commit time of the last applied change (RFC 3339).
    pub last_change: Option<String>,
    /// The same in ms since the epoch.
    pub source_ts_ms: Option<i64>,
    /// When the sink applied the last change (ms since the epoch).
    pub applied_at_ms: Option<i64>,
    /// Changes applied so far.
    pub applied_count: Option<u64>,
    /// Last time the sink was at the end of the log (RFC 3339).
    pub caught_up_at: Option<String>,
    /// The same in ms since the epoch.
    pub caught_up_at_ms: Option<i64>,
    /// The data is current as of (RFC 3339): the later of the two times above.
    pub as_of: Option<String>,
    /// Now minus `as_of`.
    pub lag_ms: Option<i64>,
    /// `lag_ms` above the bound, or nothing recorded.
    pub stale: bool,
}

/// Reads the freshness of every mapping in one round trip.
pub async fn collect<C: ConnectionLike + Clone + Send>(
    lookups: &Lookups<C>,
) -> Result<Vec<MappingStatus>, StoreError> {
    let config = lookups.config();
    let names: Vec<&str> = config.mappings.iter().map(|m| m.name.as_str()).collect();
    let records = lookups.store().freshness_records(&names).await?;
    let now = freshness::now_ms();
    config
        .mappings
        .iter()
        .zip(records)
        .map(|(mapping, hash)| {
            let record = Record::parse(
                &mapping.name,
                hash.iter().map(|(f, v)| (f.as_str(), v.as_str())),
            )?;
            let assessed = freshness::assess(record.as_ref(), now, lookups.stale_after_ms());
            let r = record.unwrap_or_default();
            Ok(MappingStatus {
                mapping: mapping.name.clone(),
                topic: mapping.topic.clone(),
                last_change: r.source_ts_ms.map(freshness::rfc3339_ms),
                source_ts_ms: r.source_ts_ms,
                applied_at_ms: r.applied_at_ms,
                applied_count: r.applied_count,
                caught_up_at: r.caught_up_at_ms.map(freshness::rfc3339_ms),
                caught_up_at_ms: r.caught_up_at_ms,
                as_of: assessed.as_of,
                lag_ms: assessed.lag_ms,
                stale: assessed.stale,
            })
        })
        .collect()
}

/// The statuses as an aligned text table.
pub fn table(statuses: &[MappingStatus], stale_after_ms: u64) -> String {
    let header = [
        "MAPPING",
        "LAST CHANGE (SOURCE TIME)",
        "LAG",
        "APPLIED",
        "CAUGHT UP",
        "STATE",
    ];
    let rows: Vec<[String; 6]> = statuses
        .iter()
        .map(|s| {
            [
                s.mapping.clone(),
                s.last_change.clone().unwrap_or_else(|| "-".into()),
                s.lag_ms.map(human_ms).unwrap_or_else(|| "-".into()),
                s.applied_count
                    .map(|n| n.to_string())
                    .unwrap_or_else(|| "-".into()),
                s.caught_up_at.clone().unwrap_or_else(|| "-".into()),
                match (s.stale, s.as_of.is_some()) {
                    (_, false) => "no data".into(),
                    (true, true) => "STALE".into(),
                    (false, true) => "fresh".into(),
                },
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &[&str]| {
        let padded: Vec<String> = cells
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(padded.join("  ").trim_end());
        out.push('\n');
    };
    line(&header);
    for row in &rows {
        let cells: Vec<&str> = row.iter().map(String::as_str).collect();
        line(&cells);
    }
    out.push_str(&format!(
        "stale after {}\n",
        human_ms(i64::try_from(stale_after_ms).unwrap_or(i64::MAX))
    ));
    out
}

/// `850ms`, `12.3s`, `4m 05s`, `2h 03m`.
pub fn human_ms(ms: i64) -> String {
    match ms {
        ms if ms < 1_000 => format!("{ms}ms"),
        ms if ms < 60_000 => format!("{:.1}s", ms as f64 / 1000.0),
        ms if ms < 3_600_000 => format!("{}m {:02}s", ms / 60_000, (ms % 60_000) / 1000),
        ms => format!("{}h {:02}m", ms / 3_600_000, (ms % 3_600_000) / 60_000),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_well() {
        assert_eq!(human_ms(850), "850ms");
        assert_eq!(human_ms(12_345), "12.3s");
        assert_eq!(human_ms(245_000), "4m 05s");
        assert_eq!(human_ms(7_380_000), "2h 03m");
    }
}
