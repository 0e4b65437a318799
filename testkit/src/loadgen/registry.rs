//! Schema registration in a Confluent-compatible registry, so generated records carry ids
//! the sink can resolve.

use schema_registry_converter::async_impl::schema_registry::{post_schema, SrSettings};
use schema_registry_converter::schema_registry_common::{SchemaType, SuppliedSchema};

use super::LoadgenError;

/// Registers `schema` (Avro JSON text) under `subject`; returns its id.
pub async fn register(
    registry_url: &str,
    subject: &str,
    schema: &str,
) -> Result<u32, LoadgenError> {
    let settings = SrSettings::new(registry_url.trim_end_matches('/').to_owned());
    let supplied = SuppliedSchema::new(None, SchemaType::Avro, schema.to_owned());
    post_schema(&settings, subject.to_owned(), supplied)
        .await
        .map(|registered| registered.id)
        .map_err(|source| LoadgenError::Register {
            subject: subject.to_owned(),
            url: registry_url.to_owned(),
            source,
        })
}
