//! The store: every piece of state Switchyard keeps, behind domain operations.
//!
//! Callers never see commands or tables, only what they mean: key and account records, the
//! atomic admission and account pick of the hot path, usage batches, the request log. The
//! embedded implementation (default) keeps hot state in memory and durable records in a redb file;
//! the Redis implementation maps each operation onto one script or pipeline. Both pass
//! `tests/store_conformance.rs`.

pub mod embedded;
pub mod redis;

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use jiff::Timestamp;
use jiff::tz::TimeZone;
use serde::{Deserialize, Serialize};
pub use smol_str::SmolStr;

use crate::scheduler::policy::{Health, Report, Sticky};
use crate::usage::TokenUsage;

pub type StoreResult<T> = Result<T, StoreError>;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The backing store cannot be reached or failed; the request may be retried later.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// Another process holds the embedded database (a running `switchyard serve`).
    #[error("the data directory is in use by another switchyard process")]
    Locked,
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
}

/// A change to shared records that every instance's caches must hear of. A store shared by
/// several instances announces each key and account write itself (so no writer can forget);
/// `Resync` means the feed may have missed messages (a reconnect) and every cache must be dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// The key record with this secret hash changed or was deleted.
    Key {
        hash: String,
    },
    /// Some account record changed, was added or deleted.
    Accounts,
    /// Another price file was imported (`Store::share_prices`).
    Prices,
    Resync,
}

/// A client API key. Only the SHA-256 of the secret is kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRecord {
    pub id: String,
    pub name: String,
    /// Lower-case hex SHA-256 of the full secret.
    pub hash: String,
    /// The first characters of the secret, enough to recognise it in a list (`sy-AbCd`).
    pub prefix: String,
    pub enabled: bool,
    /// Unix milliseconds.
    pub created_at: i64,
    /// Dedicated accounts: this key is served only by these, unless they cannot serve and the
    /// binding allows falling back to the shared pool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binding: Option<KeyBinding>,
    /// What the key may do and spend; the default limits nothing.
    #[serde(default, skip_serializing_if = "KeyLimits::is_unlimited")]
    pub limits: KeyLimits,
    /// How many times the record was written by `Store::update_key`: a write made from an
    /// older read is refused (a rotation and a change made at once cannot undo each other).
    #[serde(default)]
    pub revision: u64,
}

/// Limits of one key, under `limits` in the admin API. Every field absent (or `null`, or an empty
/// list) limits nothing. Checked by `limits::admit`; the counters live in the store.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyLimits {
    /// Requests of this key in flight at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrency: Option<u32>,
    /// Requests, tokens and cost per fixed window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<WindowLimit>,
    /// Cost per calendar day in `limits.timezone`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub daily_cost_nanousd: Option<u64>,
    /// Cost per calendar week (Monday to Sunday) in `limits.timezone`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weekly_cost_nanousd: Option<u64>,
    /// Cost over the key's whole life.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_cost_nanousd: Option<u64>,
    /// Weekly cost per model family (`opus`, `sonnet`, `haiku`): family -> limit.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub weekly_family_cost_nanousd: BTreeMap<String, u64>,
    /// The key is refused before this instant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub starts_at: Option<jiff::Timestamp>,
    /// The key is refused from this instant on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<jiff::Timestamp>,
    /// The key is valid this many days from its first request (activation on first use).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_days: Option<u32>,
    /// Model globs the key may use; empty allows every model not blocked.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_models: Vec<String>,
    /// Model globs the key may not use; wins over `allowed_models`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub blocked_models: Vec<String>,
    /// Clients the key may be used from (`claude-code`, `gemini-cli`, `codex`); empty: any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_clients: Vec<String>,
    /// Surfaces the key may call (`anthropic`, `openai`, `gemini`, `images`); empty: all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_surfaces: Vec<String>,
}

impl KeyLimits {
    pub fn is_unlimited(&self) -> bool {
        *self == KeyLimits::default()
    }
}

/// Limits per fixed window of `seconds` (aligned to multiples of its length since the Unix epoch).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WindowLimit {
    pub seconds: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_nanousd: Option<u64>,
}

/// The accounts a key is bound to: listed by id, or every account of a group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyBinding {
    #[serde(default)]
    pub accounts: Vec<String>,
    #[serde(default)]
    pub group: Option<String>,
    /// When none of the bound accounts can serve: use the shared pool (`true`) or answer 503.
    #[serde(default)]
    pub fallback: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Provider {
    Anthropic,
    /// OpenAI, or any vendor with an OpenAI-compatible API (DeepSeek, DashScope's compatible mode, ...).
    #[serde(rename = "openai")]
    OpenAi,
    /// Azure OpenAI: deployments per model, `api-key` header, `api-version` query.
    #[serde(rename = "azure-openai")]
    AzureOpenAi,
    Gemini,
    /// Amazon Bedrock: Claude models through `bedrock-runtime`, for Anthropic clients
    /// (`providers::bedrock`).
    Bedrock,
    /// A ChatGPT subscription through the Codex backend: streamed Responses calls only
    /// (`providers::chatgpt`).
    #[serde(rename = "chatgpt")]
    ChatGpt,
    /// A Google login (Gemini CLI's "Login with Google": Gemini Code Assist, Google AI Pro and
    /// Ultra) through the Code Assist API: Gemini's generation calls only
    /// (`providers::code_assist`).
    CodeAssist,
}

/// The wire protocol an account speaks: which requests it can serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    Anthropic,
    OpenAi,
    Gemini,
}

impl Provider {
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Anthropic => "anthropic",
            Provider::OpenAi => "openai",
            Provider::AzureOpenAi => "azure-openai",
            Provider::Gemini => "gemini",
            Provider::Bedrock => "bedrock",
            Provider::ChatGpt => "chatgpt",
            Provider::CodeAssist => "code-assist",
        }
    }

    /// Whether the account serves OpenAI's own API (chat completions, the model list, ...):
    /// an OpenAI(-compatible) or Azure account, not a ChatGPT subscription, whose backend has
    /// only Responses calls.
    pub fn serves_openai_api(self) -> bool {
        matches!(self, Provider::OpenAi | Provider::AzureOpenAi)
    }

    pub fn protocol(self) -> Protocol {
        match self {
            Provider::Anthropic | Provider::Bedrock => Protocol::Anthropic,
            Provider::OpenAi | Provider::AzureOpenAi | Provider::ChatGpt => Protocol::OpenAi,
            Provider::Gemini | Provider::CodeAssist => Protocol::Gemini,
        }
    }
}

/// What one report did to an account's health (`Store::report_health`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthChange {
    pub before: Health,
    pub after: Health,
}

/// An upstream vendor account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountRecord {
    pub id: String,
    pub name: String,
    pub provider: Provider,
    /// Without a trailing slash; paths are appended as the vendor's SDK does.
    pub base_url: String,
    /// The api key sealed by `crypto::MasterKey::seal` (never the plain text).
    pub sealed_api_key: String,
    /// Lower is preferred.
    pub priority: i32,
    pub schedulable: bool,
    pub enabled: bool,
    /// Model globs this account serves; empty means every model.
    pub models: Vec<String>,
    /// At most this many requests in flight at once; `None` is unbounded.
    pub max_concurrency: Option<u32>,
    /// Share of load relative to the other accounts of the same priority.
    #[serde(default = "one")]
    pub weight: u32,
    /// A group keys can be bound to (`KeyBinding::group`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Azure OpenAI: the `api-version` query parameter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    /// Azure OpenAI: model name -> deployment name (a model without one is its own deployment).
    /// Bedrock: model name -> model id or inference profile (`providers::bedrock::model_id`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub deployments: BTreeMap<String, String>,
    /// Anthropic, OpenAI, Gemini and ChatGPT: the model the client asks for (a name or a glob)
    /// -> the name this account's vendor knows it by (`catalog::Account::upstream_model`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub model_map: BTreeMap<String, String>,
    /// Bedrock: the AWS region, which requests are signed for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Bedrock: the AWS access key id when requests are signed (SigV4) with it and the secret
    /// access key, which is then the sealed api key; without it, the api key is a Bedrock API
    /// key, sent as a bearer token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aws_access_key_id: Option<String>,
    /// Code Assist: the Google Cloud project its calls are made for; unset, the one the Code
    /// Assist API gives the login (`providers::code_assist::project`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    /// The account's own proxy URL (its credentials with it), sealed under
    /// `upstream_client::proxy_aad`: every call made for the account goes through it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sealed_proxy: Option<String>,
    /// A subscription account's OAuth grant: the sealed api key is then its access token, which
    /// the relay renews with the refresh token before it expires (`crate::oauth`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oauth: Option<OAuthGrant>,
    /// What the account may cost per calendar day, and per calendar month, in `[limits]
    /// timezone` (`crate::budget`): reached, it serves no more until the period ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub daily_cost_nanousd: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monthly_cost_nanousd: Option<u64>,
    pub created_at: i64,
    /// How many times the record was written by `Store::update_account_checked`: a write made
    /// from an older read is refused.
    #[serde(default)]
    pub revision: u64,
}

/// How often a writer of an account record (a renewal, an admin's change) makes its change again
/// to a record that changed since it read it (`Store::update_account_checked` refused).
pub const ACCOUNT_WRITE_ATTEMPTS: usize = 5;

/// How an account's access token is renewed: the OAuth 2.0 refresh-token grant (RFC 6749 §6)
/// at the vendor's token endpoint, as the client the tokens were issued to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OAuthGrant {
    /// The token endpoint (`https://auth.openai.com/oauth/token`, ...).
    pub token_url: String,
    /// The OAuth client the tokens were issued to (the CLI that logged in).
    pub client_id: String,
    /// The client's secret, for endpoints that want one (Google's, of an installed app's
    /// client), sealed under `oauth::client_secret_aad`; with it, renewals are sent as a form.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sealed_client_secret: Option<String>,
    /// The refresh token sealed by `crypto::MasterKey::seal` under `oauth::refresh_aad` (never
    /// the plain text). A vendor that rotates refresh tokens gets the new one kept here.
    pub sealed_refresh_token: String,
    /// Unix ms the access token expires at; 0 when unknown (it is then renewed at once).
    pub expires_at: i64,
    /// Unix ms of the last renewal, or of the last access token an admin gave; 0 before either.
    #[serde(default)]
    pub refreshed_at: i64,
    /// Sent with each renewal when set (`scope`: what Codex CLI asks for, `openid profile
    /// email`); unset, the grant's own scope stays.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// The last renewal was made because the vendor refused the token before it: should it
    /// refuse this one too, the grant is not tried again.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub after_refusal: bool,
    /// Why the last renewal failed for good (the grant was refused): the relay does not try
    /// that refresh token again. Cleared by a renewal or a new grant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
}

fn one() -> u32 {
    1
}

/// Identifies one in-flight request's hold on the store's counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// Unique per request.
    pub id: String,
    /// A lease not released within this time expires on its own (a crashed instance leaks
    /// nothing); a request still in progress renews it (`Store::renew`).
    pub ttl: Duration,
}

/// What the key's limits allow; checked and reserved in one atomic `admit` call.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Admission {
    pub key_id: String,
    /// Maximum requests of this key in flight; `None` is unbounded.
    pub max_concurrency: Option<u32>,
    /// Counters the request is checked against and holds a reservation on until it settles.
    pub meters: Vec<Meter>,
    /// Activation on first use: the key is valid for this many ms from its first admission,
    /// which this admission records when it is the first.
    pub valid_after_first_use_ms: Option<i64>,
    /// Unix ms, the caller's clock: lease deadlines, lease expiry, activation.
    pub now_ms: i64,
}

/// One of an owner's spend counters (`Store::add_spend`): an account's cost in one period.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpendBucket {
    /// Names the period, unique within the owner: `day:2026-11-22`, `month:2026-11`. Made of
    /// `[A-Za-z0-9:._-]`.
    pub name: SmolStr,
    /// Unix ms after which the counter is no longer needed.
    pub expires_at: i64,
}

/// One counter of a key (a window's requests, a day's cost, ...). A request is admitted when
/// `used + held + reserve <= limit`, or when nothing is held and `used < limit` (so a request
/// whose estimate alone exceeds what is left still gets through when it is the only one: the
/// budget is then overshot by at most that request's estimate error).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meter {
    /// Names the counter and its period, unique within the key: `win:600:2941337:req`,
    /// `day:2026-11-22`, `week:2026-11-16:opus`, `total`. Made of `[A-Za-z0-9:._-]`.
    pub bucket: SmolStr,
    pub limit: u64,
    /// What this request holds until it settles (its estimate; 1 for a request count).
    pub reserve: u64,
    /// Unix ms after which the counter is no longer needed (its period is over, plus the
    /// longest lease); `None` keeps it forever.
    pub expires_at: Option<i64>,
}

impl Meter {
    /// Whether a request reserving `self.reserve` fits next to `now`.
    pub fn admits(&self, now: MeterUse) -> bool {
        let wanted = now
            .used
            .saturating_add(now.held)
            .saturating_add(self.reserve);
        wanted <= self.limit || (now.held == 0 && now.used < self.limit)
    }
}

/// A counter's state: settled use, and what requests in flight hold.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MeterUse {
    pub used: u64,
    pub held: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admit {
    Granted,
    /// The key already has this many requests in flight.
    ConcurrencyExceeded {
        limit: u32,
    },
    /// `Admission::meters[meter]` has no room for this request.
    MeterFull {
        meter: usize,
        usage: MeterUse,
    },
    /// The key was first used at this unix ms, and its validity from then has run out.
    Expired {
        first_used_at: i64,
    },
}

/// What `key_state` reads for the key-info view.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyState {
    /// Leases in flight (live ones only).
    pub in_flight: u32,
    /// One per bucket asked for, in order (zero where nothing was counted).
    pub meters: Vec<MeterUse>,
    /// Unix ms of the key's first admission with activation on first use, if any.
    pub first_used_at: Option<i64>,
}

/// One account the scheduler may use. `pick_account` applies `scheduler::policy::choose`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub account_id: String,
    pub priority: i32,
    pub max_concurrency: Option<u32>,
    /// Share of load relative to the others of the same priority (at least 1).
    pub weight: u32,
    /// Whether it serves the request's model. One that does not is a candidate only so that a
    /// session bound to it is recognised: it has no capacity (`max_concurrency: Some(0)`), and
    /// that session escapes, whatever `sticky_overflow` says, keeping its binding for the
    /// requests its account serves (Claude Code's small-model calls in a session bound to an
    /// Opus-only account).
    pub serves: bool,
}

/// What `pick_account` is asked: `scheduler::policy::choose` over these candidates.
#[derive(Debug, Clone)]
pub struct PickRequest<'a> {
    pub candidates: &'a [Candidate],
    /// The requested model's family, for family-scoped rate limits.
    pub family: Option<&'a str>,
    /// The request's session, when it has one.
    pub session: Option<SessionPick<'a>>,
    /// Unix ms, the caller's clock (as for leases).
    pub now_ms: i64,
}

/// A session's binding to an account, kept in the store with a TTL renewed on every pick.
#[derive(Debug, Clone, Copy)]
pub struct SessionPick<'a> {
    /// Opaque, already scoped to the key (`scheduler::session::identify`).
    pub id: &'a str,
    pub ttl: Duration,
    /// When the bound account cannot serve: move the binding (`true`) or let this request
    /// escape once and keep it (`false`).
    pub move_on_overflow: bool,
    /// Whether the pick writes the binding (makes, moves or renews it). `false`: it is only read
    /// (a stored response's, written when an answer made the response: naming ids, which costs
    /// a key holder nothing, must leave nothing behind, nor move or shorten a binding), and the
    /// request waits for the bound account when it cannot serve now
    /// ([`policy::Overflow::Wait`](crate::scheduler::policy::Overflow::Wait)): what it names
    /// lives there only.
    pub write: bool,
}

impl SessionPick<'_> {
    /// What the session does when its bound account cannot serve now.
    pub fn overflow(&self) -> crate::scheduler::policy::Overflow {
        use crate::scheduler::policy::Overflow;
        match (self.write, self.move_on_overflow) {
            (false, _) => Overflow::Wait,
            (true, true) => Overflow::Move,
            (true, false) => Overflow::Escape,
        }
    }
}

/// The answer of `pick_account`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Picked {
    Account {
        id: String,
        sticky: Sticky,
        /// The account's health was not clean (failures counted or a cooldown recorded): the
        /// caller should report the outcome even when it is a success.
        degraded: bool,
    },
    /// No candidate can serve now; the earliest one recovers on its own at `retry_at` (unix ms).
    Unavailable { retry_at: Option<i64> },
}

/// What `admit_and_pick` took.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Taken {
    /// The admission was refused (never `Admit::Granted`): nothing was taken.
    Refused(Admit),
    /// Admitted; the pick's answer. The key's lease is held only with `Picked::Account`.
    Picked(Picked),
}

/// A key lease to give back in `finish`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySettle {
    pub key_id: String,
    pub lease: Lease,
    /// What it reserved, as admitted: `(bucket, reserve)` in the admission's order.
    pub reserved: Vec<(SmolStr, u64)>,
    /// What the request used: `(bucket, amount)` (as `settle`).
    pub used: Vec<(SmolStr, u64)>,
}

/// An account lease to give back in `finish`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountRelease {
    pub key_id: String,
    pub account_id: String,
    pub lease: Lease,
}

/// A session binding written once an answer is known (`finish`), as a pick writes one
/// (`SessionPick`): created, or moved to the account, with the TTL from now. The answer made
/// something that only this account holds (a stored response).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    /// Opaque, already scoped to the key (`scheduler::session::Session`).
    pub session: String,
    /// Zero removes the binding.
    pub ttl: Duration,
}

/// A key lease to renew in `renew`: what `admit` took for a request still in progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRenewal {
    pub key_id: String,
    pub lease: Lease,
    /// What it reserved, as admitted: `(bucket, reserve)` in the admission's order (as
    /// `KeySettle::reserved`).
    pub reserved: Vec<(SmolStr, u64)>,
}

/// What `renew` found still held, and extended.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Renewed {
    pub key: bool,
    pub account: bool,
}

/// Hot, shared state of one account.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountRuntime {
    pub in_flight: u32,
    /// Unix milliseconds of the last pick, 0 if never.
    pub last_used_at: i64,
    pub health: Health,
}

/// Additive counters for one dimension over one time bucket.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    pub requests: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache_creation_input_tokens: u64,
    pub cache_creation_5m_input_tokens: u64,
    pub cache_creation_1h_input_tokens: u64,
    pub cache_read_input_tokens: u64,
    pub cost_nanousd: u64,
    /// Images generated; absent in counters written before image generation existed.
    #[serde(default)]
    pub images: u64,
    /// Arrival (unix ms) of the newest request counted here: not a sum, `add` keeps the larger.
    /// 0 when none, or when every request counted came before the field existed.
    #[serde(default)]
    pub last_at: i64,
}

impl Counters {
    /// One request that arrived at `at` (unix ms).
    pub fn of(usage: &TokenUsage, cost_nanousd: u64, at: i64) -> Counters {
        Counters {
            requests: 1,
            input_tokens: usage.input_tokens,
            output_tokens: usage.output_tokens,
            cache_creation_input_tokens: usage.cache_creation_input_tokens,
            cache_creation_5m_input_tokens: usage.cache_creation_5m_input_tokens,
            cache_creation_1h_input_tokens: usage.cache_creation_1h_input_tokens,
            cache_read_input_tokens: usage.cache_read_input_tokens,
            cost_nanousd,
            images: usage.images,
            last_at: at,
        }
    }

    pub fn add(&mut self, other: &Counters) {
        self.requests = self.requests.saturating_add(other.requests);
        self.input_tokens = self.input_tokens.saturating_add(other.input_tokens);
        self.output_tokens = self.output_tokens.saturating_add(other.output_tokens);
        self.cache_creation_input_tokens = self
            .cache_creation_input_tokens
            .saturating_add(other.cache_creation_input_tokens);
        self.cache_creation_5m_input_tokens = self
            .cache_creation_5m_input_tokens
            .saturating_add(other.cache_creation_5m_input_tokens);
        self.cache_creation_1h_input_tokens = self
            .cache_creation_1h_input_tokens
            .saturating_add(other.cache_creation_1h_input_tokens);
        self.cache_read_input_tokens = self
            .cache_read_input_tokens
            .saturating_add(other.cache_read_input_tokens);
        self.cost_nanousd = self.cost_nanousd.saturating_add(other.cost_nanousd);
        self.images = self.images.saturating_add(other.images);
        self.last_at = self.last_at.max(other.last_at);
    }
}

/// What usage is counted by. `All` is the whole installation.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Dimension {
    All,
    Key(String),
    Account(String),
    Model(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Granularity {
    Hour,
    Day,
    Month,
}

/// A time bucket, named by its start in UTC: hour `2026-11-22T08`, day `2026-11-22`, month
/// `2026-11`, or the all-time total.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Bucket {
    Hour(String),
    Day(String),
    Month(String),
    Total,
}

/// The hour, day, month and all-time buckets that the instant `at_ms` (unix ms) falls in, in UTC.
pub fn buckets_of(at_ms: i64) -> [Bucket; 4] {
    let ts = Timestamp::from_millisecond(at_ms).unwrap_or(Timestamp::UNIX_EPOCH);
    let zoned = ts.to_zoned(TimeZone::UTC);
    [
        Bucket::Hour(zoned.strftime("%Y-%m-%dT%H").to_string()),
        Bucket::Day(zoned.strftime("%Y-%m-%d").to_string()),
        Bucket::Month(zoned.strftime("%Y-%m").to_string()),
        Bucket::Total,
    ]
}

/// How long hour buckets are kept, on every store: on Redis by a TTL from their last write, on
/// the embedded store from the end of their hour (`Store::prune_usage`).
pub const HOUR_BUCKETS_KEPT: Duration = Duration::from_secs(35 * 86_400);
/// The same for day buckets. Month buckets are kept five years on Redis and for good on the
/// embedded store; totals for good on both.
pub const DAY_BUCKETS_KEPT: Duration = Duration::from_secs(400 * 86_400);

/// Usage aggregated in memory by `stats`, written in one store call.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UsageBatch {
    /// Unique per batch. A batch whose write failed is retried whole with the same id, so a
    /// store that applied part of it before failing can skip what it already applied.
    pub id: u64,
    pub counters: BTreeMap<(Dimension, Bucket), Counters>,
    pub requests: Vec<RequestLogEntry>,
}

impl UsageBatch {
    pub fn is_empty(&self) -> bool {
        self.counters.is_empty() && self.requests.is_empty()
    }
}

/// Which of the request log's entries to read: every one, or those of a key, an account, or both.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RequestFilter<'a> {
    pub key_id: Option<&'a str>,
    pub account_id: Option<&'a str>,
}

impl<'a> RequestFilter<'a> {
    pub const ALL: RequestFilter<'static> = RequestFilter {
        key_id: None,
        account_id: None,
    };

    pub fn key(key_id: &'a str) -> RequestFilter<'a> {
        RequestFilter {
            key_id: Some(key_id),
            account_id: None,
        }
    }

    pub fn account(account_id: &'a str) -> RequestFilter<'a> {
        RequestFilter {
            key_id: None,
            account_id: Some(account_id),
        }
    }

    /// Whether `entry` passes.
    pub fn admits(&self, entry: &RequestLogEntry) -> bool {
        self.key_id.is_none_or(|k| k == entry.key_id)
            && self
                .account_id
                .is_none_or(|a| entry.account_id.as_deref() == Some(a))
    }
}

/// One relayed request, as the request log shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestLogEntry {
    pub request_id: String,
    /// Unix milliseconds when the request arrived.
    pub at: i64,
    pub key_id: String,
    pub account_id: Option<String>,
    pub model: String,
    pub surface: String,
    pub status: u16,
    pub latency_ms: u64,
    /// Time to the first response byte from upstream; `None` if none came.
    pub ttfb_ms: Option<u64>,
    pub usage: TokenUsage,
    pub cost_nanousd: u64,
    /// Answered from the image result cache, without an upstream call.
    #[serde(default)]
    pub cache_hit: bool,
    /// A count in `usage` is Switchyard's estimate: the answer's final count never came
    /// (`UsageReader::billed`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub estimated: bool,
}

impl RequestLogEntry {
    /// Appends the entry as JSON to `out`: the very bytes `serde_json::to_vec` writes for it (the
    /// stores read it back with serde), written field by field, its strings escaped by
    /// serde_json. serde's serializer escapes each of the entry's twenty keys byte by byte, which
    /// made up most of the 6k instructions an entry took to encode on every request.
    pub fn write_json(&self, out: &mut Vec<u8>) -> serde_json::Result<()> {
        let mut n = itoa::Buffer::new();
        let json_str = |out: &mut Vec<u8>, s: &str| serde_json::to_writer(&mut *out, s);
        out.extend_from_slice(br#"{"request_id":"#);
        json_str(out, &self.request_id)?;
        out.extend_from_slice(br#","at":"#);
        out.extend_from_slice(n.format(self.at).as_bytes());
        out.extend_from_slice(br#","key_id":"#);
        json_str(out, &self.key_id)?;
        out.extend_from_slice(br#","account_id":"#);
        match &self.account_id {
            Some(id) => json_str(out, id)?,
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(br#","model":"#);
        json_str(out, &self.model)?;
        out.extend_from_slice(br#","surface":"#);
        json_str(out, &self.surface)?;
        out.extend_from_slice(br#","status":"#);
        out.extend_from_slice(n.format(self.status).as_bytes());
        out.extend_from_slice(br#","latency_ms":"#);
        out.extend_from_slice(n.format(self.latency_ms).as_bytes());
        out.extend_from_slice(br#","ttfb_ms":"#);
        match self.ttfb_ms {
            Some(ms) => out.extend_from_slice(n.format(ms).as_bytes()),
            None => out.extend_from_slice(b"null"),
        }
        let u = &self.usage;
        for (name, count) in [
            (r#","usage":{"input_tokens":"#, u.input_tokens),
            (r#","output_tokens":"#, u.output_tokens),
            (
                r#","cache_creation_input_tokens":"#,
                u.cache_creation_input_tokens,
            ),
            (
                r#","cache_creation_5m_input_tokens":"#,
                u.cache_creation_5m_input_tokens,
            ),
            (
                r#","cache_creation_1h_input_tokens":"#,
                u.cache_creation_1h_input_tokens,
            ),
            (r#","cache_read_input_tokens":"#, u.cache_read_input_tokens),
            (r#","images":"#, u.images),
        ] {
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(n.format(count).as_bytes());
        }
        // Only when there were some, as serde skips it.
        if u.web_search_requests != 0 {
            out.extend_from_slice(br#","web_search_requests":"#);
            out.extend_from_slice(n.format(u.web_search_requests).as_bytes());
        }
        out.extend_from_slice(br#"},"cost_nanousd":"#);
        out.extend_from_slice(n.format(self.cost_nanousd).as_bytes());
        let cache_hit: &[u8] = if self.cache_hit {
            br#","cache_hit":true"#
        } else {
            br#","cache_hit":false"#
        };
        out.extend_from_slice(cache_hit);
        if self.estimated {
            out.extend_from_slice(br#","estimated":true"#);
        }
        out.push(b'}');
        Ok(())
    }
}

/// `bucket_keys` of a query: which buckets to read for `dimension`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageQuery {
    pub dimension: Dimension,
    /// Buckets to read, in order; the answer has one entry per bucket (zero where nothing was recorded).
    pub buckets: Vec<Bucket>,
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Cheap liveness check (used by `/health`).
    async fn ping(&self) -> StoreResult<()>;

    /// Called on server worker `worker`'s own runtime as it starts (src/server.rs), so a store
    /// with network connections can open some there for that worker's requests. Until it
    /// returns, and if it fails, the worker uses the store's first connections.
    async fn start_worker(&self, worker: usize) -> StoreResult<()> {
        let _ = worker;
        Ok(())
    }

    /// Whether the hot-path calls (`settle`, `release`) complete without waiting on anything
    /// (in-memory state): the caller may then run them in place instead of on a task of their own.
    fn is_local(&self) -> bool {
        false
    }

    // --- key records (admin path) ---
    async fn insert_key(&self, key: &KeyRecord) -> StoreResult<()>;
    async fn key(&self, id: &str) -> StoreResult<Option<KeyRecord>>;
    async fn key_by_hash(&self, hash: &str) -> StoreResult<Option<KeyRecord>>;
    /// Oldest first.
    async fn keys(&self) -> StoreResult<Vec<KeyRecord>>;
    /// Writes `key`, changed from a record read at `key.revision`, only while the stored record
    /// is still at that revision, and then at the next one; `false` if there is no record or it
    /// changed since (a change read before a rotation must not write the old secret back, nor
    /// a rotation undo a change). A new `key.hash` rotates the secret: the old one stops
    /// resolving.
    async fn update_key(&self, key: &KeyRecord) -> StoreResult<bool>;
    async fn delete_key(&self, id: &str) -> StoreResult<bool>;

    // --- account records (admin path) ---
    async fn insert_account(&self, account: &AccountRecord) -> StoreResult<()>;
    async fn account(&self, id: &str) -> StoreResult<Option<AccountRecord>>;
    /// Oldest first.
    async fn accounts(&self) -> StoreResult<Vec<AccountRecord>>;
    /// Writes `account`, changed from a record read at `account.revision`, only while the
    /// stored record is still at that revision, and then at the next one, checked and written
    /// atomically: two writers that read the same record (a renewal of its OAuth token, an
    /// admin's change) cannot write one over the other (a refresh token spent by the renewal
    /// would come back). `false` when the record changed meanwhile, or is gone: read it again.
    async fn update_account_checked(&self, account: &AccountRecord) -> StoreResult<bool>;
    /// Also forgets the account's runtime state.
    async fn delete_account(&self, id: &str) -> StoreResult<bool>;
    async fn account_runtime(&self, id: &str) -> StoreResult<AccountRuntime>;

    // --- the hot path: at most two calls before the upstream request, one after ---
    /// Atomically checks the key's limits and takes a lease on them.
    async fn admit(&self, admission: &Admission, lease: &Lease) -> StoreResult<Admit>;
    /// Atomically chooses one candidate by `scheduler::policy::choose` (health, concurrency caps,
    /// the session's binding, priority, relative load, least recently picked), takes a lease on
    /// it, marks it used, and creates, renews or moves the session's binding as the choice says.
    async fn pick_account(&self, request: &PickRequest<'_>, lease: &Lease) -> StoreResult<Picked>;
    /// `admit`, then `pick_account` once admitted, as one call: a store that can do both in one
    /// round trip does so (Redis: one script). Nothing stays taken unless an account was picked.
    async fn admit_and_pick(
        &self,
        admission: &Admission,
        key_lease: &Lease,
        request: &PickRequest<'_>,
        account_lease: &Lease,
    ) -> StoreResult<Taken> {
        let admit = self.admit(admission, key_lease).await?;
        if admit != Admit::Granted {
            return Ok(Taken::Refused(admit));
        }
        let picked = self.pick_account(request, account_lease).await;
        if !matches!(picked, Ok(Picked::Account { .. })) {
            self.settle(&admission.key_id, key_lease, &[]).await?;
        }
        picked.map(Taken::Picked)
    }
    /// Applies one upstream outcome to the account's health (`Health::apply`), atomically with
    /// respect to other instances' reports: the health it was applied to, and what it made of
    /// it. Of reports racing on any number of instances, each is applied to the health the one
    /// before it left, so each change of state is seen by one report only (`crate::notify`
    /// tells of it once).
    async fn report_health(
        &self,
        account_id: &str,
        report: &Report,
        now_ms: i64,
    ) -> StoreResult<HealthChange>;
    /// Clears the account's health of the vendor's verdicts (an admin's reset, a new
    /// credential): it serves again at once, unless its budget is spent (`Report::Cleared`).
    async fn reset_health(&self, account_id: &str) -> StoreResult<()>;
    /// Adds `amount` to each of `owner`'s spend counters in `buckets` (created at 0 when
    /// missing, kept until their `expires_at`), atomically across instances; their totals after
    /// the addition, in order. `charge` names the addition: made again (a call retried after its
    /// reply was lost), it adds nothing. Off the hot path: called after a request of an account
    /// with a budget ended (`crate::budget`).
    async fn add_spend(
        &self,
        owner: &str,
        buckets: &[SpendBucket],
        amount: u64,
        charge: &str,
    ) -> StoreResult<Vec<u64>>;
    /// Raises `owner`'s spend counter `bucket` to `at_least` if it is below (created when
    /// missing, kept until its `expires_at`); its total after.
    async fn raise_spend(
        &self,
        owner: &str,
        bucket: &SpendBucket,
        at_least: u64,
    ) -> StoreResult<u64>;
    /// The totals of `owner`'s spend counters named `buckets`, in order (0 for one missing or
    /// expired).
    async fn spend(&self, owner: &str, buckets: &[SmolStr]) -> StoreResult<Vec<u64>>;
    /// Ends a key's lease taken by `admit`, atomically returning what it held on each meter and
    /// adding what the request really used (`(bucket, amount)`, the buckets of its admission).
    /// Idempotent: settling the same lease twice counts once. A lease that expired before it was
    /// settled already returned its holds; its use is still added.
    async fn settle(&self, key_id: &str, lease: &Lease, used: &[(SmolStr, u64)])
    -> StoreResult<()>;
    /// The key's live state for these buckets (the key-info view).
    async fn key_state(&self, key_id: &str, buckets: &[SmolStr]) -> StoreResult<KeyState>;
    /// Ends a lease: the key's own (taken by `admit`, as `settle` with nothing used) when
    /// `account_id` is `None`, else the account's (taken by `pick_account`). Idempotent.
    async fn release(
        &self,
        key_id: &str,
        account_id: Option<&str>,
        lease: &Lease,
    ) -> StoreResult<()>;

    /// `settle` of the key's lease and `release` of the account's, and `bind` of a session to
    /// that account (written whether its lease was still held or not; ignored without an
    /// account), as one call and one round trip (Redis: one script). Idempotent, as they are.
    async fn finish(
        &self,
        key: Option<&KeySettle>,
        account: Option<&AccountRelease>,
        bind: Option<&Binding>,
    ) -> StoreResult<()>;

    /// Keeps the leases of a request still in progress (a stream that runs longer than their
    /// ttl) from expiring: each one still held and live is extended to now + its ttl (never
    /// shortened), in one call. The key's lease and what it holds on each meter are judged and
    /// extended by `now_ms` (the caller's clock, as `Admission::now_ms`); the account's by the
    /// clock its pick used. A lease given back, or past its deadline (swept or about to be), is
    /// not brought back: its holds went back, or are about to, and others may have taken its
    /// place. Off the hot path: only requests that outlast a fraction of their ttl call it.
    async fn renew(
        &self,
        key: Option<&KeyRenewal>,
        account: Option<&AccountRelease>,
        now_ms: i64,
    ) -> StoreResult<Renewed>;

    // --- usage ---
    /// Adds every counter of the batch and appends its request log entries, all or nothing.
    async fn record_usage(&self, batch: &UsageBatch) -> StoreResult<()>;
    /// Counters for each bucket of the query, in the query's order.
    async fn usage(&self, query: &UsageQuery) -> StoreResult<Vec<Counters>>;
    /// Deletes hour and day buckets older than `HOUR_BUCKETS_KEPT` and `DAY_BUCKETS_KEPT` at
    /// `now_ms`, a bounded amount of work per call (the stats task calls it every flush
    /// interval); returns how many it deleted. Redis expires them by TTL: nothing to do there.
    async fn prune_usage(&self, _now_ms: i64) -> StoreResult<usize> {
        Ok(0)
    }
    /// Whatever the store does now and then on its own, called every flush interval by the
    /// stats task: on Redis behind Sentinels, the last moments' writes made again after a
    /// failover (`store::redis::sentinel`); nothing elsewhere.
    async fn upkeep(&self) -> StoreResult<()> {
        Ok(())
    }
    /// The most recent requests, newest first, optionally only those of one key, one account,
    /// or both.
    async fn recent_requests(
        &self,
        filter: &RequestFilter<'_>,
        limit: usize,
    ) -> StoreResult<Vec<RequestLogEntry>>;

    /// Makes everything written so far durable. Called on graceful shutdown.
    async fn flush(&self) -> StoreResult<()>;

    /// Keeps an imported price file (LiteLLM JSON) for every instance sharing the store, and
    /// announces it (`Change::Prices`). `false` when the store is not shared: the caller keeps
    /// the file itself (in its data dir).
    async fn share_prices(&self, json: &str) -> StoreResult<bool> {
        let _ = json;
        Ok(false)
    }

    /// The price file `share_prices` kept, if any.
    async fn shared_prices(&self) -> StoreResult<Option<String>> {
        Ok(None)
    }

    /// Claims `name` for `owner` (unique per claim) for at most `ttl` among every instance
    /// sharing the store: `true` for the one caller that gets it, until it lapses or its owner
    /// gives it up (`unclaim`); meanwhile every other caller gets `false`, and the owner asking
    /// again `true` (its claim then lasts `ttl` from then). Off the hot path: a
    /// renewal of an account's OAuth token claims it first, so that one refresh token is spent
    /// once. The embedded store has one process, whose callers serialise themselves: every
    /// claim is granted.
    async fn claim(&self, name: &str, owner: &str, ttl: Duration) -> StoreResult<bool> {
        let _ = (name, owner, ttl);
        Ok(true)
    }

    /// Gives up `owner`'s claim of `name`, if it still holds it.
    async fn unclaim(&self, name: &str, owner: &str) -> StoreResult<()> {
        let _ = (name, owner);
        Ok(())
    }

    /// Changes written by other instances, for cache invalidation; `None` when the store is not
    /// shared (the embedded store: this process made every change itself).
    fn changes(&self) -> Option<tokio::sync::broadcast::Receiver<Change>> {
        None
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn entry() -> impl Strategy<Value = RequestLogEntry> {
        let text = || any::<String>();
        let usage = (
            proptest::array::uniform7(any::<u64>()),
            prop_oneof![Just(0), any::<u64>()],
        )
            .prop_map(|(n, web_search_requests)| TokenUsage {
                input_tokens: n[0],
                output_tokens: n[1],
                cache_creation_input_tokens: n[2],
                cache_creation_5m_input_tokens: n[3],
                cache_creation_1h_input_tokens: n[4],
                cache_read_input_tokens: n[5],
                images: n[6],
                web_search_requests,
            });
        (
            (
                text(),
                any::<i64>(),
                text(),
                proptest::option::of(text()),
                text(),
            ),
            (
                text(),
                any::<u16>(),
                any::<u64>(),
                proptest::option::of(any::<u64>()),
            ),
            (usage, any::<u64>(), any::<bool>(), any::<bool>()),
        )
            .prop_map(
                |(
                    (request_id, at, key_id, account_id, model),
                    (surface, status, latency_ms, ttfb_ms),
                    (usage, cost_nanousd, cache_hit, estimated),
                )| RequestLogEntry {
                    request_id,
                    at,
                    key_id,
                    account_id,
                    model,
                    surface,
                    status,
                    latency_ms,
                    ttfb_ms,
                    usage,
                    cost_nanousd,
                    cache_hit,
                    estimated,
                },
            )
    }

    proptest! {
        /// Byte for byte what serde writes, so entries written before and after read alike.
        #[test]
        fn write_json_writes_what_serde_writes(entry in entry()) {
            let mut out = b"[".to_vec();
            entry.write_json(&mut out).unwrap();
            prop_assert_eq!(&out[1..], serde_json::to_vec(&entry).unwrap());
            let back: RequestLogEntry = serde_json::from_slice(&out[1..]).unwrap();
            prop_assert_eq!(back, entry);
        }
    }

    #[test]
    fn write_json_escapes_every_control_character() {
        let every: String = (0u8..0x20)
            .map(char::from)
            .chain("\"\\\u{7f}é😀".chars())
            .collect();
        let entry = RequestLogEntry {
            request_id: every.clone(),
            at: -1,
            key_id: String::new(),
            account_id: Some(every),
            model: "m".into(),
            surface: "anthropic".into(),
            status: 200,
            latency_ms: 0,
            ttfb_ms: None,
            usage: TokenUsage::default(),
            cost_nanousd: u64::MAX,
            cache_hit: true,
            estimated: false,
        };
        let mut out = Vec::new();
        entry.write_json(&mut out).unwrap();
        let out = String::from_utf8(out).unwrap();
        assert_eq!(out, serde_json::to_string(&entry).unwrap());
        assert!(
            out.contains(r#"\u001f"#) && out.contains(r#"\b\t\n\u000b\f\r"#),
            "{out}"
        );
    }
}
