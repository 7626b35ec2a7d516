//! Anthropic Messages API: the upstream request, and what the relay needs to know of the body.

use http::{HeaderMap, HeaderValue, header};
use serde::Deserialize;
use serde::de::IgnoredAny;

use crate::catalog::Account;
use crate::error::ApiError;

pub const DEFAULT_BASE_URL: &str = "https://api.anthropic.com";

/// What the relay reads of a Messages request body; the body itself goes upstream untouched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ask {
    pub model: String,
    pub stream: bool,
}

#[derive(Deserialize)]
struct Peek {
    model: Option<String>,
    #[serde(default)]
    stream: Option<bool>,
    // Named so serde skips them without building values.
    #[serde(default, rename = "messages")]
    _messages: IgnoredAny,
}

/// Reads `model` and `stream` from a Messages (or count_tokens) body.
pub fn inspect(body: &[u8]) -> Result<Ask, ApiError> {
    let peek: Peek = serde_json::from_slice(body)
        .map_err(|e| ApiError::invalid(format!("request body is not valid JSON: {e}")))?;
    let model = peek
        .model
        .filter(|m| !m.is_empty())
        .ok_or_else(|| ApiError::invalid("model: field required"))?;
    Ok(Ask {
        model,
        stream: peek.stream.unwrap_or(false),
    })
}

/// Client headers that must not go upstream besides hop-by-hop ones: the client's own
/// credentials (replaced by the account's), and those the upstream request sets itself.
const CLIENT_ONLY: &[&str] = &["x-api-key", "x-goog-api-key", "cookie"];

/// The upstream request's headers: the client's end-to-end headers (`anthropic-version`,
/// `anthropic-beta`, …) with its credentials replaced by the account's, asking for an
/// uncompressed body so usage can be read.
pub fn upstream_headers(client: &HeaderMap, account: &Account) -> HeaderMap {
    let mut headers = client.clone();
    super::strip_hop_by_hop(&mut headers);
    for name in CLIENT_ONLY {
        headers.remove(*name);
    }
    headers.remove(header::AUTHORIZATION);
    headers.remove(header::HOST);
    headers.remove(header::CONTENT_LENGTH);
    headers.insert(
        header::ACCEPT_ENCODING,
        HeaderValue::from_static("identity"),
    );
    headers.insert("x-api-key", account.api_key.clone());
    if !headers.contains_key("anthropic-version") {
        headers.insert("anthropic-version", HeaderValue::from_static("2023-06-01"));
    }
    headers
}

/// `base_url` + the client's path (without Switchyard's `/api` or `/claude` prefix) + its query.
pub fn upstream_url(account: &Account, path: &str, query: Option<&str>) -> String {
    let base = account.record.base_url.trim_end_matches('/');
    match query {
        Some(q) => format!("{base}{path}?{q}"),
        None => format!("{base}{path}"),
    }
}

/// An SSE `error` event as Anthropic sends one mid-stream; clients surface its message.
pub fn error_event(kind: &str, message: &str) -> bytes::Bytes {
    let data =
        serde_json::json!({ "type": "error", "error": { "type": kind, "message": message } });
    bytes::Bytes::from(format!("event: error\ndata: {data}\n\n"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn inspect_reads_model_and_stream_only() {
        let ask = inspect(
            br#"{"model":"claude-x","stream":true,"messages":[{"role":"user","content":"hi"}]}"#,
        )
        .unwrap();
        assert_eq!(
            ask,
            Ask {
                model: "claude-x".into(),
                stream: true
            }
        );
        let ask = inspect(br#"{"model":"claude-x","max_tokens":5}"#).unwrap();
        assert!(!ask.stream);
        assert_eq!(inspect(b"{").unwrap_err().status, 400);
        assert_eq!(inspect(br#"{"messages":[]}"#).unwrap_err().status, 400);
        assert_eq!(inspect(br#"[1]"#).unwrap_err().status, 400);
    }
}
