//! The hub: which local connections are subscribed to which channel, and fan-out.
//! Channels live in shards so unrelated channels do not contend; fan-out holds one
//! channel's lock while it pushes the shared bytes (or the shared `Arc<Published>`)
//! into each subscriber's bounded outbox, without waiting or allocating per recipient.
//! Presence and what counts for the cluster (occupancy, subscription counts) live
//! elsewhere: in `presence` and the broker.

use crate::broker::Deliver;
use crate::message::Published;
use crate::outbox::{Disconnect, Outbox, Outgoing};
use bytes::Bytes;
use crier_protocol::ChannelName;
use parking_lot::{Mutex, RwLock};
use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, Hasher, RandomState};
use std::sync::Arc;

const SHARDS: usize = 64;

/// Identifies one connection on this node.
pub type ConnId = u64;

/// One connection's subscription to a channel.
#[derive(Clone)]
pub struct Subscriber {
    pub conn: ConnId,
    pub socket_id: Arc<str>,
    pub outbox: Outbox,
}

#[derive(Default)]
struct Channel {
    subscribers: Vec<Subscriber>,
}

type ChannelKey = (Arc<str>, ChannelName);
type Shard = RwLock<HashMap<ChannelKey, Arc<Mutex<Channel>>>>;

pub struct Hub {
    shards: Box<[Shard]>,
    hasher: RandomState,
}

impl Default for Hub {
    fn default() -> Self {
        Self::new()
    }
}

impl Hub {
    pub fn new() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| RwLock::default()).collect(),
            hasher: RandomState::new(),
        }
    }

    fn shard(&self, app: &str, channel: &ChannelName) -> &Shard {
        let mut h = self.hasher.build_hasher();
        app.hash(&mut h);
        channel.hash(&mut h);
        &self.shards[(h.finish() as usize) % SHARDS]
    }

    fn channel(&self, app: &str, channel: &ChannelName) -> Option<Arc<Mutex<Channel>>> {
        let key = (Arc::from(app), channel.clone());
        self.shard(app, channel).read().get(&key).cloned()
    }

    /// Adds a subscriber.
    pub fn subscribe(&self, app: &Arc<str>, channel: &ChannelName, sub: Subscriber) {
        // The shard's write lock is held so that a concurrent `unsubscribe` cannot drop
        // the channel between our lookup and our push.
        let mut map = self.shard(app, channel).write();
        let entry = map
            .entry((app.clone(), channel.clone()))
            .or_insert_with(|| {
                metrics::gauge!("crier_channels").increment(1.0);
                Arc::default()
            })
            .clone();
        entry.lock().subscribers.push(sub);
        metrics::gauge!("crier_subscriptions").increment(1.0);
    }

    /// Removes a connection's subscription; returns it, or `None` when `conn` was not
    /// subscribed.
    pub fn unsubscribe(
        &self,
        app: &Arc<str>,
        channel: &ChannelName,
        conn: ConnId,
    ) -> Option<Subscriber> {
        let entry = self.channel(app, channel)?;
        let (sub, empty) = {
            let mut ch = entry.lock();
            let at = ch.subscribers.iter().position(|s| s.conn == conn)?;
            let sub = ch.subscribers.swap_remove(at);
            (sub, ch.subscribers.is_empty())
        };
        metrics::gauge!("crier_subscriptions").decrement(1.0);
        if empty {
            let mut map = self.shard(app, channel).write();
            let key = (app.clone(), channel.clone());
            if map
                .get(&key)
                .is_some_and(|c| Arc::ptr_eq(c, &entry) && c.lock().subscribers.is_empty())
            {
                map.remove(&key);
                metrics::gauge!("crier_channels").decrement(1.0);
            }
        }
        Some(sub)
    }

    /// Sends an encoded frame to every subscriber except the socket `exclude`.
    pub fn broadcast(&self, app: &str, channel: &ChannelName, frame: Bytes, exclude: Option<&str>) {
        let Some(entry) = self.channel(app, channel) else {
            return;
        };
        // Deliveries are counted by the transports, as they write them.
        let ch = entry.lock();
        for sub in ch
            .subscribers
            .iter()
            .filter(|s| Some(&*s.socket_id) != exclude)
        {
            sub.outbox.push(Outgoing::Frame(frame.clone()));
        }
    }

    /// Fans a published message out to local subscribers.
    pub fn publish(&self, message: &Arc<Published>) {
        let Some(entry) = self.channel(&message.app_id, &message.channel) else {
            return;
        };
        let ch = entry.lock();
        for sub in &ch.subscribers {
            if message.exclude_socket.as_deref() == Some(&*sub.socket_id) {
                continue;
            }
            sub.outbox.push(Outgoing::Message(message.clone()));
        }
    }

    /// Closes every connection subscribed to `channel` with `reason`.
    pub fn close_subscribers(
        &self,
        app: &str,
        channel: &ChannelName,
        reason: &Disconnect,
    ) -> usize {
        let Some(entry) = self.channel(app, channel) else {
            return 0;
        };
        let ch = entry.lock();
        for sub in &ch.subscribers {
            sub.outbox.close(reason.clone());
        }
        ch.subscribers.len()
    }
}

impl Deliver for Hub {
    fn deliver(&self, message: &Arc<Published>) {
        self.publish(message);
    }

    fn deliver_frame(&self, app: &str, channel: &ChannelName, frame: Bytes, exclude: Option<&str>) {
        self.broadcast(app, channel, frame, exclude);
    }

    fn close(&self, app: &str, channel: &ChannelName, reason: &Disconnect) {
        self.close_subscribers(app, channel, reason);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbox::{outbox, Next, OutboxReceiver};

    fn sub(conn: ConnId) -> (Subscriber, OutboxReceiver) {
        let (tx, rx) = outbox(16);
        (
            Subscriber {
                conn,
                socket_id: Arc::from(format!("{conn}.1")),
                outbox: tx,
            },
            rx,
        )
    }

    async fn frame(rx: &mut OutboxReceiver) -> String {
        match rx.next().await {
            Next::Send(Outgoing::Frame(f)) => String::from_utf8(f.to_vec()).unwrap(),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn unsubscribe_returns_the_subscription_once() {
        let hub = Hub::new();
        let app: Arc<str> = Arc::from("a");
        let ch = ChannelName::parse("private-r").unwrap();
        let (s1, _r1) = sub(1);
        hub.subscribe(&app, &ch, s1);
        assert_eq!(hub.unsubscribe(&app, &ch, 1).map(|s| s.conn), Some(1));
        assert!(hub.unsubscribe(&app, &ch, 1).is_none());
        assert!(
            hub.channel("a", &ch).is_none(),
            "an empty channel is dropped"
        );
    }

    #[tokio::test]
    async fn broadcast_skips_the_sender() {
        let hub = Hub::new();
        let app: Arc<str> = Arc::from("a");
        let ch = ChannelName::parse("private-x").unwrap();
        let (s1, mut r1) = sub(1);
        let (s2, mut r2) = sub(2);
        hub.subscribe(&app, &ch, s1);
        hub.subscribe(&app, &ch, s2);
        hub.broadcast("a", &ch, Bytes::from_static(b"hi"), Some("1.1"));
        assert_eq!(frame(&mut r2).await, "hi");
        assert!(r1.try_next().is_none());
    }
}
