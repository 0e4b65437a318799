//! Phase 2 of loading: [`RawConfig`] -> [`Config`], collecting every error, each pointing
//! at the offending YAML node (the rules are listed in [`super`]'s documentation).

use std::collections::HashMap;

use marked_yaml::{Marker, Node, Span, Spanned};

use super::{at, node_mark, ConfigError, ConfigErrors, ConnectionOverrides, Connections, Step};
use crate::declared::{DeclaredType, DeclaredTypes};
use crate::diagnostics::redact_url;
use crate::model::{
    BatchConfig, Config, FieldSelection, FreshnessConfig, Index, KafkaConfig, LimitParam, Lookup,
    LookupParam, Mapping, ParamType, RedisMemory, Relation, SelectedField, Source,
};
use crate::raw::{RawConfig, RawField, RawFields, RawLookup, RawMapping};
use crate::template::{KeyTemplate, TemplatePart};

mod aggregate;
mod include;
mod relation_filters;
mod search;
mod security;

fn is_name(s: &str, extra: &[u8]) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || extra.contains(&b))
}

fn is_topic_name(s: &str) -> bool {
    is_name(s, b".-") && s.len() <= 249 && s != "." && s != ".."
}

fn pos(span: &Span) -> String {
    span.start()
        .map_or_else(|| "?".to_owned(), ToString::to_string)
}

fn list(items: impl IntoIterator<Item = impl AsRef<str>>) -> String {
    let v: Vec<String> = items
        .into_iter()
        .map(|s| format!("`{}`", s.as_ref()))
        .collect();
    if v.is_empty() {
        "none defined".to_owned()
    } else {
        v.join(", ")
    }
}

/// A key template seen so far, for the collision check.
struct SeenTemplate {
    template: KeyTemplate,
    span: Span,
    what: String,
}

/// Phase 2: collects every error while building the model.
pub(super) struct Validator<'a> {
    file: &'a str,
    root: &'a Node,
    errors: Vec<ConfigError>,
    templates: Vec<SeenTemplate>,
}

impl<'a> Validator<'a> {
    pub(super) fn new(file: &'a str, root: &'a Node) -> Self {
        Validator {
            file,
            root,
            errors: Vec::new(),
            templates: Vec::new(),
        }
    }

    fn error(&mut self, span: &Span, message: String) {
        self.errors.push(at(self.file, span.start(), message));
    }

    fn error_at(&mut self, mark: Option<Marker>, message: String) {
        self.errors.push(at(self.file, mark.as_ref(), message));
    }

    pub(super) fn validate(
        mut self,
        raw: &RawConfig,
        connections: Connections,
        overrides: &ConnectionOverrides,
    ) -> Result<Config, ConfigErrors> {
        self.connection(
            "kafka.bootstrap_servers",
            &raw.kafka.bootstrap_servers,
            &connections.bootstrap_servers,
            overrides.bootstrap_servers.is_some(),
            &[],
        );
        self.connection(
            "kafka.group_id",
            &raw.kafka.group_id,
            &connections.group_id,
            overrides.group_id.is_some(),
            &[],
        );
        self.connection(
            "schema_registry.url",
            &raw.schema_registry.url,
            &connections.schema_registry_url,
            overrides.schema_registry_url.is_some(),
            &["http://", "https://"],
        );
        self.connection(
            "redis.url",
            &raw.redis.url,
            &connections.redis_url,
            overrides.redis_url.is_some(),
            &["redis://", "rediss://", "unix://", "redis+unix://"],
        );
        let dlq = &raw.kafka.dead_letter_topic;
        if !is_topic_name(dlq) {
            self.error(
                dlq.span(),
                format!(
                    "invalid topic name `{}` (expected up to 249 letters, digits, `.`, `_`, `-`)",
                    **dlq
                ),
            );
        }
        if *raw.freshness.stale_after_ms == 0 {
            self.error(
                raw.freshness.stale_after_ms.span(),
                "stale_after_ms is 0 (expected a positive number of milliseconds)".to_owned(),
            );
        }
        let batch = self.batch(raw);
        let redis_memory = self.redis_memory(raw);
        if raw.mappings.is_empty() {
            let mark = node_mark(self.root, &[Step::Key("mappings")]);
            self.error_at(mark, "no mappings (expected at least one entry)".to_owned());
        }

        let mut names: HashMap<&str, &Span> = HashMap::new();
        let mut topics: HashMap<&str, &Span> = HashMap::new();
        let mut tools: HashMap<&str, &Span> = HashMap::new();
        let mut mappings = Vec::new();
        for (i, m) in raw.mappings.iter().enumerate() {
            if let Some(first) = names.insert(&m.name, m.name.span()) {
                self.error(
                    m.name.span(),
                    format!(
                        "duplicate mapping name `{}` (first used at {}; expected unique names)",
                        *m.name,
                        pos(first)
                    ),
                );
            }
            if let Some(first) = topics.insert(&m.topic, m.topic.span()) {
                self.error(
                    m.topic.span(),
                    format!(
                        "topic `{}` is already mapped at {} (expected one mapping per topic)",
                        *m.topic,
                        pos(first)
                    ),
                );
            }
            if *m.topic == **dlq {
                self.error(
                    m.topic.span(),
                    format!(
                        "topic `{}` is the dead-letter topic (expected a table's change topic)",
                        *m.topic
                    ),
                );
            }
            for l in &m.lookups {
                if let Some(first) = tools.insert(&l.tool, l.tool.span()) {
                    self.error(
                        l.tool.span(),
                        format!("duplicate tool name `{}` (first defined at {}; expected unique tool names)", *l.tool, pos(first)),
                    );
                }
            }
            mappings.push(self.mapping(i, m));
        }
        self.includes(raw, &mut mappings);
        let sources = self.sources(raw, &topics);

        let schema_registry = self.schema_registry(
            &raw.schema_registry,
            &connections.schema_registry_url,
            &overrides.security,
        );
        let redis = self.redis(&raw.redis, connections.redis_url, &overrides.security);
        if !self.errors.is_empty() {
            self.errors.sort_by_key(ConfigError::position);
            return Err(ConfigErrors {
                errors: self.errors,
            });
        }
        Ok(Config {
            kafka: KafkaConfig {
                bootstrap_servers: connections.bootstrap_servers,
                group_id: connections.group_id,
                dead_letter_topic: dlq.to_string(),
                properties: raw.kafka.properties.clone(),
            },
            schema_registry,
            redis,
            redis_memory,
            freshness: FreshnessConfig {
                stale_after_ms: *raw.freshness.stale_after_ms,
            },
            batch,
            sources,
            mappings: mappings.into_iter().flatten().collect(),
        })
    }

    /// `batch:`: `max_bytes` is a positive byte size (a number of bytes, or with a unit),
    /// `max_records` at least 1; `linger_ms` any number of milliseconds.
    fn batch(&mut self, raw: &RawConfig) -> BatchConfig {
        let mut batch = BatchConfig {
            linger_ms: raw.batch.linger_ms.as_ref().map(|ms| **ms),
            ..BatchConfig::default()
        };
        if let Some(records) = &raw.batch.max_records {
            match usize::try_from(**records) {
                Ok(n) if n > 0 => batch.max_records = Some(n),
                _ => self.error(
                    records.span(),
                    format!(
                        "max_records is {} (expected at least 1 record per batch)",
                        **records
                    ),
                ),
            }
        }
        let Some(max_bytes) = &raw.batch.max_bytes else {
            return batch;
        };
        match max_bytes.trim().parse::<bytesize::ByteSize>() {
            Ok(size) if size.as_u64() > 0 => batch.max_bytes = size.as_u64(),
            Ok(_) => self.error(
                max_bytes.span(),
                "max_bytes is 0 (expected a positive size such as 16MiB)".to_owned(),
            ),
            Err(_) => self.error(
                max_bytes.span(),
                format!(
                    "max_bytes `{}` is not a size (expected bytes such as 16777216 or 16MiB)",
                    **max_bytes
                ),
            ),
        }
        batch
    }

    /// `redis.pause_at_memory_share`: a share of `maxmemory` above 0 and at most 1.
    fn redis_memory(&mut self, raw: &RawConfig) -> RedisMemory {
        let Some(share) = &raw.redis.pause_at_memory_share else {
            return RedisMemory::default();
        };
        if !RedisMemory::is_valid_share(**share) {
            self.error(
                share.span(),
                format!(
                    "pause_at_memory_share is {} (expected a share of maxmemory above 0 and at most 1, e.g. 0.95)",
                    **share
                ),
            );
        }
        RedisMemory {
            pause_at_share: **share,
        }
    }

    /// `sources:` and each mapping's `source:`: unique names valid in `sink:` keys, heartbeat
    /// topics that are valid, distinct and neither mapped nor the dead-letter topic; a
    /// mapping names a declared source, or leaves it out when there is exactly one.
    fn sources(&mut self, raw: &RawConfig, mapped: &HashMap<&str, &Span>) -> Vec<Source> {
        let mut sources: Vec<Source> = Vec::new();
        let mut names: HashMap<&str, &Span> = HashMap::new();
        let mut topics: HashMap<&str, &Span> = HashMap::new();
        for s in &raw.sources {
            self.name(&s.name, "source");
            if let Some(first) = names.insert(&s.name, s.name.span()) {
                self.error(
                    s.name.span(),
                    format!(
                        "duplicate source name `{}` (first used at {}; expected unique names)",
                        *s.name,
                        pos(first)
                    ),
                );
            }
            let topic = &s.heartbeat_topic;
            if !is_topic_name(topic) {
                self.error(
                    topic.span(),
                    format!(
                        "invalid topic name `{}` (expected up to 249 letters, digits, `.`, `_`, `-`)",
                        **topic
                    ),
                );
            } else if let Some(at) = mapped.get(topic.as_str()) {
                self.error(
                    topic.span(),
                    format!(
                        "heartbeat topic `{}` is mapped at {} (expected a topic that carries only heartbeats)",
                        **topic,
                        pos(at)
                    ),
                );
            } else if **topic == *raw.kafka.dead_letter_topic {
                self.error(
                    topic.span(),
                    format!("heartbeat topic `{}` is the dead-letter topic", **topic),
                );
            } else if let Some(first) = topics.insert(topic, topic.span()) {
                self.error(
                    topic.span(),
                    format!(
                        "heartbeat topic `{}` is already used at {} (expected one per source)",
                        **topic,
                        pos(first)
                    ),
                );
            }
            let stale_after_ms = match &s.stale_after_ms {
                Some(ms) if **ms == 0 => {
                    self.error(
                        ms.span(),
                        "stale_after_ms is 0 (expected a positive number of milliseconds)"
                            .to_owned(),
                    );
                    0
                }
                Some(ms) => **ms,
                None => *raw.freshness.stale_after_ms,
            };
            sources.push(Source {
                name: s.name.to_string(),
                heartbeat_topic: topic.to_string(),
                stale_after_ms,
                mappings: Vec::new(),
            });
        }
        for m in &raw.mappings {
            let index = match &m.source {
                Some(name) => {
                    let found = sources.iter().position(|s| s.name == **name);
                    if found.is_none() {
                        self.error(
                            name.span(),
                            format!(
                                "unknown source `{}` (expected one of {})",
                                **name,
                                list(sources.iter().map(|s| s.name.as_str()))
                            ),
                        );
                    }
                    found
                }
                None if sources.len() == 1 => Some(0),
                None if sources.is_empty() => None,
                None => {
                    self.error(
                        m.name.span(),
                        format!(
                            "mapping `{}` names no source (expected `source:` with one of {})",
                            *m.name,
                            list(sources.iter().map(|s| s.name.as_str()))
                        ),
                    );
                    None
                }
            };
            if let Some(i) = index {
                sources[i].mappings.push(m.name.to_string());
            }
        }
        sources
    }

    /// Checks a layered connection setting; `schemes` lists accepted URL prefixes.
    fn connection(
        &mut self,
        setting: &'static str,
        in_file: &Spanned<String>,
        value: &str,
        overridden: bool,
        schemes: &[&str],
    ) {
        let problem = if value.trim().is_empty() {
            Some("empty (expected a value)".to_owned())
        } else if !schemes.is_empty() && !schemes.iter().any(|s| value.starts_with(s)) {
            Some(format!(
                "`{}` is not a supported url (expected one starting with {})",
                redact_url(value),
                schemes.join(" or ")
            ))
        } else {
            None
        };
        let Some(message) = problem else { return };
        if overridden {
            self.errors.push(ConfigError::Override { setting, message });
        } else {
            self.error(in_file.span(), format!("{setting}: {message}"));
        }
    }

    /// Checks a name used inside `sink:` keys.
    fn name(&mut self, name: &Spanned<String>, what: &str) {
        if !is_name(name, b"-") {
            self.error(
                name.span(),
                format!(
                    "invalid {what} name `{}` (expected letters, digits, `_` or `-`)",
                    **name
                ),
            );
        }
    }

    /// Checks an index or relation name, and that `seen` (the mapping's names of that kind so
    /// far) does not hold it yet.
    fn name_unique_in_mapping<'m>(
        &mut self,
        name: &'m Spanned<String>,
        what: &str,
        seen: &mut HashMap<&'m str, &'m Span>,
    ) {
        self.name(name, what);
        if let Some(first) = seen.insert(name, name.span()) {
            self.error(
                name.span(),
                format!(
                    "duplicate {what} name `{}` (first used at {}; expected unique names within the mapping)",
                    **name,
                    pos(first)
                ),
            );
        }
    }

    fn mapping(&mut self, i: usize, m: &RawMapping) -> Option<Mapping> {
        let before = self.errors.len();
        self.name(&m.name, "mapping");
        if !is_topic_name(&m.topic) {
            self.error(
                m.topic.span(),
                format!(
                    "invalid topic name `{}` (expected up to 249 letters, digits, `.`, `_`, `-`)",
                    *m.topic
                ),
            );
        }
        let fields = self.fields(i, m);
        let selected: Option<Vec<&str>> = match &fields {
            FieldSelection::All => None,
            // An empty list is reported by itself; checking templates against it adds noise.
            FieldSelection::List(list) if list.is_empty() => None,
            FieldSelection::List(list) => Some(list.iter().map(|f| f.to.as_str()).collect()),
        };
        let selected = selected.as_deref();
        let key = self.template(&m.key, &format!("mapping `{}` row key", *m.name), selected);
        let types = self.types(m);
        if let Some(ttl) = &m.ttl_seconds {
            if **ttl == 0 {
                self.error(
                    ttl.span(),
                    "ttl_seconds is 0 (expected a positive number of seconds, or no ttl_seconds)"
                        .to_owned(),
                );
            }
        }

        let mut indexes = Vec::new();
        let mut index_names: HashMap<&str, &Span> = HashMap::new();
        for ix in &m.indexes {
            self.name_unique_in_mapping(&ix.name, "index", &mut index_names);
            let what = format!("mapping `{}` index `{}` key", *m.name, *ix.name);
            if let Some(key) = self.template(&ix.key, &what, selected) {
                indexes.push(Index {
                    name: ix.name.to_string(),
                    key,
                });
            }
        }

        let mut relations = Vec::new();
        let mut relation_names: HashMap<&str, &Span> = HashMap::new();
        for r in &m.relations {
            self.name_unique_in_mapping(&r.name, "relation", &mut relation_names);
            if let Some(sel) = selected {
                if !sel.contains(&r.order_by.as_str()) {
                    self.error(
                        r.order_by.span(),
                        format!("order_by names field `{}`, which `fields` does not select (expected one of {})", *r.order_by, list(sel)),
                    );
                }
            }
            let what = format!("mapping `{}` relation `{}` key", *m.name, *r.name);
            if let Some(key) = self.template(&r.key, &what, selected) {
                relations.push(Relation {
                    name: r.name.to_string(),
                    key,
                    order_by: r.order_by.to_string(),
                });
            }
        }

        let aggregates = self.aggregates(m, selected);
        let search = self.searches(m, selected);

        let mut lookups = Vec::new();
        for (j, l) in m.lookups.iter().enumerate() {
            self.lookup_aggregate(m, l, &aggregates);
            let relation =
                (l.relation.as_ref()).and_then(|r| relations.iter().find(|x| x.name == **r));
            let (filters, range) = self.relation_filters(l, relation, selected);
            if let Some(lookup) = self.lookup(i, j, m, l, key.as_ref(), &relations) {
                lookups.push(Lookup {
                    filters,
                    range,
                    ..lookup
                });
            }
        }
        relations.extend(relation_filters::derived_relations(&relations, &lookups));

        if self.errors.len() > before {
            return None;
        }
        Some(Mapping {
            name: m.name.to_string(),
            topic: m.topic.to_string(),
            key: key?,
            fields,
            types,
            ttl_seconds: m.ttl_seconds.as_ref().map(|t| **t),
            indexes,
            relations,
            lookups,
            aggregates,
            search,
        })
    }

    /// `types:`: every type name must parse; column names are those of the table.
    fn types(&mut self, m: &RawMapping) -> DeclaredTypes {
        let mut types = DeclaredTypes::new();
        for (column, name) in &m.types {
            if column.is_empty() {
                self.error(
                    name.span(),
                    "empty column name in `types` (expected a column of the table)".to_owned(),
                );
            }
            match name.parse::<DeclaredType>() {
                Ok(ty) => {
                    types.insert(column.clone(), ty);
                }
                Err(e) => self.error(name.span(), format!("column `{column}`: {e}")),
            }
        }
        types
    }

    fn fields(&mut self, i: usize, m: &RawMapping) -> FieldSelection {
        let RawFields::List(items) = &m.fields else {
            return FieldSelection::All;
        };
        if items.is_empty() {
            let mark = node_mark(
                self.root,
                &[Step::Key("mappings"), Step::Index(i), Step::Key("fields")],
            );
            self.error_at(
                mark,
                "`fields` is an empty list (expected `all` or at least one column)".to_owned(),
            );
        }
        let mut froms: HashMap<String, Span> = HashMap::new();
        let mut tos: HashMap<String, Span> = HashMap::new();
        let mut list = Vec::new();
        for item in items {
            let (from, to, from_span, to_span) = match &**item {
                RawField::Name(name) => (name.clone(), name.clone(), *item.span(), *item.span()),
                RawField::Renamed(r) => {
                    if !is_name(&r.to, b"") {
                        self.error(
                            r.to.span(),
                            format!(
                                "invalid stored field name `{}` (expected letters, digits and `_`)",
                                *r.to
                            ),
                        );
                    }
                    (
                        r.from.to_string(),
                        r.to.to_string(),
                        *r.from.span(),
                        *r.to.span(),
                    )
                }
            };
            if from.is_empty() {
                self.error(
                    &from_span,
                    "empty column name (expected a column of the table)".to_owned(),
                );
            }
            if let Some(first) = froms.get(&from) {
                let message = format!(
                    "column `{from}` is selected twice (first at {}; expected each column once)",
                    pos(first)
                );
                self.error(&from_span, message);
            } else {
                froms.insert(from.clone(), from_span);
            }
            if let Some(first) = tos.get(&to) {
                let message = format!(
                    "field name `{to}` is stored twice (first at {}; expected unique stored names)",
                    pos(first)
                );
                self.error(&to_span, message);
            } else {
                tos.insert(to.clone(), to_span);
            }
            list.push(SelectedField { from, to });
        }
        FieldSelection::List(list)
    }

    /// Parses and checks one key template; `selected` is the stored field list, if any.
    /// Returns the template whenever it parses, so that checks depending on it still run.
    fn template(
        &mut self,
        source: &Spanned<String>,
        what: &str,
        selected: Option<&[&str]>,
    ) -> Option<KeyTemplate> {
        let span = source.span();
        let template = match KeyTemplate::parse(source) {
            Ok(t) => t,
            Err(e) => {
                self.error(span, format!("invalid {what} `{}`: {e}", **source));
                return None;
            }
        };
        if matches!(template.parts.first(), Some(TemplatePart::Field(_))) {
            self.error(
                span,
                format!("{what} `{template}` starts with a placeholder (expected a literal prefix such as `customer:`)"),
            );
        } else if template
            .literal_prefix()
            .starts_with(crate::layout::RESERVED_PREFIX)
        {
            self.error(
                span,
                format!(
                    "{what} `{template}` uses the reserved `{}` prefix (expected another prefix)",
                    crate::layout::RESERVED_PREFIX
                ),
            );
        }
        if let Some(sel) = selected {
            let mut reported = Vec::new();
            for f in template.fields() {
                if !sel.contains(&f) && !reported.contains(&f) {
                    reported.push(f);
                    self.error(
                        span,
                        format!("{what} `{template}` names field `{f}`, which `fields` does not select (expected one of {})", list(sel)),
                    );
                }
            }
        }
        let clash = self
            .templates
            .iter()
            .find(|seen| seen.template.may_collide(&template))
            .map(|seen| format!("{what} `{template}` can produce the same keys as {} `{}` at {} (expected patterns that differ in a literal `:`-separated segment)", seen.what, seen.template, pos(&seen.span)));
        if let Some(message) = clash {
            self.error(span, message);
        }
        self.templates.push(SeenTemplate {
            template: template.clone(),
            span: *span,
            what: what.to_owned(),
        });
        Some(template)
    }

    fn lookup(
        &mut self,
        i: usize,
        j: usize,
        m: &RawMapping,
        l: &RawLookup,
        row_key: Option<&KeyTemplate>,
        relations: &[Relation],
    ) -> Option<Lookup> {
        let before = self.errors.len();
        // An aggregate lookup's parameters fill the aggregate key (`lookup_aggregate`).
        let row_key = row_key.filter(|_| l.aggregate.is_none());
        self.search_lookup(i, j, m, l);
        if !(is_name(&l.tool, b"-") && l.tool.len() <= 64) {
            self.error(
                l.tool.span(),
                format!(
                    "invalid tool name `{}` (expected 1-64 letters, digits, `_` or `-`)",
                    *l.tool
                ),
            );
        }
        if l.description.trim().is_empty() {
            self.error(
                l.description.span(),
                "empty tool description (expected a sentence for the model)".to_owned(),
            );
        }
        // The relation's template, when the relation exists (`Err` if the name is unknown).
        let relation: Option<Result<&Relation, ()>> = l.relation.as_ref().map(|r| {
            let found = relations.iter().find(|x| x.name == **r);
            if found.is_none() && !m.relations.iter().any(|x| *x.name == **r) {
                self.error(
                    r.span(),
                    format!(
                        "unknown relation `{}` (expected one of {})",
                        **r,
                        list(m.relations.iter().map(|x| x.name.as_str()))
                    ),
                );
            }
            found.ok_or(())
        });
        if l.by.is_empty() {
            let mark = node_mark(
                self.root,
                &[
                    Step::Key("mappings"),
                    Step::Index(i),
                    Step::Key("lookups"),
                    Step::Index(j),
                    Step::Key("by"),
                ],
            );
            self.error_at(
                mark,
                "`by` is empty (expected at least one parameter)".to_owned(),
            );
        }
        let mut params: HashMap<&str, &Span> = HashMap::new();
        let mut by = Vec::new();
        for p in &l.by {
            if !(is_name(&p.param, b"-") && p.param.len() <= 64) {
                self.error(
                    p.param.span(),
                    format!(
                        "invalid parameter name `{}` (expected 1-64 letters, digits, `_` or `-`)",
                        *p.param
                    ),
                );
            }
            if let Some(first) = params.insert(&p.param, p.param.span()) {
                self.error(
                    p.param.span(),
                    format!(
                        "duplicate parameter `{}` (first at {}; expected unique parameter names)",
                        *p.param,
                        pos(first)
                    ),
                );
            }
            let r#type = match p.r#type.as_str() {
                "integer" => Some(ParamType::Integer),
                "string" => Some(ParamType::String),
                other => {
                    self.error(
                        p.r#type.span(),
                        format!(
                            "unknown parameter type `{other}` (expected `integer` or `string`)"
                        ),
                    );
                    None
                }
            };
            if p.description.trim().is_empty() {
                self.error(
                    p.description.span(),
                    "empty parameter description (expected a sentence for the model)".to_owned(),
                );
            }
            match (&p.index, &relation) {
                // The search rules check a search lookup's parameter.
                _ if l.search.is_some() => {}
                (Some(ix), Some(_)) => self.error(
                    ix.span(),
                    format!("parameter `{}` has an `index` in a relation lookup (expected a parameter that fills the relation key)", *p.param),
                ),
                (Some(ix), None) => {
                    if !m.indexes.iter().any(|x| *x.name == **ix) {
                        self.error(
                            ix.span(),
                            format!("unknown index `{}` (expected one of {})", **ix, list(m.indexes.iter().map(|x| x.name.as_str()))),
                        );
                    }
                }
                (None, Some(Ok(rel))) => {
                    if rel.key.single_field().is_none() {
                        self.error(
                            p.param.span(),
                            format!("parameter `{}` fills relation key `{}`, which does not have exactly one field (expected a relation key with one placeholder)", *p.param, rel.key),
                        );
                    }
                }
                (None, None) => {
                    if let Some(key) = row_key {
                        if key.single_field().is_none() {
                            self.error(
                                p.param.span(),
                                format!("parameter `{}` has no `index`, so it fills row key `{key}`, which does not have exactly one field (expected an `index`, or a row key with one placeholder)", *p.param),
                            );
                        }
                    }
                }
                // Unknown relation: already reported.
                (None, Some(Err(()))) => {}
            }
            by.push(LookupParam {
                param: p.param.to_string(),
                r#type: r#type.unwrap_or(ParamType::String),
                description: p.description.to_string(),
                index: p.index.as_ref().map(|ix| ix.to_string()),
            });
        }
        let limit = l.limit.as_ref().map(|lim| {
            if l.relation.is_none() && l.search.is_none() {
                self.error(
                    lim.param.span(),
                    "`limit` in a lookup without `relation` (expected `limit` only on relation lookups)"
                        .to_owned(),
                );
            }
            if !(is_name(&lim.param, b"-") && lim.param.len() <= 64) {
                self.error(
                    lim.param.span(),
                    format!("invalid parameter name `{}` (expected 1-64 letters, digits, `_` or `-`)", *lim.param),
                );
            }
            if let Some(first) = params.get(lim.param.as_str()) {
                self.error(
                    lim.param.span(),
                    format!("limit parameter `{}` is also a `by` parameter at {} (expected a distinct name)", *lim.param, pos(first)),
                );
            }
            if *lim.max == 0 {
                self.error(lim.max.span(), "max is 0 (expected at least 1)".to_owned());
            }
            if *lim.default == 0 {
                self.error(lim.default.span(), "default is 0 (expected at least 1)".to_owned());
            } else if *lim.default > *lim.max {
                self.error(
                    lim.default.span(),
                    format!("default {} exceeds max {} (expected default <= max)", *lim.default, *lim.max),
                );
            }
            LimitParam {
                param: lim.param.to_string(),
                description: lim.description.to_string(),
                default: *lim.default,
                max: *lim.max,
            }
        });
        (self.errors.len() == before).then(|| Lookup {
            tool: l.tool.to_string(),
            description: l.description.to_string(),
            by,
            relation: l.relation.as_ref().map(|r| r.to_string()),
            limit,
            // Checked and set by `relation_filters`.
            filters: Vec::new(),
            range: None,
            // Checked and set by `include`, once every mapping is known.
            include: Vec::new(),
            aggregate: l.aggregate.as_ref().map(|a| a.to_string()),
            search: l.search.as_ref().map(|s| s.to_string()),
        })
    }
}
