//! Subscription accounts: OAuth access tokens renewed with their grant before they expire (or
//! once the vendor refuses them), against a token endpoint that rotates refresh tokens as the
//! vendors do; and ChatGPT subscriptions serving Codex CLI through the Codex backend.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::support::captured;
use crate::support::mock::{Behavior, MockUpstream, MockUsage, http_client, wait_until};
use crate::support::relay::{Relay, messages_body};
use crate::support::token_endpoint::{TokenEndpoint, TokenShape, chatgpt_token};

/// A relay that looks for tokens to renew every 50 ms.
async fn relay() -> Relay {
    Relay::start_configured(|c| c.upstream.oauth_check_ms = 50).await
}

async fn account(relay: &Relay, id: &str) -> Value {
    let (status, v) = relay
        .admin(Method::GET, &format!("/admin/accounts/{id}"), None)
        .await;
    assert_eq!(status, 200, "{v}");
    v
}

/// The account's view once `ready` holds of it (renewals write in the background).
async fn account_once(relay: &Relay, id: &str, ready: impl Fn(&Value) -> bool) -> Value {
    for _ in 0..250 {
        let view = account(relay, id).await;
        if ready(&view) {
            return view;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the account never got there: {}", account(relay, id).await);
}

/// Until the token endpoint has answered `n` grants, and the relay has the new token.
async fn renewed(tokens: &TokenEndpoint, relay: &Relay, id: &str, n: usize) {
    wait_until("the token is renewed", || tokens.granted() >= n).await;
    account_once(relay, id, |v| v["oauth"]["refreshed_at"].is_string()).await;
}

/// Seconds from now until the RFC 3339 instant `at` (a view's `expires_at`, `until`).
fn secs_until(at: &Value) -> f64 {
    let at: jiff::Timestamp = at.as_str().unwrap().parse().unwrap();
    (at - jiff::Timestamp::now())
        .total(jiff::Unit::Second)
        .unwrap()
}

/// A small Messages request with `key`.
async fn ask_claude(relay: &Relay, key: &str, stream: bool) -> reqwest::Response {
    relay
        .messages(key, &messages_body("claude-sonnet-4-5", stream))
        .send()
        .await
        .unwrap()
}

/// A `POST /v1/responses` with `key`, its body to come.
fn responses_call(relay: &Relay, key: &str) -> reqwest::RequestBuilder {
    http_client()
        .post(relay.url("/v1/responses"))
        .bearer_auth(key)
}

/// The credential of the last request `mock` received.
fn last_bearer(mock: &MockUpstream) -> String {
    let sent = mock.requests().pop().unwrap();
    sent.header("authorization").unwrap_or_default().to_owned()
}

/// An Anthropic account on `mock` holding `at-0` and the endpoint's grant, its token expiring
/// in `minutes`.
async fn subscribed(
    relay: &Relay,
    mock: &MockUpstream,
    tokens: &TokenEndpoint,
    minutes: i64,
) -> String {
    let mut grant = tokens.grant();
    grant["expires_at"] = json!(in_minutes(minutes));
    relay
        .add_account(mock, "at-0", json!({ "oauth": grant }))
        .await
}

fn in_minutes(minutes: i64) -> String {
    (jiff::Timestamp::now() + jiff::SignedDuration::from_mins(minutes)).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expiring_token_is_renewed_once_and_the_rotated_refresh_token_is_kept() {
    let mock = MockUpstream::start().await;
    let tokens = TokenEndpoint::start().await;
    tokens.serve_for(&mock, "at-0");
    let (tmp, id) = {
        let relay = relay().await;
        // Five minutes left: within the ten before expiry when renewals happen.
        let id = subscribed(&relay, &mock, &tokens, 5).await;
        let (_, key) = relay.create_key("k").await;
        renewed(&tokens, &relay, &id, 1).await;

        // The grant as RFC 6749 §6 has it, as JSON.
        let sent = tokens.requests();
        assert_eq!(
            sent[0],
            json!({ "grant_type": "refresh_token", "refresh_token": "rt-0", "client_id": "test-cli-client" })
        );
        // Requests go with the new token, as a subscription's (a bearer token and the beta).
        let resp = ask_claude(&relay, &key, false).await;
        assert_eq!(resp.status(), 200);
        let upstream = mock.requests().pop().unwrap();
        assert_eq!(upstream.header("authorization"), Some("Bearer at-1"));
        assert!(upstream.header("x-api-key").is_none());
        assert!(
            upstream
                .header("anthropic-beta")
                .unwrap()
                .contains("oauth-2025-04-20")
        );

        // The view tells when, never what.
        let view = account(&relay, &id).await;
        let left = secs_until(&view["oauth"]["expires_at"]);
        assert!((3500.0..=3600.0).contains(&left), "{view}");
        assert_eq!(view["oauth"]["client_id"], "test-cli-client");
        assert!(view["oauth"]["failure"].is_null());
        let shown = view.to_string();
        assert!(!shown.contains("rt-") && !shown.contains("at-1"), "{shown}");

        // An hour left: nothing more to do, however many checks pass.
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(tokens.requests().len(), 1);
        // Counted (the recorder is the test process's: other tests' renewals count too).
        let metrics = relay.metrics().await;
        assert!(
            metrics
                .lines()
                .any(|l| l.starts_with("switchyard_oauth_renewals_total{outcome=\"renewed\"}")),
            "{metrics}"
        );
        let tmp = relay.tmp();
        relay.stop().await;
        (tmp, id)
    };

    // A restart on the same data dir renews with the rotated refresh token it kept.
    let mut config = crate::support::relay::test_config(tmp.as_ref().unwrap().path());
    config.upstream.oauth_check_ms = 50;
    let relay = Relay::start_with(config, tmp).await;
    let (status, v) = relay
        .admin(Method::POST, &format!("/admin/accounts/{id}/refresh"), None)
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(tokens.granted(), 2);
    assert_eq!(tokens.requests()[1]["refresh_token"], "rt-1");
    let (_, key) = relay.create_key("k2").await;
    let resp = ask_claude(&relay, &key, true).await;
    assert_eq!(resp.status(), 200);
    resp.bytes().await.unwrap();
    assert_eq!(last_bearer(&mock), "Bearer at-2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_the_vendor_refuses_is_renewed_and_the_account_serves_again() {
    let mock = MockUpstream::start().await;
    let tokens = TokenEndpoint::start().await;
    // The vendor already takes only the next token: the account's own is refused (revoked).
    tokens.serve_for(&mock, "at-1");
    // Checks a minute apart: the refusal itself has the token renewed at once.
    let relay = Relay::start_configured(|c| c.upstream.oauth_check_ms = 60_000).await;
    let id = subscribed(&relay, &mock, &tokens, 600).await;
    let (_, key) = relay.create_key("k").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(tokens.granted(), 0, "not due: hours left");

    let resp = ask_claude(&relay, &key, false).await;
    assert_ne!(resp.status(), 200);
    // The 401 took the account out of rotation; the renewal brings it back.
    renewed(&tokens, &relay, &id, 1).await;
    account_once(&relay, &id, |v| v["state"]["status"] == "ok").await;
    let resp = ask_claude(&relay, &key, false).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(last_bearer(&mock), "Bearer at-1");

    // The vendor refuses the renewed token too: a third would fare no better, so the grant is
    // not tried again, and says why.
    mock.require_api_key("at-elsewhere");
    let resp = ask_claude(&relay, &key, false).await;
    assert_ne!(resp.status(), 200);
    let failure =
        account_once(&relay, &id, |v| v["oauth"]["failure"].is_string()).await["oauth"]["failure"]
            .clone();
    assert_eq!(
        failure,
        "the vendor refused the token renewed after its refusal too"
    );
    assert_eq!(tokens.requests().len(), 1);
    assert_eq!(
        account(&relay, &id).await["state"]["status"],
        "unauthorized"
    );

    // An admin gives it a token the vendor takes: it serves again at once.
    let (status, v) = relay
        .admin(
            Method::PATCH,
            &format!("/admin/accounts/{id}"),
            Some(json!({ "api_key": "at-elsewhere" })),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["state"]["status"], "ok", "{v}");
    assert_eq!(ask_claude(&relay, &key, false).await.status(), 200);
    assert_eq!(last_bearer(&mock), "Bearer at-elsewhere");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_grant_is_recorded_and_not_tried_again_until_a_new_one_is_given() {
    let mock = MockUpstream::start().await;
    let tokens = TokenEndpoint::start().await;
    let relay = relay().await;
    // A token of unknown expiry is renewed at once; this grant's refresh token is spent.
    let mut grant = tokens.grant();
    grant["refresh_token"] = json!("rt-spent");
    let id = relay
        .add_account(&mock, "at-0", json!({ "oauth": grant }))
        .await;
    wait_until("the grant is tried", || !tokens.requests().is_empty()).await;
    let failure =
        account_once(&relay, &id, |v| v["oauth"]["failure"].is_string()).await["oauth"]["failure"]
            .clone();
    assert_eq!(
        failure,
        "400 Bad Request: invalid_grant: refresh token already used"
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(tokens.requests().len(), 1, "a refused grant is not retried");

    // Asked for, a renewal says why it cannot be done.
    let (status, v) = relay
        .admin(Method::POST, &format!("/admin/accounts/{id}/refresh"), None)
        .await;
    assert_eq!(status, 502, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("invalid_grant"),
        "{v}"
    );

    // A new grant clears the failure and is used at once.
    let (status, v) = relay
        .admin(
            Method::PATCH,
            &format!("/admin/accounts/{id}"),
            Some(json!({ "oauth": tokens.grant() })),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    assert!(v["oauth"]["failure"].is_null(), "{v}");
    renewed(&tokens, &relay, &id, 1).await;
    assert!(account(&relay, &id).await["oauth"]["failure"].is_null());

    // A grant taken away: the account keeps its token, and nothing renews it.
    let (status, v) = relay
        .admin(
            Method::PATCH,
            &format!("/admin/accounts/{id}"),
            Some(json!({ "oauth": null })),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    assert!(v["oauth"].is_null());
    let (status, _) = relay
        .admin(Method::POST, &format!("/admin/accounts/{id}/refresh"), None)
        .await;
    assert_eq!(status, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_endpoint_that_fails_is_tried_again_later_without_losing_the_grant() {
    let mock = MockUpstream::start().await;
    let tokens = TokenEndpoint::start().await;
    tokens.serve_for(&mock, "at-0");
    let relay = relay().await;
    tokens.script(503, json!({ "error": "temporarily_unavailable" }));
    let id = relay
        .add_account(&mock, "at-0", json!({ "oauth": tokens.grant() }))
        .await;
    wait_until("the renewal is tried", || !tokens.requests().is_empty()).await;
    // Held off ten seconds after a failure that may pass; a forced renewal goes now.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(tokens.requests().len(), 1);
    let view = account(&relay, &id).await;
    assert!(view["oauth"]["failure"].is_null(), "{view}");
    let (status, v) = relay
        .admin(Method::POST, &format!("/admin/accounts/{id}/refresh"), None)
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(tokens.granted(), 1);
    assert_eq!(tokens.requests()[1]["refresh_token"], "rt-0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grants_and_subscription_keys_are_validated() {
    let mock = MockUpstream::start().await;
    let tokens = TokenEndpoint::start().await;
    let relay = Relay::start().await;
    let post = |body: Value| {
        let relay = &relay;
        async move {
            relay
                .admin(Method::POST, "/admin/accounts", Some(body))
                .await
        }
    };
    let base = |provider: &str, key: &str| json!({ "name": "sub", "provider": provider, "base_url": mock.base_url(), "api_key": key });
    let with = |mut body: Value, field: &str, value: Value| {
        body[field] = value;
        body
    };
    let cases = [
        (
            with(base("openai", "sk-x"), "oauth", tokens.grant()),
            "oauth: for subscription accounts only",
        ),
        (
            with(
                base("anthropic", "at-0"),
                "oauth",
                json!({ "refresh_token": "rt", "token_url": "ftp://x", "client_id": "c" }),
            ),
            "oauth.token_url",
        ),
        (
            with(
                base("anthropic", "at-0"),
                "oauth",
                json!({ "refresh_token": "rt", "token_url": tokens.url(), "client_id": "" }),
            ),
            "oauth.client_id",
        ),
        (
            with(
                base("anthropic", "at-0"),
                "oauth",
                json!({ "refresh_token": "rt", "token_url": tokens.url() }),
            ),
            "client_id",
        ),
        (base("chatgpt", "sk-proj-abc"), "ChatGPT access token"),
    ];
    for (body, says) in cases {
        let (status, v) = post(body.clone()).await;
        assert_eq!(status, 400, "{body}: {v}");
        assert!(v.to_string().contains(says), "{body}: {v}");
    }
    let (status, v) = relay.admin(Method::GET, "/admin/accounts", None).await;
    assert_eq!((status, v["data"].as_array().unwrap().len()), (200, 0));

    // A ChatGPT token's expiry is read from it; the default endpoint is the Codex backend.
    let token = chatgpt_token("ws-1", 7200, 0);
    let (status, v) = post(json!({
        "name": "sub", "provider": "chatgpt", "api_key": token, "oauth": tokens.grant()
    }))
    .await;
    assert_eq!(status, 201, "{v}");
    assert_eq!(v["base_url"], "https://chatgpt.com/backend-api/codex");
    let left = secs_until(&v["oauth"]["expires_at"]);
    assert!((7100.0..=7200.0).contains(&left), "{v}");
}

/// A ChatGPT account at the mock's Codex backend, its token for ChatGPT account `ws-1`.
async fn chatgpt_account(relay: &Relay, mock: &MockUpstream, token: &str, extra: Value) -> String {
    let mut body = json!({
        "provider": "chatgpt",
        "base_url": format!("{}/backend-api/codex", mock.base_url()),
    });
    if let (Value::Object(b), Value::Object(e)) = (&mut body, extra) {
        b.extend(e);
    }
    relay.add_account(mock, token, body).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn codex_cli_is_served_by_a_chatgpt_subscription() {
    let mock = MockUpstream::start().await;
    mock.set_default(Behavior::Ok(MockUsage::new(120, 30)));
    let token = chatgpt_token("ws-1", 3600, 0);
    mock.require_api_key(&token);
    let relay = Relay::start().await;
    let id = chatgpt_account(&relay, &mock, &token, json!({})).await;
    let (_, key) = relay.create_key("k").await;

    let c = captured("codex-cli.requests.jsonl")
        .into_iter()
        .find(|c| c.path == "/v1/responses")
        .unwrap();
    let raw = serde_json::to_vec(&c.body.clone().unwrap()).unwrap();
    let mut req = responses_call(&relay, &key).body(raw.clone());
    for (name, value) in &c.headers {
        let lower = name.to_ascii_lowercase();
        if !["host", "authorization", "content-length", "accept-encoding"].contains(&lower.as_str())
        {
            req = req.header(name.as_str(), value.as_str());
        }
    }
    let resp = req.send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let got = resp.bytes().await.unwrap();
    assert_eq!(got, mock.responses().pop().unwrap());

    let sent = mock.requests().pop().unwrap();
    assert_eq!(sent.path, "/backend-api/codex/responses");
    assert_eq!(
        sent.header("authorization"),
        Some(format!("Bearer {token}").as_str())
    );
    assert_eq!(sent.header("chatgpt-account-id"), Some("ws-1"));
    assert_eq!(sent.header("openai-beta"), Some("responses=experimental"));
    // Codex's own headers go as they came; its body (`store: false`) byte for byte.
    assert_eq!(sent.header("originator"), Some("codex_exec"));
    assert_eq!(
        sent.header("session-id"),
        Some("01a2021e-9fbe-7e43-88b5-1a0f26f0a7d7")
    );
    assert_eq!(sent.body.as_ref(), raw.as_slice());

    let e = &relay.logged(1).await[0];
    assert_eq!(e["account_id"], id.as_str());
    assert_eq!(
        (e["input_tokens"].as_u64(), e["status"].as_u64()),
        (Some(120), Some(200))
    );

    // Its compaction, as Codex CLI sends one (no `store`, no `stream`), goes as it is.
    let compact = json!({ "model": "gpt-5", "input": [{ "type": "message", "role": "user", "content": [{ "type": "input_text", "text": "hi" }] }], "instructions": "compact" });
    let resp = http_client()
        .post(relay.url("/v1/responses/compact"))
        .bearer_auth(&key)
        .header("originator", "codex_exec")
        .json(&compact)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let answer: Value = resp.json().await.unwrap();
    assert_eq!(answer["usage"]["input_tokens"], 120);
    let sent = mock.requests().pop().unwrap();
    assert_eq!(sent.path, "/backend-api/codex/responses/compact");
    assert_eq!(sent.json(), compact);
    assert_eq!(sent.header("chatgpt-account-id"), Some("ws-1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chatgpt_accounts_serve_responses_only_and_answer_json_from_the_stream() {
    let codex = MockUpstream::start().await;
    codex.set_default(Behavior::Ok(MockUsage::new(40, 12)));
    let api = MockUpstream::start().await;
    let token = chatgpt_token("ws-1", 3600, 0);
    let relay = Relay::start().await;
    let id = chatgpt_account(&relay, &codex, &token, json!({ "priority": 10 })).await;
    let (_, key) = relay.create_key("k").await;
    let responses = |stream: bool| {
        responses_call(&relay, &key)
            // Apart from each other: the same first message would be one session, bound to
            // the account of its first answer.
            .json(
                &json!({ "model": "gpt-5", "input": format!("stream {stream}"), "stream": stream }),
            )
    };

    // A stream that did not say `store: false` goes with it: the backend keeps nothing.
    let resp = responses(true).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    resp.bytes().await.unwrap();
    let sent = codex.requests().pop().unwrap().json();
    assert_eq!(
        (sent["store"].clone(), sent["stream"].clone()),
        (json!(false), json!(true))
    );
    // A call that is not streamed goes as a stream; its final response is the JSON answer.
    let resp = responses(false).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    let answer: Value = resp.json().await.unwrap();
    assert_eq!(answer["object"], "response", "{answer}");
    assert_eq!(answer["status"], "completed");
    assert_eq!(answer["usage"]["input_tokens"], 40);
    let sent = codex.requests().pop().unwrap().json();
    assert_eq!(
        (sent["store"].clone(), sent["stream"].clone()),
        (json!(false), json!(true))
    );
    let logged = relay.logged(2).await;
    assert!(
        logged.iter().all(|e| e["account_id"] == id.as_str()
            && e["input_tokens"] == 40
            && e["output_tokens"] == 12),
        "{logged:?}"
    );
    // Nothing else is the backend's to serve: with only this account, nobody serves them.
    let chat = || {
        http_client()
            .post(relay.url("/v1/chat/completions"))
            .bearer_auth(&key)
            .json(&json!({ "model": "gpt-5", "messages": [{ "role": "user", "content": "hi" }] }))
    };
    let resp = chat().send().await.unwrap();
    assert!(resp.status().is_client_error() || resp.status().is_server_error());
    assert_eq!(codex.requests().len(), 2);

    // Beside an API account, they go there; the Responses calls stay on the subscription.
    relay
        .add_account(
            &api,
            "sk-api",
            json!({ "provider": "openai", "priority": 50, "base_url": format!("{}/v1", api.base_url()) }),
        )
        .await;
    assert_eq!(chat().send().await.unwrap().status(), 200);
    let models = http_client()
        .get(relay.url("/v1/models"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(models.status(), 200);
    let resp = responses(true).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    resp.bytes().await.unwrap();
    assert_eq!(codex.requests().len(), 3);
    assert_eq!(api.requests().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spent_chatgpt_window_rests_the_account_until_its_reset() {
    let codex = MockUpstream::start().await;
    let api = MockUpstream::start().await;
    let relay = Relay::start().await;
    let token = chatgpt_token("ws-1", 3600, 0);
    let id = chatgpt_account(&relay, &codex, &token, json!({ "priority": 10 })).await;
    relay
        .add_account(
            &api,
            "sk-api",
            json!({ "provider": "openai", "priority": 50, "base_url": format!("{}/v1", api.base_url()) }),
        )
        .await;
    let (_, key) = relay.create_key("k").await;
    codex.push_behavior(Behavior::Error {
        status: 429,
        body: json!({ "error": {
            "type": "usage_limit_reached",
            "message": "The usage limit has been reached",
            "plan_type": "plus",
            "resets_in_seconds": 7200,
        }})
        .to_string(),
        headers: Vec::new(),
    });
    let responses = || {
        responses_call(&relay, &key)
            .json(&json!({ "model": "gpt-5", "input": "hi", "stream": true, "store": false }))
    };
    // The spent window fails over to the API account, and the subscription rests until it resets.
    for _ in 0..2 {
        let resp = responses().send().await.unwrap();
        assert_eq!(resp.status(), 200);
        resp.bytes().await.unwrap();
    }
    assert_eq!((codex.requests().len(), api.requests().len()), (1, 2));
    let view = account(&relay, &id).await;
    assert_eq!(view["state"]["status"], "rate_limited", "{view}");
    let left = secs_until(&view["state"]["until"]);
    assert!((7100.0..=7200.0).contains(&left), "{view}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chatgpt_token_is_renewed_with_its_grant() {
    let codex = MockUpstream::start().await;
    let tokens = TokenEndpoint::start().await;
    tokens.set_shape(TokenShape::ChatGpt {
        account_id: "ws-2".into(),
    });
    // No `expires_in`: the new token's own expiry counts.
    tokens.set_expires_in(None);
    let first = chatgpt_token("ws-2", 120, 0);
    tokens.serve_for(&codex, &first);
    let relay = relay().await;
    let id = chatgpt_account(&relay, &codex, &first, json!({ "oauth": tokens.grant() })).await;
    renewed(&tokens, &relay, &id, 1).await;
    let (_, key) = relay.create_key("k").await;
    let resp = responses_call(&relay, &key)
        .json(&json!({ "model": "gpt-5", "input": "hi", "stream": true, "store": false }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    resp.bytes().await.unwrap();
    let sent = codex.requests().pop().unwrap();
    let bearer = sent.header("authorization").unwrap().to_owned();
    assert_ne!(bearer, format!("Bearer {first}"));
    assert_eq!(sent.header("chatgpt-account-id"), Some("ws-2"));
    let view = account(&relay, &id).await;
    let left = secs_until(&view["oauth"]["expires_at"]);
    assert!((3500.0..=3600.0).contains(&left), "{view}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_changes_racing_renewals_keep_the_renewed_tokens() {
    let mock = MockUpstream::start().await;
    let tokens = TokenEndpoint::start().await;
    let relay = Relay::start_configured(|c| c.upstream.oauth_check_ms = 60_000).await;
    let id = subscribed(&relay, &mock, &tokens, 600).await;
    let path = format!("/admin/accounts/{id}");
    let refresh = format!("/admin/accounts/{id}/refresh");
    // Each change reads the record, then writes it: a renewal in between must not be written
    // over (its spent refresh token brought back, the next renewal refused).
    for round in 0..20 {
        let (changed, renewed) = tokio::join!(
            relay.admin(
                Method::PATCH,
                &path,
                Some(json!({ "priority": round, "name": format!("sub {round}") }))
            ),
            relay.admin(Method::POST, &refresh, None),
        );
        assert_eq!(changed.0, 200, "{}", changed.1);
        assert_eq!(renewed.0, 200, "{}", renewed.1);
    }
    let (status, v) = relay.admin(Method::POST, &refresh, None).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(tokens.granted(), 21);
    assert!(
        tokens
            .requests()
            .iter()
            .enumerate()
            .all(|(n, r)| r["refresh_token"] == format!("rt-{n}").as_str()),
        "each renewal used the token the one before got"
    );
    let view = account(&relay, &id).await;
    assert_eq!(
        (view["priority"].clone(), view["name"].clone()),
        (json!(19), json!("sub 19"))
    );
    assert!(view["oauth"]["failure"].is_null());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_on_a_chatgpt_account_keeps_it_across_calls_it_does_not_serve() {
    let codex = MockUpstream::start().await;
    let api = MockUpstream::start().await;
    let relay = Relay::start().await;
    let token = chatgpt_token("ws-1", 3600, 0);
    chatgpt_account(&relay, &codex, &token, json!({ "priority": 50 })).await;
    let (_, key) = relay.create_key("k").await;
    let responses = || {
        responses_call(&relay, &key)
            .header("x-session-id", "s-1")
            .json(&json!({ "model": "gpt-5", "input": "hi", "stream": true, "store": false }))
    };
    let resp = responses().send().await.unwrap();
    assert_eq!(resp.status(), 200);
    resp.bytes().await.unwrap();
    // An API account comes, preferred by priority: the session stays on the subscription.
    relay
        .add_account(
            &api,
            "sk-api",
            json!({ "provider": "openai", "priority": 10, "base_url": format!("{}/v1", api.base_url()) }),
        )
        .await;
    // The session's chat completion goes to the API account, which alone serves it ...
    let chat = http_client()
        .post(relay.url("/v1/chat/completions"))
        .bearer_auth(&key)
        .header("x-session-id", "s-1")
        .json(&json!({ "model": "gpt-5", "messages": [{ "role": "user", "content": "hi" }] }));
    assert_eq!(chat.send().await.unwrap().status(), 200);
    assert_eq!(api.requests().len(), 1);
    // ... and its next turn is back on the subscription, its binding kept.
    let resp = responses().send().await.unwrap();
    assert_eq!(resp.status(), 200);
    resp.bytes().await.unwrap();
    assert_eq!((codex.requests().len(), api.requests().len()), (2, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chatgpt_account_leaves_chat_translation_and_the_model_list_as_they_were() {
    let codex = MockUpstream::start().await;
    let claude = MockUpstream::start().await;
    let relay = Relay::start().await;
    let token = chatgpt_token("ws-1", 3600, 0);
    chatgpt_account(&relay, &codex, &token, json!({ "models": ["*"] })).await;
    relay
        .add_account(
            &claude,
            "sk-ant",
            json!({ "models": ["claude-sonnet-4-5"] }),
        )
        .await;
    let (_, key) = relay.create_key("k").await;
    // A chat completion for Claude is translated for the Anthropic account, as without it.
    let chat = http_client()
        .post(relay.url("/v1/chat/completions"))
        .bearer_auth(&key)
        .json(&json!({ "model": "claude-sonnet-4-5", "messages": [{ "role": "user", "content": "hi" }] }))
        .send()
        .await
        .unwrap();
    assert_eq!(chat.status(), 200);
    assert_eq!(claude.requests().pop().unwrap().path, "/v1/messages");
    // The OpenAI model list is made from the accounts' models (the backend has none to give).
    let models = http_client()
        .get(relay.url("/openai/v1/models"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(models.status(), 200);
    let list: Value = models.json().await.unwrap();
    assert_eq!(list["data"][0]["id"], "claude-sonnet-4-5", "{list}");
    assert!(codex.requests().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_of_a_token_already_replaced_leaves_the_account_alone() {
    let mock = MockUpstream::start().await;
    let tokens = TokenEndpoint::start().await;
    let relay = relay().await;
    let id = subscribed(&relay, &mock, &tokens, 600).await;
    let (_, key) = relay.create_key("k").await;
    // Another instance renewed the token after a refusal (this one has not heard yet): the
    // vendor now takes only the new one.
    let store = relay.app.store();
    let mut record = store.account(&id).await.unwrap().unwrap();
    record.sealed_api_key = relay.app.catalog.master_key().seal(&id, "at-1").unwrap();
    let g = record.oauth.as_mut().unwrap();
    g.refreshed_at = jiff::Timestamp::now().as_millisecond();
    g.after_refusal = true;
    assert!(store.update_account_checked(&record).await.unwrap());
    mock.require_api_key("at-1");

    // A request with the old token is refused: that says nothing of the new one.
    let resp = ask_claude(&relay, &key, false).await;
    assert_ne!(resp.status(), 200);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let view = account(&relay, &id).await;
    assert_eq!(view["state"]["status"], "ok", "{view}");
    assert!(view["oauth"]["failure"].is_null(), "{view}");
    assert!(tokens.requests().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_the_store_did_not_take_are_written_later_without_asking_again() {
    use crate::support::faulty_store::{Faults, FaultyStore};
    use std::sync::Arc;
    let faults = Arc::new(Faults::default());
    let backend = crate::support::relay::backends()
        .into_iter()
        .next()
        .unwrap();
    let relay = Relay::start_on_wrapped(
        &backend,
        |c| c.upstream.oauth_check_ms = 60_000,
        |store| FaultyStore::wrap(store, Arc::clone(&faults)),
    )
    .await;
    let mock = MockUpstream::start().await;
    let tokens = TokenEndpoint::start().await;
    tokens.serve_for(&mock, "at-0");
    let id = subscribed(&relay, &mock, &tokens, 600).await;
    let refresh = format!("/admin/accounts/{id}/refresh");
    // The endpoint answers (spending rt-0), then the store fails to take the tokens.
    faults.fail_next_account_write();
    let (status, v) = relay.admin(Method::POST, &refresh, None).await;
    assert_eq!(status, 502, "{v}");
    assert!(v.to_string().contains("kept"), "{v}");
    assert_eq!(tokens.granted(), 1);
    // The next try writes them, without spending rt-1 or asking for rt-0 again.
    let (status, v) = relay.admin(Method::POST, &refresh, None).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(tokens.requests().len(), 1);
    let (_, key) = relay.create_key("k").await;
    let resp = ask_claude(&relay, &key, false).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(last_bearer(&mock), "Bearer at-1");
    // And the grant goes on from rt-1.
    let (status, v) = relay.admin(Method::POST, &refresh, None).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(tokens.requests()[1]["refresh_token"], "rt-1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_json_answer_made_from_a_stream_comes_when_the_stream_ends() {
    let codex = MockUpstream::start().await;
    // 40 ms between the stream's events: the answer is whole only after the last.
    codex.set_default(Behavior::Slow {
        usage: MockUsage::new(9, 4),
        delay: Duration::from_millis(40),
    });
    let relay = Relay::start().await;
    let token = chatgpt_token("ws-1", 3600, 0);
    chatgpt_account(&relay, &codex, &token, json!({})).await;
    let (_, key) = relay.create_key("k").await;
    let resp = responses_call(&relay, &key)
        .json(&json!({ "model": "gpt-5", "input": "hi" }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let answer: Value = resp.json().await.unwrap();
    assert_eq!(answer["usage"]["output_tokens"], 4);
    // Its time to first byte is the whole answer's, as for any answer that is not streamed.
    let events = codex.responses().pop().unwrap();
    let gaps = events
        .split(|b| *b == b'\n')
        .filter(|l| l.starts_with(b"event:"))
        .count()
        - 1;
    let e = &relay.logged(1).await[0];
    assert!(
        e["ttfb_ms"].as_u64().unwrap() >= 40 * gaps as u64,
        "{e} after {gaps} gaps"
    );
}
