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

use switchyard::config::RedisConfig;
use switchyard::scheduler::policy::{Health, Report, Status, Sticky};
use switchyard::store::embedded::EmbeddedStore;
use switchyard::store::redis::RedisStore;
use switchyard::store::{
    AccountRecord, AccountRelease, AccountRuntime, Admission, Admit, Binding, Bucket, Candidate,
    Counters, Dimension, KeyRecord, KeyRenewal, KeySettle, KeyState, Lease, Meter, MeterUse,
    PickRequest, Picked, Provider, Renewed, RequestFilter, RequestLogEntry, SessionPick, SmolStr,
    SpendBucket, Store, StoreError, StoreResult, Taken, UsageBatch, UsageQuery,
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

/// A namespace of its own (a random prefix) on a shared Redis or Redis Cluster: every store opened
/// from it sees the same data, and parallel tests never see each other's.
struct Redis {
    url: String,
    prefix: String,
}

impl Backend for Redis {
    async fn open(&self) -> Arc<dyn Store> {
        Arc::new(
            RedisStore::connect(&self.url, &redis_config(&self.prefix), REQUEST_LOG_MAX)
                .await
                .expect("connect to redis"),
        )
    }
}

fn redis_config(prefix: &str) -> RedisConfig {
    RedisConfig {
        prefix: prefix.to_owned(),
        ..RedisConfig::default()
    }
}

fn redis_backend(url_var: &str) -> Option<Redis> {
    Some(Redis {
        url: std::env::var(url_var).ok()?,
        prefix: format!("sy-test-{:016x}:", rand::random::<u64>()),
    })
}

/// Skipped unless `REDIS_URL` is set (see scripts/redis-test-servers.sh).
fn make_redis() -> Option<Redis> {
    redis_backend("REDIS_URL")
}

/// Skipped unless `REDIS_CLUSTER_URL` is set.
fn make_redis_cluster() -> Option<Redis> {
    redis_backend("REDIS_CLUSTER_URL")
}

/// One `#[tokio::test]` per case for a backend: `conformance_tests!(module_name, constructor)`,
/// where `constructor()` returns a fresh [`Backend`], or `None` to skip. Multi-threaded, so that concurrent calls really
/// race.
macro_rules! conformance_tests {
    ($backend:ident, $make:ident) => {
        conformance_tests!(@cases $backend, $make;
            key_crud, account_crud, admit_caps_concurrency, a_lease_admitted_twice_counts_once,
            lease_expires, pick_by_priority,
            pick_rotates_equals, pick_skips_full_accounts, usage_adds_batches,
            usage_keeps_the_newest_arrival, request_log, request_log_by_account,
            health_reports_and_recovery, concurrent_health_reports, sessions_stick_escape_and_move,
            pick_weighs_relative_load, meters_reserve_and_settle, meters_admit_atomically,
            meters_return_holds_of_expired_leases, activation_on_first_use,
            each_report_kind_and_its_recovery, family_scoped_rate_limit,
            retry_at_is_the_earliest_recovery, degraded_flag, sessions_renew_escape_and_rebind,
            concurrent_picks_respect_caps, admit_and_pick_then_finish, a_large_backlog_is_written_whole,
            a_renewed_lease_outlives_its_ttl, renewing_a_lease_given_back_or_expired_does_nothing,
            finish_binds_a_session, a_session_escapes_an_account_not_serving_its_model,
            an_account_is_written_only_over_the_revision_it_read, spend_adds_up_per_period,
            a_charge_made_again_counts_once;
            records_survive_reopen, usage_survives_reopen, a_deleted_key_leaves_no_limits_behind,
            spend_survives_reopen, sessions_survive_reopen);
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
conformance_tests!(redis, make_redis);
conformance_tests!(redis_cluster, make_redis_cluster);

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
        binding: None,
        limits: Default::default(),
        revision: 0,
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
        weight: 1,
        group: None,
        api_version: None,
        deployments: Default::default(),
        // A model map too.
        model_map: [("claude-haiku-*".to_owned(), "glm-4.5-air".to_owned())].into(),
        region: None,
        aws_access_key_id: None,
        project: None,
        // A proxy too, to come back as written.
        sealed_proxy: Some(format!("{id} sealed proxy")),
        oauth: None,
        // Budgets too.
        daily_cost_nanousd: Some(5_000_000_000),
        monthly_cost_nanousd: None,
        revision: 0,
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
        weight: 1,
        serves: true,
    }
}

/// The pick without session or family: the chosen id, or `None` when nothing can serve.
trait PickSimple {
    async fn pick_simple(
        &self,
        candidates: &[Candidate],
        lease: &Lease,
    ) -> StoreResult<Option<String>>;
}

impl<S: Store + ?Sized> PickSimple for S {
    async fn pick_simple(
        &self,
        candidates: &[Candidate],
        lease: &Lease,
    ) -> StoreResult<Option<String>> {
        let request = PickRequest {
            candidates,
            family: None,
            session: None,
            now_ms: now_ms(),
        };
        Ok(match self.pick_account(&request, lease).await? {
            Picked::Account { id, .. } => Some(id),
            Picked::Unavailable { .. } => None,
        })
    }
}

fn admission(key_id: &str, max_concurrency: Option<u32>) -> Admission {
    Admission {
        key_id: key_id.to_owned(),
        max_concurrency,
        meters: Vec::new(),
        valid_after_first_use_ms: None,
        now_ms: now_ms(),
    }
}

/// An admission at `now_ms` reserving on `meters` (bucket, limit, reserve).
fn metered(key_id: &str, now_ms: i64, meters: &[(&str, u64, u64)]) -> Admission {
    Admission {
        key_id: key_id.to_owned(),
        max_concurrency: None,
        meters: meters
            .iter()
            .map(|&(bucket, limit, reserve)| Meter {
                bucket: bucket.into(),
                limit,
                reserve,
                expires_at: Some(now_ms + 3_600_000),
            })
            .collect(),
        valid_after_first_use_ms: None,
        now_ms,
    }
}

/// Key `k1` with a day meter, a request window and activation on first use, and two requests
/// admitted on it (leases `done` and `in-flight`): their admission.
async fn k1_with_two_requests(store: &dyn Store) -> Admission {
    store.insert_key(&key("k1", 1)).await.unwrap();
    let mut admission = metered("k1", now_ms(), &[("day:x", 100, 30), ("win:req", 2, 1)]);
    admission.valid_after_first_use_ms = Some(3_600_000);
    for id in ["done", "in-flight"] {
        assert_eq!(
            store.admit(&admission, &lease(id)).await.unwrap(),
            Admit::Granted
        );
    }
    admission
}

fn used(meters: &[(&str, u64)]) -> Vec<(SmolStr, u64)> {
    meters.iter().map(|&(b, n)| (SmolStr::new(b), n)).collect()
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
        images: 2 * n,
        last_at: 0,
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
        cache_hit: n % 2 == 0,
        estimated: n % 3 == 0,
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
        // Written over the record as it was read, at the next revision; a change read before it
        // (at the revision before) must not undo it.
        let ahead = KeyRecord {
            revision: 1,
            ..rotated.clone()
        };
        assert!(!store.update_key(&ahead).await.unwrap());
        assert_eq!(store.key("a-newer").await.unwrap(), Some(newer.clone()));
        assert!(store.update_key(&rotated).await.unwrap());
        let rotated = KeyRecord {
            revision: 1,
            ..rotated
        };
        let stale = KeyRecord {
            name: "renamed from a stale read".to_owned(),
            ..newer.clone()
        };
        assert!(!store.update_key(&stale).await.unwrap());
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
        assert!(store.update_account_checked(&changed).await.unwrap());
        assert_eq!(
            store.account("a-newer").await.unwrap(),
            Some(AccountRecord {
                revision: 1,
                ..changed.clone()
            })
        );
        assert!(
            !store
                .update_account_checked(&account("missing", 0))
                .await
                .unwrap()
        );
        assert_eq!(
            store.account("missing").await.unwrap(),
            None,
            "update must not insert"
        );

        // Give the account runtime state, then delete it: the state must go with it.
        let picked = store
            .pick_simple(&[candidate("a-newer", 0, Some(5))], &lease("l1"))
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

    /// `update_account_checked` writes only over the revision it read (a renewal of an OAuth
    /// token and an admin's change cannot write over each other); claims are exclusive among
    /// instances sharing a store, until given up or lapsed.
    pub async fn an_account_is_written_only_over_the_revision_it_read(store: Arc<dyn Store>) {
        let a = account("a1", 1);
        store.insert_account(&a).await.unwrap();
        let read = store.account("a1").await.unwrap().unwrap();
        assert_eq!(read.revision, 0);
        // Two writers read revision 0: the first writes (revision 1), the second is refused.
        let mut renewal = read.clone();
        renewal.sealed_api_key = "sealed-renewed".into();
        let mut change = read.clone();
        change.priority = 9;
        assert!(store.update_account_checked(&renewal).await.unwrap());
        assert!(!store.update_account_checked(&change).await.unwrap());
        let now = store.account("a1").await.unwrap().unwrap();
        assert_eq!(
            (now.revision, now.sealed_api_key.as_str(), now.priority),
            (1, "sealed-renewed", renewal.priority)
        );
        // Made again to what is there now, the change goes, at the next revision.
        let mut again = now.clone();
        again.priority = 9;
        assert!(store.update_account_checked(&again).await.unwrap());
        let now = store.account("a1").await.unwrap().unwrap();
        assert_eq!(
            (now.revision, now.priority, now.sealed_api_key.as_str()),
            (2, 9, "sealed-renewed")
        );
        // Never inserts.
        assert!(
            !store
                .update_account_checked(&account("nope", 1))
                .await
                .unwrap()
        );
        assert_eq!(store.account("nope").await.unwrap(), None);
        // Racing writers from one read: exactly one wins.
        let wins = futures_util::future::join_all((0..8).map(|i| {
            let store = Arc::clone(&store);
            let mut mine = now.clone();
            mine.weight = 10 + i;
            async move { store.update_account_checked(&mine).await.unwrap() }
        }))
        .await;
        assert_eq!(wins.iter().filter(|w| **w).count(), 1, "{wins:?}");
        assert_eq!(store.account("a1").await.unwrap().unwrap().revision, 3);

        let shared = store.changes().is_some();
        let minute = Duration::from_secs(60);
        assert!(store.claim("oauth:a1", "o1", minute).await.unwrap());
        assert_eq!(
            store.claim("oauth:a1", "o2", minute).await.unwrap(),
            !shared
        );
        // Its owner may claim it again.
        assert!(store.claim("oauth:a1", "o1", minute).await.unwrap());
        // Only its owner gives it up.
        store.unclaim("oauth:a1", "o2").await.unwrap();
        assert_eq!(
            store.claim("oauth:a1", "o3", minute).await.unwrap(),
            !shared
        );
        store.unclaim("oauth:a1", "o1").await.unwrap();
        assert!(store.claim("oauth:a1", "o4", minute).await.unwrap());
        // A claim lapses by itself.
        assert!(
            store
                .claim("oauth:a2", "o1", Duration::from_millis(50))
                .await
                .unwrap()
        );
        tokio::time::sleep(Duration::from_millis(120)).await;
        assert!(store.claim("oauth:a2", "o2", minute).await.unwrap());
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
                (_, other) => panic!("unexpected {other:?}"),
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

    /// The same admission sent twice (Redis: fred sends a call again when its reply was lost,
    /// after the first run took effect) holds one slot, which one release frees: the embedded
    /// store renews the lease, Redis refuses the second call.
    pub async fn a_lease_admitted_twice_counts_once(store: Arc<dyn Store>) {
        let two = admission("k1", Some(2));
        let held = lease("r1");
        assert_eq!(store.admit(&two, &held).await.unwrap(), Admit::Granted);
        match store.admit(&two, &held).await {
            Ok(Admit::Granted) | Err(_) => {}
            Ok(other) => panic!("the second run: {other:?}"),
        }
        store.release("k1", None, &held).await.unwrap();
        for other in ["r2", "r3"] {
            assert_eq!(
                store.admit(&two, &lease(other)).await.unwrap(),
                Admit::Granted,
                "both slots are free after one release"
            );
        }
        // A replay that the first run's own count refuses (the key's last slot) is not a
        // refusal the caller would give nothing back after.
        let one = admission("k2", Some(1));
        let held = lease("s1");
        assert_eq!(store.admit(&one, &held).await.unwrap(), Admit::Granted);
        match store.admit(&one, &held).await {
            Ok(Admit::Granted) | Err(_) => {}
            Ok(other) => panic!("the second run: {other:?}"),
        }
        store.release("k2", None, &held).await.unwrap();
        assert_eq!(
            store.admit(&one, &lease("s2")).await.unwrap(),
            Admit::Granted
        );
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
            .pick_simple(&[candidate("acc", 0, Some(1))], &short)
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
                .pick_simple(&[candidate("acc", 0, Some(1))], &lease("long"))
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
            .pick_simple(&[candidate("acc", 0, Some(1))], &lease("long"))
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

    pub async fn meters_reserve_and_settle(store: Arc<dyn Store>) {
        let t = now_ms();
        let m = [("day:x", 100, 30), ("win:req", 10, 1)];
        for i in 0..3 {
            let got = store
                .admit(&metered("k1", t, &m), &lease(&format!("l{i}")))
                .await
                .unwrap();
            assert_eq!(got, Admit::Granted, "admission {i}");
        }
        // 90 held: a fourth does not fit, and says which counter is full and why.
        assert_eq!(
            store
                .admit(&metered("k1", t, &m), &lease("l3"))
                .await
                .unwrap(),
            Admit::MeterFull {
                meter: 0,
                usage: MeterUse { used: 0, held: 90 }
            }
        );
        let state = |s: Arc<dyn Store>| async move {
            s.key_state(
                "k1",
                &[
                    SmolStr::new_static("day:x"),
                    SmolStr::new_static("win:req"),
                    SmolStr::new_static("none"),
                ],
            )
            .await
            .unwrap()
        };
        assert_eq!(
            state(Arc::clone(&store)).await,
            KeyState {
                in_flight: 3,
                meters: vec![
                    MeterUse { used: 0, held: 90 },
                    MeterUse { used: 0, held: 3 },
                    MeterUse::default()
                ],
                first_used_at: None,
            }
        );
        // Settling replaces the reservation by the real use; twice counts once.
        let spent = used(&[("day:x", 10), ("win:req", 1)]);
        store.settle("k1", &lease("l0"), &spent).await.unwrap();
        store.settle("k1", &lease("l0"), &spent).await.unwrap();
        assert_eq!(
            state(Arc::clone(&store)).await.meters[..2],
            [
                MeterUse { used: 10, held: 60 },
                MeterUse { used: 1, held: 2 }
            ]
        );
        // 10 + 60 + 30 = 100 fits exactly.
        assert_eq!(
            store
                .admit(&metered("k1", t, &m), &lease("l4"))
                .await
                .unwrap(),
            Admit::Granted
        );
        for l in ["l1", "l2", "l4"] {
            store
                .settle("k1", &lease(l), &used(&[("day:x", 25), ("win:req", 1)]))
                .await
                .unwrap();
        }
        let s = state(Arc::clone(&store)).await;
        assert_eq!(s.in_flight, 0);
        assert_eq!(
            s.meters[..2],
            [
                MeterUse { used: 85, held: 0 },
                MeterUse { used: 4, held: 0 }
            ]
        );
        // Nothing held and some budget left: a request whose estimate exceeds what is left still
        // gets through (the overshoot is bounded by one estimate); with it in flight, no other.
        assert_eq!(
            store
                .admit(&metered("k1", t, &m), &lease("l5"))
                .await
                .unwrap(),
            Admit::Granted
        );
        assert!(matches!(
            store
                .admit(&metered("k1", t, &m), &lease("l6"))
                .await
                .unwrap(),
            Admit::MeterFull { meter: 0, .. }
        ));
        store
            .settle("k1", &lease("l5"), &used(&[("day:x", 20), ("win:req", 1)]))
            .await
            .unwrap();
        // Spent: refused whatever the reservation, with the use as it is.
        assert_eq!(
            store
                .admit(&metered("k1", t, &[("day:x", 100, 0)]), &lease("l7"))
                .await
                .unwrap(),
            Admit::MeterFull {
                meter: 0,
                usage: MeterUse { used: 105, held: 0 }
            }
        );
        // A dropped request (nothing used) only returns its hold; other keys count apart.
        assert_eq!(
            store
                .admit(&metered("k2", t, &m), &lease("m1"))
                .await
                .unwrap(),
            Admit::Granted
        );
        store.settle("k2", &lease("m1"), &[]).await.unwrap();
        let s = store
            .key_state("k2", &[SmolStr::new_static("day:x")])
            .await
            .unwrap();
        assert_eq!(s.meters, vec![MeterUse::default()]);
        // A refused concurrency check reserves nothing.
        let mut capped = metered("k3", t, &m);
        capped.max_concurrency = Some(1);
        assert_eq!(
            store.admit(&capped, &lease("c1")).await.unwrap(),
            Admit::Granted
        );
        assert_eq!(
            store.admit(&capped, &lease("c2")).await.unwrap(),
            Admit::ConcurrencyExceeded { limit: 1 }
        );
        let s = store
            .key_state("k3", &[SmolStr::new_static("day:x")])
            .await
            .unwrap();
        assert_eq!(
            (s.in_flight, s.meters[0]),
            (1, MeterUse { used: 0, held: 30 })
        );
    }

    pub async fn meters_admit_atomically(store: Arc<dyn Store>) {
        // 50 at once against a budget that holds 10 reservations: exactly 10 get through.
        const TASKS: usize = 50;
        let t = now_ms();
        let barrier = Arc::new(Barrier::new(TASKS));
        let mut tasks = Vec::new();
        for i in 0..TASKS {
            let store = Arc::clone(&store);
            let barrier = Arc::clone(&barrier);
            tasks.push(tokio::spawn(async move {
                barrier.wait().await;
                let m = [("total", 1_000, 100), ("week:w", 5_000, 100)];
                store
                    .admit(&metered("k1", t, &m), &lease(&format!("l{i}")))
                    .await
                    .unwrap()
            }));
        }
        let mut granted = 0;
        for task in tasks {
            match task.await.unwrap() {
                Admit::Granted => granted += 1,
                Admit::MeterFull { meter: 0, .. } => {}
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(granted, 10);
        let s = store
            .key_state(
                "k1",
                &[SmolStr::new_static("total"), SmolStr::new_static("week:w")],
            )
            .await
            .unwrap();
        assert_eq!(
            s.meters,
            vec![
                MeterUse {
                    used: 0,
                    held: 1_000
                },
                MeterUse {
                    used: 0,
                    held: 1_000
                }
            ]
        );
    }

    /// The hot path's two calls: the admission and the pick taken together, all or nothing, and
    /// both leases given back together, once.
    pub async fn admit_and_pick_then_finish(store: Arc<dyn Store>) {
        let t = now_ms();
        let mut admission = metered("k1", t, &[("day:x", 100, 30), ("win:req", 2, 1)]);
        admission.max_concurrency = Some(5);
        let capped = [candidate("a1", 0, Some(1))];
        let request = |candidates| PickRequest {
            candidates,
            family: None,
            session: None,
            now_ms: t,
        };
        let key_state = |s: Arc<dyn Store>| async move {
            s.key_state(
                "k1",
                &[SmolStr::new_static("day:x"), SmolStr::new_static("win:req")],
            )
            .await
            .unwrap()
        };

        // Both taken.
        let taken = store
            .admit_and_pick(
                &admission,
                &lease("k-1"),
                &request(&capped),
                &lease("k-1.1"),
            )
            .await
            .unwrap();
        assert!(
            matches!(&taken, Taken::Picked(Picked::Account { id, .. }) if id == "a1"),
            "{taken:?}"
        );
        let s = key_state(Arc::clone(&store)).await;
        assert_eq!(s.in_flight, 1);
        assert_eq!(
            s.meters,
            [
                MeterUse { used: 0, held: 30 },
                MeterUse { used: 0, held: 1 }
            ]
        );
        assert_eq!(store.account_runtime("a1").await.unwrap().in_flight, 1);

        // The account is full: nothing is taken, the key's lease neither.
        let taken = store
            .admit_and_pick(
                &admission,
                &lease("k-2"),
                &request(&capped),
                &lease("k-2.1"),
            )
            .await
            .unwrap();
        assert!(
            matches!(taken, Taken::Picked(Picked::Unavailable { .. })),
            "{taken:?}"
        );
        assert_eq!(key_state(Arc::clone(&store)).await, s);

        // A refused admission takes no account.
        let free = [candidate("a2", 0, None)];
        let mut full = admission.clone();
        full.meters[1].limit = 1;
        let taken = store
            .admit_and_pick(&full, &lease("k-3"), &request(&free), &lease("k-3.1"))
            .await
            .unwrap();
        assert_eq!(
            taken,
            Taken::Refused(Admit::MeterFull {
                meter: 1,
                usage: MeterUse { used: 0, held: 1 }
            })
        );
        assert_eq!(store.account_runtime("a2").await.unwrap().in_flight, 0);

        // Both given back in one call, counted once however often it is repeated.
        let key = KeySettle {
            key_id: "k1".to_owned(),
            lease: lease("k-1"),
            reserved: used(&[("day:x", 30), ("win:req", 1)]),
            used: used(&[("day:x", 12), ("win:req", 1)]),
        };
        let account = AccountRelease {
            key_id: "k1".to_owned(),
            account_id: "a1".to_owned(),
            lease: lease("k-1.1"),
        };
        for _ in 0..2 {
            store
                .finish(Some(&key), Some(&account), None)
                .await
                .unwrap();
        }
        let s = key_state(Arc::clone(&store)).await;
        assert_eq!(s.in_flight, 0);
        assert_eq!(
            s.meters,
            [
                MeterUse { used: 12, held: 0 },
                MeterUse { used: 1, held: 0 }
            ]
        );
        assert_eq!(store.account_runtime("a1").await.unwrap().in_flight, 0);

        // The account serves again; finishing only the account leaves the key's lease held.
        let taken = store
            .admit_and_pick(
                &admission,
                &lease("k-4"),
                &request(&capped),
                &lease("k-4.1"),
            )
            .await
            .unwrap();
        assert!(
            matches!(taken, Taken::Picked(Picked::Account { .. })),
            "{taken:?}"
        );
        let account = AccountRelease {
            lease: lease("k-4.1"),
            ..account
        };
        store.finish(None, Some(&account), None).await.unwrap();
        assert_eq!(store.account_runtime("a1").await.unwrap().in_flight, 0);
        assert_eq!(key_state(Arc::clone(&store)).await.in_flight, 1);
        let key = KeySettle {
            lease: lease("k-4"),
            used: used(&[("day:x", 0), ("win:req", 0)]),
            ..key
        };
        store.finish(Some(&key), None, None).await.unwrap();
        let s = key_state(Arc::clone(&store)).await;
        assert_eq!(s.in_flight, 0);
        assert_eq!(
            s.meters,
            [
                MeterUse { used: 12, held: 0 },
                MeterUse { used: 1, held: 0 }
            ]
        );
    }

    /// A request still in progress keeps its leases past their ttl by renewing them: the key's
    /// concurrency slot and its reservations, and the account's slot.
    pub async fn a_renewed_lease_outlives_its_ttl(store: Arc<dyn Store>) {
        // The key's lease is judged by the caller's clock: no sleeping.
        let t = now_ms();
        let m = [("day:x", 100, 80)];
        let at = |now: i64| {
            let mut a = metered("k1", now, &m);
            a.max_concurrency = Some(1);
            a
        };
        assert_eq!(
            store.admit(&at(t), &lease("k-1")).await.unwrap(),
            Admit::Granted
        );
        let key = KeyRenewal {
            key_id: "k1".to_owned(),
            lease: lease("k-1"),
            reserved: used(&[("day:x", 80)]),
        };
        let only_key = Renewed {
            key: true,
            account: false,
        };
        // Renewed 40 s in, the 60 s lease runs to 100 s; a renewal with an older clock does not
        // shorten it.
        assert_eq!(
            store.renew(Some(&key), None, t + 40_000).await.unwrap(),
            only_key
        );
        assert_eq!(
            store.renew(Some(&key), None, t + 10_000).await.unwrap(),
            only_key
        );
        // Past its first deadline it still holds its slot, and its reservation with it.
        for now in [t + 60_001, t + 99_999] {
            assert_eq!(
                store.admit(&at(now), &lease("k-2")).await.unwrap(),
                Admit::ConcurrencyExceeded { limit: 1 },
                "at +{} ms",
                now - t
            );
            let mut uncapped = at(now);
            uncapped.max_concurrency = None;
            assert!(
                matches!(
                    store.admit(&uncapped, &lease("k-2")).await.unwrap(),
                    Admit::MeterFull { .. }
                ),
                "at +{} ms",
                now - t
            );
        }
        // Past the renewed deadline it is gone.
        assert_eq!(
            store.admit(&at(t + 100_001), &lease("k-2")).await.unwrap(),
            Admit::Granted
        );
        let s = store
            .key_state("k1", &[SmolStr::new_static("day:x")])
            .await
            .unwrap();
        assert_eq!(s.in_flight, 1);
        assert_eq!(s.meters, vec![MeterUse { used: 0, held: 80 }]);

        // The account's lease runs on the store's own clock: a short ttl, and real time (long
        // enough for a loaded machine: the checks have most of a second to run).
        let ttl = Duration::from_millis(2_000);
        let short = Lease {
            id: "a-1".to_owned(),
            ttl,
        };
        let capped = [candidate("acc", 0, Some(1))];
        let started = tokio::time::Instant::now();
        assert_eq!(
            store.pick_simple(&capped, &short).await.unwrap().as_deref(),
            Some("acc")
        );
        tokio::time::sleep(ttl / 2).await;
        let account = AccountRelease {
            key_id: "k1".to_owned(),
            account_id: "acc".to_owned(),
            lease: short.clone(),
        };
        let renewed_at = tokio::time::Instant::now();
        assert_eq!(
            store.renew(None, Some(&account), now_ms()).await.unwrap(),
            Renewed {
                key: false,
                account: true
            }
        );
        assert!(
            renewed_at < started + ttl,
            "too slow: the renewal came after the lease expired"
        );
        tokio::time::sleep_until(started + ttl + Duration::from_millis(200)).await;
        assert_eq!(store.account_runtime("acc").await.unwrap().in_flight, 1);
        assert_eq!(
            store.pick_simple(&capped, &lease("a-2")).await.unwrap(),
            None
        );
        assert!(
            renewed_at.elapsed() < ttl,
            "too slow: the checks above ran after the renewed lease expired"
        );
        // Not renewed again, it expires in its turn.
        tokio::time::sleep_until(renewed_at + ttl + Duration::from_millis(200)).await;
        assert_eq!(store.account_runtime("acc").await.unwrap().in_flight, 0);
    }

    /// A renewal never brings back a lease that was given back, nor one past its deadline: its
    /// slot and holds went back (or are about to), and others may have taken them since.
    pub async fn renewing_a_lease_given_back_or_expired_does_nothing(store: Arc<dyn Store>) {
        let t = now_ms();
        let mut admission = metered("k1", t, &[("day:x", 100, 80)]);
        admission.max_concurrency = Some(1);
        let capped = [candidate("acc", 0, Some(1))];
        let request = PickRequest {
            candidates: &capped,
            family: None,
            session: None,
            now_ms: t,
        };
        let taken = store
            .admit_and_pick(&admission, &lease("k-1"), &request, &lease("k-1.1"))
            .await
            .unwrap();
        assert!(
            matches!(taken, Taken::Picked(Picked::Account { .. })),
            "{taken:?}"
        );
        let settle = KeySettle {
            key_id: "k1".to_owned(),
            lease: lease("k-1"),
            reserved: used(&[("day:x", 80)]),
            used: used(&[("day:x", 5)]),
        };
        let key = KeyRenewal {
            key_id: "k1".to_owned(),
            lease: lease("k-1"),
            reserved: used(&[("day:x", 80)]),
        };
        let account = AccountRelease {
            key_id: "k1".to_owned(),
            account_id: "acc".to_owned(),
            lease: lease("k-1.1"),
        };
        store
            .finish(Some(&settle), Some(&account), None)
            .await
            .unwrap();

        // Given back: nothing to renew, and nothing comes back.
        assert_eq!(
            store
                .renew(Some(&key), Some(&account), t + 1_000)
                .await
                .unwrap(),
            Renewed::default()
        );
        let s = store
            .key_state("k1", &[SmolStr::new_static("day:x")])
            .await
            .unwrap();
        assert_eq!(s.in_flight, 0);
        assert_eq!(s.meters, vec![MeterUse { used: 5, held: 0 }]);
        assert_eq!(store.account_runtime("acc").await.unwrap().in_flight, 0);
        // Leases never taken neither.
        let unknown = KeyRenewal {
            key_id: "k9".to_owned(),
            ..key.clone()
        };
        let elsewhere = AccountRelease {
            account_id: "nowhere".to_owned(),
            ..account.clone()
        };
        assert_eq!(
            store
                .renew(Some(&unknown), Some(&elsewhere), t + 1_000)
                .await
                .unwrap(),
            Renewed::default()
        );

        // A key lease at its deadline, not swept yet, is not renewed: the next admission finds
        // it expired and takes its place.
        assert_eq!(
            store.admit(&admission, &lease("k-2")).await.unwrap(),
            Admit::Granted
        );
        let second = KeyRenewal {
            lease: lease("k-2"),
            ..key.clone()
        };
        assert_eq!(
            store.renew(Some(&second), None, t + 60_000).await.unwrap(),
            Renewed::default()
        );
        let mut later = admission.clone();
        later.now_ms = t + 60_001;
        assert_eq!(
            store.admit(&later, &lease("k-3")).await.unwrap(),
            Admit::Granted
        );
        // Swept now: still nothing to renew, and its late settle still counts its use, once.
        assert_eq!(
            store.renew(Some(&second), None, t + 60_002).await.unwrap(),
            Renewed::default()
        );
        for _ in 0..2 {
            store
                .settle("k1", &lease("k-2"), &used(&[("day:x", 7)]))
                .await
                .unwrap();
        }
        let s = store
            .key_state("k1", &[SmolStr::new_static("day:x")])
            .await
            .unwrap();
        assert_eq!(s.in_flight, 1);
        assert_eq!(s.meters, vec![MeterUse { used: 12, held: 80 }]);

        // An account lease past its deadline is not renewed either.
        let short = Lease {
            id: "a-short".to_owned(),
            ttl: Duration::from_millis(100),
        };
        let free = [candidate("acc2", 0, Some(1))];
        assert_eq!(
            store.pick_simple(&free, &short).await.unwrap().as_deref(),
            Some("acc2")
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        let expired = AccountRelease {
            key_id: "k1".to_owned(),
            account_id: "acc2".to_owned(),
            lease: short,
        };
        assert_eq!(
            store.renew(None, Some(&expired), now_ms()).await.unwrap(),
            Renewed::default()
        );
        assert_eq!(store.account_runtime("acc2").await.unwrap().in_flight, 0);
    }

    pub async fn meters_return_holds_of_expired_leases(store: Arc<dyn Store>) {
        // Lease expiry is judged by the caller's clock: no sleeping.
        let t = now_ms();
        let short = Lease {
            id: "short".to_owned(),
            ttl: Duration::from_secs(60),
        };
        let m = [("day:x", 100, 80)];
        assert_eq!(
            store.admit(&metered("k1", t, &m), &short).await.unwrap(),
            Admit::Granted
        );
        assert!(matches!(
            store
                .admit(&metered("k1", t + 59_000, &m), &lease("l1"))
                .await
                .unwrap(),
            Admit::MeterFull { .. }
        ));
        // A minute later the crashed instance's lease is gone, and its hold with it.
        assert_eq!(
            store
                .admit(&metered("k1", t + 60_001, &m), &lease("l1"))
                .await
                .unwrap(),
            Admit::Granted
        );
        let s = store
            .key_state("k1", &[SmolStr::new_static("day:x")])
            .await
            .unwrap();
        assert_eq!(s.meters, vec![MeterUse { used: 0, held: 80 }]);
        // Its late settle still counts what it used, and returns no hold twice; settled again,
        // it counts once.
        for _ in 0..2 {
            store
                .settle("k1", &short, &used(&[("day:x", 7)]))
                .await
                .unwrap();
        }
        let s = store
            .key_state("k1", &[SmolStr::new_static("day:x")])
            .await
            .unwrap();
        assert_eq!(s.meters, vec![MeterUse { used: 7, held: 80 }]);
    }

    pub async fn activation_on_first_use(store: Arc<dyn Store>) {
        let t = now_ms();
        let mut a = metered("k1", t, &[]);
        a.valid_after_first_use_ms = Some(1_000);
        let s = store.key_state("k1", &[]).await.unwrap();
        assert_eq!(s.first_used_at, None);
        // Requests that were refused, or that no account could serve, do not start the clock.
        let mut full = metered("k1", t - 500, &[("day:x", 0, 1)]);
        full.valid_after_first_use_ms = Some(1_000);
        assert!(matches!(
            store.admit(&full, &lease("l0")).await.unwrap(),
            Admit::MeterFull { .. }
        ));
        let mut early = a.clone();
        early.now_ms = t - 500;
        let none = PickRequest {
            candidates: &[],
            family: None,
            session: None,
            now_ms: t - 500,
        };
        let taken = store
            .admit_and_pick(&early, &lease("l0"), &none, &lease("l0.1"))
            .await
            .unwrap();
        assert!(
            matches!(taken, Taken::Picked(Picked::Unavailable { .. })),
            "{taken:?}"
        );
        let s = store.key_state("k1", &[]).await.unwrap();
        assert_eq!((s.first_used_at, s.in_flight), (None, 0));
        assert_eq!(store.admit(&a, &lease("l1")).await.unwrap(), Admit::Granted);
        assert_eq!(
            store.key_state("k1", &[]).await.unwrap().first_used_at,
            Some(t)
        );
        a.now_ms = t + 999;
        assert_eq!(store.admit(&a, &lease("l2")).await.unwrap(), Admit::Granted);
        a.now_ms = t + 1_000;
        assert_eq!(
            store.admit(&a, &lease("l3")).await.unwrap(),
            Admit::Expired { first_used_at: t }
        );
        // The clock started at the first request, not at this one.
        assert_eq!(
            store.key_state("k1", &[]).await.unwrap().first_used_at,
            Some(t)
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
                .pick_simple(&candidates, &lease(&format!("l{i}")))
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
                .pick_simple(&candidates, &lease(&format!("l{i}")))
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
                .pick_simple(among, &lease(&format!("m{i}")))
                .await
                .unwrap();
            picks.push(picked.expect("an account"));
        }
        assert_eq!(picks, ["y", "z", "x", "y", "z"]);
    }

    fn request<'a>(
        candidates: &'a [Candidate],
        now_ms: i64,
        session: Option<SessionPick<'a>>,
    ) -> PickRequest<'a> {
        PickRequest {
            candidates,
            family: Some("sonnet"),
            session,
            now_ms,
        }
    }

    async fn picked(store: &Arc<dyn Store>, req: &PickRequest<'_>, lease_id: &str) -> Picked {
        store.pick_account(req, &lease(lease_id)).await.unwrap()
    }

    fn id_of(p: &Picked) -> &str {
        match p {
            Picked::Account { id, .. } => id,
            Picked::Unavailable { .. } => panic!("nothing picked: {p:?}"),
        }
    }

    pub async fn health_reports_and_recovery(store: Arc<dyn Store>) {
        let now = now_ms();
        let cands = [candidate("h1", 0, None), candidate("h2", 1, None)];
        let fail = Report::Failure {
            base_ms: 1_000,
            max_ms: 8_000,
            error: "502".into(),
        };
        store.report_health("h1", &fail, now).await.unwrap();
        store.report_health("h1", &fail, now).await.unwrap();
        let rt = store.account_runtime("h1").await.unwrap();
        assert_eq!(rt.health.consecutive_failures, 2);
        assert_eq!(
            (rt.health.status, rt.health.until),
            (Status::CoolingDown, now + 2_000)
        );
        // Out while cooling down, back on its own at the end; degraded until a success is reported.
        assert_eq!(
            id_of(&picked(&store, &request(&cands, now + 1_999, None), "l1").await),
            "h2"
        );
        let back = picked(&store, &request(&cands, now + 2_000, None), "l2").await;
        assert_eq!(
            back,
            Picked::Account {
                id: "h1".into(),
                sticky: Sticky::None,
                degraded: true
            }
        );
        store
            .report_health(
                "h1",
                &Report::Success {
                    sent_at: now + 2_001,
                },
                now + 2_001,
            )
            .await
            .unwrap();
        assert_eq!(
            store
                .account_runtime("h1")
                .await
                .unwrap()
                .health
                .consecutive_failures,
            0
        );
        // A family limit leaves other families alone.
        let opus = Report::RateLimited {
            until: now + 60_000,
            family: Some("opus".into()),
            error: "429".into(),
        };
        store.report_health("h1", &opus, now).await.unwrap();
        let mut req = request(&cands, now + 3_000, None);
        assert_eq!(
            id_of(&picked(&store, &req, "l3").await),
            "h1",
            "sonnet still served"
        );
        req.family = Some("opus");
        assert_eq!(id_of(&picked(&store, &req, "l4").await), "h2");
        // Unauthorized until reset; with both out, retry_at is the earliest recovery.
        store
            .report_health(
                "h1",
                &Report::Unauthorized {
                    error: "401".into(),
                },
                now,
            )
            .await
            .unwrap();
        let limited = Report::RateLimited {
            until: now + 9_000,
            family: None,
            error: "429".into(),
        };
        store.report_health("h2", &limited, now).await.unwrap();
        let req = request(&cands, now + 5_000, None);
        assert_eq!(
            picked(&store, &req, "l5").await,
            Picked::Unavailable {
                retry_at: Some(now + 9_000)
            }
        );
        store.reset_health("h1").await.unwrap();
        assert_eq!(
            store.account_runtime("h1").await.unwrap().health,
            Health::default()
        );
        assert_eq!(id_of(&picked(&store, &req, "l6").await), "h1");
    }

    pub async fn concurrent_health_reports(store: Arc<dyn Store>) {
        let now = now_ms();
        let mut tasks = Vec::new();
        for _ in 0..20 {
            let store = Arc::clone(&store);
            tasks.push(tokio::spawn(async move {
                let fail = Report::Failure {
                    base_ms: 10,
                    max_ms: 1_000,
                    error: "500".into(),
                };
                store.report_health("racy", &fail, now).await.unwrap()
            }));
        }
        // Each report was applied to what the one before it left: every streak length before
        // a report was seen by exactly one of them.
        let mut seen = Vec::new();
        for t in tasks {
            seen.push(t.await.unwrap().before.consecutive_failures);
        }
        seen.sort_unstable();
        assert_eq!(seen, (0..20).collect::<Vec<u32>>());
        assert_eq!(
            store
                .account_runtime("racy")
                .await
                .unwrap()
                .health
                .consecutive_failures,
            20
        );
    }

    /// A session bound to an account that does not serve the model asked for goes elsewhere
    /// and keeps its binding, under either policy; one whose account was tried by the request
    /// moves under `move`. Both stores decide alike.
    pub async fn a_session_escapes_an_account_not_serving_its_model(store: Arc<dyn Store>) {
        let now = now_ms();
        let session = |move_on_overflow| {
            Some(SessionPick {
                id: "sess-n",
                ttl: Duration::from_secs(60),
                move_on_overflow,
                write: true,
            })
        };
        let both = [candidate("n1", 0, None), candidate("n2", 1, None)];
        let first = picked(&store, &request(&both, now, session(true)), "a").await;
        assert_eq!(id_of(&first), "n1");
        let not_serving = [
            Candidate {
                serves: false,
                ..candidate("n1", 0, Some(0))
            },
            candidate("n2", 1, None),
        ];
        for (i, move_on_overflow) in [false, true].into_iter().enumerate() {
            let p = picked(
                &store,
                &request(&not_serving, now, session(move_on_overflow)),
                &format!("b{i}"),
            )
            .await;
            assert!(
                matches!(&p, Picked::Account { id, sticky: Sticky::Escaped, .. } if id == "n2"),
                "move {move_on_overflow}: {p:?}"
            );
            let p = picked(
                &store,
                &request(&both, now, session(true)),
                &format!("c{i}"),
            )
            .await;
            assert!(
                matches!(&p, Picked::Account { id, sticky: Sticky::Hit, .. } if id == "n1"),
                "move {move_on_overflow}: the binding moved: {p:?}"
            );
        }
        // Tried by this request (no capacity, but serving): `move` moves it.
        let tried = [candidate("n1", 0, Some(0)), candidate("n2", 1, None)];
        let p = picked(&store, &request(&tried, now, session(true)), "d").await;
        assert!(
            matches!(&p, Picked::Account { id, sticky: Sticky::Moved, .. } if id == "n2"),
            "{p:?}"
        );
        // Nothing else serves: unavailable, with no recovery to wait for.
        let alone = [Candidate {
            serves: false,
            ..candidate("n2", 0, Some(0))
        }];
        let p = store
            .pick_account(&request(&alone, now, session(true)), &lease("e"))
            .await
            .unwrap();
        assert_eq!(p, Picked::Unavailable { retry_at: None });
    }

    pub async fn sessions_stick_escape_and_move(store: Arc<dyn Store>) {
        let now = now_ms();
        let cands = [
            candidate("s1", 0, None),
            candidate("s2", 0, None),
            candidate("s3", 0, None),
        ];
        let session = |id, move_on_overflow| {
            Some(SessionPick {
                id,
                ttl: Duration::from_secs(60),
                move_on_overflow,
                write: true,
            })
        };
        let first = picked(&store, &request(&cands, now, session("sess", false)), "a").await;
        let home = id_of(&first).to_owned();
        assert!(matches!(
            first,
            Picked::Account {
                sticky: Sticky::Bound,
                ..
            }
        ));
        for i in 0..5 {
            let p = picked(
                &store,
                &request(&cands, now, session("sess", false)),
                &format!("b{i}"),
            )
            .await;
            assert_eq!(
                (id_of(&p), &p),
                (
                    home.as_str(),
                    &Picked::Account {
                        id: home.clone(),
                        sticky: Sticky::Hit,
                        degraded: false
                    }
                )
            );
        }
        let out = Report::Overloaded {
            until: now + 10_000,
            error: "529".into(),
        };
        store.report_health(&home, &out, now).await.unwrap();
        let p = picked(
            &store,
            &request(&cands, now + 1, session("sess", false)),
            "c",
        )
        .await;
        assert!(matches!(&p, Picked::Account { id, sticky: Sticky::Escaped, .. } if *id != home));
        // Escape kept the binding: home again once it recovers.
        let p = picked(
            &store,
            &request(&cands, now + 10_000, session("sess", false)),
            "d",
        )
        .await;
        assert_eq!(id_of(&p), home);
        let out_again = Report::Overloaded {
            until: now + 20_000,
            error: "529".into(),
        };
        store
            .report_health(&home, &out_again, now + 10_000)
            .await
            .unwrap();
        let moved = picked(
            &store,
            &request(&cands, now + 10_001, session("sess", true)),
            "e",
        )
        .await;
        assert!(matches!(
            &moved,
            Picked::Account {
                sticky: Sticky::Moved,
                ..
            }
        ));
        let p = picked(
            &store,
            &request(&cands, now + 30_000, session("sess", true)),
            "f",
        )
        .await;
        assert_eq!(
            (id_of(&p), id_of(&moved)),
            (id_of(&moved), id_of(&p)),
            "the binding moved"
        );
        // A binding expires with its ttl.
        let short = Some(SessionPick {
            id: "brief",
            ttl: Duration::from_millis(100),
            move_on_overflow: false,
            write: true,
        });
        picked(&store, &request(&cands, now, short), "g").await;
        tokio::time::sleep(Duration::from_millis(250)).await;
        let p = picked(&store, &request(&cands, now, short), "h").await;
        assert!(
            matches!(
                p,
                Picked::Account {
                    sticky: Sticky::Bound,
                    ..
                }
            ),
            "{p:?}"
        );
    }

    pub async fn pick_weighs_relative_load(store: Arc<dyn Store>) {
        let now = now_ms();
        let mut big = candidate("big", 0, Some(10));
        big.weight = 1;
        let small = candidate("small", 0, Some(4));
        // Two requests in flight on each: 2/10 beats 2/4.
        for (id, i) in [("big", 0), ("big", 1), ("small", 2), ("small", 3)] {
            let only = [candidate(id, 0, None)];
            picked(&store, &request(&only, now, None), &format!("w{i}")).await;
        }
        let both = [big.clone(), small.clone()];
        assert_eq!(
            id_of(&picked(&store, &request(&both, now, None), "w4").await),
            "big"
        );
        // Weight scales capacity: small with weight 10 (2/40) beats big (3/10).
        let mut heavy = small;
        heavy.weight = 10;
        let both = [big, heavy];
        assert_eq!(
            id_of(&picked(&store, &request(&both, now, None), "w5").await),
            "small"
        );
        // No cap counts as a cap of 1000: 3 in flight (3/1000) loses to 1 of a cap of 500
        // (1/500), wins against 1 of a cap of 200.
        for i in 0..3 {
            let only = [candidate("open", 0, None)];
            picked(&store, &request(&only, now, None), &format!("o{i}")).await;
        }
        for (id, i) in [("c500", 0), ("c200", 1)] {
            let only = [candidate(id, 0, None)];
            picked(&store, &request(&only, now, None), &format!("c{i}")).await;
        }
        let open = candidate("open", 0, None);
        let c500 = candidate("c500", 0, Some(500));
        let c200 = candidate("c200", 0, Some(200));
        for (among, want) in [([open.clone(), c500], "c500"), ([c200, open], "open")] {
            let p = probe(&store, &among, None, now).await;
            assert_eq!(id_of(&p), want, "{among:?}");
        }
        // Loads compare in whole millionths (integer division): 1/600 and 1/1000 of capacity
        // are both 1, so the one picked longer ago wins, whatever the exact fractions.
        for id in ["frac-a", "frac-b"] {
            let only = [candidate(id, 0, None)];
            picked(&store, &request(&only, now, None), &format!("{id}-0")).await;
        }
        let mut frac_a = candidate("frac-a", 0, Some(600));
        frac_a.weight = 1_000;
        let mut frac_b = candidate("frac-b", 0, None);
        frac_b.weight = 1_000;
        let p = probe(&store, &[frac_b, frac_a], None, now).await;
        assert_eq!(id_of(&p), "frac-a");
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
                .pick_simple(&candidates, &l1)
                .await
                .unwrap()
                .as_deref(),
            Some("first")
        );
        assert_eq!(
            store
                .pick_simple(&candidates, &l2)
                .await
                .unwrap()
                .as_deref(),
            Some("second")
        );
        assert_eq!(store.pick_simple(&candidates, &l3).await.unwrap(), None);
        assert_eq!(store.account_runtime("first").await.unwrap().in_flight, 1);
        assert_eq!(store.account_runtime("second").await.unwrap().in_flight, 1);
        // A zero cap is always full.
        assert_eq!(
            store
                .pick_simple(&[candidate("zero", 0, Some(0))], &l3)
                .await
                .unwrap(),
            None
        );
        assert_eq!(store.pick_simple(&[], &l3).await.unwrap(), None);

        // Releasing the account lease frees the account; releasing it again changes nothing.
        store.release("k1", Some("first"), &l1).await.unwrap();
        store.release("k1", Some("first"), &l1).await.unwrap();
        assert_eq!(store.account_runtime("first").await.unwrap().in_flight, 0);
        assert_eq!(store.account_runtime("second").await.unwrap().in_flight, 1);
        assert_eq!(
            store
                .pick_simple(&candidates, &l3)
                .await
                .unwrap()
                .as_deref(),
            Some("first")
        );
        assert_eq!(
            store.pick_simple(&candidates, &lease("l4")).await.unwrap(),
            None
        );

        // Without an account id, release leaves accounts alone.
        store.release("k1", None, &l2).await.unwrap();
        assert_eq!(store.account_runtime("second").await.unwrap().in_flight, 1);
    }

    /// A lease id no other pick of the test uses.
    fn fresh_lease() -> Lease {
        lease(&format!("r{:016x}", rand::random::<u64>()))
    }

    /// Picks among `cands` for `family` at `now` (no session) and releases the lease at once, so
    /// that repeated probes do not change the accounts' load.
    async fn probe(
        store: &Arc<dyn Store>,
        cands: &[Candidate],
        family: Option<&str>,
        now: i64,
    ) -> Picked {
        let held = fresh_lease();
        let req = PickRequest {
            candidates: cands,
            family,
            session: None,
            now_ms: now,
        };
        let p = store.pick_account(&req, &held).await.unwrap();
        if let Picked::Account { id, .. } = &p {
            store.release("k", Some(id), &held).await.unwrap();
        }
        p
    }

    /// Whether `id`, alone, can serve `family` at `now`.
    async fn serves(store: &Arc<dyn Store>, id: &str, family: Option<&str>, now: i64) -> bool {
        match probe(store, &[candidate(id, 0, None)], family, now).await {
            Picked::Account { id: got, .. } => {
                assert_eq!(got, id);
                true
            }
            Picked::Unavailable { .. } => false,
        }
    }

    async fn health(store: &Arc<dyn Store>, id: &str) -> Health {
        store.account_runtime(id).await.unwrap().health
    }

    pub async fn each_report_kind_and_its_recovery(store: Arc<dyn Store>) {
        let now = now_ms();
        let s = &store;
        // 5xx / connect error / timeout: a cooldown doubling per consecutive failure, capped.
        let fail = Report::Failure {
            base_ms: 1_000,
            max_ms: 4_000,
            error: "502 bad gateway".into(),
        };
        store.report_health("fail", &fail, now).await.unwrap();
        let h = health(s, "fail").await;
        assert_eq!(
            (h.status, h.until, h.consecutive_failures),
            (Status::CoolingDown, now + 1_000, 1)
        );
        assert_eq!(
            (h.last_error.as_deref(), h.last_error_at),
            (Some("502 bad gateway"), now)
        );
        assert!(!serves(s, "fail", None, now + 999).await);
        assert!(
            serves(s, "fail", None, now + 1_000).await,
            "back on its own"
        );
        for (n, until) in [(2, 2_000), (3, 4_000), (4, 4_000)] {
            store.report_health("fail", &fail, now).await.unwrap();
            let h = health(s, "fail").await;
            assert_eq!((h.consecutive_failures, h.until), (n, now + until), "{n}");
        }
        assert_eq!(
            probe(s, &[candidate("fail", 0, None)], None, now + 3_999).await,
            Picked::Unavailable {
                retry_at: Some(now + 4_000)
            }
        );
        // A success ends the streak and the cooldown at once.
        store
            .report_health("fail", &Report::Success { sent_at: now + 1 }, now + 1)
            .await
            .unwrap();
        let h = health(s, "fail").await;
        assert_eq!(
            (h.status, h.until, h.consecutive_failures),
            (Status::Ok, 0, 0)
        );
        assert!(serves(s, "fail", None, now + 1).await);

        // 429 for every family: out until the reset, which a success does not bring forward.
        let limited = Report::RateLimited {
            until: now + 5_000,
            family: None,
            error: "429".into(),
        };
        store.report_health("limited", &limited, now).await.unwrap();
        let h = health(s, "limited").await;
        assert_eq!((h.status, h.until), (Status::RateLimited, now + 5_000));
        store
            .report_health("limited", &Report::Success { sent_at: now + 1 }, now + 1)
            .await
            .unwrap();
        assert!(!serves(s, "limited", Some("sonnet"), now + 4_999).await);
        assert!(serves(s, "limited", Some("sonnet"), now + 5_000).await);

        // 529: cooling down; a shorter one later does not shorten it.
        let overloaded = |until| Report::Overloaded {
            until,
            error: "529".into(),
        };
        store
            .report_health("busy", &overloaded(now + 7_000), now)
            .await
            .unwrap();
        store
            .report_health("busy", &overloaded(now + 100), now)
            .await
            .unwrap();
        let h = health(s, "busy").await;
        assert_eq!((h.status, h.until), (Status::CoolingDown, now + 7_000));
        assert!(!serves(s, "busy", None, now + 6_999).await);
        assert!(serves(s, "busy", None, now + 7_000).await);

        // 401/403: out until an admin resets it, whatever comes after and however long it waits.
        let unauthorized = Report::Unauthorized {
            error: "401".into(),
        };
        store
            .report_health("revoked", &unauthorized, now)
            .await
            .unwrap();
        store.report_health("revoked", &fail, now).await.unwrap();
        store
            .report_health("revoked", &Report::Success { sent_at: now }, now)
            .await
            .unwrap();
        assert_eq!(health(s, "revoked").await.status, Status::Unauthorized);
        let far = now + 1_000_000_000;
        assert_eq!(
            probe(s, &[candidate("revoked", 0, None)], None, far).await,
            Picked::Unavailable { retry_at: None }
        );
        store.reset_health("revoked").await.unwrap();
        assert_eq!(health(s, "revoked").await, Health::default());
        assert!(serves(s, "revoked", None, now).await);
        // Resetting a clean or unknown account is harmless.
        store.reset_health("revoked").await.unwrap();
        store.reset_health("never-seen").await.unwrap();
        assert_eq!(health(s, "never-seen").await, Health::default());

        // Deleting an account forgets its health.
        store
            .report_health("gone", &unauthorized, now)
            .await
            .unwrap();
        store.delete_account("gone").await.unwrap();
        assert_eq!(health(s, "gone").await, Health::default());
        assert!(serves(s, "gone", None, now).await);
    }

    pub async fn family_scoped_rate_limit(store: Arc<dyn Store>) {
        let now = now_ms();
        let s = &store;
        let opus = Report::RateLimited {
            until: now + 60_000,
            family: Some("opus".into()),
            error: "429 opus".into(),
        };
        store.report_health("f", &opus, now).await.unwrap();
        let h = health(s, "f").await;
        assert_eq!(h.status, Status::Ok);
        assert_eq!(
            h.family_until,
            BTreeMap::from([("opus".to_owned(), now + 60_000)])
        );
        assert!(serves(s, "f", Some("sonnet"), now).await);
        assert!(
            serves(s, "f", None, now).await,
            "no family: no family limit"
        );
        assert_eq!(
            probe(s, &[candidate("f", 0, None)], Some("opus"), now).await,
            Picked::Unavailable {
                retry_at: Some(now + 60_000)
            }
        );
        assert!(serves(s, "f", Some("opus"), now + 60_000).await);
        // Another account serves the limited family meanwhile.
        let both = [candidate("f", 0, None), candidate("g", 1, None)];
        assert_eq!(id_of(&probe(s, &both, Some("opus"), now).await), "g");
        assert_eq!(id_of(&probe(s, &both, Some("sonnet"), now).await), "f");
        // With a general cooldown on top, each family recovers at the later of the two.
        store
            .report_health(
                "f",
                &Report::Overloaded {
                    until: now + 10_000,
                    error: "529".into(),
                },
                now,
            )
            .await
            .unwrap();
        let only = [candidate("f", 0, None)];
        assert_eq!(
            probe(s, &only, Some("opus"), now + 1).await,
            Picked::Unavailable {
                retry_at: Some(now + 60_000)
            }
        );
        assert_eq!(
            probe(s, &only, Some("sonnet"), now + 1).await,
            Picked::Unavailable {
                retry_at: Some(now + 10_000)
            }
        );
        // A later family limit forgets the ones that have passed.
        let haiku = Report::RateLimited {
            until: now + 80_000,
            family: Some("haiku".into()),
            error: "429 haiku".into(),
        };
        store
            .report_health("f", &haiku, now + 70_000)
            .await
            .unwrap();
        assert_eq!(
            health(s, "f").await.family_until,
            BTreeMap::from([("haiku".to_owned(), now + 80_000)])
        );
        assert!(serves(s, "f", Some("opus"), now + 70_000).await);
        assert!(!serves(s, "f", Some("haiku"), now + 70_000).await);
    }

    pub async fn retry_at_is_the_earliest_recovery(store: Arc<dyn Store>) {
        let now = now_ms();
        let s = &store;
        let report = |id: &'static str, r: Report| {
            let store = Arc::clone(&store);
            async move { store.report_health(id, &r, now).await.unwrap() }
        };
        report(
            "cool",
            Report::Overloaded {
                until: now + 3_000,
                error: "529".into(),
            },
        )
        .await;
        report(
            "limited",
            Report::RateLimited {
                until: now + 9_000,
                family: None,
                error: "429".into(),
            },
        )
        .await;
        report(
            "dead",
            Report::Unauthorized {
                error: "403".into(),
            },
        )
        .await;
        // Healthy but full: it frees up when a request ends, which is soon but unknown.
        let full = candidate("full", 0, Some(1));
        assert_eq!(id_of(&probe_keep(s, &full).await), "full");
        let c = |id| candidate(id, 0, None);
        let unavailable = |at: Option<i64>| Picked::Unavailable { retry_at: at };
        assert_eq!(
            probe(s, &[c("limited"), c("cool"), c("dead")], None, now).await,
            unavailable(Some(now + 3_000))
        );
        assert_eq!(probe(s, &[c("dead")], None, now).await, unavailable(None));
        assert_eq!(
            probe(s, &[c("limited"), full.clone(), c("dead")], None, now).await,
            unavailable(Some(now + 1_000))
        );
        // A candidate without capacity (tried, or kept for a session bound to it) never frees up
        // for this request: the others' recovery.
        assert_eq!(
            probe(
                s,
                &[c("limited"), candidate("nobody", 0, Some(0))],
                None,
                now
            )
            .await,
            unavailable(Some(now + 9_000))
        );
        // Judged at the request's time.
        assert_eq!(
            probe(s, &[c("limited"), c("dead")], None, now + 8_000).await,
            unavailable(Some(now + 9_000))
        );
        assert_eq!(
            id_of(&probe(s, &[c("limited"), c("cool"), c("dead")], None, now + 3_000).await),
            "cool"
        );
        // Full and rate limited: the limit's end, not "soon".
        report(
            "full",
            Report::RateLimited {
                until: now + 5_000,
                family: None,
                error: "429".into(),
            },
        )
        .await;
        assert_eq!(
            probe(s, &[c("limited"), full], None, now).await,
            unavailable(Some(now + 5_000))
        );
    }

    /// Picks `c` alone and keeps the lease.
    async fn probe_keep(store: &Arc<dyn Store>, c: &Candidate) -> Picked {
        let req = PickRequest {
            candidates: std::slice::from_ref(c),
            family: None,
            session: None,
            now_ms: now_ms(),
        };
        store.pick_account(&req, &fresh_lease()).await.unwrap()
    }

    pub async fn degraded_flag(store: Arc<dyn Store>) {
        let now = now_ms();
        let s = &store;
        let only = [candidate("d", 0, None)];
        let taken = |degraded| Picked::Account {
            id: "d".into(),
            sticky: Sticky::None,
            degraded,
        };
        assert_eq!(probe(s, &only, None, now).await, taken(false));
        let fail = Report::Failure {
            base_ms: 10,
            max_ms: 10,
            error: "timeout".into(),
        };
        store.report_health("d", &fail, now).await.unwrap();
        // Served again once the cooldown passed, but not clean: the caller must report.
        assert_eq!(probe(s, &only, None, now + 10).await, taken(true));
        // Its success makes it clean again, the last error kept for the admin's view.
        store
            .report_health("d", &Report::Success { sent_at: now + 10 }, now + 10)
            .await
            .unwrap();
        assert_eq!(probe(s, &only, None, now + 10).await, taken(false));
        let health = store.account_runtime("d").await.unwrap().health;
        assert_eq!(health.last_error.as_deref(), Some("timeout"));
        store.report_health("d", &fail, now).await.unwrap();
        store.reset_health("d").await.unwrap();
        assert_eq!(probe(s, &only, None, now + 10).await, taken(false));
        // A limit on another family (or model) leaves it clean for this one: this one's success
        // would not lift that limit, so none is reported.
        let opus = Report::RateLimited {
            until: now + 60_000,
            family: Some("opus".into()),
            error: "429".into(),
        };
        store.report_health("d", &opus, now).await.unwrap();
        assert_eq!(probe(s, &only, Some("sonnet"), now).await, taken(false));
        assert_eq!(probe(s, &only, None, now).await, taken(false));
        // Its own family once the limit ran out: degraded until a success is reported.
        assert_eq!(
            probe(s, &only, Some("opus"), now + 60_000).await,
            taken(true)
        );
        // A session's hit reports it too.
        let session = Some(SessionPick {
            id: "deg",
            ttl: Duration::from_secs(60),
            move_on_overflow: false,
            write: true,
        });
        let req = PickRequest {
            candidates: &only,
            family: Some("opus"),
            session,
            now_ms: now + 60_000,
        };
        let first = store.pick_account(&req, &fresh_lease()).await.unwrap();
        let again = store.pick_account(&req, &fresh_lease()).await.unwrap();
        assert_eq!(
            (first, again),
            (
                Picked::Account {
                    id: "d".into(),
                    sticky: Sticky::Bound,
                    degraded: true
                },
                Picked::Account {
                    id: "d".into(),
                    sticky: Sticky::Hit,
                    degraded: true
                }
            )
        );
    }

    pub async fn sessions_renew_escape_and_rebind(store: Arc<dyn Store>) {
        let now = now_ms();
        let cands = [
            candidate("r1", 0, Some(1)),
            candidate("r2", 0, Some(1)),
            candidate("r3", 0, None),
        ];
        let ttl = Duration::from_millis(400);
        let session = |id| {
            Some(SessionPick {
                id,
                ttl,
                move_on_overflow: false,
                write: true,
            })
        };
        let sticky_of = |p: &Picked| match p {
            Picked::Account { sticky, .. } => *sticky,
            Picked::Unavailable { .. } => panic!("nothing picked: {p:?}"),
        };

        // A bound account at its cap: this request escapes, the binding stays; once the lease
        // ends, the session is back home.
        let held = fresh_lease();
        let req = request(&cands, now, session("full"));
        let first = store.pick_account(&req, &held).await.unwrap();
        assert_eq!((id_of(&first), sticky_of(&first)), ("r1", Sticky::Bound));
        let p = picked(&store, &req, "full-2").await;
        assert_eq!((id_of(&p), sticky_of(&p)), ("r2", Sticky::Escaped));
        store.release("k", Some("r1"), &held).await.unwrap();
        let p = store.pick_account(&req, &held).await.unwrap();
        assert_eq!((id_of(&p), sticky_of(&p)), ("r1", Sticky::Hit));
        store.release("k", Some("r1"), &held).await.unwrap();
        store
            .release("k", Some("r2"), &lease("full-2"))
            .await
            .unwrap();

        // A binding to an account that is no longer a candidate is replaced.
        let only_r3 = [candidate("r3", 0, None)];
        let p = picked(&store, &request(&only_r3, now, session("full")), "x1").await;
        assert_eq!((id_of(&p), sticky_of(&p)), ("r3", Sticky::Bound));
        let p = picked(&store, &request(&cands, now, session("full")), "x2").await;
        assert_eq!((id_of(&p), sticky_of(&p)), ("r3", Sticky::Hit));

        // Every hit renews the TTL: hits 250 ms apart outlive a 400 ms TTL; an escape does not
        // renew it. Uncapped accounts, so that only health decides.
        let tt = [candidate("t1", 0, None), candidate("t2", 0, None)];
        let started = tokio::time::Instant::now();
        let p = picked(&store, &request(&tt, now, session("renew")), "y0").await;
        assert_eq!((id_of(&p), sticky_of(&p)), ("t1", Sticky::Bound));
        let q = picked(&store, &request(&tt, now, session("kept")), "z0").await;
        assert_eq!((id_of(&q), sticky_of(&q)), ("t2", Sticky::Bound));
        // `kept`'s account is out from now on (until now + 1 s, the request's clock).
        store
            .report_health(
                "t2",
                &Report::Overloaded {
                    until: now + 1_000,
                    error: "529".into(),
                },
                now,
            )
            .await
            .unwrap();
        // Each pick must come before the binding it renews expired (a loaded machine fails here
        // rather than with a wrong answer below).
        let mut renewed = started;
        for step in 1..=2 {
            tokio::time::sleep_until(started + Duration::from_millis(250 * step)).await;
            let at = tokio::time::Instant::now();
            assert!(
                at < renewed + ttl,
                "too slow: step {step} came after the TTL"
            );
            let p = picked(
                &store,
                &request(&tt, now, session("renew")),
                &format!("y{step}"),
            )
            .await;
            assert_eq!(
                (id_of(&p), sticky_of(&p)),
                ("t1", Sticky::Hit),
                "step {step}"
            );
            renewed = at;
            if step == 1 {
                assert!(started.elapsed() < ttl, "too slow: `kept` expired already");
                let q = picked(&store, &request(&tt, now, session("kept")), "z1").await;
                assert_eq!((id_of(&q), sticky_of(&q)), ("t1", Sticky::Escaped));
            }
        }
        // `renew` lives on; `kept`, set at 0 and not renewed by the escape, is gone by 500 ms.
        let q = picked(&store, &request(&tt, now + 1_000, session("kept")), "z2").await;
        assert_eq!(sticky_of(&q), Sticky::Bound, "{q:?}");
        // Without use, `renew` expires too.
        tokio::time::sleep_until(renewed + ttl + Duration::from_millis(100)).await;
        let p = picked(&store, &request(&tt, now, session("renew")), "y3").await;
        assert_eq!(sticky_of(&p), Sticky::Bound, "{p:?}");
    }

    /// `finish` binds a session to the account whose lease it gives back (the answer made a
    /// stored response there), in the same call as both leases: a later pick with that session
    /// goes there first. Written whether the lease was still held or not (a repeat changes
    /// nothing else), moved by a later binding, gone after its own TTL, dropped by a zero one.
    pub async fn finish_binds_a_session(store: Arc<dyn Store>) {
        let t = now_ms();
        let three = [
            candidate("f1", 0, None),
            candidate("f2", 0, None),
            candidate("f3", 0, None),
        ];
        let session = |id| {
            Some(SessionPick {
                id,
                ttl: Duration::from_secs(60),
                move_on_overflow: false,
                write: true,
            })
        };
        let sticky_of = |p: &Picked| match p {
            Picked::Account { sticky, .. } => *sticky,
            Picked::Unavailable { .. } => panic!("nothing picked: {p:?}"),
        };
        let binding = |session: &str, ttl| Binding {
            session: session.to_owned(),
            ttl,
        };

        // A request served by f3 (its key's lease with a meter), given back with a binding.
        let admission = metered("k1", t, &[("day:x", 100, 30)]);
        let taken = store
            .admit_and_pick(
                &admission,
                &lease("k-1"),
                &request(&three[2..], t, None),
                &lease("k-1.1"),
            )
            .await
            .unwrap();
        assert!(
            matches!(&taken, Taken::Picked(Picked::Account { id, .. }) if id == "f3"),
            "{taken:?}"
        );
        let key = KeySettle {
            key_id: "k1".to_owned(),
            lease: lease("k-1"),
            reserved: used(&[("day:x", 30)]),
            used: used(&[("day:x", 12)]),
        };
        let account = AccountRelease {
            key_id: "k1".to_owned(),
            account_id: "f3".to_owned(),
            lease: lease("k-1.1"),
        };
        let made = binding("made", Duration::from_secs(60));
        for _ in 0..2 {
            store
                .finish(Some(&key), Some(&account), Some(&made))
                .await
                .unwrap();
        }
        let s = store
            .key_state("k1", &[SmolStr::new_static("day:x")])
            .await
            .unwrap();
        assert_eq!(
            (s.in_flight, s.meters[0]),
            (0, MeterUse { used: 12, held: 0 })
        );
        assert_eq!(store.account_runtime("f3").await.unwrap().in_flight, 0);
        // f3 was picked last of the three, yet the session goes there.
        let p = picked(&store, &request(&three, t, session("made")), "p1").await;
        assert_eq!((id_of(&p), sticky_of(&p)), ("f3", Sticky::Hit));
        // A session nobody bound goes by the order (f1, never picked), and is bound there.
        let p = picked(&store, &request(&three, t, session("other")), "p2").await;
        assert_eq!((id_of(&p), sticky_of(&p)), ("f1", Sticky::Bound));

        // Bound anew on a lease that is not held: the binding moves; the lease held on f1 (p2)
        // stays held.
        let on = |account_id: &str, lease_id: &str| AccountRelease {
            key_id: "k1".to_owned(),
            account_id: account_id.to_owned(),
            lease: lease(lease_id),
        };
        store
            .finish(None, Some(&on("f1", "never")), Some(&made))
            .await
            .unwrap();
        assert_eq!(store.account_runtime("f1").await.unwrap().in_flight, 1);
        let p = picked(&store, &request(&three, t, session("made")), "p3").await;
        assert_eq!((id_of(&p), sticky_of(&p)), ("f1", Sticky::Hit));

        // Each binding keeps its own TTL.
        let brief = binding("brief", Duration::from_millis(300));
        let lasting = binding("lasting", Duration::from_secs(60));
        for bind in [&brief, &lasting] {
            store
                .finish(None, Some(&on("f2", "never-2")), Some(bind))
                .await
                .unwrap();
        }
        let started = tokio::time::Instant::now();
        let p = picked(&store, &request(&three, t, session("lasting")), "p4").await;
        assert_eq!((id_of(&p), sticky_of(&p)), ("f2", Sticky::Hit));
        tokio::time::sleep_until(started + Duration::from_millis(450)).await;
        let p = picked(&store, &request(&three, t, session("brief")), "p5").await;
        assert_eq!(sticky_of(&p), Sticky::Bound, "{p:?}");
        let p = picked(&store, &request(&three, t, session("lasting")), "p6").await;
        assert_eq!((id_of(&p), sticky_of(&p)), ("f2", Sticky::Hit));

        // A zero TTL drops it.
        store
            .finish(
                None,
                Some(&on("f3", "never-3")),
                Some(&binding("made", Duration::ZERO)),
            )
            .await
            .unwrap();
        let p = picked(&store, &request(&three, t, session("made")), "p7").await;
        assert_eq!(sticky_of(&p), Sticky::Bound, "{p:?}");

        // A pick that may not write (a stored response's) reads the binding, and makes, moves
        // or renews none.
        let read_only = |id, ttl| {
            Some(SessionPick {
                id,
                ttl,
                move_on_overflow: false,
                write: false,
            })
        };
        let long = Duration::from_secs(60);
        let p = picked(&store, &request(&three, t, read_only("unmade", long)), "r1").await;
        assert_eq!(sticky_of(&p), Sticky::Bound, "{p:?}");
        let p = picked(&store, &request(&three, t, session("unmade")), "r2").await;
        assert_eq!(sticky_of(&p), Sticky::Bound, "nothing was bound: {p:?}");
        // A hit renews nothing, however far into the binding's time (Redis renews a hit once
        // an eighth of the TTL has passed: 125 ms of the pick's 1 s here).
        let short = binding("short", Duration::from_millis(500));
        store
            .finish(None, Some(&on("f2", "never-4")), Some(&short))
            .await
            .unwrap();
        let started = tokio::time::Instant::now();
        tokio::time::sleep_until(started + Duration::from_millis(250)).await;
        let second = Duration::from_secs(1);
        let p = picked(
            &store,
            &request(&three, t, read_only("short", second)),
            "r3",
        )
        .await;
        assert_eq!((id_of(&p), sticky_of(&p)), ("f2", Sticky::Hit));
        assert!(
            started.elapsed() < Duration::from_millis(500),
            "too slow: the hit came after the binding expired"
        );
        tokio::time::sleep_until(started + Duration::from_millis(650)).await;
        let p = picked(
            &store,
            &request(&three, t, read_only("short", second)),
            "r4",
        )
        .await;
        assert_eq!(
            sticky_of(&p),
            Sticky::Bound,
            "the hit did not renew it: {p:?}"
        );

        // When its account cannot serve now, the request waits for it (what it names lives
        // there only): that account's recovery, not another account.
        store
            .finish(
                None,
                Some(&on("f1", "never-5")),
                Some(&binding("wait", long)),
            )
            .await
            .unwrap();
        let limited = Report::RateLimited {
            until: t + 5_000,
            family: None,
            error: "429".into(),
        };
        store.report_health("f1", &limited, t).await.unwrap();
        let p = store
            .pick_account(&request(&three, t, read_only("wait", long)), &lease("r5"))
            .await
            .unwrap();
        assert_eq!(
            p,
            Picked::Unavailable {
                retry_at: Some(t + 5_000)
            }
        );
        // Tried by this request (no capacity left for it): nothing to wait for.
        let tried = [candidate("f1", 0, Some(0)), candidate("f2", 0, None)];
        store.reset_health("f1").await.unwrap();
        let p = store
            .pick_account(&request(&tried, t, read_only("wait", long)), &lease("r6"))
            .await
            .unwrap();
        assert_eq!(p, Picked::Unavailable { retry_at: None });
    }

    pub async fn concurrent_picks_respect_caps(store: Arc<dyn Store>) {
        const TASKS: usize = 40;
        let now = now_ms();
        let cands = Arc::new([candidate("p1", 0, Some(3)), candidate("p2", 1, Some(2))]);
        let barrier = Arc::new(Barrier::new(TASKS));
        let mut tasks = Vec::new();
        for i in 0..TASKS {
            let store = Arc::clone(&store);
            let barrier = Arc::clone(&barrier);
            let cands = Arc::clone(&cands);
            tasks.push(tokio::spawn(async move {
                barrier.wait().await;
                let req = PickRequest {
                    candidates: &cands[..],
                    family: None,
                    session: None,
                    now_ms: now,
                };
                store
                    .pick_account(&req, &lease(&format!("c{i}")))
                    .await
                    .unwrap()
            }));
        }
        let mut taken: HashMap<String, usize> = HashMap::new();
        for task in tasks {
            match task.await.unwrap() {
                Picked::Account { id, .. } => *taken.entry(id).or_default() += 1,
                Picked::Unavailable { retry_at } => assert_eq!(retry_at, Some(now + 1_000)),
            }
        }
        assert_eq!(
            taken,
            HashMap::from([("p1".to_owned(), 3), ("p2".to_owned(), 2)])
        );
        assert_eq!(store.account_runtime("p1").await.unwrap().in_flight, 3);
        assert_eq!(store.account_runtime("p2").await.unwrap().in_flight, 2);
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

    /// `last_at` is the newest arrival counted, not a sum: a batch of older requests written
    /// later (another instance's flush) leaves it, as do counters without one, and batches
    /// racing each other end at the largest. Exact at millisecond timestamps of today.
    pub async fn usage_keeps_the_newest_arrival(store: Arc<dyn Store>) {
        let bucket = (Dimension::Key("k1".to_owned()), Bucket::Total);
        let at = |last_at: i64| Counters {
            last_at,
            ..counters(1)
        };
        let base = 1_764_000_000_123_i64;
        let read = || {
            let store = Arc::clone(&store);
            let query = UsageQuery {
                dimension: bucket.0.clone(),
                buckets: vec![bucket.1.clone()],
            };
            async move { store.usage(&query).await.unwrap()[0] }
        };
        for (last_at, want) in [
            (base, base),
            (base + 2_000, base + 2_000),
            (base + 1, base + 2_000),
            (0, base + 2_000),
        ] {
            store
                .record_usage(&batch(&[(bucket.clone(), at(last_at))], vec![]))
                .await
                .unwrap();
            assert_eq!(
                read().await.last_at,
                want,
                "after a batch with last_at {last_at}"
            );
        }
        assert_eq!(read().await.requests, 4);

        let racing = (1..=24_i64).map(|n| {
            let store = Arc::clone(&store);
            let counted = [(bucket.clone(), at(base + 10_000 + n * 7 % 24 * 1_000))];
            tokio::spawn(async move { store.record_usage(&batch(&counted, vec![])).await })
        });
        for made in futures_util::future::join_all(racing).await {
            made.unwrap().unwrap();
        }
        let got = read().await;
        assert_eq!((got.requests, got.last_at), (28, base + 10_000 + 23_000));
    }

    /// A backlog after an outage: several dimensions' counters and thousands of log entries in
    /// one batch (written in several pipelines on Redis), all of it applied.
    pub async fn a_large_backlog_is_written_whole(store: Arc<dyn Store>) {
        let totals: Vec<_> = ["k1", "k2", "k3"]
            .iter()
            .map(|k| {
                (
                    (Dimension::Key((*k).to_owned()), Bucket::Total),
                    counters(7),
                )
            })
            .chain([((Dimension::All, Bucket::Total), counters(21))])
            .collect();
        let requests: Vec<_> = (1..=5_500).map(|n| log_entry(n, "k1")).collect();
        let backlog = batch(&totals, requests);
        store.record_usage(&backlog).await.unwrap();
        let newest = store
            .recent_requests(&RequestFilter::ALL, 100)
            .await
            .unwrap();
        assert_eq!(
            ids(&newest),
            ["req-5500", "req-5499", "req-5498", "req-5497", "req-5496"]
        );
        for (dimension, want) in [
            (Dimension::Key("k3".to_owned()), counters(7)),
            (Dimension::All, counters(21)),
        ] {
            let got = store
                .usage(&UsageQuery {
                    dimension,
                    buckets: vec![Bucket::Total],
                })
                .await
                .unwrap();
            assert_eq!(got, vec![want]);
        }
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
            ids(&store
                .recent_requests(&RequestFilter::ALL, 10)
                .await
                .unwrap()),
            ["req-3", "req-2", "req-1"]
        );
        store.record_usage(&batch(&[], second)).await.unwrap();

        let all = store
            .recent_requests(&RequestFilter::ALL, 100)
            .await
            .unwrap();
        assert_eq!(all.len(), REQUEST_LOG_MAX);
        assert_eq!(ids(&all), ["req-6", "req-5", "req-4", "req-3", "req-2"]);
        assert_eq!(all[0], log_entry(6, "k2"), "entries come back whole");
        assert_eq!(
            ids(&store.recent_requests(&RequestFilter::ALL, 2).await.unwrap()),
            ["req-6", "req-5"]
        );
        assert!(
            store
                .recent_requests(&RequestFilter::ALL, 0)
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            ids(&store
                .recent_requests(&RequestFilter::key("k1"), 100)
                .await
                .unwrap()),
            ["req-5", "req-3"]
        );
        assert_eq!(
            ids(&store
                .recent_requests(&RequestFilter::key("k2"), 1)
                .await
                .unwrap()),
            ["req-6"]
        );
        assert!(
            store
                .recent_requests(&RequestFilter::key("nobody"), 10)
                .await
                .unwrap()
                .is_empty()
        );
        // A batch that overflows the log by several entries trims as many of the oldest.
        let third: Vec<_> = (7..=10).map(|n| log_entry(n, "k1")).collect();
        store.record_usage(&batch(&[], third)).await.unwrap();
        assert_eq!(
            ids(&store
                .recent_requests(&RequestFilter::ALL, 100)
                .await
                .unwrap()),
            ["req-10", "req-9", "req-8", "req-7", "req-6"]
        );
    }

    /// An account's entries, alone or with a key's; trimmed with the log, including an
    /// account's last one; an entry without an account in none.
    pub async fn request_log_by_account(store: Arc<dyn Store>) {
        let entry = |n: i64| {
            let mut e = log_entry(n, if n % 2 == 0 { "k2" } else { "k1" });
            e.account_id = match n % 3 {
                0 => None,
                1 => Some("acc-a".to_owned()),
                _ => Some("acc-b".to_owned()),
            };
            e
        };
        let read = |filter: RequestFilter<'static>, limit: usize| {
            let store = Arc::clone(&store);
            async move {
                let got = store.recent_requests(&filter, limit).await.unwrap();
                got.iter().map(|e| e.request_id.clone()).collect::<Vec<_>>()
            }
        };
        store
            .record_usage(&batch(&[], (1..=5).map(entry).collect()))
            .await
            .unwrap();
        assert_eq!(
            read(RequestFilter::account("acc-a"), 10).await,
            ["req-4", "req-1"]
        );
        assert_eq!(
            read(RequestFilter::account("acc-b"), 10).await,
            ["req-5", "req-2"]
        );
        assert_eq!(read(RequestFilter::account("acc-b"), 1).await, ["req-5"]);
        assert!(read(RequestFilter::account("nobody"), 10).await.is_empty());
        let both = RequestFilter {
            key_id: Some("k2"),
            account_id: Some("acc-b"),
        };
        assert_eq!(read(both, 10).await, ["req-2"]);
        // Two more: the log keeps five, so req-1 and req-2 go, from their accounts' too.
        store
            .record_usage(&batch(&[], (6..=7).map(entry).collect()))
            .await
            .unwrap();
        assert_eq!(
            read(RequestFilter::account("acc-a"), 10).await,
            ["req-7", "req-4"]
        );
        assert_eq!(read(RequestFilter::account("acc-b"), 10).await, ["req-5"]);
        assert_eq!(read(both, 10).await, Vec::<String>::new());
        assert_eq!(
            read(RequestFilter::ALL, 10).await,
            ["req-7", "req-6", "req-5", "req-4", "req-3"]
        );
        // Three more of acc-a's: acc-b's last entry goes with the log's oldest.
        store
            .record_usage(&batch(&[], [10, 13, 16].map(entry).to_vec()))
            .await
            .unwrap();
        assert!(read(RequestFilter::account("acc-b"), 10).await.is_empty());
        assert_eq!(
            read(RequestFilter::account("acc-a"), 10).await,
            ["req-16", "req-13", "req-10", "req-7"]
        );
        // A key's entry behind the account's newer ones of another key is found, whatever the
        // limit: not only among the account's newest `limit`.
        let k1_of_a = RequestFilter {
            key_id: Some("k1"),
            account_id: Some("acc-a"),
        };
        assert_eq!(read(k1_of_a, 1).await, ["req-13"]);
        assert_eq!(read(k1_of_a, 10).await, ["req-13", "req-7"]);
    }

    pub(super) fn spend_buckets(now: i64) -> [SpendBucket; 2] {
        [
            SpendBucket {
                name: SmolStr::new_static("day:2026-12-07"),
                expires_at: now + 3_600_000,
            },
            SpendBucket {
                name: SmolStr::new_static("month:2026-12"),
                expires_at: now + 7_200_000,
            },
        ]
    }

    /// An account's spend counters: additions racing on every instance each see a total of
    /// their own (the one that reaches a budget is told so once), per owner and period; a
    /// counter past its expiry reads as nothing, and one never written as 0.
    pub async fn spend_adds_up_per_period(store: Arc<dyn Store>) {
        let now = now_ms();
        store.insert_account(&account("sp", 1)).await.unwrap();
        let buckets = spend_buckets(now);
        let racers = 16u64;
        let barrier = Arc::new(Barrier::new(racers as usize));
        let mut tasks = Vec::new();
        for n in 0..racers {
            let (store, barrier, buckets) =
                (Arc::clone(&store), Arc::clone(&barrier), buckets.clone());
            tasks.push(tokio::spawn(async move {
                barrier.wait().await;
                let charge = format!("req-{n}");
                store.add_spend("sp", &buckets, 7, &charge).await.unwrap()
            }));
        }
        let mut days = Vec::new();
        for task in tasks {
            let totals = task.await.unwrap();
            assert_eq!(totals.len(), 2);
            days.push(totals[0]);
        }
        days.sort_unstable();
        let expected: Vec<u64> = (1..=racers).map(|n| 7 * n).collect();
        assert_eq!(days, expected, "each addition saw a total of its own");
        let names: Vec<SmolStr> = buckets.iter().map(|b| b.name.clone()).collect();
        let mut asked = names.clone();
        asked.push(SmolStr::new_static("day:never"));
        assert_eq!(store.spend("sp", &asked).await.unwrap(), [112, 112, 0]);
        assert_eq!(
            store.spend("other", &names).await.unwrap(),
            [0, 0],
            "per owner"
        );
        assert_eq!(store.spend("sp", &[]).await.unwrap(), Vec::<u64>::new());

        // Raised to at least an amount: never lowered.
        let day = buckets[0].clone();
        assert_eq!(store.raise_spend("sp", &day, 100).await.unwrap(), 112);
        assert_eq!(store.raise_spend("sp", &day, 150).await.unwrap(), 150);
        assert_eq!(store.spend("sp", &names).await.unwrap(), [150, 112]);
        let fresh = SpendBucket {
            name: SmolStr::new_static("day:fresh"),
            expires_at: now + 60_000,
        };
        assert_eq!(store.raise_spend("sp", &fresh, 9).await.unwrap(), 9);

        // A period over: its counter is gone, and one written again starts afresh.
        let over = [SpendBucket {
            name: SmolStr::new_static("day:2026-12-06"),
            expires_at: now - 1,
        }];
        store.add_spend("sp", &over, 5, "late").await.unwrap();
        assert_eq!(
            store.spend("sp", &[over[0].name.clone()]).await.unwrap(),
            [0]
        );
        let again = [SpendBucket {
            expires_at: now + 60_000,
            ..over[0].clone()
        }];
        assert_eq!(
            store.add_spend("sp", &again, 3, "again").await.unwrap(),
            [3]
        );
    }

    /// A charge made again (a call retried after its reply was lost) adds nothing more on the
    /// stores that could send one twice; the totals it answers are the counters'.
    pub async fn a_charge_made_again_counts_once(store: Arc<dyn Store>) {
        let buckets = spend_buckets(now_ms());
        store.insert_account(&account("sp", 1)).await.unwrap();
        assert_eq!(
            store.add_spend("sp", &buckets, 5, "r").await.unwrap(),
            [5, 5]
        );
        let again = store.add_spend("sp", &buckets, 5, "r").await.unwrap();
        let names: Vec<SmolStr> = buckets.iter().map(|b| b.name.clone()).collect();
        let totals = store.spend("sp", &names).await.unwrap();
        assert_eq!(again, totals);
        if !store.is_local() {
            assert_eq!(totals, [5, 5], "a Redis call made again");
        }
    }

    /// A session's binding outlives a graceful restart (the embedded store writes its bindings
    /// when flushed at the stop): the session comes back to its account and its warm cache.
    pub async fn sessions_survive_reopen(backend: &impl Backend) {
        let store = backend.open().await;
        let cands = [
            candidate("r1", 0, None),
            candidate("r2", 0, None),
            candidate("r3", 0, None),
        ];
        let session = |id| {
            Some(SessionPick {
                id,
                ttl: Duration::from_secs(600),
                move_on_overflow: false,
                write: true,
            })
        };
        // Three sessions, one on each account (each new one goes to the least loaded).
        let mut homes = Vec::new();
        for (i, id) in ["sa", "sb", "sc"].into_iter().enumerate() {
            let p = picked(
                &store,
                &request(&cands, now_ms(), session(id)),
                &format!("l{i}"),
            )
            .await;
            homes.push(id_of(&p).to_owned());
        }
        store.flush().await.unwrap();
        drop(store);

        let store = backend.open().await;
        for (i, id) in ["sa", "sb", "sc"].into_iter().enumerate() {
            let p = picked(
                &store,
                &request(&cands, now_ms(), session(id)),
                &format!("m{i}"),
            )
            .await;
            assert_eq!(
                (id_of(&p), &p),
                (
                    homes[i].as_str(),
                    &Picked::Account {
                        id: homes[i].clone(),
                        sticky: Sticky::Hit,
                        degraded: false
                    }
                ),
                "session {id}"
            );
        }
    }

    /// Spend counters are durable, as usage is.
    pub async fn spend_survives_reopen(backend: &impl Backend) {
        let store = backend.open().await;
        store.insert_account(&account("sp", 1)).await.unwrap();
        let buckets = spend_buckets(now_ms());
        store.add_spend("sp", &buckets, 40, "r1").await.unwrap();
        store.flush().await.unwrap();
        drop(store);

        let store = backend.open().await;
        let names: Vec<SmolStr> = buckets.iter().map(|b| b.name.clone()).collect();
        assert_eq!(store.spend("sp", &names).await.unwrap(), [40, 40]);
        assert_eq!(
            store.add_spend("sp", &buckets, 2, "r2").await.unwrap(),
            [42, 42]
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

    /// A deleted key's counters, first use and leases go with it, from memory and from the
    /// file: a lease still in flight settles into nothing, and a key made again under the same
    /// id (an import, a restore) starts afresh, also after a restart.
    pub async fn a_deleted_key_leaves_no_limits_behind(backend: &impl Backend) {
        let buckets = [SmolStr::new_static("day:x"), SmolStr::new_static("win:req")];
        let fresh = |s: &KeyState| {
            s.in_flight == 0
                && s.first_used_at.is_none()
                && s.meters == [MeterUse::default(), MeterUse::default()]
        };
        let store = backend.open().await;
        let admission = k1_with_two_requests(&*store).await;
        let done = used(&[("day:x", 12), ("win:req", 1)]);
        store.settle("k1", &lease("done"), &done).await.unwrap();
        store.flush().await.unwrap();
        let before = store.key_state("k1", &buckets).await.unwrap();
        assert!(!fresh(&before), "{before:?}");

        assert!(store.delete_key("k1").await.unwrap());
        let state = store.key_state("k1", &buckets).await.unwrap();
        assert!(fresh(&state), "{state:?}");
        store
            .settle("k1", &lease("in-flight"), &done)
            .await
            .unwrap();
        let state = store.key_state("k1", &buckets).await.unwrap();
        assert!(fresh(&state), "a late settle brought back {state:?}");

        store.insert_key(&key("k1", 2)).await.unwrap();
        let state = store.key_state("k1", &buckets).await.unwrap();
        assert!(fresh(&state), "{state:?}");
        store.flush().await.unwrap();
        drop(store);
        let store = backend.open().await;
        let state = store.key_state("k1", &buckets).await.unwrap();
        assert!(fresh(&state), "after a restart: {state:?}");
        // Its whole window is there again.
        for id in ["again-1", "again-2"] {
            assert_eq!(
                store.admit(&admission, &lease(id)).await.unwrap(),
                Admit::Granted
            );
        }
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
            store
                .recent_requests(&RequestFilter::ALL, 10)
                .await
                .unwrap(),
            vec![log_entry(1, "k1")]
        );
        // And it keeps adding on top of what was there.
        store.record_usage(&batch(&counted, vec![])).await.unwrap();
        assert_eq!(store.usage(&query).await.unwrap(), vec![counters(8)]);
    }
}

// --- Redis only -------------------------------------------------------------------------------

/// What only the Redis store has: key TTLs, the script cache, the change feed between instances,
/// and surviving a Redis restart. Each runs on standalone Redis and on the cluster when set.
mod redis_only {
    use super::*;

    use fred::prelude::{
        Builder, Client, ClientLike, Config, HashesInterface, KeysInterface, LuaInterface,
        SortedSetsInterface,
    };
    use futures_util::TryStreamExt;
    use switchyard::store::Change;

    /// A plain fred client on the server behind `url` (the first seed of a cluster list).
    async fn raw_client(url: &str) -> Client {
        let first = url.split(',').next().unwrap();
        let client = Builder::from_config(Config::from_url(first).unwrap())
            .build()
            .unwrap();
        client.init().await.unwrap();
        client
    }

    /// Every key under the test's own prefix. SCAN is for tests only, and only ever on a prefix
    /// no one else uses.
    async fn keys_under(client: &Client, prefix: &str) -> Vec<String> {
        let pattern = format!("{prefix}*");
        let keys: Vec<fred::types::Key> = if client.is_clustered() {
            client
                .scan_cluster_buffered(pattern, Some(100), None)
                .try_collect()
                .await
                .unwrap()
        } else {
            client
                .scan_buffered(pattern, Some(100), None)
                .try_collect()
                .await
                .unwrap()
        };
        let mut keys: Vec<String> = keys.into_iter().map(|k| k.into_string().unwrap()).collect();
        keys.sort();
        keys
    }

    /// Durable by design (docs/redis-keys.md): records, the pick counter, all-time totals, and the
    /// request log (bounded by count, not time).
    fn is_durable(rest: &str) -> bool {
        matches!(
            rest,
            "{rec}:keys"
                | "{rec}:keyhash"
                | "{rec}:accounts"
                | "{live}:state"
                | "{live}:kl"
                | "{live}:al"
                | "{log}:all"
                | "{log}:entries"
        ) || rest.starts_with("{log}:key:")
            || (rest.starts_with("{u:") && rest.ends_with("}:total"))
    }

    async fn every_ephemeral_key_has_a_ttl(url_var: &str) {
        let Some(backend) = redis_backend(url_var) else {
            return;
        };
        let store = backend.open().await;
        store.insert_key(&key("k1", 1)).await.unwrap();
        store.insert_account(&account("a1", 1)).await.unwrap();
        // A renewal's claim (given up when the renewal ends, else it lapses).
        assert!(
            store
                .claim("oauth:a1", "renewal", Duration::from_secs(60))
                .await
                .unwrap()
        );
        let held = lease("held");
        let mut limited = metered("k1", now_ms(), &[("day:x", 100, 10), ("total", 100, 10)]);
        limited.max_concurrency = Some(5);
        limited.valid_after_first_use_ms = Some(86_400_000);
        // The total never expires (as `limits::meters::plan` makes it).
        limited.meters[1].expires_at = None;
        assert_eq!(store.admit(&limited, &held).await.unwrap(), Admit::Granted);
        let settled = lease("settled");
        store.admit(&limited, &settled).await.unwrap();
        store
            .settle("k1", &settled, &used(&[("day:x", 3), ("total", 3)]))
            .await
            .unwrap();
        store
            .pick_simple(&[candidate("a1", 0, Some(5))], &held)
            .await
            .unwrap();
        let k1 = Dimension::Key("k1".to_owned());
        store
            .record_usage(&batch(
                &[
                    (
                        (k1.clone(), Bucket::Hour("2026-11-22T08".into())),
                        counters(1),
                    ),
                    ((k1.clone(), Bucket::Day("2026-11-22".into())), counters(1)),
                    ((k1.clone(), Bucket::Month("2026-11".into())), counters(1)),
                    ((k1.clone(), Bucket::Total), counters(1)),
                    ((Dimension::All, Bucket::Total), counters(1)),
                ],
                vec![log_entry(1, "k1")],
            ))
            .await
            .unwrap();
        // An account's spend in a budget's period.
        store
            .add_spend("a1", &super::cases::spend_buckets(now_ms())[..1], 5, "r1")
            .await
            .unwrap();

        let raw = raw_client(&backend.url).await;
        let keys = keys_under(&raw, &backend.prefix).await;
        let mut ephemeral = Vec::new();
        for name in &keys {
            let rest = &name[backend.prefix.len()..];
            let pttl: i64 = raw.pttl(name.as_str()).await.unwrap();
            if is_durable(rest) {
                assert_eq!(pttl, -1, "{name} is documented as durable");
            } else {
                assert!(pttl > 0, "{name} has no TTL ({pttl})");
                ephemeral.push(rest.to_owned());
            }
        }
        // The test did touch every kind of ephemeral key.
        for kind in [
            "{u:key:k1}:h:2026-11-22T08",
            "{u:key:k1}:d:2026-11-22",
            "{u:key:k1}:m:2026-11",
            "{spend:a1}:day:2026-12-07",
        ] {
            assert!(
                ephemeral.iter().any(|e| e == kind),
                "{kind} missing: {keys:?}"
            );
        }
        assert!(
            ephemeral
                .iter()
                .any(|e| e.starts_with("{u:key:k1}:applied:"))
        );
        assert!(ephemeral.iter().any(|e| e.starts_with("{log}:applied:")));
        // Hour buckets live 35 days.
        let hour: i64 = raw
            .pttl(format!("{}{{u:key:k1}}:h:2026-11-22T08", backend.prefix))
            .await
            .unwrap();
        assert!(hour > 34 * 86_400_000 && hour <= 35 * 86_400_000, "{hour}");
        // The lease sets are durable while leases are in flight (each lease leaves them when it
        // is given back or swept after its deadline); released, they go away entirely.
        assert!(keys.iter().any(|k| k.ends_with("{live}:kl")), "{keys:?}");
        assert!(keys.iter().any(|k| k.ends_with("{live}:al")), "{keys:?}");
        store.release("k1", None, &held).await.unwrap();
        store.release("k1", Some("a1"), &held).await.unwrap();
        let left = keys_under(&raw, &backend.prefix).await;
        assert!(
            !left
                .iter()
                .any(|k| k.ends_with("{live}:kl") || k.ends_with("{live}:al")),
            "{left:?}"
        );
        raw.quit().await.unwrap();
    }

    /// Trimming the log trims its key indexes with it: every member of an index is an entry the
    /// log still holds (and there is no index per account).
    async fn log_indexes_hold_what_the_log_holds(url_var: &str) {
        let Some(backend) = redis_backend(url_var) else {
            return;
        };
        let store = backend.open().await;
        for round in 0..3_i64 {
            let entries = (1..=4)
                .map(|n| {
                    let mut e = log_entry(round * 10 + n, if n % 2 == 0 { "k2" } else { "k1" });
                    e.account_id = (n != 4).then(|| format!("acc-{}", n % 2));
                    e
                })
                .collect();
            store.record_usage(&batch(&[], entries)).await.unwrap();
        }
        let raw = raw_client(&backend.url).await;
        let all = format!("{}{{log}}:all", backend.prefix);
        let kept: Vec<String> = raw
            .zrange(&all, 0, -1, None, false, None, false)
            .await
            .unwrap();
        assert_eq!(kept.len(), REQUEST_LOG_MAX);
        let mut indexes = 0;
        for name in keys_under(&raw, &backend.prefix).await {
            let rest = &name[backend.prefix.len()..];
            assert!(!rest.starts_with("{log}:account"), "{name}");
            if !rest.starts_with("{log}:key:") {
                continue;
            }
            indexes += 1;
            let members: Vec<String> = raw
                .zrange(&name, 0, -1, None, false, None, false)
                .await
                .unwrap();
            for member in members {
                assert!(
                    kept.contains(&member),
                    "{name} keeps {member:?}, gone from the log"
                );
            }
        }
        assert_eq!(indexes, 2, "k1, k2");
        raw.quit().await.unwrap();
    }

    /// An earlier version's `log_add.lua` (tests/fixtures/redis/log_add-v1.lua) appending to the
    /// log this version wrote, during a rolling upgrade: the entries it trims go from their
    /// keys' indexes as before, and its own entries (which do not name their account) are not
    /// found by account.
    async fn an_earlier_instance_trims_this_one_s_entries(url_var: &str) {
        let Some(backend) = redis_backend(url_var) else {
            return;
        };
        let store = backend.open().await;
        let entries = (1..=REQUEST_LOG_MAX as i64).map(|n| log_entry(n, "k1"));
        store
            .record_usage(&batch(&[], entries.collect()))
            .await
            .unwrap();
        let raw = raw_client(&backend.url).await;
        let p = &backend.prefix;
        let keys = vec![
            format!("{p}{{log}}:applied:earlier"),
            format!("{p}{{log}}:all"),
            format!("{p}{{log}}:entries"),
        ];
        let mut args = vec![
            "7".to_owned(),
            "86400000".to_owned(),
            "64".to_owned(),
            REQUEST_LOG_MAX.to_string(),
            format!("{p}{{log}}:key:"),
        ];
        for n in [11, 12] {
            let e = log_entry(n, "k2");
            args.extend([
                e.at.to_string(),
                format!("{}:{}\n{}", e.at, e.request_id, e.key_id),
                e.key_id.clone(),
                serde_json::to_string(&e).unwrap(),
            ]);
        }
        let applied: i64 = raw
            .eval(include_str!("../fixtures/redis/log_add-v1.lua"), keys, args)
            .await
            .unwrap();
        assert_eq!(applied, 1);
        let kept: Vec<String> = raw
            .zrange(format!("{p}{{log}}:all"), 0, -1, None, false, None, false)
            .await
            .unwrap();
        let k1: Vec<String> = raw
            .zrange(
                format!("{p}{{log}}:key:k1"),
                0,
                -1,
                None,
                false,
                None,
                false,
            )
            .await
            .unwrap();
        assert_eq!(k1.len(), REQUEST_LOG_MAX - 2, "{k1:?}");
        assert!(k1.iter().all(|m| kept.contains(m)), "{k1:?} / {kept:?}");
        let ids_of = |filter: RequestFilter<'static>| {
            let store = Arc::clone(&store);
            async move {
                ids(&store.recent_requests(&filter, 10).await.unwrap())
                    .iter()
                    .map(|s| s.to_string())
                    .collect::<Vec<_>>()
            }
        };
        assert_eq!(
            ids_of(RequestFilter::key("k1")).await,
            ["req-5", "req-4", "req-3"]
        );
        assert_eq!(ids_of(RequestFilter::key("k2")).await, ["req-12", "req-11"]);
        assert_eq!(
            ids_of(RequestFilter::account("acc-1")).await,
            ["req-5", "req-4", "req-3"]
        );
        raw.quit().await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn an_earlier_instance_trims_this_one_s_entries_standalone() {
        an_earlier_instance_trims_this_one_s_entries("REDIS_URL").await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn an_earlier_instance_trims_this_one_s_entries_cluster() {
        an_earlier_instance_trims_this_one_s_entries("REDIS_CLUSTER_URL").await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn log_indexes_hold_what_the_log_holds_standalone() {
        log_indexes_hold_what_the_log_holds("REDIS_URL").await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn log_indexes_hold_what_the_log_holds_cluster() {
        log_indexes_hold_what_the_log_holds("REDIS_CLUSTER_URL").await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn every_ephemeral_key_has_a_ttl_standalone() {
        every_ephemeral_key_has_a_ttl("REDIS_URL").await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn every_ephemeral_key_has_a_ttl_cluster() {
        every_ephemeral_key_has_a_ttl("REDIS_CLUSTER_URL").await;
    }

    async fn scripts_are_reloaded_after_a_script_flush(url_var: &str) {
        let Some(backend) = redis_backend(url_var) else {
            return;
        };
        let store = backend.open().await;
        store.insert_key(&key("k1", 1)).await.unwrap();
        let raw = raw_client(&backend.url).await;
        // Other tests running now just take the NOSCRIPT path once more.
        if raw.is_clustered() {
            raw.script_flush_cluster(false).await.unwrap();
        } else {
            raw.script_flush(false).await.unwrap();
        }
        // One call per kind: a single script, and a pipeline of scripts.
        assert_eq!(
            store.key_by_hash("hash-of-k1").await.unwrap(),
            Some(key("k1", 1))
        );
        assert_eq!(
            store
                .admit(&admission("k1", Some(1)), &lease("l1"))
                .await
                .unwrap(),
            Admit::Granted
        );
        let model = Dimension::Model("m".to_owned());
        store
            .record_usage(&batch(
                &[
                    ((model.clone(), Bucket::Total), counters(2)),
                    ((Dimension::All, Bucket::Total), counters(2)),
                ],
                vec![log_entry(1, "k1")],
            ))
            .await
            .unwrap();
        let got = store
            .usage(&UsageQuery {
                dimension: model,
                buckets: vec![Bucket::Total],
            })
            .await
            .unwrap();
        assert_eq!(got, vec![counters(2)]);
        assert_eq!(
            store
                .recent_requests(&RequestFilter::ALL, 5)
                .await
                .unwrap()
                .len(),
            1
        );
        raw.quit().await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn scripts_are_reloaded_after_a_script_flush_standalone() {
        scripts_are_reloaded_after_a_script_flush("REDIS_URL").await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn scripts_are_reloaded_after_a_script_flush_cluster() {
        scripts_are_reloaded_after_a_script_flush("REDIS_CLUSTER_URL").await;
    }

    /// The next change on `rx` that is not a `Resync`, within five seconds (a loaded machine).
    async fn next_change(rx: &mut tokio::sync::broadcast::Receiver<Change>) -> Change {
        tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                match rx.recv().await.unwrap() {
                    Change::Resync => continue,
                    change => return change,
                }
            }
        })
        .await
        .expect("a change within 5 s")
    }

    async fn writes_reach_other_instances(url_var: &str) {
        let Some(backend) = redis_backend(url_var) else {
            return;
        };
        let a = backend.open().await;
        let b = backend.open().await;
        let mut feed = b.changes().expect("a shared store has a change feed");

        a.insert_key(&key("k1", 1)).await.unwrap();
        assert_eq!(
            next_change(&mut feed).await,
            Change::Key {
                hash: "hash-of-k1".to_owned()
            }
        );
        // A rotated secret announces both hashes: caches hold the old one.
        let rotated = KeyRecord {
            hash: "hash-new".to_owned(),
            ..key("k1", 1)
        };
        a.update_key(&rotated).await.unwrap();
        let mut hashes = vec![next_change(&mut feed).await, next_change(&mut feed).await];
        hashes.sort_by_key(|c| format!("{c:?}"));
        assert_eq!(
            hashes,
            vec![
                Change::Key {
                    hash: "hash-new".to_owned()
                },
                Change::Key {
                    hash: "hash-of-k1".to_owned()
                },
            ]
        );
        a.delete_key("k1").await.unwrap();
        assert_eq!(
            next_change(&mut feed).await,
            Change::Key {
                hash: "hash-new".to_owned()
            }
        );
        a.insert_account(&account("a1", 1)).await.unwrap();
        assert_eq!(next_change(&mut feed).await, Change::Accounts);
        a.update_account_checked(&account("a1", 2)).await.unwrap();
        assert_eq!(next_change(&mut feed).await, Change::Accounts);
        a.delete_account("a1").await.unwrap();
        assert_eq!(next_change(&mut feed).await, Change::Accounts);
        // Nothing else: a no-op write announces nothing.
        assert!(!a.delete_account("a1").await.unwrap());
        assert!(
            tokio::time::timeout(Duration::from_millis(300), next_change(&mut feed))
                .await
                .is_err(),
            "a failed delete announced a change"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn writes_reach_other_instances_standalone() {
        writes_reach_other_instances("REDIS_URL").await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn writes_reach_other_instances_cluster() {
        writes_reach_other_instances("REDIS_CLUSTER_URL").await;
    }

    async fn a_retried_batch_counts_once(url_var: &str) {
        let Some(backend) = redis_backend(url_var) else {
            return;
        };
        let store = backend.open().await;
        let k1 = Dimension::Key("k1".to_owned());
        let once = batch(
            &[
                ((k1.clone(), Bucket::Total), counters(1)),
                ((Dimension::All, Bucket::Total), counters(1)),
            ],
            vec![log_entry(1, "k1")],
        );
        // As the stats task does after a write that failed part way: the same batch, same id.
        store.record_usage(&once).await.unwrap();
        store.record_usage(&once).await.unwrap();
        let query = |dimension: Dimension| UsageQuery {
            dimension,
            buckets: vec![Bucket::Total],
        };
        assert_eq!(
            store.usage(&query(k1.clone())).await.unwrap(),
            vec![counters(1)]
        );
        assert_eq!(
            store.usage(&query(Dimension::All)).await.unwrap(),
            vec![counters(1)]
        );
        assert_eq!(
            store
                .recent_requests(&RequestFilter::ALL, 10)
                .await
                .unwrap()
                .len(),
            1
        );
        assert_eq!(
            store
                .recent_requests(&RequestFilter::ALL, usize::MAX)
                .await
                .unwrap()
                .len(),
            1,
            "no limit is too large"
        );
        // Another batch (another id) with the same content counts again.
        store
            .record_usage(&UsageBatch {
                id: once.id.wrapping_add(1),
                ..once.clone()
            })
            .await
            .unwrap();
        assert_eq!(store.usage(&query(k1)).await.unwrap(), vec![counters(2)]);
        // Batches without an id (0) are never mistaken for retries of each other.
        let unnamed = UsageBatch {
            id: 0,
            ..once.clone()
        };
        store.record_usage(&unnamed).await.unwrap();
        store.record_usage(&unnamed).await.unwrap();
        assert_eq!(
            store.usage(&query(Dimension::All)).await.unwrap(),
            vec![counters(4)]
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_retried_batch_counts_once_standalone() {
        a_retried_batch_counts_once("REDIS_URL").await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_retried_batch_counts_once_cluster() {
        a_retried_batch_counts_once("REDIS_CLUSTER_URL").await;
    }

    /// fred sends a call again when its reply was lost, after the first run took effect. A replay
    /// that its own first run leaves without an account (the account's last slot taken by that
    /// run) must not answer "unavailable": the caller gives back nothing after that
    /// (`scheduler::pick_remote`), so the first run's leases would stay held until their
    /// deadline. It fails instead, and what the caller gives back after a failed call (the key's
    /// lease, a lease on every candidate) frees everything. Redis only: the embedded store is
    /// never called twice for one call.
    async fn a_replayed_take_gives_no_unavailable(url_var: &str) {
        let Some(backend) = redis_backend(url_var) else {
            return;
        };
        let store = backend.open().await;
        let one = [candidate("a1", 0, Some(1))];
        let request = |session| PickRequest {
            candidates: &one,
            family: None,
            session,
            now_ms: now_ms(),
        };
        let in_flight = |store: Arc<dyn Store>| async move {
            (
                store.key_state("k1", &[]).await.unwrap().in_flight,
                store.account_runtime("a1").await.unwrap().in_flight,
            )
        };
        // What `limits::run_to_end` gives back after a failed call.
        let give_back = |store: Arc<dyn Store>, key_lease: Option<&str>, account_lease: &str| {
            let key = key_lease.map(|id| KeySettle {
                key_id: "k1".to_owned(),
                lease: lease(id),
                reserved: Vec::new(),
                used: Vec::new(),
            });
            let account = AccountRelease {
                key_id: "k1".to_owned(),
                account_id: "a1".to_owned(),
                lease: lease(account_lease),
            };
            async move {
                store
                    .finish(key.as_ref(), Some(&account), None)
                    .await
                    .unwrap();
            }
        };
        let sessions = [
            None,
            // A stored response's session, bound to a1: it waits for its account (mode '3').
            Some(SessionPick {
                id: "s1",
                ttl: Duration::from_secs(60),
                move_on_overflow: false,
                write: false,
            }),
        ];
        let bind = SessionPick {
            write: true,
            ..sessions[1].unwrap()
        };
        let picked = store
            .pick_account(&request(Some(bind)), &lease("bind"))
            .await
            .unwrap();
        assert!(matches!(picked, Picked::Account { .. }), "{picked:?}");
        give_back(Arc::clone(&store), None, "bind").await;

        for (n, session) in sessions.into_iter().enumerate() {
            // The admission and the pick in one call.
            let (key_lease, account_lease) = (lease(&format!("r{n}")), lease(&format!("r{n}.0")));
            let admission = admission("k1", None);
            for run in ["first", "replay"] {
                let taken = store
                    .admit_and_pick(&admission, &key_lease, &request(session), &account_lease)
                    .await;
                match (run, &taken) {
                    ("first", Ok(Taken::Picked(Picked::Account { id, .. }))) if id == "a1" => {}
                    ("replay", Err(StoreError::Unavailable(_))) => {}
                    _ => panic!("{run} run of admit_and_pick ({session:?}): {taken:?}"),
                }
            }
            assert_eq!(in_flight(Arc::clone(&store)).await, (1, 1));
            give_back(Arc::clone(&store), Some(&key_lease.id), &account_lease.id).await;
            assert_eq!(
                in_flight(Arc::clone(&store)).await,
                (0, 0),
                "the caller's give-back after the replay frees both leases ({session:?})"
            );

            // A pick on its own (a later attempt), the same.
            let account_lease = lease(&format!("r{n}.1"));
            for run in ["first", "replay"] {
                let picked = store.pick_account(&request(session), &account_lease).await;
                match (run, &picked) {
                    ("first", Ok(Picked::Account { id, .. })) if id == "a1" => {}
                    ("replay", Err(StoreError::Unavailable(_))) => {}
                    _ => panic!("{run} run of pick_account ({session:?}): {picked:?}"),
                }
            }
            give_back(Arc::clone(&store), None, &account_lease.id).await;
            assert_eq!(in_flight(Arc::clone(&store)).await, (0, 0), "{session:?}");
        }

        // A pick on its own whose replay finds its account still free picks it again: it is
        // the same lease, counted once.
        let two = [candidate("a1", 0, Some(2))];
        let request = PickRequest {
            candidates: &two,
            family: None,
            session: None,
            now_ms: now_ms(),
        };
        let held = lease("r9.1");
        let first = store.pick_account(&request, &held).await.unwrap();
        assert!(matches!(first, Picked::Account { .. }), "{first:?}");
        let replay = store.pick_account(&request, &held).await;
        assert!(
            matches!(replay, Err(StoreError::Unavailable(_))),
            "replay of pick_account: {replay:?}"
        );
        give_back(Arc::clone(&store), None, &held.id).await;
        assert_eq!(in_flight(Arc::clone(&store)).await, (0, 0));

        // With another account free, the replay of a pick on its own would choose it (the
        // first run raised its own account's load): it finds its lease first and fails, and the
        // caller's give-back on every candidate frees the first run's.
        let both = [candidate("a1", 0, None), candidate("a2", 0, None)];
        let request = PickRequest {
            candidates: &both,
            family: None,
            session: None,
            now_ms: now_ms(),
        };
        let held = lease("r10.1");
        let first = store.pick_account(&request, &held).await.unwrap();
        assert!(matches!(first, Picked::Account { .. }), "{first:?}");
        let replay = store.pick_account(&request, &held).await;
        assert!(
            matches!(replay, Err(StoreError::Unavailable(_))),
            "replay of pick_account with another account free: {replay:?}"
        );
        for account_id in ["a1", "a2"] {
            let release = AccountRelease {
                key_id: "k1".to_owned(),
                account_id: account_id.to_owned(),
                lease: held.clone(),
            };
            store.finish(None, Some(&release), None).await.unwrap();
        }
        for account_id in ["a1", "a2"] {
            assert_eq!(
                store.account_runtime(account_id).await.unwrap().in_flight,
                0,
                "{account_id}"
            );
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_replayed_take_gives_no_unavailable_standalone() {
        a_replayed_take_gives_no_unavailable("REDIS_URL").await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_replayed_take_gives_no_unavailable_cluster() {
        a_replayed_take_gives_no_unavailable("REDIS_CLUSTER_URL").await;
    }

    /// Deleting a key forgets its live state (in-flight count, first use, meters), as deleting an
    /// account does: nothing of it stays in `{live}:state`. Redis only: the embedded store keeps
    /// a deleted key's limit counters (they are rows of its own, left alone here).
    async fn deleting_a_key_forgets_its_live_state(url_var: &str) {
        let Some(backend) = redis_backend(url_var) else {
            return;
        };
        let store = backend.open().await;
        let client = raw_client(&backend.url).await;
        let state = format!("{}{{live}}:state", backend.prefix);
        let fields_of = |client: Client, state: String| async move {
            let fields: Vec<String> = client.hkeys(&state).await.unwrap();
            let mut fields: Vec<String> = fields
                .into_iter()
                .filter(|f| f.starts_with("k2:k1"))
                .collect();
            fields.sort();
            fields
        };
        k1_with_two_requests(&*store).await;
        store
            .settle(
                "k1",
                &lease("done"),
                &used(&[("day:x", 12), ("win:req", 1)]),
            )
            .await
            .unwrap();
        assert_eq!(
            fields_of(client.clone(), state.clone()).await,
            [
                "k2:k1b",
                "k2:k1first",
                "k2:k1h:day:x",
                "k2:k1h:win:req",
                "k2:k1n",
                "k2:k1u:day:x",
                "k2:k1u:win:req"
            ]
        );

        assert!(store.delete_key("k1").await.unwrap());
        assert_eq!(
            fields_of(client.clone(), state.clone()).await,
            Vec::<String>::new(),
            "the deleted key's live state is gone"
        );
        let gone = store
            .key_state(
                "k1",
                &[SmolStr::new_static("day:x"), SmolStr::new_static("win:req")],
            )
            .await
            .unwrap();
        assert_eq!(gone.in_flight, 0);
        assert_eq!(gone.first_used_at, None);
        assert_eq!(gone.meters, [MeterUse::default(), MeterUse::default()]);
        // The request still in flight ends: nothing of the key comes back.
        store
            .settle("k1", &lease("in-flight"), &used(&[("day:x", 5)]))
            .await
            .unwrap();
        assert_eq!(
            fields_of(client.clone(), state.clone()).await,
            Vec::<String>::new(),
            "a late settle wrote the deleted key's fields back"
        );
        // Cleared again when the record is already gone (a retried delete), answering false.
        assert!(!store.delete_key("k1").await.unwrap());
    }

    /// An account deleted while a request of its is in flight: the request's end writes no
    /// in-flight count back for it.
    async fn a_deleted_account_s_last_request_leaves_nothing(url_var: &str) {
        let Some(backend) = redis_backend(url_var) else {
            return;
        };
        let store = backend.open().await;
        let client = raw_client(&backend.url).await;
        let state = format!("{}{{live}}:state", backend.prefix);
        let fields = || async {
            let all: Vec<String> = client.hkeys(&state).await.unwrap();
            all.into_iter()
                .filter(|f| f.starts_with("a2:a1"))
                .collect::<Vec<_>>()
        };
        store.insert_account(&account("a1", 1)).await.unwrap();
        let candidates = [candidate("a1", 0, None)];
        let picked = store.pick_simple(&candidates, &lease("l1")).await.unwrap();
        assert_eq!(picked.as_deref(), Some("a1"));
        assert!(fields().await.contains(&"a2:a1n".to_owned()));
        assert!(store.delete_account("a1").await.unwrap());
        assert_eq!(fields().await, Vec::<String>::new());
        store.release("k1", Some("a1"), &lease("l1")).await.unwrap();
        assert_eq!(fields().await, Vec::<String>::new(), "written back");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_deleted_account_s_last_request_leaves_nothing_standalone() {
        a_deleted_account_s_last_request_leaves_nothing("REDIS_URL").await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_deleted_account_s_last_request_leaves_nothing_cluster() {
        a_deleted_account_s_last_request_leaves_nothing("REDIS_CLUSTER_URL").await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn deleting_a_key_forgets_its_live_state_standalone() {
        deleting_a_key_forgets_its_live_state("REDIS_URL").await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn deleting_a_key_forgets_its_live_state_cluster() {
        deleting_a_key_forgets_its_live_state("REDIS_CLUSTER_URL").await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn odd_ids_keep_their_own_keys() {
        let Some(backend) =
            redis_backend("REDIS_CLUSTER_URL").or_else(|| redis_backend("REDIS_URL"))
        else {
            return;
        };
        let store = backend.open().await;
        // Braces would end a hash tag early; `%` is the escape character itself.
        let ids = ["a}b", "a{b", "a%7Db", "a", "a:b"];
        for (i, id) in ids.iter().enumerate() {
            let n = i as u64 + 1;
            store
                .record_usage(&batch(
                    &[(
                        (Dimension::Key((*id).to_owned()), Bucket::Total),
                        counters(n),
                    )],
                    vec![log_entry(i as i64, id)],
                ))
                .await
                .unwrap();
            assert_eq!(
                store
                    .admit(&admission(id, Some(1)), &lease(&format!("l{i}")))
                    .await
                    .unwrap(),
                Admit::Granted
            );
        }
        for (i, id) in ids.iter().enumerate() {
            let n = i as u64 + 1;
            let got = store
                .usage(&UsageQuery {
                    dimension: Dimension::Key((*id).to_owned()),
                    buckets: vec![Bucket::Total],
                })
                .await
                .unwrap();
            assert_eq!(got, vec![counters(n)], "{id}");
            assert_eq!(
                store
                    .admit(&admission(id, Some(1)), &lease("another"))
                    .await
                    .unwrap(),
                Admit::ConcurrencyExceeded { limit: 1 },
                "{id}"
            );
            let log = store
                .recent_requests(&RequestFilter::key(id), 10)
                .await
                .unwrap();
            assert_eq!(ids_of(&log), [format!("req-{i}")], "{id}");
        }
    }

    /// A key's meter registry (`take.lua`): an admission whose meters are registered as it
    /// would write them changes nothing about them; one whose period ended is dropped with its
    /// counters by the next admission; a late settle on it does not bring it back.
    #[tokio::test]
    async fn meters_whose_period_ended_are_dropped() {
        let Some(backend) = redis_backend("REDIS_URL") else {
            return;
        };
        let store = backend.open().await;
        let raw = raw_client(&backend.url).await;
        let state = format!("{}{{live}}:state", backend.prefix);
        let field = |name: &str| format!("k2:k1{name}");
        let t0 = now_ms();
        let at = |now: i64, day: &str| {
            let mut a = metered("k1", now, &[(day, 100, 10), ("total", 1_000, 10)]);
            a.meters[0].expires_at = Some(now + 1_000);
            a.meters[1].expires_at = None;
            a
        };
        let first = at(t0, "day:1");
        assert_eq!(
            store.admit(&first, &lease("l1")).await.unwrap(),
            Admit::Granted
        );
        let registry = format!("day:1={};total=-1;", t0 + 1_000);
        let b: Option<String> = raw.hget(&state, field("b")).await.unwrap();
        assert_eq!(b.as_deref(), Some(registry.as_str()));
        store
            .settle("k1", &lease("l1"), &used(&[("day:1", 3), ("total", 3)]))
            .await
            .unwrap();

        // The same meters again: the registry stays as it is, the holds add up.
        assert_eq!(
            store.admit(&first, &lease("l2")).await.unwrap(),
            Admit::Granted
        );
        let b: Option<String> = raw.hget(&state, field("b")).await.unwrap();
        assert_eq!(b.as_deref(), Some(registry.as_str()));
        let s = store
            .key_state("k1", &["day:1".into(), "total".into()])
            .await
            .unwrap();
        assert_eq!(
            s.meters,
            [
                MeterUse { used: 3, held: 10 },
                MeterUse { used: 3, held: 10 }
            ]
        );

        // The next day: day:1 is over, dropped from the registry with its counters.
        let t1 = t0 + 2_000;
        assert_eq!(
            store.admit(&at(t1, "day:2"), &lease("l3")).await.unwrap(),
            Admit::Granted
        );
        let b: Option<String> = raw.hget(&state, field("b")).await.unwrap();
        assert_eq!(b, Some(format!("day:2={};total=-1;", t1 + 1_000)));
        for gone in ["u:day:1", "h:day:1"] {
            let exists: bool = raw.hexists(&state, field(gone)).await.unwrap();
            assert!(!exists, "{gone}");
        }

        // l2 settles late, its holds as admitted: day:1 stays gone, the total counts it.
        store
            .finish(
                Some(&KeySettle {
                    key_id: "k1".to_owned(),
                    lease: lease("l2"),
                    reserved: used(&[("day:1", 10), ("total", 10)]),
                    used: used(&[("day:1", 5), ("total", 5)]),
                }),
                None,
                None,
            )
            .await
            .unwrap();
        for gone in ["u:day:1", "h:day:1"] {
            let exists: bool = raw.hexists(&state, field(gone)).await.unwrap();
            assert!(!exists, "{gone} came back");
        }
        let s = store
            .key_state("k1", &["day:1".into(), "day:2".into(), "total".into()])
            .await
            .unwrap();
        assert_eq!(
            s.meters,
            [
                MeterUse { used: 0, held: 0 },
                MeterUse { used: 0, held: 10 },
                MeterUse { used: 8, held: 10 },
            ]
        );
        assert_eq!(s.in_flight, 1);
        raw.quit().await.unwrap();
    }

    fn ids_of(entries: &[RequestLogEntry]) -> Vec<String> {
        entries.iter().map(|e| e.request_id.clone()).collect()
    }

    #[tokio::test]
    async fn connect_errors_do_not_show_the_password() {
        // Nothing listens on port 1: the connection is refused at once.
        let mut cfg = redis_config("sy:");
        cfg.connect_timeout_ms = 500;
        let err = RedisStore::connect("redis://user:hunter2@127.0.0.1:1/0", &cfg, 5)
            .await
            .err()
            .expect("nothing listens there");
        let message = err.to_string();
        assert!(matches!(err, StoreError::Unavailable(_)), "{message}");
        assert!(!message.contains("hunter2"), "{message}");
        let err = RedisStore::connect(
            "redis-cluster://user:hunter2@127.0.0.1:1,127.0.0.1:2",
            &cfg,
            5,
        )
        .await
        .err()
        .expect("nothing listens there");
        assert!(!err.to_string().contains("hunter2"), "{err}");
        let braces = RedisStore::connect("redis://127.0.0.1:1/0", &redis_config("a{b}:"), 5).await;
        assert!(
            braces.is_err(),
            "a prefix with braces would pin every key to one slot"
        );
    }

    /// A redis-server of this test's own on a free port, so that it can be killed.
    struct OwnRedis {
        port: u16,
        child: Option<std::process::Child>,
    }

    impl OwnRedis {
        fn start() -> OwnRedis {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let mut redis = OwnRedis { port, child: None };
            redis.spawn();
            redis
        }

        fn spawn(&mut self) {
            let child = std::process::Command::new("redis-server")
                .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
                .args(["--save", "", "--appendonly", "no"])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("redis-server on PATH (REDIS_URL is set)");
            self.child = Some(child);
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
                assert!(
                    std::time::Instant::now() < deadline,
                    "redis-server did not start"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }

        fn kill(&mut self) {
            if let Some(mut child) = self.child.take() {
                child.kill().unwrap();
                child.wait().unwrap();
            }
        }
    }

    impl Drop for OwnRedis {
        fn drop(&mut self) {
            self.kill();
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_redis_restart_fails_fast_then_recovers() {
        if std::env::var("REDIS_URL").is_err() {
            return;
        }
        let mut redis = OwnRedis::start();
        let mut cfg = redis_config("sy:");
        cfg.command_timeout_ms = 300;
        cfg.reconnect_max_delay_ms = 200;
        let store = RedisStore::connect(&format!("redis://127.0.0.1:{}/0", redis.port), &cfg, 5)
            .await
            .unwrap();
        let mut feed = store.changes().unwrap();
        store.insert_key(&key("k1", 1)).await.unwrap();
        assert_eq!(
            next_change(&mut feed).await,
            Change::Key {
                hash: "hash-of-k1".to_owned()
            }
        );

        redis.kill();
        for _ in 0..3 {
            let started = std::time::Instant::now();
            let err = store
                .admit(&admission("k1", Some(1)), &lease("down"))
                .await
                .expect_err("redis is down");
            assert!(matches!(err, StoreError::Unavailable(_)), "{err}");
            assert!(
                started.elapsed() < Duration::from_millis(1_500),
                "took {:?}",
                started.elapsed()
            );
        }
        assert!(store.ping().await.is_err());

        // Back (empty: no persistence), and served again without a new store.
        redis.spawn();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while store.ping().await.is_err() {
            assert!(std::time::Instant::now() < deadline, "no recovery");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(
            store
                .admit(&admission("k1", Some(1)), &lease("up"))
                .await
                .unwrap(),
            Admit::Granted
        );
        // The scripts were lost with the server: they came back through NOSCRIPT.
        store.insert_key(&key("k2", 1)).await.unwrap();
        // The feed announced the gap, then resumed.
        let mut seen = Vec::new();
        assert!(
            resynced(&mut feed, &mut seen).await,
            "no Resync after the reconnect: {seen:?}"
        );
        feed_resumes(&store, &mut feed, &mut seen, 3).await;
    }

    /// Whether the feed announces a gap (`Resync`) within 5 s; what it sent is kept in `seen`.
    async fn resynced(
        feed: &mut tokio::sync::broadcast::Receiver<Change>,
        seen: &mut Vec<Change>,
    ) -> bool {
        let resync = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                let change = feed.recv().await.unwrap();
                seen.push(change.clone());
                if change == Change::Resync {
                    return;
                }
            }
        });
        resync.await.is_ok()
    }

    /// The feed carries changes again: key `k<first>`, `k<first + 1>` … written through `store`
    /// until one is heard, within 5 s. Writes are repeated: a reconnect can come in several
    /// steps (each followed by its own Resync), and a write between two is rightly missed.
    async fn feed_resumes(
        store: &dyn Store,
        feed: &mut tokio::sync::broadcast::Receiver<Change>,
        seen: &mut Vec<Change>,
        first: usize,
    ) {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        let mut n = first;
        loop {
            let id = format!("k{n}");
            store.insert_key(&key(&id, 1)).await.unwrap();
            let wanted = Change::Key {
                hash: format!("hash-of-{id}"),
            };
            let got = tokio::time::timeout(Duration::from_millis(500), async {
                while let Ok(change) = feed.recv().await {
                    seen.push(change.clone());
                    if change == wanted {
                        return;
                    }
                }
            })
            .await;
            if got.is_ok() {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the feed did not resume: {seen:?}"
            );
            n += 1;
        }
    }

    /// A healthy feed answers its pings (a subscribed connection answers `pong` as an array; on a
    /// cluster, the ping goes to the node holding the subscription): no reconnect, no `Resync`.
    async fn a_healthy_feed_answers_its_pings(url_var: &str) {
        let Some(backend) = redis_backend(url_var) else {
            return;
        };
        let mut cfg = redis_config(&backend.prefix);
        cfg.feed_ping_interval_ms = 50;
        let store = RedisStore::connect(&backend.url, &cfg, REQUEST_LOG_MAX)
            .await
            .unwrap();
        let mut feed = store.changes().unwrap();
        tokio::time::sleep(Duration::from_millis(1_000)).await;
        store.insert_key(&key("k1", 1)).await.unwrap();
        let first = tokio::time::timeout(Duration::from_secs(5), feed.recv())
            .await
            .expect("a change within 5 s")
            .unwrap();
        assert_eq!(
            first,
            Change::Key {
                hash: "hash-of-k1".to_owned()
            },
            "about 20 pings made the feed reconnect"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_healthy_feed_answers_its_pings_standalone() {
        a_healthy_feed_answers_its_pings("REDIS_URL").await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_healthy_feed_answers_its_pings_cluster() {
        a_healthy_feed_answers_its_pings("REDIS_CLUSTER_URL").await;
    }

    /// A TCP proxy on loopback that can be told to drop every byte silently, both ways, closing
    /// nothing: what a NAT or load balancer that forgot a flow does. A connection made before or
    /// while it blackholes stays dead after `heal`, as such a flow does; new ones work again.
    struct Blackhole {
        port: u16,
        state: Arc<std::sync::Mutex<BlackholeState>>,
    }

    #[derive(Default)]
    struct BlackholeState {
        blackholed: bool,
        /// Per connection: whether it is dead.
        connections: Vec<Arc<std::sync::atomic::AtomicBool>>,
    }

    impl Blackhole {
        async fn start(upstream: String) -> Blackhole {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let port = listener.local_addr().unwrap().port();
            let state = Arc::new(std::sync::Mutex::new(BlackholeState::default()));
            let shared = Arc::clone(&state);
            // Stopped by: the test's runtime, with every connection's pumps.
            tokio::spawn(async move {
                while let Ok((client, _)) = listener.accept().await {
                    let Ok(server) = tokio::net::TcpStream::connect(&upstream).await else {
                        continue;
                    };
                    let dead = {
                        let mut state = shared.lock().unwrap();
                        let dead = Arc::new(std::sync::atomic::AtomicBool::new(state.blackholed));
                        state.connections.push(Arc::clone(&dead));
                        dead
                    };
                    let (client_read, client_write) = client.into_split();
                    let (server_read, server_write) = server.into_split();
                    tokio::spawn(Self::pump(client_read, server_write, Arc::clone(&dead)));
                    tokio::spawn(Self::pump(server_read, client_write, dead));
                }
            });
            Blackhole { port, state }
        }

        /// Copies `from` to `to` while the connection lives; once dead, reads and drops.
        async fn pump(
            mut from: tokio::net::tcp::OwnedReadHalf,
            mut to: tokio::net::tcp::OwnedWriteHalf,
            dead: Arc<std::sync::atomic::AtomicBool>,
        ) {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut buf = vec![0u8; 16 * 1024];
            loop {
                let n = match from.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                if dead.load(std::sync::atomic::Ordering::SeqCst) {
                    continue;
                }
                if to.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
        }

        fn blackhole(&self) {
            let mut state = self.state.lock().unwrap();
            state.blackholed = true;
            for dead in &state.connections {
                dead.store(true, std::sync::atomic::Ordering::SeqCst);
            }
        }

        fn heal(&self) {
            self.state.lock().unwrap().blackholed = false;
        }
    }

    /// The change feed's connection dies silently (no reset, no close): the instance notices by
    /// itself (its pings go unanswered), reconnects once the network is back, announces the gap
    /// with `Resync` and gets changes again. Without the pings nothing would ever notice: a
    /// subscribed connection awaits no answer.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_silently_dead_feed_is_noticed() {
        let Some(backend) = redis_backend("REDIS_URL") else {
            return;
        };
        // redis://[userinfo@]host:port/db
        let rest = backend.url.strip_prefix("redis://").unwrap();
        let (authority, db) = rest.split_once('/').unwrap_or((rest, "0"));
        let (userinfo, upstream) = match authority.rsplit_once('@') {
            Some((userinfo, host)) => (format!("{userinfo}@"), host),
            None => (String::new(), authority),
        };
        let proxy = Blackhole::start(upstream.to_owned()).await;
        let mut cfg = redis_config(&backend.prefix);
        cfg.connect_timeout_ms = 300;
        cfg.command_timeout_ms = 200;
        cfg.reconnect_max_delay_ms = 200;
        cfg.feed_ping_interval_ms = 200;
        let proxied = format!("redis://{userinfo}127.0.0.1:{}/{db}", proxy.port);
        let behind = RedisStore::connect(&proxied, &cfg, REQUEST_LOG_MAX)
            .await
            .unwrap();
        let direct = backend.open().await;
        let mut feed = behind.changes().unwrap();
        direct.insert_key(&key("k1", 1)).await.unwrap();
        assert_eq!(
            next_change(&mut feed).await,
            Change::Key {
                hash: "hash-of-k1".to_owned()
            }
        );

        proxy.blackhole();
        // Lost to `behind`: only the Resync below tells its caches.
        direct.delete_key("k1").await.unwrap();
        tokio::time::sleep(Duration::from_millis(800)).await;
        proxy.heal();

        let mut seen = Vec::new();
        assert!(
            resynced(&mut feed, &mut seen).await,
            "no Resync within 5 s of the network coming back: the dead feed went unnoticed \
             (seen: {seen:?})"
        );
        // And the feed works again.
        feed_resumes(direct.as_ref(), &mut feed, &mut seen, 2).await;
    }
}
