//! Upstream vendors: one file each, building the upstream request (URL and headers) for an
//! account of theirs.

pub mod anthropic;
pub mod azure;
pub mod gemini;
pub mod openai;

use http::header::{self, HeaderName};
use http::{HeaderMap, HeaderValue};

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1): never forwarded.
const HOP_BY_HOP: &[HeaderName] = &[
    header::CONNECTION,
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Removes hop-by-hop headers, including any the `Connection` header names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named.iter().chain(HOP_BY_HOP) {
        headers.remove(name);
    }
    headers.remove("keep-alive");
    headers.remove("proxy-connection");
}

/// Response headers from upstream, ready for the client.
pub fn response_headers(mut headers: HeaderMap) -> HeaderMap {
    strip_hop_by_hop(&mut headers);
    headers
}

/// Client headers that must not go upstream besides hop-by-hop ones: the client's own
/// credentials (replaced by the account's), and those the upstream request sets itself.
const CLIENT_ONLY: &[&str] = &["x-api-key", "x-goog-api-key", "api-key", "cookie"];

/// The client's end-to-end headers without its credentials, asking for an uncompressed body so
/// usage can be read.
pub fn forward_headers(client: &HeaderMap) -> HeaderMap {
    let mut headers = client.clone();
    strip_hop_by_hop(&mut headers);
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
    headers
}

/// `base` + `path` + `?query`.
pub fn join(base: &str, path: &str, query: Option<&str>) -> String {
    let base = base.trim_end_matches('/');
    match query.filter(|q| !q.is_empty()) {
        Some(q) => format!("{base}{path}?{q}"),
        None => format!("{base}{path}"),
    }
}
