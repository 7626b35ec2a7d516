//! Subscription accounts' OAuth access tokens, renewed before they expire.
//!
//! An account with an `oauth` grant (`store::OAuthGrant`) holds an access token as its api key
//! and a refresh token beside it, both sealed. A task on every instance looks at those accounts
//! every `upstream.oauth_check_ms`; one is renewed when its token expires within
//! `upstream.oauth_refresh_before_secs`, when its expiry is unknown, or when the vendor refused
//! its token (a 401 marked it unauthorized) after its last renewal. A renewal is the refresh-token
//! grant (RFC 6749 §6) at the grant's token endpoint, as JSON, as the CLIs that log in to these
//! subscriptions send it; the new access token (and the new refresh token, for vendors that
//! rotate them) is sealed into the account's record, which every instance then reloads.
//!
//! Vendors that rotate refresh tokens take each one once: a second renewal with the same token
//! is refused, and the grant is lost. So one renewal runs at a time per process, and across
//! instances sharing a store only the one that claims the account (`Store::claim`) renews it;
//! the others see the new record through the store's change feed. Nothing on the request path
//! waits for a renewal: a request meets either the old token, still valid, or the new one.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, header};
use serde::Deserialize;

use crate::app::App;
use crate::scheduler::policy::Status;
use crate::store::{AccountRecord, OAuthGrant, StoreError};

/// How long a token endpoint has to answer.
const TOKEN_TIMEOUT: Duration = Duration::from_secs(30);
/// The most of a token endpoint's answer that is read.
const MAX_ANSWER_BYTES: usize = 64 * 1024;
/// How long an account stays claimed by the instance renewing it: longer than a renewal takes.
const CLAIM_TTL: Duration = Duration::from_secs(60);
/// A token the vendor refused is renewed at most this often: a vendor that also refuses the
/// renewed one leaves the account unauthorized instead of renewed on every check.
const MIN_GAP_AFTER_REFUSAL_MS: i64 = 5 * 60 * 1000;
/// A token whose expiry neither the endpoint nor the token says is taken to last this long.
const ASSUMED_LIFETIME_MS: i64 = 60 * 60 * 1000;
/// After a renewal failed for a reason that may pass (the endpoint down, a timeout), the next
/// try waits this long, doubling to `MAX_RETRY_MS`.
const FIRST_RETRY_MS: i64 = 10_000;
const MAX_RETRY_MS: i64 = 10 * 60 * 1000;

/// The associated data a grant's refresh token is sealed under: not the account id alone, so
/// that a sealed refresh token cannot be passed off as the account's api key, nor the reverse.
pub fn refresh_aad(account_id: &str) -> String {
    format!("{account_id}/oauth-refresh")
}

/// Unix ms a JWT access token expires at (its `exp` claim), if it is a JWT that says so. The
/// signature is not checked: the relay only schedules its renewal by it.
pub fn jwt_expiry_ms(token: &str) -> Option<i64> {
    let claims = jwt_claims(token)?;
    let exp = claims.get("exp")?.as_f64()?;
    (exp.is_finite() && exp > 0.0).then_some((exp * 1000.0) as i64)
}

/// The claims of a JWT (its payload), unverified.
pub fn jwt_claims(token: &str) -> Option<serde_json::Map<String, serde_json::Value>> {
    let mut parts = token.split('.');
    let (_, payload, _) = (parts.next()?, parts.next()?, parts.next()?);
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    match serde_json::from_slice(&raw).ok()? {
        serde_json::Value::Object(claims) => Some(claims),
        _ => None,
    }
}

/// Whether `grant`'s token is to be renewed at `now`: it expires within `before_ms` or its
/// expiry is unknown, or the vendor refused it (`refused_at`, unix ms of the 401 that marked
/// the account unauthorized) after its last renewal and not within minutes of it. Never once
/// the grant was refused for good.
pub fn due(grant: &OAuthGrant, refused_at: Option<i64>, now: i64, before_ms: i64) -> bool {
    if grant.failure.is_some() {
        return false;
    }
    let expiring = grant.expires_at == 0 || grant.expires_at - now <= before_ms;
    let refused = refused_at.is_some_and(|at| {
        at >= grant.refreshed_at && now - grant.refreshed_at >= MIN_GAP_AFTER_REFUSAL_MS
    });
    expiring || refused
}

/// A token endpoint's successful answer.
#[derive(Debug, Deserialize)]
struct Tokens {
    access_token: String,
    #[serde(default)]
    refresh_token: Option<String>,
    /// Seconds; some endpoints send a number with a fraction.
    #[serde(default)]
    expires_in: Option<f64>,
}

/// A token endpoint's error (RFC 6749 §5.2), where it follows the RFC.
#[derive(Debug, Deserialize)]
struct TokenError {
    error: serde_json::Value,
    #[serde(default)]
    error_description: Option<String>,
}

/// What a renewal did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Renewed {
    /// A new access token is in the record, valid until this unix ms.
    Done { expires_at: i64 },
    /// Nothing to do: not due (a forced renewal is always due).
    NotDue,
    /// Another instance is renewing it now.
    Busy,
    /// The record changed while the renewal ran (an admin gave it a new grant or key): the
    /// renewal's tokens were dropped, the admin's kept.
    Superseded,
}

#[derive(Debug, thiserror::Error)]
pub enum RenewError {
    #[error("account {0} has no OAuth grant")]
    NoGrant(String),
    #[error("no account with id {0}")]
    NotFound(String),
    /// The endpoint refused the grant (`invalid_grant`, a revoked or spent refresh token, an
    /// unknown client): it is not tried again until the account is given a new one.
    #[error("the token endpoint refused the grant: {0}")]
    Refused(String),
    /// It may pass: the endpoint unreachable, slow or failing, an answer without a token.
    #[error("renewing the token failed: {0}")]
    Failed(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The renewals of one process: one at a time, and a pause after each failure that may pass.
#[derive(Default)]
pub struct Renewer {
    running: tokio::sync::Mutex<()>,
    /// Account id → (unix ms before which it is not tried again, failures in a row).
    retry: std::sync::Mutex<HashMap<String, (i64, u32)>>,
    /// Wakes the task of [`spawn`] before its next check.
    wake: Arc<tokio::sync::Notify>,
}

impl Renewer {
    /// Has the accounts looked at now rather than at the next check: the vendor refused an
    /// account's token (the request path calls it, so it only signals).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Renews account `id`'s token if it is due (always when `force`), as the module says.
    pub async fn renew(&self, app: &App, id: &str, force: bool) -> Result<Renewed, RenewError> {
        let _one_at_a_time = self.running.lock().await;
        let now = app.clock.now_ms();
        let record = app
            .store()
            .account(id)
            .await?
            .ok_or_else(|| RenewError::NotFound(id.to_owned()))?;
        let grant = record
            .oauth
            .clone()
            .ok_or_else(|| RenewError::NoGrant(id.to_owned()))?;
        let refused = refused_at(app, id, now).await?;
        if !force {
            let before_ms = i64::try_from(app.config.upstream.oauth_refresh_before_secs)
                .unwrap_or(i64::MAX / 2)
                .saturating_mul(1000);
            if !due(&grant, refused, now, before_ms) || self.waiting(id, now) {
                return Ok(Renewed::NotDue);
            }
        }
        if !app.store().claim(&format!("oauth:{id}"), CLAIM_TTL).await? {
            return Ok(Renewed::Busy);
        }
        let result = self.exchange(app, &record, &grant, refused.is_some()).await;
        self.note(id, &result, app.clock.now_ms());
        result
    }

    /// Whether a failure that may pass still holds off account `id`'s next try.
    fn waiting(&self, id: &str, now: i64) -> bool {
        let retry = self.retry.lock().unwrap_or_else(|p| p.into_inner());
        retry.get(id).is_some_and(|(at, _)| now < *at)
    }

    fn note(&self, id: &str, result: &Result<Renewed, RenewError>, now: i64) {
        let mut retry = self.retry.lock().unwrap_or_else(|p| p.into_inner());
        match result {
            Err(RenewError::Failed(_)) => {
                let fails = retry.get(id).map_or(0, |(_, n)| *n) + 1;
                let pause = FIRST_RETRY_MS
                    .saturating_mul(1 << (fails - 1).min(16))
                    .min(MAX_RETRY_MS);
                retry.insert(id.to_owned(), (now + pause, fails));
            }
            _ => {
                retry.remove(id);
            }
        }
    }

    /// The grant exchanged for new tokens, written into the account's record.
    async fn exchange(
        &self,
        app: &App,
        record: &AccountRecord,
        grant: &OAuthGrant,
        was_refused: bool,
    ) -> Result<Renewed, RenewError> {
        let id = &record.id;
        let master = app.catalog.master_key();
        let refresh_token = master
            .open(&refresh_aad(id), &grant.sealed_refresh_token)
            .map_err(|_| RenewError::Refused("the sealed refresh token cannot be opened".into()))?;
        let answer = match request_tokens(app, grant, &refresh_token).await {
            Ok(tokens) => tokens,
            Err(RenewError::Refused(why)) => {
                tracing::warn!(account_id = %id, reason = %why, "the token endpoint refused the account's OAuth grant; it needs a new one");
                let failure = why.clone();
                write(app, id, &grant.sealed_refresh_token, |record| {
                    if let Some(g) = &mut record.oauth {
                        g.failure = Some(failure);
                    }
                })
                .await?;
                return Err(RenewError::Refused(why));
            }
            Err(e) => return Err(e),
        };
        let now = app.clock.now_ms();
        let expires_at = match answer.expires_in {
            Some(secs) if secs.is_finite() && secs > 0.0 => now + (secs * 1000.0) as i64,
            _ => jwt_expiry_ms(&answer.access_token).unwrap_or(now + ASSUMED_LIFETIME_MS),
        };
        let seal = |aad: &str, plain: &str| {
            master
                .seal(aad, plain)
                .map_err(|_| RenewError::Failed("the new token could not be sealed".into()))
        };
        let sealed_access = seal(id, &answer.access_token)?;
        let sealed_refresh = match &answer.refresh_token {
            Some(rotated) if !rotated.is_empty() => seal(&refresh_aad(id), rotated)?,
            _ => grant.sealed_refresh_token.clone(),
        };
        let written = write(app, id, &grant.sealed_refresh_token, |record| {
            record.sealed_api_key = sealed_access;
            if let Some(g) = &mut record.oauth {
                g.sealed_refresh_token = sealed_refresh;
                g.expires_at = expires_at;
                g.refreshed_at = now;
                g.failure = None;
            }
        })
        .await?;
        if !written {
            tracing::warn!(account_id = %id, "the account changed while its OAuth token was renewed; the renewed token was dropped");
            return Ok(Renewed::Superseded);
        }
        if was_refused {
            app.store().reset_health(id).await?;
        }
        tracing::info!(account_id = %id, expires_at, "renewed the account's OAuth access token");
        Ok(Renewed::Done { expires_at })
    }
}

/// Applies `change` to account `id`'s record as the store has it now, unless its grant is no
/// longer the one renewed (`renewed`, the sealed refresh token used): an admin gave the account
/// a new grant or took it away meanwhile, and theirs wins. Then this instance's accounts are
/// reloaded (the others follow the store's change feed). `false` when nothing was written.
///
/// Read, then written: an admin's change of another field landing between the two is lost.
/// The window is one store round trip; admin changes of a subscription account are rare.
async fn write(
    app: &App,
    id: &str,
    renewed: &str,
    change: impl FnOnce(&mut AccountRecord),
) -> Result<bool, StoreError> {
    let Some(mut record) = app.store().account(id).await? else {
        return Ok(false);
    };
    if record
        .oauth
        .as_ref()
        .map(|g| g.sealed_refresh_token.as_str())
        != Some(renewed)
    {
        return Ok(false);
    }
    change(&mut record);
    if !app.store().update_account(&record).await? {
        return Ok(false);
    }
    app.catalog.reload_accounts().await?;
    Ok(true)
}

/// Unix ms the vendor last refused the account's token, when that left it unauthorized now.
async fn refused_at(app: &App, id: &str, now: i64) -> Result<Option<i64>, StoreError> {
    let health = app.store().account_runtime(id).await?.health;
    Ok((health.status_at(now) == Status::Unauthorized).then_some(health.last_error_at))
}

/// The refresh-token grant at `grant.token_url`.
async fn request_tokens(
    app: &App,
    grant: &OAuthGrant,
    refresh_token: &str,
) -> Result<Tokens, RenewError> {
    let body = serde_json::json!({
        "grant_type": "refresh_token",
        "refresh_token": refresh_token,
        "client_id": grant.client_id,
    });
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
    let send = app.http().send(
        http::Method::POST,
        grant.token_url.clone(),
        headers,
        Bytes::from(body.to_string()),
    );
    let resp = match tokio::time::timeout(TOKEN_TIMEOUT, send).await {
        Ok(Ok(resp)) => resp,
        Ok(Err(e)) => {
            return Err(RenewError::Failed(format!("token endpoint: {}", e.message)));
        }
        Err(_) => {
            return Err(RenewError::Failed(format!(
                "the token endpoint did not answer within {} s",
                TOKEN_TIMEOUT.as_secs()
            )));
        }
    };
    let status = resp.status();
    let body =
        crate::upstream_client::read_capped(resp.into_body(), MAX_ANSWER_BYTES, TOKEN_TIMEOUT)
            .await;
    judge(status, &body)
}

/// A token endpoint's answer: the tokens, or why not. A 400 or 401 refuses the grant for good
/// (RFC 6749 §5.2: `invalid_grant`, `invalid_client`, ...); anything else may pass.
fn judge(status: http::StatusCode, body: &[u8]) -> Result<Tokens, RenewError> {
    if status.is_success() {
        return match serde_json::from_slice::<Tokens>(body) {
            Ok(tokens) if !tokens.access_token.is_empty() => Ok(tokens),
            _ => Err(RenewError::Failed(format!(
                "the token endpoint answered {status} without an access token"
            ))),
        };
    }
    let reason = match serde_json::from_slice::<TokenError>(body) {
        Ok(TokenError {
            error,
            error_description,
        }) => {
            let error = match error {
                serde_json::Value::String(s) => s,
                other => other.to_string(),
            };
            match error_description {
                Some(d) => format!("{error}: {d}"),
                None => error,
            }
        }
        Err(_) => String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned(),
    };
    let reason = format!("{status}: {reason}");
    if matches!(status.as_u16(), 400 | 401 | 403) {
        Err(RenewError::Refused(reason))
    } else {
        Err(RenewError::Failed(reason))
    }
}

/// Starts this instance's renewals: every `upstream.oauth_check_ms`, and when woken
/// ([`Renewer::wake`]), each enabled account with a grant not refused for good is renewed if due. Stopped by the app being dropped (the next
/// tick finds no app), or the runtime's end.
pub fn spawn(app: &Arc<App>) {
    let weak = Arc::downgrade(app);
    let every = Duration::from_millis(app.config.upstream.oauth_check_ms.max(10));
    let wake = Arc::clone(&app.oauth.wake);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = wake.notified() => {}
            }
            let Some(app) = weak.upgrade() else { return };
            let ids: Vec<String> = app
                .catalog
                .accounts()
                .iter()
                .filter(|a| {
                    a.record.enabled && a.record.oauth.as_ref().is_some_and(|g| g.failure.is_none())
                })
                .map(|a| a.id().to_owned())
                .collect();
            for id in ids {
                match app.oauth.renew(&app, &id, false).await {
                    // Logged where it was judged.
                    Ok(_) | Err(RenewError::Refused(_)) => {}
                    // Deleted meanwhile, or its grant taken away.
                    Err(RenewError::NotFound(_) | RenewError::NoGrant(_)) => {}
                    Err(e) => {
                        tracing::warn!(account_id = %id, error = %e, "renewing an account's OAuth token failed; tried again later");
                    }
                }
            }
        }
    });
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000_000;
    const BEFORE: i64 = 600_000;

    fn grant(expires_at: i64, refreshed_at: i64) -> OAuthGrant {
        OAuthGrant {
            token_url: "https://auth.example.com/oauth/token".into(),
            client_id: "client".into(),
            sealed_refresh_token: "sealed".into(),
            expires_at,
            refreshed_at,
            failure: None,
        }
    }

    #[test]
    fn a_token_is_renewed_before_it_expires_or_after_the_vendor_refused_it() {
        // Far from its expiry: not due; within the margin, unknown or past: due.
        assert!(!due(&grant(NOW + 3_600_000, 0), None, NOW, BEFORE));
        assert!(due(&grant(NOW + BEFORE, 0), None, NOW, BEFORE));
        assert!(due(&grant(NOW - 1, 0), None, NOW, BEFORE));
        assert!(due(&grant(0, 0), None, NOW, BEFORE));
        // Refused (a 401) after the last renewal: due, unless that renewal was minutes ago.
        let renewed_long_ago = grant(NOW + 3_600_000, NOW - 3_600_000);
        assert!(due(&renewed_long_ago, Some(NOW - 1_000), NOW, BEFORE));
        let renewed_just_now = grant(NOW + 3_600_000, NOW - 1_000);
        assert!(!due(&renewed_just_now, Some(NOW - 500), NOW, BEFORE));
        // A refusal from before the last renewal was about the old token.
        assert!(!due(&renewed_long_ago, Some(NOW - 7_200_000), NOW, BEFORE));
        // A grant refused for good is not tried again, however expired.
        let mut spent = grant(NOW - 1, 0);
        spent.failure = Some("400: invalid_grant".into());
        assert!(!due(&spent, Some(NOW), NOW, BEFORE));
    }

    #[test]
    fn token_answers_are_judged_as_rfc_6749_says() {
        let ok = judge(
            http::StatusCode::OK,
            br#"{"access_token":"at-2","refresh_token":"rt-2","expires_in":28800,"token_type":"Bearer"}"#,
        )
        .unwrap();
        assert_eq!(ok.access_token, "at-2");
        assert_eq!(ok.refresh_token.as_deref(), Some("rt-2"));
        assert_eq!(ok.expires_in, Some(28_800.0));
        // Without a new refresh token (the old one stays) or an expiry (read from the token).
        let bare = judge(http::StatusCode::OK, br#"{"access_token":"at-3"}"#).unwrap();
        assert_eq!((bare.refresh_token, bare.expires_in), (None, None));
        // A success without a token may pass; so may a 5xx or a 429.
        for (status, body) in [
            (200, &br#"{"access_token":""}"#[..]),
            (200, b"<html>"),
            (500, b"oops"),
            (429, br#"{"error":"slow_down"}"#),
        ] {
            let status = http::StatusCode::from_u16(status).unwrap();
            assert!(
                matches!(judge(status, body), Err(RenewError::Failed(_))),
                "{status}"
            );
        }
        // The grant refused: for good, with the endpoint's reason.
        let refused = judge(
            http::StatusCode::BAD_REQUEST,
            br#"{"error":"invalid_grant","error_description":"Refresh token already used"}"#,
        );
        match refused {
            Err(RenewError::Refused(why)) => {
                assert_eq!(
                    why,
                    "400 Bad Request: invalid_grant: Refresh token already used"
                );
            }
            other => panic!("{other:?}"),
        }
        // OpenAI's auth server nests its error.
        let nested = judge(
            http::StatusCode::UNAUTHORIZED,
            br#"{"error":{"message":"Your refresh token has already been used","code":"refresh_token_reused"}}"#,
        );
        assert!(
            matches!(nested, Err(RenewError::Refused(why)) if why.contains("refresh_token_reused"))
        );
    }

    #[test]
    fn a_jwt_tells_when_it_expires() {
        use base64::Engine as _;
        let b64 = |v: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
        let token = format!("{}.{}.sig", b64("{}"), b64(r#"{"exp":1800000000.5}"#));
        assert_eq!(jwt_expiry_ms(&token), Some(1_800_000_000_500));
        assert_eq!(jwt_expiry_ms("sk-ant-oat01-opaque"), None);
        assert_eq!(
            jwt_expiry_ms(&format!("{}.{}.s", b64("{}"), b64("[1]"))),
            None
        );
        assert_eq!(
            jwt_expiry_ms(&format!("{}.{}.s", b64("{}"), b64(r#"{"exp":-5}"#))),
            None
        );
        // The refresh token is sealed apart from the api key.
        assert_ne!(refresh_aad("acct_1"), "acct_1");
    }
}
