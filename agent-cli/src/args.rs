//! Validation of a tool call's JSON arguments against the declared lookup.
//!
//! A value reaches a key template only after it passed here: integers must be JSON integers,
//! strings must pass [`crate::key_part`].
//! Exactly one of a lookup's alternative parameters must be given; a `null` value counts as
//! absent, which is how some models spell "not given".

use mapping::model::{Config, LookupParam, ParamType};
use serde_json::Value;

use crate::error::ArgError;
use crate::key_part::{describe, json_kind, key_string, prefix_string};
use crate::relation_args::{self, RelationArgs};
use crate::tools::{self, Tool};

/// A validated tool call: everything needed to plan the read.
#[derive(Debug, Clone)]
pub struct Call<'a> {
    /// The lookup called.
    pub tool: Tool<'a>,
    /// Which of its parameters was given.
    pub by: &'a LookupParam,
    /// The parameter's value as it goes into the key (integers in canonical decimal form), or
    /// a search lookup's prefix.
    pub value: String,
    /// For relation lookups: how many children to return.
    pub limit: Option<u32>,
    /// For relation lookups: the filters and range given.
    pub relation_args: RelationArgs,
}

/// Finds the tool and validates the JSON argument text.
pub fn parse<'a>(config: &'a Config, tool: &str, args: &str) -> Result<Call<'a>, ArgError> {
    let found = tools::find(config, tool).ok_or_else(|| ArgError::UnknownTool {
        tool: tool.to_owned(),
        available: tools::names(config),
    })?;
    let value: Value = if args.trim().is_empty() {
        Value::Object(Default::default())
    } else {
        serde_json::from_str(args).map_err(|e| ArgError::NotJson {
            tool: tool.to_owned(),
            reason: e.to_string(),
        })?
    };
    validate(found, &value)
}

/// Validates already parsed arguments.
pub fn validate<'a>(tool: Tool<'a>, args: &Value) -> Result<Call<'a>, ArgError> {
    let name = tool.name();
    let lookup = tool.lookup;
    let object = args.as_object().ok_or_else(|| ArgError::NotObject {
        tool: name.to_owned(),
        got: json_kind(args),
    })?;

    let limit_param = lookup.limit.as_ref().map(|l| l.param.as_str());
    for key in object.keys() {
        let known = lookup.by.iter().any(|p| &p.param == key)
            || limit_param == Some(key.as_str())
            || relation_args::is_param(lookup, key);
        if !known {
            return Err(ArgError::UnknownParam {
                tool: name.to_owned(),
                param: key.clone(),
                expected: param_names(tool),
            });
        }
    }

    let given: Vec<(&LookupParam, &Value)> = lookup
        .by
        .iter()
        .filter_map(|p| {
            object
                .get(&p.param)
                .filter(|v| !v.is_null())
                .map(|v| (p, v))
        })
        .collect();
    let (by, raw) = match given.as_slice() {
        [one] => *one,
        [] => {
            return Err(ArgError::Missing {
                tool: name.to_owned(),
                expected: alternatives(tool),
            });
        }
        many => {
            let names: Vec<String> = many.iter().map(|(p, _)| format!("`{}`", p.param)).collect();
            return Err(ArgError::Ambiguous {
                tool: name.to_owned(),
                expected: alternatives(tool),
                given: names.join(" and "),
            });
        }
    };
    let value = match by.r#type {
        ParamType::Integer => integer(name, &by.param, raw)?.to_string(),
        ParamType::String if lookup.search.is_some() => prefix_string(name, &by.param, raw)?,
        ParamType::String => key_string(name, &by.param, raw)?,
    };

    let limit = match &lookup.limit {
        None => None,
        Some(spec) => Some(match object.get(&spec.param).filter(|v| !v.is_null()) {
            None => spec.default,
            Some(raw) => {
                let out_of_range = || ArgError::OutOfRange {
                    tool: name.to_owned(),
                    param: spec.param.clone(),
                    max: spec.max,
                    got: raw.to_string(),
                };
                let n = integer(name, &spec.param, raw)?;
                if n < 1 || n > i64::from(spec.max) {
                    return Err(out_of_range());
                }
                u32::try_from(n).map_err(|_| out_of_range())?
            }
        }),
    };

    let relation_args = relation_args::parse(name, lookup, object)?;
    Ok(Call {
        tool,
        by,
        value,
        limit,
        relation_args,
    })
}

fn integer(tool: &str, param: &str, raw: &Value) -> Result<i64, ArgError> {
    raw.as_i64().ok_or_else(|| ArgError::WrongType {
        tool: tool.to_owned(),
        param: param.to_owned(),
        expected: "an integer",
        got: describe(raw),
    })
}

fn param_names(tool: Tool<'_>) -> String {
    let mut names: Vec<String> = tool
        .lookup
        .by
        .iter()
        .map(|p| format!("`{}`", p.param))
        .collect();
    if let Some(limit) = &tool.lookup.limit {
        names.push(format!("`{}`", limit.param));
    }
    for f in &tool.lookup.filters {
        names.push(format!("`{}`", f.param));
    }
    if let Some(r) = &tool.lookup.range {
        names.push(format!("`{}`, `{}`", r.since, r.until));
    }
    names.join(", ")
}

fn alternatives(tool: Tool<'_>) -> String {
    let names: Vec<String> = tool
        .lookup
        .by
        .iter()
        .map(|p| format!("`{}`", p.param))
        .collect();
    match names.as_slice() {
        [one] => one.clone(),
        _ => format!("exactly one of {}", names.join(", ")),
    }
}
