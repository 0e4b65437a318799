//! An answer's included rows: each include's children, typed with the child mapping's types,
//! put into the found row under the include's `as` field (the reads are planned by
//! `include.rs`).

use mapping::model::Include;
use serde_json::{Map, Value};

use crate::error::StoreError;
use crate::store::RawInclude;
use crate::typing;

/// Puts each include's typed children, newest first, into `row` under its `as` field.
pub fn attach(
    row: &mut Map<String, Value>,
    includes: &[Include],
    read: &[RawInclude<'_>],
) -> Result<(), StoreError> {
    for (n, include) in includes.iter().enumerate() {
        let children = match read.get(n) {
            Some(raw) => {
                let types = typing::types_of(&raw.types);
                raw.rows
                    .iter()
                    .map(|r| typing::typed_row(r, &types, &include.mapping).map(Value::Object))
                    .collect::<Result<Vec<_>, _>>()?
            }
            None => {
                return Err(StoreError::Malformed(format!(
                    "lookup reply: no rows for include `{}`",
                    include.as_field
                )))
            }
        };
        row.insert(include.as_field.clone(), Value::Array(children));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::include::tests::recent_orders;

    #[test]
    fn a_reply_without_an_include_s_rows_is_malformed() {
        let mut row = Map::new();
        let err = attach(&mut row, &[recent_orders()], &[]).unwrap_err();
        assert!(err.to_string().contains("include `recent_orders`"), "{err}");
        attach(&mut row, &[recent_orders()], &[RawInclude::default()]).unwrap();
        assert_eq!(row["recent_orders"], Value::Array(Vec::new()));
    }
}
