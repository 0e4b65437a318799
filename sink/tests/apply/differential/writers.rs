//! Every call of this test into the sink's apply API, in one place: the writers, a writer
//! handing its mappings over to an exclusive one, and a delivered message planned and
//! applied through any of them.

use std::sync::Arc;

use deadpool_redis::Pool;
use mapping::Config;
use sink::apply::{Applier, ApplyError, BatchOutcome, PlannedChange, DEFAULT_LEASE_TTL};
use tokio_util::sync::CancellationToken;

use super::history::Message;

/// Which implementation of the change semantics decides.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    /// The generated Lua script, deciding in Redis.
    Script,
    /// The owned writer, deciding in memory from an empty database and sending only the
    /// writes.
    Owned,
}

/// One writer with the configuration its keys are under.
pub struct Writer {
    applier: Applier,
    pool: Pool,
    config: Config,
}

impl Writer {
    /// Call within a Tokio runtime (the owned writer starts its sending task).
    pub fn new(kind: Kind, pool: Pool, config: Config) -> Writer {
        let applier = match kind {
            Kind::Script => Applier::new(pool.clone(), &config),
            Kind::Owned => Applier::owning(pool.clone(), &config),
        };
        assert_eq!(
            applier.is_owning(),
            matches!(kind, Kind::Owned),
            "{kind:?} writer"
        );
        Writer {
            applier,
            pool,
            config,
        }
    }

    /// An exclusive writer (the owned writer of `sink run --writer exclusive`) taking this
    /// writer's mappings over: it takes their lease and loads the bookkeeping stored so far.
    pub async fn handed_to_exclusive(self) -> Writer {
        let applier = Applier::exclusive(
            self.pool.clone(),
            &self.config,
            &sink::apply::WriterId::new(),
            DEFAULT_LEASE_TTL,
            sink::apply::DEFAULT_MAX_WRITER_MEMORY,
            &CancellationToken::new(),
        )
        .await
        .unwrap_or_else(|e| panic!("exclusive writer: {e}: {:?}", std::error::Error::source(&e)))
        .expect("not cancelled");
        assert!(applier.is_owning(), "exclusive writer");
        Writer { applier, ..self }
    }

    /// Gives an exclusive writer's lease up.
    pub async fn release(&self) {
        self.applier.release().await.expect("release the lease");
    }

    /// Plans `batch` for this writer's mappings and applies it (again while an exclusive
    /// writer answers "send again", after reloading).
    pub async fn apply(&self, batch: &[&Message]) -> Result<BatchOutcome, String> {
        let planned: Vec<PlannedChange> = batch.iter().map(|m| self.planned(m)).collect();
        for _ in 0..20 {
            match self.applier.apply_batch(&planned).await {
                Err(ApplyError::Resend { .. }) => continue,
                other => {
                    return other.map_err(|e| format!("{e}: {:?}", std::error::Error::source(&e)))
                }
            }
        }
        Err("still answered \"send again\" after 20 attempts".to_owned())
    }

    fn planned(&self, message: &Message) -> PlannedChange {
        let mapping = &self.config.mappings[message.table];
        let plan = mapping::plan(mapping, message.change.clone())
            .unwrap_or_else(|e| panic!("plan {:?}: {e}", message.change));
        PlannedChange {
            mapping: message.table,
            op: message.change.op,
            plan,
            source_ts_ms: message.change.source_ts_ms,
            topic: Arc::from(mapping.topic.as_str()),
            partition: message.partition,
            offset: message.offset,
            record_time: None,
        }
    }
}
