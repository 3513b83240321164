//! Presence membership of one channel: users, not connections. A user who joins from a
//! second tab is not announced again, and leaves only when the last tab goes.

use crier_protocol::frames::PresenceData;
use std::collections::HashMap;
use std::sync::Arc;

#[derive(Debug)]
struct Member {
    info: serde_json::Value,
    connections: u32,
}

/// Who is on a presence channel.
#[derive(Debug, Default)]
pub struct Roster {
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
    pub fn join(&mut self, user_id: &Arc<str>, info: serde_json::Value, max: usize) -> Joined {
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
    pub fn leave(&mut self, user_id: &str) -> bool {
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

    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether `join` would admit `user_id` (a member already, or room for one more).
    pub fn has_room_for(&self, user_id: &str, max: usize) -> bool {
        self.members.contains_key(user_id) || self.members.len() < max
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    pub fn user_ids(&self) -> impl Iterator<Item = &str> {
        self.members.keys().map(|k| &**k)
    }

    /// The member list in Pusher's `presence` format.
    pub fn snapshot(&self) -> PresenceData<'_> {
        let mut ids: Vec<&str> = self.user_ids().collect();
        ids.sort_unstable();
        let hash = self
            .members
            .iter()
            .map(|(id, m)| (id.to_string(), m.info.clone()))
            .collect();
        PresenceData {
            count: ids.len(),
            ids,
            hash,
        }
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
        assert_eq!(r.snapshot().ids, vec!["2"]);
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
