//! The OpenAI, Azure OpenAI and Gemini surfaces, native: byte-identical pass-through, usage read
//! from each vendor's answer, errors in each surface's shape, failover and limits as on the
//! Anthropic surface, and the real clients' captured requests passing unchanged.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use reqwest::Method;
use serde_json::{Value, json};

use crate::support::captured;
use crate::support::mock::{
    AnswerOpts, Behavior, MockUpstream, MockUsage, gemini, http_client, openai,
};
use crate::support::relay::Relay;

/// Usage with cached input, to check each vendor's normalisation.
fn cached_usage() -> MockUsage {
    MockUsage {
        input: 100,
        output: 20,
        cache_read: 30,
        ..MockUsage::default()
    }
}

async fn add(relay: &Relay, mock: &MockUpstream, provider: &str, extra: Value) -> String {
    let base = match provider {
        "openai" => format!("{}/v1", mock.base_url()),
        _ => mock.base_url(),
    };
    let mut body = json!({ "provider": provider, "base_url": base });
    if let (Value::Object(b), Value::Object(e)) = (&mut body, extra) {
        b.extend(e);
    }
    relay.add_account(mock, "sk-upstream", body).await
}

/// A relay with one account of `provider` on `mock`, and a key for it.
async fn relay_with(mock: &MockUpstream, provider: &str, extra: Value) -> (Relay, String) {
    let relay = Relay::start().await;
    add(&relay, mock, provider, extra).await;
    let (_, key) = relay.create_key("k").await;
    (relay, key)
}

fn post(relay: &Relay, path: &str, key: &str, body: &Value) -> reqwest::RequestBuilder {
    http_client()
        .post(relay.url(path))
        .bearer_auth(key)
        .json(body)
}

/// The one request log entry, once it is recorded.
async fn logged(relay: &Relay) -> Value {
    for _ in 0..200 {
        relay.app.stats.flush().await;
        if let Some(e) = relay.requests("limit=1").await.into_iter().next() {
            return e;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("no request was logged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_chat_passes_through_and_bills_every_stream() {
    let mock = MockUpstream::start().await;
    mock.set_default(Behavior::Ok(cached_usage()));
    let relay = Relay::start().await;
    add(&relay, &mock, "openai", json!({})).await;
    let (_, key) = relay.create_key("k").await;
    let model = "gpt-4o-mini";

    // Streaming without asking for usage: Switchyard asks upstream, the client never sees it.
    let body = json!({ "model": model, "stream": true, "messages": [{ "role": "user", "content": "hi" }] });
    let resp = post(&relay, "/v1/chat/completions", &key, &body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let got = resp.bytes().await.unwrap();
    let want = openai::expected_chat_stream_bytes(model, cached_usage(), &AnswerOpts::default());
    assert_eq!(
        got, want,
        "the client gets exactly what it would have got without Switchyard"
    );
    let sent = mock.requests().pop().unwrap();
    assert_eq!(sent.json()["stream_options"]["include_usage"], true);
    assert_eq!(sent.header("authorization"), Some("Bearer sk-upstream"));
    assert_eq!(sent.path, "/v1/chat/completions");
    // OpenAI's prompt_tokens include the cached ones; the record keeps them apart.
    let e = logged(&relay).await;
    assert_eq!(
        (
            e["input_tokens"].as_u64(),
            e["cache_read_input_tokens"].as_u64()
        ),
        (Some(100), Some(30))
    );
    assert_eq!(e["output_tokens"], 20);
    assert_eq!(e["surface"], "openai");
    assert!(e["cost_nanousd"].as_u64().unwrap() > 0);

    // Asking for usage: the stream is untouched, usage chunk included.
    let body = json!({ "model": model, "stream": true, "stream_options": { "include_usage": true }, "messages": [{ "role": "user", "content": "hi" }] });
    let got = post(&relay, "/openai/v1/chat/completions", &key, &body)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let opts = AnswerOpts {
        include_usage: true,
        ..AnswerOpts::default()
    };
    assert_eq!(
        got,
        openai::expected_chat_stream_bytes(model, cached_usage(), &opts)
    );

    // JSON.
    let body = json!({ "model": model, "messages": [{ "role": "user", "content": "hi" }] });
    let got = post(&relay, "/v1/chat/completions", &key, &body)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(
        got,
        openai::expected_chat_json_bytes(model, cached_usage(), &AnswerOpts::default())
    );
    relay.app.stats.flush().await;
    let u = relay.usage("").await;
    assert_eq!(u["requests"], 3);
    assert_eq!(u["input_tokens"], 300);
    assert_eq!(u["cache_read_input_tokens"], 90);
}

/// An OpenAI stream that never reports its usage is billed an estimate, not nothing: the prompt
/// by its size (`limits.bytes_per_token`, 3 by default), a token per chunk of the answer. Both
/// a client that hangs up before the usage chunk and an upstream that never sends one (Azure
/// before `stream_options`) are covered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_streams_that_never_report_usage_are_billed_an_estimate() {
    use futures_util::StreamExt;

    let body = json!({ "model": "gpt-4o", "stream": true, "messages": [{ "role": "user", "content": "hi" }] });
    let raw = serde_json::to_vec(&body).unwrap();
    let input = (raw.len() as u64).div_ceil(3);
    let send = |relay: &Relay, key: &str| {
        http_client()
            .post(relay.url("/v1/chat/completions"))
            .bearer_auth(key)
            .header("content-type", "application/json")
            .body(raw.clone())
            .send()
    };
    let chunks = |bytes: &[u8]| {
        let text = std::str::from_utf8(bytes).unwrap();
        text.matches("data: ").count() - text.matches("data: [DONE]").count()
    };

    // The client hangs up after the first chunks, before the usage chunk.
    let mock = MockUpstream::start().await;
    mock.set_default(Behavior::StallAfterStart(cached_usage()));
    let (relay, key) = relay_with(&mock, "openai", json!({})).await;
    let resp = send(&relay, &key).await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut stream = resp.bytes_stream();
    let mut got = Vec::new();
    while chunks(&got) < openai::CHAT_EVENTS_BEFORE_STALL {
        got.extend_from_slice(&stream.next().await.unwrap().unwrap());
    }
    drop(stream);
    let e = logged(&relay).await;
    assert_eq!(e["estimated"], true, "{e}");
    assert_eq!(e["input_tokens"], input);
    assert_eq!(e["output_tokens"], openai::CHAT_EVENTS_BEFORE_STALL);
    assert!(e["cost_nanousd"].as_u64().unwrap() > 0);
    assert_eq!(
        relay.usage("").await["output_tokens"],
        openai::CHAT_EVENTS_BEFORE_STALL
    );

    // An upstream that streams a whole answer without usage.
    let old = MockUpstream::start().await;
    old.set_default(Behavior::Ok(cached_usage()));
    let (relay, key) =
        relay_with(&old, "azure-openai", json!({ "api_version": "2024-06-01" })).await;
    let got = send(&relay, &key).await.unwrap().bytes().await.unwrap();
    assert!(!String::from_utf8_lossy(&got).contains("\"usage\""));
    let e = logged(&relay).await;
    assert_eq!(e["estimated"], true, "{e}");
    assert_eq!(e["input_tokens"], input);
    assert_eq!(e["output_tokens"], chunks(&got));

    // With its usage chunk, a stream is billed exactly as reported.
    let fine = MockUpstream::start().await;
    fine.set_default(Behavior::Ok(cached_usage()));
    let (relay, key) = relay_with(&fine, "openai", json!({})).await;
    send(&relay, &key).await.unwrap().bytes().await.unwrap();
    let e = logged(&relay).await;
    assert_eq!(e["estimated"], false, "{e}");
    assert_eq!(
        (e["input_tokens"].as_u64(), e["output_tokens"].as_u64()),
        (Some(100), Some(20))
    );
}

/// The relay reads a stream's first frame before it hands on the head, so that both go out in
/// one write; an upstream that sends its head and then nothing for a while must not hold the
/// client's head back (only Anthropic streams wait for their first event: see
/// `an_anthropic_stream_s_head_waits_for_its_first_event`).
#[tokio::test]
async fn an_openai_stream_s_head_is_not_held_back_while_the_upstream_sends_no_event() {
    let mock = MockUpstream::start().await;
    let quiet = std::time::Duration::from_secs(3);
    mock.set_default(Behavior::QuietStart(quiet, cached_usage()));
    let (relay, key) = relay_with(&mock, "openai", json!({})).await;
    let model = "gpt-4o-mini";
    let body = json!({ "model": model, "stream": true, "messages": [{ "role": "user", "content": "hi" }] });
    let started = std::time::Instant::now();
    let resp = post(&relay, "/v1/chat/completions", &key, &body)
        .send()
        .await
        .unwrap();
    let head_after = started.elapsed();
    assert_eq!(resp.status(), 200);
    assert!(
        head_after < quiet / 2,
        "the head waited for the first event: {head_after:?}"
    );
    let got = resp.bytes().await.unwrap();
    assert!(started.elapsed() >= quiet);
    let want = openai::expected_chat_stream_bytes(model, cached_usage(), &AnswerOpts::default());
    assert_eq!(got, want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn codex_requests_pass_unchanged_to_the_responses_api() {
    let mock = MockUpstream::start().await;
    mock.set_default(Behavior::Ok(cached_usage()));
    mock.set_reasoning_tokens(8);
    let relay = Relay::start().await;
    add(&relay, &mock, "openai", json!({})).await;
    let (_, key) = relay.create_key("k").await;
    for c in captured("codex-cli.requests.jsonl")
        .into_iter()
        .filter(|c| c.path == "/v1/responses")
    {
        let body = c.body.clone().unwrap();
        let raw = serde_json::to_vec(&body).unwrap();
        let mut req = http_client()
            .post(relay.url("/v1/responses"))
            .bearer_auth(&key)
            .body(raw.clone());
        for (name, value) in &c.headers {
            let lower = name.to_ascii_lowercase();
            if ![
                "host",
                "authorization",
                "content-length",
                "connection",
                "accept-encoding",
            ]
            .contains(&lower.as_str())
            {
                req = req.header(name.as_str(), value.as_str());
            }
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 200);
        let got = resp.bytes().await.unwrap();
        // Byte for byte what the upstream sent (a function call, as Codex's request asks).
        assert_eq!(got, mock.responses().pop().unwrap());
        assert!(got.starts_with(b"event: response.created"));
        // The body went upstream byte for byte: developer role, store: false, namespace tools,
        // prompt_cache_key and all.
        let sent = mock.requests().pop().unwrap();
        assert_eq!(sent.body.as_ref(), raw.as_slice());
        assert_eq!(sent.header("originator"), Some("codex_exec"));
    }
    let e = logged(&relay).await;
    assert_eq!(
        (
            e["input_tokens"].as_u64(),
            e["cache_read_input_tokens"].as_u64()
        ),
        (Some(100), Some(30))
    );
    assert_eq!(e["output_tokens"], 20, "reasoning tokens are inside output");
}

/// A stored response lives on the account that made it: a follow-up turn the relay has no
/// binding for finds it by trying the accounts in turn, neither account marked for the miss, as
/// do the response's own paths (an unknown one tries every account). Bindings of the responses
/// a relay makes: tests/it/responses.rs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_responses_are_found_on_the_account_that_holds_them() {
    let a = MockUpstream::start().await;
    let b = MockUpstream::start().await;
    let relay = Relay::start().await;
    let a_id = add(&relay, &a, "openai", json!({ "priority": 1 })).await;
    add(&relay, &b, "openai", json!({ "priority": 2 })).await;
    let (_, key) = relay.create_key("k").await;

    // A follow-up turn: a does not hold the previous response, b does.
    a.push_behavior(Behavior::Error {
        status: 400,
        body: json!({ "error": { "message": "Previous response with id 'resp_b1' not found.", "type": "invalid_request_error", "param": "previous_response_id", "code": "previous_response_not_found" } }).to_string(),
        headers: Vec::new(),
    });
    b.push_behavior(Behavior::Ok(cached_usage()));
    let turn = json!({ "model": "gpt-5", "input": "and then?", "previous_response_id": "resp_b1" });
    let resp = post(&relay, "/v1/responses", &key, &turn)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    resp.bytes().await.unwrap();
    assert_eq!((a.requests().len(), b.requests().len()), (1, 1));

    // Its own paths: GET (a 404 on a, found on b), DELETE, cancel, input items. Finding it is
    // not remembered: naming ids leaves nothing behind (bindings are written for the responses
    // the relay sees made).
    for (method, path) in [
        (reqwest::Method::GET, "/v1/responses/resp_b1"),
        (reqwest::Method::DELETE, "/v1/responses/resp_b1"),
        (reqwest::Method::POST, "/v1/responses/resp_b1/cancel"),
        (reqwest::Method::GET, "/v1/responses/resp_b1/input_items"),
    ] {
        let (a_seen, b_seen) = (a.requests().len(), b.requests().len());
        b.push_behavior(Behavior::Error {
            status: 200,
            body: r#"{"id":"resp_b1","object":"response"}"#.to_owned(),
            headers: Vec::new(),
        });
        let resp = http_client()
            .request(method.clone(), relay.url(path))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{method} {path}");
        assert_eq!(resp.json::<Value>().await.unwrap()["id"], "resp_b1");
        let sent = b.requests().pop().unwrap();
        assert_eq!(
            (sent.method.as_str(), sent.path.as_str()),
            (method.as_str(), path)
        );
        assert_eq!(
            (a.requests().len(), b.requests().len()),
            (a_seen + 1, b_seen + 1)
        );
    }
    // Nowhere: the last 404, in OpenAI's shape. A method the path does not take: 405.
    let resp = http_client()
        .get(relay.url("/v1/responses/resp_none"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    assert!(resp.json::<Value>().await.unwrap()["error"]["message"].is_string());
    let resp = http_client()
        .put(relay.url("/v1/responses/resp_b1"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 405);
    let (status, v) = relay
        .admin(
            reqwest::Method::GET,
            &format!("/admin/accounts/{a_id}"),
            None,
        )
        .await;
    assert_eq!((status, &v["state"]["status"]), (200, &json!("ok")), "{v}");

    // Compaction is a Responses call, billed as one.
    let before = relay.usage("").await["requests"].as_u64().unwrap();
    let compact = json!({ "model": "gpt-5", "input": [{ "role": "user", "content": "hi" }] });
    let resp = post(&relay, "/v1/responses/compact", &key, &compact)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    resp.bytes().await.unwrap();
    assert_eq!(a.requests().pop().unwrap().path, "/v1/responses/compact");
    relay.app.stats.flush().await;
    assert_eq!(
        relay.usage("").await["requests"].as_u64().unwrap(),
        before + 1
    );

    // Background responses would run outside every limit: refused before any account.
    let served = a.requests().len() + b.requests().len();
    let resp = post(
        &relay,
        "/v1/responses",
        &key,
        &json!({ "model": "gpt-5", "input": "hi", "background": true }),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(resp.status(), 400);
    let v: Value = resp.json().await.unwrap();
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("background"),
        "{v}"
    );
    assert_eq!(a.requests().len() + b.requests().len(), served);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embeddings_and_models_on_the_openai_surface() {
    let mock = MockUpstream::start().await;
    mock.set_default(Behavior::Ok(MockUsage::new(9, 0)));
    let (relay, key) = relay_with(&mock, "openai", json!({})).await;
    let body = json!({ "model": "text-embedding-3-small", "input": ["a", "b"] });
    let resp = post(&relay, "/v1/embeddings", &key, &body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["data"].as_array().unwrap().len(), 2);
    let e = logged(&relay).await;
    assert_eq!(e["input_tokens"], 9);
    let models: Value = http_client()
        .get(relay.url("/v1/models"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(models["object"], "list");
    assert!(
        models["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["id"].as_str().unwrap().starts_with("gpt"))
    );
}

/// A batch of embeddings runs to tens of megabytes; its usage comes last. It is billed all the
/// same (a copy of the answer, capped at 16 MiB, was once kept to read it, and past the cap the
/// answer went unbilled).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_embeddings_answer_of_any_size_is_billed() {
    let mock = MockUpstream::start().await;
    let item = r#"{"object":"embedding","index":0,"embedding":"AACAPAAAAL0AAIA9AAAAvg=="}"#;
    let mut answer = String::from(r#"{"object":"list","data":["#);
    while answer.len() < 20 << 20 {
        answer.push_str(item);
        answer.push(',');
    }
    answer.push_str(item);
    answer.push_str(
        r#"],"model":"text-embedding-3-small","usage":{"prompt_tokens":4242,"total_tokens":4242}}"#,
    );
    mock.set_default(Behavior::Error {
        status: 200,
        body: answer.clone(),
        headers: Vec::new(),
    });
    let (relay, key) = relay_with(&mock, "openai", json!({})).await;
    let body = json!({ "model": "text-embedding-3-small", "input": ["a", "b"] });
    let resp = post(&relay, "/v1/embeddings", &key, &body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let got = resp.bytes().await.unwrap();
    assert!(got == answer.as_bytes(), "passed on unchanged");
    let e = logged(&relay).await;
    assert_eq!(
        (e["input_tokens"].as_u64(), e["status"].as_u64()),
        (Some(4242), Some(200))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn azure_uses_the_deployment_api_version_and_api_key() {
    let mock = MockUpstream::start().await;
    mock.set_default(Behavior::Ok(cached_usage()));
    let relay = Relay::start().await;
    add(
        &relay,
        &mock,
        "azure-openai",
        json!({ "api_version": "2024-10-21", "deployments": { "gpt-4o": "prod-4o" } }),
    )
    .await;
    let (_, key) = relay.create_key("k").await;
    let body = json!({ "model": "gpt-4o", "stream": true, "messages": [{ "role": "user", "content": "hi" }] });
    let resp = post(&relay, "/v1/chat/completions", &key, &body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let got = resp.bytes().await.unwrap();
    let opts = AnswerOpts {
        azure: true,
        ..AnswerOpts::default()
    };
    assert_eq!(
        got,
        openai::expected_chat_stream_bytes("gpt-4o", cached_usage(), &opts)
    );
    let sent = mock.requests().pop().unwrap();
    assert_eq!(sent.azure_deployment(), Some("prod-4o"));
    assert_eq!(
        sent.query_param("api-version").as_deref(),
        Some("2024-10-21")
    );
    assert_eq!(sent.header("api-key"), Some("sk-upstream"));
    assert_eq!(sent.header("authorization"), None);
    let e = logged(&relay).await;
    assert_eq!(
        (
            e["input_tokens"].as_u64(),
            e["cache_read_input_tokens"].as_u64()
        ),
        (Some(100), Some(30))
    );

    // The Responses API is on Azure's v1 API: not per deployment, no api-version, the
    // deployment as the body's model.
    let responses = json!({ "model": "gpt-4o", "input": "hi", "stream": true });
    let resp = post(&relay, "/v1/responses", &key, &responses)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.bytes().await.unwrap(), mock.responses().pop().unwrap());
    let sent = mock.requests().pop().unwrap();
    assert_eq!(sent.path, "/openai/v1/responses");
    assert_eq!(sent.query_param("api-version"), None);
    assert_eq!(sent.header("api-key"), Some("sk-upstream"));
    let body: Value = serde_json::from_slice(&sent.body).unwrap();
    assert_eq!(
        body,
        json!({ "model": "prod-4o", "input": "hi", "stream": true })
    );

    // An api-version from before `stream_options` gets the client's body as it was.
    let old = MockUpstream::start().await;
    let (relay, key) =
        relay_with(&old, "azure-openai", json!({ "api_version": "2024-06-01" })).await;
    let raw = serde_json::to_vec(&body).unwrap();
    let resp = http_client()
        .post(relay.url("/v1/chat/completions"))
        .bearer_auth(&key)
        .header("content-type", "application/json")
        .body(raw.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.bytes().await.unwrap(), old.responses().pop().unwrap());
    assert_eq!(old.requests().pop().unwrap().body.as_ref(), raw.as_slice());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gemini_cli_requests_pass_unchanged_with_the_key_in_any_place() {
    let mock = MockUpstream::start().await;
    let usage = MockUsage {
        input: 50,
        output: 12,
        cache_read: 10,
        ..MockUsage::default()
    };
    mock.set_default(Behavior::Ok(usage));
    mock.set_reasoning_tokens(5);
    let relay = Relay::start().await;
    add(&relay, &mock, "gemini", json!({})).await;
    let (_, key) = relay.create_key("k").await;
    let opts = AnswerOpts {
        reasoning: 5,
        ..AnswerOpts::default()
    };
    for (req, raw) in relay.gemini_cli_requests(&key) {
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 200);
        let got = resp.bytes().await.unwrap();
        assert_eq!(got, mock.responses().pop().unwrap());
        assert!(got.starts_with(b"data: {"));
        let sent = mock.requests().pop().unwrap();
        assert_eq!(sent.body.as_ref(), raw.as_slice());
        assert_eq!(sent.query_param("alt").as_deref(), Some("sse"));
        assert_eq!(sent.header("x-goog-api-key"), Some("sk-upstream"));
    }
    let e = logged(&relay).await;
    // promptTokenCount includes the cached tokens; thoughts are output.
    assert_eq!(
        (
            e["input_tokens"].as_u64(),
            e["cache_read_input_tokens"].as_u64()
        ),
        (Some(50), Some(10))
    );
    assert_eq!(e["output_tokens"], 12);
    assert_eq!(e["surface"], "gemini");

    // The key as ?key= (never forwarded) and as Bearer, under /v1 and /gemini; JSON answers.
    let body = json!({ "contents": [{ "role": "user", "parts": [{ "text": "hi" }] }] });
    for (path, bearer) in [
        (
            format!("/v1beta/models/gemini-2.5-flash:generateContent?key={key}"),
            false,
        ),
        (
            "/v1/models/gemini-2.5-flash:generateContent".to_owned(),
            true,
        ),
        (
            "/gemini/v1beta/models/gemini-2.5-flash:generateContent".to_owned(),
            true,
        ),
    ] {
        let mut req = http_client().post(relay.url(&path)).json(&body);
        if bearer {
            req = req.bearer_auth(&key);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        assert_eq!(
            resp.bytes().await.unwrap(),
            gemini::expected_json_bytes("gemini-2.5-flash", usage, &opts)
        );
        let sent = mock.requests().pop().unwrap();
        assert_eq!(
            sent.query_param("key"),
            None,
            "{path}: the client's key went upstream"
        );
    }
    // A stream without alt=sse is a JSON array: relayed as it comes, billed from its chunks.
    relay.app.stats.flush().await;
    let before = relay.usage("").await["input_tokens"].as_u64().unwrap();
    let resp = http_client()
        .post(relay.url("/v1beta/models/gemini-2.5-flash:streamGenerateContent"))
        .header("x-goog-api-key", &key)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let got = resp.bytes().await.unwrap();
    assert!(got.starts_with(b"["));
    assert_eq!(got, mock.responses().pop().unwrap());
    relay.app.stats.flush().await;
    assert_eq!(
        relay.usage("").await["input_tokens"].as_u64().unwrap(),
        before + 50
    );
    // Model lists: Gemini's, by path or by the Google credential on /v1/models.
    for (path, header) in [
        ("/v1beta/models", "x-goog-api-key"),
        ("/v1/models", "x-goog-api-key"),
    ] {
        let resp = http_client()
            .get(relay.url(path))
            .header(header, &key)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        let v: Value = resp.json().await.unwrap();
        assert!(
            v["models"].as_array().is_some_and(|m| !m.is_empty()),
            "{path}: {v}"
        );
        assert_eq!(mock.requests().pop().unwrap().path, path);
    }
    // countTokens is relayed and not billed.
    relay.app.stats.flush().await;
    let before = relay.usage("").await["requests"].as_u64().unwrap();
    let resp = http_client()
        .post(relay.url("/v1beta/models/gemini-2.5-flash:countTokens"))
        .header("x-goog-api-key", &key)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    relay.app.stats.flush().await;
    assert_eq!(relay.usage("").await["requests"].as_u64().unwrap(), before);
}

/// Google reads "system parameters" from any request's query and headers; from a client they
/// would act on the account's behalf: `fields` or `X-Goog-FieldMask` can leave the usage out of
/// the answer (billed nothing), `access_token` or `$key` beside the account's key make a 401
/// that takes the account out of rotation. Only `alt` and a listing's paging go, and of the
/// `x-goog-*` headers only the SDK's `x-goog-api-client`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn google_system_parameters_from_the_client_do_not_reach_the_account() {
    let mock = MockUpstream::start().await;
    mock.set_default(Behavior::Ok(MockUsage::new(20, 7)));
    let (relay, key) = relay_with(&mock, "gemini", json!({})).await;
    let body = json!({ "contents": [{ "role": "user", "parts": [{ "text": "hi" }] }] });
    let resp = http_client()
        .post(relay.url(
            "/v1beta/models/gemini-2.5-flash:streamGenerateContent\
             ?alt=sse&fields=candidates&%24key=AIzaBogus&access_token=x&alt=proto&quotaUser=u",
        ))
        .header("x-goog-api-key", &key)
        .header("x-goog-fieldmask", "candidates")
        .header("x-goog-user-project", "other-project")
        .header("x-http-method-override", "GET")
        .header("x-goog-api-client", "gl-node/22 gemini-cli")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    resp.bytes().await.unwrap();
    let sent = mock.requests().pop().unwrap();
    assert_eq!(sent.query.as_deref(), Some("alt=sse"));
    for dropped in [
        "x-goog-fieldmask",
        "x-goog-user-project",
        "x-http-method-override",
    ] {
        assert_eq!(sent.header(dropped), None, "{dropped}");
    }
    assert_eq!(
        sent.header("x-goog-api-client"),
        Some("gl-node/22 gemini-cli")
    );
    assert_eq!(sent.header("x-goog-api-key"), Some("sk-upstream"));
    assert_eq!(logged(&relay).await["output_tokens"], 7);
    // A listing keeps its paging.
    let resp = http_client()
        .get(relay.url("/v1beta/models?pageSize=5&pageToken=abc&access_token=x"))
        .header("x-goog-api-key", &key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let sent = mock.requests().pop().unwrap();
    assert_eq!(sent.query.as_deref(), Some("pageSize=5&pageToken=abc"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_failover_and_limits_on_the_other_surfaces() {
    let a = MockUpstream::start().await;
    let b = MockUpstream::start().await;
    let relay = Relay::start_configured(|c| c.scheduler.rate_limit_cooldown_secs = 1).await;
    add(&relay, &a, "openai", json!({ "priority": 1 })).await;
    add(&relay, &b, "openai", json!({ "priority": 2 })).await;
    let (key_id, key) = relay.create_key("k").await;
    let model = "gpt-4o";
    let body = json!({ "model": model, "stream": true, "stream_options": { "include_usage": true }, "messages": [{ "role": "user", "content": "hi" }] });

    // A rate-limited account before the first byte: the other one serves, byte for byte.
    a.push_behavior(Behavior::rate_limited(30));
    let got = post(&relay, "/v1/chat/completions", &key, &body)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let opts = AnswerOpts {
        include_usage: true,
        ..AnswerOpts::default()
    };
    assert_eq!(
        got,
        openai::expected_chat_stream_bytes(model, MockUsage::new(10, 7), &opts)
    );
    assert_eq!((a.requests().len(), b.served()), (1, 1));

    // Both fail: the last upstream error, in OpenAI's shape, as it was.
    a.push_behavior(Behavior::error(500, "server_error", "boom a"));
    b.push_behavior(Behavior::error(500, "server_error", "boom b"));
    let resp = post(&relay, "/v1/chat/completions", &key, &body)
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_server_error());
    let v: Value = resp.json().await.unwrap();
    assert!(v["error"]["message"].is_string(), "{v}");

    // Switchyard's own errors, in each surface's shape.
    let resp = http_client()
        .post(relay.url("/v1/chat/completions"))
        .bearer_auth(&key)
        .body("{")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["type"], "invalid_request_error");
    let resp = http_client()
        .post(relay.url("/v1beta/models/gemini-2.5-flash:generateContent"))
        .header("x-goog-api-key", "sy-wrong")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["status"], "UNAUTHENTICATED");
    // No Gemini account: 404 in Gemini's shape (a model nobody serves).
    let resp = http_client()
        .post(relay.url("/v1beta/models/gemini-2.5-flash:generateContent"))
        .header("x-goog-api-key", &key)
        .json(&json!({ "contents": [] }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["status"], "NOT_FOUND");

    // Limits apply unchanged: a key kept to the Anthropic surface is refused here.
    relay
        .admin(
            Method::PATCH,
            &format!("/admin/keys/{key_id}"),
            Some(json!({ "limits": { "allowed_surfaces": ["anthropic"] } })),
        )
        .await;
    let resp = post(&relay, "/v1/chat/completions", &key, &body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["code"], "surface_not_allowed");
    let info: Value = http_client()
        .get(relay.url("/openai/v1/key-info"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(info["limits"]["allowed_surfaces"], json!(["anthropic"]));
}

/// Sends `head` (request line and headers, `connection: close`) as written, with no client
/// between to resolve its path; returns the status and the body.
async fn raw_get(relay: &Relay, target: &str, header: &str) -> (u16, Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut conn = tokio::net::TcpStream::connect(relay.addr).await.unwrap();
    let head =
        format!("GET {target} HTTP/1.1\r\nhost: relay\r\n{header}\r\nconnection: close\r\n\r\n");
    conn.write_all(head.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(15),
        conn.read_to_end(&mut got),
    )
    .await
    .unwrap()
    .unwrap();
    let text = String::from_utf8(got).unwrap();
    let status = text[9..12].parse().unwrap();
    let body = text.split_once("\r\n\r\n").unwrap().1;
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paths_that_resolve_elsewhere_and_disguised_model_names_are_refused() {
    let mock = MockUpstream::start().await;
    let relay = Relay::start().await;
    add(&relay, &mock, "openai", json!({})).await;
    add(&relay, &mock, "anthropic", json!({})).await;
    add(&relay, &mock, "gemini", json!({})).await;
    let (key_id, key) = relay.create_key("k").await;
    let bearer = format!("authorization: Bearer {key}");
    let x_api_key = format!("x-api-key: {key}");
    // A model lookup that would list the account's files where the vendor resolves dot segments.
    for (target, header, shape) in [
        ("/v1/models/../files", &bearer, "openai"),
        ("/v1/models/%2e%2e/files", &bearer, "openai"),
        ("/v1/models/%2E./files", &bearer, "openai"),
        ("/v1/models/x%2F..%2Ffiles", &bearer, "openai"),
        ("/v1/models/./x", &x_api_key, "anthropic"),
        ("/v1beta/models/../files", &bearer, "gemini"),
    ] {
        let (status, v) = raw_get(&relay, target, header).await;
        assert_eq!(status, 400, "{target}: {v}");
        match shape {
            "gemini" => assert_eq!(v["error"]["status"], "INVALID_ARGUMENT", "{target}: {v}"),
            "anthropic" => assert_eq!(v["type"], "error", "{target}: {v}"),
            _ => assert_eq!(v["error"]["type"], "invalid_request_error", "{target}: {v}"),
        }
    }
    assert!(mock.requests().is_empty(), "{:?}", mock.requests());
    // An ordinary model lookup still goes through, a model id with an escaped slash too.
    raw_get(&relay, "/v1/models/gpt-4o", &bearer).await;
    assert_eq!(mock.requests().pop().unwrap().path, "/v1/models/gpt-4o");
    raw_get(&relay, "/v1/models/Qwen%2FQwen2.5-7B", &bearer).await;
    assert_eq!(
        mock.requests().pop().unwrap().path,
        "/v1/models/Qwen%2FQwen2.5-7B"
    );

    // A blocked model stays blocked however it is spelt.
    relay
        .admin(
            Method::PATCH,
            &format!("/admin/keys/{key_id}"),
            Some(json!({ "limits": { "blocked_models": ["gemini-2.5-pro*"] } })),
        )
        .await;
    let chat = json!({ "model": "models/gemini-2.5-pro", "messages": [{ "role": "user", "content": "hi" }] });
    let resp = post(&relay, "/v1/chat/completions", &key, &chat)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    let escaped = json!({ "contents": [{ "role": "user", "parts": [{ "text": "hi" }] }] });
    let resp = post(
        &relay,
        "/v1beta/models/gemini-2.5-pr%6F:generateContent",
        &key,
        &escaped,
    )
    .send()
    .await
    .unwrap();
    assert_eq!(resp.status(), 400);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["status"], "INVALID_ARGUMENT", "{v}");
    let served = mock.requests().len();
    assert_eq!(served, 2, "only the ordinary lookups went upstream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_escaped_prompt_cache_key_is_read_as_any_other() {
    let mock = MockUpstream::start().await;
    let (relay, key) = relay_with(&mock, "openai", json!({})).await;
    // Python's json.dumps escapes every non-ASCII character; a string with an escape cannot be
    // borrowed from the body, and once made the whole request a 400.
    let body = br#"{"model":"gpt-4o","prompt_cache_key":"caf\u00e9 \/ 1","messages":[{"role":"user","content":"hi"}]}"#;
    for _ in 0..2 {
        let resp = http_client()
            .post(relay.url("/v1/chat/completions"))
            .bearer_auth(&key)
            .header("content-type", "application/json")
            .body(&body[..])
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
    }
    assert_eq!(mock.requests().pop().unwrap().body, &body[..]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gemini_embeddings_are_billed_and_unknown_methods_refused() {
    let mock = MockUpstream::start().await;
    let (relay, key) = relay_with(&mock, "gemini", json!({})).await;
    let body = json!({ "content": { "parts": [{ "text": "a sentence to embed" }] } });
    let resp = post(
        &relay,
        "/v1beta/models/gemini-embedding-001:embedContent",
        &key,
        &body,
    )
    .send()
    .await
    .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.bytes().await.unwrap(), mock.responses().pop().unwrap());
    // Google reports no usage for embeddings: the input is billed as admission estimated it.
    let e = logged(&relay).await;
    assert_eq!(e["model"], "gemini-embedding-001");
    assert_eq!(e["estimated"], true, "{e}");
    let estimate = switchyard::limits::input_estimate(&relay.app, body.to_string().len());
    assert_eq!(e["input_tokens"].as_u64(), Some(estimate), "{e}");

    // A method outside the relayed ones spends the account's money outside every limit: refused.
    for method in ["predictLongRunning", "batchGenerateContent"] {
        let resp = post(
            &relay,
            &format!("/v1beta/models/gemini-2.5-flash:{method}"),
            &key,
            &body,
        )
        .send()
        .await
        .unwrap();
        assert_eq!(resp.status(), 404, "{method}");
        let v: Value = resp.json().await.unwrap();
        assert_eq!(v["error"]["status"], "NOT_FOUND", "{method}: {v}");
    }
    assert_eq!(mock.requests().len(), 1);
}

/// OpenAI's and Google's rate limits are each model's own: a 429 that names the model's limit
/// leaves the account serving the others (Gemini CLI falls back from Pro to Flash on a 429),
/// while the limited model waits for its reset.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_on_one_model_leaves_the_account_serving_the_others() {
    for provider in ["openai", "gemini"] {
        let mock = MockUpstream::start().await;
        mock.set_default(Behavior::Ok(cached_usage()));
        let relay = Relay::start().await;
        let account = add(&relay, &mock, provider, json!({})).await;
        let (_, key) = relay.create_key("k").await;
        let (limited, other) = match provider {
            "openai" => ("gpt-4o", "gpt-4o-mini"),
            _ => ("gemini-2.5-pro", "gemini-2.5-flash"),
        };
        let ask = |model: &str| match provider {
            "openai" => post(
                &relay,
                "/v1/chat/completions",
                &key,
                &json!({ "model": model, "messages": [{ "role": "user", "content": "hi" }] }),
            ),
            _ => http_client()
                .post(relay.url(&format!("/v1beta/models/{model}:generateContent")))
                .header("x-goog-api-key", &key)
                .json(&json!({ "contents": [{ "role": "user", "parts": [{ "text": "hi" }] }] })),
        };

        mock.push_behavior(Behavior::rate_limited(60));
        let resp = ask(limited).send().await.unwrap();
        assert_eq!(
            resp.status(),
            429,
            "{provider}: the vendor's 429, passed on"
        );
        let resp = ask(other).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{provider}: another model is served");
        assert_eq!(mock.requests().len(), 2);
        // The limited model is not sent until its reset.
        let resp = ask(limited).send().await.unwrap();
        assert_eq!(resp.status(), 503, "{provider}");
        let wait: u64 = resp.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((50..=60).contains(&wait), "{provider}: retry after {wait}");
        assert_eq!(mock.requests().len(), 2, "{provider}");

        let (status, v) = relay
            .admin(Method::GET, &format!("/admin/accounts/{account}"), None)
            .await;
        assert_eq!(status, 200);
        assert_eq!(v["state"]["status"], "ok", "{provider}: {v}");
        assert!(
            v["state"]["rate_limited_families"][limited].is_string(),
            "{provider}: {v}"
        );
    }
}

/// An OpenAI-compatible vendor's 429 that names no model's limit holds for the whole account
/// (some limit the account, not each model).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_naming_no_model_s_limit_holds_for_the_whole_account() {
    let mock = MockUpstream::start().await;
    mock.set_default(Behavior::Ok(cached_usage()));
    let (relay, key) = relay_with(&mock, "openai", json!({})).await;
    let ask = |model: &str| {
        post(
            &relay,
            "/v1/chat/completions",
            &key,
            &json!({ "model": model, "messages": [{ "role": "user", "content": "hi" }] }),
        )
    };
    mock.push_behavior(Behavior::Error {
        status: 429,
        body: json!({ "error": { "message": "Requests rate limit exceeded", "type": "rate_limit_error" } })
            .to_string(),
        headers: vec![("retry-after".into(), "60".into())],
    });
    assert_eq!(ask("gpt-4o").send().await.unwrap().status(), 429);
    let resp = ask("gpt-4o-mini").send().await.unwrap();
    assert_eq!(resp.status(), 503, "the account is out for every model");
    assert_eq!(mock.requests().len(), 1);
}
