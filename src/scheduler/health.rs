//! What an upstream's answer says about the account that gave it.
//!
//! Pure functions: the relay reports each outcome, this module judges it, and the scheduler
//! stores the account's resulting state. Kept apart so every status and header shape is tested
//! without a server.

use std::time::Duration;

use http::HeaderMap;

/// How one upstream attempt ended, before any byte reached the client.
#[derive(Debug, Clone, Copy)]
pub enum Outcome<'a> {
    Response {
        status: u16,
        headers: &'a HeaderMap,
    },
    /// Connecting failed, or the connection broke before a response head.
    ConnectError,
    /// No response head within the first-byte timeout.
    Timeout,
}

/// The account's health after an outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// It answered (2xx/3xx): any failure streak ends.
    Healthy,
    /// The request was at fault (400, 404, 413, 422, …): the account is untouched.
    ClientFault,
    /// 429: out until `until_ms` (unix ms), for one model family when the headers say so.
    RateLimited {
        until_ms: i64,
        family: Option<&'static str>,
    },
    /// 529 or `overloaded_error`: a fixed cooldown.
    Overloaded,
    /// 5xx, connect errors, timeouts: a cooldown that grows with consecutive failures.
    Failing,
    /// 401/403: out of rotation until an admin resets it.
    Unauthorized,
}

impl Verdict {
    /// Whether the request may go to another account (nothing has reached the client yet).
    pub fn may_fail_over(&self) -> bool {
        matches!(
            self,
            Verdict::RateLimited { .. } | Verdict::Overloaded | Verdict::Failing
        )
    }
}

pub fn judge(outcome: Outcome<'_>, now_ms: i64, default_rate_limit: Duration) -> Verdict {
    match outcome {
        Outcome::ConnectError | Outcome::Timeout => Verdict::Failing,
        Outcome::Response { status, headers } => match status {
            200..=399 => Verdict::Healthy,
            401 | 403 => Verdict::Unauthorized,
            429 => {
                let (until_ms, family) = rate_limit_reset(headers, now_ms)
                    .unwrap_or((now_ms + millis(default_rate_limit), None));
                Verdict::RateLimited {
                    until_ms: until_ms.max(now_ms),
                    family,
                }
            }
            529 => Verdict::Overloaded,
            500..=599 => Verdict::Failing,
            _ => Verdict::ClientFault,
        },
    }
}

/// The cooldown after `consecutive` failures in a row: `base`, doubling each time, at most `max`.
pub fn failure_cooldown(consecutive: u32, base: Duration, max: Duration) -> Duration {
    let factor = 1u32
        .checked_shl(consecutive.saturating_sub(1).min(16))
        .unwrap_or(u32::MAX);
    base.saturating_mul(factor).min(max)
}

const FAMILIES: [&str; 3] = ["opus", "sonnet", "haiku"];

/// The family of a model name (`claude-opus-4-8` → `opus`), for family-scoped rate limits.
pub fn family_of(model: &str) -> Option<&'static str> {
    FAMILIES.into_iter().find(|f| model.contains(f))
}

/// When a 429 ends, from its headers: the latest reset among the limits that are exhausted
/// (`anthropic-ratelimit-<limit>-remaining: 0` or `-status: rejected`), else `retry-after`,
/// else the earliest reset given. A limit whose name carries a model family (`…7d_opus…`)
/// scopes the verdict to that family when it is the only exhausted one.
fn rate_limit_reset(headers: &HeaderMap, now_ms: i64) -> Option<(i64, Option<&'static str>)> {
    let mut exhausted: Vec<(i64, Option<&'static str>)> = Vec::new();
    let mut any_reset: Option<i64> = None;
    for (name, value) in headers {
        let name = name.as_str();
        let Some(limit) = name
            .strip_prefix("anthropic-ratelimit-")
            .and_then(|n| n.strip_suffix("-reset"))
        else {
            continue;
        };
        let Some(reset) = value.to_str().ok().and_then(|v| parse_reset(v, now_ms)) else {
            continue;
        };
        any_reset = Some(any_reset.map_or(reset, |r| r.min(reset)));
        let remaining = header(headers, &format!("anthropic-ratelimit-{limit}-remaining"));
        let status = header(headers, &format!("anthropic-ratelimit-{limit}-status"));
        if remaining == Some("0") || status.is_some_and(|s| s.eq_ignore_ascii_case("rejected")) {
            exhausted.push((reset, family_of(limit)));
        }
    }
    if let Some(&(until, _)) = exhausted.iter().max_by_key(|(r, _)| *r) {
        let families: Vec<_> = exhausted.iter().map(|(_, f)| *f).collect();
        let family = match families.as_slice() {
            [Some(f), rest @ ..] if rest.iter().all(|x| *x == Some(*f)) => Some(*f),
            _ => None,
        };
        return Some((until, family));
    }
    if let Some(after) = header(headers, "retry-after").and_then(|v| parse_retry_after(v, now_ms)) {
        return Some((after, None));
    }
    any_reset.map(|r| (r, None))
}

fn header<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

/// `retry-after`: delay seconds, or an HTTP date.
fn parse_retry_after(v: &str, now_ms: i64) -> Option<i64> {
    if let Ok(secs) = v.trim().parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0).then(|| now_ms + (secs * 1000.0) as i64);
    }
    jiff::fmt::rfc2822::parse(v.trim())
        .ok()
        .map(|z| z.timestamp().as_millisecond())
}

/// A reset header: RFC 3339, or unix seconds.
fn parse_reset(v: &str, now_ms: i64) -> Option<i64> {
    let v = v.trim();
    if let Ok(ts) = v.parse::<jiff::Timestamp>() {
        return Some(ts.as_millisecond());
    }
    let secs = v.parse::<i64>().ok()?;
    // Unix seconds; a small number would be a delay, which the reset headers are not.
    (secs > 1_000_000_000)
        .then_some(secs * 1000)
        .or(Some(now_ms + secs * 1000))
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 4)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const NOW: i64 = 1_795_336_200_000; // 2026-11-22T08:30:00Z

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    fn judge_status(status: u16, h: &HeaderMap) -> Verdict {
        judge(
            Outcome::Response { status, headers: h },
            NOW,
            Duration::from_secs(60),
        )
    }

    #[test]
    fn statuses_map_to_account_states() {
        let h = HeaderMap::new();
        assert_eq!(judge_status(200, &h), Verdict::Healthy);
        for s in [400, 404, 413, 422] {
            assert_eq!(judge_status(s, &h), Verdict::ClientFault, "{s}");
            assert!(!judge_status(s, &h).may_fail_over());
        }
        assert_eq!(judge_status(401, &h), Verdict::Unauthorized);
        assert_eq!(judge_status(403, &h), Verdict::Unauthorized);
        assert_eq!(judge_status(529, &h), Verdict::Overloaded);
        assert_eq!(judge_status(500, &h), Verdict::Failing);
        assert_eq!(judge_status(503, &h), Verdict::Failing);
        assert!(judge_status(529, &h).may_fail_over());
        assert_eq!(
            judge(Outcome::ConnectError, NOW, Duration::ZERO),
            Verdict::Failing
        );
        assert_eq!(
            judge(Outcome::Timeout, NOW, Duration::ZERO),
            Verdict::Failing
        );
        // A 429 without headers: the configured cooldown.
        assert_eq!(
            judge_status(429, &h),
            Verdict::RateLimited {
                until_ms: NOW + 60_000,
                family: None
            }
        );
    }

    #[test]
    fn a_429_lasts_until_the_reset_its_headers_give() {
        let h = headers(&[("retry-after", "17")]);
        assert_eq!(
            judge_status(429, &h),
            Verdict::RateLimited {
                until_ms: NOW + 17_000,
                family: None
            }
        );
        let h = headers(&[
            ("retry-after", "5"),
            ("anthropic-ratelimit-requests-remaining", "0"),
            ("anthropic-ratelimit-requests-reset", "2026-11-22T08:31:00Z"),
            ("anthropic-ratelimit-tokens-remaining", "1000"),
            ("anthropic-ratelimit-tokens-reset", "2026-11-22T08:30:10Z"),
        ]);
        assert_eq!(
            judge_status(429, &h),
            Verdict::RateLimited {
                until_ms: NOW + 60_000,
                family: None
            }
        );
        let h = headers(&[("retry-after", "Sun, 22 Nov 2026 08:32:00 GMT")]);
        assert_eq!(
            judge_status(429, &h),
            Verdict::RateLimited {
                until_ms: NOW + 120_000,
                family: None
            }
        );
    }

    #[test]
    fn a_limit_named_for_one_family_scopes_the_verdict() {
        let h = headers(&[
            ("anthropic-ratelimit-unified-7d_opus-status", "rejected"),
            ("anthropic-ratelimit-unified-7d_opus-reset", "1795340000"),
        ]);
        assert_eq!(
            judge_status(429, &h),
            Verdict::RateLimited {
                until_ms: 1_795_340_000_000,
                family: Some("opus")
            }
        );
        assert_eq!(family_of("claude-opus-4-8"), Some("opus"));
        assert_eq!(family_of("gpt-4o"), None);
    }

    #[test]
    fn failure_cooldowns_grow_and_are_capped() {
        let base = Duration::from_secs(5);
        let max = Duration::from_secs(300);
        assert_eq!(failure_cooldown(1, base, max), Duration::from_secs(5));
        assert_eq!(failure_cooldown(2, base, max), Duration::from_secs(10));
        assert_eq!(failure_cooldown(4, base, max), Duration::from_secs(40));
        assert_eq!(failure_cooldown(40, base, max), max);
    }
}
