//! The broker of a node that is the whole cluster. Its history's commit observer is
//! the delivery: the writer that assigned the ids hands each committed batch to the
//! hub directly, so messages reach subscribers in id order with no queue or task in
//! between.

use super::{Broker, BrokerError, Deliver};
use crate::app::App;
use crate::events::{ChannelEvent, ChannelObserver};
use crate::history::{CommitObserver, HistoryStore};
use crate::message::{NewMessage, Published};
use crate::outbox::Disconnect;
use async_trait::async_trait;
use bytes::Bytes;
use crier_protocol::ChannelName;
use parking_lot::RwLock;
use std::collections::HashMap;
use std::sync::Arc;

/// Why the node holds a channel.
#[derive(Clone, Copy, Default)]
struct Holds {
    subscribers: usize,
    /// Presence members without a subscriber: occupy, receive nothing.
    members: usize,
}

/// The channels this node (the whole cluster) holds. Nested by app so a delivery looks
/// a channel up by `&str` without allocating.
#[derive(Default)]
struct Channels(RwLock<HashMap<Arc<str>, HashMap<ChannelName, Holds>>>);

impl Channels {
    fn get(&self, app: &str, channel: &ChannelName) -> Option<Holds> {
        self.0.read().get(app)?.get(channel).copied()
    }

    /// Adds a hold; returns whether the channel was unheld.
    fn add(&self, app: &Arc<str>, channel: &ChannelName, change: impl FnOnce(&mut Holds)) -> bool {
        let mut apps = self.0.write();
        let channels = apps.entry(app.clone()).or_default();
        match channels.get_mut(channel) {
            Some(holds) => {
                change(holds);
                false
            }
            None => {
                let mut holds = Holds::default();
                change(&mut holds);
                channels.insert(channel.clone(), holds);
                true
            }
        }
    }

    /// Drops a hold (`change` returns `None` when there was none of its kind); returns
    /// whether the channel is now unheld.
    fn remove(
        &self,
        app: &str,
        channel: &ChannelName,
        change: impl FnOnce(&mut Holds) -> Option<()>,
    ) -> bool {
        let mut apps = self.0.write();
        let Some(channels) = apps.get_mut(app) else {
            return false;
        };
        let Some(holds) = channels.get_mut(channel) else {
            return false;
        };
        if change(holds).is_none() || holds.subscribers + holds.members > 0 {
            return false;
        }
        channels.remove(channel);
        if channels.is_empty() {
            apps.remove(app);
        }
        true
    }
}

/// What the history calls on commit: hands each message of interest to the node.
struct Local {
    channels: Channels,
    deliver: Arc<dyn Deliver>,
    observer: Option<Arc<dyn ChannelObserver>>,
}

impl Local {
    fn subscribed(&self, app: &str, channel: &ChannelName) -> bool {
        self.channels
            .get(app, channel)
            .is_some_and(|h| h.subscribers > 0)
    }

    fn occupancy(&self, app: &Arc<str>, channel: &ChannelName, changed: bool, occupied: bool) {
        if let (true, Some(o)) = (changed, &self.observer) {
            let event = if occupied {
                ChannelEvent::Occupied(channel.clone())
            } else {
                ChannelEvent::Vacated(channel.clone())
            };
            o.on_event(app, event);
        }
    }
}

impl CommitObserver for Local {
    fn committed(&self, batch: &[Arc<Published>]) {
        for message in batch {
            if self.subscribed(&message.app_id, &message.channel) {
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
    /// A broker delivering into `deliver` and telling `observer` of occupancy, over
    /// the history `open_history` opens with the commit observer it is given (so the
    /// store cannot be wired to anything else).
    ///
    /// # Errors
    /// Whatever `open_history` fails with.
    pub fn new<E>(
        deliver: Arc<dyn Deliver>,
        observer: Option<Arc<dyn ChannelObserver>>,
        open_history: impl FnOnce(Arc<dyn CommitObserver>) -> Result<Arc<dyn HistoryStore>, E>,
    ) -> Result<Self, E> {
        let local = Arc::new(Local {
            channels: Channels::default(),
            deliver,
            observer,
        });
        let history = open_history(local.clone())?;
        Ok(Self { history, local })
    }
}

#[async_trait]
impl Broker for MemoryBroker {
    async fn publish(&self, batch: Vec<NewMessage>) -> Result<Vec<Arc<Published>>, BrokerError> {
        Ok(self.history.append(batch).await?)
    }

    fn publish_ephemeral(
        &self,
        app: &str,
        channel: &ChannelName,
        frame: Bytes,
        exclude: Option<&str>,
    ) {
        if self.local.subscribed(app, channel) {
            self.local
                .deliver
                .deliver_frame(app, channel, frame, exclude);
        }
    }

    async fn subscribe(&self, app: &Arc<str>, channel: &ChannelName) -> Result<(), BrokerError> {
        let occupied = self
            .local
            .channels
            .add(app, channel, |h| h.subscribers += 1);
        self.local.occupancy(app, channel, occupied, true);
        Ok(())
    }

    fn unsubscribe(&self, app: &Arc<str>, channel: &ChannelName) {
        let vacated = self.local.channels.remove(app, channel, |h| {
            h.subscribers = h.subscribers.checked_sub(1)?;
            Some(())
        });
        self.local.occupancy(app, channel, vacated, false);
    }

    fn hold(&self, app: &Arc<str>, channel: &ChannelName) {
        let occupied = self.local.channels.add(app, channel, |h| h.members += 1);
        self.local.occupancy(app, channel, occupied, true);
    }

    fn release(&self, app: &Arc<str>, channel: &ChannelName) {
        let vacated = self.local.channels.remove(app, channel, |h| {
            h.members = h.members.checked_sub(1)?;
            Some(())
        });
        self.local.occupancy(app, channel, vacated, false);
    }

    async fn subscription_count(
        &self,
        app: &str,
        channel: &ChannelName,
    ) -> Result<Option<usize>, BrokerError> {
        Ok(self.local.channels.get(app, channel).map(|h| h.subscribers))
    }

    async fn channels(
        &self,
        app: &str,
        prefix: &str,
    ) -> Result<Vec<(ChannelName, usize)>, BrokerError> {
        let apps = self.local.channels.0.read();
        let mut out: Vec<(ChannelName, usize)> = apps
            .get(app)
            .into_iter()
            .flatten()
            .filter(|(c, _)| c.as_str().starts_with(prefix))
            .map(|(c, h)| (c.clone(), h.subscribers))
            .collect();
        drop(apps);
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    fn disconnect(&self, app: &str, channel: &ChannelName, reason: &Disconnect) {
        self.local.deliver.close(app, channel, reason);
    }

    // The app's own counter: with one node it is the cluster's, and it costs no lookup.
    fn add_connection(&self, app: &App) -> bool {
        app.try_add_connection()
    }

    fn remove_connection(&self, app: &App) {
        app.remove_connection();
    }

    fn history(&self) -> &Arc<dyn HistoryStore> {
        &self.history
    }
}
