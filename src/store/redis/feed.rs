//! The change feed: record writes announced on `<prefix>changes`, turned into `Change`s.
//!
//! The record scripts publish each change themselves (so no writer can forget). A dedicated
//! connection subscribes to the channel; while it is down, messages are lost, so after every
//! (re)connect it subscribes again and then sends `Change::Resync`, and every cache starts over.
//!
//! A subscribed connection only ever receives, so nothing would notice it die silently (fred's
//! own check watches answers overdue, and it awaits none): the feed pings it every
//! `redis.feed_ping_interval_ms` and has it reconnect when no answer comes in time.

use std::time::Duration;

use fred::prelude::{Client, ClientLike, EventInterface, PubsubInterface, Server};
use fred::types::config::Options;
use fred::types::{ClusterHash, Message, Value};
use fred::util::redis_keyslot;
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::RecvError;
use tokio::time::MissedTickBehavior;

use crate::store::Change;

/// Parses one message of the channel: `key:<hash>`, `accounts` or `prices`.
pub(super) fn parse(message: &str) -> Option<Change> {
    match message {
        "accounts" => return Some(Change::Accounts),
        "prices" => return Some(Change::Prices),
        _ => {}
    }
    message.strip_prefix("key:").map(|hash| Change::Key {
        hash: hash.to_owned(),
    })
}

/// The subscriber's event streams, taken right after it first connected (so that no reconnect
/// goes unnoticed) and before it subscribed (so that no message does).
pub(super) struct Streams {
    messages: broadcast::Receiver<Message>,
    reconnects: broadcast::Receiver<Server>,
}

impl Streams {
    pub(super) fn of(subscriber: &Client) -> Streams {
        Streams {
            messages: subscriber.message_rx(),
            reconnects: subscriber.reconnect_rx(),
        }
    }
}

/// How the feed paces itself.
#[derive(Debug, Clone)]
pub(super) struct Timing {
    /// Between two attempts to subscribe again.
    pub(super) retry_delay: Duration,
    /// Between two pings of the subscribed connection.
    pub(super) ping_every: Duration,
    /// A ping not answered within this time means a dead connection.
    pub(super) ping_within: Duration,
}

/// Forwards the subscriber's messages to `tx` until aborted (the store aborts it when dropped)
/// or the client is closed. `subscriber` must already be subscribed once.
pub(super) async fn forward(
    subscriber: Client,
    streams: Streams,
    channel: String,
    tx: broadcast::Sender<Change>,
    timing: Timing,
) {
    let Streams {
        mut messages,
        mut reconnects,
    } = streams;
    let every = timing.ping_every.max(Duration::from_millis(1));
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            message = messages.recv() => match message {
                Ok(message) => {
                    if message.channel != channel.as_str() {
                        continue;
                    }
                    let change = message.value.as_string().and_then(|text| parse(&text));
                    match change {
                        // Nobody listening is fine: there is no cache to invalidate.
                        Some(change) => { let _ = tx.send(change); }
                        None => tracing::warn!("unknown message on the redis change channel"),
                    }
                }
                // Messages were dropped on our side: the caches may have missed some.
                Err(RecvError::Lagged(_)) => { let _ = tx.send(Change::Resync); }
                Err(RecvError::Closed) => return,
            },
            reconnected = reconnects.recv() => match reconnected {
                Ok(_) | Err(RecvError::Lagged(_)) => {
                    resubscribe(&subscriber, &channel, timing.retry_delay).await;
                    let _ = tx.send(Change::Resync);
                }
                Err(RecvError::Closed) => return,
            },
            _ = ping.tick() => {
                // While fred reconnects on its own, the reconnect below comes anyway.
                if subscriber.is_connected() && !answers_ping(&subscriber, timing.ping_within).await {
                    tracing::warn!(
                        "the redis change feed's connection did not answer a ping in time; reconnecting"
                    );
                    // Returns once connected again; the reconnect event then subscribes again
                    // and sends `Resync` (above).
                    if let Err(e) = subscriber.force_reconnection().await {
                        tracing::warn!(error = %e, "reconnecting the redis change feed failed");
                    }
                    ping.reset();
                }
            },
        }
    }
}

/// Whether the subscribed connection answers a `PING` within `within` (a subscribed RESP2
/// connection answers `pong` as an array). On a cluster, sent to the node that holds the
/// subscription: fred routes `SUBSCRIBE` by the hash slot of the client's id.
pub(super) async fn answers_ping(subscriber: &Client, within: Duration) -> bool {
    let options = Options {
        cluster_hash: Some(ClusterHash::Custom(redis_keyslot(
            subscriber.id().as_bytes(),
        ))),
        timeout: Some(within),
        max_attempts: Some(1),
        ..Options::default()
    };
    let client = subscriber.with_options(&options);
    matches!(
        tokio::time::timeout(within, client.ping::<Value>(None)).await,
        Ok(Ok(_))
    )
}

/// Subscribes again after a reconnect, retrying until it works: a subscriber that silently
/// stopped listening would leave every cache stale for good.
async fn resubscribe(subscriber: &Client, channel: &str, retry_delay: Duration) {
    loop {
        match subscriber.subscribe(channel).await {
            Ok(()) => return,
            Err(e) => {
                tracing::warn!(error = %e, "re-subscribing to redis changes failed; retrying");
                tokio::time::sleep(retry_delay).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_parse() {
        assert_eq!(parse("accounts"), Some(Change::Accounts));
        assert_eq!(
            parse("key:abc"),
            Some(Change::Key {
                hash: "abc".to_owned()
            })
        );
        assert_eq!(parse("other"), None);
    }
}
