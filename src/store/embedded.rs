//! The embedded store: one process, one node.
//!
//! Durable state (key and account records, usage counters, the request log) lives in a redb file
//! under the data directory. Every write is one redb transaction committed with redb's default
//! (immediate) durability; the limit counters and spend, kept in memory, are written with each
//! usage batch, and `flush` writes them and the session bindings. The database lock also keeps a
//! second `switchyard serve` off the same data directory.
//!
//! Hot state (in-flight leases, health, last pick times, session bindings) lives in memory
//! behind one mutex: with a single node there is nobody to share it with, and a restart forgets
//! every in-flight request anyway (the bindings are written at a graceful stop and read back).
//! The mutex is never held across an await, and the hot-path methods never touch the file.

use foldhash::{HashMap, HashSet};
use std::ops::Bound;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::scheduler::policy::{self, Choice, Contender, Health, Report, Sticky};

use super::{
    AccountRecord, AccountRelease, AccountRuntime, Admission, Admit, Binding, Bucket, Counters,
    DAY_BUCKETS_KEPT, Dimension, HOUR_BUCKETS_KEPT, HealthChange, KeyRecord, KeyRenewal, KeySettle,
    KeyState, Lease, MeterUse, PickRequest, Picked, Renewed, RequestFilter, RequestLogEntry,
    SmolStr, SpendBucket, Store, StoreError, StoreResult, Taken, UsageBatch, UsageQuery,
    buckets_of,
};

/// Key id -> JSON `KeyRecord`.
const KEYS: TableDefinition<&str, &[u8]> = TableDefinition::new("keys");
/// Secret hash -> key id; kept in step with `KEYS` inside the same transactions.
const KEY_HASHES: TableDefinition<&str, &str> = TableDefinition::new("key_hashes");
/// Account id -> JSON `AccountRecord`.
const ACCOUNTS: TableDefinition<&str, &[u8]> = TableDefinition::new("accounts");
/// `counter_key(dimension, bucket)` -> JSON `Counters`. Hour and day rows past their retention
/// are deleted by `prune_usage`.
const USAGE: TableDefinition<&str, &[u8]> = TableDefinition::new("usage");
/// (arrival unix ms, request id) -> JSON `RequestLogEntry`. Keyed by arrival rather than by
/// append order so that a long stream finishing late still sorts where it started; the request id
/// makes the key unique and re-recording the same request idempotent.
const REQUEST_LOG: TableDefinition<(i64, &str), &[u8]> = TableDefinition::new("request_log");
/// (key id, bucket) -> JSON `StoredMeter`: the settled use of each limit counter.
const METERS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("meters");
/// Key id -> unix ms of its first use (activation on first use).
const FIRST_USE: TableDefinition<&str, i64> = TableDefinition::new("first_use");
/// Session id -> (bound account id, unix ms the binding expires at, ms it had left when
/// written): the bindings in memory, written at a graceful stop (`flush`) and read back at the
/// next open, so that a restart (an upgrade) keeps sessions on their accounts' warm prompt caches
/// and stored responses' follow-ups on the accounts that hold them. What was left bounds what is
/// left after a clock that moved back.
const SESSIONS: TableDefinition<&str, (&str, i64, i64)> = TableDefinition::new("session_bindings");
/// At most this many bindings are written (those with the most time left): the write must fit
/// in the stop's last second.
const SESSIONS_KEPT: usize = 100_000;
/// (account id, period) -> (spent in nano-dollars, unix ms it expires at): `Store::add_spend`.
const SPEND: TableDefinition<(&str, &str), (u64, i64)> = TableDefinition::new("spend");

const FILE_NAME: &str = "switchyard.redb";
/// redb's page cache. Its default is 1 GiB, which the churn of the request log and the usage
/// buckets fills over a few hundred thousand requests (136 MiB resident after the benchmark's
/// load runs); the working set (records, meters, the current buckets, the log's tail) is a few MiB.
const CACHE_BYTES: usize = 16 << 20;
/// Usage rows one `prune_usage` call looks at, in key order from where the last one stopped: one
/// short read per flush interval, and a pass over a million rows in about four minutes at the
/// default interval.
const PRUNE_ROWS: usize = 1_000;
/// A pass over the usage table starts at most this often once the last one reached its end:
/// buckets expire by the hour.
const PRUNE_PASS_EVERY_MS: i64 = 3_600_000;

pub struct EmbeddedStore {
    /// Shared with `spawn_blocking` closures, which must own what they use.
    db: Arc<Database>,
    request_log_max: usize,
    hot: Mutex<Hot>,
    prune: Mutex<UsagePrune>,
    /// Whether the file may hold session bindings (a flush with none to write then has nothing
    /// to clear either, and writes nothing).
    sessions_in_file: AtomicBool,
}

/// Where `prune_usage` is in its pass over the usage table.
#[derive(Default)]
struct UsagePrune {
    /// The last row looked at; `None` between passes.
    after: Option<String>,
    /// When the next pass may start (unix ms).
    next_pass_ms: i64,
}

impl EmbeddedStore {
    /// Opens (creating if needed) `<data_dir>/switchyard.redb`, keeping at most `request_log_max`
    /// request log entries.
    pub fn open(data_dir: &Path, request_log_max: usize) -> StoreResult<EmbeddedStore> {
        std::fs::create_dir_all(data_dir).map_err(|e| {
            StoreError::Unavailable(format!("creating {}: {e}", data_dir.display()))
        })?;
        let path = data_dir.join(FILE_NAME);
        let db = redb::Builder::new()
            .set_cache_size(CACHE_BYTES)
            .create(&path)
            .map_err(|e| match e {
                redb::DatabaseError::DatabaseAlreadyOpen => StoreError::Locked,
                other => db_err(other),
            })?;
        // Read transactions fail on a table that was never created, so create them all up front.
        let txn = db.begin_write().map_err(db_err)?;
        txn.open_table(KEYS).map_err(db_err)?;
        txn.open_table(KEY_HASHES).map_err(db_err)?;
        txn.open_table(ACCOUNTS).map_err(db_err)?;
        txn.open_table(USAGE).map_err(db_err)?;
        txn.open_table(REQUEST_LOG).map_err(db_err)?;
        txn.open_table(METERS).map_err(db_err)?;
        txn.open_table(FIRST_USE).map_err(db_err)?;
        txn.open_table(SPEND).map_err(db_err)?;
        txn.open_table(SESSIONS).map_err(db_err)?;
        txn.commit().map_err(db_err)?;
        let limits = load_limits(&db, now_ms())?;
        let sessions = load_sessions(&db)?;
        Ok(EmbeddedStore {
            db: Arc::new(db),
            request_log_max,
            sessions_in_file: AtomicBool::new(!sessions.is_empty()),
            hot: Mutex::new(Hot {
                limits,
                // Swept first when twice as many (a pick must not scan them all each time).
                sessions_prune_at: sessions.len().saturating_mul(2),
                sessions,
                ..Hot::default()
            }),
            prune: Mutex::default(),
        })
    }

    /// Runs `f` on the blocking pool: redb reads and commits (with their fsync) are synchronous,
    /// and an fsync on a runtime worker would stall every connection scheduled on it.
    async fn blocking<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Database) -> StoreResult<T> + Send + 'static,
    {
        let db = Arc::clone(&self.db);
        tokio::task::spawn_blocking(move || f(&db))
            .await
            .map_err(|e| StoreError::Unavailable(format!("store task failed: {e}")))?
    }

    /// Takes what changed in the limit counters, to be written; `restore_limits_write` puts it
    /// back when the write failed.
    fn take_limits_write(&self) -> StoreResult<LimitsWrite> {
        let mut guard = self.hot();
        let hot = &mut *guard;
        // Key lease maps are kept while empty (the next admission reuses them); here they go.
        hot.keys.retain(|_, leases| !leases.is_empty());
        let limits = &mut hot.limits;
        limits.prune(now_ms());
        let mut write = LimitsWrite::default();
        for (key_id, buckets) in std::mem::take(&mut limits.dirty_meters) {
            for bucket in buckets {
                let value = limits.meter(&key_id, &bucket).map(encode).transpose()?;
                write.meters.push(((key_id.clone(), bucket), value));
            }
        }
        for key_id in std::mem::take(&mut limits.dirty_first_use) {
            if let Some(at) = limits.first_use.get(&key_id) {
                write.first_use.push((key_id, *at));
            }
        }
        for id in std::mem::take(&mut limits.dirty_spend) {
            let value = limits.spend.get(&id).copied();
            write.spend.push((id, value));
        }
        Ok(write)
    }

    fn restore_limits_write(&self, (meters, first_use, spend): LimitsKeys) {
        let mut hot = self.hot();
        for (key_id, bucket) in &meters {
            hot.limits.mark_dirty(key_id, bucket);
        }
        hot.limits.dirty_first_use.extend(first_use);
        hot.limits.dirty_spend.extend(spend);
    }

    /// Adds a usage batch and writes the changed limit counters, in one transaction.
    async fn write_usage(&self, batch: &UsageBatch, limits: LimitsWrite) -> StoreResult<()> {
        let mut counters = Vec::with_capacity(batch.counters.len());
        for ((dimension, bucket), add) in &batch.counters {
            counters.push((counter_key(dimension, bucket), *add));
        }
        // Every entry encoded into one buffer: one allocation per batch rather than a few (the
        // growing `Vec` of each `to_vec`) per request.
        let mut encoded = Vec::with_capacity(batch.requests.len() * 512);
        let mut entries = Vec::with_capacity(batch.requests.len());
        for entry in &batch.requests {
            let start = encoded.len();
            entry.write_json(&mut encoded).map_err(encoding_err)?;
            entries.push((entry.at, entry.request_id.clone(), start..encoded.len()));
        }
        let max = u64::try_from(self.request_log_max).unwrap_or(u64::MAX);
        self.blocking(move |db| {
            let txn = db.begin_write().map_err(db_err)?;
            limits.apply(&txn)?;
            {
                let mut usage = txn.open_table(USAGE).map_err(db_err)?;
                for (key, add) in &counters {
                    let mut total = match usage.get(key.as_str()).map_err(db_err)? {
                        Some(v) => decode::<Counters>(v.value(), "counters")?,
                        None => Counters::default(),
                    };
                    total.add(add);
                    usage
                        .insert(key.as_str(), encode(&total)?.as_slice())
                        .map_err(db_err)?;
                }
                let mut log = txn.open_table(REQUEST_LOG).map_err(db_err)?;
                for (at, request_id, range) in &entries {
                    log.insert((*at, request_id.as_str()), &encoded[range.clone()])
                        .map_err(db_err)?;
                }
                // Trimmed on write, so reads never pay for it and the file stays bounded: the
                // oldest entries go in one cursor walk (a `pop_first` each descended the tree
                // again, about 3% of the relay's CPU at 20k requests/s).
                let excess = log.len().map_err(db_err)?.saturating_sub(max);
                if excess > 0 {
                    let oldest = log.extract_if(|_, _| true).map_err(db_err)?;
                    for removed in oldest.take(usize::try_from(excess).unwrap_or(usize::MAX)) {
                        removed.map_err(db_err)?;
                    }
                }
            }
            // Dropping the transaction on any `?` above aborts it: all or nothing.
            txn.commit().map_err(db_err)
        })
        .await
    }

    /// A poisoned lock is recovered rather than propagated: no code path panics while holding it,
    /// and every update below leaves the maps consistent at each step.
    fn hot(&self) -> MutexGuard<'_, Hot> {
        self.hot.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Recovered as `hot` is.
    fn prune(&self) -> MutexGuard<'_, UsagePrune> {
        self.prune.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

// ---------------------------------------------------------------------------------------------
// Hot state

/// Lease id -> deadline; `None` when `now + ttl` does not fit in an `Instant` (never expires).
type Leases = HashMap<String, Option<Instant>>;

#[derive(Default)]
struct Hot {
    /// Key id -> its in-flight leases.
    keys: HashMap<String, KeyLeases>,
    /// Limit counters and first uses: in memory, written to the file with each usage batch.
    limits: Limits,
    accounts: HashMap<String, AccountHot>,
    /// The last `AccountHot::pick_seq` handed out.
    pick_seq: u64,
    /// Session id -> (bound account id, when the binding expires).
    sessions: HashMap<String, (String, Instant)>,
    /// The size at which `sessions` is swept next (`SESSIONS_PRUNE_AT` at least).
    sessions_prune_at: usize,
}

/// A key's leases in flight: lease id -> its deadline (unix ms, the caller's clock) and holds.
type KeyLeases = HashMap<String, KeyLeaseHot>;

struct KeyLeaseHot {
    deadline: i64,
    /// (bucket, amount) held on the key's meters until the lease settles or expires.
    holds: Vec<(SmolStr, u64)>,
}

/// The limit counters of every key. `used` is durable (written with the next usage batch or
/// flush: a crash loses at most one flush interval of it, as it does usage); `held` lives and
/// dies with the leases, which a restart forgets anyway.
#[derive(Default)]
struct Limits {
    /// Key id -> bucket -> counter (nested, so that a lookup by `&str` allocates nothing).
    meters: HashMap<String, HashMap<SmolStr, MeterHot>>,
    /// Key id -> unix ms of its first use.
    first_use: HashMap<String, i64>,
    /// Counters and first uses changed since the last write (meters: key id -> buckets).
    dirty_meters: HashMap<String, HashSet<SmolStr>>,
    dirty_first_use: HashSet<String>,
    /// (account id, period) -> (spent, unix ms it expires at): `Store::add_spend`, written to
    /// the file as the meters are.
    spend: HashMap<SpendId, (u64, i64)>,
    dirty_spend: HashSet<SpendId>,
    /// Lease id -> unix ms it was swept: a lease that passed its deadline before it was settled
    /// gave its holds back then, and its late settle still adds its use (once). A settle of a
    /// lease neither held nor swept (given back already) is ignored, as in the Redis store.
    /// Nothing is remembered of the leases settled in time: that would be every request.
    swept: HashMap<String, i64>,
}

#[derive(Debug, Clone, Copy, Default, Serialize, serde::Deserialize)]
struct MeterHot {
    used: u64,
    #[serde(skip)]
    held: u64,
    expires_at: Option<i64>,
}

/// Swept leases are remembered this long for their late settle (the Redis store's `SWEPT_TTL`):
/// a request that outlives its lease (`relay.lease_ttl_secs`: its renewals failed, or it waited
/// longer than that for its answer to start) is still billed when it ends, up to a day later.
/// Swept leases are rare (a dead instance's, and such requests), so this costs little.
const SWEPT_MEMORY_MS: i64 = 24 * 60 * 60 * 1000;

impl Limits {
    fn meter(&self, key_id: &str, bucket: &str) -> Option<&MeterHot> {
        self.meters.get(key_id)?.get(bucket)
    }

    /// Changes the counter of (key, bucket), created when missing.
    fn change(&mut self, key_id: &str, bucket: &SmolStr, f: impl FnOnce(&mut MeterHot)) {
        if !self.meters.contains_key(key_id) {
            self.meters.insert(key_id.to_owned(), HashMap::default());
        }
        if let Some(of_key) = self.meters.get_mut(key_id) {
            f(of_key.entry(bucket.clone()).or_default());
        }
    }

    /// Notes that the counter of (key, bucket) must be written.
    fn mark_dirty(&mut self, key_id: &str, bucket: &SmolStr) {
        match self.dirty_meters.get_mut(key_id) {
            Some(buckets) => {
                if !buckets.contains(bucket) {
                    buckets.insert(bucket.clone());
                }
            }
            None => {
                let buckets = HashSet::from_iter([bucket.clone()]);
                self.dirty_meters.insert(key_id.to_owned(), buckets);
            }
        }
    }

    fn use_of(&self, key_id: &str, bucket: &str) -> MeterUse {
        self.meter(key_id, bucket)
            .map_or(MeterUse::default(), |m| MeterUse {
                used: m.used,
                held: m.held,
            })
    }

    /// Returns what `lease` held on each meter.
    fn unhold(&mut self, key_id: &str, holds: &[(SmolStr, u64)]) {
        let Some(of_key) = self.meters.get_mut(key_id) else {
            return;
        };
        for (bucket, amount) in holds {
            if let Some(m) = of_key.get_mut(bucket) {
                m.held = m.held.saturating_sub(*amount);
            }
        }
    }

    /// Drops the expired leases of a key, returning their holds.
    fn sweep(&mut self, key_id: &str, leases: &mut KeyLeases, now_ms: i64) {
        let expired: Vec<String> = leases
            .iter()
            .filter(|(_, l)| l.deadline <= now_ms)
            .map(|(id, _)| id.clone())
            .collect();
        for id in expired {
            if let Some(lease) = leases.remove(&id) {
                self.unhold(key_id, &lease.holds);
                self.swept.insert(id, now_ms);
            }
        }
    }

    /// Counters whose period ended are dropped from memory, and from the file at the next write;
    /// swept lease ids are forgotten after a while.
    fn prune(&mut self, now_ms: i64) {
        let mut stale = Vec::new();
        for (key_id, of_key) in &mut self.meters {
            of_key.retain(|bucket, m| {
                let over = m.held == 0 && m.expires_at.is_some_and(|e| e <= now_ms);
                if over {
                    stale.push((key_id.clone(), bucket.clone()));
                }
                !over
            });
        }
        for (key_id, bucket) in &stale {
            self.mark_dirty(key_id, bucket);
        }
        self.meters.retain(|_, of_key| !of_key.is_empty());
        let dirty = &mut self.dirty_spend;
        self.spend.retain(|id, (_, expires_at)| {
            let live = *expires_at > now_ms;
            if !live {
                dirty.insert(id.clone());
            }
            live
        });
        if !self.swept.is_empty() {
            self.swept
                .retain(|_, at| *at > now_ms.saturating_sub(SWEPT_MEMORY_MS));
        }
    }
}

/// The session bindings written at the last graceful stop, still live. They stay in the file
/// (a run that ends before its stop's flush, a CLI command that fails, loses none of them): the
/// next flush replaces them.
fn load_sessions(db: &Database) -> StoreResult<HashMap<String, (String, Instant)>> {
    let (now_ms, now) = (now_ms(), Instant::now());
    let txn = db.begin_read().map_err(db_err)?;
    let mut sessions = HashMap::default();
    for row in txn
        .open_table(SESSIONS)
        .map_err(db_err)?
        .iter()
        .map_err(db_err)?
    {
        let (session, binding) = row.map_err(db_err)?;
        let (account_id, expires_ms, left_then) = binding.value();
        let left = expires_ms.saturating_sub(now_ms).min(left_then);
        let left = Duration::from_millis(u64::try_from(left).unwrap_or(0));
        if let Some(expires) = now.checked_add(left).filter(|_| !left.is_zero()) {
            sessions.insert(session.value().to_owned(), (account_id.to_owned(), expires));
        }
    }
    Ok(sessions)
}

/// Writes the live session bindings in place of whatever the file held (sorted by session id:
/// a B-tree takes them fastest in order).
fn write_sessions(db: &Database, sessions: &[(String, String, i64, i64)]) -> StoreResult<()> {
    let txn = db.begin_write().map_err(db_err)?;
    {
        let mut table = txn.open_table(SESSIONS).map_err(db_err)?;
        table.retain(|_, _| false).map_err(db_err)?;
        for (session, account_id, expires_ms, left) in sessions {
            table
                .insert(session.as_str(), (account_id.as_str(), *expires_ms, *left))
                .map_err(db_err)?;
        }
    }
    txn.commit().map_err(db_err)
}

/// The limit counters and first uses in the file, of keys that exist (a counter write that
/// raced a key's deletion may have left a row of it behind).
fn load_limits(db: &Database, now_ms: i64) -> StoreResult<Limits> {
    let txn = db.begin_read().map_err(db_err)?;
    let keys = txn.open_table(KEYS).map_err(db_err)?;
    let exists = |key_id: &str| key_exists(&keys, key_id);
    let mut limits = Limits::default();
    for row in txn
        .open_table(METERS)
        .map_err(db_err)?
        .iter()
        .map_err(db_err)?
    {
        let (k, v) = row.map_err(db_err)?;
        let (key_id, bucket) = k.value();
        let meter: MeterHot = decode(v.value(), "meter")?;
        if meter.expires_at.is_none_or(|e| e > now_ms) && exists(key_id)? {
            limits
                .meters
                .entry(key_id.to_owned())
                .or_default()
                .insert(SmolStr::new(bucket), meter);
        }
    }
    for row in txn
        .open_table(FIRST_USE)
        .map_err(db_err)?
        .iter()
        .map_err(db_err)?
    {
        let (k, v) = row.map_err(db_err)?;
        if exists(k.value())? {
            limits.first_use.insert(k.value().to_owned(), v.value());
        }
    }
    let accounts = txn.open_table(ACCOUNTS).map_err(db_err)?;
    for row in txn
        .open_table(SPEND)
        .map_err(db_err)?
        .iter()
        .map_err(db_err)?
    {
        let (k, v) = row.map_err(db_err)?;
        let (account_id, bucket) = k.value();
        let (spent, expires_at) = v.value();
        if expires_at > now_ms && accounts.get(account_id).map_err(db_err)?.is_some() {
            let id = (account_id.to_owned(), SmolStr::new(bucket));
            limits.spend.insert(id, (spent, expires_at));
        }
    }
    Ok(limits)
}

/// What of `Limits` must reach the file: counters by value (absolute, so a write can be retried).
#[derive(Default)]
struct LimitsWrite {
    /// (key id, bucket) -> the encoded counter, or `None` to delete its row.
    meters: Vec<(MeterId, Option<Vec<u8>>)>,
    first_use: Vec<(String, i64)>,
    /// (account id, period) -> (spent, expires at), or `None` to delete its row.
    spend: Vec<(SpendId, Option<(u64, i64)>)>,
}

/// (key id, bucket).
type MeterId = (String, SmolStr);

/// (account id, period).
type SpendId = (String, SmolStr);

/// What a `LimitsWrite` covers, to mark dirty again when it failed.
type LimitsKeys = (Vec<MeterId>, Vec<String>, Vec<SpendId>);

impl LimitsWrite {
    fn keys(&self) -> LimitsKeys {
        (
            self.meters.iter().map(|(k, _)| k.clone()).collect(),
            self.first_use.iter().map(|(k, _)| k.clone()).collect(),
            self.spend.iter().map(|(k, _)| k.clone()).collect(),
        )
    }

    fn is_empty(&self) -> bool {
        self.meters.is_empty() && self.first_use.is_empty() && self.spend.is_empty()
    }

    /// Writes the counters, but none of a key deleted since they were taken (`delete_key` ran
    /// between `take_limits_write` and this transaction: write transactions run one at a time,
    /// so the check cannot race it).
    fn apply(&self, txn: &redb::WriteTransaction) -> StoreResult<()> {
        let keys = txn.open_table(KEYS).map_err(db_err)?;
        let exists = |key_id: &str| key_exists(&keys, key_id);
        let mut meters = txn.open_table(METERS).map_err(db_err)?;
        for ((key_id, bucket), value) in &self.meters {
            match value {
                Some(_) if !exists(key_id)? => {}
                Some(bytes) => {
                    meters
                        .insert((key_id.as_str(), bucket.as_str()), bytes.as_slice())
                        .map_err(db_err)?;
                }
                None => {
                    meters
                        .remove((key_id.as_str(), bucket.as_str()))
                        .map_err(db_err)?;
                }
            }
        }
        let mut first = txn.open_table(FIRST_USE).map_err(db_err)?;
        for (key_id, at) in &self.first_use {
            if exists(key_id)? {
                first.insert(key_id.as_str(), *at).map_err(db_err)?;
            }
        }
        // Likewise none of an account deleted since.
        let accounts = txn.open_table(ACCOUNTS).map_err(db_err)?;
        let mut spend = txn.open_table(SPEND).map_err(db_err)?;
        for ((account_id, bucket), value) in &self.spend {
            let row = (account_id.as_str(), bucket.as_str());
            match value {
                Some(_) if accounts.get(account_id.as_str()).map_err(db_err)?.is_none() => {}
                Some(value) => {
                    spend.insert(row, *value).map_err(db_err)?;
                }
                None => {
                    spend.remove(row).map_err(db_err)?;
                }
            }
        }
        Ok(())
    }
}

/// Expired session bindings are swept when the map reaches this size, or twice the number of
/// bindings left by the last sweep if more: with more live sessions than this, a sweep at a fixed
/// size would scan them all on every pick.
const SESSIONS_PRUNE_AT: usize = 10_000;

#[derive(Default)]
struct AccountHot {
    leases: Leases,
    last_used_at: i64,
    /// Orders picks exactly (0 = never picked). Timestamps cannot: picks within one millisecond
    /// would tie, and the caller's order would then pick the same account twice in a row while
    /// another waited longer.
    pick_seq: u64,
    /// In memory only: a restart forgets cooldowns and rate limits (they end on their own) and
    /// an unauthorized mark (the next request finds out again).
    health: Health,
}

/// The hot path's operations, each under one hold of the store's mutex (`admit_and_pick` and
/// `finish` run two of them under one).
impl Hot {
    fn admit(&mut self, admission: &Admission, lease: &Lease) -> Admit {
        let now = admission.now_ms;
        let key_id = admission.key_id.as_str();
        // Looked up by `&str` first: the owned id is made only for a key's first lease.
        let leases = match self.keys.get_mut(key_id) {
            Some(leases) => leases,
            None => self.keys.entry(key_id.to_owned()).or_default(),
        };
        // Swept even when unbounded, so that leases never settled do not pile up.
        self.limits.sweep(key_id, leases, now);
        let starts_clock = match admission.valid_after_first_use_ms {
            Some(valid) => match self.limits.first_use.get(key_id) {
                Some(&first) if first.saturating_add(valid) <= now => {
                    return Admit::Expired {
                        first_used_at: first,
                    };
                }
                Some(_) => false,
                None => true,
            },
            None => false,
        };
        // Re-admitting a lease already held renews it; it is not another request in flight.
        let renewing = leases.remove(&lease.id);
        if let Some(previous) = &renewing {
            self.limits.unhold(key_id, &previous.holds);
        }
        if let Some(limit) = admission.max_concurrency
            && renewing.is_none()
            && u32::try_from(leases.len()).unwrap_or(u32::MAX) >= limit
        {
            return Admit::ConcurrencyExceeded { limit };
        }
        for (i, meter) in admission.meters.iter().enumerate() {
            let usage = self.limits.use_of(key_id, &meter.bucket);
            if !meter.admits(usage) {
                return Admit::MeterFull { meter: i, usage };
            }
        }
        let mut holds = Vec::with_capacity(admission.meters.len());
        for meter in &admission.meters {
            self.limits.change(key_id, &meter.bucket, |counter| {
                counter.held = counter.held.saturating_add(meter.reserve);
                counter.expires_at = meter.expires_at;
            });
            holds.push((meter.bucket.clone(), meter.reserve));
        }
        // The clock starts with the first request admitted, not with one refused.
        if starts_clock {
            self.limits.first_use.insert(key_id.to_owned(), now);
            self.limits.dirty_first_use.insert(key_id.to_owned());
        }
        let ttl = i64::try_from(lease.ttl.as_millis()).unwrap_or(i64::MAX);
        leases.insert(
            lease.id.clone(),
            KeyLeaseHot {
                deadline: now.saturating_add(ttl),
                holds,
            },
        );
        Admit::Granted
    }

    fn pick_account(&mut self, req: &PickRequest<'_>, lease: &Lease) -> Picked {
        let now = Instant::now();
        let bound = req.session.and_then(|s| {
            self.sessions
                .get(s.id)
                .filter(|(_, expires)| *expires > now)
                .map(|(a, _)| a.clone())
        });
        let in_flight: Vec<u32> = req
            .candidates
            .iter()
            .map(|c| {
                self.accounts
                    .get_mut(&c.account_id)
                    .map_or(0, |a| live_count(&mut a.leases, now))
            })
            .collect();
        let clean = Health::default();
        let contenders: Vec<Contender<'_>> = req
            .candidates
            .iter()
            .zip(&in_flight)
            .map(|(c, &in_flight)| {
                let account = self.accounts.get(&c.account_id);
                Contender {
                    id: &c.account_id,
                    priority: c.priority,
                    max_concurrency: c.max_concurrency,
                    weight: c.weight,
                    serves: c.serves,
                    in_flight,
                    pick_seq: account.map_or(0, |a| a.pick_seq),
                    health: account.map_or(&clean, |a| &a.health),
                }
            })
            .collect();
        let session = req.session.map(|s| (bound.as_deref(), s.overflow()));
        let (id, sticky) = match policy::choose(&contenders, req.family, req.now_ms, session) {
            Choice::Take { id, sticky } => (id.to_owned(), sticky),
            Choice::Unavailable { retry_at } => return Picked::Unavailable { retry_at },
        };
        drop(contenders);
        self.pick_seq += 1;
        let pick_seq = self.pick_seq;
        let account = match self.accounts.get_mut(&id) {
            Some(account) => account,
            None => self.accounts.entry(id.clone()).or_default(),
        };
        account
            .leases
            .insert(lease.id.clone(), deadline(lease, now));
        account.pick_seq = pick_seq;
        // Informational only (the order comes from `pick_seq`), so it stays a true wall-clock time
        // rather than being pushed ahead to break ties; `max` keeps it from going back in time.
        account.last_used_at = now_ms().max(account.last_used_at);
        let degraded = !account.health.is_clean_for(req.family);
        if let Some(session) = req.session {
            match sticky {
                Sticky::Hit | Sticky::Bound | Sticky::Moved if session.write => {
                    self.bind(session.id, &id, session.ttl, now);
                }
                // An escape leaves the binding where it is, for when its account can serve
                // again; a session the pick may not write is only read.
                Sticky::Hit | Sticky::Bound | Sticky::Moved | Sticky::Escaped | Sticky::None => {}
            }
        }
        Picked::Account {
            id,
            sticky,
            degraded,
        }
    }

    /// Binds `session` to `account_id` until `now + ttl` (a zero TTL leaves it expired).
    fn bind(&mut self, session: &str, account_id: &str, ttl: Duration, now: Instant) {
        let expires = now.checked_add(ttl).unwrap_or(now);
        if self.sessions.len() >= self.sessions_prune_at.max(SESSIONS_PRUNE_AT) {
            self.sessions.retain(|_, (_, e)| *e > now);
            self.sessions_prune_at = self.sessions.len().saturating_mul(2);
        }
        match self.sessions.get_mut(session) {
            Some(binding) => {
                if binding.0 != account_id {
                    account_id.clone_into(&mut binding.0);
                }
                binding.1 = expires;
            }
            None => {
                self.sessions
                    .insert(session.to_owned(), (account_id.to_owned(), expires));
            }
        }
    }

    /// Forgets a deleted key's leases, counters and first use.
    fn forget_key(&mut self, key_id: &str) {
        self.keys.remove(key_id);
        let limits = &mut self.limits;
        limits.meters.remove(key_id);
        limits.first_use.remove(key_id);
        limits.dirty_meters.remove(key_id);
        limits.dirty_first_use.remove(key_id);
    }

    fn settle(&mut self, key_id: &str, lease: &Lease, used: &[(SmolStr, u64)]) {
        let mut held = false;
        if let Some(leases) = self.keys.get_mut(key_id)
            && let Some(taken) = leases.remove(&lease.id)
        {
            self.limits.unhold(key_id, &taken.holds);
            held = true;
        }
        // Neither held nor swept: given back before; its use was counted then.
        if !held && self.limits.swept.remove(&lease.id).is_none() {
            return;
        }
        // Only to counters that still exist: a swept lease settling after its period ended
        // (the counter pruned) would bring the counter back without an expiry, for good. Redis
        // skips a bucket no longer registered the same way.
        for (bucket, amount) in used {
            let Some(counter) = self
                .limits
                .meters
                .get_mut(key_id)
                .and_then(|of_key| of_key.get_mut(bucket))
            else {
                continue;
            };
            counter.used = counter.used.saturating_add(*amount);
            self.limits.mark_dirty(key_id, bucket);
        }
    }

    fn release(&mut self, key_id: &str, account_id: Option<&str>, lease: &Lease) {
        if account_id.is_none()
            && let Some(leases) = self.keys.get_mut(key_id)
            && let Some(taken) = leases.remove(&lease.id)
        {
            self.limits.unhold(key_id, &taken.holds);
        }
        if let Some(account) = account_id.and_then(|id| self.accounts.get_mut(id)) {
            // The entry stays: it carries `last_used_at`.
            account.leases.remove(&lease.id);
        }
    }
}

impl Hot {
    /// Extends the leases of a request in progress that are still held and live: the key's by
    /// the caller's clock (`now_ms`, as its admission), the account's by `Instant` (as its pick).
    /// An expired lease not swept yet is left to its sweep: renewing it would take back a slot
    /// and holds that a count or an admission may already have treated as free.
    fn renew(
        &mut self,
        key: Option<&KeyRenewal>,
        account: Option<&AccountRelease>,
        now_ms: i64,
    ) -> Renewed {
        let mut renewed = Renewed::default();
        if let Some(k) = key
            && let Some(held) = self
                .keys
                .get_mut(&k.key_id)
                .and_then(|leases| leases.get_mut(&k.lease.id))
            && held.deadline > now_ms
        {
            let ttl = i64::try_from(k.lease.ttl.as_millis()).unwrap_or(i64::MAX);
            held.deadline = held.deadline.max(now_ms.saturating_add(ttl));
            renewed.key = true;
        }
        if let Some(a) = account
            && let Some(held) = self
                .accounts
                .get_mut(&a.account_id)
                .and_then(|account| account.leases.get_mut(&a.lease.id))
        {
            let now = Instant::now();
            match *held {
                // Never expires: nothing to extend.
                None => renewed.account = true,
                Some(old) if old > now => {
                    *held = deadline(&a.lease, now).map(|new| new.max(old));
                    renewed.account = true;
                }
                Some(_) => {}
            }
        }
        renewed
    }
}

/// Drops expired leases and returns how many remain; expiry is checked only when someone counts.
fn live_count(leases: &mut Leases, now: Instant) -> u32 {
    leases.retain(|_, deadline| deadline.is_none_or(|d| d > now));
    u32::try_from(leases.len()).unwrap_or(u32::MAX)
}

fn deadline(lease: &Lease, now: Instant) -> Option<Instant> {
    now.checked_add(lease.ttl)
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

// ---------------------------------------------------------------------------------------------
// Encoding

fn db_err(e: impl Into<redb::Error>) -> StoreError {
    match e.into() {
        redb::Error::Corrupted(msg) => StoreError::Corrupt(msg),
        redb::Error::PreviousIo => StoreError::Unavailable(
            "a write to the data file failed earlier (a full disk?); nothing more is written \
             until switchyard restarts and reopens it"
                .into(),
        ),
        other => StoreError::Unavailable(other.to_string()),
    }
}

fn encode<T: Serialize>(value: &T) -> StoreResult<Vec<u8>> {
    serde_json::to_vec(value).map_err(encoding_err)
}

fn encoding_err(e: serde_json::Error) -> StoreError {
    StoreError::Unavailable(format!("encoding: {e}"))
}

fn decode<T: DeserializeOwned>(bytes: &[u8], what: &str) -> StoreResult<T> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}

/// Escapes the separator so that the encoding stays unambiguous whatever ids and model names
/// contain (`|` and `%` are the only characters given meaning).
fn escape(part: &str) -> String {
    part.replace('%', "%25").replace('|', "%7C")
}

/// The `USAGE` key of one counter, readable in a dump: `key:<id>|h:2026-11-22T08`,
/// `all|total`, `model:<name>|d:2026-11-22`, `account:<id>|m:2026-11`.
fn counter_key(dimension: &Dimension, bucket: &Bucket) -> String {
    let dimension = match dimension {
        Dimension::All => "all".to_owned(),
        Dimension::Key(id) => format!("key:{}", escape(id)),
        Dimension::Account(id) => format!("account:{}", escape(id)),
        Dimension::Model(name) => format!("model:{}", escape(name)),
    };
    format!("{dimension}|{}", bucket_key(bucket))
}

/// The part of a `counter_key` after the last `|` (the dimension's own are escaped).
fn bucket_key(bucket: &Bucket) -> String {
    match bucket {
        Bucket::Hour(h) => format!("h:{}", escape(h)),
        Bucket::Day(d) => format!("d:{}", escape(d)),
        Bucket::Month(m) => format!("m:{}", escape(m)),
        Bucket::Total => "total".to_owned(),
    }
}

/// Deletes the hour and day rows past their retention at `now_ms` among the first `max` usage
/// rows after `after`: a read finds them, a write (only when there are some) deletes them.
/// Returns how many it deleted and the last row it looked at (`None` when it reached the end).
fn prune_usage_rows(
    db: &Database,
    after: Option<&str>,
    now_ms: i64,
    max: usize,
) -> StoreResult<(usize, Option<String>)> {
    let before = |kept: std::time::Duration| {
        let kept = i64::try_from(kept.as_millis()).unwrap_or(i64::MAX);
        buckets_of(now_ms.saturating_sub(kept))
    };
    // Names sort as times: a row is expired when its bucket sorts before the one that holds the
    // instant its retention reaches back to (that bucket ended less than the retention ago).
    let [oldest_hour, ..] = before(HOUR_BUCKETS_KEPT);
    let [_, oldest_day, ..] = before(DAY_BUCKETS_KEPT);
    let (oldest_hour, oldest_day) = (bucket_key(&oldest_hour), bucket_key(&oldest_day));
    let mut expired = Vec::new();
    let (mut looked, mut last) = (0, None);
    {
        let txn = db.begin_read().map_err(db_err)?;
        let usage = txn.open_table(USAGE).map_err(db_err)?;
        let rows = match after {
            Some(after) => usage.range::<&str>((Bound::Excluded(after), Bound::Unbounded)),
            None => usage.range::<&str>(..),
        }
        .map_err(db_err)?;
        for row in rows.take(max) {
            let (key, _) = row.map_err(db_err)?;
            let key = key.value();
            let bucket = key.rsplit('|').next().unwrap_or_default();
            let oldest = match bucket.as_bytes().first() {
                Some(b'h') => oldest_hour.as_str(),
                Some(b'd') => oldest_day.as_str(),
                _ => "",
            };
            if bucket < oldest {
                expired.push(key.to_owned());
            }
            looked += 1;
            last = Some(key.to_owned());
        }
    }
    // Fewer rows than asked for: the pass reached the end of the table.
    if looked < max {
        last = None;
    }
    if !expired.is_empty() {
        let txn = db.begin_write().map_err(db_err)?;
        {
            let mut usage = txn.open_table(USAGE).map_err(db_err)?;
            for key in &expired {
                usage.remove(key.as_str()).map_err(db_err)?;
            }
        }
        txn.commit().map_err(db_err)?;
    }
    Ok((expired.len(), last))
}

/// Every record of a table of JSON values, oldest first by `(created_at, id)`.
fn all_records<T, F>(
    db: &Database,
    table: TableDefinition<&str, &[u8]>,
    order: F,
) -> StoreResult<Vec<T>>
where
    T: DeserializeOwned,
    F: Fn(&T) -> (i64, String),
{
    let txn = db.begin_read().map_err(db_err)?;
    let table = txn.open_table(table).map_err(db_err)?;
    let mut records = Vec::new();
    for row in table.iter().map_err(db_err)? {
        let (_, value) = row.map_err(db_err)?;
        records.push(decode::<T>(value.value(), "record")?);
    }
    records.sort_by_cached_key(order);
    Ok(records)
}

fn one_record<T: DeserializeOwned>(
    db: &Database,
    table: TableDefinition<&str, &[u8]>,
    id: &str,
) -> StoreResult<Option<T>> {
    let txn = db.begin_read().map_err(db_err)?;
    let table = txn.open_table(table).map_err(db_err)?;
    let value = table.get(id).map_err(db_err)?;
    value.map(|v| decode(v.value(), "record")).transpose()
}

/// Writes a key record and points its hash at it, dropping the index entry of a previous hash.
/// With `read`, an update: only over a stored record at that revision (else `false`, and no
/// write).
fn put_key(db: &Database, key: &KeyRecord, read: Option<u64>) -> StoreResult<bool> {
    let bytes = encode(key)?;
    let txn = db.begin_write().map_err(db_err)?;
    {
        let mut keys = txn.open_table(KEYS).map_err(db_err)?;
        let mut hashes = txn.open_table(KEY_HASHES).map_err(db_err)?;
        let previous = keys
            .get(key.id.as_str())
            .map_err(db_err)?
            .map(|v| decode::<KeyRecord>(v.value(), "key record"))
            .transpose()?;
        if let Some(read) = read
            && previous.as_ref().is_none_or(|p| p.revision != read)
        {
            return Ok(false);
        }
        if let Some(previous) = previous.filter(|p| p.hash != key.hash) {
            remove_hash_if_points_at(&mut hashes, &previous.hash, &key.id)?;
        }
        keys.insert(key.id.as_str(), bytes.as_slice())
            .map_err(db_err)?;
        hashes
            .insert(key.hash.as_str(), key.id.as_str())
            .map_err(db_err)?;
    }
    txn.commit().map_err(db_err)?;
    Ok(true)
}

/// Whether the key has a record: its limit counters are loaded and written only then.
fn key_exists(
    keys: &impl ReadableTable<&'static str, &'static [u8]>,
    key_id: &str,
) -> StoreResult<bool> {
    Ok(keys.get(key_id).map_err(db_err)?.is_some())
}

/// Deletes a key's limit counters and first use from the file.
fn forget_key_limits(txn: &redb::WriteTransaction, key_id: &str) -> StoreResult<()> {
    forget_rows_of(txn, METERS, key_id)?;
    txn.open_table(FIRST_USE)
        .map_err(db_err)?
        .remove(key_id)
        .map_err(db_err)?;
    Ok(())
}

/// Deletes an account's spend counters from the file.
fn forget_spend(txn: &redb::WriteTransaction, account_id: &str) -> StoreResult<()> {
    forget_rows_of(txn, SPEND, account_id)
}

/// Deletes the rows of `table` keyed (`owner`, anything).
fn forget_rows_of<V: redb::Value + 'static>(
    txn: &redb::WriteTransaction,
    table: TableDefinition<(&str, &str), V>,
    owner: &str,
) -> StoreResult<()> {
    let mut table = txn.open_table(table).map_err(db_err)?;
    let mut rows = Vec::new();
    // Rows are ordered by (owner, …): the owner's are those from (owner, "") on.
    for row in table.range((owner, "")..).map_err(db_err)? {
        let (k, _) = row.map_err(db_err)?;
        let (of, rest) = k.value();
        if of != owner {
            break;
        }
        rows.push(rest.to_owned());
    }
    for rest in &rows {
        table.remove((owner, rest.as_str())).map_err(db_err)?;
    }
    Ok(())
}

/// Another key may have taken the hash since (it should not, secrets are unique), and its index
/// entry must not be lost then.
fn remove_hash_if_points_at(
    hashes: &mut redb::Table<'_, &str, &str>,
    hash: &str,
    id: &str,
) -> StoreResult<()> {
    let points_here = hashes
        .get(hash)
        .map_err(db_err)?
        .is_some_and(|v| v.value() == id);
    if points_here {
        hashes.remove(hash).map_err(db_err)?;
    }
    Ok(())
}

/// Writes an account record; with `read`, only over a stored record at that revision
/// (`Store::update_account_checked`).
fn put_account(db: &Database, account: &AccountRecord, read: Option<u64>) -> StoreResult<bool> {
    let bytes = encode(account)?;
    let txn = db.begin_write().map_err(db_err)?;
    {
        let mut accounts = txn.open_table(ACCOUNTS).map_err(db_err)?;
        if let Some(read) = read {
            let Some(current) = accounts.get(account.id.as_str()).map_err(db_err)? else {
                return Ok(false);
            };
            if decode::<AccountRecord>(current.value(), "account record")?.revision != read {
                return Ok(false);
            }
        }
        accounts
            .insert(account.id.as_str(), bytes.as_slice())
            .map_err(db_err)?;
    }
    txn.commit().map_err(db_err)?;
    Ok(true)
}

// ---------------------------------------------------------------------------------------------

#[async_trait]
impl Store for EmbeddedStore {
    fn is_local(&self) -> bool {
        true
    }

    async fn ping(&self) -> StoreResult<()> {
        // A read transaction surfaces a closed database; only a write transaction checks for an
        // earlier failed write (disk full), after which redb takes no more writes until the file
        // is reopened: then `/health` says so. Begun and aborted, it writes nothing; one that
        // would wait for a commit in progress means the writes still go through.
        self.blocking(|db| {
            db.begin_read().map(drop).map_err(db_err)?;
            match db.try_begin_write() {
                Ok(txn) => txn.abort().map_err(db_err),
                Err(redb::TransactionError::WouldBlock) => Ok(()),
                Err(e) => Err(db_err(e)),
            }
        })
        .await
    }

    async fn insert_key(&self, key: &KeyRecord) -> StoreResult<()> {
        let key = key.clone();
        self.blocking(move |db| put_key(db, &key, None).map(drop))
            .await
    }

    async fn key(&self, id: &str) -> StoreResult<Option<KeyRecord>> {
        let id = id.to_owned();
        self.blocking(move |db| one_record(db, KEYS, &id)).await
    }

    async fn key_by_hash(&self, hash: &str) -> StoreResult<Option<KeyRecord>> {
        let hash = hash.to_owned();
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(db_err)?;
            let hashes = txn.open_table(KEY_HASHES).map_err(db_err)?;
            let Some(id) = hashes.get(hash.as_str()).map_err(db_err)? else {
                return Ok(None);
            };
            let keys = txn.open_table(KEYS).map_err(db_err)?;
            let value = keys.get(id.value()).map_err(db_err)?;
            value.map(|v| decode(v.value(), "key record")).transpose()
        })
        .await
    }

    async fn keys(&self) -> StoreResult<Vec<KeyRecord>> {
        self.blocking(|db| all_records(db, KEYS, |k: &KeyRecord| (k.created_at, k.id.clone())))
            .await
    }

    async fn update_key(&self, key: &KeyRecord) -> StoreResult<bool> {
        let read = key.revision;
        let mut next = key.clone();
        next.revision = read + 1;
        self.blocking(move |db| put_key(db, &next, Some(read)))
            .await
    }

    async fn delete_key(&self, id: &str) -> StoreResult<bool> {
        let owned = id.to_owned();
        let deleted = self
            .blocking(move |db| {
                let id = owned;
                let txn = db.begin_write().map_err(db_err)?;
                {
                    let mut keys = txn.open_table(KEYS).map_err(db_err)?;
                    let removed = keys
                        .remove(id.as_str())
                        .map_err(db_err)?
                        .map(|v| decode::<KeyRecord>(v.value(), "key record"))
                        .transpose()?;
                    let Some(removed) = removed else {
                        return Ok(false);
                    };
                    let mut hashes = txn.open_table(KEY_HASHES).map_err(db_err)?;
                    remove_hash_if_points_at(&mut hashes, &removed.hash, &id)?;
                    forget_key_limits(&txn, &id)?;
                }
                txn.commit().map_err(db_err)?;
                Ok(true)
            })
            .await?;
        // Its counters, first use and leases in memory too, even when the record was gone
        // already (as the Redis store's `key_forget.lua`): the leases still in flight then
        // settle into nothing.
        self.hot().forget_key(id);
        Ok(deleted)
    }

    async fn insert_account(&self, account: &AccountRecord) -> StoreResult<()> {
        let account = account.clone();
        self.blocking(move |db| put_account(db, &account, None).map(drop))
            .await
    }

    async fn account(&self, id: &str) -> StoreResult<Option<AccountRecord>> {
        let id = id.to_owned();
        self.blocking(move |db| one_record(db, ACCOUNTS, &id)).await
    }

    async fn accounts(&self) -> StoreResult<Vec<AccountRecord>> {
        self.blocking(|db| {
            all_records(db, ACCOUNTS, |a: &AccountRecord| {
                (a.created_at, a.id.clone())
            })
        })
        .await
    }

    async fn update_account_checked(&self, account: &AccountRecord) -> StoreResult<bool> {
        let read = account.revision;
        let mut next = account.clone();
        next.revision = read + 1;
        self.blocking(move |db| put_account(db, &next, Some(read)))
            .await
    }

    async fn delete_account(&self, id: &str) -> StoreResult<bool> {
        let owned = id.to_owned();
        let removed = self
            .blocking(move |db| {
                let txn = db.begin_write().map_err(db_err)?;
                let removed = {
                    let mut accounts = txn.open_table(ACCOUNTS).map_err(db_err)?;
                    accounts.remove(owned.as_str()).map_err(db_err)?.is_some()
                };
                forget_spend(&txn, &owned)?;
                txn.commit().map_err(db_err)?;
                Ok(removed)
            })
            .await?;
        // Cleared even when the record was already gone: runtime state without a record is junk.
        let mut hot = self.hot();
        hot.accounts.remove(id);
        hot.limits.spend.retain(|(of, _), _| of != id);
        hot.limits.dirty_spend.retain(|(of, _)| of != id);
        Ok(removed)
    }

    async fn account_runtime(&self, id: &str) -> StoreResult<AccountRuntime> {
        let mut hot = self.hot();
        Ok(match hot.accounts.get_mut(id) {
            Some(account) => AccountRuntime {
                in_flight: live_count(&mut account.leases, Instant::now()),
                last_used_at: account.last_used_at,
                health: account.health.clone(),
            },
            None => AccountRuntime::default(),
        })
    }

    async fn admit(&self, admission: &Admission, lease: &Lease) -> StoreResult<Admit> {
        Ok(self.hot().admit(admission, lease))
    }

    async fn pick_account(&self, request: &PickRequest<'_>, lease: &Lease) -> StoreResult<Picked> {
        Ok(self.hot().pick_account(request, lease))
    }

    /// The trait's sequence, under one hold of the mutex and without a future per step.
    async fn admit_and_pick(
        &self,
        admission: &Admission,
        key_lease: &Lease,
        request: &PickRequest<'_>,
        account_lease: &Lease,
    ) -> StoreResult<Taken> {
        let mut hot = self.hot();
        let clock_running = hot.limits.first_use.contains_key(&admission.key_id);
        let admit = hot.admit(admission, key_lease);
        if admit != Admit::Granted {
            return Ok(Taken::Refused(admit));
        }
        let picked = hot.pick_account(request, account_lease);
        if !matches!(picked, Picked::Account { .. }) {
            hot.settle(&admission.key_id, key_lease, &[]);
            // Nothing stays taken, the start of the key's clock neither (its dirty mark is
            // harmless: a write skips a key without a first use).
            if !clock_running {
                hot.limits.first_use.remove(&admission.key_id);
            }
        }
        Ok(Taken::Picked(picked))
    }

    async fn settle(
        &self,
        key_id: &str,
        lease: &Lease,
        used: &[(SmolStr, u64)],
    ) -> StoreResult<()> {
        self.hot().settle(key_id, lease, used);
        Ok(())
    }

    async fn release(
        &self,
        key_id: &str,
        account_id: Option<&str>,
        lease: &Lease,
    ) -> StoreResult<()> {
        self.hot().release(key_id, account_id, lease);
        Ok(())
    }

    /// The trait's sequence, under one hold of the mutex and without a future per step.
    async fn finish(
        &self,
        key: Option<&KeySettle>,
        account: Option<&AccountRelease>,
        bind: Option<&Binding>,
    ) -> StoreResult<()> {
        let mut hot = self.hot();
        if let Some(a) = account {
            hot.release(&a.key_id, Some(&a.account_id), &a.lease);
            if let Some(bind) = bind {
                hot.bind(&bind.session, &a.account_id, bind.ttl, Instant::now());
            }
        }
        if let Some(k) = key {
            hot.settle(&k.key_id, &k.lease, &k.used);
        }
        Ok(())
    }

    async fn renew(
        &self,
        key: Option<&KeyRenewal>,
        account: Option<&AccountRelease>,
        now_ms: i64,
    ) -> StoreResult<Renewed> {
        Ok(self.hot().renew(key, account, now_ms))
    }

    async fn key_state(&self, key_id: &str, buckets: &[SmolStr]) -> StoreResult<KeyState> {
        let now = now_ms();
        let mut guard = self.hot();
        let hot = &mut *guard;
        let in_flight = match hot.keys.get_mut(key_id) {
            Some(leases) => {
                hot.limits.sweep(key_id, leases, now);
                u32::try_from(leases.len()).unwrap_or(u32::MAX)
            }
            None => 0,
        };
        Ok(KeyState {
            in_flight,
            meters: buckets
                .iter()
                .map(|b| hot.limits.use_of(key_id, b))
                .collect(),
            first_used_at: hot.limits.first_use.get(key_id).copied(),
        })
    }

    async fn report_health(
        &self,
        account_id: &str,
        report: &Report,
        now_ms: i64,
    ) -> StoreResult<HealthChange> {
        let mut hot = self.hot();
        let health = &mut hot
            .accounts
            .entry(account_id.to_owned())
            .or_default()
            .health;
        let before = health.clone();
        health.apply(report, now_ms);
        Ok(HealthChange {
            before,
            after: health.clone(),
        })
    }

    async fn reset_health(&self, account_id: &str) -> StoreResult<()> {
        if let Some(account) = self.hot().accounts.get_mut(account_id) {
            account.health.apply(&Report::Cleared, now_ms());
        }
        Ok(())
    }

    async fn add_spend(
        &self,
        owner: &str,
        buckets: &[SpendBucket],
        amount: u64,
        _charge: &str,
    ) -> StoreResult<Vec<u64>> {
        // Nothing here is sent twice: the charge needs no checking.
        let now = now_ms();
        let mut hot = self.hot();
        let limits = &mut hot.limits;
        let mut totals = Vec::with_capacity(buckets.len());
        for bucket in buckets {
            let id = (owner.to_owned(), bucket.name.clone());
            let counter = limits.spend.entry(id.clone()).or_insert((0, 0));
            if counter.1 <= now {
                // Expired and not yet pruned: a period that came round again starts at 0.
                counter.0 = 0;
            }
            counter.0 = counter.0.saturating_add(amount);
            counter.1 = bucket.expires_at;
            totals.push(counter.0);
            limits.dirty_spend.insert(id);
        }
        Ok(totals)
    }

    async fn raise_spend(
        &self,
        owner: &str,
        bucket: &SpendBucket,
        at_least: u64,
    ) -> StoreResult<u64> {
        let now = now_ms();
        let mut hot = self.hot();
        let limits = &mut hot.limits;
        let id = (owner.to_owned(), bucket.name.clone());
        let counter = limits.spend.entry(id.clone()).or_insert((0, 0));
        if counter.1 <= now {
            counter.0 = 0;
        }
        counter.0 = counter.0.max(at_least);
        counter.1 = bucket.expires_at;
        let total = counter.0;
        limits.dirty_spend.insert(id);
        Ok(total)
    }

    async fn spend(&self, owner: &str, buckets: &[SmolStr]) -> StoreResult<Vec<u64>> {
        let now = now_ms();
        let hot = self.hot();
        Ok(buckets
            .iter()
            .map(|bucket| {
                hot.limits
                    .spend
                    .get(&(owner.to_owned(), bucket.clone()))
                    .filter(|(_, expires_at)| *expires_at > now)
                    .map_or(0, |(spent, _)| *spent)
            })
            .collect())
    }

    async fn record_usage(&self, batch: &UsageBatch) -> StoreResult<()> {
        let limits = self.take_limits_write()?;
        if batch.is_empty() && limits.is_empty() {
            return Ok(());
        }
        let keys = limits.keys();
        let result = self.write_usage(batch, limits).await;
        if result.is_err() {
            self.restore_limits_write(keys);
        }
        result
    }

    async fn usage(&self, query: &UsageQuery) -> StoreResult<Vec<Counters>> {
        let keys: Vec<String> = query
            .buckets
            .iter()
            .map(|bucket| counter_key(&query.dimension, bucket))
            .collect();
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(db_err)?;
            let usage = txn.open_table(USAGE).map_err(db_err)?;
            keys.iter()
                .map(|key| match usage.get(key.as_str()).map_err(db_err)? {
                    Some(v) => decode(v.value(), "counters"),
                    None => Ok(Counters::default()),
                })
                .collect()
        })
        .await
    }

    async fn prune_usage(&self, now_ms: i64) -> StoreResult<usize> {
        let after = {
            let prune = self.prune();
            if prune.after.is_none() && now_ms < prune.next_pass_ms {
                return Ok(0);
            }
            prune.after.clone()
        };
        let (deleted, last) = self
            .blocking(move |db| prune_usage_rows(db, after.as_deref(), now_ms, PRUNE_ROWS))
            .await?;
        let mut prune = self.prune();
        if last.is_none() {
            prune.next_pass_ms = now_ms.saturating_add(PRUNE_PASS_EVERY_MS);
        }
        prune.after = last;
        Ok(deleted)
    }

    async fn recent_requests(
        &self,
        filter: &RequestFilter<'_>,
        limit: usize,
    ) -> StoreResult<Vec<RequestLogEntry>> {
        let key_id = filter.key_id.map(str::to_owned);
        let account_id = filter.account_id.map(str::to_owned);
        self.blocking(move |db| {
            let filter = RequestFilter {
                key_id: key_id.as_deref(),
                account_id: account_id.as_deref(),
            };
            let txn = db.begin_read().map_err(db_err)?;
            let log = txn.open_table(REQUEST_LOG).map_err(db_err)?;
            let mut out = Vec::new();
            // A filtered read scans the whole log; it is bounded by `request_log_max` and only
            // the admin path asks, so a per-key or per-account index would cost every write for
            // little.
            for row in log.iter().map_err(db_err)?.rev() {
                if out.len() >= limit {
                    break;
                }
                let (_, value) = row.map_err(db_err)?;
                let entry: RequestLogEntry = decode(value.value(), "request log entry")?;
                if filter.admits(&entry) {
                    out.push(entry);
                }
            }
            Ok(out)
        })
        .await
    }

    async fn flush(&self) -> StoreResult<()> {
        // Every write above commits with immediate durability before it returns; what is left is
        // the limit counters changed since the last usage batch, and the session bindings (a
        // crash loses those made since the last flush: one write per pick would cost every
        // request a commit). Leases and health are deliberately not kept: a restart ends every
        // request.
        self.record_usage(&UsageBatch::default()).await?;
        let (now_ms, now) = (now_ms(), Instant::now());
        let mut live: Vec<(String, String, i64, i64)> = {
            let hot = self.hot();
            if hot.sessions.is_empty() && !self.sessions_in_file.load(Ordering::Relaxed) {
                return Ok(());
            }
            hot.sessions
                .iter()
                .filter(|(_, (_, expires))| *expires > now)
                .map(|(session, (account_id, expires))| {
                    let left =
                        i64::try_from(expires.duration_since(now).as_millis()).unwrap_or(i64::MAX);
                    let at = now_ms.saturating_add(left);
                    (session.clone(), account_id.clone(), at, left)
                })
                .collect()
        };
        if live.len() > SESSIONS_KEPT {
            live.sort_unstable_by_key(|(_, _, _, left)| std::cmp::Reverse(*left));
            live.truncate(SESSIONS_KEPT);
        }
        live.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        self.sessions_in_file
            .store(!live.is_empty(), Ordering::Relaxed);
        self.blocking(move |db| write_sessions(db, &live)).await
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::store::{Admission, Meter};

    /// With more live sessions than `SESSIONS_PRUNE_AT`, a pick does not scan them all each time,
    /// and expired bindings are still swept.
    #[test]
    fn live_sessions_are_not_scanned_on_every_pick() {
        use crate::store::{Candidate, SessionPick};
        let mut hot = Hot::default();
        let candidates = [Candidate {
            account_id: "a".to_owned(),
            priority: 0,
            max_concurrency: None,
            weight: 1,
            serves: true,
        }];
        let pick = |hot: &mut Hot, id: &str, ttl: Duration| {
            let request = PickRequest {
                candidates: &candidates,
                family: None,
                session: Some(SessionPick {
                    id,
                    ttl,
                    move_on_overflow: true,
                    write: true,
                }),
                now_ms: now_ms(),
            };
            let lease = Lease {
                id: format!("l-{id}"),
                ttl: Duration::from_secs(60),
            };
            assert!(matches!(
                hot.pick_account(&request, &lease),
                Picked::Account { .. }
            ));
        };
        for i in 0..100 {
            pick(&mut hot, &format!("gone{i}"), Duration::ZERO);
        }
        for i in 0..SESSIONS_PRUNE_AT {
            pick(&mut hot, &format!("s{i}"), Duration::from_secs(3600));
        }
        // The sweep at the limit dropped the expired bindings and moved the next sweep on.
        assert_eq!(hot.sessions.len(), SESSIONS_PRUNE_AT);
        assert_eq!(hot.sessions_prune_at, 2 * (SESSIONS_PRUNE_AT - 100));
        let at = hot.sessions_prune_at;
        for i in 0..100 {
            pick(&mut hot, &format!("t{i}"), Duration::from_secs(3600));
        }
        assert_eq!(
            hot.sessions_prune_at, at,
            "swept again before the next limit"
        );
    }

    /// A stream that outlives its lease is billed when it ends, long after the sweep; a counter
    /// whose period ended meanwhile is not brought back.
    #[test]
    fn a_late_settle_counts_once_on_the_counters_still_running() {
        let mut hot = Hot::default();
        let t = now_ms();
        let admission = |now: i64| Admission {
            key_id: "k".to_owned(),
            max_concurrency: None,
            meters: vec![
                Meter {
                    bucket: SmolStr::new_static("total"),
                    limit: 1_000,
                    reserve: 10,
                    expires_at: None,
                },
                Meter {
                    bucket: SmolStr::new_static("day:x"),
                    limit: 1_000,
                    reserve: 10,
                    expires_at: Some(t + 60_000),
                },
            ],
            valid_after_first_use_ms: None,
            now_ms: now,
        };
        let lease = |id: &str| Lease {
            id: id.to_owned(),
            ttl: Duration::from_secs(1),
        };
        assert_eq!(hot.admit(&admission(t), &lease("long")), Admit::Granted);
        // Swept by the next admission after its deadline; the day's counter ends; an hour later
        // another admission prunes it.
        hot.admit(&admission(t + 2_000), &lease("b"));
        hot.settle("k", &lease("b"), &[]);
        hot.limits.prune(t + 3_600_000);
        assert!(hot.limits.meter("k", "day:x").is_none());
        let used = [
            (SmolStr::new_static("total"), 7),
            (SmolStr::new_static("day:x"), 7),
        ];
        hot.settle("k", &lease("long"), &used);
        hot.settle("k", &lease("long"), &used);
        assert_eq!(hot.limits.use_of("k", "total").used, 7);
        assert!(hot.limits.meter("k", "day:x").is_none());
    }

    /// An account's spend counters are deleted with it, from memory and from the file.
    #[tokio::test]
    async fn a_deleted_accounts_spend_goes_with_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path(), 100).unwrap();
        let record: AccountRecord = serde_json::from_value(serde_json::json!({
            "id": "a1", "name": "a", "provider": "anthropic", "base_url": "https://x",
            "sealed_api_key": "s", "priority": 0, "schedulable": true, "enabled": true,
            "models": [], "max_concurrency": null, "created_at": 0
        }))
        .unwrap();
        store.insert_account(&record).await.unwrap();
        let day = [SpendBucket {
            name: SmolStr::new_static("day:1"),
            expires_at: now_ms() + 60_000,
        }];
        let names = [day[0].name.clone()];
        store.add_spend("a1", &day, 9, "r1").await.unwrap();
        store.flush().await.unwrap();
        assert_eq!(store.spend("a1", &names).await.unwrap(), [9]);
        assert!(store.delete_account("a1").await.unwrap());
        assert_eq!(store.spend("a1", &names).await.unwrap(), [0]);
        drop(store);
        let store = EmbeddedStore::open(dir.path(), 100).unwrap();
        assert_eq!(
            store.spend("a1", &names).await.unwrap(),
            [0],
            "not in the file either"
        );
        // An addition racing the deletion is not written either.
        store.add_spend("a1", &day, 4, "r2").await.unwrap();
        store.flush().await.unwrap();
        drop(store);
        let store = EmbeddedStore::open(dir.path(), 100).unwrap();
        assert_eq!(store.spend("a1", &names).await.unwrap(), [0]);
    }

    /// A healthy file pings without writing anything, and redb's latched I/O failure reads as
    /// what it is (that `try_begin_write` reports it is redb's behaviour, not simulated here).
    #[tokio::test]
    async fn ping_writes_nothing_and_a_failed_write_says_restart() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path(), 100).unwrap();
        let before = std::fs::metadata(dir.path().join(FILE_NAME)).unwrap().len();
        store.ping().await.unwrap();
        store.ping().await.unwrap();
        assert_eq!(
            std::fs::metadata(dir.path().join(FILE_NAME)).unwrap().len(),
            before
        );
        let err = db_err(redb::Error::PreviousIo);
        assert!(
            matches!(&err, StoreError::Unavailable(m) if m.contains("restarts")),
            "{err}"
        );
    }

    /// Hour buckets go 35 days after their hour ends and day buckets 400 days after their day
    /// (as on Redis); month and total buckets stay. One call looks at a bounded number of rows,
    /// and a pass that reached the end starts again an hour later.
    #[tokio::test]
    async fn usage_prune_deletes_hours_and_days_past_their_retention() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path(), 100).unwrap();
        let now = "2026-06-15T12:30:00Z"
            .parse::<jiff::Timestamp>()
            .unwrap()
            .as_millisecond();
        let counters = Counters {
            requests: 1,
            ..Counters::default()
        };
        // 35 days before `now` is 2026-05-11T12:30, 400 days before 2025-05-11T12:30.
        let buckets = [
            Bucket::Hour("2026-05-11T11".to_owned()),
            Bucket::Hour("2026-05-11T12".to_owned()),
            Bucket::Day("2025-05-10".to_owned()),
            Bucket::Day("2025-05-11".to_owned()),
            Bucket::Month("2001-01".to_owned()),
            Bucket::Total,
        ];
        // A `|` in an id is escaped: the bucket is still what follows the last one.
        let dimensions = [Dimension::All, Dimension::Key("k|1".to_owned())];
        let batch = UsageBatch {
            id: 1,
            counters: dimensions
                .iter()
                .flat_map(|d| buckets.iter().map(|b| ((d.clone(), b.clone()), counters)))
                .collect(),
            requests: vec![],
        };
        store.record_usage(&batch).await.unwrap();
        let read = |dimension: &Dimension| {
            let query = UsageQuery {
                dimension: dimension.clone(),
                buckets: buckets.to_vec(),
            };
            let store = &store;
            async move {
                let counts = store.usage(&query).await.unwrap();
                counts.iter().map(|c| c.requests).collect::<Vec<_>>()
            }
        };

        // Five rows a call (of twelve): the pass goes on where the last call stopped.
        let (mut after, mut deleted, mut calls) = (None, 0, 0);
        loop {
            let (n, last) = prune_usage_rows(&store.db, after.as_deref(), now, 5).unwrap();
            (deleted, calls) = (deleted + n, calls + 1);
            after = last;
            if after.is_none() {
                break;
            }
        }
        assert_eq!((deleted, calls), (4, 3));
        for dimension in &dimensions {
            assert_eq!(read(dimension).await, [0, 1, 0, 1, 1, 1]);
        }

        // Kept until exactly their retention after their end.
        let hour_end = "2026-05-11T13:00:00Z"
            .parse::<jiff::Timestamp>()
            .unwrap()
            .as_millisecond();
        let kept_for = i64::try_from(HOUR_BUCKETS_KEPT.as_millis()).unwrap();
        let (n, _) = prune_usage_rows(&store.db, None, hour_end + kept_for - 1, 100).unwrap();
        assert_eq!(n, 0);
        let (n, _) = prune_usage_rows(&store.db, None, hour_end + kept_for, 100).unwrap();
        assert_eq!(n, 2);

        // Through the store: a whole pass, then none for an hour.
        store.record_usage(&batch).await.unwrap();
        assert_eq!(store.prune_usage(now).await.unwrap(), 4);
        store.record_usage(&batch).await.unwrap();
        assert_eq!(store.prune_usage(now + 60_000).await.unwrap(), 0);
        // An hour later the hour that ended at 13:00 35 days ago has gone too.
        assert_eq!(
            store.prune_usage(now + PRUNE_PASS_EVERY_MS).await.unwrap(),
            6
        );
        assert_eq!(read(&Dimension::All).await, [0, 0, 0, 3, 3, 3]);
    }

    /// Settling in time leaves nothing behind: memory does not grow with the requests served.
    #[tokio::test]
    async fn settled_leases_leave_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path(), 100).unwrap();
        let now = now_ms();
        let admission = Admission {
            key_id: "k".to_owned(),
            max_concurrency: Some(10),
            meters: vec![Meter {
                bucket: SmolStr::new_static("day:x"),
                limit: 1_000_000,
                reserve: 5,
                expires_at: Some(now + 3_600_000),
            }],
            valid_after_first_use_ms: None,
            now_ms: now,
        };
        for i in 0..1_000 {
            let lease = Lease {
                id: format!("l{i}"),
                ttl: Duration::from_secs(60),
            };
            assert_eq!(
                store.admit(&admission, &lease).await.unwrap(),
                Admit::Granted
            );
            let used = [(SmolStr::new_static("day:x"), 2)];
            store.settle("k", &lease, &used).await.unwrap();
            // A second settle (a retried give-back) counts nothing.
            store.settle("k", &lease, &used).await.unwrap();
        }
        {
            let hot = store.hot();
            // The key's lease map stays, empty, for its next admission...
            assert!(hot.keys.values().all(|leases| leases.is_empty()));
            assert!(hot.limits.swept.is_empty());
            let meter = hot.limits.meter("k", "day:x").unwrap();
            assert_eq!((meter.used, meter.held), (2_000, 0));
        }
        // ...until the next write of the counters drops it.
        let write = store.take_limits_write().unwrap();
        assert_eq!(write.meters.len(), 1);
        assert!(store.hot().keys.is_empty());
    }

    /// A counter write taken before a key's deletion and committed after it brings none of the
    /// key's rows back.
    #[tokio::test]
    async fn a_counter_write_racing_a_deletion_leaves_no_rows() {
        use crate::store::KeyRecord;
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path(), 100).unwrap();
        let key = KeyRecord {
            id: "k".into(),
            name: "k".into(),
            hash: "h".into(),
            prefix: "sy-".into(),
            enabled: true,
            created_at: 0,
            binding: None,
            limits: Default::default(),
            revision: 0,
        };
        store.insert_key(&key).await.unwrap();
        let now = now_ms();
        let admission = Admission {
            key_id: "k".to_owned(),
            max_concurrency: None,
            meters: vec![Meter {
                bucket: SmolStr::new_static("day:x"),
                limit: 100,
                reserve: 5,
                expires_at: Some(now + 3_600_000),
            }],
            valid_after_first_use_ms: Some(3_600_000),
            now_ms: now,
        };
        let lease = Lease {
            id: "l".into(),
            ttl: Duration::from_secs(60),
        };
        assert_eq!(
            store.admit(&admission, &lease).await.unwrap(),
            Admit::Granted
        );
        let used = [(SmolStr::new_static("day:x"), 3)];
        store.settle("k", &lease, &used).await.unwrap();
        let taken = store.take_limits_write().unwrap();
        assert_eq!((taken.meters.len(), taken.first_use.len()), (1, 1));
        assert!(store.delete_key("k").await.unwrap());
        let batch = UsageBatch {
            id: 1,
            counters: Default::default(),
            requests: Vec::new(),
        };
        store.write_usage(&batch, taken).await.unwrap();
        let txn = store.db.begin_read().unwrap();
        assert_eq!(txn.open_table(METERS).unwrap().len().unwrap(), 0);
        assert_eq!(txn.open_table(FIRST_USE).unwrap().len().unwrap(), 0);
    }
}
