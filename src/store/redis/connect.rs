//! Building and starting the fred clients: URL, timeouts, reconnect policy, scripts.

use std::time::Duration;

use fred::prelude::{
    Builder, Client, ClientLike, ClusterInterface, Config, Pool, PubsubInterface, ReconnectPolicy,
};
use fred::socket2::TcpKeepalive;
use fred::types::InfoKind;
use fred::types::config::{TcpConfig, UnresponsiveConfig};

use super::feed::Streams;
use super::names::Names;
use super::scripts::Scripts;
use super::{feed, url};
use crate::config::RedisConfig;
use crate::store::{StoreError, StoreResult};

/// TCP keepalive on every connection: a probe after this long without traffic, then every
/// `KEEPALIVE_INTERVAL` (the system's count of probes). It keeps idle flows alive through NATs
/// and load balancers that drop them silently, and finds a dead peer of an idle connection
/// (fred's own check only watches connections with an answer overdue). The change feed's
/// connection is also pinged (`redis.feed_ping_interval_ms`), which finds one sooner.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(30);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);

/// Everything `RedisStore` runs on, connected.
pub(super) struct Connected {
    pub(super) pool: Pool,
    /// For the server workers' own pools (`start_worker`).
    pub(super) workers: WorkerPools,
    pub(super) subscriber: Client,
    pub(super) streams: Streams,
    pub(super) scripts: Scripts,
}

/// Connects the command pool and the subscriber, subscribes to the change channel and loads the
/// scripts. Fails when Redis cannot be reached within the connect timeout (and then closes
/// whatever it opened); once connected, the clients reconnect on their own, forever.
pub(super) async fn connect(url: &str, cfg: &RedisConfig) -> StoreResult<Connected> {
    if url.starts_with("rediss") {
        // fred builds its TLS config from the process default provider; ring is the one
        // compiled in. Installing it twice is harmless (the second call is refused).
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
    let config = url::config(url).map_err(|e| {
        StoreError::Unavailable(format!(
            "invalid redis url {}: {}",
            url::redact(url),
            url::scrub(e.details(), url)
        ))
    })?;
    let builder = builder(config, cfg);
    let fail = |what: &str, e: fred::error::Error| {
        StoreError::Unavailable(format!(
            "redis {what} ({}): {}",
            url::redact(url),
            url::scrub(&e.to_string(), url)
        ))
    };
    let pool = builder
        .build_pool(cfg.pool_size.max(1))
        .map_err(|e| fail("config", e))?;
    let subscriber = builder.build().map_err(|e| fail("config", e))?;

    // `init` fails fast on a refused connection; the timeout bounds a cluster handshake
    // that keeps following nodes.
    let init_within = init_within(cfg);
    let started = async {
        tokio::time::timeout(init_within, pool.init())
            .await
            .map_err(|_| {
                StoreError::Unavailable(format!("redis connect ({}): timed out", url::redact(url)))
            })?
            .map_err(|e| fail("connect", e))?;
        tokio::time::timeout(init_within, subscriber.init())
            .await
            .map_err(|_| {
                StoreError::Unavailable(format!("redis connect ({}): timed out", url::redact(url)))
            })?
            .map_err(|e| fail("connect", e))?;
        let streams = feed::Streams::of(&subscriber);
        let channel = Names::new(&cfg.prefix).changes_channel();
        subscriber
            .subscribe(channel.as_str())
            .await
            .map_err(|e| fail("subscribe", e))?;
        let scripts = Scripts::load(pool.next()).await?;
        warn_if_evicting(pool.next(), url).await;
        Ok((scripts, streams))
    };
    match started.await {
        Ok((scripts, streams)) => Ok(Connected {
            workers: WorkerPools {
                builder,
                size: cfg.pool_size.max(1),
                init_within,
                url: url.to_owned(),
            },
            pool,
            subscriber,
            streams,
            scripts,
        }),
        Err(e) => {
            close(pool, subscriber);
            Err(e)
        }
    }
}

/// A builder of clients on `config` with the store's timeouts, keepalive and reconnect policy.
pub(super) fn builder(config: Config, cfg: &RedisConfig) -> Builder {
    let connect_timeout = Duration::from_millis(cfg.connect_timeout_ms.max(1));
    let command_timeout = Duration::from_millis(cfg.command_timeout_ms.max(1));
    let min_delay = u32::try_from(cfg.reconnect_min_delay_ms.max(1)).unwrap_or(u32::MAX);
    let max_delay = u32::try_from(cfg.reconnect_max_delay_ms)
        .unwrap_or(u32::MAX)
        .max(min_delay);
    // An answer overdue by this much means a dead connection (a paused server, a silent
    // network partition): fred closes it and reconnects rather than waiting for TCP.
    let unresponsive = (command_timeout * 2).max(Duration::from_secs(1));

    let mut builder = Builder::from_config(config);
    builder
        .with_connection_config(|c| {
            c.connection_timeout = connect_timeout;
            c.internal_command_timeout = connect_timeout.max(command_timeout);
            c.unresponsive = UnresponsiveConfig {
                max_timeout: Some(unresponsive),
                interval: (unresponsive / 4).max(Duration::from_millis(50)),
            };
            c.tcp = TcpConfig {
                keepalive: Some(
                    TcpKeepalive::new()
                        .with_time(KEEPALIVE_IDLE)
                        .with_interval(KEEPALIVE_INTERVAL),
                ),
                ..TcpConfig::default()
            };
        })
        .with_performance_config(|p| {
            p.default_command_timeout = command_timeout;
        })
        // Zero attempts: never give up.
        .set_policy(ReconnectPolicy::new_exponential(0, min_delay, max_delay, 2));
    builder
}

/// How long a connect (and a cluster's handshake, which keeps following nodes) may take.
pub(super) fn init_within(cfg: &RedisConfig) -> Duration {
    let connect_timeout = Duration::from_millis(cfg.connect_timeout_ms.max(1));
    connect_timeout * 3 + Duration::from_millis(cfg.command_timeout_ms.max(1))
}

/// Warns when Redis may evict keys to make room: the store's records, counters, lease sets and
/// markers must never vanish (docs/redis.md: `maxmemory-policy noeviction`). Read from
/// `INFO memory`, which works where `CONFIG` is disabled (managed services); on a cluster, from
/// every primary. Never fails the connect: a Redis that does not say is not warned about.
async fn warn_if_evicting(client: &Client, url: &str) {
    let primaries = if client.is_clustered() {
        client
            .cached_cluster_state()
            .map(|state| state.unique_primary_nodes())
            .unwrap_or_default()
    } else {
        Vec::new()
    };
    let infos = if primaries.is_empty() {
        vec![(
            url::redact(url),
            client.info::<String>(Some(InfoKind::Memory)).await,
        )]
    } else {
        let mut infos = Vec::with_capacity(primaries.len());
        for server in primaries {
            let info = client
                .with_cluster_node(&server)
                .info::<String>(Some(InfoKind::Memory))
                .await;
            infos.push((server.to_string(), info));
        }
        infos
    };
    for (server, info) in infos {
        match info {
            Ok(info) => match evicting_policy(&info) {
                None => {}
                Some(policy) => tracing::warn!(
                    server,
                    policy,
                    "redis may evict keys (maxmemory-policy {policy}): records, limit counters and \
                     leases can vanish; run it with maxmemory-policy noeviction (docs/redis.md)"
                ),
            },
            Err(e) => tracing::debug!(server, error = %e, "INFO memory failed"),
        }
    }
}

/// A field of `INFO memory`'s answer.
fn info_field<'a>(info: &'a str, name: &str) -> Option<&'a str> {
    info.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
        .map(str::trim)
}

/// The eviction policy, when the server may evict: a policy other than `noeviction` with a
/// memory limit (`maxmemory: 0` is none: a 64-bit server then never evicts).
fn evicting_policy(info: &str) -> Option<&str> {
    let policy = info_field(info, "maxmemory_policy")?;
    let unlimited = info_field(info, "maxmemory") == Some("0");
    (policy != "noeviction" && !unlimited).then_some(policy)
}

/// How a server worker gets a command pool of its own. A fred client's connection task runs on
/// the runtime that started it; the store's first pool runs on worker 0, so the other workers'
/// commands would each cross to worker 0's thread and back.
pub(super) struct WorkerPools {
    builder: Builder,
    size: usize,
    init_within: Duration,
    /// As configured, secrets included: errors are scrubbed of it before they are shown.
    url: String,
}

impl WorkerPools {
    /// A pool started on the current runtime.
    pub(super) async fn start(&self) -> StoreResult<Pool> {
        let fail = |e: String| {
            StoreError::Unavailable(format!(
                "redis connect ({}): {}",
                url::redact(&self.url),
                url::scrub(&e, &self.url)
            ))
        };
        let pool = self
            .builder
            .build_pool(self.size)
            .map_err(|e| fail(e.to_string()))?;
        match tokio::time::timeout(self.init_within, pool.init()).await {
            Ok(Ok(_)) => Ok(pool),
            outcome => {
                let _ = pool.quit().await;
                Err(fail(match outcome {
                    Ok(Err(e)) => e.to_string(),
                    _ => "timed out".to_owned(),
                }))
            }
        }
    }
}

/// Closes the connections in the background. fred's connection tasks live until `QUIT`, not
/// until the last handle goes, so a store dropped without this would leak its sockets.
pub(super) fn close(pool: Pool, subscriber: Client) {
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        runtime.spawn(async move {
            let _ = subscriber.quit().await;
            let _ = pool.quit().await;
        });
    }
}

/// Closes one pool's connections in the background (see `close`).
pub(super) fn close_pool(pool: Pool) {
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        runtime.spawn(async move {
            let _ = pool.quit().await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_eviction_policy_is_read_from_info_memory() {
        let info = "# Memory\r\nused_memory:1095216\r\nmaxmemory:104857600\r\n\
                    maxmemory_human:100.00M\r\nmaxmemory_policy:allkeys-lru\r\n\
                    allocator_frag_ratio:1.00\r\n";
        assert_eq!(evicting_policy(info), Some("allkeys-lru"));
        assert_eq!(
            evicting_policy("maxmemory:100\nmaxmemory_policy:noeviction\n"),
            None
        );
        // No memory limit: nothing is evicted, whatever the policy.
        assert_eq!(
            evicting_policy("maxmemory:0\nmaxmemory_policy:allkeys-lru\n"),
            None
        );
        // Not a prefix of another field; absent (an old or unusual server): nothing to say.
        assert_eq!(evicting_policy("x_maxmemory_policy:volatile-lru\n"), None);
        assert_eq!(evicting_policy("# Memory\r\nused_memory:1\r\n"), None);
        assert_eq!(evicting_policy(""), None);
    }
}
