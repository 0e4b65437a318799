//! The shared writer: changes applied by the configuration's generated change script, so
//! that any number of sinks may write one database.
//!
//! - `generate.rs`: the script, `change.lua` after a generated table of the mappings' static
//!   part (key names from [`mapping::layout`], template fields, pre-split templates), so a
//!   change only sends its own data.
//! - `args.rs`: a chunk of changes as the script's ARGV.
//! - [`ChangeScript`]: the script of one configuration with its SHA1, cutting a batch into
//!   chunks and each chunk into one `EVALSHA`.
//! - `writer.rs`: [`ScriptWriter`], a batch as one pipeline of those calls on one
//!   connection, and their replies as the batch's outcome.
//!
//! # Cost
//! One `EVALSHA` applies a *chunk* of up to [`DEFAULT_CHUNK`] consecutive changes of the
//! batch, one after another, each completely before the next, and records freshness (one
//! server `TIME`) and the partitions' offsets once, at the end of the same call. Per-call
//! overhead (script lookup, argument conversion, bookkeeping commands) is paid once per
//! chunk instead of once per change.
//!
//! # Failures
//! Every change in a chunk is atomic by itself: it makes all its reads (and everything that
//! could fail with `WRONGTYPE`) before its first write, so a failing change leaves nothing of
//! itself behind. The script catches its error, puts it in the chunk's reply at the change's
//! place, and goes on with the next change, exactly as a pipeline of one script per change
//! did; its offset is not recorded by the chunk. An error of the whole call (`NOSCRIPT`,
//! `BUSY`, a bookkeeping key of the wrong type) is reported at the chunk's first change. A
//! batch is not a transaction: every change in it is atomic by itself (a chunk is even
//! atomic as a whole), and the pipeline keeps their order, which is what per-partition
//! ordering needs.

mod announce;
mod args;
mod generate;
mod writer;

use mapping::Mapping;
use redis::aio::ConnectionLike;

use super::{ApplyError, Fences, PlannedChange};
pub use announce::{announced_by_another, Announcement};
use args::MappingArgs;
pub(crate) use args::{format_score, relation_score};
pub(crate) use generate::{layout_constants, template_fields};
pub use writer::ScriptWriter;

/// Changes per script call of the shared writer.
pub const DEFAULT_CHUNK: usize = 128;

/// Arguments per script call beyond which a chunk ends early (big rows).
const MAX_CHUNK_ARGS: usize = 16_384;

/// The change script of one configuration: its Lua source and SHA1, and how a batch of
/// changes becomes its calls (chunks of at most `chunk` changes).
#[derive(Debug, Clone)]
pub struct ChangeScript {
    /// `change.lua` after the layout's names and the mappings' static part.
    source: String,
    sha: String,
    mappings: Vec<MappingArgs>,
    chunk: usize,
    /// Whether each call refuses partitions without their self-healing marker.
    guard: bool,
}

impl ChangeScript {
    /// Generates the script of `mappings` (their static part baked in); each call applies at
    /// most `chunk` changes (at least 1).
    pub fn new(mappings: &[Mapping], chunk: usize) -> ChangeScript {
        let source = generate::generate(mappings);
        ChangeScript {
            sha: redis::Script::new(&source).get_hash().to_owned(),
            source,
            mappings: mappings
                .iter()
                .enumerate()
                .map(|(i, m)| MappingArgs::new(i, m))
                .collect(),
            chunk: chunk.max(1),
            guard: false,
        }
    }

    /// The same script whose calls refuse (`BOOKKEEPING` error) a chunk holding a partition
    /// whose self-healing marker in `sink:offsets:run` is gone or names another Redis
    /// server run (ARCHITECTURE.md, *Self-healing*), or (`SUPERSEDED` error) names another
    /// assignment than the one the chunk was read under ([`ChangeScript::command_under`]). For a pipeline whose assignment marks
    /// its partitions (`sink run`); a database that holds no markers by design (a rebuild's
    /// staging database, a test applying directly) keeps the default, unguarded one.
    pub fn guarded(mut self) -> ChangeScript {
        self.guard = true;
        self
    }

    /// SHA1 of the script, as `EVALSHA` takes it.
    pub fn sha(&self) -> &str {
        &self.sha
    }

    /// `batch` cut into the chunks sent as one script call each: at most the chunk size,
    /// fewer when the arguments would exceed 16,384.
    pub fn chunks<'a>(&self, batch: &'a [PlannedChange]) -> Vec<&'a [PlannedChange]> {
        let mut out = Vec::with_capacity(batch.len() / self.chunk + 1);
        let (mut start, mut args) = (0, 0);
        for (i, change) in batch.iter().enumerate() {
            let n = self
                .mappings
                .get(change.mapping)
                .map_or(0, |m| m.arg_count(change));
            if i > start && (i - start == self.chunk || args + n > MAX_CHUNK_ARGS) {
                out.push(&batch[start..i]);
                (start, args) = (i, 0);
            }
            args += n;
        }
        if start < batch.len() {
            out.push(&batch[start..]);
        }
        out
    }

    /// The `EVALSHA` command applying `chunk` (one of [`ChangeScript::chunks`]); its reply
    /// holds one entry per change: 1 applied, 0 no-op, or an error. A guarded script's
    /// command fences no partition (every one refused): see [`ChangeScript::command_under`].
    pub fn command(&self, chunk: &[PlannedChange]) -> Result<redis::Cmd, ApplyError> {
        self.command_under(chunk, &Fences::none())
    }

    /// [`ChangeScript::command`] for a chunk read under `fences`: a guarded script's call
    /// refuses it (`BOOKKEEPING` or `SUPERSEDED` error, nothing written) unless each of its
    /// partitions' markers is the one `fences` names; an unguarded one ignores `fences`.
    pub fn command_under(
        &self,
        chunk: &[PlannedChange],
        fences: &Fences,
    ) -> Result<redis::Cmd, ApplyError> {
        let guard = self.guard.then_some(fences);
        args::chunk_command(&self.sha, &self.mappings, chunk, guard)
    }

    /// Loads the script into the server's script cache (`SCRIPT LOAD`); the writer does on
    /// its first batch and after a `NOSCRIPT`.
    pub async fn load(&self, conn: &mut (impl ConnectionLike + Send)) -> redis::RedisResult<()> {
        let sha: String = redis::cmd("SCRIPT")
            .arg("LOAD")
            .arg(&self.source)
            .query_async(conn)
            .await?;
        debug_assert_eq!(sha, self.sha());
        Ok(())
    }
}
