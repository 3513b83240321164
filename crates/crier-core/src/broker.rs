//! The broker is the node's window on the cluster: everything that leaves a node for
//! other subscribers, and everything that reaches this node's subscribers, goes
//! through it. A message published on another node reaches local subscribers by the
//! same path as a local one: the broker hands it to the node's [`Deliver`] (the hub).
//!
//! The memory broker serves a single node: its history assigns ids and, on commit,
//! the broker delivers the batch to the hub. A Redis broker will do the same across
//! nodes, delivering what the node receives from Redis.

pub mod memory;

#[cfg(test)]
mod conformance;

use crate::app::App;
use crate::history::{HistoryError, HistoryStore};
use crate::message::{NewMessage, Published};
use crate::outbox::Disconnect;
use async_trait::async_trait;
use bytes::Bytes;
use crier_protocol::ChannelName;
use std::sync::Arc;

pub use memory::MemoryBroker;

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error(transparent)]
    History(#[from] HistoryError),
    #[error("broker unavailable: {0}")]
    Unavailable(String),
}

/// Why the node cannot take publishes (for `/ready`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unhealthy {
    /// The part that fails: `history` or `broker`.
    pub component: &'static str,
    pub error: String,
}

/// Where a broker hands what reaches this node: the hub's local fan-out. Called on
/// the broker's delivering thread in channel order, so it must not block.
pub trait Deliver: Send + Sync + 'static {
    /// A published message, to every local subscriber of its channel except the
    /// publisher's own connection (`exclude_socket`).
    fn deliver(&self, message: &Arc<Published>);

    /// An ephemeral frame (client event, presence change) to every local subscriber of
    /// `channel` except the socket `exclude`.
    fn deliver_frame(&self, app: &str, channel: &ChannelName, frame: Bytes, exclude: Option<&str>);

    /// Closes every local connection subscribed to `channel`.
    fn close(&self, app: &str, channel: &ChannelName, reason: &Disconnect);
}

/// The contract every broker keeps; [`conformance`] checks it against each one.
///
/// - **Publish** is all or nothing: each message of the batch gets the next id of its
///   channel, is stored in history, and is delivered to every node with interest in
///   its channel, or none of it is (and `publish` fails). There is one order per
///   channel, the id order, and every node delivers in that order.
/// - **Stored before delivered:** a message is in history before any node delivers it.
///   With interest registered (`subscribe` returned) before history is read, a message
///   the read does not return is delivered live: no gap. A message may come both ways;
///   the reader drops the copy by its id.
/// - **Interest** is counted per node: the node receives a channel's messages while it
///   has called `subscribe` for it more times than `unsubscribe`, exactly once each.
/// - **Occupancy** is the cluster's: a channel is occupied while any node subscribes
///   to or holds it. The broker tells its [`crate::events::ChannelObserver`] `Occupied` and `Vacated`
///   once per transition for the whole cluster, so the webhooks fire once. Subscription
///   counts are summed over nodes, and so is each app's connection count that
///   `max_connections` limits.
/// - **Ephemeral** frames (client events, presence changes) are not stored and have no
///   id; they reach every node with interest, except the sending socket, named by its
///   socket id, which is unique across the cluster.
/// - Calls that return nothing (`unsubscribe`, `hold`, `release`, `publish_ephemeral`,
///   `disconnect`) take effect in the order they were made, soon after they return:
///   they are called where a connection ends, which cannot wait for a backend.
#[async_trait]
pub trait Broker: Send + Sync + 'static {
    /// Gives each message its id, stores it, and delivers it (see the contract).
    ///
    /// # Errors
    /// The batch could not be made durable; nothing of it was delivered.
    async fn publish(&self, batch: Vec<NewMessage>) -> Result<Vec<Arc<Published>>, BrokerError>;

    /// Delivers a frame that is not stored to the channel's subscribers on every node,
    /// except the socket `exclude`.
    fn publish_ephemeral(
        &self,
        app: &str,
        channel: &ChannelName,
        frame: Bytes,
        exclude: Option<&str>,
    );

    /// One more local subscriber wants `channel`'s messages; returns once they will be
    /// delivered.
    ///
    /// # Errors
    /// The broker's backend is unreachable; the interest was not taken.
    async fn subscribe(&self, app: &Arc<str>, channel: &ChannelName) -> Result<(), BrokerError>;

    /// Drops one `subscribe`.
    fn unsubscribe(&self, app: &Arc<str>, channel: &ChannelName);

    /// Keeps `channel` occupied without receiving it (a presence member between
    /// long-polls).
    fn hold(&self, app: &Arc<str>, channel: &ChannelName);

    /// Ends one `hold`.
    fn release(&self, app: &Arc<str>, channel: &ChannelName);

    /// Subscriptions to `channel` in the cluster, or `None` when it is not occupied.
    ///
    /// # Errors
    /// The broker's backend is unreachable.
    async fn subscription_count(
        &self,
        app: &str,
        channel: &ChannelName,
    ) -> Result<Option<usize>, BrokerError>;

    /// Every occupied channel of `app` whose name starts with `prefix`, with its
    /// subscriptions in the cluster, sorted by name.
    ///
    /// # Errors
    /// The broker's backend is unreachable.
    async fn channels(
        &self,
        app: &str,
        prefix: &str,
    ) -> Result<Vec<(ChannelName, usize)>, BrokerError>;

    /// Closes every connection subscribed to `channel`, on every node.
    fn disconnect(&self, app: &str, channel: &ChannelName, reason: &Disconnect);

    /// Counts a new connection of `app` in the cluster, unless the app is at its
    /// `max_connections`; returns whether it was counted.
    fn add_connection(&self, app: &App) -> bool;

    /// Ends a connection counted by `add_connection`.
    fn remove_connection(&self, app: &App);

    /// The history the broker stores into (ids, replay, `cache-` channels).
    fn history(&self) -> &Arc<dyn HistoryStore>;

    /// `Err` naming the part that keeps this node from taking publishes.
    ///
    /// # Errors
    /// The history or the broker's backend cannot take writes.
    fn health(&self) -> Result<(), Unhealthy> {
        self.history().health().map_err(|why| Unhealthy {
            component: "history",
            error: format!("history store cannot take writes: {why}"),
        })
    }

    /// Makes everything acknowledged durable; called on shutdown.
    ///
    /// # Errors
    /// The history could not be flushed.
    async fn flush(&self) -> Result<(), BrokerError> {
        Ok(self.history().flush().await?)
    }
}
