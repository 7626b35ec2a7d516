//! Relays on a Redis primary found through Sentinel: they follow a failover to the promoted
//! replica on their own, answering promptly meanwhile and losing no usage the replica had.
//! Skipped unless `REDIS_URL` is set (then redis-server and redis-cli are on PATH: CI installs
//! them); the primary, its replica and the Sentinel are this test's own.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::redis::{
    OwnRedis, disabled_on_one_refused_by_the_other, free_port, redis_config, unique_prefix,
};
use crate::support::mock::MockUpstream;
use crate::support::relay::{Relay, messages_body};

/// The name the Sentinel knows the primary by.
const SERVICE: &str = "sy";

/// `redis-cli -p port args…`, its answer as printed.
fn cli(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .arg("-p")
        .arg(port.to_string())
        .args(args)
        .output()
        .expect("redis-cli on PATH (REDIS_URL is set)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Waits up to `within` for `cond`.
fn wait_for(what: &str, within: Duration, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + within;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A primary, its replica and Sentinels watching them (each with a quorum of one).
struct Sentinels {
    primary: OwnRedis,
    replica: OwnRedis,
    /// The first Sentinel's port.
    port: u16,
    ports: Vec<u16>,
    _dir: tempfile::TempDir,
    children: Vec<Child>,
}

impl Sentinels {
    fn start() -> Sentinels {
        Sentinels::start_many(1)
    }

    fn start_many(n: usize) -> Sentinels {
        let primary = OwnRedis::start_with(Vec::new());
        let replica = OwnRedis::start_with(vec![
            "--replicaof".to_owned(),
            "127.0.0.1".to_owned(),
            primary.port.to_string(),
        ]);
        let dir = tempfile::tempdir().unwrap();
        let ports: Vec<u16> = (0..n).map(|_| free_port()).collect();
        let mut children = Vec::new();
        for (i, port) in ports.iter().enumerate() {
            // A Sentinel rewrites its configuration file: it must be one of its own.
            let conf = dir.path().join(format!("sentinel-{i}.conf"));
            std::fs::write(
                &conf,
                format!(
                    "bind 127.0.0.1\nport {port}\ndir {}\n\
                     sentinel monitor {SERVICE} 127.0.0.1 {} 1\n\
                     sentinel down-after-milliseconds {SERVICE} 500\n\
                     sentinel failover-timeout {SERVICE} 5000\n",
                    dir.path().display(),
                    primary.port
                ),
            )
            .unwrap();
            let child = Command::new("redis-server")
                .arg(&conf)
                .arg("--sentinel")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("redis-server on PATH (REDIS_URL is set)");
            children.push(child);
        }
        let sentinels = Sentinels {
            primary,
            replica,
            port: ports[0],
            ports,
            _dir: dir,
            children,
        };
        // Ready when the replica is in sync and the Sentinels know it (they learn of replicas
        // from the primary's INFO: only then can they promote one) and each other (they meet
        // through the primary every two seconds).
        let replica_port = sentinels.replica.port.to_string();
        wait_for("the replica in sync", Duration::from_secs(10), || {
            cli(sentinels.replica.port, &["info", "replication"]).contains("master_link_status:up")
        });
        for &port in &sentinels.ports {
            wait_for(
                "the Sentinels know the replica",
                Duration::from_secs(15),
                || {
                    let replicas = cli(port, &["sentinel", "replicas", SERVICE]);
                    replicas.contains(&replica_port) && !replicas.contains("s_down")
                },
            );
            wait_for(
                "the Sentinels know each other",
                Duration::from_secs(15),
                || {
                    let others = cli(port, &["sentinel", "sentinels", SERVICE]);
                    sentinels
                        .ports
                        .iter()
                        .filter(|p| **p != port)
                        .all(|p| others.contains(&p.to_string()))
                },
            );
        }
        sentinels
    }

    /// The primary's port, as the first Sentinel names it.
    fn primary_port(&self) -> Option<u16> {
        let answer = cli(self.port, &["sentinel", "get-master-addr-by-name", SERVICE]);
        answer.lines().nth(1)?.trim().parse().ok()
    }

    /// Every Sentinel, as a list.
    fn url(&self) -> String {
        let list: Vec<String> = self
            .ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        format!(
            "redis-sentinel://{}/0?sentinelServiceName={SERVICE}",
            list.join(",")
        )
    }
}

/// The requests recorded, as the relay reads them from the store.
async fn recorded(relay: &Relay) -> u64 {
    relay.usage("").await["requests"].as_u64().unwrap_or(0)
}

impl Drop for Sentinels {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Two relays on a primary named by a Sentinel. The primary dies (after its replica has every
/// write): requests meanwhile are answered promptly, 200 or 503 in Anthropic's shape; once the
/// Sentinel has promoted the replica both relays serve again without a restart, the usage of
/// every request that completed is there exactly once, and the change feed (a key disabled
/// through one relay, refused by the other) runs on the new primary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relays_behind_a_sentinel_follow_a_failover_and_lose_no_replicated_usage() {
    if std::env::var("REDIS_URL").is_err() {
        return;
    }
    let mut sentinels = Sentinels::start();
    assert_eq!(sentinels.primary_port(), Some(sentinels.primary.port));
    let prefix = unique_prefix();
    let relays = {
        let mut relays = Vec::new();
        for _ in 0..2 {
            let (mut config, tmp) = redis_config(&sentinels.url(), &prefix);
            config.redis.command_timeout_ms = 500;
            config.redis.reconnect_max_delay_ms = 200;
            relays.push(Relay::start_with(config, Some(tmp)).await);
        }
        relays
    };
    let mock = MockUpstream::start_reporting(3, 5).await;
    let account = relays[0].add_account(&mock, "sk-sentinel", json!({})).await;
    crate::support::mock::wait_until("the other relay learns of the account", || {
        relays[1]
            .app
            .catalog
            .accounts()
            .iter()
            .any(|a| a.id() == account)
    })
    .await;
    let (key_id, key) = relays[0].create_key("behind a sentinel").await;

    let send = |i: usize| {
        relays[i % 2]
            .messages(&key, &messages_body("claude-sonnet-4-5", i % 4 < 2))
            .send()
    };
    let before = 10;
    for i in 0..before {
        let resp = send(i).await.unwrap();
        assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
        resp.bytes().await.unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while recorded(&relays[1]).await != before as u64 {
        assert!(Instant::now() < deadline, "usage before the failover");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Redis replicates asynchronously: what the primary acknowledged and had not yet sent would
    // be lost with it, whatever the client. Once the replica has it all, nothing may be.
    let acked = cli(sentinels.primary.port, &["wait", "1", "2000"]);
    assert_eq!(acked.trim(), "1", "the replica acknowledged the writes");
    let old = sentinels.primary.port;
    sentinels.primary.kill();

    let failed_at = Instant::now();
    let (mut served, mut refused, mut slowest) = (0u64, 0u64, Duration::ZERO);
    let mut i = 0;
    while served < 20 {
        assert!(
            failed_at.elapsed() < Duration::from_secs(30),
            "not served again after the failover ({served} served, {refused} refused)"
        );
        let started = Instant::now();
        let resp = send(i).await.unwrap();
        i += 1;
        match resp.status().as_u16() {
            200 => {
                resp.bytes().await.unwrap();
                served += 1;
            }
            503 => {
                let v: Value = resp.json().await.unwrap();
                assert_eq!(v["type"], "error", "503 in Anthropic's shape: {v}");
                slowest = slowest.max(started.elapsed());
                refused += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            other => panic!("unexpected status {other}: {}", resp.text().await.unwrap()),
        }
    }
    assert!(refused > 0, "requests during the failover were refused");
    assert!(
        slowest < Duration::from_secs(3),
        "a refusal took {slowest:?}"
    );
    let promoted = sentinels.replica.port;
    assert_eq!(sentinels.primary_port(), Some(promoted), "from {old}");
    assert!(cli(promoted, &["role"]).starts_with("master"));

    // Every completed request once, on the promoted replica.
    let total = before as u64 + served;
    let deadline = Instant::now() + Duration::from_secs(10);
    while recorded(&relays[0]).await != total {
        assert!(
            Instant::now() < deadline,
            "usage after the failover: {} of {total}",
            recorded(&relays[0]).await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let u = relays[1].usage("").await;
    assert_eq!(u["requests"], total, "{u}");
    assert_eq!(u["input_tokens"], 3 * total, "{u}");
    assert_eq!(u["output_tokens"], 5 * total, "{u}");
    assert_eq!(
        relays[0].account_in_flight(&account).await,
        0,
        "no lease left"
    );

    // The change feed follows too: a key disabled through one relay is refused by the other.
    let within = Duration::from_secs(2);
    disabled_on_one_refused_by_the_other(&relays[0], &relays[1], &key_id, &key, within).await;
}

/// The connections to `port` other than the Sentinel's own, a replica's and the one asking.
fn clients_of(port: u16) -> Vec<String> {
    cli(port, &["client", "list"])
        .lines()
        .filter(|c| {
            !c.contains("name=sentinel-") && !c.contains("cmd=client") && !c.contains("flags=S")
        })
        .map(str::to_owned)
        .collect()
}

/// An operator's failover (`SENTINEL FAILOVER`) leaves the old primary running and taking
/// writes until the Sentinels make it a replica, some ten seconds later, when its data is
/// replaced by the new primary's: a relay hears the Sentinel announce the new primary and moves
/// to it at once, so nothing it writes meanwhile is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_moves_to_a_new_primary_as_soon_as_a_sentinel_announces_it() {
    if std::env::var("REDIS_URL").is_err() {
        return;
    }
    let sentinels = Sentinels::start();
    let (config, tmp) = redis_config(&sentinels.url(), &unique_prefix());
    let relay = Relay::start_with(config, Some(tmp)).await;
    let mock = MockUpstream::start().await;
    let account = relay.add_account(&mock, "sk-sentinel", json!({})).await;
    let (_, key) = relay.create_key("planned failover").await;
    let serve = |n: usize| {
        let (relay, key) = (&relay, &key);
        async move {
            for _ in 0..n {
                let resp = relay
                    .messages(key, &messages_body("claude-sonnet-4-5", false))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
            }
        }
    };
    serve(10).await;
    let old = sentinels.primary.port;
    assert!(!clients_of(old).is_empty(), "the relay is on the primary");
    let acked = cli(old, &["wait", "1", "2000"]);
    assert_eq!(acked.trim(), "1", "the replica acknowledged the writes");

    assert_eq!(
        cli(sentinels.port, &["sentinel", "failover", SERVICE]).trim(),
        "OK"
    );
    let promoted = sentinels.replica.port;
    wait_for(
        "the Sentinel to promote the replica",
        Duration::from_secs(10),
        || sentinels.primary_port() == Some(promoted),
    );
    // The old primary is still one (the Sentinels reconfigure it later), and the relay has left it.
    assert!(cli(old, &["role"]).starts_with("master"));
    wait_for(
        "the relay to leave the old primary",
        Duration::from_secs(3),
        || clients_of(old).is_empty(),
    );
    assert!(
        cli(old, &["role"]).starts_with("master"),
        "left before the Sentinels' cleanup"
    );
    serve(20).await;
    // What the Sentinels do next: the old primary resyncs from the new one, losing what it took
    // meanwhile. Nothing was.
    cli(old, &["replicaof", "127.0.0.1", &promoted.to_string()]);
    wait_for("the old primary in sync", Duration::from_secs(10), || {
        cli(old, &["info", "replication"]).contains("master_link_status:up")
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while recorded(&relay).await != 30 {
        assert!(
            Instant::now() < deadline,
            "usage after the failover: {} of 30",
            recorded(&relay).await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(mock.served(), 30);
    assert_eq!(relay.account_in_flight(&account).await, 0, "no lease left");
}

/// An operator's failover under load, announced by two Sentinels: the relay moves to the new
/// primary once, and what reached the old one in the moment before it moved (give-backs of
/// leases, usage) is made again there: every request served is recorded once, and no lease is
/// left held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_load_a_failover_loses_no_usage_and_leaves_no_lease() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

    if std::env::var("REDIS_URL").is_err() {
        return;
    }
    let sentinels = Sentinels::start_many(2);
    let (mut config, tmp) = redis_config(&sentinels.url(), &unique_prefix());
    // The default: a batch each 250 ms, of which the newest 32 are kept to be made again.
    config.stats.flush_interval_ms = 250;
    let relay = Arc::new(Relay::start_with(config, Some(tmp)).await);
    let mock = MockUpstream::start_reporting(3, 5).await;
    let account = relay
        .add_account(&mock, "sk-load", json!({ "max_concurrency": 64 }))
        .await;
    let (_, key) = relay.create_key("under load").await;

    let served = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for w in 0..8 {
        let (relay, key, served, stop) = (
            Arc::clone(&relay),
            key.clone(),
            Arc::clone(&served),
            Arc::clone(&stop),
        );
        workers.push(tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(Ordering::SeqCst) {
                i += 1;
                let body = messages_body("claude-sonnet-4-5", (w + i) % 2 == 0);
                let resp = relay.messages(&key, &body).send().await.unwrap();
                match resp.status().as_u16() {
                    200 => {
                        resp.bytes().await.unwrap();
                        served.fetch_add(1, Ordering::SeqCst);
                    }
                    503 => tokio::time::sleep(Duration::from_millis(20)).await,
                    other => panic!("unexpected status {other}: {}", resp.text().await.unwrap()),
                }
            }
        }));
    }
    // With the usage read every 50 ms (a dashboard; each read writes a batch first), more
    // batches come before the failover than a marker remembers ids (64): only the newest are
    // made again, newest first, which counts none twice.
    let reading = {
        let (relay, stop) = (Arc::clone(&relay), Arc::clone(&stop));
        tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                relay.usage("").await;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(4_000)).await;
    let old = sentinels.primary.port;
    assert_eq!(
        cli(sentinels.port, &["sentinel", "failover", SERVICE]).trim(),
        "OK"
    );
    let promoted = sentinels.replica.port;
    wait_for("the promotion", Duration::from_secs(10), || {
        sentinels.primary_port() == Some(promoted)
    });
    wait_for(
        "the relay to leave the old primary",
        Duration::from_secs(5),
        || clients_of(old).is_empty(),
    );
    let during = served.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(700)).await;
    stop.store(true, Ordering::SeqCst);
    for w in workers {
        w.await.unwrap();
    }
    reading.await.unwrap();
    let n = served.load(Ordering::SeqCst);
    assert!(n > during, "served after the failover");

    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let u = relay.usage("").await;
        let in_flight = relay.account_in_flight(&account).await;
        let key_in_flight = relay.key_info(&key).await["in_flight"].as_u64();
        if u["requests"] == n && in_flight == 0 && key_in_flight == Some(0) {
            assert_eq!(u["input_tokens"], 3 * n, "{u}");
            assert_eq!(u["output_tokens"], 5 * n, "{u}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "after the failover: {} of {n} requests recorded, {in_flight} account and \
             {key_in_flight:?} key leases held",
            u["requests"]
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(mock.served() as u64, n);
}
