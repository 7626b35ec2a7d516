//! The counters a key's limits need for one request: which period each counts, when it resets,
//! and what the request reserves on it.
//!
//! Windows are fixed, aligned to multiples of their length since the Unix epoch: one counter per
//! window, incremented atomically, identical on every instance, with a reset time a client can be
//! told (`Retry-After`). A sliding window would need a log of every request (and of its tokens
//! and cost) per key; fixed windows trade that for allowing up to twice the limit across one
//! boundary, which the daily and weekly budgets bound anyway. Days start at midnight and weeks on
//! Monday at midnight in the configured time zone.

use jiff::tz::TimeZone;
use jiff::{Span, Timestamp, civil::Date};

use smol_str::{SmolStr, format_smolstr};

use crate::error::ApiError;
use crate::store::{KeyLimits, Meter};

pub const MIN_WINDOW_SECS: u64 = 60;
pub const MAX_WINDOW_SECS: u64 = 30 * 86_400;

/// What a counter counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Measure {
    Requests,
    Tokens,
    Cost,
}

/// One counter with what the caller needs to explain it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planned {
    pub meter: Meter,
    pub measure: Measure,
    /// Names the limit in messages and in the key-info view: `window_requests`, `daily_cost`,
    /// `weekly_cost`, `weekly_opus_cost`, `total_cost`.
    pub name: SmolStr,
    /// When the period started and when it resets (unix ms); `None` for the total.
    pub period: Option<(i64, i64)>,
}

/// The most one request reserves on a counter: the counter's limit (a request estimated past it
/// is admitted alone, and holding the limit shuts the others out as holding more would), and
/// at most 2^53, which Redis's Lua numbers (doubles) hold exactly. A client's `max_tokens` is
/// any u64: uncapped, a reservation of 2^64 - 1 wrapped to a negative hold in `take.lua`.
const MAX_RESERVE: u64 = 1 << 53;

/// What one request is expected to use at most, reserved at admission.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Estimate {
    pub tokens: u64,
    pub cost_nanousd: u64,
}

/// Which per-family counters to plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Families<'a> {
    /// Those of a request for a model of this family (none without one).
    Of(Option<&'a str>),
    /// Every family the key limits (the key-info view).
    All,
}

/// The counters of `limits` for a request at `now_ms`. A counter is kept past its period's end
/// for as long as a lease admitted in it may still settle (`lease_ttl_ms`).
pub fn plan(
    limits: &KeyLimits,
    now_ms: i64,
    calendar: &Calendar,
    family: Families<'_>,
    estimate: Estimate,
    lease_ttl_ms: i64,
) -> Result<Vec<Planned>, ApiError> {
    let mut out = Vec::new();
    let keep = |end: i64| Some(end.saturating_add(lease_ttl_ms));
    let mut push = |name: SmolStr, bucket: SmolStr, measure, limit, period: Option<(i64, i64)>| {
        let reserve = match measure {
            Measure::Requests => 1,
            Measure::Tokens => estimate.tokens,
            Measure::Cost => estimate.cost_nanousd,
        }
        .min(limit)
        .min(MAX_RESERVE);
        out.push(Planned {
            meter: Meter {
                bucket,
                limit,
                reserve,
                expires_at: period.and_then(|(_, end)| keep(end)),
            },
            measure,
            name,
            period,
        });
    };
    if let Some(window) = &limits.window {
        let len_ms = i64::try_from(window.seconds.clamp(MIN_WINDOW_SECS, MAX_WINDOW_SECS))
            .unwrap_or(i64::MAX)
            * 1000;
        let index = now_ms.div_euclid(len_ms);
        let period = Some((index * len_ms, (index + 1) * len_ms));
        for (suffix, measure, limit) in [
            ("req", Measure::Requests, window.requests),
            ("tok", Measure::Tokens, window.tokens),
            ("cost", Measure::Cost, window.cost_nanousd),
        ] {
            if let Some(limit) = limit {
                let name = match measure {
                    Measure::Requests => "window_requests",
                    Measure::Tokens => "window_tokens",
                    Measure::Cost => "window_cost",
                };
                push(
                    SmolStr::new_static(name),
                    format_smolstr!("win:{}:{index}:{suffix}", window.seconds),
                    measure,
                    limit,
                    period,
                );
            }
        }
    }
    let needs_calendar = limits.daily_cost_nanousd.is_some()
        || limits.weekly_cost_nanousd.is_some()
        || !limits.weekly_family_cost_nanousd.is_empty();
    if needs_calendar {
        let Day {
            date: today,
            period,
            monday,
            week,
            ..
        } = calendar.day(now_ms)?;
        if let Some(limit) = limits.daily_cost_nanousd {
            push(
                SmolStr::new_static("daily_cost"),
                format_smolstr!("day:{today}"),
                Measure::Cost,
                limit,
                Some(period),
            );
        }
        if let Some(limit) = limits.weekly_cost_nanousd {
            push(
                SmolStr::new_static("weekly_cost"),
                format_smolstr!("week:{monday}"),
                Measure::Cost,
                limit,
                Some(week),
            );
        }
        for (fam, limit) in &limits.weekly_family_cost_nanousd {
            if family == Families::All || family == Families::Of(Some(fam.as_str())) {
                push(
                    format_smolstr!("weekly_{fam}_cost"),
                    format_smolstr!("week:{monday}:{fam}"),
                    Measure::Cost,
                    *limit,
                    Some(week),
                );
            }
        }
    }
    if let Some(limit) = limits.total_cost_nanousd {
        push(
            SmolStr::new_static("total_cost"),
            SmolStr::new_static("total"),
            Measure::Cost,
            limit,
            None,
        );
    }
    Ok(out)
}

/// Day and week boundaries in the limits' time zone, computed once per day (time-zone
/// arithmetic is the dearest part of planning a request's counters).
#[derive(Debug)]
pub struct Calendar {
    tz: TimeZone,
    today: std::sync::RwLock<Option<Day>>,
}

/// One local day: its date, its span, and its week's Monday and span (unix ms, end exclusive).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Day {
    date: Date,
    period: (i64, i64),
    monday: Date,
    week: (i64, i64),
    /// Its month's first day and span.
    first: Date,
    month: (i64, i64),
}

/// The local day and month of an instant: their names (`2026-11-22`, `2026-11`) and spans
/// (unix ms, end exclusive).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DayAndMonth {
    pub day: SmolStr,
    pub day_span: (i64, i64),
    pub month: SmolStr,
    pub month_span: (i64, i64),
}

impl Calendar {
    pub fn new(tz: TimeZone) -> Calendar {
        Calendar {
            tz,
            today: std::sync::RwLock::new(None),
        }
    }

    pub fn tz(&self) -> &TimeZone {
        &self.tz
    }

    /// The local day and month `now_ms` falls in.
    pub fn day_and_month(&self, now_ms: i64) -> Result<DayAndMonth, ApiError> {
        let day = self.day(now_ms)?;
        Ok(DayAndMonth {
            day: format_smolstr!("{}", day.date),
            day_span: day.period,
            month: format_smolstr!("{:04}-{:02}", day.first.year(), day.first.month()),
            month_span: day.month,
        })
    }

    fn day(&self, now_ms: i64) -> Result<Day, ApiError> {
        let within = |d: &Day| d.period.0 <= now_ms && now_ms < d.period.1;
        if let Ok(cached) = self.today.read()
            && let Some(day) = cached.as_ref().filter(|d| within(d))
        {
            return Ok(*day);
        }
        let tz = &self.tz;
        let date = local_date(now_ms, tz)?;
        let monday = add_days(date, -i64::from(date.weekday().to_monday_zero_offset()))?;
        let first = date.first_of_month();
        let next_first = add_days(date.last_of_month(), 1)?;
        let day = Day {
            date,
            period: (midnight(date, tz)?, midnight(add_days(date, 1)?, tz)?),
            monday,
            week: (midnight(monday, tz)?, midnight(add_days(monday, 7)?, tz)?),
            first,
            month: (midnight(first, tz)?, midnight(next_first, tz)?),
        };
        // Only the current day is kept; a clock moved backwards (tests) recomputes.
        if let Ok(mut cached) = self.today.write() {
            *cached = Some(day);
        }
        Ok(day)
    }
}

fn time_error(e: jiff::Error) -> ApiError {
    ApiError::internal(format!("date arithmetic failed: {e}"))
}

fn local_date(now_ms: i64, tz: &TimeZone) -> Result<Date, ApiError> {
    Ok(Timestamp::from_millisecond(now_ms)
        .map_err(time_error)?
        .to_zoned(tz.clone())
        .date())
}

fn add_days(date: Date, days: i64) -> Result<Date, ApiError> {
    date.checked_add(Span::new().days(days)).map_err(time_error)
}

/// Unix ms of the first instant of `date` in `tz` (which is not always 00:00 on a DST change).
fn midnight(date: Date, tz: &TimeZone) -> Result<i64, ApiError> {
    Ok(date
        .to_zoned(tz.clone())
        .map_err(time_error)?
        .start_of_day()
        .map_err(time_error)?
        .timestamp()
        .as_millisecond())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::store::WindowLimit;

    fn ms(at: &str) -> i64 {
        at.parse::<Timestamp>().unwrap().as_millisecond()
    }

    #[test]
    fn days_and_months_are_the_zones_own() {
        let zone = |name| TimeZone::get(name).unwrap();
        let of = |tz: TimeZone, at: &str| Calendar::new(tz).day_and_month(ms(at)).unwrap();
        // The last day of a year, in UTC.
        let d = of(TimeZone::UTC, "2026-12-31T23:59:59Z");
        assert_eq!(
            (d.day.as_str(), d.month.as_str()),
            ("2026-12-31", "2026-12")
        );
        assert_eq!(
            d.day_span,
            (ms("2026-12-31T00:00:00Z"), ms("2027-01-01T00:00:00Z"))
        );
        assert_eq!(
            d.month_span,
            (ms("2026-12-01T00:00:00Z"), ms("2027-01-01T00:00:00Z"))
        );
        // Already the next month in Tokyo.
        let d = of(zone("Asia/Tokyo"), "2026-11-30T15:00:00Z");
        assert_eq!(
            (d.day.as_str(), d.month.as_str()),
            ("2026-12-01", "2026-12")
        );
        assert_eq!(d.month_span.0, ms("2026-11-30T15:00:00Z"));
        // A day of 23 hours (spring forward in New York) and its month.
        let d = of(zone("America/New_York"), "2026-03-08T12:00:00Z");
        assert_eq!(d.day_span.1 - d.day_span.0, 23 * 3_600_000);
        assert_eq!(
            d.month_span,
            (ms("2026-03-01T05:00:00Z"), ms("2026-04-01T04:00:00Z"))
        );
        // Half an hour off UTC, February of a leap year.
        let d = of(zone("Asia/Kolkata"), "2028-02-29T20:00:00Z");
        assert_eq!(
            (d.day.as_str(), d.month.as_str()),
            ("2028-03-01", "2028-03")
        );
        assert_eq!(d.month_span.0, ms("2028-02-29T18:30:00Z"));
    }

    #[test]
    fn a_reservation_is_capped_at_the_limit_and_at_2_pow_53() {
        let limits = |tokens| KeyLimits {
            window: Some(WindowLimit {
                seconds: 600,
                requests: None,
                tokens: Some(tokens),
                cost_nanousd: None,
            }),
            ..KeyLimits::default()
        };
        let est = Estimate {
            tokens: u64::MAX,
            cost_nanousd: 0,
        };
        for (limit, reserved) in [(1_000, 1_000), (u64::MAX, 1 << 53), (5, 5)] {
            let planned = plan(
                &limits(limit),
                ms("2026-11-22T12:09:59Z"),
                &Calendar::new(TimeZone::UTC),
                Families::Of(None),
                est,
                0,
            )
            .unwrap();
            assert_eq!(planned[0].meter.reserve, reserved, "{limit}");
        }
    }

    #[test]
    fn windows_are_aligned_and_roll_over() {
        let limits = KeyLimits {
            window: Some(WindowLimit {
                seconds: 600,
                requests: Some(5),
                tokens: None,
                cost_nanousd: Some(9),
            }),
            ..KeyLimits::default()
        };
        let est = Estimate {
            tokens: 10,
            cost_nanousd: 7,
        };
        let a = plan(
            &limits,
            ms("2026-11-22T12:09:59Z"),
            &Calendar::new(TimeZone::UTC),
            Families::Of(None),
            est,
            1000,
        )
        .unwrap();
        assert_eq!(a.len(), 2);
        assert_eq!(a[0].name, "window_requests");
        assert_eq!((a[0].meter.reserve, a[1].meter.reserve), (1, 7));
        assert_eq!(
            a[0].period,
            Some((ms("2026-11-22T12:00:00Z"), ms("2026-11-22T12:10:00Z")))
        );
        assert_eq!(a[0].meter.expires_at, Some(ms("2026-11-22T12:10:01Z")));
        let b = plan(
            &limits,
            ms("2026-11-22T12:10:00Z"),
            &Calendar::new(TimeZone::UTC),
            Families::Of(None),
            est,
            0,
        )
        .unwrap();
        assert_ne!(a[0].meter.bucket, b[0].meter.bucket);
    }

    #[test]
    fn days_and_weeks_follow_the_time_zone() {
        let limits = KeyLimits {
            daily_cost_nanousd: Some(100),
            weekly_cost_nanousd: Some(500),
            weekly_family_cost_nanousd: [("opus".to_owned(), 50)].into(),
            total_cost_nanousd: Some(1000),
            ..KeyLimits::default()
        };
        let tokyo = TimeZone::get("Asia/Tokyo").unwrap();
        // 2026-11-22T16:30Z is Monday 23 November 01:30 in Tokyo.
        let p = plan(
            &limits,
            ms("2026-11-22T16:30:00Z"),
            &Calendar::new(tokyo.clone()),
            Families::Of(Some("opus")),
            Estimate::default(),
            0,
        )
        .unwrap();
        let names: Vec<&str> = p.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "daily_cost",
                "weekly_cost",
                "weekly_opus_cost",
                "total_cost"
            ]
        );
        assert_eq!(p[0].meter.bucket, "day:2026-11-23");
        assert_eq!(
            p[0].period,
            Some((ms("2026-11-22T15:00:00Z"), ms("2026-11-23T15:00:00Z")))
        );
        assert_eq!(p[1].meter.bucket, "week:2026-11-23");
        assert_eq!(p[2].meter.bucket, "week:2026-11-23:opus");
        assert_eq!(p[3].meter.expires_at, None);
        // The same instant in UTC is still Sunday the 22nd, in the week of Monday the 16th.
        let utc = plan(
            &limits,
            ms("2026-11-22T16:30:00Z"),
            &Calendar::new(TimeZone::UTC),
            Families::Of(Some("sonnet")),
            Estimate::default(),
            0,
        )
        .unwrap();
        let buckets: Vec<&str> = utc.iter().map(|p| p.meter.bucket.as_str()).collect();
        assert_eq!(buckets, ["day:2026-11-22", "week:2026-11-16", "total"]);
    }
}
