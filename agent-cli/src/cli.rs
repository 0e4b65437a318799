//! The command line (clap derive) and the subcommands' entry points. Data goes to stdout,
//! diagnostics to stderr; exit codes are documented in [`crate::error`].

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use mapping::lsn::Lsn;
use mapping::{Config, ConnectionOverrides};

use crate::error::Exit;
use crate::llm::{self, chat_loop, Provider};
use crate::lookup::{self, Lookups};
use crate::mcp;
use crate::read_cache;
use crate::reload::Triggers;
use crate::status;
use crate::store::Store;
use crate::tools::{self, Format};
use crate::watermark::ReadAfter;

mod security;

pub use security::RedisSecurityArgs;

/// Lookups over the sink's Redis read model, as LLM tools: print their definitions, call
/// them, answer a question with an LLM, or serve them over MCP.
#[derive(Debug, Parser)]
#[command(name = "agent-cli", version, about, long_about = None)]
pub struct Cli {
    /// The mapping file declaring the lookups (its `redis`, `freshness` and `lookups`).
    #[arg(
        long,
        global = true,
        env = "AGENT_CLI_CONFIG",
        default_value = "connectors.yaml"
    )]
    pub config: PathBuf,

    /// Redis holding the sink's read model [default: `redis.url` of the file].
    #[arg(long, global = true, env = "REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,

    /// Redis credentials and certificates.
    #[command(flatten)]
    pub redis_security: RedisSecurityArgs,

    /// Mark results stale when older than this [default: the mapping's source's
    /// `stale_after_ms`, else `freshness.stale_after_ms` of the file].
    #[arg(long, global = true, env = "AGENT_CLI_STALE_AFTER_MS")]
    pub stale_after_ms: Option<u64>,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the tool definitions as JSON.
    Tools {
        /// The API whose shape to print.
        #[arg(long, value_enum, default_value = "openai")]
        format: Format,
    },
    /// Call one tool and print exactly what the LLM would see:
    /// {"result": ..., "freshness": {"as_of", "lag_ms", "stale", "reason"}}.
    Tool {
        /// Tool name, e.g. `get_customer`.
        name: String,
        /// Arguments as a JSON object, e.g. '{"email": "jane@example.com"}'.
        #[arg(default_value = "{}")]
        args: String,
        /// Read-your-writes (`--after-lsn`, `--wait-ms`).
        #[command(flatten)]
        after: AfterLsn,
    },
    /// Answer one question with an LLM that calls the tools (OpenAI or Anthropic API).
    Query {
        /// The question.
        question: String,
        /// The API [default: the one whose key is set: OPENAI_API_KEY, then ANTHROPIC_API_KEY].
        #[arg(long, value_enum)]
        provider: Option<Provider>,
        /// Model name [default: gpt-4o-mini for OpenAI, claude-sonnet-4-5 for Anthropic].
        #[arg(long, env = "AGENT_CLI_MODEL")]
        model: Option<String>,
        /// Upper bound on requests to the model.
        #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=100))]
        max_rounds: u32,
        /// Print each tool call (arguments, result size, latency) to stderr.
        #[arg(short, long)]
        verbose: bool,
        /// Every tool call reads at least the state of this LSN (see `tool --after-lsn`).
        #[command(flatten)]
        after: AfterLsn,
    },
    /// Serve the tools over MCP on stdin/stdout (logs on stderr). SIGHUP reloads the
    /// configuration: new or changed lookups apply, and the client is told the tools changed.
    Mcp {
        /// Reload the configuration when the file changes, as on SIGHUP.
        #[arg(long, env = "AGENT_CLI_WATCH_CONFIG")]
        watch_config: bool,
        /// Keep up to N answers in memory, each dropped as soon as Redis reports a change of
        /// a key it was read from (RESP3 key tracking; README, "Read cache"); 0 turns the
        /// cache off.
        #[arg(long, value_name = "N", env = "AGENT_CLI_READ_CACHE_ENTRIES", default_value_t = DEFAULT_READ_CACHE_ENTRIES)]
        read_cache_entries: usize,
    },
    /// Freshness of every source (watermark, heartbeat age) and mapping (last change, lag,
    /// applied count, caught-up time).
    Status {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

/// `agent-cli mcp --read-cache-entries` unless given: at a few kB per answer, tens of MB.
const DEFAULT_READ_CACHE_ENTRIES: usize = 10_000;

/// `--after-lsn` and `--wait-ms`.
#[derive(Debug, Clone, clap::Args)]
pub struct AfterLsn {
    /// Wait until the source watermark has passed this PostgreSQL LSN (`0/1A2B3C4`, from
    /// `SELECT pg_current_wal_lsn()` after the commit), then answer; after `--wait-ms` answer
    /// anyway with `stale: true` and a reason (exit code 0).
    #[arg(long, value_name = "PG_LSN")]
    pub after_lsn: Option<Lsn>,
    /// How long `--after-lsn` waits, in milliseconds.
    #[arg(long, value_name = "N", default_value_t = tools::DEFAULT_WAIT.as_millis() as u64, requires = "after_lsn")]
    pub wait_ms: u64,
}

impl AfterLsn {
    fn read_after(&self) -> Option<ReadAfter> {
        self.after_lsn.map(|lsn| ReadAfter {
            lsn,
            wait: Duration::from_millis(self.wait_ms),
        })
    }
}

/// Parses the command line, runs, and turns the outcome into an exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(matches!(cli.command, Command::Mcp { .. }));
    // One thread for every command, the MCP server included: a lookup is one Redis round trip
    // and microseconds of CPU, so concurrent calls interleave while they wait for Redis, and a
    // thread pool's cross-thread wake-ups made each call 3.6x slower under load
    // (BENCHMARKS.md, "In-process lookups vs pooled PostgreSQL").
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("agent-cli: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(exit) => {
            if is_broken_pipe(&exit.error) {
                return ExitCode::SUCCESS;
            }
            eprintln!("agent-cli: {}", chain(&exit.error));
            exit.exit_code()
        }
    }
}

fn init_logging(for_mcp: bool) {
    let default = if for_mcp {
        "agent_cli=info,rmcp=warn"
    } else {
        "warn"
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Runs the parsed command.
pub async fn run(cli: Cli) -> Result<(), Exit> {
    let config = load(&cli)?;
    match &cli.command {
        Command::Tools { format } => print_json(&tools::definitions(&config, *format)),
        Command::Tool { name, args, after } => {
            // Reject bad arguments before touching Redis (exit 2 even when it is down).
            crate::args::parse(&config, name, args).map_err(Exit::usage)?;
            let lookups = connect(&cli, config).await?.read_after(after.read_after());
            let output = lookups.call(name, args).await?;
            print_line(&output.to_json())
        }
        Command::Query {
            question,
            provider,
            model,
            max_rounds,
            verbose,
            after,
        } => {
            let llm = llm::configure(*provider, model.clone(), |k| std::env::var(k).ok())
                .map_err(Exit::usage)?;
            let lookups = connect(&cli, config).await?.read_after(after.read_after());
            let options = chat_loop::QueryOptions {
                max_rounds: *max_rounds,
                verbose: *verbose,
            };
            let answer = chat_loop::run(&lookups, &llm, question, &options)
                .await
                .map_err(|e| Exit {
                    code: e.exit_code(),
                    error: e.into(),
                })?;
            print_line(answer.trim_end())
        }
        Command::Mcp {
            watch_config,
            read_cache_entries,
        } => {
            let store = Store::connect_managed(&config.redis).await?;
            let mut lookups = Lookups::new(Arc::clone(&config), store, cli.stale_after_ms);
            if *read_cache_entries > 0 {
                let cache = lookup::answer_cache(&config, *read_cache_entries);
                read_cache::tracking::spawn(&config.redis, cache.clone())?;
                lookups = lookups.with_cache(cache);
            }
            let triggers = Triggers::listen(watch_config.then_some(cli.config.as_path()))
                .map_err(Exit::failure)?;
            let (path, overrides) = (cli.config.clone(), overrides(&cli));
            let reloads = mcp::Reloads {
                triggers,
                load: Box::new(move || mapping::load_config(&path, &overrides)),
            };
            mcp::Server::new(lookups)
                .serve_stdio(reloads)
                .await
                .map_err(Exit::failure)
        }
        Command::Status { json } => {
            let lookups = connect(&cli, config).await?;
            let statuses = status::collect(&lookups).await?;
            if *json {
                print_json(&serde_json::json!({
                    "stale_after_ms": lookups.stale_after_ms(),
                    "sources": statuses.sources,
                    "mappings": statuses.mappings,
                }))
            } else {
                print_text(&status::table(&statuses, lookups.stale_after_ms()))
            }
        }
    }
}

fn load(cli: &Cli) -> Result<Arc<Config>, Exit> {
    mapping::load_config(&cli.config, &overrides(cli))
        .map(Arc::new)
        .map_err(|errors| Exit::usage(anyhow::anyhow!("invalid configuration:\n{errors}")))
}

/// The connection settings the command line gives.
fn overrides(cli: &Cli) -> ConnectionOverrides {
    ConnectionOverrides {
        redis_url: cli.redis_url.clone(),
        security: (&cli.redis_security).into(),
        ..Default::default()
    }
}

async fn connect(cli: &Cli, config: Arc<Config>) -> Result<Lookups, Exit> {
    let store = Store::connect(&config.redis).await?;
    Ok(Lookups::new(config, store, cli.stale_after_ms))
}

fn print_json(value: &serde_json::Value) -> Result<(), Exit> {
    let text = serde_json::to_string_pretty(value)
        .context("cannot serialise JSON")
        .map_err(Exit::failure)?;
    print_line(&text)
}

fn print_line(text: &str) -> Result<(), Exit> {
    print_text(&format!("{text}\n"))
}

fn print_text(text: &str) -> Result<(), Exit> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .context("cannot write to stdout")
        .map_err(Exit::failure)
}

/// The error and its causes, `: `-separated, leaving out a cause whose text the previous
/// message already ends with (some libraries repeat their source in their own message).
fn chain(err: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if out.ends_with(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain()
        .filter_map(|e| e.downcast_ref::<std::io::Error>())
        .any(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
}
