//! Waiting for a slot (`scheduler.queue_wait_secs`): a request that finds its key at its
//! concurrency limit, or every account busy, waits for one to free instead of being answered
//! 429 or 503 at once; one that would wait longer than it may is answered as before, and a
//! client that leaves while waiting leaves nothing held.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::support::mock::{Behavior, MockUpstream, MockUsage, http_client, wait_until};
use crate::support::relay::{Backend, Relay, backends, messages_body};

/// A relay on `backend` whose requests wait up to `wait_secs` for a slot.
async fn queued_relay(backend: &Backend, wait_secs: u64) -> Arc<Relay> {
    Arc::new(Relay::start_on(backend, |c| c.scheduler.queue_wait_secs = wait_secs).await)
}

/// A streamed request, in the background: its status and whole body.
fn spawn_ask(relay: &Arc<Relay>, key: &str) -> tokio::task::JoinHandle<(u16, String)> {
    let (relay, key) = (Arc::clone(relay), key.to_owned());
    tokio::spawn(async move {
        let resp = relay
            .messages(&key, &messages_body("claude-sonnet-4-5", true))
            .send()
            .await
            .unwrap();
        (resp.status().as_u16(), resp.text().await.unwrap())
    })
}

/// Answers that take a while: eight events 60 ms apart.
fn slow() -> Behavior {
    Behavior::Slow {
        usage: MockUsage {
            input: 3,
            output: 5,
            ..MockUsage::default()
        },
        delay: Duration::from_millis(60),
    }
}

async fn key_with(relay: &Relay, limits: Value) -> String {
    let (status, v) = relay
        .admin(
            Method::POST,
            "/admin/keys",
            Some(json!({ "name": "queued", "limits": limits })),
        )
        .await;
    assert_eq!(status, 201, "{v}");
    v["key"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_beyond_an_accounts_capacity_wait_for_it_and_are_all_served() {
    for backend in backends() {
        let mock = MockUpstream::start().await;
        mock.set_default(slow());
        let relay = queued_relay(&backend, 30).await;
        let account = relay
            .add_account(&mock, "sk-a", json!({ "max_concurrency": 1 }))
            .await;
        let key = key_with(&relay, json!({})).await;
        let asks: Vec<_> = (0..4).map(|_| spawn_ask(&relay, &key)).collect();
        for ask in asks {
            let (status, body) = ask.await.unwrap();
            assert_eq!(status, 200, "{backend:?}: {body}");
            assert!(body.contains("message_stop"), "{backend:?}");
        }
        // One at a time upstream, as the account allows.
        assert_eq!(mock.max_in_flight(), 1, "{backend:?}");
        assert_eq!(mock.served(), 4, "{backend:?}");
        assert_eq!(relay.account_in_flight(&account).await, 0, "{backend:?}");
        let metrics = relay.metrics().await;
        assert!(
            metrics
                .lines()
                .any(|l| l.starts_with("switchyard_queued_total{outcome=\"served\"}")),
            "{backend:?}: {metrics}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_beyond_a_keys_concurrency_wait_for_it() {
    for backend in backends() {
        let mock = MockUpstream::start().await;
        mock.set_default(slow());
        let relay = queued_relay(&backend, 30).await;
        relay.add_account(&mock, "sk-a", json!({})).await;
        let key = key_with(&relay, json!({ "max_concurrency": 1 })).await;
        let asks: Vec<_> = (0..3).map(|_| spawn_ask(&relay, &key)).collect();
        for ask in asks {
            assert_eq!(ask.await.unwrap().0, 200, "{backend:?}");
        }
        assert_eq!(mock.max_in_flight(), 1, "{backend:?}");
        assert_eq!(relay.key_info(&key).await["in_flight"], 0, "{backend:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wait_that_runs_out_is_answered_as_without_one_and_holds_nothing() {
    let mock = MockUpstream::start().await;
    // The first request holds the only slot far longer than the wait.
    mock.set_default(Behavior::Slow {
        usage: MockUsage::default(),
        delay: Duration::from_millis(400),
    });
    let backend = Backend::Embedded;
    let relay = queued_relay(&backend, 1).await;
    let account = relay
        .add_account(&mock, "sk-a", json!({ "max_concurrency": 1 }))
        .await;
    let key = key_with(&relay, json!({ "max_concurrency": 5 })).await;
    let first = spawn_ask(&relay, &key);
    wait_until("the first request upstream", || mock.in_flight() == 1).await;
    let resp = relay
        .messages(&key, &messages_body("claude-sonnet-4-5", false))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 503);
    assert_eq!(resp.headers()["retry-after"], "1");
    // Answered while the first still runs: it gave up, it did not wait for the slot.
    assert_eq!(mock.in_flight(), 1);
    assert_eq!(mock.requests().len(), 1);

    // A client that leaves while it waits: nothing of it is held.
    let gone = http_client()
        .post(relay.url("/v1/messages"))
        .header("x-api-key", &key)
        .header("anthropic-version", "2023-06-01")
        .json(&messages_body("claude-sonnet-4-5", false))
        .timeout(Duration::from_millis(300))
        .send()
        .await;
    assert!(gone.unwrap_err().is_timeout());
    assert_eq!(first.await.unwrap().0, 200);
    assert_eq!(relay.key_info(&key).await["in_flight"], 0);
    assert_eq!(relay.account_in_flight(&account).await, 0);
    assert_eq!(mock.requests().len(), 1);
}

#[tokio::test]
async fn an_account_resting_longer_than_the_wait_is_answered_at_once() {
    let mock = MockUpstream::start().await;
    mock.set_default(Behavior::RateLimited {
        retry_after_secs: 120,
    });
    let relay = queued_relay(&Backend::Embedded, 60).await;
    relay.add_account(&mock, "sk-a", json!({})).await;
    let key = key_with(&relay, json!({})).await;
    let resp = relay
        .messages(&key, &messages_body("claude-sonnet-4-5", false))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 429);
    // Resting for two minutes, more than the minute a request may wait: answered at once (a
    // wait would not end within this test's own time).
    let resp = tokio::time::timeout(
        Duration::from_secs(10),
        relay
            .messages(&key, &messages_body("claude-sonnet-4-5", false))
            .send(),
    )
    .await
    .expect("answered without waiting")
    .unwrap();
    assert_eq!(resp.status(), 503);
    let retry: u64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((100..=120).contains(&retry), "{retry}");
    assert_eq!(mock.requests().len(), 1);
}
