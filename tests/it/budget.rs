//! Account budgets: what an upstream account may cost per day and per month. The request
//! that reaches a budget takes the account out of rotation until the period ends (the next
//! requests go to another account, or get a 503 saying when it serves again), the operators
//! are told once, the account view shows the spend, and a change of the budget applies at once.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use reqwest::Method;
use serde_json::{Value, json};

use crate::notify::Hook;
use crate::support::mock::{Behavior, MockUpstream, MockUsage};
use crate::support::relay::{Backend, Relay, backends};

const MODEL: &str = "claude-sonnet-4-5";

/// A mock whose every answer reports 10 input and 20 output tokens (what `import_test_prices`
/// prices).
async fn priced_mock() -> MockUpstream {
    MockUpstream::start_reporting(10, 20).await
}

async fn served(relay: &Relay, key: &str) {
    let resp = relay.ask(key).await;
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
}

async fn account(relay: &Relay, id: &str) -> Value {
    let (status, v) = relay
        .admin(Method::GET, &format!("/admin/accounts/{id}"), None)
        .await;
    assert_eq!(status, 200, "{v}");
    v
}

async fn patch(relay: &Relay, id: &str, body: Value) -> Value {
    let (status, v) = relay
        .admin(Method::PATCH, &format!("/admin/accounts/{id}"), Some(body))
        .await;
    assert_eq!(status, 200, "{v}");
    v
}

/// Waits until the account's status is `status` (the spend is added after the response).
async fn until_status(relay: &Relay, id: &str, status: &str) -> Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let v = account(relay, id).await;
        if v["state"]["status"] == status {
            return v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "account {id} never {status}: {v}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Unix ms of an instant the view shows (RFC 3339, or with the zone's name after it).
fn instant(v: &Value) -> i64 {
    let text = v.as_str().unwrap();
    let text = text.split('[').next().unwrap();
    text.parse::<jiff::Timestamp>().unwrap().as_millisecond()
}

/// Two accounts, the preferred one with a daily budget of two and a half requests: the third
/// request reaches it, and from then on the other account serves, until the budget is raised;
/// lowered below what was spent, it takes the account out at once; taken away, it lets it
/// serve again. On both stores.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spent_daily_budget_rests_the_account_until_it_changes_or_the_day_ends() {
    for backend in backends() {
        budget_case(&backend).await;
    }
}

async fn budget_case(backend: &Backend) {
    let hook = Hook::start().await;
    let relay = Relay::start_on(backend, |c| c.notify.webhook_url = Some(hook.url())).await;
    let cost = relay.import_test_prices(MODEL).await;
    let (preferred, other) = (priced_mock().await, priced_mock().await);
    let budget = 2 * cost + cost / 2;
    let a = relay
        .add_account(
            &preferred,
            "sk-budgeted",
            json!({ "priority": 0, "daily_cost_nanousd": budget }),
        )
        .await;
    let b = relay
        .add_account(&other, "sk-other", json!({ "priority": 10 }))
        .await;
    let (_, key) = relay.create_key("budgets").await;

    for _ in 0..3 {
        served(&relay, &key).await;
    }
    let out = until_status(&relay, &a, "budget_spent").await;
    assert_eq!(preferred.served(), 3);
    served(&relay, &key).await;
    assert_eq!(
        (preferred.served(), other.served()),
        (3, 1),
        "the other serves"
    );

    let daily = &out["budget"]["daily"];
    assert_eq!(daily["limit_nanousd"], budget, "{out}");
    assert_eq!(daily["spent_nanousd"], 3 * cost, "{out}");
    assert_eq!(daily["remaining_nanousd"], 0);
    assert_eq!(out["budget"].get("monthly"), None);
    let reason = out["state"]["budget_reason"].as_str().unwrap();
    assert!(
        reason.contains("daily budget of $0.125000 is spent ($0.150000 used)"),
        "{reason}"
    );
    assert_eq!(
        out["state"]["last_error"],
        Value::Null,
        "not the vendor's verdict"
    );
    // Out until the day ends, which is when the budget resets.
    let (until, resets) = (
        instant(&out["state"]["budget_until"]),
        instant(&daily["resets_at"]),
    );
    assert!((until - resets).abs() < 2_000, "{out}");
    assert!(resets > jiff::Timestamp::now().as_millisecond());
    let spent = |v: u8| format!("switchyard_account_budget_exhausted{{account_id=\"{a}\"}} {v}");
    let text = relay.metrics().await;
    assert!(text.contains(&spent(1)), "{text}");
    let notices = hook.exactly(1).await;
    assert_eq!(notices[0]["event"], "account_budget_reached");
    assert_eq!(notices[0]["account"]["id"], a.as_str());
    assert!(
        notices[0]["text"]
            .as_str()
            .unwrap()
            .contains("daily budget")
    );

    // Raised: it serves again at once, counting what it spent.
    let raised = patch(&relay, &a, json!({ "daily_cost_nanousd": 10 * cost })).await;
    assert_eq!(raised["state"]["status"], "ok", "{raised}");
    // (The accounts' gauges are read from the store at most once a second.)
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
    while !relay.metrics().await.contains(&spent(0)) {
        assert!(std::time::Instant::now() < deadline, "the gauge stays at 1");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(raised["budget"]["daily"]["remaining_nanousd"], 7 * cost);
    served(&relay, &key).await;
    assert_eq!(preferred.served(), 4);

    // Lowered below what it spent: out at once; an admin's reset does not lift a budget.
    let lowered = patch(&relay, &a, json!({ "daily_cost_nanousd": cost })).await;
    assert_eq!(lowered["state"]["status"], "budget_spent", "{lowered}");
    let (status, reset) = relay
        .admin(Method::POST, &format!("/admin/accounts/{a}/reset"), None)
        .await;
    assert_eq!(status, 200, "{reset}");
    assert_eq!(reset["state"]["status"], "budget_spent", "{reset}");
    served(&relay, &key).await;
    assert_eq!((preferred.served(), other.served()), (4, 2));
    assert_eq!(hook.exactly(2).await[1]["event"], "account_budget_reached");

    // Taken away: it serves again.
    let gone = patch(&relay, &a, json!({ "daily_cost_nanousd": null })).await;
    assert_eq!(gone["state"]["status"], "ok", "{gone}");
    assert_eq!(gone["budget"], Value::Null);
    served(&relay, &key).await;
    assert_eq!(preferred.served(), 5);

    // The account without a budget was never charged, nor excluded.
    let b = account(&relay, &b).await;
    assert_eq!(
        (b["budget"].clone(), b["state"]["status"].clone()),
        (Value::Null, json!("ok"))
    );
}

/// A monthly budget given to an account that already spent this month counts that spend (read
/// from its usage): given below it, the account is out at once, and its only key's requests are
/// answered 503 with when it serves again, in Anthropic's shape.
#[tokio::test]
async fn a_budget_given_later_counts_what_the_period_already_spent() {
    let relay = Relay::start().await;
    let cost = relay.import_test_prices(MODEL).await;
    let mock = priced_mock().await;
    let a = relay.add_account(&mock, "sk-month", json!({})).await;
    let (_, key) = relay.create_key("monthly").await;
    served(&relay, &key).await;
    served(&relay, &key).await;

    let v = patch(&relay, &a, json!({ "monthly_cost_nanousd": cost + 1 })).await;
    assert_eq!(v["budget"]["monthly"]["spent_nanousd"], 2 * cost, "{v}");
    assert_eq!(v["state"]["status"], "budget_spent", "{v}");
    let resets = instant(&v["budget"]["monthly"]["resets_at"]);
    let now = jiff::Timestamp::now();
    let first_of_next = now
        .to_zoned(jiff::tz::TimeZone::UTC)
        .date()
        .last_of_month()
        .tomorrow()
        .unwrap()
        .to_zoned(jiff::tz::TimeZone::UTC)
        .unwrap()
        .timestamp()
        .as_millisecond();
    // (Run across the turn of a month, the relay's month may be the next one.)
    let next_month_too = resets > first_of_next;
    assert!(resets == first_of_next || next_month_too, "{v}");

    let resp = relay.ask(&key).await;
    assert_eq!(resp.status(), 503);
    let retry_after: i64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let left = (first_of_next - now.as_millisecond()) / 1000;
    assert!(
        (retry_after - left).abs() <= 5,
        "{retry_after} against {left}"
    );
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["type"], "error", "{body}");
    assert_eq!(mock.served(), 2);

    // A budget of 0 is refused: it would take the account out with no word of why.
    let (status, v) = relay
        .admin(
            Method::PATCH,
            &format!("/admin/accounts/{a}"),
            Some(json!({ "daily_cost_nanousd": 0 })),
        )
        .await;
    assert_eq!(status, 400, "{v}");
    assert!(v.to_string().contains("daily_cost_nanousd"), "{v}");
}

/// On Redis, the spend is shared: requests through two instances add to one counter, and the
/// one that reaches the budget takes the account out for both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_sharing_a_store_share_an_accounts_spend() {
    let Ok(url) = std::env::var("REDIS_URL") else {
        return;
    };
    let prefix = crate::redis::unique_prefix();
    let mut relays = Vec::new();
    for _ in 0..2 {
        let (config, tmp) = crate::redis::redis_config(&url, &prefix);
        relays.push(Relay::start_with(config, Some(tmp)).await);
    }
    let cost = relays[0].import_test_prices(MODEL).await;
    let mock = priced_mock().await;
    let a = relays[0]
        .add_account(
            &mock,
            "sk-shared",
            json!({ "daily_cost_nanousd": 3 * cost }),
        )
        .await;
    crate::support::mock::wait_until("the other instance learns of the account", || {
        relays[1].app.catalog.accounts().iter().any(|x| x.id() == a)
    })
    .await;
    let (_, key) = relays[0].create_key("shared").await;
    for i in 0..3 {
        served(&relays[i % 2], &key).await;
    }
    until_status(&relays[1], &a, "budget_spent").await;
    for relay in &relays {
        assert_eq!(relay.ask(&key).await.status(), 503);
        let v = account(relay, &a).await;
        assert_eq!(v["budget"]["daily"]["spent_nanousd"], 3 * cost, "{v}");
    }
    assert_eq!(mock.served(), 3);
}

/// A budget's rest and the vendor's verdicts are apart: a rate limit that comes while the
/// account rests for its budget leaves the budget's rest as it was, a budget raised then lifts
/// only its own, and a request that was running when the budget was raised is held against the
/// raised one.
#[tokio::test]
async fn a_budget_and_the_vendors_limits_neither_lift_the_other() {
    let relay = Relay::start().await;
    let cost = relay.import_test_prices(MODEL).await;
    let mock = priced_mock().await;
    let a = relay
        .add_account(
            &mock,
            "sk-apart",
            json!({ "daily_cost_nanousd": cost + cost / 2 }),
        )
        .await;
    let (_, key) = relay.create_key("apart").await;
    served(&relay, &key).await;

    // A request still running when the budget is raised: it ends past the old budget, within
    // the new one.
    mock.push_behavior(Behavior::DelayHeaders(
        std::time::Duration::from_millis(400),
        MockUsage {
            input: 10,
            output: 20,
            ..MockUsage::default()
        },
    ));
    let running = {
        let (relay, key) = (&relay, &key);
        async move { relay.ask(key).await.status() }
    };
    let raise = async {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        patch(
            &relay,
            &a,
            json!({ "daily_cost_nanousd": 3 * cost + cost / 2 }),
        )
        .await
    };
    let (status, raised) = tokio::join!(running, raise);
    assert_eq!(status, 200);
    assert_eq!(raised["state"]["status"], "ok", "{raised}");
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let v = account(&relay, &a).await;
    assert_eq!(
        v["state"]["status"], "ok",
        "held against the raised budget: {v}"
    );
    assert_eq!(v["budget"]["daily"]["spent_nanousd"], 2 * cost, "{v}");

    // Spent now; then the vendor's 429 comes (a request that was picked before).
    served(&relay, &key).await;
    served(&relay, &key).await;
    let out = until_status(&relay, &a, "budget_spent").await;
    let budget_until = out["state"]["budget_until"].clone();
    relay
        .app
        .store()
        .report_health(
            &a,
            &switchyard::scheduler::policy::Report::RateLimited {
                until: jiff::Timestamp::now().as_millisecond() + 60_000,
                family: None,
                error: "upstream answered 429".into(),
            },
            jiff::Timestamp::now().as_millisecond(),
        )
        .await
        .unwrap();
    let v = account(&relay, &a).await;
    assert_eq!(v["state"]["status"], "rate_limited", "{v}");
    assert_eq!(
        v["state"]["budget_until"], budget_until,
        "the budget's rest stays: {v}"
    );
    // Raised: the budget's rest goes, the vendor's stays.
    let raised = patch(&relay, &a, json!({ "daily_cost_nanousd": 100 * cost })).await;
    assert_eq!(raised["state"]["status"], "rate_limited", "{raised}");
    assert_eq!(raised["state"]["budget_until"], Value::Null, "{raised}");
    assert_eq!(raised["state"]["last_error"], "upstream answered 429");
}
