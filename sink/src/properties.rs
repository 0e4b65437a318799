//! librdkafka properties whose value is a reference, so that secrets (`sasl.password`,
//! `ssl.key.password`, ...) need not be written into `connectors.yaml` or onto the command
//! line: a whole value `${env:NAME}` is replaced by the environment variable `NAME`, and
//! `${file:PATH}` by the contents of the file (one trailing newline dropped), as Kafka
//! Connect's config providers do. Any other value is passed through unchanged.

use std::collections::BTreeMap;
use std::path::PathBuf;

use thiserror::Error;

/// A property's reference cannot be resolved.
#[derive(Debug, Error)]
pub enum PropertyError {
    /// `${env:NAME}` names an unset (or non-UTF-8) variable.
    #[error("kafka property `{key}`: environment variable {name} is not set")]
    Env {
        /// The property.
        key: String,
        /// The variable.
        name: String,
    },
    /// `${file:PATH}` names an unreadable file.
    #[error("kafka property `{key}`: cannot read {}", path.display())]
    File {
        /// The property.
        key: String,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// `properties` with every `${env:...}` and `${file:...}` value resolved.
pub fn resolve(
    properties: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>, PropertyError> {
    resolve_with(properties, |name| std::env::var(name).ok())
}

/// [`resolve`] with `env` answering for the environment.
fn resolve_with(
    properties: &BTreeMap<String, String>,
    env: impl Fn(&str) -> Option<String>,
) -> Result<BTreeMap<String, String>, PropertyError> {
    properties
        .iter()
        .map(|(key, value)| {
            let reference = value
                .strip_prefix("${")
                .and_then(|rest| rest.strip_suffix('}'));
            let resolved = match reference.and_then(|r| r.split_once(':')) {
                Some(("env", name)) => env(name).ok_or_else(|| PropertyError::Env {
                    key: key.clone(),
                    name: name.to_owned(),
                })?,
                Some(("file", path)) => {
                    let text =
                        std::fs::read_to_string(path).map_err(|source| PropertyError::File {
                            key: key.clone(),
                            path: PathBuf::from(path),
                            source,
                        })?;
                    let text = text.strip_suffix('\n').unwrap_or(&text);
                    text.strip_suffix('\r').unwrap_or(text).to_owned()
                }
                _ => value.clone(),
            };
            Ok((key.clone(), resolved))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn props(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn references_are_resolved_and_other_values_kept() {
        let dir = std::env::temp_dir().join(format!("sink-properties-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("password");
        std::fs::write(&file, "from-file\n").unwrap();
        let input = props(&[
            ("sasl.password", "${env:KAFKA_PW}"),
            ("ssl.key.password", &format!("${{file:{}}}", file.display())),
            ("security.protocol", "SASL_SSL"),
            ("client.id", "${not a reference"),
        ]);
        let env = |name: &str| (name == "KAFKA_PW").then(|| "from-env".to_owned());
        let out = resolve_with(&input, env).unwrap();
        assert_eq!(out["sasl.password"], "from-env");
        assert_eq!(out["ssl.key.password"], "from-file");
        assert_eq!(out["security.protocol"], "SASL_SSL");
        assert_eq!(out["client.id"], "${not a reference");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn unresolvable_references_name_the_property_not_a_value() {
        let err = resolve_with(&props(&[("sasl.password", "${env:NOPE}")]), |_| None).unwrap_err();
        assert_eq!(
            err.to_string(),
            "kafka property `sasl.password`: environment variable NOPE is not set"
        );
        let err = resolve(&props(&[("sasl.password", "${file:/nonexistent/pw}")])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "kafka property `sasl.password`: cannot read /nonexistent/pw"
        );
    }
}
