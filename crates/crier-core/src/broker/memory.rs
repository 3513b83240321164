//! The broker of a node that is the whole cluster. Its history's commit observer is
//! the delivery: the writer that assigned the ids hands each committed batch to the
//! hub directly, so messages reach subscribers in id order with no queue or task in
//! between.

use super::{Broker, BrokerError, Deliver};
use crate::history::{CommitObserver, HistoryStore};
use crate::message::{NewMessage, Published};
use async_trait::async_trait;
use bytes::Bytes;
use crier_protocol::ChannelName;
use parking_lot::RwLock;
use std::collections::HashMap;
use std::sync::Arc;

/// Channels this node has interest in, with how many `subscribe`s each. Nested by app
/// so a delivery looks a channel up by `&str` without allocating.
#[derive(Default)]
struct Interest(RwLock<HashMap<Arc<str>, HashMap<ChannelName, usize>>>);

impl Interest {
    fn contains(&self, app: &str, channel: &ChannelName) -> bool {
        self.0
            .read()
            .get(app)
            .is_some_and(|channels| channels.contains_key(channel))
    }

    fn add(&self, app: &Arc<str>, channel: &ChannelName) {
        let mut apps = self.0.write();
        let channels = apps.entry(app.clone()).or_default();
        match channels.get_mut(channel) {
            Some(count) => *count += 1,
            None => {
                channels.insert(channel.clone(), 1);
            }
        }
    }

    fn remove(&self, app: &str, channel: &ChannelName) {
        let mut apps = self.0.write();
        let Some(channels) = apps.get_mut(app) else {
            return;
        };
        if let Some(count) = channels.get_mut(channel) {
            *count -= 1;
            if *count == 0 {
                channels.remove(channel);
            }
        }
        if channels.is_empty() {
            apps.remove(app);
        }
    }
}

/// What the history calls on commit: hands each message of interest to the node.
struct Local {
    interest: Interest,
    deliver: Arc<dyn Deliver>,
}

impl CommitObserver for Local {
    fn committed(&self, batch: &[Arc<Published>]) {
        for message in batch {
            if self.interest.contains(&message.app_id, &message.channel) {
                self.deliver.deliver(message);
            }
        }
    }
}

/// One node, no shared backend.
pub struct MemoryBroker {
    history: Arc<dyn HistoryStore>,
    local: Arc<Local>,
}

impl MemoryBroker {
    /// A broker delivering into `deliver`, over the history `open_history` opens with
    /// the commit observer it is given (so the store cannot be wired to anything else).
    ///
    /// # Errors
    /// Whatever `open_history` fails with.
    pub fn new<E>(
        deliver: Arc<dyn Deliver>,
        open_history: impl FnOnce(Arc<dyn CommitObserver>) -> Result<Arc<dyn HistoryStore>, E>,
    ) -> Result<Self, E> {
        let local = Arc::new(Local {
            interest: Interest::default(),
            deliver,
        });
        let history = open_history(local.clone())?;
        Ok(Self { history, local })
    }
}

#[async_trait]
impl Broker for MemoryBroker {
    async fn publish(&self, batch: Vec<NewMessage>) -> Result<Vec<Arc<Published>>, BrokerError> {
        let published = self.history.append(batch).await?;
        metrics::counter!("crier_messages_published_total").increment(published.len() as u64);
        Ok(published)
    }

    fn publish_ephemeral(
        &self,
        app: &str,
        channel: &ChannelName,
        frame: Bytes,
        exclude: Option<&str>,
    ) {
        if self.local.interest.contains(app, channel) {
            self.local
                .deliver
                .deliver_frame(app, channel, frame, exclude);
        }
    }

    async fn subscribe(&self, app: &Arc<str>, channel: &ChannelName) -> Result<(), BrokerError> {
        self.local.interest.add(app, channel);
        Ok(())
    }

    fn unsubscribe(&self, app: &str, channel: &ChannelName) {
        self.local.interest.remove(app, channel);
    }

    fn history(&self) -> &Arc<dyn HistoryStore> {
        &self.history
    }
}
