//! The `sink` binary: parses the command line ([`sink::cli`]), then runs the subcommand on a
//! tokio runtime whose shutdown token SIGINT and SIGTERM cancel ([`sink::shutdown`]; SIGHUP
//! reloads `sink run`'s configuration, [`sink::reload`]), and turns its outcome into text and
//! an exit code.
//!
//! Exit codes: 0 success (also after SIGINT/SIGTERM for `run`, and when stdout is a closed
//! pipe), 1 runtime failure (for `rebuild`: also when interrupted; the live state is then
//! unchanged), 2 bad configuration or usage (for `run`: also an exclusive writer's
//! bookkeeping above `--max-writer-memory`, a Redis whose `maxmemory-policy` may evict the
//! sink's keys, a `--metrics-addr` that cannot be bound).

use std::future::Future;
use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use mapping::{one_line, ConfigErrors};
use sink::cli::{Cli, Command, LogFormat, RebuildArgs, RunArgs};
use sink::pipeline::StopWhen;
use sink::rebuild::RebuildOptions;
use sink::reload::Triggers;
use sink::telemetry::{exporter, server::MetricsServer};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

/// mimalloc instead of the system allocator: decoding and planning allocate many small,
/// short-lived values, and glibc's allocator spent about a third of the rebuild's CPU on them
/// (BENCHMARKS.md, "Rebuild speed"). Built to override `malloc` too (the workspace's
/// `Cargo.toml`), so that librdkafka's buffers live in the same heap, whose freed pages go
/// back to the system; glibc's arenas kept the peak of librdkafka's prefetch. The benches
/// declare the same allocator, so they measure what this binary runs; the tests keep the
/// system allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Runtime failure.
const EXIT_FAILURE: u8 = 1;
/// Bad configuration or usage (clap uses 2 for usage errors too).
const EXIT_CONFIG: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.log_format);
    match cli.command {
        Command::Validate(args) => match sink::validate::validate(&args) {
            Ok(summary) => print_stdout(&summary),
            Err(errors) => bad_config(&errors),
        },
        Command::Run(args) => run(&args),
        Command::Rebuild(args) => rebuild(&args),
    }
}

/// `sink run`: consumes until SIGINT or SIGTERM, reloading the configuration on SIGHUP (and,
/// with `--watch-config`, when the file changes). A metrics address that cannot be bound is
/// a configuration error, found before any service is contacted.
fn run(args: &RunArgs) -> ExitCode {
    let cfg = match args.load() {
        Ok(cfg) => cfg,
        Err(errors) => return bad_config(&errors),
    };
    let metrics = match args.metrics_addr.as_deref().map(metrics_server).transpose() {
        Ok(metrics) => metrics,
        Err(err) => {
            eprintln!("sink: {err:#}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let result = with_runtime(|shutdown| async move {
        let watch = args.watch_config.then_some(args.config.config.as_path());
        let triggers = Triggers::listen(watch)?;
        anyhow::Ok(
            sink::run::run_reloading(
                &cfg,
                || args.load(),
                triggers,
                StopWhen::Shutdown,
                shutdown,
                metrics,
            )
            .await,
        )
    });
    match result.and_then(|outcome| outcome) {
        Ok(Ok(_summary)) => ExitCode::SUCCESS,
        Ok(Err(err)) if err.is_config() || err.is_refusal() => {
            eprintln!("sink: {:#}", anyhow::Error::from(err));
            ExitCode::from(EXIT_CONFIG)
        }
        Ok(Err(err)) => failure(&anyhow::Error::from(err)),
        Err(err) => failure(&err),
    }
}

/// Installs the Prometheus recorder and binds `addr` to serve it.
fn metrics_server(addr: &str) -> anyhow::Result<MetricsServer> {
    let handle = exporter::install()?;
    Ok(MetricsServer::bind(addr, handle)?)
}

/// `sink rebuild`: replays and swaps, then prints the report. A staging database that is
/// the live one is a usage error; any other failure leaves the live state unchanged.
fn rebuild(args: &RebuildArgs) -> ExitCode {
    let cfg = match args.load() {
        Ok(cfg) => cfg,
        Err(errors) => return bad_config(&errors),
    };
    let options = RebuildOptions::from(args);
    let result =
        with_runtime(
            |shutdown| async move { sink::rebuild::rebuild(&cfg, &options, shutdown).await },
        );
    match result {
        Ok(Ok(report)) => print_stdout(&report.to_string()),
        Ok(Err(err)) if err.is_usage() => {
            eprintln!("sink: {err}");
            ExitCode::from(EXIT_CONFIG)
        }
        Ok(Err(err)) => {
            eprintln!("sink: rebuild failed: {}", one_line(&err));
            ExitCode::from(EXIT_FAILURE)
        }
        Err(err) => failure(&err),
    }
}

/// Runs `work` to completion on a multi-threaded runtime, with a shutdown token that the
/// first SIGINT or SIGTERM cancels.
fn with_runtime<F: Future>(work: impl FnOnce(CancellationToken) -> F) -> anyhow::Result<F::Output> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| anyhow::Error::new(e).context("cannot start the async runtime"))?;
    Ok(runtime.block_on(async {
        let shutdown = CancellationToken::new();
        tokio::spawn(sink::shutdown::cancel_on_signal(shutdown.clone()));
        work(shutdown).await
    }))
}

/// Prints the configuration errors, one per line; exit code 2.
fn bad_config(errors: &ConfigErrors) -> ExitCode {
    eprintln!("{errors}");
    ExitCode::from(EXIT_CONFIG)
}

/// Prints `err` with its causes; exit code 1.
fn failure(err: &anyhow::Error) -> ExitCode {
    eprintln!("sink: {err:#}");
    ExitCode::from(EXIT_FAILURE)
}

/// Logs to stderr as `format` says; `RUST_LOG` filters (default `info`).
fn init_tracing(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().init(),
    }
}

/// Prints data; a closed pipe is not an error.
fn print_stdout(text: &str) -> ExitCode {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sink: cannot write to stdout: {e}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}
