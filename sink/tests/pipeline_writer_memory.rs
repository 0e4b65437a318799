//! `--max-writer-memory`: an exclusive sink whose bookkeeping grows past the bound stops
//! taking batches (a configuration error, not a crash), refuses to start again on the
//! same bound (in process and through the binary: exit code 2 and a message with the estimate,
//! the bound and the flag), and once the bound is raised applies everything that was left:
//! nothing is lost.

mod pipeline_support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use pipeline_support::{assert_state, generate, Scenario};
use sink::apply::{ApplyError, DEFAULT_LEASE_TTL};
use sink::config::{BatchSettings, Writer};
use sink::pipeline::StopWhen;
use sink::run::RunError;
use tokio_util::sync::CancellationToken;

/// Far less than the bookkeeping of the workload's rows and index keys.
const TINY: u64 = 64 * 1024;

fn exclusive(max_memory: u64) -> Writer {
    Writer::Exclusive {
        lease: DEFAULT_LEASE_TTL,
        max_memory,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_exclusive_writer_stops_at_its_memory_bound_and_refuses_to_start_above_it() {
    let s = Scenario::new(1).await;
    let w = generate(3000);
    let records = s.encode(&w.events);
    s.produce(&records).await;
    // Small batches, so the bound is crossed long before the end.
    let batch = BatchSettings::new(100, Duration::from_millis(5));

    // Starts on an empty database, grows past the bound, stops before the next batch.
    let cfg = s.sink_config(batch).with_writer(exclusive(TINY));
    let grown = tokio::time::timeout(
        Duration::from_secs(60),
        sink::run::run(&cfg, StopWhen::CaughtUp, CancellationToken::new()),
    )
    .await
    .expect("stopped within 60 s")
    .expect_err("stopped at the bound");
    assert!(grown.is_config(), "{grown:#}");
    let text = format!("{:#}", anyhow::Error::from(grown));
    assert!(
        text.contains("more than --max-writer-memory 64.0 KiB"),
        "{text}"
    );

    // The same bound again: refused at start, before consuming anything.
    let refused = sink::run::run(&cfg, StopWhen::CaughtUp, CancellationToken::new())
        .await
        .expect_err("refused at start");
    let RunError::Exclusive(ApplyError::WriterMemory(bound)) = &refused else {
        panic!("not the memory bound: {refused:#}")
    };
    assert!(bound.estimate > TINY && bound.rows > 0, "{bound:?}");
    assert!(refused.is_config());

    // Through the binary: exit code 2 and one message with the estimate, bound and flag.
    let (code, stderr) = run_binary(&s, &["--max-writer-memory", "64KiB"]);
    assert_eq!(code, Some(2), "{stderr}");
    let line = stderr
        .lines()
        .find(|l| l.starts_with("sink: "))
        .unwrap_or_else(|| panic!("no error line:\n{stderr}"));
    assert!(line.contains("index keys takes about "), "{line}");
    assert!(
        line.contains("more than --max-writer-memory 64.0 KiB allows"),
        "{line}"
    );
    assert!(line.contains("SINK_MAX_WRITER_MEMORY"), "{line}");

    // Raised: the rest is applied, nothing lost.
    let cfg = s.sink_config(batch).with_writer(exclusive(1 << 30));
    let summary = pipeline_support::run_until_caught_up(&cfg).await;
    assert!(summary.records > 0, "{summary:?}");
    assert_state(&s, &w);
    s.cleanup();
}

/// Runs `sink run --writer exclusive` on the scenario's configuration with `extra`
/// arguments; its exit code and stderr (killed after 60 s).
fn run_binary(s: &Scenario, extra: &[&str]) -> (Option<i32>, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sink"))
        .args(["run", "--config", s.config_path.to_str().unwrap()])
        .args(["--writer", "exclusive"])
        .args(extra)
        .env_remove("SINK_MAX_WRITER_MEMORY")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run sink");
    let start = Instant::now();
    while child.try_wait().expect("wait").is_none() {
        if start.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            panic!("sink run did not stop within 60 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().expect("output");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
