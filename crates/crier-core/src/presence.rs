//! Presence: who is on each presence channel. Members are users, not connections: a
//! user who joins from a second tab is not announced again, and leaves only when the
//! last tab goes. [`Presence`] is where that is decided, once for the whole cluster;
//! the node announces what it decides.

pub mod memory;

#[cfg(test)]
mod conformance;

use async_trait::async_trait;
use crier_protocol::frames::PresenceData;
use crier_protocol::ChannelName;
use std::collections::HashMap;
use std::sync::Arc;

pub use memory::MemoryPresence;

/// The members of presence channels, across the cluster. A membership is held by a
/// `holder`: the socket id of the connection (unique across nodes), or of a long-poll
/// client's lease between its requests.
///
/// A backend that cannot be reached makes `join` fail and the queries answer with
/// what they have (empty); a `leave` that cannot be made is made by whoever removes
/// the memberships of a node that stopped.
#[async_trait]
pub trait Presence: Send + Sync + 'static {
    /// Adds `holder` as a connection of `member.user_id`, unless that would make the
    /// channel exceed `member.max_members` users. [`Joined::NewMember`] is returned to
    /// exactly one holder per user and arrival, whichever node it is on.
    ///
    /// # Errors
    /// The presence backend is unreachable; nothing was joined.
    async fn join(
        &self,
        app: &Arc<str>,
        channel: &ChannelName,
        holder: &Arc<str>,
        member: &PresenceJoin,
    ) -> Result<Joined, PresenceError>;

    /// Ends `holder`'s membership; returns the user when it was the user's last holder
    /// (announce `member_removed`), `None` otherwise or when `holder` held none.
    async fn leave(&self, app: &str, channel: &ChannelName, holder: &str) -> Option<Arc<str>>;

    /// The members (user id and info), sorted by user id.
    async fn members(&self, app: &str, channel: &ChannelName)
        -> Vec<(Arc<str>, serde_json::Value)>;

    /// How many users are on the channel.
    async fn user_count(&self, app: &str, channel: &ChannelName) -> usize;

    /// Whether `join` would admit `user_id` now (a member already, or room for one
    /// more). A join racing this check can still find the channel full.
    async fn has_room(
        &self,
        app: &str,
        channel: &ChannelName,
        user_id: &str,
        max_members: usize,
    ) -> bool;
}

/// The presence backend could not be reached.
#[derive(Debug, thiserror::Error)]
#[error("presence unavailable: {0}")]
pub struct PresenceError(pub String);

/// Presence data for a subscription.
pub struct PresenceJoin {
    pub user_id: Arc<str>,
    pub user_info: serde_json::Value,
    pub max_members: usize,
}

/// The channel is full of presence members.
#[derive(Debug, PartialEq, Eq)]
pub struct PresenceFull;

/// Pusher's `presence` object for `subscription_succeeded`, from sorted members.
pub fn presence_data(members: &[(Arc<str>, serde_json::Value)]) -> PresenceData<'_> {
    PresenceData {
        ids: members.iter().map(|(id, _)| &**id).collect(),
        hash: members
            .iter()
            .map(|(id, info)| (id.to_string(), info.clone()))
            .collect(),
        count: members.len(),
    }
}

#[derive(Debug)]
struct Member {
    info: serde_json::Value,
    connections: u32,
}

/// Who is on one presence channel.
#[derive(Debug, Default)]
pub(crate) struct Roster {
    members: HashMap<Arc<str>, Member>,
}

/// The outcome of a join.
#[derive(Debug, PartialEq, Eq)]
pub enum Joined {
    /// First connection of this user: announce `member_added`.
    NewMember,
    /// The user was already present through another connection.
    AnotherConnection,
    /// The channel is full.
    Full,
}

impl Roster {
    pub(crate) fn join(
        &mut self,
        user_id: &Arc<str>,
        info: serde_json::Value,
        max: usize,
    ) -> Joined {
        if let Some(member) = self.members.get_mut(user_id) {
            member.connections += 1;
            return Joined::AnotherConnection;
        }
        if self.members.len() >= max {
            return Joined::Full;
        }
        self.members.insert(
            user_id.clone(),
            Member {
                info,
                connections: 1,
            },
        );
        Joined::NewMember
    }

    /// Returns true when this was the user's last connection (announce `member_removed`).
    pub(crate) fn leave(&mut self, user_id: &str) -> bool {
        match self.members.get_mut(user_id) {
            Some(member) if member.connections > 1 => {
                member.connections -= 1;
                false
            }
            Some(_) => {
                self.members.remove(user_id);
                true
            }
            None => false,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether `join` would admit `user_id` (a member already, or room for one more).
    pub(crate) fn has_room_for(&self, user_id: &str, max: usize) -> bool {
        self.members.contains_key(user_id) || self.members.len() < max
    }

    /// Members sorted by user id.
    pub(crate) fn members(&self) -> Vec<(Arc<str>, serde_json::Value)> {
        let mut out: Vec<_> = self
            .members
            .iter()
            .map(|(id, m)| (id.clone(), m.info.clone()))
            .collect();
        out.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn members_are_users_not_connections() {
        let mut r = Roster::default();
        let u1: Arc<str> = Arc::from("1");
        let u2: Arc<str> = Arc::from("2");
        assert_eq!(r.join(&u1, json!({}), 10), Joined::NewMember);
        assert_eq!(r.join(&u1, json!({}), 10), Joined::AnotherConnection);
        assert_eq!(r.join(&u2, json!({"n": 2}), 10), Joined::NewMember);
        assert_eq!(r.len(), 2);
        assert!(!r.leave("1"));
        assert!(r.leave("1"));
        assert!(!r.leave("1"));
        let ids: Vec<_> = r.members().into_iter().map(|(id, _)| id).collect();
        assert_eq!(ids, [Arc::from("2")]);
    }

    #[test]
    fn full_channels_refuse_new_users_only() {
        let mut r = Roster::default();
        let u1: Arc<str> = Arc::from("1");
        assert_eq!(r.join(&u1, json!({}), 1), Joined::NewMember);
        assert_eq!(r.join(&Arc::from("2"), json!({}), 1), Joined::Full);
        assert_eq!(r.join(&u1, json!({}), 1), Joined::AnotherConnection);
    }
}
