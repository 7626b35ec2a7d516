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
