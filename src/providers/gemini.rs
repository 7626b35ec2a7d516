//! Google Gemini (the Generative Language API): the `x-goog-api-key` header, and a base URL
//! without the version, as the Google SDKs have it; the client's version (`v1beta` or `v1`) and
//! method path are kept.

use http::HeaderMap;

use crate::catalog::Account;

pub const DEFAULT_BASE_URL: &str = "https://generativelanguage.googleapis.com";

/// `base_url` + `/{version}/{path}` + the client's query (without its `key`, as every
/// upstream URL: `super::join`).
pub fn upstream_url(account: &Account, version: &str, path: &str, query: Option<&str>) -> String {
    super::join(
        &account.record.base_url,
        &format!("/{version}/{path}"),
        query,
    )
}

pub fn upstream_headers(client: &HeaderMap, account: &Account) -> HeaderMap {
    let mut headers = super::forward_headers(client);
    headers.insert("x-goog-api-key", account.api_key.clone());
    headers
}

/// How a Gemini SSE stream reports an error mid-stream.
pub fn error_event(message: &str) -> bytes::Bytes {
    let data = serde_json::json!({
        "error": { "code": 500, "message": message, "status": "INTERNAL" }
    });
    bytes::Bytes::from(format!("data: {data}\n\n"))
}
