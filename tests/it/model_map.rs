//! An account's model map: the model a client asks for goes to the account's vendor under the
//! name the vendor knows it by (the body's `model`, Gemini's URL), the rest of the request as it
//! came; usage stays counted under the client's name.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use reqwest::Method;
use serde_json::{Value, json};

use crate::support::captured;
use crate::support::mock::{Behavior, MockUpstream, MockUsage, http_client};
use crate::support::relay::{Relay, messages_body};

const UPSTREAM_KEY: &str = "sk-upstream";

/// Sends Claude Code's captured request with `key`, its body as serialized here; the status.
async fn claude_code(relay: &Relay, key: &str, model: &str) -> (u16, Value) {
    let cc = captured("claude-code-prompt.requests.jsonl")
        .into_iter()
        .find(|c| c.method == "POST")
        .unwrap();
    let mut body = cc.body.unwrap();
    body["model"] = json!(model);
    let mut req = http_client().post(relay.url(&format!("{}?{}", cc.path, cc.query)));
    for (name, value) in &cc.headers {
        let lower = name.to_ascii_lowercase();
        if ["host", "content-length", "connection", "x-api-key"].contains(&lower.as_str()) {
            continue;
        }
        req = req.header(name.as_str(), value.as_str());
    }
    let resp = req
        .header("x-api-key", key)
        .body(serde_json::to_vec(&body).unwrap())
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    resp.bytes().await.unwrap();
    (status, body)
}

/// Asks for `asked` with `key`; the model the mock was sent.
async fn sent_as(relay: &Relay, mock: &MockUpstream, key: &str, asked: &str) -> Value {
    let resp = relay
        .messages(key, &messages_body(asked, false))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{asked}");
    mock.requests().pop().unwrap().json()["model"].clone()
}

/// PATCHes the account's model map; its view's map.
async fn set_map(relay: &Relay, account: &str, map: Value) -> Value {
    let (status, body) = relay
        .admin(
            Method::PATCH,
            &format!("/admin/accounts/{account}"),
            Some(json!({ "model_map": map })),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    body["model_map"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_model_goes_upstream_under_the_account_s_name_for_it() {
    let mock = MockUpstream::start().await;
    mock.set_default(Behavior::Ok(MockUsage::new(10, 5)));
    let relay = Relay::start().await;
    let map = json!({
        "claude-sonnet-4-5": "glm-4.6",
        "claude-haiku-*": "glm-4.5-air",
        "claude-*": "glm-4.5",
    });
    let account = relay
        .add_account(&mock, UPSTREAM_KEY, json!({ "model_map": map }))
        .await;
    let (_, key) = relay.create_key("k").await;

    // Claude Code's own request: only the model changes on its way, byte for byte.
    let (status, sent) = claude_code(&relay, &key, "claude-sonnet-4-5").await;
    assert_eq!(status, 200);
    let mut renamed = sent.clone();
    renamed["model"] = json!("glm-4.6");
    let upstream = mock.requests().pop().unwrap();
    assert_eq!(upstream.body, serde_json::to_vec(&renamed).unwrap());
    assert_eq!(upstream.header("x-api-key"), Some(UPSTREAM_KEY));

    // A name before any glob; the longest glob before a shorter one; a model no entry names
    // goes as asked.
    for (asked, sent) in [
        ("claude-haiku-4-5-20251001", "glm-4.5-air"),
        ("claude-opus-4-1", "glm-4.5"),
        ("claude-sonnet-4-5", "glm-4.6"),
    ] {
        assert_eq!(sent_as(&relay, &mock, &key, asked).await, sent);
    }
    let map = json!({ "claude-opus-*": "glm-4.6" });
    assert_eq!(set_map(&relay, &account, map.clone()).await, map);
    assert_eq!(
        sent_as(&relay, &mock, &key, "claude-sonnet-4-5").await,
        "claude-sonnet-4-5"
    );

    // Counting tokens is renamed too.
    let resp = relay
        .messages_at(
            "/v1/messages/count_tokens",
            &key,
            &json!({ "model": "claude-opus-4-1", "messages": [{ "role": "user", "content": "hi" }] }),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(mock.requests().pop().unwrap().json()["model"], "glm-4.6");

    // Usage is the client's model's.
    relay.app.stats.flush().await;
    let logged = relay.requests("limit=10").await;
    assert!(
        logged
            .iter()
            .any(|e| e["model"] == "claude-haiku-4-5-20251001")
    );
    assert!(
        logged
            .iter()
            .all(|e| !e["model"].as_str().unwrap().starts_with("glm"))
    );
    let sonnet = relay.usage("model=claude-sonnet-4-5").await;
    assert_eq!(sonnet["requests"], 3, "{sonnet}");
    assert_eq!(relay.usage("model=glm-4.6").await["requests"], 0);

    // `{}` empties the map.
    assert_eq!(set_map(&relay, &account, json!({})).await, json!({}));
    assert_eq!(
        sent_as(&relay, &mock, &key, "claude-opus-4-1").await,
        "claude-opus-4-1"
    );
}

/// OpenAI's chat and Responses APIs take the name in the body; Gemini's in the URL, which is
/// all that changes of Gemini CLI's requests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_and_gemini_accounts_rename_too() {
    let mock = MockUpstream::start().await;
    mock.set_default(Behavior::Ok(MockUsage::new(10, 5)));
    let relay = Relay::start().await;
    relay
        .add_account(
            &mock,
            UPSTREAM_KEY,
            json!({
                "provider": "openai",
                "base_url": format!("{}/v1", mock.base_url()),
                // Listed, a Claude name is the account's own for chat completions (not
                // translated for Anthropic); the map renames it.
                "models": ["gpt-4o*", "claude-sonnet-4-5"],
                "model_map": { "gpt-4o*": "deepseek-chat", "claude-sonnet-4-5": "glm-4.6" },
            }),
        )
        .await;
    let (_, key) = relay.create_key("k").await;
    for (path, body) in [
        (
            "/v1/chat/completions",
            json!({ "model": "gpt-4o", "stream": true, "messages": [{ "role": "user", "content": "hi" }] }),
        ),
        (
            "/v1/responses",
            json!({ "model": "gpt-4o-mini", "input": "hi" }),
        ),
        // A Claude model the account lists and renames.
        (
            "/v1/chat/completions",
            json!({ "model": "claude-sonnet-4-5", "messages": [{ "role": "user", "content": "hi" }] }),
        ),
    ] {
        let resp = http_client()
            .post(relay.url(path))
            .bearer_auth(&key)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        resp.bytes().await.unwrap();
        let sent = mock.requests().pop().unwrap().json();
        let mut want = body.clone();
        want["model"] = json!(if body["model"] == "claude-sonnet-4-5" {
            "glm-4.6"
        } else {
            "deepseek-chat"
        });
        if body["stream"] == true {
            // The relay asks for the usage chunk, as for every stream.
            want["stream_options"] = sent["stream_options"].clone();
        }
        assert_eq!(sent, want, "{path}");
    }

    let gemini = MockUpstream::start().await;
    gemini.set_default(Behavior::Ok(MockUsage::new(10, 5)));
    let relay = Relay::start().await;
    relay
        .add_account(
            &gemini,
            UPSTREAM_KEY,
            json!({ "provider": "gemini", "model_map": {
                "gemini-2.5-*": "gemini-2.5-flash-lite",
                "gemini-embedding-001": "text-embedding-004",
            } }),
        )
        .await;
    let (_, key) = relay.create_key("k").await;
    let requests = relay.gemini_cli_requests(&key);
    assert!(!requests.is_empty());
    for (req, raw) in requests {
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 200);
        resp.bytes().await.unwrap();
        let sent = gemini.requests().pop().unwrap();
        assert!(
            sent.path
                .starts_with("/v1beta/models/gemini-2.5-flash-lite:"),
            "{}",
            sent.path
        );
        assert_eq!(
            sent.body.as_ref(),
            raw.as_slice(),
            "the body goes as it came"
        );
    }

    // The methods whose body names the model again name the account's, as the URL does.
    let content = json!({ "parts": [{ "text": "a" }] });
    for (call, body, named) in [
        (
            "gemini-embedding-001:embedContent",
            json!({ "model": "models/gemini-embedding-001", "content": content }),
            "/model",
        ),
        (
            "gemini-embedding-001:batchEmbedContents",
            json!({ "requests": [
                { "model": "models/gemini-embedding-001", "content": content },
                { "model": "models/gemini-embedding-001", "content": content },
            ] }),
            "/requests/1/model",
        ),
        (
            "gemini-2.5-pro:countTokens",
            json!({ "generateContentRequest": {
                "model": "models/gemini-2.5-pro",
                "contents": [{ "role": "user", "parts": [{ "text": "a" }] }],
            } }),
            "/generateContentRequest/model",
        ),
    ] {
        http_client()
            .post(relay.url(&format!("/v1beta/models/{call}")))
            .header("x-goog-api-key", &key)
            .json(&body)
            .send()
            .await
            .unwrap();
        let sent = gemini.requests().pop().unwrap();
        let (model, method) = call.split_once(':').unwrap();
        let renamed = if model.starts_with("gemini-2.5") {
            "gemini-2.5-flash-lite"
        } else {
            "text-embedding-004"
        };
        assert_eq!(sent.path, format!("/v1beta/models/{renamed}:{method}"));
        let sent = sent.json();
        assert_eq!(
            sent.pointer(named).unwrap(),
            &json!(format!("models/{renamed}")),
            "{sent}"
        );
        if method == "batchEmbedContents" {
            assert_eq!(sent["requests"][0]["model"], format!("models/{renamed}"));
            assert_eq!(sent["requests"][0]["content"], content);
        }
    }
}

/// Each attempt is sent under its own account's name: a mapped account that fails hands the
/// request to the next, which gets the model as the client asked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_sends_the_next_account_its_own_name() {
    let mapped = MockUpstream::start().await;
    mapped.set_default(Behavior::error(500, "api_error", "down"));
    let plain = MockUpstream::start().await;
    plain.set_default(Behavior::Ok(MockUsage::new(10, 5)));
    let relay = Relay::start().await;
    let first = relay
        .add_account(
            &mapped,
            UPSTREAM_KEY,
            json!({ "priority": 1, "model_map": { "claude-*": "glm-4.6" } }),
        )
        .await;
    let second = relay
        .add_account(&plain, UPSTREAM_KEY, json!({ "priority": 2 }))
        .await;
    let (_, key) = relay.create_key("k").await;
    assert_eq!(
        sent_as(&relay, &plain, &key, "claude-sonnet-4-5").await,
        "claude-sonnet-4-5"
    );
    assert_eq!(mapped.requests().pop().unwrap().json()["model"], "glm-4.6");
    // The request log names the account that served, and lists it under that account alone.
    relay.app.stats.flush().await;
    let served = relay.requests(&format!("account_id={second}")).await;
    assert_eq!(served.len(), 1, "{served:?}");
    assert_eq!(served[0]["account_id"], second.as_str());
    assert!(
        relay
            .requests(&format!("account_id={first}"))
            .await
            .is_empty()
    );
}

/// A map renames what an account is sent; it does not claim a name: chat completions for a
/// Claude model still go to the Anthropic account, translated, beside an OpenAI account that
/// maps `claude-*` without listing it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_map_claims_no_model_for_chat_completions() {
    let anthropic = MockUpstream::start().await;
    anthropic.set_default(Behavior::Ok(MockUsage::new(10, 5)));
    let openai = MockUpstream::start().await;
    openai.set_default(Behavior::Ok(MockUsage::new(10, 5)));
    let relay = Relay::start().await;
    relay.add_account(&anthropic, UPSTREAM_KEY, json!({})).await;
    relay
        .add_account(
            &openai,
            UPSTREAM_KEY,
            json!({
                "provider": "openai",
                "base_url": format!("{}/v1", openai.base_url()),
                "model_map": { "claude-*": "glm-4.6" },
            }),
        )
        .await;
    let (_, key) = relay.create_key("k").await;
    let resp = http_client()
        .post(relay.url("/v1/chat/completions"))
        .bearer_auth(&key)
        .json(&json!({ "model": "claude-sonnet-4-5", "messages": [{ "role": "user", "content": "hi" }] }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let sent = anthropic.requests().pop().unwrap();
    assert_eq!(sent.path, "/v1/messages");
    assert_eq!(sent.json()["model"], "claude-sonnet-4-5");
    assert!(openai.requests().is_empty());
}

#[tokio::test]
async fn a_model_map_the_account_cannot_use_is_refused() {
    let relay = Relay::start().await;
    let mock = MockUpstream::start().await;
    for (extra, names) in [
        (
            json!({ "provider": "bedrock", "region": "us-east-1", "model_map": { "a": "b" } }),
            "deployments",
        ),
        (
            json!({ "provider": "gemini", "model_map": { "gemini-*": "tunedModels/x" } }),
            "letters, digits",
        ),
        (json!({ "model_map": { "claude-[": "x" } }), "glob"),
        (json!({ "model_map": { "claude-*": "" } }), "model name"),
        (json!({ "model_map": { "claude-*": "a\nb" } }), "model name"),
        (json!({ "model_map": { "claude-* ": "glm" } }), "no spaces"),
        (json!({ "model_map": { "claude-*": " glm" } }), "no spaces"),
    ] {
        let mut body = json!({
            "name": "a",
            "provider": "anthropic",
            "base_url": mock.base_url(),
            "api_key": UPSTREAM_KEY,
        });
        if let (Value::Object(b), Value::Object(e)) = (&mut body, extra.clone()) {
            b.extend(e);
        }
        let (status, answer) = relay
            .admin(Method::POST, "/admin/accounts", Some(body))
            .await;
        assert_eq!(status, 400, "{extra}: {answer}");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(message.contains("model_map"), "{message}");
        assert!(message.contains(names), "{message}");
    }
    let (_, accounts) = relay.admin(Method::GET, "/admin/accounts", None).await;
    assert_eq!(accounts["data"], json!([]));
}
