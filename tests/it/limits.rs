//! Per-key limits end to end, on every store: budgets reserved at admission and settled at the
//! end, concurrency, windows and days on a controllable clock, activation on first use, the
//! key-info view, and the same limits held in total by two instances on one Redis.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use switchyard::config::Config;
use switchyard::limits::{self, Request};

use crate::support::mock::{Behavior, MockUpstream, MockUsage, wait_until};
use crate::support::relay::{Backend, Relay, backends, messages_body};

const MODEL: &str = "claude-sonnet-4-5";

/// A relay on `backend` with one account on a fresh mock, and a key with `limits`.
async fn relay_with_key(backend: &Backend, limits: Value) -> (Relay, MockUpstream, String, String) {
    relay_with_key_on(backend, |_| {}, limits).await
}

/// [`relay_with_key`] on a relay whose config `configure` changes first.
async fn relay_with_key_on(
    backend: &Backend,
    configure: impl FnOnce(&mut Config),
    limits: Value,
) -> (Relay, MockUpstream, String, String) {
    let mock = MockUpstream::start().await;
    let relay = Relay::start_on(backend, configure).await;
    relay.add_account(&mock, "sk-a", json!({})).await;
    let (id, key) = create_key(&relay, limits).await;
    (relay, mock, id, key)
}

async fn create_key(relay: &Relay, limits: Value) -> (String, String) {
    let (status, v) = relay
        .admin(
            Method::POST,
            "/admin/keys",
            Some(json!({ "name": "limited", "limits": limits })),
        )
        .await;
    assert_eq!(status, 201, "{v}");
    (
        v["id"].as_str().unwrap().to_owned(),
        v["key"].as_str().unwrap().to_owned(),
    )
}

/// Sends one request; returns the status, the Retry-After header and the body.
async fn call(relay: &Relay, key: &str, stream: bool) -> (u16, Option<u64>, Value) {
    let resp = relay
        .messages(key, &messages_body(MODEL, stream))
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let retry = resp
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().parse().unwrap());
    let bytes = resp.bytes().await.unwrap();
    (
        status,
        retry,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

/// What admission reserves for one `messages_body(MODEL, _)` request.
fn estimate(relay: &Relay) -> u64 {
    let body = serde_json::to_vec(&messages_body(MODEL, false)).unwrap();
    limits::estimate(
        &relay.app,
        &Request {
            surface: "anthropic",
            client: None,
            model: Some(MODEL),
            max_tokens: Some(64),
            body_len: body.len(),
            billed: true,
            cost_nanousd: None,
        },
    )
    .cost_nanousd
}

/// Waits until every request of the key settled: nothing in flight, nothing reserved.
async fn settled(relay: &Relay, key: &str) -> Value {
    for _ in 0..300 {
        let info = relay.key_info(key).await;
        let reserved: u64 = info["usage"]
            .as_object()
            .unwrap()
            .values()
            .map(|u| u["reserved"].as_u64().unwrap())
            .sum();
        if info["in_flight"] == 0 && reserved == 0 {
            return info;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!(
        "the key's leases never settled: {}",
        relay.key_info(key).await
    );
}

/// The key's recorded cost in the usage statistics.
async fn recorded_cost(relay: &Relay, key_id: &str) -> u64 {
    relay.app.stats.flush().await;
    relay.usage(&format!("key_id={key_id}")).await["cost_nanousd"]
        .as_u64()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cost_budget_admits_what_fits_and_never_overshoots_by_more_than_one_estimate() {
    for backend in backends() {
        let mock = MockUpstream::start().await;
        let relay = Arc::new(Relay::start_on(&backend, |_| {}).await);
        relay.add_account(&mock, "sk-a", json!({})).await;
        let e = estimate(&relay);
        let budget = 10 * e;
        let (key_id, key) = create_key(&relay, json!({ "total_cost_nanousd": budget })).await;
        // Each answer costs a little less than its reservation.
        let usage = MockUsage::new(2, 60);
        mock.set_default(Behavior::Slow {
            usage,
            delay: Duration::from_millis(40),
        });

        let mut tasks = Vec::new();
        for _ in 0..50 {
            let relay = Arc::clone(&relay);
            let key = key.clone();
            tasks.push(tokio::spawn(async move { call(&relay, &key, true).await }));
        }
        let mut admitted = 0;
        for t in tasks {
            let (status, retry, body) = t.await.unwrap();
            match status {
                200 => admitted += 1,
                429 => {
                    assert!(retry.is_some(), "{body}");
                    assert_eq!(body["error"]["type"], "rate_limit_error");
                    assert!(
                        body["error"]["message"]
                            .as_str()
                            .unwrap()
                            .contains("total_cost"),
                        "{body}"
                    );
                }
                other => panic!("{backend:?}: unexpected {other}: {body}"),
            }
        }
        assert!(
            admitted <= 10,
            "{backend:?}: {admitted} admitted against a budget of 10"
        );
        assert!(admitted >= 1);

        // Keep spending until the budget says no: then it is spent, and stays so.
        let mut last = (0, None, Value::Null);
        for _ in 0..40 {
            settled(&relay, &key).await;
            last = call(&relay, &key, false).await;
            if last.0 != 200 {
                break;
            }
        }
        let (status, retry, body) = last;
        assert_eq!(status, 403, "{backend:?}: {body}");
        assert_eq!(retry, None);
        assert_eq!(body["error"]["type"], "permission_error");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("total_cost") && message.contains("does not reset"),
            "{message}"
        );
        let info = settled(&relay, &key).await;
        let spent = info["usage"]["total_cost"]["used"].as_u64().unwrap();
        assert!(
            spent >= budget,
            "refused before the budget was spent: {spent} < {budget}"
        );
        assert!(
            spent <= budget + e,
            "{backend:?}: {spent} overshoots {budget} by more than one estimate {e}"
        );
        assert_eq!(spent, recorded_cost(&relay, &key_id).await, "{backend:?}");
        assert_eq!(info["usage"]["total_cost"]["remaining"], 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_concurrency_limit_of_three_holds_for_twenty_parallel_streams() {
    for backend in backends() {
        let (relay, mock, _, key) = relay_with_key(&backend, json!({ "max_concurrency": 3 })).await;
        let relay = Arc::new(relay);
        mock.set_default(Behavior::Slow {
            usage: MockUsage::new(1, 1),
            delay: Duration::from_millis(30),
        });
        let mut tasks = Vec::new();
        for _ in 0..20 {
            let relay = Arc::clone(&relay);
            let key = key.clone();
            tasks.push(tokio::spawn(async move { call(&relay, &key, true).await }));
        }
        let mut ok = 0;
        for t in tasks {
            let (status, retry, body) = t.await.unwrap();
            match status {
                200 => ok += 1,
                429 => {
                    assert_eq!(retry, Some(1));
                    assert!(
                        body["error"]["message"]
                            .as_str()
                            .unwrap()
                            .contains("3 concurrent")
                    );
                }
                other => panic!("unexpected {other}: {body}"),
            }
        }
        assert!(ok >= 3, "{backend:?}: only {ok} served");
        assert!(
            mock.max_in_flight() <= 3,
            "{backend:?}: {} upstream at once",
            mock.max_in_flight()
        );
        settled(&relay, &key).await;
    }
}

/// A relay on `backend` whose leases live 2 s, a key allowed one request at a time, and a first
/// request whose answer `behavior` makes last well past that: while it runs, past the ttl, a
/// second request is refused and the key and the account count it in flight; when it ends, both
/// are free at once.
async fn a_stream_outliving_its_lease_ttl_counts_until_it_ends(
    backend: &Backend,
    behavior: Behavior,
    configure: impl FnOnce(&mut Config),
) {
    let mock = MockUpstream::start().await;
    let relay = Relay::start_on(backend, |c| {
        c.relay.lease_ttl_secs = 2;
        configure(c);
    })
    .await;
    let account_id = relay.add_account(&mock, "sk-a", json!({})).await;
    let (_, key) = create_key(&relay, json!({ "max_concurrency": 1 })).await;
    mock.set_default(behavior);
    let relay = Arc::new(relay);
    let started = tokio::time::Instant::now();
    let first = {
        let (relay, key) = (Arc::clone(&relay), key.clone());
        tokio::spawn(async move {
            let resp = relay
                .messages(&key, &messages_body(MODEL, true))
                .send()
                .await
                .unwrap();
            (resp.status().as_u16(), resp.text().await.unwrap())
        })
    };
    wait_until("the first request upstream", || mock.in_flight() == 1).await;
    // Past the ttl, and past twice it: the leases were renewed, not swept.
    for at in [2_500, 4_500] {
        tokio::time::sleep_until(started + Duration::from_millis(at)).await;
        let (status, _, body) = call(&relay, &key, false).await;
        assert_eq!(status, 429, "{backend:?} at {at} ms: {body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("1 concurrent"),
            "{body}"
        );
        assert_eq!(relay.key_info(&key).await["in_flight"], 1, "{backend:?}");
        assert_eq!(relay.account_in_flight(&account_id).await, 1, "{backend:?}");
    }
    assert_eq!(
        mock.in_flight(),
        1,
        "{backend:?}: too slow, the first stream ended before the checks"
    );
    let (status, text) = first.await.unwrap();
    assert_eq!(status, 200, "{backend:?}: {text}");
    assert!(text.contains("message_stop"), "{backend:?}: {text}");
    assert!(
        started.elapsed() > Duration::from_secs(5),
        "{backend:?}: the stream did not outlast the ttl"
    );
    // Given back when it ends: the key and the account serve the next request.
    settled(&relay, &key).await;
    assert_eq!(relay.account_in_flight(&account_id).await, 0, "{backend:?}");
    mock.set_default(Behavior::Ok(MockUsage::new(1, 1)));
    assert_eq!(call(&relay, &key, false).await.0, 200, "{backend:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_dribbling_past_its_lease_ttl_still_counts_against_max_concurrency() {
    for backend in backends() {
        // 9 events 800 ms apart: about 6.4 s.
        let dribble = Behavior::Slow {
            usage: MockUsage::new(1, 1),
            delay: Duration::from_millis(800),
        };
        a_stream_outliving_its_lease_ttl_counts_until_it_ends(&backend, dribble, |_| {}).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_stream_keeps_its_leases_when_the_idle_timeout_is_beyond_their_ttl() {
    for backend in backends() {
        // The head and the first events at once, then nothing for 6 s (no frame to renew
        // with), then the rest.
        let quiet = Behavior::PauseAfterStart(Duration::from_secs(6), MockUsage::new(1, 1));
        a_stream_outliving_its_lease_ttl_counts_until_it_ends(&backend, quiet, |c| {
            c.upstream.idle_timeout_secs = 10;
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_max_tokens_reserves_no_more_than_the_limit() {
    for backend in backends() {
        let (relay, mock, _, key) = relay_with_key(
            &backend,
            json!({ "window": { "seconds": 3600, "tokens": 1_000_000 } }),
        )
        .await;
        mock.set_default(Behavior::Slow {
            usage: MockUsage::new(1, 1),
            delay: Duration::from_millis(400),
        });
        // The client's max_tokens is any u64; the store must never see more than the limit.
        let mut body = messages_body(MODEL, true);
        body["max_tokens"] = json!(u64::MAX);
        let relay = Arc::new(relay);
        let first = {
            let (relay, key, body) = (Arc::clone(&relay), key.clone(), body.clone());
            tokio::spawn(async move {
                let resp = relay.messages(&key, &body).send().await.unwrap();
                (resp.status().as_u16(), resp.text().await.unwrap())
            })
        };
        wait_until("the first request upstream", || mock.in_flight() == 1).await;
        let info = relay.key_info(&key).await;
        assert_eq!(
            info["usage"]["window_tokens"]["reserved"], 1_000_000,
            "{backend:?}: {info}"
        );
        // The window is full while it runs: a second request is refused, in Anthropic's shape.
        let (status, _, refused) = call(&relay, &key, false).await;
        assert_eq!(status, 429, "{backend:?}: {refused}");
        let (status, text) = first.await.unwrap();
        assert_eq!(status, 200, "{backend:?}: {text}");
        let info = settled(&relay, &key).await;
        assert_eq!(
            info["usage"]["window_tokens"]["used"], 2,
            "{backend:?}: {info}"
        );
        // And the key goes on working.
        assert_eq!(call(&relay, &key, false).await.0, 200, "{backend:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_absurd_usage_report_is_capped_and_recording_goes_on() {
    for backend in backends() {
        let (relay, mock, key_id, key) = relay_with_key(&backend, json!({})).await;
        // An upstream reporting more output than any answer has (more than Redis counts, once
        // priced): billed at the cap, and the usage after it is still written.
        mock.push_behavior(Behavior::Ok(MockUsage::new(5, u64::MAX)));
        assert_eq!(call(&relay, &key, false).await.0, 200, "{backend:?}");
        mock.set_default(Behavior::Ok(MockUsage::new(5, 6)));
        assert_eq!(call(&relay, &key, false).await.0, 200, "{backend:?}");
        relay.app.stats.flush().await;
        let usage = relay.usage(&format!("key_id={key_id}")).await;
        assert_eq!(
            usage["output_tokens"].as_u64(),
            Some(switchyard::usage::MAX_TOKENS_PER_REQUEST + 6),
            "{backend:?}: {usage}"
        );
        assert_eq!(usage["requests"], 2, "{backend:?}: {usage}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn windows_roll_over_on_the_clock_and_say_when() {
    for backend in backends() {
        let (relay, _mock, _, key) = relay_with_key(
            &backend,
            json!({ "window": { "seconds": 60, "requests": 2 } }),
        )
        .await;
        // Start at the beginning of a minute so the two requests share a window.
        let now = relay.app.clock.now_ms();
        relay.app.clock.advance(Duration::from_millis(
            (60_000 - now.rem_euclid(60_000)) as u64,
        ));
        assert_eq!(call(&relay, &key, false).await.0, 200);
        assert_eq!(call(&relay, &key, true).await.0, 200);
        settled(&relay, &key).await;
        let (status, retry, body) = call(&relay, &key, false).await;
        assert_eq!(status, 429, "{body}");
        assert_eq!(body["error"]["type"], "rate_limit_error");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("window_requests")
        );
        let retry = retry.unwrap();
        assert!((55..=60).contains(&retry), "retry-after {retry}");
        let info = relay.key_info(&key).await;
        assert_eq!(info["usage"]["window_requests"]["used"], 2);
        assert_eq!(info["usage"]["window_requests"]["remaining"], 0);

        relay.app.clock.advance(Duration::from_secs(retry));
        assert_eq!(
            call(&relay, &key, false).await.0,
            200,
            "{backend:?}: a new window"
        );
        settled(&relay, &key).await;
        assert_eq!(
            relay.key_info(&key).await["usage"]["window_requests"]["used"],
            1
        );
    }
}

/// A request counts once against the key's request windows when it reached an upstream,
/// whether the upstream's answer passed through (a 400) or every account tried failed (a 500 on
/// the only account); one that reached none (refused by the limits) counts nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_sent_upstream_counts_once_however_it_failed() {
    for backend in backends() {
        // Counting is under test, not health: the 500 does not bench the only account.
        let (relay, mock, _, key) = relay_with_key_on(
            &backend,
            |c| c.scheduler.failure_cooldown_secs = 0,
            json!({ "window": { "seconds": 3600, "requests": 3 } }),
        )
        .await;
        let now = relay.app.clock.now_ms();
        relay.app.clock.advance(Duration::from_millis(
            (3_600_000 - now.rem_euclid(3_600_000)) as u64,
        ));
        mock.push_behavior(Behavior::error(500, "api_error", "boom"));
        let (status, _, body) = call(&relay, &key, false).await;
        assert_eq!(status, 500, "{backend:?}: {body}");
        mock.push_behavior(Behavior::error(400, "invalid_request_error", "bad"));
        assert_eq!(call(&relay, &key, false).await.0, 400);
        let info = settled(&relay, &key).await;
        assert_eq!(
            info["usage"]["window_requests"]["used"], 2,
            "{backend:?}: {info}"
        );
        assert_eq!(call(&relay, &key, false).await.0, 200, "{backend:?}");
        let (status, _, body) = call(&relay, &key, false).await;
        assert_eq!(status, 429, "{backend:?}: {body}");
        assert_eq!(mock.requests().len(), 3, "{backend:?}");
        let info = settled(&relay, &key).await;
        assert_eq!(info["usage"]["window_requests"]["used"], 3, "{backend:?}");
    }
}

/// Sent upstream without an answer coming back counts too: every attempt refused at connect
/// (the client gets the relay's own error), or a client that leaves before the head of a long
/// answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_sent_upstream_counts_once_without_an_answer() {
    for backend in backends() {
        let (relay, mock, _, key) = relay_with_key_on(
            &backend,
            |c| c.scheduler.failure_cooldown_secs = 0,
            json!({ "window": { "seconds": 3600, "requests": 10 } }),
        )
        .await;
        let now = relay.app.clock.now_ms();
        relay.app.clock.advance(Duration::from_millis(
            (3_600_000 - now.rem_euclid(3_600_000)) as u64,
        ));
        // The client leaves while the upstream has not answered yet.
        mock.push_behavior(Behavior::DelayHeaders(
            Duration::from_secs(3),
            MockUsage::new(3, 4),
        ));
        let gone = relay
            .messages(&key, &messages_body(MODEL, false))
            .timeout(Duration::from_millis(300))
            .send()
            .await;
        assert!(gone.is_err());
        wait_until("the relay sees the client gone", || mock.cancelled() == 1).await;
        let info = settled(&relay, &key).await;
        assert_eq!(
            info["usage"]["window_requests"]["used"], 1,
            "{backend:?}: {info}"
        );

        // The only account refuses connections: the relay answers with its own error.
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let dead = format!("http://{}", closed.local_addr().unwrap());
        drop(closed);
        let accounts = relay.admin(Method::GET, "/admin/accounts", None).await.1;
        let id = accounts["data"][0]["id"].as_str().unwrap().to_owned();
        let (status, v) = relay
            .admin(
                Method::PATCH,
                &format!("/admin/accounts/{id}"),
                Some(json!({ "base_url": dead })),
            )
            .await;
        assert_eq!(status, 200, "{v}");
        let (status, _, body) = call(&relay, &key, false).await;
        assert!(status >= 500, "{backend:?}: {status} {body}");
        let info = settled(&relay, &key).await;
        assert_eq!(
            info["usage"]["window_requests"]["used"], 2,
            "{backend:?}: {info}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daily_budget_resets_at_midnight_in_the_configured_time_zone() {
    for backend in backends() {
        // One request spends it all.
        let (relay, _mock, _, key) = relay_with_key_on(
            &backend,
            |c| c.limits.timezone = "Asia/Tokyo".into(),
            json!({ "daily_cost_nanousd": 1 }),
        )
        .await;
        // 23:58 in Tokyo is 14:58 UTC.
        relay.app.clock.set("2099-12-01T14:58:00Z".parse().unwrap());
        assert_eq!(call(&relay, &key, false).await.0, 200);
        settled(&relay, &key).await;
        let (status, _, body) = call(&relay, &key, false).await;
        assert_eq!(status, 403, "{body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains("daily_cost"), "{message}");
        assert!(
            message.contains("resets at 2099-12-02T00:00:00+09:00"),
            "{message}"
        );
        // Still the same Tokyo day at 23:59:59.
        relay.app.clock.set("2099-12-01T14:59:59Z".parse().unwrap());
        assert_eq!(call(&relay, &key, false).await.0, 403);
        relay.app.clock.set("2099-12-01T15:00:00Z".parse().unwrap());
        assert_eq!(
            call(&relay, &key, false).await.0,
            200,
            "{backend:?}: a new day in Tokyo"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn activation_starts_the_clock_at_the_first_request() {
    for backend in backends() {
        let (relay, _mock, key_id, key) =
            relay_with_key(&backend, json!({ "active_days": 2 })).await;
        let info = relay.key_info(&key).await;
        assert_eq!(info["first_used_at"], Value::Null);
        assert_eq!(info["expires_at"], Value::Null);
        // Unused for a month: the clock has not started.
        relay.app.clock.advance(Duration::from_secs(30 * 86_400));
        assert_eq!(call(&relay, &key, false).await.0, 200);
        let first = relay.app.clock.now_ms();
        let info = relay.key_info(&key).await;
        assert!(info["first_used_at"].is_string());
        relay
            .app
            .clock
            .advance(Duration::from_secs(2 * 86_400 - 60));
        assert_eq!(call(&relay, &key, false).await.0, 200);
        relay.app.clock.advance(Duration::from_secs(120));
        let (status, _, body) = call(&relay, &key, false).await;
        assert_eq!(status, 403, "{body}");
        assert_eq!(body["error"]["type"], "permission_error");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("2 days from its first use")
        );
        // The admin sees the same.
        let (_, admin) = relay
            .admin(Method::GET, &format!("/admin/keys/{key_id}"), None)
            .await;
        assert_eq!(admin["expired"], true);
        assert_eq!(admin["first_used_at"], info["first_used_at"]);
        assert!(relay.app.clock.now_ms() - first >= 2 * 86_400_000);
    }
}

/// `POST /admin/keys/{id}/rotate`: a new secret, shown once; the old one refused at once; the
/// key keeps its id, limits and their use. A change read before the rotation is refused (409)
/// rather than writing the old secret back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_secret_replaces_the_old_one_and_keeps_the_key() {
    for backend in backends() {
        let (relay, _mock, id, old) = relay_with_key(
            &backend,
            json!({ "window": { "seconds": 3600, "requests": 10 } }),
        )
        .await;
        assert_eq!(call(&relay, &old, false).await.0, 200);
        settled(&relay, &old).await;

        let (status, rotated) = relay
            .admin(Method::POST, &format!("/admin/keys/{id}/rotate"), None)
            .await;
        assert_eq!(status, 200, "{rotated}");
        let new = rotated["key"].as_str().unwrap().to_owned();
        assert!(new.starts_with("sy-") && new != old, "{rotated}");
        assert_eq!(rotated["id"], id.as_str());
        assert_eq!(rotated["limits"]["window"]["requests"], 10);
        // At once: no cache keeps the old secret.
        let (status, _, body) = call(&relay, &old, false).await;
        assert_eq!(status, 401, "{backend:?}: {body}");
        assert_eq!(call(&relay, &new, false).await.0, 200);
        let info = settled(&relay, &new).await;
        assert_eq!(info["usage"]["window_requests"]["used"], 2, "{backend:?}");
        let (_, shown) = relay
            .admin(Method::GET, &format!("/admin/keys/{id}"), None)
            .await;
        assert!(shown.get("key").is_none(), "{shown}");
        assert_eq!(shown["prefix"], rotated["prefix"]);

        // A change read before a rotation does not write the old secret back, and a rotation
        // read before a change (a disable) does not undo it.
        let stale = relay.app.store().key(&id).await.unwrap().unwrap();
        let (status, _) = relay
            .admin(Method::POST, &format!("/admin/keys/{id}/rotate"), None)
            .await;
        assert_eq!(status, 200);
        let renamed = switchyard::store::KeyRecord {
            name: "stale".to_owned(),
            ..stale.clone()
        };
        assert!(!relay.app.store().update_key(&renamed).await.unwrap());
        assert_eq!(call(&relay, &new, false).await.0, 401, "{backend:?}");
        let before_disable = relay.app.store().key(&id).await.unwrap().unwrap();
        let (status, _) = relay
            .admin(
                Method::PATCH,
                &format!("/admin/keys/{id}"),
                Some(json!({ "enabled": false })),
            )
            .await;
        assert_eq!(status, 200);
        let late_rotation = switchyard::store::KeyRecord {
            hash: "0".repeat(64),
            ..before_disable
        };
        assert!(!relay.app.store().update_key(&late_rotation).await.unwrap());
        let now = relay.app.store().key(&id).await.unwrap().unwrap();
        assert!(!now.enabled, "{backend:?}: the disable holds");
        let (status, body) = relay
            .admin(Method::POST, "/admin/keys/key_missing/rotate", None)
            .await;
        assert_eq!(status, 404, "{body}");
    }
}

/// `GET /admin/keys?with=usage`: every key with its limits' use, as each key's own view shows it
/// (the console's key list reads them in one call).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_key_list_shows_each_key_s_use_on_request() {
    for backend in backends() {
        let (relay, _mock, limited_id, key) = relay_with_key(
            &backend,
            json!({ "window": { "seconds": 3600, "requests": 10 }, "max_concurrency": 2 }),
        )
        .await;
        let (free_id, _) = create_key(&relay, json!({})).await;
        let sent = jiff::Timestamp::now();
        assert_eq!(call(&relay, &key, false).await.0, 200);
        settled(&relay, &key).await;

        // The request's log entry is recorded just after its lease is settled.
        let mut list = Value::Null;
        for _ in 0..100 {
            let (status, read) = relay
                .admin(Method::GET, "/admin/keys?with=usage", None)
                .await;
            assert_eq!(status, 200, "{read}");
            list = read;
            let used = list["data"]
                .as_array()
                .unwrap()
                .iter()
                .any(|k| k["id"] == limited_id.as_str() && k["last_used_at"].is_string());
            if used {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let data = list["data"].as_array().unwrap();
        let find = |id: &str| data.iter().find(|k| k["id"] == id).unwrap().clone();
        let limited = find(&limited_id);
        let last_used: jiff::Timestamp = limited["last_used_at"].as_str().unwrap().parse().unwrap();
        assert!(
            last_used
                >= sent
                    .checked_sub(jiff::SignedDuration::from_millis(1))
                    .unwrap()
                && last_used <= jiff::Timestamp::now(),
            "{limited}"
        );
        assert_eq!(find(&free_id)["last_used_at"], Value::Null, "{backend:?}");
        assert_eq!(limited["usage"]["window_requests"]["used"], 1, "{limited}");
        assert_eq!(limited["usage"]["window_requests"]["remaining"], 9);
        assert_eq!(limited["in_flight"], 0);
        let (_, one) = relay
            .admin(Method::GET, &format!("/admin/keys/{limited_id}"), None)
            .await;
        assert_eq!(limited, one, "{backend:?}");
        assert_eq!(find(&free_id)["usage"], json!({}), "{backend:?}");
        assert!(
            data.iter()
                .all(|k| k.get("hash").is_none() && k.get("key").is_none())
        );

        // Without it, the records alone; an unknown value is refused.
        let (_, plain) = relay.admin(Method::GET, "/admin/keys", None).await;
        assert!(plain["data"][0].get("usage").is_none(), "{plain}");
        assert!(plain["data"][0].get("last_used_at").is_none(), "{plain}");
        let (status, body) = relay
            .admin(Method::GET, "/admin/keys?with=everything", None)
            .await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(body["error"]["type"], "invalid_request_error");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_rules_refuse_in_each_surface_s_shape_and_change_live() {
    let (relay, mock, key_id, key) = relay_with_key(
        &Backend::Embedded,
        json!({ "blocked_models": ["claude-opus-*"], "allowed_clients": ["claude-code"] }),
    )
    .await;
    // Not Claude Code.
    let (status, _, body) = call(&relay, &key, false).await;
    assert_eq!(status, 403, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("claude-code")
    );
    let claude_code = |model: &str| {
        relay
            .messages(&key, &messages_body(model, false))
            .header("user-agent", "claude-cli/2.1.197 (external, sdk-cli)")
            .header("x-app", "cli")
    };
    assert_eq!(claude_code(MODEL).send().await.unwrap().status(), 200);
    let resp = claude_code("claude-opus-4-5").send().await.unwrap();
    assert_eq!(resp.status(), 403);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["type"], "permission_error");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("claude-opus-4-5")
    );
    assert_eq!(mock.served(), 1, "refused requests never reach upstream");

    // A merge patch changes one field and keeps the other; the next request sees it.
    let (status, v) = relay
        .admin(
            Method::PATCH,
            &format!("/admin/keys/{key_id}"),
            Some(json!({ "limits": { "allowed_clients": null, "max_concurrency": 5 } })),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        v["limits"],
        json!({ "max_concurrency": 5, "blocked_models": ["claude-opus-*"] })
    );
    assert_eq!(call(&relay, &key, false).await.0, 200);
    // Bad limits are refused with the field named.
    let (status, v) = relay
        .admin(
            Method::PATCH,
            &format!("/admin/keys/{key_id}"),
            Some(json!({ "limits": { "window": { "seconds": 5 } } })),
        )
        .await;
    assert_eq!(status, 400);
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("window.seconds"),
        "{v}"
    );
    // A limit of 0 would refuse every request (or let one a period through): refused, with
    // the way to block a key.
    for (patch, field) in [
        (json!({ "max_concurrency": 0 }), "max_concurrency"),
        (
            json!({ "window": { "seconds": 60, "requests": 0 } }),
            "window.requests",
        ),
    ] {
        let (status, v) = relay
            .admin(
                Method::PATCH,
                &format!("/admin/keys/{key_id}"),
                Some(json!({ "limits": patch })),
            )
            .await;
        assert_eq!(status, 400, "{v}");
        let message = v["error"]["message"].as_str().unwrap();
        assert!(message.contains(field), "{v}");
        assert!(message.contains("enabled: false"), "{v}");
    }
    let (status, v) = relay
        .admin(
            Method::POST,
            "/admin/keys",
            Some(json!({ "name": "blocked", "limits": { "max_concurrency": 0 } })),
        )
        .await;
    assert_eq!(status, 400, "{v}");
    let (status, v) = relay
        .admin(
            Method::PATCH,
            &format!("/admin/keys/{key_id}"),
            Some(json!({ "limits": { "daily_cost_nanousd": "lots" } })),
        )
        .await;
    assert_eq!(status, 400);
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("daily_cost_nanousd"),
        "{v}"
    );
    // Expired keys are refused, in the Anthropic shape.
    relay
        .admin(
            Method::PATCH,
            &format!("/admin/keys/{key_id}"),
            Some(json!({ "limits": { "expires_at": "2020-01-01T00:00:00Z" } })),
        )
        .await;
    let (status, _, body) = call(&relay, &key, false).await;
    assert_eq!(status, 403);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("expired at 2020-01-01T00:00:00Z")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_thousand_mixed_requests_no_lease_is_left_and_spend_equals_settled_costs() {
    for backend in backends() {
        // Accounting is under test, not health: with the default cooldown, a 500 reported
        // before any success cools the only account for 5 s, and the rest are 503s.
        let (relay, mock, key_id, key) = relay_with_key_on(
            &backend,
            |c| c.scheduler.failure_cooldown_secs = 0,
            json!({
                "max_concurrency": 64,
                "daily_cost_nanousd": 1_000_000_000_000u64,
                "total_cost_nanousd": 1_000_000_000_000u64,
                "window": { "seconds": 3600, "requests": 100_000, "tokens": 100_000_000 },
            }),
        )
        .await;
        let relay = Arc::new(relay);
        for i in 0..1000u32 {
            mock.push_behavior(match i % 8 {
                0 => Behavior::error(500, "api_error", "x"),
                1 => Behavior::error(400, "invalid_request_error", "x"),
                2 => Behavior::Slow {
                    usage: MockUsage::new(7, 5),
                    delay: Duration::from_millis(3),
                },
                _ => Behavior::Ok(MockUsage::new(3, 4)),
            });
        }
        let mut workers = Vec::new();
        for w in 0..16u32 {
            let relay = Arc::clone(&relay);
            let key = key.clone();
            workers.push(tokio::spawn(async move {
                let mut statuses = Vec::new();
                for i in 0..(1000 / 16 + 1) {
                    let stream = (i + w) % 2 == 0;
                    let resp = relay
                        .messages(&key, &messages_body(MODEL, stream))
                        .send()
                        .await
                        .unwrap();
                    statuses.push(resp.status().as_u16());
                    if (i + w) % 7 == 0 {
                        drop(resp); // the client goes away
                    } else {
                        let _ = resp.bytes().await;
                    }
                }
                statuses
            }));
        }
        let mut statuses = std::collections::BTreeMap::<u16, u32>::new();
        for w in workers {
            for status in w.await.unwrap() {
                *statuses.entry(status).or_default() += 1;
            }
        }
        // A pick may still race a 500's report by a millisecond and answer 503: a few at most.
        assert!(
            statuses.get(&200).is_some_and(|&n| n >= 600),
            "{backend:?}: {statuses:?}"
        );
        wait_until("the mock finished", || mock.in_flight() == 0).await;
        let info = settled(&relay, &key).await;
        let spent = info["usage"]["total_cost"]["used"].as_u64().unwrap();
        assert!(spent > 0, "{backend:?}: statuses {statuses:?}, {info}");
        assert_eq!(info["usage"]["daily_cost"]["used"].as_u64().unwrap(), spent);
        assert_eq!(spent, recorded_cost(&relay, &key_id).await, "{backend:?}");
        let requests = info["usage"]["window_requests"]["used"].as_u64().unwrap();
        assert!(requests > 0 && requests <= 1008, "{requests}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_on_one_redis_share_the_limits() {
    let Ok(url) = std::env::var("REDIS_URL") else {
        return;
    };
    let backend = Backend::Redis(url);
    let prefix = format!("sy-test-{:016x}:", rand::random::<u64>());
    let mock = MockUpstream::start().await;
    let a = Arc::new(Relay::start_on(&backend, |c| c.redis.prefix = prefix.clone()).await);
    let b = Arc::new(Relay::start_on(&backend, |c| c.redis.prefix = prefix.clone()).await);
    a.add_account(&mock, "sk-a", json!({})).await;
    let e = estimate(&a);
    let (_, key) = create_key(
        &a,
        json!({ "max_concurrency": 3, "total_cost_nanousd": 6 * e }),
    )
    .await;
    mock.set_default(Behavior::Slow {
        usage: MockUsage::new(1, 1),
        delay: Duration::from_millis(30),
    });
    let mut tasks = Vec::new();
    for i in 0..20 {
        let relay = Arc::clone(if i % 2 == 0 { &a } else { &b });
        let key = key.clone();
        tasks.push(tokio::spawn(
            async move { call(&relay, &key, true).await.0 },
        ));
    }
    let mut ok = 0;
    for t in tasks {
        match t.await.unwrap() {
            200 => ok += 1,
            429 => {}
            other => panic!("unexpected {other}"),
        }
    }
    assert!(ok >= 3);
    assert!(
        mock.max_in_flight() <= 3,
        "{} upstream at once across two instances",
        mock.max_in_flight()
    );
    // The budget: 6 reservations in total, whichever instance asks.
    let (_, key) = create_key(&b, json!({ "total_cost_nanousd": 4 * e })).await;
    mock.set_default(Behavior::Slow {
        usage: MockUsage::new(1, 1),
        delay: Duration::from_millis(80),
    });
    let mut tasks = Vec::new();
    for i in 0..20 {
        let relay = Arc::clone(if i % 2 == 0 { &a } else { &b });
        let key = key.clone();
        tasks.push(tokio::spawn(
            async move { call(&relay, &key, true).await.0 },
        ));
    }
    let mut admitted = 0;
    for t in tasks {
        if t.await.unwrap() == 200 {
            admitted += 1;
        }
    }
    assert!(
        (1..=4).contains(&admitted),
        "{admitted} admitted across two instances against 4"
    );
    let info = settled(&b, &key).await;
    assert_eq!(
        info["usage"]["total_cost"]["used"],
        a.key_info(&key).await["usage"]["total_cost"]["used"]
    );
}
