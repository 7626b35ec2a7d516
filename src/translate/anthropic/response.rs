//! Anthropic Messages JSON response → one `chat.completion` JSON.

use bytes::BytesMut;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{WireUsage, finish_reason, openai_error, parse_error};
use crate::translate::Translate;
use crate::translate::chat::{Choice, Completion, Function, Message, ToolCall};

/// A Messages response far larger than any real one is not held: the client gets an error.
const MAX_BODY_BYTES: usize = 32 * 1024 * 1024;

/// Collects an Anthropic JSON body and emits the `chat.completion` at the end (a JSON value
/// cannot be converted before it is complete).
#[derive(Debug)]
pub struct ToChatJson {
    model: String,
    created: i64,
    body: Vec<u8>,
    too_large: bool,
    /// Answer a call as the legacy `function_call` (the request declared `functions`).
    functions: bool,
}

impl ToChatJson {
    /// `client_model` is the model the client asked for; OpenAI echoes it back.
    pub fn new(client_model: &str) -> ToChatJson {
        ToChatJson::with_created(client_model, jiff::Timestamp::now().as_second())
    }

    /// As [`ToChatJson::new`], with a fixed `created` (Unix seconds).
    pub fn with_created(client_model: &str, created_unix: i64) -> ToChatJson {
        ToChatJson {
            model: client_model.to_owned(),
            created: created_unix,
            body: Vec::new(),
            too_large: false,
            functions: false,
        }
    }

    /// For a request that declared legacy `functions`: the first call goes back as
    /// `function_call`, with `finish_reason: "function_call"` (the legacy API has one call).
    pub fn with_functions(mut self, functions: bool) -> ToChatJson {
        self.functions = functions;
        self
    }

    fn convert(&self) -> Value {
        if self.too_large {
            return server_error("the upstream response was too large to translate");
        }
        if let Some(error) = parse_error(&self.body) {
            return json!({ "error": openai_error(&error, None) });
        }
        let message: WireMessage = match serde_json::from_slice(&self.body) {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, "unreadable Anthropic response body");
                return server_error("the upstream response could not be read");
            }
        };
        let mut text: Option<String> = None;
        let mut reasoning: Option<String> = None;
        let mut tool_calls = Vec::new();
        for block in message.content {
            match block {
                Block::Text { text: t } => text.get_or_insert_with(String::new).push_str(&t),
                Block::Thinking { thinking } => reasoning
                    .get_or_insert_with(String::new)
                    .push_str(&thinking),
                Block::ToolUse { id, name, input } => tool_calls.push(ToolCall {
                    index: None,
                    id,
                    kind: "function",
                    function: Function {
                        name,
                        arguments: input.to_string(),
                    },
                }),
                Block::Other => {}
            }
        }
        // OpenAI leaves `content` null only beside tool calls; an empty answer is "".
        if tool_calls.is_empty() {
            text.get_or_insert_with(String::new);
        }
        let mut finish = finish_reason(message.stop_reason.as_deref().unwrap_or(""));
        let function_call = if self.functions {
            let first = tool_calls.drain(..).next().map(|call| call.function);
            if first.is_some() && finish == "tool_calls" {
                finish = "function_call";
            }
            first
        } else {
            None
        };
        let completion = Completion {
            id: format!("chatcmpl-{}", message.id),
            object: "chat.completion",
            created: self.created,
            model: &self.model,
            choices: vec![Choice {
                index: 0,
                message: Message {
                    role: "assistant",
                    content: text,
                    reasoning_content: reasoning,
                    refusal: None,
                    tool_calls,
                    function_call,
                },
                logprobs: None,
                finish_reason: finish,
            }],
            usage: message.usage.unwrap_or_default().to_chat(),
        };
        serde_json::to_value(completion)
            .unwrap_or_else(|_| server_error("the response could not be encoded"))
    }
}

fn server_error(message: &str) -> Value {
    json!({ "error": { "message": message, "type": "server_error", "param": null, "code": null } })
}

impl Translate for ToChatJson {
    fn feed(&mut self, chunk: &[u8], _out: &mut BytesMut) {
        if self.too_large {
            return;
        }
        if self.body.len() + chunk.len() > MAX_BODY_BYTES {
            self.too_large = true;
            self.body = Vec::new();
            return;
        }
        self.body.extend_from_slice(chunk);
    }

    fn finish(&mut self, out: &mut BytesMut) {
        out.extend_from_slice(self.convert().to_string().as_bytes());
        self.body = Vec::new();
    }
}

/// The parts of a Messages response that the chat completion carries.
#[derive(Deserialize)]
struct WireMessage {
    id: String,
    content: Vec<Block>,
    stop_reason: Option<String>,
    usage: Option<WireUsage>,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Block {
    Text {
        text: String,
    },
    Thinking {
        #[serde(default)]
        thinking: String,
    },
    ToolUse {
        id: String,
        name: String,
        input: Value,
    },
    /// Redacted thinking, server tool blocks and whatever comes next: no chat equivalent.
    #[serde(other)]
    Other,
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::testing::fixture;

    fn convert(chunks: &[&[u8]]) -> Value {
        let mut t = ToChatJson::with_created("gpt-4o", 1_700_000_000);
        let mut out = BytesMut::new();
        for chunk in chunks {
            t.feed(chunk, &mut out);
            assert!(out.is_empty(), "nothing before the end");
        }
        t.finish(&mut out);
        serde_json::from_slice(&out).unwrap()
    }

    #[test]
    fn fixture_becomes_a_chat_completion() {
        let raw = fixture("anthropic_json.txt");
        let want = json!({
            "id": "chatcmpl-msg_mockb7b0a8a093df49d99f0a",
            "object": "chat.completion",
            "created": 1_700_000_000,
            "model": "gpt-4o",
            "choices": [{
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "Hi! This is the mock upstream.",
                    "refusal": null,
                },
                "logprobs": null,
                "finish_reason": "stop",
            }],
            "usage": {
                "prompt_tokens": 10,
                "completion_tokens": 7,
                "total_tokens": 17,
                "prompt_tokens_details": { "cached_tokens": 0 },
            },
        });
        assert_eq!(convert(&[&raw]), want);
        for at in 0..=raw.len() {
            let (a, b) = raw.split_at(at);
            assert_eq!(convert(&[a, b]), want, "split at {at}");
        }
    }

    #[test]
    fn tool_calls_thinking_and_cache_usage() {
        let body = json!({
            "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-x",
            "content": [
                { "type": "thinking", "thinking": "let me see", "signature": "sig" },
                { "type": "redacted_thinking", "data": "xyz" },
                { "type": "text", "text": "Checking " },
                { "type": "text", "text": "both." },
                { "type": "tool_use", "id": "toolu_a", "name": "weather", "input": { "city": "Paris", "days": [1, 2] } },
                { "type": "tool_use", "id": "toolu_b", "name": "now", "input": {} },
            ],
            "stop_reason": "tool_use", "stop_sequence": null,
            "usage": { "input_tokens": 5, "output_tokens": 40, "cache_creation_input_tokens": 300, "cache_read_input_tokens": 1000 },
        });
        let v = convert(&[body.to_string().as_bytes()]);
        let message = &v["choices"][0]["message"];
        assert_eq!(message["content"], "Checking both.");
        assert_eq!(message["reasoning_content"], "let me see");
        assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
        let calls = message["tool_calls"].as_array().unwrap();
        assert_eq!(calls.len(), 2);
        assert_eq!(calls[0]["id"], "toolu_a");
        assert_eq!(calls[0]["type"], "function");
        assert_eq!(calls[0]["function"]["name"], "weather");
        let args: Value =
            serde_json::from_str(calls[0]["function"]["arguments"].as_str().unwrap()).unwrap();
        assert_eq!(args, json!({ "city": "Paris", "days": [1, 2] }));
        assert_eq!(calls[1]["function"]["arguments"], "{}");
        assert_eq!(
            v["usage"],
            json!({
                "prompt_tokens": 1305, "completion_tokens": 40, "total_tokens": 1345,
                "prompt_tokens_details": { "cached_tokens": 1000 },
            })
        );
    }

    #[test]
    fn tool_only_answer_has_null_content_and_other_stop_reasons_map() {
        for (stop, want) in [
            ("max_tokens", "length"),
            ("refusal", "content_filter"),
            ("stop_sequence", "stop"),
        ] {
            let body = json!({
                "id": "msg_2", "type": "message", "content": [
                    { "type": "tool_use", "id": "t", "name": "f", "input": {} },
                ],
                "stop_reason": stop, "usage": { "input_tokens": 1, "output_tokens": 2 },
            });
            let v = convert(&[body.to_string().as_bytes()]);
            assert_eq!(v["choices"][0]["message"]["content"], Value::Null);
            assert!(
                v["choices"][0]["message"]
                    .get("reasoning_content")
                    .is_none()
            );
            assert_eq!(v["choices"][0]["finish_reason"], want);
            assert_eq!(v["usage"]["total_tokens"], 3);
        }
        // No text and no tool call (only thinking, or nothing): "" as OpenAI answers, not null.
        for content in [json!([]), json!([{ "type": "thinking", "thinking": "hm" }])] {
            let body = json!({
                "id": "msg_3", "type": "message", "content": content,
                "stop_reason": "end_turn", "usage": { "input_tokens": 1, "output_tokens": 0 },
            });
            let v = convert(&[body.to_string().as_bytes()]);
            assert_eq!(v["choices"][0]["message"]["content"], "", "{content}");
        }
    }

    #[test]
    fn error_bodies_and_garbage_become_openai_errors() {
        let v = convert(&[
            br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
        ]);
        assert_eq!(
            v,
            json!({ "error": { "message": "Overloaded", "type": "server_error", "param": null, "code": "overloaded" } })
        );
        let v = convert(&[b"{\"id\": \"msg_1\", \"content\": ["]);
        assert_eq!(v["error"]["type"], "server_error");
        assert!(v.get("choices").is_none());
        let v = convert(&[]);
        assert_eq!(v["error"]["type"], "server_error");
    }

    #[test]
    fn an_oversized_body_is_dropped_not_held() {
        let mut t = ToChatJson::with_created("m", 0);
        let mut out = BytesMut::new();
        let big = vec![b' '; MAX_BODY_BYTES / 2 + 1];
        t.feed(&big, &mut out);
        t.feed(&big, &mut out);
        assert_eq!(t.body.capacity(), 0);
        t.finish(&mut out);
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap()
                .contains("too large")
        );
    }
}
