//! Bedrock accounts end to end: Anthropic clients (and OpenAI chat clients on Claude models)
//! served through Bedrock's runtime, which the mock speaks: its paths and body, a bearer API key
//! or a SigV4 signature it checks, binary event-stream answers, and errors that fail over.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde_json::{Value, json};

use crate::support::mock::{
    Behavior, MockUpstream, MockUsage, TEXT_DELTAS, expected_stream_bytes, http_client,
};
use crate::support::relay::{Relay, messages_body};

/// What Claude Code sends (tests/fixtures/clients/claude-code-prompt.requests.jsonl).
const CLAUDE_CODE_BETAS: &str = "claude-code-20250219,context-1m-2025-08-07,interleaved-thinking-2025-05-14,thinking-token-count-2026-05-13,context-management-2025-06-27,prompt-caching-scope-2026-01-05,mid-conversation-system-2026-04-07,effort-2025-11-24";

const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";

async fn patch(relay: &Relay, account: &str, body: Value) -> (u16, Value) {
    relay
        .admin(
            reqwest::Method::PATCH,
            &format!("/admin/accounts/{account}"),
            Some(body),
        )
        .await
}

async fn bedrock_account(relay: &Relay, mock: &MockUpstream, key: &str, extra: Value) -> String {
    let mut fields = json!({ "provider": "bedrock", "region": "us-east-1" });
    if let (Value::Object(f), Value::Object(e)) = (&mut fields, extra) {
        f.extend(e);
    }
    relay.add_account(mock, key, fields).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anthropic_clients_are_served_through_bedrock() {
    let mock = MockUpstream::start().await;
    mock.require_api_key("bedrock-api-key");
    mock.set_default(Behavior::Ok(MockUsage::new(21, 9)));
    let relay = Relay::start().await;
    bedrock_account(&relay, &mock, "bedrock-api-key", json!({})).await;
    let (_, key) = relay.create_key("k").await;
    let model = "claude-sonnet-4-5-20250929";

    // A stream: the client gets Anthropic's events, byte for byte what they carry.
    let resp = relay
        .messages(&key, &messages_body(model, true))
        .header("anthropic-beta", CLAUDE_CODE_BETAS)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(switchyard::providers::is_event_stream(resp.headers()));
    let streamed = resp.bytes().await.unwrap();
    let expected =
        expected_stream_bytes(&format!("us.anthropic.{model}-v1:0"), MockUsage::new(21, 9));
    // The mock's events carry spaces after the colons; the relay writes each as Bedrock's
    // frame carried it.
    assert_eq!(streamed, expected, "{}", String::from_utf8_lossy(&streamed));
    let sent = mock.requests().pop().unwrap();
    assert_eq!(
        sent.path,
        format!("/model/us.anthropic.{model}-v1%3A0/invoke-with-response-stream")
    );
    assert_eq!(sent.header("authorization"), Some("Bearer bedrock-api-key"));
    assert!(sent.header("x-api-key").is_none() && sent.header("anthropic-version").is_none());
    let body = sent.json();
    assert_eq!(body["anthropic_version"], "bedrock-2023-05-31");
    // Only the betas Bedrock takes: it refuses a request naming any other.
    assert_eq!(
        body["anthropic_beta"],
        json!([
            "context-1m-2025-08-07",
            "interleaved-thinking-2025-05-14",
            "context-management-2025-06-27",
            "effort-2025-11-24"
        ])
    );

    assert!(body.get("model").is_none() && body.get("stream").is_none());

    // A model that takes fewer of them: refused for a beta, sent again without any, nor the
    // field that needs one (Claude Code's `context_management`); its next request goes without
    // them at once.
    let mut claude_code = messages_body("claude-opus-4-7", true);
    claude_code["context_management"] =
        json!({ "edits": [{ "type": "clear_thinking_20251015", "keep": "all" }] });
    let before = mock.requests().len();
    for _ in 0..2 {
        let resp = relay
            .messages(&key, &claude_code)
            .header("anthropic-beta", CLAUDE_CODE_BETAS)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        resp.bytes().await.unwrap();
    }
    let sent = mock.requests();
    assert_eq!(sent.len(), before + 3);
    assert!(sent[before].json()["anthropic_beta"].is_array());
    assert!(sent[before].json()["context_management"].is_object());
    for retried in &sent[before + 1..] {
        let body = retried.json();
        assert!(body.get("anthropic_beta").is_none() && body.get("context_management").is_none());
    }

    // JSON, and a token count.
    let resp = relay
        .messages(&key, &messages_body(model, false))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let answer: Value = resp.json().await.unwrap();
    assert_eq!(answer["content"][0]["text"], TEXT_DELTAS.concat());
    let resp = relay
        .messages_at(
            "/v1/messages/count_tokens",
            &key,
            &json!({ "model": model,
            "messages": [{ "role": "user", "content": "hi" }] }),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.json::<Value>().await.unwrap(),
        json!({ "input_tokens": 21 })
    );
    // A count goes to the model itself: Bedrock counts for no cross-region profile.
    assert_eq!(
        mock.requests().pop().unwrap().path,
        format!("/model/anthropic.{model}-v1%3A0/count-tokens")
    );

    // An OpenAI chat client on the same Claude model, translated over Bedrock.
    let resp = http_client()
        .post(relay.url("/v1/chat/completions"))
        .bearer_auth(&key)
        .json(
            &json!({ "model": model, "stream": true, "stream_options": { "include_usage": true },
            "messages": [{ "role": "user", "content": "hi" }] }),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let sse = resp.text().await.unwrap();
    assert!(sse.ends_with("data: [DONE]\n\n"), "{sse}");
    assert!(sse.contains("\"prompt_tokens\":21"), "{sse}");

    // Billed as Anthropic reported it, on every surface.
    let rows = relay.logged(5).await;
    let billed: Vec<_> = rows
        .iter()
        .filter(|r| r["output_tokens"].as_u64() == Some(9))
        .map(|r| r["input_tokens"].as_u64())
        .collect();
    assert_eq!(billed, [Some(21); 5], "{rows:?}");
}

/// An account with an access key signs with SigV4 (the mock signs again with the secret and
/// compares); its model names map to inference profiles. A wrong secret is refused as Bedrock
/// refuses it, which benches the account as unauthorized and fails over to the next.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_requests_and_failover_from_bedrock() {
    let (signed, other) = (MockUpstream::start().await, MockUpstream::start().await);
    signed.require_api_key(SECRET);
    let relay = Relay::start().await;
    let profile = "us.anthropic.claude-haiku-4-5-20251001-v1:0";
    let account = bedrock_account(
        &relay,
        &signed,
        SECRET,
        json!({ "aws_access_key_id": "AKIAIOSFODNN7EXAMPLE", "priority": 1,
            "deployments": { "claude-haiku-4-5": profile } }),
    )
    .await;
    let (_, key) = relay.create_key("k").await;
    for stream in [false, true] {
        let resp = relay
            .messages(&key, &messages_body("claude-haiku-4-5", stream))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
        resp.bytes().await.unwrap();
    }
    let sent = signed.requests().pop().unwrap();
    assert_eq!(
        sent.path,
        "/model/us.anthropic.claude-haiku-4-5-20251001-v1%3A0/invoke-with-response-stream"
    );
    assert!(
        sent.header("authorization")
            .unwrap()
            .contains("Credential=AKIAIOSFODNN7EXAMPLE/")
    );

    // A secret that no longer matches: Bedrock's 403 is a refused credential, which benches
    // the account; the request fails over to the next (an Anthropic one).
    relay
        .add_account(&other, "sk-ant", json!({ "priority": 3 }))
        .await;
    let (status, v) = patch(&relay, &account, json!({ "api_key": "not-the-secret" })).await;
    assert_eq!(status, 200, "{v}");
    let resp = relay
        .messages(&key, &messages_body("claude-haiku-4-5", false))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(other.requests().len(), 1);
    let (_, v) = relay
        .admin(
            reqwest::Method::GET,
            &format!("/admin/accounts/{account}"),
            None,
        )
        .await;
    assert_eq!(v["state"]["status"], "unauthorized", "{v}");

    // Throttled (another Bedrock account, preferred): its quota for that model's family spent,
    // the request fails over; the account goes on serving the other families.
    let throttled = MockUpstream::start().await;
    let second = bedrock_account(&relay, &throttled, "api-key", json!({ "priority": 2 })).await;
    throttled.push_behavior(Behavior::rate_limited(30));
    let resp = relay
        .messages(&key, &messages_body("claude-haiku-4-5", true))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    resp.bytes().await.unwrap();
    assert_eq!((throttled.requests().len(), other.requests().len()), (1, 2));
    let (_, v) = relay
        .admin(
            reqwest::Method::GET,
            &format!("/admin/accounts/{second}"),
            None,
        )
        .await;
    assert_eq!(v["state"]["status"], "ok", "{v}");
    assert!(
        v["state"]["rate_limited_families"]["haiku"].is_string(),
        "{v}"
    );
    let resp = relay
        .messages(&key, &messages_body("claude-sonnet-4-5", false))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!((throttled.requests().len(), other.requests().len()), (2, 2));
}

/// What only a Bedrock account can get wrong is refused when it is written, in the admin
/// API's shape.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bedrock_accounts_are_checked_when_written() {
    let relay = Relay::start().await;
    for (body, needle) in [
        (json!({ "provider": "bedrock" }), "region"),
        (
            json!({ "provider": "bedrock", "region": "us east" }),
            "region",
        ),
        (
            json!({ "provider": "bedrock", "region": "us-east-1", "aws_access_key_id": "short" }),
            "aws_access_key_id",
        ),
        (
            json!({ "provider": "anthropic", "region": "us-east-1" }),
            "bedrock",
        ),
        (
            json!({ "provider": "bedrock", "region": "us-east-1", "api_version": "x" }),
            "azure",
        ),
    ] {
        let mut body = body;
        body["name"] = json!("b");
        body["api_key"] = json!("k");
        let (status, v) = relay
            .admin(reqwest::Method::POST, "/admin/accounts", Some(body.clone()))
            .await;
        assert_eq!(status, 400, "{body}: {v}");
        assert!(v.to_string().contains(needle), "{body}: {v}");
    }
    let (status, v) = relay
        .admin(
            reqwest::Method::POST,
            "/admin/accounts",
            Some(json!({ "name": "b", "api_key": "k", "provider": "bedrock", "region": "eu-west-1" })),
        )
        .await;
    assert_eq!(status, 201, "{v}");
    assert_eq!(
        v["base_url"],
        "https://bedrock-runtime.eu-west-1.amazonaws.com"
    );
    assert!(v.get("api_key").is_none() && !v.to_string().contains("\"k\""));
    // A new region moves an account on its region's endpoint.
    let id = v["id"].as_str().unwrap();
    let (status, v) = patch(&relay, id, json!({ "region": "us-west-2" })).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        v["base_url"],
        "https://bedrock-runtime.us-west-2.amazonaws.com"
    );
    // Signing turned off only with a new key: the secret access key is no bearer token.
    let (status, v) = patch(
        &relay,
        id,
        json!({ "aws_access_key_id": "AKIAIOSFODNN7EXAMPLE" }),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let off = json!({ "aws_access_key_id": null });
    let (status, v) = patch(&relay, id, off.clone()).await;
    assert_eq!(status, 400, "{v}");
    let mut with_key = off;
    with_key["api_key"] = json!("a-bedrock-api-key");
    let (status, v) = patch(&relay, id, with_key).await;
    assert_eq!(status, 200, "{v}");
    assert!(v["aws_access_key_id"].is_null(), "{v}");
    // An endpoint of its own, then back to its region's (`null`), in the same PATCH as a region.
    let (status, v) = patch(
        &relay,
        id,
        json!({ "base_url": "https://vpce.example.com" }),
    )
    .await;
    assert_eq!(
        (status, v["base_url"].as_str()),
        (200, Some("https://vpce.example.com"))
    );
    let (status, v) = patch(&relay, id, json!({ "region": "eu-west-3" })).await;
    assert_eq!(
        (status, v["base_url"].as_str()),
        (200, Some("https://vpce.example.com"))
    );
    let (status, v) = patch(
        &relay,
        id,
        json!({ "base_url": null, "region": "ap-south-1" }),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        v["base_url"],
        "https://bedrock-runtime.ap-south-1.amazonaws.com"
    );
    // An Azure resource has no default endpoint: refused, and the account keeps its own.
    let (status, v) = relay
        .admin(
            reqwest::Method::POST,
            "/admin/accounts",
            Some(json!({
                "name": "az", "api_key": "k", "provider": "azure-openai",
                "base_url": "https://res.openai.azure.com", "api_version": "2024-10-21",
            })),
        )
        .await;
    assert_eq!(status, 201, "{v}");
    let az = v["id"].as_str().unwrap();
    let (status, v) = patch(&relay, az, json!({ "base_url": null })).await;
    assert_eq!(status, 400, "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("base_url"),
        "{v}"
    );
    let (_, v) = relay
        .admin(reqwest::Method::GET, &format!("/admin/accounts/{az}"), None)
        .await;
    assert_eq!(v["base_url"], "https://res.openai.azure.com");
}
