//! The Anthropic mock's own checks (moved out of `mock.rs` unchanged).

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::task::JoinSet;

use super::*;

fn usage() -> MockUsage {
    MockUsage {
        input: 12,
        output: 34,
        cache_creation_5m: 5,
        cache_creation_1h: 6,
        cache_read: 7,
    }
}

fn messages_body(model: &str, stream: bool) -> String {
    serde_json::json!({
        "model": model,
        "max_tokens": 64,
        "stream": stream,
        "messages": [{"role": "user", "content": "say hi"}],
    })
    .to_string()
}

async fn post(mock: &MockUpstream, model: &str, stream: bool) -> reqwest::Response {
    http_client()
        .post(format!("{}/v1/messages?beta=true", mock.base_url()))
        .header("x-api-key", "sk-upstream")
        .header("anthropic-version", "2023-06-01")
        .header("anthropic-beta", "a-2025,b-2026")
        .header("content-type", "application/json")
        .body(messages_body(model, stream))
        .send()
        .await
        .unwrap()
}

async fn json_of(resp: reqwest::Response) -> serde_json::Value {
    serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap()
}

fn event_names(body: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(body)
        .lines()
        .filter_map(|l| l.strip_prefix("event: ").map(str::to_owned))
        .collect()
}

#[tokio::test]
async fn stream_answer_has_real_event_sequence_and_usage() {
    let mock = MockUpstream::start().await;
    mock.set_default(Behavior::Ok(usage()));
    let resp = post(&mock, "claude-test-x", true).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    assert!(resp.headers().get("content-length").is_none());
    assert_eq!(resp.headers()["request-id"], "req_mock_0001");
    let body = resp.bytes().await.unwrap();
    assert_eq!(body, expected_stream_bytes("claude-test-x", usage()));
    let text = std::str::from_utf8(&body).unwrap();
    for needle in [
        "\"model\": \"claude-test-x\"",
        "\"input_tokens\": 12, \"output_tokens\": 1,",
        "\"cache_creation_input_tokens\": 11",
        "\"cache_read_input_tokens\": 7",
        "\"cache_creation\": {\"ephemeral_5m_input_tokens\": 5, \"ephemeral_1h_input_tokens\": 6}",
        "\"usage\": {\"output_tokens\": 34}",
    ] {
        assert!(text.contains(needle), "missing {needle} in {text}");
    }
    assert_eq!(
        event_names(&body),
        [
            "message_start",
            "ping",
            "content_block_start",
            "content_block_delta",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );
    for block in text.split_terminator("\n\n") {
        let data = block
            .lines()
            .nth(1)
            .unwrap()
            .strip_prefix("data: ")
            .unwrap();
        let _: serde_json::Value = serde_json::from_str(data).unwrap();
    }
    wait_until("served", || mock.served() == 1).await;
    assert_eq!(mock.cancelled(), 0);
    assert_eq!(mock.in_flight(), 0);
    assert_eq!(mock.responses(), vec![body]);
    let reqs = mock.requests();
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].method, "POST");
    assert_eq!(reqs[0].path, "/v1/messages");
    assert_eq!(reqs[0].query.as_deref(), Some("beta=true"));
    assert_eq!(reqs[0].header("x-api-key"), Some("sk-upstream"));
    assert_eq!(reqs[0].header("anthropic-beta"), Some("a-2025,b-2026"));
    assert_eq!(reqs[0].json()["model"], "claude-test-x");
}

#[tokio::test]
async fn stream_bytes_match_fixture_format() {
    // The captured fixture: input 10, output 7, no cache; only the usage object gained
    // the `cache_creation` breakdown, the id and the text split differ.
    let fixture = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/clients/responses/anthropic_stream.txt"
    ))
    .unwrap();
    let ours = expected_stream_bytes("claude-opus-4-8", MockUsage::new(10, 7));
    let ours = std::str::from_utf8(&ours).unwrap();
    assert_eq!(
        event_names(fixture.as_bytes())[..3],
        event_names(ours.as_bytes())[..3]
    );
    for line in [
        "event: ping\ndata: {\"type\": \"ping\"}\n\n",
        "data: {\"type\": \"content_block_stop\", \"index\": 0}\n\n",
        "data: {\"type\": \"message_delta\", \"delta\": {\"stop_reason\": \"end_turn\", \"stop_sequence\": null}, \"usage\": {\"output_tokens\": 7}}\n\n",
        "event: message_stop\ndata: {\"type\": \"message_stop\"}\n\n",
    ] {
        assert!(fixture.contains(line) && ours.contains(line), "{line}");
    }
}

#[tokio::test]
async fn json_answer() {
    let mock = MockUpstream::start().await;
    mock.push_behavior(Behavior::Ok(usage()));
    let resp = post(&mock, "claude-json", false).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/json");
    let expected = expected_json_bytes("claude-json", usage());
    assert_eq!(
        resp.headers()["content-length"],
        expected.len().to_string().as_str()
    );
    let body = resp.bytes().await.unwrap();
    assert_eq!(body, expected);
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["model"], "claude-json");
    assert_eq!(v["content"][0]["text"], "Hi! This is the mock upstream.");
    assert_eq!(v["usage"]["input_tokens"], 12);
    assert_eq!(v["usage"]["output_tokens"], 34);
    assert_eq!(v["usage"]["cache_creation_input_tokens"], 11);
    assert_eq!(v["usage"]["cache_read_input_tokens"], 7);
    assert_eq!(v["usage"]["cache_creation"]["ephemeral_1h_input_tokens"], 6);
    wait_until("served", || mock.served() == 1).await;
    assert_eq!(mock.responses(), vec![body]);

    // Queue consumed: the default (10 / 7) answers the next one.
    let body = post(&mock, "claude-json", false)
        .await
        .bytes()
        .await
        .unwrap();
    assert_eq!(
        body,
        expected_json_bytes("claude-json", MockUsage::new(10, 7))
    );
}

#[tokio::test]
async fn error_behaviour_with_headers_then_default() {
    let mock = MockUpstream::start().await;
    mock.push_behavior(Behavior::rate_limited(7));
    mock.push_behavior(Behavior::Error {
        status: 503,
        body: "upstream gone".into(),
        headers: vec![
            ("content-type".into(), "text/plain".into()),
            ("x-extra".into(), "1".into()),
        ],
    });
    mock.push_behavior(Behavior::overloaded());

    let resp = post(&mock, "m", true).await;
    assert_eq!(resp.status(), 429);
    assert_eq!(resp.headers()["retry-after"], "7");
    assert_eq!(
        resp.headers()["anthropic-ratelimit-requests-remaining"],
        "0"
    );
    let reset = resp.headers()["anthropic-ratelimit-requests-reset"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(reset.parse::<jiff::Timestamp>().is_ok(), "{reset}");
    assert_eq!(resp.headers()["content-type"], "application/json");
    let v = json_of(resp).await;
    assert_eq!(v["type"], "error");
    assert_eq!(v["error"]["type"], "rate_limit_error");

    let resp = post(&mock, "m", true).await;
    assert_eq!(resp.status(), 503);
    assert_eq!(resp.headers()["content-type"], "text/plain");
    assert_eq!(resp.headers()["x-extra"], "1");
    assert_eq!(resp.text().await.unwrap(), "upstream gone");

    let resp = post(&mock, "m", false).await;
    assert_eq!(resp.status(), 529);
    let v = json_of(resp).await;
    assert_eq!(v["error"]["type"], "overloaded_error");

    let resp = post(&mock, "m", true).await;
    assert_eq!(resp.status(), 200);
    let body = resp.bytes().await.unwrap();
    assert_eq!(body, expected_stream_bytes("m", MockUsage::new(10, 7)));
    wait_until("served", || mock.served() == 4).await;
    assert_eq!(mock.requests().len(), 4);
}

#[tokio::test]
async fn count_tokens_models_and_not_found() {
    let mock = MockUpstream::start().await;
    mock.set_default(Behavior::Ok(MockUsage::new(11, 1)));
    let client = http_client();
    let resp = client
        .post(format!("{}/v1/messages/count_tokens", mock.base_url()))
        .body(messages_body("m", false))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.unwrap(), "{\"input_tokens\": 11}");

    let resp = client
        .get(format!("{}/v1/models?limit=20", mock.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let v = json_of(resp).await;
    assert_eq!(v["data"][0]["type"], "model");
    assert_eq!(v["data"][0]["id"], "claude-opus-4-8");
    assert_eq!(v["has_more"], false);
    assert_eq!(v["first_id"], "claude-opus-4-8");

    let resp = client
        .get(format!("{}/v1/nope", mock.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    let v = json_of(resp).await;
    assert_eq!(v["type"], "error");
    assert_eq!(v["error"]["type"], "not_found_error");

    let resp = client
        .post(format!("{}/v1/messages", mock.base_url()))
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);

    wait_until("served", || mock.served() == 4).await;
    let paths: Vec<_> = mock.requests().into_iter().map(|r| r.path).collect();
    assert_eq!(
        paths,
        [
            "/v1/messages/count_tokens",
            "/v1/models",
            "/v1/nope",
            "/v1/messages"
        ]
    );
}

#[tokio::test]
async fn slow_stream_arrives_event_by_event() {
    let mock = MockUpstream::start().await;
    mock.set_default(Behavior::Slow {
        usage: usage(),
        delay: Duration::from_millis(30),
    });
    let resp = post(&mock, "slow", true).await;
    let mut chunks = Vec::new();
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        chunks.push(chunk.unwrap());
    }
    // Events are separate frames spaced by the delay: several chunks, each ending on an
    // event boundary (a loaded machine may still coalesce two).
    assert!(chunks.len() > 3, "{} chunks", chunks.len());
    assert!(chunks.iter().all(|c| c.ends_with(b"\n\n")));
    assert_eq!(chunks.concat(), expected_stream_bytes("slow", usage()));
    wait_until("served", || mock.served() == 1).await;
}

#[tokio::test]
async fn client_dropping_mid_stream_is_counted_as_cancelled() {
    let mock = MockUpstream::start().await;
    mock.push_behavior(Behavior::Slow {
        usage: usage(),
        delay: Duration::from_millis(100),
    });
    let resp = post(&mock, "m", true).await;
    let mut stream = resp.bytes_stream();
    let first = stream.next().await.unwrap().unwrap();
    assert!(first.starts_with(b"event: message_start\n"));
    assert_eq!(mock.in_flight(), 1);
    drop(stream);
    wait_until("cancelled", || mock.cancelled() == 1).await;
    assert_eq!(mock.served(), 0);
    assert_eq!(mock.in_flight(), 0);
    let sent = &mock.responses()[0];
    assert!(sent.starts_with(&first));
    assert!(sent.len() < expected_stream_bytes("m", usage()).len());
}

#[tokio::test]
async fn stall_then_disconnect_is_cancelled() {
    let mock = MockUpstream::start().await;
    mock.push_behavior(Behavior::StallAfterStart(usage()));
    let resp = post(&mock, "m", true).await;
    let mut stream = resp.bytes_stream();
    let mut got = Vec::new();
    while event_names(&got).len() < EVENTS_BEFORE_STALL {
        got.extend_from_slice(&stream.next().await.unwrap().unwrap());
    }
    let more = tokio::time::timeout(Duration::from_millis(200), stream.next()).await;
    assert!(more.is_err(), "the stream should hang");
    assert_eq!(mock.in_flight(), 1);
    drop(stream);
    wait_until("cancelled", || mock.cancelled() == 1).await;
    assert_eq!(mock.in_flight(), 0);
    assert_eq!(mock.responses()[0], got);
}

#[tokio::test]
async fn reset_after_start_breaks_the_body() {
    let mock = MockUpstream::start().await;
    mock.push_behavior(Behavior::ResetAfterStart(usage()));
    let resp = post(&mock, "m", true).await;
    assert_eq!(resp.status(), 200);
    assert!(resp.bytes().await.is_err());
    wait_until("in flight 0", || mock.in_flight() == 0).await;
    assert_eq!(mock.served(), 0);
    assert_eq!(mock.cancelled(), 0);
}

#[tokio::test]
async fn delay_headers_waits_before_the_head() {
    let mock = MockUpstream::start().await;
    mock.push_behavior(Behavior::DelayHeaders(Duration::from_millis(150), usage()));
    let started = std::time::Instant::now();
    let resp = post(&mock, "m", false).await;
    assert!(started.elapsed() >= Duration::from_millis(150));
    assert_eq!(
        resp.bytes().await.unwrap(),
        expected_json_bytes("m", usage())
    );
}

#[tokio::test]
async fn quiet_start_sends_the_head_at_once_and_the_stream_after_the_wait() {
    let mock = MockUpstream::start().await;
    mock.push_behavior(Behavior::QuietStart(Duration::from_millis(300), usage()));
    let started = std::time::Instant::now();
    let resp = post(&mock, "m", true).await;
    assert!(started.elapsed() < Duration::from_millis(300));
    assert_eq!(
        resp.bytes().await.unwrap(),
        expected_stream_bytes("m", usage())
    );
    assert!(started.elapsed() >= Duration::from_millis(300));
}

#[tokio::test]
async fn max_in_flight_with_parallel_slow_requests() {
    let mock = Arc::new(MockUpstream::start().await);
    mock.set_default(Behavior::Slow {
        usage: usage(),
        delay: Duration::from_millis(40),
    });
    let mut tasks = JoinSet::new();
    for i in 0..5 {
        let mock = mock.clone();
        tasks.spawn(async move {
            let model = format!("m{i}");
            let body = post(&mock, &model, true).await.bytes().await.unwrap();
            assert_eq!(body, expected_stream_bytes(&model, usage()));
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    wait_until("served", || mock.served() == 5).await;
    assert_eq!(mock.max_in_flight(), 5);
    assert_eq!(mock.in_flight(), 0);
    assert_eq!(mock.cancelled(), 0);
}

#[tokio::test]
async fn h2c_prior_knowledge_works() {
    let _ = http_client();
    let client = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let mock = MockUpstream::start().await;
    let resp = client
        .post(format!("{}/v1/messages", mock.base_url()))
        .header("x-api-key", "k")
        .body(messages_body("h2", true))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.version(), http::Version::HTTP_2);
    assert_eq!(
        resp.bytes().await.unwrap(),
        expected_stream_bytes("h2", MockUsage::new(10, 7))
    );
    wait_until("served", || mock.served() == 1).await;
    assert_eq!(mock.requests()[0].header("x-api-key"), Some("k"));
}
