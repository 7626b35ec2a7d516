//! Following a Sentinel failover at once.
//!
//! fred finds the primary through the Sentinels when it connects, and checks that it is one; it
//! does not hear of a failover while its connections stay up. When the old primary is still
//! running (an operator's `SENTINEL FAILOVER`, a network partition healing), it keeps taking
//! writes until the Sentinels reconfigure it as a replica, about ten seconds later, and those
//! writes are lost with its data set when it resyncs from the new one.
//!
//! So every Sentinel is listened to on its `+switch-master` channel, and one task moves the
//! store's clients (each worker's command pool, the change feed) to the primary announced:
//! those not connected there reconnect, all at once, which asks the Sentinels again. A Sentinel
//! not yet told may send a client back to the old primary: such a client is moved again, after
//! a pause, until every client is on the new one (or a newer announcement comes). The same
//! announcement from every Sentinel moves nobody twice.
//!
//! Between the promotion and the move (the announcement, then the reconnects: tens of
//! milliseconds) writes still go to the old primary and are lost with it. The store keeps its
//! last moments of writes that count once however often they are made (`Recent`: give-backs of
//! leases, usage batches) and makes them again once every client is on the new primary: a
//! give-back whose lease is still held there returns it, a usage batch not applied there is.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use fred::prelude::{
    Client, ClientLike, Config, EventInterface, Pool, PubsubInterface, ServerConfig,
};
use fred::types::{Key, Value};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};

use super::{connect, feed, url};
use crate::config::RedisConfig;
use crate::store::UsageBatch;

/// The channel a Sentinel announces a new primary on: `<name> <old ip> <old port> <new ip>
/// <new port>`.
const SWITCH_MASTER: &str = "+switch-master";

/// How long the clients are moved to an announced primary before giving up (they then follow
/// fred's own reconnects, and the next announcement).
const FOLLOW_FOR: Duration = Duration::from_secs(60);

/// How far back `Recent` keeps writes: past the longest a move to a new primary takes after
/// its promotion (the announcement follows the promotion within a second).
const REMEMBERED: Duration = Duration::from_secs(10);

/// At most this many usage batches are kept (the newest): a batch is made again only while its
/// id is among those its markers remember (`MARKER_KEEP`, 64), with room for the batches written
/// between the move and the repeat.
const USAGE_KEPT: usize = 32;

/// At most this many give-backs are kept (the newest): ten seconds at 2,000 requests a second,
/// a few hundred bytes each.
const GIVES_KEPT: usize = 20_000;

/// A `give.lua` call as it was sent: made again, it counts once.
#[derive(Debug, Clone)]
pub(super) struct Give {
    pub(super) keys: Vec<Key>,
    pub(super) args: Vec<Value>,
}

/// The store's writes of the last `REMEMBERED` that count once however often they are made, and
/// whether a failover was followed since they were taken.
#[derive(Default)]
pub(super) struct Recent(Mutex<RecentState>);

#[derive(Default)]
struct RecentState {
    gives: VecDeque<(Instant, Give)>,
    /// Oldest first; each batch's id makes it count once.
    usage: VecDeque<(Instant, UsageBatch)>,
    moved: bool,
}

/// What to make again after a failover, oldest first, each with when it was first made. The
/// order does not matter within one upkeep: at most `USAGE_KEPT` batch ids are pushed into a
/// marker that remembers 64, so none made again is forgotten before it is tried.
pub(super) struct Repeat {
    pub(super) gives: Vec<(Instant, Give)>,
    pub(super) usage: Vec<(Instant, UsageBatch)>,
}

/// A write not made again within this long of when it was first made is dropped (with an
/// error in the log): a usage batch tried after more ids than its markers remember could count
/// twice, and a give-back's session binding could replace one made since.
const GIVE_UP_AFTER: Duration = Duration::from_secs(30);

fn keep<T>(queue: &mut VecDeque<(Instant, T)>, item: T, most: usize, now: Instant) {
    while queue
        .front()
        .is_some_and(|(at, _)| now.duration_since(*at) > REMEMBERED || queue.len() >= most)
    {
        queue.pop_front();
    }
    queue.push_back((now, item));
}

impl Recent {
    fn state(&self) -> std::sync::MutexGuard<'_, RecentState> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Keeps a give-back the store made (acknowledged: by the old primary, perhaps).
    pub(super) fn note_give(&self, give: Give) {
        keep(&mut self.state().gives, give, GIVES_KEPT, Instant::now());
    }

    /// Keeps a usage batch the store wrote.
    pub(super) fn note_usage(&self, batch: UsageBatch) {
        keep(&mut self.state().usage, batch, USAGE_KEPT, Instant::now());
    }

    /// Every client is on a new primary: the writes kept are to be made again.
    fn moved(&self) {
        self.state().moved = true;
    }

    /// The writes to make again, once after each failover followed (none otherwise).
    pub(super) fn to_repeat(&self) -> Option<Repeat> {
        let mut state = self.state();
        if !std::mem::take(&mut state.moved) {
            return None;
        }
        let gives = state.gives.drain(..).collect();
        let usage = state.usage.drain(..).collect();
        Some(Repeat { gives, usage })
    }

    /// Writes that could not be made again (oldest first): tried again at the next upkeep,
    /// until `GIVE_UP_AFTER`.
    pub(super) fn put_back(&self, repeat: Repeat) {
        let now = Instant::now();
        let young = |at: &Instant| now.duration_since(*at) < GIVE_UP_AFTER;
        let (gives, old_gives): (Vec<_>, Vec<_>) =
            repeat.gives.into_iter().partition(|(at, _)| young(at));
        let (usage, old_usage): (Vec<_>, Vec<_>) =
            repeat.usage.into_iter().partition(|(at, _)| young(at));
        if !(old_gives.is_empty() && old_usage.is_empty()) {
            tracing::error!(
                give_backs = old_gives.len(),
                usage_batches = old_usage.len(),
                "redis: writes lost in a failover could not be made again; given up"
            );
        }
        let mut state = self.state();
        // Before what was noted since, in their order.
        for entry in gives.into_iter().rev() {
            state.gives.push_front(entry);
        }
        for entry in usage.into_iter().rev() {
            state.usage.push_front(entry);
        }
        state.moved = !(state.gives.is_empty() && state.usage.is_empty());
    }
}

/// Every client of the store.
#[derive(Clone)]
pub(super) struct Clients {
    pub(super) pool: Pool,
    pub(super) subscriber: Client,
    pub(super) worker_pools: Arc<[OnceLock<Pool>]>,
}

impl Clients {
    fn all(&self) -> Vec<Client> {
        let workers = self.worker_pools.iter().filter_map(OnceLock::get);
        let mut all: Vec<Client> = std::iter::once(&self.pool)
            .chain(workers)
            .flat_map(|pool| pool.clients().iter().cloned())
            .collect();
        all.push(self.subscriber.clone());
        all
    }
}

/// A primary, as a Sentinel announces it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Primary {
    host: String,
    port: u16,
}

impl Primary {
    /// The new primary a `+switch-master` announcement names, if it is `service`'s.
    fn announced(text: &str, service: &str) -> Option<Primary> {
        let mut parts = text.split(' ');
        if parts.next() != Some(service) {
            return None;
        }
        let (host, port) = (parts.nth(2)?, parts.next()?);
        Some(Primary {
            host: host.to_owned(),
            port: port.parse().ok()?,
        })
    }

    fn serves(&self, client: &Client) -> bool {
        client
            .active_connections()
            .iter()
            .any(|s| s.port == self.port && *s.host == *self.host)
    }
}

/// The Sentinels' listeners and the task that moves the clients, while the store lives
/// (dropped, they stop and close).
pub(super) struct Watch {
    listeners: Vec<Client>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Watch {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            for client in self.listeners.drain(..) {
                runtime.spawn(async move {
                    let _ = client.quit().await;
                });
            }
        }
    }
}

/// Listens to every Sentinel `url` names (none for a URL without Sentinels) and moves
/// `clients` to the primary they announce for the service. Connects in the background: the
/// store is already connected through them.
pub(super) fn watch(
    url: &str,
    cfg: &RedisConfig,
    clients: Clients,
    recent: Arc<Recent>,
) -> Option<Watch> {
    let config = url::config(url).ok()?;
    let ServerConfig::Sentinel {
        hosts,
        service_name,
        username,
        password,
    } = &config.server
    else {
        return None;
    };
    let (tx, rx) = mpsc::channel(64);
    let mut listeners = Vec::with_capacity(hosts.len());
    let mut tasks = Vec::with_capacity(hosts.len() + 1);
    let timing = feed::Timing {
        retry_delay: Duration::from_millis(cfg.reconnect_min_delay_ms.max(1)),
        ping_every: Duration::from_millis(cfg.feed_ping_interval_ms.max(1)),
        ping_within: Duration::from_millis(cfg.command_timeout_ms.max(1)),
    };
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
        let client = match connect::builder(sentinel, cfg).build() {
            Ok(client) => client,
            Err(e) => {
                tracing::warn!(sentinel = %host, error = %url::scrub(&e.to_string(), url),
                    "redis: cannot listen to a sentinel for failovers");
                continue;
            }
        };
        let listen = listen(
            client.clone(),
            service_name.clone(),
            tx.clone(),
            timing.clone(),
        );
        tasks.push(tokio::spawn(listen));
        listeners.push(client);
    }
    let within = connect::init_within(cfg);
    tasks.push(tokio::spawn(follow(rx, clients, recent, within)));
    Some(Watch { listeners, tasks })
}

/// One Sentinel's announcements, until the store drops the task. Its connection is pinged as
/// the change feed's is: a Sentinel speaks only when something happens, and a connection that
/// died silently would miss the next failover.
async fn listen(
    sentinel: Client,
    service: String,
    tx: mpsc::Sender<Primary>,
    timing: feed::Timing,
) {
    let mut messages = sentinel.message_rx();
    let mut reconnects = sentinel.reconnect_rx();
    // Returns once connected (fred keeps trying, the policy never gives up); each reconnect
    // subscribes again below.
    if let Err(e) = sentinel.init().await {
        tracing::warn!(error = %e, "redis: a sentinel did not answer");
    }
    subscribe(&sentinel, timing.retry_delay).await;
    let every = timing.ping_every;
    let mut ping = tokio::time::interval_at(Instant::now() + every, every);
    ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            message = messages.recv() => match message {
                Ok(message) if message.channel == SWITCH_MASTER => {
                    let text = message.value.as_string().unwrap_or_default();
                    if let Some(primary) = Primary::announced(&text, &service) {
                        tracing::warn!(announcement = %text,
                            "redis: a sentinel announced a new primary; moving to it");
                        if tx.send(primary).await.is_err() {
                            return;
                        }
                    }
                }
                Ok(_) => {}
                Err(RecvError::Lagged(n)) => {
                    tracing::warn!(missed = n, "redis: a sentinel's announcements were dropped");
                }
                Err(RecvError::Closed) => return,
            },
            reconnected = reconnects.recv() => match reconnected {
                Ok(_) | Err(RecvError::Lagged(_)) => subscribe(&sentinel, timing.retry_delay).await,
                Err(RecvError::Closed) => return,
            },
            _ = ping.tick() => {
                if sentinel.is_connected() && !feed::answers_ping(&sentinel, timing.ping_within).await {
                    tracing::warn!("redis: a sentinel did not answer a ping in time; reconnecting");
                    if let Err(e) = sentinel.force_reconnection().await {
                        tracing::warn!(error = %e, "redis: reconnecting to a sentinel failed");
                    }
                    ping.reset();
                }
            },
        }
    }
}

/// Subscribes to the announcements, retrying until it works: a listener that silently stopped
/// listening would miss the next failover.
async fn subscribe(sentinel: &Client, retry_delay: Duration) {
    while let Err(e) = sentinel.subscribe(SWITCH_MASTER).await {
        tracing::warn!(error = %e, "redis: subscribing to a sentinel's failovers failed; retrying");
        tokio::time::sleep(retry_delay).await;
    }
}

/// Moves the clients to each primary announced, until the listeners are gone.
async fn follow(
    mut rx: mpsc::Receiver<Primary>,
    clients: Clients,
    recent: Arc<Recent>,
    reconnect_within: Duration,
) {
    let mut next = None;
    loop {
        let primary = match next.take() {
            Some(primary) => primary,
            None => match rx.recv().await {
                Some(primary) => primary,
                None => return,
            },
        };
        let deadline = Instant::now() + FOLLOW_FOR;
        let mut pause = Duration::from_millis(100);
        loop {
            let away: Vec<Client> = clients
                .all()
                .into_iter()
                .filter(|c| !primary.serves(c))
                .collect();
            if away.is_empty() {
                tracing::info!(host = %primary.host, port = primary.port,
                    "redis: every connection is on the new primary");
                // The stats task's next upkeep makes the last moments' writes again.
                recent.moved();
                break;
            }
            if Instant::now() >= deadline {
                tracing::warn!(host = %primary.host, port = primary.port, away = away.len(),
                    "redis: some connections did not reach the announced primary");
                recent.moved();
                break;
            }
            let moves = away.iter().map(|client| async move {
                let moved = tokio::time::timeout(reconnect_within, client.force_reconnection());
                if let Ok(Err(e)) = moved.await {
                    tracing::debug!(error = %e, "redis: a reconnect after a failover failed");
                }
            });
            futures_util::future::join_all(moves).await;
            // Those a Sentinel not yet told sent back are moved again after a pause; a newer
            // announcement replaces this one.
            tokio::select! {
                announced = rx.recv() => match announced {
                    Some(other) if other != primary => {
                        next = Some(other);
                        break;
                    }
                    Some(_) => {}
                    None => return,
                },
                _ = tokio::time::sleep(pause) => {}
            }
            pause = (pause * 2).min(Duration::from_secs(2));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn announcements_name_the_new_primary_of_their_service() {
        let primary = |host: &str, port| {
            Some(Primary {
                host: host.to_owned(),
                port,
            })
        };
        assert_eq!(
            Primary::announced("sy 127.0.0.1 6491 127.0.0.1 6492", "sy"),
            primary("127.0.0.1", 6492)
        );
        assert_eq!(
            Primary::announced("sy ::1 6491 ::2 6492", "sy"),
            primary("::2", 6492)
        );
        assert_eq!(
            Primary::announced("sy2 127.0.0.1 6491 127.0.0.1 6492", "sy"),
            None
        );
        assert_eq!(Primary::announced("sy 127.0.0.1 6491", "sy"), None);
        assert_eq!(Primary::announced("sy a 1 b x", "sy"), None);
        assert_eq!(Primary::announced("", "sy"), None);
    }
}
