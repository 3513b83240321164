//! Joining and leaving channels: local subscription, the broker's interest and the
//! cluster's occupancy, presence membership, and the events each of them announces.

use super::{ChannelStats, Node, SubscribeError};
use crate::events::ChannelEvent;
use crate::hub::{ConnId, Subscriber};
use crate::presence::{self, Joined, PresenceFull, PresenceJoin};
use bytes::Bytes;
use crier_protocol::{frames, ChannelKind, ChannelName};
use std::sync::Arc;

impl Node {
    /// Registers a connection for a channel's live messages (and, with `presence`, as
    /// a member); returns the presence `subscription_succeeded` frame. Call it before
    /// reading the channel's history: whatever the read misses is then delivered live.
    ///
    /// # Errors
    /// A new user would exceed the presence channel's member limit, or the broker
    /// cannot take the node's interest.
    pub async fn subscribe(
        &self,
        app: &Arc<str>,
        channel: &ChannelName,
        sub: Subscriber,
        presence: Option<PresenceJoin>,
    ) -> Result<Option<String>, SubscribeError> {
        // Interest first: from the moment the hub lists the subscriber, the broker
        // delivers what it should see.
        let occupied = self.broker.subscribe(app, channel).await?;
        let Some(join) = presence else {
            self.hub.subscribe(app, channel, sub);
            if occupied {
                self.notify(app, ChannelEvent::Occupied(channel.clone()));
            }
            return Ok(None);
        };
        let joined = self.presence.join(app, channel, &sub.socket_id, &join);
        if joined == Joined::Full {
            // Occupied and vacated by this refused join cancel out. If others came or
            // went meanwhile, their change went unreported because of ours: report it.
            match (occupied, self.broker.unsubscribe(app, channel)) {
                (true, false) => self.notify(app, ChannelEvent::Occupied(channel.clone())),
                (false, true) => self.notify(app, ChannelEvent::Vacated(channel.clone())),
                _ => {}
            }
            return Err(SubscribeError::PresenceFull);
        }
        let socket_id = sub.socket_id.clone();
        self.hub.subscribe(app, channel, sub);
        if occupied {
            self.notify(app, ChannelEvent::Occupied(channel.clone()));
        }
        if joined == Joined::NewMember {
            self.member_added(app, channel, &join, Some(&socket_id));
        }
        // Read after joining the hub: a member who arrives later is announced to us,
        // one who arrived earlier is in the list.
        let members = self.presence.members(app, channel);
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
        let vacated = self.broker.unsubscribe(app, channel);
        if channel.kind() == ChannelKind::Presence {
            if let Some(user) = self.presence.leave(app, channel, &sub.socket_id) {
                self.member_removed(app, channel, user);
            }
        }
        if vacated {
            self.notify(app, ChannelEvent::Vacated(channel.clone()));
        }
    }

    /// Joins a presence channel without receiving its messages (a long-poll client
    /// between requests) under the socket id `holder`, until [`Node::leave_member`].
    ///
    /// # Errors
    /// `PresenceFull` when a new user would exceed the channel's member limit.
    pub fn join_member(
        &self,
        app: &Arc<str>,
        channel: &ChannelName,
        holder: &Arc<str>,
        join: PresenceJoin,
    ) -> Result<(), PresenceFull> {
        let joined = self.presence.join(app, channel, holder, &join);
        if joined == Joined::Full {
            return Err(PresenceFull);
        }
        if self.broker.hold(app, channel) {
            self.notify(app, ChannelEvent::Occupied(channel.clone()));
        }
        if joined == Joined::NewMember {
            self.member_added(app, channel, &join, None);
        }
        Ok(())
    }

    /// Ends a membership taken with [`Node::join_member`].
    pub fn leave_member(&self, app: &Arc<str>, channel: &ChannelName, holder: &str) {
        let left = self.presence.leave(app, channel, holder);
        let vacated = self.broker.release(app, channel);
        if let Some(user) = left {
            self.member_removed(app, channel, user);
        }
        if vacated {
            self.notify(app, ChannelEvent::Vacated(channel.clone()));
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

    fn member_removed(&self, app: &Arc<str>, channel: &ChannelName, user: Arc<str>) {
        let frame = frames::member_removed(channel.as_str(), &user);
        self.broker
            .publish_ephemeral(app, channel, Bytes::from(frame), None);
        self.notify(app, ChannelEvent::MemberRemoved(channel.clone(), user));
    }

    /// Whether `user_id` could join the presence channel now: lets a request with
    /// several channels be refused before it joins any of them.
    pub fn presence_has_room(
        &self,
        app: &str,
        channel: &ChannelName,
        user_id: &str,
        max: usize,
    ) -> bool {
        self.presence.has_room(app, channel, user_id, max)
    }

    /// User ids on a presence channel, sorted.
    pub fn members(&self, app: &str, channel: &ChannelName) -> Vec<String> {
        self.presence
            .members(app, channel)
            .into_iter()
            .map(|(id, _)| id.to_string())
            .collect()
    }

    fn stats(&self, app: &str, channel: ChannelName, subscriptions: usize) -> ChannelStats {
        let user_count = if channel.kind() == ChannelKind::Presence {
            self.presence.user_count(app, &channel)
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
    pub fn channel_stats(&self, app: &str, channel: &ChannelName) -> Option<ChannelStats> {
        let subscriptions = self.broker.subscription_count(app, channel)?;
        Some(self.stats(app, channel.clone(), subscriptions))
    }

    /// Counts of every occupied channel of an app whose name starts with `prefix`.
    pub fn channels(&self, app: &str, prefix: &str) -> Vec<ChannelStats> {
        self.broker
            .channels(app, prefix)
            .into_iter()
            .map(|(channel, subscriptions)| self.stats(app, channel, subscriptions))
            .collect()
    }
}
