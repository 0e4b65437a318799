//! `agent-cli mcp` re-reads `connectors.yaml` while it serves: on `SIGHUP`, and with
//! `--watch-config` when the file changes (events debounced into one reload). A file that
//! does not load is refused with its `file:line:col` errors on one log line (stderr) and
//! the server keeps the tools it has; a valid one replaces the lookups at once and the
//! client is told that the tool list changed ([`crate::mcp`]).
//!
//! The Redis connection is not re-made: a file naming another Redis is refused (restart the
//! server for that), everything else (lookups, tools, freshness bounds, sources) applies.

use std::path::{Path, PathBuf};
use std::time::Duration;

use mapping::{Config, ConfigErrors};
use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use thiserror::Error;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;
use tracing::warn;

/// How long a file change waits for the rest of its burst before it triggers a reload.
const WATCH_DEBOUNCE: Duration = Duration::from_millis(300);

/// Why a re-read configuration was not applied.
#[derive(Debug, Error)]
pub enum Refused {
    /// The file does not load; each error as `file:line:col: what`, on one line.
    #[error("invalid configuration: {}", one_line(.0))]
    Invalid(ConfigErrors),
    /// It names another Redis (or other credentials or certificates for it).
    #[error("the redis settings changed; restart `agent-cli mcp` to connect with them")]
    Redis,
}

/// Accepts `next` in place of `current` unless its Redis settings differ.
pub fn vet(current: &Config, next: Result<Config, ConfigErrors>) -> Result<Config, Refused> {
    let next = next.map_err(Refused::Invalid)?;
    if next.redis != current.redis {
        return Err(Refused::Redis);
    }
    Ok(next)
}

fn one_line(errors: &ConfigErrors) -> String {
    errors
        .to_string()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

/// Why the reload triggers could not be set up.
#[derive(Debug, Error)]
pub enum TriggerError {
    /// The `SIGHUP` handler could not be installed.
    #[error("cannot listen for SIGHUP")]
    Signal(#[source] std::io::Error),
    /// The configuration file's directory cannot be watched.
    #[error("cannot watch {} for changes", .path.display())]
    Watch {
        /// The watched directory.
        path: PathBuf,
        /// What the watcher said.
        #[source]
        source: notify::Error,
    },
}

/// The reload requests: `SIGHUP`, and changes of the watched file. Requests that arrive
/// while one is pending coalesce into it.
#[derive(Debug)]
pub struct Triggers {
    rx: mpsc::Receiver<()>,
    /// Kept alive: dropping it stops the watch.
    _watcher: Option<RecommendedWatcher>,
}

impl Triggers {
    /// Listens for `SIGHUP` and, with `watch`, for changes of that file (its directory is
    /// watched, so that editors that replace the file are seen too). Call it within a Tokio
    /// runtime, before serving: until then `SIGHUP` terminates the process.
    pub fn listen(watch: Option<&Path>) -> Result<Triggers, TriggerError> {
        let (tx, rx) = mpsc::channel(1);
        let mut hangup = signal(SignalKind::hangup()).map_err(TriggerError::Signal)?;
        let signalled = tx.clone();
        tokio::spawn(async move {
            while hangup.recv().await.is_some() {
                let _ = signalled.try_send(());
            }
        });
        let watcher = watch.map(|file| watch_file(file, tx)).transpose()?;
        Ok(Triggers {
            rx,
            _watcher: watcher,
        })
    }

    /// The next request; `None` once no more can come. Cancel-safe.
    pub async fn next(&mut self) -> Option<()> {
        self.rx.recv().await
    }
}

/// Watches the directory of `file`; one request per debounced burst of events about it.
fn watch_file(file: &Path, tx: mpsc::Sender<()>) -> Result<RecommendedWatcher, TriggerError> {
    let dir = match file.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
        _ => PathBuf::from("."),
    };
    let name = file.file_name().map(ToOwned::to_owned);
    let (events_tx, mut events) = mpsc::unbounded_channel();
    let mut watcher =
        notify::recommended_watcher(move |event: notify::Result<notify::Event>| match event {
            Ok(event) => {
                let about_file = event.paths.iter().any(|p| p.file_name() == name.as_deref());
                let changes = matches!(
                    event.kind,
                    EventKind::Create(_) | EventKind::Modify(_) | EventKind::Remove(_)
                );
                if about_file && changes {
                    let _ = events_tx.send(());
                }
            }
            Err(e) => warn!(error = %e, "Watching the configuration file failed."),
        })
        .map_err(|source| TriggerError::Watch {
            path: dir.clone(),
            source,
        })?;
    watcher
        .watch(&dir, RecursiveMode::NonRecursive)
        .map_err(|source| TriggerError::Watch { path: dir, source })?;
    tokio::spawn(async move {
        while events.recv().await.is_some() {
            tokio::time::sleep(WATCH_DEBOUNCE).await;
            while events.try_recv().is_ok() {}
            let _ = tx.try_send(());
        }
    });
    Ok(watcher)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<Config, ConfigErrors> {
        mapping::load_config_str(text, "connectors.yaml", &Default::default())
    }

    const SHIPPED: &str = include_str!("../../connectors.yaml");

    #[test]
    fn new_lookups_apply_and_another_redis_or_a_bad_file_is_refused() {
        let current = load(SHIPPED).expect("shipped");
        let renamed = SHIPPED.replace("tool: get_order\n", "tool: find_order\n");
        let next = vet(&current, load(&renamed)).expect("accepted");
        assert!(next.lookup("find_order").is_some());

        let moved = SHIPPED.replace("url: redis://127.0.0.1:6379", "url: redis://10.0.0.1:6379");
        assert!(matches!(vet(&current, load(&moved)), Err(Refused::Redis)));

        let broken = SHIPPED.replace("    fields: all\n", "    fields: all\n    bogus: 1\n");
        let refused = vet(&current, load(&broken))
            .expect_err("invalid")
            .to_string();
        assert!(!refused.contains('\n'), "{refused}");
        assert!(refused.contains("connectors.yaml:"), "{refused}");
    }
}
