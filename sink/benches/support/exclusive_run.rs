//! `rebuild-bench --run-exclusive SECONDS`: the real `sink run --writer exclusive` started on
//! the state a rebuild left, for its start-up (the bookkeeping load) and its resident memory
//! while it holds every row and index key.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// What one exclusive sink showed.
pub struct ExclusiveRun {
    /// Rows and index keys it loaded, from its start-up line.
    pub rows: u64,
    pub index_keys: u64,
    /// `load_ms` of its start-up line.
    pub load_ms: u64,
    /// `from` of its start-up line: `snapshot` or `redis`.
    pub from: String,
    /// At shutdown: the bytes of the bookkeeping it left in Redis and the milliseconds it
    /// took, when it left it.
    pub left: Option<(u64, u64)>,
    /// `memory_bytes` of its start-up line: the bookkeeping's estimate.
    pub estimate: u64,
    /// The gauge `sink_writer_memory_bytes` when ready: the estimate after catching up (set
    /// once a batch was applied).
    pub estimate_ready: Option<u64>,
    /// Process start to `GET /ready` answering 200.
    pub ready: Duration,
    /// Resident memory (`VmRSS`) when ready, the most and the last while sampled.
    pub rss_ready: u64,
    pub rss_max: u64,
    pub rss_last: u64,
}

/// A child process killed when dropped (an error path).
struct Owned(Child);

impl Drop for Owned {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs `sink` with `config` (and `extra_args`) as the exclusive writer of `redis_url` until ready, then
/// samples its resident memory every 100 ms for `seconds`, and stops it with SIGTERM.
pub async fn measure(
    sink: &Path,
    config: &str,
    redis_url: &str,
    extra_args: &[String],
    seconds: u64,
    dir: &Path,
) -> anyhow::Result<ExclusiveRun> {
    let config_path = dir.join("rebuild-bench.yaml");
    std::fs::write(&config_path, config)?;
    let log_path = dir.join("exclusive-sink.log");
    let port = free_port()?;
    let started = Instant::now();
    let mut child = Owned(
        Command::new(sink)
            .arg("run")
            .arg("--config")
            .arg(&config_path)
            // Also over a `REDIS_URL` in the environment, which would override the file's.
            .args(["--redis-url", redis_url])
            .args(["--writer", "exclusive", "--log-format", "json"])
            .arg("--metrics-addr")
            .arg(format!("127.0.0.1:{port}"))
            .args(extra_args)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log_path)?)
            .spawn()
            .with_context(|| format!("starting {}", sink.display()))?,
    );
    let pid = child.0.id();
    let ready_url = format!("http://127.0.0.1:{port}/ready");
    loop {
        if let Some(status) = child.0.try_wait()? {
            bail!(
                "the sink exited with {status} (log: {})",
                log_path.display()
            );
        }
        if started.elapsed() > Duration::from_secs(300) {
            bail!(
                "the sink was not ready after 300 s (log: {})",
                log_path.display()
            );
        }
        let ready = reqwest::get(&ready_url).await;
        if ready.is_ok_and(|r| r.status().is_success()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let ready = started.elapsed();
    let rss_ready = resident_bytes(pid)?;
    let metrics = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await?
        .text()
        .await?;
    let estimate_ready = metrics
        .lines()
        .find_map(|l| l.strip_prefix("sink_writer_memory_bytes "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|bytes| bytes as u64);
    let mut rss_max = rss_ready;
    let mut rss_last = rss_ready;
    let until = Instant::now() + Duration::from_secs(seconds);
    while Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(100)).await;
        rss_last = resident_bytes(pid)?;
        rss_max = rss_max.max(rss_last);
    }
    Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()?;
    let status = child.0.wait()?;
    if !status.success() {
        bail!(
            "the sink exited with {status} (log: {})",
            log_path.display()
        );
    }
    let log = std::fs::read_to_string(&log_path)?;
    let fields_of = |message: &str| -> Option<serde_json::Value> {
        let line = log.lines().find(|l| l.contains(message))?;
        serde_json::from_str::<serde_json::Value>(line)
            .ok()
            .map(|v| v["fields"].clone())
    };
    let number = |fields: &serde_json::Value, name: &str| -> Option<u64> {
        let value = &fields[name];
        value.as_u64().or_else(|| value.as_str()?.parse().ok())
    };
    let start_up = fields_of("bookkeeping loaded")
        .with_context(|| format!("no start-up line in {}", log_path.display()))?;
    let field = |name: &str| -> anyhow::Result<u64> {
        number(&start_up, name).with_context(|| format!("`{name}` in the start-up line {start_up}"))
    };
    let left = fields_of("Left the bookkeeping in redis")
        .and_then(|f| Some((number(&f, "bytes")?, number(&f, "write_ms")?)));
    Ok(ExclusiveRun {
        rows: field("rows")?,
        index_keys: field("index_keys")?,
        load_ms: field("load_ms")?,
        from: start_up["from"].as_str().unwrap_or("?").to_owned(),
        left,
        estimate: field("memory_bytes")?,
        estimate_ready,
        ready,
        rss_ready,
        rss_max,
        rss_last,
    })
}

/// `VmRSS` of process `pid`, in bytes.
fn resident_bytes(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .context("VmRSS in /proc/PID/status")?;
    Ok(kb * 1024)
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}
