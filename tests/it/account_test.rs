//! `POST /admin/accounts/{id}/test`: a short generation sent to one account as a client's would
//! go, in each provider's terms, and what came back; nothing reported, charged or recorded.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use reqwest::Method;
use serde_json::{Value, json};

use crate::support::mock::{Behavior, MockUpstream, MockUsage, TEXT_DELTAS};
use crate::support::relay::Relay;
use crate::support::token_endpoint::chatgpt_token;

const UPSTREAM_KEY: &str = "sk-upstream";

async fn test(relay: &Relay, id: &str, body: Option<Value>) -> (u16, Value) {
    let (status, v) = relay
        .admin(Method::POST, &format!("/admin/accounts/{id}/test"), body)
        .await;
    (status, v)
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
    let reply = TEXT_DELTAS.concat();

    let claude = relay
        .add_account(&mock, "sk-ant-oat01-abcdefghijklmnop", json!({}))
        .await;
    let (_, shown) = test(&relay, &claude, None).await;
    assert_eq!(
        (&shown["ok"], &shown["reply"]),
        (&json!(true), &json!(reply)),
        "{shown}"
    );
    assert_eq!(shown["model"], "claude-haiku-4-5");
    let sent = mock.requests().pop().unwrap();
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
    let (_, shown) = test(&relay, &openai, None).await;
    assert_eq!(
        (&shown["ok"], &shown["reply"]),
        (&json!(true), &json!(reply)),
        "{shown}"
    );
    let sent = mock.requests().pop().unwrap();
    assert_eq!(sent.path, "/v1/chat/completions");
    assert_eq!(sent.json()["model"], "gpt-4o-mini");
    assert_eq!(sent.header("authorization"), Some("Bearer sk-upstream"));

    let gemini = relay
        .add_account(&mock, "AIza-test", json!({ "provider": "gemini" }))
        .await;
    let (_, shown) = test(&relay, &gemini, Some(json!({ "model": "gemini-2.5-pro" }))).await;
    assert_eq!(
        (&shown["ok"], &shown["reply"]),
        (&json!(true), &json!(reply)),
        "{shown}"
    );
    let sent = mock.requests().pop().unwrap();
    assert_eq!(sent.path, "/v1beta/models/gemini-2.5-pro:generateContent");

    let chatgpt = relay
        .add_account(
            &mock,
            &chatgpt_token("ws-1", 3600, 1),
            json!({ "provider": "chatgpt", "base_url": format!("{}/backend-api/codex", mock.base_url()) }),
        )
        .await;
    let (_, shown) = test(&relay, &chatgpt, None).await;
    assert_eq!(
        (&shown["ok"], &shown["reply"]),
        (&json!(true), &json!(reply)),
        "{shown}"
    );
    let sent = mock.requests().pop().unwrap();
    assert_eq!(sent.path, "/backend-api/codex/responses");
    assert_eq!(
        (sent.json()["stream"].clone(), sent.json()["store"].clone()),
        (json!(true), json!(false))
    );

    let bedrock = relay
        .add_account(
            &mock,
            "bedrock-api-key",
            json!({ "provider": "bedrock", "region": "us-east-1" }),
        )
        .await;
    let (_, shown) = test(&relay, &bedrock, None).await;
    assert_eq!(
        (&shown["ok"], &shown["reply"]),
        (&json!(true), &json!(reply)),
        "{shown}"
    );
    let sent = mock.requests().pop().unwrap();
    assert_eq!(
        sent.path,
        "/model/us.anthropic.claude-haiku-4-5-v1%3A0/invoke"
    );
    assert_eq!(sent.header("authorization"), Some("Bearer bedrock-api-key"));

    // A Google login: its project found first, then the call wrapped for Code Assist.
    let google = relay
        .add_account(&mock, "ya29.test", json!({ "provider": "code-assist" }))
        .await;
    let (_, shown) = test(&relay, &google, None).await;
    assert_eq!(
        (&shown["ok"], &shown["reply"]),
        (&json!(true), &json!(reply)),
        "{shown}"
    );
    let sent = mock.requests().pop().unwrap();
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
