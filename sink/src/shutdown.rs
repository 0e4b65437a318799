//! The shutdown signal: SIGINT or SIGTERM cancels a [`CancellationToken`] that every stage
//! of every subcommand watches, so that `sink run` commits its offsets and `sink rebuild`
//! releases its lock before the process exits.

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// Cancels `shutdown` at the first SIGINT or SIGTERM.
pub async fn cancel_on_signal(shutdown: CancellationToken) {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(e) => {
                warn!(error = %e, "Cannot listen for SIGTERM.");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
    info!("Shutting down.");
    shutdown.cancel();
}
