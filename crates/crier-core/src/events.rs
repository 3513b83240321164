//! What happens to channels, as webhooks and metrics hear of it. The node reports each
//! event once: occupancy and membership as decided for the cluster, client events from
//! the sender's node.

use crier_protocol::ChannelName;
use std::sync::Arc;

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

/// Told about channel events as they happen; must not block (it runs on the paths
/// that subscribe and unsubscribe).
pub trait ChannelObserver: Send + Sync + 'static {
    fn on_event(&self, app: &Arc<str>, event: ChannelEvent);
}
