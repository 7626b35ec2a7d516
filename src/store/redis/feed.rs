//! The change feed: record writes announced on `<prefix>changes`, turned into `Change`s.
//!
//! The record scripts publish each change themselves (so no writer can forget). A dedicated
//! connection subscribes to the channel; while it is down, messages are lost, so after every
//! (re)connect it subscribes again and then sends `Change::Resync`, and every cache starts over.

use fred::prelude::{Client, EventInterface, PubsubInterface, Server};
use fred::types::Message;
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::RecvError;

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

/// Forwards the subscriber's messages to `tx` until aborted (the store aborts it when dropped)
/// or the client is closed. `subscriber` must already be subscribed once.
pub(super) async fn forward(
    subscriber: Client,
    streams: Streams,
    channel: String,
    tx: broadcast::Sender<Change>,
    retry_delay: std::time::Duration,
) {
    let Streams {
        mut messages,
        mut reconnects,
    } = streams;
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
                    resubscribe(&subscriber, &channel, retry_delay).await;
                    let _ = tx.send(Change::Resync);
                }
                Err(RecvError::Closed) => return,
            },
        }
    }
}

/// Subscribes again after a reconnect, retrying until it works: a subscriber that silently
/// stopped listening would leave every cache stale for good.
async fn resubscribe(subscriber: &Client, channel: &str, retry_delay: std::time::Duration) {
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
