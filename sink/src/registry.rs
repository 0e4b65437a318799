//! Writer schemas by id from a Confluent-compatible schema registry (Confluent, Karapace,
//! Apicurio's `ccompat` API), cached forever: an id names one immutable schema.
//!
//! The HTTP calls go through `schema_registry_converter`'s async API
//! (`get_schema_by_id`, `get_all_subjects`), which hands back the schema's raw JSON text. We
//! keep that text (and its parsed JSON) next to the `apache_avro::Schema`, because apache-avro
//! drops the custom attributes Debezium puts on primitive types (`connect.name`,
//! `connect.parameters.scale`) and [`crate::decode`] needs them to know what a `long` means.
//!
//! Credentials (`schema_registry.{username,password}` and the ways to give them, see
//! [`mapping::SchemaRegistryConfig`]) are sent as HTTP basic auth; the base URL this module
//! keeps and shows never holds them. `schema_registry.ca_file` adds a CA for HTTPS.
//!
//! Concurrent requests for the same uncached id share one fetch (a `tokio::sync::OnceCell`
//! per id). Failures are not cached, so a registry that comes back is picked up.
//!
//! Classification: a response saying the schema does not exist (`error_code` 40403) is
//! [`RegistryError::NotFound`] and a schema that is not a parseable Avro schema is
//! [`RegistryError::BadSchema`]: both are poison for the record that names the id. Everything
//! else (connection refused, timeouts, 5xx, an unexpected 404 from a wrong base path) is
//! [`RegistryError::Unreachable`] and retriable; a wrong base URL is caught at start-up by
//! [`Registry::health_check`] rather than by dead-lettering every record.

use std::collections::HashMap;
use std::error::Error as _;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use mapping::SchemaRegistryConfig;
use schema_registry_converter::async_impl::schema_registry::{
    get_all_subjects, get_schema_by_id, SrSettings,
};
use schema_registry_converter::error::SRCError;
use schema_registry_converter::schema_registry_common::{RawError, SchemaType};
use thiserror::Error;
use tokio::sync::OnceCell;

/// The registry's error code for "schema not found" (`GET /schemas/ids/{id}`).
const SCHEMA_NOT_FOUND: u32 = 40403;

/// Default timeout of one registry request.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a schema could not be had from the registry.
#[derive(Debug, Error)]
pub enum RegistryError {
    /// The registry could not be asked or did not answer properly; retry later.
    #[error("schema registry request {url} failed")]
    Unreachable {
        /// The URL that was requested.
        url: String,
        /// What went wrong.
        #[source]
        source: HttpError,
    },
    /// The registry does not know the id; the record naming it is poison.
    #[error("schema id {id} not found in the registry")]
    NotFound {
        /// The schema id from the record.
        id: u32,
    },
    /// The registry returned something that is not a usable Avro schema; poison.
    #[error("schema id {id} is not a usable avro schema")]
    BadSchema {
        /// The schema id from the record.
        id: u32,
        /// What is wrong with it.
        #[source]
        source: BadSchemaError,
    },
    /// The HTTP client could not be built (bad base URL, TLS set-up).
    #[error("cannot build a schema registry client for {url}")]
    Client {
        /// The configured base URL.
        url: String,
        /// What went wrong.
        #[source]
        source: HttpError,
    },
    /// `schema_registry.ca_file` cannot be read.
    #[error("cannot read schema_registry.ca_file {path}")]
    CaFile {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// `schema_registry.ca_file` holds no usable PEM certificate.
    #[error("schema_registry.ca_file {path} is not a pem certificate bundle")]
    Certificate {
        /// The file.
        path: PathBuf,
        /// What the HTTP client reported.
        #[source]
        source: reqwest::Error,
    },
}

/// A failed registry call as `schema_registry_converter` reports it, displayed as its short
/// description with the underlying cause (HTTP client error, registry error body) as source.
#[derive(Debug)]
pub struct HttpError(pub SRCError);

impl std::fmt::Display for HttpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0.error)
    }
}

impl std::error::Error for HttpError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

impl RegistryError {
    /// Whether retrying the same request later may succeed.
    pub fn is_retriable(&self) -> bool {
        matches!(self, Self::Unreachable { .. })
    }

    /// Whether the registry did not answer (no connection, a timeout) or answered with a
    /// server error (5xx), as opposed to refusing the request (401 or 403 for credentials, a
    /// 404 from a wrong base path): only an outage ends by itself, so only that is waited
    /// for at start (`health.rs`).
    pub fn is_outage(&self) -> bool {
        let Self::Unreachable { source, .. } = self else {
            return false;
        };
        !tls_refused(source) && http_status(&source.0.error).is_none_or(|status| status >= 500)
    }
}

/// Whether TLS refused the connection: a certificate not trusted (no or the wrong
/// `schema_registry.ca_file`) or not valid for the host, a handshake the server rejects.
/// The HTTP client reports these as an I/O error of kind `InvalidData` under its connect
/// error (rustls's error inside); a refused, reset or timed-out connection has other kinds.
/// Waiting does not change a certificate, so this is a refusal, not an outage.
fn tls_refused(error: &(dyn std::error::Error + 'static)) -> bool {
    std::iter::successors(Some(error), |&e| e.source()).any(invalid_data)
}

/// Whether `error` is an I/O error of kind `InvalidData`, or wraps one (an I/O error's
/// `source` skips the error it wraps, so that is looked into too).
fn invalid_data(error: &(dyn std::error::Error + 'static)) -> bool {
    let Some(io) = error.downcast_ref::<std::io::Error>() else {
        return false;
    };
    io.kind() == std::io::ErrorKind::InvalidData
        || io.get_ref().is_some_and(|inner| invalid_data(inner))
}

/// The HTTP status of a failed registry request, from `schema_registry_converter`'s message
/// (`HTTP request to schema registry failed with status 401 Unauthorized`); `None` when the
/// request got no answer.
fn http_status(message: &str) -> Option<u16> {
    let (_, status) = message.split_once("failed with status ")?;
    status.split_whitespace().next()?.parse().ok()
}

/// What is wrong with a schema the registry returned.
#[derive(Debug, Error)]
pub enum BadSchemaError {
    /// The registry says the schema is not Avro (Protobuf, JSON Schema).
    #[error("schema type is {0}, not AVRO")]
    NotAvro(String),
    /// The schema text is not JSON.
    #[error("schema text is not json")]
    Json(#[source] serde_json::Error),
    /// apache-avro rejected the schema.
    #[error("apache-avro rejected the schema")]
    Avro(#[source] apache_avro::Error),
}

/// A writer schema as registered: the raw text, its JSON (with every custom attribute) and
/// the schema apache-avro decodes with.
#[derive(Debug)]
pub struct WriterSchema {
    /// The registry's id for it.
    pub id: u32,
    /// The schema text exactly as the registry returned it.
    pub text: String,
    /// The parsed JSON of `text`, custom attributes included.
    pub json: serde_json::Value,
    /// The schema for `apache_avro::from_avro_datum`.
    pub avro: apache_avro::Schema,
    /// A reader of bodies written with `avro`, built once: building one resolves every
    /// named type of the schema, which per record cost a few percent of the sink's CPU.
    pub reader: DatumReader,
}

/// [`GenericDatumReader`](apache_avro::reader::datum::GenericDatumReader) of one writer
/// schema. It borrows the schema, so the schema it reads with is leaked: one per schema id
/// the process meets, which the registry cache keeps for the whole run anyway.
pub struct DatumReader(apache_avro::reader::datum::GenericDatumReader<'static>);

impl DatumReader {
    fn new(schema: &apache_avro::Schema) -> Result<Self, apache_avro::Error> {
        let schema: &'static apache_avro::Schema = Box::leak(Box::new(schema.clone()));
        apache_avro::reader::datum::GenericDatumReader::builder(schema)
            .build()
            .map(DatumReader)
    }

    /// Reads one value from `body`, advancing it past the value.
    pub fn read(&self, body: &mut &[u8]) -> Result<apache_avro::types::Value, apache_avro::Error> {
        self.0.read_value(body)
    }
}

impl std::fmt::Debug for DatumReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DatumReader")
    }
}

impl WriterSchema {
    /// Parses a schema text as returned for `id`.
    pub fn parse(id: u32, text: String) -> Result<Self, RegistryError> {
        let bad = |source| RegistryError::BadSchema { id, source };
        let json: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| bad(BadSchemaError::Json(e)))?;
        let avro = apache_avro::Schema::parse(&json).map_err(|e| bad(BadSchemaError::Avro(e)))?;
        let reader = DatumReader::new(&avro).map_err(|e| bad(BadSchemaError::Avro(e)))?;
        Ok(Self {
            id,
            text,
            json,
            avro,
            reader,
        })
    }
}

/// A client for one registry, with a per-id cache of writer schemas.
pub struct Registry {
    base_url: String,
    settings: SrSettings,
    cache: Mutex<HashMap<u32, Arc<OnceCell<Arc<WriterSchema>>>>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

impl Registry {
    /// A client for the registry `config` names (a [`SchemaRegistryConfig`] or a bare URL,
    /// which may carry a path, as Apicurio's `http://host:8080/apis/ccompat/v7`), with its
    /// credentials and CA, and [`DEFAULT_TIMEOUT`] per request.
    pub fn new(config: impl Into<SchemaRegistryConfig>) -> Result<Self, RegistryError> {
        Self::with_timeout(config, DEFAULT_TIMEOUT)
    }

    /// Like [`Registry::new`] with another per-request timeout.
    pub fn with_timeout(
        config: impl Into<SchemaRegistryConfig>,
        timeout: Duration,
    ) -> Result<Self, RegistryError> {
        let config = config.into();
        let base_url = config.url.trim_end_matches('/').to_owned();
        let mut builder = SrSettings::new_builder(base_url.clone());
        builder.set_timeout(timeout);
        if let Some(user) = &config.username {
            builder.set_basic_authorization(user, config.password.as_ref().map(|p| p.expose()));
        }
        let mut http = reqwest::Client::builder();
        if let Some(path) = &config.ca_file {
            let pem = std::fs::read(path).map_err(|source| RegistryError::CaFile {
                path: path.clone(),
                source,
            })?;
            let certificates = reqwest::Certificate::from_pem_bundle(&pem).map_err(|source| {
                RegistryError::Certificate {
                    path: path.clone(),
                    source,
                }
            })?;
            for certificate in certificates {
                http = http.add_root_certificate(certificate);
            }
        }
        let settings = builder
            .build_with(http)
            .map_err(|e| RegistryError::Client {
                url: base_url.clone(),
                source: HttpError(e),
            })?;
        Ok(Self {
            base_url,
            settings,
            cache: Mutex::new(HashMap::new()),
        })
    }

    /// The base URL, without a trailing slash.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// The writer schema with this id: from the cache, or fetched once
    /// (`GET {base}/schemas/ids/{id}`) and cached for good.
    pub async fn schema(&self, id: u32) -> Result<Arc<WriterSchema>, RegistryError> {
        let cell = {
            let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
            Arc::clone(cache.entry(id).or_default())
        };
        let result = cell.get_or_try_init(|| self.fetch(id)).await.cloned();
        if result.is_err() {
            // Do not keep an entry per failed id (garbage frames name random ids).
            let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
            if cache.get(&id).is_some_and(|c| c.get().is_none()) {
                cache.remove(&id);
            }
        }
        result
    }

    /// Start-up check: `GET {base}/subjects` must answer.
    pub async fn health_check(&self) -> Result<(), RegistryError> {
        get_all_subjects(&self.settings)
            .await
            .map(drop)
            .map_err(|e| RegistryError::Unreachable {
                url: format!("{}/subjects", self.base_url),
                source: HttpError(e),
            })
    }

    async fn fetch(&self, id: u32) -> Result<Arc<WriterSchema>, RegistryError> {
        let registered = get_schema_by_id(id, &self.settings)
            .await
            .map_err(|source| classify(&self.base_url, id, source))?;
        if registered.schema_type != SchemaType::Avro {
            return Err(RegistryError::BadSchema {
                id,
                source: BadSchemaError::NotAvro(format!("{:?}", registered.schema_type)),
            });
        }
        tracing::debug!(schema_id = id, "Fetched writer schema.");
        WriterSchema::parse(id, registered.schema).map(Arc::new)
    }
}

/// Sorts a failed `GET /schemas/ids/{id}` into not found (poison) or unreachable (retriable).
fn classify(base_url: &str, id: u32, source: SRCError) -> RegistryError {
    let code = source
        .source()
        .and_then(|cause| cause.downcast_ref::<RawError>())
        .map(|raw| raw.error_code);
    if !source.retriable && code == Some(SCHEMA_NOT_FOUND) {
        RegistryError::NotFound { id }
    } else {
        RegistryError::Unreachable {
            url: format!("{base_url}/schemas/ids/{id}"),
            source: HttpError(source),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trailing_slash_is_trimmed_and_path_kept() {
        let registry = Registry::new("http://127.0.0.1:1/apis/ccompat/v7/").unwrap();
        assert_eq!(registry.base_url(), "http://127.0.0.1:1/apis/ccompat/v7");
    }

    #[test]
    fn only_no_answer_and_server_errors_are_outages() {
        let status = |text: &str| RegistryError::Unreachable {
            url: "http://r/subjects".into(),
            source: HttpError(SRCError::new(text, None, true)),
        };
        for (text, outage) in [
            (
                "HTTP request to schema registry failed with status 401 Unauthorized",
                false,
            ),
            (
                "HTTP request to schema registry failed with status 403 Forbidden",
                false,
            ),
            (
                "HTTP request to schema registry failed with status 404 Not Found",
                false,
            ),
            (
                "HTTP request to schema registry failed with status 503 Service Unavailable",
                true,
            ),
            (
                "error sending request for url (http://127.0.0.1:1/subjects)",
                true,
            ),
        ] {
            assert_eq!(status(text).is_outage(), outage, "{text}");
        }
        assert!(!RegistryError::NotFound { id: 1 }.is_outage());
    }

    #[test]
    fn not_found_is_poison_and_other_failures_retriable() {
        let not_found = SRCError::non_retryable_with_cause(
            serde_json::from_str::<RawError>(
                r#"{"error_code":40403,"message":"Schema not found"}"#,
            )
            .unwrap(),
            "HTTP request to schema registry failed with status 404 Not Found",
        );
        let err = classify("http://r", 7, not_found);
        assert!(matches!(err, RegistryError::NotFound { id: 7 }), "{err:?}");
        assert!(!err.is_retriable());

        let server = SRCError::non_retryable_with_cause(
            serde_json::from_str::<RawError>(r#"{"error_code":50001,"message":"boom"}"#).unwrap(),
            "HTTP request to schema registry failed with status 500",
        );
        let err = classify("http://r", 7, server);
        assert!(err.is_retriable());
        assert_eq!(
            err.to_string(),
            "schema registry request http://r/schemas/ids/7 failed"
        );
    }

    #[test]
    fn bad_schema_text_is_poison() {
        let err = WriterSchema::parse(3, "{not json".into()).unwrap_err();
        assert!(matches!(
            err,
            RegistryError::BadSchema {
                id: 3,
                source: BadSchemaError::Json(_)
            }
        ));
        let err = WriterSchema::parse(3, r#"{"type":"nope"}"#.into()).unwrap_err();
        assert!(matches!(
            err,
            RegistryError::BadSchema {
                id: 3,
                source: BadSchemaError::Avro(_)
            }
        ));
        assert!(!err.is_retriable());
    }

    #[tokio::test]
    async fn refused_connection_is_retriable_and_names_the_url() {
        // Port 1 on loopback: nothing listens there, the connection is refused at once.
        let registry = Registry::new("http://127.0.0.1:1/base").unwrap();
        let err = registry.schema(5).await.unwrap_err();
        assert!(err.is_retriable(), "{err:?}");
        assert_eq!(
            err.to_string(),
            "schema registry request http://127.0.0.1:1/base/schemas/ids/5 failed"
        );
        let mut chain = Vec::new();
        let mut cause: Option<&dyn std::error::Error> = Some(&err);
        while let Some(c) = cause {
            chain.push(c.to_string());
            cause = c.source();
        }
        assert_eq!(chain[1], "http call to schema registry failed", "{chain:?}");
        assert!(
            chain.len() > 2,
            "the HTTP client's error is kept: {chain:?}"
        );
        assert!(
            registry.cache.lock().unwrap().is_empty(),
            "failed ids are not kept"
        );
        let err = registry.health_check().await.unwrap_err();
        assert_eq!(
            err.to_string(),
            "schema registry request http://127.0.0.1:1/base/subjects failed"
        );
    }
}
