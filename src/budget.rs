//! Account budgets: what an upstream account may cost per calendar day and per calendar month
//! (`daily_cost_nanousd`, `monthly_cost_nanousd` on its record), in `[limits] timezone`.
//!
//! Each request of an account with a budget adds its cost to the account's spend counters for
//! the period it started in when it ends (`Store::add_spend`: one atomic addition per period,
//! shared by every instance, named by the request so that a retried call counts once), off the
//! request's way. The request whose cost reaches a budget takes the account out of rotation
//! until that period ends: `Health::budget_until`, apart from the vendor's verdicts (neither
//! lifts the other), which every instance's pick honours at once and `Retry-After` tells.
//! Requests already running finish: a budget is overshot by what they cost, as a vendor's hard
//! limit would be. A key's budgets (docs/limits.md) are reserved before the request instead; an
//! account's cannot be without a store call on every request's way, before its account is
//! even known.
//!
//! `review` sets an account's exclusion from its budgets and spend as they are (after an
//! admin's change, and at start: the embedded store keeps health in memory only), counting what
//! the period spent before the budget was given from the account's usage.

use std::sync::Arc;
use std::time::Instant;

use serde_json::{Value, json};
use smol_str::{SmolStr, format_smolstr};

use crate::app::App;
use crate::limits::meters::{DayAndMonth, Measure};
use crate::limits::{json_time, show_amount, show_time};
use crate::notify::{Event, Notice};
use crate::scheduler::policy::{Health, Report};
use crate::store::{
    AccountRecord, Dimension, HealthChange, SpendBucket, StoreError, UsageQuery, buckets_of,
};

/// A spend counter is kept this long past its period: the cost of a request that started in
/// it and ends after it still adds to it.
const KEEP_MS: i64 = 86_400_000;

/// How much later than before an exclusion must end for the operators to hear of it again
/// (a daily budget's rest that a monthly budget made last to the month's end): more than two
/// clocks read a moment apart move it.
const LATER_MS: i64 = 60_000;

/// An account's budgets; `Budget::of` is `None` for an account without one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Budget {
    pub daily: Option<u64>,
    pub monthly: Option<u64>,
}

impl Budget {
    pub fn of(record: &AccountRecord) -> Option<Budget> {
        let budget = Budget {
            daily: record.daily_cost_nanousd,
            monthly: record.monthly_cost_nanousd,
        };
        (budget.daily.is_some() || budget.monthly.is_some()).then_some(budget)
    }
}

/// One budget as it stands at an instant: its counter and the period it counts.
#[derive(Debug)]
struct Period {
    name: &'static str,
    bucket: SmolStr,
    limit: u64,
    /// Unix ms on the limits' clock (`App::clock`), end exclusive.
    span: (i64, i64),
}

impl Period {
    fn counter(&self) -> SpendBucket {
        SpendBucket {
            name: self.bucket.clone(),
            expires_at: self.span.1.saturating_add(KEEP_MS),
        }
    }
}

fn periods(app: &App, budget: Budget, at_ms: i64) -> Result<Vec<Period>, StoreError> {
    let DayAndMonth {
        day,
        day_span,
        month,
        month_span,
    } = app
        .calendar
        .day_and_month(at_ms)
        .map_err(|e| StoreError::Unavailable(e.to_string()))?;
    let each = [
        (
            "daily",
            budget.daily,
            format_smolstr!("day:{day}"),
            day_span,
        ),
        (
            "monthly",
            budget.monthly,
            format_smolstr!("month:{month}"),
            month_span,
        ),
    ];
    Ok(each
        .into_iter()
        .filter_map(|(name, limit, bucket, span)| {
            Some(Period {
                name,
                bucket,
                limit: limit?,
                span,
            })
        })
        .collect())
}

/// Adds what a request of the account cost (started at `started`; named by `request_id`) to
/// its spend for the period it started in, on a task of its own; a budget it reaches takes the
/// account out of rotation until the budget's period ends.
pub fn charge(app: &Arc<App>, account_id: &str, request_id: &str, started: Instant, cost: u64) {
    if cost == 0 {
        return;
    }
    // When it started, on the limits' clock.
    let elapsed = i64::try_from(started.elapsed().as_millis()).unwrap_or(0);
    let at_ms = app.clock.now_ms().saturating_sub(elapsed);
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        tracing::warn!(
            account_id,
            request_id,
            "no runtime to add to the account's spend"
        );
        return;
    };
    let app = Arc::clone(app);
    let (account_id, request_id) = (account_id.to_owned(), request_id.to_owned());
    // Counted with the leases' give-backs: a graceful stop waits for it.
    let in_flight = crate::limits::InFlight::enter();
    runtime.spawn(async move {
        if let Err(e) = charge_now(&app, &account_id, &request_id, at_ms, cost).await {
            tracing::warn!(account_id, error = %e, "could not add to the account's spend");
        }
        drop(in_flight);
    });
}

async fn charge_now(
    app: &App,
    account_id: &str,
    request_id: &str,
    at_ms: i64,
    cost: u64,
) -> Result<(), StoreError> {
    // The budgets as they are now, not as they were when the request was picked.
    let budget = {
        let accounts = app.catalog.accounts();
        accounts
            .iter()
            .find(|a| a.id() == account_id)
            .and_then(|a| Budget::of(&a.record))
    };
    let Some(budget) = budget else {
        return Ok(());
    };
    let charged = periods(app, budget, at_ms)?;
    let counters: Vec<SpendBucket> = charged.iter().map(Period::counter).collect();
    let totals = app
        .store()
        .add_spend(account_id, &counters, cost, request_id)
        .await?;
    if reached(&charged, &totals).is_none() {
        return Ok(());
    }
    // Read again from the store, which a change made on another instance reached before this
    // instance's catalog: a budget raised or taken away meanwhile is not held against it, and a
    // deleted account gets no health.
    let Some(record) = app.store().account(account_id).await? else {
        return Ok(());
    };
    let Some(budget) = Budget::of(&record) else {
        return Ok(());
    };
    let now = periods(app, budget, at_ms)?;
    let totals: Vec<u64> = now
        .iter()
        .map(|p| {
            charged
                .iter()
                .zip(&totals)
                .find(|(q, _)| q.bucket == p.bucket)
                .map_or(0, |(_, t)| *t)
        })
        .collect();
    if let Some((period, spent)) = reached(&now, &totals) {
        let (until, reason) = exclusion(app, period, spent);
        let report = Report::BudgetSpent {
            until,
            reason: reason.clone(),
        };
        let wall = jiff::Timestamp::now().as_millisecond();
        let change = app.store().report_health(account_id, &report, wall).await?;
        // A budget changed since the record was read (its review may have run before this
        // rest was written): the review of the record as it is now sets the rest right, and
        // tells of it.
        let now = app.store().account(account_id).await?;
        if now.as_ref().map(|r| r.revision) != Some(record.revision) {
            review(app, account_id, true).await?;
        } else {
            tell(app, &record, &change, reason, wall);
        }
    }
    Ok(())
}

/// Of the budgets spent (`totals` in `periods`' order), the one whose period ends last: the
/// account rests until then.
fn reached<'a>(periods: &'a [Period], totals: &[u64]) -> Option<(&'a Period, u64)> {
    periods
        .iter()
        .zip(totals.iter().copied())
        .filter(|(p, spent)| *spent >= p.limit)
        .max_by_key(|(p, _)| p.span.1)
}

/// Until when (the system's clock, which health is judged by) the account rests for `period`,
/// and why.
fn exclusion(app: &App, period: &Period, spent: u64) -> (i64, String) {
    let reason = format!(
        "its {} budget of {} is spent ({} used); it serves again at {}",
        period.name,
        show_amount(Measure::Cost, period.limit),
        show_amount(Measure::Cost, spent),
        show_time(period.span.1, app.calendar.tz()),
    );
    // The period is on the limits' clock (tests move it): the account rests for what is left
    // of it.
    let wall = jiff::Timestamp::now().as_millisecond();
    let left = period.span.1.saturating_sub(app.clock.now_ms());
    (wall.saturating_add(left), reason)
}

/// Tells the operators when `change` took the account out for its budget, or made its rest
/// last longer (of racing reports on any number of instances, one does).
fn tell(app: &App, record: &AccountRecord, change: &HealthChange, reason: String, now: i64) {
    let (before, after) = (&change.before, &change.after);
    if !after.budget_spent_at(now) {
        return;
    }
    let made = !before.budget_spent_at(now)
        || after.budget_until.saturating_sub(before.budget_until) > LATER_MS;
    if !made {
        return;
    }
    tracing::warn!(account_id = %record.id, reason, "account out of rotation: its budget is spent");
    let notice = Notice::of(
        record,
        Event::AccountBudgetReached,
        Some(after.budget_until),
        reason,
        now,
    );
    app.notify.tell(notice);
}

/// How often a review reads the account again when what it read changed under it.
const REVIEW_ATTEMPTS: usize = 4;

/// Sets the account's rest for its budgets from its record and spend as they are now (read
/// from the store): a budget spent takes it out until its period ends (told when
/// `tell_operators`), none spent (or none left) lets it serve; the vendor's verdicts stay as they
/// are. Each budget's counter is first raised to what the account's usage shows for its period
/// (to the hour), so that a budget given later counts what was spent before, and a review can
/// be made again at any time. The rest is written only over the one the review read, and the
/// record read again after: a charge or another review racing this one makes it start over.
pub async fn review(app: &App, account_id: &str, tell_operators: bool) -> Result<(), StoreError> {
    let mut raised = false;
    for _ in 0..REVIEW_ATTEMPTS {
        let wall = jiff::Timestamp::now().as_millisecond();
        let record = app.store().account(account_id).await?;
        let health = app.store().account_runtime(account_id).await?.health;
        let (until, reason) = match record.as_ref().and_then(|r| Some((r, Budget::of(r)?))) {
            None => (0, None),
            Some((record, budget)) => {
                let now = app.clock.now_ms();
                let periods = periods(app, budget, now)?;
                let totals = if raised {
                    let names: Vec<SmolStr> = periods.iter().map(|p| p.bucket.clone()).collect();
                    app.store().spend(account_id, &names).await?
                } else {
                    raised = true;
                    raise_from_usage(app, &record.id, &periods, now).await?
                };
                match reached(&periods, &totals) {
                    Some((period, spent)) => {
                        let (until, reason) = exclusion(app, period, spent);
                        (until, Some(reason))
                    }
                    None => (0, None),
                }
            }
        };
        let unchanged = health.budget_until.abs_diff(until) < 1_000
            && health.budget_reason.is_some() == reason.is_some();
        if unchanged {
            return Ok(());
        }
        let report = Report::BudgetSet {
            until,
            reason: reason.clone(),
            was: health.budget_until,
        };
        let change = app.store().report_health(account_id, &report, wall).await?;
        if change.before.budget_until != health.budget_until {
            // Another rest was written after this review read it: read everything again.
            continue;
        }
        if let (Some(record), Some(reason), true) = (&record, reason, tell_operators) {
            tell(app, record, &change, reason, wall);
        }
        if until == 0 && health.budget_spent_at(wall) {
            tracing::info!(account_id, "account back in rotation: its budget changed");
        }
        let again = app.store().account(account_id).await?;
        if again.map(|r| r.revision) == record.map(|r| r.revision) {
            return Ok(());
        }
    }
    Err(StoreError::Unavailable(format!(
        "account {account_id}: its budget kept changing while it was reviewed"
    )))
}

/// Each budget's spend raised to what the account's usage shows for its period; the totals.
async fn raise_from_usage(
    app: &App,
    account_id: &str,
    periods: &[Period],
    now: i64,
) -> Result<Vec<u64>, StoreError> {
    // What ended until now is in the store, not in the stats task's next batch.
    app.stats.flush().await;
    let mut totals = Vec::with_capacity(periods.len());
    for period in periods {
        let so_far = spent_in(app, account_id, period.span, now).await?;
        let total = app
            .store()
            .raise_spend(account_id, &period.counter(), so_far)
            .await?;
        totals.push(total);
    }
    Ok(totals)
}

/// `review` of every account with a budget or a rest for one, without telling the operators:
/// at start, when the embedded store has forgotten every account's health, and a review that
/// failed after a change of budget is made again.
pub async fn review_all(app: &App) {
    let accounts = app.catalog.accounts();
    for account in accounts.iter() {
        let resting = match app.store().account_runtime(account.id()).await {
            Ok(runtime) => runtime.health.budget_until != 0,
            Err(e) => {
                tracing::warn!(account_id = %account.id(), error = %e, "could not review the account's budget");
                continue;
            }
        };
        if Budget::of(&account.record).is_none() && !resting {
            continue;
        }
        if let Err(e) = review(app, account.id(), false).await {
            tracing::warn!(account_id = %account.id(), error = %e, "could not review the account's budget");
        }
    }
}

/// What the account spent from the start of `span` until `now`, as its usage recorded it (hour
/// buckets, in UTC: a period starting within an hour, in a time zone half an hour off UTC,
/// counts from the next whole hour).
async fn spent_in(
    app: &App,
    account_id: &str,
    span: (i64, i64),
    now: i64,
) -> Result<u64, StoreError> {
    const HOUR_MS: i64 = 3_600_000;
    let mut hour = span.0.div_euclid(HOUR_MS) + i64::from(span.0.rem_euclid(HOUR_MS) != 0);
    let mut buckets = Vec::new();
    while hour * HOUR_MS <= now {
        let [bucket, ..] = buckets_of(hour * HOUR_MS);
        buckets.push(bucket);
        hour += 1;
    }
    let counters = app
        .store()
        .usage(&UsageQuery {
            dimension: Dimension::Account(account_id.to_owned()),
            buckets,
        })
        .await?;
    Ok(counters.iter().map(|c| c.cost_nanousd).sum())
}

/// The account view's `budget`: per budget, its limit, what was spent and when it resets;
/// `null` without one.
pub async fn view(app: &App, record: &AccountRecord) -> Result<Value, StoreError> {
    let Some(budget) = Budget::of(record) else {
        return Ok(Value::Null);
    };
    let periods = periods(app, budget, app.clock.now_ms())?;
    let names: Vec<SmolStr> = periods.iter().map(|p| p.bucket.clone()).collect();
    let totals = app.store().spend(&record.id, &names).await?;
    let tz = app.calendar.tz();
    let mut out = serde_json::Map::new();
    for (p, spent) in periods.iter().zip(totals) {
        out.insert(
            p.name.to_owned(),
            json!({
                "limit_nanousd": p.limit,
                "spent_nanousd": spent,
                "remaining_nanousd": p.limit.saturating_sub(spent),
                "period_start": json_time(p.span.0, tz),
                "resets_at": json_time(p.span.1, tz),
            }),
        );
    }
    Ok(Value::Object(out))
}

/// Whether `health` keeps the account out for a spent budget at `now`, and why (the account
/// view's `state`).
pub fn state(health: &Health, now: i64) -> Option<(i64, &str)> {
    health.budget_spent_at(now).then(|| {
        (
            health.budget_until,
            health.budget_reason.as_deref().unwrap_or(""),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn period(name: &'static str, limit: u64, end: i64) -> Period {
        Period {
            name,
            bucket: SmolStr::new(name),
            limit,
            span: (0, end),
        }
    }

    #[test]
    fn the_budget_spent_that_ends_last_decides() {
        let periods = [period("daily", 10, 100), period("monthly", 50, 3_000)];
        let name = |totals: &[u64]| reached(&periods, totals).map(|(p, s)| (p.name, s));
        assert_eq!(name(&[9, 9]), None);
        assert_eq!(name(&[10, 10]), Some(("daily", 10)));
        assert_eq!(
            name(&[60, 60]),
            Some(("monthly", 60)),
            "the month's rest is longer"
        );
        assert_eq!(name(&[3, 50]), Some(("monthly", 50)));
    }
}
