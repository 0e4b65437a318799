//! `agent-cli status`: freshness of every source (its watermark and heartbeat age) and of
//! every mapping, as tables for people or JSON for scripts. A mapping with a source reports
//! the source's freshness in `as_of`, `lag_ms`, `stale` and `reason`.

use redis::aio::ConnectionLike;
use serde::Serialize;

use crate::error::StoreError;
use crate::freshness::{self, Record};
use crate::lookup::Lookups;
use crate::watermark;

/// Everything `status` shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Statuses {
    /// One per declared source.
    pub sources: Vec<SourceStatus>,
    /// One per mapping.
    pub mappings: Vec<MappingStatus>,
}

/// The watermark of one source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SourceStatus {
    /// Source name.
    pub source: String,
    /// Its heartbeat topic.
    pub heartbeat_topic: String,
    /// Watermark position (PostgreSQL LSN, `0/1A2B3C4`).
    pub watermark_lsn: Option<String>,
    /// Watermark commit time (RFC 3339): every change committed before it is in Redis.
    pub as_of: Option<String>,
    /// Now minus `as_of`.
    pub lag_ms: Option<i64>,
    /// Now minus the commit time of the newest heartbeat the watermark is based on.
    pub heartbeat_age_ms: Option<i64>,
    /// `lag_ms` above `stale_after_ms`, or no watermark.
    pub stale: bool,
    /// Why it is stale.
    pub reason: Option<String>,
    /// The bound in force.
    pub stale_after_ms: u64,
}

/// Freshness of one mapping.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MappingStatus {
    /// Mapping name.
    pub mapping: String,
    /// Its topic.
    pub topic: String,
    /// The source whose watermark gives its freshness, if any.
    pub source: Option<String>,
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
    /// Why it is stale (from the source watermark).
    pub reason: Option<String>,
}

/// Reads the watermark of every source and the freshness of every mapping.
pub async fn collect<C: ConnectionLike + Clone + Send + Sync + 'static>(
    lookups: &Lookups<C>,
) -> Result<Statuses, StoreError> {
    let config = lookups.config();
    let names: Vec<&str> = config.mappings.iter().map(|m| m.name.as_str()).collect();
    let records = lookups.store().freshness_records(&names).await?;
    let now = freshness::now_ms();
    let mut sources = Vec::new();
    for source in &config.sources {
        let pairs = lookups
            .store()
            .hash(&mapping::layout::watermark_key(&source.name))
            .await?;
        let record = watermark::Record::parse(
            &source.name,
            pairs.iter().map(|(f, v)| (f.as_str(), v.as_str())),
        )?;
        let bound = lookups.source_stale_after_ms(source);
        let assessed = watermark::assess(source, record.as_ref(), now, bound, None);
        let r = record.unwrap_or_default();
        sources.push(SourceStatus {
            source: source.name.clone(),
            heartbeat_topic: source.heartbeat_topic.clone(),
            watermark_lsn: r.lsn.map(|l| mapping::lsn::Lsn(l).to_string()),
            as_of: assessed.as_of,
            lag_ms: assessed.lag_ms,
            heartbeat_age_ms: r.heartbeat_ts_ms.map(|t| now.saturating_sub(t).max(0)),
            stale: assessed.stale,
            reason: assessed.reason,
            stale_after_ms: bound,
        });
    }
    let mappings = config
        .mappings
        .iter()
        .zip(records)
        .map(|(mapping, hash)| {
            let record = Record::parse(
                &mapping.name,
                hash.iter().map(|(f, v)| (f.as_str(), v.as_str())),
            )?;
            let source = config
                .source_of(&mapping.name)
                .and_then(|s| sources.iter().find(|status| status.source == s.name));
            let assessed = match source {
                Some(s) => freshness::Freshness {
                    as_of: s.as_of.clone(),
                    lag_ms: s.lag_ms,
                    stale: s.stale,
                    reason: s.reason.clone(),
                },
                None => freshness::assess(record.as_ref(), now, lookups.stale_after_ms()),
            };
            let r = record.unwrap_or_default();
            Ok(MappingStatus {
                mapping: mapping.name.clone(),
                topic: mapping.topic.clone(),
                source: source.map(|s| s.source.clone()),
                last_change: r.source_ts_ms.map(freshness::rfc3339_ms),
                source_ts_ms: r.source_ts_ms,
                applied_at_ms: r.applied_at_ms,
                applied_count: r.applied_count,
                caught_up_at: r.caught_up_at_ms.map(freshness::rfc3339_ms),
                caught_up_at_ms: r.caught_up_at_ms,
                as_of: assessed.as_of,
                lag_ms: assessed.lag_ms,
                stale: assessed.stale,
                reason: assessed.reason,
            })
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    Ok(Statuses { sources, mappings })
}

/// The statuses as aligned text tables: sources (when declared), then mappings.
pub fn table(statuses: &Statuses, stale_after_ms: u64) -> String {
    let mut out = String::new();
    if !statuses.sources.is_empty() {
        let header = [
            "SOURCE",
            "WATERMARK (SOURCE TIME)",
            "LSN",
            "LAG",
            "HEARTBEAT AGE",
            "STATE",
        ];
        let rows: Vec<Vec<String>> = statuses
            .sources
            .iter()
            .map(|s| {
                vec![
                    s.source.clone(),
                    s.as_of.clone().unwrap_or_else(|| "-".into()),
                    s.watermark_lsn.clone().unwrap_or_else(|| "-".into()),
                    s.lag_ms.map(human_ms).unwrap_or_else(|| "-".into()),
                    s.heartbeat_age_ms
                        .map(human_ms)
                        .unwrap_or_else(|| "-".into()),
                    state(s.stale, s.as_of.is_some(), s.reason.as_deref()),
                ]
            })
            .collect();
        aligned(&mut out, &header, &rows);
        out.push('\n');
    }
    out.push_str(&mappings_table(&statuses.mappings, stale_after_ms));
    out
}

/// `fresh`, `STALE: reason`, or `no data`.
fn state(stale: bool, known: bool, reason: Option<&str>) -> String {
    match (stale, known, reason) {
        (_, false, _) => "no data".into(),
        (true, true, Some(reason)) => format!("STALE: {reason}"),
        (true, true, None) => "STALE".into(),
        (false, true, _) => "fresh".into(),
    }
}

/// `header` and `rows` as columns padded to their widest cell.
fn aligned(out: &mut String, header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut line = |cells: &[&str]| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(padded.join("  ").trim_end());
        out.push('\n');
    };
    line(header);
    for row in rows {
        let cells: Vec<&str> = row.iter().map(String::as_str).collect();
        line(&cells);
    }
}

/// The mappings' table.
fn mappings_table(statuses: &[MappingStatus], stale_after_ms: u64) -> String {
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
                state(s.stale, s.as_of.is_some(), None),
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
    fn sources_come_first_with_their_state() {
        let statuses = Statuses {
            sources: vec![SourceStatus {
                source: "cdc".into(),
                heartbeat_topic: "cdc.public.dbz_heartbeat".into(),
                watermark_lsn: Some("0/1A2B".into()),
                as_of: Some("2026-12-06T09:00:00.000Z".into()),
                lag_ms: Some(41_000),
                heartbeat_age_ms: Some(41_500),
                stale: true,
                reason: Some("no change or heartbeat from source \"cdc\" for 41 s".into()),
                stale_after_ms: 30_000,
            }],
            mappings: Vec::new(),
        };
        let text = table(&statuses, 30_000);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("SOURCE"), "{text}");
        assert!(lines[1].starts_with("cdc"), "{text}");
        assert!(lines[1].contains("0/1A2B"), "{text}");
        assert!(
            lines[1].ends_with("STALE: no change or heartbeat from source \"cdc\" for 41 s"),
            "{text}"
        );
        assert!(text.contains("MAPPING"), "{text}");
    }

    #[test]
    fn durations_read_well() {
        assert_eq!(human_ms(850), "850ms");
        assert_eq!(human_ms(12_345), "12.3s");
        assert_eq!(human_ms(245_000), "4m 05s");
        assert_eq!(human_ms(7_380_000), "2h 03m");
    }
}
