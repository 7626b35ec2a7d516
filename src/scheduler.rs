//! Choosing the upstream account for a request.
//!
//! Candidates are the enabled, schedulable accounts of the right provider whose model globs
//! admit the model (any account, when there is no model), less those this request already
//! tried. The store makes the choice atomically by `policy::choose` (health, caps, the session's
//! binding, priority, relative load, least recently picked) and takes the account's lease with it;
//! `report` feeds upstream answers back into the account's health. See docs/scheduler.md.

pub mod health;
pub mod policy;
pub mod session;

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use crate::catalog::{Account, Catalog};
use crate::config::{SchedulerConfig, StickyOverflow};
use crate::error::{ApiError, ErrorKind};
use crate::limits::{AccountLease, KeyLease, run_to_end};
use crate::store::{
    self, AccountRelease, Candidate, HealthChange, KeyBinding, Lease, PickRequest, Protocol,
    Provider, SessionPick, Taken,
};

use self::health::Verdict;
use self::policy::{Report, Status, Sticky};
use crate::app::App;
use crate::notify::{Event, Notice};

/// The account serving one attempt, and its lease.
pub struct Picked {
    pub account: Arc<Account>,
    pub lease: AccountLease,
    pub sticky: Sticky,
    /// The account's health was not clean: its outcome must be reported even on success.
    pub degraded: bool,
    /// Unix ms of the pick, just before the request is sent: a success reported for it says
    /// nothing of errors that came after (`Report::Success::sent_at`).
    pub at_ms: i64,
}

/// What a request asks of the scheduler.
pub struct Ask<'a> {
    /// Accounts speaking this protocol can serve.
    pub protocol: Protocol,
    /// `None`: any account of the protocol (e.g. listing models).
    pub model: Option<&'a str>,
    /// The request's session (`session::identify`), if any.
    pub session: Option<&'a session::Session>,
    /// The key's dedicated accounts, if it has any.
    pub binding: Option<&'a KeyBinding>,
    /// Accounts already tried by this request.
    pub exclude: &'a [String],
    /// 1 for the first attempt.
    pub attempt: u32,
    /// ChatGPT accounts may serve the call (`providers::chatgpt::serves`): they are offered for
    /// no other.
    pub chatgpt: bool,
    /// Code Assist accounts may serve the call (`providers::code_assist::serves`): they are
    /// offered for no other.
    pub code_assist: bool,
    /// An earlier attempt of this request bound the session (it had none, or it moved): the
    /// binding follows the request to the account that serves it, whatever
    /// `scheduler.sticky_overflow` says (an escape would leave a new session bound to the
    /// account that just failed it, and its prompt cache built elsewhere).
    pub rebind: bool,
}

pub async fn pick(
    catalog: &Catalog,
    policy: &SchedulerConfig,
    ask: &Ask<'_>,
    key: &mut KeyLease,
) -> Result<Picked, ApiError> {
    let Some(binding) = ask.binding else {
        return pick_from(catalog, policy, ask, key, |_| true).await;
    };
    let bound = |a: &Account| {
        binding.accounts.iter().any(|id| id == a.id())
            || (binding.group.is_some() && a.record.group == binding.group)
    };
    // Not after a store error: the call may have taken leases under the same ids, which are
    // being given back; a second call with those ids would lose its own to that give-back.
    let cannot_serve = |e: &ApiError| {
        matches!(e.kind, ErrorKind::Unavailable | ErrorKind::NotFound)
            && e.code != Some(ApiError::STORE_CODE)
    };
    match pick_from(catalog, policy, ask, key, bound).await {
        // The dedicated accounts cannot serve (or all failed): the shared pool, if allowed.
        Err(e) if binding.fallback && cannot_serve(&e) => {
            pick_from(catalog, policy, ask, key, |_| true).await
        }
        Err(mut e) if cannot_serve(&e) => {
            e.message = format!("{} (this key is bound to dedicated accounts)", e.message);
            Err(e)
        }
        other => other,
    }
}

/// Picks among the accounts `allowed` admits.
async fn pick_from(
    catalog: &Catalog,
    policy: &SchedulerConfig,
    ask: &Ask<'_>,
    key: &mut KeyLease,
    allowed: impl Fn(&Account) -> bool,
) -> Result<Picked, ApiError> {
    let accounts = catalog.accounts();
    // A ChatGPT or Code Assist account takes only the calls its backend serves.
    let takes_call = |a: &Account| match a.record.provider {
        Provider::ChatGpt => ask.chatgpt,
        Provider::CodeAssist => ask.code_assist,
        _ => true,
    };
    let serving: Vec<&Arc<Account>> = accounts
        .iter()
        .filter(|a| {
            a.record.provider.protocol() == ask.protocol
                && match ask.model {
                    Some(m) => a.serves(m),
                    // Bedrock has Anthropic's model calls, not its other endpoints (the list).
                    None => a.record.provider != Provider::Bedrock,
                }
                && takes_call(a)
        })
        .filter(|a| allowed(a))
        .collect();
    let mut candidates: Vec<Candidate> = serving
        .iter()
        .filter(|a| a.record.enabled && a.record.schedulable)
        .map(|a| {
            // An account this request already tried stays a candidate without capacity: it
            // cannot serve again, but a session bound to it is recognised (it escapes or moves
            // by the policy) instead of being treated as bound to an account that is gone.
            let tried = ask.exclude.iter().any(|id| id == a.id());
            Candidate {
                account_id: a.record.id.clone(),
                priority: a.record.priority,
                max_concurrency: if tried {
                    Some(0)
                } else {
                    a.record.max_concurrency
                },
                weight: a.record.weight,
                serves: true,
            }
        })
        .collect();
    // A session bound to an account that does not serve this model (Claude Code's small-model
    // calls, in a session bound to an Opus-only account) keeps its binding, under either
    // policy: the pick must find that account too, without capacity, or it reads the binding
    // as one to an account that is gone and rebinds the session, and its cache, elsewhere.
    // So too a session bound to a ChatGPT account, for a call that account does not serve.
    if ask.session.is_some_and(|s| !s.stored_response)
        && let Some(model) = ask.model
    {
        candidates.extend(
            accounts
                .iter()
                .filter(|a| {
                    a.record.provider.protocol() == ask.protocol
                        && (!a.serves(model) || !takes_call(a))
                        && allowed(a)
                        && a.record.enabled
                        && a.record.schedulable
                })
                .map(|a| Candidate {
                    account_id: a.record.id.clone(),
                    priority: a.record.priority,
                    max_concurrency: Some(0),
                    weight: a.record.weight,
                    serves: false,
                }),
        );
    }
    let model = ask.model.unwrap_or("(any)");
    if serving.is_empty() {
        // As the vendor answers a model it does not have: a 404, which clients do not retry
        // (a 503 they would, for as long as no account is added).
        return Err(ApiError::not_found(format!(
            "no upstream account serves model {model}"
        )));
    }
    if candidates.iter().all(|c| c.max_concurrency == Some(0)) {
        let message = if ask.exclude.is_empty() {
            format!(
                "no upstream account for model {model} is available now: every one is disabled or unschedulable"
            )
        } else {
            format!("no other upstream account for model {model} is available")
        };
        return Err(ApiError::new(ErrorKind::Unavailable, message));
    }
    let now_ms = jiff::Timestamp::now().as_millisecond();
    let order = PickOrder {
        candidates,
        family: limit_scope(ask.protocol, ask.model),
        session: ask.session.map(|session| {
            // A stored response's binding is written when an answer made the response
            // (`relay::settle`), and only read by a pick: naming ids costs a key holder nothing
            // (a fetch is not billed), so it leaves nothing behind, and it never moves or
            // shortens the binding of the account that holds the response.
            let stored = session.stored_response;
            OrderSession {
                id: session.id.clone(),
                ttl: Duration::from_secs(policy.sticky_ttl_secs),
                move_on_overflow: !stored
                    && (policy.sticky_overflow == StickyOverflow::Move || ask.rebind),
                write: !stored,
            }
        }),
        now_ms,
    };
    let lease = key.attempt_lease(ask.attempt);
    let store = catalog.store();
    let picked = if store.is_local() {
        // In memory: answered in one poll, nothing to cut short, nothing to clone.
        match key.pending() {
            Some(admission) => {
                let taken = store
                    .admit_and_pick(admission, key.lease(), &order.request(), &lease)
                    .await
                    .map_err(ApiError::store)?;
                key.taken(taken)?
            }
            None => store
                .pick_account(&order.request(), &lease)
                .await
                .map_err(ApiError::store)?,
        }
    } else {
        pick_remote(store, key, order, &lease).await?
    };
    let (id, sticky, degraded) = match picked {
        store::Picked::Account {
            id,
            sticky,
            degraded,
        } => (id, sticky, degraded),
        store::Picked::Unavailable { retry_at } => {
            let mut err = ApiError::new(
                ErrorKind::Unavailable,
                format!(
                    "no upstream account for model {model} can take a request now (rate limited, cooling down or at capacity)"
                ),
            );
            if let Some(at) = retry_at {
                let secs = ((at - now_ms).max(0) + 999) / 1000;
                err = err.with_retry_after(u64::try_from(secs).unwrap_or(1).max(1));
            }
            return Err(err);
        }
    };
    let lease = key.account_lease(&id, lease);
    let account = serving
        .into_iter()
        .find(|a| a.record.id == id)
        .cloned()
        .ok_or_else(|| ApiError::internal("the store picked an unknown account"))?;
    Ok(Picked {
        account,
        lease,
        sticky,
        degraded,
        at_ms: now_ms,
    })
}

/// What a rate limit of a request for `model` may be scoped to besides the whole account (the
/// `family` a pick asks about): Anthropic's limits are the account's, some named for a model
/// family (`opus`); OpenAI's and Google's are each model's own.
fn limit_scope(protocol: Protocol, model: Option<&str>) -> Option<Cow<'static, str>> {
    let model = model?;
    match protocol {
        Protocol::Anthropic => health::family_of(model).map(Cow::Borrowed),
        Protocol::OpenAi | Protocol::Gemini => Some(Cow::Owned(model.to_owned())),
    }
}

/// A verdict scoped as the vendor scopes its limits: a 429 whose answer names a limit of the
/// model asked for (OpenAI's, Google's: `Verdict::RateLimited::per_model`), any Azure 429
/// (its limits are each deployment's) and any Code Assist 429 (a Google login's quotas are each
/// model's), holds for that model only: the account goes on serving its other models (Gemini
/// CLI falls back from Pro to Flash on a 429). A Bedrock throttle holds
/// for the model's family (its quotas are each model's: a spent Sonnet quota leaves Claude
/// Code's Haiku calls served). An Anthropic 429 is scoped as its headers say; any other holds
/// for the whole account.
pub fn scoped(verdict: Verdict, provider: Provider, model: Option<&str>) -> Verdict {
    match verdict {
        Verdict::RateLimited {
            until_ms,
            family: None,
            per_model,
        } if provider == Provider::Bedrock => Verdict::RateLimited {
            until_ms,
            family: limit_scope(Protocol::Anthropic, model),
            per_model,
        },
        Verdict::RateLimited {
            until_ms,
            family: None,
            per_model,
        } if provider.protocol() != Protocol::Anthropic
            && (per_model || matches!(provider, Provider::AzureOpenAi | Provider::CodeAssist)) =>
        {
            Verdict::RateLimited {
                until_ms,
                family: limit_scope(provider.protocol(), model),
                per_model,
            }
        }
        verdict => verdict,
    }
}

/// The store call of a pick on a remote store, run to its end even if the request is dropped
/// meanwhile (`limits::run_to_end`): it owns what it asks.
async fn pick_remote(
    store: &Arc<dyn store::Store>,
    key: &mut KeyLease,
    order: PickOrder,
    lease: &Lease,
) -> Result<store::Picked, ApiError> {
    let order = Arc::new(order);
    // What is left to give back should this request be gone when the store answers: the picked
    // account's lease; if the call failed, a lease on any candidate it may have picked.
    let account = {
        let (key_id, lease, order) = (key.key_id().to_owned(), lease.clone(), Arc::clone(&order));
        move |picked: Option<&store::Picked>| {
            let release = |account_id: &str| AccountRelease {
                key_id: key_id.clone(),
                account_id: account_id.to_owned(),
                lease: lease.clone(),
            };
            match picked {
                Some(store::Picked::Account { id, .. }) => vec![release(id)],
                Some(store::Picked::Unavailable { .. }) => Vec::new(),
                None => order
                    .candidates
                    .iter()
                    .map(|c| release(&c.account_id))
                    .collect(),
            }
        }
    };
    let (shared, account_lease) = (Arc::clone(store), lease.clone());
    // The key's admission, still pending on the first attempt, is taken with the account: one
    // store call for both.
    match key.pending() {
        Some(admission) => {
            let (admission, key_lease, unused) =
                (admission.clone(), key.lease().clone(), key.unused());
            let taken = run_to_end(
                store,
                async move {
                    let request = order.request();
                    shared
                        .admit_and_pick(&admission, &key_lease, &request, &account_lease)
                        .await
                },
                move |taken| match taken {
                    Some(Taken::Picked(picked)) => match account(Some(picked)) {
                        accounts if accounts.is_empty() => (None, accounts),
                        accounts => (Some(unused), accounts),
                    },
                    Some(Taken::Refused(_)) => (None, Vec::new()),
                    None => (Some(unused), account(None)),
                },
            )
            .await
            .map_err(ApiError::store)?;
            key.taken(taken)
        }
        None => run_to_end(
            store,
            async move { shared.pick_account(&order.request(), &account_lease).await },
            move |picked| (None, account(picked)),
        )
        .await
        .map_err(ApiError::store),
    }
}

/// What a pick asks, owned, so that a remote store's call can outlive the request
/// (`limits::run_to_end`).
struct PickOrder {
    candidates: Vec<Candidate>,
    family: Option<Cow<'static, str>>,
    session: Option<OrderSession>,
    now_ms: i64,
}

/// `SessionPick`, owned.
struct OrderSession {
    id: String,
    ttl: Duration,
    move_on_overflow: bool,
    write: bool,
}

impl PickOrder {
    fn request(&self) -> PickRequest<'_> {
        PickRequest {
            candidates: &self.candidates,
            family: self.family.as_deref(),
            session: self.session.as_ref().map(|s| SessionPick {
                id: &s.id,
                ttl: s.ttl,
                move_on_overflow: s.move_on_overflow,
                write: s.write,
            }),
            now_ms: self.now_ms,
        }
    }
}

/// Records what an upstream answer says about the account. Successes of clean accounts are not
/// written: nothing would change, and the hot path stays at one store call after the response.
pub async fn report(
    app: &App,
    policy: &SchedulerConfig,
    picked: &Picked,
    verdict: &Verdict,
    error: impl FnOnce() -> String,
) {
    report_for(
        app,
        policy,
        picked.account.id(),
        picked.degraded.then_some(picked.at_ms),
        verdict,
        error,
    )
    .await;
}

/// An account refused a request (a 403) that another account then served: the refusal was the
/// account's, and it is reported failing.
pub async fn report_refusal(app: &App, policy: &SchedulerConfig, account_id: &str) {
    report_for(app, policy, account_id, None, &Verdict::Failing, || {
        "refused (403) a request that another account served".to_owned()
    })
    .await;
}

/// `degraded_since`: when the request was sent, if the account's health was not clean then (a
/// success is reported only for such an account). The change it made is told to the operators
/// (`crate::notify`).
async fn report_for(
    app: &App,
    policy: &SchedulerConfig,
    account_id: &str,
    degraded_since: Option<i64>,
    verdict: &Verdict,
    error: impl FnOnce() -> String,
) {
    let now_ms = jiff::Timestamp::now().as_millisecond();
    let report = match verdict {
        Verdict::Healthy => match degraded_since {
            Some(sent_at) => Report::Success { sent_at },
            None => return,
        },
        Verdict::ClientFault | Verdict::Refused | Verdict::Elsewhere => return,
        Verdict::RateLimited {
            until_ms, family, ..
        } => Report::RateLimited {
            until: *until_ms,
            family: family.as_deref().map(str::to_owned),
            error: error(),
        },
        Verdict::Overloaded => Report::Overloaded {
            until: now_ms.saturating_add(secs_ms(policy.overload_cooldown_secs)),
            error: error(),
        },
        // Out of credit: the longest cooldown, then tried again (someone may have paid).
        Verdict::Exhausted => Report::Overloaded {
            until: now_ms.saturating_add(secs_ms(policy.failure_cooldown_max_secs)),
            error: error(),
        },
        Verdict::Failing => Report::Failure {
            base_ms: policy.failure_cooldown_secs.saturating_mul(1000),
            max_ms: policy.failure_cooldown_max_secs.saturating_mul(1000),
            error: error(),
        },
        Verdict::Unauthorized => Report::Unauthorized { error: error() },
    };
    if !matches!(report, Report::Success { .. }) {
        tracing::warn!(account_id, ?verdict, "upstream account marked");
    }
    metrics::counter!(crate::metrics::ACCOUNT_REPORTS, "kind" => report_kind(&report)).increment(1);
    match app.store().report_health(account_id, &report, now_ms).await {
        Ok(change) => tell(app, account_id, verdict, &change, now_ms),
        Err(e) => {
            tracing::warn!(account_id, error = %e, "could not record the account's health");
        }
    }
}

/// Tells the operators of the change `report` made to the account's health, if it made one
/// they hear of.
fn tell(app: &App, account_id: &str, verdict: &Verdict, change: &HealthChange, now: i64) {
    let (before, after) = (&change.before, &change.after);
    let failures = app.notify.failures();
    let Some(event) = Event::of_report(verdict, before, after, now, failures) else {
        return;
    };
    let accounts = app.catalog.accounts();
    let Some(account) = accounts.iter().find(|a| a.id() == account_id) else {
        return;
    };
    // A subscription's refusal starts a renewal, which usually ends it (or may even have come
    // before it: `relay::failover` takes such a report back); one that cannot be renewed is
    // told as `OAuthGrantRefused`.
    if event == Event::AccountUnauthorized && account.record.oauth.is_some() {
        return;
    }
    let until = match after.status {
        Status::RateLimited | Status::CoolingDown => Some(after.until),
        Status::Ok | Status::Unauthorized => None,
    };
    let detail = after.last_error.clone().unwrap_or_default();
    app.notify
        .tell(Notice::of(&account.record, event, until, detail, now));
}

fn report_kind(report: &Report) -> &'static str {
    match report {
        Report::Success { .. } => "success",
        Report::RateLimited { .. } => "rate_limited",
        Report::Overloaded { .. } => "overloaded",
        Report::Failure { .. } => "failure",
        Report::Unauthorized { .. } => "unauthorized",
        Report::BudgetSpent { .. } | Report::BudgetSet { .. } => "budget",
        Report::Cleared => "cleared",
    }
}

fn secs_ms(secs: u64) -> i64 {
    i64::try_from(secs.saturating_mul(1000)).unwrap_or(i64::MAX / 4)
}

#[cfg(test)]
#[allow(clippy::panic)]
mod tests {
    use super::*;

    fn limited(per_model: bool) -> Verdict {
        Verdict::RateLimited {
            until_ms: 5,
            family: None,
            per_model,
        }
    }

    fn family(verdict: Verdict) -> Option<String> {
        match verdict {
            Verdict::RateLimited { family, .. } => family.map(Cow::into_owned),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_429_holds_for_the_model_where_the_vendor_limits_each_model() {
        let model = Some("m-1");
        let scope = |v, p| family(scoped(v, p, model));
        assert_eq!(scope(limited(true), Provider::OpenAi), Some("m-1".into()));
        assert_eq!(scope(limited(true), Provider::Gemini), Some("m-1".into()));
        // Azure's limits are each deployment's, whatever its answer says.
        assert_eq!(
            scope(limited(false), Provider::AzureOpenAi),
            Some("m-1".into())
        );
        // A Google login's quotas are each model's.
        assert_eq!(
            scope(limited(false), Provider::CodeAssist),
            Some("m-1".into())
        );
        // Nothing names the model: the whole account.
        assert_eq!(scope(limited(false), Provider::OpenAi), None);
        assert_eq!(scope(limited(false), Provider::Gemini), None);
        // Anthropic: as its headers said (here: for all).
        assert_eq!(scope(limited(true), Provider::Anthropic), None);
        // A family already named stays.
        let opus = Verdict::RateLimited {
            until_ms: 5,
            family: Some("opus".into()),
            per_model: false,
        };
        assert_eq!(scope(opus, Provider::Anthropic), Some("opus".into()));
        assert_eq!(
            scoped(Verdict::Failing, Provider::OpenAi, model),
            Verdict::Failing
        );
    }
}
