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
//! instances sharing a store only the one that claims the account (`Store::claim`) renews it,
//! reading the record again under the claim; the others see the new record through the store's
//! change feed. The renewal writes over the revision of the record it read only
//! (`Store::update_account_checked`), as an admin's change does: neither loses the other, and a
//! spent refresh token never comes back. Tokens the endpoint issued that the store did not take
//! are kept, the account still claimed, and written at the next try. Nothing on the request path
//! waits for a renewal: a request meets either the old token, still valid, or the new one.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, header};

use crate::app::App;
use crate::notify::{Event, Notice};
use crate::scheduler::policy::Status;
use crate::store::{AccountRecord, OAuthGrant, StoreError};

/// Renewals of a refused token failed in a row before the operators are told (`notify`).
const FAILURES_TOLD: u32 = 3;

/// How long a token endpoint has to send its answer's head, and then its body: a renewal
/// ends well within its claim.
const TOKEN_TIMEOUT: Duration = Duration::from_secs(20);
const TOKEN_BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// The most of a token endpoint's answer that is read.
const MAX_ANSWER_BYTES: usize = 64 * 1024;
/// How long an account stays claimed by the instance renewing it (unless it gives the claim
/// up): longer than a renewal takes (the endpoint's 30 s at most, and a few store calls), and
/// than three checks, so that tokens kept for the next try keep the account claimed till then.
fn claim_ttl(app: &App) -> Duration {
    Duration::from_secs(120).max(Duration::from_millis(app.config.upstream.oauth_check_ms) * 3)
}
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

/// The associated data a grant's client secret is sealed under (see [`refresh_aad`]).
pub fn client_secret_aad(account_id: &str) -> String {
    format!("{account_id}/oauth-client-secret")
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

/// Whether `grant`'s token is to be renewed at `now`: it expires within `before_ms` (or half its
/// lifetime, when that is shorter: a token that lasts less than the margin is not renewed at
/// every check), or its expiry is unknown, or the vendor refused it (`refused_at`, unix ms of
/// the 401 that marked the account unauthorized) after its last renewal. Never once the grant
/// was refused for good.
pub fn due(grant: &OAuthGrant, refused_at: Option<i64>, now: i64, before_ms: i64) -> bool {
    if grant.failure.is_some() {
        return false;
    }
    let lifetime = grant.expires_at - grant.refreshed_at;
    let margin = if grant.refreshed_at > 0 && lifetime > 0 {
        before_ms.min(lifetime / 2)
    } else {
        before_ms
    };
    let expiring = grant.expires_at == 0 || grant.expires_at.saturating_sub(now) <= margin;
    let refused = refused_at.is_some_and(|at| at >= grant.refreshed_at);
    expiring || refused
}

/// A token endpoint's successful answer. Not `Debug`: it holds the tokens in the clear.
struct Tokens {
    access_token: String,
    refresh_token: Option<String>,
    /// Seconds, when the endpoint says (a number, with a fraction or not, or a numeric string).
    expires_in: Option<f64>,
}

impl Tokens {
    /// Read leniently: once the endpoint answered, the old refresh token may be spent, so
    /// anything that holds an access token is taken.
    fn read(body: &[u8]) -> Option<Tokens> {
        let answer: serde_json::Value = serde_json::from_slice(body).ok()?;
        let text = |name: &str| {
            answer
                .get(name)
                .and_then(|v| v.as_str())
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
        };
        let expires_in = answer.get("expires_in").and_then(|v| match v {
            serde_json::Value::String(s) => s.trim().parse::<f64>().ok(),
            v => v.as_f64(),
        });
        Some(Tokens {
            access_token: text("access_token")?,
            refresh_token: text("refresh_token"),
            expires_in,
        })
    }

    /// Unix ms the access token expires at: `expires_in` from `now` (at most ten years), else
    /// the token's own expiry, else an hour.
    fn expires_at(&self, now: i64) -> i64 {
        const MAX_SECS: f64 = 10.0 * 365.0 * 86_400.0;
        match self.expires_in {
            Some(secs) if secs.is_finite() && secs > 0.0 => {
                now.saturating_add((secs.min(MAX_SECS) * 1000.0) as i64)
            }
            _ => jwt_expiry_ms(&self.access_token).unwrap_or(now + ASSUMED_LIFETIME_MS),
        }
    }
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
    /// The record changed while the renewal ran (an admin gave it a new grant or took it
    /// away): the renewal's tokens were dropped, the admin's kept.
    Superseded,
}

#[derive(Debug, thiserror::Error)]
pub enum RenewError {
    #[error("account {0} has no OAuth grant")]
    NoGrant(String),
    #[error("no account with id {0}")]
    NotFound(String),
    /// The grant cannot be used again (the endpoint refused it: `invalid_grant`, a revoked or
    /// spent refresh token, an unknown client; or the vendor refused a token renewed after a
    /// refusal too): it is not tried again until the account is given a new one.
    #[error("the grant was refused: {0}")]
    Refused(String),
    /// It may pass: the endpoint unreachable, slow or failing, an answer without a token, the
    /// store failing to take the new tokens (kept, and written at the next try).
    #[error("renewing the token failed: {0}")]
    Failed(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// New tokens the endpoint issued for a grant, sealed, that the store has not taken yet: the
/// refresh token they replace is spent, so they are written at the next try instead of asking
/// the endpoint again, and the account stays claimed by the renewal that got them (`owner`) until
/// then, or until the claim lapses: no other instance spends the old refresh token meanwhile.
#[derive(Clone)]
struct Issued {
    owner: String,
    /// The sealed refresh token they were issued for.
    for_grant: String,
    sealed_access: String,
    sealed_refresh: String,
    expires_at: i64,
    at: i64,
}

/// The renewals of one process: one at a time, and a pause after each failure that may pass.
#[derive(Default)]
pub struct Renewer {
    running: tokio::sync::Mutex<()>,
    /// Account id → (unix ms before which it is not tried again, failures in a row).
    retry: std::sync::Mutex<HashMap<String, (i64, u32)>>,
    /// Account id → tokens issued but not yet written.
    pending: std::sync::Mutex<HashMap<String, Issued>>,
    /// Wakes the task of [`spawn`] before its next check.
    wake: Arc<tokio::sync::Notify>,
}

impl Renewer {
    /// Tokens waiting to be written, by account id (a poisoned lock still holds them).
    fn pending(&self) -> std::sync::MutexGuard<'_, HashMap<String, Issued>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Failures in a row, by account id.
    fn retries(&self) -> std::sync::MutexGuard<'_, HashMap<String, (i64, u32)>> {
        self.retry.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Has the accounts looked at now rather than at the next check: the vendor refused an
    /// account's token (the request path calls it, so it only signals).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Renews account `id`'s token if it is due (always when `force`), as the module says.
    pub async fn renew(&self, app: &App, id: &str, force: bool) -> Result<Renewed, RenewError> {
        let _one_at_a_time = self.running.lock().await;
        let now = app.clock.now_ms();
        let (record, grant) = match self.grant_of(app, id).await {
            Ok(found) => found,
            Err(e) => {
                // Deleted, or its grant taken away: tokens kept for it have nowhere to go.
                self.pending().remove(id);
                return Err(e);
            }
        };
        let refused = refused_at(app, id, now).await?;
        // Tokens kept for the next try are not held off: their claim must not lapse first.
        let held_off = self.waiting(id, now) && !self.has_pending(id);
        if !force && (!self.is_due(app, id, &grant, refused, now) || held_off) {
            return Ok(Renewed::NotDue);
        }
        let claim = format!("oauth:{id}");
        let owner = self
            .pending_owner(id)
            .unwrap_or_else(|| crate::auth::new_id("renewal"));
        if !app.store().claim(&claim, &owner, claim_ttl(app)).await? {
            return Ok(Renewed::Busy);
        }
        let result = async {
            // Read again under the claim: another instance may have renewed it meanwhile.
            let (record, grant) = self.grant_of(app, id).await?;
            let refused = refused_at(app, id, now).await?;
            if !force && !self.is_due(app, id, &grant, refused, now) {
                return Ok(Renewed::NotDue);
            }
            self.exchange(app, &record, &grant, refused, &owner).await
        }
        .await;
        // Given up for the next renewal to go at once (not while tokens it got wait to be
        // written); a claim left behind lapses by itself.
        if !self.has_pending(id)
            && let Err(e) = app.store().unclaim(&claim, &owner).await
        {
            tracing::debug!(account_id = %id, error = %e, "could not give up a renewal's claim");
        }
        self.note(id, &result, app.clock.now_ms());
        // Refused by the vendor and not renewed, again and again (the endpoint down, the
        // account's proxy too): out of rotation with no end in sight, which the operators hear
        // of once (a grant the endpoint refuses is told as such).
        if let Err(RenewError::Failed(why)) = &result
            && refused.is_some()
            && self
                .retries()
                .get(id)
                .is_some_and(|(_, n)| *n == FAILURES_TOLD)
        {
            let detail = format!(
                "its token was refused, and {FAILURES_TOLD} renewals in a row failed: {why}"
            );
            app.notify.tell(Notice::of(
                &record,
                Event::AccountUnauthorized,
                None,
                detail,
                app.clock.now_ms(),
            ));
        }
        result
    }

    async fn grant_of(
        &self,
        app: &App,
        id: &str,
    ) -> Result<(AccountRecord, OAuthGrant), RenewError> {
        let record = app
            .store()
            .account(id)
            .await?
            .ok_or_else(|| RenewError::NotFound(id.to_owned()))?;
        let grant = record
            .oauth
            .clone()
            .ok_or_else(|| RenewError::NoGrant(id.to_owned()))?;
        Ok((record, grant))
    }

    /// Whether account `id` is to be renewed now: its grant is due, or tokens issued for it
    /// wait to be written.
    fn is_due(
        &self,
        app: &App,
        id: &str,
        grant: &OAuthGrant,
        refused: Option<i64>,
        now: i64,
    ) -> bool {
        let before_ms = i64::try_from(app.config.upstream.oauth_refresh_before_secs)
            .unwrap_or(i64::MAX / 2)
            .saturating_mul(1000);
        self.has_pending(id) || due(grant, refused, now, before_ms)
    }

    /// Whether a failure that may pass still holds off account `id`'s next try.
    fn waiting(&self, id: &str, now: i64) -> bool {
        let retry = self.retries();
        retry.get(id).is_some_and(|(at, _)| now < *at)
    }

    fn note(&self, id: &str, result: &Result<Renewed, RenewError>, now: i64) {
        let outcome = match result {
            Ok(Renewed::Done { .. }) => Some("renewed"),
            Err(RenewError::Refused(_)) => Some("refused"),
            Err(RenewError::Failed(_) | RenewError::Store(_)) => Some("failed"),
            _ => None,
        };
        if let Some(outcome) = outcome {
            metrics::counter!(crate::metrics::OAUTH_RENEWALS, "outcome" => outcome).increment(1);
        }
        let mut retry = self.retries();
        match result {
            Err(RenewError::Failed(_) | RenewError::Store(_)) => {
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

    /// The grant exchanged for new tokens (or the tokens it was issued already, not yet
    /// written), written into the account's record.
    async fn exchange(
        &self,
        app: &App,
        record: &AccountRecord,
        grant: &OAuthGrant,
        refused: Option<i64>,
        owner: &str,
    ) -> Result<Renewed, RenewError> {
        let id = &record.id;
        // Tokens already issued for this grant go first: its refresh token is spent.
        let issued = match self.pending_for(id, grant) {
            Some(issued) => issued,
            None => {
                // The vendor refused the token a renewal made after its refusal of the one
                // before: a third would fare no better, and each costs a client request.
                if let Some(at) = refused
                    && grant.after_refusal
                    && at >= grant.refreshed_at
                {
                    let why =
                        "the vendor refused the token renewed after its refusal too".to_owned();
                    return Err(self.refused(app, record, grant, why).await);
                }
                match self.ask(app, record, grant, owner).await {
                    Ok(issued) => issued,
                    Err(RenewError::Refused(why)) => {
                        return Err(self.refused(app, record, grant, why).await);
                    }
                    Err(e) => return Err(e),
                }
            }
        };
        let renew = |record: &mut AccountRecord| {
            record.sealed_api_key.clone_from(&issued.sealed_access);
            if let Some(g) = &mut record.oauth {
                g.sealed_refresh_token.clone_from(&issued.sealed_refresh);
                g.expires_at = issued.expires_at;
                g.refreshed_at = issued.at;
                g.after_refusal = refused.is_some();
                g.failure = None;
            }
        };
        let written = match write(app, id, &grant.sealed_refresh_token, renew).await {
            Ok(written) => written,
            Err(e) => {
                // Spent at the endpoint: kept until the store takes them.
                self.pending().insert(id.clone(), issued);
                return Err(RenewError::Failed(format!(
                    "the store did not take the new tokens (kept, written at the next try): {e}"
                )));
            }
        };
        self.pending().remove(id.as_str());
        if !written {
            tracing::warn!(account_id = %id, "the account was given a new grant while its OAuth token was renewed; the renewed token was dropped");
            return Ok(Renewed::Superseded);
        }
        // This instance serves the new token before the account is back in rotation. Any
        // refusal on record now was of a token this one replaced (the renewal's own, read before
        // it, or one reported while it ran): the account serves again.
        reload(app).await;
        if refused.is_some() || refused_at(app, id, app.clock.now_ms()).await?.is_some() {
            app.store().reset_health(id).await?;
        }
        tracing::info!(account_id = %id, expires_at = issued.expires_at, "renewed the account's OAuth access token");
        Ok(Renewed::Done {
            expires_at: issued.expires_at,
        })
    }

    /// The claim's owner of the tokens waiting to be written for account `id`, if any.
    fn pending_owner(&self, id: &str) -> Option<String> {
        let pending = self.pending();
        pending.get(id).map(|issued| issued.owner.clone())
    }

    /// Whether tokens issued for account `id` wait to be written.
    pub fn has_pending(&self, id: &str) -> bool {
        self.pending().contains_key(id)
    }

    /// Tokens issued for `grant` and not yet written, if any.
    fn pending_for(&self, id: &str, grant: &OAuthGrant) -> Option<Issued> {
        let mut pending = self.pending();
        match pending.get(id) {
            Some(issued) if issued.for_grant == grant.sealed_refresh_token => Some(issued.clone()),
            // Issued for a grant the account no longer has.
            Some(_) => {
                pending.remove(id);
                None
            }
            None => None,
        }
    }

    /// The refresh-token grant at the endpoint, its tokens sealed.
    async fn ask(
        &self,
        app: &App,
        record: &AccountRecord,
        grant: &OAuthGrant,
        owner: &str,
    ) -> Result<Issued, RenewError> {
        let id = &record.id;
        let master = app.catalog.master_key();
        let refresh_token = master
            .open(&refresh_aad(id), &grant.sealed_refresh_token)
            .map_err(|_| {
                RenewError::Refused(
                    "the sealed refresh token cannot be opened (the master key changed?)".into(),
                )
            })?;
        let client_secret = match &grant.sealed_client_secret {
            Some(sealed) => Some(master.open(&client_secret_aad(id), sealed).map_err(|_| {
                RenewError::Refused(
                    "the sealed client secret cannot be opened (the master key changed?)".into(),
                )
            })?),
            None => None,
        };
        // Through the account's proxy, as its requests go: a vendor sees one address for it.
        let proxy = app
            .catalog
            .proxy_for(record)
            .map_err(|why| RenewError::Failed(why.into()))?;
        let client = app.http_via(proxy.as_deref());
        let answer =
            request_tokens(client, grant, &refresh_token, client_secret.as_deref()).await?;
        let at = app.clock.now_ms();
        let seal = |aad: &str, plain: &str| {
            master
                .seal(aad, plain)
                .map_err(|_| RenewError::Failed("the new token could not be sealed".into()))
        };
        Ok(Issued {
            owner: owner.to_owned(),
            for_grant: grant.sealed_refresh_token.clone(),
            sealed_access: seal(id, &answer.access_token)?,
            sealed_refresh: match &answer.refresh_token {
                Some(rotated) => seal(&refresh_aad(id), rotated)?,
                None => grant.sealed_refresh_token.clone(),
            },
            expires_at: answer.expires_at(at),
            at,
        })
    }

    /// Records why the grant cannot be used again, on the grant (if it is still the account's),
    /// logs it and tells the operators: nothing renews the account until it is given a new
    /// grant.
    async fn refused(
        &self,
        app: &App,
        record: &AccountRecord,
        grant: &OAuthGrant,
        why: String,
    ) -> RenewError {
        tracing::warn!(account_id = %record.id, reason = %why, "the account's OAuth grant cannot be used again; it needs a new login");
        let fail = |record: &mut AccountRecord| {
            if let Some(g) = &mut record.oauth {
                g.failure = Some(why.clone());
            }
        };
        match write(app, &record.id, &grant.sealed_refresh_token, fail).await {
            Ok(true) => {
                reload(app).await;
                app.notify.tell(Notice::of(
                    record,
                    Event::OAuthGrantRefused,
                    None,
                    why.clone(),
                    app.clock.now_ms(),
                ));
            }
            Ok(false) => {}
            Err(e) => return RenewError::Store(e),
        }
        RenewError::Refused(why)
    }
}

/// Applies `change` to account `id`'s record as the store has it now and writes it over that
/// read only (`Store::update_account_checked`: an admin's change of another field landing in
/// between is not lost; the change is made again to it), as long as the record still holds the
/// grant renewed (`renewed`, its sealed refresh token): an admin who gave the account a new
/// grant or took it away meanwhile wins. `false` when nothing was written for that reason.
async fn write(
    app: &App,
    id: &str,
    renewed: &str,
    change: impl Fn(&mut AccountRecord),
) -> Result<bool, StoreError> {
    for _ in 0..crate::store::ACCOUNT_WRITE_ATTEMPTS {
        let Some(mut record) = app.store().account(id).await? else {
            return Ok(false);
        };
        let held = record
            .oauth
            .as_ref()
            .map(|g| g.sealed_refresh_token.as_str());
        if held != Some(renewed) {
            return Ok(false);
        }
        change(&mut record);
        if app.store().update_account_checked(&record).await? {
            return Ok(true);
        }
    }
    Err(StoreError::Unavailable(
        "the account kept changing while its token was written".into(),
    ))
}

/// This instance's accounts reloaded after a write (the others follow the store's change
/// feed). A failure here is not the renewal's: the record is written, and the next change or
/// resync reloads it.
async fn reload(app: &App) {
    if let Err(e) = app.catalog.reload_accounts().await {
        tracing::warn!(error = %e, "reloading the accounts after a token renewal failed");
    }
}

/// Whether the access token of `record` (as a request used it) was replaced in the store since:
/// renewed, or given anew by an admin. On a store error, `false` (the refusal counts).
pub async fn replaced(app: &App, record: &AccountRecord) -> bool {
    match app.store().account(&record.id).await {
        Ok(Some(now)) => now.sealed_api_key != record.sealed_api_key,
        Ok(None) | Err(_) => false,
    }
}

/// Unix ms the vendor last refused the account's token, when that left it unauthorized now.
async fn refused_at(app: &App, id: &str, now: i64) -> Result<Option<i64>, StoreError> {
    let health = app.store().account_runtime(id).await?.health;
    Ok((health.status_at(now) == Status::Unauthorized).then_some(health.last_error_at))
}

/// The refresh-token grant at `grant.token_url`: as JSON, as the CLIs whose public clients
/// these grants are send it; with a client secret (Google's installed apps), as the form of
/// RFC 6749 §2.3.1 and §6, which Google's endpoint takes.
async fn request_tokens(
    client: &crate::upstream_client::UpstreamClient,
    grant: &OAuthGrant,
    refresh_token: &str,
    client_secret: Option<&str>,
) -> Result<Tokens, RenewError> {
    let mut fields = vec![
        ("grant_type", "refresh_token"),
        ("refresh_token", refresh_token),
        ("client_id", grant.client_id.as_str()),
    ];
    if let Some(secret) = client_secret {
        fields.push(("client_secret", secret));
    }
    if let Some(scope) = &grant.scope {
        fields.push(("scope", scope.as_str()));
    }
    let (content_type, body) = match client_secret {
        Some(_) => (
            "application/x-www-form-urlencoded",
            form_urlencoded::Serializer::new(String::new())
                .extend_pairs(&fields)
                .finish(),
        ),
        None => {
            let object: serde_json::Map<String, serde_json::Value> = fields
                .iter()
                .map(|(k, v)| ((*k).to_owned(), serde_json::Value::from(*v)))
                .collect();
            (
                "application/json",
                serde_json::Value::Object(object).to_string(),
            )
        }
    };
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
    let send = client.send(
        http::Method::POST,
        grant.token_url.clone(),
        headers,
        Bytes::from(body),
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
        crate::upstream_client::read_capped(resp.into_body(), MAX_ANSWER_BYTES, TOKEN_BODY_TIMEOUT)
            .await;
    judge(status, &body, &[Some(refresh_token), client_secret])
}

/// A token endpoint's answer: the tokens, or why not. A 400 or 401 that names an OAuth error
/// (RFC 6749 §5.2's `error`: `invalid_grant`, `invalid_client`, ...; OpenAI's auth server nests
/// it as `{"error": {"code", "message"}}`) refuses the grant for good; anything else may pass
/// (a proxy's or firewall's page, a 403, a 5xx). The reason is logged and shown to admins: one
/// that quotes one of `secrets` (the refresh token or client secret sent: an endpoint or proxy
/// echoing the request) is not quoted.
fn judge(
    status: http::StatusCode,
    body: &[u8],
    secrets: &[Option<&str>],
) -> Result<Tokens, RenewError> {
    if status.is_success() {
        return Tokens::read(body).ok_or_else(|| {
            RenewError::Failed(format!(
                "the token endpoint answered {status} without an access token"
            ))
        });
    }
    let parsed: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    let error = parsed.as_ref().and_then(|v| v.get("error"));
    let text = |v: Option<&serde_json::Value>| v.and_then(|v| v.as_str()).map(str::to_owned);
    let code = match error {
        Some(serde_json::Value::Object(e)) => text(e.get("code")).or_else(|| text(e.get("type"))),
        other => text(other),
    };
    let description = text(parsed.as_ref().and_then(|v| v.get("error_description")))
        .or_else(|| text(error.and_then(|e| e.get("message"))));
    let reason = match (&code, description) {
        (Some(code), Some(d)) => format!("{status}: {code}: {d}"),
        (Some(code), None) => format!("{status}: {code}"),
        (None, _) => format!(
            "{status}: {}",
            String::from_utf8_lossy(&body[..body.len().min(200)])
        ),
    };
    // As sent, or as a form carries it (Google's refresh tokens begin `1//`, sent `1%2F%2F`).
    let quotes = |secret: &str| {
        let start = secret.get(..secret.len().min(12)).unwrap_or(secret);
        let encoded: String = form_urlencoded::byte_serialize(start.as_bytes()).collect();
        !start.is_empty() && (reason.contains(start) || reason.contains(&encoded))
    };
    let reason = if secrets.iter().flatten().any(|s| quotes(s)) {
        format!("{status}: an answer that quotes a secret of the grant (left out)")
    } else {
        reason
    };
    if matches!(status.as_u16(), 400 | 401) && code.is_some() {
        Err(RenewError::Refused(reason))
    } else {
        Err(RenewError::Failed(reason))
    }
}

/// Starts this instance's renewals: every `upstream.oauth_check_ms`, and when woken
/// ([`Renewer::wake`]), each enabled account with a grant not refused for good (or with tokens
/// waiting to be written) is renewed if due. Stopped by the app being dropped (the next tick
/// finds no app), or the runtime's end.
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
                    let grant = a.record.oauth.as_ref();
                    (a.record.enabled && grant.is_some_and(|g| g.failure.is_none()))
                        || (grant.is_some() && app.oauth.has_pending(a.id()))
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
    const HOUR: i64 = 3_600_000;

    fn grant(expires_at: i64, refreshed_at: i64) -> OAuthGrant {
        OAuthGrant {
            token_url: "https://auth.example.com/oauth/token".into(),
            client_id: "client".into(),
            sealed_client_secret: None,
            sealed_refresh_token: "sealed".into(),
            expires_at,
            refreshed_at,
            after_refusal: false,
            scope: None,
            failure: None,
        }
    }

    #[test]
    fn a_token_is_renewed_before_it_expires_or_after_the_vendor_refused_it() {
        // Far from its expiry: not due; within the margin, unknown or past: due.
        assert!(!due(&grant(NOW + HOUR, 0), None, NOW, BEFORE));
        assert!(due(&grant(NOW + BEFORE, 0), None, NOW, BEFORE));
        assert!(due(&grant(NOW - 1, 0), None, NOW, BEFORE));
        assert!(due(&grant(0, 0), None, NOW, BEFORE));
        // Refused (a 401) after the last renewal: due; a refusal from before it was about the
        // token it replaced.
        let renewed = grant(NOW + HOUR, NOW - HOUR);
        assert!(due(&renewed, Some(NOW - 1_000), NOW, BEFORE));
        assert!(!due(&renewed, Some(NOW - 2 * HOUR), NOW, BEFORE));
        // A token that lasts less than the margin is renewed at half its life, not at every
        // check: renewed 2 minutes ago for 5, it is due in half a minute.
        let short = grant(NOW + 180_000, NOW - 120_000);
        assert!(!due(&short, None, NOW, BEFORE));
        assert!(due(&short, None, NOW + 31_000, BEFORE));
        // A grant refused for good is not tried again, however expired.
        let mut spent = grant(NOW - 1, 0);
        spent.failure = Some("400: invalid_grant".into());
        assert!(!due(&spent, Some(NOW), NOW, BEFORE));
    }

    fn judge_(status: http::StatusCode, body: &[u8]) -> Result<Tokens, RenewError> {
        judge(
            status,
            body,
            &[Some("rt-secret-0123456789"), Some("cs-secret-abc")],
        )
    }

    #[test]
    fn a_reason_that_quotes_a_secret_of_the_grant_is_not_quoted() {
        let echo = judge_(
            http::StatusCode::BAD_GATEWAY,
            br#"<html>upstream said no to refresh_token=rt-secret-0123456789</html>"#,
        );
        match echo {
            Err(RenewError::Failed(why)) => {
                assert!(!why.contains("rt-secret"), "{why}");
                assert!(why.starts_with("502 Bad Gateway"), "{why}");
            }
            _ => panic!("a 502 may pass"),
        }
        let described = judge_(
            http::StatusCode::BAD_REQUEST,
            br#"{"error":"invalid_grant","error_description":"rt-secret-0123456789 is spent"}"#,
        );
        assert!(matches!(described, Err(RenewError::Refused(why)) if !why.contains("rt-secret")));
        // The client secret (Google's grants) neither.
        let client = judge_(
            http::StatusCode::UNAUTHORIZED,
            br#"{"error":"invalid_client","error_description":"client_secret=cs-secret-abc is wrong"}"#,
        );
        assert!(matches!(client, Err(RenewError::Refused(why)) if !why.contains("cs-secret")));
        // Nor a Google refresh token echoed as the form carried it.
        let google = judge(
            http::StatusCode::BAD_GATEWAY,
            b"<html>bad request: refresh_token=1%2F%2F0gLongGoogleToken&client_id=x</html>",
            &[Some("1//0gLongGoogleToken")],
        );
        assert!(matches!(google, Err(RenewError::Failed(why)) if !why.contains("0gLong")));
    }

    fn refused(result: Result<Tokens, RenewError>) -> Option<String> {
        match result {
            Err(RenewError::Refused(why)) => Some(why),
            _ => None,
        }
    }

    fn failed(result: Result<Tokens, RenewError>) -> bool {
        matches!(result, Err(RenewError::Failed(_)))
    }

    #[test]
    fn token_answers_are_judged_as_rfc_6749_says() {
        let ok = judge_(
            http::StatusCode::OK,
            br#"{"access_token":"at-2","refresh_token":"rt-2","expires_in":28800,"token_type":"Bearer"}"#,
        )
        .unwrap();
        assert_eq!(ok.access_token, "at-2");
        assert_eq!(ok.refresh_token.as_deref(), Some("rt-2"));
        assert_eq!(ok.expires_at(NOW), NOW + 28_800_000);
        // Read leniently: the endpoint has spent the old refresh token by now.
        let lenient = judge_(
            http::StatusCode::OK,
            br#"{"access_token":"at-3","expires_in":"3600","refresh_token":null}"#,
        )
        .unwrap();
        assert_eq!(lenient.refresh_token, None);
        assert_eq!(lenient.expires_at(NOW), NOW + HOUR);
        // Without an expiry: the token's own (a JWT's), else an hour; an absurd one is capped.
        let bare = judge_(http::StatusCode::OK, br#"{"access_token":"at-4"}"#).unwrap();
        assert_eq!(bare.expires_at(NOW), NOW + ASSUMED_LIFETIME_MS);
        let absurd = judge_(
            http::StatusCode::OK,
            br#"{"access_token":"at-5","expires_in":1e300}"#,
        )
        .unwrap();
        assert!(
            absurd.expires_at(NOW) > NOW && absurd.expires_at(NOW) < NOW + 11 * 365 * 24 * HOUR
        );
        // A success without a token may pass; so may a 5xx, a 429, a 403, a page that is not
        // OAuth's (a proxy's, a firewall's).
        for (status, body) in [
            (200, &br#"{"access_token":""}"#[..]),
            (200, b"<html>"),
            (500, b"oops"),
            (429, br#"{"error":"slow_down"}"#),
            (403, br#"{"error":"access_denied"}"#),
            (400, b"<html>Bad Request</html>"),
        ] {
            let status = http::StatusCode::from_u16(status).unwrap();
            assert!(failed(judge_(status, body)), "{status}");
        }
        // The grant refused: for good, with the endpoint's reason.
        let why = refused(judge_(
            http::StatusCode::BAD_REQUEST,
            br#"{"error":"invalid_grant","error_description":"Refresh token already used"}"#,
        ));
        assert_eq!(
            why.as_deref(),
            Some("400 Bad Request: invalid_grant: Refresh token already used")
        );
        // OpenAI's auth server nests its error.
        let why = refused(judge_(
            http::StatusCode::UNAUTHORIZED,
            br#"{"error":{"message":"Your refresh token has already been used","code":"refresh_token_reused"}}"#,
        ));
        assert_eq!(
            why.as_deref(),
            Some(
                "401 Unauthorized: refresh_token_reused: Your refresh token has already been used"
            )
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
