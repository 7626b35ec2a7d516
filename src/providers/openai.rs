//! OpenAI and OpenAI-compatible vendors: `Authorization: Bearer`, and a base URL that includes
//! the version path, as the OpenAI SDKs have it (`https://api.openai.com/v1`, DeepSeek's
//! `https://api.deepseek.com/v1`, DashScope's `…/compatible-mode/v1`).

use http::{HeaderMap, HeaderValue, header};

use crate::catalog::Account;

pub const DEFAULT_BASE_URL: &str = "https://api.openai.com/v1";

/// `base_url` + the path after the client's version (`/chat/completions`) + its query.
pub fn upstream_url(account: &Account, path: &str, query: Option<&str>) -> String {
    super::join(&account.record.base_url, path, query)
}

pub fn upstream_headers(client: &HeaderMap, account: &Account) -> HeaderMap {
    let mut headers = super::forward_headers(client);
    if let Ok(mut bearer) = HeaderValue::from_str(&format!(
        "Bearer {}",
        account.api_key.to_str().unwrap_or("")
    )) {
        bearer.set_sensitive(true);
        headers.insert(header::AUTHORIZATION, bearer);
    }
    headers
}

/// How an OpenAI chat completions stream reports an error mid-stream.
pub fn chat_error_event(message: &str) -> bytes::Bytes {
    let data = serde_json::json!({
        "error": { "message": message, "type": "server_error", "param": null, "code": null }
    });
    bytes::Bytes::from(format!("data: {data}\n\n"))
}

/// How a Responses stream reports an error mid-stream (an `error` event).
pub fn responses_error_event(message: &str) -> bytes::Bytes {
    let data = serde_json::json!({
        "type": "error", "code": "server_error", "message": message, "param": null
    });
    bytes::Bytes::from(format!("event: error\ndata: {data}\n\n"))
}
