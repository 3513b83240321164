//! The hub: which local connections are subscribed to which channel, and fan-out.
//! Channels live in shards so unrelated channels do not contend; fan-out holds one
//! channel's lock while it pushes the shared bytes (or the shared `Arc<Published>`)
//! into each subscriber's bounded outbox, without waiting or allocating per recipient.
//! Presence and what counts for the cluster live elsewhere (`presence`, `node`).

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
    /// Presence memberships held here without a subscriber (long-poll clients between
    /// requests): they keep the channel occupied.
    leases: usize,
}

impl Channel {
    fn is_unused(&self) -> bool {
        self.subscribers.is_empty() && self.leases == 0
    }
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

    /// Applies `change` to the channel's entry, created if missing; returns whether the
    /// channel was unused before.
    fn enter(
        &self,
        app: &Arc<str>,
        channel: &ChannelName,
        change: impl FnOnce(&mut Channel),
    ) -> bool {
        // The shard's write lock is held so that a concurrent `leave` cannot drop the
        // channel between our lookup and our change.
        let mut map = self.shard(app, channel).write();
        let entry = map
            .entry((app.clone(), channel.clone()))
            .or_default()
            .clone();
        let mut ch = entry.lock();
        let was_unused = ch.is_unused();
        change(&mut ch);
        was_unused
    }

    /// Applies `change` to the channel's entry if there is one, and drops the entry
    /// once unused; `None` when there was none, else `change`'s result and whether the
    /// channel is now unused.
    fn leave<T>(
        &self,
        app: &Arc<str>,
        channel: &ChannelName,
        change: impl FnOnce(&mut Channel) -> Option<T>,
    ) -> Option<(T, bool)> {
        let entry = self.channel(app, channel)?;
        let (out, unused) = {
            let mut ch = entry.lock();
            let out = change(&mut ch)?;
            (out, ch.is_unused())
        };
        let mut vacated = false;
        if unused {
            let mut map = self.shard(app, channel).write();
            let key = (app.clone(), channel.clone());
            if map
                .get(&key)
                .is_some_and(|c| Arc::ptr_eq(c, &entry) && c.lock().is_unused())
            {
                map.remove(&key);
                vacated = true;
            }
        }
        Some((out, vacated))
    }

    /// Adds a subscriber; returns whether this made the channel occupied here.
    pub fn subscribe(&self, app: &Arc<str>, channel: &ChannelName, sub: Subscriber) -> bool {
        let occupied = self.enter(app, channel, |ch| ch.subscribers.push(sub));
        metrics::gauge!("crier_subscriptions").increment(1.0);
        occupied
    }

    /// Removes a connection's subscription: the subscriber, and whether that vacated
    /// the channel here; `None` when `conn` was not subscribed.
    pub fn unsubscribe(
        &self,
        app: &Arc<str>,
        channel: &ChannelName,
        conn: ConnId,
    ) -> Option<(Subscriber, bool)> {
        let out = self.leave(app, channel, |ch| {
            let at = ch.subscribers.iter().position(|s| s.conn == conn)?;
            Some(ch.subscribers.swap_remove(at))
        });
        if out.is_some() {
            metrics::gauge!("crier_subscriptions").decrement(1.0);
        }
        out
    }

    /// Keeps a channel occupied for a membership without a subscriber; returns whether
    /// this made the channel occupied here.
    pub fn hold(&self, app: &Arc<str>, channel: &ChannelName) -> bool {
        self.enter(app, channel, |ch| ch.leases += 1)
    }

    /// Ends a [`Hub::hold`]; returns whether that vacated the channel here.
    pub fn release(&self, app: &Arc<str>, channel: &ChannelName) -> bool {
        self.leave(app, channel, |ch| {
            ch.leases = ch.leases.checked_sub(1)?;
            Some(())
        })
        .is_some_and(|(_, vacated)| vacated)
    }

    /// Sends an encoded frame to every subscriber except the socket `exclude`.
    pub fn broadcast(&self, app: &str, channel: &ChannelName, frame: Bytes, exclude: Option<&str>) {
        let Some(entry) = self.channel(app, channel) else {
            return;
        };
        let ch = entry.lock();
        let mut sent = 0u64;
        for sub in ch
            .subscribers
            .iter()
            .filter(|s| Some(&*s.socket_id) != exclude)
        {
            sub.outbox.push(Outgoing::Frame(frame.clone()));
            sent += 1;
        }
        metrics::counter!("crier_messages_delivered_total").increment(sent);
    }

    /// Fans a published message out to local subscribers.
    pub fn publish(&self, message: &Arc<Published>) {
        let Some(entry) = self.channel(&message.app_id, &message.channel) else {
            return;
        };
        let ch = entry.lock();
        let mut sent = 0u64;
        for sub in &ch.subscribers {
            if message.exclude_socket.as_deref() == Some(&*sub.socket_id) {
                continue;
            }
            sub.outbox.push(Outgoing::Message(message.clone()));
            sent += 1;
        }
        metrics::counter!("crier_messages_delivered_total").increment(sent);
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

    /// Local subscriptions of one channel, or `None` when it is unused here.
    pub fn subscription_count(&self, app: &str, channel: &ChannelName) -> Option<usize> {
        let entry = self.channel(app, channel)?;
        let ch = entry.lock();
        (!ch.is_unused()).then_some(ch.subscribers.len())
    }

    /// Every channel of an app used here whose name starts with `prefix`, with its
    /// local subscriptions, sorted by name.
    pub fn channels(&self, app: &str, prefix: &str) -> Vec<(ChannelName, usize)> {
        let mut out = Vec::new();
        for shard in self.shards.iter() {
            let entries: Vec<_> = shard
                .read()
                .iter()
                .filter(|((a, c), _)| &**a == app && c.as_str().starts_with(prefix))
                .map(|((_, c), ch)| (c.clone(), ch.clone()))
                .collect();
            for (channel, entry) in entries {
                let ch = entry.lock();
                if !ch.is_unused() {
                    out.push((channel, ch.subscribers.len()));
                }
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }
}

impl Deliver for Hub {
    fn deliver(&self, message: &Arc<Published>) {
        self.publish(message);
    }

    fn deliver_frame(&self, app: &str, channel: &ChannelName, frame: Bytes, exclude: Option<&str>) {
        self.broadcast(app, channel, frame, exclude);
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
    fn occupancy_counts_subscribers_and_leases() {
        let hub = Hub::new();
        let app: Arc<str> = Arc::from("a");
        let ch = ChannelName::parse("presence-r").unwrap();
        let (s1, _r1) = sub(1);
        let (s2, _r2) = sub(2);
        assert!(hub.subscribe(&app, &ch, s1));
        assert!(!hub.subscribe(&app, &ch, s2));
        assert!(!hub.hold(&app, &ch));
        assert_eq!(hub.subscription_count("a", &ch), Some(2));
        assert!(matches!(hub.unsubscribe(&app, &ch, 1), Some((s, false)) if s.conn == 1));
        assert!(hub.unsubscribe(&app, &ch, 1).is_none());
        assert!(matches!(hub.unsubscribe(&app, &ch, 2), Some((_, false))));
        assert_eq!(
            hub.subscription_count("a", &ch),
            Some(0),
            "held by the lease"
        );
        assert!(hub.release(&app, &ch));
        assert!(!hub.release(&app, &ch));
        assert!(hub.channels("a", "").is_empty());
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
