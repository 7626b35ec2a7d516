//! `POST /admin/accounts/{id}/test`: a short generation sent to one account as a client's would
//! go, in each provider's terms, and what came back; nothing reported, charged or recorded.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use reqwest::Method;
use serde_json::{Value, json};

use crate::support::mock::{Behavior, MockUpstream, MockUsage, Recorded, TEXT_DELTAS};
use crate::support::relay::Relay;
use crate::support::token_endpoint::chatgpt_token;

const UPSTREAM_KEY: &str = "sk-upstream";

async fn test(relay: &Relay, id: &str, body: Option<Value>) -> (u16, Value) {
    let (status, v) = relay
        .admin(Method::POST, &format!("/admin/accounts/{id}/test"), body)
        .await;
    (status, v)
}

/// A test that works: what it shows, and the request the mock got.
async fn works(
    relay: &Relay,
    mock: &MockUpstream,
    id: &str,
    body: Option<Value>,
) -> (Value, Recorded) {
    let (status, shown) = test(relay, id, body).await;
    assert_eq!(status, 200, "{shown}");
    assert_eq!(
        (&shown["ok"], &shown["reply"]),
        (&json!(true), &json!(TEXT_DELTAS.concat())),
        "{shown}"
    );
    (shown, mock.requests().pop().unwrap())
}

async fn status_of(relay: &Relay, id: &str) -> Value {
    relay
        .admin(Method::GET, &format!("/admin/accounts/{id}"), None)
        .await
        .1["state"]["status"]
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_test_reaches_the_account_and_changes_nothing() {
    let mock = MockUpstream::start().await;
    mock.set_default(Behavior::Ok(MockUsage::new(12, 3)));
    let relay = Relay::start().await;
    let id = relay
        .add_account(
            &mock,
            UPSTREAM_KEY,
            json!({ "models": ["claude-*", "claude-sonnet-4-5"], "model_map": { "claude-sonnet-*": "glm-4.6" } }),
        )
        .await;

    // The first model the account names without a glob, under the account's name for it.
    let (status, shown) = test(&relay, &id, None).await;
    assert_eq!(status, 200, "{shown}");
    assert_eq!(shown["ok"], true, "{shown}");
    assert_eq!(shown["status"], 200);
    assert_eq!(shown["verdict"], "serving");
    assert_eq!(shown["model"], "claude-sonnet-4-5");
    assert_eq!(shown["upstream_model"], "glm-4.6");
    assert_eq!(shown["reply"], TEXT_DELTAS.concat());
    assert!(shown["latency_ms"].is_u64());
    let sent = mock.requests().pop().unwrap();
    assert_eq!(sent.path, "/v1/messages");
    assert_eq!(sent.header("x-api-key"), Some(UPSTREAM_KEY));
    assert_eq!(sent.header("anthropic-version"), Some("2023-06-01"));
    let body = sent.json();
    assert_eq!(body["model"], "glm-4.6");
    assert_eq!(body["messages"][0]["role"], "user");
    assert!(body.get("system").is_none(), "{body}");

    // A model named; a refusal shown with the vendor's message, the account left serving.
    mock.push_behavior(Behavior::error(
        401,
        "authentication_error",
        "invalid x-api-key",
    ));
    let (status, shown) = test(&relay, &id, Some(json!({ "model": "claude-opus-4-1" }))).await;
    assert_eq!(status, 200, "{shown}");
    assert_eq!(
        (
            &shown["ok"],
            &shown["status"],
            &shown["verdict"],
            &shown["error"]
        ),
        (
            &json!(false),
            &json!(401),
            &json!("unauthorized"),
            &json!("invalid x-api-key")
        ),
        "{shown}"
    );
    assert_eq!(
        mock.requests().pop().unwrap().json()["model"],
        "claude-opus-4-1"
    );
    assert_eq!(status_of(&relay, &id).await, "ok");
    mock.push_behavior(Behavior::rate_limited(30));
    let (_, shown) = test(&relay, &id, None).await;
    assert_eq!(shown["verdict"], "rate_limited", "{shown}");
    assert_eq!(status_of(&relay, &id).await, "ok");

    // Nothing recorded.
    relay.app.stats.flush().await;
    assert_eq!(relay.usage("").await["requests"], 0);
    assert!(relay.requests("limit=10").await.is_empty());

    // Unknown account, unknown field, a Gemini name that is no path segment.
    assert_eq!(test(&relay, "acct_nope", None).await.0, 404);
    let (status, body) = test(&relay, &id, Some(json!({ "modle": "x" }))).await;
    assert_eq!(status, 400, "{body}");
    let gemini = relay
        .add_account(&mock, "AIza-test", json!({ "provider": "gemini" }))
        .await;
    let (status, body) = test(&relay, &gemini, Some(json!({ "model": "../files" }))).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(mock.requests().len(), 3, "refused tests send nothing");
}

/// Each provider is asked in its own terms: a Claude subscription with Claude Code's system
/// prompt and the OAuth beta, OpenAI's chat completions, Gemini's generateContent, the Codex
/// backend's Responses (a stream made whole), Bedrock's invoke, Code Assist's wrapped call; an
/// account that cannot be reached is failing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_provider_is_asked_in_its_own_terms() {
    let mock = MockUpstream::start().await;
    mock.set_default(Behavior::Ok(MockUsage::new(12, 3)));
    let relay = Relay::start().await;

    let claude = relay
        .add_account(&mock, "sk-ant-oat01-abcdefghijklmnop", json!({}))
        .await;
    let (shown, sent) = works(&relay, &mock, &claude, None).await;
    assert_eq!(shown["model"], "claude-haiku-4-5");
    assert_eq!(
        sent.header("authorization"),
        Some("Bearer sk-ant-oat01-abcdefghijklmnop")
    );
    assert!(sent.header("anthropic-beta").unwrap().contains("oauth-"));
    assert!(
        sent.json()["system"]
            .as_str()
            .unwrap()
            .starts_with("You are Claude Code")
    );

    let openai = relay
        .add_account(
            &mock,
            UPSTREAM_KEY,
            json!({ "provider": "openai", "base_url": format!("{}/v1", mock.base_url()) }),
        )
        .await;
    let (_, sent) = works(&relay, &mock, &openai, None).await;
    assert_eq!(sent.path, "/v1/chat/completions");
    assert_eq!(sent.json()["model"], "gpt-4o-mini");
    assert_eq!(sent.header("authorization"), Some("Bearer sk-upstream"));

    // Azure: the first deployment's model, to its deployment, with the api-version.
    let azure = relay
        .add_account(
            &mock,
            UPSTREAM_KEY,
            json!({ "provider": "azure-openai", "api_version": "2024-10-21", "deployments": { "gpt-4.1": "prod-41" } }),
        )
        .await;
    let (_, shown) = test(&relay, &azure, None).await;
    assert_eq!(
        (&shown["ok"], &shown["model"], &shown["upstream_model"]),
        (&json!(true), &json!("gpt-4.1"), &json!("prod-41")),
        "{shown}"
    );
    let sent = mock.requests().pop().unwrap();
    assert_eq!(sent.azure_deployment(), Some("prod-41"));
    assert_eq!(
        sent.query_param("api-version").as_deref(),
        Some("2024-10-21")
    );
    assert_eq!(sent.header("api-key"), Some(UPSTREAM_KEY));

    let gemini = relay
        .add_account(&mock, "AIza-test", json!({ "provider": "gemini" }))
        .await;
    let (_, sent) = works(
        &relay,
        &mock,
        &gemini,
        Some(json!({ "model": "gemini-2.5-pro" })),
    )
    .await;
    assert_eq!(sent.path, "/v1beta/models/gemini-2.5-pro:generateContent");

    let chatgpt = relay
        .add_account(
            &mock,
            &chatgpt_token("ws-1", 3600, 1),
            json!({ "provider": "chatgpt", "base_url": format!("{}/backend-api/codex", mock.base_url()) }),
        )
        .await;
    let (_, sent) = works(&relay, &mock, &chatgpt, None).await;
    assert_eq!(sent.path, "/backend-api/codex/responses");
    let body = sent.json();
    assert_eq!(
        (body["stream"].clone(), body["store"].clone()),
        (json!(true), json!(false))
    );
    // The backend wants instructions, and the input as a list of items.
    assert!(body["instructions"].is_string(), "{body}");
    assert_eq!(body["input"][0]["content"][0]["type"], "input_text");

    let bedrock = relay
        .add_account(
            &mock,
            "bedrock-api-key",
            json!({ "provider": "bedrock", "region": "us-east-1" }),
        )
        .await;
    let (shown, sent) = works(&relay, &mock, &bedrock, None).await;
    assert_eq!(
        shown["upstream_model"],
        "us.anthropic.claude-haiku-4-5-20251001-v1:0"
    );
    assert_eq!(
        sent.path,
        "/model/us.anthropic.claude-haiku-4-5-20251001-v1%3A0/invoke"
    );
    assert_eq!(sent.header("authorization"), Some("Bearer bedrock-api-key"));

    // A Google login: its project found first, then the call wrapped for Code Assist.
    let google = relay
        .add_account(&mock, "ya29.test", json!({ "provider": "code-assist" }))
        .await;
    let (_, sent) = works(&relay, &mock, &google, None).await;
    assert_eq!(sent.path, "/v1internal:generateContent");
    assert_eq!(sent.json()["model"], "gemini-2.5-flash");

    // Nobody listens there.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let gone = relay
        .add_account(&mock, UPSTREAM_KEY, json!({ "base_url": dead }))
        .await;
    let (status, shown) = test(&relay, &gone, None).await;
    assert_eq!(status, 200, "{shown}");
    assert_eq!(
        (&shown["ok"], &shown["status"], &shown["verdict"]),
        (&json!(false), &Value::Null, &json!("failing")),
        "{shown}"
    );
    assert!(
        shown["error"].as_str().unwrap().contains("request failed"),
        "{shown}"
    );
    assert_eq!(status_of(&relay, &gone).await, "ok");
}

/// What is no answer is not taken for one: a redirect (a wrong base URL), an answer that stalls
/// half-way (within the first-byte timeout, for the whole of it), and the account's own key
/// quoted by the vendor is masked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_a_stall_and_a_quoted_key_are_shown_for_what_they_are() {
    let mock = MockUpstream::start().await;
    let relay = Relay::start_configured(|c| c.upstream.first_byte_timeout_secs = 1).await;
    let id = relay
        .add_account(&mock, "sk-ant-api03-quoted-secret", json!({}))
        .await;

    mock.push_behavior(Behavior::Error {
        status: 302,
        body: String::new(),
        headers: vec![("location".into(), "https://login.example.com/".into())],
    });
    let (_, shown) = test(&relay, &id, None).await;
    assert_eq!(
        (&shown["ok"], &shown["status"], &shown["verdict"]),
        (&json!(false), &json!(302), &json!("serving")),
        "{shown}"
    );
    assert!(
        shown["error"]
            .as_str()
            .unwrap()
            .contains("it sends to https://login.example.com/"),
        "{shown}"
    );

    mock.push_behavior(Behavior::StallAfterStart(MockUsage::new(12, 3)));
    let started = std::time::Instant::now();
    let (_, shown) = test(&relay, &id, None).await;
    assert_eq!(
        (&shown["ok"], &shown["verdict"]),
        (&json!(false), &json!("failing")),
        "{shown}"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(30));

    mock.push_behavior(Behavior::error(
        401,
        "authentication_error",
        "invalid x-api-key: sk-ant-api03-quoted-secret",
    ));
    let (_, shown) = test(&relay, &id, None).await;
    assert_eq!(shown["error"], "invalid x-api-key: ***", "{shown}");
    assert!(!shown.to_string().contains("quoted-secret"));

    // A model of dots alone is no model (it would be a path's `..`).
    let (status, body) = test(&relay, &id, Some(json!({ "model": ".." }))).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(status_of(&relay, &id).await, "ok");
}
