//! Every call of this test into the sink's apply API, in one place: the two writers, and a
//! delivered message planned and applied through either.

use std::sync::Arc;

use deadpool_redis::Pool;
use mapping::Config;
use sink::apply::{Applier, BatchOutcome, PlannedChange};

use super::history::Message;

/// Which implementation of the change semantics decides.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    /// The generated Lua script, deciding in Redis.
    Script,
    /// The owned writer, deciding in memory and sending only the writes.
    Owned,
}

/// One writer with the configuration its keys are under.
pub struct Writer {
    applier: Applier,
    config: Config,
}

impl Writer {
    /// Call within a Tokio runtime (the owned writer starts its sending task).
    pub fn new(kind: Kind, pool: Pool, config: Config) -> Writer {
        let applier = match kind {
            Kind::Script => Applier::new(pool, &config),
            Kind::Owned => Applier::owning(pool, &config),
        };
        assert_eq!(
            applier.is_owning(),
            matches!(kind, Kind::Owned),
            "{kind:?} writer"
        );
        Writer { applier, config }
    }

    /// Plans `batch` for this writer's mappings and applies it.
    pub async fn apply(&self, batch: &[&Message]) -> Result<BatchOutcome, String> {
        let planned: Vec<PlannedChange> = batch.iter().map(|m| self.planned(m)).collect();
        self.applier
            .apply_batch(&planned)
            .await
            .map_err(|e| format!("{e}: {:?}", std::error::Error::source(&e)))
    }

    fn planned(&self, message: &Message) -> PlannedChange {
        let mapping = &self.config.mappings[message.table];
        let plan = mapping::plan(mapping, &message.change)
            .unwrap_or_else(|e| panic!("plan {:?}: {e}", message.change));
        PlannedChange {
            mapping: message.table,
            plan,
            source_ts_ms: message.change.source_ts_ms,
            topic: Arc::from(mapping.topic.as_str()),
            partition: message.partition,
            offset: message.offset,
        }
    }
}
