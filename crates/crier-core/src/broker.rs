//! The broker moves messages between publishers and subscribers. The memory broker
//! serves one node: history (embedded on disk, or in RAM) assigns ids and hands each
//! committed batch to the local hub. A Redis broker will do the same across nodes.

use crate::history::{HistoryError, HistoryStore};
use crate::hub::{ConnId, Hub};
use crate::message::{NewMessage, Published};
use async_trait::async_trait;
use bytes::Bytes;
use crier_protocol::ChannelName;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error(transparent)]
    History(#[from] HistoryError),
    #[error("broker unavailable: {0}")]
    Unavailable(String),
}

#[async_trait]
pub trait Broker: Send + Sync + 'static {
    /// Gives each message its id, stores it, and delivers it to every subscriber (in
    /// id order per channel) before returning.
    async fn publish(&self, batch: Vec<NewMessage>) -> Result<Vec<Arc<Published>>, BrokerError>;

    /// Delivers an ephemeral frame (client event, presence change) to a channel's
    /// subscribers, except the connection that caused it.
    fn broadcast(&self, app: &str, channel: &ChannelName, frame: Bytes, exclude: Option<ConnId>);

    /// The history behind this broker.
    fn history(&self) -> &Arc<dyn HistoryStore>;

    /// Whether the broker's backend is reachable (for `/ready`).
    fn healthy(&self) -> bool {
        true
    }

    /// Makes everything acknowledged durable; called on shutdown.
    async fn flush(&self) -> Result<(), BrokerError> {
        Ok(self.history().flush().await?)
    }
}

/// One node, no shared backend.
pub struct MemoryBroker {
    history: Arc<dyn HistoryStore>,
    hub: Arc<Hub>,
}

impl MemoryBroker {
    /// `history` must deliver into `hub` (see [`crate::history::Deliver`]).
    pub fn new(history: Arc<dyn HistoryStore>, hub: Arc<Hub>) -> Self {
        Self { history, hub }
    }
}

#[async_trait]
impl Broker for MemoryBroker {
    async fn publish(&self, batch: Vec<NewMessage>) -> Result<Vec<Arc<Published>>, BrokerError> {
        let published = self.history.append(batch).await?;
        metrics::counter!("crier_messages_published_total").increment(published.len() as u64);
        Ok(published)
    }

    fn broadcast(&self, app: &str, channel: &ChannelName, frame: Bytes, exclude: Option<ConnId>) {
        self.hub.broadcast(app, channel, frame, exclude);
    }

    fn history(&self) -> &Arc<dyn HistoryStore> {
        &self.history
    }
}
