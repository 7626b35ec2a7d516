//! Upstream calls straight to the vendor (hyper-util's client) and through a configured proxy
//! (reqwest's): the same answers, the proxy really in the path, and errors that name where the
//! request went but never a secret.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

use crate::support::mock::MockUpstream;
use crate::support::relay::{Relay, messages_body, test_config};

/// What a forward proxy saw of one request: its target (absolute-form) and credentials.
#[derive(Debug, Clone)]
struct Seen {
    uri: String,
    proxy_authorization: Option<String>,
}

/// A plain HTTP forward proxy on 127.0.0.1:0: records each request, sends it on to the
/// absolute URI it names, and streams the answer back.
async fn forward_proxy() -> (SocketAddr, Arc<Mutex<Vec<Seen>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    crate::support::mock::http_client(); // the process's rustls provider
    let onward = reqwest::Client::builder().no_proxy().build().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let (log, onward) = (Arc::clone(&log), onward.clone());
            tokio::spawn(async move {
                let service = service_fn(move |req: http::Request<Incoming>| {
                    let (log, onward) = (Arc::clone(&log), onward.clone());
                    async move {
                        let (mut head, body) = req.into_parts();
                        log.lock().unwrap().push(Seen {
                            uri: head.uri.to_string(),
                            proxy_authorization: head
                                .headers
                                .remove("proxy-authorization")
                                .map(|v| v.to_str().unwrap().to_owned()),
                        });
                        head.headers.remove(http::header::HOST);
                        let body = body.collect().await.unwrap().to_bytes();
                        let answer = onward
                            .request(head.method, head.uri.to_string())
                            .headers(head.headers)
                            .body(body)
                            .send()
                            .await
                            .unwrap();
                        Ok::<_, Infallible>(http::Response::<reqwest::Body>::from(answer))
                    }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, seen)
}

/// Sends a request (with a query) that cannot reach its upstream: a 502 in Anthropic's shape
/// whose message says it could not connect and names `base` + the path, never the query. The
/// whole answer, for more checks.
async fn cannot_connect(relay: &Relay, key: &str, base: &str) -> String {
    let resp = relay
        .messages_at(
            "/v1/messages?beta=true",
            key,
            &messages_body("claude-sonnet-4-5", false),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 502);
    let text = resp.text().await.unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        (&v["type"], &v["error"]["type"]),
        (&json!("error"), &json!("api_error"))
    );
    let message = v["error"]["message"].as_str().unwrap();
    assert!(message.contains("(connect)"), "{message}");
    assert!(
        message.contains(&format!("{base}/v1/messages:")),
        "{message}"
    );
    assert!(!text.contains("beta=true"), "{text}");
    text
}

fn closed_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

#[tokio::test]
async fn upstream_calls_go_through_the_configured_proxy() {
    let mock = MockUpstream::start().await;
    let (proxy, seen) = forward_proxy().await;
    let relay = Relay::start_configured(|c| {
        c.upstream.proxy = Some(format!("http://team:s3cret@{proxy}"));
    })
    .await;
    assert!(relay.app.http().proxied());
    relay.add_account(&mock, "sk-a", json!({})).await;
    let (_, key) = relay.create_key("k").await;

    for stream in [false, true] {
        let resp = relay
            .messages(&key, &messages_body("claude-sonnet-4-5", stream))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        // The answer passes through both hops unchanged.
        assert_eq!(
            resp.bytes().await.unwrap(),
            *mock.responses().last().unwrap()
        );
    }
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2, "{seen:?}");
    for s in &seen {
        assert_eq!(s.uri, format!("{}/v1/messages", mock.base_url()));
        // base64("team:s3cret")
        assert_eq!(
            s.proxy_authorization.as_deref(),
            Some("Basic dGVhbTpzM2NyZXQ=")
        );
    }
    // The vendor got the account's credential, not the proxy's.
    let requests = mock.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[0].credential().as_deref(), Some("sk-a"));
    assert!(requests[0].header("proxy-authorization").is_none());
}

#[tokio::test]
async fn a_dead_proxy_is_a_bad_gateway_that_names_no_credential() {
    let mock = MockUpstream::start().await;
    let dead = closed_port();
    let relay = Relay::start_configured(|c| {
        c.upstream.proxy = Some(format!("http://team:s3cret@{dead}"));
        c.scheduler.max_attempts = 1;
    })
    .await;
    let account = relay.add_account(&mock, "sk-a", json!({})).await;
    let (_, key) = relay.create_key("k").await;
    let text = cannot_connect(&relay, &key, &mock.base_url()).await;
    // No credential of the proxy's or the account's.
    assert!(!text.contains("s3cret") && !text.contains("sk-a"), "{text}");
    assert!(mock.requests().is_empty());
    assert_eq!(relay.account_in_flight(&account).await, 0);
}

#[tokio::test]
async fn a_proxy_that_is_not_a_url_stops_the_start() {
    let tmp = tempfile::tempdir().unwrap();
    let mut config = test_config(tmp.path());
    config.upstream.proxy = Some("not a proxy".to_owned());
    let err = switchyard::app::App::open(config).await.err().unwrap();
    assert!(format!("{err:#}").contains("upstream.proxy"), "{err:#}");
}

#[tokio::test]
async fn a_direct_call_that_cannot_connect_names_the_url_without_its_query() {
    let relay = Relay::start_configured(|c| c.scheduler.max_attempts = 1).await;
    assert!(!relay.app.http().proxied());
    let dead = closed_port();
    let (status, v) = relay
        .admin(
            reqwest::Method::POST,
            "/admin/accounts",
            Some(
                json!({ "name": "gone", "provider": "anthropic", "api_key": "sk-x",
                "base_url": format!("http://{dead}") }),
            ),
        )
        .await;
    assert_eq!(status, 201, "{v}");
    let (_, key) = relay.create_key("k").await;
    let text = cannot_connect(&relay, &key, &format!("http://{dead}")).await;
    assert!(!text.contains("sk-x"), "{text}");
}

/// What a SOCKS5 proxy did for one connection: the credentials it was given, how the target was
/// named (1: IPv4, 3: a host name, 4: IPv6) and the target it connected to.
#[derive(Debug, Clone, PartialEq)]
struct Tunnel {
    user: String,
    password: String,
    address_type: u8,
    target: String,
}

/// A SOCKS5 proxy (RFC 1928) on 127.0.0.1:0 that takes username and password only (RFC 1929),
/// records each tunnel and carries its bytes both ways.
async fn socks5_proxy() -> (SocketAddr, Arc<Mutex<Vec<Tunnel>>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn bytes(s: &mut tokio::net::TcpStream, n: usize) -> Vec<u8> {
        let mut buf = vec![0; n];
        s.read_exact(&mut buf).await.unwrap();
        buf
    }
    async fn tunnel(mut s: tokio::net::TcpStream, log: Arc<Mutex<Vec<Tunnel>>>) {
        let head = bytes(&mut s, 2).await;
        assert_eq!(head[0], 5, "a SOCKS5 greeting");
        let methods = bytes(&mut s, head[1] as usize).await;
        if !methods.contains(&2) {
            s.write_all(&[5, 0xff]).await.unwrap();
            return;
        }
        s.write_all(&[5, 2]).await.unwrap();
        let version = bytes(&mut s, 2).await;
        assert_eq!(version[0], 1, "RFC 1929's version");
        let user = String::from_utf8(bytes(&mut s, version[1] as usize).await).unwrap();
        let len = bytes(&mut s, 1).await[0] as usize;
        let password = String::from_utf8(bytes(&mut s, len).await).unwrap();
        s.write_all(&[1, 0]).await.unwrap();
        let request = bytes(&mut s, 4).await;
        assert_eq!(&request[..3], &[5, 1, 0], "a CONNECT");
        let host = match request[3] {
            1 => std::net::Ipv4Addr::from(<[u8; 4]>::try_from(bytes(&mut s, 4).await).unwrap())
                .to_string(),
            3 => {
                let len = bytes(&mut s, 1).await[0] as usize;
                String::from_utf8(bytes(&mut s, len).await).unwrap()
            }
            other => panic!("address type {other}"),
        };
        let port = u16::from_be_bytes(<[u8; 2]>::try_from(bytes(&mut s, 2).await).unwrap());
        let target = format!("{host}:{port}");
        let mut onward = tokio::net::TcpStream::connect(&target).await.unwrap();
        log.lock().unwrap().push(Tunnel {
            user,
            password,
            address_type: request[3],
            target,
        });
        s.write_all(&[5, 0, 0, 1, 0, 0, 0, 0, 0, 0]).await.unwrap();
        let _ = tokio::io::copy_bidirectional(&mut s, &mut onward).await;
    }

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(tunnel(stream, Arc::clone(&log)));
        }
    });
    (addr, seen)
}

/// Asks for a small Claude answer, streamed or not: its status and bytes.
async fn ask(relay: &Relay, key: &str, stream: bool) -> (u16, bytes::Bytes) {
    let resp = relay
        .messages(key, &messages_body("claude-sonnet-4-5", stream))
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.bytes().await.unwrap())
}

async fn view(relay: &Relay, id: &str) -> Value {
    let (status, v) = relay
        .admin(reqwest::Method::GET, &format!("/admin/accounts/{id}"), None)
        .await;
    assert_eq!(status, 200, "{v}");
    v
}

async fn patch(relay: &Relay, id: &str, change: Value) -> (u16, Value) {
    let (status, v) = relay
        .admin(
            reqwest::Method::PATCH,
            &format!("/admin/accounts/{id}"),
            Some(change),
        )
        .await;
    (status, v)
}

#[tokio::test]
async fn an_accounts_own_proxy_carries_its_calls_and_no_other_accounts() {
    let (near, far) = (MockUpstream::start().await, MockUpstream::start().await);
    let (proxy, seen) = forward_proxy().await;
    let relay = Relay::start().await;
    let url = format!("http://acct:pw-1@{proxy}");
    let proxied = relay
        .add_account(&near, "sk-near", json!({ "priority": 10, "proxy": url }))
        .await;
    let far_id = relay
        .add_account(&far, "sk-far", json!({ "priority": 20 }))
        .await;
    let (_, key) = relay.create_key("k").await;

    for stream in [false, true] {
        let (status, bytes) = ask(&relay, &key, stream).await;
        assert_eq!(status, 200);
        assert_eq!(bytes, *near.responses().last().unwrap());
    }
    let through = seen.lock().unwrap().clone();
    assert_eq!(through.len(), 2, "{through:?}");
    for s in &through {
        assert_eq!(s.uri, format!("{}/v1/messages", near.base_url()));
        // base64("acct:pw-1")
        assert_eq!(s.proxy_authorization.as_deref(), Some("Basic YWNjdDpwdy0x"));
    }
    assert_eq!(near.requests()[0].credential().as_deref(), Some("sk-near"));

    // Shown with its credentials masked, in the account and in the list; never the password.
    let shown = view(&relay, &proxied).await;
    assert_eq!(shown["proxy"], format!("http://***@{proxy}"));
    let (_, list) = relay
        .admin(reqwest::Method::GET, "/admin/accounts", None)
        .await;
    assert!(!list.to_string().contains("pw-1"), "{list}");
    assert!(list.to_string().contains(&format!("http://***@{proxy}")));

    // Written back as shown, the mask is refused (it would replace the credentials); so is
    // what is not a proxy. Nothing changes.
    for bad in [
        json!(format!("http://***@{proxy}")),
        json!("ftp://x"),
        json!(7),
    ] {
        let (status, v) = patch(&relay, &proxied, json!({ "proxy": bad })).await;
        assert_eq!(status, 400, "{bad}: {v}");
    }
    let (status, v) = patch(&relay, &proxied, json!({ "proxy": "ftp://x" })).await;
    assert_eq!(status, 400);
    assert!(v.to_string().contains("proxy"), "{v}");

    // The other account's calls go straight.
    patch(&relay, &proxied, json!({ "enabled": false })).await;
    assert_eq!(ask(&relay, &key, false).await.0, 200);
    assert_eq!(far.requests().len(), 1);
    assert_eq!(seen.lock().unwrap().len(), 2);

    // A change of something else keeps the proxy; `null` takes it away. (The conversation
    // stays on the account that served it while that one serves.)
    patch(&relay, &far_id, json!({ "enabled": false })).await;
    let (status, v) = patch(&relay, &proxied, json!({ "enabled": true })).await;
    assert_eq!(
        (status, &v["proxy"]),
        (200, &json!(format!("http://***@{proxy}")))
    );
    assert_eq!(ask(&relay, &key, false).await.0, 200);
    assert_eq!((near.requests().len(), far.requests().len()), (3, 1));
    assert_eq!(seen.lock().unwrap().len(), 3);
    let (status, v) = patch(&relay, &proxied, json!({ "proxy": null })).await;
    assert_eq!((status, &v["proxy"]), (200, &Value::Null));
    assert_eq!(ask(&relay, &key, false).await.0, 200);
    assert_eq!(seen.lock().unwrap().len(), 3);
    assert_eq!(near.requests().len(), 4);
}

#[tokio::test]
async fn an_accounts_socks5_proxy_wins_over_the_configured_one() {
    let mock = MockUpstream::start().await;
    let (everyone, through_everyone) = forward_proxy().await;
    let (socks, tunnels) = socks5_proxy().await;
    let relay = Relay::start_configured(|c| {
        c.upstream.proxy = Some(format!("http://{everyone}"));
    })
    .await;
    let id = relay
        .add_account(
            &mock,
            "sk-a",
            json!({ "proxy": format!("socks5://bob:pw-2@{socks}") }),
        )
        .await;
    let (_, key) = relay.create_key("k").await;
    for stream in [false, true] {
        let (status, bytes) = ask(&relay, &key, stream).await;
        assert_eq!(status, 200);
        assert_eq!(bytes, *mock.responses().last().unwrap());
    }
    assert!(through_everyone.lock().unwrap().is_empty());
    let opened = tunnels.lock().unwrap().clone();
    // Kept alive: one tunnel (or two, if the pool opened another) for both calls.
    assert!(!opened.is_empty() && opened.len() <= 2, "{opened:?}");
    assert_eq!(
        opened[0],
        Tunnel {
            user: "bob".into(),
            password: "pw-2".into(),
            address_type: 1,
            target: mock.addr().to_string(),
        }
    );
    assert_eq!(mock.requests().len(), 2);

    // socks5h: the proxy is given the host's name to resolve.
    let port = mock.addr().port();
    let (status, v) = patch(
        &relay,
        &id,
        json!({ "proxy": format!("socks5h://bob:pw-2@{socks}"),
                "base_url": format!("http://localhost:{port}") }),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(ask(&relay, &key, false).await.0, 200);
    let last = tunnels.lock().unwrap().last().cloned().unwrap();
    assert_eq!(
        (last.address_type, last.target),
        (3, format!("localhost:{port}"))
    );
    assert!(through_everyone.lock().unwrap().is_empty());
}

#[tokio::test]
async fn an_account_whose_proxy_is_down_fails_over_and_names_no_credential() {
    let (mock, other) = (MockUpstream::start().await, MockUpstream::start().await);
    let dead = closed_port();
    let relay = Relay::start().await;
    let id = relay
        .add_account(
            &mock,
            "sk-a",
            json!({ "priority": 10, "proxy": format!("http://acct:pw-3@{dead}") }),
        )
        .await;
    relay
        .add_account(&other, "sk-b", json!({ "priority": 20 }))
        .await;
    let (_, key) = relay.create_key("k").await;
    let (status, _) = ask(&relay, &key, false).await;
    assert_eq!(status, 200);
    // Never straight: the account's vendor was not called.
    assert!(mock.requests().is_empty());
    assert_eq!(other.requests().len(), 1);
    let state = &view(&relay, &id).await["state"];
    let error = state["last_error"].as_str().unwrap();
    assert!(!error.contains("pw-3"), "{error}");
    assert_eq!(relay.account_in_flight(&id).await, 0);

    // Alone, it is a 502 that says where the call went and carries no credential.
    let relay = Relay::start_configured(|c| c.scheduler.max_attempts = 1).await;
    relay
        .add_account(
            &mock,
            "sk-a",
            json!({ "proxy": format!("socks5://acct:pw-3@{dead}") }),
        )
        .await;
    let (_, key) = relay.create_key("k").await;
    let text = cannot_connect(&relay, &key, &mock.base_url()).await;
    assert!(!text.contains("pw-3") && !text.contains("sk-a"), "{text}");
    assert!(mock.requests().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_accounts_token_is_renewed_through_its_proxy() {
    use crate::support::token_endpoint::TokenEndpoint;

    let mock = MockUpstream::start().await;
    let tokens = TokenEndpoint::start().await;
    tokens.serve_for(&mock, "at-0");
    let (proxy, seen) = forward_proxy().await;
    let relay = Relay::start().await;
    let id = relay
        .add_account(
            &mock,
            "at-0",
            json!({ "oauth": tokens.grant(), "proxy": format!("http://acct:pw-4@{proxy}") }),
        )
        .await;
    // The grant has no expiry: it is renewed at once, here or by the background check.
    let (status, v) = relay
        .admin(
            reqwest::Method::POST,
            &format!("/admin/accounts/{id}/refresh"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{v}");
    assert!(tokens.granted() >= 1);
    let (_, key) = relay.create_key("k").await;
    assert_eq!(ask(&relay, &key, false).await.0, 200);
    let through: Vec<String> = seen.lock().unwrap().iter().map(|s| s.uri.clone()).collect();
    assert_eq!(through[0], tokens.url(), "{through:?}");
    assert_eq!(
        through.last().unwrap(),
        &format!("{}/v1/messages", mock.base_url())
    );
    assert!(
        seen.lock()
            .unwrap()
            .iter()
            .all(|s| s.proxy_authorization.as_deref() == Some("Basic YWNjdDpwdy00"))
    );
}

#[tokio::test]
async fn a_google_logins_setup_goes_through_its_proxy() {
    let mock = MockUpstream::start().await;
    mock.set_code_assist_project(Some("proj-loaded"));
    let (proxy, seen) = forward_proxy().await;
    let relay = Relay::start().await;
    relay
        .add_account(
            &mock,
            "ya29.login",
            json!({ "provider": "code-assist", "proxy": format!("http://{proxy}") }),
        )
        .await;
    let (_, key) = relay.create_key("k").await;
    let resp = crate::support::mock::http_client()
        .post(relay.url("/v1beta/models/gemini-2.5-flash:generateContent"))
        .header("x-goog-api-key", &key)
        .json(&json!({ "contents": [{ "role": "user", "parts": [{ "text": "hi" }] }] }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let through: Vec<String> = seen.lock().unwrap().iter().map(|s| s.uri.clone()).collect();
    let base = mock.base_url();
    assert_eq!(
        through,
        [
            format!("{base}/v1internal:loadCodeAssist"),
            format!("{base}/v1internal:generateContent"),
        ]
    );
}

/// An HTTP proxy that records each CONNECT it is asked for (the target, and its credentials)
/// and refuses it.
async fn refusing_connect_proxy() -> (SocketAddr, Arc<Mutex<Vec<Seen>>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let log = Arc::clone(&log);
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.ends_with(b"\r\n\r\n") {
                    let Ok(n) = stream.read(&mut buf).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    head.extend_from_slice(&buf[..n]);
                }
                let head = String::from_utf8(head).unwrap();
                let mut lines = head.lines();
                let request = lines.next().unwrap().to_owned();
                let auth = lines
                    .filter_map(|l| l.split_once(": "))
                    .find(|(k, _)| k.eq_ignore_ascii_case("proxy-authorization"))
                    .map(|(_, v)| v.to_owned());
                log.lock().unwrap().push(Seen {
                    uri: request,
                    proxy_authorization: auth,
                });
                let _ = stream
                    .write_all(b"HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\n\r\n")
                    .await;
            });
        }
    });
    (addr, seen)
}

#[tokio::test]
async fn an_https_vendor_is_reached_through_the_accounts_proxy_by_connect() {
    let (proxy, seen) = refusing_connect_proxy().await;
    let relay = Relay::start_configured(|c| c.scheduler.max_attempts = 1).await;
    let (status, v) = relay
        .admin(
            reqwest::Method::POST,
            "/admin/accounts",
            Some(
                json!({ "name": "far", "provider": "anthropic", "api_key": "sk-x",
                "base_url": "https://api.vendor.invalid",
                "proxy": format!("http://acct:pw-5@{proxy}") }),
            ),
        )
        .await;
    assert_eq!(status, 201, "{v}");
    let (_, key) = relay.create_key("k").await;
    // The proxy refused the tunnel: the call failed, and never went anywhere else (the name
    // does not resolve: only the proxy could have reached it).
    let (status, body) = ask(&relay, &key, false).await;
    assert_eq!(status, 502);
    assert!(!String::from_utf8_lossy(&body).contains("pw-5"));
    let asked = seen.lock().unwrap().clone();
    assert_eq!(asked.len(), 1, "{asked:?}");
    assert_eq!(asked[0].uri, "CONNECT api.vendor.invalid:443 HTTP/1.1");
    // base64("acct:pw-5")
    assert_eq!(
        asked[0].proxy_authorization.as_deref(),
        Some("Basic YWNjdDpwdy01")
    );
}

#[tokio::test]
async fn an_account_whose_proxy_cannot_be_opened_is_not_served() {
    let mock = MockUpstream::start().await;
    let relay = Relay::start().await;
    let id = relay
        .add_account(&mock, "sk-a", json!({ "proxy": "socks5://127.0.0.1:1080" }))
        .await;
    // Sealed under another key (or written by hand): it cannot be opened.
    let store = relay.app.store();
    let mut record = store.account(&id).await.unwrap().unwrap();
    record.sealed_proxy = Some("not sealed by this key".into());
    assert!(store.update_account_checked(&record).await.unwrap());
    relay.app.catalog.reload_accounts().await.unwrap();
    assert!(relay.app.catalog.accounts().iter().all(|a| a.id() != id));
    let (_, key) = relay.create_key("k").await;
    let (status, _) = ask(&relay, &key, false).await;
    assert_eq!(status, 404);
    assert!(mock.requests().is_empty());
}
