//! The node's standing in the cluster: its heartbeat, its share of channel counts and
//! presence (put back whenever Redis may have lost them), its connection counts for
//! the apps' quotas, and the removal of nodes that stopped heartbeating.

use super::broker::{Announcer, FrameQueue};
use super::codec;
use super::dispatch::Control;
use super::presence::{holder_entry, RedisPresence};
use super::scripts;
use super::Shared;
use crate::app::App;
use crate::events::ChannelEvent;
use crate::message::now_ms;
use crate::presence::Joined;
use bytes::Bytes;
use crier_protocol::{frames, ChannelName};
use parking_lot::Mutex;
use redis::AsyncCommands;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc::UnboundedSender;

/// This node's subscriptions and presence holds per channel: the truth its share in
/// Redis is put back to.
#[derive(Default)]
pub(crate) struct LocalShares(Mutex<HashMap<ShareKey, (i64, i64)>>);

/// App and channel.
type ShareKey = (Arc<str>, ChannelName);

impl LocalShares {
    pub(crate) fn add(&self, app: &Arc<str>, channel: &ChannelName, subs: i64, holds: i64) {
        let mut map = self.0.lock();
        let key = (app.clone(), channel.clone());
        let entry = map.entry(key.clone()).or_default();
        entry.0 += subs;
        entry.1 += holds;
        if entry.0 <= 0 && entry.1 <= 0 {
            map.remove(&key);
        }
    }

    /// The app's share as the fields of its node hash (`s:<channel>`, `h:<channel>`).
    fn fields(&self, app: &str) -> Vec<(String, i64)> {
        let map = self.0.lock();
        let mut out = Vec::new();
        for ((a, channel), (subs, holds)) in map.iter() {
            if **a != *app {
                continue;
            }
            if *subs > 0 {
                out.push((format!("s:{}", channel.as_str()), *subs));
            }
            if *holds > 0 {
                out.push((format!("h:{}", channel.as_str()), *holds));
            }
        }
        out
    }
}

pub(crate) struct Heartbeat {
    pub shared: Arc<Shared>,
    pub apps: Vec<Arc<App>>,
    pub shares: Arc<LocalShares>,
    pub presence: RedisPresence,
    pub announcer: Announcer,
    pub frames: FrameQueue,
    pub elsewhere: Arc<HashMap<Arc<str>, AtomicU64>>,
    pub catch_up: UnboundedSender<Control>,
    pub link_dropped: Arc<AtomicBool>,
    pub every: Duration,
    pub node_timeout: Duration,
}

impl Heartbeat {
    pub(crate) async fn run(self: Arc<Self>) {
        let mut tick = tokio::time::interval(self.every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut first = true;
        loop {
            tick.tick().await;
            if let Err(e) = self.beat(&mut first).await {
                self.shared.failed("heartbeat", &e);
            }
        }
    }

    async fn beat(&self, first: &mut bool) -> Result<(), redis::RedisError> {
        let shared = &self.shared;
        let keys = &shared.keys;
        let mut conn = shared.commands();
        redis::cmd("PING").query_async::<()>(&mut conn).await?;
        let mut subscriber = shared.subscriber.clone();
        redis::cmd("PING")
            .query_async::<()>(&mut subscriber)
            .await?;
        if !shared.healthy.swap(true, Ordering::AcqRel) {
            tracing::info!("redis reachable again; catching subscribers up");
            self.link_dropped.store(true, Ordering::Release);
            shared.resync.store(true, Ordering::Release);
        }
        let now = now_ms();
        let added: i64 = conn.zadd(keys.nodes(), &shared.node_id, now).await?;
        if added == 1 && !*first {
            // The others removed this node (it was away too long), or Redis lost
            // everything: put this node's share back.
            shared.resync.store(true, Ordering::Release);
        }
        *first = false;
        if shared.resync.swap(false, Ordering::AcqRel) {
            if let Err(e) = self.resync().await {
                shared.resync.store(true, Ordering::Release);
                return Err(e);
            }
        }
        if self.link_dropped.swap(false, Ordering::AcqRel) {
            let _ = self.catch_up.send(Control::CatchUp);
        }
        self.share_connections(&mut conn).await?;
        let cutoff = now.saturating_sub(self.node_timeout.as_millis() as u64);
        let stopped: Vec<String> = conn
            .zrangebyscore(keys.nodes(), "-inf", format!("({cutoff}"))
            .await?;
        for node in stopped.iter().filter(|n| **n != shared.node_id) {
            // Whoever removes it from the set removes its share: exactly one node.
            let removed: i64 = conn.zrem(keys.nodes(), node).await?;
            if removed == 1 {
                tracing::warn!(%node, "a node stopped heartbeating; removing its members");
                self.remove_node(node, false).await?;
            }
        }
        Ok(())
    }

    /// Files this node's connection counts and reads the others' for each app.
    async fn share_connections(
        &self,
        conn: &mut super::connection::Conn,
    ) -> Result<(), redis::RedisError> {
        let keys = &self.shared.keys;
        for app in &self.apps {
            let key = keys.connections(&app.id);
            conn.hset::<_, _, _, ()>(&key, &self.shared.node_id, app.connection_count())
                .await?;
            let all: HashMap<String, u64> = conn.hgetall(&key).await?;
            let elsewhere: u64 = all
                .iter()
                .filter(|(node, _)| **node != self.shared.node_id)
                .map(|(_, n)| *n)
                .sum();
            if let Some(slot) = self.elsewhere.get(&app.id) {
                slot.store(elsewhere, Ordering::Release);
            }
        }
        Ok(())
    }

    fn app(&self, id: &str) -> Option<&Arc<App>> {
        self.apps.iter().find(|a| &*a.id == id)
    }

    fn announce_shares(&self, app: &Arc<str>, occupied: Vec<String>, vacated: Vec<String>) {
        for (names, change) in [(occupied, 1), (vacated, -1)] {
            for name in names {
                if let Ok(channel) = ChannelName::parse(&name) {
                    self.announcer.occupancy(app, channel, change);
                }
            }
        }
    }

    fn member_added(
        &self,
        app: &Arc<str>,
        channel: &ChannelName,
        user: &Arc<str>,
        info: &serde_json::Value,
    ) {
        let frame = frames::member_added(channel.as_str(), user, info);
        let topic = self.shared.keys.topic(app, channel);
        self.frames
            .send(topic, codec::ephemeral(frame.as_bytes(), None));
        self.announcer.event(
            app,
            ChannelEvent::MemberAdded(channel.clone(), user.clone()),
        );
    }

    /// Announces a departure; `now` publishes it before returning (the node is leaving
    /// and its frame queue will not be drained), else it is queued in order.
    async fn member_removed(
        &self,
        app: &Arc<str>,
        channel: &ChannelName,
        user: Arc<str>,
        now: bool,
    ) -> Result<(), redis::RedisError> {
        let frame = Bytes::from(frames::member_removed(channel.as_str(), &user));
        let topic = self.shared.keys.topic(app, channel);
        let payload = codec::ephemeral(&frame, None);
        self.announcer
            .event(app, ChannelEvent::MemberRemoved(channel.clone(), user));
        if now {
            let mut conn = self.shared.commands();
            redis::cmd(self.shared.commands.publish_command())
                .arg(topic)
                .arg(payload)
                .query_async::<()>(&mut conn)
                .await
        } else {
            self.frames.send(topic, payload);
            Ok(())
        }
    }

    /// Puts this node's counts and presence in Redis back to what the node holds.
    async fn resync(&self) -> Result<(), redis::RedisError> {
        let shared = &self.shared;
        let keys = &shared.keys;
        let mut conn = shared.commands();
        for app in &self.apps {
            let mut invocation = scripts::REPLACE_SHARE.prepare_invoke();
            invocation
                .key(keys.subscriptions(&app.id))
                .key(keys.occupancy(&app.id))
                .key(keys.node_counts(&app.id, &shared.node_id));
            for (field, count) in self.shares.fields(&app.id) {
                invocation.arg(field).arg(count);
            }
            let (occupied, vacated): (Vec<String>, Vec<String>) =
                invocation.invoke_async(&mut conn).await?;
            self.announce_shares(&app.id, occupied, vacated);
        }
        let listed: HashSet<String> = conn.smembers(keys.node_holders(&shared.node_id)).await?;
        let held = self.presence.held();
        let mut kept = HashSet::new();
        for ((app, channel, holder), member) in held {
            kept.insert(holder_entry(&app, &channel, &holder));
            let joined = self
                .presence
                .join_in_redis(&app, &channel, &holder, &member)
                .await?;
            if joined == Joined::NewMember {
                self.member_added(&app, &channel, &member.user_id, &member.user_info);
            }
        }
        for entry in listed.difference(&kept) {
            self.remove_holder(&shared.node_id, entry, false).await?;
        }
        tracing::info!("this node's channel counts and presence are back in redis");
        Ok(())
    }

    /// Removes one holder entry (`<app>\n<channel>\n<holder>`) of `node`; `now` as in
    /// [`Self::member_removed`].
    async fn remove_holder(
        &self,
        node: &str,
        entry: &str,
        now: bool,
    ) -> Result<(), redis::RedisError> {
        let mut parts = entry.splitn(3, '\n');
        let (Some(app), Some(channel), Some(holder)) = (parts.next(), parts.next(), parts.next())
        else {
            return Ok(());
        };
        let (Some(app), Ok(channel)) = (self.app(app), ChannelName::parse(channel)) else {
            return Ok(());
        };
        let app = app.id.clone();
        if let Some(user) = self
            .presence
            .leave_in_redis(node, &app, &channel, holder)
            .await?
        {
            self.member_removed(&app, &channel, user, now).await?;
        }
        Ok(())
    }

    /// Leaves the cluster on a clean shutdown: the node's members and counts go at once
    /// (announced as for a stopped node) instead of after the node timeout.
    pub(crate) async fn leave(&self) -> Result<(), redis::RedisError> {
        let mut conn = self.shared.commands();
        conn.zrem::<_, _, ()>(self.shared.keys.nodes(), &self.shared.node_id)
            .await?;
        self.remove_node(&self.shared.node_id, true).await
    }

    /// Removes a stopped node's share: its counts (vacating what only it held), its
    /// connections, and its presence members, announced as they leave.
    async fn remove_node(&self, node: &str, now: bool) -> Result<(), redis::RedisError> {
        let keys = &self.shared.keys;
        let mut conn = self.shared.commands();
        for app in &self.apps {
            let (occupied, vacated): (Vec<String>, Vec<String>) = scripts::REPLACE_SHARE
                .key(keys.subscriptions(&app.id))
                .key(keys.occupancy(&app.id))
                .key(keys.node_counts(&app.id, node))
                .invoke_async(&mut conn)
                .await?;
            self.announce_shares(&app.id, occupied, vacated);
            conn.hdel::<_, _, ()>(keys.connections(&app.id), node)
                .await?;
        }
        let entries: Vec<String> = conn.smembers(keys.node_holders(node)).await?;
        for entry in &entries {
            self.remove_holder(node, entry, now).await?;
        }
        conn.del::<_, ()>(keys.node_holders(node)).await?;
        Ok(())
    }
}
