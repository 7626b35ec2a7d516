//! Per-key admission: what a key may call, and one atomic store call that takes its concurrency
//! lease and reserves its estimated use on every limit counter; then the settle that replaces
//! the reservation with what the request really used.
//!
//! Leases are held by guards that give them back when dropped: on every path out of the relay
//! (an error before the upstream call, a failed attempt moving to another account, the end of
//! the response body, a client that went away) the counters return, exactly once. A client that
//! goes away while a lease is being taken is covered too (`run_to_end`). A key whose limits count
//! nothing skips the store entirely. A request still in progress renews its leases before they
//! expire (`KeyLease::renew_with`), so a stream longer than their ttl keeps counting.

pub mod access;
pub mod info;
pub mod meters;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::FutureExt;

use crate::app::App;
use crate::auth::new_id;
use crate::error::{ApiError, ErrorKind};
use crate::scheduler::health::family_of;
use crate::store::{
    AccountRelease, Admission, Admit, Binding, KeyRecord, KeyRenewal, KeySettle, Lease, MeterUse,
    Picked, Renewed, SmolStr, Store, StoreError, StoreResult, Taken,
};
use crate::usage::TokenUsage;
use meters::{Estimate, Families, Measure, Planned};

/// What admission needs to know of one request.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// `anthropic`, `openai`, `gemini` or `images` (`access::SURFACES`).
    pub surface: &'static str,
    /// The known client that sent it (`access::client_of`).
    pub client: Option<&'static str>,
    pub model: Option<&'a str>,
    /// The output tokens the request allows, when it says.
    pub max_tokens: Option<u64>,
    pub body_len: usize,
    /// Billed requests take a lease and count against the key's counters; the others (token
    /// counting, model lists) only pass the access checks.
    pub billed: bool,
    /// The cost to reserve when the caller knows better than the token estimate (image requests:
    /// images × their price).
    pub cost_nanousd: Option<u64>,
}

/// What a settled request really used.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Spent {
    /// 1 when the request was sent to an upstream (whatever came back, also when every account
    /// tried failed), else 0.
    pub requests: u64,
    pub tokens: u64,
    pub cost_nanousd: u64,
}

impl Spent {
    /// A request that reached an upstream and used nothing measured: a failure, a cached image.
    pub const ONE_REQUEST: Spent = Spent {
        requests: 1,
        tokens: 0,
        cost_nanousd: 0,
    };

    pub fn of(usage: &TokenUsage, cost_nanousd: u64) -> Spent {
        Spent {
            requests: 1,
            tokens: usage
                .input_tokens
                .saturating_add(usage.output_tokens)
                .saturating_add(usage.cache_creation_input_tokens)
                .saturating_add(usage.cache_read_input_tokens),
            cost_nanousd,
        }
    }
}

/// The key's lease of one request; settled explicitly with what the request used, or on drop
/// with what is known of it: one request once it was sent upstream (every attempt failed
/// without an answer, or the client left before one came), else nothing.
pub struct KeyLease {
    store: Arc<dyn Store>,
    key_id: String,
    lease: Lease,
    state: State,
    /// The counters it reserves on: bucket, what it measures, the reservation.
    meters: Vec<(SmolStr, Measure, u64)>,
    /// Sent to an upstream at least once (`mark_sent`).
    sent: bool,
}

enum State {
    /// Nothing to give back: an unbilled request, or a key whose limits count nothing.
    Free,
    /// Checked here, not yet taken in the store: the first pick takes it with the account
    /// (`Store::admit_and_pick`, one round trip for both), or `take` alone.
    Pending(Box<Pending>),
    /// Taken in the store: given back when settled or dropped.
    Held,
}

/// The code of the refusal of a key at its `max_concurrency` (`relay::failover` waits on it).
pub const CONCURRENCY_CODE: &str = "concurrency_limit";

/// What taking a pending lease needs, and what a refusal says.
struct Pending {
    admission: Admission,
    planned: Vec<Planned>,
    active_days: Option<u32>,
    tz: jiff::tz::TimeZone,
    /// What the plan was made of, to make it again (`KeyLease::replan`).
    family: Option<&'static str>,
    estimate: Estimate,
    ttl_ms: i64,
}

impl KeyLease {
    pub fn lease(&self) -> &Lease {
        &self.lease
    }

    /// The request is being sent upstream: dropped unsettled from now on, it counts as one
    /// request (the vendor counts it, and may bill it).
    pub fn mark_sent(&mut self) {
        self.sent = true;
    }

    /// Whether it was sent upstream (`mark_sent`).
    pub fn sent(&self) -> bool {
        self.sent
    }

    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// The lease an account takes for one attempt of this request. Each attempt has its own id,
    /// so a failed attempt gives back its account without touching the key's lease.
    pub fn attempt_lease(&self, attempt: u32) -> Lease {
        Lease {
            id: format!("{}.{attempt}", self.lease.id),
            ttl: self.lease.ttl,
        }
    }

    /// The pending admission (if it is still to take) planned again for now, from the key's
    /// `record`: a request that waited for a slot (`scheduler.queue_wait_secs`) is admitted to
    /// the windows, days and weeks of when it is taken, and refused if the key expired
    /// meanwhile.
    pub fn replan(&mut self, app: &App, record: &KeyRecord) -> Result<(), ApiError> {
        // Admitted already (a later attempt): the request goes on.
        if matches!(self.state, State::Held) {
            return Ok(());
        }
        access::expired(&record.limits, app.clock.now())?;
        let State::Pending(pending) = &mut self.state else {
            return Ok(());
        };
        let now_ms = app.clock.now_ms();
        let planned = meters::plan(
            &record.limits,
            now_ms,
            &app.calendar,
            Families::Of(pending.family),
            pending.estimate,
            pending.ttl_ms,
        )?;
        pending.admission.meters = admitted(&planned);
        pending.admission.now_ms = now_ms;
        self.meters = held(&planned);
        pending.planned = planned;
        Ok(())
    }

    /// The admission still to take in the store, if any: `Store::admit_and_pick` takes it with
    /// the first account, and then `taken` records the answer.
    pub fn pending(&self) -> Option<&Admission> {
        match &self.state {
            State::Pending(p) => Some(&p.admission),
            _ => None,
        }
    }

    /// Records what the store answered to the pending admission (`Store::admit_and_pick`) and
    /// hands on the pick: the lease is held once an account was picked; a refusal becomes the
    /// API's error; an admission granted but not kept (no account could serve) stays pending.
    pub fn taken(&mut self, answer: Taken) -> Result<Picked, ApiError> {
        match answer {
            Taken::Refused(admit) => Err(match &self.state {
                State::Pending(pending) => pending.refusal(&admit),
                _ => ApiError::internal("an admission was refused that was not pending"),
            }),
            Taken::Picked(picked) => {
                if matches!(picked, Picked::Account { .. }) {
                    self.state = State::Held;
                }
                Ok(picked)
            }
        }
    }

    /// Takes a pending admission on its own (a request that may end without an account).
    pub async fn take(&mut self) -> Result<(), ApiError> {
        let State::Pending(pending) = &self.state else {
            return Ok(());
        };
        let store = Arc::clone(&self.store);
        let (admission, lease) = (pending.admission.clone(), self.lease.clone());
        let unused = self.unused();
        let answer = run_to_end(
            &self.store,
            async move { store.admit(&admission, &lease).await },
            // Granted, or perhaps granted (an error).
            move |admit| {
                let held = admit.is_none_or(|a| matches!(a, Admit::Granted));
                (held.then_some(unused), Vec::new())
            },
        )
        .await
        .map_err(ApiError::store)?;
        match answer {
            Admit::Granted => {
                self.state = State::Held;
                Ok(())
            }
            refused => Err(pending.refusal(&refused)),
        }
    }

    /// What giving back the lease with nothing used sends: for a lease being taken, in case
    /// nobody is left to hold it (`run_to_end`).
    pub fn unused(&self) -> KeySettle {
        self.settlement(Spent::default())
    }

    /// Guards `lease`, which the store gave `account_id` for this request.
    pub fn account_lease(&self, account_id: &str, lease: Lease) -> AccountLease {
        AccountLease {
            store: Arc::clone(&self.store),
            release: Some(AccountRelease {
                key_id: self.key_id.clone(),
                account_id: account_id.to_owned(),
                lease,
            }),
        }
    }

    /// Keeps this lease and `account`'s from expiring while the request is still in progress
    /// (a stream that runs longer than their ttl): each one still held is extended to `now_ms`
    /// (this lease's clock, as at admission) + its ttl. In place on an in-memory store, else on a
    /// task of its own: the response body never waits on the store. A renewal that fails is not
    /// retried here: the caller renews well before the deadline (`relay::settle::renewal_period`), so the
    /// next one still comes in time.
    pub fn renew_with(&self, account: &AccountLease, now_ms: i64) {
        let key = matches!(self.state, State::Held).then(|| KeyRenewal {
            key_id: self.key_id.clone(),
            lease: self.lease.clone(),
            reserved: self
                .meters
                .iter()
                .map(|(bucket, _, reserve)| (bucket.clone(), *reserve))
                .collect(),
        });
        renew(&self.store, key, account.release.clone(), now_ms);
    }

    /// Ends the lease, counting what the request used on every counter it reserved on.
    pub fn settle(self, spent: Spent) {
        self.finish(None, spent, None);
    }

    /// Ends the lease and the account's in one store call, which also writes `bind` for that
    /// account: the answer made something only it holds (a stored response).
    pub fn settle_with(self, account: AccountLease, spent: Spent, bind: Option<Binding>) {
        self.finish(Some(account), spent, bind);
    }

    fn finish(mut self, account: Option<AccountLease>, spent: Spent, bind: Option<Binding>) {
        let key = self.give_back(spent);
        let account = account.and_then(|mut a| a.release.take());
        give_back(&self.store, key, account, bind);
    }

    /// What to give back of a held lease (it is then no longer held).
    fn give_back(&mut self, spent: Spent) -> Option<KeySettle> {
        if !matches!(self.state, State::Held) {
            return None;
        }
        self.state = State::Free;
        Some(self.settlement(spent))
    }

    /// The settle of this lease with `spent` used.
    fn settlement(&self, spent: Spent) -> KeySettle {
        let (reserved, used) = self
            .meters
            .iter()
            .map(|(bucket, measure, reserve)| {
                let amount = match measure {
                    Measure::Requests => spent.requests,
                    Measure::Tokens => spent.tokens,
                    Measure::Cost => spent.cost_nanousd,
                };
                ((bucket.clone(), *reserve), (bucket.clone(), amount))
            })
            .unzip();
        KeySettle {
            key_id: self.key_id.clone(),
            lease: self.lease.clone(),
            reserved,
            used,
        }
    }
}

impl Drop for KeyLease {
    fn drop(&mut self) {
        let spent = if self.sent {
            Spent::ONE_REQUEST
        } else {
            Spent::default()
        };
        let key = self.give_back(spent);
        give_back(&self.store, key, None, None);
    }
}

impl Pending {
    fn refusal(&self, admit: &Admit) -> ApiError {
        let now_ms = self.admission.now_ms;
        match admit {
            Admit::Granted => ApiError::internal("a granted admission read as a refusal"),
            Admit::ConcurrencyExceeded { limit } => ApiError::new(
                ErrorKind::RateLimited,
                format!("this key allows {limit} concurrent requests; wait for one to finish"),
            )
            .with_retry_after(1)
            .with_code(CONCURRENCY_CODE),
            Admit::Expired { first_used_at } => {
                let days = self.active_days.unwrap_or(0);
                ApiError::new(
                    ErrorKind::Permission,
                    format!(
                        "this API key was valid for {days} days from its first use ({}); it expired",
                        show_time(*first_used_at, &self.tz)
                    ),
                )
                .with_code("key_expired")
            }
            Admit::MeterFull { meter, usage } => {
                refusal(&self.tz, self.planned.get(*meter), *usage, now_ms)
            }
        }
    }
}

/// An account's lease for one attempt; released on drop.
pub struct AccountLease {
    store: Arc<dyn Store>,
    /// `None` once given back.
    release: Option<AccountRelease>,
}

impl Drop for AccountLease {
    fn drop(&mut self) {
        give_back(&self.store, None, self.release.take(), None);
    }
}

/// Gives leases back to the store (and binds `bind` to the account's): in place when the store
/// is in memory, else on a task that retries a few times while the store is unreachable (past
/// that the leases expire on their own after their ttl, and a settle's use and the binding are
/// lost: logged).
fn give_back(
    store: &Arc<dyn Store>,
    key: Option<KeySettle>,
    account: Option<AccountRelease>,
    bind: Option<Binding>,
) {
    if key.is_none() && account.is_none() {
        return;
    }
    if store.is_local() {
        // In memory: done in one poll, no task to spawn on the request path.
        let done = store
            .finish(key.as_ref(), account.as_ref(), bind.as_ref())
            .now_or_never();
        if matches!(done, Some(Ok(()))) {
            return;
        }
    }
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        // No runtime left (process exit): the leases expire on their own.
        return;
    };
    let store = Arc::clone(store);
    let counted = InFlight::enter();
    // Stopped by: success, or the last retry (a few seconds).
    runtime.spawn(async move {
        let _counted = counted;
        let mut delay = Duration::from_millis(200);
        for attempt in 1..=RELEASE_ATTEMPTS {
            match store
                .finish(key.as_ref(), account.as_ref(), bind.as_ref())
                .await
            {
                Ok(()) => return,
                Err(e) if attempt == RELEASE_ATTEMPTS => {
                    tracing::warn!(error = %e, key = ?key, account = ?account, bind = ?bind, "lease release failed; it will expire on its own");
                }
                Err(_) => {
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                }
            }
        }
    });
}

/// Renews the leases of a request in progress (`KeyLease::renew_with`).
fn renew(
    store: &Arc<dyn Store>,
    key: Option<KeyRenewal>,
    account: Option<AccountRelease>,
    now_ms: i64,
) {
    if key.is_none() && account.is_none() {
        return;
    }
    if store.is_local() {
        // In memory: done in one poll, no task to spawn.
        if let Some(answer) = store
            .renew(key.as_ref(), account.as_ref(), now_ms)
            .now_or_never()
        {
            renewed(answer, key.as_ref(), account.as_ref());
            return;
        }
    }
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let store = Arc::clone(store);
    // Stopped by: the end of the one store call (the store's own timeouts bound it).
    runtime.spawn(async move {
        let answer = store.renew(key.as_ref(), account.as_ref(), now_ms).await;
        renewed(answer, key.as_ref(), account.as_ref());
    });
}

/// Logs a renewal that did not extend every lease it was given.
fn renewed(
    answer: StoreResult<Renewed>,
    key: Option<&KeyRenewal>,
    account: Option<&AccountRelease>,
) {
    match answer {
        Ok(r) if r.key == key.is_some() && r.account == account.is_some() => {}
        Ok(r) => tracing::warn!(
            key = ?key.map(|k| (&k.key_id, &k.lease.id)),
            account = ?account.map(|a| (&a.account_id, &a.lease.id)),
            key_renewed = r.key,
            account_renewed = r.account,
            "a request still in progress lost a lease (it expired before it was renewed): it no longer counts against that concurrency limit"
        ),
        Err(e) => tracing::warn!(
            error = %e,
            key = ?key.map(|k| (&k.key_id, &k.lease.id)),
            account = ?account.map(|a| (&a.account_id, &a.lease.id)),
            "renewing the leases of a request in progress failed; the next renewal tries again"
        ),
    }
}

/// Give-backs running on a task of their own (a remote store's), in this process, and the
/// lease-taking calls of `run_to_end` whose give-back may follow: a stopping server waits for
/// them (`give_backs_done`) before its runtimes end, or their leases would stay held until their
/// deadline. Accounts' charges of their spend (`crate::budget::charge`) are counted too.
static GIVE_BACKS: AtomicUsize = AtomicUsize::new(0);

/// A give-back (or an account's charge: `crate::budget`) under way, which a graceful stop waits
/// for (`give_backs_done`).
pub(crate) struct InFlight;

impl InFlight {
    pub(crate) fn enter() -> InFlight {
        GIVE_BACKS.fetch_add(1, Ordering::Relaxed);
        InFlight
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        GIVE_BACKS.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Waits, at most `within`, until no give-back is running (their retries last a few seconds).
pub async fn give_backs_done(within: Duration) {
    let deadline = tokio::time::Instant::now() + within;
    while GIVE_BACKS.load(Ordering::Relaxed) > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// What a lease-taking store call took, to give back when nobody is left to hold it: the key's
/// lease and the account leases.
pub type Leftover = (Option<KeySettle>, Vec<AccountRelease>);

/// Runs `call`, a store call that takes leases, to its end even if the request awaiting it is
/// dropped meanwhile (its client hung up). A remote store's call runs on a task of its own; when
/// its answer finds nobody waiting, what it took (`leftover(Some(answer))`) is given back at
/// once. Otherwise a lease taken in Redis just as the client left would be held until its
/// deadline, counting against the key's and the account's concurrency caps all that time.
/// A call that failed (a command timeout) may have been run all the same: everything it could
/// have taken (`leftover(None)`) is given back; giving back a lease not held changes nothing.
/// An in-memory store answers in one poll, with nothing to cut short: awaited in place.
pub async fn run_to_end<T: Send + 'static>(
    store: &Arc<dyn Store>,
    call: impl Future<Output = StoreResult<T>> + Send + 'static,
    leftover: impl FnOnce(Option<&T>) -> Leftover + Send + 'static,
) -> StoreResult<T> {
    if store.is_local() {
        return call.await;
    }
    let (answer, wait) = tokio::sync::oneshot::channel();
    let store = Arc::clone(store);
    // Counted while the call runs, so that a stop waits for it and for the give-back it may
    // start (counted on its own before this count ends): its waiter may be a request closed at
    // the end of the stop's grace period.
    let counted = InFlight::enter();
    // Stopped by: the call's end (the store's own timeouts bound it).
    tokio::spawn(async move {
        let _counted = counted;
        let result = call.await;
        if result.is_err() {
            give_back_all(&store, leftover(None));
            let _ = answer.send(result);
        } else if let Err(Ok(taken)) = answer.send(result) {
            give_back_all(&store, leftover(Some(&taken)));
        }
    });
    wait.await.unwrap_or_else(|_| {
        Err(StoreError::Unavailable(
            "the store call was cut short".into(),
        ))
    })
}

fn give_back_all(store: &Arc<dyn Store>, (key, accounts): Leftover) {
    let mut accounts = accounts.into_iter();
    give_back(store, key, accounts.next(), None);
    for account in accounts {
        give_back(store, None, Some(account), None);
    }
}

/// Tries to release a lease this many times (over about 6 s) while the store is unreachable.
const RELEASE_ATTEMPTS: u32 = 5;

/// What `request` is expected to use at most: the body's size as input tokens (at
/// `bytes_per_token`) plus the output it allows, at the model's prices.
pub fn estimate(app: &App, request: &Request<'_>) -> Estimate {
    let input = input_estimate(app, request.body_len);
    let output = request
        .max_tokens
        .unwrap_or(app.config.limits.default_max_tokens);
    let usage = TokenUsage {
        input_tokens: input,
        output_tokens: output,
        ..TokenUsage::default()
    };
    Estimate {
        tokens: input.saturating_add(output),
        cost_nanousd: request.cost_nanousd.unwrap_or_else(|| {
            request
                .model
                .map_or(0, |m| app.pricing().cost(m, &usage).nanousd)
        }),
    }
}

/// The input tokens a request body of `body_len` bytes is taken to hold (`bytes_per_token`).
pub fn input_estimate(app: &App, body_len: usize) -> u64 {
    u64::try_from(body_len)
        .unwrap_or(u64::MAX)
        .div_ceil(app.config.limits.bytes_per_token.max(1))
}

/// Checks what the key may do and, for a billed request, takes its lease and reserves its
/// estimated use on every counter of its limits, in one store call.
pub async fn admit(
    app: &App,
    key: &KeyRecord,
    request: &Request<'_>,
) -> Result<KeyLease, ApiError> {
    let mut lease = check(app, key, request)?;
    lease.take().await?;
    Ok(lease)
}

/// Checks what the key may do and plans, for a billed request, its lease and a reservation of
/// its estimated use on every counter of its limits, without a store call: the lease is taken
/// with the request's first account (`scheduler::pick`), or by `KeyLease::take`.
pub fn check(app: &App, key: &KeyRecord, request: &Request<'_>) -> Result<KeyLease, ApiError> {
    let limits = &key.limits;
    let now_ms = app.clock.now_ms();
    access::check(
        limits,
        app.clock.now(),
        request.surface,
        request.client,
        request.model,
    )?;
    let ttl = Duration::from_secs(app.config.relay.lease_ttl_secs);
    let mut lease = KeyLease {
        store: Arc::clone(app.store()),
        key_id: key.id.clone(),
        lease: Lease {
            id: new_id("lease"),
            ttl,
        },
        state: State::Free,
        meters: Vec::new(),
        sent: false,
    };
    if !request.billed {
        return Ok(lease);
    }
    let family = request.model.and_then(family_of);
    let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
    let request_estimate = estimate(app, request);
    let planned = meters::plan(
        limits,
        now_ms,
        &app.calendar,
        Families::Of(family),
        request_estimate,
        ttl_ms,
    )?;
    let admission = Admission {
        key_id: key.id.clone(),
        max_concurrency: limits.max_concurrency,
        meters: admitted(&planned),
        valid_after_first_use_ms: limits
            .active_days
            .map(|d| i64::from(d).saturating_mul(86_400_000)),
        now_ms,
    };
    // Nothing to check or count: no store call on the request path.
    if admission.max_concurrency.is_none()
        && admission.meters.is_empty()
        && admission.valid_after_first_use_ms.is_none()
    {
        return Ok(lease);
    }
    lease.meters = held(&planned);
    lease.state = State::Pending(Box::new(Pending {
        admission,
        planned,
        active_days: limits.active_days,
        tz: app.calendar.tz().clone(),
        family,
        estimate: request_estimate,
        ttl_ms,
    }));
    Ok(lease)
}

/// The meters an admission of `planned` asks the store for.
fn admitted(planned: &[Planned]) -> Vec<crate::store::Meter> {
    planned.iter().map(|p| p.meter.clone()).collect()
}

/// What a lease of `planned` holds on each counter, to give back or settle.
fn held(planned: &[Planned]) -> Vec<(SmolStr, Measure, u64)> {
    planned
        .iter()
        .map(|p| (p.meter.bucket.clone(), p.measure, p.meter.reserve))
        .collect()
}

/// The error for a counter without room: 429 while it resets soon or requests in flight hold
/// the rest, a budget error (not retried by clients) when it is spent until a day, week or
/// never.
fn refusal(
    tz: &jiff::tz::TimeZone,
    planned: Option<&Planned>,
    usage: MeterUse,
    now_ms: i64,
) -> ApiError {
    let Some(p) = planned else {
        return ApiError::internal("admission refused by an unknown counter");
    };
    let limit = show_amount(p.measure, p.meter.limit);
    let used = show_amount(p.measure, usage.used);
    let resets = p.period.map(|(_, end)| end);
    let retry_after = |at: i64| {
        u64::try_from((at - now_ms).max(1_000))
            .unwrap_or(1_000)
            .div_ceil(1_000)
    };
    if usage.used < p.meter.limit {
        // What is left is reserved by requests in flight; their settles free most of it.
        return ApiError::new(
            ErrorKind::RateLimited,
            format!(
                "this key's {} limit of {limit} is reserved by requests in flight ({used} used); retry when they finish",
                p.name
            ),
        )
        .with_retry_after(2)
        .with_code("limit_reserved");
    }
    let when = resets.map_or_else(
        || "it does not reset".to_owned(),
        |at| format!("it resets at {}", show_time(at, tz)),
    );
    let message = format!(
        "this key's {} limit of {limit} is reached ({used} used); {when}",
        p.name
    );
    if p.name.starts_with("window") {
        let err = ApiError::new(ErrorKind::RateLimited, message).with_code("rate_limit_exceeded");
        match resets {
            Some(at) => err.with_retry_after(retry_after(at)),
            None => err,
        }
    } else {
        ApiError::new(ErrorKind::QuotaExceeded, message).with_code("budget_exceeded")
    }
}

/// `$1.234567` for nano-USD, plain numbers for requests and tokens.
pub fn show_amount(measure: Measure, amount: u64) -> String {
    match measure {
        Measure::Cost => format!(
            "${}.{:06}",
            amount / 1_000_000_000,
            (amount % 1_000_000_000) / 1_000
        ),
        Measure::Requests => format!("{amount} requests"),
        Measure::Tokens => format!("{amount} tokens"),
    }
}

/// An instant in the limits' time zone for a message: RFC 3339 followed by the zone's name
/// (`2026-11-23T00:00:00+09:00[Asia/Tokyo]`, RFC 9557).
pub fn show_time(ms: i64, tz: &jiff::tz::TimeZone) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .map(|t| t.to_zoned(tz.clone()).to_string())
        .unwrap_or_else(|_| ms.to_string())
}

/// An instant in the limits' time zone for a JSON field: plain RFC 3339 with the zone's offset
/// (`2026-11-23T00:00:00+09:00`), which every client's date parser reads (JavaScript's `Date`
/// and Python's `fromisoformat` refuse the zone's name in brackets).
pub fn json_time(ms: i64, tz: &jiff::tz::TimeZone) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .map(|t| {
            let offset = tz.to_offset(t);
            t.display_with_offset(offset).to_string()
        })
        .unwrap_or_else(|_| ms.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(clippy::unwrap_used)]
    fn times_in_json_are_plain_rfc_3339_with_the_offset() {
        let tokyo = jiff::tz::TimeZone::get("Asia/Tokyo").unwrap();
        let ms = "2026-11-22T15:00:00Z"
            .parse::<jiff::Timestamp>()
            .unwrap()
            .as_millisecond();
        assert_eq!(json_time(ms, &tokyo), "2026-11-23T00:00:00+09:00");
        assert_eq!(
            show_time(ms, &tokyo),
            "2026-11-23T00:00:00+09:00[Asia/Tokyo]"
        );
        assert_eq!(
            json_time(ms, &jiff::tz::TimeZone::UTC),
            "2026-11-22T15:00:00+00:00"
        );
        let back: jiff::Timestamp = json_time(ms + 250, &tokyo).parse().unwrap();
        assert_eq!(back.as_millisecond(), ms + 250);
    }

    #[test]
    fn amounts_read_as_dollars() {
        assert_eq!(show_amount(Measure::Cost, 5_000_000_000), "$5.000000");
        assert_eq!(show_amount(Measure::Cost, 1_234_567_890), "$1.234567");
        assert_eq!(show_amount(Measure::Requests, 3), "3 requests");
    }

    #[test]
    fn spent_counts_every_token_kind() {
        let u = TokenUsage {
            input_tokens: 1,
            output_tokens: 2,
            cache_creation_input_tokens: 4,
            cache_read_input_tokens: 8,
            ..TokenUsage::default()
        };
        assert_eq!(
            Spent::of(&u, 9),
            Spent {
                requests: 1,
                tokens: 15,
                cost_nanousd: 9
            }
        );
    }
}
