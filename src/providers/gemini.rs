//! Google Gemini (the Generative Language API): the `x-goog-api-key` header, and a base URL
//! without the version, as the Google SDKs have it; the client's version (`v1beta` or `v1`) and
//! method path are kept.

use http::HeaderMap;

use crate::catalog::Account;

pub const DEFAULT_BASE_URL: &str = "https://generativelanguage.googleapis.com";

/// `base_url` + `/{version}/{path}` + the client's query without its `key` (the client's own
/// credential).
pub fn upstream_url(account: &Account, version: &str, path: &str, query: Option<&str>) -> String {
    let query = query.map(without_key);
    super::join(
        &account.record.base_url,
        &format!("/{version}/{path}"),
        query.as_deref(),
    )
}

pub fn upstream_headers(client: &HeaderMap, account: &Account) -> HeaderMap {
    let mut headers = super::forward_headers(client);
    headers.insert("x-goog-api-key", account.api_key.clone());
    headers
}

/// The query without `key=…`.
pub fn without_key(query: &str) -> String {
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(form_urlencoded::parse(query.as_bytes()).filter(|(k, _)| k != "key"))
        .finish()
}

/// The client's key when it came as `?key=`.
pub fn query_key(query: Option<&str>) -> Option<String> {
    form_urlencoded::parse(query?.as_bytes())
        .find(|(k, _)| k == "key")
        .map(|(_, v)| v.into_owned())
}

/// How a Gemini SSE stream reports an error mid-stream.
pub fn error_event(message: &str) -> bytes::Bytes {
    let data = serde_json::json!({
        "error": { "code": 500, "message": message, "status": "INTERNAL" }
    });
    bytes::Bytes::from(format!("data: {data}\n\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_client_key_never_goes_upstream() {
        assert_eq!(without_key("alt=sse&key=sy-secret"), "alt=sse");
        assert_eq!(without_key("key=sy-secret"), "");
        assert_eq!(query_key(Some("alt=sse&key=sy-x")).as_deref(), Some("sy-x"));
        assert_eq!(query_key(Some("alt=sse")), None);
    }
}
