//! `/admin/accounts`: upstream vendor accounts. The api key is sealed on the way in and never
//! shown again.

use std::collections::BTreeMap;
use std::sync::Arc;

use http::{Response, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{created, keys, now_ms, nullable, ok, rfc3339, store_error, valid_name};
use crate::app::App;
use crate::auth;
use crate::body::Body;
use crate::error::{ApiError, ErrorKind};
use crate::oauth::{self, RenewError, Renewed};
use crate::providers;
use crate::scheduler::policy::Status;
use crate::store::{AccountRecord, AccountRuntime, OAuthGrant, Provider};
use crate::upstream_client;

const DEFAULT_PRIORITY: i32 = 50;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateAccount {
    name: String,
    provider: Provider,
    base_url: Option<String>,
    api_key: String,
    priority: Option<i32>,
    schedulable: Option<bool>,
    enabled: Option<bool>,
    #[serde(default)]
    models: Vec<String>,
    max_concurrency: Option<u32>,
    weight: Option<u32>,
    group: Option<String>,
    /// Azure OpenAI only.
    api_version: Option<String>,
    /// Azure OpenAI: model -> deployment; Bedrock: model -> model id or inference profile.
    #[serde(default)]
    deployments: BTreeMap<String, String>,
    /// Anthropic, OpenAI, Gemini, ChatGPT: model (or glob) -> the vendor's name for it.
    #[serde(default)]
    model_map: BTreeMap<String, String>,
    /// Bedrock only: the AWS region.
    region: Option<String>,
    /// Bedrock only: sign with this access key id and the api key as its secret.
    aws_access_key_id: Option<String>,
    /// Code Assist only: the Google Cloud project calls are made for.
    project: Option<String>,
    /// The account's own proxy (http, https, socks5, socks5h; credentials in the URL).
    proxy: Option<String>,
    /// A subscription's OAuth grant: the api key is its access token, renewed with it.
    oauth: Option<OAuthInput>,
    /// What the account may cost per day and per month (`crate::budget`).
    daily_cost_nanousd: Option<u64>,
    monthly_cost_nanousd: Option<u64>,
}

/// An OAuth grant as an admin gives it: what the CLI that logged in keeps beside the access
/// token (`~/.codex/auth.json`, Claude Code's credentials).
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OAuthInput {
    refresh_token: String,
    token_url: String,
    client_id: String,
    /// The client's secret, for endpoints that want one (Google's).
    client_secret: Option<String>,
    /// When the access token expires; unset, read from the token when it is a JWT, else the
    /// token is renewed at once (which also tells when the next one expires).
    expires_at: Option<jiff::Timestamp>,
    /// Sent with each renewal (some endpoints want the scope again).
    scope: Option<String>,
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatchAccount {
    name: Option<String>,
    /// `null`: the provider's own endpoint (of the account's region, for Bedrock).
    #[serde(default, deserialize_with = "nullable")]
    base_url: Option<Option<String>>,
    api_key: Option<String>,
    priority: Option<i32>,
    schedulable: Option<bool>,
    enabled: Option<bool>,
    models: Option<Vec<String>>,
    #[serde(default, deserialize_with = "nullable")]
    max_concurrency: Option<Option<u32>>,
    weight: Option<u32>,
    /// `null` takes the account out of its group.
    #[serde(default, deserialize_with = "nullable")]
    group: Option<Option<String>>,
    api_version: Option<String>,
    deployments: Option<BTreeMap<String, String>>,
    /// Replaces the whole map (`{}` empties it).
    model_map: Option<BTreeMap<String, String>>,
    region: Option<String>,
    /// `null` turns signing off: the api key is then a Bedrock API key.
    #[serde(default, deserialize_with = "nullable")]
    aws_access_key_id: Option<Option<String>>,
    /// `null`: the project the Code Assist API gives the login.
    #[serde(default, deserialize_with = "nullable")]
    project: Option<Option<String>>,
    /// `null` (or empty): the account's calls go as every other's.
    #[serde(default, deserialize_with = "nullable")]
    proxy: Option<Option<String>>,
    /// A new grant; `null` takes it away (the api key is then used until it expires).
    #[serde(default, deserialize_with = "nullable")]
    oauth: Option<Option<OAuthInput>>,
    /// `null` takes the budget away.
    #[serde(default, deserialize_with = "nullable")]
    daily_cost_nanousd: Option<Option<u64>>,
    #[serde(default, deserialize_with = "nullable")]
    monthly_cost_nanousd: Option<Option<u64>>,
}

/// The account as the admin API shows it, with its live state and what it spent of its budgets.
async fn shown(app: &App, account: &AccountRecord) -> Result<Value, ApiError> {
    let runtime = app
        .store()
        .account_runtime(&account.id)
        .await
        .map_err(store_error)?;
    let budget = crate::budget::view(app, account)
        .await
        .map_err(store_error)?;
    Ok(view(app, account, &runtime, budget))
}

fn view(app: &App, account: &AccountRecord, runtime: &AccountRuntime, budget: Value) -> Value {
    // The project this instance learned from the Code Assist API (`project` unset).
    let project_learned = app
        .catalog
        .accounts()
        .iter()
        .find(|a| a.id() == account.id)
        .and_then(|a| a.code_assist.known());
    // Its credentials masked; all of it when it cannot be opened.
    let proxy = account
        .sealed_proxy
        .as_ref()
        .map(|_| match app.catalog.proxy_of(account) {
            Ok(Some(url)) => upstream_client::redacted(&url),
            _ => upstream_client::MASK.to_owned(),
        });
    let now = jiff::Timestamp::now().as_millisecond();
    let health = &runtime.health;
    let status = health.status_at(now);
    let budget_state = crate::budget::state(health, now);
    // When it serves again: the later of the vendor's verdict and a spent budget's rest.
    let vendor_until = match status {
        Status::RateLimited | Status::CoolingDown => Some(health.until),
        Status::Ok | Status::Unauthorized => None,
    };
    let until = vendor_until
        .into_iter()
        .chain(budget_state.map(|(at, _)| at))
        .max()
        .map(rfc3339);
    let family_limits: serde_json::Map<String, Value> = health
        .family_until
        .iter()
        .filter(|(_, until)| **until > now)
        .map(|(family, until)| (family.clone(), json!(rfc3339(*until))))
        .collect();
    json!({
        "id": account.id,
        "name": account.name,
        "provider": account.provider.as_str(),
        "base_url": account.base_url,
        "priority": account.priority,
        "schedulable": account.schedulable,
        "enabled": account.enabled,
        "models": account.models,
        "max_concurrency": account.max_concurrency,
        "weight": account.weight,
        "daily_cost_nanousd": account.daily_cost_nanousd,
        "monthly_cost_nanousd": account.monthly_cost_nanousd,
        "budget": budget,
        "group": account.group,
        "api_version": account.api_version,
        "deployments": account.deployments,
        "model_map": account.model_map,
        "region": account.region,
        "aws_access_key_id": account.aws_access_key_id,
        "project": account.project,
        "project_learned": project_learned,
        "proxy": proxy,
        "oauth": account.oauth.as_ref().map(|g| json!({
            "token_url": g.token_url,
            "client_id": g.client_id,
            "client_secret_set": g.sealed_client_secret.is_some(),
            "expires_at": (g.expires_at > 0).then(|| rfc3339(g.expires_at)),
            "refreshed_at": (g.refreshed_at > 0).then(|| rfc3339(g.refreshed_at)),
            "failure": g.failure,
        })),
        "created_at": rfc3339(account.created_at),
        "state": {
            "status": match (status, budget_state) {
                (Status::Ok, Some(_)) => json!("budget_spent"),
                (status, _) => json!(status),
            },
            "until": until,
            "budget_until": budget_state.map(|(at, _)| rfc3339(at)),
            "budget_reason": budget_state.map(|(_, reason)| reason),
            "rate_limited_families": family_limits,
            "consecutive_failures": health.consecutive_failures,
            "last_error": health.last_error,
            "last_error_at": (health.last_error_at > 0).then(|| rfc3339(health.last_error_at)),
            "in_flight": runtime.in_flight,
            "last_used_at": (runtime.last_used_at > 0).then(|| rfc3339(runtime.last_used_at)),
        },
    })
}

/// The vendor's default, as its SDK has it: OpenAI's includes the version path, Anthropic's and
/// Gemini's do not; Bedrock's is its region's runtime endpoint. Azure has no default: every
/// resource has its own endpoint.
fn default_base_url(provider: Provider, region: Option<&str>) -> Result<String, ApiError> {
    match provider {
        Provider::Anthropic => Ok(providers::anthropic::DEFAULT_BASE_URL.to_owned()),
        Provider::OpenAi => Ok(providers::openai::DEFAULT_BASE_URL.to_owned()),
        Provider::Gemini => Ok(providers::gemini::DEFAULT_BASE_URL.to_owned()),
        Provider::ChatGpt => Ok(providers::chatgpt::DEFAULT_BASE_URL.to_owned()),
        Provider::CodeAssist => Ok(providers::code_assist::DEFAULT_BASE_URL.to_owned()),
        Provider::Bedrock => Ok(providers::bedrock::default_base_url(
            region.unwrap_or_default(),
        )),
        Provider::AzureOpenAi => Err(ApiError::invalid(
            "base_url: required for azure-openai (https://<resource>.openai.azure.com)",
        )),
    }
}

/// The fields only some providers take.
struct VendorFields {
    api_version: Option<String>,
    deployments: BTreeMap<String, String>,
    model_map: BTreeMap<String, String>,
    region: Option<String>,
    aws_access_key_id: Option<String>,
    project: Option<String>,
}

/// Azure needs an api-version and may name deployments; Bedrock needs a region and may name
/// model ids and an access key id; Code Assist may name a project; the other providers take
/// none of these.
fn valid_vendor(provider: Provider, mut f: VendorFields) -> Result<VendorFields, ApiError> {
    let azure = provider == Provider::AzureOpenAi;
    let bedrock = provider == Provider::Bedrock;
    if f.api_version.is_some() && !azure {
        return Err(ApiError::invalid(
            "api_version is for azure-openai accounts only",
        ));
    }
    if !f.deployments.is_empty() && !azure && !bedrock {
        return Err(ApiError::invalid(
            "deployments are for azure-openai and bedrock accounts only",
        ));
    }
    if !f.model_map.is_empty() {
        valid_model_map(provider, &f.model_map)?;
    }
    if (f.region.is_some() || f.aws_access_key_id.is_some()) && !bedrock {
        return Err(ApiError::invalid(
            "region and aws_access_key_id are for bedrock accounts only",
        ));
    }
    if let Some(project) = &f.project {
        if provider != Provider::CodeAssist {
            return Err(ApiError::invalid(
                "project is for code-assist accounts only",
            ));
        }
        let valid = (1..=128).contains(&project.len())
            && project
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'));
        if !valid {
            return Err(ApiError::invalid(
                "project: a Google Cloud project id (letters, digits, `-`, `_`, `.`, `:`)",
            ));
        }
    }
    if azure {
        f.api_version
            .get_or_insert_with(|| providers::azure::DEFAULT_API_VERSION.to_owned());
    }
    if bedrock {
        let region = f.region.as_deref().unwrap_or_default();
        let valid = !region.is_empty()
            && region.len() <= 32
            && region
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !valid {
            return Err(ApiError::invalid(
                "region: required for bedrock accounts (such as us-east-1)",
            ));
        }
        if let Some(id) = &f.aws_access_key_id
            && (!(16..=128).contains(&id.len()) || !id.bytes().all(|b| b.is_ascii_alphanumeric()))
        {
            return Err(ApiError::invalid(
                "aws_access_key_id: 16 to 128 letters and digits",
            ));
        }
    }
    Ok(f)
}

/// The most entries a model map takes, and the longest name on either side.
const MODEL_MAP_MAX: usize = 256;
const MODEL_NAME_MAX: usize = 256;

/// A model map renames what a client asks for in the body's `model` (in the URL for Gemini,
/// whose names must then stay within a path segment); Azure and Bedrock name theirs in
/// `deployments`, and Code Assist takes Gemini's own names.
fn valid_model_map(provider: Provider, map: &BTreeMap<String, String>) -> Result<(), ApiError> {
    if !matches!(
        provider,
        Provider::Anthropic | Provider::OpenAi | Provider::Gemini | Provider::ChatGpt
    ) {
        return Err(ApiError::invalid(
            "model_map is for anthropic, openai, gemini and chatgpt accounts (azure-openai and \
             bedrock name the vendor's models in deployments)",
        ));
    }
    if map.len() > MODEL_MAP_MAX {
        return Err(ApiError::invalid(format!(
            "model_map: at most {MODEL_MAP_MAX} entries"
        )));
    }
    let fits = |name: &str| {
        (1..=MODEL_NAME_MAX).contains(&name.len())
            && !name.chars().any(char::is_control)
            && name.trim() == name
    };
    for (from, to) in map {
        if !fits(from) || glob::Pattern::new(from).is_err() {
            return Err(ApiError::invalid(format!(
                "model_map: {from:?} is not a model name or glob of 1 to {MODEL_NAME_MAX} \
                 characters (no spaces around it)"
            )));
        }
        if !fits(to) || (provider == Provider::Gemini && !crate::relay::fits_a_path(to)) {
            return Err(ApiError::invalid(format!(
                "model_map.{from}: {to:?} is not a model name of 1 to {MODEL_NAME_MAX} \
                 characters (no spaces around it){}",
                if provider == Provider::Gemini {
                    " (letters, digits, `-`, `_`, `.`)"
                } else {
                    ""
                }
            )));
        }
    }
    Ok(())
}

fn valid_base_url(url: &str) -> Result<String, ApiError> {
    let url = url.trim().trim_end_matches('/');
    let parsed =
        reqwest::Url::parse(url).map_err(|e| ApiError::invalid(format!("base_url: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host().is_none() {
        return Err(ApiError::invalid(
            "base_url: must be an http(s) URL with a host",
        ));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() || parsed.query().is_some() {
        return Err(ApiError::invalid(
            "base_url: must not carry credentials or a query",
        ));
    }
    // Requests go out to the URL as written, which must then be a URI as hyper reads it too.
    if !url.is_ascii() || http::Uri::try_from(url).is_err() {
        return Err(ApiError::invalid(
            "base_url: must not contain characters that need percent-encoding",
        ));
    }
    Ok(url.to_owned())
}

fn valid_models(models: Vec<String>) -> Result<Vec<String>, ApiError> {
    for m in &models {
        glob::Pattern::new(m)
            .map_err(|e| ApiError::invalid(format!("models: {m:?} is not a valid glob: {e}")))?;
    }
    Ok(models)
}

fn valid_api_key(key: &str) -> Result<String, ApiError> {
    let key = key.trim();
    if key.is_empty() || http::HeaderValue::from_str(key).is_err() {
        return Err(ApiError::invalid(
            "api_key: must be a non-empty string of visible ASCII characters",
        ));
    }
    Ok(key.to_owned())
}

/// A ChatGPT account's api key must be a ChatGPT access token (a JWT), which names the ChatGPT
/// account its requests are for.
fn valid_for_provider(provider: Provider, api_key: String) -> Result<String, ApiError> {
    if provider == Provider::ChatGpt && providers::chatgpt::account_id(&api_key).is_none() {
        return Err(ApiError::invalid(
            "api_key: a chatgpt account takes a ChatGPT access token (`tokens.access_token` in \
             Codex CLI's auth.json), a JWT that names the ChatGPT account",
        ));
    }
    Ok(api_key)
}

fn valid_concurrency(n: Option<u32>) -> Result<Option<u32>, ApiError> {
    if n == Some(0) {
        return Err(ApiError::invalid(
            "max_concurrency: must be at least 1, or null for no limit",
        ));
    }
    Ok(n)
}

/// A budget of 0 would take the account out for good with no word of why: to keep it from
/// serving, an admin sets `schedulable: false`.
fn valid_budget(field: &str, n: Option<u64>) -> Result<Option<u64>, ApiError> {
    match n {
        // Redis counts in signed 64 bits.
        Some(n) if n > i64::MAX as u64 => Err(ApiError::invalid(format!(
            "{field}: at most {} nano-dollars",
            i64::MAX
        ))),
        Some(0) => Err(ApiError::invalid(format!(
            "{field}: must be at least 1 (nano-dollars), or null for no budget; to keep the \
             account from serving, set schedulable to false"
        ))),
        n => Ok(n),
    }
}

fn valid_weight(w: u32) -> Result<u32, ApiError> {
    if !(1..=1_000).contains(&w) {
        return Err(ApiError::invalid("weight: must be 1 to 1000"));
    }
    Ok(w)
}

fn seal(app: &App, id: &str, api_key: &str) -> Result<String, ApiError> {
    app.catalog
        .master_key()
        .seal(id, api_key)
        .map_err(|_| ApiError::internal("could not seal the api key"))
}

/// The proxy of account `id` as stored: checked and sealed; `None` for none (or an empty one).
fn sealed_proxy(app: &App, id: &str, url: Option<&str>) -> Result<Option<String>, ApiError> {
    let Some(url) = url.filter(|u| !u.trim().is_empty()) else {
        return Ok(None);
    };
    let url = upstream_client::valid_proxy(url).map_err(ApiError::invalid)?;
    let sealed = app
        .catalog
        .master_key()
        .seal(&upstream_client::proxy_aad(id), &url)
        .map_err(|_| ApiError::internal("could not seal the proxy"))?;
    Ok(Some(sealed))
}

/// The grant of account `id` (of `provider`, whose access token is `api_key`) as stored. A grant
/// given without a client secret keeps the one of the grant it replaces (`previous`) for the
/// same client at the same endpoint: the secret is the client's, not the login's.
fn grant(
    app: &App,
    id: &str,
    provider: Provider,
    input: OAuthInput,
    api_key: &str,
    previous: Option<&OAuthGrant>,
) -> Result<OAuthGrant, ApiError> {
    if !matches!(
        provider,
        Provider::Anthropic | Provider::ChatGpt | Provider::CodeAssist
    ) {
        return Err(ApiError::invalid(
            "oauth: for subscription accounts only (anthropic, chatgpt, code-assist)",
        ));
    }
    let token_url = valid_base_url(&input.token_url)
        .map_err(|e| ApiError::invalid(e.message.replacen("base_url", "oauth.token_url", 1)))?;
    let client_id = input.client_id.trim();
    if client_id.is_empty()
        || client_id.len() > 256
        || !client_id.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(ApiError::invalid(
            "oauth.client_id: 1 to 256 visible ASCII characters",
        ));
    }
    let refresh_token = valid_api_key(&input.refresh_token).map_err(|_| {
        ApiError::invalid(
            "oauth.refresh_token: must be a non-empty string of visible ASCII characters",
        )
    })?;
    let master = app.catalog.master_key();
    let sealed_refresh_token = master
        .seal(&oauth::refresh_aad(id), &refresh_token)
        .map_err(|_| ApiError::internal("could not seal the refresh token"))?;
    let given_secret = input
        .client_secret
        .as_deref()
        .filter(|s| !s.trim().is_empty());
    let sealed_client_secret = match given_secret {
        Some(secret) => {
            let secret = valid_api_key(secret)
                .map_err(|_| ApiError::invalid("oauth.client_secret: visible ASCII characters"))?;
            let sealed = master
                .seal(&oauth::client_secret_aad(id), &secret)
                .map_err(|_| ApiError::internal("could not seal the client secret"))?;
            Some(sealed)
        }
        // Kept from the grant this one replaces, for the same client at the same endpoint.
        None => previous
            .filter(|g| g.client_id == client_id && g.token_url == token_url)
            .and_then(|g| g.sealed_client_secret.clone()),
    };
    if provider == Provider::CodeAssist && sealed_client_secret.is_none() {
        return Err(ApiError::invalid(
            "oauth.client_secret: required for a code-assist grant (Google's token endpoint \
             wants the secret of the OAuth client that logged in)",
        ));
    }
    Ok(OAuthGrant {
        token_url,
        client_id: client_id.to_owned(),
        sealed_client_secret,
        sealed_refresh_token,
        expires_at: match input.expires_at {
            Some(at) => at.as_millisecond(),
            None => oauth::jwt_expiry_ms(api_key).unwrap_or(0),
        },
        refreshed_at: 0,
        after_refusal: false,
        scope: input.scope.filter(|s| !s.trim().is_empty()),
        failure: None,
    })
}

pub async fn create(app: &Arc<App>, req: CreateAccount) -> Result<Response<Body>, ApiError> {
    let id = auth::new_id("acct");
    let vendor = valid_vendor(
        req.provider,
        VendorFields {
            api_version: req.api_version,
            deployments: req.deployments,
            model_map: req.model_map,
            region: req.region,
            aws_access_key_id: req.aws_access_key_id,
            project: req.project.filter(|p| !p.trim().is_empty()),
        },
    )?;
    let base_url = match &req.base_url {
        Some(url) => valid_base_url(url)?,
        None => default_base_url(req.provider, vendor.region.as_deref())?,
    };
    let api_key = valid_for_provider(req.provider, valid_api_key(&req.api_key)?)?;
    let oauth = req
        .oauth
        .map(|input| grant(app, &id, req.provider, input, &api_key, None))
        .transpose()?;
    let record = AccountRecord {
        name: valid_name(&req.name)?,
        provider: req.provider,
        base_url,
        sealed_api_key: seal(app, &id, &api_key)?,
        priority: req.priority.unwrap_or(DEFAULT_PRIORITY),
        schedulable: req.schedulable.unwrap_or(true),
        enabled: req.enabled.unwrap_or(true),
        models: valid_models(req.models)?,
        max_concurrency: valid_concurrency(req.max_concurrency)?,
        weight: valid_weight(req.weight.unwrap_or(1))?,
        group: req.group.filter(|g| !g.trim().is_empty()),
        api_version: vendor.api_version,
        deployments: vendor.deployments,
        model_map: vendor.model_map,
        region: vendor.region,
        aws_access_key_id: vendor.aws_access_key_id,
        project: vendor.project,
        sealed_proxy: sealed_proxy(app, &id, req.proxy.as_deref())?,
        oauth,
        daily_cost_nanousd: valid_budget("daily_cost_nanousd", req.daily_cost_nanousd)?,
        monthly_cost_nanousd: valid_budget("monthly_cost_nanousd", req.monthly_cost_nanousd)?,
        created_at: now_ms(),
        revision: 0,
        id,
    };
    app.store()
        .insert_account(&record)
        .await
        .map_err(store_error)?;
    app.catalog.reload_accounts().await.map_err(store_error)?;
    created(&record.id, &shown(app, &record).await?)
}

pub async fn list(app: &Arc<App>) -> Result<Response<Body>, ApiError> {
    let accounts = app.store().accounts().await.map_err(store_error)?;
    let mut data = Vec::with_capacity(accounts.len());
    for account in &accounts {
        data.push(shown(app, account).await?);
    }
    ok(StatusCode::OK, &json!({ "data": data }))
}

async fn find(app: &Arc<App>, id: &str) -> Result<AccountRecord, ApiError> {
    app.store()
        .account(id)
        .await
        .map_err(store_error)?
        .ok_or_else(|| ApiError::not_found(format!("no account with id {id}")))
}

pub async fn get(app: &Arc<App>, id: &str) -> Result<Response<Body>, ApiError> {
    let account = find(app, id).await?;
    ok(StatusCode::OK, &shown(app, &account).await?)
}

pub async fn patch(
    app: &Arc<App>,
    id: &str,
    req: PatchAccount,
) -> Result<Response<Body>, ApiError> {
    // Read, changed, written only over the record read (`update_account_checked`): a renewal
    // of the account's token (`crate::oauth`) or another admin's change written meanwhile is
    // not lost; the change is made again to what they wrote.
    for _ in 0..crate::store::ACCOUNT_WRITE_ATTEMPTS {
        let before = find(app, id).await?;
        let record = apply(app, &before, req.clone()).await?;
        if app
            .store()
            .update_account_checked(&record)
            .await
            .map_err(store_error)?
        {
            app.catalog.reload_accounts().await.map_err(store_error)?;
            // A new credential for an account whose last one was refused: it serves again.
            if req.api_key.is_some() {
                let runtime = app.store().account_runtime(id).await.map_err(store_error)?;
                if runtime.health.status == Status::Unauthorized {
                    app.store().reset_health(id).await.map_err(store_error)?;
                }
            }
            // A budget given, raised, lowered or taken away applies at once. The change is
            // written: a review that fails is logged, and made again at the next start.
            let budget_changed =
                req.daily_cost_nanousd.is_some() || req.monthly_cost_nanousd.is_some();
            if budget_changed && let Err(e) = crate::budget::review(app, id, true).await {
                tracing::warn!(account_id = id, error = %e, "could not review the account's budget");
            }
            return ok(StatusCode::OK, &shown(app, &record).await?);
        }
    }
    Err(ApiError::new(
        ErrorKind::Conflict,
        "the account kept changing while it was written; try again",
    ))
}

/// `req` applied to `before`.
async fn apply(
    app: &App,
    before: &AccountRecord,
    req: PatchAccount,
) -> Result<AccountRecord, ApiError> {
    let id = before.id.as_str();
    let mut record = before.clone();
    if let Some(name) = req.name {
        record.name = valid_name(&name)?;
    }
    let to_default = matches!(req.base_url, Some(None));
    if let Some(Some(url)) = &req.base_url {
        record.base_url = valid_base_url(url)?;
    }
    // Signing turned off: the secret access key would become a bearer token.
    if matches!(req.aws_access_key_id, Some(None))
        && before.aws_access_key_id.is_some()
        && req.api_key.is_none()
    {
        return Err(ApiError::invalid(
            "aws_access_key_id: taken off only with a new api_key (the Bedrock API key)",
        ));
    }
    if let Some(key) = &req.api_key {
        let key = valid_for_provider(record.provider, valid_api_key(key)?)?;
        record.sealed_api_key = seal(app, id, &key)?;
        // A new access token: its own expiry (or renewed at once), and none of the old one's
        // refusals held against it.
        if let Some(g) = &mut record.oauth {
            g.expires_at = oauth::jwt_expiry_ms(&key).unwrap_or(0);
            g.refreshed_at = now_ms();
            g.after_refusal = false;
        }
    }
    match req.oauth {
        None => {}
        Some(None) => record.oauth = None,
        Some(Some(input)) => {
            let access = match &req.api_key {
                Some(key) => key.trim().to_owned(),
                None => app
                    .catalog
                    .master_key()
                    .open(id, &record.sealed_api_key)
                    .map_err(|_| ApiError::internal("could not open the api key"))?,
            };
            let previous = before.oauth.as_ref();
            record.oauth = Some(grant(app, id, record.provider, input, &access, previous)?);
        }
    }
    if let Some(proxy) = &req.proxy {
        record.sealed_proxy = sealed_proxy(app, id, proxy.as_deref())?;
    }
    if let Some(p) = req.priority {
        record.priority = p;
    }
    if let Some(s) = req.schedulable {
        record.schedulable = s;
    }
    if let Some(e) = req.enabled {
        record.enabled = e;
    }
    if let Some(models) = req.models {
        record.models = valid_models(models)?;
    }
    if let Some(n) = req.max_concurrency {
        record.max_concurrency = valid_concurrency(n)?;
    }
    if let Some(w) = req.weight {
        record.weight = valid_weight(w)?;
    }
    if let Some(n) = req.daily_cost_nanousd {
        record.daily_cost_nanousd = valid_budget("daily_cost_nanousd", n)?;
    }
    if let Some(n) = req.monthly_cost_nanousd {
        record.monthly_cost_nanousd = valid_budget("monthly_cost_nanousd", n)?;
    }
    if let Some(group) = req.group {
        record.group = group.filter(|g| !g.trim().is_empty());
    }
    if record.group != before.group {
        keep_keys_bound(app, id, |accounts| {
            for a in accounts.iter_mut().filter(|a| a.id == id) {
                a.group.clone_from(&record.group);
            }
        })
        .await?;
    }
    // A Bedrock account on its region's default endpoint follows a change of region.
    let default_endpoint = record.provider == Provider::Bedrock
        && record.base_url
            == providers::bedrock::default_base_url(record.region.as_deref().unwrap_or_default());
    let vendor = valid_vendor(
        record.provider,
        VendorFields {
            api_version: req.api_version.or(record.api_version.take()),
            deployments: req
                .deployments
                .unwrap_or(std::mem::take(&mut record.deployments)),
            model_map: req
                .model_map
                .unwrap_or(std::mem::take(&mut record.model_map)),
            region: req.region.or(record.region.take()),
            aws_access_key_id: req
                .aws_access_key_id
                .unwrap_or(record.aws_access_key_id.take()),
            project: req
                .project
                .unwrap_or(record.project.take())
                .filter(|p| !p.trim().is_empty()),
        },
    )?;
    record.api_version = vendor.api_version;
    record.deployments = vendor.deployments;
    record.model_map = vendor.model_map;
    record.region = vendor.region;
    record.aws_access_key_id = vendor.aws_access_key_id;
    record.project = vendor.project;
    if to_default {
        record.base_url = default_base_url(record.provider, record.region.as_deref())?;
    } else if default_endpoint && record.base_url == before.base_url {
        record.base_url =
            providers::bedrock::default_base_url(record.region.as_deref().unwrap_or_default());
    }
    Ok(record)
}

pub async fn delete(app: &Arc<App>, id: &str) -> Result<Response<Body>, ApiError> {
    keep_keys_bound(app, id, |accounts| accounts.retain(|a| a.id != id)).await?;
    if !app.store().delete_account(id).await.map_err(store_error)? {
        return Err(ApiError::not_found(format!("no account with id {id}")));
    }
    app.catalog.reload_accounts().await.map_err(store_error)?;
    ok(StatusCode::OK, &json!({ "id": id, "deleted": true }))
}

/// Refuses (409) a change to account `id`, `change` applied to the list of accounts, that would
/// leave keys bound to nothing: bound without `fallback` to this account, or to a group it is
/// the last of, such a key would be answered 503 on every request, with no word of why.
/// `POST /admin/keys` refuses to make one (`keys::valid_binding`); this keeps the accounts'
/// side from making one either.
///
/// Best-effort: the keys and accounts are read, then the account written, with nothing held
/// in between, so a key bound meanwhile (by another admin call, on this instance or another
/// sharing the store) is not seen.
async fn keep_keys_bound(
    app: &App,
    id: &str,
    change: impl FnOnce(&mut Vec<AccountRecord>),
) -> Result<(), ApiError> {
    let before = app.store().accounts().await.map_err(store_error)?;
    let mut after = before.clone();
    change(&mut after);
    let stranded = keys::stranded_by(app, &before, &after).await?;
    if stranded.is_empty() {
        return Ok(());
    }
    Err(ApiError::new(
        ErrorKind::Conflict,
        format!(
            "account {id}: keys bound to it (or to its group) without `fallback` would be left \
             bound to no account, answered 503 on every request: {}; rebind them first (to move \
             a group's last account to another group: bind them to the account by \
             id, move it, then bind them to the new group), or set `fallback: true` in their \
             binding",
            stranded.join(", ")
        ),
    ))
}

/// Renews the account's OAuth access token now (`crate::oauth`).
pub async fn refresh(app: &Arc<App>, id: &str) -> Result<Response<Body>, ApiError> {
    let conflict = |message: &str| ApiError::new(ErrorKind::Conflict, message);
    match app.oauth.renew(app, id, true).await {
        Ok(Renewed::Done { .. } | Renewed::NotDue) => get(app, id).await,
        Ok(Renewed::Busy) => Err(conflict(
            "another instance is renewing this account's token now; it is renewed within a minute",
        )),
        Ok(Renewed::Superseded) => Err(conflict(
            "the account changed while its token was renewed; the change was kept",
        )),
        Err(RenewError::NotFound(_)) => {
            Err(ApiError::not_found(format!("no account with id {id}")))
        }
        Err(e @ RenewError::NoGrant(_)) => Err(ApiError::invalid(e.to_string())),
        Err(e @ (RenewError::Refused(_) | RenewError::Failed(_))) => {
            Err(ApiError::new(ErrorKind::BadGateway, e.to_string()))
        }
        Err(RenewError::Store(e)) => Err(store_error(e)),
    }
}

/// What `POST /admin/accounts/{id}/test` may name.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct TestAccount {
    model: Option<String>,
}

/// Sends the account a short generation, as a client's would go, and shows what came back
/// (`relay::probe`): nothing is reported, charged or recorded. The model: the one named, else
/// the first the account names (its models without a glob, deployments, model map), else a
/// small one of its provider's.
pub async fn test(app: &Arc<App>, id: &str, req: TestAccount) -> Result<Response<Body>, ApiError> {
    let record = find(app, id).await?;
    let Some(account) = app
        .catalog
        .accounts()
        .iter()
        .find(|a| a.id() == id)
        .cloned()
    else {
        return Err(ApiError::new(
            ErrorKind::Conflict,
            "the account's credential or proxy cannot be opened (was the master key changed?); \
             it is not served",
        ));
    };
    let literal = |name: &&String| !crate::catalog::is_glob(name);
    let model = match req
        .model
        .map(|m| m.trim().to_owned())
        .filter(|m| !m.is_empty())
    {
        Some(model) => model,
        None => record
            .models
            .iter()
            .chain(record.deployments.keys())
            .chain(record.model_map.keys())
            .find(literal)
            .cloned()
            .unwrap_or_else(|| test_model(record.provider).to_owned()),
    };
    crate::relay::check_model_name(&model)?;
    if record.provider.protocol() == crate::store::Protocol::Gemini
        && !crate::relay::fits_a_path(&model)
    {
        return Err(ApiError::invalid(
            "model: a Gemini model name (letters, digits, `-`, `_`, `.`)",
        ));
    }
    if model.chars().any(char::is_control) {
        return Err(ApiError::invalid("model: no control characters"));
    }
    let shown = crate::relay::probe::probe(app, &account, &model).await?;
    tracing::info!(
        account_id = id,
        model,
        ok = shown["ok"].as_bool(),
        status = shown["status"].as_u64(),
        "account tested by an admin"
    );
    ok(StatusCode::OK, &shown)
}

/// A small model of each provider's, for a test that names none.
fn test_model(provider: Provider) -> &'static str {
    match provider {
        Provider::Anthropic => "claude-haiku-4-5",
        // Bedrock's ids carry the model's date.
        Provider::Bedrock => "claude-haiku-4-5-20251001",
        Provider::OpenAi | Provider::AzureOpenAi => "gpt-4o-mini",
        Provider::ChatGpt => "gpt-5",
        Provider::Gemini | Provider::CodeAssist => "gemini-2.5-flash",
    }
}

/// Clears the account's health (rate limits, cooldowns, an unauthorized mark): it serves again.
pub async fn reset(app: &Arc<App>, id: &str) -> Result<Response<Body>, ApiError> {
    let account = find(app, id).await?;
    app.store().reset_health(id).await.map_err(store_error)?;
    tracing::info!(account_id = id, "account health reset by an admin");
    // A spent budget's rest stays (and one a failed review left wrong is set right).
    crate::budget::review(app, id, false)
        .await
        .map_err(store_error)?;
    ok(StatusCode::OK, &shown(app, &account).await?)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::valid_base_url;

    #[test]
    fn base_urls_are_http_urls_that_go_out_as_written() {
        assert_eq!(
            valid_base_url(" https://api.example.com/ ").unwrap(),
            "https://api.example.com"
        );
        assert_eq!(
            valid_base_url("http://127.0.0.1:8080/proxy/v1").unwrap(),
            "http://127.0.0.1:8080/proxy/v1"
        );
        for bad in [
            "api.example.com",
            "ftp://api.example.com",
            "https://user:pw@api.example.com",
            "https://api.example.com/?x=1",
            "https://api.example.com/a b",
            "https://api.example.com/ü",
        ] {
            let e = valid_base_url(bad).unwrap_err();
            assert!(e.to_string().contains("base_url"), "{bad}: {e}");
        }
    }
}
