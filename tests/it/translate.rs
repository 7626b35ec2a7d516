//! OpenAI chat completions for Claude and Gemini models, end to end: the upstream gets its own
//! wire format, the client exactly OpenAI's, usage is what the upstream reported, errors come
//! back in OpenAI's shape, and failover and limits work as for native requests.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::support::mock::{self, Behavior, MockUpstream, MockUsage, TOOL_TRIGGER, http_client};
use crate::support::relay::Relay;

fn chat(model: &str, stream: bool, include_usage: bool) -> Value {
    let mut body = json!({
        "model": model,
        "stream": stream,
        "max_tokens": 50,
        "messages": [
            { "role": "system", "content": "be brief" },
            { "role": "user", "content": [
                { "type": "text", "text": "what is in this image?" },
                { "type": "image_url", "image_url": { "url": "data:image/png;base64,iVBORw0KGgo=" } }
            ] }
        ],
    });
    if include_usage {
        body["stream_options"] = json!({ "include_usage": true });
    }
    body
}

/// Each request a session of its own: the same body every time would be one session, bound to
/// the account that first served it.
async fn send(relay: &Relay, key: &str, body: &Value) -> (u16, String, String) {
    static SESSIONS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let session = SESSIONS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let resp = http_client()
        .post(relay.url("/v1/chat/completions"))
        .bearer_auth(key)
        .header("x-session-id", format!("one-off-{session}"))
        .json(body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let content_type = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (status, content_type, resp.text().await.unwrap())
}

/// The chunks of an OpenAI SSE answer, and whether it ended with `[DONE]`.
fn chunks(sse: &str) -> (Vec<Value>, bool) {
    let payloads: Vec<&str> = sse
        .split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .collect();
    let done = payloads.last() == Some(&"[DONE]");
    let chunks = payloads
        .iter()
        .filter(|p| **p != "[DONE]")
        .map(|p| serde_json::from_str(p).unwrap())
        .collect();
    (chunks, done)
}

fn text_of(chunks: &[Value]) -> String {
    chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect()
}

async fn logged(relay: &Relay, n: usize) -> Vec<Value> {
    for _ in 0..200 {
        relay.app.stats.flush().await;
        let rows = relay.requests("limit=50").await;
        if rows.len() >= n {
            return rows;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("fewer than {n} requests logged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_completions_on_claude_models_speak_messages_upstream_and_openai_back() {
    let mock = MockUpstream::start().await;
    let usage = MockUsage {
        input: 40,
        output: 9,
        cache_read: 100,
        ..MockUsage::default()
    };
    mock.set_default(Behavior::Ok(usage));
    let relay = Relay::start().await;
    relay.add_account(&mock, "sk-ant", json!({})).await;
    let (_, key) = relay.create_key("k").await;
    let model = "claude-sonnet-4-5";

    let (status, content_type, body) = send(&relay, &key, &chat(model, true, true)).await;
    assert_eq!(status, 200, "{body}");
    assert!(content_type.starts_with("text/event-stream"));
    let (chunks, done) = chunks(&body);
    assert!(done, "{body}");
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    assert!(!text_of(&chunks).is_empty());
    assert!(
        chunks
            .iter()
            .all(|c| c["model"] == model && c["object"] == "chat.completion.chunk")
    );
    let usage_chunk = chunks.last().unwrap();
    assert_eq!(usage_chunk["choices"], json!([]));
    // OpenAI counts cached tokens inside the prompt.
    assert_eq!(usage_chunk["usage"]["prompt_tokens"], 140);
    assert_eq!(
        usage_chunk["usage"]["prompt_tokens_details"]["cached_tokens"],
        100
    );
    assert_eq!(usage_chunk["usage"]["completion_tokens"], 9);

    // What went upstream is a Messages request.
    let sent = mock.requests().pop().unwrap();
    assert_eq!(sent.path, "/v1/messages");
    assert_eq!(sent.header("x-api-key"), Some("sk-ant"));
    let messages = sent.json();
    assert_eq!(messages["system"][0]["text"], "be brief");
    assert_eq!(messages["max_tokens"], 50);
    assert_eq!(messages["stream"], true);
    assert_eq!(messages["messages"][0]["content"][1]["type"], "image");

    // JSON.
    let (status, content_type, body) = send(&relay, &key, &chat(model, false, false)).await;
    assert_eq!(status, 200);
    assert!(content_type.starts_with("application/json"));
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["choices"][0]["message"]["role"], "assistant");
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert_eq!(v["usage"]["prompt_tokens"], 140);

    // Usage as Anthropic reported it, priced at the Claude model.
    let rows = logged(&relay, 2).await;
    for row in &rows {
        assert_eq!(row["surface"], "openai");
        assert_eq!(row["model"], model);
        assert_eq!(
            (
                row["input_tokens"].as_u64(),
                row["cache_read_input_tokens"].as_u64()
            ),
            (Some(40), Some(100))
        );
        // $3 in, $15 out, $0.30 cache read per MTok.
        assert_eq!(row["cost_nanousd"], 40 * 3_000 + 9 * 15_000 + 100 * 300);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_completions_on_gemini_models_with_tools() {
    let mock = MockUpstream::start().await;
    let usage = MockUsage {
        input: 30,
        output: 6,
        cache_read: 10,
        ..MockUsage::default()
    };
    mock.set_default(Behavior::Ok(usage));
    let relay = Relay::start().await;
    relay
        .add_account(
            &mock,
            "gem-key",
            json!({ "provider": "gemini", "base_url": mock.base_url() }),
        )
        .await;
    let (_, key) = relay.create_key("k").await;
    let model = "gemini-2.5-flash";

    let (status, _, body) = send(&relay, &key, &chat(model, true, true)).await;
    assert_eq!(status, 200, "{body}");
    let (chunks, done) = chunks(&body);
    assert!(done);
    assert!(!text_of(&chunks).is_empty());
    assert_eq!(chunks.last().unwrap()["usage"]["prompt_tokens"], 40);
    let sent = mock.requests().pop().unwrap();
    assert_eq!(
        sent.path,
        "/v1beta/models/gemini-2.5-flash:streamGenerateContent"
    );
    assert_eq!(sent.query_param("alt").as_deref(), Some("sse"));
    assert_eq!(sent.header("x-goog-api-key"), Some("gem-key"));
    assert_eq!(
        sent.json()["systemInstruction"]["parts"][0]["text"],
        "be brief"
    );

    // A tool call comes back as OpenAI tool_calls.
    let body = json!({
        "model": model,
        "messages": [{ "role": "user", "content": format!("run it {TOOL_TRIGGER}") }],
        "tools": [{ "type": "function", "function": { "name": "run", "parameters": { "type": "object", "properties": { "command": { "type": "string" } } } } }],
    });
    let (status, _, answer) = send(&relay, &key, &body).await;
    assert_eq!(status, 200, "{answer}");
    let v: Value = serde_json::from_str(&answer).unwrap();
    let call = &v["choices"][0]["message"]["tool_calls"][0];
    assert_eq!(call["function"]["name"], "run");
    let args: Value =
        serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
    assert!(args.is_object());
    assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");

    let rows = logged(&relay, 2).await;
    assert!(
        rows.iter()
            .all(|r| r["input_tokens"] == 30 && r["cache_read_input_tokens"] == 10)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn translated_errors_failover_limits_and_cuts() {
    let a = MockUpstream::start().await;
    let b = MockUpstream::start().await;
    let relay = Relay::start_configured(|c| {
        c.upstream.idle_timeout_secs = 1;
        c.scheduler.overload_cooldown_secs = 1;
        c.scheduler.failure_cooldown_secs = 1;
    })
    .await;
    relay
        .add_account(&a, "sk-a", json!({ "priority": 1 }))
        .await;
    relay
        .add_account(&b, "sk-b", json!({ "priority": 2 }))
        .await;
    let (key_id, key) = relay.create_key("k").await;
    let model = "claude-sonnet-4-5";

    // Overloaded before the first byte: the other account answers, translated.
    a.push_behavior(Behavior::overloaded());
    let (status, _, body) = send(&relay, &key, &chat(model, true, false)).await;
    assert_eq!(status, 200, "{body}");
    assert!(chunks(&body).1);
    assert_eq!(b.served(), 1);

    // An upstream 400 comes back with its status, in OpenAI's shape (once `a` is back).
    tokio::time::sleep(Duration::from_millis(1100)).await;
    a.push_behavior(Behavior::error(
        400,
        "invalid_request_error",
        "max_tokens too big",
    ));
    let (status, content_type, body) = send(&relay, &key, &chat(model, true, false)).await;
    assert_eq!(status, 400);
    assert!(content_type.starts_with("application/json"));
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["error"]["type"], "invalid_request_error");
    assert_eq!(v["error"]["message"], "max_tokens too big");

    // A 200 whose body cannot be translated reaches the client as a 502, not a 200 with an
    // error inside (which the SDKs would take for a completion).
    a.push_behavior(Behavior::Error {
        status: 200,
        body: "not json at all".to_owned(),
        headers: Vec::new(),
    });
    let (status, content_type, body) = send(&relay, &key, &chat(model, false, false)).await;
    assert_eq!(status, 502, "{body}");
    assert!(content_type.starts_with("application/json"));
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["error"]["type"], "server_error", "{v}");
    // The request log and the metrics say what the client got, not the upstream's 200.
    relay.app.stats.flush().await;
    let newest = relay.requests("limit=1").await;
    assert_eq!(newest[0]["status"], 502, "{newest:?}");

    // Every account failing: the last failure, translated.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    a.push_behavior(Behavior::error(500, "api_error", "a down"));
    b.push_behavior(Behavior::error(500, "api_error", "b down"));
    let (status, _, body) = send(&relay, &key, &chat(model, false, false)).await;
    assert_eq!(status, 500, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["error"]["type"], "server_error");

    // A stream that stalls after it started ends with an OpenAI error chunk, not [DONE].
    tokio::time::sleep(Duration::from_millis(1100)).await;
    a.push_behavior(Behavior::StallAfterStart(MockUsage::new(5, 5)));
    let (status, _, body) = send(&relay, &key, &chat(model, true, false)).await;
    assert_eq!(status, 200);
    let (chunks, done) = chunks(&body);
    assert!(!done, "{body}");
    assert!(
        chunks.last().unwrap()["error"]["message"].is_string(),
        "{body}"
    );
    // So does one cut inside an event: the half event is dropped, the error still comes.
    a.push_behavior(Behavior::ResetMidEvent(MockUsage::new(5, 5)));
    let (status, _, body) = send(&relay, &key, &chat(model, true, false)).await;
    assert_eq!(status, 200);
    let (cut, done) = self::chunks(&body);
    assert!(!done, "{body}");
    assert!(
        cut.last().unwrap()["error"]["message"].is_string(),
        "{body}"
    );

    // Limits apply to translated requests as to any other.
    relay
        .admin(
            Method::PATCH,
            &format!("/admin/keys/{key_id}"),
            Some(json!({ "limits": { "blocked_models": ["claude-*"] } })),
        )
        .await;
    let (status, _, body) = send(&relay, &key, &chat(model, false, false)).await;
    assert_eq!(status, 403);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["error"]["code"], "model_not_allowed");
}

/// A client of the legacy API declares `functions` and reads `function_call`: a Claude tool call
/// goes back in that shape, in JSON and in a stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_functions_get_function_call_back_from_claude() {
    let mock = MockUpstream::start().await;
    let relay = Relay::start().await;
    relay.add_account(&mock, "sk-ant", json!({})).await;
    let (_, key) = relay.create_key("k").await;
    let body = |stream: bool| {
        json!({
            "model": "claude-sonnet-4-5",
            "stream": stream,
            "messages": [{ "role": "user", "content": "run it" }],
            "functions": [{ "name": "run", "parameters": { "type": "object", "properties": { "command": { "type": "string" } } } }],
        })
    };
    // Claude's answers, as Anthropic sends them: a tool call.
    let answer = json!({
        "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
        "content": [
            { "type": "tool_use", "id": "toolu_1", "name": "run", "input": { "command": "ls" } },
        ],
        "stop_reason": "tool_use",
        "usage": { "input_tokens": 10, "output_tokens": 5 },
    });
    mock.push_behavior(Behavior::Error {
        status: 200,
        body: answer.to_string(),
        headers: Vec::new(),
    });
    let (status, _, answer) = send(&relay, &key, &body(false)).await;
    assert_eq!(status, 200, "{answer}");
    assert!(mock.requests().pop().unwrap().json()["tools"].is_array());
    let v: Value = serde_json::from_str(&answer).unwrap();
    let message = &v["choices"][0]["message"];
    assert_eq!(message["function_call"]["name"], "run", "{v}");
    assert_eq!(message["function_call"]["arguments"], r#"{"command":"ls"}"#);
    assert!(message.get("tool_calls").is_none(), "{v}");
    assert_eq!(v["choices"][0]["finish_reason"], "function_call");

    let events = [
        json!({ "type": "message_start", "message": { "id": "msg_2", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5", "content": [], "usage": { "input_tokens": 10, "output_tokens": 1 } } }),
        json!({ "type": "content_block_start", "index": 0, "content_block": { "type": "tool_use", "id": "toolu_2", "name": "run", "input": {} } }),
        json!({ "type": "content_block_delta", "index": 0, "delta": { "type": "input_json_delta", "partial_json": "{\"command\":" } }),
        json!({ "type": "content_block_delta", "index": 0, "delta": { "type": "input_json_delta", "partial_json": "\"ls\"}" } }),
        json!({ "type": "content_block_stop", "index": 0 }),
        json!({ "type": "content_block_start", "index": 1, "content_block": { "type": "tool_use", "id": "toolu_3", "name": "other", "input": {} } }),
        json!({ "type": "content_block_stop", "index": 1 }),
        json!({ "type": "message_delta", "delta": { "stop_reason": "tool_use" }, "usage": { "output_tokens": 5 } }),
        json!({ "type": "message_stop" }),
    ];
    let sse: String = events
        .iter()
        .map(|e| format!("event: {}\ndata: {e}\n\n", e["type"].as_str().unwrap()))
        .collect();
    mock.push_behavior(Behavior::Error {
        status: 200,
        body: sse,
        headers: vec![("content-type".to_owned(), "text/event-stream".to_owned())],
    });
    let (status, _, answer) = send(&relay, &key, &body(true)).await;
    assert_eq!(status, 200, "{answer}");
    let (chunks, done) = chunks(&answer);
    assert!(done, "{answer}");
    let deltas: Vec<&Value> = chunks.iter().map(|c| &c["choices"][0]["delta"]).collect();
    assert!(
        deltas.iter().all(|d| d.get("tool_calls").is_none()),
        "{answer}"
    );
    let names: Vec<&str> = deltas
        .iter()
        .filter_map(|d| d["function_call"]["name"].as_str())
        .collect();
    assert_eq!(names, ["run"], "one call, the first: {answer}");
    let arguments: String = deltas
        .iter()
        .filter_map(|d| d["function_call"]["arguments"].as_str())
        .collect();
    assert_eq!(arguments, r#"{"command":"ls"}"#);
    assert!(
        chunks
            .iter()
            .any(|c| c["choices"][0]["finish_reason"] == "function_call"),
        "{answer}"
    );
}

/// `reasoning_effort` turns Claude's thinking on in the form the model takes, where Anthropic
/// would take it (the mock refuses a request that breaks its rules, as Anthropic does), and the
/// thinking comes back as `reasoning_content`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reasoning_effort_thinks_on_claude_and_answers_reasoning_content() {
    let mock = MockUpstream::start().await;
    let relay = Relay::start().await;
    relay.add_account(&mock, "sk-ant", json!({})).await;
    let (_, key) = relay.create_key("k").await;
    let tools = json!([{ "type": "function", "function": { "name": "f", "parameters": {} } }]);
    let question = json!({ "role": "user", "content": "what is 6 times 7?" });
    let ask = |model: &str, stream: bool, messages: Value| {
        json!({
            "model": model, "stream": stream, "messages": messages, "tools": tools,
            "reasoning_effort": "high", "temperature": 0.3,
        })
    };

    // Claude 4.6: adaptive thinking at an effort; the thinking streams as reasoning_content.
    let body = ask("claude-sonnet-4-6", true, json!([question]));
    let (status, _, answer) = send(&relay, &key, &body).await;
    assert_eq!(status, 200, "{answer}");
    let sent = mock.requests().pop().unwrap().json();
    assert_eq!(sent["thinking"], json!({ "type": "adaptive" }));
    assert_eq!(sent["output_config"], json!({ "effort": "high" }));
    assert!(sent.get("temperature").is_none(), "{sent}");
    let (chunks, done) = chunks(&answer);
    assert!(done, "{answer}");
    let reasoning: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["reasoning_content"].as_str())
        .collect();
    assert_eq!(reasoning, mock::THINKING_TEXT);
    assert!(!text_of(&chunks).is_empty());

    // Claude 4.5, JSON: a budget under the longest non-streamed answer.
    let body = ask("claude-sonnet-4-5", false, json!([question]));
    let (status, _, answer) = send(&relay, &key, &body).await;
    assert_eq!(status, 200, "{answer}");
    let sent = mock.requests().pop().unwrap().json();
    assert_eq!(sent["thinking"]["type"], "enabled");
    assert!(
        sent["thinking"]["budget_tokens"].as_u64().unwrap() < sent["max_tokens"].as_u64().unwrap()
    );
    let v: Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(
        v["choices"][0]["message"]["reasoning_content"],
        mock::THINKING_TEXT
    );
    assert!(
        v["choices"][0]["message"]["content"]
            .as_str()
            .is_some_and(|c| !c.is_empty())
    );

    // The tool loop's next turn: Claude would want the call's signed thinking back, which the
    // chat history does not hold; it goes without thinking, with the client's temperature.
    let call = json!({ "role": "assistant", "content": null, "tool_calls": [{ "id": "call_1",
        "type": "function", "function": { "name": "f", "arguments": "{}" } }] });
    let result = json!({ "role": "tool", "tool_call_id": "call_1", "content": "42" });
    for model in ["claude-sonnet-4-5", "claude-sonnet-4-6"] {
        let body = ask(model, true, json!([question, call, result]));
        let (status, _, answer) = send(&relay, &key, &body).await;
        assert_eq!(status, 200, "{model}: {answer}");
        let sent = mock.requests().pop().unwrap().json();
        assert!(sent.get("thinking").is_none(), "{sent}");
        assert_eq!(sent["temperature"], 0.3);
    }

    // An answer the client began (a prefill) goes without thinking too.
    let begun = json!({ "role": "assistant", "content": "The answer is" });
    let body = ask("claude-sonnet-4-5", false, json!([question, begun]));
    let (status, _, answer) = send(&relay, &key, &body).await;
    assert_eq!(status, 200, "{answer}");
    assert!(
        mock.requests()
            .pop()
            .unwrap()
            .json()
            .get("thinking")
            .is_none()
    );

    // Anthropic's own `thinking`, as the OpenAI SDK sends it in `extra_body`, goes as sent.
    let mut body = ask("claude-sonnet-4-5", false, json!([question]));
    body["max_tokens"] = json!(3000);
    body["thinking"] = json!({ "type": "enabled", "budget_tokens": 2000 });
    let (status, _, answer) = send(&relay, &key, &body).await;
    assert_eq!(status, 200, "{answer}");
    let sent = mock.requests().pop().unwrap().json();
    assert_eq!(
        sent["thinking"],
        json!({ "type": "enabled", "budget_tokens": 2000 })
    );

    // An effort OpenAI does not name is the client's error, in OpenAI's shape; nothing is sent.
    let served = mock.requests().len();
    let mut body = ask("claude-sonnet-4-5", false, json!([question]));
    body["reasoning_effort"] = json!("extreme");
    let (status, _, answer) = send(&relay, &key, &body).await;
    assert_eq!(status, 400);
    let v: Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(v["error"]["type"], "invalid_request_error");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("reasoning_effort")
    );
    assert_eq!(mock.requests().len(), served);
}
