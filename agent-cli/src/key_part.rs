//! What a string argument may hold before it fills a key template's placeholder.
//!
//! A string fills exactly one placeholder by plain concatenation (no second expansion) and is
//! sent as a binary-safe bulk string, never used as a pattern, so the only character that can
//! reach another key is `:`, the separator between key segments (`1:orders` would turn
//! `customer:{id}` into a relation key). Spaces, glob characters, braces and any other printable
//! character are looked up literally; control characters are refused because they are not
//! printable text, not because they could address another key.

use serde_json::Value;

use crate::error::ArgError;

/// Longest accepted string parameter, in characters: declared in every tool's schema
/// (`maxLength`) and enforced when a call's arguments are checked.
pub const MAX_STRING_CHARS: usize = 256;

/// `raw` as a string that may fill a placeholder, or the error naming `tool` and `param`.
pub(crate) fn key_string(tool: &str, param: &str, raw: &Value) -> Result<String, ArgError> {
    checked_string(tool, param, raw, check_key_part)
}

/// `raw` as a search prefix: like [`key_string`], except that `:` is allowed, because a
/// prefix only bounds a `ZRANGEBYLEX` range of one declared sorted set and never becomes a key.
pub(crate) fn prefix_string(tool: &str, param: &str, raw: &Value) -> Result<String, ArgError> {
    checked_string(tool, param, raw, check_prefix)
}

fn checked_string(
    tool: &str,
    param: &str,
    raw: &Value,
    check: fn(&str) -> Result<(), KeyPartProblem>,
) -> Result<String, ArgError> {
    let s = raw.as_str().ok_or_else(|| ArgError::WrongType {
        tool: tool.to_owned(),
        param: param.to_owned(),
        expected: "a string",
        got: describe(raw),
    })?;
    check(s).map_err(|problem| match problem {
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
    check_text(s, true)
}

/// Checks a search prefix: printable text, `:` included.
pub fn check_prefix(s: &str) -> Result<(), KeyPartProblem> {
    check_text(s, false)
}

fn check_text(s: &str, refuse_separator: bool) -> Result<(), KeyPartProblem> {
    if s.is_empty() {
        return Err(KeyPartProblem::Empty);
    }
    if s.chars().count() > MAX_STRING_CHARS {
        return Err(KeyPartProblem::TooLong);
    }
    for c in s.chars() {
        let what = match c {
            ':' if refuse_separator => {
                "`:` (the key separator, which could address another key)".to_owned()
            }
            c if c.is_control() => format!("control characters (U+{:04X})", u32::from(c)),
            _ => continue,
        };
        return Err(KeyPartProblem::Forbidden(what));
    }
    Ok(())
}

/// The kind of a JSON value, as error messages name it (`a string`, `null`, ...).
pub(crate) fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A JSON value as error messages show it: its kind and its first characters.
pub(crate) fn describe(v: &Value) -> String {
    let text = v.to_string();
    let shown: String = text.chars().take(40).collect();
    let ellipsis = if shown.len() < text.len() { "..." } else { "" };
    format!("{} {shown}{ellipsis}", json_kind(v))
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
    fn a_search_prefix_may_hold_the_separator_but_no_control_character() {
        assert_eq!(check_prefix("Re: invoices"), Ok(()));
        assert_eq!(check_prefix(":"), Ok(()));
        assert!(matches!(
            check_prefix("a\u{0}b"),
            Err(KeyPartProblem::Forbidden(_))
        ));
        assert_eq!(check_prefix(""), Err(KeyPartProblem::Empty));
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
