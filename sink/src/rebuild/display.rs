//! How a rebuild shows its progress: on a terminal, one indicatif bar per topic (position,
//! events/s, ETA) on stderr; otherwise a log line per topic every few seconds.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};
use tokio::time::Instant;
use tracing::info;

/// How often the log lines come without a terminal.
const LOG_EVERY: Duration = Duration::from_secs(5);

/// Progress output.
#[derive(Debug)]
pub enum Display {
    /// Bars on the terminal, by topic.
    Bars {
        /// Keeps the bars drawn together.
        multi: MultiProgress,
        /// One bar per topic.
        bars: BTreeMap<String, ProgressBar>,
    },
    /// Periodic log lines.
    Log {
        /// Records to replay per topic.
        totals: BTreeMap<String, u64>,
        /// When the last lines were written.
        last: Instant,
        /// When the replay started.
        start: Instant,
    },
}

impl Display {
    /// Bars when stderr is a terminal (and `quiet` is off), log lines otherwise.
    pub fn new(totals: &BTreeMap<String, u64>, quiet: bool) -> Display {
        if !quiet && std::io::stderr().is_terminal() {
            let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
            let width = totals.keys().map(String::len).max().unwrap_or(10).min(60);
            let style = ProgressStyle::with_template(&format!(
                "{{prefix:<{width}!}} [{{bar:30.cyan/blue}}] {{human_pos}}/{{human_len}} {{rate}} ETA {{eta}}"
            ))
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .with_key("rate", |state: &ProgressState, w: &mut dyn std::fmt::Write| {
                let _ = write!(w, "{:.0} events/s", state.per_sec());
            })
            .progress_chars("=> ");
            let bars = totals
                .iter()
                .map(|(topic, total)| {
                    let bar = multi.add(ProgressBar::new(*total).with_style(style.clone()));
                    bar.set_prefix(topic.clone());
                    bar.enable_steady_tick(Duration::from_millis(200));
                    (topic.clone(), bar)
                })
                .collect();
            Display::Bars { multi, bars }
        } else {
            let now = Instant::now();
            Display::Log {
                totals: totals.clone(),
                last: now,
                start: now,
            }
        }
    }

    /// Shows the records replayed so far per topic.
    pub fn update(&mut self, done: &BTreeMap<String, u64>) {
        match self {
            Display::Bars { bars, .. } => {
                for (topic, n) in done {
                    if let Some(bar) = bars.get(topic) {
                        bar.set_position(*n);
                    }
                }
            }
            Display::Log {
                totals,
                last,
                start,
            } => {
                if last.elapsed() < LOG_EVERY {
                    return;
                }
                *last = Instant::now();
                let secs = start.elapsed().as_secs_f64().max(0.001);
                for (topic, n) in done {
                    let total = totals.get(topic).copied().unwrap_or(0);
                    info!(%topic, replayed = n, total, events_per_s = (*n as f64 / secs) as u64, "Rebuilding.");
                }
            }
        }
    }

    /// Prints a line without tearing the bars.
    pub fn note(&self, line: &str) {
        match self {
            Display::Bars { multi, .. } => {
                let _ = multi.println(line);
            }
            Display::Log { .. } => info!("{line}"),
        }
    }

    /// Removes the bars.
    pub fn finish(&self) {
        if let Display::Bars { multi, bars } = self {
            for bar in bars.values() {
                bar.finish_and_clear();
            }
            let _ = multi.clear();
        }
    }
}
