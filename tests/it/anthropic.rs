//! The Anthropic relay end to end: real server, mock upstream, real client request shapes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use futures_util::StreamExt;
use reqwest::Method;
use serde_json::{Value, json};

use crate::support::captured;
use crate::support::mock::{Behavior, MockUpstream, MockUsage, http_client, wait_until};
use crate::support::relay::{ACCOUNT_KEY, Relay, messages_body, relay_with_account};

fn usage(input: u64, output: u64) -> MockUsage {
    MockUsage {
        input,
        output,
        ..MockUsage::default()
    }
}

/// Asks for a `model` answer and reads all of it.
async fn answered(relay: &Relay, key: &str, model: &str, stream: bool) {
    let resp = relay
        .messages(key, &messages_body(model, stream))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    resp.bytes().await.unwrap();
}

#[tokio::test]
async fn claude_code_request_reaches_upstream_unchanged_and_stream_comes_back_byte_identical() {
    let (relay, mock, key, _) = relay_with_account().await;
    mock.set_default(Behavior::Ok(usage(10, 7)));
    let cc = captured("claude-code-prompt.requests.jsonl")
        .into_iter()
        .find(|c| c.method == "POST")
        .unwrap();
    let body_bytes = serde_json::to_vec(cc.body.as_ref().unwrap()).unwrap();
    let mut req = http_client().post(relay.url(&format!("{}?{}", cc.path, cc.query)));
    for (name, value) in &cc.headers {
        let lower = name.to_ascii_lowercase();
        if ["host", "content-length", "connection"].contains(&lower.as_str()) {
            continue;
        }
        let value = if lower == "x-api-key" {
            key.clone()
        } else {
            value.clone()
        };
        req = req.header(name.as_str(), value);
    }
    let resp = req.body(body_bytes.clone()).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let got = resp.bytes().await.unwrap();

    let upstream = &mock.requests()[0];
    assert_eq!(upstream.path, "/v1/messages");
    assert_eq!(upstream.query.as_deref(), Some("beta=true"));
    assert_eq!(
        upstream.body, body_bytes,
        "the body goes upstream byte for byte"
    );
    assert_eq!(upstream.header("x-api-key"), Some(ACCOUNT_KEY));
    assert_eq!(upstream.header("authorization"), None);
    assert_eq!(upstream.header("accept-encoding"), Some("identity"));
    for kept in [
        "anthropic-beta",
        "anthropic-version",
        "user-agent",
        "x-claude-code-session-id",
        "x-app",
        "x-stainless-retry-count",
    ] {
        let sent = cc
            .headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(kept))
            .unwrap();
        assert_eq!(upstream.header(kept), Some(sent.1.as_str()), "{kept} kept");
    }
    // The body carries Claude Code's metadata.user_id, system blocks and a role: system message.
    let sent = upstream.json();
    assert!(
        sent["metadata"]["user_id"]
            .as_str()
            .unwrap()
            .contains("session_id")
    );
    assert_eq!(sent["messages"][1]["role"], "system");

    assert_eq!(
        got,
        mock.responses()[0],
        "the stream reaches the client byte for byte"
    );
    let entries = relay.logged(1).await;
    assert_eq!(entries[0]["input_tokens"], 10);
    assert_eq!(entries[0]["output_tokens"], 7);
}

#[tokio::test]
async fn json_answers_pass_through_and_every_prefix_and_probe_works() {
    let (relay, mock, key, _) = relay_with_account().await;
    mock.set_default(Behavior::Ok(usage(3, 4)));
    for prefix in ["", "/api", "/claude"] {
        let resp = http_client()
            .post(relay.url(&format!("{prefix}/v1/messages")))
            .bearer_auth(&key) // the Anthropic Python SDK sends Bearer only
            .json(&messages_body("claude-sonnet-4-5", false))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{prefix}");
        assert!(
            resp.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("application/json")
        );
        let got = resp.bytes().await.unwrap();
        assert_eq!(got, *mock.responses().last().unwrap(), "{prefix}");
        assert_eq!(
            mock.requests().last().unwrap().path,
            "/v1/messages",
            "prefix stripped"
        );
    }
    // Claude Code probes its base URL with HEAD: the root, or a prefix alone.
    for path in ["/", "/claude", "/api/", "/openai", "/gemini/"] {
        for method in [Method::HEAD, Method::GET] {
            let resp = http_client()
                .request(method.clone(), relay.url(path))
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 200, "{method} {path}");
        }
    }
    let resp = http_client()
        .head(relay.url("/claudex"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    let resp = http_client()
        .post(relay.url("/v1/messages/count_tokens"))
        .header("x-api-key", &key)
        .json(&messages_body("claude-sonnet-4-5", false))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.json::<Value>().await.unwrap()["input_tokens"], 3);
    let resp = http_client()
        .get(relay.url("/v1/models"))
        .header("x-api-key", &key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        resp.json::<Value>().await.unwrap()["data"]
            .as_array()
            .unwrap()
            .len()
            > 1
    );
    // count_tokens and models are relayed but not billed.
    let entries = relay.logged(3).await;
    assert_eq!(entries.len(), 3);
}

#[tokio::test]
async fn recorded_usage_and_cost_follow_the_upstream_and_the_price_table() {
    let (relay, mock, key, account_id) = relay_with_account().await;
    let reported = MockUsage {
        input: 1_000,
        output: 2_000,
        cache_creation_5m: 300,
        cache_creation_1h: 400,
        cache_read: 5_000,
    };
    mock.set_default(Behavior::Ok(reported));
    for stream in [true, false] {
        answered(&relay, &key, "claude-sonnet-4-5", stream).await;
    }
    relay.logged(2).await;
    // claude-sonnet-4-5: $3 in, $15 out, $3.75 5m write, $6 1h write, $0.30 read per MTok.
    let one = (1_000 * 3_000 + 2_000 * 15_000 + 300 * 3_750 + 400 * 6_000 + 5_000 * 300) as u64;
    for query in [
        "",
        "model=claude-sonnet-4-5",
        &format!("account_id={account_id}"),
    ] {
        let u = relay.usage(query).await;
        assert_eq!(u["requests"], 2, "{query}: {u}");
        assert_eq!(u["input_tokens"], 2_000);
        assert_eq!(u["output_tokens"], 4_000);
        assert_eq!(u["cache_creation_input_tokens"], 1_400);
        assert_eq!(u["cache_creation_5m_input_tokens"], 600);
        assert_eq!(u["cache_creation_1h_input_tokens"], 800);
        assert_eq!(u["cache_read_input_tokens"], 10_000);
        assert_eq!(u["cost_nanousd"], 2 * one, "{query}");
    }
    // A series by hour within today covers the same requests.
    let u = relay.usage("granularity=hour").await;
    let series = u["series"].as_array().unwrap();
    assert_eq!(
        series
            .iter()
            .map(|p| p["requests"].as_u64().unwrap())
            .sum::<u64>(),
        2
    );
    assert_eq!(u["totals"]["cost_nanousd"], 2 * one);
    let key_rows = relay.requests("limit=10").await;
    assert_eq!(key_rows[0]["cost_nanousd"], one);
    assert_eq!(key_rows[0]["status"], 200);
    assert!(key_rows[0]["ttfb_ms"].is_u64());
}

#[tokio::test]
async fn web_searches_are_billed_per_search_in_json_and_in_a_stream() {
    let (relay, mock, key, _) = relay_with_account().await;
    // Two searches by Anthropic's web search tool, as the answer reports them.
    let usage = r#"{"input_tokens": 1000, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0, "output_tokens": 100, "server_tool_use": {"web_search_requests": 2}}"#;
    let json_answer = format!(
        r#"{{"id": "msg_ws", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5", "content": [{{"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {{"query": "q"}}}}, {{"type": "web_search_tool_result", "tool_use_id": "srvtoolu_1", "content": []}}, {{"type": "text", "text": "ok"}}], "stop_reason": "end_turn", "stop_sequence": null, "usage": {usage}}}"#
    );
    let stream_answer = format!(
        "event: message_start\ndata: {{\"type\": \"message_start\", \"message\": {{\"id\": \"msg_ws\", \"type\": \"message\", \"role\": \"assistant\", \"model\": \"claude-sonnet-4-5\", \"content\": [], \"stop_reason\": null, \"stop_sequence\": null, \"usage\": {{\"input_tokens\": 1000, \"output_tokens\": 1, \"server_tool_use\": {{\"web_search_requests\": 0}}}}}}}}\n\n\
         event: content_block_start\ndata: {{\"type\": \"content_block_start\", \"index\": 0, \"content_block\": {{\"type\": \"text\", \"text\": \"\"}}}}\n\n\
         event: content_block_delta\ndata: {{\"type\": \"content_block_delta\", \"index\": 0, \"delta\": {{\"type\": \"text_delta\", \"text\": \"ok\"}}}}\n\n\
         event: content_block_stop\ndata: {{\"type\": \"content_block_stop\", \"index\": 0}}\n\n\
         event: message_delta\ndata: {{\"type\": \"message_delta\", \"delta\": {{\"stop_reason\": \"end_turn\", \"stop_sequence\": null}}, \"usage\": {usage}}}\n\n\
         event: message_stop\ndata: {{\"type\": \"message_stop\"}}\n\n"
    );
    mock.push_behavior(Behavior::Error {
        status: 200,
        body: json_answer,
        headers: Vec::new(),
    });
    mock.push_behavior(Behavior::Error {
        status: 200,
        body: stream_answer,
        headers: vec![("content-type".into(), "text/event-stream".into())],
    });
    for stream in [false, true] {
        answered(&relay, &key, "claude-sonnet-4-5", stream).await;
    }
    let rows = relay.logged(2).await;
    // 1000 in × $3 + 100 out × $15 per MTok, and 2 searches × $0.01.
    let one = 3_000_000 + 1_500_000 + 20_000_000;
    for row in &rows {
        assert_eq!(row["web_search_requests"], 2, "{row}");
        assert_eq!(row["cost_nanousd"], one, "{row}");
    }
    // The usage counters, which budgets are kept on, saw the same cost.
    assert_eq!(relay.usage("").await["cost_nanousd"], 2 * one);
}

#[tokio::test]
async fn a_prompt_above_200k_tokens_is_billed_at_the_long_context_price() {
    let (relay, mock, key, _) = relay_with_account().await;
    for (input, cache_read) in [(150_000, 50_000), (150_001, 50_000)] {
        mock.push_behavior(Behavior::Ok(MockUsage {
            input,
            output: 1_000,
            cache_read,
            ..MockUsage::default()
        }));
        answered(&relay, &key, "claude-sonnet-4-5", true).await;
    }
    let rows = relay.logged(2).await;
    let costs: Vec<&Value> = rows.iter().rev().map(|r| &r["cost_nanousd"]).collect();
    // Input + cache reads = 200,000: $3 / $0.30 / $15 per MTok; one more: $6 / $0.60 / $22.50.
    assert_eq!(
        costs,
        [
            &json!(450_000_000 + 15_000_000 + 15_000_000),
            &json!(900_006_000 + 30_000_000 + 22_500_000)
        ]
    );
}

#[tokio::test]
async fn a_client_that_disconnects_mid_stream_is_billed_for_what_passed_and_upstream_is_cancelled()
{
    let (relay, mock, key, account_id) = relay_with_account().await;
    mock.set_default(Behavior::Slow {
        usage: usage(25, 90),
        delay: Duration::from_millis(150),
    });
    let resp = relay
        .messages(&key, &messages_body("claude-sonnet-4-5", true))
        .send()
        .await
        .unwrap();
    let mut stream = resp.bytes_stream();
    let first = stream.next().await.unwrap().unwrap();
    assert!(
        std::str::from_utf8(&first)
            .unwrap()
            .contains("message_start")
    );
    drop(stream);
    wait_until("upstream sees the cancellation", || mock.cancelled() == 1).await;
    let entries = relay.logged(1).await;
    assert_eq!(
        entries[0]["input_tokens"], 25,
        "message_start's input is billed"
    );
    assert!(
        entries[0]["output_tokens"].as_u64().unwrap() < 90,
        "the final count never came"
    );
    let u = relay.usage("").await;
    assert_eq!(u["input_tokens"], 25);
    // The account's lease came back.
    released(&relay, &account_id).await;
}

/// Waits until the account has nothing in flight.
async fn released(relay: &Relay, account_id: &str) {
    for _ in 0..250 {
        if relay.account_in_flight(account_id).await == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("account {account_id} still has requests in flight");
}

async fn anthropic_error(resp: reqwest::Response) -> (u16, String) {
    let status = resp.status().as_u16();
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["type"], "error", "{v}");
    (status, v["error"]["type"].as_str().unwrap().to_owned())
}

#[tokio::test]
async fn missing_wrong_or_disabled_keys_get_401_in_anthropics_shape() {
    let (relay, mock, key, _) = relay_with_account().await;
    let body = messages_body("claude-sonnet-4-5", false);
    let resp = http_client()
        .post(relay.url("/v1/messages"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(
        anthropic_error(resp).await,
        (401, "authentication_error".into())
    );
    let resp = relay
        .messages("sy-not-a-real-key", &body)
        .send()
        .await
        .unwrap();
    assert_eq!(
        anthropic_error(resp).await,
        (401, "authentication_error".into())
    );

    let resp = relay.messages(&key, &body).send().await.unwrap();
    assert_eq!(resp.status(), 200, "the key works before it is disabled");
    resp.bytes().await.unwrap();
    let keys = relay.admin(Method::GET, "/admin/keys", None).await.1;
    let id = keys["data"][0]["id"].as_str().unwrap().to_owned();
    assert!(
        keys.to_string().find(&key).is_none(),
        "a listing never shows the secret"
    );
    let (status, _) = relay
        .admin(
            Method::PATCH,
            &format!("/admin/keys/{id}"),
            Some(json!({ "enabled": false })),
        )
        .await;
    assert_eq!(status, 200);
    let resp = relay.messages(&key, &body).send().await.unwrap();
    assert_eq!(
        anthropic_error(resp).await,
        (401, "authentication_error".into())
    );
    let (status, _) = relay
        .admin(Method::DELETE, &format!("/admin/keys/{id}"), None)
        .await;
    assert_eq!(status, 200);
    let resp = relay.messages(&key, &body).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(
        mock.requests().len(),
        1,
        "refused requests never reach upstream"
    );

    // The admin API wants its own token.
    let resp = http_client()
        .get(relay.url("/admin/keys"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let resp = http_client()
        .get(relay.url("/admin/keys"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
}

#[tokio::test]
async fn upstream_errors_reach_the_client_with_their_status_body_and_headers() {
    let (relay, mock, key, account_id) = relay_with_account().await;
    mock.push_behavior(Behavior::error(
        400,
        "invalid_request_error",
        "max_tokens: required",
    ));
    mock.push_behavior(Behavior::rate_limited(17));
    mock.push_behavior(Behavior::error(500, "api_error", "boom"));
    for (status, retry_after) in [(400, None), (429, Some("17")), (500, None)] {
        // A 429 or 500 takes the only account out of rotation (the scheduler's job, tested in
        // scheduler.rs); here each error is one request on a healthy account.
        relay
            .admin(
                Method::POST,
                &format!("/admin/accounts/{account_id}/reset"),
                None,
            )
            .await;
        let resp = relay
            .messages(&key, &messages_body("claude-sonnet-4-5", true))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), status);
        assert_eq!(
            resp.headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap()),
            retry_after
        );
        let got = resp.bytes().await.unwrap();
        assert_eq!(
            got,
            *mock.responses().last().unwrap(),
            "{status} body unchanged"
        );
    }
    let entries = relay.logged(3).await;
    let statuses: Vec<u64> = entries
        .iter()
        .map(|e| e["status"].as_u64().unwrap())
        .collect();
    assert_eq!(statuses, vec![500, 429, 400]);
    assert_eq!(
        relay.usage("").await["requests"],
        0,
        "errors without usage are not billed"
    );
    let in_flight = relay.account_in_flight(&account_id).await;
    assert_eq!(in_flight, 0);
}

#[tokio::test]
async fn bad_input_gets_a_clear_error_and_leaves_nothing_behind() {
    let mock = MockUpstream::start().await;
    let relay = Relay::start_configured(|c| c.server.body_limit_bytes = 2_000).await;
    let account_id = relay
        .add_account(&mock, ACCOUNT_KEY, json!({ "models": ["claude-sonnet-*"] }))
        .await;
    let (_, key) = relay.create_key("bob").await;

    let resp = relay
        .messages(
            &key,
            &json!({ "model": "claude-sonnet-4-5", "pad": "x".repeat(5_000) }),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(
        anthropic_error(resp).await,
        (413, "request_too_large".into())
    );
    let resp = http_client()
        .post(relay.url("/v1/messages"))
        .header("x-api-key", &key)
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(
        anthropic_error(resp).await,
        (400, "invalid_request_error".into())
    );
    let resp = relay
        .messages(&key, &json!({ "messages": [] }))
        .send()
        .await
        .unwrap();
    assert_eq!(
        anthropic_error(resp).await,
        (400, "invalid_request_error".into())
    );

    // No account serves this model: 404 that says so, as the vendor answers a model it does
    // not have (clients retry a 503).
    let resp = relay
        .messages(&key, &messages_body("claude-opus-4-8", false))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["type"], "error");
    assert_eq!(v["error"]["type"], "not_found_error");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no upstream account serves model claude-opus-4-8"),
        "{v}"
    );

    // Azure's settings on an Anthropic account are refused on update as on create.
    let (status, v) = relay
        .admin(
            Method::PATCH,
            &format!("/admin/accounts/{account_id}"),
            Some(json!({ "deployments": { "claude-sonnet-4-5": "d" } })),
        )
        .await;
    assert_eq!(status, 400, "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("azure"),
        "{v}"
    );
    // A disabled account: available accounts exist, none can serve now.
    relay
        .admin(
            Method::PATCH,
            &format!("/admin/accounts/{account_id}"),
            Some(json!({ "schedulable": false })),
        )
        .await;
    let resp = relay
        .messages(&key, &messages_body("claude-sonnet-4-5", false))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 503);
    let v: Value = resp.json().await.unwrap();
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("available now"),
        "{v}"
    );

    assert!(mock.requests().is_empty());
    assert!(relay.requests("").await.is_empty(), "no usage record");
    assert_eq!(relay.usage("").await["requests"], 0);
    assert_eq!(relay.account_in_flight(&account_id).await, 0);

    let (status, v) = relay
        .admin(
            Method::POST,
            "/admin/accounts",
            Some(json!({ "name": "x", "provider": "cohere", "api_key": "k" })),
        )
        .await;
    assert_eq!(status, 400, "{v}");
    // Azure needs its resource's endpoint.
    let (status, v) = relay
        .admin(
            Method::POST,
            "/admin/accounts",
            Some(json!({ "name": "x", "provider": "azure-openai", "api_key": "k" })),
        )
        .await;
    assert_eq!(status, 400, "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("base_url"),
        "{v}"
    );
    let (status, _) = relay
        .admin(
            Method::POST,
            "/admin/accounts",
            Some(
                json!({ "name": "x", "provider": "anthropic", "api_key": "k", "models": ["[bad"] }),
            ),
        )
        .await;
    assert_eq!(status, 400);
    let (status, _) = relay
        .admin(Method::POST, "/admin/keys", Some(json!({ "nom": "x" })))
        .await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn scheduler_prefers_low_priority_numbers_then_rotates_and_respects_caps() {
    let a = MockUpstream::start().await;
    let b = MockUpstream::start().await;
    let c = MockUpstream::start().await;
    let relay = Relay::start().await;
    relay
        .add_account(&a, "key-a", json!({ "priority": 10 }))
        .await;
    relay
        .add_account(&b, "key-b", json!({ "priority": 10 }))
        .await;
    let c_id = relay
        .add_account(&c, "key-c", json!({ "priority": 1, "max_concurrency": 1 }))
        .await;
    let (_, key) = relay.create_key("k").await;

    // c (priority 1) serves while it has room.
    for _ in 0..3 {
        let resp = relay
            .messages(&key, &messages_body("claude-sonnet-4-5", false))
            .send()
            .await
            .unwrap();
        resp.bytes().await.unwrap();
    }
    assert_eq!(c.requests().len(), 3);
    // c holds one stream open: it is full, so a and b take turns.
    c.set_default(Behavior::StallAfterStart(usage(1, 1)));
    let held = relay
        .messages(&key, &messages_body("claude-sonnet-4-5", true))
        .send()
        .await
        .unwrap();
    for _ in 0..6 {
        let resp = relay
            .messages(&key, &messages_body("claude-sonnet-4-5", false))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        resp.bytes().await.unwrap();
    }
    assert_eq!(
        (a.requests().len(), b.requests().len(), c.requests().len()),
        (3, 3, 4)
    );
    drop(held);
    wait_until("c's stream is cancelled", || c.cancelled() == 1).await;
    released(&relay, &c_id).await;
    let (_, accounts) = relay.admin(Method::GET, "/admin/accounts", None).await;
    assert_eq!(accounts["data"].as_array().unwrap().len(), 3);
    assert!(
        !accounts.to_string().contains("key-a"),
        "api keys are never returned"
    );
}

#[tokio::test]
async fn keys_accounts_and_usage_survive_a_restart_and_the_api_key_is_sealed_on_disk() {
    let (relay, mock, key, account_id) = relay_with_account().await;
    mock.set_default(Behavior::Ok(usage(11, 22)));
    let resp = relay
        .messages(&key, &messages_body("claude-haiku-4-5", true))
        .send()
        .await
        .unwrap();
    resp.bytes().await.unwrap();
    relay.logged(1).await;
    let tmp = relay.tmp();
    let data_dir = relay.data_dir.clone();
    relay.stop().await;

    for entry in walk(&data_dir) {
        let bytes = std::fs::read(&entry).unwrap();
        let hay = String::from_utf8_lossy(&bytes);
        assert!(
            !hay.contains(ACCOUNT_KEY),
            "{} holds the api key in plain text",
            entry.display()
        );
        assert!(
            !hay.contains(&key),
            "{} holds a client key in plain text",
            entry.display()
        );
    }

    let relay = Relay::start_with(crate::support::relay::test_config(&data_dir), tmp).await;
    let u = relay.usage(&format!("account_id={account_id}")).await;
    assert_eq!(
        (
            u["requests"].as_u64(),
            u["input_tokens"].as_u64(),
            u["output_tokens"].as_u64()
        ),
        (Some(1), Some(11), Some(22))
    );
    let resp = relay
        .messages(&key, &messages_body("claude-haiku-4-5", false))
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        200,
        "the key and the account work after the restart"
    );
    resp.bytes().await.unwrap();
    assert_eq!(
        mock.requests().last().unwrap().header("x-api-key"),
        Some(ACCOUNT_KEY)
    );
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// The request log of a stopped relay, read from its data dir.
async fn logged_after_stop(relay: Relay) -> Vec<switchyard::store::RequestLogEntry> {
    let data_dir = relay.data_dir.clone();
    let _tmp = relay.tmp();
    drop(relay);
    let store = crate::support::relay::reopen_store(&data_dir).await;
    switchyard::store::Store::recent_requests(&store, &switchyard::store::RequestFilter::ALL, 10)
        .await
        .unwrap()
}

#[tokio::test]
async fn graceful_stop_lets_an_open_stream_finish() {
    let (mut relay, mock, key, _) = relay_with_account().await;
    mock.set_default(Behavior::Slow {
        usage: usage(5, 6),
        delay: Duration::from_millis(60),
    });
    let resp = relay
        .messages(&key, &messages_body("claude-sonnet-4-5", true))
        .send()
        .await
        .unwrap();
    let mut stream = resp.bytes_stream();
    let mut got = stream.next().await.unwrap().unwrap().to_vec();
    let task = relay.begin_stop().unwrap();
    while let Some(chunk) = stream.next().await {
        got.extend_from_slice(&chunk.unwrap());
    }
    assert_eq!(
        got,
        mock.responses()[0].to_vec(),
        "the whole stream arrived during the stop"
    );
    task.await.unwrap();
    // The final flush recorded it.
    let logged = logged_after_stop(relay).await;
    assert_eq!(logged.len(), 1);
    assert_eq!(logged[0].usage.output_tokens, 6);
}

#[tokio::test]
async fn a_stream_still_open_when_the_grace_period_ends_is_closed_and_billed() {
    let mock = MockUpstream::start().await;
    let mut relay = Relay::start_configured(|c| c.server.shutdown_grace_secs = 1).await;
    relay.add_account(&mock, ACCOUNT_KEY, json!({})).await;
    let (_, key) = relay.create_key("alice").await;
    // About 20 s of stream: far past the grace period.
    mock.set_default(Behavior::Slow {
        usage: usage(5, 6),
        delay: Duration::from_secs(2),
    });
    let resp = relay
        .messages(&key, &messages_body("claude-sonnet-4-5", true))
        .send()
        .await
        .unwrap();
    let mut stream = resp.bytes_stream();
    let first = stream.next().await.unwrap().unwrap();
    assert!(first.starts_with(b"event: message_start"));
    let started = std::time::Instant::now();
    let task = relay.begin_stop().unwrap();
    // The client sees its connection close once the grace period is over.
    while let Some(Ok(_)) = stream.next().await {}
    task.await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
    // Billed as a client that hung up: the input message_start reported, before the last flush.
    let logged = logged_after_stop(relay).await;
    assert_eq!(logged.len(), 1, "{logged:?}");
    assert_eq!(logged[0].usage.input_tokens, 5);
}

#[tokio::test]
async fn connections_spread_over_the_workers_and_every_worker_drains_on_stop() {
    let mock = MockUpstream::start().await;
    let mut relay = Relay::start_configured(|c| c.server.workers = 2).await;
    relay.add_account(&mock, ACCOUNT_KEY, json!({})).await;
    let (_, key) = relay.create_key("alice").await;
    mock.set_default(Behavior::Slow {
        usage: usage(5, 6),
        delay: Duration::from_millis(60),
    });
    // Four streams, each on a connection of its own, held open.
    let mut streams = Vec::new();
    for _ in 0..4 {
        let resp = http_client()
            .post(relay.url("/v1/messages"))
            .header("x-api-key", &key)
            .header("anthropic-version", "2023-06-01")
            .json(&messages_body("claude-sonnet-4-5", true))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let mut stream = resp.bytes_stream();
        let first = stream.next().await.unwrap().unwrap().to_vec();
        streams.push((first, stream));
    }
    // The health check is a fifth connection; the least busy worker takes each new one.
    let health = relay.health().await;
    let open: Vec<u64> = health["worker_connections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_u64().unwrap())
        .collect();
    assert_eq!(open.len(), 2, "{health}");
    assert_eq!(open.iter().sum::<u64>(), 5, "{health}");
    assert!(open.iter().all(|&n| n >= 2), "both workers serve: {health}");
    // Stop while all four stream: each worker lets its own finish.
    let task = relay.begin_stop().unwrap();
    let mut received = Vec::new();
    for (mut got, mut stream) in streams {
        while let Some(chunk) = stream.next().await {
            got.extend_from_slice(&chunk.unwrap());
        }
        received.push(got);
    }
    task.await.unwrap();
    let mut sent: Vec<Vec<u8>> = mock.responses().iter().map(|r| r.to_vec()).collect();
    sent.sort();
    received.sort();
    assert_eq!(received, sent, "every stream arrived whole during the stop");
    let logged = logged_after_stop(relay).await;
    assert_eq!(logged.len(), 4, "every stream was billed, on either worker");
    assert!(logged.iter().all(|r| r.usage.output_tokens == 6));
}

#[tokio::test]
async fn chunks_are_forwarded_as_they_come_and_h2c_works() {
    let (relay, mock, key, _) = relay_with_account().await;
    mock.set_default(Behavior::Slow {
        usage: usage(5, 6),
        delay: Duration::from_millis(40),
    });
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let resp = h2
        .post(relay.url("/v1/messages"))
        .header("x-api-key", &key)
        .json(&messages_body("claude-sonnet-4-5", true))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    let mut stream = resp.bytes_stream();
    let mut chunks = 0;
    let mut all = Vec::new();
    while let Some(chunk) = stream.next().await {
        chunks += 1;
        all.extend_from_slice(&chunk.unwrap());
    }
    assert_eq!(all, mock.responses()[0].to_vec());
    assert!(
        chunks >= 5,
        "events arrive one by one, not batched ({chunks} chunks)"
    );
}

/// An Anthropic stream's head is handed on with its first event, read first so that a stream
/// opening with an error (an overload after the 200 head) can fail over: an upstream that sends
/// its head and then nothing for a while (within the first-byte timeout) is waited for, and
/// its answer reaches the client whole.
#[tokio::test]
async fn an_anthropic_stream_s_head_waits_for_its_first_event() {
    let (relay, mock, key, _) = relay_with_account().await;
    let quiet = Duration::from_secs(2);
    mock.set_default(Behavior::QuietStart(quiet, usage(5, 6)));
    let started = std::time::Instant::now();
    let resp = relay
        .messages(&key, &messages_body("claude-sonnet-4-5", true))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        started.elapsed() >= quiet,
        "the head went before the first event: {:?}",
        started.elapsed()
    );
    let body = resp.bytes().await.unwrap();
    assert_eq!(body, mock.responses()[0]);
    let logged = relay.logged(1).await;
    assert_eq!(logged[0]["output_tokens"], 6);
}

#[tokio::test]
async fn health_and_metrics_report() {
    let (relay, mock, key, account_id) = relay_with_account().await;
    mock.set_default(Behavior::Ok(usage(1, 2)));
    relay
        .messages(&key, &messages_body("claude-sonnet-4-5", false))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    relay.logged(1).await;
    let health = relay.health().await;
    assert_eq!(health["status"], "ok");
    assert_eq!(health["version"], env!("CARGO_PKG_VERSION"));
    let text = relay.metrics().await;
    for name in [
        "switchyard_requests_total",
        "switchyard_upstream_ttfb_seconds_bucket",
        "switchyard_relay_overhead_seconds_bucket",
        "switchyard_tokens_total",
        "switchyard_cost_nanousd_total",
        "switchyard_active_streams",
    ] {
        assert!(text.contains(name), "{name} missing from /metrics");
    }
    // The accounts' state is read from the store at most once a second, however often scraped.
    // (The recorder is the process's: other tests' accounts are listed too.)
    let series = format!("switchyard_account_in_flight{{account_id=\"{account_id}\"}}");
    let in_flight = |text: &str| {
        text.lines()
            .find(|l| l.starts_with(&series))
            .map(|l| l.rsplit(' ').next().unwrap().to_owned())
    };
    assert_eq!(in_flight(&text).as_deref(), Some("0"));
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    relay.metrics().await;
    let scraped = std::time::Instant::now();
    mock.set_default(Behavior::DelayHeaders(Duration::from_secs(3), usage(1, 2)));
    let slow = relay
        .messages(&key, &messages_body("claude-sonnet-4-5", false))
        .send();
    let slow = tokio::spawn(slow);
    wait_until("the slow request upstream", || mock.in_flight() == 1).await;
    let again = relay.metrics().await;
    // (Unless this machine took the whole second to get here.)
    if scraped.elapsed() < Duration::from_millis(900) {
        assert_eq!(
            in_flight(&again).as_deref(),
            Some("0"),
            "read again at once"
        );
    }
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    assert_eq!(in_flight(&relay.metrics().await).as_deref(), Some("1"));
    slow.await.unwrap().unwrap();
}

#[tokio::test]
async fn an_unreachable_upstream_gets_502_in_anthropics_shape_and_returns_the_lease() {
    let relay = Relay::start().await;
    // A port nobody listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let (status, v) = relay
        .admin(
            Method::POST,
            "/admin/accounts",
            Some(json!({ "name": "gone", "provider": "anthropic", "api_key": ACCOUNT_KEY, "base_url": format!("http://{closed}") })),
        )
        .await;
    assert_eq!(status, 201, "{v}");
    let account_id = v["id"].as_str().unwrap().to_owned();
    let (_, key) = relay.create_key("k").await;
    let resp = relay
        .messages(&key, &messages_body("claude-sonnet-4-5", true))
        .send()
        .await
        .unwrap();
    let (status, kind) = anthropic_error(resp).await;
    assert_eq!((status, kind.as_str()), (502, "api_error"));
    released(&relay, &account_id).await;
    // The request log shows the failure, billed nothing; the usage counters count nothing.
    relay.app.stats.flush().await;
    let logged = relay.requests("").await;
    assert_eq!(logged.len(), 1, "{logged:?}");
    assert_eq!(
        (&logged[0]["status"], &logged[0]["cost_nanousd"]),
        (&json!(502), &json!(0))
    );
    assert_eq!(relay.usage("").await["requests"], 0);
}

#[tokio::test]
async fn a_stalled_stream_is_cut_with_an_error_event_and_what_passed_is_recorded() {
    let mock = MockUpstream::start().await;
    let relay = Relay::start_configured(|c| {
        c.upstream.idle_timeout_secs = 1;
        c.upstream.first_byte_timeout_secs = 1;
    })
    .await;
    let account_id = relay.add_account(&mock, ACCOUNT_KEY, json!({})).await;
    let (_, key) = relay.create_key("k").await;

    mock.push_behavior(Behavior::StallAfterStart(usage(40, 50)));
    let resp = relay
        .messages(&key, &messages_body("claude-sonnet-4-5", true))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body = resp.bytes().await.unwrap();
    let text = std::str::from_utf8(&body).unwrap();
    assert!(
        text.starts_with(std::str::from_utf8(&mock.responses()[0]).unwrap()),
        "what passed reached the client first"
    );
    let tail = text.rsplit("\n\n").find(|e| !e.is_empty()).unwrap();
    assert!(tail.starts_with("event: error\ndata: "), "{tail}");
    let data: Value =
        serde_json::from_str(tail.trim_start_matches("event: error\ndata: ")).unwrap();
    assert_eq!(data["type"], "error");
    assert_eq!(data["error"]["type"], "api_error");
    let entries = relay.logged(1).await;
    assert_eq!(
        entries[0]["input_tokens"], 40,
        "message_start's input is recorded"
    );
    released(&relay, &account_id).await;

    // No response head within the first-byte timeout: 504 in Anthropic's shape.
    mock.push_behavior(Behavior::DelayHeaders(Duration::from_secs(3), usage(1, 1)));
    let resp = relay
        .messages(&key, &messages_body("claude-sonnet-4-5", true))
        .send()
        .await
        .unwrap();
    assert_eq!(anthropic_error(resp).await, (504, "api_error".into()));
    released(&relay, &account_id).await;
}

#[tokio::test]
async fn a_key_in_the_query_authenticates_but_never_goes_upstream() {
    let (relay, mock, key, _) = relay_with_account().await;
    mock.set_default(Behavior::Ok(usage(3, 4)));
    for query in [
        format!("beta=true&key={key}"),
        format!("k%65y={key}&beta=true"),
    ] {
        let resp = http_client()
            .post(relay.url(&format!("/v1/messages?{query}")))
            .json(&messages_body("claude-sonnet-4-5", false))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{query}");
        let sent = mock.requests().pop().unwrap();
        assert_eq!(sent.query.as_deref(), Some("beta=true"), "{query}");
        assert_eq!(sent.headers["x-api-key"], ACCOUNT_KEY);
    }
}

#[tokio::test]
async fn a_model_name_longer_than_any_is_refused_without_being_echoed() {
    let (relay, mock, key, _) = relay_with_account().await;
    let long = "claude-".to_owned() + &"x".repeat(100_000);
    let resp = relay
        .messages(&key, &messages_body(&long, false))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let body = resp.text().await.unwrap();
    assert!(
        body.len() < 500,
        "the name is not echoed: {} bytes",
        body.len()
    );
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["error"]["type"], "invalid_request_error", "{v}");
    assert!(mock.requests().is_empty());
    relay.app.stats.flush().await;
    assert!(relay.requests("").await.is_empty());
}

/// An answer with an empty body (here a 200 with `content-length: 0`) is settled as complete:
/// hyper writes the head of an empty body and never polls it, which read as a client that went
/// away (billed an estimate of its prompt).
#[tokio::test]
async fn an_empty_answer_is_settled_as_complete() {
    let (relay, mock, key, _) = relay_with_account().await;
    mock.push_behavior(Behavior::Error {
        status: 200,
        body: String::new(),
        headers: Vec::new(),
    });
    let resp = relay
        .messages(&key, &messages_body("claude-sonnet-4-5", false))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.bytes().await.unwrap().is_empty());
    let entry = relay.logged(1).await.remove(0);
    assert_eq!(entry["estimated"], false, "{entry}");
    assert_eq!(entry["input_tokens"], 0, "{entry}");
}

/// A Claude subscription's OAuth token (`claude setup-token`) as an account's credential: sent
/// as a bearer token with the OAuth beta beside the client's, never as `x-api-key`; its
/// subscription's 5-hour limit, when spent, rests the account until its reset.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_s_oauth_token_is_a_bearer_token_with_its_beta() {
    let token = "sk-ant-oat01-abcdefghijklmnop";
    let (mock, other) = (MockUpstream::start().await, MockUpstream::start().await);
    mock.require_api_key(token);
    let relay = Relay::start().await;
    let account = relay
        .add_account(&mock, token, json!({ "priority": 1 }))
        .await;
    relay
        .add_account(&other, "sk-ant-api03-x", json!({ "priority": 2 }))
        .await;
    let (_, key) = relay.create_key("k").await;
    let resp = relay
        .messages(&key, &messages_body("claude-sonnet-4-5", true))
        .header(
            "anthropic-beta",
            "claude-code-20250219,interleaved-thinking-2025-05-14",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    resp.bytes().await.unwrap();
    let sent = mock.requests().pop().unwrap();
    assert_eq!(
        sent.header("authorization"),
        Some(format!("Bearer {token}").as_str())
    );
    assert!(sent.header("x-api-key").is_none());
    assert_eq!(
        sent.header("anthropic-beta"),
        Some("claude-code-20250219,interleaved-thinking-2025-05-14,oauth-2025-04-20")
    );
    // Without betas of the client's, the OAuth one alone; an API key goes as before.
    answered(&relay, &key, "claude-sonnet-4-5", false).await;
    let sent = mock.requests().pop().unwrap();
    assert_eq!(sent.header("anthropic-beta"), Some("oauth-2025-04-20"));

    // The subscription's 5-hour window spent: the account rests until it resets, and the
    // request goes to the other account.
    let reset = jiff::Timestamp::now().as_second() + 3 * 3600;
    mock.push_behavior(Behavior::Error {
        status: 429,
        body: json!({ "type": "error", "error": { "type": "rate_limit_error",
            "message": "This request would exceed your account's rate limit." } })
        .to_string(),
        headers: vec![
            (
                "anthropic-ratelimit-unified-status".into(),
                "rejected".into(),
            ),
            (
                "anthropic-ratelimit-unified-5h-status".into(),
                "rejected".into(),
            ),
            (
                "anthropic-ratelimit-unified-5h-reset".into(),
                reset.to_string(),
            ),
        ],
    });
    answered(&relay, &key, "claude-sonnet-4-5", false).await;
    assert_eq!(other.requests().len(), 1);
    let sent = other.requests().pop().unwrap();
    assert_eq!(sent.header("x-api-key"), Some("sk-ant-api03-x"));
    assert!(sent.header("authorization").is_none());
    let (_, v) = relay
        .admin(Method::GET, &format!("/admin/accounts/{account}"), None)
        .await;
    assert_eq!(v["state"]["status"], "rate_limited", "{v}");
    let until: jiff::Timestamp = v["state"]["until"].as_str().unwrap().parse().unwrap();
    assert_eq!(until.as_second(), reset, "{v}");
}
