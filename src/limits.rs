//! Per-key admission: what a key may call, and one atomic store call that takes its concurrency
//! lease and reserves its estimated use on every limit counter; then the settle that replaces
//! the reservation with what the request really used.
//!
//! Leases are held by guards that give them back when dropped: on every path out of the relay
//! (an error before the upstream call, a failed attempt moving to another account, the end of
//! the response body, a client that went away) the counters return, exactly once. A key whose
//! limits count nothing skips the store entirely.

pub mod access;
pub mod info;
pub mod meters;

use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;

use crate::app::App;
use crate::auth::new_id;
use crate::error::{ApiError, ErrorKind};
use crate::scheduler::health::family_of;
use crate::store::{Admission, Admit, KeyRecord, Lease, MeterUse, Store};
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
    /// 1 when the request reached an upstream, else 0.
    pub requests: u64,
    pub tokens: u64,
    pub cost_nanousd: u64,
}

impl Spent {
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
/// with nothing used (it never reached an upstream).
pub struct KeyLease {
    release: Release,
    /// The counters the lease reserved on, to settle.
    meters: Vec<(String, Measure)>,
}

impl KeyLease {
    pub fn lease(&self) -> &Lease {
        &self.release.lease
    }

    pub fn key_id(&self) -> &str {
        &self.release.key_id
    }

    /// The lease an account takes for one attempt of this request. Each attempt has its own id,
    /// so a failed attempt gives back its account without touching the key's lease.
    pub fn attempt_lease(&self, attempt: u32) -> Lease {
        Lease {
            id: format!("{}.{attempt}", self.release.lease.id),
            ttl: self.release.lease.ttl,
        }
    }

    /// Guards `lease`, which the store gave `account_id` for this request.
    pub fn account_lease(&self, account_id: &str, lease: Lease) -> AccountLease {
        AccountLease(Release {
            held: true,
            store: Arc::clone(&self.release.store),
            key_id: self.release.key_id.clone(),
            account_id: Some(account_id.to_owned()),
            lease,
            used: Vec::new(),
        })
    }

    /// Ends the lease, counting what the request used on every counter it reserved on.
    pub fn settle(mut self, spent: Spent) {
        self.release.used = self
            .meters
            .iter()
            .map(|(bucket, measure)| {
                let amount = match measure {
                    Measure::Requests => spent.requests,
                    Measure::Tokens => spent.tokens,
                    Measure::Cost => spent.cost_nanousd,
                };
                (bucket.clone(), amount)
            })
            .collect();
        // Dropping `self` settles.
    }
}

/// An account's lease for one attempt; released on drop.
pub struct AccountLease(Release);

impl AccountLease {
    pub fn lease(&self) -> &Lease {
        &self.0.lease
    }
}

struct Release {
    /// `false` for a key lease that was never taken: dropping it calls nothing.
    held: bool,
    store: Arc<dyn Store>,
    key_id: String,
    /// Set for account leases: the lease is the account's, not the key's.
    account_id: Option<String>,
    lease: Lease,
    /// For a key lease: what to add to each counter when it settles.
    used: Vec<(String, u64)>,
}

impl Drop for Release {
    fn drop(&mut self) {
        if !self.held {
            return;
        }
        let store = Arc::clone(&self.store);
        let key_id = std::mem::take(&mut self.key_id);
        let account_id = self.account_id.take();
        let used = std::mem::take(&mut self.used);
        let lease = self.lease.clone();
        if store.is_local() {
            // In memory: done in one poll, no task to spawn on the request path.
            let done = match &account_id {
                Some(account) => store.release(&key_id, Some(account), &lease).now_or_never(),
                None => store.settle(&key_id, &lease, &used).now_or_never(),
            };
            if matches!(done, Some(Ok(()))) {
                return;
            }
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            // No runtime left (process exit): the leases expire on their own.
            return;
        };
        // Stopped by: success, or the last retry (a few seconds); past that the lease expires
        // on its own after its ttl (and a settle's use is lost: logged).
        runtime.spawn(async move {
            let mut delay = Duration::from_millis(200);
            for attempt in 1..=RELEASE_ATTEMPTS {
                let done = match &account_id {
                    Some(account) => store.release(&key_id, Some(account), &lease).await,
                    None => store.settle(&key_id, &lease, &used).await,
                };
                match done {
                    Ok(()) => return,
                    Err(e) if attempt == RELEASE_ATTEMPTS => {
                        tracing::warn!(error = %e, lease = %lease.id, key_id = %key_id, used = ?used, "lease release failed; it will expire on its own");
                    }
                    Err(_) => {
                        tokio::time::sleep(delay).await;
                        delay *= 2;
                    }
                }
            }
        });
    }
}

/// Tries to release a lease this many times (over about 6 s) while the store is unreachable.
const RELEASE_ATTEMPTS: u32 = 5;

/// What `request` is expected to use at most: the body's size as input tokens (at
/// `bytes_per_token`) plus the output it allows, at the model's prices.
pub fn estimate(app: &App, request: &Request<'_>) -> Estimate {
    let limits = &app.config.limits;
    let input = u64::try_from(request.body_len)
        .unwrap_or(u64::MAX)
        .div_ceil(limits.bytes_per_token.max(1));
    let output = request.max_tokens.unwrap_or(limits.default_max_tokens);
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

/// Checks what the key may do and, for a billed request, takes its lease and reserves its
/// estimated use on every counter of its limits, in one store call.
pub async fn admit(
    app: &App,
    key: &KeyRecord,
    request: &Request<'_>,
) -> Result<KeyLease, ApiError> {
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
    let lease = Lease {
        id: new_id("lease"),
        ttl,
    };
    let store = app.store();
    let unheld = |lease: Lease| KeyLease {
        release: Release {
            held: false,
            store: Arc::clone(store),
            key_id: key.id.clone(),
            account_id: None,
            lease,
            used: Vec::new(),
        },
        meters: Vec::new(),
    };
    if !request.billed {
        return Ok(unheld(lease));
    }
    let family = request.model.and_then(family_of);
    let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
    let planned = meters::plan(
        limits,
        now_ms,
        &app.calendar,
        Families::Of(family),
        estimate(app, request),
        ttl_ms,
    )?;
    let admission = Admission {
        key_id: key.id.clone(),
        max_concurrency: limits.max_concurrency,
        meters: planned.iter().map(|p| p.meter.clone()).collect(),
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
        return Ok(unheld(lease));
    }
    let answer = store.admit(&admission, &lease).await.map_err(|e| {
        ApiError::new(
            ErrorKind::Unavailable,
            format!("the store is unavailable: {e}"),
        )
    })?;
    match answer {
        Admit::Granted => Ok(KeyLease {
            release: Release {
                held: true,
                store: Arc::clone(store),
                key_id: key.id.clone(),
                account_id: None,
                lease,
                used: Vec::new(),
            },
            meters: planned
                .into_iter()
                .map(|p| (p.meter.bucket, p.measure))
                .collect(),
        }),
        Admit::ConcurrencyExceeded { limit } => Err(ApiError::new(
            ErrorKind::RateLimited,
            format!("this key allows {limit} concurrent requests; wait for one to finish"),
        )
        .with_retry_after(1)
        .with_code("concurrency_limit")),
        Admit::Expired { first_used_at } => {
            let days = limits.active_days.unwrap_or(0);
            Err(ApiError::new(
                ErrorKind::Permission,
                format!(
                    "this API key was valid for {days} days from its first use ({}); it expired",
                    show_time(first_used_at, app.calendar.tz())
                ),
            )
            .with_code("key_expired"))
        }
        Admit::MeterFull { meter, usage } => Err(refusal(app, planned.get(meter), usage, now_ms)),
    }
}

/// The error for a counter without room: 429 while it resets soon or requests in flight hold
/// the rest, a budget error (not retried by clients) when it is spent until a day, week or
/// never.
fn refusal(app: &App, planned: Option<&Planned>, usage: MeterUse, now_ms: i64) -> ApiError {
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
        |at| format!("it resets at {}", show_time(at, app.calendar.tz())),
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

/// An instant in the limits' time zone, RFC 3339 with the zone.
pub fn show_time(ms: i64, tz: &jiff::tz::TimeZone) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .map(|t| t.to_zoned(tz.clone()).to_string())
        .unwrap_or_else(|_| ms.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

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
