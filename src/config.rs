//! Configuration: built-in defaults, then a TOML file, then `SWITCHYARD_*` environment variables,
//! then command-line flags. Validated once at start; an invalid option is one line naming it.
//!
//! Environment variables map onto option paths: `SWITCHYARD_LISTEN` is `listen`,
//! `SWITCHYARD_SERVER__BODY_LIMIT_BYTES` is `server.body_limit_bytes` (a double underscore separates
//! levels). A value is read as the type of the option it sets. An unknown name is an error, except
//! the variables Kubernetes sets for a Service named `switchyard…` (`is_service_link`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::pricing::{PricingConfig, PricingError};

const ENV_PREFIX: &str = "SWITCHYARD_";
/// The shortest admin token taken, configured or read from the data dir's `admin-token`.
pub const MIN_ADMIN_TOKEN_LEN: usize = 16;
/// A tracing filter that overrides `log.level` (src/logging.rs); checked with the options.
pub const LOG_FILTER_ENV: &str = "SWITCHYARD_LOG";
/// Environment variables with the prefix that are not options: the config file, the log filter,
/// and the CLI's `accounts add --api-key` and `--client-secret` (kept out of the shell history).
const ENV_NOT_OPTIONS: &[&str] = &[
    "SWITCHYARD_CONFIG",
    LOG_FILTER_ENV,
    "SWITCHYARD_ACCOUNT_API_KEY",
    "SWITCHYARD_OAUTH_CLIENT_SECRET",
    "SWITCHYARD_ACCOUNT_PROXY",
];

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address the relay listens on.
    pub listen: SocketAddr,
    /// Where the embedded store, the generated admin token and master key live.
    pub data_dir: PathBuf,
    /// `embedded` (default), `redis://host:port/db`, `rediss://…` (TLS),
    /// `redis-cluster://host:port,host:port,…` (seed nodes of a Redis Cluster), or
    /// `redis-sentinel://host:port,host:port,…/db?sentinelServiceName=name` (the Sentinels
    /// of a primary and its replicas).
    pub store: String,
    /// Bearer token of the admin API; generated into `<data_dir>/admin-token` when unset.
    pub admin_token: Option<String>,
    /// 64 hex characters (32 bytes) sealing upstream credentials; generated into
    /// `<data_dir>/master-key` when unset.
    pub master_key: Option<String>,
    pub log: LogConfig,
    pub server: ServerConfig,
    pub upstream: UpstreamConfig,
    pub relay: RelayConfig,
    pub limits: LimitsConfig,
    pub scheduler: SchedulerConfig,
    pub stats: StatsConfig,
    pub redis: RedisConfig,
    pub pricing: PricingConfig,
    pub images: ImagesConfig,
    pub notify: NotifyConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from("./data"),
            store: "embedded".to_owned(),
            admin_token: None,
            master_key: None,
            log: LogConfig::default(),
            server: ServerConfig::default(),
            upstream: UpstreamConfig::default(),
            relay: RelayConfig::default(),
            limits: LimitsConfig::default(),
            scheduler: SchedulerConfig::default(),
            stats: StatsConfig::default(),
            redis: RedisConfig::default(),
            pricing: PricingConfig::default(),
            images: ImagesConfig::default(),
            notify: NotifyConfig::default(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Human,
    Json,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    pub format: LogFormat,
    /// A tracing filter such as `info` or `switchyard=debug,info`.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Human,
            level: "info".to_owned(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Largest request body accepted; larger ones get 413.
    pub body_limit_bytes: u64,
    /// A client must send its request headers within this time.
    pub header_read_timeout_secs: u64,
    /// And its request body within this time (else 408): a body sent slowly holds memory and a
    /// connection before the key's limits count the request.
    pub body_read_timeout_secs: u64,
    /// A write to a client that does not read may wait this long before the connection is
    /// closed (its request then settles as one whose client went away); on h2c, a stream's
    /// frame waiting for its window.
    pub write_timeout_secs: u64,
    /// On SIGINT/SIGTERM, in-flight requests and streams get this long to finish.
    pub shutdown_grace_secs: u64,
    pub keep_alive: bool,
    /// Threads serving connections, each with a runtime and an upstream client of its own
    /// (0: one per CPU the process may use).
    pub workers: usize,
    /// Serve the admin console (a web page for the admin API) at `/admin/ui/`. The page holds no
    /// secret and asks for the admin token; turn it off where the admin API is reached only by
    /// scripts.
    pub admin_console: bool,
    /// A client address whose admin token is refused this many times within a minute gets 429
    /// on every admin request until the minute is over (0: never). Behind a reverse proxy every
    /// client has the proxy's address.
    pub admin_failures_per_minute: u32,
}

/// The longest any duration option (`*_secs`, `*_ms`) may be. Longer is a mistake, and far longer
/// overflows the clock arithmetic it feeds (an `Instant` plus such a timeout panics).
pub const MAX_DURATION_SECS: u64 = 366 * 86_400;

const TIMEOUT: &str = "a timeout of 0 expires at once";

/// Duration options that 0 would break, and how (the others take 0: no grace, no cooldown, no
/// sticky sessions, …).
const NOT_ZERO: &[(&str, &str)] = &[
    ("server.header_read_timeout_secs", TIMEOUT),
    ("server.body_read_timeout_secs", TIMEOUT),
    ("server.write_timeout_secs", TIMEOUT),
    ("upstream.connect_timeout_secs", "every connect would fail"),
    ("upstream.first_byte_timeout_secs", TIMEOUT),
    ("upstream.answer_timeout_secs", TIMEOUT),
    (
        "upstream.idle_timeout_secs",
        "every stream would be cut after its first chunk",
    ),
    (
        "relay.lease_ttl_secs",
        "a lease would expire as it is taken",
    ),
    (
        "stats.flush_interval_ms",
        "the usage writer would never rest",
    ),
    ("redis.command_timeout_ms", TIMEOUT),
    (
        "redis.feed_ping_interval_ms",
        "the change feed would ping without rest",
    ),
    ("images.first_byte_timeout_secs", TIMEOUT),
    ("images.read_timeout_secs", TIMEOUT),
    (
        "images.url_ttl_secs",
        "an image URL would expire as it is handed out",
    ),
    ("images.sweep_interval_secs", "the sweep would never rest"),
];

/// The most `server.workers` a config may ask for.
pub const MAX_WORKERS: usize = 256;

impl ServerConfig {
    /// `workers`, with 0 resolved to the CPUs available (at most `MAX_WORKERS`).
    pub fn worker_count(&self) -> usize {
        match self.workers {
            0 => std::thread::available_parallelism()
                .map_or(1, usize::from)
                .min(MAX_WORKERS),
            n => n,
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            body_limit_bytes: 32 * 1024 * 1024,
            header_read_timeout_secs: 30,
            body_read_timeout_secs: 120,
            write_timeout_secs: 300,
            shutdown_grace_secs: 30,
            keep_alive: true,
            workers: 0,
            admin_console: true,
            admin_failures_per_minute: 10,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamConfig {
    pub connect_timeout_secs: u64,
    /// The upstream's response head must arrive within this time (a streamed answer's).
    pub first_byte_timeout_secs: u64,
    /// An answer that is not streamed sends its head only once it is whole: it must arrive
    /// within this time (at least `first_byte_timeout_secs`). Long generations and reasoning
    /// models take minutes; the vendors' own SDKs wait 10.
    pub answer_timeout_secs: u64,
    /// A response body that sends nothing for this long is cut (streams end with an error event).
    pub idle_timeout_secs: u64,
    /// Idle upstream connections are kept this long for reuse.
    pub pool_idle_timeout_secs: u64,
    pub pool_max_idle_per_host: usize,
    /// Send every upstream call through this proxy (`http://`, `https://`; credentials may go in
    /// the URL). Unset, `HTTPS_PROXY`/`HTTP_PROXY`/`ALL_PROXY` and `NO_PROXY` from the
    /// environment apply.
    pub proxy: Option<String>,
    /// How often each instance looks for subscription accounts whose OAuth token is due for
    /// renewal (`crate::oauth`).
    pub oauth_check_ms: u64,
    /// A token is renewed this long before it expires.
    pub oauth_refresh_before_secs: u64,
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        UpstreamConfig {
            connect_timeout_secs: 10,
            first_byte_timeout_secs: 120,
            answer_timeout_secs: 600,
            idle_timeout_secs: 300,
            pool_idle_timeout_secs: 90,
            pool_max_idle_per_host: 256,
            proxy: None,
            oauth_check_ms: 30_000,
            oauth_refresh_before_secs: 600,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RelayConfig {
    /// A request's hold on concurrency counters and reservations expires after this long unless
    /// renewed (an instance that dies mid-request leaks nothing for longer). A request still
    /// running renews it every third of this, however long its stream (`relay::settle`).
    pub lease_ttl_secs: u64,
}

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig {
            // Above the longest wait for an answer's start with the default timeouts (1,140 s:
            // `Config::longest_wait_secs`), before which nothing renews the leases.
            lease_ttl_secs: 1_200,
        }
    }
}

/// How per-key limits count (docs/limits.md).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// IANA time zone whose midnight starts a day (and Monday a week) for daily and weekly limits.
    pub timezone: String,
    /// Output tokens a cost reservation assumes when a request does not say (`max_tokens`).
    pub default_max_tokens: u64,
    /// Request body bytes per input token when estimating a reservation (lower reserves more).
    pub bytes_per_token: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            timezone: "UTC".to_owned(),
            default_max_tokens: 4096,
            bytes_per_token: 3,
        }
    }
}

/// How accounts are chosen, and what an upstream's failure does (docs/scheduler.md).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SchedulerConfig {
    /// At most this many accounts try one request (failover before the first byte).
    pub max_attempts: u32,
    /// No new attempt starts once the request is this old. Above the upstream timeouts (120 s
    /// for a head, 300 s for an image), so that an attempt that timed out is still followed by
    /// another; the SDKs' own timeout is 600 s.
    pub attempt_deadline_secs: u64,
    /// A session stays bound to its account this long after its last request.
    pub sticky_ttl_secs: u64,
    /// When the bound account cannot serve: `escape` (this request goes elsewhere, the binding
    /// stays) or `move` (the binding moves to the account that served).
    pub sticky_overflow: StickyOverflow,
    /// A stored OpenAI response stays bound to the account that made it this long after it was
    /// made: a follow-up turn (`previous_response_id`) or a fetch of it goes to
    /// that account first. 0: not remembered (such requests try the accounts in turn).
    pub response_binding_ttl_secs: u64,
    /// A 429 without reset headers keeps the account out this long.
    pub rate_limit_cooldown_secs: u64,
    /// A 529 (overloaded) keeps the account out this long.
    pub overload_cooldown_secs: u64,
    /// 5xx, connect errors and timeouts: the first failure keeps the account out this long,
    /// doubling with each consecutive failure …
    pub failure_cooldown_secs: u64,
    /// … up to this.
    pub failure_cooldown_max_secs: u64,
    /// A request that finds its key at its `max_concurrency`, or every account that could
    /// serve it busy or resting for less than what is left of this, waits up to this long for
    /// a slot (within `attempt_deadline_secs`) instead of being answered 429 or 503 at once.
    /// 0: no waiting.
    pub queue_wait_secs: u64,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            max_attempts: 3,
            attempt_deadline_secs: 540,
            sticky_ttl_secs: 3_600,
            sticky_overflow: StickyOverflow::Escape,
            // A day: a conversation's later turns come within hours (an overnight pause
            // included), and each one renews it. The vendor keeps a response 30 days, but a
            // binding per stored response for that long would hold 30 times the memory (Redis
            // and the embedded store keep one small key per response made within the TTL).
            response_binding_ttl_secs: 86_400,
            rate_limit_cooldown_secs: 60,
            overload_cooldown_secs: 30,
            failure_cooldown_secs: 5,
            failure_cooldown_max_secs: 300,
            queue_wait_secs: 0,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StickyOverflow {
    Escape,
    Move,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StatsConfig {
    /// Usage is aggregated in memory and written to the store at this interval.
    pub flush_interval_ms: u64,
    /// How many recent requests the request log keeps.
    pub request_log_max: usize,
    /// While the store cannot be written, at most this many request-log entries wait in memory
    /// besides the batch being retried; beyond it the oldest are dropped and counted
    /// (`switchyard_usage_dropped_total`). Usage counters are never dropped.
    pub max_pending_requests: usize,
}

impl Default for StatsConfig {
    fn default() -> Self {
        StatsConfig {
            flush_interval_ms: 250,
            request_log_max: 10_000,
            max_pending_requests: 100_000,
        }
    }
}

/// Notices to the operators when an account needs them (`crate::notify`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NotifyConfig {
    /// Where each notice is POSTed; unset, none is sent.
    pub webhook_url: Option<String>,
    /// The body's shape: the notice as JSON, or a message for a Slack or Discord webhook. Sent
    /// through `upstream.proxy` when it is set.
    pub format: crate::notify::Format,
    /// The events told.
    pub events: Vec<crate::notify::Event>,
    /// A rate limit or a spent credit is told of one account at most once within this time (by
    /// each instance).
    pub repeat_after_secs: u64,
    /// Failures in a row (5xx, connect errors, timeouts) that make an account `failing`.
    pub failures: u32,
}

impl Default for NotifyConfig {
    fn default() -> Self {
        NotifyConfig {
            webhook_url: None,
            format: crate::notify::Format::Json,
            events: crate::notify::Event::ALL.to_vec(),
            repeat_after_secs: 3600,
            failures: 3,
        }
    }
}

/// How Switchyard talks to Redis when `store` is a Redis URL.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedisConfig {
    /// Every key starts with this (documented in docs/redis-keys.md). Several installations can
    /// share one Redis under different prefixes.
    pub prefix: String,
    /// Connections in the pool (each multiplexes many requests); each server worker has a pool.
    /// One by default: a worker's commands then share one socket and its syscalls, which
    /// measured 5-14% more requests/s than four (docs/benchmarks.md).
    pub pool_size: usize,
    /// Establishing a connection must succeed within this time.
    pub connect_timeout_ms: u64,
    /// A command that gets no answer within this time fails: while Redis is unreachable, requests
    /// get a prompt 503 instead of hanging.
    pub command_timeout_ms: u64,
    /// Reconnect with exponential backoff, starting here …
    pub reconnect_min_delay_ms: u64,
    /// … and never waiting longer than this between attempts (retries never stop).
    pub reconnect_max_delay_ms: u64,
    /// The change feed's connection sends nothing of its own while subscribed, so a connection
    /// that died silently (a NAT or load balancer dropping an idle flow, a host lost without a
    /// reset) would go unnoticed, and every later change with it: it is pinged this often, and
    /// reconnected (then every cache starts over) when no answer comes within
    /// `command_timeout_ms`.
    pub feed_ping_interval_ms: u64,
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            prefix: "sy:".to_owned(),
            pool_size: 1,
            connect_timeout_ms: 2_000,
            command_timeout_ms: 1_000,
            reconnect_min_delay_ms: 50,
            reconnect_max_delay_ms: 2_000,
            feed_ping_interval_ms: 30_000,
        }
    }
}

/// Image generation (docs/images.md).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ImagesConfig {
    /// An image upstream's response head must arrive within this time: generation takes tens of
    /// seconds, so image calls do not share `upstream.first_byte_timeout_secs`.
    pub first_byte_timeout_secs: u64,
    /// After the head, the whole image answer must arrive within this time.
    pub read_timeout_secs: u64,
    /// The largest image answer read from an upstream; larger ones fail with 502.
    pub max_response_bytes: u64,
    /// Where generated images are kept and served from (`/files/{id}`): `none`, `local` or `s3`.
    pub storage: ImageStorage,
    /// `local` storage: the directory; unset: `<data_dir>/images`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub local_dir: Option<PathBuf>,
    /// The base of the URLs handed out (`https://relay.example.com`); unset: the request's `Host`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub public_url: Option<String>,
    /// A file URL answers for this long after the image was made, then 404.
    pub url_ttl_secs: u64,
    /// Stored images are deleted this long after they were made (at least `url_ttl_secs`).
    pub retention_secs: u64,
    /// How often expired images are looked for and deleted.
    pub sweep_interval_secs: u64,
    /// With storage on, answer with URLs when the client did not ask for a `response_format`
    /// (else the model's own default, `b64_json` for gpt-image-1).
    pub return_url_by_default: bool,
    pub s3: S3Config,
    pub cache: ImageCacheConfig,
}

impl Default for ImagesConfig {
    fn default() -> Self {
        ImagesConfig {
            first_byte_timeout_secs: 300,
            read_timeout_secs: 300,
            max_response_bytes: 128 * 1024 * 1024,
            storage: ImageStorage::None,
            local_dir: None,
            public_url: None,
            url_ttl_secs: 3_600,
            retention_secs: 86_400,
            sweep_interval_secs: 300,
            return_url_by_default: false,
            s3: S3Config::default(),
            cache: ImageCacheConfig::default(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ImageStorage {
    None,
    Local,
    S3,
}

/// S3-compatible storage for images. Credentials unset here come from the standard `AWS_*`
/// environment variables.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct S3Config {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bucket: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// For S3-compatible services (MinIO, R2, …): their endpoint URL.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Every object name starts with this.
    pub prefix: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub access_key_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret_access_key: Option<String>,
    /// Allow a plain `http://` endpoint (a local MinIO).
    pub allow_http: bool,
}

/// Identical image requests answered from storage without calling upstream.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ImageCacheConfig {
    pub enabled: bool,
    /// A cached result answers identical requests for this long.
    pub ttl_secs: u64,
}

impl Default for ImageCacheConfig {
    fn default() -> Self {
        ImageCacheConfig {
            enabled: false,
            ttl_secs: 3_600,
        }
    }
}

impl ImagesConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        let bad = |option: &str, why: &str| {
            Err(ConfigError(format!(
                "invalid option `images.{option}`: {why}"
            )))
        };
        if self.retention_secs < self.url_ttl_secs {
            return bad("retention_secs", "must be at least url_ttl_secs");
        }
        if self.cache.enabled && self.storage == ImageStorage::None {
            return bad(
                "cache.enabled",
                "the cache keeps its results in storage: set images.storage to \"local\" or \"s3\"",
            );
        }
        if self.cache.enabled && self.cache.ttl_secs == 0 {
            return bad("cache.ttl_secs", "must be > 0");
        }
        if let Some(url) = &self.public_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return bad("public_url", "must start with http:// or https://");
        }
        if self.storage == ImageStorage::S3 {
            if !cfg!(feature = "s3") {
                return bad(
                    "storage",
                    "\"s3\" needs a build with the `s3` cargo feature",
                );
            }
            if self.s3.bucket.as_deref().is_none_or(str::is_empty) {
                return bad("s3.bucket", "required when images.storage = \"s3\"");
            }
        }
        Ok(())
    }
}

/// Which store a `store` value selects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreKind {
    Embedded,
    /// A `redis://`, `rediss://`, `redis-cluster://` or `redis-sentinel://` URL, as given.
    Redis(String),
}

impl Config {
    pub fn store_kind(&self) -> StoreKind {
        if self.store == "embedded" {
            StoreKind::Embedded
        } else {
            StoreKind::Redis(self.store.clone())
        }
    }

    /// `store` as it may be shown (logs, messages): a Redis URL without its user and password.
    pub fn store_for_display(&self) -> String {
        match self.store_kind() {
            StoreKind::Embedded => self.store.clone(),
            StoreKind::Redis(url) => crate::store::redis::redact_url(&url),
        }
    }
}

/// Flags given on the command line; they win over everything else.
#[derive(Debug, Clone, Default)]
pub struct Flags {
    pub listen: Option<SocketAddr>,
    pub data_dir: Option<PathBuf>,
}

/// An invalid configuration, said in one line that names the option.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(String);

impl Config {
    /// Defaults, then `file`, then the environment, then `flags`.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
        flags: &Flags,
    ) -> Result<Config, ConfigError> {
        let mut table = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    ConfigError(format!("cannot read config file {}: {e}", path.display()))
                })?;
                toml::from_str::<toml::Table>(&text).map_err(|e| {
                    let msg = e.message().to_owned();
                    ConfigError(format!("config file {}: {msg}", path.display()))
                })?
            }
            None => toml::Table::new(),
        };
        let untyped = apply_env(&mut table, env)?;
        let mut config = deserialize(table, untyped)?;
        if let Some(listen) = flags.listen {
            config.listen = listen;
        }
        if let Some(dir) = &flags.data_dir {
            config.data_dir.clone_from(dir);
        }
        config.validate()?;
        Ok(config)
    }

    /// The longest a request can wait before its answer's body starts: the last attempt starts
    /// at the attempt deadline, then waits for its head (an image call for its whole answer).
    /// Leases are renewed only from then on (`relay::settle`), so `relay.lease_ttl_secs` must
    /// outlast it.
    pub fn longest_wait_secs(&self) -> u64 {
        let head = (self.upstream.answer_timeout_secs).max(self.upstream.first_byte_timeout_secs);
        let image =
            (self.images.first_byte_timeout_secs).saturating_add(self.images.read_timeout_secs);
        self.scheduler
            .attempt_deadline_secs
            .saturating_add(head.max(image))
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let redis_schemes = [
            "redis://",
            "rediss://",
            "redis-cluster://",
            "rediss-cluster://",
            "redis-sentinel://",
            "rediss-sentinel://",
        ];
        if self.store != "embedded" && !redis_schemes.iter().any(|s| self.store.starts_with(s)) {
            return Err(ConfigError(format!(
                "invalid option `store`: unsupported value {:?} (expected \"embedded\", \
                 redis://host:port/db, rediss://…, redis-cluster://host:port,host:port, \
                 rediss-cluster://…, redis-sentinel://host:port,host:port/db?sentinelServiceName=name \
                 or rediss-sentinel://…)",
                // A value that may hold credentials is shown without them.
                if self.store.contains('@') || self.store.contains("://") {
                    self.store_for_display()
                } else {
                    self.store.clone()
                }
            )));
        }
        if let StoreKind::Redis(url) = self.store_kind()
            && let Err(e) = crate::store::redis::check_url(&url)
        {
            return Err(ConfigError(format!(
                "invalid option `store`: {e} in {}",
                self.store_for_display()
            )));
        }
        if self.server.workers > MAX_WORKERS {
            return Err(ConfigError(format!(
                "invalid option `server.workers`: at most {MAX_WORKERS} (0: one per CPU)"
            )));
        }
        if self.redis.pool_size == 0 {
            return Err(ConfigError(
                "invalid option `redis.pool_size`: must be > 0".into(),
            ));
        }
        self.check_durations()?;
        if self.server.body_limit_bytes == 0 {
            return Err(ConfigError(
                "invalid option `server.body_limit_bytes`: must be > 0".into(),
            ));
        }
        if self.scheduler.max_attempts == 0 {
            return Err(ConfigError(
                "invalid option `scheduler.max_attempts`: must be >= 1".into(),
            ));
        }
        if let Err(e) = jiff::tz::TimeZone::get(&self.limits.timezone) {
            return Err(ConfigError(format!(
                "invalid option `limits.timezone`: {e}"
            )));
        }
        if self.limits.bytes_per_token == 0 {
            return Err(ConfigError(
                "invalid option `limits.bytes_per_token`: must be > 0".into(),
            ));
        }
        if let Some(token) = &self.admin_token
            && token.len() < MIN_ADMIN_TOKEN_LEN
        {
            return Err(ConfigError(
                "invalid option `admin_token`: must be at least 16 characters".into(),
            ));
        }
        if let Some(key) = &self.master_key
            && crate::crypto::MasterKey::from_hex(key).is_err()
        {
            return Err(ConfigError(
                "invalid option `master_key`: must be 64 hex characters (32 bytes)".into(),
            ));
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log.level) {
            return Err(ConfigError(format!("invalid option `log.level`: {e}")));
        }
        if let Some(url) = &self.upstream.proxy
            && let Err(e) = reqwest::Proxy::all(url.as_str())
        {
            return Err(ConfigError(format!(
                "invalid option `upstream.proxy`: {}",
                crate::upstream_client::chain(&e)
            )));
        }
        // A URL whose host the proxy client cannot read would be no proxy at all.
        if let Some(url) = &self.upstream.proxy
            && !crate::upstream_client::usable_proxy(url)
        {
            return Err(ConfigError(
                "invalid option `upstream.proxy`: its host must be a plain host name or address"
                    .into(),
            ));
        }
        if let Some(url) = &self.notify.webhook_url
            && !reqwest::Url::parse(url)
                .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
        {
            return Err(ConfigError(
                "invalid option `notify.webhook_url`: must be an http(s) URL".into(),
            ));
        }
        if self.notify.failures == 0 {
            return Err(ConfigError(
                "invalid option `notify.failures`: must be at least 1".into(),
            ));
        }
        // The prices, and `pricing.file` read, as the start will.
        if let Err(e) = crate::pricing::Pricing::from_config(&self.pricing, None) {
            let option = match e {
                PricingError::ReadFile { .. } | PricingError::InFile { .. } => "pricing.file",
                _ => "pricing",
            };
            return Err(ConfigError(format!(
                "invalid option `{option}`: {}",
                crate::upstream_client::chain(&e)
            )));
        }
        self.images.validate()
    }

    /// Every duration option (`*_secs`, `*_ms`) is at most [`MAX_DURATION_SECS`]; those 0 would
    /// break ([`NOT_ZERO`]) are more than 0. Found by name, so that an option added later is
    /// bounded too.
    fn check_durations(&self) -> Result<(), ConfigError> {
        let table = toml::Table::try_from(self)
            .map_err(|e| ConfigError(format!("invalid configuration: {e}")))?;
        let mut durations = Vec::new();
        durations_in(&table, "", &mut durations);
        for (option, value) in durations {
            if value == 0
                && let Some((_, why)) = NOT_ZERO.iter().find(|(name, _)| *name == option)
            {
                return Err(ConfigError(format!(
                    "invalid option `{option}`: must be > 0 ({why})"
                )));
            }
            let (max, unit) = if option.ends_with("_ms") {
                (MAX_DURATION_SECS * 1000, "ms")
            } else {
                (MAX_DURATION_SECS, "s")
            };
            if !u64::try_from(value).is_ok_and(|v| v <= max) {
                return Err(ConfigError(format!(
                    "invalid option `{option}`: {value} is more than {max} {unit} (366 days), \
                     the longest a duration may be"
                )));
            }
        }
        Ok(())
    }
}

/// The duration options (`*_secs`, `*_ms`) under `table`, by path.
fn durations_in(table: &toml::Table, prefix: &str, out: &mut Vec<(String, i64)>) {
    for (name, value) in table {
        match value {
            toml::Value::Table(t) => durations_in(t, &format!("{prefix}{name}."), out),
            toml::Value::Integer(v) if name.ends_with("_secs") || name.ends_with("_ms") => {
                out.push((format!("{prefix}{name}"), *v));
            }
            _ => {}
        }
    }
}

/// The configuration in `table`. An option set from the environment that has no default to
/// read its type from (`untyped`: an optional one such as `pricing.default.web_search_per_1k`,
/// or one in a map such as `pricing.models.<name>.input`) was set as a string; should the
/// option refuse a string, it is set as the first of the value's other readings (an integer, a
/// number, true or false, a TOML array or table) that it takes. A string option keeps its
/// string whatever it looks like (an admin token of digits, a model named "4").
fn deserialize(mut table: toml::Table, mut untyped: Vec<Untyped>) -> Result<Config, ConfigError> {
    loop {
        let e = match serde_path_to_error::deserialize(toml::Value::Table(table.clone())) {
            Ok(config) => return Ok(config),
            Err(e) => e,
        };
        let path = e.path().to_string();
        let mut msg = e.into_inner().message().trim().to_owned();
        if let Some(u) = untyped.iter_mut().find(|u| u.path.join(".") == path) {
            if msg.starts_with("invalid type:")
                && let Some(value) = u.readings.next()
            {
                u.refused.get_or_insert(msg);
                insert(&mut table, &u.path, value)
                    .map_err(|()| ConfigError(format!("invalid option `{path}`")))?;
                continue;
            }
            // The string's own error says best what is wrong with the value.
            if let Some(first) = u.refused.take() {
                msg = first;
            }
        }
        return Err(if path == "." || path.is_empty() {
            ConfigError(format!("invalid configuration: {msg}"))
        } else {
            ConfigError(format!("invalid option `{path}`: {msg}"))
        });
    }
}

/// An option set from the environment without a default to type it by: set as a string, with
/// the other readings of the value to try if the option refuses it.
struct Untyped {
    path: Vec<String>,
    readings: std::vec::IntoIter<toml::Value>,
    /// Why the option refused the string.
    refused: Option<String>,
}

/// What `raw` may be read as besides a string, in the order they are tried.
fn other_readings(raw: &str) -> Vec<toml::Value> {
    let trimmed = raw.trim();
    let mut readings = Vec::new();
    if let Ok(n) = trimmed.parse::<i64>() {
        readings.push(toml::Value::Integer(n));
    }
    if let Ok(x) = trimmed.parse::<f64>() {
        readings.push(toml::Value::Float(x));
    }
    if let Ok(b) = typed_value(Some(&toml::Value::Boolean(false)), raw) {
        readings.push(b);
    }
    if let Some(v) = toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .filter(|v| v.is_array() || v.is_table())
    {
        readings.push(v);
    }
    readings
}

/// Sets `SWITCHYARD_A__B=value` as option `a.b`, typed like the option's default. Returns the
/// options that have none (`deserialize` types them).
fn apply_env(
    table: &mut toml::Table,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Vec<Untyped>, ConfigError> {
    let defaults = toml::Table::try_from(Config::default())
        .map_err(|e| ConfigError(format!("internal: default configuration: {e}")))?;
    let env: Vec<(String, String)> = env.into_iter().collect();
    if let Some((_, filter)) = env.iter().find(|(k, _)| k == LOG_FILTER_ENV)
        && let Err(e) = tracing_subscriber::EnvFilter::try_new(filter)
    {
        return Err(ConfigError(format!(
            "invalid {LOG_FILTER_ENV}: {e} (a tracing filter, such as info or switchyard=debug)"
        )));
    }
    let mut vars: Vec<(String, String)> = env
        .into_iter()
        .filter(|(k, v)| {
            k.starts_with(ENV_PREFIX)
                && !ENV_NOT_OPTIONS.contains(&k.as_str())
                && !is_service_link(k, v)
        })
        .collect();
    vars.sort();
    let mut untyped = Vec::new();
    for (name, raw) in vars {
        let path: Vec<String> = name[ENV_PREFIX.len()..]
            .split("__")
            .map(|s| s.to_ascii_lowercase())
            .collect();
        let default = lookup(&defaults, &path);
        let value = typed_value(default, &raw)
            .map_err(|expected| ConfigError(format!("invalid {name}: expected {expected}")))?;
        insert(table, &path, value)
            .map_err(|()| ConfigError(format!("invalid {name}: `{}` is not a table", path[0])))?;
        if default.is_none() {
            untyped.push(Untyped {
                readings: other_readings(&raw).into_iter(),
                refused: None,
                path,
            });
        }
    }
    Ok(untyped)
}

/// Whether `name=value` is one of the variables Kubernetes puts into every pod for each Service
/// in its namespace (service links): a Service named `switchyard` or `switchyard-…` brings
/// `SWITCHYARD_SERVICE_HOST`, `SWITCHYARD_SERVICE_PORT[_<port name>]`, `SWITCHYARD_PORT=tcp://…`
/// and `SWITCHYARD_PORT_8080_TCP[_ADDR|_PORT|_PROTO]`. They are not options, and refusing them
/// would stop every pod; no option's variable has these shapes (a test checks).
fn is_service_link(name: &str, value: &str) -> bool {
    let port_and_protocol = |name: &str| {
        ["_TCP", "_UDP", "_SCTP"]
            .iter()
            .find_map(|p| name.strip_suffix(p))
            .and_then(|rest| rest.rsplit_once('_'))
            .is_some_and(|(head, port)| {
                head.ends_with("_PORT")
                    && !port.is_empty()
                    && port.bytes().all(|b| b.is_ascii_digit())
            })
    };
    name.ends_with("_SERVICE_HOST")
        || name.ends_with("_SERVICE_PORT")
        || name.contains("_SERVICE_PORT_")
        || (name.ends_with("_PORT")
            && ["tcp://", "udp://", "sctp://"]
                .iter()
                .any(|scheme| value.starts_with(scheme)))
        || port_and_protocol(name)
        || ["_ADDR", "_PORT", "_PROTO"]
            .iter()
            .filter_map(|field| name.strip_suffix(field))
            .any(port_and_protocol)
}

fn lookup<'a>(table: &'a toml::Table, path: &[String]) -> Option<&'a toml::Value> {
    let (last, parents) = path.split_last()?;
    let mut t = table;
    for p in parents {
        t = t.get(p)?.as_table()?;
    }
    t.get(last)
}

fn typed_value(default: Option<&toml::Value>, raw: &str) -> Result<toml::Value, &'static str> {
    Ok(match default {
        Some(toml::Value::Integer(_)) => {
            toml::Value::Integer(raw.trim().parse().map_err(|_| "an integer")?)
        }
        Some(toml::Value::Float(_)) => {
            toml::Value::Float(raw.trim().parse().map_err(|_| "a number")?)
        }
        Some(toml::Value::Boolean(_)) => match raw.trim() {
            "true" | "1" | "yes" | "on" => toml::Value::Boolean(true),
            "false" | "0" | "no" | "off" => toml::Value::Boolean(false),
            _ => return Err("true or false"),
        },
        Some(toml::Value::Array(_)) => toml::from_str::<toml::Table>(&format!("v = {raw}"))
            .ok()
            .and_then(|mut t| t.remove("v"))
            .ok_or("a TOML array such as [\"a\", \"b\"]")?,
        _ => toml::Value::String(raw.to_owned()),
    })
}

fn insert(table: &mut toml::Table, path: &[String], value: toml::Value) -> Result<(), ()> {
    let Some((last, parents)) = path.split_last() else {
        return Ok(());
    };
    let mut t = table;
    for p in parents {
        t = t
            .entry(p.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()))
            .as_table_mut()
            .ok_or(())?;
    }
    t.insert(last.clone(), value);
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn no_configuration_gives_the_documented_defaults() {
        let c = Config::load(None, env(&[]), &Flags::default()).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.data_dir, PathBuf::from("./data"));
        assert_eq!(c.store, "embedded");
        assert_eq!(c.server.body_limit_bytes, 32 * 1024 * 1024);
        // An attempt that timed out waiting for a head (text or image) is followed by another.
        let deadline = c.scheduler.attempt_deadline_secs;
        assert!(deadline > c.upstream.first_byte_timeout_secs);
        assert!(deadline > c.images.first_byte_timeout_secs);
    }

    #[test]
    fn file_then_env_then_flags() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(
            &file,
            "listen = \"127.0.0.1:9000\"\n[server]\nbody_limit_bytes = 10\n",
        )
        .unwrap();
        let c = Config::load(
            Some(&file),
            env(&[
                ("SWITCHYARD_SERVER__BODY_LIMIT_BYTES", "20"),
                ("SWITCHYARD_ADMIN_TOKEN", "1234567890123456"),
                ("SWITCHYARD_LOG__FORMAT", "json"),
                // The CLI's own variable, not an option.
                ("SWITCHYARD_ACCOUNT_API_KEY", "sk-x"),
                ("OTHER", "x"),
            ]),
            &Flags {
                data_dir: Some("/tmp/x".into()),
                ..Flags::default()
            },
        )
        .unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:9000");
        assert_eq!(c.server.body_limit_bytes, 20);
        // A numeric-looking token stays a string: values follow the option's type.
        assert_eq!(c.admin_token.as_deref(), Some("1234567890123456"));
        assert_eq!(c.log.format, LogFormat::Json);
        assert_eq!(c.data_dir, PathBuf::from("/tmp/x"));
    }

    #[test]
    fn the_example_file_is_valid_and_says_the_defaults() {
        let file = concat!(env!("CARGO_MANIFEST_DIR"), "/config.example.toml");
        let c = Config::load(Some(Path::new(file)), env(&[]), &Flags::default()).unwrap();
        let d = Config::default();
        assert_eq!(toml::to_string(&c).unwrap(), toml::to_string(&d).unwrap());
    }

    #[test]
    fn an_unknown_option_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(&file, "[server]\nbody_limit = 10\n").unwrap();
        let err = Config::load(Some(&file), env(&[]), &Flags::default()).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("body_limit"), "{msg}");
        assert!(!msg.contains('\n'), "one line: {msg}");

        let err =
            Config::load(None, env(&[("SWITCHYARD_LISTN", "x")]), &Flags::default()).unwrap_err();
        assert!(err.to_string().contains("listn"), "{err}");
    }

    #[test]
    fn kubernetes_service_links_are_not_options() {
        let links = [
            ("SWITCHYARD_SERVICE_HOST", "10.0.0.7"),
            ("SWITCHYARD_SERVICE_PORT", "8080"),
            ("SWITCHYARD_SERVICE_PORT_HTTP", "8080"),
            ("SWITCHYARD_PORT", "tcp://10.0.0.7:8080"),
            ("SWITCHYARD_PORT_8080_TCP", "tcp://10.0.0.7:8080"),
            ("SWITCHYARD_PORT_8080_TCP_ADDR", "10.0.0.7"),
            ("SWITCHYARD_PORT_8080_TCP_PORT", "8080"),
            ("SWITCHYARD_PORT_8080_TCP_PROTO", "tcp"),
            ("SWITCHYARD_REDIS_SERVICE_HOST", "10.0.0.8"),
            ("SWITCHYARD_REDIS_SERVICE_PORT", "6379"),
            ("SWITCHYARD_REDIS_PORT", "tcp://10.0.0.8:6379"),
            ("SWITCHYARD_REDIS_PORT_6379_TCP", "tcp://10.0.0.8:6379"),
            ("SWITCHYARD_REDIS_PORT_6379_TCP_ADDR", "10.0.0.8"),
            ("SWITCHYARD_REDIS_PORT_6379_TCP_PORT", "6379"),
            ("SWITCHYARD_REDIS_PORT_6379_TCP_PROTO", "tcp"),
            ("SWITCHYARD_DNS_PORT_53_UDP", "udp://10.0.0.9:53"),
            ("SWITCHYARD_DNS_PORT_53_SCTP_ADDR", "10.0.0.9"),
        ];
        let c = Config::load(None, env(&links), &Flags::default()).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
        // Typos, and look-alikes that are not service links, are still refused.
        for (name, value) in [
            ("SWITCHYARD_LISTN", "0.0.0.0:8080"),
            ("SWITCHYARD_PORT", "8080"),
            ("SWITCHYARD_PORT_HTTP_TCP", "tcp://10.0.0.7:8080"),
            ("SWITCHYARD_SERVICE_HOSTNAME", "x"),
        ] {
            let err = Config::load(None, env(&[(name, value)]), &Flags::default()).unwrap_err();
            assert!(err.to_string().contains(&option_of(name)), "{name}: {err}");
        }
    }

    #[test]
    fn no_option_looks_like_a_service_link() {
        let mut c = Config {
            admin_token: Some("x".into()),
            master_key: Some("x".into()),
            ..Config::default()
        };
        c.upstream.proxy = Some("x".into());
        c.notify.webhook_url = Some("x".into());
        c.pricing.file = Some("x".into());
        c.images.local_dir = Some("x".into());
        c.images.public_url = Some("x".into());
        c.images.s3 = S3Config {
            bucket: Some("x".into()),
            region: Some("x".into()),
            endpoint: Some("x".into()),
            access_key_id: Some("x".into()),
            secret_access_key: Some("x".into()),
            ..S3Config::default()
        };
        fn names(table: &toml::Table, prefix: &str, out: &mut Vec<String>) {
            for (k, v) in table {
                let name = format!("{prefix}{}", k.to_ascii_uppercase());
                match v {
                    toml::Value::Table(t) => names(t, &format!("{name}__"), out),
                    _ => out.push(name),
                }
            }
        }
        let mut all = Vec::new();
        names(&toml::Table::try_from(&c).unwrap(), ENV_PREFIX, &mut all);
        assert!(all.len() > 50, "{all:?}");
        for name in all {
            assert!(!is_service_link(&name, "tcp://10.0.0.7:8080"), "{name}");
        }
    }

    #[test]
    fn a_badly_typed_value_is_named() {
        let err = Config::load(
            None,
            env(&[("SWITCHYARD_SERVER__BODY_LIMIT_BYTES", "lots")]),
            &Flags::default(),
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("SWITCHYARD_SERVER__BODY_LIMIT_BYTES"),
            "{err}"
        );
        let err = Config::load(
            None,
            env(&[("SWITCHYARD_LISTEN", "nowhere")]),
            &Flags::default(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("`listen`"), "{err}");
        let err = Config::load(
            None,
            env(&[("SWITCHYARD_STORE", "mongo://")]),
            &Flags::default(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("`store`"), "{err}");
    }

    #[test]
    fn an_optional_option_set_from_the_environment_is_read_as_its_type() {
        // No default to type them by: an optional number, numbers of a map entry.
        let c = Config::load(
            None,
            env(&[
                ("SWITCHYARD_PRICING__DEFAULT__INPUT", "3"),
                ("SWITCHYARD_PRICING__DEFAULT__OUTPUT", "15"),
                ("SWITCHYARD_PRICING__DEFAULT__WEB_SEARCH_PER_1K", "12"),
                ("SWITCHYARD_PRICING__MODELS__M4__INPUT", " 2 "),
                ("SWITCHYARD_PRICING__MODELS__M4__OUTPUT", "8.5"),
                ("SWITCHYARD_PRICING__MODELS__M4__CACHE_READ", "1e-1"),
            ]),
            &Flags::default(),
        )
        .unwrap();
        assert_eq!(c.pricing.default.web_search_per_1k, Some(12.0));
        let m4 = &c.pricing.models["m4"];
        assert_eq!((m4.input, m4.output, m4.cache_read), (2.0, 8.5, Some(0.1)));

        // An optional string keeps a value that reads as a number or true: it takes a string.
        let master_key = "1".repeat(64);
        let c = Config::load(
            None,
            env(&[
                ("SWITCHYARD_ADMIN_TOKEN", "1234567890123456"),
                ("SWITCHYARD_MASTER_KEY", &master_key),
                ("SWITCHYARD_IMAGES__S3__REGION", "4"),
                ("SWITCHYARD_IMAGES__S3__BUCKET", "true"),
                ("SWITCHYARD_IMAGES__S3__ENDPOINT", "[1]"),
            ]),
            &Flags::default(),
        )
        .unwrap();
        assert_eq!(c.admin_token.as_deref(), Some("1234567890123456"));
        assert_eq!(c.master_key.as_deref(), Some(master_key.as_str()));
        assert_eq!(c.images.s3.region.as_deref(), Some("4"));
        assert_eq!(c.images.s3.bucket.as_deref(), Some("true"));
        assert_eq!(c.images.s3.endpoint.as_deref(), Some("[1]"));

        // A value the option takes in no reading: the string's refusal, naming the option.
        for bad in ["lots", "true", "[1]"] {
            let err = Config::load(
                None,
                env(&[
                    ("SWITCHYARD_PRICING__DEFAULT__INPUT", "3"),
                    ("SWITCHYARD_PRICING__DEFAULT__OUTPUT", "15"),
                    ("SWITCHYARD_PRICING__DEFAULT__WEB_SEARCH_PER_1K", bad),
                ]),
                &Flags::default(),
            )
            .unwrap_err()
            .to_string();
            assert!(
                err.contains("`pricing.default.web_search_per_1k`")
                    && err.contains(&format!("string {bad:?}")),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn a_redis_url_names_a_host_and_the_log_filter_parses() {
        let load = |pairs: &[(&str, &str)]| Config::load(None, env(pairs), &Flags::default());
        for good in [
            "redis://h:6379/0",
            "redis://h",
            "rediss://u:p@h:6380",
            "redis://[::1]:6379",
            "redis-cluster://a:1,b:2, c:3",
            "redis-sentinel://s1:26379,s2/0?sentinelServiceName=sy",
        ] {
            assert!(load(&[("SWITCHYARD_STORE", good)]).is_ok(), "{good}");
        }
        for bad in [
            "redis://:6379",
            "redis://",
            "redis://u:secret@:6379/0",
            "redis://[]:6379",
            "redis-cluster://a:1,:2",
        ] {
            let err = load(&[("SWITCHYARD_STORE", bad)]).unwrap_err().to_string();
            assert!(
                err.contains("`store`") && err.contains("no host"),
                "{bad}: {err}"
            );
            assert!(!err.contains("secret"), "{err}");
        }
        let err = load(&[("SWITCHYARD_STORE", "memcached://u:hunter2@h:1")])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("unsupported value") && err.contains("***@h:1"),
            "{err}"
        );
        assert!(!err.contains("hunter2"), "{err}");
        let err = load(&[(
            "SWITCHYARD_STORE",
            "redis-sentinal://s1/0?sentinelServiceName=x&sentinelPassword=hunter3",
        )])
        .unwrap_err()
        .to_string();
        assert!(err.contains("sentinelPassword=***"), "{err}");
        assert!(!err.contains("hunter3"), "{err}");
        let err = load(&[("SWITCHYARD_STORE", "emebdded")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("\"emebdded\""), "{err}");
        assert!(load(&[("SWITCHYARD_LOG", "switchyard=debug,warn")]).is_ok());
        let err = load(&[("SWITCHYARD_LOG", "switchyard=loud")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("SWITCHYARD_LOG"), "{err}");
    }

    #[test]
    fn the_store_is_shown_without_its_credentials() {
        let shown = |store: &str| {
            let config = Config {
                store: store.to_owned(),
                ..Config::default()
            };
            config.store_for_display()
        };
        assert_eq!(shown("embedded"), "embedded");
        assert_eq!(shown("rediss://user:s3cret@host/0"), "rediss://***@host/0");
        assert_eq!(
            shown("redis-cluster://:s3cret@h1:7001,h2:7002"),
            "redis-cluster://***@h1:7001,h2:7002"
        );
        assert_eq!(shown("redis://host:6379/0"), "redis://host:6379/0");
        assert_eq!(
            shown("redis-sentinel://s1,s2/0?sentinelServiceName=sy&sentinelPassword=s3cret"),
            "redis-sentinel://s1,s2/0?sentinelServiceName=sy&sentinelPassword=***"
        );
    }

    #[test]
    fn server_workers_default_to_the_cpus_and_are_bounded() {
        let load = |pairs: &[(&str, &str)]| {
            Config::load(None, env(pairs), &Flags::default()).map_err(|e| e.to_string())
        };
        let auto = load(&[]).unwrap();
        assert_eq!(auto.server.workers, 0);
        let cpus = std::thread::available_parallelism().map_or(1, usize::from);
        assert_eq!(auto.server.worker_count(), cpus);
        let three = load(&[("SWITCHYARD_SERVER__WORKERS", "3")]).unwrap();
        assert_eq!(three.server.worker_count(), 3);
        let err = load(&[("SWITCHYARD_SERVER__WORKERS", "300")]).unwrap_err();
        assert!(err.contains("server.workers"), "{err}");
    }

    /// The option a variable sets: `SWITCHYARD_A__B` is `a.b`.
    fn option_of(var: &str) -> String {
        var[ENV_PREFIX.len()..]
            .to_ascii_lowercase()
            .replace("__", ".")
    }

    #[test]
    fn durations_are_more_than_0_where_0_breaks_and_at_most_366_days() {
        let load = |pairs: &[(&str, &str)]| {
            Config::load(None, env(pairs), &Flags::default()).map_err(|e| e.to_string())
        };
        for option in [
            "SWITCHYARD_UPSTREAM__IDLE_TIMEOUT_SECS",
            "SWITCHYARD_UPSTREAM__CONNECT_TIMEOUT_SECS",
            "SWITCHYARD_SERVER__HEADER_READ_TIMEOUT_SECS",
            "SWITCHYARD_IMAGES__READ_TIMEOUT_SECS",
        ] {
            let err = load(&[(option, "0")]).unwrap_err();
            let path = option_of(option);
            assert!(err.contains(&format!("`{path}`: must be > 0")), "{err}");
        }
        // 0 means something for these: no grace, no failover after the first attempt, no
        // cooldown, no sticky sessions, no stored responses remembered.
        let zeros = load(&[
            ("SWITCHYARD_SERVER__SHUTDOWN_GRACE_SECS", "0"),
            ("SWITCHYARD_SCHEDULER__ATTEMPT_DEADLINE_SECS", "0"),
            ("SWITCHYARD_SCHEDULER__FAILURE_COOLDOWN_SECS", "0"),
            ("SWITCHYARD_SCHEDULER__STICKY_TTL_SECS", "0"),
            ("SWITCHYARD_SCHEDULER__RESPONSE_BINDING_TTL_SECS", "0"),
        ]);
        assert!(zeros.is_ok(), "{zeros:?}");

        let huge = i64::MAX.to_string();
        for option in [
            "SWITCHYARD_SCHEDULER__ATTEMPT_DEADLINE_SECS",
            "SWITCHYARD_UPSTREAM__IDLE_TIMEOUT_SECS",
            "SWITCHYARD_SERVER__HEADER_READ_TIMEOUT_SECS",
            "SWITCHYARD_SERVER__SHUTDOWN_GRACE_SECS",
            "SWITCHYARD_STATS__FLUSH_INTERVAL_MS",
            "SWITCHYARD_IMAGES__CACHE__TTL_SECS",
        ] {
            let err = load(&[(option, &huge)]).unwrap_err();
            let path = option_of(option);
            assert!(err.contains(&format!("`{path}`")), "{err}");
            assert!(err.contains("366 days"), "{err}");
        }
        let year = MAX_DURATION_SECS.to_string();
        let c = load(&[
            ("SWITCHYARD_SCHEDULER__ATTEMPT_DEADLINE_SECS", &year),
            ("SWITCHYARD_IMAGES__RETENTION_SECS", &year),
        ])
        .unwrap();
        assert_eq!(c.scheduler.attempt_deadline_secs, MAX_DURATION_SECS);
        let err = load(&[(
            "SWITCHYARD_SCHEDULER__ATTEMPT_DEADLINE_SECS",
            &(MAX_DURATION_SECS + 1).to_string(),
        )])
        .unwrap_err();
        assert!(err.contains("scheduler.attempt_deadline_secs"), "{err}");

        // Every name the zero check knows is an option.
        let mut durations = Vec::new();
        durations_in(
            &toml::Table::try_from(Config::default()).unwrap(),
            "",
            &mut durations,
        );
        for (option, _) in NOT_ZERO {
            assert!(durations.iter().any(|(d, _)| d == option), "{option}");
        }
    }

    #[test]
    fn the_default_leases_outlast_the_longest_wait_for_an_answer() {
        let c = Config::default();
        assert_eq!(c.longest_wait_secs(), 540 + 600);
        assert!(c.relay.lease_ttl_secs > c.longest_wait_secs());
    }

    /// Price options as the config reads them, pinned: set by the environment (typed by the
    /// default's fields), and refused with the option's whole path.
    #[test]
    fn price_options_are_pinned() {
        let c = Config::load(
            None,
            env(&[
                ("SWITCHYARD_PRICING__DEFAULT__INPUT", "4"),
                ("SWITCHYARD_PRICING__DEFAULT__OUTPUT", "16"),
                ("SWITCHYARD_PRICING__DEFAULT__CACHE_READ", "0.5"),
            ]),
            &Flags::default(),
        )
        .unwrap();
        assert_eq!(
            toml::to_string(&c.pricing.default).unwrap(),
            "input = 4.0\noutput = 16.0\ncache_read = 0.5\n"
        );
        // A variable sets one field of a price, not the rest of the default's: `output` is
        // still needed.
        let err = Config::load(
            None,
            env(&[("SWITCHYARD_PRICING__DEFAULT__INPUT", "4")]),
            &Flags::default(),
        )
        .unwrap_err()
        .to_string();
        assert_eq!(
            err,
            "invalid option `pricing.default`: missing field `output`"
        );
        let err = Config::load(
            None,
            env(&[("SWITCHYARD_PRICING__DEFAULT__OUTPUT", "x")]),
            &Flags::default(),
        )
        .unwrap_err()
        .to_string();
        assert_eq!(
            err,
            "invalid SWITCHYARD_PRICING__DEFAULT__OUTPUT: expected a number"
        );

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        let load_file = |text: &str| {
            std::fs::write(&file, text).unwrap();
            Config::load(Some(&file), env(&[]), &Flags::default()).map_err(|e| e.to_string())
        };
        let c = load_file(
            "[pricing.models.\"m\"]\ninput = 3\noutput = 15\n[pricing.models.\"m\".above_200k]\ninput = 6\noutput = 22.5\n",
        )
        .unwrap();
        assert_eq!(
            toml::to_string(&c.pricing.models["m"]).unwrap(),
            "input = 3.0\noutput = 15.0\n\n[above_200k]\ninput = 6.0\noutput = 22.5\n"
        );
        for (text, expected) in [
            (
                "[pricing.models.\"m\"]\ninput = \"3\"\noutput = 1\n",
                "invalid option `pricing.models.m.input`: invalid type: string \"3\", expected f64",
            ),
            (
                "[pricing.default]\ninput = 1\noutput = 1\nsurcharge = 1\n",
                "invalid option `pricing.default.surcharge`: unknown field `surcharge`, expected \
                 one of `input`, `output`, `cache_write_5m`, `cache_write_1h`, `cache_read`, \
                 `above_200k`, `web_search_per_1k`",
            ),
            (
                "[pricing.models.\"m\"]\ninput = 1\n",
                "invalid option `pricing.models.m`: missing field `output`",
            ),
            (
                "[pricing.models.\"m\"]\ninput = 1\noutput = 1\n[pricing.models.\"m\".above_200k]\ninput = 1\noutput = true\n",
                "invalid option `pricing.models.m.above_200k.output`: invalid type: boolean \
                 `true`, expected f64",
            ),
            (
                "[pricing.models.\"m\"]\ninput = 1\noutput = 1\nweb_search_per_1k = \"x\"\n",
                "invalid option `pricing.models.m.web_search_per_1k`: invalid type: string \
                 \"x\", expected f64",
            ),
        ] {
            assert_eq!(load_file(text).unwrap_err(), expected, "{text}");
        }
    }

    #[test]
    fn prices_the_price_file_and_the_proxy_are_checked_with_the_config() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        let load_file = |text: &str| {
            std::fs::write(&file, text).unwrap();
            Config::load(Some(&file), env(&[]), &Flags::default()).map_err(|e| e.to_string())
        };
        let err = load_file("[pricing.models.\"x\"]\ninput = -1.0\noutput = 1.0\n").unwrap_err();
        assert!(err.contains("`pricing`") && err.contains("`x`"), "{err}");
        assert!(err.contains("input"), "{err}");
        let missing = dir.path().join("prices.json");
        let err = load_file(&format!(
            "[pricing]\nfile = {:?}\n",
            missing.display().to_string()
        ))
        .unwrap_err();
        assert!(err.contains("`pricing.file`"), "{err}");
        assert!(err.contains("prices.json"), "{err}");
        std::fs::write(&missing, "[1, 2]").unwrap();
        let err = load_file(&format!(
            "[pricing]\nfile = {:?}\n",
            missing.display().to_string()
        ))
        .unwrap_err();
        assert!(err.contains("`pricing.file`"), "{err}");

        let err = Config::load(
            None,
            env(&[("SWITCHYARD_UPSTREAM__PROXY", "http://u:s3cret@proxy:port")]),
            &Flags::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("`upstream.proxy`"), "{err}");
        // Why, not only reqwest's "builder error"; and never the proxy's password.
        assert!(err.contains("port"), "{err}");
        assert!(!err.contains("s3cret"), "{err}");
        // A socks5 host the proxy client would not read: refused, not taken as no proxy.
        let err = Config::load(
            None,
            env(&[(
                "SWITCHYARD_UPSTREAM__PROXY",
                "socks5://pr\u{f8}xy.example:1080",
            )]),
            &Flags::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("`upstream.proxy`"), "{err}");
        let err = Config::load(
            None,
            env(&[("SWITCHYARD_UPSTREAM__PROXY", "http://pro{xy}:3128")]),
            &Flags::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("`upstream.proxy`"), "{err}");
        // Without a scheme, as reqwest takes it: an http proxy.
        for ok in ["10.0.0.1:3128", "proxy.internal:3128"] {
            let c = Config::load(
                None,
                env(&[("SWITCHYARD_UPSTREAM__PROXY", ok)]),
                &Flags::default(),
            );
            assert!(c.is_ok(), "{ok}: {c:?}");
        }
        let ok = Config::load(
            None,
            env(&[("SWITCHYARD_UPSTREAM__PROXY", "http://u:p@proxy:3128")]),
            &Flags::default(),
        );
        assert!(ok.is_ok(), "{ok:?}");
    }

    #[test]
    fn notify_options_are_checked() {
        let load = |pairs: &[(&str, &str)]| {
            Config::load(None, env(pairs), &Flags::default()).map_err(|e| e.to_string())
        };
        let c = load(&[
            (
                "SWITCHYARD_NOTIFY__WEBHOOK_URL",
                "https://hooks.example/T0/B0/x",
            ),
            ("SWITCHYARD_NOTIFY__FORMAT", "discord"),
            ("SWITCHYARD_NOTIFY__EVENTS", r#"["oauth_grant_refused"]"#),
        ])
        .unwrap();
        assert_eq!(c.notify.format, crate::notify::Format::Discord);
        assert_eq!(c.notify.events, [crate::notify::Event::OAuthGrantRefused]);
        assert_eq!(Config::default().notify.events, crate::notify::Event::ALL);
        for (name, value, option) in [
            (
                "SWITCHYARD_NOTIFY__WEBHOOK_URL",
                "hooks.example",
                "notify.webhook_url",
            ),
            ("SWITCHYARD_NOTIFY__FAILURES", "0", "notify.failures"),
            (
                "SWITCHYARD_NOTIFY__EVENTS",
                r#"["account_gone"]"#,
                "notify.events",
            ),
            ("SWITCHYARD_NOTIFY__FORMAT", "teams", "notify.format"),
        ] {
            let err = load(&[(name, value)]).unwrap_err();
            assert!(err.contains(option), "{name}: {err}");
        }
    }

    #[test]
    fn image_options_are_checked() {
        let load = |pairs: &[(&str, &str)]| {
            Config::load(None, env(pairs), &Flags::default()).map_err(|e| e.to_string())
        };
        let c = load(&[("SWITCHYARD_IMAGES__STORAGE", "local")]).unwrap();
        assert_eq!(c.images.storage, ImageStorage::Local);
        let err = load(&[("SWITCHYARD_IMAGES__CACHE__ENABLED", "true")]).unwrap_err();
        assert!(err.contains("images.cache.enabled"), "{err}");
        let err = load(&[
            ("SWITCHYARD_IMAGES__STORAGE", "local"),
            ("SWITCHYARD_IMAGES__RETENTION_SECS", "10"),
        ])
        .unwrap_err();
        assert!(err.contains("images.retention_secs"), "{err}");
        if cfg!(feature = "s3") {
            let err = load(&[("SWITCHYARD_IMAGES__STORAGE", "s3")]).unwrap_err();
            assert!(err.contains("images.s3.bucket"), "{err}");
        }
        let err = load(&[("SWITCHYARD_IMAGES__STORAGE", "ftp")]).unwrap_err();
        assert!(err.contains("images.storage"), "{err}");
        assert!(!err.contains('\n'), "{err}");
    }
}
