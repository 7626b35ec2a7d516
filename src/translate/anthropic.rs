//! OpenAI Chat Completions clients served by Claude models.
//!
//! [`request`] turns a chat request into an Anthropic Messages request; [`ToChatJson`] and
//! [`ToChatStream`] turn the Anthropic answer (JSON or SSE) back into exactly what an OpenAI
//! client parses; [`error_body`] does the same for an Anthropic error answer. Usage accounting
//! is not done here: the relay taps the upstream Anthropic bytes before they are translated.
//!
//! Choices worth knowing:
//! - `reasoning_effort` asks for thinking as each model takes it (adaptive at an effort from
//!   Claude 4.6, a token budget before), except where Claude would refuse it: a forced tool, or
//!   a tool loop's next turn, whose signed thinking chat history cannot carry back.
//! - `thinking` blocks become `reasoning_content` (the field OpenAI-compatible clients read for
//!   reasoning text); redacted thinking and signatures are dropped.
//! - OpenAI's `prompt_tokens` includes cached tokens, Anthropic's `input_tokens` does not, so
//!   `prompt_tokens = input + cache_read + cache_creation` and `cached_tokens = cache_read`.
//! - `finish_reason`: `end_turn`/`stop_sequence`/`pause_turn` → `stop`, `max_tokens` and
//!   `model_context_window_exceeded` → `length`, `tool_use` → `tool_calls`, `refusal` →
//!   `content_filter`.

mod model;
mod request;
mod response;
mod stream;

pub use request::{MessagesRequest, request};
pub use response::ToChatJson;
pub use stream::ToChatStream;

use bytes::Bytes;
use serde::Deserialize;
use serde_json::{Value, json};

use super::chat::{PromptDetails, Usage};

/// OpenAI's `finish_reason` for an Anthropic `stop_reason`.
fn finish_reason(stop_reason: &str) -> &'static str {
    match stop_reason {
        "max_tokens" | "model_context_window_exceeded" => "length",
        "tool_use" => "tool_calls",
        "refusal" => "content_filter",
        // end_turn, stop_sequence, pause_turn and anything newer: the model stopped on its own.
        _ => "stop",
    }
}

/// Anthropic usage fields; each may be absent, and in a stream a later report replaces only
/// the fields it carries.
#[derive(Debug, Default, Clone, Copy, Deserialize)]
struct WireUsage {
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
    cache_creation_input_tokens: Option<u64>,
    cache_read_input_tokens: Option<u64>,
}

impl WireUsage {
    /// Overwrites the fields `later` reports.
    fn update(&mut self, later: &WireUsage) {
        let fields = [
            (&mut self.input_tokens, later.input_tokens),
            (&mut self.output_tokens, later.output_tokens),
            (
                &mut self.cache_creation_input_tokens,
                later.cache_creation_input_tokens,
            ),
            (
                &mut self.cache_read_input_tokens,
                later.cache_read_input_tokens,
            ),
        ];
        for (field, new) in fields {
            if new.is_some() {
                *field = new;
            }
        }
    }

    fn to_chat(self) -> Usage {
        let cache_read = self.cache_read_input_tokens.unwrap_or(0);
        let prompt = self
            .input_tokens
            .unwrap_or(0)
            .saturating_add(cache_read)
            .saturating_add(self.cache_creation_input_tokens.unwrap_or(0));
        let completion = self.output_tokens.unwrap_or(0);
        Usage {
            prompt_tokens: prompt,
            completion_tokens: completion,
            total_tokens: prompt.saturating_add(completion),
            prompt_tokens_details: PromptDetails {
                cached_tokens: cache_read,
            },
            completion_tokens_details: None,
        }
    }
}

/// `{"type":"error","error":{"type","message"}}`, the shape of every Anthropic error.
#[derive(Debug, Deserialize)]
struct WireError {
    #[serde(rename = "type")]
    kind: Option<String>,
    message: Option<String>,
}

/// OpenAI's `(type, code)` for an Anthropic error type; `status` decides unknown types.
fn openai_error_kind(anthropic_type: Option<&str>, status: Option<u16>) -> (&'static str, Value) {
    match anthropic_type {
        Some("invalid_request_error") => ("invalid_request_error", Value::Null),
        Some("request_too_large") => ("invalid_request_error", json!("request_too_large")),
        Some("authentication_error") => ("authentication_error", json!("invalid_api_key")),
        Some("permission_error") => ("permission_error", Value::Null),
        Some("not_found_error") => ("invalid_request_error", json!("not_found")),
        Some("rate_limit_error") => ("rate_limit_error", json!("rate_limit_exceeded")),
        Some("billing_error") => ("insufficient_quota", json!("insufficient_quota")),
        Some("overloaded_error") => ("server_error", json!("overloaded")),
        Some("timeout_error") => ("server_error", json!("timeout")),
        Some("api_error") => ("server_error", Value::Null),
        _ => match status {
            Some(s) if (400..500).contains(&s) => ("invalid_request_error", Value::Null),
            _ => ("server_error", Value::Null),
        },
    }
}

/// The OpenAI error object (the value of the top-level `error` key).
fn openai_error(error: &WireError, status: Option<u16>) -> Value {
    let (kind, code) = openai_error_kind(error.kind.as_deref(), status);
    let message = match &error.message {
        Some(m) => m.clone(),
        None => "the upstream reported an error".to_owned(),
    };
    json!({ "message": message, "type": kind, "param": null, "code": code })
}

/// Reads `{"type":"error","error":{..}}`; `None` for anything else.
fn parse_error(body: &[u8]) -> Option<WireError> {
    #[derive(Deserialize)]
    struct Envelope {
        error: WireError,
    }
    serde_json::from_slice::<Envelope>(body)
        .ok()
        .map(|e| e.error)
}

/// An Anthropic error answer (its status and body) as the OpenAI error body a client expects.
/// The caller keeps the status; only the body changes shape. A body that is not an Anthropic
/// error (a proxy's HTML page, say) is not echoed: the client gets a message naming the status.
pub fn error_body(status: u16, anthropic_body: &[u8]) -> Bytes {
    let error = parse_error(anthropic_body).unwrap_or_else(|| WireError {
        kind: None,
        message: Some(format!("the upstream answered HTTP {status}")),
    });
    let body = json!({ "error": openai_error(&error, Some(status)) });
    Bytes::from(body.to_string())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn mapped(status: u16, body: &str) -> Value {
        serde_json::from_slice(&error_body(status, body.as_bytes())).unwrap()
    }

    #[test]
    fn error_types_map_to_openai_types_and_codes() {
        for (status, kind, want_type, want_code) in [
            (
                400,
                "invalid_request_error",
                "invalid_request_error",
                Value::Null,
            ),
            (
                401,
                "authentication_error",
                "authentication_error",
                json!("invalid_api_key"),
            ),
            (403, "permission_error", "permission_error", Value::Null),
            (
                404,
                "not_found_error",
                "invalid_request_error",
                json!("not_found"),
            ),
            (
                413,
                "request_too_large",
                "invalid_request_error",
                json!("request_too_large"),
            ),
            (
                429,
                "rate_limit_error",
                "rate_limit_error",
                json!("rate_limit_exceeded"),
            ),
            (
                402,
                "billing_error",
                "insufficient_quota",
                json!("insufficient_quota"),
            ),
            (500, "api_error", "server_error", Value::Null),
            (529, "overloaded_error", "server_error", json!("overloaded")),
            (504, "timeout_error", "server_error", json!("timeout")),
            (418, "brand_new_error", "invalid_request_error", Value::Null),
            (503, "brand_new_error", "server_error", Value::Null),
        ] {
            let body = format!(
                r#"{{"type":"error","error":{{"type":"{kind}","message":"m-{kind}"}},"request_id":"req_1"}}"#
            );
            let v = mapped(status, &body);
            assert_eq!(
                v,
                json!({"error": {
                    "message": format!("m-{kind}"),
                    "type": want_type,
                    "param": null,
                    "code": want_code,
                }}),
                "{kind}"
            );
        }
    }

    #[test]
    fn a_body_that_is_not_an_anthropic_error_is_not_echoed() {
        let v = mapped(502, "<html>secret proxy page</html>");
        assert_eq!(v["error"]["message"], "the upstream answered HTTP 502");
        assert_eq!(v["error"]["type"], "server_error");
        let v = mapped(400, "");
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert_eq!(v["error"]["param"], Value::Null);
    }

    #[test]
    fn finish_reasons() {
        for (stop, want) in [
            ("end_turn", "stop"),
            ("stop_sequence", "stop"),
            ("pause_turn", "stop"),
            ("max_tokens", "length"),
            ("model_context_window_exceeded", "length"),
            ("tool_use", "tool_calls"),
            ("refusal", "content_filter"),
        ] {
            assert_eq!(finish_reason(stop), want, "{stop}");
        }
    }

    #[test]
    fn usage_counts_cache_in_prompt_tokens() {
        let mut u = WireUsage {
            input_tokens: Some(5),
            output_tokens: Some(1),
            cache_creation_input_tokens: Some(300),
            cache_read_input_tokens: Some(1000),
        };
        u.update(&WireUsage {
            output_tokens: Some(50),
            ..WireUsage::default()
        });
        assert_eq!(
            u.to_chat(),
            Usage {
                prompt_tokens: 1305,
                completion_tokens: 50,
                total_tokens: 1355,
                prompt_tokens_details: PromptDetails {
                    cached_tokens: 1000
                },
                completion_tokens_details: None,
            }
        );
    }
}
