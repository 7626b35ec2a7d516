//! What an upstream's answer says about the account that gave it.
//!
//! Pure functions: the relay reports each outcome, this module judges it, and the scheduler
//! stores the account's resulting state. Kept apart so every status and header shape is tested
//! without a server.

use std::borrow::Cow;
use std::time::Duration;

use http::HeaderMap;

/// How one upstream attempt ended, before any byte reached the client.
#[derive(Debug, Clone, Copy)]
pub enum Outcome<'a> {
    Response {
        status: u16,
        headers: &'a HeaderMap,
        /// The error body, read whole for the statuses whose meaning depends on it
        /// ([`reads_body`]); empty for the others.
        body: &'a [u8],
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
    /// 403 that names nothing wrong with the account (a file of another project, a model this
    /// account has no access to): another account may serve the request. The account is
    /// reported failing only if one does (the request was not the cause, this account was).
    Refused,
    /// The request names something another account holds (OpenAI's `previous_response_not_found`,
    /// a stored response's 404): another account may serve it; this one is untouched.
    Elsewhere,
    /// 429: out until `until_ms` (unix ms), for one model family when the headers say so (or
    /// one model: `scheduler::scoped`).
    RateLimited {
        until_ms: i64,
        family: Option<Cow<'static, str>>,
        /// The answer names a limit of the model asked for (OpenAI's "Rate limit reached for
        /// <model> in organization …", a Google quota per model): `scheduler::scoped` holds it
        /// for that model only.
        per_model: bool,
    },
    /// 529 or `overloaded_error`: a fixed cooldown.
    Overloaded,
    /// Out of credit or quota (402, Anthropic's "credit balance is too low", OpenAI's
    /// `insufficient_quota`, Google's `BILLING_DISABLED`): out for the longest failure cooldown,
    /// then tried again, since someone may have paid meanwhile.
    Exhausted,
    /// 5xx, connect errors, timeouts: a cooldown that grows with consecutive failures.
    Failing,
    /// 401, or a 400/403 that says the credential itself was refused (Google's
    /// `API_KEY_INVALID`, `SERVICE_DISABLED`, …): out of rotation until an admin resets it.
    Unauthorized,
}

impl Verdict {
    /// Whether the request may go to another account (nothing has reached the client yet).
    pub fn may_fail_over(&self) -> bool {
        !matches!(self, Verdict::Healthy | Verdict::ClientFault)
    }
}

/// Whether the verdict on an answer of this status depends on its body, which the relay then
/// reads whole before judging (error bodies are small).
pub fn reads_body(status: u16) -> bool {
    matches!(status, 400 | 402 | 403 | 429)
}

pub fn judge(outcome: Outcome<'_>, now_ms: i64, default_rate_limit: Duration) -> Verdict {
    let (status, headers, body) = match outcome {
        Outcome::ConnectError | Outcome::Timeout => return Verdict::Failing,
        Outcome::Response {
            status,
            headers,
            body,
        } => (status, headers, body),
    };
    // Read once, for the statuses that depend on it.
    let detail = if reads_body(status) {
        error_detail(body)
    } else {
        None
    };
    let detail = detail.as_ref();
    let account = || detail.and_then(account_fault);
    match status {
        200..=399 => Verdict::Healthy,
        401 => Verdict::Unauthorized,
        402 => Verdict::Exhausted,
        400 if detail.is_some_and(held_elsewhere) => Verdict::Elsewhere,
        400 => account().unwrap_or(Verdict::ClientFault),
        403 => account().unwrap_or(Verdict::Refused),
        429 => {
            if let Some(Verdict::Exhausted) = account() {
                return Verdict::Exhausted;
            }
            let (until_ms, family) = rate_limit_reset(headers, now_ms)
                .or_else(|| {
                    let delay = detail.and_then(|d| retry_delay(d, now_ms))?;
                    Some((now_ms.saturating_add(delay), None))
                })
                .unwrap_or((now_ms + millis(default_rate_limit), None));
            Verdict::RateLimited {
                until_ms: until_ms.max(now_ms),
                family: family.map(Cow::Borrowed),
                per_model: detail.is_some_and(names_a_model_limit),
            }
        }
        529 => Verdict::Overloaded,
        500..=599 => Verdict::Failing,
        _ => Verdict::ClientFault,
    }
}

/// The parts of an error body, in any of the three vendors' shapes, that say whether the
/// account is at fault.
#[derive(Debug, Default, serde::Deserialize)]
struct ErrorBody {
    #[serde(default)]
    error: Option<ErrorDetail>,
}

#[derive(Debug, Default, serde::Deserialize)]
struct ErrorDetail {
    /// Anthropic's and OpenAI's error type.
    #[serde(default, rename = "type")]
    kind: Option<String>,
    /// OpenAI's code (a string); Google's is the status number and is not read.
    #[serde(default)]
    code: Option<serde_json::Value>,
    #[serde(default)]
    message: Option<String>,
    /// Google's `ErrorInfo` (`reason`) and `RetryInfo` (`retryDelay`).
    #[serde(default)]
    details: Vec<GoogleDetail>,
    /// The Codex backend's `usage_limit_reached`: when the subscription's spent window resets,
    /// in seconds from now or as unix seconds.
    #[serde(default)]
    resets_in_seconds: Option<f64>,
    #[serde(default)]
    resets_at: Option<f64>,
}

#[derive(Debug, Default, serde::Deserialize)]
struct GoogleDetail {
    #[serde(default)]
    reason: Option<String>,
    #[serde(default, rename = "retryDelay")]
    retry_delay: Option<String>,
    /// `QuotaFailure`'s quotas exceeded.
    #[serde(default)]
    violations: Vec<QuotaViolation>,
}

#[derive(Debug, Default, serde::Deserialize)]
struct QuotaViolation {
    /// `GenerateRequestsPerMinutePerProjectPerModel-FreeTier`, …
    #[serde(default, rename = "quotaId")]
    quota_id: Option<String>,
    #[serde(default, rename = "quotaDimensions")]
    quota_dimensions: Option<QuotaDimensions>,
}

#[derive(Debug, Default, serde::Deserialize)]
struct QuotaDimensions {
    #[serde(default)]
    model: Option<serde::de::IgnoredAny>,
}

/// Whether a 429's body names a limit of one model: OpenAI's "Rate limit reached for <model>
/// in organization <org> on …" (whose limits are each model's), a Google quota with a model
/// dimension or a per-model id. Other OpenAI-compatible vendors may limit the whole account.
fn names_a_model_limit(detail: &ErrorDetail) -> bool {
    let openai = detail.message.as_deref().is_some_and(|m| {
        m.strip_prefix("Rate limit reached for ")
            .is_some_and(|rest| rest.contains(" in organization "))
    });
    openai
        || detail.details.iter().flat_map(|d| &d.violations).any(|v| {
            v.quota_dimensions
                .as_ref()
                .is_some_and(|d| d.model.is_some())
                || v.quota_id
                    .as_deref()
                    .is_some_and(|id| id.contains("PerModel"))
        })
}

fn error_detail(body: &[u8]) -> Option<ErrorDetail> {
    let body = body.trim_ascii_start();
    // Google answers some streamed calls' errors as a one-element array.
    let parsed = if body.starts_with(b"[") {
        serde_json::from_slice::<Vec<ErrorBody>>(body)
            .ok()?
            .into_iter()
            .next()?
    } else {
        serde_json::from_slice::<ErrorBody>(body).ok()?
    };
    parsed.error
}

/// Google's reasons that mean the credential or its project cannot be used at all. Not the
/// key restrictions that depend on headers the client sends and the relay forwards (`Referer`,
/// `X-Android-Package`, `X-Ios-Bundle-Identifier`): a key holder could set those off at will.
const CREDENTIAL_REASONS: [&str; 6] = [
    "API_KEY_INVALID",
    "API_KEY_SERVICE_BLOCKED",
    "API_KEY_IP_ADDRESS_BLOCKED",
    "SERVICE_DISABLED",
    "CONSUMER_SUSPENDED",
    "ACCESS_TOKEN_SCOPE_INSUFFICIENT",
];

/// OpenAI's codes (and error types) for an account that cannot be used at all, and for one
/// out of money.
const CREDENTIAL_CODES: [&str; 4] = [
    "invalid_api_key",
    "account_deactivated",
    "organization_deactivated",
    "unsupported_country_region_territory",
];
const EXHAUSTED_CODES: [&str; 3] = [
    "insufficient_quota",
    "billing_hard_limit_reached",
    "billing_not_active",
];

/// What an error body says about the account, when it says the account is at fault.
fn account_fault(detail: &ErrorDetail) -> Option<Verdict> {
    let code = detail.code.as_ref().and_then(|c| c.as_str());
    let kind = detail.kind.as_deref();
    let named = |list: &[&str]| {
        [code, kind]
            .into_iter()
            .flatten()
            .any(|c| list.contains(&c))
    };
    let reason = |list: &[&str]| {
        detail
            .details
            .iter()
            .filter_map(|d| d.reason.as_deref())
            .any(|r| list.contains(&r))
    };
    // Anthropic says these in words only. Vendors quote the client's own text in other errors
    // (an unknown field's name opens the message, a model name ends it), so a whole sentence of
    // the vendor's, start and end, is required: no key holder can write both.
    let message = detail.message.as_deref().unwrap_or_default();
    let anthropic_says = |opening: &str, end: &str| {
        kind == Some("invalid_request_error")
            && message.starts_with(opening)
            && message.ends_with(end)
    };
    if named(&EXHAUSTED_CODES)
        || reason(&["BILLING_DISABLED"])
        || anthropic_says("Your credit balance is too low", "purchase credits.")
    {
        return Some(Verdict::Exhausted);
    }
    if named(&CREDENTIAL_CODES)
        || reason(&CREDENTIAL_REASONS)
        || anthropic_says("This organization has been disabled", "disabled.")
    {
        return Some(Verdict::Unauthorized);
    }
    None
}

/// Whether the error says the request names something another account may hold: OpenAI's
/// `previous_response_not_found` (a stored response lives on the account that made it).
fn held_elsewhere(detail: &ErrorDetail) -> bool {
    detail.code.as_ref().and_then(|c| c.as_str()) == Some("previous_response_not_found")
}

/// Google's `RetryInfo.retryDelay` (`"30s"`, `"1.5s"`), else the Codex backend's
/// `resets_in_seconds` or `resets_at` (a subscription's spent window), in ms from `now_ms`.
fn retry_delay(detail: &ErrorDetail, now_ms: i64) -> Option<i64> {
    let google = detail
        .details
        .iter()
        .filter_map(|d| d.retry_delay.as_deref())
        .find_map(parse_duration_ms);
    google
        .or_else(|| whole_ms(detail.resets_in_seconds? * 1000.0))
        .or_else(|| whole_ms(detail.resets_at? * 1000.0 - now_ms as f64))
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

/// When a 429 ends, from its headers: the latest reset among Anthropic's limits that are
/// exhausted (`anthropic-ratelimit-<limit>-remaining: 0` or `-status: rejected`), else
/// `retry-after-ms` or `retry-after`, else OpenAI's `x-ratelimit-reset-*`, else the earliest of
/// Anthropic's resets given. A limit whose name carries a model family (`…7d_opus…`)
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
    // Azure's milliseconds first: its `retry-after` rounds them up to whole seconds.
    let after = header(headers, "retry-after-ms")
        .and_then(|v| v.parse::<f64>().ok())
        .and_then(whole_ms)
        .map(|ms| now_ms.saturating_add(ms))
        .or_else(|| header(headers, "retry-after").and_then(|v| parse_retry_after(v, now_ms)));
    if let Some(after) = after {
        return Some((after, None));
    }
    if let Some(reset) = openai_reset(headers) {
        return Some((now_ms.saturating_add(reset), None));
    }
    any_reset.map(|r| (r, None))
}

/// OpenAI's `x-ratelimit-reset-requests` / `-tokens` (durations: `1s`, `6m0s`, `20ms`), in ms
/// from now: the later of the exhausted limits (`x-ratelimit-remaining-…: 0`), else the later of
/// those given.
fn openai_reset(headers: &HeaderMap) -> Option<i64> {
    let mut exhausted = None;
    let mut any = None;
    for limit in ["requests", "tokens"] {
        let Some(reset) =
            header(headers, &format!("x-ratelimit-reset-{limit}")).and_then(parse_duration_ms)
        else {
            continue;
        };
        any = any.max(Some(reset));
        if header(headers, &format!("x-ratelimit-remaining-{limit}")) == Some("0") {
            exhausted = exhausted.max(Some(reset));
        }
    }
    exhausted.or(any)
}

/// A duration in Go's notation (`1h2m3.5s`, `6m0s`, `20ms`), in ms.
fn parse_duration_ms(v: &str) -> Option<i64> {
    let mut rest = v.trim();
    let mut total = 0.0f64;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number: f64 = rest[..number_len].parse().ok()?;
        rest = &rest[number_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "h" => 3_600_000.0,
            "m" => 60_000.0,
            "s" => 1_000.0,
            "ms" => 1.0,
            "us" | "µs" => 0.001,
            "ns" => 0.000_001,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += number * scale;
    }
    whole_ms(total.ceil())
}

/// A count of milliseconds read as a float: none when negative or not a number, at most a
/// quarter of `i64::MAX` (so that adding it to a time cannot overflow).
fn whole_ms(ms: f64) -> Option<i64> {
    (ms.is_finite() && ms >= 0.0).then(|| ms.min(i64::MAX as f64 / 4.0) as i64)
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
        return whole_ms(secs * 1000.0).map(|ms| now_ms.saturating_add(ms));
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
    let ms = secs.saturating_mul(1000);
    (secs > 1_000_000_000)
        .then_some(ms)
        .or(Some(now_ms.saturating_add(ms)))
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 4)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
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
        judge_answer(status, h, "")
    }

    fn judge_answer(status: u16, h: &HeaderMap, body: &str) -> Verdict {
        judge(
            Outcome::Response {
                status,
                headers: h,
                body: body.as_bytes(),
            },
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
        assert_eq!(judge_status(403, &h), Verdict::Refused);
        assert_eq!(judge_status(402, &h), Verdict::Exhausted);
        for v in [
            Verdict::Unauthorized,
            Verdict::Refused,
            Verdict::Elsewhere,
            Verdict::Exhausted,
        ] {
            assert!(v.may_fail_over(), "{v:?}");
        }
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
                family: None,
                per_model: false
            }
        );
    }

    #[test]
    fn a_reset_beyond_any_clock_saturates() {
        assert_eq!(parse_reset("99999999999999999", NOW), Some(i64::MAX));
        assert_eq!(
            parse_reset("-99999999999999999", NOW),
            Some(NOW.saturating_add(i64::MIN))
        );
    }

    #[test]
    fn a_429_lasts_until_the_reset_its_headers_give() {
        let h = headers(&[("retry-after", "17")]);
        assert_eq!(
            judge_status(429, &h),
            Verdict::RateLimited {
                until_ms: NOW + 17_000,
                family: None,
                per_model: false
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
                family: None,
                per_model: false
            }
        );
        let h = headers(&[("retry-after", "Sun, 22 Nov 2026 08:32:00 GMT")]);
        assert_eq!(
            judge_status(429, &h),
            Verdict::RateLimited {
                until_ms: NOW + 120_000,
                family: None,
                per_model: false
            }
        );
    }

    #[test]
    fn error_bodies_that_blame_the_account_are_told_from_the_clients_faults() {
        let h = HeaderMap::new();
        let cases = [
            // Anthropic, out of credit (sent as a 400).
            (
                400,
                r#"{"type":"error","error":{"type":"invalid_request_error","message":"Your credit balance is too low to access the Anthropic API. Please go to Plans & Billing to upgrade or purchase credits."}}"#,
                Verdict::Exhausted,
            ),
            (
                400,
                r#"{"type":"error","error":{"type":"invalid_request_error","message":"max_tokens: 100000 > 64000"}}"#,
                Verdict::ClientFault,
            ),
            // Google: a key that is no longer valid (400), a project with the API disabled (403),
            // a file of another project (403, the request's doing), billing off.
            (
                400,
                r#"{"error":{"code":400,"message":"API key not valid. Please pass a valid API key.","status":"INVALID_ARGUMENT","details":[{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"API_KEY_INVALID","domain":"googleapis.com"}]}}"#,
                Verdict::Unauthorized,
            ),
            (
                403,
                r#"[{"error":{"code":403,"message":"disabled","status":"PERMISSION_DENIED","details":[{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"SERVICE_DISABLED"}]}}]"#,
                Verdict::Unauthorized,
            ),
            (
                403,
                r#"{"error":{"code":403,"message":"You do not have permission to access the File abc or it may not exist.","status":"PERMISSION_DENIED"}}"#,
                Verdict::Refused,
            ),
            (
                403,
                r#"{"error":{"code":403,"status":"PERMISSION_DENIED","details":[{"reason":"BILLING_DISABLED"}]}}"#,
                Verdict::Exhausted,
            ),
            // OpenAI: out of quota (sent as a 429), a revoked key's organisation.
            (
                429,
                r#"{"error":{"message":"You exceeded your current quota","type":"insufficient_quota","param":null,"code":"insufficient_quota"}}"#,
                Verdict::Exhausted,
            ),
            (
                403,
                r#"{"error":{"message":"Country, region, or territory not supported","type":"request_forbidden","code":"unsupported_country_region_territory"}}"#,
                Verdict::Unauthorized,
            ),
            (400, "not json", Verdict::ClientFault),
            // The vendors quote a client's unknown field names: a key holder must not be able to
            // write an account out of rotation.
            (
                400,
                r#"{"type":"error","error":{"type":"invalid_request_error","message":"Your credit balance is too low to access the Anthropic API. Please go to Plans & Billing to upgrade or purchase credits.: Extra inputs are not permitted"}}"#,
                Verdict::ClientFault,
            ),
            (
                400,
                r#"{"type":"error","error":{"type":"invalid_request_error","message":"This organization has been disabled.: Extra inputs are not permitted"}}"#,
                Verdict::ClientFault,
            ),
            (
                400,
                r#"{"error":{"code":400,"message":"Invalid JSON payload received. Unknown name \"credit balance is too low\": Cannot find field.","status":"INVALID_ARGUMENT"}}"#,
                Verdict::ClientFault,
            ),
            (
                400,
                r#"{"error":{"message":"Unrecognized request argument supplied: organization has been disabled","type":"invalid_request_error","code":null}}"#,
                Verdict::ClientFault,
            ),
            // A key restricted by referrer answers the client's own Referer.
            (
                403,
                r#"{"error":{"code":403,"status":"PERMISSION_DENIED","details":[{"reason":"API_KEY_HTTP_REFERRER_BLOCKED"}]}}"#,
                Verdict::Refused,
            ),
            (
                403,
                r#"{"type":"error","error":{"type":"invalid_request_error","message":"This organization has been disabled."}}"#,
                Verdict::Unauthorized,
            ),
            // A follow-up turn whose stored response another account holds.
            (
                400,
                r#"{"error":{"message":"Previous response with id 'resp_1' not found.","type":"invalid_request_error","param":"previous_response_id","code":"previous_response_not_found"}}"#,
                Verdict::Elsewhere,
            ),
        ];
        for (status, body, verdict) in cases {
            assert_eq!(judge_answer(status, &h, body), verdict, "{body}");
        }
    }

    #[test]
    fn a_429_naming_one_model_s_limit_is_told_from_an_account_wide_one() {
        let per_model = |body: &str| match judge_answer(429, &HeaderMap::new(), body) {
            Verdict::RateLimited { per_model, .. } => per_model,
            other => panic!("{other:?}"),
        };
        // OpenAI: the model and the organisation named.
        assert!(per_model(
            r#"{"error":{"message":"Rate limit reached for gpt-4o in organization org-abc on requests per min (RPM): Limit 500, Used 500, Requested 1. Please try again in 120ms.","type":"requests","param":null,"code":"rate_limit_exceeded"}}"#
        ));
        // Google: a quota with a model dimension, or a per-model quota id.
        assert!(per_model(
            r#"{"error":{"code":429,"status":"RESOURCE_EXHAUSTED","details":[{"@type":"type.googleapis.com/google.rpc.QuotaFailure","violations":[{"quotaMetric":"generativelanguage.googleapis.com/generate_content_free_tier_requests","quotaId":"GenerateRequestsPerMinutePerProjectPerModel-FreeTier","quotaDimensions":{"location":"global","model":"gemini-2.5-pro"},"quotaValue":"5"}]}]}}"#
        ));
        assert!(per_model(
            r#"{"error":{"details":[{"violations":[{"quotaId":"GenerateRequestsPerDayPerProjectPerModel"}]}]}}"#
        ));
        // Nothing says so: the whole account.
        assert!(!per_model(
            r#"{"error":{"message":"Requests rate limit exceeded","type":"rate_limit"}}"#
        ));
        assert!(!per_model(
            r#"{"error":{"message":"Rate limit reached for requests","code":"rate_limit_exceeded"}}"#
        ));
        assert!(!per_model(
            r#"{"error":{"code":429,"status":"RESOURCE_EXHAUSTED","details":[{"violations":[{"quotaId":"GenerateRequestsPerMinutePerProject"}]}]}}"#
        ));
        assert!(!per_model(""));
    }

    #[test]
    fn other_vendors_reset_hints_end_a_429() {
        // Google: only in the body.
        let body = r#"{"error":{"code":429,"status":"RESOURCE_EXHAUSTED","details":[{"@type":"type.googleapis.com/google.rpc.QuotaFailure"},{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"30s"}]}}"#;
        let limited = |until_ms| Verdict::RateLimited {
            until_ms,
            family: None,
            per_model: false,
        };
        assert_eq!(
            judge_answer(429, &HeaderMap::new(), body),
            limited(NOW + 30_000)
        );
        // The Codex backend: when the subscription's spent window resets.
        let chatgpt = r#"{"error":{"type":"usage_limit_reached","message":"The usage limit has been reached","plan_type":"plus","resets_in_seconds":5400}}"#;
        assert_eq!(
            judge_answer(429, &HeaderMap::new(), chatgpt),
            limited(NOW + 5_400_000)
        );
        let at = format!(
            r#"{{"error":{{"type":"usage_limit_reached","resets_at":{}}}}}"#,
            NOW / 1000 + 7200
        );
        assert_eq!(
            judge_answer(429, &HeaderMap::new(), &at),
            limited((NOW / 1000 + 7200) * 1000)
        );
        // OpenAI: the exhausted limit's reset, as a Go duration.
        let h = headers(&[
            ("x-ratelimit-remaining-requests", "12"),
            ("x-ratelimit-reset-requests", "1s"),
            ("x-ratelimit-remaining-tokens", "0"),
            ("x-ratelimit-reset-tokens", "6m0s"),
        ]);
        assert_eq!(judge_status(429, &h), limited(NOW + 360_000));
        let h = headers(&[("x-ratelimit-reset-requests", "20ms")]);
        assert_eq!(judge_status(429, &h), limited(NOW + 20));
        // Azure: milliseconds before the rounded seconds.
        let h = headers(&[("retry-after-ms", "1500"), ("retry-after", "2")]);
        assert_eq!(judge_status(429, &h), limited(NOW + 1_500));
        for (v, ms) in [
            ("1h2m3.5s", Some(3_723_500)),
            ("0s", Some(0)),
            ("250ms", Some(250)),
            ("", None),
            ("5 minutes", None),
            ("-1s", None),
        ] {
            assert_eq!(parse_duration_ms(v), ms, "{v}");
        }
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
                family: Some("opus".into()),
                per_model: false
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
