//! Failover before the first byte, and never after it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::mock::{Behavior, MockUpstream, MockUsage};
use crate::support::relay::{Relay, messages_body};

fn usage(input: u64, output: u64) -> MockUsage {
    MockUsage {
        input,
        output,
        ..MockUsage::default()
    }
}

/// A relay whose first choice is `a` (priority 1) with `b` behind it (priority 2).
async fn relay_a_then_b(
    configure: impl FnOnce(&mut switchyard::config::Config),
) -> (Relay, MockUpstream, MockUpstream, String, String) {
    let a = MockUpstream::start().await;
    let b = MockUpstream::start().await;
    let relay = Relay::start_configured(configure).await;
    let a_id = relay
        .add_account(&a, "sk-a", json!({ "priority": 1 }))
        .await;
    relay
        .add_account(&b, "sk-b", json!({ "priority": 2 }))
        .await;
    let (_, key) = relay.create_key("k").await;
    (relay, a, b, a_id, key)
}

#[tokio::test]
async fn each_failure_before_the_first_byte_is_served_by_another_account() {
    let (relay, a, b, a_id, key) = relay_a_then_b(|c| c.upstream.first_byte_timeout_secs = 1).await;
    b.set_default(Behavior::Ok(usage(6, 9)));
    let failures = [
        Behavior::error(500, "api_error", "boom"),
        Behavior::error(503, "api_error", "unavailable"),
        Behavior::rate_limited(30),
        Behavior::overloaded(),
        Behavior::DelayHeaders(Duration::from_secs(3), usage(1, 1)),
    ];
    let n = failures.len();
    for (i, failure) in failures.into_iter().enumerate() {
        // Each failure also takes A out of rotation for a while; put it back for the next case.
        relay
            .admin(
                reqwest::Method::POST,
                &format!("/admin/accounts/{a_id}/reset"),
                None,
            )
            .await;
        a.push_behavior(failure);
        // A session of its own: one failed over would stay where it was served.
        let resp = relay
            .messages(&key, &messages_body("claude-sonnet-4-5", true))
            .header("x-session-id", format!("case-{i}"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "attempt {i}");
        let got = resp.bytes().await.unwrap();
        assert_eq!(
            got,
            *b.responses().last().unwrap(),
            "B's stream reaches the client intact ({i})"
        );
    }
    assert_eq!(a.requests().len(), n);
    assert_eq!(b.requests().len(), n);
    // The body B got is the client's, byte for byte.
    assert_eq!(b.requests()[0].body, a.requests()[0].body);
}

#[tokio::test]
async fn an_answer_that_is_not_streamed_is_waited_for_longer_than_a_stream_s_head() {
    let (relay, a, b, _, key) = relay_a_then_b(|c| {
        c.upstream.first_byte_timeout_secs = 1;
        c.upstream.answer_timeout_secs = 4;
    })
    .await;
    b.set_default(Behavior::Ok(usage(6, 9)));
    // A JSON answer's head comes when the answer is whole: 2 s is within its 4 s, A serves it.
    a.push_behavior(Behavior::DelayHeaders(Duration::from_secs(2), usage(3, 4)));
    let resp = relay
        .messages(&key, &messages_body("claude-sonnet-4-5", false))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.bytes().await.unwrap(), *a.responses().last().unwrap());
    assert_eq!(b.requests().len(), 0);
    // A stream's head 2 s late is past its 1 s: B serves it.
    a.push_behavior(Behavior::DelayHeaders(Duration::from_secs(2), usage(3, 4)));
    let resp = relay
        .messages(&key, &messages_body("claude-sonnet-4-5", true))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.bytes().await.unwrap(), *b.responses().last().unwrap());
}

#[tokio::test]
async fn a_connect_error_fails_over_too() {
    let b = MockUpstream::start().await;
    let relay = Relay::start().await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let (status, _) = relay
        .admin(reqwest::Method::POST, "/admin/accounts", Some(json!({ "name": "gone", "provider": "anthropic", "api_key": "sk-x", "base_url": format!("http://{closed}"), "priority": 1 })))
        .await;
    assert_eq!(status, 201);
    relay
        .add_account(&b, "sk-b", json!({ "priority": 2 }))
        .await;
    let (_, key) = relay.create_key("k").await;
    let resp = relay
        .messages(&key, &messages_body("claude-sonnet-4-5", false))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.bytes().await.unwrap(), *b.responses().last().unwrap());
}

#[tokio::test]
async fn client_errors_are_not_retried_and_the_last_upstream_error_is_returned() {
    let (relay, a, b, _, key) = relay_a_then_b(|c| c.scheduler.max_attempts = 2).await;
    // 400 is the client's fault: no failover.
    a.push_behavior(Behavior::error(400, "invalid_request_error", "bad"));
    let resp = relay
        .messages(&key, &messages_body("claude-sonnet-4-5", false))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert!(b.requests().is_empty());
    // Every attempt fails: the client gets the last upstream answer as it was.
    a.push_behavior(Behavior::error(500, "api_error", "first"));
    b.push_behavior(Behavior::rate_limited(12));
    let resp = relay
        .messages(&key, &messages_body("claude-sonnet-4-5", false))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 429);
    assert_eq!(resp.headers()["retry-after"], "12");
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["type"], "rate_limit_error");
    // max_attempts = 2: a third account would not be tried; nothing is left in flight.
    assert_eq!((a.requests().len(), b.requests().len()), (2, 1));
    for id in relay
        .admin(reqwest::Method::GET, "/admin/accounts", None)
        .await
        .1["data"]
        .as_array()
        .unwrap()
    {
        let id = id["id"].as_str().unwrap();
        for _ in 0..100 {
            if relay.account_in_flight(id).await == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(relay.account_in_flight(id).await, 0);
    }
}

#[tokio::test]
async fn a_failure_after_the_first_byte_is_not_retried_and_ends_with_an_error_event() {
    let (relay, a, b, _, key) = relay_a_then_b(|_| {}).await;
    a.push_behavior(Behavior::ResetAfterStart(usage(8, 9)));
    let resp = relay
        .messages(&key, &messages_body("claude-sonnet-4-5", true))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body = resp.bytes().await.unwrap();
    let text = std::str::from_utf8(&body).unwrap();
    assert!(text.contains("message_start"));
    assert!(
        text.trim_end()
            .rsplit("\n\n")
            .next()
            .unwrap()
            .starts_with("event: error"),
        "{text}"
    );
    assert!(
        b.requests().is_empty(),
        "never retried after the first byte"
    );
}

/// A 200 stream that opens with an error event in place of `message_start`, as Anthropic sends
/// an overload that came after its head.
fn opens_with(kind: &str, message: &str) -> Behavior {
    let data = json!({ "type": "error", "error": { "type": kind, "message": message } });
    Behavior::Error {
        status: 200,
        body: format!("event: error\ndata: {data}\n\n"),
        headers: vec![("content-type".into(), "text/event-stream".into())],
    }
}

async fn account_status(relay: &Relay, account_id: &str) -> Value {
    let (status, v) = relay
        .admin(
            reqwest::Method::GET,
            &format!("/admin/accounts/{account_id}"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{v}");
    v["state"]["status"].clone()
}

#[tokio::test]
async fn a_stream_that_opens_with_an_overload_is_served_by_another_account() {
    let (relay, a, b, a_id, key) = relay_a_then_b(|_| {}).await;
    b.set_default(Behavior::Ok(usage(6, 9)));
    a.push_behavior(opens_with("overloaded_error", "Overloaded"));
    let resp = relay
        .messages(&key, &messages_body("claude-sonnet-4-5", true))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let got = resp.bytes().await.unwrap();
    assert_eq!(got, *b.responses().last().unwrap(), "B's stream, intact");
    assert_eq!((a.requests().len(), b.requests().len()), (1, 1));
    // A is judged as a 529 would have it.
    assert_eq!(account_status(&relay, &a_id).await, "cooling_down");
    // One request, served by B, billed once.
    let logged = relay.logged(1).await;
    assert_eq!(logged.len(), 1, "{logged:?}");
    assert_eq!(logged[0]["status"], 200);
    assert_eq!(logged[0]["output_tokens"], 9);
}

#[tokio::test]
async fn a_stream_that_opens_with_the_client_s_error_is_passed_on_as_it_came() {
    let (relay, a, b, a_id, key) = relay_a_then_b(|_| {}).await;
    a.push_behavior(opens_with("invalid_request_error", "prompt is too long"));
    let resp = relay
        .messages(&key, &messages_body("claude-sonnet-4-5", true))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["content-type"],
        "text/event-stream",
        "the stream as it came"
    );
    let got = resp.bytes().await.unwrap();
    assert_eq!(got, *a.responses().last().unwrap());
    assert!(b.requests().is_empty());
    assert_eq!(account_status(&relay, &a_id).await, "ok");
}

#[tokio::test]
async fn an_overload_opening_the_last_attempt_s_stream_reaches_the_client_as_it_came() {
    let (relay, a, b, _, key) = relay_a_then_b(|c| c.scheduler.max_attempts = 1).await;
    a.push_behavior(opens_with("overloaded_error", "Overloaded"));
    let resp = relay
        .messages(&key, &messages_body("claude-sonnet-4-5", true))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let got = resp.bytes().await.unwrap();
    assert_eq!(got, *a.responses().last().unwrap());
    assert!(b.requests().is_empty());
}

#[tokio::test]
async fn when_every_stream_opens_with_an_overload_the_client_gets_it_as_an_answer() {
    let (relay, a, b, _, key) = relay_a_then_b(|_| {}).await;
    a.push_behavior(opens_with("overloaded_error", "Overloaded"));
    b.push_behavior(opens_with("api_error", "Internal server error"));
    // Two accounts, both failed: the last failure is the client's answer, as the status its
    // error stands for, in Anthropic's error shape.
    let resp = relay
        .messages(&key, &messages_body("claude-sonnet-4-5", true))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 500);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["type"], "error");
    assert_eq!(v["error"]["type"], "api_error");
    assert_eq!((a.requests().len(), b.requests().len()), (1, 1));
    // Nothing billed, nothing left in flight.
    let logged = relay.logged(1).await;
    assert_eq!(logged.len(), 1, "{logged:?}");
    assert_eq!(logged[0]["status"], 500);
    assert_eq!(logged[0]["output_tokens"], 0);
}

#[tokio::test]
async fn a_stream_whose_first_event_does_not_come_in_time_fails_over() {
    let (relay, a, b, _, key) = relay_a_then_b(|c| c.upstream.first_byte_timeout_secs = 1).await;
    b.set_default(Behavior::Ok(usage(6, 9)));
    a.push_behavior(Behavior::QuietStart(Duration::from_secs(3), usage(1, 1)));
    let resp = relay
        .messages(&key, &messages_body("claude-sonnet-4-5", true))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.bytes().await.unwrap(), *b.responses().last().unwrap());
    assert_eq!((a.requests().len(), b.requests().len()), (1, 1));
}
