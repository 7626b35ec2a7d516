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

/// The key's first request held upstream and a second waiting for its slot, the limits' clock
/// moved on `by` while the second waits: the first is served, the second's answer is returned.
async fn second_after(
    relay: &Arc<Relay>,
    key: &str,
    mock: &MockUpstream,
    by: Duration,
) -> (u16, String) {
    let first = spawn_ask(relay, key);
    wait_until("the first request upstream", || mock.in_flight() == 1).await;
    let second = spawn_ask(relay, key);
    tokio::time::sleep(Duration::from_millis(150)).await;
    relay.app.clock.advance(by);
    assert_eq!(first.await.unwrap().0, 200);
    second.await.unwrap()
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

/// The key's and the account's requests in flight, once both are 0 or after a second: the
/// last answer's leases are given back as it ends, on their way when the client has it whole.
async fn settled(relay: &Relay, key: &str, account: Option<&str>) -> (u64, u32) {
    let mut held = (u64::MAX, u32::MAX);
    for _ in 0..50 {
        let key_held = relay.key_info(key).await["in_flight"].as_u64().unwrap();
        let account_held = match account {
            Some(id) => relay.account_in_flight(id).await,
            None => 0,
        };
        held = (key_held, account_held);
        if held == (0, 0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    held
}

/// A relay whose requests wait up to `wait_secs`, its one account resting `rest_secs` after
/// the 429 its first request got, and the key.
async fn resting(rest_secs: u64, wait_secs: u64) -> (MockUpstream, Arc<Relay>, String) {
    let mock = MockUpstream::start().await;
    mock.set_default(Behavior::RateLimited {
        retry_after_secs: rest_secs,
    });
    let relay = queued_relay(&Backend::Embedded, wait_secs).await;
    relay.add_account(&mock, "sk-a", json!({})).await;
    let key = key_with(&relay, json!({})).await;
    assert_eq!(relay.ask(&key).await.status(), 429);
    (mock, relay, key)
}

/// Whether `/metrics` counts a wait that ended with `outcome` (the recorder is the process's:
/// other tests' waits count too).
async fn waited(relay: &Relay, outcome: &str) -> bool {
    let line = format!("switchyard_queued_total{{outcome=\"{outcome}\"}}");
    relay.metrics().await.lines().any(|l| l.starts_with(&line))
}

/// A small JSON request.
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
        assert_eq!(
            settled(&relay, &key, Some(&account)).await,
            (0, 0),
            "{backend:?}"
        );
        assert!(waited(&relay, "served").await, "{backend:?}");
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
        assert_eq!(settled(&relay, &key, None).await, (0, 0), "{backend:?}");
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
    let resp = relay.ask(&key).await;
    assert_eq!(resp.status(), 503);
    assert_eq!(resp.headers()["retry-after"], "1");
    // Answered while the first still runs: it gave up, it did not wait for the slot.
    assert_eq!(mock.in_flight(), 1);
    assert_eq!(mock.requests().len(), 1);

    assert!(waited(&relay, "gave_up").await);
    assert_eq!(first.await.unwrap().0, 200);
    assert_eq!(settled(&relay, &key, Some(&account)).await, (0, 0));
    assert_eq!(mock.requests().len(), 1);
}

#[tokio::test]
async fn an_account_resting_longer_than_the_wait_is_answered_at_once() {
    let (mock, relay, key) = resting(120, 60).await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_waits_across_a_window_is_admitted_to_the_new_one() {
    let mock = MockUpstream::start().await;
    mock.set_default(slow());
    let relay = queued_relay(&Backend::Embedded, 30).await;
    relay.add_account(&mock, "sk-a", json!({})).await;
    let key = key_with(
        &relay,
        json!({ "max_concurrency": 1, "window": { "seconds": 60, "requests": 1 } }),
    )
    .await;
    // A second into a window.
    let now = relay.app.clock.now_ms();
    let into = u64::try_from(now.rem_euclid(60_000)).unwrap();
    relay
        .app
        .clock
        .advance(Duration::from_millis(60_000 - into + 1_000));
    // The window turns while the second waits for the key's slot: it is counted in the new
    // one (the old one's single request is the first's).
    let (status, body) = second_after(&relay, &key, &mock, Duration::from_secs(60)).await;
    assert_eq!(status, 200, "{body}");
    // And the new window is now full.
    let resp = relay.ask(&key).await;
    assert_eq!(resp.status(), 429);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_waits_out_an_accounts_short_rest() {
    let (mock, relay, key) = resting(2, 10).await;
    mock.set_default(Behavior::Ok(MockUsage::default()));
    // Resting two seconds, within the ten a request may wait: served once the rest is over.
    assert_eq!(relay.ask(&key).await.status(), 200);
    assert_eq!(mock.requests().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_leaves_while_it_waits_takes_nothing_and_sends_nothing() {
    let mock = MockUpstream::start().await;
    mock.set_default(Behavior::Slow {
        usage: MockUsage::default(),
        delay: Duration::from_millis(100),
    });
    let relay = queued_relay(&Backend::Embedded, 5).await;
    let account = relay
        .add_account(&mock, "sk-a", json!({ "max_concurrency": 1 }))
        .await;
    let key = key_with(&relay, json!({ "max_concurrency": 5 })).await;
    let first = spawn_ask(&relay, &key);
    wait_until("the first request upstream", || mock.in_flight() == 1).await;
    // It leaves well within its wait, and before the slot frees.
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
    // The slot is free now, long before the wait it left would have ended: nothing took it.
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(mock.requests().len(), 1);
    assert_eq!(settled(&relay, &key, Some(&account)).await, (0, 0));
    assert!(waited(&relay, "abandoned").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_that_expires_while_its_request_waits_is_refused() {
    let mock = MockUpstream::start().await;
    mock.set_default(slow());
    let relay = queued_relay(&Backend::Embedded, 30).await;
    relay
        .add_account(&mock, "sk-a", json!({ "max_concurrency": 1 }))
        .await;
    // Limits that count nothing: only its end.
    let expires = relay.app.clock.now() + jiff::SignedDuration::from_secs(30);
    let key = key_with(&relay, json!({ "expires_at": expires.to_string() })).await;
    let (status, body) = second_after(&relay, &key, &mock, Duration::from_secs(60)).await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("expired"), "{body}");
    assert_eq!(mock.requests().len(), 1);
}
