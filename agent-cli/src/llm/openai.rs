//! OpenAI Chat Completions (`POST {OPENAI_BASE_URL}/chat/completions`), the de facto standard
//! that many servers implement. Tools go in `tools` as `{"type": "function", ...}`; the model
//! asks for them in `message.tool_calls` (arguments as JSON text); each result goes back as a
//! `{"role": "tool", "tool_call_id": ..., "content": ...}` message.

use serde_json::{json, Value};

use super::{excerpt, send_json, LlmConfig, LlmError, Reply, ToolCall, ToolResult};

const PROVIDER: &str = "OpenAI";

/// One conversation with a Chat Completions endpoint.
#[derive(Debug, Clone)]
pub struct Conversation {
    url: String,
    api_key: Option<String>,
    model: String,
    tools: Value,
    messages: Vec<Value>,
}

impl Conversation {
    /// Starts with the system prompt and the user's question; `tools` in OpenAI format.
    pub fn new(config: &LlmConfig, system: &str, question: &str, tools: Value) -> Self {
        Conversation {
            url: format!("{}/chat/completions", config.base_url),
            api_key: config.api_key.clone(),
            model: config.model.clone(),
            tools,
            messages: vec![
                json!({"role": "system", "content": system}),
                json!({"role": "user", "content": question}),
            ],
        }
    }

    /// Sends the conversation so far and records the assistant's reply in it.
    pub async fn ask(&mut self, http: &reqwest::Client) -> Result<Reply, LlmError> {
        let body = json!({
            "model": self.model,
            "messages": self.messages,
            "tools": self.tools,
            "tool_choice": "auto",
        });
        let mut request = http.post(&self.url).json(&body);
        if let Some(key) = &self.api_key {
            request = request.bearer_auth(key);
        }
        let (reply, text) = send_json(PROVIDER, &self.url, request).await?;
        let message = reply
            .pointer("/choices/0/message")
            .ok_or_else(|| LlmError::BadReply {
                provider: PROVIDER,
                what: format!("no choices[0].message in {}", excerpt(&text)),
            })?;
        let (reply, recorded) = parse_message(message)?;
        self.messages.push(recorded);
        Ok(reply)
    }

    /// Appends the tool results (in call order) and, if given, a note for the model.
    pub fn add_results(&mut self, results: Vec<ToolResult>, note: Option<String>) {
        for r in results {
            self.messages
                .push(json!({"role": "tool", "tool_call_id": r.id, "content": r.content}));
        }
        if let Some(note) = note {
            self.messages.push(json!({"role": "user", "content": note}));
        }
    }

    /// The messages so far (for tests and debugging).
    pub fn messages(&self) -> &[Value] {
        &self.messages
    }
}

/// The reply, and the assistant message to keep in the conversation.
fn parse_message(message: &Value) -> Result<(Reply, Value), LlmError> {
    let bad = |what: String| LlmError::BadReply {
        provider: PROVIDER,
        what,
    };
    let content = message
        .get("content")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    let calls = match message.get("tool_calls") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(calls)) => calls.clone(),
        Some(other) => return Err(bad(format!("tool_calls is not an array: {other}"))),
    };
    if calls.is_empty() {
        return Ok((
            Reply::Answer(content.clone()),
            json!({"role": "assistant", "content": content}),
        ));
    }
    let mut parsed = Vec::with_capacity(calls.len());
    for call in &calls {
        let field = |pointer: &str| {
            call.pointer(pointer)
                .and_then(Value::as_str)
                .map(str::to_owned)
                .ok_or_else(|| bad(format!("tool call without {pointer}: {call}")))
        };
        parsed.push(ToolCall {
            id: field("/id")?,
            name: field("/function/name")?,
            arguments: field("/function/arguments")?,
        });
    }
    let recorded = json!({
        "role": "assistant",
        "content": message.get("content").cloned().unwrap_or(Value::Null),
        "tool_calls": calls,
    });
    Ok((Reply::ToolCalls(parsed), recorded))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tool_calls_are_parsed() {
        let message = json!({"role": "assistant", "content": null, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_order", "arguments": "{\"order_id\":3}"}}
        ]});
        let (reply, recorded) = parse_message(&message).unwrap();
        assert_eq!(
            reply,
            Reply::ToolCalls(vec![ToolCall {
                id: "call_1".into(),
                name: "get_order".into(),
                arguments: "{\"order_id\":3}".into()
            }])
        );
        assert_eq!(recorded["tool_calls"][0]["id"], "call_1");
        let (reply, _) = parse_message(&json!({"role": "assistant", "content": "Done."})).unwrap();
        assert_eq!(reply, Reply::Answer("Done.".into()));
        assert!(parse_message(&json!({"tool_calls": [{"id": "x"}]})).is_err());
    }
}
