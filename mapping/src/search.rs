//! Prefix searches (`search:` of a mapping): what the sink stores so that agent-cli can find
//! rows whose field starts with a text, case-insensitively, in one bounded read.
//!
//! Each search is one sorted set ([`crate::layout::search_key`]) whose members all score 0,
//! so Redis orders them by their bytes and `ZRANGEBYLEX` answers a prefix with a range:
//!
//! ```text
//! {folded value} \0 {primary key, sortable} \0 {row key}
//! ```
//!
//! - The folded value is the field's stored text in Unicode lower case ([`fold`]); PostgreSQL
//!   text cannot hold `\0`, so the first `\0` ends it and a shorter value sorts before every
//!   longer one that starts with it. Results come ordered by the folded value, then by
//!   primary key.
//! - The primary key part orders rows with equal values: integers as fixed-width hexadecimal
//!   with the sign bit flipped (so `-1 < 2 < 10` in byte order, not `10 < 2`), anything else
//!   as its stored text; the parts of a composite key are joined by `\x01`.
//! - The row key, after the last `\0`, is what the reader fetches.
//!
//! The folding is done here, in Rust, by both writers and by agent-cli for the prefix, because
//! Lua's `string.lower` only knows ASCII. The change script cannot recompute a row's old member
//! from its stored value for the same reason, so the sink also keeps each row's current member
//! ([`crate::layout::search_members_key`]): an update or a delete (whose before image holds
//! only the primary key under REPLICA IDENTITY DEFAULT) removes exactly that member.

use crate::change::FieldValue;
use crate::render::{render_value, Rendered};

/// Separates the folded value, the sortable primary key and the row key in a member.
pub const SEPARATOR: char = '\0';
/// Separates the parts of a composite primary key in a member.
const KEY_PART_SEPARATOR: char = '\x01';

/// `text` as searched: Unicode lower case (`str::to_lowercase`, the default case mapping).
pub fn fold(text: &str) -> String {
    text.to_lowercase()
}

/// The member of a row whose searched field holds `value`, with primary key parts `key` (in
/// the row key template's order) and row key `row_key`.
pub fn member<'a>(
    value: &str,
    key: impl IntoIterator<Item = &'a FieldValue>,
    row_key: &str,
) -> String {
    let mut out = fold(value);
    out.push(SEPARATOR);
    for (i, part) in key.into_iter().enumerate() {
        if i > 0 {
            out.push(KEY_PART_SEPARATOR);
        }
        push_sortable(&mut out, part);
    }
    out.push(SEPARATOR);
    out.push_str(row_key);
    out
}

/// The row key a member names: the text after its last [`SEPARATOR`].
pub fn member_row_key(member: &str) -> &str {
    member.rsplit(SEPARATOR).next().unwrap_or(member)
}

/// Appends `value` so that byte order is the key's order: 64-bit integers (also timestamps
/// and dates) as 16 hexadecimal digits of the value with its sign bit flipped, anything else
/// as its stored text.
fn push_sortable(out: &mut String, value: &FieldValue) {
    let integer = match value {
        FieldValue::Int(i) | FieldValue::TimestampMicros(i) => Some(*i),
        FieldValue::Date(days) => Some(i64::from(*days)),
        _ => None,
    };
    match integer {
        Some(i) => out.push_str(&format!("{:016x}", (i as u64) ^ (1 << 63))),
        None => {
            if let Rendered::Value(text) = render_value(value) {
                out.push_str(&text);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(value: &str, id: i64) -> String {
        member(value, [&FieldValue::Int(id)], &format!("customer:{id}"))
    }

    #[test]
    fn members_are_pinned() {
        assert_eq!(
            row("Jane Doe", 42),
            "jane doe\0800000000000002a\0customer:42"
        );
        assert_eq!(
            member(
                "ÉLODIE",
                [&FieldValue::String("fr".into()), &FieldValue::Int(-1)],
                "person:fr:-1"
            ),
            "élodie\0fr\x017fffffffffffffff\0person:fr:-1"
        );
    }

    #[test]
    fn byte_order_is_folded_value_then_primary_key() {
        let mut members = [
            row("jane", 10),
            row("Jane", 2),
            row("JANET", 1),
            row("jan", 7),
            row("jane", -3),
        ];
        members.sort();
        let keys: Vec<&str> = members.iter().map(|m| member_row_key(m)).collect();
        assert_eq!(
            keys,
            [
                "customer:7",
                "customer:-3",
                "customer:2",
                "customer:10",
                "customer:1"
            ]
        );
    }

    #[test]
    fn folding_is_unicode_lower_case() {
        assert_eq!(fold("ÅSA Öberg"), "åsa öberg");
        assert_eq!(fold("ΟΔΥΣΣΕΥΣ"), "οδυσσευς");
        assert_eq!(fold("İstanbul"), "i̇stanbul");
    }

    #[test]
    fn the_row_key_is_after_the_last_separator() {
        assert_eq!(member_row_key(&row("a\u{1}b", 5)), "customer:5");
        assert_eq!(member_row_key("no separator"), "no separator");
    }
}
