//! Which keys the read cache asks Redis to report changes of: the literal beginnings of every
//! key a lookup of the configuration can read (`CLIENT TRACKING on BCAST PREFIX ...`). The
//! sink's own bookkeeping (`sink:rows:`, `sink:index:`, ...) stays out, so a busy sink does
//! not flood the server with invalidations it would only drop.

use mapping::layout;
use mapping::model::Config;

/// Key prefixes whose changes Redis reports; `None` inside when a template starts with a
/// placeholder, so that only every key will do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prefixes(Option<Vec<String>>);

impl Prefixes {
    /// What the lookups of `config` can read: row, index, relation (filtered ones included)
    /// and aggregate keys, search sorted sets, and the types, freshness and watermark hashes.
    pub fn of(config: &Config) -> Prefixes {
        let mut literals = vec![
            layout::types_key(""),
            layout::freshness_key(""),
            layout::watermark_key(""),
            format!("{}:", layout::search_key("", "").trim_end_matches(':')),
        ];
        for mapping in &config.mappings {
            literals.push(mapping.key.literal_prefix().to_owned());
            literals.extend(
                mapping
                    .indexes
                    .iter()
                    .map(|i| i.key.literal_prefix().to_owned()),
            );
            literals.extend(
                mapping
                    .relations
                    .iter()
                    .map(|r| r.key.literal_prefix().to_owned()),
            );
            literals.extend(
                mapping
                    .aggregates
                    .iter()
                    .map(|a| a.key.literal_prefix().to_owned()),
            );
        }
        Prefixes::of_literals(literals)
    }

    /// The smallest set of prefixes covering `literals` (Redis refuses overlapping ones).
    pub fn of_literals<S: Into<String>>(literals: impl IntoIterator<Item = S>) -> Prefixes {
        let mut all: Vec<String> = literals.into_iter().map(Into::into).collect();
        all.sort_by_key(String::len);
        let mut kept: Vec<String> = Vec::new();
        for literal in all {
            if literal.is_empty() {
                return Prefixes(None);
            }
            if !kept.iter().any(|k| literal.starts_with(k.as_str())) {
                kept.push(literal);
            }
        }
        kept.sort();
        Prefixes(Some(kept))
    }

    /// Whether changes of `key` are reported.
    pub fn covers(&self, key: &str) -> bool {
        match &self.0 {
            None => true,
            Some(kept) => kept.iter().any(|p| key.starts_with(p.as_str())),
        }
    }

    /// The arguments of `CLIENT TRACKING on BCAST` after `BCAST`: `PREFIX p` for each
    /// (none: every key).
    pub fn tracking_args(&self) -> Vec<&str> {
        self.0
            .iter()
            .flatten()
            .flat_map(|p| ["PREFIX", p.as_str()])
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlapping_prefixes_are_merged_and_a_leading_placeholder_means_every_key() {
        let p = Prefixes::of_literals(["customer:email:", "customer:", "sink:types:", "order:"]);
        assert_eq!(
            p.tracking_args(),
            [
                "PREFIX",
                "customer:",
                "PREFIX",
                "order:",
                "PREFIX",
                "sink:types:"
            ]
        );
        assert!(p.covers("customer:email:a@b"));
        assert!(!p.covers("sink:rows:customers"));
        let every = Prefixes::of_literals(["customer:", ""]);
        assert!(every.tracking_args().is_empty());
        assert!(every.covers("anything"));
    }

    #[test]
    fn the_shipped_configuration_tracks_what_its_lookups_read_and_not_the_bookkeeping() {
        let text = include_str!("../../../connectors.yaml");
        let config = mapping::load_config_str(text, "connectors.yaml", &Default::default())
            .expect("shipped configuration");
        let p = Prefixes::of(&config);
        for key in [
            "customer:42",
            "customer:email:a@b.c",
            "customer:42:orders",
            "sink:types:customers",
            "sink:freshness:orders",
            "sink:watermark:inventory",
            "sink:search:customers:name_prefix",
        ] {
            assert!(p.covers(key), "{key} is not tracked: {p:?}");
        }
        for key in [
            "sink:rows:customers",
            "sink:index:customers:email",
            "sink:offsets",
        ] {
            assert!(!p.covers(key), "{key} is tracked: {p:?}");
        }
    }
}
