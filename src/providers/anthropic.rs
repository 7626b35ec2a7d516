//! Anthropic Messages API: the upstream request, and what the relay needs to know of the body.

use http::{HeaderMap, HeaderName, HeaderValue};
use std::borrow::Cow;

use serde::Deserialize;
use serde::de::{IgnoredAny, SeqAccess, Visitor};
use serde_json::value::RawValue;

use crate::catalog::Account;
use crate::error::ApiError;
use crate::scheduler::session;

pub const DEFAULT_BASE_URL: &str = "https://api.anthropic.com";

/// What the relay reads of a Messages request body; the body itself goes upstream untouched.
#[derive(Debug, Clone)]
pub struct Ask<'a> {
    pub model: String,
    pub stream: bool,
    pub max_tokens: Option<u64>,
    /// What the body says about the conversation, for sticky sessions.
    pub session: session::Hints<'a>,
}

#[derive(Deserialize)]
struct Peek<'a> {
    model: Option<String>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    max_tokens: Option<u64>,
    #[serde(default, borrow)]
    metadata: Option<Metadata<'a>>,
    #[serde(default, borrow)]
    system: Option<&'a RawValue>,
    /// Only the first message is kept; serde still walks the rest without building values.
    #[serde(default, borrow, deserialize_with = "first_of")]
    messages: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct Metadata<'a> {
    #[serde(default, borrow)]
    user_id: Option<Cow<'a, str>>,
}

/// The first element of a JSON array, as raw JSON.
fn first_of<'de, D>(d: D) -> Result<Option<&'de RawValue>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    struct First;
    impl<'de> Visitor<'de> for First {
        type Value = Option<&'de RawValue>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("an array")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let first = seq.next_element::<&'de RawValue>()?;
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            Ok(first)
        }
        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
    }
    d.deserialize_any(First)
}

/// Reads `model`, `stream` and the session hints from a Messages (or count_tokens) body.
pub fn inspect(body: &[u8]) -> Result<Ask<'_>, ApiError> {
    let peek: Peek<'_> = serde_json::from_slice(body)
        .map_err(|e| ApiError::invalid(format!("request body is not valid JSON: {e}")))?;
    let model = peek
        .model
        .filter(|m| !m.is_empty())
        .ok_or_else(|| ApiError::invalid("model: field required"))?;
    Ok(Ask {
        model,
        stream: peek.stream.unwrap_or(false),
        max_tokens: peek.max_tokens,
        session: session::Hints {
            response_id: None,
            metadata_user_id: peek.metadata.and_then(|m| m.user_id),
            prompt_cache_key: None,
            system: peek.system,
            first_message: peek.messages,
        },
    })
}

/// The betas named in `anthropic-beta` headers (each a comma-separated list), trimmed, empty
/// ones left out.
pub fn client_betas(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all("anthropic-beta")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|b| !b.is_empty())
}

/// The beta an OAuth token of a Claude subscription must name to be taken by the API.
pub const OAUTH_BETA: &str = "oauth-2025-04-20";

/// The upstream request's headers: the client's end-to-end headers (`anthropic-version`,
/// `anthropic-beta`, …) with its credentials replaced by the account's: its API key as
/// `x-api-key`, or its subscription's OAuth token as a bearer token, with [`OAUTH_BETA`] among
/// the client's betas.
pub fn upstream_headers(client: &HeaderMap, account: &Account) -> HeaderMap {
    static ANTHROPIC_VERSION: HeaderName = HeaderName::from_static("anthropic-version");
    static ANTHROPIC_BETA: HeaderName = HeaderName::from_static("anthropic-beta");
    let mut headers = super::forward_headers(client);
    match &account.oauth_bearer {
        Some(bearer) => {
            headers.insert(http::header::AUTHORIZATION, bearer.clone());
            let mut betas: Vec<&str> = Vec::new();
            for beta in client_betas(&headers).chain([OAUTH_BETA]) {
                if !betas.contains(&beta) {
                    betas.push(beta);
                }
            }
            // Without the OAuth beta the token is refused (and the account marked
            // unauthorized): it alone, should the client's betas not make a header.
            let value = HeaderValue::from_str(&betas.join(","))
                .unwrap_or_else(|_| HeaderValue::from_static(OAUTH_BETA));
            headers.insert(ANTHROPIC_BETA.clone(), value);
        }
        None => {
            headers.insert(crate::auth::X_API_KEY.clone(), account.api_key.clone());
        }
    }
    if !headers.contains_key(&ANTHROPIC_VERSION) {
        headers.insert(
            ANTHROPIC_VERSION.clone(),
            HeaderValue::from_static("2023-06-01"),
        );
    }
    headers
}

/// `base_url` + the client's path (without Switchyard's `/api` or `/claude` prefix) + its query.
pub fn upstream_url(account: &Account, path: &str, query: Option<&str>) -> String {
    super::join(&account.record.base_url, path, query)
}

/// An SSE `error` event as Anthropic sends one mid-stream; clients surface its message.
pub fn error_event(message: &str) -> bytes::Bytes {
    typed_error_event("api_error", message)
}

/// An SSE `error` event of the given Anthropic error type.
pub fn typed_error_event(kind: &str, message: &str) -> bytes::Bytes {
    let data =
        serde_json::json!({ "type": "error", "error": { "type": kind, "message": message } });
    bytes::Bytes::from(format!("event: error\ndata: {data}\n\n"))
}

/// The HTTP status an Anthropic error (`{"type": "error", "error": {"type": …}}`, as an error
/// event's data) stands for, by its type as Anthropic's error documentation pairs them; `None`
/// for a type it does not list or data that is not such an error.
pub fn error_status(error: &[u8]) -> Option<http::StatusCode> {
    #[derive(Deserialize)]
    struct Error<'a> {
        #[serde(borrow)]
        error: Kind<'a>,
    }
    #[derive(Deserialize)]
    struct Kind<'a> {
        #[serde(rename = "type", borrow)]
        kind: Cow<'a, str>,
    }
    let status = match &*serde_json::from_slice::<Error<'_>>(error).ok()?.error.kind {
        "invalid_request_error" => 400,
        "authentication_error" => 401,
        "billing_error" => 402,
        "permission_error" => 403,
        "not_found_error" => 404,
        "request_too_large" => 413,
        "rate_limit_error" => 429,
        "api_error" => 500,
        "timeout_error" => 504,
        "overloaded_error" => 529,
        _ => return None,
    };
    http::StatusCode::from_u16(status).ok()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn an_error_s_type_stands_for_its_status() {
        let status = |data: &str| error_status(data.as_bytes()).map(|s| s.as_u16());
        assert_eq!(
            status(
                r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#
            ),
            Some(529)
        );
        assert_eq!(
            status(r#"{"type":"error","error":{"message":"x","type":"rate_limit_error"}}"#),
            Some(429)
        );
        assert_eq!(status(r#"{"error":{"type":"api_error"}}"#), Some(500));
        assert_eq!(
            status(r#"{"error":{"type":"invalid_request_error"}}"#),
            Some(400)
        );
        assert_eq!(status(r#"{"error":{"type":"something_new"}}"#), None);
        assert_eq!(status(r#"{"type":"message_start"}"#), None);
        assert_eq!(status("not json"), None);
    }

    #[test]
    fn inspect_reads_model_stream_and_session_hints() {
        let body = br#"{"model":"claude-x","stream":true,"system":"be brief","metadata":{"user_id":"u_session_s1"},"messages":[{"role":"user","content":"hi"},{"role":"assistant","content":"yo"}]}"#;
        let ask = inspect(body).unwrap();
        assert_eq!((ask.model.as_str(), ask.stream), ("claude-x", true));
        assert_eq!(ask.session.system.unwrap().get(), r#""be brief""#);
        assert_eq!(
            ask.session.first_message.unwrap().get(),
            r#"{"role":"user","content":"hi"}"#
        );
        assert_eq!(
            ask.session.metadata_user_id.as_deref(),
            Some("u_session_s1")
        );
        let ask = inspect(br#"{"model":"claude-x","max_tokens":5}"#).unwrap();
        assert!(!ask.stream);
        assert_eq!(inspect(b"{").unwrap_err().status, 400);
        assert_eq!(inspect(br#"{"messages":[]}"#).unwrap_err().status, 400);
        assert_eq!(inspect(br#"[1]"#).unwrap_err().status, 400);
    }
}
