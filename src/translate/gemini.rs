//! OpenAI Chat Completions on Gemini models.
//!
//! The relay calls [`request`] on the client's body and sends the result to
//! [`upstream_path`] (adding `?alt=sse` for a stream). A successful answer is wrapped in
//! `Translated` with [`ToChatJson`] or [`ToChatStream`]; an error answer's body is replaced by
//! [`error_body`], keeping its status. Usage accounting reads the Gemini bytes before they reach
//! these translators, so nothing here counts tokens for billing.
//!
//! - `request`: the request mapping (messages → contents); `options`: tools, `tool_choice`
//!   and `generationConfig`.
//! - `wire`: the Gemini response shapes read and the OpenAI shapes written, and the field
//!   mappings (finish reason, usage) both response translators share.
//! - `json` and `stream`: the two response translators.

mod json;
mod options;
mod request;
mod stream;
mod wire;

use bytes::Bytes;
use rand::Rng;
use rand::distr::Alphanumeric;
use serde::Deserialize;

pub use json::ToChatJson;
pub use request::{GenerateRequest, request};
pub use stream::ToChatStream;

/// The upstream path for `model`: `/v1beta/models/{model}:generateContent`, or
/// `:streamGenerateContent` for a stream (the relay adds `?alt=sse`). A `models/` prefix on the
/// client's name is dropped; [`request`] has already checked the name is a plain identifier.
pub fn upstream_path(model: &str, stream: bool) -> String {
    let model = model.strip_prefix("models/").unwrap_or(model);
    let method = if stream {
        "streamGenerateContent"
    } else {
        "generateContent"
    };
    format!("/v1beta/models/{model}:{method}")
}

#[derive(Deserialize)]
struct GeminiErrorBody {
    error: GeminiError,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct GeminiError {
    code: Option<u16>,
    message: Option<String>,
    status: Option<String>,
}

impl GeminiError {
    /// An error of the relay's own about a Gemini answer (status `INTERNAL`).
    fn internal(message: impl Into<String>) -> GeminiError {
        GeminiError {
            code: None,
            message: Some(message.into()),
            status: Some("INTERNAL".to_owned()),
        }
    }
}

/// A Gemini error answer (status and body) as an OpenAI error body; the caller keeps the status.
/// Gemini sends `{"error":{...}}`, or a one-element array of it on a stream without `alt=sse`;
/// anything else gets a message made from the status alone.
pub fn error_body(status: u16, gemini_body: &[u8]) -> Bytes {
    // Read as a value first: a derived struct would also accept the array form, as a tuple.
    let value = serde_json::from_slice::<serde_json::Value>(gemini_body).unwrap_or_default();
    let first = match value {
        serde_json::Value::Array(mut list) if !list.is_empty() => list.swap_remove(0),
        other => other,
    };
    let parsed = serde_json::from_value::<GeminiErrorBody>(first)
        .map(|b| b.error)
        .unwrap_or_default();
    Bytes::from(openai_error(status, &parsed).to_string())
}

/// The OpenAI `{"error":{...}}` value for a Gemini error, also used for in-stream errors.
fn openai_error(status: u16, error: &GeminiError) -> serde_json::Value {
    let kind = match error.status.as_deref() {
        Some("INVALID_ARGUMENT" | "FAILED_PRECONDITION" | "OUT_OF_RANGE") => {
            "invalid_request_error"
        }
        Some("UNAUTHENTICATED") => "authentication_error",
        Some("PERMISSION_DENIED") => "permission_error",
        Some("NOT_FOUND") => "not_found_error",
        Some("RESOURCE_EXHAUSTED") => "rate_limit_exceeded",
        Some(_) => "server_error",
        None => match error.code.unwrap_or(status) {
            400 => "invalid_request_error",
            401 => "authentication_error",
            403 => "permission_error",
            404 => "not_found_error",
            429 => "rate_limit_exceeded",
            _ => "server_error",
        },
    };
    let message = match &error.message {
        Some(m) if !m.is_empty() => m.clone(),
        _ => format!("upstream error (HTTP {status})"),
    };
    serde_json::json!({
        "error": { "message": message, "type": kind, "param": null, "code": error.status }
    })
}

/// A tool call id for a Gemini function call that came without one: 24 random alphanumerics
/// make a collision within one conversation practically impossible.
fn new_call_id() -> String {
    let mut id = String::from("call_");
    id.extend(
        rand::rng()
            .sample_iter(Alphanumeric)
            .take(24)
            .map(char::from),
    );
    id
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn parsed(status: u16, body: &[u8]) -> Value {
        serde_json::from_slice(&error_body(status, body)).unwrap()
    }

    #[test]
    fn paths() {
        assert_eq!(
            upstream_path("gemini-2.5-flash", false),
            "/v1beta/models/gemini-2.5-flash:generateContent"
        );
        assert_eq!(
            upstream_path("models/gemini-2.5-flash", true),
            "/v1beta/models/gemini-2.5-flash:streamGenerateContent"
        );
    }

    #[test]
    fn error_statuses_map_to_openai_types() {
        for (status, code, kind) in [
            ("INVALID_ARGUMENT", 400, "invalid_request_error"),
            ("UNAUTHENTICATED", 401, "authentication_error"),
            ("PERMISSION_DENIED", 403, "permission_error"),
            ("NOT_FOUND", 404, "not_found_error"),
            ("RESOURCE_EXHAUSTED", 429, "rate_limit_exceeded"),
            ("INTERNAL", 500, "server_error"),
            ("UNAVAILABLE", 503, "server_error"),
        ] {
            let body = json!({ "error": { "code": code, "message": "boom", "status": status } });
            let v = parsed(code, body.to_string().as_bytes());
            assert_eq!(
                v,
                json!({ "error": { "message": "boom", "type": kind, "param": null, "code": status } })
            );
        }
    }

    #[test]
    fn odd_error_bodies() {
        // The array form of a stream without alt=sse.
        let v = parsed(
            429,
            br#"[{"error":{"code":429,"message":"quota","status":"RESOURCE_EXHAUSTED"}}]"#,
        );
        assert_eq!(v["error"]["type"], "rate_limit_exceeded");
        assert_eq!(v["error"]["message"], "quota");
        // Not JSON at all: the status decides.
        let v = parsed(403, b"<html>forbidden</html>");
        assert_eq!(v["error"]["type"], "permission_error");
        assert_eq!(v["error"]["message"], "upstream error (HTTP 403)");
        assert_eq!(v["error"]["code"], Value::Null);
        assert_eq!(parsed(502, b"")["error"]["type"], "server_error");
        assert_eq!(parsed(400, b"[]")["error"]["type"], "invalid_request_error");
    }

    #[test]
    fn call_ids_are_unique() {
        let a = new_call_id();
        assert!(a.starts_with("call_") && a.len() == 29);
        assert_ne!(a, new_call_id());
    }
}
