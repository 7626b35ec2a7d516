//! The scheduler end to end, on every store: account health from upstream answers, sticky
//! sessions, Retry-After when nothing can serve, and no lease left behind.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};

use crate::support::faulty_store::{Faults, FaultyStore};
use crate::support::mock::{Behavior, MockUpstream, MockUsage};
use crate::support::relay::{Backend, Relay, backends, messages_body};

fn usage() -> MockUsage {
    MockUsage {
        input: 2,
        output: 3,
        ..MockUsage::default()
    }
}

async fn state(relay: &Relay, account_id: &str) -> Value {
    let (status, v) = relay
        .admin(Method::GET, &format!("/admin/accounts/{account_id}"), None)
        .await;
    assert_eq!(status, 200, "{v}");
    v["state"].clone()
}

/// `a` preferred (priority 1), `b` behind it; short cooldowns.
async fn a_and_b(backend: &Backend) -> (Relay, MockUpstream, MockUpstream, String, String) {
    let a = MockUpstream::start().await;
    let b = MockUpstream::start().await;
    let relay = Relay::start_on(backend, |c| {
        c.scheduler.overload_cooldown_secs = 1;
        c.scheduler.failure_cooldown_secs = 1;
        c.scheduler.rate_limit_cooldown_secs = 1;
    })
    .await;
    let a_id = relay
        .add_account(&a, "sk-a", json!({ "priority": 1 }))
        .await;
    relay
        .add_account(&b, "sk-b", json!({ "priority": 2 }))
        .await;
    let (_, key) = relay.create_key("k").await;
    (relay, a, b, a_id, key)
}

/// A request of a session of its own (the same body every time would make one session of all,
/// bound to the account that served it).
async fn send(relay: &Relay, key: &str) -> u16 {
    static SESSIONS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let session = SESSIONS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let resp = relay
        .messages(key, &messages_body("claude-sonnet-4-5", false))
        .header("x-session-id", format!("one-off-{session}"))
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    resp.bytes().await.unwrap();
    status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_failure_moves_the_account_to_the_right_state_and_it_returns_on_its_own() {
    for backend in backends() {
        let (relay, a, b, a_id, key) = a_and_b(&backend).await;
        // (behaviour of a, expected status, how long it stays out)
        let cases = [
            (
                Behavior::rate_limited(2),
                "rate_limited",
                Duration::from_secs(2),
            ),
            (
                Behavior::overloaded(),
                "cooling_down",
                Duration::from_secs(1),
            ),
            (
                Behavior::error(500, "api_error", "boom"),
                "cooling_down",
                Duration::from_secs(1),
            ),
        ];
        for (behavior, expected, out_for) in cases {
            a.push_behavior(behavior);
            let marked = Instant::now();
            assert_eq!(
                send(&relay, &key).await,
                200,
                "{backend:?}: b serves instead"
            );
            let s = state(&relay, &a_id).await;
            assert_eq!(s["status"], expected, "{backend:?}: {s}");
            assert!(s["until"].is_string() && s["last_error"].is_string(), "{s}");
            // While out, b serves.
            let served_by_a = a.requests().len();
            assert_eq!(send(&relay, &key).await, 200);
            assert_eq!(
                a.requests().len(),
                served_by_a,
                "{backend:?}: {expected} account skipped"
            );
            // Then it returns on its own.
            tokio::time::sleep(
                out_for.saturating_sub(marked.elapsed()) + Duration::from_millis(150),
            )
            .await;
            assert_eq!(send(&relay, &key).await, 200);
            assert_eq!(
                a.requests().len(),
                served_by_a + 1,
                "{backend:?}: back after {expected}"
            );
            assert_eq!(state(&relay, &a_id).await["status"], "ok");
        }
        // Consecutive failures grow the cooldown; a success resets the streak.
        a.push_behavior(Behavior::error(502, "api_error", "x"));
        send(&relay, &key).await;
        assert_eq!(state(&relay, &a_id).await["consecutive_failures"], 1);
        tokio::time::sleep(Duration::from_millis(1_150)).await;
        a.push_behavior(Behavior::error(502, "api_error", "x"));
        send(&relay, &key).await;
        let s = state(&relay, &a_id).await;
        assert_eq!(s["consecutive_failures"], 2, "{s}");
        tokio::time::sleep(Duration::from_millis(2_150)).await;
        assert_eq!(send(&relay, &key).await, 200);
        assert_eq!(
            state(&relay, &a_id).await["consecutive_failures"],
            0,
            "a success resets the streak"
        );

        // 401: out until an admin resets it; the request goes to b (the client's key was fine).
        a.push_behavior(Behavior::error(
            401,
            "authentication_error",
            "invalid x-api-key",
        ));
        assert_eq!(
            send(&relay, &key).await,
            200,
            "{backend:?}: a 401 is failed over"
        );
        assert_eq!(state(&relay, &a_id).await["status"], "unauthorized");
        let before = a.requests().len();
        tokio::time::sleep(Duration::from_millis(1_200)).await;
        assert_eq!(send(&relay, &key).await, 200);
        assert_eq!(a.requests().len(), before, "still out");
        let (status, v) = relay
            .admin(Method::POST, &format!("/admin/accounts/{a_id}/reset"), None)
            .await;
        assert_eq!((status, v["state"]["status"].as_str()), (200, Some("ok")));
        assert_eq!(send(&relay, &key).await, 200);
        assert_eq!(
            a.requests().len(),
            before + 1,
            "serves again after the reset"
        );

        // Out of credit (Anthropic says so with a 400): failed over, and out for the longest
        // failure cooldown, not left in rotation to fail every request.
        a.push_behavior(Behavior::error(
            400,
            "invalid_request_error",
            "Your credit balance is too low to access the Anthropic API. Please go to Plans & Billing to upgrade or purchase credits.",
        ));
        assert_eq!(send(&relay, &key).await, 200, "{backend:?}: b serves");
        let s = state(&relay, &a_id).await;
        assert_eq!(s["status"], "cooling_down", "{backend:?}: {s}");
        relay
            .admin(Method::POST, &format!("/admin/accounts/{a_id}/reset"), None)
            .await;
        // A 403 another account does not give: the refusal was a's, which cools down (it would
        // otherwise fail at once, hold nothing in flight and be everyone's first pick).
        let before = a.requests().len();
        a.push_behavior(Behavior::error(
            403,
            "permission_error",
            "no access to this model",
        ));
        assert_eq!(send(&relay, &key).await, 200, "{backend:?}: b serves");
        assert_eq!(a.requests().len(), before + 1);
        assert_eq!(state(&relay, &a_id).await["status"], "cooling_down");
        relay
            .admin(Method::POST, &format!("/admin/accounts/{a_id}/reset"), None)
            .await;
        // A 403 every account gives (a file nobody here holds): the request's doing, and no
        // account is marked for it.
        a.push_behavior(Behavior::error(403, "permission_error", "no such file"));
        b.push_behavior(Behavior::error(403, "permission_error", "no such file"));
        assert_eq!(send(&relay, &key).await, 403, "{backend:?}");
        assert_eq!(state(&relay, &a_id).await["status"], "ok");

        // 400: the client's fault, the account is untouched.
        a.push_behavior(Behavior::error(400, "invalid_request_error", "bad"));
        assert_eq!(send(&relay, &key).await, 400);
        assert_eq!(state(&relay, &a_id).await["status"], "ok");
        assert!(b.requests().len() >= 5);
    }
}

#[tokio::test]
async fn a_refused_credential_is_not_passed_to_the_client_as_its_own() {
    let a = MockUpstream::start().await;
    let relay = Relay::start().await;
    let a_id = relay.add_account(&a, "sk-a", json!({})).await;
    let (_, key) = relay.create_key("k").await;
    // OpenAI's wording quotes part of the account's key.
    a.push_behavior(Behavior::error(
        401,
        "authentication_error",
        "Incorrect API key provided: sk-a****xyz",
    ));
    let resp = relay
        .messages(&key, &messages_body("claude-sonnet-4-5", false))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 502);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["type"], "api_error", "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("credentials") && !message.contains("sk-a"),
        "{message}"
    );
    assert_eq!(state(&relay, &a_id).await["status"], "unauthorized");
    // Logged with the status the client got.
    relay.app.stats.flush().await;
    let logged = relay.requests("").await;
    assert_eq!(logged[0]["status"], 502, "{logged:?}");

    // Nor is the vendor's word that the account is out of money: a 503 that says when to retry.
    relay
        .admin(Method::POST, &format!("/admin/accounts/{a_id}/reset"), None)
        .await;
    a.push_behavior(Behavior::error(
        400,
        "invalid_request_error",
        "Your credit balance is too low to access the Anthropic API. Please go to Plans & Billing to upgrade or purchase credits.",
    ));
    let resp = relay
        .messages(&key, &messages_body("claude-sonnet-4-5", false))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 503);
    assert!(resp.headers().contains_key("retry-after"));
    let body: Value = resp.json().await.unwrap();
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("out of credit"), "{message}");
    assert_eq!(state(&relay, &a_id).await["status"], "cooling_down");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_nothing_can_serve_503_says_when_to_retry() {
    for backend in backends() {
        let (relay, a, b, _, key) = a_and_b(&backend).await;
        a.push_behavior(Behavior::rate_limited(30));
        b.push_behavior(Behavior::rate_limited(9));
        assert_eq!(send(&relay, &key).await, 429, "the last upstream answer");
        let resp = relay
            .messages(&key, &messages_body("claude-sonnet-4-5", false))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 503);
        let retry: u64 = resp.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(
            (7..=9).contains(&retry),
            "{backend:?}: retry-after {retry}: the earliest recovery"
        );
        let v: Value = resp.json().await.unwrap();
        assert_eq!(v["type"], "error");
        let text = relay.metrics().await;
        assert!(
            text.contains("switchyard_account_status{account_id="),
            "account states in /metrics"
        );
        assert!(text.contains("status=\"rate_limited\"} 1"), "{backend:?}");
    }
}

/// A deleted account's series in `/metrics` read as gone (zeros), not as it last was.
#[tokio::test]
async fn a_deleted_account_is_no_longer_shown_serving_in_metrics() {
    let a = MockUpstream::start().await;
    let relay = Relay::start().await;
    let id = relay.add_account(&a, "sk-a", json!({})).await;
    let ok = |value: u8| {
        format!("switchyard_account_status{{account_id=\"{id}\",status=\"ok\"}} {value}")
    };
    let text = relay.metrics().await;
    assert!(text.contains(&ok(1)), "{text}");
    let (status, _) = relay
        .admin(Method::DELETE, &format!("/admin/accounts/{id}"), None)
        .await;
    assert!((200..300).contains(&status), "{status}");
    // The accounts' state is read at most once a second.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let text = relay.metrics().await;
    assert!(text.contains(&ok(0)) && !text.contains(&ok(1)), "{text}");
}

/// A Claude Code request with its session header.
async fn claude_code(relay: &Relay, key: &str, session: &str) -> u16 {
    let resp = relay
        .messages(key, &messages_body("claude-sonnet-4-5", true))
        .header("x-claude-code-session-id", session)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    resp.bytes().await.unwrap();
    status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_stays_on_one_account_and_moves_per_the_policy() {
    for backend in backends() {
        for overflow in ["escape", "move"] {
            let mocks = [
                MockUpstream::start().await,
                MockUpstream::start().await,
                MockUpstream::start().await,
            ];
            let relay = Relay::start_on(&backend, |c| {
                c.scheduler.sticky_overflow = if overflow == "move" {
                    switchyard::config::StickyOverflow::Move
                } else {
                    switchyard::config::StickyOverflow::Escape
                };
            })
            .await;
            for (i, m) in mocks.iter().enumerate() {
                relay.add_account(m, &format!("sk-{i}"), json!({})).await;
            }
            let (_, key) = relay.create_key("k").await;
            for _ in 0..20 {
                assert_eq!(claude_code(&relay, &key, "session-1").await, 200);
            }
            let counts: Vec<usize> = mocks.iter().map(|m| m.requests().len()).collect();
            let home = counts
                .iter()
                .position(|&n| n == 20)
                .unwrap_or_else(|| panic!("{backend:?}: session spread: {counts:?}"));
            // Without a session, requests rotate.
            for _ in 0..3 {
                send(&relay, &key).await;
            }
            assert!(mocks.iter().filter(|m| !m.requests().is_empty()).count() >= 2);

            // The home account gets rate limited for 2 s.
            mocks[home].push_behavior(Behavior::rate_limited(2));
            let limited_at = Instant::now();
            assert_eq!(claude_code(&relay, &key, "session-1").await, 200);
            let after_limit: Vec<usize> = mocks.iter().map(|m| m.requests().len()).collect();
            assert_eq!(claude_code(&relay, &key, "session-1").await, 200);
            let moved_to = (0..3)
                .find(|&i| i != home && mocks[i].requests().len() > after_limit[i])
                .unwrap_or_else(|| panic!("{backend:?} {overflow}: went nowhere"));
            tokio::time::sleep(
                Duration::from_secs(2).saturating_sub(limited_at.elapsed())
                    + Duration::from_millis(200),
            )
            .await;
            let before: Vec<usize> = mocks.iter().map(|m| m.requests().len()).collect();
            for _ in 0..3 {
                assert_eq!(claude_code(&relay, &key, "session-1").await, 200);
            }
            let went: Vec<usize> = (0..3)
                .map(|i| mocks[i].requests().len() - before[i])
                .collect();
            if overflow == "escape" {
                assert_eq!(
                    went[home], 3,
                    "{backend:?}: escape keeps the binding: back home {went:?}"
                );
            } else {
                assert_eq!(
                    went[moved_to], 3,
                    "{backend:?}: move rebinds: stays on the new account {went:?}"
                );
            }
        }
    }
}

/// Under either policy, a session's request for a model its account does not serve goes
/// elsewhere and leaves the binding: Claude Code's small-model calls in a session bound to an
/// Opus-only account do not take the session, and its prompt cache, away from it (`move` moves
/// a session only from an account that cannot serve what it serves).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_the_bound_account_does_not_serve_leaves_the_session_where_it_is() {
    use switchyard::config::StickyOverflow;
    for (backend, overflow) in backends().into_iter().flat_map(|b| {
        [
            (b.clone(), StickyOverflow::Escape),
            (b, StickyOverflow::Move),
        ]
    }) {
        let (opus, any) = (MockUpstream::start().await, MockUpstream::start().await);
        let relay = Relay::start_on(&backend, |c| c.scheduler.sticky_overflow = overflow).await;
        relay
            .add_account(
                &opus,
                "sk-o",
                json!({ "models": ["claude-opus-*"], "priority": 2 }),
            )
            .await;
        relay
            .add_account(&any, "sk-a", json!({ "priority": 2 }))
            .await;
        let (_, key) = relay.create_key("k").await;
        let turn = |model: &'static str| {
            let relay = &relay;
            let key = &key;
            async move {
                let resp = relay
                    .messages(key, &messages_body(model, false))
                    .header("x-claude-code-session-id", "session-o")
                    .send()
                    .await
                    .unwrap();
                let status = resp.status().as_u16();
                resp.bytes().await.unwrap();
                status
            }
        };
        // Both serve Opus, the Opus account first: the session is bound to it; only the other
        // serves Haiku.
        assert_eq!(turn("claude-opus-4-5").await, 200);
        assert_eq!(turn("claude-haiku-4-5").await, 200);
        assert_eq!(turn("claude-opus-4-5").await, 200);
        assert_eq!(turn("claude-haiku-4-5").await, 200);
        assert_eq!(turn("claude-opus-4-5").await, 200);
        assert_eq!(
            (opus.requests().len(), any.requests().len()),
            (3, 2),
            "{backend:?} {overflow:?}: the Opus turns stay on the Opus account"
        );
    }
}

/// A new session whose first account fails it is bound where it was served (its prompt cache
/// is there), also under `escape`, which keeps an existing binding.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_session_failed_over_is_bound_where_it_was_served() {
    for backend in backends() {
        let (relay, a, b, _, key) = a_and_b(&backend).await;
        a.push_behavior(Behavior::error(500, "api_error", "boom"));
        assert_eq!(claude_code(&relay, &key, "fresh-session").await, 200);
        assert_eq!((a.requests().len(), b.requests().len()), (1, 1));
        // a is back (1 s cooldown) and preferred, but the session stays on b.
        tokio::time::sleep(Duration::from_millis(1_200)).await;
        for _ in 0..3 {
            assert_eq!(claude_code(&relay, &key, "fresh-session").await, 200);
        }
        assert_eq!(
            (a.requests().len(), b.requests().len()),
            (1, 4),
            "{backend:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_thousand_mixed_requests_nothing_is_left_in_flight() {
    for backend in backends() {
        let mocks = [MockUpstream::start().await, MockUpstream::start().await];
        let relay = Arc::new(
            Relay::start_on(&backend, |c| {
                c.scheduler.failure_cooldown_secs = 0;
                c.scheduler.overload_cooldown_secs = 0;
                c.scheduler.rate_limit_cooldown_secs = 0;
            })
            .await,
        );
        let mut ids = Vec::new();
        for (i, m) in mocks.iter().enumerate() {
            ids.push(
                relay
                    .add_account(m, &format!("sk-{i}"), json!({ "max_concurrency": 50 }))
                    .await,
            );
        }
        let (_, key) = relay.create_key("k").await;
        for i in 0..1000u32 {
            let behavior = match i % 10 {
                0 => Behavior::error(500, "api_error", "x"),
                1 => Behavior::error(400, "invalid_request_error", "x"),
                2 => Behavior::rate_limited(0),
                3 => Behavior::overloaded(),
                4 => Behavior::Slow {
                    usage: usage(),
                    delay: Duration::from_millis(5),
                },
                _ => Behavior::Ok(usage()),
            };
            mocks[(i % 2) as usize].push_behavior(behavior);
        }
        let mut workers = Vec::new();
        for w in 0..16u32 {
            let relay = Arc::clone(&relay);
            let key = key.clone();
            workers.push(tokio::spawn(async move {
                for i in 0..(1000 / 16 + 1) {
                    let stream = (i + w) % 2 == 0;
                    let resp = relay
                        .messages(&key, &messages_body("claude-sonnet-4-5", stream))
                        .send()
                        .await
                        .unwrap();
                    if (i + w) % 7 == 0 {
                        drop(resp); // the client goes away
                    } else {
                        let _ = resp.bytes().await;
                    }
                }
            }));
        }
        for w in workers {
            w.await.unwrap();
        }
        for id in &ids {
            let mut in_flight = u32::MAX;
            for _ in 0..300 {
                in_flight = relay.account_in_flight(id).await;
                if in_flight == 0 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            assert_eq!(in_flight, 0, "{backend:?}: account {id} still has leases");
        }
        assert!(mocks.iter().all(|m| m.in_flight() == 0));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_bound_to_dedicated_accounts_fails_or_falls_back_as_configured() {
    for backend in backends() {
        let shared = MockUpstream::start().await;
        let team = MockUpstream::start().await;
        let relay = Relay::start_on(&backend, |_| {}).await;
        relay
            .add_account(&shared, "sk-shared", json!({ "priority": 1 }))
            .await;
        let team_id = relay
            .add_account(&team, "sk-team", json!({ "priority": 9, "group": "team" }))
            .await;
        let (strict_id, strict) = relay.create_key("strict").await;
        let (loose_id, loose) = relay.create_key("loose").await;
        let (status, v) = relay
            .admin(
                Method::PATCH,
                &format!("/admin/keys/{strict_id}"),
                Some(json!({ "binding": { "group": "team" } })),
            )
            .await;
        assert_eq!(status, 200, "{v}");
        assert_eq!(v["binding"]["group"], "team");
        relay
            .admin(
                Method::PATCH,
                &format!("/admin/keys/{loose_id}"),
                Some(json!({ "binding": { "accounts": [team_id], "fallback": true } })),
            )
            .await;
        // Bound keys go to their account although the shared one has a better priority.
        for key in [&strict, &loose] {
            assert_eq!(send(&relay, key).await, 200);
        }
        assert_eq!(
            (team.requests().len(), shared.requests().len()),
            (2, 0),
            "{backend:?}"
        );
        // The team account goes out: strict keys get 503, loose ones the shared pool.
        relay
            .admin(
                Method::PATCH,
                &format!("/admin/accounts/{team_id}"),
                Some(json!({ "schedulable": false })),
            )
            .await;
        let resp = relay
            .messages(&strict, &messages_body("claude-sonnet-4-5", false))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 503);
        let v: Value = resp.json().await.unwrap();
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap()
                .contains("dedicated"),
            "{v}"
        );
        assert_eq!(send(&relay, &loose).await, 200);
        assert_eq!(
            shared.requests().len(),
            1,
            "{backend:?}: fell back to the shared pool"
        );
        let (status, _) = relay
            .admin(
                Method::PATCH,
                &format!("/admin/keys/{strict_id}"),
                Some(json!({ "binding": {} })),
            )
            .await;
        assert_eq!(status, 400, "an empty binding is refused");
        // So is one to accounts or a group that do not exist: the key would get 503 forever.
        for (binding, named) in [
            (json!({ "accounts": [team_id, "acct_nope"] }), "acct_nope"),
            (json!({ "group": "teem" }), "teem"),
        ] {
            let (status, v) = relay
                .admin(
                    Method::PATCH,
                    &format!("/admin/keys/{strict_id}"),
                    Some(json!({ "binding": binding })),
                )
                .await;
            assert_eq!(status, 400, "{v}");
            let message = v["error"]["message"].as_str().unwrap();
            assert!(message.contains(named), "{v}");
            assert!(!message.contains(&team_id), "only the unknown: {v}");
        }
        let (status, v) = relay
            .admin(
                Method::POST,
                "/admin/keys",
                Some(json!({ "name": "lost", "binding": { "accounts": ["acct_nope"] } })),
            )
            .await;
        assert_eq!(status, 400, "{v}");
        let (_, keys) = relay.admin(Method::GET, "/admin/keys", None).await;
        assert_eq!(keys["data"].as_array().unwrap().len(), 2, "{keys}");
    }
}

/// Deleting an account, or moving it out of a group, that would leave a key bound to nothing
/// (no account it names left, no account in its group) is refused with 409 naming the keys, as
/// binding a key to nothing is: every request of such a key would be answered 503. A key with
/// `fallback` does not hold the change back; nor does one rebound elsewhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_change_that_would_leave_a_key_bound_to_nothing_is_refused() {
    for backend in backends() {
        let team = MockUpstream::start().await;
        let other = MockUpstream::start().await;
        let relay = Relay::start_on(&backend, |_| {}).await;
        let team_id = relay
            .add_account(&team, "sk-team", json!({ "group": "team" }))
            .await;
        let other_id = relay.add_account(&other, "sk-other", json!({})).await;
        let (by_id, by_id_secret) = relay.create_key("by id").await;
        let (by_group, _) = relay.create_key("by group").await;
        // A disabled key holds the change back too: enabled again, it would be bound to nothing.
        let (disabled, _) = relay.create_key("disabled").await;
        for (key, binding) in [
            (&by_id, json!({ "accounts": [team_id] })),
            (&by_group, json!({ "group": "team" })),
            (&disabled, json!({ "accounts": [team_id] })),
        ] {
            let (status, v) = relay
                .admin(
                    Method::PATCH,
                    &format!("/admin/keys/{key}"),
                    Some(json!({ "binding": binding })),
                )
                .await;
            assert_eq!(status, 200, "{backend:?}: {v}");
        }
        let (status, v) = relay
            .admin(
                Method::PATCH,
                &format!("/admin/keys/{disabled}"),
                Some(json!({ "enabled": false })),
            )
            .await;
        assert_eq!(status, 200, "{backend:?}: {v}");
        let account = format!("/admin/accounts/{team_id}");
        let refused = |v: &Value, named: &[&String], not: &[&String]| {
            assert_eq!(v["error"]["type"], "invalid_request_error", "{v}");
            let message = v["error"]["message"].as_str().unwrap();
            for key in named {
                assert!(message.contains(key.as_str()), "{backend:?}: {key}: {v}");
            }
            for key in not {
                assert!(!message.contains(key.as_str()), "{backend:?}: {key}: {v}");
            }
        };

        // Out of its group: the key bound by group would have none; the one by id keeps it.
        let (status, v) = relay
            .admin(
                Method::PATCH,
                &account,
                Some(json!({ "group": "elsewhere", "priority": 7 })),
            )
            .await;
        assert_eq!(status, 409, "{backend:?}: {v}");
        refused(&v, &[&by_group], &[&by_id]);
        let (status, v) = relay
            .admin(Method::PATCH, &account, Some(json!({ "group": null })))
            .await;
        assert_eq!(status, 409, "{backend:?}: {v}");
        // Nothing of the refused change was written.
        let (_, v) = relay.admin(Method::GET, &account, None).await;
        assert_eq!((&v["group"], &v["priority"]), (&json!("team"), &json!(50)));
        // Deleted: both would have nothing.
        let (status, v) = relay.admin(Method::DELETE, &account, None).await;
        assert_eq!(status, 409, "{backend:?}: {v}");
        refused(&v, &[&by_id, &by_group], &[]);
        assert_eq!(relay.admin(Method::GET, &account, None).await.0, 200);
        assert_eq!(send(&relay, &by_id_secret).await, 200, "{backend:?}");

        // With fallback, the key bound by group goes to the shared pool: the regroup passes.
        let (status, v) = relay
            .admin(
                Method::PATCH,
                &format!("/admin/keys/{by_group}"),
                Some(json!({ "binding": { "group": "team", "fallback": true } })),
            )
            .await;
        assert_eq!(status, 200, "{backend:?}: {v}");
        let (status, v) = relay
            .admin(
                Method::PATCH,
                &account,
                Some(json!({ "group": "elsewhere" })),
            )
            .await;
        assert_eq!(status, 200, "{backend:?}: {v}");
        // The key bound by id still holds the delete back, until it is rebound.
        let (status, v) = relay.admin(Method::DELETE, &account, None).await;
        assert_eq!(status, 409, "{backend:?}: {v}");
        refused(&v, &[&by_id, &disabled], &[&by_group]);
        for key in [&by_id, &disabled] {
            let (status, v) = relay
                .admin(
                    Method::PATCH,
                    &format!("/admin/keys/{key}"),
                    Some(json!({ "binding": { "accounts": [team_id, other_id] } })),
                )
                .await;
            assert_eq!(status, 200, "{backend:?}: {v}");
        }
        let (status, v) = relay.admin(Method::DELETE, &account, None).await;
        assert_eq!(status, 200, "{backend:?}: {v}");
        assert_eq!(send(&relay, &by_id_secret).await, 200, "{backend:?}");
        assert_eq!(other.requests().len(), 1, "{backend:?}");
    }
}

/// A bound key whose pick failed on a store error gets that error: no fallback to the shared
/// pool (the failed call's leases are given back under the ids a fallback would take its own
/// with), and no word of its dedicated accounts being unavailable. The store error is injected
/// before the real store is asked, so a fallback, were one made, would be served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bound_key_does_not_fall_back_after_a_store_error() {
    for backend in backends() {
        let faults = Arc::new(Faults::default());
        let shared = MockUpstream::start().await;
        let team = MockUpstream::start().await;
        let relay = Relay::start_on_wrapped(
            &backend,
            |_| {},
            |store| FaultyStore::wrap(store, Arc::clone(&faults)),
        )
        .await;
        // The shared account is preferred: a fallback would go to it.
        let shared_id = relay
            .add_account(&shared, "sk-shared", json!({ "priority": 1 }))
            .await;
        let team_id = relay
            .add_account(&team, "sk-team", json!({ "priority": 9, "group": "team" }))
            .await;
        // One request at a time and a daily budget: a lease or a reservation left behind shows.
        let limits = json!({ "max_concurrency": 1, "daily_cost_nanousd": 1_000_000_000 });
        let mut keys = Vec::new();
        for (name, binding) in [
            ("loose", json!({ "accounts": [team_id], "fallback": true })),
            ("strict", json!({ "group": "team" })),
        ] {
            let (status, v) = relay
                .admin(
                    Method::POST,
                    "/admin/keys",
                    Some(json!({ "name": name, "limits": limits, "binding": binding })),
                )
                .await;
            assert_eq!(status, 201, "{v}");
            keys.push(v["key"].as_str().unwrap().to_owned());
        }

        for key in &keys {
            faults.fail_next_pick();
            let picks = faults.picks();
            let resp = relay
                .messages(key, &messages_body("claude-sonnet-4-5", false))
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 503, "{backend:?}");
            assert!(resp.headers().get("retry-after").is_none(), "{backend:?}");
            let v: Value = resp.json().await.unwrap();
            assert_eq!(
                v,
                json!({
                    "type": "error",
                    "error": {
                        "type": "api_error",
                        "message": "the store is unavailable: store unavailable: injected by the \
                                    test: the pick failed",
                    },
                }),
                "{backend:?}"
            );
            assert_eq!(
                faults.picks(),
                picks + 1,
                "{backend:?}: one pick, no fallback"
            );
        }
        assert_eq!(
            (shared.requests().len(), team.requests().len()),
            (0, 0),
            "{backend:?}: no account was called"
        );

        // Nothing left behind: no account lease, no key lease or reservation, no usage record.
        for id in [&shared_id, &team_id] {
            assert_eq!(relay.account_in_flight(id).await, 0, "{backend:?}: {id}");
        }
        for key in &keys {
            let mut info = relay.key_info(key).await;
            // A remote store's give-back of a failed call runs on a task of its own.
            for _ in 0..100 {
                if info["in_flight"] == 0 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
                info = relay.key_info(key).await;
            }
            assert_eq!(info["in_flight"], 0, "{backend:?}: {info}");
            for (bucket, usage) in info["usage"].as_object().unwrap() {
                assert_eq!(usage["reserved"], 0, "{backend:?}: {bucket}: {info}");
                assert_eq!(usage["used"], 0, "{backend:?}: {bucket}: {info}");
            }
        }
        relay.app.stats.flush().await;
        assert!(relay.requests("").await.is_empty(), "{backend:?}");
        assert_eq!(relay.usage("").await["requests"], 0, "{backend:?}");

        // The store answers again: each key is served by its own account.
        for key in &keys {
            assert_eq!(send(&relay, key).await, 200, "{backend:?}");
        }
        assert_eq!(
            (team.requests().len(), shared.requests().len()),
            (2, 0),
            "{backend:?}"
        );
    }
}
