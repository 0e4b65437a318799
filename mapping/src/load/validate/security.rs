//! Phase 2 for credentials and certificates: `redis.tls`, the Redis ACL user, the registry's
//! basic auth and CA, each from the file or its override ([`SecurityOverrides`]). Files are
//! only named here, not read (this crate does no I/O); the binaries read them when
//! connecting.
//!
//! Rules: a set path is not empty; `redis.tls.cert_file` and `key_file` go together; TLS
//! settings need a `rediss://` URL; the registry's `basic_auth_user_info` reads `user:password`;
//! a registry password needs a user. Registry credentials are taken, first to last, from
//! `username`/`password`, `basic_auth_user_info`, and the URL's `user:password@`, which is
//! always removed from the URL so that the URL can be shown.

use std::path::PathBuf;

use marked_yaml::Spanned;

use super::Validator;
use crate::diagnostics::split_userinfo;
use crate::load::{ConfigError, SecurityOverrides};
use crate::model::{RedisConfig, RedisTls, SchemaRegistryConfig};
use crate::raw::{RawRedis, RawSchemaRegistry};
use crate::secret::Secret;

/// A setting's value and where it came from: the file (with its position) or an override.
struct Setting<'r> {
    name: &'static str,
    value: String,
    in_file: Option<&'r Spanned<String>>,
}

impl Validator<'_> {
    /// Reports `message` about `setting` at its position, or as an override error.
    fn setting_error(&mut self, setting: &Setting<'_>, message: String) {
        match setting.in_file {
            Some(spanned) => self.error(spanned.span(), format!("{}: {message}", setting.name)),
            None => self.errors.push(ConfigError::Override {
                setting: setting.name,
                message,
            }),
        }
    }

    /// The override if given, else the file's value; `None` when neither is set.
    fn pick<'r>(
        name: &'static str,
        overridden: Option<&str>,
        in_file: Option<&'r Spanned<String>>,
    ) -> Option<Setting<'r>> {
        match (overridden, in_file) {
            (Some(value), _) => Some(Setting {
                name,
                value: value.to_owned(),
                in_file: None,
            }),
            (None, Some(spanned)) => Some(Setting {
                name,
                value: spanned.to_string(),
                in_file: Some(spanned),
            }),
            (None, None) => None,
        }
    }

    /// A file path setting; an empty one is an error.
    fn path(&mut self, setting: Option<&Setting<'_>>) -> Option<PathBuf> {
        let setting = setting?;
        if setting.value.trim().is_empty() {
            self.setting_error(
                setting,
                "empty (expected the path of a PEM file)".to_owned(),
            );
            return None;
        }
        Some(PathBuf::from(&setting.value))
    }

    /// `redis:` with its overrides; `url` is the layered URL.
    pub(super) fn redis(
        &mut self,
        raw: &RawRedis,
        url: String,
        overrides: &SecurityOverrides,
    ) -> RedisConfig {
        let ca = Self::pick(
            "redis.tls.ca_file",
            overrides.redis_tls_ca_file.as_deref(),
            raw.tls.ca_file.as_ref(),
        );
        let cert = Self::pick(
            "redis.tls.cert_file",
            overrides.redis_tls_cert_file.as_deref(),
            raw.tls.cert_file.as_ref(),
        );
        let key = Self::pick(
            "redis.tls.key_file",
            overrides.redis_tls_key_file.as_deref(),
            raw.tls.key_file.as_ref(),
        );
        match (&cert, &key) {
            (Some(set), None) | (None, Some(set)) => self.setting_error(
                set,
                "set alone (expected both redis.tls.cert_file and redis.tls.key_file, or neither)"
                    .to_owned(),
            ),
            _ => {}
        }
        let first_set = [&ca, &cert, &key].into_iter().flatten().next();
        if let Some(set) = first_set {
            if !url.starts_with("rediss://") {
                self.setting_error(
                    set,
                    "tls settings need a rediss:// redis.url (expected rediss://host:port)"
                        .to_owned(),
                );
            }
        }
        let tls = RedisTls {
            ca_file: self.path(ca.as_ref()),
            cert_file: self.path(cert.as_ref()),
            key_file: self.path(key.as_ref()),
        };
        RedisConfig {
            url,
            tls,
            username: overrides.redis_username.clone(),
            password: overrides.redis_password.clone(),
        }
    }

    /// `schema_registry:` with its overrides; `url` is the layered URL.
    pub(super) fn schema_registry(
        &mut self,
        raw: &RawSchemaRegistry,
        url: &str,
        overrides: &SecurityOverrides,
    ) -> SchemaRegistryConfig {
        let (url, from_url) = split_userinfo(url);
        let username = Self::pick(
            "schema_registry.username",
            overrides.schema_registry_username.as_deref(),
            raw.username.as_ref(),
        );
        let password = Self::pick(
            "schema_registry.password",
            overrides
                .schema_registry_password
                .as_ref()
                .map(Secret::expose),
            raw.password.as_ref(),
        );
        let user_info = Self::pick(
            "schema_registry.basic_auth_user_info",
            overrides
                .schema_registry_basic_auth_user_info
                .as_ref()
                .map(Secret::expose),
            raw.basic_auth_user_info.as_ref(),
        );
        let from_user_info = user_info.as_ref().and_then(|setting| {
            let split = setting
                .value
                .split_once(':')
                .map(|(user, password)| (user.to_owned(), Some(password.to_owned())));
            if split.is_none() {
                self.setting_error(
                    setting,
                    "not `user:password` (expected a user and a password separated by `:`)"
                        .to_owned(),
                );
            }
            split
        });
        if let (None, Some(password)) = (&username, &password) {
            self.setting_error(
                password,
                "set without schema_registry.username (expected both)".to_owned(),
            );
        }
        let (username, password) = match username {
            Some(user) => (Some(user.value), password.map(|p| p.value)),
            None => from_user_info
                .or(from_url)
                .map_or((None, None), |(user, password)| (Some(user), password)),
        };
        let ca_file = Self::pick(
            "schema_registry.ca_file",
            overrides.schema_registry_ca_file.as_deref(),
            raw.ca_file.as_ref(),
        );
        SchemaRegistryConfig {
            url,
            username,
            password: password.map(Secret::new),
            ca_file: self.path(ca_file.as_ref()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use crate::load::{load_config_str, ConnectionOverrides, SecurityOverrides};
    use crate::secret::Secret;

    const MAPPING: &str = "mappings:\n  - name: m\n    topic: t\n    key: \"k:{id}\"\n";

    fn load(yaml: &str, overrides: &ConnectionOverrides) -> Result<crate::model::Config, String> {
        load_config_str(&format!("{yaml}{MAPPING}"), "connectors.yaml", overrides)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn redis_tls_files_come_from_the_file_or_the_environment() {
        let yaml = "redis:\n  url: rediss://h:6380\n  tls:\n    ca_file: /f/ca.pem\n    cert_file: /f/c.pem\n    key_file: /f/k.pem\n";
        let config = load(yaml, &ConnectionOverrides::default()).unwrap();
        assert_eq!(config.redis.tls.ca_file, Some(PathBuf::from("/f/ca.pem")));
        assert_eq!(config.redis.tls.key_file, Some(PathBuf::from("/f/k.pem")));
        let overrides = ConnectionOverrides {
            security: SecurityOverrides {
                redis_tls_ca_file: Some("/env/ca.pem".into()),
                redis_username: Some("reader".into()),
                redis_password: Some(Secret::new("pw")),
                ..SecurityOverrides::default()
            },
            ..ConnectionOverrides::default()
        };
        let config = load(yaml, &overrides).unwrap();
        assert_eq!(config.redis.tls.ca_file, Some(PathBuf::from("/env/ca.pem")));
        assert_eq!(config.redis.username.as_deref(), Some("reader"));
        assert_eq!(
            format!("{:?}", config.redis),
            r#"RedisConfig { url: "rediss://h:6380", tls: RedisTls { ca_file: Some("/env/ca.pem"), cert_file: Some("/f/c.pem"), key_file: Some("/f/k.pem") }, username: Some("reader"), password: Some(Secret(***)) }"#
        );
    }

    #[test]
    fn redis_tls_mistakes_point_at_the_setting() {
        let yaml = "redis:\n  url: redis://h:6379\n  tls:\n    cert_file: /f/c.pem\n";
        assert_eq!(
            load(yaml, &ConnectionOverrides::default()).unwrap_err(),
            "connectors.yaml:4:16: redis.tls.cert_file: set alone (expected both redis.tls.cert_file and redis.tls.key_file, or neither)\n\
             connectors.yaml:4:16: redis.tls.cert_file: tls settings need a rediss:// redis.url (expected rediss://host:port)"
        );
        let overrides = ConnectionOverrides {
            security: SecurityOverrides {
                redis_tls_ca_file: Some(String::new()),
                ..SecurityOverrides::default()
            },
            redis_url: Some("rediss://:pw@h".into()),
            ..ConnectionOverrides::default()
        };
        assert_eq!(
            load("", &overrides).unwrap_err(),
            "redis.tls.ca_file (overridden by the environment or a flag): empty (expected the path of a PEM file)"
        );
    }

    #[test]
    fn registry_credentials_leave_the_url_and_explicit_ones_win() {
        let yaml = "schema_registry:\n  url: https://u:url-pw@reg:8081/apis/ccompat/v7\n  ca_file: /f/ca.pem\n";
        let config = load(yaml, &ConnectionOverrides::default()).unwrap();
        let registry = &config.schema_registry;
        assert_eq!(registry.url, "https://reg:8081/apis/ccompat/v7");
        assert_eq!(registry.username.as_deref(), Some("u"));
        assert_eq!(
            registry.password.as_ref().map(Secret::expose),
            Some("url-pw")
        );
        assert_eq!(registry.ca_file, Some(PathBuf::from("/f/ca.pem")));

        let yaml =
            "schema_registry:\n  url: https://u:url-pw@reg\n  basic_auth_user_info: info:info-pw\n";
        let config = load(yaml, &ConnectionOverrides::default()).unwrap();
        assert_eq!(config.schema_registry.username.as_deref(), Some("info"));
        let overrides = ConnectionOverrides {
            security: SecurityOverrides {
                schema_registry_username: Some("env".into()),
                schema_registry_password: Some(Secret::new("env-pw")),
                ..SecurityOverrides::default()
            },
            ..ConnectionOverrides::default()
        };
        let config = load(yaml, &overrides).unwrap();
        assert_eq!(config.schema_registry.username.as_deref(), Some("env"));
        assert_eq!(
            config.schema_registry.password.as_ref().map(Secret::expose),
            Some("env-pw")
        );
        assert_eq!(config.schema_registry.url, "https://reg");
    }

    #[test]
    fn registry_credential_mistakes_are_reported_without_the_secret() {
        let yaml = "schema_registry:\n  password: hunter2\n  basic_auth_user_info: no-colon\n";
        let errors = load(yaml, &ConnectionOverrides::default()).unwrap_err();
        assert_eq!(
            errors,
            "connectors.yaml:2:13: schema_registry.password: set without schema_registry.username (expected both)\n\
             connectors.yaml:3:25: schema_registry.basic_auth_user_info: not `user:password` (expected a user and a password separated by `:`)"
        );
        let overrides = ConnectionOverrides {
            redis_url: Some("http://:hunter2@h".into()),
            ..ConnectionOverrides::default()
        };
        let errors = load("", &overrides).unwrap_err();
        assert!(!errors.contains("hunter2"), "{errors}");
    }
}
