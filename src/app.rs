//! Everything a request handler needs, built once at start.

use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, AtomicUsize};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use crate::catalog::Catalog;
use crate::clock::Clock;
use crate::config::{Config, StoreKind};
use crate::crypto::{self, MasterKey};
use crate::pricing::{PriceTable, Pricing};
use crate::stats::Stats;
use crate::store::embedded::EmbeddedStore;
use crate::store::redis::RedisStore;
use crate::store::{Change, Store};
use crate::upstream_client::{AccountProxy, UpstreamClient};
use tokio::sync::broadcast;

/// The LiteLLM-format price file last imported with `switchyard pricing import`, on a store
/// that is not shared (a shared store keeps it for every instance: `Store::share_prices`).
pub const IMPORTED_PRICES_FILE: &str = "imported-prices.json";

pub struct App {
    pub config: Config,
    pub catalog: Arc<Catalog>,
    pub stats: Stats,
    /// What each server worker (src/server.rs) has of its own; never empty.
    pub workers: Box<[WorkerSlot]>,
    pub admin_token: String,
    /// Where the admin token was read from when it was not configured (its path, never the
    /// token, is shown to the operator).
    pub admin_token_file: Option<PathBuf>,
    pub started: Instant,
    /// What limits are judged by (tests move it).
    pub clock: Clock,
    /// Days and weeks in `config.limits.timezone`.
    pub calendar: crate::limits::meters::Calendar,
    pricing: RwLock<Arc<Pricing>>,
    /// Where generated images are kept (`images.storage`); `None` when not configured.
    pub image_storage: Option<Arc<crate::images::storage::Storage>>,
    /// When `/metrics` last read the accounts' state from the store (unix ms).
    pub accounts_scraped_ms: AtomicI64,
    /// The accounts `/metrics` last showed, so that one deleted since reads as gone (zeros) and
    /// not as it last was.
    pub accounts_shown: std::sync::Mutex<Vec<String>>,
    /// Renewals of subscription accounts' OAuth tokens.
    pub oauth: crate::oauth::Renewer,
    /// Notices to the operators about accounts (`notify.webhook_url`).
    pub notify: crate::notify::Notifier,
    /// The TLS configuration of the clients through accounts' own proxies.
    proxy_tls: rustls::ClientConfig,
    /// Set when the server starts its graceful stop: requests waiting for a slot stop waiting.
    stopping: std::sync::atomic::AtomicBool,
    /// Refusals of the admin token per client address.
    pub admin_guard: crate::admin::guard::Guard,
}

/// What one server worker has of its own.
pub struct WorkerSlot {
    /// The upstream client. A pooled connection's task runs on the runtime that opened it, so
    /// a worker that borrowed another's connection would hand every request across threads.
    pub http: UpstreamClient,
    /// Client connections open on the worker.
    pub connections: AtomicUsize,
}

impl App {
    /// Opens the store, the master key, the admin token and the price table, and starts the
    /// stats task.
    pub async fn open(config: Config) -> anyhow::Result<Arc<App>> {
        App::open_with(config, |store| store).await
    }

    /// `open`, on the store `wrap` makes of the configured one: tests put one around it that
    /// fails when told to, for store errors the real store cannot be made to have on cue.
    pub async fn open_with(
        config: Config,
        wrap: impl FnOnce(Arc<dyn Store>) -> Arc<dyn Store>,
    ) -> anyhow::Result<Arc<App>> {
        std::fs::create_dir_all(&config.data_dir).map_err(|e| {
            anyhow::anyhow!("cannot create data dir {}: {e}", config.data_dir.display())
        })?;
        let store: Arc<dyn Store> = match config.store_kind() {
            StoreKind::Embedded => Arc::new(EmbeddedStore::open(
                &config.data_dir,
                config.stats.request_log_max,
            )?),
            StoreKind::Redis(url) => Arc::new(
                RedisStore::connect(&url, &config.redis, config.stats.request_log_max).await?,
            ),
        };
        let store = wrap(store);
        if config.store_kind() != StoreKind::Embedded && config.master_key.is_none() {
            tracing::warn!(
                "a shared store without a configured master_key: every instance must use the same \
                 key (set master_key or SWITCHYARD_MASTER_KEY), or accounts added by one cannot be \
                 opened by the others"
            );
        }
        let longest_wait_secs = config.longest_wait_secs();
        if config.relay.lease_ttl_secs <= longest_wait_secs {
            tracing::warn!(
                lease_ttl_secs = config.relay.lease_ttl_secs,
                longest_wait_secs,
                "relay.lease_ttl_secs is not above the longest a request may wait for its answer to \
                 start (scheduler.attempt_deadline_secs plus the longest timeout for a head): such a \
                 request loses its leases before it can renew them, and stops counting against \
                 max_concurrency"
            );
        }
        // A response renews its leases when the client takes its frames: a client that stops
        // reading is cut after the write timeout, which must come before the leases run out
        // (two thirds of the ttl after the last renewal).
        let ttl = config.relay.lease_ttl_secs;
        if config.server.write_timeout_secs >= ttl - ttl / 3 {
            tracing::warn!(
                lease_ttl_secs = ttl,
                write_timeout_secs = config.server.write_timeout_secs,
                "server.write_timeout_secs is not below two thirds of relay.lease_ttl_secs: a \
                 response whose client stops reading can lose its leases before it is cut, and \
                 stop counting against max_concurrency"
            );
        }
        let master_key = MasterKey::resolve(config.master_key.as_deref(), &config.data_dir)?;
        let (admin_token, admin_token_file) = match &config.admin_token {
            Some(token) => (token.clone(), None),
            None => {
                let path = config.data_dir.join("admin-token");
                let token = crypto::read_or_create_secret(&path, || {
                    crate::auth::generate_key().replacen(crate::auth::KEY_PREFIX, "sya-", 1)
                })?;
                // An empty file (a crash while it was written, an editor) would be an empty
                // token: the admin API shut to everyone with no word of why.
                if token.len() < crate::config::MIN_ADMIN_TOKEN_LEN {
                    anyhow::bail!(
                        "{} holds no admin token of at least {} characters; delete it to have one \
                         generated, or set admin_token",
                        path.display(),
                        crate::config::MIN_ADMIN_TOKEN_LEN
                    );
                }
                (token, Some(path))
            }
        };
        // Subscribed before the prices are read: an import announced meanwhile is heard.
        let price_changes = store.changes();
        let pricing = load_pricing(&config, store.as_ref()).await?;
        let timezone = jiff::tz::TimeZone::get(&config.limits.timezone)
            .map_err(|e| anyhow::anyhow!("limits.timezone: {e}"))?;
        let catalog = Arc::new(Catalog::load(Arc::clone(&store), master_key).await?);
        catalog.follow_changes();
        let stats = Stats::spawn(
            Arc::clone(&store),
            Duration::from_millis(config.stats.flush_interval_ms),
            config.stats.max_pending_requests,
        );
        install_crypto_provider();
        let workers: Box<[WorkerSlot]> = (0..config.server.worker_count())
            .map(|_| {
                Ok(WorkerSlot {
                    http: UpstreamClient::new(&config.upstream)?,
                    connections: AtomicUsize::new(0),
                })
            })
            .collect::<anyhow::Result<_>>()?;
        if workers.first().is_some_and(|w| w.http.proxied()) {
            let from = match config.upstream.proxy {
                Some(_) => "upstream.proxy",
                None => "the environment",
            };
            tracing::info!("upstream calls go through the proxy named by {from}");
        }
        let image_storage =
            crate::images::storage::Storage::open(&config.images, &config.data_dir)?.map(Arc::new);
        let proxy_tls = crate::upstream_client::proxy_tls()?;
        let notify =
            crate::notify::Notifier::start(&config.notify, config.upstream.proxy.as_deref())?;
        crate::metrics::install();
        crate::metrics::spawn_upkeep();
        let admin_guard = crate::admin::guard::Guard::new(config.server.admin_failures_per_minute);
        let app = Arc::new(App {
            config,
            catalog,
            stats,
            workers,
            admin_token,
            admin_token_file,
            started: Instant::now(),
            clock: Clock::default(),
            calendar: crate::limits::meters::Calendar::new(timezone),
            pricing: RwLock::new(Arc::new(pricing)),
            image_storage,
            accounts_scraped_ms: AtomicI64::new(0),
            accounts_shown: std::sync::Mutex::new(Vec::new()),
            oauth: crate::oauth::Renewer::default(),
            notify,
            proxy_tls,
            stopping: std::sync::atomic::AtomicBool::new(false),
            admin_guard,
        });
        crate::images::spawn_sweeper(&app);
        app.follow_prices(price_changes);
        Ok(app)
    }

    /// Whether the server is stopping (`mark_stopping`).
    pub fn stopping(&self) -> bool {
        self.stopping.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The server began its graceful stop.
    pub fn mark_stopping(&self) {
        self.stopping
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// The upstream client of the calling thread's server worker.
    pub fn http(&self) -> &UpstreamClient {
        let i = crate::server::worker_index();
        &self.workers[i % self.workers.len()].http
    }

    /// The upstream client for a call made for an account: the worker's, or through the
    /// account's own proxy when it has one.
    pub fn http_via<'a>(&'a self, proxy: Option<&'a AccountProxy>) -> &'a UpstreamClient {
        match proxy {
            None => self.http(),
            Some(proxy) => proxy.client(
                crate::server::worker_index(),
                self.workers.len(),
                &self.config.upstream,
                &self.proxy_tls,
            ),
        }
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        self.catalog.store()
    }

    pub fn pricing(&self) -> Arc<Pricing> {
        match self.pricing.read() {
            Ok(p) => Arc::clone(&p),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// When the store is shared, takes up the price files other instances import. The task
    /// holds the app weakly and ends with the store's change feed.
    fn follow_prices(self: &Arc<Self>, changes: Option<broadcast::Receiver<Change>>) {
        let Some(mut changes) = changes else {
            return;
        };
        let app = Arc::downgrade(self);
        // Stopped by: the store dropping its change feed, or the app going away.
        tokio::spawn(async move {
            loop {
                match changes.recv().await {
                    Ok(Change::Prices | Change::Resync)
                    | Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Ok(Change::Key { .. } | Change::Accounts) => continue,
                    Err(broadcast::error::RecvError::Closed) => return,
                }
                let Some(app) = app.upgrade() else {
                    return;
                };
                match load_pricing(&app.config, app.store().as_ref()).await {
                    Ok(pricing) => app.set_pricing(pricing),
                    // The prices in use stay; the next change or resync tries again.
                    Err(e) => tracing::error!(error = %e, "cannot reload the imported prices"),
                }
            }
        });
    }

    pub fn set_pricing(&self, pricing: Pricing) {
        let pricing = Arc::new(pricing);
        match self.pricing.write() {
            Ok(mut p) => *p = pricing,
            Err(poisoned) => *poisoned.into_inner() = pricing,
        }
    }

    /// At shutdown, once the connections are closed: lets the leases being given back on tasks
    /// of their own finish (they also add what the requests used to the limit counters), writes
    /// out usage aggregates and stops the stats task, then flushes the store; all by `deadline`
    /// (the stop's whole tail has one, `server::STOP_TAIL`: past it the process may be killed).
    /// The give-backs leave the usage write its retries' time.
    pub async fn shutdown(&self, deadline: tokio::time::Instant) {
        let now = tokio::time::Instant::now();
        let usage_from = deadline
            .checked_sub(USAGE_WRITE_TIME)
            .unwrap_or(now)
            .max(now);
        crate::limits::give_backs_done(usage_from - now).await;
        let flush_from = deadline.checked_sub(FLUSH_TIME).unwrap_or(deadline);
        if tokio::time::timeout_at(flush_from, self.stats.stop())
            .await
            .is_err()
        {
            tracing::error!(
                "the stop ran out of time before the last usage was written; it is lost"
            );
        }
        match tokio::time::timeout_at(deadline, self.store().flush()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "store flush failed"),
            Err(_) => tracing::error!("the store flush did not finish before the stop's deadline"),
        }
    }
}

/// What `App::shutdown` keeps of its time for writing the last usage (the stats task's retries
/// last 5 s) and flushing the store.
const USAGE_WRITE_TIME: Duration = Duration::from_secs(6);

/// What `App::shutdown` keeps of its time for the store flush.
const FLUSH_TIME: Duration = Duration::from_secs(1);

/// Built-in prices, overlaid by the last imported price file (the one the shared store keeps,
/// else the data dir's), then by the config.
pub async fn load_pricing(config: &Config, store: &dyn Store) -> anyhow::Result<Pricing> {
    let text = match store.shared_prices().await? {
        Some(text) => Some(text),
        None => {
            let path = config.data_dir.join(IMPORTED_PRICES_FILE);
            match std::fs::read_to_string(&path) {
                Ok(text) => Some(text),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                Err(e) => anyhow::bail!("cannot read {}: {e}", path.display()),
            }
        }
    };
    let imported = text
        .map(|text| PriceTable::from_litellm_json(&text))
        .transpose()?;
    Ok(Pricing::from_config(&config.pricing, imported)?)
}

/// rustls needs one process-wide crypto provider before any TLS client is built; ours is ring.
pub fn install_crypto_provider() {
    // Already installed (by an earlier App in this process) is fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
}
