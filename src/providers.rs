//! Upstream vendors: one file each, building the upstream request (URL and headers) for an
//! account of theirs.

pub mod anthropic;
pub mod azure;
pub mod bedrock;
pub mod chatgpt;
pub mod code_assist;
pub mod gemini;
pub mod json_fields;
pub mod openai;

use std::borrow::Cow;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body::Frame;

use http::header::{self, HeaderName};
use http::{HeaderMap, HeaderValue};

use crate::body::BoxError;
use crate::upstream_client::UpstreamBody;

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

/// Hop-by-hop headers that are not standard names; named once, not parsed per request.
const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// The header names that the `Connection` header lists (hop-by-hop too).
fn connection_named(headers: &HeaderMap) -> Vec<HeaderName> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect()
}

fn is_hop_by_hop(name: &HeaderName) -> bool {
    HOP_BY_HOP.contains(name) || *name == KEEP_ALIVE || *name == PROXY_CONNECTION
}

/// Removes hop-by-hop headers, including any the `Connection` header names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named = connection_named(headers);
    for name in named.iter().chain(HOP_BY_HOP) {
        headers.remove(name);
    }
    headers.remove(KEEP_ALIVE);
    headers.remove(PROXY_CONNECTION);
}

/// Response headers of the account's, or of the vendor's origin, that the client does not get
/// (constants: not parsed per response). `alt-svc` and `strict-transport-security` describe the
/// origin that sent them: passed on, they would offer the relay's clients HTTP/3 on the relay's
/// port (RFC 7838) and pin HTTPS on its domain and subdomains in browsers.
const ACCOUNT_ONLY: [HeaderName; 6] = [
    HeaderName::from_static("anthropic-organization-id"),
    HeaderName::from_static("openai-organization"),
    HeaderName::from_static("openai-project"),
    http::header::SET_COOKIE,
    http::header::ALT_SVC,
    http::header::STRICT_TRANSPORT_SECURITY,
];

/// Whether an answer's head says it is a server-sent event stream.
pub fn is_event_stream(headers: &HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("text/event-stream"))
}

/// Response headers from upstream, ready for the client: hop-by-hop ones dropped, and those
/// that name the account behind the relay (its organisation or project) or would set a cookie
/// or a policy of the vendor's on the relay's origin.
pub fn response_headers(mut headers: HeaderMap) -> HeaderMap {
    strip_hop_by_hop(&mut headers);
    for name in ACCOUNT_ONLY {
        headers.remove(name);
    }
    headers
}

/// Client headers that must not go upstream besides hop-by-hop ones: the client's own
/// credentials (replaced by the account's), the organisation or project they would bill (the
/// OpenAI SDKs send `OPENAI_ORG_ID` / `OPENAI_PROJECT_ID` so; the vendor refuses one the
/// account's key does not belong to with a 401, which would mark the account unauthorized),
/// and those the upstream request sets itself.
fn is_client_only(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "x-api-key"
            | "x-goog-api-key"
            | "api-key"
            | "cookie"
            | "authorization"
            | "openai-organization"
            | "openai-project"
            | "x-goog-user-project"
            // The relay decides the method: an override would make the vendor run another call
            // than the one admitted and billed.
            | "x-http-method-override"
            | "x-http-method"
            | "x-method-override"
            | "host"
            | "content-length"
            // Set by `forward_headers`.
            | "accept-encoding"
    )
}

/// The client's end-to-end headers without its credentials, asking for an uncompressed body so
/// usage can be read.
pub fn forward_headers(client: &HeaderMap) -> HeaderMap {
    // One pass copying what may go, rather than a copy of everything and a lookup per name to
    // remove; the client's order is kept.
    let named = connection_named(client);
    let mut headers = HeaderMap::with_capacity(client.len() + 1);
    for (name, value) in client {
        if !is_hop_by_hop(name) && !is_client_only(name) && !named.contains(name) {
            headers.append(name.clone(), value.clone());
        }
    }
    headers.insert(
        header::ACCEPT_ENCODING,
        HeaderValue::from_static("identity"),
    );
    headers
}

/// An answer's body as another vendor's format, converted chunk by chunk as it comes
/// ([`Converted`]).
pub trait Convert: Send + Sync + Unpin + 'static {
    /// Writes to `out` what `data`, the next chunk, completes; `Ok(true)` when the answer is
    /// complete (nothing more is read). An error ends the body after what was written before it.
    fn feed(&mut self, data: &[u8], out: &mut BytesMut) -> Result<bool, BoxError>;

    /// Writes what is left once the answer has ended.
    fn finish(&mut self, out: &mut BytesMut) -> Result<(), BoxError>;
}

/// `inner` converted by `C`: each chunk's output as one frame (chunks that complete nothing
/// yield none); a fault given after the output that came before it.
pub struct Converted<C> {
    inner: UpstreamBody,
    convert: C,
    /// A fault met after output of the same chunk: given after it.
    failed: Option<BoxError>,
    ended: bool,
}

impl<C: Convert> Converted<C> {
    /// The converted body, ready for a response.
    pub fn body(inner: UpstreamBody, convert: C) -> UpstreamBody {
        let converted = Converted {
            inner,
            convert,
            failed: None,
            ended: false,
        };
        http_body_util::Either::Right(http_body_util::BodyExt::boxed(converted))
    }
}

impl<C: Convert> http_body::Body for Converted<C> {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        loop {
            if let Some(e) = this.failed.take() {
                this.ended = true;
                return Poll::Ready(Some(Err(e)));
            }
            if this.ended {
                return Poll::Ready(None);
            }
            let mut out = BytesMut::new();
            let converted = match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => {
                    this.ended = true;
                    this.convert.finish(&mut out)
                }
                Poll::Ready(Some(Err(e))) => {
                    this.ended = true;
                    return Poll::Ready(Some(Err(e)));
                }
                Poll::Ready(Some(Ok(frame))) => {
                    let Ok(data) = frame.into_data() else {
                        continue;
                    };
                    this.convert.feed(&data, &mut out).map(|complete| {
                        this.ended |= complete;
                    })
                }
            };
            if let Err(e) = converted {
                this.failed = Some(e);
            }
            if !out.is_empty() {
                return Poll::Ready(Some(Ok(Frame::data(out.freeze()))));
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ended && self.failed.is_none()
    }
}

/// A JSON answer with this head, its type and length rewritten.
pub fn json_answer(
    mut head: http::response::Parts,
    body: &serde_json::Value,
) -> crate::upstream_client::UpstreamResponse {
    let bytes = Bytes::from(body.to_string());
    head.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    head.headers
        .insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
    head.headers.remove(header::TRANSFER_ENCODING);
    http::Response::from_parts(
        head,
        http_body_util::Either::Right(crate::body::full(bytes)),
    )
}

/// `base` + `path` + `?query`, without the query's `key=…`: a client may present its Switchyard
/// key there on every surface (`relay::authenticate_with`), and it must not reach any vendor.
pub fn join(base: &str, path: &str, query: Option<&str>) -> String {
    let base = base.trim_end_matches('/');
    let query = query.map(|q| {
        if form_urlencoded::parse(q.as_bytes()).any(|(k, _)| k == "key") {
            Cow::Owned(without_key(q))
        } else {
            Cow::Borrowed(q)
        }
    });
    match query.filter(|q| !q.is_empty()) {
        Some(q) => format!("{base}{path}?{q}"),
        None => format!("{base}{path}"),
    }
}

/// The query without `key=…` (names compared decoded, as `query_key` reads them).
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_accounts_organisation_cookies_and_origin_policies_do_not_reach_the_client() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("anthropic-organization-id", "org-1"),
            ("openai-organization", "org-2"),
            ("openai-project", "proj_3"),
            ("set-cookie", "__cf_bm=x"),
            ("alt-svc", "h3=\":443\"; ma=2592000"),
            (
                "strict-transport-security",
                "max-age=31536000; includeSubDomains",
            ),
            ("connection", "keep-alive"),
            ("request-id", "req_1"),
            ("x-ratelimit-remaining-requests", "9"),
        ] {
            h.insert(HeaderName::from_static(k), v.parse().unwrap());
        }
        let out = response_headers(h);
        let mut names: Vec<&str> = out.keys().map(HeaderName::as_str).collect();
        names.sort_unstable();
        assert_eq!(names, ["request-id", "x-ratelimit-remaining-requests"]);
    }

    #[test]
    fn the_client_key_never_goes_upstream() {
        assert_eq!(without_key("alt=sse&key=sy-secret"), "alt=sse");
        assert_eq!(without_key("key=sy-secret"), "");
        assert_eq!(query_key(Some("alt=sse&key=sy-x")).as_deref(), Some("sy-x"));
        assert_eq!(query_key(Some("k%65y=sy-x")).as_deref(), Some("sy-x"));
        assert_eq!(query_key(Some("alt=sse")), None);
        // Every vendor's URL goes through `join`, with the key presented in any spelling.
        for (query, sent) in [
            (
                Some("beta=true&key=sy-secret"),
                "https://v.example/v1/messages?beta=true",
            ),
            (Some("k%65y=sy-secret"), "https://v.example/v1/messages"),
            (Some("key=sy-secret"), "https://v.example/v1/messages"),
            (Some("beta=true"), "https://v.example/v1/messages?beta=true"),
            (Some("monkey=1"), "https://v.example/v1/messages?monkey=1"),
            (None, "https://v.example/v1/messages"),
        ] {
            assert_eq!(join("https://v.example/", "/v1/messages", query), sent);
        }
    }

    /// What `forward_headers` did before it copied in one pass: clone, then remove.
    fn forward_headers_by_removal(client: &HeaderMap) -> HeaderMap {
        let mut headers = client.clone();
        strip_hop_by_hop(&mut headers);
        for name in [
            "x-api-key",
            "x-goog-api-key",
            "api-key",
            "cookie",
            "openai-organization",
            "openai-project",
            "x-goog-user-project",
        ] {
            headers.remove(name);
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

    fn by_name(headers: &HeaderMap) -> Vec<(String, Vec<Vec<u8>>)> {
        let mut names: Vec<String> = headers.keys().map(|n| n.as_str().to_owned()).collect();
        names.sort();
        names
            .into_iter()
            .map(|n| {
                let values = headers
                    .get_all(n.as_str())
                    .iter()
                    .map(|v| v.as_bytes().to_vec())
                    .collect();
                (n, values)
            })
            .collect()
    }

    #[test]
    fn forward_headers_drops_hop_by_hop_credentials_and_what_the_request_sets() {
        let mut client = HeaderMap::new();
        for (name, value) in [
            ("host", "relay.example"),
            ("connection", "keep-alive, x-trace-hop"),
            ("connection", "Upgrade"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("x-trace-hop", "1"),
            ("upgrade", "h2c"),
            ("te", "trailers"),
            ("transfer-encoding", "chunked"),
            ("x-api-key", "sk-client"),
            ("x-goog-api-key", "g-client"),
            ("api-key", "az-client"),
            ("authorization", "Bearer sk-client"),
            ("cookie", "a=b"),
            ("openai-organization", "org-client"),
            ("openai-project", "proj_client"),
            ("x-goog-user-project", "client-project"),
            ("content-length", "12"),
            ("accept-encoding", "gzip, br"),
            ("anthropic-version", "2023-06-01"),
            ("anthropic-beta", "one"),
            ("anthropic-beta", "two"),
            ("content-type", "application/json"),
            ("user-agent", "claude-cli/1.0"),
        ] {
            client.append(
                HeaderName::from_static(name),
                HeaderValue::from_static(value),
            );
        }
        let forwarded = forward_headers(&client);
        assert_eq!(
            by_name(&forwarded),
            by_name(&forward_headers_by_removal(&client))
        );
        let names: Vec<&str> = forwarded.keys().map(HeaderName::as_str).collect();
        assert_eq!(
            names,
            [
                "anthropic-version",
                "anthropic-beta",
                "content-type",
                "user-agent",
                "accept-encoding"
            ]
        );
        assert_eq!(forwarded.get_all("anthropic-beta").iter().count(), 2);
        assert_eq!(forwarded["accept-encoding"], "identity");
        assert_eq!(
            by_name(&forward_headers(&HeaderMap::new())),
            by_name(&forward_headers_by_removal(&HeaderMap::new()))
        );
    }
}
