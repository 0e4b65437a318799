//! The `sink` binary: parses the command line and hands over to [`sink::run`].
//!
//! Exit codes: 0 success (also after SIGINT/SIGTERM, and when stdout is a closed pipe),
//! 1 runtime failure, 2 bad configuration or usage.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use sink::config::{Cli, Command, SinkConfig};
use sink::consume::StopWhen;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

/// mimalloc instead of the system allocator: decoding and planning allocate many small,
/// short-lived values, and glibc's allocator spent about a third of the rebuild's CPU on them
/// (BENCHMARKS.md, "Rebuild speed"). The benches declare the same allocator, so they measure
/// what this binary runs; the tests keep the system allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Runtime failure.
const EXIT_FAILURE: u8 = 1;
/// Bad configuration or usage (clap uses 2 for usage errors too).
const EXIT_CONFIG: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    match cli.command {
        Command::Validate(args) => match sink::run::validate(&args) {
            Ok(summary) => print_stdout(&summary),
            Err(errors) => {
                eprintln!("{errors}");
                ExitCode::from(EXIT_CONFIG)
            }
        },
        Command::Rebuild(args) => sink::rebuild::cli(&args),
        Command::Run(args) => {
            let cfg = match SinkConfig::load(&args.config, args.batch.into()) {
                Ok(cfg) => cfg.with_writer(args.writer()),
                Err(errors) => {
                    eprintln!("{errors}");
                    return ExitCode::from(EXIT_CONFIG);
                }
            };
            match run(&cfg) {
                Ok(()) => ExitCode::SUCCESS,
                Err(err) => {
                    eprintln!("sink: {err:#}");
                    ExitCode::from(EXIT_FAILURE)
                }
            }
        }
    }
}

/// `sink run`: consumes until SIGINT or SIGTERM.
fn run(cfg: &SinkConfig) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let shutdown = CancellationToken::new();
        tokio::spawn(cancel_on_signal(shutdown.clone()));
        sink::run::run(cfg, StopWhen::Shutdown, shutdown).await?;
        Ok(())
    })
}

/// Cancels `shutdown` at the first SIGINT or SIGTERM.
async fn cancel_on_signal(shutdown: CancellationToken) {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "Cannot listen for SIGTERM.");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
    tracing::info!("Shutting down.");
    shutdown.cancel();
}

/// Logs to stderr; `RUST_LOG` filters (default `info`).
fn init_tracing() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
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
