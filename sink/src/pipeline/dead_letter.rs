//! Dead-lettering from inside the pipeline: both stages hand a poison record here (the consume
//! stage one it cannot decode or plan, the apply stage a change Redis rejected for good), and
//! it is sent, retrying transient broker failures, before the record's offset may be stored.
//! A record too large for the dead-letter topic goes out headers only ([`crate::dlq`]) and the
//! pipeline moves on: refusing it would stop the sink at the same record after every restart.

use tokio_util::sync::CancellationToken;
use tracing::{error, warn};

use super::error::ConsumeError;
use super::retry::Backoff;
use crate::dlq::{DeadLetter, DeadLetters, Delivery};
use crate::telemetry::{self, DeadLetterReason};

/// Writes `letter` to the dead-letter topic, retrying what may succeed later, and counts it
/// under `reason`. `Ok(false)` when shutdown interrupted the retries (the record was not
/// dead-lettered; its offset must not be stored).
pub(super) async fn send(
    dead_letters: &DeadLetters,
    letter: &DeadLetter<'_>,
    reason: DeadLetterReason,
    shutdown: &CancellationToken,
) -> Result<bool, ConsumeError> {
    let origin = letter.origin;
    warn!(
        topic = %origin.topic,
        partition = origin.partition,
        offset = origin.offset,
        error = %letter.error,
        dlq = dead_letters.topic(),
        "Dead-lettering a record."
    );
    let mut backoff = Backoff::default();
    loop {
        match dead_letters.send(letter).await {
            Ok(Delivery::Whole) => {
                telemetry::dead_lettered(origin.topic, reason);
                return Ok(true);
            }
            Ok(Delivery::HeadersOnly { size }) => {
                telemetry::dead_lettered(origin.topic, reason);
                error!(
                    topic = %origin.topic,
                    partition = origin.partition,
                    offset = origin.offset,
                    size,
                    dlq = dead_letters.topic(),
                    "Dead letter too large for the dead-letter topic; sent its headers only (read the record itself from its origin)."
                );
                return Ok(true);
            }
            Err(e) if e.is_retriable() => {
                if !backoff.wait("Dead-lettering a record", &e, shutdown).await {
                    return Ok(false);
                }
            }
            Err(e) => return Err(ConsumeError::DeadLetter(Box::new(e))),
        }
    }
}
