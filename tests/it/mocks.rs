//! Self-checks of the OpenAI, Azure, Gemini and image mocks: their streams carry every field the
//! captured fixtures (what real clients accepted) carry, faults render per vendor from one queue,
//! and auth is enforced as the vendors do.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use http::HeaderMap;
use serde_json::{Value, json};

use crate::support::mock::images::{self, PNG_B64, png_bytes};
use crate::support::mock::{
    AnswerOpts, Behavior, MockUpstream, MockUsage, base64_decode, gemini, http_client, openai,
    wait_until,
};

fn usage() -> MockUsage {
    MockUsage {
        input: 12,
        output: 34,
        cache_read: 7,
        ..MockUsage::default()
    }
}

fn fixture(name: &str) -> String {
    let path = format!(
        "{}/tests/fixtures/clients/responses/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(path).unwrap()
}

/// SSE events as (event name, data); CRLF framing accepted.
fn sse(body: &str) -> Vec<(Option<String>, String)> {
    body.replace("\r\n", "\n")
        .split_terminator("\n\n")
        .map(|block| {
            let mut name = None;
            let mut data = String::new();
            for line in block.lines() {
                if let Some(n) = line.strip_prefix("event: ") {
                    name = Some(n.to_owned());
                } else if let Some(d) = line.strip_prefix("data: ") {
                    data = d.to_owned();
                }
            }
            (name, data)
        })
        .collect()
}

/// Every key path of a JSON value (`.a.b`, array items as `[]`).
fn paths(v: &Value, prefix: &str, out: &mut BTreeSet<String>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                let p = format!("{prefix}.{k}");
                out.insert(p.clone());
                paths(v, &p, out);
            }
        }
        Value::Array(a) => a.iter().for_each(|v| paths(v, &format!("{prefix}[]"), out)),
        _ => {}
    }
}

fn key_paths(data: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    paths(&serde_json::from_str(data).unwrap(), "", &mut out);
    out
}

/// Each fixture event has an event of ours with the same name and at least its fields; the
/// fixture's event names appear in ours in the same order.
fn covers(fixture: &str, ours: &str) {
    let (theirs, ours) = (sse(fixture), sse(ours));
    for (name, data) in &theirs {
        let found = ours.iter().any(|(n, d)| {
            n == name
                && (d == data
                    || (d != "[DONE]"
                        && data != "[DONE]"
                        && key_paths(d).is_superset(&key_paths(data))))
        });
        assert!(found, "no event like {name:?} {data}");
    }
    let mut names = ours.iter().map(|(n, _)| n);
    for (name, _) in &theirs {
        assert!(names.any(|n| n == name), "{name:?} out of order");
    }
}

async fn call(
    mock: &MockUpstream,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<Value>,
) -> (u16, HeaderMap, Bytes) {
    let url = format!("{}{path}", mock.base_url());
    let mut req = match body {
        Some(b) => http_client().post(url).json(&b),
        None => http_client().get(url),
    };
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.unwrap();
    let (status, headers) = (resp.status().as_u16(), resp.headers().clone());
    (status, headers, resp.bytes().await.unwrap())
}

fn json_of(body: &[u8]) -> Value {
    serde_json::from_slice(body).unwrap()
}

const BEARER: (&str, &str) = ("authorization", "Bearer sk-test");
const GOOG: (&str, &str) = ("x-goog-api-key", "g-test");

#[tokio::test]
async fn openai_streams_cover_the_fixtures() {
    let mock = MockUpstream::start().await;
    mock.set_default(Behavior::Ok(usage()));
    mock.set_reasoning_tokens(5);
    let chat = |extra: Value| {
        let mut b = json!({"model": "gpt-4o-mini", "stream": true, "messages": [{"role": "user", "content": "say hi"}]});
        b.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        b
    };
    let opts = AnswerOpts {
        include_usage: true,
        reasoning: 5,
        ..AnswerOpts::default()
    };

    let (status, h, body) = call(
        &mock,
        "/v1/chat/completions",
        &[BEARER],
        Some(chat(json!({"stream_options": {"include_usage": true}}))),
    )
    .await;
    assert_eq!(
        (status, h["content-type"].to_str().unwrap()),
        (200, "text/event-stream; charset=utf-8")
    );
    assert_eq!(
        body,
        openai::expected_chat_stream_bytes("gpt-4o-mini", usage(), &opts)
    );
    let text = std::str::from_utf8(&body).unwrap();
    covers(&fixture("openai_chat_stream.txt"), text);
    let events = sse(text);
    assert_eq!(events.last().unwrap().1, "[DONE]");
    let u = &serde_json::from_str::<Value>(&events[events.len() - 2].1).unwrap()["usage"];
    assert_eq!(
        (
            u["prompt_tokens"].as_u64(),
            u["completion_tokens"].as_u64(),
            u["total_tokens"].as_u64()
        ),
        (Some(19), Some(34), Some(53))
    );
    assert_eq!(u["prompt_tokens_details"]["cached_tokens"], 7);
    assert_eq!(u["completion_tokens_details"]["reasoning_tokens"], 5);

    // No include_usage: no usage chunk, the finish chunk right before [DONE].
    let (_, _, body) = call(
        &mock,
        "/v1/chat/completions",
        &[BEARER],
        Some(chat(json!({}))),
    )
    .await;
    let events = sse(std::str::from_utf8(&body).unwrap());
    assert!(events.iter().all(|(_, d)| !d.contains("\"usage\"")));
    assert!(
        events[events.len() - 2]
            .1
            .contains("\"finish_reason\": \"stop\"")
    );

    let tools = json!({"stream_options": {"include_usage": true}, "tools": [{"type": "function", "function": {"name": "run"}}],
        "messages": [{"role": "user", "content": "MOCK_TOOL"}]});
    let (_, _, body) = call(&mock, "/v1/chat/completions", &[BEARER], Some(chat(tools))).await;
    covers(
        &fixture("openai_chat_stream_tool_calls.txt"),
        std::str::from_utf8(&body).unwrap(),
    );

    let responses = |extra: Value| {
        let mut b = json!({"model": "gpt-5", "stream": true, "input": "say hi"});
        b.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        b
    };
    let (_, _, body) = call(
        &mock,
        "/v1/responses",
        &[BEARER],
        Some(responses(json!({}))),
    )
    .await;
    let text = std::str::from_utf8(&body).unwrap();
    covers(&fixture("openai_responses_stream.txt"), text);
    let done: Value = serde_json::from_str(&sse(text).last().unwrap().1).unwrap();
    let u = &done["response"]["usage"];
    assert_eq!(
        (u["input_tokens"].as_u64(), u["output_tokens"].as_u64()),
        (Some(19), Some(34))
    );
    assert_eq!(
        (
            u["input_tokens_details"]["cached_tokens"].as_u64(),
            u["output_tokens_details"]["reasoning_tokens"].as_u64()
        ),
        (Some(7), Some(5))
    );
    let tool = json!({"tools": [{"type": "function", "name": "exec_command"}],
        "input": [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": "MOCK_TOOL"}]}]});
    let (_, _, body) = call(&mock, "/v1/responses", &[BEARER], Some(responses(tool))).await;
    covers(
        &fixture("openai_responses_stream_function_call.txt"),
        std::str::from_utf8(&body).unwrap(),
    );

    // The check is not vacuous: a chat stream does not cover the Responses fixture.
    let chat_text =
        String::from_utf8(openai::expected_chat_stream_bytes("m", usage(), &opts).to_vec())
            .unwrap();
    let wrong =
        std::panic::catch_unwind(|| covers(&fixture("openai_responses_stream.txt"), &chat_text));
    assert!(wrong.is_err());

    // JSON answers and embeddings.
    let (_, _, body) = call(
        &mock,
        "/v1/chat/completions",
        &[BEARER],
        Some(chat(json!({"stream": false}))),
    )
    .await;
    assert_eq!(
        json_of(&body)["choices"][0]["message"]["content"],
        "Hi! This is the mock upstream."
    );
    let (_, _, body) = call(
        &mock,
        "/v1/responses",
        &[BEARER],
        Some(responses(json!({"stream": false}))),
    )
    .await;
    assert_eq!(
        json_of(&body)["output"][0]["content"][0]["text"],
        "Hi! This is the mock upstream."
    );
    let (_, _, body) = call(&mock, "/v1/embeddings", &[BEARER], Some(json!({"model": "text-embedding-3-small", "input": ["a", "b"], "encoding_format": "base64"}))).await;
    let v = json_of(&body);
    assert_eq!(v["data"].as_array().unwrap().len(), 2);
    let raw = base64_decode(v["data"][1]["embedding"].as_str().unwrap()).unwrap();
    assert_eq!(
        raw,
        openai::EMBEDDING
            .iter()
            .flat_map(|f| f.to_le_bytes())
            .collect::<Vec<_>>()
    );
    assert_eq!(v["usage"]["prompt_tokens"], 19);
    wait_until("served", || mock.served() == 8).await;
}

#[tokio::test]
async fn gemini_formats_cover_the_fixtures() {
    let mock = MockUpstream::start().await;
    mock.set_default(Behavior::Ok(usage()));
    let body = json!({"contents": [{"role": "user", "parts": [{"text": "say hi"}]}]});
    let opts = AnswerOpts::default();

    let (status, h, sse_body) = call(
        &mock,
        "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse",
        &[GOOG],
        Some(body.clone()),
    )
    .await;
    assert_eq!(
        (status, h["content-type"].to_str().unwrap()),
        (200, "text/event-stream")
    );
    assert_eq!(
        sse_body,
        gemini::expected_sse_bytes("gemini-2.5-flash", usage(), &opts)
    );
    // CRLF framing exactly as the fixture: every event ends in \r\n\r\n, no bare \n.
    let (theirs, ours) = (
        fixture("gemini_stream_sse.txt"),
        String::from_utf8(sse_body.to_vec()).unwrap(),
    );
    for text in [&theirs, &ours] {
        assert!(text.ends_with("\r\n\r\n") && !text.replace("\r\n", "").contains('\n'));
    }
    covers(&theirs, &ours);
    let last: Value = serde_json::from_str(&sse(&ours).last().unwrap().1).unwrap();
    let u = &last["usageMetadata"];
    assert_eq!(
        (
            u["promptTokenCount"].as_u64(),
            u["candidatesTokenCount"].as_u64(),
            u["cachedContentTokenCount"].as_u64()
        ),
        (Some(19), Some(34), Some(7))
    );

    // Without alt=sse: the same chunks as one JSON array; under /v1/ with ?key=.
    let (_, h, array) = call(
        &mock,
        "/v1/models/gemini-2.5-flash:streamGenerateContent?key=k",
        &[],
        Some(body.clone()),
    )
    .await;
    assert_eq!(h["content-type"], "application/json; charset=UTF-8");
    let chunks: Vec<Value> = sse(&ours)
        .iter()
        .map(|(_, d)| serde_json::from_str(d).unwrap())
        .collect();
    assert_eq!(json_of(&array), Value::Array(chunks));

    mock.set_reasoning_tokens(4);
    let (_, _, json_body) = call(
        &mock,
        "/v1beta/models/gemini-2.5-flash:generateContent",
        &[GOOG],
        Some(body.clone()),
    )
    .await;
    let mut want = BTreeSet::new();
    paths(
        &serde_json::from_str(&fixture("gemini_json.txt")).unwrap(),
        "",
        &mut want,
    );
    let mut got = BTreeSet::new();
    paths(&json_of(&json_body), "", &mut got);
    assert!(got.is_superset(&want), "{want:?} vs {got:?}");
    let u = &json_of(&json_body)["usageMetadata"];
    assert_eq!(
        (
            u["candidatesTokenCount"].as_u64(),
            u["thoughtsTokenCount"].as_u64(),
            u["totalTokenCount"].as_u64()
        ),
        (Some(30), Some(4), Some(53))
    );

    let (_, _, count) = call(
        &mock,
        "/v1beta/models/gemini-2.5-flash:countTokens",
        &[GOOG],
        Some(body),
    )
    .await;
    assert_eq!(
        json_of(&count)
            .as_object()
            .unwrap()
            .keys()
            .collect::<Vec<_>>(),
        json_of(fixture("gemini_count_tokens.txt").as_bytes())
            .as_object()
            .unwrap()
            .keys()
            .collect::<Vec<_>>()
    );
    assert_eq!(json_of(&count)["totalTokens"], 12);
}

#[tokio::test]
async fn one_queue_renders_faults_per_vendor() {
    let mock = MockUpstream::start().await;
    for _ in 0..4 {
        mock.push_behavior(Behavior::rate_limited(75));
    }
    mock.push_behavior(Behavior::overloaded());
    mock.push_behavior(Behavior::error(500, "api_error", "boom"));
    let chat = json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]});
    let gem = json!({"contents": [{"parts": [{"text": "hi"}]}]});
    let azure = "/openai/deployments/dep-1/chat/completions?api-version=2024-10-21";

    let (s, h, b) = call(&mock, "/v1/chat/completions", &[BEARER], Some(chat.clone())).await;
    assert_eq!(
        (s, json_of(&b)["error"]["code"].as_str()),
        (429, Some("rate_limit_exceeded"))
    );
    assert_eq!(
        (
            h["retry-after"].to_str().unwrap(),
            h["x-ratelimit-reset-requests"].to_str().unwrap()
        ),
        ("75", "1m15s")
    );
    assert!(
        json_of(&b)["error"]
            .as_object()
            .unwrap()
            .contains_key("param")
    );
    assert!(
        json_of(&b)["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("Rate limit reached for gpt-4o in organization ")
    );
    let (s, h, b) = call(&mock, azure, &[("api-key", "az")], Some(chat.clone())).await;
    assert_eq!(
        (
            s,
            json_of(&b)["error"]["code"].as_str(),
            h["retry-after-ms"].to_str().unwrap()
        ),
        (429, Some("429"), "75000")
    );
    let (s, h, b) = call(
        &mock,
        "/v1beta/models/gemini-2.5-flash:generateContent",
        &[GOOG],
        Some(gem.clone()),
    )
    .await;
    let e = &json_of(&b)["error"];
    assert_eq!(
        (s, e["code"].as_u64(), e["status"].as_str()),
        (429, Some(429), Some("RESOURCE_EXHAUSTED"))
    );
    assert_eq!(
        e["details"][0]["violations"][0]["quotaDimensions"]["model"],
        "gemini-2.5-pro"
    );
    assert_eq!(e["details"][1]["retryDelay"], "75s");
    assert!(h.get("retry-after").is_none());
    let (s, _, b) = call(
        &mock,
        "/v1/messages",
        &[],
        Some(json!({"model": "m", "max_tokens": 8, "messages": []})),
    )
    .await;
    assert_eq!(
        (s, json_of(&b)["error"]["type"].as_str()),
        (429, Some("rate_limit_error"))
    );

    let (s, _, b) = call(
        &mock,
        "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse",
        &[GOOG],
        Some(gem),
    )
    .await;
    assert_eq!(
        (s, json_of(&b)["error"]["status"].as_str()),
        (503, Some("UNAVAILABLE"))
    );
    let (s, _, b) = call(
        &mock,
        "/v1/responses",
        &[BEARER],
        Some(json!({"model": "gpt-5", "input": "x"})),
    )
    .await;
    assert_eq!(
        (
            s,
            json_of(&b)["error"]["type"].as_str(),
            json_of(&b)["error"]["message"].as_str()
        ),
        (500, Some("server_error"), Some("boom"))
    );

    // Queue drained: the default answers, and the Azure request was recorded as sent.
    let (s, _, b) = call(&mock, azure, &[("api-key", "az")], Some(chat)).await;
    assert_eq!(
        (s, json_of(&b)["model"].as_str()),
        (200, Some("gpt-4o-mini"))
    );
    assert!(json_of(&b)["prompt_filter_results"].is_array());
    let reqs = mock.requests();
    assert_eq!(
        (
            reqs[1].azure_deployment(),
            reqs[1].query_param("api-version").as_deref()
        ),
        (Some("dep-1"), Some("2024-10-21"))
    );
    wait_until("served", || mock.served() == 7).await;
}

#[tokio::test]
async fn auth_is_enforced_before_the_queue() {
    let mock = MockUpstream::start().await;
    mock.push_behavior(Behavior::error(418, "api_error", "queued"));
    let chat = json!({"model": "gpt-4o-mini", "messages": []});
    let (s, _, b) = call(&mock, "/v1/chat/completions", &[], Some(chat.clone())).await;
    assert_eq!(
        (s, json_of(&b)["error"]["type"].as_str()),
        (401, Some("invalid_request_error"))
    );
    let azure = "/openai/deployments/d/embeddings";
    let (s, _, b) = call(
        &mock,
        &format!("{azure}?api-version=1"),
        &[],
        Some(json!({"input": "x"})),
    )
    .await;
    assert_eq!(
        (s, json_of(&b)["error"]["code"].as_str()),
        (401, Some("401"))
    );
    let (s, _, b) = call(
        &mock,
        azure,
        &[("api-key", "k")],
        Some(json!({"input": "x"})),
    )
    .await;
    assert_eq!(
        (s, json_of(&b)["error"]["code"].as_str()),
        (400, Some("MissingApiVersionParameter"))
    );
    let (s, _, b) = call(
        &mock,
        "/v1beta/models/gemini-2.5-flash:countTokens",
        &[],
        Some(json!({"contents": []})),
    )
    .await;
    assert_eq!(
        (s, json_of(&b)["error"]["status"].as_str()),
        (403, Some("PERMISSION_DENIED"))
    );
    // None of those consumed the queued error.
    let (s, _, _) = call(&mock, "/v1/chat/completions", &[BEARER], Some(chat.clone())).await;
    assert_eq!(s, 418);

    mock.require_api_key("sk-test");
    let (s, _, b) = call(
        &mock,
        "/v1/chat/completions",
        &[("authorization", "Bearer sk-wrong")],
        Some(chat.clone()),
    )
    .await;
    assert_eq!(
        (s, json_of(&b)["error"]["code"].as_str()),
        (401, Some("invalid_api_key"))
    );
    let (s, _, b) = call(&mock, "/v1beta/models?key=nope", &[], None).await;
    assert_eq!(
        (s, json_of(&b)["error"]["details"][0]["reason"].as_str()),
        (400, Some("API_KEY_INVALID"))
    );
    let (s, _, _) = call(
        &mock,
        "/v1/messages",
        &[("x-api-key", "sk-wrong")],
        Some(json!({"model": "m"})),
    )
    .await;
    assert_eq!(s, 401);
    let (s, _, _) = call(&mock, "/v1/chat/completions", &[BEARER], Some(chat)).await;
    assert_eq!(s, 200);

    // GET /v1/models answers in the shape of the credential sent.
    let (_, _, b) = call(&mock, "/v1/models", &[BEARER], None).await;
    assert_eq!(json_of(&b)["object"], "list");
    let (_, _, b) = call(&mock, "/v1/models", &[("x-goog-api-key", "sk-test")], None).await;
    assert_eq!(json_of(&b)["models"][0]["name"], "models/gemini-2.5-flash");
    let (_, _, b) = call(&mock, "/v1/models", &[("x-api-key", "sk-test")], None).await;
    assert_eq!(json_of(&b)["data"][0]["type"], "model");
}

#[tokio::test]
async fn image_routes() {
    let mock = MockUpstream::start().await;
    mock.set_default(Behavior::Ok(MockUsage::new(20, 4160)));
    let png = png_bytes();
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR") && png.ends_with(b"IEND\xaeB`\x82"));

    let ask = json!({"model": "gpt-image-1", "prompt": "a dot", "size": "1024x1024", "n": 2});
    let (s, _, b) = call(&mock, "/v1/images/generations", &[BEARER], Some(ask)).await;
    assert_eq!(
        (s, b.clone()),
        (
            200,
            images::expected_b64_images_bytes(
                "gpt-image-1",
                "1024x1024",
                2,
                MockUsage::new(20, 4160)
            )
        )
    );
    assert_eq!(json_of(&b)["usage"]["total_tokens"], 4180);

    let ask = json!({"model": "dall-e-3", "prompt": "a dot", "response_format": "url"});
    let (_, _, b) = call(&mock, "/v1/images/generations", &[BEARER], Some(ask)).await;
    let v = json_of(&b);
    assert!(v.get("usage").is_none());
    let url = v["data"][0]["url"].as_str().unwrap();
    assert_eq!(
        http_client()
            .get(url)
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap(),
        png
    );

    // Edits: multipart, fields and file sizes recorded.
    mock.set_image_input_tokens(65);
    let boundary = "mockboundary42";
    let mut form = Vec::new();
    for (name, file, data) in [
        ("model", None, &b"gpt-image-1"[..]),
        ("prompt", None, &b"make it blue"[..]),
        ("image[]", Some("a.png"), &[7u8; 100][..]),
    ] {
        form.extend_from_slice(
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"").as_bytes(),
        );
        if let Some(f) = file {
            form.extend_from_slice(
                format!("; filename=\"{f}\"\r\nContent-Type: image/png").as_bytes(),
            );
        }
        form.extend_from_slice(b"\r\n\r\n");
        form.extend_from_slice(data);
        form.extend_from_slice(b"\r\n");
    }
    form.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    let resp = http_client()
        .post(format!(
            "{}/openai/deployments/img/images/edits?api-version=2025-04-01-preview",
            mock.base_url()
        ))
        .header("api-key", "k")
        .header(
            "content-type",
            format!("multipart/form-data; boundary={boundary}"),
        )
        .body(form)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let v = json_of(&resp.bytes().await.unwrap());
    assert_eq!(v["data"][0]["b64_json"], PNG_B64);
    assert_eq!(
        (
            v["usage"]["input_tokens"].as_u64(),
            v["usage"]["input_tokens_details"]["image_tokens"].as_u64()
        ),
        (Some(85), Some(65))
    );
    let parts = mock.requests()[3].multipart();
    let fields: Vec<_> = parts
        .iter()
        .map(|p| (p.name.as_str(), p.filename.as_deref(), p.data.len()))
        .collect();
    assert_eq!(
        fields,
        [
            ("model", None, 11),
            ("prompt", None, 12),
            ("image[]", Some("a.png"), 100)
        ]
    );

    let (_, _, b) = call(
        &mock,
        "/v1beta/models/imagen-4.0-generate-001:predict",
        &[GOOG],
        Some(json!({"instances": [{"prompt": "a dot"}], "parameters": {"sampleCount": 2}})),
    )
    .await;
    assert_eq!(b, images::expected_imagen_bytes(2));
    let ask = json!({"contents": [{"parts": [{"text": "a dot"}]}], "generationConfig": {"responseModalities": ["TEXT", "IMAGE"]}});
    let (_, _, b) = call(
        &mock,
        "/v1beta/models/gemini-2.5-flash-image:generateContent",
        &[GOOG],
        Some(ask),
    )
    .await;
    let v = json_of(&b);
    assert_eq!(
        v["candidates"][0]["content"]["parts"][0]["inlineData"]["data"],
        PNG_B64
    );
    assert_eq!(
        v["usageMetadata"]["candidatesTokensDetails"][0],
        json!({"modality": "IMAGE", "tokenCount": 4160})
    );
    wait_until("served", || mock.served() == 6).await;
}

#[tokio::test]
async fn vendor_streams_stall_and_reset_at_the_documented_event() {
    let mock = MockUpstream::start().await;
    mock.push_behavior(Behavior::StallAfterStart(usage()));
    mock.push_behavior(Behavior::ResetAfterStart(usage()));
    let chat =
        json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": "hi"}]});
    let resp = http_client()
        .post(format!("{}/v1/chat/completions", mock.base_url()))
        .header(BEARER.0, BEARER.1)
        .json(&chat)
        .send()
        .await
        .unwrap();
    let mut stream = resp.bytes_stream();
    let mut got = Vec::new();
    while sse(std::str::from_utf8(&got).unwrap()).len() < openai::CHAT_EVENTS_BEFORE_STALL {
        got.extend_from_slice(&stream.next().await.unwrap().unwrap());
    }
    let more = tokio::time::timeout(Duration::from_millis(200), stream.next()).await;
    assert!(more.is_err(), "the stream should hang");
    let full = openai::chat_stream_events("m", usage(), &AnswerOpts::default());
    assert_eq!(got, full[..openai::CHAT_EVENTS_BEFORE_STALL].concat());
    drop(stream);
    wait_until("cancelled", || mock.cancelled() == 1).await;

    let gem = json!({"contents": [{"parts": [{"text": "hi"}]}]});
    let resp = http_client()
        .post(format!(
            "{}/v1beta/models/g:streamGenerateContent?alt=sse",
            mock.base_url()
        ))
        .header(GOOG.0, GOOG.1)
        .json(&gem)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.bytes().await.is_err());
    wait_until("in flight 0", || mock.in_flight() == 0).await;
    let sent = &mock.responses()[1];
    let events = gemini::stream_events("g", usage(), &AnswerOpts::default(), true);
    assert_eq!(sent, &events[..gemini::EVENTS_BEFORE_STALL].concat());
    assert_eq!((mock.served(), mock.cancelled()), (0, 1));
}
