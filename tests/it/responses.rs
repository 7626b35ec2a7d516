//! Stored OpenAI responses live on the account that made them. The relay remembers which (a
//! binding written as the answer's leases go back), so a follow-up turn naming one, or a fetch
//! of one, goes to that account at the first attempt, with more OpenAI accounts than attempts.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::support::mock::{MockUpstream, http_client};
use crate::support::relay::{Backend, Relay, backends};

/// Four OpenAI accounts, each a mock that holds the responses it makes (ids `resp_<i>_<n>`,
/// `i` its index here), behind a relay that tries at most two accounts per request.
struct Accounts {
    relay: Relay,
    mocks: Vec<MockUpstream>,
    ids: Vec<String>,
    key: String,
}

async fn four_accounts(backend: &Backend) -> Accounts {
    let relay = Relay::start_on(backend, |c| c.scheduler.max_attempts = 2).await;
    let (mut mocks, mut ids) = (Vec::new(), Vec::new());
    for i in 0..4 {
        let mock = MockUpstream::start().await;
        mock.hold_responses(&i.to_string());
        let extra = json!({ "provider": "openai", "base_url": format!("{}/v1", mock.base_url()) });
        ids.push(relay.add_account(&mock, "sk-upstream", extra).await);
        mocks.push(mock);
    }
    let (_, key) = relay.create_key("k").await;
    Accounts {
        relay,
        mocks,
        ids,
        key,
    }
}

impl Accounts {
    /// Requests each mock received so far.
    fn seen(&self) -> Vec<usize> {
        self.mocks.iter().map(|m| m.requests().len()).collect()
    }

    /// Waits until every request so far is settled: its leases are back, and with them (same
    /// store call) the binding of the response it made. A client's next turn comes after a
    /// network round trip; a test's could otherwise overtake the settle.
    async fn settled(&self) {
        for _ in 0..200 {
            let mut busy = 0;
            for id in &self.ids {
                busy += self.relay.account_in_flight(id).await;
            }
            if busy == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("requests still in flight");
    }

    /// A Responses request, and its JSON answer.
    async fn respond(&self, body: Value) -> (u16, Value) {
        let resp = http_client()
            .post(self.relay.url("/v1/responses"))
            .bearer_auth(&self.key)
            .json(&body)
            .send()
            .await
            .unwrap();
        (resp.status().as_u16(), resp.json().await.unwrap())
    }

    /// A streamed Responses request, and its stream.
    async fn stream(&self, mut body: Value) -> String {
        body["stream"] = json!(true);
        let resp = http_client()
            .post(self.relay.url("/v1/responses"))
            .bearer_auth(&self.key)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        resp.text().await.unwrap()
    }

    /// `GET /v1/responses/{id}`.
    async fn fetch(&self, id: &str) -> (u16, Value) {
        let resp = http_client()
            .get(self.relay.url(&format!("/v1/responses/{id}")))
            .bearer_auth(&self.key)
            .send()
            .await
            .unwrap();
        (resp.status().as_u16(), resp.json().await.unwrap())
    }

    /// A first turn, stored: the requests each mock got, the account that made it (it alone got
    /// one) and the response's id; settled, so that its binding is written.
    async fn first_turn(&self) -> (Vec<usize>, usize, String) {
        let (status, first) = self
            .respond(json!({ "model": "gpt-5", "input": "plan a trip" }))
            .await;
        assert_eq!(status, 200, "{first}");
        let seen = self.seen();
        assert_eq!(seen.iter().sum::<usize>(), 1, "{seen:?}");
        let home = seen.iter().position(|&n| n == 1).unwrap();
        let id = first["id"].as_str().unwrap().to_owned();
        assert_eq!(id, format!("resp_{home}_1"));
        self.settled().await;
        (seen, home, id)
    }

    /// Takes account `i` out of rotation (`false`) or puts it back.
    async fn schedulable(&self, i: usize, schedulable: bool) {
        let path = format!("/admin/accounts/{}", self.ids[i]);
        let body = json!({ "schedulable": schedulable });
        let (status, v) = self.relay.admin(Method::PATCH, &path, Some(body)).await;
        assert_eq!(status, 200, "{v}");
    }
}

/// `seen` with `n` more requests on mock `i`.
fn plus(seen: &[usize], i: usize, n: usize) -> Vec<usize> {
    let mut more = seen.to_vec();
    more[i] += n;
    more
}

/// The id of the response a stream made (its `response.created`).
fn streamed_id(stream: &str) -> String {
    let created = stream
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(|d| serde_json::from_str::<Value>(d).unwrap())
        .find(|e| e["type"] == "response.created")
        .expect("a response.created event");
    created["response"]["id"].as_str().unwrap().to_owned()
}

/// A conversation of stored responses stays on the account that made its first one: each
/// later turn (streamed or not) names the previous response and is sent there first, as is a
/// fetch of one; no other account is asked. Without the binding the next turns would go to the
/// least recently used accounts, which do not hold the response.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_response_is_followed_up_and_fetched_on_the_account_that_made_it() {
    for backend in backends() {
        let accounts = four_accounts(&backend).await;
        let (seen, home, id) = accounts.first_turn().await;

        // A streamed turn: to the same account, and the id of what it made is read from the
        // stream.
        let stream = accounts
            .stream(json!({ "model": "gpt-5", "input": "and then?", "previous_response_id": id }))
            .await;
        assert_eq!(accounts.seen(), plus(&seen, home, 1), "{backend:?}");
        let id = streamed_id(&stream);
        assert_eq!(id, format!("resp_{home}_2"));
        accounts.settled().await;

        // A turn naming the streamed one, not streamed.
        let (status, third) = accounts
            .respond(json!({ "model": "gpt-5", "input": "in May", "previous_response_id": id }))
            .await;
        assert_eq!(status, 200, "{third}");
        assert_eq!(accounts.seen(), plus(&seen, home, 2), "{backend:?}");
        let id = third["id"].as_str().unwrap().to_owned();
        assert_eq!(id, format!("resp_{home}_3"));
        accounts.settled().await;

        // The response itself, fetched.
        let (status, fetched) = accounts.fetch(&id).await;
        assert_eq!((status, fetched["id"].as_str()), (200, Some(id.as_str())));
        assert_eq!(accounts.seen(), plus(&seen, home, 3), "{backend:?}");
        accounts.settled().await;

        // Its account out of rotation: the fetch tries the others (which do not hold it), and
        // the binding stays for when it is back.
        accounts.schedulable(home, false).await;
        let (status, _) = accounts.fetch(&id).await;
        assert_eq!(status, 404);
        let now = accounts.seen();
        assert_eq!(now[home], seen[home] + 3, "{backend:?}");
        assert_eq!(now.iter().sum::<usize>(), 4 + 2, "two attempts elsewhere");
        accounts.settled().await;
        accounts.schedulable(home, true).await;
        let (status, _) = accounts.fetch(&id).await;
        assert_eq!(status, 200);
        assert_eq!(accounts.seen(), plus(&now, home, 1), "{backend:?}");
        assert_eq!(
            accounts.mocks[home].held_responses(),
            [1, 2, 3].map(|n| format!("resp_{home}_{n}"))
        );
    }
}

/// A response made with `store: false` is not kept by the vendor: no binding is written for
/// it, and a turn naming it goes wherever the scheduler sends any request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_made_with_store_false_leaves_no_binding() {
    for backend in backends() {
        let accounts = four_accounts(&backend).await;
        let body = json!({ "model": "gpt-5", "input": "plan a trip", "store": false });
        let (status, first) = accounts.respond(body).await;
        assert_eq!(status, 200, "{first}");
        let seen = accounts.seen();
        let made_on = seen.iter().position(|&n| n == 1).unwrap();
        assert!(accounts.mocks[made_on].held_responses().is_empty());
        accounts.settled().await;

        // Not bound: the turn goes to the accounts used least recently (never the one that made
        // it, used last), which answer that they do not hold it.
        let id = first["id"].as_str().unwrap();
        let (status, v) = accounts
            .respond(json!({ "model": "gpt-5", "input": "and then?", "previous_response_id": id }))
            .await;
        assert_eq!(status, 400, "{v}");
        assert_eq!(v["error"]["code"], "previous_response_not_found");
        let now = accounts.seen();
        assert_eq!(now[made_on], 1, "{backend:?}: {now:?}");
        assert_eq!(now.iter().sum::<usize>(), 1 + 2, "{backend:?}");
    }
}

/// Bindings are a key's own: another key naming the same response is not sent after it (it
/// finds the response by trying the accounts, as before bindings), and cannot move the binding
/// of the key that made it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_key_naming_a_response_does_not_use_or_move_its_binding() {
    let accounts = four_accounts(&Backend::Embedded).await;
    let (_, home, id) = accounts.first_turn().await;

    let (_, other) = accounts.relay.create_key("other").await;
    let resp = http_client()
        .get(accounts.relay.url(&format!("/v1/responses/{id}")))
        .bearer_auth(&other)
        .send()
        .await
        .unwrap();
    // Two attempts on the accounts used least recently: neither is the one that holds it.
    assert_eq!(resp.status(), 404);
    let seen = accounts.seen();
    assert_eq!((seen[home], seen.iter().sum::<usize>()), (1, 3));
    accounts.settled().await;

    let (status, _) = accounts.fetch(&id).await;
    assert_eq!(status, 200);
    assert_eq!(accounts.seen(), plus(&seen, home, 1));
}

/// A turn whose response's account cannot serve now waits for it, rather than going to accounts
/// that do not hold the response (each would answer `previous_response_not_found`, a 400 that
/// clients do not retry): the account's own failure, then a 503 with its reset.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_turn_waits_for_the_account_that_holds_its_response() {
    for backend in backends() {
        let accounts = four_accounts(&backend).await;
        let (seen, home, id) = accounts.first_turn().await;

        // Its account rate limited: the client gets that 429, no other account is asked.
        accounts.mocks[home].push_behavior(crate::support::mock::Behavior::rate_limited(30));
        let turn = json!({ "model": "gpt-5", "input": "and then?", "previous_response_id": id });
        let (status, v) = accounts.respond(turn.clone()).await;
        assert_eq!(status, 429, "{backend:?}: {v}");
        assert_eq!(accounts.seen(), plus(&seen, home, 1), "{backend:?}");
        accounts.settled().await;

        // Until its reset: 503 with the time to wait, and no account asked.
        let resp = http_client()
            .post(accounts.relay.url("/v1/responses"))
            .bearer_auth(&accounts.key)
            .json(&turn)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 503, "{backend:?}");
        let wait: u64 = resp.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((20..=30).contains(&wait), "{backend:?}: retry after {wait}");
        assert_eq!(accounts.seen(), plus(&seen, home, 1), "{backend:?}");
    }
}
