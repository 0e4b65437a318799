//! One row's bookkeeping as a single allocation: its template values (and search members),
//! its relation scores, and its key only when the key template does not render it from the
//! values. A [`RowState`] spends a vector and a string per value; these bytes spend a
//! length byte.
//!
//! Layout: a flags byte; the key (length, bytes) when [`EXPLICIT_KEY`] is set; the number
//! of values, then each as 0 (absent) or its length + 1 followed by its bytes; the number
//! of scores, then each as 0 (absent) or 1 followed by the 8 bytes of the `f64`. Numbers
//! are LEB128 varints: one byte below 128.

use super::hashing::KeyHashing;
use super::RowState;
use crate::apply::owned::model::Part;

/// The key is stored: rendering the key template from the values does not give it.
const EXPLICIT_KEY: u8 = 1;

/// Encodes a row whose key is `key` and whose key template is `key_template` in `out`
/// (cleared first: a caller reuses one buffer for every row).
pub(super) fn encode_into(out: &mut Vec<u8>, key: &str, key_template: &[Part], row: &RowState) {
    out.clear();
    let rendered = renders(key_template, |f| row.values.get(f)?.as_deref(), key);
    if rendered {
        out.push(0);
    } else {
        out.push(EXPLICIT_KEY);
        put_bytes(out, key.as_bytes());
    }
    put_varint(out, row.values.len());
    for value in &row.values {
        match value {
            None => out.push(0),
            Some(v) => {
                put_varint(out, v.len() + 1);
                out.extend_from_slice(v.as_bytes());
            }
        }
    }
    put_varint(out, row.scores.len());
    for score in &row.scores {
        match score {
            None => out.push(0),
            Some(s) => {
                out.push(1);
                out.extend_from_slice(&s.to_le_bytes());
            }
        }
    }
}

/// [`encode_into`] a new buffer.
#[cfg(test)]
fn encode(key: &str, key_template: &[Part], row: &RowState) -> Vec<u8> {
    let mut out = Vec::new();
    encode_into(&mut out, key, key_template, row);
    out
}

/// A reader of encoded row bytes.
#[derive(Clone, Copy)]
pub(super) struct RowBytes<'a>(pub(super) &'a [u8]);

impl<'a> RowBytes<'a> {
    /// The stored key, when the values do not render it.
    pub(super) fn explicit_key(self) -> Option<&'a str> {
        let (flags, mut rest) = self.0.split_first()?;
        (flags & EXPLICIT_KEY != 0).then(|| text(take_bytes(&mut rest)))
    }

    /// The bytes after the flags and the stored key.
    fn after_key(self) -> &'a [u8] {
        let Some((flags, mut rest)) = self.0.split_first() else {
            return &[];
        };
        if flags & EXPLICIT_KEY != 0 {
            take_bytes(&mut rest);
        }
        rest
    }

    /// Value `i` (template fields first, then search members); `None` when absent.
    pub(super) fn value(self, i: usize) -> Option<&'a str> {
        let mut rest = self.after_key();
        let count = take_varint(&mut rest);
        for at in 0..count {
            let value = take_value(&mut rest);
            if at == i {
                return value;
            }
        }
        None
    }

    /// Whether rendering `key_template` from these values gives `key`.
    pub(super) fn has_key(self, key_template: &[Part], key: &str) -> bool {
        match self.explicit_key() {
            Some(stored) => stored == key,
            None => renders(key_template, |f| self.value(f), key),
        }
    }

    /// The row's key: stored, or rendered from the values.
    pub(super) fn key(self, key_template: &[Part]) -> String {
        if let Some(stored) = self.explicit_key() {
            return stored.to_owned();
        }
        let mut key = String::new();
        for part in key_template {
            match part {
                Part::Literal(l) => key.push_str(l),
                Part::Field(f) => key.push_str(self.value(*f).unwrap_or_default()),
            }
        }
        key
    }

    /// The row's key hashed as [`KeyHashing::of`] hashes its text, without rendering it.
    pub(super) fn key_hash(self, key_template: &[Part], hashing: &KeyHashing) -> u64 {
        let mut hasher = hashing.pieces();
        if let Some(stored) = self.explicit_key() {
            hasher.update(stored.as_bytes());
        } else {
            for part in key_template {
                match part {
                    Part::Literal(l) => hasher.update(l.as_bytes()),
                    Part::Field(f) => hasher.update(self.value(*f).unwrap_or_default().as_bytes()),
                }
            }
        }
        hasher.digest()
    }

    /// The row decoded, stored at `position`.
    pub(super) fn decode(self, position: i64) -> RowState {
        let mut rest = self.after_key();
        let values = (0..take_varint(&mut rest))
            .map(|_| take_value(&mut rest).map(str::to_owned))
            .collect();
        let scores = (0..take_varint(&mut rest))
            .map(|_| match take(&mut rest, 1) {
                [1] => {
                    let bytes = take(&mut rest, 8).try_into().unwrap_or([0; 8]);
                    Some(f64::from_le_bytes(bytes))
                }
                _ => None,
            })
            .collect();
        RowState {
            position,
            values,
            scores,
        }
    }
}

/// Whether `template`, its field `f` taken from `value(f)`, renders exactly `key`; false
/// when a field it names has no value.
fn renders<'v>(template: &[Part], value: impl Fn(usize) -> Option<&'v str>, key: &str) -> bool {
    let mut rest = key;
    for part in template {
        let piece = match part {
            Part::Literal(l) => l.as_str(),
            Part::Field(f) => match value(*f) {
                Some(v) => v,
                None => return false,
            },
        };
        match rest.strip_prefix(piece) {
            Some(r) => rest = r,
            None => return false,
        }
    }
    rest.is_empty()
}

/// Bytes [`put_varint`] writes for `n`.
pub(super) fn varint_len(n: usize) -> usize {
    (usize::BITS - n.leading_zeros()).max(1).div_ceil(7) as usize
}

pub(super) fn put_varint(out: &mut Vec<u8>, mut n: usize) {
    while n >= 0x80 {
        out.push((n as u8 & 0x7f) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put_varint(out, bytes.len());
    out.extend_from_slice(bytes);
}

/// The next `n` bytes of `rest` (fewer at its end: the bytes are only ever this module's).
fn take<'a>(rest: &mut &'a [u8], n: usize) -> &'a [u8] {
    let (head, tail) = rest.split_at(n.min(rest.len()));
    *rest = tail;
    head
}

pub(super) fn take_varint(rest: &mut &[u8]) -> usize {
    let mut n = 0;
    let mut shift = 0;
    while let Some((&byte, tail)) = rest.split_first() {
        *rest = tail;
        n |= usize::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            break;
        }
        shift += 7;
    }
    n
}

fn take_bytes<'a>(rest: &mut &'a [u8]) -> &'a [u8] {
    let len = take_varint(rest);
    take(rest, len)
}

fn take_value<'a>(rest: &mut &'a [u8]) -> Option<&'a str> {
    match take_varint(rest) {
        0 => None,
        len => Some(text(take(rest, len - 1))),
    }
}

/// Bytes this module encoded from a `str`.
fn text(bytes: &[u8]) -> &str {
    std::str::from_utf8(bytes).expect("row bytes hold the UTF-8 text they were encoded from")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn customer_key() -> Vec<Part> {
        vec![Part::Literal("customer:".into()), Part::Field(0)]
    }

    fn row(values: &[Option<&str>], scores: &[Option<f64>]) -> RowState {
        RowState {
            position: 7,
            values: values.iter().map(|v| v.map(str::to_owned)).collect(),
            scores: scores.to_vec(),
        }
    }

    #[test]
    fn a_row_decodes_to_what_was_encoded() {
        let long = "é".repeat(100);
        let original = row(
            &[Some("12"), None, Some(""), Some(&long)],
            &[None, Some(-1.5), Some(f64::MAX)],
        );
        let bytes = encode("customer:12", &customer_key(), &original);
        let decoded = RowBytes(&bytes).decode(7);
        assert_eq!(decoded.values, original.values);
        assert_eq!(decoded.scores, original.scores);
        assert_eq!(RowBytes(&bytes).value(3), Some(long.as_str()));
        assert_eq!(RowBytes(&bytes).value(1), None);
        assert_eq!(RowBytes(&bytes).value(9), None);
    }

    #[test]
    fn the_key_is_stored_only_when_the_values_do_not_render_it() {
        let template = customer_key();
        let rendered = encode("customer:12", &template, &row(&[Some("12")], &[]));
        assert_eq!(RowBytes(&rendered).explicit_key(), None);
        assert_eq!(rendered.len(), 1 + 1 + 3 + 1, "flags, count, value, count");
        assert!(RowBytes(&rendered).has_key(&template, "customer:12"));
        assert!(!RowBytes(&rendered).has_key(&template, "customer:1"));
        assert!(!RowBytes(&rendered).has_key(&template, "customer:123"));
        assert_eq!(RowBytes(&rendered).key(&template), "customer:12");

        let stored = encode("customer:0012", &template, &row(&[Some("12")], &[]));
        assert_eq!(RowBytes(&stored).explicit_key(), Some("customer:0012"));
        assert!(RowBytes(&stored).has_key(&template, "customer:0012"));
        assert!(!RowBytes(&stored).has_key(&template, "customer:12"));
        assert_eq!(RowBytes(&stored).key(&template), "customer:0012");
        assert_eq!(RowBytes(&stored).decode(1).values, [Some("12".to_owned())]);

        let keyless = encode("customer:5", &template, &row(&[None], &[]));
        assert_eq!(RowBytes(&keyless).explicit_key(), Some("customer:5"));
    }

    #[test]
    fn a_key_hashes_the_same_rendered_or_stored() {
        let hashing = KeyHashing::random();
        let template = customer_key();
        for key in ["customer:12", "customer:0012"] {
            let bytes = encode(key, &template, &row(&[Some("12")], &[]));
            assert_eq!(
                RowBytes(&bytes).key_hash(&template, &hashing),
                hashing.of(key),
                "{key}"
            );
        }
    }

    #[test]
    fn varint_len_is_what_put_varint_writes() {
        for n in [0, 1, 127, 128, 16_383, 16_384, usize::MAX >> 1, usize::MAX] {
            let mut out = Vec::new();
            put_varint(&mut out, n);
            assert_eq!(varint_len(n), out.len(), "{n}");
        }
    }
}
