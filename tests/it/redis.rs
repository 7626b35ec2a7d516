//! Several relays on one Redis: shared caches invalidated through pub/sub, limits counted in
//! Redis, usage summed exactly, and a Redis outage survived. Skipped unless `REDIS_URL` is set
//! (CI starts a local redis-server; see scripts/redis-test-servers.sh).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};

use crate::support::mock::{Behavior, MockUpstream, MockUsage, wait_until};
use crate::support::relay::{Relay, messages_body, test_config};

const MASTER_KEY: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// A relay configuration on `url` under a prefix of its own; `None` without `REDIS_URL`.
pub(crate) fn redis_config(
    url: &str,
    prefix: &str,
) -> (switchyard::config::Config, Arc<tempfile::TempDir>) {
    let tmp = Arc::new(tempfile::tempdir().unwrap());
    let mut config = test_config(tmp.path());
    config.store = url.to_owned();
    config.redis.prefix = prefix.to_owned();
    // Instances sharing a store must share the master key: sealed credentials live in the store.
    config.master_key = Some(MASTER_KEY.to_owned());
    // Two workers whatever the machine, so requests also go through a worker's own Redis pool.
    config.server.workers = 2;
    (config, tmp)
}

pub(crate) fn unique_prefix() -> String {
    format!("sy-test-{:016x}:", rand::random::<u64>())
}

async fn two_relays() -> Option<(Relay, Relay)> {
    let url = std::env::var("REDIS_URL").ok()?;
    let prefix = unique_prefix();
    let (a, tmp_a) = redis_config(&url, &prefix);
    let (b, tmp_b) = redis_config(&url, &prefix);
    Some((
        Relay::start_with(a, Some(tmp_a)).await,
        Relay::start_with(b, Some(tmp_b)).await,
    ))
}

/// Disables key `id` (secret `key`) through `a`, and waits until `b` refuses it (401), at most
/// `within`: the change reaches `b` through Redis's change feed.
pub(crate) async fn disabled_on_one_refused_by_the_other(
    a: &Relay,
    b: &Relay,
    id: &str,
    key: &str,
    within: Duration,
) {
    let (status, v) = a
        .admin(
            Method::PATCH,
            &format!("/admin/keys/{id}"),
            Some(json!({ "enabled": false })),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    answers_within(
        b,
        key,
        401,
        within,
        "the other instance refuses the disabled key",
    )
    .await;
}

/// Sends `b` a request with `key` until it answers `status`, for at most `within`.
async fn answers_within(b: &Relay, key: &str, status: u16, within: Duration, what: &str) {
    let since = Instant::now();
    loop {
        let resp = b
            .messages(key, &messages_body("claude-sonnet-4-5", false))
            .send()
            .await
            .unwrap();
        if resp.status() == status {
            return;
        }
        resp.bytes().await.unwrap();
        assert!(since.elapsed() < within, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// An account added on `a`, once `b` has learnt of it through Redis (its change feed: a
/// request to `b` before then finds no account for the model).
async fn add_shared_account(
    a: &Relay,
    b: &Relay,
    mock: &MockUpstream,
    api_key: &str,
    extra: Value,
) -> String {
    let id = a.add_account(mock, api_key, extra).await;
    wait_until("the other instance learns of the account", || {
        b.app.catalog.accounts().iter().any(|x| x.id() == id)
    })
    .await;
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_disabled_on_one_instance_is_refused_by_the_other_within_a_second() {
    let Some((a, b)) = two_relays().await else {
        return;
    };
    let mock = MockUpstream::start().await;
    add_shared_account(&a, &b, &mock, "sk-shared", json!({})).await;
    let (id, key) = a.create_key("shared").await;
    // B learns of the account and the key through Redis.
    let resp = b
        .messages(&key, &messages_body("claude-sonnet-4-5", false))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    resp.bytes().await.unwrap();

    // A secret rotated through A is refused by B (which had the old one cached), and the new
    // one is served by B.
    let (status, rotated) = a
        .admin(Method::POST, &format!("/admin/keys/{id}/rotate"), None)
        .await;
    assert_eq!(status, 200, "{rotated}");
    let second = Duration::from_secs(1);
    answers_within(&b, &key, 401, second, "B refuses the old secret").await;
    let key = rotated["key"].as_str().unwrap().to_owned();
    answers_within(&b, &key, 200, second, "B serves the new secret").await;

    disabled_on_one_refused_by_the_other(&a, &b, &id, &key, Duration::from_secs(1)).await;

    // Deleting works the same way, and account changes reach B too.
    let (_, key2) = a.create_key("second").await;
    let resp = b
        .messages(&key2, &messages_body("claude-sonnet-4-5", false))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    resp.bytes().await.unwrap();
    let accounts = a.admin(Method::GET, "/admin/accounts", None).await.1;
    let account_id = accounts["data"][0]["id"].as_str().unwrap().to_owned();
    a.admin(
        Method::PATCH,
        &format!("/admin/accounts/{account_id}"),
        Some(json!({ "schedulable": false })),
    )
    .await;
    answers_within(&b, &key2, 503, second, "B stops using the account").await;
}

/// A price file imported through one instance prices the requests of every instance at once,
/// and of an instance started later on another data dir: Redis keeps it, not the data dir.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_price_import_reaches_every_instance_and_later_ones() {
    let Some(url) = std::env::var("REDIS_URL").ok() else {
        return;
    };
    let prefix = unique_prefix();
    let start = || {
        let (config, tmp) = redis_config(&url, &prefix);
        Relay::start_with(config, Some(tmp))
    };
    let (a, b) = (start().await, start().await);
    let mock = MockUpstream::start().await;
    mock.set_default(Behavior::Ok(MockUsage::new(10, 20)));
    add_shared_account(&a, &b, &mock, "sk-shared", json!({})).await;
    let (_, key) = a.create_key("priced").await;
    let model = "claude-sonnet-4-5";
    let built_in = b.cost_of_one(&key, model).await;
    assert!(built_in > 0);

    let expected = a.import_test_prices(model).await;
    assert_eq!(a.cost_of_one(&key, model).await, expected);
    let imported_at = Instant::now();
    loop {
        let cost = b.cost_of_one(&key, model).await;
        if cost == expected {
            break;
        }
        assert_eq!(cost, built_in);
        assert!(
            imported_at.elapsed() < Duration::from_secs(2),
            "B still prices at the built-in prices after 2 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let c = start().await;
    assert_eq!(c.cost_of_one(&key, model).await, expected);
    // Nothing was written to the data dirs: the file lives in Redis.
    for relay in [&a, &b, &c] {
        let file = relay.app.config.data_dir.join("imported-prices.json");
        assert!(!file.exists(), "{}", file.display());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_concurrency_cap_holds_across_instances() {
    let Some((a, b)) = two_relays().await else {
        return;
    };
    let mock = MockUpstream::start().await;
    mock.set_default(Behavior::Slow {
        usage: MockUsage {
            input: 1,
            output: 1,
            ..MockUsage::default()
        },
        delay: Duration::from_millis(40),
    });
    add_shared_account(&a, &b, &mock, "sk-capped", json!({ "max_concurrency": 2 })).await;
    let (_, key) = a.create_key("k").await;
    let a = Arc::new(a);
    let b = Arc::new(b);
    let mut tasks = Vec::new();
    for i in 0..20 {
        let relay = if i % 2 == 0 {
            Arc::clone(&a)
        } else {
            Arc::clone(&b)
        };
        let key = key.clone();
        tasks.push(tokio::spawn(async move {
            let resp = relay
                .messages(&key, &messages_body("claude-sonnet-4-5", true))
                .send()
                .await
                .unwrap();
            let status = resp.status().as_u16();
            resp.bytes().await.unwrap();
            status
        }));
    }
    let mut ok = 0;
    for t in tasks {
        match t.await.unwrap() {
            200 => ok += 1,
            503 => {}
            other => panic!("unexpected status {other}"),
        }
    }
    assert!(
        mock.max_in_flight() <= 2,
        "{} streams at once upstream",
        mock.max_in_flight()
    );
    assert!(ok >= 2, "only {ok} requests were served");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_totals_over_two_instances_equal_what_the_upstream_reported() {
    let Some((a, b)) = two_relays().await else {
        return;
    };
    let mock = MockUpstream::start().await;
    let account = add_shared_account(&a, &b, &mock, "sk-sum", json!({})).await;
    let (key_id, key) = a.create_key("sum").await;
    let mut expected = MockUsage::default();
    for i in 0..500u64 {
        let u = MockUsage {
            input: 1 + i % 7,
            output: 2 + i % 11,
            cache_creation_5m: i % 3,
            cache_creation_1h: i % 2,
            cache_read: i % 5,
        };
        expected.input += u.input;
        expected.output += u.output;
        expected.cache_creation_5m += u.cache_creation_5m;
        expected.cache_creation_1h += u.cache_creation_1h;
        expected.cache_read += u.cache_read;
        mock.push_behavior(Behavior::Ok(u));
    }
    let relays = [Arc::new(a), Arc::new(b)];
    let next = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::new();
    for w in 0..16 {
        let relay = Arc::clone(&relays[w % 2]);
        let key = key.clone();
        let next = Arc::clone(&next);
        workers.push(tokio::spawn(async move {
            while next.fetch_add(1, Ordering::SeqCst) < 500 {
                let stream = rand::random::<bool>();
                let resp = relay
                    .messages(&key, &messages_body("claude-sonnet-4-5", stream))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(resp.status(), 200);
                resp.bytes().await.unwrap();
            }
        }));
    }
    for w in workers {
        w.await.unwrap();
    }
    assert_eq!(mock.served(), 500);
    // Each instance flushes its own aggregate; ask both to flush by reading through them.
    relays[1].usage("").await;
    for query in [
        format!("key_id={key_id}"),
        format!("account_id={account}"),
        String::new(),
    ] {
        let u: Value = relays[0].usage(&query).await;
        assert_eq!(u["requests"], 500, "{query}");
        assert_eq!(u["input_tokens"], expected.input, "{query}");
        assert_eq!(u["output_tokens"], expected.output);
        assert_eq!(
            u["cache_creation_5m_input_tokens"],
            expected.cache_creation_5m
        );
        assert_eq!(
            u["cache_creation_1h_input_tokens"],
            expected.cache_creation_1h
        );
        assert_eq!(u["cache_read_input_tokens"], expected.cache_read);
    }
    let in_flight = relays[0].account_in_flight(&account).await;
    assert_eq!(in_flight, 0, "no lease left");
}

/// A redis-server of this test's own, so it can be killed without disturbing other tests.
pub(crate) struct OwnRedis {
    pub(crate) port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
    /// Given to redis-server after the defaults (a replica's `--replicaof`).
    extra: Vec<String>,
}

impl OwnRedis {
    /// CLIENT PAUSE ALL: Redis holds every client's commands for `time`.
    async fn pause(&self, time: Duration) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut conn = tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .unwrap();
        let ms = time.as_millis().to_string();
        let command = format!(
            "*4\r\n$6\r\nCLIENT\r\n$5\r\nPAUSE\r\n${}\r\n{ms}\r\n$3\r\nALL\r\n",
            ms.len()
        );
        conn.write_all(command.as_bytes()).await.unwrap();
        let mut reply = [0; 5];
        conn.read_exact(&mut reply).await.unwrap();
        assert_eq!(&reply, b"+OK\r\n");
    }

    fn start() -> OwnRedis {
        OwnRedis::start_with(Vec::new())
    }

    pub(crate) fn start_with(extra: Vec<String>) -> OwnRedis {
        let mut redis = OwnRedis {
            port: free_port(),
            dir: tempfile::tempdir().unwrap(),
            child: None,
            extra,
        };
        redis.spawn();
        redis
    }

    fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args([
                "--bind",
                "127.0.0.1",
                "--port",
                &self.port.to_string(),
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
            ])
            .arg("--dir")
            .arg(self.dir.path())
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server on PATH (REDIS_URL is set)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub(crate) fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }
}

/// A loopback port nothing listens on (at the time of asking).
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Leases of one key and one account, both capped at one request in flight, on a redis-server
/// of its own (pausing it must not stall the other tests).
struct Capped {
    redis: OwnRedis,
    relay: Relay,
    mock: MockUpstream,
    account_id: String,
    key: String,
}

impl Capped {
    /// `None` without `REDIS_URL`. One request has been served: the key and the account are
    /// cached, so a request's only Redis call before its upstream is the take.
    async fn start(command_timeout_ms: u64) -> Option<Capped> {
        std::env::var("REDIS_URL").ok()?;
        let redis = OwnRedis::start();
        let (mut config, tmp) = redis_config(&format!("redis://127.0.0.1:{}/0", redis.port), "sy:");
        config.redis.command_timeout_ms = command_timeout_ms;
        let relay = Relay::start_with(config, Some(tmp)).await;
        let mock = MockUpstream::start().await;
        let account_id = relay
            .add_account(&mock, "sk-capped", json!({ "max_concurrency": 1 }))
            .await;
        let (status, created) = relay
            .admin(
                Method::POST,
                "/admin/keys",
                Some(json!({ "name": "capped", "limits": { "max_concurrency": 1 } })),
            )
            .await;
        assert_eq!(status, 201, "{created}");
        let key = created["key"].as_str().unwrap().to_owned();
        let capped = Capped {
            redis,
            relay,
            mock,
            account_id,
            key,
        };
        capped.served().await;
        Some(capped)
    }

    fn send(&self) -> reqwest::RequestBuilder {
        self.relay
            .messages(&self.key, &messages_body("claude-sonnet-4-5", false))
    }

    /// A request is served (200).
    async fn served(&self) {
        let resp = self.send().send().await.unwrap();
        assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
    }

    /// Waits until neither the account nor the key holds a lease.
    async fn none_held(&self, after: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let key = self.relay.key_info(&self.key).await["in_flight"].as_u64();
            let held = (self.relay.account_in_flight(&self.account_id).await, key);
            if held == (0, Some(0)) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "leases held (account, key) after {after}: {held:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// A client that hangs up while its leases are being taken in Redis leaves nothing held: the
/// take runs to its end on a task of its own, and what it took is given back at once, not at its
/// deadline (15 minutes later; meanwhile the key and the account would sit at their caps).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_gone_while_its_leases_are_taken_leaves_none_held() {
    let Some(capped) = Capped::start(1_000).await else {
        return;
    };
    // Redis holds every command for a while; the client gives up while its take waits there.
    capped.redis.pause(Duration::from_millis(600)).await;
    let cut = capped
        .send()
        .timeout(Duration::from_millis(150))
        .send()
        .await;
    assert!(
        cut.is_err_and(|e| e.is_timeout()),
        "the request was not cut short"
    );
    // Once Redis runs the take, its leases come back, and both caps are free again.
    tokio::time::sleep(Duration::from_millis(600)).await;
    capped.none_held("the client left").await;
    capped.served().await;
    assert_eq!(
        capped.mock.served(),
        2,
        "the request cut short reached the upstream"
    );
}

/// A take that timed out in Switchyard may still run in Redis: the request gets a 503, and
/// whatever the take could have held (the key's lease, a lease on any candidate account) is
/// given back, so that nothing stays held once Redis ran it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_take_that_timed_out_but_ran_leaves_no_lease() {
    let Some(capped) = Capped::start(200).await else {
        return;
    };
    // Redis holds the take past the command timeout, then runs it.
    capped.redis.pause(Duration::from_millis(600)).await;
    let resp = capped.send().send().await.unwrap();
    assert_eq!(resp.status(), 503, "{}", resp.text().await.unwrap());
    tokio::time::sleep(Duration::from_millis(700)).await;
    capped.none_held("the timed-out take ran").await;
    capped.served().await;
    assert_eq!(capped.mock.served(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_outage_gets_prompt_503s_and_loses_no_acknowledged_usage() {
    if std::env::var("REDIS_URL").is_err() {
        return;
    }
    let mut redis = OwnRedis::start();
    let (mut config, tmp) = redis_config(&format!("redis://127.0.0.1:{}/0", redis.port), "sy:");
    config.redis.command_timeout_ms = 500;
    let relay = Arc::new(Relay::start_with(config, Some(tmp)).await);
    let mock = MockUpstream::start_reporting(3, 5).await;
    relay.add_account(&mock, "sk-outage", json!({})).await;
    let (_, key) = relay.create_key("outage").await;

    // Load from four workers through the outage; count what completed with 200.
    let completed = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let slowest_refusal_ms = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut workers = Vec::new();
    for _ in 0..4 {
        let (relay, key, completed, refused, slowest, stop) = (
            Arc::clone(&relay),
            key.clone(),
            Arc::clone(&completed),
            Arc::clone(&refused),
            Arc::clone(&slowest_refusal_ms),
            Arc::clone(&stop),
        );
        workers.push(tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                let started = Instant::now();
                let resp = relay
                    .messages(&key, &messages_body("claude-sonnet-4-5", true))
                    .send()
                    .await
                    .unwrap();
                match resp.status().as_u16() {
                    200 => {
                        resp.bytes().await.unwrap();
                        completed.fetch_add(1, Ordering::SeqCst);
                    }
                    503 => {
                        let v: Value = resp.json().await.unwrap();
                        assert_eq!(v["type"], "error", "503 in Anthropic's shape: {v}");
                        slowest.fetch_max(started.elapsed().as_millis() as u64, Ordering::SeqCst);
                        refused.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    other => panic!("unexpected status {other}"),
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    redis.kill();
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let during = refused.load(Ordering::SeqCst);
    redis.spawn();
    // Served again without a restart.
    let back = Instant::now();
    let before = completed.load(Ordering::SeqCst);
    while completed.load(Ordering::SeqCst) < before + 20 {
        assert!(
            back.elapsed() < Duration::from_secs(15),
            "the relay did not recover"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, Ordering::SeqCst);
    for w in workers {
        w.await.unwrap();
    }
    assert!(during > 0, "requests during the outage were refused");
    assert!(
        slowest_refusal_ms.load(Ordering::SeqCst) < 3_000,
        "a refusal took {} ms",
        slowest_refusal_ms.load(Ordering::SeqCst)
    );
    let n = completed.load(Ordering::SeqCst);
    let u = relay.usage("").await;
    assert_eq!(
        u["requests"], n,
        "every completed request is recorded once: {u}"
    );
    assert_eq!(u["input_tokens"], 3 * n);
    assert_eq!(u["output_tokens"], 5 * n);
}

/// Two instances on one Redis, each looking for tokens to renew every 50 ms, meet an account
/// whose token is about to expire: one renews it, once (the vendor's refresh token is spent by
/// its first use: a second renewal with it would be refused and lose the grant), and both use
/// the new token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_sharing_a_store_renew_an_account_once() {
    let Ok(url) = std::env::var("REDIS_URL") else {
        return;
    };
    let prefix = unique_prefix();
    let start = |prefix: &str| {
        let (mut config, tmp) = redis_config(&url, prefix);
        config.upstream.oauth_check_ms = 50;
        Relay::start_with(config, Some(tmp))
    };
    let a = start(&prefix).await;
    let b = start(&prefix).await;
    let mock = MockUpstream::start().await;
    let tokens = crate::support::token_endpoint::TokenEndpoint::start().await;
    tokens.serve_for(&mock, "at-0");
    // Slow to answer: both instances find the account due while the first renewal runs.
    tokens.set_delay(Duration::from_millis(300));
    let mut grant = tokens.grant();
    grant["expires_at"] =
        json!((jiff::Timestamp::now() + jiff::SignedDuration::from_mins(2)).to_string());
    let id = add_shared_account(&a, &b, &mock, "at-0", json!({ "oauth": grant })).await;
    wait_until("the token is renewed", || tokens.granted() == 1).await;
    let (_, key) = a.create_key("k").await;
    // The instance that did not renew learns of the new token through the change feed.
    for relay in [&a, &b] {
        wait_until("both instances hold the renewed token", || {
            relay
                .app
                .catalog
                .accounts()
                .iter()
                .any(|x| x.id() == id && x.api_key.to_str().ok() == Some("at-1"))
        })
        .await;
    }
    for relay in [&a, &b] {
        let resp = relay
            .messages(&key, &messages_body("claude-sonnet-4-5", false))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let sent = mock.requests().pop().unwrap();
        assert_eq!(sent.header("authorization"), Some("Bearer at-1"));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(tokens.requests().len(), 1, "renewed by one instance, once");
    let (status, v) = b
        .admin(Method::GET, &format!("/admin/accounts/{id}"), None)
        .await;
    assert_eq!(status, 200);
    assert!(v["oauth"]["failure"].is_null(), "{v}");
    assert!(v["oauth"]["refreshed_at"].is_string(), "{v}");
}
