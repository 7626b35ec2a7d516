//! Account budgets: what an upstream account may cost per calendar day and per calendar month
//! (`daily_cost_nanousd`, `monthly_cost_nanousd` on its record), in `[limits] timezone`.
//!
//! Each request of an account with a budget adds its cost to the account's spend counters when
//! it ends (`Store::add_spend`: one atomic addition per period, shared by every instance), off
//! the request's way. The request whose cost reaches a budget takes the account out of rotation
//! until that period ends, as a rate limit of the whole account (its health: every instance
//! stops picking it at once, `Retry-After` tells when it serves again, the account view shows
//! why). Requests already running finish: a budget is overshot by what they cost, as a vendor's
//! hard limit would be; set it below that limit by what the account's concurrent requests can
//! cost. A key's budgets (docs/limits.md) are reserved before the request instead; an account's
//! cannot be, without a store call on every request's way.

use std::sync::Arc;

use serde_json::{Value, json};
use smol_str::{SmolStr, format_smolstr};

use crate::app::App;
use crate::limits::meters::{DayAndMonth, Measure};
use crate::limits::{show_amount, show_time};
use crate::notify::{Event, Notice};
use crate::scheduler::policy::{Health, Report, Status};
use crate::store::{AccountRecord, Dimension, SpendBucket, StoreError, UsageQuery, buckets_of};

/// How the health error of an account taken out for its budget begins: a change of the budget
/// lifts only such an exclusion.
const REACHED: &str = "budget reached: ";

/// A spend counter is kept this long past its period: the cost of a request admitted in it and
/// ending after it still adds to it.
const KEEP_MS: i64 = 86_400_000;

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

fn periods(app: &App, budget: Budget, now_ms: i64) -> Result<Vec<Period>, String> {
    let DayAndMonth {
        day,
        day_span,
        month,
        month_span,
    } = app
        .calendar
        .day_and_month(now_ms)
        .map_err(|e| e.to_string())?;
    let mut out = Vec::with_capacity(2);
    if let Some(limit) = budget.daily {
        out.push(Period {
            name: "daily",
            bucket: format_smolstr!("day:{day}"),
            limit,
            span: day_span,
        });
    }
    if let Some(limit) = budget.monthly {
        out.push(Period {
            name: "monthly",
            bucket: format_smolstr!("month:{month}"),
            limit,
            span: month_span,
        });
    }
    Ok(out)
}

/// Adds what a request of the account cost to its spend, on a task of its own; a budget it
/// reaches takes the account out of rotation until the budget's period ends.
pub fn charge(app: &Arc<App>, account_id: &str, budget: Budget, cost_nanousd: u64) {
    if cost_nanousd == 0 {
        return;
    }
    let app = Arc::clone(app);
    let account_id = account_id.to_owned();
    tokio::spawn(async move {
        if let Err(e) = charge_now(&app, &account_id, budget, cost_nanousd).await {
            tracing::warn!(account_id, error = %e, "could not add to the account's spend");
        }
    });
}

async fn charge_now(app: &App, account_id: &str, budget: Budget, cost: u64) -> Result<(), String> {
    let now = app.clock.now_ms();
    let periods = periods(app, budget, now)?;
    let buckets: Vec<SpendBucket> = periods
        .iter()
        .map(|p| SpendBucket {
            name: p.bucket.clone(),
            expires_at: p.span.1.saturating_add(KEEP_MS),
        })
        .collect();
    let totals = app
        .store()
        .add_spend(account_id, &buckets, cost)
        .await
        .map_err(|e| e.to_string())?;
    if let Some((period, spent)) = reached(&periods, &totals) {
        exclude(app, account_id, period, spent, now)
            .await
            .map_err(|e| e.to_string())?;
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

/// Takes the account out of rotation until `period` ends, and tells the operators when this
/// report is the one that did (of racing reports on any number of instances, one is).
async fn exclude(
    app: &App,
    account_id: &str,
    period: &Period,
    spent: u64,
    now: i64,
) -> Result<(), StoreError> {
    let tz = app.calendar.tz();
    let reason = format!(
        "its {} budget of {} is spent ({} used); it serves again at {}",
        period.name,
        show_amount(Measure::Cost, period.limit),
        show_amount(Measure::Cost, spent),
        show_time(period.span.1, tz),
    );
    // Health is judged on the system's clock, the period on the limits' (tests move it): the
    // account rests for what is left of the period.
    let wall = jiff::Timestamp::now().as_millisecond();
    let until = wall.saturating_add(period.span.1.saturating_sub(now));
    let report = Report::RateLimited {
        until,
        family: None,
        error: format!("{REACHED}{reason}"),
    };
    let change = app.store().report_health(account_id, &report, wall).await?;
    if by_budget(&change.before, wall) {
        return Ok(());
    }
    tracing::warn!(
        account_id,
        reason,
        "account out of rotation: its budget is spent"
    );
    let accounts = app.catalog.accounts();
    if let Some(account) = accounts.iter().find(|a| a.id() == account_id) {
        let notice = Notice::of(
            &account.record,
            Event::AccountBudgetReached,
            Some(until),
            reason,
            wall,
        );
        app.notify.tell(notice);
    }
    Ok(())
}

/// Whether `health` is an exclusion for a spent budget, in force at `now` (the system's clock).
fn by_budget(health: &Health, now: i64) -> bool {
    health.status_at(now) == Status::RateLimited
        && health
            .last_error
            .as_deref()
            .is_some_and(|e| e.starts_with(REACHED))
}

/// After an admin changed the account's budgets (`before` → `record`): a budget given now
/// counts what the account spent in its period before (read from its usage), an exclusion for a
/// budget no longer spent (or no longer there) is lifted, and a budget the spend already reaches
/// takes the account out at once.
pub async fn review(
    app: &App,
    before: &AccountRecord,
    record: &AccountRecord,
) -> Result<(), StoreError> {
    let now = app.clock.now_ms();
    let wall = jiff::Timestamp::now().as_millisecond();
    let health = app.store().account_runtime(&record.id).await?.health;
    let excluded = by_budget(&health, wall);
    let (periods, mut totals) = spend_of(app, record, now).await?;
    let old = Budget::of(before).unwrap_or_default();
    for (period, total) in periods.iter().zip(totals.iter_mut()) {
        let had = match period.name {
            "daily" => old.daily.is_some(),
            _ => old.monthly.is_some(),
        };
        if had {
            continue;
        }
        let so_far = spent_in(app, &record.id, period.span, now).await?;
        if so_far > *total {
            let bucket = SpendBucket {
                name: period.bucket.clone(),
                expires_at: period.span.1.saturating_add(KEEP_MS),
            };
            let added = app
                .store()
                .add_spend(&record.id, &[bucket], so_far - *total)
                .await?;
            *total = added.first().copied().unwrap_or(so_far);
        }
    }
    let reached = reached(&periods, &totals);
    // The exclusion in force is lifted unless it is the one the budgets still make (a report
    // never shortens an exclusion: one for a budget raised must go first). Its end was worked
    // out from two clocks read a moment apart: a second either way is the same one.
    let keep = reached.is_some_and(|(p, _)| {
        let until = wall.saturating_add(p.span.1.saturating_sub(now));
        excluded && health.until.abs_diff(until) < 1_000
    });
    if excluded && !keep {
        app.store().reset_health(&record.id).await?;
        tracing::info!(account_id = %record.id, "account back in rotation: its budget changed");
    }
    if let Some((period, spent)) = reached.filter(|_| !keep) {
        exclude(app, &record.id, period, spent, now).await?;
    }
    Ok(())
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
    // What ended until now is in the store, not in the stats task's next batch.
    app.stats.flush().await;
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

/// The account's budgets at `now` (the limits' clock) with what it spent in each.
async fn spend_of(
    app: &App,
    record: &AccountRecord,
    now: i64,
) -> Result<(Vec<Period>, Vec<u64>), StoreError> {
    let Some(budget) = Budget::of(record) else {
        return Ok((Vec::new(), Vec::new()));
    };
    let periods = periods(app, budget, now).map_err(StoreError::Unavailable)?;
    let names: Vec<SmolStr> = periods.iter().map(|p| p.bucket.clone()).collect();
    let totals = app.store().spend(&record.id, &names).await?;
    Ok((periods, totals))
}

/// The account view's `budget`: per budget, its limit, what was spent and when it resets;
/// `null` without one.
pub async fn view(app: &App, record: &AccountRecord) -> Result<Value, StoreError> {
    let (periods, totals) = spend_of(app, record, app.clock.now_ms()).await?;
    if periods.is_empty() {
        return Ok(Value::Null);
    }
    let tz = app.calendar.tz();
    let mut out = serde_json::Map::new();
    for (p, spent) in periods.iter().zip(totals) {
        out.insert(
            p.name.to_owned(),
            json!({
                "limit_nanousd": p.limit,
                "spent_nanousd": spent,
                "remaining_nanousd": p.limit.saturating_sub(spent),
                "period_start": show_time(p.span.0, tz),
                "resets_at": show_time(p.span.1, tz),
            }),
        );
    }
    Ok(Value::Object(out))
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
        assert!(reached(&periods, &[9, 9]).is_none());
        let (p, spent) = reached(&periods, &[10, 10])
            .map(|(p, s)| (p.name, s))
            .unzip();
        assert_eq!((p, spent), (Some("daily"), Some(10)));
        let (p, _) = reached(&periods, &[60, 60])
            .map(|(p, s)| (p.name, s))
            .unzip();
        assert_eq!(
            p,
            Some("monthly"),
            "both spent: the month's rest is the longer"
        );
        let (p, _) = reached(&periods, &[3, 50])
            .map(|(p, s)| (p.name, s))
            .unzip();
        assert_eq!(p, Some("monthly"));
    }

    #[test]
    fn only_a_budget_exclusion_in_force_is_one() {
        let mut h = Health {
            status: Status::RateLimited,
            until: 100,
            last_error: Some(format!("{REACHED}its daily budget …")),
            ..Health::default()
        };
        assert!(by_budget(&h, 50));
        assert!(!by_budget(&h, 100), "over");
        h.last_error = Some("upstream answered 429".into());
        assert!(!by_budget(&h, 50), "the vendor's");
    }
}
