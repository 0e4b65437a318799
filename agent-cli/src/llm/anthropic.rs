//! Anthropic Messages (`POST {ANTHROPIC_BASE_URL}/v1/messages`). Tools go in `tools` with an
//! `input_schema`; the model asks for them with `tool_use` content blocks (input as a JSON
//! object); the results go back in ONE user message of `tool_result` blocks, in call order,
//! followed by an optional text block (the staleness note).

use serde_json::{json, Value};

use super::{excerpt, send_json, LlmConfig, LlmError, Reply, ToolCall, ToolResult};

const PROVIDER: &str = "Anthropic";
/// The API version header the request format follows.
pub const API_VERSION: &str = "2023-06-01";
/// Upper bound on the answer's length.
const MAX_TOKENS: u32 = 4096;

/// One conversation with a Messages endpoint.
#[derive(Debug, Clone)]
pub struct Conversation {
    url: String,
    api_key: Option<String>,
    model: String,
    system: String,
    tools: Value,
    messages: Vec<Value>,
}

impl Conversation {
    /// Starts with the user's question; `tools` in Anthropic format.
    pub fn new(config: &LlmConfig, system: &str, question: &str, tools: Value) -> Self {
        Conversation {
            url: format!("{}/v1/messages", config.base_url),
            api_key: config.api_key.clone(),
            model: config.model.clone(),
            system: system.to_owned(),
            tools,
            messages: vec![json!({"role": "user", "content": question})],
        }
    }

    /// Sends the conversation so far and records the assistant's reply in it.
    pub async fn ask(&mut self, http: &reqwest::Client) -> Result<Reply, LlmError> {
        let body = json!({
            "model": self.model,
            "max_tokens": MAX_TOKENS,
            "system": self.system,
            "messages": self.messages,
            "tools": self.tools,
        });
        let mut request = http
            .post(&self.url)
            .header("anthropic-version", API_VERSION)
            .json(&body);
        if let Some(key) = &self.api_key {
            request = request.header("x-api-key", key);
        }
        let (reply, text) = send_json(PROVIDER, &self.url, request).await?;
        let content = reply
            .get("content")
            .and_then(Value::as_array)
            .ok_or_else(|| LlmError::BadReply {
                provider: PROVIDER,
                what: format!("no content array in {}", excerpt(&text)),
            })?;
        let parsed = parse_content(content)?;
        self.messages
            .push(json!({"role": "assistant", "content": content}));
        Ok(parsed)
    }

    /// Appends the tool results (in call order) and, if given, a note for the model.
    pub fn add_results(&mut self, results: Vec<ToolResult>, note: Option<String>) {
        let mut blocks: Vec<Value> = results
            .into_iter()
            .map(|r| json!({"type": "tool_result", "tool_use_id": r.id, "content": r.content, "is_error": r.is_error}))
            .collect();
        if let Some(note) = note {
            blocks.push(json!({"type": "text", "text": note}));
        }
        self.messages
            .push(json!({"role": "user", "content": blocks}));
    }

    /// The messages so far (for tests and debugging).
    pub fn messages(&self) -> &[Value] {
        &self.messages
    }
}

fn parse_content(content: &[Value]) -> Result<Reply, LlmError> {
    let mut calls = Vec::new();
    let mut text = Vec::new();
    for block in content {
        match block.get("type").and_then(Value::as_str) {
            Some("tool_use") => {
                let field = |name: &str| {
                    block
                        .get(name)
                        .and_then(Value::as_str)
                        .map(str::to_owned)
                        .ok_or_else(|| LlmError::BadReply {
                            provider: PROVIDER,
                            what: format!("tool_use block without {name}: {block}"),
                        })
                };
                let input = block.get("input").cloned().unwrap_or_else(|| json!({}));
                calls.push(ToolCall {
                    id: field("id")?,
                    name: field("name")?,
                    arguments: input.to_string(),
                });
            }
            Some("text") => text.push(
                block
                    .get("text")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned(),
            ),
            _ => {}
        }
    }
    Ok(if calls.is_empty() {
        Reply::Answer(text.join(""))
    } else {
        Reply::ToolCalls(calls)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tool_use_blocks_are_parsed() {
        let content = [
            json!({"type": "text", "text": "Let me look."}),
            json!({"type": "tool_use", "id": "toolu_1", "name": "get_customer", "input": {"email": "a@b.c"}}),
        ];
        assert_eq!(
            parse_content(&content).unwrap(),
            Reply::ToolCalls(vec![ToolCall {
                id: "toolu_1".into(),
                name: "get_customer".into(),
                arguments: r#"{"email":"a@b.c"}"#.into()
            }])
        );
        assert_eq!(
            parse_content(&[json!({"type": "text", "text": "Hi"})]).unwrap(),
            Reply::Answer("Hi".into())
        );
    }
}
