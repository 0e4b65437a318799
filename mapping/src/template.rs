//! Key templates such as `customer:{id}`: literal text with `{field}` placeholders.
//!
//! Parsed once at load time; rendering only concatenates, so it is cheap on the hot path.

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
