//! Error types of agent-cli, one per subsystem, and the exit codes they map to.
//!
//! Exit codes of the binary:
//! - `0`: success, including a lookup that found nothing (`"result": null`);
//! - `1`: the data could not be read: Redis unreachable or failing, malformed data in Redis,
//!   an LLM API that failed or misbehaved;
//! - `2`: the request was wrong: unknown tool, missing or ill-typed argument, invalid
//!   `connectors.yaml`, no LLM configured (clap's own usage errors exit 2 as well).

use std::process::ExitCode;

/// Exit code for "the request was wrong".
pub const EXIT_USAGE: u8 = 2;
/// Exit code for "the data could not be read".
pub const EXIT_FAILURE: u8 = 1;

/// A tool call whose name or arguments are not acceptable. Messages are written for the
/// person or model who made the call: they say what to change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArgError {
    /// No lookup declares this tool.
    #[error("unknown tool `{tool}` (available: {available})")]
    UnknownTool { tool: String, available: String },
    /// The arguments are not JSON at all.
    #[error("arguments of `{tool}` are not valid JSON: {reason}")]
    NotJson { tool: String, reason: String },
    /// The arguments are JSON but not an object.
    #[error("arguments of `{tool}` must be a JSON object, got {got}")]
    NotObject { tool: String, got: &'static str },
    /// A key that is not a parameter of the tool.
    #[error("`{tool}` has no parameter `{param}` (parameters: {expected})")]
    UnknownParam {
        tool: String,
        param: String,
        expected: String,
    },
    /// None of the alternative parameters was given.
    #[error("`{tool}` needs {expected}, got none")]
    Missing { tool: String, expected: String },
    /// More than one of the alternative parameters was given.
    #[error("`{tool}` needs {expected}, got {given}")]
    Ambiguous {
        tool: String,
        expected: String,
        given: String,
    },
    /// A value of the wrong JSON type.
    #[error("`{tool}`: parameter `{param}` must be {expected}, got {got}")]
    WrongType {
        tool: String,
        param: String,
        expected: &'static str,
        got: String,
    },
    /// A string parameter that is empty.
    #[error("`{tool}`: parameter `{param}` must not be empty")]
    Empty { tool: String, param: String },
    /// A string parameter that is too long.
    #[error("`{tool}`: parameter `{param}` is longer than {max} characters")]
    TooLong {
        tool: String,
        param: String,
        max: usize,
    },
    /// A string parameter containing a character that could address other keys.
    #[error("`{tool}`: parameter `{param}` must not contain {what}")]
    ForbiddenChar {
        tool: String,
        param: String,
        what: String,
    },
    /// A limit outside `1..=max`.
    #[error("`{tool}`: parameter `{param}` must be between 1 and {max}, got {got}")]
    OutOfRange {
        tool: String,
        param: String,
        max: u32,
        got: String,
    },
    /// A range bound that is not an RFC 3339 time.
    #[error("`{tool}`: parameter `{param}` must be an RFC 3339 time such as 2026-11-24T00:00:00Z, got {got} ({reason})")]
    BadTime {
        tool: String,
        param: String,
        got: String,
        reason: String,
    },
}

/// A declared lookup whose keys cannot be derived from its templates. `mapping` validates
/// lookups at load time, so this means the two disagree; it is reported, never guessed at.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// A `range` on a relation whose `order_by` field the sink recorded with a type that is no
    /// time: the RFC 3339 bounds would be compared with its plain numbers.
    #[error("lookup `{tool}`: `range` needs a timestamp or date `order_by`, but field `{field}` of mapping `{mapping}` holds {found} values")]
    RangeNeedsTime {
        tool: String,
        mapping: String,
        field: String,
        found: mapping::ColumnType,
    },
    /// The lookup names an index the mapping does not declare.
    #[error("lookup `{tool}`: mapping `{mapping}` has no index `{index}`")]
    UnknownIndex {
        tool: String,
        mapping: String,
        index: String,
    },
    /// The lookup names a relation the mapping does not declare.
    #[error("lookup `{tool}`: mapping `{mapping}` has no relation `{relation}`")]
    UnknownRelation {
        tool: String,
        mapping: String,
        relation: String,
    },
    /// A template that a single parameter value (or primary key) cannot fill.
    #[error("lookup `{tool}`: key template `{template}` must have exactly one field to be filled by {what}")]
    NotSingleField {
        tool: String,
        template: String,
        what: &'static str,
    },
}

/// Reading from Redis failed, or what was read does not follow the layout in ARCHITECTURE.md.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The connection could not be established.
    #[error("cannot connect to redis at {url}")]
    Connect {
        url: String,
        #[source]
        source: redis::RedisError,
    },
    /// No client for the configuration (URL, certificate files).
    #[error("cannot connect to redis at {url}")]
    Client {
        url: String,
        #[source]
        source: redis_connect::ClientError,
    },
    /// A command failed (I/O, timeout, server error).
    #[error("redis {what} failed")]
    Command {
        what: String,
        #[source]
        source: redis::RedisError,
    },
    /// The reply or a stored value does not have the documented shape.
    #[error("malformed data in redis: {0}")]
    Malformed(String),
}

/// Why a tool call failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// Bad tool name or arguments (exit 2).
    #[error(transparent)]
    Args(#[from] ArgError),
    /// The lookup's templates do not fit (exit 2: fix `connectors.yaml`).
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// Redis unreachable or data malformed (exit 1).
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl CallError {
    /// The exit code the binary uses for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            CallError::Args(_) | CallError::Plan(_) => EXIT_USAGE,
            CallError::Store(_) => EXIT_FAILURE,
        }
    }
}

/// An error that carries its exit code up to `main`.
#[derive(Debug)]
pub struct Exit {
    /// The process exit code.
    pub code: u8,
    /// What went wrong, with context.
    pub error: anyhow::Error,
}

impl Exit {
    /// A usage error (exit 2).
    pub fn usage(error: impl Into<anyhow::Error>) -> Self {
        Exit {
            code: EXIT_USAGE,
            error: error.into(),
        }
    }

    /// A failure to read or to talk to a service (exit 1).
    pub fn failure(error: impl Into<anyhow::Error>) -> Self {
        Exit {
            code: EXIT_FAILURE,
            error: error.into(),
        }
    }

    /// The process exit code.
    pub fn exit_code(&self) -> ExitCode {
        ExitCode::from(self.code)
    }
}

impl From<CallError> for Exit {
    fn from(err: CallError) -> Self {
        Exit {
            code: err.exit_code(),
            error: err.into(),
        }
    }
}

impl From<StoreError> for Exit {
    fn from(err: StoreError) -> Self {
        Exit::failure(err)
    }
}
