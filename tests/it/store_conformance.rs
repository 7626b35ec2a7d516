//! Store conformance suite.
//!
//! Every case is written once against `dyn Store`; a backend joins the suite with one
//! `conformance_tests!(name, constructor)` line, where the constructor returns a [`Backend`]: a
//! handle on one empty storage that can be opened, dropped and opened again. Cases that only make
//! sense for one backend (the embedded file lock) sit outside the macro.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use switchyard::store::embedded::EmbeddedStore;
use switchyard::store::{
    AccountRecord, AccountRuntime, Admission, Admit, Bucket, Candidate, Counters, Dimension,
    KeyRecord, Lease, Provider, RequestLogEntry, Store, StoreError, UsageBatch, UsageQuery,
};
use switchyard::usage::TokenUsage;
use tempfile::TempDir;
use tokio::sync::Barrier;

/// Small, so that the trim case does not need many entries; every backend is built with it.
const REQUEST_LOG_MAX: usize = 5;

/// One empty storage of some backend, for the lifetime of one test. A backend that needs a server
/// gives each test its own namespace (so tests can run in parallel) and its constructor returns
/// `None` when the server is not configured, which skips its tests.
trait Backend: Send + Sync + 'static {
    /// Opens the storage. After every store opened before has been dropped (and flushed), a new
    /// one sees everything they wrote.
    async fn open(&self) -> Arc<dyn Store>;
}

// --- backends ---------------------------------------------------------------------------------

struct Embedded {
    /// Kept alive with the backend: dropping it deletes the directory.
    dir: TempDir,
}

impl Backend for Embedded {
    async fn open(&self) -> Arc<dyn Store> {
        Arc::new(
            EmbeddedStore::open(self.dir.path(), REQUEST_LOG_MAX).expect("open embedded store"),
        )
    }
}

fn make_embedded() -> Option<Embedded> {
    Some(Embedded {
        dir: TempDir::new().expect("tempdir"),
    })
}

/// One `#[tokio::test]` per case for a backend: `conformance_tests!(module_name, constructor)`,
/// where `constructor()` returns a fresh [`Backend`], or `None` to skip. Multi-threaded, so that concurrent calls really
/// race.
macro_rules! conformance_tests {
    ($backend:ident, $make:ident) => {
        conformance_tests!(@cases $backend, $make;
            key_crud, account_crud, admit_caps_concurrency, lease_expires, pick_by_priority,
            pick_rotates_equals, pick_skips_full_accounts, usage_adds_batches, request_log;
            records_survive_reopen, usage_survives_reopen);
    };
    (@cases $backend:ident, $make:ident; $($store_case:ident),*; $($backend_case:ident),*) => {
        mod $backend {
            use super::Backend as _;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $store_case() {
                    let Some(backend) = super::$make() else { return };
                    super::cases::$store_case(backend.open().await).await;
                }
            )*
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $backend_case() {
                    let Some(backend) = super::$make() else { return };
                    super::cases::$backend_case(&backend).await;
                }
            )*
        }
    };
}

conformance_tests!(embedded, make_embedded);

#[tokio::test]
async fn embedded_second_open_is_locked() {
    let backend = make_embedded().expect("embedded backend");
    let first = backend.open().await;
    let second = EmbeddedStore::open(backend.dir.path(), REQUEST_LOG_MAX);
    assert!(
        matches!(second, Err(StoreError::Locked)),
        "second open: {:?}",
        second.map(|_| ())
    );
    drop(first);
    // The lock goes with the store, not with the process.
    EmbeddedStore::open(backend.dir.path(), REQUEST_LOG_MAX).expect("open after the first closed");
}

// --- fixtures ---------------------------------------------------------------------------------

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn key(id: &str, created_at: i64) -> KeyRecord {
    KeyRecord {
        id: id.to_owned(),
        name: format!("{id} name"),
        hash: format!("hash-of-{id}"),
        prefix: "sy-AbCd".to_owned(),
        enabled: true,
        created_at,
    }
}

fn account(id: &str, created_at: i64) -> AccountRecord {
    AccountRecord {
        id: id.to_owned(),
        name: format!("{id} name"),
        provider: Provider::Anthropic,
        base_url: "https://api.example.com".to_owned(),
        sealed_api_key: "sealed".to_owned(),
        priority: 0,
        schedulable: true,
        enabled: true,
        models: vec!["claude-*".to_owned()],
        max_concurrency: Some(3),
        created_at,
    }
}

fn lease(id: &str) -> Lease {
    Lease {
        id: id.to_owned(),
        ttl: Duration::from_secs(60),
    }
}

fn candidate(id: &str, priority: i32, max_concurrency: Option<u32>) -> Candidate {
    Candidate {
        account_id: id.to_owned(),
        priority,
        max_concurrency,
    }
}

fn admission(key_id: &str, max_concurrency: Option<u32>) -> Admission {
    Admission {
        key_id: key_id.to_owned(),
        max_concurrency,
    }
}

fn counters(n: u64) -> Counters {
    Counters {
        requests: n,
        input_tokens: 10 * n,
        output_tokens: 20 * n,
        cache_creation_input_tokens: 30 * n,
        cache_creation_5m_input_tokens: 10 * n,
        cache_creation_1h_input_tokens: 20 * n,
        cache_read_input_tokens: 40 * n,
        cost_nanousd: 1_000 * n,
    }
}

fn log_entry(n: i64, key_id: &str) -> RequestLogEntry {
    RequestLogEntry {
        request_id: format!("req-{n}"),
        at: 1_700_000_000_000 + n * 1_000,
        key_id: key_id.to_owned(),
        account_id: Some("acc-1".to_owned()),
        model: "claude-sonnet-4-5".to_owned(),
        surface: "messages".to_owned(),
        status: 200,
        latency_ms: 1_234,
        ttfb_ms: Some(321),
        usage: TokenUsage {
            input_tokens: n as u64,
            output_tokens: 2,
            ..TokenUsage::default()
        },
        cost_nanousd: 42,
    }
}

fn ids(entries: &[RequestLogEntry]) -> Vec<&str> {
    entries.iter().map(|e| e.request_id.as_str()).collect()
}

fn batch(
    counters: &[((Dimension, Bucket), Counters)],
    requests: Vec<RequestLogEntry>,
) -> UsageBatch {
    UsageBatch {
        // Distinct per batch, as the stats task makes them.
        id: rand::random(),
        counters: counters.iter().cloned().collect::<BTreeMap<_, _>>(),
        requests,
    }
}

// --- cases ------------------------------------------------------------------------------------

mod cases {
    use super::*;

    pub async fn key_crud(store: Arc<dyn Store>) {
        store.ping().await.expect("ping");
        // Inserted newest first: the listing must sort by created_at, not by insertion or id.
        let newer = key("a-newer", 2_000);
        let older = key("b-older", 1_000);
        store.insert_key(&newer).await.unwrap();
        store.insert_key(&older).await.unwrap();

        assert_eq!(store.key("a-newer").await.unwrap(), Some(newer.clone()));
        assert_eq!(store.key("missing").await.unwrap(), None);
        assert_eq!(
            store.key_by_hash("hash-of-b-older").await.unwrap(),
            Some(older.clone())
        );
        assert_eq!(store.key_by_hash("hash-of-missing").await.unwrap(), None);
        assert_eq!(
            store.keys().await.unwrap(),
            vec![older.clone(), newer.clone()]
        );

        // A new secret: the old hash must stop resolving, the new one must resolve.
        let rotated = KeyRecord {
            hash: "hash-rotated".to_owned(),
            enabled: false,
            ..newer.clone()
        };
        assert!(store.update_key(&rotated).await.unwrap());
        assert_eq!(store.key("a-newer").await.unwrap(), Some(rotated.clone()));
        assert_eq!(store.key_by_hash("hash-of-a-newer").await.unwrap(), None);
        assert_eq!(
            store.key_by_hash("hash-rotated").await.unwrap(),
            Some(rotated.clone())
        );
        assert!(!store.update_key(&key("missing", 3_000)).await.unwrap());
        assert_eq!(
            store.key("missing").await.unwrap(),
            None,
            "update must not insert"
        );

        assert!(store.delete_key("a-newer").await.unwrap());
        assert!(!store.delete_key("a-newer").await.unwrap());
        assert_eq!(store.key("a-newer").await.unwrap(), None);
        assert_eq!(store.key_by_hash("hash-rotated").await.unwrap(), None);
        assert_eq!(
            store.key_by_hash("hash-of-b-older").await.unwrap(),
            Some(older.clone())
        );
        assert_eq!(store.keys().await.unwrap(), vec![older]);
    }

    pub async fn account_crud(store: Arc<dyn Store>) {
        let newer = account("a-newer", 2_000);
        let older = account("b-older", 1_000);
        // Same created_at as `older`: the id breaks the tie.
        let tied = account("c-tied", 1_000);
        store.insert_account(&newer).await.unwrap();
        store.insert_account(&tied).await.unwrap();
        store.insert_account(&older).await.unwrap();

        assert_eq!(store.account("b-older").await.unwrap(), Some(older.clone()));
        assert_eq!(store.account("missing").await.unwrap(), None);
        assert_eq!(
            store.accounts().await.unwrap(),
            vec![older.clone(), tied.clone(), newer.clone()]
        );

        let changed = AccountRecord {
            priority: 7,
            max_concurrency: None,
            models: vec![],
            ..newer.clone()
        };
        assert!(store.update_account(&changed).await.unwrap());
        assert_eq!(
            store.account("a-newer").await.unwrap(),
            Some(changed.clone())
        );
        assert!(!store.update_account(&account("missing", 0)).await.unwrap());
        assert_eq!(
            store.account("missing").await.unwrap(),
            None,
            "update must not insert"
        );

        // Give the account runtime state, then delete it: the state must go with it.
        let picked = store
            .pick_account(&[candidate("a-newer", 0, Some(5))], &lease("l1"))
            .await
            .unwrap();
        assert_eq!(picked.as_deref(), Some("a-newer"));
        let runtime = store.account_runtime("a-newer").await.unwrap();
        assert_eq!(runtime.in_flight, 1);
        assert!(runtime.last_used_at > 0);

        assert!(store.delete_account("a-newer").await.unwrap());
        assert!(!store.delete_account("a-newer").await.unwrap());
        assert_eq!(store.account("a-newer").await.unwrap(), None);
        assert_eq!(
            store.account_runtime("a-newer").await.unwrap(),
            AccountRuntime::default()
        );
        assert_eq!(store.accounts().await.unwrap(), vec![older, tied]);
        assert_eq!(
            store.account_runtime("never-seen").await.unwrap(),
            AccountRuntime::default()
        );
    }

    pub async fn admit_caps_concurrency(store: Arc<dyn Store>) {
        const TASKS: usize = 50;
        const CAP: u32 = 10;
        let barrier = Arc::new(Barrier::new(TASKS));
        let mut tasks = Vec::new();
        for i in 0..TASKS {
            let store = Arc::clone(&store);
            let barrier = Arc::clone(&barrier);
            tasks.push(tokio::spawn(async move {
                barrier.wait().await;
                let admit = store
                    .admit(&admission("k1", Some(CAP)), &lease(&format!("l{i}")))
                    .await
                    .unwrap();
                (i, admit)
            }));
        }
        let mut granted = Vec::new();
        for task in tasks {
            match task.await.unwrap() {
                (i, Admit::Granted) => granted.push(i),
                (_, Admit::ConcurrencyExceeded { limit }) => assert_eq!(limit, CAP),
            }
        }
        assert_eq!(granted.len(), CAP as usize, "granted: {granted:?}");

        // Another key has its own count.
        assert_eq!(
            store
                .admit(&admission("k2", Some(1)), &lease("other"))
                .await
                .unwrap(),
            Admit::Granted
        );
        let full = Admit::ConcurrencyExceeded { limit: CAP };
        assert_eq!(
            store
                .admit(&admission("k1", Some(CAP)), &lease("x1"))
                .await
                .unwrap(),
            full
        );

        // Releasing one frees exactly one slot, even when released twice.
        let held = lease(&format!("l{}", granted[0]));
        store.release("k1", None, &held).await.unwrap();
        store.release("k1", None, &held).await.unwrap();
        store
            .release("k1", None, &lease("never-taken"))
            .await
            .unwrap();
        store
            .release("never-seen", Some("nor-this"), &held)
            .await
            .unwrap();
        assert_eq!(
            store
                .admit(&admission("k1", Some(CAP)), &lease("x2"))
                .await
                .unwrap(),
            Admit::Granted
        );
        assert_eq!(
            store
                .admit(&admission("k1", Some(CAP)), &lease("x3"))
                .await
                .unwrap(),
            full
        );

        // Unbounded keys are always admitted.
        for i in 0..20 {
            assert_eq!(
                store
                    .admit(&admission("k3", None), &lease(&format!("u{i}")))
                    .await
                    .unwrap(),
                Admit::Granted
            );
        }
    }

    pub async fn lease_expires(store: Arc<dyn Store>) {
        // Long enough that the checks before expiry finish in time on a loaded machine.
        let ttl = Duration::from_millis(300);
        let short = Lease {
            id: "short".to_owned(),
            ttl,
        };
        let started = tokio::time::Instant::now();
        assert_eq!(
            store
                .admit(&admission("k1", Some(1)), &short)
                .await
                .unwrap(),
            Admit::Granted
        );
        let picked = store
            .pick_account(&[candidate("acc", 0, Some(1))], &short)
            .await
            .unwrap();
        assert_eq!(picked.as_deref(), Some("acc"));
        assert_eq!(
            store
                .admit(&admission("k1", Some(1)), &lease("long"))
                .await
                .unwrap(),
            Admit::ConcurrencyExceeded { limit: 1 }
        );
        assert_eq!(store.account_runtime("acc").await.unwrap().in_flight, 1);
        assert_eq!(
            store
                .pick_account(&[candidate("acc", 0, Some(1))], &lease("long"))
                .await
                .unwrap(),
            None
        );
        assert!(
            started.elapsed() < ttl,
            "too slow: the checks above ran after the lease expired"
        );

        tokio::time::sleep_until(started + ttl + Duration::from_millis(100)).await;

        assert_eq!(store.account_runtime("acc").await.unwrap().in_flight, 0);
        assert_eq!(
            store
                .admit(&admission("k1", Some(1)), &lease("long"))
                .await
                .unwrap(),
            Admit::Granted
        );
        let picked = store
            .pick_account(&[candidate("acc", 0, Some(1))], &lease("long"))
            .await
            .unwrap();
        assert_eq!(picked.as_deref(), Some("acc"));
        // The long leases do not expire on their own.
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(store.account_runtime("acc").await.unwrap().in_flight, 1);
        assert_eq!(
            store
                .admit(&admission("k1", Some(1)), &lease("another"))
                .await
                .unwrap(),
            Admit::ConcurrencyExceeded { limit: 1 }
        );
    }

    pub async fn pick_by_priority(store: Arc<dyn Store>) {
        // Listed worst first: the store applies the policy, not the caller's order.
        let candidates = [
            candidate("low", 5, None),
            candidate("best", -1, None),
            candidate("mid", 0, None),
        ];
        for i in 0..4 {
            let picked = store
                .pick_account(&candidates, &lease(&format!("l{i}")))
                .await
                .unwrap();
            assert_eq!(picked.as_deref(), Some("best"), "pick {i}");
        }
        assert_eq!(store.account_runtime("best").await.unwrap().in_flight, 4);
        assert_eq!(
            store.account_runtime("mid").await.unwrap(),
            AccountRuntime::default()
        );
    }

    pub async fn pick_rotates_equals(store: Arc<dyn Store>) {
        let candidates = [
            candidate("a", 1, None),
            candidate("b", 1, None),
            candidate("c", 1, None),
        ];
        let before = now_ms();
        let mut picks = Vec::new();
        // Back to back, so several picks land in the same millisecond.
        for i in 0..6 {
            let picked = store
                .pick_account(&candidates, &lease(&format!("l{i}")))
                .await
                .unwrap();
            picks.push(picked.expect("an account"));
        }
        let counts = picks.iter().fold(HashMap::new(), |mut m, p| {
            *m.entry(p.as_str()).or_insert(0) += 1;
            m
        });
        assert_eq!(
            counts,
            HashMap::from([("a", 2), ("b", 2), ("c", 2)]),
            "picks: {picks:?}"
        );
        // Never used ones go first in the given order, then the least recently used.
        assert_eq!(picks, ["a", "b", "c", "a", "b", "c"]);
        for id in ["a", "b", "c"] {
            let runtime = store.account_runtime(id).await.unwrap();
            assert_eq!(runtime.in_flight, 2, "{id}");
            assert!(
                runtime.last_used_at >= before,
                "{id}: {runtime:?} before {before}"
            );
        }

        // Least recently used is by pick order, even within one millisecond: y then z are used,
        // then x (never used) goes first; after that y is the least recent, not x again.
        let xyz = [
            candidate("x", 1, None),
            candidate("y", 1, None),
            candidate("z", 1, None),
        ];
        let mut picks = Vec::new();
        for (i, among) in [&xyz[1..2], &xyz[2..3], &xyz[..], &xyz[..], &xyz[..]]
            .into_iter()
            .enumerate()
        {
            let picked = store
                .pick_account(among, &lease(&format!("m{i}")))
                .await
                .unwrap();
            picks.push(picked.expect("an account"));
        }
        assert_eq!(picks, ["y", "z", "x", "y", "z"]);
    }

    pub async fn pick_skips_full_accounts(store: Arc<dyn Store>) {
        let candidates = [
            candidate("first", 0, Some(1)),
            candidate("second", 1, Some(1)),
        ];
        let l1 = lease("l1");
        let l2 = lease("l2");
        let l3 = lease("l3");
        assert_eq!(
            store
                .pick_account(&candidates, &l1)
                .await
                .unwrap()
                .as_deref(),
            Some("first")
        );
        assert_eq!(
            store
                .pick_account(&candidates, &l2)
                .await
                .unwrap()
                .as_deref(),
            Some("second")
        );
        assert_eq!(store.pick_account(&candidates, &l3).await.unwrap(), None);
        assert_eq!(store.account_runtime("first").await.unwrap().in_flight, 1);
        assert_eq!(store.account_runtime("second").await.unwrap().in_flight, 1);
        // A zero cap is always full.
        assert_eq!(
            store
                .pick_account(&[candidate("zero", 0, Some(0))], &l3)
                .await
                .unwrap(),
            None
        );
        assert_eq!(store.pick_account(&[], &l3).await.unwrap(), None);

        // Releasing the account lease frees the account; releasing it again changes nothing.
        store.release("k1", Some("first"), &l1).await.unwrap();
        store.release("k1", Some("first"), &l1).await.unwrap();
        assert_eq!(store.account_runtime("first").await.unwrap().in_flight, 0);
        assert_eq!(store.account_runtime("second").await.unwrap().in_flight, 1);
        assert_eq!(
            store
                .pick_account(&candidates, &l3)
                .await
                .unwrap()
                .as_deref(),
            Some("first")
        );
        assert_eq!(
            store.pick_account(&candidates, &lease("l4")).await.unwrap(),
            None
        );

        // Without an account id, release leaves accounts alone.
        store.release("k1", None, &l2).await.unwrap();
        assert_eq!(store.account_runtime("second").await.unwrap().in_flight, 1);
    }

    pub async fn usage_adds_batches(store: Arc<dyn Store>) {
        let hour = Bucket::Hour("2026-11-22T08".to_owned());
        let other_hour = Bucket::Hour("2026-11-22T09".to_owned());
        let day = Bucket::Day("2026-11-22".to_owned());
        let k1 = Dimension::Key("k1".to_owned());
        store.record_usage(&UsageBatch::default()).await.unwrap();
        store
            .record_usage(&batch(
                &[
                    ((k1.clone(), hour.clone()), counters(1)),
                    ((k1.clone(), Bucket::Total), counters(1)),
                    ((Dimension::All, Bucket::Total), counters(1)),
                ],
                vec![],
            ))
            .await
            .unwrap();
        store
            .record_usage(&batch(
                &[
                    ((k1.clone(), hour.clone()), counters(2)),
                    ((k1.clone(), day.clone()), counters(5)),
                    // Same id and bucket in other dimensions must not mix with the key's.
                    (
                        (Dimension::Account("k1".to_owned()), hour.clone()),
                        counters(7),
                    ),
                    (
                        (Dimension::Model("k1".to_owned()), hour.clone()),
                        counters(9),
                    ),
                ],
                vec![],
            ))
            .await
            .unwrap();

        let got = store
            .usage(&UsageQuery {
                dimension: k1.clone(),
                buckets: vec![
                    other_hour.clone(),
                    hour.clone(),
                    Bucket::Total,
                    day.clone(),
                    Bucket::Month("2026-11".to_owned()),
                ],
            })
            .await
            .unwrap();
        assert_eq!(
            got,
            vec![
                counters(0),
                counters(3),
                counters(1),
                counters(5),
                counters(0)
            ]
        );
        let account = store
            .usage(&UsageQuery {
                dimension: Dimension::Account("k1".to_owned()),
                buckets: vec![hour.clone(), Bucket::Total],
            })
            .await
            .unwrap();
        assert_eq!(account, vec![counters(7), counters(0)]);
        let all = store
            .usage(&UsageQuery {
                dimension: Dimension::All,
                buckets: vec![Bucket::Total],
            })
            .await
            .unwrap();
        assert_eq!(all, vec![counters(1)]);
        let none = store
            .usage(&UsageQuery {
                dimension: Dimension::Key("nobody".to_owned()),
                buckets: vec![],
            })
            .await
            .unwrap();
        assert!(none.is_empty());
    }

    pub async fn request_log(store: Arc<dyn Store>) {
        // Two keys interleaved, over two batches, one more entry than the log keeps.
        let first: Vec<_> = (1..=3)
            .map(|n| log_entry(n, if n % 2 == 0 { "k2" } else { "k1" }))
            .collect();
        let second: Vec<_> = (4..=6)
            .map(|n| log_entry(n, if n % 2 == 0 { "k2" } else { "k1" }))
            .collect();
        store.record_usage(&batch(&[], first)).await.unwrap();
        assert_eq!(
            ids(&store.recent_requests(None, 10).await.unwrap()),
            ["req-3", "req-2", "req-1"]
        );
        store.record_usage(&batch(&[], second)).await.unwrap();

        let all = store.recent_requests(None, 100).await.unwrap();
        assert_eq!(all.len(), REQUEST_LOG_MAX);
        assert_eq!(ids(&all), ["req-6", "req-5", "req-4", "req-3", "req-2"]);
        assert_eq!(all[0], log_entry(6, "k2"), "entries come back whole");
        assert_eq!(
            ids(&store.recent_requests(None, 2).await.unwrap()),
            ["req-6", "req-5"]
        );
        assert!(store.recent_requests(None, 0).await.unwrap().is_empty());
        assert_eq!(
            ids(&store.recent_requests(Some("k1"), 100).await.unwrap()),
            ["req-5", "req-3"]
        );
        assert_eq!(
            ids(&store.recent_requests(Some("k2"), 1).await.unwrap()),
            ["req-6"]
        );
        assert!(
            store
                .recent_requests(Some("nobody"), 10)
                .await
                .unwrap()
                .is_empty()
        );
    }

    pub async fn records_survive_reopen(backend: &impl Backend) {
        let store = backend.open().await;
        store.insert_key(&key("k1", 1)).await.unwrap();
        store.insert_account(&account("a1", 1)).await.unwrap();
        store.flush().await.unwrap();
        drop(store);

        let store = backend.open().await;
        assert_eq!(store.key("k1").await.unwrap(), Some(key("k1", 1)));
        assert_eq!(
            store.key_by_hash("hash-of-k1").await.unwrap(),
            Some(key("k1", 1))
        );
        assert_eq!(store.accounts().await.unwrap(), vec![account("a1", 1)]);
    }

    pub async fn usage_survives_reopen(backend: &impl Backend) {
        let query = UsageQuery {
            dimension: Dimension::Model("m".to_owned()),
            buckets: vec![Bucket::Month("2026-11".to_owned())],
        };
        let store = backend.open().await;
        let counted = [(
            (query.dimension.clone(), query.buckets[0].clone()),
            counters(4),
        )];
        store
            .record_usage(&batch(&counted, vec![log_entry(1, "k1")]))
            .await
            .unwrap();
        store.flush().await.unwrap();
        drop(store);

        let store = backend.open().await;
        assert_eq!(store.usage(&query).await.unwrap(), vec![counters(4)]);
        assert_eq!(
            store.recent_requests(None, 10).await.unwrap(),
            vec![log_entry(1, "k1")]
        );
        // And it keeps adding on top of what was there.
        store.record_usage(&batch(&counted, vec![])).await.unwrap();
        assert_eq!(store.usage(&query).await.unwrap(), vec![counters(8)]);
    }
}
