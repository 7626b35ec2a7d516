//! Notices to the operators (`notify.webhook_url`): an account's credential refused, a failure
//! streak and its end, a whole account rate limited, an OAuth grant that needs a new login;
//! each told once, as JSON or as a chat message, and tried again when the webhook fails.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use reqwest::Method;
use serde_json::{Value, json};

use crate::support::mock::{Behavior, MockUpstream, MockUsage, wait_until};
use crate::support::relay::Relay;
use crate::support::token_endpoint::TokenEndpoint;

/// A webhook on 127.0.0.1:0: records each body it is sent (JSON), and answers the statuses it
/// is given, in turn, then 200.
pub(crate) struct Hook {
    addr: SocketAddr,
    bodies: Arc<Mutex<Vec<Value>>>,
    statuses: Arc<Mutex<VecDeque<u16>>>,
}

impl Hook {
    pub(crate) async fn start() -> Hook {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let statuses = Arc::new(Mutex::new(VecDeque::new()));
        let (seen, answers) = (Arc::clone(&bodies), Arc::clone(&statuses));
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (seen, answers) = (Arc::clone(&seen), Arc::clone(&answers));
                tokio::spawn(async move {
                    let service = service_fn(move |req: http::Request<Incoming>| {
                        let (seen, answers) = (Arc::clone(&seen), Arc::clone(&answers));
                        async move {
                            assert_eq!(req.uri().path(), "/hook");
                            assert_eq!(req.headers()["content-type"], "application/json");
                            let body = req.into_body().collect().await.unwrap().to_bytes();
                            seen.lock()
                                .unwrap()
                                .push(serde_json::from_slice::<Value>(&body).unwrap());
                            let status = answers.lock().unwrap().pop_front().unwrap_or(200);
                            let mut resp = http::Response::new(Full::new(bytes::Bytes::new()));
                            *resp.status_mut() = http::StatusCode::from_u16(status).unwrap();
                            Ok::<_, Infallible>(resp)
                        }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Hook {
            addr,
            bodies,
            statuses,
        }
    }

    pub(crate) fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    fn bodies(&self) -> Vec<Value> {
        self.bodies.lock().unwrap().clone()
    }

    /// The bodies once there are `n` of them, after a moment more in which no other came.
    pub(crate) async fn exactly(&self, n: usize) -> Vec<Value> {
        wait_until("the notices come", || self.bodies().len() >= n).await;
        tokio::time::sleep(Duration::from_millis(150)).await;
        let bodies = self.bodies();
        assert_eq!(bodies.len(), n, "{bodies:#?}");
        bodies
    }
}

async fn ask(relay: &Relay, key: &str) -> u16 {
    let resp = relay.ask(key).await;
    let status = resp.status().as_u16();
    resp.bytes().await.unwrap();
    status
}

#[tokio::test]
async fn an_account_refused_its_credential_is_told_once_per_refusal() {
    let hook = Hook::start().await;
    let mock = MockUpstream::start().await;
    mock.require_api_key("sk-right");
    let relay = Relay::start_configured(|c| c.notify.webhook_url = Some(hook.url())).await;
    let id = relay
        .add_account(&mock, "sk-wrong", json!({ "name": "team-main" }))
        .await;
    let (_, key) = relay.create_key("k").await;
    assert_eq!(ask(&relay, &key).await, 502);
    // Out of rotation now: asked again, nothing new to tell.
    assert_eq!(ask(&relay, &key).await, 503);
    let bodies = hook.exactly(1).await;
    let notice = &bodies[0];
    assert_eq!(notice["event"], "account_unauthorized");
    assert_eq!(
        notice["account"],
        json!({ "id": id, "name": "team-main", "provider": "anthropic" })
    );
    assert_eq!(notice["detail"], "upstream answered 401 Unauthorized");
    assert_eq!(notice["until"], Value::Null);
    let text = notice["text"].as_str().unwrap();
    assert!(
        text.starts_with(&format!(
            "Switchyard account \"team-main\" (anthropic, {id}): the vendor refused its credential"
        )),
        "{text}"
    );
    // The account's credential is nowhere in it.
    assert!(!notice.to_string().contains("sk-wrong"));

    // Reset, and refused again: told again (a change each time, however soon).
    let (status, _) = relay
        .admin(Method::POST, &format!("/admin/accounts/{id}/reset"), None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(ask(&relay, &key).await, 502);
    let bodies = hook.exactly(2).await;
    assert_eq!(bodies[1]["event"], "account_unauthorized");
    // Counted as sent (the recorder is the process's: other tests' notices count too).
    let metrics = relay.metrics().await;
    let sent = metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix(
                "switchyard_notices_total{event=\"account_unauthorized\",outcome=\"sent\"} ",
            )
        })
        .and_then(|n| n.parse::<u64>().ok());
    assert!(sent.is_some_and(|n| n >= 2), "{metrics}");
}

#[tokio::test]
async fn a_failure_streak_and_its_end_are_told_as_slack_messages_tried_again_on_failure() {
    let hook = Hook::start().await;
    // The webhook fails the first try.
    hook.statuses.lock().unwrap().push_back(503);
    let mock = MockUpstream::start().await;
    mock.set_default(Behavior::error(500, "api_error", "boom"));
    let relay = Relay::start_configured(|c| {
        c.notify.webhook_url = Some(hook.url());
        c.notify.format = switchyard::notify::Format::Slack;
        c.notify.failures = 2;
        c.scheduler.max_attempts = 1;
        // Each failure's cooldown over at once: the next request finds the account again.
        c.scheduler.failure_cooldown_secs = 0;
    })
    .await;
    let id = relay
        .add_account(&mock, "sk-a", json!({ "name": "flaky" }))
        .await;
    let (_, key) = relay.create_key("k").await;
    // A failure, and the success after it (reported: the account was not clean): no streak,
    // nothing told.
    assert_eq!(ask(&relay, &key).await, 500);
    mock.set_default(Behavior::Ok(MockUsage::default()));
    assert_eq!(ask(&relay, &key).await, 200);
    assert!(hook.bodies().is_empty());
    mock.set_default(Behavior::error(500, "api_error", "boom"));
    for _ in 0..3 {
        assert_eq!(ask(&relay, &key).await, 500);
    }
    // Told at the second failure, not the first or third; the refused try sent again.
    let bodies = hook.exactly(2).await;
    assert_eq!(bodies[0], bodies[1]);
    let text = bodies[0]["text"].as_str().unwrap();
    assert_eq!(bodies[0], json!({ "text": text }));
    assert!(
        text.starts_with(&format!(
            "Switchyard account \"flaky\" (anthropic, {id}): failing (upstream answered 500 \
             Internal Server Error); cooling down until 20"
        )),
        "{text}"
    );

    mock.set_default(Behavior::Ok(MockUsage::default()));
    assert_eq!(ask(&relay, &key).await, 200);
    let bodies = hook.exactly(3).await;
    assert_eq!(
        bodies[2]["text"],
        format!(
            "Switchyard account \"flaky\" (anthropic, {id}): serving again after a failure streak"
        )
    );
    // A streak again: told again.
    mock.set_default(Behavior::error(500, "api_error", "boom"));
    for _ in 0..2 {
        assert_eq!(ask(&relay, &key).await, 500);
    }
    let bodies = hook.exactly(4).await;
    assert!(bodies[3]["text"].as_str().unwrap().contains("failing"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_out_of_credit_is_told_once_however_many_requests_found_it_so() {
    let hook = Hook::start().await;
    let mock = MockUpstream::start().await;
    mock.set_default(Behavior::error(
        400,
        "invalid_request_error",
        "Your credit balance is too low to access the Anthropic API. Please go to Plans & \
         Billing to upgrade or purchase credits.",
    ));
    let relay = Arc::new(
        Relay::start_configured(|c| {
            c.notify.webhook_url = Some(hook.url());
            // Held to one by the change it is, not by the repeat window.
            c.notify.repeat_after_secs = 0;
        })
        .await,
    );
    let id = relay
        .add_account(&mock, "sk-a", json!({ "name": "prepaid" }))
        .await;
    let (_, key) = relay.create_key("k").await;
    // All of them reach the account before its first answer: their reports race.
    mock.delay_answers(Duration::from_millis(300));
    let mut asks = Vec::new();
    for _ in 0..8 {
        let (relay, key) = (Arc::clone(&relay), key.clone());
        asks.push(tokio::spawn(async move { ask(&relay, &key).await }));
    }
    for a in asks {
        assert_eq!(a.await.unwrap(), 503);
    }
    assert!(mock.requests().len() >= 2, "the reports raced");
    let notice = hook.exactly(1).await.remove(0);
    assert_eq!(notice["event"], "account_out_of_credit");
    assert_eq!(notice["account"]["id"], id);
    assert!(notice["until"].is_string(), "{notice}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limited_account_and_a_refused_grant_are_told_only_as_asked() {
    let hook = Hook::start().await;
    let mock = MockUpstream::start().await;
    mock.set_default(Behavior::RateLimited {
        retry_after_secs: 120,
    });
    let tokens = TokenEndpoint::start().await;
    let relay = Relay::start_configured(|c| {
        c.notify.webhook_url = Some(hook.url());
        c.notify.events = vec![
            switchyard::notify::Event::AccountRateLimited,
            switchyard::notify::Event::AccountUnauthorized,
            switchyard::notify::Event::OAuthGrantRefused,
        ];
        c.upstream.oauth_check_ms = 50;
        // A single failure would be a streak: not told, since not asked for.
        c.notify.failures = 1;
    })
    .await;
    let limited = relay
        .add_account(&mock, "sk-a", json!({ "name": "busy" }))
        .await;
    let (_, key) = relay.create_key("k").await;
    let before = jiff::Timestamp::now();
    assert_eq!(ask(&relay, &key).await, 429);
    let notice = hook.exactly(1).await.remove(0);
    assert_eq!(notice["event"], "account_rate_limited");
    assert_eq!(notice["account"]["id"], limited);
    let until: jiff::Timestamp = notice["until"].as_str().unwrap().parse().unwrap();
    let secs = (until - before).total(jiff::Unit::Second).unwrap();
    assert!((118.0..=122.0).contains(&secs), "{secs}");

    // A grant whose refresh token is spent: a new login is needed.
    let mut grant = tokens.grant();
    grant["refresh_token"] = json!("rt-spent");
    let other = MockUpstream::start().await;
    other.require_api_key("at-valid");
    let expired = relay
        .add_account(
            &other,
            "at-0",
            json!({ "name": "max-plan", "oauth": grant }),
        )
        .await;
    let bodies = hook.exactly(2).await;
    assert_eq!(bodies[1]["event"], "oauth_grant_refused");
    assert_eq!(bodies[1]["account"]["id"], expired);
    assert_eq!(
        bodies[1]["detail"],
        "400 Bad Request: invalid_grant: refresh token already used"
    );
    assert!(
        bodies[1]["text"]
            .as_str()
            .unwrap()
            .ends_with("it needs a new login"),
        "{}",
        bodies[1]
    );
    assert!(!bodies[1].to_string().contains("rt-spent"));

    // Its token refused by the vendor: a subscription's refusal is not told (it starts a
    // renewal; the grant's refusal was).
    assert_eq!(ask(&relay, &key).await, 502);
    let state = &relay
        .admin(Method::GET, &format!("/admin/accounts/{expired}"), None)
        .await
        .1["state"];
    assert_eq!(state["status"], "unauthorized");
    hook.exactly(2).await;

    // An event not asked for is not told: another account's failure streak.
    let failing = MockUpstream::start().await;
    failing.set_default(Behavior::error(500, "api_error", "boom"));
    let (status, _) = relay
        .admin(
            Method::PATCH,
            &format!("/admin/accounts/{expired}"),
            Some(json!({ "enabled": false })),
        )
        .await;
    assert_eq!(status, 200);
    relay.add_account(&failing, "sk-f", json!({})).await;
    for _ in 0..3 {
        ask(&relay, &key).await;
    }
    hook.exactly(2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_sharing_a_store_tell_a_change_once() {
    let Ok(url) = std::env::var("REDIS_URL") else {
        return;
    };
    let hook = Hook::start().await;
    let mock = MockUpstream::start().await;
    mock.require_api_key("sk-right");
    let prefix = crate::redis::unique_prefix();
    let mut relays = Vec::new();
    for _ in 0..2 {
        let (mut config, tmp) = crate::redis::redis_config(&url, &prefix);
        config.notify.webhook_url = Some(hook.url());
        config.notify.repeat_after_secs = 0;
        relays.push(Arc::new(Relay::start_with(config, Some(tmp)).await));
    }
    let id = relays[0].add_account(&mock, "sk-wrong", json!({})).await;
    wait_until("the other instance learns of the account", || {
        relays[1]
            .app
            .catalog
            .accounts()
            .iter()
            .any(|a| a.id() == id)
    })
    .await;
    let (_, key) = relays[0].create_key("k").await;
    // Requests on both instances at once: several are refused, and reported, before the first
    // report takes the account out of rotation.
    let mut asks = Vec::new();
    for i in 0..16 {
        let (relay, key) = (Arc::clone(&relays[i % 2]), key.clone());
        asks.push(tokio::spawn(async move { ask(&relay, &key).await }));
    }
    let mut refused = 0;
    for a in asks {
        if a.await.unwrap() == 502 {
            refused += 1;
        }
    }
    assert!(refused >= 2, "{refused} requests reached the account");
    let bodies = hook.exactly(1).await;
    assert_eq!(bodies[0]["event"], "account_unauthorized");
    assert_eq!(bodies[0]["account"]["id"], id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_refused_and_not_renewed_three_times_is_told_once() {
    let hook = Hook::start().await;
    let mock = MockUpstream::start().await;
    // The vendor takes only a token the endpoint never manages to issue.
    mock.require_api_key("at-new");
    let tokens = TokenEndpoint::start().await;
    for _ in 0..4 {
        tokens.script(503, json!({ "error": "temporarily_unavailable" }));
    }
    let relay = Relay::start_configured(|c| c.notify.webhook_url = Some(hook.url())).await;
    let mut grant = tokens.grant();
    grant["expires_at"] =
        json!((jiff::Timestamp::now() + jiff::SignedDuration::from_hours(1)).to_string());
    let id = relay
        .add_account(&mock, "at-0", json!({ "name": "max-plan", "oauth": grant }))
        .await;
    let (_, key) = relay.create_key("k").await;
    // Refused: a renewal starts at once, and fails.
    assert_eq!(ask(&relay, &key).await, 502);
    wait_until("the renewal is tried", || !tokens.requests().is_empty()).await;
    // Told of nothing yet: a refused subscription is usually renewed.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(hook.bodies().is_empty());
    // Two more failed renewals (asked for now, not ten seconds on).
    for _ in 0..3 {
        let (status, _) = relay
            .admin(Method::POST, &format!("/admin/accounts/{id}/refresh"), None)
            .await;
        assert_eq!(status, 502);
    }
    // Told once, at the third failure, not the fourth.
    let bodies = hook.exactly(1).await;
    assert_eq!(bodies[0]["event"], "account_unauthorized");
    assert_eq!(bodies[0]["account"]["id"], id);
    let detail = bodies[0]["detail"].as_str().unwrap();
    assert!(
        detail.starts_with("its token was refused, and 3 renewals in a row failed"),
        "{detail}"
    );
    assert!(!detail.contains("rt-0"), "{detail}");
}
