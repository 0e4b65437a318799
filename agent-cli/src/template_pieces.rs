//! The literal pieces of a key template around its one placeholder: both the lookup script
//! (which joins them by a primary key it read) and the planner (which joins them by an
//! argument) build keys from them.

use mapping::template::{KeyTemplate, TemplatePart};

use crate::error::PlanError;

/// The literal text around the placeholders of a template with one distinct field
/// (`customer:{id}` -> `["customer:", ""]`).
pub fn pieces(
    template: &KeyTemplate,
    tool: &str,
    what: &'static str,
) -> Result<Vec<String>, PlanError> {
    if template.single_field().is_none() {
        return Err(PlanError::NotSingleField {
            tool: tool.to_owned(),
            template: template.source.clone(),
            what,
        });
    }
    let mut out = vec![String::new()];
    for part in &template.parts {
        match part {
            TemplatePart::Literal(text) => {
                if let Some(last) = out.last_mut() {
                    last.push_str(text);
                }
            }
            TemplatePart::Field(_) => out.push(String::new()),
        }
    }
    Ok(out)
}
