//! Validation of a tool call's JSON arguments against the declared lookup.
//!
//! A value reaches a key template only after it passed here: integers must be JSON integers,
//! strings must be short and free of anything that could make the rendered key address a
//! different key. A string fills exactly one placeholder by plain concatenation (no second
//! expansion) and is sent as a binary-safe bulk string, never used as a pattern, so the only
//! character that can reach another key is `:`, the separator between key segments (`1:orders`
//! would turn `customer:{id}` into a relation key). Spaces, glob characters, braces and any other
//! printable character are looked up literally; control characters are refused because they are
//! not printable text, not because they could address another key.
//! Exactly one of a lookup's alternative parameters must be given; a `null` value counts as
//! absent, which is how some models spell "not given".

use mapping::model::{Config, LookupParam, ParamType};
use serde_json::Value;

use crate::error::ArgError;
use crate::relation_args::{self, RelationArgs};
use crate::tools::{self, Tool, MAX_STRING_CHARS};

/// A validated tool call: everything needed to plan the read.
#[derive(Debug, Clone)]
pub struct Call<'a> {
    /// The lookup called.
    pub tool: Tool<'a>,
    /// Which of its parameters was given.
    pub by: &'a LookupParam,
    /// The parameter's value as it goes into the key (integers in canonical decimal form).
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

pub(crate) fn key_string(tool: &str, param: &str, raw: &Value) -> Result<String, ArgError> {
    let s = raw.as_str().ok_or_else(|| ArgError::WrongType {
        tool: tool.to_owned(),
        param: param.to_owned(),
        expected: "a string",
        got: describe(raw),
    })?;
    check_key_part(s).map_err(|problem| match problem {
        KeyPartProblem::Empty => ArgError::Empty {
            tool: tool.to_owned(),
            param: param.to_owned(),
        },
        KeyPartProblem::TooLong => ArgError::TooLong {
            tool: tool.to_owned(),
            param: param.to_owned(),
            max: MAX_STRING_CHARS,
        },
        KeyPartProblem::Forbidden(what) => ArgError::ForbiddenChar {
            tool: tool.to_owned(),
            param: param.to_owned(),
            what,
        },
    })?;
    Ok(s.to_owned())
}

/// Why a string cannot be placed into a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyPartProblem {
    /// Nothing to look up.
    Empty,
    /// Longer than [`MAX_STRING_CHARS`].
    TooLong,
    /// Contains a character that could address other keys; says which.
    Forbidden(String),
}

/// Checks that a string may fill a key template's placeholder.
pub fn check_key_part(s: &str) -> Result<(), KeyPartProblem> {
    if s.is_empty() {
        return Err(KeyPartProblem::Empty);
    }
    if s.chars().count() > MAX_STRING_CHARS {
        return Err(KeyPartProblem::TooLong);
    }
    for c in s.chars() {
        let what = match c {
            ':' => "`:` (the key separator, which could address another key)".to_owned(),
            c if c.is_control() => format!("control characters (U+{:04X})", u32::from(c)),
            _ => continue,
        };
        return Err(KeyPartProblem::Forbidden(what));
    }
    Ok(())
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn describe(v: &Value) -> String {
    let text = v.to_string();
    let shown: String = text.chars().take(40).collect();
    let ellipsis = if shown.len() < text.len() { "..." } else { "" };
    format!("{} {shown}{ellipsis}", json_kind(v))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_pass() {
        for ok in [
            "jane.doe+x@example.com",
            "a@b.c",
            "o'brien@example.ie",
            "üñí@例え.jp",
            "42",
        ] {
            assert_eq!(check_key_part(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn printable_text_with_spaces_passes() {
        for ok in [
            "Jane Doe",
            " leading and trailing ",
            "*",
            "a?",
            "[a-z]",
            "{x}",
            "a}",
            "a\\b",
            "\u{2028}",
            "\u{a0}",
            "100% \"quoted\" & <tagged>",
        ] {
            assert_eq!(check_key_part(ok), Ok(()), "{ok:?}");
        }
    }

    #[test]
    fn key_addressing_and_control_characters_are_rejected() {
        for bad in [
            "a:b",
            ":",
            "1:orders",
            "a\nb",
            "a\tb",
            "a\r\nPING",
            "a\u{0}b",
            "\u{7f}",
        ] {
            assert!(
                matches!(check_key_part(bad), Err(KeyPartProblem::Forbidden(_))),
                "{bad:?}"
            );
        }
        assert_eq!(check_key_part(""), Err(KeyPartProblem::Empty));
        assert_eq!(
            check_key_part(&"a".repeat(MAX_STRING_CHARS + 1)),
            Err(KeyPartProblem::TooLong)
        );
        assert_eq!(check_key_part(&"é".repeat(MAX_STRING_CHARS)), Ok(()));
    }
}
