//! A whole Gemini `generateContent` answer → one OpenAI `chat.completion`.

use bytes::BytesMut;

use super::wire::{GenResponse, failed_finish, finish_reason, write_json};
use super::{GeminiError, openai_error};
use crate::translate::Translate;
use crate::translate::chat::{Choice, Completion, Message, ToolCall, Usage};

/// A JSON answer bigger than this is not converted (a chat answer is kilobytes; this only stops
/// a broken upstream from growing the buffer without bound).
const MAX_BODY_BYTES: usize = 32 * 1024 * 1024;

/// Collects the Gemini JSON and emits the `chat.completion` when the body ends.
pub struct ToChatJson {
    client_model: String,
    created: i64,
    body: Vec<u8>,
    too_large: bool,
}

impl ToChatJson {
    /// `client_model` is echoed as `model`, the name the client asked for.
    pub fn new(client_model: &str, created_unix: i64) -> Self {
        ToChatJson {
            client_model: client_model.to_owned(),
            created: created_unix,
            body: Vec::new(),
            too_large: false,
        }
    }

    fn convert(&self, response: &GenResponse) -> Completion<'_> {
        let mut choices: Vec<Choice> = response
            .candidates
            .iter()
            .enumerate()
            .map(|(position, candidate)| {
                let mut text = String::new();
                let mut tool_calls = Vec::new();
                for part in candidate.parts() {
                    if let Some(t) = part.answer_text() {
                        text.push_str(t);
                    }
                    if let Some(call) = &part.function_call {
                        tool_calls.push(ToolCall::from_gemini(call, None));
                    }
                }
                let reason = candidate.finish_reason.as_deref().unwrap_or("STOP");
                Choice {
                    index: candidate.choice_index(position),
                    finish_reason: finish_reason(reason, !tool_calls.is_empty()),
                    message: Message {
                        role: "assistant",
                        content: (!text.is_empty() || tool_calls.is_empty()).then_some(text),
                        reasoning_content: None,
                        refusal: None,
                        tool_calls,
                        function_call: None,
                    },
                    logprobs: None,
                }
            })
            .collect();
        choices.sort_by_key(|c| c.index);
        if response.prompt_blocked() {
            choices.push(Choice {
                index: 0,
                message: Message {
                    role: "assistant",
                    content: Some(String::new()),
                    reasoning_content: None,
                    refusal: None,
                    tool_calls: Vec::new(),
                    function_call: None,
                },
                logprobs: None,
                finish_reason: "content_filter",
            });
        }
        let id = match response.response_id.as_deref() {
            Some(rid) if !rid.is_empty() => format!("chatcmpl-{rid}"),
            _ => crate::auth::new_id("chatcmpl").replacen('_', "-", 1),
        };
        Completion {
            id,
            object: "chat.completion",
            created: self.created,
            model: &self.client_model,
            choices,
            usage: Usage::from_gemini(&response.usage_metadata.unwrap_or_default()),
        }
    }
}

impl Translate for ToChatJson {
    fn feed(&mut self, chunk: &[u8], _out: &mut BytesMut) {
        if self.too_large || self.body.len() + chunk.len() > MAX_BODY_BYTES {
            self.too_large = true;
            self.body = Vec::new();
            return;
        }
        self.body.extend_from_slice(chunk);
    }

    fn finish(&mut self, out: &mut BytesMut) {
        let unreadable = GeminiError::internal;
        if self.too_large {
            write_json(
                out,
                &openai_error(502, &unreadable("upstream response too large")),
            );
            return;
        }
        match serde_json::from_slice::<GenResponse>(&self.body) {
            Ok(GenResponse {
                error: Some(error), ..
            }) => write_json(out, &openai_error(error.code.unwrap_or(500), &error)),
            // No candidate and no blocked prompt: nothing to answer with (`choices: []` would
            // fail every client at `choices[0]`); the stream translation ends the same way.
            // Every candidate failed (see `failed_finish`): an error, not a `stop`.
            Ok(response)
                if !response.candidates.is_empty()
                    && response
                        .candidates
                        .iter()
                        .all(|c| c.finish_reason.as_deref().is_some_and(failed_finish)) =>
            {
                let reason = response
                    .candidates
                    .first()
                    .and_then(|c| c.finish_reason.as_deref())
                    .unwrap_or("");
                write_json(
                    out,
                    &openai_error(
                        502,
                        &unreadable(&format!("the model's answer failed: {reason}")),
                    ),
                );
            }
            Ok(response) if response.candidates.is_empty() && !response.prompt_blocked() => {
                write_json(
                    out,
                    &openai_error(502, &unreadable("upstream returned no candidate")),
                );
            }
            Ok(response) => write_json(out, &self.convert(&response)),
            Err(e) => {
                tracing::warn!(error = %e, "Gemini answer is not a GenerateContentResponse");
                write_json(
                    out,
                    &openai_error(502, &unreadable("upstream returned an unreadable response")),
                );
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::testing::fixture;
    use serde_json::{Value, json};

    fn translate(chunks: &[&[u8]]) -> Value {
        let mut t = ToChatJson::new("my-model", 1_700_000_000);
        let mut out = BytesMut::new();
        for c in chunks {
            t.feed(c, &mut out);
            assert!(out.is_empty(), "nothing before the end");
        }
        t.finish(&mut out);
        serde_json::from_slice(&out).unwrap()
    }

    #[test]
    fn fixture_answer() {
        let raw = fixture("gemini_json.txt");
        let v = translate(&[&raw]);
        assert_eq!(
            v,
            json!({
                "id": "chatcmpl-mock786f9afbb1f3",
                "object": "chat.completion",
                "created": 1_700_000_000,
                "model": "my-model",
                "choices": [{
                    "index": 0,
                    "message": { "role": "assistant", "content": "Hi! This is the mock upstream.", "refusal": null },
                    "logprobs": null,
                    "finish_reason": "stop",
                }],
                "usage": {
                    "prompt_tokens": 13, "completion_tokens": 3, "total_tokens": 16,
                    "prompt_tokens_details": { "cached_tokens": 0 },
                    "completion_tokens_details": { "reasoning_tokens": 0 },
                },
            })
        );
        // Split anywhere, the same answer.
        for at in 0..=raw.len() {
            let (a, b) = raw.split_at(at);
            assert_eq!(translate(&[a, b]), v, "split at {at}");
        }
    }

    #[test]
    fn tool_calls_thoughts_and_usage() {
        let body = json!({
            "candidates": [{
                "content": { "role": "model", "parts": [
                    { "text": "planning…", "thought": true },
                    { "text": "Let me check." },
                    { "functionCall": { "name": "weather", "args": { "city": "Oslo" } }, "thoughtSignature": "abc" },
                    { "functionCall": { "name": "time" } },
                ]},
                "finishReason": "STOP",
            }],
            "usageMetadata": {
                "promptTokenCount": 100, "candidatesTokenCount": 20, "thoughtsTokenCount": 50,
                "cachedContentTokenCount": 80, "totalTokenCount": 170,
            },
        });
        let v = translate(&[body.to_string().as_bytes()]);
        let choice = &v["choices"][0];
        assert_eq!(choice["finish_reason"], "tool_calls");
        assert_eq!(choice["message"]["content"], "Let me check.");
        let calls = choice["message"]["tool_calls"].as_array().unwrap();
        assert_eq!(calls.len(), 2);
        assert_eq!(calls[0]["type"], "function");
        assert_eq!(calls[0]["function"]["name"], "weather");
        let args: Value =
            serde_json::from_str(calls[0]["function"]["arguments"].as_str().unwrap()).unwrap();
        assert_eq!(args, json!({ "city": "Oslo" }));
        assert_eq!(calls[1]["function"]["arguments"], "{}");
        assert!(calls[0].get("index").is_none());
        assert!(calls[0]["id"].as_str().unwrap().starts_with("call_"));
        assert_ne!(calls[0]["id"], calls[1]["id"]);
        assert!(v["id"].as_str().unwrap().starts_with("chatcmpl-"));
        assert_eq!(v["usage"]["prompt_tokens"], 100);
        assert_eq!(v["usage"]["completion_tokens"], 70);
        assert_eq!(v["usage"]["total_tokens"], 170);
        assert_eq!(v["usage"]["prompt_tokens_details"]["cached_tokens"], 80);
        assert_eq!(
            v["usage"]["completion_tokens_details"]["reasoning_tokens"],
            50
        );

        // Only tool calls: content is null.
        let body = json!({ "candidates": [{ "content": { "parts": [
            { "functionCall": { "id": "fc_1", "name": "f", "args": {} } },
        ]}, "finishReason": "STOP" }] });
        let v = translate(&[body.to_string().as_bytes()]);
        assert_eq!(v["choices"][0]["message"]["content"], Value::Null);
        // An id Gemini gave is kept, so the client's tool result can be matched back.
        assert_eq!(v["choices"][0]["message"]["tool_calls"][0]["id"], "fc_1");
    }

    #[test]
    fn several_candidates_and_finish_reasons() {
        let body = json!({ "candidates": [
            { "index": 1, "content": { "parts": [{ "text": "b" }] }, "finishReason": "MAX_TOKENS" },
            { "index": 0, "content": { "parts": [{ "text": "a" }] }, "finishReason": "SAFETY" },
        ]});
        let v = translate(&[body.to_string().as_bytes()]);
        assert_eq!(v["choices"][0]["index"], 0);
        assert_eq!(v["choices"][0]["message"]["content"], "a");
        assert_eq!(v["choices"][0]["finish_reason"], "content_filter");
        assert_eq!(v["choices"][1]["finish_reason"], "length");
        assert_eq!(v["usage"]["total_tokens"], 0);
    }

    #[test]
    fn blocked_prompt_is_content_filter() {
        let body = json!({
            "promptFeedback": { "blockReason": "SAFETY" },
            "usageMetadata": { "promptTokenCount": 8, "totalTokenCount": 8 },
        });
        let v = translate(&[body.to_string().as_bytes()]);
        assert_eq!(v["choices"].as_array().unwrap().len(), 1);
        assert_eq!(v["choices"][0]["finish_reason"], "content_filter");
        assert_eq!(v["choices"][0]["message"]["content"], "");
        assert_eq!(v["usage"]["prompt_tokens"], 8);
    }

    #[test]
    fn errors_and_garbage() {
        let v = translate(&[
            br#"{"error":{"code":429,"message":"quota","status":"RESOURCE_EXHAUSTED"}}"#,
        ]);
        assert_eq!(v["error"]["type"], "rate_limit_exceeded");
        assert_eq!(v["error"]["message"], "quota");
        let v = translate(&[b"{\"candidates\": ["]);
        assert_eq!(v["error"]["type"], "server_error");
        assert_eq!(
            v["error"]["message"],
            "upstream returned an unreadable response"
        );
        // A function call the model could not form: an error, not a `stop`.
        let v = translate(&[
            br#"{"candidates":[{"content":{"parts":[]},"finishReason":"UNEXPECTED_TOOL_CALL"}]}"#,
        ]);
        assert_eq!(
            v["error"]["message"],
            "the model's answer failed: UNEXPECTED_TOOL_CALL"
        );
        // No candidate, no blocked prompt: an error, not `choices: []`.
        for empty in [&br#"{"candidates":[]}"#[..], br#"{"usageMetadata":{}}"#] {
            let v = translate(&[empty]);
            assert_eq!(
                v["error"]["message"], "upstream returned no candidate",
                "{v}"
            );
        }
    }

    #[test]
    fn oversized_answer_is_an_error() {
        let mut t = ToChatJson::new("m", 0);
        let mut out = BytesMut::new();
        let big = vec![b' '; MAX_BODY_BYTES / 2 + 1];
        t.feed(&big, &mut out);
        t.feed(&big, &mut out);
        assert!(t.body.is_empty());
        t.finish(&mut out);
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["error"]["message"], "upstream response too large");
    }
}
