//! Key templates such as `customer:{id}`: literal text with `{field}` placeholders.
//!
//! Parsed once at load time; rendering only concatenates, so it is cheap on the hot path.
//!
//! Syntax: a placeholder is `{name}` with `name` matching `[A-Za-z0-9_]+`; any other `{` or
//! `}` is an error (there is no escaping); a template has at least one placeholder (a key
//! without one would be shared by every row).
//!
//! [`KeyTemplate::may_collide`] decides whether two templates could address the same Redis
//! key; see its documentation for the rule.

use std::fmt;

/// A parsed key template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyTemplate {
    /// The template as written, e.g. `customer:email:{email}`. The sink's Lua script renders
    /// this same text from stored values, so the two must agree on the syntax.
    pub source: String,
    /// Alternating literal and placeholder parts.
    pub parts: Vec<TemplatePart>,
}

/// One piece of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TemplatePart {
    /// Copied as is.
    Literal(String),
    /// Replaced by the stored field's rendered value.
    Field(String),
}

/// Why a template does not parse. Offsets are byte offsets into the template text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// `{` without a matching `}`.
    #[error("unclosed `{{` at offset {offset} (expected `{{field}}`)")]
    Unclosed {
        /// Offset of the `{`.
        offset: usize,
    },
    /// `}` outside a placeholder.
    #[error("stray `}}` at offset {offset} (expected `{{field}}`)")]
    StrayClose {
        /// Offset of the `}`.
        offset: usize,
    },
    /// `{}` or a name with characters outside `[A-Za-z0-9_]`.
    #[error("invalid placeholder `{{{name}}}` at offset {offset} (expected a field name of letters, digits and `_`)")]
    InvalidName {
        /// The text between the braces.
        name: String,
        /// Offset of the `{`.
        offset: usize,
    },
    /// No placeholder at all.
    #[error("no `{{field}}` placeholder (expected at least one, e.g. `customer:{{id}}`)")]
    NoPlaceholder,
}

fn is_field_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

impl KeyTemplate {
    /// Parses `source`; see the module documentation for the syntax.
    pub fn parse(source: &str) -> Result<KeyTemplate, TemplateError> {
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut rest = source;
        let mut offset = 0;
        while let Some(i) = rest.find(['{', '}']) {
            literal.push_str(&rest[..i]);
            if rest.as_bytes()[i] == b'}' {
                return Err(TemplateError::StrayClose { offset: offset + i });
            }
            let after_open = &rest[i + 1..];
            let close = after_open
                .find(['{', '}'])
                .filter(|&j| after_open.as_bytes()[j] == b'}')
                .ok_or(TemplateError::Unclosed { offset: offset + i })?;
            let name = &after_open[..close];
            if !is_field_name(name) {
                return Err(TemplateError::InvalidName {
                    name: name.to_owned(),
                    offset: offset + i,
                });
            }
            if !literal.is_empty() {
                parts.push(TemplatePart::Literal(std::mem::take(&mut literal)));
            }
            parts.push(TemplatePart::Field(name.to_owned()));
            let consumed = i + 1 + close + 1;
            offset += consumed;
            rest = &rest[consumed..];
        }
        literal.push_str(rest);
        if !literal.is_empty() {
            parts.push(TemplatePart::Literal(literal));
        }
        if !parts.iter().any(|p| matches!(p, TemplatePart::Field(_))) {
            return Err(TemplateError::NoPlaceholder);
        }
        Ok(KeyTemplate {
            source: source.to_owned(),
            parts,
        })
    }

    /// The placeholder field names in order of appearance (repeats included).
    pub fn fields(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|p| match p {
            TemplatePart::Field(f) => Some(f.as_str()),
            TemplatePart::Literal(_) => None,
        })
    }

    /// The field name when the template uses exactly one distinct field (`customer:{id}`).
    pub fn single_field(&self) -> Option<&str> {
        let mut fields = self.fields();
        let first = fields.next()?;
        fields.all(|f| f == first).then_some(first)
    }

    /// The literal text before the first placeholder (`customer:` for `customer:{id}`).
    pub fn literal_prefix(&self) -> &str {
        match self.parts.first() {
            Some(TemplatePart::Literal(l)) => l,
            _ => "",
        }
    }

    /// Renders the key, asking `value` for each placeholder's text; `None` as soon as a field
    /// has no value.
    pub fn render<F, S>(&self, mut value: F) -> Option<String>
    where
        F: FnMut(&str) -> Option<S>,
        S: AsRef<str>,
    {
        let mut out = String::with_capacity(self.source.len() + 16);
        for part in &self.parts {
            match part {
                TemplatePart::Literal(l) => out.push_str(l),
                TemplatePart::Field(f) => out.push_str(value(f)?.as_ref()),
            }
        }
        Some(out)
    }

    /// Whether `self` and `other` could produce the same key.
    ///
    /// The rule: split both templates on `:` into segments. They collide when they have the
    /// same number of segments and, at every position, either both segments are the same
    /// literal text, or both contain placeholders and their patterns (placeholders matching
    /// any text without `:`) can match a common text. A literal segment is never considered
    /// equal to a placeholder segment: literal segments act as namespaces, so
    /// `customer:{id}`, `customer:email:{email}` and `customer:{customer_id}:orders` are
    /// distinct, while `customer:{id}` and `customer:{customer_id}` collide. Field values
    /// containing `:` are outside what this check can see.
    pub fn may_collide(&self, other: &KeyTemplate) -> bool {
        let a = self.segments();
        let b = other.segments();
        a.len() == b.len()
            && a.iter().zip(&b).all(|(x, y)| match (x, y) {
                (Segment::Literal(x), Segment::Literal(y)) => x == y,
                (Segment::Pattern(x), Segment::Pattern(y)) => patterns_intersect(x, y),
                _ => false,
            })
    }

    fn segments(&self) -> Vec<Segment> {
        let mut segments = Vec::new();
        let mut current: Vec<Glob> = Vec::new();
        for part in &self.parts {
            match part {
                TemplatePart::Field(_) => current.push(Glob::Any),
                TemplatePart::Literal(l) => {
                    let mut pieces = l.split(':');
                    if let Some(first) = pieces.next() {
                        current.extend(first.chars().map(Glob::Char));
                    }
                    for piece in pieces {
                        segments.push(Segment::from_globs(std::mem::take(&mut current)));
                        current.extend(piece.chars().map(Glob::Char));
                    }
                }
            }
        }
        segments.push(Segment::from_globs(current));
        segments
    }
}

impl fmt::Display for KeyTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

/// A `:`-separated piece of a template, for [`KeyTemplate::may_collide`].
enum Segment {
    Literal(String),
    Pattern(Vec<Glob>),
}

impl Segment {
    fn from_globs(globs: Vec<Glob>) -> Segment {
        if globs.contains(&Glob::Any) {
            Segment::Pattern(globs)
        } else {
            Segment::Literal(
                globs
                    .into_iter()
                    .filter_map(|g| match g {
                        Glob::Char(c) => Some(c),
                        Glob::Any => None,
                    })
                    .collect(),
            )
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Glob {
    Char(char),
    Any,
}

/// Whether two glob patterns (`Any` = any string) match a common string: a search over pairs
/// of positions.
fn patterns_intersect(a: &[Glob], b: &[Glob]) -> bool {
    let (n, m) = (a.len(), b.len());
    let mut seen = vec![false; (n + 1) * (m + 1)];
    let mut stack = vec![(0usize, 0usize)];
    while let Some((i, j)) = stack.pop() {
        let idx = i * (m + 1) + j;
        if seen[idx] {
            continue;
        }
        seen[idx] = true;
        if i == n && j == m {
            return true;
        }
        let (x, y) = (a.get(i).copied(), b.get(j).copied());
        // A wildcard may end here (match nothing more).
        if x == Some(Glob::Any) {
            stack.push((i + 1, j));
        }
        if y == Some(Glob::Any) {
            stack.push((i, j + 1));
        }
        match (x, y) {
            (Some(Glob::Char(c)), Some(Glob::Char(d))) if c == d => stack.push((i + 1, j + 1)),
            // A wildcard consumes the other side's character.
            (Some(Glob::Any), Some(Glob::Char(_))) => stack.push((i, j + 1)),
            (Some(Glob::Char(_)), Some(Glob::Any)) => stack.push((i + 1, j)),
            _ => {}
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> KeyTemplate {
        KeyTemplate::parse(s).unwrap()
    }

    #[test]
    fn parses_literals_and_fields() {
        assert_eq!(
            t("customer:{customer_id}:orders").parts,
            vec![
                TemplatePart::Literal("customer:".into()),
                TemplatePart::Field("customer_id".into()),
                TemplatePart::Literal(":orders".into()),
            ]
        );
        assert_eq!(
            t("{a}{b}").parts,
            vec![
                TemplatePart::Field("a".into()),
                TemplatePart::Field("b".into())
            ]
        );
    }

    #[test]
    fn rejects_bad_syntax() {
        assert_eq!(
            KeyTemplate::parse("customer:{id"),
            Err(TemplateError::Unclosed { offset: 9 })
        );
        assert_eq!(
            KeyTemplate::parse("customer:{a{b}"),
            Err(TemplateError::Unclosed { offset: 9 })
        );
        assert_eq!(
            KeyTemplate::parse("customer:{id}}"),
            Err(TemplateError::StrayClose { offset: 13 })
        );
        assert_eq!(
            KeyTemplate::parse("x:{}"),
            Err(TemplateError::InvalidName {
                name: String::new(),
                offset: 2
            })
        );
        assert_eq!(
            KeyTemplate::parse("x:{a-b}"),
            Err(TemplateError::InvalidName {
                name: "a-b".into(),
                offset: 2
            })
        );
        assert_eq!(
            KeyTemplate::parse("customers"),
            Err(TemplateError::NoPlaceholder)
        );
        assert_eq!(
            KeyTemplate::parse("x:{a-b}").unwrap_err().to_string(),
            "invalid placeholder `{a-b}` at offset 2 (expected a field name of letters, digits and `_`)"
        );
    }

    #[test]
    fn fields_and_single_field() {
        let k = t("a:{x}:{y}:{x}");
        assert_eq!(k.fields().collect::<Vec<_>>(), ["x", "y", "x"]);
        assert_eq!(k.single_field(), None);
        assert_eq!(t("a:{x}:{x}").single_field(), Some("x"));
        assert_eq!(t("customer:{id}").literal_prefix(), "customer:");
    }

    #[test]
    fn renders_or_reports_missing() {
        let k = t("customer:{customer_id}:orders");
        assert_eq!(
            k.render(|f| (f == "customer_id").then_some("7")).as_deref(),
            Some("customer:7:orders")
        );
        assert_eq!(k.render(|_| None::<&str>), None);
        assert_eq!(
            k.render(|_| Some(String::from("x"))).as_deref(),
            Some("customer:x:orders")
        );
    }

    #[test]
    fn collision_rule() {
        let collide = |a: &str, b: &str| t(a).may_collide(&t(b));
        assert!(collide("customer:{id}", "customer:{x}"));
        assert!(collide("customer:{id}", "customer:{id}"));
        assert!(collide("a:{x}-1", "a:1-{y}"));
        assert!(!collide("a:{x}-1", "a:{y}-2"));
        assert!(!collide("customer:{id}", "customer:email:{email}"));
        assert!(!collide("customer:{id}", "customer:{customer_id}:orders"));
        assert!(!collide(
            "customer:email:{email}",
            "customer:{customer_id}:orders"
        ));
        assert!(!collide("customer:{id}", "order:{id}"));
        assert!(collide("{a}", "{b}"));
    }
}
