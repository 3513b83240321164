//! The hub: which local connections are subscribed to which channel, presence
//! rosters, and fan-out. Channels live in shards so unrelated channels do not contend;
//! fan-out holds one channel's lock while it pushes the shared bytes (or the shared
//! `Arc<Published>`) into each subscriber's bounded outbox, without waiting or
//! allocating per recipient.

use crate::broker::Deliver;
use crate::message::Published;
use crate::outbox::{Outbox, Outgoing};
use crate::presence::{Joined, Roster};
use bytes::Bytes;
use crier_protocol::{frames, ChannelName};
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
    roster: Roster,
    /// Presence user of each subscribed connection, for `leave`.
    presence_users: HashMap<ConnId, Arc<str>>,
}

impl Channel {
    fn is_unused(&self) -> bool {
        self.subscribers.is_empty() && self.roster.is_empty()
    }

    fn announce(&self, frame: &Bytes) {
        for other in &self.subscribers {
            other.outbox.push(Outgoing::Frame(frame.clone()));
        }
    }
}

type ChannelKey = (Arc<str>, ChannelName);
type Shard = RwLock<HashMap<ChannelKey, Arc<Mutex<Channel>>>>;

/// Counts for the channel query API.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChannelStats {
    pub channel: ChannelName,
    pub subscription_count: usize,
    pub user_count: usize,
}

/// Presence data for a subscription.
pub struct PresenceJoin {
    pub user_id: Arc<str>,
    pub user_info: serde_json::Value,
    pub max_members: usize,
}

/// The channel is full of presence members.
#[derive(Debug, PartialEq, Eq)]
pub struct PresenceFull;

/// Something that happened to a channel, for webhooks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChannelEvent {
    Occupied(ChannelName),
    Vacated(ChannelName),
    MemberAdded(ChannelName, Arc<str>),
    MemberRemoved(ChannelName, Arc<str>),
    ClientEvent(ClientEvent),
}

/// A client event as webhooks report it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientEvent {
    pub channel: ChannelName,
    pub event: String,
    pub data: String,
    pub socket_id: Arc<str>,
    pub user_id: Option<Arc<str>>,
}

/// Told about channel events as they happen; must not block (it runs under locks).
pub trait HubObserver: Send + Sync + 'static {
    fn on_event(&self, app: &Arc<str>, event: ChannelEvent);
}

pub struct Hub {
    shards: Box<[Shard]>,
    hasher: RandomState,
    observer: Option<Arc<dyn HubObserver>>,
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
            observer: None,
        }
    }

    /// A hub that reports channel events to `observer`.
    pub fn with_observer(observer: Arc<dyn HubObserver>) -> Self {
        Self {
            observer: Some(observer),
            ..Self::new()
        }
    }

    /// Reports an event to the observer, if any.
    pub(crate) fn notify(&self, app: &Arc<str>, event: ChannelEvent) {
        if let Some(o) = &self.observer {
            o.on_event(app, event);
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

    /// Adds a subscriber; with `presence`, also joins the roster and announces the new
    /// member to the others. Returns the frame the subscriber should get as its
    /// `subscription_succeeded` for presence channels.
    ///
    /// # Errors
    /// `PresenceFull` when a new user would exceed the channel's member limit.
    pub fn subscribe(
        &self,
        app: &Arc<str>,
        channel: &ChannelName,
        sub: Subscriber,
        presence: Option<PresenceJoin>,
    ) -> Result<Option<String>, PresenceFull> {
        let shard = self.shard(app, channel);
        // The shard's write lock is held while joining so that `unsubscribe` cannot
        // drop the channel between our lookup and our push.
        let mut map = shard.write();
        let entry = map
            .entry((app.clone(), channel.clone()))
            .or_default()
            .clone();
        let mut ch = entry.lock();
        let occupied = ch.is_unused();
        let mut presence_frame = None;
        let mut added_user: Option<Arc<str>> = None;
        if let Some(join) = presence {
            match ch
                .roster
                .join(&join.user_id, join.user_info.clone(), join.max_members)
            {
                Joined::Full => {
                    let empty = ch.subscribers.is_empty();
                    drop(ch);
                    if empty {
                        map.remove(&(app.clone(), channel.clone()));
                    }
                    return Err(PresenceFull);
                }
                Joined::NewMember => {
                    added_user = Some(join.user_id.clone());
                    let frame = Bytes::from(frames::member_added(
                        channel.as_str(),
                        &join.user_id,
                        &join.user_info,
                    ));
                    for other in &ch.subscribers {
                        other.outbox.push(Outgoing::Frame(frame.clone()));
                    }
                }
                Joined::AnotherConnection => {}
            }
            ch.presence_users.insert(sub.conn, join.user_id);
            presence_frame = Some(frames::presence_subscription_succeeded(
                channel.as_str(),
                &ch.roster.snapshot(),
            ));
        }
        ch.subscribers.push(sub);
        drop(ch);
        drop(map);
        if occupied {
            self.notify(app, ChannelEvent::Occupied(channel.clone()));
        }
        if let Some(user) = added_user {
            self.notify(app, ChannelEvent::MemberAdded(channel.clone(), user));
        }
        metrics::gauge!("crier_subscriptions").increment(1.0);
        Ok(presence_frame)
    }

    /// Removes a connection's subscription; on presence channels announces
    /// `member_removed` when it was the user's last connection. Returns whether `conn`
    /// was subscribed.
    pub fn unsubscribe(&self, app: &Arc<str>, channel: &ChannelName, conn: ConnId) -> bool {
        let Some(entry) = self.channel(app, channel) else {
            return false;
        };
        let mut member_removed = None;
        let mut vacated = false;
        let now_empty = {
            let mut ch = entry.lock();
            let before = ch.subscribers.len();
            ch.subscribers.retain(|s| s.conn != conn);
            if ch.subscribers.len() == before {
                return false;
            }
            metrics::gauge!("crier_subscriptions").decrement(1.0);
            if let Some(user) = ch.presence_users.remove(&conn) {
                if ch.roster.leave(&user) {
                    let frame = Bytes::from(frames::member_removed(channel.as_str(), &user));
                    for other in &ch.subscribers {
                        other.outbox.push(Outgoing::Frame(frame.clone()));
                    }
                    member_removed = Some(user);
                }
            }
            ch.subscribers.is_empty() && ch.roster.is_empty()
        };
        if now_empty {
            let mut map = self.shard(app, channel).write();
            let key = (app.clone(), channel.clone());
            let still_empty = map
                .get(&key)
                .is_some_and(|c| Arc::ptr_eq(c, &entry) && c.lock().is_unused());
            if still_empty {
                map.remove(&key);
                vacated = true;
            }
        }
        if let Some(user) = member_removed {
            self.notify(app, ChannelEvent::MemberRemoved(channel.clone(), user));
        }
        if vacated {
            self.notify(app, ChannelEvent::Vacated(channel.clone()));
        }
        true
    }

    /// Joins a presence roster without receiving messages: a long-poll client's
    /// membership lives between its requests, held by a lease under `holder`.
    ///
    /// # Errors
    /// `PresenceFull` when a new user would exceed the channel's member limit.
    pub fn join_member(
        &self,
        app: &Arc<str>,
        channel: &ChannelName,
        holder: ConnId,
        join: PresenceJoin,
    ) -> Result<(), PresenceFull> {
        let mut map = self.shard(app, channel).write();
        let entry = map
            .entry((app.clone(), channel.clone()))
            .or_default()
            .clone();
        let mut ch = entry.lock();
        let occupied = ch.is_unused();
        let added = match ch
            .roster
            .join(&join.user_id, join.user_info.clone(), join.max_members)
        {
            Joined::Full => {
                let unused = ch.is_unused();
                drop(ch);
                if unused {
                    map.remove(&(app.clone(), channel.clone()));
                }
                return Err(PresenceFull);
            }
            Joined::NewMember => {
                ch.announce(&Bytes::from(frames::member_added(
                    channel.as_str(),
                    &join.user_id,
                    &join.user_info,
                )));
                true
            }
            Joined::AnotherConnection => false,
        };
        ch.presence_users.insert(holder, join.user_id.clone());
        drop(ch);
        drop(map);
        if occupied {
            self.notify(app, ChannelEvent::Occupied(channel.clone()));
        }
        if added {
            self.notify(
                app,
                ChannelEvent::MemberAdded(channel.clone(), join.user_id),
            );
        }
        Ok(())
    }

    /// Ends a membership taken with [`Hub::join_member`].
    pub fn leave_member(&self, app: &Arc<str>, channel: &ChannelName, holder: ConnId) {
        let Some(entry) = self.channel(app, channel) else {
            return;
        };
        let (left, unused) = {
            let mut ch = entry.lock();
            let Some(user) = ch.presence_users.remove(&holder) else {
                return;
            };
            let left = ch.roster.leave(&user);
            if left {
                ch.announce(&Bytes::from(frames::member_removed(
                    channel.as_str(),
                    &user,
                )));
            }
            (left.then_some(user), ch.is_unused())
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
        if let Some(user) = &left {
            self.notify(
                app,
                ChannelEvent::MemberRemoved(channel.clone(), user.clone()),
            );
        }
        if vacated {
            self.notify(app, ChannelEvent::Vacated(channel.clone()));
        }
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
        reason: &crate::outbox::Disconnect,
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

    /// Stats for one channel, or None when nobody is subscribed here.
    pub fn channel_stats(&self, app: &str, channel: &ChannelName) -> Option<ChannelStats> {
        let entry = self.channel(app, channel)?;
        let ch = entry.lock();
        Some(ChannelStats {
            channel: channel.clone(),
            subscription_count: ch.subscribers.len(),
            user_count: ch.roster.len(),
        })
    }

    /// Stats of every occupied channel of an app whose name starts with `prefix`.
    pub fn channels(&self, app: &str, prefix: &str) -> Vec<ChannelStats> {
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
                    out.push(ChannelStats {
                        channel,
                        subscription_count: ch.subscribers.len(),
                        user_count: ch.roster.len(),
                    });
                }
            }
        }
        out.sort_by(|a, b| a.channel.cmp(&b.channel));
        out
    }

    /// User ids present on a presence channel.
    /// Whether `user_id` could join the presence channel now: lets a request with
    /// several channels be refused before it joins any of them. A join racing this
    /// check can still fill the channel; `subscribe` then refuses as usual.
    pub fn presence_has_room(
        &self,
        app: &str,
        channel: &ChannelName,
        user_id: &str,
        max: usize,
    ) -> bool {
        match self.channel(app, channel) {
            Some(entry) => entry.lock().roster.has_room_for(user_id, max),
            None => max > 0,
        }
    }

    pub fn members(&self, app: &str, channel: &ChannelName) -> Vec<String> {
        let Some(entry) = self.channel(app, channel) else {
            return Vec::new();
        };
        let ch = entry.lock();
        let mut ids: Vec<String> = ch.roster.user_ids().map(str::to_owned).collect();
        ids.sort_unstable();
        ids
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
    use serde_json::json;

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

    #[tokio::test]
    async fn presence_announces_users_once() {
        let hub = Hub::new();
        let app: Arc<str> = Arc::from("a");
        let ch = ChannelName::parse("presence-r").unwrap();
        let join = |u: &str| {
            Some(PresenceJoin {
                user_id: Arc::from(u),
                user_info: json!({}),
                max_members: 10,
            })
        };
        let (s1, mut r1) = sub(1);
        let (s2, _r2) = sub(2);
        let (s3, _r3) = sub(3);
        hub.subscribe(&app, &ch, s1, join("u1")).unwrap();
        let f = hub.subscribe(&app, &ch, s2, join("u2")).unwrap();
        assert!(f.unwrap().contains(r#"\"count\":2"#));
        assert!(frame(&mut r1).await.contains("member_added"));
        hub.subscribe(&app, &ch, s3, join("u2")).unwrap();
        assert!(r1.try_next().is_none(), "a second tab is not a new member");
        assert!(hub.unsubscribe(&app, &ch, 2));
        assert!(r1.try_next().is_none(), "u2 is still there through conn 3");
        assert!(hub.unsubscribe(&app, &ch, 3));
        assert!(frame(&mut r1).await.contains("member_removed"));
        assert!(hub.unsubscribe(&app, &ch, 1));
        assert!(!hub.unsubscribe(&app, &ch, 1));
        assert!(hub.channels("a", "").is_empty());
    }

    #[tokio::test]
    async fn broadcast_skips_the_sender() {
        let hub = Hub::new();
        let app: Arc<str> = Arc::from("a");
        let ch = ChannelName::parse("private-x").unwrap();
        let (s1, mut r1) = sub(1);
        let (s2, mut r2) = sub(2);
        hub.subscribe(&app, &ch, s1, None).unwrap();
        hub.subscribe(&app, &ch, s2, None).unwrap();
        hub.broadcast("a", &ch, Bytes::from_static(b"hi"), Some("1.1"));
        assert_eq!(frame(&mut r2).await, "hi");
        assert!(r1.try_next().is_none());
    }
}
