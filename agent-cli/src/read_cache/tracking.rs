//! Keeps a [`ReadCache`] live: a RESP3 connection of its own on which Redis reports every
//! change of a tracked key (`CLIENT TRACKING on BCAST PREFIX ...`), re-made after it is lost.
//! The cache is live only while that connection is up with tracking on: a dropped
//! connection (redis-rs reports it as a `Disconnection` push), a `PING` without an answer
//! within [`PING_TIMEOUT`] (a silent network), or Redis refusing tracking empties it, and
//! lookups go to Redis until tracking is back.

use std::hash::Hash;
use std::sync::Arc;
use std::time::Duration;

use mapping::{redact_url, RedisConfig};
use redis::aio::MultiplexedConnection;
use redis::{PushInfo, PushKind};
use tokio::sync::Notify;

use super::ReadCache;
use crate::error::StoreError;

/// How often the tracking connection is checked.
const PING_EVERY: Duration = Duration::from_secs(1);
/// How long a check may take before the connection counts as lost.
const PING_TIMEOUT: Duration = Duration::from_secs(1);
/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// The wait before connecting again after a failure.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// Starts keeping `cache` live against `redis` on the current runtime, for the life of the
/// process (`agent-cli mcp`). Fails only when no client can be made from the settings.
pub fn spawn<K, V>(redis: &RedisConfig, cache: ReadCache<K, V>) -> Result<(), StoreError>
where
    K: Hash + Eq + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    let url = redact_url(&redis.url);
    let client = redis_connect::client_resp3(redis).map_err(|source| StoreError::Client {
        url: url.clone(),
        source,
    })?;
    tokio::spawn(async move {
        // Warn once per outage, not once per retry.
        let mut warned = false;
        loop {
            match connect(&client, &cache).await {
                Ok((conn, lost)) => {
                    warned = false;
                    cache.set_live(true);
                    tracing::info!(redis = %url, "Read cache live: Redis reports changes of the keys lookups read.");
                    watch(conn, &lost).await;
                    cache.set_live(false);
                    tracing::warn!(redis = %url, "Read cache off: its tracking connection was lost; lookups go to Redis until it is back.");
                }
                Err(err) => {
                    cache.set_live(false);
                    if !warned {
                        tracing::warn!(redis = %url, error = %err, "Read cache off: cannot turn on key tracking; lookups go to Redis, retrying.");
                    }
                    warned = true;
                }
            }
            tokio::time::sleep(RETRY_AFTER).await;
        }
    });
    Ok(())
}

/// A connection whose pushes go to `cache`, with broadcast tracking on for its prefixes,
/// and the signal that it was lost.
async fn connect<K, V>(
    client: &redis::Client,
    cache: &ReadCache<K, V>,
) -> Result<(MultiplexedConnection, Arc<Notify>), redis::RedisError>
where
    K: Hash + Eq + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    let lost = Arc::new(Notify::new());
    let pushes = {
        let (cache, lost) = (cache.clone(), Arc::clone(&lost));
        move |push: PushInfo| -> Result<(), std::convert::Infallible> {
            match push.kind {
                PushKind::Invalidate => cache.on_invalidate(&push.data),
                PushKind::Disconnection => {
                    cache.set_live(false);
                    lost.notify_one();
                }
                _ => {}
            }
            Ok(())
        }
    };
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(Some(PING_TIMEOUT))
        .set_push_sender(pushes);
    let mut conn = client
        .get_multiplexed_async_connection_with_config(&config)
        .await?;
    redis::cmd("CLIENT")
        .arg("TRACKING")
        .arg("on")
        .arg("BCAST")
        .arg(cache.prefixes().tracking_args())
        .query_async::<()>(&mut conn)
        .await?;
    Ok((conn, lost))
}

/// Returns when the connection is lost or stops answering.
async fn watch(mut conn: MultiplexedConnection, lost: &Notify) {
    loop {
        tokio::select! {
            () = lost.notified() => return,
            () = tokio::time::sleep(PING_EVERY) => {
                if let Err(err) = redis::cmd("PING").query_async::<()>(&mut conn).await {
                    tracing::debug!(error = %err, "Read cache tracking connection did not answer.");
                    return;
                }
            }
        }
    }
}
