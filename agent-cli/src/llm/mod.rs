//! The one-shot function-calling loop of `agent-cli query`, over plain HTTP (reqwest): the
//! OpenAI Chat Completions API (and compatible servers) and the Anthropic Messages API.
//!
//! - [`chat_loop`]: the loop itself: ask, run the requested lookups, answer, until the model
//!   gives a final answer or the round budget is spent.
//! - [`openai`], [`anthropic`]: one conversation per API: request bodies, reply parsing and
//!   how tool results go back.
//!
//! Configuration comes from the environment like the vendors' own SDKs: `OPENAI_API_KEY`,
//! `OPENAI_BASE_URL` (default `https://api.openai.com/v1`), `ANTHROPIC_API_KEY`,
//! `ANTHROPIC_BASE_URL` (default `https://api.anthropic.com`).

pub mod anthropic;
pub mod chat_loop;
pub mod openai;

use std::time::Duration;

/// Which API to talk to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Provider {
    /// OpenAI Chat Completions, or any compatible server (`OPENAI_BASE_URL`).
    Openai,
    /// Anthropic Messages (`ANTHROPIC_BASE_URL`).
    Anthropic,
}

impl Provider {
    /// Model used when `--model` is not given.
    pub const fn default_model(self) -> &'static str {
        match self {
            Provider::Openai => "gpt-4o-mini",
            Provider::Anthropic => "claude-sonnet-4-5",
        }
    }

    /// Base URL used when the environment does not set one.
    pub const fn default_base_url(self) -> &'static str {
        match self {
            Provider::Openai => "https://api.openai.com/v1",
            Provider::Anthropic => "https://api.anthropic.com",
        }
    }
}

/// A configured LLM endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LlmConfig {
    /// The API.
    pub provider: Provider,
    /// Base URL without a trailing slash.
    pub base_url: String,
    /// API key (`None` only for an OpenAI-compatible server at an explicit `OPENAI_BASE_URL`).
    pub api_key: Option<String>,
    /// Model name.
    pub model: String,
    /// Per-request timeout.
    pub timeout: Duration,
}

/// Errors of the query loop.
#[derive(Debug, thiserror::Error)]
pub enum LlmError {
    /// Neither `--provider` plus its key nor any key in the environment.
    #[error("no LLM configured: {0}")]
    NotConfigured(String),
    /// The request could not be sent or the reply not read.
    #[error("{provider} request to {url} failed")]
    Http {
        provider: &'static str,
        url: String,
        #[source]
        source: reqwest::Error,
    },
    /// The API answered with an error status.
    #[error("{provider} API at {url} answered {status}: {body}")]
    Api {
        provider: &'static str,
        url: String,
        status: u16,
        body: String,
    },
    /// The reply does not have the documented shape.
    #[error("unexpected {provider} reply: {what}")]
    BadReply {
        provider: &'static str,
        what: String,
    },
    /// The model kept calling tools.
    #[error("no final answer after {0} rounds (raise --max-rounds)")]
    TooManyRounds(u32),
    /// Reading Redis failed during a tool call.
    #[error("tool `{tool}` failed")]
    Tool {
        tool: String,
        #[source]
        source: crate::error::StoreError,
    },
}

impl LlmError {
    /// Exit code: 2 when nothing is configured, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            LlmError::NotConfigured(_) => crate::error::EXIT_USAGE,
            _ => crate::error::EXIT_FAILURE,
        }
    }
}

/// Picks the provider and endpoint: `--provider` if given, else the first API whose key is
/// set (OpenAI first), else an OpenAI-compatible server named by `OPENAI_BASE_URL` alone.
/// `env` reads an environment variable (injected for tests).
pub fn configure(
    provider: Option<Provider>,
    model: Option<String>,
    env: impl Fn(&str) -> Option<String>,
) -> Result<LlmConfig, LlmError> {
    let var = |name: &str| env(name).filter(|v| !v.trim().is_empty());
    let openai_key = var("OPENAI_API_KEY");
    let anthropic_key = var("ANTHROPIC_API_KEY");
    let openai_base = var("OPENAI_BASE_URL");
    let anthropic_base = var("ANTHROPIC_BASE_URL");
    let provider = match provider {
        Some(p) => p,
        None if openai_key.is_some() => Provider::Openai,
        None if anthropic_key.is_some() => Provider::Anthropic,
        None if openai_base.is_some() => Provider::Openai,
        None => {
            return Err(LlmError::NotConfigured(
                "set OPENAI_API_KEY (optionally OPENAI_BASE_URL for a compatible server) or ANTHROPIC_API_KEY".into(),
            ))
        }
    };
    let (api_key, base_url) = match provider {
        Provider::Openai => {
            if openai_key.is_none() && openai_base.is_none() {
                return Err(LlmError::NotConfigured(
                    "--provider openai needs OPENAI_API_KEY (or OPENAI_BASE_URL of a server without keys)".into(),
                ));
            }
            (openai_key, openai_base)
        }
        Provider::Anthropic => {
            if anthropic_key.is_none() {
                return Err(LlmError::NotConfigured(
                    "--provider anthropic needs ANTHROPIC_API_KEY".into(),
                ));
            }
            (anthropic_key, anthropic_base)
        }
    };
    let base_url = base_url.unwrap_or_else(|| provider.default_base_url().to_owned());
    Ok(LlmConfig {
        provider,
        base_url: base_url.trim_end_matches('/').to_owned(),
        api_key,
        model: model.unwrap_or_else(|| provider.default_model().to_owned()),
        timeout: Duration::from_secs(120),
    })
}

/// A tool call requested by the model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolCall {
    /// The API's id for the call, echoed with the result.
    pub id: String,
    /// Tool name.
    pub name: String,
    /// Arguments as JSON text.
    pub arguments: String,
}

/// What the model answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// The final answer.
    Answer(String),
    /// Tool calls to run before asking again.
    ToolCalls(Vec<ToolCall>),
}

/// The result of one tool call, as sent back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolResult {
    /// The call's id.
    pub id: String,
    /// Exactly what `agent-cli tool` prints (or `{"error": ...}` for a rejected call).
    pub content: String,
    /// The call was rejected (bad arguments).
    pub is_error: bool,
}

/// Sends `request` (a JSON POST to `url`) and returns the reply parsed as JSON with its raw
/// text (for excerpts in the caller's own errors). A transport failure is [`LlmError::Http`],
/// a non-2xx status [`LlmError::Api`], a body that is not JSON [`LlmError::BadReply`].
pub(crate) async fn send_json(
    provider: &'static str,
    url: &str,
    request: reqwest::RequestBuilder,
) -> Result<(serde_json::Value, String), LlmError> {
    let http_err = |source| LlmError::Http {
        provider,
        url: url.to_owned(),
        source,
    };
    let response = request.send().await.map_err(http_err)?;
    let status = response.status();
    let text = response.text().await.map_err(http_err)?;
    if !status.is_success() {
        return Err(LlmError::Api {
            provider,
            url: url.to_owned(),
            status: status.as_u16(),
            body: excerpt(&text),
        });
    }
    let reply = serde_json::from_str(&text).map_err(|e| LlmError::BadReply {
        provider,
        what: format!("not JSON ({e}): {}", excerpt(&text)),
    })?;
    Ok((reply, text))
}

/// Shortens an error body for messages.
pub(crate) fn excerpt(body: &str) -> String {
    let mut s: String = body.chars().take(500).collect();
    if s.len() < body.len() {
        s.push_str("...");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    #[test]
    fn provider_follows_the_keys() {
        assert!(matches!(
            configure(None, None, env_of(&[])),
            Err(LlmError::NotConfigured(_))
        ));
        let c = configure(None, None, env_of(&[("ANTHROPIC_API_KEY", "k")])).unwrap();
        assert_eq!(
            (c.provider, c.base_url.as_str()),
            (Provider::Anthropic, "https://api.anthropic.com")
        );
        let c = configure(
            None,
            None,
            env_of(&[("ANTHROPIC_API_KEY", "k"), ("OPENAI_API_KEY", "o")]),
        )
        .unwrap();
        assert_eq!(c.provider, Provider::Openai);
        let c = configure(
            Some(Provider::Anthropic),
            Some("m".into()),
            env_of(&[
                ("ANTHROPIC_API_KEY", "k"),
                ("ANTHROPIC_BASE_URL", "http://x/"),
            ]),
        )
        .unwrap();
        assert_eq!((c.base_url.as_str(), c.model.as_str()), ("http://x", "m"));
        assert!(configure(
            Some(Provider::Anthropic),
            None,
            env_of(&[("OPENAI_API_KEY", "o")])
        )
        .is_err());
        let c = configure(
            None,
            None,
            env_of(&[("OPENAI_BASE_URL", "http://127.0.0.1:1/v1")]),
        )
        .unwrap();
        assert_eq!((c.provider, c.api_key), (Provider::Openai, None));
    }
}
