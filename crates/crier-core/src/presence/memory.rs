//! Presence kept in this process: one roster per channel, for a node that is the whole
//! cluster.

use super::{Joined, Presence, PresenceError, PresenceJoin, Roster};
use async_trait::async_trait;
use crier_protocol::ChannelName;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;

#[derive(Default)]
struct Channel {
    roster: Roster,
    /// The user of each holder, for `leave`.
    holders: HashMap<Arc<str>, Arc<str>>,
}

/// One lock for every channel: joins and leaves are per subscription, not per message,
/// and each holds it for a few map operations.
#[derive(Default)]
pub struct MemoryPresence {
    channels: Mutex<HashMap<(Arc<str>, ChannelName), Channel>>,
}

impl MemoryPresence {
    fn with<T>(
        &self,
        app: &str,
        channel: &ChannelName,
        f: impl FnOnce(&Channel) -> T,
    ) -> Option<T> {
        let channels = self.channels.lock();
        channels.get(&(Arc::from(app), channel.clone())).map(f)
    }
}

#[async_trait]
impl Presence for MemoryPresence {
    async fn join(
        &self,
        app: &Arc<str>,
        channel: &ChannelName,
        holder: &Arc<str>,
        member: &PresenceJoin,
    ) -> Result<Joined, PresenceError> {
        let mut channels = self.channels.lock();
        let key = (app.clone(), channel.clone());
        let entry = channels.entry(key.clone()).or_default();
        if entry.holders.contains_key(holder) {
            return Ok(Joined::AnotherConnection);
        }
        let joined = entry.roster.join(
            &member.user_id,
            member.user_info.clone(),
            member.max_members,
        );
        if joined == Joined::Full {
            if entry.holders.is_empty() {
                channels.remove(&key);
            }
        } else {
            entry.holders.insert(holder.clone(), member.user_id.clone());
        }
        Ok(joined)
    }

    async fn leave(&self, app: &str, channel: &ChannelName, holder: &str) -> Option<Arc<str>> {
        let mut channels = self.channels.lock();
        let key = (Arc::from(app), channel.clone());
        let entry = channels.get_mut(&key)?;
        let user = entry.holders.remove(holder)?;
        let left = entry.roster.leave(&user);
        if entry.holders.is_empty() {
            channels.remove(&key);
        }
        left.then_some(user)
    }

    async fn members(
        &self,
        app: &str,
        channel: &ChannelName,
    ) -> Vec<(Arc<str>, serde_json::Value)> {
        self.with(app, channel, |c| c.roster.members())
            .unwrap_or_default()
    }

    async fn user_count(&self, app: &str, channel: &ChannelName) -> usize {
        self.with(app, channel, |c| c.roster.len()).unwrap_or(0)
    }

    async fn has_room(
        &self,
        app: &str,
        channel: &ChannelName,
        user_id: &str,
        max_members: usize,
    ) -> bool {
        self.with(app, channel, |c| {
            c.roster.has_room_for(user_id, max_members)
        })
        .unwrap_or(max_members > 0)
    }
}
