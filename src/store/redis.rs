//! The Redis store (fred): many Switchyard instances sharing one Redis or Redis Cluster.
//!
//! Every operation is one command, one Lua script or one pipeline. The hot path is two scripts a
//! request: `take.lua` before the upstream call (the key's admission and the account's pick, one
//! `EVALSHA`) and `give.lua` after it (both leases back, one `EVALSHA`). Everything they touch
//! lives under the `{live}` tag, mostly in one hash, so each reads with one `HMGET` and writes
//! with one `HSET` (about ten Redis commands a request, those inside the scripts included).
//! Scripts keep multi-step changes atomic; all keys of one script share one hash tag, so the same
//! code runs on a cluster. The key layout, with each key's type, TTL, writer and reader, is in
//! docs/redis-keys.md; the names are built in `names.rs` only.
//!
//! Scheduling: `take.lua` is `scheduler::policy::choose` in Lua (health, caps, the session's
//! binding, priority, relative load, pick order), so that the choice and the lease it takes are
//! one atomic step across instances; the conformance suite holds it to the embedded store, which
//! calls `choose` itself. Health changes the other way round: `Health::apply` runs in Rust only,
//! on the JSON read from Redis, and the result is written back by compare-and-set
//! (`health_cas.lua`), re-read and re-applied when another report got there first. Health is
//! reported only on failures and on degraded accounts, so it is off the common path.
//!
//! Time: leases and `last_used_at` use the *caller's* clock (unix ms passed to the scripts), as
//! the embedded store does. Instances sharing a Redis must keep their clocks in step (NTP): a
//! skew of `d` makes another instance's leases look `d` longer or shorter lived.
//!
//! Failures: every fred error becomes `StoreError::Unavailable` (no message carries the URL's
//! credentials). A command gets no more than `command_timeout_ms`, also while Redis is down and
//! fred is reconnecting in the background (exponential backoff, never giving up); once Redis is
//! back, commands succeed again without a restart.

mod connect;
mod feed;
mod names;
mod scripts;
mod sentinel;
mod url;

pub(crate) use self::url::check as check_url;
pub(crate) use self::url::redact as redact_url;

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use fred::prelude::{Client, ClientLike, HashesInterface, KeysInterface, Pool};
use fred::types::{Key, Value};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

use self::names::Names;
use self::scripts::{Call, Scripts};
use super::{
    AccountRecord, AccountRelease, AccountRuntime, Admission, Admit, Binding, Bucket, Change,
    Counters, Dimension, HealthChange, KeyRecord, KeyRenewal, KeySettle, KeyState, Lease, Meter,
    MeterUse, PickRequest, Picked, Renewed, RequestFilter, RequestLogEntry, SmolStr, SpendBucket,
    Store, StoreError, StoreResult, Taken, UsageBatch, UsageQuery,
};
use crate::config::RedisConfig;
use crate::scheduler::policy::{Health, Report, Sticky};

/// Hour buckets are kept 35 days, day buckets 400 (as on the embedded store), month buckets five
/// years; totals forever. Each from the bucket's last write.
const HOUR_TTL: Duration = super::HOUR_BUCKETS_KEPT;
const DAY_TTL: Duration = super::DAY_BUCKETS_KEPT;
const MONTH_TTL: Duration = Duration::from_secs(1_827 * 86_400);
/// How many give-backs are made again at once after a failover (`upkeep`).
const REPEAT_CHUNK: usize = 64;
/// How long a usage marker remembers a batch after its last attempt; a retry that comes later
/// than this after the previous attempt could count twice. The stats task retries every flush
/// interval, and every retry renews the marker, so in practice only a day-long silence expires it.
const MARKER_TTL: Duration = Duration::from_secs(86_400);
/// Batch ids one marker keeps. The stats task applies one batch at a time (a failed batch is
/// retried before the next one is written), so one would do; the margin covers concurrent
/// callers and the usage batches made again after a failover (`sentinel::USAGE_KEPT`). (A large
/// request log's chunks can be more: written twice, a chunk changes nothing, its entries and
/// trim being the same.)
const MARKER_KEEP: usize = 64;
/// Request log entries per script call, so that a backlog written after an outage neither blocks
/// Redis for long nor builds one huge command.
const LOG_CHUNK: usize = 1_000;
/// Script calls per pipeline when writing usage: at most a few MB of log entries each.
const CALLS_PER_PIPELINE: usize = 4;
/// Lease and session binding TTLs are capped here (a century), keeping deadlines exact in Lua's
/// doubles.
const MAX_LEASE_TTL_MS: i64 = 100 * 365 * 86_400_000;
/// A health report re-reads and retries this often when other reports keep changing it. Every
/// lost round is another report's win, so this many reporters at once all get through.
const HEALTH_CAS_ATTEMPTS: usize = 64;
/// Capacity of the `changes()` broadcast; a receiver that lags sees `Lagged` and must resync.
const CHANGES_CAPACITY: usize = 1_024;

/// The Redis store. Cheap to share behind an `Arc`; dropping it stops the change feed and closes
/// the connections.
pub struct RedisStore {
    /// Commands and scripts (each client multiplexes many concurrent requests), on worker 0's
    /// runtime; the other server workers use pools of their own once started.
    pool: Pool,
    workers: connect::WorkerPools,
    /// Indexed by server worker; empty until `start_worker` filled it.
    worker_pools: Arc<[OnceLock<Pool>]>,
    /// The pub/sub connection of the change feed (a subscribed connection can send nothing else).
    subscriber: Client,
    names: Names,
    /// `Names::live()` and `Names::swept_prefix()` as script arguments, built once: every call
    /// of a `live.lua` script shares their bytes.
    live_keys: Vec<Key>,
    swept_prefix: Value,
    scripts: Scripts,
    /// This store's identity in usage markers: with one writer per store, the batch ids it last
    /// applied are all a retry needs to be checked against.
    writer: String,
    request_log_max: usize,
    changes: broadcast::Sender<Change>,
    feed: JoinHandle<()>,
    /// Behind Sentinels: their failover announcements, which move every client to the new
    /// primary, and the last moments' writes, made again there.
    _failovers: Option<sentinel::Watch>,
    recent: Option<Arc<sentinel::Recent>>,
}

impl RedisStore {
    /// Every record of a `{rec}` hash, decoded (unordered).
    async fn all_records<T: DeserializeOwned>(
        &self,
        hash: String,
        what: &str,
    ) -> StoreResult<Vec<T>> {
        let all: Vec<String> = self
            .client()
            .hvals(hash)
            .await
            .map_err(|e| unavailable(what, &e))?;
        all.iter().map(|j| decode::<T>(j, what)).collect()
    }

    /// Connects to `url` (`redis://host:port/db`, `rediss://…`, `redis-cluster://h1:p1,h2:p2,…`,
    /// `rediss-cluster://…`, `redis-sentinel://s1:p1,s2:p2,…/db?sentinelServiceName=name` or
    /// `rediss-sentinel://…`), loads the scripts and starts the change feed. Fails when Redis
    /// cannot be reached within the connect timeout; after that, outages are survived.
    pub async fn connect(
        url: &str,
        cfg: &RedisConfig,
        request_log_max: usize,
    ) -> StoreResult<RedisStore> {
        if cfg.prefix.contains(['{', '}']) {
            // A brace in the prefix would become (or break) the hash tag of every key.
            return Err(StoreError::Unavailable(
                "redis.prefix must not contain '{' or '}'".to_owned(),
            ));
        }
        let connect::Connected {
            pool,
            workers,
            subscriber,
            streams,
            scripts,
        } = connect::connect(url, cfg).await?;
        let names = Names::new(&cfg.prefix);
        let (changes, _) = broadcast::channel(CHANGES_CAPACITY);
        let feed = tokio::spawn(feed::forward(
            subscriber.clone(),
            streams,
            names.changes_channel(),
            changes.clone(),
            feed::Timing {
                retry_delay: Duration::from_millis(cfg.reconnect_min_delay_ms.max(1)),
                ping_every: Duration::from_millis(cfg.feed_ping_interval_ms.max(1)),
                ping_within: Duration::from_millis(cfg.command_timeout_ms.max(1)),
            },
        ));
        let worker_pools: Arc<[OnceLock<Pool>]> = (0..crate::config::MAX_WORKERS)
            .map(|_| OnceLock::new())
            .collect();
        let recent = Arc::new(sentinel::Recent::default());
        let failovers = sentinel::watch(
            url,
            cfg,
            sentinel::Clients {
                pool: pool.clone(),
                subscriber: subscriber.clone(),
                worker_pools: Arc::clone(&worker_pools),
            },
            Arc::clone(&recent),
        );
        let recent = failovers.as_ref().map(|_| recent);
        Ok(RedisStore {
            pool,
            workers,
            worker_pools,
            subscriber,
            live_keys: names.live().into_iter().map(Key::from).collect(),
            swept_prefix: Value::from(names.swept_prefix()),
            names,
            scripts,
            writer: format!("{:016x}", rand::random::<u64>()),
            request_log_max,
            changes,
            feed,
            _failovers: failovers,
            recent,
        })
    }

    /// `record_usage`'s writes.
    async fn write_usage(&self, batch: &UsageBatch) -> StoreResult<()> {
        if batch.is_empty() {
            return Ok(());
        }
        // Id 0 is `UsageBatch::default()`'s: a caller that set none. Treating it as an id would
        // drop that caller's second batch as a "retry"; a fresh one only guards this call.
        let batch_id = match batch.id {
            0 => rand::random::<u64>().max(1),
            id => id,
        };
        let mut by_dimension: BTreeMap<&Dimension, Vec<(&Bucket, &Counters)>> = BTreeMap::new();
        for ((dimension, bucket), counters) in &batch.counters {
            by_dimension
                .entry(dimension)
                .or_default()
                .push((bucket, counters));
        }
        let mut calls = Vec::new();
        for (dimension, buckets) in by_dimension {
            let mut keys = Vec::with_capacity(1 + buckets.len());
            let mut args = Vec::with_capacity(3 + 11 * buckets.len());
            keys.push(self.names.usage_applied(dimension, &self.writer));
            args.extend([
                batch_id.to_string(),
                ms(MARKER_TTL),
                MARKER_KEEP.to_string(),
            ]);
            for (bucket, counters) in buckets {
                keys.push(self.names.usage_counter(dimension, bucket));
                args.push(bucket_ttl(bucket).map_or_else(|| "0".to_owned(), ms));
                for value in counter_values(counters) {
                    // HINCRBY takes a signed 64-bit increment. Refusing a larger one would make
                    // the batch unwritable for good, and every batch after it wait behind it:
                    // it is held at the largest (per-request usage is capped far below it).
                    args.push(value.min(i64::MAX as u64).to_string());
                }
                args.push(counters.last_at.to_string());
            }
            calls.push(Call {
                script: &self.scripts.usage_add,
                keys,
                args,
            });
        }
        for (chunk_no, chunk) in batch.requests.chunks(LOG_CHUNK).enumerate() {
            let mut keys = Vec::with_capacity(3);
            let mut args = Vec::with_capacity(5 + 4 * chunk.len());
            keys.extend([
                self.names.log_applied(&self.writer),
                self.names.log_all(),
                self.names.log_entries(),
            ]);
            args.extend([
                format!("{batch_id}.{chunk_no}"),
                ms(MARKER_TTL),
                MARKER_KEEP.to_string(),
                self.request_log_max.to_string(),
                self.names.log_key_prefix(),
            ]);
            for entry in chunk {
                args.extend([
                    entry.at.to_string(),
                    log_member(entry),
                    entry.key_id.clone(),
                    log_json(entry)?,
                ]);
            }
            calls.push(Call {
                script: &self.scripts.log_add,
                keys,
                args,
            });
        }
        // A few calls per pipeline, one pipeline after the other: a backlog left by an outage
        // (up to `stats.max_pending_requests` log entries, tens of MB) in one pipeline had one
        // command timeout for all of it, which a slow link could never meet, and held up the
        // requests sharing the connection meanwhile. Each call is idempotent (its marker), so a
        // retry skips what an earlier pipeline applied.
        let mut calls = calls.into_iter();
        loop {
            let group: Vec<Call<'_>> = calls.by_ref().take(CALLS_PER_PIPELINE).collect();
            if group.is_empty() {
                return Ok(());
            }
            scripts::run_all(self.client(), group).await?;
        }
    }

    /// The pool client for the next command, preferring one that is connected.
    fn client(&self) -> &Client {
        self.worker_pools
            .get(crate::server::worker_index())
            .and_then(OnceLock::get)
            .unwrap_or(&self.pool)
            .next_connected()
    }

    fn channel(&self) -> String {
        self.names.changes_channel()
    }
}

impl Drop for RedisStore {
    fn drop(&mut self) {
        self.feed.abort();
        connect::close(self.pool.clone(), self.subscriber.clone());
        for pool in self.worker_pools.iter().filter_map(OnceLock::get) {
            connect::close_pool(pool.clone());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Encoding

fn unavailable(what: &str, e: &fred::error::Error) -> StoreError {
    StoreError::Unavailable(format!("redis {what}: {e}"))
}

fn encode<T: Serialize>(value: &T) -> StoreResult<String> {
    serde_json::to_string(value).map_err(encoding_err)
}

fn encoding_err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("encoding: {e}"))
}

fn decode<T: DeserializeOwned>(text: &str, what: &str) -> StoreResult<T> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}

/// A reply that is a string, or nil.
fn optional_string(value: Value, what: &str) -> StoreResult<Option<String>> {
    match value {
        Value::Null => Ok(None),
        other => other
            .as_string()
            .map(Some)
            .ok_or_else(|| StoreError::Corrupt(format!("{what}: unexpected reply {other:?}"))),
    }
}

fn integer(value: &Value, what: &str) -> StoreResult<i64> {
    value
        .as_i64()
        .ok_or_else(|| StoreError::Corrupt(format!("{what}: unexpected reply {value:?}")))
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// `now + ttl` in unix ms, the ttl rounded up and capped (`ttl_ms`).
fn deadline_ms(now: i64, ttl: Duration) -> i64 {
    now.saturating_add(ttl_ms(ttl))
}

/// A TTL in whole ms, rounded up (a sub-millisecond lease or binding still lives) and capped at
/// a century, keeping deadlines exact in Lua's doubles; 0 only for a zero TTL.
fn ttl_ms(ttl: Duration) -> i64 {
    i64::try_from(ttl.as_nanos().div_ceil(1_000_000))
        .unwrap_or(i64::MAX)
        .min(MAX_LEASE_TTL_MS)
}

/// A key's meter registry as `take.lua` writes it when the key holds exactly these meters: each
/// `bucket=expires_at;` (-1: never), sorted.
fn registry(meters: &[Meter]) -> String {
    let mut parts: Vec<String> = meters
        .iter()
        .map(|m| format!("{}={};", m.bucket, m.expires_at.unwrap_or(-1)))
        .collect();
    parts.sort_unstable();
    parts.concat()
}

/// A concurrency cap for a script: -1 for none.
/// The cap `take.lua` gets for a candidate that does not serve the request's model
/// (`Candidate::serves`): no capacity, and a session bound to it escapes.
const NOT_SERVING: i64 = -2;

fn cap_arg(cap: Option<u32>) -> Value {
    Value::Integer(cap.map_or(-1, i64::from))
}

/// A count or amount for a script (sent as its decimal digits, as every integer argument is).
fn uint(n: impl TryInto<i64> + ToString + Copy) -> Value {
    n.try_into()
        .map_or_else(|_| Value::from(n.to_string()), Value::Integer)
}

fn ms(duration: Duration) -> String {
    duration.as_millis().to_string()
}

fn bucket_ttl(bucket: &Bucket) -> Option<Duration> {
    match bucket {
        Bucket::Hour(_) => Some(HOUR_TTL),
        Bucket::Day(_) => Some(DAY_TTL),
        Bucket::Month(_) => Some(MONTH_TTL),
        Bucket::Total => None,
    }
}

/// The counters in the order of `FIELDS` in `usage_add.lua` and `usage_read.lua`.
fn counter_values(c: &Counters) -> [u64; 9] {
    [
        c.requests,
        c.input_tokens,
        c.output_tokens,
        c.cache_creation_input_tokens,
        c.cache_creation_5m_input_tokens,
        c.cache_creation_1h_input_tokens,
        c.cache_read_input_tokens,
        c.cost_nanousd,
        c.images,
    ]
}

fn counters_from(values: [u64; 9], last_at: i64) -> Counters {
    let [
        requests,
        input_tokens,
        output_tokens,
        cache_creation_input_tokens,
        cache_creation_5m_input_tokens,
        cache_creation_1h_input_tokens,
        cache_read_input_tokens,
        cost_nanousd,
        images,
    ] = values;
    Counters {
        requests,
        input_tokens,
        output_tokens,
        cache_creation_input_tokens,
        cache_creation_5m_input_tokens,
        cache_creation_1h_input_tokens,
        cache_read_input_tokens,
        cost_nanousd,
        images,
        last_at,
    }
}

/// One `HMGET` answer of `usage_read.lua`: the counters, then `last_at`.
fn parse_counters(value: Value) -> StoreResult<Counters> {
    fn number<T: std::str::FromStr<Err: std::fmt::Display> + Default>(
        field: Value,
    ) -> StoreResult<T> {
        let Some(text) = optional_string(field, "usage counter")? else {
            return Ok(T::default());
        };
        text.parse()
            .map_err(|e| StoreError::Corrupt(format!("usage counter {text:?}: {e}")))
    }
    let mut fields = value.into_array();
    let mut values = [0u64; 9];
    if fields.len() != values.len() + 1 {
        return Err(StoreError::Corrupt(format!(
            "usage counters: {} fields",
            fields.len()
        )));
    }
    let last_at = fields.pop().map_or(Ok(0), number)?;
    for (slot, field) in values.iter_mut().zip(fields) {
        *slot = number(field)?;
    }
    Ok(counters_from(values, last_at))
}

/// The request log entry's JSON (`RequestLogEntry::write_json`), as a script argument.
fn log_json(entry: &RequestLogEntry) -> StoreResult<String> {
    let mut json = Vec::with_capacity(512);
    entry.write_json(&mut json).map_err(encoding_err)?;
    String::from_utf8(json).map_err(encoding_err)
}

/// The request log member of an entry: arrival first, so that equal scores sort by request id;
/// the key id last, so that trimming the log finds each entry's key index without decoding it.
///
/// The serving account, when there is one, ends the first line (after a unit separator), for
/// reads of an account's entries (`log_read.lua`); what follows the first line break is the key
/// id alone, as `log_add.lua` (this version's and earlier ones') reads it when it trims the log.
fn log_member(entry: &RequestLogEntry) -> String {
    match &entry.account_id {
        Some(account) => format!(
            "{}:{}\x1f{account}\n{}",
            entry.at, entry.request_id, entry.key_id
        ),
        None => format!("{}:{}\n{}", entry.at, entry.request_id, entry.key_id),
    }
}

// ---------------------------------------------------------------------------------------------

#[async_trait]
impl Store for RedisStore {
    async fn ping(&self) -> StoreResult<()> {
        self.client()
            .ping::<Value>(None)
            .await
            .map(drop)
            .map_err(|e| unavailable("ping", &e))
    }

    async fn start_worker(&self, worker: usize) -> StoreResult<()> {
        // Worker 0 runs the store's first pool already.
        let Some(slot) = self.worker_pools.get(worker).filter(|_| worker > 0) else {
            return Ok(());
        };
        let pool = self.workers.start().await?;
        if let Err(extra) = slot.set(pool) {
            connect::close_pool(extra);
        }
        Ok(())
    }

    async fn insert_key(&self, key: &KeyRecord) -> StoreResult<()> {
        self.put_key(key, None).await.map(drop)
    }

    async fn key(&self, id: &str) -> StoreResult<Option<KeyRecord>> {
        let json: Option<String> = self
            .client()
            .hget(self.names.key_records(), id)
            .await
            .map_err(|e| unavailable("key", &e))?;
        json.map(|j| decode(&j, "key record")).transpose()
    }

    async fn key_by_hash(&self, hash: &str) -> StoreResult<Option<KeyRecord>> {
        let reply = self
            .scripts
            .key_by_hash
            .run(
                self.client(),
                vec![self.names.key_hashes(), self.names.key_records()],
                vec![hash.to_owned()],
            )
            .await?;
        optional_string(reply, "key record")?
            .map(|j| decode(&j, "key record"))
            .transpose()
    }

    async fn keys(&self) -> StoreResult<Vec<KeyRecord>> {
        let mut keys: Vec<KeyRecord> = self
            .all_records(self.names.key_records(), "key record")
            .await?;
        keys.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(keys)
    }

    async fn update_key(&self, key: &KeyRecord) -> StoreResult<bool> {
        let read = key.revision;
        let mut next = key.clone();
        next.revision = read + 1;
        self.put_key(&next, Some(read)).await
    }

    async fn delete_key(&self, id: &str) -> StoreResult<bool> {
        let reply = self
            .scripts
            .key_delete
            .run(
                self.client(),
                vec![self.names.key_records(), self.names.key_hashes()],
                vec![self.channel(), id.to_owned()],
            )
            .await?;
        // As `delete_account`: cleared even when the record was already gone, in a second call
        // (the live state has the `{live}` tag, the record `{rec}`).
        self.scripts
            .key_forget
            .run(
                self.client(),
                self.live_keys.clone(),
                vec![String::new(), id.to_owned()],
            )
            .await?;
        Ok(integer(&reply, "key_delete")? == 1)
    }

    async fn insert_account(&self, account: &AccountRecord) -> StoreResult<()> {
        self.put_account(account, None).await.map(drop)
    }

    async fn account(&self, id: &str) -> StoreResult<Option<AccountRecord>> {
        let json: Option<String> = self
            .client()
            .hget(self.names.account_records(), id)
            .await
            .map_err(|e| unavailable("account", &e))?;
        json.map(|j| decode(&j, "account record")).transpose()
    }

    async fn accounts(&self) -> StoreResult<Vec<AccountRecord>> {
        let mut accounts: Vec<AccountRecord> = self
            .all_records(self.names.account_records(), "account record")
            .await?;
        accounts.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(accounts)
    }

    async fn update_account_checked(&self, account: &AccountRecord) -> StoreResult<bool> {
        let read = account.revision;
        let mut next = account.clone();
        next.revision = read + 1;
        self.put_account(&next, Some(read)).await
    }

    async fn claim(&self, name: &str, owner: &str, ttl: Duration) -> StoreResult<bool> {
        let ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX).max(1);
        let reply = self
            .scripts
            .claim
            .run(
                self.client(),
                vec![self.names.claim(name)],
                vec![owner.to_owned(), ms.to_string()],
            )
            .await?;
        Ok(integer(&reply, "claim")? == 1)
    }

    async fn unclaim(&self, name: &str, owner: &str) -> StoreResult<()> {
        self.scripts
            .unclaim
            .run(
                self.client(),
                vec![self.names.claim(name)],
                vec![owner.to_owned()],
            )
            .await
            .map(drop)
    }

    async fn delete_account(&self, id: &str) -> StoreResult<bool> {
        let reply = self
            .scripts
            .account_delete
            .run(
                self.client(),
                vec![self.names.account_records()],
                vec![self.channel(), id.to_owned()],
            )
            .await?;
        // Cleared even when the record was already gone: live state without a record is junk.
        // A second call: the live state has the `{live}` tag, the record `{rec}`.
        self.scripts
            .account_forget
            .run(
                self.client(),
                self.live_keys.clone(),
                vec![String::new(), id.to_owned()],
            )
            .await?;
        Ok(integer(&reply, "account_delete")? == 1)
    }

    async fn account_runtime(&self, id: &str) -> StoreResult<AccountRuntime> {
        let reply = self
            .scripts
            .account_runtime
            .run(
                self.client(),
                self.live_keys.clone(),
                [
                    self.swept_prefix.clone(),
                    Value::Integer(now_ms()),
                    Value::from(id),
                ],
            )
            .await?;
        let mut parts = reply.into_array().into_iter();
        let (Some(live), Some(last), Some(health)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(StoreError::Corrupt("account_runtime: short reply".into()));
        };
        let health = optional_string(health, "health")?.unwrap_or_default();
        let last = optional_string(last, "last_used_at")?.unwrap_or_default();
        Ok(AccountRuntime {
            in_flight: u32::try_from(integer(&live, "in_flight")?).unwrap_or(u32::MAX),
            last_used_at: last
                .parse()
                .map_err(|e| StoreError::Corrupt(format!("last_used_at {last:?}: {e}")))?,
            health: parse_health(&health)?,
        })
    }

    async fn admit(&self, admission: &Admission, lease: &Lease) -> StoreResult<Admit> {
        match self.take(Some((admission, lease)), None).await? {
            Taken::Refused(admit) => Ok(admit),
            Taken::Picked(_) => Ok(Admit::Granted),
        }
    }

    async fn settle(
        &self,
        key_id: &str,
        lease: &Lease,
        used: &[(SmolStr, u64)],
    ) -> StoreResult<()> {
        let key = GiveKey {
            key_id,
            lease,
            reserved: None,
            used,
        };
        self.give(Some(key), None).await
    }

    async fn key_state(&self, key_id: &str, buckets: &[SmolStr]) -> StoreResult<KeyState> {
        let mut args = Vec::with_capacity(3 + buckets.len());
        args.extend([
            self.swept_prefix.clone(),
            Value::Integer(now_ms()),
            Value::from(key_id),
        ]);
        args.extend(buckets.iter().map(|b| Value::from(b.as_str())));
        let reply = self
            .scripts
            .key_state
            .run(self.client(), self.live_keys.clone(), args)
            .await?;
        let parts = reply.into_array();
        let text = |i: usize| -> StoreResult<String> {
            parts
                .get(i)
                .and_then(Value::as_string)
                .ok_or_else(|| StoreError::Corrupt("key_state: short reply".into()))
        };
        let number = |i: usize| -> StoreResult<u64> {
            let t = text(i)?;
            t.parse()
                .map_err(|e| StoreError::Corrupt(format!("key_state: {t:?}: {e}")))
        };
        let in_flight = parts.first().map_or(Ok(0), |v| integer(v, "key_state"))?;
        let first = text(1)?;
        let mut meters = Vec::with_capacity(buckets.len());
        for i in 0..buckets.len() {
            meters.push(MeterUse {
                used: number(2 + 2 * i)?,
                held: number(3 + 2 * i)?,
            });
        }
        Ok(KeyState {
            in_flight: u32::try_from(in_flight).unwrap_or(u32::MAX),
            meters,
            first_used_at: if first.is_empty() {
                None
            } else {
                Some(
                    first
                        .parse()
                        .map_err(|e| StoreError::Corrupt(format!("first use {first:?}: {e}")))?,
                )
            },
        })
    }

    /// HGET, `Health::apply` in Rust (the one implementation of the policy), then a
    /// compare-and-set: a report racing another instance's re-reads and applies again.
    async fn report_health(
        &self,
        account_id: &str,
        report: &Report,
        now_ms: i64,
    ) -> StoreResult<HealthChange> {
        let field = names::account_field(account_id, "h");
        for attempt in 0..HEALTH_CAS_ATTEMPTS {
            let old: Option<String> = self
                .client()
                .hget(self.names.live_state(), field.as_str())
                .await
                .map_err(|e| unavailable("read account health", &e))?;
            let old = old.unwrap_or_default();
            let before = parse_health(&old)?;
            let mut after = before.clone();
            after.apply(report, now_ms);
            let new = if after == Health::default() {
                String::new()
            } else {
                encode(&after)?
            };
            if new == old {
                return Ok(HealthChange { before, after });
            }
            let written = self
                .scripts
                .health_cas
                .run(
                    self.client(),
                    self.live_keys.clone(),
                    vec![String::new(), account_id.to_owned(), old, new],
                )
                .await?;
            if integer(&written, "health_cas")? == 1 {
                return Ok(HealthChange { before, after });
            }
            // Someone else won this round: back off at random, longer each time (up to 8 ms), so
            // that racers spread out.
            let window = 250u64 << attempt.min(5);
            tokio::time::sleep(Duration::from_micros(rand::random::<u64>() % window)).await;
        }
        Err(StoreError::Unavailable(
            "account health kept changing under this report".into(),
        ))
    }

    async fn reset_health(&self, account_id: &str) -> StoreResult<()> {
        // Read, cleared and written over what was read (`health_cas.lua`), as a report is: a
        // spent budget's rest stays. A field that cannot be read (written by a later version)
        // is deleted whole: the caller's review of the budgets puts a rest back.
        match self
            .report_health(account_id, &Report::Cleared, now_ms())
            .await
        {
            Ok(_) => Ok(()),
            Err(StoreError::Corrupt(e)) => {
                tracing::warn!(account_id, error = %e, "unreadable account health deleted");
                let _: i64 = self
                    .client()
                    .hdel(
                        self.names.live_state(),
                        names::account_field(account_id, "h"),
                    )
                    .await
                    .map_err(|e| unavailable("reset account health", &e))?;
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    async fn add_spend(
        &self,
        owner: &str,
        buckets: &[SpendBucket],
        amount: u64,
        charge: &str,
    ) -> StoreResult<Vec<u64>> {
        if buckets.is_empty() {
            return Ok(Vec::new());
        }
        let mut keys = Vec::with_capacity(buckets.len() + 1);
        keys.push(self.names.spend_charge(owner, charge));
        keys.extend(buckets.iter().map(|b| self.names.spend(owner, &b.name)));
        let mut args = Vec::with_capacity(buckets.len() + 1);
        args.push(amount.to_string());
        args.extend(buckets.iter().map(|b| b.expires_at.to_string()));
        let reply = self
            .scripts
            .spend_add
            .run(self.client(), keys, args)
            .await?;
        let totals = match reply {
            Value::Array(totals) => totals,
            other => {
                return Err(StoreError::Corrupt(format!(
                    "spend_add: unexpected reply {other:?}"
                )));
            }
        };
        totals
            .iter()
            .map(|t| integer(t, "spend_add").map(|t| u64::try_from(t).unwrap_or(0)))
            .collect()
    }

    async fn raise_spend(
        &self,
        owner: &str,
        bucket: &SpendBucket,
        at_least: u64,
    ) -> StoreResult<u64> {
        let reply = self
            .scripts
            .spend_raise
            .run(
                self.client(),
                vec![self.names.spend(owner, &bucket.name)],
                vec![at_least.to_string(), bucket.expires_at.to_string()],
            )
            .await?;
        Ok(u64::try_from(integer(&reply, "spend_raise")?).unwrap_or(0))
    }

    async fn spend(&self, owner: &str, buckets: &[SmolStr]) -> StoreResult<Vec<u64>> {
        if buckets.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = buckets.iter().map(|b| self.names.spend(owner, b)).collect();
        let totals: Vec<Option<u64>> = self
            .client()
            .mget(keys)
            .await
            .map_err(|e| unavailable("read spend", &e))?;
        Ok(totals.into_iter().map(Option::unwrap_or_default).collect())
    }

    async fn pick_account(&self, request: &PickRequest<'_>, lease: &Lease) -> StoreResult<Picked> {
        match self.take(None, Some((request, lease))).await? {
            Taken::Picked(picked) => Ok(picked),
            Taken::Refused(admit) => Err(StoreError::Corrupt(format!(
                "take: an admission answer {admit:?} without an admission"
            ))),
        }
    }

    /// One `take.lua` call: the admission and the pick in one round trip.
    async fn admit_and_pick(
        &self,
        admission: &Admission,
        key_lease: &Lease,
        request: &PickRequest<'_>,
        account_lease: &Lease,
    ) -> StoreResult<Taken> {
        self.take(Some((admission, key_lease)), Some((request, account_lease)))
            .await
    }

    async fn release(
        &self,
        key_id: &str,
        account_id: Option<&str>,
        lease: &Lease,
    ) -> StoreResult<()> {
        match account_id {
            // A key's own lease may hold reservations: settling returns them.
            None => self.settle(key_id, lease, &[]).await,
            Some(account_id) => {
                let account = GiveAccount {
                    account_id,
                    lease,
                    bind: None,
                };
                self.give(None, Some(account)).await
            }
        }
    }

    /// One `give.lua` call for both leases and the binding.
    async fn finish(
        &self,
        key: Option<&KeySettle>,
        account: Option<&AccountRelease>,
        bind: Option<&Binding>,
    ) -> StoreResult<()> {
        self.give(
            key.map(|k| GiveKey {
                key_id: &k.key_id,
                lease: &k.lease,
                reserved: Some(&k.reserved),
                used: &k.used,
            }),
            account.map(|a| GiveAccount {
                account_id: &a.account_id,
                lease: &a.lease,
                bind,
            }),
        )
        .await
    }

    /// One `renew.lua` call for both leases.
    async fn renew(
        &self,
        key: Option<&KeyRenewal>,
        account: Option<&AccountRelease>,
        now: i64,
    ) -> StoreResult<Renewed> {
        let mut args = Vec::with_capacity(6);
        match key {
            None => args.extend([Value::from(""), Value::Integer(0), Value::Integer(0)]),
            Some(k) => {
                // The member exactly as take.lua added it: the holds are part of it.
                let mut member = names::lp(&k.key_id);
                names::push_lp(&mut member, &k.lease.id);
                for (bucket, reserve) in &k.reserved {
                    member.push_str(bucket);
                    member.push('=');
                    member.push_str(&reserve.to_string());
                    member.push(';');
                }
                args.extend([
                    Value::from(member),
                    Value::Integer(now),
                    Value::Integer(deadline_ms(now, k.lease.ttl)),
                ]);
            }
        }
        match account {
            None => args.extend([Value::from(""), Value::Integer(0), Value::Integer(0)]),
            Some(a) => {
                let mut member = names::lp(&a.account_id);
                names::push_lp(&mut member, &a.lease.id);
                // The clock `take` judged the account lease by.
                let clock = now_ms();
                args.extend([
                    Value::from(member),
                    Value::Integer(clock),
                    Value::Integer(deadline_ms(clock, a.lease.ttl)),
                ]);
            }
        }
        let reply = self
            .scripts
            .renew
            .run(self.client(), self.live_keys.clone(), args)
            .await?
            .into_array();
        match reply.as_slice() {
            [key, account] => Ok(Renewed {
                key: integer(key, "renew")? == 1,
                account: integer(account, "renew")? == 1,
            }),
            other => Err(StoreError::Corrupt(format!(
                "renew: unexpected reply {other:?}"
            ))),
        }
    }

    async fn record_usage(&self, batch: &UsageBatch) -> StoreResult<()> {
        self.write_usage(batch).await?;
        // Made again after a failover: its id keeps it counting once.
        if let Some(recent) = &self.recent
            && batch.id != 0
            && !batch.is_empty()
        {
            recent.note_usage(batch.clone());
        }
        Ok(())
    }

    async fn upkeep(&self) -> StoreResult<()> {
        let Some(repeat) = self.recent.as_ref().and_then(|r| r.to_repeat()) else {
            return Ok(());
        };
        tracing::info!(
            give_backs = repeat.gives.len(),
            usage_batches = repeat.usage.len(),
            "redis: making the last writes again on the new primary"
        );
        let mut left = sentinel::Repeat {
            gives: Vec::new(),
            usage: Vec::new(),
        };
        // Many at once (fred sends them one after another on the connection), a chunk at a
        // time. A chunk that fails stops the give-backs (Redis is away again: each would wait
        // for its timeout); they and the failed ones are tried again at the next upkeep.
        let mut gives = repeat.gives.into_iter().peekable();
        while gives.peek().is_some() {
            let chunk: Vec<_> = gives.by_ref().take(REPEAT_CHUNK).collect();
            let made = futures_util::future::join_all(chunk.iter().map(|(_, give)| {
                let (keys, args) = (give.keys.clone(), give.args.clone());
                self.scripts.give.run(self.client(), keys, args)
            }))
            .await;
            let mut failed = false;
            for (entry, made) in chunk.into_iter().zip(made) {
                if made.is_err() {
                    failed = true;
                    left.gives.push(entry);
                }
            }
            if failed {
                left.gives.extend(gives.by_ref());
            }
        }
        // Every batch is tried (those the new primary has are found in its markers now, while
        // their ids are still remembered); the failed ones are put back.
        for (at, batch) in repeat.usage {
            if let Err(e) = self.write_usage(&batch).await {
                tracing::warn!(error = %e, "redis: a usage batch made again after a failover failed");
                left.usage.push((at, batch));
            }
        }
        if !(left.gives.is_empty() && left.usage.is_empty()) {
            tracing::warn!(
                give_backs = left.gives.len(),
                usage_batches = left.usage.len(),
                "redis: writes made again after a failover failed; tried again next tick"
            );
            if let Some(recent) = &self.recent {
                recent.put_back(left);
            }
        }
        Ok(())
    }

    async fn usage(&self, query: &UsageQuery) -> StoreResult<Vec<Counters>> {
        if query.buckets.is_empty() {
            return Ok(Vec::new());
        }
        let keys = query
            .buckets
            .iter()
            .map(|bucket| self.names.usage_counter(&query.dimension, bucket));
        let reply = self
            .scripts
            .usage_read
            .run(self.client(), keys, Vec::<Value>::new())
            .await?;
        let rows = reply.into_array();
        if rows.len() != query.buckets.len() {
            return Err(StoreError::Corrupt(format!(
                "usage: {} rows for {} buckets",
                rows.len(),
                query.buckets.len()
            )));
        }
        rows.into_iter().map(parse_counters).collect()
    }

    async fn recent_requests(
        &self,
        filter: &RequestFilter<'_>,
        limit: usize,
    ) -> StoreResult<Vec<RequestLogEntry>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let index = match filter.key_id {
            Some(key_id) => self.names.log_key(key_id),
            None => self.names.log_all(),
        };
        // Far above any log's bound, and exact wherever it is handled.
        let last = limit.min(1 << 31) - 1;
        let mut args = vec![last.to_string()];
        // An account's: picked by the script from the members, which name it.
        if let Some(account_id) = filter.account_id {
            args.push(account_id.to_owned());
        }
        let reply = self
            .scripts
            .log_read
            .run(self.client(), vec![index, self.names.log_entries()], args)
            .await?;
        let mut out = Vec::new();
        for value in reply.into_array() {
            let Some(json) = optional_string(value, "request log entry")? else {
                continue;
            };
            let entry: RequestLogEntry = decode(&json, "request log entry")?;
            // An entry re-recorded under another key leaves a stale index member behind.
            if filter.admits(&entry) {
                out.push(entry);
            }
        }
        Ok(out)
    }

    async fn flush(&self) -> StoreResult<()> {
        // Every write above returns only once Redis acknowledged it; nothing is buffered here.
        Ok(())
    }

    async fn share_prices(&self, json: &str) -> StoreResult<bool> {
        self.scripts
            .prices_put
            .run(
                self.client(),
                vec![self.names.imported_prices()],
                vec![self.channel(), json.to_owned()],
            )
            .await?;
        Ok(true)
    }

    async fn shared_prices(&self) -> StoreResult<Option<String>> {
        self.client()
            .get(self.names.imported_prices())
            .await
            .map_err(|e| unavailable("imported prices", &e))
    }

    fn changes(&self) -> Option<broadcast::Receiver<Change>> {
        Some(self.changes.subscribe())
    }
}

impl RedisStore {
    /// `key_put.lua`: the record, and with `read` only over a stored one at that revision.
    async fn put_key(&self, key: &KeyRecord, read: Option<u64>) -> StoreResult<bool> {
        let mut args = vec![
            self.channel(),
            key.id.clone(),
            key.hash.clone(),
            encode(key)?,
            if read.is_some() { "1" } else { "0" }.to_owned(),
        ];
        args.extend(read.map(|r| r.to_string()));
        let reply = self
            .scripts
            .key_put
            .run(
                self.client(),
                vec![self.names.key_records(), self.names.key_hashes()],
                args,
            )
            .await?;
        Ok(integer(&reply, "key_put")? == 1)
    }

    /// `account_put.lua`: the record, and with `read` only over a stored record at that
    /// revision (`update_account_checked`).
    async fn put_account(&self, account: &AccountRecord, read: Option<u64>) -> StoreResult<bool> {
        let mut args = vec![
            self.channel(),
            account.id.clone(),
            encode(account)?,
            if read.is_some() { "1" } else { "0" }.to_owned(),
        ];
        args.extend(read.map(|r| r.to_string()));
        let reply = self
            .scripts
            .account_put
            .run(self.client(), vec![self.names.account_records()], args)
            .await?;
        Ok(integer(&reply, "account_put")? == 1)
    }
}

impl RedisStore {
    /// `take.lua`: an admission, a pick, or both at once (see the script's header).
    async fn take(
        &self,
        admission: Option<(&Admission, &Lease)>,
        pick: Option<(&PickRequest<'_>, &Lease)>,
    ) -> StoreResult<Taken> {
        let mut keys = self.live_keys.clone();
        let mut args = vec![self.swept_prefix.clone()];
        match admission {
            None => args.push(Value::Integer(0)),
            Some((admission, lease)) => {
                let now = admission.now_ms;
                let mut member = names::lp(&admission.key_id);
                names::push_lp(&mut member, &lease.id);
                for meter in &admission.meters {
                    member.push_str(&meter.bucket);
                    member.push('=');
                    member.push_str(&meter.reserve.to_string());
                    member.push(';');
                }
                args.extend([
                    Value::Integer(1),
                    Value::from(names::key_prefix(&admission.key_id)),
                    Value::from(member),
                    Value::Integer(now),
                    Value::Integer(deadline_ms(now, lease.ttl)),
                    cap_arg(admission.max_concurrency),
                    Value::Integer(admission.valid_after_first_use_ms.unwrap_or(-1)),
                    Value::from(registry(&admission.meters)),
                    uint(admission.meters.len()),
                ]);
                for meter in &admission.meters {
                    args.extend([
                        Value::from(meter.bucket.as_str()),
                        uint(meter.limit),
                        uint(meter.reserve),
                        Value::Integer(meter.expires_at.unwrap_or(-1)),
                    ]);
                }
            }
        }
        let candidates = pick.map_or(&[][..], |(request, _)| request.candidates);
        match pick {
            None => args.push(Value::Integer(0)),
            // Nothing to choose from: no lease, and no admission either (all or nothing).
            Some(_) if candidates.is_empty() => {
                return Ok(Taken::Picked(Picked::Unavailable { retry_at: None }));
            }
            Some((request, lease)) => {
                let clock = now_ms();
                args.extend([
                    Value::Integer(1),
                    Value::from(names::lp(&lease.id)),
                    Value::Integer(clock),
                    Value::Integer(deadline_ms(clock, lease.ttl)),
                    Value::Integer(request.now_ms),
                    Value::from(request.family.unwrap_or_default()),
                ]);
                match &request.session {
                    Some(session) => {
                        keys.push(Key::from(self.names.session(session.id)));
                        let mode = match (session.write, session.move_on_overflow) {
                            (false, _) => 3,
                            (true, false) => 1,
                            (true, true) => 2,
                        };
                        args.extend([Value::Integer(mode), Value::Integer(ttl_ms(session.ttl))]);
                    }
                    None => args.extend([Value::Integer(0), Value::Integer(0)]),
                }
                args.push(uint(candidates.len()));
                for c in candidates {
                    args.extend([
                        Value::from(c.account_id.as_str()),
                        Value::from(names::account_prefix(&c.account_id)),
                        Value::Integer(c.priority.into()),
                        if c.serves {
                            cap_arg(c.max_concurrency)
                        } else {
                            Value::Integer(NOT_SERVING)
                        },
                        Value::Integer(c.weight.into()),
                    ]);
                }
            }
        }
        let reply = self
            .scripts
            .take
            .run(self.client(), keys, args)
            .await?
            .into_array();
        let number = |i: usize, what: &str| -> StoreResult<u64> {
            let text = reply
                .get(i)
                .and_then(Value::as_string)
                .ok_or_else(|| StoreError::Corrupt(format!("take: no {what}")))?;
            text.parse()
                .map_err(|e| StoreError::Corrupt(format!("take: {what} {text:?}: {e}")))
        };
        let code = reply.first().map_or(Ok(-1), |v| integer(v, "take"))?;
        let max_concurrency = admission.and_then(|(a, _)| a.max_concurrency);
        let refused = match (code, max_concurrency) {
            (0, _) => None,
            (1, Some(limit)) => Some(Admit::ConcurrencyExceeded { limit }),
            (2, _) => Some(Admit::MeterFull {
                meter: usize::try_from(number(1, "meter")?).unwrap_or(usize::MAX),
                usage: MeterUse {
                    used: number(2, "used")?,
                    held: number(3, "held")?,
                },
            }),
            (3, _) => Some(Admit::Expired {
                first_used_at: i64::try_from(number(1, "first use")?).unwrap_or(i64::MAX),
            }),
            // Sent again after a lost reply: the first run's leases are given back by the
            // caller, as after any failed call.
            (4, _) => {
                return Err(StoreError::Unavailable(
                    "take: the call ran twice (sent again after a lost reply)".into(),
                ));
            }
            (other, _) => {
                return Err(StoreError::Corrupt(format!(
                    "take: unexpected answer {other}"
                )));
            }
        };
        if let Some(admit) = refused {
            return Ok(Taken::Refused(admit));
        }
        let picked = match reply.get(1..).unwrap_or_default() {
            [] => Picked::Unavailable { retry_at: None },
            [kind, index, sticky, degraded] if integer(kind, "take")? == 1 => {
                let index = integer(index, "pick index")?;
                let chosen = usize::try_from(index)
                    .ok()
                    .and_then(|i| i.checked_sub(1))
                    .and_then(|i| candidates.get(i))
                    .ok_or_else(|| StoreError::Corrupt(format!("pick: index {index}")))?;
                Picked::Account {
                    id: chosen.account_id.clone(),
                    sticky: sticky_of(integer(sticky, "pick sticky")?)?,
                    degraded: integer(degraded, "pick degraded")? == 1,
                }
            }
            [kind, retry_at] if integer(kind, "take")? == 0 => {
                let retry_at = optional_string(retry_at.clone(), "pick retry_at")?
                    .filter(|s| !s.is_empty())
                    .map(|s| {
                        // Formatted from a double: clamp rather than fail past i64's range.
                        s.parse::<i128>()
                            .map(|v| {
                                i64::try_from(v.clamp(i128::from(i64::MIN), i128::from(i64::MAX)))
                                    .unwrap_or(i64::MAX)
                            })
                            .map_err(|e| StoreError::Corrupt(format!("pick retry_at {s:?}: {e}")))
                    })
                    .transpose()?;
                Picked::Unavailable { retry_at }
            }
            other => {
                return Err(StoreError::Corrupt(format!(
                    "take: unexpected reply {other:?}"
                )));
            }
        };
        Ok(Taken::Picked(picked))
    }

    /// `give.lua`: a key's lease (with its holds as admitted when the caller knows them), an
    /// account's lease, or both at once.
    async fn give(
        &self,
        key: Option<GiveKey<'_>>,
        account: Option<GiveAccount<'_>>,
    ) -> StoreResult<()> {
        let mut keys = self.live_keys.clone();
        let mut args = vec![self.swept_prefix.clone()];
        match key {
            None => args.push(Value::Integer(0)),
            Some(GiveKey {
                key_id,
                lease,
                reserved,
                used,
            }) => {
                let holds = reserved.map_or_else(
                    || "?".to_owned(),
                    |r| {
                        r.iter()
                            .map(|(bucket, amount)| format!("{bucket}={amount};"))
                            .collect()
                    },
                );
                let mut member = names::lp(key_id);
                names::push_lp(&mut member, &lease.id);
                args.extend([
                    Value::Integer(1),
                    Value::from(names::key_prefix(key_id)),
                    Value::from(member),
                    Value::from(holds),
                    uint(used.len()),
                ]);
                for (bucket, amount) in used {
                    args.extend([Value::from(bucket.as_str()), uint(*amount)]);
                }
            }
        }
        match account {
            None => args.push(Value::Integer(0)),
            Some(GiveAccount {
                account_id,
                lease,
                bind,
            }) => {
                let mut member = names::lp(account_id);
                names::push_lp(&mut member, &lease.id);
                args.extend([
                    Value::Integer(1),
                    Value::from(names::account_prefix(account_id)),
                    Value::from(member),
                ]);
                if let Some(bind) = bind {
                    keys.push(Key::from(self.names.session(&bind.session)));
                    args.extend([
                        Value::Integer(ttl_ms(bind.ttl)),
                        Value::from(format!("{account_id}\n{}", now_ms())),
                    ]);
                }
            }
        }
        let Some(recent) = &self.recent else {
            return self
                .scripts
                .give
                .run(self.client(), keys, args)
                .await
                .map(drop);
        };
        let give = sentinel::Give {
            keys: keys.clone(),
            args: args.clone(),
        };
        self.scripts.give.run(self.client(), keys, args).await?;
        recent.note_give(give);
        Ok(())
    }
}

/// An account lease for `give.lua`, and the session to bind to its account.
struct GiveAccount<'a> {
    account_id: &'a str,
    lease: &'a Lease,
    bind: Option<&'a Binding>,
}

/// A key lease for `give.lua`.
struct GiveKey<'a> {
    key_id: &'a str,
    lease: &'a Lease,
    /// Its holds as admitted; `None` makes the script look them up.
    reserved: Option<&'a [(SmolStr, u64)]>,
    used: &'a [(SmolStr, u64)],
}

/// `take.lua`'s sticky code.
fn sticky_of(code: i64) -> StoreResult<Sticky> {
    Ok(match code {
        0 => Sticky::None,
        1 => Sticky::Hit,
        2 => Sticky::Bound,
        3 => Sticky::Escaped,
        4 => Sticky::Moved,
        other => return Err(StoreError::Corrupt(format!("pick: sticky code {other}"))),
    })
}

/// An account's health as stored: JSON, or empty for a clean account.
fn parse_health(json: &str) -> StoreResult<Health> {
    if json.is_empty() {
        return Ok(Health::default());
    }
    decode(json, "account health")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_round_up_and_are_capped() {
        assert_eq!(deadline_ms(1_000, Duration::from_micros(1)), 1_001);
        assert_eq!(deadline_ms(1_000, Duration::from_millis(5)), 1_005);
        assert_eq!(deadline_ms(1_000, Duration::MAX), 1_000 + MAX_LEASE_TTL_MS);
        assert_eq!(ttl_ms(Duration::ZERO), 0);
        assert_eq!(ttl_ms(Duration::from_nanos(1)), 1);
    }

    #[test]
    fn counters_round_trip_in_field_order() {
        let c = Counters {
            requests: 1,
            input_tokens: 2,
            output_tokens: 3,
            cache_creation_input_tokens: 4,
            cache_creation_5m_input_tokens: 5,
            cache_creation_1h_input_tokens: 6,
            cache_read_input_tokens: 7,
            cost_nanousd: 8,
            images: 9,
            last_at: 10,
        };
        assert_eq!(counters_from(counter_values(&c), c.last_at), c);
    }
}
