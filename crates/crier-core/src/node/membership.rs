//! Joining and leaving channels: local subscription, the broker's interest and the
//! cluster's occupancy, presence membership, and the events each of them announces.

use super::{ChannelStats, Node, SubscribeError};
use crate::broker::{Broker, BrokerError};
use crate::events::{ChannelEvent, ChannelObserver};
use crate::hub::{ConnId, Subscriber};
use crate::presence::{self, Joined, PresenceJoin};
use bytes::Bytes;
use crier_protocol::{frames, ChannelKind, ChannelName};
use std::future::Future;
use std::sync::Arc;

impl Node {
    /// Registers a connection for a channel's live messages (and, with `presence`, as
    /// a member); returns the presence `subscription_succeeded` frame. Call it before
    /// reading the channel's history: whatever the read misses is then delivered live.
    ///
    /// # Errors
    /// A new user would exceed the presence channel's member limit, or the broker or
    /// presence cannot be reached.
    pub async fn subscribe(
        &self,
        app: &Arc<str>,
        channel: &ChannelName,
        sub: Subscriber,
        presence: Option<PresenceJoin>,
    ) -> Result<Option<String>, SubscribeError> {
        // Interest first: from the moment the hub lists the subscriber, the broker
        // delivers what it should see.
        self.broker.subscribe(app, channel).await?;
        let Some(join) = presence else {
            self.hub.subscribe(app, channel, sub);
            return Ok(None);
        };
        let joined = match self
            .presence
            .join(app, channel, &sub.socket_id, &join)
            .await
        {
            Ok(Joined::Full) => Err(SubscribeError::PresenceFull),
            Ok(joined) => Ok(joined),
            Err(e) => Err(SubscribeError::Presence(e)),
        };
        let joined = match joined {
            Ok(joined) => joined,
            Err(e) => {
                self.broker.unsubscribe(app, channel);
                return Err(e);
            }
        };
        let socket_id = sub.socket_id.clone();
        self.hub.subscribe(app, channel, sub);
        if joined == Joined::NewMember {
            self.member_added(app, channel, &join, Some(&socket_id));
        }
        // Read after joining the hub: a member who arrives later is announced to us,
        // one who arrived earlier is in the list.
        let members = self.presence.members(app, channel).await;
        Ok(Some(frames::presence_subscription_succeeded(
            channel.as_str(),
            &presence::presence_data(&members),
        )))
    }

    /// Ends a connection's subscription (and its presence membership, if any).
    pub fn unsubscribe(&self, app: &Arc<str>, channel: &ChannelName, conn: ConnId) {
        let Some(sub) = self.hub.unsubscribe(app, channel, conn) else {
            return;
        };
        self.broker.unsubscribe(app, channel);
        if channel.kind() == ChannelKind::Presence {
            self.leave_presence(app, channel, sub.socket_id);
        }
    }

    /// Joins a presence channel without receiving its messages (a long-poll client
    /// between requests) under the socket id `holder`, until [`Node::leave_member`].
    ///
    /// # Errors
    /// `PresenceFull` when a new user would exceed the channel's member limit, or
    /// presence cannot be reached.
    pub async fn join_member(
        &self,
        app: &Arc<str>,
        channel: &ChannelName,
        holder: &Arc<str>,
        join: PresenceJoin,
    ) -> Result<(), SubscribeError> {
        let joined = self.presence.join(app, channel, holder, &join).await?;
        if joined == Joined::Full {
            return Err(SubscribeError::PresenceFull);
        }
        self.broker.hold(app, channel);
        if joined == Joined::NewMember {
            self.member_added(app, channel, &join, None);
        }
        Ok(())
    }

    /// Ends a membership taken with [`Node::join_member`].
    pub fn leave_member(&self, app: &Arc<str>, channel: &ChannelName, holder: &str) {
        self.leave_presence(app, channel, Arc::from(holder));
        self.broker.release(app, channel);
    }

    /// Ends `holder`'s membership and announces the member's departure if it was their
    /// last. This runs where connections end, which cannot wait: a presence that
    /// answers at once (in memory) is handled inline, one that must ask its backend
    /// in a task.
    fn leave_presence(&self, app: &Arc<str>, channel: &ChannelName, holder: Arc<str>) {
        let announce = Announce {
            broker: self.broker.clone(),
            observer: self.observer.clone(),
        };
        let presence = self.presence.clone();
        let (app, channel) = (app.clone(), channel.clone());
        let leave = async move {
            if let Some(user) = presence.leave(&app, &channel, &holder).await {
                announce.member_removed(&app, &channel, user);
            }
        };
        let mut leave = Box::pin(leave);
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        if leave.as_mut().poll(&mut cx).is_pending() {
            match tokio::runtime::Handle::try_current() {
                Ok(runtime) => {
                    runtime.spawn(leave);
                }
                Err(_) => tracing::warn!("presence leave dropped: no runtime to run it on"),
            }
        }
    }

    /// Announces a new member to the channel (but not to its own connection) and to
    /// webhooks.
    fn member_added(
        &self,
        app: &Arc<str>,
        channel: &ChannelName,
        join: &PresenceJoin,
        exclude: Option<&str>,
    ) {
        let frame = frames::member_added(channel.as_str(), &join.user_id, &join.user_info);
        self.broker
            .publish_ephemeral(app, channel, Bytes::from(frame), exclude);
        self.notify(
            app,
            ChannelEvent::MemberAdded(channel.clone(), join.user_id.clone()),
        );
    }

    /// Whether `user_id` could join the presence channel now: lets a request with
    /// several channels be refused before it joins any of them.
    pub async fn presence_has_room(
        &self,
        app: &str,
        channel: &ChannelName,
        user_id: &str,
        max: usize,
    ) -> bool {
        self.presence.has_room(app, channel, user_id, max).await
    }

    /// User ids on a presence channel, sorted.
    pub async fn members(&self, app: &str, channel: &ChannelName) -> Vec<String> {
        self.presence
            .members(app, channel)
            .await
            .into_iter()
            .map(|(id, _)| id.to_string())
            .collect()
    }

    async fn stats(&self, app: &str, channel: ChannelName, subscriptions: usize) -> ChannelStats {
        let user_count = if channel.kind() == ChannelKind::Presence {
            self.presence.user_count(app, &channel).await
        } else {
            0
        };
        ChannelStats {
            channel,
            subscription_count: subscriptions,
            user_count,
        }
    }

    /// Counts of one channel in the cluster, or `None` when it is not occupied.
    ///
    /// # Errors
    /// The broker cannot be reached.
    pub async fn channel_stats(
        &self,
        app: &str,
        channel: &ChannelName,
    ) -> Result<Option<ChannelStats>, BrokerError> {
        let Some(subscriptions) = self.broker.subscription_count(app, channel).await? else {
            return Ok(None);
        };
        Ok(Some(self.stats(app, channel.clone(), subscriptions).await))
    }

    /// Counts of every occupied channel of an app whose name starts with `prefix`.
    ///
    /// # Errors
    /// The broker cannot be reached.
    pub async fn channels(
        &self,
        app: &str,
        prefix: &str,
    ) -> Result<Vec<ChannelStats>, BrokerError> {
        let mut out = Vec::new();
        for (channel, subscriptions) in self.broker.channels(app, prefix).await? {
            out.push(self.stats(app, channel, subscriptions).await);
        }
        Ok(out)
    }
}

/// What announces a member's departure, detached from the node so that a leave
/// finished in a task can announce it.
struct Announce {
    broker: Arc<dyn Broker>,
    observer: Option<Arc<dyn ChannelObserver>>,
}

impl Announce {
    fn member_removed(&self, app: &Arc<str>, channel: &ChannelName, user: Arc<str>) {
        let frame = frames::member_removed(channel.as_str(), &user);
        self.broker
            .publish_ephemeral(app, channel, Bytes::from(frame), None);
        if let Some(o) = &self.observer {
            o.on_event(app, ChannelEvent::MemberRemoved(channel.clone(), user));
        }
    }
}
