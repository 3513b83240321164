//! The node wires the domain together: apps, the hub of local subscriptions, the
//! broker (its window on the cluster, with history) and presence. Transports, the HTTP
//! API and ingests hold an `Arc<Node>` and call its methods, nothing else of the core.
//! The node is also where cluster-wide facts are announced: a member added or removed
//! as presence decides it, a channel occupied or vacated.

mod membership;

use crate::app::{App, AppRegistry};
use crate::broker::{Broker, BrokerError, Unhealthy};
use crate::events::{ChannelEvent, ChannelObserver, ClientEvent};
use crate::history::{HistoryError, HistoryPage};
use crate::hub::{ConnId, Hub};
use crate::message::{NewMessage, Published};
use crate::outbox::Disconnect;
use crate::position::StreamPosition;
use crate::presence::{MemoryPresence, Presence, PresenceError};
use crate::publish::{EventRequest, PublishError};
use bytes::Bytes;
use crier_protocol::{ChannelName, ErrorCode};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Protocol timings and buffer sizes shared by all connections.
#[derive(Clone, Debug)]
pub struct NodeSettings {
    /// Seconds of silence after which either side pings (sent to clients).
    pub activity_timeout: Duration,
    /// How long to wait for a pong before closing with 4201.
    pub pong_timeout: Duration,
    /// Frames queued per connection before it counts as a slow consumer.
    pub outbox_capacity: usize,
    /// Most messages replayed per channel on a resume.
    pub replay_limit: usize,
    /// A write to a client that takes longer than this means it stopped reading.
    pub write_timeout: Duration,
}

impl Default for NodeSettings {
    fn default() -> Self {
        Self {
            activity_timeout: Duration::from_secs(120),
            pong_timeout: Duration::from_secs(30),
            outbox_capacity: 1024,
            replay_limit: 10_000,
            write_timeout: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum NodePublishError {
    #[error(transparent)]
    Invalid(#[from] PublishError),
    #[error(transparent)]
    Broker(#[from] BrokerError),
}

/// Why a connection could not join a channel.
#[derive(Debug, thiserror::Error)]
pub enum SubscribeError {
    #[error("presence channel is full")]
    PresenceFull,
    #[error(transparent)]
    Broker(#[from] BrokerError),
    #[error(transparent)]
    Presence(#[from] PresenceError),
}

/// Counts for the channel query API.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChannelStats {
    pub channel: ChannelName,
    pub subscription_count: usize,
    pub user_count: usize,
}

pub struct Node {
    apps: AppRegistry,
    hub: Arc<Hub>,
    broker: Arc<dyn Broker>,
    presence: Arc<dyn Presence>,
    observer: Option<Arc<dyn ChannelObserver>>,
    settings: NodeSettings,
    next_conn: AtomicU64,
    /// Random per process so socket ids from a restarted node do not repeat.
    socket_prefix: u64,
}

impl Node {
    pub fn new(
        apps: AppRegistry,
        hub: Arc<Hub>,
        broker: Arc<dyn Broker>,
        settings: NodeSettings,
    ) -> Self {
        Self {
            apps,
            hub,
            broker,
            presence: Arc::new(MemoryPresence::default()),
            observer: None,
            settings,
            next_conn: AtomicU64::new(1),
            socket_prefix: rand::random::<u32>() as u64,
        }
    }

    /// Replaces the presence kept in this process.
    #[must_use]
    pub fn with_presence(mut self, presence: Arc<dyn Presence>) -> Self {
        self.presence = presence;
        self
    }

    /// Reports channel events (webhooks) to `observer`.
    #[must_use]
    pub fn with_observer(mut self, observer: Arc<dyn ChannelObserver>) -> Self {
        self.observer = Some(observer);
        self
    }

    fn notify(&self, app: &Arc<str>, event: ChannelEvent) {
        if let Some(o) = &self.observer {
            o.on_event(app, event);
        }
    }

    pub fn apps(&self) -> &AppRegistry {
        &self.apps
    }

    pub fn settings(&self) -> &NodeSettings {
        &self.settings
    }

    /// A new connection id and its Pusher socket id (`<digits>.<digits>`).
    pub fn new_connection(&self) -> (ConnId, Arc<str>) {
        let conn = self.next_conn.fetch_add(1, Ordering::Relaxed);
        (conn, Arc::from(format!("{}.{}", self.socket_prefix, conn)))
    }

    /// Validates and publishes events (one or a batch), all or nothing.
    ///
    /// # Errors
    /// The first invalid event (nothing is published), or a broker failure.
    pub async fn publish(
        &self,
        app: &App,
        requests: Vec<EventRequest>,
    ) -> Result<Vec<Arc<Published>>, NodePublishError> {
        let mut batch = Vec::with_capacity(requests.len());
        for request in requests {
            batch.extend(request.into_messages(app)?);
        }
        Ok(self.broker.publish(batch).await?)
    }

    /// Publishes messages already validated by an ingest, all or nothing.
    ///
    /// # Errors
    /// A broker failure; nothing of the batch was published.
    pub async fn publish_messages(
        &self,
        batch: Vec<NewMessage>,
    ) -> Result<Vec<Arc<Published>>, BrokerError> {
        self.broker.publish(batch).await
    }

    /// Relays a client event to the channel's other subscribers on every node and
    /// reports it to webhooks (once, from the sender's node).
    pub fn client_event(&self, app: &Arc<str>, frame: Bytes, event: ClientEvent) {
        self.broker
            .publish_ephemeral(app, &event.channel, frame, Some(&event.socket_id));
        self.notify(app, ChannelEvent::ClientEvent(event));
    }

    /// Up to `limit` retained messages of a channel after `after`.
    ///
    /// # Errors
    /// History failures.
    pub async fn read_history(
        &self,
        app: &str,
        channel: &ChannelName,
        after: Option<&StreamPosition>,
        limit: usize,
    ) -> Result<HistoryPage, HistoryError> {
        self.broker.history().read(app, channel, after, limit).await
    }

    /// The newest retained message of a channel (for `cache-` channels).
    ///
    /// # Errors
    /// History failures.
    pub async fn last_message(
        &self,
        app: &str,
        channel: &ChannelName,
    ) -> Result<Option<Arc<Published>>, HistoryError> {
        self.broker.history().last(app, channel).await
    }

    /// Position of a channel's newest message.
    ///
    /// # Errors
    /// History failures.
    pub async fn tip(
        &self,
        app: &str,
        channel: &ChannelName,
    ) -> Result<StreamPosition, HistoryError> {
        self.broker.history().tip(app, channel).await
    }

    /// `Err` naming the part that keeps the node from taking publishes.
    ///
    /// # Errors
    /// The history store cannot take writes, or the broker is unreachable.
    pub fn health(&self) -> Result<(), Unhealthy> {
        self.broker.health()
    }

    /// Makes everything acknowledged durable; called on shutdown.
    ///
    /// # Errors
    /// The broker or its history failed to flush.
    pub async fn flush(&self) -> Result<(), BrokerError> {
        self.broker.flush().await
    }

    /// Counts a new connection of `app` in the cluster, unless the app is at its
    /// `max_connections`; returns whether it was counted.
    pub fn add_connection(&self, app: &App) -> bool {
        self.broker.add_connection(app)
    }

    /// Ends a connection counted by [`Node::add_connection`].
    pub fn remove_connection(&self, app: &App) {
        self.broker.remove_connection(app);
    }

    /// Closes every connection signed in as `user_id`, on every node.
    pub fn terminate_user(&self, app: &App, user_id: &str) {
        let Ok(channel) = ChannelName::for_user(user_id) else {
            return;
        };
        self.broker.disconnect(
            &app.id,
            &channel,
            &Disconnect::new(
                ErrorCode::Unauthorized,
                "connections terminated by the server",
            ),
        );
    }
}
