//! What every bench binary shares: its `main` (logging, runtime, error report), its command
//! line as `cargo bench` passes it, and Redis's CPU counter the benches report per change.

use std::ffi::OsString;
use std::future::Future;
use std::process::ExitCode;

use tracing_subscriber::EnvFilter;

/// The bench's command line, parsed by `P`. `cargo bench` appends `--bench` to the
/// arguments after `--`; the benches have flags of their own, so they drop it rather than
/// accept a flag that means nothing to them. Help and errors name the bench by its command
/// name, not by the hashed file name cargo gives the executable.
pub fn args<P: clap::Parser>() -> P {
    let name = OsString::from(P::command().get_name());
    let given = std::env::args_os().skip(1).filter(|arg| arg != "--bench");
    P::parse_from(std::iter::once(name).chain(given))
}

/// `main` of a bench binary: logs (`RUST_LOG`, default `warn`) to stderr, runs `bench` on a
/// multi-threaded runtime, and prints `{name}: {err:#}` on failure.
pub fn run<F>(name: &str, bench: F) -> ExitCode
where
    F: Future<Output = anyhow::Result<()>>,
{
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("{name}: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(bench) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("{name}: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Redis server CPU seconds so far (`INFO cpu`: user + sys, reading and parsing commands
/// included), for benchmarks that compare work per change.
pub async fn redis_cpu_seconds(url: &str) -> anyhow::Result<f64> {
    let client = redis::Client::open(url)?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    let info: String = redis::cmd("INFO").arg("cpu").query_async(&mut conn).await?;
    let mut cpu = 0.0;
    for line in info.lines() {
        if let Some(v) = line
            .strip_prefix("used_cpu_sys:")
            .or_else(|| line.strip_prefix("used_cpu_user:"))
        {
            cpu += v.trim().parse::<f64>()?;
        }
    }
    Ok(cpu)
}

/// CPU seconds this process has used so far (user + system, every thread), from
/// `/proc/self/stat`: for benches that run the sink in process and report its CPU per
/// change, which a shared machine disturbs far less than its wall time. Linux reports these
/// in ticks of `USER_HZ`, fixed at 100 per second for every architecture's `/proc` ABI.
pub fn process_cpu_seconds() -> anyhow::Result<f64> {
    const USER_HZ: f64 = 100.0;
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    // The command name (field 2) is in parentheses and may hold spaces: count after it.
    let after_name = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .ok_or_else(|| anyhow::anyhow!("/proc/self/stat has no command name: {stat}"))?;
    // Fields 3.. follow; utime and stime are fields 14 and 15.
    let mut fields = after_name.split_whitespace().skip(11);
    let mut ticks = |name: &str| -> anyhow::Result<f64> {
        let field = fields
            .next()
            .ok_or_else(|| anyhow::anyhow!("/proc/self/stat has no {name}: {stat}"))?;
        Ok(field.parse::<u64>()? as f64)
    };
    let user = ticks("utime")?;
    let system = ticks("stime")?;
    Ok((user + system) / USER_HZ)
}
