//! Key and pub/sub channel names. Every key of one Pusher channel shares the hash tag
//! `{<app>:<channel>}`, so a publish touches one hash slot of a Redis Cluster and its
//! Lua script may read and write all of them; the channel's messages travel on a pub/sub
//! channel with the same tag, so sharded pub/sub serves it from the same shard.

use crier_protocol::ChannelName;

#[derive(Clone, Debug)]
pub(crate) struct Keys {
    prefix: String,
}

impl Keys {
    pub(crate) fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
        }
    }

    /// The pub/sub channel of a Pusher channel; also the stem of its keys.
    pub(crate) fn topic(&self, app: &str, channel: &ChannelName) -> String {
        format!("{}:{{{app}:{}}}", self.prefix, channel.as_str())
    }

    /// Hash: `epoch` and `seq` (the last offset given) of a channel.
    pub(crate) fn meta(&self, app: &str, channel: &ChannelName) -> String {
        format!("{}:m", self.topic(app, channel))
    }

    /// Sorted set of a channel's retained messages, scored by offset.
    pub(crate) fn history(&self, app: &str, channel: &ChannelName) -> String {
        format!("{}:h", self.topic(app, channel))
    }

    /// Presence: holder (socket id) to user id.
    pub(crate) fn holders(&self, app: &str, channel: &ChannelName) -> String {
        format!("{}:p", self.topic(app, channel))
    }

    /// Presence: user id to the number of holders.
    pub(crate) fn users(&self, app: &str, channel: &ChannelName) -> String {
        format!("{}:u", self.topic(app, channel))
    }

    /// Presence: user id to user info (JSON).
    pub(crate) fn infos(&self, app: &str, channel: &ChannelName) -> String {
        format!("{}:i", self.topic(app, channel))
    }

    fn app_tag(&self, app: &str) -> String {
        format!("{}:{{app:{app}}}", self.prefix)
    }

    /// Hash: channel to its subscriptions in the cluster.
    pub(crate) fn subscriptions(&self, app: &str) -> String {
        format!("{}:subs", self.app_tag(app))
    }

    /// Hash: channel to subscriptions plus presence holds in the cluster (occupancy).
    pub(crate) fn occupancy(&self, app: &str) -> String {
        format!("{}:occ", self.app_tag(app))
    }

    /// Hash: what one node contributes to the two above (`s:<channel>`, `h:<channel>`).
    pub(crate) fn node_counts(&self, app: &str, node: &str) -> String {
        format!("{}:node:{node}", self.app_tag(app))
    }

    /// Hash: node to its open connections of the app.
    pub(crate) fn connections(&self, app: &str) -> String {
        format!("{}:conns", self.app_tag(app))
    }

    /// Sorted set: node to its last heartbeat (Unix ms).
    pub(crate) fn nodes(&self) -> String {
        format!("{}:{{nodes}}", self.prefix)
    }

    /// Set of one node's presence holders, `<app>\n<channel>\n<holder>`, for removing
    /// them when the node stops.
    pub(crate) fn node_holders(&self, node: &str) -> String {
        format!("{}:{{node:{node}}}:holders", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_channels_keys_share_its_topics_hash_tag() {
        let k = Keys::new("crier");
        let c = ChannelName::parse("private-orders").unwrap();
        let topic = k.topic("1", &c);
        assert_eq!(topic, "crier:{1:private-orders}");
        assert!(k.meta("1", &c).starts_with(&topic));
        assert!(k.history("1", &c).starts_with(&topic));
        assert!(k.holders("1", &c).starts_with(&topic));
    }
}
