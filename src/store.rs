//! The store: every piece of state Switchyard keeps, behind domain operations.
//!
//! Callers never see commands or tables, only what they mean: key and account records, the
//! atomic admission and account pick of the hot path, usage batches, the request log. The
//! embedded implementation (default) keeps hot state in memory and durable records in a redb file;
//! the Redis implementation maps each operation onto one script or pipeline. Both pass
//! `tests/store_conformance.rs`.

pub mod embedded;
pub mod redis;

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::scheduler::policy::{Health, Report, Sticky};
use crate::usage::TokenUsage;

pub type StoreResult<T> = Result<T, StoreError>;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The backing store cannot be reached or failed; the request may be retried later.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// Another process holds the embedded database (a running `switchyard serve`).
    #[error("the data directory is in use by another switchyard process")]
    Locked,
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
}

/// A change to shared records that every instance's caches must hear of. A store shared by
/// several instances announces each key and account write itself (so no writer can forget);
/// `Resync` means the feed may have missed messages (a reconnect) and every cache must be dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// The key record with this secret hash changed or was deleted.
    Key {
        hash: String,
    },
    /// Some account record changed, was added or deleted.
    Accounts,
    Resync,
}

/// A client API key. Only the SHA-256 of the secret is kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRecord {
    pub id: String,
    pub name: String,
    /// Lower-case hex SHA-256 of the full secret.
    pub hash: String,
    /// The first characters of the secret, enough to recognise it in a list (`sy-AbCd`).
    pub prefix: String,
    pub enabled: bool,
    /// Unix milliseconds.
    pub created_at: i64,
    /// Dedicated accounts: this key is served only by these, unless they cannot serve and the
    /// binding allows falling back to the shared pool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binding: Option<KeyBinding>,
}

/// The accounts a key is bound to: listed by id, or every account of a group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyBinding {
    #[serde(default)]
    pub accounts: Vec<String>,
    #[serde(default)]
    pub group: Option<String>,
    /// When none of the bound accounts can serve: use the shared pool (`true`) or answer 503.
    #[serde(default)]
    pub fallback: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Provider {
    Anthropic,
}

impl Provider {
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Anthropic => "anthropic",
        }
    }
}

/// An upstream vendor account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountRecord {
    pub id: String,
    pub name: String,
    pub provider: Provider,
    /// Without a trailing slash; paths are appended as the vendor's SDK does.
    pub base_url: String,
    /// The api key sealed by `crypto::MasterKey::seal` (never the plain text).
    pub sealed_api_key: String,
    /// Lower is preferred.
    pub priority: i32,
    pub schedulable: bool,
    pub enabled: bool,
    /// Model globs this account serves; empty means every model.
    pub models: Vec<String>,
    /// At most this many requests in flight at once; `None` is unbounded.
    pub max_concurrency: Option<u32>,
    /// Share of load relative to the other accounts of the same priority.
    #[serde(default = "one")]
    pub weight: u32,
    /// A group keys can be bound to (`KeyBinding::group`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    pub created_at: i64,
}

fn one() -> u32 {
    1
}

/// Identifies one in-flight request's hold on the store's counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// Unique per request.
    pub id: String,
    /// A lease not released within this time expires on its own (a crashed instance leaks nothing).
    pub ttl: Duration,
}

/// What the key's limits allow; checked and reserved in one atomic `admit` call.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Admission {
    pub key_id: String,
    /// Maximum requests of this key in flight; `None` is unbounded.
    pub max_concurrency: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admit {
    Granted,
    /// The key already has this many requests in flight.
    ConcurrencyExceeded {
        limit: u32,
    },
}

/// One account the scheduler may use. `pick_account` applies `scheduler::policy::choose`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub account_id: String,
    pub priority: i32,
    pub max_concurrency: Option<u32>,
    /// Share of load relative to the others of the same priority (at least 1).
    pub weight: u32,
}

/// What `pick_account` is asked: `scheduler::policy::choose` over these candidates.
#[derive(Debug, Clone)]
pub struct PickRequest<'a> {
    pub candidates: &'a [Candidate],
    /// The requested model's family, for family-scoped rate limits.
    pub family: Option<&'a str>,
    /// The request's session, when it has one.
    pub session: Option<SessionPick<'a>>,
    /// Unix ms, the caller's clock (as for leases).
    pub now_ms: i64,
}

/// A session's binding to an account, kept in the store with a TTL renewed on every pick.
#[derive(Debug, Clone, Copy)]
pub struct SessionPick<'a> {
    /// Opaque, already scoped to the key (`scheduler::session::identify`).
    pub id: &'a str,
    pub ttl: Duration,
    /// When the bound account cannot serve: move the binding (`true`) or let this request
    /// escape once and keep it (`false`).
    pub move_on_overflow: bool,
}

/// The answer of `pick_account`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Picked {
    Account {
        id: String,
        sticky: Sticky,
        /// The account's health was not clean (failures counted or a cooldown recorded): the
        /// caller should report the outcome even when it is a success.
        degraded: bool,
    },
    /// No candidate can serve now; the earliest one recovers on its own at `retry_at` (unix ms).
    Unavailable { retry_at: Option<i64> },
}

/// Hot, shared state of one account.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountRuntime {
    pub in_flight: u32,
    /// Unix milliseconds of the last pick, 0 if never.
    pub last_used_at: i64,
    pub health: Health,
}

/// Additive counters for one dimension over one time bucket.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    pub requests: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache_creation_input_tokens: u64,
    pub cache_creation_5m_input_tokens: u64,
    pub cache_creation_1h_input_tokens: u64,
    pub cache_read_input_tokens: u64,
    pub cost_nanousd: u64,
}

impl Counters {
    pub fn of(usage: &TokenUsage, cost_nanousd: u64) -> Counters {
        Counters {
            requests: 1,
            input_tokens: usage.input_tokens,
            output_tokens: usage.output_tokens,
            cache_creation_input_tokens: usage.cache_creation_input_tokens,
            cache_creation_5m_input_tokens: usage.cache_creation_5m_input_tokens,
            cache_creation_1h_input_tokens: usage.cache_creation_1h_input_tokens,
            cache_read_input_tokens: usage.cache_read_input_tokens,
            cost_nanousd,
        }
    }

    pub fn add(&mut self, other: &Counters) {
        self.requests += other.requests;
        self.input_tokens += other.input_tokens;
        self.output_tokens += other.output_tokens;
        self.cache_creation_input_tokens += other.cache_creation_input_tokens;
        self.cache_creation_5m_input_tokens += other.cache_creation_5m_input_tokens;
        self.cache_creation_1h_input_tokens += other.cache_creation_1h_input_tokens;
        self.cache_read_input_tokens += other.cache_read_input_tokens;
        self.cost_nanousd += other.cost_nanousd;
    }
}

/// What usage is counted by. `All` is the whole installation.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Dimension {
    All,
    Key(String),
    Account(String),
    Model(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Granularity {
    Hour,
    Day,
    Month,
}

/// A time bucket, named by its start in UTC: hour `2026-11-22T08`, day `2026-11-22`, month
/// `2026-11`, or the all-time total.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Bucket {
    Hour(String),
    Day(String),
    Month(String),
    Total,
}

/// Usage aggregated in memory by `stats`, written in one store call.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UsageBatch {
    /// Unique per batch. A batch whose write failed is retried whole with the same id, so a
    /// store that applied part of it before failing can skip what it already applied.
    pub id: u64,
    pub counters: BTreeMap<(Dimension, Bucket), Counters>,
    pub requests: Vec<RequestLogEntry>,
}

impl UsageBatch {
    pub fn is_empty(&self) -> bool {
        self.counters.is_empty() && self.requests.is_empty()
    }
}

/// One relayed request, as the request log shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestLogEntry {
    pub request_id: String,
    /// Unix milliseconds when the request arrived.
    pub at: i64,
    pub key_id: String,
    pub account_id: Option<String>,
    pub model: String,
    pub surface: String,
    pub status: u16,
    pub latency_ms: u64,
    /// Time to the first response byte from upstream; `None` if none came.
    pub ttfb_ms: Option<u64>,
    pub usage: TokenUsage,
    pub cost_nanousd: u64,
}

/// `bucket_keys` of a query: which buckets to read for `dimension`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageQuery {
    pub dimension: Dimension,
    /// Buckets to read, in order; the answer has one entry per bucket (zero where nothing was recorded).
    pub buckets: Vec<Bucket>,
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Cheap liveness check (used by `/health`).
    async fn ping(&self) -> StoreResult<()>;

    // --- key records (admin path) ---
    async fn insert_key(&self, key: &KeyRecord) -> StoreResult<()>;
    async fn key(&self, id: &str) -> StoreResult<Option<KeyRecord>>;
    async fn key_by_hash(&self, hash: &str) -> StoreResult<Option<KeyRecord>>;
    /// Oldest first.
    async fn keys(&self) -> StoreResult<Vec<KeyRecord>>;
    /// Replaces the record with the same id; `false` if there is none.
    async fn update_key(&self, key: &KeyRecord) -> StoreResult<bool>;
    async fn delete_key(&self, id: &str) -> StoreResult<bool>;

    // --- account records (admin path) ---
    async fn insert_account(&self, account: &AccountRecord) -> StoreResult<()>;
    async fn account(&self, id: &str) -> StoreResult<Option<AccountRecord>>;
    /// Oldest first.
    async fn accounts(&self) -> StoreResult<Vec<AccountRecord>>;
    async fn update_account(&self, account: &AccountRecord) -> StoreResult<bool>;
    /// Also forgets the account's runtime state.
    async fn delete_account(&self, id: &str) -> StoreResult<bool>;
    async fn account_runtime(&self, id: &str) -> StoreResult<AccountRuntime>;

    // --- the hot path: at most two calls before the upstream request, one after ---
    /// Atomically checks the key's limits and takes a lease on them.
    async fn admit(&self, admission: &Admission, lease: &Lease) -> StoreResult<Admit>;
    /// Atomically chooses one candidate by `scheduler::policy::choose` (health, concurrency caps,
    /// the session's binding, priority, relative load, least recently picked), takes a lease on
    /// it, marks it used, and creates, renews or moves the session's binding as the choice says.
    async fn pick_account(&self, request: &PickRequest<'_>, lease: &Lease) -> StoreResult<Picked>;
    /// Applies one upstream outcome to the account's health (`Health::apply`), atomically with
    /// respect to other instances' reports.
    async fn report_health(
        &self,
        account_id: &str,
        report: &Report,
        now_ms: i64,
    ) -> StoreResult<()>;
    /// Clears the account's health (an admin's reset): it serves again at once.
    async fn reset_health(&self, account_id: &str) -> StoreResult<()>;
    /// Ends a lease taken by `admit` (and by `pick_account` when `account_id` is given). Idempotent.
    async fn release(
        &self,
        key_id: &str,
        account_id: Option<&str>,
        lease: &Lease,
    ) -> StoreResult<()>;

    // --- usage ---
    /// Adds every counter of the batch and appends its request log entries, all or nothing.
    async fn record_usage(&self, batch: &UsageBatch) -> StoreResult<()>;
    /// Counters for each bucket of the query, in the query's order.
    async fn usage(&self, query: &UsageQuery) -> StoreResult<Vec<Counters>>;
    /// The most recent requests, newest first, optionally only those of one key.
    async fn recent_requests(
        &self,
        key_id: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<RequestLogEntry>>;

    /// Makes everything written so far durable. Called on graceful shutdown.
    async fn flush(&self) -> StoreResult<()>;

    /// Changes written by other instances, for cache invalidation; `None` when the store is not
    /// shared (the embedded store: this process made every change itself).
    fn changes(&self) -> Option<tokio::sync::broadcast::Receiver<Change>> {
        None
    }
}
