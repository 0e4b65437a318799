//! What asks `sink run` and `agent-cli mcp` to re-read `connectors.yaml`: `SIGHUP`, and with
//! `--watch-config` a change of the file. A crate of its own so that both binaries reload
//! alike. File events come in bursts (an editor writes, renames, changes modes), so they are
//! debounced into one reload; requests that arrive while one is pending coalesce into it
//! (the pending reload reads the file as it is then).

use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use thiserror::Error;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;
use tracing::warn;

/// How long a file change waits for the rest of its burst before it triggers a reload.
pub const WATCH_DEBOUNCE: Duration = Duration::from_millis(300);

/// Why the triggers could not be set up.
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

/// Why a reload was asked for (for the log).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// `SIGHUP`.
    Signal,
    /// The watched file changed.
    FileChanged,
}

impl Trigger {
    /// `SIGHUP` or `file change`.
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Signal => "SIGHUP",
            Trigger::FileChanged => "file change",
        }
    }
}

/// The stream of reload requests.
#[derive(Debug)]
pub struct Triggers {
    /// `None`: never fires.
    rx: Option<mpsc::Receiver<Trigger>>,
    /// Kept alive: dropping it stops the watch.
    _watcher: Option<RecommendedWatcher>,
}

impl Triggers {
    /// Listens for `SIGHUP` and, with `watch`, for changes of that file (its directory is
    /// watched, so that editors that replace the file are seen too). Call it within a Tokio
    /// runtime, early: until then `SIGHUP` terminates the process.
    pub fn listen(watch: Option<&Path>) -> Result<Triggers, TriggerError> {
        let (tx, rx) = mpsc::channel(1);
        let mut hangup = signal(SignalKind::hangup()).map_err(TriggerError::Signal)?;
        let signalled = tx.clone();
        tokio::spawn(async move {
            while hangup.recv().await.is_some() {
                // Full: a reload is pending and will read the file as it is now.
                let _ = signalled.try_send(Trigger::Signal);
            }
        });
        let watcher = watch.map(|file| watch_file(file, tx)).transpose()?;
        Ok(Triggers {
            rx: Some(rx),
            _watcher: watcher,
        })
    }

    /// Triggers that never fire: a run that is never reloaded.
    pub fn never() -> Triggers {
        Triggers {
            rx: None,
            _watcher: None,
        }
    }

    /// The next request; pending forever when there is none to come. Cancel-safe.
    pub async fn next(&mut self) -> Trigger {
        match &mut self.rx {
            Some(rx) => match rx.recv().await {
                Some(trigger) => trigger,
                None => std::future::pending().await,
            },
            None => std::future::pending().await,
        }
    }
}

/// Watches the directory of `file` and sends one [`Trigger::FileChanged`] per debounced
/// burst of events about it.
fn watch_file(file: &Path, tx: mpsc::Sender<Trigger>) -> Result<RecommendedWatcher, TriggerError> {
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
            let _ = tx.try_send(Trigger::FileChanged);
        }
    });
    Ok(watcher)
}

#[cfg(test)]
mod tests {
    use super::*;

    const WAIT: Duration = Duration::from_secs(5);

    /// One test: a SIGHUP reaches every listener of the process, so the two cases must
    /// not run concurrently.
    #[tokio::test]
    async fn a_burst_of_file_changes_or_a_sighup_asks_for_one_reload() {
        let dir = std::env::temp_dir().join(format!("config-reload-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let file = dir.join("connectors.yaml");
        std::fs::write(&file, "a: 1\n").expect("write");
        let mut triggers = Triggers::listen(Some(&file)).expect("listen");
        std::fs::write(dir.join("other.yaml"), "ignored\n").expect("write");
        for n in 0..5 {
            std::fs::write(&file, format!("a: {n}\n")).expect("write");
        }
        let trigger = tokio::time::timeout(WAIT, triggers.next()).await;
        assert_eq!(trigger.ok(), Some(Trigger::FileChanged));
        let again = tokio::time::timeout(WATCH_DEBOUNCE * 3, triggers.next()).await;
        assert!(again.is_err(), "one reload per burst, got {again:?}");

        let status = std::process::Command::new("kill")
            .args(["-HUP", &std::process::id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
        let trigger = tokio::time::timeout(WAIT, triggers.next()).await;
        assert_eq!(trigger.ok(), Some(Trigger::Signal));
        std::fs::remove_dir_all(dir).ok();
    }
}
