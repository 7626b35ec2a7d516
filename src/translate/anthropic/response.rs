//! Anthropic answers as OpenAI chat completions: the JSON message, the SSE stream, errors.

use std::collections::HashMap;

use bytes::{Bytes, BytesMut};
use serde_json::{Value, json};

use crate::stream::sse::SseFramer;
use crate::translate::Translate;

/// A Messages JSON body larger than this is not translated (an error is sent instead).
const MAX_JSON_BYTES: usize = 32 * 1024 * 1024;

fn finish_reason(stop: &str) -> &'static str {
    match stop {
        "max_tokens" | "model_context_window_exceeded" => "length",
        "tool_use" => "tool_calls",
        "refusal" => "content_filter",
        // end_turn, stop_sequence, pause_turn
        _ => "stop",
    }
}

/// Token counts as OpenAI reports them: the prompt includes cached tokens.
#[derive(Debug, Clone, Copy, Default)]
struct Counts {
    input: u64,
    output: u64,
    cache_read: u64,
    cache_write: u64,
}

impl Counts {
    fn update(&mut self, usage: &Value) {
        let field = |name: &str| usage.get(name).and_then(Value::as_u64);
        if let Some(n) = field("input_tokens") {
            self.input = n;
        }
        if let Some(n) = field("output_tokens") {
            self.output = n;
        }
        if let Some(n) = field("cache_read_input_tokens") {
            self.cache_read = n;
        }
        if let Some(n) = field("cache_creation_input_tokens") {
            self.cache_write = n;
        }
    }

    fn openai(&self) -> Value {
        let prompt = self.input + self.cache_read + self.cache_write;
        json!({
            "prompt_tokens": prompt,
            "completion_tokens": self.output,
            "total_tokens": prompt + self.output,
            "prompt_tokens_details": { "cached_tokens": self.cache_read },
        })
    }
}

/// Collects a Messages JSON answer and emits one `chat.completion` at its end.
#[derive(Debug)]
pub struct ToChatJson {
    model: String,
    body: Vec<u8>,
    too_large: bool,
}

impl ToChatJson {
    pub fn new(client_model: &str) -> ToChatJson {
        ToChatJson {
            model: client_model.to_owned(),
            body: Vec::new(),
            too_large: false,
        }
    }

    fn convert(&self) -> Value {
        if self.too_large {
            return openai_error(
                "the upstream answer was too large to translate",
                "server_error",
                None,
            );
        }
        let Ok(message) = serde_json::from_slice::<Value>(&self.body) else {
            return openai_error(
                "the upstream answer was not valid JSON",
                "server_error",
                None,
            );
        };
        if message.get("type").and_then(Value::as_str) == Some("error") {
            return error_value(&message);
        }
        let mut text = String::new();
        let mut calls = Vec::new();
        for block in message["content"].as_array().into_iter().flatten() {
            match block.get("type").and_then(Value::as_str) {
                Some("text") => text.push_str(block["text"].as_str().unwrap_or("")),
                Some("tool_use") => calls.push(json!({
                    "id": block["id"],
                    "type": "function",
                    "function": {
                        "name": block["name"],
                        "arguments": block.get("input").map_or_else(|| "{}".to_owned(), Value::to_string),
                    },
                })),
                _ => {}
            }
        }
        let mut counts = Counts::default();
        counts.update(&message["usage"]);
        let mut reply = json!({
            "role": "assistant",
            "content": if text.is_empty() && !calls.is_empty() { Value::Null } else { json!(text) },
        });
        if !calls.is_empty() {
            reply["tool_calls"] = Value::Array(calls);
        }
        json!({
            "id": format!("chatcmpl-{}", message["id"].as_str().unwrap_or("")),
            "object": "chat.completion",
            "created": jiff::Timestamp::now().as_second(),
            "model": self.model,
            "choices": [{
                "index": 0,
                "message": reply,
                "logprobs": null,
                "finish_reason": finish_reason(message["stop_reason"].as_str().unwrap_or("end_turn")),
            }],
            "usage": counts.openai(),
        })
    }
}

impl Translate for ToChatJson {
    fn feed(&mut self, chunk: &[u8], _out: &mut BytesMut) {
        if self.body.len() + chunk.len() > MAX_JSON_BYTES {
            self.too_large = true;
            self.body = Vec::new();
        } else if !self.too_large {
            self.body.extend_from_slice(chunk);
        }
    }

    fn finish(&mut self, out: &mut BytesMut) {
        out.extend_from_slice(self.convert().to_string().as_bytes());
    }
}

/// Anthropic SSE events as `chat.completion.chunk` events, each sent as soon as the event that
/// causes it is complete; ends with `data: [DONE]`.
#[derive(Debug)]
pub struct ToChatStream {
    framer: SseFramer,
    id: String,
    model: String,
    created: i64,
    include_usage: bool,
    counts: Counts,
    /// Content block index → tool call index.
    tools: HashMap<u64, usize>,
    finish: Option<&'static str>,
    started: bool,
    /// `[DONE]` or an error was sent: nothing more.
    ended: bool,
}

impl ToChatStream {
    pub fn new(client_model: &str, include_usage: bool, created_unix: i64) -> ToChatStream {
        ToChatStream {
            framer: SseFramer::new(),
            id: "chatcmpl-".to_owned(),
            model: client_model.to_owned(),
            created: created_unix,
            include_usage,
            counts: Counts::default(),
            tools: HashMap::new(),
            finish: None,
            started: false,
            ended: false,
        }
    }

    fn chunk(&self, delta: Value, finish: Option<&str>, out: &mut BytesMut) {
        let mut chunk = json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{ "index": 0, "delta": delta, "logprobs": null, "finish_reason": finish }],
        });
        if self.include_usage {
            chunk["usage"] = Value::Null;
        }
        data(&chunk, out);
    }

    fn on_event(&mut self, event: &Value, out: &mut BytesMut) {
        match event.get("type").and_then(Value::as_str).unwrap_or("") {
            "message_start" => {
                let message = &event["message"];
                if let Some(id) = message.get("id").and_then(Value::as_str) {
                    self.id = format!("chatcmpl-{id}");
                }
                self.counts.update(&message["usage"]);
                self.started = true;
                self.chunk(json!({ "role": "assistant", "content": "" }), None, out);
            }
            "content_block_start" => {
                let block = &event["content_block"];
                match block.get("type").and_then(Value::as_str) {
                    Some("tool_use") => {
                        let index = self.tools.len();
                        if let Some(at) = event.get("index").and_then(Value::as_u64) {
                            self.tools.insert(at, index);
                        }
                        let call = json!({
                            "index": index,
                            "id": block["id"],
                            "type": "function",
                            "function": { "name": block["name"], "arguments": "" },
                        });
                        self.chunk(json!({ "tool_calls": [call] }), None, out);
                    }
                    Some("text") => {
                        if let Some(text) = block["text"].as_str().filter(|t| !t.is_empty()) {
                            self.chunk(json!({ "content": text }), None, out);
                        }
                    }
                    _ => {}
                }
            }
            "content_block_delta" => {
                let delta = &event["delta"];
                match delta.get("type").and_then(Value::as_str) {
                    Some("text_delta") => {
                        self.chunk(json!({ "content": delta["text"] }), None, out);
                    }
                    Some("input_json_delta") => {
                        let at = event.get("index").and_then(Value::as_u64).unwrap_or(0);
                        if let Some(index) = self.tools.get(&at) {
                            let call = json!({
                                "index": index,
                                "function": { "arguments": delta["partial_json"] },
                            });
                            self.chunk(json!({ "tool_calls": [call] }), None, out);
                        }
                    }
                    // Thinking is not part of the chat completions format.
                    _ => {}
                }
            }
            "message_delta" => {
                if let Some(stop) = event["delta"].get("stop_reason").and_then(Value::as_str) {
                    self.finish = Some(finish_reason(stop));
                }
                self.counts.update(&event["usage"]);
            }
            "message_stop" => self.end(out),
            "error" => {
                data(&error_value(event), out);
                self.ended = true;
            }
            _ => {}
        }
    }

    /// The finish chunk, the usage chunk when asked for, `[DONE]`.
    fn end(&mut self, out: &mut BytesMut) {
        self.chunk(json!({}), Some(self.finish.unwrap_or("stop")), out);
        if self.include_usage {
            let usage = json!({
                "id": self.id,
                "object": "chat.completion.chunk",
                "created": self.created,
                "model": self.model,
                "choices": [],
                "usage": self.counts.openai(),
            });
            data(&usage, out);
        }
        out.extend_from_slice(b"data: [DONE]\n\n");
        self.ended = true;
    }
}

impl Translate for ToChatStream {
    fn feed(&mut self, chunk: &[u8], out: &mut BytesMut) {
        let mut events = Vec::new();
        self.framer.feed(chunk, |ev| {
            if let Ok(v) = serde_json::from_str::<Value>(ev.data) {
                events.push(v);
            }
        });
        for event in events {
            if self.ended {
                return;
            }
            self.on_event(&event, out);
        }
    }

    fn finish(&mut self, out: &mut BytesMut) {
        if !self.ended {
            // Ended without message_stop: say so rather than pass a cut answer off as complete.
            let message = if self.started {
                "the upstream stream ended before the message was complete"
            } else {
                "the upstream sent no message"
            };
            data(&openai_error(message, "server_error", None), out);
            self.ended = true;
        }
    }
}

fn data(value: &Value, out: &mut BytesMut) {
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(value.to_string().as_bytes());
    out.extend_from_slice(b"\n\n");
}

fn openai_error(message: &str, kind: &str, code: Option<&str>) -> Value {
    json!({ "error": { "message": message, "type": kind, "param": null, "code": code } })
}

/// An Anthropic error (`{"type":"error","error":{"type","message"}}`, or a stream's `error`
/// event) in OpenAI's shape.
fn error_value(anthropic: &Value) -> Value {
    let error = &anthropic["error"];
    let message = error["message"].as_str().unwrap_or("upstream error");
    let (kind, code) = match error["type"].as_str().unwrap_or("") {
        "invalid_request_error" | "request_too_large" => ("invalid_request_error", None),
        "authentication_error" => ("authentication_error", Some("invalid_api_key")),
        "permission_error" => ("permission_error", None),
        "not_found_error" => ("invalid_request_error", Some("model_not_found")),
        "rate_limit_error" => ("rate_limit_error", Some("rate_limit_exceeded")),
        "overloaded_error" => ("server_error", Some("overloaded")),
        _ => ("server_error", None),
    };
    openai_error(message, kind, code)
}

/// An Anthropic error answer's body as the OpenAI error body; the status stays the upstream's.
pub fn error_body(status: u16, anthropic_body: &[u8]) -> Bytes {
    let value = match serde_json::from_slice::<Value>(anthropic_body) {
        Ok(v) if v.get("error").is_some() => error_value(&v),
        _ => openai_error(
            &format!("the upstream answered {status}"),
            if status >= 500 {
                "server_error"
            } else {
                "invalid_request_error"
            },
            None,
        ),
    };
    Bytes::from(value.to_string())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::testing::fixture;

    fn run(t: &mut impl Translate, body: &[u8], split: usize) -> String {
        let mut out = BytesMut::new();
        for part in body.chunks(split.max(1)) {
            t.feed(part, &mut out);
        }
        t.finish(&mut out);
        String::from_utf8(out.to_vec()).unwrap()
    }

    /// The `data:` payloads of an SSE text.
    fn payloads(sse: &str) -> Vec<String> {
        sse.split("\n\n")
            .filter_map(|e| e.strip_prefix("data: "))
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn a_text_stream_becomes_chunks_ending_with_done() {
        let body = fixture("anthropic_stream.txt");
        let whole = run(
            &mut ToChatStream::new("claude-x", true, 7),
            &body,
            body.len(),
        );
        for split in [1, 3, 50] {
            assert_eq!(
                run(&mut ToChatStream::new("claude-x", true, 7), &body, split),
                whole
            );
        }
        let events = payloads(&whole);
        assert_eq!(events.last().unwrap(), "[DONE]");
        let chunks: Vec<Value> = events[..events.len() - 1]
            .iter()
            .map(|e| serde_json::from_str(e).unwrap())
            .collect();
        assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
        let text: String = chunks
            .iter()
            .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
            .collect();
        assert!(!text.is_empty());
        let usage = chunks.last().unwrap();
        assert_eq!(usage["choices"], json!([]));
        assert!(usage["usage"]["prompt_tokens"].as_u64().unwrap() > 0);
        let finish = &chunks[chunks.len() - 2];
        assert_eq!(finish["choices"][0]["finish_reason"], "stop");
        assert!(
            chunks[..chunks.len() - 1]
                .iter()
                .all(|c| c["usage"].is_null())
        );
        assert!(
            chunks
                .iter()
                .all(|c| c["object"] == "chat.completion.chunk" && c["model"] == "claude-x")
        );
        // Without include_usage: no usage field, no usage chunk.
        let plain = run(&mut ToChatStream::new("claude-x", false, 7), &body, 11);
        assert!(!plain.contains("\"usage\""));
    }

    #[test]
    fn tool_use_becomes_streamed_tool_calls() {
        let body = fixture("anthropic_stream_tool_use.txt");
        let out = run(&mut ToChatStream::new("claude-x", false, 7), &body, 5);
        let chunks: Vec<Value> = payloads(&out)
            .iter()
            .filter(|p| *p != "[DONE]")
            .map(|p| serde_json::from_str(p).unwrap())
            .collect();
        let calls: Vec<&Value> = chunks
            .iter()
            .filter_map(|c| c["choices"][0]["delta"]["tool_calls"].as_array())
            .flatten()
            .collect();
        assert_eq!(calls[0]["function"]["name"], "Bash");
        assert_eq!(calls[0]["index"], 0);
        let arguments: String = calls
            .iter()
            .filter_map(|c| c["function"]["arguments"].as_str())
            .collect();
        let parsed: Value = serde_json::from_str(&arguments).unwrap();
        assert_eq!(parsed["command"], "echo mock-tool-ok");
        let finish = chunks
            .iter()
            .rev()
            .find_map(|c| c["choices"][0]["finish_reason"].as_str());
        assert_eq!(finish, Some("tool_calls"));
    }

    #[test]
    fn json_answers_and_errors() {
        let body = fixture("anthropic_json.txt");
        let v: Value =
            serde_json::from_str(&run(&mut ToChatJson::new("claude-x"), &body, 9)).unwrap();
        assert_eq!(v["object"], "chat.completion");
        assert_eq!(v["model"], "claude-x");
        assert!(
            v["choices"][0]["message"]["content"]
                .as_str()
                .unwrap()
                .len()
                > 1
        );
        assert_eq!(v["choices"][0]["finish_reason"], "stop");
        assert!(v["usage"]["total_tokens"].as_u64().unwrap() > 0);
        let tool = br#"{"id":"m1","type":"message","content":[{"type":"tool_use","id":"t1","name":"f","input":{"a":1}}],"stop_reason":"tool_use","usage":{"input_tokens":5,"output_tokens":2,"cache_read_input_tokens":3}}"#;
        let v: Value = serde_json::from_str(&run(&mut ToChatJson::new("c"), tool, 4)).unwrap();
        assert_eq!(v["choices"][0]["message"]["content"], Value::Null);
        assert_eq!(
            v["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"],
            "{\"a\":1}"
        );
        assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(v["usage"]["prompt_tokens"], 8);
        assert_eq!(v["usage"]["prompt_tokens_details"]["cached_tokens"], 3);
        let err = error_body(
            429,
            br#"{"type":"error","error":{"type":"rate_limit_error","message":"slow"}}"#,
        );
        let v: Value = serde_json::from_slice(&err).unwrap();
        assert_eq!(
            v["error"],
            json!({ "message": "slow", "type": "rate_limit_error", "param": null, "code": "rate_limit_exceeded" })
        );
        let v: Value = serde_json::from_slice(&error_body(502, b"<html>")).unwrap();
        assert_eq!(v["error"]["type"], "server_error");
    }

    #[test]
    fn a_cut_or_failed_stream_ends_with_an_error_not_done() {
        let cut = b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"usage\":{\"input_tokens\":1}}}\n\n";
        let out = run(&mut ToChatStream::new("c", false, 1), cut, 7);
        assert!(
            out.contains("\"error\"") && !out.contains("[DONE]"),
            "{out}"
        );
        let failed = b"event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"busy\"}}\n\n";
        let out = run(&mut ToChatStream::new("c", false, 1), failed, 3);
        assert_eq!(payloads(&out).len(), 1);
        assert!(out.contains("\"overloaded\""));
    }
}
