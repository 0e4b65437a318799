//! The optional `filters` and `range` arguments of a relation lookup, and the read they make.
//!
//! A filter's value picks the filtered relation the sink keeps for exactly the given filters
//! (`mapping::layout::filtered_relation_key`), so a filtered read walks a sorted set of
//! matching children only. A range's RFC 3339 bounds become score bounds (epoch
//! microseconds, the score of a timestamp `order_by`) for `ZREVRANGEBYSCORE ... LIMIT`. Either
//! way the script reads at most `limit` members plus those tied with the last one.

use chrono::DateTime;
use mapping::model::{Lookup, Mapping};
use serde_json::{json, Map, Value};

use crate::error::ArgError;
use crate::key_part::{key_string, MAX_STRING_CHARS};

/// The filters and range a call gave (all optional).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RelationArgs {
    /// (stored field, value as stored), in the lookup's declaration order.
    pub filters: Vec<(String, String)>,
    /// Score bounds, when the call gave a `since` or an `until`.
    pub range: Option<ScoreRange>,
}

/// Inclusive score bounds as Redis reads them (`-inf`/`+inf` for an open end).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ScoreRange {
    /// Lowest score.
    pub min: String,
    /// Highest score.
    pub max: String,
}

/// Whether `key` is one of the lookup's filter or range parameters.
pub fn is_param(lookup: &Lookup, key: &str) -> bool {
    lookup.filters.iter().any(|f| f.param == key)
        || lookup
            .range
            .as_ref()
            .is_some_and(|r| r.since == key || r.until == key)
}

/// Adds the JSON Schemas of the lookup's filter and range parameters to `properties` (all
/// optional): filters are strings (integers and booleans are accepted as their text), range
/// bounds `date-time` strings.
pub fn describe(lookup: &Lookup, mapping: &Mapping, properties: &mut Map<String, Value>) {
    for f in &lookup.filters {
        properties.insert(
            f.param.clone(),
            json!({
                "type": "string",
                "description": format!("{} (exact value of `{}`)", f.description.trim_end_matches('.'), f.field),
                "minLength": 1,
                "maxLength": MAX_STRING_CHARS,
            }),
        );
    }
    let Some(range) = &lookup.range else { return };
    let order_by = lookup
        .relation
        .as_ref()
        .and_then(|r| mapping.relation(r))
        .map_or("the order", |r| r.order_by.as_str());
    for (param, side) in [
        (&range.since, "at or after"),
        (&range.until, "at or before"),
    ] {
        properties.insert(
            param.clone(),
            json!({
                "type": "string",
                "format": "date-time",
                "description": format!("Only rows whose `{order_by}` is {side} this time (RFC 3339, e.g. 2026-11-24T00:00:00Z)"),
            }),
        );
    }
}

/// Reads the filter and range arguments of `object` (`null` counts as absent).
pub fn parse(
    tool: &str,
    lookup: &Lookup,
    object: &Map<String, Value>,
) -> Result<RelationArgs, ArgError> {
    let given = |param: &str| object.get(param).filter(|v| !v.is_null());
    let mut filters = Vec::new();
    for f in &lookup.filters {
        let Some(raw) = given(&f.param) else { continue };
        let value = match raw {
            Value::Number(n) if n.is_i64() || n.is_u64() => n.to_string(),
            Value::Bool(b) => b.to_string(),
            other => key_string(tool, &f.param, other)?,
        };
        filters.push((f.field.clone(), value));
    }
    let range = match &lookup.range {
        None => None,
        Some(r) => {
            let since = given(&r.since)
                .map(|v| micros(tool, &r.since, v))
                .transpose()?;
            let until = given(&r.until)
                .map(|v| micros(tool, &r.until, v))
                .transpose()?;
            (since.is_some() || until.is_some()).then(|| ScoreRange {
                min: since.map_or_else(|| "-inf".to_owned(), |m| m.to_string()),
                max: until.map_or_else(|| "+inf".to_owned(), |m| m.to_string()),
            })
        }
    };
    Ok(RelationArgs { filters, range })
}

/// An RFC 3339 time as epoch microseconds (the score the sink gives timestamps).
fn micros(tool: &str, param: &str, raw: &Value) -> Result<i64, ArgError> {
    let bad = |reason: String| ArgError::BadTime {
        tool: tool.to_owned(),
        param: param.to_owned(),
        got: raw.to_string().chars().take(60).collect(),
        reason,
    };
    let text = raw.as_str().ok_or_else(|| bad("not a string".to_owned()))?;
    let time = DateTime::parse_from_rfc3339(text).map_err(|e| bad(e.to_string()))?;
    Ok(time.timestamp_micros())
}
