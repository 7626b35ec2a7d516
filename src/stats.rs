//! Usage statistics: aggregated in memory, written to the store in one batch per interval.
//!
//! The relay hands each finished request to `Stats::record`, which only appends it to a shared
//! inbox: nothing on the request path waits for the store, or wakes another thread. One task
//! owns the aggregate; every `flush_interval` (and on `flush`, and at shutdown) it empties the
//! inbox into it and writes what accumulated in one `Store::record_usage` call. A failed write
//! keeps the batch and retries it, unchanged and under the same id, so acknowledged usage is
//! neither lost nor counted twice while the store is unavailable; see `Writer`. Each tick also
//! lets the store delete some usage buckets past their retention (`Store::prune_usage`).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use foldhash::HashMap;
use jiff::Timestamp;
use tokio::sync::{mpsc, oneshot};

use crate::store::{Bucket, Counters, Dimension, RequestLogEntry, Store, UsageBatch, buckets_of};

enum Msg {
    Flush(oneshot::Sender<()>),
    /// Flush, then stop: the task lets go of the store.
    Stop(oneshot::Sender<()>),
}

/// A handle to the stats task; cheap to clone.
#[derive(Clone)]
pub struct Stats {
    tx: mpsc::UnboundedSender<Msg>,
    inbox: Arc<Inbox>,
}

/// Finished requests not yet taken by the task. A channel would wake the task (on another
/// thread, most of the time) once per request; the inbox is emptied on the task's own schedule.
#[derive(Default)]
struct Inbox(Mutex<Queued>);

#[derive(Default)]
struct Queued {
    /// False once the task stopped taking: what comes after is lost (and counted).
    closed: bool,
    requests: Vec<(RequestLogEntry, bool)>,
}

impl Inbox {
    /// A poisoned lock is recovered: no code panics while holding it.
    fn lock(&self) -> std::sync::MutexGuard<'_, Queued> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Everything queued so far; with `close`, nothing is accepted afterwards.
    fn take(&self, close: bool) -> Vec<(RequestLogEntry, bool)> {
        let mut queued = self.lock();
        queued.closed |= close;
        std::mem::take(&mut queued.requests)
    }
}

impl Stats {
    /// Starts the aggregating task. It stops, after a final flush, on `stop` or when every
    /// `Stats` handle has been dropped.
    pub fn spawn(store: Arc<dyn Store>, interval: Duration, max_pending_requests: usize) -> Stats {
        let (tx, rx) = mpsc::unbounded_channel();
        let cfg = Limits {
            interval,
            max_pending_requests,
        };
        let inbox = Arc::new(Inbox::default());
        // Stopped by: `Stats::stop` at shutdown, or the last handle being dropped.
        tokio::spawn(run(store, cfg, rx, Arc::clone(&inbox)));
        Stats { tx, inbox }
    }

    /// Counts a finished request. `billed` requests add to the usage counters; every request
    /// goes to the request log.
    pub fn record(&self, entry: RequestLogEntry, billed: bool) {
        {
            let mut queued = self.inbox.lock();
            // A task that ended without closing the inbox (its runtime went away) drops its
            // receiver: nothing would ever take the entry.
            if !queued.closed && !self.tx.is_closed() {
                queued.requests.push((entry, billed));
                return;
            }
        }
        tracing::error!("usage recorded after the stats task stopped; it is lost");
        metrics::counter!(crate::metrics::USAGE_DROPPED).increment(1);
    }

    /// Returns once everything recorded before this call has been written to the store (or the
    /// write failed and was kept for retry).
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Msg::Flush(tx)).is_ok() {
            let _ = rx.await;
        }
    }

    /// Writes everything recorded so far and stops the task. Usage recorded afterwards is lost
    /// (and counted in `switchyard_usage_dropped_total`).
    pub async fn stop(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Msg::Stop(tx)).is_ok() {
            let _ = rx.await;
        }
    }
}

async fn run(
    store: Arc<dyn Store>,
    cfg: Limits,
    mut rx: mpsc::UnboundedReceiver<Msg>,
    inbox: Arc<Inbox>,
) {
    let mut w = Writer {
        store,
        cfg,
        pending: Pending::default(),
        sealed: None,
    };
    let mut ticker = tokio::time::interval(cfg.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            msg = rx.recv() => match msg {
                Some(Msg::Flush(done)) => {
                    w.take(&inbox, false);
                    w.write().await;
                    let _ = done.send(());
                }
                Some(Msg::Stop(done)) => {
                    // Whatever was recorded before the stop still counts; nothing after it.
                    w.take(&inbox, true);
                    rx.close();
                    while let Some(Msg::Flush(other) | Msg::Stop(other)) = rx.recv().await {
                        let _ = other.send(());
                    }
                    w.finish().await;
                    let _ = done.send(());
                    return;
                }
                None => break,
            },
            _ = ticker.tick() => {
                w.take(&inbox, false);
                w.write().await;
                w.prune().await;
            }
        }
    }
    w.take(&inbox, true);
    w.finish().await;
}

#[derive(Clone, Copy)]
struct Limits {
    interval: Duration,
    /// Request-log entries kept in memory while the store cannot be written.
    max_pending_requests: usize,
}

/// At most two batches: `sealed`, written (or tried) at least once and retried unchanged under
/// its id, and `pending`, aggregating everything since (in its compact form, expanded when
/// sealed). New usage never merges into a batch the
/// store may have partly applied, so a retry cannot count anything twice; and memory stays
/// bounded by the number of distinct counters plus `max_pending_requests` log entries in each
/// batch.
struct Writer {
    store: Arc<dyn Store>,
    cfg: Limits,
    pending: Pending,
    sealed: Option<UsageBatch>,
}

impl Writer {
    /// Adds what the inbox holds.
    fn take(&mut self, inbox: &Inbox, close: bool) {
        for (entry, billed) in inbox.take(close) {
            self.add(entry, billed);
        }
    }

    fn add(&mut self, entry: RequestLogEntry, billed: bool) {
        self.pending.add(entry, billed);
        // The counters (what is billed) are kept; only the pending batch's oldest log lines go
        // (the sealed batch is retried unchanged). Counting the sealed batch's lines too would
        // drop every new line once it was full: the log would keep the outage's start and
        // lose the rest.
        let queued = self.pending.requests.len();
        if queued > self.cfg.max_pending_requests {
            let n = queued - self.cfg.max_pending_requests;
            self.pending.requests.drain(..n);
            metrics::counter!(crate::metrics::USAGE_DROPPED).increment(n as u64);
            tracing::error!(
                dropped = n,
                "the store is unavailable and the request log backlog is full; oldest entries dropped"
            );
        }
    }

    /// Writes the sealed batch, then seals and writes the pending one. Stops at the first
    /// failure; what failed stays for the next try.
    async fn write(&mut self) {
        loop {
            if self.sealed.is_none() {
                if self.pending.is_empty() {
                    return;
                }
                let mut batch = std::mem::take(&mut self.pending).into_batch();
                batch.id = rand::random();
                self.sealed = Some(batch);
            }
            let Some(batch) = &self.sealed else { return };
            match self.store.record_usage(batch).await {
                Ok(()) => self.sealed = None,
                Err(e) => {
                    tracing::warn!(error = %e, "usage write failed; kept for the next flush");
                    return;
                }
            }
        }
    }

    fn is_empty(&self) -> bool {
        self.sealed.is_none() && self.pending.is_empty()
    }

    /// Lets the store delete a few usage buckets past their retention, and do its upkeep.
    async fn prune(&self) {
        if let Err(e) = self.store.upkeep().await {
            tracing::warn!(error = %e, "store upkeep failed; tried again next tick");
        }
        match self
            .store
            .prune_usage(Timestamp::now().as_millisecond())
            .await
        {
            Ok(0) => {}
            Ok(deleted) => tracing::debug!(deleted, "expired usage buckets deleted"),
            Err(e) => tracing::warn!(error = %e, "usage prune failed; tried again next tick"),
        }
    }

    /// At shutdown: keeps trying for a short while (the store may be restarting), then gives up
    /// loudly.
    async fn finish(&mut self) {
        let deadline = tokio::time::Instant::now() + SHUTDOWN_RETRY;
        self.write().await;
        while !self.is_empty() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(self.cfg.interval.max(Duration::from_millis(100))).await;
            self.write().await;
        }
        if !self.is_empty() {
            let requests =
                self.pending.requests.len() + self.sealed.as_ref().map_or(0, |b| b.requests.len());
            tracing::error!(
                requests,
                "the store was unavailable at shutdown; unwritten usage is lost"
            );
        }
    }
}

/// How long a stopping relay keeps retrying usage writes.
const SHUTDOWN_RETRY: Duration = Duration::from_secs(5);

/// Usage since the last seal, in the form that is cheap to add to: one set of counters per
/// (key, account, model, UTC hour), the names interned. `into_batch` expands each group into
/// every dimension (all, key, account, model) and every bucket (hour, day, month, total), which
/// gives the same counters as adding each request to all of them would.
#[derive(Default)]
struct Pending {
    groups: HashMap<Group, Counters>,
    names: Names,
    requests: Vec<RequestLogEntry>,
}

/// Interned key, account and model: the index of the name in `Names::list`.
type Name = u32;

/// (key, account, model, hour since the epoch).
type Group = (Name, Option<Name>, Name, i64);

#[derive(Default)]
struct Names {
    ids: HashMap<String, Name>,
    list: Vec<String>,
}

impl Names {
    fn id(&mut self, name: &str) -> Name {
        if let Some(&id) = self.ids.get(name) {
            return id;
        }
        let id = self.list.len() as Name;
        self.list.push(name.to_owned());
        self.ids.insert(name.to_owned(), id);
        id
    }

    fn name(&self, id: Name) -> String {
        self.list.get(id as usize).cloned().unwrap_or_default()
    }
}

const HOUR_MS: i64 = 3_600_000;

/// An instant in the hour `hour` (counted from the epoch) that `buckets_of` accepts: its start,
/// or for the first hour of the range (which does not start on an hour) the range's start.
fn hour_start(hour: i64) -> i64 {
    (hour * HOUR_MS).max(Timestamp::MIN.as_millisecond())
}

impl Pending {
    fn add(&mut self, entry: RequestLogEntry, billed: bool) {
        if billed {
            // What `buckets_of` does with an instant out of range, done here: the hour then
            // names the same buckets as the instant itself (see `hour_start`).
            let at = if Timestamp::from_millisecond(entry.at).is_ok() {
                entry.at
            } else {
                0
            };
            let group = (
                self.names.id(&entry.key_id),
                entry.account_id.as_deref().map(|a| self.names.id(a)),
                self.names.id(&entry.model),
                at.div_euclid(HOUR_MS),
            );
            self.groups.entry(group).or_default().add(&Counters::of(
                &entry.usage,
                entry.cost_nanousd,
                entry.at,
            ));
        }
        self.requests.push(entry);
    }

    fn is_empty(&self) -> bool {
        self.groups.is_empty() && self.requests.is_empty()
    }

    /// The batch for the store (its `id` left for the caller to set).
    fn into_batch(self) -> UsageBatch {
        let mut counters: BTreeMap<(Dimension, Bucket), Counters> = BTreeMap::new();
        let mut buckets: HashMap<i64, [Bucket; 4]> = HashMap::default();
        for ((key, account, model, hour), sum) in self.groups {
            let buckets = buckets
                .entry(hour)
                .or_insert_with(|| buckets_of(hour_start(hour)));
            let dims = [
                Some(Dimension::All),
                Some(Dimension::Key(self.names.name(key))),
                account.map(|a| Dimension::Account(self.names.name(a))),
                Some(Dimension::Model(self.names.name(model))),
            ];
            for dim in dims.into_iter().flatten() {
                for bucket in buckets.iter() {
                    counters
                        .entry((dim.clone(), bucket.clone()))
                        .or_default()
                        .add(&sum);
                }
            }
        }
        UsageBatch {
            id: 0,
            counters,
            requests: self.requests,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_named_by_their_utc_start() {
        // 2026-11-22T08:30:00Z
        let at = 1_795_336_200_000;
        let b = buckets_of(at);
        assert_eq!(b[0], Bucket::Hour("2026-11-22T08".into()));
        assert_eq!(b[1], Bucket::Day("2026-11-22".into()));
        assert_eq!(b[2], Bucket::Month("2026-11".into()));
        assert_eq!(b[3], Bucket::Total);
    }

    fn entry(
        id: &str,
        at: i64,
        key: &str,
        account: Option<&str>,
        model: &str,
        n: u64,
    ) -> RequestLogEntry {
        RequestLogEntry {
            request_id: id.into(),
            at,
            key_id: key.into(),
            account_id: account.map(Into::into),
            model: model.into(),
            surface: "anthropic".into(),
            status: 200,
            latency_ms: 5,
            ttfb_ms: Some(1),
            usage: crate::usage::TokenUsage {
                input_tokens: n,
                output_tokens: 2 * n,
                cache_creation_input_tokens: n % 3,
                cache_creation_5m_input_tokens: n % 2,
                cache_creation_1h_input_tokens: n % 5,
                cache_read_input_tokens: n % 7,
                images: n % 4,
                web_search_requests: 0,
            },
            cost_nanousd: 10 * n + 1,
            cache_hit: false,
            estimated: false,
        }
    }

    fn batch_of(entries: &[(RequestLogEntry, bool)]) -> UsageBatch {
        let mut pending = Pending::default();
        for (e, billed) in entries {
            pending.add(e.clone(), *billed);
        }
        pending.into_batch()
    }

    /// What each request used to add: every dimension times every bucket of its instant.
    fn reference_batch(entries: &[(RequestLogEntry, bool)]) -> UsageBatch {
        let mut batch = UsageBatch::default();
        for (entry, billed) in entries {
            if *billed {
                let counters = Counters::of(&entry.usage, entry.cost_nanousd, entry.at);
                let mut dims = vec![Dimension::All, Dimension::Key(entry.key_id.clone())];
                if let Some(account) = &entry.account_id {
                    dims.push(Dimension::Account(account.clone()));
                }
                dims.push(Dimension::Model(entry.model.clone()));
                for dim in dims {
                    for bucket in buckets_of(entry.at) {
                        batch
                            .counters
                            .entry((dim.clone(), bucket))
                            .or_default()
                            .add(&counters);
                    }
                }
            }
            batch.requests.push(entry.clone());
        }
        batch
    }

    /// While the store is out, the newest log lines are kept: the sealed batch's lines stay
    /// (it is retried as it was), the pending batch keeps its last `max_pending_requests`.
    #[tokio::test]
    async fn a_full_backlog_drops_the_oldest_pending_lines_not_the_newest() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> =
            Arc::new(crate::store::embedded::EmbeddedStore::open(dir.path(), 100).unwrap());
        let at = 1_795_336_200_000;
        let mut w = Writer {
            store,
            cfg: Limits {
                interval: Duration::from_secs(1),
                max_pending_requests: 2,
            },
            pending: Pending::default(),
            sealed: Some(batch_of(&[
                (entry("s1", at, "k", None, "m", 1), true),
                (entry("s2", at, "k", None, "m", 1), true),
            ])),
        };
        for id in ["p1", "p2", "p3", "p4"] {
            w.add(entry(id, at, "k", None, "m", 1), true);
        }
        let ids = |requests: &[RequestLogEntry]| -> Vec<String> {
            requests.iter().map(|e| e.request_id.clone()).collect()
        };
        assert_eq!(ids(&w.pending.requests), ["p3", "p4"]);
        assert_eq!(ids(&w.sealed.as_ref().unwrap().requests), ["s1", "s2"]);
        // Every request is still counted.
        let total =
            w.pending.into_batch().counters[&(Dimension::Key("k".into()), Bucket::Total)].requests;
        assert_eq!(total, 4);
    }

    #[test]
    fn a_billed_request_counts_in_every_dimension_and_bucket() {
        let e = entry("r1", 1_795_336_200_000, "k", Some("a"), "m", 3);
        let batch = batch_of(&[(e.clone(), true), (e, false)]);
        assert_eq!(batch.counters.len(), 4 * 4);
        let total = batch.counters[&(Dimension::Key("k".into()), Bucket::Total)];
        assert_eq!(
            (total.requests, total.input_tokens, total.output_tokens),
            (1, 3, 6)
        );
        assert_eq!(total.cost_nanousd, 31);
        assert_eq!(
            batch.requests.len(),
            2,
            "unbilled requests are still logged"
        );
    }

    #[test]
    fn the_batch_is_what_adding_each_request_to_every_bucket_gives() {
        // 2026-11-30T23:59:59.999Z, then the next month, day and hour; and an hour later.
        let end_of_month = 1_796_083_199_999;
        let instants = [
            end_of_month - 3_600_000,
            end_of_month,
            end_of_month + 1,
            end_of_month + 3_600_001,
            1_795_336_200_000,
            0,
            -1,
            // Out of jiff's range (counted at the epoch), and the range's ends.
            i64::MAX,
            i64::MIN,
            Timestamp::MIN.as_millisecond(),
            Timestamp::MAX.as_millisecond(),
            Timestamp::MAX.as_millisecond() - 999,
        ];
        let mut entries = Vec::new();
        let mut n = 0;
        for (i, at) in instants.into_iter().enumerate() {
            for key in ["k1", "k2"] {
                for account in [Some("a1"), Some("a2"), None] {
                    for model in ["m1", "m2", "k1"] {
                        n += 1;
                        let e = entry(&format!("r{n}"), at, key, account, model, n);
                        entries.push((e, !(n + i as u64).is_multiple_of(5)));
                    }
                }
            }
        }
        let batch = batch_of(&entries);
        let reference = reference_batch(&entries);
        for (k, v) in &reference.counters {
            assert_eq!(batch.counters.get(k), Some(v), "{k:?}");
        }
        assert_eq!(batch.counters.len(), reference.counters.len());
        assert_eq!(batch, reference);
        assert!(batch.counters.contains_key(&(
            Dimension::Account("a2".into()),
            Bucket::Month("2026-12".into())
        )));
        assert_eq!(batch_of(&[]), UsageBatch::default());
        assert!(Pending::default().is_empty());
    }

    /// The inbox is taken by `flush` and by `stop` without the task being woken per request;
    /// what comes after the stop is not written.
    #[tokio::test]
    async fn flush_and_stop_write_what_was_recorded_before_them_and_nothing_after() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> =
            Arc::new(crate::store::embedded::EmbeddedStore::open(dir.path(), 100).unwrap());
        // No tick during the test: only `flush` and `stop` write.
        let stats = Stats::spawn(Arc::clone(&store), Duration::from_secs(3600), 1_000);
        let logged = || async {
            let mut ids: Vec<String> = store
                .recent_requests(&crate::store::RequestFilter::ALL, 10)
                .await
                .unwrap()
                .into_iter()
                .map(|e| e.request_id)
                .collect();
            ids.sort();
            ids
        };
        let at = 1_795_336_200_000;
        stats.record(entry("a", at, "k", Some("acc"), "m", 1), true);
        stats.flush().await;
        assert_eq!(logged().await, ["a"]);
        stats.record(entry("b", at + 1, "k", Some("acc"), "m", 2), true);
        stats.stop().await;
        assert_eq!(logged().await, ["a", "b"]);
        stats.record(entry("c", at + 2, "k", Some("acc"), "m", 3), true);
        stats.flush().await;
        assert_eq!(logged().await, ["a", "b"]);
        assert!(
            stats.inbox.lock().requests.is_empty(),
            "nothing kept after the stop"
        );
    }
}
