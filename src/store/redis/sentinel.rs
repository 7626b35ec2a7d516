//! Following a Sentinel failover at once.
//!
//! fred finds the primary through the Sentinels when it connects, and checks that it is one; it
//! does not hear of a failover while its connections stay up. When the old primary is still
//! running (an operator's `SENTINEL FAILOVER`, a network partition healing), it keeps taking
//! writes until the Sentinels reconfigure it as a replica, about ten seconds later, and those
//! writes are lost with its data set when it resyncs from the new one. So each Sentinel is
//! subscribed to on its `+switch-master` channel, and an announcement for our primary has every
//! client of the store reconnect, which asks the Sentinels again.

use std::sync::{Arc, OnceLock};

use fred::prelude::{
    Builder, Client, ClientLike, Config, EventInterface, Pool, PubsubInterface, ReconnectPolicy,
    ServerConfig,
};
use tokio::sync::broadcast::error::RecvError;
use tokio::task::JoinHandle;

use super::url;

/// The channel a Sentinel announces a new primary on: `<name> <old ip> <old port> <new ip>
/// <new port>`.
const SWITCH_MASTER: &str = "+switch-master";

/// Every client of the store, reconnected together.
#[derive(Clone)]
pub(super) struct Clients {
    pub(super) pool: Pool,
    pub(super) subscriber: Client,
    pub(super) worker_pools: Arc<[OnceLock<Pool>]>,
}

impl Clients {
    async fn reconnect(&self) {
        let workers = self.worker_pools.iter().filter_map(OnceLock::get);
        let pools = std::iter::once(&self.pool).chain(workers);
        for pool in pools {
            if let Err(e) = pool.force_reconnection().await {
                tracing::warn!(error = %e, "redis: reconnecting a pool after a failover failed");
            }
        }
        if let Err(e) = self.subscriber.force_reconnection().await {
            tracing::warn!(error = %e, "redis: reconnecting the change feed after a failover failed");
        }
    }
}

/// The Sentinels' listeners, while the store lives (dropped, they stop and close).
pub(super) struct Watch {
    listeners: Vec<(Client, JoinHandle<()>)>,
}

impl Drop for Watch {
    fn drop(&mut self) {
        for (client, task) in self.listeners.drain(..) {
            task.abort();
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(async move {
                    let _ = client.quit().await;
                });
            }
        }
    }
}

/// Listens to every Sentinel `url` names (none for a URL without Sentinels) and reconnects
/// `clients` when one announces a new primary for the service. Connects in the background:
/// the store is already connected through them.
pub(super) fn watch(url: &str, clients: Clients) -> Option<Watch> {
    let config = Config::from_url(&url::to_fred(url)).ok()?;
    let ServerConfig::Sentinel {
        hosts,
        service_name,
        username,
        password,
    } = &config.server
    else {
        return None;
    };
    let mut listeners = Vec::with_capacity(hosts.len());
    for host in hosts {
        let sentinel = Config {
            server: ServerConfig::new_centralized(host.host.to_string(), host.port),
            username: username.clone(),
            password: password.clone(),
            tls: config.tls.clone(),
            // A Sentinel down at start is tried again like one lost later.
            fail_fast: false,
            ..Config::default()
        };
        let built = Builder::from_config(sentinel)
            .set_policy(ReconnectPolicy::new_exponential(0, 100, 5_000, 2))
            .build();
        let client = match built {
            Ok(client) => client,
            Err(e) => {
                tracing::warn!(sentinel = %host, error = %url::scrub(&e.to_string(), url),
                    "redis: cannot listen to a sentinel for failovers");
                continue;
            }
        };
        let task = tokio::spawn(listen(
            client.clone(),
            service_name.clone(),
            clients.clone(),
        ));
        listeners.push((client, task));
    }
    Some(Watch { listeners })
}

/// One Sentinel's announcements, until the store drops the task.
async fn listen(sentinel: Client, service: String, clients: Clients) {
    let mut messages = sentinel.message_rx();
    let mut reconnects = sentinel.reconnect_rx();
    // Returns once connected (fred keeps trying, the policy never gives up).
    if let Err(e) = sentinel.init().await {
        tracing::debug!(error = %e, "redis: a sentinel did not answer");
    }
    subscribe(&sentinel).await;
    loop {
        tokio::select! {
            message = messages.recv() => match message {
                Ok(message) => {
                    let text = message.value.as_string().unwrap_or_default();
                    if message.channel == SWITCH_MASTER && names(&text, &service) {
                        tracing::warn!(announcement = %text,
                            "redis: a sentinel announced a new primary; reconnecting to it");
                        clients.reconnect().await;
                    }
                }
                Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => return,
            },
            reconnected = reconnects.recv() => match reconnected {
                Ok(_) | Err(RecvError::Lagged(_)) => subscribe(&sentinel).await,
                Err(RecvError::Closed) => return,
            },
        }
    }
}

async fn subscribe(sentinel: &Client) {
    if let Err(e) = sentinel.subscribe(SWITCH_MASTER).await {
        tracing::debug!(error = %e, "redis: subscribing to a sentinel's failovers failed");
    }
}

/// Whether a `+switch-master` announcement is of `service`.
fn names(announcement: &str, service: &str) -> bool {
    announcement.split(' ').next() == Some(service)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn announcements_are_told_apart_by_service() {
        assert!(names("sy 127.0.0.1 6491 127.0.0.1 6492", "sy"));
        assert!(!names("sy2 127.0.0.1 6491 127.0.0.1 6492", "sy"));
        assert!(!names("", "sy"));
    }
}
