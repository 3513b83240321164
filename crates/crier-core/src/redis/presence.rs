//! Presence kept in Redis, for the whole cluster: per channel, holders (socket ids) to
//! users, users to their number of holders, users to their info. A join or leave is
//! one script, so exactly one holder in the cluster sees a user arrive or go. Each
//! node files its holders under its id, so that when it stops the others remove them.

use super::scripts;
use super::Shared;
use crate::presence::{Joined, Presence, PresenceError, PresenceJoin};
use async_trait::async_trait;
use crier_protocol::ChannelName;
use parking_lot::Mutex;
use redis::AsyncCommands;
use std::collections::HashMap;
use std::sync::Arc;

/// A membership this node holds, as joined (to join again after Redis lost it).
#[derive(Clone)]
pub(crate) struct Held {
    pub user_id: Arc<str>,
    pub user_info: serde_json::Value,
    pub max_members: usize,
}

pub(crate) type HeldKey = (Arc<str>, ChannelName, Arc<str>);

#[derive(Clone)]
pub struct RedisPresence {
    shared: Arc<Shared>,
    held: Arc<Mutex<HashMap<HeldKey, Held>>>,
}

/// The entry of the node's holder set: `<app>\n<channel>\n<holder>`.
pub(crate) fn holder_entry(app: &str, channel: &ChannelName, holder: &str) -> String {
    format!("{app}\n{}\n{holder}", channel.as_str())
}

impl RedisPresence {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self {
            shared,
            held: Arc::default(),
        }
    }

    /// The memberships this node holds.
    pub(crate) fn held(&self) -> Vec<(HeldKey, Held)> {
        self.held
            .lock()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// Runs the join script; `Joined` as the cluster decides it.
    pub(crate) async fn join_in_redis(
        &self,
        app: &str,
        channel: &ChannelName,
        holder: &str,
        member: &Held,
    ) -> Result<Joined, redis::RedisError> {
        let keys = &self.shared.keys;
        let mut conn = self.shared.commands();
        let info = serde_json::to_string(&member.user_info).unwrap_or_else(|_| "null".into());
        let outcome: i64 = scripts::JOIN
            .key(keys.holders(app, channel))
            .key(keys.users(app, channel))
            .key(keys.infos(app, channel))
            .arg(holder)
            .arg(&*member.user_id)
            .arg(info)
            .arg(member.max_members)
            .invoke_async(&mut conn)
            .await?;
        let joined = match outcome {
            0 => Joined::NewMember,
            1 => Joined::AnotherConnection,
            _ => Joined::Full,
        };
        if joined != Joined::Full {
            conn.sadd::<_, _, ()>(
                keys.node_holders(&self.shared.node_id),
                holder_entry(app, channel, holder),
            )
            .await?;
        }
        Ok(joined)
    }

    /// Runs the leave script for a holder of any node; the user when it was their last.
    pub(crate) async fn leave_in_redis(
        &self,
        node: &str,
        app: &str,
        channel: &ChannelName,
        holder: &str,
    ) -> Result<Option<Arc<str>>, redis::RedisError> {
        let keys = &self.shared.keys;
        let mut conn = self.shared.commands();
        let user: Option<String> = scripts::LEAVE
            .key(keys.holders(app, channel))
            .key(keys.users(app, channel))
            .key(keys.infos(app, channel))
            .arg(holder)
            .invoke_async(&mut conn)
            .await?;
        conn.srem::<_, _, ()>(keys.node_holders(node), holder_entry(app, channel, holder))
            .await?;
        Ok(user.map(Arc::from))
    }
}

#[async_trait]
impl Presence for RedisPresence {
    async fn join(
        &self,
        app: &Arc<str>,
        channel: &ChannelName,
        holder: &Arc<str>,
        member: &PresenceJoin,
    ) -> Result<Joined, PresenceError> {
        let held = Held {
            user_id: member.user_id.clone(),
            user_info: member.user_info.clone(),
            max_members: member.max_members,
        };
        // Filed before the join, so that a heartbeat putting presence back meanwhile
        // keeps it rather than removing it.
        let key = (app.clone(), channel.clone(), holder.clone());
        self.held.lock().insert(key.clone(), held.clone());
        match self.join_in_redis(app, channel, holder, &held).await {
            Ok(Joined::Full) => {
                self.held.lock().remove(&key);
                Ok(Joined::Full)
            }
            Ok(joined) => Ok(joined),
            Err(e) => {
                self.held.lock().remove(&key);
                self.shared.failed("presence join", &e);
                Err(PresenceError(format!("redis: {e}")))
            }
        }
    }

    async fn leave(&self, app: &str, channel: &ChannelName, holder: &str) -> Option<Arc<str>> {
        let key = (Arc::from(app), channel.clone(), Arc::from(holder));
        // Not held here: never joined, or already left.
        self.held.lock().remove(&key)?;
        match self
            .leave_in_redis(&self.shared.node_id, app, channel, holder)
            .await
        {
            Ok(user) => user,
            Err(e) => {
                // Still in Redis: the next heartbeat finds it in the node's holder set
                // and not held, and removes it then.
                self.shared.failed("presence leave", &e);
                None
            }
        }
    }

    async fn members(
        &self,
        app: &str,
        channel: &ChannelName,
    ) -> Vec<(Arc<str>, serde_json::Value)> {
        let mut conn = self.shared.commands();
        let infos: HashMap<String, String> =
            match conn.hgetall(self.shared.keys.infos(app, channel)).await {
                Ok(infos) => infos,
                Err(e) => {
                    self.shared.failed("presence members", &e);
                    return Vec::new();
                }
            };
        let mut out: Vec<(Arc<str>, serde_json::Value)> = infos
            .into_iter()
            .map(|(id, info)| {
                (
                    Arc::from(id),
                    serde_json::from_str(&info).unwrap_or(serde_json::Value::Null),
                )
            })
            .collect();
        out.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        out
    }

    async fn user_count(&self, app: &str, channel: &ChannelName) -> usize {
        let mut conn = self.shared.commands();
        match conn.hlen(self.shared.keys.users(app, channel)).await {
            Ok(n) => n,
            Err(e) => {
                self.shared.failed("presence count", &e);
                0
            }
        }
    }

    async fn has_room(
        &self,
        app: &str,
        channel: &ChannelName,
        user_id: &str,
        max_members: usize,
    ) -> bool {
        let users = self.shared.keys.users(app, channel);
        let mut conn = self.shared.commands();
        let member: Result<bool, _> = conn.hexists(&users, user_id).await;
        let count: Result<usize, _> = conn.hlen(&users).await;
        match (member, count) {
            (Ok(member), Ok(count)) => member || count < max_members,
            // The join itself decides, and fails, when Redis cannot be reached.
            _ => true,
        }
    }
}
