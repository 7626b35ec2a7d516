//! A store that fails when a test says: a wrapper around the store the relay was configured
//! with, for the store errors the real one cannot be made to have at a chosen moment (one pick
//! failing, the next one answered).
#![allow(dead_code)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use switchyard::scheduler::policy::Report;
use switchyard::store::{
    AccountRecord, AccountRelease, AccountRuntime, Admission, Admit, Binding, Change, Counters,
    HealthChange, KeyRecord, KeyRenewal, KeySettle, KeyState, Lease, PickRequest, Picked, Renewed,
    RequestFilter, RequestLogEntry, SmolStr, SpendBucket, Store, StoreError, StoreResult, Taken,
    UsageBatch, UsageQuery,
};

/// What the test tells the store and reads back; shared with the store the relay runs on.
#[derive(Debug, Default)]
pub struct Faults {
    /// Picks still to fail.
    failing_picks: AtomicU32,
    /// Picks asked of the store (`pick_account`, `admit_and_pick`), failed or not.
    picks: AtomicU32,
    /// Account writes (`update_account_checked`) still to fail.
    failing_account_writes: AtomicU32,
}

impl Faults {
    /// The next pick fails; the one after is answered.
    pub fn fail_next_pick(&self) {
        self.failing_picks.fetch_add(1, Ordering::SeqCst);
    }

    /// The next account write fails (before the real store is asked).
    pub fn fail_next_account_write(&self) {
        self.failing_account_writes.fetch_add(1, Ordering::SeqCst);
    }

    pub fn picks(&self) -> u32 {
        self.picks.load(Ordering::SeqCst)
    }
}

pub struct FaultyStore {
    inner: Arc<dyn Store>,
    faults: Arc<Faults>,
}

impl FaultyStore {
    pub fn wrap(inner: Arc<dyn Store>, faults: Arc<Faults>) -> Arc<dyn Store> {
        Arc::new(FaultyStore { inner, faults })
    }

    /// Counts a pick, and fails it if one is to fail. It fails before the real store is asked:
    /// nothing is taken, so a second pick right after it (a fallback) would be answered.
    fn pick(&self) -> StoreResult<()> {
        self.faults.picks.fetch_add(1, Ordering::SeqCst);
        let fails = self
            .faults
            .failing_picks
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if fails {
            return Err(StoreError::Unavailable(
                "injected by the test: the pick failed".into(),
            ));
        }
        Ok(())
    }
}

#[async_trait]
impl Store for FaultyStore {
    async fn ping(&self) -> StoreResult<()> {
        self.inner.ping().await
    }
    async fn start_worker(&self, worker: usize) -> StoreResult<()> {
        self.inner.start_worker(worker).await
    }
    fn is_local(&self) -> bool {
        self.inner.is_local()
    }
    async fn insert_key(&self, key: &KeyRecord) -> StoreResult<()> {
        self.inner.insert_key(key).await
    }
    async fn key(&self, id: &str) -> StoreResult<Option<KeyRecord>> {
        self.inner.key(id).await
    }
    async fn key_by_hash(&self, hash: &str) -> StoreResult<Option<KeyRecord>> {
        self.inner.key_by_hash(hash).await
    }
    async fn keys(&self) -> StoreResult<Vec<KeyRecord>> {
        self.inner.keys().await
    }
    async fn update_key(&self, key: &KeyRecord) -> StoreResult<bool> {
        self.inner.update_key(key).await
    }
    async fn delete_key(&self, id: &str) -> StoreResult<bool> {
        self.inner.delete_key(id).await
    }
    async fn insert_account(&self, account: &AccountRecord) -> StoreResult<()> {
        self.inner.insert_account(account).await
    }
    async fn account(&self, id: &str) -> StoreResult<Option<AccountRecord>> {
        self.inner.account(id).await
    }
    async fn accounts(&self) -> StoreResult<Vec<AccountRecord>> {
        self.inner.accounts().await
    }
    async fn update_account_checked(&self, account: &AccountRecord) -> StoreResult<bool> {
        let fails = self
            .faults
            .failing_account_writes
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if fails {
            return Err(StoreError::Unavailable(
                "injected by the test: the account write failed".into(),
            ));
        }
        self.inner.update_account_checked(account).await
    }
    async fn claim(&self, name: &str, owner: &str, ttl: Duration) -> StoreResult<bool> {
        self.inner.claim(name, owner, ttl).await
    }
    async fn unclaim(&self, name: &str, owner: &str) -> StoreResult<()> {
        self.inner.unclaim(name, owner).await
    }
    async fn delete_account(&self, id: &str) -> StoreResult<bool> {
        self.inner.delete_account(id).await
    }
    async fn account_runtime(&self, id: &str) -> StoreResult<AccountRuntime> {
        self.inner.account_runtime(id).await
    }
    async fn admit(&self, admission: &Admission, lease: &Lease) -> StoreResult<Admit> {
        self.inner.admit(admission, lease).await
    }
    async fn pick_account(&self, request: &PickRequest<'_>, lease: &Lease) -> StoreResult<Picked> {
        self.pick()?;
        self.inner.pick_account(request, lease).await
    }
    async fn admit_and_pick(
        &self,
        admission: &Admission,
        key_lease: &Lease,
        request: &PickRequest<'_>,
        account_lease: &Lease,
    ) -> StoreResult<Taken> {
        self.pick()?;
        self.inner
            .admit_and_pick(admission, key_lease, request, account_lease)
            .await
    }
    async fn report_health(
        &self,
        account_id: &str,
        report: &Report,
        now_ms: i64,
    ) -> StoreResult<HealthChange> {
        self.inner.report_health(account_id, report, now_ms).await
    }
    async fn reset_health(&self, account_id: &str) -> StoreResult<()> {
        self.inner.reset_health(account_id).await
    }
    async fn add_spend(
        &self,
        owner: &str,
        buckets: &[SpendBucket],
        amount: u64,
        charge: &str,
    ) -> StoreResult<Vec<u64>> {
        self.inner.add_spend(owner, buckets, amount, charge).await
    }
    async fn raise_spend(
        &self,
        owner: &str,
        bucket: &SpendBucket,
        at_least: u64,
    ) -> StoreResult<u64> {
        self.inner.raise_spend(owner, bucket, at_least).await
    }
    async fn spend(&self, owner: &str, buckets: &[SmolStr]) -> StoreResult<Vec<u64>> {
        self.inner.spend(owner, buckets).await
    }
    async fn settle(
        &self,
        key_id: &str,
        lease: &Lease,
        used: &[(SmolStr, u64)],
    ) -> StoreResult<()> {
        self.inner.settle(key_id, lease, used).await
    }
    async fn key_state(&self, key_id: &str, buckets: &[SmolStr]) -> StoreResult<KeyState> {
        self.inner.key_state(key_id, buckets).await
    }
    async fn release(
        &self,
        key_id: &str,
        account_id: Option<&str>,
        lease: &Lease,
    ) -> StoreResult<()> {
        self.inner.release(key_id, account_id, lease).await
    }
    async fn renew(
        &self,
        key: Option<&KeyRenewal>,
        account: Option<&AccountRelease>,
        now_ms: i64,
    ) -> StoreResult<Renewed> {
        self.inner.renew(key, account, now_ms).await
    }
    async fn finish(
        &self,
        key: Option<&KeySettle>,
        account: Option<&AccountRelease>,
        bind: Option<&Binding>,
    ) -> StoreResult<()> {
        self.inner.finish(key, account, bind).await
    }
    async fn record_usage(&self, batch: &UsageBatch) -> StoreResult<()> {
        self.inner.record_usage(batch).await
    }
    async fn usage(&self, query: &UsageQuery) -> StoreResult<Vec<Counters>> {
        self.inner.usage(query).await
    }
    async fn upkeep(&self) -> StoreResult<()> {
        self.inner.upkeep().await
    }
    async fn prune_usage(&self, now_ms: i64) -> StoreResult<usize> {
        self.inner.prune_usage(now_ms).await
    }
    async fn recent_requests(
        &self,
        filter: &RequestFilter<'_>,
        limit: usize,
    ) -> StoreResult<Vec<RequestLogEntry>> {
        self.inner.recent_requests(filter, limit).await
    }
    async fn flush(&self) -> StoreResult<()> {
        self.inner.flush().await
    }
    async fn share_prices(&self, json: &str) -> StoreResult<bool> {
        self.inner.share_prices(json).await
    }
    async fn shared_prices(&self) -> StoreResult<Option<String>> {
        self.inner.shared_prices().await
    }
    fn changes(&self) -> Option<tokio::sync::broadcast::Receiver<Change>> {
        self.inner.changes()
    }
}
