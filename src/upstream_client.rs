//! The client for upstream calls.
//!
//! Straight to the vendor, the request goes through hyper-util's pooled client over rustls
//! (HTTP/1.1, or h2 where the vendor offers it by ALPN): the least work per request this stack
//! allows. reqwest on the same path spent 10–20 µs more of CPU per small request, a third of
//! what a bare forward costs (docs/benchmarks.md, session 7).
//!
//! Through a proxy (`upstream.proxy`, or `HTTPS_PROXY`/`HTTP_PROXY`/`ALL_PROXY` in the
//! environment), the request goes through reqwest instead, which speaks to HTTP, HTTPS and
//! SOCKS5 proxies (CONNECT for https upstreams, proxy credentials from the URL) and honours
//! `NO_PROXY`. An account with a proxy of its own (`AccountProxy`) goes through that one only,
//! for every call made for it: never straight, never through `upstream.proxy`.
//!
//! No decompression either way: bodies pass through as sent. Timeouts after connecting are the
//! relay's (first byte) and the tap's (idle), so each can answer in the client's protocol.

use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Either, Full};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::{Client, ResponseFuture};
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::body::BoxError;
use crate::config::UpstreamConfig;

/// An upstream answer's body: hyper's own when it came straight, boxed otherwise (through a
/// proxy, or read whole and kept in memory).
pub type UpstreamBody = Either<Incoming, crate::body::Body>;
pub type UpstreamResponse = http::Response<UpstreamBody>;

/// The start of a small answer's body (an error, a token count): at most `max` bytes, of what
/// came within `within` and before the body failed, if it did.
pub async fn read_capped(mut body: UpstreamBody, max: usize, within: Duration) -> Bytes {
    let mut read = Vec::new();
    let reading = async {
        while let Some(Ok(frame)) = body.frame().await {
            let Ok(chunk) = frame.into_data() else {
                continue;
            };
            let room = max.saturating_sub(read.len());
            read.extend_from_slice(&chunk[..chunk.len().min(room)]);
            if read.len() >= max {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(within, reading).await;
    Bytes::from(read)
}

/// The environment variables reqwest reads its proxies from.
const PROXY_VARS: [&str; 6] = [
    "HTTPS_PROXY",
    "https_proxy",
    "HTTP_PROXY",
    "http_proxy",
    "ALL_PROXY",
    "all_proxy",
];

#[derive(Clone)]
pub enum UpstreamClient {
    Direct(Box<Client<HttpsConnector<HttpConnector>, Full<Bytes>>>),
    Proxied(reqwest::Client),
    /// A client that could not be made (an account's proxy): every call fails with why.
    Unusable(Arc<str>),
}

/// An attempt that produced no response head: why, as a metrics label (`connect` or `other`),
/// and in words.
#[derive(Debug)]
pub struct UpstreamError {
    pub reason: &'static str,
    pub message: String,
}

/// HTTP/2 flow control of the upstream connections (vendors that offer HTTP/2 get it). Every
/// stream of a worker to one vendor shares one connection, whose window a stream holds as long
/// as its client does not read (the body is polled only when the client can take more). With
/// hyper's defaults (2 MiB a stream, 5 MiB a connection), three stalled clients froze every
/// other stream on the connection: their answers stopped, and new ones timed out waiting for
/// their first event, which marked a healthy account failing. A smaller stream window and a
/// larger connection window take sixteen stalled streams to do that (the write deadline cuts
/// an HTTP/1 client that stopped reading); 1 MiB a stream still carries several MB/s at a
/// long round trip.
const H2_STREAM_WINDOW: u32 = 1 << 20;
const H2_CONNECTION_WINDOW: u32 = 16 << 20;

impl UpstreamClient {
    /// Needs the process's rustls provider (`app::install_crypto_provider`).
    pub fn new(config: &UpstreamConfig) -> anyhow::Result<UpstreamClient> {
        let proxy = match &config.proxy {
            Some(url) => Some(
                reqwest::Proxy::all(url.as_str())
                    .map_err(|e| anyhow::anyhow!("upstream.proxy: {}", chain(&e)))?
                    .no_proxy(reqwest::NoProxy::from_env()),
            ),
            None => None,
        };
        if proxy.is_some() || proxy_in_environment() {
            return Ok(UpstreamClient::through(config, proxy, None)?);
        }
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(Duration::from_secs(config.connect_timeout_secs)));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_platform_verifier(crypto_provider())?
            .https_or_http()
            .enable_all_versions()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(config.pool_idle_timeout_secs))
            .pool_max_idle_per_host(config.pool_max_idle_per_host)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .http2_initial_stream_window_size(H2_STREAM_WINDOW)
            .http2_initial_connection_window_size(H2_CONNECTION_WINDOW)
            .build(https);
        Ok(UpstreamClient::Direct(Box::new(client)))
    }

    /// reqwest's client through `proxy`; without one, through the environment's proxies. With
    /// `tls` (`proxy_tls`), on that TLS configuration rather than one of its own (which reads
    /// the system's certificates again).
    fn through(
        config: &UpstreamConfig,
        proxy: Option<reqwest::Proxy>,
        tls: Option<&rustls::ClientConfig>,
    ) -> reqwest::Result<UpstreamClient> {
        let mut builder = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(config.connect_timeout_secs))
            .pool_idle_timeout(Duration::from_secs(config.pool_idle_timeout_secs))
            .pool_max_idle_per_host(config.pool_max_idle_per_host)
            .tcp_nodelay(true)
            .http2_initial_stream_window_size(H2_STREAM_WINDOW)
            .http2_initial_connection_window_size(H2_CONNECTION_WINDOW)
            // A relay passes redirects to the client; following them would resend credentials.
            .redirect(reqwest::redirect::Policy::none());
        if let Some(proxy) = proxy {
            // Given a proxy, reqwest no longer reads the environment's.
            builder = builder.proxy(proxy);
        }
        if let Some(tls) = tls {
            // Its own session cache: a ticket one account's connection got must not be shown
            // on another's, through another proxy (the vendor would see the two are one).
            let mut tls = tls.clone();
            tls.resumption = rustls::client::Resumption::default();
            builder = builder.tls_backend_preconfigured(tls);
        }
        Ok(UpstreamClient::Proxied(builder.build()?))
    }

    pub fn proxied(&self) -> bool {
        matches!(self, UpstreamClient::Proxied(_))
    }

    /// Sends one request; the future resolves with the answer's head. It borrows nothing, so
    /// a request future holding it stays `Send` for any lifetime.
    pub fn send(
        &self,
        method: http::Method,
        url: String,
        headers: http::HeaderMap,
        body: Bytes,
    ) -> impl Future<Output = Result<UpstreamResponse, UpstreamError>> + Send + use<> {
        let pending = match self {
            UpstreamClient::Direct(client) => match http::Uri::try_from(url) {
                Ok(uri) => {
                    let mut request = http::Request::new(Full::new(body));
                    *request.method_mut() = method;
                    // Kept for an error message: a clone shares the parsed URI's bytes.
                    *request.uri_mut() = uri.clone();
                    *request.headers_mut() = headers;
                    Pending::Direct(uri, client.request(request))
                }
                Err(e) => Pending::Invalid(e),
            },
            UpstreamClient::Proxied(client) => {
                let target = url.split('?').next().unwrap_or_default().to_owned();
                let sent = client
                    .request(method, url)
                    .headers(headers)
                    .body(body)
                    .send();
                Pending::Proxied(target, Box::pin(sent))
            }
            UpstreamClient::Unusable(why) => Pending::Unusable(Arc::clone(why)),
        };
        async move {
            match pending {
                Pending::Direct(uri, sent) => match sent.await {
                    Ok(resp) => Ok(resp.map(Either::Left)),
                    Err(e) => Err(UpstreamError {
                        reason: if e.is_connect() { "connect" } else { "other" },
                        message: format!("{}: {}", describe(&uri), chain(&e)),
                    }),
                },
                Pending::Proxied(target, sent) => match sent.await {
                    Ok(resp) => Ok(http::Response::<reqwest::Body>::from(resp)
                        .map(|body| Either::Right(body.map_err(BoxError::from).boxed()))),
                    Err(e) => Err(UpstreamError {
                        reason: if e.is_connect() { "connect" } else { "other" },
                        // reqwest's own message would name the URL with its query.
                        message: format!("{target}: {}", chain(&e.without_url())),
                    }),
                },
                Pending::Invalid(e) => Err(UpstreamError {
                    reason: "other",
                    message: format!("the upstream URL is not valid: {e}"),
                }),
                Pending::Unusable(why) => Err(UpstreamError {
                    reason: "connect",
                    message: why.to_string(),
                }),
            }
        }
    }
}

/// A request on its way, before its head came back.
enum Pending {
    Direct(http::Uri, ResponseFuture),
    /// Boxed: reqwest does not name its future, and this path is not the fast one.
    Proxied(
        String,
        Pin<Box<dyn Future<Output = reqwest::Result<reqwest::Response>> + Send>>,
    ),
    Invalid(http::uri::InvalidUri),
    Unusable(Arc<str>),
}

/// The TLS configuration of the clients through accounts' proxies, made once: as reqwest makes
/// its own (the platform's verifier, h2 or HTTP/1.1 by ALPN), whose making reads and parses
/// the system's certificates, which an account's first call on a worker must not wait for.
/// Needs the process's rustls provider.
pub fn proxy_tls() -> anyhow::Result<rustls::ClientConfig> {
    use rustls_platform_verifier::BuilderVerifierExt;
    let mut tls = rustls::ClientConfig::builder_with_provider(crypto_provider())
        .with_safe_default_protocol_versions()?
        .with_platform_verifier()?
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(tls)
}

/// The process's rustls provider (`app::install_crypto_provider`), ring's when none was
/// installed.
fn crypto_provider() -> Arc<rustls::crypto::CryptoProvider> {
    rustls::crypto::CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::ring::default_provider()))
}

/// What the record's `proxy` of account `id` is sealed under.
pub fn proxy_aad(account_id: &str) -> String {
    format!("{account_id}/proxy")
}

/// The schemes an account's proxy may have: an HTTP proxy (plain or over TLS, CONNECT to https
/// upstreams) or a SOCKS5 one (`socks5h`: the proxy resolves the vendor's host name).
const PROXY_SCHEMES: [&str; 4] = ["http", "https", "socks5", "socks5h"];

/// What shows of a proxy's credentials in a view of it.
pub const MASK: &str = "***";

/// An account's proxy as written (trimmed, checked): an http(s) or socks5(h) URL with a host, a
/// port or the scheme's default, credentials or not, and nothing after the authority. A URL
/// whose credentials are the view's mask (`***`, from `redacted`) is refused: written back, it
/// would replace the real ones.
pub fn valid_proxy(url: &str) -> Result<String, String> {
    let url = url.trim();
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("proxy: {e}"))?;
    if !PROXY_SCHEMES.contains(&parsed.scheme()) || parsed.host().is_none() {
        return Err(
            "proxy: must be an http://, https://, socks5:// or socks5h:// URL with a host".into(),
        );
    }
    if !matches!(parsed.path(), "" | "/") || parsed.query().is_some() || parsed.fragment().is_some()
    {
        return Err("proxy: must be scheme://[user:password@]host[:port], with no path".into());
    }
    if parsed.username() == MASK || parsed.password() == Some(MASK) {
        return Err(format!(
            "proxy: the credentials are the view's mask ({MASK}); give the proxy's own"
        ));
    }
    reqwest::Proxy::all(url).map_err(|e| format!("proxy: {}", chain(&e)))?;
    if !intercepts(url) {
        return Err(
            "proxy: its host must be a plain host name or address (ASCII letters, digits, \
             `-` and `.`: a socks5 URL's host is taken as written)"
                .into(),
        );
    }
    Ok(url.to_owned())
}

/// Whether `url`, as reqwest reads a proxy (an http:// one when it names no scheme or host),
/// is one its client would send calls through (`intercepts`).
pub fn usable_proxy(url: &str) -> bool {
    match reqwest::Url::parse(url) {
        Ok(parsed) if parsed.has_host() => intercepts(url),
        _ => intercepts(&format!("http://{url}")),
    }
}

/// Whether a proxy client made with `url` sends https and http calls through it. reqwest hands
/// the URL on to hyper-util's matcher, which reads it again as an `http::Uri`; one it cannot read
/// (a socks5 URL keeps its host as written: `%`-encoded non-ASCII, quotes) is no proxy at all,
/// and the calls would go straight. Checked wherever a proxy is taken, so that none is used
/// that would not be.
pub fn intercepts(url: &str) -> bool {
    use hyper_util::client::proxy::matcher::Matcher;
    let Ok(parsed) = reqwest::Url::parse(url) else {
        return false;
    };
    let matcher = Matcher::builder().all(parsed.to_string()).build();
    ["https://vendor.invalid/", "http://vendor.invalid/"]
        .into_iter()
        .all(|dst| matcher.intercept(&http::Uri::from_static(dst)).is_some())
}

/// A proxy's URL as views show it: its credentials, if any, masked.
pub fn redacted(url: &str) -> String {
    let Ok(mut parsed) = reqwest::Url::parse(url) else {
        return MASK.to_owned();
    };
    if parsed.username().is_empty() && parsed.password().is_none() {
        return url.to_owned();
    }
    let masked = parsed.set_username(MASK).is_ok() && parsed.set_password(None).is_ok();
    if masked {
        parsed.to_string().trim_end_matches('/').to_owned()
    } else {
        MASK.to_owned()
    }
}

/// An account's own proxy (its record's `proxy`): every call made for the account (its
/// requests, and its token renewals and setup calls) goes through it, never straight nor through
/// `upstream.proxy`. One client per server worker, made when the worker first calls through
/// it (a pooled connection's task runs on the runtime that opened it, as with `WorkerSlot`'s).
///
/// No `Debug`: `reqwest::Proxy`'s prints the URL with its password.
pub struct AccountProxy {
    proxy: reqwest::Proxy,
    clients: OnceLock<Box<[OnceLock<UpstreamClient>]>>,
}

impl AccountProxy {
    /// `None` when `url` is not a proxy reqwest can use (it was checked by `valid_proxy` when
    /// written).
    pub fn new(url: &str) -> Option<AccountProxy> {
        if !intercepts(url) {
            return None;
        }
        Some(AccountProxy {
            proxy: reqwest::Proxy::all(url).ok()?,
            clients: OnceLock::new(),
        })
    }

    /// The client of worker `worker` of `workers`, made now (on `tls`) if it is the worker's
    /// first call.
    pub fn client(
        &self,
        worker: usize,
        workers: usize,
        config: &UpstreamConfig,
        tls: &rustls::ClientConfig,
    ) -> &UpstreamClient {
        let clients = self
            .clients
            .get_or_init(|| (0..workers.max(1)).map(|_| OnceLock::new()).collect());
        clients[worker % clients.len()].get_or_init(|| {
            UpstreamClient::through(config, Some(self.proxy.clone()), Some(tls)).unwrap_or_else(
                |e| {
                    UpstreamClient::Unusable(
                        format!("the account's proxy cannot be used: {}", chain(&e)).into(),
                    )
                },
            )
        })
    }
}

fn proxy_in_environment() -> bool {
    PROXY_VARS
        .iter()
        .any(|var| std::env::var_os(var).is_some_and(|v| !v.is_empty()))
}

/// Where a request went, for error messages: scheme, host and path, never the query.
fn describe(uri: &http::Uri) -> String {
    format!(
        "{}://{}{}",
        uri.scheme_str().unwrap_or("http"),
        uri.authority().map_or("", |a| a.as_str()),
        uri.path()
    )
}

/// An error and its causes on one line: hyper-util's own message only names the stage, reqwest's
/// only "builder error".
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = cause.source();
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::testing::Layer;

    #[test]
    fn errors_show_their_causes_once_and_urls_no_query() {
        let refused = Layer("connection refused", None);
        let connect = Layer(
            "tcp connect error: connection refused",
            Some(Box::new(refused)),
        );
        let outer = Layer("client error (Connect)", Some(Box::new(connect)));
        assert_eq!(
            chain(&outer),
            "client error (Connect): tcp connect error: connection refused"
        );
        let uri: http::Uri = "https://api.example.com:8443/v1/messages?key=secret"
            .parse()
            .unwrap();
        assert_eq!(describe(&uri), "https://api.example.com:8443/v1/messages");
    }

    #[test]
    fn an_accounts_proxy_is_an_http_or_socks5_url_shown_without_its_credentials() {
        crate::app::install_crypto_provider();
        let tls = proxy_tls().unwrap();
        for (given, kept, shown) in [
            (
                " http://10.0.0.9:3128 ",
                "http://10.0.0.9:3128",
                "http://10.0.0.9:3128",
            ),
            (
                "http://user:p%40ss@proxy.example:3128/",
                "http://user:p%40ss@proxy.example:3128/",
                "http://***@proxy.example:3128",
            ),
            (
                "socks5://bob:pw@127.0.0.1:1080",
                "socks5://bob:pw@127.0.0.1:1080",
                "socks5://***@127.0.0.1:1080",
            ),
            (
                "socks5h://only-user@proxy.example",
                "socks5h://only-user@proxy.example",
                "socks5h://***@proxy.example",
            ),
            (
                "https://proxy.example",
                "https://proxy.example",
                "https://proxy.example",
            ),
        ] {
            assert_eq!(valid_proxy(given).unwrap(), kept);
            assert!(intercepts(kept), "{kept}");
            let proxy = AccountProxy::new(kept).unwrap();
            assert!(matches!(
                proxy.client(3, 2, &UpstreamConfig::default(), &tls),
                UpstreamClient::Proxied(_)
            ));
            assert_eq!(redacted(kept), shown);
        }
        for bad in [
            "proxy.example:3128",
            "ftp://proxy.example",
            "socks4://proxy.example:1080",
            "http://proxy.example:3128/path",
            "http://proxy.example:3128/?a=b",
            "http://",
            "socks5://***@127.0.0.1:1080",
            "http://user:***@proxy.example",
            // Hosts a socks5 URL keeps as written, which the proxy client would not read (its
            // calls would go straight).
            "socks5://u:pw@pr\u{f8}xy.example:1080",
            "socks5://pro%41xy:1080",
            "socks5h://u:p@pro`xy:1080",
            "socks5://pro\"xy:1080",
        ] {
            let e = valid_proxy(bad).unwrap_err();
            assert!(e.starts_with("proxy: "), "{bad}: {e}");
            assert!(!e.contains("***@") || bad.contains("***"), "{bad}: {e}");
        }
        // The mask refused names itself, so an admin who wrote a view back knows why.
        assert!(
            valid_proxy("http://user:***@proxy.example")
                .unwrap_err()
                .contains("mask")
        );
        assert_eq!(redacted("not a url"), MASK);
        // One stored before this check: the account is not made (never served straight).
        assert!(AccountProxy::new("socks5://pro%41xy:1080").is_none());
        assert!(AccountProxy::new("http://pr\u{f8}xy.example:3128").is_some());
    }
}
